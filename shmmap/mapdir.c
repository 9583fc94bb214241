/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * mapdir.c - the coordinator's administration of the map directory:
 * opening (finding or creating) a named map with the configuration that
 * applies to it, flushing and dropping maps, and finishing the drops that
 * waited for a busy stripe.  The I/O thread and the housekeeping thread
 * call these.
 *
 * Invariants kept:
 *   - only the coordinator writes the directory; a map is published with a
 *     release store of its state after everything else is written, and a
 *     drop makes its name free at once (the entry stays MAP_INIT,
 *     dropping, until every stripe is emptied under its lock);
 *   - a map's chains are only ever emptied under its stripe locks, never
 *     wiped: a stuck writer's lock word is never overwritten;
 *   - no step waits for a lock a live process holds on to: it is deferred
 *     (a flush answers -EBUSY and names the holder; a drop finishes later);
 *   - creation and drop are serialised with recovery and sweeps
 *     (recover_mu); a creation in a full segment evicts for its table as a
 *     put of a large value would (evict.c), entries of reject maps never.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "coord_internal.h"
#include "log.h"

uint32_t shmmap__coord_count_maps(struct coord *c)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->g.max_maps; i++)
		n += atomic_load(&seg_dir(&c->seg, &c->g, i)->state) == MAP_LIVE;
	return n;
}

bool shmmap__coord_dir_full(struct coord *c)
{
	for (uint32_t i = 0; i < c->g.max_maps; i++)
		if (atomic_load(&seg_dir(&c->seg, &c->g, i)->state) == MAP_FREE)
			return false;
	return true;
}

static int find_map(struct coord *c, const char *name)
{
	for (uint32_t i = 0; i < c->g.max_maps; i++) {
		struct seg_mapdir *d = seg_dir(&c->seg, &c->g, i);
		if (atomic_load(&d->state) == MAP_LIVE &&
		    strncmp(d->name, name, sizeof d->name) == 0)
			return (int)i;
	}
	return -ENOENT;
}

/*
 * May a map with parameters p be created at free directory entry k?  Its
 * retained table (a dropped map's) has lock words that stale clients may
 * still touch.  Those of dead owners are released here.  With the same
 * geometry the table is reused as it is (a stale writer sees the new
 * generation under the lock and lets go; shmmap__map_create zeroes its
 * stripes' counters, which were the dropped map's).  A table of another geometry
 * would be freed, so it must be out of every stale writer's reach: no
 * lock word held, and no client alive that attached before the drop (one
 * may have resolved its handle and be about to take a lock there, stopped
 * in between); otherwise the entry is passed over.  Under recover_mu.
 */
static bool entry_usable(struct coord *c, uint32_t k, const struct map_params *p)
{
	const struct seg_mapdir *d = seg_dir(&c->seg, &c->g, k);
	uint32_t ns = 0;
	struct seg_stripe *sp = shmmap__coord_table_stripes(c, k, &ns);
	bool same = d->nbuckets == p->nbuckets && d->nstripes == p->nstripes;
	if (sp && !same) {
		uint64_t dropped = d->dropped_ns;
		for (uint32_t i = 0; i < c->g.max_clients; i++) {
			const struct seg_slot *sl = seg_slot(&c->seg, &c->g, i);
			if (atomic_load(&sl->state) != SLOT_FREE &&
			    (!dropped || sl->attached_ns <= dropped))
				return false;
		}
	}
	for (uint32_t st = 0; sp && st < ns; st++) {
		uint32_t owner = atomic_load(&sp[st].lock) & LOCK_OWNER_MASK;
		if (!owner || owner == LOCK_OWNER_COORD)
			continue;
		if (!shmmap__owner_alive(&c->lk, owner)) {
			if (shmmap__lock_take_from(&sp[st].lock, owner, LOCK_OWNER_COORD))
				shmmap__coord_release_taken(&sp[st]);
		} else if (!same) {
			return false;
		}
	}
	return true;
}

/* The parameters of a new map called name under configuration cf: [map],
 * then its [map NAME] section, then what the request asks (rq, may be
 * NULL).  Also shmmap__coord_check_geometry's, for every configured map. */
