/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_cli.c - shmmapctl end to end: every test starts its own shmmapd
 * (private config, socket and segment), drives the real build/shmmapctl
 * ($SHMMAPCTL) through tu_run, and checks exit codes and output.  Some
 * tests also attach from this process (linked with libshmmap.a) to write
 * through the API, or to damage the segment on purpose and see that
 * `shmmapctl check` notices.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "shmmap.h"
#include "testutil.h"

#define OUT_CAP 65536

static struct tu_coord co;
static char out[OUT_CAP], err[OUT_CAP];

static void setup(void)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
}

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

/* Run shmmapctl -s SOCK args... (NULL-terminated); output in out/err. */
static int ctl(const char *a0, ...)
{
	va_list ap;
	va_start(ap, a0);
	int rc = tu_vctl(co.sock, out, sizeof out, err, sizeof err, a0, ap);
	va_end(ap);
	return rc;
}

/* Run and require exit status want. */
#define CTL_EXPECT(want, ...)                                                              \
	do {                                                                               \
		int st_ = ctl(__VA_ARGS__, (const char *)NULL);                            \
		ck_assert_msg(st_ == (want), "shmmapctl exited %d, wanted %d\nstdout: %s\nstderr: %s", \
			      st_, (want), out, err);                                      \
	} while (0)

#define attach() tu_attach(co.sock)
#define open_map(sm, name) tu_open((sm), (name))

/* ---- a strict little JSON validator (RFC 8259 syntax) ---- */

static const char *js_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *js_value(const char *p, int depth);

static const char *js_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p != '"') {
		unsigned char ch = (unsigned char)*p;
		if (ch == '\0' || ch < 0x20)
			return NULL;
		if (ch == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i])
						return NULL;
				p += 5;
				continue;
			}
			if (!*p || !strchr("\"\\/bfnrt", *p))
				return NULL;
		}
		p++;
	}
	return p + 1;
}

static const char *js_number(const char *p)
{
	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return NULL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (*p < '0' || *p > '9')
			return NULL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	return p;
}

static const char *js_value(const char *p, int depth)
{
	if (depth > 32)
		return NULL;
	p = js_ws(p);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		bool obj = *p == '{';
		p = js_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (obj) {
				p = js_string(js_ws(p));
				if (!p)
					return NULL;
				p = js_ws(p);
				if (*p++ != ':')
					return NULL;
			}
			p = js_value(p, depth + 1);
			if (!p)
				return NULL;
			p = js_ws(p);
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	}
	if (*p == '"')
		return js_string(p);
	if (strncmp(p, "true", 4) == 0)
		return p + 4;
	if (strncmp(p, "false", 5) == 0)
		return p + 5;
	if (strncmp(p, "null", 4) == 0)
		return p + 4;
	return js_number(p);
}

/* One JSON value, nothing after it but whitespace. */
static bool json_valid(const char *s)
{
	const char *p = js_value(s, 0);
	return p && *js_ws(p) == '\0';
}

#define ASSERT_JSON(first_char)                                                            \
	do {                                                                               \
		ck_assert_msg(out[0] == (first_char), "JSON should start with %c: %s",    \
			      (first_char), out);                                          \
		ck_assert_msg(json_valid(out), "invalid JSON: %s", out);                   \
	} while (0)

#define ASSERT_HAS(needle) ck_assert_msg(strstr(out, (needle)) != NULL, "no %s in: %s", (needle), out)

/* ---- tests ---- */

START_TEST(put_then_get)
{
	CTL_EXPECT(0, "put", "m", "k1", "hello world");
	ck_assert_str_eq(out, "");
	CTL_EXPECT(0, "get", "m", "k1");
	ck_assert_str_eq(out, "hello world\n");
	/* Replace, and an empty value. */
	CTL_EXPECT(0, "put", "m", "k1", "second");
	CTL_EXPECT(0, "get", "m", "k1");
	ck_assert_str_eq(out, "second\n");
	CTL_EXPECT(0, "put", "m", "empty", "");
	CTL_EXPECT(0, "get", "m", "empty");
	ck_assert_str_eq(out, "\n");
	/* A value that starts with '-' goes after "--". */
	CTL_EXPECT(0, "put", "m", "neg", "--", "-42");
	CTL_EXPECT(0, "get", "m", "neg");
	ck_assert_str_eq(out, "-42\n");
}
END_TEST

START_TEST(get_missing)
{
	CTL_EXPECT(0, "put", "m", "present", "v");
	CTL_EXPECT(1, "get", "m", "absent");
	ck_assert_str_eq(out, "");
	ck_assert_msg(strstr(err, "get: absent: no such key"), "stderr: %s", err);
	CTL_EXPECT(1, "get", "nomap", "k");
	ck_assert_msg(strstr(err, "no such map"), "stderr: %s", err);
	CTL_EXPECT(1, "del", "nomap", "k");
	CTL_EXPECT(1, "keys", "nomap");
	CTL_EXPECT(1, "stats", "nomap");
	/* Asking must not have created it. */
	CTL_EXPECT(0, "maps");
	ck_assert_msg(strstr(out, "nomap") == NULL, "maps: %s", out);
}
END_TEST

