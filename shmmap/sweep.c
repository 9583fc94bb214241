/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * sweep.c - rebuilding the allocator from what is in use: the repair for a
 * process that died holding a class or pool lock (its lists and counters
 * may be half-updated), for a coordinator that died in the middle of
 * anything, and for `shmmapctl check --repair`.  Coordinator only.
 *
 * What is in use (the roots):
 *   - every entry reachable from a LIVE map's chains;
 *   - every map table run named by a directory entry (a dropped map keeps
 *     its table, see table.c), and every bucket array run it names (grow.c);
 *   - the entry a mover has in flight between two arrays (stripe.moving);
 *   - every block named by an intent record (a, b, spare) of a live slot:
 *     a write in flight, or a block kept for the next (struct seg_intent).
 *     A spare moves without an allocator lock, so the sweep stops those
 *     moves first (seg_header.sweeping; it waits for moves under way).
 * Everything else that the page descriptors call allocated is freed, and
 * the descriptors, free lists, partial lists, class totals and the pool
 * are written afresh from the roots.
 *
 * Why nothing in flight is lost although writers go on (stripes are not
 * locked): the sweep holds every class lock and the pool lock, so no block
 * is allocated or freed meanwhile.  A block a live writer allocated before
 * is named by its record's a until linked (a is cleared after the link
 * store); a block it unlinks is named by b before the unlink store, and b
 * stays set until its free, which waits for the sweep.  The records are
 * read, then every chain is walked, then the records are read again: a
 * block not seen linked by the walk was unlinked before the walk passed
 * (b set by then: seen by the second read) or linked after (a set since
 * before the sweep: seen by the first read, or still set at the second).
 *
 * Buckets move between arrays during a resize while the sweep walks
 * (grow.c): an entry could leave an old bucket not yet walked for a new one
 * already walked.  So a stripe's chains (both arrays) are walked between
 * two reads of its seq counter, and walked once more if it changed (a
 * bucket move holds it odd): an entry moves once per resize, and no resize
 * starts or ends during a sweep (both hold recover_mu), so an entry missed
 * by one walk because it moved was in its old bucket when the other walk
 * passed there, or is named by stripe.moving or by an intent record.
 *
 * Idempotent: it only writes what it computes from the roots, so a sweep
 * cut short by a crash is simply run again (the next coordinator takes
 * over the locks it held and sweeps at start).
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

struct sw {
	const struct seg *s;
	const struct seg_geom *g;
	unsigned char *root; /* a bit per SEG_ALIGN unit of the heap */
	uint64_t units;
	uint64_t roots;
};

static void mark(struct sw *w, uint64_t off)
{
	const struct seg_geom *g = w->g;
	if (off < g->heap_off || (off - g->heap_off) % SEG_ALIGN)
		return;
	uint64_t u = (off - g->heap_off) / SEG_ALIGN;
	if (u >= w->units)
		return;
	if (!(w->root[u / 8] & (1u << (u % 8)))) {
		w->root[u / 8] |= (unsigned char)(1u << (u % 8));
		w->roots++;
	}
}

static bool is_root(const struct sw *w, uint64_t off)
{
	uint64_t u = (off - w->g->heap_off) / SEG_ALIGN;
	return u < w->units && (w->root[u / 8] & (1u << (u % 8)));
}

/*
 * Announce the sweep (seg_header.sweeping), then wait until no live slot's
 * thread is in the middle of a spare move (seg_slot.spare_moving): the
 * mirror image of table.c's spare_move_begin (store, full fence, load), so
 * every move either finished before the records are read or does not
 * happen until the sweep ends.  A dead slot moves nothing.  0, or -EBUSY
 * (a live thread stayed in a move for the whole wait: stopped?), with the
 * announcement withdrawn.
 */
static int stop_spare_moves(const struct seg *s, const struct seg_geom *g,
			    const struct lock_ctx *c, const bool *alive)
{
	struct seg_header *h = seg_hdr(s);
	atomic_store(&h->sweeping, 1);
	atomic_thread_fence(memory_order_seq_cst);
	uint64_t deadline = shmmap__now_ms() + (c->wait_ms ? c->wait_ms : LOCK_DEAD_WAIT_MS);
	for (uint32_t i = 0; i < g->max_clients; i++) {
		if (!alive[i])
			continue;
		struct seg_slot *sl = seg_slot(s, g, i);
		for (uint32_t k = 0; k < SEG_INTENTS; k++) {
			while (atomic_load_explicit(&sl->spare_moving[k], memory_order_acquire)) {
				if (shmmap__now_ms() > deadline) {
					atomic_store(&h->sweeping, 0);
					return -EBUSY;
				}
				sched_yield();
			}
		}
	}
	return 0;
}

