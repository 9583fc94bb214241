/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * fuzz_segment.c - libFuzzer target for the code that works on a segment
 * image it cannot trust (built and run by scripts/fuzz.sh): the read paths,
 * shmmap__seg_validate, shmmap__map_view, shmmap__tbl_get and shmmap_get's
 * lock-free first try (get_fast, getfast.h), put's (put_fast, putfast.h), the walk
 * shmmap__tbl_foreach and the checker shmmap__check (segment.c, table.c,
 * check.c), then the writes (put, cas, incr, del), the recovery of dead
 * clients (stripe repair, the freeing of what their intent records name),
 * the reclaim of expired entries and the sweep (alloc.c, sweep.c) on the
 * same image.
 *
 * The image.  Built once, at start: a 1 MiB segment (15 heap pages), 2
 * client slots, 3 map slots: map 0 "sessions" (64 buckets, 8 stripes, 24
 * entries in four size classes, a third of them with an expiry far in the
 * future, a counter with one too, and an entry that expired long ago),
 * map 1 "blobs" (16 buckets,
 * 2 stripes, a 70000-byte value in a run of pages and a small one), map 2
 * created and dropped (FREE, its table kept); slot 0 LIVE (pid 1).  The hash
 * seed and the timestamps are fixed, so the image is the same in every
 * process and a crash input reproduces anywhere.  It is built in a POSIX shm
 * object (unlinked at once), copied, and the copy is what each input starts
 * from, in a memfd mapped with shmmap__seg_map_fd between two PROT_NONE
 * guard ranges (1 GiB before, 8 GiB after: ASan does not watch mapped
 * memory, the guards make a stray access fault).
 *
 * An input is a list of patches, each [u32 offset LE][u8 len][len bytes],
 * the offset taken modulo the image size (a patch stops at the image end).
 * For each input the image is restored, patched, and then:
 *   1. as a read-only client sees it (no lock is ever taken): validate,
 *      check, map_view of every map index, gets of a few keys and a walk
 *      in every map;
 *   2. as the one live process once all others are gone: every other slot
 *      is DEAD, slot 1 is ours.  A held allocator lock is released and the
 *      allocator swept, and a held stripe lock is taken over and the stripe
 *      repaired, as the coordinator and a lock waiter would, without the
 *      wait.  Then come puts, an incr, dels, a cas, a get and a walk in
 *      every map, with an intent record.  After them, the coordinator's
 *      recovery runs: it frees what the dead slots' records name, frees
 *      those slots, repairs every stripe, reclaims expired entries and
 *      sweeps.  Then the checker runs again.
 * Whatever the bytes, nothing may crash, hang or touch memory out of bounds.
 * The results are checked too (__builtin_trap on a broken property): every
 * call returns one of its documented codes; a get never says "corrupt" on
 * an image that shmmap__check found consistent; and an unpatched image is
 * consistent, holds what was put, and stays consistent after the writes
 * and the repairs.  $SHMMAP_FUZZ_VERBOSE prints what the checker finds.
 *
 * Built with -DFUZZ_SEGMENT_SEEDS (and without -fsanitize=fuzzer) this file
 * is instead a program that writes patch lists aimed at the image's
 * structures (header, slots, directory, pages, buckets, entries, stripes)
 * into the directory given as its argument: that is how
 * tests/fuzz/corpus/segment/ was made, with
 *   clang -DFUZZ_SEGMENT_SEEDS -std=c11 -D_GNU_SOURCE -Iinclude -Ishmmap \
 *     -pthread -o gen tests/fuzz/fuzz_segment.c LIB_SRCS... -lrt
 *   ./gen tests/fuzz/corpus/segment
 * (LIB_SRCS as in the Makefile).  The offsets follow the layout in
 * internal.h: after a layout change, make them again.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "putfast.h"

#define CHECK(cond)                                  \
	do {                                         \
		if (!(cond))                         \
			__builtin_trap();            \
	} while (0)

#define IMG_SIZE (1u << 20)
#define IMG_SEED UINT64_C(0x5eed5eed12345678)
#define NKEYS 24u
#define FAR_MS (UINT64_C(1) << 52) /* ms: a fixed expiry 140,000 years ahead */
#define BIG_LEN 70000u
#define GUARD_BEFORE (UINT64_C(1) << 30)
#define GUARD_AFTER (UINT64_C(8) << 30) /* past any u32 offset from any page */
/* The lock owner of what build_image() and the read-only paths do. */
#define OWNER LOCK_OWNER_COORD

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char *g_image; /* the pristine image */
static struct seg g_work = {.fd = -1}; /* the memfd every input is played on */
static struct seg_geom g_geom0;  /* geometry of the pristine image */
static unsigned char g_big[BIG_LEN];
/* $SHMMAP_FUZZ_VERBOSE set: print what each check finds (for looking at
 * one input); else the problem callback is NULL. */
static bool g_verbose;

