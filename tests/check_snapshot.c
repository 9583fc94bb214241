/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_snapshot.c - snapshot persistence end to end: a real shmmapd with
 * a [persistence] snapshot in its temp directory, saves asked for with
 * MSG_SAVE (as shmmapctl save sends it), on the interval and at a clean
 * shutdown, and loads into a fresh segment at start.
 *
 * Each test removes the segment between runs of the coordinator, so that
 * the next start loads the snapshot (an existing segment is adopted
 * instead).  The coordinator is SIGKILLed, not stopped, where a test must
 * keep the snapshot a MSG_SAVE wrote (a clean stop saves again).  Every
 * wait is on a condition with a deadline; every test is bounded well under
 * a minute.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "proto.h"
#include "shmmap.h"
#include "snapshot.h"
#include "testutil.h"

static struct tu_coord co;
static char snap[512]; /* the configured snapshot, in co.dir */

static uint64_t real_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Start a coordinator whose config names snap (in its own temp directory,
 * which exists only once it was started: so it is started once without
 * persistence, stopped, given the [persistence] section and started again
 * on a fresh segment).  pers: more [persistence] lines; other: more config.
 */
static void start_with(const char *pers, const char *other)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", other), 0);
	int st = tu_coord_stop(&co);
	ck_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	snprintf(snap, sizeof snap, "%s/shmmap.snap", co.dir);
	FILE *f = fopen(co.conf, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "\n[persistence]\nsnapshot = %s\n%s", snap, pers ? pers : "");
	fclose(f);
	shm_unlink(co.shm);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
}

static void kill9(void)
{
	ck_assert_int_gt(co.pid, 0);
	kill(co.pid, SIGKILL);
	tu_waitpid(co.pid, 10000);
	co.pid = 0;
}

static void stop_clean(void)
{
	int st = tu_coord_stop(&co);
	ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "shmmapd did not stop cleanly: status %#x", st);
}

/* A fresh segment at the next start: it loads the snapshot. */
static void restart_fresh(void)
{
	shm_unlink(co.shm);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
}

static void setup(void)
{
	memset(&co, 0, sizeof co);
	snap[0] = '\0';
}

/* Kill the coordinator, remove every file it or a test left in its
 * directory (snapshots, temp files), then the usual cleanup. */
static void teardown(void)
{
	if (co.pid > 0)
		kill9();
	DIR *d = co.dir[0] ? opendir(co.dir) : NULL;
	if (d) {
		struct dirent *e;
		char p[768];
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(p, sizeof p, "%s/%s", co.dir, e->d_name);
			if (unlink(p) < 0 && errno == EISDIR)
				rmdir(p);
		}
		closedir(d);
	}
	tu_coord_cleanup(&co);
}

#define attach() tu_attach(co.sock)
#define open_map(sm, name) tu_open((sm), (name))

