/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_cache.c - shmmap as a cache, end to end with a real coordinator and
 * forked workers: eviction under a put stream several times larger than the
 * segment, the reject policy, memory freed by one size reused by another,
 * compare-and-swap races between processes, iteration while writers write,
 * exact statistics, background reclaim of expired entries, flush and drop,
 * and a map created where a dropped one was starting with counters of its own.
 */
#include <check.h>
#include <errno.h>
#include <sched.h>
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

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

#define attach() tu_attach(co.sock)
#define open_map(sm, name) tu_open((sm), (name))

static void fill_value(char *v, size_t n, unsigned i)
{
	for (size_t j = 0; j < n; j++)
		v[j] = (char)('a' + (i + j) % 26);
}

/* ---- eviction ---- */

START_TEST(evict_stream_keeps_recent)
{
	ck_assert_int_eq(tu_coord_start(&co, "4M", "[map]\nbuckets = 4096\nstripes = 64\n"), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cache");
	enum { N = 20000, VAL = 1000, RECENT = 300 };
	static char v[VAL], buf[VAL];
	char k[32];
	/* 20 MB of puts into a 4 MB segment: every put succeeds.  Keys of one
	 * length: entries of one size class.  (With "key-%u" the stream
	 * crossed from the 1032-byte class to the next at key 10000, a size
	 * shift the newest keys do not always survive when it comes this fast:
	 * see the README, bench-cache, "The newest keys after a fast size
	 * shift".) */
	for (unsigned i = 0; i < N; i++) {
		int kn = snprintf(k, sizeof k, "key-%05u", i);
		fill_value(v, VAL, i);
		int rc = shmmap_put(sm, m, k, (size_t)kn, v, VAL, 0, 0);
		CK_MSG(rc == 0, "put %u of a stream 5x the segment: %s", i, shmmap_strerror(rc));
	}
	/* The most recent keys are all there, intact. */
	for (unsigned i = N - RECENT; i < N; i++) {
		int kn = snprintf(k, sizeof k, "key-%05u", i);
		size_t n;
		int rc = shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &n);
		fill_value(v, VAL, i);
		CK_MSG(rc == 0 && n == VAL && memcmp(buf, v, VAL) == 0,
		       "recent key %u evicted or damaged (rc %d)", i, rc);
	}
	struct shmmap_stats st;
	ck_assert_int_eq(shmmap_stats(sm, m, &st), 0);
	CK_MSG(st.evictions > N / 2, "only %llu evictions", (unsigned long long)st.evictions);
	CK_EQ(st.puts, N);
	CK_EQ(st.entries + st.evictions, N);
	/* A value several times larger than any evicted one fits too. */
	static char big[200 * 1024];
	fill_value(big, sizeof big, 7);
	ck_assert_int_eq(shmmap_put(sm, m, "big", 3, big, sizeof big, 0, 0), 0);
	shmmap_detach(sm);
}
END_TEST

/* Put keys fmt(i) for i < n with values of vlen(i) bytes, every put
 * succeeding; then return how many of the newest keys are missing (the
 * first in *first), checking that those present are intact. */
static unsigned stream_missing(shmmap *sm, shmmap_map m, const char *fmt, unsigned n,
			       unsigned newest, size_t (*vlen)(unsigned), unsigned *first)
{
	static char v[4096], buf[4096];
	char k[32];
	for (unsigned i = 0; i < n; i++) {
		int kn = snprintf(k, sizeof k, fmt, i);
		fill_value(v, vlen(i), i);
		int rc = shmmap_put(sm, m, k, (size_t)kn, v, vlen(i), 0, 0);
		CK_MSG(rc == 0, "put %u: %s", i, shmmap_strerror(rc));
	}
	unsigned missing = 0;
	*first = 0;
	for (unsigned i = n - newest; i < n; i++) {
		size_t got, vl = vlen(i);
		int kn = snprintf(k, sizeof k, fmt, i);
		int rc = shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &got);
		fill_value(v, vl, i);
		if (rc != 0 && !missing++)
			*first = i;
		CK_MSG(rc != 0 || (got == vl && memcmp(buf, v, vl) == 0), "key %u damaged", i);
	}
	return missing;
}

static size_t vlen_1000(unsigned i)
{
	(void)i;
	return 1000;
}