static void die(const char *what, int rc)
{
	fprintf(stderr, "fuzz_segment: %s: %s\n", what, shmmap_strerror(rc));
	abort();
}

/* Key i of map 0 and its value: length (i % 4) * 60, byte 'a' + i % 26. */
static size_t key_of(unsigned i, char *k)
{
	return (size_t)snprintf(k, 16, "k%02u", i);
}

static size_t val_of(unsigned i, char *v)
{
	size_t n = (i % 4) * 60;
	memset(v, 'a' + (int)(i % 26), n);
	return n;
}

/* ---- the image ---- */

static void build_image(void)
{
	char name[64];
	snprintf(name, sizeof name, "/shmmap-fuzz-%d", (int)getpid());
	shm_unlink(name); /* a leftover of a crashed run with the same pid */
	struct seg_params p = {.size = IMG_SIZE, .base = 0, .max_clients = 2, .max_maps = 3};
	struct seg s = {.fd = -1};
	struct seg_geom g;
	int rc = shmmap__seg_create(name, 0600, &p, &s, &g);
	if (rc < 0)
		die("seg_create", rc);
	shm_unlink(name);

	/* Fixed seed and times: the same image in every process. */
	struct seg_header *h = seg_hdr(&s);
	h->hash_seed = IMG_SEED;
	g.hash_seed = IMG_SEED;
	h->created_ns = 0;

	struct seg_slot *sl = seg_slot(&s, &g, 0);
	sl->pid = 1; /* always there: a live client */
	sl->start_time = 0;
	atomic_store(&sl->gen, 1);
	atomic_store(&sl->state, SLOT_LIVE);

	struct lock_ctx lk = {.s = &s, .g = &g, .owner = OWNER};
	struct op_ctx o = {.s = &s, .g = &g, .lk = lk};
	struct map_params mp0 = {.nbuckets = 64, .nstripes = 8, .key_max = 64, .val_max = 4096};
	struct map_params mp1 = {.nbuckets = 16, .nstripes = 2, .key_max = 16,
				 .val_max = 128 * 1024};
	struct map_params mp2 = {.nbuckets = 32, .nstripes = 4, .key_max = 32, .val_max = 64};
	if ((rc = shmmap__map_create(&s, &g, &lk, 0, "sessions", &mp0)) < 0 ||
	    (rc = shmmap__map_create(&s, &g, &lk, 1, "blobs", &mp1)) < 0 ||
	    (rc = shmmap__map_create(&s, &g, &lk, 2, "dropped", &mp2)) < 0)
		die("map_create", rc);

	struct map_view v0, v1, v2;
	if ((rc = shmmap__map_view(&s, &g, 0, &v0)) < 0 ||
	    (rc = shmmap__map_view(&s, &g, 1, &v1)) < 0 ||
	    (rc = shmmap__map_view(&s, &g, 2, &v2)) < 0)
		die("map_view", rc);
	char k[16], v[256];
	for (unsigned i = 0; i < NKEYS; i++) {
		size_t kn = key_of(i, k), vn = val_of(i, v);
		if ((rc = shmmap__tbl_put_at(&o, &v0, k, kn, v, vn, i % 3 == 1 ? FAR_MS : 0, 0)) < 0)
			die("put", rc);
	}
	if ((rc = shmmap__tbl_put_at(&o, &v0, "hits", 4, "41", 2, FAR_MS, 0)) < 0 ||
	    (rc = shmmap__tbl_put_at(&o, &v0, "old", 3, "o", 1, 1000, 0)) < 0 ||
	    (rc = shmmap__tbl_put(&o, &v0, "gone", 4, "x", 1, 0, 0)) < 0 ||
	    (rc = shmmap__tbl_del(&o, &v0, "gone", 4)) < 0 ||
	    (rc = shmmap__tbl_put(&o, &v1, "big", 3, g_big, BIG_LEN, 0, 0)) < 0 ||
	    (rc = shmmap__tbl_put(&o, &v1, "small", 5, "0123456789", 10, 0, 0)) < 0 ||
	    (rc = shmmap__tbl_put(&o, &v2, "x", 1, "y", 1, 0, 0)) < 0)
		die("put", rc);
	struct empty_report er;
	(void)shmmap__map_destroy(&s, &g, &lk, 2, &er);
	for (uint32_t i = 0; i < g.max_maps; i++)
		seg_dir(&s, &g, i)->created_ns = 0;

	struct check_report r = {0};
	if ((rc = shmmap__check(&s, &g, &r)) != 0 || r.errors || r.maps != 2 ||
	    r.entries != NKEYS + 4)
		die("check of the fresh image", rc ? rc : -SHMMAP_ECORRUPT);

	g_image = malloc(IMG_SIZE);
	if (!g_image)
		die("malloc", -ENOMEM);
	memcpy(g_image, s.base, IMG_SIZE);
	g_geom0 = g;
	shmmap__seg_unmap(&s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	g_verbose = getenv("SHMMAP_FUZZ_VERBOSE") != NULL;
	for (size_t i = 0; i < BIG_LEN; i++)
		g_big[i] = (unsigned char)(i * 7 + 3);
	build_image();
	int fd = memfd_create("shmmap-fuzz-segment", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, IMG_SIZE) < 0)
		die("memfd", -errno);
	/* ASan does not watch mmap'ed memory, so the mapping goes into a hole
	 * of a reserved PROT_NONE range: a read or write at any 32-bit offset
	 * past the image (or a little before it) faults at once instead of
	 * landing silently in some other mapping. */
	size_t span = GUARD_BEFORE + IMG_SIZE + GUARD_AFTER;
	unsigned char *r = mmap(NULL, span, PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED || munmap(r + GUARD_BEFORE, IMG_SIZE) < 0)
		die("reserve guard range", -errno);
	/* The image first: mapping reads its max_size to reserve that much. */
	if (pwrite(fd, g_image, IMG_SIZE, 0) != (ssize_t)IMG_SIZE)
		die("memfd write", -errno);
	int rc = shmmap__seg_map_fd(fd, (uint64_t)(uintptr_t)(r + GUARD_BEFORE), false, &g_work);
	if (rc < 0)
		die("seg_map_fd", rc);
	if (g_work.base != r + GUARD_BEFORE || g_work.reserved != IMG_SIZE)
		die("seg_map_fd: not between the guards", -EEXIST);
	/* A process maps only what the header says is live and follows growth;
	 * the inputs patch the header, so the whole image is opened here once:
	 * every offset the code follows is still checked against len. */
	if (mprotect(g_work.base, IMG_SIZE, PROT_READ | PROT_WRITE) < 0)
		die("mprotect", -errno);
	atomic_store(&g_work.len, (size_t)IMG_SIZE);
	return 0;
}

