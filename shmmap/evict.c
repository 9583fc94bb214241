/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * evict.c - what a full segment gives up for a new entry: the eviction
 * policy, and the handover of pages between size classes.
 *
 * Policy: CLOCK with a frequency per entry (the main queue of S3-FIFO, the
 * hand of SIEVE).  Every entry has a use count of 0..3 in its header
 * (seg_entry.meta), raised by a get that hits (a compare-and-swap, only
 * while below 3) and carried over when a key is rewritten.  Each size class has
 * a hand that goes round the blocks of its pages in page order: a block
 * with a count has it lowered (under the entry's stripe lock, with the
 * entry found linked) and is passed over, one without is evicted
 * (an expired entry always is).  A new entry goes into the block the hand
 * just freed, so it gets one full turn to be used; a new entry is not
 * spared for being new (an entry nobody reads again goes after one turn).
 *
 * Pages taken lately: page order is not age order.  A page a class takes
 * (from the pool, or handed over by another class) is filled with the
 * class's newest entries and may lie just ahead of the hand.  So it is
 * stamped (seg_page.due) with the class's count of blocks handed out
 * (seg_class.allocs, under the class lock) plus the class's blocks: the
 * hand passes the page over until the class has handed out that many,
 * about a turn of the hand.  The newest entries so stay by construction,
 * not by the clock.  If no page of the class is due (it grew by handovers
 * only), the hand starts from the page due first, the one taken first.
 *
 * Handover (no slab calcification): when class C needs memory and the pool
 * has none, C's own victims are weighed against the oldest victims of any
 * other class D.  Each class keeps the age of the last entry its hand
 * evicted and when that was (seg_class: age_ms, evict_t), so the age of
 * its next victim is about age_ms + (now - evict_ms): a class nobody
 * writes grows old.  If D's victims are more than 4 times as old as C's (or
 * C has no page at all), one page of D is emptied - every entry on it
 * evicted, with the page marked draining (alloc.c) so that none of its
 * blocks is handed out meanwhile - and the free of its last block gives it
 * to the pool, where C's allocation takes it.  The page is the one, of the
 * next few after D's hand, with the fewest used entries and no entry
 * written within a quarter of D's victim age (young(): by the clock, as a
 * donor is a class written little or not at all).  The cost of admitting an
 * entry is so bounded by one page of victims.  An entry larger than a page
 * needs a run of free pages: a window of pages from a rover is emptied.
 *
 * Fairness: victims are entries of any map whose policy is evict, by the
 * same hands; a map with policy reject loses nothing (its entries are
 * passed over), and a map with a quota evicts within its own share first
 * (table.c).
 *
 * Crash safety: every eviction is shmmap__tbl_evict_at's, recorded in the
 * intent record like a delete.  A drainer that dies leaves its page marked:
 * the coordinator's recovery ends the drains of a dead slot
 * (shmmap__alloc_undrain), and a sweep rebuilds pages from what is in use.
 * The hands, ages and page stamps are hints, written or read without a
 * lock and checked before use: a wrong one costs a wasted look, or a page
 * looked at a turn early or late, never an eviction of an entry that is
 * not there or not this class's (tbl_evict_at checks under the lock).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Looks a hand may take per eviction before it gives up (a class full of
 * entries nobody may evict): four turns of a count of 3 are at most this
 * many per block. */
#define HAND_TURNS 4u
#define HAND_LOOKS_MAX (UINT32_C(1) << 20)
/* Pages of a donor class tried per handover, and rounds of make-room-then-
 * allocate per entry. */
#define DRAIN_TRIES 4u
#define DRAIN_CANDIDATES 4u /* pages looked at to choose one */
#define EVICT_ROUNDS 64u
/* A class takes a page from another when that one's victims are this many
 * times older than its own (hysteresis: classes of about the same age keep
 * their pages rather than trade them back and forth). */
#define HANDOVER_RATIO 4u
/* Windows tried for an entry larger than a page. */
#define WINDOW_TRIES 8u

/* One eviction's state: the put's context and record, and a map view kept
 * across victims (most victims of a run are of the same map). */
struct evictor {
	const struct op_ctx *o;
	struct seg_intent *in;
	struct map_view v;
	bool have;      /* v holds the view of map v.idx */
	bool evictable; /* ...and that map's policy is evict */
	uint64_t kv;    /* key and value bytes evicted */
};