static size_t vlen_growing(unsigned i)
{
	return 300 + i / 16; /* 300 .. 1800 B over 24000 keys: about 20 classes */
}

/* A size shift as fast as one writer can make it: keys "key-%u", 1000 B
 * values, so the stream crosses from the 1032-byte class to the next at key
 * 10000, when the first class holds the whole 4 MB segment, and the new
 * class must take its pages from it while it is written at a few
 * microseconds a put: ten thousand puts, the new class's every entry,
 * within a few ms.  The newest thousand keys all stay (issue 13: at most
 * 1% missing).  Run several times: the losses this guards against came
 * from how the shift fell across the clock's ticks, one run in five. */
START_TEST(evict_fast_shift_keeps_newest)
{
	enum { N = 20000, NEWEST = 1000, RUNS = 4 };
	for (unsigned run = 0; run < RUNS; run++) {
		if (run)
			tu_coord_cleanup(&co);
		ck_assert_int_eq(tu_coord_start(&co, "4M", "[map]\nbuckets = 4096\n"), 0);
		shmmap *sm = attach();
		shmmap_map m = open_map(sm, "cache");
		unsigned first, missing = stream_missing(sm, m, "key-%u", N, NEWEST, vlen_1000, &first);
		CK_MSG(missing <= NEWEST / 100, "run %u: %u of the newest %d keys evicted (the first: %u)",
		       run, missing, NEWEST, first);
		shmmap_detach(sm);
	}
}
END_TEST

/* A stream whose values grow, so that its entries cross a size class
 * every few thousand puts and pages keep changing hands: the newest
 * entries always land in pages a class took lately, which may lie anywhere
 * in page order (ahead of the class's hand too).  Such a page is passed
 * over until the hand has gone round once (evict.c: the page's turn), so
 * the newest keys all stay.  No reads, one writer: the same every run. */
