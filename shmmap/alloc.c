/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * alloc.c - the allocator inside the segment.  No malloc'ed memory is ever
 * referenced from the segment: everything lives in the heap's pages.
 *
 * The heap is npages pages of SEG_PAGE bytes, each described by a struct
 * seg_page.  Two levels:
 *   - The page pool hands out runs of contiguous pages (first fit from a
 *     rover), under the header's pool_lock.  A run backs one large block
 *     (an entry bigger than the largest class) or a map's table.  While
 *     the coordinator empties a window of pages for a table of its own
 *     (evict.c), clients pass it over (seg_header.pool_hold, for
 *     POOL_HOLD_MS at most): its pages come free one at a time.
 *   - Size classes (48 B .. SEG_PAGE, at most about 11% apart) carve slabs
 *     into blocks.  A slab is one page, or for a class above 8 KiB up to
 *     SEG_SPAN_MAX contiguous pages whose blocks straddle the pages (a 33
 *     KiB value takes a block of 34952 B, seven to a slab of four pages,
 *     not a whole page of 64 KiB): its first page (PAGE_SLAB) describes
 *     it, the others (PAGE_SPAN) name how far back that head is.  Each slab
 *     keeps its own free list (offsets within the slab, stored in the free
 *     blocks) and a count of used blocks; the class keeps a doubly linked
 *     list of its slabs that have a free block ("partial"), under the class
 *     lock.  A slab whose last block is freed goes back to the pool at
 *     once, so memory freed by one size is reusable by any other.
 *
 * Crash safety: every allocation is recorded, under the lock that hands it
 * out, in the caller's record (an intent record's a, see internal.h), and
 * a free with a record clears it under the lock that takes the block back.
 * A process that dies holding a class or pool lock may leave the lists and
 * counters half-updated: waiters never take these locks over
 * (shmmap__lock_nosteal); the coordinator rebuilds the allocator from what
 * is in use (sweep.c).  CRASH_POINT() marks the stores for the crash tests.
 *
 * Growth (segment.c): only pages below this process's view g->npages are
 * handed out or followed; an index past it is looked at only after
 * shmmap__seg_sync (page_in).  When the heap has no room, the allocator
 * first follows a growth that happened meanwhile, then asks the
 * coordinator for more (s->grow, with no allocator lock held), and tries
 * again, a few times: a put never fails or evicts for lack of memory while
 * the segment can still grow.
 *
 * Lock order: stripe lock -> class lock -> pool lock.
 * Invariants (checked by check.c):
 *   - a SLAB page's used == carved - (length of its free list);
 *   - a SLAB page is on its class's partial list iff used < blocks per slab
 *     and it is not being drained (evict.c: page handover);
 *   - a SLAB head of class c is followed by class_pages[c] - 1 SPAN pages,
 *     the d-th of them with run == d;
 *   - a RUN head's run pages are followed by run - 1 CONT pages.
 * The class sizes are computed here, never read back from the segment, so
 * a scribbled class table cannot steer a block out of bounds.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "internal.h"

static uint32_t class_size[SEG_NCLASSES];
static uint8_t class_npages[SEG_NCLASSES];   /* pages in a slab */
static uint16_t class_nblocks[SEG_NCLASSES]; /* blocks in a slab */
static uint32_t nclasses;
/* The class of a request of n bytes, by (n + 7) / 8: one load. */
static uint8_t class_for[SEG_PAGE / SEG_ALIGN + 1];
static pthread_once_t class_once = PTHREAD_ONCE_INIT;

/*
 * The classes.  Up to SEG_PAGE / 8 (8 KiB), each class is the largest
 * multiple of 8 at most CLASS_STEP_PERMILLE above the one below (10.3%;
 * 8-byte rounding makes the first steps coarser, 12.5% at 56 B), so a block
 * wastes at most that much, header included, and a page holds a whole
 * number of blocks.  Above, a block as large as that would leave the end
 * of every page unused (a 36 KiB block leaves 28 KiB of its page), so
 * those classes are slabs of P pages (1, 2, 4 or 8) holding k blocks each,
 * of P * SEG_PAGE / k bytes (rounded down to 8).  span_class[] is a ladder
 * of such sizes from 8 KiB to SEG_PAGE in the 22 classes left, with steps
 * of at most 13.6% (a block wastes at most 11.8% of itself, header
 * included), and of those ladders the one with the smallest slabs (least
 * sum of P squared: a slab is what a class takes from the pool, and what
 * a handover empties).  P = 8 is unavoidable near the top: 8 * SEG_PAGE / 9
 * is the only size within 13.6% below SEG_PAGE.  (A ladder of single pages
 * had steps of up to 100%: a value of 32 KiB and its header took 64 KiB.)
 */
