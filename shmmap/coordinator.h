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

/* Create or adopt the segment and bind the socket.  On failure returns a
 * negative errno and writes a message to err. */
int shmmap__coord_init(struct coord **out, const struct shmmap_conf *conf, unsigned flags,
		       char *err, size_t errlen);
/* Start the I/O and housekeeping threads. */
int shmmap__coord_start(struct coord *c);
/* Ask the threads to stop and wait for them (call from any thread), then
 * write the last snapshot if [persistence] snapshot is set. */
void shmmap__coord_stop(struct coord *c);
/* Close the socket, mark the segment clean, unmap; NULL is ignored. */
void shmmap__coord_free(struct coord *c);

#endif
