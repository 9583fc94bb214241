/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * segment.c - the shared segment: its geometry, creation (shm_open O_EXCL,
 * ftruncate + commit of the memory (seg_commit) and its collapse into
 * 2 MiB pages (seg_collapse), format), adoption of an existing one,
 * mapping at the agreed base with MAP_FIXED_NOREPLACE (anywhere else when
 * that range is taken in this process, at a 2 MiB boundary), and online
 * growth (see "growth").
 *
 * Invariants:
 *   - The geometry is a pure function of (max_size, max_clients, max_maps):
 *     shmmap__seg_validate() recomputes it and refuses a header whose
 *     offsets differ, so every later bounds check can trust seg_geom.
 *   - The magic is written last when formatting (release store), so a
 *     segment whose formatting was interrupted never validates.
 *   - Offsets are checked against the length mapped in this process.
 *   - The object is never shorter than heap_off + npages_live pages, and
 *     never shrinks; a process never makes more of it accessible than the
 *     header's npages_live said, checked against the object's length.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

uint64_t shmmap__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t shmmap__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t shmmap__mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint32_t shmmap__itime(void)
{
	return shmmap__itime_of(CLOCK_MONOTONIC);
}

int shmmap__proc_start_time(pid_t pid, uint64_t *out)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	int e = errno;
	close(fd);
	if (n <= 0)
		return n < 0 ? -e : -EIO;
	buf[n] = '\0';
	/* comm may hold spaces and parentheses: fields restart after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EIO;
	p++;
	/* A zombie will never unlock anything: it is gone.  But the leader of
	 * a thread group that exited with pthread_exit() is a zombie too while
	 * its other threads run: gone only if no other thread is left. */
	bool zombie = p[0] == ' ' && (p[1] == 'Z' || p[1] == 'X');
	/* After ')' come fields 3 (state) .. ; num_threads is field 20,
	 * starttime field 22. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EIO;
		if (field == 19 && zombie && strtol(p + 1, NULL, 10) <= 1)
			return -ESRCH;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (errno || end == p + 1)
		return -EIO;
	*out = v;
	return 0;
}

int shmmap__seg_layout(const struct seg_params *p, struct seg_geom *g)
{
	if (p->max_clients == 0 || p->max_clients > SEG_MAX_CLIENTS_LIMIT ||
	    p->max_maps == 0 || p->max_maps > SEG_MAX_MAPS_LIMIT)
		return -EINVAL;
	uint64_t max = p->max_size ? p->max_size : p->size;
	if (max < p->size || max > SEG_MAX_SIZE_LIMIT)
		return -EINVAL;
	memset(g, 0, sizeof *g);
	g->max_clients = p->max_clients;
	g->max_maps = p->max_maps;
	g->nclasses = shmmap__nclasses();
	g->max_size = max;
	g->slots_off = sizeof(struct seg_header);
	g->dir_off = align_up(g->slots_off + (uint64_t)p->max_clients * sizeof(struct seg_slot), 64);
	g->ctr_off = align_up(g->dir_off + (uint64_t)p->max_maps * sizeof(struct seg_mapdir), 64);
	g->classes_off = align_up(g->ctr_off + (uint64_t)p->max_clients * seg_ctr_stride(g), 64);
	g->pages_off = g->classes_off + SEG_NCLASSES * sizeof(struct seg_class);
	if (max <= g->pages_off)
		return -EINVAL;
	/* Largest npages whose descriptors plus pages fit in max_size. */
	uint64_t npages = (max - g->pages_off) / (SEG_PAGE + sizeof(struct seg_page));
	while (npages > 0 &&
	       align_up(g->pages_off + npages * sizeof(struct seg_page), SEG_PAGE) +
			       npages * SEG_PAGE > max)
		npages--;
	if (npages < 2 || npages > UINT32_MAX / 2)
		return -EINVAL;
	g->npages_max = (uint32_t)npages;
	g->heap_off = align_up(g->pages_off + npages * sizeof(struct seg_page), SEG_PAGE);
	/* The pages the initial size holds (the fixed regions are laid out
	 * for max_size, so a small start with a large maximum needs room for
	 * max_size's page descriptors). */
	uint64_t live = p->size > g->heap_off ? (p->size - g->heap_off) / SEG_PAGE : 0;
	if (live < 2)
		return -EINVAL;
	g->npages = live < npages ? (uint32_t)live : (uint32_t)npages;
	return 0;
}