/* The map of the entry at off, if its entries may be evicted: NULL for a
 * map with policy reject, a map gone, or a header that names no map. */
static const struct map_view *victim_map(struct evictor *ev, uint64_t off)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	if (!seg_ok(s, off, sizeof(struct seg_entry), SEG_ALIGN))
		return NULL;
	const struct seg_entry *e = seg_ptr(s, off);
	uint32_t m = __atomic_load_n(&e->map, __ATOMIC_RELAXED);
	if (m >= g->max_maps)
		return NULL;
	const struct seg_mapdir *d = seg_dir(s, g, m);
	if (!ev->have || ev->v.idx != m ||
	    ev->v.gen != atomic_load_explicit((_Atomic uint32_t *)&d->gen, memory_order_relaxed)) {
		ev->have = shmmap__map_view(s, g, m, &ev->v) == 0;
		ev->evictable = ev->have && ev->v.policy == MAP_POLICY_EVICT;
	}
	return ev->evictable ? &ev->v : NULL;
}

/* Evict the entry at off (its count looked at unless force).  1, 0 or -errno. */
static int evict_block(struct evictor *ev, uint64_t off, bool force, uint32_t *age)
{
	const struct map_view *v = victim_map(ev, off);
	if (!v)
		return 0;
	return shmmap__tbl_evict_at(ev->o, v, ev->in, off, force, &ev->kv, age);
}

static uint32_t per_page(uint32_t cls)
{
	return SEG_PAGE / shmmap__class_size(cls);
}

static bool slab_of(const struct seg_page *p, uint32_t cls)
{
	return __atomic_load_n(&p->kind, __ATOMIC_RELAXED) == PAGE_SLAB &&
	       __atomic_load_n(&p->cls, __ATOMIC_RELAXED) == cls;
}

/* The first page of class cls at or after page i (wrapping), or
 * UINT32_MAX if it has none. */
static uint32_t page_of(const struct seg *s, const struct seg_geom *g, uint32_t cls, uint32_t i)
{
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	if (np == 0)
		return UINT32_MAX;
	i = i < np ? i : 0;
	for (uint32_t k = 0; k < np; k++, i = i + 1 < np ? i + 1 : 0)
		if (slab_of(seg_page(s, g, i), cls))
			return i;
	return UINT32_MAX;
}


/* The age a class's next victim has: its last victim's age plus the time
 * since (a class nobody writes grows old). */
static uint64_t class_age(const struct seg_class *sc, uint32_t now)
{
	return (uint64_t)atomic_load_explicit(&sc->age_ms, memory_order_relaxed) +
	       (uint64_t)(uint32_t)(now - atomic_load_explicit(&sc->evict_t, memory_order_relaxed)) *
		       4u;
}

static void class_evicted(struct seg_class *sc, uint32_t age)
{
	atomic_store_explicit(&sc->age_ms, age, memory_order_relaxed);
	atomic_store_explicit(&sc->evict_t, shmmap__itime(), memory_order_relaxed);
}

/* May the hand of class sc look at the blocks of page p?  Not before the
 * class has handed out as many blocks as it has since it took the page
 * (seg_page.due, alloc.c): they hold its newest entries until then. */
static bool page_due(const struct seg_class *sc, const struct seg_page *p)
{
	return (int32_t)(__atomic_load_n(&sc->allocs, __ATOMIC_RELAXED) -
			 __atomic_load_n(&p->due, __ATOMIC_RELAXED)) >= 0;
}

/* The page of class cls that is due first (it was taken longest ago), or
 * UINT32_MAX: where the hand goes when none is due yet. */
static uint32_t first_due(const struct seg *s, const struct seg_geom *g, uint32_t cls)
{
	const struct seg_class *sc = seg_class(s, g, cls);
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire), best = UINT32_MAX;
	uint32_t now = __atomic_load_n(&sc->allocs, __ATOMIC_RELAXED);
	int32_t best_wait = INT32_MAX;
	for (uint32_t i = 0; i < np; i++) {
		const struct seg_page *p = seg_page(s, g, i);
		if (!slab_of(p, cls) || __atomic_load_n(&p->drain, __ATOMIC_RELAXED))
			continue;
		int32_t wait = (int32_t)(__atomic_load_n(&p->due, __ATOMIC_RELAXED) - now);
		if (wait < best_wait) {
			best_wait = wait;
			best = i;
		}
	}
	return best;
}