START_TEST(evict_growing_stream_keeps_newest)
{
	ck_assert_int_eq(tu_coord_start(&co, "4M", "[map]\nbuckets = 4096\nstripes = 64\n"), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cache");
	enum { N = 24000, NEWEST = 400 };
	unsigned first, missing = stream_missing(sm, m, "key-%05u", N, NEWEST, vlen_growing, &first);
	struct shmmap_stats st;
	ck_assert_int_eq(shmmap_stats(sm, m, &st), 0);
	CK_MSG(missing == 0, "%u of the newest %d keys evicted (the first: %u; %llu entries left)",
	       missing, NEWEST, first, (unsigned long long)st.entries);
	/* NEWEST is well under a quarter of what the segment holds. */
	CK_MSG(st.entries > 4 * NEWEST, "only %llu entries", (unsigned long long)st.entries);
	shmmap_detach(sm);
}
END_TEST

/* A put that could never fit, even in an empty segment, fails at once
 * (-E2BIG) and evicts nothing. */
START_TEST(too_big_fails_before_evicting)
{
	ck_assert_int_eq(tu_coord_start(&co, "4M", "[map]\nvalue_max = 8M\n"), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cache");
	char k[32], v[100];
	for (unsigned i = 0; i < 500; i++) {
		int kn = snprintf(k, sizeof k, "key-%u", i);
		fill_value(v, sizeof v, i);
		CK_EQ(shmmap_put(sm, m, k, (size_t)kn, v, sizeof v, 0, 0), 0);
	}
	static char huge[5 << 20];
	CK_EQ(shmmap_put(sm, m, "huge", 4, huge, sizeof huge, 0, 0), -E2BIG);
	CK_EQ(shmmap_put(sm, m, "huge", 4, huge, 4 << 20, 0, 0), -E2BIG);
	struct shmmap_stats st;
	ck_assert_int_eq(shmmap_stats(sm, m, &st), 0);
	CK_EQ(st.evictions, 0);
	CK_EQ(st.entries, 500);
	/* One that fits once others go still gets in. */
	CK_EQ(shmmap_put(sm, m, "big", 3, huge, 3 << 20, 0, 0), 0);
	shmmap_detach(sm);
}
END_TEST

/* With a single bucket every entry shares one chain: eviction must still
 * be able to free any of them, so every put that fits succeeds, whatever
 * the sizes (small entries of other size classes make room for big ones). */
START_TEST(one_bucket_evicts_anything)
{
	/* max_buckets = 1: the map must stay one bucket (maps grow). */
	ck_assert_int_eq(tu_coord_start(&co, "4M",
					"[map]\nbuckets = 1\nmax_buckets = 1\nstripes = 1\n"
					"value_max = 1M\n"),
			 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cache");
	static char v[900 * 1024];
	char k[32];
	unsigned i = 0;
	/* Fill with small entries, far more than 4 rounds of 64 per visit. */
	for (; i < 20000; i++) {
		int kn = snprintf(k, sizeof k, "small-%u", i);
		fill_value(v, 40, i);
		int rc = shmmap_put(sm, m, k, (size_t)kn, v, 40, 0, 0);
		CK_MSG(rc == 0, "small put %u: %s", i, shmmap_strerror(rc));
	}
	/* Then sizes that need whole runs of pages. */
	static const size_t sizes[] = {200 * 1024, 900 * 1024, 3000, 500 * 1024, 64 * 1024, 900 * 1024};
	for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++, i++) {
		int kn = snprintf(k, sizeof k, "big-%u", i);
		fill_value(v, sizes[j], i);
		int rc = shmmap_put(sm, m, k, (size_t)kn, v, sizes[j], 0, 0);
		CK_MSG(rc == 0, "put of %zu bytes into one bucket: %s", sizes[j], shmmap_strerror(rc));
		size_t n;
		static char buf[900 * 1024];
		CK_EQ(shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &n), 0);
		CK_MSG(n == sizes[j] && memcmp(buf, v, n) == 0, "big-%u damaged", i);
	}
	shmmap_detach(sm);
}
END_TEST

/* A get marks its key's bucket: a key read again and again outlives keys
 * put long after it (approximately least recently used, not FIFO).  Every
 * key has the same length, so every entry is of one size class: the hot
 * one is not in a class the workload leaves (whose pages go over to
 * another class, entries and all). */
START_TEST(evict_spares_hot_keys)
{
	ck_assert_int_eq(tu_coord_start(&co, "4M", "[map]\nbuckets = 4096\nstripes = 64\n"), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cache");
	static char v[1000], buf[1000];
	fill_value(v, sizeof v, 1);
	ck_assert_int_eq(shmmap_put(sm, m, "hot-000000", 10, v, sizeof v, 0, 0), 0);
	char k[32];
	size_t n;
	for (unsigned i = 0; i < 20000; i++) {
		int kn = snprintf(k, sizeof k, "cold-%05u", i);
		ck_assert_int_eq(kn, 10);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)kn, v, sizeof v, 0, 0), 0);
		if (i % 50 == 0)
			CK_MSG(shmmap_get(sm, m, "hot-000000", 10, buf, sizeof buf, &n) == 0,
			       "the hot key was evicted after %u puts", i);
	}
	ck_assert_int_eq(shmmap_get(sm, m, "cold-00000", 10, buf, sizeof buf, &n), -ENOENT);
	shmmap_detach(sm);
}
END_TEST

START_TEST(reject_loses_nothing)
{
	ck_assert_int_eq(tu_coord_start(&co, "4M", "[map]\npolicy = reject\n"), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cache");
	static char v[1000], buf[1000];
	char k[32];
	unsigned i;
	int rc = 0;
	for (i = 0; i < 20000; i++) {
		int kn = snprintf(k, sizeof k, "key-%u", i);
		fill_value(v, sizeof v, i);
		rc = shmmap_put(sm, m, k, (size_t)kn, v, sizeof v, 0, 0);
		if (rc)
			break;
	}
	CK_EQ(rc, -ENOSPC);
	ck_assert_uint_gt(i, 1000);
	for (unsigned j = 0; j < i; j++) {
		int kn = snprintf(k, sizeof k, "key-%u", j);
		size_t n;
		fill_value(v, sizeof v, j);
		CK_MSG(shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &n) == 0 &&
			       memcmp(buf, v, sizeof v) == 0,
		       "key %u lost under the reject policy", j);
	}
	struct shmmap_stats st;
	ck_assert_int_eq(shmmap_stats(sm, m, &st), 0);
	CK_EQ(st.evictions, 0);
	CK_EQ(st.entries, i);
	shmmap_detach(sm);
}
END_TEST

/* Fill with small values, delete them all, fill with large ones: the
 * memory comes back for the other size (no early -ENOSPC), both ways. */