void shmmap__seg_unmap(struct seg *s)
{
	if (s->base)
		munmap(s->base, s->reserved ? s->reserved : s->len);
	if (s->fd >= 0)
		close(s->fd);
	s->base = NULL;
	s->fd = -1;
}

static int seg_prot(const struct seg *s)
{
	return PROT_READ | (s->rdonly ? 0 : PROT_WRITE);
}

/* ---- growth ----
 *
 * Every process maps the object once for max_size (header.max_size, the
 * layout's size), at the agreed base or anywhere: PROT_NONE beyond what it
 * may touch.  s->len is what it has made accessible, by mprotect of its
 * own reservation (never a new mapping over another: no window where a
 * page another thread reads is unmapped), so every bound check stays exact
 * and a torn or hostile offset past it fails, as before.
 *
 * The coordinator grows (shmmap__seg_grow), in this order: extend and
 * commit the object (posix_fallocate of the new range: on tmpfs that takes
 * the memory now, or fails with ENOSPC and changes nothing), make the
 * range accessible in its own mapping, then, under the pool lock, mark the
 * new page descriptors free, add them to pool_free, and publish
 * npages_live with a release store.  Killed anywhere before the store, it
 * leaves an object longer than npages_live says: harmless slack that the
 * next step covers again; after it, the new pages are the pool's.  A
 * process that sees npages_live beyond its view (seg_ok's slow path, the
 * allocator before it gives up) calls shmmap__seg_sync, which checks the
 * new size against its reservation and the object's length (fstat), then
 * mprotects the new range and publishes len and npages (atomic maximum).
 */

uint32_t shmmap__seg_live(const struct seg *s, const struct seg_geom *g)
{
	uint32_t live = atomic_load_explicit(&seg_hdr(s)->npages_live, memory_order_acquire);
	return live > g->npages_max ? g->npages_max : live;
}

uint64_t shmmap__seg_cur_size(const struct seg *s, const struct seg_geom *g)
{
	return g->heap_off + (uint64_t)shmmap__seg_live(s, g) * SEG_PAGE;
}

static void max_store(_Atomic size_t *v, size_t want)
{
	size_t cur = atomic_load_explicit(v, memory_order_relaxed);
	while (cur < want &&
	       !atomic_compare_exchange_weak_explicit(v, &cur, want, memory_order_release,
						      memory_order_relaxed))
		;
}

/* Make [0, want) accessible here (want within the reservation and the
 * object). */
static int seg_extend(const struct seg *cs, uint64_t want)
{
	struct seg *s = (struct seg *)cs; /* len is this process's, atomic */
	size_t have = atomic_load_explicit(&s->len, memory_order_acquire);
	if (want <= have)
		return 0;
	if (!s->reserved || want > s->reserved)
		return -SHMMAP_ESEGSIZE;
	struct stat st;
	if (fstat(s->fd, &st) < 0 || (uint64_t)st.st_size < want)
		return -SHMMAP_ESEGSIZE; /* touching it would SIGBUS */
	uint64_t from = have & ~(uint64_t)(4096 - 1);
	if (mprotect(s->base + from, want - from, seg_prot(s)) < 0)
		return -SHMMAP_ESEGSIZE;
	max_store(&s->len, want);
	return 0;
}