#define CLASS_STEP_PERMILLE 1103u
static const struct {
	uint32_t size, pages;
} span_class[] = {
	{8192, 1},   {9032, 4},   {10080, 2},  {11392, 4},  {12480, 4},  {13792, 4},
	{15416, 4},  {17472, 4},  {19416, 8},  {21840, 1},  {23824, 4},  {26208, 2},
	{29120, 4},  {32768, 1},  {34952, 8},  {37448, 4},  {40328, 8},  {43688, 2},
	{47656, 8},  {52424, 4},  {58248, 8},  {65536, 1},
};
#define NSPAN (sizeof span_class / sizeof span_class[0])
_Static_assert(NSPAN < SEG_NCLASSES, "room for the slab classes");
_Static_assert(SEG_SPAN_MAX == 8, "span_class[]'s slabs");

static void class_init(void)
{
	uint32_t s = SEG_MIN_BLOCK, n = 0;
	while (n < SEG_NCLASSES - NSPAN && s < span_class[0].size) {
		class_size[n++] = s;
		uint32_t next = (uint32_t)((uint64_t)(s + 1) * CLASS_STEP_PERMILLE / 1000u) &
				~(SEG_ALIGN - 1);
		s = next > s ? next : s + SEG_ALIGN;
	}
	for (uint32_t k = 0; k < n; k++) {
		class_npages[k] = 1;
		class_nblocks[k] = (uint16_t)(SEG_PAGE / class_size[k]);
	}
	for (uint32_t k = 0; k < NSPAN; k++, n++) {
		class_size[n] = span_class[k].size;
		class_npages[n] = (uint8_t)span_class[k].pages;
		class_nblocks[n] = (uint16_t)(span_class[k].pages * SEG_PAGE / span_class[k].size);
	}
	_Static_assert(SEG_NCLASSES <= 256, "class_for holds a byte");
	for (uint32_t u = 0, k = 0; u < sizeof class_for; u++) {
		while (class_size[k] < u * SEG_ALIGN) /* first class with size >= u * 8 */
			k++;
		class_for[u] = (uint8_t)k;
	}
	__atomic_store_n(&nclasses, n, __ATOMIC_RELEASE); /* last: see classes() */
}

static uint32_t classes(void)
{
	/* Set once, before any class is used (acquire: the tables with it). */
	uint32_t n = __atomic_load_n(&nclasses, __ATOMIC_ACQUIRE);
	if (__builtin_expect(n != 0, 1))
		return n;
	pthread_once(&class_once, class_init);
	return nclasses;
}

uint32_t shmmap__nclasses(void)
{
	return classes();
}

uint32_t shmmap__class_size(uint32_t cls)
{
	return cls < classes() ? class_size[cls] : 0;
}

uint32_t shmmap__class_pages(uint32_t cls)
{
	return cls < classes() ? class_npages[cls] : 0;
}

uint32_t shmmap__class_blocks(uint32_t cls)
{
	return cls < classes() ? class_nblocks[cls] : 0;
}

uint64_t shmmap__pages_for(size_t n)
{
	uint32_t nc = classes();
	if (n <= class_size[nc - 1])
		return class_npages[class_for[(n + SEG_ALIGN - 1) / SEG_ALIGN]];
	return ((uint64_t)n + SEG_PAGE - 1) / SEG_PAGE;
}

bool shmmap__slab_head(const struct seg *s, const struct seg_geom *g, uint32_t pi,
		       uint32_t *head)
{
	const struct seg_page *p = seg_page(s, g, pi);
	uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	if (kind == PAGE_SLAB) {
		*head = pi;
		return true;
	}
	uint32_t d = __atomic_load_n(&p->run, __ATOMIC_RELAXED);
	if (kind != PAGE_SPAN || d == 0 || d >= SEG_SPAN_MAX || d > pi)
		return false;
	const struct seg_page *h = seg_page(s, g, pi - d);
	uint32_t cls = __atomic_load_n(&h->cls, __ATOMIC_RELAXED);
	if (__atomic_load_n(&h->kind, __ATOMIC_RELAXED) != PAGE_SLAB || cls >= classes() ||
	    class_npages[cls] <= d)
		return false;
	*head = pi - d;
	return true;
}