/* What shmmapctl save sends: MSG_SAVE, path NULL for the configured one. */
static int request_save(shmmap *sm, const char *path)
{
	struct proto_msg req = {.type = MSG_SAVE}, rep;
	if (path)
		snprintf(req.u.save.path, sizeof req.u.save.path, "%s", path);
	int rc = shmmap__request(sm, &req, &rep);
	if (rc == 0 && rep.type != MSG_OK)
		rc = -EPROTO;
	return rc;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *b = malloc(cap + 1);
	size_t k;
	while (b && (k = fread(b + n, 1, cap - n, f)) > 0) {
		n += k;
		if (n == cap) {
			char *nb = realloc(b, 2 * cap + 1);
			if (!nb) {
				free(b);
				b = NULL;
				break;
			}
			b = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (b)
		b[n] = '\0';
	if (len)
		*len = n;
	return b;
}

static void spit(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(p, 1, n, f), n);
	ck_assert_int_eq(fclose(f), 0);
}

static bool log_has(const char *needle)
{
	char *l = slurp(co.log, NULL);
	bool yes = l && strstr(l, needle);
	free(l);
	return yes;
}

static size_t count_in_log(const char *needle)
{
	char *l = slurp(co.log, NULL);
	size_t n = 0;
	for (const char *p = l; p && (p = strstr(p, needle)); p++)
		n++;
	free(l);
	return n;
}

static bool log_has_pred(void *arg)
{
	return log_has(arg);
}

static void expect_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void expect_log(const char *fmt, ...)
{
	char needle[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(needle, sizeof needle, fmt, ap);
	va_end(ap);
	/* Lines are written before the reply or the exit that they explain;
	 * the deadline only covers a slow file system. */
	ck_assert_msg(tu_wait(log_has_pred, needle, 5000), "not in the log: \"%s\"", needle);
}

static uint64_t snap_records(const char *path)
{
	struct snap_info info;
	char err[512];
	int rc = shmmap__snap_verify(path, &info, err, sizeof err);
	ck_assert_msg(rc == 0, "verify: %s", err);
	return info.records;
}

static bool shm_exists(void)
{
	int fd = shm_open(co.shm, O_RDONLY, 0);
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

/* ---- entries with known contents ---- */

/* Value i of a map: length 0..299, bytes that include NULs. */
static size_t make_val(char *buf, const char *map, int i)
{
	size_t n = (size_t)((i * 37) % 300);
	for (size_t k = 0; k < n; k++)
		buf[k] = (char)((k * 31 + (size_t)i + (unsigned char)map[0]) & 0xff);
	return n;
}

static void check_val(shmmap *sm, shmmap_map m, const char *map, const char *key, int i)
{
	char want[512], got[512];
	size_t wn = make_val(want, map, i), gn = 0;
	int rc = shmmap_get(sm, m, key, strlen(key), got, sizeof got, &gn);
	CK_MSG(rc == 0, "%s/%s: %s", map, key, shmmap_strerror(rc));
	CK_MSG(gn == wn && memcmp(got, want, wn) == 0, "%s/%s: wrong value", map, key);
}

struct expiry {
	char key[32];
	uint64_t expire_ms;
};
struct expiries {
	struct expiry e[512];
	int n;
};

static int collect_expiry(const void *key, size_t klen, const void *val, size_t vlen,
			  uint64_t expire_ms, void *arg)
{
	(void)val;
	(void)vlen;
	struct expiries *x = arg;
	if (x->n >= 512 || klen >= sizeof x->e[0].key)
		return -1;
	memcpy(x->e[x->n].key, key, klen);
	x->e[x->n].key[klen] = '\0';
	x->e[x->n].expire_ms = expire_ms;
	x->n++;
	return 0;
}

static uint64_t expiry_of(const struct expiries *x, const char *key)
{
	for (int i = 0; i < x->n; i++)
		if (strcmp(x->e[i].key, key) == 0)
			return x->e[i].expire_ms;
	ck_abort_msg("%s: not walked", key);
	return 0;
}

struct gone_arg {
	shmmap *sm;
	shmmap_map m;
	const char *key;
};

static bool key_gone(void *arg)
{
	struct gone_arg *g = arg;
	char buf[8];
	return shmmap_get(g->sm, g->m, g->key, strlen(g->key), buf, sizeof buf, NULL) == -ENOENT;
}

/* ---- (1) round trip through MSG_SAVE, expiry times preserved ---- */

#define A_KEYS 300
#define B_KEYS 100

START_TEST(round_trip_keeps_values_and_absolute_expiry)
{
	start_with(NULL, NULL);
	shmmap *sm = attach();
	shmmap_map a = open_map(sm, "alpha"), b = open_map(sm, "beta");
	char key[32], val[512];
	for (int i = 0; i < A_KEYS; i++) {
		snprintf(key, sizeof key, "a%d", i);
		size_t n = make_val(val, "alpha", i);
		CK(shmmap_put(sm, a, key, strlen(key), val, n, 0, 0) == 0);
	}
	for (int i = 0; i < B_KEYS; i++) {
		snprintf(key, sizeof key, "b%d", i);
		size_t n = make_val(val, "beta", i);
		CK(shmmap_put(sm, b, key, strlen(key), val, n, i % 2 ? 0 : 3600, 0) == 0);
	}
	ck_assert_int_eq(shmmap_put(sm, b, "short", 5, "soon gone", 9, 2, 0), 0);
	struct expiries before = {0};
	ck_assert_int_eq(shmmap_foreach(sm, b, collect_expiry, &before), 0);
	ck_assert_int_eq(before.n, B_KEYS + 1);
	const uint64_t short_exp = expiry_of(&before, "short");

	ck_assert_int_eq(request_save(sm, NULL), 0);
	ck_assert_uint_eq(snap_records(snap), A_KEYS + B_KEYS + 1);
	expect_log("saved %d entries to %s in ", A_KEYS + B_KEYS + 1, snap);
	struct stat st;
	ck_assert_int_eq(stat(snap, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	shmmap_detach(sm);

	stop_clean();
	restart_fresh();
	sm = attach();
	ck_assert_int_eq(shmmap_open(sm, "alpha", 0, &a), 0);
	ck_assert_int_eq(shmmap_open(sm, "beta", 0, &b), 0);
	for (int i = 0; i < A_KEYS; i++) {
		snprintf(key, sizeof key, "a%d", i);
		check_val(sm, a, "alpha", key, i);
	}
	for (int i = 0; i < B_KEYS; i++) {
		snprintf(key, sizeof key, "b%d", i);
		check_val(sm, b, "beta", key, i);
	}
	/* Every expiry time is the original one, to the millisecond. */
	struct expiries after = {0};
	ck_assert_int_eq(shmmap_foreach(sm, b, collect_expiry, &after), 0);
	for (int i = 0; i < B_KEYS; i++) {
		snprintf(key, sizeof key, "b%d", i);
		ck_assert_uint_eq(expiry_of(&after, key), expiry_of(&before, key));
		ck_assert_uint_eq(expiry_of(&after, key) != 0, i % 2 == 0);
	}
	/* Loaded entries with an expiry have the slot for it, the others not
	 * (stripe totals), and shmmapctl check finds the segment sound. */
	const struct map_view *va, *vb;
	ck_assert_int_eq(shmmap__resolve(sm, a, &va), 0);
	ck_assert_int_eq(shmmap__resolve(sm, b, &vb), 0);
	uint64_t slots_a = 0, slots_b = 0;
	for (uint32_t i = 0; i < va->nstripes; i++)
		slots_a += __atomic_load_n(&va->stripes[i].slots, __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < vb->nstripes; i++)
		slots_b += __atomic_load_n(&vb->stripes[i].slots, __ATOMIC_RELAXED);
	ck_assert_uint_eq(slots_a, 0);
	/* b0, b2, ..., and "short" while it is linked (expired and not yet
	 * reclaimed, foreach no longer shows it) */
	if (after.n == B_KEYS + 1)
		ck_assert_uint_eq(slots_b, B_KEYS / 2 + 1);
	else
		ck_assert(slots_b == B_KEYS / 2 || slots_b == B_KEYS / 2 + 1);
	char out[4096], err[1024];
	ck_assert_msg(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "check", NULL) == 0,
		      "check: %s %s", out, err);
	/* "short" is back (unless this machine took 2 s to restart) and gone
	 * once its original expiry has passed, not 2 s after the reload. */
	uint64_t t = real_ms();
	char buf[32];
	size_t n = 0;
	int rc = shmmap_get(sm, b, "short", 5, buf, sizeof buf, &n);
	if (t + 100 < short_exp) {
		ck_assert_msg(rc == 0, "short: %s", shmmap_strerror(rc));
		ck_assert_uint_eq(expiry_of(&after, "short"), short_exp);
		ck_assert(n == 9 && memcmp(buf, "soon gone", 9) == 0);
		expect_log("loaded %d entries of 2 maps from %s (0 expired skipped)",
			   A_KEYS + B_KEYS + 1, snap);
		struct gone_arg g = {sm, b, "short"};
		ck_assert(tu_wait(key_gone, &g, 5000));
		uint64_t gone_at = real_ms();
		ck_assert_uint_ge(gone_at, short_exp);
		ck_assert_uint_lt(gone_at, short_exp + 1000); /* not 2 s after the reload */
	} else {
		ck_assert_int_eq(rc, -ENOENT);
	}
	shmmap_detach(sm);
}
END_TEST

/* ---- (2) entries expired at save or load time are not restored ---- */

static bool past(void *arg)
{
	return real_ms() > *(uint64_t *)arg;
}

START_TEST(expired_entries_are_not_restored)
{
	start_with(NULL, NULL);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "m");
	char key[32];
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof key, "keep%d", i);
		CK(shmmap_put(sm, m, key, strlen(key), "v", 1, 0, 0) == 0);
	}
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof key, "soon%d", i);
		CK(shmmap_put(sm, m, key, strlen(key), "v", 1, 1, 0) == 0);
	}
	uint64_t deadline = real_ms() + 1000;
	ck_assert_int_eq(request_save(sm, NULL), 0);
	/* Saved while alive (on a slow machine they may have expired first). */
	uint64_t saved = snap_records(snap);
	ck_assert(saved == 15 || real_ms() >= deadline);
	shmmap_detach(sm);
	kill9(); /* a clean stop would save again */

	/* They expire while no coordinator runs; the load skips them. */
	ck_assert(tu_wait(past, &deadline, 5000));
	restart_fresh();
	expect_log("loaded 10 entries of 1 maps from %s (%d expired skipped)", snap,
		   (int)(saved - 10));
	sm = attach();
	ck_assert_int_eq(shmmap_open(sm, "m", 0, &m), 0);
	struct shmmap_stats s;
	ck_assert_int_eq(shmmap_stats(sm, m, &s), 0);
	ck_assert_uint_eq(s.entries, 10); /* not stored at all, not merely hidden */
	char buf[8];
	ck_assert_int_eq(shmmap_get(sm, m, "soon0", 5, buf, sizeof buf, NULL), -ENOENT);
	ck_assert_int_eq(shmmap_get(sm, m, "keep9", 5, buf, sizeof buf, NULL), 0);

	/* An entry expired at save time is left out of the file. */
	ck_assert_int_eq(shmmap_put(sm, m, "brief", 5, "v", 1, 1, 0), 0);
	struct gone_arg g = {sm, m, "brief"};
	ck_assert(tu_wait(key_gone, &g, 5000));
	ck_assert_int_eq(request_save(sm, NULL), 0);
	ck_assert_uint_eq(snap_records(snap), 10);
	shmmap_detach(sm);
}
END_TEST

