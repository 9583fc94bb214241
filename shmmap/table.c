/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * table.c - one named map: a bucket array of entry offsets, chained
 * entries, and lock stripes (see struct seg_stripe in internal.h).
 *
 * Writers (put, del, incr) take the stripe lock of the key's bucket.
 * Readers (get) take no lock: they use the stripe's seqlock.
 *
 * Publication order (crash safety): an entry is written completely, then
 * linked with one aligned 8-byte release store (into a bucket head or the
 * predecessor's next).  Unlinking is one store too.  A process killed
 * between any two instructions leaves every chain walkable; the worst it
 * leaves is a block that is allocated but unreachable (see check.c).
 * The one change in place: a present key whose new value is of its
 * entry's size class and at most SEG_UNDO_MAX bytes is rewritten in its
 * own block inside a seq change, with the old value in the writer's undo
 * record first (struct seg_undo; "rewriting in place" below): whoever
 * takes a dead writer's lock over puts the old value back.
 *
 * Seqlock (Boehm 2012, the C11 form that is actually correct):
 *   writer (holding the stripe lock), around any change that makes an entry
 *   unreachable or reachable in place of another, or rewrites one in place:
 *       seq = s + 1 (relaxed); fence(release); ...changes...; seq = s + 2 (release)
 *   reader:
 *       s1 = seq (acquire); if odd retry; walk and copy out;
 *       fence(acquire); s2 = seq (relaxed); if s1 != s2 retry
 *   An insertion at the head of a chain needs no seq change: a reader sees
 *   the chain with or without the new, fully written entry.
 *   An unlinked entry is freed only after the seq change, so a reader that
 *   might still hold it always retries.  Every offset and length read
 *   during a walk is validated before use (it may be torn garbage), walks
 *   are bounded, and a reader that keeps failing falls back to taking the
 *   stripe lock, which also repairs the stripe of a dead writer.
 *
 * Growth (grow.c has the whole protocol).  A map's bucket arrays are named
 * by its table word (struct tbl, read afresh by every operation): the
 * current array, and during a resize the old one, whose bucket b is either
 * a chain or BUCKET_MOVED.  A stripe guards the same hashes in both, so:
 *   reader: s1 = seq; tbl = table word; chain = old[h] unless moved, else
 *           cur[h]; walk; fence; retry unless seq == s1 and the word is
 *           still tbl (an array is freed only after the word moved on);
 *   writer: under the stripe lock, read the word, move h's old bucket (and
 *           one more of the stripe: move_some), then work in cur alone.
 * A bucket moves inside one seq change (move_chain has the crash argument);
 * stripe_repair finishes a move a dead writer left.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "internal.h"
#include "putfast.h"

#define READ_TRIES 256

#define RELAXED(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

uint64_t shmmap__hash(const struct seg_geom *g, const void *key, size_t klen)
{
	return XXH3_64bits_withSeed(key, klen, g->hash_seed);
}

const struct arr_memo shmmap__memo_none = {.w = TBL_GROWING};

/* ---- maps ---- */

uint64_t shmmap__table_bytes(uint32_t nbuckets, uint32_t nstripes)
{
	return (uint64_t)nstripes * sizeof(struct seg_stripe) + (uint64_t)nbuckets * 8;
}

static uint64_t table_bytes(const struct map_params *p)
{
	return shmmap__table_bytes(p->nbuckets, p->nstripes);
}

int shmmap__map_create(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		       uint32_t idx, const char *name, const struct map_params *p)
{
	if (idx >= g->max_maps || !p->nbuckets || (p->nbuckets & (p->nbuckets - 1)) ||
	    !p->nstripes || (p->nstripes & (p->nstripes - 1)) || p->nstripes > p->nbuckets ||
	    p->nbuckets > SEG_BUCKETS_MAX || (p->max_buckets & (p->max_buckets - 1)) ||
	    strlen(name) == 0 || strlen(name) > SHMMAP_NAME_MAX)
		return -EINVAL;
	struct seg_mapdir *d = seg_dir(s, g, idx);
	if (atomic_load(&d->state) != MAP_FREE)
		return -EBUSY;
	uint64_t pages = (table_bytes(p) + SEG_PAGE - 1) / SEG_PAGE, off;
	if (d->stripes_off && d->nbuckets == p->nbuckets && d->nstripes == p->nstripes) {
		/* The emptied table of a dropped map: reuse it as it is (its
		 * lock words may still be touched by stale clients). */
		off = d->stripes_off;
	} else {
		if (pages > g->npages_max)
			return -ENOSPC;
		/* The old table (another geometry) is let go first: the directory
		 * never names a run that the sweep would not keep. */
		d->stripes_off = 0;
		uint32_t first;
		int rc = shmmap__alloc_pages(s, g, c, (uint32_t)pages, &first);
		if (rc < 0)
			return rc;
		off = seg_page_off(g, first);
		memset(seg_ptr(s, off), 0, pages * SEG_PAGE);
		/* A crash before the directory names the run leaks it until the
		 * next sweep (the coordinator sweeps at every start). */
		d->table_pages = first;
	}
	atomic_store(&d->state, MAP_INIT);
	memset(d->name, 0, sizeof d->name);
	memcpy(d->name, name, strlen(name));
	d->stripes_off = off;
	d->buckets_off = off + (uint64_t)p->nstripes * sizeof(struct seg_stripe);
	d->nbuckets = p->nbuckets;
	d->nstripes = p->nstripes;
	d->key_max = p->key_max;
	d->val_max = p->val_max;
	d->policy = p->policy;
	d->pad1 = 0;
	d->quota = p->quota;
	d->default_ttl = p->default_ttl;
	d->max_buckets = p->max_buckets && p->max_buckets < SEG_BUCKETS_MAX ? p->max_buckets
									  : SEG_BUCKETS_MAX;
	if (d->max_buckets < p->nbuckets)
		d->max_buckets = p->nbuckets;
	/* The initial array is the current one; no other (a reused table was
	 * put back to its initial array by the drop, see grow.c). */
	d->arr[0] = (struct seg_array){.off = d->buckets_off, .nbuckets = p->nbuckets};
	d->arr[1] = (struct seg_array){0};
	/* No move in progress, none done: the next resize starts from 0.  A
	 * reused table also starts with the counters of a new map: the
	 * dropped map's evictions, expirations and lock waits are not this
	 * one's.  No lock is needed: every stripe was emptied (entries,
	 * bytes, slots zeroed) under its lock by the drop, and a stale
	 * writer that takes one of these locks now sees the generation
	 * moved (view_live) before it counts anything under it; nothing is
	 * published until the release store of MAP_LIVE below.  Only a
	 * stale waiter (one that resolved its handle before the drop) may
	 * still add a lock wait: a wait on this lock word that did happen.
	 * seq is left as it is: a stale reader's retry must still see it
	 * move. */
	for (uint32_t i = 0; i < p->nstripes; i++) {
		struct seg_stripe *sp = (struct seg_stripe *)seg_ptr(s, off) + i;
		sp->move_next = 0;
		sp->move_bucket = 0;
		atomic_store(&sp->moving, 0);
		sp->evictions = 0;
		sp->expirations = 0;
		atomic_store_explicit(&sp->lock_waits, 0, memory_order_relaxed);
	}
	atomic_store(&d->tbl, (atomic_load(&d->tbl) | (TBL_GEN_ONE - 1)) + 1);
	atomic_store(&d->resizes, 0);
	atomic_store(&d->clock_hand, 0);
	d->created_ns = shmmap__now_ns();
	/* Zero every client's counters row for this map. */
	for (uint32_t i = 0; i < g->max_clients; i++)
		memset(seg_ctr(s, g, i, idx), 0, sizeof(struct seg_counters));
	atomic_fetch_add(&d->gen, 1);
	/* Publish: everything above is visible to whoever sees MAP_LIVE. */
	atomic_store_explicit(&d->state, MAP_LIVE, memory_order_release);
	return 0;
}

static int view_fill(const struct seg *s, const struct seg_geom *g, uint32_t idx,
		     struct map_view *v);

int shmmap__map_view(const struct seg *s, const struct seg_geom *g, uint32_t idx,
		     struct map_view *v)
{
	if (idx >= g->max_maps)
		return -EINVAL;
	const struct seg_mapdir *d = seg_dir(s, g, idx);
	if (atomic_load_explicit((_Atomic uint32_t *)&d->state, memory_order_acquire) != MAP_LIVE)
		return -ENOENT;
	return view_fill(s, g, idx, v);
}

/* A view of a map being dropped (MAP_INIT with dropping set), to empty it. */
static int dropping_view(const struct seg *s, const struct seg_geom *g, uint32_t idx,
			 struct map_view *v)
{
	if (idx >= g->max_maps)
		return -EINVAL;
	struct seg_mapdir *d = seg_dir(s, g, idx);
	if (atomic_load(&d->state) != MAP_INIT || !atomic_load(&d->dropping))
		return -ENOENT;
	return view_fill(s, g, idx, v);
}

int shmmap__map_view_linked(const struct seg *s, const struct seg_geom *g, uint32_t idx,
			    struct map_view *v)
{
	int rc = shmmap__map_view(s, g, idx, v);
	return rc == -ENOENT ? dropping_view(s, g, idx, v) : rc;
}

static int view_fill(const struct seg *s, const struct seg_geom *g, uint32_t idx,
		     struct map_view *v)
{
	const struct seg_mapdir *d = seg_dir(s, g, idx);
	struct map_view w = {
		.idx = idx,
		.gen = atomic_load_explicit((_Atomic uint32_t *)&d->gen, memory_order_relaxed),
		.nbuckets = d->nbuckets, .nstripes = d->nstripes,
		.key_max = d->key_max, .val_max = d->val_max, .policy = d->policy,
		.max_buckets = d->max_buckets, .heap_off = g->heap_off,
		.quota = d->quota, .default_ttl = d->default_ttl,
	};
	/* The directory is trusted no more than any other shared byte. */
	if (!w.nbuckets || (w.nbuckets & (w.nbuckets - 1)) || !w.nstripes ||
	    (w.nstripes & (w.nstripes - 1)) || w.nstripes > w.nbuckets || !w.key_max ||
	    w.nbuckets > SEG_BUCKETS_MAX ||
	    !seg_ok(s, d->buckets_off, (uint64_t)w.nbuckets * 8, 8) ||
	    !seg_ok(s, d->stripes_off, (uint64_t)w.nstripes * sizeof(struct seg_stripe), 64) ||
	    d->buckets_off < g->heap_off || d->stripes_off < g->heap_off)
		return -SHMMAP_ECORRUPT;
	/* No chain holds more entries than the heap has smallest blocks. */
	uint64_t blocks = (uint64_t)g->npages_max * (SEG_PAGE / 48) + 1;
	w.chain_max = blocks < SEG_CHAIN_MAX ? (uint32_t)blocks : SEG_CHAIN_MAX;
	w.buckets = seg_ptr(s, d->buckets_off);
	w.stripes = seg_ptr(s, d->stripes_off);
	w.dir = (struct seg_mapdir *)d;
	w.live = dir_live_word(w.gen);
	w.memo = &shmmap__memo_none;
	w.put_vlim = w.quota || w.default_ttl
			     ? 0
			     : (w.val_max < SEG_UNDO_MAX ? w.val_max : SEG_UNDO_MAX) + 1;
	*v = w;
	return 0;
}

/* ---- entries ---- */

/* A validated copy of an entry's header fields. */
struct ent {
	const struct seg_entry *e;
	const unsigned char *key; /* its key bytes, then its value bytes */
	uint64_t next, expire_ms, meta;
	uint32_t hash, klen, vlen;
};

