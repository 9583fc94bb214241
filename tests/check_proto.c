/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_proto.c - unit tests of the attach protocol codec and socket I/O
 * (shmmap/proto.c): round trips of every message type, the wire format,
 * every rejection the decoder documents, the encoder's bounds, a decoder
 * fuzz loop (meaningful under ASan: each input lives in a heap block of
 * exactly its length), and send/recv over a SOCK_SEQPACKET socketpair with
 * descriptor passing and oversized datagrams.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"
#include "proto.h"


/* ---- helpers ---- */

static void fill_name(char *dst, size_t n, char c0)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = (char)(c0 + (char)(i % 26));
	dst[n] = '\0';
}

/* One sample message of each type (and a few variants). */
static size_t samples(struct proto_msg *out, size_t cap)
{
	size_t n = 0;
#define ADD(init)                                                                   \
	do {                                                                            \
		CK(n < cap);                                                         \
		memset(&out[n], 0, sizeof out[n]);                                          \
		struct proto_msg *m = &out[n++];                                            \
		init;                                                                       \
	} while (0)
	ADD({ m->type = MSG_HELLO; m->seq = 1; m->u.hello.pid = 12345; m->u.hello.flags = HELLO_F_RDONLY; });
	ADD({ m->type = MSG_HELLO; m->seq = UINT32_MAX; m->u.hello.pid = UINT32_MAX; m->u.hello.flags = 0; });
	ADD({
		m->type = MSG_WELCOME; m->seq = 2; m->u.welcome.slot = 7; m->u.welcome.flags = 1;
		m->u.welcome.slot_gen = 0x0102030405060708ull; m->u.welcome.size = 16ull << 20;
		m->u.welcome.base = 0x200000000000ull; strcpy(m->u.welcome.shm_name, "/shmmap-x");
	});
	ADD({
		m->type = MSG_WELCOME; m->seq = 3; m->u.welcome.slot_gen = UINT64_MAX;
		m->u.welcome.size = UINT64_MAX; m->u.welcome.base = 1;
		fill_name(m->u.welcome.shm_name, PROTO_NAME_MAX, 'a'); /* longest name */
	});
	ADD({ m->type = MSG_WELCOME; m->seq = 4; m->u.welcome.shm_name[0] = '\0'; });
	ADD({ m->type = MSG_OPEN; m->seq = 5; m->u.open.flags = SHMMAP_CREATE; strcpy(m->u.open.name, "t"); });
	ADD({ m->type = MSG_OPEN; m->seq = 6; fill_name(m->u.open.name, SHMMAP_NAME_MAX, 'A'); });
	ADD({ m->type = MSG_OPENED; m->seq = 7; m->u.opened.index = 4095; m->u.opened.gen = 0xdeadbeef; });
	ADD({
		m->type = MSG_OPEN_OPTS; m->seq = 70; m->u.openo.flags = SHMMAP_CREATE;
		m->u.openo.policy = 2; m->u.openo.capacity = 1ull << 40; m->u.openo.quota = UINT64_MAX;
		m->u.openo.key_max = 65535; m->u.openo.value_max = 1u << 30;
		m->u.openo.default_ttl = 86400; fill_name(m->u.openo.name, SHMMAP_NAME_MAX, 'o');
	});
	ADD({ m->type = MSG_OPEN_OPTS; m->seq = 71; strcpy(m->u.openo.name, "x"); });
	ADD({ m->type = MSG_DROP; m->seq = 8; m->u.open.flags = 0; strcpy(m->u.open.name, "some map"); });
	ADD({ m->type = MSG_STATS; m->seq = 9; });
	ADD({
		m->type = MSG_STATS_REPLY; m->seq = 10; m->u.stats.pid = 99; m->u.stats.clients = 3;
		m->u.stats.maps = 2; m->u.stats.uptime_ms = 123456789012ull;
		m->u.stats.coord_gen = 0xfedcba9876543210ull;
	});
	ADD({ m->type = MSG_BYE; m->seq = 11; });
	ADD({ m->type = MSG_OK; m->seq = 12; });
	ADD({ m->type = MSG_ERROR; m->seq = 13; m->u.error.err = -ENOENT; });
	ADD({ m->type = MSG_ERROR; m->seq = 14; m->u.error.err = -SHMMAP_EVERSION; });
	ADD({ m->type = MSG_ERROR; m->seq = 15; m->u.error.err = INT32_MIN; });
	ADD({ m->type = MSG_ERROR; m->seq = 16; m->u.error.err = -ENOSPC;
	      strcpy(m->u.error.why, "snapshot not saved: /x: No space left on device"); });
	ADD({ m->type = MSG_REPAIR; m->seq = 16; });
	ADD({
		m->type = MSG_REPAIRED; m->seq = 17; m->u.repaired.slots = 2; m->u.repaired.stripes = 7;
		m->u.repaired.roots = 1ull << 40; m->u.repaired.freed = 3;
		m->u.repaired.pages_freed = 1; m->u.repaired.bad_roots = UINT64_MAX;
	});
	ADD({ m->type = MSG_REPAIRED; m->seq = 17; m->u.repaired.busy = 1; m->u.repaired.deferred = 1; });
	ADD({ m->type = MSG_RESUME; m->seq = 18; m->u.resume.pid = 42; m->u.resume.slot = 4095; m->u.resume.slot_gen = 1ull << 33; });
	ADD({ m->type = MSG_GROW; m->seq = 19; m->u.grow.seen = 256; m->u.grow.need = 3; m->u.grow.target = 1ull << 30; });
	ADD({ m->type = MSG_FLUSH; m->seq = 19; strcpy(m->u.open.name, "flushed"); });
	ADD({ m->type = MSG_SAVE; m->seq = 20; strcpy(m->u.save.path, "/tmp/x.snap"); });
	ADD({ m->type = MSG_SAVE; m->seq = 21; m->u.save.flags = 1; });
#undef ADD
	return n;
}

