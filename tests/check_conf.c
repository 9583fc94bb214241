/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_conf.c - unit tests of shmmap/conf.c: defaults, the shipped
 * conf/shmmap.ini, the golden files in tests/data/conf (good-*.ini load to
 * known values, each bad-*.ini fails with a known errno, line and key),
 * synthetic edge cases written to temporary files, shmmap__parse_size and
 * the $SHMMAP_SOCKET override.
 *
 * Needs SHMMAP_TESTDATA = absolute path of tests/data (falls back to
 * "tests/data", i.e. running from the top of the tree).
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "conf.h"
#include "internal.h"
#include "paths.h"
#include "testutil.h"
#include "shmmap.h"

#define ERRLEN 1024

static const char *testdata(void)
{
	const char *d = getenv("SHMMAP_TESTDATA");
	return d && *d ? d : "tests/data";
}

static void data_path(char *buf, size_t len, const char *rel)
{
	int n = snprintf(buf, len, "%s/%s", testdata(), rel);
	ck_assert_msg(n > 0 && (size_t)n < len, "path too long");
}

/* Write text (len bytes, may hold NULs) to a new temporary file. */
static void write_tmp(char *path, size_t len, const char *text, size_t tlen)
{
	const char *dir = getenv("TMPDIR");
	int n = snprintf(path, len, "%s/check_conf-XXXXXX", dir && *dir ? dir : "/tmp");
	ck_assert(n > 0 && (size_t)n < len);
	int fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, text, tlen), (ssize_t)tlen);
	ck_assert_int_eq(close(fd), 0);
}

/* Load text from a temporary file over c; returns the rc. */
static int load_text(struct shmmap_conf *c, const char *text, size_t tlen, char *path, size_t plen,
		     char *err)
{
	write_tmp(path, plen, text, tlen);
	int rc = shmmap__conf_load(c, path, err, ERRLEN);
	unlink(path);
	return rc;
}

static void assert_conf_eq(const struct shmmap_conf *a, const struct shmmap_conf *b)
{
	ck_assert_str_eq(a->segment.name, b->segment.name);
	ck_assert_uint_eq(a->segment.size, b->segment.size);
	ck_assert_uint_eq(a->segment.max_size, b->segment.max_size);
	ck_assert_uint_eq(a->segment.base, b->segment.base);
	ck_assert_uint_eq(a->segment.mode, b->segment.mode);
	ck_assert_uint_eq(a->segment.max_clients, b->segment.max_clients);
	ck_assert_uint_eq(a->segment.max_maps, b->segment.max_maps);
	ck_assert_int_eq(a->segment.huge_pages, b->segment.huge_pages);
	ck_assert_str_eq(a->server.socket, b->server.socket);
	ck_assert_uint_eq(a->server.socket_mode, b->server.socket_mode);
	ck_assert_int_eq(a->server.log_level, b->server.log_level);
	ck_assert_uint_eq(a->map.key_max, b->map.key_max);
	ck_assert_uint_eq(a->map.value_max, b->map.value_max);
	ck_assert_uint_eq(a->map.buckets, b->map.buckets);
	ck_assert_uint_eq(a->map.stripes, b->map.stripes);
	ck_assert_uint_eq(a->map.policy, b->map.policy);
	ck_assert_uint_eq(a->map.max_buckets, b->map.max_buckets);
	ck_assert_uint_eq(a->map.grow_step, b->map.grow_step);
	ck_assert_uint_eq(a->map.quota, b->map.quota);
	ck_assert_uint_eq(a->map.default_ttl, b->map.default_ttl);
	ck_assert_uint_eq(a->map.capacity, b->map.capacity);
	ck_assert_uint_eq(a->nmaps, b->nmaps);
	ck_assert_str_eq(a->persistence.snapshot, b->persistence.snapshot);
	ck_assert_uint_eq(a->persistence.interval, b->persistence.interval);
}

/* Load a golden good file; it must succeed and leave err empty. */
static void load_good(struct shmmap_conf *c, const char *rel)
{
	char path[4096], err[ERRLEN];
	data_path(path, sizeof(path), rel);
	memset(err, 'x', sizeof(err));
	err[sizeof(err) - 1] = '\0';
	int rc = shmmap__conf_load(c, path, err, sizeof(err));
	ck_assert_msg(rc == 0, "%s: rc %d: %s", rel, rc, err);
	ck_assert_str_eq(err, "");
}

/* ---- defaults and shipped config -------------------------------------- */

START_TEST(test_defaults)
{
	struct shmmap_conf c;
	unsetenv("SHMMAP_SOCKET");
	memset(&c, 0xa5, sizeof(c));
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.segment.name, "/shmmap");
	ck_assert_uint_eq(c.segment.size, 64u << 20);
	ck_assert_uint_eq(c.segment.max_size, 64u << 20);
	ck_assert_uint_eq(c.segment.base, UINT64_C(0x200000000000));
	ck_assert_uint_eq(c.segment.mode, 0600);
	ck_assert_uint_eq(c.segment.max_clients, 128);
	ck_assert_uint_eq(c.segment.max_maps, 64);
	ck_assert(c.segment.huge_pages);
	ck_assert_str_eq(c.server.socket, SHMMAP_DEFAULT_SOCKET);
	ck_assert_uint_eq(c.server.socket_mode, 0600);
	ck_assert_int_eq(c.server.log_level, LOG_INFO);
	ck_assert_uint_eq(c.map.key_max, 250);
	ck_assert_uint_eq(c.map.value_max, 1u << 20);
	ck_assert_uint_eq(c.map.buckets, 4096);
	ck_assert_uint_eq(c.map.stripes, 256);
	ck_assert_uint_eq(c.map.max_buckets, 1u << 30);
	ck_assert_uint_eq(c.map.grow_step, 64);
}
END_TEST

