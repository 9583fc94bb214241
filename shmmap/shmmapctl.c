/*
 * shmmapctl.c - the admin tool: `shmmapctl [-s SOCKET] [--json] COMMAND`.
 *
 * It owns nothing in the segment.  It attaches like any worker
 * (shmmap_attach: one slot, the socket as liveness signal) and then reads
 * the segment directly through the attachment's validated mapping and
 * geometry (sm->seg, sm->geom): the directory, stripes, counters, slots and
 * allocator tables.  Keys and values go through the public API; the only
 * other writes it makes are the ones those calls make.  It asks the
 * coordinator only for what the segment does not say (MSG_STATS: pid,
 * uptime, attached clients).
 *
 * Reading rules (the same as the library's read path): every offset read
 * from the segment is validated before use (shmmap__map_view,
 * shmmap__entry_at), walks are bounded, and `keys` copies each bucket's
 * chain under the stripe's seqlock, retrying when a writer moved it.  It
 * never takes a segment lock.
 *
 * Output: text for people, --json for scripts (one JSON value on stdout;
 * strings escaped, bytes outside printable ASCII as \u00NN).  Exit status:
 * 0 ok, 1 no such key or map, 2 usage, 3 check found problems, 4 any other
 * failure, with "shmmapctl: what failed: why" on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "proto.h"

enum { RC_OK = 0, RC_NOTFOUND = 1, RC_USAGE = 2, RC_PROBLEMS = 3, RC_FAIL = 4 };

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define CHECK_RUNS 3          /* check: runs before problems are believed */
#define PROBLEMS_KEPT 10000   /* check: problems kept per run, the rest counted */
#define KEYS_TRIES 100000     /* keys: seqlock retries per bucket */
#define GET_TRIES 16          /* get: retries when the value grew meanwhile */

struct ctl {
	shmmap *sm;
	const char *sock;
	bool json;
	bool ttl_set;
	bool repair;
	uint32_t ttl;
};

static const char usage_text[] =
	"usage: shmmapctl [-s SOCKET] [--json] COMMAND [ARGS]\n"
	"commands:\n"
	"  status                       the segment and its coordinator\n"
	"  maps                         one line per map\n"
	"  stats [MAP]                  counters of MAP, or of every map and the segment\n"
	"  get MAP KEY                  print the value and a newline (exit 1 if absent)\n"
	"  put MAP KEY VALUE [--ttl S]  store VALUE (creates MAP); expire after S seconds\n"
	"  del MAP KEY                  delete KEY (exit 1 if absent)\n"
	"  keys MAP                     list the keys (non-printable bytes as \\xNN)\n"
	"  clients                      the client slots in use\n"
	"  check [--repair]             verify the whole segment (exit 3 on problems);\n"
	"                               --repair first has the coordinator fix what it\n"
	"                               can without losing a live entry (dead clients'\n"
	"                               locks and writes, counters, leaks, free lists)\n"
	"options:\n"
	"  -s, --socket PATH  the coordinator's socket (default: $SHMMAP_SOCKET, then\n"
	"                     " SHMMAP_DEFAULT_SOCKET ")\n"
	"      --json         machine-readable output\n"
	"      --ttl S        (put) seconds until the entry expires, 0 = never\n"
	"  -h, --help         this text\n"
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

static int fail(const char *what, int rc)
{
	fprintf(stderr, "shmmapctl: %s: %s\n", what, shmmap_strerror(rc));
	return RC_FAIL;
}

/* ---- escaping ---- */

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

/* A JSON string: bytes outside printable ASCII become \u00NN (each byte
 * one code point, so any byte string round-trips through Latin-1). */
