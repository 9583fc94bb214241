/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_table.c - unit tests of one map (shmmap/table.c) driven in-process
 * through the internal interface, without a coordinator: put/get/del/incr
 * semantics, limits, expiry, long chains, a full segment, several writer
 * processes, a lock-free reader racing a writer, read-only mappings and the
 * recovery of a stripe whose writer died holding its lock.
 *
 * Each test gets a fresh segment "/shmmap-ut-<pid>-<n>" (unlinked at once,
 * so a failing test leaves nothing in /dev/shm) with slot 0 LIVE for this
 * process (lock owner 1) and map 0 "t": 64 buckets, 8 stripes, keys up to
 * 64 bytes, values up to 4096.  Child processes get slots 1.. (owner 2..),
 * marked LIVE with their pid before they start, and always _exit.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"


#define AGREED_BASE 0x200000000000ULL
#define MIB (1024ull * 1024ull)
#define KEY_MAX 64u
#define VAL_MAX 4096u

static struct seg g_seg = {.fd = -1};
static struct seg_geom g_geom;
static struct lock_ctx g_lk;
static struct map_view g_v;
static struct op_ctx g_op;
static char g_name[64];
static unsigned g_nseg;

/* ---- fixture ---- */

static void mark_slot_live(uint32_t slot, pid_t pid)
{
	struct seg_slot *sl = seg_slot(&g_seg, &g_geom, slot);
	sl->pid = (uint32_t)pid;
	sl->start_time = 0;
	atomic_fetch_add(&sl->gen, 1);
	atomic_store_explicit(&sl->state, SLOT_LIVE, memory_order_release);
}

static void tbl_up(uint64_t size)
{
	struct seg_params p = {.size = size, .base = AGREED_BASE, .max_clients = 8, .max_maps = 4};
	snprintf(g_name, sizeof g_name, "/shmmap-ut-%d-%u", (int)getpid(), g_nseg++);
	shm_unlink(g_name);
	memset(&g_seg, 0, sizeof g_seg);
	g_seg.fd = -1;
	int rc = shmmap__seg_create(g_name, 0600, &p, &g_seg, &g_geom);
	CK_MSG(rc == 0, "seg_create(%s): %s", g_name, shmmap_strerror(rc));
	CK_EQ(shm_unlink(g_name), 0);
	g_lk = (struct lock_ctx){.s = &g_seg, .g = &g_geom, .owner = 1};
	mark_slot_live(0, getpid());
	rc = shmmap__map_create(&g_seg, &g_geom, &g_lk, 0, "t",
				&(struct map_params){.nbuckets = 64, .nstripes = 8,
						     .key_max = KEY_MAX, .val_max = VAL_MAX,
						     .policy = MAP_POLICY_REJECT});
	CK_MSG(rc == 0, "map_create: %s", shmmap_strerror(rc));
	rc = shmmap__map_view(&g_seg, &g_geom, 0, &g_v);
	CK_MSG(rc == 0, "map_view: %s", shmmap_strerror(rc));
	g_op = (struct op_ctx){.s = &g_seg, .g = &g_geom, .lk = g_lk, .ctr = NULL, .intent = NULL};
}

static void setup_16m(void)
{
	tbl_up(16 * MIB);
}

static void setup_4m(void)
{
	tbl_up(4 * MIB);
}

static void teardown(void)
{
	if (g_name[0])
		shm_unlink(g_name);
	g_name[0] = '\0';
	shmmap__seg_unmap(&g_seg);
}

/* ---- helpers ---- */

static int put(const void *k, size_t kl, const void *v, size_t vl, uint32_t ttl, unsigned fl)
{
	return shmmap__tbl_put(&g_op, &g_v, k, kl, v, vl, ttl, fl);
}

static int get(const void *k, size_t kl, void *buf, size_t cap, size_t *vl)
{
	return shmmap__tbl_get(&g_op, &g_v, k, kl, buf, cap, vl);
}

static int del(const void *k, size_t kl)
{
	return shmmap__tbl_del(&g_op, &g_v, k, kl);
}

static int incr(const void *k, size_t kl, int64_t d, int64_t *out)
{
	return shmmap__tbl_incr(&g_op, &g_v, k, kl, d, 0, out);
}

static int puts_(const char *k, const char *v)
{
	return put(k, strlen(k), v, strlen(v), 0, 0);
}

/* Assert key k holds exactly the string v. */
static void expect_str(const char *k, const char *v, int line)
{
	char buf[VAL_MAX + 1];
	size_t vl = 0;
	int rc = get(k, strlen(k), buf, sizeof buf - 1, &vl);
	CK_MSG(rc == 0, "line %d: get(%s): %s", line, k, shmmap_strerror(rc));
	buf[vl] = '\0';
	CK_MSG(vl == strlen(v) && memcmp(buf, v, vl) == 0,
	       "line %d: get(%s) = \"%s\" (%zu bytes), want \"%s\"", line, k, buf, vl, v);
}
#define EXPECT_STR(k, v) expect_str((k), (v), __LINE__)

static void expect_absent(const char *k, int line)
{
	size_t vl = 777;
	char buf[16];
	int rc = get(k, strlen(k), buf, sizeof buf, &vl);
	CK_MSG(rc == -ENOENT, "line %d: get(%s) = %d, want -ENOENT", line, k, rc);
}
#define EXPECT_ABSENT(k) expect_absent((k), __LINE__)

static uint64_t total_entries(void)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < g_v.nstripes; i++)
		n += g_v.stripes[i].entries;
	return n;
}

static uint64_t total_bytes(void)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < g_v.nstripes; i++)
		n += g_v.stripes[i].bytes;
	return n;
}

static uint64_t total_slots(void)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < g_v.nstripes; i++)
		n += g_v.stripes[i].slots;
	return n;
}

/* Blocks in use in the size classes (every entry of this map is one). */
static uint64_t used_blocks(void)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < g_geom.nclasses; i++)
		n += seg_class(&g_seg, &g_geom, i)->used;
	return n;
}

/* Every stripe unlocked with an even seq. */
static void expect_stripes_idle(int line)
{
	for (uint32_t i = 0; i < g_v.nstripes; i++) {
		CK_MSG(atomic_load(&g_v.stripes[i].lock) == 0, "line %d: stripe %u locked",
		       line, i);
		CK_MSG((atomic_load(&g_v.stripes[i].seq) & 1) == 0,
		       "line %d: stripe %u seq odd", line, i);
	}
}
#define EXPECT_IDLE() expect_stripes_idle(__LINE__)

static void print_problem(void *arg, const char *what)
{
	fprintf(stderr, "  line %d: check: %s\n", *(const int *)arg, what);
}

/* shmmap__check finds the segment consistent (totals, blocks, chains). */
static void expect_consistent(int line)
{
	struct check_report cr = {.problem = print_problem, .arg = &line};
	int rc = shmmap__check(&g_seg, &g_geom, &cr);
	CK_MSG(rc == 0 && cr.errors == 0, "line %d: check: %d problems", line, (int)cr.errors);
}
#define EXPECT_CONSISTENT() expect_consistent(__LINE__)

static uint32_t bucket_of(const void *k, size_t kl)
{
	return (uint32_t)shmmap__hash(&g_geom, k, kl) & (g_v.nbuckets - 1);
}

static struct seg_stripe *stripe_of_key(const void *k, size_t kl)
{
	return &g_v.stripes[bucket_of(k, kl) & (g_v.nstripes - 1)];
}

/* The entry holding key k (walking its chain), or NULL. */
static const struct seg_entry *find_entry(const void *k, size_t kl)
{
	uint64_t off = atomic_load(&g_v.buckets[bucket_of(k, kl)]);
	for (int steps = 0; off && steps < 1000000; steps++) {
		const struct seg_entry *e = shmmap__entry_at(&g_seg, &g_v, off);
		CK_MSG(e != NULL, "chain holds an invalid entry at %#" PRIx64, off);
		if (e->klen == kl && memcmp(ent_key(e, ent_vlenf(e)), k, kl) == 0)
			return e;
		off = atomic_load(&e->next);
	}
	return NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Reap every child within deadline_ms, polling waitpid(WNOHANG); SIGKILL and
 * reap the rest on timeout.  status[i] gets each wait status. */
static bool reap(const pid_t *pids, int n, int deadline_ms, int *status)
{
	bool done[16] = {0};
	int left = n;
	long long end = tu_mono_ms() + deadline_ms;
	for (;;) {
		for (int i = 0; i < n; i++) {
			if (!done[i] && waitpid(pids[i], &status[i], WNOHANG) == pids[i]) {
				done[i] = true;
				left--;
			}
		}
		if (left == 0)
			return true;
		if (tu_mono_ms() > end)
			break;
		sleep_ms(2);
	}
	for (int i = 0; i < n; i++) {
		if (!done[i]) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], &status[i], 0);
		}
	}
	return false;
}