/* ---- (3) a clean shutdown saves ---- */

/* Keys user:0 .. user:n-1 of map "sessions", each with its make_val. */
static void put_sessions(int n)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "sessions");
	char key[32], val[512];
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof key, "user:%d", i);
		size_t vn = make_val(val, "sessions", i);
		CK(shmmap_put(sm, m, key, strlen(key), val, vn, 0, 0) == 0);
	}
	shmmap_detach(sm);
}

START_TEST(clean_shutdown_saves)
{
	start_with(NULL, NULL);
	expect_log("no snapshot at %s: starting empty", snap);
	put_sessions(200);
	ck_assert_int_eq(access(snap, F_OK), -1); /* nothing saved it yet */
	stop_clean();
	expect_log("saved 200 entries to %s in ", snap);
	ck_assert_uint_eq(snap_records(snap), 200);

	restart_fresh();
	expect_log("loaded 200 entries of 1 maps from %s", snap);
	shmmap *sm = attach();
	shmmap_map m;
	char key[32];
	ck_assert_int_eq(shmmap_open(sm, "sessions", 0, &m), 0);
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "user:%d", i);
		check_val(sm, m, "sessions", key, i);
	}
	shmmap_detach(sm);
}
END_TEST

/* A final save that fails (here: a directory where the snapshot goes) is
 * the stop's exit status, 3, not a clean 0 that a service manager or a
 * script would take for "saved"; the segment keeps the data, and a
 * coordinator started on it saves it at its stop. */