START_TEST(del_then_get)
{
	CTL_EXPECT(0, "put", "m", "k", "v");
	CTL_EXPECT(0, "get", "m", "k");
	CTL_EXPECT(0, "del", "m", "k");
	CTL_EXPECT(1, "get", "m", "k");
	CTL_EXPECT(1, "del", "m", "k");
	ck_assert_msg(strstr(err, "no such key"), "stderr: %s", err);
}
END_TEST

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Split out into sorted lines; returns the count. */
static int sorted_lines(char *buf, char **lines, int max)
{
	int n = 0;
	for (char *save, *l = strtok_r(buf, "\n", &save); l && n < max;
	     l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	qsort(lines, (size_t)n, sizeof *lines, cmp_str);
	return n;
}

START_TEST(keys_lists_exactly)
{
	const char *keys[] = {"alpha", "beta", "gamma", "with space", "a\x01z", "back\\slash"};
	const char *shown[] = {"alpha", "beta", "gamma", "with space", "a\\x01z", "back\\\\slash"};
	size_t nk = sizeof keys / sizeof keys[0];
	for (size_t i = 0; i < nk; i++)
		CTL_EXPECT(0, "put", "km", keys[i], "v");
	CTL_EXPECT(0, "put", "other", "not-this-one", "v");
	CTL_EXPECT(0, "del", "km", "beta");
	CTL_EXPECT(0, "keys", "km");
	char *lines[16];
	int n = sorted_lines(out, lines, 16);
	const char *want[8];
	size_t nw = 0;
	for (size_t i = 0; i < nk; i++)
		if (strcmp(keys[i], "beta") != 0)
			want[nw++] = shown[i];
	qsort(want, nw, sizeof *want, cmp_str);
	ck_assert_int_eq(n, (int)nw);
	for (size_t i = 0; i < nw; i++)
		ck_assert_str_eq(lines[i], want[i]);

	CTL_EXPECT(0, "keys", "km", "--json");
	ASSERT_JSON('[');
	ASSERT_HAS("\"alpha\"");
	ASSERT_HAS("\"a\\u0001z\"");
	ASSERT_HAS("\"back\\\\slash\"");
	ck_assert_msg(strstr(out, "\"beta\"") == NULL, "deleted key listed: %s", out);

	/* An empty map lists nothing. */
	CTL_EXPECT(0, "del", "other", "not-this-one");
	CTL_EXPECT(0, "keys", "other");
	ck_assert_str_eq(out, "");
	CTL_EXPECT(0, "--json", "keys", "other");
	ck_assert_str_eq(out, "[]\n");
}
END_TEST

START_TEST(json_outputs)
{
	CTL_EXPECT(0, "put", "jm", "k", "quote\" back\\ tab\t nl\n");
	CTL_EXPECT(0, "--json", "status");
	ASSERT_JSON('{');
	ASSERT_HAS("\"size\":8388608");
	char lv[32];
	snprintf(lv, sizeof lv, "\"layout_version\":%u", SEG_LAYOUT_VERSION);
	ASSERT_HAS(lv);
	ASSERT_HAS("\"coordinator\":{\"pid\":");
	ASSERT_HAS("\"maps\":1");
	CTL_EXPECT(0, "--json", "maps");
	ASSERT_JSON('[');
	ASSERT_HAS("\"name\":\"jm\"");
	ASSERT_HAS("\"entries\":1");
	CTL_EXPECT(0, "--json", "stats");
	ASSERT_JSON('{');
	ASSERT_HAS("\"maps\":[");
	ASSERT_HAS("\"segment\":{");
	CTL_EXPECT(0, "stats", "jm", "--json");
	ASSERT_JSON('{');
	ASSERT_HAS("\"name\":\"jm\"");
	CTL_EXPECT(0, "--json", "clients");
	ASSERT_JSON('[');
	ASSERT_HAS("\"self\":true");
	CTL_EXPECT(0, "--json", "check");
	ASSERT_JSON('{');
	ASSERT_HAS("\"ok\":true");
	ASSERT_HAS("\"errors\":0");
	CTL_EXPECT(0, "--json", "get", "jm", "k");
	ASSERT_JSON('{');
	ASSERT_HAS("\"key\":\"k\"");
	ASSERT_HAS("\"value\":\"quote\\\" back\\\\ tab\\t nl\\n\"");
	CTL_EXPECT(0, "--json", "keys", "jm");
	ASSERT_JSON('[');
	/* UTF-8 text appears as itself (café, not caf\u00c3\u00a9); a byte
	 * that is not UTF-8 is \udcNN (surrogateescape), control bytes \u00NN,
	 * and the same in every command. */
	CTL_EXPECT(0, "put", "u8", "caf\xc3\xa9", "na\xc3\xafve \xe2\x82\xac \xf0\x9f\x98\x80");
	CTL_EXPECT(0, "put", "u8", "bad\xff\xc3", "x\xed\xa0\x80y\x01");
	CTL_EXPECT(0, "--json", "get", "u8", "caf\xc3\xa9");
	ASSERT_JSON('{');
	ASSERT_HAS("\"key\":\"caf\xc3\xa9\"");
	ASSERT_HAS("\"value\":\"na\xc3\xafve \xe2\x82\xac \xf0\x9f\x98\x80\"");
	CTL_EXPECT(0, "--json", "get", "u8", "bad\xff\xc3");
	ASSERT_JSON('{');
	ASSERT_HAS("\"key\":\"bad\\udcff\\udcc3\"");
	/* An encoded surrogate (ED A0 80) is not UTF-8: three escaped bytes. */
	ASSERT_HAS("\"value\":\"x\\udced\\udca0\\udc80y\\u0001\"");
	CTL_EXPECT(0, "--json", "keys", "u8");
	ASSERT_JSON('[');
	ASSERT_HAS("\"caf\xc3\xa9\"");
	ASSERT_HAS("\"bad\\udcff\\udcc3\"");
	CTL_EXPECT(0, "--json", "dump", "u8");
	ASSERT_HAS("\"caf\xc3\xa9\"");
	ASSERT_HAS("\"bad\\udcff\\udcc3\"");
	/* Text output of the same commands works too. */
	CTL_EXPECT(0, "status");
	ASSERT_HAS("layout version");
	CTL_EXPECT(0, "stats");
	ASSERT_HAS("jm");
}
END_TEST

START_TEST(stats_count_ops)
{
	CTL_EXPECT(0, "put", "s", "a", "1");
	CTL_EXPECT(0, "put", "s", "b", "2");
	CTL_EXPECT(0, "put", "s", "c", "3");
	CTL_EXPECT(0, "get", "s", "a");
	CTL_EXPECT(0, "get", "s", "b");
	CTL_EXPECT(1, "get", "s", "zz");
	CTL_EXPECT(0, "stats", "s", "--json");
	ASSERT_JSON('{');
	ASSERT_HAS("\"entries\":3");
	ASSERT_HAS("\"bytes\":6");
	ASSERT_HAS("\"puts\":3");
	ASSERT_HAS("\"hits\":2");
	ASSERT_HAS("\"misses\":1");
	ASSERT_HAS("\"dels\":0");
	CTL_EXPECT(0, "del", "s", "c");
	CTL_EXPECT(0, "stats", "s");
	ck_assert_msg(strstr(out, "dels        1") && strstr(out, "entries     2"), "stats: %s",
		      out);
}
END_TEST

/* End column of the k-th blank-separated field of the line at p. */
static long field_end(const char *p, int k)
{
	const char *q = p;
	for (int i = 0; i <= k; i++) {
		while (*q == ' ')
			q++;
		if (*q == '\n' || !*q)
			return -1;
		while (*q && *q != ' ' && *q != '\n')
			q++;
	}
	return q - p;
}

/* Every line of out from its header to the first empty line has its k-th
 * field end where the header's does (names here have no blanks). */
static void expect_aligned(int k, int lines)
{
	long want = field_end(out, k);
	int n = 0;
	for (const char *p = out; *p && *p != '\n'; n++) {
		long e = field_end(p, k);
		ck_assert_msg(e == want, "column %d of line %d ends at %ld, the header's at %ld:\n%s", k,
			      n, e, want, out);
		p = strchr(p, '\n');
		if (!p)
			break;
		p++;
	}
	ck_assert_int_eq(n, lines + 1);
}

/* Names that need escaping (\xNN, a doubled backslash) are padded by
 * their printed width, as top pads them. */
START_TEST(maps_align_escaped_names)
{
	CTL_EXPECT(0, "put", "plain", "k", "v");
	CTL_EXPECT(0, "put", "a\xff\xfe", "k", "v");
	CTL_EXPECT(0, "put", "back\\slash", "k", "v");
	CTL_EXPECT(0, "maps");
	ASSERT_HAS("a\\xff\\xfe ");
	expect_aligned(1, 3);
	CTL_EXPECT(0, "stats");
	expect_aligned(2, 3);
	/* A name wider than the column widens it (it pushed its row). */
	CTL_EXPECT(0, "put", "a-map-name-much-wider-than-the-twenty-four-columns", "k", "v");
	CTL_EXPECT(0, "maps");
	expect_aligned(1, 4);
}
END_TEST

START_TEST(usage_errors)
{
	CTL_EXPECT(2, NULL);
	ck_assert_msg(strstr(err, "usage:"), "stderr: %s", err);
	CTL_EXPECT(2, "frobnicate");
	ck_assert_msg(strstr(err, "usage:"), "stderr: %s", err);
	CTL_EXPECT(2, "put", "m", "k");
	CTL_EXPECT(2, "put", "m");
	CTL_EXPECT(2, "get", "m");
	/* The reason and the command's own usage, not the whole help that
	 * buried it. */
	ck_assert_msg(strstr(err, "get: wrong number of arguments") && strstr(err, "\n  get MAP KEY ") &&
			      !strstr(err, "commands:") && !strstr(err, "  put MAP"),
		      "stderr: %s", err);
	CTL_EXPECT(2, "get", "m", "k", "extra");
	CTL_EXPECT(2, "keys");
	CTL_EXPECT(2, "status", "extra");
	CTL_EXPECT(2, "--no-such-option", "status");
	CTL_EXPECT(2, "put", "m", "k", "v", "--ttl", "soon");
	ck_assert_msg(strstr(err, "--ttl: expects whole seconds") && !strstr(err, "commands:"),
		      "stderr: %s", err);
	CTL_EXPECT(2, "get", "m", "k", "--ttl", "5");
	/* None of these reached the segment. */
	CTL_EXPECT(0, "maps");
	ck_assert_msg(strstr(out, "\nm ") == NULL, "maps: %s", out);
}
END_TEST

START_TEST(check_after_burst)
{
	shmmap *sm = attach();
	shmmap_map a = open_map(sm, "burst"), b = open_map(sm, "other");
	static char val[130000];
	for (size_t i = 0; i < sizeof val; i++)
		val[i] = (char)('a' + i % 26);
	char k[48];
	int rc;
	/* Small and medium values (slab classes), a few large ones (page runs). */
	for (int i = 0; i < 1200; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		size_t n = (size_t)(i * 97) % 1500;
		rc = shmmap_put(sm, i % 4 ? a : b, k, strlen(k), val, n, 0, 0);
		ck_assert_msg(rc == 0, "put %s: %s", k, shmmap_strerror(rc));
	}
	for (int i = 0; i < 12; i++) {
		snprintf(k, sizeof k, "big-%d", i);
		rc = shmmap_put(sm, a, k, strlen(k), val, 30000 + (size_t)i * 8000, 0, 0);
		ck_assert_msg(rc == 0, "put %s: %s", k, shmmap_strerror(rc));
	}
	/* Deletes, overwrites with other sizes, increments. */
	for (int i = 0; i < 1200; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		shmmap_map m = i % 4 ? a : b;
		if (i % 3 == 0) {
			rc = shmmap_del(sm, m, k, strlen(k));
			ck_assert_msg(rc == 0, "del %s: %s", k, shmmap_strerror(rc));
		} else if (i % 5 == 0) {
			rc = shmmap_put(sm, m, k, strlen(k), val, (size_t)(i * 53) % 3000, 0, 0);
			ck_assert_msg(rc == 0, "put %s: %s", k, shmmap_strerror(rc));
		}
	}
	for (int i = 0; i < 12; i += 2) {
		snprintf(k, sizeof k, "big-%d", i);
		ck_assert_int_eq(shmmap_del(sm, a, k, strlen(k)), 0);
	}
	for (int i = 0; i < 50; i++)
		ck_assert_int_eq(shmmap_incr(sm, b, "ctr", 3, 1, NULL), 0);

	CTL_EXPECT(0, "check");
	ASSERT_HAS("errors       0");
	ASSERT_HAS("leaked       0");
	CTL_EXPECT(0, "--json", "check");
	ASSERT_JSON('{');
	ASSERT_HAS("\"maps\":2");
	ASSERT_HAS("\"errors\":0");
	/* 1200 - 400 deleted + 6 big left + ctr */
	ASSERT_HAS("\"entries\":807");
	CTL_EXPECT(0, "get", "other", "ctr");
	ck_assert_str_eq(out, "50\n");
	shmmap_detach(sm);
	CTL_EXPECT(0, "check");
}
END_TEST

START_TEST(check_finds_damage)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "dmg");
	for (int i = 0; i < 100; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, strlen(k), "value", 5, 0, 0), 0);
	}
	CTL_EXPECT(0, "check");

	/* A block allocated and never linked: a leak. */
	struct lock_ctx lk = {.s = &sm->seg, .g = &sm->geom, .owner = sm->slot + 1};
	_Atomic uint64_t rec = 0;
	ck_assert_int_eq(shmmap__alloc(&sm->seg, &sm->geom, &lk, 200, &rec), 0);
	uint64_t off = atomic_load(&rec);
	ck_assert(off != 0);
	CTL_EXPECT(3, "--json", "check");
	ASSERT_JSON('{');
	ASSERT_HAS("\"ok\":false");
	ASSERT_HAS("\"leaked\":1");
	shmmap__free(&sm->seg, &sm->geom, &lk, off, NULL);
	CTL_EXPECT(0, "check");

	/* Stripe totals that disagree with the chains. */
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(sm, m, &v), 0);
	v->stripes[0].entries += 1;
	CTL_EXPECT(3, "check");
	ASSERT_HAS("totals");
	v->stripes[0].entries -= 1;

	/* An entry moved to the head of the wrong bucket, then moved back. */
	uint32_t b = 0;
	while (atomic_load(&v->buckets[b]) == 0)
		b++;
	uint32_t other = (b + 1) & (v->nbuckets - 1);
	uint64_t head = atomic_load(&v->buckets[b]);
	struct seg_entry *e = seg_ptr(&sm->seg, head);
	uint64_t next = atomic_load(&e->next);
	atomic_store(&v->buckets[b], next);
	atomic_store(&e->next, atomic_load(&v->buckets[other]));
	atomic_store(&v->buckets[other], head);
	CTL_EXPECT(3, "check");
	ASSERT_HAS("hashes to bucket");
	atomic_store(&v->buckets[other], atomic_load(&e->next));
	atomic_store(&e->next, next);
	atomic_store(&v->buckets[b], head);
	CTL_EXPECT(0, "check");

	/* A chain that loops back on itself. */
	atomic_store(&e->next, head);
	CTL_EXPECT(3, "check");
	ASSERT_HAS("has a cycle");
	atomic_store(&e->next, next);
	CTL_EXPECT(0, "check");
	shmmap_detach(sm);
}
END_TEST

