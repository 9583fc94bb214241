/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * cache.c - the trace-driven cache benchmark of issue 13 (make bench-cache):
 * shmmap as a look-aside cache, side by side with an exact LRU simulation,
 * memcached and Redis, on the same request sequence and the same byte
 * budget, in one run.
 *
 * Traces
 *   Keys "key:NNNNNNN" (11 bytes, id zero-padded to 7 digits), chosen by
 *   Zipf(0.99) over N keys (rank = id; the sequence comes from a fixed seed,
 *   so every system and every run gets the same one).  Look-aside pattern:
 *   get; on a miss, set the key's value.  Two value mixes: every value 100
 *   B, and a mixed one where key id has the size floor(64 * 512^u) bytes
 *   (64 B .. 32 KiB, log-uniform, mean about 5.2 KiB), u in [0,1) taken from
 *   a 64-bit hash (splitmix64's finaliser) of the id: a fixed size per key,
 *   independent of its popularity.  Budgets: 1%, 5% and 20% of the working
 *   set, the sum of key + value bytes of all N keys (at least 1 MiB, the
 *   smallest shmmap segment).  The first --warm requests warm the cache up
 *   (the program checks that the warm-up inserted at least the budget),
 *   the next --measure requests are measured.
 *
 *   Requests go in batches of 256 consecutive ones, so that memcached and
 *   Redis can be pipelined (three or four round trips per batch, not two
 *   per request): the gets of the keys new in the batch, in order; the sets of
 *   those that missed; then the gets of the keys repeated within the batch
 *   (hot keys: present by then unless their set failed or something
 *   evicted them meanwhile; what the server answers is what is counted),
 *   and sets for those that missed.  The order of operations differs from
 *   one request at a time only within a batch (a repeat's touch comes after
 *   the batch's sets).  Every system, the simulation included, runs exactly
 *   the same batches, so they all see the same sequence of operations.
 *
 * Size shift (both directions, on a 16 MiB budget)
 *   Fill: write distinct keys with values of the first size (1 KiB or 10 B)
 *   until twice the budget in key + value bytes was written; then write
 *   --shift-new (10,000) new keys with values of the other size.  Figures:
 *   key + value bytes evicted per byte inserted since the shift (after the
 *   first 100 new values, and after all of them), the fraction of the last
 *   1000 written keys that are missing, live key + value bytes / memory.
 *
 * Figures, the same way for every system
 *   hit ratio     hits / requests over the measured requests;
 *   evicted/inserted  key + value bytes evicted per key + value byte
 *                 stored, over the measured requests: stored bytes (sets
 *                 that succeeded) minus the change of the live key + value
 *                 bytes (there are no deletes, overwrites or TTLs);
 *   live/memory   live key + value bytes at the end / the memory the system
 *                 was given, or what it reports it took if that is more
 *                 (memcached's stats slabs total_malloced: it gives every
 *                 size class a first page even past -m; Redis's used_memory).
 *   Figures move from run to run: shmmap's segment hashes with a random
 *   seed (its hit ratio at 1% with 100 B values was 0.466 and 0.434 in two
 *   runs; elsewhere the third decimal moves), memcached's LRU maintainer
 *   runs in the background, Redis samples at random; the simulation's
 *   figures do not move.
 *   Live key + value bytes: shmmap_stats() (bytes), the simulation's own
 *   count, memcached's key list (lru_crawler metadump, which does not bump
 *   items) and Redis's (SCAN, which does not touch keys), each key's size
 *   known from its id.
 *
 * Systems (each cell starts its own private server and stops it after)
 *   shmmap     a private shmmapd: a temp config with [segment] size = the
 *              budget rounded up to 64 KiB (max_size = size: no growth),
 *              max_clients = 8, and NO [map] section: the default map
 *              config (policy evict, sizes automatic, value_max 1M);
 *              the public API only.
 *   LRU        an exact LRU simulation in this program, counting key +
 *              value bytes against the budget (nothing else): an array
 *              indexed by key id (a perfect hash) + a doubly linked list.
 *   memcached  -m MB = the budget rounded to whole MiB, at least 2 (with
 *              its default 1 MiB item size limit it refuses less); -m
 *              counts its slab pages (1 MiB each, item headers included),
 *              not its hash table or connection buffers.  Meta-get "mg KEY"
 *              (bumps the item as a get does), "set".
 *   Redis      maxmemory = the budget, allkeys-lru then allkeys-lfu (the
 *              default 5 samples); maxmemory counts used_memory, which
 *              includes the empty server's own (printed) and per-key
 *              overhead.  STRLEN as the get (a read that touches the key
 *              like GET, without sending the value back), SET.
 *   memcached and Redis run on Unix sockets in --workdir, spoken to by the
 *   small text/RESP clients below.
 *
 * Put errors (-ENOSPC, -E2BIG on a map with policy evict, an OOM reply of
 * Redis, a SERVER_ERROR of memcached) are counted per cell and shown; they
 * do not stop the run.  A server that does not start, a lost connection or
 * a reply that is not in the protocol fails the cell: exit status 1.
 *
 * Usage (scripts/bench-cache.sh builds this, makes the work dir and passes
 * the paths):
 *   cache --shmmapd PATH --workdir DIR --seg-prefix /NAME
 *         [--memcached PATH] [--redis-server PATH] [--short]
 *         [--keys N] [--mixed-keys N] [--warm N] [--measure N]
 *         [--shift-budget BYTES] [--shift-new N] [--systems LIST]
 *         [--experiments fixed,mixed,shift]
 *   LIST: shmmap,lru,memcached,redis-lru,redis-lfu (default: all found);
 *   --experiments: the 100 B trace, the mixed one, the size shifts (all).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmmap.h"

#define KLEN 11u             /* "key:" + 7 digits */
#define ID_LIMIT 10000000u   /* ids have 7 digits */
#define VMIN 64u             /* mixed values: 64 B .. */
#define VMAX 32768u          /* .. 32 KiB */
#define BATCH 256u           /* requests per batch */
#define SET_CHUNK (256u * 1024u) /* bytes of sets per round trip */
#define MIB (1024.0 * 1024.0)
#define IO_TIMEOUT_MS 60000
#define START_TIMEOUT_S 30.0

/* ---- options ---- */

static struct {
	const char *shmmapd, *memcached, *redis, *workdir, *segprefix, *systems, *exps;
	uint32_t keys, mixed_keys, shift_new;
	uint64_t warm, measure, shift_budget;
	bool is_short;
} opt;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- keys and value sizes ---- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void key_of(char *k, uint32_t id)
{
	memcpy(k, "key:", 4);
	for (int i = (int)KLEN - 1; i >= 4; i--) {
		k[i] = (char)('0' + id % 10);
		id /= 10;
	}
}

/* The id of a key as a server lists it: "key:NNNNNNN", or "key%3ANNNNNNN"
 * (memcached's metadump URL-encodes the colon). */
static bool id_of(const char *k, size_t len, uint32_t *id)
{
	size_t p;
	if (len == KLEN && memcmp(k, "key:", 4) == 0)
		p = 4;
	else if (len == KLEN + 2 && memcmp(k, "key%3A", 6) == 0)
		p = 6;
	else
		return false;
	uint32_t v = 0;
	for (; p < len; p++) {
		if (k[p] < '0' || k[p] > '9')
			return false;
		v = v * 10 + (uint32_t)(k[p] - '0');
	}
	*id = v;
	return true;
}

enum vkind { V_FIXED, V_MIXED, V_SHIFT };

/* A workload's key space: ids 0..n-1 and the value size of each. */
struct wl {
	enum vkind kind;
	uint32_t n;
	uint32_t fixed;                  /* V_FIXED */
	uint32_t shift_at, before, after; /* V_SHIFT: ids below shift_at have before */
};

static uint32_t mixed_size(uint32_t id)
{
	double u = (double)(mix64((uint64_t)id ^ 0x6a09e667f3bcc909ull) >> 11) * 0x1p-53;
	double s = (double)VMIN * exp2(9.0 * u); /* 64 * 512^u */
	uint32_t v = (uint32_t)s;
	return v < VMIN ? VMIN : v > VMAX ? VMAX : v;
}

static uint32_t vsize(const struct wl *w, uint32_t id)
{
	switch (w->kind) {
	case V_FIXED: return w->fixed;
	case V_MIXED: return mixed_size(id);
	case V_SHIFT: return id < w->shift_at ? w->before : w->after;
	}
	return 0;
}

static uint64_t kvsize(const struct wl *w, uint32_t id)
{
	return KLEN + vsize(w, id);
}

static unsigned char vbuf[VMAX];   /* the bytes every value is cut from */
static unsigned char gbuf[2 * VMAX]; /* shmmap gets copy into this */

/* ---- the trace: Zipf(0.99) ids cut into batches ---- */

struct trace {
	uint32_t *id;
	uint8_t *rep;    /* 1: the key came earlier in the same batch */
	uint64_t len;    /* a multiple of BATCH */
	uint64_t nb;     /* batch b is id[b * BATCH .. (b + 1) * BATCH) */
	uint64_t mbegin; /* first measured batch */
	uint64_t measured; /* requests in batches mbegin.. */
};

static int trace_make(struct trace *t, uint32_t n, uint64_t warm, uint64_t measure)
{
	double *cdf = malloc((size_t)n * sizeof *cdf);
	uint32_t *stamp = calloc(n, sizeof *stamp);
	t->mbegin = (warm + BATCH - 1) / BATCH;
	t->nb = t->mbegin + (measure + BATCH - 1) / BATCH;
	t->len = t->nb * BATCH;
	t->measured = t->len - t->mbegin * BATCH;
	t->id = malloc(t->len * sizeof *t->id);
	t->rep = malloc(t->len);
	if (!cdf || !stamp || !t->id || !t->rep) {
		free(cdf);
		free(stamp);
		return -ENOMEM;
	}
	double sum = 0;
	for (uint32_t i = 0; i < n; i++) {
		sum += pow((double)i + 1.0, -0.99);
		cdf[i] = sum;
	}
	for (uint32_t i = 0; i < n; i++)
		cdf[i] /= sum;
	uint64_t seed = 0x243f6a8885a308d3ull;
	for (uint64_t i = 0; i < t->len; i++) {
		double u = (double)(mix64(seed + i) >> 11) * 0x1p-53;
		uint32_t lo = 0, hi = n - 1; /* the first id with cdf > u */
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			if (cdf[mid] > u)
				hi = mid;
			else
				lo = mid + 1;
		}
		t->id[i] = lo;
		uint32_t b = (uint32_t)(i / BATCH) + 1;
		t->rep[i] = stamp[lo] == b;
		stamp[lo] = b;
	}
	free(cdf);
	free(stamp);
	return 0;
}

static void trace_free(struct trace *t)
{
	free(t->id);
	free(t->rep);
	memset(t, 0, sizeof *t);
}

/* ---- a cell: one system, one budget ---- */

struct conn {
	int fd;
	char *r; /* read buffer: r[rpos..rlen) unread */
	size_t rpos, rlen, rcap;
	char *w; /* write buffer: w[0..wlen) unsent */
	size_t wlen, wcap;
};

struct lru {
	int32_t *prev, *next; /* -1: none */
	uint8_t *in;
	int32_t head, tail; /* head: most recent */
	uint64_t used, cap;
};

struct cell {
	const struct sysops *ops;
	const struct wl *wl;
	uint64_t budget, given;
	char given_note[200];
	unsigned no;
	/* a server of our own */
	pid_t pid;
	char sock[240], log[240], conf[240], seg[160];
	shmmap *sm;
	shmmap_map map;
	struct conn cn;
	struct lru lru;
	const char *policy;
	uint64_t baseline; /* Redis: used_memory when empty */
	uint8_t *seen;     /* one bit per id, for the key lists */
	/* results */
	uint64_t enospc, e2big, put_other, get_err;
	char first_err[200];
	bool failed;
	char why[300];
};

struct sysops {
	const char *id, *name;
	int (*start)(struct cell *);
	void (*stop)(struct cell *);
	/* hit[i]: was ids[i] present (and touched as by a get) */
	int (*gets)(struct cell *, const uint32_t *ids, unsigned n, bool *hit);
	/* ok[i]: was ids[i] stored */
	int (*sets)(struct cell *, const uint32_t *ids, unsigned n, bool *ok);
	/* live key + value bytes */
	int (*live)(struct cell *, uint64_t *bytes);
	/* the memory the server says it took (NULL: what it was given) */
	int (*mem)(struct cell *, uint64_t *bytes);
};

__attribute__((format(printf, 2, 3))) static int cfail(struct cell *c, const char *fmt, ...)
{
	if (!c->failed) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->why, sizeof c->why, fmt, ap);
		va_end(ap);
		c->failed = true;
	}
	return -1;
}