START_TEST(test_shipped_ini)
{
	struct shmmap_conf c, d;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&d);
	/* Start from something else, so that every key must be in the file;
	 * but segment.name and server.socket, whose defaults depend on the
	 * user, are only comments there. */
	memset(&c, 0, sizeof(c));
	memcpy(c.segment.name, d.segment.name, sizeof c.segment.name);
	memcpy(c.server.socket, d.server.socket, sizeof c.server.socket);
	load_good(&c, "../../conf/shmmap.ini");
	assert_conf_eq(&c, &d); /* the shipped file spells out the defaults */
}
END_TEST

/* ---- golden good files ------------------------------------------------ */

START_TEST(test_good_full)
{
	struct shmmap_conf c;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	load_good(&c, "conf/good-full.ini");
	ck_assert_str_eq(c.segment.name, "/shmmap-test");
	ck_assert_uint_eq(c.segment.size, 256u << 20);
	ck_assert_uint_eq(c.segment.base, UINT64_C(0x300000000000));
	ck_assert_uint_eq(c.segment.mode, 0660);
	ck_assert_uint_eq(c.segment.max_clients, 4096);
	ck_assert_uint_eq(c.segment.max_maps, 1);
	ck_assert(!c.segment.huge_pages);
	ck_assert_str_eq(c.server.socket, "/tmp/shmmap-test.sock");
	ck_assert_uint_eq(c.server.socket_mode, 0666);
	ck_assert_int_eq(c.server.log_level, LOG_DEBUG);
	ck_assert_uint_eq(c.map.key_max, 65535);
	ck_assert_uint_eq(c.map.value_max, 0);
	ck_assert_uint_eq(c.map.buckets, 1u << 26);
	ck_assert_uint_eq(c.map.stripes, 65536);
	ck_assert_uint_eq(c.map.policy, MAP_POLICY_REJECT);
	ck_assert_str_eq(c.persistence.snapshot, "/var/lib/shmmap/test.snap");
	ck_assert_uint_eq(c.persistence.interval, 300);
}
END_TEST

START_TEST(test_good_partial)
{
	struct shmmap_conf c, want;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	shmmap__conf_defaults(&want);
	want.map.buckets = 1024;
	want.map.stripes = 1024;
	want.segment.size = 1u << 20;
	want.segment.max_size = 1u << 20; /* max_size unset: size (no growth) */
	load_good(&c, "conf/good-partial.ini");
	assert_conf_eq(&c, &want);
}
END_TEST

/* [segment] max_size: the most the segment may grow to. */
START_TEST(test_good_grow)
{
	struct shmmap_conf c, want;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	shmmap__conf_defaults(&want);
	want.segment.size = 16u << 20;
	want.segment.max_size = 1u << 30;
	load_good(&c, "conf/good-grow.ini");
	assert_conf_eq(&c, &want);
}
END_TEST

START_TEST(test_good_style)
{
	struct shmmap_conf c, want;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	shmmap__conf_defaults(&want);
	snprintf(want.segment.name, sizeof(want.segment.name), "/x");
	want.segment.size = 1u << 30;
	want.segment.max_size = 1u << 30;
	want.segment.base = UINT64_C(0x100000000000);
	want.segment.mode = 0640;
	want.segment.max_clients = 7;
	snprintf(want.server.socket, sizeof(want.server.socket), "/tmp/path with spaces.sock");
	want.map.value_max = 512u << 10;
	want.map.key_max = 1;
	want.map.buckets = 1;
	want.map.stripes = 1;
	load_good(&c, "conf/good-style.ini");
	assert_conf_eq(&c, &want);
}
END_TEST

START_TEST(test_good_ids)
{
	struct shmmap_conf c;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	load_good(&c, "conf/good-ids.ini");
	ck_assert_uint_eq(c.server.allow_uids.n, 2);
	ck_assert_uint_eq(c.server.allow_uids.id[0], 0); /* root, by name */
	ck_assert_uint_eq(c.server.allow_uids.id[1], 1000);
	ck_assert_uint_eq(c.server.allow_gids.n, 1);
	ck_assert_uint_eq(c.server.readonly_uids.n, 1);
	ck_assert_uint_eq(c.server.readonly_uids.id[0], 65534); /* nobody */
	ck_assert_uint_eq(c.server.readonly_gids.n, 2);
	ck_assert_uint_eq(c.server.readonly_gids.id[1], 4242);
}
END_TEST

START_TEST(test_good_empty)
{
	struct shmmap_conf c, d;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	shmmap__conf_defaults(&d);
	load_good(&c, "conf/good-empty.ini");
	assert_conf_eq(&c, &d);
}
END_TEST

