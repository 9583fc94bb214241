/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_seggrow.c - a segment that grows online ([segment] max_size): puts
 * that need more room grow it instead of failing or evicting, readers that
 * attached before the growth follow it, memory is committed as it grows,
 * many processes grow it at once, a process mapped away from the agreed
 * base (at a 2 MiB boundary) follows too, `shmmapctl grow`, and a
 * coordinator killed around a growth step (or restarted) leaves a segment the next one adopts whole.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define MIB (1024ull * 1024ull)

static struct tu_coord co;

static const char *conf_for(const char *max, const char *policy)
{
	static char buf[256];
	snprintf(buf, sizeof buf, "[segment]\nmax_size = %s\n\n[map]\nvalue_max = 1M\npolicy = %s\n",
		 max, policy);
	return buf;
}

static void start(const char *size, const char *max, const char *policy)
{
	int rc = tu_coord_start(&co, size, conf_for(max, policy));
	CK_MSG(rc == 0, "shmmapd did not start (%d): see %s", rc, co.log);
}

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

/* Bytes of the object committed in /dev/shm. */
static uint64_t committed(void)
{
	char path[128];
	snprintf(path, sizeof path, "/dev/shm%s", co.shm);
	struct stat st;
	CK_MSG(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
	return (uint64_t)st.st_blocks * 512u;
}

static uint64_t object_size(void)
{
	char path[128];
	snprintf(path, sizeof path, "/dev/shm%s", co.shm);
	struct stat st;
	CK_MSG(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
	return (uint64_t)st.st_size;
}

/* Value i: vlen bytes derived from i (and a seed). */
static void fill(unsigned char *v, size_t vlen, uint64_t i, uint64_t seed)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull + seed;
	for (size_t k = 0; k < vlen; k += 8) {
		x ^= x >> 29;
		x *= 0xbf58476d1ce4e5b9ull;
		size_t n = vlen - k < 8 ? vlen - k : 8;
		memcpy(v + k, &x, n);
	}
}

static int put_i(shmmap *sm, shmmap_map m, uint64_t i, size_t vlen, uint64_t seed)
{
	static __thread unsigned char v[1 << 20];
	char key[32];
	int kl = snprintf(key, sizeof key, "k%llu", (unsigned long long)i);
	fill(v, vlen, i, seed);
	return shmmap_put(sm, m, key, (size_t)kl, v, vlen, 0, 0);
}

/* 0 if key i holds its value, else why not (an errno, or 1: wrong bytes). */
static int get_i(shmmap *sm, shmmap_map m, uint64_t i, size_t vlen, uint64_t seed)
{
	static __thread unsigned char v[1 << 20], w[1 << 20];
	char key[32];
	int kl = snprintf(key, sizeof key, "k%llu", (unsigned long long)i);
	size_t n = 0;
	int rc = shmmap_get(sm, m, key, (size_t)kl, v, sizeof v, &n);
	if (rc < 0)
		return rc;
	fill(w, vlen, i, seed);
	return n == vlen && memcmp(v, w, vlen) == 0 ? 0 : 1;
}

static void expect_check_clean(void)
{
	char out[8192], err[4096];
	int rc = tu_ctl(co.sock, out, sizeof out, err, sizeof err, "check", NULL);
	CK_MSG(rc == 0, "shmmapctl check exited %d:\n%s%s", rc, out, err);
}

static uint64_t json_u64(const char *json, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *p = strstr(json, pat);
	CK_MSG(p != NULL, "no %s in %s", key, json);
	return strtoull(p + strlen(pat), NULL, 10);
}

/* ---- the "done means" ---- */

#define BIG_VLEN (64u * 1024u)
#define BIG_N 6104u /* 6104 * 64 KiB = 400 MB */

START_TEST(grows_to_hold_400mb_with_reject)
{
	start("16M", "1G", "reject");
	/* At start the object holds the initial size only. */
	uint64_t c0 = committed();
	CK_MSG(c0 <= 16 * MIB && object_size() <= 16 * MIB,
	       "at start %llu bytes committed, object %llu bytes (max_size 1G)",
	       (unsigned long long)c0, (unsigned long long)object_size());
	shmmap *reader = tu_attach(co.sock); /* attached before any growth */
	shmmap_map rm = tu_open(reader, "big");
	uint64_t size0 = shmmap__seg_cur_size(&reader->seg, &reader->geom);
	CK(size0 <= 16 * MIB);

	shmmap *w = tu_attach(co.sock);
	shmmap_map m = tu_open(w, "big");
	for (uint64_t i = 0; i < BIG_N; i++) {
		int rc = put_i(w, m, i, BIG_VLEN, 1);
		CK_MSG(rc == 0, "put %llu of %u (64 KiB each): %s", (unsigned long long)i, BIG_N,
		       shmmap_strerror(rc));
	}
	for (uint64_t i = 0; i < BIG_N; i++) {
		int rc = get_i(reader, rm, i, BIG_VLEN, 1);
		CK_MSG(rc == 0, "the early reader's get of %llu: %d", (unsigned long long)i, rc);
	}
	CK_MSG(shmmap__seg_cur_size(&reader->seg, &reader->geom) > 400 * MIB,
	       "the reader did not follow the growth");
	struct shmmap_stats st;
	CK_EQ(shmmap_stats(w, m, &st), 0);
	CK_EQ(st.entries, BIG_N);
	CK_EQ(st.evictions, 0);
	char out[4096], err[1024];
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "status", NULL), 0);
	uint64_t size = json_u64(out, "size"), max = json_u64(out, "max_size");
	uint64_t comm = json_u64(out, "committed");
	CK_EQ(max, 1024 * MIB);
	CK_MSG(size > 400 * MIB && size <= max, "status size %llu", (unsigned long long)size);
	CK_MSG(comm >= size - 16 * MIB && comm <= max, "committed %llu for size %llu",
	       (unsigned long long)comm, (unsigned long long)size);
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "metrics", NULL), 0);
	CK_MSG(strstr(out, "shmmap_segment_max_size_bytes 1073741824") != NULL, "%s", out);
	CK_MSG(strstr(out, "shmmap_segment_committed_bytes ") != NULL, "%s", out);
	expect_check_clean();
	shmmap_detach(w);

	/* A restart keeps everything, and the early reader keeps reading. */
	CK_EQ(tu_coord_stop(&co), 0);
	CK_EQ(tu_coord_restart(&co), 0);
	shmmap *again = tu_attach(co.sock);
	shmmap_map am = tu_open(again, "big");
	/* (A step ahead of need may have gone on after the status above.) */
	uint64_t size2 = shmmap__seg_cur_size(&again->seg, &again->geom);
	CK_MSG(size2 >= size && size2 <= max, "%llu after the restart, %llu before",
	       (unsigned long long)size2, (unsigned long long)size);
	for (uint64_t i = 0; i < BIG_N; i++) {
		CK_MSG(get_i(again, am, i, BIG_VLEN, 1) == 0, "after restart: %llu",
		       (unsigned long long)i);
		CK_MSG(get_i(reader, rm, i, BIG_VLEN, 1) == 0, "early reader after restart: %llu",
		       (unsigned long long)i);
	}
	expect_check_clean();
	shmmap_detach(again);
	shmmap_detach(reader);
}
END_TEST

