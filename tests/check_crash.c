/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_crash.c - crash safety at every store: real writer processes,
 * built with the crash-point hook (internal.h, CRASH_POINT), are killed
 * with SIGKILL at the k-th store to shared memory of an insert, a replace,
 * a delete and an incr, for every k until the operation completes.  After
 * each kill the coordinator recovers the dead slot, and the test checks
 * that the operation is fully applied or fully absent, that every other
 * entry is intact, that the stripe and the allocator work, and that the
 * whole-segment check finds nothing (no leak, no odd counter, no lock).
 * Also: a writer frozen (SIGSTOP) while it holds a stripe lock, then
 * killed, hands the lock to a waiting process within a second; and the
 * coordinator's sweep (shmmapctl check --repair) run again and again while
 * writers write loses no acknowledged write and frees a leaked block; and
 * the coordinator SIGKILLed: workers go on, a restarted one adopts the
 * data, resumes the attachment and reclaims a worker that died meanwhile.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "shmmap.h"
#include "testutil.h"

#define MAP "crash"
#define NFILL 48     /* other entries, sharing the few buckets */
#define MAX_K 2000   /* more crash points than any operation has */

static struct tu_coord co;
static unsigned long g_k; /* the crash point of the last kill, for messages */
static shmmap *g_sm;
static shmmap_map g_m;

static void setup(void)
{
	/* Few buckets and stripes: chains of several entries, so an entry is
	 * replaced or unlinked in the middle of a chain as well as at its head
	 * (max_buckets: the map does not grow; resizes are crashed below). */
	ck_assert_int_eq(tu_coord_start(&co, "8M",
					"[map]\nbuckets = 16\nstripes = 4\nvalue_max = 256K\n"
					"max_buckets = 16\n"),
			 0);
	int rc = shmmap_attach(co.sock, &g_sm);
	ck_assert_msg(rc == 0, "attach: %s", shmmap_strerror(rc));
	rc = shmmap_open(g_sm, MAP, SHMMAP_CREATE, &g_m);
	ck_assert_msg(rc == 0, "open: %s", shmmap_strerror(rc));
	for (int i = 0; i < NFILL; i++) {
		char k[32], v[64];
		int kl = snprintf(k, sizeof k, "fill-%d", i);
		int vl = snprintf(v, sizeof v, "value of fill-%d", i);
		ck_assert_int_eq(shmmap_put(g_sm, g_m, k, (size_t)kl, v, (size_t)vl, 0, 0), 0);
	}
}

static void teardown(void)
{
	if (g_sm)
		shmmap_detach(g_sm);
	g_sm = NULL;
	tu_coord_cleanup(&co);
}

/* Every entry but the test's own is still there, intact. */
static void expect_fill_intact(void)
{

	for (int i = 0; i < NFILL; i++) {
		char k[32], v[64], buf[64];
		int kl = snprintf(k, sizeof k, "fill-%d", i);
		int vl = snprintf(v, sizeof v, "value of fill-%d", i);
		size_t n = 0;
		int rc = shmmap_get(g_sm, g_m, k, (size_t)kl, buf, sizeof buf, &n);
		CK_MSG(rc == 0 && n == (size_t)vl && memcmp(buf, v, n) == 0,
		       "%s damaged: rc %d len %zu (after crash point %lu)", k, rc, n, g_k);
	}
}

/* No slot in use but ours: the coordinator recovered the dead writer. */
static bool recovered(void *arg)
{
	(void)arg;
	for (uint32_t i = 0; i < g_sm->geom.max_clients; i++) {
		if (i == g_sm->slot)
			continue;
		if (atomic_load(&seg_slot(&g_sm->seg, &g_sm->geom, i)->state) != SLOT_FREE)
			return false;
	}
	return true;
}

static void problem_cb(void *arg, const char *what)
{
	char *first = arg;
	if (!first[0])
		snprintf(first, 512, "%s", what);
}

/* The whole-segment check on the quiet segment: nothing to report. */
static void expect_clean(const char *ctx, unsigned long k)
{
	char first[512] = "";
	struct check_report r = {.problem = problem_cb, .arg = first};
	int rc = shmmap__check(&g_sm->seg, &g_sm->geom, &r);
	CK_MSG(rc == 0 && r.errors == 0 && r.leaked == 0,
	       "%s, killed at store %lu: check: rc %d, %llu problem(s), %llu leaked; first: %s",
	       ctx, k, rc, (unsigned long long)r.errors, (unsigned long long)r.leaked, first);
}

/* A value of n bytes, all of them derived from tag. */
static void make_value(char *buf, size_t n, char tag)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(tag + (char)(i % 23));
}

/* OP_SPARE_REPLACE: a replace by a writer whose record holds a spare
 * block of the new value's size class (see child()). */
enum op { OP_INSERT, OP_REPLACE, OP_DELETE, OP_INCR_NEW, OP_INCR_OLD, OP_SPARE_REPLACE, OP_REWRITE,
	  OP_INCR_IN_PLACE, OP_INCR_TTL };

struct scenario {
	const char *name;
	enum op op;
	size_t old_len, new_len; /* value sizes: pick classes and page runs */
	bool full;               /* the segment is full: the write must evict */
	uint32_t old_ttl;        /* the old value's TTL (0: none); a rewrite's new value has
				  * twice that, other new values none */
};

/* Fill the segment with values of n bytes until no page and no block of
 * their class is free: the next put of that size must evict one. */
static unsigned fill_next; /* the number of the next fill key */

static void fill_segment(size_t n)
{
	static char v[16384];
	unsigned next = fill_next;
	int cls = shmmap__class_of(&g_sm->seg, &g_sm->geom, sizeof(struct seg_entry) + 7 + n);
	ck_assert_int_ge(cls, 0);
	const struct seg_class *c = seg_class(&g_sm->seg, &g_sm->geom, (uint32_t)cls);
	for (int i = 0; i < 100000; i++) {
		if (seg_hdr(&g_sm->seg)->pool_free == 0 && c->partial == 0) {
			fill_next = next;
			return;
		}
		char k[32];
		/* 7 bytes, as long as the test's key: the same size class */
		int kn = snprintf(k, sizeof k, "f%06u", next++ % 1000000);
		make_value(v, n, 'f');
		CK_EQ(shmmap_put(g_sm, g_m, k, (size_t)kn, v, n, 0, 0), 0);
	}
	ck_abort_msg("the segment never filled up");
}

/* The fill keys (of fill_segment(n)) read last by read_fill. */
static unsigned fill_read[65536], fill_nread;

/* Thin the fill (of fill_segment(n)) out, and read what is left: of the
 * fill keys in the map (found through its chains), delete every other one
 * (their blocks are free, on every page of the class), and read the others
 * (a get: their entries are used), remembered in fill_read. */
static void read_fill(size_t n)
{
	static char v[16384], want[16384];
	static unsigned found[65536];
	unsigned nfound = 0;
	const struct map_view *mv;
	struct tbl t;
	ck_assert_int_eq(shmmap__resolve(g_sm, g_m, &mv), 0);
	ck_assert(shmmap__tbl_load(&g_sm->seg, mv, &t));
	for (uint32_t b = 0; b < t.cur_n; b++) {
		uint64_t off = atomic_load(&t.cur[b]);
		for (int steps = 0; off && steps < 1000000 && nfound < 65536; steps++) {
			struct seg_entry *e = seg_ptr(&g_sm->seg, off);
			uint32_t vf = ent_vlenf(e);
			const char *key = (const char *)ent_key(e, vf);
			unsigned num;
			if (e->klen == 7 && key[0] == 'f' && sscanf(key + 1, "%6u", &num) == 1)
				found[nfound++] = num;
			off = atomic_load(&e->next);
		}
	}
	make_value(want, n, 'f');
	fill_nread = 0;
	for (unsigned j = 0; j < nfound; j++) {
		char k[32];
		int kn = snprintf(k, sizeof k, "f%06u", found[j]);
		if (j % 2) {
			CK_EQ(shmmap_del(g_sm, g_m, k, (size_t)kn), 0);
			continue;
		}
		size_t got = 0;
		int rc = shmmap_get(g_sm, g_m, k, (size_t)kn, v, sizeof v, &got);
		CK_MSG(rc == 0 && got == n && memcmp(v, want, n) == 0, "%s damaged before the test", k);
		fill_read[fill_nread++] = found[j];
	}
}

/* Every key read_fill read still holds its value. */
static void expect_read_fill_intact(size_t n, unsigned long k)
{
	static char v[16384], want[16384];
	make_value(want, n, 'f');
	for (unsigned j = 0; j < fill_nread; j++) {
		char key[32];
		int kn = snprintf(key, sizeof key, "f%06u", fill_read[j]);
		size_t got = 0;
		int rc = shmmap_get(g_sm, g_m, key, (size_t)kn, v, sizeof v, &got);
		CK_MSG(rc == 0 && got == n && memcmp(v, want, n) == 0,
		       "read key %s lost or damaged (rc %d, %zu bytes) after store %lu", key, rc,
		       got, k);
	}
}

/* Put the key in its "before" state. */
static void prepare(const struct scenario *sc, const char *key, char *old)
{
	size_t kl = strlen(key);
	int rc = shmmap_del(g_sm, g_m, key, kl);
	CK_MSG(rc == 0 || rc == -ENOENT, "del: %d", rc);
	switch (sc->op) {
	case OP_REPLACE:
	case OP_SPARE_REPLACE:
	case OP_REWRITE:
	case OP_DELETE:
		make_value(old, sc->old_len, 'a');
		CK_EQ(shmmap_put(g_sm, g_m, key, kl, old, sc->old_len, sc->old_ttl, 0), 0);
		break;
	case OP_INCR_OLD:
	case OP_INCR_IN_PLACE:
		CK_EQ(shmmap_put(g_sm, g_m, key, kl, "41", 2, 0, 0), 0);
		break;
	case OP_INCR_TTL:
		CK_EQ(shmmap_put(g_sm, g_m, key, kl, "42", 2, 3600, 0), 0);
		break;
	default:
		break;
	}
	if (sc->full)
		fill_segment(sc->new_len);
}

/* In a forked child: attach and open map name, or exit 20. */
static void child_attach(const char *name, shmmap **sm, shmmap_map *m)
{
	if (shmmap_attach(co.sock, sm) < 0 || shmmap_open(*sm, name, 0, m) < 0)
		_exit(20);
}

/* In the child: attach, arm the hook, do the operation.  Exits 0 if the
 * operation completed (k was past its last store). */
static void child(const struct scenario *sc, const char *key, unsigned long k, int sig,
		  _Atomic uint32_t *slot_out)
{
	shmmap *sm;
	shmmap_map m;
	child_attach(MAP, &sm, &m);
	if (slot_out)
		atomic_store(slot_out, sm->slot + 1);
	static char val[256 * 1024];
	make_value(val, sc->new_len, 'n');
	size_t kl = strlen(key);
	int64_t out;
	if (sc->op == OP_SPARE_REPLACE || sc->op == OP_REWRITE || sc->op == OP_INCR_IN_PLACE) {
		/* Rewrite another key, as long as this one, with a value of the
		 * new size (a counter: incr it): the block it replaces stays in
		 * this thread's record as its spare, of the class the operation
		 * below needs, which it then takes instead of allocating (or, to
		 * rewrite in place, does without).  But a value without an
		 * expiry that fits its entry's block is rewritten in place at
		 * once, by put's fast path (putfast.h): no block, and no spare
		 * unless that path had to give way to the general one. */
		for (int i = 0; i < 2; i++)
			if ((sc->op == OP_INCR_IN_PLACE ? shmmap_incr(sm, m, "spare-k", 7, 1, &out)
							: shmmap_put(sm, m, "spare-k", 7, val, sc->new_len,
								     sc->op == OP_REWRITE ? 2 * sc->old_ttl : 0,
								     0)) != 0)
				_exit(22);
		if (!(sc->op == OP_REWRITE && !sc->old_ttl) &&
		    !atomic_load(&seg_slot(&sm->seg, &sm->geom, sm->slot)->intent[0].spare))
			_exit(23);
	}
	_Atomic uint64_t *spare = &seg_slot(&sm->seg, &sm->geom, sm->slot)->intent[0].spare;
	uint64_t spare0 = atomic_load(spare);
	shmmap__crash_arm(k, sig);
	int rc;
	switch (sc->op) {
	case OP_INSERT:
	case OP_REPLACE:
	case OP_SPARE_REPLACE:
		rc = shmmap_put(sm, m, key, kl, val, sc->new_len, 0, 0);
		break;
	case OP_REWRITE:
		rc = shmmap_put(sm, m, key, kl, val, sc->new_len, 2 * sc->old_ttl, 0);
		break;
	case OP_DELETE:
		rc = shmmap_del(sm, m, key, kl);
		break;
	case OP_INCR_TTL:
		rc = shmmap_incr(sm, m, key, kl, INT64_MAX - 42, &out);
		break;
	default:
		rc = shmmap_incr(sm, m, key, kl, 1, &out);
		break;
	}
	shmmap__crash_arm(0, 0);
	/* A rewrite in place takes no block: a spare it had stays as it was.
	 * (Without one, a put that found the stripe lock held, by the
	 * coordinator's background work say, allocated before it knew and
	 * keeps that block as its spare.) */
	if (rc == 0 && (sc->op == OP_REWRITE || sc->op == OP_INCR_IN_PLACE) && spare0 &&
	    atomic_load(spare) != spare0)
		_exit(24);
	_exit(rc == 0 ? 0 : 21);
}

