/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * shmmapctl.c - the admin tool: `shmmapctl [-s SOCKET] [--json] COMMAND`.
 *
 * It owns nothing in the segment.  It attaches like any worker
 * (shmmap_attach: one slot, the socket as liveness signal) and then reads
 * the segment directly through the attachment's validated mapping and
 * geometry (sm->seg, sm->geom): the directory, stripes, counters, slots and
 * allocator tables.  Keys and values go through the public API (get, put,
 * del, foreach for dump, put for load, flush, drop); the only other writes
 * it makes are the ones those calls make.  It asks the coordinator only for
 * what the segment does not say (MSG_STATS: pid, uptime, attached clients)
 * and for what only the coordinator may do (MSG_REPAIR, MSG_SAVE).
 *
 * Reading rules (the same as the library's read path): every offset read
 * from the segment is validated before use (shmmap__map_view,
 * shmmap__entry_at), walks are bounded, and `keys` copies each bucket's
 * chain under the stripe's seqlock, retrying when a writer moved it.  It
 * never takes a segment lock.  Counters and allocator figures are plain
 * numbers read without a lock: they are clamped to what the geometry
 * allows before any arithmetic, never used as offsets.
 *
 * Output: text for people, --json for scripts (one JSON value on stdout;
 * strings are UTF-8: valid UTF-8 as itself, control bytes as \u00NN, any
 * other byte that is not valid UTF-8 as \udcNN: see put_json), `metrics` in
 * the Prometheus text format, `dump` in the line format of DUMP FORMAT
 * below.  Exit status: 0 ok, 1 no such key or map, 2 usage, 3 check found
 * problems, 4 any other failure, with "shmmapctl: what failed: why" on
 * stderr.
 *
 * DUMP FORMAT (dump writes it, load reads it): one entry per line,
 *     EXPIRE_MS SP KEY SP VALUE LF
 * EXPIRE_MS is when the entry expires, in CLOCK_REALTIME milliseconds since
 * the epoch, 0 for never.  KEY and VALUE are the bytes, with every byte
 * outside 0x21..0x7e, and '%' itself, written as %XX (two upper-case hex
 * digits; load accepts either case).  So a field never holds a space, and a
 * text key reads as itself (greppable: `dump m | grep ' user:42 '`).  An
 * empty field is written "-", and a field that is exactly the byte "-" is
 * written %2D.  load also skips empty lines and lines starting with '#'.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "paths.h"
#include "proto.h"

enum { RC_OK = 0, RC_NOTFOUND = 1, RC_USAGE = 2, RC_PROBLEMS = 3, RC_FAIL = 4 };

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define CHECK_RUNS 3          /* check: runs before problems are believed */
#define PROBLEMS_KEPT 10000   /* check: problems kept per run, the rest counted */
#define KEYS_TRIES 100000     /* keys: seqlock retries per bucket */
#define GET_TRIES 16          /* get: retries when the value grew meanwhile */
#define TOP_INTERVAL_MS 1000u /* top: default refresh interval */
#define TOP_INTERVAL_MAX 3600000u

struct ctl {
	shmmap *sm;
	const char *sock;
	bool json;
	bool ttl_set;
	bool repair;
	uint32_t ttl;
	bool interval_set, iterations_set;
	uint32_t interval_ms; /* top */
	uint64_t iterations;  /* top: 0 = until quit */
};

static const char usage_text[] =
	"usage: shmmapctl [-s SOCKET] [--json] COMMAND [ARGS]\n"
	"commands:\n"
	"  status                       the segment and its coordinator\n"
	"  maps                         one line per map\n"
	"  stats [MAP]                  counters of MAP, or of every map and the segment\n"
	"                               (pages, bytes, clients, memory by size class)\n"
	"  get MAP KEY                  print the value and a newline (exit 1 if absent)\n"
	"  put MAP KEY VALUE [--ttl S]  store VALUE (creates MAP); expire after S seconds\n"
	"  del MAP KEY                  delete KEY (exit 1 if absent)\n"
	"  keys MAP                     list the keys (non-printable bytes as \\xNN)\n"
	"  dump MAP                     write every entry, one per line:\n"
	"                                 EXPIRE_MS KEY VALUE\n"
	"                               EXPIRE_MS: CLOCK_REALTIME ms, 0 = never; in KEY\n"
	"                               and VALUE every byte outside 0x21..0x7e, and '%',\n"
	"                               is %XX; an empty field is \"-\" (\"-\" itself: %2D)\n"
	"  load MAP FILE                put the entries of a dump (FILE \"-\": stdin) into\n"
	"                               MAP (created if needed), keeping their expiry\n"
	"                               (at most 136 years away); expired ones are\n"
	"                               skipped.  A bad line stops the\n"
	"                               load (FILE:LINE: why); earlier lines stay loaded\n"
	"  flush MAP                    remove every entry of MAP (exit 1 if no such map)\n"
	"  drop MAP                     delete MAP and its entries (exit 1 if none)\n"
	"  save [PATH]                  have the coordinator write a snapshot to PATH, or\n"
	"                               to its configured snapshot path\n"
	"  grow SIZE                    have the coordinator grow the segment to at least\n"
	"                               SIZE bytes (K, M, G or T suffix), up to max_size\n"
	"  metrics                      every counter and gauge in the Prometheus text\n"
	"                               format\n"
	"  top [--interval MS] [--iterations N]\n"
	"                               live view of every map: entries, memory, ops/s,\n"
	"                               hit ratio, evictions/s (q or ^C quits); plain\n"
	"                               snapshots when stdout is not a terminal\n"
	"  clients                      the client slots in use\n"
	"  check [--repair]             verify the whole segment (exit 3 on problems);\n"
	"                               --repair first has the coordinator fix what it\n"
	"                               can without losing a live entry (dead clients'\n"
	"                               locks and writes, counters, leaks, free lists)\n"
	"options:\n"
	"  -s, --socket PATH  the coordinator's socket (default: $SHMMAP_SOCKET, then\n"
	"                     " SHMMAP_DEFAULT_SOCKET "; for a user other\n"
	"                     than root, $XDG_RUNTIME_DIR" SHMMAP_USER_SOCKET "\n"
	"                     if their own coordinator listens there)\n"
	"      --json         machine-readable output (not for metrics and top)\n"
	"      --ttl S        (put) seconds until the entry expires, 0 = never\n"
	"      --interval MS  (top) refresh every MS milliseconds (default 1000)\n"
	"      --iterations N (top) quit after N refreshes\n"
	"  -h, --help         this text\n"
	"  -V, --version      print the version and exit\n"
	"Options may follow the command; put \"--\" before arguments that begin with '-'.\n"
	"Exit status: 0 ok, 1 no such key or map, 2 usage, 3 check found problems,\n"
	"4 other failures.\n";

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "shmmapctl: %s\n", why);
	fputs(usage_text, stderr);
	return RC_USAGE;
}

/* A usage error of command cmd (NULL: of an option): the reason, and only
 * cmd's own lines of usage_text, not all 50 of them (they buried the one
 * line that said what was wrong). */
static int usage_of(const char *cmd, const char *why)
{
	static const char more[] = "                               "; /* a continuation */
	fprintf(stderr, "shmmapctl: %s\nusage: shmmapctl [-s SOCKET] [--json] COMMAND [ARGS]\n",
		why);
	size_t n = cmd ? strlen(cmd) : 0;
	bool in = false;
	for (const char *l = usage_text; cmd && *l;) {
		const char *e = strchr(l, '\n');
		size_t len = e ? (size_t)(e - l) + 1 : strlen(l);
		if (strncmp(l, more, sizeof more - 1) != 0)
			in = strncmp(l, "  ", 2) == 0 && strncmp(l + 2, cmd, n) == 0 &&
			     (l[2 + n] == ' ' || l[2 + n] == '\n');
		if (in)
			fwrite(l, 1, len, stderr);
		l += len;
	}
	fputs("(shmmapctl --help lists every command and option)\n", stderr);
	return RC_USAGE;
}

/* ": " and the particulars of the last error (a path, the coordinator's
 * reason), if any, with control characters shown as '?': the text came
 * over a socket. */
static void put_detail(FILE *f)
{
	char d[320];
	snprintf(d, sizeof d, "%s", shmmap_errdetail());
	for (char *p = d; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (d[0])
		fprintf(f, ": %s", d);
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "shmmapctl: %s: %s", what, shmmap_strerror(rc));
	put_detail(stderr);
	fputc('\n', stderr);
	return RC_FAIL;
}

/* The same for a failed read or write of our own files (errno e > 0). */
static int fail_io(const char *what, int e)
{
	fprintf(stderr, "shmmapctl: %s: %s\n", what, strerror(e));
	return RC_FAIL;
}

/* ---- escaping ---- */

/* Columns put_text takes for b[0..n): 4 for each \xNN, 2 for a backslash. */
static int text_width(const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t w = 0;
	for (size_t i = 0; i < n; i++)
		w += b[i] == '\\' ? 2 : (b[i] >= 0x20 && b[i] < 0x7f) ? 1 : 4;
	return w > INT_MAX ? INT_MAX : (int)w;
}

/* Text: printable ASCII as is, a backslash doubled, anything else \xNN. */
static void put_text(FILE *f, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		if (b[i] == '\\')
			fputs("\\\\", f);
		else if (b[i] >= 0x20 && b[i] < 0x7f)
			fputc(b[i], f);
		else
			fprintf(f, "\\x%02x", b[i]);
	}
}

/* Length of the valid UTF-8 sequence at p[0..n) (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char b = p[0];
	size_t len;
	uint32_t cp;
	if (b < 0x80)
		return 1;
	if (b >= 0xc2 && b <= 0xdf) {
		len = 2;
		cp = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3;
		cp = b & 0x0f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4;
		cp = b & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/*
 * A JSON string (RFC 8259) of any bytes: valid UTF-8 as itself (so "café"
 * reads as café), control characters and DEL as \u00NN, and each byte
 * that is not part of valid UTF-8 as \udcNN (a lone low surrogate, the
 * "surrogateescape" convention: Python's json.loads() then
 * .encode("utf-8", "surrogateescape") gives the exact bytes back).  The
 * same in every command.
 */
static void put_json(FILE *f, const void *p, size_t n)
{
	const unsigned char *b = p;
	fputc('"', f);
	for (size_t i = 0; i < n;) {
		unsigned char c = b[i];
		size_t len;
		switch (c) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (c >= 0x20 && c < 0x7f) {
				fputc(c, f);
			} else if (c < 0x80) {
				fprintf(f, "\\u%04x", c);
			} else if ((len = utf8_len(b + i, n - i)) != 0) {
				fwrite(b + i, 1, len, f);
				i += len;
				continue;
			} else {
				fprintf(f, "\\udc%02x", c);
			}
		}
		i++;
	}
	fputc('"', f);
}

static void put_json_str(FILE *f, const char *s)
{
	put_json(f, s, strlen(s));
}

/* "shmmapctl: CMD: KEY: what" with KEY escaped. */
static void key_msg(const char *cmd, const char *key, const char *what)
{
	fprintf(stderr, "shmmapctl: %s: ", cmd);
	put_text(stderr, key, strlen(key));
	fprintf(stderr, ": %s\n", what);
}

static void human_size(uint64_t n, char *buf, size_t cap)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%" PRIu64 " B", n);
	else
		snprintf(buf, cap, "%.1f %s", v, unit[u]);
}

/* ---- reading the segment ---- */

struct map_info {
	uint32_t idx;
	char name[SHMMAP_NAME_MAX + 1];
	struct map_view v;
	uint64_t entries, bytes, lock_waits, evictions, expirations;
	uint64_t slots;       /* entries with an expiry slot */
	uint64_t headers;     /* entry header and expiry slot bytes */
	uint32_t buckets;     /* the current bucket array's */
	uint32_t old_buckets; /* the old one's while a resize is under way, else 0 */
	uint64_t moved;       /* of old_buckets, those moved to the new array */
	uint64_t resizes;     /* resizes finished */
	uint64_t buckets64;   /* buckets, for the per-map metric families */
	uint64_t resizing;    /* 1 while a resize is under way */
	uint64_t quota;       /* bytes, 0 = none */
	uint64_t usage;       /* what the quota counts: entry headers, keys, values */
	uint64_t default_ttl; /* seconds, 0 = none */
};

/* Entries per bucket, and how far a resize under way has got (0..1). */
static double load_factor(const struct map_info *mi)
{
	return mi->buckets ? (double)mi->entries / mi->buckets : 0;
}

static double resize_progress(const struct map_info *mi)
{
	return mi->old_buckets ? (double)mi->moved / mi->old_buckets : 1;
}

