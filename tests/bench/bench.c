/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * bench.c - the benchmark of issue 6: shmmap side by side with its peers,
 * on the same workloads, in one run, printing one table.
 *
 * Systems
 *   shmmap      the public API (include/shmmap.h), on a coordinator started
 *               by scripts/bench.sh; every worker process attaches on its own.
 *   in-process  a plain open-addressing (linear probing) hash table written
 *               here, private to each process, no sharing: the ceiling.  It
 *               hashes with XXH3 as shmmap does, keeps (hash, entry pointer)
 *               slots at load <= 0.5 and malloc'ed entries, copies values
 *               out on get and overwrites them in place on put.
 *   LMDB        MDB_WRITEMAP | MDB_NOSYNC | MDB_NOMETASYNC; a get is a
 *               renewed read transaction + mdb_get + copy, a put is its own
 *               write transaction (begin, mdb_put, commit).
 *   Redis       over its Unix socket with hiredis: one round trip per
 *               operation, and pipelined (--depth, 64 by default).
 *
 * Workloads (every system runs exactly the same ones)
 *   keys of 16 B with 64 B values, and keys of 32 B with 1 KiB values;
 *   key choice uniform or Zipf(0.99), from precomputed key index sequences
 *   (the same array for every system; worker w of P starts at w/P of it);
 *   get, put, and a 90/10 get/put mix (a precomputed op sequence); 1 and 2
 *   worker processes, forked, throughput summed.  Each worker first gets
 *   every key once (untimed; not for Redis, whose server stays warm), so a
 *   cell measures the steady state, not page faults of a fresh mapping.
 *   Each cell runs --rounds times (3) for --duration (0.3 s), the systems in
 *   a rotated order each round, and reports the median: the machines this
 *   runs on (small VMs) are noisy.  Workers check a stop flag every 64 ops.
 *
 * Figures
 *   - ops/s per cell, and shmmap / system for each system;
 *   - get latency p50/p99/p99.9 while another process writes (uniform keys,
 *     one timed reader + one writer doing puts flat out); each get is timed
 *     with lfence+rdtsc calibrated against CLOCK_MONOTONIC (clock_gettime
 *     where there is no invariant TSC); the timer's own cost is printed and
 *     not subtracted;
 *   - memory per entry beyond key + value after loading N entries: for
 *     shmmap, the allocator pages taken from the segment's pool (read from
 *     the segment header through shmmap/internal.h) between before the map
 *     was created and after the load, which includes the bucket array; for
 *     LMDB its B-tree pages; for Redis used_memory; for the in-process table
 *     its slots and malloc_usable_size of its entries (+8 B malloc header).
 *
 * Usage (scripts/bench.sh starts the servers and passes the paths):
 *   bench --shmmap-sock PATH [--redis-sock PATH] [--lmdb-dir DIR] [--short]
 *         [--keys N] [--duration S] [--rounds N] [--latency-duration S] [--depth N]
 *         [--systems shmmap,inproc,lmdb,redis,redis-pipe] [--sizes 16,32]
 *         [--dists uniform,zipf] [--ops get,put,mix] [--procs 1,2]
 *         [--no-latency]
 * Exit status: 0, or 1 if any cell failed or a get missed a loaded key.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define BENCH_TSC 1
#endif

#include "shmmap.h"
#include "internal.h" /* segment header: pages used, for memory per entry */

#define XXH_INLINE_ALL
#include <xxhash.h>

#ifdef HAVE_LMDB
#include <lmdb.h>
#endif
#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#define BATCH 64     /* ops between stop checks; the Redis pipeline's default depth */
#define MAXW 2       /* worker processes per cell */
#define GBUF 4096    /* the caller's get buffer */
#define NBINS (2048 + 30 * 64)
#define IP_SEED 0x9e3779b97f4a7c15ULL

enum { S_SHMMAP, S_INPROC, S_LMDB, S_REDIS, S_REDISP, NSYS };
enum { K_GET, K_PUT, K_MIX, NKIND };
enum { D_UNI, D_ZIPF, NDIST };
#define NSIZE 2

static const char *const kind_name[NKIND] = {"get", "put", "90/10"};
static const char *const kind_id[NKIND] = {"get", "put", "mix"};
static const char *const dist_name[NDIST] = {"uniform", "zipf"};

/* ---- options ---- */

static struct {
	bool short_mode, no_latency;
	int rounds;
	uint32_t nkeys, seqlen;
	int depth;
	double dur, lat_dur;
	const char *shm_sock, *redis_sock, *lmdb_dir;
	const char *systems, *sizes, *dists, *ops, *procs;
} opt;

/* Is item one of the comma-separated tokens of list (NULL: everything)? */
static bool listed(const char *list, const char *item)
{
	if (!list)
		return true;
	size_t n = strlen(item);
	for (const char *p = list; *p;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && strncmp(p, item, n) == 0)
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

/* ---- time ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool use_tsc;
static double ns_per_tick = 1.0;
static double timer_cost_ns;
static char timer_desc[128];

static inline uint64_t ticks(void)
{
#ifdef BENCH_TSC
	if (use_tsc) {
		_mm_lfence();
		uint64_t t = __rdtsc();
		_mm_lfence();
		return t;
	}
#endif
	return now_ns();
}

static bool cpu_flag(const char *flag)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[4096];
	bool found = false;
	if (!f)
		return false;
	while (!found && fgets(line, sizeof line, f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		for (char *t = strtok(line, " \t\n"); t; t = strtok(NULL, " \t\n"))
			if (strcmp(t, flag) == 0)
				found = true;
		break;
	}
	fclose(f);
	return found;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void timer_calibrate(void)
{
#ifdef BENCH_TSC
	use_tsc = cpu_flag("constant_tsc") && cpu_flag("nonstop_tsc");
#endif
	if (use_tsc) {
		uint64_t c0 = now_ns(), t0 = ticks();
		sleep_s(opt.short_mode ? 0.02 : 0.1);
		uint64_t c1 = now_ns(), t1 = ticks();
		ns_per_tick = (double)(c1 - c0) / (double)(t1 - t0);
	}
	uint64_t d[1001];
	for (int i = 0; i < 1001; i++) {
		uint64_t a = ticks(), b = ticks();
		d[i] = b - a;
	}
	qsort(d, 1001, sizeof d[0], cmp_u64);
	timer_cost_ns = (double)d[500] * ns_per_tick;
	if (use_tsc)
		snprintf(timer_desc, sizeof timer_desc,
			 "lfence+rdtsc at %.3f GHz, %.0f ns per reading pair (not subtracted)",
			 1.0 / ns_per_tick, timer_cost_ns);
	else
		snprintf(timer_desc, sizeof timer_desc,
			 "clock_gettime(CLOCK_MONOTONIC), %.0f ns per reading pair (not subtracted)",
			 timer_cost_ns);
}

/* ---- latency histogram: 1 ns bins below 2048 ns, then 64 per octave ---- */

static inline unsigned bin_of(uint64_t ns)
{
	if (ns < 2048)
		return (unsigned)ns;
	unsigned e = 63u - (unsigned)__builtin_clzll(ns); /* >= 11 */
	if (e > 40)
		return NBINS - 1;
	return 2048u + (e - 11u) * 64u + ((unsigned)(ns >> (e - 6u)) & 63u);
}

static double bin_mid(unsigned b)
{
	if (b < 2048)
		return b;
	unsigned e = 11u + (b - 2048u) / 64u, sub = (b - 2048u) % 64u;
	double lo = (double)((uint64_t)(64u + sub) << (e - 6u));
	return lo + (double)(1ull << (e - 6u)) / 2.0;
}

static double hist_pct(const uint64_t *h, uint64_t total, double q)
{
	uint64_t want = (uint64_t)ceil(q * (double)total), cum = 0;
	if (want == 0)
		want = 1;
	for (unsigned b = 0; b < NBINS; b++) {
		cum += h[b];
		if (cum >= want)
			return bin_mid(b);
	}
	return bin_mid(NBINS - 1);
}

/* ---- random numbers and workloads ---- */

static uint64_t rng_state = 0x5eed1234abcdULL;

static uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rng_unit(void)
{
	return (double)(rng() >> 11) * (1.0 / 9007199254740992.0);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "bench: out of memory (%zu bytes)\n", n);
		exit(2);
	}
	return p;
}

struct wl {
	uint32_t klen, vlen;
	const char *label;   /* "16 B / 64 B" */
	const char *id;      /* "16", "32" for --sizes */
	unsigned char *keys; /* nkeys * klen */
	char map[SHMMAP_NAME_MAX + 1];
	char lmdb[512];
};