START_TEST(failed_final_save_is_the_exit_status)
{
	start_with(NULL, NULL);
	put_sessions(50);
	ck_assert_int_eq(mkdir(snap, 0700), 0);
	int st = tu_coord_stop(&co);
	ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 3,
		      "a stop whose final save failed: status %#x", st);
	expect_log("the final snapshot was not saved");
	ck_assert_int_eq(rmdir(snap), 0);
	ck_assert_int_eq(tu_coord_restart(&co), 0); /* adopts the segment */
	stop_clean();
	ck_assert_uint_eq(snap_records(snap), 50);
}
END_TEST

/* ---- (4) a corrupt snapshot stops the start and is left untouched ---- */

#define BIG (64 * 1024)

/* Put the snapshot bytes f (n) in place, start on a fresh segment, and
 * expect a refusal that names why; the file must be unchanged. */
static void expect_refusal(const char *f, size_t n, const char *why)
{
	spit(snap, f, n);
	shm_unlink(co.shm);
	ck_assert_int_ne(tu_coord_restart(&co), 0);
	expect_log("%s: %s", snap, why);
	expect_log("not starting");
	size_t got = 0;
	char *now = slurp(snap, &got);
	ck_assert_ptr_nonnull(now);
	ck_assert_msg(got == n && memcmp(now, f, n) == 0, "the snapshot was changed");
	free(now);
	/* The segment made for the load is gone: the next start loads again
	 * (it would adopt an empty segment otherwise). */
	ck_assert(!shm_exists());
}

START_TEST(corrupt_snapshot_refuses_to_start)
{
	start_with(NULL, NULL);
	shmmap *sm = attach();
	shmmap_map big = open_map(sm, "big"), small = open_map(sm, "small");
	char *v = malloc(BIG);
	ck_assert_ptr_nonnull(v);
	for (int i = 0; i < BIG; i++)
		v[i] = (char)(i * 7);
	ck_assert_int_eq(shmmap_put(sm, big, "k", 1, v, BIG, 0, 0), 0);
	for (int i = 0; i < 3; i++) {
		char key[16];
		snprintf(key, sizeof key, "s%d", i);
		ck_assert_int_eq(shmmap_put(sm, small, key, strlen(key), "x", 1, 0, 0), 0);
	}
	shmmap_detach(sm);
	stop_clean();
	size_t n = 0;
	char *orig = slurp(snap, &n);
	ck_assert_ptr_nonnull(orig);
	ck_assert_uint_gt(n, BIG);
	char *f = malloc(n + 1);
	ck_assert_ptr_nonnull(f);

	/* One flipped byte in the middle (inside the big value). */
	memcpy(f, orig, n);
	f[n / 2] ^= 0x10;
	expect_refusal(f, n, "checksum mismatch");
	/* The exit status says so too. */
	char *argv[] = {getenv("SHMMAPD"), "-c", co.conf, "--foreground", NULL};
	char err[4096];
	ck_assert_ptr_nonnull(argv[0]);
	ck_assert_int_eq(tu_run(argv, NULL, 0, err, sizeof err), 1);
	ck_assert_msg(strstr(err, "checksum mismatch"), "stderr: %s", err);
	ck_assert(!shm_exists());

	/* Truncated to half. */
	char why[64];
	snprintf(why, sizeof why, "truncated at byte %zu", n / 2);
	expect_refusal(orig, n / 2, why);
	/* Cut inside the trailer. */
	snprintf(why, sizeof why, "truncated at byte %zu", n - 3);
	expect_refusal(orig, n - 3, why);
	/* Another file. */
	expect_refusal("hello, world\n", 13, "not a shmmap snapshot");
	/* A later format. */
	memcpy(f, orig, n);
	f[8] = 2;
	expect_refusal(f, n, "format version 2 not supported");
	/* A byte too many. */
	memcpy(f, orig, n);
	f[n] = 0;
	snprintf(why, sizeof why, "trailing bytes after the trailer, at byte %zu", n);
	expect_refusal(f, n + 1, why);
	/* A record's length out of bounds: the first record's name length
	 * (byte 32) made 0. */
	memcpy(f, orig, n);
	f[32] = 0;
	expect_refusal(f, n, "corrupt at byte 32");

	/* The original loads, and everything is there. */
	spit(snap, orig, n);
	restart_fresh();
	expect_log("loaded 4 entries of 2 maps from %s", snap);
	sm = attach();
	ck_assert_int_eq(shmmap_open(sm, "big", 0, &big), 0);
	char *got = malloc(BIG);
	size_t gn = 0;
	ck_assert_int_eq(shmmap_get(sm, big, "k", 1, got, BIG, &gn), 0);
	ck_assert(gn == BIG && memcmp(got, v, BIG) == 0);
	shmmap_detach(sm);
	free(got);
	free(f);
	free(orig);
	free(v);
}
END_TEST

