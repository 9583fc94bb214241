/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_fork.c - the pre-fork pattern: a parent attaches and opens its maps,
 * then forks workers that use the attachment and handles they inherited
 * (php-fpm, gunicorn --preload, multiprocessing).  Each child must get a
 * client slot of its own on its first call, write nothing under the
 * parent's identity, and leave the parent attached whatever it does
 * (detach, be SIGKILLed mid-write, fork again).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "shmmap.h"
#include "testutil.h"

static struct tu_coord co;
static shmmap *g_sm;
static shmmap_map g_m;

static void setup(void)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", NULL), 0);
	g_sm = tu_attach(co.sock);
	g_m = tu_open(g_sm, "shared");
}

static void teardown(void)
{
	shmmap_detach(g_sm);
	g_sm = NULL;
	tu_coord_cleanup(&co);
}

#define NWORKERS 8
#define NOPS 400

/* Shared with the children: what each reports (a child's Check asserts do
 * not reach the parent, so they report through memory and exit codes). */
struct report {
	_Atomic uint32_t slot[NWORKERS + 2];
	_Atomic uint32_t progress;
	uint32_t nworkers; /* workers that wait for each other after their first put */
};

static struct report *report_new(uint32_t nworkers)
{
	struct report *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				-1, 0);
	ck_assert_ptr_ne(r, MAP_FAILED);
	memset(r, 0xff, sizeof r->slot);
	atomic_store(&r->progress, 0);
	r->nworkers = nworkers;
	return r;
}

/* A cas loop: add one to the decimal number under key (absent = 0). */
static int cas_add(shmmap *sm, shmmap_map m, const char *key)
{
	for (int tries = 0; tries < 100000; tries++) {
		char cur[32], next[32];
		size_t n = 0;
		int rc = shmmap_get(sm, m, key, strlen(key), cur, sizeof cur - 1, &n);
		if (rc == -ENOENT) {
			rc = shmmap_put(sm, m, key, strlen(key), "1", 1, 0, SHMMAP_NX);
			if (rc == 0)
				return 0;
			if (rc != -EEXIST)
				return rc;
			continue;
		}
		if (rc < 0)
			return rc;
		cur[n] = '\0';
		int k = snprintf(next, sizeof next, "%lld", atoll(cur) + 1);
		rc = shmmap_cas(sm, m, key, strlen(key), cur, n, next, (size_t)k, 0);
		if (rc == 0)
			return 0;
		if (rc != -ECANCELED)
			return rc;
	}
	return -EBUSY;
}

/* A worker on the inherited attachment: its own keys, a shared counter by
 * incr and another by cas.  Exit code 0 on success. */
static int worker(shmmap *sm, shmmap_map m, int id, struct report *r)
{
	for (int i = 0; i < NOPS; i++) {
		char k[32], v[32];
		int kn = snprintf(k, sizeof k, "w%d-%d", id, i);
		int vn = snprintf(v, sizeof v, "value-%d-%d", id, i);
		if (shmmap_put(sm, m, k, (size_t)kn, v, (size_t)vn, 0, 0) != 0)
			return 10;
		if (i == 0 && r) {
			/* Report the slot, then wait until every worker of the
			 * round has: they are all attached at once here. */
			atomic_store(&r->slot[id], sm->slot);
			atomic_fetch_add(&r->progress, 1);
			for (int spin = 0; atomic_load(&r->progress) < r->nworkers; spin++) {
				if (spin > 10 * 1000 * 1000)
					return 13;
				sched_yield();
			}
		}
		if (shmmap_incr(sm, m, "counter", 7, 1, NULL) != 0)
			return 11;
		if (cas_add(sm, m, "cas") != 0)
			return 12;
	}
	return 0;
}

static void expect_exit0(pid_t pid)
{
	int st = tu_waitpid(pid, 60000);
	ck_assert_msg(st >= 0, "child %d did not finish in time", (int)pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed: status %#x",
		      (int)pid, st);
}