int shmmap__class_of(const struct seg *s, const struct seg_geom *g, size_t n)
{
	(void)s;
	(void)g;
	uint32_t nc = classes();
	if (n > class_size[nc - 1])
		return -1;
	return class_for[(n + SEG_ALIGN - 1) / SEG_ALIGN];
}

void shmmap__alloc_format(const struct seg *s, const struct seg_geom *g)
{
	struct seg_header *h = seg_hdr(s);
	for (uint32_t i = 0; i < g->nclasses; i++) {
		struct seg_class *c = seg_class(s, g, i);
		memset(c, 0, sizeof *c);
		c->size = shmmap__class_size(i);
	}
	for (uint32_t i = 0; i < g->npages_max; i++)
		memset(seg_page(s, g, i), 0, sizeof(struct seg_page));
	h->pool_rover = 0;
	h->pool_free = g->npages;
}

/* ---- growth ----
 * Page indices come from shared memory: one at or past this process's
 * view (g->npages) is either corrupt or in pages the segment grew by since
 * this process last looked.  page_in() tells them apart by following the
 * growth first (shmmap__seg_sync); so no list or run that another process
 * built in new pages is ever mistaken for a corrupt one. */
static bool page_in(const struct seg *s, const struct seg_geom *g, uint64_t i)
{
	if (i < atomic_load_explicit(&g->npages, memory_order_acquire))
		return true;
	if (i >= g->npages_max || shmmap__seg_sync(s) < 0)
		return false;
	return i < atomic_load_explicit(&g->npages, memory_order_acquire);
}

/* Before the allocator says -ENOSPC: has the segment grown since this
 * process looked, or can it grow (the coordinator, through s->grow)?  True
 * if there may be room now (try again).  No lock is held here. */
#define GROW_TRIES 4
static bool grow_for(const struct seg *s, const struct seg_geom *g, uint64_t need)
{
	uint32_t seen = atomic_load_explicit(&g->npages, memory_order_acquire);
	uint32_t live = shmmap__seg_live(s, g);
	if (live > seen)
		return shmmap__seg_sync(s) == 0;
	if (!s->grow || live >= g->npages_max || need > g->npages_max ||
	    atomic_load_explicit(&seg_hdr(s)->grow_state, memory_order_relaxed) != SEG_GROW_OK)
		return false;
	if (s->grow(s, seen, (uint32_t)need) < 0)
		return false;
	return shmmap__seg_sync(s) == 0 &&
	       atomic_load_explicit(&g->npages, memory_order_acquire) > seen;
}

/* ---- page pool ---- */

void shmmap__pool_unhold(const struct seg *s)
{
	atomic_store_explicit(&seg_hdr(s)->pool_hold, 0, memory_order_relaxed);
}

/* The window the coordinator holds, if a client must pass it over: [*lo,
 * *hi) of pages, else lo == hi. */
static void pool_held(const struct seg_header *h, const struct lock_ctx *c, uint32_t *lo,
		      uint32_t *hi)
{
	*lo = *hi = 0;
	uint32_t first = atomic_load_explicit(&h->pool_hold, memory_order_acquire);
	if (!first || c->owner == LOCK_OWNER_COORD)
		return;
	uint32_t t = atomic_load_explicit(&h->pool_hold_t, memory_order_relaxed);
	if ((uint32_t)shmmap__mono_ms() - t > POOL_HOLD_MS)
		return;
	*lo = first - 1;
	*hi = *lo + atomic_load_explicit(&h->pool_hold_n, memory_order_relaxed);
}

/* Under pool_lock: find a run of n free pages; index + 1, or 0.  A
 * client (c) passes over the window the coordinator holds. */