void shmmap__conf_map_params(const struct shmmap_conf *cf, const char *name,
			     const struct open_opts *rq, struct map_params *p)
{
	uint32_t buckets = cf->map.buckets, stripes = cf->map.stripes, maxb = cf->map.max_buckets;
	bool buckets_set = false;
	uint64_t capacity = cf->map.capacity;
	*p = (struct map_params){
		.key_max = cf->map.key_max, .val_max = cf->map.value_max, .policy = cf->map.policy,
		.quota = cf->map.quota, .default_ttl = cf->map.default_ttl,
	};
	for (uint32_t i = 0; i < cf->nmaps; i++) {
		const struct conf_map_sect *ms = &cf->maps[i];
		if (strcmp(ms->name, name))
			continue;
		p->key_max = ms->has & CMS_KEY_MAX ? ms->key_max : p->key_max;
		p->val_max = ms->has & CMS_VALUE_MAX ? ms->value_max : p->val_max;
		p->policy = ms->has & CMS_POLICY ? ms->policy : p->policy;
		p->quota = ms->has & CMS_QUOTA ? ms->quota : p->quota;
		p->default_ttl = ms->has & CMS_DEFAULT_TTL ? ms->default_ttl : p->default_ttl;
		buckets = ms->has & CMS_BUCKETS ? ms->buckets : buckets;
		buckets_set = buckets_set || (ms->has & CMS_BUCKETS);
		stripes = ms->has & CMS_STRIPES ? ms->stripes : stripes;
		maxb = ms->has & CMS_MAX_BUCKETS ? ms->max_buckets : maxb;
		capacity = ms->has & CMS_CAPACITY ? ms->capacity : capacity;
	}
	if (rq) {
		p->key_max = rq->key_max ? rq->key_max : p->key_max;
		p->val_max = rq->value_max ? rq->value_max : p->val_max;
		p->policy = rq->policy == SHMMAP_POLICY_EVICT    ? MAP_POLICY_EVICT
			    : rq->policy == SHMMAP_POLICY_REJECT ? MAP_POLICY_REJECT
								 : p->policy;
		p->quota = rq->quota ? rq->quota : p->quota;
		p->default_ttl = rq->default_ttl ? rq->default_ttl : p->default_ttl;
		capacity = rq->capacity ? rq->capacity : capacity;
	}
	/* A capacity: buckets for it at the load a resize leaves. */
	if (capacity) {
		uint64_t want = capacity * 100u / GROW_TO_PCT;
		buckets = 1;
		while (buckets < want && buckets < (1u << 26))
			buckets <<= 1;
	}
	/* A section's max_buckets below the initial buckets it did not set
	 * lowers them (not below its stripes); one it set raises the cap. */
	if (maxb < buckets && !buckets_set && !capacity)
		buckets = maxb;
	if (buckets < stripes)
		buckets = stripes;
	if (maxb < buckets)
		maxb = buckets;
	p->nbuckets = buckets;
	p->nstripes = stripes;
	p->max_buckets = maxb;
}

int shmmap__coord_open_map(struct coord *c, const char *name, bool create, bool rdonly,
		    const struct open_opts *rq, uint32_t *idx, uint32_t *gen)
{
	int i = find_map(c, name);
	if (i == -ENOENT && create) {
		if (rdonly)
			return -EPERM;
		for (uint32_t k = 0; k < c->g.max_maps; k++) {
			if (atomic_load(&seg_dir(&c->seg, &c->g, k)->state) != MAP_FREE)
				continue;
			struct map_params p;
			shmmap__conf_map_params(&c->conf, name, rq, &p);
			pthread_mutex_lock(&c->recover_mu); /* no sweep meanwhile */
			if (!entry_usable(c, k, &p)) {
				pthread_mutex_unlock(&c->recover_mu);
				log_info("map entry %u passed over: its old table (another geometry) "
					 "may still be in use by a client that attached before the drop",
					 k);
				continue;
			}
			int rc = shmmap__map_create(&c->seg, &c->g, &c->lk, k, name, &p);
			/* A segment full of entries that may be evicted (and that
			 * cannot grow): room for the table, as for a large value. */
			uint64_t tpages = (shmmap__table_bytes(p.nbuckets, p.nstripes) + SEG_PAGE - 1) /
					  SEG_PAGE;
			for (uint32_t t = 0; rc == -ENOSPC && t < 8 && tpages <= c->g.npages_max; t++) {
				int er = shmmap__coord_evict_window(c, (uint32_t)tpages,
								    "map creation");
				if (er < 0)
					break; /* no window can be emptied */
				rc = shmmap__map_create(&c->seg, &c->g, &c->lk, k, name, &p);
				shmmap__pool_unhold(&c->seg);
			}
			pthread_mutex_unlock(&c->recover_mu);
			if (rc < 0)
				return rc;
			log_info("created map '%s' (index %u)", name, k);
			i = (int)k;
			break;
		}
		if (i < 0)
			return -ENOSPC; /* no free directory entry */
	}
	if (i < 0)
		return i;
	*idx = (uint32_t)i;
	*gen = atomic_load(&seg_dir(&c->seg, &c->g, (uint32_t)i)->gen);
	return 0;
}