static bool exited_ok(int st)
{
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* A small MAP_SHARED area for children to report through. */
struct report {
	char msg[8][256];
	_Atomic int stop;
	_Atomic int ready;
	uint64_t reads, torn, missing, backwards, errors, distinct, writes;
	int rc;
};

static struct report *report_new(void)
{
	struct report *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(r, MAP_FAILED);
	memset(r, 0, sizeof *r);
	return r;
}

/* An op context for child k (slot k + 1, owner k + 2). */
static struct op_ctx child_ctx(int k)
{
	struct op_ctx o = g_op;
	o.lk.owner = (uint32_t)k + 2;
	return o;
}

/* ---- basic semantics ---- */

START_TEST(put_get_roundtrip_nul_bytes)
{
	const char key[] = {'k', 0, 'e', 0, 'y'};
	const char key2[] = {'k', 0, 'e', 0, 'z'};
	unsigned char val[300], val2[77], buf[512];
	for (size_t i = 0; i < sizeof val; i++)
		val[i] = (unsigned char)(i * 7); /* holds NULs and high bytes */
	memset(val2, 0, sizeof val2);
	val2[76] = 0xff;
	CK_EQ(put(key, sizeof key, val, sizeof val, 0, 0), 0);
	memset(buf, 0xAA, sizeof buf);
	size_t vl = 12345;
	CK_EQ(get(key, sizeof key, buf, sizeof buf, &vl), 0);
	CK_EQ(vl, sizeof val);
	CK_EQ(memcmp(buf, val, sizeof val), 0);
	for (size_t i = sizeof val; i < sizeof buf; i++)
		CK_MSG(buf[i] == 0xAA, "get wrote past the value at %zu", i);
	/* keys that differ only after a NUL, or are prefixes, are other keys */
	CK_EQ(get(key2, sizeof key2, buf, sizeof buf, &vl), -ENOENT);
	CK_EQ(get(key, 1, buf, sizeof buf, &vl), -ENOENT);
	CK_EQ(get(key, 4, buf, sizeof buf, &vl), -ENOENT);
	CK_EQ(put(key2, sizeof key2, val2, sizeof val2, 0, 0), 0);
	CK_EQ(get(key2, sizeof key2, buf, sizeof buf, &vl), 0);
	CK_EQ(vl, sizeof val2);
	CK_EQ(memcmp(buf, val2, sizeof val2), 0);
	CK_EQ(get(key, sizeof key, buf, sizeof buf, &vl), 0);
	CK_EQ(vl, sizeof val);
	CK_EQ(memcmp(buf, val, sizeof val), 0);
	CK_EQ(total_entries(), 2);
	CK_EQ(total_bytes(), 2 * sizeof key + sizeof val + sizeof val2);
	CK_EQ(used_blocks(), 2);
	/* vlen may be NULL */
	CK_EQ(get(key, sizeof key, buf, sizeof buf, NULL), 0);
	EXPECT_IDLE();
}
END_TEST

START_TEST(replace)
{
	char big[1000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	CK_EQ(puts_("k", "one"), 0);
	EXPECT_STR("k", "one");
	CK_EQ(puts_("k", big), 0);
	EXPECT_STR("k", big);
	CK_EQ(puts_("k", "two"), 0);
	EXPECT_STR("k", "two");
	CK_EQ(put("k", 1, NULL, 0, 0, 0), 0);
	EXPECT_STR("k", "");
	CK_EQ(puts_("k", "three"), 0);
	EXPECT_STR("k", "three");
	/* one entry, one block: every replaced entry was freed */
	CK_EQ(total_entries(), 1);
	CK_EQ(total_bytes(), 1 + 5);
	CK_EQ(used_blocks(), 1);
	/* replacing inside a long chain keeps the chain intact */
	char k[32], v[64];
	for (int i = 0; i < 300; i++) {
		snprintf(k, sizeof k, "c%d", i);
		snprintf(v, sizeof v, "v%d", i);
		CK_EQ(puts_(k, v), 0);
	}
	for (int i = 0; i < 300; i += 2) {
		snprintf(k, sizeof k, "c%d", i);
		snprintf(v, sizeof v, "replaced-%d-%0*d", i, i % 40, 0);
		CK_EQ(puts_(k, v), 0);
	}
	for (int i = 0; i < 300; i++) {
		snprintf(k, sizeof k, "c%d", i);
		if (i % 2)
			snprintf(v, sizeof v, "v%d", i);
		else
			snprintf(v, sizeof v, "replaced-%d-%0*d", i, i % 40, 0);
		EXPECT_STR(k, v);
	}
	CK_EQ(total_entries(), 301);
	CK_EQ(used_blocks(), 301);
	EXPECT_IDLE();
}
END_TEST

START_TEST(nx_xx)
{
	CK_EQ(put("k", 1, "v1", 2, 0, SHMMAP_NX), 0); /* NX on absent stores */
	CK_EQ(put("k", 1, "v2", 2, 0, SHMMAP_NX), -EEXIST);
	EXPECT_STR("k", "v1");
	CK_EQ(used_blocks(), 1); /* the refused entry was freed */
	CK_EQ(put("a", 1, "x", 1, 0, SHMMAP_XX), -ENOENT);
	EXPECT_ABSENT("a");
	CK_EQ(total_entries(), 1);
	CK_EQ(used_blocks(), 1);
	CK_EQ(put("k", 1, "v3", 2, 0, SHMMAP_XX), 0); /* XX on present replaces */
	EXPECT_STR("k", "v3");
	/* bad flags */
	CK_EQ(put("k", 1, "v4", 2, 0, SHMMAP_NX | SHMMAP_XX), -EINVAL);
	CK_EQ(put("k", 1, "v4", 2, 0, 0x8), -EINVAL);
	CK_EQ(put("k", 1, "v4", 2, 0, SHMMAP_NOTTL | SHMMAP_NX | SHMMAP_XX), -EINVAL);
	CK_EQ(put("b", 1, "v4", 2, 0, 0x80000000u), -EINVAL);
	EXPECT_STR("k", "v3");
	EXPECT_ABSENT("b");
	CK_EQ(total_entries(), 1);
	CK_EQ(used_blocks(), 1);
	EXPECT_IDLE();
}
END_TEST

START_TEST(get_small_buffer)
{
	unsigned char val[100], buf[200];
	for (size_t i = 0; i < sizeof val; i++)
		val[i] = (unsigned char)(i + 1);
	CK_EQ(put("k", 1, val, sizeof val, 0, 0), 0);
	size_t vl = 0;
	CK_EQ(get("k", 1, buf, 99, &vl), -ENOBUFS);
	CK_EQ(vl, 100);
	vl = 0;
	CK_EQ(get("k", 1, NULL, 0, &vl), -ENOBUFS);
	CK_EQ(vl, 100);
	CK_EQ(get("k", 1, buf, 1, NULL), -ENOBUFS);
	vl = 0;
	CK_EQ(get("k", 1, buf, 100, &vl), 0);
	CK_EQ(vl, 100);
	CK_EQ(memcmp(buf, val, sizeof val), 0);
}
END_TEST

START_TEST(zero_length_value)
{
	char buf[8] = "sentinl";
	size_t vl = 99;
	CK_EQ(put("z", 1, NULL, 0, 0, 0), 0);
	CK_EQ(get("z", 1, NULL, 0, &vl), 0);
	CK_EQ(vl, 0);
	vl = 99;
	CK_EQ(get("z", 1, buf, sizeof buf, &vl), 0);
	CK_EQ(vl, 0);
	ck_assert_str_eq(buf, "sentinl");
	CK_EQ(put("z", 1, "x", 1, 0, SHMMAP_NX), -EEXIST); /* present */
	CK_EQ(put("z", 1, "", 0, 0, SHMMAP_XX), 0);
	CK_EQ(incr("z", 1, 1, NULL), -EINVAL); /* empty is no number */
	CK_EQ(get("z", 1, NULL, 0, &vl), 0);
	CK_EQ(vl, 0);
	CK_EQ(total_entries(), 1);
	CK_EQ(total_bytes(), 1);
}
END_TEST

START_TEST(key_and_value_limits)
{
	char key[KEY_MAX + 2], val[VAL_MAX + 2], buf[VAL_MAX + 2];
	memset(key, 'k', sizeof key);
	memset(val, 'v', sizeof val);
	size_t vl;
	int64_t out;
	/* klen 0 */
	CK_EQ(put(key, 0, "v", 1, 0, 0), -EINVAL);
	CK_EQ(get(key, 0, buf, sizeof buf, &vl), -EINVAL);
	CK_EQ(del(key, 0), -EINVAL);
	CK_EQ(incr(key, 0, 1, &out), -EINVAL);
	/* key at and over the limit */
	CK_EQ(put(key, KEY_MAX, "v", 1, 0, 0), 0);
	CK_EQ(get(key, KEY_MAX, buf, sizeof buf, &vl), 0);
	CK_EQ(put(key, KEY_MAX + 1, "v", 1, 0, 0), -E2BIG);
	CK_EQ(get(key, KEY_MAX + 1, buf, sizeof buf, &vl), -E2BIG);
	CK_EQ(del(key, KEY_MAX + 1), -E2BIG);
	CK_EQ(incr(key, KEY_MAX + 1, 1, &out), -E2BIG);
	CK_EQ(put(key, SIZE_MAX, "v", 1, 0, 0), -E2BIG);
	CK_EQ(get(key, SIZE_MAX, buf, sizeof buf, &vl), -E2BIG);
	/* value at and over the limit */
	CK_EQ(put("v", 1, val, VAL_MAX, 0, 0), 0);
	CK_EQ(get("v", 1, buf, sizeof buf, &vl), 0);
	CK_EQ(vl, VAL_MAX);
	CK_EQ(put("w", 1, val, VAL_MAX + 1, 0, 0), -E2BIG);
	CK_EQ(put("v", 1, val, VAL_MAX + 1, 0, 0), -E2BIG);
	CK_EQ(put("w", 1, val, SIZE_MAX, 0, 0), -E2BIG);
	CK_EQ(put("w", 1, val, (size_t)UINT32_MAX + 2, 0, 0), -E2BIG);
	EXPECT_ABSENT("w");
	CK_EQ(get("v", 1, buf, sizeof buf, &vl), 0);
	CK_EQ(vl, VAL_MAX);
	CK_EQ(total_entries(), 2);
	CK_EQ(used_blocks(), 2);
	EXPECT_IDLE();
}
END_TEST

START_TEST(delete)
{
	CK_EQ(del("nope", 4), -ENOENT);
	CK_EQ(puts_("k", "v"), 0);
	CK_EQ(del("k", 1), 0);
	EXPECT_ABSENT("k");
	CK_EQ(del("k", 1), -ENOENT);
	CK_EQ(total_entries(), 0);
	CK_EQ(used_blocks(), 0);
	/* heads, middles and tails of long chains */
	enum { N = 600 };
	char k[32], v[32];
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		snprintf(v, sizeof v, "val-%d", i);
		CK_EQ(puts_(k, v), 0);
	}
	for (int i = 0; i < N; i += 3) {
		snprintf(k, sizeof k, "key-%d", i);
		CK_EQ(del(k, strlen(k)), 0);
	}
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		snprintf(v, sizeof v, "val-%d", i);
		if (i % 3 == 0)
			EXPECT_ABSENT(k);
		else
			EXPECT_STR(k, v);
	}
	CK_EQ(total_entries(), N - (N + 2) / 3);
	CK_EQ(used_blocks(), N - (N + 2) / 3);
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		CK_EQ(del(k, strlen(k)), i % 3 == 0 ? -ENOENT : 0);
	}
	CK_EQ(total_entries(), 0);
	CK_EQ(total_bytes(), 0);
	CK_EQ(used_blocks(), 0);
	for (uint32_t b = 0; b < g_v.nbuckets; b++)
		CK_EQ(atomic_load(&g_v.buckets[b]), 0);
	EXPECT_IDLE();
}
END_TEST

