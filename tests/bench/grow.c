/*
 * grow.c - the benchmark of issue 11 (maps that size themselves): shmmap
 * with the DEFAULT map configuration (no bucket count: maps start at 1024
 * buckets and grow online) next to a plain in-process open-addressing
 * table holding the same keys, at 100k, 1M and 4M keys.
 *
 * Per key count N (keys of 16 B, values of 64 B):
 *   load   N puts of fresh keys into an empty map, timed (ns per key): for
 *          shmmap this includes every resize the growth makes on the way
 *          (writers move the buckets they touch, the coordinator the rest);
 *          the in-process table is sized for N up front (load <= 0.5), as a
 *          well-sized table would be.
 *   then   shmmap: wait until no resize is under way (untimed); both: get
 *          every key once (untimed warm-up: page faults and first touches
 *          stay out of the timed part);
 *   get    gets of uniformly random keys (a precomputed sequence, the same
 *          for both), for --duration seconds: ops/s, and shmmap / in-process;
 *          every get must find its key (exit 1 otherwise);
 *   put    overwrites of uniformly random keys with a new value of the same
 *          size, for --duration seconds: ops/s.
 * The in-process table: linear probing over slots of {hash, key, value}
 * inline (16 B keys, 64 B values: 96 B a slot), XXH3 as shmmap hashes, a
 * get copies the value out, a put overwrites it in place.  One process,
 * one thread: this measures the table, not scaling.
 *
 * Usage: grow --sock PATH [--keys 100000,1000000,4000000] [--duration S]
 *             [--label TEXT] [--short]
 * (scripts/bench-growth.sh starts a private coordinator with the default
 * [map] section and runs it; make bench runs that.)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shmmap.h"
#include "internal.h" /* the map's table word: resize state and bucket count */

#define KLEN 16
#define VLEN 64
#define SEQ (1u << 22) /* random key indices, cycled */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void key_of(unsigned char *k, uint64_t i)
{
	/* 16 bytes, all of them varying with i. */
	uint64_t a = i * 0x9e3779b97f4a7c15ull, b = i ^ 0x5bd1e995u;
	memcpy(k, &a, 8);
	memcpy(k + 8, &b, 8);
}

static void val_of(unsigned char *v, uint64_t i, unsigned gen)
{
	for (int j = 0; j < VLEN; j++)
		v[j] = (unsigned char)(i + (uint64_t)j * 7 + gen);
}

/* ---- the in-process table ---- */

struct slot {
	uint64_t h; /* 0: empty */
	uint32_t klen, vlen;
	unsigned char key[KLEN];
	unsigned char val[VLEN];
};

struct oa {
	struct slot *s;
	uint64_t mask;
};

static inline uint64_t oa_hash(const void *k)
{
	uint64_t h = XXH3_64bits_withSeed(k, KLEN, 42);
	return h ? h : 1;
}

static inline struct slot *oa_find(const struct oa *t, uint64_t h, const void *k)
{
	for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
		struct slot *s = &t->s[i];
		if (!s->h || (s->h == h && memcmp(s->key, k, KLEN) == 0))
			return s;
	}
}

static void oa_put(struct oa *t, const void *k, const void *v)
{
	uint64_t h = oa_hash(k);
	struct slot *s = oa_find(t, h, k);
	if (!s->h) {
		s->h = h;
		s->klen = KLEN;
		memcpy(s->key, k, KLEN);
	}
	s->vlen = VLEN;
	memcpy(s->val, v, VLEN);
}

static bool oa_get(const struct oa *t, const void *k, void *buf)
{
	uint64_t h = oa_hash(k);
	const struct slot *s = oa_find(t, h, k);
	if (!s->h)
		return false;
	memcpy(buf, s->val, s->vlen);
	return true;
}

/* ---- one key count ---- */

struct result {
	double load_ns, get_ops, put_ops;
	uint32_t buckets;
	uint64_t resizes;
};