/* At max_size the policy applies as before: reject says -ENOSPC. */
START_TEST(at_max_size_the_policy_applies)
{
	start("2M", "4M", "reject");
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "m");
	int rc = 0;
	uint64_t i = 0;
	for (; i < 1000 && (rc = put_i(sm, m, i, 16000, 2)) == 0; i++)
		;
	CK_MSG(rc == -ENOSPC, "put %llu: %s", (unsigned long long)i, shmmap_strerror(rc));
	CK_MSG(i > 100, "only %llu values of 16000 B fit in a 4M segment", (unsigned long long)i);
	CK_EQ(shmmap__seg_cur_size(&sm->seg, &sm->geom) / SEG_PAGE,
	      (sm->geom.heap_off + (uint64_t)sm->geom.npages_max * SEG_PAGE) / SEG_PAGE);
	for (uint64_t k = 0; k < i; k++)
		CK_EQ(get_i(sm, m, k, 16000, 2), 0);
	expect_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* With evict, nothing is evicted while the segment can grow. */
START_TEST(evict_policy_grows_before_evicting)
{
	start("2M", "64M", "evict");
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "m");
	for (uint64_t i = 0; i < 2000; i++) /* 2000 * 16000 B: 32 MB */
		CK_EQ(put_i(sm, m, i, 16000, 3), 0);
	struct shmmap_stats st;
	CK_EQ(shmmap_stats(sm, m, &st), 0);
	CK_EQ(st.evictions, 0);
	CK_EQ(st.entries, 2000);
	shmmap_detach(sm);
	expect_check_clean();
}
END_TEST

/* A put that asks the coordinator for growth waits for its answer (for as
 * long as the coordinator is stopped, up to the reply timeout): it runs the
 * process's wait hook first, as a lock wait does, so that a binding lets
 * its interpreter lock go (the Python binding's puts keep the GIL). */
static _Atomic unsigned hook_calls;
static void count_hook(void)
{
	atomic_fetch_add(&hook_calls, 1);
}

START_TEST(growth_request_runs_the_wait_hook)
{
	start("2M", "64M", "evict");
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "m");
	uint64_t size0 = object_size();
	atomic_store(&hook_calls, 0);
	shmmap_set_wait_hook(count_hook);
	for (uint64_t i = 0; i < 1000; i++) /* 1000 * 16000 B: 16 MB */
		CK_EQ(put_i(sm, m, i, 16000, 4), 0);
	shmmap_set_wait_hook(NULL);
	CK_MSG(object_size() > size0, "the segment did not grow");
	CK_MSG(atomic_load(&hook_calls) > 0, "no put that asked for growth ran the wait hook");
	shmmap_detach(sm);
}
END_TEST

