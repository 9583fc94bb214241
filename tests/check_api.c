/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_api.c - the public API end to end: a real shmmapd, real forked
 * worker processes that attach on their own, share maps, and check each
 * other's writes.  Every test runs its own coordinator, segment and socket.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "shmmap.h"
#include "testutil.h"

static struct tu_coord co;

static void setup(void)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", NULL), 0);
}

static void setup_small(void)
{
	/* A small segment and tight limits, for the E2BIG / ENOSPC cases. */
	ck_assert_int_eq(tu_coord_start(&co, "2M",
					"[map]\nkey_max = 32\nvalue_max = 64K\nbuckets = 256\n"
					"stripes = 16\npolicy = reject\n[segment]\nmax_maps = 2\n"),
			 0);
}

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

#define attach() tu_attach(co.sock)
#define open_map(sm, name) tu_open((sm), (name))

/* In a child: attach, run fn, exit 0 on success.  Check's asserts do not
 * cross tu_fork() well, so children report through their exit code. */
static pid_t spawn(int (*fn)(int), int arg)
{
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(fn(arg));
	return pid;
}

static void expect_exit0(pid_t pid, int deadline_ms)
{
	int st = tu_waitpid(pid, deadline_ms);
	ck_assert_msg(st >= 0, "child %d did not finish in time", (int)pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed: status %#x",
		      (int)pid, st);
}

/* ---- two unrelated workers share a map ---- */

#define SHARE_KEYS 500

static int worker_share(int me)
{
	shmmap *sm;
	if (shmmap_attach(co.sock, &sm))
		return 10;
	shmmap_map m;
	if (shmmap_open(sm, "shared", SHMMAP_CREATE, &m))
		return 11;
	char k[32], v[64], buf[64];
	for (int i = 0; i < SHARE_KEYS; i++) {
		snprintf(k, sizeof k, "w%d-%d", me, i);
		int n = snprintf(v, sizeof v, "value %d from worker %d", i, me);
		if (shmmap_put(sm, m, k, strlen(k), v, (size_t)n, 0, 0))
			return 12;
	}
	/* Wait (deadline 10 s) until every key of the other worker is there. */
	int other = 1 - me;
	long long end = tu_mono_ms() + 10000;
	for (int i = 0; i < SHARE_KEYS;) {
		snprintf(k, sizeof k, "w%d-%d", other, i);
		size_t n;
		int rc = shmmap_get(sm, m, k, strlen(k), buf, sizeof buf, &n);
		if (rc == -ENOENT) {
			if (tu_mono_ms() > end)
				return 13;
			sched_yield();
			continue;
		}
		int want = snprintf(v, sizeof v, "value %d from worker %d", i, other);
		if (rc || n != (size_t)want || memcmp(buf, v, n))
			return 14;
		i++;
	}
	shmmap_detach(sm);
	return 0;
}

START_TEST(two_workers_share_a_map)
{
	pid_t a = spawn(worker_share, 0), b = spawn(worker_share, 1);
	expect_exit0(a, 20000);
	expect_exit0(b, 20000);
	/* And the parent, a third process, sees all of it. */
	shmmap *sm = attach();
	shmmap_map m;
	ck_assert_int_eq(shmmap_open(sm, "shared", 0, &m), 0);
	char buf[64];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "w1-499", 6, buf, sizeof buf, &n), 0);
	ck_assert_int_eq((int)n, (int)strlen("value 499 from worker 1"));
	ck_assert_int_eq(memcmp(buf, "value 499 from worker 1", n), 0);
	shmmap_detach(sm);
}
END_TEST

/* ---- incr from several processes sums exactly ---- */

#define INCR_PROCS 4
#define INCR_EACH 5000

static int worker_incr(int me)
{
	shmmap *sm;
	if (shmmap_attach(co.sock, &sm))
		return 10;
	shmmap_map m;
	if (shmmap_open(sm, "counters", SHMMAP_CREATE, &m))
		return 11;
	for (int i = 0; i < INCR_EACH; i++) {
		if (shmmap_incr(sm, m, "hits", 4, 1, NULL))
			return 12;
		char k[16];
		snprintf(k, sizeof k, "p%d", me);
		if (shmmap_incr(sm, m, k, strlen(k), -2, NULL))
			return 13;
	}
	shmmap_detach(sm);
	return 0;
}

START_TEST(incr_from_many_processes_is_exact)
{
	pid_t pids[INCR_PROCS];
	for (int i = 0; i < INCR_PROCS; i++)
		pids[i] = spawn(worker_incr, i);
	for (int i = 0; i < INCR_PROCS; i++)
		expect_exit0(pids[i], 60000);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "counters");
	int64_t v = 0;
	ck_assert_int_eq(shmmap_incr(sm, m, "hits", 4, 0, &v), 0);
	ck_assert_int_eq(v, (int64_t)INCR_PROCS * INCR_EACH);
	char buf[32];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "p3", 2, buf, sizeof buf, &n), 0);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "-10000"); /* stored as decimal ASCII */
	shmmap_detach(sm);

	/* The segment is consistent after the concurrent run. */
	char out[4096], err[4096];
	char *argv[] = {getenv("SHMMAPCTL"), "-s", co.sock, "check", NULL};
	int st = tu_run(argv, out, sizeof out, err, sizeof err);
	ck_assert_msg(st == 0, "shmmapctl check exited %d: %s%s", st, out, err);
}
END_TEST

/* ---- a write waits for a live lock holder as long as it holds ---- */

/* Fill the stack below the caller with 32-bit words w: what a call made
 * next leaves unwritten in its frame reads as w. */
static __attribute__((noinline)) void dirty_stack(uint32_t w)
{
	volatile uint32_t junk[8192];
	for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
		junk[i] = w;
}

struct lw {
	struct seg_stripe *st;
	uint32_t waits0;
	pid_t pid;
};

static bool stripe_waited(void *arg)
{
	const struct lw *l = arg;
	return atomic_load(&l->st->lock_waits) != l->waits0;
}

static bool child_exited(void *arg)
{
	struct lw *l = arg;
	int ws;
	return waitpid(l->pid, &ws, WNOHANG) == l->pid && (l->pid = -ws - 1, true);
}

/*
 * A client's lock wait has no time limit (lock_ctx.wait_ms is the
 * coordinator's): a put, del, incr or cas waits for a live process that
 * holds the key's stripe lock as long as it holds it, whatever the stack
 * under the call held before.  (The call's context once left wait_ms
 * unset: with the stack full of small words, a write gave up at once with
 * -EBUSY; in the chaos test, now and then.)
 */
