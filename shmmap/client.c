/*
 * client.c - the public API: one attachment (struct shmmap) per call of
 * shmmap_attach, map handles, and the data calls, which go straight to the
 * segment (table.c) without touching the socket.
 *
 * Invariants:
 *   - The socket stays open for the whole attachment: it is the
 *     coordinator's liveness signal for this process.  One request/reply
 *     at a time on it (sock_mu); it is used only by attach, open, detach.
 *   - A map view, once published in views[idx], is immutable; a newer open
 *     of the same index publishes a new one and the old one is kept until
 *     detach (another thread may still be reading it).
 *   - A handle is valid iff its tag is this attachment's, a view of its
 *     index and generation is published here, and the directory entry is
 *     still LIVE with that generation (-EBADF, -ESTALE otherwise).
 */
#include <errno.h>
#include <stddef.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "proto.h"

#define REPLY_TIMEOUT_S 10

struct view_node {
	struct view_node *next;
	struct map_view v;
};

/* Extra per-attachment state kept out of internal.h. */
struct client_ext {
	_Atomic(struct view_node *) *views; /* [max_maps] */
	struct view_node *all;              /* every view ever made, under sock_mu */
	char path[108];             /* the coordinator's socket, for resuming */
	_Atomic uint32_t rec_free;  /* bit k: the slot's intent record k is free */
	_Atomic uint32_t rec_parked;/* bit k: record k holds a block whose free failed */
	uint32_t seq;
};

static struct client_ext *ext(shmmap *sm)
{
	return sm->ext;
}

static int connect_to(const char *path);

/*
 * The coordinator went away (restarted): connect again and ask to keep
 * this attachment's slot (RESUME).  The restarted coordinator adopted the
 * segment and our slot with it; if it created a new segment instead, or
 * does not know the slot, this attachment is stale.  Under sock_mu.
 */
static int resume(shmmap *sm)
{
	int s = connect_to(ext(sm)->path);
	if (s < 0)
		return s;
	struct proto_msg m = {.type = MSG_RESUME, .seq = ++ext(sm)->seq};
	m.u.resume.pid = (uint32_t)getpid();
	m.u.resume.slot = sm->slot;
	m.u.resume.slot_gen = sm->slot_gen;
	int fd = -1, rc = shmmap__proto_send(s, &m, -1);
	if (rc == 0)
		rc = shmmap__proto_recv(s, &m, &fd);
	if (rc == 0 && m.type == MSG_ERROR)
		rc = m.u.error.err;
	else if (rc == 0 && (m.type != MSG_WELCOME || m.u.welcome.slot != sm->slot ||
			     m.u.welcome.size != sm->seg.len))
		rc = -ESTALE;
	if (fd >= 0)
		close(fd); /* the same segment, mapped already */
	if (rc < 0) {
		close(s);
		return rc == -EAGAIN ? -ETIMEDOUT : rc;
	}
	close(sm->sock);
	sm->sock = s;
	return 0;
}

static bool conn_lost(int rc)
{
	return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN || rc == -ECONNREFUSED;
}

static int round_trip(shmmap *sm, const struct proto_msg *req, struct proto_msg *rep)
{
	struct proto_msg q = *req;
	q.seq = ++ext(sm)->seq;
	int rc = shmmap__proto_send(sm->sock, &q, -1);
	if (rc == 0)
		rc = shmmap__proto_recv(sm->sock, rep, NULL);
	/* Skip late replies to earlier requests that timed out. */
	while (rc == 0 && (int32_t)(rep->seq - q.seq) < 0)
		rc = shmmap__proto_recv(sm->sock, rep, NULL);
	if (rc == -EAGAIN)
		rc = -ETIMEDOUT;
	if (rc == 0 && rep->seq != q.seq)
		rc = -EPROTO;
	return rc;
}