/* ---- shmmapctl grow ---- */

START_TEST(ctl_grow)
{
	start("4M", "64M", "reject");
	char out[4096], err[1024];
	uint64_t c0 = committed();
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "grow", "40M", NULL), 0);
	uint64_t size = json_u64(out, "size");
	CK_MSG(size >= 40 * MIB && size < 41 * MIB, "grow 40M gave %llu", (unsigned long long)size);
	CK_MSG(committed() >= c0 + 35 * MIB, "committed %llu after grow 40M",
	       (unsigned long long)committed());
	/* Smaller than now: nothing to do. */
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "grow", "8M", NULL), 0);
	CK_EQ(json_u64(out, "size"), size);
	/* Beyond max_size: an error that says so. */
	int rc = tu_ctl(co.sock, out, sizeof out, err, sizeof err, "grow", "65M", NULL);
	CK_MSG(rc != 0 && strstr(err, "max_size") != NULL, "rc %d: %s", rc, err);
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "grow", "12Q", NULL), 2);
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "status", NULL), 0);
	CK_MSG(strstr(out, "max size") && strstr(out, "committed"), "%s", out);
	expect_check_clean();
}
END_TEST

/* ---- many processes at once ---- */

#define NPROC 6
#define PER_PROC 1200
#define MID_VLEN 20000u

struct shared {
	_Atomic int go;
	_Atomic int done;
	_Atomic int fails;
	int why[NPROC];
};

static int writer_proc(struct shared *sh, int id)
{
	shmmap *sm;
	if (shmmap_attach(co.sock, &sm) < 0)
		return 10;
	shmmap_map m;
	if (shmmap_open(sm, "many", SHMMAP_CREATE, &m) < 0)
		return 11;
	while (!atomic_load(&sh->go))
		sched_yield(); /* a start line: every writer grows the segment at once */
	for (uint64_t i = 0; i < PER_PROC; i++) {
		int rc = put_i(sm, m, (uint64_t)id * 100000 + i, MID_VLEN, 4);
		if (rc < 0) {
			sh->why[id] = rc;
			atomic_fetch_add(&sh->fails, 1);
			return 12;
		}
	}
	for (uint64_t i = 0; i < PER_PROC; i++)
		if (get_i(sm, m, (uint64_t)id * 100000 + i, MID_VLEN, 4) != 0)
			return 13;
	shmmap_detach(sm);
	return 0;
}

START_TEST(many_processes_grow_at_once)
{
	start("4M", "512M", "reject");
	struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CK(sh != MAP_FAILED);
	memset(sh, 0, sizeof *sh);
	shmmap *reader = tu_attach(co.sock);
	shmmap_map rm = tu_open(reader, "many");
	pid_t pid[NPROC];
	for (int k = 0; k < NPROC; k++) {
		pid[k] = tu_fork();
		CK(pid[k] >= 0);
		if (pid[k] == 0)
			_exit(writer_proc(sh, k));
	}
	atomic_store(&sh->go, 1);
	/* Under load: the reader reads what is there while they write. */
	uint64_t seen = 0;
	for (int round = 0; round < 200; round++)
		for (int k = 0; k < NPROC; k++)
			seen += get_i(reader, rm, (uint64_t)k * 100000 + (uint64_t)round, MID_VLEN, 4) == 0;
	for (int k = 0; k < NPROC; k++) {
		int st = tu_waitpid(pid[k], 120000);
		CK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d: status %#x (put: %s)", k, st,
		       shmmap_strerror(sh->why[k]));
	}
	for (int k = 0; k < NPROC; k++)
		for (uint64_t i = 0; i < PER_PROC; i++)
			CK_EQ(get_i(reader, rm, (uint64_t)k * 100000 + i, MID_VLEN, 4), 0);
	/* Steps were not multiplied by the number of askers. */
	uint64_t size = shmmap__seg_cur_size(&reader->seg, &reader->geom);
	uint32_t bs = shmmap__class_size((uint32_t)shmmap__class_of(NULL, NULL, 32 + 8 + MID_VLEN));
	uint64_t need = (uint64_t)NPROC * PER_PROC / (SEG_PAGE / bs) * SEG_PAGE;
	CK_MSG(size < 2 * need, "grew to %llu for %llu bytes of pages",
	       (unsigned long long)size, (unsigned long long)need);
	(void)seen;
	shmmap_detach(reader);
	expect_check_clean();
	munmap(sh, sizeof *sh);
}
END_TEST

/* ---- a put does not wait for a step ahead of need ---- */

/* What the test build logs when a growth rests (SHMMAP_GROW_PAUSE_MS). */
#define GROWTH_RESTS ((void *)"test hook: the growth rests")