/* ---- incr ---- */

START_TEST(incr_semantics)
{
	int64_t out = 99;
	CK_EQ(incr("c", 1, 5, &out), 0); /* absent counts as 0 */
	CK_EQ(out, 5);
	EXPECT_STR("c", "5");
	CK_EQ(incr("c", 1, 10, &out), 0);
	CK_EQ(out, 15);
	CK_EQ(incr("c", 1, -20, &out), 0);
	CK_EQ(out, -5);
	EXPECT_STR("c", "-5");
	CK_EQ(incr("c", 1, 0, &out), 0);
	CK_EQ(out, -5);
	CK_EQ(incr("c", 1, 1, NULL), 0);
	EXPECT_STR("c", "-4");
	for (int i = 0; i < 1000; i++)
		CK_EQ(incr("c", 1, 3, NULL), 0);
	CK_EQ(incr("c", 1, 0, &out), 0);
	CK_EQ(out, 2996);
	CK_EQ(incr("d", 1, INT64_MIN, &out), 0);
	CK_EQ(out, INT64_MIN);
	EXPECT_STR("d", "-9223372036854775808");

	/* present values that are not decimal integers */
	static const char *const bad[] = {
		"abc", "-", "+5", " 5", "5 ", "12a", "1.5", "0x10", "5\n", "1:", "/1", "--1", "1-",
		"99999999999999999999",  /* 20 digits */
		"9223372036854775808",   /* INT64_MAX + 1 */
		"-9223372036854775809",  /* INT64_MIN - 1 */
		"00000000000000000001",  /* 20 digits */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CK_EQ(puts_("s", bad[i]), 0);
		out = 42;
		CK_MSG(incr("s", 1, 1, &out) == -EINVAL, "incr on \"%s\" accepted", bad[i]);
		CK_EQ(out, 42);
		EXPECT_STR("s", bad[i]);
	}
	const char nul_val[] = {'1', 0, '2'};
	CK_EQ(put("s", 1, nul_val, sizeof nul_val, 0, 0), 0);
	CK_EQ(incr("s", 1, 1, &out), -EINVAL);
	/* accepted forms */
	static const struct {
		const char *v;
		int64_t d;
		const char *want;
	} good[] = {
		{"007", 1, "8"},
		{"-0", 1, "1"},
		{"0", -1, "-1"},
		{"9223372036854775807", 0, "9223372036854775807"},
		{"-9223372036854775808", 0, "-9223372036854775808"},
		{"9223372036854775806", 1, "9223372036854775807"},
		{"-9223372036854775807", -1, "-9223372036854775808"},
		{"0000000000000000001", 1, "2"}, /* 19 digits */
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		CK_EQ(puts_("g", good[i].v), 0);
		CK_MSG(incr("g", 1, good[i].d, NULL) == 0, "incr on \"%s\" refused",
		       good[i].v);
		EXPECT_STR("g", good[i].want);
	}
	/* overflow: -ERANGE and nothing stored */
	CK_EQ(puts_("m", "9223372036854775807"), 0);
	out = 7;
	CK_EQ(incr("m", 1, 1, &out), -ERANGE);
	CK_EQ(out, 7);
	EXPECT_STR("m", "9223372036854775807");
	CK_EQ(incr("m", 1, INT64_MAX, &out), -ERANGE);
	EXPECT_STR("m", "9223372036854775807");
	CK_EQ(puts_("n", "-9223372036854775808"), 0);
	CK_EQ(incr("n", 1, -1, &out), -ERANGE);
	CK_EQ(incr("n", 1, INT64_MIN, &out), -ERANGE);
	EXPECT_STR("n", "-9223372036854775808");
	CK_EQ(incr("o", 1, INT64_MAX, &out), 0);
	CK_EQ(incr("o", 1, 1, &out), -ERANGE);
	EXPECT_STR("o", "9223372036854775807");
	/* no block leaked by any refused incr */
	CK_EQ(total_entries(), 7); /* c d s g m n o */
	CK_EQ(used_blocks(), 7);
	EXPECT_IDLE();
}
END_TEST

START_TEST(incr_keeps_expiry)
{
	CK_EQ(put("e", 1, "1", 1, 3600, 0), 0);
	const struct seg_entry *e = find_entry("e", 1);
	ck_assert_ptr_nonnull(e);
	uint64_t exp = ent_expiry(e, ent_vlenf(e));
	ck_assert_uint_ne(exp, 0);
	/* The map has no default TTL: incr takes a block sized for 20 digits
	 * without an expiry slot, finds the key's expiry; "42" fits it with
	 * the slot. */
	CK_EQ(incr("e", 1, 41, NULL), 0);
	EXPECT_STR("e", "42");
	e = find_entry("e", 1);
	ck_assert_ptr_nonnull(e);
	CK_EQ(ent_expiry(e, ent_vlenf(e)), exp);
	CK_EQ(ent_hdr_size(ent_vlenf(e)), ENT_HDR + ENT_EXP_BYTES);
	CK_EQ(used_blocks(), 1); /* the replaced block was given back */
	/* 19 digits and the slot do not fit that block: again with one that
	 * has room (the first given back). */
	CK_EQ(incr("e", 1, INT64_MAX - 42, NULL), 0);
	EXPECT_STR("e", "9223372036854775807");
	e = find_entry("e", 1);
	ck_assert_ptr_nonnull(e);
	CK_EQ(ent_expiry(e, ent_vlenf(e)), exp);
	CK_EQ(used_blocks(), 1);
	/* a put without ttl makes it permanent */
	CK_EQ(puts_("e", "1"), 0);
	e = find_entry("e", 1);
	ck_assert_ptr_nonnull(e);
	CK_EQ(ent_expiry(e, ent_vlenf(e)), 0);
	CK_EQ(ent_hdr_size(ent_vlenf(e)), ENT_HDR);
	/* and incr keeps it permanent, without the slot */
	CK_EQ(incr("e", 1, 1, NULL), 0);
	e = find_entry("e", 1);
	ck_assert_ptr_nonnull(e);
	CK_EQ(ent_vlenf(e), 1u); /* "2": no flag */
	CK_EQ(used_blocks(), 1);
	EXPECT_IDLE();
	EXPECT_CONSISTENT();
}
END_TEST

/* ---- expiry ---- */