/* The expiry (CLOCK_REALTIME ms) of key's entry, found through its chain;
 * 0 if it has none. */
static uint64_t entry_expiry(const char *key)
{
	const struct map_view *v;
	struct tbl t;
	size_t kl = strlen(key);
	ck_assert_int_eq(shmmap__resolve(g_sm, g_m, &v), 0);
	ck_assert(shmmap__tbl_load(&g_sm->seg, v, &t));
	uint64_t h = shmmap__hash(&g_sm->geom, key, kl);
	uint64_t off = atomic_load(&t.cur[h & (t.cur_n - 1)]);
	for (int steps = 0; off && steps < 1000; steps++) {
		struct seg_entry *e = seg_ptr(&g_sm->seg, off);
		uint32_t vf = ent_vlenf(e);
		if (e->klen == kl && memcmp(ent_key(e, vf), key, kl) == 0)
			return ent_expiry(e, vf);
		off = atomic_load(&e->next);
	}
	ck_abort_msg("%s: no entry", key);
	return 0;
}

/* After the crash: the key holds exactly the old or exactly the new state. */
static bool expect_old_or_new(const struct scenario *sc, const char *key, const char *old,
			      unsigned long k)
{
	static char buf[256 * 1024], want[256 * 1024];
	size_t n = 0;
	int rc = shmmap_get(g_sm, g_m, key, strlen(key), buf, sizeof buf, &n);
	make_value(want, sc->new_len, 'n');
	bool is_old = false, is_new = false;
	switch (sc->op) {
	case OP_INSERT:
		is_old = rc == -ENOENT;
		is_new = rc == 0 && n == sc->new_len && memcmp(buf, want, n) == 0;
		break;
	case OP_REPLACE:
	case OP_SPARE_REPLACE:
	case OP_REWRITE:
		is_old = rc == 0 && n == sc->old_len && memcmp(buf, old, n) == 0;
		is_new = rc == 0 && n == sc->new_len && memcmp(buf, want, n) == 0;
		break;
	case OP_DELETE:
		is_old = rc == 0 && n == sc->old_len && memcmp(buf, old, n) == 0;
		is_new = rc == -ENOENT;
		break;
	case OP_INCR_NEW:
		is_old = rc == -ENOENT;
		is_new = rc == 0 && n == 1 && buf[0] == '1';
		break;
	case OP_INCR_TTL:
		is_old = rc == 0 && n == 2 && memcmp(buf, "42", 2) == 0;
		is_new = rc == 0 && n == 19 && memcmp(buf, "9223372036854775807", 19) == 0;
		break;
	case OP_INCR_OLD:
	case OP_INCR_IN_PLACE:
		is_old = rc == 0 && n == 2 && memcmp(buf, "41", 2) == 0;
		is_new = rc == 0 && n == 2 && memcmp(buf, "42", 2) == 0;
		break;
	}
	CK_MSG(is_old || is_new, "%s, killed at store %lu: torn state: get rc %d, length %zu",
	       sc->name, k, rc, n);
	if (sc->op == OP_REWRITE && sc->old_ttl) {
		/* The expiry went with the value: about old_ttl from now with the
		 * old one, twice that with the new one. */
		uint64_t left = entry_expiry(key) - (uint64_t)time(NULL) * 1000;
		uint64_t want_s = is_new ? 2ull * sc->old_ttl : sc->old_ttl;
		CK_MSG(left / 1000 + 120 > want_s && left / 1000 < want_s + 120,
		       "%s, killed at store %lu: the %s value expires in %llu s", sc->name, k,
		       is_new ? "new" : "old", (unsigned long long)(left / 1000));
	}
	return is_new;
}

static void wait_recovered(const char *ctx, unsigned long k)
{
	CK_MSG(tu_wait(recovered, NULL, 5000), "%s, killed at store %lu: slot not recovered",
	       ctx, k);
}

/* Kill the writer at every store of the operation in turn. */
static void sweep(const struct scenario *sc)
{
	static char old[256 * 1024];
	const char *key = "the-key";
	unsigned long k;
	unsigned news = 0;
	for (k = 1; k <= MAX_K; k++) {
		prepare(sc, key, old);
		pid_t pid = tu_fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			child(sc, key, k, SIGKILL, NULL);
		int st = tu_waitpid(pid, 10000);
		CK_MSG(st != -1, "%s: child hung at store %lu", sc->name, k);
		if (WIFEXITED(st)) {
			CK_MSG(WEXITSTATUS(st) == 0, "%s: the operation failed (exit %d) at k=%lu",
			       sc->name, WEXITSTATUS(st), k);
			wait_recovered(sc->name, k);
			CK_MSG(expect_old_or_new(sc, key, old, k), "%s: completed but not applied",
			       sc->name);
			break;
		}
		CK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: child died oddly (%#x)",
		       sc->name, st);
		wait_recovered(sc->name, k);
		news += expect_old_or_new(sc, key, old, k);
		g_k = k;
		expect_fill_intact();
		expect_clean(sc->name, k);
		/* The stripe and the allocator work: a write and a read of the key.
		 * In a full segment, a value of the fillers' size (so that what it
		 * evicts is a filler, not one of the entries checked above). */
		static char after[16384], buf[16384];
		size_t an = sc->full ? sc->new_len : 5, n;
		make_value(after, an, 'z');
		CK_EQ(shmmap_put(g_sm, g_m, key, strlen(key), after, an, 0, 0), 0);
		CK_EQ(shmmap_get(g_sm, g_m, key, strlen(key), buf, sizeof buf, &n), 0);
		CK_MSG(n == an && memcmp(buf, after, an) == 0, "%s: read back failed", sc->name);
	}
	CK_MSG(k <= MAX_K, "%s: never completed", sc->name);
	/* Not vacuous: the operation was cut at many stores, both before and
	 * after the one that makes it visible. */
	CK_MSG(k > 8, "%s: only %lu crash points", sc->name, k - 1);
	CK_MSG(news > 0 && news < k - 1, "%s: %u of %lu crashes left it applied", sc->name, news,
	       k - 1);
	expect_clean(sc->name, k);
	fprintf(stderr, "  %s: killed at each of %lu stores, %u left it applied\n", sc->name,
		k - 1, news);
}

/* The sweeps of one operation each.  Sizes: each scenario's values go to
 * a size class of their own (so the class starts without a page: the page
 * pool is crossed too), and one replace uses values bigger than a page
 * (runs of pages). */
static const struct scenario one_op[] = {
	{"insert", OP_INSERT, 0, 3000, false, 0},
	{"replace", OP_REPLACE, 5000, 7000, false, 0},
	{"replace of page runs", OP_REPLACE, 100 * 1024, 140 * 1024, false, 0},
	/* Takes its block from the record's spare, and keeps the block it
	 * replaces as the next spare: no allocator call either way. */
	{"replace from a spare", OP_SPARE_REPLACE, 6000, 7000, false, 0},
	/* A value of the entry's own size class, small enough for the undo
	 * record: the key holds the old value or the new one, whole (the
	 * lock's taker puts the old one back). */
	{"rewrite in place", OP_REWRITE, 180, 184, false, 0},
	/* ...of a key with an expiry: the expiry is put back with the value. */
	{"rewrite in place of an expiring key", OP_REWRITE, 180, 184, false, 3600},
	/* Drops the key's expiry: the stripe's count of expiry slots changes
	 * with it (and is recounted by a repair). */
	{"replace dropping an expiry", OP_REPLACE, 5000, 5004, false, 3600},
	{"delete", OP_DELETE, 9000, 0, false, 0},
	/* Slabs of several pages (alloc.c): a class's first slab of 8 pages
	 * carved (its SPAN pages, then its head), and a replace whose old
	 * block empties a slab of 4 pages (all 4 go back to the pool) while
	 * the new one takes a slab of 8. */
	{"insert into a slab of 8 pages", OP_INSERT, 0, 33000, false, 0},
	{"replace across slabs of several pages", OP_REPLACE, 12000, 40000, false, 0},
};
#define NSWEEPS ((int)(sizeof one_op / sizeof one_op[0]))

START_TEST(crash_sweep)
{
	sweep(&one_op[_i]);
}
END_TEST

/* A put into a full segment: it evicts (unlink and free a victim) first. */
START_TEST(crash_evicting_put)
{
	struct scenario sc = {"insert that evicts", OP_INSERT, 0, 5000, true, 0};
	sweep(&sc);
	struct shmmap_stats st;
	ck_assert_int_eq(shmmap_stats(g_sm, g_m, &st), 0);
	CK_MSG(st.evictions > 0, "nothing was evicted: the scenario did not test eviction");
}
END_TEST

/* ---- a put killed while it empties a page for another size class ---- */

/* Pages some drainer still marks (none once every drainer is gone). */
static unsigned drained_pages(void)
{
	unsigned n = 0;
	for (uint32_t i = 0; i < g_sm->geom.npages; i++) {
		const struct seg_page *p = seg_page(&g_sm->seg, &g_sm->geom, i);
		n += p->kind == PAGE_SLAB && p->drain != 0;
	}
	return n;
}

/* A child doing sc's write of key, killed (SIGKILL) at its k-th store:
 * its wait status, once it ended (fails the test if it hung). */
static int put_killed_at(const struct scenario *sc, const char *key, unsigned long k)
{
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		child(sc, key, k, SIGKILL, NULL);
	int st = tu_waitpid(pid, 10000);
	CK_MSG(st != -1, "child hung at store %lu", k);
	g_k = k;
	return st;
}

/*
 * The segment is full of 200 B values; a put of 5000 B has no page of its
 * class, so it empties a page of another class (evict.c: handover) before
 * it can allocate.  Killed at stores spread over the whole drain (hundreds
 * of evictions, each several stores): afterwards the key is old or new,
 * the segment checks clean (no leak, no list that lost a page), no page is
 * left marked draining, and the next put that needs a handover works.
 */
