/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * proto.h - the attach protocol between clients and the coordinator.
 *
 * SOCK_SEQPACKET over a Unix socket: one datagram-like record per message,
 * at most PROTO_MAX_MSG bytes.  Every message is a 16-byte header
 *     magic u32 | version u16 | type u16 | body length u32 | seq u32
 * (little-endian) and a body whose length is exact for its type.  WELCOME
 * carries the segment's file descriptor (SCM_RIGHTS).  Requests are
 * answered in order; seq echoes the request's.
 *
 *   HELLO   c->s  pid u32, flags u32                  -> WELCOME | ERROR
 *   WELCOME s->c  slot u32, flags u32, slot_gen u64, size u64, base u64,
 *                 shm name (u16 length + bytes)       + fd
 *   OPEN    c->s  flags u32, name (u16 length + bytes) -> OPENED | ERROR
 *   OPEN_OPTS c->s flags u32, policy u32, capacity u64, quota u64,
 *                 key_max u32, value_max u32, default_ttl u32, pad u32,
 *                 name                                -> OPENED | ERROR
 *                 (OPEN with the options of a map it creates; 0 = default)
 *   OPENED  s->c  index u32, gen u32
 *   DROP    c->s  flags u32, name                     -> OK | ERROR
 *   STATS   c->s  (empty)                             -> STATS_REPLY
 *   STATS_REPLY   pid u32, clients u32, maps u32, pad u32, uptime_ms u64,
 *                 coord_gen u64
 *   BYE     c->s  (empty)                             -> (connection closed)
 *   REPAIR  c->s  (empty)                             -> REPAIRED | ERROR
 *   REPAIRED s->c slots u32, stripes u32, roots u64, freed u64,
 *                 pages_freed u64, bad_roots u64, busy u32, pending u32
 *                 (busy: stripes a live process held on to, skipped;
 *                 pending: dead slots whose recovery waits), then
 *                 optionally deferred u32, always 1: the allocator sweep did
 *                 not run (an allocator lock was busy; the coordinator
 *                 retries it), so roots..bad_roots are not results (a
 *                 body of 48 bytes: the sweep ran)
 *   FLUSH   c->s  flags u32, name                     -> OK | ERROR
 *   SAVE    c->s  flags u32, path (u16 length + bytes; empty: the configured
 *                 snapshot path)                      -> OK | ERROR
 *   RESUME  c->s  pid u32, slot u32, slot_gen u64     -> WELCOME | ERROR
 *                 (a client reconnecting to a restarted coordinator,
 *                 keeping the slot it has)
 *   GROW    c->s  seen u32, need u32, target u64      -> OK | ERROR
 *                 (grow the segment: by a step of at least `need`
 *                 contiguous pages unless it has grown past `seen` live
 *                 pages already; or, with target, to at least target
 *                 bytes.  ERROR -ENOSPC: at max_size, or no room in
 *                 /dev/shm; -EINVAL: target beyond max_size)
 *   OK      s->c  (empty)
 *   ERROR   s->c  err i32 (a negative errno / SHMMAP_E* code), then
 *                 optionally why (u16 length + bytes): the coordinator's
 *                 reason, for people (a body of 4 bytes has none)
 */
#ifndef SHMMAP_PROTO_H
#define SHMMAP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAGIC 0x504d4853u /* "SHMP" little-endian */
#define PROTO_VERSION 2u /* 2: ERROR reasons, REPAIRED busy/pending, OPEN_OPTS, GROW */
#define PROTO_HDR 16u
#define PROTO_MAX_MSG 512u
#define PROTO_NAME_MAX 255u

enum proto_type {
	MSG_HELLO = 1,
	MSG_WELCOME,
	MSG_OPEN,
	MSG_OPENED,
	MSG_DROP,
	MSG_STATS,
	MSG_STATS_REPLY,
	MSG_BYE,
	MSG_OK,
	MSG_ERROR,
	MSG_REPAIR,
	MSG_REPAIRED,
	MSG_RESUME,
	MSG_FLUSH,
	MSG_SAVE,
	MSG_OPEN_OPTS,
	MSG_GROW,
	MSG_TYPE_MAX = MSG_GROW
};

#define HELLO_F_RDONLY 0x1u /* ask for read-only access */
#define HELLO_F_ADMIN 0x2u  /* an admin tool: may take the slot kept for admins */

struct proto_msg {
	uint16_t type;
	uint32_t seq;
	union {
		struct { uint32_t pid, flags; } hello;
		struct {
			uint32_t slot, flags;
			uint64_t slot_gen, size, base;
			char shm_name[PROTO_NAME_MAX + 1];
		} welcome;
		struct { uint32_t flags; char name[PROTO_NAME_MAX + 1]; } open; /* OPEN, DROP, FLUSH */
		struct { uint32_t flags; char path[PROTO_NAME_MAX + 1]; } save;
		struct {
			uint32_t flags, policy;
			uint64_t capacity, quota;
			uint32_t key_max, value_max, default_ttl;
			char name[PROTO_NAME_MAX + 1];
		} openo; /* OPEN_OPTS */
		struct { uint32_t index, gen; } opened;
		struct {
			uint32_t pid, clients, maps;
			uint64_t uptime_ms, coord_gen;
		} stats;
		struct { int32_t err; char why[PROTO_NAME_MAX + 1]; } error;
		struct {
			uint32_t slots, stripes;
			uint64_t roots, freed, pages_freed, bad_roots;
			uint32_t busy, pending;
			uint32_t deferred; /* 1: no sweep ran (sent only then), else 0 */
		} repaired;
		struct { uint32_t pid, slot; uint64_t slot_gen; } resume;
		struct { uint32_t seen, need; uint64_t target; } grow;
	} u;
};

/* Encode m into buf; returns the length (<= cap) or -EINVAL (bad type or
 * field, e.g. a name too long) / -ENOBUFS (cap too small). */
int shmmap__proto_encode(const struct proto_msg *m, void *buf, size_t cap);

/* Decode exactly len bytes of buf into m.  A pure function: returns 0, or
 * -EBADMSG (truncated, trailing bytes, bad lengths, a name with a NUL or
 * an over-long one), -EPROTO (bad magic or unknown type) or
 * -SHMMAP_EVERSION (another protocol version). */
int shmmap__proto_decode(const void *buf, size_t len, struct proto_msg *m);


/* Socket I/O of whole messages (blocking or not, as the socket is).
 * send: fd_pass >= 0 is passed with SCM_RIGHTS.  Returns 0 or -errno.
 * recv: returns 0, -EAGAIN, -ECONNRESET at EOF, or a decode error;
 * *fd_out (if not NULL) receives a passed descriptor or -1; any
 * descriptor the caller did not ask for is closed. */
int shmmap__proto_send(int sock, const struct proto_msg *m, int fd_pass);
int shmmap__proto_recv(int sock, struct proto_msg *m, int *fd_out);
#endif /* SHMMAP_PROTO_H */