int shmmap__seg_sync(const struct seg *s)
{
	struct seg_geom *g = s->geom;
	if (!g)
		return 0;
	uint32_t live = atomic_load_explicit(&seg_hdr(s)->npages_live, memory_order_acquire);
	uint32_t seen = atomic_load_explicit(&g->npages, memory_order_acquire);
	if (live <= seen)
		return 0;
	if (live > g->npages_max)
		return -SHMMAP_ESEGSIZE;
	int rc = seg_extend(s, g->heap_off + (uint64_t)live * SEG_PAGE);
	if (rc < 0)
		return rc;
	while (seen < live &&
	       !atomic_compare_exchange_weak_explicit(&g->npages, &seen, live, memory_order_release,
						      memory_order_relaxed))
		;
	return 0;
}

bool shmmap__seg_ok_slow(const struct seg *s, uint64_t off, uint64_t n, uint64_t align)
{
	if (off == 0 || (off & (align - 1)) != 0 || off >= s->reserved ||
	    n > s->reserved - off)
		return false;
	if (shmmap__seg_sync(s) < 0)
		return false;
	size_t len = atomic_load_explicit(&s->len, memory_order_acquire);
	return off < len && n <= len - off;
}

#define HUGE_PAGE (UINT64_C(2) << 20)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; older kernels say EINVAL */
#endif

/*
 * Collapse into 2 MiB pages.  Most systems do not give a tmpfs huge pages
 * on advice (/dev/shm mounted without huge=, shmem_enabled = never), but
 * since Linux 6.1 MADV_COLLAPSE makes the object's pages 2 MiB folios
 * whatever those settings say (all but shmem_enabled = deny), and every
 * mapping of the object at a 2 MiB-aligned address (base) then maps them
 * with one PMD each, without advice.  A collapse copies each block's 512
 * small pages into a newly allocated 2 MiB page, so it costs time and
 * needs contiguous free memory: it is done while the segment is committed,
 * bounded, and a failure only leaves the segment in small pages.
 *
 * The rule: the whole 2 MiB blocks of the committed range, in chunks of
 * COLLAPSE_CHUNK, in order; stop at the first chunk that fails (EINVAL: a
 * kernel without MADV_COLLAPSE, or shmem_enabled = deny; ENOMEM/EAGAIN/
 * EBUSY: no contiguous memory, a page busy, a cgroup limit: the next chunk
 * would most likely fail the same, after as long), when the time budget
 * is spent, or when a put waits for the step (the coordinator's yield
 * word); both are checked before each chunk, so overrun by one chunk, and
 * by the block a growth starts inside (below), at most.  Budgets, from
 * measurements on Linux 6.18 (a 2-core VM, 24 GiB, shmem_enabled = never):
 * 512 MiB collapsed in 0.13-0.14 s, 256 MiB in 0.10-0.72 s, 2 GiB in
 * 1.4-2.8 s, a 32 MiB chunk in 0.01-0.13 s (slow when the allocator hands
 * out memory not touched for long: so chunks of 8 MiB, that a waiting put
 * stops soon); a second at creation (only the
 * coordinator's start waits on it); on a growth, the coordinator's choice
 * (shmmap__seg_grow's collapse_ms): none for a step a put waits on, a
 * budget for the steps it takes ahead of need, 32 MiB at a time
 * (coordinator.c).  What a budget leaves stays in small pages.
 *
 * The chunk's page table entries in the scratch mapping are zapped first
 * (MADV_DONTNEED: on a shared mapping it only unmaps; the pages stay in the
 * object): a collapse of pages nobody maps takes a tenth of the time
 * (0.14 s against 0.6-1.7 s for 512 MiB).  A block that is already one
 * 2 MiB page (a tmpfs that gave them to the populate) is a no-op for the
 * kernel (0.4 ms for 64 MiB measured), so there is nothing to skip.
 *
 * A growth that starts inside a 2 MiB block (from not a multiple of 2 MiB)
 * leaves that block's lower part live: other processes read it, write it,
 * take futex locks in it meanwhile.  Collapsing it is safe, and done last,
 * alone, whatever is left of the budget (it is one block), its result
 * ignored (a page busy there must not cost the rest):
 * the kernel locks each small page and unmaps it from every process (TLB
 * flushed) before copying it, so a store or a locked instruction lands in
 * the old page before the copy or faults and waits for the new one; a page
 * pinned by someone (I/O, a futex call holding it for an instant) makes it
 * fail and roll back (EAGAIN), nothing changed.  Futex keys of shared
 * mappings are the inode and the offset, not the physical page, so a
 * waiter asleep on a word there is woken as before.  khugepaged does the
 * same on live shmem, and compaction migrates any page at any time.
 */
