/*
 * grow.c - maps that size themselves: the coordinator's side of online,
 * incremental growth of a map's bucket array (table.c moves the buckets).
 *
 * The table word (seg_mapdir.tbl, written by the coordinator only, always
 * under its recover_mu) names the current array arr[TBL_CUR] and, with
 * TBL_GROWING, the old one arr[!TBL_CUR] whose buckets are being moved into
 * it; every change moves its generation (the high 32 bits).  A map's life:
 *
 *   idle     arr[cur] only.  A writer that finds its stripe over the load
 *            factor (GROW_LOAD_PCT entries per bucket) wakes the growth
 *            thread (grow_wake, a futex in the header); the coordinator
 *            checks the map's total and starts a resize:
 *   start    allocate a run of pages for n buckets (the power of two that
 *            makes the load GROW_TO_PCT, at most GROW_FACTOR_MAX times the
 *            old size; only the one that makes it at most 1 where more
 *            would take over 1/GROW_ARRAY_SHARE of the heap), name it in
 *            arr[!cur], zero it (a slice per hold of recover_mu), then
 *            publish the word (cur = the new array, TBL_GROWING) with one
 *            release store.
 *   growing  old bucket ob's entries belong to new buckets ob + k * old_n,
 *            all of them under ob's stripe lock (nstripes <= old_n).  Each
 *            writer, under its stripe lock, first moves its key's old bucket
 *            (and GROW_HELP more of its stripe, in order), so it works in the
 *            new array alone; the coordinator moves `step` buckets of every
 *            stripe per round (stripe locks only tried: a stopped writer
 *            never wedges it).  A moved old bucket holds BUCKET_MOVED.
 *            Readers look in the old bucket unless it moved (table.c).
 *   finish   once every stripe's old buckets moved: the word drops
 *            TBL_GROWING (one store).  The old array is now retired: no
 *            reader uses it without retrying (the word moved), but a writer
 *            that read the word before may still be inside it, under its
 *            stripe lock, so:
 *   retire   every stripe lock is taken once (try) after the switch (and
 *            its move_next cursor reset for the next resize); then the old
 *            array's name is cleared and its run freed.
 *
 * Crash argument.  A writer killed anywhere in a move: see move_chain in
 * table.c (the stripe's move_bucket and moving name the move in progress,
 * and whoever takes the lock over finishes it before the stripe's seq is
 * even).  The coordinator killed anywhere: every step above is one store
 * or idempotent.  A run allocated but not yet named is leaked until the
 * sweep every coordinator start runs; a named, unpublished array is seen
 * at the next round as retired and freed; a resize under way is finished
 * by the next coordinator (or by writers); a retired array whose name was
 * cleared but whose run was not freed leaks until the next start's sweep.
 * The sweep keeps every named array's run, and walks both arrays (sweep.c).
 *
 * Memory: a bucket costs 8 bytes.  If no run of the size is free the
 * resize is tried smaller.  If none is, in a segment that cannot grow,
 * and the load is over twice its limit, the coordinator empties a window
 * of pages for the least array that brings the load within its limit (at
 * most the heap's 1/GROW_ARRAY_SHARE; shmmap__evict_pages, as for a large
 * value: the entries of evict maps go, read ones move) and starts the
 * resize there, up to GROW_ROOM_TRIES windows; after that, and where
 * nothing can be evicted, it is tried again once the map holds an eighth
 * more entries: the map keeps working with longer chains meanwhile.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define GROW_ZERO_SLICE (1u << 20) /* bytes of a new array zeroed per hold of mu */