static struct wl wls[NSIZE] = {
	{.klen = 16, .vlen = 64, .label = "16 B / 64 B", .id = "16"},
	{.klen = 32, .vlen = 1024, .label = "32 B / 1 KiB", .id = "32"},
};
static uint32_t *seqs[NDIST];   /* key index sequences, seqlen each */
static uint8_t *mixops;          /* 1 = put, about 10 % */
static uint32_t *load_order;     /* a permutation of the keys */
static uint8_t zeros[BATCH], ones[BATCH];

static inline const unsigned char *key_at(const struct wl *w, uint32_t i)
{
	return w->keys + (size_t)i * w->klen;
}

/* The initial value of key i (every system loads the same bytes). */
static void value_fill(unsigned char *buf, uint32_t vlen, uint32_t i)
{
	for (uint32_t j = 0; j < vlen; j++)
		buf[j] = (unsigned char)('a' + (i + j) % 26);
}

static void workloads_init(void)
{
	uint32_t n = opt.nkeys;
	for (int s = 0; s < NSIZE; s++) {
		struct wl *w = &wls[s];
		w->keys = xmalloc((size_t)n * w->klen);
		for (uint32_t i = 0; i < n; i++) {
			char tmp[64];
			if (w->klen == 16)
				snprintf(tmp, sizeof tmp, "k:%014" PRIu32, i);
			else
				snprintf(tmp, sizeof tmp, "bench:key:%022" PRIu32, i);
			memcpy(w->keys + (size_t)i * w->klen, tmp, w->klen);
		}
		snprintf(w->map, sizeof w->map, "bench-%s-%d", w->id, (int)getpid());
		if (opt.lmdb_dir)
			snprintf(w->lmdb, sizeof w->lmdb, "%s/k%" PRIu32 "v%" PRIu32, opt.lmdb_dir,
				 w->klen, w->vlen);
	}
	/* A random permutation: the load order, and Zipf rank -> key. */
	load_order = xmalloc(n * sizeof *load_order);
	uint32_t *perm = xmalloc(n * sizeof *perm);
	for (uint32_t i = 0; i < n; i++)
		load_order[i] = perm[i] = i;
	for (uint32_t i = n - 1; i > 0; i--) {
		uint32_t j = (uint32_t)(rng() % (i + 1)), t = load_order[i];
		load_order[i] = load_order[j];
		load_order[j] = t;
		j = (uint32_t)(rng() % (i + 1));
		t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	uint32_t L = opt.seqlen;
	seqs[D_UNI] = xmalloc(L * sizeof(uint32_t));
	seqs[D_ZIPF] = xmalloc(L * sizeof(uint32_t));
	mixops = xmalloc(L);
	for (uint32_t i = 0; i < L; i++)
		seqs[D_UNI][i] = (uint32_t)(rng() % n);
	/* Zipf(0.99): rank r (0-based) has weight 1 / (r + 1)^0.99. */
	double *cdf = xmalloc(n * sizeof *cdf), sum = 0;
	for (uint32_t r = 0; r < n; r++) {
		sum += 1.0 / pow((double)r + 1.0, 0.99);
		cdf[r] = sum;
	}
	for (uint32_t i = 0; i < L; i++) {
		double u = rng_unit() * sum;
		uint32_t lo = 0, hi = n - 1;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			if (cdf[mid] >= u)
				hi = mid;
			else
				lo = mid + 1;
		}
		seqs[D_ZIPF][i] = perm[lo];
	}
	for (uint32_t i = 0; i < L; i++)
		mixops[i] = rng_unit() < 0.10;
	memset(ones, 1, sizeof ones);
	free(cdf);
	free(perm);
}

/* ---- per-worker context ---- */

struct wctx {
	const struct wl *w;
	unsigned char *vbuf; /* the value a put writes (first 8 bytes stamped) */
	unsigned char *gbuf; /* the get buffer, GBUF bytes */
	uint64_t stamp, misses, errors;
	char msg[160];
};

__attribute__((format(printf, 2, 3))) static void werr(struct wctx *c, const char *fmt, ...)
{
	c->errors++;
	if (c->msg[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof c->msg, fmt, ap);
	va_end(ap);
}

/* A system: get1 returns 0 (hit), 1 (miss) or -1 (error, werr called). */
struct memres {
	bool ok;
	double per_entry;
	char note[300];
	char version[64];
	char msg[160];
};

struct sysops {
	const char *id, *name;
	bool avail, latency;
	bool warm; /* worth a warm-up pass of gets over every key before timing */
	void *(*open)(const struct wl *w, char *err, size_t cap);
	int (*get1)(void *ctx, const void *k, size_t kl, void *buf, size_t cap, size_t *n,
		    struct wctx *c);
	int (*put1)(void *ctx, const void *k, size_t kl, const void *v, size_t vl, struct wctx *c);
	void (*pipe)(void *ctx, const uint32_t *idx, const uint8_t *ops, size_t n, struct wctx *c);
	void (*close)(void *ctx);
	/* Load every key (in a fresh process) and measure memory; NULL: shares
	 * another system's data. */
	bool (*load)(const struct wl *w, struct memres *m);
};

/* ---- shmmap ---- */

struct shm_ctx {
	shmmap *sm;
	shmmap_map m;
};

static int shm_attach(shmmap **sm)
{
	int rc = -ENOENT;
	for (int i = 0; i < 250; i++) { /* the coordinator may still be starting */
		rc = shmmap_attach(opt.shm_sock, sm);
		if (rc != -ENOENT && rc != -ECONNREFUSED && rc != -EAGAIN)
			return rc;
		sleep_s(0.02);
	}
	return rc;
}

static void *shm_open_(const struct wl *w, char *err, size_t cap)
{
	struct shm_ctx *x = calloc(1, sizeof *x);
	int rc;
	if (!x)
		return NULL;
	if ((rc = shm_attach(&x->sm)) < 0) {
		snprintf(err, cap, "shmmap_attach(%s): %s", opt.shm_sock, shmmap_strerror(rc));
		free(x);
		return NULL;
	}
	if ((rc = shmmap_open(x->sm, w->map, 0, &x->m)) < 0) {
		snprintf(err, cap, "shmmap_open(%s): %s", w->map, shmmap_strerror(rc));
		shmmap_detach(x->sm);
		free(x);
		return NULL;
	}
	return x;
}

static int shm_get1(void *ctx, const void *k, size_t kl, void *buf, size_t cap, size_t *n,
		    struct wctx *c)
{
	struct shm_ctx *x = ctx;
	int rc = shmmap_get(x->sm, x->m, k, kl, buf, cap, n);
	if (rc == 0)
		return 0;
	if (rc == -ENOENT)
		return 1;
	werr(c, "shmmap_get: %s", shmmap_strerror(rc));
	return -1;
}

static int shm_put1(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
		    struct wctx *c)
{
	struct shm_ctx *x = ctx;
	int rc = shmmap_put(x->sm, x->m, k, kl, v, vl, 0, 0);
	if (rc == 0)
		return 0;
	werr(c, "shmmap_put: %s", shmmap_strerror(rc));
	return -1;
}

static void shm_close(void *ctx)
{
	struct shm_ctx *x = ctx;
	shmmap_detach(x->sm);
	free(x);
}

static uint64_t pool_free(shmmap *sm)
{
	return __atomic_load_n(&seg_hdr(&sm->seg)->pool_free, __ATOMIC_ACQUIRE);
}

static bool shm_load(const struct wl *w, struct memres *m)
{
	shmmap *sm;
	shmmap_map map;
	int rc = shm_attach(&sm);
	if (rc < 0) {
		snprintf(m->msg, sizeof m->msg, "shmmap_attach(%s): %s", opt.shm_sock,
			 shmmap_strerror(rc));
		return false;
	}
	uint64_t free0 = pool_free(sm);
	if ((rc = shmmap_open(sm, w->map, SHMMAP_CREATE, &map)) < 0) {
		snprintf(m->msg, sizeof m->msg, "shmmap_open(%s, CREATE): %s", w->map,
			 shmmap_strerror(rc));
		shmmap_detach(sm);
		return false;
	}
	unsigned char *val = xmalloc(w->vlen);
	for (uint32_t i = 0; i < opt.nkeys; i++) {
		uint32_t k = load_order[i];
		value_fill(val, w->vlen, k);
		if ((rc = shmmap_put(sm, map, key_at(w, k), w->klen, val, w->vlen, 0, 0)) < 0) {
			snprintf(m->msg, sizeof m->msg, "shmmap_put (load, key %u): %s", k,
				 shmmap_strerror(rc));
			free(val);
			shmmap_detach(sm);
			return false;
		}
	}
	free(val);
	uint64_t free1 = pool_free(sm);
	const struct seg_mapdir *d = seg_dir(&sm->seg, &sm->geom, (uint32_t)(map.id & 0xffff));
	uint64_t tbytes = (uint64_t)d->nstripes * sizeof(struct seg_stripe) + (uint64_t)d->nbuckets * 8;
	uint64_t tpages = (tbytes + SEG_PAGE - 1) / SEG_PAGE;
	double used = (double)(free0 - free1) * SEG_PAGE, n = opt.nkeys;
	double ent = used - (double)tpages * SEG_PAGE, kv = w->klen + w->vlen;
	m->per_entry = used / n - kv;
	snprintf(m->note, sizeof m->note,
		 "%.0f pages of 64 KiB for %u entries: entry blocks %.1f B/entry (header %zu + "
		 "key+value %.0f + class rounding and slab slack %.1f), bucket array and "
		 "stripes %.1f B/entry (%u buckets, %u stripes)",
		 used / SEG_PAGE, opt.nkeys, ent / n, sizeof(struct seg_entry), kv,
		 ent / n - kv - (double)sizeof(struct seg_entry), (double)tpages * SEG_PAGE / n,
		 d->nbuckets, d->nstripes);
	shmmap_detach(sm);
	return true;
}

/* ---- the in-process table (the ceiling) ---- */

struct ip_ent {
	uint32_t klen, vlen;
	unsigned char data[];
};
struct ip_slot {
	uint64_t h;
	struct ip_ent *e;
};
struct iptab {
	struct ip_slot *slot;
	uint64_t mask;
};

static inline struct ip_slot *ip_find(const struct iptab *t, uint64_t h, const void *k, size_t kl)
{
	for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
		struct ip_slot *s = &t->slot[i];
		if (!s->e || (s->h == h && s->e->klen == kl && memcmp(s->e->data, k, kl) == 0))
			return s;
	}
}