START_TEST(writes_wait_for_a_live_lock_holder)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "held");
	ck_assert_int_eq(shmmap_put(sm, m, "w", 1, "1", 1, 0, 0), 0);
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(sm, m, &v), 0);
	struct seg_stripe *st = &v->stripes[shmmap__hash(&sm->geom, "w", 1) & (v->nstripes - 1)];
	struct lock_ctx lk = {.s = &sm->seg, .g = &sm->geom, .owner = sm->slot + 1};
	for (int op = 0; op < 4; op++) {
		ck_assert_int_eq(shmmap__lock(&st->lock, &lk, NULL), 0);
		struct lw l = {st, atomic_load(&st->lock_waits), -1};
		l.pid = tu_fork();
		ck_assert_int_ge(l.pid, 0);
		if (l.pid == 0) {
			shmmap *s2;
			shmmap_map m2;
			if (shmmap_attach(co.sock, &s2) < 0 || shmmap_open(s2, "held", 0, &m2) < 0)
				_exit(20);
			int64_t n;
			dirty_stack(2); /* wait_ms 2 ms, if left unset */
			int rc = op == 0 ? shmmap_put(s2, m2, "w", 1, "22", 2, 5, 0)
				 : op == 1 ? shmmap_incr(s2, m2, "w", 1, 1, &n)
				 : op == 2 ? shmmap_cas(s2, m2, "w", 1, "23", 2, "3", 1, 0)
					   : shmmap_del(s2, m2, "w", 1);
			_exit(rc == 0 ? 0 : rc == -EBUSY ? 30 : 31);
		}
		bool waited = tu_wait(stripe_waited, &l, 10000);
		/* Held on: the child must still be waiting 300 ms on. */
		bool gave_up = waited && tu_wait(child_exited, &l, 300);
		shmmap__unlock(&st->lock);
		CK_MSG(waited, "op %d: the child did not wait for the lock", op);
		if (gave_up) {
			int ws = -l.pid - 1;
			ck_abort_msg("op %d: the child stopped waiting while the lock was held "
				     "(exit %d; 30: -EBUSY)", op, WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
		}
		int ws = tu_waitpid(l.pid, 10000);
		CK_MSG(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "op %d: exit %d", op,
		       ws != -1 && WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
	}
	char buf[8];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "w", 1, buf, sizeof buf, &n), -ENOENT);
	shmmap_detach(sm);
}
END_TEST

/* ---- more writing threads than intent records ---- */

struct many {
	shmmap *sm;
	shmmap_map m;
	int rc;
};

static void *many_put(void *arg)
{
	struct many *t = arg;
	t->rc = shmmap_put(t->sm, t->m, "s", 1, "v", 1, 0, 0);
	return NULL;
}

static _Atomic unsigned hook_calls;

static void count_hook(void)
{
	atomic_fetch_add(&hook_calls, 1);
}

/* Every thread is waiting: SEG_INTENTS for the lock, the others for a
 * record, each having called the wait hook once (as the Python binding
 * needs, to let its GIL go). */
static bool waits_reach(void *arg)
{
	const struct lw *l = arg;
	return atomic_load(&l->st->lock_waits) - l->waits0 >= SEG_INTENTS &&
	       atomic_load(&hook_calls) >= SEG_INTENTS + 4;
}

static double cpu_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
 * SEG_INTENTS + 4 threads of one attachment put the same key while a live
 * holder (this thread) keeps its stripe locked: SEG_INTENTS of them take
 * the intent records and wait for the lock, the 4 others wait for a
 * record, asleep (they spun on sched_yield once: two CPUs busy for as long
 * as the holder held on, which a stopped process may do for hours), each
 * after calling the wait hook as a lock wait does.  Once the lock is let
 * go, every put succeeds.
 */
START_TEST(writers_past_the_records_sleep)
{
	enum { N = SEG_INTENTS + 4, WINDOW_MS = 300 };
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "many");
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(sm, m, &v), 0);
	struct seg_stripe *st = &v->stripes[shmmap__hash(&sm->geom, "s", 1) & (v->nstripes - 1)];
	struct lock_ctx lk = {.s = &sm->seg, .g = &sm->geom, .owner = sm->slot + 1};
	ck_assert_int_eq(shmmap__lock(&st->lock, &lk, NULL), 0);
	struct lw l = {st, atomic_load(&st->lock_waits), -1};
	atomic_store(&hook_calls, 0);
	shmmap_set_wait_hook(count_hook);
	pthread_t th[N];
	struct many t[N];
	for (int i = 0; i < N; i++) {
		t[i] = (struct many){sm, m, 1};
		ck_assert_int_eq(pthread_create(&th[i], NULL, many_put, &t[i]), 0);
	}
	bool all_in = tu_wait(waits_reach, &l, 10000);
	/* Every record taken: what the other threads cost while they wait. */
	double c0 = cpu_ms();
	long long w0 = tu_mono_ms();
	while (tu_mono_ms() - w0 < WINDOW_MS)
		poll(NULL, 0, WINDOW_MS / 10); /* (a measuring window, not a wait for anything) */
	double used = cpu_ms() - c0;
	shmmap__unlock(&st->lock);
	fprintf(stderr, "  %d writers, %u records: %.1f ms of CPU in %d ms of waiting\n", N,
		SEG_INTENTS, used, WINDOW_MS);
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	shmmap_set_wait_hook(NULL);
	CK_MSG(all_in, "%u of %u writers reached the lock, %u of %d called the wait hook",
	       (unsigned)(atomic_load(&st->lock_waits) - l.waits0), SEG_INTENTS,
	       atomic_load(&hook_calls), N);
	CK_MSG(used < WINDOW_MS / 5.0, "%.0f ms of CPU in %d ms while the writers waited", used,
	       WINDOW_MS);
	for (int i = 0; i < N; i++)
		CK_MSG(t[i].rc == 0, "thread %d: %s", i, shmmap_strerror(t[i].rc));
	shmmap_detach(sm);
}
END_TEST

/* ---- several threads of one attachment ---- */

struct thr {
	shmmap *sm;
	shmmap_map m;
	int id, rc;
};

static void *thread_incr(void *arg)
{
	struct thr *t = arg;
	char k[16], v[16];
	for (int i = 0; i < 3000 && !t->rc; i++) {
		t->rc = shmmap_incr(t->sm, t->m, "n", 1, 1, NULL);
		int n = snprintf(k, sizeof k, "t%d-%d", t->id, i % 100);
		if (!t->rc)
			t->rc = shmmap_put(t->sm, t->m, k, (size_t)n, v, sizeof v, 0, 0);
		if (!t->rc && i % 3 == 0)
			t->rc = shmmap_del(t->sm, t->m, k, (size_t)n);
	}
	return NULL;
}

START_TEST(threads_share_one_attachment)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "threads");
	pthread_t th[4];
	struct thr t[4];
	for (int i = 0; i < 4; i++) {
		t[i] = (struct thr){.sm = sm, .m = m, .id = i};
		pthread_create(&th[i], NULL, thread_incr, &t[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(t[i].rc == 0, "thread %d: %s", i, shmmap_strerror(t[i].rc));
	}
	int64_t v;
	ck_assert_int_eq(shmmap_incr(sm, m, "n", 1, 0, &v), 0);
	ck_assert_int_eq(v, 4 * 3000);
	shmmap_detach(sm);
}
END_TEST

/* ---- a process whose agreed base range is taken ---- */

static int worker_displaced(int arg)
{
	(void)arg;
	/* Occupy the agreed base before attaching (this child was forked
	 * before the parent attached, so nothing of the segment is here). */
	void *want = (void *)(uintptr_t)0x200000000000ULL;
	void *p = mmap(want, 64 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		       -1, 0);
	if (p != want)
		return 20;
	shmmap *sm;
	if (shmmap_attach(co.sock, &sm))
		return 21;
	if (sm->seg.at_agreed_base || (void *)sm->seg.base == want)
		return 22; /* it must have mapped elsewhere */
	shmmap_map m;
	if (shmmap_open(sm, "displaced", SHMMAP_CREATE, &m))
		return 23;
	if (shmmap_put(sm, m, "from-child", 10, "world", 5, 0, 0))
		return 25;
	/* Wait (deadline 10 s) for the parent's key, written at the agreed base. */
	char buf[64];
	size_t n;
	long long end = tu_mono_ms() + 10000;
	int rc;
	while ((rc = shmmap_get(sm, m, "from-parent", 11, buf, sizeof buf, &n)) == -ENOENT &&
	       tu_mono_ms() < end)
		sched_yield();
	if (rc || n != 5 || memcmp(buf, "hello", 5))
		return 24;
	shmmap_detach(sm);
	return 0;
}

START_TEST(attach_when_base_is_taken)
{
	pid_t child = spawn(worker_displaced, 0);
	shmmap *sm = attach();
	ck_assert(sm->seg.at_agreed_base);
	shmmap_map m = open_map(sm, "displaced");
	ck_assert_int_eq(shmmap_put(sm, m, "from-parent", 11, "hello", 5, 0, 0), 0);
	expect_exit0(child, 15000);
	char buf[64];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "from-child", 10, buf, sizeof buf, &n), 0);
	ck_assert_int_eq((int)n, 5);
	ck_assert_int_eq(memcmp(buf, "world", 5), 0);
	shmmap_detach(sm);
}
END_TEST