/* Loading over a non-default conf keeps what the file does not set. */
START_TEST(test_load_over_values)
{
	struct shmmap_conf c;
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	c.segment.max_maps = 7;
	snprintf(c.server.socket, sizeof(c.server.socket), "/tmp/keep.sock");
	load_good(&c, "conf/good-partial.ini");
	ck_assert_uint_eq(c.segment.max_maps, 7);
	ck_assert_str_eq(c.server.socket, "/tmp/keep.sock");
	ck_assert_uint_eq(c.map.buckets, 1024);
}
END_TEST

/* ---- golden bad files ------------------------------------------------- */

struct bad_case {
	const char *file; /* under tests/data/conf */
	int rc;
	const char *where; /* must follow "PATH" at the start of the message */
	const char *why;   /* must appear after it */
};

static const struct bad_case bad_cases[] = {
	{ "bad-unknown-section.ini", -EINVAL, ":4: [bogus]: ", "unknown section" },
	{ "bad-unknown-key.ini", -EINVAL, ":3: segment.sizee: ", "unknown key" },
	{ "bad-size.ini", -EINVAL, ":3: segment.size: ",
	  "bad size \"12Q\" (use a number with an optional K, M, G or T suffix: 64M, 64MB and 64MiB alike)" },
	{ "bad-size-small.ini", -EINVAL, ":4: segment.size: ", "too small" },
	{ "bad-size-suffix.ini", -EINVAL, ":2: segment.size: ", "bad size \"64MQ\"" },
	{ "bad-size-overflow.ini", -EINVAL, ":2: segment.size: ", "too large" },
	{ "bad-value-max.ini", -EINVAL, ":3: map.value_max: ", "too large" },
	{ "bad-base-align.ini", -EINVAL, ":5: segment.base: ", "not a multiple of 64K" },
	{ "bad-base-range.ini", -EINVAL, ":2: segment.base: ", "outside user space" },
	{ "bad-base-zero.ini", -EINVAL, ":2: segment.base: ", "must not be 0" },
	{ "bad-base-end.ini", -EINVAL, ":4: segment.base: ", "ends outside user space" },
	{ "bad-max-size-small.ini", -EINVAL, ":3: segment.max_size: ",
	  "32M is less than segment.size (64M)" },
	{ "bad-max-size-align.ini", -EINVAL, ":3: segment.max_size: ", "not a multiple of 64K" },
	{ "bad-size-align.ini", -EINVAL, ":3: segment.size: ",
	  "20000001 is not a multiple of 64K (use 19988480 or 20054016" },
	{ "bad-map-name-long.ini", -EINVAL, ":4: ", "map name too long (64 bytes, at most 63)" },
	{ "bad-max-size-end.ini", -EINVAL, ":4: segment.max_size: ", "ends outside user space" },
	{ "bad-mode.ini", -EINVAL, ":2: segment.mode: ", "bad mode \"0800\"" },
	{ "bad-mode-range.ini", -EINVAL, ":3: server.socket_mode: ", "out of range" },
	{ "bad-unknown-user.ini", -EINVAL, ":3: server.readonly_uids: ", "no such user \"no-such-user-xyz\"" },
	{ "bad-gid-range.ini", -EINVAL, ":2: server.allow_gids: ", "no such group" },
	{ "bad-name-empty.ini", -EINVAL, ":3: segment.name: ", "empty value" },
	{ "bad-name-slash.ini", -EINVAL, ":2: segment.name: ", "must start with '/'" },
	{ "bad-name-inner-slash.ini", -EINVAL, ":2: segment.name: ", "must not contain '/'" },
	{ "bad-stripes.ini", -EINVAL, ":5: map.stripes: ", "128 is more than map.buckets (64)" },
	{ "bad-buckets-pow2.ini", -EINVAL, ":2: map.buckets: ", "not a power of two" },
	{ "bad-stripes-range.ini", -EINVAL, ":3: map.stripes: ", "out of range" },
	{ "bad-max-buckets.ini", -EINVAL, ":3: map.max_buckets: ", "2048 is fewer than map.buckets (4096)" },
	{ "bad-policy.ini", -EINVAL, ":2: map.policy: ", "unknown policy \"lru\" (evict or reject)" },
	{ "bad-huge-pages.ini", -EINVAL, ":3: segment.huge_pages: ",
	  "\"maybe\" is not yes or no (yes/no, on/off, true/false, 1/0)" },
	{ "bad-log-level.ini", -EINVAL, ":3: server.log_level: ",
	  "unknown level \"crit\" (error, warning, notice, info or debug)" },
	{ "bad-snapshot-relative.ini", -EINVAL, ":2: persistence.snapshot: ", "not an absolute path" },
	{ "bad-interval.ini", -EINVAL, ":3: persistence.interval: ", "bad number" },
	{ "bad-empty-value.ini", -EINVAL, ":5: map.key_max: ", "empty value" },
	{ "bad-long-line.ini", -EINVAL, ":3: ", "line too long" },
	{ "bad-socket-long.ini", -EINVAL, ":2: server.socket: ", "too long" },
	{ "bad-socket-relative.ini", -EINVAL, ":3: server.socket: ",
	  "\"run/shmmap.sock\" must be an absolute path" },
	{ "bad-syntax.ini", -EINVAL, ":3: ", "syntax error" },
	{ "bad-continuation.ini", -EINVAL, ":4: ", "syntax error" },
	{ "bad-unterminated-section.ini", -EINVAL, ":2: ", "syntax error" },
	{ "bad-section-junk.ini", -EINVAL, ":1: ", "junk after [segment]" },
	{ "bad-outside-section.ini", -EINVAL, ":2: size: ", "outside any section" },
	{ "bad-duplicate.ini", -EINVAL, ":4: segment.size: ", "duplicate key (already set on line 2)" },
	{ "bad-negative.ini", -EINVAL, ":2: segment.max_clients: ", "bad number \"-1\"" },
	{ "bad-number-overflow.ini", -EINVAL, ":2: segment.max_maps: ", "out of range" },
	{ "bad-number-range.ini", -EINVAL, ":2: segment.max_clients: ", "out of range" },
	{ "bad-key-max-zero.ini", -EINVAL, ":2: map.key_max: ", "out of range" },
	{ "bad-hash-comment.ini", -EINVAL, ":3: segment.size: ", "inline comments start with ';'" },
	{ "bad-missing.ini", -ENOENT, ": ", "No such file or directory" },
};

