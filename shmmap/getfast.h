/*
 * getfast.h - the lock-free get, compiled into shmmap_get (client.c), and
 * the two small helpers the table's walks share with it (key_eq, count).
 *
 * get_fast() is one optimistic try: no lock, no retry, no call but the
 * value copy (and the clock, for an entry that has an expiry).  It answers
 * only what it can tell at once: a hit, a miss or a small buffer.
 * Anything else returns GET_SLOW and the caller takes table.c's
 * shmmap__tbl_get, which retries, locks, repairs and explains:
 * the stripe being written (odd seq), a resize under way (two arrays),
 * the seq or the table word moved meanwhile, an offset or a length that
 * does not validate, a chain longer than the heap can hold, an entry
 * found expired (the general path answers and counts it).
 *
 * Invariants it keeps (the same as the walk in table.c):
 * - every offset read from the segment is bounds-checked against the
 *   mapped length and aligned before it is dereferenced: a bucket before
 *   its word is read, an entry's header before its fields are, the
 *   entry's whole extent before its key is compared or its value copied;
 * - an entry whose hash or key length differs is stepped over after its
 *   header check alone (its key bytes are never read): so a chain with a
 *   corrupt entry that is not the key's may still give the key's answer
 *   (or -ENOENT) here, where the general path says -SHMMAP_ECORRUPT;
 *   either way every read stays inside the segment (shmmapctl check is
 *   what finds such damage);
 * - what was read counts only if the stripe's seq and the map's table
 *   word are the same after the reads as before (the seqlock of table.c:
 *   a reader never sees a half-made change, and an old array is freed
 *   only after the table word moved on);
 * - the use count is raised only by a CAS against the header word that
 *   was read and then validated, and only below its top.
 */
#ifndef SHMMAP_GETFAST_H
#define SHMMAP_GETFAST_H

#include <string.h>

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL
#endif
#include <xxhash.h>
/* Inline on every fast path (get's and put's): left to itself, GCC keeps
 * one inline copy in client.c and calls it elsewhere (a put paid about 10
 * instructions more for the call).  Keys over 16 bytes still go through
 * XXH3's own calls.  (Clang takes no attribute after a definition: the
 * fuzz build, the one built with it, leaves the choice to its inliner.) */
#if defined(__GNUC__) && !defined(__clang__)
static __inline __attribute__((always_inline, unused)) XXH64_hash_t
XXH3_64bits_withSeed(const void *input, size_t len, XXH64_hash_t seed);
#endif

#include "internal.h"

/* Keys of 8 to 16 bytes (a common case) compared inline, not by a call. */
static inline __attribute__((always_inline)) bool key_eq(const unsigned char *a, const void *b,
							 size_t n)
{
	if (n <= 16 && n >= 8) {
		uint64_t a0, a1, b0, b1;
		memcpy(&a0, a, 8);
		memcpy(&b0, b, 8);
		memcpy(&a1, a + n - 8, 8);
		memcpy(&b1, (const unsigned char *)b + n - 8, 8);
		return ((a0 ^ b0) | (a1 ^ b1)) == 0;
	}
	return memcmp(a, b, n) == 0;
}

/* One of this attachment's counters.  Only this attachment writes its
 * counters row (no shared hot line), with a plain load and store, not a
 * locked add: threads of one attachment that count at the same instant
 * may lose a count. */
static inline __attribute__((always_inline)) uint64_t count(_Atomic uint64_t *c)
{
	uint64_t n = atomic_load_explicit(c, memory_order_relaxed) + 1;
	atomic_store_explicit(c, n, memory_order_relaxed);
	return n;
}

#define GF_RELAXED(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* A value copy of a length known only now: 16 to 64 bytes as two
 * overlapping moves of 16 or 32 (no call; one range test, then which),
 * others by memcpy. */
static inline __attribute__((always_inline)) void copy_value(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *p = src;
	if (n - 16 <= 48) {
		if (n > 32) {
			memcpy(d, p, 32);
			memcpy(d + n - 32, p + n - 32, 32);
		} else {
			memcpy(d, p, 16);
			memcpy(d + n - 16, p + n - 16, 16);
		}
	} else {
		memcpy(d, p, n);
	}
}

/* The bucket word of hash h in the array that table word w names, if it
 * lies inside the heap and is aligned (aoff <= len first: then the sum
 * cannot wrap), else NULL.  len: the mapped length, the bound of every
 * offset (it only grows).  An array of a size that is not a power of two
 * would only name a wrong bucket in bounds: a miss here, damage for the
 * general path and check to find.  A client's view keeps a note of the
 * array under the word it saw last (struct arr_memo, internal.h): under
 * that word, the bucket is found with no check.  (put_fast's too.) */