/* The entry of key k in the view of map m (walking its chain), or 0. */
static uint64_t entry_of(shmmap *sm, shmmap_map m, const char *k)
{
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(sm, m, &v), 0);
	size_t kl = strlen(k);
	for (uint32_t b = 0; b < v->nbuckets; b++) {
		for (uint64_t off = atomic_load(&v->buckets[b]); off;) {
			const struct seg_entry *e = shmmap__entry_at(&sm->seg, v, off);
			ck_assert_ptr_nonnull(e);
			uint32_t vf = ent_vlenf(e);
			if (e->klen == kl && memcmp(ent_key(e, vf), k, kl) == 0)
				return off;
			off = atomic_load(&((struct seg_entry *)e)->next);
		}
	}
	return 0;
}

/* Entries with and without an expiry slot, as check and stats see them;
 * then the expiry flag scribbled (a broken or hostile writer): set on an
 * entry whose block has no room for the slot, cleared on one that has it.
 * check reports both, and gets stay within the segment. */
START_TEST(check_and_stats_see_expiry_slots)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "ex");
	char v[101], buf[256];
	size_t n;
	memset(v, 'x', sizeof v);
	/* 24 + 11 + 101 = 136 B: exactly a 136-byte block, no slack. */
	ck_assert_int_eq(shmmap_put(sm, m, "key:0000001", 11, v, sizeof v, 0, 0), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "key:0000002", 11, v, sizeof v, 3600, 0), 0);
	CTL_EXPECT(0, "check");
	CTL_EXPECT(0, "stats", "ex");
	ASSERT_HAS("\nbytes       224\n");
	ASSERT_HAS("header 28.0 B"); /* (24 + 32) / 2 */

	uint64_t o1 = entry_of(sm, m, "key:0000001"), o2 = entry_of(sm, m, "key:0000002");
	ck_assert(o1 && o2);
	ck_assert_uint_eq(shmmap__block_size(&sm->seg, &sm->geom, o1), 136);
	struct seg_entry *e1 = seg_ptr(&sm->seg, o1), *e2 = seg_ptr(&sm->seg, o2);
	uint32_t f1 = ent_vlenf(e1), f2 = ent_vlenf(e2);
	ck_assert(!ent_has_expiry(f1) && ent_has_expiry(f2));

	/* Set where the block has no room: 144 B would not fit in 136. */
	__atomic_store_n(&e1->vlenf, f1 | ENT_F_EXPIRE, __ATOMIC_RELAXED);
	CTL_EXPECT(3, "check");
	ASSERT_HAS("needs 144 B, its block has 136");
	int rc = shmmap_get(sm, m, "key:0000001", 11, buf, sizeof buf, &n);
	ck_assert_msg(rc == -ENOENT || rc == -SHMMAP_ECORRUPT, "get: %d", rc);
	ck_assert_int_eq(shmmap_get(sm, m, "key:0000002", 11, buf, sizeof buf, &n), 0);
	ck_assert_uint_eq(n, sizeof v);
	__atomic_store_n(&e1->vlenf, f1, __ATOMIC_RELAXED);
	CTL_EXPECT(0, "check");

	/* Cleared where there is a slot: the expiry read as the key. */
	__atomic_store_n(&e2->vlenf, f2 & ~ENT_F_EXPIRE, __ATOMIC_RELAXED);
	CTL_EXPECT(3, "check");
	ASSERT_HAS("expiry slots");
	rc = shmmap_get(sm, m, "key:0000002", 11, buf, sizeof buf, &n);
	ck_assert_msg(rc == -ENOENT || rc == -SHMMAP_ECORRUPT, "get: %d", rc);
	__atomic_store_n(&e2->vlenf, f2, __ATOMIC_RELAXED);
	CTL_EXPECT(0, "check");
	ck_assert_int_eq(shmmap_get(sm, m, "key:0000001", 11, buf, sizeof buf, &n), 0);
	ck_assert_int_eq(shmmap_get(sm, m, "key:0000002", 11, buf, sizeof buf, &n), 0);
	shmmap_detach(sm);
}
END_TEST

