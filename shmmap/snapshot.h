/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * snapshot.h - snapshot files: every live entry of every map, written to a
 * file and loaded back into a fresh segment.  The file format is described
 * in snapshot.c.  Used by the coordinator (save on request, on a timer and
 * at a clean shutdown; load at start) and by tests.
 *
 * Invariants:
 *   - A snapshot file under its final name is always complete: it is
 *     written to PATH.tmp.<pid> and renamed over PATH only after it was
 *     written and synced in full.  A failed save leaves PATH as it was.
 *   - Nothing is loaded from a file that has not been verified in full
 *     first (lengths, record count, checksum, no trailing bytes), and a
 *     file is never modified by reading it.
 *   - Every function returns 0 or a negative errno and, on failure, writes
 *     one line "PATH: why" to err.  None of them prints, exits or aborts.
 */
#ifndef SHMMAP_SNAPSHOT_H
#define SHMMAP_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define SNAP_MAGIC "SHMMAPS"      /* 8 bytes with its NUL */
#define SNAP_VERSION 1u
#define SNAP_HEADER 32u           /* bytes */
#define SNAP_TRAILER 16u          /* bytes */
#define SNAP_KEY_MAX 65535u       /* longest key a file may hold */
#define SNAP_VAL_MAX (1u << 30)   /* longest value a file may hold */

/*
 * The header magic of a segment that is being loaded from a snapshot (in
 * place of SEG_MAGIC until the load is complete): a coordinator that dies
 * while loading leaves a segment no one adopts, which the next start
 * recognises by this value and replaces ("SHMMAPL\0" little-endian).
 */
#define SNAP_LOADING_SEG_MAGIC 0x4c50414d4d4853ULL

struct snap_save_report {
	uint64_t entries; /* records written */
	uint64_t maps;    /* maps that had at least one live entry */
	uint64_t bytes;   /* size of the file */
};

/*
 * Write every live, unexpired entry of every map of o's segment to path
 * (absolute), crash-safely (see the invariants above).  Walks the maps with
 * shmmap__tbl_foreach while writers go on: each key present and unchanged
 * for the whole save is saved, a key changed meanwhile is saved with its
 * old or new value or not at all.  Does not modify the segment.
 * Returns 0 or a negative errno (the message says which step failed).
 */
int shmmap__snap_save(const struct op_ctx *o, const char *path, struct snap_save_report *r,
		      char *err, size_t errlen);

/*
 * Remove the temp files PATH.tmp.<pid> that saves of processes now dead
 * left behind (a coordinator killed during a save): each is as big as a
 * snapshot, and nothing else ever removes it.  Only regular files named
 * exactly so, in path's directory, whose pid is not a live process (nor
 * this one's: its saves remove their own) are removed; report(arg, file,
 * size) is called for each.  Returns how many were removed, or a negative
 * errno if the directory cannot be read.
 */
int shmmap__snap_remove_stale(const char *path, void (*report)(void *arg, const char *file,
								long long size),
			      void *arg);

/* What a verified file holds. */
struct snap_info {
	uint32_t version, flags;
	uint64_t created_ns; /* CLOCK_REALTIME ns at the start of the save */
	uint64_t records;
	uint64_t bytes;      /* size of the file */
};

/*
 * Verify the whole file without changing anything.  Returns 0; -ENOENT if
 * it does not exist (and other errors of open/read); -EBADMSG if it is
 * not a valid snapshot ("PATH: not a shmmap snapshot", "PATH: truncated at
 * byte N", "PATH: checksum mismatch", "PATH: corrupt at byte N: why",
 * "PATH: trailing bytes after the trailer, at byte N");
 * -EPROTONOSUPPORT for another format version ("PATH: format version V not
 * supported").
 */
int shmmap__snap_verify(const char *path, struct snap_info *info, char *err, size_t errlen);

/* Where a load puts the records. */
struct snap_sink {
	/* Open (creating if needed) the map called name and give its limits.
	 * A negative errno skips its records (counted in no_map). */
	int (*open)(void *arg, const char *name, uint32_t *key_max, uint32_t *val_max);
	/* Store one record in the map last opened, with its absolute expiry
	 * (CLOCK_REALTIME ms, 0 = never).  -E2BIG and -ENOSPC skip the record
	 * (counted); any other negative errno stops the load. */
	int (*put)(void *arg, const void *key, uint32_t klen, const void *val, uint32_t vlen,
		   uint64_t expire_ms);
	void *arg;
};

struct snap_load_report {
	struct snap_info info;
	uint64_t loaded;  /* records stored */
	uint64_t expired; /* skipped: already expired */
	uint64_t no_map;  /* skipped: their map could not be opened or created */
	uint64_t too_big; /* skipped: key or value over their map's limits */
	uint64_t no_room; /* skipped: the segment had no room (-ENOSPC) */
};

/*
 * Verify path in full (as shmmap__snap_verify, same errors), then hand
 * every record that has not expired to sink, in file order.  A map opened
 * once is not opened again until a record of another map comes in between.
 * Returns 0, or the verification error (nothing was loaded), or the
 * error that stopped the load (some records may be loaded; the message
 * says how many).
 */
int shmmap__snap_load(const char *path, const struct snap_sink *sink,
		      struct snap_load_report *r, char *err, size_t errlen);

#endif /* SHMMAP_SNAPSHOT_H */
