/*
 * putfast.h - the rewrite in place (a present key's new value written into
 * the block its entry already has, crash-safe by an undo record), and
 * put's fast path built on it, compiled into shmmap_put (client.c).
 * table.c's general put, cas and incr rewrite through the same
 * rewrite_in_place(); the crash argument is struct seg_undo's
 * (internal.h), the repair table.c's undo_rewrites.
 *
 * Invariants it keeps:
 * - under the stripe lock only; the old value, its length and its expiry
 *   are in the writer's undo record before the record names the entry
 *   (release), and the record names it before the first byte changes;
 * - every change a reader could see (expiry, value, length) is inside one
 *   seq change of the stripe, and the record is cleared (the commit point)
 *   inside it, once the new value is whole;
 * - the entry's key, klen, map and whether it has an expiry slot never
 *   change in place; the new value fits the entry's block (the caller
 *   checked: the same size, or room in the block);
 * - put_fast takes the stripe lock by one CAS or not at all (never waits
 *   and never repairs: a held lock is the general path's), bounds-checks
 *   every offset it reads as get_fast does (getfast.h), and whatever it
 *   cannot do at once it leaves untouched: PUT_SLOW, the lock let go.
 */
#ifndef SHMMAP_PUTFAST_H
#define SHMMAP_PUTFAST_H

#include "getfast.h"

/*
 * Under the lock of stripe sb (st) of map `map`: entry e, at off, whose
 * value (at value) is old_vf's length, with old_exp its expiry if old_vf
 * has the slot, takes the value val (vlen bytes) and the expiry expire
 * (kept only if it has the slot), as if written now.  u: this write's undo
 * record, which is clear.
 */
static inline __attribute__((always_inline)) void
rewrite_in_place(struct seg_stripe *st, uint32_t map, uint32_t sb, struct seg_entry *e,
		 uint64_t off, unsigned char *value, uint32_t old_vf, uint64_t old_exp,
		 const void *val, uint32_t vlen, uint64_t expire, struct seg_undo *u)
{
	uint32_t old_vlen = ent_vlen(old_vf);
	u->map = map;
	u->stripe = sb;
	u->vlenf = old_vf;
	u->expire_ms = old_exp;
	copy_value(u->val, value, old_vlen);
	/* Release: the record is whole before it names the entry. */
	atomic_store_explicit(&u->off, off, memory_order_release);
	CRASH_POINT();
	/* Written now, for the evicting hand, its use count kept.  A plain
	 * store, not a locked CAS: a get that raises the count at the same
	 * instant may lose its raise (the count is a hint; the hand lowers it
	 * only under this stripe lock, which we hold).  Outside the seq
	 * change, which stays as short as the copy: no reader checks it
	 * against the value. */
	uint64_t m = atomic_load_explicit(&e->meta, memory_order_relaxed);
	uint64_t itime = (uint64_t)(shmmap__itime_coarse() & ITIME_MASK) << 32;
	atomic_store_explicit(&e->meta, (m & ~((uint64_t)ITIME_MASK << 32)) | itime,
			      memory_order_relaxed);
	CRASH_POINT();
	seq_begin(st);
	CRASH_POINT();
	if (ent_has_expiry(old_vf)) {
		ent_set_expiry(e, expire);
		CRASH_POINT();
	}
	copy_value(value, val, vlen);
	CRASH_POINT();
	__atomic_store_n(&e->vlenf, vlen | (old_vf & ENT_F_EXPIRE), __ATOMIC_RELAXED);
	CRASH_POINT();
	st->bytes += (uint64_t)vlen - old_vlen;
	/* The commit point, inside the seq change: before it no reader has
	 * seen a byte of the new value (a repair puts the old one back), after
	 * it the new value is whole and stays (a repair only ends the seq
	 * change and recounts). */
	atomic_store_explicit(&u->off, 0, memory_order_release);
	CRASH_POINT();
	seq_end(st);
	CRASH_POINT();
}

/* put_fast could not do the write: the general put (table.c) does it. */
#define PUT_SLOW 1