/* The fields of its type are equal. */
static void expect_msg_eq(const struct proto_msg *a, const struct proto_msg *b)
{
	CK_EQ(a->type, b->type);
	CK_EQ(a->seq, b->seq);
	switch (a->type) {
	case MSG_HELLO:
		CK_EQ(a->u.hello.pid, b->u.hello.pid);
		CK_EQ(a->u.hello.flags, b->u.hello.flags);
		break;
	case MSG_WELCOME:
		CK_EQ(a->u.welcome.slot, b->u.welcome.slot);
		CK_EQ(a->u.welcome.flags, b->u.welcome.flags);
		CK_EQ(a->u.welcome.slot_gen, b->u.welcome.slot_gen);
		CK_EQ(a->u.welcome.size, b->u.welcome.size);
		CK_EQ(a->u.welcome.base, b->u.welcome.base);
		ck_assert_str_eq(a->u.welcome.shm_name, b->u.welcome.shm_name);
		break;
	case MSG_SAVE:
		CK_EQ(a->u.save.flags, b->u.save.flags);
		ck_assert_str_eq(a->u.save.path, b->u.save.path);
		break;
	case MSG_OPEN:
	case MSG_DROP:
	case MSG_FLUSH:
		CK_EQ(a->u.open.flags, b->u.open.flags);
		ck_assert_str_eq(a->u.open.name, b->u.open.name);
		break;
	case MSG_OPEN_OPTS:
		CK_EQ(a->u.openo.flags, b->u.openo.flags);
		CK_EQ(a->u.openo.policy, b->u.openo.policy);
		CK_EQ(a->u.openo.capacity, b->u.openo.capacity);
		CK_EQ(a->u.openo.quota, b->u.openo.quota);
		CK_EQ(a->u.openo.key_max, b->u.openo.key_max);
		CK_EQ(a->u.openo.value_max, b->u.openo.value_max);
		CK_EQ(a->u.openo.default_ttl, b->u.openo.default_ttl);
		ck_assert_str_eq(a->u.openo.name, b->u.openo.name);
		break;
	case MSG_OPENED:
		CK_EQ(a->u.opened.index, b->u.opened.index);
		CK_EQ(a->u.opened.gen, b->u.opened.gen);
		break;
	case MSG_STATS_REPLY:
		CK_EQ(a->u.stats.pid, b->u.stats.pid);
		CK_EQ(a->u.stats.clients, b->u.stats.clients);
		CK_EQ(a->u.stats.maps, b->u.stats.maps);
		CK_EQ(a->u.stats.uptime_ms, b->u.stats.uptime_ms);
		CK_EQ(a->u.stats.coord_gen, b->u.stats.coord_gen);
		break;
	case MSG_ERROR:
		CK_EQ(a->u.error.err, b->u.error.err);
		ck_assert_str_eq(a->u.error.why, b->u.error.why);
		break;
	case MSG_REPAIRED:
		CK_EQ(a->u.repaired.slots, b->u.repaired.slots);
		CK_EQ(a->u.repaired.stripes, b->u.repaired.stripes);
		CK_EQ(a->u.repaired.roots, b->u.repaired.roots);
		CK_EQ(a->u.repaired.freed, b->u.repaired.freed);
		CK_EQ(a->u.repaired.pages_freed, b->u.repaired.pages_freed);
		CK_EQ(a->u.repaired.bad_roots, b->u.repaired.bad_roots);
		CK_EQ(a->u.repaired.busy, b->u.repaired.busy);
		CK_EQ(a->u.repaired.pending, b->u.repaired.pending);
		CK_EQ(a->u.repaired.deferred, b->u.repaired.deferred);
		break;
	case MSG_GROW:
		CK_EQ(a->u.grow.seen, b->u.grow.seen);
		CK_EQ(a->u.grow.need, b->u.grow.need);
		CK_EQ(a->u.grow.target, b->u.grow.target);
		break;
	case MSG_RESUME:
		CK_EQ(a->u.resume.pid, b->u.resume.pid);
		CK_EQ(a->u.resume.slot, b->u.resume.slot);
		CK_EQ(a->u.resume.slot_gen, b->u.resume.slot_gen);
		break;
	default:
		break;
	}
}