static uint64_t fill_until_full(shmmap *sm, shmmap_map m, const char *prefix, size_t vlen,
				unsigned *count)
{
	static char v[64 * 1024];
	char k[48];
	uint64_t bytes = 0;
	unsigned i;
	for (i = 0;; i++) {
		int kn = snprintf(k, sizeof k, "%s-%u", prefix, i);
		fill_value(v, vlen, i);
		int rc = shmmap_put(sm, m, k, (size_t)kn, v, vlen, 0, 0);
		if (rc == -ENOSPC)
			break;
		CK_MSG(rc == 0, "put: %s", shmmap_strerror(rc));
		bytes += vlen;
	}
	*count = i;
	return bytes;
}

static void delete_all(shmmap *sm, shmmap_map m, const char *prefix, unsigned count)
{
	char k[48];
	for (unsigned i = 0; i < count; i++) {
		int kn = snprintf(k, sizeof k, "%s-%u", prefix, i);
		CK_EQ(shmmap_del(sm, m, k, (size_t)kn), 0);
	}
}

START_TEST(freed_memory_reused_across_sizes)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", "[map]\npolicy = reject\n"), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cache");
	unsigned ns, nl, ns2;
	uint64_t small = fill_until_full(sm, m, "small", 40, &ns);
	delete_all(sm, m, "small", ns);
	uint64_t large = fill_until_full(sm, m, "large", 20000, &nl);
	/* 40-byte values carry 32 + key bytes of overhead: large values pack
	 * the same memory far better.  What matters: at least as much. */
	CK_MSG(large >= small, "after freeing %llu bytes of small values only %llu bytes of "
	       "large ones fit", (unsigned long long)small, (unsigned long long)large);
	/* A 20000-byte value takes a block of its size class, about 23 KiB:
	 * two per 64 KiB page, and the 115 pages of heap hold some 230. */
	CK_MSG(nl >= 200, "only %u large values fit in an emptied 8M segment", nl);
	delete_all(sm, m, "large", nl);
	uint64_t small2 = fill_until_full(sm, m, "small2", 40, &ns2);
	CK_MSG(small2 * 100 >= small * 95, "small values: %llu bytes before, %llu after",
	       (unsigned long long)small, (unsigned long long)small2);
	shmmap_detach(sm);
}
END_TEST

/* ---- compare and swap ---- */

static int cas_worker(int rounds, _Atomic int *ready, int workers)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, "cas", 0, &m) < 0)
		return 20;
	/* Start together, so that the swaps really race. */
	atomic_fetch_add(ready, 1);
	while (atomic_load(ready) < workers)
		sched_yield();
	int conflicts = 0;
	for (int i = 0; i < rounds;) {
		char cur[32], next[32];
		size_t n;
		int rc = shmmap_get(sm, m, "counter", 7, cur, sizeof cur - 1, &n);
		if (rc)
			return 21;
		cur[n] = '\0';
		int nn = snprintf(next, sizeof next, "%ld", strtol(cur, NULL, 10) + 1);
		rc = shmmap_cas(sm, m, "counter", 7, cur, n, next, (size_t)nn, 0);
		if (rc == 0)
			i++;
		else if (rc == -ECANCELED)
			conflicts++;
		else
			return 22;
	}
	shmmap_detach(sm);
	return conflicts > 0 ? 0 : 23; /* 0 conflicts would mean no race was tested */
}

START_TEST(cas_races_between_processes)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "cas");
	ck_assert_int_eq(shmmap_put(sm, m, "counter", 7, "0", 1, 0, 0), 0);
	/* argument checks and the two failure outcomes */
	CK_EQ(shmmap_cas(sm, m, "counter", 7, "1", 1, "2", 1, 0), -ECANCELED);
	CK_EQ(shmmap_cas(sm, m, "absent", 6, "0", 1, "1", 1, 0), -ENOENT);
	CK_EQ(shmmap_cas(sm, m, "counter", 7, NULL, 1, "1", 1, 0), -EINVAL);
	enum { W = 4, R = 20000 };
	_Atomic int *ready = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				  -1, 0);
	ck_assert(ready != MAP_FAILED);
	pid_t p[W];
	for (int i = 0; i < W; i++) {
		p[i] = tu_fork();
		ck_assert_int_ge(p[i], 0);
		if (p[i] == 0)
			_exit(cas_worker(R, ready, W));
	}
	int with_conflicts = 0;
	for (int i = 0; i < W; i++) {
		int st = tu_waitpid(p[i], 60000);
		CK_MSG(st != -1 && WIFEXITED(st) &&
			       (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 23),
		       "cas worker %d: status %#x", i, st);
		with_conflicts += WEXITSTATUS(st) == 0;
	}
	CK_MSG(with_conflicts > 0, "no worker ever lost a race: nothing was tested");
	char buf[32];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "counter", 7, buf, sizeof buf - 1, &n), 0);
	buf[n] = '\0';
	CK_EQ(strtol(buf, NULL, 10), W * R);
	struct shmmap_stats st;
	ck_assert_int_eq(shmmap_stats(sm, m, &st), 0);
	CK_EQ(st.cas, W * R);
	munmap(ready, 4096);
	shmmap_detach(sm);
}
END_TEST