/* ---- (5) interval saves ---- */

static bool snap_has(void *arg)
{
	struct snap_info info;
	char err[512];
	return shmmap__snap_verify(snap, &info, err, sizeof err) == 0 &&
	       info.records == *(uint64_t *)arg;
}

static bool no_temp_files(void)
{
	DIR *d = opendir(co.dir);
	ck_assert_ptr_nonnull(d);
	struct dirent *e;
	bool none = true;
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".tmp."))
			none = false;
	closedir(d);
	return none;
}

START_TEST(interval_saves_without_a_request)
{
	start_with("interval = 1\n", NULL);
	uint64_t want = 0;
	ck_assert_msg(tu_wait(snap_has, &want, 5000), "no snapshot within 5 s");
	struct stat st1;
	ck_assert_int_eq(stat(snap, &st1), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "m");
	for (int i = 0; i < 5; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, key, strlen(key), "v", 1, 0, 0), 0);
	}
	want = 5;
	ck_assert_msg(tu_wait(snap_has, &want, 5000), "the snapshot was not updated within 5 s");
	struct stat st2;
	ck_assert_int_eq(stat(snap, &st2), 0);
	ck_assert(st2.st_size > st1.st_size);
	ck_assert(st2.st_ino != st1.st_ino); /* replaced, not rewritten in place */
	expect_log("saved 5 entries to %s in ", snap);
	shmmap_detach(sm);
	stop_clean();
	ck_assert(no_temp_files());
}
END_TEST

/* ---- (6) a save while two processes write ---- */

#define W_KEYS 2000
#define W_CHURN 5 /* keys i % W_CHURN == 0 are deleted and put back */

struct wshared {
	_Atomic uint64_t acked[2][W_KEYS]; /* last version whose put returned 0 */
	_Atomic uint64_t progress;
	_Atomic int ready;
	_Atomic int stop;
};
static struct wshared *ws;

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ULL;
	return h;
}

/* value = version u64 | pad | fnv(key, version, pad) u64 */
static size_t w_value(char *buf, const char *key, uint64_t ver)
{
	size_t pad = 16 + (size_t)((ver * 13 + strlen(key)) % 200);
	memcpy(buf, &ver, 8);
	for (size_t i = 0; i < pad; i++)
		buf[8 + i] = (char)(ver + i);
	uint64_t h = fnv(key, strlen(key), 0xcbf29ce484222325ULL);
	h = fnv(buf, 8 + pad, h);
	memcpy(buf + 8 + pad, &h, 8);
	return 16 + pad;
}

/* The version a value holds, or 0 if it is not a value w_value made for key. */
static uint64_t w_check(const char *key, const char *buf, size_t n)
{
	if (n < 32)
		return 0;
	uint64_t ver, h;
	memcpy(&ver, buf, 8);
	memcpy(&h, buf + n - 8, 8);
	uint64_t want = fnv(buf, n - 8, fnv(key, strlen(key), 0xcbf29ce484222325ULL));
	return h == want ? ver : 0;
}

static int writer(int me)
{
	shmmap *sm;
	if (shmmap_attach(co.sock, &sm))
		return 10;
	shmmap_map m;
	if (shmmap_open(sm, "w", SHMMAP_CREATE, &m))
		return 11;
	char key[32], val[512];
	for (uint64_t ver = 1; ver == 1 || !atomic_load(&ws->stop); ver++) {
		for (int i = 0; i < W_KEYS; i++) {
			snprintf(key, sizeof key, "w%d-%d", me, i);
			if (i % W_CHURN == 0 && ver % 2 == 0) {
				int rc = shmmap_del(sm, m, key, strlen(key));
				if (rc && rc != -ENOENT)
					return 12;
				continue;
			}
			size_t n = w_value(val, key, ver);
			if (shmmap_put(sm, m, key, strlen(key), val, n, 0, 0))
				return 13;
			atomic_store(&ws->acked[me][i], ver);
			atomic_fetch_add(&ws->progress, 1);
		}
		if (ver == 1)
			atomic_fetch_add(&ws->ready, 1);
	}
	shmmap_detach(sm);
	return 0;
}