int shmmap__request(shmmap *sm, const struct proto_msg *req, struct proto_msg *rep)
{
	pthread_mutex_lock(&sm->sock_mu);
	int rc = round_trip(sm, req, rep);
	/* The coordinator restarted: resume, then ask again (every request is
	 * idempotent: open, drop by name, stats, repair). */
	if (conn_lost(rc) && resume(sm) == 0)
		rc = round_trip(sm, req, rep);
	if (rc == 0 && rep->type == MSG_ERROR)
		rc = rep->u.error.err;
	pthread_mutex_unlock(&sm->sock_mu);
	return rc;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path || path[0] == '\0')
		return -EINVAL;
	strcpy(sa.sun_path, path);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		close(s);
		return -e;
	}
	struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return s;
}

SHMMAP_EXPORT int shmmap_attach(const char *socket_path, shmmap **out)
{
	if (!out)
		return -EINVAL;
	const char *path = socket_path;
	if (!path || !*path)
		path = getenv("SHMMAP_SOCKET");
	if (!path || !*path)
		path = SHMMAP_DEFAULT_SOCKET;
	int sock = connect_to(path);
	if (sock < 0)
		return sock;

	struct proto_msg m = {.type = MSG_HELLO, .seq = 1};
	m.u.hello.pid = (uint32_t)getpid();
	const char *ro = getenv("SHMMAP_READONLY");
	if (ro && *ro == '1')
		m.u.hello.flags |= HELLO_F_RDONLY;
	int fd = -1, rc = shmmap__proto_send(sock, &m, -1);
	/* Even if the send failed, a refusal may be waiting to be read. */
	int rc2 = shmmap__proto_recv(sock, &m, &fd);
	if (rc == 0 || rc2 == 0)
		rc = rc2;
	if (rc == -EAGAIN)
		rc = -ETIMEDOUT;
	if (rc == 0 && m.type == MSG_ERROR)
		rc = m.u.error.err;
	else if (rc == 0 && (m.type != MSG_WELCOME || fd < 0))
		rc = -EPROTO;
	if (rc < 0)
		goto fail_sock;

	shmmap *sm = calloc(1, sizeof *sm);
	struct client_ext *x = calloc(1, sizeof *x);
	if (!sm || !x) {
		free(sm);
		free(x);
		rc = -ENOMEM;
		goto fail_sock;
	}
	sm->sock = sock;
	sm->ext = x;
	x->seq = 1;
	snprintf(x->path, sizeof x->path, "%s", path);
	x->rec_free = (uint32_t)((1ull << SEG_INTENTS) - 1);
	bool rdonly = (m.u.welcome.flags & HELLO_F_RDONLY) != 0;
	rc = shmmap__seg_map_fd(fd, m.u.welcome.base, rdonly, &sm->seg);
	if (rc < 0)
		goto fail_sm;
	fd = -1; /* owned by sm->seg now */
	rc = shmmap__seg_validate(&sm->seg, &sm->geom);
	if (rc < 0)
		goto fail_map;
	if (m.u.welcome.slot >= sm->geom.max_clients) {
		rc = -EPROTO;
		goto fail_map;
	}
	sm->slot = m.u.welcome.slot;
	sm->slot_gen = m.u.welcome.slot_gen;
	sm->tag = (uint16_t)(sm->slot + 1);
	x->views = calloc(sm->geom.max_maps, sizeof *x->views);
	if (!x->views) {
		rc = -ENOMEM;
		goto fail_map;
	}
	pthread_mutex_init(&sm->sock_mu, NULL);
	*out = sm;
	return 0;

fail_map:
	shmmap__seg_unmap(&sm->seg);
fail_sm:
	free(x);
	free(sm);
fail_sock:
	if (fd >= 0)
		close(fd);
	close(sock);
	return rc;
}

SHMMAP_EXPORT void shmmap_detach(shmmap *sm)
{
	if (!sm)
		return;
	struct proto_msg m = {.type = MSG_BYE};
	shmmap__proto_send(sm->sock, &m, -1); /* best effort: EOF says the same */
	close(sm->sock);
	shmmap__seg_unmap(&sm->seg);
	struct client_ext *x = ext(sm);
	for (struct view_node *n = x->all, *next; n; n = next) {
		next = n->next;
		free(n);
	}
	free(x->views);
	free(x);
	pthread_mutex_destroy(&sm->sock_mu);
	free(sm);
}

