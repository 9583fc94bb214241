/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * coord_internal.h - the coordinator's state (struct coord), shared by its
 * files: coordinator.c (sessions, maps, growth, snapshots, threads, start)
 * and recover.c (recovery).  Not used outside the coordinator.
 */
#ifndef SHMMAP_COORD_INTERNAL_H
#define SHMMAP_COORD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "conf.h"
#include "coordinator.h"
#include "internal.h"
#include "proto.h"

#define HOUSE_MS 100
#define GROW_IDLE_MS 100  /* the growth thread looks at every map this often */
#define GROW_BLOCKED_MS 5 /* ... and this often while a busy stripe holds a resize up */
#define RECLAIM_BUCKETS 2048 /* per map and round: a full pass of 16K buckets in 0.8 s */
#define RECLAIM_DENSE 64      /* expired entries in a chunk that earn the map another one */
#define RECLAIM_BUDGET_MS 10  /* the most a round spends on such extra chunks */
#define HANDSHAKE_MS 5000
#define LISTEN_BACKLOG 128
#define MAX_PENDING 64u /* connections without HELLO */
/* The longest the coordinator waits for a lock a live process holds: past
 * that the holder may be stopped, and the work is deferred, never waited
 * for (c->lk.wait_ms). */
#define COORD_LOCK_WAIT_MS 20u
#define GROW_MIN_BYTES (16u * 1024u * 1024u) /* the smallest growth step */
#define GROW_FILL_DIV 8u     /* grow when fewer than live/8 pages are free */
#define GROW_RETRY_MS 1000u  /* after no room in /dev/shm: try again this often */

struct session;
struct grow_track;
struct cds_lfht;

/*
 * The settings SIGHUP reloads that threads other than the main one read:
 * the access lists (the log level is log.c's atomic int).  Immutable once
 * published in coord.access: the I/O thread reads it under rcu_read_lock
 * (peer_access); shmmap__coord_reload publishes a new one with
 * rcu_xchg_pointer and frees the old after synchronize_rcu.
 */
struct access_lists {
	struct conf_ids allow_uids, allow_gids, readonly_uids, readonly_gids;
};

/*
 * A request the I/O thread hands to the housekeeping thread and answers
 * once it is done (MSG_SAVE; MSG_GROW with a target), so that it answers
 * everyone else meanwhile: one of each kind at a time.  mu guards state,
 * rc, err and arg (the I/O thread queues, the housekeeping thread takes it
 * and posts the result); client and seq are the I/O thread's alone.
 */
enum { DEFER_IDLE, DEFER_QUEUED, DEFER_RUNNING, DEFER_DONE };
struct deferred {
	pthread_mutex_t mu;
	int state, rc;                /* DEFER_*; the result */
	char err[PROTO_NAME_MAX + 1]; /* and why it failed */
	union {
		char path[PROTO_NAME_MAX + 1]; /* MSG_SAVE: the file */
		uint64_t target;               /* MSG_GROW: the size */
	} arg;
	struct session *client;       /* awaits the reply, or NULL (gone) */
	uint32_t seq;                 /* of the request */
	const char *what;             /* why the session is closed if the reply cannot go */
};

struct coord {
	struct shmmap_conf conf;  /* as at start: never changes (see access) */
	struct access_lists *access; /* RCU-protected, replaced by a reload */
	bool created;             /* this start created the segment */
	struct seg seg;
	struct seg_geom g;
	struct lock_ctx lk;
	int lsock, epfd, wakefd;
	int lockfd;              /* flock'ed: one coordinator per segment */
	_Atomic bool stop;
	bool threads_started;
	pthread_t io, house, grow;
	struct grow_track *grow_track; /* [max_maps]: the growth thread's */
	struct cds_lfht *sessions;
	/* Sessions closed during the I/O thread's current batch of events,
	 * freed (call_rcu) once the batch is done: a later event of the same
	 * batch may still name one (I/O thread only). */
	struct session *closed;
	_Atomic uint32_t nsessions;
	_Atomic uint32_t nclients;
	uint64_t start_ms;
	_Atomic bool *orphan;    /* [max_clients]: LIVE slots adopted at start, not resumed */
	/* [max_clients]: the slot generation whose client said BYE (a clean
	 * detach), written by the I/O thread, read by recovery: what such a
	 * slot still holds is freed, but it is no dead client's recovery. */
	_Atomic uint64_t *bye_gen;
	uint32_t *reclaim_at;    /* [max_maps]: the background reclaim's next bucket */
	bool *reclaim_dense;     /* [max_maps]: its last chunk was dense with expired entries */
	/* I/O thread: lines of a kind logged at most so many a second
	 * (log_budget_ok): attaches refused for want of a slot (one a
	 * second), lines about peers that never said HELLO (PEER_LOG_PER_S). */
	struct log_budget {
		uint64_t ms;    /* the window's start */
		uint32_t n;     /* lines logged in it */
		uint64_t quiet; /* lines not logged in it */
	} slot_log, peer_log;
	pthread_mutex_t recover_mu; /* one recovery at a time (I/O vs housekeeping) */
	bool sweep_pending;         /* a sweep waits for a busy allocator lock (recover_mu) */
	bool adopted;               /* the segment existed before this start */
	/* Snapshots: MSG_SAVE is deferred (struct deferred, arg.path). */
	struct deferred save;
	uint64_t save_next_ms;      /* housekeeping: the next interval save (shmmap__mono_ms) */
	/* `shmmapctl grow` (MSG_GROW with a target) is deferred too
	 * (arg.target): growing by gigabytes takes seconds. */
	struct deferred greq;
	/* Growth (see "growth" in coordinator.c): one step or chunk at a time
	 * (grow_mu). */
	pthread_mutex_t grow_mu;
	_Atomic uint32_t grow_asking; /* asks waiting for grow_mu: a step ahead lets them in */
	_Atomic uint64_t noroom_ms; /* when a step last found no room in /dev/shm (shmmap__mono_ms) */
};