static int ip_put1(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
		   struct wctx *c)
{
	struct iptab *t = ctx;
	uint64_t h = XXH3_64bits_withSeed(k, kl, IP_SEED);
	struct ip_slot *s = ip_find(t, h, k, kl);
	struct ip_ent *e = s->e;
	if (e && e->vlen == vl) {
		memcpy(e->data + kl, v, vl);
		return 0;
	}
	e = realloc(e, sizeof *e + kl + vl);
	if (!e) {
		werr(c, "in-process put: out of memory");
		return -1;
	}
	e->klen = (uint32_t)kl;
	e->vlen = (uint32_t)vl;
	memcpy(e->data, k, kl);
	memcpy(e->data + kl, v, vl);
	s->h = h;
	s->e = e;
	return 0;
}

static int ip_get1(void *ctx, const void *k, size_t kl, void *buf, size_t cap, size_t *n,
		   struct wctx *c)
{
	const struct iptab *t = ctx;
	uint64_t h = XXH3_64bits_withSeed(k, kl, IP_SEED);
	const struct ip_ent *e = ip_find(t, h, k, kl)->e;
	if (!e)
		return 1;
	if (e->vlen > cap) {
		werr(c, "in-process get: value too long");
		return -1;
	}
	memcpy(buf, e->data + kl, e->vlen);
	*n = e->vlen;
	return 0;
}

static struct iptab *ip_build(const struct wl *w)
{
	struct iptab *t = xmalloc(sizeof *t);
	uint64_t cap = 16;
	while (cap < 2ull * opt.nkeys)
		cap <<= 1;
	t->slot = calloc(cap, sizeof *t->slot);
	if (!t->slot) {
		free(t);
		return NULL;
	}
	t->mask = cap - 1;
	unsigned char *val = xmalloc(w->vlen);
	struct wctx c = {0};
	for (uint32_t i = 0; i < opt.nkeys; i++) {
		uint32_t k = load_order[i];
		value_fill(val, w->vlen, k);
		ip_put1(t, key_at(w, k), w->klen, val, w->vlen, &c);
	}
	free(val);
	return t;
}

static void *ip_open(const struct wl *w, char *err, size_t cap)
{
	struct iptab *t = ip_build(w);
	if (!t)
		snprintf(err, cap, "in-process table: out of memory");
	return t;
}

static void ip_close(void *ctx)
{
	struct iptab *t = ctx;
	for (uint64_t i = 0; i <= t->mask; i++)
		free(t->slot[i].e);
	free(t->slot);
	free(t);
}

static bool ip_load(const struct wl *w, struct memres *m)
{
	struct iptab *t = ip_build(w);
	if (!t) {
		snprintf(m->msg, sizeof m->msg, "in-process table: out of memory");
		return false;
	}
	double ent = 0, slots = (double)(t->mask + 1) * sizeof(struct ip_slot), n = opt.nkeys;
	for (uint64_t i = 0; i <= t->mask; i++)
		if (t->slot[i].e)
			ent += (double)malloc_usable_size(t->slot[i].e) + 8.0;
	m->per_entry = (ent + slots) / n - (w->klen + w->vlen);
	snprintf(m->note, sizeof m->note,
		 "malloc'ed entries %.1f B/entry (8 B lengths + key+value + malloc header and "
		 "rounding), slots %.1f B/entry (%" PRIu64 " x 16 B)",
		 ent / n, slots / n, t->mask + 1);
	ip_close(t);
	return true;
}

/* ---- LMDB ---- */

#ifdef HAVE_LMDB
struct lm_ctx {
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *rt; /* a reset read transaction, renewed for each get */
};

static int lm_env(const struct wl *w, struct lm_ctx *x, char *err, size_t cap)
{
	int rc = mdb_env_create(&x->env);
	if (rc == 0)
		rc = mdb_env_set_mapsize(x->env, (size_t)4 << 30);
	if (rc == 0)
		rc = mdb_env_open(x->env, w->lmdb, MDB_WRITEMAP | MDB_NOSYNC | MDB_NOMETASYNC, 0600);
	if (rc != 0) {
		snprintf(err, cap, "mdb_env_open(%s): %s", w->lmdb, mdb_strerror(rc));
		if (x->env)
			mdb_env_close(x->env);
		return -1;
	}
	int dead;
	mdb_reader_check(x->env, &dead);
	MDB_txn *t;
	rc = mdb_txn_begin(x->env, NULL, 0, &t);
	if (rc == 0)
		rc = mdb_dbi_open(t, NULL, 0, &x->dbi);
	if (rc == 0)
		rc = mdb_txn_commit(t);
	if (rc != 0) {
		snprintf(err, cap, "mdb_dbi_open: %s", mdb_strerror(rc));
		mdb_env_close(x->env);
		return -1;
	}
	return 0;
}

static void *lm_open(const struct wl *w, char *err, size_t cap)
{
	struct lm_ctx *x = calloc(1, sizeof *x);
	if (!x || lm_env(w, x, err, cap) < 0) {
		free(x);
		return NULL;
	}
	int rc = mdb_txn_begin(x->env, NULL, MDB_RDONLY, &x->rt);
	if (rc != 0) {
		snprintf(err, cap, "mdb_txn_begin(RDONLY): %s", mdb_strerror(rc));
		mdb_env_close(x->env);
		free(x);
		return NULL;
	}
	mdb_txn_reset(x->rt);
	return x;
}

static int lm_get1(void *ctx, const void *k, size_t kl, void *buf, size_t cap, size_t *n,
		   struct wctx *c)
{
	struct lm_ctx *x = ctx;
	MDB_val key = {kl, (void *)k}, val;
	int rc = mdb_txn_renew(x->rt);
	if (rc != 0) {
		werr(c, "mdb_txn_renew: %s", mdb_strerror(rc));
		return -1;
	}
	rc = mdb_get(x->rt, x->dbi, &key, &val);
	int ret = 0;
	if (rc == 0 && val.mv_size <= cap) {
		memcpy(buf, val.mv_data, val.mv_size);
		*n = val.mv_size;
	} else if (rc == MDB_NOTFOUND) {
		ret = 1;
	} else {
		werr(c, "mdb_get: %s", rc ? mdb_strerror(rc) : "value too long");
		ret = -1;
	}
	mdb_txn_reset(x->rt);
	return ret;
}

static int lm_put1(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
		   struct wctx *c)
{
	struct lm_ctx *x = ctx;
	MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
	MDB_txn *t;
	int rc = mdb_txn_begin(x->env, NULL, 0, &t);
	if (rc == 0) {
		rc = mdb_put(t, x->dbi, &key, &val, 0);
		if (rc == 0)
			rc = mdb_txn_commit(t);
		else
			mdb_txn_abort(t);
	}
	if (rc == 0)
		return 0;
	werr(c, "mdb put: %s", mdb_strerror(rc));
	return -1;
}