/* Map idx if it is LIVE: 0, -ENOENT, or -SHMMAP_ECORRUPT (bad table). */
static int map_info(shmmap *sm, uint32_t idx, struct map_info *mi)
{
	const struct seg_mapdir *d = seg_dir(&sm->seg, &sm->geom, idx);
	int rc = shmmap__map_view(&sm->seg, &sm->geom, idx, &mi->v);
	if (rc < 0)
		return rc;
	mi->idx = idx;
	memcpy(mi->name, d->name, sizeof mi->name);
	mi->name[SHMMAP_NAME_MAX] = '\0';
	mi->entries = mi->bytes = mi->lock_waits = mi->evictions = mi->expirations = 0;
	mi->slots = 0;
	struct tbl t;
	if (!shmmap__tbl_load(&sm->seg, &mi->v, &t))
		return -SHMMAP_ECORRUPT;
	mi->buckets = t.cur_n;
	mi->buckets64 = t.cur_n;
	mi->old_buckets = t.old_n;
	mi->resizing = t.old_n != 0;
	mi->quota = mi->v.quota;
	mi->default_ttl = mi->v.default_ttl;
	mi->resizes = atomic_load_explicit(&mi->v.dir->resizes, memory_order_relaxed);
	mi->moved = 0;
	for (uint32_t b = 0; b < t.old_n; b++)
		mi->moved += atomic_load_explicit(&t.old[b], memory_order_relaxed) == BUCKET_MOVED;
	for (uint32_t s = 0; s < mi->v.nstripes; s++) {
		struct seg_stripe *st = &mi->v.stripes[s];
		mi->entries += LOAD(st->entries);
		mi->bytes += LOAD(st->bytes);
		mi->lock_waits += atomic_load_explicit(&st->lock_waits, memory_order_relaxed);
		mi->evictions += LOAD(st->evictions);
		mi->expirations += LOAD(st->expirations);
		mi->slots += LOAD(st->slots);
	}
	mi->headers = mi->entries * ENT_HDR + mi->slots * ENT_EXP_BYTES;
	mi->usage = mi->bytes + mi->headers; /* as table.c's stripe_usage */
	return 0;
}

/* The LIVE map called name: 0 with *mi filled, or -ENOENT. */
static int find_map(shmmap *sm, const char *name, struct map_info *mi)
{
	for (uint32_t i = 0; i < sm->geom.max_maps; i++) {
		const struct seg_mapdir *d = seg_dir(&sm->seg, &sm->geom, i);
		if (atomic_load_explicit((_Atomic uint32_t *)&d->state, memory_order_acquire) !=
			    MAP_LIVE ||
		    strncmp(d->name, name, sizeof d->name) != 0)
			continue;
		int rc = map_info(sm, i, mi);
		if (rc != -ENOENT)
			return rc;
	}
	return -ENOENT;
}

struct ctr_sum {
	uint64_t hits, misses, puts, dels, incrs, expired, cas;
};

/* Sum of every slot's counters row for map idx (rows are zeroed when the
 * map is created and never when a slot is reassigned: lifetime totals). */
static struct ctr_sum counters(shmmap *sm, uint32_t idx)
{
	struct ctr_sum t = {0};
	for (uint32_t s = 0; s < sm->geom.max_clients; s++) {
		struct seg_counters *c = seg_ctr(&sm->seg, &sm->geom, s, idx);
		t.hits += atomic_load_explicit(&c->hits, memory_order_relaxed);
		t.misses += atomic_load_explicit(&c->misses, memory_order_relaxed);
		t.puts += atomic_load_explicit(&c->puts, memory_order_relaxed);
		t.dels += atomic_load_explicit(&c->dels, memory_order_relaxed);
		t.incrs += atomic_load_explicit(&c->incrs, memory_order_relaxed);
		t.expired += atomic_load_explicit(&c->expired, memory_order_relaxed);
		t.cas += atomic_load_explicit(&c->cas, memory_order_relaxed);
	}
	return t;
}

/* One map's figures, read at one instant (as far as lock-free reads go). */
struct map_stat {
	struct map_info mi;
	struct ctr_sum t;
	uint64_t table_bytes; /* its stripes, buckets and use marks */
	uint64_t memory;      /* table + entry headers + keys and values */
};

static void map_stat_fill(shmmap *sm, struct map_stat *ms)
{
	ms->t = counters(sm, ms->mi.idx);
	ms->table_bytes = shmmap__table_bytes(ms->mi.v.nbuckets, ms->mi.v.nstripes) +
			  (ms->mi.buckets > ms->mi.v.nbuckets ? (uint64_t)ms->mi.buckets * 8 : 0) +
			  (uint64_t)ms->mi.old_buckets * 8;
	ms->memory = ms->table_bytes + ms->mi.bytes + ms->mi.headers;
}

/*
 * Every LIVE map, in directory order, into *out (malloc'ed; n maps).  A map
 * whose table does not validate is left out and counted in *bad (with a
 * message on stderr unless quiet).  Returns 0 or -ENOMEM.
 */
static int collect_maps(shmmap *sm, bool quiet, struct map_stat **out, size_t *n, uint32_t *bad)
{
	struct map_stat *v = calloc(sm->geom.max_maps ? sm->geom.max_maps : 1, sizeof *v);
	if (!v)
		return -ENOMEM;
	size_t k = 0;
	uint32_t nbad = 0;
	for (uint32_t i = 0; i < sm->geom.max_maps; i++) {
		int rc = map_info(sm, i, &v[k].mi);
		if (rc == -ENOENT)
			continue;
		if (rc < 0) {
			if (!quiet)
				fprintf(stderr, "shmmapctl: map %u: %s\n", i, shmmap_strerror(rc));
			nbad++;
			continue;
		}
		map_stat_fill(sm, &v[k]);
		k++;
	}
	*out = v;
	*n = k;
	if (bad)
		*bad = nbad;
	return 0;
}

static const char *policy_name(uint32_t p)
{
	switch (p) {
	case MAP_POLICY_EVICT: return "evict";
	case MAP_POLICY_REJECT: return "reject";
	}
	return "unknown";
}

/* One size class as the segment describes it, clamped to the geometry. */
struct class_info {
	uint32_t cls, size;
	uint32_t slab_pages;  /* pages in one of its slabs (alloc.c: 1, or more above 8 KiB) */
	uint64_t used, pages; /* blocks in use, pages owned (its slabs' pages) */
	uint64_t evictions;   /* entries its hands evicted (evict.c) */
	uint64_t pages_in;    /* pages handed over to it from other classes */
	uint32_t victim_age_ms; /* of the last entry its hands evicted (a probation victim x 20) */
};

/* Class k (k < sm->geom.nclasses): its size and slab are computed
 * (alloc.c), never read back; pages and used are clamped to what the heap
 * can hold (used to the blocks of the whole slabs its pages make).
 * Returns it. */
static struct class_info class_info(shmmap *sm, uint32_t k)
{
	struct seg_class *sc = seg_class(&sm->seg, &sm->geom, k);
	struct class_info ci = {.cls = k, .size = shmmap__class_size(k),
				.slab_pages = shmmap__class_pages(k)};
	ci.pages = LOAD(sc->pages);
	ci.used = LOAD(sc->used);
	ci.evictions = atomic_load_explicit(&sc->evictions, memory_order_relaxed);
	ci.pages_in = atomic_load_explicit(&sc->pages_in, memory_order_relaxed);
	ci.victim_age_ms = ITIME_TO_MS(atomic_load_explicit(&sc->age, memory_order_relaxed));
	if (ci.pages > sm->geom.npages)
		ci.pages = sm->geom.npages;
	uint64_t slabs = ci.slab_pages ? ci.pages / ci.slab_pages : 0;
	uint64_t blocks = slabs * shmmap__class_blocks(k);
	if (ci.used > blocks)
		ci.used = blocks;
	return ci;
}

/* The segment as a whole. */
struct seg_sum {
	uint64_t size, max_size, committed; /* now, the most it may grow to, in /dev/shm */
	uint64_t heap_bytes, bytes_used, bytes_free;
	uint64_t pages_total, pages_used, pages_free;
	uint64_t recoveries, sweeps, handovers, moves;
	uint32_t clients, clients_dead, maps;
	/* The coordinator's snapshots: last success (realtime ms, 0: none)
	 * and its entries, last failure, failures. */
	uint64_t save_ok_ms, save_entries, save_fail_ms, save_failures;
};

/* Bytes of the segment's object committed in /dev/shm (its blocks). */
static uint64_t committed_bytes(shmmap *sm)
{
	struct stat st;
	return fstat(sm->seg.fd, &st) == 0 ? (uint64_t)st.st_blocks * 512u : 0;
}

/*
 * How much of the segment the system gives in huge pages: one byte of
 * every 2 MiB of it is read here (mapping what is there, huge or not:
 * nothing is allocated, the segment is committed), then this process's
 * mapping (every part of its reservation) is looked up in /proc/self/smaps
 * (ShmemPmdMapped).  Returns the
 * bytes mapped huge, or -1 if smaps cannot be read.
 */
static int64_t huge_bytes(shmmap *sm, uint64_t size)
{
	const volatile unsigned char *b = sm->seg.base;
	size_t len = atomic_load_explicit(&sm->seg.len, memory_order_acquire);
	if (size > len)
		size = len;
	for (uint64_t off = 0; off < size; off += UINT64_C(2) << 20)
		(void)b[off];
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	char line[512];
	uintptr_t at = (uintptr_t)sm->seg.base;
	bool in = false;
	int64_t kb = -1;
	while (fgets(line, sizeof line, f)) {
		uintptr_t lo, hi;
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &lo, &hi) == 2 && strchr(line, ' ')) {
			in = lo >= at && lo - at < sm->seg.reserved && hi > lo; /* the reservation's */
			continue;
		}
		long long v;
		if (in && sscanf(line, "ShmemPmdMapped: %lld kB", &v) == 1)
			kb = (kb < 0 ? 0 : kb) + v;
	}
	fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1 */
#endif
#define HUGE_2M (UINT64_C(2) << 20)

/* Whether this kernel can collapse shared memory into 2 MiB pages: it knows
 * MADV_COLLAPSE (an advice of length 0 says so, touching nothing) and
 * shmem_enabled is not deny. */
static bool kernel_collapses(const void *at)
{
	if (madvise((void *)(uintptr_t)at, 0, MADV_COLLAPSE) < 0)
		return false;
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
	if (f) {
		if (!fgets(buf, sizeof buf, f))
			buf[0] = '\0';
		fclose(f);
	}
	return strstr(buf, "[deny]") == NULL;
}

/* Why a segment that asks for huge pages has none mapped here, as far as
 * this process can tell (the coordinator collapses the segment's 2 MiB
 * blocks when it commits them: segment.c). */
static const char *huge_none_why(shmmap *sm, uint64_t base, uint64_t size)
{
	if (base % HUGE_2M)
		return "[segment] base is not a multiple of 2 MiB (a 2 MiB page is mapped "
		       "only at a 2 MiB-aligned address)";
	if ((uintptr_t)sm->seg.base % HUGE_2M)
		return "this process mapped the segment at an address that is not a multiple "
		       "of 2 MiB";
	if (size < HUGE_2M)
		return "the segment is smaller than one 2 MiB page";
	if (!kernel_collapses(sm->seg.base))
		return "this kernel cannot collapse shared memory into them (MADV_COLLAPSE: "
		       "Linux 6.1 or later, shmem_enabled not deny), and /dev/shm gives them "
		       "only when mounted with huge=advise (or with shmem_enabled = force)";
	return "the kernel had no free 2 MiB blocks of memory when the coordinator "
	       "committed the segment (memory too fragmented)";
}

/*
 * Bytes used: blocks in use in the size classes' slabs, plus every page of
 * a run (large values and map tables; a run counts whole).  A class's
 * pages are its slabs' pages (a slab of several pages counts them all), so
 * what is not a class's page in use is a run's.  The figures
 * are read without the allocator locks, so they may be a moment apart:
 * every difference is clamped at 0.
 */