/* Inlined into every walk: the read path is a few loads, not calls. */
static inline __attribute__((always_inline)) bool ent_load(const struct seg *s,
							     const struct map_view *v,
							     uint64_t off, struct ent *o)
{
	if (!seg_ok(s, off, sizeof(struct seg_entry), SEG_ALIGN))
		return false;
	const struct seg_entry *e = seg_ptr(s, off);
	/* One copy of the flag word: the bounds checked are those used. */
	uint32_t vlenf = ent_vlenf(e), hdr = ent_hdr_size(vlenf);
	o->e = e;
	o->klen = RELAXED(e->klen);
	o->vlen = ent_vlen(vlenf);
	if (o->klen == 0 || o->klen > v->key_max || o->vlen > v->val_max ||
	    RELAXED(e->map) != v->idx ||
	    !seg_ok(s, off, (uint64_t)hdr + o->klen + o->vlen, SEG_ALIGN))
		return false;
	o->meta = atomic_load_explicit(&((struct seg_entry *)e)->meta, memory_order_relaxed);
	o->hash = ENT_HASH(o->meta);
	o->expire_ms = ent_expiry(e, vlenf);
	o->key = (const unsigned char *)e + hdr; /* ent_key */
	o->next = atomic_load_explicit(&((struct seg_entry *)e)->next, memory_order_acquire);
	return true;
}

/* Has the validated entry an expiry slot (its key is not right after the
 * header)?  For the stripe's count of slots. */
static inline bool ent_slot(const struct ent *en)
{
	return en->key != en->e->data;
}

const struct seg_entry *shmmap__entry_at(const struct seg *s, const struct map_view *v,
					 uint64_t off)
{
	struct ent en;
	return ent_load(s, v, off, &en) ? en.e : NULL;
}

/* ---- the bucket arrays ---- */

static inline __attribute__((always_inline)) bool arr_load(const struct seg *s,
							     const struct map_view *v,
							     const struct seg_array *a,
							     _Atomic uint64_t **p, uint32_t *n)
{
	uint64_t off = RELAXED(a->off);
	uint32_t nb = RELAXED(a->nbuckets);
	if (nb < v->nstripes || (nb & (nb - 1)) || nb > SEG_BUCKETS_MAX || off < v->heap_off ||
	    !seg_ok(s, off, (uint64_t)nb * 8, 8))
		return false;
	*p = seg_ptr(s, off);
	*n = nb;
	return true;
}

bool shmmap__tbl_load(const struct seg *s, const struct map_view *v, struct tbl *t)
{
	/* Acquire: the arrays the word names were written before it. */
	uint64_t w = atomic_load_explicit(&v->dir->tbl, memory_order_acquire);
	uint32_t c = TBL_CUR(w);
	t->word = w;
	t->old = NULL;
	t->old_n = 0;
	if (!arr_load(s, v, &v->dir->arr[c], &t->cur, &t->cur_n))
		return false;
	if (!(w & TBL_GROWING))
		return true;
	return arr_load(s, v, &v->dir->arr[c ^ 1], &t->old, &t->old_n) && t->old_n < t->cur_n &&
	       t->cur_n / t->old_n <= GROW_FACTOR_MAX;
}

/* The link that heads the chain of hash h: its old bucket unless that
 * moved to the new array. */
static inline __attribute__((always_inline)) _Atomic uint64_t *tbl_head(const struct tbl *t,
									  uint64_t h)
{
	if (t->old_n) {
		_Atomic uint64_t *l = &t->old[h & (t->old_n - 1)];
		if (atomic_load_explicit(l, memory_order_acquire) != BUCKET_MOVED)
			return l;
	}
	return &t->cur[h & (t->cur_n - 1)];
}

static bool expired(uint64_t expire_ms, uint64_t *now)
{
	if (expire_ms == 0)
		return false;
	if (*now == 0)
		*now = shmmap__now_ms();
	return expire_ms <= *now;
}

enum walk { W_FOUND, W_ABSENT, W_EXPIRED, W_TORN };

/*
 * Find key in the chain headed by link l.  On W_FOUND/W_EXPIRED *link points at the link that
 * holds the entry's offset (bucket head or predecessor's next), *found at
 * the validated entry.  Used by readers (racing) and writers (locked).
 */
static inline __attribute__((always_inline)) enum walk
walk(const struct seg *s, const struct map_view *v, _Atomic uint64_t *l, uint64_t h,
		      const void *key, size_t klen, _Atomic uint64_t **link, struct ent *found,
		      uint64_t *now)
{
	uint64_t off = atomic_load_explicit(l, memory_order_acquire);
	for (uint32_t steps = 0; off; steps++) {
		if (steps >= v->chain_max || !ent_load(s, v, off, found))
			return W_TORN;
		if (found->hash == (uint32_t)h && found->klen == klen &&
		    key_eq(found->key, key, klen)) {
			if (link)
				*link = l;
			return expired(found->expire_ms, now) ? W_EXPIRED : W_FOUND;
		}
		l = (_Atomic uint64_t *)&found->e->next;
		off = found->next;
	}
	return W_ABSENT;
}

static inline struct seg_stripe *stripe_of(const struct map_view *v, uint32_t b)
{
	return &v->stripes[b & (v->nstripes - 1)];
}

/* Is the entry at off in the chain that l heads (a bounded walk)? */
static bool in_chain(const struct seg *s, const struct map_view *v, _Atomic uint64_t *l,
		     uint64_t off)
{
	struct ent en;
	uint64_t cur = atomic_load_explicit(l, memory_order_acquire);
	for (uint32_t steps = 0; cur && cur != BUCKET_MOVED && steps < v->chain_max; steps++) {
		if (cur == off)
			return true;
		if (!ent_load(s, v, cur, &en))
			return false;
		cur = en.next;
	}
	return false;
}

/* Under the stripe lock: is the entry at off linked in its bucket of t (the
 * old bucket unless it moved, else the new one; both after a dead mover)? */
static bool linked(const struct seg *s, const struct map_view *v, const struct tbl *t,
		   uint32_t stripe, uint64_t off)
{
	struct ent en;
	if (!off || !ent_load(s, v, off, &en) || (en.hash & (v->nstripes - 1)) != stripe)
		return false;
	if (t->old_n && in_chain(s, v, &t->old[en.hash & (t->old_n - 1)], off))
		return true;
	return in_chain(s, v, &t->cur[en.hash & (t->cur_n - 1)], off);
}

bool shmmap__tbl_linked(const struct seg *s, const struct map_view *v, uint64_t off)
{
	struct ent en;
	struct tbl t;
	if (!off || !ent_load(s, v, off, &en) || !shmmap__tbl_load(s, v, &t))
		return false;
	return linked(s, v, &t, (uint32_t)en.hash & (v->nstripes - 1), off);
}

/* The link at the end of the chain that l heads; a link to an entry that
 * does not validate is cut (stored 0) and returned. */
static _Atomic uint64_t *chain_tail(const struct seg *s, const struct map_view *v,
				    _Atomic uint64_t *l)
{
	struct ent en;
	uint64_t off = atomic_load_explicit(l, memory_order_relaxed);
	for (uint32_t steps = 0; off; steps++) {
		if (steps >= v->chain_max || !ent_load(s, v, off, &en)) {
			atomic_store_explicit(l, 0, memory_order_release);
			break;
		}
		l = (_Atomic uint64_t *)&en.e->next;
		off = en.next;
	}
	return l;
}

/*
 * Moving a bucket (during a resize; under the stripe lock, inside a seq
 * change, so readers of the stripe retry).  Old bucket ob's entries go to
 * new buckets ob + k * old_n (same stripe: nstripes <= old_n), appended in
 * order, one at a time:
 *     moving = E; old[ob] = E.next; E.next = 0; tail(new[x]) = E; moving = 0
 * then old[ob] = BUCKET_MOVED.  st->move_bucket names ob meanwhile.  At
 * every instant each entry is linked in old[ob] or its new bucket, except
 * E between its unlink and its append, which st->moving names.  Whoever
 * takes a dead mover's lock over (stripe_repair, move_resume) appends E
 * unless a chain already holds it, and finishes the bucket, before the
 * stripe's seq is even again: no reader ever sees a half-moved bucket.
 */
static void move_chain(const struct seg *s, const struct map_view *v, const struct tbl *t,
		       struct seg_stripe *st, uint32_t ob)
{
	_Atomic uint64_t *ol = &t->old[ob];
	uint32_t f = t->cur_n / t->old_n;
	_Atomic uint64_t *tail[GROW_FACTOR_MAX];
	/* Empty unless a mover died here: append after what they hold. */
	for (uint32_t k = 0; k < f; k++)
		tail[k] = chain_tail(s, v, &t->cur[ob + k * t->old_n]);
	st->move_bucket = ob + 1;
	CRASH_POINT();
	struct ent en;
	uint64_t off = atomic_load_explicit(ol, memory_order_relaxed);
	for (uint32_t steps = 0; off && off != BUCKET_MOVED; steps++) {
		if (steps >= v->chain_max || !ent_load(s, v, off, &en)) {
			/* Corrupt (a scribbler's doing, never a crash's): cut here. */
			atomic_store_explicit(ol, 0, memory_order_release);
			break;
		}
		struct seg_entry *e = (struct seg_entry *)en.e;
		atomic_store_explicit(&st->moving, off, memory_order_relaxed);
		CRASH_POINT();
		atomic_store_explicit(ol, en.next, memory_order_release);
		CRASH_POINT();
		atomic_store_explicit(&e->next, 0, memory_order_relaxed);
		CRASH_POINT();
		uint32_t k = (uint32_t)((en.hash & (t->cur_n - 1)) / t->old_n);
		/* Release: E.next = 0 before E is reachable from its new chain. */
		atomic_store_explicit(tail[k], off, memory_order_release);
		CRASH_POINT();
		tail[k] = &e->next;
		atomic_store_explicit(&st->moving, 0, memory_order_relaxed);
		CRASH_POINT();
		off = en.next;
	}
	atomic_store_explicit(ol, BUCKET_MOVED, memory_order_release);
	CRASH_POINT();
	st->move_bucket = 0;
	CRASH_POINT();
}

/* Repair: finish the bucket move a dead mover left (see move_chain). */
static void move_resume(const struct seg *s, const struct map_view *v, const struct tbl *t,
			struct seg_stripe *st, uint32_t stripe)
{
	uint32_t mb = st->move_bucket;
	uint64_t e = atomic_load_explicit(&st->moving, memory_order_relaxed);
	if (!mb || !t->old_n || mb - 1 >= t->old_n || ((mb - 1) & (v->nstripes - 1)) != stripe) {
		atomic_store_explicit(&st->moving, 0, memory_order_relaxed);
		st->move_bucket = 0;
		return;
	}
	uint32_t ob = mb - 1;
	struct ent en;
	if (e && ent_load(s, v, e, &en) && (en.hash & (t->old_n - 1)) == ob &&
	    !in_chain(s, v, &t->old[ob], e) &&
	    !in_chain(s, v, &t->cur[en.hash & (t->cur_n - 1)], e)) {
		/* Unlinked from the old chain, not yet appended to the new. */
		_Atomic uint64_t *l = chain_tail(s, v, &t->cur[en.hash & (t->cur_n - 1)]);
		atomic_store_explicit(&((struct seg_entry *)en.e)->next, 0, memory_order_relaxed);
		atomic_store_explicit(l, e, memory_order_release);
	}
	atomic_store_explicit(&st->moving, 0, memory_order_relaxed);
	if (atomic_load_explicit(&t->old[ob], memory_order_relaxed) != BUCKET_MOVED)
		move_chain(s, v, t, st, ob);
	else
		st->move_bucket = 0;
}

/* Recount one chain of a stripe under repair (inside its seq change), and
 * cut it at a link that does not validate (a dead writer cannot leave one,
 * a scribbler can). */
static void recount_chain(const struct seg *s, const struct map_view *v, _Atomic uint64_t *l,
			  uint64_t *entries, uint64_t *bytes, uint64_t *slots)
{
	uint64_t off = atomic_load(l);
	if (off == BUCKET_MOVED)
		return;
	struct ent en;
	for (uint32_t steps = 0; off; steps++) {
		if (steps >= v->chain_max || !ent_load(s, v, off, &en)) {
			atomic_store_explicit(l, 0, memory_order_release);
			break;
		}
		(*entries)++;
		*bytes += en.klen + en.vlen;
		*slots += ent_slot(&en);
		l = (_Atomic uint64_t *)&en.e->next;
		off = en.next;
	}
}

