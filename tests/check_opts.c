/*
 * check_opts.c - per-map options (shmmap_open_opts, [map NAME] sections),
 * with a real coordinator:
 *   - options through the API: key and value limits, default TTL, capacity
 *     (initial buckets), policy; an existing map keeps its options; a bad
 *     options struct is -EINVAL;
 *   - quotas: with evict, a map never holds more than its quota and puts go
 *     on by evicting its own entries; with reject, puts fail with -ENOSPC
 *     at the quota, nothing is evicted and an overwrite in place still fits;
 *   - [map NAME] sections: the maps exist from the start with their options,
 *     as shmmapctl maps shows them.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "shmmap.h"
#include "testutil.h"

static struct tu_coord co;

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

static uint32_t buckets_of(shmmap *sm, shmmap_map m)
{
	const struct map_view *v;
	struct tbl t;
	if (shmmap__resolve(sm, m, &v) < 0 || !shmmap__tbl_load(&sm->seg, v, &t))
		return 0;
	return t.cur_n;
}

/* What the quota counts: entry headers, keys and values of every stripe. */
static uint64_t usage_of(shmmap *sm, shmmap_map m)
{
	const struct map_view *v;
	if (shmmap__resolve(sm, m, &v) < 0)
		return UINT64_MAX;
	uint64_t u = 0;
	for (uint32_t i = 0; i < v->nstripes; i++)
		u += v->stripes[i].bytes + v->stripes[i].entries * ENT_HDR +
		     v->stripes[i].slots * ENT_EXP_BYTES; /* as table.c's stripe_usage */
	return u;
}

static void problem_cb(void *arg, const char *what)
{
	char *first = arg;
	if (!first[0])
		snprintf(first, 512, "%s", what);
}

static void expect_clean(shmmap *sm, const char *ctx)
{
	char first[512] = "";
	struct check_report r = {.problem = problem_cb, .arg = first};
	int rc = shmmap__check(&sm->seg, &sm->geom, &r);
	CK_MSG(rc == 0 && r.errors == 0 && r.leaked == 0, "%s: check: %d, first: %s", ctx, rc,
	       first);
}

static int expire_of(const void *k, size_t kl, const void *val, size_t vl, uint64_t exp,
		     void *arg)
{
	(void)k;
	(void)kl;
	(void)val;
	(void)vl;
	*(uint64_t *)arg = exp;
	return 0;
}