/* ---- readers never see a torn value ---- */

/* value = 8-byte sequence number s, then (s % 900) + 16 bytes derived from s. */
static size_t make_value(uint64_t s, unsigned char *v)
{
	size_t len = 8 + 16 + (size_t)(s % 900);
	memcpy(v, &s, 8);
	for (size_t i = 8; i < len; i++)
		v[i] = (unsigned char)(s * 31 + i);
	return len;
}

static bool value_ok(const unsigned char *v, size_t len)
{
	uint64_t s;
	if (len < 8)
		return false;
	memcpy(&s, v, 8);
	if (len != 8 + 16 + (size_t)(s % 900))
		return false;
	for (size_t i = 8; i < len; i++)
		if (v[i] != (unsigned char)(s * 31 + i))
			return false;
	return true;
}

static int worker_writer(int me)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "torn", SHMMAP_CREATE, &m))
		return 10;
	unsigned char v[1024];
	for (uint64_t s = 1; s <= 20000; s++) {
		char k[8];
		int kn = snprintf(k, sizeof k, "k%d", (int)(s % 8));
		size_t n = make_value(s * 2 + (uint64_t)me, v);
		if (shmmap_put(sm, m, k, (size_t)kn, v, n, 0, 0))
			return 11;
		if (s % 7 == 0) {
			int rc = shmmap_del(sm, m, k, (size_t)kn);
			if (rc && rc != -ENOENT)
				return 12;
		}
	}
	shmmap_detach(sm);
	return 0;
}

static int worker_reader(int arg)
{
	(void)arg;
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "torn", SHMMAP_CREATE, &m))
		return 10;
	unsigned char buf[1024];
	long good = 0;
	/* On past 100000 reads until some found a value (the writers may
	 * start late), within 20 s. */
	long long end = tu_mono_ms() + 20000;
	for (int i = 0; i < 100000 || (good < 1000 && tu_mono_ms() < end); i++) {
		char k[8];
		int kn = snprintf(k, sizeof k, "k%d", i % 8);
		size_t n;
		int rc = shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &n);
		if (rc == -ENOENT)
			continue;
		if (rc)
			return 11;
		if (!value_ok(buf, n))
			return 12; /* torn */
		good++;
	}
	shmmap_detach(sm);
	return good > 0 ? 0 : 13;
}

START_TEST(readers_never_see_torn_values)
{
	pid_t w0 = spawn(worker_writer, 0), w1 = spawn(worker_writer, 1);
	pid_t r0 = spawn(worker_reader, 0), r1 = spawn(worker_reader, 1);
	expect_exit0(w0, 60000);
	expect_exit0(w1, 60000);
	expect_exit0(r0, 60000);
	expect_exit0(r1, 60000);
}
END_TEST

/* ---- a rewrite in place is never seen torn ---- */

#define IP_KEYS 4
#define IP_WRITES 30000

struct ip_share {
	size_t lmin, lmax;            /* value lengths of one size class */
	_Atomic int ready, stop;
	uint64_t off_before[IP_KEYS]; /* the keys' entries after the first round */
	uint64_t off_after[IP_KEYS];  /* ...and after the last write */
	uint64_t spare_before, spare_after;
	uint64_t last; /* the writer's last value number */
	_Atomic long reads, changes;
};
static struct ip_share *ip;

/* The offset of key's entry in map m (0: absent), found through the
 * segment's own chain as any reader would. */
static uint64_t entry_off(shmmap *sm, shmmap_map m, const char *key)
{
	const struct map_view *v;
	struct tbl t;
	size_t kl = strlen(key);
	if (shmmap__resolve(sm, m, &v) < 0 || !shmmap__tbl_load(&sm->seg, v, &t))
		return 0;
	uint64_t h = shmmap__hash(&sm->geom, key, kl);
	uint64_t off = atomic_load(&t.cur[h & (t.cur_n - 1)]);
	if (t.old_n && atomic_load(&t.old[h & (t.old_n - 1)]) != BUCKET_MOVED)
		off = atomic_load(&t.old[h & (t.old_n - 1)]); /* not moved yet */
	for (int steps = 0; off && steps < 1000; steps++) {
		struct seg_entry *e = seg_ptr(&sm->seg, off);
		if (e->klen == kl && memcmp(ent_key(e, ent_vlenf(e)), key, kl) == 0)
			return off;
		off = atomic_load(&e->next);
	}
	return 0;
}

/* Value s of a key: its length (in [lmin, lmax]) and bytes follow from s. */
static size_t ip_value(uint64_t s, unsigned char *v)
{
	size_t len = ip->lmin + (size_t)(s * 7919 % (ip->lmax - ip->lmin + 1));
	memcpy(v, &s, 8);
	for (size_t i = 8; i < len; i++)
		v[i] = (unsigned char)(s * 131 + i * 7);
	return len;
}

static bool ip_value_ok(const unsigned char *v, size_t len)
{
	unsigned char want[SEG_UNDO_MAX];
	uint64_t s;
	if (len < 8)
		return false;
	memcpy(&s, v, 8);
	return ip_value(s, want) == len && memcmp(want, v, len) == 0;
}

static int ip_write(void)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "inplace", 0, &m))
		return 10;
	unsigned char v[SEG_UNDO_MAX];
	char k[16];
	/* At least IP_WRITES writes, and on until the readers saw values
	 * change under them (the race happened), within 20 s. */
	long long end = tu_mono_ms() + 20000;
	uint64_t s;
	for (s = 1; s <= IP_WRITES || (atomic_load(&ip->changes) < 200 && tu_mono_ms() < end); s++) {
		snprintf(k, sizeof k, "ip%d", (int)(s % IP_KEYS));
		size_t n = ip_value(s, v);
		if (shmmap_put(sm, m, k, strlen(k), v, n, 0, 0))
			return 11;
		if (s == 2 * IP_KEYS) { /* every key rewritten once */
			for (int i = 0; i < IP_KEYS; i++) {
				snprintf(k, sizeof k, "ip%d", i);
				ip->off_before[i] = entry_off(sm, m, k);
			}
			ip->spare_before =
				atomic_load(&seg_slot(&sm->seg, &sm->geom, sm->slot)->intent[0].spare);
			atomic_store(&ip->ready, 1);
		}
	}
	ip->last = s - 1;
	for (int i = 0; i < IP_KEYS; i++) {
		snprintf(k, sizeof k, "ip%d", i);
		ip->off_after[i] = entry_off(sm, m, k);
	}
	ip->spare_after = atomic_load(&seg_slot(&sm->seg, &sm->geom, sm->slot)->intent[0].spare);
	shmmap_detach(sm);
	return 0;
}

static int ip_writer(int arg)
{
	(void)arg;
	int rc = ip_write();
	atomic_store(&ip->stop, 1); /* the readers stop too, whatever happened */
	return rc;
}