static bool log_has(void *what)
{
	char *log = tu_slurp(co.log, NULL);
	bool yes = log && strstr(log, what) != NULL;
	free(log);
	return yes;
}

/*
 * The housekeeping thread's step ahead of need goes in chunks, each under
 * grow_mu; a put that finds no room meanwhile is given a small step of
 * its own and does not wait for the rest.  The test build's coordinator
 * rests 120 s after each chunk of a step ahead ($SHMMAP_GROW_PAUSE_MS):
 * 100 MB of puts that need growth all go through while it rests, so the
 * step ahead has not finished (the log says so), and stopping the
 * coordinator does not wait for the rest.
 */
/* Stop the coordinator: it does not wait for the rest of a resting
 * growth (what: which one, for the message). */
static void stop_without_the_rest(const char *what)
{
	long long t0 = tu_mono_ms();
	CK_EQ(tu_coord_stop(&co), 0);
	CK_MSG(tu_mono_ms() - t0 < 5000, "the stop waited %lld ms for the resting %s",
	       tu_mono_ms() - t0, what);
}

/* The test build's coordinator, whose growth rests `rest` (ms, as text)
 * after each chunk of a step ahead or of a shmmapctl grow; false if there
 * is none. */
static bool start_resting(const char *rest)
{
	const char *plain0 = getenv("SHMMAPD"), *crash = getenv("SHMMAPD_CRASH");
	CK(plain0 != NULL);
	if (!crash || access(crash, X_OK) != 0)
		return false;
	char plain[512];
	snprintf(plain, sizeof plain, "%s", plain0);
	setenv("SHMMAPD", crash, 1);
	setenv("SHMMAP_GROW_PAUSE_MS", rest, 1);
	int rc = tu_coord_start(&co, "4M", conf_for("1G", "reject"));
	setenv("SHMMAPD", plain, 1);
	unsetenv("SHMMAP_GROW_PAUSE_MS");
	CK_MSG(rc == 0, "shmmapd-crash did not start (%d): see %s", rc, co.log);
	return true;
}

START_TEST(a_put_does_not_wait_for_a_step_ahead)
{
	if (!start_resting("120000"))
		TU_SKIP("no SHMMAPD_CRASH (make test builds tests/shmmapd-crash)");
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "ahead");
	/* Fill until the pool is under an eighth free, then wait for the
	 * housekeeping thread to take a step ahead and rest in it. */
	struct seg_header *h = seg_hdr(&sm->seg);
	uint64_t n = 0;
	while (n < 20000 && __atomic_load_n(&h->pool_free, __ATOMIC_RELAXED) * 8 >=
				     atomic_load(&h->npages_live))
		CK_EQ(put_i(sm, m, n++, 20000, 11), 0);
	CK_MSG(tu_wait(log_has, GROWTH_RESTS, 10000),
	       "no step ahead of need after %llu puts: see %s", (unsigned long long)n, co.log);
	/* 100 MB more: many times what the segment had, all of it from
	 * steps the puts ask for while the step ahead rests. */
	uint64_t before = shmmap__seg_cur_size(&sm->seg, &sm->geom);
	for (uint64_t k = 0; k < 5000; k++, n++)
		CK_EQ(put_i(sm, m, n, 20000, 11), 0);
	shmmap__seg_sync(&sm->seg);
	uint64_t after = shmmap__seg_cur_size(&sm->seg, &sm->geom);
	CK_MSG(after >= before + 90 * MIB, "grew from %llu to %llu only",
	       (unsigned long long)before, (unsigned long long)after);
	char *log = tu_slurp(co.log, NULL);
	CK(log != NULL);
	CK_MSG(strstr(log, "for a put that found no room") != NULL, "%s", log);
	/* The step ahead has not finished: every "grew" line is a put's. */
	for (const char *p = log; (p = strstr(p, " grew from ")) != NULL; p++) {
		const char *eol = strchr(p, '\n');
		CK_MSG(eol && memmem(p, (size_t)(eol - p), "for a put", 9) != NULL,
		       "a step ahead finished while it should rest:\n%s", log);
	}
	free(log);
	for (uint64_t i = 0; i < n; i++)
		CK_EQ(get_i(sm, m, i, 20000, 11), 0);
	expect_check_clean();
	shmmap_detach(sm);
	stop_without_the_rest("step");
}
END_TEST

/*
 * shmmapctl grow runs on the housekeeping thread: while it rests inside
 * (the test build, as above), the coordinator attaches a new process,
 * opens a map for it and serves its puts; a second grow at the same time
 * is refused with a reason; the first one's growth is there.
 */