static long long get_num(shmmap *sm, shmmap_map m, const char *key)
{
	char buf[32];
	size_t n = 0;
	int rc = shmmap_get(sm, m, key, strlen(key), buf, sizeof buf - 1, &n);
	ck_assert_msg(rc == 0, "get %s: %s", key, shmmap_strerror(rc));
	buf[n] = '\0';
	return atoll(buf);
}

static void expect_worker_keys(int nworkers)
{
	for (int id = 0; id < nworkers; id++)
		for (int i = 0; i < NOPS; i++) {
			char k[32], v[32], want[32];
			size_t n;
			int kn = snprintf(k, sizeof k, "w%d-%d", id, i);
			int wn = snprintf(want, sizeof want, "value-%d-%d", id, i);
			int rc = shmmap_get(g_sm, g_m, k, (size_t)kn, v, sizeof v, &n);
			CK_MSG(rc == 0 && n == (size_t)wn && memcmp(v, want, n) == 0,
			       "key %s: %s", k, shmmap_strerror(rc));
		}
}

static void expect_check_clean(void)
{
	char out[8192], err[1024];
	int rc = tu_ctl(co.sock, out, sizeof out, err, sizeof err, "check", NULL);
	ck_assert_msg(rc == 0, "shmmapctl check: %d\n%s%s", rc, out, err);
}

/* The parent's attachment still works as its own after what the children did. */
static void expect_parent_attached(uint32_t slot, uint64_t gen)
{
	CK_EQ(g_sm->slot, slot);
	CK_EQ(g_sm->slot_gen, gen);
	struct seg_slot *sl = seg_slot(&g_sm->seg, &g_sm->geom, slot);
	CK_EQ(atomic_load(&sl->state), SLOT_LIVE);
	CK_EQ(atomic_load(&sl->gen), gen);
	CK_EQ(sl->pid, (uint32_t)getpid());
	CK_EQ(shmmap_put(g_sm, g_m, "parent", 6, "ok", 2, 0, 0), 0);
	shmmap_map again;
	CK_EQ(shmmap_open(g_sm, "another", SHMMAP_CREATE, &again), 0);
	CK_EQ(shmmap_put(g_sm, again, "k", 1, "v", 1, 0, 0), 0);
}

struct slots_arg {
	uint32_t want;
};

static bool live_slots_are(void *arg)
{
	struct slots_arg *a = arg;
	uint32_t n = 0;
	for (uint32_t i = 0; i < g_sm->geom.max_clients; i++)
		n += atomic_load(&seg_slot(&g_sm->seg, &g_sm->geom, i)->state) != SLOT_FREE;
	return n == a->want;
}

static void wait_slots(uint32_t want)
{
	struct slots_arg a = {want};
	CK_MSG(tu_wait(live_slots_are, &a, 10000), "slots in use never came to %u", want);
}

/* The case: 8 workers on the inherited attachment, exact counters,
 * every key present, each child in a slot of its own, the parent intact. */
START_TEST(prefork_workers_share_inherited_handles)
{
	struct report *r = report_new(NWORKERS);
	uint32_t pslot = g_sm->slot;
	uint64_t pgen = g_sm->slot_gen;
	pid_t pids[NWORKERS];
	for (int i = 0; i < NWORKERS; i++) {
		pids[i] = tu_fork();
		ck_assert_int_ge(pids[i], 0);
		if (pids[i] == 0)
			_exit(worker(g_sm, g_m, i, r));
	}
	for (int i = 0; i < NWORKERS; i++)
		expect_exit0(pids[i]);
	CK_EQ(get_num(g_sm, g_m, "counter"), NWORKERS * NOPS);
	CK_EQ(get_num(g_sm, g_m, "cas"), NWORKERS * NOPS);
	expect_worker_keys(NWORKERS);
	/* Every child wrote from a slot of its own, never the parent's. */
	for (int i = 0; i < NWORKERS; i++) {
		uint32_t s = atomic_load(&r->slot[i]);
		CK_MSG(s != pslot && s < g_sm->geom.max_clients, "worker %d wrote as slot %u", i, s);
		for (int j = 0; j < i; j++)
			CK_MSG(s != atomic_load(&r->slot[j]), "workers %d and %d share slot %u", i, j,
			       s);
	}
	wait_slots(1);
	expect_parent_attached(pslot, pgen);
	expect_check_clean();
	munmap(r, sizeof *r);
}
END_TEST

