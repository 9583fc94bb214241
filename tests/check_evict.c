/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_evict.c - the mechanisms of evict.c end to end, with a real
 * coordinator on a segment that cannot grow and forked processes:
 *   - size shifts in both directions: pages follow the workload (handed
 *     from one size class to another), the newest keys stay, the segment
 *     stays mostly live data;
 *   - handovers while writers alternate small and large values and readers
 *     read: every value read is one that was written for its key, and
 *     shmmapctl check finds nothing wrong afterwards;
 *   - fairness across maps: a full segment does not make another evict
 *     map's puts fail, a reject map's puts evict evict maps' entries, a
 *     reject map's entries are never evicted, and a reject map that holds
 *     everything gets -ENOSPC without losing anything;
 *   - values larger than a page after the heap is fragmented by small ones
 *     (a window of pages emptied for each);
 *   - a get marks its entry used: keys read now and then outlive many
 *     times the cache's worth of writes, unread keys do not;
 *   - probation: keys written and never read leave before keys that were
 *     read once, while the newest keys stay;
 *   - pages handed over keep their read entries (moved within their class),
 *     hot keys of a small map stay next to a churning cache of large values,
 *     and an incr counts as a read;
 *   - a map opened in a full segment gets room for its table.
 * Every value's bytes derive from its key number and version (mkval), so a
 * torn value or another key's value never passes for the right one.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmmap.h"
#include "internal.h"
#include "testutil.h"

static struct tu_coord co;

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

#define SEG_BYTES (16u << 20)
#define VAL_MAX (1024u * 1024)

/* ---- values that say whose they are ---- */

static uint64_t mix(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

/* The value of key number key at version ver, n bytes: the key and the
 * version (when n >= 8), then bytes that depend on both and the position. */
static void mkval(unsigned char *v, size_t n, uint32_t key, uint32_t ver)
{
	size_t j = 0;
	if (n >= 8) {
		memcpy(v, &key, 4);
		memcpy(v + 4, &ver, 4);
		j = 8;
	}
	uint64_t seed = mix((uint64_t)key << 32 | ver), x = 0;
	for (; j < n; j++) {
		if (j % 8 == 0)
			x = mix(seed ^ j);
		v[j] = (unsigned char)(x >> (j % 8) * 8);
	}
}

static bool val_ok(const unsigned char *v, size_t n, uint32_t key, uint32_t ver)
{
	static unsigned char want[VAL_MAX];
	if (n > sizeof want)
		return false;
	mkval(want, n, key, ver);
	return memcmp(v, want, n) == 0;
}

static int keyname(char *k, size_t cap, const char *prefix, uint32_t i)
{
	return snprintf(k, cap, "%s%" PRIu32, prefix, i);
}

static int put_kv(shmmap *sm, shmmap_map m, const char *prefix, uint32_t i, size_t n,
		  uint32_t ver)
{
	static unsigned char v[VAL_MAX];
	char k[32];
	int kn = keyname(k, sizeof k, prefix, i);
	mkval(v, n, i, ver);
	return shmmap_put(sm, m, k, (size_t)kn, v, n, 0, 0);
}

/* 1 if key prefix<i> holds its value of n bytes at version ver, 0 if it is
 * absent; fails the test if it holds anything else. */
static int present(shmmap *sm, shmmap_map m, const char *prefix, uint32_t i, size_t n,
		   uint32_t ver)
{
	static unsigned char buf[VAL_MAX];
	char k[32];
	int kn = keyname(k, sizeof k, prefix, i);
	size_t got = 0;
	int rc = shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &got);
	if (rc == -ENOENT)
		return 0;
	CK_MSG(rc == 0, "get %s: %s", k, shmmap_strerror(rc));
	CK_MSG(got == n && val_ok(buf, got, i, ver), "%s holds a wrong value (%zu bytes, want %zu)",
	       k, got, n);
	return 1;
}

static struct shmmap_stats stats_of(shmmap *sm, shmmap_map m)
{
	struct shmmap_stats st;
	int rc = shmmap_stats(sm, m, &st);
	CK_MSG(rc == 0, "stats: %s", shmmap_strerror(rc));
	return st;
}

static shmmap_map open_policy(shmmap *sm, const char *name, uint32_t policy)
{
	struct shmmap_map_opts o = {.size = sizeof o, .policy = policy};
	shmmap_map m;
	int rc = shmmap_open_opts(sm, name, SHMMAP_CREATE, &o, &m);
	CK_MSG(rc == 0, "open %s: %s", name, shmmap_strerror(rc));
	return m;
}

/* Put prefix<from..> values of n bytes (version 1) until the map has
 * evicted something: the segment is full.  Returns the next key number. */
static uint32_t fill_until_evicting(shmmap *sm, shmmap_map m, const char *prefix, uint32_t from,
				    size_t n)
{
	uint32_t i = from;
	for (;; i++) {
		int rc = put_kv(sm, m, prefix, i, n, 1);
		CK_MSG(rc == 0, "filling put %s%u: %s", prefix, i, shmmap_strerror(rc));
		if (i % 512 == 0 && stats_of(sm, m).evictions > 0)
			break;
		CK_MSG(i - from < 4000000u, "no eviction after %u puts", i - from);
	}
	return i + 1;
}

/* ---- shmmapctl stats --json (the segment's, no map named) ---- */

static char ctl_out[1 << 16], ctl_err[4096];

static const char *seg_stats_json(void)
{
	int st = tu_ctl(co.sock, ctl_out, sizeof ctl_out, ctl_err, sizeof ctl_err, "--json",
			"stats", NULL);
	CK_MSG(st == 0, "shmmapctl stats exited %d: %s", st, ctl_err);
	return ctl_out;
}

/* The number after "name": at or after p, or fail the test. */
static uint64_t json_num(const char *p, const char *name)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", name);
	const char *q = strstr(p, pat);
	CK_MSG(q != NULL, "no %s in %s", pat, p);
	return strtoull(q + strlen(pat), NULL, 10);
}

static uint64_t handovers(void)
{
	return json_num(seg_stats_json(), "handovers");
}

/* Of the size classes, the one that owns the most pages: its
 * block size and the pages handed to it. */
static void biggest_class(uint32_t *size, uint64_t *pages_in)
{
	const char *p = strstr(seg_stats_json(), "\"classes\":[");
	CK_MSG(p != NULL, "no classes in %s", ctl_out);
	uint64_t best = 0;
	*size = 0;
	*pages_in = 0;
	while ((p = strstr(p, "{\"class\":")) != NULL) {
		uint64_t pages = json_num(p, "pages");
		if (pages > best) {
			best = pages;
			*size = (uint32_t)json_num(p, "size");
			*pages_in = json_num(p, "pages_in");
		}
		p++;
	}
}

static void ctl_check_clean(void)
{
	int st = tu_ctl(co.sock, ctl_out, sizeof ctl_out, ctl_err, sizeof ctl_err, "--json",
			"check", NULL);
	CK_MSG(st == 0 && strstr(ctl_out, "\"errors\":0") && strstr(ctl_out, "\"leaked\":0"),
	       "shmmapctl check exited %d:\n%s\n%s", st, ctl_out, ctl_err);
}

/* ---- size shifts ---- */

#define SHIFT_PUTS 20000u
#define RECENT 1000u

/* Fill the segment with `from`-byte values, then write SHIFT_PUTS values of
 * `to` bytes: the newest keys are there, most of the segment is live data,
 * and pages were handed over.  The old allocator kept a page with its class
 * until every block on it was free: the new size got one page (most new
 * keys missing), or the first new puts evicted most of the cache. */