enum { HAND_NONE, HAND_BLOCK, HAND_NOT_DUE };

/* Take the block under class cls's hand and move the hand on: HAND_BLOCK
 * (*off), HAND_NONE (the class has no page), or HAND_NOT_DUE (it went
 * round every page of the class and none was due, unless any_page). */
static int hand_next(const struct seg *s, const struct seg_geom *g, uint32_t cls, bool any_page,
		     uint64_t *off)
{
	struct seg_class *sc = seg_class(s, g, cls);
	uint32_t per = per_page(cls), size = shmmap__class_size(cls);
	uint64_t pages = __atomic_load_n(&sc->pages, __ATOMIC_RELAXED), passed = 0;
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	/* Bound: CAS retries, and a round of pages passed over. */
	for (uint64_t tries = 0; tries < 64 + 2 * (uint64_t)np; tries++) {
		uint64_t h = atomic_load_explicit(&sc->hand, memory_order_relaxed);
		uint32_t pi = HAND_PAGE(h), j = HAND_BLK(h);
		np = atomic_load_explicit(&g->npages, memory_order_acquire);
		const struct seg_page *p = h && pi < np ? seg_page(s, g, pi) : NULL;
		/* A page being emptied is passed over: a block freed there
		 * cannot be handed out (alloc.c), so it makes no room.  So is a
		 * page not due yet (its entries are the class's newest). */
		bool mine = p && slab_of(p, cls);
		bool due = mine && (any_page || page_due(sc, p));
		if (!mine || j >= per || j >= __atomic_load_n(&p->carved, __ATOMIC_RELAXED) ||
		    __atomic_load_n(&p->drain, __ATOMIC_RELAXED) || !due) {
			if (mine && !due && ++passed > pages)
				return HAND_NOT_DUE;
			/* Past this page: the next of the class. */
			uint32_t n = page_of(s, g, cls, p ? pi + 1 : 0);
			if (n == UINT32_MAX)
				return HAND_NONE;
			atomic_compare_exchange_weak_explicit(&sc->hand, &h, HAND(n, 0),
							      memory_order_relaxed,
							      memory_order_relaxed);
			continue;
		}
		if (atomic_compare_exchange_weak_explicit(&sc->hand, &h, HAND(pi, j + 1),
							  memory_order_relaxed,
							  memory_order_relaxed)) {
			*off = seg_page_off(g, pi) + (uint64_t)j * size;
			return HAND_BLOCK;
		}
	}
	return HAND_NONE;
}

/* The hand of class cls evicts one entry: 1, 0 (none it may evict within
 * its bound), or -errno. */
static int evict_own(struct evictor *ev, uint32_t cls)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *sc = seg_class(s, g, cls);
	uint64_t blocks = __atomic_load_n(&sc->pages, __ATOMIC_RELAXED) * per_page(cls);
	uint64_t looks = blocks * HAND_TURNS + 64u;
	if (looks > HAND_LOOKS_MAX)
		looks = HAND_LOOKS_MAX;
	bool any_page = false;
	for (uint64_t k = 0; k < looks; k++) {
		uint64_t off;
		int hn = hand_next(s, g, cls, any_page, &off);
		if (hn == HAND_NOT_DUE) {
			/* Every page of the class was taken lately (it grew by
			 * handovers): the one taken first holds its oldest
			 * entries; from there, any page. */
			uint32_t first = first_due(s, g, cls);
			if (first == UINT32_MAX)
				return 0;
			atomic_store_explicit(&sc->hand, HAND(first, 0), memory_order_relaxed);
			any_page = true;
			continue;
		}
		if (hn != HAND_BLOCK)
			return 0;
		/* Evicted unless used since the hand last came by; then its
		 * count is lowered instead, under its stripe lock with the entry
		 * found linked (tbl_evict_at): never through a look at a block
		 * that may by now belong to another class. */
		uint32_t age = 0;
		int r = evict_block(ev, off, false, &age);
		if (r != 0) {
			if (r > 0) {
				class_evicted(sc, age);
				atomic_fetch_add_explicit(&sc->evictions, 1, memory_order_relaxed);
			}
			return r;
		}
	}
	return 0;
}