START_TEST(ttl_expiry)
{
	char buf[64];
	size_t vl;
	static const char *const keys[] = {"t", "nx", "xx", "ic"};
	enum { NK = 4 };
	int64_t t0 = tu_mono_ms();
	CK_EQ(put("t", 1, "x", 1, 1, 0), 0);
	CK_EQ(put("nx", 2, "x", 1, 1, 0), 0);
	CK_EQ(put("xx", 2, "x", 1, 1, 0), 0);
	CK_EQ(put("ic", 2, "41", 2, 1, 0), 0);
	CK_EQ(put("long", 4, "y", 1, 3600, 0), 0);
	/* present at first */
	for (int i = 0; i < NK; i++)
		CK_MSG(get(keys[i], strlen(keys[i]), buf, sizeof buf, &vl) == 0,
		       "%s absent right after its put", keys[i]);
	/* poll (deadline 3 s) until every 1 s entry is gone; none may go before
	 * 1 s after t0 (each was put after t0; 100 ms slack for ms rounding),
	 * and a gone entry stays gone */
	int64_t gone[NK] = {-1, -1, -1, -1};
	int left = NK;
	while (left > 0 && tu_mono_ms() - t0 <= 3000) {
		for (int i = 0; i < NK; i++) {
			int rc = get(keys[i], strlen(keys[i]), buf, sizeof buf, &vl);
			if (rc == -ENOENT && gone[i] < 0) {
				gone[i] = tu_mono_ms() - t0;
				left--;
			} else {
				CK_MSG(rc == (gone[i] < 0 ? 0 : -ENOENT), "get(%s) = %d", keys[i], rc);
			}
		}
		if (left > 0)
			sleep_ms(5);
	}
	for (int i = 0; i < NK; i++) {
		CK_MSG(gone[i] >= 0, "a 1 s ttl entry (%s) was still there after 3 s", keys[i]);
		CK_MSG(gone[i] >= 900, "a 1 s ttl entry (%s) expired after %" PRId64 " ms", keys[i],
		       gone[i]);
	}
	CK_EQ(get("long", 4, buf, sizeof buf, &vl), 0);
	/* an expired entry counts as absent everywhere */
	CK_EQ(del("t", 1), -ENOENT);
	CK_EQ(del("t", 1), -ENOENT);
	CK_EQ(put("xx", 2, "new", 3, 0, SHMMAP_XX), -ENOENT);
	CK_EQ(put("nx", 2, "new", 3, 0, SHMMAP_NX), 0);
	EXPECT_STR("nx", "new");
	int64_t out = 0;
	CK_EQ(incr("ic", 2, 1, &out), 0);
	CK_EQ(out, 1); /* started at 0, not 41 */
	const struct seg_entry *e = find_entry("ic", 2);
	ck_assert_ptr_nonnull(e);
	CK_EQ(ent_expiry(e, ent_vlenf(e)), 0);
	/* nx, xx (expired, still linked), ic, long */
	CK_EQ(total_entries(), 4);
	CK_EQ(used_blocks(), 4);
	CK_EQ(total_slots(), 2); /* xx (expired, still linked) and long */
	EXPECT_IDLE();
	EXPECT_CONSISTENT();
}
END_TEST

/* The entries' write times (seg_entry.meta, evict.c's ages): fine enough
 * to tell apart entries written a fraction of a millisecond apart (a cache
 * may turn over within milliseconds; the coarse clock's 4 ms ticks could
 * not), and ages that are right across the 29-bit wrap, with an entry
 * written after the caller read its clock (by another process) aged 0,
 * not 39 hours. */
START_TEST(write_times_are_fine_and_wrap)
{
	/* The clock moves on within a millisecond, every time: of five
	 * changes, the slowest of the middle three within 1 ms (4 ms with the
	 * coarse clock). */
	uint64_t gaps[5];
	uint32_t t = shmmap__itime();
	for (int k = 0; k < 5; k++) {
		uint64_t t0 = tu_mono_ns(), deadline = t0 + 100000000u;
		uint32_t u;
		while ((u = shmmap__itime()) == t)
			CK_MSG(tu_mono_ns() < deadline, "the write-time clock stood for 100 ms");
		gaps[k] = tu_mono_ns() - t0;
		t = u;
	}
	for (int a = 0; a < 5; a++) /* sort */
		for (int b = a + 1; b < 5; b++)
			if (gaps[b] < gaps[a]) {
				uint64_t x = gaps[a];
				gaps[a] = gaps[b];
				gaps[b] = x;
			}
	CK_MSG(gaps[3] < 1000000u, "the write-time clock moved only every %" PRIu64 " ns", gaps[3]);
	/* The coarse clock, for rewrites in place, is the same time, up to a
	 * tick behind. */
	uint32_t f = shmmap__itime(), c = shmmap__itime_coarse();
	CK_MSG((int32_t)(f - c) >= 0 && f - c <= ITIME_FROM_MS(20), "fine %u, coarse %u", f, c);
	/* Ages in units, across the wrap of the entries' 29 bits. */
	CK_EQ(ENT_AGE(100, 40), 60);
	CK_EQ(ENT_AGE(5, ITIME_MASK - 4), 10); /* written before the wrap */
	CK_EQ(ENT_AGE(40, 100), 0);            /* written after "now" */
	CK_EQ(ENT_AGE(ITIME_MASK + 1 + 7, 3), 4); /* now has more bits than meta */
	CK_EQ(ITIME_TO_MS(ITIME_FROM_MS(1000)), 999); /* units of 262.144 us */
	uint64_t m = ENT_META(0xdeadbeefu, ITIME_MASK, 3) | ENT_KEPT;
	CK_EQ(ENT_HASH(m), 0xdeadbeefu);
	CK_EQ(ENT_ITIME(m), ITIME_MASK);
	CK_EQ(ENT_FREQ(m), 3);
	CK_EQ(ENT_FREQ(m - ENT_FREQ_ONE), 2);
	CK_EQ(ENT_ITIME(m - ENT_FREQ_ONE), ITIME_MASK);
	CK_EQ(m & ENT_USE, (UINT64_C(3) << 61) | ENT_KEPT);
}
END_TEST

/* The entry layout: no expiry, a 24-byte header; an expiry, 8 bytes more
 * before the key.  An 11-byte key and a 100-byte value (the cache
 * benchmark's entries) take 135 bytes and the 136-byte class without an
 * expiry, 143 and the 144-byte class with one. */
START_TEST(entry_header_24_bytes_without_expiry)
{
	static const char key[] = "key:0000042";
	char val[100];
	memset(val, 'v', sizeof val);
	CK_EQ(sizeof key - 1, 11);
	CK_EQ(put("p", 1, val, sizeof val, 0, 0), 0);
	CK_EQ(put(key, 11, val, sizeof val, 0, 0), 0);
	uint64_t before = shmmap__now_ms();
	CK_EQ(put("t", 1, val, sizeof val, 60, 0), 0);
	CK_EQ(put("T", 1, val, sizeof val, 0, 0), 0);
	struct {
		const char *k;
		size_t kl;
		bool exp;
	} want[] = {{"p", 1, false}, {key, 11, false}, {"t", 1, true}, {"T", 1, false}};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const struct seg_entry *e = find_entry(want[i].k, want[i].kl);
		ck_assert_ptr_nonnull(e);
		uint32_t vf = ent_vlenf(e);
		CK_EQ(ent_vlen(vf), sizeof val);
		CK_EQ(ent_has_expiry(vf), want[i].exp);
		CK_EQ((const unsigned char *)ent_key(e, vf) - (const unsigned char *)e,
		      want[i].exp ? 32 : 24);
		CK_EQ(memcmp(ent_key(e, vf), want[i].k, want[i].kl), 0);
		CK_EQ(memcmp(ent_val(e, (uint32_t)want[i].kl, vf), val, sizeof val), 0);
		uint64_t x = ent_expiry(e, vf);
		if (want[i].exp)
			CK_MSG(x >= before + 60000 && x <= shmmap__now_ms() + 60000,
			       "expiry %" PRIu64 " not 60 s after the put", x);
		else
			CK_EQ(x, 0);
	}
	/* The block each lands in. */
	const struct seg_entry *e = find_entry(key, 11);
	uint64_t off = (uint64_t)((const unsigned char *)e - g_seg.base);
	CK_EQ(ent_size(11, sizeof val, false), 135);
	CK_EQ(shmmap__block_size(&g_seg, &g_geom, off), 136);
	CK_EQ(put(key, 11, val, sizeof val, 60, 0), 0);
	e = find_entry(key, 11);
	off = (uint64_t)((const unsigned char *)e - g_seg.base);
	CK_EQ(ent_hdr_size(ent_vlenf(e)), 32);
	CK_EQ(shmmap__block_size(&g_seg, &g_geom, off), 144);
	/* A rewrite without ttl drops the slot again (a new entry each write). */
	CK_EQ(put(key, 11, val, sizeof val, 0, 0), 0);
	e = find_entry(key, 11);
	off = (uint64_t)((const unsigned char *)e - g_seg.base);
	CK_EQ(ent_hdr_size(ent_vlenf(e)), 24);
	CK_EQ(shmmap__block_size(&g_seg, &g_geom, off), 136);
	/* The stripes count key and value bytes, whatever the header, and
	 * the expiry slots ("t" alone has one now). */
	CK_EQ(total_entries(), 4);
	CK_EQ(total_bytes(), 1 + 11 + 1 + 1 + 4 * sizeof val);
	CK_EQ(total_slots(), 1);
	CK_EQ(del("t", 1), 0);
	CK_EQ(total_slots(), 0);
	CK_EQ(put("t", 1, val, sizeof val, 60, 0), 0);
	CK_EQ(put(key, 11, val, sizeof val, 60, 0), 0);
	CK_EQ(total_slots(), 2);
	EXPECT_CONSISTENT();
	CK_EQ(used_blocks(), 4);
	EXPECT_IDLE();
}
END_TEST

/* A map with a default TTL: puts with ttl 0 and new incr keys get the
 * expiry slot, and expire. */