START_TEST(ctl_grow_does_not_hold_up_the_others)
{
	if (!start_resting("120000"))
		TU_SKIP("no SHMMAPD_CRASH (make test builds tests/shmmapd-crash)");
	pid_t ctl = tu_fork();
	CK(ctl >= 0);
	if (ctl == 0) {
		char out[4096], err[1024];
		_exit(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "grow", "200M", NULL));
	}
	CK_MSG(tu_wait(log_has, GROWTH_RESTS, 10000), "the grow did not start: see %s", co.log);
	long long t0 = tu_mono_ms();
	shmmap *sm;
	CK_EQ(shmmap_attach(co.sock, &sm), 0);
	shmmap_map m = tu_open(sm, "meanwhile");
	for (uint64_t i = 0; i < 100; i++)
		CK_EQ(put_i(sm, m, i, 1000, 12), 0);
	CK_MSG(tu_mono_ms() - t0 < 5000, "attach, open and puts took %lld ms during the grow",
	       tu_mono_ms() - t0);
	char out[4096], err[1024];
	int rc = tu_ctl(co.sock, out, sizeof out, err, sizeof err, "grow", "300M", NULL);
	CK_MSG(rc != 0 && strstr(err, "another shmmapctl grow is under way"), "rc %d: %s%s", rc,
	       out, err);
	/* Its first chunk is in: the segment grew while it rests. */
	shmmap__seg_sync(&sm->seg);
	CK(shmmap__seg_cur_size(&sm->seg, &sm->geom) > 4 * MIB);
	for (uint64_t i = 0; i < 100; i++)
		CK_EQ(get_i(sm, m, i, 1000, 12), 0);
	shmmap_detach(sm);
	kill(ctl, SIGKILL);
	tu_waitpid(ctl, 10000);
	stop_without_the_rest("grow");
}
END_TEST

/* A shmmapctl grow that takes longer than the 10 s a request waits for
 * its reply (the test build rests 11 s after its one chunk): shmmapctl
 * waits for it, and says the new size. */
START_TEST(ctl_grow_waits_for_a_long_grow)
{
	if (!start_resting("11000"))
		TU_SKIP("no SHMMAPD_CRASH (make test builds tests/shmmapd-crash)");
	char out[4096], err[1024];
	long long t0 = tu_mono_ms();
	int rc = tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "grow", "20M", NULL);
	long long took = tu_mono_ms() - t0;
	CK_MSG(rc == 0, "grow exited %d after %lld ms: %s%s", rc, took, out, err);
	CK_MSG(took >= 10000, "the grow took %lld ms only: the test tests nothing", took);
	CK_MSG(json_u64(out, "size") >= 20 * MIB, "%s", out);
}
END_TEST

/* ---- a process mapped away from the agreed base ---- */

static int displaced_proc(void)
{
	void *want = (void *)(uintptr_t)0x200000000000ULL;
	void *p = mmap(want, 64 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		       -1, 0);
	if (p != want)
		return 20;
	shmmap *sm;
	if (shmmap_attach(co.sock, &sm))
		return 21;
	if (sm->seg.at_agreed_base)
		return 22;
	if ((uintptr_t)sm->seg.base % (UINT64_C(2) << 20))
		return 26; /* elsewhere, but at a 2 MiB boundary: huge pages map only so */
	shmmap_map m;
	if (shmmap_open(sm, "d", SHMMAP_CREATE, &m))
		return 23;
	/* The parent's values, in pages the segment grew by after we mapped. */
	for (uint64_t i = 0; i < 800; i++)
		if (get_i(sm, m, i, 30000, 5) != 0)
			return 24;
	/* Grow it further from here. */
	for (uint64_t i = 1000; i < 1800; i++)
		if (put_i(sm, m, i, 30000, 5) != 0)
			return 25;
	shmmap_detach(sm);
	return 0;
}

START_TEST(relocated_base_follows_growth)
{
	start("2M", "128M", "reject");
	int go[2];
	CK_EQ(pipe(go), 0);
	pid_t pid = tu_fork();
	CK(pid >= 0);
	if (pid == 0) {
		char b;
		close(go[1]);
		if (read(go[0], &b, 1) != 1)
			_exit(30);
		_exit(displaced_proc());
	}
	close(go[0]);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "d");
	for (uint64_t i = 0; i < 800; i++) /* 24 MB: the segment grows */
		CK_EQ(put_i(sm, m, i, 30000, 5), 0);
	CK_EQ(write(go[1], "x", 1), 1);
	close(go[1]);
	int st = tu_waitpid(pid, 60000);
	CK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "displaced child: status %#x", st);
	for (uint64_t i = 1000; i < 1800; i++)
		CK_EQ(get_i(sm, m, i, 30000, 5), 0);
	shmmap_detach(sm);
	expect_check_clean();
}
END_TEST

/* ---- crashes and restarts ---- */

/*
 * What a coordinator killed inside a growth step leaves, before it
 * published the new size: an object longer than npages_live says (and
 * descriptors of pages nobody has).  The next coordinator adopts the
 * segment at its published size, and its next step covers the slack.
 */