static bool valid_name(const char *name)
{
	if (!name)
		return false;
	size_t n = strnlen(name, SHMMAP_NAME_MAX + 1);
	return n > 0 && n <= SHMMAP_NAME_MAX;
}

/* The options as this library knows them: zero-filled, checked. */
static int opts_copy(const struct shmmap_map_opts *opts, struct shmmap_map_opts *o)
{
	memset(o, 0, sizeof *o);
	if (opts->size < offsetof(struct shmmap_map_opts, reserved) || opts->size > 4096)
		return -EINVAL;
	memcpy(o, opts, opts->size < sizeof *o ? opts->size : sizeof *o);
	/* A newer caller's fields that this library does not know: zero only. */
	for (size_t i = sizeof *o; i < opts->size; i++)
		if (((const unsigned char *)opts)[i])
			return -EINVAL;
	for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
		if (o->reserved[i])
			return -EINVAL;
	if (o->policy > SHMMAP_POLICY_REJECT || o->key_max > 65535 || o->value_max > (1u << 30))
		return -EINVAL;
	return 0;
}

SHMMAP_EXPORT int shmmap_open(shmmap *sm, const char *name, unsigned flags, shmmap_map *out)
{
	return shmmap_open_opts(sm, name, flags, NULL, out);
}

SHMMAP_EXPORT int shmmap_open_opts(shmmap *sm, const char *name, unsigned flags,
				   const struct shmmap_map_opts *opts, shmmap_map *out)
{
	if (!sm || !out || !valid_name(name) || (flags & ~SHMMAP_CREATE))
		return -EINVAL;
	struct proto_msg req = {.type = MSG_OPEN}, rep;
	req.u.open.flags = flags;
	strcpy(req.u.open.name, name);
	if (opts) {
		struct shmmap_map_opts o;
		int rc = opts_copy(opts, &o);
		if (rc < 0)
			return rc;
		req.type = MSG_OPEN_OPTS;
		req.u.openo.flags = flags;
		req.u.openo.policy = o.policy;
		req.u.openo.capacity = o.capacity;
		req.u.openo.quota = o.quota;
		req.u.openo.key_max = o.key_max;
		req.u.openo.value_max = o.value_max;
		req.u.openo.default_ttl = o.default_ttl;
		strcpy(req.u.openo.name, name);
	}
	for (int attempt = 0; attempt < 3; attempt++) {
		int rc = shmmap__request(sm, &req, &rep);
		if (rc < 0)
			return rc;
		if (rep.type != MSG_OPENED || rep.u.opened.index >= sm->geom.max_maps)
			return -EPROTO;
		struct view_node *n = calloc(1, sizeof *n);
		if (!n)
			return -ENOMEM;
		rc = shmmap__map_view(&sm->seg, &sm->geom, rep.u.opened.index, &n->v);
		if (rc == 0 && n->v.gen != rep.u.opened.gen)
			rc = -ESTALE; /* dropped and re-created meanwhile: ask again */
		if (rc < 0) {
			free(n);
			if (rc == -ESTALE || rc == -ENOENT)
				continue;
			return rc;
		}
		struct client_ext *x = ext(sm);
		pthread_mutex_lock(&sm->sock_mu);
		struct view_node *cur = atomic_load(&x->views[n->v.idx]);
		if (cur && cur->v.gen == n->v.gen) {
			free(n); /* already published by another open */
		} else {
			n->next = x->all;
			x->all = n;
			atomic_store_explicit(&x->views[n->v.idx], n, memory_order_release);
		}
		pthread_mutex_unlock(&sm->sock_mu);
		out->id = shmmap__handle_id(sm->tag, rep.u.opened.gen, rep.u.opened.index);
		return 0;
	}
	return -ESTALE;
}