/* ---- one input ---- */

/* Restore the image and apply the patches; returns whether a byte changed. */
static bool apply(const uint8_t *d, size_t n)
{
	memcpy(g_work.base, g_image, IMG_SIZE);
	bool changed = false;
	size_t i = 0;
	while (n - i >= 5) {
		uint32_t off = (uint32_t)d[i] | (uint32_t)d[i + 1] << 8 | (uint32_t)d[i + 2] << 16 |
			       (uint32_t)d[i + 3] << 24;
		size_t len = d[i + 4];
		i += 5;
		off %= IMG_SIZE;
		if (len > n - i)
			len = n - i;
		if (len > IMG_SIZE - off)
			len = IMG_SIZE - off;
		if (memcmp(g_work.base + off, d + i, len) != 0) {
			memcpy(g_work.base + off, d + i, len);
			changed = true;
		}
		i += len;
	}
	return changed;
}

static bool get_rc_ok(int rc, bool rdonly)
{
	return rc == 0 || rc == -ENOENT || rc == -ENOBUFS || rc == -E2BIG ||
	       rc == -SHMMAP_ECORRUPT || (rdonly && rc == -EAGAIN);
}

/* The keys probed in every map: present ones of each size class, the
 * counter, the large value, absent ones. */
static const char *const probe[] = {"k00", "k05", "k10", "k23", "hits", "big", "small", "nope"};
#define NPROBE (sizeof probe / sizeof probe[0])

/* The unpatched image must hold exactly what build_image() put. */
static void expect_pristine_get(uint32_t map, const char *key, int rc, const char *buf,
				size_t vlen)
{
	if (map == 0 && key[0] == 'k') {
		unsigned i = (unsigned)atoi(key + 1);
		char want[256];
		size_t wn = val_of(i, want);
		CHECK(rc == 0 && vlen == wn && memcmp(buf, want, wn) == 0);
	} else if (map == 0 && strcmp(key, "hits") == 0) {
		CHECK(rc == 0 && vlen == 2 && memcmp(buf, "41", 2) == 0);
	} else if (map == 1 && strcmp(key, "big") == 0) {
		CHECK(rc == 0 && vlen == BIG_LEN && memcmp(buf, g_big, BIG_LEN) == 0);
	} else if (map == 1 && strcmp(key, "small") == 0) {
		CHECK(rc == 0 && vlen == 10 && memcmp(buf, "0123456789", 10) == 0);
	} else {
		CHECK(rc == -ENOENT || rc == -E2BIG);
	}
}

static unsigned char g_buf[BIG_LEN + 16];

static void print_problem(void *arg, const char *what)
{
	fprintf(stderr, "  check (%s): %s\n", (const char *)arg, what);
}

static void report_init(struct check_report *r, const char *when)
{
	memset(r, 0, sizeof *r);
	if (g_verbose) {
		r->problem = print_problem;
		r->arg = (void *)when;
	}
}

/* shmmap__tbl_foreach's callback: what it is handed lies within the map's
 * limits (the copies it gets were validated). */