__attribute__((format(printf, 2, 3))) static void note_err(struct cell *c, const char *fmt, ...)
{
	if (c->first_err[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->first_err, sizeof c->first_err, fmt, ap);
	va_end(ap);
}

/* ---- server processes ---- */

static void show_log(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[512];
	fprintf(stderr, "\n--- %s ---\n", path);
	while (fgets(line, sizeof line, f))
		fputs(line, stderr);
	fclose(f);
}

static int spawn(struct cell *c, char *const argv[])
{
	fflush(NULL);
	pid_t p = fork();
	if (p < 0)
		return cfail(c, "fork: %s", strerror(errno));
	if (p == 0) {
		/* The server dies with this program, whatever kills it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(c->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	c->pid = p;
	return 0;
}

static bool alive(struct cell *c)
{
	int st;
	if (!c->pid)
		return false;
	if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
		c->pid = 0;
		return false;
	}
	return true;
}

/* Peak resident memory of a process (VmHWM), in bytes; 0 if unknown. */
static uint64_t peak_rss(pid_t pid)
{
	char path[64], line[256];
	uint64_t kb = 0;
	if (pid)
		snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	else
		snprintf(path, sizeof path, "/proc/self/status");
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %" SCNu64, &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

static uint64_t server_peak; /* the largest peak RSS of a server */
static char server_peak_what[120];

static void reap(struct cell *c)
{
	if (!c->pid)
		return;
	uint64_t peak = peak_rss(c->pid);
	if (peak > server_peak) {
		server_peak = peak;
		snprintf(server_peak_what, sizeof server_peak_what, "%s, %.2f MB budget",
			 c->ops->name, (double)c->budget / 1e6);
	}
	kill(c->pid, SIGTERM);
	double end = now_s() + 10;
	while (alive(c) && now_s() < end)
		nap_ms(10);
	if (c->pid) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		c->pid = 0;
	}
}

/* ---- a buffered Unix socket connection (memcached, Redis) ---- */

static int conn_connect(struct cell *c, struct conn *cn)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(c->sock) >= sizeof a.sun_path)
		return cfail(c, "socket path too long: %s", c->sock);
	memcpy(a.sun_path, c->sock, strlen(c->sock) + 1);
	double end = now_s() + START_TIMEOUT_S;
	memset(cn, 0, sizeof *cn);
	cn->fd = -1;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return cfail(c, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
			cn->fd = fd;
			break;
		}
		close(fd);
		if (!alive(c)) {
			show_log(c->log);
			return cfail(c, "the server exited at start (its log is above)");
		}
		if (now_s() > end)
			return cfail(c, "the server did not listen on %s within %.0f s", c->sock,
				     START_TIMEOUT_S);
		nap_ms(20);
	}
	cn->rcap = 1 << 20;
	cn->wcap = 1 << 20;
	cn->r = malloc(cn->rcap);
	cn->w = malloc(cn->wcap);
	if (!cn->r || !cn->w)
		return cfail(c, "out of memory");
	return 0;
}

static void conn_close(struct conn *cn)
{
	if (cn->fd >= 0)
		close(cn->fd);
	free(cn->r);
	free(cn->w);
	memset(cn, 0, sizeof *cn);
	cn->fd = -1;
}

static int wr(struct cell *c, const void *p, size_t n)
{
	struct conn *cn = &c->cn;
	if (cn->wlen + n > cn->wcap) {
		size_t cap = cn->wcap;
		while (cn->wlen + n > cap)
			cap *= 2;
		char *w = realloc(cn->w, cap);
		if (!w)
			return cfail(c, "out of memory");
		cn->w = w;
		cn->wcap = cap;
	}
	memcpy(cn->w + cn->wlen, p, n);
	cn->wlen += n;
	return 0;
}

static int wrs(struct cell *c, const char *s)
{
	return wr(c, s, strlen(s));
}

static int wait_fd(struct cell *c, short ev)
{
	struct pollfd p = {.fd = c->cn.fd, .events = ev};
	int r;
	while ((r = poll(&p, 1, IO_TIMEOUT_MS)) < 0 && errno == EINTR)
		;
	if (r < 0)
		return cfail(c, "poll: %s", strerror(errno));
	if (r == 0)
		return cfail(c, "no reply within %d s", IO_TIMEOUT_MS / 1000);
	return 0;
}

/* Send everything written, reading replies meanwhile into the buffer (a
 * server that answers while we still write must never block on us). */
static int fill(struct cell *c, bool block);

