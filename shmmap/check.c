/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check.c - the consistency check of a whole segment (shmmapctl check):
 * shmmap__check() walks every structure read-only and reports each broken
 * invariant it finds through check_report.problem.  It owns no state in the
 * segment and never writes to it, takes no lock and never prints.
 *
 * Invariants checked (see internal.h, alloc.c, table.c):
 *   header     fields agree with the validated geometry and mapped length;
 *   slots      known states; a LIVE slot has a pid; a FREE slot no intent or undo;
 *              a LIVE or DEAD slot whose client is gone awaits recovery;
 *   directory  known states; a LIVE map has a unique, non-empty name and a
 *              table (stripes, then buckets) at the start of its own run of
 *              pages, big enough for it; each bucket array it grew into
 *              (grow.c) is a run of its own, big enough, named once;
 *   resizes    the table word names valid arrays; outside a resize no
 *              bucket holds the moved marker; during one, a new bucket
 *              holds entries only once its old bucket moved; no stripe
 *              at rest has a move in progress;
 *   chains     offsets in bounds and 8-aligned (SEG_ALIGN) (shmmap__entry_at), no
 *              cycle (Brent), each entry's stored hash
 *              is the hash of its key and names its bucket (in the old
 *              array or the current one), each entry
 *              lies at the start of an allocated block big enough for it
 *              (its expiry slot included when its flag says it has one,
 *              and then the slot is not 0);
 *              per-stripe entries/bytes/expiry slots equal what the chains
 *              hold;
 *   locks      a held lock's owner is alive; an odd sequence counter has a
 *              live writer holding the stripe lock;
 *   pages      a RUN head is followed by run - 1 CONT pages and nothing
 *              else is a CONT page; a SLAB page (a slab's head) has a valid
 *              class, its slab fits the heap and is followed by the class's
 *              pages - 1 SPAN pages, the d-th with run d, and nothing else
 *              is a SPAN page; used <= carved <= blocks per slab, and a
 *              free list of exactly carved - used distinct carved blocks;
 *              PAGE_FREE pages number pool_free;
 *   classes    size as computed by alloc.c; used equals the sum over the
 *              class's slabs, pages the pages of its slabs; the partial
 *              list holds exactly the class's slabs that have a free block
 *              and are not being drained;
 *   leaks      every allocated block (a carved slab block not on its free
 *              list, or a run) is an entry reachable from a LIVE map, the
 *              table run of a directory entry (a dropped map keeps its
 *              own), or named by the intent record of a slot in use (a
 *              write in flight).  Any other is leaked: counted in r->leaked.
 *
 * Running beside writers.  The check may run while other processes write,
 * and it reports only what it can prove from what it read:
 *   - The page descriptors are copied once (the snapshot) and the blocks
 *     are numbered and marked (free, reached) on that copy.  A verdict on
 *     a page (structure, free list, leaks, "entry in a free block") is made
 *     only if its live descriptor still equals the copy at the end; a
 *     class only if none of its pages changed and its lock is free; the
 *     pool only if no page changed kind and pool_free did not move.
 *   - The copy is taken over a window (a preempted checker sees pages
 *     change and change back), so a disagreement found on it is believed
 *     only if fresh live looks in a short window (descriptor, list,
 *     descriptor again; RECHECK_TRIES times) all disagree too.
 *   - A chain verdict is made only while the stripe's sequence counter is
 *     still the even value read before the walk (seqlock: with a fence
 *     before the re-read, as readers do).  Entries are immutable while
 *     linked and freed only after a sequence change, so what was read is
 *     what is linked.  A stripe's totals are compared only when its lock
 *     was free and its counter and totals unchanged across the whole walk
 *     (an insertion at a chain's head moves the totals, not the counter).
 *   - A block that looks leaked gets a second look at the end: if it now
 *     validates as an entry linked in its bucket, or is a map's table, it
 *     was linked during the check.
 * What remains is rare and short-lived (a block allocated, or linked and
 * its record cleared, between the walk and the look at the intent records;
 * a block freed and reused within the walk): the caller
 * re-runs before believing a problem (shmmapctl keeps only the problems
 * that every one of its runs reports).  The price: under write load, pages
 * and stripes being written are not judged, so a complete audit (leaks in
 * busy pages included) needs a quiet segment.
 * Every offset followed is validated against the mapped length before use
 * and every walk is bounded, exactly as on the read path.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#include "internal.h"

/* Plain (non-_Atomic) shared fields are read once, relaxed: a concurrent
 * writer may change them, and every value read is validated before use. */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

#define NO_BITS UINT64_MAX
#define RECHECK_TRIES 8 /* fresh live looks before a snapshot verdict is believed */

enum fl_state { FL_OK, FL_RANGE, FL_CYCLE };

struct ck {
	const struct seg *s;
	const struct seg_geom *g;
	struct check_report *r;
	struct seg_page *pages;  /* the snapshot of the page descriptors */
	uint64_t *bit_base;      /* per page: bit of its first block, or NO_BITS (SPAN) */
	uint64_t nbits;          /* blocks that can be allocated: carved slab blocks + runs */
	unsigned char *onfree;   /* bitmap: block is on its page's free list */
	unsigned char *reached;  /* bitmap: block is referenced (entry, table, intent) */
	unsigned char *busy;     /* per page: changed since the snapshot: no verdicts */
	uint32_t *fl_len;        /* per SLAB head: free-list blocks walked */
	uint32_t *fl_bad;        /* per SLAB head: the link that stopped the walk */
	unsigned char *fl_why;   /* per SLAB head: enum fl_state */
	uint64_t *cls_used;      /* per class: sum of its slabs' used */
	uint32_t *cls_pages;     /* per class: the pages of its slabs (heads and SPAN pages) */
	uint32_t *cls_partial;   /* per class: its slabs with a free block, not draining */
	unsigned char *cls_busy; /* per class: a page of it changed, or its lock is held */
	bool pool_busy;          /* pool_free moved or a page changed kind */
	uint64_t pool_free0;     /* pool_free just before the snapshot */
	struct map_view *views;  /* the live maps walked, for the second look */
	uint32_t nviews;
};

__attribute__((format(printf, 2, 3)))
static void problem(struct ck *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	c->r->errors++;
	if (c->r->problem)
		c->r->problem(c->r->arg, buf);
}

static bool bit_get(const unsigned char *m, uint64_t i)
{
	return (m[i / 8] >> (i % 8)) & 1u;
}

static void bit_set(unsigned char *m, uint64_t i)
{
	m[i / 8] |= (unsigned char)(1u << (i % 8));
}

static const char *kind_name(uint32_t kind)
{
	switch (kind) {
	case PAGE_FREE: return "free";
	case PAGE_SLAB: return "slab";
	case PAGE_RUN: return "run head";
	case PAGE_CONT: return "run continuation";
	case PAGE_SPAN: return "slab continuation";
	}
	return "unknown";
}

/* Blocks in a slab of class cls (one page, or several for a class above
 * 8 KiB: alloc.c).  Only for a valid class (cls < nclasses, checked by
 * every caller). */
static uint32_t per_slab(uint32_t cls)
{
	return shmmap__class_blocks(cls);
}

/* Blocks of a snapshot SLAB head (valid class) that have a bit: the carved ones. */
static uint32_t carved_blocks(const struct seg_page *p)
{
	uint32_t per = per_slab(p->cls);
	return p->carved < per ? p->carved : per;
}

/* The pages of the slab whose head is snapshot page i: its class's, or 0
 * if page i is no SLAB page of a valid class or its slab runs past the
 * heap (then its blocks are not numbered and its free list not read:
 * they would lie outside what is mapped). */
static uint32_t slab_len(const struct ck *c, uint32_t i)
{
	const struct seg_page *p = &c->pages[i];
	if (p->kind != PAGE_SLAB || p->cls >= c->g->nclasses)
		return 0;
	uint32_t n = shmmap__class_pages(p->cls);
	return n && n <= c->g->npages - i ? n : 0;
}

/* Is the slab at snapshot page i whole in the snapshot: a slab that fits
 * the heap (slab_len) followed by its class's SPAN pages, the d-th with
 * run d?  Returns its pages, or 0. */
static uint32_t slab_whole(const struct ck *c, uint32_t i)
{
	uint32_t n = slab_len(c, i);
	for (uint32_t d = 1; d < n; d++)
		if (c->pages[i + d].kind != PAGE_SPAN || c->pages[i + d].run != d)
			return 0;
	return n;
}

/* Where snapshot page i, a SPAN page, says its head is: true and *head if
 * `run` pages back (run in 1 .. SEG_SPAN_MAX - 1, not before page 0) is a
 * SLAB page that is not of a valid class shorter than that (an invalid
 * class is the head's own problem, reported there).  As
 * shmmap__slab_head() judges a live page, on the snapshot. */
static bool span_head(const struct ck *c, uint32_t i, uint32_t *head)
{
	uint32_t d = c->pages[i].run;
	if (d == 0 || d >= SEG_SPAN_MAX || d > i)
		return false;
	const struct seg_page *h = &c->pages[i - d];
	if (h->kind != PAGE_SLAB ||
	    (h->cls < c->g->nclasses && shmmap__class_pages(h->cls) <= d))
		return false;
	*head = i - d;
	return true;
}

/* Does page i's live descriptor still equal the snapshot?  (A racy read
 * of the live one: equality is all that is asked of it.) */
static bool page_stable(const struct ck *c, uint32_t i)
{
	return memcmp(seg_page(c->s, c->g, i), &c->pages[i], sizeof c->pages[i]) == 0;
}

static bool in_heap(const struct seg_geom *g, uint64_t off)
{
	return off >= g->heap_off && off < g->heap_off + (uint64_t)g->npages * SEG_PAGE;
}

static uint32_t page_of(const struct seg_geom *g, uint64_t off)
{
	return (uint32_t)((off - g->heap_off) / SEG_PAGE);
}

/* Do the descriptors that place a block at off still equal the snapshot:
 * its page's, and for a SPAN page the head's its run names (a slab being
 * carved writes its SPAN pages before its head: a snapshot may hold them
 * with the head still free)?  True outside the heap (nothing to change). */
static bool block_stable(const struct ck *c, uint64_t off)
{
	if (!in_heap(c->g, off))
		return true;
	uint32_t pi = page_of(c->g, off), d = c->pages[pi].run;
	if (!page_stable(c, pi))
		return false;
	return c->pages[pi].kind != PAGE_SPAN || d == 0 || d >= SEG_SPAN_MAX || d > pi ||
	       page_stable(c, pi - d);
}

/* ---- header and geometry ---- */

/* Returns false if the geometry itself cannot be trusted (nothing else can
 * be walked then). */
static bool check_header(struct ck *c)
{
	const struct seg *s = c->s;
	const struct seg_geom *g = c->g;
	struct seg_geom want;
	struct seg_params p = {
		.size = g->max_size, .max_size = g->max_size, .max_clients = g->max_clients,
		.max_maps = g->max_maps,
	};
	size_t len = atomic_load(&s->len);
	if (len < sizeof(struct seg_header) || shmmap__seg_layout(&p, &want) < 0 ||
	    want.slots_off != g->slots_off || want.dir_off != g->dir_off ||
	    want.ctr_off != g->ctr_off || want.classes_off != g->classes_off ||
	    want.pages_off != g->pages_off || want.heap_off != g->heap_off ||
	    want.npages_max != g->npages_max || g->npages > g->npages_max ||
	    want.nclasses != g->nclasses || g->nclasses > SEG_NCLASSES ||
	    g->heap_off + (uint64_t)g->npages * SEG_PAGE > len) {
		problem(c, "geometry does not match the mapped length %zu: nothing walked", len);
		return false;
	}
	const struct seg_header *h = seg_hdr(s);
	uint64_t magic = atomic_load_explicit((_Atomic uint64_t *)&h->magic, memory_order_acquire);
	if (magic != SEG_MAGIC)
		problem(c, "header: magic is %#llx, not %#llx", (unsigned long long)magic,
			(unsigned long long)SEG_MAGIC);
	if (LOAD(h->layout_version) != SEG_LAYOUT_VERSION)
		problem(c, "header: layout version %u, not %u", LOAD(h->layout_version),
			SEG_LAYOUT_VERSION);
	if (LOAD(h->header_size) != sizeof *h)
		problem(c, "header: header_size %u, not %zu", LOAD(h->header_size), sizeof *h);
	if (LOAD(h->max_size) != g->max_size || LOAD(h->size) > g->max_size)
		problem(c, "header: max_size %llu (initial size %llu), but %llu at attach",
			(unsigned long long)LOAD(h->max_size), (unsigned long long)LOAD(h->size),
			(unsigned long long)g->max_size);
	uint32_t live = atomic_load(&((struct seg_header *)h)->npages_live);
	if (live < g->npages || live > g->npages_max)
		problem(c, "header: %u live pages, but %u are mapped here and the layout has %u",
			live, (uint32_t)g->npages, g->npages_max);
	struct stat fst;
	if (s->fd >= 0 && fstat(s->fd, &fst) == 0 &&
	    (uint64_t)fst.st_size < g->heap_off + (uint64_t)live * SEG_PAGE)
		problem(c, "the object is %lld bytes, shorter than its %u live pages",
			(long long)fst.st_size, live);
	if (LOAD(h->max_clients) != g->max_clients || LOAD(h->max_maps) != g->max_maps ||
	    LOAD(h->npages) != g->npages_max || LOAD(h->nclasses) != g->nclasses)
		problem(c, "header: limits changed since attach (clients %u/%u, maps %u/%u, "
			   "pages %u/%u, classes %u/%u)",
			LOAD(h->max_clients), g->max_clients, LOAD(h->max_maps), g->max_maps,
			LOAD(h->npages), g->npages_max, LOAD(h->nclasses), g->nclasses);
	if (LOAD(h->slots_off) != g->slots_off || LOAD(h->dir_off) != g->dir_off ||
	    LOAD(h->ctr_off) != g->ctr_off || LOAD(h->classes_off) != g->classes_off ||
	    LOAD(h->pages_off) != g->pages_off || LOAD(h->heap_off) != g->heap_off)
		problem(c, "header: region offsets differ from the geometry");
	if (LOAD(h->hash_seed) != g->hash_seed)
		problem(c, "header: hash seed changed since attach");
	uint32_t st = atomic_load_explicit((_Atomic uint32_t *)&h->state, memory_order_relaxed);
	if (st != SEG_CLEAN && st != SEG_DIRTY)
		problem(c, "header: unknown state %u", st);
	return true;
}

/* ---- locks ---- */

/* Report a lock held by an owner that is not alive.  The word is read again
 * after the liveness test so that a lock released meanwhile (and its slot
 * freed) is not reported. */
static void check_lock(struct ck *c, _Atomic uint32_t *w, const char *what)
{
	uint32_t v = atomic_load_explicit(w, memory_order_relaxed);
	if (v == 0)
		return;
	uint32_t owner = v & LOCK_OWNER_MASK;
	/* owner is never UINT32_MAX, so owner_alive() never takes it for us. */
	struct lock_ctx lc = {.s = c->s, .g = c->g, .owner = UINT32_MAX};
	if (owner != LOCK_OWNER_COORD && (owner == 0 || owner > c->g->max_clients)) {
		if (atomic_load_explicit(w, memory_order_relaxed) == v)
			problem(c, "%s: lock word %#x names no valid owner", what, v);
		return;
	}
	if (shmmap__owner_alive(&lc, owner))
		return;
	if (atomic_load_explicit(w, memory_order_relaxed) != v)
		return;
	if (owner == LOCK_OWNER_COORD)
		problem(c, "%s: held by a coordinator that is gone", what);
	else
		problem(c, "%s: held by slot %u, which is not a live client", what, owner - 1);
}

/* ---- slots ---- */

static void check_slots(struct ck *c)
{
	for (uint32_t i = 0; i < c->g->max_clients; i++) {
		struct seg_slot *sl = seg_slot(c->s, c->g, i);
		uint32_t st = atomic_load_explicit(&sl->state, memory_order_acquire);
		uint32_t busy = 0;
		for (uint32_t k = 0; k < SEG_INTENTS; k++)
			busy += atomic_load_explicit(&sl->intent[k].a, memory_order_relaxed) ||
				atomic_load_explicit(&sl->intent[k].b, memory_order_relaxed) ||
				atomic_load_explicit(&sl->intent[k].spare, memory_order_relaxed) ||
				(k < SEG_UNDOS &&
				 atomic_load_explicit(&sl->undo[k].off, memory_order_relaxed));
		if (st != SLOT_FREE && st != SLOT_LIVE && st != SLOT_DEAD) {
			problem(c, "slot %u: unknown state %u", i, st);
			continue;
		}
		if (st == SLOT_DEAD || (st == SLOT_LIVE && !shmmap__slot_alive(c->s, c->g, i) &&
					atomic_load(&sl->state) == SLOT_LIVE))
			problem(c, "slot %u: its client is dead and not yet recovered (pid %u)", i,
				LOAD(sl->pid));
		if (st == SLOT_LIVE && LOAD(sl->pid) == 0)
			problem(c, "slot %u: live but has no pid", i);
		if (st != SLOT_FREE && (LOAD(sl->flags) & ~SLOT_F_RDONLY))
			problem(c, "slot %u: unknown flags %#x", i, LOAD(sl->flags));
		/* Re-read: the slot may have been freed and re-assigned meanwhile. */
		if (st == SLOT_FREE && busy &&
		    atomic_load_explicit(&sl->state, memory_order_acquire) == SLOT_FREE)
			problem(c, "slot %u: free but %u of its intent or undo records are set", i,
				busy);
	}
}

/* ---- pages: the snapshot's layout, then verdicts on stable pages ---- */

/* Number the blocks of the snapshot (bit_base: a slab's are its head's,
 * its SPAN pages have none) and sum per class.  No verdicts here:
 * report_pages() makes them at the end. */
static void layout_pages(struct ck *c)
{
	const struct seg_geom *g = c->g;
	for (uint32_t i = 0; i < g->npages; i++) {
		const struct seg_page *p = &c->pages[i];
		c->bit_base[i] = NO_BITS;
		if (p->kind == PAGE_RUN) {
			c->bit_base[i] = c->nbits++;
		} else if (p->kind == PAGE_SLAB && p->cls < g->nclasses) {
			/* The class counted the slab's pages when it took them
			 * (alloc.c): its head says how many, whatever follows. */
			c->cls_used[p->cls] += p->used;
			c->cls_pages[p->cls] += shmmap__class_pages(p->cls);
			if (p->used < per_slab(p->cls) && !p->drain) /* draining: off the list */
				c->cls_partial[p->cls]++;
			if (slab_len(c, i)) {
				c->bit_base[i] = c->nbits;
				c->nbits += carved_blocks(p);
			}
		}
	}
}

/* A fresh look at SLAB head i, read live in a short window: its
 * descriptor, then its free list (in the blocks of the whole slab), then
 * the descriptor again.  True if the slab is consistent (or page i no
 * longer heads a valid slab that fits the heap: no verdict then), false if
 * every one of RECHECK_TRIES looks was inconsistent. */
static bool page_consistent_now(struct ck *c, uint32_t i)
{
	struct seg_page *live = seg_page(c->s, c->g, i);
	uint64_t poff = seg_page_off(c->g, i);
	for (int t = 0; t < RECHECK_TRIES; t++) {
		struct seg_page d1, d2;
		memcpy(&d1, live, sizeof d1);
		if (d1.kind != PAGE_SLAB || d1.cls >= c->g->nclasses ||
		    shmmap__class_pages(d1.cls) > c->g->npages - i)
			return true;
		uint32_t per = per_slab(d1.cls), size = shmmap__class_size(d1.cls);
		uint32_t carved = d1.carved < per ? d1.carved : per, len = 0;
		bool ok = d1.carved <= per && d1.used <= d1.carved;
		for (uint32_t x = d1.free; ok && x; len++) {
			if ((x - 1) % size != 0 || (x - 1) / size >= carved || len >= carved) {
				ok = false; /* out of range, or longer than possible: a cycle */
				break;
			}
			x = LOAD(*(uint32_t *)seg_ptr(c->s, poff + x - 1));
		}
		memcpy(&d2, live, sizeof d2);
		if (memcmp(&d1, &d2, sizeof d1) != 0)
			continue; /* changed while we looked: look again */
		if (ok && len == d1.carved - d1.used)
			return true;
	}
	return false;
}

/* A fresh look at the span of SLAB head h, read live in a short window:
 * the head, its SPAN pages, the head again.  True if the head's class's
 * pages after it are its SPAN pages, the d-th with run d (or page h no
 * longer heads a slab of a valid class: no verdict then), false if every
 * one of RECHECK_TRIES looks found them wrong or the slab past the heap. */
static bool slab_span_now(struct ck *c, uint32_t h)
{
	struct seg_page *live = seg_page(c->s, c->g, h);
	for (int t = 0; t < RECHECK_TRIES; t++) {
		struct seg_page d1, d2;
		memcpy(&d1, live, sizeof d1);
		if (d1.kind != PAGE_SLAB || d1.cls >= c->g->nclasses)
			return true;
		uint32_t n = shmmap__class_pages(d1.cls);
		bool ok = n <= c->g->npages - h;
		for (uint32_t d = 1; ok && d < n; d++) {
			const struct seg_page *q = seg_page(c->s, c->g, h + d);
			ok = LOAD(q->kind) == PAGE_SPAN && LOAD(q->run) == d;
		}
		memcpy(&d2, live, sizeof d2);
		if (memcmp(&d1, &d2, sizeof d1) != 0)
			continue; /* changed while we looked: look again */
		if (ok)
			return true;
	}
	return false;
}

/* A fresh look at page i, a SPAN page in the snapshot, read live in a
 * short window: the page, the head its run names, the page again.  True
 * if it is no SPAN page any more or lies in a slab (as span_head() judges),
 * false if every one of RECHECK_TRIES looks found it outside any slab. */
static bool span_owned_now(struct ck *c, uint32_t i)
{
	struct seg_page *live = seg_page(c->s, c->g, i);
	for (int t = 0; t < RECHECK_TRIES; t++) {
		struct seg_page d1, d2;
		memcpy(&d1, live, sizeof d1);
		if (d1.kind != PAGE_SPAN)
			return true;
		bool ok = false;
		if (d1.run != 0 && d1.run < SEG_SPAN_MAX && d1.run <= i) {
			const struct seg_page *h = seg_page(c->s, c->g, i - d1.run);
			uint32_t kind = LOAD(h->kind), cls = LOAD(h->cls);
			ok = kind == PAGE_SLAB &&
			     (cls >= c->g->nclasses || shmmap__class_pages(cls) > d1.run);
		}
		memcpy(&d2, live, sizeof d2);
		if (memcmp(&d1, &d2, sizeof d1) != 0)
			continue;
		if (ok)
			return true;
	}
	return false;
}

/* Count live PAGE_FREE pages between two equal reads of pool_free. */
static bool pool_consistent_now(struct ck *c)
{
	struct seg_header *h = seg_hdr(c->s);
	for (int t = 0; t < RECHECK_TRIES; t++) {
		uint64_t f1 = LOAD(h->pool_free), n = 0;
		for (uint32_t i = 0; i < c->g->npages; i++)
			n += LOAD(seg_page(c->s, c->g, i)->kind) == PAGE_FREE;
		if (LOAD(h->pool_free) == f1 && f1 == n)
			return true;
	}
	return false;
}

/* Verdicts on the pages that did not change since the snapshot: runs,
 * slabs (their span and free list), the pool. */
static void report_pages(struct ck *c)
{
	const struct seg_geom *g = c->g;
	uint32_t nfree = 0, cont_left = 0, run_head = 0, span_left = 0, slab_head = 0;
	for (uint32_t i = 0; i < g->npages; i++) {
		const struct seg_page *p = &c->pages[i];
		bool quiet = !c->busy[i];
		if (cont_left) {
			cont_left--;
			if (p->kind == PAGE_CONT)
				continue;
			if (quiet && !c->busy[run_head])
				problem(c, "page %u: inside the run of page %u, but its kind is %s", i,
					run_head, kind_name(p->kind));
			cont_left = 0;
		}
		if (span_left) {
			/* Page d of the slab at slab_head: its SPAN page with run
			 * d.  A slab being carved or given back changes its head
			 * too (busy); a wrong page is believed only if a fresh
			 * look at the whole span agrees. */
			uint32_t d = i - slab_head, cls = c->pages[slab_head].cls;
			span_left--;
			if (p->kind == PAGE_SPAN && p->run == d)
				continue;
			bool judge = quiet && !c->busy[slab_head] && !slab_span_now(c, slab_head);
			if (p->kind == PAGE_SPAN) {
				/* Still a page of this slab, with a scribbled run. */
				if (judge)
					problem(c, "page %u: page %u of the slab at page %u (class "
						   "%u), but its run is %u", i, d, slab_head, cls,
						p->run);
				continue;
			}
			if (judge)
				problem(c, "page %u: page %u of the slab at page %u (class %u, %u "
					   "pages), but its kind is %s", i, d, slab_head, cls,
					shmmap__class_pages(cls), kind_name(p->kind));
			span_left = 0; /* judged on its own below */
		}
		switch (p->kind) {
		case PAGE_FREE:
			nfree++;
			break;
		case PAGE_CONT:
			if (quiet)
				problem(c, "page %u: a run continuation outside any run", i);
			break;
		case PAGE_SPAN: {
			/* Not followed from a head: outside any slab (a slab being
			 * carved writes its SPAN pages before its head, which is
			 * busy then), unless its head's span broke before it and
			 * was reported there. */
			uint32_t h;
			if (span_head(c, i, &h))
				break;
			uint32_t d = p->run;
			bool head_busy = d && d < SEG_SPAN_MAX && d <= i && c->busy[i - d];
			if (quiet && !head_busy && !span_owned_now(c, i))
				problem(c, "page %u: a slab page outside any slab (its run is %u)",
					i, p->run);
			break;
		}
		case PAGE_RUN:
			if (p->run == 0 || p->run > g->npages - i) {
				if (quiet)
					problem(c, "page %u: run of %u pages does not fit the heap", i,
						p->run);
			} else {
				cont_left = p->run - 1;
				run_head = i;
			}
			break;
		case PAGE_SLAB: {
			if (p->cls >= g->nclasses) {
				if (quiet)
					problem(c, "page %u: slab of class %u, there are %u", i, p->cls,
						g->nclasses);
				break;
			}
			uint32_t npg = shmmap__class_pages(p->cls);
			/* Its SPAN pages follow (as far as the heap goes). */
			span_left = npg ? (npg < g->npages - i ? npg : g->npages - i) - 1 : 0;
			slab_head = i;
			if (!slab_len(c, i)) {
				if (quiet)
					problem(c, "page %u: slab of class %u takes %u pages, the "
						   "heap has %u after it", i, p->cls, npg,
						g->npages - i - 1);
				break; /* its blocks lie outside the heap: not read */
			}
			uint32_t per = per_slab(p->cls);
			bool bad = p->carved > per || p->used > p->carved || c->fl_why[i] != FL_OK ||
				   c->fl_len[i] != p->carved - p->used;
			/* The snapshot's free list was read over a long window:
			 * believe a bad one only if a fresh look agrees. */
			if (!quiet || !bad || page_consistent_now(c, i))
				break;
			if (p->carved > per)
				problem(c, "page %u: %u blocks carved, a slab of class %u holds %u",
					i, p->carved, p->cls, per);
			if (p->used > p->carved)
				problem(c, "page %u: %u blocks used but only %u carved", i, p->used,
					p->carved);
			if (c->fl_why[i] == FL_RANGE)
				problem(c, "page %u: free list link %u is not a carved block of %u B", i,
					c->fl_bad[i], shmmap__class_size(p->cls));
			else if (c->fl_why[i] == FL_CYCLE)
				problem(c, "page %u: free list has a cycle at link %u", i, c->fl_bad[i]);
			else if (p->carved >= p->used && c->fl_len[i] != p->carved - p->used)
				problem(c, "page %u: free list holds %u blocks, carved - used is %u", i,
					c->fl_len[i], p->carved - p->used);
			break;
		}
		default:
			if (quiet)
				problem(c, "page %u: unknown kind %u", i, p->kind);
		}
	}
	uint64_t pool_free = LOAD(seg_hdr(c->s)->pool_free);
	if (!c->pool_busy && pool_free == c->pool_free0 && pool_free != nfree &&
	    !pool_consistent_now(c))
		problem(c, "pool: header says %llu free pages, %u pages are free",
			(unsigned long long)pool_free, nfree);
	uint32_t rover = LOAD(seg_hdr(c->s)->pool_rover);
	if (rover >= g->npages)
		problem(c, "pool: rover %u beyond the %u pages", rover, g->npages);
}

/* Walk each slab's free list (its links, offsets in the slab + 1, live
 * in the free blocks, which may straddle its pages): mark the blocks on
 * it; the verdict waits for report_pages().  A slab past the heap is not
 * read (no bits: slab_len). */
static void walk_free_lists(struct ck *c)
{
	for (uint32_t i = 0; i < c->g->npages; i++) {
		const struct seg_page *p = &c->pages[i];
		if (c->bit_base[i] == NO_BITS || p->kind != PAGE_SLAB)
			continue;
		uint32_t size = shmmap__class_size(p->cls), carved = carved_blocks(p);
		uint64_t poff = seg_page_off(c->g, i);
		for (uint32_t x = p->free; x;) {
			uint32_t boff = x - 1;
			if (boff % size != 0 || boff / size >= carved) {
				c->fl_why[i] = FL_RANGE;
				c->fl_bad[i] = x;
				break;
			}
			uint64_t bit = c->bit_base[i] + boff / size;
			if (bit_get(c->onfree, bit)) {
				c->fl_why[i] = FL_CYCLE;
				c->fl_bad[i] = x;
				break;
			}
			bit_set(c->onfree, bit);
			c->fl_len[i]++;
			x = LOAD(*(uint32_t *)seg_ptr(c->s, poff + boff));
		}
	}
}

/* Which pages changed since the snapshot, and so which classes and
 * whether the pool can be judged. */
static void settle(struct ck *c)
{
	const struct seg_geom *g = c->g;
	for (uint32_t i = 0; i < g->npages; i++) {
		if (page_stable(c, i))
			continue;
		c->busy[i] = 1;
		const struct seg_page *snap = &c->pages[i];
		struct seg_page *live = seg_page(c->s, g, i);
		uint32_t kind = LOAD(live->kind), cls = LOAD(live->cls);
		if (snap->kind == PAGE_SLAB && snap->cls < g->nclasses)
			c->cls_busy[snap->cls] = 1;
		if (kind == PAGE_SLAB && cls < g->nclasses)
			c->cls_busy[cls] = 1;
		if (kind != snap->kind)
			c->pool_busy = true;
	}
	for (uint32_t k = 0; k < g->nclasses; k++)
		if (atomic_load_explicit(&seg_class(c->s, g, k)->lock, memory_order_relaxed))
			c->cls_busy[k] = 1;
	if (atomic_load_explicit(&seg_hdr(c->s)->pool_lock, memory_order_relaxed))
		c->pool_busy = true;
}

/*
 * Class k against its pages: counters, then the partial list.  Pages come
 * from the snapshot (src) or, with src NULL, are read live.  Returns the
 * number of disagreements; emits them only if emit.  A live look whose
 * class counters moved meanwhile counts as one disagreement.
 */
static unsigned class_verdict(struct ck *c, uint32_t k, const struct seg_page *src, bool emit)
{
	const struct seg_geom *g = c->g;
	struct seg_class *sc = seg_class(c->s, g, k);
	uint64_t used0 = LOAD(sc->used), npages0 = LOAD(sc->pages);
	uint32_t head0 = LOAD(sc->partial), per = per_slab(k), npg = shmmap__class_pages(k);
	uint64_t used = 0;
	uint32_t pages = 0, partial = 0, n = 0, prev = 0;
	unsigned bad = 0;
	struct seg_page d;
#define PAGE_DESC(i) (src ? src[(i)] : (memcpy(&d, seg_page(c->s, g, (i)), sizeof d), d))
	if (src) {
		/* Summed once by layout_pages(). */
		used = c->cls_used[k];
		pages = c->cls_pages[k];
		partial = c->cls_partial[k];
	} else {
		for (uint32_t i = 0; i < g->npages; i++) {
			memcpy(&d, seg_page(c->s, g, i), sizeof d);
			if (d.kind != PAGE_SLAB || d.cls != k)
				continue;
			used += d.used;
			pages += npg;
			partial += d.used < per && !d.drain;
		}
	}
	if (used0 != used) {
		bad++;
		if (emit)
			problem(c, "class %u: %llu blocks used, its pages hold %llu", k,
				(unsigned long long)used0, (unsigned long long)used);
	}
	if (npages0 != pages) {
		bad++;
		if (emit)
			problem(c, "class %u: owns %llu pages, its slabs hold %u", k,
				(unsigned long long)npages0, pages);
	}
	for (uint32_t x = head0; x; n++) {
		if (x > g->npages || n >= g->npages) {
			bad++;
			if (emit)
				problem(c, "class %u: partial list link %u is corrupt or cyclic", k, x);
			n = partial;
			break;
		}
		struct seg_page p = PAGE_DESC(x - 1);
		if (p.kind != PAGE_SLAB || p.cls != k) {
			bad++;
			if (emit)
				problem(c, "class %u: partial list names page %u, a %s page of class %u",
					k, x - 1, kind_name(p.kind), p.cls);
			n = partial;
			break;
		}
		if (p.used >= per) {
			bad++;
			if (emit)
				problem(c, "class %u: partial list names page %u, which is full", k,
					x - 1);
		}
		if (p.prev != prev) {
			bad++;
			if (emit)
				problem(c, "class %u: page %u's prev link is %u, not %u", k, x - 1,
					p.prev, prev);
		}
		prev = x;
		x = p.next;
	}
#undef PAGE_DESC
	if (n != partial) {
		bad++;
		if (emit)
			problem(c, "class %u: partial list holds %u slabs, %u of its slabs have "
				   "room", k, n, partial);
	}
	if (!src && (LOAD(sc->used) != used0 || LOAD(sc->pages) != npages0 ||
		     LOAD(sc->partial) != head0))
		bad++;
	return bad;
}

static void report_classes(struct ck *c)
{
	const struct seg_geom *g = c->g;
	for (uint32_t k = 0; k < g->nclasses; k++) {
		struct seg_class *sc = seg_class(c->s, g, k);
		char what[48];
		snprintf(what, sizeof what, "class %u lock", k);
		check_lock(c, &sc->lock, what);
		if (LOAD(sc->size) != shmmap__class_size(k))
			problem(c, "class %u: size %u, should be %u", k, LOAD(sc->size),
				shmmap__class_size(k));
		/* A class that changed during the walk gets no verdict; one that
		 * did not is judged on the snapshot, but a disagreement is only
		 * believed if no fresh live look agrees either (its pages may
		 * have changed and changed back). */
		if (c->cls_busy[k] || class_verdict(c, k, c->pages, false) == 0)
			continue;
		bool agrees = false;
		for (int t = 0; t < RECHECK_TRIES && !agrees; t++)
			agrees = class_verdict(c, k, NULL, false) == 0;
		if (!agrees)
			class_verdict(c, k, c->pages, true);
	}
}

/* ---- references ---- */

/* The bit of the allocated block that starts at off, or NO_BITS with *why
 * set (by the snapshot).  An offset in a SPAN page is in its head's slab:
 * blocks are at the head's offset + j * size. */
static uint64_t block_bit(struct ck *c, uint64_t off, const char **why)
{
	const struct seg_geom *g = c->g;
	if (!in_heap(g, off)) {
		*why = "outside the heap";
		return NO_BITS;
	}
	uint32_t pi = page_of(g, off);
	if (c->pages[pi].kind == PAGE_SPAN && !span_head(c, pi, &pi)) {
		*why = "in a slab page outside any slab";
		return NO_BITS;
	}
	const struct seg_page *p = &c->pages[pi];
	uint64_t boff = off - seg_page_off(g, pi);
	if (c->bit_base[pi] == NO_BITS) {
		*why = p->kind == PAGE_CONT ? "inside a run" : "in a page that is not allocated";
		return NO_BITS;
	}
	if (p->kind == PAGE_RUN) {
		if (boff != 0) {
			*why = "inside a run";
			return NO_BITS;
		}
		return c->bit_base[pi];
	}
	uint32_t size = shmmap__class_size(p->cls);
	if (boff % size != 0) {
		*why = "not at the start of a block";
		return NO_BITS;
	}
	if (boff / size >= carved_blocks(p)) {
		*why = "in a block never handed out";
		return NO_BITS;
	}
	uint64_t bit = c->bit_base[pi] + boff / size;
	if (bit_get(c->onfree, bit)) {
		*why = "in a free block";
		return NO_BITS;
	}
	return bit;
}

/* The run of the table of directory entry i: referenced while the entry
 * keeps a table (a dropped map keeps its own for reuse). */
static void check_table_run(struct ck *c, uint32_t i, uint32_t state)
{
	const struct seg_mapdir *d = seg_dir(c->s, c->g, i);
	uint64_t stripes_off = LOAD(d->stripes_off), buckets_off = LOAD(d->buckets_off);
	uint64_t first = LOAD(d->table_pages);
	uint32_t nb = LOAD(d->nbuckets), ns = LOAD(d->nstripes);
	if (stripes_off == 0) {
		if (state == MAP_LIVE)
			problem(c, "map %u: live but has no table", i);
		return;
	}
	if (first >= c->g->npages) {
		if (state == MAP_LIVE)
			problem(c, "map %u: table page %llu beyond the heap", i,
				(unsigned long long)first);
		return;
	}
	const struct seg_page *p = &c->pages[first];
	uint32_t fp = (uint32_t)first;
	if (p->kind != PAGE_RUN) {
		if (state == MAP_LIVE && page_stable(c, fp))
			problem(c, "map %u: table page %u is a %s page, not a run", i, fp,
				kind_name(p->kind));
		return;
	}
	if (state == MAP_LIVE) {
		if (stripes_off != seg_page_off(c->g, fp))
			problem(c, "map %u: stripes at %#llx, not at the start of its run (page %u)",
				i, (unsigned long long)stripes_off, fp);
		if (buckets_off != stripes_off + (uint64_t)ns * sizeof(struct seg_stripe))
			problem(c, "map %u: buckets at %#llx do not follow its %u stripes", i,
				(unsigned long long)buckets_off, ns);
		if ((uint64_t)p->run * SEG_PAGE < shmmap__table_bytes(nb, ns))
			problem(c, "map %u: table of %u stripes and %u buckets overflows its %u "
				   "pages", i, ns, nb, p->run);
	}
	uint64_t bit = c->bit_base[fp];
	if (bit_get(c->reached, bit))
		problem(c, "map %u: table run at page %u is used by something else too", i, fp);
	bit_set(c->reached, bit);
	for (int k = 0; k < 2; k++) {
		uint32_t run = LOAD(d->arr[k].run), n = LOAD(d->arr[k].nbuckets);
		uint64_t off = LOAD(d->arr[k].off);
		if (!run)
			continue;
		if (run > c->g->npages || seg_page_off(c->g, run - 1) != off) {
			problem(c, "map %u: bucket array %d (offset %#llx) is not at the start of page "
				   "%u", i, k, (unsigned long long)off, run - 1);
			continue;
		}
		const struct seg_page *ap = &c->pages[run - 1];
		if (ap->kind != PAGE_RUN) {
			if (page_stable(c, run - 1))
				problem(c, "map %u: bucket array %d at page %u is a %s page, not a run",
					i, k, run - 1, kind_name(ap->kind));
			continue;
		}
		if ((uint64_t)ap->run * SEG_PAGE < (uint64_t)n * 8)
			problem(c, "map %u: bucket array %d of %u buckets overflows its %u pages", i, k,
				n, ap->run);
		uint64_t abit = c->bit_base[run - 1];
		if (bit_get(c->reached, abit))
			problem(c, "map %u: bucket array run at page %u is used by something else too",
				i, run - 1);
		bit_set(c->reached, abit);
	}
}

/* Is the stripe still at the even sequence value s1 read before the walk?
 * Then whatever was read from its chains since was linked (the reader's
 * half of the seqlock: fence, then the relaxed re-read). */
static bool stripe_still(struct seg_stripe *sp, uint32_t s1)
{
	atomic_thread_fence(memory_order_acquire);
	return !(s1 & 1) && atomic_load_explicit(&sp->seq, memory_order_relaxed) == s1;
}

/* Walk the chains of one live map, stripe by stripe. */
static void check_chains(struct ck *c, const struct map_view *v, const char *name)
{
	const struct seg *s = c->s;
	struct tbl t;
	if (!shmmap__tbl_load(s, v, &t)) {
		problem(c, "map '%s': its table word names no valid bucket arrays", name);
		return;
	}
	const uint32_t nold = t.old_n;
	for (uint32_t st = 0; st < v->nstripes; st++) {
		struct seg_stripe *sp = &v->stripes[st];
		uint32_t q1 = atomic_load_explicit(&sp->seq, memory_order_acquire);
		uint32_t l1 = atomic_load_explicit(&sp->lock, memory_order_relaxed);
		/* Totals before and after: an insertion at a chain's head changes
		 * no sequence counter, but it changes these. */
		uint64_t te1 = LOAD(sp->entries), tb1 = LOAD(sp->bytes), ts1 = LOAD(sp->slots);
		uint64_t entries = 0, bytes = 0, slots = 0;
		uint64_t mv1 = atomic_load_explicit(&sp->moving, memory_order_relaxed);
		uint32_t mb1 = LOAD(sp->move_bucket);
		bool moved = false;
		/* The old array's buckets of the stripe (during a resize), then the
		 * current array's. */
		for (uint32_t i = st; i < nold + t.cur_n && !moved; i += v->nstripes) {
			bool in_old = i < nold;
			uint32_t b = in_old ? i : i - nold, nb = in_old ? nold : t.cur_n;
			uint64_t off = atomic_load_explicit(in_old ? &t.old[b] : &t.cur[b],
							    memory_order_acquire);
			if (off == BUCKET_MOVED) {
				if (!in_old && !(moved = !stripe_still(sp, q1)))
					problem(c, "map '%s' bucket %u: the moved marker in the "
						   "current array", name, b);
				continue;
			}
			if (!in_old && nold && off &&
			    atomic_load_explicit(&t.old[b & (nold - 1)], memory_order_acquire) !=
				    BUCKET_MOVED &&
			    !(moved = !stripe_still(sp, q1)))
				problem(c, "map '%s' bucket %u: holds entries while its old bucket %u "
					   "has not moved", name, b, b & (nold - 1));
			/* Brent's cycle detection: the tortoise jumps to the hare
			 * at every power of two. */
			uint64_t tortoise = off;
			uint32_t power = 1, lam = 0;
			for (uint32_t steps = 0; off; steps++) {
				if (steps >= SEG_CHAIN_MAX) {
					if ((moved = !stripe_still(sp, q1)))
						break;
					problem(c, "map '%s' bucket %u: chain longer than %u", name, b,
						SEG_CHAIN_MAX);
					break;
				}
				const struct seg_entry *e = shmmap__entry_at(s, v, off);
				/* Read once and validate our own copy: the entry may change
				 * under us (a racing unlink, free and reuse). */
				uint32_t klen = e ? LOAD(e->klen) : 0, vlenf = e ? ent_vlenf(e) : 0;
				uint32_t vlen = ent_vlen(vlenf);
				uint32_t hash = e ? ENT_HASH(atomic_load_explicit(
							    &((struct seg_entry *)e)->meta,
							    memory_order_relaxed)) : 0;
				uint64_t next = e ? atomic_load_explicit(&((struct seg_entry *)e)->next,
									 memory_order_acquire) : 0;
				/* With the expiry slot if the flag says so: it must fit
				 * the block too. */
				uint64_t need = ent_size(klen, vlen, ent_has_expiry(vlenf));
				if (!e || klen == 0 || klen > v->key_max || vlen > v->val_max ||
				    !seg_ok(s, off, need, SEG_ALIGN)) {
					if ((moved = !stripe_still(sp, q1)))
						break;
					problem(c, "map '%s' bucket %u: entry offset %#llx is out of "
						   "bounds, misaligned or has bad lengths",
						name, b, (unsigned long long)off);
					break;
				}
				uint64_t h = shmmap__hash(c->g, ent_key(e, vlenf), klen);
				uint64_t exp = ent_expiry(e, vlenf);
				const char *why = NULL;
				uint64_t bit = block_bit(c, off, &why);
				size_t bsize = shmmap__block_size(s, c->g, off);
				if ((moved = !stripe_still(sp, q1)))
					break;
				/* From here on, what was read is what is linked. */
				if (bit == NO_BITS) {
					if (block_stable(c, off))
						problem(c, "map '%s' bucket %u: entry %#llx is %s", name, b,
							(unsigned long long)off, why);
				} else {
					/* Seen before is no verdict: it may have been unlinked
					 * after its stripe was walked, freed, and reused here.
					 * Cycles are found by Brent's walk below; an entry
					 * shared by two chains of a map fails the bucket test
					 * in one of them. */
					bit_set(c->reached, bit);
				}
				if (bsize < need && block_stable(c, off))
					problem(c, "map '%s' bucket %u: entry %#llx needs %llu B, its "
						   "block has %zu", name, b, (unsigned long long)off,
						(unsigned long long)need, bsize);
				if (ent_has_expiry(vlenf) && exp == 0)
					problem(c, "map '%s' bucket %u: entry %#llx has the expiry flag "
						   "and no expiry", name, b, (unsigned long long)off);
				if ((uint32_t)h != hash)
					problem(c, "map '%s' bucket %u: entry %#llx's stored hash is "
						   "not its key's", name, b, (unsigned long long)off);
				else if ((uint32_t)(h & (nb - 1)) != b)
					problem(c, "map '%s' %s bucket %u: entry %#llx hashes to "
						   "bucket %u", name, in_old ? "old" : "current", b,
						(unsigned long long)off, (uint32_t)(h & (nb - 1)));
				entries++;
				bytes += (uint64_t)klen + vlen;
				slots += ent_has_expiry(vlenf);
				off = next;
				if (off && off == tortoise) {
					if ((moved = !stripe_still(sp, q1)))
						break;
					problem(c, "map '%s' bucket %u: chain has a cycle through "
						   "entry %#llx", name, b, (unsigned long long)off);
					break;
				}
				if (++lam == power) {
					tortoise = off;
					power <<= 1;
					lam = 0;
				}
			}
		}
		c->r->entries += entries;
		c->r->bytes += bytes;
		uint64_t te = LOAD(sp->entries), tb = LOAD(sp->bytes), ts = LOAD(sp->slots);
		uint32_t l2 = atomic_load_explicit(&sp->lock, memory_order_relaxed);
		uint32_t q2 = atomic_load_explicit(&sp->seq, memory_order_acquire);
		char what[128];
		snprintf(what, sizeof what, "map '%s' stripe %u", name, st);
		check_lock(c, &sp->lock, what);
		/* Odd, unchanged across the walk, and nobody held the lock at the
		 * moment in between: a writer died mid-change and nobody repaired. */
		if ((q1 & 1) && q1 == q2 && l2 == 0)
			problem(c, "%s: sequence counter %u is odd with the lock free", what, q1);
		if ((mv1 || mb1) && !l1 && !l2 && q1 == q2 &&
		    atomic_load_explicit(&sp->moving, memory_order_relaxed) == mv1 &&
		    LOAD(sp->move_bucket) == mb1)
			problem(c, "%s: a bucket move (bucket %u, entry %#llx) is left half done with "
				   "the lock free", what, mb1 - 1, (unsigned long long)mv1);
		if (moved || l1 || l2 || q1 != q2 || (q1 & 1) || te != te1 || tb != tb1 || ts != ts1)
			continue; /* a writer was active: its totals may lag its chains */
		if (te != entries || tb != bytes || ts != slots)
			problem(c, "%s: totals say %llu entries / %llu bytes / %llu expiry slots, "
				   "chains hold %llu / %llu / %llu",
				what, (unsigned long long)te, (unsigned long long)tb,
				(unsigned long long)ts, (unsigned long long)entries,
				(unsigned long long)bytes, (unsigned long long)slots);
	}
}

static void check_maps(struct ck *c)
{
	const struct seg_geom *g = c->g;
	for (uint32_t i = 0; i < g->max_maps; i++) {
		const struct seg_mapdir *d = seg_dir(c->s, g, i);
		uint32_t st = atomic_load_explicit((_Atomic uint32_t *)&d->state,
						   memory_order_acquire);
		if (st != MAP_FREE && st != MAP_LIVE && st != MAP_INIT) {
			problem(c, "map %u: unknown state %u", i, st);
			continue;
		}
		check_table_run(c, i, st);
		if (st == MAP_INIT && atomic_load_explicit(&d->dropping, memory_order_relaxed)) {
			/* Being dropped: its entries are still in use until emptied. */
			struct map_view v;
			if (shmmap__map_view_linked(c->s, g, i, &v) == 0) {
				char nm[32];
				snprintf(nm, sizeof nm, "#%u (being dropped)", i);
				c->views[c->nviews++] = v;
				check_chains(c, &v, nm);
			}
			continue;
		}
		if (st != MAP_LIVE)
			continue;
		c->r->maps++;
		char name[SHMMAP_NAME_MAX + 1];
		memcpy(name, d->name, sizeof name);
		if (memchr(name, '\0', sizeof name) == NULL || name[0] == '\0') {
			problem(c, "map %u: name is empty or not terminated", i);
			snprintf(name, sizeof name, "#%u", i);
		}
		for (uint32_t j = 0; j < i; j++) {
			const struct seg_mapdir *o = seg_dir(c->s, g, j);
			if (atomic_load_explicit((_Atomic uint32_t *)&o->state,
						 memory_order_acquire) == MAP_LIVE &&
			    strncmp(o->name, name, sizeof name) == 0)
				problem(c, "map %u: name '%s' is also map %u's", i, name, j);
		}
		struct map_view v;
		int rc = shmmap__map_view(c->s, g, i, &v);
		if (rc == -ENOENT)
			continue; /* dropped meanwhile */
		if (rc < 0) {
			problem(c, "map %u '%s': bad table geometry or offsets", i, name);
			continue;
		}
		c->views[c->nviews++] = v;
		check_chains(c, &v, name);
	}
}

/* Blocks named by the intent record of a slot in use are in flight (a
 * write between allocation and linking, or between unlinking and freeing):
 * referenced, not leaked.  Marked after the chains, silently. */
static void mark_intents(struct ck *c)
{
	for (uint32_t i = 0; i < c->g->max_clients; i++) {
		struct seg_slot *sl = seg_slot(c->s, c->g, i);
		if (atomic_load_explicit(&sl->state, memory_order_acquire) == SLOT_FREE)
			continue;
		/* b, spare, a: the order in which moves cannot hide a block
		 * (struct seg_intent). */
		for (uint32_t r = 0; r < 3 * SEG_INTENTS; r++) {
			struct seg_intent *in = &sl->intent[r / 3];
			uint64_t off = atomic_load(r % 3 == 0 ? &in->b : r % 3 == 1 ? &in->spare : &in->a);
			const char *why;
			uint64_t bit = off ? block_bit(c, off, &why) : NO_BITS;
			if (bit != NO_BITS)
				bit_set(c->reached, bit);
		}
	}
}

/* Second look at a block that seemed unreferenced: is it, by now, an entry
 * linked in its bucket of a live map, or a map's table? */
static bool referenced_now(struct ck *c, uint64_t off)
{
	const struct seg *s = c->s;
	for (uint32_t m = 0; m < c->g->max_maps; m++) {
		const struct seg_mapdir *d = seg_dir(s, c->g, m);
		if (LOAD(d->stripes_off) == off || (LOAD(d->arr[0].run) && LOAD(d->arr[0].off) == off) ||
		    (LOAD(d->arr[1].run) && LOAD(d->arr[1].off) == off))
			return true;
	}
	for (uint32_t i = 0; i < c->nviews; i++) {
		const struct map_view *v = &c->views[i];
		const struct seg_entry *e = shmmap__entry_at(s, v, off);
		if (!e)
			continue;
		if (shmmap__tbl_linked(s, v, off) ||
		    atomic_load_explicit(&v->stripes[ENT_HASH(atomic_load_explicit(&((struct seg_entry *)e)->meta,
								   memory_order_relaxed)) &
				(v->nstripes - 1)].moving,
					 memory_order_acquire) == off)
			return true;
	}
	return false;
}

static void find_leaks(struct ck *c)
{
	const struct seg_geom *g = c->g;
	for (uint32_t i = 0; i < g->npages; i++) {
		const struct seg_page *p = &c->pages[i];
		uint64_t base = c->bit_base[i];
		if (base == NO_BITS)
			continue;
		uint64_t poff = seg_page_off(g, i);
		if (p->kind == PAGE_RUN) {
			c->r->blocks_used++;
			if (bit_get(c->reached, base) || c->busy[i] || referenced_now(c, poff))
				continue;
			c->r->leaked++;
			problem(c, "leak: run of %u pages at page %u (offset %#llx) is allocated but "
				   "not referenced", p->run, i, (unsigned long long)poff);
			continue;
		}
		uint32_t size = shmmap__class_size(p->cls), n = carved_blocks(p);
		uint32_t npg = slab_whole(c, i);
		c->r->blocks_used += p->used;
		bool busy = c->busy[i];
		for (uint32_t d = 1; d < npg; d++)
			busy |= c->busy[i + d];
		/* Changed meanwhile, its free list is unknown, or its span is
		 * broken (reported by report_pages: which of its blocks could
		 * be referenced is unknown). */
		if (busy || c->fl_why[i] != FL_OK || !npg)
			continue;
		for (uint32_t k = 0; k < n; k++) {
			uint64_t off = poff + (uint64_t)k * size;
			if (bit_get(c->onfree, base + k) || bit_get(c->reached, base + k) ||
			    referenced_now(c, off))
				continue;
			c->r->leaked++;
			problem(c, "leak: block at offset %#llx (slab at page %u, class %u, %u B) "
				   "is allocated but not referenced",
				(unsigned long long)off, i, p->cls, size);
		}
	}
}

int shmmap__check(const struct seg *s, const struct seg_geom *gv, struct check_report *r)
{
	r->entries = r->bytes = r->blocks_used = r->leaked = r->maps = r->errors = 0;
	/* Follow the segment's growth, then walk a fixed view of it (a growth
	 * during the walk is not looked at). */
	shmmap__seg_sync(s);
	struct seg_geom gl = *gv;
	const struct seg_geom *g = &gl;
	struct ck c = {.s = s, .g = g, .r = r};
	if (!check_header(&c))
		return -SHMMAP_ECORRUPT;
	int rc = -ENOMEM;
	size_t np = g->npages;
	c.pages = malloc(np * sizeof *c.pages);
	c.bit_base = malloc(np * sizeof *c.bit_base);
	c.busy = calloc(np, 1);
	c.fl_len = calloc(np, sizeof *c.fl_len);
	c.fl_bad = calloc(np, sizeof *c.fl_bad);
	c.fl_why = calloc(np, 1);
	c.cls_used = calloc(g->nclasses, sizeof *c.cls_used);
	c.cls_pages = calloc(g->nclasses, sizeof *c.cls_pages);
	c.cls_partial = calloc(g->nclasses, sizeof *c.cls_partial);
	c.cls_busy = calloc(g->nclasses, 1);
	c.views = calloc(g->max_maps, sizeof *c.views);
	if (!c.pages || !c.bit_base || !c.busy || !c.fl_len || !c.fl_bad || !c.fl_why ||
	    !c.cls_used || !c.cls_pages || !c.cls_partial || !c.cls_busy || !c.views)
		goto out;

	check_lock(&c, &seg_hdr(s)->pool_lock, "pool lock");
	check_slots(&c);
	/* The snapshot: one copy of the descriptors, racing writers or not. */
	c.pool_free0 = LOAD(seg_hdr(s)->pool_free);
	memcpy(c.pages, seg_page(s, g, 0), np * sizeof *c.pages);
	layout_pages(&c);
	size_t mapbytes = (size_t)(c.nbits / 8 + 1);
	c.onfree = calloc(mapbytes, 1);
	c.reached = calloc(mapbytes, 1);
	if (!c.onfree || !c.reached)
		goto out;
	walk_free_lists(&c);
	check_maps(&c);
	mark_intents(&c);
	settle(&c);
	report_pages(&c);
	report_classes(&c);
	find_leaks(&c);
	rc = r->errors ? -SHMMAP_ECORRUPT : 0;
out:
	free(c.reached);
	free(c.onfree);
	free(c.views);
	free(c.cls_busy);
	free(c.cls_partial);
	free(c.cls_pages);
	free(c.cls_used);
	free(c.fl_why);
	free(c.fl_bad);
	free(c.fl_len);
	free(c.busy);
	free(c.bit_base);
	free(c.pages);
	return rc;
}