static void seg_summary(shmmap *sm, uint32_t nmaps, struct seg_sum *ss)
{
	const struct seg_header *h = seg_hdr(&sm->seg);
	shmmap__seg_sync(&sm->seg); /* the size it has grown to */
	uint64_t npages = sm->geom.npages;
	*ss = (struct seg_sum){0};
	ss->size = shmmap__seg_cur_size(&sm->seg, &sm->geom);
	ss->max_size = sm->geom.max_size;
	ss->committed = committed_bytes(sm);
	ss->pages_total = npages;
	ss->heap_bytes = npages * SEG_PAGE;
	ss->pages_free = LOAD(h->pool_free);
	if (ss->pages_free > npages)
		ss->pages_free = npages;
	ss->pages_used = npages - ss->pages_free;
	uint64_t slab_pages = 0, slab_bytes = 0;
	for (uint32_t k = 0; k < sm->geom.nclasses; k++) {
		struct class_info ci = class_info(sm, k);
		slab_pages += ci.pages;
		slab_bytes += ci.used * ci.size;
	}
	if (slab_pages > ss->pages_used)
		slab_pages = ss->pages_used;
	ss->bytes_used = slab_bytes + (ss->pages_used - slab_pages) * SEG_PAGE;
	if (ss->bytes_used > ss->heap_bytes)
		ss->bytes_used = ss->heap_bytes;
	ss->bytes_free = ss->heap_bytes - ss->bytes_used;
	ss->recoveries = atomic_load_explicit((_Atomic uint64_t *)&h->recoveries,
					      memory_order_relaxed);
	ss->sweeps = atomic_load_explicit((_Atomic uint64_t *)&h->sweeps, memory_order_relaxed);
	ss->handovers = atomic_load_explicit((_Atomic uint64_t *)&h->handovers,
					     memory_order_relaxed);
	ss->moves = atomic_load_explicit((_Atomic uint64_t *)&h->moves, memory_order_relaxed);
	ss->save_ok_ms = atomic_load_explicit((_Atomic uint64_t *)&h->save_ok_ms,
					      memory_order_relaxed);
	ss->save_entries = atomic_load_explicit((_Atomic uint64_t *)&h->save_entries,
						memory_order_relaxed);
	ss->save_fail_ms = atomic_load_explicit((_Atomic uint64_t *)&h->save_fail_ms,
						memory_order_relaxed);
	ss->save_failures = atomic_load_explicit((_Atomic uint64_t *)&h->save_failures,
						 memory_order_relaxed);
	for (uint32_t i = 0; i < sm->geom.max_clients; i++) {
		uint32_t st = atomic_load_explicit(&seg_slot(&sm->seg, &sm->geom, i)->state,
						   memory_order_relaxed);
		ss->clients += st == SLOT_LIVE;
		ss->clients_dead += st == SLOT_DEAD;
	}
	ss->maps = nmaps;
}

/* Open map by name for get/put/del/keys; prints the message itself. */
static int open_map(struct ctl *c, const char *cmd, const char *name, unsigned flags,
		    shmmap_map *m)
{
	int rc = shmmap_open(c->sm, name, flags, m);
	if (rc == 0)
		return RC_OK;
	if (rc == -ENOENT) {
		key_msg(cmd, name, "no such map");
		return RC_NOTFOUND;
	}
	char what[128];
	snprintf(what, sizeof what, "%s: open map", cmd);
	return fail(what, rc);
}

/* ---- commands ---- */

static int cmd_status(struct ctl *c, char **args)
{
	(void)args;
	shmmap *sm = c->sm;
	const struct seg_header *h = seg_hdr(&sm->seg);
	struct proto_msg req = {.type = MSG_STATS}, rep;
	int rc = shmmap__request(sm, &req, &rep);
	if (rc == 0 && rep.type != MSG_STATS_REPLY)
		rc = -EPROTO;
	if (rc < 0)
		return fail("status: ask the coordinator", rc);
	uint32_t st = atomic_load((_Atomic uint32_t *)&h->state);
	const char *state = st == SEG_CLEAN ? "clean" : st == SEG_DIRTY ? "dirty" : "unknown";
	/* Counted as `clients` counts them: slots in the segment. */
	uint32_t dead = 0;
	for (uint32_t i = 0; i < sm->geom.max_clients; i++)
		dead += atomic_load_explicit(&seg_slot(&sm->seg, &sm->geom, i)->state,
					     memory_order_relaxed) == SLOT_DEAD;
	uint64_t pool_free = LOAD(h->pool_free);
	shmmap__seg_sync(&sm->seg);
	uint64_t size = shmmap__seg_cur_size(&sm->seg, &sm->geom), base = LOAD(h->base);
	uint64_t max = sm->geom.max_size, committed = committed_bytes(sm);
	uintptr_t at = (uintptr_t)sm->seg.base;
	bool advised = LOAD(h->flags) & SEG_F_HUGE;
	int64_t huge = advised ? huge_bytes(sm, size) : 0;
	uint64_t ok_ms = LOAD(h->save_ok_ms), entries = LOAD(h->save_entries);
	uint64_t fail_ms = LOAD(h->save_fail_ms), failures = LOAD(h->save_failures);
	if (c->json) {
		printf("{\"size\":%" PRIu64 ",\"max_size\":%" PRIu64 ",\"committed\":%" PRIu64
		       ",\"huge_pages\":{\"advised\":%s,\"bytes\":%" PRId64 "}"
		       ",\"base\":\"%#" PRIx64 "\",\"mapped_at\":\"%#" PRIxPTR
		       "\",\"at_agreed_base\":%s,\"layout_version\":%u,\"state\":\"%s\","
		       "\"max_clients\":%u,\"max_maps\":%u,\"page_size\":%u,\"pages_total\":%u,"
		       "\"pages_free\":%" PRIu64 ",\"clients\":%u,\"clients_dead\":%u,\"maps\":%u,"
		       "\"coordinator\":{\"pid\":%u,\"uptime_ms\":%" PRIu64
		       ",\"generation\":%" PRIu64 "},\"snapshots\":{\"saved_ms\":%" PRIu64
		       ",\"entries\":%" PRIu64 ",\"failed_ms\":%" PRIu64 ",\"failures\":%" PRIu64
		       "}}\n",
		       size, max, committed, advised ? "true" : "false", huge, base, at,
		       sm->seg.at_agreed_base ? "true" : "false",
		       LOAD(h->layout_version), state, sm->geom.max_clients, sm->geom.max_maps,
		       SEG_PAGE, (uint32_t)sm->geom.npages, pool_free, rep.u.stats.clients, dead, rep.u.stats.maps,
		       rep.u.stats.pid, rep.u.stats.uptime_ms, rep.u.stats.coord_gen, ok_ms, entries,
		       fail_ms, failures);
		return RC_OK;
	}
	char hs[32], hp[32];
	human_size(size, hs, sizeof hs);
	human_size(SEG_PAGE, hp, sizeof hp);
	printf("size            %" PRIu64 " (%s)\n", size, hs);
	human_size(max, hs, sizeof hs);
	printf("max size        %" PRIu64 " (%s)%s\n", max, hs,
	       atomic_load((_Atomic uint32_t *)&h->grow_state) == SEG_GROW_NOROOM
		       ? ": growth waits for room in /dev/shm" : "");
	human_size(committed, hs, sizeof hs);
	printf("committed       %" PRIu64 " (%s)\n", committed, hs);
	human_size(huge > 0 ? (uint64_t)huge : 0, hs, sizeof hs);
	if (!advised)
		printf("huge pages      not asked for ([segment] huge_pages = no)\n");
	else if (huge > 0)
		printf("huge pages      %s of the segment in 2 MiB pages\n", hs);
	else if (huge < 0)
		printf("huge pages      asked for; how many were given is unknown "
		       "(/proc/self/smaps cannot be read)\n");
	else
		printf("huge pages      asked for, none given: %s\n", huge_none_why(sm, base, size));
	printf("base            %#" PRIx64 " (mapped here at %#" PRIxPTR ": %s)\n", base, at,
	       sm->seg.at_agreed_base ? "the agreed base" : "NOT the agreed base");
	printf("layout version  %u\n", LOAD(h->layout_version));
	printf("state           %s\n", state);
	printf("max clients     %u\n", sm->geom.max_clients);
	printf("max maps        %u\n", sm->geom.max_maps);
	printf("pages           %u total, %" PRIu64 " free (%s each)\n", (uint32_t)sm->geom.npages,
	       pool_free, hp);
	printf("clients         %u attached", rep.u.stats.clients);
	if (dead)
		printf(", %u dead awaiting recovery (see shmmapctl clients)", dead);
	printf("\n");
	printf("maps            %u\n", rep.u.stats.maps);
	printf("coordinator     pid %u, up %" PRIu64 ".%03" PRIu64 " s, generation %" PRIu64 "\n",
	       rep.u.stats.pid, rep.u.stats.uptime_ms / 1000, rep.u.stats.uptime_ms % 1000,
	       rep.u.stats.coord_gen);
	/* The coordinator's snapshots (its log says more). */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	uint64_t now_ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
	printf("snapshots       ");
	if (ok_ms)
		printf("last saved %" PRIu64 " s ago (%" PRIu64 " entries)",
		       now_ms > ok_ms ? (now_ms - ok_ms) / 1000 : 0, entries);
	else
		printf("none saved");
	if (failures)
		printf("; %" PRIu64 " failed, the last %" PRIu64 " s ago%s", failures,
		       now_ms > fail_ms ? (now_ms - fail_ms) / 1000 : 0,
		       fail_ms > ok_ms ? " (the last save failed: see the coordinator's log)" : "");
	printf("\n");
	return RC_OK;
}

static int cmd_maps(struct ctl *c, char **args)
{
	(void)args;
	shmmap *sm = c->sm;
	bool first = true;
	/* The name column as wide as the widest name (a first pass): a long
	 * name pushed its row's figures out of their columns. */
	int w = 24;
	for (uint32_t i = 0; i < sm->geom.max_maps && !c->json; i++) {
		struct map_info mi;
		if (map_info(sm, i, &mi) == 0 && text_width(mi.name, strlen(mi.name)) > w)
			w = text_width(mi.name, strlen(mi.name));
	}
	if (c->json)
		putchar('[');
	else
		printf("%-*s %10s %12s %9s %5s %7s %7s %7s %10s\n", w, "NAME", "ENTRIES", "BYTES",
		       "BUCKETS", "LOAD", "RESIZE", "STRIPES", "KEY_MAX", "VALUE_MAX");
	for (uint32_t i = 0; i < sm->geom.max_maps; i++) {
		struct map_info mi;
		int rc = map_info(sm, i, &mi);
		if (rc == -ENOENT)
			continue;
		if (rc < 0) {
			fprintf(stderr, "shmmapctl: maps: map %u: %s\n", i, shmmap_strerror(rc));
			continue;
		}
		if (c->json) {
			printf("%s{\"name\":", first ? "" : ",");
			put_json_str(stdout, mi.name);
			printf(",\"index\":%u,\"entries\":%" PRIu64 ",\"bytes\":%" PRIu64
			       ",\"buckets\":%u,\"load_factor\":%.3f,\"resizing\":%s"
			       ",\"old_buckets\":%u,\"resize_progress\":%.3f,\"resizes\":%" PRIu64
			       ",\"stripes\":%u,\"key_max\":%u,\"value_max\":%u,\"policy\":\"%s\""
			       ",\"quota\":%" PRIu64 ",\"usage\":%" PRIu64 ",\"default_ttl\":%" PRIu64 "}",
			       i, mi.entries, mi.bytes, mi.buckets, load_factor(&mi),
			       mi.resizing ? "true" : "false", mi.old_buckets, resize_progress(&mi),
			       mi.resizes, mi.v.nstripes, mi.v.key_max, mi.v.val_max,
			       policy_name(mi.v.policy), mi.quota, mi.usage, mi.default_ttl);
		} else {
			put_text(stdout, mi.name, strlen(mi.name));
			int pad = w - text_width(mi.name, strlen(mi.name));
			char rs[16] = "-";
			if (mi.resizing)
				snprintf(rs, sizeof rs, "%.0f%%", 100 * resize_progress(&mi));
			printf("%*s %10" PRIu64 " %12" PRIu64 " %9u %5.2f %7s %7u %7u %10u\n",
			       pad > 0 ? pad : 0, "", mi.entries, mi.bytes, mi.buckets,
			       load_factor(&mi), rs, mi.v.nstripes, mi.v.key_max, mi.v.val_max);
		}
		first = false;
	}
	if (c->json)
		puts("]");
	return RC_OK;
}

/* Bytes of a map per entry (0 for an empty map). */
static double per_entry(uint64_t bytes, uint64_t entries)
{
	return entries ? (double)bytes / (double)entries : 0.0;
}

static void stats_json(const struct map_stat *ms)
{
	const struct map_info *mi = &ms->mi;
	const struct ctr_sum *t = &ms->t;
	printf("{\"name\":");
	put_json_str(stdout, mi->name);
	printf(",\"index\":%u,\"policy\":\"%s\",\"entries\":%" PRIu64 ",\"bytes\":%" PRIu64
	       ",\"table_bytes\":%" PRIu64 ",\"memory_bytes\":%" PRIu64 ",\"hits\":%" PRIu64
	       ",\"misses\":%" PRIu64 ",\"puts\":%" PRIu64 ",\"dels\":%" PRIu64
	       ",\"incrs\":%" PRIu64 ",\"cas\":%" PRIu64 ",\"evictions\":%" PRIu64
	       ",\"expirations\":%" PRIu64 ",\"expired\":%" PRIu64 ",\"lock_waits\":%" PRIu64,
	       mi->idx, policy_name(mi->v.policy), mi->entries, mi->bytes, ms->table_bytes,
	       ms->memory, t->hits, t->misses, t->puts, t->dels, t->incrs, t->cas, mi->evictions,
	       mi->expirations, t->expired, mi->lock_waits);
	printf(",\"buckets\":%u,\"load_factor\":%.3f,\"resizing\":%s,\"old_buckets\":%u"
	       ",\"resize_progress\":%.3f,\"resizes\":%" PRIu64 ",\"quota\":%" PRIu64
	       ",\"usage\":%" PRIu64 ",\"default_ttl\":%" PRIu64
	       ",\"bytes_per_entry\":%.1f,\"table_bytes_per_entry\":%.1f}",
	       mi->buckets, load_factor(mi), mi->resizing ? "true" : "false", mi->old_buckets,
	       resize_progress(mi), mi->resizes, mi->quota, mi->usage, mi->default_ttl,
	       per_entry(ms->memory, mi->entries), per_entry(ms->table_bytes, mi->entries));
}