static void shift(size_t from, size_t to)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 1M\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "cache");
	uint32_t nold = fill_until_evicting(sm, m, "old-", 0, from);
	/* (Keys of several lengths may straddle two classes: some handovers
	 * may happen while filling.) */
	uint64_t h0 = handovers();
	/* Values of 33 KB: 4 times the segment, and the newest 200 (6.6 MB). */
	uint32_t puts = to > 4096 ? SHIFT_PUTS / 10 : SHIFT_PUTS;
	uint32_t recent = to > 4096 ? RECENT / 5 : RECENT;
	for (uint32_t i = 0; i < puts; i++) {
		int rc = put_kv(sm, m, "new-", i, to, 1);
		CK_MSG(rc == 0, "put new-%u of %zu bytes: %s", i, to, shmmap_strerror(rc));
	}
	unsigned found = 0;
	for (uint32_t i = puts - recent; i < puts; i++)
		found += (unsigned)present(sm, m, "new-", i, to, 1);
	struct shmmap_stats st = stats_of(sm, m);
	uint64_t h = handovers();
	uint32_t csize;
	uint64_t cin;
	biggest_class(&csize, &cin);
	fprintf(stderr, "  shift %zu -> %zu: %u old puts, %u of the last %u new keys, %" PRIu64
		" live bytes (%.1f%%), %" PRIu64 " evictions, %" PRIu64
		" handovers (%" PRIu64 " while filling); biggest class %u B with %" PRIu64
		" pages in\n",
		from, to, nold, found, recent, st.bytes, 100.0 * (double)st.bytes / SEG_BYTES,
		st.evictions, h, h0, csize, cin);
	CK_MSG(found * 100 >= recent * 99, "only %u of the last %u keys written are present",
	       found, recent);
	CK_MSG(st.bytes * 2 >= SEG_BYTES, "live key and value bytes %" PRIu64 " (%.1f%% of %u)",
	       st.bytes, 100.0 * (double)st.bytes / SEG_BYTES, SEG_BYTES);
	CK_MSG(h > h0, "no page was handed over for the new size");
	/* Shift to large: the class of the new values owns most pages now, and
	 * got them from others. */
	if (to > from)
		CK_MSG(csize >= to && cin > 0,
		       "the class owning most pages is of %u B with %" PRIu64 " pages handed in",
		       csize, cin);
	/* From runs: the new class got the runs' pages (it had one or two). */
	if (from > 65536)
		CK_MSG(csize < 65536 && cin > 1,
		       "the class owning most pages is of %u B with %" PRIu64 " pages handed in",
		       csize, cin);
	ctl_check_clean();
	shmmap_detach(sm);
}

START_TEST(shift_small_to_large)
{
	shift(10, 1024);
}
END_TEST

START_TEST(shift_large_to_small)
{
	shift(1024, 10);
}
END_TEST

/* From values larger than a page (each a run of pages, in no size class)
 * to small ones: the small values' class takes the runs' pages.  It used
 * to reach them only while it had no page at all, then evicted its own
 * newest entries on one or two pages while never-read 70 KB values held
 * the rest of the segment. */
START_TEST(shift_runs_to_small)
{
	shift(70000, 100);
}
END_TEST

/* To and from values of 33 KB, whose class's slabs are several pages (a
 * block of 34952 B, 15 to a slab of 8 pages): the new class takes windows
 * of pages from the small values' class, and in the other direction the
 * small class takes the slabs' pages. */
START_TEST(shift_small_to_spans)
{
	shift(100, 33000);
}
END_TEST

START_TEST(shift_spans_to_small)
{
	shift(33000, 100);
}
END_TEST

/* A cache of values of 33 KB keeps about as many of them as its bytes
 * hold: with a key and the entry's header such a value needs a little more
 * than half a page, and each took a whole page of 64 KiB (live data about
 * 50% of the segment); a slab of several pages holds them 34952 B apart. */
START_TEST(values_just_over_half_a_page_fill_the_segment)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 1M\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "cache");
	uint32_t n = fill_until_evicting(sm, m, "v-", 0, 33000);
	/* And the segment turned over once more. */
	for (uint32_t i = 0; i < n; i++) {
		int rc = put_kv(sm, m, "w-", i, 33000, 1);
		CK_MSG(rc == 0, "put w-%u: %s", i, shmmap_strerror(rc));
	}
	struct shmmap_stats st = stats_of(sm, m);
	fprintf(stderr, "  values of 33000 B: %u fit before the first eviction, %" PRIu64
		" live bytes (%.1f%% of the segment)\n", n, st.bytes,
		100.0 * (double)st.bytes / SEG_BYTES);
	CK_MSG(st.bytes * 4 >= (uint64_t)SEG_BYTES * 3,
	       "live key and value bytes %" PRIu64 " (%.1f%% of %u)", st.bytes,
	       100.0 * (double)st.bytes / SEG_BYTES, SEG_BYTES);
	unsigned found = 0;
	for (uint32_t i = n - 100; i < n; i++)
		found += (unsigned)present(sm, m, "w-", i, 33000, 1);
	CK_MSG(found >= 99, "only %u of the last 100 keys written are present", found);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* The same shift right after the large values turned the cache over twice,
 * in bench-cache's order: every page of the old class then holds entries
 * written moments ago, and the newest small keys must still all stay.
 * (bench-cache's shift cell lost 10% to 40% of them in 2 of 7 runs while
 * a donor that refused once was left alone for 20 ms, longer than its
 * 10,000 puts take; this test did not catch that on the development VM:
 * it guards the scenario, the bench its timing.) */
START_TEST(shift_after_turnover_keeps_newest)
{
	enum { NEW = 10000 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 64K\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "cache");
	uint32_t nold = 2u * SEG_BYTES / 1024u;
	for (uint32_t i = 0; i < nold; i++) {
		int rc = put_kv(sm, m, "old-", i, 1024, 1);
		CK_MSG(rc == 0, "put old-%u: %s", i, shmmap_strerror(rc));
	}
	for (uint32_t i = 0; i < NEW; i++) {
		int rc = put_kv(sm, m, "new-", i, 10, 1);
		CK_MSG(rc == 0, "put new-%u: %s", i, shmmap_strerror(rc));
	}
	unsigned found = 0;
	for (uint32_t i = NEW - RECENT; i < NEW; i++)
		found += (unsigned)present(sm, m, "new-", i, 10, 1);
	fprintf(stderr, "  shift after turnover: %u of the last %u new keys\n", found, RECENT);
	CK_MSG(found * 100 >= RECENT * 99, "only %u of the last %u keys written are present",
	       found, RECENT);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* ---- handover under concurrent writers and readers ---- */

enum {
	WRITERS = 2,
	READERS = 2,
	KEYS = 5000,       /* keys per writer: a phase of large values is 1.5x the segment */
	PHASES = 6,        /* small, large, small, ... */
	PHASE_PUTS = KEYS, /* puts per writer and phase: each of its keys once */
	READ_MAX = 4000000 /* a reader's bound */
};

struct shared {
	_Atomic uint32_t published[WRITERS * KEYS]; /* the newest version put (before the put) */
	_Atomic int writers_done;
	_Atomic int failed;
	_Atomic uint64_t hits, reads;
	char why[256];
};

/* Version ver (1-based) of a writer is in phase (ver - 1) / PHASE_PUTS:
 * even phases write 8..64 bytes, odd ones 900..4000 (several classes each),
 * or with PHASES_RUNS 65,000..130,000 (runs of two or three pages, which
 * give their pages to the small values' classes: evict.c run_donor), or
 * with PHASES_SPANS 9,000..60,000 (classes whose slabs are 2 to 8 pages,
 * whose blocks straddle pages: they take windows of pages from the small
 * values' classes, and give their slabs back). */
enum { PHASES_PAGES, PHASES_RUNS, PHASES_SPANS };
static int large_phases;
#define LARGE_MAX 130000u
static size_t len_of(uint32_t key, uint32_t ver)
{
	uint32_t phase = (ver - 1) / PHASE_PUTS;
	uint64_t r = mix((uint64_t)key * 31 + ver);
	if (phase % 2)
		return large_phases == PHASES_RUNS    ? 65000 + r % (LARGE_MAX - 65000 + 1)
		       : large_phases == PHASES_SPANS ? 9000 + r % 51001
						      : 900 + r % 3101;
	return 8 + r % 57;
}

static void fail_shared(struct shared *sh, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void fail_shared(struct shared *sh, const char *fmt, ...)
{
	if (atomic_exchange(&sh->failed, 1))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sh->why, sizeof sh->why, fmt, ap);
	va_end(ap);
}

static int writer(struct shared *sh, int w)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, "mixed", 0, &m) < 0)
		return 20;
	static unsigned char v[LARGE_MAX];
	for (uint32_t ver = 1; ver <= PHASES * PHASE_PUTS && !atomic_load(&sh->failed); ver++) {
		uint32_t key = (uint32_t)w * KEYS + (ver - 1) % KEYS;
		size_t n = len_of(key, ver);
		char k[32];
		int kn = keyname(k, sizeof k, "k", key);
		mkval(v, n, key, ver);
		atomic_store_explicit(&sh->published[key], ver, memory_order_release);
		int rc = shmmap_put(sm, m, k, (size_t)kn, v, n, 0, 0);
		if (rc != 0) {
			fail_shared(sh, "writer %d: put %s (%zu B, version %u): %s", w, k, n, ver,
				    shmmap_strerror(rc));
			return 21;
		}
	}
	shmmap_detach(sm);
	return 0;
}