int shmmap__resolve(shmmap *sm, shmmap_map m, const struct map_view **v)
{
	if (!sm)
		return -EINVAL;
	uint16_t tag = (uint16_t)(m.id >> 48);
	uint32_t gen = (uint32_t)(m.id >> 16), idx = (uint32_t)(m.id & 0xffff);
	if (tag != sm->tag || idx >= sm->geom.max_maps)
		return -EBADF;
	struct view_node *n =
		atomic_load_explicit(&ext(sm)->views[idx], memory_order_acquire);
	if (!n)
		return -EBADF;
	if (n->v.gen != gen)
		return (int32_t)(gen - n->v.gen) < 0 ? -ESTALE : -EBADF;
	const struct seg_mapdir *d = seg_dir(&sm->seg, &sm->geom, idx);
	if (atomic_load_explicit((_Atomic uint32_t *)&d->state, memory_order_acquire) != MAP_LIVE ||
	    atomic_load_explicit((_Atomic uint32_t *)&d->gen, memory_order_relaxed) != gen)
		return -ESTALE;
	*v = &n->v;
	return 0;
}

/*
 * The intent records of this attachment's slot: one per writing thread at
 * a time (claimed from rec_free for the length of one write).  A write
 * whose final free failed (-EAGAIN: an allocator lock awaits the
 * coordinator's repair) leaves its block recorded; the record is parked
 * and the next write that finds it parked finishes that free first.
 */
static void unpark(shmmap *sm, const struct op_ctx *base)
{
	struct client_ext *x = ext(sm);
	uint32_t parked = atomic_exchange(&x->rec_parked, 0);
	for (uint32_t k = 0; k < SEG_INTENTS; k++) {
		if (!(parked & (1u << k)))
			continue;
		struct seg_intent *in = &seg_slot(&sm->seg, &sm->geom, sm->slot)->intent[k];
		uint64_t a = atomic_load(&in->a), b = atomic_load(&in->b);
		if (b)
			shmmap__free(base->s, base->g, &base->lk, b, &in->b);
		if (a)
			shmmap__free(base->s, base->g, &base->lk, a, &in->a);
		if (atomic_load(&in->a) || atomic_load(&in->b))
			atomic_fetch_or(&x->rec_parked, 1u << k);
		else
			atomic_fetch_or(&x->rec_free, 1u << k);
	}
}

static int rec_claim(shmmap *sm, struct op_ctx *o)
{
	struct client_ext *x = ext(sm);
	if (atomic_load_explicit(&x->rec_parked, memory_order_relaxed))
		unpark(sm, o);
	for (int spins = 0;; spins++) {
		uint32_t m = atomic_load_explicit(&x->rec_free, memory_order_relaxed);
		if (m) {
			uint32_t k = (uint32_t)__builtin_ctz(m);
			if (atomic_compare_exchange_weak_explicit(&x->rec_free, &m, m & ~(1u << k),
								  memory_order_acquire,
								  memory_order_relaxed)) {
				o->intent = &seg_slot(&sm->seg, &sm->geom, sm->slot)->intent[k];
				return 0;
			}
			continue;
		}
		/* More writing threads than records: wait for one (every write
		 * is short), unless they are all parked on a broken allocator. */
		if (atomic_load(&x->rec_parked) == (1u << SEG_INTENTS) - 1)
			return -EAGAIN;
		if (spins > 64)
			sched_yield();
	}
}

static void rec_release(shmmap *sm, struct op_ctx *o)
{
	struct client_ext *x = ext(sm);
	struct seg_intent *in = o->intent;
	uint32_t k = (uint32_t)(in - seg_slot(&sm->seg, &sm->geom, sm->slot)->intent);
	if (atomic_load_explicit(&in->a, memory_order_relaxed) ||
	    atomic_load_explicit(&in->b, memory_order_relaxed))
		atomic_fetch_or_explicit(&x->rec_parked, 1u << k, memory_order_release);
	else
		atomic_fetch_or_explicit(&x->rec_free, 1u << k, memory_order_release);
}