static int flush(struct cell *c)
{
	struct conn *cn = &c->cn;
	size_t off = 0;
	while (off < cn->wlen) {
		ssize_t k = send(cn->fd, cn->w + off, cn->wlen - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k > 0) {
			off += (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return cfail(c, "send: %s", strerror(errno));
		struct pollfd p = {.fd = cn->fd, .events = POLLIN | POLLOUT};
		int r = poll(&p, 1, IO_TIMEOUT_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return cfail(c, "send: %s", r == 0 ? "timed out" : strerror(errno));
		if ((p.revents & POLLIN) && fill(c, false) < 0)
			return -1;
	}
	cn->wlen = 0;
	return 0;
}

/* Read what the socket has (block: wait for at least one byte). */
static int fill(struct cell *c, bool block)
{
	struct conn *cn = &c->cn;
	if (cn->rpos > 0 && cn->rpos == cn->rlen)
		cn->rpos = cn->rlen = 0;
	if (cn->rlen == cn->rcap) {
		if (cn->rpos > 0) {
			memmove(cn->r, cn->r + cn->rpos, cn->rlen - cn->rpos);
			cn->rlen -= cn->rpos;
			cn->rpos = 0;
		} else {
			char *r = realloc(cn->r, cn->rcap * 2);
			if (!r)
				return cfail(c, "out of memory");
			cn->r = r;
			cn->rcap *= 2;
		}
	}
	for (;;) {
		if (block && wait_fd(c, POLLIN) < 0)
			return -1;
		ssize_t k = recv(cn->fd, cn->r + cn->rlen, cn->rcap - cn->rlen, MSG_DONTWAIT);
		if (k > 0) {
			cn->rlen += (size_t)k;
			return 0;
		}
		if (k == 0)
			return cfail(c, "the server closed the connection");
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (!block)
				return 0;
			continue;
		}
		return cfail(c, "recv: %s", strerror(errno));
	}
}

/* The next line, without its LF or CRLF (memcached's metadump ends its
 * lines with a bare LF), NUL-terminated in the buffer. */
static int rline(struct cell *c, char **line, size_t *len)
{
	struct conn *cn = &c->cn;
	size_t scan = cn->rpos;
	for (;;) {
		char *e = scan < cn->rlen ? memchr(cn->r + scan, '\n', cn->rlen - scan) : NULL;
		if (e) {
			*line = cn->r + cn->rpos;
			cn->rpos = (size_t)(e - cn->r) + 1;
			if (e > *line && e[-1] == '\r')
				e--;
			*len = (size_t)(e - *line);
			*e = '\0';
			return 0;
		}
		size_t seen = cn->rlen - cn->rpos;
		if (fill(c, true) < 0)
			return -1;
		/* fill may have moved the unread bytes to the front */
		scan = cn->rpos + seen;
	}
}

/* n bytes plus CRLF: a bulk string's payload. */
static int rbulk(struct cell *c, size_t n, char **p)
{
	struct conn *cn = &c->cn;
	while (cn->rlen - cn->rpos < n + 2)
		if (fill(c, true) < 0)
			return -1;
	*p = cn->r + cn->rpos;
	if (memcmp(*p + n, "\r\n", 2) != 0)
		return cfail(c, "bulk reply not terminated by CRLF");
	(*p)[n] = '\0';
	cn->rpos += n + 2;
	return 0;
}

/* ---- the bitmap of ids seen in a key list ---- */

static int seen_reset(struct cell *c)
{
	size_t n = ((size_t)c->wl->n + 7) / 8;
	if (!c->seen)
		c->seen = malloc(n);
	if (!c->seen)
		return cfail(c, "out of memory");
	memset(c->seen, 0, n);
	return 0;
}

/* Count a listed key once; false if it is not one of ours. */
static bool seen_add(struct cell *c, const char *k, size_t len, uint64_t *bytes)
{
	uint32_t id;
	if (!id_of(k, len, &id) || id >= c->wl->n)
		return false;
	if (!(c->seen[id / 8] & (1u << (id % 8)))) {
		c->seen[id / 8] |= (uint8_t)(1u << (id % 8));
		*bytes += kvsize(c->wl, id);
	}
	return true;
}

/* ---- shmmap ---- */

static int sm_start(struct cell *c)
{
	uint64_t size = (c->budget + 65535) / 65536 * 65536;
	if (size < (1u << 20))
		size = 1u << 20;
	c->given = size;
	snprintf(c->given_note, sizeof c->given_note, "[segment] size, max_size = size");
	snprintf(c->seg, sizeof c->seg, "%s-%u", opt.segprefix, c->no);
	snprintf(c->sock, sizeof c->sock, "%s/shmmapd-%u.sock", opt.workdir, c->no);
	snprintf(c->conf, sizeof c->conf, "%s/shmmap-%u.ini", opt.workdir, c->no);
	snprintf(c->log, sizeof c->log, "%s/shmmapd-%u.log", opt.workdir, c->no);
	FILE *f = fopen(c->conf, "w");
	if (!f)
		return cfail(c, "%s: %s", c->conf, strerror(errno));
	/* No [map] section: the default map config is what is measured. */
	fprintf(f, "[segment]\nname = %s\nsize = %" PRIu64 "\nmax_clients = 8\n\n"
		   "[server]\nsocket = %s\nlog_level = warning\n",
		c->seg, size, c->sock);
	if (fclose(f) != 0)
		return cfail(c, "%s: %s", c->conf, strerror(errno));
	char *argv[] = {(char *)opt.shmmapd, "-c", c->conf, "--foreground", NULL};
	if (spawn(c, argv) < 0)
		return -1;
	double end = now_s() + START_TIMEOUT_S;
	int rc;
	while ((rc = shmmap_attach(c->sock, &c->sm)) != 0) {
		if (!alive(c)) {
			show_log(c->log);
			return cfail(c, "shmmapd exited at start (its log is above)");
		}
		if (now_s() > end)
			return cfail(c, "attach %s: %s", c->sock, shmmap_strerror(rc));
		nap_ms(20);
	}
	rc = shmmap_open(c->sm, "cache", SHMMAP_CREATE, &c->map);
	if (rc != 0)
		return cfail(c, "shmmap_open: %s", shmmap_strerror(rc));
	return 0;
}

static void sm_stop(struct cell *c)
{
	shmmap_detach(c->sm);
	c->sm = NULL;
	reap(c);
	if (c->seg[0]) {
		char lock[200];
		snprintf(lock, sizeof lock, "%s.lock", c->seg);
		shm_unlink(c->seg);
		shm_unlink(lock);
	}
	unlink(c->sock);
}

static int sm_gets(struct cell *c, const uint32_t *ids, unsigned n, bool *hit)
{
	char k[KLEN];
	for (unsigned i = 0; i < n; i++) {
		size_t vl = 0;
		key_of(k, ids[i]);
		int rc = shmmap_get(c->sm, c->map, k, KLEN, gbuf, sizeof gbuf, &vl);
		hit[i] = rc == 0;
		if (rc == 0 && vl != vsize(c->wl, ids[i])) {
			c->get_err++;
			note_err(c, "get %.*s: %zu bytes, stored %u", (int)KLEN, k, vl,
				 vsize(c->wl, ids[i]));
		} else if (rc != 0 && rc != -ENOENT) {
			c->get_err++;
			note_err(c, "get: %s", shmmap_strerror(rc));
		}
	}
	return 0;
}

static int sm_sets(struct cell *c, const uint32_t *ids, unsigned n, bool *ok)
{
	char k[KLEN];
	for (unsigned i = 0; i < n; i++) {
		key_of(k, ids[i]);
		uint32_t vl = vsize(c->wl, ids[i]);
		int rc = shmmap_put(c->sm, c->map, k, KLEN, vbuf, vl, 0, 0);
		ok[i] = rc == 0;
		if (rc == -ENOSPC)
			c->enospc++;
		else if (rc == -E2BIG)
			c->e2big++;
		else if (rc != 0) {
			c->put_other++;
			note_err(c, "put of %u B: %s", vl, shmmap_strerror(rc));
		}
		if (rc == -ENOSPC || rc == -E2BIG)
			note_err(c, "put of %u B: %s", vl, shmmap_strerror(rc));
	}
	return 0;
}

static int sm_live(struct cell *c, uint64_t *bytes)
{
	struct shmmap_stats st;
	int rc = shmmap_stats(c->sm, c->map, &st);
	if (rc != 0)
		return cfail(c, "shmmap_stats: %s", shmmap_strerror(rc));
	*bytes = st.bytes;
	return 0;
}

/* ---- exact LRU on key + value bytes ---- */

static int lru_start(struct cell *c)
{
	struct lru *l = &c->lru;
	uint32_t n = c->wl->n;
	l->prev = malloc((size_t)n * sizeof *l->prev);
	l->next = malloc((size_t)n * sizeof *l->next);
	l->in = calloc(n, 1);
	if (!l->prev || !l->next || !l->in)
		return cfail(c, "out of memory");
	l->head = l->tail = -1;
	l->used = 0;
	l->cap = c->budget;
	c->given = c->budget;
	snprintf(c->given_note, sizeof c->given_note, "key + value bytes");
	return 0;
}

static void lru_stop(struct cell *c)
{
	free(c->lru.prev);
	free(c->lru.next);
	free(c->lru.in);
	memset(&c->lru, 0, sizeof c->lru);
}

static void lru_unlink(struct lru *l, int32_t i)
{
	if (l->prev[i] >= 0)
		l->next[l->prev[i]] = l->next[i];
	else
		l->head = l->next[i];
	if (l->next[i] >= 0)
		l->prev[l->next[i]] = l->prev[i];
	else
		l->tail = l->prev[i];
}

static void lru_push(struct lru *l, int32_t i)
{
	l->prev[i] = -1;
	l->next[i] = l->head;
	if (l->head >= 0)
		l->prev[l->head] = i;
	l->head = i;
	if (l->tail < 0)
		l->tail = i;
}

static int lru_gets(struct cell *c, const uint32_t *ids, unsigned n, bool *hit)
{
	struct lru *l = &c->lru;
	for (unsigned i = 0; i < n; i++) {
		int32_t id = (int32_t)ids[i];
		hit[i] = l->in[id];
		if (hit[i] && l->head != id) {
			lru_unlink(l, id);
			lru_push(l, id);
		}
	}
	return 0;
}

static int lru_sets(struct cell *c, const uint32_t *ids, unsigned n, bool *ok)
{
	struct lru *l = &c->lru;
	for (unsigned i = 0; i < n; i++) {
		int32_t id = (int32_t)ids[i];
		uint64_t sz = kvsize(c->wl, ids[i]);
		if (l->in[id]) { /* never happens: sets follow misses */
			lru_unlink(l, id);
			l->in[id] = 0;
			l->used -= sz;
		}
		ok[i] = sz <= l->cap;
		if (!ok[i]) {
			c->e2big++;
			continue;
		}
		while (l->used + sz > l->cap) {
			int32_t v = l->tail;
			lru_unlink(l, v);
			l->in[v] = 0;
			l->used -= kvsize(c->wl, (uint32_t)v);
		}
		lru_push(l, id);
		l->in[id] = 1;
		l->used += sz;
	}
	return 0;
}

static int lru_live(struct cell *c, uint64_t *bytes)
{
	*bytes = c->lru.used;
	return 0;
}

/* ---- memcached (text protocol) ---- */

static int mc_start(struct cell *c)
{
	long mb = lround((double)c->budget / MIB);
	if (mb < 2)
		mb = 2; /* with the default -I 1m, memcached refuses -m 1 */
	c->given = (uint64_t)mb << 20;
	snprintf(c->given_note, sizeof c->given_note, "-m in whole MiB, at least 2");
	snprintf(c->sock, sizeof c->sock, "%s/memcached-%u.sock", opt.workdir, c->no);
	snprintf(c->log, sizeof c->log, "%s/memcached-%u.log", opt.workdir, c->no);
	char m[32];
	snprintf(m, sizeof m, "%ld", mb);
	char *argv[] = {(char *)opt.memcached, "-s", c->sock, "-a", "0700", "-m", m,
			geteuid() == 0 ? "-u" : NULL, "root", NULL};
	if (spawn(c, argv) < 0 || conn_connect(c, &c->cn) < 0)
		return -1;
	return 0;
}

static void net_stop(struct cell *c)
{
	conn_close(&c->cn);
	reap(c);
	unlink(c->sock);
}

static int mc_gets(struct cell *c, const uint32_t *ids, unsigned n, bool *hit)
{
	char cmd[KLEN + 8];
	memcpy(cmd, "mg ", 3);
	memcpy(cmd + 3 + KLEN, "\r\n", 2);
	for (unsigned i = 0; i < n; i++) {
		key_of(cmd + 3, ids[i]);
		if (wr(c, cmd, KLEN + 5) < 0)
			return -1;
	}
	if (flush(c) < 0)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		char *l;
		size_t len;
		if (rline(c, &l, &len) < 0)
			return -1;
		if (strcmp(l, "HD") == 0)
			hit[i] = true;
		else if (strcmp(l, "EN") == 0)
			hit[i] = false;
		else
			return cfail(c, "mg: unexpected reply \"%.80s\"", l);
	}
	return 0;
}

static int mc_sets(struct cell *c, const uint32_t *ids, unsigned n, bool *ok)
{
	unsigned i = 0;
	while (i < n) {
		unsigned j = i;
		size_t bytes = 0;
		for (; j < n && (j == i || bytes < SET_CHUNK); j++) {
			char hdr[64], k[KLEN];
			uint32_t vl = vsize(c->wl, ids[j]);
			key_of(k, ids[j]);
			int hl = snprintf(hdr, sizeof hdr, "set %.*s 0 0 %u\r\n", (int)KLEN, k, vl);
			if (wr(c, hdr, (size_t)hl) < 0 || wr(c, vbuf, vl) < 0 || wrs(c, "\r\n") < 0)
				return -1;
			bytes += vl;
		}
		if (flush(c) < 0)
			return -1;
		for (; i < j; i++) {
			char *l;
			size_t len;
			if (rline(c, &l, &len) < 0)
				return -1;
			ok[i] = strcmp(l, "STORED") == 0;
			if (ok[i])
				continue;
			if (strncmp(l, "SERVER_ERROR", 12) != 0)
				return cfail(c, "set: unexpected reply \"%.80s\"", l);
			if (strstr(l, "too large"))
				c->e2big++;
			else if (strstr(l, "out of memory"))
				c->enospc++;
			else
				c->put_other++;
			note_err(c, "set of %u B: %.120s", vsize(c->wl, ids[i]), l);
		}
	}
	return 0;
}

static int mc_live(struct cell *c, uint64_t *bytes)
{
	double end = now_s() + 60;
	for (;;) {
		if (wrs(c, "lru_crawler metadump all\r\n") < 0 || flush(c) < 0)
			return -1;
		char *l;
		size_t len;
		if (rline(c, &l, &len) < 0)
			return -1;
		/* The crawler runs in the background too: it may be busy. */
		if (strncmp(l, "BUSY", 4) == 0 && now_s() < end) {
			nap_ms(20);
			continue;
		}
		if (seen_reset(c) < 0)
			return -1;
		*bytes = 0;
		while (strcmp(l, "END") != 0) {
			if (strncmp(l, "key=", 4) != 0)
				return cfail(c, "metadump: unexpected line \"%.80s\"", l);
			size_t kl = strcspn(l + 4, " ");
			if (!seen_add(c, l + 4, kl, bytes))
				return cfail(c, "metadump: a key not ours: \"%.80s\"", l);
			if (rline(c, &l, &len) < 0)
				return -1;
		}
		return 0;
	}
}

/* Its slab pages: memcached gives every size class its first page even
 * past -m, so with many classes it can take more than it was given. */
static int mc_mem(struct cell *c, uint64_t *bytes)
{
	char *l;
	size_t len;
	bool got = false;
	if (wrs(c, "stats slabs\r\n") < 0 || flush(c) < 0)
		return -1;
	for (;;) {
		if (rline(c, &l, &len) < 0)
			return -1;
		if (strcmp(l, "END") == 0)
			break;
		if (strncmp(l, "STAT total_malloced ", 20) == 0) {
			*bytes = strtoull(l + 20, NULL, 10);
			got = true;
		}
	}
	return got ? 0 : cfail(c, "stats slabs: no total_malloced");
}

/* ---- Redis (RESP) ---- */

static int rs_cmd(struct cell *c, int argc, const char *const *argv, const size_t *lens)
{
	char h[32];
	int n = snprintf(h, sizeof h, "*%d\r\n", argc);
	if (wr(c, h, (size_t)n) < 0)
		return -1;
	for (int i = 0; i < argc; i++) {
		n = snprintf(h, sizeof h, "$%zu\r\n", lens[i]);
		if (wr(c, h, (size_t)n) < 0 || wr(c, argv[i], lens[i]) < 0 || wrs(c, "\r\n") < 0)
			return -1;
	}
	return 0;
}

static int rs_cmd_str(struct cell *c, const char *a0, const char *a1, const char *a2,
		      const char *a3)
{
	const char *argv[4] = {a0, a1, a2, a3};
	size_t lens[4];
	int argc = 0;
	while (argc < 4 && argv[argc]) {
		lens[argc] = strlen(argv[argc]);
		argc++;
	}
	return rs_cmd(c, argc, argv, lens);
}

/* A bulk string reply (INFO): its text in *p. */
static int rs_bulk(struct cell *c, char **p)
{
	char *l;
	size_t len;
	if (rline(c, &l, &len) < 0)
		return -1;
	if (l[0] != '$')
		return cfail(c, "expected a bulk reply, got \"%.80s\"", l);
	long n = strtol(l + 1, NULL, 10);
	if (n < 0 || n > (1 << 24))
		return cfail(c, "bulk of %ld bytes", n);
	return rbulk(c, (size_t)n, p);
}

static int rs_info_u64(struct cell *c, const char *field, uint64_t *out)
{
	char *p;
	if (rs_cmd_str(c, "INFO", "memory", NULL, NULL) < 0 || flush(c) < 0 || rs_bulk(c, &p) < 0)
		return -1;
	char pat[64];
	snprintf(pat, sizeof pat, "\n%s:", field);
	char *f = strstr(p, pat);
	if (!f)
		return cfail(c, "INFO memory has no %s", field);
	*out = strtoull(f + strlen(pat), NULL, 10);
	return 0;
}

static int rs_start(struct cell *c)
{
	c->given = c->budget;
	snprintf(c->sock, sizeof c->sock, "%s/redis-%u.sock", opt.workdir, c->no);
	snprintf(c->log, sizeof c->log, "%s/redis-%u.log", opt.workdir, c->no);
	char mm[32], pol[32];
	snprintf(mm, sizeof mm, "%" PRIu64, c->budget);
	snprintf(pol, sizeof pol, "allkeys-%s", c->policy);
	char *argv[] = {(char *)opt.redis, "--port", "0", "--unixsocket", c->sock,
			"--unixsocketperm", "700", "--save", "", "--appendonly", "no",
			"--dir", (char *)opt.workdir, "--maxmemory", mm,
			"--maxmemory-policy", pol, NULL};
	if (spawn(c, argv) < 0 || conn_connect(c, &c->cn) < 0)
		return -1;
	if (rs_info_u64(c, "used_memory", &c->baseline) < 0)
		return -1;
	snprintf(c->given_note, sizeof c->given_note,
		 "maxmemory (used_memory of the empty server: %.2f MB of it)",
		 (double)c->baseline / 1e6);
	return 0;
}

static int rs_mem(struct cell *c, uint64_t *bytes)
{
	return rs_info_u64(c, "used_memory", bytes);
}

static int rs_gets(struct cell *c, const uint32_t *ids, unsigned n, bool *hit)
{
	char k[KLEN];
	const char *argv[2] = {"STRLEN", k};
	const size_t lens[2] = {6, KLEN};
	for (unsigned i = 0; i < n; i++) {
		key_of(k, ids[i]);
		if (rs_cmd(c, 2, argv, lens) < 0)
			return -1;
	}
	if (flush(c) < 0)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		char *l;
		size_t len;
		if (rline(c, &l, &len) < 0)
			return -1;
		if (l[0] != ':')
			return cfail(c, "STRLEN: unexpected reply \"%.80s\"", l);
		long v = strtol(l + 1, NULL, 10);
		hit[i] = v > 0;
		if (v > 0 && (uint32_t)v != vsize(c->wl, ids[i])) {
			c->get_err++;
			note_err(c, "STRLEN %ld, stored %u", v, vsize(c->wl, ids[i]));
		}
	}
	return 0;
}