/* ---- iteration ---- */

struct seen {
	unsigned char stable[2000];
	unsigned churn_seen;
	int dup, bad;
};

static int count_entry(const void *key, size_t klen, const void *val, size_t vlen,
		       uint64_t expire_ms, void *arg)
{
	struct seen *s = arg;
	char k[64];
	(void)expire_ms;
	if (klen >= sizeof k)
		return s->bad++, 0;
	memcpy(k, key, klen);
	k[klen] = '\0';
	unsigned i;
	if (sscanf(k, "stable-%u", &i) == 1 && i < 2000) {
		if (s->stable[i]++)
			s->dup++;
		char want[32];
		int wn = snprintf(want, sizeof want, "value-%u", i);
		if (vlen != (size_t)wn || memcmp(val, want, vlen) != 0)
			s->bad++;
	} else if (strncmp(k, "churn-", 6) == 0) {
		s->churn_seen++;
	} else {
		s->bad++;
	}
	return 0;
}

static int stop_at_ten(const void *key, size_t klen, const void *val, size_t vlen,
		       uint64_t expire_ms, void *arg)
{
	(void)key, (void)klen, (void)val, (void)vlen, (void)expire_ms;
	return ++*(int *)arg == 10 ? 42 : 0;
}

START_TEST(foreach_during_writes)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nbuckets = 1024\nstripes = 16\n"), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "iter");
	char k[32], v[32];
	for (unsigned i = 0; i < 2000; i++) {
		int kn = snprintf(k, sizeof k, "stable-%u", i);
		int vn = snprintf(v, sizeof v, "value-%u", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)kn, v, (size_t)vn, 0, 0), 0);
	}
	_Atomic int *stop = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				 -1, 0);
	ck_assert(stop != MAP_FAILED);
	pid_t w = tu_fork();
	ck_assert_int_ge(w, 0);
	if (w == 0) {
		/* Churn: keys added and deleted all the time, in the same buckets. */
		shmmap *wsm;
		shmmap_map wm;
		if (shmmap_attach(co.sock, &wsm) < 0 || shmmap_open(wsm, "iter", 0, &wm) < 0)
			_exit(20);
		for (unsigned i = 0; !atomic_load(stop); i++) {
			char ck[32];
			int kn = snprintf(ck, sizeof ck, "churn-%u", i % 3000);
			if (i % 2)
				shmmap_del(wsm, wm, ck, (size_t)kn);
			else if (shmmap_put(wsm, wm, ck, (size_t)kn, "x", 1, 0, 0) < 0)
				_exit(21);
		}
		shmmap_detach(wsm);
		_exit(0);
	}
	for (int round = 0; round < 20; round++) {
		static struct seen s;
		memset(&s, 0, sizeof s);
		ck_assert_int_eq(shmmap_foreach(sm, m, count_entry, &s), 0);
		CK_EQ(s.dup, 0);
		CK_EQ(s.bad, 0);
		for (unsigned i = 0; i < 2000; i++)
			CK_MSG(s.stable[i] == 1, "round %d: stable-%u seen %u times", round, i,
			       s.stable[i]);
	}
	atomic_store(stop, 1);
	int st = tu_waitpid(w, 10000);
	CK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer: %#x", st);
	/* Stopping early returns the callback's value. */
	int calls = 0;
	CK_EQ(shmmap_foreach(sm, m, stop_at_ten, &calls), 42);
	CK_EQ(calls, 10);
	CK_EQ(shmmap_foreach(sm, m, NULL, NULL), -EINVAL);
	munmap(stop, 4096);
	shmmap_detach(sm);
}
END_TEST

