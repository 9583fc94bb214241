/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_hostile.c - untrusted input: garbage, truncated and oversized
 * messages, floods of idle connections, peers of other uids, foreign
 * objects under the segment's name, bad configs, and segment images with
 * flipped bits.  Each case checks its exact outcome and that the service
 * and its data are intact afterwards.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "getfast.h"
#include "internal.h"
#include "proto.h"
#include "shmmap.h"
#include "testutil.h"

static struct tu_coord co;

static void setup(void)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
}

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(s, 0);
	ck_assert_int_eq(connect(s, (struct sockaddr *)&sa, sizeof sa), 0);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return s;
}

/* The coordinator closed this connection (EOF) rather than answering. */
static void expect_closed(int s)
{
	char buf[PROTO_MAX_MSG];
	ssize_t n = recv(s, buf, sizeof buf, 0);
	ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET), "expected EOF, got %zd (%s)", n,
		      n < 0 ? strerror(errno) : "data");
	close(s);
}

/* The service still works and still holds the value written before. */
static void expect_service_intact(void)
{
	shmmap *sm;
	shmmap_map m;
	ck_assert_int_eq(shmmap_attach(co.sock, &sm), 0);
	ck_assert_int_eq(shmmap_open(sm, "keep", SHMMAP_CREATE, &m), 0);
	char buf[16];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &n), 0);
	ck_assert_int_eq(memcmp(buf, "precious", 8), 0);
	shmmap_detach(sm);
}

static void write_precious(void)
{
	shmmap *sm;
	shmmap_map m;
	ck_assert_int_eq(shmmap_attach(co.sock, &sm), 0);
	ck_assert_int_eq(shmmap_open(sm, "keep", SHMMAP_CREATE, &m), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "precious", 8, 0, 0), 0);
	shmmap_detach(sm);
}

static size_t valid_hello(unsigned char *buf)
{
	struct proto_msg m = {.type = MSG_HELLO, .seq = 1};
	m.u.hello.pid = (uint32_t)getpid();
	int n = shmmap__proto_encode(&m, buf, PROTO_MAX_MSG);
	ck_assert_int_gt(n, 0);
	return (size_t)n;
}

START_TEST(garbage_truncated_oversized_messages_close_one_connection)
{
	write_precious();
	unsigned char buf[PROTO_MAX_MSG + 200];
	/* Random garbage. */
	int s = raw_connect(co.sock);
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (unsigned char)(i * 131 + 7);
	ck_assert_int_eq(send(s, buf, 100, 0), 100);
	expect_closed(s);
	/* A valid HELLO cut short. */
	size_t n = valid_hello(buf);
	s = raw_connect(co.sock);
	ck_assert_int_eq(send(s, buf, n - 3, 0), (ssize_t)(n - 3));
	expect_closed(s);
	/* A header that claims more body than there is. */
	n = valid_hello(buf);
	buf[8] = 200;
	s = raw_connect(co.sock);
	ck_assert_int_eq(send(s, buf, n, 0), (ssize_t)n);
	expect_closed(s);
	/* Oversized. */
	memset(buf, 0, sizeof buf);
	n = valid_hello(buf);
	s = raw_connect(co.sock);
	ck_assert_int_eq(send(s, buf, sizeof buf, 0), (ssize_t)sizeof buf);
	expect_closed(s);
	/* Another protocol version: told so (an ERROR of this version, which
	 * the peer's decoder reports as a version mismatch), then closed. */
	n = valid_hello(buf);
	buf[4] = 99;
	s = raw_connect(co.sock);
	ck_assert_int_eq(send(s, buf, n, 0), (ssize_t)n);
	{
		struct proto_msg er;
		ck_assert_int_eq(shmmap__proto_recv(s, &er, NULL), 0);
		ck_assert_int_eq(er.type, MSG_ERROR);
		ck_assert_int_eq(er.u.error.err, -SHMMAP_EVERSION);
		ck_assert_ptr_nonnull(strstr(er.u.error.why, "protocol version"));
	}
	expect_closed(s);
	/* A request before HELLO. */
	struct proto_msg m = {.type = MSG_OPEN, .seq = 1};
	strcpy(m.u.open.name, "keep");
	int len = shmmap__proto_encode(&m, buf, PROTO_MAX_MSG);
	s = raw_connect(co.sock);
	ck_assert_int_eq(send(s, buf, (size_t)len, 0), len);
	expect_closed(s);
	/* A second HELLO after the first. */
	n = valid_hello(buf);
	s = raw_connect(co.sock);
	ck_assert_int_eq(send(s, buf, n, 0), (ssize_t)n);
	struct proto_msg rep;
	int fd = -1;
	ck_assert_int_eq(shmmap__proto_recv(s, &rep, &fd), 0);
	ck_assert_int_eq(rep.type, MSG_WELCOME);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(send(s, buf, n, 0), (ssize_t)n);
	expect_closed(s);
	expect_service_intact();
	/* The reasons are logged. */
	char log[65536] = "";
	FILE *f = fopen(co.log, "r");
	ck_assert_ptr_nonnull(f);
	size_t got = fread(log, 1, sizeof log - 1, f);
	log[got] = '\0';
	fclose(f);
	ck_assert_ptr_nonnull(strstr(log, "bad message"));
	ck_assert_ptr_nonnull(strstr(log, "request before HELLO"));
	ck_assert_ptr_nonnull(strstr(log, "second HELLO"));
}
END_TEST