/*
 * put's first try, for the write a cache makes most: a present key's new
 * value (no flags, no expiry, at most SEG_UNDO_MAX bytes and the map's
 * value_max, in a map without a quota or a default ttl) of the same
 * length, or one that the entry's block holds and is of its size class
 * (shmmap__block_fits).  o: the write's context (its owner id for the
 * lock, its counters row); u: the undo record of its intent record (not
 * NULL).  Returns 0 (rewritten and counted) or PUT_SLOW (nothing changed,
 * *h the key's hash if klen is valid, else 0): a value over the map's
 * limit (the general put says -E2BIG), the lock held by another (which
 * may want a repair), the map not current, a resize under way, the key
 * absent, expired or with an expiry slot, another size class, an offset
 * or a length that does not validate.
 */
static inline __attribute__((always_inline)) int
put_fast(const struct op_ctx *o, struct seg_undo *u, const struct map_view *v, const void *key,
	 size_t klen, const void *val, size_t vlen, uint64_t *h)
{
	*h = 0;
	if (klen - 1 >= v->key_max)
		return PUT_SLOW; /* 0 or too long: the general path says which */
	uint64_t hh = XXH3_64bits_withSeed(key, klen, o->g->hash_seed);
	*h = hh;
	if (vlen >= v->put_vlim) /* (see map_view) */
		return PUT_SLOW;
	const struct seg *s = o->s;
	uint32_t sb = (uint32_t)hh & (v->nstripes - 1);
	struct seg_stripe *st = &v->stripes[sb];
	/* (No crash point here: a writer stopped at its first one must not
	 * hold a stripe lock yet; check_crash's stale writers rely on it.) */
	if (!shmmap__trylock(&st->lock, &o->lk))
		return PUT_SLOW;
	int rc = PUT_SLOW;
	uint64_t w = atomic_load_explicit(&v->dir->tbl, memory_order_acquire);
	if ((w & TBL_GROWING) || !view_live(v))
		goto out;
	size_t len = atomic_load_explicit(&s->len, memory_order_acquire);
	const _Atomic uint64_t *bw = bucket_word(s, v, w, hh, len);
	if (!bw)
		goto out;
	uint64_t off = atomic_load_explicit(bw, memory_order_relaxed);
	for (uint32_t steps = v->chain_max; off;) {
		/* In the heap (it writes there: never into the fixed regions),
		 * a whole header before the end, aligned. */
		if (!steps-- || off < v->heap_off || off > len - sizeof(struct seg_entry) ||
		    (off & (SEG_ALIGN - 1)))
			goto out;
		struct seg_entry *e = (struct seg_entry *)(s->base + off);
		uint64_t m = atomic_load_explicit(&e->meta, memory_order_relaxed);
		if (ENT_HASH(m) == (uint32_t)hh && GF_RELAXED(e->klen) == klen) {
			uint32_t vf = ent_vlenf(e);
			/* No expiry slot (then the key follows the header), an
			 * old value the undo record holds, all in the mapping. */
			if ((vf & ENT_F_EXPIRE) || vf > SEG_UNDO_MAX || vf > v->val_max ||
			    GF_RELAXED(e->map) != v->idx ||
			    len - off - ENT_HDR < (uint64_t)klen + vf)
				goto out;
			if (key_eq(e->data, key, klen)) {
				/* The same length, or one of the block's size class
				 * (a look at its page). */
				if (vlen != vf &&
				    !shmmap__block_fits(s, o->g, off, ent_size(klen, vlen, false)))
					goto out;
				rewrite_in_place(st, v->idx, sb, e, off, e->data + klen, vf, 0, val,
						 (uint32_t)vlen, 0, u);
				rc = 0;
				break;
			}
		}
		off = atomic_load_explicit(&e->next, memory_order_relaxed);
	}
out:
	shmmap__unlock(&st->lock);
	CRASH_POINT();
	if (rc == 0 && o->ctr)
		count(&o->ctr->puts);
	return rc;
}

#endif