static int cmd_stats(struct ctl *c, char **args)
{
	shmmap *sm = c->sm;
	if (args[0]) {
		struct map_stat ms;
		int rc = find_map(sm, args[0], &ms.mi);
		if (rc == -ENOENT) {
			key_msg("stats", args[0], "no such map");
			return RC_NOTFOUND;
		}
		if (rc < 0)
			return fail("stats: read map", rc);
		map_stat_fill(sm, &ms);
		if (c->json) {
			stats_json(&ms);
			putchar('\n');
			return RC_OK;
		}
		const struct map_info *mi = &ms.mi;
		const struct ctr_sum *t = &ms.t;
		printf("map         ");
		put_text(stdout, mi->name, strlen(mi->name));
		printf("\npolicy      %s\nentries     %" PRIu64 "\nbytes       %" PRIu64
		       "\nmemory      %" PRIu64 " (table %" PRIu64 ")\nhits        %" PRIu64
		       "\nmisses      %" PRIu64 "\nputs        %" PRIu64 "\ndels        %" PRIu64
		       "\nincrs       %" PRIu64 "\ncas         %" PRIu64 "\nevictions   %" PRIu64
		       "\nexpirations %" PRIu64 "\nexpired     %" PRIu64 "\nlock_waits  %" PRIu64
		       "\n",
		       policy_name(mi->v.policy), mi->entries, mi->bytes, ms.memory, ms.table_bytes,
		       t->hits, t->misses, t->puts, t->dels, t->incrs, t->cas, mi->evictions,
		       mi->expirations, t->expired, mi->lock_waits);
		printf("buckets     %u (load factor %.2f)\nresizes     %" PRIu64 "\n", mi->buckets,
		       load_factor(mi), mi->resizes);
		printf("per entry   %.1f B (table %.1f B, header %.1f B, key and value %.1f B)\n",
		       per_entry(ms.memory, mi->entries), per_entry(ms.table_bytes, mi->entries),
		       per_entry(mi->headers, mi->entries), per_entry(mi->bytes, mi->entries));
		if (mi->quota)
			printf("quota       %" PRIu64 " (used %" PRIu64 ")\n", mi->quota, mi->usage);
		else
			printf("quota       none (used %" PRIu64 ")\n", mi->usage);
		if (mi->default_ttl)
			printf("default_ttl %" PRIu64 " s\n", mi->default_ttl);
		if (mi->resizing)
			printf("resizing    from %u buckets: %" PRIu64 " moved (%.0f%%)\n",
			       mi->old_buckets, mi->moved, 100 * resize_progress(mi));
		else
			printf("resizing    no\n");
		return RC_OK;
	}
	struct map_stat *maps;
	size_t n;
	int rc = collect_maps(sm, false, &maps, &n, NULL);
	if (rc < 0)
		return fail("stats", rc);
	struct seg_sum ss;
	seg_summary(sm, (uint32_t)n, &ss);
	if (c->json)
		printf("{\"maps\":[");
	else
		printf("%-20s %-6s %9s %11s %9s %9s %9s %9s %9s %9s %9s %9s %8s %10s\n", "MAP",
		       "POLICY", "ENTRIES", "BYTES", "HITS", "MISSES", "PUTS", "DELS", "INCRS", "CAS",
		       "EVICTED", "EXPIRED", "EXP_GETS", "LOCK_WAITS");
	for (size_t i = 0; i < n; i++) {
		const struct map_stat *ms = &maps[i];
		if (c->json) {
			if (i)
				putchar(',');
			stats_json(ms);
			continue;
		}
		put_text(stdout, ms->mi.name, strlen(ms->mi.name));
		int pad = 20 - text_width(ms->mi.name, strlen(ms->mi.name));
		printf("%*s %-6s %9" PRIu64 " %11" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64
		       " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8" PRIu64
		       " %10" PRIu64 "\n",
		       pad > 0 ? pad : 0, "", policy_name(ms->mi.v.policy), ms->mi.entries,
		       ms->mi.bytes, ms->t.hits, ms->t.misses, ms->t.puts, ms->t.dels, ms->t.incrs,
		       ms->t.cas, ms->mi.evictions, ms->mi.expirations, ms->t.expired,
		       ms->mi.lock_waits);
	}
	free(maps);
	/* Segment totals: the pool and every class in use. */
	if (c->json) {
		printf("],\"segment\":{\"size\":%" PRIu64 ",\"max_size\":%" PRIu64
		       ",\"committed\":%" PRIu64 ",\"page_size\":%u,\"pages_total\":%" PRIu64
		       ",\"pages_used\":%" PRIu64 ",\"pages_free\":%" PRIu64 ",\"heap_bytes\":%" PRIu64
		       ",\"bytes_used\":%" PRIu64 ",\"bytes_free\":%" PRIu64 ",\"recoveries\":%" PRIu64
		       ",\"sweeps\":%" PRIu64 ",\"handovers\":%" PRIu64 ",\"moves\":%" PRIu64
		       ",\"clients\":%u"
		       ",\"clients_dead\":%u,\"maps\":%u,\"classes\":[",
		       ss.size, ss.max_size, ss.committed, SEG_PAGE, ss.pages_total, ss.pages_used,
		       ss.pages_free, ss.heap_bytes, ss.bytes_used, ss.bytes_free, ss.recoveries,
		       ss.sweeps, ss.handovers, ss.moves, ss.clients, ss.clients_dead, ss.maps);
	} else {
		char hu[32], hf[32];
		human_size(ss.bytes_used, hu, sizeof hu);
		human_size(ss.bytes_free, hf, sizeof hf);
		char hs[32], hm[32], hc[32];
		human_size(ss.size, hs, sizeof hs);
		human_size(ss.max_size, hm, sizeof hm);
		human_size(ss.committed, hc, sizeof hc);
		printf("\nsize        %" PRIu64 " (%s), max %" PRIu64 " (%s), committed %" PRIu64
		       " (%s)", ss.size, hs, ss.max_size, hm, ss.committed, hc);
		printf("\npages       %" PRIu64 " total, %" PRIu64 " used, %" PRIu64 " free\n"
		       "bytes       %" PRIu64 " used (%s), %" PRIu64 " free (%s)\n"
		       "clients     %u live, %u dead\nrecoveries  %" PRIu64 "\nsweeps      %" PRIu64
		       "\nhandovers   %" PRIu64
		       " (pages emptied for a size class: another class's, or a large entry's)"
		       "\nmoves       %" PRIu64 " (entries in use moved out of those pages)"
		       "\n%5s %7s %4s %7s %10s %12s %10s %8s %10s\n",
		       ss.pages_total, ss.pages_used, ss.pages_free, ss.bytes_used, hu, ss.bytes_free,
		       hf, ss.clients, ss.clients_dead, ss.recoveries, ss.sweeps, ss.handovers,
		       ss.moves, "CLASS", "SIZE", "SLAB", "PAGES", "BLOCKS", "BYTES", "EVICTED",
		       "PAGES_IN", "VICTIM_AGE");
	}
	bool first = true;
	for (uint32_t k = 0; k < sm->geom.nclasses; k++) {
		struct class_info ci = class_info(sm, k);
		if (!ci.used && !ci.pages)
			continue;
		/* SLAB / slab_pages: the pages of one of its slabs (PAGES is
		 * a multiple of it). */
		if (c->json)
			printf("%s{\"class\":%u,\"size\":%u,\"slab_pages\":%u,\"pages\":%" PRIu64
			       ",\"blocks_used\":%" PRIu64 ",\"bytes_used\":%" PRIu64
			       ",\"evictions\":%" PRIu64 ",\"pages_in\":%" PRIu64
			       ",\"victim_age_ms\":%u}",
			       first ? "" : ",", k, ci.size, ci.slab_pages, ci.pages, ci.used,
			       ci.used * ci.size, ci.evictions, ci.pages_in, ci.victim_age_ms);
		else
			printf("%5u %7u %4u %7" PRIu64 " %10" PRIu64 " %12" PRIu64 " %10" PRIu64
			       " %8" PRIu64 " %8ums\n", k, ci.size, ci.slab_pages, ci.pages,
			       ci.used, ci.used * ci.size, ci.evictions, ci.pages_in,
			       ci.victim_age_ms);
		first = false;
	}
	if (c->json)
		puts("]}}");
	return RC_OK;
}

static int cmd_get(struct ctl *c, char **args)
{
	shmmap_map m;
	int rc = open_map(c, "get", args[0], 0, &m);
	if (rc != RC_OK)
		return rc;
	const char *key = args[1];
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	if (!buf)
		return fail("get", -ENOMEM);
	for (int tries = 0;; tries++) {
		rc = shmmap_get(c->sm, m, key, strlen(key), buf, cap, &n);
		if (rc != -ENOBUFS || tries == GET_TRIES)
			break;
		char *nb = realloc(buf, n);
		if (!nb) {
			rc = -ENOMEM;
			break;
		}
		buf = nb;
		cap = n;
	}
	int ret = RC_OK;
	if (rc == -ENOENT) {
		key_msg("get", key, "no such key");
		ret = RC_NOTFOUND;
	} else if (rc < 0) {
		ret = fail("get", rc);
	} else if (c->json) {
		printf("{\"map\":");
		put_json_str(stdout, args[0]);
		printf(",\"key\":");
		put_json_str(stdout, key);
		printf(",\"value\":");
		put_json(stdout, buf, n);
		printf("}\n");
	} else {
		fwrite(buf, 1, n, stdout);
		putchar('\n');
	}
	free(buf);
	return ret;
}

static int cmd_put(struct ctl *c, char **args)
{
	shmmap_map m;
	int rc = open_map(c, "put", args[0], SHMMAP_CREATE, &m);
	if (rc != RC_OK)
		return rc;
	rc = shmmap_put(c->sm, m, args[1], strlen(args[1]), args[2], strlen(args[2]), c->ttl, 0);
	if (rc < 0)
		return fail("put", rc);
	return RC_OK;
}

static int cmd_del(struct ctl *c, char **args)
{
	shmmap_map m;
	int rc = open_map(c, "del", args[0], 0, &m);
	if (rc != RC_OK)
		return rc;
	rc = shmmap_del(c->sm, m, args[1], strlen(args[1]));
	if (rc == -ENOENT) {
		key_msg("del", args[1], "no such key");
		return RC_NOTFOUND;
	}
	if (rc < 0)
		return fail("del", rc);
	return RC_OK;
}

/* keys: print each key as shmmap_foreach hands it over (the walk copies
 * each bucket consistently under its stripe's seqlock, in whichever
 * bucket array holds it while the map grows). */
struct keys_arg {
	bool json, first;
};

static int keys_each(const void *key, size_t klen, const void *val, size_t vlen,
		     uint64_t expire_ms, void *arg)
{
	struct keys_arg *ka = arg;
	(void)val;
	(void)vlen;
	(void)expire_ms;
	if (ka->json) {
		if (!ka->first)
			putchar(',');
		put_json(stdout, key, klen);
	} else {
		put_text(stdout, key, klen);
		putchar('\n');
	}
	ka->first = false;
	return 0;
}

static int cmd_keys(struct ctl *c, char **args)
{
	shmmap_map m;
	int rc = open_map(c, "keys", args[0], 0, &m);
	if (rc != RC_OK)
		return rc;
	struct keys_arg ka = {.json = c->json, .first = true};
	if (c->json)
		putchar('[');
	rc = shmmap_foreach(c->sm, m, keys_each, &ka);
	if (c->json)
		puts("]");
	if (rc == -EAGAIN) {
		key_msg("keys", args[0], "a stripe stays busy (a writer died mid-change? see "
					 "shmmapctl check)");
		return RC_FAIL;
	}
	/* The keys printed are only part of the map: a script must not take
	 * them for all of them. */
	if (rc == -ESTALE) {
		key_msg("keys", args[0], "the map was dropped during the listing: the keys "
					 "listed are incomplete");
		return RC_NOTFOUND;
	}
	if (rc < 0)
		return fail("keys", rc);
	return RC_OK;
}

/* ---- dump and load (the line format: see DUMP FORMAT at the top) ---- */