START_TEST(options_through_the_api)
{
	ck_assert_int_eq(tu_coord_start(&co, "64M", ""), 0);
	shmmap *sm = tu_attach(co.sock);
	struct shmmap_map_opts o = {.size = sizeof o, .key_max = 8, .value_max = 16,
				    .default_ttl = 100, .capacity = 100000,
				    .policy = SHMMAP_POLICY_REJECT};
	shmmap_map m;
	CK_EQ(shmmap_open_opts(sm, "small", SHMMAP_CREATE, &o, &m), 0);
	CK_EQ(shmmap_put(sm, m, "123456789", 9, "v", 1, 0, 0), -E2BIG);
	CK_EQ(shmmap_put(sm, m, "k", 1, "01234567890123456", 17, 0, 0), -E2BIG);
	CK_EQ(shmmap_put(sm, m, "k", 1, "v", 1, 0, 0), 0);
	/* ttl 0: the default TTL, 100 s from now. */
	uint64_t exp = 0, now = (uint64_t)time(NULL) * 1000u;
	CK_EQ(shmmap_foreach(sm, m, expire_of, &exp), 0);
	CK_MSG(exp >= now + 98000 && exp <= now + 102000, "expiry %llu, now %llu",
	       (unsigned long long)exp, (unsigned long long)now);
	/* An explicit ttl wins. */
	CK_EQ(shmmap_put(sm, m, "k", 1, "v", 1, 5, 0), 0);
	CK_EQ(shmmap_foreach(sm, m, expire_of, &exp), 0);
	CK_MSG(exp <= now + 7000, "explicit ttl: expiry %llu", (unsigned long long)exp);
	/* A new incr key gets the default TTL too. */
	CK_EQ(shmmap_del(sm, m, "k", 1), 0);
	CK_EQ(shmmap_incr(sm, m, "c", 1, 1, NULL), 0);
	exp = 0;
	CK_EQ(shmmap_foreach(sm, m, expire_of, &exp), 0);
	CK_MSG(exp >= now + 98000 && exp <= now + 102000, "incr: expiry %llu",
	       (unsigned long long)exp);
	/* Capacity 100000: buckets for it at load 0.5. */
	CK_EQ(buckets_of(sm, m), 262144);
	const struct map_view *v;
	CK_EQ(shmmap__resolve(sm, m, &v), 0);
	CK_EQ(v->policy, MAP_POLICY_REJECT);
	/* Opened again with other options: it keeps its own. */
	struct shmmap_map_opts o2 = {.size = sizeof o2, .key_max = 100};
	shmmap_map m2;
	CK_EQ(shmmap_open_opts(sm, "small", SHMMAP_CREATE, &o2, &m2), 0);
	CK_EQ(shmmap_put(sm, m2, "123456789", 9, "v", 1, 0, 0), -E2BIG);
	/* Bad structs. */
	struct shmmap_map_opts bad = {.size = 4};
	CK_EQ(shmmap_open_opts(sm, "x", SHMMAP_CREATE, &bad, &m2), -EINVAL);
	bad = (struct shmmap_map_opts){.size = sizeof bad, .reserved = {[3] = 1}};
	CK_EQ(shmmap_open_opts(sm, "x", SHMMAP_CREATE, &bad, &m2), -EINVAL);
	bad = (struct shmmap_map_opts){.size = sizeof bad, .policy = 3};
	CK_EQ(shmmap_open_opts(sm, "x", SHMMAP_CREATE, &bad, &m2), -EINVAL);
	/* A larger struct from a newer header: unknown bytes must be zero. */
	unsigned char big[sizeof(struct shmmap_map_opts) + 8] = {0};
	struct shmmap_map_opts *ob = (struct shmmap_map_opts *)big;
	ob->size = sizeof big;
	ob->key_max = 20;
	CK_EQ(shmmap_open_opts(sm, "newer", SHMMAP_CREATE, ob, &m2), 0);
	big[sizeof(struct shmmap_map_opts) + 2] = 1;
	CK_EQ(shmmap_open_opts(sm, "newer2", SHMMAP_CREATE, ob, &m2), -EINVAL);
	/* opts NULL: shmmap_open. */
	CK_EQ(shmmap_open_opts(sm, "plain", SHMMAP_CREATE, NULL, &m2), 0);
	CK_EQ(buckets_of(sm, m2), 4096);
	expect_clean(sm, "options");
	shmmap_detach(sm);
}
END_TEST

#define QUOTA (64 * 1024)