/* Slabs of several pages (a class above 8 KiB: 33 KiB values take blocks
 * of a slab of 8 pages, its first page the head, the others PAGE_SPAN
 * naming how far back it is): a segment of them checks clean, stats shows
 * the slab's pages; a SPAN page with a scribbled run, and one standing
 * after a free page, are reported. */
START_TEST(check_sees_span_slabs)
{
	shmmap *sm = attach();
	shmmap_map m = open_map(sm, "span");
	static char v[33 * 1024];
	memset(v, 's', sizeof v);
	for (int i = 0; i < 20; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, strlen(k), v, sizeof v, 0, 0), 0);
	}
	CTL_EXPECT(0, "check");
	ASSERT_HAS("errors       0");
	ASSERT_HAS("leaked       0");
	CTL_EXPECT(0, "--json", "stats");
	ASSERT_HAS("\"slab_pages\":8,");

	/* The slab of k3: a head whose class has more than two pages. */
	const struct seg_geom *g = &sm->geom;
	uint64_t off = entry_of(sm, m, "k3");
	ck_assert(off >= g->heap_off);
	uint32_t head;
	ck_assert(shmmap__slab_head(&sm->seg, g, (uint32_t)((off - g->heap_off) / SEG_PAGE),
				    &head));
	struct seg_page *hp = seg_page(&sm->seg, g, head);
	ck_assert_uint_eq(hp->kind, PAGE_SLAB);
	ck_assert_uint_eq(shmmap__class_pages(hp->cls), 8);
	struct seg_page *sp = seg_page(&sm->seg, g, head + 2);
	ck_assert_uint_eq(sp->kind, PAGE_SPAN);
	ck_assert_uint_eq(sp->run, 2);

	/* Page 2 of the slab says its head is 1 page back. */
	sp->run = 1;
	CTL_EXPECT(3, "check");
	ASSERT_HAS("but its run is 1");
	sp->run = 2;
	CTL_EXPECT(0, "check");

	/* A free page, then a SPAN page naming it as its head. */
	uint32_t f = 0;
	while (f + 1 < g->npages && (seg_page(&sm->seg, g, f)->kind != PAGE_FREE ||
				     seg_page(&sm->seg, g, f + 1)->kind != PAGE_FREE))
		f++;
	ck_assert_uint_lt(f + 1, g->npages);
	struct seg_page *fp = seg_page(&sm->seg, g, f + 1);
	fp->run = 1;
	fp->kind = PAGE_SPAN;
	CTL_EXPECT(3, "check");
	ASSERT_HAS("a slab page outside any slab");
	fp->kind = PAGE_FREE;
	fp->run = 0;
	CTL_EXPECT(0, "check");
	shmmap_detach(sm);
}
END_TEST