/* ---- statistics ---- */

START_TEST(stats_count_exactly)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "stats");
	char k[32];
	size_t n;
	char buf[16];
	for (int i = 0; i < 50; i++) {
		int kn = snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)kn, "v", 1, 0, 0), 0);
	}
	for (int i = 0; i < 80; i++) { /* 50 hits, 30 misses */
		int kn = snprintf(k, sizeof k, "k%d", i);
		shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &n);
	}
	for (int i = 0; i < 7; i++) {
		int kn = snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_del(sm, m, k, (size_t)kn), 0);
	}
	CK_EQ(shmmap_del(sm, m, "k0", 2), -ENOENT);
	ck_assert_int_eq(shmmap_incr(sm, m, "n", 1, 5, NULL), 0);
	ck_assert_int_eq(shmmap_cas(sm, m, "k10", 3, "v", 1, "w", 1, 0), 0);
	CK_EQ(shmmap_cas(sm, m, "k10", 3, "v", 1, "w", 1, 0), -ECANCELED);
	/* Another process's operations are counted too. */
	pid_t p = tu_fork();
	ck_assert_int_ge(p, 0);
	if (p == 0) {
		shmmap *s2;
		shmmap_map m2;
		if (shmmap_attach(co.sock, &s2) < 0 || shmmap_open(s2, "stats", 0, &m2) < 0)
			_exit(20);
		char b[16];
		size_t l;
		_exit(shmmap_get(s2, m2, "k20", 3, b, sizeof b, &l) == 0 ? 0 : 21);
	}
	int st = tu_waitpid(p, 10000);
	ck_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	struct shmmap_stats s;
	ck_assert_int_eq(shmmap_stats(sm, m, &s), 0);
	CK_EQ(s.puts, 50);
	CK_EQ(s.hits, 51);
	CK_EQ(s.misses, 30);
	CK_EQ(s.dels, 7);
	CK_EQ(s.incrs, 1);
	CK_EQ(s.cas, 1);
	CK_EQ(s.entries, 50 - 7 + 1);
	/* k7..k9: 3 x (2 + 1); k10..k49: 40 x (3 + 1); n: 1 + 1 */
	CK_EQ(s.bytes, 3 * 3 + 40 * 4 + 2);
	CK_EQ(s.evictions, 0);
	CK_EQ(s.expirations, 0);
	CK_EQ(shmmap_stats(sm, m, NULL), -EINVAL);
	shmmap_detach(sm);
}
END_TEST

/* ---- expiry reclaimed in the background ---- */

struct gone {
	shmmap *sm;
	shmmap_map m;
};

static bool all_reclaimed(void *arg)
{
	struct gone *g = arg;
	struct shmmap_stats s;
	return shmmap_stats(g->sm, g->m, &s) == 0 && s.entries == 1 && s.expirations == 500;
}

START_TEST(ttl_reclaimed_in_background)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "ttl");
	char k[32];
	for (int i = 0; i < 500; i++) {
		int kn = snprintf(k, sizeof k, "t%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)kn, "v", 1, 1, 0), 0);
	}
	ck_assert_int_eq(shmmap_put(sm, m, "forever", 7, "v", 1, 0, 0), 0);
	/* Nobody reads them: the coordinator removes them once expired. */
	struct gone g = {sm, m};
	CK_MSG(tu_wait(all_reclaimed, &g, 10000), "expired entries not reclaimed");
	char buf[4];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "forever", 7, buf, sizeof buf, &n), 0);
	shmmap_detach(sm);
}
END_TEST

/* A large map of short-lived keys (a session store, a rate limiter's
 * per-window counters): its expired entries must come back within seconds
 * of expiring, not after a pass over the whole table at 2048 buckets per
 * 100 ms (160,000 keys grow the table to 256K buckets or more: 12.8 s and
 * up, during which a full segment evicted live keys instead). */
#define MANY_TTL 160000

static bool many_reclaimed(void *arg)
{
	struct gone *g = arg;
	struct shmmap_stats s;
	return shmmap_stats(g->sm, g->m, &s) == 0 && s.entries == 1 &&
	       s.expirations == MANY_TTL;
}