static int rs_sets(struct cell *c, const uint32_t *ids, unsigned n, bool *ok)
{
	unsigned i = 0;
	while (i < n) {
		unsigned j = i;
		size_t bytes = 0;
		char k[KLEN];
		for (; j < n && (j == i || bytes < SET_CHUNK); j++) {
			uint32_t vl = vsize(c->wl, ids[j]);
			key_of(k, ids[j]);
			const char *argv[3] = {"SET", k, (const char *)vbuf};
			const size_t lens[3] = {3, KLEN, vl};
			if (rs_cmd(c, 3, argv, lens) < 0)
				return -1;
			bytes += vl;
		}
		if (flush(c) < 0)
			return -1;
		for (; i < j; i++) {
			char *l;
			size_t len;
			if (rline(c, &l, &len) < 0)
				return -1;
			ok[i] = strcmp(l, "+OK") == 0;
			if (ok[i])
				continue;
			if (l[0] != '-')
				return cfail(c, "SET: unexpected reply \"%.80s\"", l);
			if (strncmp(l, "-OOM", 4) == 0)
				c->enospc++;
			else
				c->put_other++;
			note_err(c, "SET of %u B: %.120s", vsize(c->wl, ids[i]), l);
		}
	}
	return 0;
}

static int rs_live(struct cell *c, uint64_t *bytes)
{
	char cursor[32] = "0";
	if (seen_reset(c) < 0)
		return -1;
	*bytes = 0;
	do {
		char *l, *p;
		size_t len;
		if (rs_cmd_str(c, "SCAN", cursor, "COUNT", "1000") < 0 || flush(c) < 0 ||
		    rline(c, &l, &len) < 0)
			return -1;
		if (strcmp(l, "*2") != 0)
			return cfail(c, "SCAN: unexpected reply \"%.80s\"", l);
		if (rs_bulk(c, &p) < 0)
			return -1;
		snprintf(cursor, sizeof cursor, "%s", p);
		if (rline(c, &l, &len) < 0)
			return -1;
		if (l[0] != '*')
			return cfail(c, "SCAN: unexpected reply \"%.80s\"", l);
		long nk = strtol(l + 1, NULL, 10);
		for (long i = 0; i < nk; i++) {
			if (rs_bulk(c, &p) < 0)
				return -1;
			if (!seen_add(c, p, strlen(p), bytes))
				return cfail(c, "SCAN: a key not ours: \"%.80s\"", p);
		}
	} while (strcmp(cursor, "0") != 0);
	return 0;
}