#define COLLAPSE_CHUNK (UINT64_C(8) << 20)
#define COLLAPSE_CREATE_MS 1000u

/* Collapse and its zap of one range of the scratch mapping; 0 or -errno. */
static int collapse_range(unsigned char *at, uint64_t n)
{
	(void)madvise(at, n, MADV_DONTNEED);
	return madvise(at, n, MADV_COLLAPSE) < 0 ? -errno : 0;
}

/* p maps the object from offset lo (a multiple of 2 MiB); [from, end) was
 * just committed, end a multiple of 2 MiB: its whole blocks, as above. */
static void seg_collapse(unsigned char *p, uint64_t lo, uint64_t from, uint64_t end,
			 unsigned budget_ms, const _Atomic uint32_t *yield)
{
	uint64_t t0 = shmmap__mono_ms();
	for (uint64_t at = align_up(from, HUGE_PAGE); at < end; at += COLLAPSE_CHUNK) {
		if (shmmap__mono_ms() - t0 >= budget_ms ||
		    (yield && atomic_load_explicit(yield, memory_order_relaxed)))
			return;
		if (collapse_range(p + (at - lo), end - at < COLLAPSE_CHUNK ? end - at
									 : COLLAPSE_CHUNK) < 0)
			return;
	}
	/* The block from is inside, if it is whole below the end: one block,
	 * tried whatever is left of the budget. */
	if (lo < from && lo + HUGE_PAGE <= end)
		(void)collapse_range(p, HUGE_PAGE);
}

/*
 * Commit [from, to) of the object: extend it and take its memory now, so
 * that a full /dev/shm is an error here (-ENOSPC, the object's length as it
 * was), never a SIGBUS in some process later.  huge: the pages are touched
 * through a scratch mapping advised for transparent huge pages, because a
 * tmpfs that gives huge pages only on advice (huge=advise) decides at the
 * first touch, and posix_fallocate has no mapping to take advice from;
 * then its whole 2 MiB blocks are collapsed (seg_collapse, within
 * collapse_ms) for the tmpfs that does not.
 * Only whole 2 MiB blocks below `to` are advised: a huge page never
 * reaches past the object's end.  Where the kernel cannot populate (before
 * Linux 5.14), posix_fallocate.  Whether the pages came out huge is the
 * system's say (shmmapctl status).  -ENOMEM (a memory cgroup's limit, say)
 * is reported as such, not as a full /dev/shm.
 */