static void lm_close(void *ctx)
{
	struct lm_ctx *x = ctx;
	mdb_txn_abort(x->rt);
	mdb_env_close(x->env);
	free(x);
}

static bool lm_load(const struct wl *w, struct memres *m)
{
	struct lm_ctx x = {0};
	if (mkdir(w->lmdb, 0700) < 0 && errno != EEXIST) {
		snprintf(m->msg, sizeof m->msg, "mkdir %.100s: %s", w->lmdb, strerror(errno));
		return false;
	}
	if (lm_env(w, &x, m->msg, sizeof m->msg) < 0)
		return false;
	MDB_txn *t;
	int rc = mdb_txn_begin(x.env, NULL, 0, &t);
	unsigned char *val = xmalloc(w->vlen);
	for (uint32_t i = 0; rc == 0 && i < opt.nkeys; i++) {
		uint32_t k = load_order[i];
		value_fill(val, w->vlen, k);
		MDB_val kv = {w->klen, (void *)key_at(w, k)}, vv = {w->vlen, val};
		rc = mdb_put(t, x.dbi, &kv, &vv, 0);
	}
	free(val);
	MDB_stat st;
	if (rc == 0)
		rc = mdb_stat(t, x.dbi, &st);
	if (rc == 0)
		rc = mdb_txn_commit(t);
	else
		mdb_txn_abort(t);
	if (rc != 0) {
		snprintf(m->msg, sizeof m->msg, "LMDB load: %s", mdb_strerror(rc));
		mdb_env_close(x.env);
		return false;
	}
	double pages = (double)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
	m->per_entry = pages * st.ms_psize / opt.nkeys - (w->klen + w->vlen);
	snprintf(m->note, sizeof m->note,
		 "B-tree of depth %u: %zu branch, %zu leaf, %zu overflow pages of %u B",
		 st.ms_depth, st.ms_branch_pages, st.ms_leaf_pages, st.ms_overflow_pages,
		 st.ms_psize);
	int major, minor, patch;
	mdb_version(&major, &minor, &patch);
	snprintf(m->version, sizeof m->version, "LMDB %d.%d.%d", major, minor, patch);
	mdb_env_close(x.env);
	return true;
}
#endif

/* ---- Redis ---- */

#ifdef HAVE_HIREDIS
static void *rd_open(const struct wl *w, char *err, size_t cap)
{
	(void)w;
	redisContext *c = redisConnectUnix(opt.redis_sock);
	if (!c || c->err) {
		snprintf(err, cap, "redis connect %s: %s", opt.redis_sock,
			 c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return NULL;
	}
	return c;
}

static void rd_close(void *ctx)
{
	redisFree(ctx);
}

static void rd_append(redisContext *rc, const void *k, size_t kl, const void *v, size_t vl,
		      bool put)
{
	const char *argv[3] = {put ? "SET" : "GET", k, v};
	size_t len[3] = {3, kl, vl};
	redisAppendCommandArgv(rc, put ? 3 : 2, argv, len);
}

/* Read one reply; for a get copy the value out.  0 / 1 (miss) / -1. */
static int rd_reply(redisContext *rc, bool put, void *buf, size_t cap, size_t *n, struct wctx *c)
{
	redisReply *r = NULL;
	if (redisGetReply(rc, (void **)&r) != REDIS_OK || !r) {
		werr(c, "redis: %s", rc->errstr);
		return -1;
	}
	int ret = 0;
	if (put) {
		if (r->type != REDIS_REPLY_STATUS) {
			werr(c, "redis SET: reply type %d", r->type);
			ret = -1;
		}
	} else if (r->type == REDIS_REPLY_STRING && (size_t)r->len <= cap) {
		memcpy(buf, r->str, (size_t)r->len);
		*n = (size_t)r->len;
	} else if (r->type == REDIS_REPLY_NIL) {
		ret = 1;
	} else {
		werr(c, "redis GET: reply type %d", r->type);
		ret = -1;
	}
	freeReplyObject(r);
	return ret;
}

static int rd_get1(void *ctx, const void *k, size_t kl, void *buf, size_t cap, size_t *n,
		   struct wctx *c)
{
	rd_append(ctx, k, kl, NULL, 0, false);
	return rd_reply(ctx, false, buf, cap, n, c);
}

static int rd_put1(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
		   struct wctx *c)
{
	rd_append(ctx, k, kl, v, vl, true);
	return rd_reply(ctx, true, NULL, 0, NULL, c);
}

static void rd_pipe(void *ctx, const uint32_t *idx, const uint8_t *ops, size_t n, struct wctx *c)
{
	const struct wl *w = c->w;
	for (size_t done = 0; done < n;) {
		size_t m = n - done < (size_t)opt.depth ? n - done : (size_t)opt.depth;
		for (size_t i = done; i < done + m; i++) {
			if (ops[i])
				memcpy(c->vbuf, &c->stamp, sizeof c->stamp), c->stamp++;
			rd_append(ctx, key_at(w, idx[i]), w->klen, c->vbuf, w->vlen, ops[i]);
		}
		for (size_t i = done; i < done + m; i++) {
			size_t got = 0;
			int r = rd_reply(ctx, ops[i], c->gbuf, GBUF, &got, c);
			if (r == 1)
				c->misses++;
			else if (r == 0 && !ops[i] && got != w->vlen)
				werr(c, "redis GET: %zu bytes, want %u", got, w->vlen);
		}
		done += m;
	}
}

static long long rd_info(redisContext *rc, const char *section, const char *field, char *str,
			 size_t cap)
{
	redisReply *r = redisCommand(rc, "INFO %s", section);
	long long v = -1;
	if (r && r->type == REDIS_REPLY_STRING) {
		char pat[64];
		snprintf(pat, sizeof pat, "\n%s:", field);
		const char *p = strstr(r->str, pat);
		if (p) {
			p += strlen(pat);
			v = atoll(p);
			if (str) {
				size_t i = 0;
				while (i + 1 < cap && p[i] && p[i] != '\r' && p[i] != '\n') {
					str[i] = p[i];
					i++;
				}
				str[i] = '\0';
			}
		}
	}
	if (r)
		freeReplyObject(r);
	return v;
}

static bool rd_load(const struct wl *w, struct memres *m)
{
	redisContext *rc = rd_open(w, m->msg, sizeof m->msg);
	if (!rc)
		return false;
	redisReply *r = redisCommand(rc, "FLUSHALL");
	if (r)
		freeReplyObject(r);
	long long before = rd_info(rc, "memory", "used_memory", NULL, 0);
	unsigned char *val = xmalloc(w->vlen);
	struct wctx c = {.w = w};
	for (uint32_t i = 0; i < opt.nkeys; i += 256) {
		uint32_t m2 = opt.nkeys - i < 256 ? opt.nkeys - i : 256;
		for (uint32_t j = i; j < i + m2; j++) {
			value_fill(val, w->vlen, load_order[j]);
			rd_append(rc, key_at(w, load_order[j]), w->klen, val, w->vlen, true);
		}
		for (uint32_t j = 0; j < m2; j++)
			rd_reply(rc, true, NULL, 0, NULL, &c);
	}
	free(val);
	long long after = rd_info(rc, "memory", "used_memory", NULL, 0);
	char ver[32] = "?";
	rd_info(rc, "server", "redis_version", ver, sizeof ver);
	snprintf(m->version, sizeof m->version, "Redis %s (hiredis %d.%d.%d)", ver,
		 HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
	redisFree(rc);
	if (c.errors || before < 0 || after < 0) {
		snprintf(m->msg, sizeof m->msg, "redis load: %.140s", c.msg[0] ? c.msg : "INFO failed");
		return false;
	}
	m->per_entry = (double)(after - before) / opt.nkeys - (w->klen + w->vlen);
	snprintf(m->note, sizeof m->note, "used_memory grew by %lld bytes for %u keys",
		 after - before, opt.nkeys);
	return true;
}
#endif

static struct sysops systems[NSYS] = {
	[S_SHMMAP] = {.id = "shmmap", .name = "shmmap", .latency = true, .warm = true, .open = shm_open_,
		      .get1 = shm_get1, .put1 = shm_put1, .close = shm_close, .load = shm_load},
	[S_INPROC] = {.id = "inproc", .name = "in-process", .latency = true, .warm = true, .open = ip_open,
		      .get1 = ip_get1, .put1 = ip_put1, .close = ip_close, .load = ip_load},
#ifdef HAVE_LMDB
	[S_LMDB] = {.id = "lmdb", .name = "LMDB", .latency = true, .warm = true, .open = lm_open,
		    .get1 = lm_get1, .put1 = lm_put1, .close = lm_close, .load = lm_load},
#else
	[S_LMDB] = {.id = "lmdb", .name = "LMDB"},
#endif
#ifdef HAVE_HIREDIS
	[S_REDIS] = {.id = "redis", .name = "Redis", .latency = true, .open = rd_open,
		     .get1 = rd_get1, .put1 = rd_put1, .close = rd_close, .load = rd_load},
	[S_REDISP] = {.id = "redis-pipe", .name = "Redis pipe", .open = rd_open,
		      .get1 = rd_get1, .put1 = rd_put1, .pipe = rd_pipe, .close = rd_close},
#else
	[S_REDIS] = {.id = "redis", .name = "Redis"},
	[S_REDISP] = {.id = "redis-pipe", .name = "Redis pipe"},
#endif
};

/* ---- running cells: forked workers, a shared control block ---- */

struct wres {
	_Alignas(64) uint64_t ops, misses, errors, lat_n;
	double secs;
	int failed;
	char msg[160];
	uint64_t hist[NBINS];
};

struct ctl {
	_Alignas(64) _Atomic int ready;
	_Alignas(64) _Atomic int go;
	_Alignas(64) _Atomic int stop;
	struct wres w[MAXW];
	struct memres mem;
};

static struct ctl *ctl;
static pid_t parent_pid;

struct job {
	const struct sysops *s;
	const struct wl *w;
	int kind, dist, nproc;
	bool latency; /* worker 0 times gets, worker 1 puts */
};

static void do_ops(const struct sysops *s, void *ctx, const uint32_t *idx, const uint8_t *ops,
		   size_t n, struct wctx *c)
{
	const struct wl *w = c->w;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *k = key_at(w, idx[i]);
		if (ops[i]) {
			memcpy(c->vbuf, &c->stamp, sizeof c->stamp);
			c->stamp++;
			s->put1(ctx, k, w->klen, c->vbuf, w->vlen, c);
		} else {
			size_t got = 0;
			int r = s->get1(ctx, k, w->klen, c->gbuf, GBUF, &got, c);
			if (r == 1)
				c->misses++;
			else if (r == 0 && got != w->vlen)
				werr(c, "get: %zu bytes, want %u", got, w->vlen);
		}
	}
}

static void worker(int wi, const struct job *j)
{
	struct wres *r = &ctl->w[wi];
	const struct sysops *s = j->s;
	const struct wl *w = j->w;
	struct wctx c = {.w = w, .vbuf = xmalloc(w->vlen), .gbuf = xmalloc(GBUF)};
	value_fill(c.vbuf, w->vlen, 7);
	char err[160] = "";
	void *ctx = s->open(w, err, sizeof err);
	if (!ctx) {
		snprintf(r->msg, sizeof r->msg, "%s", err[0] ? err : "open failed");
		r->failed = 1;
		atomic_fetch_add(&ctl->ready, 1);
		_exit(1);
	}
	int nw = j->latency ? 2 : j->nproc;
	uint32_t mask = opt.seqlen - 1;
	uint32_t pos = (uint32_t)(((uint64_t)opt.seqlen * (uint32_t)wi / (uint32_t)nw) & ~(uint64_t)(BATCH - 1));
	const uint32_t *seq = seqs[j->latency ? D_UNI : j->dist];
	int kind = j->latency ? (wi == 0 ? K_GET : K_PUT) : j->kind;
	bool timed = j->latency && wi == 0;
	if (s->warm) {
		/* Steady state: fault in this process's mapping and warm the caches
		 * and TLB with one get of every key (not timed, not counted). */
		for (uint32_t i = 0; i < opt.nkeys; i++) {
			size_t got;
			s->get1(ctx, key_at(w, i), w->klen, c.gbuf, GBUF, &got, &c);
		}
		c.errors = c.misses = 0;
		c.msg[0] = '\0';
	}
	atomic_fetch_add(&ctl->ready, 1);
	while (!atomic_load_explicit(&ctl->go, memory_order_acquire))
		sched_yield();
	uint64_t t0 = now_ns(), ops = 0;
	while (!atomic_load_explicit(&ctl->stop, memory_order_relaxed)) {
		const uint32_t *idx = seq + pos;
		if (timed) {
			for (int i = 0; i < BATCH; i++) {
				size_t got = 0;
				const unsigned char *k = key_at(w, idx[i]);
				uint64_t a = ticks();
				int rc = s->get1(ctx, k, w->klen, c.gbuf, GBUF, &got, &c);
				uint64_t b = ticks();
				r->hist[bin_of((uint64_t)((double)(b - a) * ns_per_tick))]++;
				if (rc == 1)
					c.misses++;
				else if (rc == 0 && got != w->vlen)
					werr(&c, "get: %zu bytes, want %u", got, w->vlen);
			}
			r->lat_n += BATCH;
		} else {
			const uint8_t *o = kind == K_MIX ? mixops + pos : kind == K_PUT ? ones : zeros;
			if (s->pipe)
				s->pipe(ctx, idx, o, BATCH, &c);
			else
				do_ops(s, ctx, idx, o, BATCH, &c);
		}
		ops += BATCH;
		pos = (pos + BATCH) & mask;
	}
	r->secs = (double)(now_ns() - t0) / 1e9;
	r->ops = ops;
	r->misses = c.misses;
	r->errors = c.errors;
	snprintf(r->msg, sizeof r->msg, "%s", c.msg);
	s->close(ctx);
}

static pid_t spawn(int wi, const struct job *j, bool loader)
{
	fflush(stdout);
	fflush(stderr);
	pid_t p = fork();
	if (p < 0) {
		perror("bench: fork");
		return -1;
	}
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent_pid)
			_exit(1);
		if (loader)
			ctl->mem.ok = j->s->load(j->w, &ctl->mem);
		else
			worker(wi, j);
		_exit(0);
	}
	return p;
}