static void undo_rewrites(const struct op_ctx *o, const struct map_view *v, const struct tbl *t,
			  uint32_t stripe);

void shmmap__stripe_repair(const struct op_ctx *o, const struct map_view *v, uint32_t stripe)
{
	struct seg_stripe *st = &v->stripes[stripe];
	struct tbl t;
	if (!shmmap__tbl_load(o->s, v, &t)) {
		/* A scribbled table word: the initial array is the best guess. */
		t = (struct tbl){.cur = v->buckets, .cur_n = v->nbuckets};
	}
	/* The seq stays odd (a dead writer's, or made so here) until the
	 * stripe is whole again: a half-moved bucket is never read. */
	uint32_t q = atomic_load(&st->seq);
	if (!(q & 1))
		seq_begin(st);
	CRASH_POINT(); /* a repairer stopped here holds a stripe not yet repaired */
	move_resume(o->s, v, &t, st, stripe);
	undo_rewrites(o, v, &t, stripe);
	/*
	 * The dead writer's intent: under this lock it either made its store
	 * (the new entry a is linked, the old entry b is not) or it did not.
	 * A block that is linked is no longer in flight: its record is cleared
	 * (a CAS, so a concurrent free of another block is not undone).  What
	 * stays recorded is unreachable and the dead slot's alone, for the
	 * coordinator to free.  Only a dead writer's record can name a linked
	 * block here: a live one clears a and unlinks b before it unlocks.
	 */
	for (uint32_t i = 0; i < o->g->max_clients; i++) {
		struct seg_slot *sl = seg_slot(o->s, o->g, i);
		for (uint32_t k = 0; k < SEG_INTENTS; k++) {
			struct seg_intent *in = &sl->intent[k];
			uint64_t a = atomic_load(&in->a), b = atomic_load(&in->b);
			if ((!a && !b) || atomic_load(&in->map) != v->idx ||
			    atomic_load(&in->stripe) != stripe)
				continue;
			if (a && linked(o->s, v, &t, stripe, a))
				atomic_compare_exchange_strong(&in->a, &a, 0);
			if (b && linked(o->s, v, &t, stripe, b))
				atomic_compare_exchange_strong(&in->b, &b, 0);
		}
	}
	uint64_t entries = 0, bytes = 0, slots = 0;
	for (uint32_t b = stripe; b < t.old_n; b += v->nstripes)
		recount_chain(o->s, v, &t.old[b], &entries, &bytes, &slots);
	for (uint32_t b = stripe; b < t.cur_n; b += v->nstripes)
		recount_chain(o->s, v, &t.cur[b], &entries, &bytes, &slots);
	st->entries = entries;
	st->bytes = bytes;
	st->slots = slots;
	seq_end(st);
}

/* 0, or -EBUSY (only for a bounded lock_ctx, the coordinator's: the lock
 * is not held, and the caller gives up). */
static inline int stripe_lock(const struct op_ctx *o, const struct map_view *v, uint32_t b)
{
	struct seg_stripe *st = stripe_of(v, b);
	int rc = shmmap__lock(&st->lock, &o->lk, (uint64_t *)&st->lock_waits);
	if (rc == 1)
		shmmap__stripe_repair(o, v, b & (v->nstripes - 1));
	return rc < 0 ? rc : 0;
}

/* Extra old buckets a writer moves, in order, besides its own. */
#define GROW_HELP 1u

/* Under the stripe lock, during a resize: move up to budget of the
 * stripe's old buckets in order; returns how many are left to move. */
static uint32_t move_some(const struct seg *s, const struct map_view *v, const struct tbl *t,
			  uint32_t stripe, uint32_t budget)
{
	struct seg_stripe *st = &v->stripes[stripe];
	uint32_t per = t->old_n / v->nstripes;
	/* Moved buckets (by writers, out of order) are skipped: bounded too. */
	uint64_t scan_max = 64ull * budget + 64u;
	for (uint64_t scanned = 0; st->move_next < per && budget && scanned < scan_max; scanned++) {
		uint32_t ob = stripe + st->move_next * v->nstripes;
		if (atomic_load_explicit(&t->old[ob], memory_order_relaxed) != BUCKET_MOVED) {
			seq_begin(st);
			move_chain(s, v, t, st, ob);
			seq_end(st);
			budget--;
		}
		st->move_next++;
	}
	return st->move_next < per ? per - st->move_next : 0;
}

/*
 * Under the stripe lock of hash h (after view_live): the arrays; during
 * a resize, h's old bucket is moved first (and GROW_HELP more of the
 * stripe's), so that the writer works in t->cur alone.  False if the table
 * does not validate.
 */
static inline bool tbl_locked(const struct op_ctx *o, const struct map_view *v, uint64_t h,
		       struct tbl *t)
{
	if (!shmmap__tbl_load(o->s, v, t))
		return false;
	if (t->old_n) {
		struct seg_stripe *st = stripe_of(v, (uint32_t)h);
		uint32_t ob = (uint32_t)h & (t->old_n - 1);
		if (atomic_load_explicit(&t->old[ob], memory_order_relaxed) != BUCKET_MOVED) {
			seq_begin(st);
			move_chain(o->s, v, t, st, ob);
			seq_end(st);
		}
		move_some(o->s, v, t, (uint32_t)h & (v->nstripes - 1), GROW_HELP);
	}
	return true;
}

int shmmap__tbl_move(const struct op_ctx *o, const struct map_view *v, uint32_t stripe,
		     uint32_t budget, bool wait)
{
	if (stripe >= v->nstripes)
		return -EINVAL;
	struct seg_stripe *st = &v->stripes[stripe];
	if (wait)
		stripe_lock(o, v, stripe);
	else if (!shmmap__trylock(&st->lock, &o->lk))
		return -EBUSY;
	struct tbl t;
	int rc;
	if (!view_live(v))
		rc = -ESTALE;
	else if (!shmmap__tbl_load(o->s, v, &t))
		rc = -SHMMAP_ECORRUPT;
	else
		rc = t.old_n ? (int)move_some(o->s, v, &t, stripe, budget) : 0;
	shmmap__unlock(&st->lock);
	return rc;
}

uint64_t shmmap__tbl_entries(const struct map_view *v)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < v->nstripes; i++)
		n += __atomic_load_n(&v->stripes[i].entries, __ATOMIC_RELAXED);
	return n;
}

/* A writer's stripe is over the load factor (its share of the buckets):
 * the coordinator decides, on the map's total. */
static bool over_load(const struct op_ctx *o, const struct map_view *v, const struct tbl *t,
		      const struct seg_stripe *st)
{
	if (t->old_n || t->cur_n >= v->max_buckets)
		return false;
	uint64_t load = st->entries * v->nstripes * 100u;
	/* The plain limit first (grow_load_pct is never below it): most
	 * writes stop there without reading the heap's size. */
	return load > (uint64_t)t->cur_n * GROW_LOAD_PCT &&
	       load > (uint64_t)t->cur_n * grow_load_pct(o->s, o->g, t->cur_n);
}


/*
 * The reader's side of the seqlock, shared by get and the walk: a try is
 * read_begin(), then the reads, then read_end(), which says whether what
 * was read is consistent.  After READ_TRIES failed tries the reader takes
 * the stripe lock (which also repairs the stripe of a dead writer); on a
 * read-only mapping, which cannot lock, it yields and gives up with
 * -EAGAIN after READ_TRIES * 64 (the coordinator repairs a dead writer's
 * stripe meanwhile).  read_done() releases the lock if it was taken.
 */
struct reader {
	struct seg_stripe *st;
	_Atomic uint64_t *tw;  /* the map's table word */
	uint64_t t1;           /* its value when the arrays were read */
	uint32_t s1;
	int tries;
	bool locked;
};

/* 0: read now; 1: the stripe is being written, try again; -EAGAIN. */
static inline int read_begin(const struct op_ctx *o, const struct map_view *v, uint32_t b,
			     struct reader *r)
{
	if (r->tries++ >= READ_TRIES && !r->locked) {
		if (o->s->rdonly) {
			if (r->tries > READ_TRIES * 64)
				return -EAGAIN;
			sched_yield();
		} else {
			int rc = stripe_lock(o, v, b);
			if (rc < 0)
				return rc;
			r->locked = true;
		}
	}
	r->s1 = atomic_load_explicit(&r->st->seq, memory_order_acquire);
	return (r->s1 & 1) && !r->locked ? 1 : 0;
}

/* Was what was read since read_begin() consistent? */
static inline bool read_end(struct reader *r)
{
	if (r->locked)
		return true;
	/* Orders the reads before the re-read of seq (Boehm's fence).  The
	 * table word too: an old array is freed (and its pages reused) only
	 * after the word moved on, so a read of freed memory is retried. */
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&r->st->seq, memory_order_relaxed) == r->s1 &&
	       atomic_load_explicit(r->tw, memory_order_relaxed) == r->t1;
}

static inline void read_done(struct reader *r)
{
	if (r->locked)
		shmmap__unlock(&r->st->lock);
}

int shmmap__tbl_get(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen, void *buf, size_t cap, size_t *vlen)
{
	if (klen == 0 || klen > v->key_max)
		return klen ? -E2BIG : -EINVAL;
	uint64_t h = shmmap__hash(o->g, key, klen), now = 0;
	struct reader r = {.st = stripe_of(v, (uint32_t)h), .tw = &v->dir->tbl};
	struct ent en;
	struct tbl t;
	enum walk w = W_TORN;
	for (;;) {
		int rc = read_begin(o, v, (uint32_t)h, &r);
		if (rc < 0)
			return rc;
		if (rc > 0)
			continue;
		bool ok = shmmap__tbl_load(o->s, v, &t);
		r.t1 = t.word;
		w = ok ? walk(o->s, v, tbl_head(&t, h), h, key, klen, NULL, &en, &now) : W_TORN;
		if (w == W_FOUND && en.vlen <= cap && en.vlen)
			memcpy(buf, en.key + en.klen, en.vlen);
		if (read_end(&r))
			break;
	}
	read_done(&r);
	if (w == W_TORN)
		return -SHMMAP_ECORRUPT; /* stable and still invalid */
	if (w != W_FOUND) {
		if (o->ctr) {
			count(&o->ctr->misses);
			if (w == W_EXPIRED)
				count(&o->ctr->expired);
		}
		return -ENOENT;
	}
	if (o->ctr) {
		count(&o->ctr->hits);
		ent_mark_used(en.e, en.meta);
	}
	if (vlen)
		*vlen = en.vlen;
	return en.vlen > cap ? -ENOBUFS : 0;
}

/* Fill a freshly allocated entry (not yet reachable: plain stores). */
static void ent_fill(const struct op_ctx *o, const struct map_view *v, uint64_t off, uint64_t h,
		     const void *key, uint32_t klen, const void *val, uint32_t vlen,
		     uint64_t expire_ms)
{
	struct seg_entry *e = seg_ptr(o->s, off);
	atomic_store_explicit(&e->next, 0, memory_order_relaxed);
	atomic_store_explicit(&e->meta, ENT_META(h, shmmap__itime(), 0), memory_order_relaxed);
	unsigned char *k = ent_init(e, klen, v->idx, vlen, expire_ms);
	memcpy(k, key, klen);
	if (vlen)
		memcpy(k + klen, val, vlen);
}

/* The record of this write: the client's, or a scratch one (no crash
 * safety: unit tests and the coordinator's own writes). */