/* In the child: K hits and K puts (in place) counted in the child's own
 * counters row of the map, none in the parent's.  0, or what differs. */
static int count_in_own_row(uint32_t pslot)
{
	enum { K = 50 };
	char buf[8];
	size_t n;
	if (shmmap_get(g_sm, g_m, "nokey", 5, buf, sizeof buf, &n) != -ENOENT)
		return 10; /* (re-attaches: a slot of its own) */
	const struct map_view *v;
	if (shmmap__resolve(g_sm, g_m, &v) < 0 || g_sm->slot == pslot)
		return 11;
	const struct seg_counters *own = seg_ctr(&g_sm->seg, &g_sm->geom, g_sm->slot, v->idx);
	const struct seg_counters *par = seg_ctr(&g_sm->seg, &g_sm->geom, pslot, v->idx);
	uint64_t h0 = atomic_load(&own->hits), p0 = atomic_load(&own->puts);
	uint64_t ph = atomic_load(&par->hits), pp = atomic_load(&par->puts);
	for (int i = 0; i < K; i++) {
		if (shmmap_get(g_sm, g_m, "row", 3, buf, sizeof buf, &n) != 0 ||
		    shmmap_put(g_sm, g_m, "row", 3, "b", 1, 0, 0) != 0)
			return 12;
	}
	if (atomic_load(&own->hits) - h0 != K || atomic_load(&own->puts) - p0 != K)
		return 13;
	if (atomic_load(&par->hits) != ph || atomic_load(&par->puts) != pp)
		return 14;
	return 0;
}

/* A child counts its calls in its own row of counters (its slot's), not
 * in the parent's it inherited: each view's row follows the re-attach. */
START_TEST(child_counts_in_its_own_row)
{
	CK_EQ(shmmap_put(g_sm, g_m, "row", 3, "a", 1, 0, 0), 0);
	uint32_t pslot = g_sm->slot;
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(count_in_own_row(pslot));
	expect_exit0(pid);
}
END_TEST

/* A child that detaches what it inherited (before or after using it)
 * releases its own resources only: the parent stays attached. */
START_TEST(child_detach_leaves_parent_attached)
{
	uint32_t pslot = g_sm->slot;
	uint64_t pgen = g_sm->slot_gen;
	CK_EQ(shmmap_put(g_sm, g_m, "before", 6, "x", 1, 0, 0), 0);
	for (int used = 0; used < 2; used++) {
		pid_t pid = tu_fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			if (used && shmmap_put(g_sm, g_m, "child", 5, "y", 1, 0, 0) != 0)
				_exit(10);
			shmmap_detach(g_sm);
			_exit(0);
		}
		expect_exit0(pid);
		expect_parent_attached(pslot, pgen);
	}
	char buf[8];
	size_t n;
	CK_EQ(shmmap_get(g_sm, g_m, "child", 5, buf, sizeof buf, &n), 0);
	wait_slots(1);
	expect_check_clean();
}
END_TEST

/* A child SIGKILLed in the middle of its writes: recovered like any dead
 * client (its own slot), the parent untouched, nothing torn or leaked. */