/* Body length the protocol requires for a message. */
static size_t body_len(const struct proto_msg *m)
{
	switch (m->type) {
	case MSG_HELLO: return 8;
	case MSG_WELCOME: return 32 + 2 + strlen(m->u.welcome.shm_name);
	case MSG_OPEN:
	case MSG_DROP:
	case MSG_FLUSH: return 4 + 2 + strlen(m->u.open.name);
	case MSG_SAVE: return 4 + 2 + strlen(m->u.save.path);
	case MSG_OPEN_OPTS: return 40 + 2 + strlen(m->u.openo.name);
	case MSG_OPENED: return 8;
	case MSG_STATS_REPLY: return 32;
	case MSG_ERROR: return 4 + (m->u.error.why[0] ? 2 + strlen(m->u.error.why) : 0);
	case MSG_REPAIRED: return 48 + (m->u.repaired.deferred ? 4 : 0);
	case MSG_RESUME: return 16;
	case MSG_GROW: return 16;
	default: return 0;
	}
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

/* A raw header. */
static void raw_hdr(unsigned char *p, uint32_t magic, uint16_t ver, uint16_t type, uint32_t body,
		    uint32_t seq)
{
	put_le32(p, magic);
	put_le16(p + 4, ver);
	put_le16(p + 6, type);
	put_le32(p + 8, body);
	put_le32(p + 12, seq);
}

/* Decode len bytes from a heap block of exactly len bytes (ASan sees any
 * read past the end). */
static int decode_exact(const void *src, size_t len, struct proto_msg *m)
{
	unsigned char *p = malloc(len ? len : 1);
	CK(p != NULL);
	if (len)
		memcpy(p, src, len);
	int rc = shmmap__proto_decode(p, len, m);
	free(p);
	return rc;
}

static bool documented_decode_rc(int rc)
{
	return rc == 0 || rc == -EBADMSG || rc == -EPROTO || rc == -SHMMAP_EVERSION;
}

/* ---- codec ---- */

START_TEST(roundtrip_every_type)
{
	struct proto_msg ms[32], d;
	size_t n = samples(ms, 32);
	bool seen[MSG_TYPE_MAX + 1] = {0};
	for (size_t i = 0; i < n; i++) {
		unsigned char buf[PROTO_MAX_MSG];
		int len = shmmap__proto_encode(&ms[i], buf, sizeof buf);
		CK_MSG(len > 0, "encode of sample %zu (type %u): %d", i, ms[i].type, len);
		CK_EQ((size_t)len, PROTO_HDR + body_len(&ms[i]));
		memset(&d, 0x5a, sizeof d);
		int rc = decode_exact(buf, (size_t)len, &d);
		CK_MSG(rc == 0, "decode of sample %zu (type %u): %d", i, ms[i].type, rc);
		expect_msg_eq(&ms[i], &d);
		/* and back to the same bytes */
		unsigned char buf2[PROTO_MAX_MSG];
		CK_EQ(shmmap__proto_encode(&d, buf2, sizeof buf2), len);
		CK_EQ(memcmp(buf, buf2, (size_t)len), 0);
		seen[ms[i].type] = true;
	}
	for (int t = 1; t <= MSG_TYPE_MAX; t++)
		CK_MSG(seen[t], "type %d not covered", t);
}
END_TEST

START_TEST(wire_format)
{
	struct proto_msg m = {.type = MSG_HELLO, .seq = 7};
	m.u.hello.pid = 0x11223344;
	m.u.hello.flags = 1;
	unsigned char buf[64];
	static const unsigned char want[] = {
		'S', 'H', 'M', 'P', 2, 0, MSG_HELLO, 0, 8, 0, 0, 0, 7, 0, 0, 0,
		0x44, 0x33, 0x22, 0x11, 1, 0, 0, 0,
	};
	CK_EQ(shmmap__proto_encode(&m, buf, sizeof buf), (int)sizeof want);
	CK_EQ(memcmp(buf, want, sizeof want), 0);

	struct proto_msg o = {.type = MSG_OPEN, .seq = 0x01020304};
	o.u.open.flags = 0xa0b0c0d0;
	strcpy(o.u.open.name, "ab");
	static const unsigned char want_open[] = {
		'S', 'H', 'M', 'P', 2, 0, MSG_OPEN, 0, 8, 0, 0, 0, 4, 3, 2, 1,
		0xd0, 0xc0, 0xb0, 0xa0, 2, 0, 'a', 'b',
	};
	CK_EQ(shmmap__proto_encode(&o, buf, sizeof buf), (int)sizeof want_open);
	CK_EQ(memcmp(buf, want_open, sizeof want_open), 0);
}
END_TEST

START_TEST(decode_rejects_header)
{
	struct proto_msg m;
	unsigned char buf[PROTO_MAX_MSG + 64];
	memset(buf, 0, sizeof buf);
	/* a valid HELLO to damage */
	raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, MSG_HELLO, 8, 1);
	put_le32(buf + 20, 0);
	put_le32(buf + 16, 1234);
	CK_EQ(decode_exact(buf, 24, &m), 0);
	/* too short to hold a header */
	for (size_t len = 0; len < PROTO_HDR; len++)
		CK_EQ(decode_exact(buf, len, &m), -EBADMSG);
	CK_EQ(shmmap__proto_decode(NULL, 24, &m), -EBADMSG);
	/* longer than any message, even with a consistent body length */
	raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, MSG_HELLO, PROTO_MAX_MSG + 1 - PROTO_HDR, 1);
	CK_EQ(decode_exact(buf, PROTO_MAX_MSG + 1, &m), -EBADMSG);
	raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, MSG_HELLO, PROTO_MAX_MSG + 40 - PROTO_HDR, 1);
	CK_EQ(decode_exact(buf, PROTO_MAX_MSG + 40, &m), -EBADMSG);
	/* magic */
	raw_hdr(buf, PROTO_MAGIC ^ 0x100, PROTO_VERSION, MSG_HELLO, 8, 1);
	CK_EQ(decode_exact(buf, 24, &m), -EPROTO);
	raw_hdr(buf, 0, PROTO_VERSION, MSG_HELLO, 8, 1);
	CK_EQ(decode_exact(buf, 24, &m), -EPROTO);
	raw_hdr(buf, 0x53484d50u /* byte-swapped */, PROTO_VERSION, MSG_HELLO, 8, 1);
	CK_EQ(decode_exact(buf, 24, &m), -EPROTO);
	/* version */
	const uint16_t vers[] = {0, PROTO_VERSION + 1, 0x100, 0xffff};
	for (size_t i = 0; i < sizeof vers / sizeof vers[0]; i++) {
		raw_hdr(buf, PROTO_MAGIC, vers[i], MSG_HELLO, 8, 1);
		CK_EQ(decode_exact(buf, 24, &m), -SHMMAP_EVERSION);
	}
	/* type */
	const uint16_t types[] = {0, MSG_TYPE_MAX + 1, 99, 0x100, 0xffff};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, types[i], 8, 1);
		CK_MSG(decode_exact(buf, 24, &m) == -EPROTO, "type %u accepted", types[i]);
		raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, types[i], 0, 1);
		CK_EQ(decode_exact(buf, 16, &m), -EPROTO);
	}
	/* body length field not matching the bytes received */
	const uint32_t bodies[] = {0, 7, 9, 24, 496, 497, 0x80000000u, UINT32_MAX};
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, MSG_HELLO, bodies[i], 1);
		CK_MSG(decode_exact(buf, 24, &m) == -EBADMSG, "body field %u accepted",
		       bodies[i]);
	}
}
END_TEST