/* Resolve the handle and build the context of one data call (a write
 * claims an intent record: op_end releases it). */
static int op_begin(shmmap *sm, shmmap_map m, const struct map_view **v, struct op_ctx *o,
		    bool write)
{
	int rc = shmmap__resolve(sm, m, v);
	if (rc < 0)
		return rc;
	o->s = &sm->seg;
	o->g = &sm->geom;
	o->lk.s = &sm->seg;
	o->lk.g = &sm->geom;
	o->lk.owner = sm->slot + 1;
	o->ctr = sm->seg.rdonly ? NULL : seg_ctr(&sm->seg, &sm->geom, sm->slot, (*v)->idx);
	o->intent = NULL;
	if (write && !sm->seg.rdonly) {
		/* Still our slot?  If the coordinator recovered it (it took this
		 * process for dead), writing under its identity would corrupt
		 * whoever has it now. */
		const struct seg_slot *sl = seg_slot(&sm->seg, &sm->geom, sm->slot);
		if (atomic_load_explicit(&sl->gen, memory_order_relaxed) != sm->slot_gen ||
		    atomic_load_explicit(&sl->state, memory_order_relaxed) != SLOT_LIVE)
			return -ESTALE;
		return rec_claim(sm, o);
	}
	return 0;
}

static void op_end(shmmap *sm, struct op_ctx *o)
{
	if (o->intent)
		rec_release(sm, o);
}

SHMMAP_EXPORT int shmmap_put(shmmap *sm, shmmap_map m, const void *key, size_t klen,
			     const void *val, size_t vlen, uint32_t ttl_s, unsigned flags)
{
	const struct map_view *v;
	if (!key || (!val && vlen))
		return -EINVAL;
	struct op_ctx o;
	int rc = op_begin(sm, m, &v, &o, true);
	if (rc < 0)
		return rc;
	rc = shmmap__tbl_put(&o, v, key, klen, val, vlen, ttl_s, flags);
	op_end(sm, &o);
	return rc;
}

SHMMAP_EXPORT int shmmap_get(shmmap *sm, shmmap_map m, const void *key, size_t klen,
			     void *buf, size_t cap, size_t *vlen)
{
	const struct map_view *v;
	if (!key || (!buf && cap))
		return -EINVAL;
	struct op_ctx o;
	int rc = op_begin(sm, m, &v, &o, false);
	return rc < 0 ? rc : shmmap__tbl_get(&o, v, key, klen, buf, cap, vlen);
}

SHMMAP_EXPORT int shmmap_del(shmmap *sm, shmmap_map m, const void *key, size_t klen)
{
	const struct map_view *v;
	if (!key)
		return -EINVAL;
	struct op_ctx o;
	int rc = op_begin(sm, m, &v, &o, true);
	if (rc < 0)
		return rc;
	rc = shmmap__tbl_del(&o, v, key, klen);
	op_end(sm, &o);
	return rc;
}

SHMMAP_EXPORT int shmmap_incr(shmmap *sm, shmmap_map m, const void *key, size_t klen,
			      int64_t delta, int64_t *out)
{
	const struct map_view *v;
	if (!key)
		return -EINVAL;
	struct op_ctx o;
	int rc = op_begin(sm, m, &v, &o, true);
	if (rc < 0)
		return rc;
	rc = shmmap__tbl_incr(&o, v, key, klen, delta, out);
	op_end(sm, &o);
	return rc;
}

SHMMAP_EXPORT int shmmap_cas(shmmap *sm, shmmap_map m, const void *key, size_t klen,
			     const void *expected, size_t elen, const void *val, size_t vlen,
			     uint32_t ttl_s)
{
	const struct map_view *v;
	if (!key || (!expected && elen) || (!val && vlen))
		return -EINVAL;
	struct op_ctx o;
	int rc = op_begin(sm, m, &v, &o, true);
	if (rc < 0)
		return rc;
	rc = shmmap__tbl_cas(&o, v, key, klen, expected, elen, val, vlen, ttl_s);
	op_end(sm, &o);
	return rc;
}