START_TEST(crash_handover)
{
	const struct scenario sc = {"insert that empties a page", OP_INSERT, 0, 5000, false, 0};
	const char *key = "the-key";
	static char old[8];
	uint64_t h0 = atomic_load(&seg_hdr(&g_sm->seg)->handovers);
	unsigned long k, kills = 0, news = 0;
	for (k = 1; k <= 100000; k += k < 40 ? 1 : 41 + k / 16) {
		prepare(&sc, key, old);
		fill_segment(200); /* no free page: the put's class must take one */
		int st = put_killed_at(&sc, key, k);
		if (WIFEXITED(st)) {
			CK_MSG(WEXITSTATUS(st) == 0, "the put failed (exit %d) at k=%lu",
			       WEXITSTATUS(st), k);
			wait_recovered(sc.name, k);
			CK_MSG(expect_old_or_new(&sc, key, old, k), "completed but not applied");
			break;
		}
		CK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child died oddly (%#x)", st);
		kills++;
		wait_recovered(sc.name, k);
		news += expect_old_or_new(&sc, key, old, k);
		CK_MSG(drained_pages() == 0, "killed at store %lu: %u page(s) still marked draining",
		       k, drained_pages());
		expect_clean(sc.name, k);
	}
	CK_MSG(k <= 100000, "never completed");
	/* Not vacuous: it was cut many times, and a handover happened. */
	CK_MSG(kills > 40, "only %lu kills", kills);
	CK_MSG(atomic_load(&seg_hdr(&g_sm->seg)->handovers) > h0, "no page was handed over");
	expect_clean(sc.name, k);
	fprintf(stderr, "  %s: killed at %lu of its %lu stores, %lu left it applied\n", sc.name,
		kills, k, news);
}
END_TEST

/*
 * The same with read entries on the pages: the fill is thinned out (every
 * other key deleted, so each page of the class has free blocks but no page
 * is free) and the rest read, so the page a handover empties holds used
 * entries only, which move to free blocks on the class's other pages
 * instead of being evicted.  Killed at stores spread over the drain, most of
 * them in moves: afterwards every read key holds its value (moved or not,
 * never lost or torn), the segment checks clean, and no page is left marked
 * draining.
 */
START_TEST(crash_handover_moves)
{
	const struct scenario sc = {"insert that moves read entries", OP_INSERT, 0, 5000, false, 0};
	const char *key = "the-key";
	static char old[8];
	/* The fill of setup() goes: its small class, older and holding less,
	 * would give its page first. */
	for (int i = 0; i < NFILL; i++) {
		char fk[32];
		int kl = snprintf(fk, sizeof fk, "fill-%d", i);
		CK_EQ(shmmap_del(g_sm, g_m, fk, (size_t)kl), 0);
	}
	uint64_t m0 = atomic_load(&seg_hdr(&g_sm->seg)->moves);
	unsigned long k, kills = 0, reads = 0;
	/* Fewer kills than the test above (each round refills and reads the
	 * segment): about half land inside a move. */
	for (k = 1; k <= 100000; k += k < 8 ? 1 : 41 + k / 8) {
		prepare(&sc, key, old);
		fill_segment(200);
		read_fill(200);
		reads += fill_nread;
		int st = put_killed_at(&sc, key, k);
		CK_MSG(WIFEXITED(st) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL),
		       "child died oddly (%#x)", st);
		if (WIFEXITED(st))
			CK_MSG(WEXITSTATUS(st) == 0, "the put failed (exit %d) at k=%lu",
			       WEXITSTATUS(st), k);
		wait_recovered(sc.name, k);
		bool applied = expect_old_or_new(&sc, key, old, k);
		CK_MSG(applied || !WIFEXITED(st), "completed but not applied");
		expect_read_fill_intact(200, k);
		CK_MSG(drained_pages() == 0, "killed at store %lu: %u page(s) still marked draining",
		       k, drained_pages());
		expect_clean(sc.name, k);
		if (WIFEXITED(st))
			break;
		kills++;
	}
	uint64_t moves = atomic_load(&seg_hdr(&g_sm->seg)->moves) - m0;
	CK_MSG(k <= 100000, "never completed");
	CK_MSG(kills > 20, "only %lu kills", kills);
	CK_MSG(moves > 0, "no entry was moved");
	fprintf(stderr, "  %s: killed at %lu of its %lu stores, %llu moves, %lu read keys checked\n",
		sc.name, kills, k, (unsigned long long)moves, reads);
}
END_TEST

START_TEST(crash_incr)
{
	sweep(&(struct scenario){"incr of a new key", OP_INCR_NEW, 0, 0, false, 0});
	sweep(&(struct scenario){"incr of a key", OP_INCR_OLD, 0, 0, false, 0});
	/* With a spare kept: the counter is rewritten in place. */
	sweep(&(struct scenario){"incr in place", OP_INCR_IN_PLACE, 0, 8, false, 0});
	/* A key with an expiry whose 19 digits do not fit the block taken for
	 * 20 digits without the slot: the incr lets it go and takes another. */
	sweep(&(struct scenario){"incr of an expiring key, second block", OP_INCR_TTL, 0, 0, false, 0});
}
END_TEST

/* ---- a frozen lock holder, then killed ---- */

static uint32_t stripe_of_key(const char *key)
{
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(g_sm, g_m, &v), 0);
	uint64_t h = shmmap__hash(&g_sm->geom, key, strlen(key));
	return ((uint32_t)h & (v->nbuckets - 1)) & (v->nstripes - 1);
}

static _Atomic uint32_t *stripe_lock_word(uint32_t stripe)
{
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(g_sm, g_m, &v), 0);
	return &v->stripes[stripe].lock;
}

static _Atomic uint32_t *stripe_seq_word(uint32_t stripe)
{
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(g_sm, g_m, &v), 0);
	return &v->stripes[stripe].seq;
}

/* A key of another bucket of the same stripe, into out. */
static void other_key_in_stripe(uint32_t stripe, char *out, size_t cap)
{
	for (int i = 0; i < 10000; i++) {
		snprintf(out, cap, "other-%d", i);
		if (stripe_of_key(out) == stripe)
			return;
	}
	ck_abort_msg("no other key in stripe %u", stripe);
}

/* One word of memory shared with the children (unmapped by the test). */
static _Atomic uint32_t *shared_word(void)
{
	_Atomic uint32_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				   -1, 0);
	ck_assert(w != MAP_FAILED);
	return w;
}

/*
 * A child that attaches (its slot + 1 into *slot, if slot), then puts a
 * 1-byte value under key, and exits 0 if the put returned want.  stepped:
 * it stops (SIGSTOP) at every crash point of the put, for the test to step.
 */
static pid_t spawn_put(const char *key, _Atomic uint32_t *slot, bool stepped, int want)
{
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		shmmap *sm;
		shmmap_map m;
		child_attach(MAP, &sm, &m);
		if (slot)
			atomic_store(slot, sm->slot + 1);
		if (stepped)
			shmmap__crash_arm_every(1, SIGSTOP);
		int rc = shmmap_put(sm, m, key, strlen(key), "w", 1, 0, 0);
		shmmap__crash_arm(0, 0);
		_exit(rc == want ? 0 : 21);
	}
	return pid;
}

/* A waiter: a put of key, which blocks while another holds the key's
 * stripe lock, and exits 0 once it succeeded. */
static pid_t spawn_waiter(const char *key)
{
	return spawn_put(key, NULL, false, 0);
}

struct waiting {
	_Atomic uint32_t *w;
};

static bool has_waiter(void *arg)
{
	struct waiting *x = arg;
	return (atomic_load(x->w) & LOCK_WAITERS) != 0;
}

/* Wait (deadline 10 s) until the child stops or ends; waitpid's result. */
static pid_t wait_stopped(pid_t pid, int *st)
{
	long long end = tu_mono_ms() + 10000;
	pid_t r;
	while ((r = waitpid(pid, st, WNOHANG | WUNTRACED)) == 0 && tu_mono_ms() < end) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL); /* polling the child's state, with a deadline */
	}
	return r;
}

/* Let a process stopped at a crash point (armed "every") go on to its next
 * one; false once it has ended instead (reaped: its status in *st). */
static bool step(pid_t pid, int *st)
{
	kill(pid, SIGCONT);
	pid_t r = wait_stopped(pid, st);
	CK_MSG(r == pid, "the stepped process neither stopped nor exited");
	return WIFSTOPPED(*st);
}

/* Step pid (armed "every") until lock word w is held by owner *slot. */
static void step_until_holds(pid_t pid, _Atomic uint32_t *w, _Atomic uint32_t *slot)
{
	int st;
	for (int i = 0; i < 1000; i++) {
		if ((atomic_load(w) & LOCK_OWNER_MASK) == atomic_load(slot))
			return;
		CK_MSG(step(pid, &st), "the process finished without taking the lock");
	}
	ck_abort_msg("the process never took the lock");
}

/*
 * The writer of sc stopped (SIGSTOP) at each store in turn; where it is
 * caught inside the key's stripe lock (with its undo record set, if
 * undo_only), a waiter on the same stripe blocks on it, the coordinator is
 * stopped (so that the waiter is the one to find the writer dead), the
 * writer is SIGKILLed, and the waiter must get the lock at once (the lock
 * taken over and the stripe repaired: a rewrite in place put back).
 * Elsewhere the writer is just killed.  After each, the key holds the old
 * or the new value, whole, and the segment checks clean.  While an undo
 * record is set and the seq is even, a reader must see the old value (the
 * new one is not committed: it will be put back).  first_only: stop at
 * the first catch.  Returns the number of catches.
 */
static unsigned freeze_kill_sweep(const struct scenario *sc, bool undo_only, bool first_only)
{
	static char old[8192];
	const char *key = "the-key";
	uint32_t stripe = stripe_of_key(key);
	_Atomic uint32_t *w = stripe_lock_word(stripe);
	char other[32];
	other_key_in_stripe(stripe, other, sizeof other);
	_Atomic uint32_t *slot = shared_word();
	unsigned caught = 0;
	for (unsigned long k = 1; k <= MAX_K && !(first_only && caught); k++) {
		prepare(sc, key, old);
		atomic_store(slot, 0);
		pid_t pid = tu_fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			child(sc, key, k, SIGSTOP, slot);
		int st;
		pid_t r = wait_stopped(pid, &st);
		CK_MSG(r == pid, "child neither stopped nor exited");
		if (WIFEXITED(st)) /* k past the last store */
			break;
		uint32_t owner = atomic_load(w) & LOCK_OWNER_MASK, me = atomic_load(slot);
		CK_MSG(me != 0, "the child stopped before it attached");
		struct seg_slot *sl = seg_slot(&g_sm->seg, &g_sm->geom, me - 1);
		if (owner == me && (!undo_only || atomic_load(&sl->undo[0].off))) {
			caught++;
			if (undo_only && !(atomic_load(stripe_seq_word(stripe)) & 1)) {
				/* Readers do not wait for an even seq: what they see
				 * must be what stays. */
				static char buf[8192];
				size_t n = 0;
				int rc = shmmap_get(g_sm, g_m, key, strlen(key), buf, sizeof buf, &n);
				CK_MSG(rc == 0 && n == sc->old_len && memcmp(buf, old, n) == 0,
				       "store %lu: the undo record is set and the seq even, but a "
				       "reader sees another value than the old one (rc %d, %zu B)",
				       k, rc, n);
			}
			pid_t wp = spawn_waiter(other);
			struct waiting x = {w};
			CK_MSG(tu_wait(has_waiter, &x, 5000), "the waiter never blocked on the lock");
			CK_EQ(waitpid(wp, &st, WNOHANG), 0); /* still blocked */
			CK_EQ(kill(co.pid, SIGSTOP), 0);
			long long t0 = tu_mono_ms();
			kill(pid, SIGKILL);
			int wst = tu_waitpid(wp, 5000);
			long long dt = tu_mono_ms() - t0;
			CK_EQ(kill(co.pid, SIGCONT), 0);
			CK_MSG(wst != -1 && WIFEXITED(wst) && WEXITSTATUS(wst) == 0,
			       "the waiter failed (%#x)", wst);
			CK_MSG(dt < 1000, "the waiter got the lock %lld ms after the kill", dt);
			CK_EQ(atomic_load(&sl->undo[0].off), 0); /* put back and cleared */
		} else {
			kill(pid, SIGKILL);
		}
		ck_assert_int_ge(tu_waitpid(pid, 5000), 0);
		wait_recovered(sc->name, k);
		expect_old_or_new(sc, key, old, k);
		expect_fill_intact();
		expect_clean(sc->name, k);
	}
	munmap(slot, 4096);
	return caught;
}

START_TEST(frozen_holder_killed)
{
	const struct scenario sc = {"replace (frozen)", OP_REPLACE, 5000, 7000, false, 0};
	CK_MSG(freeze_kill_sweep(&sc, false, true) == 1,
	       "never caught the writer inside the stripe lock");
}
END_TEST

/* The same, at each store of a rewrite in place where its undo record is
 * set: the waiter puts the old value back before it writes. */
START_TEST(rewrite_frozen_then_killed_waiter_repairs)
{
	const struct scenario sc = {"rewrite in place (frozen)", OP_REWRITE, 180, 184, false, 0};
	unsigned caught = freeze_kill_sweep(&sc, true, false);
	/* The undo record is set across the seq change's stores. */
	CK_MSG(caught >= 3, "caught the writer inside a rewrite only %u times", caught);
	fprintf(stderr, "  rewrite frozen and killed: a waiter repaired %u times\n", caught);
}
END_TEST

/* For tu_wait: the process stopped (reaped as such), or a waiter sleeps on
 * the lock word. */
struct stop_or_block {
	pid_t pid;
	_Atomic uint32_t *w;
	bool stopped;
};

static bool stopped_or_blocked(void *arg)
{
	struct stop_or_block *a = arg;
	int st;
	if (waitpid(a->pid, &st, WNOHANG | WUNTRACED) == a->pid && WIFSTOPPED(st)) {
		a->stopped = true;
		return true;
	}
	return (atomic_load(a->w) & LOCK_WAITERS) != 0;
}

static bool waits_for_stripe(void *arg)
{
	struct seg_slot *sl = arg;
	return atomic_load(&sl->state) == SLOT_DEAD && sl->wait_kind == SLOT_WAIT_STRIPE;
}

/*
 * A writer killed in the middle of a rewrite in place, and the waiter that
 * takes its lock over stopped before it repairs: the undo record is the
 * old value's only copy, so the coordinator's recovery of the writer's slot
 * must wait for that stripe (the slot stays DEAD, waiting for a stripe, its
 * record set), not free the slot.  Once the waiter goes on, it puts the old
 * value back, and the slot is recovered.
 */