START_TEST(restart_adopts_the_slack_of_a_killed_step)
{
	start("4M", "128M", "reject");
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "s");
	for (uint64_t i = 0; i < 400; i++) /* 12 MB: grown once or more */
		CK_EQ(put_i(sm, m, i, 30000, 6), 0);
	uint64_t size = shmmap__seg_cur_size(&sm->seg, &sm->geom);
	CK(size > 12 * MIB);
	/* Killed inside a step: extended and committed, not published. */
	CK_EQ(kill(co.pid, SIGKILL), 0);
	CK(tu_waitpid(co.pid, 10000) >= 0);
	co.pid = 0;
	CK_EQ(posix_fallocate(sm->seg.fd, (off_t)size, 24 * MIB), 0);
	uint32_t live = sm->geom.npages;
	for (uint32_t i = live; i < live + 10 && i < sm->geom.npages_max; i++)
		seg_page(&sm->seg, &sm->geom, i)->kind = PAGE_FREE; /* as the step left them */
	CK_EQ(tu_coord_restart(&co), 0);
	/* Adopted at the published size, the data whole. */
	char out[4096], err[1024];
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "status", NULL), 0);
	CK_EQ(json_u64(out, "size"), size);
	expect_check_clean();
	for (uint64_t i = 0; i < 400; i++)
		CK_EQ(get_i(sm, m, i, 30000, 6), 0);
	/* And it grows on over the slack. */
	for (uint64_t i = 400; i < 1600; i++)
		CK_EQ(put_i(sm, m, i, 30000, 6), 0);
	for (uint64_t i = 0; i < 1600; i++)
		CK_EQ(get_i(sm, m, i, 30000, 6), 0);
	shmmap_detach(sm);
	expect_check_clean();
}
END_TEST

/*
 * The coordinator SIGKILLed again and again while a writer makes it grow
 * (steps happen on the writer's requests and in the housekeeping thread,
 * so some kills land inside one): every restart adopts a consistent
 * segment, and every value whose put succeeded is there.
 */
START_TEST(coordinator_killed_while_growing)
{
	start("2M", "256M", "reject");
	_Atomic uint64_t *done = mmap(NULL, sizeof *done, PROT_READ | PROT_WRITE,
				      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CK(done != MAP_FAILED);
	atomic_store(done, 0);
	pid_t wpid = tu_fork();
	CK(wpid >= 0);
	if (wpid == 0) {
		shmmap *sm;
		shmmap_map m;
		if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "c", SHMMAP_CREATE, &m))
			_exit(40);
		/* Puts that fail while the coordinator is down are tried again. */
		for (uint64_t i = 0; i < 4000;) {
			int rc = put_i(sm, m, i, 40000, 7);
			if (rc == 0)
				atomic_store(done, ++i);
			else if (rc != -ENOSPC && rc != -ECONNREFUSED && rc != -ETIMEDOUT &&
				 rc != -ECONNRESET)
				_exit(41);
		}
		_exit(0);
	}
	shmmap *sm = tu_attach(co.sock);
	for (int k = 0; k < 6; k++) {
		uint64_t at = atomic_load(done);
		/* Let it grow a little, then kill. */
		for (int spin = 0; spin < 100000 && atomic_load(done) < at + 100 + (uint64_t)k * 37;
		     spin++)
			usleep(100);
		CK_EQ(kill(co.pid, SIGKILL), 0);
		CK(tu_waitpid(co.pid, 10000) >= 0);
		co.pid = 0;
		CK_MSG(tu_coord_restart(&co) == 0, "restart %d: see %s", k, co.log);
	}
	int st = tu_waitpid(wpid, 120000);
	CK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer: status %#x", st);
	shmmap_map m = tu_open(sm, "c");
	for (uint64_t i = 0; i < 4000; i++)
		CK_MSG(get_i(sm, m, i, 40000, 7) == 0, "value %llu", (unsigned long long)i);
	shmmap_detach(sm);
	expect_check_clean();
	munmap(done, sizeof *done);
}
END_TEST

/* A client killed while it follows the growth costs nothing. */
START_TEST(client_killed_while_following_growth)
{
	start("2M", "128M", "reject");
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "f");
	pid_t pid[4];
	for (int k = 0; k < 4; k++) {
		pid[k] = tu_fork();
		CK(pid[k] >= 0);
		if (pid[k] == 0) {
			shmmap *c;
			shmmap_map cm;
			if (shmmap_attach(co.sock, &c) || shmmap_open(c, "f", SHMMAP_CREATE, &cm))
				_exit(50);
			for (uint64_t i = 0;; i = (i + 1) % 3000)
				(void)get_i(c, cm, i, 30000, 8); /* follows every step */
		}
	}
	for (uint64_t i = 0; i < 3000; i++) {
		CK_EQ(put_i(sm, m, i, 30000, 8), 0);
		if (i % 700 == 350) { /* some of them die mid-way */
			int k = (int)(i / 700);
			kill(pid[k], SIGKILL);
			tu_waitpid(pid[k], 10000);
			pid[k] = 0;
		}
	}
	for (int k = 0; k < 4; k++)
		if (pid[k] > 0) {
			kill(pid[k], SIGKILL);
			tu_waitpid(pid[k], 10000);
		}
	for (uint64_t i = 0; i < 3000; i++)
		CK_EQ(get_i(sm, m, i, 30000, 8), 0);
	shmmap_detach(sm);
	expect_check_clean();
}
END_TEST