static uint32_t pool_find(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			  uint32_t n)
{
	struct seg_header *h = seg_hdr(s);
	if (h->pool_free < n)
		return 0;
	/* The pages this process knows of (a later growth is found by the
	 * caller's retry, after shmmap__seg_sync). */
	const uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	if (n > np)
		return 0;
	uint32_t lo, hi;
	pool_held(h, c, &lo, &hi);
	/* First fit from the rover, wrapping once; a run may not wrap around
	 * the end of the heap, so the run length restarts at 0.  n - 1 extra
	 * steps find a run that straddles the rover. */
	uint32_t start = h->pool_rover < np ? h->pool_rover : 0, len = 0, found = 0;
	for (uint64_t k = 0; k < (uint64_t)np + n - 1; k++) {
		uint32_t i = (uint32_t)((start + k) % np);
		if (i == 0)
			len = 0;
		if (seg_page(s, g, i)->kind != PAGE_FREE || (i >= lo && i < hi)) {
			len = 0;
			continue;
		}
		if (++len == n) {
			found = i - n + 2;
			break;
		}
	}
	return found;
}

/* Under pool_lock: the found run of n pages (pool_find) leaves the pool. */
static void pool_taken(const struct seg *s, const struct seg_geom *g, uint32_t first, uint32_t n)
{
	struct seg_header *h = seg_hdr(s);
	const uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	h->pool_free -= n;
	h->pool_rover = first + n < np ? first + n : 0;
	CRASH_POINT();
}

/* Under pool_lock: write pages first + 1 .. first + n - 1 of a run (kind
 * PAGE_CONT) or a slab (PAGE_SPAN, each naming how far back its head is)
 * taken from the pool, before its head. */
static void tail_pages(const struct seg *s, const struct seg_geom *g, uint32_t first, uint32_t n,
		       uint16_t kind)
{
	for (uint32_t i = 1; i < n; i++) {
		struct seg_page *q = seg_page(s, g, first + i);
		memset(q, 0, sizeof *q);
		q->run = kind == PAGE_SPAN ? i : 0;
		q->kind = kind;
	}
}

/* Under pool_lock: find and take a run of n free pages; index + 1, or 0. */
static uint32_t pool_take(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			  uint32_t n)
{
	uint32_t found = pool_find(s, g, c, n);
	if (!found)
		return 0;
	uint32_t first = found - 1;
	/* CONT pages first, the head last: until the head says RUN, a crash
	 * leaves CONT pages that no run owns, which the sweep frees. */
	tail_pages(s, g, first, n, PAGE_CONT);
	struct seg_page *p = seg_page(s, g, first);
	memset(p, 0, sizeof *p);
	p->run = n;
	p->kind = PAGE_RUN;
	CRASH_POINT();
	pool_taken(s, g, first, n);
	return found;
}

/* Under the class lock of cls and pool_lock: take a slab of class cls
 * from the pool, stamped due (evict.c); its head's index + 1, or 0.  The
 * SPAN pages first, the head last: until the head says SLAB, a crash leaves
 * SPAN pages that no slab owns, which the sweep frees. */
static uint32_t pool_take_slab(const struct seg *s, const struct seg_geom *g,
			       const struct lock_ctx *c, uint32_t cls, uint32_t due)
{
	uint32_t n = class_npages[cls], found = pool_find(s, g, c, n);
	if (!found)
		return 0;
	uint32_t first = found - 1;
	tail_pages(s, g, first, n, PAGE_SPAN);
	if (n > 1)
		CRASH_POINT();
	struct seg_page *p = seg_page(s, g, first);
	memset(p, 0, sizeof *p);
	p->cls = (uint16_t)cls;
	p->drain = 0;
	p->due = due;
	p->kind = PAGE_SLAB;
	CRASH_POINT();
	pool_taken(s, g, first, n);
	return found;
}

/* Under pool_lock: give the run or slab at first back. */
static void pool_give(const struct seg *s, const struct seg_geom *g, uint32_t first)
{
	struct seg_header *h = seg_hdr(s);
	struct seg_page *p = seg_page(s, g, first);
	uint32_t n = 1;
	if (p->kind == PAGE_RUN)
		n = p->run;
	else if (p->kind == PAGE_SLAB && p->cls < classes())
		n = class_npages[p->cls];
	if (n == 0 || !page_in(s, g, (uint64_t)first + n - 1))
		n = 1; /* corrupt run length: free what surely is ours */
	for (uint32_t i = 0; i < n; i++) {
		struct seg_page *q = seg_page(s, g, first + i);
		memset(q, 0, sizeof *q);
		q->kind = PAGE_FREE;
		CRASH_POINT();
	}
	h->pool_free += n;
	CRASH_POINT();
}

