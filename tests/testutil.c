/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * testutil.c - helpers for the Check programs (see testutil.h): a real
 * shmmapd on a private config, socket and segment; deadline-bounded waits
 * (tests never sleep to synchronise: they poll a condition with a deadline).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static void nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

long long tu_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t tu_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *tu_proc_stat(pid_t pid, char *buf, size_t cap)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f || cap < 2) {
		if (f)
			fclose(f);
		return NULL;
	}
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold anything, spaces and ')' too: the fields
	 * start after its last ')'. */
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] ? p + 2 : NULL;
}

bool tu_wait(bool (*pred)(void *), void *arg, int deadline_ms)
{
	long long end = tu_mono_ms() + deadline_ms;
	for (;;) {
		if (pred(arg))
			return true;
		if (tu_mono_ms() >= end)
			return false;
		nap_ms(5);
	}
}

int tu_waitpid(pid_t pid, int deadline_ms)
{
	long long end = tu_mono_ms() + deadline_ms;
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return st;
		if (r < 0)
			return -1;
		if (tu_mono_ms() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		nap_ms(2);
	}
}

static bool sock_accepts(void *arg)
{
	const char *path = arg;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path)
		return false;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return false;
	bool ok = connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(s);
	return ok;
}

static void dump_log(const struct tu_coord *c)
{
	FILE *f = fopen(c->log, "r");
	char line[512];
	if (!f)
		return;
	while (fgets(line, sizeof line, f))
		fprintf(stderr, "  shmmapd: %s", line);
	fclose(f);
}

int tu_coord_restart(struct tu_coord *c)
{
	return tu_coord_restart_with(c, NULL);
}

int tu_coord_restart_with(struct tu_coord *c, const char *arg)
{
	const char *bin = getenv("SHMMAPD");
	if (!bin) {
		fprintf(stderr, "testutil: $SHMMAPD is not set\n");
		return -1;
	}
	pid_t pid = tu_fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(c->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		execl(bin, "shmmapd", "-c", c->conf, "--foreground", arg, (char *)NULL);
		_exit(127);
	}
	c->pid = pid;
	long long end = tu_mono_ms() + 10000;
	while (!sock_accepts(c->sock)) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid || tu_mono_ms() > end) {
			fprintf(stderr, "testutil: shmmapd did not come up\n");
			dump_log(c);
			if (tu_mono_ms() > end) {
				kill(pid, SIGKILL);
				waitpid(pid, &st, 0);
			}
			c->pid = 0;
			return -1;
		}
		nap_ms(5);
	}
	return 0;
}

/* Segments of tests whose process is gone (shmmap-test-PID-N, and its
 * .lock): a test that fails in a forked Check child ends without its
 * teardown, and each left tens of MiB in /dev/shm (three runs of a failing
 * check_seggrow, 340 MiB). */
static void remove_dead_segments(void)
{
	DIR *d = opendir("/dev/shm");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		int pid = 0, n = 0;
		if (sscanf(e->d_name, "shmmap-test-%d-%d", &pid, &n) != 2 || pid <= 0)
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue; /* alive, or cannot tell */
		char name[300];
		snprintf(name, sizeof name, "/%s", e->d_name);
		shm_unlink(name);
	}
	closedir(d);
}

int tu_coord_start(struct tu_coord *c, const char *size, const char *extra_conf)
{
	static int counter;
	remove_dead_segments();
	memset(c, 0, sizeof *c);
	snprintf(c->dir, sizeof c->dir, "/tmp/shmmap-test-XXXXXX");
	if (!mkdtemp(c->dir))
		return -1;
	snprintf(c->conf, sizeof c->conf, "%s/shmmap.ini", c->dir);
	if ((size_t)snprintf(c->sock, sizeof c->sock, "%.90s/sock", c->dir) >= sizeof c->sock)
		return -1;
	snprintf(c->log, sizeof c->log, "%s/shmmapd.log", c->dir);
	snprintf(c->shm, sizeof c->shm, "/shmmap-test-%d-%d", (int)getpid(), counter++);
	shm_unlink(c->shm);
	FILE *f = fopen(c->conf, "w");
	if (!f)
		return -1;
	fprintf(f, "[segment]\nname = %s\nsize = %s\n\n[server]\nsocket = %s\n\n%s\n", c->shm,
		size ? size : "8M", c->sock, extra_conf ? extra_conf : "");
	fclose(f);
	return tu_coord_restart(c);
}

int tu_coord_stop(struct tu_coord *c)
{
	if (c->pid <= 0)
		return -1;
	kill(c->pid, SIGTERM);
	int st = tu_waitpid(c->pid, 10000);
	c->pid = 0;
	return st;
}

void tu_coord_cleanup(struct tu_coord *c)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		tu_waitpid(c->pid, 10000);
		c->pid = 0;
	}
	if (c->shm[0]) {
		char lock[80];
		snprintf(lock, sizeof lock, "%s.lock", c->shm); /* the coordinators' flock */
		shm_unlink(c->shm);
		shm_unlink(lock);
	}
	if (c->dir[0]) {
		unlink(c->conf);
		unlink(c->sock);
		unlink(c->log);
		rmdir(c->dir);
	}
}