/* Wait for pid at most deadline_s; kill it after that.  Returns true if it
 * exited with status 0. */
static bool reap(pid_t pid, double deadline_s)
{
	uint64_t end = now_ns() + (uint64_t)(deadline_s * 1e9);
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) && WEXITSTATUS(st) == 0;
		if (r < 0)
			return false;
		if (now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return false;
		}
		sleep_s(0.002);
	}
}

#define MAXR 9
struct cellres {
	bool ran, ok;
	int nr;
	double ops_s;           /* median of the rounds */
	double round[MAXR];
	uint64_t misses, errors;
	char msg[200];
};

struct latres {
	bool ran, ok;
	double p50, p99, p999, gets_s, puts_s;
	uint64_t n;
	char msg[200];
};

static struct cellres cells[NSIZE][NDIST][NKIND][MAXW][NSYS];
static struct latres lats[NSIZE][NSYS];
static struct memres mems[NSIZE][NSYS];
static char versions[NSYS][64];
static int failures;

/* Run one cell: returns false if a worker failed (message in msg). */
static bool run_job(const struct job *j, double dur, char *msg, size_t cap)
{
	memset(ctl, 0, sizeof *ctl);
	int n = j->latency ? 2 : j->nproc;
	pid_t pids[MAXW];
	bool ok = true;
	for (int i = 0; i < n; i++)
		pids[i] = spawn(i, j, false);
	uint64_t end = now_ns() + 300ull * 1000000000u;
	while (atomic_load(&ctl->ready) < n) {
		for (int i = 0; i < n; i++) {
			int st;
			if (pids[i] > 0 && !ctl->w[i].failed && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				snprintf(ctl->w[i].msg, sizeof ctl->w[i].msg, "worker died before starting");
				ctl->w[i].failed = 1;
				pids[i] = -1;
				atomic_fetch_add(&ctl->ready, 1);
			}
		}
		if (now_ns() > end) {
			snprintf(msg, cap, "workers not ready after 300 s");
			ok = false;
			break;
		}
		sleep_s(0.001);
	}
	atomic_store(&ctl->go, 1);
	sleep_s(dur);
	atomic_store(&ctl->stop, 1);
	for (int i = 0; i < n; i++)
		if (pids[i] > 0 && !reap(pids[i], 120) && !ctl->w[i].failed) {
			ctl->w[i].failed = 1;
			if (!ctl->w[i].msg[0])
				snprintf(ctl->w[i].msg, sizeof ctl->w[i].msg, "worker crashed or hung");
		}
	for (int i = 0; i < n; i++)
		if (ctl->w[i].failed || ctl->w[i].errors) {
			if (ok)
				snprintf(msg, cap, "worker %d: %s", i, ctl->w[i].msg);
			ok = false;
		}
	return ok;
}

