/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * segment.c - the shared segment: its geometry, creation (shm_open O_EXCL,
 * ftruncate + posix_fallocate, format), adoption of an existing one, and
 * mapping at the agreed base with MAP_FIXED_NOREPLACE (anywhere else when
 * that range is taken in this process).
 *
 * Invariants:
 *   - The geometry is a pure function of (size, max_clients, max_maps):
 *     shmmap__seg_validate() recomputes it and refuses a header whose
 *     offsets differ, so every later bounds check can trust seg_geom.
 *   - The magic is written last when formatting (release store), so a
 *     segment whose formatting was interrupted never validates.
 *   - Offsets are checked against the length mapped in this process.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
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
	memset(g, 0, sizeof *g);
	g->max_clients = p->max_clients;
	g->max_maps = p->max_maps;
	g->nclasses = shmmap__nclasses();
	g->slots_off = sizeof(struct seg_header);
	g->dir_off = align_up(g->slots_off + (uint64_t)p->max_clients * sizeof(struct seg_slot), 64);
	g->ctr_off = align_up(g->dir_off + (uint64_t)p->max_maps * sizeof(struct seg_mapdir), 64);
	g->classes_off = align_up(g->ctr_off + (uint64_t)p->max_clients * p->max_maps *
						       sizeof(struct seg_counters), 64);
	g->pages_off = g->classes_off + SEG_NCLASSES * sizeof(struct seg_class);
	if (p->size <= g->pages_off)
		return -EINVAL;
	/* Largest npages whose descriptors plus pages fit. */
	uint64_t npages = (p->size - g->pages_off) / (SEG_PAGE + sizeof(struct seg_page));
	while (npages > 0 &&
	       align_up(g->pages_off + npages * sizeof(struct seg_page), SEG_PAGE) +
			       npages * SEG_PAGE > p->size)
		npages--;
	if (npages < 2 || npages > UINT32_MAX / 2)
		return -EINVAL;
	g->npages = (uint32_t)npages;
	g->heap_off = align_up(g->pages_off + npages * sizeof(struct seg_page), SEG_PAGE);
	return 0;
}

void shmmap__seg_unmap(struct seg *s)
{
	if (s->base)
		munmap(s->base, s->len);
	if (s->fd >= 0)
		close(s->fd);
	s->base = NULL;
	s->fd = -1;
}

int shmmap__seg_map_fd(int fd, uint64_t base, bool rdonly, struct seg *s)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < (off_t)sizeof(struct seg_header))
		return -SHMMAP_EBADSEG;
	size_t len = (size_t)st.st_size;
	int prot = PROT_READ | (rdonly ? 0 : PROT_WRITE);
	void *want = (void *)(uintptr_t)base;
	void *p = MAP_FAILED;
	if (base)
		p = mmap(want, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	if (p == MAP_FAILED) {
		/* The range is taken here (EEXIST) or unusable: map anywhere;
		 * the segment holds only offsets. */
		p = mmap(NULL, len, prot, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			return -errno;
	}
	s->base = p;
	s->len = len;
	s->fd = fd;
	s->rdonly = rdonly;
	/* Kernels before 4.17 take the address as a hint: compare. */
	s->at_agreed_base = (p == want);
	return 0;
}

int shmmap__seg_validate(const struct seg *s, struct seg_geom *g)
{
	const struct seg_header *h = seg_hdr(s);
	if (s->len < sizeof *h)
		return -SHMMAP_EBADSEG;
	if (atomic_load_explicit((_Atomic uint64_t *)&h->magic, memory_order_acquire) != SEG_MAGIC)
		return -SHMMAP_EBADSEG;
	if (h->layout_version != SEG_LAYOUT_VERSION)
		return -SHMMAP_EVERSION;
	if (h->header_size != sizeof *h || h->size != s->len)
		return -SHMMAP_EBADSEG;
	struct seg_params p = {
		.size = h->size, .base = h->base,
		.max_clients = h->max_clients, .max_maps = h->max_maps,
	};
	struct seg_geom want;
	if (shmmap__seg_layout(&p, &want) < 0)
		return -SHMMAP_EBADSEG;
	if (h->slots_off != want.slots_off || h->dir_off != want.dir_off ||
	    h->ctr_off != want.ctr_off || h->classes_off != want.classes_off ||
	    h->pages_off != want.pages_off || h->heap_off != want.heap_off ||
	    h->npages != want.npages || h->nclasses != want.nclasses)
		return -SHMMAP_EBADSEG;
	if (want.heap_off + (uint64_t)want.npages * SEG_PAGE > s->len)
		return -SHMMAP_EBADSEG;
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
	h->base = p->base;
	uint64_t seed = 0;
	if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
		seed = shmmap__now_ns() ^ ((uint64_t)getpid() << 32);
	h->hash_seed = seed;
	h->created_ns = shmmap__now_ns();
	atomic_store(&h->state, SEG_CLEAN);
	h->max_clients = g->max_clients;
	h->max_maps = g->max_maps;
	h->npages = g->npages;
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
	struct seg_geom geom;
	int rc = shmmap__seg_layout(p, &geom);
	if (rc < 0)
		return rc;
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0777);
	if (fd < 0)
		return -errno;
	/* The umask may have narrowed the mode: set exactly what was asked. */
	if (fchmod(fd, mode & 0777) < 0 || ftruncate(fd, (off_t)p->size) < 0) {
		rc = -errno;
		goto fail;
	}
	/* Reserve the memory now, so a full /dev/shm is an error here and not
	 * a SIGBUS in some worker later. */
	rc = posix_fallocate(fd, 0, (off_t)p->size);
	if (rc != 0) {
		rc = -rc;
		goto fail;
	}
	rc = shmmap__seg_map_fd(fd, p->base, false, s);
	if (rc < 0)
		goto fail;
	seg_format(s, p, &geom);
	geom.hash_seed = seg_hdr(s)->hash_seed;
	*g = geom;
	return 0;
fail:
	close(fd);
	shm_unlink(name);
	return rc;
}

int shmmap__seg_open_existing(const char *name, const struct seg_params *p,
			      struct seg *s, struct seg_geom *g)
{
	int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int rc = shmmap__seg_map_fd(fd, p->base, false, s);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	rc = shmmap__seg_validate(s, g);
	if (rc == 0 && (seg_hdr(s)->size != p->size || seg_hdr(s)->max_clients != p->max_clients ||
			seg_hdr(s)->max_maps != p->max_maps))
		rc = -SHMMAP_EBADSEG;
	if (rc < 0)
		shmmap__seg_unmap(s);
	return rc;
}
