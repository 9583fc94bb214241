/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * recover.c - the coordinator's recovery: of a dead client's slot, of
 * everything at `shmmapctl check --repair`, and of what an earlier
 * coordinator left at start.
 *
 * Recovery of a dead slot (shmmap__coord_recover_slot_locked): mark it
 * DEAD (lock waiters then see its owner as dead), settle its undo records
 * under their stripes' locks, take over and repair every stripe it holds,
 * free what its intent records still name, or sweep the whole allocator
 * (sweep.c) if it died holding an allocator lock; then mark the slot FREE.
 *
 * Invariants kept:
 *   - every step is idempotent, so a coordinator that dies halfway is
 *     harmless: the next one finds the slot DEAD (or LIVE with a dead pid)
 *     and does it again, after taking over whatever locks its predecessor
 *     held and sweeping (shmmap__coord_adopt_repair, at start);
 *   - nothing a dead writer's records name is freed, and no undo record is
 *     cleared, before the stripe it belongs to is repaired under its lock
 *     (a waiter that took the lock over may be repairing it);
 *   - no step waits for a lock that a live process holds on to (the
 *     lock_ctx is bounded): the slot stays DEAD with what it waits for in
 *     its wait_* fields, and the housekeeping thread tries again;
 *   - recoveries, sweeps and map creation and drop are serialised by
 *     recover_mu.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "coord_internal.h"
#include "log.h"

/* Does owner hold any allocator lock (a class lock or the pool lock)? */
static bool holds_alloc_lock(struct coord *c, uint32_t owner)
{
	for (uint32_t i = 0; i < c->g.nclasses; i++)
		if ((atomic_load(&seg_class(&c->seg, &c->g, i)->lock) & LOCK_OWNER_MASK) == owner)
			return true;
	return (atomic_load(&seg_hdr(&c->seg)->pool_lock) & LOCK_OWNER_MASK) == owner;
}

/* The lock stripes of directory entry m's table, whatever its state (a
 * dropped map's retained table, or one being created or dropped, has lock
 * words a stale client may hold), or NULL if it has no sane table. */
struct seg_stripe *shmmap__coord_table_stripes(struct coord *c, uint32_t m, uint32_t *n)
{
	const struct seg_mapdir *d = seg_dir(&c->seg, &c->g, m);
	uint64_t off = __atomic_load_n(&d->stripes_off, __ATOMIC_RELAXED);
	uint32_t ns = __atomic_load_n(&d->nstripes, __ATOMIC_RELAXED);
	if (!off || !ns || ns > (1u << 20) || off < c->g.heap_off ||
	    !seg_ok(&c->seg, off, (uint64_t)ns * sizeof(struct seg_stripe), 64))
		return NULL;
	*n = ns;
	return seg_ptr(&c->seg, off);
}

/* A stripe lock of a table no map uses (retained, or being re-made),
 * taken over from a dead owner: no chain to repair, only its sequence
 * counter made even again, then let go. */
void shmmap__coord_release_taken(struct seg_stripe *sp)
{
	atomic_store(&sp->seq, (atomic_load(&sp->seq) + 1) & ~1u);
	shmmap__unlock(&sp->lock);
}

/* Take over and repair every stripe lock `owner` holds; returns how many.
 * Stripes of tables that are not live (a dropped map's, kept for reuse)
 * are released too: when the slot is given to another client, no lock
 * word may still name it. */
static unsigned take_stripes(struct coord *c, uint32_t owner)
{
	struct op_ctx o = {.s = &c->seg, .g = &c->g, .lk = c->lk};
	unsigned took = 0;
	for (uint32_t m = 0; m < c->g.max_maps; m++) {
		struct map_view v;
		bool linked = shmmap__map_view_linked(&c->seg, &c->g, m, &v) == 0;
		uint32_t ns = 0;
		struct seg_stripe *sp = linked ? v.stripes : shmmap__coord_table_stripes(c, m, &ns);
		if (linked)
			ns = v.nstripes;
		for (uint32_t st = 0; sp && st < ns; st++) {
			if (!shmmap__lock_take_from(&sp[st].lock, owner, LOCK_OWNER_COORD))
				continue;
			if (linked) {
				shmmap__stripe_repair(&o, &v, st);
				shmmap__unlock(&sp[st].lock);
			} else {
				shmmap__coord_release_taken(&sp[st]);
			}
			took++;
		}
	}
	return took;
}