static void run_cell(int si, int d, int k, int np, int sys)
{
	struct cellres *c = &cells[si][d][k][np - 1][sys];
	struct job j = {.s = &systems[sys], .w = &wls[si], .kind = k, .dist = d, .nproc = np};
	bool first = !c->ran;
	c->ran = true;
	char msg[sizeof c->msg];
	bool ok = run_job(&j, opt.dur, msg, sizeof msg);
	if (first)
		c->ok = true;
	if (!ok && c->ok)
		snprintf(c->msg, sizeof c->msg, "%s", msg);
	c->ok = c->ok && ok;
	double v = 0;
	for (int i = 0; i < np; i++) {
		struct wres *r = &ctl->w[i];
		if (r->secs > 0)
			v += (double)r->ops / r->secs;
		c->misses += r->misses;
		c->errors += r->errors;
	}
	if (c->nr < MAXR)
		c->round[c->nr++] = v;
	double sorted[MAXR];
	memcpy(sorted, c->round, sizeof sorted);
	for (int a = 1; a < c->nr; a++) /* insertion sort: at most MAXR values */
		for (int b = a; b > 0 && sorted[b - 1] > sorted[b]; b--) {
			double t = sorted[b];
			sorted[b] = sorted[b - 1];
			sorted[b - 1] = t;
		}
	c->ops_s = c->nr % 2 ? sorted[c->nr / 2] : (sorted[c->nr / 2 - 1] + sorted[c->nr / 2]) / 2;
	if (c->misses && c->ok) {
		snprintf(c->msg, sizeof c->msg, "%" PRIu64 " gets missed a loaded key", c->misses);
		c->ok = false;
	}
}

static void run_latency(int si, int sys)
{
	struct latres *l = &lats[si][sys];
	struct job j = {.s = &systems[sys], .w = &wls[si], .latency = true, .nproc = 2};
	l->ran = true;
	l->ok = run_job(&j, opt.lat_dur, l->msg, sizeof l->msg);
	struct wres *r = &ctl->w[0], *wr = &ctl->w[1];
	l->n = r->lat_n;
	if (l->n) {
		l->p50 = hist_pct(r->hist, l->n, 0.50);
		l->p99 = hist_pct(r->hist, l->n, 0.99);
		l->p999 = hist_pct(r->hist, l->n, 0.999);
	}
	if (r->secs > 0)
		l->gets_s = (double)r->ops / r->secs;
	if (wr->secs > 0)
		l->puts_s = (double)wr->ops / wr->secs;
	if (r->misses && l->ok) {
		snprintf(l->msg, sizeof l->msg, "%" PRIu64 " gets missed a loaded key", r->misses);
		l->ok = false;
	}
	if (!l->ok || !l->n)
		failures++;
}

static void run_load(int si, int sys)
{
	struct memres *m = &mems[si][sys];
	struct job j = {.s = &systems[sys], .w = &wls[si]};
	memset(ctl, 0, sizeof *ctl);
	pid_t p = spawn(0, &j, true);
	bool exited = p > 0 && reap(p, 600);
	*m = ctl->mem;
	if (!exited && !m->msg[0])
		snprintf(m->msg, sizeof m->msg, "loader crashed or hung");
	m->ok = m->ok && exited;
	if (m->version[0])
		snprintf(versions[sys], sizeof versions[sys], "%s", m->version);
}

/* ---- output ---- */

static const char *fmt_rate(char *b, size_t cap, double v)
{
	if (v >= 1e9)
		snprintf(b, cap, "%.2fG", v / 1e9);
	else if (v >= 1e6)
		snprintf(b, cap, "%.2fM", v / 1e6);
	else if (v >= 1e3)
		snprintf(b, cap, "%.1fk", v / 1e3);
	else
		snprintf(b, cap, "%.0f", v);
	return b;
}

static const char *fmt_ratio(char *b, size_t cap, double r)
{
	if (r >= 100)
		snprintf(b, cap, "%.0fx", r);
	else if (r >= 10)
		snprintf(b, cap, "%.1fx", r);
	else
		snprintf(b, cap, "%.2fx", r);
	return b;
}

static const char *fmt_ns(char *b, size_t cap, double ns)
{
	if (ns >= 1e6)
		snprintf(b, cap, "%.1fms", ns / 1e6);
	else if (ns >= 1e4)
		snprintf(b, cap, "%.1fus", ns / 1e3);
	else
		snprintf(b, cap, "%.0fns", ns);
	return b;
}

static bool sys_on(int s)
{
	return systems[s].avail;
}

static void print_machine(void)
{
	char model[256] = "unknown", line[512], cs[64] = "?";
	FILE *f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof line, f)) {
		char *p = strchr(line, ':');
		if (strncmp(line, "model name", 10) == 0 && p) {
			snprintf(model, sizeof model, "%s", p + 2);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
	long long memkb = 0;
	f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemTotal: %lld kB", &memkb) == 1)
			break;
	if (f)
		fclose(f);
	f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
	if (f) {
		if (fgets(cs, sizeof cs, f))
			cs[strcspn(cs, "\n")] = '\0';
		fclose(f);
	}
	struct utsname u;
	uname(&u);
	printf("machine: %s, %ld cores online, %.1f GiB RAM, Linux %s %s, clocksource %s\n",
	       model, sysconf(_SC_NPROCESSORS_ONLN), (double)memkb / (1024.0 * 1024.0), u.release,
	       u.machine, cs);
	printf("timer:   %s\n", timer_desc);
}

/*
 * What the machine itself gives: dependent-free random 8-byte reads over a
 * shared 256 MiB array, by 1 process and by 2 at once.  A get of a table
 * much larger than the caches is a few such reads, so this bounds how any
 * table here can scale from 1 to 2 processes (printed as a ratio).
 */
static double probe_reads(const uint64_t *a, size_t n, int nproc, double secs)
{
	_Atomic uint64_t *done = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (done == MAP_FAILED)
		return NAN;
	atomic_store(done, 0);
	double t0 = (double)now_ns() / 1e9;
	pid_t pids[2] = {0, 0};
	for (int p = 0; p < nproc; p++) {
		pids[p] = fork();
		if (pids[p] == 0) {
			uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(p + 1), sum = 0, ops = 0;
			while ((double)now_ns() / 1e9 - t0 < secs) {
				for (int i = 0; i < 4096; i++) {
					x = x * 6364136223846793005ull + 1442695040888963407ull;
					sum += a[(x >> 17) % n];
				}
				ops += 4096;
			}
			atomic_fetch_add(done, ops + (sum == 42));
			_exit(0);
		}
	}
	for (int p = 0; p < nproc; p++)
		if (pids[p] > 0)
			waitpid(pids[p], NULL, 0);
	double r = (double)atomic_load(done) / secs;
	munmap(done, 4096);
	return r;
}

static void print_memory_probe(void)
{
	/* The tables of the 16/64 workload take about 16 MiB, those of 32/1K
	 * more than 100 MiB. */
	const size_t mib[2] = {16, 256};
	for (int k = 0; k < (opt.short_mode ? 1 : 2); k++) {
		size_t n = mib[k] << 17; /* 8-byte words */
		uint64_t *a = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				   -1, 0);
		if (a == MAP_FAILED)
			return;
		for (size_t i = 0; i < n; i++)
			a[i] = i;
		double secs = opt.short_mode ? 0.1 : 0.5;
		double one = probe_reads(a, n, 1, secs), two = probe_reads(a, n, 2, secs);
		printf("memory:  random 8-byte reads over %zu MiB: 1 process %.1fM/s, 2 processes "
		       "%.1fM/s (%.2fx)\n", mib[k], one / 1e6, two / 1e6, two / one);
		munmap(a, n * 8);
	}
	printf("         (what the machine gives: the most any table here can scale from 1 to 2 "
	       "processes)\n");
}