static void check_bad(const char *path, int want_rc, const char *where, const char *why)
{
	struct shmmap_conf c, before;
	char err[ERRLEN], prefix[4200];

	shmmap__conf_defaults(&c);
	before = c;
	int rc = shmmap__conf_load(&c, path, err, sizeof(err));
	ck_assert_msg(rc == want_rc, "%s: rc %d, want %d (%s)", path, rc, want_rc, err);
	snprintf(prefix, sizeof(prefix), "%s%s", path, where);
	ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s: message \"%s\" does not start with \"%s\"",
		      path, err, prefix);
	ck_assert_msg(strstr(err + strlen(prefix), why), "%s: message \"%s\" lacks \"%s\"", path, err, why);
	/* On error the conf is untouched. */
	assert_conf_eq(&c, &before);
}

START_TEST(test_bad_file)
{
	const struct bad_case *bc = &bad_cases[_i];
	char path[4096], rel[256];
	unsetenv("SHMMAP_SOCKET");
	snprintf(rel, sizeof(rel), "conf/%s", bc->file);
	data_path(path, sizeof(path), rel);
	check_bad(path, bc->rc, bc->where, bc->why);
}
END_TEST

/* The exact message of the documented example. */
START_TEST(test_bad_exact_message)
{
	struct shmmap_conf c;
	char path[4096], err[ERRLEN], want[4400];
	data_path(path, sizeof(path), "conf/bad-size.ini");
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:3: segment.size: bad size \"12Q\" (use a number with an optional K, M, G or T suffix: 64M, 64MB and 64MiB alike)",
		 path);
	ck_assert_str_eq(err, want);

	data_path(path, sizeof(path), "conf/bad-missing.ini");
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_bad_directory)
{
	struct shmmap_conf c;
	char path[4096], err[ERRLEN];
	data_path(path, sizeof(path), "conf");
	shmmap__conf_defaults(&c);
	int rc = shmmap__conf_load(&c, path, err, sizeof(err));
	ck_assert_int_eq(rc, -EISDIR);
	ck_assert_ptr_nonnull(strstr(err, ": Is a directory"));
}
END_TEST

/* A small or absent err buffer never overflows. */
START_TEST(test_small_errbuf)
{
	struct shmmap_conf c;
	char path[4096], err[8];
	data_path(path, sizeof(path), "conf/bad-size.ini");
	shmmap__conf_defaults(&c);
	memset(err, 'x', sizeof(err));
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, 4), -EINVAL);
	ck_assert_uint_eq(strlen(err), 3);
	ck_assert_int_eq(err[4], 'x');
	ck_assert_int_eq(shmmap__conf_load(&c, path, NULL, 0), -EINVAL);
	err[0] = 'x';
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, 0), -EINVAL);
	ck_assert_int_eq(err[0], 'x');
}
END_TEST

/* ---- synthetic files -------------------------------------------------- */

START_TEST(test_crlf_bom_no_final_newline)
{
	static const char text[] = "\xEF\xBB\xBF[segment]\r\nsize = 2M\r\n; c\r\n[map]\r\nstripes = 2\r\nbuckets = 2";
	struct shmmap_conf c;
	char path[256], err[ERRLEN];
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	int rc = load_text(&c, text, sizeof(text) - 1, path, sizeof(path), err);
	ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
	ck_assert_uint_eq(c.segment.size, 2u << 20);
	ck_assert_uint_eq(c.map.stripes, 2);
	ck_assert_uint_eq(c.map.buckets, 2);
}
END_TEST

static void line_of(char *buf, size_t total, const char *head)
{
	size_t h = strlen(head);
	memcpy(buf, head, h);
	memset(buf + h, 'a', total - h);
	buf[total] = '\0';
}