static inline __attribute__((always_inline)) const _Atomic uint64_t *
bucket_word(const struct seg *s, const struct map_view *v, uint64_t w, uint64_t h, size_t len)
{
	/* The view's note of the array under w, if it has one (struct
	 * arr_memo): checked already, every bucket of it. */
	const struct arr_memo *mo = atomic_load_explicit(&v->memo, memory_order_acquire);
	if (__builtin_expect(mo->w == w, 1))
		return (const _Atomic uint64_t *)(s->base + mo->aoff + (h & mo->mask) * 8);
	const struct seg_array *a = &v->dir->arr[TBL_CUR(w)];
	uint64_t aoff = GF_RELAXED(a->off);
	uint32_t mask = GF_RELAXED(a->nbuckets) - 1;
	uint64_t bo = aoff + (h & mask) * 8;
	if (aoff > len || bo < v->heap_off || bo > len - 8 || (bo & 7))
		return NULL;
	shmmap__memo_note(v, w, aoff, mask, len); /* (a call: only after a change) */
	return (const _Atomic uint64_t *)(s->base + bo);
}

/* shmmap__tbl_get's first try (see the top of this file): 0 (a hit, the
 * value copied into buf), -ENOENT, -ENOBUFS (*vlen says the size),
 * GET_SLOW, or GET_LOOK (a hit as 0 is, and time for the caller's look at
 * the segment: internal.h; only with ctr).  ctr: this attachment's
 * counters of the map (map_view's ctr), or NULL. */
static inline __attribute__((always_inline)) int
get_fast(const struct seg *s, const struct seg_geom *g, const struct map_view *v,
	 struct seg_counters *ctr, const void *key, size_t klen, void *buf, size_t cap,
	 size_t *vlen)
{
	if (klen - 1 >= v->key_max)
		return GET_SLOW; /* 0 or too long: the general path says which */
	uint64_t h = XXH3_64bits_withSeed(key, klen, g->hash_seed);
	struct seg_stripe *st = &v->stripes[h & (v->nstripes - 1)];
	struct seg_mapdir *d = v->dir;
	uint32_t s1 = atomic_load_explicit(&st->seq, memory_order_acquire);
	uint64_t w = atomic_load_explicit(&d->tbl, memory_order_acquire);
	if ((s1 | w) & 1) /* a writer inside, or TBL_GROWING: two arrays */
		return GET_SLOW;
	size_t len = atomic_load_explicit(&s->len, memory_order_acquire);
	const _Atomic uint64_t *bw = bucket_word(s, v, w, h, len);
	if (!bw)
		return GET_SLOW;
	uint64_t off = atomic_load_explicit(bw, memory_order_acquire);
	const struct seg_entry *e = NULL;
	uint64_t meta = 0;
	uint32_t vl = 0, steps = v->chain_max;
	while (off) {
		/* len >= a header: the heap starts past the fixed regions. */
		if (!steps-- || off > len - sizeof *e || (off & (SEG_ALIGN - 1)))
			return GET_SLOW;
		const struct seg_entry *c = (const struct seg_entry *)(s->base + off);
		uint64_t m = atomic_load_explicit(&((struct seg_entry *)c)->meta,
						  memory_order_relaxed);
		uint64_t next = atomic_load_explicit(&((struct seg_entry *)c)->next,
						     memory_order_acquire);
		if (ENT_HASH(m) == (uint32_t)h && GF_RELAXED(c->klen) == klen) {
			/* One copy of the flag word: the bounds checked are those used. */
			uint32_t vf = ent_vlenf(c), hs = ent_hdr_size(vf);
			vl = ent_vlen(vf);
			if (vl > v->val_max || GF_RELAXED(c->map) != v->idx ||
			    len - off - sizeof *c < (hs - sizeof *c) + klen + vl)
				return GET_SLOW;
			const unsigned char *k = (const unsigned char *)c + hs;
			if (key_eq(k, key, klen)) {
				uint64_t exp = ent_expiry(c, vf);
				if (exp && exp <= shmmap__now_ms())
					return GET_SLOW; /* expired: the general path says so */
				e = c;
				meta = m;
				if (vl && vl <= cap) /* buf may be NULL when cap is 0 */
					copy_value(buf, k + klen, vl);
				break;
			}
		}
		off = next;
	}
	/* Was it all one state?  (read_end in table.c.) */
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&st->seq, memory_order_relaxed) != s1 ||
	    atomic_load_explicit(&d->tbl, memory_order_relaxed) != w)
		return GET_SLOW;
	if (!e) {
		if (ctr)
			count(&ctr->misses);
		return -ENOENT;
	}
	if (ctr) {
		uint64_t n = count(&ctr->hits);
		ent_mark_used(e, meta);
		if (__builtin_expect((n & (GET_LOOK_EVERY - 1)) == 0, 0) && vl <= cap) {
			if (vlen)
				*vlen = vl;
			return GET_LOOK;
		}
	}
	if (vlen)
		*vlen = vl;
	return vl > cap ? -ENOBUFS : 0;
}

#endif