START_TEST(recovery_waits_for_a_stopped_repairer)
{
	static char old[8192];
	const struct scenario sc = {"rewrite (its repairer stopped)", OP_REWRITE, 180, 184, false, 0};
	const char *key = "the-key";
	uint32_t stripe = stripe_of_key(key);
	_Atomic uint32_t *w = stripe_lock_word(stripe), *seq = stripe_seq_word(stripe);
	char other[32];
	other_key_in_stripe(stripe, other, sizeof other);
	_Atomic uint32_t *slot = shared_word(), *wslot = shared_word();
	/* The writer, stopped inside the rewrite's seq change, its record set. */
	pid_t pid = -1;
	struct seg_slot *sl = NULL;
	int st;
	for (unsigned long k = 1; k <= MAX_K && pid < 0; k++) {
		prepare(&sc, key, old);
		atomic_store(slot, 0);
		pid_t p = tu_fork();
		ck_assert_int_ge(p, 0);
		if (p == 0)
			child(&sc, key, k, SIGSTOP, slot);
		CK_MSG(wait_stopped(p, &st) == p && WIFSTOPPED(st), "k %lu: the writer ended", k);
		uint32_t me = atomic_load(slot);
		CK_MSG(me != 0, "the writer stopped before it attached");
		sl = seg_slot(&g_sm->seg, &g_sm->geom, me - 1);
		if ((atomic_load(w) & LOCK_OWNER_MASK) == me && atomic_load(&sl->undo[0].off) &&
		    (atomic_load(seq) & 1)) {
			pid = p;
			break;
		}
		kill(p, SIGKILL);
		ck_assert_int_ge(tu_waitpid(p, 5000), 0);
		wait_recovered(sc.name, k);
	}
	CK_MSG(pid > 0, "never caught the writer inside the rewrite's seq change");
	/* A waiter on the stripe, stopped at every crash point, stepped until it
	 * sleeps on the writer's lock. */
	pid_t wp = spawn_put(other, wslot, true, 0);
	for (int i = 0;; i++) {
		struct stop_or_block a = {.pid = wp, .w = w};
		CK_MSG(i < 1000 && tu_wait(stopped_or_blocked, &a, 5000),
		       "the waiter neither stopped nor blocked on the lock");
		if (!a.stopped)
			break;
		kill(wp, SIGCONT);
	}
	/* The writer dies (the coordinator stopped meanwhile, so that the
	 * waiter is the one to find it dead); the waiter takes the lock over
	 * and stops in the repair, before it has put anything back. */
	CK_EQ(kill(co.pid, SIGSTOP), 0);
	kill(pid, SIGKILL);
	ck_assert_int_ge(tu_waitpid(pid, 5000), 0);
	pid_t r = wait_stopped(wp, &st);
	CK_EQ(kill(co.pid, SIGCONT), 0);
	CK_MSG(r == wp && WIFSTOPPED(st), "the waiter did not stop in the repair");
	CK_EQ(atomic_load(w) & LOCK_OWNER_MASK, atomic_load(wslot));
	CK_MSG(atomic_load(&sl->undo[0].off) != 0, "the undo record went before the repair");
	/* The coordinator finds the writer gone: its recovery waits. */
	CK_MSG(tu_wait(waits_for_stripe, sl, 5000),
	       "the dead writer's slot is not waiting for the stripe (state %u, waits for %u)",
	       atomic_load(&sl->state), sl->wait_kind);
	CK_MSG(atomic_load(&sl->undo[0].off) != 0, "the undo record was cleared under the repairer");
	/* The waiter goes on: it puts the old value back and writes. */
	while (step(wp, &st))
		;
	CK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the waiter failed (%#x)", st);
	wait_recovered(sc.name, 0);
	CK_MSG(!expect_old_or_new(&sc, key, old, 0), "the half-written value stayed");
	expect_fill_intact();
	expect_clean(sc.name, 0);
	munmap(slot, 4096);
	munmap(wslot, 4096);
}
END_TEST

/* ---- the sweep (check --repair) while writers write ---- */

struct load {
	_Atomic int stop;
	_Atomic unsigned long ops[4];
	_Atomic unsigned long acked[4][64]; /* last acknowledged version of a key */
};

static uint64_t fnv(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

/* A value: version, then filler whose length varies with it (so every
 * size class moves), then a checksum of the rest. */
static size_t versioned(char *buf, int w, int key, unsigned long ver)
{
	size_t n = 16 + (ver * 37 + (unsigned long)key * 11) % 1500;
	memcpy(buf, &ver, 8);
	for (size_t i = 8; i < n - 8; i++)
		buf[i] = (char)(w * 31 + key + (int)i);
	uint64_t h = fnv(buf, n - 8);
	memcpy(buf + n - 8, &h, 8);
	return n;
}

static void writer(struct load *L, int w)
{
	shmmap *sm;
	shmmap_map m;
	child_attach(MAP, &sm, &m);
	char buf[2048], k[32];
	for (unsigned long ver = 1; !atomic_load(&L->stop); ver++) {
		int key = (int)(ver % 64);
		int kl = snprintf(k, sizeof k, "w%d-%d", w, key);
		if (ver % 7 == 0) {
			int rc = shmmap_del(sm, m, k, (size_t)kl);
			if (rc < 0 && rc != -ENOENT)
				_exit(22);
			atomic_store(&L->acked[w][key], 0);
		} else {
			size_t n = versioned(buf, w, key, ver);
			int rc = shmmap_put(sm, m, k, (size_t)kl, buf, n, 0, 0);
			if (rc < 0)
				_exit(23);
			atomic_store(&L->acked[w][key], ver);
		}
		atomic_fetch_add(&L->ops[w], 1);
	}
	shmmap_detach(sm);
	_exit(0);
}

static int ctl_repair(void)
{
	char *argv[] = {getenv("SHMMAPCTL"), "--socket", co.sock, "check", "--repair", NULL};
	static char out[16384], err[4096];
	ck_assert_msg(argv[0] != NULL, "$SHMMAPCTL is not set");
	int rc = tu_run(argv, out, sizeof out, err, sizeof err);
	if (rc != 0)
		fprintf(stderr, "check --repair: exit %d\n%s%s", rc, out, err);
	return rc;
}

static bool writers_moved(void *arg)
{
	struct load *L = arg;
	for (int w = 0; w < 3; w++)
		if (atomic_load(&L->ops[w]) < 200)
			return false;
	return true;
}

START_TEST(sweep_under_load)
{
	struct load *L = mmap(NULL, sizeof *L, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			      -1, 0);
	ck_assert(L != MAP_FAILED);
	/* A leaked block for the repair to find. */
	struct lock_ctx lk = {.s = &g_sm->seg, .g = &g_sm->geom, .owner = g_sm->slot + 1};
	_Atomic uint64_t rec = 0;
	ck_assert_int_eq(shmmap__alloc(&g_sm->seg, &g_sm->geom, &lk, 333, &rec), 0);
	pid_t pids[3];
	for (int w = 0; w < 3; w++) {
		pids[w] = tu_fork();
		ck_assert_int_ge(pids[w], 0);
		if (pids[w] == 0)
			writer(L, w);
	}
	CK_MSG(tu_wait(writers_moved, L, 10000), "the writers did not get going");
	/* Sweeps, each while the writers allocate, link, unlink and free. */
	for (int i = 0; i < 15; i++)
		CK_EQ(ctl_repair(), 0);
	unsigned long before[3];
	for (int w = 0; w < 3; w++)
		before[w] = atomic_load(&L->ops[w]);
	atomic_store(&L->stop, 1);
	for (int w = 0; w < 3; w++) {
		int st = tu_waitpid(pids[w], 10000);
		CK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d: status %#x", w,
		       st);
		CK_MSG(before[w] > 200, "writer %d made no progress", w);
	}
	/* Every acknowledged version is there, intact. */
	char buf[2048], want[2048], k[32];
	for (int w = 0; w < 3; w++) {
		for (int key = 0; key < 64; key++) {
			unsigned long ver = atomic_load(&L->acked[w][key]);
			int kl = snprintf(k, sizeof k, "w%d-%d", w, key);
			size_t n = 0;
			int rc = shmmap_get(g_sm, g_m, k, (size_t)kl, buf, sizeof buf, &n);
			if (ver == 0) {
				CK_MSG(rc == -ENOENT, "%s: deleted but get gives %d", k, rc);
				continue;
			}
			size_t wn = versioned(want, w, key, ver);
			CK_MSG(rc == 0 && n == wn && memcmp(buf, want, n) == 0,
			       "%s: version %lu lost or torn (rc %d, length %zu)", k, ver, rc, n);
		}
	}
	expect_fill_intact();
	/* The leak is gone (the repair freed it), and nothing else is wrong
	 * once the coordinator has seen the writers go. */
	wait_recovered("writers gone", 0);
	expect_clean("after the sweeps", 0);
	munmap(L, sizeof *L);
}
END_TEST

/* ---- the coordinator killed ---- */

/* A worker that attaches (and puts key, if not NULL), tells its slot, and
 * waits to be killed.  Returns once it is attached. */
static pid_t idle_worker(const char *key, uint32_t *slot)
{
	int ready[2];
	ck_assert_int_eq(pipe(ready), 0);
	pid_t w = tu_fork();
	ck_assert_int_ge(w, 0);
	if (w == 0) {
		shmmap *sm;
		shmmap_map m;
		child_attach(MAP, &sm, &m);
		if (key && shmmap_put(sm, m, key, strlen(key), "x", 1, 0, 0) < 0)
			_exit(21);
		if (write(ready[1], &sm->slot, sizeof sm->slot) != sizeof sm->slot)
			_exit(22);
		for (;;)
			pause();
	}
	close(ready[1]);
	uint32_t s;
	ck_assert_int_eq(read(ready[0], &s, sizeof s), (int)sizeof s);
	close(ready[0]);
	if (slot)
		*slot = s;
	return w;
}

START_TEST(coordinator_killed)
{
	/* A second worker, attached, that dies while the coordinator is down. */
	pid_t w = idle_worker("from-the-dead", NULL);

	kill(co.pid, SIGKILL);
	ck_assert_int_ge(tu_waitpid(co.pid, 5000), 0);
	co.pid = 0;
	/* The data path goes on without a coordinator. */
	CK_EQ(shmmap_put(g_sm, g_m, "while-down", 10, "still here", 10, 0, 0), 0);
	expect_fill_intact();
	kill(w, SIGKILL);
	ck_assert_int_ge(tu_waitpid(w, 5000), 0);
	CK_EQ(shmmap_put(g_sm, g_m, "while-down-2", 12, "also", 4, 0, 0), 0);

	ck_assert_int_eq(tu_coord_restart(&co), 0);
	/* This attachment resumes its slot on its next request. */
	shmmap_map m2;
	int rc = shmmap_open(g_sm, "after-restart", SHMMAP_CREATE, &m2);
	CK_MSG(rc == 0, "open after the restart: %s", shmmap_strerror(rc));
	CK_EQ(shmmap_put(g_sm, m2, "k", 1, "v", 1, 0, 0), 0);
	/* The slot of the worker that died meanwhile is reclaimed. */
	wait_recovered("worker dead while the coordinator was down", 0);
	char buf[16];
	size_t n;
	CK_EQ(shmmap_get(g_sm, g_m, "while-down", 10, buf, sizeof buf, &n), 0);
	CK_MSG(n == 10 && memcmp(buf, "still here", 10) == 0, "write made while down lost");
	CK_EQ(shmmap_get(g_sm, g_m, "from-the-dead", 13, buf, sizeof buf, &n), 0);
	expect_fill_intact();
	expect_clean("coordinator restart", 0);
	/* A new worker attaches and sees everything. */
	pid_t r = tu_fork();
	ck_assert_int_ge(r, 0);
	if (r == 0) {
		shmmap *sm;
		shmmap_map m;
		child_attach(MAP, &sm, &m);
		char b[16];
		size_t len;
		_exit(shmmap_get(sm, m, "while-down-2", 12, b, sizeof b, &len) == 0 && len == 4 ? 0
											       : 21);
	}
	int st = tu_waitpid(r, 10000);
	CK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "new worker: %#x", st);
}
END_TEST

/*
 * The coordinator killed in the middle of its own work: holding allocator
 * locks with the allocator half-updated, a stripe lock with its counter
 * odd, and a map half dropped.  (The state is made by hand, in the very
 * shape those instants leave.)  A restarted coordinator must take all of
 * it over and repair it, without losing an entry.
 */