static int ip_reader(int arg)
{
	(void)arg;
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "inplace", 0, &m))
		return 10;
	unsigned char buf[1024];
	uint64_t last[IP_KEYS] = {0};
	while (!atomic_load(&ip->ready) && !atomic_load(&ip->stop))
		sched_yield();
	while (!atomic_load(&ip->stop)) {
		for (int i = 0; i < IP_KEYS; i++) {
			char k[16];
			snprintf(k, sizeof k, "ip%d", i);
			size_t n;
			uint64_t s;
			if (shmmap_get(sm, m, k, strlen(k), buf, sizeof buf, &n))
				return 11;
			if (!ip_value_ok(buf, n))
				return 12; /* torn */
			memcpy(&s, buf, 8);
			if (s < last[i])
				return 13; /* went back */
			if (s != last[i])
				atomic_fetch_add(&ip->changes, 1);
			last[i] = s;
			atomic_fetch_add(&ip->reads, 1);
		}
	}
	shmmap_detach(sm);
	return 0;
}

/* A writer rewrites four keys (one chain's worth) with values whose length
 * changes within one size class: every write after a key's first is in
 * place (the entries stay where they are), and two
 * readers that never stop reading see every value whole, never an older
 * one after a newer. */
START_TEST(rewrites_in_place_are_never_torn)
{
	shmmap *sm = attach();
	shmmap_map m;
	ck_assert_int_eq(shmmap_open(sm, "inplace", SHMMAP_CREATE, &m), 0);
	ip = mmap(NULL, sizeof *ip, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(ip, MAP_FAILED);
	memset(ip, 0, sizeof *ip);
	/* The lengths whose entries (3-byte key) share the class of 200 B. */
	int c = shmmap__class_of(&sm->seg, &sm->geom, ent_size(3, 200, false));
	ck_assert_int_ge(c, 0);
	ip->lmin = ip->lmax = 200;
	while (ip->lmin > 8 &&
	       shmmap__class_of(&sm->seg, &sm->geom, ent_size(3, ip->lmin - 1, false)) == c)
		ip->lmin--;
	while (ip->lmax < SEG_UNDO_MAX &&
	       shmmap__class_of(&sm->seg, &sm->geom, ent_size(3, ip->lmax + 1, false)) == c)
		ip->lmax++;
	ck_assert_uint_gt(ip->lmax - ip->lmin, 8);
	pid_t w = spawn(ip_writer, 0), r0 = spawn(ip_reader, 0), r1 = spawn(ip_reader, 1);
	expect_exit0(w, 60000);
	expect_exit0(r0, 60000);
	expect_exit0(r1, 60000);
	for (int i = 0; i < IP_KEYS; i++) {
		ck_assert_uint_ne(ip->off_before[i], 0);
		ck_assert_msg(ip->off_after[i] == ip->off_before[i],
			      "key %d moved (%#" PRIx64 " -> %#" PRIx64 "): not rewritten in place", i,
			      ip->off_before[i], ip->off_after[i]);
	}
	/* The race happened: the readers saw the values change under them. */
	ck_assert_int_ge(atomic_load(&ip->changes), 200);
	unsigned char buf[1024], want[SEG_UNDO_MAX];
	for (int i = 0; i < IP_KEYS; i++) {
		char k[16];
		size_t n;
		snprintf(k, sizeof k, "ip%d", i);
		ck_assert_int_eq(shmmap_get(sm, m, k, strlen(k), buf, sizeof buf, &n), 0);
		uint64_t s = ip->last - (ip->last - (uint64_t)i) % IP_KEYS;
		ck_assert_uint_eq(n, ip_value(s, want));
		ck_assert_int_eq(memcmp(buf, want, n), 0);
	}
	munmap(ip, sizeof *ip);
	shmmap_detach(sm);
}
END_TEST

/* The flag word of key's entry (0 if not found). */
static uint32_t entry_vlenf(shmmap *sm, shmmap_map m, const char *key)
{
	uint64_t off = entry_off(sm, m, key);
	return off ? ent_vlenf(seg_ptr(&sm->seg, off)) : 0;
}

struct grown {
	shmmap *sm;
	shmmap_map m;
	uint32_t n;
};

/* Has the map a bucket for each of n entries, and no resize under way? */
static bool grown_for(void *arg)
{
	const struct grown *gr = arg;
	const struct map_view *v;
	struct tbl t;
	return shmmap__resolve(gr->sm, gr->m, &v) == 0 && shmmap__tbl_load(&gr->sm->seg, v, &t) &&
	       !t.old_n && t.cur_n >= gr->n;
}

static uint64_t spare_of(shmmap *sm)
{
	return atomic_load(&seg_slot(&sm->seg, &sm->geom, sm->slot)->intent[0].spare);
}

static void put_str(shmmap *sm, shmmap_map m, const char *k, size_t n, char c, uint32_t ttl)
{
	char v[2048];
	ck_assert_uint_le(n, sizeof v);
	memset(v, c, n);
	CK_EQ(shmmap_put(sm, m, k, strlen(k), v, n, ttl, 0), 0);
}

static void expect_value(shmmap *sm, shmmap_map m, const char *k, size_t n, char c)
{
	char buf[2048], want[2048];
	size_t got;
	CK_EQ(shmmap_get(sm, m, k, strlen(k), buf, sizeof buf, &got), 0);
	CK_EQ(got, n);
	memset(want, c, n);
	CK_EQ(memcmp(buf, want, n), 0);
}

/*
 * put's fast path (putfast.h) rewrites a present key in place when it may,
 * and leaves every other write to the general path: the entry stays where
 * it is exactly when the new value (no ttl, no flags) is of its entry's
 * size class, the stripe's byte count follows the length, a key with an
 * expiry loses it, maps with a value_max or a default ttl keep their rules.
 */
START_TEST(put_rewrites_in_place_when_it_may)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "fast");
	/* Many keys, so that chains hold several entries: each is found. */
	enum { N = 3000 };
	char k[32];
	uint64_t *offs = calloc(N, sizeof *offs);
	ck_assert_ptr_nonnull(offs);
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "fk%d", i);
		put_str(sm, m, k, 64, 'a', 0);
		offs[i] = entry_off(sm, m, k);
		ck_assert_uint_ne(offs[i], 0);
	}
	/* The map grown for them, and done (the fast path leaves writes
	 * during a resize to the general one). */
	struct grown gr = {sm, m, N};
	CK_MSG(tu_wait(grown_for, &gr, 10000), "the map did not grow for %d keys", N);
	uint64_t spare = spare_of(sm);
	struct shmmap_stats st0;
	CK_EQ(shmmap_stats(sm, m, &st0), 0);
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "fk%d", i);
		put_str(sm, m, k, 64, 'b', 0);
	}
	struct shmmap_stats st1;
	CK_EQ(shmmap_stats(sm, m, &st1), 0);
	CK_EQ(st1.puts - st0.puts, N);
	CK_EQ(st1.bytes, st0.bytes);
	CK_EQ(st1.entries, N);
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "fk%d", i);
		CK_MSG(entry_off(sm, m, k) == offs[i], "%s moved: not rewritten in place", k);
		expect_value(sm, m, k, 64, 'b');
	}
	/* No block taken: one would have left the block it replaced spare. */
	CK_EQ(spare_of(sm), spare);
	/* Another length of the same size class: in place, bytes follow. */
	int c64 = shmmap__class_of(&sm->seg, &sm->geom, ent_size(3, 64, false));
	size_t shorter = 63;
	CK_EQ(shmmap__class_of(&sm->seg, &sm->geom, ent_size(3, shorter, false)), c64);
	put_str(sm, m, "fk0", shorter, 'c', 0);
	CK_EQ(entry_off(sm, m, "fk0"), offs[0]);
	expect_value(sm, m, "fk0", shorter, 'c');
	CK_EQ(shmmap_stats(sm, m, &st1), 0);
	CK_EQ(st1.bytes, st0.bytes - (64 - shorter));
	/* Another size class: a new block. */
	put_str(sm, m, "fk1", 1500, 'd', 0);
	ck_assert_uint_ne(entry_off(sm, m, "fk1"), offs[1]);
	expect_value(sm, m, "fk1", 1500, 'd');
	/* A ttl: the general path (an entry with an expiry slot); then a
	 * value without one drops it, though it has the same length. */
	put_str(sm, m, "fk2", 64, 'e', 3600);
	uint64_t with_ttl = entry_off(sm, m, "fk2");
	ck_assert(ent_has_expiry(entry_vlenf(sm, m, "fk2")));
	put_str(sm, m, "fk2", 64, 'f', 0);
	ck_assert(!ent_has_expiry(entry_vlenf(sm, m, "fk2")));
	ck_assert_uint_ne(entry_off(sm, m, "fk2"), with_ttl);
	expect_value(sm, m, "fk2", 64, 'f');
	/* A map with a default ttl: every put gets it. */
	shmmap_map d;
	struct shmmap_map_opts o = {.size = sizeof o, .default_ttl = 3600};
	CK_EQ(shmmap_open_opts(sm, "fast-ttl", SHMMAP_CREATE, &o, &d), 0);
	put_str(sm, d, "x", 64, 'g', 0);
	put_str(sm, d, "x", 64, 'h', 0);
	ck_assert(ent_has_expiry(entry_vlenf(sm, d, "x")));
	expect_value(sm, d, "x", 64, 'h');
	/* NX on a present key still fails. */
	CK_EQ(shmmap_put(sm, m, "fk3", 3, "zz", 2, 0, SHMMAP_NX), -EEXIST);
	expect_value(sm, m, "fk3", 64, 'b');
	/* A value over the map's value_max is refused, though its entry's
	 * block would hold it (the fast path once wrote it in place, and
	 * every key of that chain then read as corrupt). */
	shmmap_map small;
	struct shmmap_map_opts so = {.size = sizeof so, .value_max = 100};
	CK_EQ(shmmap_open_opts(sm, "fast-small", SHMMAP_CREATE, &so, &small), 0);
	put_str(sm, small, "kk", 95, 'i', 0);
	int cls = shmmap__class_of(&sm->seg, &sm->geom, ent_size(2, 95, false));
	CK_EQ(shmmap__class_of(&sm->seg, &sm->geom, ent_size(2, 101, false)), cls);
	char big[101];
	memset(big, 'j', sizeof big);
	CK_EQ(shmmap_put(sm, small, "kk", 2, big, sizeof big, 0, 0), -E2BIG);
	expect_value(sm, small, "kk", 95, 'i');
	free(offs);
	shmmap_detach(sm);
}
END_TEST