static void mark_records(struct sw *w, const bool *alive)
{
	for (uint32_t i = 0; i < w->g->max_clients; i++) {
		if (!alive[i])
			continue;
		struct seg_slot *sl = seg_slot(w->s, w->g, i);
		/* b, spare, a: the order in which moves cannot hide a block
		 * (struct seg_intent). */
		for (uint32_t k = 0; k < SEG_INTENTS; k++) {
			mark(w, atomic_load_explicit(&sl->intent[k].b, memory_order_acquire));
			mark(w, atomic_load_explicit(&sl->intent[k].spare, memory_order_acquire));
			mark(w, atomic_load_explicit(&sl->intent[k].a, memory_order_acquire));
		}
	}
}

static void mark_chain(struct sw *w, const struct map_view *v, _Atomic uint64_t *l)
{
	uint64_t off = atomic_load_explicit(l, memory_order_acquire);
	for (uint32_t steps = 0; off && off != BUCKET_MOVED && steps < v->chain_max; steps++) {
		const struct seg_entry *e = shmmap__entry_at(w->s, v, off);
		if (!e)
			break;
		mark(w, off);
		off = atomic_load_explicit(&((struct seg_entry *)e)->next, memory_order_acquire);
	}
}

/* Every chain of stripe st in both arrays, and its entry in flight. */
static void mark_stripe(struct sw *w, const struct map_view *v, const struct tbl *t, uint32_t st)
{
	struct seg_stripe *sp = &v->stripes[st];
	mark(w, atomic_load_explicit(&sp->moving, memory_order_acquire));
	for (uint32_t b = st; b < t->old_n; b += v->nstripes)
		mark_chain(w, v, &t->old[b]);
	for (uint32_t b = st; b < t->cur_n; b += v->nstripes)
		mark_chain(w, v, &t->cur[b]);
	mark(w, atomic_load_explicit(&sp->moving, memory_order_acquire));
}

static void mark_chains(struct sw *w)
{
	for (uint32_t m = 0; m < w->g->max_maps; m++) {
		struct map_view v;
		struct tbl t;
		if (shmmap__map_view_linked(w->s, w->g, m, &v) < 0 || !shmmap__tbl_load(w->s, &v, &t))
			continue;
		for (uint32_t st = 0; st < v.nstripes; st++) {
			struct seg_stripe *sp = &v.stripes[st];
			uint32_t q1 = atomic_load_explicit(&sp->seq, memory_order_acquire);
			mark_stripe(w, &v, &t, st);
			atomic_thread_fence(memory_order_acquire);
			if ((q1 & 1) || atomic_load_explicit(&sp->seq, memory_order_relaxed) != q1)
				mark_stripe(w, &v, &t, st);
		}
	}
}

static void mark_tables(struct sw *w)
{
	for (uint32_t m = 0; m < w->g->max_maps; m++) {
		const struct seg_mapdir *d = seg_dir(w->s, w->g, m);
		uint64_t first = __atomic_load_n(&d->table_pages, __ATOMIC_RELAXED);
		uint64_t soff = __atomic_load_n(&d->stripes_off, __ATOMIC_RELAXED);
		if (soff && first < w->g->npages && seg_page_off(w->g, (uint32_t)first) == soff)
			mark(w, soff);
		/* The arrays it grew into (named while they may be in use). */
		for (int i = 0; i < 2; i++) {
			uint32_t run = __atomic_load_n(&d->arr[i].run, __ATOMIC_RELAXED);
			uint64_t off = __atomic_load_n(&d->arr[i].off, __ATOMIC_RELAXED);
			if (run && run <= w->g->npages && seg_page_off(w->g, run - 1) == off)
				mark(w, off);
		}
	}
}

/* Rebuild one slab (head page pi, its class valid) from the roots;
 * returns blocks in use (0: give the slab back).  *matched counts the
 * roots it accounted for. */
static uint32_t rebuild_slab(struct sw *w, uint32_t pi, uint64_t *matched)
{
	struct seg_page *p = seg_page(w->s, w->g, pi);
	uint32_t size = shmmap__class_size(p->cls), per = shmmap__class_blocks(p->cls);
	uint64_t poff = seg_page_off(w->g, pi);
	uint32_t used = 0, free = 0;
	for (uint32_t j = per; j-- > 0;) {
		uint64_t off = poff + (uint64_t)j * size;
		if (is_root(w, off)) {
			used++;
			continue;
		}
		*(uint32_t *)seg_ptr(w->s, off) = free;
		free = j * size + 1;
	}
	*matched += used;
	if (used) {
		p->used = used;
		p->carved = per;
		p->free = free;
		p->drain = 0;
		p->prev = p->next = 0;
	}
	return used;
}

static void page_free(struct sw *w, uint32_t pi)
{
	struct seg_page *p = seg_page(w->s, w->g, pi);
	memset(p, 0, sizeof *p);
	p->kind = PAGE_FREE;
}