START_TEST(ttl_reclaimed_promptly_in_a_large_map)
{
	ck_assert_int_eq(tu_coord_start(&co, "32M", NULL), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "ttl");
	char k[32];
	ck_assert_int_eq(shmmap_put(sm, m, "forever", 7, "v", 1, 0, 0), 0);
	long long t0 = tu_mono_ms();
	for (int i = 0; i < MANY_TTL; i++) {
		int kn = snprintf(k, sizeof k, "t%d", i);
		CK_EQ(shmmap_put(sm, m, k, (size_t)kn, "v", 1, 1, 0), 0);
	}
	long long written = tu_mono_ms() - t0;
	struct gone g = {sm, m};
	/* All expire by 1 s after the last put (ttl 1 s): allow 4 s more. */
	bool ok = tu_wait(many_reclaimed, &g, (int)(written + 5000));
	struct shmmap_stats s;
	ck_assert_int_eq(shmmap_stats(sm, m, &s), 0);
	CK_MSG(ok, "%llu of %d expired entries reclaimed %lld ms after the puts (took %lld ms)",
	       (unsigned long long)s.expirations, MANY_TTL, tu_mono_ms() - t0 - written, written);
	char buf[4];
	size_t n;
	ck_assert_int_eq(shmmap_get(sm, m, "forever", 7, buf, sizeof buf, &n), 0);
	shmmap_detach(sm);
}
END_TEST

/* ---- flush and drop ---- */

START_TEST(flush_and_drop)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	shmmap *sm = attach();
	shmmap_map a = open_map(sm, "a"), b = open_map(sm, "b");
	char k[32], buf[8];
	size_t n;
	for (int i = 0; i < 100; i++) {
		int kn = snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, a, k, (size_t)kn, "v", 1, 0, 0), 0);
		ck_assert_int_eq(shmmap_put(sm, b, k, (size_t)kn, "v", 1, 0, 0), 0);
	}
	ck_assert_int_eq(shmmap_flush(sm, a), 0);
	struct shmmap_stats s;
	ck_assert_int_eq(shmmap_stats(sm, a, &s), 0);
	CK_EQ(s.entries, 0);
	CK_EQ(shmmap_get(sm, a, "k1", 2, buf, sizeof buf, &n), -ENOENT);
	CK_EQ(shmmap_get(sm, b, "k1", 2, buf, sizeof buf, &n), 0); /* the other map is untouched */
	ck_assert_int_eq(shmmap_put(sm, a, "new", 3, "v", 1, 0, 0), 0); /* handle still good */
	ck_assert_int_eq(shmmap_drop(sm, "b"), 0);
	CK_EQ(shmmap_get(sm, b, "k1", 2, buf, sizeof buf, &n), -ESTALE);
	CK_EQ(shmmap_put(sm, b, "k1", 2, "v", 1, 0, 0), -ESTALE);
	CK_EQ(shmmap_flush(sm, b), -ESTALE);
	CK_EQ(shmmap_drop(sm, "b"), -ENOENT);
	CK_EQ(shmmap_drop(sm, ""), -EINVAL);
	/* A new map of the same name does not revive old handles. */
	shmmap_map b2 = open_map(sm, "b");
	CK_EQ(shmmap_get(sm, b2, "k1", 2, buf, sizeof buf, &n), -ENOENT);
	CK_EQ(shmmap_get(sm, b, "k1", 2, buf, sizeof buf, &n), -ESTALE);
	shmmap_detach(sm);
}
END_TEST

/* ---- a new map's counters ---- */

struct waits {
	struct seg_stripe *st;
	uint64_t before;
};

static bool lock_waited(void *arg)
{
	struct waits *w = arg;
	return atomic_load(&w->st->lock_waits) > w->before;
}

static bool expiration_counted(void *arg)
{
	struct gone *g = arg;
	struct shmmap_stats s;
	return shmmap_stats(g->sm, g->m, &s) == 0 && s.expirations > 0;
}

/* A map created where a dropped map was (same geometry: its table is
 * reused) starts with counters of its own, not the dropped map's
 * evictions, expirations and lock waits. */