static int alloc_pages_once(const struct seg *s, const struct seg_geom *g,
			    const struct lock_ctx *c, uint32_t n, uint32_t *first)
{
	struct seg_header *h = seg_hdr(s);
	int rc = shmmap__lock_nosteal(&h->pool_lock, c);
	if (rc < 0)
		return rc;
	CRASH_POINT();
	uint32_t found = pool_take(s, g, c, n);
	shmmap__unlock(&h->pool_lock);
	if (!found)
		return -ENOSPC;
	*first = found - 1;
	return 0;
}

int shmmap__alloc_pages(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			uint32_t n, uint32_t *first)
{
	if (n == 0 || n > g->npages_max)
		return -ENOSPC;
	int rc;
	for (int k = 0; (rc = alloc_pages_once(s, g, c, n, first)) == -ENOSPC && k < GROW_TRIES &&
			grow_for(s, g, n);
	     k++)
		;
	return rc;
}

int shmmap__free_pages(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		       uint32_t first, _Atomic uint64_t *rec)
{
	struct seg_header *h = seg_hdr(s);
	if (!page_in(s, g, first))
		return 0;
	int rc = shmmap__lock_nosteal(&h->pool_lock, c);
	if (rc < 0)
		return rc;
	CRASH_POINT();
	if (!rec || atomic_load_explicit(rec, memory_order_relaxed) == seg_page_off(g, first)) {
		pool_give(s, g, first);
		if (rec) {
			atomic_store_explicit(rec, 0, memory_order_relaxed);
			CRASH_POINT();
		}
	}
	shmmap__unlock(&h->pool_lock);
	return 0;
}

/* ---- size classes ---- */

static uint32_t blocks_per_slab(uint32_t cls)
{
	return class_nblocks[cls];
}

static void partial_push(const struct seg *s, const struct seg_geom *g, struct seg_class *c,
			 uint32_t pi)
{
	struct seg_page *p = seg_page(s, g, pi);
	p->prev = 0;
	p->next = c->partial;
	if (c->partial && page_in(s, g, c->partial - 1))
		seg_page(s, g, c->partial - 1)->prev = pi + 1;
	c->partial = pi + 1;
	CRASH_POINT();
}

static void partial_remove(const struct seg *s, const struct seg_geom *g, struct seg_class *c,
			   uint32_t pi)
{
	struct seg_page *p = seg_page(s, g, pi);
	if (p->prev && page_in(s, g, p->prev - 1))
		seg_page(s, g, p->prev - 1)->next = p->next;
	else
		c->partial = p->next;
	if (p->next && page_in(s, g, p->next - 1))
		seg_page(s, g, p->next - 1)->prev = p->prev;
	p->prev = p->next = 0;
	CRASH_POINT();
}

static int alloc_once(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		      size_t n, _Atomic uint64_t *rec, bool no_page);

int shmmap__alloc_block(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			size_t n, _Atomic uint64_t *rec)
{
	if (shmmap__class_of(s, g, n) < 0)
		return -ENOSPC;
	return alloc_once(s, g, c, n, rec, true);
}

int shmmap__alloc(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		  size_t n, _Atomic uint64_t *rec)
{
	uint64_t pages = shmmap__pages_for(n);
	int rc;
	for (int k = 0; (rc = alloc_once(s, g, c, n, rec, false)) == -ENOSPC && k < GROW_TRIES &&
			grow_for(s, g, pages);
	     k++)
		;
	return rc;
}