START_TEST(quota_evict)
{
	ck_assert_int_eq(tu_coord_start(&co, "64M", "[map]\nstripes = 16\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	struct shmmap_map_opts o = {.size = sizeof o, .quota = QUOTA};
	shmmap_map m;
	CK_EQ(shmmap_open_opts(sm, "q", SHMMAP_CREATE, &o, &m), 0);
	char k[32], v[64];
	memset(v, 'v', sizeof v);
	for (int i = 0; i < 5000; i++) {
		int kl = snprintf(k, sizeof k, "key-%08d", i);
		CK_EQ(shmmap_put(sm, m, k, (size_t)kl, v, sizeof v, 0, 0), 0);
		uint64_t u = usage_of(sm, m);
		CK_MSG(u <= QUOTA, "usage %llu over the quota after put %d", (unsigned long long)u, i);
	}
	/* The newest key is there; old ones were evicted. */
	char buf[64];
	size_t n;
	CK_EQ(shmmap_get(sm, m, "key-00004999", 12, buf, sizeof buf, &n), 0);
	struct shmmap_stats st;
	CK_EQ(shmmap_stats(sm, m, &st), 0);
	CK_MSG(st.evictions > 4000, "evictions %llu", (unsigned long long)st.evictions);
	CK_MSG(usage_of(sm, m) > QUOTA / 2, "quota under-used: %llu",
	       (unsigned long long)usage_of(sm, m));
	/* Bigger than a stripe's share: never fits, and says so (it was
	 * -ENOSPC, "full", as if it might fit later). */
	static char huge[QUOTA];
	CK_EQ(shmmap_put(sm, m, "huge", 4, huge, sizeof huge / 2, 0, 0), -E2BIG);
	expect_clean(sm, "quota evict");
	shmmap_detach(sm);
}
END_TEST

START_TEST(quota_reject)
{
	ck_assert_int_eq(tu_coord_start(&co, "64M", "[map]\nstripes = 16\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	struct shmmap_map_opts o = {.size = sizeof o, .quota = QUOTA,
				    .policy = SHMMAP_POLICY_REJECT};
	shmmap_map m;
	CK_EQ(shmmap_open_opts(sm, "q", SHMMAP_CREATE, &o, &m), 0);
	char k[32], v[64], buf[64];
	memset(v, 'v', sizeof v);
	int acked = 0, full = 0, i;
	for (i = 0; i < 5000 && full < 50; i++) {
		int kl = snprintf(k, sizeof k, "key-%08d", i);
		int rc = shmmap_put(sm, m, k, (size_t)kl, v, sizeof v, 0, 0);
		CK_MSG(rc == 0 || rc == -ENOSPC, "put: %d", rc);
		acked += rc == 0;
		full += rc == -ENOSPC;
		CK(usage_of(sm, m) <= QUOTA);
	}
	CK_MSG(full == 50 && acked > 200, "acked %d, refused %d", acked, full);
	/* Nothing was evicted: every acknowledged key is there. */
	int found = 0;
	for (int j = 0; j < i; j++) {
		int kl = snprintf(k, sizeof k, "key-%08d", j);
		size_t n;
		found += shmmap_get(sm, m, k, (size_t)kl, buf, sizeof buf, &n) == 0;
	}
	CK_EQ(found, acked);
	struct shmmap_stats st;
	CK_EQ(shmmap_stats(sm, m, &st), 0);
	CK_EQ(st.evictions, 0);
	/* An overwrite of the same size replaces in place: it fits. */
	CK_EQ(shmmap_put(sm, m, "key-00000000", 12, v, sizeof v, 0, 0), 0);
	expect_clean(sm, "quota reject");
	shmmap_detach(sm);
}
END_TEST

START_TEST(config_sections)
{
	ck_assert_int_eq(tu_coord_start(&co, "64M",
					"[map sessions]\nkey_max = 8\nquota = 64K\ndefault_ttl = 60\n"
					"policy = reject\n\n[map big]\ncapacity = 100000\n"),
			 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m, b;
	/* Both exist from the start: no SHMMAP_CREATE needed. */
	CK_EQ(shmmap_open(sm, "sessions", 0, &m), 0);
	CK_EQ(shmmap_open(sm, "big", 0, &b), 0);
	CK_EQ(shmmap_put(sm, m, "123456789", 9, "v", 1, 0, 0), -E2BIG);
	CK_EQ(shmmap_put(sm, m, "k", 1, "v", 1, 0, 0), 0);
	CK_EQ(buckets_of(sm, b), 262144);
	char out[16384], err[1024];
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "maps", NULL), 0);
	CK_MSG(strstr(out, "\"name\":\"sessions\"") && strstr(out, "\"quota\":65536") &&
		       strstr(out, "\"default_ttl\":60") && strstr(out, "\"policy\":\"reject\"") &&
		       strstr(out, "\"key_max\":8"),
	       "maps --json: %s", out);
	CK_EQ(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "stats", "sessions", NULL), 0);
	CK_MSG(strstr(out, "quota       65536 (used 34)") && strstr(out, "default_ttl 60 s"),
	       "stats: %s", out);
	/* Other maps keep [map]'s defaults. */
	shmmap_map other;
	CK_EQ(shmmap_open(sm, "other", SHMMAP_CREATE, &other), 0);
	CK_EQ(shmmap_put(sm, other, "123456789", 9, "v", 1, 0, 0), 0);
	CK_EQ(buckets_of(sm, other), 4096);
	shmmap_detach(sm);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("opts");
	TCase *tc = tcase_create("opts");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, options_through_the_api);
	tcase_add_test(tc, quota_evict);
	tcase_add_test(tc, quota_reject);
	tcase_add_test(tc, config_sections);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