START_TEST(decode_rejects_bodies)
{
	struct proto_msg ms[32], m;
	size_t n = samples(ms, 32);
	unsigned char buf[PROTO_MAX_MSG + 8];
	for (size_t i = 0; i < n; i++) {
		int len = shmmap__proto_encode(&ms[i], buf, sizeof buf);
		ck_assert_int_gt(len, 0);
		/* truncated: every shorter body, with a body field that agrees */
		for (int cut = PROTO_HDR; cut < len; cut++) {
			put_le32(buf + 8, (uint32_t)(cut - (int)PROTO_HDR));
			/* ERROR's reason is optional: without it, the body is err alone. */
			if (ms[i].type == MSG_ERROR && cut == (int)PROTO_HDR + 4) {
				CK_EQ(decode_exact(buf, (size_t)cut, &m), 0);
				CK(m.u.error.err == ms[i].u.error.err && m.u.error.why[0] == '\0');
				continue;
			}
			/* So is REPAIRED's deferred: without it, the sweep ran. */
			if (ms[i].type == MSG_REPAIRED && cut == (int)PROTO_HDR + 48) {
				CK_EQ(decode_exact(buf, (size_t)cut, &m), 0);
				CK_EQ(m.u.repaired.deferred, 0);
				continue;
			}
			CK_MSG(decode_exact(buf, (size_t)cut, &m) == -EBADMSG,
			       "type %u truncated to %d accepted", ms[i].type, cut);
		}
		/* trailing bytes, with a body field that agrees */
		for (int extra = 1; extra <= 8 && len + extra <= (int)PROTO_MAX_MSG; extra++) {
			memset(buf + len, 'x', (size_t)extra);
			put_le32(buf + 8, (uint32_t)(len + extra - (int)PROTO_HDR));
			CK_MSG(decode_exact(buf, (size_t)(len + extra), &m) == -EBADMSG,
			       "type %u with %d trailing bytes accepted", ms[i].type, extra);
		}
		/* trailing bytes the body field does not count */
		put_le32(buf + 8, (uint32_t)(len - (int)PROTO_HDR));
		CK_EQ(decode_exact(buf, (size_t)len + 1, &m), -EBADMSG);
		CK_EQ(decode_exact(buf, (size_t)len, &m), 0);
	}
}
END_TEST