START_TEST(flood_of_idle_connections_does_not_starve_clients)
{
	write_precious();
	enum { FLOOD = 300 };
	int fds[FLOOD];
	for (int i = 0; i < FLOOD; i++)
		fds[i] = raw_connect(co.sock);
	/* A legitimate client still gets in, and works. */
	expect_service_intact();
	/* The flood's oldest connections were closed, not left to pile up. */
	char b;
	ck_assert_int_eq((int)recv(fds[0], &b, 1, MSG_DONTWAIT), 0);
	for (int i = 0; i < FLOOD; i++)
		close(fds[i]);
	expect_service_intact();
}
END_TEST

static bool closed_by_peer(void *arg)
{
	char b;
	return recv(*(int *)arg, &b, 1, MSG_DONTWAIT) == 0;
}

START_TEST(silent_connection_is_timed_out)
{
	int s = raw_connect(co.sock);
	ck_assert(!closed_by_peer(&s));
	ck_assert(tu_wait(closed_by_peer, &s, 10000)); /* handshake timeout: 5 s */
	close(s);
	write_precious();
	expect_service_intact();
}
END_TEST

static bool can_switch_uid(void)
{
	return geteuid() == 0 && access("/usr/bin/setpriv", X_OK) == 0;
}

/* Run shmmapctl as user nobody (setpriv), socket reachable by everyone. */
static int run_as_nobody(char *out, size_t cap, const char *cmd, const char *arg1,
			 const char *arg2)
{
	chmod(co.dir, 0755);
	chmod(co.sock, 0666);
	char *argv[] = {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			getenv("SHMMAPCTL"), "-s", co.sock, (char *)cmd, (char *)arg1, (char *)arg2,
			NULL};
	char err[1024];
	int st = tu_run(argv, out, cap, err, sizeof err);
	strncat(out, err, cap - strlen(out) - 1);
	return st;
}

START_TEST(other_uid_is_refused)
{
	if (!can_switch_uid())
		TU_SKIP("needs root and /usr/bin/setpriv to run a client as nobody");
	write_precious();
	char out[4096];
	int st = run_as_nobody(out, sizeof out, "get", "keep", "k");
	ck_assert_msg(st == 4, "exit %d: %s", st, out);
	ck_assert_msg(strstr(out, "ermission denied") != NULL, "no clear error: %s", out);
	expect_service_intact();
	FILE *f = fopen(co.log, "r");
	char log[65536];
	size_t n = fread(log, 1, sizeof log - 1, f);
	log[n] = '\0';
	fclose(f);
	ck_assert_ptr_nonnull(strstr(log, "not allowed"));
}
END_TEST