/* 199 bytes is the longest line; 200 is refused, comment or not. */
START_TEST(test_line_length_limit)
{
	struct shmmap_conf c;
	char path[256], err[ERRLEN], text[512], line[256], where[600];
	unsetenv("SHMMAP_SOCKET");

	line_of(line, 199, "name = /");
	snprintf(text, sizeof(text), "[segment]\n%s\n", line);
	shmmap__conf_defaults(&c);
	int rc = load_text(&c, text, strlen(text), path, sizeof(path), err);
	ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
	ck_assert_uint_eq(strlen(c.segment.name), 199 - strlen("name = "));

	/* Also 199 bytes + CR LF. */
	snprintf(text, sizeof(text), "[segment]\r\n%s\r\n", line);
	rc = load_text(&c, text, strlen(text), path, sizeof(path), err);
	ck_assert_msg(rc == 0, "rc %d: %s", rc, err);

	line_of(line, 200, "; comment ");
	snprintf(text, sizeof(text), "[server]\n\n%s\n", line);
	rc = load_text(&c, text, strlen(text), path, sizeof(path), err);
	ck_assert_int_eq(rc, -EINVAL);
	snprintf(where, sizeof(where), "%s:3: line too long", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);
}
END_TEST

START_TEST(test_nul_byte)
{
	static const char text[] = "[segment]\nname = /a\0b\n";
	struct shmmap_conf c;
	char path[256], err[ERRLEN], where[600];
	shmmap__conf_defaults(&c);
	int rc = load_text(&c, text, sizeof(text) - 1, path, sizeof(path), err);
	ck_assert_int_eq(rc, -EINVAL);
	snprintf(where, sizeof(where), "%s:2: NUL byte", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);
}
END_TEST

/* The first error in the file wins, whoever found it. */
START_TEST(test_first_error_wins)
{
	struct shmmap_conf c;
	char path[256], err[ERRLEN], where[600];

	static const char syntax_first[] = "[segment]\nno equals here\nsize = 1Q\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, syntax_first, strlen(syntax_first), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:2: syntax error", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);

	static const char value_first[] = "[segment]\nsize = 1Q\nno equals here\n[bogus]\n";
	ck_assert_int_eq(load_text(&c, value_first, strlen(value_first), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:2: segment.size: bad size", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);

	static const char syntax_then_section[] = "[map]\njunk\n[bogus]\n";
	ck_assert_int_eq(load_text(&c, syntax_then_section, strlen(syntax_then_section), path, sizeof(path), err),
			 -EINVAL);
	snprintf(where, sizeof(where), "%s:2: syntax error", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);

	static const char no_name[] = "[map]\n= 5\nkey_max = 0\n";
	ck_assert_int_eq(load_text(&c, no_name, strlen(no_name), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:2: missing key name", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);
}
END_TEST

/* [map NAME] sections: each map's own options, over [map]. */
START_TEST(test_map_sections)
{
	struct shmmap_conf c;
	char path[256], err[ERRLEN], where[600];
	static const char two[] = "[map]\nkey_max = 100\n[map sessions]\nkey_max = 8\n"
				  "quota = 64K\ndefault_ttl = 60\npolicy = reject\n"
				  "[map big one]\ncapacity = 1000000\n[map sessions]\nvalue_max = 1K\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, two, strlen(two), path, sizeof(path), err), 0);
	ck_assert_uint_eq(c.map.key_max, 100);
	ck_assert_uint_eq(c.nmaps, 2);
	ck_assert_str_eq(c.maps[0].name, "sessions");
	ck_assert_uint_eq(c.maps[0].has,
			  CMS_KEY_MAX | CMS_QUOTA | CMS_DEFAULT_TTL | CMS_POLICY | CMS_VALUE_MAX);
	ck_assert_uint_eq(c.maps[0].key_max, 8);
	ck_assert_uint_eq(c.maps[0].value_max, 1024);
	ck_assert_uint_eq(c.maps[0].quota, 65536);
	ck_assert_uint_eq(c.maps[0].default_ttl, 60);
	ck_assert_uint_eq(c.maps[0].policy, 1); /* MAP_POLICY_REJECT */
	ck_assert_str_eq(c.maps[1].name, "big one");
	ck_assert_uint_eq(c.maps[1].has, CMS_CAPACITY);
	ck_assert_uint_eq(c.maps[1].capacity, 1000000);

	/* A section with no key is a map all the same (made at start with
	 * [map]'s options); a name past inih's 49-byte section buffer stays
	 * whole; a header seen twice is one section. */
	static const char empty[] = "[map empty]\n; nothing\n[map "
				    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn]\n"
				    "buckets = 8192\n[map empty]\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, empty, strlen(empty), path, sizeof(path), err), 0);
	ck_assert_uint_eq(c.nmaps, 2);
	ck_assert_str_eq(c.maps[0].name, "empty");
	ck_assert_uint_eq(c.maps[0].has, 0);
	ck_assert_uint_eq(strlen(c.maps[1].name), 63);
	ck_assert_uint_eq(c.maps[1].has, CMS_BUCKETS);
	ck_assert_uint_eq(c.maps[1].buckets, 8192);
	ck_assert_uint_eq(c.map.buckets, 4096);

	/* At most CONF_MAX_MAP_SECTIONS, keys or not. */
	char many[(CONF_MAX_MAP_SECTIONS + 1) * 16];
	size_t mn = 0;
	for (int i = 0; i <= CONF_MAX_MAP_SECTIONS; i++)
		mn += (size_t)snprintf(many + mn, sizeof many - mn, "[map m%d]\n", i);
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, many, mn, path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:%d: [map m%d]: more than %d [map NAME] sections", path,
		 CONF_MAX_MAP_SECTIONS + 1, CONF_MAX_MAP_SECTIONS, CONF_MAX_MAP_SECTIONS);
	ck_assert_str_eq(err, where);

	static const char unknown[] = "[map m]\ngrow_step = 1\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, unknown, strlen(unknown), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:2: map m.grow_step: unknown key", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);

	static const char dup[] = "[map m]\nquota = 1K\nquota = 2K\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, dup, strlen(dup), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:3: map m.quota: duplicate key", path);
	ck_assert_str_eq(err, where);

	static const char bad_value[] = "[map m]\nkey_max = 0\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, bad_value, strlen(bad_value), path, sizeof(path), err),
			 -EINVAL);

	static const char long_name[] = "[map 0123456789012345678901234567890123456789012345678901234567890123]\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, long_name, strlen(long_name), path, sizeof(path), err),
			 -EINVAL);
	ck_assert_msg(strstr(err, ":1: [map 0123456789012345...]: map name too long (64 bytes, "
			      "at most 63)") != NULL, "got \"%s\"", err);
}
END_TEST