struct walk_arg {
	const struct map_view *v;
	uint64_t seen;
};

static int each(const void *key, size_t klen, const void *val, size_t vlen, uint64_t expire_ms,
		void *arg)
{
	struct walk_arg *w = arg;
	(void)expire_ms;
	CHECK(key && klen >= 1 && klen <= w->v->key_max && vlen <= w->v->val_max);
	CHECK(vlen == 0 || val);
	w->seen++;
	return 0;
}

static bool foreach_rc_ok(int rc, bool rdonly)
{
	return rc == 0 || rc == -SHMMAP_ECORRUPT || rc == -ESTALE || rc == -ENOMEM ||
	       (rdonly && rc == -EAGAIN);
}

/* 1: what a read-only client does with the image.  Returns whether the
 * image validated. */
/* The array notes the views of one input took (struct arr_memo: views
 * note as a client's do, so that bucket_word's noted path meets the
 * patched images too), freed after the input. */
static struct arr_memo *_Atomic g_notes;

static void free_notes(void)
{
	struct arr_memo *m = atomic_exchange(&g_notes, NULL);
	while (m) {
		struct arr_memo *n = m->next;
		free(m);
		m = n;
	}
}

static bool read_paths(bool pristine)
{
	struct seg ro = g_work;
	ro.rdonly = true;
	struct seg_geom g;
	int rc = shmmap__seg_validate(&ro, &g);
	CHECK(rc == 0 || rc == -SHMMAP_EBADSEG || rc == -SHMMAP_EVERSION);
	CHECK(rc == 0 || !pristine);
	if (rc != 0)
		return false;

	struct check_report r;
	report_init(&r, "as read");
	rc = shmmap__check(&ro, &g, &r);
	CHECK(rc == 0 || rc == -SHMMAP_ECORRUPT);
	CHECK((rc == 0) == (r.errors == 0));
	bool consistent = rc == 0;
	CHECK(consistent || !pristine);

	struct op_ctx o = {.s = &ro, .g = &g, .lk = {.s = &ro, .g = &g, .owner = OWNER}};
	for (uint32_t mi = 0; mi <= g.max_maps; mi++) {
		struct map_view v;
		rc = shmmap__map_view(&ro, &g, mi, &v);
		if (mi == g.max_maps) {
			CHECK(rc == -EINVAL);
			break;
		}
		CHECK(rc == 0 || rc == -ENOENT || rc == -SHMMAP_ECORRUPT);
		/* check reports a live map whose view fails. */
		CHECK(!consistent || rc != -SHMMAP_ECORRUPT);
		if (rc != 0)
			continue;
		v.memo_list = &g_notes;
		for (size_t k = 0; k < NPROBE; k++) {
			size_t vlen = 0;
			rc = shmmap__tbl_get(&o, &v, probe[k], strlen(probe[k]), g_buf, sizeof g_buf,
					     &vlen);
			CHECK(get_rc_ok(rc, true));
			/* check walked every chain and found none broken. */
			CHECK(!consistent || rc != -SHMMAP_ECORRUPT);
			if (pristine)
				expect_pristine_get(mi, probe[k], rc, (const char *)g_buf, vlen);
			/* shmmap_get's lock-free first try (getfast.h), on the same
			 * bytes: it answers or defers, and where it answers on an
			 * unpatched image, it says what the general path said. */
			/* Twice: the first try may take a note of the array, the
			 * second then finds its bucket through it. */
			for (int t = 0; t < 2; t++) {
				size_t fl = 0;
				int frc = get_fast(&ro, &g, &v, NULL, probe[k], strlen(probe[k]),
						   g_buf, sizeof g_buf, &fl);
				CHECK(frc == 0 || frc == -ENOENT || frc == -ENOBUFS ||
				      frc == GET_SLOW);
				if (pristine && frc != GET_SLOW)
					CHECK(frc == rc && (frc != 0 || fl == vlen));
			}
		}
		struct walk_arg w = {.v = &v};
		rc = shmmap__tbl_foreach(&o, &v, each, &w);
		CHECK(foreach_rc_ok(rc, true));
		CHECK(!consistent || rc != -SHMMAP_ECORRUPT);
		if (pristine)
			CHECK(rc == 0 && w.seen == (mi == 0 ? NKEYS + 1 : 2));
	}
	return true;
}

/* Was the lock word held?  Then release it: a dead owner's lock, taken
 * over as shmmap__lock would after its timeout (without the wait). */
static bool held_then_freed(_Atomic uint32_t *w)
{
	return atomic_exchange(w, 0) != 0;
}

/* Every stripe of every view: locked, repaired, unlocked, as the
 * coordinator's repair does (or as a waiter does with a dead owner's lock,
 * when only_held: then only stripes locked or mid-change are touched). */