/* ---- no socket on the data path ---- */

START_TEST(data_path_works_while_coordinator_is_stopped)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "direct");
	/* Freeze the coordinator: any socket round trip would now time out. */
	ck_assert_int_eq(kill(co.pid, SIGSTOP), 0);
	char k[16], buf[16];
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(k, sizeof k, "%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)n, k, (size_t)n, 0, 0), 0);
		size_t vl;
		ck_assert_int_eq(shmmap_get(sm, m, k, (size_t)n, buf, sizeof buf, &vl), 0);
		ck_assert_int_eq((int)vl, n);
		if (i % 2)
			ck_assert_int_eq(shmmap_del(sm, m, k, (size_t)n), 0);
	}
	int64_t v;
	ck_assert_int_eq(shmmap_incr(sm, m, "c", 1, 5, &v), 0);
	kill(co.pid, SIGCONT);
	shmmap_detach(sm);
}
END_TEST

static bool coordinator_stopped(void *arg)
{
	int st;
	(void)arg;
	return waitpid(co.pid, &st, WNOHANG | WUNTRACED) == co.pid && WIFSTOPPED(st);
}

/* A coordinator stopped (SIGSTOP) takes connections but answers none: a
 * request, and an attach, time out with a detail that says so (it was
 * empty).  The replies wait 1 s here, not 10. */
START_TEST(stopped_coordinator_times_out_with_a_reason)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "stopped");
	CK_EQ(shmmap__reply_timeout(sm, 1), 0);
	shmmap__reply_timeout_default(1);
	ck_assert_int_eq(kill(co.pid, SIGSTOP), 0);
	/* (kill returns before every thread of it has stopped) */
	ck_assert_msg(tu_wait(coordinator_stopped, NULL, 10000), "the coordinator did not stop");
	int rc = shmmap_open(sm, "stopped", 0, &m);
	char open_why[320];
	snprintf(open_why, sizeof open_why, "%s", shmmap_errdetail());
	shmmap *sm2 = NULL;
	int rc2 = shmmap_attach(co.sock, &sm2);
	char attach_why[320];
	snprintf(attach_why, sizeof attach_why, "%s", shmmap_errdetail());
	kill(co.pid, SIGCONT);
	shmmap__reply_timeout_default(10);
	CK_EQ(rc, -ETIMEDOUT);
	CK_MSG(strstr(open_why, co.sock) && strstr(open_why, "did not answer within 1 s") &&
		       strstr(open_why, "stopped"),
	       "open's detail: '%s'", open_why);
	CK_EQ(rc2, -ETIMEDOUT);
	ck_assert_ptr_null(sm2);
	CK_MSG(strstr(attach_why, co.sock) && strstr(attach_why, "did not answer within 1 s"),
	       "attach's detail: '%s'", attach_why);
	/* Running again, it answers (the late reply is skipped). */
	CK_EQ(shmmap_open(sm, "stopped", 0, &m), 0);
	CK_EQ(shmmap_errdetail()[0], '\0');
	shmmap_detach(sm);
}
END_TEST

/* After a clean stop (SIGTERM: the socket file is removed) a request says
 * there is no socket, as a failed attach does: it said "no such key or
 * map" (the library's text for ENOENT). */
START_TEST(request_after_a_clean_stop_says_no_socket)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "gone");
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	int rcs[3] = {shmmap_open(sm, "gone", 0, &m), 0, 0};
	char why[3][320];
	snprintf(why[0], sizeof why[0], "%s", shmmap_errdetail());
	rcs[1] = shmmap_flush(sm, m);
	snprintf(why[1], sizeof why[1], "%s", shmmap_errdetail());
	rcs[2] = shmmap_drop(sm, "gone");
	snprintf(why[2], sizeof why[2], "%s", shmmap_errdetail());
	for (int i = 0; i < 3; i++) {
		CK_MSG(rcs[i] == -ECONNRESET || rcs[i] == -ECONNREFUSED, "call %d: %s", i,
		       shmmap_strerror(rcs[i]));
		CK_MSG(strstr(why[i], "connection to the coordinator was lost") &&
			       strstr(why[i], co.sock) && strstr(why[i], "no socket there") &&
			       !strstr(why[i], "no such key"),
		       "call %d's detail: '%s'", i, why[i]);
	}
	/* A coordinator back on the socket: the same attachment goes on. */
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	CK_EQ(shmmap_open(sm, "gone", 0, &m), 0);
	shmmap_detach(sm);
}
END_TEST

/* ---- semantics ---- */