START_TEST(readonly_uid_reads_but_cannot_write)
{
	if (!can_switch_uid())
		TU_SKIP("needs root and /usr/bin/setpriv to run a client as nobody");
	tu_coord_cleanup(&co);
	ck_assert_int_eq(tu_coord_start(&co, "8M", "[server]\nreadonly_uids = nobody\n"), 0);
	write_precious();
	char out[4096];
	int st = run_as_nobody(out, sizeof out, "get", "keep", "k");
	ck_assert_msg(st == 0, "exit %d: %s", st, out);
	ck_assert_ptr_nonnull(strstr(out, "precious"));
	st = run_as_nobody(out, sizeof out, "del", "keep", "k");
	ck_assert_msg(st != 0 && strstr(out, "not permitted"), "exit %d: %s", st, out);
	expect_service_intact();
}
END_TEST

START_TEST(readonly_attachment_by_request)
{
	write_precious();
	setenv("SHMMAP_READONLY", "1", 1);
	shmmap *sm;
	ck_assert_int_eq(shmmap_attach(co.sock, &sm), 0);
	unsetenv("SHMMAP_READONLY");
	ck_assert(sm->seg.rdonly);
	shmmap_map m;
	ck_assert_int_eq(shmmap_open(sm, "keep", 0, &m), 0);
	ck_assert_int_eq(shmmap_open(sm, "new", SHMMAP_CREATE, &m), -EPERM);
	ck_assert_int_eq(shmmap_open(sm, "keep", 0, &m), 0);
	char buf[16];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &n), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "x", 1, 0, 0), -EPERM);
	ck_assert_int_eq(shmmap_del(sm, m, "k", 1), -EPERM);
	ck_assert_int_eq(shmmap_incr(sm, m, "c", 1, 1, NULL), -EPERM);
	shmmap_detach(sm);
	expect_service_intact();
}
END_TEST

/* ---- the coordinator's start-up refusals ---- */

static int run_shmmapd(const char *conf, const char *extra, char *out, size_t cap)
{
	char *argv[] = {getenv("SHMMAPD"), "-c", (char *)conf, "--foreground", (char *)extra, NULL};
	char err[4096];
	int st = tu_run(argv, out, cap, err, sizeof err);
	strncat(out, err, cap - strlen(out) - 1);
	return st;
}