/* Housekeeping (coordinator.c): take the request r queued (its argument
 * copied to arg, n bytes): true, and it is running; false if none is
 * queued or the coordinator stops. */
bool shmmap__defer_take(struct coord *c, struct deferred *r, void *arg, size_t n);
/* Housekeeping: r's result (rc, and why it failed); wakes the I/O thread,
 * which answers the client. */
void shmmap__defer_done(struct coord *c, struct deferred *r, int rc, const char *why);

/* ---- mapdir.c ---- */

/* What an OPEN_OPTS request asks of a map it creates (0: the default). */
struct open_opts {
	uint32_t policy; /* SHMMAP_POLICY_* */
	uint64_t capacity, quota;
	uint32_t key_max, value_max, default_ttl;
};

/* Maps in the directory that are LIVE. */
uint32_t shmmap__coord_count_maps(struct coord *c);
/* The parameters of a new map called name under cf ([map], its [map NAME],
 * then rq, which may be NULL). */
void shmmap__conf_map_params(const struct shmmap_conf *cf, const char *name,
			     const struct open_opts *rq, struct map_params *p);
/* Is every map directory entry in use (so that no map can be created
 * until one is dropped: [segment] max_maps)? */
bool shmmap__coord_dir_full(struct coord *c);
/* Find map name, or create it if create (rq: the client's options, may be
 * NULL; rdonly: the client may not create).  0 with its directory index and
 * generation, or a negative errno. */
int shmmap__coord_open_map(struct coord *c, const char *name, bool create, bool rdonly,
			   const struct open_opts *rq, uint32_t *idx, uint32_t *gen);
/* Empty map name; -EBUSY (the holder of a stripe lock in why) if a live
 * process holds on to a stripe, whose entries stay. */
int shmmap__coord_flush_map(struct coord *c, const char *name, char *why, size_t whylen);
/* Drop map name: its name is free at once, its stripes are emptied now or
 * by the housekeeping thread.  0 or a negative errno. */
int shmmap__coord_drop_map(struct coord *c, const char *name);
/* Housekeeping: finish the drops that waited for a busy stripe. */
void shmmap__coord_finish_drops(struct coord *c);

/* ---- persist.c ---- */

/* Write a snapshot to path now and log how it went (why it failed also
 * into why, if not NULL).  0 or a negative errno. */
int shmmap__coord_save_now(struct coord *c, const char *path, char *why, size_t whylen);
/* Housekeeping: a save asked for with MSG_SAVE, then the interval's if due. */
void shmmap__coord_save_due(struct coord *c);
/* At start, into a segment created fresh: load the configured snapshot
 * (none there: start empty).  0, or a negative errno with why in err. */
int shmmap__coord_load_snapshot(struct coord *c, char *err, size_t errlen);
/* Is the object called name a segment whose coordinator died while
 * loading a snapshot into it? */
bool shmmap__coord_half_loaded(const char *name);

/* ---- recover.c ---- */

/* Recover slot `slot`, whose client is gone (caller holds recover_mu):
 * true once it is FREE, false if a step waits for a lock a live process
 * holds (the slot stays DEAD; try again). */
bool shmmap__coord_recover_slot_locked(struct coord *c, uint32_t slot);
/* Recover slot if it is still the one of generation gen; with wait false
 * (the I/O thread) it is only marked DEAD if recover_mu is busy, and the
 * housekeeping thread finishes it. */
void shmmap__coord_recover_slot(struct coord *c, uint32_t slot, uint64_t gen, bool wait);
/* shmmapctl check --repair: recover dead slots, repair every stripe, sweep;
 * fills the MSG_REPAIRED reply.  0 or a negative errno. */
int shmmap__coord_repair_all(struct coord *c, struct proto_msg *rep);
/* At start, on an adopted segment: take over an earlier coordinator's
 * locks and finish its half-done map changes. */
void shmmap__coord_adopt_repair(struct coord *c);
/* Under recover_mu: sweep the allocator now, or leave it pending if a live
 * process holds an allocator lock (-EBUSY).  The sweep's result. */
int shmmap__coord_sweep_or_defer(struct coord *c, const char *what, struct sweep_report *r);
/* Under recover_mu: a sweep for frees the coordinator had to leave. */
void shmmap__coord_sweep_deferred(struct coord *c, const char *what);
/* Under recover_mu (no sweep meanwhile: the scratch record names blocks no
 * chain reaches): empty a window of `pages` pages of the full segment for
 * a run of the coordinator's own (a map's table), as for a large value
 * (shmmap__evict_pages; clients pass the window over until the caller's
 * shmmap__pool_unhold).  What a free that met a busy allocator lock left
 * in the scratch record is a sweep's (what: for its log line).  0, or
 * -ENOSPC when no window can be emptied. */
int shmmap__coord_evict_window(struct coord *c, uint32_t pages, const char *what);
/* The lock stripes of directory entry m's table whatever its state, or
 * NULL if it has no sane table (*n: how many). */
struct seg_stripe *shmmap__coord_table_stripes(struct coord *c, uint32_t m, uint32_t *n);
/* A stripe lock of a table no map uses, taken over from a dead owner:
 * its seq made even, then let go. */
void shmmap__coord_release_taken(struct seg_stripe *sp);

#endif