static bool writers_ready(void *arg)
{
	(void)arg;
	return atomic_load(&ws->ready) == 2;
}

static bool progressed(void *arg)
{
	return atomic_load(&ws->progress) > *(uint64_t *)arg;
}

START_TEST(save_under_concurrent_writers)
{
	start_with(NULL, NULL);
	ws = mmap(NULL, sizeof *ws, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(ws != MAP_FAILED);
	pid_t w[2];
	for (int k = 0; k < 2; k++) {
		w[k] = tu_fork();
		ck_assert_int_ge(w[k], 0);
		if (w[k] == 0)
			_exit(writer(k));
	}
	ck_assert(tu_wait(writers_ready, NULL, 20000));
	static uint64_t lo[2][W_KEYS], hi[2][W_KEYS];
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < W_KEYS; i++)
			lo[k][i] = atomic_load(&ws->acked[k][i]);
	shmmap *sm = attach();
	uint64_t p0 = atomic_load(&ws->progress);
	ck_assert_int_eq(request_save(sm, NULL), 0);
	uint64_t p1 = atomic_load(&ws->progress);
	ck_assert(tu_wait(progressed, &p1, 10000)); /* still writing after the save */
	ck_assert_uint_gt(p1, p0);                  /* and were during it */
	shmmap_detach(sm);
	atomic_store(&ws->stop, 1);
	for (int k = 0; k < 2; k++) {
		int st = tu_waitpid(w[k], 20000);
		ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
			      "writer %d: status %#x", k, st);
	}
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < W_KEYS; i++)
			hi[k][i] = atomic_load(&ws->acked[k][i]);
	kill9(); /* keep the snapshot taken under load */

	restart_fresh();
	sm = attach();
	shmmap_map m;
	ck_assert_int_eq(shmmap_open(sm, "w", 0, &m), 0);
	char key[32], buf[512];
	uint64_t present = 0;
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < W_KEYS; i++) {
			snprintf(key, sizeof key, "w%d-%d", k, i);
			size_t n = 0;
			int rc = shmmap_get(sm, m, key, strlen(key), buf, sizeof buf, &n);
			if (i % W_CHURN == 0 && rc == -ENOENT)
				continue; /* deleted at some point: may be absent */
			CK_MSG(rc == 0, "%s: never deleted, but %s", key, shmmap_strerror(rc));
			uint64_t ver = w_check(key, buf, n);
			CK_MSG(ver != 0, "%s: a value no writer wrote", key);
			/* A value acknowledged at some point during the save. */
			CK_MSG(ver >= lo[k][i] && ver <= hi[k][i],
			       "%s: version %llu outside [%llu, %llu]", key,
			       (unsigned long long)ver, (unsigned long long)lo[k][i],
			       (unsigned long long)hi[k][i]);
			present++;
		}
	}
	ck_assert_uint_ge(present, 2 * (W_KEYS - W_KEYS / W_CHURN));
	expect_log("loaded %llu entries of 1 maps", (unsigned long long)present);
	shmmap_detach(sm);
	munmap(ws, sizeof *ws);
}
END_TEST

/* ---- (7) a snapshot larger than the new limits loads what fits ---- */

START_TEST(records_over_new_limits_are_counted)
{
	start_with(NULL, NULL);
	shmmap *sm = attach();
	shmmap_map m1 = open_map(sm, "m1"), m2 = open_map(sm, "m2");
	char big[5000] = {0};
	char longkey[41];
	memset(longkey, 'k', 40);
	longkey[40] = '\0';
	ck_assert_int_eq(shmmap_put(sm, m1, "small", 5, "v", 1, 0, 0), 0);
	ck_assert_int_eq(shmmap_put(sm, m1, longkey, 40, "v", 1, 0, 0), 0);
	ck_assert_int_eq(shmmap_put(sm, m1, "bigval", 6, big, sizeof big, 0, 0), 0);
	for (int i = 0; i < 3; i++) {
		char key[16];
		snprintf(key, sizeof key, "x%d", i);
		ck_assert_int_eq(shmmap_put(sm, m2, key, strlen(key), "v", 1, 0, 0), 0);
	}
	shmmap_detach(sm);
	stop_clean();
	FILE *f = fopen(co.conf, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "\n[map]\nkey_max = 32\nvalue_max = 4K\n\n[segment]\nmax_maps = 1\n");
	fclose(f);
	restart_fresh();
	expect_log("loaded 1 entries of 1 maps from %s", snap);
	expect_log("3 entries of maps that could not be created, 2 over the map limits "
		   "(key_max, value_max) and 0 that did not fit were not loaded");
	expect_log("map 'm2' not loaded");
	sm = attach();
	ck_assert_int_eq(shmmap_open(sm, "m1", 0, &m1), 0);
	char buf[8];
	ck_assert_int_eq(shmmap_get(sm, m1, "small", 5, buf, sizeof buf, NULL), 0);
	ck_assert_int_eq(shmmap_open(sm, "m2", 0, &m2), -ENOENT);
	shmmap_detach(sm);
}
END_TEST

