/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * persist.c - when and how the coordinator saves and loads snapshots (the
 * format is snapshot.c's): a save now (MSG_SAVE, the interval, the stop),
 * the interval schedule, the load at start into a segment created fresh,
 * and the test for a segment whose coordinator died while loading one.
 *
 * Invariants kept:
 *   - one save at a time: the housekeeping thread runs them (a
 *     MSG_SAVE is a struct deferred the I/O thread queues), and the stop's final save
 *     runs after both threads are gone;
 *   - a snapshot is loaded only into a segment created by this start,
 *     before the socket listens, and marked SNAP_LOADING_SEG_MAGIC
 *     meanwhile, so a coordinator killed mid-load leaves a segment nobody
 *     adopts; a load that fails stops the start and leaves the file alone
 *     (serving a partial cache would overwrite it at the next save);
 *   - the loader's allocations never race a sweep (recover_mu).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coord_internal.h"
#include "log.h"
#include "snapshot.h"

/* Write a snapshot to path now, and log how it went (why it failed also
 * into why, if not NULL). */
int shmmap__coord_save_now(struct coord *c, const char *path, char *why, size_t whylen)
{
	struct op_ctx o = {.s = &c->seg, .g = &c->g, .lk = c->lk};
	struct snap_save_report r;
	char err[512];
	uint64_t t0 = shmmap__mono_ms();
	int rc = shmmap__snap_save(&o, path, &r, err, sizeof err);
	/* For shmmapctl status and metrics (an operator's only other view of
	 * a failing save was the log). */
	struct seg_header *h = seg_hdr(&c->seg);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	uint64_t ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
	if (rc < 0) {
		atomic_store(&h->save_fail_ms, ms);
		atomic_fetch_add(&h->save_failures, 1);
	} else {
		atomic_store(&h->save_entries, r.entries);
		atomic_store(&h->save_ok_ms, ms);
	}
	if (rc < 0 && why)
		snprintf(why, whylen, "snapshot not saved: %.230s", err);
	if (rc < 0)
		log_error("snapshot not saved: %s", err);
	else
		log_info("saved %llu entries to %s in %llu ms", (unsigned long long)r.entries, path,
		      (unsigned long long)(shmmap__mono_ms() - t0));
	return rc;
}

/* Housekeeping thread: run a save asked for with MSG_SAVE (its result goes
 * to the I/O thread, which replies), then the interval's if it is due. */
void shmmap__coord_save_due(struct coord *c)
{
	const char *conf_path = c->conf.persistence.snapshot;
	const uint64_t every_ms = (uint64_t)c->conf.persistence.interval * 1000u;
	char path[sizeof c->save.arg.path];
	if (shmmap__defer_take(c, &c->save, path, sizeof path)) {
		char why[sizeof c->save.err] = "";
		int rc = shmmap__coord_save_now(c, path, why, sizeof why);
		shmmap__defer_done(c, &c->save, rc, why);
		if (rc == 0 && strcmp(path, conf_path) == 0)
			c->save_next_ms = shmmap__mono_ms() + every_ms;
	}
	/* The next interval save starts `interval` seconds after this one
	 * ended: saves never run back to back, however long they take. */
	if (every_ms && conf_path[0] && !atomic_load(&c->stop) && shmmap__mono_ms() >= c->save_next_ms) {
		shmmap__coord_save_now(c, conf_path, NULL, 0);
		c->save_next_ms = shmmap__mono_ms() + every_ms;
	}
}

/* Loading: records go through open_map and shmmap__tbl_put_at. */
struct load_ctx {
	struct coord *c;
	struct op_ctx o;
	struct map_view v; /* the map last opened */
	uint64_t puts;
};

static int load_open(void *arg, const char *name, uint32_t *key_max, uint32_t *val_max)
{
	struct load_ctx *l = arg;
	uint32_t idx, gen;
	int rc = shmmap__coord_open_map(l->c, name, true, false, NULL, &idx, &gen);
	if (rc == 0)
		rc = shmmap__map_view(&l->c->seg, &l->c->g, idx, &l->v);
	if (rc < 0) {
		log_warning("snapshot: map '%s' not loaded: %s", name,
		      rc == -ENOSPC ? "no room for another map (segment.max_maps, segment.size)"
				    : shmmap_strerror(rc));
		return rc;
	}
	*key_max = l->v.key_max;
	*val_max = l->v.val_max;
	return 0;
}

static int load_put(void *arg, const void *key, uint32_t klen, const void *val, uint32_t vlen,
		    uint64_t expire_ms)
{
	struct load_ctx *l = arg;
	pthread_mutex_lock(&l->c->recover_mu); /* our allocations must not race a sweep */
	int rc = shmmap__tbl_put_at(&l->o, &l->v, key, klen, val, vlen, expire_ms, 0);
	pthread_mutex_unlock(&l->c->recover_mu);
	/* The growth thread is not running yet: grow as we go. */
	if ((++l->puts & 1023) == 0)
		while (shmmap__grow_round(&l->o, l->v.idx, &l->c->grow_track[l->v.idx],
					  &l->c->recover_mu, UINT32_MAX) == 2)
			;
	return rc;
}

/* After a load that left records out, keep the file as loaded under
 * PATH.before-partial-load (a hard link: no copy, and the saves, which
 * rename a new file over PATH, never touch it), so that the next save does
 * not lose them for good.  One kept already (an earlier partial load,
 * perhaps of the full data) is left as it is. */
static void keep_full_snapshot(const char *path)
{
	char kept[sizeof ((struct shmmap_conf *)0)->persistence.snapshot + 32];
	int n = snprintf(kept, sizeof kept, "%s.before-partial-load", path);
	if (n < 0 || (size_t)n >= sizeof kept)
		return;
	if (link(path, kept) == 0)
		log_warning("snapshot %s: the snapshot as loaded is kept in %s (saves do not touch "
			    "it): to load all of it, give the coordinator room for it and move it "
			    "back to %s before a start on a fresh segment",
			    path, kept, path);
	else if (errno == EEXIST)
		log_warning("snapshot %s: %s exists already (from an earlier partial load): left as "
			    "it is, and the snapshot as loaded now is not kept",
			    path, kept);
	else
		log_warning("snapshot %s: cannot keep the snapshot as loaded in %s: %s; the next save "
			    "replaces it",
			    path, kept, strerror(errno));
}

/* A temp file of a save killed midway, removed at start. */
static void stale_removed(void *arg, const char *file, long long size)
{
	(void)arg;
	log_notice("removed %s (%lld bytes), left by a save that did not finish (its process is gone)",
		   file, size);
}

/*
 * At start, into a segment created fresh: load the configured snapshot.
 * No file there: start empty.  A file that does not verify, or a load that
 * fails, stops the start with the reason in err (the caller removes the
 * segment, so the next start tries again; the file is not touched):
 * serving an empty or partial cache instead would replace the snapshot
 * with it at the next save.  While loading, the segment's magic is
 * SNAP_LOADING_SEG_MAGIC, so a coordinator killed meanwhile leaves a
 * segment nobody adopts, which the next start replaces (half_loaded).
 * At every start, adopted or not, temp files of saves that never finished
 * (PATH.tmp.PID of a dead PID) are removed first.
 */
int shmmap__coord_load_snapshot(struct coord *c, char *err, size_t errlen)
{
	const char *path = c->conf.persistence.snapshot;
	if (!path[0])
		return 0;
	char dir[sizeof c->conf.persistence.snapshot];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	slash[slash == dir ? 1 : 0] = '\0';
	if (access(dir, W_OK | X_OK) < 0)
		log_warning("warning: snapshots cannot be saved to %s: %s: %s", path, dir, strerror(errno));
	else
		shmmap__snap_remove_stale(path, stale_removed, NULL);
	if (c->adopted) {
		log_notice("snapshot %s not loaded: the adopted segment's data is newer", path);
		return 0;
	}
	_Atomic uint64_t *magic = (_Atomic uint64_t *)&seg_hdr(&c->seg)->magic;
	atomic_store(magic, SNAP_LOADING_SEG_MAGIC);
	struct load_ctx l = {.c = c, .o = {.s = &c->seg, .g = &c->g, .lk = c->lk}};
	l.o.lk.wait_ms = 0; /* a fresh segment: nobody else holds its locks */
	struct snap_sink sink = {.open = load_open, .put = load_put, .arg = &l};
	struct snap_load_report r;
	uint64_t t0 = shmmap__mono_ms();
	int rc = shmmap__snap_load(path, &sink, &r, err, errlen);
	if (rc == -ENOENT) {
		err[0] = '\0';
		atomic_store(magic, SEG_MAGIC);
		log_notice("no snapshot at %s: starting empty", path);
		return 0;
	}
	if (rc < 0) {
		size_t n = strlen(err);
		snprintf(err + n, errlen - n,
			 "; not starting, to keep the snapshot's data (a start without it would "
			 "replace it at the next save): the file is left as it is; move it aside "
			 "to start empty");
		return rc;
	}
	uint64_t evicted = 0;
	for (uint32_t m = 0; m < c->g.max_maps; m++) {
		struct map_view v;
		if (shmmap__map_view(&c->seg, &c->g, m, &v) == 0)
			for (uint32_t st = 0; st < v.nstripes; st++)
				evicted += v.stripes[st].evictions;
	}
	atomic_store(magic, SEG_MAGIC);
	log_info("loaded %llu entries of %u maps from %s (%llu expired skipped) in %llu ms",
	      (unsigned long long)r.loaded, shmmap__coord_count_maps(c), path, (unsigned long long)r.expired,
	      (unsigned long long)(shmmap__mono_ms() - t0));
	if (r.no_map || r.too_big || r.no_room || evicted) {
		log_warning("snapshot %s: %llu entries of maps that could not be created, %llu over the "
		      "map limits (key_max, value_max) and %llu that did not fit were not loaded, "
		      "and %llu were evicted to make room: the next save will not have them",
		      path, (unsigned long long)r.no_map, (unsigned long long)r.too_big,
		      (unsigned long long)r.no_room, (unsigned long long)evicted);
		keep_full_snapshot(path);
	}
	return 0;
}

/* Is the object called name a segment whose coordinator died while loading
 * a snapshot into it (see load_snapshot)? */
bool shmmap__coord_half_loaded(const char *name)
{
	int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct seg_header h;
	ssize_t n = pread(fd, &h, sizeof h, 0);
	close(fd);
	if (n != (ssize_t)sizeof h || h.magic != SNAP_LOADING_SEG_MAGIC)
		return false;
	pid_t pid = (pid_t)atomic_load(&h.coord_pid);
	return pid <= 0 || pid == getpid() || (kill(pid, 0) < 0 && errno == ESRCH);
}
