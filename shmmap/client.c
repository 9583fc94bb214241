/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
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
 *   - A clean detach gives back the blocks its intent records hold (spares,
 *     parked frees) before BYE: the coordinator's recovery, which counts
 *     and logs a dead client, finds nothing to free.
 *
 * Fork: every attachment is in a process-wide registry.  The fork handlers
 * (pthread_atfork) hold every attachment's sock_mu across fork(), so the
 * child never inherits one locked mid-request.  In the child, each
 * attachment's inherited connection is closed at once (the parent's stays
 * the parent's: the coordinator's liveness signal for it is untouched) and
 * the attachment is marked forked: slot, slot_gen and the intent records
 * are the parent's, and nothing is written under them.  The child's first
 * call re-attaches (HELLO on a new connection: its own slot), keeping the
 * mapping, the views and the handles, which stay valid (the tag is the
 * attachment's, not the slot's).  Until that succeeds every call fails and
 * touches nothing.  The check on the data path is one load of `forked`.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "putfast.h"
#include "paths.h"
#include "proto.h"

#define REPLY_TIMEOUT_S 10

/* The reply timeout of connections made from now on: REPLY_TIMEOUT_S,
 * shorter in tests (shmmap__reply_timeout_default). */
static _Atomic unsigned reply_timeout_s = REPLY_TIMEOUT_S;

struct view_node {
	struct view_node *next;
	uint64_t id; /* the handle id that names this view */
	struct map_view v;
};

/* Extra per-attachment state kept out of internal.h. */
struct client_ext {
	_Atomic(struct view_node *) *views; /* [max_maps] */
	struct view_node *all;              /* every view ever made, under sock_mu */
	char path[108];             /* the coordinator's socket, for resuming */
	_Atomic uint32_t rec_free;  /* bit k: the slot's intent record k is free */
	_Atomic uint32_t rec_parked;/* bit k: record k holds a block whose free failed */
	_Atomic uint32_t rec_waiters;/* threads asleep until a record is free (rec_sleep) */
	uint8_t spare_cls[SEG_INTENTS]; /* record k's spare's class + 1, 0 unknown (op_ctx) */
	uint32_t seq;
	uint32_t hello_flags;       /* HELLO_F_* this attachment asked for */
	_Atomic uint64_t grow_quiet_ms; /* no MSG_GROW before this (CLOCK_MONOTONIC ms) */
	struct arr_memo *_Atomic memos; /* every array note made (shmmap__memo_note) */
	shmmap *reg_prev, *reg_next;/* the registry of attachments (reg_mu) */
};

/* ---- error details (shmmap_errdetail) ---- */

static __thread char errdetail[320];

__attribute__((format(printf, 1, 2))) static void set_detail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errdetail, sizeof errdetail, fmt, ap);
	va_end(ap);
}

SHMMAP_EXPORT const char *shmmap_errdetail(void)
{
	return errdetail;
}

/* The coordinator's reason for an ERROR reply, kept for shmmap_errdetail()
 * (none: the code says it all). */
static void detail_from_reply(const struct proto_msg *rep)
{
	if (rep->u.error.why[0])
		set_detail("%s", rep->u.error.why);
	else
		errdetail[0] = '\0';
}

static struct client_ext *ext(shmmap *sm)
{
	return sm->ext;
}

static int connect_to(const char *path);
static int connect_error(const char *path, int rc);

/* A coordinator that took the connection but does not answer on it:
 * stopped (SIGSTOP, a debugger) or overloaded.  The wait is the socket's
 * (REPLY_TIMEOUT_S, or what shmmap__reply_timeout set). */
static int timeout_error(const char *path, int sock)
{
	struct timeval tv = {0};
	socklen_t n = sizeof tv;
	(void)getsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, &n);
	set_detail("the coordinator at %s did not answer within %lld s (is it stopped, or "
		   "overloaded?)", path, (long long)tv.tv_sec);
	return -ETIMEDOUT;
}

/*
 * The coordinator went away (restarted): connect again and ask to keep
 * this attachment's slot (RESUME).  The restarted coordinator adopted the
 * segment and our slot with it; if it created a new segment instead, or
 * does not know the slot, this attachment is stale.  Under sock_mu.  A
 * failure sets the detail: why there is no coordinator to resume with.
 */