START_TEST(put_flags_and_get_errors)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "sem");
	char buf[8];
	size_t n = 0;
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "v1", 2, 0, SHMMAP_XX), -ENOENT);
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &n), -ENOENT);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "v1", 2, 0, SHMMAP_NX), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "v2", 2, 0, SHMMAP_NX), -EEXIST);
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &n), 0);
	ck_assert_int_eq(memcmp(buf, "v1", 2), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "longer value", 12, 0, SHMMAP_XX), 0);
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &n), -ENOBUFS);
	ck_assert_int_eq((int)n, 12);
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, NULL, 0, &n), -ENOBUFS);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "x", 1, 0, SHMMAP_NX | SHMMAP_XX), -EINVAL);
	/* Keys and values are bytes: NULs included. */
	ck_assert_int_eq(shmmap_put(sm, m, "a\0b", 3, "\0\0\1", 3, 0, 0), 0);
	ck_assert_int_eq(shmmap_get(sm, m, "a\0c", 3, buf, sizeof buf, &n), -ENOENT);
	ck_assert_int_eq(shmmap_get(sm, m, "a\0b", 3, buf, sizeof buf, &n), 0);
	ck_assert_int_eq((int)n, 3);
	ck_assert_int_eq(memcmp(buf, "\0\0\1", 3), 0);
	/* Empty value. */
	ck_assert_int_eq(shmmap_put(sm, m, "e", 1, NULL, 0, 0, 0), 0);
	ck_assert_int_eq(shmmap_get(sm, m, "e", 1, NULL, 0, &n), 0);
	ck_assert_int_eq((int)n, 0);
	ck_assert_int_eq(shmmap_del(sm, m, "e", 1), 0);
	ck_assert_int_eq(shmmap_del(sm, m, "e", 1), -ENOENT);
	/* incr */
	int64_t v;
	ck_assert_int_eq(shmmap_incr(sm, m, "k", 1, 1, &v), -EINVAL); /* not a number */
	ck_assert_int_eq(shmmap_put(sm, m, "big", 3, "9223372036854775806", 19, 0, 0), 0);
	ck_assert_int_eq(shmmap_incr(sm, m, "big", 3, 1, &v), 0);
	ck_assert_int_eq(v, INT64_MAX);
	ck_assert_int_eq(shmmap_incr(sm, m, "big", 3, 1, &v), -ERANGE);
	ck_assert_int_eq(shmmap_get(sm, m, "big", 3, buf, 8, &n), -ENOBUFS);
	ck_assert_int_eq((int)n, 19); /* unchanged by the failed incr */
	ck_assert_int_eq(shmmap_incr(sm, m, "neg", 3, INT64_MIN, &v), 0);
	ck_assert_int_eq(shmmap_incr(sm, m, "neg", 3, -1, &v), -ERANGE);
	/* Bad arguments. */
	ck_assert_int_eq(shmmap_put(sm, m, "", 0, "v", 1, 0, 0), -EINVAL);
	ck_assert_int_eq(shmmap_put(sm, m, NULL, 1, "v", 1, 0, 0), -EINVAL);
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, NULL, 5, &n), -EINVAL);
	ck_assert_int_eq(shmmap_open(sm, "", SHMMAP_CREATE, &m), -EINVAL);
	ck_assert_int_eq(shmmap_open(sm, "nope", 0, &(shmmap_map){0}), -ENOENT);
	char longname[SHMMAP_NAME_MAX + 2];
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	ck_assert_int_eq(shmmap_open(sm, longname, SHMMAP_CREATE, &(shmmap_map){0}), -EINVAL);
	shmmap_detach(sm);
}
END_TEST

START_TEST(handles_are_checked)
{
	shmmap *a = attach(), *b = attach();
	shmmap_map ma = open_map(a, "h"), mb = open_map(b, "h");
	ck_assert_int_eq(shmmap_put(a, ma, "k", 1, "v", 1, 0, 0), 0);
	char buf[4];
	size_t n;
	/* A handle of attachment a used with b: refused, not misused. */
	ck_assert_int_eq(shmmap_get(b, ma, "k", 1, buf, sizeof buf, &n), -EBADF);
	ck_assert_int_eq(shmmap_get(b, mb, "k", 1, buf, sizeof buf, &n), 0);
	ck_assert_int_eq(shmmap_get(a, (shmmap_map){0}, "k", 1, buf, sizeof buf, &n), -EBADF);
	/* An older generation of the same map index: stale. */
	ck_assert_int_eq(shmmap_get(a, (shmmap_map){ma.id - (1ull << 16)}, "k", 1, buf, 4, &n),
			 -ESTALE);
	/* A newer one was never handed out: not ours. */
	ck_assert_int_eq(shmmap_get(a, (shmmap_map){ma.id + (1ull << 16)}, "k", 1, buf, 4, &n),
			 -EBADF);
	ck_assert_int_eq(shmmap_get(NULL, ma, "k", 1, buf, sizeof buf, &n), -EINVAL);
	shmmap_detach(a);
	shmmap_detach(b);
	shmmap_detach(NULL);
}
END_TEST

START_TEST(limits_give_e2big_and_enospc)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "small");
	/* The directory is full at max_maps = 2. */
	shmmap_map m2;
	ck_assert_int_eq(shmmap_open(sm, "second", SHMMAP_CREATE, &m2), 0);
	ck_assert_int_eq(shmmap_open(sm, "third", SHMMAP_CREATE, &m2), -ENOSPC);
	static char big[64 * 1024 + 1];
	char key[40];
	memset(key, 'k', sizeof key);
	ck_assert_int_eq(shmmap_put(sm, m, key, 33, "v", 1, 0, 0), -E2BIG);
	ck_assert_int_eq(shmmap_put(sm, m, key, 32, "v", 1, 0, 0), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, big, sizeof big, 0, 0), -E2BIG);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, big, sizeof big - 1, 0, 0), 0);
	/* Fill the segment with 1 KiB values until -ENOSPC; nothing crashes and
	 * nothing written before is lost. */
	int i, rc = 0;
	char k[16], v[1024];
	for (i = 0; i < 100000; i++) {
		int kn = snprintf(k, sizeof k, "f%d", i);
		memset(v, 'a' + i % 26, sizeof v);
		rc = shmmap_put(sm, m, k, (size_t)kn, v, sizeof v, 0, 0);
		if (rc)
			break;
	}
	ck_assert_int_eq(rc, -ENOSPC);
	ck_assert_int_gt(i, 100);
	for (int j = 0; j < i; j++) {
		int kn = snprintf(k, sizeof k, "f%d", j);
		size_t n;
		ck_assert_int_eq(shmmap_get(sm, m, k, (size_t)kn, v, sizeof v, &n), 0);
		ck_assert_int_eq(v[0], 'a' + j % 26);
	}
	/* Deleting makes room again. */
	ck_assert_int_eq(shmmap_del(sm, m, "f0", 2), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "again", 5, v, sizeof v, 0, 0), 0);
	shmmap_detach(sm);
}
END_TEST

struct ttl_arg {
	shmmap *sm;
	shmmap_map m;
};

static bool ttl_gone(void *p)
{
	struct ttl_arg *a = p;
	char buf[8];
	size_t n;
	return shmmap_get(a->sm, a->m, "t", 1, buf, sizeof buf, &n) == -ENOENT;
}