/* ---- (8) MSG_SAVE's errors and explicit paths ---- */

START_TEST(save_requests_are_checked)
{
	/* No snapshot configured: a save needs a path. */
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "m");
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "v", 1, 0, 0), 0);
	/* Each says why (it was a bare "Invalid argument"). */
	ck_assert_int_eq(request_save(sm, NULL), -EINVAL);
	ck_assert_msg(strstr(shmmap_errdetail(), "no snapshot file: set [persistence] snapshot"),
		      "detail: '%s'", shmmap_errdetail());
	ck_assert_int_eq(request_save(sm, "relative/path"), -EINVAL);
	ck_assert_msg(strstr(shmmap_errdetail(), "'relative/path' is not absolute"),
		      "detail: '%s'", shmmap_errdetail());
	char p[512];
	snprintf(p, sizeof p, "%s/explicit.snap", co.dir);
	ck_assert_int_eq(request_save(sm, p), 0);
	ck_assert_uint_eq(snap_records(p), 1);
	expect_log("saved 1 entries to %s in ", p);
	/* The same through shmmapctl. */
	snprintf(p, sizeof p, "%s/ctl.snap", co.dir);
	char out[256], err[512];
	ck_assert_int_eq(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "save", p, NULL), 0);
	ck_assert_uint_eq(snap_records(p), 1);
	ck_assert_int_eq(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "save", NULL), 4);
	ck_assert_msg(strstr(err, "Invalid argument: no snapshot file: set [persistence] snapshot "
				  "in the coordinator's config, or give a PATH"),
		      "stderr: %s", err);
	/* Its health, without the log: two saves so far, none failed. */
	char st[4096];
	ck_assert_int_eq(tu_ctl(co.sock, st, sizeof st, err, sizeof err, "--json", "status", NULL), 0);
	ck_assert_msg(strstr(st, "\"entries\":1,\"failed_ms\":0,\"failures\":0}") &&
			      !strstr(st, "\"saved_ms\":0,"),
		      "status: %s", st);
	ck_assert_int_eq(request_save(sm, "/nonexistent-shmmap-dir/x.snap"), -ENOENT);
	expect_log("snapshot not saved: /nonexistent-shmmap-dir/x.snap: cannot create");
	ck_assert_int_eq(tu_ctl(co.sock, st, sizeof st, err, sizeof err, "status", NULL), 0);
	ck_assert_msg(strstr(st, "snapshots       last saved ") &&
			      strstr(st, "; 1 failed, the last ") && strstr(st, "the last save failed"),
		      "status: %s", st);
	static char met[1 << 17];
	ck_assert_int_eq(tu_ctl(co.sock, met, sizeof met, err, sizeof err, "metrics", NULL), 0);
	ck_assert_msg(strstr(met, "\nshmmap_snapshot_failures_total 1\n") &&
			      strstr(met, "\nshmmap_snapshot_last_entries 1\n"),
		      "metrics lack the snapshot figures");
	/* Renaming over a directory fails: no temp file is left behind. */
	snprintf(p, sizeof p, "%s/adir", co.dir);
	ck_assert_int_eq(mkdir(p, 0700), 0);
	ck_assert_int_lt(request_save(sm, p), 0);
	ck_assert(no_temp_files());
	/* The connection is still good. */
	shmmap_map m2;
	ck_assert_int_eq(shmmap_open(sm, "m", 0, &m2), 0);
	shmmap_detach(sm);

	/* A read-only client may not save. */
	setenv("SHMMAP_READONLY", "1", 1);
	int rc = shmmap_attach(co.sock, &sm);
	unsetenv("SHMMAP_READONLY");
	ck_assert_int_eq(rc, 0);
	snprintf(p, sizeof p, "%s/ro.snap", co.dir);
	ck_assert_int_eq(request_save(sm, p), -EPERM);
	ck_assert_int_eq(access(p, F_OK), -1);
	shmmap_detach(sm);
	/* A clean stop without a configured snapshot writes nothing. */
	size_t before = count_in_log("saved ");
	stop_clean();
	ck_assert_uint_eq(count_in_log("saved "), before);
	(void)m2;
}
END_TEST

/* ---- (9) a segment left half-loaded by a killed coordinator ---- */

START_TEST(half_loaded_segment_is_replaced)
{
	start_with(NULL, NULL);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "m");
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "v", 1, 0, 0), 0);
	shmmap_detach(sm);
	stop_clean();
	/* What a coordinator killed during its load leaves: the loading magic
	 * and a dead coordinator pid. */
	int fd = shm_open(co.shm, O_RDWR, 0);
	ck_assert_int_ge(fd, 0);
	struct seg_header *h = mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert(h != MAP_FAILED);
	close(fd);
	atomic_store((_Atomic uint64_t *)&h->magic, SNAP_LOADING_SEG_MAGIC);
	atomic_store(&h->coord_pid, 0);
	munmap(h, sizeof *h);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	expect_log("died while loading a snapshot into it: replacing it");
	expect_log("loaded 1 entries of 1 maps from %s", snap);
	sm = attach();
	ck_assert_int_eq(shmmap_open(sm, "m", 0, &m), 0);
	char buf[4];
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, NULL), 0);
	shmmap_detach(sm);
}
END_TEST