/* Evict every entry of page pi (class cls), marked draining meanwhile.
 * 1 if the page was emptied (it went to the pool), 0 if not (an entry that
 * may not be evicted, or one in flight), or -errno.  *oldest gets the age
 * of the oldest victim (0 if none). */
static int drain_page(struct evictor *ev, uint32_t pi, uint32_t cls, uint32_t *oldest)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	const struct lock_ctx *lk = &ev->o->lk;
	int rc = shmmap__page_drain(s, g, lk, pi, cls);
	if (rc < 0)
		return rc == -EAGAIN ? rc : 0;
	const struct seg_page *p = seg_page(s, g, pi);
	uint32_t per = per_page(cls), size = shmmap__class_size(cls);
	uint64_t poff = seg_page_off(g, pi);
	*oldest = 0;
	for (uint32_t j = 0; j < per; j++) {
		/* Emptied: the page went to the pool (and maybe to a class). */
		if (!slab_of(p, cls) || __atomic_load_n(&p->drain, __ATOMIC_RELAXED) != lk->owner)
			return 1;
		if (j >= __atomic_load_n(&p->carved, __ATOMIC_RELAXED))
			break;
		uint32_t age = 0;
		rc = evict_block(ev, poff + (uint64_t)j * size, true, &age);
		if (rc < 0) {
			(void)shmmap__page_undrain(s, g, lk, pi, cls);
			return rc;
		}
		if (rc > 0 && age > *oldest)
			*oldest = age;
	}
	if (!slab_of(p, cls) || __atomic_load_n(&p->drain, __ATOMIC_RELAXED) != lk->owner)
		return 1;
	(void)shmmap__page_undrain(s, g, lk, pi, cls);
	return 0;
}

static int room_for_run(struct evictor *ev, uint32_t need);
static bool page_may_empty(struct evictor *ev, uint32_t i, uint32_t np, uint32_t *head);

/* How many of (up to HOT_SAMPLE of) the blocks of the page at poff have a
 * use count: a read without locks, a hint. */
#define HOT_SAMPLE 16u
static uint32_t hot_blocks(const struct seg *s, uint64_t poff, uint32_t per, uint32_t size)
{
	uint32_t step = per > HOT_SAMPLE ? per / HOT_SAMPLE : 1, hot = 0;
	for (uint32_t j = 0; j < per; j += step) {
		const struct seg_entry *e = seg_ptr(s, poff + (uint64_t)j * size);
		hot += ENT_FREQ(atomic_load_explicit(&((struct seg_entry *)e)->meta,
						     memory_order_relaxed)) != 0;
	}
	return hot;
}

/*
 * Was the block at off written within the last quarter of victim_ms (the
 * age of its class's last victim)?  Such an entry is much younger than the
 * ones its class gives up: a page that holds one is not the page to hand
 * over.  Time, not the class's count of blocks (seg_page.due), because a
 * donor is a class written less, or not at all: its entries grow old by
 * the clock.  A read without a lock, of a block that may be anything by
 * now: a hint that writes nothing.
 */
static bool young(const struct seg *s, uint64_t off, uint32_t now, uint32_t victim_ms)
{
	uint64_t m = atomic_load_explicit(&((struct seg_entry *)seg_ptr(s, off))->meta,
					  memory_order_relaxed);
	return (uint64_t)ENT_AGE_MS(now, ENT_ITIME(m)) * 4 < victim_ms;
}