/* ---- the systems ---- */

enum { S_SHMMAP, S_LRU, S_MC, S_RLRU, S_RLFU, NSYS };

static const struct sysops sysops[NSYS] = {
	[S_SHMMAP] = {"shmmap", "shmmap", sm_start, sm_stop, sm_gets, sm_sets, sm_live, NULL},
	[S_LRU] = {"lru", "exact LRU (k+v bytes)", lru_start, lru_stop, lru_gets, lru_sets, lru_live,
		   NULL},
	[S_MC] = {"memcached", "memcached", mc_start, net_stop, mc_gets, mc_sets, mc_live, mc_mem},
	[S_RLRU] = {"redis-lru", "Redis allkeys-lru", rs_start, net_stop, rs_gets, rs_sets, rs_live,
		    rs_mem},
	[S_RLFU] = {"redis-lfu", "Redis allkeys-lfu", rs_start, net_stop, rs_gets, rs_sets, rs_live,
		    rs_mem},
};

static bool sys_on[NSYS];
static char sys_off_why[NSYS][80];
static unsigned cell_no;
static int failures;

static void cell_init(struct cell *c, int s, const struct wl *w, uint64_t budget)
{
	memset(c, 0, sizeof *c);
	c->ops = &sysops[s];
	c->wl = w;
	c->budget = budget;
	c->no = ++cell_no;
	c->cn.fd = -1;
	c->policy = s == S_RLFU ? "lfu" : "lru";
}

/* The memory a figure is divided by: what the system was given, or what it
 * says it took if that is more. */
static int cell_mem(struct cell *c, uint64_t *mem)
{
	uint64_t m = 0;
	*mem = c->given;
	if (c->ops->mem && c->ops->mem(c, &m) < 0)
		return -1;
	if (m > *mem + *mem / 200) /* more than 0.5% over: not just a moment's overshoot */
		*mem = m;
	return 0;
}

static void cell_end(struct cell *c, const char *what)
{
	c->ops->stop(c);
	free(c->seen);
	c->seen = NULL;
	if (c->failed) {
		failures++;
		fprintf(stderr, "bench-cache: %s, %s: FAILED: %s\n", c->ops->name, what, c->why);
	}
}

/* ---- experiment 1: the Zipf traces ---- */

struct tres {
	bool ran, failed;
	double hit, evins, live_mem, secs;
	uint64_t given, mem, enospc, e2big, other, get_err;
	bool cold; /* the warm-up stored less than the budget */
	char note[200], err[200];
};

/* One batch of the look-aside pattern, in three steps of one round trip
 * each for a server: the gets of the keys that are new in the batch; the
 * sets of those that missed; then the gets of the repeats (present now,
 * unless the set failed or something evicted them meanwhile); and sets for
 * repeats that missed, if any.  Adds the hits, requests and key + value
 * bytes stored. */
static int run_batch(struct cell *c, const uint32_t *id, const uint8_t *rep, uint64_t *hits,
		     uint64_t *stored)
{
	uint32_t first[BATCH], again[BATCH], miss[BATCH];
	bool hit[BATCH], ok[BATCH];
	unsigned nf = 0, na = 0;
	for (unsigned i = 0; i < BATCH; i++) {
		if (rep[i])
			again[na++] = id[i];
		else
			first[nf++] = id[i];
	}
	for (int round = 0; round < 2; round++) {
		const uint32_t *ids = round ? again : first;
		unsigned n = round ? na : nf, m = 0;
		if (n == 0)
			continue;
		if (c->ops->gets(c, ids, n, hit) < 0)
			return -1;
		for (unsigned i = 0; i < n; i++) {
			if (hit[i]) {
				(*hits)++;
				continue;
			}
			/* a key repeated twice more that missed: one set */
			unsigned k = 0;
			while (k < m && miss[k] != ids[i])
				k++;
			if (k == m)
				miss[m++] = ids[i];
		}
		if (m && c->ops->sets(c, miss, m, ok) < 0)
			return -1;
		for (unsigned i = 0; i < m; i++)
			if (ok[i])
				*stored += kvsize(c->wl, miss[i]);
	}
	return 0;
}