/* An OPEN/DROP/WELCOME with a raw name field. */
static size_t raw_named(unsigned char *buf, uint16_t type, uint16_t nlen, const void *name,
			size_t nbytes)
{
	size_t fixed = type == MSG_WELCOME ? 32 : 4;
	memset(buf + PROTO_HDR, 0, fixed);
	put_le16(buf + PROTO_HDR + fixed, nlen);
	memcpy(buf + PROTO_HDR + fixed + 2, name, nbytes);
	size_t body = fixed + 2 + nbytes;
	raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, type, (uint32_t)body, 1);
	return PROTO_HDR + body;
}

START_TEST(decode_rejects_names)
{
	unsigned char buf[PROTO_MAX_MSG], name[300];
	struct proto_msg m;
	memset(name, 'n', sizeof name);
	const uint16_t named[] = {MSG_OPEN, MSG_DROP};
	for (size_t t = 0; t < 2; t++) {
		uint16_t ty = named[t];
		/* longest allowed, one too long, length field beyond the bytes */
		CK_EQ(decode_exact(buf, raw_named(buf, ty, SHMMAP_NAME_MAX, name,
		      SHMMAP_NAME_MAX), &m), 0);
		CK_EQ(strlen(m.u.open.name), SHMMAP_NAME_MAX);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, SHMMAP_NAME_MAX + 1, name,
		      SHMMAP_NAME_MAX + 1), &m), -EBADMSG);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 200, name, 200), &m), -EBADMSG);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 0xffff, name, 10), &m), -EBADMSG);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 11, name, 10), &m), -EBADMSG);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 9, name, 10), &m), -EBADMSG);
		/* NUL inside, at the start, at the end */
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 4, "ab\0c", 4), &m), -EBADMSG);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 3, "\0bc", 3), &m), -EBADMSG);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 3, "ab\0", 3), &m), -EBADMSG);
		/* empty */
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 0, "", 0), &m), -EBADMSG);
		CK_EQ(decode_exact(buf, raw_named(buf, ty, 1, "x", 1), &m), 0);
		ck_assert_str_eq(m.u.open.name, "x");
	}
	/* WELCOME: up to PROTO_NAME_MAX, NUL refused, empty allowed */
	CK_EQ(decode_exact(buf, raw_named(buf, MSG_WELCOME, PROTO_NAME_MAX, name,
	      PROTO_NAME_MAX), &m), 0);
	CK_EQ(strlen(m.u.welcome.shm_name), PROTO_NAME_MAX);
	CK_EQ(decode_exact(buf, raw_named(buf, MSG_WELCOME, PROTO_NAME_MAX + 1, name,
	      PROTO_NAME_MAX + 1), &m), -EBADMSG);
	CK_EQ(decode_exact(buf, raw_named(buf, MSG_WELCOME, 4, "/a\0b", 4), &m), -EBADMSG);
	CK_EQ(decode_exact(buf, raw_named(buf, MSG_WELCOME, 0, "", 0), &m), 0);
	ck_assert_str_eq(m.u.welcome.shm_name, "");
}
END_TEST

START_TEST(decode_rejects_error_codes)
{
	unsigned char buf[32];
	struct proto_msg m;
	const int32_t bad[] = {0, 1, ENOENT, INT32_MAX};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, MSG_ERROR, 4, 1);
		put_le32(buf + 16, (uint32_t)bad[i]);
		CK_MSG(decode_exact(buf, 20, &m) == -EBADMSG, "ERROR %d accepted", bad[i]);
	}
	const int32_t good[] = {-1, -EBADMSG, -SHMMAP_ECORRUPT, INT32_MIN};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, MSG_ERROR, 4, 1);
		put_le32(buf + 16, (uint32_t)good[i]);
		CK_EQ(decode_exact(buf, 20, &m), 0);
		CK_EQ(m.u.error.err, good[i]);
	}
}
END_TEST