static void rebuild(struct sw *w, struct sweep_report *r)
{
	const struct seg *s = w->s;
	const struct seg_geom *g = w->g;
	uint32_t nc = shmmap__nclasses();
	uint64_t matched = 0, used_before = 0, used_after = 0;
	for (uint32_t k = 0; k < g->nclasses; k++) {
		struct seg_class *c = seg_class(s, g, k);
		used_before += c->used;
		c->partial = 0;
		c->used = 0;
		c->pages = 0;
	}
	for (uint32_t i = 0; i < g->npages;) {
		struct seg_page *p = seg_page(s, g, i);
		if (p->kind == PAGE_RUN) {
			uint32_t n = p->run;
			bool ok = n >= 1 && n <= g->npages - i;
			for (uint32_t j = 1; ok && j < n; j++)
				ok = seg_page(s, g, i + j)->kind == PAGE_CONT;
			used_before++;
			if (ok && is_root(w, seg_page_off(g, i))) {
				matched++;
				used_after++;
				i += n;
				continue;
			}
			r->pages_freed++;
			page_free(w, i++);
			continue; /* its CONT pages, now ownerless, are freed below */
		}
		uint32_t npg = p->kind == PAGE_SLAB && p->cls < nc && p->cls < g->nclasses
				       ? shmmap__class_pages(p->cls) : 0;
		if (npg && npg <= g->npages - i) {
			/* Its SPAN pages (written before the head: they are there
			 * unless scribbled); the slab's blocks straddle them. */
			bool ok = true;
			for (uint32_t j = 1; ok && j < npg; j++) {
				const struct seg_page *q = seg_page(s, g, i + j);
				ok = q->kind == PAGE_SPAN && q->run == j;
			}
			uint32_t used = ok ? rebuild_slab(w, i, &matched) : 0;
			if (used) {
				struct seg_class *c = seg_class(s, g, p->cls);
				c->pages += npg;
				c->used += used;
				used_after += used;
				if (used < shmmap__class_blocks(p->cls)) {
					p->next = c->partial;
					if (c->partial)
						seg_page(s, g, c->partial - 1)->prev = i + 1;
					c->partial = i + 1;
				}
				i += npg;
			} else {
				/* Empty, or its pages are not all its own (then
				 * the roots in it are bad ones): its SPAN pages,
				 * ownerless now, are freed below. */
				r->pages_freed++;
				page_free(w, i++);
			}
			continue;
		}
		if (p->kind != PAGE_FREE)
			r->pages_freed++; /* an ownerless CONT or SPAN page, or garbage */
		page_free(w, i++);
	}
	uint64_t nfree = 0;
	for (uint32_t i = 0; i < g->npages; i++)
		nfree += seg_page(s, g, i)->kind == PAGE_FREE;
	struct seg_header *h = seg_hdr(s);
	h->pool_free = nfree;
	h->pool_rover = 0;
	r->roots = w->roots;
	r->bad_roots = w->roots > matched ? w->roots - matched : 0;
	r->freed = used_before > used_after ? used_before - used_after : 0;
}

/* 1 if taken now from nobody, 2 if taken over from a dead owner (what it
 * guards may be half-updated), 0 if already ours (taken over from a dead
 * predecessor, or by an earlier sweep that gave up, and kept for this
 * one), or -EBUSY if a live process holds on to it (c->wait_ms). */
static int lock_for_sweep(_Atomic uint32_t *w, const struct lock_ctx *c)
{
	if ((atomic_load(w) & LOCK_OWNER_MASK) == c->owner)
		return 0;
	int rc = shmmap__lock(w, c, NULL);
	return rc < 0 ? rc : rc + 1;
}

/* The allocator lock k: the classes, then the pool. */
static _Atomic uint32_t *alloc_lock(const struct seg *s, const struct seg_geom *g, uint32_t k,
				    uint32_t n)
{
	return k < n ? &seg_class(s, g, k)->lock : &seg_hdr(s)->pool_lock;
}

#define SWEEP_BUSY_LOOK_MS 20u /* how long a sweep looks for every allocator lock free */

/* Is an allocator lock held by a live process other than us?  Checked
 * before taking any: a sweep that would only give up again does not hold
 * every other class up while it waits (the housekeeping thread retries
 * a deferred sweep every round). */
static bool alloc_lock_busy(const struct seg *s, const struct seg_geom *g,
			    const struct lock_ctx *c, uint32_t n)
{
	for (uint32_t k = 0; k <= n; k++) {
		uint32_t owner = atomic_load(alloc_lock(s, g, k, n)) & LOCK_OWNER_MASK;
		if (owner && owner != c->owner && shmmap__owner_alive(c, owner))
			return true;
	}
	return false;
}