/* A header naming a size beyond what a process reserved: a clear error,
 * and nothing changed. */
START_TEST(size_beyond_the_reservation_is_refused)
{
	start("2M", "16M", "reject");
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "x");
	CK_EQ(put_i(sm, m, 1, 1000, 9), 0);
	/* A second view of the segment, as a process whose reservation is
	 * smaller would have: the header says more pages than it can map. */
	struct seg s2;
	int fd = dup(sm->seg.fd);
	CK(fd >= 0);
	CK_EQ(shmmap__seg_map_fd(fd, 0, false, &s2), 0);
	struct seg_geom g2;
	CK_EQ(shmmap__seg_validate(&s2, &g2), 0);
	s2.geom = &g2;
	size_t len0 = atomic_load(&s2.len);
	s2.reserved = len0; /* pretend this is all the address space it has */
	char out[1024], err[1024];
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "grow", "12M", NULL), 0);
	CK_EQ(shmmap__seg_sync(&s2), -SHMMAP_ESEGSIZE);
	CK_EQ(atomic_load(&s2.len), len0);
	CK(!seg_ok(&s2, len0, 16, 16));
	s2.reserved = g2.max_size;
	CK_EQ(shmmap__seg_sync(&s2), 0);
	CK(atomic_load(&s2.len) > len0);
	CK(strlen(shmmap_strerror(-SHMMAP_ESEGSIZE)) > 20);
	shmmap__seg_unmap(&s2);
	CK_EQ(get_i(sm, m, 1, 1000, 9), 0);

	/* Through the API: this attachment's reservation shrunk to what it
	 * has mapped; another one stores values in the grown pages. */
	size_t reserved = sm->seg.reserved;
	sm->seg.reserved = atomic_load(&sm->seg.len);
	shmmap *b = tu_attach(co.sock);
	shmmap_map bm = tu_open(b, "x");
	for (uint64_t i = 100; i < 400; i++)
		CK_EQ(put_i(b, bm, i, 30000, 9), 0);
	int refused = 0;
	for (uint64_t i = 100; i < 400; i++) {
		int rc = get_i(sm, m, i, 30000, 9);
		CK_MSG(rc == 0 || rc == -SHMMAP_ESEGSIZE, "get %llu: %d", (unsigned long long)i, rc);
		refused += rc == -SHMMAP_ESEGSIZE;
	}
	CK_MSG(refused > 0, "no get needed the pages this attachment cannot map");
	CK(strstr(shmmap_errdetail(), "cannot map") != NULL);
	sm->seg.reserved = reserved;
	for (uint64_t i = 100; i < 400; i++)
		CK_EQ(get_i(sm, m, i, 30000, 9), 0);
	shmmap_detach(b);
	shmmap_detach(sm);
	expect_check_clean();
}
END_TEST

/* ---- snapshots ---- */

/* A snapshot of a grown segment loads into a fresh one of the initial
 * size, which grows to hold it. */
START_TEST(snapshot_of_a_grown_segment_loads)
{
	char conf[512];
	snprintf(conf, sizeof conf, "%s\n[persistence]\nsnapshot = /tmp/shmmap-grow-snap-%d\n",
		 conf_for("128M", "reject"), (int)getpid());
	int rc = tu_coord_start(&co, "2M", conf);
	CK_MSG(rc == 0, "shmmapd did not start: see %s", co.log);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "snap");
	for (uint64_t i = 0; i < 1000; i++) /* 30 MB */
		CK_EQ(put_i(sm, m, i, 30000, 11), 0);
	shmmap_detach(sm);
	char out[1024], err[1024];
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "save", NULL), 0);
	CK_EQ(tu_coord_stop(&co), 0);
	CK_EQ(shm_unlink(co.shm), 0); /* start from the snapshot alone */
	CK_MSG(tu_coord_restart(&co) == 0, "restart: see %s", co.log);
	sm = tu_attach(co.sock);
	m = tu_open(sm, "snap");
	for (uint64_t i = 0; i < 1000; i++)
		CK_EQ(get_i(sm, m, i, 30000, 11), 0);
	CK(shmmap__seg_cur_size(&sm->seg, &sm->geom) > 30 * MIB);
	shmmap_detach(sm);
	expect_check_clean();
	char path[64];
	snprintf(path, sizeof path, "/tmp/shmmap-grow-snap-%d", (int)getpid());
	unlink(path);
}
END_TEST