static int alloc_once(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		      size_t n, _Atomic uint64_t *rec, bool no_page)
{
	int ci = shmmap__class_of(s, g, n);
	if (ci < 0) {
		/* A large block: a run of pages, recorded under the pool lock. */
		uint64_t pages = (n + SEG_PAGE - 1) / SEG_PAGE;
		struct seg_header *h = seg_hdr(s);
		if (pages > g->npages_max)
			return -ENOSPC;
		int rc = shmmap__lock_nosteal(&h->pool_lock, c);
		if (rc < 0)
			return rc;
		uint32_t found = pool_take(s, g, c, (uint32_t)pages);
		if (found) {
			atomic_store_explicit(rec, seg_page_off(g, found - 1), memory_order_relaxed);
			CRASH_POINT();
		}
		shmmap__unlock(&h->pool_lock);
		return found ? 0 : -ENOSPC;
	}
	uint32_t cls = (uint32_t)ci;
	struct seg_class *sc = seg_class(s, g, cls);
	uint32_t size = class_size[cls], per = blocks_per_slab(cls), npg = class_npages[cls];
	int rc = shmmap__lock_nosteal(&sc->lock, c);
	if (rc < 0)
		return rc;
	CRASH_POINT();
	rc = -ENOSPC;
	uint32_t pi1 = sc->partial;
	if ((pi1 == 0 || !page_in(s, g, pi1 - 1)) && no_page)
		goto out; /* only a page the class has */
	if (pi1 == 0 || !page_in(s, g, pi1 - 1)) {
		/* No slab with room (or a corrupt list head): carve a new one.
		 * Nested pool lock (class -> pool is the order).  Its entries
		 * will be the class's newest: its hand passes the slab over until
		 * the class has handed out as many blocks again as it will have
		 * (evict.c). */
		struct seg_header *h = seg_hdr(s);
		int prc = shmmap__lock_nosteal(&h->pool_lock, c);
		if (prc < 0) {
			rc = prc;
			goto out;
		}
		pi1 = pool_take_slab(s, g, c, cls,
				     sc->allocs + (uint32_t)((sc->pages / npg + 1) * per));
		shmmap__unlock(&h->pool_lock);
		if (pi1 == 0)
			goto out;
		if (sc->pages == 0) /* a class starts young (evict.c: its age) */
			atomic_store_explicit(&sc->evict_t, shmmap__itime(), memory_order_relaxed);
		sc->pages += npg;
		sc->partial = 0;
		partial_push(s, g, sc, pi1 - 1);
	}
	uint32_t pi = pi1 - 1;
	struct seg_page *p = seg_page(s, g, pi);
	uint64_t poff = seg_page_off(g, pi);
	uint32_t boff;
	if (p->free) {
		boff = p->free - 1;
		/* The head and the link it holds must each name a carved block of
		 * this page: checked before either is followed. */
		if (boff % size != 0 || boff / size >= p->carved || boff / size >= per)
			goto out; /* corrupt free list: refuse rather than hand out garbage */
		uint32_t next = *(uint32_t *)seg_ptr(s, poff + boff);
		if (next && ((next - 1) % size != 0 || (next - 1) / size >= p->carved ||
			     (next - 1) / size >= per))
			goto out;
		p->free = next;
	} else if (p->carved < per) {
		boff = p->carved++ * size;
	} else {
		goto out; /* a full page on the partial list: corrupt, refuse */
	}
	CRASH_POINT();
	/* Read without the lock by evict.c (page_due). */
	__atomic_store_n(&sc->allocs, sc->allocs + 1, __ATOMIC_RELAXED);
	shmmap__evict_counted(s, g, cls);
	p->used++;
	sc->used++;
	CRASH_POINT();
	if (p->used == per)
		partial_remove(s, g, sc, pi);
	atomic_store_explicit(rec, poff + boff, memory_order_relaxed);
	CRASH_POINT();
	rc = 0;
out:
	shmmap__unlock(&sc->lock);
	return rc;
}

/* off names no live block (a scribbled entry): nothing to free, but the
 * record that names it is settled, or its writer would keep it forever.
 * (While a record names a block, nobody else frees it: so a record that
 * still names off here means off was never a live block.) */
static int forget(_Atomic uint64_t *rec, uint64_t off)
{
	if (rec)
		atomic_compare_exchange_strong(rec, &off, 0);
	return 0;
}