static int seg_commit(int fd, uint64_t from, uint64_t to, bool huge, unsigned collapse_ms,
		      const _Atomic uint32_t *yield)
{
	struct stat st;
	struct statvfs vs;
	if (!huge || fstat(fd, &st) < 0)
		return -posix_fallocate(fd, (off_t)from, (off_t)(to - from));
	uint64_t was = (uint64_t)st.st_size;
	/* What posix_fallocate on tmpfs checks first: room for all of it (a
	 * populate would take /dev/shm's memory page by page before failing).
	 * All of it: the object's length says nothing of what is committed
	 * (creation has made it full length already). */
	if (fstatvfs(fd, &vs) == 0 && vs.f_blocks && /* f_blocks 0: no limit */
	    (uint64_t)vs.f_bavail * vs.f_frsize < to - from)
		return -ENOSPC;
	if (was < to && ftruncate(fd, (off_t)to) < 0)
		return -errno;
	/* The scratch mapping at a 2 MiB boundary, as the file offset is (a
	 * huge page maps only so): a reservation one huge page longer, then
	 * the file over its aligned part. */
	uint64_t lo = from & ~(HUGE_PAGE - 1), hi = align_up(to, HUGE_PAGE);
	uint64_t hi_huge = to & ~(HUGE_PAGE - 1);
	int rc = -EINVAL; /* not populated: the plain way below */
	unsigned char *r = mmap(NULL, hi - lo + HUGE_PAGE, PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r != MAP_FAILED) {
		unsigned char *p = (unsigned char *)align_up((uintptr_t)r, HUGE_PAGE);
		if (mmap(p, hi - lo, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, (off_t)lo) !=
		    MAP_FAILED) {
			if (hi_huge > lo)
				(void)madvise(p, hi_huge - lo, MADV_HUGEPAGE);
			rc = madvise(p + (from - lo), to - from, MADV_POPULATE_WRITE) < 0 ? -errno : 0;
			if (rc == -EFAULT) /* a touch would have been SIGBUS: full */
				rc = -ENOSPC;
			if (rc == 0 && hi_huge > lo)
				seg_collapse(p, lo, from, hi_huge, collapse_ms, yield);
		}
		munmap(r, hi - lo + HUGE_PAGE);
	}
	/* EINVAL: no MADV_POPULATE_WRITE here, or no mapping; EINTR and the
	 * like: the plain way too. */
	if (rc != 0 && rc != -ENOSPC && rc != -ENOMEM)
		rc = -posix_fallocate(fd, (off_t)from, (off_t)(to - from));
	if (rc < 0 && was < to)
		(void)ftruncate(fd, (off_t)was); /* as it was */
	return rc;
}

/* Advise this process's whole reservation for huge pages, if the segment
 * asks for them (the advice follows the mapping through every mprotect). */
static void seg_advise(const struct seg *s)
{
	const struct seg_header *h = seg_hdr(s);
	if (s->len >= sizeof *h && (h->flags & SEG_F_HUGE))
		(void)madvise(s->base, s->reserved, MADV_HUGEPAGE);
}

int shmmap__seg_grow(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		     uint32_t pages, unsigned collapse_ms, const _Atomic uint32_t *yield)
{
	struct seg_header *h = seg_hdr(s);
	uint32_t old = shmmap__seg_live(s, g);
	if (pages > g->npages_max)
		return -EINVAL;
	if (pages <= old)
		return 0;
	uint64_t from = g->heap_off + (uint64_t)old * SEG_PAGE;
	uint64_t to = g->heap_off + (uint64_t)pages * SEG_PAGE;
	/* Extend and commit: tmpfs takes the memory now or says ENOSPC (and
	 * then keeps the object as it was). */
	int rc = seg_commit(s->fd, from, to, h->flags & SEG_F_HUGE, collapse_ms, yield);
	if (rc < 0)
		return rc;
	CRASH_POINT();
	rc = seg_extend(s, to);
	if (rc < 0)
		return rc;
	rc = shmmap__lock_nosteal(&h->pool_lock, c);
	if (rc < 0)
		return rc;
	CRASH_POINT();
	for (uint32_t i = old; i < pages; i++)
		memset(seg_page(s, g, i), 0, sizeof(struct seg_page)); /* PAGE_FREE */
	CRASH_POINT();
	/* Published first: a crash before pool_free is raised leaves it short
	 * (pages the pool does not hand out), under a lock the next
	 * coordinator's sweep takes over and recounts. */
	atomic_store_explicit(&h->npages_live, pages, memory_order_release);
	CRASH_POINT();
	h->pool_free += pages - old;
	CRASH_POINT();
	atomic_fetch_add_explicit(&h->grow_steps, 1, memory_order_relaxed);
	shmmap__unlock(&h->pool_lock);
	return shmmap__seg_sync(s);
}