static int resume(shmmap *sm)
{
	int s = connect_to(ext(sm)->path);
	if (s < 0)
		return connect_error(ext(sm)->path, s);
	struct proto_msg m = {.type = MSG_RESUME, .seq = ++ext(sm)->seq};
	m.u.resume.pid = (uint32_t)getpid();
	m.u.resume.slot = sm->slot;
	m.u.resume.slot_gen = sm->slot_gen;
	int fd = -1, rc = shmmap__proto_send(s, &m, -1);
	if (rc == 0)
		rc = shmmap__proto_recv(s, &m, &fd);
	if (rc == -EAGAIN)
		rc = timeout_error(ext(sm)->path, s);
	if (rc == 0 && m.type == MSG_ERROR) {
		rc = m.u.error.err;
		detail_from_reply(&m);
	} else if (rc == 0 && (m.type != MSG_WELCOME || m.u.welcome.slot != sm->slot ||
			       m.u.welcome.size != sm->geom.max_size)) {
		rc = -ESTALE;
	}
	if (fd >= 0)
		close(fd); /* the same segment, mapped already */
	if (rc < 0) {
		close(s);
		if (rc == -ESTALE) {
			set_detail("the coordinator at %s was restarted with a new segment: this "
				   "attachment is stale (detach and attach again)", ext(sm)->path);
			return -SHMMAP_EDETACHED;
		}
		if (!errdetail[0])
			set_detail("the coordinator at %s: %s", ext(sm)->path, shmmap_strerror(rc));
		return rc;
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
		rc = timeout_error(ext(sm)->path, sm->sock);
	if (rc == 0 && rep->seq != q.seq)
		rc = -EPROTO;
	return rc;
}

static int reattach_locked(shmmap *sm);

int shmmap__request(shmmap *sm, const struct proto_msg *req, struct proto_msg *rep)
{
	errdetail[0] = '\0';
	/* A wait on the coordinator (a stopped one: up to REPLY_TIMEOUT_S),
	 * and maybe on another thread's request: the wait hook first, as for
	 * a lock (a put that asks for growth runs with a binding's GIL). */
	shmmap__wait_hook_run();
	pthread_mutex_lock(&sm->sock_mu);
	int rc = 0;
	if (atomic_load_explicit(&sm->forked, memory_order_acquire))
		rc = reattach_locked(sm);
	if (rc == 0) {
		rc = round_trip(sm, req, rep);
		/* The coordinator restarted: resume, then ask again (every request
		 * is idempotent: open, drop by name, stats, repair). */
		if (conn_lost(rc)) {
			int r2 = resume(sm);
			if (r2 == 0) {
				rc = round_trip(sm, req, rep);
			} else if (r2 == -SHMMAP_EDETACHED) {
				rc = r2;
			} else { /* resume's detail says why (no socket there, say) */
				char why[sizeof errdetail];
				memcpy(why, errdetail, sizeof why);
				set_detail("the connection to the coordinator was lost, and "
					   "reconnecting failed: %s", why);
			}
		}
		if (rc == 0 && rep->type == MSG_ERROR) {
			rc = rep->u.error.err;
			detail_from_reply(rep);
		}
	}
	pthread_mutex_unlock(&sm->sock_mu);
	return rc;
}

int shmmap__reply_timeout(shmmap *sm, unsigned seconds)
{
	struct timeval tv = {.tv_sec = (time_t)seconds};
	pthread_mutex_lock(&sm->sock_mu);
	int rc = setsockopt(sm->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ? -errno : 0;
	pthread_mutex_unlock(&sm->sock_mu);
	return rc;
}

void shmmap__reply_timeout_default(unsigned seconds)
{
	atomic_store_explicit(&reply_timeout_s, seconds, memory_order_relaxed);
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
	struct timeval tv = {.tv_sec = (time_t)atomic_load_explicit(&reply_timeout_s,
								   memory_order_relaxed)};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return s;
}

/* A failed connect to path, said the way a user can act on. */
static int connect_error(const char *path, int rc)
{
	switch (rc) {
	case -ENOENT:
		set_detail("no coordinator at %s: there is no socket there (is shmmapd running, "
			   "and is this its [server] socket? $SHMMAP_SOCKET names another path)",
			   path);
		return -ECONNREFUSED;
	case -ECONNREFUSED:
		set_detail("no coordinator at %s: nothing listens on that socket (shmmapd is not "
			   "running, or was killed)", path);
		return rc;
	case -EACCES:
		set_detail("cannot connect to %s: permission denied (the socket's mode, "
			   "[server] socket_mode, or its directory)", path);
		return rc;
	case -EINVAL:
		set_detail("socket path '%.200s' is empty or too long", path);
		return rc;
	default:
		set_detail("cannot connect to %s: %s", path, strerror(-rc));
		return rc;
	}
}

/* Connect to path and say HELLO with flags: on success *sockp is the
 * connection, *w the WELCOME and *fdp the segment's descriptor. */
static int hello(const char *path, uint32_t flags, int *sockp, struct proto_msg *w, int *fdp)
{
	int sock = connect_to(path);
	if (sock < 0)
		return connect_error(path, sock);
	struct proto_msg m = {.type = MSG_HELLO, .seq = 1};
	m.u.hello.pid = (uint32_t)getpid();
	m.u.hello.flags = flags;
	int fd = -1, rc = shmmap__proto_send(sock, &m, -1);
	/* Even if the send failed, a refusal may be waiting to be read. */
	int rc2 = shmmap__proto_recv(sock, &m, &fd);
	if (rc == 0 || rc2 == 0)
		rc = rc2;
	if (rc == -EAGAIN)
		rc = timeout_error(path, sock);
	if (rc == 0 && m.type == MSG_ERROR) {
		rc = m.u.error.err;
		detail_from_reply(&m);
	} else if (rc == 0 && (m.type != MSG_WELCOME || fd < 0)) {
		rc = -EPROTO;
	}
	if (rc < 0) {
		if (!errdetail[0])
			set_detail("%s: the coordinator did not welcome this process: %s", path,
				   shmmap_strerror(rc));
		if (fd >= 0)
			close(fd);
		close(sock);
		return rc;
	}
	*sockp = sock;
	*w = m;
	*fdp = fd;
	return 0;
}

/* ---- the registry of attachments, and fork ---- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static shmmap *reg_head;        /* every attachment of this process (reg_mu) */
static uint16_t reg_tag;        /* the last tag handed out (reg_mu) */
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

/* Before fork(): no attachment may be mid-request in the child, so hold
 * every sock_mu across the fork (order: reg_mu, then sock_mu). */
static void fork_prepare(void)
{
	pthread_mutex_lock(&reg_mu);
	for (shmmap *sm = reg_head; sm; sm = ext(sm)->reg_next)
		pthread_mutex_lock(&sm->sock_mu);
}

static void fork_parent(void)
{
	for (shmmap *sm = reg_head; sm; sm = ext(sm)->reg_next)
		pthread_mutex_unlock(&sm->sock_mu);
	pthread_mutex_unlock(&reg_mu);
}

/* In the child (one thread, async-signal-safe calls only): let go of the
 * parent's connection and mark every attachment for re-attaching. */
static void fork_child(void)
{
	for (shmmap *sm = reg_head; sm; sm = ext(sm)->reg_next) {
		struct client_ext *x = ext(sm);
		if (sm->sock >= 0)
			close(sm->sock);
		sm->sock = -1;
		/* The parent's records: the child's slot will have its own. */
		atomic_store_explicit(&x->rec_free, 0, memory_order_relaxed);
		atomic_store_explicit(&x->rec_parked, 0, memory_order_relaxed);
		atomic_store_explicit(&x->rec_waiters, 0, memory_order_relaxed);
		atomic_store_explicit(&sm->forked, 1, memory_order_release);
		pthread_mutex_init(&sm->sock_mu, NULL);
	}
	pthread_mutex_init(&reg_mu, NULL);
}

static void reg_init(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* 0, or -EMFILE if every tag is taken (65535 attachments in one process). */
static int reg_add(shmmap *sm)
{
	pthread_once(&reg_once, reg_init);
	pthread_mutex_lock(&reg_mu);
	/* A tag per attachment of the process (never 0, skipping live ones),
	 * so a handle is never taken for another attachment's. */
	bool used = true;
	for (uint32_t tries = 0; used && tries < UINT16_MAX; tries++) {
		if (++reg_tag == 0)
			reg_tag = 1;
		used = false;
		for (shmmap *o = reg_head; o && !used; o = ext(o)->reg_next)
			used = o->tag == reg_tag;
	}
	if (used) {
		pthread_mutex_unlock(&reg_mu);
		return -EMFILE;
	}
	sm->tag = reg_tag;
	ext(sm)->reg_next = reg_head;
	if (reg_head)
		ext(reg_head)->reg_prev = sm;
	reg_head = sm;
	pthread_mutex_unlock(&reg_mu);
	return 0;
}

static void reg_del(shmmap *sm)
{
	struct client_ext *x = ext(sm);
	pthread_mutex_lock(&reg_mu);
	if (x->reg_prev)
		ext(x->reg_prev)->reg_next = x->reg_next;
	else
		reg_head = x->reg_next;
	if (x->reg_next)
		ext(x->reg_next)->reg_prev = x->reg_prev;
	pthread_mutex_unlock(&reg_mu);
}

/* This attachment's counters row of map idx (map_view's ctr), or NULL
 * (read-only). */
static struct seg_counters *ctr_row(const shmmap *sm, uint32_t idx)
{
	return sm->ctr ? sm->ctr + idx : NULL;
}

/* The client slot the coordinator gave (slot < max_clients, checked). */
static void set_slot(shmmap *sm, uint32_t slot, uint64_t gen)
{
	sm->slot = slot;
	sm->slot_gen = gen;
	sm->own = seg_slot(&sm->seg, &sm->geom, slot);
	sm->ctr = sm->seg.rdonly ? NULL : seg_ctr(&sm->seg, &sm->geom, slot, 0);
}

/*
 * In a forked child, under sock_mu: attach again as this process (a slot
 * of its own), keeping the inherited mapping, views and handles.  The
 * coordinator must hand over the very segment we have mapped; otherwise
 * (it was restarted with a new one) the attachment is stale.
 */
static int reattach_locked(shmmap *sm)
{
	struct client_ext *x = ext(sm);
	if (!atomic_load_explicit(&sm->forked, memory_order_relaxed))
		return 0; /* another thread of the child did it */
	if (atomic_load_explicit(&sm->forked, memory_order_relaxed) == ATTACH_ORPHANED) {
		set_detail("the segment this attachment maps was removed (/dev/shm/NAME deleted, "
			   "or replaced by shmmapd --reinit): nothing written here would be seen; "
			   "detach and attach again");
		return -SHMMAP_EDETACHED;
	}
	int sock, fd;
	struct proto_msg w;
	int rc = hello(x->path, x->hello_flags | (sm->seg.rdonly ? HELLO_F_RDONLY : 0), &sock,
		       &w, &fd);
	if (rc < 0) {
		size_t n = strlen(errdetail);
		snprintf(errdetail + n, sizeof errdetail - n,
			 " (re-attaching an attachment inherited across fork)");
		return rc;
	}
	struct stat a, b;
	bool same = fstat(fd, &a) == 0 && fstat(sm->seg.fd, &b) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino && w.u.welcome.size == sm->geom.max_size &&
		    w.u.welcome.slot < sm->geom.max_clients;
	close(fd);
	if (!same) {
		close(sock); /* the coordinator recovers the slot it just gave */
		set_detail("re-attaching after fork: the coordinator at %s serves another segment "
			   "now (restarted with --reinit): detach and attach again", x->path);
		return -SHMMAP_EDETACHED;
	}
	if (w.u.welcome.flags & HELLO_F_RDONLY)
		sm->seg.rdonly = true; /* imposed on this process: writes give -EPERM */
	sm->sock = sock;
	set_slot(sm, w.u.welcome.slot, w.u.welcome.slot_gen);
	for (struct view_node *n = x->all; n; n = n->next) /* (under sock_mu) */
		n->v.ctr = ctr_row(sm, n->v.idx); /* the child's own row */
	x->seq = 1;
	atomic_store_explicit(&x->rec_parked, 0, memory_order_relaxed);
	atomic_store_explicit(&x->rec_free, (uint32_t)((1ull << SEG_INTENTS) - 1),
			      memory_order_relaxed);
	memset(x->spare_cls, 0, sizeof x->spare_cls); /* a new slot: its records are clear */
	/* Publish: a thread that sees forked == 0 sees the slot above. */
	atomic_store_explicit(&sm->forked, 0, memory_order_release);
	return 0;
}

static int reattach(shmmap *sm)
{
	errdetail[0] = '\0';
	/* A forked child's first call: a round trip to the coordinator (as in
	 * shmmap__request, the wait hook first). */
	shmmap__wait_hook_run();
	pthread_mutex_lock(&sm->sock_mu);
	int rc = reattach_locked(sm);
	pthread_mutex_unlock(&sm->sock_mu);
	return rc;
}

/*
 * Is the segment still the one under its name?  A segment removed (rm
 * /dev/shm/NAME to start from empty, or shmmapd --reinit) stays mapped
 * here, and writes to it succeed where nobody will ever see them: a
 * user's pool lost its increments without an error.  Every
 * ORPHAN_EVERY-th write of an attachment looks (one fstat: its link count
 * is 0 once removed), and so does every GET_LOOK_EVERY-th hit of a map's
 * lock-free get (a read-mostly worker served the old values forever:
 * getfast.h counts, shmmap_get looks); an orphaned attachment fails every call from then on
 * with -SHMMAP_EDETACHED (forked = ATTACH_ORPHANED).  A fork handler's
 * mark (1) may overwrite it in a child: the child's re-attach then finds
 * the coordinator serving another segment and fails the same way.
 */
#define ORPHAN_EVERY 256u
static inline bool orphan_due(shmmap *sm)
{
	uint32_t n = __atomic_load_n(&sm->writes, __ATOMIC_RELAXED) + 1;
	__atomic_store_n(&sm->writes, n, __ATOMIC_RELAXED);
	return (n & (ORPHAN_EVERY - 1)) == 0;
}

static __attribute__((noinline)) bool orphaned(shmmap *sm)
{
	struct stat st;
	if (fstat(sm->seg.fd, &st) < 0 || st.st_nlink != 0)
		return false;
	uint32_t z = 0;
	atomic_compare_exchange_strong(&sm->forked, &z, ATTACH_ORPHANED);
	return true;
}

/* Every call starts here: a forked child re-attaches first. */
static inline int fork_check(shmmap *sm)
{
	if (__builtin_expect(atomic_load_explicit(&sm->forked, memory_order_acquire) != 0, 0))
		return reattach(sm);
	return 0;
}

static int attach(const char *socket_path, uint32_t admin, shmmap **out);

/*
 * The allocator found no room (struct seg's grow): ask the coordinator to
 * grow the segment (MSG_GROW), unless this attachment is read-only.  seen
 * lets the coordinator answer at once when another process's request grew
 * it already.  No segment lock is held here.
 */
#define GROW_QUIET_MS 1000u
#define GROW_SLOW_MS 500u
static int ask_grow(const struct seg *s, uint32_t seen, uint32_t need)
{
	shmmap *sm = (shmmap *)((char *)s - offsetof(struct shmmap, seg));
	if (sm->seg.rdonly)
		return -EPERM;
	/* After a coordinator that was slow to fail (stopped: the request
	 * timed out), the evicting retries of a put (and the puts after it)
	 * do not ask again for a while: the data path never waits on the
	 * socket over and over.  A quick refusal is asked again next time. */
	if (shmmap__mono_ms() < atomic_load_explicit(&ext(sm)->grow_quiet_ms, memory_order_relaxed))
		return -ENOSPC;
	struct proto_msg req = {.type = MSG_GROW}, rep;
	req.u.grow.seen = seen;
	req.u.grow.need = need;
	uint64_t t0 = shmmap__mono_ms();
	int rc = shmmap__request(sm, &req, &rep);
	if (rc == 0 && rep.type != MSG_OK)
		rc = -EPROTO;
	if (rc < 0 && shmmap__mono_ms() - t0 >= GROW_SLOW_MS)
		atomic_store_explicit(&ext(sm)->grow_quiet_ms, shmmap__mono_ms() + GROW_QUIET_MS,
				      memory_order_relaxed);
	return rc;
}

/* A data call's result: a failure that comes from a growth this process
 * cannot follow (the header names a size it cannot map) says so. */
static int op_result_slow(shmmap *sm, int rc)
{
	/* A miss, a present key, a lost cas or a small buffer is an answer,
	 * not a failure that growth could explain: no look at the segment. */
	if (rc >= 0 || rc == -EINVAL || rc == -ENOENT || rc == -EEXIST || rc == -ECANCELED ||
	    rc == -ENOBUFS)
		return rc;
	if (shmmap__seg_sync(&sm->seg) < 0) {
		set_detail("the segment grew to %llu pages, which this process cannot map (its "
			   "reservation is %zu bytes at %p): nothing was changed",
			   (unsigned long long)atomic_load(&seg_hdr(&sm->seg)->npages_live),
			   sm->seg.reserved, (void *)sm->seg.base);
		return -SHMMAP_ESEGSIZE;
	}
	return rc;
}

/* The result of a data call: a failure that growth of the segment could
 * explain is looked into (op_result_slow); success and a miss are not. */
static inline int op_result(shmmap *sm, int rc)
{
	if (__builtin_expect(rc >= 0 || rc == -ENOENT, 1))
		return rc;
	return op_result_slow(sm, rc);
}

SHMMAP_EXPORT int shmmap_attach(const char *socket_path, shmmap **out)
{
	return attach(socket_path, 0, out);
}

int shmmap__attach_admin(const char *socket_path, shmmap **out)
{
	return attach(socket_path, HELLO_F_ADMIN, out);
}

static int attach(const char *socket_path, uint32_t admin, shmmap **out)
{
	if (!out)
		return -EINVAL;
	errdetail[0] = '\0';
	const char *path = socket_path;
	char def[sizeof ((struct sockaddr_un *)0)->sun_path];
	if (!path || !*path)
		path = getenv("SHMMAP_SOCKET");
	if (!path || !*path) {
		int rc = shmmap__default_socket(def, sizeof def, false);
		if (rc < 0) {
			set_detail("no socket given, $SHMMAP_SOCKET unset, and no default socket for "
				   "this user (%s)", shmmap_strerror(rc));
			return rc;
		}
		path = def;
	}
	uint32_t flags = 0;
	const char *ro = getenv("SHMMAP_READONLY");
	if (ro && *ro == '1')
		flags |= HELLO_F_RDONLY;
	flags |= admin;
	int sock, fd = -1;
	struct proto_msg m;
	int rc = hello(path, flags, &sock, &m, &fd);
	if (rc < 0)
		return rc;

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
	x->hello_flags = flags & HELLO_F_ADMIN;
	snprintf(x->path, sizeof x->path, "%s", path);
	x->rec_free = (uint32_t)((1ull << SEG_INTENTS) - 1);
	bool rdonly = (m.u.welcome.flags & HELLO_F_RDONLY) != 0;
	rc = shmmap__seg_map_fd(fd, m.u.welcome.base, rdonly, &sm->seg);
	if (rc < 0)
		goto fail_sm;
	fd = -1; /* owned by sm->seg now */
	rc = shmmap__seg_validate(&sm->seg, &sm->geom);
	if (rc < 0) {
		set_detail("%s: the segment the coordinator handed over does not validate: %s",
			   path, shmmap_strerror(rc));
		goto fail_map;
	}
	if (m.u.welcome.slot >= sm->geom.max_clients) {
		rc = -EPROTO;
		goto fail_map;
	}
	sm->seg.geom = &sm->geom; /* follows the segment's growth from now on */
	sm->seg.grow = ask_grow;
	set_slot(sm, m.u.welcome.slot, m.u.welcome.slot_gen);
	x->views = calloc(sm->geom.max_maps, sizeof *x->views);
	if (!x->views) {
		rc = -ENOMEM;
		goto fail_map;
	}
	pthread_mutex_init(&sm->sock_mu, NULL);
	rc = reg_add(sm);
	if (rc < 0) {
		set_detail("this process has too many attachments (%u)", UINT16_MAX);
		pthread_mutex_destroy(&sm->sock_mu);
		free(x->views);
		goto fail_map;
	}
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

/* How long detach waits for an allocator lock that a live process holds
 * (stopped, perhaps) before it leaves a block to the coordinator. */
#define DETACH_LOCK_WAIT_MS 100u

/*
 * Before BYE: give back what the slot's intent records still hold, so
 * that a clean detach leaves the coordinator nothing to recover (which it
 * would count and log as a dead client's): each record's spare (the block
 * kept for the next write) and the blocks of parked records (a free that
 * met an allocator lock awaiting repair).  Detach is the last call on the
 * attachment (shmmap.h), so no write is under way; even so only the
 * records that are free or parked are taken (rec_free and rec_parked
 * emptied at once), never one a write holds.  Each block is freed by the
 * allocator with its record, which is cleared under the class lock: it is
 * freed once, also if this process dies meanwhile (recovery frees what a
 * record still names).  A block whose allocator lock is not had in time
 * is left in its record: the coordinator frees it after BYE.  Not in a
 * forked child that never re-attached (the records are the parent's), nor
 * read-only (the mapping cannot be written), nor once the coordinator has
 * recovered the slot (the records may be another client's).
 */
static void release_records(shmmap *sm)
{
	if (sm->seg.rdonly || atomic_load_explicit(&sm->forked, memory_order_acquire) ||
	    sm->sock < 0)
		return;
	struct seg_slot *sl = sm->own;
	if (atomic_load(&sl->gen) != sm->slot_gen || atomic_load(&sl->state) != SLOT_LIVE)
		return;
	struct client_ext *x = ext(sm);
	uint32_t mine = atomic_exchange(&x->rec_free, 0) | atomic_exchange(&x->rec_parked, 0);
	struct lock_ctx lk = {.s = &sm->seg, .g = &sm->geom, .owner = sm->slot + 1,
			      .wait_ms = DETACH_LOCK_WAIT_MS};
	for (uint32_t k = 0; k < SEG_INTENTS; k++) {
		if (!(mine & (1u << k)))
			continue;
		struct seg_intent *in = &sl->intent[k];
		/* A spare that a or b names too is freed through them (as
		 * recovery does; no move is under way between calls). */
		uint64_t sp = atomic_load(&in->spare);
		if (sp && (sp == atomic_load(&in->a) || sp == atomic_load(&in->b)))
			atomic_compare_exchange_strong(&in->spare, &sp, 0);
		_Atomic uint64_t *recs[3] = {&in->b, &in->a, &in->spare};
		for (int j = 0; j < 3; j++) {
			uint64_t off = atomic_load(recs[j]);
			if (off)
				(void)shmmap__free(&sm->seg, &sm->geom, &lk, off, recs[j]);
		}
	}
}

SHMMAP_EXPORT void shmmap_detach(shmmap *sm)
{
	if (!sm)
		return;
	reg_del(sm);
	release_records(sm);
	/* In a child that never re-attached, sock is -1: the parent's
	 * connection was let go at the fork, and the parent stays attached. */
	if (sm->sock >= 0) {
		struct proto_msg m = {.type = MSG_BYE};
		shmmap__proto_send(sm->sock, &m, -1); /* best effort: EOF says the same */
		close(sm->sock);
	}
	shmmap__seg_unmap(&sm->seg);
	struct client_ext *x = ext(sm);
	for (struct view_node *n = x->all, *next; n; n = next) {
		next = n->next;
		free(n);
	}
	for (struct arr_memo *m = atomic_load(&x->memos), *next; m; m = next) {
		next = m->next;
		free(m);
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
	errdetail[0] = '\0';
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
		n->id = shmmap__handle_id(sm->tag, n->v.gen, n->v.idx);
		n->v.memo_list = &ext(sm)->memos; /* its fast paths note arrays */
		n->v.ctr = ctr_row(sm, n->v.idx);
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

/*
 * The fast paths (getfast.h's bucket_word) found the array of view v's map
 * under table word w at aoff, mask + 1 buckets, and the bucket they
 * wanted in bounds: note the array for the next ones (struct arr_memo), if
 * the view takes notes (a client's: memo_list, its attachment's list) and
 * every bucket of the array is in the heap and aligned (the mapped length
 * len only grows).  Lock-free: the note goes on the list by a CAS and into
 * the view by a release store; two threads that note the same word at
 * once have merely noted it twice.
 */
__attribute__((noinline, cold)) void shmmap__memo_note(const struct map_view *v, uint64_t w,
						     uint64_t aoff, uint32_t mask, size_t len)
{
	struct map_view *mv = (struct map_view *)v;
	uint64_t n = (uint64_t)mask + 1;
	if (!v->memo_list || (w & TBL_GROWING) || (n & mask) || (aoff & 7) || aoff < v->heap_off ||
	    aoff > len || n > (len - aoff) / 8)
		return;
	/* Not again for a word noted already (by another thread meanwhile),
	 * nor over the note of a newer word (a thread that read the word
	 * before a resize), nor past MEMO_MAX: so a view's count is of words
	 * its map really went through, and once at its cap a call costs no
	 * write to the view's line. */
	const struct arr_memo *cur = atomic_load_explicit(&v->memo, memory_order_acquire);
	if (cur->w == w || (cur->w >> 32) > (w >> 32) || /* (shmmap__memo_none: generation 0) */
	    atomic_load_explicit(&v->memos, memory_order_relaxed) >= MEMO_MAX ||
	    atomic_fetch_add_explicit(&mv->memos, 1, memory_order_relaxed) >= MEMO_MAX)
		return;
	struct arr_memo *m = malloc(sizeof *m);
	if (!m)
		return;
	*m = (struct arr_memo){.w = w, .aoff = aoff, .mask = mask};
	m->next = atomic_load_explicit(v->memo_list, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(v->memo_list, &m->next, m,
						      memory_order_release, memory_order_relaxed))
		;
	/* Into the view unless another thread noted this word or a newer
	 * one meanwhile (then m stays on the list, freed at detach). */
	while (!atomic_compare_exchange_weak_explicit(&mv->memo, &cur, m, memory_order_release,
						      memory_order_acquire))
		if (cur->w == w || (cur->w >> 32) > (w >> 32))
			return;
}

/* Why handle m does not name view n (NULL: none at its index): -ESTALE
 * for a map dropped (and maybe re-created) since, else -EBADF. */
static __attribute__((noinline, cold)) int resolve_error(const shmmap *sm, shmmap_map m,
							   const struct view_node *n)
{
	uint32_t gen = (uint32_t)(m.id >> 16);
	if (!n || (uint16_t)(m.id >> 48) != sm->tag)
		return -EBADF;
	return (int32_t)(gen - n->v.gen) < 0 ? -ESTALE : -EBADF;
}

/* A handle's view, if the handle is this attachment's and its map is still
 * the one it named: a few compares on every data call (the view keeps the
 * whole id: tag, generation and index compare at once). */
static inline __attribute__((always_inline)) int resolve(shmmap *sm, shmmap_map m,
							   const struct map_view **v)
{
	uint32_t idx = (uint32_t)(m.id & 0xffff);
	if (idx >= sm->geom.max_maps)
		return -EBADF;
	struct view_node *n =
		atomic_load_explicit(&ext(sm)->views[idx], memory_order_acquire);
	if (!n || n->id != m.id) {
		int rc = resolve_error(sm, m, n);
		if (rc >= 0)
			__builtin_unreachable(); /* (tells the compiler *v is set on 0) */
		return rc;
	}
	if (!view_live(&n->v)) /* (its dir: seg_dir(idx), computed at open) */
		return -ESTALE;
	*v = &n->v;
	return 0;
}

int shmmap__resolve(shmmap *sm, shmmap_map m, const struct map_view **v)
{
	return sm ? resolve(sm, m, v) : -EINVAL;
}

/* A thread past the SEG_INTENTS writing at once sleeps until a record is
 * released (rec_free's futex; at most REC_SLEEP_MS, then it looks again):
 * a record's write may wait long (for a stopped process's stripe lock),
 * and a waiter that spun meanwhile burned a CPU.  Dekker with the
 * release: the waiter counts itself, then the kernel checks rec_free is
 * still 0; the releaser sets its bit, then looks at the count. */
#define REC_SLEEP_MS 100
static __attribute__((noinline, cold)) void rec_sleep(struct client_ext *x)
{
	atomic_fetch_add(&x->rec_waiters, 1);
	struct timespec ts = {0, REC_SLEEP_MS * 1000000L};
	syscall(SYS_futex, (uint32_t *)&x->rec_free, FUTEX_WAIT_PRIVATE, 0u, &ts, NULL, 0);
	atomic_fetch_sub(&x->rec_waiters, 1);
}

static __attribute__((noinline, cold)) void rec_wake(struct client_ext *x)
{
	syscall(SYS_futex, (uint32_t *)&x->rec_free, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* After a record went back to rec_free (seq_cst: see rec_sleep). */
static inline __attribute__((always_inline)) void rec_freed(struct client_ext *x)
{
	if (__builtin_expect(atomic_load(&x->rec_waiters) != 0, 0))
		rec_wake(x);
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
		struct seg_intent *in = &sm->own->intent[k];
		uint64_t a = atomic_load(&in->a), b = atomic_load(&in->b);
		if (b)
			shmmap__free(base->s, base->g, &base->lk, b, &in->b);
		if (a)
			shmmap__free(base->s, base->g, &base->lk, a, &in->a);
		if (atomic_load(&in->a) || atomic_load(&in->b)) {
			atomic_fetch_or(&x->rec_parked, 1u << k);
		} else {
			atomic_fetch_or(&x->rec_free, 1u << k);
			rec_freed(x);
		}
	}
}

/* Record k, just taken from rec_free, is o's. */
static inline __attribute__((always_inline)) void rec_take(shmmap *sm, struct op_ctx *o,
							     uint32_t k)
{
	o->intent = &sm->own->intent[k];
	o->spare_cls = &ext(sm)->spare_cls[k];
	o->undo = k < SEG_UNDOS ? &sm->own->undo[k] : NULL;
}

/* Take a free record of m (rec_free's value as read) for o; false if
 * none is free or another thread took it first. */
static inline __attribute__((always_inline)) bool rec_try(shmmap *sm, struct op_ctx *o,
							   uint32_t m)
{
	if (!m)
		return false;
	uint32_t k = (uint32_t)__builtin_ctz(m);
	if (!atomic_compare_exchange_strong_explicit(&ext(sm)->rec_free, &m, m & ~(1u << k),
						     memory_order_acquire, memory_order_relaxed))
		return false;
	rec_take(sm, o, k);
	return true;
}

/* rec_claim's wait: every record taken or contended.  More writing
 * threads than records wait for one (a write is short, but may wait for a
 * stopped process: then asleep), unless they are all parked on a broken
 * allocator; a record parked meanwhile may be freed here. */
static __attribute__((noinline, cold)) int rec_claim_wait(shmmap *sm, struct op_ctx *o)
{
	struct client_ext *x = ext(sm);
	bool hooked = false;
	for (int spins = 0;; spins++) {
		uint32_t m = atomic_load_explicit(&x->rec_free, memory_order_relaxed);
		if (rec_try(sm, o, m))
			return 0;
		if (m)
			continue; /* (taken meanwhile: look again) */
		if (atomic_load(&x->rec_parked) == (1u << SEG_INTENTS) - 1)
			return -EAGAIN;
		if (spins > 64) {
			if (atomic_load_explicit(&x->rec_parked, memory_order_relaxed))
				unpark(sm, o);
			if (!hooked) /* (once, as a lock wait does: the Python
					binding lets its GIL go) */
				shmmap__wait_hook_run();
			hooked = true;
			rec_sleep(x); /* (returns at once if one is free now) */
		}
	}
}

/* A free record for o's write: one try inline, the rest in rec_claim_wait. */
static inline __attribute__((always_inline)) int rec_claim(shmmap *sm, struct op_ctx *o)
{
	struct client_ext *x = ext(sm);
	if (atomic_load_explicit(&x->rec_parked, memory_order_relaxed))
		unpark(sm, o);
	if (__builtin_expect(rec_try(sm, o, atomic_load_explicit(&x->rec_free,
								memory_order_relaxed)), 1))
		return 0;
	return rec_claim_wait(sm, o);
}

static inline __attribute__((always_inline)) void rec_release(shmmap *sm, struct op_ctx *o)
{
	struct client_ext *x = ext(sm);
	struct seg_intent *in = o->intent;
	uint32_t k = (uint32_t)(in - sm->own->intent);
	if (atomic_load_explicit(&in->a, memory_order_relaxed) ||
	    atomic_load_explicit(&in->b, memory_order_relaxed)) {
		atomic_fetch_or_explicit(&x->rec_parked, 1u << k, memory_order_release);
	} else {
		atomic_fetch_or(&x->rec_free, 1u << k);
		rec_freed(x);
	}
}

/* The context of one data call on map view v, without an intent record.
 * Every field is set (one by one: a compound literal cost a put 13
 * instructions of zeroing).  The lock context's wait_ms, once left to the
 * stack, made a write give up on a live lock holder with -EBUSY after
 * whatever time the stack said: 0, a client waits as long as the holder
 * lives (check_api's writes_wait_for_a_live_lock_holder). */
static void op_fill(shmmap *sm, const struct map_view *v, struct op_ctx *o)
{
	o->s = &sm->seg;
	o->g = &sm->geom;
	o->lk.s = &sm->seg;
	o->lk.g = &sm->geom;
	o->lk.owner = sm->slot + 1;
	o->lk.wait_ms = 0;
	o->ctr = v->ctr;
	o->intent = NULL;
	o->spare_cls = NULL;
	o->undo = NULL;
}
_Static_assert(sizeof(struct op_ctx) == 8 + 8 + sizeof(struct lock_ctx) + 8 + 8 + 8 + 8 &&
		       sizeof(struct lock_ctx) == 8 + 8 + 4 + 4,
	       "op_fill sets every field: a field added must be set there too");

/* Resolve the handle and build the context of one data call (a write
 * claims an intent record: op_end releases it).  Inlined, with the claim
 * and the release, into every call: their own frames cost a put about 40
 * instructions (bench's callgrind). */
static inline __attribute__((always_inline)) int
op_begin(shmmap *sm, shmmap_map m, const struct map_view **v, struct op_ctx *o, bool write)
{
	if (!sm)
		return -EINVAL;
	int rc = fork_check(sm);
	if (rc < 0)
		return rc;
	rc = resolve(sm, m, v);
	if (rc < 0)
		return rc;
	op_fill(sm, *v, o);
	if (write && !sm->seg.rdonly) {
		/* Still our slot?  If the coordinator recovered it (it took this
		 * process for dead), writing under its identity would corrupt
		 * whoever has it now. */
		const struct seg_slot *sl = sm->own;
		if (atomic_load_explicit(&sl->gen, memory_order_relaxed) != sm->slot_gen ||
		    atomic_load_explicit(&sl->state, memory_order_relaxed) != SLOT_LIVE) {
			set_detail("the coordinator recovered this attachment's client slot %u (it "
				   "took the process for dead): detach and attach again", sm->slot);
			return -SHMMAP_EDETACHED;
		}
		if (__builtin_expect(orphan_due(sm), 0) && orphaned(sm))
			return reattach(sm);
		return rec_claim(sm, o);
	}
	return 0;
}

static inline __attribute__((always_inline)) void op_end(shmmap *sm, struct op_ctx *o)
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
	/* A present key's new value first, in place (putfast.h), with the
	 * undo record of the write's intent record; what that cannot do, and
	 * every other write, goes the general way. */
	uint64_t h = 0;
	struct seg_undo *u = o.undo;
	if (flags || ttl_s || !u ||
	    (rc = put_fast(&o, u, v, key, klen, val, vlen, &h)) == PUT_SLOW)
		rc = h ? shmmap__tbl_put_hashed(&o, v, h, key, klen, val, vlen, ttl_s, flags)
		       : shmmap__tbl_put(&o, v, key, klen, val, vlen, ttl_s, flags);
	op_end(sm, &o);
	return op_result(sm, rc);
}

/* The general get: what get_fast could not tell, on the view shmmap_get
 * resolved (out of line, so that the fast path keeps its registers). */
static __attribute__((noinline)) int get_slow(shmmap *sm, const struct map_view *v,
					      const void *key, size_t klen, void *buf, size_t cap,
					      size_t *vlen)
{
	struct op_ctx o;
	op_fill(sm, v, &o);
	return op_result(sm, shmmap__tbl_get(&o, v, key, klen, buf, cap, vlen));
}

SHMMAP_EXPORT int shmmap_get(shmmap *sm, shmmap_map m, const void *key, size_t klen,
			     void *buf, size_t cap, size_t *vlen)
{
	const struct map_view *v;
	if (!sm || !key || (!buf && cap))
		return -EINVAL;
	/* The handle, then one lock-free try (getfast.h); what that cannot
	 * answer goes the general way. */
	int rc = fork_check(sm);
	if (rc < 0 || (rc = resolve(sm, m, &v)) < 0)
		return rc;
	rc = get_fast(&sm->seg, &sm->geom, v, v->ctr, key, klen, buf, cap, vlen);
	if (__builtin_expect(rc <= 0, 1))
		return rc;
	if (rc == GET_LOOK) /* every GET_LOOK_EVERY-th hit: is the segment still ours? */
		return orphaned(sm) ? reattach(sm) : 0;
	return get_slow(sm, v, key, klen, buf, cap, vlen);
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
	return op_result(sm, rc);
}

SHMMAP_EXPORT int shmmap_incr_ttl(shmmap *sm, shmmap_map m, const void *key, size_t klen,
				  int64_t delta, uint32_t ttl_s, int64_t *out)
{
	const struct map_view *v;
	if (!key)
		return -EINVAL;
	struct op_ctx o;
	int rc = op_begin(sm, m, &v, &o, true);
	if (rc < 0)
		return rc;
	rc = shmmap__tbl_incr(&o, v, key, klen, delta, ttl_s, out);
	op_end(sm, &o);
	if (rc == -EINVAL && klen) /* (-EINVAL for no key at all) */
		set_detail("the value under the key is not a decimal integer (an optional '-' "
			   "then 1 to 19 digits): nothing to add to");
	return op_result(sm, rc);
}

SHMMAP_EXPORT int shmmap_incr(shmmap *sm, shmmap_map m, const void *key, size_t klen,
			      int64_t delta, int64_t *out)
{
	return shmmap_incr_ttl(sm, m, key, klen, delta, 0, out);
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
	return op_result(sm, rc);
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
	errdetail[0] = '\0';
	const struct map_view *v;
	int rc = sm ? fork_check(sm) : -EINVAL;
	if (rc == 0)
		rc = shmmap__resolve(sm, m, &v);
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
	errdetail[0] = '\0';
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
	return rc < 0 ? rc : op_result(sm, shmmap__tbl_foreach(&o, v, fn, arg));
}

SHMMAP_EXPORT int shmmap_stats(shmmap *sm, shmmap_map m, struct shmmap_stats *out)
{
	const struct map_view *v;
	if (!out || !sm)
		return -EINVAL;
	int rc = fork_check(sm);
	if (rc < 0 || (rc = resolve(sm, m, &v)) < 0)
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
	/* Dropped (and perhaps re-created) while summing: the sums may mix
	 * two maps' counters. */
	if (!view_live(v))
		return -ESTALE;
	*out = t;
	return 0;
}