int shmmap__sweep(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		  struct sweep_report *r)
{
	memset(r, 0, sizeof *r);
	struct sw w = {.s = s};
	bool *alive = calloc(g->max_clients, sizeof *alive);
	if (!alive)
		return -ENOMEM;
	/* Lock order: classes, then the pool (as alloc.c nests them).  A lock
	 * that already names us was taken over from a dead owner and kept for
	 * this sweep (shmmap__coord_adopt_repair, or a sweep that gave up): the
	 * coordinator's own allocator use is serialised with its sweeps, so
	 * it holds none otherwise.  taken[k]: lock k was free and taken by
	 * this call. */
	bool taken[SEG_NCLASSES + 1] = {0};
	int rc = 0;
	uint32_t n = g->nclasses <= SEG_NCLASSES ? g->nclasses : SEG_NCLASSES;
	if (c->wait_ms && alloc_lock_busy(s, g, c, n)) {
		/* Held for an instant of ordinary use, or held on to (a stopped
		 * process)?  Look again for a few ms: with three writers busy,
		 * some lock was held at the one look often enough that `check
		 * --repair` put its sweep off now and then, its leak left. */
		uint64_t until = shmmap__mono_ms() + SWEEP_BUSY_LOOK_MS;
		bool busy = true;
		while (busy && shmmap__mono_ms() < until) {
			struct timespec ts = {0, 500 * 1000};
			nanosleep(&ts, NULL);
			busy = alloc_lock_busy(s, g, c, n);
		}
		if (busy)
			rc = -EBUSY;
	}
	for (uint32_t k = 0; k <= n && rc >= 0; k++) {
		rc = lock_for_sweep(alloc_lock(s, g, k, n), c);
		taken[k] = rc == 1;
	}
	if (rc < 0) {
		/* A live process (stopped, say) holds an allocator lock: give
		 * back the locks that were free, and let the caller try again
		 * later rather than hold every other class up.  A lock taken
		 * over from a dead owner stays ours: what it guards may be
		 * half-updated, and nobody may allocate from it before a sweep
		 * has rebuilt it. */
		for (uint32_t k = 0; k <= n; k++)
			if (taken[k])
				shmmap__unlock(alloc_lock(s, g, k, n));
		free(alive);
		return rc;
	}
	/* The pages as they are now: a growth step publishes its pages under
	 * the pool lock, which this sweep holds, so the count cannot change
	 * under it (the walk uses this copy, whatever other threads of the
	 * coordinator see meanwhile). */
	shmmap__seg_sync(s);
	struct seg_geom gl = *g;
	w.g = &gl;
	w.units = (uint64_t)gl.npages * (SEG_PAGE / SEG_ALIGN);
	w.root = calloc((size_t)(w.units + 7) / 8, 1);
	if (!w.root) {
		for (uint32_t k = 0; k <= n; k++)
			if (taken[k])
				shmmap__unlock(alloc_lock(s, g, k, n));
		free(alive);
		return -ENOMEM;
	}

	for (uint32_t i = 0; i < g->max_clients; i++)
		alive[i] = shmmap__slot_alive(s, g, i);
	/* No spare moves from here on (they take no allocator lock): wait for
	 * those under way, as long as a lock wait may last. */
	if (stop_spare_moves(s, g, c, alive) < 0) {
		for (uint32_t k = 0; k <= n; k++)
			if (taken[k])
				shmmap__unlock(alloc_lock(s, g, k, n));
		free(w.root);
		free(alive);
		return -EBUSY;
	}
	mark_records(&w, alive);
	mark_tables(&w);
	mark_chains(&w);
	/* A client that attached meanwhile may have unlinked something after
	 * the walk passed it: its records count too from here on. */
	for (uint32_t i = 0; i < g->max_clients; i++)
		alive[i] = alive[i] || shmmap__slot_alive(s, g, i);
	mark_records(&w, alive);
	rebuild(&w, r);
	/* What the records of dead slots named is now free unless linked. */
	for (uint32_t i = 0; i < g->max_clients; i++) {
		if (alive[i])
			continue;
		struct seg_slot *sl = seg_slot(s, g, i);
		bool any = false;
		for (uint32_t k = 0; k < SEG_INTENTS; k++) {
			any |= atomic_exchange(&sl->intent[k].a, 0) != 0;
			any |= atomic_exchange(&sl->intent[k].b, 0) != 0;
			any |= atomic_exchange(&sl->intent[k].spare, 0) != 0;
		}
		r->dead_slots += any;
	}

	atomic_fetch_add(&seg_hdr(s)->sweeps, 1);
	atomic_store(&seg_hdr(s)->sweeping, 0);
	shmmap__unlock(&seg_hdr(s)->pool_lock);
	for (uint32_t k = g->nclasses; k-- > 0;)
		shmmap__unlock(&seg_class(s, g, k)->lock);
	free(w.root);
	free(alive);
	return 0;
}