static void log_sweep(const char *why, const struct sweep_report *r)
{
	log_notice("sweep (%s): %llu blocks in use, %llu freed, %llu pages back to the pool, "
	      "%u dead slot(s) settled%s",
	      why, (unsigned long long)r->roots, (unsigned long long)r->freed,
	      (unsigned long long)r->pages_freed, r->dead_slots,
	      r->bad_roots ? " (some linked entries lie in no valid block: run shmmapctl check)"
			   : "");
}

/* Under recover_mu: sweep, or if a live process holds an allocator lock
 * on to (stopped, say), leave it pending for the housekeeping thread,
 * which tries again every round.  Returns the sweep's result. */
int shmmap__coord_sweep_or_defer(struct coord *c, const char *what, struct sweep_report *r)
{
	int rc = shmmap__sweep(&c->seg, &c->g, &c->lk, r);
	if (rc == 0) {
		c->sweep_pending = false;
		log_sweep(what, r);
	} else if (rc == -EBUSY) {
		if (!c->sweep_pending)
			log_warning("sweep (%s) deferred: an allocator lock was busy (a live "
			      "process held it); trying again every %d ms", what, HOUSE_MS);
		c->sweep_pending = true;
	} else {
		log_error("sweep (%s) failed: %s", what, shmmap_strerror(rc));
		c->sweep_pending = true;
	}
	return rc;
}

/* Under recover_mu: the coordinator's own frees met an allocator lock of a
 * dead process (or one a live process holds on to) and left entries
 * (unlinked, so no chain reaches them) to a sweep, which also repairs that
 * lock's state. */
void shmmap__coord_sweep_deferred(struct coord *c, const char *what)
{
	struct sweep_report r;
	shmmap__coord_sweep_or_defer(c, what, &r);
}

int shmmap__coord_evict_window(struct coord *c, uint32_t pages, const char *what)
{
	struct seg_intent scratch = {0};
	struct op_ctx o = {.s = &c->seg, .g = &c->g, .lk = c->lk};
	int rc = shmmap__evict_pages(&o, &scratch, pages);
	if (atomic_load(&scratch.a) || atomic_load(&scratch.b))
		shmmap__coord_sweep_deferred(c, what);
	return rc;
}

static bool settle_stripe(struct coord *c, uint32_t map, uint32_t stripe, struct seg_slot *sl);

/*
 * A dead writer's record, before what it names is freed: a block it names
 * may still be linked if the writer died holding the record's stripe lock
 * and someone else took that lock over but has not repaired the stripe
 * yet.  So take that stripe lock (waiting for such a taker, or taking it
 * over and repairing it ourselves) and settle the record under it.
 */
static bool settle_record(struct coord *c, struct seg_intent *in, struct seg_slot *sl)
{
	if (!atomic_load(&in->a) && !atomic_load(&in->b))
		return true;
	return settle_stripe(c, atomic_load(&in->map), atomic_load(&in->stripe), sl);
}

/* A dead writer's rewrite in place cut short (struct seg_undo): its
 * stripe's repair, under the stripe lock, puts the old value back and
 * clears the record; a live waiter that took the lock over may be doing
 * just that, so the record is not cleared before the lock is had.  (If the
 * map is gone there is nothing to put back.) */
static bool settle_undo(struct coord *c, struct seg_undo *u, struct seg_slot *sl)
{
	if (!atomic_load(&u->off))
		return true;
	if (!settle_stripe(c, u->map, u->stripe, sl))
		return false;
	atomic_store(&u->off, 0);
	return true;
}

/* Repair stripe `stripe` of map `map` under its lock (waiting for a taker
 * that repairs it first): false if a live process holds on to it. */
static bool settle_stripe(struct coord *c, uint32_t map, uint32_t stripe, struct seg_slot *sl)
{
	struct map_view v;
	if (shmmap__map_view_linked(&c->seg, &c->g, map, &v) < 0 || stripe >= v.nstripes)
		return true; /* dropped: its chains were emptied under every stripe lock */
	struct op_ctx o = {.s = &c->seg, .g = &c->g, .lk = c->lk};
	if (shmmap__lock(&v.stripes[stripe].lock, &c->lk, NULL) < 0) {
		/* A live process holds on to it (stopped?): not now. */
		sl->wait_kind = SLOT_WAIT_STRIPE;
		sl->wait_owner = atomic_load(&v.stripes[stripe].lock) & LOCK_OWNER_MASK;
		sl->wait_map = map;
		sl->wait_stripe = stripe;
		return false;
	}
	shmmap__stripe_repair(&o, &v, stripe);
	shmmap__unlock(&v.stripes[stripe].lock);
	return true;
}