static uint32_t *seq;

static int map_state(shmmap *sm, shmmap_map m, uint32_t *buckets, bool *busy, uint64_t *resizes)
{
	const struct map_view *v;
	struct tbl t;
	int rc = shmmap__resolve(sm, m, &v);
	if (rc < 0)
		return rc;
	if (!shmmap__tbl_load(&sm->seg, v, &t))
		return -EAGAIN;
	uint64_t w = atomic_load(&v->dir->tbl);
	*buckets = t.cur_n;
	*busy = t.old_n || v->dir->arr[TBL_CUR(w) ^ 1].nbuckets;
	*resizes = atomic_load(&v->dir->resizes);
	return 0;
}

static int run_shmmap(shmmap *sm, uint64_t n, double dur, struct result *r)
{
	char name[32];
	snprintf(name, sizeof name, "grow-%" PRIu64, n);
	shmmap_map m;
	int rc = shmmap_open(sm, name, SHMMAP_CREATE, &m);
	if (rc < 0)
		return rc;
	unsigned char k[KLEN], v[VLEN], buf[VLEN];
	double t0 = now_s();
	for (uint64_t i = 0; i < n; i++) {
		key_of(k, i);
		val_of(v, i, 0);
		if ((rc = shmmap_put(sm, m, k, KLEN, v, VLEN, 0, 0)) < 0)
			return rc;
	}
	r->load_ns = (now_s() - t0) * 1e9 / (double)n;
	/* Let the growth settle (untimed), then warm up. */
	bool busy = true;
	for (int i = 0; i < 30000 && busy; i++) {
		if ((rc = map_state(sm, m, &r->buckets, &busy, &r->resizes)) < 0)
			return rc;
		if (busy)
			usleep(1000);
	}
	for (uint64_t i = 0; i < n; i++) {
		key_of(k, i);
		size_t vl;
		if (shmmap_get(sm, m, k, KLEN, buf, sizeof buf, &vl) != 0)
			return -ENOENT;
	}
	uint64_t ops = 0;
	t0 = now_s();
	double end = t0 + dur;
	for (uint32_t j = 0;; j = (j + 1) & (SEQ - 1)) {
		key_of(k, seq[j] % n);
		size_t vl;
		if (shmmap_get(sm, m, k, KLEN, buf, sizeof buf, &vl) != 0)
			return -ENOENT;
		if ((++ops & 1023) == 0 && now_s() >= end)
			break;
	}
	r->get_ops = (double)ops / (now_s() - t0);
	ops = 0;
	t0 = now_s();
	end = t0 + dur;
	for (uint32_t j = 0;; j = (j + 1) & (SEQ - 1)) {
		uint64_t i = seq[j] % n;
		key_of(k, i);
		val_of(v, i, 1);
		if ((rc = shmmap_put(sm, m, k, KLEN, v, VLEN, 0, 0)) < 0)
			return rc;
		if ((++ops & 1023) == 0 && now_s() >= end)
			break;
	}
	r->put_ops = (double)ops / (now_s() - t0);
	map_state(sm, m, &r->buckets, &busy, &r->resizes);
	return shmmap_drop(sm, name);
}