START_TEST(coordinator_died_mid_work)
{
	shmmap_map doomed;
	ck_assert_int_eq(shmmap_open(g_sm, "doomed", SHMMAP_CREATE, &doomed), 0);
	CK_EQ(shmmap_put(g_sm, doomed, "x", 1, "y", 1, 0, 0), 0);
	/* A worker that will die too, between an allocation and its link. */
	uint32_t wslot;
	pid_t w = idle_worker(NULL, &wslot);
	kill(co.pid, SIGKILL);
	ck_assert_int_ge(tu_waitpid(co.pid, 5000), 0);
	co.pid = 0;
	kill(w, SIGKILL);
	ck_assert_int_ge(tu_waitpid(w, 5000), 0);
	struct seg_intent *rec = &seg_slot(&g_sm->seg, &g_sm->geom, wslot)->intent[0];
	struct lock_ctx lk = {.s = &g_sm->seg, .g = &g_sm->geom, .owner = g_sm->slot + 1};
	ck_assert_int_eq(shmmap__alloc(&g_sm->seg, &g_sm->geom, &lk, 40, &rec->a), 0);

	struct seg *sg = &g_sm->seg;
	const struct seg_geom *g = &g_sm->geom;
	const struct map_view *v, *dv;
	ck_assert_int_eq(shmmap__resolve(g_sm, g_m, &v), 0);
	ck_assert_int_eq(shmmap__resolve(g_sm, doomed, &dv), 0);
	/* Allocator: class 0 and the pool locked by the dead coordinator, with
	 * class 0's list head and count and the pool's count wrong. */
	struct seg_class *c0 = seg_class(sg, g, 0);
	atomic_store(&c0->lock, LOCK_OWNER_COORD | LOCK_WAITERS);
	c0->partial = g->npages + 7;
	c0->used += 1000;
	atomic_store(&seg_hdr(sg)->pool_lock, LOCK_OWNER_COORD);
	seg_hdr(sg)->pool_free += 3;
	/* A stripe locked with its counter odd. */
	atomic_store(&v->stripes[1].lock, LOCK_OWNER_COORD);
	atomic_fetch_add(&v->stripes[1].seq, 1);
	/* A drop cut short: the map is INIT, its entries still chained. */
	atomic_store(&seg_dir(sg, g, dv->idx)->state, MAP_INIT);

	ck_assert_int_eq(tu_coord_restart(&co), 0);
	/* Everything works: every stripe, every class, the pool. */
	for (int i = 0; i < 200; i++) {
		char k[32];
		int kn = snprintf(k, sizeof k, "after-%d", i);
		CK_EQ(shmmap_put(g_sm, g_m, k, (size_t)kn, "v", 1, 0, 0), 0);
	}
	static char big[100 * 1024];
	CK_EQ(shmmap_put(g_sm, g_m, "big", 3, big, sizeof big, 0, 0), 0);
	expect_fill_intact();
	shmmap_map again;
	CK_EQ(shmmap_open(g_sm, "doomed", 0, &again), -ENOENT);
	CK_EQ(shmmap_put(g_sm, doomed, "x", 1, "y", 1, 0, 0), -ESTALE);
	expect_clean("coordinator died mid-work", 0);
}
END_TEST

/* A second coordinator on the same segment (another socket) must refuse
 * to start and touch nothing: not the locks, not the header. */
START_TEST(second_coordinator_refused)
{
	char conf2[320], sock2[300], out[4096], err[4096];
	snprintf(conf2, sizeof conf2, "%s/second.ini", co.dir);
	snprintf(sock2, sizeof sock2, "%s/sock2", co.dir);
	FILE *f = fopen(conf2, "w");
	ck_assert(f != NULL);
	fprintf(f, "[segment]\nname = %s\nsize = 8M\n[server]\nsocket = %s\n", co.shm, sock2);
	fclose(f);
	uint32_t pid_before = atomic_load(&seg_hdr(&g_sm->seg)->coord_pid);
	uint64_t sweeps = atomic_load(&seg_hdr(&g_sm->seg)->sweeps);
	char *argv[] = {getenv("SHMMAPD"), "-c", conf2, "--foreground", NULL};
	ck_assert(argv[0] != NULL);
	int rc = tu_run(argv, out, sizeof out, err, sizeof err);
	CK_MSG(rc != 0 && strstr(err, "another coordinator is running"),
	       "second coordinator: exit %d, stderr: %s", rc, err);
	CK_EQ(atomic_load(&seg_hdr(&g_sm->seg)->coord_pid), pid_before);
	CK_EQ(atomic_load(&seg_hdr(&g_sm->seg)->sweeps), sweeps);
	CK_EQ(atomic_load(&seg_hdr(&g_sm->seg)->state), SEG_DIRTY);
	unlink(conf2);
	/* The first one still serves. */
	shmmap_map m2;
	CK_EQ(shmmap_open(g_sm, "still-served", SHMMAP_CREATE, &m2), 0);
	expect_fill_intact();
}
END_TEST

/*
 * A session outlives its process (a child inherited the socket), the slot
 * is recovered meanwhile by check --repair and given to a new client:
 * when the old session finally closes, the new client's slot is not
 * touched.
 */
struct log_wait {
	char needle[64];
};

static bool log_has(void *arg)
{
	struct log_wait *lw = arg;
	static char buf[1 << 16];
	FILE *f = fopen(co.log, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, lw->needle) != NULL;
}

START_TEST(stale_session_spares_reused_slot)
{
	int gcpipe[2], attached[2], go[2];
	ck_assert_int_eq(pipe(gcpipe), 0);
	ck_assert_int_eq(pipe(attached), 0);
	ck_assert_int_eq(pipe(go), 0);
	pid_t w = tu_fork();
	ck_assert_int_ge(w, 0);
	if (w == 0) {
		shmmap *sm;
		if (shmmap_attach(co.sock, &sm) < 0)
			_exit(20);
		/* A grandchild keeps the socket (and so the session) open. */
		pid_t gc = fork();
		if (gc == 0) {
			for (;;)
				pause();
		}
		_exit(gc > 0 && write(gcpipe[1], &gc, sizeof gc) == sizeof gc ? 0 : 22);
	}
	pid_t gc;
	ck_assert_int_eq(read(gcpipe[0], &gc, sizeof gc), (int)sizeof gc);
	ck_assert_int_ge(tu_waitpid(w, 5000), 0); /* the slot's process is gone */
	/* check --repair recovers the slot (its pid is dead), session or not. */
	CK_EQ(ctl_repair(), 0);
	wait_recovered("check --repair", 0);
	/* A new client gets that slot. */
	pid_t n = tu_fork();
	ck_assert_int_ge(n, 0);
	if (n == 0) {
		shmmap *sm;
		shmmap_map m;
		child_attach(MAP, &sm, &m);
		char x = 1;
		if (write(attached[1], &x, 1) != 1 || read(go[0], &x, 1) != 1)
			_exit(21);
		for (int i = 0; i < 100; i++) {
			char k[16];
			int kn = snprintf(k, sizeof k, "n%d", i);
			if (shmmap_put(sm, m, k, (size_t)kn, "v", 1, 0, 0) < 0)
				_exit(24);
		}
		/* Still our slot: LIVE, with our pid. */
		struct seg_slot *sl = seg_slot(&sm->seg, &sm->geom, sm->slot);
		if (atomic_load(&sl->state) != SLOT_LIVE || sl->pid != (uint32_t)getpid())
			_exit(25);
		shmmap_detach(sm);
		_exit(0);
	}
	char x;
	ck_assert_int_eq(read(attached[0], &x, 1), 1);
	/* Now the old session closes, and the coordinator handles it. */
	kill(gc, SIGKILL);
	struct log_wait lw;
	snprintf(lw.needle, sizeof lw.needle, "client pid %d (slot", (int)w);
	CK_MSG(tu_wait(log_has, &lw, 5000), "the old session was never closed");
	ck_assert_int_eq(write(go[1], &x, 1), 1);
	int st = tu_waitpid(n, 10000);
	CK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "the new client lost its slot to the old session's recovery: %#x", st);
	for (int i = 0; i < 2; i++) {
		close(gcpipe[i]);
		close(attached[i]);
		close(go[i]);
	}
}
END_TEST

/*
 * The wait hook (shmmap_set_wait_hook, for a binding's GIL): a put that
 * must wait for a lock a stopped process holds calls it before it sleeps,
 * in its own thread, and goes on once the holder is gone.
 */
static _Atomic int hook_calls;
static _Atomic pid_t hook_tid;
static void count_wait(void)
{
	atomic_store(&hook_tid, (pid_t)syscall(SYS_gettid));
	atomic_fetch_add(&hook_calls, 1);
}

struct hooked_put {
	shmmap *sm;
	shmmap_map m;
	_Atomic pid_t tid;
	_Atomic int rc, done;
};

static void *hooked_put_main(void *arg)
{
	struct hooked_put *h = arg;
	static char v[3000];
	make_value(v, sizeof v, 'h');
	atomic_store(&h->tid, (pid_t)syscall(SYS_gettid));
	atomic_store(&h->rc, shmmap_put(h->sm, h->m, "hooked", 6, v, sizeof v, 0, 0));
	atomic_store(&h->done, 1);
	return NULL;
}

static bool hook_was_called(void *arg)
{
	(void)arg;
	return atomic_load(&hook_calls) > 0;
}

static bool put_done(void *arg)
{
	return atomic_load(&((struct hooked_put *)arg)->done) != 0;
}

START_TEST(wait_hook_called_before_sleeping)
{
	shmmap_map hm;
	ck_assert_int_eq(shmmap_open(g_sm, "hookme", SHMMAP_CREATE, &hm), 0);
	static char v[3000];
	make_value(v, sizeof v, 'q');
	/* D stops right after taking the class lock of 3000-byte values. */
	pid_t d = tu_fork();
	ck_assert_int_ge(d, 0);
	if (d == 0) {
		shmmap *sm;
		shmmap_map m;
		if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, "hookme", 0, &m) < 0)
			_exit(20);
		shmmap__crash_arm(1, SIGSTOP);
		shmmap_put(sm, m, "d", 1, v, sizeof v, 0, 0);
		_exit(21);
	}
	int st;
	CK_MSG(wait_stopped(d, &st) == d && WIFSTOPPED(st), "D did not stop");
	/* A fresh attachment (no spare block): its put needs that lock. */
	struct hooked_put h = {0};
	ck_assert_int_eq(shmmap_attach(co.sock, &h.sm), 0);
	ck_assert_int_eq(shmmap_open(h.sm, "hookme", 0, &h.m), 0);
	atomic_store(&hook_calls, 0);
	shmmap_set_wait_hook(count_wait);
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, hooked_put_main, &h), 0);
	CK_MSG(tu_wait(hook_was_called, NULL, 5000), "the waiting put never called the hook");
	CK_MSG(!atomic_load(&h.done), "the put did not wait for D");
	CK_MSG(atomic_load(&hook_tid) == atomic_load(&h.tid),
	       "the hook ran in thread %d, not in the waiting one (%d)", (int)atomic_load(&hook_tid),
	       (int)atomic_load(&h.tid));
	kill(d, SIGKILL);
	ck_assert_int_ge(tu_waitpid(d, 5000), 0);
	CK_MSG(tu_wait(put_done, &h, 10000), "the put never ended after D died");
	pthread_join(t, NULL);
	int rc = atomic_load(&h.rc);
	CK_MSG(rc == 0 || rc == -EAGAIN, "put: %s", shmmap_strerror(rc));
	shmmap_set_wait_hook(NULL);
	shmmap_detach(h.sm);
	wait_recovered("a put waiting with a hook", 0);
	expect_clean("a put waiting with a hook", 0);
}
END_TEST

/*
 * The coordinator flushes a map while a dead process holds the allocator
 * lock of the entries' size class: it must not wait on that lock once per
 * entry, but leave the frees to a sweep, and finish within a second or so.
 */