/* ---- no room in /dev/shm ---- */

/*
 * shmmapd in a mount namespace of its own whose /dev/shm is a 24M tmpfs:
 * the segment grows until that is full, the coordinator says so once (with
 * the numbers), and the policy (reject) applies: -ENOSPC, nothing lost.
 */
START_TEST(no_room_in_dev_shm_is_logged_once)
{
	char out[8192], err[4096];
	if (geteuid() != 0 ||
	    tu_sh("unshare -m --propagation private /bin/sh -c "
		  "'mount -t tmpfs -o size=1m tmpfs /dev/shm'", out, sizeof out, err, sizeof err) != 0)
		TU_SKIP("cannot give shmmapd a small /dev/shm (needs root and unshare -m)");
	char wrap[] = "/tmp/shmmapd-small-shm-XXXXXX";
	int fd = mkstemp(wrap);
	CK(fd >= 0);
	const char *plain0 = getenv("SHMMAPD");
	CK(plain0 != NULL);
	char plain[512];
	snprintf(plain, sizeof plain, "%s", plain0);
	dprintf(fd, "#!/bin/sh\nexec unshare -m --propagation private /bin/sh -c "
		    "'mount -t tmpfs -o size=24m tmpfs /dev/shm && exec \"$0\" \"$@\"' '%s' \"$@\"\n",
		plain);
	CK_EQ(fchmod(fd, 0755), 0);
	close(fd);
	setenv("SHMMAPD", wrap, 1);
	int rc = tu_coord_start(&co, "4M", conf_for("64M", "reject"));
	setenv("SHMMAPD", plain, 1);
	unlink(wrap);
	CK_MSG(rc == 0, "shmmapd with a 24M /dev/shm did not start: see %s", co.log);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "full");
	uint64_t n = 0;
	while (n < 3000 && (rc = put_i(sm, m, n, 20000, 10)) == 0)
		n++;
	CK_MSG(rc == -ENOSPC, "put %llu: %s", (unsigned long long)n, shmmap_strerror(rc));
	/* It grew into all but the last step of the 24M. */
	uint32_t bs = shmmap__class_size((uint32_t)shmmap__class_of(NULL, NULL, 32 + 8 + 20000));
	CK_MSG(n / (SEG_PAGE / bs) * SEG_PAGE > 20 * MIB, "only %llu values stored",
	       (unsigned long long)n);
	CK(shmmap__seg_cur_size(&sm->seg, &sm->geom) <= 24 * MIB);
	for (int k = 0; k < 20; k++)
		CK_EQ(put_i(sm, m, 100000 + (uint64_t)k, 20000, 10), -ENOSPC);
	for (uint64_t i = 0; i < n; i++)
		CK_EQ(get_i(sm, m, i, 20000, 10), 0);
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "status", NULL), 0);
	CK_MSG(strstr(out, "growth waits for room in /dev/shm") != NULL, "%s", out);
	expect_check_clean();
	shmmap_detach(sm);
	CK_EQ(tu_coord_stop(&co), 0);
	char *log = tu_slurp(co.log, NULL);
	CK(log != NULL);
	int said = 0;
	for (const char *p = log; (p = strstr(p, "no room in /dev/shm to grow")) != NULL; p++)
		said++;
	CK_MSG(said == 1, "the coordinator said %d times that /dev/shm is full:\n%s", said, log);
	CK_MSG(strstr(log, "MiB free there") != NULL, "%s", log);
	free(log);
}
END_TEST

static Suite *grow_suite(void)
{
	Suite *s = suite_create("grow");
	TCase *tc = tcase_create("grow");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, grows_to_hold_400mb_with_reject);
	tcase_add_test(tc, at_max_size_the_policy_applies);
	tcase_add_test(tc, evict_policy_grows_before_evicting);
	tcase_add_test(tc, growth_request_runs_the_wait_hook);
	tcase_add_test(tc, ctl_grow);
	tcase_add_test(tc, many_processes_grow_at_once);
	tcase_add_test(tc, a_put_does_not_wait_for_a_step_ahead);
	tcase_add_test(tc, ctl_grow_does_not_hold_up_the_others);
	tcase_add_test(tc, ctl_grow_waits_for_a_long_grow);
	tcase_add_test(tc, relocated_base_follows_growth);
	tcase_add_test(tc, restart_adopts_the_slack_of_a_killed_step);
	tcase_add_test(tc, coordinator_killed_while_growing);
	tcase_add_test(tc, client_killed_while_following_growth);
	tcase_add_test(tc, size_beyond_the_reservation_is_refused);
	tcase_add_test(tc, snapshot_of_a_grown_segment_loads);
	tcase_add_test(tc, no_room_in_dev_shm_is_logged_once);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(grow_suite());
}