START_TEST(ttl_expires)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "ttl");
	ck_assert_int_eq(shmmap_put(sm, m, "t", 1, "v", 1, 1, 0), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "forever", 7, "v", 1, 0, 0), 0);
	char buf[8];
	size_t n;
	long long t0 = tu_mono_ms();
	ck_assert_int_eq(shmmap_get(sm, m, "t", 1, buf, sizeof buf, &n), 0);
	struct ttl_arg a = {sm, m};
	ck_assert(tu_wait(ttl_gone, &a, 3000));
	ck_assert_int_ge(tu_mono_ms() - t0, 900); /* not before its time */
	ck_assert_int_eq(shmmap_get(sm, m, "forever", 7, buf, sizeof buf, &n), 0);
	/* An expired key counts as absent for NX and XX. */
	ck_assert_int_eq(shmmap_put(sm, m, "t", 1, "w", 1, 0, SHMMAP_XX), -ENOENT);
	ck_assert_int_eq(shmmap_put(sm, m, "t", 1, "w", 1, 0, SHMMAP_NX), 0);
	shmmap_detach(sm);
}
END_TEST

/* shmmap_incr_ttl: the TTL goes to a key the call creates, and only to
 * one: a rate limiter's window counter starts at its first increment and
 * expires with its window; a present key keeps its own expiry (none, or
 * an earlier one). */
static int64_t incr_ttl(shmmap *sm, shmmap_map m, const char *k, uint32_t ttl)
{
	int64_t v = 0;
	CK_EQ(shmmap_incr_ttl(sm, m, k, strlen(k), 1, ttl, &v), 0);
	return v;
}

START_TEST(incr_ttl_starts_a_window)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "rate");
	ck_assert_int_eq(shmmap_put(sm, m, "forever", 7, "5", 1, 0, 0), 0);
	long long t0 = tu_mono_ms();
	ck_assert_int_eq(incr_ttl(sm, m, "t", 1), 1);
	ck_assert_int_eq(incr_ttl(sm, m, "t", 3600), 2); /* keeps its 1 s */
	ck_assert_int_eq(incr_ttl(sm, m, "forever", 1), 6); /* keeps no expiry */
	struct ttl_arg a = {sm, m};
	ck_assert(tu_wait(ttl_gone, &a, 3000));
	ck_assert_int_ge(tu_mono_ms() - t0, 900); /* not before its time */
	/* The next window starts over. */
	ck_assert_int_eq(incr_ttl(sm, m, "t", 1), 1);
	ck_assert(tu_wait(ttl_gone, &a, 3000));
	char buf[8];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "forever", 7, buf, sizeof buf, &n), 0);
	ck_assert(n == 1 && buf[0] == '6');
	/* ttl 0 is shmmap_incr: no expiry in a map without a default TTL. */
	ck_assert_int_eq(incr_ttl(sm, m, "z", 0), 1);
	ck_assert_int_eq(shmmap_incr_ttl(NULL, m, "z", 1, 1, 1, NULL), -EINVAL);
	/* Not a number: said so (it read only "Invalid argument"). */
	ck_assert_int_eq(shmmap_put(sm, m, "word", 4, "ten", 3, 0, 0), 0);
	ck_assert_int_eq(shmmap_incr(sm, m, "word", 4, 1, NULL), -EINVAL);
	ck_assert_msg(strstr(shmmap_errdetail(), "not a decimal integer"), "detail: %s",
		      shmmap_errdetail());
	shmmap_detach(sm);
}
END_TEST

START_TEST(large_values_round_trip)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "large");
	size_t sz = 300 * 1024;
	unsigned char *v = malloc(sz), *buf = malloc(sz);
	for (size_t i = 0; i < sz; i++)
		v[i] = (unsigned char)(i * 7);
	for (int r = 0; r < 20; r++) {
		ck_assert_int_eq(shmmap_put(sm, m, "big", 3, v, sz - (size_t)r * 1000, 0, 0), 0);
		size_t n;
		ck_assert_int_eq(shmmap_get(sm, m, "big", 3, buf, sz, &n), 0);
		ck_assert_uint_eq(n, sz - (size_t)r * 1000);
		ck_assert_int_eq(memcmp(buf, v, n), 0);
	}
	free(v);
	free(buf);
	shmmap_detach(sm);
}
END_TEST

START_TEST(attach_errors)
{
	shmmap *sm = NULL;
	/* No coordinator there: not "no such key", and the detail names the path. */
	ck_assert_int_eq(shmmap_attach("/nonexistent/dir/sock", &sm), -ECONNREFUSED);
	ck_assert_ptr_null(sm);
	ck_assert_ptr_nonnull(strstr(shmmap_errdetail(), "/nonexistent/dir/sock"));
	ck_assert_ptr_nonnull(strstr(shmmap_errdetail(), "no socket"));
	ck_assert_str_ne(shmmap_strerror(-ECONNREFUSED), shmmap_strerror(-ENOENT));
	/* A socket file that nobody listens on any more. */
	char dead[100];
	snprintf(dead, sizeof dead, "%.80s/dead.sock", co.dir);
	int ls = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", dead);
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
	close(ls);
	ck_assert_int_eq(shmmap_attach(dead, &sm), -ECONNREFUSED);
	ck_assert_ptr_nonnull(strstr(shmmap_errdetail(), "nothing listens"));
	unlink(dead);
	ck_assert_int_eq(shmmap_attach(co.sock, NULL), -EINVAL);
	char longp[200];
	memset(longp, 'x', sizeof longp - 1);
	longp[sizeof longp - 1] = '\0';
	ck_assert_int_eq(shmmap_attach(longp, &sm), -EINVAL);
	/* $SHMMAP_SOCKET is used when no path is given. */
	setenv("SHMMAP_SOCKET", co.sock, 1);
	ck_assert_int_eq(shmmap_attach(NULL, &sm), 0);
	unsetenv("SHMMAP_SOCKET");
	shmmap_detach(sm);
	/* Every error code has a description. */
	int codes[] = {0, -ENOENT, -EEXIST, -E2BIG, -ENOSPC, -ENOBUFS, -ESTALE, -EBADF,
		       -ERANGE, -SHMMAP_EBADSEG, -SHMMAP_EVERSION, -SHMMAP_ECORRUPT, -99999};
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
		ck_assert_ptr_nonnull(shmmap_strerror(codes[i]));
	ck_assert_str_ne(shmmap_strerror(-SHMMAP_EBADSEG), shmmap_strerror(-SHMMAP_ECORRUPT));
}
END_TEST

/* ---- a walk that a drop (or a flush) interrupts ---- */

#define WALK_KEYS 5000

/* Shared between the walking parent and the child that drops or flushes
 * the map once the walk is under way. */
struct walk_share {
	_Atomic int walking; /* the walk's callback ran once */
	_Atomic int done;    /* the child's call returned: 1 ok, 2 failed */
};
static struct walk_share *ws;

static bool walk_started(void *arg)
{
	(void)arg;
	return atomic_load(&ws->walking) != 0;
}

static bool child_done(void *arg)
{
	(void)arg;
	return atomic_load(&ws->done) != 0;
}

/* In the child: once the parent walks, drop (flush 0) or flush (1) the map. */
static int worker_interrupt(int flush)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "walked", 0, &m))
		return 10;
	if (!tu_wait(walk_started, NULL, 10000))
		return 11;
	int rc = flush ? shmmap_flush(sm, m) : shmmap_drop(sm, "walked");
	atomic_store(&ws->done, rc == 0 ? 1 : 2);
	shmmap_detach(sm);
	return rc == 0 ? 0 : 12;
}

struct walk_count {
	int seen;
	bool waited; /* the child's call was over before the walk went on */
};

/* The first call waits until the child's drop or flush returned: the rest
 * of the walk runs after it. */
static int walk_each(const void *key, size_t klen, const void *val, size_t vlen,
		     uint64_t expire_ms, void *arg)
{
	struct walk_count *wc = arg;
	(void)key, (void)klen, (void)val, (void)vlen, (void)expire_ms;
	if (wc->seen++ == 0) {
		atomic_store(&ws->walking, 1);
		wc->waited = tu_wait(child_done, NULL, 10000) && atomic_load(&ws->done) == 1;
	}
	return 0;
}