/* One field: bytes 0x21..0x7e but '%' as they are, the rest as %XX; an
 * empty field "-", a lone "-" as %2D. */
static void put_field(FILE *f, const void *p, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *b = p;
	if (n == 0) {
		putc('-', f);
		return;
	}
	if (n == 1 && b[0] == '-') {
		fputs("%2D", f);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (b[i] > 0x20 && b[i] < 0x7f && b[i] != '%') {
			putc(b[i], f);
		} else {
			putc('%', f);
			putc(hex[b[i] >> 4], f);
			putc(hex[b[i] & 15], f);
		}
	}
}

struct dump_ctx {
	bool json, first;
	uint64_t n;
};

static int dump_cb(const void *key, size_t klen, const void *val, size_t vlen,
		   uint64_t expire_ms, void *arg)
{
	struct dump_ctx *d = arg;
	if (d->json) {
		printf("%s{\"key\":", d->first ? "" : ",");
		put_json(stdout, key, klen);
		printf(",\"value\":");
		put_json(stdout, val, vlen);
		printf(",\"expire_ms\":%" PRIu64 "}", expire_ms);
	} else {
		printf("%" PRIu64 " ", expire_ms);
		put_field(stdout, key, klen);
		putchar(' ');
		put_field(stdout, val, vlen);
		putchar('\n');
	}
	d->first = false;
	d->n++;
	/* Stop at a write error (a closed pipe): main reports it. */
	return ferror(stdout) ? 1 : 0;
}

static int cmd_dump(struct ctl *c, char **args)
{
	shmmap_map m;
	int rc = open_map(c, "dump", args[0], 0, &m);
	if (rc != RC_OK)
		return rc;
	struct dump_ctx d = {.json = c->json, .first = true};
	if (c->json)
		putchar('[');
	rc = shmmap_foreach(c->sm, m, dump_cb, &d);
	if (c->json)
		puts("]");
	if (rc == 1)
		return fail_io("dump: write to stdout", errno ? errno : EIO);
	if (rc == -ESTALE) {
		key_msg("dump", args[0], "the map was dropped during the dump: the dump is "
					 "incomplete");
		return RC_NOTFOUND;
	}
	if (rc < 0)
		return fail("dump", rc);
	return RC_OK;
}

static int hexval(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * Decode the field s[0..n) in place (the result is never longer).  col is
 * the field's column in its line (1-based), for messages.  Returns the
 * decoded length, or -1 with why filled.
 */
static ssize_t unescape_field(char *s, size_t n, size_t col, char *why, size_t whycap)
{
	if (n == 1 && s[0] == '-')
		return 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '%') {
			int hi = n - i >= 3 ? hexval((unsigned char)s[i + 1]) : -1;
			int lo = n - i >= 3 ? hexval((unsigned char)s[i + 2]) : -1;
			if (hi < 0 || lo < 0) {
				snprintf(why, whycap,
					 "column %zu: '%%' must be followed by two hex digits", col + i);
				return -1;
			}
			s[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (ch < 0x20 || ch == 0x7f) {
			snprintf(why, whycap, "column %zu: raw control byte 0x%02x (write it as %%%02X)",
				 col + i, ch, ch);
			return -1;
		} else {
			s[o++] = (char)ch;
		}
	}
	return (ssize_t)o;
}

/* One parsed line of a dump. */
struct dump_line {
	uint64_t expire_ms;
	char *key, *val;
	size_t klen, vlen;
};

/* Parse line[0..n) (no LF) in place: 0, or -1 with why filled. */
static int parse_dump_line(char *line, size_t n, struct dump_line *dl, char *why, size_t whycap)
{
	char *sp1 = memchr(line, ' ', n);
	char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - line)) : NULL;
	if (!sp2) {
		snprintf(why, whycap, "expected EXPIRE_MS KEY VALUE, separated by single spaces");
		return -1;
	}
	char *end = line + n;
	if (memchr(sp2 + 1, ' ', (size_t)(end - (sp2 + 1)))) {
		snprintf(why, whycap, "more than three fields (a space in a key or value is %%20)");
		return -1;
	}
	size_t elen = (size_t)(sp1 - line);
	uint64_t e = 0;
	bool ok = elen > 0 && elen <= 20;
	for (size_t i = 0; ok && i < elen; i++) {
		unsigned d = (unsigned char)line[i] - '0';
		if (d > 9 || e > (UINT64_MAX - d) / 10)
			ok = false;
		else
			e = e * 10 + d;
	}
	if (!ok) {
		snprintf(why, whycap, "EXPIRE_MS is not a number of milliseconds (0 = never)");
		return -1;
	}
	dl->expire_ms = e;
	char *k = sp1 + 1, *v = sp2 + 1;
	size_t kn = (size_t)(sp2 - k), vn = (size_t)(end - v);
	if (kn == 0 || vn == 0) {
		snprintf(why, whycap, "empty %s field (an empty value is written \"-\")",
			 kn == 0 ? "key" : "value");
		return -1;
	}
	ssize_t kl = unescape_field(k, kn, (size_t)(k - line) + 1, why, whycap);
	if (kl < 0)
		return -1;
	if (kl == 0) {
		snprintf(why, whycap, "the key is empty");
		return -1;
	}
	ssize_t vl = unescape_field(v, vn, (size_t)(v - line) + 1, why, whycap);
	if (vl < 0)
		return -1;
	dl->key = k;
	dl->klen = (size_t)kl;
	dl->val = v;
	dl->vlen = (size_t)vl;
	return 0;
}

/* Seconds of ttl that keep an entry at least until expire_ms (0 = never);
 * past the longest ttl (UINT32_MAX s, about 136 years), that one, and
 * *clamped is counted. */
static uint32_t ttl_until(uint64_t expire_ms, uint64_t now, uint64_t *clamped)
{
	if (expire_ms == 0)
		return 0;
	uint64_t s = (expire_ms - now + 999) / 1000;
	if (s > UINT32_MAX) {
		(*clamped)++;
		return UINT32_MAX;
	}
	return (uint32_t)s;
}

static int cmd_load(struct ctl *c, char **args)
{
	const char *file = args[1];
	bool is_stdin = strcmp(file, "-") == 0;
	const char *fname = is_stdin ? "<stdin>" : file;
	FILE *f = is_stdin ? stdin : fopen(file, "r");
	if (!f) {
		int e = errno;
		fprintf(stderr, "shmmapctl: load: %s: %s\n", file, strerror(e));
		return RC_FAIL;
	}
	shmmap_map m;
	int ret = open_map(c, "load", args[0], SHMMAP_CREATE, &m);
	char *line = NULL;
	size_t cap = 0;
	uint64_t lineno = 0, loaded = 0, expired = 0, clamped = 0;
	while (ret == RC_OK) {
		errno = 0;
		ssize_t n = getline(&line, &cap, f);
		if (n < 0) {
			if (ferror(f) || errno == ENOMEM) {
				int e = errno ? errno : EIO;
				fprintf(stderr, "shmmapctl: load: %s:%" PRIu64 ": read error: %s (the %" PRIu64
						" entries before it stay loaded)\n",
					fname, lineno + 1, strerror(e), loaded);
				ret = RC_FAIL;
			}
			break;
		}
		lineno++;
		size_t len = (size_t)n;
		bool whole = len && line[len - 1] == '\n';
		if (whole)
			len--;
		if (len == 0 || line[0] == '#')
			continue;
		struct dump_line dl;
		char why[160];
		int rc;
		/* Every line of a dump ends with a newline: one without it is
		 * the end of a file cut short, whose value may be cut too. */
		if (!whole) {
			snprintf(why, sizeof why,
				 "no newline at the end of the file: it looks cut short (every "
				 "line of a dump ends with one); add it if the line is whole");
			rc = -EINVAL;
		} else {
			rc = parse_dump_line(line, len, &dl, why, sizeof why);
		}
		uint64_t now = shmmap__now_ms();
		if (rc == 0 && dl.expire_ms && dl.expire_ms <= now) {
			expired++;
			continue;
		}
		if (rc == 0) {
			/* Dumped without expiry: none, even where the map has a
			 * default TTL (a ttl of 0 would take it). */
			rc = shmmap_put(c->sm, m, dl.key, dl.klen, dl.val, dl.vlen,
					ttl_until(dl.expire_ms, now, &clamped),
					dl.expire_ms ? 0 : SHMMAP_NOTTL);
			if (rc < 0)
				snprintf(why, sizeof why, "put: %s", shmmap_strerror(rc));
		}
		if (rc < 0) {
			fprintf(stderr, "shmmapctl: load: %s:%" PRIu64 ": %s\n"
					"shmmapctl: load: stopped at line %" PRIu64 ": the %" PRIu64
					" entr%s of earlier lines %s loaded; this line and the rest "
					"are not\n",
				fname, lineno, why, lineno, loaded, loaded == 1 ? "y" : "ies",
				loaded == 1 ? "is" : "are");
			ret = RC_FAIL;
			break;
		}
		loaded++;
	}
	free(line);
	if (!is_stdin)
		fclose(f);
	if (ret != RC_OK)
		return ret;
	if (c->json) {
		printf("{\"map\":");
		put_json_str(stdout, args[0]);
		printf(",\"loaded\":%" PRIu64 ",\"expired\":%" PRIu64 ",\"clamped\":%" PRIu64
		       ",\"lines\":%" PRIu64 "}\n",
		       loaded, expired, clamped, lineno);
	} else {
		printf("loaded %" PRIu64 " entr%s into ", loaded, loaded == 1 ? "y" : "ies");
		put_text(stdout, args[0], strlen(args[0]));
		printf(" (%" PRIu64 " already expired, skipped", expired);
		if (clamped) /* a clause only when it happened: the usual line stays */
			printf("; %" PRIu64 " expir%s beyond the longest ttl, %" PRIu32
			       " s (about 136 years), cut to it", clamped,
			       clamped == 1 ? "y" : "ies", UINT32_MAX);
		printf(")\n");
	}
	return RC_OK;
}

/* ---- flush, drop, save ---- */

static int cmd_flush(struct ctl *c, char **args)
{
	shmmap_map m;
	int rc = open_map(c, "flush", args[0], 0, &m);
	if (rc != RC_OK)
		return rc;
	rc = shmmap_flush(c->sm, m);
	if (rc == -ENOENT || rc == -ESTALE) {
		key_msg("flush", args[0], "no such map (dropped meanwhile)");
		return RC_NOTFOUND;
	}
	if (rc < 0)
		return fail("flush", rc);
	return RC_OK;
}

static int cmd_drop(struct ctl *c, char **args)
{
	int rc = shmmap_drop(c->sm, args[0]);
	if (rc == -ENOENT) {
		key_msg("drop", args[0], "no such map");
		return RC_NOTFOUND;
	}
	if (rc < 0)
		return fail("drop", rc);
	return RC_OK;
}

/*
 * path made absolute for the coordinator (whose working directory is not
 * ours): the realpath of its directory, then its last component.  The file
 * itself need not exist.  0, or a negative errno.
 */
static int abs_path(const char *path, char *out, size_t cap)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return -EISDIR;
	char dir[PATH_MAX];
	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= sizeof dir)
			return -ENAMETOOLONG;
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	char *real = realpath(dir, NULL);
	if (!real)
		return -errno;
	int n = snprintf(out, cap, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", base);
	free(real);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return 0;
}

static bool conn_error(int rc)
{
	return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN || rc == -ECONNREFUSED;
}

/* A save of a large segment, or a grow by gigabytes, may take minutes on
 * the coordinator's side (its housekeeping thread; it answers everyone
 * else meanwhile): their replies are waited for this long. */
#define SLOW_REPLY_S 600u

static int cmd_save(struct ctl *c, char **args)
{
	struct proto_msg req = {.type = MSG_SAVE}, rep;
	if (args[0]) {
		int rc = abs_path(args[0], req.u.save.path, sizeof req.u.save.path);
		if (rc < 0) {
			key_msg("save", args[0], strerror(-rc));
			return RC_FAIL;
		}
	}
	(void)shmmap__reply_timeout(c->sm, SLOW_REPLY_S);
	int rc = shmmap__request(c->sm, &req, &rep);
	if (rc == 0 && rep.type != MSG_OK)
		rc = -EPROTO;
	if (rc < 0 && -rc < SHMMAP_ERRNO_BASE && rc != -EPROTO && rc != -ETIMEDOUT &&
	    !conn_error(rc)) {
		/* A file system error of the coordinator's (a full disk is not a
		 * full segment): the system's words, then its reason. */
		fprintf(stderr, "shmmapctl: save: %s", strerror(-rc));
		put_detail(stderr);
		fputc('\n', stderr);
		return RC_FAIL;
	}
	if (rc < 0)
		return fail("save", rc);
	if (c->json) {
		printf("{\"saved\":true,\"path\":");
		if (args[0])
			put_json_str(stdout, req.u.save.path);
		else
			printf("null");
		printf("}\n");
	} else {
		puts("saved");
	}
	return RC_OK;
}