/* ---- check beside live writers ---- */

static _Atomic int *stop_flag; /* MAP_SHARED: the parent tells writers to stop */

/* A child: attach on its own and write until told to stop.  Exit code only
 * (Check's asserts do not cross tu_fork()). */
static int writer(int id)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(co.sock, &sm) || shmmap_open(sm, "busy", SHMMAP_CREATE, &m))
		return 10;
	static char val[70000];
	memset(val, 'v', sizeof val);
	unsigned seed = (unsigned)id * 7919u + 1;
	while (!atomic_load(stop_flag)) {
		char k[32];
		seed = seed * 1103515245u + 12345u;
		unsigned r = seed >> 8;
		snprintf(k, sizeof k, "k%u", r % 500);
		size_t n = r % 97 == 0 ? 40000 + r % 20000 : r % 700;
		int rc;
		switch (r % 4) {
		case 0:
		case 1: rc = shmmap_put(sm, m, k, strlen(k), val, n, 0, 0); break;
		case 2: rc = shmmap_del(sm, m, k, strlen(k)); break;
		default: rc = shmmap_incr(sm, m, "ctr", 3, 1, NULL); break;
		}
		if (rc < 0 && rc != -ENOENT)
			return 11;
	}
	shmmap_detach(sm);
	return 0;
}