static void put_json(FILE *f, const void *p, size_t n)
{
	const unsigned char *b = p;
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		switch (b[i]) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (b[i] >= 0x20 && b[i] < 0x7f)
				fputc(b[i], f);
			else
				fprintf(f, "\\u%04x", b[i]);
		}
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
	uint64_t entries, bytes, lock_waits;
};

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
	mi->entries = mi->bytes = mi->lock_waits = 0;
	for (uint32_t s = 0; s < mi->v.nstripes; s++) {
		struct seg_stripe *st = &mi->v.stripes[s];
		mi->entries += LOAD(st->entries);
		mi->bytes += LOAD(st->bytes);
		mi->lock_waits += atomic_load_explicit(&st->lock_waits, memory_order_relaxed);
	}
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
	uint64_t hits, misses, puts, dels, incrs, expired;
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
	}
	return t;
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
	uint64_t pool_free = LOAD(h->pool_free);
	uint64_t size = LOAD(h->size), base = LOAD(h->base);
	uintptr_t at = (uintptr_t)sm->seg.base;
	if (c->json) {
		printf("{\"size\":%" PRIu64 ",\"base\":\"%#" PRIx64 "\",\"mapped_at\":\"%#" PRIxPTR
		       "\",\"at_agreed_base\":%s,\"layout_version\":%u,\"state\":\"%s\","
		       "\"max_clients\":%u,\"max_maps\":%u,\"page_size\":%u,\"pages_total\":%u,"
		       "\"pages_free\":%" PRIu64 ",\"clients\":%u,\"maps\":%u,"
		       "\"coordinator\":{\"pid\":%u,\"uptime_ms\":%" PRIu64
		       ",\"generation\":%" PRIu64 "}}\n",
		       size, base, at, sm->seg.at_agreed_base ? "true" : "false",
		       LOAD(h->layout_version), state, sm->geom.max_clients, sm->geom.max_maps,
		       SEG_PAGE, sm->geom.npages, pool_free, rep.u.stats.clients, rep.u.stats.maps,
		       rep.u.stats.pid, rep.u.stats.uptime_ms, rep.u.stats.coord_gen);
		return RC_OK;
	}
	char hs[32], hp[32];
	human_size(size, hs, sizeof hs);
	human_size(SEG_PAGE, hp, sizeof hp);
	printf("size            %" PRIu64 " (%s)\n", size, hs);
	printf("base            %#" PRIx64 " (mapped here at %#" PRIxPTR ": %s)\n", base, at,
	       sm->seg.at_agreed_base ? "the agreed base" : "NOT the agreed base");
	printf("layout version  %u\n", LOAD(h->layout_version));
	printf("state           %s\n", state);
	printf("max clients     %u\n", sm->geom.max_clients);
	printf("max maps        %u\n", sm->geom.max_maps);
	printf("pages           %u total, %" PRIu64 " free (%s each)\n", sm->geom.npages,
	       pool_free, hp);
	printf("clients         %u attached\n", rep.u.stats.clients);
	printf("maps            %u\n", rep.u.stats.maps);
	printf("coordinator     pid %u, up %" PRIu64 ".%03" PRIu64 " s, generation %" PRIu64 "\n",
	       rep.u.stats.pid, rep.u.stats.uptime_ms / 1000, rep.u.stats.uptime_ms % 1000,
	       rep.u.stats.coord_gen);
	return RC_OK;
}

static int cmd_maps(struct ctl *c, char **args)
{
	(void)args;
	shmmap *sm = c->sm;
	bool first = true;
	if (c->json)
		putchar('[');
	else
		printf("%-24s %10s %12s %9s %7s %7s %10s\n", "NAME", "ENTRIES", "BYTES", "BUCKETS",
		       "STRIPES", "KEY_MAX", "VALUE_MAX");
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
			       ",\"buckets\":%u,\"stripes\":%u,\"key_max\":%u,\"value_max\":%u}",
			       i, mi.entries, mi.bytes, mi.v.nbuckets, mi.v.nstripes, mi.v.key_max,
			       mi.v.val_max);
		} else {
			put_text(stdout, mi.name, strlen(mi.name));
			int pad = 24 - (int)strlen(mi.name);
			printf("%*s %10" PRIu64 " %12" PRIu64 " %9u %7u %7u %10u\n", pad > 0 ? pad : 0,
			       "", mi.entries, mi.bytes, mi.v.nbuckets, mi.v.nstripes, mi.v.key_max,
			       mi.v.val_max);
		}
		first = false;
	}
	if (c->json)
		puts("]");
	return RC_OK;
}