/* Cross-field checks blame the key set last, or the only one set. */
START_TEST(test_cross_field_blame)
{
	struct shmmap_conf c;
	char path[256], err[ERRLEN], where[600];

	static const char buckets_only[] = "[map]\n\nbuckets = 64\n"; /* default stripes 256 */
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, buckets_only, strlen(buckets_only), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:3: map.buckets: 64 is fewer than map.stripes (256)", path);
	ck_assert_str_eq(err, where);

	/* Stripes alone above the initial 4096 buckets (a config written for
	 * the old default of 16384): the initial bucket count follows. */
	static const char stripes_only[] = "[map]\nstripes = 8192\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, stripes_only, strlen(stripes_only), path, sizeof(path), err), 0);
	ck_assert_uint_eq(c.map.buckets, 8192);
	ck_assert_uint_eq(c.map.stripes, 8192);
	/* So do max_buckets alone below them, down to the stripes. */
	static const char cap_only[] = "[map]\nmax_buckets = 2048\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, cap_only, strlen(cap_only), path, sizeof(path), err), 0);
	ck_assert_uint_eq(c.map.buckets, 2048);
	ck_assert_uint_eq(c.map.max_buckets, 2048);
	static const char cap_tiny[] = "[map]\nmax_buckets = 64\n";
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(load_text(&c, cap_tiny, strlen(cap_tiny), path, sizeof(path), err), -EINVAL);

	static const char size_only[] = "[segment]\nsize = 1T\n"; /* default base 0x200000000000 */
	ck_assert_int_eq(load_text(&c, size_only, strlen(size_only), path, sizeof(path), err), 0);
	static const char size_too_big[] = "[segment]\nbase = 0x7f0000000000\nsize = 1T\n";
	ck_assert_int_eq(load_text(&c, size_too_big, strlen(size_too_big), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:3: segment.size: 1T at segment.base", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);

	/* The last 64K-aligned base where 1M still fits below 0x7ffffffff000. */
	static const char fits[] = "[segment]\nsize = 1M\nbase = 0x7fffffef0000\n";
	shmmap__conf_defaults(&c);
	int rc = load_text(&c, fits, strlen(fits), path, sizeof(path), err);
	ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
	ck_assert_uint_eq(c.segment.base, UINT64_C(0x7fffffef0000));
	static const char past[] = "[segment]\nsize = 1M\nbase = 0x7ffffff00000\n";
	ck_assert_int_eq(load_text(&c, past, strlen(past), path, sizeof(path), err), -EINVAL);
	snprintf(where, sizeof(where), "%s:3: segment.base: 0x7ffffff00000 + segment.size (1M) ends outside", path);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0, "got \"%s\"", err);
}
END_TEST

/* ---- parse_size ------------------------------------------------------- */

struct size_case {
	const char *s;
	int rc;
	uint64_t v;
};

static const struct size_case size_cases[] = {
	{ "0", 0, 0 },
	{ "1", 0, 1 },
	{ "4096", 0, 4096 },
	{ "1K", 0, 1024 },
	{ "1k", 0, 1024 },
	{ "64M", 0, UINT64_C(64) << 20 },
	{ "64m", 0, UINT64_C(64) << 20 },
	{ "2G", 0, UINT64_C(2) << 30 },
	{ "1T", 0, UINT64_C(1) << 40 },
	{ "1t", 0, UINT64_C(1) << 40 },
	{ "16KB", 0, 16384 },
	{ "16kb", 0, 16384 },
	{ "16KiB", 0, 16384 },
	{ "16kib", 0, 16384 },
	{ "3MiB", 0, UINT64_C(3) << 20 },
	{ "100B", 0, 100 },
	{ "007M", 0, UINT64_C(7) << 20 },
	{ "18446744073709551615", 0, UINT64_MAX },
	{ "16777215T", 0, UINT64_C(16777215) << 40 },
	{ "", -EINVAL, 0 },
	{ "K", -EINVAL, 0 },
	{ "M", -EINVAL, 0 },
	{ "-1", -EINVAL, 0 },
	{ "-1K", -EINVAL, 0 },
	{ "+1", -EINVAL, 0 },
	{ " 1", -EINVAL, 0 },
	{ "1 ", -EINVAL, 0 },
	{ "1 K", -EINVAL, 0 },
	{ "12Q", -EINVAL, 0 },
	{ "1KK", -EINVAL, 0 },
	{ "1KBB", -EINVAL, 0 },
	{ "1Ki", -EINVAL, 0 },
	{ "1iB", -EINVAL, 0 },
	{ "1P", -EINVAL, 0 },
	{ "0x10", -EINVAL, 0 },
	{ "1.5G", -EINVAL, 0 },
	{ "1e6", -EINVAL, 0 },
	{ "18446744073709551616", -ERANGE, 0 },
	{ "99999999999999999999999", -ERANGE, 0 },
	{ "16777216T", -ERANGE, 0 },
	{ "17179869184G", -ERANGE, 0 },
};

START_TEST(test_parse_size)
{
	const struct size_case *sc = &size_cases[_i];
	uint64_t v = 0xdeadbeef;
	int rc = shmmap__parse_size(sc->s, &v);
	ck_assert_msg(rc == sc->rc, "parse_size(\"%s\") = %d, want %d", sc->s, rc, sc->rc);
	if (rc == 0)
		ck_assert_msg(v == sc->v, "parse_size(\"%s\") -> %" PRIu64 ", want %" PRIu64, sc->s, v, sc->v);
	else
		ck_assert_msg(v == 0xdeadbeef, "parse_size(\"%s\") wrote its output on error", sc->s);
}
END_TEST

START_TEST(test_parse_size_null)
{
	uint64_t v;
	ck_assert_int_eq(shmmap__parse_size(NULL, &v), -EINVAL);
	ck_assert_int_eq(shmmap__parse_size("1", NULL), -EINVAL);
}
END_TEST

/* ---- $SHMMAP_SOCKET --------------------------------------------------- */

START_TEST(test_env_socket_defaults)
{
	struct shmmap_conf c;
	ck_assert_int_eq(setenv("SHMMAP_SOCKET", "/tmp/env.sock", 1), 0);
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.server.socket, "/tmp/env.sock");

	ck_assert_int_eq(setenv("SHMMAP_SOCKET", "", 1), 0);
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.server.socket, SHMMAP_DEFAULT_SOCKET);

	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.server.socket, SHMMAP_DEFAULT_SOCKET);
}
END_TEST

