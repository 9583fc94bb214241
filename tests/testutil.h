/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * testutil.h - helpers shared by the Check test programs: unique names,
 * a real shmmapd started on a private config, deadline waits.
 * Every resource a helper creates is removed by the matching stop call.
 */
#ifndef SHMMAP_TESTUTIL_H
#define SHMMAP_TESTUTIL_H

#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmmap.h"

/* Check's ck_assert* record a checkpoint (file I/O) on every pass, far too
 * slow for loops of many thousand checks: these only act on failure. */
#define CK(expr)                                                              \
	do {                                                                  \
		if (!(expr))                                                  \
			ck_abort_msg("Assertion '%s' failed", #expr);         \
	} while (0)
#define CK_MSG(expr, ...)                                                     \
	do {                                                                  \
		if (!(expr))                                                  \
			ck_abort_msg(__VA_ARGS__);                            \
	} while (0)
#define CK_EQ(a, b)                                                           \
	do {                                                                  \
		long long ck_a_ = (long long)(a), ck_b_ = (long long)(b);     \
		if (ck_a_ != ck_b_)                                           \
			ck_abort_msg("Assertion '%s == %s' failed: %lld != %lld", \
				     #a, #b, ck_a_, ck_b_);                   \
	} while (0)

/* Run every test of s (output as $CK_VERBOSITY says, CK_NORMAL if unset);
 * the exit code for main(). */
int tu_run_suite(Suite *s);

/* Skip the running test because it cannot run here (not root, a missing
 * tool), and return from it.  Prints one line "SKIP: TEST: why" on stdout,
 * which scripts/run-tests.sh counts as skipped, not passed, and shows.  Use
 * it only before the test has checked anything: a test that skips after a
 * failed check still counts as failed. */
#define TU_SKIP(...)                                                          \
	do {                                                                  \
		tu_skip(__func__, __VA_ARGS__);                               \
		return;                                                       \
	} while (0)
void tu_skip(const char *test_fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A coordinator run by a test. */
struct tu_coord {
	pid_t pid;
	char dir[256];      /* private temp directory (config, socket, log) */
	char conf[300];     /* config file path */
	char sock[108];     /* socket path (fits sun_path) */
	char shm[64];       /* segment name, "/shmmap-test-<pid>-<n>" */
	char log[300];      /* coordinator's stderr */
};

/* Extra config lines (e.g. "[map]\nvalue_max = 4K\n") may be NULL.
 * size like "8M".  Starts build/shmmapd (path from $SHMMAPD) in the
 * foreground as a child and waits (deadline 10 s) until its socket
 * accepts.  Returns 0 or -1 (with a message on stderr). */
int tu_coord_start(struct tu_coord *c, const char *size, const char *extra_conf);
/* Start again on the same config (after a stop or a crash). */
int tu_coord_restart(struct tu_coord *c);
/* The same, with one more command-line argument (e.g. "--reinit"). */
int tu_coord_restart_with(struct tu_coord *c, const char *arg);
/* SIGTERM and wait (deadline 10 s); returns the exit status, or -1. */
int tu_coord_stop(struct tu_coord *c);
/* Stop if running, unlink the segment, remove the temp directory. */
void tu_coord_cleanup(struct tu_coord *c);

/* CLOCK_MONOTONIC in ms and in ns: for deadlines and measured gaps. */
long long tu_mono_ms(void);
uint64_t tu_mono_ns(void);
/* /proc/PID/stat read into buf: a pointer to its fields from the state
 * (the third) on, or NULL if the process is gone or the line unreadable. */
const char *tu_proc_stat(pid_t pid, char *buf, size_t cap);
/* Wait until pred(arg) is true, polling every ms milliseconds, at most
 * deadline_ms.  Returns true if it became true. */
bool tu_wait(bool (*pred)(void *), void *arg, int deadline_ms);

/* Wait for a child with a deadline; returns its wait status, or -1 on
 * timeout (after which the child is SIGKILLed and reaped). */
int tu_waitpid(pid_t pid, int deadline_ms);

/* Run argv (argv[0] is a path) with stdout captured into out (NUL-terminated,
 * at most cap - 1 bytes) and stderr into err (may be NULL).  Returns the
 * exit status (0..255), or -1 if it did not exit within 20 s. */
int tu_run(char *const argv[], char *out, size_t cap, char *err, size_t errcap);

/* fork(), with the child killed (SIGKILL) when the test process dies, so
 * that a failed or timed-out test leaves no worker spinning behind it. */
pid_t tu_fork(void);

/* Attach to the coordinator at sock, or fail the test. */
shmmap *tu_attach(const char *sock);
/* Open (creating) the map called name, or fail the test. */
uint64_t tu_open_id(shmmap *sm, const char *name);
#define tu_open(sm, name) ((shmmap_map){.id = tu_open_id((sm), (name))})

/* Run $SHMMAPCTL -s sock ARGS... (NULL-terminated list, at most 28) with
 * stdout into out and stderr into err, as tu_run.  Returns its exit status. */
int tu_ctl(const char *sock, char *out, size_t cap, char *err, size_t errcap, const char *a0,
	   ...);
int tu_vctl(const char *sock, char *out, size_t cap, char *err, size_t errcap, const char *a0,
	    va_list ap);

/* The value of environment variable name (set by the Makefile's TEST_ENV,
 * e.g. SHMMAP_SRCDIR), or fail the test. */
const char *tu_env(const char *name);
/* The whole file at path, NUL-terminated, malloc'ed (len: its length, may
 * be NULL), or fail the test. */
char *tu_slurp(const char *path, size_t *len);
/* Run "/bin/sh -c cmd" as tu_run does, with at most a minute to finish. */
int tu_sh(const char *cmd, char *out, size_t cap, char *err, size_t errcap);

#endif