/* Walk a map of WALK_KEYS keys while a child drops (flush 0) or flushes
 * it after the first entry; the walk's result. */
static int walk_interrupted(int flush, struct walk_count *wc)
{
	ws = mmap(NULL, sizeof *ws, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(ws != MAP_FAILED);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "walked");
	char k[32];
	for (int i = 0; i < WALK_KEYS; i++) {
		int kn = snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)kn, "v", 1, 0, 0), 0);
	}
	pid_t pid = spawn(worker_interrupt, flush);
	*wc = (struct walk_count){0};
	int rc = shmmap_foreach(sm, m, walk_each, wc);
	expect_exit0(pid, 10000);
	CK_MSG(wc->waited, "the child did not %s the map during the walk",
	       flush ? "flush" : "drop");
	shmmap_detach(sm);
	munmap(ws, sizeof *ws);
	return rc;
}

/* A map dropped during shmmap_foreach: the walk stops with -ESTALE, never
 * 0 after a part of the map (a backup would take it for the whole). */
START_TEST(foreach_on_a_map_dropped_meanwhile_is_stale)
{
	struct walk_count wc;
	CK_EQ(walk_interrupted(0, &wc), -ESTALE);
	CK_MSG(wc.seen < WALK_KEYS, "saw all %d keys of a dropped map", wc.seen);
}
END_TEST

/* A flush during the walk deletes keys, which the walk may miss (as any
 * delete): not an error. */
START_TEST(foreach_on_a_map_flushed_meanwhile_succeeds)
{
	struct walk_count wc;
	CK_EQ(walk_interrupted(1, &wc), 0);
	CK_MSG(wc.seen >= 1 && wc.seen < WALK_KEYS, "saw %d keys", wc.seen);
}
END_TEST

/* A client killed with SIGKILL frees its slot: the coordinator sees EOF. */
static int worker_attach_and_hang(int fd)
{
	shmmap *sm;
	if (shmmap_attach(co.sock, &sm))
		return 10;
	char c = 1;
	if (write(fd, &c, 1) != 1)
		return 11;
	pause();
	return 0;
}

static int pipefd[2];
static bool slot_free_again(void *p)
{
	shmmap *sm = p;
	for (uint32_t i = 0; i < sm->geom.max_clients; i++)
		if (i != sm->slot &&
		    atomic_load(&seg_slot(&sm->seg, &sm->geom, i)->state) != SLOT_FREE)
			return false;
	return true;
}

START_TEST(killed_client_slot_is_reclaimed)
{
	shmmap *sm = attach();
	ck_assert_int_eq(pipe(pipefd), 0);
	pid_t pid = spawn(worker_attach_and_hang, pipefd[1]);
	char c;
	ck_assert_int_eq(read(pipefd[0], &c, 1), 1);
	ck_assert(!slot_free_again(sm));
	kill(pid, SIGKILL);
	tu_waitpid(pid, 5000);
	ck_assert(tu_wait(slot_free_again, sm, 5000));
	close(pipefd[0]);
	close(pipefd[1]);
	shmmap_detach(sm);
}
END_TEST

/* ---- a clean detach is not a recovery ---- */

static uint64_t recoveries(shmmap *sm)
{
	return atomic_load(&seg_hdr(&sm->seg)->recoveries);
}

/* Writes that leave blocks in the slot's intent records (a deleted key's
 * block and a rewritten key's old one are kept as the record's spare),
 * then, with fd >= 0, say so on fd and wait to be killed; else detach. */
static int worker_write_then(int fd)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "bye", SHMMAP_CREATE, &m))
		return 10;
	if (shmmap_put(sm, m, "a", 1, "one", 3, 0, 0) || shmmap_del(sm, m, "a", 1) ||
	    shmmap_put(sm, m, "b", 1, "two", 3, 0, 0) ||
	    shmmap_put(sm, m, "b", 1, "three, with a TTL", 17, 60, 0))
		return 11;
	if (fd >= 0) {
		char c = 1;
		if (write(fd, &c, 1) != 1)
			return 12;
		pause();
	}
	shmmap_detach(sm);
	return 0;
}

/* A client that detaches is not counted (nor logged at notice level) as a
 * dead client recovered; one killed with SIGKILL still is. */
START_TEST(clean_detach_is_not_a_recovery)
{
	shmmap *sm = attach();
	uint64_t r0 = recoveries(sm);
	for (int i = 0; i < 3; i++) {
		expect_exit0(spawn(worker_write_then, -1), 10000);
		CK_MSG(tu_wait(slot_free_again, sm, 5000), "the detached client's slot stays taken");
	}
	CK_EQ(recoveries(sm), r0);
	char *log = tu_slurp(co.log, NULL);
	CK_MSG(!strstr(log, "in flight"), "a clean detach logged as a recovery:\n%s", log);
	/* The library gave its blocks back itself, before BYE. */
	CK_MSG(!strstr(log, "detached; freed"), "a detach left blocks behind:\n%s", log);
	free(log);

	ck_assert_int_eq(pipe(pipefd), 0);
	pid_t pid = spawn(worker_write_then, pipefd[1]);
	char c;
	ck_assert_int_eq(read(pipefd[0], &c, 1), 1);
	kill(pid, SIGKILL);
	tu_waitpid(pid, 5000);
	CK_MSG(tu_wait(slot_free_again, sm, 5000), "the killed client's slot stays taken");
	CK_EQ(recoveries(sm), r0 + 1);
	log = tu_slurp(co.log, NULL);
	CK_MSG(strstr(log, "in flight"), "the killed client's recovery not logged:\n%s", log);
	free(log);
	close(pipefd[0]);
	close(pipefd[1]);
	shmmap_detach(sm);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("multiprocess");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, two_workers_share_a_map);
	tcase_add_test(tc, incr_from_many_processes_is_exact);
	tcase_add_test(tc, threads_share_one_attachment);
	tcase_add_test(tc, writes_wait_for_a_live_lock_holder);
	tcase_add_test(tc, writers_past_the_records_sleep);
	tcase_add_test(tc, attach_when_base_is_taken);
	tcase_add_test(tc, readers_never_see_torn_values);
	tcase_add_test(tc, rewrites_in_place_are_never_torn);
	tcase_add_test(tc, put_rewrites_in_place_when_it_may);
	tcase_add_test(tc, data_path_works_while_coordinator_is_stopped);
	tcase_add_test(tc, stopped_coordinator_times_out_with_a_reason);
	tcase_add_test(tc, request_after_a_clean_stop_says_no_socket);
	tcase_add_test(tc, put_flags_and_get_errors);
	tcase_add_test(tc, handles_are_checked);
	tcase_add_test(tc, ttl_expires);
	tcase_add_test(tc, incr_ttl_starts_a_window);
	tcase_add_test(tc, large_values_round_trip);
	tcase_add_test(tc, attach_errors);
	tcase_add_test(tc, killed_client_slot_is_reclaimed);
	tcase_add_test(tc, foreach_on_a_map_dropped_meanwhile_is_stale);
	tcase_add_test(tc, foreach_on_a_map_flushed_meanwhile_succeeds);
	tcase_add_test(tc, clean_detach_is_not_a_recovery);
	suite_add_tcase(s, tc);
	TCase *small = tcase_create("limits");
	tcase_add_checked_fixture(small, setup_small, teardown);
	tcase_set_timeout(small, 60);
	tcase_add_test(small, limits_give_e2big_and_enospc);
	suite_add_tcase(s, small);
	return s;
}

int main(void)
{
	return tu_run_suite(suite());
}