static void print_throughput(void)
{
	char a[32], b[32];
	printf("\nThroughput, ops/s summed over the worker processes (P); after each peer, shmmap / "
	       "peer\n(above 1: shmmap is faster).  Redis pipe = %d commands per round trip.\n\n",
	       opt.depth);
	printf("%-13s %-8s %-5s %1s %9s", "keys/values", "keys", "op", "P", "shmmap");
	for (int s = S_INPROC; s < NSYS; s++)
		printf("   %-16s", systems[s].name);
	printf("\n");
	for (int si = 0; si < NSIZE; si++)
		for (int d = 0; d < NDIST; d++)
			for (int k = 0; k < NKIND; k++)
				for (int np = 1; np <= MAXW; np++) {
					struct cellres *row = cells[si][d][k][np - 1];
					bool any = false;
					for (int s = 0; s < NSYS; s++)
						any |= row[s].ran;
					if (!any)
						continue;
					printf("%-13s %-8s %-5s %d", wls[si].label, dist_name[d], kind_name[k],
					       np);
					const struct cellres *sh = &row[S_SHMMAP];
					if (sh->ran && sh->ok)
						printf(" %9s", fmt_rate(a, sizeof a, sh->ops_s));
					else
						printf(" %9s", sh->ran ? "FAILED" : "-");
					for (int s = S_INPROC; s < NSYS; s++) {
						const struct cellres *c = &row[s];
						if (!c->ran)
							printf("   %-16s", "-");
						else if (!c->ok)
							printf("   %-16s", "FAILED");
						else if (sh->ran && sh->ok && c->ops_s > 0)
							printf("   %7s %-8s", fmt_rate(a, sizeof a, c->ops_s),
							       fmt_ratio(b, sizeof b, sh->ops_s / c->ops_s));
						else
							printf("   %-16s", fmt_rate(a, sizeof a, c->ops_s));
					}
					printf("\n");
				}
}

static void print_latency(void)
{
	bool any = false;
	for (int si = 0; si < NSIZE; si++)
		for (int s = 0; s < NSYS; s++)
			any |= lats[si][s].ran;
	if (!any)
		return;
	char a[32], b[32], c[32], d[32], e[32];
	printf("\nGet latency while another process writes (uniform keys; one timed reader, one "
	       "writer doing puts flat out).\nin-process: the writer writes its own private copy "
	       "(nothing is shared).\n\n");
	printf("%-13s %-11s %8s %8s %8s %10s %13s\n", "keys/values", "system", "p50", "p99",
	       "p99.9", "reader/s", "writer puts/s");
	for (int si = 0; si < NSIZE; si++)
		for (int s = 0; s < NSYS; s++) {
			const struct latres *l = &lats[si][s];
			if (!l->ran)
				continue;
			if (!l->ok || !l->n) {
				printf("%-13s %-11s FAILED\n", wls[si].label, systems[s].name);
				continue;
			}
			printf("%-13s %-11s %8s %8s %8s %10s %13s\n", wls[si].label, systems[s].name,
			       fmt_ns(a, sizeof a, l->p50), fmt_ns(b, sizeof b, l->p99),
			       fmt_ns(c, sizeof c, l->p999), fmt_rate(d, sizeof d, l->gets_s),
			       fmt_rate(e, sizeof e, l->puts_s));
		}
}

static void print_memory(void)
{
	bool any = false;
	for (int si = 0; si < NSIZE; si++)
		for (int s = 0; s < NSYS; s++)
			any |= mems[si][s].ok;
	if (!any)
		return;
	printf("\nMemory per entry beyond key + value, after loading %u entries:\n\n", opt.nkeys);
	printf("%-11s", "system");
	for (int si = 0; si < NSIZE; si++)
		printf(" %14s", wls[si].label);
	printf("\n");
	for (int s = 0; s < NSYS; s++) {
		if (!systems[s].load || !sys_on(s))
			continue;
		printf("%-11s", systems[s].name);
		for (int si = 0; si < NSIZE; si++) {
			const struct memres *m = &mems[si][s];
			if (m->ok)
				printf(" %12.1f B", m->per_entry);
			else
				printf(" %14s", "-");
		}
		printf("\n");
	}
	for (int s = 0; s < NSYS; s++)
		for (int si = 0; si < NSIZE; si++)
			if (mems[si][s].ok && mems[si][s].note[0])
				printf("  %s, %s: %s\n", systems[s].name, wls[si].label, mems[si][s].note);
}

/* ---- targets of issue 6 ---- */

static double ratio_of(int si, int d, int k, int np, int sys)
{
	const struct cellres *a = &cells[si][d][k][np - 1][S_SHMMAP], *b = &cells[si][d][k][np - 1][sys];
	if (!a->ran || !a->ok || !b->ran || !b->ok || b->ops_s <= 0)
		return NAN;
	return a->ops_s / b->ops_s;
}

/* Worst (smallest) shmmap/sys over every cell of kind k; where in *where. */
static double worst_ratio(int k, int sys, char *where, size_t cap)
{
	double worst = NAN;
	for (int si = 0; si < NSIZE; si++)
		for (int d = 0; d < NDIST; d++)
			for (int np = 1; np <= MAXW; np++) {
				double r = ratio_of(si, d, k, np, sys);
				if (!isnan(r) && (isnan(worst) || r < worst)) {
					worst = r;
					snprintf(where, cap, "%s %s %dP", wls[si].id, dist_name[d], np);
				}
			}
	return worst;
}

static double scale_of(int si, int d, int k_num, int np_num, int k_den, int np_den)
{
	const struct cellres *a = &cells[si][d][k_num][np_num - 1][S_SHMMAP];
	const struct cellres *b = &cells[si][d][k_den][np_den - 1][S_SHMMAP];
	if (!a->ran || !a->ok || !b->ran || !b->ok || b->ops_s <= 0)
		return NAN;
	return a->ops_s / b->ops_s;
}

static double worst_scale(int k_num, int np_num, int k_den, int np_den, char *where, size_t cap)
{
	double worst = NAN;
	for (int si = 0; si < NSIZE; si++)
		for (int d = 0; d < NDIST; d++) {
			double r = scale_of(si, d, k_num, np_num, k_den, np_den);
			if (!isnan(r) && (isnan(worst) || r < worst)) {
				worst = r;
				snprintf(where, cap, "%s %s", wls[si].id, dist_name[d]);
			}
		}
	return worst;
}

static void target_row(const char *what, double v, double w, const char *where, double goal,
		       bool below, const char *unit)
{
	char a[32], b[32];
	if (unit[0] == 'x') {
		fmt_ratio(a, sizeof a, v);
		fmt_ratio(b, sizeof b, w);
	} else {
		snprintf(a, sizeof a, "%.1f%s", v, unit);
		snprintf(b, sizeof b, "%.1f%s", w, unit);
	}
#define VERDICT(x) (isnan(x) ? "n/a" : ((below ? (x) < goal : (x) >= goal) ? "met" : "MISSED"))
	printf("%-44s %9s %-7s", what, isnan(v) ? "-" : a, VERDICT(v));
	if (where)
		printf("  %9s %-7s (%s)", isnan(w) ? "-" : b, VERDICT(w), isnan(w) ? "" : where);
	printf("\n");
#undef VERDICT
}

