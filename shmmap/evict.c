/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * evict.c - what a full segment gives up for a new entry: the eviction
 * policy, and the handover of pages between size classes.
 *
 * Policy: S3-FIFO's two queues as two hands over the same blocks.  Every
 * entry has a use count of 0..3 in its header (seg_entry.meta), raised by
 * a get that hits (a compare-and-swap, only while below 3) and carried
 * over when a key is rewritten, and a bit, ENT_KEPT, set once a hand found
 * it used.  Each size class has a main hand (CLOCK: the main queue) that
 * goes round the blocks of its pages in page order: a block with a count
 * has it lowered and is kept (under the entry's stripe lock, with the
 * entry found linked) and passed over, one without is evicted (an expired
 * entry always is).  Before it, the class's probation hand (the small
 * queue, see "probation" below) looks at up to 64 blocks (at most a
 * page's) for an entry that is past its probation, was never kept and
 * nobody read: one found is evicted, a read one is kept.  So an entry
 * nobody read goes after a twentieth of the class's turn, not a whole
 * one, and the main hand's turn holds entries that were read (on the
 * bench-cache traces: hit ratio 0.549 -> 0.59 at 1%, 0.697 -> 0.74 at 5%).
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
 * evicted and when that was (seg_class: age, evict_t), so the age of
 * its next victim is about age + (now - evict_t): a class nobody
 * writes grows old.  A probation hand's victims count a turn old (times
 * PROBATION_DIV) there; where both classes have probation hands that
 * evict, their probation victims' own ages are compared instead (seg_
 * probation: age, evict_t), like with like, so that a class nobody
 * writes any more, full of entries nobody read, gives its pages to one
 * that is written now.  Main hand victims' ages are weighed by what their
 * blocks cost (class_weight: the block size rounded down to a power of
 * two; after GreedyDual-Size): of two entries unread as long, the larger
 * frees more memory, so a class of 4 KiB entries gives its pages before
 * one of 100-byte entries not 32 times older (bench-cache, mixed sizes:
 * hit ratio 0.60 -> 0.66 at 1% with the square root of the size, which
 * the slabs of several pages, whose blocks are smaller, brought down to
 * 0.65; 0.67 with the size itself, and 0.80 at 5%).  Rounded,
 * so that neighbouring classes (a stream of values growing a little at a
 * time) compare by age alone: with the exact root, a class weighed 5%
 * more than its neighbour evicted its own newest entries rather than
 * take the neighbour's pages.  A donor whose victims are unread entries
 * (its probation hand evicts) is compared by age alone.  If D's weighed
 * victims are more than 4 times as old as C's (or C has no page at all),
 * one page of D is emptied, marked draining (alloc.c) so that none of its
 * blocks is handed out meanwhile: its entries nobody used since D's hand
 * came by are evicted, and its used ones moved to free blocks elsewhere in
 * D (drain_page; D's own hands evict its next victims to make them), so D
 * loses its coldest entries, not the ones in use; and the free of its last
 * block gives the page to the pool, where C's allocation takes it.  A page
 * whose used entries find no room is given up, unless C has nothing else.
 * The page is the one, of the
 * next few after D's hand, with the fewest used entries, and not one
 * that was used and holds an entry written within a quarter of D's victim
 * age (young(): by the clock, as a donor is a class written little or not
 * at all; a page of D's newest entries that nobody read may go: a class
 * whose keys nobody wants any more gives its pages to one now written;
 * and a D that has evicted nothing for IDLE_DONOR (8 ms) calls young only
 * what is younger than C's own next victims).
 * A donor that had no page to give is not asked again for REFUSED_WAIT (4 ms);
 * the next oldest class is asked instead (DONORS).
 * A class whose slabs are several pages (above 8 KiB, alloc.c) needs them
 * contiguous, which one donor page is not: it empties a window of its
 * slab's pages instead (room_for_run, below), passing over its own slabs
 * (its own hands evict those in age order), once a donor is older.  Its
 * hands, and a handover from it, work on whole slabs: "page" in what
 * follows is a slab's first page (PAGE_SLAB), its blocks those of the slab.
 * The cost of admitting an entry is so bounded by one slab of victims and
 * moves (each move's search for a victim by at most MOVE_LOOKS looks).  An
 * entry larger than a page needs a run of free pages: a window of pages
 * near a rover is emptied, the cheapest of those starting in the next
 * WINDOW_CHOOSE pages (cheapest_window), then the next that can be
 * (room_for_run; each page of the heap looked at once at most).  Such
 * runs are donors too: a hand of their own stops at run heads and gives a class the pages of one older than its victims
 * (run_donor).  Neither a window nor a forced handover takes a page
 * holding a used entry that cannot move (the only page of its class, or a
 * used large entry) but as a last resort: a small map's counters, read all
 * the time, live on such a page.
 *
 * Fairness: victims are entries of any map whose policy is evict, by the
 * same hands; a map with policy reject loses nothing (its entries are
 * passed over), and a map with a quota evicts within its own share first
 * (table.c).
 *
 * Crash safety: every eviction is shmmap__tbl_evict_at's, recorded in the
 * intent record like a delete, and every move too, recorded like a put that
 * writes a key anew (table.c move_locked).  A drainer that dies leaves its
 * page marked:
 * the coordinator's recovery ends the drains of a dead slot
 * (shmmap__alloc_undrain), and a sweep rebuilds pages from what is in use.
 * The hands, ages, page stamps and the probation state (the checkpoints,
 * its victims' age, a donor's refusal) are hints, written or read without
 * a lock (the checkpoints under the class lock) and checked before use: a
 * wrong one costs a wasted look, or a page looked at a turn early or late,
 * never an eviction of an entry that is not there or not this class's
 * (tbl_evict_at checks under the lock).
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
/* A donor class that had no page to give is left alone this long (in
 * shmmap__itime() units): 4 ms.  Its pages are often only too young for a
 * moment (a class just turned over); 20 ms outlasted a whole shift to
 * small values in bench-cache (10,000 puts in about 20 ms), whose new
 * class then evicted its own newest keys (10% to 40% of the last 1000 lost
 * in 2 of 7 runs; none in 6 of 6 with 4 ms, and no slower: the search it
 * saves is once per 4 ms per donor). */
#define REFUSED_WAIT ITIME_FROM_MS(4)
/* A donor class that has evicted nothing for this long is written no more
 * (or little): its pages are young only if younger than the asker's own
 * victims (handover). */
#define IDLE_DONOR ITIME_FROM_MS(8)
/* Hysteresis of the age comparisons between classes. */
#define AGE_SLACK ITIME_FROM_MS(4)
/* Windows tried for an entry larger than a page. */
#define WINDOW_TRIES 8u
/* Pages room_for_run's first pass looks at (beyond the window's): it
 * passes over pages where a sample finds an entry in use, and a cache read
 * everywhere has few others. */
#define WINDOW_HOT_LOOKS 128u

/* One eviction's state: the put's context and record, and a map view kept
 * across victims (most victims of a run are of the same map). */
struct evictor {
	const struct op_ctx *o;
	struct seg_intent *in;
	uint32_t now;   /* shmmap__itime() when it began */
	struct map_view v;
	bool have;      /* v holds the view of map v.idx */
	bool evictable; /* ...and that map's policy is evict */
	int rejects;    /* -1: not looked yet; else: is a live map's policy reject? */
	uint64_t kv;    /* key and value bytes evicted */
	bool hold;      /* the coordinator's: hold the window it empties */
	bool hot_ok;    /* handover may take a page whose used entries cannot
			   move (room_in_class's last resort) */
	bool keep_counts; /* the main hand makes a block for a move: it lowers
			     no count (see MOVE_LOOKS) */
	uint32_t avoid;   /* a class + 1 whose slabs no window takes (0: none):
			     the class the window is for (room_in_class) */
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

/* Evict the entry at off, as how says (tbl_evict_at).  1, 0 or -errno. */
static int evict_block(struct evictor *ev, uint64_t off, const struct evict_how *how,
		       uint32_t *age)
{
	const struct map_view *v = victim_map(ev, off);
	if (!v)
		return 0;
	struct evict_how h = *how;
	h.now = ev->now;
	return shmmap__tbl_evict_at(ev->o, v, ev->in, off, &h, &ev->kv, age);
}

static const struct evict_how FORCE = {.force = true};

/* Blocks in a slab of class cls (a page, or several: alloc.c). */
static uint32_t per_slab(uint32_t cls)
{
	return shmmap__class_blocks(cls);
}

/* Blocks in the slabs class cls has (a hint, as sc->pages). */
static uint64_t class_blocks(const struct seg_class *sc, uint32_t cls)
{
	uint32_t npg = shmmap__class_pages(cls);
	return npg ? __atomic_load_n(&sc->pages, __ATOMIC_RELAXED) / npg * per_slab(cls) : 0;
}

static bool slab_of(const struct seg_page *p, uint32_t cls)
{
	return __atomic_load_n(&p->kind, __ATOMIC_RELAXED) == PAGE_SLAB &&
	       __atomic_load_n(&p->cls, __ATOMIC_RELAXED) == cls;
}

/* The header word (seg_entry.meta) of the block at off, read without a
 * lock: the block may be anything by now, so what it says is a hint. */
static uint64_t block_meta(const struct seg *s, uint64_t off)
{
	return atomic_load_explicit(&((struct seg_entry *)seg_ptr(s, off))->meta,
				    memory_order_relaxed);
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

/* itime units since t (0 if t is later: another process's time, taken
 * after this caller's now). */
static uint64_t since(uint32_t now, uint32_t t)
{
	int32_t dt = (int32_t)(now - t);
	return dt > 0 ? (uint64_t)dt : 0;
}

/* The age a class's next victim has: its last victim's age (a probation
 * victim's scaled to a turn) plus the time since (a class nobody writes
 * grows old). */
static uint64_t class_age(const struct seg_class *sc, uint32_t now)
{
	return (uint64_t)atomic_load_explicit(&sc->age, memory_order_relaxed) +
	       since(now, atomic_load_explicit(&sc->evict_t, memory_order_relaxed));
}

static void class_evicted(struct seg_class *sc, uint32_t age, uint32_t now)
{
	atomic_store_explicit(&sc->age, age, memory_order_relaxed);
	atomic_store_explicit(&sc->evict_t, now, memory_order_relaxed);
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

/* Take the block under a hand of class cls (*hw: its main hand or its
 * probation hand) and move the hand on:
 * HAND_BLOCK (*off), HAND_NONE (the class has no page), or HAND_NOT_DUE
 * (it went round every page of the class and none was due, unless
 * any_page). */
static int hand_next(const struct seg *s, const struct seg_geom *g, uint32_t cls,
		     _Atomic uint64_t *hw, bool any_page, uint64_t *off)
{
	struct seg_class *sc = seg_class(s, g, cls);
	uint32_t per = per_slab(cls), size = shmmap__class_size(cls);
	uint64_t pages = __atomic_load_n(&sc->pages, __ATOMIC_RELAXED), passed = 0, laps = 0;
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	/* Bound: CAS retries, and a round of pages passed over. */
	for (uint64_t tries = 0; tries < 64 + 2 * (uint64_t)np; tries++) {
		uint64_t h = atomic_load_explicit(hw, memory_order_relaxed);
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
			/* Two rounds of the class's pages without a block: all
			 * of them are being emptied, say (each step to the next
			 * page searches the page array: do not go on). */
			if (++laps > 2 * pages + 2)
				return HAND_NONE;
			/* Past this page: the next of the class. */
			uint32_t n = page_of(s, g, cls, p ? pi + 1 : 0);
			if (n == UINT32_MAX)
				return HAND_NONE;
			atomic_compare_exchange_weak_explicit(hw, &h, HAND(n, 0),
							      memory_order_relaxed,
							      memory_order_relaxed);
			continue;
		}
		if (atomic_compare_exchange_weak_explicit(hw, &h, HAND(pi, j + 1),
							  memory_order_relaxed,
							  memory_order_relaxed)) {
			*off = seg_page_off(g, pi) + (uint64_t)j * size;
			return HAND_BLOCK;
		}
	}
	return HAND_NONE;
}

/* ---- probation ----
 * An entry nobody reads should go soon, not after a whole turn of the
 * hand (on a Zipf trace most new entries are read never again): the small
 * FIFO queue of S3-FIFO, here a second hand over the same blocks.  An
 * entry is on probation from its write until a probation later
 * (PROBATION_DIV: a twentieth of the class's blocks handed out since);
 * past it, the probation hand evicts it if nobody read it, and keeps it
 * (ENT_KEPT: it leaves the queue) if somebody did.  The main hand is the
 * clock as before, and keeps (ENT_KEPT) what it finds used.
 *
 * "A probation ago" is counted in blocks handed out, not in time: every
 * `step` blocks (a MARK_DIV-th of the class's) the time is recorded in a
 * ring of CLASS_MARKS checkpoints (shmmap__evict_counted, under the class
 * lock), and an entry written before the newest checkpoint at least a
 * probation back is past it (probation_age).  A class whose probation would
 * hold fewer than PROBATION_MIN entries (a class just started, or one of
 * large blocks) has no probation hand: its main hand alone evicts. */
#define PROBATION_DIV 20u
#define MARK_DIV 40u
#define PROBATION_MIN 64u
#define PROBE_LOOKS 64u /* looks of the probation hand per eviction, at most */

/* Has a class of this many blocks a probation hand? */
static bool probation_on(uint64_t blocks)
{
	return blocks / PROBATION_DIV >= PROBATION_MIN;
}

static struct seg_probation *prob_of(const struct seg *s, uint32_t cls)
{
	_Static_assert(SEG_NCLASSES <= sizeof seg_hdr(s)->prob / sizeof seg_hdr(s)->prob[0],
		       "a probation state per class");
	return &seg_hdr(s)->prob[cls % SEG_NCLASSES];
}

void shmmap__evict_counted(const struct seg *s, const struct seg_geom *g, uint32_t cls)
{
	const struct seg_class *sc = seg_class(s, g, cls);
	struct seg_probation *pr = prob_of(s, cls);
	uint32_t n = __atomic_load_n(&sc->allocs, __ATOMIC_RELAXED);
	uint64_t step = class_blocks(sc, cls) / MARK_DIV;
	uint32_t h = atomic_load_explicit(&pr->mark_head, memory_order_relaxed) % CLASS_MARKS;
	if (n - atomic_load_explicit(&pr->mark_n[h], memory_order_relaxed) < (step ? step : 1))
		return;
	h = (h + 1) % CLASS_MARKS;
	atomic_store_explicit(&pr->mark_n[h], n, memory_order_relaxed);
	uint32_t t = shmmap__itime();
	atomic_store_explicit(&pr->mark_t[h], t ? t : 1u, memory_order_relaxed); /* 0: unset */
	atomic_store_explicit(&pr->mark_head, h, memory_order_relaxed);
}

/* The age (itime units) below which an entry of class sc is on probation
 * (for tbl_evict_at's young): that of the newest checkpoint at least a
 * probation ago, or of the oldest one if none is (the most it can tell),
 * or UINT32_MAX if none is set yet (every entry on probation).  Read
 * without the lock: a hint. */
static uint32_t probation_age(const struct seg_class *sc, const struct seg_probation *pr,
			     uint64_t blocks, uint32_t now)
{
	uint32_t n = __atomic_load_n(&sc->allocs, __ATOMIC_RELAXED);
	uint32_t want = (uint32_t)(blocks / PROBATION_DIV), best_d = UINT32_MAX, best_t = now;
	uint32_t old_d = 0, old_t = 0;
	for (uint32_t k = 0; k < CLASS_MARKS; k++) {
		uint32_t d = n - atomic_load_explicit(&pr->mark_n[k], memory_order_relaxed);
		uint32_t t = atomic_load_explicit(&pr->mark_t[k], memory_order_relaxed);
		if (!t)
			continue; /* not set yet */
		if (d >= want && d < best_d) {
			best_d = d;
			best_t = t;
		}
		if (d >= old_d) {
			old_d = d;
			old_t = t;
		}
	}
	if (best_d == UINT32_MAX) {
		if (!old_t)
			return UINT32_MAX; /* no checkpoint yet: every entry on probation */
		best_t = old_t;
	}
	return ENT_AGE(now, best_t) + 1;
}

/* The probation hand of class cls: it looks only at entries past their
 * probation that no hand found used yet, evicts one not used meanwhile and
 * keeps (ENT_KEPT) one that was.  So an entry nobody reads goes after a
 * probation, a twentieth of the class's turn, not a whole turn (S3-FIFO's
 * small queue).  Like the main hand it passes over pages not due yet (a
 * page taken lately holds the class's newest entries: page order is not
 * age order).  1, 0 (none within its looks), -errno. */
static int evict_probe(struct evictor *ev, uint32_t cls, uint32_t young)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *sc = seg_class(s, g, cls);
	struct evict_how how = {.probe = true, .young = young};
	uint32_t now = ev->now;
	/* At most a page's worth of looks: a hand that moves on to the next
	 * page of its class searches the page array for it. */
	uint32_t looks = per_slab(cls) < PROBE_LOOKS ? per_slab(cls) : PROBE_LOOKS;
	for (uint32_t k = 0; k < looks; k++) {
		uint64_t off;
		if (hand_next(s, g, cls, &prob_of(s, cls)->probe, false, &off) != HAND_BLOCK)
			return 0;
		/* A look without a lock, to pass most entries by without taking
		 * their stripe's: kept ones and young ones (a hint: tbl_evict_at
		 * decides under the lock). */
		uint64_t m = block_meta(s, off);
		if ((m & ENT_KEPT) || ENT_AGE(now, ENT_ITIME(m)) < young)
			continue;
		uint32_t age = 0;
		int r = evict_block(ev, off, &how, &age);
		if (r != 0) {
			if (r > 0) {
				/* Its victims are about a probation old: times
				 * PROBATION_DIV, about a turn, the age a handover
				 * compares (with other classes' main hands'). */
				class_evicted(sc,
					      age > UINT32_MAX / PROBATION_DIV ? UINT32_MAX
									 : age * PROBATION_DIV,
					      now);
				struct seg_probation *pr = prob_of(s, cls);
				atomic_store_explicit(&pr->age, age, memory_order_relaxed);
				atomic_store_explicit(&pr->evict_t, now ? now : 1u, memory_order_relaxed);
				atomic_fetch_add_explicit(&sc->evictions, 1, memory_order_relaxed);
			}
			return r;
		}
	}
	return 0;
}

/* The main hand of class cls evicts one entry: 1, 0 (none it may evict
 * within its bound, or within cap looks), or -errno. */
static int evict_own(struct evictor *ev, uint32_t cls, uint64_t cap)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *sc = seg_class(s, g, cls);
	uint64_t blocks = class_blocks(sc, cls);
	uint64_t looks = blocks * HAND_TURNS + 64u;
	if (looks > HAND_LOOKS_MAX)
		looks = HAND_LOOKS_MAX;
	if (looks > cap)
		looks = cap;
	bool any_page = false;
	const struct evict_how how = {.keep_counts = ev->keep_counts};
	for (uint64_t k = 0; k < looks; k++) {
		uint64_t off;
		int hn = hand_next(s, g, cls, &sc->hand, any_page, &off);
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
		int r = evict_block(ev, off, &how, &age);
		if (r != 0) {
			if (r > 0) {
				class_evicted(sc, age, ev->now);
				atomic_fetch_add_explicit(&sc->evictions, 1, memory_order_relaxed);
			}
			return r;
		}
	}
	return 0;
}

static int evict_in_class(struct evictor *ev, uint32_t cls, uint64_t cap);

/* How a page is emptied for a class (drain_page): entries used since a
 * hand came by move to blocks elsewhere, the others are evicted. */
static const struct evict_how DRAIN = {.force = true, .move = true};
/* Looks the main hand may take to make a block for one move: a class whose
 * hand finds no victim within them is one of entries all in use, which
 * gives its page up (or loses used entries) rather than go round its
 * blocks.  Those looks lower no count (evictor.keep_counts): the class is
 * asked by another's demand, not its own, and a class of sessions read all
 * the time, asked for a page again and again, had its counts lowered by
 * the tries' moves until a later try found its entries unused and evicted
 * them. */
#define MOVE_LOOKS 64u

/* How drain_page treats an entry used since its class's hand came by.  (A
 * move takes a block on a page its class has, never one from the pool: in
 * a window emptied for a run, an entry moved out of one page took back the
 * page emptied a moment before, and the window never emptied.) */
enum drain_mode {
	DRAIN_MOVE, /* moved, or evicted if no block can be had for it */
	DRAIN_KEEP, /* moved, or the page is given up if no block can be had */
};

/* Empty page pi (class cls), marked draining meanwhile: its unused entries
 * evicted, its used ones moved (a block for one made, if none is free, by
 * the class's own hands, which never look at a page being emptied; so the
 * class loses its next victims instead: memcached's slab mover rescues
 * items the same way).  DRAIN_KEEP: a used entry for which no block can be
 * had keeps the page (it is given up: 0); DRAIN_MOVE: it is evicted.  1 if
 * the page was emptied (it went to the pool), 0 if not (an entry that may
 * not be evicted, or one in flight), or -errno.  *oldest gets the age of
 * the oldest victim (0 if none). */
static int drain_page(struct evictor *ev, uint32_t pi, uint32_t cls, enum drain_mode mode,
		      uint32_t *oldest)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	const struct lock_ctx *lk = &ev->o->lk;
	int rc = shmmap__page_drain(s, g, lk, pi, cls);
	if (rc < 0)
		return rc == -EAGAIN ? rc : 0;
	const struct seg_page *p = seg_page(s, g, pi);
	uint32_t per = per_slab(cls), size = shmmap__class_size(cls);
	uint64_t poff = seg_page_off(g, pi);
	*oldest = 0;
	for (uint32_t j = 0; j < per; j++) {
		/* Emptied: the page went to the pool (and maybe to a class). */
		if (!slab_of(p, cls) || __atomic_load_n(&p->drain, __ATOMIC_RELAXED) != lk->owner)
			return 1;
		if (j >= __atomic_load_n(&p->carved, __ATOMIC_RELAXED))
			break;
		uint32_t age = 0;
		uint64_t off = poff + (uint64_t)j * size;
		rc = evict_block(ev, off, &DRAIN, &age);
		if (rc == -ENOSPC && __atomic_load_n(&seg_class(s, g, cls)->pages, __ATOMIC_RELAXED) >
					     shmmap__class_pages(cls)) {
			/* No block for a used entry: the class's next victim
			 * makes one (never on this page: so only if the class
			 * has another), then the move again. */
			ev->keep_counts = true;
			rc = evict_in_class(ev, cls, MOVE_LOOKS);
			ev->keep_counts = false;
			if (rc > 0)
				rc = evict_block(ev, off, &DRAIN, &age);
			else if (rc == 0)
				rc = -ENOSPC;
		}
		if (rc == -ENOSPC) {
			if (mode == DRAIN_KEEP) {
				(void)shmmap__page_undrain(s, g, lk, pi, cls);
				return 0;
			}
			rc = evict_block(ev, off, &FORCE, &age);
		}
		if (rc < 0) {
			(void)shmmap__page_undrain(s, g, lk, pi, cls);
			return rc;
		}
		if (rc == 2) {
			atomic_fetch_add_explicit(&seg_hdr(s)->moves, 1, memory_order_relaxed);
			rc = 0; /* moved: no victim */
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
/* Pages page_may_empty passes over besides those that cannot be emptied: */
#define SPARE_STUCK 1u   /* a used entry that cannot move (see there) */
#define SPARE_SAMPLED 2u /* a used entry found by a sample (hot_blocks) */
static bool page_may_empty(struct evictor *ev, uint32_t i, uint32_t np, unsigned spare,
			   uint32_t *head);

/* How many of (up to HOT_SAMPLE of) the first n blocks of the page at poff
 * have a use count: a read without locks, a hint. */
#define HOT_SAMPLE 16u
static uint32_t hot_blocks(const struct seg *s, uint64_t poff, uint32_t n, uint32_t size)
{
	uint32_t step = n > HOT_SAMPLE ? n / HOT_SAMPLE : 1, hot = 0;
	for (uint32_t j = 0; j < n; j += step)
		hot += ENT_FREQ(block_meta(s, poff + (uint64_t)j * size)) != 0;
	return hot;
}

/*
 * Was the block at off written within the last quarter of victim (the
 * age of its class's last victim)?  Such an entry is much younger than the
 * ones its class gives up: a page that holds one is not the page to hand
 * over.  Time, not the class's count of blocks (seg_page.due), because a
 * donor is a class written less, or not at all: its entries grow old by
 * the clock.  A read without a lock, of a block that may be anything by
 * now: a hint that writes nothing.
 */
static bool young(const struct seg *s, uint64_t off, uint32_t now, uint32_t victim)
{
	return (uint64_t)ENT_AGE(now, ENT_ITIME(block_meta(s, off))) * 4 < victim;
}

/* Is the block at off younger than probation (on probation)?  A hint, as
 * young(). */
static bool fresh(const struct seg *s, uint64_t off, uint32_t now, uint32_t probation)
{
	return ENT_AGE(now, ENT_ITIME(block_meta(s, off))) < probation;
}

/* Empty one page of class d for another class: 1, 0 or -errno.  force:
 * the asking class has nothing of its own to evict, so a page of young
 * entries goes too (better than refusing a write while entries of an
 * evict map hold the memory).  asker: the age of the asking class's
 * own next victim: the entries of a donor that has evicted nothing for
 * IDLE_DONOR (a class written no more) are not young if older than
 * that, whatever the donor's own victims' age.  (A class written fast
 * after a shift evicted its own entries of a few ms rather than take pages
 * of a donor nobody wrote any more, for as long as a quarter of the
 * donor's victim age: 20 ms, longer than the whole shift, in which it kept
 * one page and lost 943 of its last 1000 keys.)  A drain sets the donor's
 * evict_t too, so an idle donor gives at most one such page every
 * IDLE_DONOR: a trickle.  Told by the donor's allocations instead
 * (its newest checkpoint), it gave them in a burst, and bench-cache's
 * shift to 10 B values evicted 2.25 to 2.28 bytes per byte inserted in 3
 * runs of 6 (1.14 to 1.81 without, target 2); applied to every donor, it
 * lowered the mixed trace's hit ratio in one run (0.570 / 0.835 at 1% /
 * 20%, against 0.582 / 0.844). */
static int handover(struct evictor *ev, uint32_t d, bool force, uint64_t asker)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *dc = seg_class(s, g, d);
	/* The page after the hand's: the hand comes to it next, so its entries
	 * have gone longest without a look (behind the hand, on its own page,
	 * are the blocks it just freed, holding the newest entries). */
	uint64_t h = atomic_load_explicit(&dc->hand, memory_order_relaxed);
	uint32_t pi = h ? HAND_PAGE(h) + 1 : 0;
	uint32_t per = per_slab(d), size = shmmap__class_size(d), now = ev->now;
	uint32_t victim = atomic_load_explicit(&dc->age, memory_order_relaxed);
	if (asker < UINT32_MAX / 4 && victim > asker * 4 &&
	    since(now, atomic_load_explicit(&dc->evict_t, memory_order_relaxed)) >= IDLE_DONOR)
		victim = (uint32_t)asker * 4; /* young(): a quarter of it */
	uint32_t dprob = probation_age(dc, prob_of(s, d), class_blocks(dc, d), now);
	for (uint32_t t = 0; t < DRAIN_TRIES; t++) {
		/* Of the next few pages that may be emptied and hold no young
		 * entry if any was used, the one with the fewest entries used
		 * since the hand came by: the least valuable page. */
		uint32_t best = UINT32_MAX, best_hot = UINT32_MAX, head;
		uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
		for (uint32_t c = 0; c < DRAIN_CANDIDATES && pi != UINT32_MAX; c++, pi++) {
			pi = page_of(s, g, d, pi);
			if (pi == UINT32_MAX)
				continue;
			/* Not a page whose used entries cannot move (the only
			 * page of its class) but as a last resort: a small
			 * map's counters, read all the time, went with every
			 * forced handover. */
			/* A forced handover evicts the used entries that find
			 * no block: it takes no page where a sample finds one
			 * but as a last resort either (a map's sessions, on two
			 * pages of their class, went with a class taking its
			 * first page). */
			unsigned spare = ev->hot_ok ? 0 : SPARE_STUCK | (force ? SPARE_SAMPLED : 0);
			if (!page_may_empty(ev, pi, np, spare, &head))
				continue;
			/* Not a page that holds young entries (see young()),
			 * unless nobody read them and they are past the donor's
			 * probation (a class nobody writes any more), or forced. */
			/* Of its carved blocks: those past them hold no entry,
			 * only what the page held before (zeros, or another
			 * class's bytes), whose write times are noise. */
			uint32_t cv = __atomic_load_n(&seg_page(s, g, pi)->carved, __ATOMIC_RELAXED);
			cv = cv < per ? cv : per;
			uint64_t poff = seg_page_off(g, pi), last = poff + (uint64_t)(cv - 1) * size;
			uint64_t mid = poff + (uint64_t)(cv / 2) * size;
			uint32_t hot = cv ? hot_blocks(s, poff, cv, size) : 0;
			if (!force && cv &&
			    (young(s, poff, now, victim) || young(s, mid, now, victim) ||
			     young(s, last, now, victim)) &&
			    (hot || fresh(s, poff, now, dprob) || fresh(s, mid, now, dprob) ||
			     fresh(s, last, now, dprob)))
				continue;
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
		int r = drain_page(ev, pi, d, force ? DRAIN_MOVE : DRAIN_KEEP, &oldest);
		if (r > 0) {
			if (oldest)
				class_evicted(dc, oldest, now);
			atomic_fetch_add_explicit(&seg_hdr(s)->handovers, 1, memory_order_relaxed);
			return 1;
		}
		if (r < 0)
			return r;
		pi++;
	}
	return 0;
}

/* What keeping an entry of class cls costs, in the units by which the
 * ages of classes are weighed against each other: its block size rounded
 * down to a power of two (48..63 B: 32, 64..127 B: 64, ..., 32 KiB..64
 * KiB: 32768, 64 KiB: 65536).  A class's age (class_age, probe_age) is
 * below 2^33 units, so its products with these weights stay below 2^51;
 * a run's weight (run_weight, at most 2^31) multiplies only an entry's
 * ENT_AGE (below 2^29): below 2^60.  A class age must never meet a run
 * weight unbounded. */
static uint64_t class_weight(uint32_t cls)
{
	uint32_t size = shmmap__class_size(cls);
	return size ? UINT64_C(1) << (31 - (uint32_t)__builtin_clz(size)) : 1;
}

/* Classes asked for a page in turn, the oldest (weighed) first: the
 * oldest may hold only young pages (a class its writers just left: the
 * growing stream of check_cache lost a page or more of its newest keys in
 * 4 of 35 runs asking only it). */
#define DONORS 2u

/* The DONORS classes other than c whose victims are oldest, weighed by
 * their size (class_weight), best first, in d[] (-1: none) with their
 * ages (unweighed) in age[]. */
static void oldest_classes(const struct seg *s, const struct seg_geom *g, uint32_t c,
			   uint32_t now, int d[DONORS], uint64_t age[DONORS])
{
	uint64_t w[DONORS] = {0};
	for (uint32_t j = 0; j < DONORS; j++) {
		d[j] = -1;
		age[j] = 0;
	}
	for (uint32_t k = 0; k < g->nclasses; k++) {
		const struct seg_class *sc = seg_class(s, g, k);
		if (k == c || __atomic_load_n(&sc->pages, __ATOMIC_RELAXED) == 0)
			continue;
		uint64_t a = class_age(sc, now), aw = a * class_weight(k);
		for (uint32_t j = 0; j < DONORS; j++) {
			if (d[j] >= 0 && aw <= w[j])
				continue;
			for (uint32_t i = DONORS - 1; i > j; i--) {
				d[i] = d[i - 1];
				age[i] = age[i - 1];
				w[i] = w[i - 1];
			}
			d[j] = (int)k;
			age[j] = a;
			w[j] = aw;
			break;
		}
	}
}

/* The age of the probation hand's next victim in class cls, or 0 if the
 * class has no probation hand now or its last eviction was not the
 * probation hand's: its last victim's age plus the time since. */
static uint64_t probe_age(const struct seg *s, const struct seg_geom *g, uint32_t cls,
			  uint32_t now)
{
	const struct seg_class *sc = seg_class(s, g, cls);
	const struct seg_probation *pr = prob_of(s, cls);
	uint32_t t = atomic_load_explicit(&pr->evict_t, memory_order_relaxed);
	uint64_t blocks = class_blocks(sc, cls);
	if (!t || !probation_on(blocks))
		return 0;
	return (uint64_t)atomic_load_explicit(&pr->age, memory_order_relaxed) + since(now, t) +
	       1u;
}

/* Are class d's victims HANDOVER_RATIO times as old as class c's?  Where
 * both have probation hands that evict, their probation victims are
 * compared (like with like: entries nobody read, a probation old); else
 * the class ages (main hand victims, probation ones scaled to a turn). */
static bool older(const struct seg *s, const struct seg_geom *g, uint32_t d, uint64_t dage,
		  uint32_t c, uint64_t cage, uint32_t now)
{
	uint64_t dp = probe_age(s, g, d, now), cp = probe_age(s, g, c, now);
	uint64_t dw = class_weight(d), cw = class_weight(c);
	if (dp && cp)
		return dp > HANDOVER_RATIO * cp + AGE_SLACK;
	/* A donor whose victims are unread entries (its probation hand
	 * evicts) is weighed by age alone too: else a class of large entries
	 * without a probation hand yet (a new one, after a shift to large
	 * values) needed an idle class of 48-byte entries nobody reads 32
	 * times as old, and evicted its own instead (check_evict
	 * shift_small_to_large: 41% of the segment live, once in a CI run). */
	if (dp)
		return dage > HANDOVER_RATIO * cage + AGE_SLACK;
	return dage * dw > (HANDOVER_RATIO * cage + AGE_SLACK) * cw;
}

/* The hands of class cls evict one of its entries, the probation hand's
 * first (at most PROBE_LOOKS looks), then the main hand's (at most cap):
 * 1, 0 (none they may), -errno. */
static int evict_in_class(struct evictor *ev, uint32_t cls, uint64_t cap)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *sc = seg_class(s, g, cls);
	uint64_t blocks = class_blocks(sc, cls);
	int r;
	if (probation_on(blocks) &&
	    (r = evict_probe(ev, cls, probation_age(sc, prob_of(s, cls), blocks, ev->now))) != 0)
		return r;
	return evict_own(ev, cls, cap);
}

/* ---- runs as donors ----
 * An entry larger than a page has a run of pages to itself, in no size
 * class, so no class's hand ever comes to it: a class short of pages
 * reached runs only while it had no page at all (then through a window),
 * and afterwards evicted its own newest entries on a page or two while
 * never-read 70 KB values held the rest of the segment.  So runs have a
 * hand of their own (seg_header.run_hand), a clock over the heap's pages
 * that stops at run heads: an entry older than the asking class's next
 * victim (and, weighed by size like a class, HANDOVER_RATIO times as old)
 * is evicted if nobody read it since the hand came by, and has its count
 * lowered (kept) if somebody did; its pages go to the pool, where the
 * class's allocation takes one (the others serve the next).  A hand that
 * finds no such run within RUN_LOOKS pages leaves runs alone for
 * REFUSED_WAIT (seg_header.run_refused_t). */
#define RUN_LOOKS 64u

/* The weight of a run of n >= 1 pages (class_weight's, for its bytes, at
 * most 2^31: a run length read from the segment may be a scribble). */
static uint64_t run_weight(uint32_t n)
{
	uint64_t size = (uint64_t)(n ? n : 1) * SEG_PAGE;
	if (size > (UINT64_C(1) << 31))
		size = UINT64_C(1) << 31;
	return UINT64_C(1) << (63 - (uint32_t)__builtin_clzll(size));
}

/* Evict one run older than class cls's next victims (cage): 1, 0, -errno. */
static int run_donor(struct evictor *ev, uint32_t cls, uint64_t cage)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_header *h = seg_hdr(s);
	uint32_t now = ev->now;
	uint32_t refused = atomic_load_explicit(&h->run_refused_t, memory_order_relaxed);
	if (refused && now - (refused - 1) <= REFUSED_WAIT)
		return 0;
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	if (np == 0 || cage >= UINT32_MAX - 1)
		return 0;
	uint64_t cw = class_weight(cls), cprobe = probe_age(s, g, cls, now);
	uint32_t i = atomic_load_explicit(&h->run_hand, memory_order_relaxed) % np;
	for (uint32_t k = 0; k < RUN_LOOKS; k++) {
		const struct seg_page *p = seg_page(s, g, i);
		uint32_t next = i + 1;
		uint32_t run = __atomic_load_n(&p->run, __ATOMIC_RELAXED);
		/* (A run length read from the segment: one out of bounds, a
		 * scribble, names no run to weigh.) */
		if (__atomic_load_n(&p->kind, __ATOMIC_RELAXED) == PAGE_RUN && run >= 1 &&
		    run <= np - i) {
			next = i + run;
			uint64_t off = seg_page_off(g, i), m = block_meta(s, off);
			uint64_t age = ENT_AGE(now, ENT_ITIME(m));
			/* A run nobody read is weighed against the class's
			 * probation victims, if it has any (like with like, as
			 * older() does). */
			uint64_t bar = cprobe && !(m & ENT_KEPT) && !ENT_FREQ(m) ? cprobe : cage;
			if (age > bar &&
			    age * run_weight(run) > (HANDOVER_RATIO * bar + AGE_SLACK) * cw) {
				/* Under the lock too (tbl_evict_at's young): never
				 * an entry younger than that (age > bar: it fits). */
				const struct evict_how how = {.young = (uint32_t)bar + 1};
				uint32_t vage = 0;
				int r = evict_block(ev, off, &how, &vage);
				if (r < 0)
					return r;
				if (r > 0) {
					atomic_store_explicit(&h->run_hand, next < np ? next : 0,
							      memory_order_relaxed);
					atomic_fetch_add_explicit(&h->handovers, 1,
								  memory_order_relaxed);
					return 1;
				}
			}
		}
		i = next < np ? next : 0;
	}
	atomic_store_explicit(&h->run_hand, i, memory_order_relaxed);
	atomic_store_explicit(&h->run_refused_t, now + 1, memory_order_relaxed);
	return 0;
}

/* Free a block of class cls (by its hand, or by a handover): 1, 0, -errno.
 * A class whose slabs are several pages needs them contiguous: where a
 * class of single pages takes a page of a donor, it empties a window of
 * its slab's pages (room_for_run: the cheapest near the rover), once an
 * older donor says it should take memory rather than evict its own. */
static int room_in_class(struct evictor *ev, uint32_t cls)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_class *sc = seg_class(s, g, cls);
	uint32_t now = ev->now, npg = shmmap__class_pages(cls);
	uint64_t dages[DONORS];
	int ds[DONORS];
	oldest_classes(s, g, cls, now, ds, dages);
	int d = ds[0];
	bool none = __atomic_load_n(&sc->pages, __ATOMIC_RELAXED) == 0;
	int r;
	uint64_t cage = class_age(sc, now);
	/* The oldest class may have only young pages (one just left by the
	 * writers, say): then the next oldest is asked. */
	for (uint32_t j = 0; j < DONORS && ds[j] >= 0; j++) {
		uint32_t dj = (uint32_t)ds[j];
		/* A donor that had no page to give a moment ago is not asked
		 * again at once: a handover that finds none looks at a few of
		 * its pages, each found by a search of the page array. */
		uint32_t refused = atomic_load_explicit(&prob_of(s, dj)->refused_t,
							memory_order_relaxed);
		if (!none && ((refused && now - (refused - 1) <= REFUSED_WAIT) ||
			      !older(s, g, dj, dages[j], cls, cage, now)))
			continue;
		if (npg > 1) {
			/* Not a window of its own slabs: those hold its
			 * newest entries as often as its oldest (its own
			 * hand evicts in age order instead: a shift to 33
			 * KB values kept 20 of its newest 200 while the
			 * cheapest windows were its own). */
			ev->avoid = cls + 1;
			r = room_for_run(ev, npg);
			ev->avoid = 0;
			if (r > 0) {
				atomic_fetch_add_explicit(&sc->pages_in, npg, memory_order_relaxed);
				atomic_fetch_add_explicit(&seg_hdr(s)->handovers, 1,
							  memory_order_relaxed);
			}
			if (r != 0)
				return r;
			break;
		}
		r = handover(ev, dj, false, cage);
		if (r == 0)
			atomic_store_explicit(&prob_of(s, dj)->refused_t, now + 1,
					      memory_order_relaxed);
		if (r != 0) {
			if (r > 0)
				atomic_fetch_add_explicit(&sc->pages_in, 1, memory_order_relaxed);
			return r;
		}
	}
	if (!none && npg == 1 && (r = run_donor(ev, cls, cage)) != 0) {
		if (r > 0)
			atomic_fetch_add_explicit(&sc->pages_in, 1, memory_order_relaxed);
		return r;
	}
	if (!none && (r = evict_in_class(ev, cls, HAND_LOOKS_MAX)) != 0)
		return r;
	if (npg > 1)
		return room_for_run(ev, npg); /* any window, used entries or not */
	/* Nothing of our own to give: another class's page, young or not, the
	 * oldest class's first (else the small classes, first in the loop,
	 * would always give), else any page at all (runs of large entries
	 * hold the memory). */
	r = 0;
	for (int pass = 0; pass < 2 && r == 0; pass++) {
		/* First pages whose used entries can move, then any. */
		ev->hot_ok = pass == 1;
		if (d >= 0 && (r = handover(ev, (uint32_t)d, true, UINT64_MAX)) != 0)
			break;
		for (uint32_t k = 0; k < g->nclasses; k++) {
			if (k == cls || (int)k == d ||
			    __atomic_load_n(&seg_class(s, g, k)->pages, __ATOMIC_RELAXED) == 0)
				continue;
			if ((r = handover(ev, k, true, UINT64_MAX)) != 0)
				break;
		}
		/* Before any page whose used entries would go: a window. */
		if (r == 0 && pass == 0)
			r = room_for_run(ev, 1);
	}
	ev->hot_ok = false;
	return r;
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

/* Is a live map's policy reject (may a block hold a pinned entry)?  Looked
 * at once per eviction: most segments have none, and a page's blocks need
 * no look then.  A map made reject meanwhile is caught by tbl_evict_at,
 * which never evicts its entries (the page is then merely not emptied). */
static bool any_reject(struct evictor *ev)
{
	if (ev->rejects < 0) {
		const struct seg *s = ev->o->s;
		const struct seg_geom *g = ev->o->g;
		ev->rejects = 0;
		for (uint32_t m = 0; m < g->max_maps && !ev->rejects; m++) {
			const struct seg_mapdir *d = seg_dir(s, g, m);
			ev->rejects = atomic_load_explicit((_Atomic uint32_t *)&d->state,
							   memory_order_acquire) == MAP_LIVE &&
				      __atomic_load_n(&d->policy, __ATOMIC_RELAXED) !=
					      MAP_POLICY_EVICT;
		}
	}
	return ev->rejects != 0;
}

/* Has any of the first n blocks of the page at poff a use count?  A read
 * without locks, of every block: a hint. */
static bool any_used(const struct seg *s, uint64_t poff, uint32_t n, uint32_t size)
{
	for (uint32_t j = 0; j < n; j++)
		if (ENT_FREQ(block_meta(s, poff + (uint64_t)j * size)) != 0)
			return true;
	return false;
}

/* May page i be emptied, as far as a look without locks tells?  The head
 * of the run it belongs to in *head (i itself unless a CONT page).  A run
 * must be an entry of an evict map (a map's table or bucket array is not
 * one: evict_block would find it linked nowhere); a slab page must hold no
 * pinned entry.  With SPARE_STUCK, neither may hold an entry in use that
 * cannot move: a used run's entry, or a used entry on the only page of its
 * class (a move needs a block on another page of the class: a small map's
 * counters and sessions were evicted over and over by puts of 70 KB). */
/* The run of pages that page i (of np) lies in: its length, its head in
 * *head; 0 if page i is not in a run that holds together (a hint, read
 * without locks). */
static uint32_t run_of(const struct seg *s, const struct seg_geom *g, uint32_t i, uint32_t np,
		       uint32_t *head)
{
	uint32_t j = i;
	while (j > 0 && __atomic_load_n(&seg_page(s, g, j)->kind, __ATOMIC_RELAXED) == PAGE_CONT)
		j--;
	const struct seg_page *hp = seg_page(s, g, j);
	uint32_t run = __atomic_load_n(&hp->run, __ATOMIC_RELAXED);
	if (__atomic_load_n(&hp->kind, __ATOMIC_RELAXED) != PAGE_RUN || run < 1 ||
	    run > np - j || j + run <= i)
		return 0;
	*head = j;
	return run;
}

static bool page_may_empty(struct evictor *ev, uint32_t i, uint32_t np, unsigned spare,
			   uint32_t *head)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	const struct seg_page *p = seg_page(s, g, i);
	uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	*head = i;
	if (kind == PAGE_FREE)
		return true;
	if (kind == PAGE_SPAN) {
		/* A page of a slab of several: the slab is what is emptied. */
		if (!shmmap__slab_head(s, g, i, &i))
			return false;
		*head = i;
		p = seg_page(s, g, i);
		kind = PAGE_SLAB;
	}
	if (kind == PAGE_SLAB) {
		uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
		if (cls >= g->nclasses || cls + 1 == ev->avoid)
			return false;
		/* Being emptied by another evictor (its window, or a handover):
		 * not a page to count on, nor to fight over (two writers of
		 * large values chose the same cheapest window and each spent
		 * its tries on the other's pages: -ENOSPC). */
		uint32_t dr = __atomic_load_n(&p->drain, __ATOMIC_RELAXED);
		if (dr && dr != ev->o->lk.owner)
			return false;
		uint32_t size = shmmap__class_size(cls), per = per_slab(cls);
		uint32_t carved = __atomic_load_n(&p->carved, __ATOMIC_RELAXED);
		uint32_t cv = carved < per ? carved : per;
		if ((spare & SPARE_STUCK) &&
		    __atomic_load_n(&seg_class(s, g, cls)->pages, __ATOMIC_RELAXED) <=
			    shmmap__class_pages(cls) &&
		    any_used(s, seg_page_off(g, i), cv, size))
			return false;
		if ((spare & SPARE_SAMPLED) && cv && hot_blocks(s, seg_page_off(g, i), cv, size))
			return false;
		if (!any_reject(ev))
			return true; /* no entry is pinned */
		for (uint32_t j = 0; j < per && j < carved; j++)
			if (pinned(s, g, seg_page_off(g, i) + (uint64_t)j * size))
				return false;
		return true;
	}
	uint32_t j;
	if (!run_of(s, g, i, np, &j))
		return false;
	*head = j;
	if ((spare & SPARE_STUCK) && ENT_FREQ(block_meta(s, seg_page_off(g, j))) != 0)
		return false;
	return victim_map(ev, seg_page_off(g, j)) != NULL;
}

/* What emptying page i would cost, for the choice of a window: the bytes
 * of the entries on it (a page of a run: all of it; of a slab of several
 * pages: its share of the slab's), or UINT32_MAX if it cannot be emptied
 * (page_may_empty).  A read without locks: a hint. */
static uint32_t page_cost(struct evictor *ev, uint32_t i, uint32_t np, unsigned spare)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	uint32_t head;
	if (!page_may_empty(ev, i, np, spare, &head))
		return UINT32_MAX;
	const struct seg_page *p = seg_page(s, g, head);
	uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	if (kind == PAGE_FREE)
		return 0;
	if (kind != PAGE_SLAB)
		return SEG_PAGE;
	uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
	if (cls >= g->nclasses)
		return UINT32_MAX;
	uint32_t used = __atomic_load_n(&p->used, __ATOMIC_RELAXED), per = per_slab(cls);
	uint64_t bytes = (uint64_t)(used < per ? used : per) * shmmap__class_size(cls);
	return (uint32_t)(bytes / shmmap__class_pages(cls));
}

/*
 * The start of the cheapest window of need pages (page_cost: the fewest
 * bytes in use) among those starting in the WINDOW_CHOOSE pages from
 * `from`, or `from` if none of them can be emptied.  First fit took the
 * next window the rover came to: with a quarter of the segment free in
 * pages scattered among small values, a 1 MB value emptied 16 pages of
 * entries where a window of free pages and one or two used ones was near.
 * A sliding sum, each page's cost read again as it leaves (a hint: the
 * sums are clamped).
 */
#define WINDOW_CHOOSE 256u
static uint32_t cheapest_window(struct evictor *ev, uint32_t from, uint32_t need, uint32_t np,
				unsigned spare)
{
	if (need > np || from > np - need)
		return from;
	uint32_t last = np - need; /* the last start there is */
	if (last - from > WINDOW_CHOOSE)
		last = from + WINDOW_CHOOSE;
	int64_t sum = 0, bad = 0, best_cost = INT64_MAX;
	uint32_t best = from;
	for (uint32_t i = from; i < from + need; i++) {
		uint32_t c = page_cost(ev, i, np, spare);
		if (c == UINT32_MAX)
			bad++;
		else
			sum += c;
	}
	for (uint32_t st = from;; st++) {
		if (bad <= 0 && sum < best_cost) {
			best_cost = sum > 0 ? sum : 0;
			best = st;
			if (best_cost == 0)
				break;
		}
		if (st >= last)
			break;
		uint32_t out = page_cost(ev, st, np, spare), in = page_cost(ev, st + need, np, spare);
		if (out == UINT32_MAX)
			bad--;
		else
			sum -= out;
		if (in == UINT32_MAX)
			bad++;
		else
			sum += in;
	}
	return best;
}

/* The page after the run that page i (PAGE_RUN or PAGE_CONT) belongs to,
 * or i + 1 if that cannot be told (a hint, read without locks). */
static uint32_t run_end(const struct seg *s, const struct seg_geom *g, uint32_t i, uint32_t np)
{
	uint32_t j, run = run_of(s, g, i, np, &j);
	return run ? j + run : i + 1;
}

/*
 * Empty a window of `need` contiguous pages (for an entry larger than a
 * page, or any one page when a class can take none from another): 1 if one
 * was emptied, 0, -errno.  A window is first looked at without locks, and
 * one holding a page that cannot be emptied (a table, an entry of a reject
 * map) is passed over, the next starting after that page, so nothing is
 * evicted for a window that cannot be had.  A first pass, over
 * WINDOW_HOT_LOOKS pages, takes only a window that costs no entry in use
 * that cannot move (SPARE_STUCK) and where a sample of each page finds none
 * in use (SPARE_SAMPLED: a map of sessions read all the time, on pages its
 * class has no room to move them from, lost them all to puts of 70 KB);
 * a second pass, over the heap, takes any.
 */
static int room_for_run(struct evictor *ev, uint32_t need)
{
	const struct seg *s = ev->o->s;
	const struct seg_geom *g = ev->o->g;
	struct seg_header *h = seg_hdr(s);
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	if (need == 0 || need > np)
		return 0;
	uint32_t start0 = atomic_fetch_add_explicit(&h->evict_rover, need, memory_order_relaxed) % np;
	uint32_t start = start0;
	/* First windows that cost no entry in use that cannot move, then any.
	 * A pass looks at each page of the heap once at most and empties at
	 * most WINDOW_TRIES * 4 windows: a page passed over is not a try (in
	 * a segment mostly of a reject map's entries, 32 tries saw 32 pages,
	 * and puts failed with -ENOSPC while large entries of an evict map
	 * lay elsewhere). */
	for (int pass = 0; pass < 2; pass++) {
		unsigned spare = pass == 0 ? SPARE_STUCK | SPARE_SAMPLED : 0;
		/* Not for a window the coordinator holds (a table's array): the
		 * cheapest held the free pages a class was about to take, for up
		 * to POOL_HOLD_MS, and check_evict's shift from 70 KB to 100 B
		 * values lost 721 to 999 of the newest 1000 keys in 2 runs of 7;
		 * at the rover, its window evicts old runs for them. */
		start = need > 1 && !ev->hold ? cheapest_window(ev, start0, need, np, spare) : start0;
		uint64_t looked = 0, budget = pass == 0 ? WINDOW_HOT_LOOKS + need : np;
		for (uint32_t t = 0; t < WINDOW_TRIES * 4 && looked < np && looked < budget;) {
			if (start + need > np) {
				looked += np - start;
				start = 0;
				continue;
			}
			uint32_t bad = UINT32_MAX, head;
			for (uint32_t i = start; i < start + need && bad == UINT32_MAX; i++)
				if (!page_may_empty(ev, i, np, spare, &head))
					bad = i;
			if (bad != UINT32_MAX) {
				looked += bad + 1 - start;
				start = bad + 1;
				continue;
			}
			t++;
			if (ev->hold) {
				/* Clients' allocations pass the window over from
				 * here: its pages, freed one at a time, were taken
				 * by a busy class before it was whole. */
				atomic_store_explicit(&h->pool_hold_n, need, memory_order_relaxed);
				atomic_store_explicit(&h->pool_hold_t, (uint32_t)shmmap__mono_ms(),
						      memory_order_relaxed);
				atomic_store_explicit(&h->pool_hold, start + 1, memory_order_release);
			}
			bool ok = true;
			for (uint32_t i = start; i < start + need && ok; i++) {
				const struct seg_page *p = seg_page(s, g, i);
				uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
				uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
				uint32_t age;
				int r = 1;
				if (kind == PAGE_SPAN && shmmap__slab_head(s, g, i, &head)) {
					/* Its slab (whose first pages may lie
					 * before the window: they go too). */
					kind = PAGE_SLAB;
					cls = __atomic_load_n(&seg_page(s, g, head)->cls,
							      __ATOMIC_RELAXED);
				} else {
					head = i;
				}
				if (kind == PAGE_SLAB && cls < g->nclasses)
					r = drain_page(ev, head, cls, DRAIN_MOVE, &age);
				else if ((kind == PAGE_RUN || kind == PAGE_CONT) &&
					 page_may_empty(ev, i, np, spare, &head))
					/* The run's entry (found linked, or nothing happens). */
					r = evict_block(ev, seg_page_off(g, head), &FORCE, &age);
				else if (kind != PAGE_FREE)
					r = 0;
				if (r < 0)
					return r;
				ok = r > 0;
				if (!ok) {
					/* Past the whole run or slab that failed, not
					 * its next page: each page of a run in flight
					 * (another writer's value, not linked yet)
					 * cost a try, and two such runs of 17 pages
					 * used them all up: -ENOSPC with most of the
					 * segment evictable. */
					uint32_t past = i + 1;
					if (kind == PAGE_SLAB && cls < g->nclasses) {
						past = head + shmmap__class_pages(cls);
						/* Another evictor empties it (it came
						 * to it since the look above): its
						 * pages go to the pool all the same,
						 * so not a try of ours that failed. */
						const struct seg_page *hp = seg_page(s, g, head);
						uint32_t dr = __atomic_load_n(&hp->drain,
									      __ATOMIC_RELAXED);
						if (__atomic_load_n(&hp->kind, __ATOMIC_RELAXED) ==
							    PAGE_SLAB &&
						    dr && dr != ev->o->lk.owner && t)
							t--;
					} else if (kind == PAGE_RUN || kind == PAGE_CONT) {
						past = run_end(s, g, i, np);
					}
					if (past <= i || past > np)
						past = i + 1;
					looked += past - start;
					start = past;
				}
			}
			if (ok)
				return 1;
		}
	}
	atomic_store_explicit(&h->evict_rover, start, memory_order_relaxed);
	return 0;
}

int shmmap__evict_pages(const struct op_ctx *o, struct seg_intent *in, uint32_t pages)
{
	struct evictor ev = {.o = o, .in = in, .now = shmmap__itime(), .rejects = -1,
			     .hold = o->lk.owner == LOCK_OWNER_COORD};
	int r = room_for_run(&ev, pages);
	if (r <= 0)
		shmmap__pool_unhold(o->s);
	return r < 0 ? r : r > 0 ? 0 : -ENOSPC;
}

/* Is a live map's policy evict?  If none is, nothing may be evicted, and a
 * put to a full segment fails at once: the search for a victim in every
 * class, donor and window found none after about 55 us a put (79% of it
 * page_of's scans), and two workers writing to a full segment of reject
 * maps made 1.3k operations a second between them.  A read without locks:
 * a map made evict meanwhile is seen by the next put. */
static bool any_evictable(const struct op_ctx *o)
{
	for (uint32_t m = 0; m < o->g->max_maps; m++) {
		const struct seg_mapdir *d = seg_dir(o->s, o->g, m);
		if (atomic_load_explicit((_Atomic uint32_t *)&d->state, memory_order_acquire) ==
			    MAP_LIVE &&
		    __atomic_load_n(&d->policy, __ATOMIC_RELAXED) == MAP_POLICY_EVICT)
			return true;
	}
	return false;
}

int shmmap__evict_for(const struct op_ctx *o, struct seg_intent *in, size_t n)
{
	if (!any_evictable(o)) {
		/* Nothing to evict: only growth makes room.  Each growth step
		 * the allocation asked for may have gone to other writers (six
		 * at once, in check_seggrow, lost all four tries of one
		 * allocation), so again while the segment may still grow. */
		const struct seg_header *h = seg_hdr(o->s);
		for (uint32_t round = 0; round < EVICT_ROUNDS; round++) {
			if (shmmap__seg_live(o->s, o->g) >= o->g->npages_max ||
			    atomic_load_explicit(&h->grow_state, memory_order_relaxed) !=
				    SEG_GROW_OK)
				break;
			int r = shmmap__alloc(o->s, o->g, &o->lk, n, &in->a);
			if (r != -ENOSPC)
				return r;
		}
		/* A full segment fails at once.  With free pages this allocation
		 * could not take (a window the coordinator holds for a table, a
		 * run's pages not contiguous), the search below runs, as before:
		 * its windows wait such a moment out (a reject map refilled
		 * after its large values were deleted stopped at 94% when it
		 * failed at once). */
		if (!__atomic_load_n(&h->pool_free, __ATOMIC_RELAXED) &&
		    !atomic_load_explicit(&h->pool_hold, memory_order_relaxed))
			return -ENOSPC;
	}
	struct evictor ev = {.o = o, .in = in, .now = shmmap__itime(), .rejects = -1};
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