static void drain(int fd, char *buf, size_t cap, size_t *len, bool *open_)
{
	char tmp[4096];
	ssize_t n = read(fd, tmp, sizeof tmp);
	if (n <= 0) {
		*open_ = false;
		return;
	}
	if (buf && cap) {
		size_t room = cap - 1 - *len;
		size_t k = (size_t)n < room ? (size_t)n : room;
		memcpy(buf + *len, tmp, k);
		*len += k;
		buf[*len] = '\0';
	}
}

static int run_for(char *const argv[], char *out, size_t cap, char *err, size_t errcap,
		   int deadline_ms)
{
	int po[2], pe[2];
	if (pipe(po) < 0)
		return -1;
	if (pipe(pe) < 0) {
		close(po[0]);
		close(po[1]);
		return -1;
	}
	pid_t pid = tu_fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		close(po[1]);
		close(pe[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	size_t ol = 0, el = 0;
	if (out && cap)
		out[0] = '\0';
	if (err && errcap)
		err[0] = '\0';
	bool oo = true, eo = true;
	long long end = tu_mono_ms() + deadline_ms;
	while ((oo || eo) && tu_mono_ms() < end) {
		struct pollfd p[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
		if (poll(p, 2, 100) < 0 && errno != EINTR)
			break;
		if (oo && (p[0].revents & (POLLIN | POLLHUP)))
			drain(po[0], out, cap, &ol, &oo);
		if (eo && (p[1].revents & (POLLIN | POLLHUP)))
			drain(pe[0], err, errcap, &el, &eo);
	}
	close(po[0]);
	close(pe[0]);
	int st = tu_waitpid(pid, oo || eo ? 0 : deadline_ms);
	if (st < 0 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

int tu_run(char *const argv[], char *out, size_t cap, char *err, size_t errcap)
{
	return run_for(argv, out, cap, err, errcap, 20000);
}

int tu_sh(const char *cmd, char *out, size_t cap, char *err, size_t errcap)
{
	char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
	return run_for(argv, out, cap, err, errcap, 60000);
}

const char *tu_env(const char *name)
{
	const char *v = getenv(name);
	ck_assert_msg(v && *v, "$%s is not set (run the tests with make test)", name);
	return v;
}

char *tu_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	ck_assert_ptr_nonnull(buf);
	for (;;) {
		n += fread(buf + n, 1, cap - 1 - n, f);
		if (n < cap - 1)
			break;
		cap *= 2;
		buf = realloc(buf, cap);
		ck_assert_ptr_nonnull(buf);
	}
	ck_assert_msg(!ferror(f), "%s: read error", path);
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

void tu_skip(const char *test_fn, const char *fmt, ...)
{
	/* START_TEST(name) defines name_fn: report the test's own name. */
	size_t n = strlen(test_fn);
	if (n > 3 && strcmp(test_fn + n - 3, "_fn") == 0)
		n -= 3;
	char line[512];
	int k = snprintf(line, sizeof line, "SKIP: %.*s: ", (int)n, test_fn);
	va_list ap;
	va_start(ap, fmt);
	if (k > 0 && (size_t)k < sizeof line)
		k += vsnprintf(line + k, sizeof line - (size_t)k, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= sizeof line - 1)
		k = (int)sizeof line - 2;
	line[k++] = '\n';
	/* One write, not stdio: the line must not mix with buffered output. */
	if (write(STDOUT_FILENO, line, (size_t)k) < 0) { /* nowhere to say it */ }
}

int tu_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV); /* $CK_VERBOSITY, else CK_NORMAL */
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

shmmap *tu_attach(const char *sock)
{
	shmmap *sm = NULL;
	int rc = shmmap_attach(sock, &sm);
	ck_assert_msg(rc == 0, "attach: %s", shmmap_strerror(rc));
	return sm;
}

uint64_t tu_open_id(shmmap *sm, const char *name)
{
	shmmap_map m;
	int rc = shmmap_open(sm, name, SHMMAP_CREATE, &m);
	ck_assert_msg(rc == 0, "open %s: %s", name, shmmap_strerror(rc));
	return m.id;
}

int tu_vctl(const char *sock, char *out, size_t cap, char *err, size_t errcap, const char *a0,
	    va_list ap)
{
	char *argv[32];
	int n = 0;
	argv[n++] = getenv("SHMMAPCTL");
	ck_assert_msg(argv[0] != NULL, "$SHMMAPCTL is not set");
	argv[n++] = "-s";
	argv[n++] = (char *)sock;
	for (const char *a = a0; a && n < 31; a = va_arg(ap, const char *))
		argv[n++] = (char *)a;
	argv[n] = NULL;
	return tu_run(argv, out, cap, err, errcap);
}

int tu_ctl(const char *sock, char *out, size_t cap, char *err, size_t errcap, const char *a0,
	   ...)
{
	va_list ap;
	va_start(ap, a0);
	int rc = tu_vctl(sock, out, cap, err, errcap, a0, ap);
	va_end(ap);
	return rc;
}

pid_t tu_fork(void)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent) /* died before the line above */
			_exit(99);
	}
	return pid;
}