/* The header's max_size, read before mapping: the reservation's length. */
static int peek_max_size(int fd, uint64_t st_size, uint64_t *out)
{
	struct seg_header h;
	if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
		return -SHMMAP_EBADSEG;
	uint64_t max = h.max_size;
	if (h.magic != SEG_MAGIC || h.layout_version != SEG_LAYOUT_VERSION)
		max = st_size; /* validate says what is wrong */
	if (max < st_size) /* slack of a step the coordinator died in */
		max = st_size;
	if (max < sizeof h || max > SEG_MAX_SIZE_LIMIT)
		return -SHMMAP_EBADSEG;
	*out = align_up(max, 4096);
	return 0;
}

static int map_reserve(int fd, uint64_t base, bool rdonly, uint64_t reserve, struct seg *s);

int shmmap__seg_map_fd(int fd, uint64_t base, bool rdonly, struct seg *s)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < (off_t)sizeof(struct seg_header))
		return -SHMMAP_EBADSEG;
	uint64_t reserve;
	int rc = peek_max_size(fd, (uint64_t)st.st_size, &reserve);
	if (rc < 0)
		return rc;
	return map_reserve(fd, base, rdonly, reserve, s);
}

/* Map the object anywhere, but at a 2 MiB boundary, as its offset 0 is (a
 * 2 MiB page is mapped whole, by one page table entry, only where its
 * address and its offset agree modulo 2 MiB): a reservation 2 MiB longer,
 * the object over its aligned part, the rest given back. */
