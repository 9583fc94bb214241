/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * fuzz_proto.c - libFuzzer target for the attach-protocol decoder
 * (shmmap__proto_decode in shmmap/proto.c), built and run by scripts/fuzz.sh.
 *
 * Each input is one received message.  Whatever it holds, the decoder must
 * return without reading past it.  A message that decodes must re-encode,
 * and the encoding must be canonical: it decodes to the same message and is
 * byte for byte the input (except the pad words of STATS_REPLY and
 * OPEN_OPTS, which the decoder ignores and the encoder writes as 0).  Encoding into a buffer one byte too
 * small must fail with -ENOBUFS and write nothing past it.  A broken
 * property is a __builtin_trap(), which libFuzzer reports as a crash.
 *
 * Built with -DFUZZ_PROTO_SEEDS (and without -fsanitize=fuzzer) this file
 * is instead a program that writes one valid message of each type into the
 * directory given as its argument: that is how tests/fuzz/corpus/proto/
 * was made, with
 *   clang -DFUZZ_PROTO_SEEDS -std=c11 -D_GNU_SOURCE -Iinclude -Ishmmap \
 *     -pthread -o gen tests/fuzz/fuzz_proto.c LIB_SRCS... -lrt
 *   ./gen tests/fuzz/corpus/proto
 * (LIB_SRCS as in the Makefile).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "proto.h"

#define CHECK(cond)                                  \
	do {                                         \
		if (!(cond))                         \
			__builtin_trap();            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where a message keeps a pad word (decode ignores it, encode writes 0),
 * or 0: STATS_REPLY after pid, clients, maps; OPEN_OPTS after flags,
 * policy, capacity, quota, key_max, value_max, default_ttl. */
static size_t pad_at(uint16_t type)
{
	switch (type) {
	case MSG_STATS_REPLY:
		return PROTO_HDR + 12u;
	case MSG_OPEN_OPTS:
		return PROTO_HDR + 36u;
	default:
		return 0;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A private copy of exactly size bytes, so that ASan sees any read
	 * past the message (libFuzzer's own buffer is exact too; this keeps
	 * the property when the function is called some other way). */
	uint8_t *in = malloc(size ? size : 1);
	if (!in)
		return 0;
	if (size)
		memcpy(in, data, size);

	struct proto_msg m, m2;
	int rc = shmmap__proto_decode(in, size, &m);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTO || rc == -SHMMAP_EVERSION);
	if (rc != 0)
		goto out;
	CHECK(m.type >= MSG_HELLO && m.type <= MSG_TYPE_MAX);

	unsigned char buf[PROTO_MAX_MSG];
	int n = shmmap__proto_encode(&m, buf, sizeof buf);
	CHECK(n >= (int)PROTO_HDR && n <= (int)PROTO_MAX_MSG);
	CHECK((size_t)n == size);
	size_t pad = pad_at(m.type);
	if (pad) {
		CHECK(memcmp(buf, in, pad) == 0);
		CHECK(buf[pad] == 0 && buf[pad + 1] == 0 && buf[pad + 2] == 0 && buf[pad + 3] == 0);
		CHECK(memcmp(buf + pad + 4, in + pad + 4, size - pad - 4) == 0);
	} else {
		CHECK(memcmp(buf, in, size) == 0);
	}

	/* The round trip is stable: decode(encode(m)) == m, field for field
	 * (decode zeroes the whole message first, so memcmp is exact). */
	CHECK(shmmap__proto_decode(buf, (size_t)n, &m2) == 0);
	CHECK(memcmp(&m, &m2, sizeof m) == 0);
	unsigned char buf2[PROTO_MAX_MSG];
	CHECK(shmmap__proto_encode(&m2, buf2, sizeof buf2) == n);
	CHECK(memcmp(buf, buf2, (size_t)n) == 0);

	/* One byte short: -ENOBUFS, and no write past the end (heap buffer
	 * of exactly that size, for ASan). */
	unsigned char *small = malloc((size_t)n - 1);
	if (small) {
		CHECK(shmmap__proto_encode(&m, small, (size_t)n - 1) == -ENOBUFS);
		free(small);
	}
out:
	free(in);
	return 0;
}

#ifdef FUZZ_PROTO_SEEDS
static int write_seed(const char *dir, const char *name, const struct proto_msg *m)
{
	unsigned char buf[PROTO_MAX_MSG];
	int n = shmmap__proto_encode(m, buf, sizeof buf);
	if (n < 0) {
		fprintf(stderr, "encode %s: %d\n", name, n);
		return -1;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, (size_t)n, f) != (size_t)n || fclose(f) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	const char *d = argv[1];
	struct proto_msg m;
	int bad = 0;

	memset(&m, 0, sizeof m);
	m = (struct proto_msg){.type = MSG_HELLO, .seq = 1,
			       .u.hello = {.pid = 4242, .flags = HELLO_F_RDONLY}};
	bad |= write_seed(d, "hello", &m);

	memset(&m, 0, sizeof m);
	m.type = MSG_WELCOME;
	m.seq = 1;
	m.u.welcome.slot = 3;
	m.u.welcome.flags = 1;
	m.u.welcome.slot_gen = 7;
	m.u.welcome.size = 64u << 20;
	m.u.welcome.base = 0x200000000000ull;
	snprintf(m.u.welcome.shm_name, sizeof m.u.welcome.shm_name, "/shmmap");
	bad |= write_seed(d, "welcome", &m);

	memset(&m, 0, sizeof m);
	m.type = MSG_OPEN;
	m.seq = 2;
	m.u.open.flags = SHMMAP_CREATE;
	snprintf(m.u.open.name, sizeof m.u.open.name, "sessions");
	bad |= write_seed(d, "open", &m);

	/* The longest map name the protocol carries. */
	memset(&m, 0, sizeof m);
	m.type = MSG_DROP;
	m.seq = 3;
	memset(m.u.open.name, 'n', SHMMAP_NAME_MAX);
	bad |= write_seed(d, "drop-longest-name", &m);

	memset(&m, 0, sizeof m);
	m = (struct proto_msg){.type = MSG_OPENED, .seq = 2, .u.opened = {.index = 5, .gen = 9}};
	bad |= write_seed(d, "opened", &m);

	memset(&m, 0, sizeof m);
	m = (struct proto_msg){.type = MSG_STATS, .seq = 4};
	bad |= write_seed(d, "stats", &m);

	memset(&m, 0, sizeof m);
	m = (struct proto_msg){.type = MSG_STATS_REPLY, .seq = 4,
			       .u.stats = {.pid = 100, .clients = 2, .maps = 3,
					   .uptime_ms = 123456, .coord_gen = 2}};
	bad |= write_seed(d, "stats-reply", &m);

	memset(&m, 0, sizeof m);
	m = (struct proto_msg){.type = MSG_BYE, .seq = 5};
	bad |= write_seed(d, "bye", &m);

	memset(&m, 0, sizeof m);
	m = (struct proto_msg){.type = MSG_OK, .seq = 3};
	bad |= write_seed(d, "ok", &m);

	memset(&m, 0, sizeof m);
	m = (struct proto_msg){.type = MSG_ERROR, .seq = 2, .u.error = {.err = -ENOENT}};
	bad |= write_seed(d, "error", &m);
	return bad ? 1 : 0;
}
#endif