static void stats_json(const struct map_info *mi, const struct ctr_sum *t)
{
	printf("{\"name\":");
	put_json_str(stdout, mi->name);
	printf(",\"entries\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"hits\":%" PRIu64
	       ",\"misses\":%" PRIu64 ",\"puts\":%" PRIu64 ",\"dels\":%" PRIu64
	       ",\"incrs\":%" PRIu64 ",\"expired\":%" PRIu64 ",\"lock_waits\":%" PRIu64 "}",
	       mi->entries, mi->bytes, t->hits, t->misses, t->puts, t->dels, t->incrs, t->expired,
	       mi->lock_waits);
}

static int cmd_stats(struct ctl *c, char **args)
{
	shmmap *sm = c->sm;
	struct map_info mi;
	if (args[0]) {
		int rc = find_map(sm, args[0], &mi);
		if (rc == -ENOENT) {
			key_msg("stats", args[0], "no such map");
			return RC_NOTFOUND;
		}
		if (rc < 0)
			return fail("stats: read map", rc);
		struct ctr_sum t = counters(sm, mi.idx);
		if (c->json) {
			stats_json(&mi, &t);
			putchar('\n');
			return RC_OK;
		}
		printf("map         ");
		put_text(stdout, mi.name, strlen(mi.name));
		printf("\nentries     %" PRIu64 "\nbytes       %" PRIu64 "\nhits        %" PRIu64
		       "\nmisses      %" PRIu64 "\nputs        %" PRIu64 "\ndels        %" PRIu64
		       "\nincrs       %" PRIu64 "\nexpired     %" PRIu64 "\nlock_waits  %" PRIu64
		       "\n",
		       mi.entries, mi.bytes, t.hits, t.misses, t.puts, t.dels, t.incrs, t.expired,
		       mi.lock_waits);
		return RC_OK;
	}
	bool first = true;
	if (c->json)
		printf("{\"maps\":[");
	else
		printf("%-20s %9s %11s %9s %9s %9s %9s %9s %8s %10s\n", "MAP", "ENTRIES", "BYTES",
		       "HITS", "MISSES", "PUTS", "DELS", "INCRS", "EXPIRED", "LOCK_WAITS");
	for (uint32_t i = 0; i < sm->geom.max_maps; i++) {
		int rc = map_info(sm, i, &mi);
		if (rc == -ENOENT)
			continue;
		if (rc < 0) {
			fprintf(stderr, "shmmapctl: stats: map %u: %s\n", i, shmmap_strerror(rc));
			continue;
		}
		struct ctr_sum t = counters(sm, i);
		if (c->json) {
			if (!first)
				putchar(',');
			stats_json(&mi, &t);
		} else {
			put_text(stdout, mi.name, strlen(mi.name));
			int pad = 20 - (int)strlen(mi.name);
			printf("%*s %9" PRIu64 " %11" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64
			       " %9" PRIu64 " %9" PRIu64 " %8" PRIu64 " %10" PRIu64 "\n",
			       pad > 0 ? pad : 0, "", mi.entries, mi.bytes, t.hits, t.misses, t.puts,
			       t.dels, t.incrs, t.expired, mi.lock_waits);
		}
		first = false;
	}
	/* Segment totals: the pool and every class in use. */
	uint64_t pool_free = LOAD(seg_hdr(&sm->seg)->pool_free);
	uint64_t used_pages = pool_free <= sm->geom.npages ? sm->geom.npages - pool_free : 0;
	if (c->json)
		printf("],\"segment\":{\"pages_total\":%u,\"pages_used\":%" PRIu64
		       ",\"pages_free\":%" PRIu64 ",\"classes\":[",
		       sm->geom.npages, used_pages, pool_free);
	else
		printf("\npages: %u total, %" PRIu64 " used, %" PRIu64 " free\n%5s %7s %7s %10s\n",
		       sm->geom.npages, used_pages, pool_free, "CLASS", "SIZE", "PAGES", "BLOCKS");
	first = true;
	for (uint32_t k = 0; k < sm->geom.nclasses; k++) {
		struct seg_class *sc = seg_class(&sm->seg, &sm->geom, k);
		uint64_t used = LOAD(sc->used), pages = LOAD(sc->pages);
		if (!used && !pages)
			continue;
		if (c->json)
			printf("%s{\"class\":%u,\"size\":%u,\"pages\":%" PRIu64 ",\"used\":%" PRIu64 "}",
			       first ? "" : ",", k, shmmap__class_size(k), pages, used);
		else
			printf("%5u %7u %7" PRIu64 " %10" PRIu64 "\n", k, shmmap__class_size(k), pages,
			       used);
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

/* The keys of one bucket, each as u32 length + bytes. */
struct keybuf {
	unsigned char *p;
	size_t len, cap;
};

static int kb_add(struct keybuf *kb, const void *key, uint32_t n)
{
	size_t need = kb->len + sizeof n + n;
	if (need > kb->cap) {
		size_t cap = kb->cap ? kb->cap : 4096;
		while (cap < need)
			cap *= 2;
		unsigned char *p = realloc(kb->p, cap);
		if (!p)
			return -ENOMEM;
		kb->p = p;
		kb->cap = cap;
	}
	memcpy(kb->p + kb->len, &n, sizeof n);
	memcpy(kb->p + kb->len + sizeof n, key, n);
	kb->len = need;
	return 0;
}

/*
 * Copy the live keys of bucket b under the stripe's seqlock (the reader of
 * table.c's header comment): seq (acquire), even or retry; walk and copy,
 * validating every offset and length; fence(acquire); seq again (relaxed),
 * unchanged or retry.  -SHMMAP_ECORRUPT if a stable chain does not
 * validate, -EAGAIN if the stripe never stays still.
 */
static int bucket_keys(shmmap *sm, const struct map_view *v, uint32_t b, uint64_t now,
		       struct keybuf *kb)
{
	struct seg_stripe *st = &v->stripes[b & (v->nstripes - 1)];
	for (int tries = 0; tries < KEYS_TRIES; tries++) {
		if (tries)
			sched_yield();
		uint32_t s1 = atomic_load_explicit(&st->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		kb->len = 0;
		bool torn = false;
		uint64_t off = atomic_load_explicit(&v->buckets[b], memory_order_acquire);
		for (uint32_t steps = 0; off; steps++) {
			const struct seg_entry *e =
				steps < SEG_CHAIN_MAX ? shmmap__entry_at(&sm->seg, v, off) : NULL;
			if (!e) {
				torn = true;
				break;
			}
			/* One read of each field, validated again: it may be torn. */
			uint32_t klen = LOAD(e->klen);
			uint64_t expire = LOAD(e->expire_ms);
			uint64_t next = atomic_load_explicit(&((struct seg_entry *)e)->next,
							     memory_order_acquire);
			if (klen == 0 || klen > v->key_max ||
			    !seg_ok(&sm->seg, off, sizeof *e + (uint64_t)klen, SEG_ALIGN)) {
				torn = true;
				break;
			}
			if ((expire == 0 || expire > now) && kb_add(kb, e->data, klen) < 0)
				return -ENOMEM;
			off = next;
		}
		/* Orders the copies above before the re-read of seq. */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&st->seq, memory_order_relaxed) != s1)
			continue;
		return torn ? -SHMMAP_ECORRUPT : 0;
	}
	return -EAGAIN;
}

static int cmd_keys(struct ctl *c, char **args)
{
	shmmap_map m;
	int rc = open_map(c, "keys", args[0], 0, &m);
	if (rc != RC_OK)
		return rc;
	const struct map_view *v;
	rc = shmmap__resolve(c->sm, m, &v);
	if (rc < 0)
		return fail("keys: resolve map", rc);
	struct keybuf kb = {0};
	uint64_t now = shmmap__now_ms();
	bool first = true;
	if (c->json)
		putchar('[');
	for (uint32_t b = 0; b < v->nbuckets; b++) {
		rc = bucket_keys(c->sm, v, b, now, &kb);
		if (rc < 0)
			break;
		for (size_t i = 0; i < kb.len;) {
			uint32_t n;
			memcpy(&n, kb.p + i, sizeof n);
			const unsigned char *k = kb.p + i + sizeof n;
			if (c->json) {
				if (!first)
					putchar(',');
				put_json(stdout, k, n);
			} else {
				put_text(stdout, k, n);
				putchar('\n');
			}
			first = false;
			i += sizeof n + n;
		}
	}
	free(kb.p);
	if (c->json)
		puts("]");
	if (rc == -EAGAIN) {
		key_msg("keys", args[0], "a stripe stays busy (a writer died mid-change? see "
					 "shmmapctl check)");
		return RC_FAIL;
	}
	if (rc < 0)
		return fail("keys", rc);
	return RC_OK;
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
		uint64_t age = now > at ? (now - at) / 1000000000u : 0;
		bool ro = flags & SLOT_F_RDONLY, self = (i == sm->slot);
		if (c->json) {
			printf("%s{\"slot\":%u,\"pid\":%u,\"uid\":%u,\"state\":\"%s\","
			       "\"attached_ns\":%" PRIu64 ",\"age_s\":%" PRIu64
			       ",\"rdonly\":%s,\"self\":%s}",
			       first ? "" : ",", i, pid, uid, slot_state(st), at, age,
			       ro ? "true" : "false", self ? "true" : "false");
		} else {
			char when[32] = "-";
			time_t t = (time_t)(at / 1000000000u);
			struct tm tm;
			if (at && localtime_r(&t, &tm))
				strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
			printf("%5u %8u %6u %-5s %-19s %9" PRIu64 " %s%s\n", i, pid, uid,
			       slot_state(st), when, age, ro ? "ro" : "rw", self ? ",self" : "");
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
		if (!c->json)
			printf("repair: %u dead client(s) recovered, %u stripe(s) checked, %" PRIu64
			       " block(s) in use, %" PRIu64 " freed, %" PRIu64
			       " page(s) back to the pool%s\n",
			       rep.u.repaired.slots, rep.u.repaired.stripes, rep.u.repaired.roots,
			       rep.u.repaired.freed, rep.u.repaired.pages_freed,
			       rep.u.repaired.bad_roots ? "; some entries lie in no valid block"
							: "");
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
		if (c->repair)
			printf(",\"repair\":{\"slots\":%u,\"stripes\":%u,\"in_use\":%" PRIu64
			       ",\"freed\":%" PRIu64 ",\"pages_freed\":%" PRIu64
			       ",\"bad_entries\":%" PRIu64 "}",
			       rep.u.repaired.slots, rep.u.repaired.stripes, rep.u.repaired.roots,
			       rep.u.repaired.freed, rep.u.repaired.pages_freed,
			       rep.u.repaired.bad_roots);
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

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"socket", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"ttl", required_argument, NULL, 't'},
		{"repair", no_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct ctl c = {0};
	int opt;
	/* GNU getopt permutes: options may come after the command too. */
	while ((opt = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			c.sock = optarg;
			break;
		case 'j':
			c.json = true;
			break;
		case 't':
			if (!parse_ttl(optarg, &c.ttl))
				return usage("--ttl: expects whole seconds, 0..4294967295");
			c.ttl_set = true;
			break;
		case 'r':
			c.repair = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
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
		fprintf(stderr, "shmmapctl: %s: wrong number of arguments\n", name);
		return usage(NULL);
	}
	if (c.ttl_set && cmd->fn != cmd_put)
		return usage("--ttl applies to put only");
	if (c.repair && cmd->fn != cmd_check)
		return usage("--repair applies to check only");

	int rc = shmmap_attach(c.sock, &c.sm);
	if (rc < 0) {
		const char *path = c.sock ? c.sock : getenv("SHMMAP_SOCKET");
		if (!path || !*path)
			path = SHMMAP_DEFAULT_SOCKET;
		char what[160];
		snprintf(what, sizeof what, "attach to %s", path);
		return fail(what, rc);
	}
	int ret = cmd->fn(&c, args);
	shmmap_detach(c.sm);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (ret == RC_OK)
			ret = fail("write to stdout", errno ? -errno : -EIO);
	}
	return ret;
}