static void run_trace(int s, const struct trace *t, const struct wl *w, uint64_t budget,
		      struct tres *r)
{
	struct cell c;
	cell_init(&c, s, w, budget);
	memset(r, 0, sizeof *r);
	r->ran = true;
	double t0 = now_s();
	uint64_t live0 = 0, live1 = 0, ins = 0, warm_ins = 0, hits = 0, warm_hits = 0;
	if (c.ops->start(&c) < 0)
		goto out;
	for (uint64_t b = 0; b < t->nb; b++) {
		bool meas = b >= t->mbegin;
		if (b == t->mbegin && c.ops->live(&c, &live0) < 0)
			goto out;
		if (run_batch(&c, t->id + b * BATCH, t->rep + b * BATCH, meas ? &hits : &warm_hits,
			      meas ? &ins : &warm_ins) < 0)
			goto out;
	}
	uint64_t mem;
	if (c.ops->live(&c, &live1) < 0 || cell_mem(&c, &mem) < 0)
		goto out;
	r->mem = mem;
	r->hit = t->measured ? (double)hits / (double)t->measured : 0;
	r->evins = ins ? ((double)ins + (double)live0 - (double)live1) / (double)ins : 0;
	r->live_mem = (double)live1 / (double)mem;
	r->cold = warm_ins < budget;
out:
	r->given = c.given;
	r->enospc = c.enospc;
	r->e2big = c.e2big;
	r->other = c.put_other;
	r->get_err = c.get_err;
	snprintf(r->note, sizeof r->note, "%s", c.given_note);
	snprintf(r->err, sizeof r->err, "%s", c.first_err);
	r->failed = c.failed;
	char what[80];
	snprintf(what, sizeof what, "trace, budget %.2f MB", (double)budget / 1e6);
	cell_end(&c, what);
	r->secs = now_s() - t0;
}

/* ---- experiment 2: the size shift ---- */

struct sres {
	bool ran, failed;
	double ev100_mb, evins, missing, live_mem, secs;
	uint64_t given, mem, enospc, e2big, other;
	uint32_t fill;
	char note[200], err[200];
};

static int write_ids(struct cell *c, uint32_t from, uint32_t to, uint64_t *ins)
{
	uint32_t ids[BATCH];
	bool ok[BATCH];
	while (from < to) {
		unsigned n = 0;
		while (n < BATCH && from < to)
			ids[n++] = from++;
		if (c->ops->sets(c, ids, n, ok) < 0)
			return -1;
		for (unsigned i = 0; i < n; i++)
			if (ok[i])
				*ins += kvsize(c->wl, ids[i]);
	}
	return 0;
}

static void run_shift(int s, uint32_t before, uint32_t after, struct sres *r)
{
	uint64_t budget = opt.shift_budget;
	uint32_t fill = (uint32_t)(2 * budget / (KLEN + before));
	uint32_t k = opt.shift_new;
	struct wl w = {.kind = V_SHIFT, .n = fill + k, .shift_at = fill, .before = before,
		       .after = after};
	struct cell c;
	cell_init(&c, s, &w, budget);
	memset(r, 0, sizeof *r);
	r->ran = true;
	r->fill = fill;
	double t0 = now_s();
	uint64_t l0, l100, l1, ins = 0, junk = 0;
	if (c.ops->start(&c) < 0 || write_ids(&c, 0, fill, &junk) < 0 || c.ops->live(&c, &l0) < 0)
		goto out;
	uint32_t first = k < 100 ? k : 100;
	if (write_ids(&c, fill, fill + first, &ins) < 0 || c.ops->live(&c, &l100) < 0)
		goto out;
	r->ev100_mb = ((double)ins + (double)l0 - (double)l100) / 1e6;
	uint64_t mem;
	if (write_ids(&c, fill + first, fill + k, &ins) < 0 || c.ops->live(&c, &l1) < 0 ||
	    cell_mem(&c, &mem) < 0)
		goto out;
	r->mem = mem;
	r->evins = ins ? ((double)ins + (double)l0 - (double)l1) / (double)ins : 0;
	r->live_mem = (double)l1 / (double)mem;
	/* The last 1000 written keys (gets, at the very end). */
	uint32_t last = k < 1000 ? k : 1000, missing = 0;
	for (uint32_t id = fill + k - last; id < fill + k;) {
		uint32_t ids[BATCH];
		bool hit[BATCH];
		unsigned n = 0;
		while (n < BATCH && id < fill + k)
			ids[n++] = id++;
		if (c.ops->gets(&c, ids, n, hit) < 0)
			goto out;
		for (unsigned i = 0; i < n; i++)
			missing += !hit[i];
	}
	r->missing = (double)missing / (double)last;
out:
	r->given = c.given;
	r->enospc = c.enospc;
	r->e2big = c.e2big;
	r->other = c.put_other;
	snprintf(r->note, sizeof r->note, "%s", c.given_note);
	snprintf(r->err, sizeof r->err, "%s", c.first_err);
	r->failed = c.failed;
	char what[80];
	snprintf(what, sizeof what, "size shift %u B -> %u B", before, after);
	cell_end(&c, what);
	r->secs = now_s() - t0;
}

/* ---- printing ---- */

#define NB 3
static const double pcts[NB] = {0.01, 0.05, 0.20};
static const char *const pct_names[NB] = {"1%", "5%", "20%"};

struct mixres {
	const char *title;
	struct wl w;
	uint64_t ws, budget[NB];
	struct tres r[NSYS][NB];
};

static void put_cell(char *buf, size_t cap, const struct tres *r, double v, const char *fmt)
{
	if (!r->ran)
		snprintf(buf, cap, "-");
	else if (r->failed)
		snprintf(buf, cap, "FAIL");
	else
		snprintf(buf, cap, fmt, v);
}

static uint64_t errs_of(const struct tres *r)
{
	return r->enospc + r->e2big + r->other + r->get_err;
}

static void print_mix(const struct mixres *m)
{
	printf("\n== %s ==\n", m->title);
	printf("working set %.1f MB (%u keys); budgets", (double)m->ws / 1e6, m->w.n);
	for (int b = 0; b < NB; b++)
		printf(" %s = %.2f MB", pct_names[b], (double)m->budget[b] / 1e6);
	printf("\n\n%-22s | %-20s | %-20s | %-20s | %-17s | %s\n", "", "hit ratio",
	       "evicted/inserted B", "live k+v / memory", "put+get errors", "seconds");
	printf("%-22s |", "system");
	for (int g = 0; g < 3; g++) {
		for (int b = 0; b < NB; b++)
			printf(" %6s", pct_names[b]);
		printf(" |");
	}
	for (int b = 0; b < NB; b++)
		printf(" %5s", pct_names[b]);
	printf(" |");
	for (int b = 0; b < NB; b++)
		printf(" %5s", pct_names[b]);
	printf("\n");
	for (int s = 0; s < NSYS; s++) {
		if (!sys_on[s])
			continue;
		char cb[32];
		printf("%-22s |", sysops[s].name);
		for (int b = 0; b < NB; b++) {
			put_cell(cb, sizeof cb, &m->r[s][b], m->r[s][b].hit, "%.3f");
			printf(" %6s", cb);
		}
		printf(" |");
		for (int b = 0; b < NB; b++) {
			put_cell(cb, sizeof cb, &m->r[s][b], m->r[s][b].evins, "%.3f");
			printf(" %6s", cb);
		}
		printf(" |");
		for (int b = 0; b < NB; b++) {
			put_cell(cb, sizeof cb, &m->r[s][b], m->r[s][b].live_mem, "%.3f");
			printf(" %6s", cb);
		}
		printf(" |");
		for (int b = 0; b < NB; b++)
			printf(" %5" PRIu64, errs_of(&m->r[s][b]));
		printf(" |");
		for (int b = 0; b < NB; b++)
			printf(" %5.0f", m->r[s][b].secs);
		printf("\n");
	}
	printf("memory given per budget (%s):\n", "1% / 5% / 20%");
	for (int s = 0; s < NSYS; s++) {
		if (!sys_on[s])
			continue;
		printf("  %-20s", sysops[s].name);
		for (int b = 0; b < NB; b++) {
			const struct tres *r = &m->r[s][b];
			printf("%s %.2f MB (%.2fx)", b ? "," : "", (double)r->given / 1e6,
			       (double)r->given / (double)m->budget[b]);
			if (r->mem > r->given)
				printf(" but took %.2f MB", (double)r->mem / 1e6);
		}
		printf("; %s\n", m->r[s][0].note);
	}
	for (int s = 0; s < NSYS; s++)
		for (int b = 0; b < NB; b++) {
			const struct tres *r = &m->r[s][b];
			if (r->ran && errs_of(r))
				printf("  errors, %s at %s: %" PRIu64 " ENOSPC, %" PRIu64
				       " E2BIG, %" PRIu64 " other puts, %" PRIu64 " gets; first: %s\n",
				       sysops[s].name, pct_names[b], r->enospc, r->e2big, r->other,
				       r->get_err, r->err);
			if (r->ran && !r->failed && r->cold)
				printf("  note: %s at %s: the warm-up stored less than the budget\n",
				       sysops[s].name, pct_names[b]);
		}
}