/*
 * Recover slot `slot`, whose client is gone.  Caller holds recover_mu.
 *  1. Mark it DEAD: from now on every lock waiter sees its owner dead.
 *  2. Take over each stripe lock it holds and repair the stripe: its write
 *     there is then either done or not done (stripe_repair settles the
 *     intent records that name the stripe and puts back a rewrite in place
 *     it cut short; an undo record still set names a stripe whose lock a
 *     waiter took over: that stripe is repaired under its lock too).
 *  3. What its intent records still name is unreachable and its alone:
 *     free it.  If it died holding an allocator lock (or one is held by
 *     another dead process), the allocator may be half-updated: sweep
 *     instead, which rebuilds it and settles every dead slot's records.
 *  4. Mark it FREE.  It counts as a recovery (seg_header.recoveries, logged
 *     at notice level) if it released a lock, swept, or freed blocks of a
 *     client that did not say BYE: a clean detach is not a recovery.
 * Every step is idempotent, so a coordinator that dies halfway is harmless:
 * the next one finds the slot DEAD (or LIVE with a dead pid) and starts over.
 * No step waits for a lock that a live process holds on to (the lock_ctx
 * is bounded): such a step leaves the slot DEAD, with what it waits for in
 * its wait_* fields (shmmapctl clients shows it), and returns false; the
 * housekeeping thread tries every DEAD slot again each round, so recovery
 * finishes as soon as the lock is let go.
 */
bool shmmap__coord_recover_slot_locked(struct coord *c, uint32_t slot)
{
	struct seg_slot *sl = seg_slot(&c->seg, &c->g, slot);
	const uint32_t owner = slot + 1;
	if (atomic_exchange(&sl->state, SLOT_DEAD) != SLOT_DEAD || !sl->dead_ns)
		sl->dead_ns = shmmap__now_ns();
	sl->wait_kind = SLOT_WAIT_NONE;
	sl->wait_owner = 0;
	unsigned took = take_stripes(c, owner);
	/* An allocator lock of ours here is one taken over from a dead
	 * predecessor at start (our own allocator use is serialised with
	 * recovery by recover_mu): the sweep repairs it. */
	bool sweep = holds_alloc_lock(c, owner) || holds_alloc_lock(c, LOCK_OWNER_COORD);
	bool busy = false;
	unsigned freed = 0;
	for (uint32_t k = 0; k < SEG_UNDOS && !busy; k++)
		busy = !settle_undo(c, &sl->undo[k], sl);
	for (uint32_t k = 0; k < SEG_INTENTS && !sweep && !busy; k++) {
		struct seg_intent *in = &sl->intent[k];
		if (!settle_record(c, in, sl)) {
			busy = true;
			break;
		}
		/* A spare that a or b names too is freed through them (a move
		 * between the fields was cut short). */
		uint64_t sp = atomic_load(&in->spare);
		if (sp && (sp == atomic_load(&in->a) || sp == atomic_load(&in->b)))
			atomic_compare_exchange_strong(&in->spare, &sp, 0);
		_Atomic uint64_t *recs[3] = {&in->b, &in->a, &in->spare};
		for (int j = 0; j < 3 && !sweep && !busy; j++) {
			uint64_t off = atomic_load(recs[j]);
			if (!off)
				continue;
			int rc = shmmap__free(&c->seg, &c->g, &c->lk, off, recs[j]);
			if (rc == -EBUSY) {
				sl->wait_kind = SLOT_WAIT_ALLOC;
				busy = true;
			} else if (rc < 0) {
				sweep = true;
			} else {
				freed++;
			}
		}
	}
	/* Pages the client was emptying for another size class (evict.c) go
	 * back on their partial lists. */
	if (!busy && !sweep) {
		int rc = shmmap__alloc_undrain(&c->seg, &c->g, &c->lk, owner);
		if (rc == -EBUSY) {
			sl->wait_kind = SLOT_WAIT_ALLOC;
			busy = true;
		} else if (rc < 0) {
			sweep = true;
		}
	}
	if (!busy && sweep) {
		struct sweep_report r;
		int rc = shmmap__coord_sweep_or_defer(c, "a dead client held an allocator lock", &r);
		if (rc == -EBUSY) {
			sl->wait_kind = SLOT_WAIT_ALLOC;
			busy = true;
		}
	}
	if (busy) {
		if (took || freed)
			log_warning("slot %u: released %u stripe lock(s), freed %u block(s) in flight; the "
			      "rest waits for a lock a live process holds (stopped?)", slot, took,
			      freed);
		return false;
	}
	/* A client that said BYE detached cleanly: blocks it still held
	 * (a library that keeps its spares past detach, or a free that met
	 * an allocator lock awaiting repair) are freed, but that is no dead
	 * client's recovery.  A lock it held, or a sweep, still is: a thread
	 * went on writing past the detach. */
	bool bye = atomic_load(&c->bye_gen[slot]) == atomic_load(&sl->gen);
	sl->wait_kind = SLOT_WAIT_NONE;
	sl->dead_ns = 0;
	sl->pid = 0;
	sl->start_time = 0;
	sl->flags = 0;
	atomic_store_explicit(&sl->state, SLOT_FREE, memory_order_release);
	if (took || sweep || (freed && !bye))
		atomic_fetch_add(&seg_hdr(&c->seg)->recoveries, 1);
	if (took || (freed && !bye))
		log_notice("slot %u: released %u stripe lock(s), freed %u block(s) in flight", slot,
		      took, freed);
	else if (freed)
		log_info("slot %u: detached; freed %u block(s) it still held", slot, freed);
	return true;
}