START_TEST(default_ttl_entries_expire)
{
	struct map_view v1;
	CK_EQ(shmmap__map_create(&g_seg, &g_geom, &g_lk, 1, "d",
				 &(struct map_params){.nbuckets = 64, .nstripes = 8,
						      .key_max = KEY_MAX, .val_max = VAL_MAX,
						      .policy = MAP_POLICY_REJECT,
						      .default_ttl = 1}),
	      0);
	CK_EQ(shmmap__map_view(&g_seg, &g_geom, 1, &v1), 0);
	int64_t t0 = tu_mono_ms();
	CK_EQ(shmmap__tbl_put(&g_op, &v1, "d", 1, "v", 1, 0, 0), 0);
	CK_EQ(shmmap__tbl_incr(&g_op, &v1, "n", 1, 5, 0, NULL), 0);
	uint64_t slots = 0, entries = 0;
	for (uint32_t i = 0; i < v1.nstripes; i++) {
		slots += v1.stripes[i].slots;
		entries += v1.stripes[i].entries;
	}
	CK_EQ(entries, 2);
	CK_EQ(slots, 2);
	EXPECT_CONSISTENT();
	/* Poll (deadline 3 s) until both are gone. */
	char buf[16];
	size_t vl;
	bool gone = false;
	while (!gone && tu_mono_ms() - t0 <= 3000) {
		gone = shmmap__tbl_get(&g_op, &v1, "d", 1, buf, sizeof buf, &vl) == -ENOENT &&
		       shmmap__tbl_get(&g_op, &v1, "n", 1, buf, sizeof buf, &vl) == -ENOENT;
		if (!gone)
			sleep_ms(5);
	}
	CK_MSG(gone, "entries with the map's default TTL of 1 s still there after 3 s");
	CK_MSG(tu_mono_ms() - t0 >= 900, "expired after %lld ms", tu_mono_ms() - t0);
	EXPECT_CONSISTENT();
}
END_TEST

/* ---- many keys in few buckets ---- */

START_TEST(many_keys_colliding)
{
	enum { N = 20000 };
	char k[32], v[64];
	for (int i = 0; i < N; i++) {
		int kl = snprintf(k, sizeof k, "key:%d", i);
		int vl = snprintf(v, sizeof v, "value:%d:%.*s", i, i % 37, "abcdefghijklmnopqrstuvwxyz0123456789");
		CK_EQ(put(k, (size_t)kl, v, (size_t)vl, 0, 0), 0);
	}
	CK_EQ(total_entries(), N);
	CK_EQ(used_blocks(), N);
	/* chains are long: 20000 keys, 64 buckets */
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "key:%d", i);
		snprintf(v, sizeof v, "value:%d:%.*s", i, i % 37, "abcdefghijklmnopqrstuvwxyz0123456789");
		EXPECT_STR(k, v);
	}
	snprintf(k, sizeof k, "key:%d", N);
	EXPECT_ABSENT(k);
	uint64_t bytes = total_bytes();
	ck_assert_uint_gt(bytes, 0);
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "key:%d", i);
		CK_EQ(del(k, strlen(k)), 0);
	}
	CK_EQ(total_entries(), 0);
	CK_EQ(total_bytes(), 0);
	CK_EQ(used_blocks(), 0);
	EXPECT_IDLE();
}
END_TEST

/* ---- the key hash ---- */

/* A deterministic stream for seeds and keys (splitmix64). */
static uint64_t mix_next(uint64_t *x)
{
	uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/*
 * The hash the buckets, stripes and entry tags use (XXH3 with the
 * segment's seed, inlined on the fast paths) spreads keys like a random
 * function, for every key length up to 24 bytes (XXH3's paths of 1-3,
 * 4-8, 9-16 and 17-128 bytes) and a few seeds: keys that differ in one
 * character (a counter, as cache keys are) fill 2^16 buckets as balls
 * thrown at random would (a share of about 1/e empty, no long chain),
 * keys of the same bytes and another length differ, the seed changes
 * every hash, and one flipped key bit flips about half of the low 32
 * bits (the bucket index and the tag an entry keeps).
 */
START_TEST(hash_spreads_keys)
{
	enum { NB = 1 << 16 };
	static uint32_t load[NB];
	struct seg_geom g = {0};
	uint64_t rs = 42;
	for (int si = 0; si < 3; si++) {
		g.hash_seed = si == 0 ? 0 : mix_next(&rs);
		for (size_t kl = 1; kl <= 24; kl++) {
			/* n keys of kl bytes: from 5 bytes a counter in the last
			 * five (decimal, zero-padded) after a fixed prefix; up to 4,
			 * the counter's two bytes in the first and the last (all 256
			 * values of one byte). */
			uint32_t n = kl == 1 ? 256 : NB;
			memset(load, 0, sizeof load);
			unsigned char k[24];
			for (uint32_t i = 0; i < n; i++) {
				if (kl <= 4) {
					memset(k, 'k', kl);
					k[0] = (unsigned char)i;
					k[kl - 1] ^= (unsigned char)(i >> 8);
				} else {
					memset(k, 'k', kl);
					for (size_t j = kl, x = i; j > 0 && j > kl - 5; j--, x /= 10)
						k[j - 1] = (unsigned char)('0' + x % 10);
				}
				uint64_t h = shmmap__hash(&g, k, kl);
				load[h & (NB - 1)]++;
			}
			uint32_t empty = 0, most = 0;
			for (uint32_t b = 0; b < NB; b++) {
				empty += load[b] == 0;
				most = load[b] > most ? load[b] : most;
			}
			if (n == NB) { /* mean 1: 1/e empty (24109), longest about 8 */
				CK_MSG(empty > 23000 && empty < 25200,
				       "seed %d, %zu-byte keys: %u of %u buckets empty", si, kl, empty, NB);
				CK_MSG(most <= 12, "seed %d, %zu-byte keys: a bucket of %u", si, kl, most);
			} else {
				CK_MSG(most <= 2, "seed %d, 1-byte keys: a bucket of %u", si, most);
			}
		}
		/* The same bytes, another length; the same key, another seed. */
		const unsigned char z[24] = {0};
		for (size_t kl = 1; kl < 24; kl++)
			CK_MSG(shmmap__hash(&g, z, kl) != shmmap__hash(&g, z, kl + 1),
			       "seed %d: %zu and %zu zero bytes hash alike", si, kl, kl + 1);
		struct seg_geom g2 = g;
		g2.hash_seed = g.hash_seed ^ 1;
		for (size_t kl = 1; kl <= 24; kl++)
			CK_MSG((uint32_t)shmmap__hash(&g, "0123456789abcdefghijklmn", kl) !=
				       (uint32_t)shmmap__hash(&g2, "0123456789abcdefghijklmn", kl),
			       "seed %d: %zu-byte key: the seed's low bit changes nothing", si, kl);
		/* Avalanche into the low 32 bits, over random keys of 4, 8, 13
		 * and 16 bytes: the mean of flipped bits near 16, and no input
		 * bit that flips 14 or fewer on average. */
		static const size_t lens[] = {4, 8, 13, 16};
		for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
			size_t kl = lens[li];
			double total = 0, least = 32;
			for (size_t bit = 0; bit < kl * 8; bit++) {
				uint64_t flips = 0;
				enum { TRIES = 400 };
				for (int t = 0; t < TRIES; t++) {
					unsigned char k[16];
					for (size_t j = 0; j < kl; j++)
						k[j] = (unsigned char)mix_next(&rs);
					uint32_t a = (uint32_t)shmmap__hash(&g, k, kl);
					k[bit / 8] ^= (unsigned char)(1u << (bit % 8));
					uint32_t b = (uint32_t)shmmap__hash(&g, k, kl);
					flips += (uint64_t)__builtin_popcount(a ^ b);
				}
				double mean = (double)flips / TRIES;
				total += mean;
				least = mean < least ? mean : least;
			}
			double avg = total / (double)(kl * 8);
			CK_MSG(avg > 15.5 && avg < 16.5 && least > 14.0,
			       "seed %d, %zu-byte keys: a flipped bit flips %.2f of the low 32 on "
			       "average, %.2f for the weakest input bit",
			       si, kl, avg, least);
		}
	}
}
END_TEST

/* ---- a full segment ---- */

static void big_value(char *v, size_t n, int i)
{
	for (size_t j = 0; j < n; j++)
		v[j] = (char)('a' + (i + (int)j) % 26);
}