static void print_targets(void)
{
	char where[64] = "";
	printf("\nTargets of issue 6, measured in this run.  First column: 16 B / 64 B, uniform, "
	       "1 process;\nsecond: the worst cell of any size and key choice (and process count).\n\n");
	printf("%-44s %9s %-7s  %9s %-7s\n", "target", "16/64 uni", "", "worst", "");
	target_row("get >= 0.8x the in-process table", ratio_of(0, D_UNI, K_GET, 1, S_INPROC),
		   worst_ratio(K_GET, S_INPROC, where, sizeof where), where, 0.8, false, "x");
	target_row("get >= 4x LMDB", ratio_of(0, D_UNI, K_GET, 1, S_LMDB),
		   worst_ratio(K_GET, S_LMDB, where, sizeof where), where, 4, false, "x");
	target_row("get >= 500x Redis, unpipelined", ratio_of(0, D_UNI, K_GET, 1, S_REDIS),
		   worst_ratio(K_GET, S_REDIS, where, sizeof where), where, 500, false, "x");
	target_row("put >= 0.5x the in-process table", ratio_of(0, D_UNI, K_PUT, 1, S_INPROC),
		   worst_ratio(K_PUT, S_INPROC, where, sizeof where), where, 0.5, false, "x");
	target_row("get, 2 processes / 1 process >= 1.8x", scale_of(0, D_UNI, K_GET, 2, K_GET, 1),
		   worst_scale(K_GET, 2, K_GET, 1, where, sizeof where), where, 1.8, false, "x");
	target_row("90/10 mix, 2 processes >= 0.8x get, 2 proc.",
		   scale_of(0, D_UNI, K_MIX, 2, K_GET, 2),
		   worst_scale(K_MIX, 2, K_GET, 2, where, sizeof where), where, 0.8, false, "x");
	double p0 = lats[0][S_SHMMAP].ok ? lats[0][S_SHMMAP].p99 / 1000.0 : NAN, pw = NAN;
	for (int si = 0; si < NSIZE; si++)
		if (lats[si][S_SHMMAP].ok && lats[si][S_SHMMAP].n &&
		    (isnan(pw) || lats[si][S_SHMMAP].p99 / 1000.0 > pw)) {
			pw = lats[si][S_SHMMAP].p99 / 1000.0;
			snprintf(where, sizeof where, "%s", wls[si].id);
		}
	/* "worst" for a latency is the largest; VERDICT compares below goal. */
	target_row("p99 get under a concurrent writer < 2 us", p0, pw, where, 2.0, true, " us");
	target_row("overhead per entry (16/64) <= 48 B",
		   mems[0][S_SHMMAP].ok ? mems[0][S_SHMMAP].per_entry : NAN, NAN, NULL, 48.0001,
		   true, " B");
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: bench --shmmap-sock PATH [--redis-sock PATH] [--lmdb-dir DIR] [--short]\n"
		"             [--keys N] [--duration S] [--rounds N] [--latency-duration S]\n"
		"             [--depth N]\n"
		"             [--systems shmmap,inproc,lmdb,redis,redis-pipe] [--sizes 16,32]\n"
		"             [--dists uniform,zipf] [--ops get,put,mix] [--procs 1,2] [--no-latency]\n");
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	opt.shm_sock = getenv("SHMMAP_SOCKET");
	opt.depth = BATCH;
	double dur = -1, lat = -1;
	long keys = -1;
	int rounds = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && (v ? (i++, true) : (usage(), false)))
		if (strcmp(a, "--short") == 0)
			opt.short_mode = true;
		else if (strcmp(a, "--no-latency") == 0)
			opt.no_latency = true;
		else if (ARG("--shmmap-sock"))
			opt.shm_sock = v;
		else if (ARG("--redis-sock"))
			opt.redis_sock = *v ? v : NULL;
		else if (ARG("--lmdb-dir"))
			opt.lmdb_dir = *v ? v : NULL;
		else if (ARG("--keys"))
			keys = atol(v);
		else if (ARG("--duration"))
			dur = atof(v);
		else if (ARG("--latency-duration"))
			lat = atof(v);
		else if (ARG("--rounds"))
			rounds = atoi(v);
		else if (ARG("--depth"))
			opt.depth = atoi(v);
		else if (ARG("--systems"))
			opt.systems = v;
		else if (ARG("--sizes"))
			opt.sizes = v;
		else if (ARG("--dists"))
			opt.dists = v;
		else if (ARG("--ops"))
			opt.ops = v;
		else if (ARG("--procs"))
			opt.procs = v;
		else
			usage();
#undef ARG
	}
	opt.nkeys = opt.short_mode ? 2000 : 100000;
	opt.dur = opt.short_mode ? 0.04 : 0.3;
	opt.rounds = opt.short_mode ? 1 : 3;
	opt.lat_dur = opt.short_mode ? 0.1 : 1.5;
	opt.seqlen = opt.short_mode ? 1u << 14 : 1u << 20;
	if (keys > 0)
		opt.nkeys = (uint32_t)keys;
	if (dur > 0)
		opt.dur = dur;
	if (rounds > 0)
		opt.rounds = rounds < MAXR ? rounds : MAXR;
	if (lat > 0)
		opt.lat_dur = lat;
	if (opt.depth < 1 || opt.depth > BATCH) {
		fprintf(stderr, "bench: --depth must be 1..%d\n", BATCH);
		exit(2);
	}
	if (opt.nkeys < 2 || opt.nkeys > 50000000) {
		fprintf(stderr, "bench: --keys must be 2..50000000\n");
		exit(2);
	}
	if (!opt.shm_sock || !*opt.shm_sock) {
		fprintf(stderr, "bench: no shmmap socket (--shmmap-sock or $SHMMAP_SOCKET)\n");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	parent_pid = getpid();
	ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED) {
		perror("bench: mmap");
		return 2;
	}
	systems[S_SHMMAP].avail = true;
	systems[S_INPROC].avail = true;
	systems[S_LMDB].avail = systems[S_LMDB].open && opt.lmdb_dir;
	systems[S_REDIS].avail = systems[S_REDIS].open && opt.redis_sock;
	systems[S_REDISP].avail = systems[S_REDISP].open && opt.redis_sock;
	for (int s = 0; s < NSYS; s++)
		if (!listed(opt.systems, systems[s].id))
			systems[s].avail = false;
	timer_calibrate();
	uint64_t t_start = now_ns();

	printf("shmmap benchmark (issue 6)%s: %u keys per workload; each cell is the median of %d "
	       "round%s of %.2f s\n(systems in rotated order); %.2f s per latency run\n",
	       opt.short_mode ? ", SHORT mode (a smoke run: the figures mean little)" : "",
	       opt.nkeys, opt.rounds, opt.rounds == 1 ? "" : "s", opt.dur, opt.lat_dur);
	print_machine();
	print_memory_probe();
	for (int s = 0; s < NSYS; s++)
		if (!systems[s].avail)
			printf("not measured: %s (%s)\n", systems[s].name,
			       !systems[s].open ? "not compiled in"
			       : !listed(opt.systems, systems[s].id) ? "not selected"
			       : s == S_LMDB ? "no --lmdb-dir" : "no --redis-sock");
	workloads_init();

	for (int si = 0; si < NSIZE; si++) {
		if (!listed(opt.sizes, wls[si].id))
			continue;
		fprintf(stderr, "bench: %s: loading\n", wls[si].label);
		for (int s = 0; s < NSYS; s++) {
			if (!sys_on(s) || !systems[s].load)
				continue;
			run_load(si, s);
			if (!mems[si][s].ok) {
				fprintf(stderr, "bench: %s: load failed: %s\n", systems[s].name,
					mems[si][s].msg);
				failures++;
				systems[s].avail = false;
				if (s == S_REDIS)
					systems[S_REDISP].avail = false;
			}
		}
		for (int d = 0; d < NDIST; d++) {
			if (!listed(opt.dists, dist_name[d]))
				continue;
			for (int k = 0; k < NKIND; k++) {
				if (!listed(opt.ops, kind_id[k]))
					continue;
				fprintf(stderr, "bench: %s %s %s\n", wls[si].label, dist_name[d],
					kind_name[k]);
				for (int np = 1; np <= MAXW; np++) {
					char pn[4];
					snprintf(pn, sizeof pn, "%d", np);
					if (!listed(opt.procs, pn))
						continue;
					for (int r = 0; r < opt.rounds; r++)
						for (int i = 0; i < NSYS; i++) {
							int s = (i + r) % NSYS; /* rotate the order */
							if (sys_on(s))
								run_cell(si, d, k, np, s);
						}
				}
			}
		}
		if (!opt.no_latency) {
			fprintf(stderr, "bench: %s latency under a writer\n", wls[si].label);
			for (int s = 0; s < NSYS; s++)
				if (sys_on(s) && systems[s].latency)
					run_latency(si, s);
		}
	}

	char vers[256] = "";
	for (int s = 0; s < NSYS; s++)
		if (versions[s][0] && strlen(vers) + strlen(versions[s]) + 3 < sizeof vers)
			snprintf(vers + strlen(vers), sizeof vers - strlen(vers), "%s%s",
				 vers[0] ? ", " : "", versions[s]);
	if (vers[0])
		printf("peers:   %s\n", vers);
	print_throughput();
	print_latency();
	print_memory();
	print_targets();
	printf("\nran in %.1f s\n", (double)(now_ns() - t_start) / 1e9);

	bool hdr = false;
	for (int si = 0; si < NSIZE; si++) {
		for (int d = 0; d < NDIST; d++)
			for (int k = 0; k < NKIND; k++)
				for (int np = 0; np < MAXW; np++)
					for (int s = 0; s < NSYS; s++) {
						const struct cellres *c = &cells[si][d][k][np][s];
						if (c->ran && !c->ok) {
							failures++;
							if (!hdr)
								printf("\nFailures:\n");
							hdr = true;
							printf("  %s %s %s %dP %s: %s\n", wls[si].label,
							       dist_name[d], kind_name[k], np + 1,
							       systems[s].name, c->msg);
						}
					}
		for (int s = 0; s < NSYS; s++) {
			const struct latres *l = &lats[si][s];
			if (l->ran && (!l->ok || !l->n)) {
				if (!hdr)
					printf("\nFailures:\n");
				hdr = true;
				printf("  %s latency %s: %s\n", wls[si].label, systems[s].name,
				       l->msg[0] ? l->msg : "no samples");
			}
		}
	}
	return failures ? 1 : 0;
}