static struct seg_intent *rec_begin(const struct op_ctx *o, const struct map_view *v, uint32_t b,
				    struct seg_intent *scratch)
{
	struct seg_intent *in = o->intent ? o->intent : scratch;
	if (in == scratch)
		memset(scratch, 0, sizeof *scratch);
	atomic_store_explicit(&in->map, v->idx, memory_order_relaxed);
	atomic_store_explicit(&in->stripe, b & (v->nstripes - 1), memory_order_relaxed);
	return in;
}

/*
 * Under the stripe lock: make the entry in->a take the place of the found
 * one (link != NULL) or go at the head of bucket b (head, in the current
 * array).  Returns the offset of
 * the entry replaced (recorded in in->b, to free after unlocking), or 0.
 */
static uint64_t link_entry(const struct op_ctx *o, const struct map_view *v,
			   _Atomic uint64_t *head, uint32_t b, _Atomic uint64_t *link,
			   const struct ent *old, struct seg_intent *in)
{
	const struct seg *s = o->s;
	struct seg_stripe *st = stripe_of(v, b);
	uint64_t new_off = atomic_load_explicit(&in->a, memory_order_relaxed);
	struct seg_entry *ne = seg_ptr(s, new_off);
	uint64_t old_off = 0;
	if (link) {
		old_off = atomic_load_explicit(link, memory_order_relaxed);
		/* A rewritten key keeps its use count and kept bit (a new one
		 * starts at 0): before the entry is reachable, so a plain
		 * update. */
		uint64_t m = atomic_load_explicit(&ne->meta, memory_order_relaxed);
		atomic_store_explicit(&ne->meta, m | (old->meta & ENT_USE),
				      memory_order_relaxed);
		/* b before the store that unlinks it (the release below orders it). */
		atomic_store_explicit(&in->b, old_off, memory_order_relaxed);
		CRASH_POINT();
		atomic_store_explicit(&ne->next, old->next, memory_order_relaxed);
		seq_begin(st);
		CRASH_POINT();
		/* Release: the new entry is complete before it is reachable. */
		atomic_store_explicit(link, new_off, memory_order_release);
		CRASH_POINT();
		atomic_store_explicit(&in->a, 0, memory_order_release);
		CRASH_POINT();
		seq_end(st);
		CRASH_POINT();
		st->bytes += (uint64_t)ne->klen + ent_vlen(ne->vlenf) - old->klen - old->vlen;
		/* The second line only for entries with a slot. */
		if (ent_has_expiry(ne->vlenf) && !ent_slot(old))
			st->slots++;
		else if (!ent_has_expiry(ne->vlenf) && ent_slot(old))
			st->slots--;
	} else {
		atomic_store_explicit(&ne->next, atomic_load_explicit(head, memory_order_relaxed),
				      memory_order_relaxed);
		atomic_store_explicit(head, new_off, memory_order_release);
		CRASH_POINT();
		atomic_store_explicit(&in->a, 0, memory_order_release);
		CRASH_POINT();
		st->entries++;
		st->bytes += (uint64_t)ne->klen + ent_vlen(ne->vlenf);
		if (ent_has_expiry(ne->vlenf))
			st->slots++;
	}
	CRASH_POINT();
	return old_off;
}

static int check_key(const struct op_ctx *o, const struct map_view *v, size_t klen)
{
	if (o->s->rdonly)
		return -EPERM;
	if (klen == 0)
		return -EINVAL;
	return klen > v->key_max ? -E2BIG : 0;
}

/* After unlocking: free what the write took out of the chains, or the new
 * entry it did not link.  If an allocator lock awaits repair (-EAGAIN), the
 * block stays recorded: the write itself stands, and client.c parks the
 * record and frees the block later (or the coordinator does). */
/*
 * A block moves between a record's spare and its a or b without an
 * allocator lock, so the sweep (which holds them all and must see every
 * block in flight) stops such moves while it runs: the mover announces the
 * move in its slot's spare_moving, then looks at the header's sweeping
 * (store, full fence, load: the sweep does the mirror image, sweep.c).
 * False: a sweep runs, do not move (allocate or free instead: those wait
 * for the sweep's locks).
 */