START_TEST(full_segment_enospc)
{
	static char v[VAL_MAX], buf[VAL_MAX];
	char k[32];
	int nbig = 0, nsmall = 0, rc;
	/* big entries until the pool is exhausted */
	for (;; nbig++) {
		snprintf(k, sizeof k, "big%d", nbig);
		big_value(v, VAL_MAX, nbig);
		rc = put(k, strlen(k), v, VAL_MAX, 0, 0);
		if (rc != 0)
			break;
	}
	CK_MSG(rc == -ENOSPC, "put on a full segment: %s", shmmap_strerror(rc));
	ck_assert_int_gt(nbig, 100);
	/* then small ones until even those find no room */
	for (;; nsmall++) {
		snprintf(k, sizeof k, "s%d", nsmall);
		rc = put(k, strlen(k), NULL, 0, 0, 0);
		if (rc != 0)
			break;
		ck_assert_int_lt(nsmall, 2000000);
	}
	CK_EQ(rc, -ENOSPC);
	/* everything stored so far is intact */
	size_t vl;
	for (int i = 0; i < nbig; i++) {
		snprintf(k, sizeof k, "big%d", i);
		big_value(v, VAL_MAX, i);
		CK_EQ(get(k, strlen(k), buf, sizeof buf, &vl), 0);
		CK_MSG(vl == VAL_MAX && memcmp(buf, v, VAL_MAX) == 0, "big%d damaged", i);
	}
	for (int i = 0; i < nsmall; i++) {
		snprintf(k, sizeof k, "s%d", i);
		CK_EQ(get(k, strlen(k), buf, sizeof buf, &vl), 0);
		CK_EQ(vl, 0);
	}
	CK_EQ(total_entries(), (uint64_t)(nbig + nsmall));
	/* a replacement needs a new block first: refused, old value kept */
	big_value(v, VAL_MAX, 999999);
	CK_EQ(put("big0", 4, v, VAL_MAX, 0, 0), -ENOSPC);
	CK_EQ(get("big0", 4, buf, sizeof buf, &vl), 0);
	big_value(v, VAL_MAX, 0);
	CK_EQ(memcmp(buf, v, VAL_MAX), 0);
	CK_EQ(incr("newctr", 6, 1, NULL), -ENOSPC);
	EXPECT_ABSENT("newctr");
	CK_EQ(total_entries(), (uint64_t)(nbig + nsmall));
	EXPECT_IDLE();
	/* deleting makes room again (enough to empty whole pages) */
	for (int i = 0; i < 100; i++) {
		snprintf(k, sizeof k, "big%d", i);
		CK_EQ(del(k, strlen(k)), 0);
	}
	big_value(v, VAL_MAX, 7);
	CK_EQ(put("again", 5, v, VAL_MAX, 0, 0), 0);
	CK_EQ(incr("newctr", 6, 1, NULL), 0);
	CK_EQ(get("again", 5, buf, sizeof buf, &vl), 0);
	CK_EQ(memcmp(buf, v, VAL_MAX), 0);
}
END_TEST

/* ---- stats counters and intent records ---- */

START_TEST(counters_and_intent)
{
	struct op_ctx o = g_op;
	o.ctr = seg_ctr(&g_seg, &g_geom, 0, 0);
	o.intent = &seg_slot(&g_seg, &g_geom, 0)->intent[3];
	o.undo = &seg_slot(&g_seg, &g_geom, 0)->undo[3];
	char buf[16];
	size_t vl;
	CK_EQ(shmmap__tbl_put(&o, &g_v, "a", 1, "1", 1, 0, 0), 0);
	CK_EQ(shmmap__tbl_put(&o, &g_v, "a", 1, "2", 1, 0, 0), 0);
	CK_EQ(shmmap__tbl_put(&o, &g_v, "a", 1, "3", 1, 0, SHMMAP_NX), -EEXIST);
	CK_EQ(shmmap__tbl_get(&o, &g_v, "a", 1, buf, sizeof buf, &vl), 0);
	CK_EQ(shmmap__tbl_get(&o, &g_v, "b", 1, buf, sizeof buf, &vl), -ENOENT);
	CK_EQ(shmmap__tbl_incr(&o, &g_v, "a", 1, 1, 0, NULL), 0);
	CK_EQ(shmmap__tbl_del(&o, &g_v, "a", 1), 0);
	CK_EQ(shmmap__tbl_del(&o, &g_v, "a", 1), -ENOENT);
	CK_EQ(atomic_load(&o.ctr->puts), 2);
	CK_EQ(atomic_load(&o.ctr->hits), 1);
	CK_EQ(atomic_load(&o.ctr->misses), 1);
	CK_EQ(atomic_load(&o.ctr->incrs), 1);
	CK_EQ(atomic_load(&o.ctr->dels), 1);
	CK_EQ(atomic_load(&o.ctr->expired), 0);
	/* nothing left in flight */
	CK_EQ(atomic_load(&o.intent->a), 0);
	CK_EQ(atomic_load(&o.intent->b), 0);
	CK_EQ(atomic_load(&o.intent->map), g_v.idx);
	/* other rows untouched */
	CK_EQ(atomic_load(&seg_ctr(&g_seg, &g_geom, 1, 0)->puts), 0);
	CK_EQ(atomic_load(&seg_ctr(&g_seg, &g_geom, 0, 1)->puts), 0);
}
END_TEST

/* ---- several writer processes ---- */

enum { NWRITERS = 4, WOPS = 2000 };