/* Who holds lock owner id `owner`, for messages: "pid N (slot S)". */
static void owner_text(struct coord *c, uint32_t owner, char *buf, size_t n)
{
	if (owner >= 1 && owner <= c->g.max_clients)
		snprintf(buf, n, "pid %u (slot %u)", seg_slot(&c->seg, &c->g, owner - 1)->pid,
			 owner - 1);
	else
		snprintf(buf, n, "an unknown owner");
}

/*
 * Flush map name.  Stripes that a live process holds on to (stopped, say)
 * are not waited for: they keep their entries, and the client is told
 * (-EBUSY, with the holder in why).
 */
int shmmap__coord_flush_map(struct coord *c, const char *name, char *why, size_t whylen)
{
	int i = find_map(c, name);
	if (i < 0)
		return i;
	struct empty_report r;
	pthread_mutex_lock(&c->recover_mu);
	int rc = shmmap__map_flush(&c->seg, &c->g, &c->lk, (uint32_t)i, &r);
	if (r.deferred)
		shmmap__coord_sweep_deferred(c, "flush");
	pthread_mutex_unlock(&c->recover_mu);
	if (rc < 0)
		return rc;
	if (r.busy) {
		char who[64];
		owner_text(c, r.busy_owner, who, sizeof who);
		snprintf(why, whylen,
			 "map '%.64s' flushed but for %u stripe(s) that a live process holds (%s: "
			 "stopped?); flush again once it lets go",
			 name, r.busy, who);
		log_warning("%s", why);
		return -EBUSY;
	}
	log_info("flushed map '%s'", name);
	return 0;
}

/*
 * Drop map name.  Its name is free at once; stripes a live process holds
 * on to are emptied later by the housekeeping thread (the map stays
 * MAP_INIT, dropping, until then).
 */
int shmmap__coord_drop_map(struct coord *c, const char *name)
{
	int i = find_map(c, name);
	if (i < 0)
		return i;
	struct empty_report r;
	pthread_mutex_lock(&c->recover_mu);
	int rc = shmmap__map_destroy(&c->seg, &c->g, &c->lk, (uint32_t)i, &r);
	if (r.deferred)
		shmmap__coord_sweep_deferred(c, "drop");
	pthread_mutex_unlock(&c->recover_mu);
	if (rc < 0)
		return rc;
	if (rc == 1) {
		char who[64];
		owner_text(c, r.busy_owner, who, sizeof who);
		log_warning("dropped map '%s'; %u of its stripe(s) are held by %s (stopped?) and "
			    "will be emptied once let go", name, r.busy, who);
	} else {
		log_info("dropped map '%s'", name);
	}
	return 0;
}

/* Housekeeping: finish the drops that waited for a busy stripe. */
void shmmap__coord_finish_drops(struct coord *c)
{
	for (uint32_t m = 0; m < c->g.max_maps; m++) {
		struct seg_mapdir *d = seg_dir(&c->seg, &c->g, m);
		if (atomic_load(&d->state) != MAP_INIT || !atomic_load(&d->dropping))
			continue;
		struct empty_report r = {0};
		pthread_mutex_lock(&c->recover_mu);
		int rc = shmmap__map_drop_finish(&c->seg, &c->g, &c->lk, m, &r);
		if (r.deferred)
			shmmap__coord_sweep_deferred(c, "drop");
		pthread_mutex_unlock(&c->recover_mu);
		if (rc == 0)
			log_notice("map %u: the drop waiting for a busy stripe is done", m);
	}
}