START_TEST(encode_rejects)
{
	struct proto_msg m = {.type = MSG_OPEN, .seq = 1};
	unsigned char buf[PROTO_MAX_MSG + 16];
	fill_name(m.u.open.name, SHMMAP_NAME_MAX + 1, 'a');
	CK_EQ(shmmap__proto_encode(&m, buf, sizeof buf), -EINVAL);
	m.type = MSG_DROP;
	CK_EQ(shmmap__proto_encode(&m, buf, sizeof buf), -EINVAL);
	fill_name(m.u.open.name, PROTO_NAME_MAX, 'a');
	CK_EQ(shmmap__proto_encode(&m, buf, sizeof buf), -EINVAL);
	/* a WELCOME name with no NUL in the whole array */
	struct proto_msg w = {.type = MSG_WELCOME, .seq = 1};
	memset(w.u.welcome.shm_name, 'w', sizeof w.u.welcome.shm_name);
	CK_EQ(shmmap__proto_encode(&w, buf, sizeof buf), -EINVAL);
	/* unknown types */
	const uint16_t types[] = {0, MSG_TYPE_MAX + 1, 99, 0xffff};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		struct proto_msg u = {.type = types[i]};
		CK_EQ(shmmap__proto_encode(&u, buf, sizeof buf), -EINVAL);
	}
	/* every cap too small: -ENOBUFS and no byte written at or past cap */
	struct proto_msg ms[32];
	size_t n = samples(ms, 32);
	for (size_t i = 0; i < n; i++) {
		int len = shmmap__proto_encode(&ms[i], buf, sizeof buf);
		ck_assert_int_gt(len, 0);
		CK_EQ(shmmap__proto_encode(&ms[i], buf, (size_t)len), len);
		for (int cap = 0; cap < len; cap++) {
			memset(buf, 0xEE, sizeof buf);
			CK_MSG(shmmap__proto_encode(&ms[i], buf, (size_t)cap) == -ENOBUFS,
			       "type %u, cap %d", ms[i].type, cap);
			for (size_t j = (size_t)cap; j < sizeof buf; j++)
				CK_MSG(buf[j] == 0xEE, "type %u, cap %d: byte %zu written",
				       ms[i].type, cap, j);
		}
	}
	CK_EQ(shmmap__proto_encode(&ms[0], NULL, 0), -ENOBUFS);
}
END_TEST

/* ---- fuzz ---- */

static uint64_t rng_state = 0x853C49E6748FEA9Bull;
static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* A decoded message re-encodes to the very bytes it came from (the
 * STATS_REPLY pad word aside), and its names are NUL-terminated. */
static void check_accepted(const unsigned char *in, size_t len, const struct proto_msg *m)
{
	CK(m->type >= 1 && m->type <= MSG_TYPE_MAX);
	if (m->type == MSG_WELCOME)
		CK(memchr(m->u.welcome.shm_name, 0, sizeof m->u.welcome.shm_name) != NULL);
	if (m->type == MSG_OPEN_OPTS)
		CK(strlen(m->u.openo.name) >= 1 && strlen(m->u.openo.name) <= SHMMAP_NAME_MAX);
	if (m->type == MSG_OPEN || m->type == MSG_DROP) {
		CK(memchr(m->u.open.name, 0, sizeof m->u.open.name) != NULL);
		CK(strlen(m->u.open.name) >= 1 && strlen(m->u.open.name) <= SHMMAP_NAME_MAX);
	}
	if (m->type == MSG_ERROR)
		ck_assert_int_lt(m->u.error.err, 0);
	unsigned char out[PROTO_MAX_MSG];
	int n = shmmap__proto_encode(m, out, sizeof out);
	CK_MSG(n == (int)len, "accepted %zu bytes of type %u re-encode to %d", len, m->type,
	       n);
	if (m->type == MSG_STATS_REPLY)
		memcpy(out + PROTO_HDR + 12, in + PROTO_HDR + 12, 4);
	if (m->type == MSG_OPEN_OPTS)
		memcpy(out + PROTO_HDR + 36, in + PROTO_HDR + 36, 4);
	CK_MSG(memcmp(in, out, len) == 0, "accepted type %u does not re-encode", m->type);
}

static void fuzz_one(const unsigned char *in, size_t len, uint64_t *accepted)
{
	struct proto_msg m;
	int rc = decode_exact(in, len, &m);
	CK_MSG(documented_decode_rc(rc), "decode of %zu bytes returned %d", len, rc);
	if (rc == 0) {
		(*accepted)++;
		check_accepted(in, len, &m);
	}
}

START_TEST(fuzz_random_buffers)
{
	unsigned char buf[PROTO_MAX_MSG + 100];
	uint64_t accepted = 0;
	for (int it = 0; it < 100000; it++) {
		size_t len = (size_t)(rnd() % sizeof buf);
		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char)rnd();
		/* most with a plausible header, so the body parser is reached */
		unsigned mode = (unsigned)(rnd() % 4);
		if (mode >= 1 && len >= PROTO_HDR) {
			uint16_t type = (uint16_t)(rnd() % (MSG_TYPE_MAX + 2));
			raw_hdr(buf, PROTO_MAGIC, PROTO_VERSION, type,
				mode == 3 ? (uint32_t)rnd() : (uint32_t)(len - PROTO_HDR), (uint32_t)rnd());
		}
		fuzz_one(buf, len, &accepted);
	}
	/* some random bodies of fixed-size types must have been accepted */
	ck_assert_uint_gt(accepted, 10);
}
END_TEST