/* ---- grow ---- */

/* A size argument: digits with an optional K, M, G or T (powers of 1024). */
static bool parse_size_arg(const char *s, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return false;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

static int cmd_grow(struct ctl *c, char **args)
{
	uint64_t want;
	if (!parse_size_arg(args[0], &want) || want == 0)
		return usage_of("grow", "grow: SIZE must be a number of bytes with an optional K, "
					"M, G or T");
	shmmap *sm = c->sm;
	struct proto_msg req = {.type = MSG_GROW}, rep;
	req.u.grow.target = want;
	(void)shmmap__reply_timeout(sm, SLOW_REPLY_S);
	int rc = shmmap__request(sm, &req, &rep);
	if (rc == 0 && rep.type != MSG_OK)
		rc = -EPROTO;
	if (rc < 0)
		return fail("grow", rc);
	shmmap__seg_sync(&sm->seg);
	uint64_t size = shmmap__seg_cur_size(&sm->seg, &sm->geom);
	if (c->json) {
		printf("{\"size\":%" PRIu64 ",\"max_size\":%" PRIu64 ",\"committed\":%" PRIu64 "}\n",
		       size, sm->geom.max_size, committed_bytes(sm));
	} else {
		char hs[32], hm[32];
		human_size(size, hs, sizeof hs);
		human_size(sm->geom.max_size, hm, sizeof hm);
		printf("size %" PRIu64 " (%s) of max %" PRIu64 " (%s)\n", size, hs, sm->geom.max_size,
		       hm);
	}
	return RC_OK;
}

/* ---- metrics: the Prometheus text exposition format (version 0.0.4) ---- */

/* A label value: backslash, double quote and line feed escaped (the
 * format's only escapes); a byte that is not valid UTF-8 (the format
 * wants UTF-8) becomes the text \xNN, as keys prints it, which the format
 * writes as \\xNN.  So two names that differ in such bytes keep apart
 * (one replacement character for all would merge their series); a name
 * with the text \xNN in it reads the same as the byte. */
static void put_label(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t l = utf8_len(p + i, n - i);
		if (l == 0) {
			fprintf(f, "\\\\x%02x", p[i]);
			i++;
			continue;
		}
		if (p[i] == '\\')
			fputs("\\\\", f);
		else if (p[i] == '"')
			fputs("\\\"", f);
		else if (p[i] == '\n')
			fputs("\\n", f);
		else
			fwrite(p + i, 1, l, f);
		i += l;
	}
}

static void metric_head(const char *name, const char *type, const char *help)
{
	printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{map="..."[,extra]} value */
static void metric_map(const char *name, const struct map_stat *ms, const char *extra,
		       uint64_t value)
{
	printf("%s{map=\"", name);
	put_label(stdout, ms->mi.name);
	printf("\"%s} %" PRIu64 "\n", extra ? extra : "", value);
}

/* One family with one sample per map: the value at offset `off` of
 * struct map_stat (a uint64_t). */
static void family_per_map(const char *name, const char *type, const char *help,
			   const struct map_stat *maps, size_t n, size_t off)
{
	metric_head(name, type, help);
	for (size_t i = 0; i < n; i++) {
		uint64_t v;
		memcpy(&v, (const char *)&maps[i] + off, sizeof v);
		metric_map(name, &maps[i], NULL, v);
	}
}

static int cmd_metrics(struct ctl *c, char **args)
{
	(void)args;
	shmmap *sm = c->sm;
	struct map_stat *maps;
	size_t n;
	int rc = collect_maps(sm, false, &maps, &n, NULL);
	if (rc < 0)
		return fail("metrics", rc);
	struct seg_sum ss;
	seg_summary(sm, (uint32_t)n, &ss);

	metric_head("shmmap_map_info", "gauge", "Each map, with its policy when memory is full (always 1).");
	for (size_t i = 0; i < n; i++) {
		char extra[32];
		snprintf(extra, sizeof extra, ",policy=\"%s\"", policy_name(maps[i].mi.v.policy));
		metric_map("shmmap_map_info", &maps[i], extra, 1);
	}
	family_per_map("shmmap_map_entries", "gauge",
		       "Entries linked in the map (expired ones until they are reclaimed).", maps, n,
		       offsetof(struct map_stat, mi.entries));
	family_per_map("shmmap_map_bytes", "gauge", "Key and value bytes of the map's entries.",
		       maps, n, offsetof(struct map_stat, mi.bytes));
	family_per_map("shmmap_map_memory_bytes", "gauge",
		       "Memory of the map: its table, entry headers, keys and values.", maps, n,
		       offsetof(struct map_stat, memory));
	metric_head("shmmap_map_ops_total", "counter",
		    "Operations on the map, by kind: gets that found a value (get_hit) or not "
		    "(get_miss), successful puts, dels, incrs and cas.");
	for (size_t i = 0; i < n; i++) {
		const struct ctr_sum *t = &maps[i].t;
		static const char *const op[] = {"get_hit", "get_miss", "put", "del", "incr", "cas"};
		const uint64_t v[] = {t->hits, t->misses, t->puts, t->dels, t->incrs, t->cas};
		for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
			char extra[32];
			snprintf(extra, sizeof extra, ",op=\"%s\"", op[k]);
			metric_map("shmmap_map_ops_total", &maps[i], extra, v[k]);
		}
	}
	family_per_map("shmmap_map_get_expired_total", "counter",
		       "Gets that found only an expired entry (also counted as get_miss).", maps, n,
		       offsetof(struct map_stat, t.expired));
	family_per_map("shmmap_map_evictions_total", "counter",
		       "Entries evicted to make room (policy evict).", maps, n,
		       offsetof(struct map_stat, mi.evictions));
	family_per_map("shmmap_map_expirations_total", "counter",
		       "Expired entries removed, by the background reclaim or a write.", maps, n,
		       offsetof(struct map_stat, mi.expirations));
	family_per_map("shmmap_map_lock_waits_total", "counter",
		       "Times a writer had to wait for a stripe lock of the map.", maps, n,
		       offsetof(struct map_stat, mi.lock_waits));
	family_per_map("shmmap_map_buckets", "gauge",
		       "Buckets of the map's current array (it grows as the map fills).", maps, n,
		       offsetof(struct map_stat, mi.buckets64));
	metric_head("shmmap_map_load_factor", "gauge", "Entries per bucket.");
	for (size_t i = 0; i < n; i++) {
		printf("shmmap_map_load_factor{map=\"");
		put_label(stdout, maps[i].mi.name);
		printf("\"} %.4f\n", load_factor(&maps[i].mi));
	}
	family_per_map("shmmap_map_resizing", "gauge", "1 while a resize of the map is under way.",
		       maps, n, offsetof(struct map_stat, mi.resizing));
	metric_head("shmmap_map_resize_progress", "gauge",
		    "Share of the old buckets moved by the resize under way (1 when none is).");
	for (size_t i = 0; i < n; i++) {
		printf("shmmap_map_resize_progress{map=\"");
		put_label(stdout, maps[i].mi.name);
		printf("\"} %.4f\n", resize_progress(&maps[i].mi));
	}
	family_per_map("shmmap_map_resizes_total", "counter", "Resizes of the map finished.", maps,
		       n, offsetof(struct map_stat, mi.resizes));
	family_per_map("shmmap_map_quota_bytes", "gauge",
		       "The map's quota (entry headers, keys and values), 0 for none.", maps, n,
		       offsetof(struct map_stat, mi.quota));
	family_per_map("shmmap_map_quota_used_bytes", "gauge",
		       "What the quota counts of the map now: entry headers, keys and values.", maps,
		       n, offsetof(struct map_stat, mi.usage));
	free(maps);

	const struct {
		const char *name, *type, *help;
		uint64_t v;
	} seg[] = {
		{"shmmap_segment_size_bytes", "gauge",
		 "Size of the shared-memory segment now (it grows up to its max size).", ss.size},
		{"shmmap_segment_max_size_bytes", "gauge",
		 "The most the segment may grow to ([segment] max_size).", ss.max_size},
		{"shmmap_segment_committed_bytes", "gauge",
		 "Memory of the segment committed in /dev/shm.", ss.committed},
		{"shmmap_segment_pages", "gauge", "Allocator pages of the heap (64 KiB each).",
		 ss.pages_total},
		{"shmmap_segment_pages_used", "gauge",
		 "Pages in use: owned by a size class, or in a run of whole pages.", ss.pages_used},
		{"shmmap_segment_pages_free", "gauge", "Pages in the free pool.", ss.pages_free},
		{"shmmap_segment_heap_bytes", "gauge", "Bytes of the heap.", ss.heap_bytes},
		{"shmmap_segment_heap_used_bytes", "gauge",
		 "Heap bytes in use: blocks of the size classes, and whole page runs.", ss.bytes_used},
		{"shmmap_segment_heap_free_bytes", "gauge", "Heap bytes not in use.", ss.bytes_free},
		{"shmmap_segment_recoveries_total", "counter",
		 "Dead clients recovered by the coordinator.", ss.recoveries},
		{"shmmap_segment_sweeps_total", "counter",
		 "Allocator rebuilds (sweeps) by the coordinator.", ss.sweeps},
		{"shmmap_segment_handovers_total", "counter",
		 "Pages emptied for a size class (another class's, or a large entry's).", ss.handovers},
		{"shmmap_segment_moves_total", "counter",
		 "Entries in use moved out of pages emptied for another size class.", ss.moves},
		{"shmmap_segment_clients", "gauge", "Attached clients (live slots, this one included).",
		 ss.clients},
		{"shmmap_segment_clients_dead", "gauge", "Slots of dead clients awaiting recovery.",
		 ss.clients_dead},
		{"shmmap_segment_maps", "gauge", "Maps in the segment.", ss.maps},
		{"shmmap_snapshot_last_success_timestamp_seconds", "gauge",
		 "When the coordinator last saved a snapshot (Unix time; 0: never).",
		 ss.save_ok_ms / 1000},
		{"shmmap_snapshot_last_entries", "gauge", "Entries the last snapshot saved holds.",
		 ss.save_entries},
		{"shmmap_snapshot_failures_total", "counter", "Snapshot saves that failed.",
		 ss.save_failures},
		{"shmmap_snapshot_last_failure_timestamp_seconds", "gauge",
		 "When a snapshot save last failed (Unix time; 0: never).", ss.save_fail_ms / 1000},
	};
	for (size_t i = 0; i < sizeof seg / sizeof seg[0]; i++) {
		metric_head(seg[i].name, seg[i].type, seg[i].help);
		printf("%s %" PRIu64 "\n", seg[i].name, seg[i].v);
	}
	/* Per size class, labelled with its number and its block size (the
	 * CLASS and SIZE columns of stats). */
	const struct {
		const char *name, *type, *help;
	} cls[] = {
		{"shmmap_class_pages", "gauge", "Pages owned by the size class."},
		{"shmmap_class_blocks_used", "gauge", "Blocks of the size class in use."},
		{"shmmap_class_bytes_used", "gauge", "Bytes of the size class's blocks in use."},
		{"shmmap_class_evictions_total", "counter",
		 "Entries the size class's eviction hands evicted."},
		{"shmmap_class_pages_in_total", "counter",
		 "Pages handed over to the size class from other classes."},
		{"shmmap_class_victim_age_seconds", "gauge",
		 "Age of the last entry the size class's hands evicted."},
	};
	for (size_t f = 0; f < sizeof cls / sizeof cls[0]; f++) {
		metric_head(cls[f].name, cls[f].type, cls[f].help);
		for (uint32_t k = 0; k < sm->geom.nclasses; k++) {
			struct class_info ci = class_info(sm, k);
			printf("%s{class=\"%u\",size=\"%u\"} ", cls[f].name, k, ci.size);
			if (f == 5) {
				printf("%.3f\n", ci.victim_age_ms / 1000.0);
				continue;
			}
			const uint64_t v[] = {ci.pages, ci.used, ci.used * ci.size, ci.evictions,
					      ci.pages_in};
			printf("%" PRIu64 "\n", v[f]);
		}
	}
	return RC_OK;
}

/* ---- top: a live view ---- */

static volatile sig_atomic_t top_quit;

static void top_on_signal(int sig)
{
	(void)sig;
	top_quit = 1;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* What the previous frame saw of map idx (rates are deltas against it). */
struct top_prev {
	bool valid;
	uint32_t gen;
	struct ctr_sum t;
	uint64_t evictions;
};

static uint64_t delta(uint64_t now, uint64_t before)
{
	return now >= before ? now - before : 0; /* a reset counter: no rate */
}

/* s escaped as put_text does, cut to fit cap. */
static void text_name(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char tmp[8];
		if (*p == '\\')
			strcpy(tmp, "\\\\");
		else if (*p >= 0x20 && *p < 0x7f)
			snprintf(tmp, sizeof tmp, "%c", *p);
		else
			snprintf(tmp, sizeof tmp, "\\x%02x", *p);
		size_t l = strlen(tmp);
		if (o + l >= cap)
			break;
		memcpy(out + o, tmp, l);
		o += l;
	}
	out[o] = '\0';
}