struct shiftexp {
	const char *title;
	uint32_t before, after;
	struct sres r[NSYS];
};

static void print_shift(const struct shiftexp *e)
{
	printf("\n== %s ==\n", e->title);
	printf("budget %.2f MB; filled with %u keys of %u B values (2x the budget in key + value "
	       "bytes), then %u new keys of %u B values\n\n",
	       (double)opt.shift_budget / 1e6, e->r[S_LRU].fill ? e->r[S_LRU].fill : e->r[S_SHMMAP].fill,
	       e->before, opt.shift_new, e->after);
	printf("%-22s | %15s | %16s | %14s | %11s | %-24s | %10s | %7s\n", "system",
	       "evicted by 100", "evicted/inserted", "last 1000 miss", "live/memory",
	       "memory MB", "put errors", "seconds");
	for (int s = 0; s < NSYS; s++) {
		if (!sys_on[s])
			continue;
		const struct sres *r = &e->r[s];
		if (r->failed) {
			printf("%-22s | %15s | %16s | %14s | %11s | %-24s | %10s | %7.0f\n",
			       sysops[s].name, "FAIL", "FAIL", "FAIL", "FAIL", "-", "-", r->secs);
			continue;
		}
		char a[32], b[32], m[64];
		snprintf(a, sizeof a, "%.3f MB", fabs(r->ev100_mb) < 0.0005 ? 0.0 : r->ev100_mb);
		snprintf(b, sizeof b, "%.1f%%", 100 * r->missing);
		if (r->mem > r->given)
			snprintf(m, sizeof m, "%.2f, took %.2f", (double)r->given / 1e6,
				 (double)r->mem / 1e6);
		else
			snprintf(m, sizeof m, "%.2f", (double)r->given / 1e6);
		printf("%-22s | %15s | %16.3f | %14s | %11.3f | %-24s | %10" PRIu64 " | %7.0f\n",
		       sysops[s].name, a, r->evins, b, r->live_mem, m,
		       r->enospc + r->e2big + r->other, r->secs);
	}
	for (int s = 0; s < NSYS; s++) {
		const struct sres *r = &e->r[s];
		if (sys_on[s] && r->enospc + r->e2big + r->other)
			printf("  put errors, %s: %" PRIu64 " ENOSPC, %" PRIu64 " E2BIG, %" PRIu64
			       " other; first: %s\n",
			       sysops[s].name, r->enospc, r->e2big, r->other, r->err);
	}
}

static struct mixres mixes[2];
static struct shiftexp shifts[2] = {
	{"Size shift: full of 1 KiB values, then 10 B values", 1024, 10, {{0}}},
	{"Size shift: full of 10 B values, then 1 KiB values", 10, 1024, {{0}}},
};

static void print_churn(void)
{
	printf("\n== Steady-state churn: live key+value bytes / memory after the trace ==\n\n");
	printf("%-22s | %-20s | %-20s\n", "", "100 B values", "mixed 64 B..32 KiB");
	printf("%-22s |", "system");
	for (int g = 0; g < 2; g++) {
		for (int b = 0; b < NB; b++)
			printf(" %6s", pct_names[b]);
		printf(" |");
	}
	printf("\n");
	for (int s = 0; s < NSYS; s++) {
		if (!sys_on[s])
			continue;
		printf("%-22s |", sysops[s].name);
		for (int g = 0; g < 2; g++) {
			for (int b = 0; b < NB; b++) {
				char cb[32];
				put_cell(cb, sizeof cb, &mixes[g].r[s][b], mixes[g].r[s][b].live_mem,
					 "%.3f");
				printf(" %6s", cb);
			}
			printf(" |");
		}
		printf("\n");
	}
}

/* One line of the targets table: met only if every figure was measured. */
static void target(const char *what, bool measured, bool met, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void target(const char *what, bool measured, bool met, const char *fmt, ...)
{
	char v[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof v, fmt, ap);
	va_end(ap);
	printf("%-52s | %-7s | %s\n", what, !measured ? "n/a" : met ? "met" : "MISSED", v);
}

static bool ok_t(const struct tres *r)
{
	return r->ran && !r->failed;
}

static void print_targets(void)
{
	printf("\n== Targets of issue 13, shmmap's figures ==\n\n");
	printf("%-52s | %-7s | %s\n", "target", "result", "shmmap (vs the others)");
	for (int g = 0; g < 2; g++) {
		const struct mixres *m = &mixes[g];
		for (int b = 0; b < 2; b++) { /* 1% and 5% */
			const struct tres *sm = &m->r[S_SHMMAP][b], *lr = &m->r[S_LRU][b];
			char what[80];
			snprintf(what, sizeof what, "hit ratio >= exact LRU, %s, %s",
				 g ? "mixed" : "100 B", pct_names[b]);
			bool have = ok_t(sm) && ok_t(lr);
			target(what, have, have && sm->hit >= lr->hit, "%.3f vs %.3f", sm->hit, lr->hit);
			snprintf(what, sizeof what, "hit ratio > memcached and Redis, %s, %s",
				 g ? "mixed" : "100 B", pct_names[b]);
			char v[200] = "";
			size_t vl = 0;
			bool all = ok_t(sm), met = true;
			for (int s = S_MC; s < NSYS; s++) {
				if (!sys_on[s])
					continue;
				const struct tres *o = &m->r[s][b];
				all = all && ok_t(o);
				met = met && ok_t(o) && sm->hit > o->hit;
				char h[16], x[40] = "";
				put_cell(h, sizeof h, o, o->hit, "%.3f");
				if (ok_t(o) && o->mem > m->budget[b] + m->budget[b] / 20)
					snprintf(x, sizeof x, " (with %.2fx the budget)",
						 (double)o->mem / (double)m->budget[b]);
				vl += (size_t)snprintf(v + vl, sizeof v - vl, "%s%s %s%s", vl ? ", " : "",
						       sysops[s].id, h, x);
			}
			target(what, all && vl > 0, met, "%.3f vs %s", sm->hit, vl ? v : "(none ran)");
		}
	}
	for (int d = 0; d < 2; d++) {
		const struct sres *r = &shifts[d].r[S_SHMMAP];
		bool have = r->ran && !r->failed;
		char what[80];
		const char *dir = d ? "10 B -> 1 KiB" : "1 KiB -> 10 B";
		snprintf(what, sizeof what, "shift %s: <= 2 B evicted per B inserted", dir);
		target(what, have, r->evins <= 2.0, "%.3f", r->evins);
		snprintf(what, sizeof what, "shift %s: <= 1%% of last 1000 missing", dir);
		target(what, have, r->missing <= 0.01, "%.1f%%", 100 * r->missing);
		snprintf(what, sizeof what, "shift %s: live data >= 50%% of segment", dir);
		target(what, have, r->live_mem >= 0.5, "%.1f%%", 100 * r->live_mem);
	}
	for (int g = 0; g < 2; g++) {
		double want = g ? 0.85 : 0.70, lo = 1e9;
		bool have = true;
		char v[120] = "";
		size_t vl = 0;
		for (int b = 0; b < NB; b++) {
			const struct tres *r = &mixes[g].r[S_SHMMAP][b];
			have = have && ok_t(r);
			if (r->live_mem < lo)
				lo = r->live_mem;
			vl += (size_t)snprintf(v + vl, sizeof v - vl, "%s%s %.3f", vl ? ", " : "",
					       pct_names[b], r->live_mem);
		}
		char what[80];
		snprintf(what, sizeof what, "live/memory >= %.2f, %s (every budget)", want,
			 g ? "mixed" : "100 B");
		target(what, have, lo >= want, "%s", v);
	}
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: cache --shmmapd PATH --workdir DIR --seg-prefix /NAME\n"
		"             [--memcached PATH] [--redis-server PATH] [--short]\n"
		"             [--keys N] [--mixed-keys N] [--warm N] [--measure N]\n"
		"             [--shift-budget BYTES] [--shift-new N]\n"
		"             [--systems shmmap,lru,memcached,redis-lru,redis-lfu]\n"
		"             [--experiments fixed,mixed,shift]\n");
	exit(2);
}

static uint64_t num(const char *s)
{
	char *e;
	errno = 0;
	unsigned long long v = strtoull(s, &e, 10);
	if (errno || e == s || *e)
		usage();
	return v;
}