/*
 * Recover slot if it is still the one of generation gen (a session's slot
 * may have been recovered already, by check --repair, and given to another
 * client since: that one must not be touched).  It is marked DEAD at once
 * (lock waiters then see its owner dead).  With wait false (the I/O
 * thread), recovery is not even waited for: if recover_mu is busy, the
 * housekeeping thread does it (it retries every DEAD slot each round).
 */
void shmmap__coord_recover_slot(struct coord *c, uint32_t slot, uint64_t gen, bool wait)
{
	struct seg_slot *sl = seg_slot(&c->seg, &c->g, slot);
	if (wait) {
		pthread_mutex_lock(&c->recover_mu);
	} else {
		/* The I/O thread: it alone gives slots out, so gen cannot move
		 * between the check and the CAS (a slot is freed only under
		 * recover_mu, and given out only by this thread). */
		uint32_t live = SLOT_LIVE;
		if (atomic_load(&sl->gen) == gen &&
		    atomic_compare_exchange_strong(&sl->state, &live, SLOT_DEAD))
			sl->dead_ns = shmmap__now_ns();
		if (pthread_mutex_trylock(&c->recover_mu) != 0)
			return;
	}
	if (atomic_load(&sl->state) != SLOT_FREE && atomic_load(&sl->gen) == gen)
		shmmap__coord_recover_slot_locked(c, slot);
	pthread_mutex_unlock(&c->recover_mu);
}

/*
 * Repair everything that can be repaired without losing a live entry
 * (shmmapctl check --repair): recover the slots of dead clients, repair
 * every stripe (odd counters, wrong totals, intent records), then sweep
 * the allocator (leaks, broken lists).
 */
int shmmap__coord_repair_all(struct coord *c, struct proto_msg *rep)
{
	pthread_mutex_lock(&c->recover_mu);
	uint32_t slots = 0, stripes = 0, busy = 0, pending = 0;
	for (uint32_t i = 0; i < c->g.max_clients; i++) {
		struct seg_slot *sl = seg_slot(&c->seg, &c->g, i);
		uint32_t st = atomic_load(&sl->state);
		if (st != SLOT_FREE && !shmmap__slot_alive(&c->seg, &c->g, i)) {
			if (shmmap__coord_recover_slot_locked(c, i))
				slots++;
			else
				pending++;
		}
	}
	/* A stripe whose lock a live process holds on to (stopped?) is
	 * skipped and counted, not waited for. */
	struct op_ctx o = {.s = &c->seg, .g = &c->g, .lk = c->lk};
	for (uint32_t m = 0; m < c->g.max_maps; m++) {
		struct map_view v;
		if (shmmap__map_view_linked(&c->seg, &c->g, m, &v) < 0)
			continue;
		for (uint32_t st = 0; st < v.nstripes; st++) {
			if (shmmap__lock(&v.stripes[st].lock, &c->lk, NULL) < 0) {
				busy++;
				continue;
			}
			shmmap__stripe_repair(&o, &v, st);
			shmmap__unlock(&v.stripes[st].lock);
			stripes++;
		}
	}
	struct sweep_report r = {0};
	int rc = shmmap__coord_sweep_or_defer(c, "shmmapctl check --repair", &r);
	pthread_mutex_unlock(&c->recover_mu);
	if (rc < 0 && rc != -EBUSY)
		return rc;
	rep->type = MSG_REPAIRED;
	/* Deferred (an allocator lock was busy, even for an instant of
	 * ordinary use): r holds no results, and the housekeeping thread
	 * sweeps as soon as it can (sweep_pending). */
	rep->u.repaired.deferred = rc == -EBUSY;
	rep->u.repaired.busy = busy;
	rep->u.repaired.pending = pending;
	rep->u.repaired.slots = slots;
	rep->u.repaired.stripes = stripes;
	rep->u.repaired.roots = r.roots;
	rep->u.repaired.freed = r.freed;
	rep->u.repaired.pages_freed = r.pages_freed;
	rep->u.repaired.bad_roots = r.bad_roots;
	return 0;
}