START_TEST(child_killed_mid_write)
{
	struct report *r = report_new(0);
	uint32_t pslot = g_sm->slot;
	uint64_t pgen = g_sm->slot_gen;
	for (int round = 0; round < 4; round++) {
		atomic_store(&r->progress, 0);
		pid_t pid = tu_fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			static char big[3000];
			for (unsigned i = 0;; i++) {
				char k[32];
				int kn = snprintf(k, sizeof k, "churn-%u", i % 64);
				memset(big, 'a' + (int)(i % 26), sizeof big);
				size_t vn = 16 + (i * 97) % (sizeof big - 16);
				int rc = shmmap_put(g_sm, g_m, k, (size_t)kn, big, vn, 0, 0);
				if (rc == 0)
					rc = shmmap_incr(g_sm, g_m, "kills", 5, 1, NULL);
				if (rc != 0) {
					fprintf(stderr, "child_killed_mid_write: round %d: %s (%s)\n",
						round, shmmap_strerror(rc), shmmap_errdetail());
					_exit(10);
				}
				atomic_fetch_add(&r->progress, 1);
			}
		}
		while (atomic_load(&r->progress) < 2000) {
			int st;
			pid_t w = waitpid(pid, &st, WNOHANG);
			CK_MSG(w == 0, "round %d: the writer ended (status %#x) after %u writes", round,
			       st, atomic_load(&r->progress));
			sched_yield();
		}
		kill(pid, SIGKILL);
		ck_assert_int_ge(tu_waitpid(pid, 5000), 0);
		wait_slots(1);
		expect_parent_attached(pslot, pgen);
	}
	/* Every value is whole: one letter repeated. */
	for (int i = 0; i < 64; i++) {
		char k[32], v[3000];
		size_t n;
		int kn = snprintf(k, sizeof k, "churn-%d", i);
		int rc = shmmap_get(g_sm, g_m, k, (size_t)kn, v, sizeof v, &n);
		CK_MSG(rc == 0 || rc == -ENOENT, "get %s: %s", k, shmmap_strerror(rc));
		for (size_t j = 1; rc == 0 && j < n; j++)
			CK_MSG(v[j] == v[0], "%s is torn at byte %zu", k, j);
	}
	expect_check_clean();
	munmap(r, sizeof *r);
}
END_TEST

/* A grandchild: the child forks before and after its own first call. */
START_TEST(grandchildren_work)
{
	struct report *r = report_new(0);
	uint32_t pslot = g_sm->slot;
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* A grandchild forked before the child used the attachment... */
		pid_t g1 = fork();
		if (g1 == 0)
			_exit(worker(g_sm, g_m, 0, r));
		/* ...the child itself... */
		int rc = worker(g_sm, g_m, 1, r);
		/* ...and one forked after the child re-attached. */
		pid_t g2 = fork();
		if (g2 == 0)
			_exit(worker(g_sm, g_m, 2, r));
		int st1 = -1, st2 = -1;
		waitpid(g1, &st1, 0);
		waitpid(g2, &st2, 0);
		if (rc)
			_exit(rc);
		_exit(WIFEXITED(st1) && WIFEXITED(st2) ? WEXITSTATUS(st1) | WEXITSTATUS(st2) : 20);
	}
	expect_exit0(pid);
	CK_EQ(get_num(g_sm, g_m, "counter"), 3 * NOPS);
	CK_EQ(get_num(g_sm, g_m, "cas"), 3 * NOPS);
	expect_worker_keys(3);
	for (int i = 0; i < 3; i++)
		CK_MSG(atomic_load(&r->slot[i]) != pslot, "generation %d wrote as the parent", i);
	wait_slots(1);
	expect_check_clean();
	munmap(r, sizeof *r);
}
END_TEST

/* Threads of the parent write (and open maps) while the main thread forks
 * workers: nobody hangs on a lock held across the fork, nothing is lost. */
struct writer_arg {
	int id;
	_Atomic bool *stop;
	long done;
};