static void parse(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--short") == 0) {
			opt.is_short = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (strcmp(a, "--shmmapd") == 0)
			opt.shmmapd = v;
		else if (strcmp(a, "--memcached") == 0)
			opt.memcached = *v ? v : NULL;
		else if (strcmp(a, "--redis-server") == 0)
			opt.redis = *v ? v : NULL;
		else if (strcmp(a, "--workdir") == 0)
			opt.workdir = v;
		else if (strcmp(a, "--seg-prefix") == 0)
			opt.segprefix = v;
		else if (strcmp(a, "--systems") == 0)
			opt.systems = v;
		else if (strcmp(a, "--experiments") == 0)
			opt.exps = v;
		else if (strcmp(a, "--keys") == 0)
			opt.keys = (uint32_t)num(v);
		else if (strcmp(a, "--mixed-keys") == 0)
			opt.mixed_keys = (uint32_t)num(v);
		else if (strcmp(a, "--warm") == 0)
			opt.warm = num(v);
		else if (strcmp(a, "--measure") == 0)
			opt.measure = num(v);
		else if (strcmp(a, "--shift-budget") == 0)
			opt.shift_budget = num(v);
		else if (strcmp(a, "--shift-new") == 0)
			opt.shift_new = (uint32_t)num(v);
		else
			usage();
	}
	if (!opt.shmmapd || !opt.workdir || !opt.segprefix || opt.segprefix[0] != '/')
		usage();
}

static void defaults(void)
{
	bool sh = opt.is_short;
	if (!opt.keys)
		opt.keys = sh ? 20000 : 1000000;
	if (!opt.mixed_keys)
		opt.mixed_keys = opt.keys;
	if (!opt.warm)
		opt.warm = sh ? 100000 : 2000000;
	if (!opt.measure)
		opt.measure = sh ? 100000 : 5000000;
	if (!opt.shift_budget)
		opt.shift_budget = sh ? 4u << 20 : 16u << 20;
	if (!opt.shift_new)
		opt.shift_new = 10000;
	if (opt.keys < 2 || opt.keys >= ID_LIMIT || opt.mixed_keys < 2 || opt.mixed_keys >= ID_LIMIT ||
	    opt.shift_budget < (1u << 20) || opt.shift_budget / 11 + opt.shift_new >= ID_LIMIT) {
		fprintf(stderr, "cache: key counts must be 2..%u, the shift budget 1 MiB..\n",
			ID_LIMIT - 1);
		exit(2);
	}
}

static bool in_list(const char *list, const char *id)
{
	if (!list)
		return true;
	char l[256], pat[32];
	snprintf(l, sizeof l, ",%s,", list);
	snprintf(pat, sizeof pat, ",%s,", id);
	return strstr(l, pat) != NULL;
}

static void pick_systems(void)
{
	for (int s = 0; s < NSYS; s++) {
		bool want = in_list(opt.systems, sysops[s].id);
		sys_on[s] = want;
		if (!want)
			continue;
		if (s == S_MC && !opt.memcached) {
			sys_on[s] = false;
			snprintf(sys_off_why[s], sizeof sys_off_why[s], "not installed (no --memcached)");
		}
		if ((s == S_RLRU || s == S_RLFU) && !opt.redis) {
			sys_on[s] = false;
			snprintf(sys_off_why[s], sizeof sys_off_why[s], "not installed (no --redis-server)");
		}
	}
}

static void run_mix(struct mixres *m)
{
	struct trace t;
	m->ws = 0;
	for (uint32_t id = 0; id < m->w.n; id++)
		m->ws += kvsize(&m->w, id);
	for (int b = 0; b < NB; b++) {
		uint64_t bud = (uint64_t)llround(pcts[b] * (double)m->ws);
		m->budget[b] = bud < (1u << 20) ? 1u << 20 : bud;
	}
	if (trace_make(&t, m->w.n, opt.warm, opt.measure) < 0) {
		fprintf(stderr, "bench-cache: out of memory for the trace\n");
		exit(1);
	}
	fprintf(stderr, "bench-cache: %s:", m->title);
	for (int b = 0; b < NB; b++)
		for (int s = 0; s < NSYS; s++) {
			if (!sys_on[s])
				continue;
			fprintf(stderr, " %s@%s", sysops[s].id, pct_names[b]);
			run_trace(s, &t, &m->w, m->budget[b], &m->r[s][b]);
		}
	fprintf(stderr, "\n");
	trace_free(&t);
}

int main(int argc, char **argv)
{
	parse(argc, argv);
	defaults();
	pick_systems();
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof vbuf; i++)
		vbuf[i] = (unsigned char)('a' + i % 26);

	mixes[0] = (struct mixres){.w = {.kind = V_FIXED, .n = opt.keys, .fixed = 100}};
	mixes[1] = (struct mixres){.w = {.kind = V_MIXED, .n = opt.mixed_keys}};
	char t0[160], t1[160];
	snprintf(t0, sizeof t0, "Zipf 0.99 look-aside, %u keys, 100 B values", opt.keys);
	snprintf(t1, sizeof t1, "Zipf 0.99 look-aside, %u keys, values 64 B..32 KiB log-uniform",
		 opt.mixed_keys);
	mixes[0].title = t0;
	mixes[1].title = t1;

	printf("Cache benchmark (issue 13)%s: same trace and byte budget for every system\n",
	       opt.is_short ? ", SHORT run (CI smoke: tiny key counts, figures mean nothing)" : "");
	printf("- trace: keys \"key:NNNNNNN\" (11 B), Zipf 0.99, look-aside (get; on a miss, set);\n"
	       "  %" PRIu64 " requests of warm-up, then %" PRIu64 " measured, in batches of %u\n"
	       "  (the same for all): gets of the keys new in the batch, sets of their misses,\n"
	       "  then gets of the keys repeated in the batch (and sets if they missed)\n",
	       opt.warm, opt.measure, BATCH);
	printf("- mixed values: floor(64 * 512^u) B, u from a 64-bit hash of the key id (log-uniform\n"
	       "  64 B..32 KiB, mean %.0f B); %s\n",
	       (double)(VMAX - VMIN) / log((double)VMAX / VMIN),
	       opt.mixed_keys == 1000000 ? "1M keys, not scaled" : "key count set by --mixed-keys");
	printf("- budget = a share of the working set (sum of key + value bytes of all keys), at least\n"
	       "  1 MiB. What each system is given and what that counts:\n"
	       "    shmmap:    [segment] size = budget rounded up to 64 KiB (no growth), default map\n"
	       "               config; counts everything: segment header, slots, buckets, entry\n"
	       "               headers, allocator slack\n"
	       "    exact LRU: key + value bytes only (no overhead at all: the ideal)\n"
	       "    memcached: -m = budget rounded to whole MiB, at least 2 (its minimum with the\n"
	       "               default 1 MiB item limit); counts its 1 MiB slab pages (item headers\n"
	       "               and slack included; not its hash table)\n"
	       "    Redis:     maxmemory = budget; counts used_memory (its empty server's own\n"
	       "               memory, per-key overhead, allocator size classes)\n"
	       "- evicted/inserted: key + value bytes stored minus the growth of live key + value\n"
	       "  bytes, per byte stored (over the measured part); live: shmmap_stats, memcached's\n"
	       "  metadump, Redis's SCAN, each key's size known from its id\n"
	       "- live/memory: live key + value bytes at the end / the memory given, or what the\n"
	       "  server reports it took if that is more (memcached: stats slabs total_malloced,\n"
	       "  as it gives each size class a first page even past -m; Redis: used_memory)\n");
	for (int s = 0; s < NSYS; s++)
		if (sys_off_why[s][0])
			printf("- %s: SKIPPED, %s\n", sysops[s].name, sys_off_why[s]);
	printf("- mixed working set %.2f GB: the 20%% budget is %.2f GB; one server runs at a time\n",
	       (double)opt.mixed_keys * (KLEN + (VMAX - VMIN) / log((double)VMAX / VMIN)) / 1e9,
	       0.2 * (double)opt.mixed_keys * (KLEN + (VMAX - VMIN) / log((double)VMAX / VMIN)) / 1e9);

	for (int g = 0; g < 2; g++) {
		if (!in_list(opt.exps, g ? "mixed" : "fixed"))
			continue;
		run_mix(&mixes[g]);
		print_mix(&mixes[g]);
	}
	for (int d = 0; d < 2 && in_list(opt.exps, "shift"); d++) {
		fprintf(stderr, "bench-cache: %s:", shifts[d].title);
		for (int s = 0; s < NSYS; s++) {
			if (!sys_on[s])
				continue;
			fprintf(stderr, " %s", sysops[s].id);
			run_shift(s, shifts[d].before, shifts[d].after, &shifts[d].r[s]);
		}
		fprintf(stderr, "\n");
		print_shift(&shifts[d]);
	}
	print_churn();
	if (sys_on[S_SHMMAP])
		print_targets();
	printf("\nPeak RSS: this program %.0f MB (with the shmmap segment pages it touched), the "
	       "largest server %.0f MB (%s)\n",
	       (double)peak_rss(0) / 1e6, (double)server_peak / 1e6,
	       server_peak_what[0] ? server_peak_what : "none");
	if (failures) {
		fprintf(stderr, "bench-cache: %d cell(s) FAILED (see above)\n", failures);
		return 1;
	}
	return 0;
}