static void repair_stripes(const struct op_ctx *o, const struct map_view *views, uint32_t nv,
			   bool only_held)
{
	for (uint32_t i = 0; i < nv; i++) {
		const struct map_view *v = &views[i];
		for (uint32_t st = 0; st < v->nstripes; st++) {
			struct seg_stripe *sp = &v->stripes[st];
			bool held = held_then_freed(&sp->lock) || (atomic_load(&sp->seq) & 1);
			if (only_held && !held)
				continue;
			shmmap__lock(&sp->lock, &o->lk, NULL);
			shmmap__stripe_repair(o, v, st);
			shmmap__unlock(&sp->lock);
		}
	}
}

/* 2: the image as the one live process sees it once every other one is
 * gone: a writable client in slot `me` writes, then (as the coordinator)
 * frees what dead slots' intent records name, repairs every stripe and
 * sweeps the allocator, and the checker runs again. */
static void write_paths(bool pristine)
{
	struct seg *s = &g_work;
	struct seg_geom g;
	if (shmmap__seg_validate(s, &g) != 0)
		return;
	const uint32_t me = g.max_clients > 1 ? 1 : 0;
	/* Every other slot is dead (its intent records kept, for the repairs
	 * to settle) and the coordinator is gone; slot `me` is assigned to
	 * this process as the coordinator does it (records cleared). */
	for (uint32_t i = 0; i < g.max_clients; i++) {
		struct seg_slot *sl = seg_slot(s, &g, i);
		if (atomic_load(&sl->state) != SLOT_FREE)
			atomic_store(&sl->state, SLOT_DEAD);
	}
	atomic_store(&seg_hdr(s)->coord_pid, 0);
	struct seg_slot *mine = seg_slot(s, &g, me);
	mine->pid = (uint32_t)getpid();
	mine->start_time = 0;
	for (uint32_t k = 0; k < SEG_INTENTS; k++) {
		atomic_store(&mine->intent[k].a, 0);
		atomic_store(&mine->intent[k].b, 0);
		atomic_store(&mine->intent[k].spare, 0);
		atomic_store(&mine->spare_moving[k], 0);
	}
	for (uint32_t k = 0; k < SEG_UNDOS; k++)
		atomic_store(&mine->undo[k].off, 0);
	atomic_store(&mine->state, SLOT_LIVE);
	struct lock_ctx lk = {.s = s, .g = &g, .owner = me + 1};
	uint8_t spare_cls = 0; /* the client's note of its spare's class (client.c) */
	struct op_ctx o = {.s = s, .g = &g, .lk = lk, .intent = &mine->intent[0],
			   .spare_cls = &spare_cls, .undo = &mine->undo[0]};

	/* An allocator lock held by a dead process: the allocator may be half
	 * updated, and only the coordinator's sweep repairs it (a client gives
	 * up with -EAGAIN after LOCK_DEAD_WAIT_MS).  Do what it does. */
	bool alloc_held = held_then_freed(&seg_hdr(s)->pool_lock);
	for (uint32_t c = 0; c < g.nclasses; c++)
		alloc_held |= held_then_freed(&seg_class(s, &g, c)->lock);
	struct sweep_report sr;
	if (alloc_held)
		CHECK(shmmap__sweep(s, &g, &lk, &sr) == 0);

	struct map_view views[8];
	uint32_t nv = 0;
	for (uint32_t mi = 0; mi < g.max_maps && nv < 8; mi++)
		if (shmmap__map_view(s, &g, mi, &views[nv]) == 0)
			views[nv++].memo_list = &g_notes;
	/* Stripe locks of dead writers: taken over, the stripe repaired. */
	repair_stripes(&o, views, nv, true);

	char val[300];
	memset(val, 'v', sizeof val);
	for (uint32_t i = 0; i < nv; i++) {
		const struct map_view *v = &views[i];
		o.ctr = seg_ctr(s, &g, me, v->idx);
		int rc;
		size_t vlen;
		/* put's fast path (putfast.h) on the same bytes, as shmmap_put
		 * tries it first: a rewrite in place or PUT_SLOW, never a step
		 * out of bounds, its undo record clear after.  On the unpatched
		 * image each key of map 0 without an expiry takes a value of
		 * its length in place, and reads it back. */
		for (unsigned i = 0; i < NKEYS; i++) {
			char k[16], fv[256], back[256];
			size_t kn = key_of(i, k), vn = val_of(i, fv);
			memset(fv, 'F', vn);
			uint64_t h;
			rc = put_fast(&o, &mine->undo[0], v, k, kn, fv, vn, &h);
			CHECK(rc == 0 || rc == PUT_SLOW);
			CHECK(atomic_load(&mine->undo[0].off) == 0);
			if (!pristine || v->idx != 0 || i % 3 == 1)
				continue;
			CHECK(rc == 0);
			CHECK(shmmap__tbl_get(&o, v, k, kn, back, sizeof back, &vlen) == 0);
			CHECK(vlen == vn && memcmp(back, fv, vn) == 0);
		}
		rc = shmmap__tbl_put(&o, v, "fresh", 5, val, 7, 3600, SHMMAP_NX);
		CHECK(rc == 0 || rc == -EEXIST || rc == -ENOSPC || rc == -E2BIG || rc == -EAGAIN ||
		      rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		rc = shmmap__tbl_put(&o, v, "k00", 3, val, 100, 0, 0);
		CHECK(rc == 0 || rc == -ENOSPC || rc == -E2BIG || rc == -EAGAIN ||
		      rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		rc = shmmap__tbl_put(&o, v, "k10", 3, val, sizeof val, 0, SHMMAP_XX);
		CHECK(rc == 0 || rc == -ENOENT || rc == -ENOSPC || rc == -E2BIG || rc == -EAGAIN ||
		      rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		rc = shmmap__tbl_put(&o, v, "big", 3, g_big, 40000, 0, 0);
		CHECK(rc == 0 || rc == -ENOSPC || rc == -E2BIG || rc == -EAGAIN ||
		      rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		int64_t n = 0;
		rc = shmmap__tbl_incr(&o, v, "hits", 4, 1, 0, &n);
		CHECK(rc == 0 || rc == -EINVAL || rc == -ERANGE || rc == -ENOSPC || rc == -E2BIG ||
		      rc == -EAGAIN || rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		if (pristine && v->idx == 0)
			CHECK(rc == 0 && n == 42);
		rc = shmmap__tbl_del(&o, v, "k05", 3);
		CHECK(rc == 0 || rc == -ENOENT || rc == -E2BIG || rc == -EAGAIN ||
		      rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		rc = shmmap__tbl_del(&o, v, "small", 5);
		CHECK(rc == 0 || rc == -ENOENT || rc == -E2BIG || rc == -EAGAIN ||
		      rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		rc = shmmap__tbl_cas(&o, v, "k00", 3, val, 100, val, 50, 0);
		CHECK(rc == 0 || rc == -ENOENT || rc == -ECANCELED || rc == -ENOSPC || rc == -E2BIG ||
		      rc == -EAGAIN || rc == -SHMMAP_ECORRUPT || rc == -ESTALE);
		if (pristine && v->idx == 0)
			CHECK(rc == 0);
		rc = shmmap__tbl_get(&o, v, "k00", 3, g_buf, sizeof g_buf, &vlen);
		CHECK(get_rc_ok(rc, false));
		if (pristine && v->idx == 0)
			CHECK(rc == 0 && vlen == 50 && memcmp(g_buf, val, 50) == 0);
		struct walk_arg w = {.v = v};
		rc = shmmap__tbl_foreach(&o, v, each, &w);
		CHECK(foreach_rc_ok(rc, false));
	}
	/* Nothing in flight once the writes have returned.  (Only where every
	 * entry is a real block: the free of an "entry" a scribbler placed
	 * outside any block does nothing, and leaves the record set.) */
	for (uint32_t k = 0; k < SEG_INTENTS && pristine; k++)
		CHECK(atomic_load(&mine->intent[k].a) == 0 && atomic_load(&mine->intent[k].b) == 0);

	/* The coordinator's recovery: free what the dead slots' records still
	 * name and free the slots, repair every stripe, sweep. */
	o.ctr = NULL;
	for (uint32_t i = 0; i < g.max_clients; i++) {
		struct seg_slot *sl = seg_slot(s, &g, i);
		if (i == me || atomic_load(&sl->state) == SLOT_FREE)
			continue;
		for (uint32_t k = 0; k < SEG_INTENTS; k++) {
			/* A spare that a or b names too goes through them. */
			uint64_t sp = atomic_load(&sl->intent[k].spare);
			if (sp && (sp == atomic_load(&sl->intent[k].a) ||
				   sp == atomic_load(&sl->intent[k].b)))
				atomic_store(&sl->intent[k].spare, 0);
			_Atomic uint64_t *recs[3] = {&sl->intent[k].b, &sl->intent[k].a,
						     &sl->intent[k].spare};
			for (int j = 0; j < 3; j++) {
				uint64_t off = atomic_load(recs[j]);
				if (off)
					CHECK(shmmap__free(s, &g, &lk, off, recs[j]) == 0);
			}
		}
		sl->pid = 0;
		sl->start_time = 0;
		atomic_store(&sl->state, SLOT_FREE);
	}
	repair_stripes(&o, views, nv, false);
	for (uint32_t i = 0; i < nv; i++) {
		uint32_t cursor = 0; /* the background reclaim of expired entries */
		bool deferred = false; /* the sweep below runs either way */
		shmmap__tbl_reclaim(&o, &views[i], &cursor, views[i].nbuckets, &deferred);
	}
	CHECK(shmmap__sweep(s, &g, &lk, &sr) == 0);

	struct check_report r;
	report_init(&r, "after writes and repair");
	int rc = shmmap__check(s, &g, &r);
	CHECK(rc == 0 || rc == -SHMMAP_ECORRUPT);
	/* Writes and repairs keep a consistent segment consistent. */
	CHECK(rc == 0 || !pristine);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool pristine = !apply(data, size);
	if (read_paths(pristine))
		write_paths(pristine);
	free_notes();
	return 0;
}

#ifdef FUZZ_SEGMENT_SEEDS
/* ---- the seed corpus ---- */

static uint8_t g_rec[4096];
static size_t g_rn;

static void rec(uint64_t off, const void *bytes, size_t len)
{
	if (g_rn + 5 + len > sizeof g_rec || len > 255)
		abort();
	for (int i = 0; i < 4; i++)
		g_rec[g_rn++] = (uint8_t)(off >> (8 * i));
	g_rec[g_rn++] = (uint8_t)len;
	memcpy(g_rec + g_rn, bytes, len);
	g_rn += len;
}

static void rec32(uint64_t off, uint32_t v)
{
	rec(off, &v, 4);
}

static void rec64(uint64_t off, uint64_t v)
{
	rec(off, &v, 8);
}

static int emit(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	int bad = !f || fwrite(g_rec, 1, g_rn, f) != g_rn;
	if (f && fclose(f) != 0)
		bad = 1;
	if (bad)
		perror(path);
	g_rn = 0;
	return bad;
}

/* The first entry chained from a non-empty bucket of map mi, and that bucket. */
static uint64_t first_entry(const struct seg *s, const struct seg_geom *g, uint32_t mi,
			    uint32_t *bucket)
{
	struct map_view v;
	if (shmmap__map_view(s, g, mi, &v) != 0)
		abort();
	for (uint32_t b = 0; b < v.nbuckets; b++) {
		uint64_t off = atomic_load(&v.buckets[b]);
		if (off) {
			*bucket = b;
			return off;
		}
	}
	abort();
}

/* An entry of map mi with (or without) an expiry slot; without, one whose
 * block has no room for a slot. */
static uint64_t entry_with(const struct seg *s, const struct seg_geom *g, uint32_t mi, bool exp)
{
	struct map_view v;
	if (shmmap__map_view(s, g, mi, &v) != 0)
		abort();
	for (uint32_t b = 0; b < v.nbuckets; b++) {
		for (uint64_t off = atomic_load(&v.buckets[b]); off;) {
			const struct seg_entry *e = shmmap__entry_at(s, &v, off);
			if (!e)
				abort();
			uint32_t vf = ent_vlenf(e);
			if (ent_has_expiry(vf) == exp &&
			    (exp || shmmap__block_size(s, g, off) < ent_size(e->klen, ent_vlen(vf), true)))
				return off;
			off = atomic_load(&((struct seg_entry *)e)->next);
		}
	}
	abort();
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	const char *d = argv[1];
	LLVMFuzzerInitialize(&argc, &argv);
	struct seg s = {.base = g_image, .len = IMG_SIZE, .fd = -1};
	const struct seg_geom *g = &g_geom0;
	struct seg_mapdir *d0 = seg_dir(&s, g, 0), *d1 = seg_dir(&s, g, 1);
	uint64_t dir0 = g->dir_off, dir1 = dir0 + sizeof(struct seg_mapdir);
	uint32_t b;
	uint64_t e0 = first_entry(&s, g, 0, &b);
	uint64_t bucket0 = d0->buckets_off + (uint64_t)b * 8;
	int bad = 0;

	/* The unpatched image (one patch writing what is there). */
	rec(0, g_image, 8);
	bad |= emit(d, "pristine");

	/* Header: another layout version; a max_maps whose geometry differs. */
	rec32(offsetof(struct seg_header, layout_version), 2);
	rec32(offsetof(struct seg_header, max_maps), 4096);
	bad |= emit(d, "header-geometry");

	/* Directory: map 0's bucket count not a power of two, map 1's stripes
	 * at map 0's buckets (overlapping tables). */
	rec32(dir0 + offsetof(struct seg_mapdir, nbuckets), 48);
	rec64(dir1 + offsetof(struct seg_mapdir, stripes_off), d0->buckets_off);
	bad |= emit(d, "dir-overlap");

	/* Directory: map 0 with a huge table, and key/value limits of 0. */
	rec32(dir0 + offsetof(struct seg_mapdir, nbuckets), 1u << 20);
	rec32(dir1 + offsetof(struct seg_mapdir, val_max), 0);
	rec32(dir1 + offsetof(struct seg_mapdir, key_max), 1);
	bad |= emit(d, "dir-limits");

	/* A bucket head pointing into the header, and one misaligned. */
	rec64(bucket0, 64);
	rec64(d1->buckets_off, d1->buckets_off + 3);
	bad |= emit(d, "bucket-bad-offsets");

	/* An entry whose next is itself: a cycle. */
	rec64(e0 + offsetof(struct seg_entry, next), e0);
	bad |= emit(d, "entry-cycle");

	/* An entry with a key length past the map's key_max and a value
	 * length running off the segment. */
	rec32(e0 + offsetof(struct seg_entry, klen), 65);
	rec32(e0 + offsetof(struct seg_entry, vlenf), 0xfffffff0u);
	bad |= emit(d, "entry-lengths");

	/* The expiry flag turned on where there is no slot and the block has
	 * no room for one (the key read 8 bytes late, the value past the
	 * block), and off where there is one (the expiry read as the key). */
	uint64_t ex = entry_with(&s, g, 0, true), nx = entry_with(&s, g, 0, false);
	const struct seg_entry *ee = seg_ptr(&s, ex), *ne = seg_ptr(&s, nx);
	rec32(nx + offsetof(struct seg_entry, vlenf), ne->vlenf | ENT_F_EXPIRE);
	rec32(ex + offsetof(struct seg_entry, vlenf), ee->vlenf & ~ENT_F_EXPIRE);
	bad |= emit(d, "entry-expiry-flag");

	/* Stripe 0 of map 0: odd sequence, lock held by slot 0 (alive). */
	rec32(d0->stripes_off + offsetof(struct seg_stripe, lock), 1);
	rec32(d0->stripes_off + offsetof(struct seg_stripe, seq), 7);
	bad |= emit(d, "stripe-held-odd");

	/* Slots: a LIVE slot 1 whose intent record area names an entry
	 * (raw words after the identity fields, whatever the record's
	 * layout), and a slot in an unknown state. */
	uint64_t sl1 = g->slots_off + sizeof(struct seg_slot);
	rec32(sl1 + offsetof(struct seg_slot, state), SLOT_LIVE);
	rec32(sl1 + offsetof(struct seg_slot, pid), 1);
	for (uint64_t w = offsetof(struct seg_slot, attached_ns) + 8;
	     w + 8 <= sizeof(struct seg_slot) && w < 160; w += 8)
		rec64(sl1 + w, w % 16 ? e0 : 2);
	rec32(g->slots_off + offsetof(struct seg_slot, state), 9);
	bad |= emit(d, "slots-intent");

	/* Undo records of slot 0 (dead once the write paths run) holding the
	 * lock of e0's stripe: naming e0, one with a value length past the
	 * record, one with the expiry flag flipped, one whole (its garbage
	 * bytes are put back); then a misaligned offset past the image.  The
	 * repair must check each before it writes anything. */
	uint32_t st0 = b & (d0->nstripes - 1);
	uint64_t u0 = g->slots_off + offsetof(struct seg_slot, undo);
	rec32(d0->stripes_off + (uint64_t)st0 * sizeof(struct seg_stripe) +
		      offsetof(struct seg_stripe, lock), 1);
	const struct seg_entry *e0p = seg_ptr(&s, e0);
	uint64_t offs[SEG_UNDOS] = {e0, e0, e0, (uint64_t)IMG_SIZE * 4 + 3};
	uint32_t vlenfs[SEG_UNDOS] = {SEG_UNDO_MAX + 1, e0p->vlenf ^ ENT_F_EXPIRE, e0p->vlenf, 5};
	for (uint64_t k = 0; k < SEG_UNDOS; k++) {
		uint64_t u = u0 + k * sizeof(struct seg_undo);
		rec64(u + offsetof(struct seg_undo, off), offs[k]);
		rec32(u + offsetof(struct seg_undo, map), 0);
		rec32(u + offsetof(struct seg_undo, stripe), st0);
		rec32(u + offsetof(struct seg_undo, vlenf), vlenfs[k]);
		rec64(u + offsetof(struct seg_undo, val), 0x5a5a5a5a5a5a5a5aull);
	}
	bad |= emit(d, "slots-undo");

	/* Page descriptors: every SLAB page's free link and carved count
	 * garbage; a run longer than the heap. */
	for (uint32_t i = 0; i < g->npages; i++) {
		const struct seg_page *p = seg_page(&s, g, i);
		uint64_t po = g->pages_off + (uint64_t)i * sizeof(struct seg_page);
		if (p->kind == PAGE_SLAB) {
			rec32(po + offsetof(struct seg_page, free), 17);
			rec32(po + offsetof(struct seg_page, carved), 0xffffu);
		} else if (p->kind == PAGE_RUN) {
			rec32(po + offsetof(struct seg_page, run), 1000);
		}
	}
	bad |= emit(d, "pages-garbage");

	/* Classes: partial list heads naming pages that are not slabs. */
	for (uint32_t c = 0; c < 8; c++)
		rec32(g->classes_off + (uint64_t)c * sizeof(struct seg_class) +
			      offsetof(struct seg_class, partial), c + 1);
	rec64(offsetof(struct seg_header, pool_free), 1000);
	bad |= emit(d, "classes-pool");
	return bad ? 1 : 0;
}
#endif