static void *parent_writer(void *p)
{
	struct writer_arg *a = p;
	while (!atomic_load(a->stop)) {
		if (shmmap_incr(g_sm, g_m, "counter", 7, 1, NULL) != 0)
			return (void *)1;
		a->done++;
		if (a->done % 64 == 0) {
			shmmap_map m;
			if (shmmap_open(g_sm, "shared", 0, &m) != 0)
				return (void *)2;
		}
	}
	return NULL;
}

START_TEST(threads_in_parent_while_forking)
{
	_Atomic bool stop = false;
	struct writer_arg args[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct writer_arg){.id = i, .stop = &stop};
		ck_assert_int_eq(pthread_create(&th[i], NULL, parent_writer, &args[i]), 0);
	}
	pid_t pids[NWORKERS];
	for (int i = 0; i < NWORKERS; i++) {
		pids[i] = tu_fork();
		ck_assert_int_ge(pids[i], 0);
		if (pids[i] == 0)
			_exit(worker(g_sm, g_m, i, NULL));
	}
	for (int i = 0; i < NWORKERS; i++)
		expect_exit0(pids[i]);
	atomic_store(&stop, true);
	long total = 0;
	for (int i = 0; i < 4; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		CK_MSG(ret == NULL, "parent thread %d failed: %p", i, ret);
		total += args[i].done;
	}
	CK_EQ(get_num(g_sm, g_m, "counter"), NWORKERS * NOPS + total);
	expect_worker_keys(NWORKERS);
	wait_slots(1);
	expect_check_clean();
}
END_TEST

/* A child that cannot re-attach (the coordinator is down) gets a clear
 * error from every call, writes nothing, and succeeds once it is back. */
START_TEST(child_without_coordinator)
{
	int go[2], done[2];
	ck_assert_int_eq(pipe(go), 0);
	ck_assert_int_eq(pipe(done), 0);
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char c;
		if (read(go[0], &c, 1) != 1)
			_exit(9);
		char buf[8];
		size_t n;
		if (shmmap_put(g_sm, g_m, "orphan", 6, "x", 1, 0, 0) != -ECONNREFUSED)
			_exit(10);
		if (shmmap_get(g_sm, g_m, "parent", 6, buf, sizeof buf, &n) != -ECONNREFUSED)
			_exit(11);
		if (!strstr(shmmap_errdetail(), co.sock))
			_exit(12); /* the detail names the socket */
		c = 1;
		if (write(done[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(13);
		if (shmmap_put(g_sm, g_m, "orphan", 6, "y", 1, 0, 0) != 0)
			_exit(14);
		_exit(0);
	}
	CK_EQ(shmmap_put(g_sm, g_m, "parent", 6, "p", 1, 0, 0), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	char c = 1;
	ck_assert_int_eq(write(go[1], &c, 1), 1);
	ck_assert_int_eq(read(done[0], &c, 1), 1);
	char buf[8];
	size_t n;
	CK_EQ(shmmap_get(g_sm, g_m, "orphan", 6, buf, sizeof buf, &n), -ENOENT);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	ck_assert_int_eq(write(go[1], &c, 1), 1);
	expect_exit0(pid);
	CK_EQ(shmmap_get(g_sm, g_m, "orphan", 6, buf, sizeof buf, &n), 0);
	CK_MSG(n == 1 && buf[0] == 'y', "the child's write after the restart is missing");
	for (int i = 0; i < 2; i++) {
		close(go[i]);
		close(done[i]);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fork");
	TCase *tc = tcase_create("prefork");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, prefork_workers_share_inherited_handles);
	tcase_add_test(tc, child_detach_leaves_parent_attached);
	tcase_add_test(tc, child_counts_in_its_own_row);
	tcase_add_test(tc, child_killed_mid_write);
	tcase_add_test(tc, grandchildren_work);
	tcase_add_test(tc, threads_in_parent_while_forking);
	tcase_add_test(tc, child_without_coordinator);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