/*
 * At start, on an adopted segment: whatever an earlier coordinator held is
 * stale (it is dead: we are starting).  Take its locks over, finish the
 * drop or create of a map it left half-done (the map is emptied and
 * freed: its handles were already stale), then recover dead slots and
 * sweep, so the allocator is whole whatever instant it died at.
 */
/* Does directory entry d name a table whose geometry fits in its run of
 * pages?  (A create that died half-way may have new offsets with the old
 * geometry.) */
static bool table_fits_run(struct coord *c, const struct seg_mapdir *d)
{
	uint64_t first = d->table_pages;
	if (!d->stripes_off || first >= c->g.npages ||
	    d->stripes_off != seg_page_off(&c->g, (uint32_t)first) || !d->nbuckets ||
	    (d->nbuckets & (d->nbuckets - 1)) || !d->nstripes ||
	    (d->nstripes & (d->nstripes - 1)) || d->nstripes > d->nbuckets)
		return false;
	const struct seg_page *p = seg_page(&c->seg, &c->g, (uint32_t)first);
	uint64_t run = p->kind == PAGE_RUN ? p->run : 0;
	return run && run <= c->g.npages - first &&
	       shmmap__table_bytes(d->nbuckets, d->nstripes) <= run * SEG_PAGE &&
	       d->buckets_off == d->stripes_off + (uint64_t)d->nstripes * sizeof(struct seg_stripe);
}

void shmmap__coord_adopt_repair(struct coord *c)
{
	unsigned took = 0;
	for (uint32_t i = 0; i < c->g.nclasses; i++)
		took += shmmap__lock_take_from(&seg_class(&c->seg, &c->g, i)->lock,
					       LOCK_OWNER_COORD, LOCK_OWNER_COORD);
	took += shmmap__lock_take_from(&seg_hdr(&c->seg)->pool_lock, LOCK_OWNER_COORD,
				       LOCK_OWNER_COORD);
	/* The allocator locks taken over stay held until the sweep at the end
	 * of the start (shmmap__coord_init), which repairs what they guard and
	 * releases them: nobody may allocate from a half-updated class. */
	unsigned half = 0;
	for (uint32_t m = 0; m < c->g.max_maps; m++) {
		struct seg_mapdir *d = seg_dir(&c->seg, &c->g, m);
		if (atomic_load(&d->state) != MAP_INIT)
			continue;
		atomic_fetch_add(&d->gen, 1);
		half++;
		if (!table_fits_run(c, d)) {
			/* No sane table (a create that died before it had one):
			 * nothing was linked; the sweep frees what is left. */
			d->stripes_off = 0;
			atomic_store(&d->dropping, 0);
			atomic_store(&d->state, MAP_FREE);
			continue;
		}
		/* Half created or half dropped: finish it as a drop, emptying
		 * the table under its stripe locks (never with a memset, which
		 * would wipe a lock a stuck writer still holds); below, and
		 * later by the housekeeping thread if a live process holds a
		 * stripe. */
		atomic_store(&d->dropping, 1);
	}
	took += take_stripes(c, LOCK_OWNER_COORD);
	for (uint32_t m = 0; m < c->g.max_maps; m++) {
		struct empty_report er = {0};
		if (shmmap__map_drop_finish(&c->seg, &c->g, &c->lk, m, &er) == 1)
			log_warning("map %u: a half-done drop waits for a stripe held by a live process", m);
		if (er.deferred)
			c->sweep_pending = true;
	}
	if (took || half)
		log_notice("took over %u lock(s) and %u half-done map change(s) of the previous "
		      "coordinator", took, half);
}