static bool spare_move_begin(const struct op_ctx *o, struct seg_intent *in,
			     _Atomic uint8_t **flag)
{
	struct seg_slot *sl = seg_slot(o->s, o->g, o->lk.owner - 1);
	*flag = &sl->spare_moving[in - sl->intent];
	atomic_store_explicit(*flag, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	if (!atomic_load_explicit(&seg_hdr(o->s)->sweeping, memory_order_relaxed))
		return true;
	atomic_store_explicit(*flag, 0, memory_order_release);
	return false;
}

static void spare_move_end(_Atomic uint8_t *flag)
{
	atomic_store_explicit(flag, 0, memory_order_release);
}

/* A client's record (not a scratch one: the coordinator's and unit tests'
 * writes keep no spare) of a slot in the segment. */
static bool keeps_spare(const struct op_ctx *o)
{
	return o->intent && o->lk.owner >= 1 && o->lk.owner <= o->g->max_clients;
}

static void settle_blocks(const struct op_ctx *o, struct seg_intent *in);

/* This process's note of the class of its record's spare (op_ctx). */
static inline void spare_note(const struct op_ctx *o, uint8_t cls1)
{
	if (o->spare_cls)
		*o->spare_cls = cls1;
}

/* Will the record's spare do for a new entry of n bytes?  By the note of
 * its class, without a look at its page (spare_take looks). */
static inline bool spare_will_do(const struct op_ctx *o, const struct seg_intent *in, size_t n)
{
	return o->spare_cls && *o->spare_cls &&
	       atomic_load_explicit(&in->spare, memory_order_relaxed) &&
	       *o->spare_cls == shmmap__class_of(o->s, o->g, n) + 1;
}

/* After unlocking: what the write's record still names (usually nothing
 * after a rewrite in place: checked inline). */
static inline __attribute__((always_inline)) void settle(const struct op_ctx *o,
							 struct seg_intent *in)
{
	if (atomic_load_explicit(&in->b, memory_order_relaxed) |
	    atomic_load_explicit(&in->a, memory_order_relaxed))
		settle_blocks(o, in);
}

static void settle_blocks(const struct op_ctx *o, struct seg_intent *in)
{
	_Atomic uint64_t *recs[2] = {&in->b, &in->a};
	for (int j = 0; j < 2; j++) {
		uint64_t x = atomic_load_explicit(recs[j], memory_order_relaxed);
		if (!x)
			continue;
		/* Kept for the next write of this slot: a block of a size class
		 * (a run of pages is not kept: eviction could not empty it),
		 * spare first, then the field cleared (release: in that order
		 * for the sweep and check, which read b, spare, a). */
		_Atomic uint8_t *mv;
		int cls;
		if (keeps_spare(o) && !atomic_load_explicit(&in->spare, memory_order_relaxed) &&
		    (cls = shmmap__block_class(o->s, o->g, x)) >= 0 && spare_move_begin(o, in, &mv)) {
			atomic_store_explicit(&in->spare, x, memory_order_relaxed);
			CRASH_POINT();
			atomic_store_explicit(recs[j], 0, memory_order_release);
			CRASH_POINT();
			spare_move_end(mv);
			spare_note(o, (uint8_t)(cls + 1));
			continue;
		}
		(void)shmmap__free(o->s, o->g, &o->lk, x, recs[j]);
	}
}

/* The record's spare sp (a block that fits) to in->a: a first, then
 * spare cleared.  Takes no allocator lock.  False if a sweep runs. */
static bool spare_move(const struct op_ctx *o, struct seg_intent *in, uint64_t sp)
{
	_Atomic uint8_t *mv;
	if (!spare_move_begin(o, in, &mv))
		return false;
	atomic_store_explicit(&in->a, sp, memory_order_relaxed);
	CRASH_POINT();
	atomic_store_explicit(&in->spare, 0, memory_order_release);
	CRASH_POINT();
	spare_move_end(mv);
	spare_note(o, 0);
	return true;
}

/* The record's spare to in->a if it is a block of n's size class (settle
 * keeps only slab blocks).  Also under a stripe lock (a new key's block
 * when the write took the lock first).  False leaves the spare. */
static bool spare_take(const struct op_ctx *o, struct seg_intent *in, size_t n)
{
	uint64_t sp = atomic_load_explicit(&in->spare, memory_order_relaxed);
	return sp && shmmap__block_fits(o->s, o->g, sp, n) && spare_move(o, in, sp);
}

/* Before the stripe lock: spare_take, but a spare of another size class is
 * freed.  True if in->a has the spare. */
static bool take_spare(const struct op_ctx *o, struct seg_intent *in, size_t n)
{
	uint64_t sp = atomic_load_explicit(&in->spare, memory_order_relaxed);
	if (!sp || !keeps_spare(o))
		return false;
	if (shmmap__block_fits(o->s, o->g, sp, n))
		return spare_move(o, in, sp);
	(void)shmmap__free(o->s, o->g, &o->lk, sp, &in->spare);
	spare_note(o, 0);
	return false;
}

/* ---- rewriting in place ----
 * A present key whose new value is of the same size class as its entry,
 * and small enough for an undo record (SEG_UNDO_MAX), is rewritten in its
 * own block: no block taken or given back, one entry's lines touched.  The
 * crash argument is struct seg_undo's (internal.h): the old value is in
 * the writer's undo record before the first byte changes, and whoever
 * takes a dead writer's stripe lock over puts it back (undo_rewrites).
 * Readers are the seqlock's: the change is inside one seq change. */

/* Under the stripe lock: may the found entry old, at off, take a value of
 * vlen bytes (with an expiry slot or without) in its own block?  The same
 * slot, an old value the undo record holds, and the same size class (an
 * entry of the same size needs no look at its page), or with room true any
 * value the block holds (a counter's block has room for 20 digits). */
static inline bool rewritable(const struct op_ctx *o, const struct ent *old, uint64_t off,
			      size_t vlen, bool slot, bool room)
{
	if (old->vlen > SEG_UNDO_MAX || ent_slot(old) != slot)
		return false;
	uint64_t n = ent_size(old->klen, vlen, slot);
	if (n == ent_size(old->klen, old->vlen, slot))
		return true;
	return room ? n <= shmmap__block_size(o->s, o->g, off)
		    : shmmap__block_fits(o->s, o->g, off, n);
}

/* Under the stripe lock of stripe sb: the found entry old, at off, takes
 * the value val (vlen bytes) and the expiry expire (kept only if it has the
 * slot: rewritable), as if written now.  u: this write's undo record. */
static inline __attribute__((always_inline)) void
rewrite(const struct map_view *v, uint32_t sb, const struct ent *old, uint64_t off,
	const void *val, uint32_t vlen, uint64_t expire, struct seg_undo *u)
{
	uint32_t vf = old->vlen | (ent_slot(old) ? ENT_F_EXPIRE : 0); /* as ent_load read it */
	rewrite_in_place(&v->stripes[sb], v->idx, sb, (struct seg_entry *)old->e, off,
			 (unsigned char *)old->key + old->klen, vf, old->expire_ms, val, vlen, expire,
			 u);
}

/* Under the stripe lock of stripe sb, the key found (w: W_FOUND or
 * W_EXPIRED, old its entry, *link the link to it), a write that took no
 * block (u: its undo record): rewrite the entry in place if it may take
 * the value (rewritable; room: incr's), counting an expired one.  False if
 * it may not: the write needs a block. */
static __attribute__((noinline)) bool
try_rewrite(const struct op_ctx *o, const struct map_view *v, uint32_t sb, enum walk w,
	    const struct ent *old, _Atomic uint64_t *link, const void *val, size_t vlen,
	    uint64_t expire, bool room, struct seg_undo *u)
{
	uint64_t off = atomic_load_explicit(link, memory_order_relaxed);
	if (!rewritable(o, old, off, vlen, expire != 0, room))
		return false;
	if (w == W_EXPIRED) /* it counts as absent */
		v->stripes[sb].expirations++;
	rewrite(v, sb, old, off, val, (uint32_t)vlen, expire, u);
	return true;
}

/* Under the lock of stripe `stripe` of v, taken over from a dead writer
 * (stripe_repair), the seq odd: put back what an unfinished rewrite in
 * place changed, from every undo record that names an entry of the stripe
 * (only a dead writer's can: a live one clears its record before it lets
 * the lock go), and clear the record.  What a record says is checked like
 * any bytes of the segment: an entry of this map, linked in this stripe,
 * whose block holds the old value with the same slot. */
static void undo_rewrites(const struct op_ctx *o, const struct map_view *v, const struct tbl *t,
			  uint32_t stripe)
{
	for (uint32_t i = 0; i < o->g->max_clients; i++) {
		struct seg_slot *sl = seg_slot(o->s, o->g, i);
		for (uint32_t k = 0; k < SEG_UNDOS; k++) {
			struct seg_undo *u = &sl->undo[k];
			uint64_t off = atomic_load(&u->off);
			if (!off || u->map != v->idx || u->stripe != stripe)
				continue;
			uint32_t vf = u->vlenf, vl = ent_vlen(vf);
			struct ent en;
			if (vl <= SEG_UNDO_MAX && vl <= v->val_max && ent_load(o->s, v, off, &en) &&
			    ent_has_expiry(vf) == ent_slot(&en) && linked(o->s, v, t, stripe, off) &&
			    ent_size(en.klen, vl, ent_slot(&en)) <=
				    shmmap__block_size(o->s, o->g, off)) {
				struct seg_entry *e = (struct seg_entry *)en.e;
				if (ent_has_expiry(vf))
					ent_set_expiry(e, u->expire_ms);
				memcpy((unsigned char *)en.key + en.klen, u->val, vl);
				__atomic_store_n(&e->vlenf, vf, __ATOMIC_RELAXED);
			}
			atomic_compare_exchange_strong(&u->off, &off, 0);
		}
	}
}

#define WANT_ANY (-2)     /* find_victim: any entry */
#define VICTIM_WALK_MAX 1024u
#define WANT_EXPIRED (-3) /* find_victim: expired entries only */

/*
 * Under the stripe lock of the chain l heads: the link to the entry to
 * remove, or NULL.  The first expired entry; else (WANT_ANY) the last,
 * i.e. oldest, entry.  *victim gets the entry, *exp whether it had expired.
 * (A map's quota evicts this way, within its own stripe; a full segment
 * evicts by evict.c's hands.)
 */
static _Atomic uint64_t *find_victim(const struct op_ctx *o, const struct map_view *v,
				     _Atomic uint64_t *l, int want, struct ent *victim, bool *exp)
{
	uint64_t now = 0;
	_Atomic uint64_t *vl = NULL;
	struct ent en;
	uint64_t off = atomic_load_explicit(l, memory_order_relaxed);
	*exp = false;
	/* Bounded well below SEG_CHAIN_MAX: eviction may look at a bucket
	 * many times in a row, and a chain this long is already pathological
	 * (or a cycle in a corrupt segment): its tail is simply not a victim. */
	for (uint32_t steps = 0; off && steps < VICTIM_WALK_MAX; steps++) {
		if (!ent_load(o->s, v, off, &en))
			break;
		if (expired(en.expire_ms, &now)) {
			*victim = en;
			*exp = true;
			return l;
		}
		if (want == WANT_ANY) {
			vl = l;
			*victim = en;
		}
		l = (_Atomic uint64_t *)&en.e->next;
		off = en.next;
	}
	return vl;
}

/*
 * Under the stripe lock st, with the record naming the victim's map and
 * stripe: unlink the validated entry en that link l holds, recorded in
 * in->b before the store that unlinks it, and take it off the stripe's
 * totals as an expiration (exp) or an eviction.  The caller frees in->b
 * after unlocking.
 */
static void evict_locked(struct seg_stripe *st, struct seg_intent *in, _Atomic uint64_t *l,
			 const struct ent *en, bool exp)
{
	atomic_store_explicit(&in->b, atomic_load_explicit(l, memory_order_relaxed),
			      memory_order_relaxed);
	CRASH_POINT();
	seq_begin(st);
	atomic_store_explicit(l, en->next, memory_order_release);
	CRASH_POINT();
	seq_end(st);
	st->entries--;
	st->bytes -= (uint64_t)en->klen + en->vlen;
	if (ent_slot(en))
		st->slots--;
	if (exp)
		st->expirations++;
	else
		st->evictions++;
}

/*
 * Under no lock: unlink one victim from bucket b of the current array (its
 * old bucket moved first during a resize) (the first expired entry,
 * else the last, i.e. oldest, entry of class want, or of any class if want
 * is WANT_ANY) and free it.  Returns 1 if one was removed, 0 if none qualified,
 * or a negative errno.
 */
static int evict_one(const struct op_ctx *o, const struct map_view *v, struct seg_intent *in,
		     uint32_t b, int want)
{
	struct seg_stripe *st = stripe_of(v, b);
	int lrc = stripe_lock(o, v, b);
	if (lrc < 0)
		return lrc;
	struct tbl t;
	if (!view_live(v) || !tbl_locked(o, v, b, &t)) {
		shmmap__unlock(&st->lock);
		return -ESTALE;
	}
	struct ent victim;
	bool exp = false;
	_Atomic uint64_t *vl = find_victim(o, v, &t.cur[b & (t.cur_n - 1)], want, &victim, &exp);
	uint32_t own = atomic_load_explicit(&in->stripe, memory_order_relaxed);
	if (vl) {
		/* The record names the victim's stripe while b names the victim:
		 * whoever takes this lock over from us settles b by it. */
		atomic_store_explicit(&in->stripe, b & (v->nstripes - 1), memory_order_relaxed);
		evict_locked(st, in, vl, &victim, exp);
	}
	shmmap__unlock(&st->lock);
	if (!vl)
		return 0;
	uint64_t x = atomic_load_explicit(&in->b, memory_order_relaxed);
	if (shmmap__free(o->s, o->g, &o->lk, x, &in->b) < 0)
		return -EAGAIN; /* in->b stays recorded: parked by client.c */
	/* b is settled: the record is the put's own again. */
	atomic_store_explicit(&in->stripe, own, memory_order_relaxed);
	return 1;
}

/* The link to the entry at off in the chain that l heads, or NULL. */
static _Atomic uint64_t *link_to(const struct seg *s, const struct map_view *v,
				 _Atomic uint64_t *l, uint64_t off, struct ent *en)
{
	uint64_t cur = atomic_load_explicit(l, memory_order_relaxed);
	for (uint32_t steps = 0; cur && steps < v->chain_max; steps++) {
		if (!ent_load(s, v, cur, en))
			return NULL;
		if (cur == off)
			return l;
		l = (_Atomic uint64_t *)&en->e->next;
		cur = en->next;
	}
	return NULL;
}

/*
 * Under the lock of stripe st (sb): move the entry en, at off and linked at
 * *l, into a block on another page its class has (a page being emptied
 * hands out none, and no page is taken from the pool: it could be one of a
 * window just emptied, alloc.c shmmap__alloc_block), which takes its place
 * in the chain, as it is: its write time
 * and its use count too (a move is no look of a hand: lowered, the count
 * let the hand that made the block, which lies just behind it, evict it on
 * its next look).  The old block is left in in->b for the caller to
 * free once the lock is let go.  0, -ENOSPC (no free block, or its class
 * lock busy for a bounded lock_ctx: nothing changed), or -errno.  in names
 * the entry's map and stripe, and its a is clear.
 *
 * The one allocation under a stripe lock (writes allocate before they
 * lock): in the lock order (stripe -> class -> pool, alloc.c), and never
 * one that evicts or grows.  The stripe stays held while the allocator waits
 * for a class lock (a dead holder's: up to LOCK_DEAD_WAIT_MS).
 *
 * Crash argument: as a put that writes a key anew.  The new block is in
 * a (the allocator records it) and whole before the one store that links
 * it and unlinks the old one, which is in b before that store; whoever
 * takes the lock over finds the store made or not (stripe_repair: what
 * is linked leaves the record, what is not is freed with the dead slot).
 * A reader that was at the old entry retries: the store is inside a seq
 * change, and the old entry is freed only after it.
 */
static int move_locked(const struct op_ctx *o, struct seg_stripe *st, struct seg_intent *in,
		       _Atomic uint64_t *l, uint64_t off, const struct ent *en)
{
	size_t n = ent_size(en->klen, en->vlen, ent_slot(en));
	int rc = shmmap__alloc_block(o->s, o->g, &o->lk, n, &in->a);
	if (rc < 0)
		return rc == -EBUSY ? -ENOSPC : rc; /* (a bounded lock_ctx's) */
	CRASH_POINT();
	uint64_t to = atomic_load_explicit(&in->a, memory_order_relaxed);
	struct seg_entry *ne = seg_ptr(o->s, to);
	const struct seg_entry *e = en->e;
	/* Not reachable yet: plain stores.  The header word by word (a reader
	 * may raise the old entry's count meanwhile: that raise is lost, a
	 * hint), then expiry, key and value as they are. */
	atomic_store_explicit(&ne->next, en->next, memory_order_relaxed);
	atomic_store_explicit(&ne->meta, en->meta, memory_order_relaxed);
	__atomic_store_n(&ne->klen, __atomic_load_n(&e->klen, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
	__atomic_store_n(&ne->map, __atomic_load_n(&e->map, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
	__atomic_store_n(&ne->vlenf, __atomic_load_n(&e->vlenf, __ATOMIC_RELAXED),
			 __ATOMIC_RELAXED);
	memcpy((unsigned char *)ne + ENT_HDR, (const unsigned char *)e + ENT_HDR, n - ENT_HDR);
	CRASH_POINT();
	atomic_store_explicit(&in->b, off, memory_order_relaxed);
	CRASH_POINT();
	seq_begin(st);
	CRASH_POINT();
	atomic_store_explicit(l, to, memory_order_release);
	CRASH_POINT();
	seq_end(st);
	CRASH_POINT();
	atomic_store_explicit(&in->a, 0, memory_order_relaxed);
	CRASH_POINT();
	return 0;
}

int shmmap__tbl_evict_at(const struct op_ctx *o, const struct map_view *v, struct seg_intent *in,
			 uint64_t off, const struct evict_how *how, uint64_t *kv, uint32_t *age)
{
	struct ent en;
	if (!ent_load(o->s, v, off, &en))
		return 0; /* a free block, or not this map's */
	uint32_t sb = en.hash & (v->nstripes - 1);
	struct seg_stripe *st = &v->stripes[sb];
	int rc = stripe_lock(o, v, sb);
	if (rc < 0)
		return rc == -EBUSY ? 0 : rc;
	struct tbl t;
	_Atomic uint64_t *l = NULL;
	uint64_t now = 0;
	/* Again under the lock: the block may have been freed and reused. */
	if (view_live(v) && tbl_locked(o, v, en.hash, &t) && ent_load(o->s, v, off, &en) &&
	    (en.hash & (v->nstripes - 1)) == sb)
		l = link_to(o->s, v, &t.cur[en.hash & (t.cur_n - 1)], off, &en);
	bool exp = l && expired(en.expire_ms, &now);
	bool spare = !l;
	uint64_t m = en.meta, to = m;
	if (l && !how->force && !exp) {
		if (how->young && ENT_AGE(how->now, ENT_ITIME(m)) < how->young)
			spare = true; /* still on probation (the probation hand's look) */
		else if (how->probe && (m & ENT_KEPT))
			spare = true; /* not the probation hand's any more */
		else if (ENT_FREQ(m)) {
			/* Used since a hand came by: kept (past probation) and
			 * one turn more, its count lowered by the main hand (the
			 * probation hand leaves it for the main hand's look). */
			spare = true;
			to = (how->probe || how->keep_counts ? m : m - ENT_FREQ_ONE) | ENT_KEPT;
		}
	}
	if (spare) {
		/* Safe to write: the entry is linked and its stripe locked, so
		 * the block is an entry (a CAS: a reader may raise it meanwhile). */
		if (to != m)
			atomic_compare_exchange_strong_explicit(&((struct seg_entry *)en.e)->meta,
								&m, to, memory_order_relaxed,
								memory_order_relaxed);
		shmmap__unlock(&st->lock);
		return 0;
	}
	/* A page being emptied (how->move, with force): an entry used since a
	 * hand came by moves rather than goes. */
	bool moving = how->move && !exp && ENT_FREQ(m) &&
		      !atomic_load_explicit(&in->a, memory_order_relaxed);
	uint32_t own_map = atomic_load_explicit(&in->map, memory_order_relaxed);
	uint32_t own_stripe = atomic_load_explicit(&in->stripe, memory_order_relaxed);
	/* The record names the victim's map and stripe while b names the
	 * victim (or a and b the move's blocks): whoever takes this lock over
	 * from us settles them by them. */
	atomic_store_explicit(&in->map, v->idx, memory_order_relaxed);
	atomic_store_explicit(&in->stripe, sb, memory_order_relaxed);
	rc = 0;
	if (moving)
		rc = move_locked(o, st, in, l, off, &en);
	else
		evict_locked(st, in, l, &en, exp);
	shmmap__unlock(&st->lock);
	CRASH_POINT();
	if (!moving) {
		*kv += (uint64_t)en.klen + en.vlen;
		*age = ENT_AGE(how->now, ENT_ITIME(en.meta));
	}
	if (rc == 0 && shmmap__free(o->s, o->g, &o->lk, off, &in->b) < 0)
		return -EAGAIN; /* in->b stays recorded: parked by client.c */
	/* b is settled: the record is the put's own again. */
	atomic_store_explicit(&in->map, own_map, memory_order_relaxed);
	atomic_store_explicit(&in->stripe, own_stripe, memory_order_relaxed);
	if (moving)
		return rc == 0 ? 2 : rc;
	return 1;
}

/* Could a block of n bytes ever be had, were every entry evicted?  Not if
 * it needs more pages than the heap has besides the maps' tables (which
 * eviction never frees).  The directory is read without a lock: a close
 * estimate, clamped to the geometry. */
static bool could_ever_fit(const struct op_ctx *o, size_t n)
{
	uint64_t need = shmmap__pages_for(n), tables = 0;
	if (need == 1)
		return true; /* a block of a one-page slab: any page will do */
	for (uint32_t m = 0; m < o->g->max_maps; m++) {
		const struct seg_mapdir *d = seg_dir(o->s, o->g, m);
		uint64_t first = __atomic_load_n(&d->table_pages, __ATOMIC_RELAXED);
		if (!__atomic_load_n(&d->stripes_off, __ATOMIC_RELAXED) || first >= o->g->npages_max)
			continue;
		const struct seg_page *p = seg_page(o->s, o->g, (uint32_t)first);
		uint32_t run = __atomic_load_n(&p->run, __ATOMIC_RELAXED);
		if (__atomic_load_n(&p->kind, __ATOMIC_RELAXED) == PAGE_RUN && run <= o->g->npages_max)
			tables += run;
	}
	/* The layout's pages: the segment may grow to them (max_size). */
	return tables < o->g->npages_max && need <= o->g->npages_max - tables;
}

/* Allocate n bytes for a new entry, evicting if the map's policy says so.
 * A value that could never fit fails first, with -E2BIG, before anything
 * is evicted for it. */
static int alloc_entry(const struct op_ctx *o, const struct map_view *v, struct seg_intent *in,
		       size_t n)
{
	if (!could_ever_fit(o, n))
		return -E2BIG;
	if (take_spare(o, in, n))
		return 0;
	int rc = shmmap__alloc(o->s, o->g, &o->lk, n, &in->a);
	(void)v;
	if (rc == -ENOSPC)
		rc = shmmap__evict_for(o, in, n);
	return rc;
}

/* ---- quotas ----
 * A map with a quota lets each stripe hold quota / nstripes bytes of
 * entries (headers, keys and values: the blocks' size-class rounding is not
 * counted), checked under the stripe lock before a write links: so the map
 * never holds more than its quota.  With policy evict, a write that would
 * go over first evicts the oldest entries of buckets of its own stripe
 * (evict_one, the eviction of a full segment); with reject, it fails with
 * -ENOSPC. */
#define QUOTA_TRIES 16u     /* rounds of make-room-then-lock before -ENOSPC */
#define QUOTA_SCAN 4096u    /* buckets of the stripe looked at per eviction */

/* What the quota counts: what the entries take (ent_size): headers,
 * expiry slots, keys and values. */
static inline uint64_t stripe_usage(const struct seg_stripe *st)
{
	return RELAXED(st->bytes) + RELAXED(st->entries) * ENT_HDR +
	       RELAXED(st->slots) * ENT_EXP_BYTES;
}

/* Under the stripe lock: would a write of need bytes (replacing old, if
 * found) take the stripe over its share? */
static bool over_quota(const struct map_view *v, const struct seg_stripe *st, uint64_t need,
		       enum walk w, const struct ent *old)
{
	if (!v->quota)
		return false;
	uint64_t freed = w == W_FOUND || w == W_EXPIRED
				 ? ent_size(old->klen, old->vlen, ent_slot(old)) : 0;
	return stripe_usage(st) + need > v->quota / v->nstripes + freed;
}

/* Under no lock: evict entries of stripe sb until need bytes fit in its
 * share (policy evict), or -ENOSPC. */
static int quota_room(const struct op_ctx *o, const struct map_view *v, struct seg_intent *in,
		      uint32_t sb, uint64_t need)
{
	uint64_t share = v->quota / v->nstripes;
	if (need > share)
		return -E2BIG; /* (put_impl says so first) */
	struct seg_stripe *st = &v->stripes[sb];
	struct seg_mapdir *d = v->dir;
	for (uint32_t tries = 0; stripe_usage(st) + need > share; tries++) {
		struct tbl t;
		if (v->policy != MAP_POLICY_EVICT || tries >= 64)
			return -ENOSPC;
		if (!shmmap__tbl_load(o->s, v, &t))
			return -SHMMAP_ECORRUPT;
		uint32_t per = t.cur_n / v->nstripes, found = 0;
		uint32_t start = atomic_fetch_add_explicit(&d->clock_hand, 1, memory_order_relaxed);
		for (uint32_t k = 0; k < per && k < QUOTA_SCAN && !found; k++) {
			uint32_t b = sb + ((start + k) % per) * v->nstripes;
			uint64_t head = atomic_load_explicit(tbl_head(&t, b), memory_order_relaxed);
			if (!head || head == BUCKET_MOVED)
				continue;
			int r = evict_one(o, v, in, b, WANT_ANY);
			if (r < 0)
				return r;
			found = (uint32_t)r;
		}
		if (!found)
			return -ENOSPC;
	}
	return 0;
}

/* A block for the entry, allocated (or the spare) and filled, in in->a:
 * before the stripe lock, so no allocator lock is taken under one. */
static int new_entry(const struct op_ctx *o, const struct map_view *v, struct seg_intent *in,
		     uint64_t h, const void *key, size_t klen, const void *val, size_t vlen,
		     uint64_t expire)
{
	int rc = alloc_entry(o, v, in, ent_size(klen, vlen, expire != 0));
	if (rc < 0)
		return rc;
	ent_fill(o, v, atomic_load_explicit(&in->a, memory_order_relaxed), h, key, (uint32_t)klen,
		 val, (uint32_t)vlen, expire);
	CRASH_POINT();
	return 0;
}

/* The key's hash, or 0 for a length check_key refuses (then its bytes are
 * not read: put_impl says why). */
static inline uint64_t key_hash(const struct op_ctx *o, const struct map_view *v, const void *key,
				size_t klen)
{
	return klen - 1 < v->key_max ? shmmap__hash(o->g, key, klen) : 0;
}

/* Compare a present entry's value with expected (for cas). */
static bool value_is(const struct ent *en, const void *expected, size_t elen)
{
	return en->vlen == elen && (elen == 0 || memcmp(en->key + en->klen, expected, elen) == 0);
}

/*
 * put, put_at and cas.  expected != NULL: cas (replace only a present entry
 * whose value is exactly expected).  h: key_hash's.
 */
static __attribute__((noinline)) int
put_impl(const struct op_ctx *o, const struct map_view *v, uint64_t h, const void *key,
	 size_t klen, const void *val, size_t vlen, uint64_t expire, unsigned flags,
	 const void *expected, size_t elen)
{
	int rc = check_key(o, v, klen);
	if (rc < 0)
		return rc;
	if (vlen > v->val_max)
		return -E2BIG;
	if ((flags & ~(SHMMAP_NX | SHMMAP_XX | SHMMAP_NOTTL)) ||
	    (flags & (SHMMAP_NX | SHMMAP_XX)) == (SHMMAP_NX | SHMMAP_XX))
		return -EINVAL;
	uint64_t now = 0;
	uint32_t sb = (uint32_t)h & (v->nstripes - 1), b = 0;
	struct seg_intent scratch, *in = rec_begin(o, v, sb, &scratch);
	struct seg_stripe *st = stripe_of(v, sb);
	uint64_t need = ent_size(klen, vlen, expire != 0);
	/* Larger than a stripe's share of the map's quota: it could never be
	 * stored, whatever is evicted (-ENOSPC said "full": try later). */
	if (v->quota && need > v->quota / v->nstripes)
		return -E2BIG;
	uint32_t qtries = 0;
	/* A block allocated and filled before the stripe lock (a short
	 * critical section), unless the write may need none: a value an undo
	 * record holds may rewrite a present key in place, so a writer whose
	 * record has a spare that will do for a new key (spare_take) locks
	 * first.  (A spare of another class would make a new key's write
	 * unlock, allocate and lock again: then allocate first.)  The block of
	 * a write that did not need it becomes the spare. */
	struct seg_undo *u = vlen <= SEG_UNDO_MAX ? o->undo : NULL;
	bool filled = !u || !spare_will_do(o, in, need);
	if (filled && (rc = new_entry(o, v, in, h, key, klen, val, vlen, expire)) < 0)
		return rc;
retry:
	/* Over the quota last time (policy evict): make room first. */
	if (qtries && (rc = quota_room(o, v, in, sb, need)) < 0) {
		settle(o, in);
		return rc;
	}
	if ((rc = stripe_lock(o, v, sb)) < 0) {
		settle(o, in);
		return rc;
	}
	CRASH_POINT();
	_Atomic uint64_t *link = NULL;
	struct ent old;
	struct tbl t;
	bool over = false, current = view_live(v);
	enum walk w = W_TORN;
	if (current && tbl_locked(o, v, h, &t)) {
		b = (uint32_t)h & (t.cur_n - 1);
		w = walk(o->s, v, &t.cur[b], h, key, klen, &link, &old, &now);
	}
	if (w == W_TORN)
		rc = current ? -SHMMAP_ECORRUPT : -ESTALE;
	else if (w == W_FOUND && (flags & SHMMAP_NX))
		rc = -EEXIST;
	else if (w != W_FOUND && ((flags & SHMMAP_XX) || expected))
		rc = -ENOENT;
	else if (expected && !value_is(&old, expected, elen))
		rc = -ECANCELED;
	else if (over_quota(v, st, need, w, &old)) {
		/* Others filled the stripe since room was made: again, boundedly. */
		if (v->policy == MAP_POLICY_EVICT && ++qtries < QUOTA_TRIES) {
			shmmap__unlock(&st->lock);
			goto retry;
		}
		rc = -ENOSPC;
	} else if (u && w != W_ABSENT &&
		   try_rewrite(o, v, sb, w, &old, link, val, vlen, expire, false, u)) {
		/* Rewritten in place; a block allocated for the write (there
		 * was no spare: put's fast path rewrote the key before, or
		 * the key was not known to be there) becomes the spare. */
	} else if (!filled && !spare_take(o, in, need)) {
		/* No block at hand, and none is allocated under a stripe lock:
		 * allocate one, then again. */
		shmmap__unlock(&st->lock);
		filled = true;
		if ((rc = new_entry(o, v, in, h, key, klen, val, vlen, expire)) < 0)
			return rc;
		goto retry;
	} else {
		if (!filled) /* the spare, filled under the lock */
			ent_fill(o, v, atomic_load_explicit(&in->a, memory_order_relaxed), h, key,
				 (uint32_t)klen, val, (uint32_t)vlen, expire);
		if (w == W_EXPIRED)
			st->expirations++;
		link_entry(o, v, &t.cur[b], b, w == W_ABSENT ? NULL : link, &old, in);
		over = w == W_ABSENT && over_load(o, v, &t, st);
	}
	shmmap__unlock(&st->lock);
	CRASH_POINT();
	settle(o, in);
	if (over)
		shmmap__grow_wake(o->s);
	if (rc == 0 && o->ctr)
		count(expected ? &o->ctr->cas : &o->ctr->puts);
	return rc;
}

int shmmap__tbl_put_hashed(const struct op_ctx *o, const struct map_view *v, uint64_t h,
			   const void *key, size_t klen, const void *val, size_t vlen,
			   uint32_t ttl_s, unsigned flags)
{
	if ((flags & SHMMAP_NOTTL) && ttl_s)
		return -EINVAL;
	if (!ttl_s && !(flags & SHMMAP_NOTTL))
		ttl_s = v->default_ttl;
	uint64_t expire = ttl_s ? shmmap__now_ms() + (uint64_t)ttl_s * 1000u : 0;
	return put_impl(o, v, h, key, klen, val, vlen, expire, flags, NULL, 0);
}

int shmmap__tbl_put(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen, const void *val, size_t vlen, uint32_t ttl_s, unsigned flags)
{
	return shmmap__tbl_put_hashed(o, v, key_hash(o, v, key, klen), key, klen, val, vlen, ttl_s,
				      flags);
}

int shmmap__tbl_put_at(const struct op_ctx *o, const struct map_view *v, const void *key,
		       size_t klen, const void *val, size_t vlen, uint64_t expire_ms,
		       unsigned flags)
{
	return put_impl(o, v, key_hash(o, v, key, klen), key, klen, val, vlen, expire_ms, flags,
			NULL, 0);
}

int shmmap__tbl_cas(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen, const void *expected, size_t elen, const void *val, size_t vlen,
		    uint32_t ttl_s)
{
	if (!expected && elen)
		return -EINVAL;
	if (!ttl_s)
		ttl_s = v->default_ttl;
	uint64_t expire = ttl_s ? shmmap__now_ms() + (uint64_t)ttl_s * 1000u : 0;
	return put_impl(o, v, key_hash(o, v, key, klen), key, klen, val, vlen, expire, 0,
			expected ? expected : "", elen);
}

int shmmap__tbl_del(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen)
{
	int rc = check_key(o, v, klen);
	if (rc < 0)
		return rc;
	uint64_t h = shmmap__hash(o->g, key, klen), now = 0;
	uint32_t sb = (uint32_t)h & (v->nstripes - 1);
	struct seg_stripe *st = stripe_of(v, sb);
	struct seg_intent scratch, *in = rec_begin(o, v, sb, &scratch);
	if ((rc = stripe_lock(o, v, sb)) < 0)
		return rc;
	CRASH_POINT();
	_Atomic uint64_t *link = NULL;
	struct ent old;
	struct tbl t;
	enum walk w = W_TORN;
	if (view_live(v) && tbl_locked(o, v, h, &t))
		w = walk(o->s, v, &t.cur[h & (t.cur_n - 1)], h, key, klen, &link, &old, &now);
	if (w == W_FOUND || w == W_EXPIRED) {
		atomic_store_explicit(&in->b, atomic_load_explicit(link, memory_order_relaxed),
				      memory_order_relaxed);
		CRASH_POINT();
		seq_begin(st);
		CRASH_POINT();
		atomic_store_explicit(link, old.next, memory_order_release);
		CRASH_POINT();
		seq_end(st);
		CRASH_POINT();
		st->entries--;
		st->bytes -= (uint64_t)old.klen + old.vlen;
		if (ent_slot(&old))
			st->slots--;
		if (w == W_EXPIRED)
			st->expirations++;
		CRASH_POINT();
	}
	shmmap__unlock(&st->lock);
	CRASH_POINT();
	settle(o, in);
	if (w == W_FOUND) {
		if (o->ctr)
			count(&o->ctr->dels);
		return 0;
	}
	if (w == W_TORN)
		return view_live(v) ? -SHMMAP_ECORRUPT : -ESTALE;
	return -ENOENT;
}

/* Under its stripe lock: the linked entry e was read by a write (incr: the
 * caller gets its value), so it is used, as by a get. */
static void mark_used(const struct seg_entry *e)
{
	ent_mark_used(e, atomic_load_explicit((_Atomic uint64_t *)&e->meta, memory_order_relaxed));
}

/* Parse the decimal integer a value holds: optional '-', 1..19 digits. */
static int parse_i64(const unsigned char *p, uint32_t n, int64_t *out)
{
	bool neg = n > 0 && p[0] == '-';
	uint32_t i = neg ? 1 : 0;
	if (n - i == 0 || n - i > 19)
		return -EINVAL;
	uint64_t mag = 0;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		mag = mag * 10 + (uint64_t)(p[i] - '0');
	}
	if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
		return -EINVAL;
	*out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
	return 0;
}

int shmmap__tbl_incr(const struct op_ctx *o, const struct map_view *v, const void *key,
		     size_t klen, int64_t delta, uint32_t ttl_s, int64_t *out)
{
	int rc = check_key(o, v, klen);
	if (rc < 0)
		return rc;
	uint64_t h = shmmap__hash(o->g, key, klen), now = 0;
	uint32_t sb = (uint32_t)h & (v->nstripes - 1), b = 0;
	struct seg_stripe *st = stripe_of(v, sb);
	struct seg_intent scratch, *in = rec_begin(o, v, sb, &scratch);
	/* Room for any int64 in decimal, allocated before the stripe lock (so
	 * that the write takes no allocator lock under its stripe lock, and
	 * eviction can run). */
	size_t room = v->val_max < 20 ? v->val_max : 20;
	/* A new key's TTL: the caller's, else the map's default. */
	if (!ttl_s)
		ttl_s = v->default_ttl;
	/* With an expiry slot if a new key gets a TTL; a present key's own
	 * expiry may still ask for one (see below). */
	bool slot = ttl_s != 0;
	/* Without a block at first if the record has a spare: a present
	 * counter is rewritten in place (put_impl has the why). */
	struct seg_undo *u = o->undo;
	bool have = !u || !spare_will_do(o, in, ent_size(klen, room, slot));
again:
	if (have && (rc = alloc_entry(o, v, in, ent_size(klen, room, slot))) < 0)
		return rc;
	uint32_t qtries = 0;
retry:
	/* Over the quota last time (policy evict): make room first. */
	if (qtries && (rc = quota_room(o, v, in, sb, ent_size(klen, room, slot))) < 0) {
		settle(o, in);
		return rc;
	}
	if ((rc = stripe_lock(o, v, sb)) < 0) {
		settle(o, in);
		return rc;
	}
	CRASH_POINT();
	_Atomic uint64_t *link = NULL;
	struct ent old;
	struct tbl t;
	bool over = false, current = view_live(v);
	enum walk w = W_TORN;
	if (current && tbl_locked(o, v, h, &t)) {
		b = (uint32_t)h & (t.cur_n - 1);
		w = walk(o->s, v, &t.cur[b], h, key, klen, &link, &old, &now);
	}
	uint64_t expire = 0;
	int64_t cur = 0, sum = 0;
	char digits[24];
	int n = 0;
	if (w == W_TORN) {
		rc = current ? -SHMMAP_ECORRUPT : -ESTALE;
		goto out;
	}
	if (w == W_FOUND) {
		rc = parse_i64(old.key + old.klen, old.vlen, &cur);
		if (rc < 0)
			goto out;
		expire = old.expire_ms;
	} else if (ttl_s) {
		/* A new key: the caller's TTL, or the map's default (a put with
		 * ttl 0 gets that too). */
		expire = shmmap__now_ms() + (uint64_t)ttl_s * 1000u;
	}
	if (__builtin_add_overflow(cur, delta, &sum)) {
		rc = -ERANGE;
		goto out;
	}
	n = snprintf(digits, sizeof digits, "%" PRId64, sum);
	if ((uint32_t)n > room) {
		rc = -E2BIG;
		goto out;
	}
	if (over_quota(v, st, ent_size(klen, (uint32_t)n, expire != 0), w, &old)) {
		if (v->policy == MAP_POLICY_EVICT && ++qtries < QUOTA_TRIES) {
			shmmap__unlock(&st->lock);
			goto retry;
		}
		rc = -ENOSPC;
		goto out;
	}
	if (!have && w != W_ABSENT &&
	    try_rewrite(o, v, sb, w, &old, link, digits, (uint32_t)n, expire, true, u)) {
		if (w == W_FOUND)
			mark_used(old.e);
		goto out;
	}
	if (!have && !spare_take(o, in, ent_size(klen, room, slot))) {
		/* No block at hand (none is allocated under a stripe lock). */
		shmmap__unlock(&st->lock);
		have = true;
		goto again;
	}
	have = true;
	if (expire && !slot &&
	    shmmap__block_size(o->s, o->g, atomic_load_explicit(&in->a, memory_order_relaxed)) <
		    ent_size(klen, (uint32_t)n, true)) {
		/* The key keeps its expiry and the block, sized for 20 digits
		 * without it, has no room for it with these digits (a block
		 * of a size class mostly has: 12 digits fit): again with a
		 * block that has (once: slot stays set). */
		shmmap__unlock(&st->lock);
		settle(o, in);
		slot = true;
		goto again;
	}
	if (w == W_EXPIRED)
		st->expirations++;
	uint64_t nb = atomic_load_explicit(&in->a, memory_order_relaxed);
	ent_fill(o, v, nb, h, key, (uint32_t)klen, digits, (uint32_t)n, expire);
	CRASH_POINT();
	link_entry(o, v, &t.cur[b], b, w == W_ABSENT ? NULL : link, &old, in);
	if (w == W_FOUND)
		mark_used(seg_ptr(o->s, nb));
	over = w == W_ABSENT && over_load(o, v, &t, st);
out:
	shmmap__unlock(&st->lock);
	CRASH_POINT();
	settle(o, in);
	if (over)
		shmmap__grow_wake(o->s);
	if (rc == 0) {
		if (o->ctr)
			count(&o->ctr->incrs);
		if (out)
			*out = sum;
	}
	return rc;
}

/* ---- walking a map ---- */

/* A growable copy of one bucket's entries: records of private memory,
 * each 8-byte aligned. */
struct bucket_copy {
	unsigned char *buf;
	size_t len, cap;
};

struct copy_rec {
	uint64_t expire_ms;
	uint32_t klen, vlen;
	unsigned char data[]; /* key, value */
};

static size_t copy_rec_size(uint32_t klen, uint32_t vlen)
{
	return (sizeof(struct copy_rec) + klen + vlen + 7) & ~(size_t)7;
}

static int copy_push(struct bucket_copy *c, const struct ent *en)
{
	size_t need = copy_rec_size(en->klen, en->vlen);
	if (c->len + need > c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 4096;
		while (cap < c->len + need)
			cap *= 2;
		unsigned char *nb = realloc(c->buf, cap);
		if (!nb)
			return -ENOMEM;
		c->buf = nb;
		c->cap = cap;
	}
	struct copy_rec *e = (struct copy_rec *)(c->buf + c->len);
	e->expire_ms = en->expire_ms;
	e->klen = en->klen;
	e->vlen = en->vlen;
	memcpy(e->data, en->key, (size_t)en->klen + en->vlen);
	c->len += need;
	return 0;
}

/* Append the live entries of the chain that l heads which belong to
 * bucket b of an array of n0 buckets. */
static int copy_chain(const struct op_ctx *o, const struct map_view *v, _Atomic uint64_t *l,
		      uint32_t b, uint32_t n0, struct bucket_copy *c, uint64_t *now)
{
	uint64_t off = atomic_load_explicit(l, memory_order_acquire);
	if (off == BUCKET_MOVED)
		return 0;
	struct ent en;
	for (uint32_t steps = 0; off; steps++) {
		/* More than the segment holds: a cycle, not a chain. */
		if (steps >= v->chain_max || c->len > o->s->len || !ent_load(o->s, v, off, &en))
			return -SHMMAP_ECORRUPT;
		if ((en.hash & (n0 - 1)) == b && !expired(en.expire_ms, now)) {
			int rc = copy_push(c, &en);
			if (rc < 0)
				return rc;
		}
		off = en.next;
	}
	return 0;
}

/* The chains of array a (n buckets) that can hold bucket b of n0. */
static int copy_array(const struct op_ctx *o, const struct map_view *v, _Atomic uint64_t *a,
		      uint32_t n, uint32_t b, uint32_t n0, struct bucket_copy *c, uint64_t *now)
{
	if (n < n0)
		return copy_chain(o, v, &a[b & (n - 1)], b, n0, c, now);
	int rc = 0;
	for (uint32_t x = b; x < n && rc == 0; x += n0)
		rc = copy_chain(o, v, &a[x], b, n0, c, now);
	return rc;
}

/* Copy the live entries of bucket b of an array of n0 buckets (the map's
 * size when the walk began: the map may grow meanwhile), consistently
 * (seqlock; the stripe lock after READ_TRIES failed tries, or -EAGAIN on a
 * read-only mapping).  An entry is in its old bucket until that moved,
 * then in its new one: it is copied once. */
static int copy_bucket(const struct op_ctx *o, const struct map_view *v, uint32_t b, uint32_t n0,
		       struct bucket_copy *c)
{
	struct reader r = {.st = stripe_of(v, b), .tw = &v->dir->tbl};
	int rc;
	for (;;) {
		rc = read_begin(o, v, b, &r);
		if (rc < 0)
			return rc;
		if (rc > 0)
			continue;
		c->len = 0;
		uint64_t now = 0;
		struct tbl t;
		bool ok = shmmap__tbl_load(o->s, v, &t);
		r.t1 = t.word;
		rc = ok ? 0 : -SHMMAP_ECORRUPT;
		if (ok && t.old_n)
			rc = copy_array(o, v, t.old, t.old_n, b, n0, c, &now);
		if (ok && rc == 0)
			rc = copy_array(o, v, t.cur, t.cur_n, b, n0, c, &now);
		if (rc == -ENOMEM || read_end(&r))
			break;
	}
	read_done(&r);
	return rc;
}

int shmmap__tbl_foreach(const struct op_ctx *o, const struct map_view *v, shmmap_each_fn fn,
			void *arg)
{
	if (!fn)
		return -EINVAL;
	struct tbl t;
	if (!shmmap__tbl_load(o->s, v, &t))
		return view_live(v) ? -SHMMAP_ECORRUPT : -ESTALE;
	struct bucket_copy c = {0};
	int rc = 0;
	for (uint32_t b = 0; b < t.cur_n && rc == 0; b++) {
		rc = copy_bucket(o, v, b, t.cur_n, &c);
		/* Dropped (or dropped and re-created) since the walk began: the
		 * buckets copied from now on may be emptied ones, and a caller
		 * given 0 would take the walk for whole.  The drop moves the
		 * generation before it empties a stripe (with a seq change), so
		 * a copy that saw an emptied bucket sees it here. */
		if ((rc == 0 || rc == -SHMMAP_ECORRUPT) && !view_live(v))
			rc = -ESTALE;
		for (size_t at = 0; rc == 0 && at < c.len;) {
			const struct copy_rec *e = (const struct copy_rec *)(c.buf + at);
			rc = fn(e->data, e->klen, e->data + e->klen, e->vlen, e->expire_ms, arg);
			at += copy_rec_size(e->klen, e->vlen);
		}
	}
	free(c.buf);
	return rc;
}

/* ---- background reclaim and flush (coordinator) ---- */

uint64_t shmmap__tbl_reclaim(const struct op_ctx *o, const struct map_view *v, uint32_t *cursor,
			     uint32_t nb, bool *deferred)
{
	uint64_t removed = 0;
	struct tbl t0;
	if (!shmmap__tbl_load(o->s, v, &t0))
		return 0;
	for (uint32_t i = 0; i < nb && i < t0.cur_n && !*deferred; i++) {
		uint32_t b = (*cursor)++ & (t0.cur_n - 1);
		uint64_t head = atomic_load_explicit(tbl_head(&t0, b), memory_order_relaxed);
		if (!head || head == BUCKET_MOVED)
			continue;
		struct seg_stripe *st = stripe_of(v, b);
		/* One expired entry per lock hold, so a writer waits at most for
		 * one chain walk; a stripe that is busy is left for the next
		 * round (never wait for a writer here: it may be stopped). */
		for (;;) {
			if (!shmmap__trylock(&st->lock, &o->lk))
				break;
			struct ent victim;
			bool exp;
			struct tbl t;
			_Atomic uint64_t *vl = NULL;
			/* A bucket whose old bucket has not moved yet is left for after
			 * the move (the reclaim does not move buckets). */
			if (view_live(v) && shmmap__tbl_load(o->s, v, &t) &&
			    (!t.old_n || atomic_load_explicit(&t.old[b & (t.old_n - 1)],
							      memory_order_relaxed) == BUCKET_MOVED))
				vl = find_victim(o, v, &t.cur[b & (t.cur_n - 1)], WANT_EXPIRED,
						 &victim, &exp);
			uint64_t x = 0;
			if (vl) {
				x = atomic_load_explicit(vl, memory_order_relaxed);
				seq_begin(st);
				atomic_store_explicit(vl, victim.next, memory_order_release);
				seq_end(st);
				st->entries--;
				st->bytes -= (uint64_t)victim.klen + victim.vlen;
				if (ent_slot(&victim))
					st->slots--;
				st->expirations++;
			}
			shmmap__unlock(&st->lock);
			if (!x)
				break;
			removed++;
			if (shmmap__free(o->s, o->g, &o->lk, x, NULL) < 0) {
				*deferred = true; /* unreachable now: the sweep frees it */
				break;
			}
		}
	}
	return removed;
}

/* Under the stripe lock: empty every bucket of stripe st, freeing the
 * entries (after the seq change, so a racing reader retries). */
static void empty_stripe(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			 const struct map_view *v, uint32_t st, bool *deferred)
{
	struct seg_stripe *sp = &v->stripes[st];
	struct tbl t;
	if (!shmmap__tbl_load(s, v, &t))
		t = (struct tbl){.cur = v->buckets, .cur_n = v->nbuckets};
	/* Every bucket of the stripe, old (not moved) and new, is emptied. */
	for (uint32_t i = 0; i < t.old_n / v->nstripes + t.cur_n / v->nstripes; i++) {
		uint32_t k = i < t.old_n / v->nstripes ? i : i - t.old_n / v->nstripes;
		_Atomic uint64_t *l = i < t.old_n / v->nstripes ? &t.old[st + k * v->nstripes]
								: &t.cur[st + k * v->nstripes];
		uint64_t off = atomic_load(l);
		if (!off || off == BUCKET_MOVED)
			continue;
		seq_begin(sp);
		atomic_store_explicit(l, 0, memory_order_release);
		seq_end(sp);
		struct ent en;
		for (uint32_t steps = 0; off && steps < v->chain_max; steps++) {
			if (!ent_load(s, v, off, &en))
				break;
			/* An allocator lock awaits repair: leave the rest, which no
			 * chain reaches now, to the sweep the caller runs. */
			if (!*deferred && shmmap__free(s, g, c, off, NULL) < 0)
				*deferred = true;
			off = en.next;
		}
	}
	sp->entries = 0;
	sp->bytes = 0;
	sp->slots = 0;
}

/* Every stripe of v emptied under its lock (repaired first if taken over
 * from a dead owner).  A stripe whose lock a live process holds on to
 * (c->wait_ms: maybe a stopped process) is left as it is and counted. */
static void empty_map(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		      const struct map_view *v, struct empty_report *r)
{
	struct op_ctx o = {.s = s, .g = g, .lk = *c};
	for (uint32_t st = 0; st < v->nstripes; st++) {
		struct seg_stripe *sp = &v->stripes[st];
		int rc = shmmap__lock(&sp->lock, c, NULL);
		if (rc < 0) {
			r->busy++;
			r->busy_owner = atomic_load(&sp->lock) & LOCK_OWNER_MASK;
			continue;
		}
		if (rc == 1)
			shmmap__stripe_repair(&o, v, st);
		empty_stripe(s, g, c, v, st, &r->deferred);
		shmmap__unlock(&sp->lock);
	}
}

int shmmap__map_flush(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		      uint32_t idx, struct empty_report *r)
{
	struct map_view v;
	*r = (struct empty_report){0};
	int rc = shmmap__map_view(s, g, idx, &v);
	if (rc < 0)
		return rc;
	empty_map(s, g, c, &v, r);
	return 0;
}

/*
 * Drop map idx (coordinator only).  The generation moves first, so every
 * handle fails with -ESTALE from then on and a writer that already holds a
 * stripe lock sees it (view_live) before linking.  Then each stripe is
 * emptied under its lock with a seq change, so a racing reader retries.
 * The table's pages stay with the directory entry: a stale client may
 * still touch its lock words, so they are reused only by the next map
 * created at this index (same geometry), never handed to the allocator.
 * A stripe held by a live process (stopped, say) is not waited for: the
 * map stays MAP_INIT with dropping set (its name is free at once), and
 * shmmap__map_drop_finish empties the rest once the lock is let go.
 * Returns 0 (dropped), 1 (under way: r->busy stripes left) or -ENOENT.
 * The arrays the map grew into are freed once it is empty (see grow.c).
 */
int shmmap__map_destroy(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			uint32_t idx, struct empty_report *r)
{
	struct map_view v;
	*r = (struct empty_report){0};
	int rc = shmmap__map_view(s, g, idx, &v);
	if (rc < 0)
		return rc;
	struct seg_mapdir *d = seg_dir(s, g, idx);
	d->dropped_ns = shmmap__now_ns();
	atomic_store(&d->dropping, 1);
	atomic_store(&d->state, MAP_INIT);
	atomic_fetch_add(&d->gen, 1);
	return shmmap__map_drop_finish(s, g, c, idx, r);
}

int shmmap__map_drop_finish(const struct seg *s, const struct seg_geom *g,
			    const struct lock_ctx *c, uint32_t idx, struct empty_report *r)
{
	struct map_view v;
	uint32_t busy = r->busy;
	struct seg_mapdir *d = seg_dir(s, g, idx);
	int rc = dropping_view(s, g, idx, &v);
	if (rc == -SHMMAP_ECORRUPT) {
		/* No sane table to empty: let it go (the sweep frees what no
		 * chain reaches). */
		d->stripes_off = 0;
	} else if (rc < 0) {
		return rc;
	} else {
		empty_map(s, g, c, &v, r);
		if (r->busy > busy)
			return 1;
	}
	/* Every stripe lock was passed since the generation moved: no writer
	 * uses the grown arrays any more (readers retry on the table word), so
	 * they go back to the allocator; the table keeps its initial array. */
	uint32_t runs[2];
	shmmap__grow_reset(s, g, d, runs);
	for (int i = 0; i < 2; i++)
		if (runs[i] && shmmap__free_pages(s, g, c, runs[i] - 1, NULL) < 0)
			r->deferred = true; /* no longer named: the sweep frees it */
	atomic_store(&d->dropping, 0);
	atomic_store_explicit(&d->state, MAP_FREE, memory_order_release);
	return 0;
}