static void *map_anywhere(int fd, uint64_t reserve)
{
	unsigned char *r = mmap(NULL, reserve + HUGE_PAGE, PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED)
		return mmap(NULL, reserve, PROT_NONE, MAP_SHARED, fd, 0);
	unsigned char *p = (unsigned char *)align_up((uintptr_t)r, HUGE_PAGE);
	if (mmap(p, reserve, PROT_NONE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
		munmap(r, reserve + HUGE_PAGE);
		return mmap(NULL, reserve, PROT_NONE, MAP_SHARED, fd, 0);
	}
	if (p > r)
		munmap(r, (size_t)(p - r));
	if (p + reserve < r + reserve + HUGE_PAGE)
		munmap(p + reserve, (size_t)(r + HUGE_PAGE - p));
	return p;
}

static int map_reserve(int fd, uint64_t base, bool rdonly, uint64_t reserve, struct seg *s)
{
	int rc;
	/* Reserve max_size of address space, all of it a mapping of the
	 * object (PROT_NONE: mapping past the object's end is allowed,
	 * touching it is not), then open the header page. */
	void *want = (void *)(uintptr_t)base;
	void *p = MAP_FAILED;
	if (base)
		p = mmap(want, reserve, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	if (p != MAP_FAILED && p != want) {
		munmap(p, reserve); /* a kernel that took the address as a hint */
		p = MAP_FAILED;
	}
	if (p == MAP_FAILED) {
		/* The range is taken here (EEXIST) or unusable: map anywhere;
		 * the segment holds only offsets. */
		p = map_anywhere(fd, reserve);
		if (p == MAP_FAILED)
			return -errno;
	}
	memset(s, 0, sizeof *s);
	s->base = p;
	s->reserved = reserve;
	s->fd = fd;
	s->rdonly = rdonly;
	s->at_agreed_base = (p == want);
	atomic_store_explicit(&s->len, 0, memory_order_relaxed);
	/* The live size, if the header names a plausible one (validate checks
	 * it; a size that cannot be had leaves the header alone accessible).
	 * Read with pread, and the mapping touched only once it is open that
	 * far: a touch while it ends within the first 2 MiB would map that
	 * block with small page table entries for good, huge page or not. */
	struct seg_header ph;
	uint64_t first = sizeof ph;
	bool plausible = pread(fd, &ph, sizeof ph, 0) == (ssize_t)sizeof ph &&
			 ph.magic == SEG_MAGIC && ph.layout_version == SEG_LAYOUT_VERSION &&
			 ph.heap_off >= sizeof ph && ph.heap_off < reserve;
	if (plausible) {
		uint64_t live = atomic_load_explicit(&ph.npages_live, memory_order_relaxed);
		plausible = live <= (reserve - ph.heap_off) / SEG_PAGE;
		first = plausible ? ph.heap_off + live * SEG_PAGE : first;
	}
	rc = seg_extend(s, first);
	if (rc < 0 && first > sizeof ph) {
		plausible = false;
		rc = seg_extend(s, sizeof ph);
	}
	if (rc < 0) {
		munmap(p, reserve);
		s->base = NULL;
		s->fd = -1;
		return rc == -SHMMAP_ESEGSIZE ? -SHMMAP_EBADSEG : rc;
	}
	if (plausible)
		seg_advise(s);
	return 0;
}

int shmmap__seg_validate(struct seg *s, struct seg_geom *g)
{
	const struct seg_header *h = seg_hdr(s);
	if (s->len < sizeof *h)
		return -SHMMAP_EBADSEG;
	if (atomic_load_explicit((_Atomic uint64_t *)&h->magic, memory_order_acquire) != SEG_MAGIC)
		return -SHMMAP_EBADSEG;
	if (h->layout_version != SEG_LAYOUT_VERSION)
		return -SHMMAP_EVERSION;
	uint64_t max = h->max_size;
	if (h->header_size != sizeof *h || max < h->size)
		return -SHMMAP_EBADSEG;
	struct seg_params p = {
		.size = max, .max_size = max, .base = h->base,
		.max_clients = h->max_clients, .max_maps = h->max_maps,
	};
	struct seg_geom want;
	if (shmmap__seg_layout(&p, &want) < 0)
		return -SHMMAP_EBADSEG;
	if (h->slots_off != want.slots_off || h->dir_off != want.dir_off ||
	    h->ctr_off != want.ctr_off || h->classes_off != want.classes_off ||
	    h->pages_off != want.pages_off || h->heap_off != want.heap_off ||
	    h->npages != want.npages_max || h->nclasses != want.nclasses)
		return -SHMMAP_EBADSEG;
	uint32_t live = atomic_load_explicit(&seg_hdr(s)->npages_live, memory_order_acquire);
	if (live < 2 || live > want.npages_max)
		return -SHMMAP_EBADSEG;
	/* What a process that mapped the object whole (no reservation) has. */
	uint64_t need = want.heap_off + (uint64_t)live * SEG_PAGE;
	if (!s->reserved && need > s->len)
		return -SHMMAP_EBADSEG;
	int rc = seg_extend(s, need);
	if (rc < 0)
		return rc == -SHMMAP_ESEGSIZE ? -SHMMAP_EBADSEG : rc;
	want.npages = live;
	want.hash_seed = h->hash_seed;
	*g = want;
	return 0;
}

static void seg_format(const struct seg *s, const struct seg_params *p, const struct seg_geom *g)
{
	struct seg_header *h = seg_hdr(s);
	/* A fresh ftruncate'd object is zero-filled: every slot FREE, every
	 * map FREE, every page PAGE_FREE, every lock 0. */
	h->layout_version = SEG_LAYOUT_VERSION;
	h->header_size = sizeof *h;
	h->size = p->size;
	h->max_size = g->max_size;
	h->base = p->base;
	h->flags = p->huge_pages ? SEG_F_HUGE : 0;
	uint64_t seed = 0;
	if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
		seed = shmmap__now_ns() ^ ((uint64_t)getpid() << 32);
	h->hash_seed = seed;
	h->created_ns = shmmap__now_ns();
	atomic_store(&h->state, SEG_CLEAN);
	h->max_clients = g->max_clients;
	h->max_maps = g->max_maps;
	h->npages = g->npages_max;
	atomic_store_explicit(&h->npages_live, g->npages, memory_order_relaxed);
	h->nclasses = g->nclasses;
	h->slots_off = g->slots_off;
	h->dir_off = g->dir_off;
	h->ctr_off = g->ctr_off;
	h->classes_off = g->classes_off;
	h->pages_off = g->pages_off;
	h->heap_off = g->heap_off;
	shmmap__alloc_format(s, g);
	/* Publish: a segment without magic never validates. */
	atomic_store_explicit((_Atomic uint64_t *)&h->magic, SEG_MAGIC, memory_order_release);
}

int shmmap__seg_create(const char *name, unsigned mode, const struct seg_params *p,
		       struct seg *s, struct seg_geom *g)
{
	int rc = shmmap__seg_layout(p, g);
	if (rc < 0)
		return rc;
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0777);
	if (fd < 0)
		return -errno;
	/* The umask may have narrowed the mode: set exactly what was asked.
	 * The object holds the initial size only: more is committed as the
	 * segment grows. */
	uint64_t len = g->heap_off + (uint64_t)g->npages * SEG_PAGE;
	if (fchmod(fd, mode & 0777) < 0 || ftruncate(fd, (off_t)len) < 0) {
		rc = -errno;
		goto fail;
	}
	/* Reserve the memory now, so a full /dev/shm is an error here and not
	 * a SIGBUS in some worker later. */
	rc = seg_commit(fd, 0, len, p->huge_pages, COLLAPSE_CREATE_MS, NULL);
	if (rc < 0)
		goto fail;
	rc = map_reserve(fd, p->base, false, align_up(g->max_size, 4096), s);
	if (rc < 0)
		goto fail;
	rc = seg_extend(s, len);
	if (rc < 0) {
		shmmap__seg_unmap(s);
		shm_unlink(name);
		return rc;
	}
	seg_format(s, p, g);
	seg_advise(s);
	g->hash_seed = seg_hdr(s)->hash_seed;
	s->geom = g;
	return 0;
fail:
	close(fd);
	shm_unlink(name);
	return rc;
}

/*
 * An existing segment is adopted only if this user owns it.  Root's
 * coordinator could open an object another user made under the name
 * first (in /dev/shm anyone may create one): it then kept its data where
 * that user reads and writes it.  -EACCES, as for one we may not open.
 */
static int open_own(const char *name)
{
	int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_uid != geteuid()) {
		close(fd);
		return -EACCES;
	}
	return fd;
}