int shmmap__free(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		 uint64_t off, _Atomic uint64_t *rec)
{
	if (off < g->heap_off || !page_in(s, g, (off - g->heap_off) / SEG_PAGE))
		return forget(rec, off);
	uint32_t pi = (uint32_t)((off - g->heap_off) / SEG_PAGE);
	struct seg_page *p = seg_page(s, g, pi);
	uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	if (kind == PAGE_RUN)
		return off == seg_page_off(g, pi) ? shmmap__free_pages(s, g, c, pi, rec)
						  : forget(rec, off);
	/* The slab's head (read again under its class lock below). */
	if (!shmmap__slab_head(s, g, pi, &pi))
		return forget(rec, off);
	p = seg_page(s, g, pi);
	uint64_t poff = seg_page_off(g, pi);
	uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
	if (__atomic_load_n(&p->kind, __ATOMIC_RELAXED) != PAGE_SLAB || cls >= classes())
		return forget(rec, off);
	struct seg_class *sc = seg_class(s, g, cls);
	uint32_t size = class_size[cls], per = blocks_per_slab(cls);
	uint32_t boff = (uint32_t)(off - poff);
	int rc = shmmap__lock_nosteal(&sc->lock, c);
	if (rc < 0)
		return rc;
	CRASH_POINT();
	if (rec && atomic_load_explicit(rec, memory_order_relaxed) != off) {
		shmmap__unlock(&sc->lock);
		return 0; /* freed already, by a recoverer */
	}
	if (p->kind != PAGE_SLAB || p->cls != cls || boff % size != 0 || boff / size >= per ||
	    p->used == 0) {
		forget(rec, off);
		shmmap__unlock(&sc->lock);
		return 0;
	}
	bool was_full = (p->used == per);
	*(uint32_t *)seg_ptr(s, off) = p->free;
	CRASH_POINT();
	p->free = boff + 1;
	CRASH_POINT();
	p->used--;
	sc->used--;
	CRASH_POINT();
	if (was_full && !p->drain) /* a page being emptied stays off the list */
		partial_push(s, g, sc, pi);
	if (rec) {
		atomic_store_explicit(rec, 0, memory_order_relaxed);
		CRASH_POINT();
	}
	if (p->used == 0) {
		/* Empty: back to the pool, usable by any size from now on.  The
		 * pool lock is nested (class -> pool); if it cannot be had, the
		 * slab stays an empty slab of this class (still usable). */
		struct seg_header *h = seg_hdr(s);
		if (shmmap__lock_nosteal(&h->pool_lock, c) == 0) {
			if (!p->drain)
				partial_remove(s, g, sc, pi);
			sc->pages -= class_npages[cls];
			CRASH_POINT();
			pool_give(s, g, pi);
			shmmap__unlock(&h->pool_lock);
		}
	}
	shmmap__unlock(&sc->lock);
	return 0;
}

int shmmap__block_class(const struct seg *s, const struct seg_geom *g, uint64_t off)
{
	uint32_t pi;
	if (off < g->heap_off || !page_in(s, g, (off - g->heap_off) / SEG_PAGE) ||
	    !shmmap__slab_head(s, g, (uint32_t)((off - g->heap_off) / SEG_PAGE), &pi))
		return -1;
	const struct seg_page *p = seg_page(s, g, pi);
	uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
	return __atomic_load_n(&p->kind, __ATOMIC_RELAXED) == PAGE_SLAB && cls < classes()
		       ? (int)cls : -1;
}

bool shmmap__block_fits(const struct seg *s, const struct seg_geom *g, uint64_t off, size_t n)
{
	uint32_t nc = classes();
	if (n > class_size[nc - 1] || off < g->heap_off)
		return false;
	uint32_t c = class_for[(n + SEG_ALIGN - 1) / SEG_ALIGN], size = class_size[c];
	uint64_t rel = off - g->heap_off;
	uint32_t pi = (uint32_t)(rel / SEG_PAGE);
	if (!page_in(s, g, pi))
		return false;
	const struct seg_page *p = seg_page(s, g, pi);
	uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	if (kind == PAGE_SPAN) {
		/* A block of a slab of several pages: its head says (a head
		 * of class c has c's pages: at + size <= them puts the block
		 * inside the slab). */
		uint32_t d = __atomic_load_n(&p->run, __ATOMIC_RELAXED);
		if (d == 0 || d >= SEG_SPAN_MAX || d > pi)
			return false;
		pi -= d;
		p = seg_page(s, g, pi);
		kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	}
	uint64_t at = rel - (uint64_t)pi * SEG_PAGE;
	return kind == PAGE_SLAB && __atomic_load_n(&p->cls, __ATOMIC_RELAXED) == c &&
	       at % size == 0 && at + size <= (uint64_t)class_npages[c] * SEG_PAGE;
}