START_TEST(foreign_object_is_never_adopted_or_overwritten)
{
	tu_coord_stop(&co);
	shm_unlink(co.shm);
	int fd = shm_open(co.shm, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	const char junk[] = "somebody else's data";
	ck_assert_int_eq(ftruncate(fd, 8 << 20), 0);
	ck_assert_int_eq(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
	char out[8192];
	int st = run_shmmapd(co.conf, NULL, out, sizeof out);
	ck_assert_msg(st == 1, "exit %d: %s", st, out);
	ck_assert_msg(strstr(out, co.shm) && strstr(out, "--reinit"), "message: %s", out);
	char back[sizeof junk];
	ck_assert_int_eq(pread(fd, back, sizeof back, 0), (ssize_t)sizeof back);
	ck_assert_int_eq(memcmp(back, junk, sizeof junk), 0); /* untouched */
	close(fd);
	/* With --reinit the operator says it may be replaced. */
	ck_assert_int_eq(tu_coord_restart_with(&co, "--reinit"), 0);
	write_precious();
	expect_service_intact();
}
END_TEST

START_TEST(bad_config_refused_with_file_line_key)
{
	char path[400];
	snprintf(path, sizeof path, "%s/bad.ini", co.dir);
	FILE *f = fopen(path, "w");
	fprintf(f, "[segment]\nname = /x\nsize = 12Q\n");
	fclose(f);
	char out[4096];
	int st = run_shmmapd(path, NULL, out, sizeof out);
	ck_assert_int_eq(st, 1);
	char want[500];
	snprintf(want, sizeof want, "%s:3: segment.size:", path);
	ck_assert_msg(strstr(out, want) != NULL, "message: %s", out);
	st = run_shmmapd(path, "--check-config", out, sizeof out);
	ck_assert_int_eq(st, 1);
	st = run_shmmapd(co.conf, "--check-config", out, sizeof out);
	ck_assert_msg(st == 0 && strstr(out, "configuration ok"), "exit %d: %s", st, out);
	unlink(path);
}
END_TEST

/* ---- a segment image with flipped bits ---- */

/* shmmap_get's first try (getfast.h), on its own: a key of any length
 * (gcc's bounds warnings would follow a local key array into the hash). */
static __attribute__((noinline)) int fast_get(const struct seg *s, const struct seg_geom *g,
					      const struct map_view *v, const void *key,
					      size_t klen, void *buf, size_t cap, size_t *n)
{
	return get_fast(s, g, v, NULL, key, klen, buf, cap, n);
}

START_TEST(corrupted_segment_image_is_survived)
{
	/* Fill the live segment with data, then copy its bytes. */
	shmmap *sm;
	shmmap_map m;
	ck_assert_int_eq(shmmap_attach(co.sock, &sm), 0);
	ck_assert_int_eq(shmmap_open(sm, "c", SHMMAP_CREATE, &m), 0);
	char k[16], v[300];
	for (int i = 0; i < 2000; i++) {
		int kn = snprintf(k, sizeof k, "key%d", i);
		memset(v, 'a' + i % 26, sizeof v);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)kn, v, (size_t)(i % 300), 0, 0), 0);
	}
	size_t len = sm->seg.len;
	unsigned char *image = malloc(len);
	memcpy(image, sm->seg.base, len);
	shmmap_detach(sm);

	int fd = memfd_create("image", MFD_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	struct seg s = {.base = p, .len = len, .fd = -1};
	unsigned seed = 12345;
	int validated = 0;
	for (int round = 0; round < 200; round++) {
		memcpy(p, image, len);
		/* Flip bits: in the header sometimes, mostly in the metadata and heap. */
		int flips = 1 + round % 64;
		for (int i = 0; i < flips; i++) {
			size_t off = (size_t)rand_r(&seed) % (round % 4 == 0 ? 4096 : len);
			p[off] ^= (unsigned char)(1u << (rand_r(&seed) % 8));
		}
		/* Locks in the image belong to no live process here. */
		struct seg_geom g;
		if (shmmap__seg_validate(&s, &g) != 0)
			continue;
		validated++;
		for (uint32_t i = 0; i < g.max_clients; i++)
			atomic_store(&seg_slot(&s, &g, i)->state, SLOT_FREE);
		struct check_report r = {0};
		shmmap__check(&s, &g, &r); /* must return, whatever it finds */
		struct op_ctx o = {.s = &s, .g = &g, .lk = {.s = &s, .g = &g, .owner = 2}};
		for (uint32_t mi = 0; mi < g.max_maps; mi++) {
			struct map_view mv;
			if (shmmap__map_view(&s, &g, mi, &mv) != 0)
				continue;
			/* Notes of the array, as a client's view takes (struct
			 * arr_memo): the gets after the first index it unchecked. */
			struct arr_memo *_Atomic notes = NULL;
			mv.memo_list = &notes;
			for (int i = 0; i < 50; i++) {
				int kn = snprintf(k, sizeof k, "key%d", i * 37);
				size_t n;
				int rc = shmmap__tbl_get(&o, &mv, k, (size_t)kn, v, sizeof v, &n);
				ck_assert(rc == 0 || rc == -ENOENT || rc == -ENOBUFS || rc == -E2BIG ||
					  rc == -SHMMAP_ECORRUPT);
				/* shmmap_get's lock-free first try on the same bytes:
				 * it answers or defers, and stays in bounds. */
				rc = fast_get(&s, &g, &mv, k, (size_t)kn, v, sizeof v, &n);
				ck_assert(rc == 0 || rc == -ENOENT || rc == -ENOBUFS || rc == GET_SLOW);
			}
			for (struct arr_memo *a = atomic_load(&notes), *next; a; a = next) {
				next = a->next;
				free(a);
			}
		}
	}
	ck_assert_int_gt(validated, 10); /* the interesting path was exercised */
	munmap(p, len);
	close(fd);
	free(image);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc = tcase_create("hostile");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, garbage_truncated_oversized_messages_close_one_connection);
	tcase_add_test(tc, flood_of_idle_connections_does_not_starve_clients);
	tcase_add_test(tc, silent_connection_is_timed_out);
	tcase_add_test(tc, other_uid_is_refused);
	tcase_add_test(tc, readonly_uid_reads_but_cannot_write);
	tcase_add_test(tc, readonly_attachment_by_request);
	tcase_add_test(tc, foreign_object_is_never_adopted_or_overwritten);
	tcase_add_test(tc, bad_config_refused_with_file_line_key);
	tcase_add_test(tc, corrupted_segment_image_is_survived);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(suite());
}