START_TEST(test_env_socket_overrides_file)
{
	struct shmmap_conf c;
	char path[4096], err[ERRLEN];
	data_path(path, sizeof(path), "conf/good-full.ini");

	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, sizeof(err)), 0);
	ck_assert_str_eq(c.server.socket, "/tmp/shmmap-test.sock");

	ck_assert_int_eq(setenv("SHMMAP_SOCKET", "/tmp/from-env.sock", 1), 0);
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, sizeof(err)), 0);
	ck_assert_str_eq(c.server.socket, "/tmp/from-env.sock");
	ck_assert_uint_eq(c.server.socket_mode, 0666); /* the rest still from the file */

	/* Set but empty: the file wins. */
	ck_assert_int_eq(setenv("SHMMAP_SOCKET", "", 1), 0);
	shmmap__conf_defaults(&c);
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, sizeof(err)), 0);
	ck_assert_str_eq(c.server.socket, "/tmp/shmmap-test.sock");
}
END_TEST

START_TEST(test_env_socket_too_long)
{
	struct shmmap_conf c, before;
	char path[4096], err[ERRLEN], longp[200];
	data_path(path, sizeof(path), "conf/good-full.ini");
	memset(longp, 'e', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	ck_assert_int_eq(setenv("SHMMAP_SOCKET", longp, 1), 0);
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.server.socket, SHMMAP_DEFAULT_SOCKET);
	before = c;
	ck_assert_int_eq(shmmap__conf_load(&c, path, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strncmp(err, "$SHMMAP_SOCKET: ", 16) == 0, "got \"%s\"", err);
	assert_conf_eq(&c, &before);
}
END_TEST

/* ---- reload: which keys need a restart -------------------------------- */

START_TEST(test_fixed_changes)
{
	struct shmmap_conf a, b;
	const char *names[8];
	unsetenv("SHMMAP_SOCKET");
	shmmap__conf_defaults(&a);
	b = a;
	ck_assert_uint_eq(shmmap__conf_fixed_changes(&a, &b, names, 8), 0);
	/* What SIGHUP applies is not reported. */
	b.server.allow_uids.n = 1;
	b.server.allow_uids.id[0] = 1000;
	b.server.readonly_gids.n = 2;
	b.server.log_level = LOG_DEBUG;
	ck_assert_uint_eq(shmmap__conf_fixed_changes(&a, &b, names, 8), 0);
	/* Everything else is, in the table's order. */
	b.segment.size *= 2;
	snprintf(b.server.socket, sizeof b.server.socket, "/tmp/other.sock");
	b.persistence.interval = 5;
	ck_assert_uint_eq(shmmap__conf_fixed_changes(&a, &b, names, 8), 3);
	ck_assert_str_eq(names[0], "segment.size");
	ck_assert_str_eq(names[1], "server.socket");
	ck_assert_str_eq(names[2], "persistence.interval");
	/* Counted even beyond max. */
	ck_assert_uint_eq(shmmap__conf_fixed_changes(&a, &b, names, 1), 3);
	ck_assert_str_eq(names[0], "segment.size");
}
END_TEST

/* ---- per-user defaults ------------------------------------------------ */

/* Bind a Unix socket at path (the directory exists); returns its fd. */
static int bind_at(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	ck_assert(strlen(path) < sizeof sa.sun_path);
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s: %s", path,
		      strerror(errno));
	return fd;
}