size_t shmmap__block_size(const struct seg *s, const struct seg_geom *g, uint64_t off)
{
	if (off < g->heap_off || !page_in(s, g, (off - g->heap_off) / SEG_PAGE))
		return 0;
	uint32_t pi = (uint32_t)((off - g->heap_off) / SEG_PAGE);
	const struct seg_page *p = seg_page(s, g, pi);
	uint32_t kind = __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
	if (kind == PAGE_RUN) {
		uint32_t run = __atomic_load_n(&p->run, __ATOMIC_RELAXED);
		return off == seg_page_off(g, pi) && run && page_in(s, g, (uint64_t)pi + run - 1)
			       ? (size_t)run * SEG_PAGE : 0;
	}
	if (!shmmap__slab_head(s, g, pi, &pi))
		return 0;
	p = seg_page(s, g, pi);
	uint64_t at = off - seg_page_off(g, pi);
	uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
	if (__atomic_load_n(&p->kind, __ATOMIC_RELAXED) == PAGE_SLAB && cls < classes() &&
	    at % class_size[cls] == 0 && at / class_size[cls] < blocks_per_slab(cls))
		return class_size[cls];
	return 0;
}

/* ---- draining: a page emptied for another class (evict.c) ---- */

int shmmap__page_drain(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		       uint32_t pi, uint32_t cls)
{
	if (cls >= classes() || !page_in(s, g, pi))
		return -EINVAL;
	struct seg_class *sc = seg_class(s, g, cls);
	int rc = shmmap__lock_nosteal(&sc->lock, c);
	if (rc < 0)
		return rc;
	struct seg_page *p = seg_page(s, g, pi);
	rc = -EBUSY;
	if (p->kind == PAGE_SLAB && p->cls == cls && p->drain == 0 && p->used > 0) {
		if (p->used < blocks_per_slab(cls))
			partial_remove(s, g, sc, pi);
		p->drain = c->owner;
		CRASH_POINT();
		rc = 0;
	} else if (p->kind == PAGE_SLAB && p->cls == cls && p->drain == 0 && p->used == 0) {
		/* An empty slab its last free could not give back (the pool
		 * lock was busy): given now, which is what the drain is for
		 * (the caller sees the page gone from the class).  A window of
		 * pages for a large value failed on such a page, as if another
		 * evictor were emptying it. */
		struct seg_header *h = seg_hdr(s);
		if (shmmap__lock_nosteal(&h->pool_lock, c) == 0) {
			partial_remove(s, g, sc, pi);
			sc->pages -= class_npages[cls];
			CRASH_POINT();
			pool_give(s, g, pi);
			shmmap__unlock(&h->pool_lock);
			rc = 0;
		}
	}
	shmmap__unlock(&sc->lock);
	return rc;
}

/* Under the class lock: end owner's drain of page pi, if it is still one. */
static void undrain_locked(const struct seg *s, const struct seg_geom *g, struct seg_class *sc,
			   uint32_t cls, uint32_t pi, uint32_t owner)
{
	struct seg_page *p = seg_page(s, g, pi);
	if (p->kind != PAGE_SLAB || p->cls != cls || p->drain != owner)
		return; /* emptied (back in the pool) and perhaps carved anew */
	p->drain = 0;
	CRASH_POINT();
	if (p->used < blocks_per_slab(cls))
		partial_push(s, g, sc, pi);
}

/* End owner's drain of page pi of class cls (valid), under its class lock. */
static int undrain(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		   uint32_t pi, uint32_t cls, uint32_t owner)
{
	struct seg_class *sc = seg_class(s, g, cls);
	int rc = shmmap__lock_nosteal(&sc->lock, c);
	if (rc < 0)
		return rc;
	undrain_locked(s, g, sc, cls, pi, owner);
	shmmap__unlock(&sc->lock);
	return 0;
}

int shmmap__page_undrain(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			 uint32_t pi, uint32_t cls)
{
	if (cls >= classes() || !page_in(s, g, pi))
		return -EINVAL;
	return undrain(s, g, c, pi, cls, c->owner);
}

int shmmap__alloc_undrain(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			  uint32_t owner)
{
	uint32_t np = atomic_load_explicit(&g->npages, memory_order_acquire);
	for (uint32_t i = 0; i < np; i++) {
		const struct seg_page *p = seg_page(s, g, i);
		uint32_t cls = __atomic_load_n(&p->cls, __ATOMIC_RELAXED);
		if (__atomic_load_n(&p->kind, __ATOMIC_RELAXED) != PAGE_SLAB ||
		    __atomic_load_n(&p->drain, __ATOMIC_RELAXED) != owner || cls >= classes())
			continue;
		int rc = undrain(s, g, c, i, cls, owner);
		if (rc < 0)
			return rc;
	}
	return 0;
}