START_TEST(flush_meets_dead_allocator_lock)
{
	shmmap_map fm;
	ck_assert_int_eq(shmmap_open(g_sm, "flushme", SHMMAP_CREATE, &fm), 0);
	static char v[3000];
	make_value(v, sizeof v, 'q');
	for (int i = 0; i < 300; i++) {
		char k[16];
		int kn = snprintf(k, sizeof k, "m%04d", i);
		ck_assert_int_eq(shmmap_put(g_sm, fm, k, (size_t)kn, v, sizeof v, 0, 0), 0);
	}
	int cls = shmmap__class_of(&g_sm->seg, &g_sm->geom, sizeof(struct seg_entry) + 5 + sizeof v);
	_Atomic uint32_t *clock_w = &seg_class(&g_sm->seg, &g_sm->geom, (uint32_t)cls)->lock;
	/* D stops right after taking that class lock, in a put of that size. */
	pid_t d = tu_fork();
	ck_assert_int_ge(d, 0);
	if (d == 0) {
		shmmap *sm;
		shmmap_map m;
		if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, "flushme", 0, &m) < 0)
			_exit(20);
		shmmap__crash_arm(1, SIGSTOP);
		shmmap_put(sm, m, "m9999", 5, v, sizeof v, 0, 0);
		_exit(21);
	}
	int st;
	pid_t r = wait_stopped(d, &st);
	CK_MSG(r == d && WIFSTOPPED(st), "D did not stop in the allocator");
	CK_MSG((atomic_load(clock_w) & LOCK_OWNER_MASK) != 0, "D holds no class lock");
	/* F asks for the flush; the coordinator blocks on D's lock. */
	pid_t f = tu_fork();
	ck_assert_int_ge(f, 0);
	if (f == 0) {
		shmmap *sm;
		shmmap_map m;
		if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, "flushme", 0, &m) < 0)
			_exit(20);
		_exit(shmmap_flush(sm, m) == 0 ? 0 : 22);
	}
	struct waiting x = {clock_w};
	CK_MSG(tu_wait(has_waiter, &x, 5000), "the flush never waited on D's lock");
	long long t0 = tu_mono_ms();
	kill(d, SIGKILL);
	int fst = tu_waitpid(f, 10000);
	long long dt = tu_mono_ms() - t0;
	CK_MSG(fst != -1 && WIFEXITED(fst) && WEXITSTATUS(fst) == 0, "flush failed: %#x", fst);
	CK_MSG(dt < 3000, "the flush took %lld ms after D died", dt);
	ck_assert_int_ge(tu_waitpid(d, 5000), 0);
	wait_recovered("flush with a dead allocator lock", 0);
	struct shmmap_stats ss;
	ck_assert_int_eq(shmmap_stats(g_sm, fm, &ss), 0);
	CK_EQ(ss.entries, 0);
	expect_fill_intact();
	expect_clean("flush with a dead allocator lock", 0);
}
END_TEST

/*
 * Two allocator locks at once: D dies holding a class lock (its lists may
 * be half-updated: only a sweep may repair them), while P, alive but
 * stopped, holds the pool lock the sweep also needs.  The sweep waits for
 * P; meanwhile D's class lock must never be handed back to the writers (a
 * put of that class does not succeed), and once P goes on, the sweep runs
 * and everything recovers.
 */
START_TEST(dead_and_stopped_allocator_holders)
{
	shmmap_map am;
	ck_assert_int_eq(shmmap_open(g_sm, "alloc", SHMMAP_CREATE, &am), 0);
	static char v[3000], big[200 * 1024];
	make_value(v, sizeof v, 'q');
	for (int i = 0; i < 300; i++) {
		char k[16];
		int kn = snprintf(k, sizeof k, "m%04d", i);
		ck_assert_int_eq(shmmap_put(g_sm, am, k, (size_t)kn, v, sizeof v, 0, 0), 0);
	}
	int cls = shmmap__class_of(&g_sm->seg, &g_sm->geom, sizeof(struct seg_entry) + 5 + sizeof v);
	_Atomic uint32_t *class_w = &seg_class(&g_sm->seg, &g_sm->geom, (uint32_t)cls)->lock;
	_Atomic uint32_t *pool_w = &seg_hdr(&g_sm->seg)->pool_lock;
	_Atomic uint32_t *pslot = shared_word();
	/* P: a put of a large value, stepped store by store until it holds
	 * the pool lock, and left stopped there. */
	pid_t p = tu_fork();
	ck_assert_int_ge(p, 0);
	if (p == 0) {
		shmmap *sm;
		shmmap_map m;
		child_attach("alloc", &sm, &m);
		atomic_store(pslot, sm->slot + 1);
		shmmap__crash_arm_every(1, SIGSTOP);
		int rc = shmmap_put(sm, m, "big", 3, big, sizeof big, 0, 0);
		shmmap__crash_arm(0, 0);
		_exit(rc == 0 ? 0 : 21);
	}
	int st;
	CK_MSG(wait_stopped(p, &st) == p && WIFSTOPPED(st), "P did not stop");
	step_until_holds(p, pool_w, pslot);
	/* D: stopped right after taking the class lock, then killed. */
	_Atomic uint32_t *dslot = shared_word();
	pid_t d = tu_fork();
	ck_assert_int_ge(d, 0);
	if (d == 0) {
		shmmap *sm;
		shmmap_map m;
		child_attach("alloc", &sm, &m);
		atomic_store(dslot, sm->slot + 1);
		shmmap__crash_arm(1, SIGSTOP);
		shmmap_put(sm, m, "m9999", 5, v, sizeof v, 0, 0);
		_exit(21);
	}
	CK_MSG(wait_stopped(d, &st) == d && WIFSTOPPED(st), "D did not stop in the allocator");
	CK_MSG((atomic_load(class_w) & LOCK_OWNER_MASK) == atomic_load(dslot),
	       "D does not hold the class lock");
	kill(d, SIGKILL);
	ck_assert_int_ge(tu_waitpid(d, 5000), 0);
	struct log_wait lw = {.needle = "deferred"};
	CK_MSG(tu_wait(log_has, &lw, 5000), "the coordinator never deferred the sweep");
	/* A writer of that class meanwhile: it must not get D's class. */
	pid_t q = tu_fork();
	ck_assert_int_ge(q, 0);
	if (q == 0) {
		shmmap *sm;
		shmmap_map m;
		child_attach("alloc", &sm, &m);
		int rc = shmmap_put(sm, m, "q", 1, v, sizeof v, 0, 0);
		_exit(rc == -EAGAIN ? 0 : rc == 0 ? 1 : 2);
	}
	/* It gives up (-EAGAIN: a dead owner's lock awaits the repair) or
	 * waits (the coordinator keeps it for the sweep); it never succeeds. */
	st = tu_waitpid(q, 3000);
	CK_MSG(st == -1 || (WIFEXITED(st) && WEXITSTATUS(st) == 0),
	       "a put got the class of a dead allocator lock before its repair: %#x", st);
	CK_MSG((atomic_load(class_w) & LOCK_OWNER_MASK) != 0,
	       "the dead owner's class lock was released before a sweep repaired it");
	/* P goes on: the sweep runs and releases the class. */
	while (step(p, &st))
		;
	CK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "P's put failed: %#x", st);
	wait_recovered("dead and stopped allocator holders", 0);
	CK_EQ(shmmap_put(g_sm, am, "after", 5, v, sizeof v, 0, 0), 0);
	expect_fill_intact();
	expect_clean("dead and stopped allocator holders", 0);
}
END_TEST

/* A writer stopped (SIGSTOP) inside a stripe lock is alive, so its stripe's
 * writers wait for it; but the coordinator must go on serving everyone
 * else (its background reclaim skips the busy stripe). */
static int attach_detach(void)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, MAP, 0, &m) < 0)
		return 20;
	shmmap_detach(sm);
	return 0;
}

/* A writer of sc on key, stopped (SIGSTOP) at the first crash point at
 * which it holds key's stripe lock: its pid, its slot + 1 in *slot. */
static pid_t freeze_in_stripe_lock(const struct scenario *sc, const char *key,
				   _Atomic uint32_t *slot)
{
	static char old[8192];
	_Atomic uint32_t *w = stripe_lock_word(stripe_of_key(key));
	for (unsigned long k = 1; k <= MAX_K; k++) {
		prepare(sc, key, old);
		atomic_store(slot, 0);
		pid_t pid = tu_fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			child(sc, key, k, SIGSTOP, slot);
		int st;
		pid_t r = wait_stopped(pid, &st);
		CK_MSG(r == pid && WIFSTOPPED(st), "child neither stopped nor held the lock");
		uint32_t owner = atomic_load(w) & LOCK_OWNER_MASK;
		if (owner != 0 && owner == atomic_load(slot))
			return pid;
		kill(pid, SIGKILL);
		ck_assert_int_ge(tu_waitpid(pid, 5000), 0);
		wait_recovered(sc->name, k);
	}
	ck_abort_msg("never caught the writer inside the stripe lock");
	return -1;
}

START_TEST(stopped_writer_does_not_wedge_coordinator)
{
	const struct scenario sc = {"replace (stopped)", OP_REPLACE, 100, 100, false, 0};
	const char *key = "the-key";
	_Atomic uint32_t *slot = shared_word();
	pid_t pid = freeze_in_stripe_lock(&sc, key, slot);
	/* Clients come and go for a while: at least 8 of them, over at least
	 * 600 ms, so that the coordinator's background rounds (every 100 ms)
	 * meet the stopped writer's stripe several times meanwhile. */
	long long until = tu_mono_ms() + 600;
	for (int i = 0; i < 8 || tu_mono_ms() < until; i++) {
		long long t0 = tu_mono_ms();
		pid_t c = tu_fork();
		ck_assert_int_ge(c, 0);
		if (c == 0)
			_exit(attach_detach());
		int st = tu_waitpid(c, 5000);
		CK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		       "attach/detach %d failed while a writer is stopped: %#x", i, st);
		CK_MSG(tu_mono_ms() - t0 < 2000, "attach/detach %d took %lld ms", i, tu_mono_ms() - t0);
	}
	kill(pid, SIGKILL);
	ck_assert_int_ge(tu_waitpid(pid, 5000), 0);
	wait_recovered(sc.name, 0);
	expect_fill_intact();
	expect_clean(sc.name, 0);
	munmap(slot, 4096);
}
END_TEST

/* What "served at once" means in these tests: far below the 10 s a client
 * waits for a reply (a coordinator that waits for a stopped process never
 * answers), far above what a loaded 2-core machine needs. */
#define HANG_MS 5000

/* Run shmmapctl with args (NULL-terminated); its exit status, with the time
 * it took in *ms and its output in out/err. */
static int timed_ctl(long long *ms, char *out, size_t cap, char *err, size_t errcap,
		     const char *a0, ...)
{
	va_list ap;
	va_start(ap, a0);
	long long t0 = tu_mono_ms();
	int rc = tu_vctl(co.sock, out, cap, err, errcap, a0, ap);
	*ms = tu_mono_ms() - t0;
	va_end(ap);
	return rc;
}

static bool no_dead_slots(void *arg)
{
	(void)arg;
	for (uint32_t i = 0; i < g_sm->geom.max_clients; i++)
		if (atomic_load(&seg_slot(&g_sm->seg, &g_sm->geom, i)->state) == SLOT_DEAD)
			return false;
	return true;
}

/*
 * The case: one writer stopped inside a stripe lock, a second
 * client SIGKILLed while it waits for that lock (as a watchdog would).
 * Recovering the second needs the lock; the coordinator must not wait for
 * it: attach, status, clients (which tells what is pending), check
 * --repair, flush, drop and save are all served at once, and recovery
 * finishes as soon as the stopped writer goes on.
 */
