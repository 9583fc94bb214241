/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * coordinator.h - the coordinator service (shmmapd) as a library for its
 * main program and its tests.
 */
#ifndef SHMMAP_COORDINATOR_H
#define SHMMAP_COORDINATOR_H

#include "conf.h"

struct coord;

#define COORD_REINIT 0x1u /* replace a segment that does not validate */

/* The segment geometry conf asks for, checked as shmmap__coord_init checks
 * it, creating nothing (shmmapd --check-config): the fixed regions and 2
 * pages fit in segment.size, and the initial table of [map] and of every
 * [map NAME] in the heap at max_size.  0, or -EINVAL with what is wrong
 * and what to change in err. */
int shmmap__coord_check_geometry(const struct shmmap_conf *conf, char *err, size_t errlen);
/* What a start would say of the object under the configured segment name,
 * creating and changing nothing: 0 if there is none, or a start would
 * adopt it (or replace a half-loaded one); else a negative errno and the
 * start's refusal in err (another geometry, another user's, not a
 * segment). */
int shmmap__coord_check_existing(const struct shmmap_conf *conf, char *err, size_t errlen);

/* Take the segment's lock, bind the socket, then create or adopt the
 * segment (and load the snapshot).  On failure returns a negative errno,
 * writes a message to err and leaves nothing behind (no socket file, no
 * segment it created). */
int shmmap__coord_init(struct coord **out, const struct shmmap_conf *conf, unsigned flags,
		       char *err, size_t errlen);
/*
 * Apply a reloaded configuration to a running coordinator: the access
 * lists ([server] allow_uids, allow_gids, readonly_uids, readonly_gids),
 * for the connections accepted from now on, and the log level.  Every other
 * key that differs from the start's configuration is logged as ignored
 * (it needs a restart).  One caller at a time, never inside an RCU read-side
 * section (it waits for a grace period); shmmapd calls it on SIGHUP.
 */
void shmmap__coord_reload(struct coord *c, const struct shmmap_conf *conf);
/* Start the I/O and housekeeping threads. */
int shmmap__coord_start(struct coord *c);
/* Ask the threads to stop and wait for them (call from any thread), then
 * write the last snapshot if [persistence] snapshot is set. */
int shmmap__coord_stop(struct coord *c);
/* Close the socket, mark the segment clean, unmap; NULL is ignored. */
void shmmap__coord_free(struct coord *c);

#endif