static void rate(FILE *f, uint64_t d, double dt)
{
	if (dt > 0)
		fprintf(f, " %9.1f", (double)d / dt);
	else
		fprintf(f, " %9s", "-");
}

/*
 * One frame into f.  prev[] (max_maps) holds the previous frame's counters
 * and is updated; dt is the seconds since that frame (0 on the first).
 * max_rows: map lines that fit (0 = no limit).
 */
static void top_frame(FILE *f, shmmap *sm, struct top_prev *prev, double dt, const struct ctl *c,
		      bool keys, unsigned max_rows)
{
	struct map_stat *maps = NULL;
	size_t n = 0;
	uint32_t bad = 0;
	int rc = collect_maps(sm, true, &maps, &n, &bad);
	struct seg_sum ss;
	seg_summary(sm, (uint32_t)n, &ss);
	char when[32] = "";
	time_t t = time(NULL);
	struct tm tm;
	if (localtime_r(&t, &tm))
		strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
	char hs[32], hu[32], hf[32];
	human_size(ss.size, hs, sizeof hs);
	human_size(ss.bytes_used, hu, sizeof hu);
	human_size(ss.bytes_free, hf, sizeof hf);
	fprintf(f, "shmmapctl top  %s  every %u ms%s\n", when, c->interval_ms,
		keys ? "  (q quits)" : "");
	fprintf(f, "segment  %s: heap %s used, %s free; pages %" PRIu64 " total, %" PRIu64
		   " free\n",
		hs, hu, hf, ss.pages_total, ss.pages_free);
	fprintf(f, "clients  %u live, %u dead   maps %u   recoveries %" PRIu64 "   sweeps %" PRIu64
		   "\n",
		ss.clients, ss.clients_dead, ss.maps, ss.recoveries, ss.sweeps);
	if (rc < 0)
		fprintf(f, "(cannot read the maps: %s)\n", shmmap_strerror(rc));
	if (bad)
		fprintf(f, "(%u map(s) unreadable: see shmmapctl check)\n", bad);
	fprintf(f, "\n%-20s %-6s %10s %10s %9s %9s %9s %9s %6s %9s\n", "MAP", "POLICY", "ENTRIES",
		"MEM", "GETS/S", "PUTS/S", "DELS/S", "OPS/S", "HIT%", "EVICT/S");
	/* Forget maps that are gone; a map re-created under the index has
	 * another gen and starts afresh. */
	bool *seen = calloc(sm->geom.max_maps ? sm->geom.max_maps : 1, sizeof *seen);
	for (size_t i = 0; i < n; i++) {
		const struct map_stat *ms = &maps[i];
		struct top_prev *p = &prev[ms->mi.idx];
		bool have = dt > 0 && p->valid && p->gen == ms->mi.v.gen;
		double d = have ? dt : 0;
		const struct ctr_sum *now = &ms->t;
		struct ctr_sum z = {0};
		const struct ctr_sum *b = have ? &p->t : &z;
		uint64_t dh = delta(now->hits, b->hits), dm = delta(now->misses, b->misses);
		uint64_t dp = delta(now->puts, b->puts), dd = delta(now->dels, b->dels);
		uint64_t dops = dh + dm + dp + dd + delta(now->incrs, b->incrs) +
				delta(now->cas, b->cas);
		uint64_t de = delta(ms->mi.evictions, have ? p->evictions : 0);
		if (seen)
			seen[ms->mi.idx] = true;
		*p = (struct top_prev){.valid = true, .gen = ms->mi.v.gen, .t = *now,
				       .evictions = ms->mi.evictions};
		if (max_rows && i >= max_rows) {
			if (i == max_rows)
				fprintf(f, "(%zu more maps)\n", n - i);
			continue;
		}
		char name[21], mem[32];
		text_name(name, sizeof name, ms->mi.name);
		human_size(ms->memory, mem, sizeof mem);
		fprintf(f, "%-20s %-6s %10" PRIu64 " %10s", name, policy_name(ms->mi.v.policy),
			ms->mi.entries, mem);
		rate(f, dh + dm, d);
		rate(f, dp, d);
		rate(f, dd, d);
		rate(f, dops, d);
		if (have && dh + dm)
			fprintf(f, " %5.1f%%", 100.0 * (double)dh / (double)(dh + dm));
		else
			fprintf(f, " %6s", "-");
		rate(f, de, d);
		fputc('\n', f);
	}
	if (!n)
		fprintf(f, "(no maps)\n");
	for (uint32_t i = 0; seen && i < sm->geom.max_maps; i++)
		if (!seen[i])
			prev[i].valid = false;
	free(seen);
	free(maps);
}

/* Write a frame: on a terminal, over the previous one (home, each line
 * cleared to its end, the rest of the screen cleared). */
static void top_show(const char *buf, size_t len, bool tty)
{
	if (!tty) {
		fwrite(buf, 1, len, stdout);
		putchar('\n');
	} else {
		fputs("\033[H", stdout);
		for (size_t i = 0; i < len; i++) {
			if (buf[i] == '\n')
				fputs("\033[K", stdout);
			putchar(buf[i]);
		}
		fputs("\033[J", stdout);
	}
	fflush(stdout);
}

static const int top_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define TOP_NSIG (sizeof top_signals / sizeof top_signals[0])

/*
 * Wait up to ms for a key (if keys) or a quit signal.  The quit signals are
 * blocked outside ppoll (orig is the mask to wait with), so one that comes
 * while a frame is drawn ends the wait at once.  Returns 1 to quit, 0 to
 * draw the next frame.
 */