static void writer_kv(int k, int i, char *key, size_t kcap, int *kl, char *val, size_t vcap, int *vl)
{
	*kl = snprintf(key, kcap, "w%d-%d", k, i);
	*vl = snprintf(val, vcap, "val-%d-%d-%.*s", k, i, (i * 7 + k) % 50,
		       "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

static int writer_child(int k, struct report *r)
{
	struct op_ctx o = child_ctx(k);
	char key[64], val[128];
	int kl, vl;
	for (int i = 0; i < WOPS; i++) {
		int64_t out = 0;
		int rc = shmmap__tbl_incr(&o, &g_v, "counter", 7, 1, 0, &out);
		if (rc != 0 || out < 1 || out > NWRITERS * WOPS) {
			snprintf(r->msg[k], sizeof r->msg[k], "child %d: incr #%d: rc %d out %" PRId64,
				 k, i, rc, out);
			return 1;
		}
		writer_kv(k, i, key, sizeof key, &kl, val, sizeof val, &vl);
		rc = shmmap__tbl_put(&o, &g_v, key, (size_t)kl, val, (size_t)vl, 0, 0);
		if (rc != 0) {
			snprintf(r->msg[k], sizeof r->msg[k], "child %d: put %s: %s", k, key,
				 shmmap_strerror(rc));
			return 1;
		}
	}
	return 0;
}

static void start_children(pid_t *pids, int n, int (*fn)(int, struct report *), struct report *r)
{
	int gate[2];
	CK_EQ(pipe(gate), 0);
	for (int k = 0; k < n; k++) {
		pids[k] = tu_fork();
		ck_assert_int_ge(pids[k], 0);
		if (pids[k] == 0) {
			char c;
			close(gate[1]);
			while (read(gate[0], &c, 1) < 0 && errno == EINTR)
				;
			_exit(fn(k, r));
		}
		mark_slot_live((uint32_t)k + 1, pids[k]);
	}
	close(gate[0]);
	close(gate[1]); /* every child starts now */
}

START_TEST(multiprocess_incr_and_puts)
{
	struct report *r = report_new();
	pid_t pids[NWRITERS];
	int st[NWRITERS];
	start_children(pids, NWRITERS, writer_child, r);
	bool all = reap(pids, NWRITERS, 30000, st);
	CK_MSG(all, "writers did not finish within 30 s");
	for (int k = 0; k < NWRITERS; k++)
		CK_MSG(exited_ok(st[k]), "child %d: status %#x: %s", k, st[k], r->msg[k]);
	EXPECT_STR("counter", "8000");
	int64_t out;
	CK_EQ(incr("counter", 7, 0, &out), 0);
	CK_EQ(out, NWRITERS * WOPS);
	char key[64], val[128];
	int kl, vl;
	for (int k = 0; k < NWRITERS; k++) {
		for (int i = 0; i < WOPS; i++) {
			writer_kv(k, i, key, sizeof key, &kl, val, sizeof val, &vl);
			EXPECT_STR(key, val);
		}
	}
	CK_EQ(total_entries(), NWRITERS * WOPS + 1);
	CK_EQ(used_blocks(), NWRITERS * WOPS + 1);
	EXPECT_IDLE();
	munmap(r, sizeof *r);
}
END_TEST

/* ---- a lock-free reader racing a writer ---- */

enum { NRKEYS = 4 };
static char rkeys[NRKEYS][16];

static size_t torn_len(uint64_t c)
{
	return 8 + (size_t)((c * 2654435761u) >> 7) % (VAL_MAX - 8 + 1);
}

static void torn_value(uint64_t c, unsigned char *v, size_t *n)
{
	*n = torn_len(c);
	memcpy(v, &c, 8);
	for (size_t j = 8; j < *n; j++)
		v[j] = (unsigned char)(c * 131 + j * 7 + (c >> 9));
}

/* 0 if v is a whole value for counter key index ki, else what is wrong. */
static const char *torn_check(const unsigned char *v, size_t n, int ki, uint64_t *cp)
{
	if (n < 8)
		return "short";
	uint64_t c;
	memcpy(&c, v, 8);
	*cp = c;
	if (c % NRKEYS != (uint64_t)ki)
		return "counter of another key";
	if (n != torn_len(c))
		return "length does not match its counter";
	for (size_t j = 8; j < n; j++)
		if (v[j] != (unsigned char)(c * 131 + j * 7 + (c >> 9)))
			return "bytes do not match the counter";
	return NULL;
}

static int torn_writer(int k, struct report *r)
{
	struct op_ctx o = child_ctx(k);
	unsigned char v[VAL_MAX];
	size_t n;
	long long end = tu_mono_ms() + 1500;
	uint64_t c = NRKEYS;
	while (!atomic_load(&r->ready))
		sleep_ms(1);
	for (; tu_mono_ms() < end || c < 20000; c++) {
		int ki = (int)(c % NRKEYS);
		torn_value(c, v, &n);
		int rc = shmmap__tbl_put(&o, &g_v, rkeys[ki], strlen(rkeys[ki]), v, n, 0, 0);
		if (rc != 0) {
			snprintf(r->msg[k], sizeof r->msg[k], "writer: put: %s", shmmap_strerror(rc));
			atomic_store(&r->stop, 1);
			return 1;
		}
	}
	r->writes = c - NRKEYS;
	atomic_store(&r->stop, 1);
	return 0;
}

static int torn_reader(int k, struct report *r)
{
	struct op_ctx o = child_ctx(k);
	unsigned char v[VAL_MAX];
	uint64_t last[NRKEYS] = {0};
	atomic_store(&r->ready, 1);
	while (!atomic_load(&r->stop)) {
		for (int ki = 0; ki < NRKEYS; ki++) {
			size_t n = 0;
			int rc = shmmap__tbl_get(&o, &g_v, rkeys[ki], strlen(rkeys[ki]), v, sizeof v, &n);
			r->reads++;
			if (rc == -ENOENT) {
				r->missing++;
				continue;
			}
			if (rc != 0) {
				r->errors++;
				snprintf(r->msg[k], sizeof r->msg[k], "reader: get: %s", shmmap_strerror(rc));
				continue;
			}
			uint64_t c = 0;
			const char *why = torn_check(v, n, ki, &c);
			if (why) {
				if (!r->torn)
					snprintf(r->msg[k], sizeof r->msg[k], "torn value of key %d (%zu bytes): %s",
						 ki, n, why);
				r->torn++;
				continue;
			}
			if (c < last[ki])
				r->backwards++;
			if (c != last[ki])
				r->distinct++;
			last[ki] = c;
		}
	}
	return 0;
}

static int torn_child(int k, struct report *r)
{
	return k == 0 ? torn_writer(k, r) : torn_reader(k, r);
}

START_TEST(reader_never_sees_torn_values)
{
	/* four keys in one bucket: the writer replaces heads, middles, tails */
	int nk = 0;
	uint32_t want = 0;
	for (int i = 0; nk < NRKEYS && i < 100000; i++) {
		char k[16];
		snprintf(k, sizeof k, "r%d", i);
		uint32_t b = bucket_of(k, strlen(k));
		if (nk == 0)
			want = b;
		if (b == want)
			memcpy(rkeys[nk++], k, sizeof k);
	}
	CK_EQ(nk, NRKEYS);
	unsigned char v[VAL_MAX];
	size_t n;
	for (int ki = 0; ki < NRKEYS; ki++) {
		torn_value((uint64_t)ki, v, &n);
		CK_EQ(put(rkeys[ki], strlen(rkeys[ki]), v, n, 0, 0), 0);
	}
	struct report *r = report_new();
	pid_t pids[2];
	int st[2];
	start_children(pids, 2, torn_child, r);
	bool all = reap(pids, 2, 30000, st);
	CK_MSG(all, "reader/writer did not finish within 30 s");
	CK_MSG(exited_ok(st[0]), "writer: status %#x: %s", st[0], r->msg[0]);
	CK_MSG(exited_ok(st[1]), "reader: status %#x: %s", st[1], r->msg[1]);
	CK_MSG(r->torn == 0, "%" PRIu64 " torn values in %" PRIu64 " reads: %s", r->torn,
	       r->reads, r->msg[1]);
	CK_MSG(r->missing == 0, "a replaced key was absent %" PRIu64 " times", r->missing);
	CK_MSG(r->errors == 0, "%" PRIu64 " read errors: %s", r->errors, r->msg[1]);
	CK_MSG(r->backwards == 0, "a key's value went back in time %" PRIu64 " times",
	       r->backwards);
	/* the race really happened */
	ck_assert_uint_ge(r->writes, 20000);
	ck_assert_uint_gt(r->reads, 1000);
	CK_MSG(r->distinct > 50, "the reader saw only %" PRIu64 " distinct values",
	       r->distinct);
	CK_EQ(total_entries(), NRKEYS);
	CK_EQ(used_blocks(), NRKEYS);
	EXPECT_IDLE();
	munmap(r, sizeof *r);
}
END_TEST

/* ---- read-only mappings ---- */

static void map_ro(struct seg *ro, struct map_view *v, struct op_ctx *o)
{
	int fd = dup(g_seg.fd);
	ck_assert_int_ge(fd, 0);
	CK_EQ(shmmap__seg_map_fd(fd, 0, true, ro), 0);
	struct seg_geom g;
	CK_EQ(shmmap__seg_validate(ro, &g), 0);
	CK_EQ(shmmap__map_view(ro, &g_geom, 0, v), 0);
	*o = (struct op_ctx){.s = ro, .g = &g_geom, .lk = {.s = ro, .g = &g_geom, .owner = 1}};
}

START_TEST(readonly_mapping)
{
	struct seg ro = {.fd = -1};
	struct map_view v;
	struct op_ctx o;
	map_ro(&ro, &v, &o);
	CK_EQ(puts_("k", "value"), 0);
	char buf[16];
	size_t vl = 0;
	CK_EQ(shmmap__tbl_get(&o, &v, "k", 1, buf, sizeof buf, &vl), 0);
	CK_EQ(vl, 5);
	CK_EQ(memcmp(buf, "value", 5), 0);
	CK_EQ(shmmap__tbl_get(&o, &v, "x", 1, buf, sizeof buf, &vl), -ENOENT);
	CK_EQ(shmmap__tbl_put(&o, &v, "k", 1, "w", 1, 0, 0), -EPERM);
	CK_EQ(shmmap__tbl_del(&o, &v, "k", 1), -EPERM);
	CK_EQ(shmmap__tbl_incr(&o, &v, "k", 1, 1, 0, NULL), -EPERM);
	EXPECT_STR("k", "value");
	shmmap__seg_unmap(&ro);
}
END_TEST

/*
 * A writer that died between its two seq increments leaves the seq odd.  On
 * a read-only mapping the reader cannot lock to repair it; table.c means to
 * give up with -EAGAIN after READ_TRIES * 64 tries, but must return in any
 * case (ARCHITECTURE: "the reader's retries must be bounded").
 */
START_TEST(readonly_get_bounded_when_seq_stuck_odd)
{
	CK_EQ(puts_("k", "value"), 0);
	struct seg_stripe *st = stripe_of_key("k", 1);
	atomic_fetch_add(&st->seq, 1); /* as if a writer died mid-update */
	struct report *r = report_new();
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct seg ro = {.fd = -1};
		struct map_view v;
		struct op_ctx o;
		int fd = dup(g_seg.fd);
		if (fd < 0 || shmmap__seg_map_fd(fd, 0, true, &ro) < 0 ||
		    shmmap__map_view(&ro, &g_geom, 0, &v) < 0)
			_exit(2);
		o = (struct op_ctx){.s = &ro, .g = &g_geom, .lk = {.s = &ro, .g = &g_geom, .owner = 1}};
		char buf[16];
		size_t vl;
		r->rc = shmmap__tbl_get(&o, &v, "k", 1, buf, sizeof buf, &vl);
		_exit(0);
	}
	int status;
	bool done = reap(&pid, 1, 5000, &status);
	CK_MSG(done, "get on a read-only mapping did not return within 5 s while a stripe's"
	       " seq stayed odd (unbounded retry loop in shmmap__tbl_get)");
	CK_MSG(exited_ok(status), "the child running get on a read-only mapping died (status %#x)"
	       " before get returned", status);
	CK_MSG(r->rc == -EAGAIN || r->rc == -SHMMAP_ECORRUPT, "rc %d", r->rc);
	atomic_fetch_add(&st->seq, 1);
	EXPECT_STR("k", "value");
	munmap(r, sizeof *r);
}
END_TEST

/* The same on a writable mapping: the reader falls back to the lock. */
START_TEST(get_bounded_when_seq_stuck_odd)
{
	CK_EQ(puts_("k", "value"), 0);
	struct seg_stripe *st = stripe_of_key("k", 1);
	atomic_fetch_add(&st->seq, 1);
	int64_t t0 = tu_mono_ms();
	EXPECT_STR("k", "value");
	EXPECT_ABSENT("other");
	ck_assert_int_lt(tu_mono_ms() - t0, 2000);
	CK_EQ(atomic_load(&st->lock), 0);
	atomic_fetch_add(&st->seq, 1);
}
END_TEST

/* ---- a writer that dies holding a stripe lock ---- */

START_TEST(dead_lock_holder_recovered)
{
	CK_EQ(puts_("k", "value"), 0);
	struct seg_stripe *st = stripe_of_key("k", 1);
	int gate[2];
	CK_EQ(pipe(gate), 0);
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char c;
		close(gate[1]);
		while (read(gate[0], &c, 1) < 0 && errno == EINTR)
			;
		struct lock_ctx lk = {.s = &g_seg, .g = &g_geom, .owner = 2};
		shmmap__lock(&st->lock, &lk, NULL);
		/* seq_begin, then death before the change is finished */
		atomic_fetch_add(&st->seq, 1);
		_exit(0);
	}
	mark_slot_live(1, pid);
	close(gate[0]);
	close(gate[1]);
	int status;
	CK_MSG(reap(&pid, 1, 10000, &status), "child did not exit");
	CK(exited_ok(status));
	CK_EQ(atomic_load(&st->lock) & LOCK_OWNER_MASK, 2);
	CK_EQ(atomic_load(&st->seq) & 1, 1);
	/* slot 1 still says LIVE but its process is gone: the lock is taken
	 * over after a short wait, the stripe repaired, nobody hangs */
	int64_t t0 = tu_mono_ms();
	EXPECT_STR("k", "value");
	ck_assert_int_lt(tu_mono_ms() - t0, 5000);
	CK_EQ(puts_("k", "new"), 0);
	EXPECT_STR("k", "new");
	CK_EQ(total_entries(), 1);
	EXPECT_IDLE();
}
END_TEST

