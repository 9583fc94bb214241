/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * bench.c - the benchmark of issues 6 and 14: shmmap side by side with its
 * peers and with the ceiling, on the same workloads, in one run, printing
 * one table and, at the end, issue 14's targets met or missed.
 *
 * Systems
 *   shmmap      the public API (include/shmmap.h), on a coordinator started
 *               by scripts/bench.sh with the default map config (maps start
 *               small and grow); every worker process attaches on its own.
 *   ceiling     the best a table can do that shares nothing: open addressing
 *               with keys and values inline in fixed-size slots (below, "the
 *               ceiling").  Single-process: in the 2-process cells each
 *               worker has its own private copy, nothing is shared.
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
 *   worker processes, forked, throughput summed.  A shmmap map is loaded,
 *   then left to finish growing before anything is timed.  Each worker
 *   first gets every key once (untimed; not for Redis, whose server stays
 *   warm), so a cell measures the steady state, not page faults of a fresh
 *   mapping.  Every cell runs --rounds times (3) for --duration (0.5 s):
 *   round 1 of every cell, then round 2 of every cell..., the systems in a
 *   rotated order each round; a cell reports its best round: the machines
 *   this runs on (small VMs shared with other work) are noisy, and a slow
 *   round is time lost to something else.  The latency runs too (one per
 *   round, the lowest p99 stays).  Every system holds both sizes' keys from
 *   the start.  Workers check a stop flag every 64 ops.
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
 *     was created and after the load (entries, bucket arrays, stripes); for
 *     LMDB its B-tree pages; for Redis used_memory; for the ceiling its slots;
 *   - instructions per get and put of shmmap and the ceiling, when
 *     scripts/bench.sh passes them (--instr, from its callgrind runs of
 *     --count, below);
 *   - the summary of issue 14's targets (16 B / 64 B, uniform): get and put
 *     against the ceiling at 1 process, get scaling from 1 to 2 processes,
 *     the 90/10 mix against gets at 2 processes, the get p99 under a writer,
 *     instructions per get and put.
 *
 * Instruction counts (--count N): no cells; in this one process, load the
 * one system of --systems (shmmap, ceiling, or "loop": an empty system, the
 * benchmark loop's own cost), warm up, then run exactly N operations of the
 * one kind of --ops (get or put), uniform keys, between callgrind client
 * requests (see run_count).
 *
 * Usage (scripts/bench.sh starts the servers and passes the paths):
 *   bench --shmmap-sock PATH [--redis-sock PATH] [--lmdb-dir DIR] [--short]
 *         [--keys N] [--duration S] [--rounds N] [--latency-duration S] [--depth N]
 *         [--systems shmmap,ceiling,lmdb,redis,redis-pipe] [--sizes 16,32]
 *         [--dists uniform,zipf] [--ops get,put,mix] [--procs 1,2]
 *         [--no-latency] [--ceiling-4k] [--instr SYSTEM:OP=N,...] [--summary FILE]
 *   bench --shmmap-sock PATH --count N --systems shmmap|ceiling|loop --ops get|put
 *         [--sizes 16|32] [--keys N]
 * ("inproc" in --systems still names the ceiling; --ceiling-4k: no huge
 * pages for the ceiling's slots; --summary: the summary of targets written
 * to FILE too, which make bench prints again at its very end.)
 * Exit status: 0, or 1 if any cell failed or a get missed a loaded key.
 */
#include <errno.h>
#include <inttypes.h>
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
#ifdef HAVE_CALLGRIND
#include <valgrind/callgrind.h>
#else /* --count still runs: the driver subtracts two whole-program runs */
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#define CALLGRIND_TOGGLE_COLLECT
#endif

#define BATCH 64     /* ops between stop checks; the Redis pipeline's default depth */
#define MAXW 2       /* worker processes per cell */
#define GBUF 4096    /* the caller's get buffer */
#define NBINS (2048 + 30 * 64)
#define IP_SEED 0x9e3779b97f4a7c15ULL

enum { S_SHMMAP, S_CEIL, S_LMDB, S_REDIS, S_REDISP, NSYS };
enum { K_GET, K_PUT, K_MIX, NKIND };
enum { D_UNI, D_ZIPF, NDIST };
#define NSIZE 2

static const char *const kind_name[NKIND] = {"get", "put", "90/10"};
static const char *const kind_id[NKIND] = {"get", "put", "mix"};
static const char *const dist_name[NDIST] = {"uniform", "zipf"};

/* ---- options ---- */

static struct {
	bool short_mode, no_latency;
	bool ceil_4k;   /* --ceiling-4k: no huge pages for the ceiling */
	int rounds;
	bool counting;  /* --count N given: the instruction count mode */
	uint64_t count;
	uint32_t nkeys, seqlen;
	int depth;
	double dur, lat_dur;
	const char *shm_sock, *redis_sock, *lmdb_dir;
	const char *summary; /* --summary FILE: the summary of targets, again */
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

/* CPU time of this process, in seconds.  A worker's CPU time over its wall
 * time is its CPU share: below 1, it was off a CPU part of the time (other
 * work on the machine, or waiting on a lock). */
static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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
	/* Zipf(0.99): rank r (0-based) has weight 1 / (r + 1)^0.99.  (Not
	 * for --count, which uses uniform keys only.) */
	double *cdf = xmalloc(n * sizeof *cdf), sum = 0;
	for (uint32_t r = 0; r < (opt.counting ? 0 : n); r++) {
		sum += 1.0 / pow((double)r + 1.0, 0.99);
		cdf[r] = sum;
	}
	for (uint32_t i = 0; i < (opt.counting ? 0 : L); i++) {
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

/* Wait (at most about 30 s) until no resize of map m is under way, so that
 * what is measured is the map as it settles after a load, not one in the
 * middle of a resize (shmmap/internal.h: the map's table word).  Returns
 * the bucket count of its array then, 0 if it could not be read. */
static uint32_t shm_settle(shmmap *sm, shmmap_map m)
{
	for (int i = 0; i < 30000; i++) {
		const struct map_view *v;
		struct tbl t;
		if (shmmap__resolve(sm, m, &v) < 0)
			return 0;
		if (shmmap__tbl_load(&sm->seg, v, &t)) {
			uint64_t word = atomic_load(&v->dir->tbl);
			if (!t.old_n && !v->dir->arr[TBL_CUR(word) ^ 1].nbuckets)
				return t.cur_n;
		}
		sleep_s(0.001);
	}
	return 0;
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
	uint32_t nb = shm_settle(sm, map);
	uint64_t free1 = pool_free(sm);
	double used = (double)(free0 - free1) * SEG_PAGE, n = opt.nkeys, kv = w->klen + w->vlen;
	m->per_entry = used / n - kv;
	snprintf(m->note, sizeof m->note,
		 "%.0f pages of 64 KiB for %u entries: entry header %zu B, the bucket array %.1f "
		 "B/entry (%u buckets, load %.2f), the rest (%.1f B/entry) class rounding, slab "
		 "slack, stripes and the initial table",
		 used / SEG_PAGE, opt.nkeys, sizeof(struct seg_entry), nb * 8.0 / n, nb,
		 nb ? n / nb : 0.0, used / n - kv - (double)sizeof(struct seg_entry) - nb * 8.0 / n);
	shmmap_detach(sm);
	return true;
}

/* ---- the ceiling: an in-process open-addressing table, inline slots ---- */

/*
 * What a table that shares nothing, trusts everything and never crashes
 * halfway can do: the bar for shmmap.  Private to one process (in the
 * 2-process cells each worker builds and uses its own copy: nothing is
 * shared).  Open addressing with linear probing over fixed-size slots sized
 * for the run's key and value sizes; capacity a power of two, at most half
 * full (sized for --keys up front; a put of a new key past that fails).
 * Slot layout (stride: 8 + klen + vmax rounded up to 8, the array aligned
 * to 64 and advised for transparent huge pages, see CEIL_*):
 *     0  uint32 tag   high half of the XXH3 hash | 1; 0 = empty
 *     4  uint32 vlen  the value's length, <= vmax
 *     8  key[klen], then value[vmax]
 * The slot index is the low bits of the same hash, so the tag is free to
 * reject most other keys before the key compare.  The key compare is
 * inlined for the run's key size (16 and 32 B are compiled as constants);
 * a get copies the value out (like shmmap_get: -ENOBUFS if the buffer is
 * short), a put overwrites the value in place.  No deletion.
 */
struct ceil {
	unsigned char *slot; /* cap * stride bytes, from mmap */
	size_t bytes;        /* of the mapping */
	uint64_t mask, count;
	size_t stride;
	uint32_t klen, vmax;
	bool huge;           /* madvise(MADV_HUGEPAGE) accepted */
};

#define CEIL_HDR 8
#define CEIL_HUGE ((size_t)2 << 20)

static inline uint64_t ceil_hash(const void *k, size_t kl)
{
	return XXH3_64bits_withSeed(k, kl, IP_SEED);
}

/* The slot holding k, or the empty slot where it would go.  Terminates:
 * at most half of the slots are taken. */
static inline __attribute__((always_inline)) unsigned char *
ceil_find(const struct ceil *t, const void *k, size_t kl, uint64_t h)
{
	uint32_t tag = (uint32_t)(h >> 32) | 1u;
	for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
		unsigned char *s = t->slot + i * t->stride;
		uint32_t st;
		memcpy(&st, s, sizeof st);
		if (st == 0 || (st == tag && memcmp(s + CEIL_HDR, k, kl) == 0))
			return s;
	}
}

static inline __attribute__((always_inline)) int
ceil_get_k(const struct ceil *t, const void *k, size_t kl, void *buf, size_t cap, size_t *n)
{
	const unsigned char *s = ceil_find(t, k, kl, ceil_hash(k, kl));
	uint32_t st, vl;
	memcpy(&st, s, sizeof st);
	if (!st)
		return -ENOENT;
	memcpy(&vl, s + 4, sizeof vl);
	*n = vl;
	if (vl > cap)
		return -ENOBUFS;
	memcpy(buf, s + CEIL_HDR + kl, vl);
	return 0;
}

static inline __attribute__((always_inline)) int
ceil_put_k(struct ceil *t, const void *k, size_t kl, const void *v, size_t vl)
{
	if (vl > t->vmax)
		return -E2BIG;
	uint64_t h = ceil_hash(k, kl);
	unsigned char *s = ceil_find(t, k, kl, h);
	uint32_t st, v32 = (uint32_t)vl;
	memcpy(&st, s, sizeof st);
	if (!st) {
		if (t->count + 1 > (t->mask + 1) / 2)
			return -ENOSPC;
		st = (uint32_t)(h >> 32) | 1u;
		memcpy(s, &st, sizeof st);
		memcpy(s + CEIL_HDR, k, kl);
		t->count++;
	}
	memcpy(s + 4, &v32, sizeof v32);
	memcpy(s + CEIL_HDR + kl, v, vl);
	return 0;
}

/* The run's key sizes as constants, so that hash and compare inline; each
 * its own function, so that the common sizes pay no registers for the
 * general one. */
#define CEIL_SIZED(kl)                                                                        \
	__attribute__((noinline)) static int ceil_get_##kl(const struct ceil *t, const void *k, \
							void *buf, size_t cap, size_t *n)       \
	{                                                                                     \
		return ceil_get_k(t, k, kl, buf, cap, n);                                     \
	}                                                                                     \
	__attribute__((noinline)) static int ceil_put_##kl(struct ceil *t, const void *k,       \
							const void *v, size_t vl)               \
	{                                                                                     \
		return ceil_put_k(t, k, kl, v, vl);                                           \
	}
CEIL_SIZED(16)
CEIL_SIZED(32)

__attribute__((noinline)) static int ceil_get_any(const struct ceil *t, const void *k, size_t kl,
						  void *buf, size_t cap, size_t *n)
{
	return ceil_get_k(t, k, kl, buf, cap, n);
}

__attribute__((noinline)) static int ceil_put_any(struct ceil *t, const void *k, size_t kl,
						  const void *v, size_t vl)
{
	return ceil_put_k(t, k, kl, v, vl);
}

static int ceil_get(const struct ceil *t, const void *k, size_t kl, void *buf, size_t cap,
		    size_t *n)
{
	if (kl != t->klen)
		return -EINVAL;
	if (kl == 16)
		return ceil_get_16(t, k, buf, cap, n);
	if (kl == 32)
		return ceil_get_32(t, k, buf, cap, n);
	return ceil_get_any(t, k, kl, buf, cap, n);
}

static int ceil_put(struct ceil *t, const void *k, size_t kl, const void *v, size_t vl)
{
	if (kl != t->klen)
		return -EINVAL;
	if (kl == 16)
		return ceil_put_16(t, k, v, vl);
	if (kl == 32)
		return ceil_put_32(t, k, v, vl);
	return ceil_put_any(t, k, kl, v, vl);
}

static void ceil_free(struct ceil *t)
{
	if (!t)
		return;
	if (t->slot)
		munmap(t->slot, t->bytes);
	free(t);
}

/* An empty table for n keys of klen bytes with values up to vmax bytes. */
static struct ceil *ceil_new(uint64_t n, uint32_t klen, uint32_t vmax)
{
	struct ceil *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	uint64_t cap = 16;
	while (cap < 2 * n)
		cap <<= 1;
	t->klen = klen;
	t->vmax = vmax;
	t->stride = (CEIL_HDR + klen + vmax + 7) & ~(size_t)7;
	t->mask = cap - 1;
	t->bytes = cap * t->stride;
	/* Anonymous memory (zero: every slot empty); transparent huge pages
	 * where the system gives them on request (a 2 MiB aligned array). */
	size_t len = t->bytes + CEIL_HUGE;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		free(t);
		return NULL;
	}
	uintptr_t a = ((uintptr_t)p + CEIL_HUGE - 1) & ~(uintptr_t)(CEIL_HUGE - 1);
	size_t head = a - (uintptr_t)p, tail = len - head - t->bytes;
	if (head)
		munmap(p, head);
	if (tail)
		munmap((unsigned char *)a + t->bytes, tail);
	t->slot = (unsigned char *)a;
#ifdef MADV_HUGEPAGE
	t->huge = !opt.ceil_4k && madvise(t->slot, t->bytes, MADV_HUGEPAGE) == 0;
#endif
	return t;
}