static int top_wait(uint32_t ms, bool *keys, const sigset_t *orig)
{
	uint64_t end = mono_ns() + (uint64_t)ms * 1000000u;
	for (;;) {
		if (top_quit)
			return 1;
		uint64_t now = mono_ns();
		if (now >= end)
			return 0;
		uint64_t left = end - now;
		struct timespec ts = {(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		int r = ppoll(&pfd, *keys ? 1 : 0, &ts, orig);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			nanosleep(&ts, NULL); /* not expected: wait without keys */
			*keys = false;
			continue;
		}
		if (r == 0)
			continue;
		if (pfd.revents & POLLIN) {
			char kb[64];
			ssize_t k = read(STDIN_FILENO, kb, sizeof kb);
			if (k > 0) {
				if (memchr(kb, 'q', (size_t)k) || memchr(kb, 'Q', (size_t)k))
					return 1;
				return 0; /* any other key: refresh now */
			}
			if (k == 0 || (errno != EINTR && errno != EAGAIN))
				*keys = false; /* end of input: go on without keys */
		} else {
			*keys = false; /* POLLHUP, POLLERR, POLLNVAL */
		}
	}
}

/* Frames until the iterations are done, 'q', a quit signal or a failed write. */
static int top_loop(const struct ctl *c, struct top_prev *prev, bool tty, bool *keys,
		    const sigset_t *orig)
{
	if (tty)
		fputs("\033[?25l\033[2J", stdout); /* hide the cursor, clear */
	int ret = RC_OK;
	uint64_t last = 0;
	for (uint64_t frame = 0;; frame++) {
		uint64_t now = mono_ns();
		double dt = frame ? (double)(now - last) / 1e9 : 0;
		last = now;
		unsigned max_rows = 0;
		struct winsize ws;
		if (tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 10)
			max_rows = ws.ws_row - 9u;
		char *buf = NULL;
		size_t len = 0;
		FILE *mf = open_memstream(&buf, &len);
		if (!mf) {
			ret = fail("top", -ENOMEM);
			break;
		}
		top_frame(mf, c->sm, prev, dt, c, *keys, max_rows);
		if (fclose(mf) != 0) {
			free(buf);
			ret = fail("top", -ENOMEM);
			break;
		}
		top_show(buf, len, tty);
		free(buf);
		if (ferror(stdout))
			break; /* main reports it */
		if (c->iterations && frame + 1 >= c->iterations)
			break;
		if (top_wait(c->interval_ms, keys, orig))
			break;
	}
	if (tty)
		fputs("\033[?25h", stdout); /* the cursor back */
	fflush(stdout);
	return ret;
}

static int cmd_top(struct ctl *c, char **args)
{
	(void)args;
	shmmap *sm = c->sm;
	bool tty = isatty(STDOUT_FILENO);
	/* Keys only from a terminal we are in the foreground of (changing the
	 * modes of another would stop us with SIGTTOU). */
	bool keys = isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp();
	struct termios saved;
	if (keys && tcgetattr(STDIN_FILENO, &saved) < 0)
		keys = false;
	bool raw_set = false;

	sigset_t block, orig;
	sigemptyset(&block);
	for (size_t i = 0; i < TOP_NSIG; i++)
		sigaddset(&block, top_signals[i]);
	sigprocmask(SIG_BLOCK, &block, &orig);
	struct sigaction sa = {.sa_handler = top_on_signal}, old[TOP_NSIG], old_pipe;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < TOP_NSIG; i++)
		sigaction(top_signals[i], &sa, &old[i]);
	/* A closed stdout must end the loop through the terminal's restore,
	 * not kill us: main then reports the failed write. */
	struct sigaction ign = {.sa_handler = SIG_IGN};
	sigemptyset(&ign.sa_mask);
	sigaction(SIGPIPE, &ign, &old_pipe);
	top_quit = 0;

	if (keys) {
		struct termios raw = saved;
		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 1;
		raw.c_cc[VTIME] = 0;
		raw_set = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
		keys = raw_set;
	}
	int ret = RC_OK;
	struct top_prev *prev = calloc(sm->geom.max_maps ? sm->geom.max_maps : 1, sizeof *prev);
	if (!prev)
		ret = fail("top", -ENOMEM);
	else
		ret = top_loop(c, prev, tty, &keys, &orig);
	free(prev);
	if (raw_set)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	/* Unblock first: a pending quit signal then meets our handler, not the
	 * default action, and we exit like after 'q'. */
	sigprocmask(SIG_SETMASK, &orig, NULL);
	for (size_t i = 0; i < TOP_NSIG; i++)
		sigaction(top_signals[i], &old[i], NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	return ret;
}

static const char *slot_state(uint32_t st)
{
	switch (st) {
	case SLOT_FREE: return "free";
	case SLOT_LIVE: return "live";
	case SLOT_DEAD: return "dead";
	}
	return "unknown";
}

static int cmd_clients(struct ctl *c, char **args)
{
	(void)args;
	shmmap *sm = c->sm;
	uint64_t now = shmmap__now_ns();
	bool first = true;
	if (c->json)
		putchar('[');
	else
		printf("%5s %8s %6s %-5s %-19s %9s %s\n", "SLOT", "PID", "UID", "STATE", "ATTACHED",
		       "AGE_S", "FLAGS");
	for (uint32_t i = 0; i < sm->geom.max_clients; i++) {
		struct seg_slot *sl = seg_slot(&sm->seg, &sm->geom, i);
		uint32_t st = atomic_load_explicit(&sl->state, memory_order_acquire);
		if (st == SLOT_FREE)
			continue;
		uint32_t pid = LOAD(sl->pid), uid = LOAD(sl->uid), flags = LOAD(sl->flags);
		uint64_t at = LOAD(sl->attached_ns);
		/* A dead client whose recovery waits for a lock a live process
		 * holds (the coordinator says which in the slot). */
		char waits[128] = "";
		uint32_t wk = LOAD(sl->wait_kind), wo = LOAD(sl->wait_owner);
		uint32_t wpid = wo >= 1 && wo <= sm->geom.max_clients
					? LOAD(seg_slot(&sm->seg, &sm->geom, wo - 1)->pid)
					: 0;
		if (st == SLOT_DEAD && wk == SLOT_WAIT_STRIPE)
			snprintf(waits, sizeof waits, "recovery waits for stripe %u of map %u, held by "
				 "pid %u (slot %u)", LOAD(sl->wait_stripe), LOAD(sl->wait_map), wpid,
				 wo ? wo - 1 : 0);
		else if (st == SLOT_DEAD && wk == SLOT_WAIT_ALLOC)
			snprintf(waits, sizeof waits, "recovery waits for an allocator lock held by "
				 "a live process");
		else if (st == SLOT_DEAD)
			snprintf(waits, sizeof waits, "recovery under way");
		uint64_t age = now > at ? (now - at) / 1000000000u : 0;
		bool ro = flags & SLOT_F_RDONLY, self = (i == sm->slot);
		if (c->json) {
			printf("%s{\"slot\":%u,\"pid\":%u,\"uid\":%u,\"state\":\"%s\","
			       "\"attached_ns\":%" PRIu64 ",\"age_s\":%" PRIu64
			       ",\"rdonly\":%s,\"self\":%s",
			       first ? "" : ",", i, pid, uid, slot_state(st), at, age,
			       ro ? "true" : "false", self ? "true" : "false");
			if (waits[0]) {
				printf(",\"pending\":");
				put_json_str(stdout, waits);
			}
			putchar('}');
		} else {
			char when[32] = "-";
			time_t t = (time_t)(at / 1000000000u);
			struct tm tm;
			if (at && localtime_r(&t, &tm))
				strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
			printf("%5u %8u %6u %-5s %-19s %9" PRIu64 " %s%s%s%s\n", i, pid, uid,
			       slot_state(st), when, age, ro ? "ro" : "rw", self ? ",self" : "",
			       waits[0] ? "  " : "", waits);
		}
		first = false;
	}
	if (c->json)
		puts("]");
	return RC_OK;
}

/* The problems one check run reported (sorted after the run). */
struct problems {
	char **v;
	size_t n, cap;
	uint64_t dropped; /* beyond PROBLEMS_KEPT, or out of memory */
};

static void problems_free(struct problems *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	*p = (struct problems){0};
}

static void problem_cb(void *arg, const char *what)
{
	struct problems *p = arg;
	if (p->n == p->cap && p->cap < PROBLEMS_KEPT) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		char **v = realloc(p->v, cap * sizeof *v);
		if (v) {
			p->v = v;
			p->cap = cap;
		}
	}
	char *s = p->n < p->cap ? strdup(what) : NULL;
	if (s)
		p->v[p->n++] = s;
	else
		p->dropped++;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* keep := the problems in both keep and cur (sorted; as multisets).  Frees what goes. */
static void problems_intersect(struct problems *keep, const struct problems *cur)
{
	size_t i = 0, j = 0, n = 0;
	while (i < keep->n) {
		int d = j < cur->n ? strcmp(keep->v[i], cur->v[j]) : -1;
		if (d == 0) {
			keep->v[n++] = keep->v[i++];
			j++;
		} else if (d < 0) {
			free(keep->v[i++]);
		} else {
			j++;
		}
	}
	keep->n = n;
	keep->dropped = keep->dropped < cur->dropped ? keep->dropped : cur->dropped;
}

/*
 * check: a write in flight can look like a problem (see check.c), so one
 * is believed only if every run reports it, word for word: up to
 * CHECK_RUNS runs, 50 ms apart, stopping at a clean run or when nothing
 * persists.  Real damage reads the same every time; a transient state
 * names other blocks, other numbers.
 */
static int cmd_check(struct ctl *c, char **args)
{
	(void)args;
	struct proto_msg rep = {0};
	if (c->repair) {
		struct proto_msg req = {.type = MSG_REPAIR};
		int rrc = shmmap__request(c->sm, &req, &rep);
		if (rrc == 0 && rep.type != MSG_REPAIRED)
			rrc = -EPROTO;
		if (rrc < 0)
			return fail("repair", rrc);
		if (!c->json && rep.u.repaired.deferred)
			printf("repair: %u dead client(s) recovered, %u stripe(s) checked; sweep "
			       "deferred: an allocator lock was busy, the coordinator sweeps as soon "
			       "as it is free (its log says when)\n",
			       rep.u.repaired.slots, rep.u.repaired.stripes);
		else if (!c->json)
			printf("repair: %u dead client(s) recovered, %u stripe(s) checked, %" PRIu64
			       " block(s) in use, %" PRIu64 " freed, %" PRIu64
			       " page(s) back to the pool%s\n",
			       rep.u.repaired.slots, rep.u.repaired.stripes, rep.u.repaired.roots,
			       rep.u.repaired.freed, rep.u.repaired.pages_freed,
			       rep.u.repaired.bad_roots ? "; some entries lie in no valid block"
							: "");
		if (!c->json && (rep.u.repaired.busy || rep.u.repaired.pending))
			printf("repair: skipped %u stripe lock(s) that a live process holds on to "
			       "(stopped?); %u dead client(s) wait for one to be recovered (see "
			       "shmmapctl clients); the coordinator finishes as soon as they are "
			       "let go\n",
			       rep.u.repaired.busy, rep.u.repaired.pending);
	}
	struct problems keep = {0}, cur = {0};
	struct check_report r = {.problem = problem_cb, .arg = &cur};
	size_t first_n = 0;
	int rc, runs = 0;
	for (;;) {
		problems_free(&cur);
		rc = shmmap__check(&c->sm->seg, &c->sm->geom, &r);
		runs++;
		if (rc < 0 && rc != -SHMMAP_ECORRUPT) {
			problems_free(&cur);
			problems_free(&keep);
			return fail("check", rc);
		}
		if (cur.n)
			qsort(cur.v, cur.n, sizeof *cur.v, cmp_strp);
		if (runs == 1) {
			keep = cur;
			cur = (struct problems){0};
			first_n = keep.n + keep.dropped;
		} else {
			problems_intersect(&keep, &cur);
		}
		if ((keep.n == 0 && keep.dropped == 0) || runs == CHECK_RUNS)
			break;
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	problems_free(&cur);
	uint64_t errors = keep.n + keep.dropped, leaked = 0;
	for (size_t i = 0; i < keep.n; i++)
		leaked += strncmp(keep.v[i], "leak:", 5) == 0;
	uint64_t transient = first_n > errors ? first_n - errors : 0;
	bool ok = errors == 0;
	if (c->json) {
		printf("{\"ok\":%s,\"runs\":%d,\"maps\":%" PRIu64 ",\"entries\":%" PRIu64
		       ",\"bytes\":%" PRIu64 ",\"blocks_used\":%" PRIu64 ",\"leaked\":%" PRIu64
		       ",\"errors\":%" PRIu64 ",\"problems\":[",
		       ok ? "true" : "false", runs, r.maps, r.entries, r.bytes, r.blocks_used, leaked,
		       errors);
		for (size_t i = 0; i < keep.n; i++) {
			if (i)
				putchar(',');
			put_json_str(stdout, keep.v[i]);
		}
		printf("],\"problems_not_shown\":%" PRIu64 ",\"transient\":%" PRIu64,
		       keep.dropped, transient);
		if (c->repair && rep.u.repaired.deferred)
			printf(",\"repair\":{\"slots\":%u,\"stripes\":%u,\"sweep_deferred\":true"
			       ",\"busy\":%u,\"pending\":%u}",
			       rep.u.repaired.slots, rep.u.repaired.stripes, rep.u.repaired.busy,
			       rep.u.repaired.pending);
		else if (c->repair)
			printf(",\"repair\":{\"slots\":%u,\"stripes\":%u,\"sweep_deferred\":false"
			       ",\"in_use\":%" PRIu64 ",\"freed\":%" PRIu64 ",\"pages_freed\":%" PRIu64
			       ",\"bad_entries\":%" PRIu64 ",\"busy\":%u,\"pending\":%u}",
			       rep.u.repaired.slots, rep.u.repaired.stripes, rep.u.repaired.roots,
			       rep.u.repaired.freed, rep.u.repaired.pages_freed,
			       rep.u.repaired.bad_roots, rep.u.repaired.busy, rep.u.repaired.pending);
		printf("}\n");
	} else {
		printf("maps         %" PRIu64 "\nentries      %" PRIu64 "\nbytes        %" PRIu64
		       "\nblocks used  %" PRIu64 "\nleaked       %" PRIu64 "\nerrors       %" PRIu64
		       "\n",
		       r.maps, r.entries, r.bytes, r.blocks_used, leaked, errors);
		for (size_t i = 0; i < keep.n; i++)
			printf("problem: %s\n", keep.v[i]);
		if (keep.dropped)
			printf("(%" PRIu64 " more problems not shown)\n", keep.dropped);
		printf("%s (%d run%s", ok ? "ok" : "PROBLEMS FOUND", runs, runs == 1 ? "" : "s");
		if (transient)
			printf("; %" PRIu64 " problem%s seen in some runs only: writes in flight",
			       transient, transient == 1 ? "" : "s");
		printf(")\n");
	}
	problems_free(&keep);
	return ok ? RC_OK : RC_PROBLEMS;
}

/* ---- main ---- */

struct command {
	const char *name;
	int min, max; /* arguments */
	int (*fn)(struct ctl *, char **);
};

static const struct command commands[] = {
	{"status", 0, 0, cmd_status},
	{"maps", 0, 0, cmd_maps},
	{"stats", 0, 1, cmd_stats},
	{"get", 2, 2, cmd_get},
	{"put", 3, 3, cmd_put},
	{"del", 2, 2, cmd_del},
	{"keys", 1, 1, cmd_keys},
	{"dump", 1, 1, cmd_dump},
	{"load", 2, 2, cmd_load},
	{"flush", 1, 1, cmd_flush},
	{"drop", 1, 1, cmd_drop},
	{"save", 0, 1, cmd_save},
	{"metrics", 0, 0, cmd_metrics},
	{"grow", 1, 1, cmd_grow},
	{"top", 0, 0, cmd_top},
	{"clients", 0, 0, cmd_clients},
	{"check", 0, 0, cmd_check},
};

static bool parse_ttl(const char *s, uint32_t *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* A whole number in [min, max]. */
static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"socket", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"ttl", required_argument, NULL, 't'},
		{"repair", no_argument, NULL, 'r'},
		{"interval", required_argument, NULL, 'i'},
		{"iterations", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct ctl c = {.interval_ms = TOP_INTERVAL_MS};
	int opt;
	uint64_t v;
	/* GNU getopt permutes: options may come after the command too. */
	while ((opt = getopt_long(argc, argv, "s:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			c.sock = optarg;
			break;
		case 'j':
			c.json = true;
			break;
		case 't':
			if (!parse_ttl(optarg, &c.ttl))
				return usage_of(NULL, "--ttl: expects whole seconds, 0..4294967295");
			c.ttl_set = true;
			break;
		case 'r':
			c.repair = true;
			break;
		case 'i':
			if (!parse_u64(optarg, 1, TOP_INTERVAL_MAX, &v))
				return usage_of(NULL, "--interval: expects milliseconds, 1..3600000");
			c.interval_ms = (uint32_t)v;
			c.interval_set = true;
			break;
		case 'n':
			if (!parse_u64(optarg, 1, UINT64_MAX, &v))
				return usage_of(NULL, "--iterations: expects a whole number, at least 1");
			c.iterations = v;
			c.iterations_set = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return RC_OK;
		case 'V':
			printf("shmmapctl %s\n", shmmap_version(NULL, NULL, NULL));
			return RC_OK;
		default:
			return usage(NULL);
		}
	}
	if (optind >= argc)
		return usage("no command given");
	const char *name = argv[optind];
	char **args = argv + optind + 1;
	int nargs = argc - optind - 1;
	const struct command *cmd = NULL;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(commands[i].name, name) == 0)
			cmd = &commands[i];
	if (!cmd) {
		fprintf(stderr, "shmmapctl: unknown command '%s'\n", name);
		return usage(NULL);
	}
	if (nargs < cmd->min || nargs > cmd->max) {
		char why[64];
		snprintf(why, sizeof why, "%s: wrong number of arguments", name);
		return usage_of(name, why);
	}
	if (c.ttl_set && cmd->fn != cmd_put)
		return usage_of(name, "--ttl applies to put only");
	if (c.repair && cmd->fn != cmd_check)
		return usage_of(name, "--repair applies to check only");
	if ((c.interval_set || c.iterations_set) && cmd->fn != cmd_top)
		return usage_of(name, "--interval and --iterations apply to top only");
	if (c.json && (cmd->fn == cmd_top || cmd->fn == cmd_metrics))
		return usage_of(name, "--json does not apply to top and metrics");

	int rc = shmmap__attach_admin(c.sock, &c.sm);
	if (rc < 0) {
		const char *path = c.sock ? c.sock : getenv("SHMMAP_SOCKET");
		char def[108];
		const char *note = "";
		if (!path || !*path) {
			shmmap__default_socket(def, sizeof def, false);
			path = def;
			/* An ordinary user's own coordinator was not found there. */
			if (strcmp(def, SHMMAP_DEFAULT_SOCKET) == 0 && geteuid() != 0)
				note = getenv("XDG_RUNTIME_DIR")
					       ? " (no coordinator of yours at $XDG_RUNTIME_DIR" SHMMAP_USER_SOCKET ")"
					       : " ($XDG_RUNTIME_DIR is not set: no coordinator of yours was looked for)";
		}
		char what[300];
		snprintf(what, sizeof what, "attach to %s%s", path, note);
		return fail(what, rc);
	}
	int ret = cmd->fn(&c, args);
	shmmap_detach(c.sm);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (ret == RC_OK)
			ret = fail_io("write to stdout", errno ? errno : EIO);
	}
	return ret;
}
