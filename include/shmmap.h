/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * shmmap.h - the public API of libshmmap, a cross-process shared-memory map.
 *
 * A coordinator process (shmmapd) owns a POSIX shared-memory segment that
 * holds named hash maps.  A worker process attaches to the coordinator over
 * a Unix socket once (shmmap_attach), gets ID handles to maps by name
 * (shmmap_open), and from then on reads and writes the maps directly in
 * shared memory: gets, puts, deletes and increments never touch the socket.
 *
 * Errors
 *   Every call that can fail returns 0 (or a documented non-negative value)
 *   on success and a negative errno value on failure, e.g. -ENOENT.  Codes
 *   of our own (SHMMAP_E*) lie at or below SHMMAP_ERRNO_BASE.
 *   shmmap_strerror() explains any of them.  The library never prints,
 *   exits or aborts because of input it was handed.
 *
 * Caveats (the operating rules of a multi-process store)
 *   - An attachment and its map handles stay valid across fork(): the
 *     pre-fork pattern (a master attaches and opens its maps, then forks
 *     workers that use what they inherited) is supported.  In the child,
 *     the first call on an inherited attachment re-attaches it under a
 *     client slot of the child's own (one round trip to the coordinator),
 *     so no process ever writes under another's identity.  If that fails
 *     (-ECONNREFUSED: no coordinator; -ETIMEDOUT: one that does not answer
 *     within 10 s, stopped say), the call returns the error and touches
 *     nothing; the next call tries again.  shmmap_detach() in the child
 *     releases only the child's own resources: the parent stays attached.  Only
 *     fork() as glibc runs it (pthread_atfork handlers) is covered, not a
 *     raw clone() or vfork().
 *   - The socket connection of an attachment is the coordinator's liveness
 *     signal for the process: closing its file descriptor behind the
 *     library's back detaches the process.
 *   - Keys and values are arbitrary bytes (NULs allowed), copied in and out:
 *     no pointer into shared memory is ever handed to the caller.
 *   - Every process with write access to the segment is trusted not to
 *     scribble on it deliberately.  The read path validates every offset it
 *     follows, so a torn or corrupt structure yields an error, never a
 *     wild access, but data written by a malicious peer cannot be trusted.
 *   - A shmmap_map handle is valid only with the attachment that opened it
 *     (-EBADF elsewhere) and only while its map exists (-ESTALE after the
 *     map was dropped, even if a new map of the same name was created).
 *
 * Crashes (what a crash can cost, and what it cannot)
 *   - A process killed at any instruction (SIGKILL, OOM killer, segfault)
 *     leaves every entry either as it was or as its write made it, never a
 *     mix; a write that returned 0 is never lost.  Its locks are taken over
 *     and what it had allocated is freed: by a waiting process within tens
 *     of milliseconds for a lock on the entries, by the coordinator for the
 *     allocator (it learns of the death at once from the closed socket).
 *     Meanwhile puts, deletes and increments that need the allocator part
 *     it held may wait for the repair; after LOCK_DEAD_WAIT_MS (1 s) with
 *     no coordinator to repair it they return -EAGAIN (nothing is stored
 *     or lost; retry).
 *   - While the coordinator is down, gets, puts, deletes and increments go
 *     on (they do not use the socket).  A restarted coordinator adopts the
 *     segment with all its data; the next call that needs the socket
 *     (shmmap_open) reconnects and keeps this attachment's slot.  A
 *     coordinator started with a new segment (after /dev/shm/NAME was
 *     removed, or with --reinit over an object that was not a valid
 *     segment of its configuration; --reinit adopts a valid one, data and
 *     all) leaves this attachment on the old one,
 *     where nothing written is seen by others: see below.
 *   - A process stopped (SIGSTOP, a debugger) while it holds a lock is not
 *     dead: writers of the same lock stripe wait for it, and so do writers
 *     needing a block of the size class it was allocating from (in any
 *     map), if it stopped inside the allocator.
 *   - If the coordinator ever recovers this attachment's slot (it took the
 *     process for dead), calls on the attachment fail with
 *     -SHMMAP_EDETACHED from then on: detach and attach again.  So do they
 *     once the segment was removed (/dev/shm/NAME deleted, or replaced by
 *     a coordinator started with --reinit, as above): a write notices within 256
 *     writes of this attachment (the writes before it went to the removed
 *     segment), a get within 4096 hits of its map (those before read the
 *     removed segment's values), a forked child at its first call.
 *
 * Thread safety
 *   All calls on one attachment may be made from several threads at once,
 *   except shmmap_detach(), which must be the last call on it.  Up to 16
 *   threads of one attachment write at the same instant; more wait their
 *   turn, asleep (each write is short, unless it waits for a stopped
 *   process's lock).
 */
#ifndef SHMMAP_H
#define SHMMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version of this header, in semantic versioning: a new MAJOR may
 * change the API or ABI (and the soname, libshmmap.so.MAJOR, changes with
 * it), a new MINOR only adds, a new PATCH only fixes.  shmmap_version()
 * says which library a program actually runs with.
 */
#define SHMMAP_VERSION_MAJOR 1
#define SHMMAP_VERSION_MINOR 0
#define SHMMAP_VERSION_PATCH 0
#define SHMMAP_VERSION_STRING "1.0.0" /**< "MAJOR.MINOR.PATCH" of the numbers above */

/** One attachment of this process to a coordinator.  Opaque. */
typedef struct shmmap shmmap;

/** ID handle of one named map (never an address). */
typedef struct {
	uint64_t id;
} shmmap_map;

/* Flags of shmmap_open(). */
#define SHMMAP_CREATE 0x1u /**< create the map if it does not exist */

/* Flags of shmmap_put(). */
#define SHMMAP_NX 0x1u /**< only if the key is absent, else -EEXIST */
#define SHMMAP_XX 0x2u /**< only if the key is present, else -ENOENT */
#define SHMMAP_NOTTL 0x4u /**< never expires, even in a map with a default TTL (ttl_s 0) */

/* Limits that hold whatever the configuration says. */
#define SHMMAP_NAME_MAX 63 /**< longest map name, in bytes */

/* Error codes of our own, beyond errno's range.  Always negated. */
#define SHMMAP_ERRNO_BASE 4096
#define SHMMAP_EBADSEG (SHMMAP_ERRNO_BASE + 1)  /**< segment header invalid */
#define SHMMAP_EVERSION (SHMMAP_ERRNO_BASE + 2) /**< protocol/layout version mismatch */
#define SHMMAP_ECORRUPT (SHMMAP_ERRNO_BASE + 3) /**< a structure in the segment is corrupt */
#define SHMMAP_EDETACHED (SHMMAP_ERRNO_BASE + 4) /**< this attachment is no longer valid */
#define SHMMAP_ESEGSIZE (SHMMAP_ERRNO_BASE + 5) /**< the segment grew to a size this process cannot map */

/*
 * The system-wide socket path.  When neither the argument nor
 * $SHMMAP_SOCKET names a socket, shmmap_attach (like shmmapctl and
 * shmmapd) uses this one for root and for a user who may write
 * /run/shmmap; any other user uses $XDG_RUNTIME_DIR/shmmap/shmmap.sock if
 * a socket exists there (the user's own coordinator, which binds there by
 * default), and this one otherwise.
 */
#define SHMMAP_DEFAULT_SOCKET "/run/shmmap/shmmap.sock"

/**
 * Attach this process to a coordinator.
 *
 * @param socket_path  the coordinator's Unix socket; NULL means the value of
 *                     $SHMMAP_SOCKET, then the default (see
 *                     SHMMAP_DEFAULT_SOCKET: per-user for a user other
 *                     than root whose own coordinator runs).
 * @param out          receives the new attachment; untouched on failure.
 * @return 0; -EINVAL if out is NULL or the path is too long;
 *         -ECONNREFUSED if no coordinator listens there (no socket file, or
 *         nothing listening on it); -EACCES/-EPERM if it refuses this peer; -SHMMAP_EVERSION on a protocol mismatch;
 *         -SHMMAP_EBADSEG if the segment it hands over does not validate;
 *         -EAGAIN if it has no free client slot; -ETIMEDOUT if it took
 *         the connection but did not answer within 10 s (stopped, or
 *         overloaded); -ENOMEM; -EMFILE if this process already has 65535
 *         attachments.  shmmap_errdetail() says more (the path, what to do).
 *
 * With $SHMMAP_READONLY set to 1 the attachment asks for read-only access;
 * the coordinator also imposes it on peers of its readonly_uids/gids lists.
 * A read-only attachment maps the segment PROT_READ from an O_RDONLY
 * descriptor: gets work and write nothing; puts, deletes, increments and
 * creating maps fail with -EPERM.
 *
 * The segment is mapped at the coordinator's agreed base address when that
 * range is free in this process, anywhere else otherwise (the segment holds
 * only offsets, so both work).  The caller owns the attachment and releases
 * it with shmmap_detach().
 */
int shmmap_attach(const char *socket_path, shmmap **out);

/**
 * The particulars of the last error this thread got from a call that talks
 * to the coordinator (shmmap_attach, shmmap_open, shmmap_flush,
 * shmmap_drop, and the first call in a forked child, which re-attaches):
 * the socket path, the coordinator's own reason (e.g. why a snapshot was
 * not saved), what to do.  "" when that call succeeded or has nothing to
 * add.  Data calls (get, put, ...) set it only for what they can explain
 * (-SHMMAP_EDETACHED: why; an incr's -EINVAL: the value is not a number)
 * and otherwise leave it as it is.  The string belongs
 * to the library and stays valid until this thread's next such call.
 * Never NULL; thread-safe (one per thread).
 */
const char *shmmap_errdetail(void);

/**
 * A function a thread of this process calls when it is about to sleep on
 * a lock another process holds (after a short spin; never on the fast
 * path): a writer waiting for the writer of its lock stripe, say, which
 * may be stopped (SIGSTOP, a debugger) and hold it for as long.  Also
 * before a call waits for the coordinator's answer (a stopped one: up to
 * 10 s): a data call's asking for the segment to grow, a forked child's
 * first call re-attaching, and every call that talks to it.  For a
 * language binding that runs its calls under an interpreter lock (a
 * GIL): the hook may release it, so that the process's other threads run
 * meanwhile, and take it back only after the library call returns (not
 * in the hook: the caller may hold a lock of the segment by then).  The
 * hook must not call into this library, and may be called more than once
 * in one call.  Process-wide: the last one set is used, by every thread
 * and attachment; NULL removes it.  Thread-safe.
 */
typedef void (*shmmap_wait_hook)(void);
void shmmap_set_wait_hook(shmmap_wait_hook hook);

/**
 * Detach: unmap the segment and close the connection.  Map handles of this
 * attachment become invalid.  NULL is accepted and ignored.  Must not race
 * with other calls on the same attachment.  First the blocks the
 * attachment kept for its next writes go back to the allocator (an
 * allocator lock held by another process is waited for briefly: 100 ms
 * for a live holder, up to 1 s for a dead one; what is not given back
 * then, the coordinator frees), so a clean detach never counts as a dead
 * client's recovery (shmmapctl stats: recoveries).
 */
void shmmap_detach(shmmap *sm);

/**
 * Get a handle to the map called name (1..SHMMAP_NAME_MAX bytes, no NUL).
 *
 * @param flags  SHMMAP_CREATE to create the map if it does not exist.
 * @param out    receives the handle; untouched on failure.
 * @return 0; -ENOENT if it does not exist and SHMMAP_CREATE was not given;
 *         -EINVAL for a bad name, flags or NULL argument; -ENOSPC if the
 *         segment has no room for another map; -EPERM for a read-only
 *         client asking to create; -EBUSY or -EAGAIN if creating the map
 *         needs an allocator lock that a live (perhaps stopped) or a dead
 *         process holds (try again; shmmap_errdetail() says which);
 *         -ECONNRESET or -ECONNREFUSED if the coordinator is gone and no new
 *         one answers; -ETIMEDOUT if it does not answer within 10 s
 *         (stopped, say); -SHMMAP_EDETACHED if a new one does not know this
 *         attachment (it made a new segment).
 * This is the one data call that talks to the coordinator (after a
 * coordinator restart it reconnects first, see Crashes); thread-safe.
 */
int shmmap_open(shmmap *sm, const char *name, unsigned flags, shmmap_map *out);

/* Policies of struct shmmap_map_opts (0: the coordinator's default). */
#define SHMMAP_POLICY_EVICT 1u  /**< a full segment may evict the map's unused entries */
#define SHMMAP_POLICY_REJECT 2u /**< the map's entries are never evicted (-ENOSPC instead) */

/**
 * Options of a map that shmmap_open_opts() creates.  Zero in any field
 * means the coordinator's default for this map: its config's [map NAME]
 * section, else its [map] section.  Fields are only ever added at the end,
 * so the struct can grow: set size to sizeof(struct shmmap_map_opts) of the
 * header you compile with (a library that knows more fields treats the
 * missing ones as zero; bytes it does not know must be zero), and zero
 * every field you do not set (`struct shmmap_map_opts o = {.size =
 * sizeof o, ...}`).
 */
struct shmmap_map_opts {
	uint32_t size;        /**< sizeof(struct shmmap_map_opts) */
	uint32_t policy;      /**< SHMMAP_POLICY_EVICT or SHMMAP_POLICY_REJECT */
	uint64_t capacity;    /**< entries expected: the map starts with buckets for them
				   (it grows beyond them anyway) */
	uint64_t quota;       /**< bytes the map's entries may use (entry headers: 24 B, 32 B
				   with an expiry; keys and values); at the quota, policy evict evicts the map's own
				   entries and policy reject fails with -ENOSPC */
	uint32_t key_max;     /**< longest key, 1..65535 */
	uint32_t value_max;   /**< largest value, up to 1 GiB */
	uint32_t default_ttl; /**< seconds: puts, cas and new incr keys with ttl 0 expire
				   after this long */
	uint32_t reserved[7]; /**< zero */
};

/**
 * shmmap_open() with options for the map if this call creates it.  Opening
 * a map that exists ignores opts (the map keeps the options it was created
 * with; shmmapctl maps shows them).  opts NULL: as shmmap_open().
 *
 * @return as shmmap_open(), and -EINVAL for a bad size, a non-zero reserved
 *         field or an option out of range.
 */
int shmmap_open_opts(shmmap *sm, const char *name, unsigned flags,
		     const struct shmmap_map_opts *opts, shmmap_map *out);

/**
 * Store val under key, replacing any present value, atomically for readers:
 * a concurrent get sees the old value or the new one, never a mix.
 *
 * @param key,klen  the key, 1..key limit bytes (the map's configured limit).
 * @param val,vlen  the value, 0..value limit bytes; val may be NULL if vlen is 0.
 * @param ttl_s     seconds until the entry expires; 0 means never, or the
 *                  map's default TTL if it has one (shmmap_map_opts).
 * @param flags     0, SHMMAP_NX or SHMMAP_XX, and SHMMAP_NOTTL (with ttl_s
 *                  0: never expires, whatever the map's default TTL; what
 *                  shmmapctl load uses for an entry dumped without expiry).
 * @return 0; -EEXIST (NX, key present); -ENOENT (XX, key absent);
 *         -E2BIG (key or value over the map's limits, or an entry larger
 *         than the segment could hold even empty, or than a lock stripe's
 *         share of the map's quota: it fails before anything is evicted
 *         for it); -ENOSPC (the segment is full: with the map's
 *         policy "reject" and no entry of a map with policy "evict" left to
 *         evict, or when nothing more can be evicted; a full segment
 *         evicts entries not used lately, of any map whose policy is
 *         "evict" (the default), until the value fits;
 *         also when the map's quota would be exceeded, with "reject", or
 *         with "evict" when evicting the map's entries does not make room);
 *         -EINVAL (bad arguments); -EBADF/-ESTALE (bad handle);
 *         -EPERM (read-only attachment); -EAGAIN (the allocator awaits the
 *         coordinator's repair after a crash: nothing was stored, retry);
 *         -SHMMAP_EDETACHED (this attachment is no longer valid).
 * Thread-safe; the value is copied into shared memory.
 */
int shmmap_put(shmmap *sm, shmmap_map m, const void *key, size_t klen,
	       const void *val, size_t vlen, uint32_t ttl_s, unsigned flags);

/**
 * Copy the value stored under key into buf.  Takes no lock.
 *
 * @param buf,cap  the caller's buffer; buf may be NULL if cap is 0.
 * @param vlen     receives the value's length (also on -ENOBUFS); may be
 *                 NULL if the length is not wanted.
 * @return 0; -ENOENT (absent or expired); -ENOBUFS (the value is longer
 *         than cap: *vlen says how long, buf holds nothing useful);
 *         -E2BIG (klen is over the map's key_max: no such key can exist);
 *         -EINVAL, -EBADF, -ESTALE; -SHMMAP_ECORRUPT if the structure
 *         stays inconsistent after retries (see shmmapctl check);
 *         -EAGAIN on a read-only attachment if a writer kept the key's
 *         stripe busy through every retry.
 * Thread-safe.
 */
int shmmap_get(shmmap *sm, shmmap_map m, const void *key, size_t klen,
	       void *buf, size_t cap, size_t *vlen);

/**
 * Delete key.
 * @return 0; -ENOENT if it was absent (or expired); -EINVAL, -EBADF,
 *         -ESTALE, -EPERM; -EAGAIN if its stripe or an allocator lock
 *         awaits repair (see Crashes).  Thread-safe.
 */
int shmmap_del(shmmap *sm, shmmap_map m, const void *key, size_t klen);

/**
 * Add delta to the decimal integer stored under key, atomically across all
 * processes, and store the result as decimal ASCII (so tools can show it).
 * An absent (or expired) key counts as 0; the result then never expires
 * (or expires after the map's default TTL, if it has one), otherwise the
 * entry keeps its expiry.
 *
 * @param out  receives the new value; may be NULL.
 * @return 0; -EINVAL if the present value is not a decimal integer
 *         (optional '-' then 1..19 digits); -ERANGE if the sum overflows
 *         int64_t (nothing is stored); -ENOSPC, -E2BIG, -EBADF, -ESTALE,
 *         -EPERM, -EAGAIN as for shmmap_put.  Thread-safe.
 */
int shmmap_incr(shmmap *sm, shmmap_map m, const void *key, size_t klen,
		int64_t delta, int64_t *out);

/**
 * shmmap_incr, with the TTL a key this call creates gets: a counter per
 * client and time window (a rate limiter) that starts at its first
 * increment and expires ttl_s seconds later, in one atomic step (a put
 * with a TTL, then incr, would race: a counter expiring between the two
 * is created by the incr without a TTL and never expires).
 *
 * @param ttl_s  the TTL, in seconds, of a key that is absent or expired;
 *               0: as shmmap_incr (the map's default TTL, or none).  A
 *               present key keeps its expiry, whatever ttl_s says.
 * @return as shmmap_incr.  Thread-safe.
 */
int shmmap_incr_ttl(shmmap *sm, shmmap_map m, const void *key, size_t klen,
		    int64_t delta, uint32_t ttl_s, int64_t *out);

/**
 * Compare and swap: store val under key only if the present value is
 * exactly expected (elen bytes), atomically across all processes.
 * expected may be NULL when elen is 0: the empty value, not an absent key
 * (to store only if the key is absent, shmmap_put with SHMMAP_NX, which
 * the map's counters count as a put).
 *
 * @param ttl_s  as for shmmap_put (0: never, or the map's default TTL).
 * @return 0 (swapped); -ECANCELED (present, but the value differs: nothing
 *         stored); -ENOENT (absent or expired); otherwise as shmmap_put.
 * Thread-safe.
 */
int shmmap_cas(shmmap *sm, shmmap_map m, const void *key, size_t klen,
	       const void *expected, size_t elen, const void *val, size_t vlen,
	       uint32_t ttl_s);

/**
 * Remove every entry of the map (done by the coordinator; the map and its
 * handles stay valid).  Entries written during the flush may survive it.
 * @return 0; -EBADF/-ESTALE (bad handle); -EPERM (read-only attachment);
 *         -EBUSY (a live process, stopped perhaps, held a stripe lock: the
 *         other stripes were emptied, that one was not; shmmap_errdetail()
 *         names the holder; flush again once it lets go);
 *         errors of the socket as for shmmap_open.  Thread-safe.
 */
int shmmap_flush(shmmap *sm, shmmap_map m);

/**
 * Drop the map called name: its entries are freed and every handle to it,
 * in every process, gives -ESTALE from then on (also after a new map of
 * the same name is created).
 * @return 0; -ENOENT (no such map); -EINVAL (bad name); -EPERM (read-only
 *         attachment); errors of the socket as for shmmap_open.  Thread-safe.
 */
int shmmap_drop(shmmap *sm, const char *name);

/**
 * Called by shmmap_foreach() for each entry, outside any lock, with copies
 * (valid during the call only).  expire_ms: when it expires, in
 * CLOCK_REALTIME milliseconds since the epoch, 0 for never.  Return 0 to go
 * on, anything else to stop the walk (shmmap_foreach then returns it).
 */
typedef int (*shmmap_each_fn)(const void *key, size_t klen, const void *val, size_t vlen,
			      uint64_t expire_ms, void *arg);

/**
 * Walk the map's live (unexpired) entries, one bucket at a time: each
 * bucket's entries are copied out consistently, then fn is called for
 * each.  Safe under concurrent writes, which are never blocked for longer
 * than one bucket's copy: a key written, added or deleted during the walk
 * may be seen with its old or new value, or missed, but no key is seen
 * twice and the walk never crashes or loops.  Keys present and unchanged for
 * the whole walk are all seen.
 *
 * @return 0 after the last entry: every bucket was walked; fn's non-zero
 *         return if it stopped the walk; -EINVAL (NULL fn); -EBADF;
 *         -ESTALE (the handle was stale at the call, or the map was dropped
 *         during the walk: the walk stops, and the entries fn was given
 *         are only part of the map); -ENOMEM; -EAGAIN on a read-only
 *         attachment if writers kept a bucket busy through every retry.
 *         A flush during the walk is not an error: it deletes entries, and
 *         the walk may miss them as any key deleted meanwhile.
 *         Thread-safe.
 */
int shmmap_foreach(shmmap *sm, shmmap_map m, shmmap_each_fn fn, void *arg);

/** Counters of one map, summed over every process (see shmmap_stats). */
struct shmmap_stats {
	uint64_t entries;     /**< entries linked (expired ones until reclaimed) */
	uint64_t bytes;       /**< their key + value bytes */
	uint64_t hits, misses;/**< gets that found a value / did not */
	uint64_t puts, dels, incrs, cas;  /**< successful writes of each kind (puts: shmmap_put,
					       NX and XX too; cas: shmmap_cas) */
	uint64_t evictions;   /**< entries evicted to make room (policy evict) */
	uint64_t expirations; /**< expired entries removed (by reclaim or a write) */
	uint64_t lock_waits;  /**< times a writer had to wait for a stripe lock */
};

/**
 * Read the map's counters.  Each is exact for operations that have
 * returned, except that threads of one attachment counting at the same
 * instant may lose a count (a process's counters are written without
 * locked instructions, to keep gets cheap); the sum is taken without
 * stopping writers, so counters moving during the call may be seen at
 * slightly different instants.
 * @return 0; -EINVAL (NULL out); -EBADF/-ESTALE (also if the map was
 *         dropped during the call: *out is then untouched).  Thread-safe.
 */
int shmmap_stats(shmmap *sm, shmmap_map m, struct shmmap_stats *out);

/**
 * A static, human-readable description of err (negative or positive
 * errno value, or SHMMAP_E* code).  Never NULL; thread-safe.
 */
const char *shmmap_strerror(int err);

/**
 * The version of the library this program runs with, which may be newer
 * than the SHMMAP_VERSION_* of the header it was compiled with (a program
 * built against 1.0 runs with any 1.x libshmmap.so.1).
 *
 * @param major,minor,patch  receive the three numbers; each may be NULL.
 * @return the version as "MAJOR.MINOR.PATCH", a static string; never NULL.
 * Needs no attachment; thread-safe.
 */
const char *shmmap_version(int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif /* SHMMAP_H */