START_TEST(new_map_starts_with_zero_counters)
{
	ck_assert_int_eq(tu_coord_start(&co, "4M", NULL), 0);
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "old");
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(sm, m, &v), 0);
	uint32_t idx = v->idx;
	/* Evictions: a stream of values larger than the segment. */
	char k[32], val[1024];
	struct shmmap_stats s = {0};
	fill_value(val, sizeof val, 7);
	for (int i = 0; i < 40000 && !s.evictions; i++) {
		int kn = snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)kn, val, sizeof val, 0, 0), 0);
		if (i % 256 == 255)
			ck_assert_int_eq(shmmap_stats(sm, m, &s), 0);
	}
	CK_MSG(s.evictions > 0, "no eviction in a stream of 40 MB into 4 MB");
	/* An expiration: the coordinator's reclaim removes the entry. */
	ck_assert_int_eq(shmmap_put(sm, m, "t", 1, "v", 1, 1, 0), 0);
	struct gone g = {sm, m};
	CK_MSG(tu_wait(expiration_counted, &g, 10000), "expired entry not reclaimed");
	/* A lock wait: a child's put waits for the stripe lock held here. */
	struct seg_stripe *st =
		&v->stripes[shmmap__hash(&sm->geom, "w", 1) & (v->nstripes - 1)];
	struct lock_ctx lk = {.s = &sm->seg, .g = &sm->geom, .owner = sm->slot + 1};
	ck_assert_int_eq(shmmap__lock(&st->lock, &lk, NULL), 0);
	struct waits w = {st, atomic_load(&st->lock_waits)};
	pid_t p = tu_fork();
	ck_assert_int_ge(p, 0);
	if (p == 0) {
		shmmap *s2;
		shmmap_map m2;
		if (shmmap_attach(co.sock, &s2) < 0 || shmmap_open(s2, "old", 0, &m2) < 0)
			_exit(20);
		_exit(shmmap_put(s2, m2, "w", 1, "v", 1, 0, 0) == 0 ? 0 : 21);
	}
	bool waited = tu_wait(lock_waited, &w, 10000);
	shmmap__unlock(&st->lock);
	CK_MSG(waited, "the child's put did not wait for the lock");
	int ws = tu_waitpid(p, 10000);
	ck_assert(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	ck_assert_int_eq(shmmap_stats(sm, m, &s), 0);
	ck_assert(s.evictions > 0 && s.expirations > 0 && s.lock_waits > 0);

	ck_assert_int_eq(shmmap_drop(sm, "old"), 0);
	shmmap_map n = open_map(sm, "new");
	ck_assert_int_eq(shmmap__resolve(sm, n, &v), 0);
	CK_EQ(v->idx, idx); /* the dropped map's entry and table */
	ck_assert_int_eq(shmmap_stats(sm, n, &s), 0);
	CK_EQ(s.entries, 0);
	CK_EQ(s.bytes, 0);
	CK_EQ(s.puts, 0);
	CK_EQ(s.hits, 0);
	CK_EQ(s.evictions, 0);
	CK_EQ(s.expirations, 0);
	CK_EQ(s.lock_waits, 0);
	shmmap_detach(sm);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cache");
	TCase *tc = tcase_create("cache");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, evict_stream_keeps_recent);
	tcase_add_test(tc, evict_spares_hot_keys);
	tcase_add_test(tc, too_big_fails_before_evicting);
	tcase_add_test(tc, one_bucket_evicts_anything);
	tcase_add_test(tc, reject_loses_nothing);
	tcase_add_test(tc, freed_memory_reused_across_sizes);
	tcase_add_test(tc, cas_races_between_processes);
	tcase_add_test(tc, foreach_during_writes);
	tcase_add_test(tc, stats_count_exactly);
	tcase_add_test(tc, ttl_reclaimed_in_background);
	tcase_add_test(tc, ttl_reclaimed_promptly_in_a_large_map);
	tcase_add_test(tc, flush_and_drop);
	tcase_add_test(tc, new_map_starts_with_zero_counters);
	suite_add_tcase(s, tc);
	/* Its own case, so that it can be run alone, many times
	 * (CK_RUN_CASE=shift). */
	TCase *sh = tcase_create("shift");
	tcase_add_checked_fixture(sh, NULL, teardown);
	tcase_set_timeout(sh, 120);
	tcase_add_test(sh, evict_fast_shift_keeps_newest);
	tcase_add_test(sh, evict_growing_stream_keeps_newest);
	suite_add_tcase(s, sh);
	return s;
}

int main(void)
{
	return tu_run_suite(suite());
}