/* Empty one page of class d for another class: 1, 0 or -errno. */
static int handover(struct evictor *ev, uint32_t d)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *dc = seg_class(s, g, d);
	/* The page after the hand's: the hand comes to it next, so its entries
	 * have gone longest without a look (behind the hand, on its own page,
	 * are the blocks it just freed, holding the newest entries). */
	uint64_t h = atomic_load_explicit(&dc->hand, memory_order_relaxed);
	uint32_t pi = h ? HAND_PAGE(h) + 1 : 0;
	uint32_t per = per_page(d), size = shmmap__class_size(d), now = shmmap__itime();
	uint32_t victim_ms = atomic_load_explicit(&dc->age_ms, memory_order_relaxed);
	for (uint32_t t = 0; t < DRAIN_TRIES; t++) {
		/* Of the next few pages that may be emptied and hold no young
		 * entry, the one with the fewest entries used since the hand
		 * came by: the least valuable page. */
		uint32_t best = UINT32_MAX, best_hot = UINT32_MAX, head;
		uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
		for (uint32_t c = 0; c < DRAIN_CANDIDATES && pi != UINT32_MAX; c++, pi++) {
			pi = page_of(s, g, d, pi);
			if (pi == UINT32_MAX || !page_may_empty(ev, pi, np, &head))
				continue;
			/* Not a page that holds young entries (see young()). */
			uint64_t poff = seg_page_off(g, pi);
			if (young(s, poff, now, victim_ms) ||
			    young(s, poff + (uint64_t)(per / 2) * size, now, victim_ms) ||
			    young(s, poff + (uint64_t)(per - 1) * size, now, victim_ms))
				continue;
			uint32_t hot = hot_blocks(s, poff, per, size);
			if (hot < best_hot) {
				best = pi;
				best_hot = hot;
			}
		}
		if (best == UINT32_MAX) {
			if (pi == UINT32_MAX)
				return 0;
			continue;
		}
		pi = best;
		/* The donor's next victims are about as old as the oldest of
		 * this page's: its age from now on. */
		uint32_t oldest;
		int r = drain_page(ev, pi, d, &oldest);
		if (r > 0) {
			if (oldest)
				class_evicted(dc, oldest);
			atomic_fetch_add_explicit(&seg_hdr(s)->handovers, 1, memory_order_relaxed);
			return 1;
		}
		if (r < 0)
			return r;
		pi++;
	}
	return 0;
}

/* The class other than c whose victims are oldest, or -1. */
static int oldest_class(const struct seg *s, const struct seg_geom *g, uint32_t c, uint32_t now,
			uint64_t *age)
{
	int best = -1;
	*age = 0;
	for (uint32_t k = 0; k < g->nclasses; k++) {
		const struct seg_class *sc = seg_class(s, g, k);
		if (k == c || __atomic_load_n(&sc->pages, __ATOMIC_RELAXED) == 0)
			continue;
		uint64_t a = class_age(sc, now);
		if (best < 0 || a > *age) {
			best = (int)k;
			*age = a;
		}
	}
	return best;
}

/* Free a block of class cls (by its hand, or by a handover): 1, 0, -errno. */
static int room_in_class(struct evictor *ev, uint32_t cls)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *sc = seg_class(s, g, cls);
	uint32_t now = shmmap__itime();
	uint64_t dage;
	int d = oldest_class(s, g, cls, now, &dage);
	bool none = __atomic_load_n(&sc->pages, __ATOMIC_RELAXED) == 0;
	int r;
	if (d >= 0 && (none || dage > HANDOVER_RATIO * class_age(sc, now) + 4)) {
		r = handover(ev, (uint32_t)d);
		if (r != 0) {
			if (r > 0)
				atomic_fetch_add_explicit(&sc->pages_in, 1, memory_order_relaxed);
			return r;
		}
	}
	if (!none && (r = evict_own(ev, cls)) != 0)
		return r;
	/* Nothing of our own to give: any other class's page, else any page
	 * at all (runs of large entries hold the memory). */
	for (uint32_t k = 0; k < g->nclasses; k++) {
		if (k == cls || __atomic_load_n(&seg_class(s, g, k)->pages, __ATOMIC_RELAXED) == 0)
			continue;
		if ((r = handover(ev, k)) != 0)
			return r;
	}
	return room_for_run(ev, 1);
}

/* Is the block at off an entry nobody may evict (of a live map whose
 * policy is reject)?  A read without a lock: a hint, used only to leave a
 * page alone before anything on it is evicted for nothing.  (A freed
 * block of such a map looks the same: the page is merely passed over.) */
static bool pinned(const struct seg *s, const struct seg_geom *g, uint64_t off)
{
	const struct seg_entry *e = seg_ptr(s, off);
	uint32_t m = __atomic_load_n(&e->map, __ATOMIC_RELAXED);
	if (m >= g->max_maps)
		return false;
	const struct seg_mapdir *d = seg_dir(s, g, m);
	return atomic_load_explicit((_Atomic uint32_t *)&d->state, memory_order_acquire) ==
		       MAP_LIVE &&
	       __atomic_load_n(&d->policy, __ATOMIC_RELAXED) != MAP_POLICY_EVICT &&
	       __atomic_load_n(&e->klen, __ATOMIC_RELAXED) != 0;
}