/* The error path of ip_get1 and ip_put1, out of their way. */
__attribute__((noinline, cold)) static int ip_fail(struct wctx *c, const char *what, int rc)
{
	if (rc == -ENOENT)
		return 1;
	werr(c, "ceiling %s: %s", what, strerror(-rc));
	return -1;
}

static int ip_put1(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
		   struct wctx *c)
{
	int rc = ceil_put(ctx, k, kl, v, vl);
	return __builtin_expect(rc == 0, 1) ? 0 : ip_fail(c, "put", rc);
}

static int ip_get1(void *ctx, const void *k, size_t kl, void *buf, size_t cap, size_t *n,
		   struct wctx *c)
{
	int rc = ceil_get(ctx, k, kl, buf, cap, n);
	return __builtin_expect(rc == 0, 1) ? 0 : ip_fail(c, "get", rc);
}

static struct ceil *ip_build(const struct wl *w)
{
	struct ceil *t = ceil_new(opt.nkeys, w->klen, w->vlen);
	if (!t)
		return NULL;
	unsigned char *val = xmalloc(w->vlen);
	for (uint32_t i = 0; i < opt.nkeys; i++) {
		uint32_t k = load_order[i];
		value_fill(val, w->vlen, k);
		if (ceil_put(t, key_at(w, k), w->klen, val, w->vlen) < 0) {
			ceil_free(t);
			t = NULL;
			break;
		}
	}
	free(val);
	return t;
}