static int run_oa(uint64_t n, double dur, struct result *r)
{
	uint64_t cap = 1;
	while (cap < 2 * n)
		cap <<= 1;
	struct oa t = {.s = calloc(cap, sizeof *t.s), .mask = cap - 1};
	if (!t.s)
		return -ENOMEM;
	unsigned char k[KLEN], v[VLEN], buf[VLEN];
	double t0 = now_s();
	for (uint64_t i = 0; i < n; i++) {
		key_of(k, i);
		val_of(v, i, 0);
		oa_put(&t, k, v);
	}
	r->load_ns = (now_s() - t0) * 1e9 / (double)n;
	for (uint64_t i = 0; i < n; i++) {
		key_of(k, i);
		if (!oa_get(&t, k, buf))
			return -ENOENT;
	}
	uint64_t ops = 0;
	t0 = now_s();
	double end = t0 + dur;
	for (uint32_t j = 0;; j = (j + 1) & (SEQ - 1)) {
		key_of(k, seq[j] % n);
		if (!oa_get(&t, k, buf))
			return -ENOENT;
		if ((++ops & 1023) == 0 && now_s() >= end)
			break;
	}
	r->get_ops = (double)ops / (now_s() - t0);
	ops = 0;
	t0 = now_s();
	end = t0 + dur;
	for (uint32_t j = 0;; j = (j + 1) & (SEQ - 1)) {
		uint64_t i = seq[j] % n;
		key_of(k, i);
		val_of(v, i, 1);
		oa_put(&t, k, v);
		if ((++ops & 1023) == 0 && now_s() >= end)
			break;
	}
	r->put_ops = (double)ops / (now_s() - t0);
	r->buckets = (uint32_t)cap;
	free(t.s);
	return 0;
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *keys = "100000,1000000,4000000";
	const char *label = "the default [map] config (4096 initial buckets, growing)";
	double dur = 1.0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--sock") && i + 1 < argc)
			sock = argv[++i];
		else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
			keys = argv[++i];
		else if (!strcmp(argv[i], "--label") && i + 1 < argc)
			label = argv[++i];
		else if (!strcmp(argv[i], "--duration") && i + 1 < argc)
			dur = atof(argv[++i]);
		else if (!strcmp(argv[i], "--short")) {
			keys = "10000,100000";
			dur = 0.2;
		} else {
			fprintf(stderr, "usage: grow --sock PATH [--keys N,N...] [--duration S] "
					"[--label TEXT] [--short]\n");
			return 2;
		}
	}
	seq = malloc(SEQ * sizeof *seq);
	if (!seq)
		return 1;
	uint64_t x = 88172645463325252ull;
	for (uint32_t j = 0; j < SEQ; j++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		seq[j] = (uint32_t)(x >> 11);
	}
	shmmap *sm;
	int rc = shmmap_attach(sock, &sm);
	if (rc < 0) {
		fprintf(stderr, "grow: attach: %s\n", shmmap_strerror(rc));
		return 1;
	}
	printf("shmmap with %s; keys 16 B, values 64 B, one process\n", label);
	printf("%-9s | %-21s | %-29s | %-23s | %-17s\n", "", "load (ns/key)",
	       "get (M ops/s)", "put (M ops/s)", "shmmap table");
	printf("%-9s | %9s %11s | %8s %11s %8s | %8s %11s | %9s %7s\n", "keys", "shmmap",
	       "in-process", "shmmap", "in-process", "ratio", "shmmap", "in-process", "buckets",
	       "load");
	int status = 0;
	for (const char *p = keys; *p;) {
		uint64_t n = strtoull(p, NULL, 10);
		p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p);
		if (!n)
			continue;
		struct result s = {0}, o = {0};
		rc = run_shmmap(sm, n, dur, &s);
		if (rc < 0) {
			fprintf(stderr, "grow: shmmap at %" PRIu64 " keys: %s\n", n,
				shmmap_strerror(rc));
			status = 1;
			continue;
		}
		rc = run_oa(n, dur, &o);
		if (rc < 0) {
			fprintf(stderr, "grow: in-process at %" PRIu64 " keys failed\n", n);
			status = 1;
			continue;
		}
		printf("%-9" PRIu64 " | %9.0f %11.0f | %8.2f %11.2f %7.2fx | %8.2f %11.2f | %9u %7.2f\n",
		       n, s.load_ns, o.load_ns, s.get_ops / 1e6, o.get_ops / 1e6,
		       s.get_ops / o.get_ops, s.put_ops / 1e6, o.put_ops / 1e6, s.buckets,
		       (double)n / s.buckets);
		fflush(stdout);
	}
	shmmap_detach(sm);
	free(seq);
	return status;
}