/* May page i be emptied, as far as a look without locks tells?  The head
 * of the run it belongs to in *head (i itself unless a CONT page).  A run
 * must be an entry of an evict map (a map's table or bucket array is not
 * one: evict_block would find it linked nowhere); a slab page must hold no
 * pinned entry. */
static bool page_may_empty(struct evictor *ev, uint32_t i, uint32_t np, uint32_t *head)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	const struct seg_page *p = seg_page(s, g, i);
	uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	*head = i;
	if (kind == PAGE_FREE)
		return true;
	if (kind == PAGE_SLAB) {
		uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
		if (cls >= g->nclasses)
			return false;
		uint32_t size = shmmap__class_size(cls), per = per_page(cls);
		uint32_t carved = __atomic_load_n(&p->carved, __ATOMIC_RELAXED);
		for (uint32_t j = 0; j < per && j < carved; j++)
			if (pinned(s, g, seg_page_off(g, i) + (uint64_t)j * size))
				return false;
		return true;
	}
	uint32_t j = i;
	while (j > 0 && __atomic_load_n(&seg_page(s, g, j)->kind, __ATOMIC_RELAXED) == PAGE_CONT)
		j--;
	const struct seg_page *hp = seg_page(s, g, j);
	uint32_t run = __atomic_load_n(&hp->run, __ATOMIC_RELAXED);
	if (__atomic_load_n(&hp->kind, __ATOMIC_RELAXED) != PAGE_RUN || run < 1 ||
	    run > np - j || j + run <= i)
		return false;
	*head = j;
	return victim_map(ev, seg_page_off(g, j)) != NULL;
}

/*
 * Empty a window of `need` contiguous pages (for an entry larger than a
 * page, or any one page when a class can take none from another): 1 if one
 * was emptied, 0, -errno.  A window is first looked at without locks, and
 * one holding a page that cannot be emptied (a table, an entry of a reject
 * map) is passed over, the next starting after that page, so nothing is
 * evicted for a window that cannot be had.
 */
static int room_for_run(struct evictor *ev, uint32_t need)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_header *h = seg_hdr(s);
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	if (need == 0 || need > np)
		return 0;
	uint32_t start = atomic_fetch_add_explicit(&h->evict_rover, need, memory_order_relaxed) % np;
	for (uint32_t t = 0; t < WINDOW_TRIES * 4; t++) {
		if (start + need > np)
			start = 0;
		uint32_t bad = UINT32_MAX, head;
		for (uint32_t i = start; i < start + need && bad == UINT32_MAX; i++)
			if (!page_may_empty(ev, i, np, &head))
				bad = i;
		if (bad != UINT32_MAX) {
			start = bad + 1;
			continue;
		}
		bool ok = true;
		for (uint32_t i = start; i < start + need && ok; i++) {
			const struct seg_page *p = seg_page(s, g, i);
			uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
			uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
			uint32_t age;
			int r = 1;
			if (kind == PAGE_SLAB && cls < g->nclasses)
				r = drain_page(ev, i, cls, &age);
			else if ((kind == PAGE_RUN || kind == PAGE_CONT) &&
				 page_may_empty(ev, i, np, &head))
				/* The run's entry (found linked, or nothing happens). */
				r = evict_block(ev, seg_page_off(g, head), true, &age);
			else if (kind != PAGE_FREE)
				r = 0;
			if (r < 0)
				return r;
			ok = r > 0;
			if (!ok)
				start = i + 1;
		}
		if (ok)
			return 1;
	}
	atomic_store_explicit(&h->evict_rover, start, memory_order_relaxed);
	return 0;
}

int shmmap__evict_for(const struct op_ctx *o, struct seg_intent *in, size_t n)
{
	struct evictor ev = {.o = o, .in = in};
	int cls = shmmap__class_of(o->s, o->g, n);
	uint32_t pages = (uint32_t)((n + SEG_PAGE - 1) / SEG_PAGE);
	for (uint32_t round = 0; round < EVICT_ROUNDS; round++) {
		int r = cls >= 0 ? room_in_class(&ev, (uint32_t)cls) : room_for_run(&ev, pages);
		if (r <= 0)
			return r < 0 ? r : -ENOSPC;
		r = shmmap__alloc(o->s, o->g, &o->lk, n, &in->a);
		if (r != -ENOSPC)
			return r;
	}
	return -ENOSPC;
}