START_TEST(fuzz_mutated_messages)
{
	struct proto_msg ms[32];
	size_t n = samples(ms, 32);
	unsigned char base[32][PROTO_MAX_MSG];
	int blen[32];
	for (size_t i = 0; i < n; i++) {
		blen[i] = shmmap__proto_encode(&ms[i], base[i], PROTO_MAX_MSG);
		ck_assert_int_gt(blen[i], 0);
	}
	unsigned char buf[PROTO_MAX_MSG + 100];
	uint64_t accepted = 0;
	for (int it = 0; it < 100000; it++) {
		size_t k = (size_t)(rnd() % n);
		size_t len = (size_t)blen[k];
		memcpy(buf, base[k], len);
		int nmut = 1 + (int)(rnd() % 4);
		for (int j = 0; j < nmut; j++) {
			switch (rnd() % 6) {
			case 0: /* flip bits of one byte */
				if (len)
					buf[rnd() % len] ^= (unsigned char)(1 + rnd() % 255);
				break;
			case 1: /* random byte in the body */
				if (len > PROTO_HDR)
					buf[PROTO_HDR + rnd() % (len - PROTO_HDR)] = (unsigned char)rnd();
				break;
			case 2: /* truncate */
				len = (size_t)(rnd() % (len + 1));
				break;
			case 3: { /* extend */
				size_t add = (size_t)(rnd() % 40);
				if (len + add > sizeof buf)
					add = sizeof buf - len;
				for (size_t i = 0; i < add; i++)
					buf[len + i] = (unsigned char)rnd();
				len += add;
				break;
			}
			case 4: { /* a name length field (OPEN/DROP or WELCOME layout) */
				size_t at = PROTO_HDR + (rnd() % 2 ? 4 : 32);
				if (len >= at + 2)
					put_le16(buf + at, (uint16_t)(rnd() % 2 ? rnd() % 300 : rnd()));
				break;
			}
			default: /* change the type */
				if (len >= 8)
					put_le16(buf + 6, (uint16_t)(rnd() % (MSG_TYPE_MAX + 2)));
				break;
			}
		}
		/* mostly keep the body length field consistent, to get past it */
		if (len >= PROTO_HDR && rnd() % 4)
			put_le32(buf + 8, (uint32_t)(len - PROTO_HDR));
		fuzz_one(buf, len, &accepted);
	}
	ck_assert_uint_gt(accepted, 1000);
}
END_TEST

/* ---- socket I/O ---- */

static int sp[2] = {-1, -1};

static void sock_setup(void)
{
	CK_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
}

static void sock_teardown(void)
{
	for (int i = 0; i < 2; i++)
		if (sp[i] >= 0)
			close(sp[i]);
	sp[0] = sp[1] = -1;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	ck_assert_ptr_nonnull(d);
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	ck_assert_int_ge(fl, 0);
	CK_EQ(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* Send raw bytes, with n_fds copies of fd attached. */
static void send_raw(int sock, const void *buf, size_t len, int fd, int n_fds)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 16)];
	} cb;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (n_fds > 0) {
		memset(&cb, 0, sizeof cb);
		mh.msg_control = cb.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n_fds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n_fds);
		for (int i = 0; i < n_fds; i++)
			memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
	}
	CK_EQ(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

START_TEST(send_recv_every_type)
{
	struct proto_msg ms[32], r;
	size_t n = samples(ms, 32);
	for (size_t i = 0; i < n; i++) {
		CK_EQ(shmmap__proto_send(sp[0], &ms[i], -1), 0);
		int fd = 12345;
		memset(&r, 0, sizeof r);
		CK_EQ(shmmap__proto_recv(sp[1], &r, &fd), 0);
		CK_EQ(fd, -1);
		expect_msg_eq(&ms[i], &r);
	}
	/* the other direction, several queued, fd_out NULL */
	for (size_t i = 0; i < n; i++)
		CK_EQ(shmmap__proto_send(sp[1], &ms[i], -1), 0);
	for (size_t i = 0; i < n; i++) {
		CK_EQ(shmmap__proto_recv(sp[0], &r, NULL), 0);
		expect_msg_eq(&ms[i], &r);
	}
}
END_TEST

START_TEST(pass_fd)
{
	char path[] = "/tmp/check_proto-XXXXXX";
	int f = mkstemp(path);
	ck_assert_int_ge(f, 0);
	unlink(path);
	CK_EQ(write(f, "hello", 5), 5);
	struct proto_msg w = {.type = MSG_WELCOME, .seq = 42};
	w.u.welcome.slot = 3;
	strcpy(w.u.welcome.shm_name, "/shmmap-test");
	CK_EQ(shmmap__proto_send(sp[0], &w, f), 0);
	struct proto_msg r;
	int got = -1;
	CK_EQ(shmmap__proto_recv(sp[1], &r, &got), 0);
	expect_msg_eq(&w, &r);
	ck_assert_int_ge(got, 0);
	ck_assert_int_ne(got, f);
	struct stat a, b;
	CK_EQ(fstat(f, &a), 0);
	CK_EQ(fstat(got, &b), 0);
	CK_EQ(a.st_ino, b.st_ino);
	CK_EQ(a.st_dev, b.st_dev);
	CK_MSG(fcntl(got, F_GETFD) & FD_CLOEXEC, "received fd is not close-on-exec");
	char buf[8] = {0};
	CK_EQ(pread(got, buf, 5, 0), 5);
	ck_assert_str_eq(buf, "hello");
	close(got);

	/* an fd nobody asked for is closed, not leaked */
	int before = count_fds();
	CK_EQ(shmmap__proto_send(sp[0], &w, f), 0);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), 0);
	CK_EQ(count_fds(), before);
	/* several fds in one message: the first is kept, the rest closed */
	unsigned char raw[PROTO_MAX_MSG];
	int len = shmmap__proto_encode(&w, raw, sizeof raw);
	ck_assert_int_gt(len, 0);
	send_raw(sp[0], raw, (size_t)len, f, 3);
	got = -1;
	CK_EQ(shmmap__proto_recv(sp[1], &r, &got), 0);
	ck_assert_int_ge(got, 0);
	close(got);
	CK_EQ(count_fds(), before);
	/* more fds than the control buffer holds: refused, none leaked */
	send_raw(sp[0], raw, (size_t)len, f, 12);
	got = 7;
	CK_EQ(shmmap__proto_recv(sp[1], &r, &got), -EBADMSG);
	CK_EQ(got, -1);
	CK_EQ(count_fds(), before);
	/* a bad message with an fd: the fd is closed, *fd_out is -1 */
	raw[0] ^= 0xff;
	send_raw(sp[0], raw, (size_t)len, f, 1);
	got = 7;
	CK_EQ(shmmap__proto_recv(sp[1], &r, &got), -EPROTO);
	CK_EQ(got, -1);
	CK_EQ(count_fds(), before);
	close(f);
}
END_TEST