static bool busy_map_filled(void *arg)
{
	(void)arg;
	return ctl("stats", "busy", "--json", (const char *)NULL) == 0 &&
	       strstr(out, "\"entries\":0,") == NULL && strstr(out, "\"puts\":") != NULL &&
	       strstr(out, "\"puts\":0,") == NULL;
}

START_TEST(check_while_writing)
{
	stop_flag = mmap(NULL, sizeof *stop_flag, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(stop_flag != MAP_FAILED);
	atomic_store(stop_flag, 0);
	pid_t pids[2];
	for (int i = 0; i < 2; i++) {
		pids[i] = tu_fork();
		ck_assert_int_ge(pids[i], 0);
		if (pids[i] == 0)
			_exit(writer(i));
	}
	bool filled = tu_wait(busy_map_filled, NULL, 10000);
	/* Writes in flight must not be taken for damage. */
	int bad = 0;
	for (int i = 0; filled && i < 5; i++)
		if (ctl("check", (const char *)NULL) != 0)
			bad++;
	char last[OUT_CAP];
	memcpy(last, out, sizeof last);
	atomic_store(stop_flag, 1);
	for (int i = 0; i < 2; i++) {
		int st = tu_waitpid(pids[i], 10000);
		ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
			      "writer %d failed: status %#x", i, st);
	}
	munmap(stop_flag, sizeof *stop_flag);
	ck_assert_msg(filled, "the writers never got going: %s %s", out, err);
	ck_assert_msg(bad == 0, "%d of 5 checks beside writers failed; last:\n%s", bad, last);
	CTL_EXPECT(0, "check");
	ASSERT_HAS("leaked       0");
}
END_TEST

static bool shows_pid(void *arg)
{
	int pid = *(int *)arg;
	if (ctl("--json", "clients", (const char *)NULL) != 0)
		return false;
	char needle[32];
	snprintf(needle, sizeof needle, "\"pid\":%d,", pid);
	return strstr(out, needle) != NULL;
}

static bool not_shows_pid(void *arg)
{
	return !shows_pid(arg);
}

START_TEST(clients_shows_self)
{
	shmmap *sm = attach();
	int pid = (int)getpid();
	char needle[32];
	CTL_EXPECT(0, "clients");
	snprintf(needle, sizeof needle, " %d ", pid);
	ASSERT_HAS(needle);
	ck_assert(shows_pid(&pid));
	ASSERT_JSON('[');
	shmmap_detach(sm);
	/* The coordinator frees the slot once it sees the connection close. */
	ck_assert_msg(tu_wait(not_shows_pid, &pid, 5000), "slot of pid %d not freed: %s", pid,
		      out);
}
END_TEST

static bool key_gone(void *arg)
{
	(void)arg;
	return ctl("get", "t", "short", (const char *)NULL) == 1;
}

START_TEST(ttl_expires)
{
	CTL_EXPECT(0, "put", "t", "short", "lived", "--ttl", "1");
	CTL_EXPECT(0, "get", "t", "short");
	ck_assert_str_eq(out, "lived\n");
	/* Options before the command work as well. */
	CTL_EXPECT(0, "--ttl", "0", "put", "t", "forever", "v");
	ck_assert_msg(tu_wait(key_gone, NULL, 5000), "key did not expire: %s %s", out, err);
	CTL_EXPECT(0, "get", "t", "forever");
	CTL_EXPECT(0, "keys", "t");
	ck_assert_str_eq(out, "forever\n");
	CTL_EXPECT(0, "check");
}
END_TEST

/* Slots in use as `clients` lists them (one line each, after the header). */
static int clients_listed(void)
{
	CTL_EXPECT(0, "clients");
	int n = -1; /* the header line */
	for (const char *p = out; *p; p++)
		n += *p == '\n';
	return n;
}

/* What `status` says is attached ("clients         N attached"). */
static int clients_in_status(void)
{
	CTL_EXPECT(0, "status");
	const char *p = strstr(out, "\nclients ");
	ck_assert_ptr_nonnull(p);
	return atoi(p + strlen("\nclients "));
}

/* status and clients count the same slots, also after a restart (when the
 * surviving clients' slots were adopted and are not resumed yet). */