static int reader(struct shared *sh, int r)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, "mixed", 0, &m) < 0)
		return 20;
	static unsigned char buf[LARGE_MAX];
	uint64_t hits = 0, reads = 0;
	for (uint64_t i = 0; i < READ_MAX && atomic_load(&sh->writers_done) < WRITERS &&
			     !atomic_load(&sh->failed);
	     i++) {
		uint32_t key = (uint32_t)(mix(i * 4u + (uint32_t)r) % (WRITERS * KEYS));
		char k[32];
		int kn = keyname(k, sizeof k, "k", key);
		size_t n = 0;
		int rc = shmmap_get(sm, m, k, (size_t)kn, buf, sizeof buf, &n);
		reads++;
		if (rc == -ENOENT)
			continue;
		if (rc != 0) {
			fail_shared(sh, "reader %d: get %s: %s", r, k, shmmap_strerror(rc));
			return 21;
		}
		uint32_t vk, ver;
		if (n < 8) {
			fail_shared(sh, "reader %d: %s holds %zu bytes", r, k, n);
			return 22;
		}
		memcpy(&vk, buf, 4);
		memcpy(&ver, buf + 4, 4);
		uint32_t pub = atomic_load_explicit(&sh->published[key], memory_order_acquire);
		if (vk != key || ver == 0 || ver > pub || n != len_of(key, ver) ||
		    !val_ok(buf, n, key, ver)) {
			static unsigned char want[LARGE_MAX];
			size_t at = 0;
			if (vk == key && ver && n <= sizeof want) {
				mkval(want, n, key, ver);
				while (at < n && buf[at] == want[at])
					at++;
			}
			fail_shared(sh,
				    "reader %d: %s holds %zu bytes that are not a value written for "
				    "it (says key %u version %u, of %zu bytes; newest put %u; first "
				    "wrong byte at %zu)",
				    r, k, n, vk, ver, ver ? len_of(vk, ver) : 0, pub, at);
			return 23;
		}
		hits++;
	}
	atomic_fetch_add(&sh->hits, hits);
	atomic_fetch_add(&sh->reads, reads);
	shmmap_detach(sm);
	return 0;
}

START_TEST(handover_under_concurrency)
{
	large_phases = _i;
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 256K\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "mixed");
	struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(sh != MAP_FAILED);
	pid_t w[WRITERS], r[READERS];
	for (int i = 0; i < READERS; i++) {
		r[i] = tu_fork();
		ck_assert_int_ge(r[i], 0);
		if (r[i] == 0)
			_exit(reader(sh, i));
	}
	for (int i = 0; i < WRITERS; i++) {
		w[i] = tu_fork();
		ck_assert_int_ge(w[i], 0);
		if (w[i] == 0)
			_exit(writer(sh, i));
	}
	int bad = 0;
	for (int i = 0; i < WRITERS; i++) {
		int st = tu_waitpid(w[i], 90000);
		atomic_fetch_add(&sh->writers_done, 1);
		bad |= !(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
		CK_MSG(!bad, "writer %d: status %#x: %s", i, st, sh->why);
	}
	for (int i = 0; i < READERS; i++) {
		int st = tu_waitpid(r[i], 30000);
		CK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d: status %#x: %s",
		       i, st, sh->why);
	}
	struct shmmap_stats st = stats_of(sm, m);
	uint64_t h = handovers();
	fprintf(stderr, "  concurrency%s: %" PRIu64 " reads, %" PRIu64 " values checked, %" PRIu64
		" evictions, %" PRIu64 " handovers\n",
		large_phases == PHASES_RUNS ? " (runs)" : large_phases ? " (spans)" : "",
		atomic_load(&sh->reads), atomic_load(&sh->hits), st.evictions, h);
	CK_EQ(st.puts, WRITERS * PHASES * PHASE_PUTS);
	CK_MSG(atomic_load(&sh->hits) >= 1000, "readers checked only %" PRIu64 " values",
	       atomic_load(&sh->hits));
	CK_MSG(st.evictions > 0, "the segment never filled: nothing was tested");
	CK_MSG(h > 0, "no page was handed over");
	ctl_check_clean();
	/* Every key holds its newest version, or is gone. */
	for (uint32_t key = 0; key < WRITERS * KEYS; key++) {
		uint32_t ver = atomic_load(&sh->published[key]);
		if (ver)
			present(sm, m, "k", key, len_of(key, ver), ver);
	}
	munmap(sh, sizeof *sh);
	shmmap_detach(sm);
}
END_TEST

/* Pages go first from the class whose entries cost most to keep: a class
 * weighs its victims' age by their block size (rounded down to a power of
 * two), after GreedyDual-Size, so of two classes nobody writes, the one of
 * 4 KiB entries (weight 4096) gives its pages before the one of 100-byte
 * entries (blocks of 136 B: weight 128) that is not 32 times older.  Three
 * maps, so that each map's losses are its class's: S (100 B values)
 * written first, L (4 KiB) gap_ms later, both left unread; then, after
 * wait_ms, M (1 KiB), which needs about 3 MB more than the pool has.  Told
 * by the clock alone (no weights), S's entries are the older and S would
 * give them.  The waits age the data: the policy is one of ages. */