/* ---- a sweep while a writer recycles its spare (review) ----
 * The sweep holds every allocator lock and trusts that no block changes
 * between "named by a record" and "linked" without one.  A spare moves
 * b -> spare (settle) and spare -> a (take_spare) with no allocator lock:
 * a del unlinks Y from a bucket the walk has not reached yet, settle parks
 * Y in spare, the next put takes it and links it into a bucket the walk
 * has passed, and a is cleared before the sweep's second read of the
 * records.  The sweep then frees Y although it is linked. */
#include <pthread.h>
static _Atomic int sw_stop;
static _Atomic unsigned long sw_runs;
static void *sweeper(void *arg)
{
	(void)arg;
	struct lock_ctx lk = {.s = &g_seg, .g = &g_geom, .owner = 2};
	while (!atomic_load(&sw_stop)) {
		struct sweep_report r;
		if (shmmap__sweep(&g_seg, &g_geom, &lk, &r) == 0)
			atomic_fetch_add(&sw_runs, 1);
	}
	return NULL;
}

static void sweep_problem(void *arg, const char *what)
{
	if ((*(int *)arg)++ < 5)
		fprintf(stderr, "check: %s\n", what);
}

START_TEST(sweep_vs_spare_recycling)
{
	enum { N = 20000 };
	mark_slot_live(1, getpid()); /* the sweeper's owner id 2 */
	struct op_ctx o = g_op;
	o.intent = &seg_slot(&g_seg, &g_geom, 0)->intent[0];
	o.undo = &seg_slot(&g_seg, &g_geom, 0)->undo[0];
	char k[32], v[40];
	memset(v, 'v', sizeof v);
	for (int i = 0; i < N; i++) {
		int kl = snprintf(k, sizeof k, "k%07d", i);
		CK_EQ(shmmap__tbl_put(&o, &g_v, k, (size_t)kl, v, sizeof v, 0, 0), 0);
	}
	pthread_t th;
	CK_EQ(pthread_create(&th, NULL, sweeper, NULL), 0);
	int64_t t0 = tu_mono_ms();
	unsigned long pairs = 0;
	int lo = 0, hi = N;
	while (tu_mono_ms() - t0 < 3000) {
		/* del the oldest key, put a new one: the same block goes round
		 * b -> spare -> a -> linked, with no allocator lock */
		int kl = snprintf(k, sizeof k, "k%07d", lo++);
		CK_EQ(shmmap__tbl_del(&o, &g_v, k, (size_t)kl), 0);
		kl = snprintf(k, sizeof k, "k%07d", hi++);
		CK_EQ(shmmap__tbl_put(&o, &g_v, k, (size_t)kl, v, sizeof v, 0, 0), 0);
		pairs++;
	}
	atomic_store(&sw_stop, 1);
	pthread_join(th, NULL);
	fprintf(stderr, "sweep_vs_spare_recycling: %lu sweeps, %lu del+put pairs\n",
		atomic_load(&sw_runs), pairs);
	int shown = 0;
	struct check_report cr = {.problem = sweep_problem, .arg = &shown};
	shmmap__check(&g_seg, &g_geom, &cr);
	CK_MSG(cr.errors == 0 && cr.leaked == 0,
	       "after sweeps racing a writer that recycles its spare: %" PRIu64
	       " problems (a linked entry's block was freed by the sweep)", cr.errors);
	/* and every key still reads back */
	for (int i = lo; i < hi; i++) {
		char buf[64];
		size_t vl = 0;
		int kl = snprintf(k, sizeof k, "k%07d", i);
		int rc = shmmap__tbl_get(&o, &g_v, k, (size_t)kl, buf, sizeof buf, &vl);
		CK_MSG(rc == 0 && vl == sizeof v && memcmp(buf, v, vl) == 0, "key %s: rc %d", k, rc);
	}
}
END_TEST

/* ---- large entries in a full segment (review) ----
 * (1) room_for_run looks at windows of `need` pages from a rover that
 * moves by `need`: a window that starts on the CONT page of a run fails,
 * and so does the next one (same phase).  A 2-page put fails with -ENOSPC
 * while the segment holds nothing but evictable 2-page entries.
 * (2) A size class with no page, and no other class with an evictable page:
 * room_in_class never takes a run's pages (only SLAB pages are handed over),
 * so a 1-byte put fails with -ENOSPC while runs of evictable entries fill the
 * segment. */
static void big_map(struct map_view *bv, uint32_t idx, const char *name, uint32_t policy)
{
	int rc = shmmap__map_create(&g_seg, &g_geom, &g_lk, idx, name,
				    &(struct map_params){.nbuckets = 64, .nstripes = 8,
							 .key_max = KEY_MAX, .val_max = 200000,
							 .policy = policy});
	CK_MSG(rc == 0, "map_create: %s", shmmap_strerror(rc));
	CK_EQ(shmmap__map_view(&g_seg, &g_geom, idx, bv), 0);
}

START_TEST(large_puts_enospc_with_evictable_runs)
{
	struct map_view bv;
	big_map(&bv, 1, "big", MAP_POLICY_EVICT);
	struct op_ctx o = g_op;
	o.intent = &seg_slot(&g_seg, &g_geom, 0)->intent[0];
	o.undo = &seg_slot(&g_seg, &g_geom, 0)->undo[0];
	static unsigned char big[100000]; /* 2 pages */
	memset(big, 'b', sizeof big);
	char k[32];
	for (int i = 0; i < 200; i++) {
		int kl = snprintf(k, sizeof k, "big%d", i);
		int rc = shmmap__tbl_put(&o, &bv, k, (size_t)kl, big, sizeof big, 0, 0);
		CK_MSG(rc == 0, "put %s: %s (%" PRIu64 " evictable 2-page entries in the map)", k,
		       shmmap_strerror(rc), shmmap__tbl_entries(&bv));
	}
}
END_TEST

START_TEST(small_put_enospc_when_runs_fill_the_segment)
{
	struct map_view bv, rv;
	big_map(&bv, 1, "big", MAP_POLICY_EVICT);
	big_map(&rv, 2, "keep", MAP_POLICY_REJECT);
	struct op_ctx o = g_op;
	o.intent = &seg_slot(&g_seg, &g_geom, 0)->intent[0];
	o.undo = &seg_slot(&g_seg, &g_geom, 0)->undo[0];
	static unsigned char big[100000]; /* 2 pages */
	memset(big, 'b', sizeof big);
	char k[32];
	struct seg_header *h = seg_hdr(&g_seg);
	for (int i = 0; h->pool_free >= 2; i++) {
		int kl = snprintf(k, sizeof k, "big%d", i);
		CK_EQ(shmmap__tbl_put(&o, &bv, k, (size_t)kl, big, sizeof big, 0, 0), 0);
	}
	if (h->pool_free == 1) /* the last page: one entry of a reject map */
		CK_EQ(shmmap__tbl_put(&o, &rv, "r", 1, big, 40000, 0, 0), 0);
	CK_EQ(h->pool_free, 0);
	uint64_t n = shmmap__tbl_entries(&bv);
	int rc = shmmap__tbl_put(&o, &bv, "small", 5, "x", 1, 0, 0);
	CK_MSG(rc == 0, "a 1-byte put, with %" PRIu64 " evictable 2-page entries: %s", n,
	       shmmap_strerror(rc));
}
END_TEST

static Suite *table_suite(void)
{
	Suite *s = suite_create("table");
	TCase *tc = tcase_create("map16m");
	tcase_add_checked_fixture(tc, setup_16m, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, put_get_roundtrip_nul_bytes);
	tcase_add_test(tc, replace);
	tcase_add_test(tc, nx_xx);
	tcase_add_test(tc, get_small_buffer);
	tcase_add_test(tc, zero_length_value);
	tcase_add_test(tc, key_and_value_limits);
	tcase_add_test(tc, delete);
	tcase_add_test(tc, incr_semantics);
	tcase_add_test(tc, incr_keeps_expiry);
	tcase_add_test(tc, ttl_expiry);
	tcase_add_test(tc, entry_header_24_bytes_without_expiry);
	tcase_add_test(tc, write_times_are_fine_and_wrap);
	tcase_add_test(tc, default_ttl_entries_expire);
	tcase_add_test(tc, many_keys_colliding);
	tcase_add_test(tc, hash_spreads_keys);
	tcase_add_test(tc, counters_and_intent);
	tcase_add_test(tc, multiprocess_incr_and_puts);
	tcase_add_test(tc, reader_never_sees_torn_values);
	tcase_add_test(tc, readonly_mapping);
	tcase_add_test(tc, readonly_get_bounded_when_seq_stuck_odd);
	tcase_add_test(tc, get_bounded_when_seq_stuck_odd);
	tcase_add_test(tc, dead_lock_holder_recovered);
	tcase_add_test(tc, sweep_vs_spare_recycling);
	suite_add_tcase(s, tc);

	tc = tcase_create("map4m");
	tcase_add_checked_fixture(tc, setup_4m, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, full_segment_enospc);
	tcase_add_test(tc, large_puts_enospc_with_evictable_runs);
	tcase_add_test(tc, small_put_enospc_when_runs_fill_the_segment);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(table_suite());
}