/* ---- (10) temp files of saves that never finished ---- */

/* A coordinator killed during a save leaves PATH.tmp.PID, as big as a
 * snapshot; nothing removed it, so every crash during a save left one
 * more in the state directory.  A start removes those of dead processes
 * (and only files named so). */
START_TEST(stale_temp_files_are_removed_at_start)
{
	start_with(NULL, NULL);
	stop_clean();
	pid_t dead = fork();
	ck_assert_int_ge(dead, 0);
	if (dead == 0)
		_exit(0);
	ck_assert_int_eq(tu_waitpid(dead, 10000), 0);
	char stale[600], live[600], other[600];
	snprintf(stale, sizeof stale, "%s.tmp.%d", snap, (int)dead);
	snprintf(live, sizeof live, "%s.tmp.%d", snap, (int)getpid()); /* a save running now */
	snprintf(other, sizeof other, "%s.tmp.%dx", snap, (int)dead);  /* not a temp file of ours */
	spit(stale, "half a snapshot", 15);
	spit(live, "being written", 13);
	spit(other, "someone's file", 14);
	ck_assert_int_eq(tu_coord_restart(&co), 0); /* adopts: a restart after a crash */
	expect_log("removed %s (15 bytes), left by a save that did not finish", stale);
	ck_assert_int_eq(access(stale, F_OK), -1);
	ck_assert_int_eq(access(live, F_OK), 0);
	ck_assert_int_eq(access(other, F_OK), 0);
}
END_TEST

/* ---- (11) a load that could not take every record ---- */

/* A snapshot loaded only in part (a smaller segment, lower limits, fewer
 * maps) was replaced by the next save, interval or shutdown, with what had
 * been loaded: the records left out were gone for good, though the log
 * said only "the next save will not have them".  The start keeps the file
 * it loaded under PATH.before-partial-load, which no save touches. */
START_TEST(partial_load_keeps_the_full_snapshot)
{
	start_with(NULL, NULL);
	shmmap *sm = attach();
	shmmap_map m1 = open_map(sm, "m1"), m2 = open_map(sm, "m2");
	ck_assert_int_eq(shmmap_put(sm, m1, "small", 5, "v", 1, 0, 0), 0);
	for (int i = 0; i < 3; i++) {
		char key[16];
		snprintf(key, sizeof key, "x%d", i);
		ck_assert_int_eq(shmmap_put(sm, m2, key, strlen(key), "v", 1, 0, 0), 0);
	}
	shmmap_detach(sm);
	stop_clean();
	ck_assert_uint_eq(snap_records(snap), 4);
	FILE *f = fopen(co.conf, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "\n[segment]\nmax_maps = 1\n");
	fclose(f);
	restart_fresh();
	expect_log("3 entries of maps that could not be created");
	char kept[600];
	snprintf(kept, sizeof kept, "%s.before-partial-load", snap);
	expect_log("the snapshot as loaded is kept in %s", kept);
	stop_clean(); /* saves the one record loaded over snap */
	ck_assert_uint_eq(snap_records(snap), 1);
	ck_assert_uint_eq(snap_records(kept), 4);
	/* A later partial load leaves the kept file alone. */
	spit(kept, "older", 5);
	f = fopen(co.conf, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "\n[map]\nkey_max = 4\n");
	fclose(f);
	restart_fresh();
	expect_log("1 over the map limits");
	expect_log("%s exists already (from an earlier partial load): left as it is", kept);
	size_t n = 0;
	char *b = slurp(kept, &n);
	ck_assert(b && n == 5 && memcmp(b, "older", 5) == 0);
	free(b);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("snapshot");
	TCase *tc = tcase_create("persistence");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, round_trip_keeps_values_and_absolute_expiry);
	tcase_add_test(tc, expired_entries_are_not_restored);
	tcase_add_test(tc, clean_shutdown_saves);
	tcase_add_test(tc, failed_final_save_is_the_exit_status);
	tcase_add_test(tc, corrupt_snapshot_refuses_to_start);
	tcase_add_test(tc, interval_saves_without_a_request);
	tcase_add_test(tc, save_under_concurrent_writers);
	tcase_add_test(tc, records_over_new_limits_are_counted);
	tcase_add_test(tc, save_requests_are_checked);
	tcase_add_test(tc, half_loaded_segment_is_replaced);
	tcase_add_test(tc, stale_temp_files_are_removed_at_start);
	tcase_add_test(tc, partial_load_keeps_the_full_snapshot);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(suite());
}