void shmmap__grow_wake(const struct seg *s)
{
	struct seg_header *h = seg_hdr(s);
	if (s->rdonly || atomic_load_explicit(&h->grow_wake, memory_order_relaxed))
		return;
	if (atomic_exchange(&h->grow_wake, 1) == 0)
		syscall(SYS_futex, (uint32_t *)&h->grow_wake, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void lock_mu(pthread_mutex_t *mu)
{
	if (mu)
		pthread_mutex_lock(mu);
}

static void unlock_mu(pthread_mutex_t *mu)
{
	if (mu)
		pthread_mutex_unlock(mu);
}

/* Still the map v was made for, with table word w? */
static bool still(const struct map_view *v, uint64_t w)
{
	const struct seg_mapdir *d = v->dir;
	return atomic_load((_Atomic uint32_t *)&d->state) == MAP_LIVE &&
	       atomic_load((_Atomic uint32_t *)&d->gen) == v->gen &&
	       atomic_load((_Atomic uint64_t *)&d->tbl) == w;
}

/* Is the page pool's lock held (by anyone)? */
static bool pool_busy(const struct seg *s)
{
	return atomic_load_explicit(&seg_hdr(s)->pool_lock, memory_order_relaxed) != 0;
}

static bool arr_named(const struct seg_array *a)
{
	return __atomic_load_n(&a->off, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&a->nbuckets, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&a->run, __ATOMIC_RELAXED);
}

/* The run of array a, if it has one of its own that looks sane: first + 1. */
static uint32_t arr_run(const struct seg_geom *g, const struct seg_array *a)
{
	uint32_t run = __atomic_load_n(&a->run, __ATOMIC_RELAXED);
	if (!run || run > g->npages || seg_page_off(g, run - 1) != a->off)
		return 0;
	return run;
}

int shmmap__grow_start(const struct op_ctx *o, const struct map_view *v, uint32_t n,
		       pthread_mutex_t *mu)
{
	struct tbl t;
	if (!n || (n & (n - 1)) || n > SEG_BUCKETS_MAX)
		return -EINVAL;
	lock_mu(mu);
	struct seg_mapdir *d = v->dir;
	uint64_t w = atomic_load(&d->tbl);
	uint32_t other = TBL_CUR(w) ^ 1;
	int rc = -EBUSY;
	if (!still(v, w) || (w & TBL_GROWING) || arr_named(&d->arr[other]) ||
	    !shmmap__tbl_load(o->s, v, &t))
		goto out;
	rc = -EINVAL;
	if (n <= t.cur_n || n / t.cur_n > GROW_FACTOR_MAX)
		goto out;
	uint64_t bytes = (uint64_t)n * 8;
	uint64_t pages = (bytes + SEG_PAGE - 1) / SEG_PAGE;
	uint32_t first;
	/* Never wait for the pool lock while holding mu (a dead holder would
	 * keep the coordinator's recoveries waiting): busy, later. */
	rc = -EAGAIN;
	if (pool_busy(o->s))
		goto out;
	rc = pages > o->g->npages ? -ENOSPC
				  : shmmap__alloc_pages(o->s, o->g, &o->lk, (uint32_t)pages, &first);
	if (rc < 0)
		goto out;
	/* Named before anything else: from here a sweep keeps it, and a
	 * coordinator that dies before publishing leaves it to be retired. */
	uint64_t off = seg_page_off(o->g, first);
	d->arr[other].off = off;
	d->arr[other].nbuckets = n;
	d->arr[other].run = first + 1;
	CRASH_POINT();
	/* Zeroed a slice at a time, letting mu go in between (a big array
	 * would hold the coordinator's other users of mu for tens of ms); a
	 * drop of the map meanwhile (which frees the arrays) ends it. */
	for (uint64_t at = 0; at < bytes; at += GROW_ZERO_SLICE) {
		if (at && mu) {
			pthread_mutex_unlock(mu);
			pthread_mutex_lock(mu);
			if (!still(v, w) || d->arr[other].off != off) {
				rc = -ESTALE;
				goto out;
			}
		}
		uint64_t len = bytes - at < GROW_ZERO_SLICE ? bytes - at : GROW_ZERO_SLICE;
		memset(seg_ptr(o->s, off + at), 0, len);
	}
	/* Release: the zeroed array and its name before the word that uses it. */
	uint64_t nw = ((w + TBL_GEN_ONE) & ~(TBL_GEN_ONE - 1)) | ((uint64_t)other << 1) |
		      TBL_GROWING;
	atomic_store_explicit(&d->tbl, nw, memory_order_release);
	CRASH_POINT();
	rc = 0;
out:
	unlock_mu(mu);
	return rc;
}

/* Growing: move `step` buckets of every stripe; finish once all moved. */
static int grow_moves(const struct op_ctx *o, const struct map_view *v, uint64_t w,
		      pthread_mutex_t *mu, uint32_t step)
{
	uint64_t left = 0;
	bool busy = false;
	for (uint32_t st = 0; st < v->nstripes; st++) {
		int r = shmmap__tbl_move(o, v, st, step, false);
		if (r == -EBUSY)
			busy = true;
		else if (r < 0)
			return 0; /* dropped, or corrupt (shmmapctl check says) */
		else
			left += (uint64_t)r;
	}
	if (left || busy)
		return step && left ? 2 : 1;
	lock_mu(mu);
	if (still(v, w)) {
		/* One store: the old array is retired (see retire). */
		atomic_store_explicit(&v->dir->tbl, (w + TBL_GEN_ONE) & ~(uint64_t)TBL_GROWING,
				      memory_order_release);
		atomic_fetch_add(&v->dir->resizes, 1);
	}
	unlock_mu(mu);
	return 2;
}

/* Idle with the other array still named: wait until every stripe lock was
 * free once since the switch (no writer still in the old array), then let
 * the array go. */
static int retire(const struct op_ctx *o, const struct map_view *v, struct grow_track *gt,
		  uint64_t w, pthread_mutex_t *mu)
{
	if (gt->word != w || gt->cap < v->nstripes) {
		if (gt->cap < v->nstripes) {
			unsigned char *p = realloc(gt->passed, v->nstripes);
			if (!p)
				return 1;
			gt->passed = p;
			gt->cap = v->nstripes;
		}
		memset(gt->passed, 0, v->nstripes);
		gt->npassed = 0;
		gt->word = w;
	}
	bool progress = false;
	for (uint32_t st = 0; st < v->nstripes; st++) {
		if (gt->passed[st])
			continue;
		struct seg_stripe *sp = &v->stripes[st];
		if (!shmmap__trylock(&sp->lock, &o->lk))
			continue;
		sp->move_next = 0;
		shmmap__unlock(&sp->lock);
		gt->passed[st] = 1;
		gt->npassed++;
		progress = true;
	}
	if (gt->npassed < v->nstripes)
		return progress ? 2 : 1;
	if (pool_busy(o->s))
		return 1; /* the free below would wait for it: later */
	lock_mu(mu);
	if (still(v, w)) {
		struct seg_array *a = &v->dir->arr[TBL_CUR(w) ^ 1];
		uint32_t run = arr_run(o->g, a);
		/* Unnamed first: a crash before the free leaks the run until the
		 * next start's sweep, never frees it twice. */
		a->off = 0;
		a->nbuckets = 0;
		a->run = 0;
		CRASH_POINT();
		if (run)
			(void)shmmap__free_pages(o->s, o->g, &o->lk, run - 1, NULL);
	}
	unlock_mu(mu);
	gt->word = 0;
	return 2;
}

/* Idle: start a resize if the map is over its load. */
static int maybe_start(const struct op_ctx *o, const struct map_view *v, struct grow_track *gt,
		       pthread_mutex_t *mu)
{
	struct tbl t;
	if (!shmmap__tbl_load(o->s, v, &t) || t.cur_n >= v->max_buckets)
		return 0;
	uint64_t e = shmmap__tbl_entries(v), limit = grow_load_pct(o->s, o->g, t.cur_n);
	/* Below its limit, or no memory last time (then it waits for an
	 * eighth more): resting if over one entry per bucket. */
	if (e * 100u <= (uint64_t)t.cur_n * limit ||
	    (gt->failed_n && e <= gt->failed_at + gt->failed_at / 8)) {
		gt->resting = e * 100u > (uint64_t)t.cur_n * GROW_LOAD_PCT;
		return 0;
	}
	/* At least a bucket per entry (per two where even the next array is
	 * over the heap's share, see grow_load_pct); room beyond that (load
	 * GROW_TO_PCT) only while the array stays a small share of the heap:
	 * in a segment of a few MiB every page of buckets is a page of entries
	 * a full cache does not hold (1 of its 16 pages at 1 MiB). */
	uint64_t want = e * 100u / GROW_TO_PCT, top = (uint64_t)t.cur_n * GROW_FACTOR_MAX;
	uint64_t share = (uint64_t)shmmap__seg_live(o->s, o->g) * SEG_PAGE / GROW_ARRAY_SHARE;
	uint64_t n = t.cur_n * 2ull;
	while (n * limit < e * 100u && n < top && n < v->max_buckets)
		n *= 2;
	uint64_t least = n < v->max_buckets ? n : v->max_buckets;
	if (gt->failed_n) /* a new attempt, after the wait */
		gt->room_tries = 0;
	while (n < want && n * 2 * 8 <= share && n < top && n < v->max_buckets)
		n *= 2;
	if (n > v->max_buckets)
		n = v->max_buckets;
	int rc = -ENOSPC;
	for (; n > t.cur_n && rc == -ENOSPC; n /= 2)
		rc = shmmap__grow_start(o, v, (uint32_t)n, mu);
	if (rc == -ENOSPC) {
		gt->failed_n = 1;
		gt->failed_at = e;
		/* The segment is full and cannot grow: the least array that
		 * brings the load within its limit, but no more than the
		 * heap's share, is worth a window of evicted entries (chains
		 * of 50 made gets 9x slower), which the coordinator empties,
		 * a bounded number of times.  (Past the share, a table
		 * taken from a full cache's entries stayed when the entries
		 * grew large again: a shift from 10 B to 1 KiB values kept
		 * 45% of the segment live, not 80%.) */
		while (least > t.cur_n * 2ull && least * 8 > share)
			least /= 2;
		/* And only for chains twice as long as the limit: each
		 * window costs a full cache entries (a shift from 1 KiB to
		 * 10 B values, whose map went a little over its limit, evicted
		 * 2.8 bytes per byte written instead of 2.25). */
		if (gt->room_tries < GROW_ROOM_TRIES && least * 8 <= share &&
		    e * 100u > (uint64_t)t.cur_n * limit * 2)
			gt->room = (uint32_t)least;
	} else if (rc == 0) {
		gt->failed_n = 0;
	}
	return rc == 0 ? 2 : 0;
}

int shmmap__grow_round(const struct op_ctx *o, uint32_t idx, struct grow_track *gt,
		       pthread_mutex_t *mu, uint32_t step)
{
	struct map_view v;
	gt->resting = false;
	if (shmmap__map_view(o->s, o->g, idx, &v) < 0)
		return 0;
	if (gt->gen != v.gen) {
		gt->gen = v.gen;
		gt->word = 0;
		gt->failed_n = 0;
		gt->room = gt->room_tries = 0;
	}
	uint64_t w = atomic_load_explicit(&v.dir->tbl, memory_order_acquire);
	if (w & TBL_GROWING)
		return grow_moves(o, &v, w, mu, step);
	if (arr_named(&v.dir->arr[TBL_CUR(w) ^ 1]))
		return retire(o, &v, gt, w, mu);
	return maybe_start(o, &v, gt, mu);
}

void shmmap__grow_reset(const struct seg *s, const struct seg_geom *g, struct seg_mapdir *d,
			uint32_t runs[2])
{
	for (int i = 0; i < 2; i++) {
		runs[i] = arr_run(g, &d->arr[i]);
		/* The initial array lives in the table run: never freed here. */
		if (runs[i] && d->arr[i].off == d->buckets_off)
			runs[i] = 0;
	}
	uint64_t tb = (uint64_t)d->nbuckets * 8;
	if (d->buckets_off >= g->heap_off && seg_ok(s, d->buckets_off, tb, 8))
		memset(seg_ptr(s, d->buckets_off), 0, tb);
	d->arr[0] = (struct seg_array){.off = d->buckets_off, .nbuckets = d->nbuckets};
	d->arr[1] = (struct seg_array){0};
	/* Release: a new generation, idle, naming the initial array. */
	uint64_t w = atomic_load(&d->tbl);
	atomic_store_explicit(&d->tbl, (w | (TBL_GEN_ONE - 1)) + 1, memory_order_release);
}

void shmmap__grow_track_free(struct grow_track *gt)
{
	free(gt->passed);
	memset(gt, 0, sizeof *gt);
}