int shmmap__seg_peek(const char *name, struct seg_params *found)
{
	int fd = open_own(name);
	if (fd < 0)
		return fd;
	struct seg s;
	struct seg_geom g;
	int rc = shmmap__seg_map_fd(fd, 0, true, &s);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	rc = shmmap__seg_validate(&s, &g);
	if (rc == 0) {
		const struct seg_header *h = seg_hdr(&s);
		*found = (struct seg_params){.size = h->size, .max_size = h->max_size,
					     .max_clients = h->max_clients,
					     .max_maps = h->max_maps};
	}
	shmmap__seg_unmap(&s);
	return rc;
}

int shmmap__seg_open_existing(const char *name, const struct seg_params *p,
			      struct seg *s, struct seg_geom *g)
{
	int fd = open_own(name);
	if (fd < 0)
		return fd;
	int rc = shmmap__seg_map_fd(fd, p->base, false, s);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	/* The layout is fixed by max_size (and the counts); the size it has
	 * grown to is the segment's own. */
	uint64_t max = p->max_size ? p->max_size : p->size;
	rc = shmmap__seg_validate(s, g);
	if (rc == 0)
		s->geom = g;
	if (rc == 0 && (seg_hdr(s)->max_size != max || seg_hdr(s)->max_clients != p->max_clients ||
			seg_hdr(s)->max_maps != p->max_maps))
		rc = -SHMMAP_EBADSEG;
	if (rc < 0)
		shmmap__seg_unmap(s);
	return rc;
}
