/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_chaos.c - crash safety with real processes killed by SIGKILL:
 *   kill9_loop                writers killed at random and respawned while
 *                             readers check that no value is torn and no
 *                             acknowledged write is lost (the map starts at 8
 *                             buckets: it grows in the first moments, writers
 *                             killed all through a growth are check_grow's);
 *                             progress never stalls; at the end every key holds exactly its
 *                             last acknowledged value and `shmmapctl check`
 *                             is clean.
 *   kill9_loop_inherited      the same with the pre-fork pattern: the writers
 *                             use the test process's attachment, inherited
 *                             across fork, respawned by forking again.
 *   coordinator_kill          the coordinator killed under load (workers carry
 *                             on, a restart adopts the segment), then killed
 *                             together with a worker (its slot is reclaimed).
 *   clean_restart_keeps_data  SIGTERM and restart keep every key.
 * The bookkeeping (acknowledged seqs, the write in flight, progress counters,
 * children's errors) lives in a MAP_SHARED anonymous mapping; children report
 * through it and their exit codes.  Waits are deadline-bounded polls; the only
 * sleeps are the random delays before a kill, which are the chaos itself.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmmap.h"
#include "testutil.h"

#define NW 3             /* writer ids */
#define NR 2             /* readers */
#define NSLOTS (NW + NR + 1) /* + one verifier */
#define VERIFIER (NW + NR)
#define NKEYS 200        /* keys per writer */
#define CTR NKEYS        /* key index of a writer's incr counter */
#define VAL_MAX 1024
#define RETRY_MS 15000   /* bound on retrying -EAGAIN */
#define MAP_NAME "chaos"
/* Few stripes: writers and readers of different keys meet on the same
 * locks, so waiters do take locks over from killed writers.  Few buckets
 * to start with, and a coordinator that moves one bucket per stripe and
 * round: the map grows (early in the loop) mostly by the writers' own
 * moves, so early kills can land inside resize steps. */
#define CONF "[map]\nbuckets = 8\nstripes = 8\ngrow_step = 1\n"

#define ACK_MASK ((1ull << 48) - 1)

enum { K_PUT = 1, K_DEL = 2 };

/* Outcomes of one checked get. */
enum { C_OK, C_ABSENT, C_TORN, C_WRONGKEY, C_LOST, C_FUTURE, C_ERR, C_N };
static const char *const c_name[C_N] = {"ok", "absent", "torn", "wrong key", "lost",
					"future", "error"};

struct gstats {
	_Atomic uint64_t ops;
	_Atomic uint64_t c[C_N];
};

struct shared {
	_Atomic int stop;  /* children finish their op, detach and exit 0 */
	int nw;            /* writer ids in use */
	int get_pct;       /* share of a writer's ops that are gets */
	/* Per writer id: last acknowledged seq of each key (0: never). */
	_Atomic uint64_t ack[NW][NKEYS];
	/* Odd while a del + re-put of the key is under way. */
	_Atomic uint64_t delgen[NW][NKEYS];
	/* The write in flight: kind << 62 | key << 40 | seq; 0 if none. */
	_Atomic uint64_t inflight[NW];
	/* The counter: acknowledged value | increments that may have landed
	 * without being acknowledged << 48. */
	_Atomic uint64_t ctr[NW];
	_Atomic uint64_t wops[NW];       /* ops done, over all incarnations */
	_Atomic uint64_t eagain[NW];     /* -EAGAIN answers retried */
	_Atomic uint64_t incr_eagain[NW];/* of which from incr (ambiguous) */
	struct gstats gs[NSLOTS];        /* checked gets, per process slot */
	_Atomic int noted[NSLOTS];
	char msg[NSLOTS][512];           /* first error of each process slot */
};

static struct tu_coord co;
static struct shared *sh;
static pid_t kids[NSLOTS];
static char ctl_out[65536], ctl_err[65536];

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static uint64_t seed_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return mix64((uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec) | 1;
}

static uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* ---- values ---- */

#define VMAGIC 0x534f4148u

struct vhdr {
	uint32_t magic;
	uint16_t w, k;
	uint64_t seq;
	uint32_t fill, rsv;
};

/* Header (writer, key, seq), 8..600 filler bytes derived from them, then
 * the FNV-1a of everything before. */
static size_t make_value(int w, int k, uint64_t seq, unsigned char *v)
{
	uint64_t r = mix64(seq * 0x100000001b3ull ^ (uint64_t)(w * 1000 + k));
	struct vhdr h = {VMAGIC, (uint16_t)w, (uint16_t)k, seq, 8 + (uint32_t)(r % 593), 0};
	memcpy(v, &h, sizeof h);
	for (uint32_t i = 0; i < h.fill; i++)
		v[sizeof h + i] = (unsigned char)((r >> (8 * (i & 7))) ^ i);
	uint64_t sum = fnv1a(v, sizeof h + h.fill);
	memcpy(v + sizeof h + h.fill, &sum, 8);
	return sizeof h + h.fill + 8;
}

static int check_value(const unsigned char *v, size_t n, int w, int k, uint64_t *seq)
{
	struct vhdr h;
	uint64_t sum;
	if (n < sizeof h + 8 || n > VAL_MAX)
		return C_TORN;
	memcpy(&sum, v + n - 8, 8);
	if (sum != fnv1a(v, n - 8))
		return C_TORN;
	memcpy(&h, v, sizeof h);
	if (h.magic != VMAGIC || n != sizeof h + h.fill + 8)
		return C_TORN;
	if (h.w != w || h.k != k)
		return C_WRONGKEY;
	unsigned char want[VAL_MAX];
	if (make_value(w, k, h.seq, want) != n || memcmp(want, v, n) != 0)
		return C_TORN;
	*seq = h.seq;
	return C_OK;
}

static size_t keyname(int w, int k, char *buf)
{
	int n = k == CTR ? snprintf(buf, 32, "w%d-ctr", w) : snprintf(buf, 32, "w%d-k%03d", w, k);
	return (size_t)n;
}

static bool parse_u64(const unsigned char *p, size_t n, uint64_t *out)
{
	if (n == 0 || n > 19)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return true;
}

static uint64_t inflight_pack(int kind, int k, uint64_t s)
{
	return (uint64_t)kind << 62 | (uint64_t)k << 40 | s;
}

static void inflight_unpack(uint64_t f, int *kind, int *k, uint64_t *s)
{
	*kind = (int)(f >> 62);
	*k = (int)((f >> 40) & 0xffff);
	*s = f & ((1ull << 40) - 1);
}

/* ---- children ---- */

__attribute__((format(printf, 2, 3))) static void note(int slot, const char *fmt, ...)
{
	int z = 0;
	if (!atomic_compare_exchange_strong(&sh->noted[slot], &z, 1))
		return; /* the first error is the one worth reading */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sh->msg[slot], sizeof sh->msg[slot], fmt, ap);
	va_end(ap);
}

/* The pre-fork pattern: when set, writers use this attachment, made by the
 * test process before it forked them, instead of attaching themselves. */
static shmmap *g_inherit_sm;
static shmmap_map g_inherit_m;

static int attach_retry(int slot, shmmap **sm, shmmap_map *m)
{
	if (g_inherit_sm) {
		*sm = g_inherit_sm;
		*m = g_inherit_m;
		return 0;
	}
	long long end = tu_mono_ms() + 10000;
	int rc;
	/* -EAGAIN: no free client slot (the coordinator is still recovering
	 * the slots of killed writers). */
	while ((rc = shmmap_attach(co.sock, sm)) == -EAGAIN && tu_mono_ms() < end)
		sched_yield();
	if (rc) {
		note(slot, "slot %d: attach: %s", slot, shmmap_strerror(rc));
		return rc;
	}
	rc = shmmap_open(*sm, MAP_NAME, SHMMAP_CREATE, m);
	if (rc) {
		note(slot, "slot %d: open: %s", slot, shmmap_strerror(rc));
		shmmap_detach(*sm);
	}
	return rc;
}

/*
 * One get of writer w's key k (k == CTR: its counter) by any process, judged
 * against the ack table read just before and just after it:
 *   - never older than the ack read before the get started (no acknowledged
 *     write lost), never newer than the ack read after it + the one write
 *     that may be in flight;
 *   - absent only if never acknowledged, or a del + re-put overlapped the get;
 *   - a value that verifies, and is the value of this key.
 */
static int check_get(shmmap *sm, shmmap_map m, int w, int k, char *why, size_t cap)
{
	char key[32];
	size_t kl = keyname(w, k, key), n = 0;
	unsigned char buf[VAL_MAX];
	if (k == CTR) {
		uint64_t w1 = atomic_load(&sh->ctr[w]);
		int rc = shmmap_get(sm, m, key, kl, buf, sizeof buf, &n);
		uint64_t w2 = atomic_load(&sh->ctr[w]);
		uint64_t a1 = w1 & ACK_MASK, a2 = w2 & ACK_MASK, slack2 = w2 >> 48, c;
		if (rc == -ENOENT) {
			if (a1 == 0)
				return C_ABSENT;
			snprintf(why, cap, "%s absent, acknowledged %" PRIu64, key, a1);
			return C_LOST;
		}
		if (rc) {
			snprintf(why, cap, "get %s: %s", key, shmmap_strerror(rc));
			return C_ERR;
		}
		if (!parse_u64(buf, n, &c)) {
			snprintf(why, cap, "%s: not a decimal counter (%zu bytes)", key, n);
			return C_TORN;
		}
		if (c < a1) {
			snprintf(why, cap, "%s = %" PRIu64 " < acknowledged %" PRIu64, key, c, a1);
			return C_LOST;
		}
		if (c > a2 + slack2) {
			snprintf(why, cap, "%s = %" PRIu64 " > acknowledged %" PRIu64 " + %" PRIu64,
				 key, c, a2, slack2);
			return C_FUTURE;
		}
		return C_OK;
	}
	uint64_t g1 = atomic_load(&sh->delgen[w][k]), a1 = atomic_load(&sh->ack[w][k]);
	int rc = shmmap_get(sm, m, key, kl, buf, sizeof buf, &n);
	uint64_t a2 = atomic_load(&sh->ack[w][k]), g2 = atomic_load(&sh->delgen[w][k]);
	if (rc == -ENOENT) {
		if (a1 == 0 || (g1 & 1) || g1 != g2)
			return C_ABSENT;
		snprintf(why, cap, "%s absent, acknowledged seq %" PRIu64 " (no delete under way)",
			 key, a1);
		return C_LOST;
	}
	if (rc) {
		snprintf(why, cap, "get %s: %s (vlen %zu)", key, shmmap_strerror(rc), n);
		return C_ERR;
	}
	uint64_t seq = 0;
	int vc = check_value(buf, n, w, k, &seq);
	if (vc != C_OK) {
		snprintf(why, cap, "%s: %s value (%zu bytes)", key, c_name[vc], n);
		return vc;
	}
	if (seq < a1) {
		snprintf(why, cap, "%s: read seq %" PRIu64 " < seq %" PRIu64
			 " acknowledged before the get", key, seq, a1);
		return C_LOST;
	}
	if (seq > a2 + 1) {
		snprintf(why, cap, "%s: read seq %" PRIu64 " > acknowledged %" PRIu64 " + 1", key,
			 seq, a2);
		return C_FUTURE;
	}
	return C_OK;
}

struct wctx {
	shmmap *sm;
	shmmap_map m;
	int w;
	uint64_t rng;
	uint64_t ctr_ack, ctr_pending;
};

static int put_seq(struct wctx *c, int k, uint64_t s)
{
	unsigned char v[VAL_MAX];
	char key[32];
	size_t n = make_value(c->w, k, s, v), kl = keyname(c->w, k, key);
	long long end = tu_mono_ms() + RETRY_MS;
	for (;;) {
		int rc = shmmap_put(c->sm, c->m, key, kl, v, n, 0, 0);
		if (rc == 0)
			return 0;
		/* -EAGAIN (allocator under repair) means "again", never "lost":
		 * the same seq again is the same value. */
		if (rc != -EAGAIN || tu_mono_ms() > end) {
			note(c->w, "writer %d: put %s seq %" PRIu64 ": %s", c->w, key, s,
			     shmmap_strerror(rc));
			return -1;
		}
		atomic_fetch_add(&sh->eagain[c->w], 1);
		sched_yield();
	}
}

/* Delete k; absent is fine if may_be_absent, or after an -EAGAIN (that
 * attempt may have unlinked it). */
static int del_key(struct wctx *c, int k, bool may_be_absent)
{
	char key[32];
	size_t kl = keyname(c->w, k, key);
	long long end = tu_mono_ms() + RETRY_MS;
	for (;;) {
		int rc = shmmap_del(c->sm, c->m, key, kl);
		if (rc == 0 || (rc == -ENOENT && may_be_absent))
			return 0;
		if (rc != -EAGAIN || tu_mono_ms() > end) {
			note(c->w, "writer %d: del %s: %s", c->w, key, shmmap_strerror(rc));
			return -1;
		}
		atomic_fetch_add(&sh->eagain[c->w], 1);
		may_be_absent = true;
		sched_yield();
	}
}

static int op_put(struct wctx *c, int k)
{
	uint64_t s = atomic_load(&sh->ack[c->w][k]) + 1;
	atomic_store(&sh->inflight[c->w], inflight_pack(K_PUT, k, s));
	if (put_seq(c, k, s))
		return -1;
	atomic_store(&sh->ack[c->w][k], s);
	atomic_store(&sh->inflight[c->w], 0);
	return 0;
}

static int op_del_reput(struct wctx *c, int k)
{
	uint64_t a = atomic_load(&sh->ack[c->w][k]), s = a + 1;
	atomic_store(&sh->inflight[c->w], inflight_pack(K_DEL, k, s));
	if (atomic_fetch_add(&sh->delgen[c->w][k], 1) & 1) {
		note(c->w, "writer %d: key %d: delgen odd outside a delete", c->w, k);
		return -1;
	}
	if (del_key(c, k, a == 0) || put_seq(c, k, s))
		return -1;
	atomic_store(&sh->ack[c->w][k], s);
	atomic_fetch_add(&sh->delgen[c->w][k], 1);
	atomic_store(&sh->inflight[c->w], 0);
	return 0;
}

static int op_incr(struct wctx *c)
{
	char key[32];
	size_t kl = keyname(c->w, CTR, key);
	long long end = tu_mono_ms() + RETRY_MS;
	for (;;) {
		atomic_store(&sh->ctr[c->w], c->ctr_ack | (c->ctr_pending + 1) << 48);
		int64_t v = 0;
		int rc = shmmap_incr(c->sm, c->m, key, kl, 1, &v);
		if (rc == -EAGAIN && tu_mono_ms() < end) {
			/* It may or may not have been applied. */
			c->ctr_pending++;
			atomic_fetch_add(&sh->eagain[c->w], 1);
			atomic_fetch_add(&sh->incr_eagain[c->w], 1);
			sched_yield();
			continue;
		}
		if (rc) {
			note(c->w, "writer %d: incr %s: %s", c->w, key, shmmap_strerror(rc));
			return -1;
		}
		if (v < 1 || (uint64_t)v < c->ctr_ack + 1 ||
		    (uint64_t)v > c->ctr_ack + 1 + c->ctr_pending) {
			note(c->w, "writer %d: incr %s returned %" PRId64 ", expected %" PRIu64
			     "..%" PRIu64, c->w, key, v, c->ctr_ack + 1,
			     c->ctr_ack + 1 + c->ctr_pending);
			return -1;
		}
		c->ctr_ack = (uint64_t)v;
		c->ctr_pending = 0;
		atomic_store(&sh->ctr[c->w], c->ctr_ack);
		return 0;
	}
}

/* Finish what the previous incarnation of this writer id had in flight
 * when it was killed, so that the table is exact again. */
static int resolve_inflight(struct wctx *c)
{
	uint64_t f = atomic_load(&sh->inflight[c->w]), s;
	int kind, k;
	inflight_unpack(f, &kind, &k, &s);
	if (f && (k >= NKEYS || (kind != K_PUT && kind != K_DEL))) {
		note(c->w, "writer %d: bad in-flight record %#" PRIx64, c->w, f);
		return -1;
	}
	if (f && kind == K_PUT && atomic_load(&sh->ack[c->w][k]) < s) {
		if (put_seq(c, k, s))
			return -1;
		atomic_store(&sh->ack[c->w][k], s);
	}
	if (f && kind == K_DEL) {
		if (atomic_load(&sh->ack[c->w][k]) < s) {
			if (!(atomic_load(&sh->delgen[c->w][k]) & 1))
				atomic_fetch_add(&sh->delgen[c->w][k], 1);
			if (del_key(c, k, true) || put_seq(c, k, s))
				return -1;
			atomic_store(&sh->ack[c->w][k], s);
		}
		if (atomic_load(&sh->delgen[c->w][k]) & 1)
			atomic_fetch_add(&sh->delgen[c->w][k], 1);
	}
	atomic_store(&sh->inflight[c->w], 0);
	uint64_t cw = atomic_load(&sh->ctr[c->w]);
	c->ctr_ack = cw & ACK_MASK;
	c->ctr_pending = cw >> 48;
	return 0;
}

/* A get of one of this writer's own keys: nobody else writes them, so the
 * value is exactly the last acknowledged one. */
static int own_get(struct wctx *c, int k)
{
	char key[32];
	size_t kl = keyname(c->w, k, key), n = 0;
	unsigned char buf[VAL_MAX];
	int rc = shmmap_get(c->sm, c->m, key, kl, buf, sizeof buf, &n);
	if (k == CTR) {
		uint64_t v;
		if (rc == -ENOENT && c->ctr_ack == 0)
			return 0;
		if (rc || !parse_u64(buf, n, &v) || v < c->ctr_ack ||
		    v > c->ctr_ack + c->ctr_pending) {
			note(c->w, "writer %d: own %s: rc %s, %zu bytes, acknowledged %" PRIu64
			     " + %" PRIu64, c->w, key, shmmap_strerror(rc), n, c->ctr_ack,
			     c->ctr_pending);
			return -1;
		}
		return 0;
	}
	uint64_t a = atomic_load(&sh->ack[c->w][k]), seq = 0;
	if (a == 0 && rc == -ENOENT)
		return 0;
	int vc = rc ? C_ERR : check_value(buf, n, c->w, k, &seq);
	if (vc != C_OK || seq != a) {
		note(c->w, "writer %d: own %s: %s, %s, seq %" PRIu64 ", acknowledged %" PRIu64,
		     c->w, key, shmmap_strerror(rc), c_name[vc], seq, a);
		return -1;
	}
	return 0;
}

static int writer_main(int w)
{
	struct wctx c = {.w = w, .rng = seed_now()};
	if (attach_retry(w, &c.sm, &c.m))
		return 10;
	if (resolve_inflight(&c))
		return 11;
	/* Keys never written yet (a first incarnation, or one killed early). */
	for (int k = 0; k < NKEYS && !atomic_load(&sh->stop); k++)
		if (atomic_load(&sh->ack[w][k]) == 0) {
			if (op_put(&c, k))
				return 12;
			atomic_fetch_add(&sh->wops[w], 1);
		}
	char why[256];
	while (!atomic_load(&sh->stop)) {
		int r = (int)(rnd(&c.rng) % 100), k = (int)(rnd(&c.rng) % NKEYS), rc;
		if (r < 6) {
			rc = op_del_reput(&c, k);
		} else if (r < 14) {
			rc = op_incr(&c);
		} else if (r < 14 + sh->get_pct) {
			rc = own_get(&c, rnd(&c.rng) % 20 == 0 ? CTR : k);
			/* and a key of another writer, by the readers' rules */
			int ow = (int)(rnd(&c.rng) % (uint64_t)sh->nw);
			int ok = rnd(&c.rng) % 20 == 0 ? CTR : (int)(rnd(&c.rng) % NKEYS);
			int res = check_get(c.sm, c.m, ow, ok, why, sizeof why);
			atomic_fetch_add(&sh->gs[w].ops, 1);
			atomic_fetch_add(&sh->gs[w].c[res], 1);
			if (res >= C_TORN) {
				note(w, "writer %d reading: %s", w, why);
				rc = -1;
			}
		} else {
			rc = op_put(&c, k);
		}
		if (rc)
			return 13;
		atomic_fetch_add(&sh->wops[w], 1);
	}
	shmmap_detach(c.sm);
	return 0;
}

static int reader_main(int r)
{
	int slot = NW + r;
	shmmap *sm;
	shmmap_map m;
	if (attach_retry(slot, &sm, &m))
		return 10;
	uint64_t rng = seed_now();
	char why[256];
	int bad = 0;
	while (!atomic_load(&sh->stop)) {
		int w = (int)(rnd(&rng) % (uint64_t)sh->nw);
		int k = rnd(&rng) % 20 == 0 ? CTR : (int)(rnd(&rng) % NKEYS);
		int res = check_get(sm, m, w, k, why, sizeof why);
		atomic_fetch_add(&sh->gs[slot].c[res], 1);
		atomic_fetch_add(&sh->gs[slot].ops, 1);
		if (res >= C_TORN) {
			note(slot, "reader %d: %s", r, why);
			bad = 1; /* keep counting: the totals tell how bad */
		}
	}
	shmmap_detach(sm);
	return bad;
}

/* A new worker: attach, and check every key of every writer id in use by
 * the readers' rules while the writers run.  Exit 0 if all were right and
 * at least one value per key of one writer was there. */
static int verifier_main(int unused)
{
	(void)unused;
	shmmap *sm;
	shmmap_map m;
	long long end = tu_mono_ms() + 10000;
	int rc;
	while ((rc = shmmap_attach(co.sock, &sm)) == -EAGAIN && tu_mono_ms() < end)
		sched_yield();
	if (rc) {
		note(VERIFIER, "verifier: attach: %s", shmmap_strerror(rc));
		return 10;
	}
	rc = shmmap_open(sm, MAP_NAME, 0, &m); /* it must be there */
	if (rc) {
		note(VERIFIER, "verifier: open %s: %s", MAP_NAME, shmmap_strerror(rc));
		return 11;
	}
	char why[256];
	int present = 0, bad = 0;
	for (int w = 0; w < sh->nw; w++)
		for (int k = 0; k <= CTR; k++) {
			int res = check_get(sm, m, w, k, why, sizeof why);
			atomic_fetch_add(&sh->gs[VERIFIER].c[res], 1);
			present += res == C_OK;
			if (res >= C_TORN) {
				note(VERIFIER, "verifier: %s", why);
				bad = 1;
			}
		}
	shmmap_detach(sm);
	if (!bad && present < NKEYS) {
		note(VERIFIER, "verifier: only %d keys present", present);
		return 12;
	}
	return bad ? 13 : 0;
}

/* ---- the parent ---- */

static void kids_kill(void)
{
	for (int i = 0; i < NSLOTS; i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = 0;
		}
}

static void dump_coord_log(void)
{
	FILE *f = fopen(co.log, "r");
	char line[512];
	if (!f)
		return;
	fprintf(stderr, "---- %s ----\n", co.log);
	while (fgets(line, sizeof line, f))
		fprintf(stderr, "  shmmapd: %s", line);
	fclose(f);
}

static void notes_to_stderr(void)
{
	for (int i = 0; sh && i < NSLOTS; i++)
		if (atomic_load(&sh->noted[i]))
			fprintf(stderr, "  child slot %d: %s\n", i, sh->msg[i]);
}

/* Lines of the coordinator's log that contain what. */
static int log_count(const char *what)
{
	FILE *f = fopen(co.log, "r");
	char line[1024];
	int n = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

/* Fail the test with every child killed and the coordinator's log shown. */
__attribute__((noreturn, format(printf, 1, 2))) static void fail_now(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	kids_kill();
	fprintf(stderr, "FAILED: %s\n", buf);
	notes_to_stderr();
	dump_coord_log();
	tu_coord_cleanup(&co); /* no teardown after a failure in fork mode */
	ck_abort_msg("%s", buf);
	abort(); /* not reached */
}

#define FAIL_IF(cond, ...)                                                                 \
	do {                                                                               \
		if (cond)                                                                  \
			fail_now(__VA_ARGS__);                                             \
	} while (0)

/* The first child error noted so far, if any. */
static const char *first_note(void)
{
	for (int i = 0; i < NSLOTS; i++)
		if (atomic_load(&sh->noted[i]))
			return sh->msg[i];
	return NULL;
}

static pid_t spawn(int (*fn)(int), int arg)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = tu_fork();
	FAIL_IF(pid < 0, "fork: %s", strerror(errno));
	if (pid == 0)
		_exit(fn(arg));
	return pid;
}

static void shared_init(int nw, int get_pct)
{
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(sh != MAP_FAILED);
	memset(sh, 0, sizeof *sh);
	sh->nw = nw;
	sh->get_pct = get_pct;
	memset(kids, 0, sizeof kids);
}

static void setup(void)
{
	sh = NULL;
	memset(kids, 0, sizeof kids);
	ck_assert_int_eq(tu_coord_start(&co, "16M", CONF), 0);
}

static void teardown(void)
{
	kids_kill();
	tu_coord_cleanup(&co);
	if (sh)
		munmap(sh, sizeof *sh);
	sh = NULL;
}

/* Reap child slot i, which must exit 0 within deadline_ms. */
static void reap_ok(int i, int deadline_ms)
{
	int st = tu_waitpid(kids[i], deadline_ms);
	pid_t pid = kids[i];
	kids[i] = 0;
	const char *n = first_note();
	FAIL_IF(st < 0, "child slot %d (pid %d) did not exit within %d ms; first error: %s", i,
		(int)pid, deadline_ms, n ? n : "none");
	FAIL_IF(!WIFEXITED(st) || WEXITSTATUS(st) != 0,
		"child slot %d (pid %d) failed: status %#x; first error: %s", i, (int)pid, st,
		n ? n : "none");
}

/* SIGKILL writer w and reap it: it must not have exited on its own. */
static void kill_writer(int w)
{
	pid_t pid = kids[w];
	kill(pid, SIGKILL);
	int st = tu_waitpid(pid, 10000);
	kids[w] = 0;
	FAIL_IF(st < 0, "writer %d (pid %d) not reaped after SIGKILL", w, (int)pid);
	const char *n = first_note();
	FAIL_IF(WIFEXITED(st), "writer %d (pid %d) had exited with %d before the kill: %s", w,
		(int)pid, WEXITSTATUS(st), n ? n : "no message");
}

/* No child has reported an error or died. */
static void children_healthy(void)
{
	const char *n = first_note();
	FAIL_IF(n != NULL, "a child reported: %s", n);
	for (int i = 0; i < NSLOTS; i++) {
		int st;
		if (kids[i] > 0 && waitpid(kids[i], &st, WNOHANG) == kids[i]) {
			kids[i] = 0;
			n = first_note();
			FAIL_IF(true, "child slot %d exited early, status %#x: %s", i, st,
				n ? n : "no message");
		}
	}
}

/* Run shmmapctl -s SOCK args... (NULL-terminated). */
static int ctl(const char *a0, ...)
{
	char *argv[16];
	int n = 0;
	argv[n++] = getenv("SHMMAPCTL");
	FAIL_IF(argv[0] == NULL, "$SHMMAPCTL is not set");
	argv[n++] = "-s";
	argv[n++] = co.sock;
	va_list ap;
	va_start(ap, a0);
	for (const char *a = a0; a && n < 15; a = va_arg(ap, const char *))
		argv[n++] = (char *)a;
	va_end(ap);
	argv[n] = NULL;
	return tu_run(argv, ctl_out, sizeof ctl_out, ctl_err, sizeof ctl_err);
}

static int count_str(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

struct clients_want {
	int n;            /* slots in use, the tool's own included */
	pid_t present;    /* a pid that must be listed (0: none) */
	pid_t absent;     /* a pid that must not be (0: none) */
};

static bool clients_are(void *arg)
{
	const struct clients_want *cw = arg;
	if (ctl("--json", "clients", (const char *)NULL) != 0)
		return false;
	char needle[32];
	if (cw->present) {
		snprintf(needle, sizeof needle, "\"pid\":%d,", (int)cw->present);
		if (!strstr(ctl_out, needle))
			return false;
	}
	if (cw->absent) {
		snprintf(needle, sizeof needle, "\"pid\":%d,", (int)cw->absent);
		if (strstr(ctl_out, needle))
			return false;
	}
	return count_str(ctl_out, "\"slot\":") == cw->n &&
	       count_str(ctl_out, "\"self\":true") == 1 &&
	       !strstr(ctl_out, "\"state\":\"dead\"");
}

static void wait_clients(int n, pid_t present, pid_t absent, const char *when)
{
	struct clients_want cw = {n, present, absent};
	bool ok = tu_wait(clients_are, &cw, 10000);
	FAIL_IF(!ok, "%s: shmmapctl clients never showed %d slot(s) (present pid %d, absent pid "
		     "%d):\n%s%s", when, n, (int)present, (int)absent, ctl_out, ctl_err);
}

static void expect_check_ok(const char *when)
{
	int st = ctl("check", (const char *)NULL);
	FAIL_IF(st != 0, "%s: shmmapctl check exited %d:\n%s%s", when, st, ctl_out, ctl_err);
}

static shmmap *parent_attach(shmmap_map *m, unsigned flags)
{
	shmmap *sm = NULL;
	int rc = shmmap_attach(co.sock, &sm);
	FAIL_IF(rc != 0, "attach: %s", shmmap_strerror(rc));
	rc = shmmap_open(sm, MAP_NAME, flags, m);
	FAIL_IF(rc != 0, "open %s: %s", MAP_NAME, shmmap_strerror(rc));
	return sm;
}

/*
 * With every writer gone: each key holds exactly its last acknowledged
 * value, except that the one write a killed writer had in flight (its
 * inflight record) may or may not have landed, and its counter may hold
 * up to `slack` unacknowledged increments.  Returns the mismatches (the
 * first described in why); *present counts the keys found.
 */
static int verify_final(shmmap *sm, shmmap_map m, char *why, size_t cap, int *present)
{
	int bad = 0;
	*present = 0;
	for (int w = 0; w < sh->nw; w++) {
		uint64_t f = atomic_load(&sh->inflight[w]), s;
		int kind, fk;
		inflight_unpack(f, &kind, &fk, &s);
		for (int k = 0; k < NKEYS; k++) {
			char key[32], b[300] = "";
			unsigned char buf[VAL_MAX];
			size_t kl = keyname(w, k, key), n = 0;
			uint64_t a = atomic_load(&sh->ack[w][k]), seq = 0;
			bool amb = f && fk == k && a < s; /* may or may not have landed */
			int rc = shmmap_get(sm, m, key, kl, buf, sizeof buf, &n);
			if (rc == -ENOENT) {
				if (!(a == 0 || (amb && kind == K_DEL)))
					snprintf(b, sizeof b, "%s absent, acknowledged seq %" PRIu64,
						 key, a);
			} else if (rc) {
				snprintf(b, sizeof b, "get %s: %s", key, shmmap_strerror(rc));
			} else {
				int vc = check_value(buf, n, w, k, &seq);
				if (vc != C_OK)
					snprintf(b, sizeof b, "%s: %s value", key, c_name[vc]);
				else if (seq != a && !(amb && seq == s))
					snprintf(b, sizeof b, "%s: seq %" PRIu64
						 ", acknowledged %" PRIu64 "%s", key, seq, a,
						 amb ? " (+1 in flight)" : "");
				else
					(*present)++;
			}
			if (b[0] && bad++ == 0)
				snprintf(why, cap, "%s", b);
		}
		char key[32], b[300] = "";
		unsigned char buf[VAL_MAX];
		size_t kl = keyname(w, CTR, key), n = 0;
		uint64_t cw = atomic_load(&sh->ctr[w]), a = cw & ACK_MASK, slack = cw >> 48, v = 0;
		int rc = shmmap_get(sm, m, key, kl, buf, sizeof buf, &n);
		if (rc == -ENOENT) {
			if (a != 0)
				snprintf(b, sizeof b, "%s absent, acknowledged %" PRIu64, key, a);
		} else if (rc || !parse_u64(buf, n, &v) || v < a || v > a + slack) {
			snprintf(b, sizeof b, "%s: %s, value %" PRIu64 ", acknowledged %" PRIu64
				 " + up to %" PRIu64 " in flight", key, shmmap_strerror(rc), v, a,
				 slack);
		}
		if (b[0] && bad++ == 0)
			snprintf(why, cap, "%s", b);
	}
	return bad;
}

static uint64_t sum_eagain(void)
{
	uint64_t t = 0;
	for (int w = 0; w < NW; w++)
		t += atomic_load(&sh->eagain[w]);
	return t;
}

static void assert_gets_clean(int slot, const char *who)
{
	struct gstats *g = &sh->gs[slot];
	uint64_t badn = 0;
	for (int c = C_TORN; c < C_N; c++)
		badn += atomic_load(&g->c[c]);
	FAIL_IF(badn != 0,
		"%s: %" PRIu64 " bad gets of %" PRIu64 ": torn %" PRIu64 ", wrong key %" PRIu64
		", lost %" PRIu64 ", future %" PRIu64 ", errors %" PRIu64 "; first: %s",
		who, badn, atomic_load(&g->ops), atomic_load(&g->c[C_TORN]),
		atomic_load(&g->c[C_WRONGKEY]), atomic_load(&g->c[C_LOST]),
		atomic_load(&g->c[C_FUTURE]), atomic_load(&g->c[C_ERR]),
		sh->noted[slot] ? sh->msg[slot] : "?");
}

/* ---- kill9_loop ---- */

static bool all_running(void *arg)
{
	(void)arg;
	if (first_note())
		return true; /* let the caller see it */
	for (int w = 0; w < sh->nw; w++)
		if (atomic_load(&sh->wops[w]) < NKEYS)
			return false;
	for (int r = 0; r < NR; r++)
		if (atomic_load(&sh->gs[NW + r].ops) == 0)
			return false;
	return true;
}

static shmmap *parent_attach(shmmap_map *m, unsigned flags);

/* inherited: the writers use an attachment of the test process, inherited
 * across fork (each re-attaches under a slot of its own on its first call). */
static void kill9(bool inherited)
{
	long long t0 = tu_mono_ms();
	int secs = 6;
	const char *env = getenv("CHAOS_SECONDS");
	if (env && atoi(env) > 0)
		secs = atoi(env) > 40 ? 40 : atoi(env);
	shared_init(NW, 10);
	uint64_t rng = seed_now();
	fprintf(stderr, "kill9_loop%s: %d s of chaos, parent seed %#" PRIx64 "\n",
		inherited ? " (inherited attachment)" : "", secs, rng);
	if (inherited)
		g_inherit_sm = parent_attach(&g_inherit_m, SHMMAP_CREATE);

	for (int r = 0; r < NR; r++)
		kids[NW + r] = spawn(reader_main, r);
	for (int w = 0; w < NW; w++)
		kids[w] = spawn(writer_main, w);
	bool up = tu_wait(all_running, NULL, 15000);
	children_healthy();
	FAIL_IF(!up, "writers and readers did not get going within 15 s");

	/* The chaos: SIGKILL a random writer after a random 5..80 ms, respawn
	 * it at once; every 1 s window, every reader and writer id advanced. */
	int kills = 0, windows = 0;
	uint64_t prev_w[NW], prev_r[NR];
	for (int w = 0; w < NW; w++)
		prev_w[w] = atomic_load(&sh->wops[w]);
	for (int r = 0; r < NR; r++)
		prev_r[r] = atomic_load(&sh->gs[NW + r].ops);
	long long end = tu_mono_ms() + secs * 1000LL, win = tu_mono_ms();
	while (tu_mono_ms() < end) {
		int delay = 5 + (int)(rnd(&rng) % 76);
		struct timespec ts = {0, delay * 1000000L};
		nanosleep(&ts, NULL); /* chaos, not synchronisation */
		children_healthy();
		int w = (int)(rnd(&rng) % NW);
		kill_writer(w);
		kills++;
		kids[w] = spawn(writer_main, w);
		if (tu_mono_ms() - win >= 1000) {
			for (int i = 0; i < NW; i++) {
				uint64_t now = atomic_load(&sh->wops[i]);
				FAIL_IF(now == prev_w[i],
					"writer %d made no progress in the 1 s window %d (ops %" PRIu64
					", %d kills so far, %" PRIu64 " EAGAINs)", i, windows, now,
					kills, sum_eagain());
				prev_w[i] = now;
			}
			for (int r = 0; r < NR; r++) {
				uint64_t now = atomic_load(&sh->gs[NW + r].ops);
				FAIL_IF(now == prev_r[r],
					"reader %d made no progress in the 1 s window %d (ops %" PRIu64
					", %d kills so far)", r, windows, now, kills);
				prev_r[r] = now;
			}
			windows++;
			win = tu_mono_ms();
		}
	}

	/* Stop: writer 0 by a last SIGKILL (its write in flight stays
	 * unresolved), the others cleanly. */
	kill_writer(0);
	kills++;
	atomic_store(&sh->stop, 1);
	for (int i = 1; i < NSLOTS; i++)
		if (kids[i] > 0)
			reap_ok(i, 20000);
	children_healthy();
	for (int r = 0; r < NR; r++) {
		char who[32];
		snprintf(who, sizeof who, "reader %d", r);
		assert_gets_clean(NW + r, who);
		FAIL_IF(atomic_load(&sh->gs[NW + r].c[C_OK]) == 0, "reader %d never read a value", r);
	}
	for (int w = 0; w < NW; w++) {
		char who[32];
		snprintf(who, sizeof who, "writer %d (reading)", w);
		assert_gets_clean(w, who);
	}
	for (int w = 1; w < NW; w++)
		FAIL_IF(atomic_load(&sh->inflight[w]) != 0,
			"writer %d exited cleanly with a write in flight", w);
	if (g_inherit_sm) {
		/* The children's kills and detaches left it the test's own. */
		char buf[8];
		size_t n;
		int rc = shmmap_get(g_inherit_sm, g_inherit_m, "no-such-key", 11, buf, sizeof buf, &n);
		FAIL_IF(rc != -ENOENT, "the inherited attachment after the chaos: %s",
			shmmap_strerror(rc));
		shmmap_detach(g_inherit_sm);
		g_inherit_sm = NULL;
	}

	shmmap_map m;
	shmmap *sm = parent_attach(&m, 0);
	char why[512] = "";
	int present = 0;
	int bad = verify_final(sm, m, why, sizeof why, &present);
	shmmap_detach(sm);
	FAIL_IF(bad != 0, "%d keys differ from their acknowledged values; first: %s", bad, why);
	FAIL_IF(present < NW * NKEYS - 1, "only %d of %d keys present at the end", present,
		NW * NKEYS);

	wait_clients(1, 0, 0, "after kill9_loop");
	expect_check_ok("after kill9_loop");
	FAIL_IF(kills < 20, "only %d kills in %d s", kills, secs);

	uint64_t wops = 0, rops = 0, absent = 0, incr_amb = 0;
	for (int w = 0; w < NW; w++) {
		wops += atomic_load(&sh->wops[w]);
		incr_amb += atomic_load(&sh->incr_eagain[w]);
	}
	for (int r = 0; r < NR; r++) {
		rops += atomic_load(&sh->gs[NW + r].ops);
		absent += atomic_load(&sh->gs[NW + r].c[C_ABSENT]);
	}
	fprintf(stderr,
		"kill9_loop: %d kills, %d windows, writer ops %" PRIu64 ", reader gets %" PRIu64
		" (%" PRIu64 " absent during deletes), EAGAIN retries %" PRIu64
		" (%" PRIu64 " from incr), %.1f s\n",
		kills, windows, wops, rops, absent, sum_eagain(), incr_amb,
		(double)(tu_mono_ms() - t0) / 1000.0);
	fprintf(stderr, "kill9_loop: coordinator log: %d recoveries releasing stripe locks or "
		"blocks in flight, %d sweeps for allocator locks\n",
		log_count("released"), log_count("held an allocator lock"));
}

START_TEST(kill9_loop)
{
	kill9(false);
}
END_TEST

START_TEST(kill9_loop_inherited)
{
	kill9(true);
}
END_TEST

/* ---- coordinator_kill ---- */

struct progress {
	int nw;
	uint64_t base[NW];
	uint64_t need;
	long long since, min_ms;
};

static void progress_start(struct progress *p, int nw, uint64_t need, long long min_ms)
{
	p->nw = nw;
	p->need = need;
	p->min_ms = min_ms;
	p->since = tu_mono_ms();
	for (int w = 0; w < nw; w++)
		p->base[w] = atomic_load(&sh->wops[w]);
}

static bool progressed(void *arg)
{
	struct progress *p = arg;
	if (first_note())
		return true; /* let the caller see it */
	for (int w = 0; w < p->nw; w++)
		if (kids[w] > 0 && atomic_load(&sh->wops[w]) < p->base[w] + p->need)
			return false;
	return tu_mono_ms() - p->since >= p->min_ms;
}

static void expect_progress(int nw, uint64_t need, long long min_ms, int deadline_ms,
			    const char *when)
{
	struct progress p;
	progress_start(&p, nw, need, min_ms);
	bool ok = tu_wait(progressed, &p, deadline_ms);
	children_healthy();
	for (int w = 0; w < nw; w++)
		FAIL_IF(!ok && kids[w] > 0 && atomic_load(&sh->wops[w]) < p.base[w] + need,
			"%s: worker %d did only %" PRIu64 " ops in %d ms (wanted %" PRIu64 ")", when,
			w, atomic_load(&sh->wops[w]) - p.base[w], deadline_ms, need);
	FAIL_IF(!ok, "%s: no progress within %d ms", when, deadline_ms);
}

static void kill_coordinator(void)
{
	pid_t pid = co.pid;
	FAIL_IF(pid <= 0, "no coordinator to kill");
	kill(pid, SIGKILL);
	int st = tu_waitpid(pid, 10000);
	co.pid = 0;
	FAIL_IF(st < 0 || !WIFSIGNALED(st), "coordinator %d: status %#x after SIGKILL", (int)pid,
		st);
}

START_TEST(coordinator_kill)
{
	long long t0 = tu_mono_ms();
	shared_init(2, 50);
	for (int w = 0; w < 2; w++)
		kids[w] = spawn(writer_main, w);
	expect_progress(2, NKEYS + 200, 0, 15000, "start");

	/* 1. The coordinator dies under load; the data path does not notice. */
	long long down_ms = tu_mono_ms();
	kill_coordinator();
	shmmap *probe = NULL;
	int rc = shmmap_attach(co.sock, &probe);
	FAIL_IF(rc == 0, "attach succeeded with the coordinator dead");
	expect_progress(2, 200, 300, 5000, "coordinator down");
	FAIL_IF(tu_coord_restart(&co) != 0, "coordinator did not restart");
	down_ms = tu_mono_ms() - down_ms;
	expect_progress(2, 200, 0, 5000, "after restart");
	/* A new worker sees every acknowledged value. */
	kids[VERIFIER] = spawn(verifier_main, 0);
	reap_ok(VERIFIER, 30000);
	/* The old workers still read and write (they check their own keys). */
	expect_progress(2, 200, 0, 5000, "after the new worker");
	atomic_store(&sh->stop, 1);
	reap_ok(0, 20000);
	reap_ok(1, 20000);
	assert_gets_clean(0, "worker 0 (reading)");
	assert_gets_clean(1, "worker 1 (reading)");
	wait_clients(1, 0, 0, "after the first restart");
	expect_check_ok("after the first restart");

	/* 2. The coordinator and worker 1 killed at the same moment. */
	atomic_store(&sh->stop, 0);
	for (int w = 0; w < 2; w++)
		kids[w] = spawn(writer_main, w);
	expect_progress(2, 200, 0, 15000, "second round");
	pid_t cpid = co.pid, dead = kids[1];
	kill(cpid, SIGKILL);
	kill(dead, SIGKILL);
	int st = tu_waitpid(dead, 10000), cst = tu_waitpid(cpid, 10000);
	kids[1] = 0;
	co.pid = 0;
	FAIL_IF(st < 0 || !WIFSIGNALED(st), "worker 1: status %#x after SIGKILL", st);
	FAIL_IF(cst < 0 || !WIFSIGNALED(cst), "coordinator: status %#x after SIGKILL", cst);
	FAIL_IF(tu_coord_restart(&co) != 0, "coordinator did not restart (second time)");
	/* The dead worker's slot is reclaimed: worker 0 and the tool remain. */
	wait_clients(2, kids[0], dead, "after the second restart");
	expect_progress(1, 200, 0, 15000, "worker 0 after the second restart");
	atomic_store(&sh->stop, 1);
	reap_ok(0, 20000);
	children_healthy();
	assert_gets_clean(0, "worker 0 (reading)");

	/* Exactly the acknowledged values, the killed worker's write in
	 * flight aside. */
	shmmap_map m;
	shmmap *sm = parent_attach(&m, 0);
	char why[512] = "";
	int present = 0;
	int bad = verify_final(sm, m, why, sizeof why, &present);
	shmmap_detach(sm);
	FAIL_IF(bad != 0, "%d keys differ from their acknowledged values; first: %s", bad, why);
	FAIL_IF(present < 2 * NKEYS - 1, "only %d of %d keys present", present, 2 * NKEYS);
	wait_clients(1, 0, 0, "at the end");
	expect_check_ok("at the end");
	fprintf(stderr,
		"coordinator_kill: coordinator down %lld ms (first kill to restart), %" PRIu64 " + %" PRIu64
		" worker ops, EAGAIN retries %" PRIu64 ", %.1f s\n",
		down_ms, atomic_load(&sh->wops[0]), atomic_load(&sh->wops[1]), sum_eagain(),
		(double)(tu_mono_ms() - t0) / 1000.0);
}
END_TEST

/* ---- clean_restart_keeps_data ---- */

#define KEEP_KEYS 1000

static size_t keep_value(int i, char *v)
{
	int n = snprintf(v, 64, "value-%d-", i);
	size_t len = (size_t)n + (size_t)(i * 37 % 500);
	for (size_t j = (size_t)n; j < len; j++)
		v[j] = (char)('a' + (i + (int)j) % 26);
	return len;
}

START_TEST(clean_restart_keeps_data)
{
	long long t0 = tu_mono_ms();
	shmmap *sm = NULL;
	shmmap_map m;
	char k[32], v[600], buf[600];
	int rc = shmmap_attach(co.sock, &sm);
	FAIL_IF(rc != 0, "attach: %s", shmmap_strerror(rc));
	rc = shmmap_open(sm, "keep", SHMMAP_CREATE, &m);
	FAIL_IF(rc != 0, "open keep: %s", shmmap_strerror(rc));
	for (int i = 0; i < KEEP_KEYS; i++) {
		int kl = snprintf(k, sizeof k, "key-%d", i);
		size_t n = keep_value(i, v);
		rc = shmmap_put(sm, m, k, (size_t)kl, v, n, 0, 0);
		FAIL_IF(rc != 0, "put %s: %s", k, shmmap_strerror(rc));
	}
	shmmap_detach(sm);

	int st = tu_coord_stop(&co);
	FAIL_IF(st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0,
		"shmmapd did not stop cleanly: status %#x", st);
	FAIL_IF(tu_coord_restart(&co) != 0, "shmmapd did not restart");

	rc = shmmap_attach(co.sock, &sm);
	FAIL_IF(rc != 0, "attach after restart: %s", shmmap_strerror(rc));
	rc = shmmap_open(sm, "keep", 0, &m);
	FAIL_IF(rc != 0, "open keep after restart: %s", shmmap_strerror(rc));
	for (int i = 0; i < KEEP_KEYS; i++) {
		int kl = snprintf(k, sizeof k, "key-%d", i);
		size_t n = keep_value(i, v), got = 0;
		rc = shmmap_get(sm, m, k, (size_t)kl, buf, sizeof buf, &got);
		FAIL_IF(rc != 0, "get %s after restart: %s", k, shmmap_strerror(rc));
		FAIL_IF(got != n || memcmp(buf, v, n) != 0, "%s: wrong value after restart", k);
	}
	shmmap_detach(sm);
	wait_clients(1, 0, 0, "after the clean restart");
	expect_check_ok("after the clean restart");
	fprintf(stderr, "clean_restart_keeps_data: %d keys kept, %.1f s\n", KEEP_KEYS,
		(double)(tu_mono_ms() - t0) / 1000.0);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("chaos");
	TCase *tc = tcase_create("chaos");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, kill9_loop);
	tcase_add_test(tc, kill9_loop_inherited);
	tcase_add_test(tc, coordinator_kill);
	tcase_add_test(tc, clean_restart_keeps_data);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(suite());
}