/* FLUSH or DROP of a map, by name, through the coordinator. */
static int map_request(shmmap *sm, uint16_t type, const char *name)
{
	if (sm->seg.rdonly)
		return -EPERM;
	struct proto_msg req = {.type = type}, rep;
	strcpy(req.u.open.name, name);
	int rc = shmmap__request(sm, &req, &rep);
	if (rc == 0 && rep.type != MSG_OK)
		rc = -EPROTO;
	return rc;
}

SHMMAP_EXPORT int shmmap_flush(shmmap *sm, shmmap_map m)
{
	const struct map_view *v;
	int rc = shmmap__resolve(sm, m, &v);
	if (rc < 0)
		return rc;
	/* The name, copied from the directory and bounded like any shared byte. */
	char name[SHMMAP_NAME_MAX + 1];
	const struct seg_mapdir *d = seg_dir(&sm->seg, &sm->geom, v->idx);
	memcpy(name, d->name, sizeof name);
	name[SHMMAP_NAME_MAX] = '\0';
	if (!valid_name(name))
		return -SHMMAP_ECORRUPT;
	rc = map_request(sm, MSG_FLUSH, name);
	/* Dropped (and perhaps re-created) meanwhile: this handle is stale. */
	if (rc == 0 || rc == -ENOENT) {
		int r2 = shmmap__resolve(sm, m, &v);
		if (r2 < 0)
			return r2;
	}
	return rc;
}

SHMMAP_EXPORT int shmmap_drop(shmmap *sm, const char *name)
{
	if (!sm || !valid_name(name))
		return -EINVAL;
	return map_request(sm, MSG_DROP, name);
}

SHMMAP_EXPORT int shmmap_foreach(shmmap *sm, shmmap_map m, shmmap_each_fn fn, void *arg)
{
	const struct map_view *v;
	if (!fn)
		return -EINVAL;
	struct op_ctx o;
	int rc = op_begin(sm, m, &v, &o, false);
	return rc < 0 ? rc : shmmap__tbl_foreach(&o, v, fn, arg);
}

SHMMAP_EXPORT int shmmap_stats(shmmap *sm, shmmap_map m, struct shmmap_stats *out)
{
	const struct map_view *v;
	if (!out)
		return -EINVAL;
	int rc = shmmap__resolve(sm, m, &v);
	if (rc < 0)
		return rc;
	struct shmmap_stats t = {0};
	for (uint32_t i = 0; i < v->nstripes; i++) {
		const struct seg_stripe *st = &v->stripes[i];
		t.entries += __atomic_load_n(&st->entries, __ATOMIC_RELAXED);
		t.bytes += __atomic_load_n(&st->bytes, __ATOMIC_RELAXED);
		t.evictions += __atomic_load_n(&st->evictions, __ATOMIC_RELAXED);
		t.expirations += __atomic_load_n(&st->expirations, __ATOMIC_RELAXED);
		t.lock_waits += atomic_load_explicit(&st->lock_waits, memory_order_relaxed);
	}
	for (uint32_t i = 0; i < sm->geom.max_clients; i++) {
		struct seg_counters *c = seg_ctr(&sm->seg, &sm->geom, i, v->idx);
		t.hits += atomic_load_explicit(&c->hits, memory_order_relaxed);
		t.misses += atomic_load_explicit(&c->misses, memory_order_relaxed);
		t.puts += atomic_load_explicit(&c->puts, memory_order_relaxed);
		t.dels += atomic_load_explicit(&c->dels, memory_order_relaxed);
		t.incrs += atomic_load_explicit(&c->incrs, memory_order_relaxed);
		t.cas += atomic_load_explicit(&c->cas, memory_order_relaxed);
	}
	*out = t;
	return 0;
}