static void *ip_open(const struct wl *w, char *err, size_t cap)
{
	struct ceil *t = ip_build(w);
	if (!t)
		snprintf(err, cap, "ceiling: out of memory");
	return t;
}

static void ip_close(void *ctx)
{
	ceil_free(ctx);
}

static bool ip_load(const struct wl *w, struct memres *m)
{
	struct ceil *t = ip_build(w);
	if (!t) {
		snprintf(m->msg, sizeof m->msg, "ceiling: out of memory");
		return false;
	}
	double n = opt.nkeys, slots = (double)(t->mask + 1) * (double)t->stride;
	m->per_entry = slots / n - (w->klen + w->vlen);
	snprintf(m->note, sizeof m->note,
		 "%" PRIu64 " slots of %zu B (8 B tag and length + key + value), load %.2f, "
		 "transparent huge pages %s",
		 t->mask + 1, t->stride, n / (double)(t->mask + 1),
		 t->huge ? "advised" : "not available");
	ceil_free(t);
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
	[S_CEIL] = {.id = "ceiling", .name = "ceiling", .latency = true, .warm = true, .open = ip_open,
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
	double secs, cpu; /* wall and CPU time of the timed part */
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
	double cpu0 = cpu_s();
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
	r->cpu = cpu_s() - cpu0;
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
	double ops_s;           /* the best of the rounds */
	double round[MAXR];
	double share;           /* the best round's CPU share (see cpu_share) */
	double shares[MAXR];
	uint64_t misses, errors;
	char msg[200];
};

struct latres {
	bool ran, ok;
	double p50, p99, p999, gets_s, puts_s;
	double share;           /* the reader's CPU share */
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
	double v = 0, share = 1;
	for (int i = 0; i < np; i++) {
		struct wres *r = &ctl->w[i];
		if (r->secs > 0) {
			v += (double)r->ops / r->secs;
			share = fmin(share, r->cpu / r->secs);
		}
		c->misses += r->misses;
		c->errors += r->errors;
	}
	if (c->nr < MAXR) {
		c->shares[c->nr] = share;
		c->round[c->nr++] = v;
	}
	/* The best round: on a shared machine the others lost time to other
	 * work, not to the table. */
	c->ops_s = 0;
	for (int i = 0; i < c->nr; i++)
		if (c->round[i] > c->ops_s) {
			c->ops_s = c->round[i];
			c->share = c->shares[i];
		}
	if (c->misses && c->ok) {
		snprintf(c->msg, sizeof c->msg, "%" PRIu64 " gets missed a loaded key", c->misses);
		c->ok = false;
	}
}

/* One latency run; of several rounds, the one with the lowest p99 stays
 * (a failed one stays once it failed). */
static void run_latency(int si, int sys)
{
	struct latres *l = &lats[si][sys], t = {.ran = true};
	struct job j = {.s = &systems[sys], .w = &wls[si], .latency = true, .nproc = 2};
	t.ok = run_job(&j, opt.lat_dur, t.msg, sizeof t.msg);
	struct wres *r = &ctl->w[0], *wr = &ctl->w[1];
	t.n = r->lat_n;
	if (t.n) {
		t.p50 = hist_pct(r->hist, t.n, 0.50);
		t.p99 = hist_pct(r->hist, t.n, 0.99);
		t.p999 = hist_pct(r->hist, t.n, 0.999);
	}
	if (r->secs > 0) {
		t.gets_s = (double)r->ops / r->secs;
		t.share = r->cpu / r->secs;
	}
	if (wr->secs > 0)
		t.puts_s = (double)wr->ops / wr->secs;
	if (r->misses && t.ok) {
		snprintf(t.msg, sizeof t.msg, "%" PRIu64 " gets missed a loaded key", r->misses);
		t.ok = false;
	}
	bool failed = !t.ok || !t.n;
	if (failed)
		failures++;
	if (!l->ran || (l->ok && l->n && (failed || t.p99 < l->p99)))
		*l = t;
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

/* Is system s in --systems ("inproc" still names the ceiling)? */
static bool sys_listed(int s)
{
	return listed(opt.systems, systems[s].id) || (s == S_CEIL && listed(opt.systems, "inproc"));
}

/* The first three fields of /proc/loadavg, or "?". */
static const char *loadavg(char *b, size_t cap)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double a[3];
	if (f && fscanf(f, "%lf %lf %lf", &a[0], &a[1], &a[2]) == 3)
		snprintf(b, cap, "%.2f %.2f %.2f", a[0], a[1], a[2]);
	else
		snprintf(b, cap, "?");
	if (f)
		fclose(f);
	return b;
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
	char la[64];
	printf("timer:   %s\n", timer_desc);
	printf("load:    %s (1, 5, 15 min: other work on this machine skews every figure)\n",
	       loadavg(la, sizeof la));
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
	       "peer\n(above 1: shmmap is faster).  Redis pipe = %d commands per round trip.  The "
	       "ceiling is\nsingle-process: at P = 2 each worker has its own private copy.\n\n",
	       opt.depth);
	printf("%-13s %-8s %-5s %1s %9s", "keys/values", "keys", "op", "P", "shmmap");
	for (int s = S_CEIL; s < NSYS; s++)
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
					for (int s = S_CEIL; s < NSYS; s++) {
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
	       "writer doing puts flat out).\nceiling: the writer writes its own private copy "
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

/* ---- instructions per operation (--instr, from scripts/bench.sh) ---- */

enum { I_SHMMAP, I_CEIL, I_LOOP, NINSTR };
static const char *const instr_sys[NINSTR] = {"shmmap", "ceiling", "loop"};
static double instr[NINSTR][2] = {{NAN, NAN}, {NAN, NAN}, {NAN, NAN}}; /* [sys][get, put] */
static bool instr_given;

/* --instr shmmap:get=N,shmmap:put=N,ceiling:get=N,...: per-op counts, loop
 * included ("loop" is the empty system's).  Returns false if malformed. */
static bool parse_instr(const char *list)
{
	instr_given = true;
	for (const char *p = list; *p;) {
		char name[32];
		double v;
		int used = 0;
		if (sscanf(p, "%31[a-z]:%*[a-z]=%lf%n", name, &v, &used) != 2 || used <= 0)
			return false;
		const char *op = strchr(p, ':') + 1;
		int o = strncmp(op, "get=", 4) == 0 ? 0 : strncmp(op, "put=", 4) == 0 ? 1 : -1;
		int s = -1;
		for (int i = 0; i < NINSTR; i++)
			if (strcmp(name, instr_sys[i]) == 0)
				s = i;
		if (s < 0 || o < 0)
			return false;
		instr[s][o] = v;
		p += used;
		if (*p == ',')
			p++;
		else if (*p)
			return false;
	}
	return true;
}

/* System s's instructions per op o, the empty loop's taken out. */
static double instr_net(int s, int o)
{
	return instr[s][o] - instr[I_LOOP][o];
}

static void print_instr(void)
{
	if (!instr_given)
		return;
	printf("\nInstructions per operation (callgrind; scripts/bench.sh runs --count: %s, "
	       "uniform keys,\none process, the table loaded and warmed up first).  The "
	       "benchmark loop's own\n(an empty system's: %.1f per get, %.1f per put) is taken "
	       "out; as measured in ().\n\n", wls[0].label, instr[I_LOOP][0], instr[I_LOOP][1]);
	printf("%-10s %18s %18s\n", "system", "get", "put");
	for (int s = I_SHMMAP; s <= I_CEIL; s++) {
		printf("%-10s", s == I_SHMMAP ? "shmmap" : "ceiling");
		for (int o = 0; o < 2; o++)
			if (isnan(instr[s][o]) || isnan(instr[I_LOOP][o]))
				printf(" %18s", "-");
			else
				printf(" %8.1f (%7.1f)", instr_net(s, o), instr[s][o]);
		printf("\n");
	}
	printf("%-10s", "ratio");
	for (int o = 0; o < 2; o++) {
		double r = instr_net(I_SHMMAP, o) / instr_net(I_CEIL, o);
		if (isnan(r))
			printf(" %18s", "-");
		else
			printf(" %7.2fx %10s", r, "");
	}
	printf("\n");
}

/* ---- the targets of issue 14: one summary ---- */

static double cell_ops(int si, int d, int k, int np, int sys)
{
	const struct cellres *c = &cells[si][d][k][np - 1][sys];
	return c->ran && c->ok ? c->ops_s : NAN;
}

/* The least CPU share of the best rounds of these cells (16/64, uniform). */
static double cells_share(int k1, int np1, int s1, int k2, int np2, int s2)
{
	const struct cellres *a = &cells[0][D_UNI][k1][np1 - 1][s1];
	const struct cellres *b = &cells[0][D_UNI][k2][np2 - 1][s2];
	return a->ran && b->ran ? fmin(a->share, b->share) : NAN;
}

static void target_row(FILE *o, const char *what, double v, const char *fig, const char *goal,
		       bool met, double share)
{
	char sh[16] = "-";
	if (!isnan(share))
		snprintf(sh, sizeof sh, "%.0f%%", share * 100);
	fprintf(o, "%-46s %10s  %-8s %-7s %s\n", what, isnan(v) ? "-" : fig, goal,
		isnan(v) ? "n/a" : met ? "met" : "MISSED", sh);
}

/*
 * The summary of issue 14's targets, from this run's cells: keys of 16 B,
 * values of 64 B, uniform keys, the default map config; throughput ratios
 * against the ceiling at 1 process, scaling and the mix from shmmap's own
 * cells, the p99 from the latency run, the instructions from --instr.  The
 * last column: the least CPU share of a worker in the rounds the figure
 * comes from.
 */
static void print_summary(FILE *o)
{
	char f[32];
	double g1 = cell_ops(0, D_UNI, K_GET, 1, S_SHMMAP), g2 = cell_ops(0, D_UNI, K_GET, 2, S_SHMMAP);
	double m2 = cell_ops(0, D_UNI, K_MIX, 2, S_SHMMAP);
	double r;
	fprintf(o, "\nSummary: the targets of issue 14, measured in this run (%s, %u keys, uniform "
		"keys,\nthe default map config; throughput: the best of %d round%s of %.2f s).  "
		"cpu: the least share\nof its time a worker behind the figure spent on a CPU; well "
		"below 100%%, other work\non the machine (or waiting for a lock) took the rest, and "
		"the figure is off.\n\n",
		wls[0].label, opt.nkeys, opt.rounds, opt.rounds == 1 ? "" : "s", opt.dur);
	fprintf(o, "%-46s %10s  %-8s %-7s %s\n", "target", "figure", "goal", "", "cpu");
	r = g1 / cell_ops(0, D_UNI, K_GET, 1, S_CEIL);
	target_row(o, "get / ceiling, 1 process", r, fmt_ratio(f, sizeof f, r), ">= 0.8x", r >= 0.8,
		   cells_share(K_GET, 1, S_SHMMAP, K_GET, 1, S_CEIL));
	r = cell_ops(0, D_UNI, K_PUT, 1, S_SHMMAP) / cell_ops(0, D_UNI, K_PUT, 1, S_CEIL);
	target_row(o, "put / ceiling, 1 process", r, fmt_ratio(f, sizeof f, r), ">= 0.5x", r >= 0.5,
		   cells_share(K_PUT, 1, S_SHMMAP, K_PUT, 1, S_CEIL));
	r = g2 / g1;
	target_row(o, "get, 2 processes / 1 process", r, fmt_ratio(f, sizeof f, r), ">= 1.8x",
		   r >= 1.8, cells_share(K_GET, 2, S_SHMMAP, K_GET, 1, S_SHMMAP));
	r = m2 / g2;
	target_row(o, "90/10 get/put mix / get, both 2 processes", r, fmt_ratio(f, sizeof f, r),
		   ">= 0.8x", r >= 0.8, cells_share(K_MIX, 2, S_SHMMAP, K_GET, 2, S_SHMMAP));
	const struct latres *l = &lats[0][S_SHMMAP];
	r = l->ran && l->ok && l->n ? l->p99 : NAN;
	target_row(o, "get p99, one writer process at the same time", r, fmt_ns(f, sizeof f, r),
		   "< 1 us", r < 1000.0, l->ran ? l->share : NAN);
	r = instr_net(I_SHMMAP, 0);
	snprintf(f, sizeof f, "%.0f", r);
	target_row(o, "instructions per get (callgrind)", r, f, "<= 200", r <= 200.0, NAN);
	r = instr_net(I_SHMMAP, 1);
	snprintf(f, sizeof f, "%.0f", r);
	target_row(o, "instructions per put (callgrind)", r, f, "<= 400", r <= 400.0, NAN);
}

/* ---- --count: exactly N operations, for instruction counts ---- */

/* "loop": a system that does nothing, so that the driver can take the
 * benchmark loop's own instructions (the call through the system's
 * function pointer included) out of the other systems' counts. */
static void *loop_open(const struct wl *w, char *err, size_t cap)
{
	(void)err;
	(void)cap;
	return (void *)w;
}

static int loop_get1(void *ctx, const void *k, size_t kl, void *buf, size_t cap, size_t *n,
		     struct wctx *c)
{
	(void)k, (void)kl, (void)buf, (void)cap, (void)c;
	*n = ((const struct wl *)ctx)->vlen;
	return 0;
}

static int loop_put1(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
		     struct wctx *c)
{
	(void)ctx, (void)k, (void)kl, (void)v, (void)vl, (void)c;
	return 0;
}

static void loop_close(void *ctx)
{
	(void)ctx;
}

static const struct sysops loop_sys = {.id = "loop", .name = "empty loop", .open = loop_open,
				       .get1 = loop_get1, .put1 = loop_put1, .close = loop_close};

/* Run n operations of kind k from the uniform key sequence, from *pos on. */
static void count_ops(const struct sysops *s, void *ctx, int k, uint64_t n, uint32_t *pos,
		      struct wctx *c)
{
	const uint8_t *o = k == K_PUT ? ones : zeros;
	for (uint64_t done = 0; done < n;) {
		size_t m = n - done < BATCH ? (size_t)(n - done) : BATCH;
		do_ops(s, ctx, seqs[D_UNI] + *pos, o, m, c);
		*pos = (*pos + BATCH) & (opt.seqlen - 1);
		done += m;
	}
}

/*
 * --count N (scripts/bench.sh runs it under callgrind): in this one process,
 * no fork, on the one system of --systems (shmmap or ceiling), the one kind
 * of --ops (get or put), the first size of --sizes, uniform keys:
 *   setup    the keys and key sequence are made, the table is loaded (shmmap:
 *            a map created and loaded, then settled, as for the cells);
 *   warm-up  a get of every key, then --keys operations of the kind from the
 *            middle of the sequence;
 *   measured exactly N operations of the kind from the start of the
 *            sequence, the only part callgrind collects when it runs with
 *            --instr-atstart=no --collect-atstart=no (client requests around
 *            it, when valgrind/callgrind.h was there at build time).
 * The driver takes (Ir(2N) - Ir(N)) / N: what stays the same between the two
 * runs (setup, the client requests, the loop's start) cancels.  Returns the
 * exit status: 0, 1 if an operation failed or a get missed, 2 on bad options.
 */
static int run_count(void)
{
	int s = -1, k = -1, si = -1;
	for (int i = 0; i < NSYS && opt.systems; i++)
		if ((i == S_SHMMAP || i == S_CEIL) && sys_listed(i) && s < 0)
			s = i;
	if (s < 0 && opt.systems && listed(opt.systems, loop_sys.id))
		s = NSYS;
	for (int i = 0; i < NKIND && opt.ops; i++)
		if ((i == K_GET || i == K_PUT) && listed(opt.ops, kind_id[i]) && k < 0)
			k = i;
	for (int i = 0; i < NSIZE; i++)
		if (listed(opt.sizes, wls[i].id) && si < 0)
			si = i;
	if (s < 0 || k < 0 || si < 0) {
		fprintf(stderr, "bench: --count needs --systems shmmap, ceiling or loop, --ops get "
				"or put\n");
		return 2;
	}
	const struct sysops *sys = s == NSYS ? &loop_sys : &systems[s];
	const struct wl *w = &wls[si];
	workloads_init();
	char err[160] = "";
	struct memres mem = {0};
	if (s == S_SHMMAP && !sys->load(w, &mem)) {
		fprintf(stderr, "bench: --count: %s load: %s\n", sys->name, mem.msg);
		return 1;
	}
	void *ctx = sys->open(w, err, sizeof err);
	if (!ctx) {
		fprintf(stderr, "bench: --count: %s: %s\n", sys->name, err);
		return 1;
	}
	struct wctx c = {.w = w, .vbuf = xmalloc(w->vlen), .gbuf = xmalloc(GBUF)};
	value_fill(c.vbuf, w->vlen, 7);
	for (uint32_t i = 0; i < opt.nkeys; i++) {
		size_t got;
		if (sys->get1(ctx, key_at(w, i), w->klen, c.gbuf, GBUF, &got, &c) != 0)
			c.misses++;
	}
	uint32_t pos = (opt.seqlen / 2) & ~(uint32_t)(BATCH - 1);
	count_ops(sys, ctx, k, opt.nkeys, &pos, &c);
	pos = 0;
	uint64_t t0 = now_ns();
	CALLGRIND_START_INSTRUMENTATION;
	CALLGRIND_TOGGLE_COLLECT;
	count_ops(sys, ctx, k, opt.count, &pos, &c);
	CALLGRIND_TOGGLE_COLLECT;
	CALLGRIND_STOP_INSTRUMENTATION;
	double secs = (double)(now_ns() - t0) / 1e9;
	sys->close(ctx);
	if (s == S_SHMMAP) { /* the map goes: the driver runs this several times */
		shmmap *sm;
		if (shm_attach(&sm) == 0) {
			shmmap_drop(sm, w->map);
			shmmap_detach(sm);
		}
	}
	printf("count: %s %s, %" PRIu64 " ops, %s, %u keys, uniform: %.3f s (%.0f ns/op)%s\n",
	       sys->name, kind_id[k], opt.count, w->label, opt.nkeys, secs,
	       opt.count ? secs * 1e9 / (double)opt.count : 0.0,
#ifdef HAVE_CALLGRIND
	       ""
#else
	       "; built without valgrind/callgrind.h"
#endif
	);
	if (c.errors || c.misses) {
		fprintf(stderr, "bench: --count: %" PRIu64 " errors, %" PRIu64 " misses%s%s\n",
			c.errors, c.misses, c.msg[0] ? ": " : "", c.msg);
		return 1;
	}
	free(c.vbuf);
	free(c.gbuf);
	return 0;
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: bench --shmmap-sock PATH [--redis-sock PATH] [--lmdb-dir DIR] [--short]\n"
		"             [--keys N] [--duration S] [--rounds N] [--latency-duration S]\n"
		"             [--depth N]\n"
		"             [--systems shmmap,ceiling,lmdb,redis,redis-pipe] [--sizes 16,32]\n"
		"             [--dists uniform,zipf] [--ops get,put,mix] [--procs 1,2] [--no-latency]\n"
		"             [--ceiling-4k] [--instr SYSTEM:OP=N,...] [--summary FILE]\n"
		"       bench --shmmap-sock PATH --count N --systems shmmap|ceiling|loop --ops get|put\n"
		"             [--sizes 16|32] [--keys N]\n");
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
		else if (strcmp(a, "--ceiling-4k") == 0)
			opt.ceil_4k = true;
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
		else if (ARG("--summary"))
			opt.summary = v;
		else if (ARG("--instr")) {
			if (!parse_instr(v)) {
				fprintf(stderr, "bench: --instr: expected SYSTEM:OP=N,... (systems "
						"shmmap, ceiling, loop; ops get, put)\n");
				exit(2);
			}
		} else if (ARG("--count")) {
			opt.counting = true;
			opt.count = strtoull(v, NULL, 10);
		}
		else
			usage();
#undef ARG
	}
	opt.nkeys = opt.short_mode ? 2000 : 100000;
	opt.dur = opt.short_mode ? 0.04 : 0.5;
	opt.rounds = opt.short_mode ? 1 : 3;
	opt.lat_dur = opt.short_mode ? 0.1 : 1.0;
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
	if (opt.counting)
		return run_count();
	signal(SIGPIPE, SIG_IGN);
	parent_pid = getpid();
	ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED) {
		perror("bench: mmap");
		return 2;
	}
	systems[S_SHMMAP].avail = true;
	systems[S_CEIL].avail = true;
	systems[S_LMDB].avail = systems[S_LMDB].open && opt.lmdb_dir;
	systems[S_REDIS].avail = systems[S_REDIS].open && opt.redis_sock;
	systems[S_REDISP].avail = systems[S_REDISP].open && opt.redis_sock;
	for (int s = 0; s < NSYS; s++)
		if (!sys_listed(s))
			systems[s].avail = false;
	timer_calibrate();
	uint64_t t_start = now_ns();
	char la[64];

	printf("shmmap benchmark (issues 6, 14)%s: %u keys per workload; each cell is the best of %d "
	       "round%s of %.2f s\n(systems in rotated order); latency: the lowest p99 of as many "
	       "runs of %.2f s\n",
	       opt.short_mode ? ", SHORT mode (a smoke run: the figures mean little)" : "",
	       opt.nkeys, opt.rounds, opt.rounds == 1 ? "" : "s", opt.dur, opt.lat_dur);
	print_machine();
	print_memory_probe();
	for (int s = 0; s < NSYS; s++)
		if (!systems[s].avail)
			printf("not measured: %s (%s)\n", systems[s].name,
			       !systems[s].open ? "not compiled in"
			       : !sys_listed(s) ? "not selected"
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
	}
	/* Round after round of every cell, rather than a cell's rounds one after
	 * the other: the best of a cell's rounds then comes from moments spread
	 * over the whole run, so that a few seconds of other work on the machine
	 * cannot spoil all of them. */
	for (int r = 0; r < opt.rounds; r++)
		for (int si = 0; si < NSIZE; si++) {
			if (!listed(opt.sizes, wls[si].id))
				continue;
			for (int d = 0; d < NDIST; d++) {
				if (!listed(opt.dists, dist_name[d]))
					continue;
				for (int k = 0; k < NKIND; k++) {
					if (!listed(opt.ops, kind_id[k]))
						continue;
					fprintf(stderr, "bench: round %d of %d: %s %s %s\n", r + 1,
						opt.rounds, wls[si].label, dist_name[d], kind_name[k]);
					for (int np = 1; np <= MAXW; np++) {
						char pn[4];
						snprintf(pn, sizeof pn, "%d", np);
						if (!listed(opt.procs, pn))
							continue;
						for (int i = 0; i < NSYS; i++) {
							int s = (i + r) % NSYS; /* rotate the order */
							if (sys_on(s))
								run_cell(si, d, k, np, s);
						}
					}
				}
			}
			if (!opt.no_latency) {
				fprintf(stderr, "bench: round %d of %d: %s latency under a writer\n",
					r + 1, opt.rounds, wls[si].label);
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
	print_instr();
	print_summary(stdout);
	if (opt.summary) {
		FILE *f = fopen(opt.summary, "w");
		if (f)
			print_summary(f);
		if (!f || fclose(f) != 0) {
			fprintf(stderr, "bench: --summary %s: %s\n", opt.summary, strerror(errno));
			failures++;
		}
	}
	printf("\nran in %.1f s; load average at the end: %s\n", (double)(now_ns() - t_start) / 1e9,
	       loadavg(la, sizeof la));

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