START_TEST(status_counts_like_clients)
{
	shmmap *a = tu_attach(co.sock), *b = tu_attach(co.sock);
	CK_EQ(clients_in_status(), clients_listed());
	CK_EQ(clients_in_status(), 3); /* a, b and shmmapctl itself */
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	CK_EQ(clients_in_status(), clients_listed());
	CK_EQ(clients_in_status(), 3);
	shmmap_detach(a);
	shmmap_detach(b);
}
END_TEST

/* One slot is kept for admin tools: with every other slot taken, a worker
 * is refused (and told why) but shmmapctl still gets in. */
START_TEST(admin_slot_kept)
{
	tu_coord_cleanup(&co);
	ck_assert_int_eq(tu_coord_start(&co, "8M", "[segment]\nmax_clients = 3\n"), 0);
	shmmap *a = tu_attach(co.sock), *b = tu_attach(co.sock), *c = NULL;
	CK_EQ(shmmap_attach(co.sock, &c), -EAGAIN);
	CK_MSG(strstr(shmmap_errdetail(), "kept for admin") != NULL, "detail: %s",
	       shmmap_errdetail());
	CTL_EXPECT(0, "status");
	CTL_EXPECT(0, "clients");
	shmmap_detach(a);
	shmmap_detach(b);
}
END_TEST

/* The VmFlags line of this process's mapping of the test's segment. */
static bool seg_vmflags(char *flags, size_t cap)
{
	char want[96], line[512];
	snprintf(want, sizeof want, " /dev/shm%s\n", co.shm);
	FILE *f = fopen("/proc/self/smaps", "r");
	ck_assert_ptr_nonnull(f);
	bool in = false, found = false;
	while (fgets(line, sizeof line, f)) {
		size_t n = strlen(line), w = strlen(want);
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			in = n >= w && strcmp(line + n - w, want) == 0;
		} else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			size_t k = strlen(line + 8) < cap ? strlen(line + 8) : cap - 1;
			memcpy(flags, line + 8, k);
			flags[k] = '\0';
			found = true;
		}
	}
	fclose(f);
	return found;
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1 */
#endif
#define HUGE_2M (UINT64_C(2) << 20)

/* Whether this kernel collapses shared memory into 2 MiB pages on
 * MADV_COLLAPSE (Linux 6.1+, shmem_enabled not deny, a 2 MiB block free):
 * 4 MiB of a private shm object populated through a 2 MiB-aligned
 * mapping, then asked. */
static bool kernel_collapses_shmem(void)
{
	char name[64];
	snprintf(name, sizeof name, "/shmmap-test-%d-probe", (int)getpid());
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CK_MSG(fd >= 0, "shm_open %s: %s", name, strerror(errno));
	shm_unlink(name);
	size_t len = 2 * HUGE_2M;
	CK_EQ(ftruncate(fd, (off_t)len), 0);
	unsigned char *r = mmap(NULL, len + HUGE_2M, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CK(r != MAP_FAILED);
	unsigned char *p = (unsigned char *)(((uintptr_t)r + HUGE_2M - 1) & ~(HUGE_2M - 1));
	CK(mmap(p, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == p);
	memset(p, 1, len);
	bool yes = madvise(p, len, MADV_COLLAPSE) == 0;
	munmap(r, len + HUGE_2M);
	close(fd);
	return yes;
}

/* Whether /dev/shm gives 2 MiB pages unasked (shmem_enabled = force, or
 * mounted with huge=always or huge=within_size). */
static bool shm_huge_unasked(void)
{
	char line[1024] = "";
	bool yes = false;
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
	if (f) {
		yes = fgets(line, sizeof line, f) && strstr(line, "[force]");
		fclose(f);
	}
	f = fopen("/proc/mounts", "r");
	while (f && fgets(line, sizeof line, f))
		if (strstr(line, " /dev/shm ") &&
		    (strstr(line, "huge=always") || strstr(line, "huge=within_size")))
			yes = true;
	if (f)
		fclose(f);
	return yes;
}

/* Bytes of this process's mapping of sm's segment mapped by 2 MiB page
 * table entries (ShmemPmdMapped, or FilePmdMapped as some kernels say it),
 * after a touch of every 2 MiB of what it may access. */
static long long seg_pmd_bytes(shmmap *sm)
{
	CK_EQ(shmmap__seg_sync(&sm->seg), 0);
	const volatile unsigned char *b = sm->seg.base;
	size_t len = atomic_load(&sm->seg.len);
	for (size_t off = 0; off < len; off += HUGE_2M)
		(void)b[off];
	FILE *f = fopen("/proc/self/smaps", "r");
	CK(f != NULL);
	char line[512];
	uintptr_t at = (uintptr_t)sm->seg.base;
	bool in = false;
	long long kb = 0, v;
	while (fgets(line, sizeof line, f)) {
		uintptr_t lo, hi;
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &lo, &hi) == 2)
			in = lo >= at && lo - at < sm->seg.reserved;
		else if (in && (sscanf(line, "ShmemPmdMapped: %lld kB", &v) == 1 ||
				sscanf(line, "FilePmdMapped: %lld kB", &v) == 1))
			kb += v;
	}
	fclose(f);
	return kb * 1024;
}

/* status --json's huge_pages: advised (out) and bytes (returned). */
static long long status_huge(bool *advised)
{
	CTL_EXPECT(0, "--json", "status");
	const char *hp = strstr(out, "\"huge_pages\":{\"advised\":");
	CK_MSG(hp != NULL, "no huge_pages in %s", out);
	hp += strlen("\"huge_pages\":{\"advised\":");
	CK_MSG(strncmp(hp, "true", 4) == 0 || strncmp(hp, "false", 5) == 0, "%s", out);
	*advised = strncmp(hp, "true", 4) == 0;
	const char *b = strstr(hp, "\"bytes\":");
	CK_MSG(b != NULL, "%s", out);
	return strtoll(b + 8, NULL, 10);
}