START_TEST(test_defaults_ordinary_user)
{
	if (geteuid() != 0) {
		TU_SKIP("needs root (seteuid)");
	}
	char xdg[] = "/tmp/check_conf-xdg-XXXXXX", dir[128], sock[160], buf[108];
	ck_assert_ptr_nonnull(mkdtemp(xdg));
	ck_assert_int_eq(chmod(xdg, 0755), 0);
	snprintf(dir, sizeof dir, "%s/shmmap", xdg);
	snprintf(sock, sizeof sock, "%s/shmmap/shmmap.sock", xdg);
	unsetenv("SHMMAP_SOCKET");
	ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", xdg, 1), 0);

	/* Root: the system-wide names, whatever $XDG_RUNTIME_DIR says. */
	struct shmmap_conf c;
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.segment.name, "/shmmap");
	ck_assert_str_eq(c.server.socket, SHMMAP_DEFAULT_SOCKET);

	ck_assert_int_eq(seteuid(65534), 0);
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.segment.name, "/shmmap-65534");
	ck_assert_str_eq(c.server.socket, sock);
	/* A client finds no coordinator of its own there: the system one. */
	ck_assert_int_eq(shmmap__default_socket(buf, sizeof buf, false), 0);
	ck_assert_str_eq(buf, SHMMAP_DEFAULT_SOCKET);
	/* Without $XDG_RUNTIME_DIR (or with a relative one) a coordinator has
	 * no default; a client still tries the system one. */
	unsetenv("XDG_RUNTIME_DIR");
	ck_assert_int_eq(shmmap__default_socket(buf, sizeof buf, true), -ENOENT);
	shmmap__conf_defaults(&c);
	ck_assert_str_eq(c.server.socket, "");
	ck_assert_int_eq(shmmap__default_socket(buf, sizeof buf, false), 0);
	ck_assert_str_eq(buf, SHMMAP_DEFAULT_SOCKET);
	ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", "relative/dir", 1), 0);
	ck_assert_int_eq(shmmap__default_socket(buf, sizeof buf, true), -ENOENT);
	/* Too long for sun_path. */
	char longx[120];
	memset(longx, 'x', sizeof longx - 1);
	longx[0] = '/';
	longx[sizeof longx - 1] = '\0';
	ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", longx, 1), 0);
	ck_assert_int_eq(shmmap__default_socket(buf, sizeof buf, true), -ENAMETOOLONG);
	ck_assert_int_eq(seteuid(0), 0);

	/* With the user's own coordinator listening, the client goes there. */
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	int fd = bind_at(sock);
	ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", xdg, 1), 0);
	ck_assert_int_eq(seteuid(65534), 0);
	ck_assert_int_eq(shmmap__default_socket(buf, sizeof buf, false), 0);
	ck_assert_str_eq(buf, sock);
	ck_assert_int_eq(seteuid(0), 0);
	close(fd);
	unlink(sock);
	rmdir(dir);
	rmdir(xdg);
}
END_TEST

static Suite *conf_suite(void)
{
	Suite *s = suite_create("conf");
	TCase *tc;

	tc = tcase_create("defaults");
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_shipped_ini);
	suite_add_tcase(s, tc);

	tc = tcase_create("good");
	tcase_add_test(tc, test_good_full);
	tcase_add_test(tc, test_good_partial);
	tcase_add_test(tc, test_good_style);
	tcase_add_test(tc, test_good_grow);
	tcase_add_test(tc, test_good_ids);
	tcase_add_test(tc, test_good_empty);
	tcase_add_test(tc, test_load_over_values);
	tcase_add_test(tc, test_crlf_bom_no_final_newline);
	suite_add_tcase(s, tc);

	tc = tcase_create("bad");
	tcase_add_loop_test(tc, test_bad_file, 0, (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
	tcase_add_test(tc, test_bad_exact_message);
	tcase_add_test(tc, test_bad_directory);
	tcase_add_test(tc, test_small_errbuf);
	tcase_add_test(tc, test_line_length_limit);
	tcase_add_test(tc, test_nul_byte);
	tcase_add_test(tc, test_first_error_wins);
	tcase_add_test(tc, test_cross_field_blame);
	tcase_add_test(tc, test_map_sections);
	suite_add_tcase(s, tc);

	tc = tcase_create("parse_size");
	tcase_add_loop_test(tc, test_parse_size, 0, (int)(sizeof(size_cases) / sizeof(size_cases[0])));
	tcase_add_test(tc, test_parse_size_null);
	suite_add_tcase(s, tc);

	tc = tcase_create("reload");
	tcase_add_test(tc, test_fixed_changes);
	suite_add_tcase(s, tc);

	tc = tcase_create("users");
	tcase_add_test(tc, test_defaults_ordinary_user);
	suite_add_tcase(s, tc);

	tc = tcase_create("env");
	tcase_add_test(tc, test_env_socket_defaults);
	tcase_add_test(tc, test_env_socket_overrides_file);
	tcase_add_test(tc, test_env_socket_too_long);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return tu_run_suite(conf_suite());
}