static void large_entries_give_first(long gap_ms, long wait_ms)
{
	enum { S_KV = 100, L_KV = 4096, M_KV = 1024, S_N = 40000, L_N = 1200, M_N = 7000 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 64K\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map ms = tu_open(sm, "S"), ml = tu_open(sm, "L"), mm = tu_open(sm, "M");
	for (uint32_t i = 0; i < S_N; i++)
		CK_EQ(put_kv(sm, ms, "s-", i, S_KV, 1), 0);
	struct timespec gap = {gap_ms / 1000, gap_ms % 1000 * 1000 * 1000};
	nanosleep(&gap, NULL);
	for (uint32_t i = 0; i < L_N; i++)
		CK_EQ(put_kv(sm, ml, "l-", i, L_KV, 1), 0);
	struct timespec wait = {wait_ms / 1000, wait_ms % 1000 * 1000 * 1000};
	nanosleep(&wait, NULL);
	CK_EQ(stats_of(sm, ms).evictions + stats_of(sm, ml).evictions, 0);
	uint64_t h0 = handovers();
	for (uint32_t i = 0; i < M_N; i++) {
		int rc = put_kv(sm, mm, "m-", i, M_KV, 1);
		CK_MSG(rc == 0, "put m-%u: %s", i, shmmap_strerror(rc));
	}
	struct shmmap_stats ss = stats_of(sm, ms), sl = stats_of(sm, ml), sm_ = stats_of(sm, mm);
	fprintf(stderr,
		"  sizes (S %ld ms older): S lost %" PRIu64 " of %d (%" PRIu64
		" B), L lost %" PRIu64 " of %d (%" PRIu64 " B), M holds %" PRIu64 ", %" PRIu64
		" handovers\n",
		gap_ms, ss.evictions, S_N, ss.evictions * S_KV, sl.evictions, L_N,
		sl.evictions * L_KV, sm_.entries, handovers() - h0);
	CK_MSG(handovers() > h0, "M took no page from another class");
	/* The bytes M took came from L, the class of larger entries, not from
	 * S (a few of S's pages may go with a donor's refusals: at most a
	 * tenth of what L gave). */
	CK_MSG(sl.evictions * L_KV > 10 * ss.evictions * S_KV,
	       "S gave %" PRIu64 " B, L only %" PRIu64 " B", ss.evictions * S_KV,
	       sl.evictions * L_KV);
	ctl_check_clean();
	shmmap_detach(sm);
}

/* S about twice as old as L when M comes. */
START_TEST(large_entries_give_pages_first)
{
	large_entries_give_first(150, 150);
}
END_TEST

/* S about 16 times as old as L (1.5 s and 0.1 s): still L gives, as its
 * weight is 32 times S's.  (With the square root of the block size, 8
 * times S's, S gave: the mixed trace of bench-cache lost a point of hit
 * ratio at 1% when the slabs of several pages made large blocks smaller.) */
START_TEST(large_entries_give_pages_first_weighed_by_size)
{
	large_entries_give_first(1500, 100);
}
END_TEST

/* ---- fairness across maps ---- */

START_TEST(cross_map_fairness)
{
	enum { KV = 1024, C_N = 2000, B_N = 5000 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 64K\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	/* All three maps exist before A fills the segment (creating a map on a
	 * full segment does not evict for its table: shmmap__map_create). */
	shmmap_map a = tu_open(sm, "A"), b = tu_open(sm, "B");
	shmmap_map c = open_policy(sm, "C", SHMMAP_POLICY_REJECT);
	uint32_t na = fill_until_evicting(sm, a, "a-", 0, KV);
	/* B, empty until A filled the segment: every put succeeds, by
	 * evicting A's entries. */
	uint64_t a_ev = stats_of(sm, a).evictions;
	for (uint32_t i = 0; i < B_N; i++) {
		int rc = put_kv(sm, b, "b-", i, KV, 1);
		CK_MSG(rc == 0, "put b-%u to a second map: %s", i, shmmap_strerror(rc));
	}
	unsigned found = 0;
	for (uint32_t i = B_N - RECENT; i < B_N; i++)
		found += (unsigned)present(sm, b, "b-", i, KV, 1);
	CK_EQ(found, RECENT);
	CK_MSG(stats_of(sm, a).evictions - a_ev >= B_N / 2, "B's puts evicted only %" PRIu64
	       " of A's entries", stats_of(sm, a).evictions - a_ev);
	/* C, policy reject: its puts evict the evict maps' entries. */
	uint64_t ab_ev = stats_of(sm, a).evictions + stats_of(sm, b).evictions;
	for (uint32_t i = 0; i < C_N; i++) {
		int rc = put_kv(sm, c, "c-", i, KV, 1);
		CK_MSG(rc == 0, "put c-%u to a reject map: %s", i, shmmap_strerror(rc));
	}
	uint64_t ab_ev2 = stats_of(sm, a).evictions + stats_of(sm, b).evictions;
	CK_MSG(ab_ev2 - ab_ev >= C_N / 2, "C's %d puts evicted %" PRIu64 " entries", C_N,
	       ab_ev2 - ab_ev);
	/* A and B flooded with ten times the segment, in three sizes (their own
	 * class's hand, and pages handed over, where C's entries lie too). */
	static const size_t sizes[] = {1024, 6000, 3000};
	uint64_t flood = 0;
	uint32_t i;
	for (i = 0; flood < 10ull * SEG_BYTES; i++) {
		size_t n = sizes[i % 3];
		int rc = put_kv(sm, i % 2 ? b : a, "f-", i, n, 2);
		CK_MSG(rc == 0, "flood put %u (%zu B): %s", i, n, shmmap_strerror(rc));
		flood += n;
	}
	CK_MSG(handovers() > 0, "the flood handed over no page");
	for (uint32_t j = 0; j < C_N; j++)
		CK_MSG(present(sm, c, "c-", j, KV, 1), "c-%u of the reject map was evicted", j);
	struct shmmap_stats sc = stats_of(sm, c);
	CK_EQ(sc.evictions, 0);
	CK_EQ(sc.entries, C_N);
	/* The newest flood keys are there too (3.3 MB of 16M).  Three sizes
	 * written in turn make the classes trade pages all the time (the cache
	 * turns over in ~100 ms): some recent keys go with a page.  And nobody
	 * reads them: past their probation (a twentieth of their class's
	 * blocks, here 100 to 250 writes of a class) the probation hand may
	 * take them first, by design (evict.c).  With write times in 4 ms
	 * ticks, 775 to 897 stayed in 3 of 40 sanitizer runs; with the fine
	 * clock, 820 to 1000 in 8 runs on a loaded machine.  A map starved by
	 * the other would keep none. */
	unsigned recent = 0;
	for (uint32_t j = i - RECENT; j < i; j++)
		recent += (unsigned)present(sm, j % 2 ? b : a, "f-", j, sizes[j % 3], 2);
	CK_MSG(recent * 100 >= RECENT * 70, "only %u of the last %u flood keys are present",
	       recent, RECENT);
	/* C fills everything: it evicts what is left of A and B, then is
	 * refused, and loses nothing. */
	uint32_t nc = C_N;
	int rc;
	for (;; nc++) {
		rc = put_kv(sm, c, "c-", nc, KV, 1);
		if (rc != 0)
			break;
		CK_MSG(nc < SEG_BYTES / KV, "%u puts of %d B into a 16M reject map", nc, KV);
	}
	CK_MSG(rc == -ENOSPC, "put c-%u: %s", nc, shmmap_strerror(rc));
	struct shmmap_stats sa = stats_of(sm, a), sb = stats_of(sm, b);
	sc = stats_of(sm, c);
	fprintf(stderr, "  fairness: A %u filling puts; C refused after %u entries; left: A %" PRIu64
		" B %" PRIu64 " entries; C %" PRIu64 " live bytes; %" PRIu64 " handovers\n",
		na, nc, sa.entries, sb.entries, sc.bytes, handovers());
	CK_MSG(sa.entries + sb.entries == 0,
	       "C refused with A's %" PRIu64 " and B's %" PRIu64 " entries left to evict",
	       sa.entries, sb.entries);
	CK_EQ(sc.entries, nc);
	CK_EQ(sc.evictions, 0);
	CK_EQ(present(sm, c, "c-", nc, KV, 1), 0);
	for (uint32_t j = 0; j < nc; j++)
		CK_MSG(present(sm, c, "c-", j, KV, 1), "c-%u lost after -ENOSPC", j);
	CK_EQ(put_kv(sm, c, "c-", nc + 1, KV, 1), -ENOSPC);
	CK_EQ(stats_of(sm, c).entries, nc);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* ---- a run of pages after fragmentation ---- */

START_TEST(large_values_after_fragmentation)
{
	enum { SMALL = 100, BIG = 200 * 1024, NBIG = 30 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 1M\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "frag");
	uint32_t ns = fill_until_evicting(sm, m, "s-", 0, SMALL);
	uint64_t before = stats_of(sm, m).entries;
	/* Every small entry read (used): a window is still emptied, not
	 * filled again by entries moved out of its own pages (a page of the
	 * window went to the pool, the next one's read entries were moved,
	 * carved a page from the pool, the window's: every big put failed). */
	if (_i == 1)
		for (uint32_t i = 0; i < ns; i++)
			(void)present(sm, m, "s-", i, SMALL, 1);
	/* Every page holds small entries: each big value needs a window of
	 * pages emptied. */
	for (uint32_t i = 0; i < NBIG; i++) {
		int rc = put_kv(sm, m, "big-", i, BIG, 1);
		CK_MSG(rc == 0, "put big-%u of %d B: %s", i, BIG, shmmap_strerror(rc));
		CK_MSG(present(sm, m, "big-", i, BIG, 1), "big-%u gone right after its put", i);
	}
	unsigned big = 0;
	for (uint32_t i = 0; i < NBIG; i++)
		big += (unsigned)present(sm, m, "big-", i, BIG, 1);
	struct shmmap_stats st = stats_of(sm, m);
	fprintf(stderr, "  fragmentation: %u small puts, %" PRIu64 " small entries before, %" PRIu64
		" entries after, %u of %d big values left\n",
		ns, before, st.entries, big, NBIG);
	/* 30 x 4 pages is under half the segment: the windows emptied for them
	 * leave most small entries (not a sweep of the cache). */
	CK_MSG(st.entries - big >= before * 30 / 100, "%" PRIu64 " small entries of %" PRIu64
	       " left", st.entries - big, before);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/*
 * Writers of large values at once, into a segment full of small entries
 * that were read: each needs a window of pages emptied, and the windows
 * meet other writers' values in flight (allocated, not linked yet) and
 * pages other writers are emptying.  A put to an evict map must not fail
 * while most of the segment may be evicted.  It did, 1 to 3 times in 300
 * puts of 1 MiB: a window's search spent a try on each page of a run in
 * flight (17 for a 1 MiB value, 32 in all), and two writers fought over
 * the same cheapest window.
 */
#define LW_WRITERS 3
#define LW_PUTS 60
static int large_writer(shmmap *sm, shmmap_map m, int w, uint32_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + (uint64_t)w;
	int bad = 0;
	for (uint32_t i = 0; i < LW_PUTS && !bad; i++) {
		x = mix(x);
		size_t n = (size_t)(256u << 10) + (size_t)(x % (768u << 10)); /* 256 KiB .. 1 MiB */
		int rc = put_kv(sm, m, w == 0 ? "lw0-" : w == 1 ? "lw1-" : "lw2-", i, n, 1);
		if (rc < 0) {
			fprintf(stderr, "  writer %d: put %u of %zu B: %s\n", w, i, n, shmmap_strerror(rc));
			bad = 1;
		}
		for (uint32_t k = 0; k < 20 && !bad; k++) {
			x = mix(x);
			rc = put_kv(sm, m, w == 0 ? "sw0-" : w == 1 ? "sw1-" : "sw2-", i * 20 + k,
				    50 + (size_t)(x % 1950), 1);
			if (rc < 0) {
				fprintf(stderr, "  writer %d: small put: %s\n", w, shmmap_strerror(rc));
				bad = 1;
			}
		}
	}
	return bad;
}

START_TEST(large_values_from_many_writers)
{
	ck_assert_int_eq(tu_coord_start(&co, "32M", "[map]\nvalue_max = 1M\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "lw");
	uint32_t ns = fill_until_evicting(sm, m, "s-", 0, 100);
	for (uint32_t i = 0; i < ns; i++) /* every small entry read: moved, not evicted, by a drain */
		(void)present(sm, m, "s-", i, 100, 1);
	pid_t w[LW_WRITERS];
	for (int i = 0; i < LW_WRITERS; i++) {
		w[i] = tu_fork();
		ck_assert_int_ge(w[i], 0);
		if (w[i] == 0)
			_exit(large_writer(sm, m, i, (uint32_t)tu_mono_ms())); /* (inherited) */
	}
	int failed = 0;
	for (int i = 0; i < LW_WRITERS; i++) {
		int st = tu_waitpid(w[i], 120000);
		failed += !(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	CK_MSG(failed == 0, "%d of %d writers had a put fail (see above)", failed, LW_WRITERS);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/*
 * A large value's window is the cheapest near the rover, not the first:
 * the segment full of small entries, the entries of three of four
 * neighbouring pages deleted (the fourth keeps its own), the rover set to
 * the start of the heap.  First fit emptied the first four pages of small
 * entries from there (about 2000 entries); the window of the three empty
 * pages costs the fourth page's entries at most, moved or evicted.
 */
START_TEST(large_value_takes_the_cheapest_window)
{
	enum { SMALL = 100, BIG = 200 * 1024, NEED = 4 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 1M\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "cheap");
	(void)fill_until_evicting(sm, m, "s-", 0, SMALL);
	const struct seg *sg = &sm->seg;
	const struct seg_geom *g = &sm->geom;
	CK_EQ(shmmap__seg_sync(sg), 0);
	/* The first NEED pages of small entries (first fit's window from page
	 * 0), and NEED more at least 8 pages on (the table's array sits
	 * somewhere among them: where is the coordinator's choice). */
	uint32_t first = UINT32_MAX, at = UINT32_MAX, run = 0;
	for (uint32_t i = 0; i < g->npages && i < 200 && at == UINT32_MAX; i++) {
		run = seg_page(sg, g, i)->kind == PAGE_SLAB ? run + 1 : 0;
		if (run < NEED)
			continue;
		if (first == UINT32_MAX)
			first = i + 1 - NEED;
		else if (i + 1 - NEED >= first + NEED + 8)
			at = i + 1 - NEED;
	}
	CK_MSG(at != UINT32_MAX, "no two runs of %d slab pages in the first 200", NEED);
	uint32_t kept = 0;
	for (uint32_t i = at; i < at + NEED; i++) {
		uint32_t cls = seg_page(sg, g, i)->cls;
		uint32_t size = shmmap__class_size(cls), per = SEG_PAGE / size;
		for (uint32_t j = 0; j < per; j++) {
			const struct seg_entry *e =
				(const void *)(sg->base + seg_page_off(g, i) + (uint64_t)j * size);
			if (e->klen == 0 || e->klen > 31)
				continue;
			if (i == at + 2) {
				kept++;
				continue;
			}
			char k[32];
			memcpy(k, e->data, e->klen);
			CK_EQ(shmmap_del(sm, m, k, e->klen), 0);
		}
	}
	CK(kept > 0);
	uint64_t ev0 = stats_of(sm, m).evictions, n0 = stats_of(sm, m).entries;
	atomic_store(&seg_hdr(sg)->evict_rover, 0);
	CK_EQ(put_kv(sm, m, "big-", 0, BIG, 1), 0);
	CK(present(sm, m, "big-", 0, BIG, 1));
	uint64_t ev = stats_of(sm, m).evictions - ev0;
	CK_MSG(ev <= kept, "the big put evicted %" PRIu64 " entries (the window at page %u costs %u, "
	       "first fit's at %u)", ev, at, kept, first);
	CK_EQ(stats_of(sm, m).entries, n0 + 1 - ev);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* A page a class takes while its hand is half way round is not looked at
 * before the older pages: the class's newest entries land there, maybe
 * just behind the end of the page order the hand follows.  Deterministic:
 * one writer, no reads, and the pages freed by a reject map (whose pages
 * are never handed over, so no handover, which depends on the time,
 * happens).  Without the page's due count (seg_page.due) the hand, half
 * way round, comes to the freed pages, low in page order, after half a
 * turn and takes the newest entries first. */
START_TEST(page_taken_late_waits)
{
	enum { VAL = 1000, PINNED = 12000 }; /* the reject map: about 10% */
	ck_assert_int_eq(tu_coord_start(&co, "16M", NULL), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map d = open_policy(sm, "pinned", SHMMAP_POLICY_REJECT);
	shmmap_map c = tu_open(sm, "cache");
	for (uint32_t i = 0; i < PINNED; i++)
		CK_MSG(put_kv(sm, d, "d-", i, 100, 1) == 0, "put d-%u", i);
	/* The cache fills the rest, then its hand goes half way round. */
	uint32_t n = fill_until_evicting(sm, c, "c-", 0, VAL);
	uint64_t cap = stats_of(sm, c).entries;
	for (uint32_t end = n + (uint32_t)cap / 2; n < end; n++)
		CK_MSG(put_kv(sm, c, "c-", n, VAL, 1) == 0, "put c-%u", n);
	/* The reject map's pages go back to the pool; the cache's next puts
	 * take them, without evicting, until they are full. */
	char k[32];
	for (uint32_t i = 0; i < PINNED; i++) {
		int kn = keyname(k, sizeof k, "d-", i);
		CK_MSG(shmmap_del(sm, d, k, (size_t)kn) == 0, "del d-%u", i);
	}
	uint64_t ev = stats_of(sm, c).evictions;
	uint32_t first = n;
	for (; stats_of(sm, c).evictions == ev; n++)
		CK_MSG(put_kv(sm, c, "c-", n, VAL, 1) == 0, "put c-%u", n);
	uint32_t refill = n - first;
	CK_MSG(refill > 500, "only %u puts went to the freed pages", refill);
	/* 60% of a turn more: past the end of the page order for a hand that
	 * is half way round, but less than a turn since the pages were taken. */
	for (uint32_t end = n + (uint32_t)cap * 6 / 10; n < end; n++)
		CK_MSG(put_kv(sm, c, "c-", n, VAL, 1) == 0, "put c-%u", n);
	unsigned lost = 0;
	for (uint32_t i = first; i < first + refill - 1; i++)
		lost += present(sm, c, "c-", i, VAL, 1) == 0;
	fprintf(stderr, "  late pages: %u puts into freed pages, %u of them evicted after %u more"
		" puts (cache of %" PRIu64 " entries)\n", refill, lost, n - first - refill, cap);
	CK_MSG(lost == 0, "%u of the %u entries in pages taken late were evicted first", lost,
	       refill);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* A get marks its entry used, and the hand spares used entries: keys read
 * between the writes of several times the cache's worth of new keys all
 * stay, while the keys written before them and never read are gone. */
START_TEST(read_keys_stay)
{
	enum { VAL = 100, HOT = 500, ROUND = 1000 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", NULL), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "lru");
	/* Read once before the fill: the first victims may be the oldest
	 * entries, as with LRU, and only a read key is spared. */
	for (uint32_t i = 0; i < HOT; i++) {
		CK_MSG(put_kv(sm, m, "hot-", i, VAL, 1) == 0, "put hot-%u", i);
		CK_MSG(present(sm, m, "hot-", i, VAL, 1), "hot-%u", i);
	}
	uint32_t next = fill_until_evicting(sm, m, "cold-", 0, VAL);
	uint64_t cap = stats_of(sm, m).entries, ev0 = stats_of(sm, m).evictions;
	uint64_t lost = 0, reads = 0;
	/* Until the hand has gone round the cache three times. */
	while (stats_of(sm, m).evictions - ev0 < 3 * cap) {
		for (uint32_t i = 0; i < ROUND; i++, next++)
			CK_MSG(put_kv(sm, m, "cold-", next, VAL, 1) == 0, "put cold-%u", next);
		for (uint32_t i = 0; i < HOT; i++, reads++)
			lost += present(sm, m, "hot-", i, VAL, 1) == 0;
		CK_MSG(next < 40u * cap, "fewer evictions than puts: %" PRIu64,
		       stats_of(sm, m).evictions - ev0);
	}
	unsigned first = 0;
	for (uint32_t i = 0; i < 1000; i++)
		first += (unsigned)present(sm, m, "cold-", i, VAL, 1);
	fprintf(stderr, "  read keys: %" PRIu64 " of %" PRIu64 " reads missed, %u of the first 1000 "
		"unread keys left, %u puts over a cache of %" PRIu64 " entries\n",
		lost, reads, first, next, cap);
	CK_MSG(lost == 0, "%" PRIu64 " of %" PRIu64 " reads of read keys missed", lost, reads);
	CK_MSG(first == 0, "%u of the first 1000 unread keys are still there", first);
	shmmap_detach(sm);
}
END_TEST

/* Probation (S3-FIFO's small queue): a cache full of keys read once, then
 * half a cache's worth of new keys nobody reads.  With the main hand alone
 * (CLOCK) the new keys would push out half of the read ones (a turn of
 * lowered counts, then they go in order); the probation hand takes the
 * unread new keys instead, once they are a probation old, so most read
 * keys stay, and the newest keys (within their probation) stay too. */
START_TEST(unread_keys_leave_first)
{
	enum { VAL = 100, NEWEST = 200 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", NULL), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "s3");
	uint32_t na = fill_until_evicting(sm, m, "a-", 0, VAL);
	uint64_t cap = stats_of(sm, m).entries;
	uint32_t read = 0;
	for (uint32_t i = 0; i < na; i++)
		read += (uint32_t)present(sm, m, "a-", i, VAL, 1);
	uint32_t nb = (uint32_t)(cap / 2);
	for (uint32_t i = 0; i < nb; i++)
		CK_MSG(put_kv(sm, m, "b-", i, VAL, 1) == 0, "put b-%u", i);
	uint32_t kept = 0, newest = 0;
	for (uint32_t i = 0; i < na; i++)
		kept += (uint32_t)present(sm, m, "a-", i, VAL, 1);
	for (uint32_t i = nb - NEWEST; i < nb; i++)
		newest += (uint32_t)present(sm, m, "b-", i, VAL, 1);
	fprintf(stderr, "  probation: %u of %u read keys kept after %u unread writes (cache of %"
		PRIu64 " entries), %u of the %u newest kept\n", kept, read, nb, cap, newest,
		NEWEST);
	CK_MSG(read > cap * 9 / 10, "only %u of the %" PRIu64 " entries were there to read", read,
	       cap);
	CK_MSG(kept >= read * 8 / 10, "only %u of %u read keys kept", kept, read);
	CK_MSG(newest == NEWEST, "%u of the %u newest keys gone", NEWEST - newest, NEWEST);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* Pages handed over keep their read entries: a map of 100 B values with
 * one key in ten read between rounds of writes of 4 KiB values to another
 * map, until those took about half the segment.  The read keys lie on
 * every page of their class, so the pages it gives hold some: they move to
 * blocks elsewhere in the class (whose next victims go instead), and none
 * is lost, while the pages still go over. */
START_TEST(read_keys_survive_handovers)
{
	enum { S_KV = 100, L_KV = 4096, EVERY = 10, ROUND = 100 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 64K\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map ms = tu_open(sm, "S"), ml = tu_open(sm, "L");
	uint32_t ns = fill_until_evicting(sm, ms, "s-", 0, S_KV);
	/* The keys still there, one in ten of them read from now on. */
	uint32_t *hot = malloc(sizeof *hot * (ns / EVERY + 1)), nh = 0;
	ck_assert_ptr_nonnull(hot);
	for (uint32_t i = 0; i < ns; i += EVERY)
		if (present(sm, ms, "s-", i, S_KV, 1))
			hot[nh++] = i;
	uint64_t h0 = handovers(), lost = 0, reads = 0;
	uint32_t nl = 0;
	while ((uint64_t)nl * L_KV < SEG_BYTES / 2) {
		for (uint32_t j = 0; j < ROUND; j++, nl++)
			CK_MSG(put_kv(sm, ml, "l-", nl, L_KV, 1) == 0, "put l-%u", nl);
		for (uint32_t k = 0; k < nh; k++, reads++)
			if (!present(sm, ms, "s-", hot[k], S_KV, 1)) {
				lost++;
				CK_EQ(put_kv(sm, ms, "s-", hot[k], S_KV, 1), 0);
			}
	}
	uint64_t moved = handovers() - h0;
	fprintf(stderr, "  read keys over handovers: %" PRIu64 " of %" PRIu64 " reads of %u read"
		" keys missed, %u large values written, %" PRIu64 " handovers, L holds %" PRIu64
		" entries\n", lost, reads, nh, nl, moved, stats_of(sm, ml).entries);
	CK_MSG(nh > ns / EVERY / 2, "only %u of the read keys were there", nh);
	/* Pages did go over: at least an eighth of the segment (61 to 98 in
	 * runs on the CI machine kind; the ages that decide are times). */
	CK_MSG(moved >= SEG_BYTES / 8 / 65536, "only %" PRIu64 " pages handed over", moved);
	CK_MSG(lost == 0, "%" PRIu64 " reads of read keys missed", lost);
	ctl_check_clean();
	free(hot);
	shmmap_detach(sm);
}
END_TEST

/* An incr reads the value it adds to: a counter bumped now and then, and
 * never read by a get, outlives three turns of the hand over a cache of
 * entries of its own size class (20 B values), each read once.  (Counted
 * as a write only, it was evicted on each turn and restarted from 1.)  The
 * counter is bumped through an attachment of its own, whose spare block
 * the cache's puts do not take: so it is rewritten in place, and stays where
 * the hand comes by. */
START_TEST(incr_counts_as_a_read)
{
	/* 24 + 9 + 20 B: the 56-byte class of the counter's entry (24 + 7 + room
	 * for 20 digits). */
	enum { VAL = 20, EVERY = 20 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", NULL), 0);
	shmmap *sm = tu_attach(co.sock), *sc = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "counters"), mc = tu_open(sc, "counters");
	uint32_t next = fill_until_evicting(sm, m, "c-", 0, VAL);
	uint64_t cap = stats_of(sm, m).entries, ev0 = stats_of(sm, m).evictions;
	int64_t v = 0, restarts = 0;
	uint64_t bumps = 0;
	while (stats_of(sm, m).evictions - ev0 < 3 * cap) {
		for (uint32_t i = 0; i < 1000; i++, next++) {
			/* Each read once, so that the main hand does the
			 * evicting (the probation hand keeps what was read). */
			CK_MSG(put_kv(sm, m, "c-", next, VAL, 1) == 0, "put c-%u", next);
			CK_MSG(present(sm, m, "c-", next, VAL, 1), "c-%u", next);
			if (next % EVERY == 0) {
				int64_t nv;
				CK_EQ(shmmap_incr(sc, mc, "counter", 7, 1, &nv), 0);
				restarts += nv != v + 1;
				v = nv;
				bumps++;
			}
		}
		CK_MSG(next < 40u * cap, "fewer evictions than puts");
	}
	fprintf(stderr, "  incr: the counter restarted %" PRId64 " times in %" PRIu64 " bumps over"
		" %u puts (cache of %" PRIu64 " entries)\n", restarts, bumps, next, cap);
	CK_MSG(restarts == 0, "the counter restarted %" PRId64 " times", restarts);
	shmmap_detach(sc);
	shmmap_detach(sm);
}
END_TEST

/* A map opened when the segment is full of another map's entries: its
 * table's pages are made room for as a large value's would be (entries
 * evicted, read ones moved), and it takes puts at once.  (It failed with
 * "no room for its table" while any map could still evict.)  Where every
 * entry is a reject map's, nothing of it may go for a table. */
START_TEST(new_map_in_a_full_segment)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", NULL), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map a = tu_open(sm, "A");
	uint32_t na = fill_until_evicting(sm, a, "a-", 0, 100);
	shmmap_map b;
	int rc = shmmap_open(sm, "B", SHMMAP_CREATE, &b);
	CK_MSG(rc == 0, "open B in a full segment: %s", shmmap_strerror(rc));
	for (uint32_t i = 0; i < 1000; i++)
		CK_MSG(put_kv(sm, b, "b-", i, 100, 1) == 0, "put b-%u", i);
	uint32_t newest = 0;
	for (uint32_t i = na - 100; i < na; i++)
		newest += (uint32_t)present(sm, a, "a-", i, 100, 1);
	CK_MSG(newest >= 99, "A lost %u of its newest 100 keys", 100 - newest);
	ctl_check_clean();
	/* All of it a reject map's: nothing to take. */
	shmmap_flush(sm, a);
	shmmap_flush(sm, b);
	shmmap_map r = open_policy(sm, "R", SHMMAP_POLICY_REJECT);
	uint32_t nr = 0;
	while ((rc = put_kv(sm, r, "r-", nr, 100, 1)) == 0)
		nr++;
	CK_MSG(rc == -ENOSPC, "the reject map's put failed with %s", shmmap_strerror(rc));
	/* (Pages may still come free after R's last put: an old bucket array
	 * of A's that the coordinator retires late.  So C may get its table
	 * from those; what it may never do is take R's.) */
	shmmap_map c;
	rc = shmmap_open(sm, "C", SHMMAP_CREATE, &c);
	CK_MSG(rc == -ENOSPC || rc == 0, "open C in a segment full of a reject map's entries: %s",
	       shmmap_strerror(rc));
	CK_EQ(stats_of(sm, r).entries, nr);
	for (uint32_t i = 0; i < nr; i += 97)
		CK_MSG(present(sm, r, "r-", i, 100, 1), "r-%u lost", i);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* A few hot keys in a small map of their own, next to a map whose large
 * values churn through the segment many times over: a counter bumped by
 * incr and a session key read by get, both between every few puts of the
 * cache.  Their size class holds a page with little on it, the cheapest
 * page to hand over to the classes of the large values; it must not go
 * while its entries are this hot (the counter restarting from 1 lost the
 * count: 82 times in 5 s in a Python trial, 1 KiB and 5 KiB values). */
START_TEST(hot_keys_of_a_small_map_stay)
{
	enum { EVERY = 10 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[map]\nvalue_max = 64K\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map mc = tu_open(sm, "cache"), mh = tu_open(sm, "hot");
	static const size_t sizes[] = {1000, 5000};
	CK_EQ(put_kv(sm, mh, "session-", 0, 40, 1), 0);
	uint64_t bumps = 0, lost_session = 0;
	int64_t v = 0, restarts = 0;
	uint32_t i = 0;
	/* Until the cache has evicted 3 segments' worth. */
	while (stats_of(sm, mc).evictions * 3000 < 3ull * SEG_BYTES) {
		/* A look-aside cache: a get, and a put of what missed (of
		 * 16,000 keys, about three cache's worth). */
		for (uint32_t j = 0; j < EVERY; j++, i++) {
			uint32_t k = (uint32_t)(mix(i) % 16000);
			size_t n = sizes[(mix(k) >> 20) & 1];
			if (!present(sm, mc, "c-", k, n, 1))
				CK_MSG(put_kv(sm, mc, "c-", k, n, 1) == 0, "put c-%u", k);
		}
		int64_t nv;
		CK_EQ(shmmap_incr(sm, mh, "counter", 7, 1, &nv), 0);
		bumps++;
		if (nv != v + 1)
			restarts++;
		v = nv;
		if (!present(sm, mh, "session-", 0, 40, 1)) {
			lost_session++;
			CK_EQ(put_kv(sm, mh, "session-", 0, 40, 1), 0);
		}
		CK_MSG(i < 40u * SEG_BYTES / 1000, "the cache evicts too little: %" PRIu64,
		       stats_of(sm, mc).evictions);
	}
	fprintf(stderr, "  hot keys: the counter restarted %" PRId64 " times in %" PRIu64
		" bumps, the session key was lost %" PRIu64 " times, %u puts of 1 KB and 5 KB"
		" values, %" PRIu64 " handovers\n", restarts, bumps, lost_session, i, handovers());
	CK_MSG(restarts == 0 && v == (int64_t)bumps, "the counter restarted %" PRId64
	       " times (%" PRId64 " after %" PRIu64 " bumps)", restarts, v, bumps);
	CK_MSG(lost_session == 0, "the session key was evicted %" PRIu64 " times", lost_session);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* Counters bumped by incr and a session key read by get, in a small map of
 * their own (one page of their size class), next to a cache of values
 * larger than a page (_i == 0: 70 KB) or of mixed sizes (_i == 1: 100 B to
 * 200 KB).  A value larger than a page takes a window of pages, and a
 * class with nothing of its own takes another's page by force: both
 * emptied the small map's only page whenever they came by (a used entry
 * moves only to another page of its class), and every counter restarted
 * (a user's pool: 50 of 50 counters wrong after 8 s). */
START_TEST(hot_keys_next_to_large_values)
{
	enum { COUNTERS = 50, PUTS = 1500 };
	static const size_t big[] = {70000}, mixed[] = {100, 5000, 60000, 200000};
	const size_t *sizes = _i == 0 ? big : mixed;
	size_t nsizes = _i == 0 ? 1 : 4;
	ck_assert_int_eq(tu_coord_start(&co, "16M", ""), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map mc = tu_open(sm, "cache"), mh = tu_open(sm, "hot");
	CK_EQ(put_kv(sm, mh, "session-", 0, 40, 1), 0);
	int64_t want[COUNTERS] = {0};
	uint64_t restarts = 0, lost_session = 0, written = 0;
	for (uint32_t i = 0; i < PUTS; i++) {
		uint32_t k = (uint32_t)(mix(i) % 100000);
		size_t n = sizes[mix(k) % nsizes];
		CK_MSG(put_kv(sm, mc, "c-", k, n, 1) == 0, "put c-%u of %zu B", k, n);
		written += n;
		for (uint32_t c = 0; c < 5; c++) {
			uint32_t j = (i * 5 + c) % COUNTERS;
			char key[16];
			int kl = snprintf(key, sizeof key, "counter-%u", j);
			int64_t nv;
			CK_EQ(shmmap_incr(sm, mh, key, (size_t)kl, 1, &nv), 0);
			if (nv != ++want[j]) {
				restarts++;
				want[j] = nv;
			}
		}
		if (!present(sm, mh, "session-", 0, 40, 1)) {
			lost_session++;
			CK_EQ(put_kv(sm, mh, "session-", 0, 40, 1), 0);
		}
	}
	fprintf(stderr, "  hot keys next to %s values: %" PRIu64 " counter restarts, the session"
		" key lost %" PRIu64 " times, %.0f MB written, %" PRIu64 " evictions\n",
		_i == 0 ? "70 KB" : "mixed", restarts, lost_session, (double)written / 1e6,
		stats_of(sm, mc).evictions);
	CK_MSG(written > 4ull * SEG_BYTES, "only %" PRIu64 " bytes written", written);
	CK_MSG(restarts == 0, "a counter restarted %" PRIu64 " times", restarts);
	CK_MSG(lost_session == 0, "the session key was evicted %" PRIu64 " times", lost_session);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* 500 sessions of 200 B (two pages of their class, full), all read
 * between puts of 70 KB values to another map: none may go.  A used entry
 * moves only to a free block on another page of its class, and there was
 * none: every window for a large value that took one of their pages
 * evicted its sessions (a user's pool lost all 500 within 20 ms).  Then
 * 70 KB values (_i 0), four sizes from 100 B to 200 KB (1), and any size
 * in that range (2: puts landing in classes of few pages had the sessions'
 * class asked for a page over and over; the moves each try needed had its
 * hand lower the sessions' counts until a later try found them unused and
 * evicted 63 of them). */
START_TEST(hot_sessions_on_full_pages_next_to_large_values)
{
	enum { SESSIONS = 500, PUTS = 1000 };
	static const size_t big[] = {70000}, mixed[] = {100, 5000, 60000, 200000};
	const size_t *sizes = _i == 0 ? big : mixed;
	size_t nsizes = _i == 0 ? 1 : 4;
	ck_assert_int_eq(tu_coord_start(&co, "16M", ""), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map mc = tu_open(sm, "cache"), ms = tu_open(sm, "sessions");
	for (uint32_t j = 0; j < SESSIONS; j++)
		CK_EQ(put_kv(sm, ms, "sess-", j, 200, 1), 0);
	uint64_t lost = 0;
	for (uint32_t i = 0; i < PUTS; i++) {
		for (uint32_t j = 0; j < SESSIONS; j++)
			if (!present(sm, ms, "sess-", j, 200, 1)) {
				lost++;
				CK_EQ(put_kv(sm, ms, "sess-", j, 200, 1), 0);
			}
		uint32_t k = (uint32_t)(mix(i) % 100000);
		size_t n = _i == 2 ? 100 + mix(i * 7 + 1) % 200000 : sizes[mix(k) % nsizes];
		CK_MSG(put_kv(sm, mc, "c-", k, n, 1) == 0, "put c-%u of %zu B", k, n);
	}
	fprintf(stderr, "  hot sessions on full pages next to %s values: %" PRIu64 " lost, %" PRIu64
		" evictions of the cache\n", _i == 0 ? "70 KB" : _i == 1 ? "mixed" : "100 B..200 KB", lost,
		stats_of(sm, mc).evictions);
	CK_MSG(stats_of(sm, mc).evictions > 0, "the cache evicted nothing");
	CK_MSG(lost == 0, "%" PRIu64 " sessions were evicted", lost);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

/* A reject map filling a segment where an evict map holds a few values of
 * 600 KB (and small ones): its puts evict them all before the first
 * -ENOSPC.  Windows for a page were looked for 32 pages at a time from a
 * rover: with most pages the reject map's, a put failed while large
 * evictable entries lay further on (and the next puts succeeded). */
START_TEST(reject_map_reaches_large_entries)
{
	enum { BIG = 600000, NBIG = 5 };
	ck_assert_int_eq(tu_coord_start(&co, "16M", ""), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map ev = tu_open(sm, "ev");
	shmmap_map rj = open_policy(sm, "rj", SHMMAP_POLICY_REJECT);
	for (uint32_t i = 0; i < NBIG; i++)
		CK_MSG(put_kv(sm, ev, "big-", i, BIG, 1) == 0, "put big-%u", i);
	for (uint32_t i = 0; i < 2000; i++)
		CK_EQ(put_kv(sm, ev, "small-", i, 1, 1), 0);
	uint32_t n = 0;
	int rc;
	while ((rc = put_kv(sm, rj, "r-", n, 100, 1)) == 0) {
		n++;
		CK_MSG(n < SEG_BYTES / 100, "%u puts of 100 B into a 16M reject map", n);
	}
	CK_MSG(rc == -ENOSPC, "put r-%u: %s", n, shmmap_strerror(rc));
	struct shmmap_stats se = stats_of(sm, ev);
	fprintf(stderr, "  reject map: refused after %u puts with %" PRIu64 " entries (%" PRIu64
		" bytes) of the evict map left\n", n, se.entries, se.bytes);
	CK_MSG(se.entries == 0, "refused with %" PRIu64 " entries (%" PRIu64
	       " bytes) of the evict map left to evict", se.entries, se.bytes);
	ctl_check_clean();
	shmmap_detach(sm);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("evict");
	TCase *tc = tcase_create("evict");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, shift_small_to_large);
	tcase_add_test(tc, shift_large_to_small);
	tcase_add_test(tc, shift_runs_to_small);
	tcase_add_test(tc, shift_small_to_spans);
	tcase_add_test(tc, shift_spans_to_small);
	tcase_add_test(tc, values_just_over_half_a_page_fill_the_segment);
	tcase_add_test(tc, shift_after_turnover_keeps_newest);
	tcase_add_loop_test(tc, handover_under_concurrency, PHASES_PAGES, PHASES_SPANS + 1);
	tcase_add_test(tc, cross_map_fairness);
	tcase_add_test(tc, large_entries_give_pages_first);
	tcase_add_test(tc, large_entries_give_pages_first_weighed_by_size);
	tcase_add_loop_test(tc, large_values_after_fragmentation, 0, 2);
	tcase_add_test(tc, large_values_from_many_writers);
	tcase_add_test(tc, large_value_takes_the_cheapest_window);
	tcase_add_test(tc, read_keys_stay);
	tcase_add_test(tc, page_taken_late_waits);
	tcase_add_test(tc, unread_keys_leave_first);
	tcase_add_test(tc, hot_keys_of_a_small_map_stay);
	tcase_add_loop_test(tc, hot_keys_next_to_large_values, 0, 2);
	tcase_add_test(tc, reject_map_reaches_large_entries);
	tcase_add_loop_test(tc, hot_sessions_on_full_pages_next_to_large_values, 0, 3);
	tcase_add_test(tc, read_keys_survive_handovers);
	tcase_add_test(tc, incr_counts_as_a_read);
	tcase_add_test(tc, new_map_in_a_full_segment);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