START_TEST(killed_waiter_of_stopped_holder)
{
	const struct scenario sc = {"replace (stopped)", OP_REPLACE, 100, 100, false, 0};
	const char *key = "the-key";
	uint32_t stripe = stripe_of_key(key);
	_Atomic uint32_t *w = stripe_lock_word(stripe);
	char other[32];
	other_key_in_stripe(stripe, other, sizeof other);
	_Atomic uint32_t *slot = shared_word();
	pid_t holder = freeze_in_stripe_lock(&sc, key, slot);
	/* The waiter: its put allocates (an intent record naming the stripe),
	 * then blocks on the stopped holder's lock. */
	pid_t wp = spawn_waiter(other);
	struct waiting x = {w};
	CK_MSG(tu_wait(has_waiter, &x, 5000), "the waiter never blocked on the lock");
	kill(wp, SIGKILL);
	ck_assert_int_ge(tu_waitpid(wp, 5000), 0);
	/* The coordinator keeps serving, each request well under a second. */
	static char out[16384], err[4096];
	long long ms;
	int rc = timed_ctl(&ms, out, sizeof out, err, sizeof err, "status", NULL);
	CK_MSG(rc == 0 && ms < HANG_MS, "status: exit %d after %lld ms: %s", rc, ms, err);
	/* Recovery of the waiter is pending, and clients says on what. */
	char holder_pid[32];
	snprintf(holder_pid, sizeof holder_pid, "held by pid %d", (int)holder);
	bool said = false;
	for (long long end = tu_mono_ms() + 5000; !said && tu_mono_ms() < end;) {
		rc = timed_ctl(&ms, out, sizeof out, err, sizeof err, "clients", NULL);
		CK_MSG(rc == 0 && ms < HANG_MS, "clients: exit %d after %lld ms: %s", rc, ms, err);
		said = strstr(out, "recovery waits for stripe") && strstr(out, holder_pid);
	}
	CK_MSG(said, "clients does not tell what the recovery waits for:\n%s", out);
	rc = timed_ctl(&ms, out, sizeof out, err, sizeof err, "status", NULL);
	CK_MSG(rc == 0 && strstr(out, "1 dead awaiting recovery"), "status: %s", out);
	for (int i = 0; i < 3; i++) {
		long long t0 = tu_mono_ms();
		pid_t c = tu_fork();
		ck_assert_int_ge(c, 0);
		if (c == 0)
			_exit(attach_detach());
		int st = tu_waitpid(c, 5000);
		CK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "attach %d: %#x", i, st);
		CK_MSG(tu_mono_ms() - t0 < HANG_MS, "attach/detach %d took %lld ms", i, tu_mono_ms() - t0);
	}
	CK_MSG(!no_dead_slots(NULL), "the waiter was recovered while the holder is stopped");
	/* check --repair skips the held stripe (its sweep may settle the
	 * waiter's records: they name no linked block). */
	rc = timed_ctl(&ms, out, sizeof out, err, sizeof err, "check", "--repair", NULL);
	CK_MSG(ms < HANG_MS, "check --repair took %lld ms", ms);
	CK_MSG(strstr(out, "skipped") != NULL, "check --repair does not say what it skipped:\n%s%s",
	       out, err);
	/* A flush: everything but the held stripe, and it says so. */
	rc = timed_ctl(&ms, out, sizeof out, err, sizeof err, "flush", MAP, NULL);
	char just_pid[32];
	snprintf(just_pid, sizeof just_pid, "pid %d", (int)holder);
	CK_MSG(rc != 0 && ms < HANG_MS && strstr(err, just_pid),
	       "flush: exit %d after %lld ms: %s", rc, ms, err);
	char save[300];
	snprintf(save, sizeof save, "%s/snap", co.dir);
	rc = timed_ctl(&ms, out, sizeof out, err, sizeof err, "save", save, NULL);
	/* The holder is stopped before its seq change: readers (the save)
	 * read its stripe without the lock. */
	CK_MSG(rc == 0 && ms < HANG_MS, "save: exit %d after %lld ms: %s", rc, ms, err);
	shmmap_map other_map;
	CK_EQ(shmmap_open(g_sm, "other", SHMMAP_CREATE, &other_map), 0);
	CK_EQ(shmmap_put(g_sm, other_map, "k", 1, "v", 1, 0, 0), 0);
	long long t0 = tu_mono_ms();
	CK_EQ(shmmap_drop(g_sm, "other"), 0);
	CK_MSG(tu_mono_ms() - t0 < HANG_MS, "drop took %lld ms", tu_mono_ms() - t0);
	/* The holder goes on: the recovery finishes by itself. */
	kill(holder, SIGCONT);
	CK_MSG(tu_wait(no_dead_slots, NULL, 5000), "recovery never finished after SIGCONT");
	int st = tu_waitpid(holder, 5000);
	CK_MSG(st != -1 && WIFEXITED(st), "the stopped writer did not finish: %#x", st);
	wait_recovered(sc.name, 0);
	expect_clean(sc.name, 0);
	munmap(slot, 4096);
}
END_TEST

static bool map_dir_free(void *arg)
{
	uint32_t idx = *(uint32_t *)arg;
	return atomic_load(&seg_dir(&g_sm->seg, &g_sm->geom, idx)->state) == MAP_FREE;
}

/*
 * A drop meets a stripe that a stopped writer holds: it returns at once
 * (the name is free again: the map can be created anew), the old table
 * stays being dropped, check counts its entries as in use, a coordinator
 * killed and restarted meanwhile takes the drop over without wiping the
 * lock the writer holds (no memset), and the drop finishes once the
 * writer goes on (SIGCONT) or dies (SIGKILL).
 */
static void drop_meets_stopped_holder(int how)
{
	const struct scenario sc = {"replace (stopped)", OP_REPLACE, 100, 100, false, 0};
	const char *key = "the-key";
	_Atomic uint32_t *w = stripe_lock_word(stripe_of_key(key));
	_Atomic uint32_t *slot = shared_word();
	pid_t holder = freeze_in_stripe_lock(&sc, key, slot);
	uint32_t idx = (uint32_t)(g_m.id & 0xffff);
	long long t0 = tu_mono_ms();
	CK_EQ(shmmap_drop(g_sm, MAP), 0);
	CK_MSG(tu_mono_ms() - t0 < HANG_MS, "drop took %lld ms", tu_mono_ms() - t0);
	struct seg_mapdir *d = seg_dir(&g_sm->seg, &g_sm->geom, idx);
	CK_EQ(atomic_load(&d->state), MAP_INIT);
	CK_EQ(atomic_load(&d->dropping), 1);
	shmmap_map again;
	CK_EQ(shmmap_open(g_sm, MAP, SHMMAP_CREATE, &again), 0);
	CK_MSG((uint32_t)(again.id & 0xffff) != idx, "the map being dropped was reused");
	CK_EQ(shmmap_put(g_sm, again, "fresh", 5, "v", 1, 0, 0), 0);
	expect_clean("drop under way", 0);
	/* The coordinator dies meanwhile; the next one takes the drop over. */
	kill(co.pid, SIGKILL);
	ck_assert_int_ge(tu_waitpid(co.pid, 5000), 0);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	CK_MSG((atomic_load(w) & LOCK_OWNER_MASK) == atomic_load(slot),
	       "the restarted coordinator wiped the lock the stopped writer holds");
	CK_EQ(atomic_load(&d->state), MAP_INIT);
	kill(holder, how);
	if (how == SIGCONT) {
		int st = tu_waitpid(holder, 5000);
		CK_MSG(st != -1 && WIFEXITED(st), "the writer did not finish: %#x", st);
	} else {
		ck_assert_int_ge(tu_waitpid(holder, 5000), 0);
	}
	CK_MSG(tu_wait(map_dir_free, &idx, 5000), "the drop never finished");
	CK_MSG(atomic_load(w) == 0, "the old table's lock word is still held: %#x",
	       atomic_load(w));
	char buf[4];
	size_t n;
	CK_EQ(shmmap_get(g_sm, again, "fresh", 5, buf, sizeof buf, &n), 0);
	g_m = again;
	wait_recovered(sc.name, 0);
	expect_clean("drop finished", 0);
	munmap(slot, 4096);
}

START_TEST(drop_meets_stopped_holder_cont)
{
	drop_meets_stopped_holder(SIGCONT);
}
END_TEST

START_TEST(drop_meets_stopped_holder_killed)
{
	drop_meets_stopped_holder(SIGKILL);
}
END_TEST


/*
 * A stale writer (its map dropped after it resolved its handle) takes a
 * stripe lock in the dropped map's retained table and is stopped there.
 * A coordinator whose map geometry changed meanwhile (restarted with
 * another bucket count) must not free that table under it to make a new
 * map at its index: it passes the index over.  The writer, resumed, sees
 * the drop and lets go; nothing is corrupted.
 */
START_TEST(stale_lock_in_retained_table_of_other_geometry)
{
	const char *key = "stale-key";
	uint32_t idx = (uint32_t)(g_m.id & 0xffff);
	_Atomic uint32_t *w = stripe_lock_word(stripe_of_key(key));
	_Atomic uint32_t *slot = shared_word();
	pid_t pid = spawn_put(key, slot, true, -ESTALE);
	int st;
	CK_MSG(wait_stopped(pid, &st) == pid && WIFSTOPPED(st), "the writer did not stop");
	CK_MSG((atomic_load(w) & LOCK_OWNER_MASK) != atomic_load(slot), "locked too early");
	/* Its handle resolved: now the map goes (it holds no stripe yet). */
	CK_EQ(shmmap_drop(g_sm, MAP), 0);
	CK_MSG(tu_wait(map_dir_free, &idx, 5000), "the drop did not finish");
	/* Step it until it holds the stripe lock in the retained table. */
	step_until_holds(pid, w, slot);
	/* Another geometry from now on. */
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	static char conf[4096];
	FILE *f = fopen(co.conf, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(conf, 1, sizeof conf - 1, f);
	fclose(f);
	conf[n] = '\0';
	char *at = strstr(conf, "buckets = 16\nstripes = 4\n");
	ck_assert_ptr_nonnull(at);
	memcpy(at, "buckets = 64\nstripes = 8\n", strlen("buckets = 64\nstripes = 8\n"));
	/* (and a growth cap that allows it) */
	at = strstr(conf, "max_buckets = 16\n");
	if (at)
		memcpy(at, "max_buckets = 64\n", strlen("max_buckets = 64\n"));
	f = fopen(co.conf, "w");
	ck_assert_ptr_nonnull(f);
	fputs(conf, f);
	fclose(f);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	shmmap_map again;
	CK_EQ(shmmap_open(g_sm, MAP, SHMMAP_CREATE, &again), 0);
	CK_MSG((uint32_t)(again.id & 0xffff) != idx,
	       "a table a live writer holds a lock in was let go for another geometry");
	CK_MSG(seg_dir(&g_sm->seg, &g_sm->geom, idx)->stripes_off != 0,
	       "the retained table was let go");
	CK_EQ(shmmap_put(g_sm, again, "fresh", 5, "v", 1, 0, 0), 0);
	g_m = again;
	while (step(pid, &st))
		;
	CK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "the stale writer did not end with -ESTALE: %#x", st);
	CK_EQ(atomic_load(w), 0);
	wait_recovered("stale lock in a retained table", 0);
	expect_clean("stale lock in a retained table", 0);
	munmap(slot, 4096);
}
END_TEST

/* An attachment whose slot the coordinator recovered (here: its generation
 * moved, as when the slot is given to someone else) must not write under
 * that identity any more; reads go on. */
START_TEST(recovered_slot_refuses_writes)
{
	struct seg_slot *sl = seg_slot(&g_sm->seg, &g_sm->geom, g_sm->slot);
	CK_EQ(shmmap_put(g_sm, g_m, "k", 1, "v", 1, 0, 0), 0);
	atomic_fetch_add(&sl->gen, 1);
	CK_EQ(shmmap_put(g_sm, g_m, "k", 1, "w", 1, 0, 0), -SHMMAP_EDETACHED);
	CK_EQ(shmmap_del(g_sm, g_m, "k", 1), -SHMMAP_EDETACHED);
	CK_EQ(shmmap_incr(g_sm, g_m, "n", 1, 1, NULL), -SHMMAP_EDETACHED);
	char buf[4];
	size_t n;
	CK_EQ(shmmap_get(g_sm, g_m, "k", 1, buf, sizeof buf, &n), 0);
	CK_MSG(n == 1 && buf[0] == 'v', "the refused writes changed the value");
	atomic_fetch_sub(&sl->gen, 1);
	CK_EQ(shmmap_put(g_sm, g_m, "k", 1, "w", 1, 0, 0), 0);
}
END_TEST

/* ---- telling the dead from the living ---- */

static void *idle_thread(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static char proc_state(pid_t pid)
{
	char buf[512];
	const char *p = tu_proc_stat(pid, buf, sizeof buf);
	return p ? p[0] : '?';
}

static bool is_zombie(void *arg)
{
	return proc_state(*(pid_t *)arg) == 'Z';
}

/* A process whose main thread called pthread_exit() shows as a zombie
 * while its other threads run: it is alive (its locks must not be taken,
 * its slot not recovered).  A real zombie is dead. */
START_TEST(zombie_leader_is_alive)
{
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		pthread_t t;
		if (pthread_create(&t, NULL, idle_thread, NULL) != 0)
			_exit(20);
		pthread_exit(NULL);
	}
	CK_MSG(tu_wait(is_zombie, &pid, 5000), "the main thread did not exit");
	uint64_t st;
	CK_EQ(shmmap__proc_start_time(pid, &st), 0);
	kill(pid, SIGKILL);
	/* Not reaped yet: a zombie with no thread left. */
	struct timespec ts = {0, 1000000};
	for (int i = 0; i < 5000 && shmmap__proc_start_time(pid, &st) != -ESRCH; i++)
		nanosleep(&ts, NULL); /* polling the kernel's view, with a deadline */
	CK_EQ(shmmap__proc_start_time(pid, &st), -ESRCH);
	ck_assert_int_ge(tu_waitpid(pid, 5000), 0);
}
END_TEST

/* ---- killed inside a resize step ---- */


#define MV "resize"
#define MV_FILL 48

static void setup_resize(void)
{
	/* grow_step 0: the coordinator starts and finishes resizes but moves
	 * no bucket itself, so the moves are the test's (and its writers'). */
	ck_assert_int_eq(tu_coord_start(&co, "8M",
					"[map]\nbuckets = 16\nstripes = 4\ngrow_step = 0\n"), 0);
	int rc = shmmap_attach(co.sock, &g_sm);
	ck_assert_msg(rc == 0, "attach: %s", shmmap_strerror(rc));
}