START_TEST(recv_oversized_and_bad)
{
	unsigned char big[PROTO_MAX_MSG + 100];
	struct proto_msg ok = {.type = MSG_OK, .seq = 5}, r;
	memset(big, 0, sizeof big);
	raw_hdr(big, PROTO_MAGIC, PROTO_VERSION, MSG_HELLO, sizeof big - PROTO_HDR, 1);
	send_raw(sp[0], big, sizeof big, -1, 0);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), -EBADMSG);
	/* one byte over the limit */
	raw_hdr(big, PROTO_MAGIC, PROTO_VERSION, MSG_HELLO, PROTO_MAX_MSG + 1 - PROTO_HDR, 1);
	send_raw(sp[0], big, PROTO_MAX_MSG + 1, -1, 0);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), -EBADMSG);
	/* message boundaries survive: the next message is intact */
	CK_EQ(shmmap__proto_send(sp[0], &ok, -1), 0);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), 0);
	expect_msg_eq(&ok, &r);
	/* the decoder's verdicts come through */
	send_raw(sp[0], "short", 5, -1, 0);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), -EBADMSG);
	raw_hdr(big, PROTO_MAGIC, PROTO_VERSION + 1, MSG_OK, 0, 1);
	send_raw(sp[0], big, PROTO_HDR, -1, 0);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), -SHMMAP_EVERSION);
	raw_hdr(big, PROTO_MAGIC, PROTO_VERSION, 99, 0, 1);
	send_raw(sp[0], big, PROTO_HDR, -1, 0);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), -EPROTO);
	/* an unencodable message is not sent */
	struct proto_msg bad = {.type = MSG_OPEN};
	fill_name(bad.u.open.name, SHMMAP_NAME_MAX + 1, 'a');
	CK_EQ(shmmap__proto_send(sp[0], &bad, -1), -EINVAL);
	set_nonblock(sp[1]);
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), -EAGAIN);
	/* EOF, and sending to a closed peer (no SIGPIPE) */
	close(sp[0]);
	sp[0] = -1;
	CK_EQ(shmmap__proto_recv(sp[1], &r, NULL), -ECONNRESET);
	CK_EQ(shmmap__proto_send(sp[1], &ok, -1), -ECONNRESET);
	/* a bad socket */
	CK_EQ(shmmap__proto_send(-1, &ok, -1), -EBADF);
	CK_EQ(shmmap__proto_recv(-1, &r, NULL), -EBADF);
}
END_TEST

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("codec");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, roundtrip_every_type);
	tcase_add_test(tc, wire_format);
	tcase_add_test(tc, decode_rejects_header);
	tcase_add_test(tc, decode_rejects_bodies);
	tcase_add_test(tc, decode_rejects_names);
	tcase_add_test(tc, decode_rejects_error_codes);
	tcase_add_test(tc, encode_rejects);
	tcase_add_test(tc, fuzz_random_buffers);
	tcase_add_test(tc, fuzz_mutated_messages);
	suite_add_tcase(s, tc);

	tc = tcase_create("socket");
	tcase_add_checked_fixture(tc, sock_setup, sock_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, send_recv_every_type);
	tcase_add_test(tc, pass_fd);
	tcase_add_test(tc, recv_oversized_and_bad);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(proto_suite());
}