/* huge_pages (default yes): every process that maps the segment advises
 * it for transparent huge pages (VmFlags "hg"), the coordinator collapses
 * its 2 MiB blocks where the kernel can (MADV_COLLAPSE), so that status
 * counts some and a client's mapping holds 2 MiB page table entries, and
 * status says whether the system gave any (and why none); with
 * huge_pages = no, nobody advises, nothing is collapsed, status counts 0. */
START_TEST(status_huge_pages)
{
	char flags[256];
	bool collapses = kernel_collapses_shmem(), unasked = shm_huge_unasked();
	for (int on = 1; on >= 0; on--) {
		if (!on) {
			tu_coord_cleanup(&co);
			ck_assert_int_eq(tu_coord_start(&co, "8M", "[segment]\nhuge_pages = no\n"), 0);
		}
		shmmap *sm = attach();
		CK_MSG(seg_vmflags(flags, sizeof flags), "no mapping of %s in /proc/self/smaps",
		       co.shm);
		CK_MSG((strstr(flags, " hg") != NULL) == on, "huge_pages %s, VmFlags:%s",
		       on ? "yes" : "no", flags);
		bool advised;
		long long bytes = status_huge(&advised), pmd = seg_pmd_bytes(sm);
		CK_MSG(advised == on, "%s", out);
		CK_MSG(bytes >= 0 && bytes <= 8ll << 20, "huge bytes %lld of an 8M segment", bytes);
		if (on && collapses) {
			/* All of its whole 2 MiB blocks, the first (the header's) too:
			 * 8 MiB are collapsed well within the budget. */
			long long whole = (long long)(atomic_load(&sm->seg.len) & ~(HUGE_2M - 1));
			CK_MSG(bytes == whole, "MADV_COLLAPSE works here, yet status counts %lld "
			       "huge bytes of %lld:\n%s", bytes, whole, out);
			CK_MSG(pmd == whole, "MADV_COLLAPSE works here, yet this client maps %lld "
			       "bytes of %lld in 2 MiB pages", pmd, whole);
		}
		if (!on) {
			CK_EQ(bytes, 0);
			CK_MSG(unasked || pmd == 0, "huge_pages = no, yet %lld bytes in 2 MiB pages",
			       pmd);
		}
		CTL_EXPECT(0, "status");
		if (!on)
			CK_MSG(strstr(out, "not asked for") != NULL, "%s", out);
		else if (bytes > 0)
			CK_MSG(strstr(out, "of the segment in 2 MiB pages") != NULL, "%s", out);
		else /* the fallback: no error, and why none */
			CK_MSG(strstr(out, "asked for, none given: ") != NULL, "%s", out);
		shmmap_detach(sm);
	}
}
END_TEST

/* A segment that grows: the grown part is collapsed into 2 MiB pages too,
 * the block the growth starts inside (5M: its lower half was live) as
 * well, and a client attached before the growth maps the new blocks so
 * once it follows. */
START_TEST(huge_pages_follow_growth)
{
	tu_coord_cleanup(&co);
	ck_assert_int_eq(tu_coord_start(&co, "5M", "[segment]\nmax_size = 64M\n"), 0);
	bool collapses = kernel_collapses_shmem(), advised;
	shmmap *sm = attach();
	long long before = status_huge(&advised), pmd0 = seg_pmd_bytes(sm);
	CK(advised);
	CTL_EXPECT(0, "--json", "grow", "36M");
	long long after = status_huge(&advised), pmd1 = seg_pmd_bytes(sm);
	CK_MSG(after >= before && after <= 36ll << 20, "huge bytes %lld, then %lld", before,
	       after);
	if (collapses) {
		/* Always tried, whatever the time budget: the first chunk of
		 * whole new blocks (6M to 36M: one), and the block at 4M the
		 * growth started inside (this client maps that one by small
		 * pages still: it had it mapped so before). */
		CK_MSG(after == before + (32ll << 20),
		       "grown from 5M to 36M: huge bytes %lld, then %lld", before, after);
		CK_MSG(pmd1 >= pmd0 + (30ll << 20),
		       "grown from 5M to 36M: this client maps %lld bytes in 2 MiB pages, then "
		       "%lld", pmd0, pmd1);
	}
	CTL_EXPECT(0, "check");
	shmmap_detach(sm);
}
END_TEST

static Suite *cli_suite(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = tcase_create("cli");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, put_then_get);
	tcase_add_test(tc, get_missing);
	tcase_add_test(tc, del_then_get);
	tcase_add_test(tc, maps_align_escaped_names);
	tcase_add_test(tc, keys_lists_exactly);
	tcase_add_test(tc, json_outputs);
	tcase_add_test(tc, stats_count_ops);
	tcase_add_test(tc, usage_errors);
	tcase_add_test(tc, check_after_burst);
	tcase_add_test(tc, check_finds_damage);
	tcase_add_test(tc, check_and_stats_see_expiry_slots);
	tcase_add_test(tc, check_sees_span_slabs);
	tcase_add_test(tc, check_while_writing);
	tcase_add_test(tc, clients_shows_self);
	tcase_add_test(tc, status_counts_like_clients);
	tcase_add_test(tc, admin_slot_kept);
	tcase_add_test(tc, status_huge_pages);
	tcase_add_test(tc, huge_pages_follow_growth);
	tcase_add_test(tc, ttl_expires);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(cli_suite());
}