static bool mv_growing(void *arg)
{
	const struct map_view *v;
	struct tbl t;
	return shmmap__resolve(g_sm, *(shmmap_map *)arg, &v) == 0 &&
	       shmmap__tbl_load(&g_sm->seg, v, &t) && t.old_n;
}

static bool mv_idle(void *arg)
{
	const struct map_view *v;
	struct tbl t;
	if (shmmap__resolve(g_sm, *(shmmap_map *)arg, &v) < 0 ||
	    !shmmap__tbl_load(&g_sm->seg, v, &t) || t.old_n)
		return false;
	return v->dir->arr[TBL_CUR(t.word) ^ 1].nbuckets == 0;
}

static void mv_expect_all(shmmap_map m, unsigned long k)
{
	for (int i = 0; i < MV_FILL; i++) {
		char kk[32], vv[64], buf[64];
		int kl = snprintf(kk, sizeof kk, "mv-%d", i);
		int vl = snprintf(vv, sizeof vv, "value of mv-%d", i);
		size_t n = 0;
		int rc = shmmap_get(g_sm, m, kk, (size_t)kl, buf, sizeof buf, &n);
		CK_MSG(rc == 0 && n == (size_t)vl && memcmp(buf, vv, n) == 0,
		       "%s lost or torn after a kill at store %lu of a move: rc %d len %zu", kk, k,
		       rc, n);
	}
}

/* An op context of this process's attachment, for the internal calls. */
static struct op_ctx ctx_of(shmmap *sm)
{
	return (struct op_ctx){.s = &sm->seg, .g = &sm->geom,
			       .lk = {.s = &sm->seg, .g = &sm->geom, .owner = sm->slot + 1}};
}

/* Move every old bucket of the stripe of the given map (wait for its lock). */
static int move_all(shmmap *sm, shmmap_map m, uint32_t stripe)
{
	const struct map_view *v;
	int rc = shmmap__resolve(sm, m, &v);
	if (rc < 0)
		return rc;
	struct op_ctx o = ctx_of(sm);
	return shmmap__tbl_move(&o, v, stripe, UINT32_MAX, true);
}

/*
 * A writer SIGKILLed at every store of a bucket move in turn (the moves of
 * a whole stripe: several buckets, several entries each).  After each kill
 * the coordinator recovers the slot (and finishes the half-moved bucket
 * under the dead writer's stripe lock): every entry is there and intact,
 * the check is clean in the middle of the resize, and the resize then
 * completes and the old array is freed with the check clean again.
 */
START_TEST(crash_in_move)
{
	unsigned long k;
	for (k = 1; k <= MAX_K; k++) {
		/* A fresh map filled while the coordinator is stopped (so no resize
		 * starts before all of it is in): 48 entries in 16 buckets. */
		shmmap_map m;
		CK_EQ(shmmap_open(g_sm, MV, SHMMAP_CREATE, &m), 0);
		kill(co.pid, SIGSTOP);
		int cst;
		CK_MSG(wait_stopped(co.pid, &cst) == co.pid && WIFSTOPPED(cst), "coordinator not stopped");
		for (int i = 0; i < MV_FILL; i++) {
			char kk[32], vv[64];
			int kl = snprintf(kk, sizeof kk, "mv-%d", i);
			int vl = snprintf(vv, sizeof vv, "value of mv-%d", i);
			CK_EQ(shmmap_put(g_sm, m, kk, (size_t)kl, vv, (size_t)vl, 0, 0), 0);
		}
		kill(co.pid, SIGCONT);
		if (!tu_wait(mv_growing, &m, 5000)) {
			const struct map_view *v;
			CK_EQ(shmmap__resolve(g_sm, m, &v), 0);
			ck_abort_msg("no resize started (k=%lu): table word %llx, entries %llu", k,
				     (unsigned long long)atomic_load(&v->dir->tbl),
				     (unsigned long long)shmmap__tbl_entries(v));
		}
		pid_t pid = tu_fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			shmmap *sm;
			shmmap_map cm;
			if (shmmap_attach(co.sock, &sm) < 0 || shmmap_open(sm, MV, 0, &cm) < 0)
				_exit(20);
			shmmap__crash_arm(k, SIGKILL);
			int rc = move_all(sm, cm, 0);
			shmmap__crash_arm(0, 0);
			_exit(rc == 0 ? 0 : 21);
		}
		int st = tu_waitpid(pid, 10000);
		CK_MSG(st != -1, "mover hung at store %lu", k);
		bool done = WIFEXITED(st);
		if (done)
			CK_MSG(WEXITSTATUS(st) == 0, "mover failed (exit %d)", WEXITSTATUS(st));
		else
			CK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "mover died oddly (%#x)", st);
		wait_recovered("move", k);
		mv_expect_all(m, k);
		expect_clean("a resize's move", k);
		/* The rest of the resize, by this process: then it finishes. */
		for (uint32_t s = 0; s < 4; s++)
			CK_EQ(move_all(g_sm, m, s), 0);
		CK_MSG(tu_wait(mv_idle, &m, 5000), "resize not finished (k=%lu)", k);
		mv_expect_all(m, k);
		expect_clean("after the resize", k);
		CK_EQ(shmmap_drop(g_sm, MV), 0);
		if (done)
			break;
	}
	CK_MSG(k <= MAX_K, "the move never completed");
	CK_MSG(k > 20, "only %lu crash points in a stripe's moves", k - 1);
	fprintf(stderr, "  crash_in_move: killed at each of %lu stores of a stripe's moves\n",
		k - 1);
}
END_TEST

/* ---- the coordinator killed inside a growth step ---- */

#define GROW_VLEN 20000u
#define GROW_N 1600u /* 32 MB of 20000-byte values: several steps past 2M */

static int grow_put(uint64_t i)
{
	char k[32], v[GROW_VLEN];
	int kl = snprintf(k, sizeof k, "g%llu", (unsigned long long)i);
	make_value(v, sizeof v, (char)('a' + i % 26));
	return shmmap_put(g_sm, g_m, k, (size_t)kl, v, sizeof v, 0, 0);
}

static bool grow_get(uint64_t i)
{
	char k[32], v[GROW_VLEN], b[GROW_VLEN];
	int kl = snprintf(k, sizeof k, "g%llu", (unsigned long long)i);
	make_value(v, sizeof v, (char)('a' + i % 26));
	size_t n = 0;
	return shmmap_get(g_sm, g_m, k, (size_t)kl, b, sizeof b, &n) == 0 && n == sizeof v &&
	       memcmp(b, v, n) == 0;
}

/*
 * The crash-point build of shmmapd ($SHMMAPD_CRASH) with
 * $SHMMAP_CRASH_GROW=k dies (SIGKILL) at the k-th store of its first
 * growth step: after committing the new range, after taking the pool
 * lock, after clearing the new descriptors, after publishing npages_live,
 * after raising pool_free.  A writer makes it grow; the restarted
 * coordinator adopts the segment at a consistent size (the old or the
 * new), every value whose put succeeded is there, check is clean, and the
 * segment grows on.
 */
static void grow_killed_at(unsigned long k)
{
	const char *crash = getenv("SHMMAPD_CRASH"), *plain0 = getenv("SHMMAPD");
	CK_MSG(crash && plain0, "$SHMMAPD_CRASH and $SHMMAPD must be set (make test does)");
	char plain[512], kb[16];
	snprintf(plain, sizeof plain, "%s", plain0);
	snprintf(kb, sizeof kb, "%lu", k);
	setenv("SHMMAP_CRASH_GROW", kb, 1);
	setenv("SHMMAPD", crash, 1);
	int rc = tu_coord_start(&co, "2M", "[segment]\nmax_size = 64M\n\n[map]\npolicy = reject\n"
					   "value_max = 64K\n");
	setenv("SHMMAPD", plain, 1);
	unsetenv("SHMMAP_CRASH_GROW");
	CK_MSG(rc == 0, "k %lu: the crash build of shmmapd did not start: see %s", k, co.log);
	CK_EQ(shmmap_attach(co.sock, &g_sm), 0);
	CK_EQ(shmmap_open(g_sm, MAP, SHMMAP_CREATE, &g_m), 0);
	static bool stored[GROW_N];
	memset(stored, 0, sizeof stored);
	int st = 0;
	bool dead = false;
	for (uint64_t i = 0; i < GROW_N && !dead; i++) {
		stored[i] = grow_put(i) == 0;
		dead = waitpid(co.pid, &st, WNOHANG) == co.pid;
	}
	if (!dead) {
		st = tu_waitpid(co.pid, 10000);
		dead = st != -1;
	}
	CK_MSG(dead && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	       "k %lu: the coordinator did not die in its growth step (status %#x)", k, st);
	co.pid = 0;
	CK_MSG(tu_coord_restart(&co) == 0, "k %lu: restart: see %s", k, co.log);
	/* The segment as adopted: a consistent size, the object covers it. */
	struct seg_header *h = seg_hdr(&g_sm->seg);
	uint32_t live = atomic_load(&h->npages_live);
	struct stat ost;
	CK_EQ(fstat(g_sm->seg.fd, &ost), 0);
	CK_MSG(live >= 2 && live <= g_sm->geom.npages_max &&
	       (uint64_t)ost.st_size >= g_sm->geom.heap_off + (uint64_t)live * SEG_PAGE,
	       "k %lu: %u live pages, object of %lld bytes", k, live, (long long)ost.st_size);
	/* Resume the slot (a request), then every value stored is there. */
	shmmap_map m2;
	CK_EQ(shmmap_open(g_sm, MAP, 0, &m2), 0);
	for (uint64_t i = 0; i < GROW_N; i++)
		CK_MSG(!stored[i] || grow_get(i), "k %lu: value %llu lost", k, (unsigned long long)i);
	expect_clean("coordinator killed in a growth step", k);
	/* And it grows on: every value now fits. */
	for (uint64_t i = 0; i < GROW_N; i++) {
		rc = grow_put(i);
		CK_MSG(rc == 0, "k %lu: put %llu after the restart: %s", k, (unsigned long long)i,
		       shmmap_strerror(rc));
	}
	for (uint64_t i = 0; i < GROW_N; i++)
		CK(grow_get(i));
	expect_clean("grown after the restart", k);
	shmmap_detach(g_sm);
	g_sm = NULL;
	tu_coord_cleanup(&co);
}

START_TEST(coordinator_killed_in_growth_step)
{
	for (unsigned long k = 1; k <= 5; k++)
		grow_killed_at(k);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("crash");
	TCase *tc = tcase_create("crash");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, crash_incr);
	tcase_add_loop_test(tc, crash_sweep, 0, NSWEEPS);
	tcase_add_test(tc, crash_evicting_put);
	tcase_add_test(tc, crash_handover);
	tcase_add_test(tc, crash_handover_moves);
	tcase_add_test(tc, frozen_holder_killed);
	tcase_add_test(tc, rewrite_frozen_then_killed_waiter_repairs);
	tcase_add_test(tc, recovery_waits_for_a_stopped_repairer);
	tcase_add_test(tc, sweep_under_load);
	tcase_add_test(tc, coordinator_killed);
	tcase_add_test(tc, coordinator_died_mid_work);
	tcase_add_test(tc, zombie_leader_is_alive);
	tcase_add_test(tc, second_coordinator_refused);
	tcase_add_test(tc, stale_session_spares_reused_slot);
	tcase_add_test(tc, flush_meets_dead_allocator_lock);
	tcase_add_test(tc, wait_hook_called_before_sleeping);
	tcase_add_test(tc, dead_and_stopped_allocator_holders);
	tcase_add_test(tc, stopped_writer_does_not_wedge_coordinator);
	tcase_add_test(tc, killed_waiter_of_stopped_holder);
	tcase_add_test(tc, drop_meets_stopped_holder_cont);
	tcase_add_test(tc, drop_meets_stopped_holder_killed);
	tcase_add_test(tc, stale_lock_in_retained_table_of_other_geometry);
	tcase_add_test(tc, recovered_slot_refuses_writes);
	suite_add_tcase(s, tc);
	TCase *tr = tcase_create("resize");
	tcase_add_checked_fixture(tr, setup_resize, teardown);
	tcase_set_timeout(tr, 300);
	tcase_add_test(tr, crash_in_move);
	suite_add_tcase(s, tr);
	TCase *tg = tcase_create("grow");
	tcase_add_checked_fixture(tg, NULL, teardown);
	tcase_set_timeout(tg, 180);
	tcase_add_test(tg, coordinator_killed_in_growth_step);
	suite_add_tcase(s, tg);
	return s;
}

int main(void)
{
	return tu_run_suite(suite());
}
