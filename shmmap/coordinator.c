/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * coordinator.c - the coordinator (shmmapd): creates or adopts the segment,
 * serves the attach protocol, assigns client slots, runs its threads, and
 * has maps created and dropped (mapdir.c), snapshots saved and loaded
 * (persist.c) and what a dead client held recovered (recover.c).  It is
 * never on the data path.
 *
 * Threads:
 *   - I/O thread: one epoll loop over the listening socket, every client
 *     connection and a wake-up eventfd.  It alone accepts, reads requests,
 *     assigns and frees slots, writes the map directory, and closes
 *     sessions.  Requests are small and answered at once; sockets are
 *     non-blocking, so one slow client never blocks another.
 *   - Housekeeping thread: every HOUSE_MS it walks the session table under
 *     an RCU read lock: connections that never said HELLO within
 *     HANDSHAKE_MS (at most MAX_PENDING of them are kept at once), and clients whose process is gone (pid + start time
 *     backstop to the socket's EOF), are flagged for the I/O thread, which
 *     closes them.  It also reaps slots adopted from an earlier coordinator
 *     whose process died meanwhile.
 *   - Growth thread (grow_main, see grow.c): starts, drives and finishes
 *     the resizes of maps that outgrow their buckets.  It sleeps on the
 *     header's grow_wake futex (a writer that sees its stripe over the load
 *     factor wakes it) or GROW_IDLE_MS, and works in bounded rounds that
 *     take stripe locks only with a try.
 *   The session table is a liburcu cds_lfht keyed by connection fd: the I/O
 *   thread adds and removes (freeing through call_rcu once the batch of
 *   events that closed a session is done: a later event of the batch may
 *   still name it), the housekeeping thread reads it without locks.
 *
 * Recovery of a dead slot, of everything at `shmmapctl check --repair`, and
 * of what an earlier coordinator left at start: recover.c (its head has
 * the steps and their invariants).  Recoveries, sweeps and map creation and
 * drop are serialised by recover_mu.  The state all of them share is
 * struct coord (coord_internal.h).
 *
 * Start (shmmap__coord_init): take the segment's lock, bind the socket,
 * create or adopt the segment, load the snapshot, and only then listen.  A
 * start that fails leaves no socket file and no segment it created, and
 * says what to do (another user's segment, a full /dev/shm, a socket
 * directory this user may not write).
 *
 * Reload (shmmap__coord_reload, on SIGHUP): the access lists are an
 * immutable struct behind an RCU pointer (struct access_lists), replaced
 * whole; everything else in c->conf is fixed at start, and a change to it
 * (a key, or a [map NAME] section added, removed or changed) is logged as
 * ignored until a restart.
 *
 * Growth (segment.c has the mechanism): the coordinator alone grows the
 * segment, one step (or chunk) at a time (grow_mu): from the housekeeping
 * thread when the pool's free pages fall under 1/GROW_FILL_DIV of the live
 * pages, at once for a client whose allocator found no room (MSG_GROW; the
 * coordinator's own allocations call coord_grow directly), or for
 * `shmmapctl grow` (deferred to the housekeeping thread).  A step ahead of
 * need is max(GROW_MIN_BYTES, a quarter of the live size), taken in chunks
 * so that an ask never waits for all of it; an ask's step is
 * max(GROW_MIN_BYTES, what the asker needs); both capped at max_size.  A
 * step /dev/shm has no room for is tried again smaller; if that fails too
 * it is logged once (with the numbers), grow_state tells clients not to
 * ask, the maps' policy applies, and the housekeeping thread tries again
 * every GROW_RETRY_MS while the file system has room for a page.
 *
 * Snapshots (the format in snapshot.c, the schedule in persist.c): loaded
 * at start into a segment created fresh, before the socket listens; saved
 * by the
 * housekeeping thread (every [persistence] interval, and on MSG_SAVE, whose
 * reply the I/O thread sends once the save is done), and once more by
 * shmmap__coord_stop after both threads are gone.  One save at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <urcu.h>
#include <urcu/rculfhash.h>

#include "conf.h"
#include "coordinator.h"
#include "internal.h"
#include "log.h"
#include "paths.h"
#include "proto.h"
#include "snapshot.h"
#include "coord_internal.h"

struct session {
	int fd;
	uint32_t slot;          /* valid if welcomed */
	uint64_t slot_gen;      /* the slot's generation when it was ours */
	bool welcomed;
	pid_t pid;              /* SO_PEERCRED */
	uid_t uid;
	gid_t gid;
	bool readonly_only;     /* allowed read-only access at most */
	bool refused;           /* not allowed at all: answer HELLO with -EACCES */
	uint64_t start_time;
	uint64_t connected_ms;
	_Atomic bool kill;      /* set by housekeeping, acted on by the I/O thread */
	bool gone;              /* closed: its events left in the batch are dropped */
	bool no_slot;           /* refused for want of a slot (logged, or counted) */
	struct session *next_closed; /* coord.closed */
	char why[64];
	struct cds_lfht_node node;
	struct rcu_head rcu;
};

/* ---- growth ---- */

static double mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

/* Bytes the object has committed (its blocks in /dev/shm). */
static uint64_t committed_bytes(struct coord *c)
{
	struct stat st;
	return fstat(c->seg.fd, &st) == 0 ? (uint64_t)st.st_blocks * 512u : 0;
}

/* Free bytes in the segment's file system; UINT64_MAX when it has no size
 * limit (a tmpfs mounted with size=0 reports no blocks at all). */
static uint64_t fs_free_bytes(struct coord *c)
{
	struct statvfs vs;
	if (fstatvfs(c->seg.fd, &vs) < 0)
		return 0;
	return vs.f_blocks ? (uint64_t)vs.f_bavail * vs.f_frsize : UINT64_MAX;
}

#ifdef SHMMAP_CRASHPOINTS
/* Test build only: $SHMMAP_CRASH_GROW=k kills this coordinator (SIGKILL) at
 * the k-th store of its first growth step (check_crash). */
static void crash_arm_grow(void)
{
	static bool armed;
	const char *e = getenv("SHMMAP_CRASH_GROW");
	if (!armed && e && *e) {
		armed = true;
		shmmap__crash_arm(strtoul(e, NULL, 10), SIGKILL);
	}
}
#define crash_disarm() shmmap__crash_arm(0, 0)
#else
#define crash_arm_grow() ((void)0)
#define crash_disarm() ((void)0)
#endif

/*
 * What a step costs and who waits on it.  A put that finds no room asks
 * (MSG_GROW) and waits for its step: GROW_ASK_PAGES (or what it needs),
 * committed without a collapse into huge pages, a few ms.  The housekeeping
 * thread grows ahead of need by a quarter of the live size, whose commit
 * and collapse take 0.1-0.5 s per GiB (seconds on memory the system has
 * not touched for long): GROW_CHUNK_PAGES at a time, each chunk under
 * grow_mu and published before the next, collapsed within
 * COLLAPSE_AHEAD_MS for the whole step; an ask waits for one chunk at most,
 * never for the step, and a chunk's collapse stops when an ask waits
 * (grow_asking: its remaining blocks stay in small pages).  Chunks end on
 * 2 MiB boundaries of the object, so every block of one is whole for its
 * collapse.
 */
#define GROW_ASK_PAGES (GROW_MIN_BYTES / SEG_PAGE)
#define GROW_CHUNK_PAGES ((32u << 20) / SEG_PAGE)
#define COLLAPSE_AHEAD_MS 1000u
#define HUGE_PAGES_PER (((uint32_t)2 << 20) / SEG_PAGE) /* heap pages per 2 MiB */

#ifdef SHMMAP_CRASHPOINTS
/* Test build only: $SHMMAP_GROW_PAUSE_MS=n makes a growth by chunks (a
 * step ahead of need, shmmapctl grow) rest n ms after each chunk, outside
 * grow_mu (check_seggrow: asks and other requests are not held up by a
 * long one). */
static void grow_pause(struct coord *c)
{
	const char *e = getenv("SHMMAP_GROW_PAUSE_MS");
	if (!e || !*e)
		return;
	uint64_t ms = strtoul(e, NULL, 10), until = shmmap__mono_ms() + ms;
	log_notice("test hook: the growth rests %llu ms after a chunk", (unsigned long long)ms);
	while (!atomic_load(&c->stop) && shmmap__mono_ms() < until) {
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
}
#else
#define grow_pause(c) ((void)(c))
#endif

static void log_grew(struct coord *c, uint32_t from, uint32_t to, uint64_t t0, const char *what)
{
	log_info("segment %s grew from %.1f MiB to %.1f MiB%s in %llu ms (max %.1f MiB, "
		 "%.1f MiB committed)", c->conf.segment.name,
		 mib(c->g.heap_off + (uint64_t)from * SEG_PAGE),
		 mib(c->g.heap_off + (uint64_t)to * SEG_PAGE), what,
		 (unsigned long long)(shmmap__mono_ms() - t0), mib(c->g.max_size),
		 mib(committed_bytes(c)));
}

/* Under grow_mu: grow from live to want pages (a smaller fallback of at
 * least `need` if /dev/shm has no room for all), collapsing for up to
 * collapse_ms; say when /dev/shm is full or has room again. */
static int grow_locked(struct coord *c, uint32_t live, uint32_t want, uint32_t need,
		       unsigned collapse_ms, char *why, size_t whylen)
{
	struct seg_header *h = seg_hdr(&c->seg);
	uint32_t small = live + (need > 16u ? need : 16u);
	if (small > want)
		small = want;
	crash_arm_grow();
	int rc = shmmap__seg_grow(&c->seg, &c->g, &c->lk, want, collapse_ms, &c->grow_asking);
	crash_disarm();
	if (rc == -ENOSPC && small < want)
		rc = shmmap__seg_grow(&c->seg, &c->g, &c->lk, want = small, 0, NULL);
	uint64_t from = c->g.heap_off + (uint64_t)live * SEG_PAGE;
	uint64_t to = c->g.heap_off + (uint64_t)want * SEG_PAGE;
	if (rc == 0) {
		if (atomic_exchange(&h->grow_state, SEG_GROW_OK) != SEG_GROW_OK)
			log_notice("segment %s: /dev/shm has room again: growth resumes",
				   c->conf.segment.name);
		return 0;
	}
	if (rc == -ENOSPC) {
		c->noroom_ms = shmmap__mono_ms();
		if (atomic_exchange(&h->grow_state, SEG_GROW_NOROOM) == SEG_GROW_OK)
			log_warning("segment %s: no room in /dev/shm to grow from %.1f MiB to %.1f MiB "
				    "(%.1f MiB free there, max_size %.1f MiB): the maps' policy "
				    "(evict/reject) applies until there is room",
				    c->conf.segment.name, mib(from), mib(to), mib(fs_free_bytes(c)),
				    mib(c->g.max_size));
		if (why)
			snprintf(why, whylen, "no room in /dev/shm to grow the segment from %.1f MiB "
				 "to %.1f MiB (%.1f MiB free there)", mib(from), mib(to),
				 mib(fs_free_bytes(c)));
	} else if (why) {
		snprintf(why, whylen, "growing the segment from %.1f MiB to %.1f MiB failed: %s",
			 mib(from), mib(to), shmmap_strerror(rc));
	}
	return rc;
}

/* The end of the chunk that starts at live, towards target: on a 2 MiB
 * boundary of the object when there is one before target. */
static uint32_t chunk_end(const struct coord *c, uint32_t live, uint32_t target)
{
	if (target - live <= GROW_CHUNK_PAGES)
		return target;
	uint32_t base = (uint32_t)(c->g.heap_off / SEG_PAGE) % HUGE_PAGES_PER;
	uint32_t end = live + GROW_CHUNK_PAGES;
	uint32_t cut = (base + end) % HUGE_PAGES_PER; /* heap_off is a multiple of SEG_PAGE */
	return end - cut > live ? end - cut : end;
}

/* Grow to target pages, chunk by chunk (above), each under grow_mu.
 * Returns 0 or the error of the chunk that failed (why says it); what
 * was grown before stays. */
static int grow_chunks(struct coord *c, uint32_t target, char *why, size_t whylen)
{
	uint64_t t0 = shmmap__mono_ms();
	uint32_t start = shmmap__seg_live(&c->seg, &c->g);
	int rc = 0;
	for (;;) {
		pthread_mutex_lock(&c->grow_mu);
		uint32_t live = shmmap__seg_live(&c->seg, &c->g);
		if (live >= target) {
			pthread_mutex_unlock(&c->grow_mu);
			break;
		}
		uint64_t spent = shmmap__mono_ms() - t0;
		rc = grow_locked(c, live, chunk_end(c, live, target), 0,
				 spent < COLLAPSE_AHEAD_MS ? (unsigned)(COLLAPSE_AHEAD_MS - spent) : 0,
				 why, whylen);
		pthread_mutex_unlock(&c->grow_mu);
		if (rc < 0 || atomic_load(&c->stop))
			break;
		/* The mutex is not fair: an ask waiting for it goes first, or it
		 * would wait for the whole step.  An ask takes a few ms. */
		for (int i = 0; i < 1000 && atomic_load(&c->grow_asking); i++) {
			struct timespec ts = {0, 1000000L};
			nanosleep(&ts, NULL);
		}
		grow_pause(c);
	}
	uint32_t end = shmmap__seg_live(&c->seg, &c->g);
	if (end > start)
		log_grew(c, start, end, t0, "");
	return rc;
}

/*
 * Grow the segment (any thread).  target: to at least target bytes
 * (shmmapctl grow), chunk by chunk; else by a step a put waits on, of at
 * least need pages, unless it grew past `seen` live pages meanwhile
 * (another asker was first, or a chunk of a step ahead).  Returns 0,
 * -ENOSPC (at max_size, or no room), -EBUSY/-EAGAIN (the pool lock; try
 * again); why says it.
 */
static int coord_grow(struct coord *c, uint32_t seen, uint32_t need, uint64_t target, char *why,
		      size_t whylen)
{
	uint32_t max = c->g.npages_max;
	if (target) { /* within max_size (grow_request) */
		uint64_t pages = target > c->g.heap_off
					 ? (target - c->g.heap_off + SEG_PAGE - 1) / SEG_PAGE : 0;
		return grow_chunks(c, pages < max ? (uint32_t)pages : max, why, whylen);
	}
	int rc = 0;
	uint64_t t0 = shmmap__mono_ms();
	atomic_fetch_add(&c->grow_asking, 1);
	pthread_mutex_lock(&c->grow_mu);
	uint32_t live = shmmap__seg_live(&c->seg, &c->g);
	if (seen && live > seen)
		goto out; /* grown meanwhile */
	if (live >= max) {
		rc = -ENOSPC;
		if (why)
			snprintf(why, whylen, "the segment is at its max_size (%.1f MiB)",
				 mib(c->g.max_size));
		goto out;
	}
	uint32_t step = need > GROW_ASK_PAGES ? need : GROW_ASK_PAGES;
	uint32_t want = step < max - live ? live + step : max;
	rc = grow_locked(c, live, want, need, 0, why, whylen);
	if (rc == 0)
		log_grew(c, live, shmmap__seg_live(&c->seg, &c->g), t0, " for a put that found no room");
out:
	pthread_mutex_unlock(&c->grow_mu);
	atomic_fetch_sub(&c->grow_asking, 1);
	return rc;
}

/* The coordinator's own allocator asks here (struct seg's grow). */
static int coord_grow_hook(const struct seg *s, uint32_t seen, uint32_t need)
{
	struct coord *c = (struct coord *)((char *)s - offsetof(struct coord, seg));
	return coord_grow(c, seen, need, 0, NULL, 0);
}

/* Housekeeping: grow ahead of need, by a quarter of the live size (at
 * least GROW_MIN_BYTES), when the pool runs low. */
static void grow_due(struct coord *c)
{
	struct seg_header *h = seg_hdr(&c->seg);
	uint32_t live = shmmap__seg_live(&c->seg, &c->g), max = c->g.npages_max;
	if (live >= max)
		return;
	if (atomic_load(&h->grow_state) != SEG_GROW_OK) {
		if (shmmap__mono_ms() - c->noroom_ms < GROW_RETRY_MS || fs_free_bytes(c) < SEG_PAGE)
			return;
		c->noroom_ms = shmmap__mono_ms();
		coord_grow(c, 0, 1, 0, NULL, 0);
		return;
	}
	uint64_t nfree = __atomic_load_n(&h->pool_free, __ATOMIC_RELAXED);
	if (nfree * GROW_FILL_DIV >= live)
		return;
	uint32_t step = live / 4 > GROW_MIN_BYTES / SEG_PAGE ? live / 4 : GROW_MIN_BYTES / SEG_PAGE;
	(void)grow_chunks(c, step < max - live ? live + step : max, NULL, 0);
}

/* ---- sessions ---- */

/* Walk the session table (caller holds the RCU read lock).  Unlike
 * cds_lfht_for_each_entry, never computes container_of(NULL). */
static struct session *session_at(struct cds_lfht_iter *it)
{
	struct cds_lfht_node *n = cds_lfht_iter_get_node(it);
	return n ? caa_container_of(n, struct session, node) : NULL;
}

static struct session *first_session(struct coord *c, struct cds_lfht_iter *it)
{
	cds_lfht_first(c->sessions, it);
	return session_at(it);
}

static struct session *next_session(struct coord *c, struct cds_lfht_iter *it)
{
	cds_lfht_next(c->sessions, it);
	return session_at(it);
}

static void free_session_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct session, rcu));
}

/* Lines about peers that have not said HELLO cost such a peer nothing: a
 * flood of connections wrote one each (356699 lines in 8 s).  At most
 * PEER_LOG_PER_S a second, then how many were not logged. */
#define PEER_LOG_PER_S 10

/* May a line of b's kind be logged now (at most per_s in a window of a
 * second)?  A window that ended is closed first: *dropped gets how many of
 * its lines were not logged, *span its length (ms). */
static bool log_budget_ok(struct log_budget *b, uint64_t now, uint32_t per_s,
			  uint64_t *dropped, uint64_t *span)
{
	*dropped = 0;
	*span = now - b->ms;
	if (now - b->ms >= 1000) {
		*dropped = b->quiet;
		b->ms = now;
		b->n = 0;
		b->quiet = 0;
	}
	if (b->n < per_s) {
		b->n++;
		return true;
	}
	b->quiet++;
	return false;
}

static void peer_log_dropped(uint64_t dropped, uint64_t span)
{
	if (dropped)
		log_warning("%llu more line(s) about connections closed before HELLO (refused, "
			    "malformed or evicted) not logged in the last %llu ms",
			    (unsigned long long)dropped, (unsigned long long)span);
}

/* The count of a flood that stopped: the window closed without a line. */
static void peer_log_flush(struct coord *c, uint64_t now)
{
	if (c->peer_log.quiet && now - c->peer_log.ms >= 1000) {
		peer_log_dropped(c->peer_log.quiet, now - c->peer_log.ms);
		c->peer_log = (struct log_budget){.ms = now};
	}
}

static bool peer_log_ok(struct coord *c)
{
	uint64_t dropped, span;
	bool ok = log_budget_ok(&c->peer_log, shmmap__mono_ms(), PEER_LOG_PER_S, &dropped, &span);
	peer_log_dropped(dropped, span);
	return ok;
}

/*
 * Close session s (I/O thread only; once: a second close of a session is a
 * no-op).  Its memory outlives the current batch of events (coord.closed):
 * an event of the batch may still name it, for instance its own hang-up
 * after housekeeping flagged it gone and the wake-up event came first (the
 * session was then read and closed again after its fd had been closed and
 * perhaps reused by a new client, and freed twice).
 */
static void close_session(struct coord *c, struct session *s, const char *why)
{
	if (s->gone)
		return;
	s->gone = true;
	/* A deferred request of its goes on; nobody to answer. */
	if (c->save.client == s)
		c->save.client = NULL;
	if (c->greq.client == s)
		c->greq.client = NULL;
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, s->fd, NULL);
	if (s->welcomed) {
		log_info("client pid %d (slot %u) gone: %s", (int)s->pid, s->slot, why);
		/* Never waits: if recovery is busy, housekeeping finishes it. */
		shmmap__coord_recover_slot(c, s->slot, s->slot_gen, false);
		atomic_fetch_sub(&c->nclients, 1);
	} else if (why[0] && !s->no_slot && /* (a refusal for want of a slot is logged once) */
		   peer_log_ok(c)) {
		log_warning("connection from pid %d closed: %s", (int)s->pid, why);
	}
	close(s->fd);
	rcu_read_lock();
	cds_lfht_del(c->sessions, &s->node);
	rcu_read_unlock();
	atomic_fetch_sub(&c->nsessions, 1);
	s->next_closed = c->closed;
	c->closed = s;
}

/* The batch is done: free the sessions closed in it (after readers). */
static void free_closed(struct coord *c)
{
	while (c->closed) {
		struct session *s = c->closed;
		c->closed = s->next_closed;
		call_rcu(&s->rcu, free_session_rcu);
	}
}

/* Answer with an error and, if why is not NULL, the reason for people
 * (shmmap_errdetail() on the client's side). */
__attribute__((format(printf, 4, 5))) static int send_error_why(int fd, uint32_t seq, int err,
								 const char *why, ...)
{
	struct proto_msg m = {.type = MSG_ERROR, .seq = seq};
	m.u.error.err = err < 0 ? err : -err;
	if (why) {
		va_list ap;
		va_start(ap, why);
		vsnprintf(m.u.error.why, sizeof m.u.error.why, why, ap);
		va_end(ap);
	}
	return shmmap__proto_send(fd, &m, -1);
}

static int send_error(int fd, uint32_t seq, int err)
{
	return send_error_why(fd, seq, err, NULL);
}

/* The same with a reason already written out ("" for none). */
static int send_error_text(int fd, uint32_t seq, int err, const char *why)
{
	return why[0] ? send_error_why(fd, seq, err, "%s", why) : send_error(fd, seq, err);
}

/*
 * A free slot for a new client.  One slot is kept for admin tools
 * (HELLO_F_ADMIN, as shmmapctl says): a worker does not take the last free
 * one, so an admin can still inspect a coordinator whose other slots are
 * all taken (with max_clients = 1 nothing is kept).
 */
static int assign_slot(struct coord *c, struct session *s, bool rdonly, bool admin)
{
	uint32_t nfree = 0;
	for (uint32_t i = 0; i < c->g.max_clients; i++)
		nfree += atomic_load(&seg_slot(&c->seg, &c->g, i)->state) == SLOT_FREE;
	if (!admin && nfree < 2 && c->g.max_clients > 1)
		return -EAGAIN;
	for (uint32_t i = 0; i < c->g.max_clients; i++) {
		struct seg_slot *sl = seg_slot(&c->seg, &c->g, i);
		if (atomic_load(&sl->state) != SLOT_FREE)
			continue;
		sl->pid = (uint32_t)s->pid;
		sl->start_time = s->start_time;
		sl->uid = s->uid;
		sl->flags = rdonly ? SLOT_F_RDONLY : 0;
		sl->attached_ns = shmmap__now_ns();
		/* A free slot's records are clear (recovery freed what they
		 * named); should one not be, a leak beats a new client using a
		 * block as its spare that someone else may own by now. */
		for (uint32_t k = 0; k < SEG_INTENTS; k++) {
			atomic_store(&sl->intent[k].a, 0);
			atomic_store(&sl->intent[k].b, 0);
			atomic_store(&sl->intent[k].spare, 0);
			atomic_store(&sl->spare_moving[k], 0);
		}
		for (uint32_t k = 0; k < SEG_UNDOS; k++)
			atomic_store(&sl->undo[k].off, 0);
		atomic_fetch_add(&sl->gen, 1);
		atomic_store_explicit(&sl->state, SLOT_LIVE, memory_order_release);
		return (int)i;
	}
	return -EAGAIN;
}

/* Send WELCOME for slot (with a descriptor of the segment, O_RDONLY for a
 * read-only client) and bind the session to the slot. */
static int welcome(struct coord *c, struct session *s, uint32_t seq, uint32_t slot, bool rdonly)
{
	s->slot = slot;
	s->slot_gen = atomic_load(&seg_slot(&c->seg, &c->g, slot)->gen);
	s->welcomed = true; /* even if what follows fails: close_session recovers it */
	atomic_fetch_add(&c->nclients, 1);
	int fd = c->seg.fd;
	if (rdonly) {
		fd = shm_open(c->conf.segment.name, O_RDONLY | O_CLOEXEC, 0);
		if (fd < 0)
			return send_error(s->fd, seq, -errno);
	}
	struct proto_msg r = {.type = MSG_WELCOME, .seq = seq};
	r.u.welcome.slot = slot;
	r.u.welcome.flags = rdonly ? HELLO_F_RDONLY : 0;
	r.u.welcome.slot_gen = atomic_load(&seg_slot(&c->seg, &c->g, slot)->gen);
	r.u.welcome.size = seg_hdr(&c->seg)->max_size; /* the layout's: the same for the segment's life */
	r.u.welcome.base = seg_hdr(&c->seg)->base;
	snprintf(r.u.welcome.shm_name, sizeof r.u.welcome.shm_name, "%s", c->conf.segment.name);
	int rc = shmmap__proto_send(s->fd, &r, fd);
	if (rdonly)
		close(fd);
	return rc;
}

static int handle_hello(struct coord *c, struct session *s, const struct proto_msg *m)
{
	bool rdonly = (m->u.hello.flags & HELLO_F_RDONLY) || s->readonly_only;
	/* The slot kept for admin tools: for root and the coordinator's own
	 * user only, so that no other peer can take it by saying "admin". */
	bool admin = (m->u.hello.flags & HELLO_F_ADMIN) && (s->uid == 0 || s->uid == geteuid());
	int slot = assign_slot(c, s, rdonly, admin);
	if (slot < 0) {
		/* At most one line a second: a pool retrying its attaches every
		 * 100 ms logged two lines a try. */
		uint64_t dropped, span;
		s->no_slot = true;
		if (log_budget_ok(&c->slot_log, shmmap__mono_ms(), 1, &dropped, &span)) {
			if (dropped)
				log_warning("refusing pid %d: no free client slot (all %u taken; %llu "
					    "more refused since the last such line)",
					    (int)s->pid, c->g.max_clients, (unsigned long long)dropped);
			else
				log_warning("refusing pid %d: no free client slot (all %u taken)",
					    (int)s->pid, c->g.max_clients);
		}
		send_error_why(s->fd, m->seq, slot,
			       "no free client slot: all %u are taken%s (raise [segment] max_clients, "
			       "or see shmmapctl clients)",
			       c->g.max_clients, admin ? "" : " (one is kept for admin tools)");
		return slot;
	}
	log_info("client pid %d uid %u attached as slot %d%s", (int)s->pid, (unsigned)s->uid, slot,
	      rdonly ? " (read-only)" : "");
	return welcome(c, s, m->seq, (uint32_t)slot, rdonly);
}

/*
 * A client of an earlier coordinator reconnecting: it keeps its slot if the
 * slot is one adopted at start (still LIVE, not yet resumed), of the same
 * process (pid as the kernel reports the peer) and generation.
 */
static int handle_resume(struct coord *c, struct session *s, const struct proto_msg *m)
{
	uint32_t slot = m->u.resume.slot;
	struct seg_slot *sl = slot < c->g.max_clients ? seg_slot(&c->seg, &c->g, slot) : NULL;
	bool expected = true;
	if (!sl || atomic_load(&sl->state) != SLOT_LIVE || sl->pid != (uint32_t)s->pid ||
	    sl->start_time != s->start_time || sl->uid != (uint32_t)s->uid ||
	    atomic_load(&sl->gen) != m->u.resume.slot_gen ||
	    !atomic_compare_exchange_strong(&c->orphan[slot], &expected, false)) {
		log_warning("refusing to resume pid %d in slot %u: not its slot", (int)s->pid, slot);
		return send_error(s->fd, m->seq, -ESTALE);
	}
	bool rdonly = (sl->flags & SLOT_F_RDONLY) || s->readonly_only;
	log_info("client pid %d resumed slot %u", (int)s->pid, slot);
	return welcome(c, s, m->seq, slot, rdonly);
}

/* ---- deferred requests (struct deferred) ---- */

/* I/O thread: queue r with its argument (n bytes) for session s's request
 * seq; false if one is queued or running already. */
static bool defer_queue(struct deferred *r, struct session *s, uint32_t seq, const void *arg,
			size_t n)
{
	pthread_mutex_lock(&r->mu);
	bool idle = r->state == DEFER_IDLE;
	if (idle) {
		memcpy(&r->arg, arg, n < sizeof r->arg ? n : sizeof r->arg);
		r->state = DEFER_QUEUED;
	}
	pthread_mutex_unlock(&r->mu);
	if (idle) {
		r->client = s;
		r->seq = seq;
	}
	return idle;
}

bool shmmap__defer_take(struct coord *c, struct deferred *r, void *arg, size_t n)
{
	pthread_mutex_lock(&r->mu);
	bool asked = r->state == DEFER_QUEUED && !atomic_load(&c->stop);
	if (asked) {
		memcpy(arg, &r->arg, n < sizeof r->arg ? n : sizeof r->arg);
		r->state = DEFER_RUNNING;
	}
	pthread_mutex_unlock(&r->mu);
	return asked;
}

void shmmap__defer_done(struct coord *c, struct deferred *r, int rc, const char *why)
{
	pthread_mutex_lock(&r->mu);
	r->rc = rc;
	snprintf(r->err, sizeof r->err, "%s", why ? why : "");
	r->state = DEFER_DONE;
	pthread_mutex_unlock(&r->mu);
	uint64_t one = 1;
	if (write(c->wakefd, &one, sizeof one) < 0) { /* the I/O loop wakes within 1 s */ }
}

/* I/O thread, on a wake-up: answer r if it is done (and its client is
 * still there: if not, the result is in the log). */
static void defer_finish(struct coord *c, struct deferred *r)
{
	pthread_mutex_lock(&r->mu);
	bool done = r->state == DEFER_DONE;
	int rc = r->rc;
	char why[sizeof r->err];
	memcpy(why, r->err, sizeof why);
	if (done)
		r->state = DEFER_IDLE;
	pthread_mutex_unlock(&r->mu);
	struct session *s = r->client;
	if (!done || !s)
		return;
	r->client = NULL;
	struct proto_msg m = {.type = MSG_OK, .seq = r->seq};
	if ((rc < 0 ? send_error_why(s->fd, r->seq, rc, "%s", why)
		    : shmmap__proto_send(s->fd, &m, -1)) < 0)
		close_session(c, s, r->what);
}

/*
 * MSG_SAVE: queue the save for the housekeeping thread (persist.c runs
 * it); defer_finish sends the reply.  Returns 0 (queued) or the error to
 * answer with at once (why says it).
 */
static int save_request(struct coord *c, struct session *s, const struct proto_msg *m,
			char *why, size_t whylen)
{
	const char *path = m->u.save.path[0] ? m->u.save.path : c->conf.persistence.snapshot;
	if (m->u.save.flags)
		return -EINVAL;
	if (!path[0]) {
		snprintf(why, whylen, "no snapshot file: set [persistence] snapshot in the "
			 "coordinator's config, or give a PATH (shmmapctl save PATH)");
		return -EINVAL;
	}
	if (path[0] != '/') { /* shmmapctl sends it absolute; another client may not */
		snprintf(why, whylen, "snapshot path '%.200s' is not absolute", path);
		return -EINVAL;
	}
	/* The file is written with the coordinator's rights: a path of the
	 * client's choosing only for peers that have those rights anyway. */
	if (m->u.save.path[0] && s->uid != 0 && s->uid != geteuid())
		return -EPERM;
	char p[sizeof c->save.arg.path];
	snprintf(p, sizeof p, "%s", path);
	return defer_queue(&c->save, s, m->seq, p, sizeof p) ? 0 : -EBUSY;
}

/*
 * MSG_GROW with a target (shmmapctl grow), on the I/O thread: a growth of
 * gigabytes takes seconds, during which the I/O thread would answer
 * nobody (attaches, opens, other processes' asks), so it is deferred to
 * the housekeeping thread (grow_request_due).  Returns 0 (queued) or the
 * error to answer with at once (why says it).
 */
static int grow_request(struct coord *c, struct session *s, const struct proto_msg *m, char *why,
			size_t whylen)
{
	uint64_t target = m->u.grow.target;
	if (target > c->g.max_size) {
		snprintf(why, whylen, "%.1f MiB is beyond [segment] max_size (%.1f MiB)",
			 mib(target), mib(c->g.max_size));
		return -EINVAL;
	}
	if (defer_queue(&c->greq, s, m->seq, &target, sizeof target))
		return 0;
	snprintf(why, whylen, "another shmmapctl grow is under way");
	return -EBUSY;
}

/* Housekeeping thread: run a queued shmmapctl grow. */
static void grow_request_due(struct coord *c)
{
	uint64_t target;
	if (!shmmap__defer_take(c, &c->greq, &target, sizeof target))
		return;
	char why[sizeof c->greq.err] = "";
	int rc = coord_grow(c, 0, 0, target, why, sizeof why);
	shmmap__defer_done(c, &c->greq, rc, why);
}

/* Clients attached: LIVE slots, counted as shmmapctl clients does (after a
 * restart, adopted slots not yet resumed count: their processes work on). */
static uint32_t live_slots(struct coord *c)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->g.max_clients; i++)
		n += atomic_load(&seg_slot(&c->seg, &c->g, i)->state) == SLOT_LIVE;
	return n;
}

/* Answer an OPEN that failed, with the reason where there is more to say
 * than the code. */
static int open_error(struct coord *c, struct session *s, uint32_t seq, const char *name, int rc)
{
	if (rc == -EBUSY || rc == -EAGAIN)
		return send_error_why(s->fd, seq, rc,
				      "map '%.64s' not created: the allocator's lock is held by %s "
				      "process; try again",
				      name, rc == -EBUSY ? "a live (stopped?)" : "a dead");
	if (rc == -ENOSPC && shmmap__coord_dir_full(c))
		return send_error_why(s->fd, seq, rc,
				      "map '%.64s' not created: all %u map directory entries are "
				      "taken: raise [segment] max_maps (or drop a map)",
				      name, c->g.max_maps);
	if (rc == -ENOSPC)
		return send_error_why(s->fd, seq, rc,
				      "map '%.64s' not created: no room for its table ([segment] "
				      "size, max_size)",
				      name);
	return send_error(s->fd, seq, rc);
}

/* Handle one request; a negative return closes the session. */
static int handle(struct coord *c, struct session *s, const struct proto_msg *m)
{
	if (s->refused) {
		if (peer_log_ok(c))
			log_warning("refusing pid %d: uid %u gid %u not allowed", (int)s->pid,
				    (unsigned)s->uid, (unsigned)s->gid);
		send_error_why(s->fd, m->seq, -EACCES,
			       "uid %u gid %u is not allowed by the coordinator ([server] allow_uids, "
			       "allow_gids, readonly_uids, readonly_gids)",
			       (unsigned)s->uid, (unsigned)s->gid);
		snprintf(s->why, sizeof s->why, "refused");
		return -EACCES;
	}
	if (!s->welcomed && m->type != MSG_HELLO && m->type != MSG_RESUME) {
		snprintf(s->why, sizeof s->why, "request before HELLO");
		return -EPROTO;
	}
	struct proto_msg r = {.seq = m->seq};
	int rc;
	switch (m->type) {
	case MSG_HELLO:
		if (s->welcomed) {
			snprintf(s->why, sizeof s->why, "second HELLO");
			return -EPROTO;
		}
		return handle_hello(c, s, m);
	case MSG_RESUME:
		if (s->welcomed) {
			snprintf(s->why, sizeof s->why, "RESUME after HELLO");
			return -EPROTO;
		}
		return handle_resume(c, s, m);
	case MSG_OPEN: {
		bool rdonly = seg_slot(&c->seg, &c->g, s->slot)->flags & SLOT_F_RDONLY;
		uint32_t idx, gen;
		rc = shmmap__coord_open_map(c, m->u.open.name, m->u.open.flags & SHMMAP_CREATE, rdonly, NULL, &idx,
			      &gen);
		if (rc < 0)
			return open_error(c, s, m->seq, m->u.open.name, rc);
		r.type = MSG_OPENED;
		r.u.opened.index = idx;
		r.u.opened.gen = gen;
		return shmmap__proto_send(s->fd, &r, -1);
	}
	case MSG_OPEN_OPTS: {
		/* Every field is the peer's: checked here (the library checks too). */
		const struct open_opts rq = {
			.policy = m->u.openo.policy, .capacity = m->u.openo.capacity,
			.quota = m->u.openo.quota, .key_max = m->u.openo.key_max,
			.value_max = m->u.openo.value_max, .default_ttl = m->u.openo.default_ttl,
		};
		if (rq.policy > SHMMAP_POLICY_REJECT || rq.key_max > 65535 ||
		    rq.value_max > (1u << 30) || rq.capacity > (UINT64_C(1) << 32))
			return send_error(s->fd, m->seq, -EINVAL);
		bool rdonly = seg_slot(&c->seg, &c->g, s->slot)->flags & SLOT_F_RDONLY;
		uint32_t idx, gen;
		rc = shmmap__coord_open_map(c, m->u.openo.name, m->u.openo.flags & SHMMAP_CREATE, rdonly, &rq, &idx,
			      &gen);
		if (rc < 0)
			return open_error(c, s, m->seq, m->u.openo.name, rc);
		r.type = MSG_OPENED;
		r.u.opened.index = idx;
		r.u.opened.gen = gen;
		return shmmap__proto_send(s->fd, &r, -1);
	}
	case MSG_DROP:
		if (seg_slot(&c->seg, &c->g, s->slot)->flags & SLOT_F_RDONLY)
			return send_error(s->fd, m->seq, -EPERM);
		rc = shmmap__coord_drop_map(c, m->u.open.name);
		if (rc < 0)
			return send_error(s->fd, m->seq, rc);
		r.type = MSG_OK;
		return shmmap__proto_send(s->fd, &r, -1);
	case MSG_STATS:
		r.type = MSG_STATS_REPLY;
		r.u.stats.pid = (uint32_t)getpid();
		r.u.stats.clients = live_slots(c);
		r.u.stats.maps = shmmap__coord_count_maps(c);
		r.u.stats.uptime_ms = shmmap__mono_ms() - c->start_ms;
		r.u.stats.coord_gen = atomic_load(&seg_hdr(&c->seg)->coord_gen);
		return shmmap__proto_send(s->fd, &r, -1);
	case MSG_FLUSH: {
		if (seg_slot(&c->seg, &c->g, s->slot)->flags & SLOT_F_RDONLY)
			return send_error(s->fd, m->seq, -EPERM);
		char why[PROTO_NAME_MAX + 1] = "";
		rc = shmmap__coord_flush_map(c, m->u.open.name, why, sizeof why);
		if (rc < 0)
			return send_error_text(s->fd, m->seq, rc, why);
		r.type = MSG_OK;
		return shmmap__proto_send(s->fd, &r, -1);
	}
	case MSG_SAVE: { /* answered by save_finish once the save is done */
		if (seg_slot(&c->seg, &c->g, s->slot)->flags & SLOT_F_RDONLY)
			return send_error(s->fd, m->seq, -EPERM);
		char why[PROTO_NAME_MAX + 1] = "";
		rc = save_request(c, s, m, why, sizeof why);
		return rc < 0 ? send_error_text(s->fd, m->seq, rc, why) : 0;
	}
	case MSG_REPAIR:
		if (seg_slot(&c->seg, &c->g, s->slot)->flags & SLOT_F_RDONLY)
			return send_error(s->fd, m->seq, -EPERM);
		rc = shmmap__coord_repair_all(c, &r);
		if (rc < 0)
			return send_error(s->fd, m->seq, rc);
		return shmmap__proto_send(s->fd, &r, -1);
	case MSG_GROW: {
		if (seg_slot(&c->seg, &c->g, s->slot)->flags & SLOT_F_RDONLY)
			return send_error(s->fd, m->seq, -EPERM);
		char why[PROTO_NAME_MAX + 1] = "";
		if (m->u.grow.target) { /* shmmapctl grow: may take seconds */
			rc = grow_request(c, s, m, why, sizeof why);
			return rc < 0 ? send_error_text(s->fd, m->seq, rc, why) : 0;
		}
		rc = coord_grow(c, m->u.grow.seen, m->u.grow.need, 0, why, sizeof why);
		if (rc < 0)
			return send_error_text(s->fd, m->seq, rc, why);
		r.type = MSG_OK;
		return shmmap__proto_send(s->fd, &r, -1);
	}
	case MSG_BYE:
		snprintf(s->why, sizeof s->why, "detached");
		/* Before close_session recovers the slot (the session is
		 * welcomed: only then does a BYE get here). */
		atomic_store(&c->bye_gen[s->slot], s->slot_gen);
		return -ECONNRESET;
	default:
		snprintf(s->why, sizeof s->why, "unexpected message type %u", m->type);
		return -EPROTO;
	}
}

static bool in_ids(const struct conf_ids *ids, uint32_t id)
{
	for (uint32_t i = 0; i < ids->n; i++)
		if (ids->id[i] == id)
			return true;
	return false;
}

/* Access of a peer: 2 = read-write, 1 = read-only, 0 = refused.  Root and
 * the coordinator's own uid always have read-write access; the lists are
 * the ones in force now (a reload changes them for the next connection). */
static int peer_access(struct coord *c, uid_t uid, gid_t gid)
{
	if (uid == 0 || uid == geteuid())
		return 2;
	int ac = 0;
	rcu_read_lock();
	const struct access_lists *a = rcu_dereference(c->access);
	if (in_ids(&a->allow_uids, uid) || in_ids(&a->allow_gids, gid))
		ac = 2;
	else if (in_ids(&a->readonly_uids, uid) || in_ids(&a->readonly_gids, gid))
		ac = 1;
	rcu_read_unlock();
	return ac;
}

static struct access_lists *access_from(const struct shmmap_conf *cf)
{
	struct access_lists *a = malloc(sizeof *a);
	if (a) {
		a->allow_uids = cf->server.allow_uids;
		a->allow_gids = cf->server.allow_gids;
		a->readonly_uids = cf->server.readonly_uids;
		a->readonly_gids = cf->server.readonly_gids;
	}
	return a;
}

void shmmap__coord_reload(struct coord *c, const struct shmmap_conf *conf)
{
	const char *fixed[32];
	size_t n = shmmap__conf_fixed_changes(&c->conf, conf, fixed, 32);
	for (size_t i = 0; i < n && i < 32; i++)
		log_warning("reload: %s changed: ignored until shmmapd restarts", fixed[i]);
	/* The maps of [map NAME] sections are made at start only, and a map
	 * that exists keeps its options: say so rather than nothing. */
	struct conf_map_change mc[CONF_MAX_MAP_SECTIONS * 2];
	size_t nm = shmmap__conf_map_changes(&c->conf, conf, mc, CONF_MAX_MAP_SECTIONS * 2);
	for (size_t i = 0; i < nm && i < CONF_MAX_MAP_SECTIONS * 2; i++)
		log_warning("reload: [map %s] %s: ignored until shmmapd restarts%s", mc[i].name,
			    mc[i].what,
			    !strcmp(mc[i].what, "removed") ? " (the map stays until dropped)" :
			    !strcmp(mc[i].what, "changed") ? " (a map that exists keeps the options "
							     "it was created with)" : "");
	struct access_lists *a = access_from(conf);
	if (!a) {
		log_error("reload: out of memory; keeping the current access lists");
		return;
	}
	struct access_lists *old = rcu_xchg_pointer(&c->access, a);
	synchronize_rcu(); /* no reader still sees old */
	free(old);
	shmmap__log_set_level(conf->server.log_level);
	log_notice("reloaded: allow_uids %u, allow_gids %u, readonly_uids %u, readonly_gids %u "
		   "entries, log_level %s; attached clients keep their access",
		   a->allow_uids.n, a->allow_gids.n, a->readonly_uids.n, a->readonly_gids.n,
		   shmmap__log_level_name(conf->server.log_level));
}

static void evict_oldest_pending(struct coord *c)
{
	struct cds_lfht_iter it;
	struct session *s, *oldest = NULL;
	rcu_read_lock();
	for (s = first_session(c, &it); s; s = next_session(c, &it))
		if (!s->welcomed && (!oldest || s->connected_ms < oldest->connected_ms))
			oldest = s;
	rcu_read_unlock();
	/* Only this thread frees sessions, after its batch: oldest stays valid. */
	if (oldest)
		close_session(c, oldest, "too many pending connections: evicted the oldest");
}

static void accept_one(struct coord *c)
{
	int fd = accept4(c->lsock, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			log_error("accept: %s", strerror(errno));
		return;
	}
	struct ucred cr;
	socklen_t len = sizeof cr;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
		log_error("SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	int access = peer_access(c, cr.uid, cr.gid);
	/* At most MAX_PENDING connections that have not said HELLO: a flood of
	 * idle connections evicts its own oldest members, so a legitimate
	 * client (which says HELLO at once) is never starved. */
	if (atomic_load(&c->nsessions) - atomic_load(&c->nclients) >= MAX_PENDING)
		evict_oldest_pending(c);
	struct session *s = calloc(1, sizeof *s);
	if (!s) {
		close(fd);
		return;
	}
	s->fd = fd;
	s->pid = cr.pid;
	s->uid = cr.uid;
	s->gid = cr.gid;
	s->readonly_only = (access == 1);
	/* A refused peer is told so in answer to its HELLO: an error sent
	 * before it was read could be lost to the peer's ECONNRESET. */
	s->refused = !access;
	s->connected_ms = shmmap__mono_ms();
	shmmap__proc_start_time(cr.pid, &s->start_time);
	cds_lfht_node_init(&s->node);
	rcu_read_lock();
	cds_lfht_add(c->sessions, (unsigned long)fd, &s->node);
	rcu_read_unlock();
	atomic_fetch_add(&c->nsessions, 1);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		close_session(c, s, "epoll");
}

static void read_session(struct coord *c, struct session *s)
{
	for (;;) {
		struct proto_msg m;
		int rc = shmmap__proto_recv(s->fd, &m, NULL);
		if (rc == -EAGAIN)
			return;
		if (rc == -ECONNRESET) {
			close_session(c, s, s->welcomed ? "connection closed" : "");
			return;
		}
		if (rc < 0) {
			/* A peer of another protocol version is told so before the
			 * close (its decoder, seeing this version, reports the
			 * mismatch), rather than left with a lost connection. */
			if (rc == -SHMMAP_EVERSION)
				send_error_why(s->fd, 0, rc,
					       "this coordinator speaks attach protocol version %u",
					       PROTO_VERSION);
			char why[96];
			snprintf(why, sizeof why, "bad message: %s", shmmap_strerror(rc));
			close_session(c, s, why);
			return;
		}
		s->why[0] = '\0';
		rc = handle(c, s, &m);
		if (rc < 0) {
			close_session(c, s, s->why[0] ? s->why : shmmap_strerror(rc));
			return;
		}
	}
}

/* Close the sessions the housekeeping thread flagged. */
static void reap_flagged(struct coord *c)
{
	struct cds_lfht_iter it;
	struct session *s;
	struct session *victims[64];
	int n;
	do {
		n = 0;
		rcu_read_lock();
		for (s = first_session(c, &it); s; s = next_session(c, &it)) {
			if (atomic_load(&s->kill) && n < 64)
				victims[n++] = s;
		}
		rcu_read_unlock();
		/* Only this thread frees sessions, after its batch: the
		 * pointers stay valid. */
		for (int i = 0; i < n; i++)
			close_session(c, victims[i], victims[i]->why);
	} while (n == 64);
}

static void *io_main(void *arg)
{
	struct coord *c = arg;
	rcu_register_thread();
	struct epoll_event evs[64];
	while (!atomic_load(&c->stop)) {
		int n = epoll_wait(c->epfd, evs, 64, 1000);
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &c->lsock) {
				accept_one(c);
			} else if (p == &c->wakefd) {
				uint64_t v;
				if (read(c->wakefd, &v, sizeof v) < 0) { /* nothing to do */ }
				reap_flagged(c);
				defer_finish(c, &c->save);
				defer_finish(c, &c->greq);
			} else if (!((struct session *)p)->gone) {
				read_session(c, p);
			}
		}
		free_closed(c);
		peer_log_flush(c, shmmap__mono_ms()); /* the count of a flood that stopped */
	}
	free_closed(c);
	/* Shutting down: close every connection without freeing the slots:
	 * the clients keep working on the segment and the next coordinator
	 * adopts them. */
	struct cds_lfht_iter it;
	struct session *s;
	c->save.client = NULL;
	c->greq.client = NULL;
	rcu_read_lock();
	for (s = first_session(c, &it); s; s = next_session(c, &it)) {
		cds_lfht_del(c->sessions, &s->node);
		close(s->fd);
		call_rcu(&s->rcu, free_session_rcu);
	}
	rcu_read_unlock();
	rcu_unregister_thread();
	return NULL;
}

static bool pid_gone(pid_t pid, uint64_t start_time)
{
	if (pid <= 0)
		return false;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	uint64_t now;
	int rc = shmmap__proc_start_time(pid, &now);
	return rc == -ESRCH || (rc == 0 && start_time && now != start_time);
}

/* One chunk of map m's expired entries: RECLAIM_BUCKETS buckets, one entry
 * per stripe lock hold (recover_mu: the coordinator's own frees must not
 * race its sweeps, which do not see them).  How many were removed. */
static uint64_t reclaim_chunk(struct coord *c, uint32_t m)
{
	struct op_ctx o = {.s = &c->seg, .g = &c->g, .lk = c->lk};
	struct map_view v;
	bool deferred = false;
	uint64_t removed = 0;
	pthread_mutex_lock(&c->recover_mu);
	if (shmmap__map_view(&c->seg, &c->g, m, &v) == 0)
		removed = shmmap__tbl_reclaim(&o, &v, &c->reclaim_at[m], RECLAIM_BUCKETS, &deferred);
	if (deferred)
		shmmap__coord_sweep_deferred(c, "expiry");
	pthread_mutex_unlock(&c->recover_mu);
	return removed;
}

/* Expired entries: a chunk of every map per round; then, while the round's
 * budget lasts, more chunks of the maps whose last chunk was dense with
 * expired entries (RECLAIM_DENSE), so that a large map of short TTLs gets
 * its memory back within about a round instead of a pass over its whole
 * table at one chunk per round (256K buckets: 12.8 s), during which a full
 * segment evicted live entries in their place. */
static void reclaim_expired(struct coord *c)
{
	uint64_t start = shmmap__mono_ms();
	uint32_t dense = 0;
	for (uint32_t m = 0; m < c->g.max_maps; m++) {
		bool d = reclaim_chunk(c, m) >= RECLAIM_DENSE;
		c->reclaim_dense[m] = d;
		dense += d;
	}
	while (dense && shmmap__mono_ms() - start < RECLAIM_BUDGET_MS && !atomic_load(&c->stop)) {
		dense = 0;
		for (uint32_t m = 0; m < c->g.max_maps; m++) {
			if (!c->reclaim_dense[m])
				continue;
			bool d = reclaim_chunk(c, m) >= RECLAIM_DENSE;
			c->reclaim_dense[m] = d;
			dense += d;
			if (shmmap__mono_ms() - start >= RECLAIM_BUDGET_MS)
				break;
		}
	}
}

/*
 * Housekeeping: recovery that waited for a lock a live process held on to
 * (DEAD slots; shmmap__coord_recover_slot_locked records what each waits
 * for), and a sweep left pending for the same reason.  Each try is bounded (the
 * lock_ctx gives up after COORD_LOCK_WAIT_MS), so a stopped process delays
 * only what needs its lock.
 */
static void retry_pending(struct coord *c)
{
	for (uint32_t i = 0; i < c->g.max_clients; i++) {
		struct seg_slot *sl = seg_slot(&c->seg, &c->g, i);
		if (atomic_load(&sl->state) != SLOT_DEAD)
			continue;
		pthread_mutex_lock(&c->recover_mu);
		if (atomic_load(&sl->state) == SLOT_DEAD && shmmap__coord_recover_slot_locked(c, i))
			log_notice("slot %u: recovery that waited for a busy lock is done", i);
		pthread_mutex_unlock(&c->recover_mu);
	}
	pthread_mutex_lock(&c->recover_mu);
	if (c->sweep_pending) {
		struct sweep_report r;
		shmmap__coord_sweep_or_defer(c, "deferred", &r);
	}
	pthread_mutex_unlock(&c->recover_mu);
}

static void *house_main(void *arg)
{
	struct coord *c = arg;
	rcu_register_thread();
	while (!atomic_load(&c->stop)) {
		struct timespec ts = {0, HOUSE_MS * 1000000L};
		nanosleep(&ts, NULL);
		uint64_t now = shmmap__mono_ms();
		bool flagged = false;
		struct cds_lfht_iter it;
		struct session *s;
		rcu_read_lock();
		for (s = first_session(c, &it); s; s = next_session(c, &it)) {
			if (atomic_load(&s->kill))
				continue;
			const char *why = NULL;
			/* (A session accepted after `now` was read is younger
			 * than now: no unsigned wrap-around may call it old.) */
			if (!s->welcomed && now > s->connected_ms + HANDSHAKE_MS)
				why = "no HELLO in time";
			else if (pid_gone(s->pid, s->start_time))
				why = "process gone";
			if (why) {
				snprintf(s->why, sizeof s->why, "%s", why);
				atomic_store(&s->kill, true);
				flagged = true;
			}
		}
		rcu_read_unlock();
		if (flagged) {
			uint64_t one = 1;
			if (write(c->wakefd, &one, sizeof one) < 0) { /* the loop retries */ }
		}
		reclaim_expired(c);
		/* Slots adopted from an earlier coordinator: reclaim the dead. */
		for (uint32_t i = 0; i < c->g.max_clients; i++) {
			if (!atomic_load(&c->orphan[i]))
				continue;
			struct seg_slot *sl = seg_slot(&c->seg, &c->g, i);
			uint32_t st = atomic_load(&sl->state);
			if (st == SLOT_FREE) {
				atomic_store(&c->orphan[i], false);
			} else if (st == SLOT_DEAD || pid_gone((pid_t)sl->pid, sl->start_time)) {
				log_notice("slot %u (pid %u, from an earlier coordinator) is gone", i, sl->pid);
				shmmap__coord_recover_slot(c, i, atomic_load(&sl->gen), true);
				atomic_store(&c->orphan[i], false);
			}
		}
		retry_pending(c);
		shmmap__coord_finish_drops(c);
		grow_request_due(c);
		grow_due(c);
		shmmap__coord_save_due(c);
	}
	rcu_unregister_thread();
	return NULL;
}

/* A resize of map m found no run of pages for its array in a segment that
 * cannot grow (grow.c): empty a window of pages for the least array it
 * wants (gt->room buckets), as for a large value, and start the resize in
 * it at once (clients' allocations pass the window over meanwhile).  True
 * if the resize started. */
static bool grow_room(struct coord *c, const struct op_ctx *o, uint32_t m)
{
	struct grow_track *gt = &c->grow_track[m];
	uint32_t n = gt->room;
	uint64_t pages = ((uint64_t)n * 8 + SEG_PAGE - 1) / SEG_PAGE;
	gt->room = 0;
	struct map_view v;
	if (!pages || pages > c->g.npages_max || shmmap__map_view(&c->seg, &c->g, m, &v) < 0)
		return false;
	gt->room_tries++;
	pthread_mutex_lock(&c->recover_mu);
	int rc = shmmap__coord_evict_window(c, (uint32_t)pages, "table growth");
	pthread_mutex_unlock(&c->recover_mu);
	if (rc == 0)
		rc = shmmap__grow_start(o, &v, n, &c->recover_mu);
	shmmap__pool_unhold(&c->seg);
	if (rc < 0)
		return false; /* -ENOSPC: the eighth-more wait (grow.c) */
	log_info("map '%.*s': emptied %llu page(s) of the full segment for a table of %u "
		 "buckets", (int)sizeof v.dir->name, v.dir->name, (unsigned long long)pages, n);
	gt->failed_n = 0;
	gt->room_tries = 0; /* the bound is on windows that came to nothing */
	return true;
}

/* The growth thread: rounds of growth work on every map (grow.c), back to
 * back while they make progress, else asleep on the header's grow_wake
 * futex (set by a writer whose stripe is over the load factor). */
static void *grow_main(void *arg)
{
	struct coord *c = arg;
	struct op_ctx o = {.s = &c->seg, .g = &c->g, .lk = c->lk};
	struct seg_header *h = seg_hdr(&c->seg);
	uint32_t step = c->conf.map.grow_step;
	uint64_t rested = 0; /* when a round last found a map resting and nothing to do */
	while (!atomic_load(&c->stop)) {
		/* Woken by a writer within GROW_BLOCKED_MS of a round that found
		 * nothing to do while a map rests: most likely one of that map's
		 * stripes looking over the limit again.  Wait the rest out with
		 * the word set (writers do not wake a set word), so that writers
		 * start at most one round per GROW_BLOCKED_MS.  Without this, a
		 * writer that set the word only after the round's look below (a
		 * loaded machine: the writer runs between the thread's look and
		 * its sleep, or the round is short) woke the thread at once, round
		 * after round: a third of a core again. */
		uint64_t since = rested ? shmmap__mono_ms() - rested : GROW_BLOCKED_MS;
		if (since < GROW_BLOCKED_MS) {
			struct timespec ts = {0, (long)(GROW_BLOCKED_MS - since) * 1000000L};
			syscall(SYS_futex, (uint32_t *)&h->grow_wake, FUTEX_WAIT, 1u, &ts, NULL, 0);
		}
		atomic_store(&h->grow_wake, 0);
		int most = 0;
		bool resting = false;
		for (uint32_t m = 0; m < c->g.max_maps; m++) {
			int r = shmmap__grow_round(&o, m, &c->grow_track[m], &c->recover_mu, step);
			if (c->grow_track[m].room && grow_room(c, &o, m))
				r = 2;
			most = r > most ? r : most;
			resting = resting || c->grow_track[m].resting;
		}
		rested = most == 0 && resting ? shmmap__mono_ms() : 0;
		if (most == 2)
			continue;
		/* Asleep unless a writer set the word since we cleared it.  If
		 * one did while a map rests over one entry per bucket without
		 * growing (below its limit of two, as a full small cache does,
		 * or with no memory for a larger array), it was most likely one
		 * of that map's stripes looking over the limit to its writer;
		 * woken at once, the thread went round at a third of a core.  So
		 * the word stays set, writers stop waking us, and the next look
		 * is a short wait later (a stop still wakes us: it wakes
		 * whoever waits on the word). */
		uint32_t seen = most == 0 && resting && atomic_load(&h->grow_wake) ? 1u : 0u;
		long ms = most == 1 || seen ? GROW_BLOCKED_MS : GROW_IDLE_MS;
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		syscall(SYS_futex, (uint32_t *)&h->grow_wake, FUTEX_WAIT, seen, &ts, NULL, 0);
	}
	return NULL;
}

/* ---- set-up ---- */

static int bind_socket(struct coord *c, char *err, size_t errlen)
{
	static const char sock_hint[] =
		"; set [server] socket (or $SHMMAP_SOCKET) to a path in a directory this user "
		"may write; by default a user other than root uses $XDG_RUNTIME_DIR"
		SHMMAP_USER_SOCKET;
	const char *path = c->conf.server.socket;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "%s: socket path too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	/* Create the socket's directory if it is missing (one level). */
	char dir[sizeof sa.sun_path];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			int e = errno;
			snprintf(err, errlen, "%s: cannot create the socket's directory: %s%s", dir,
				 strerror(e), sock_hint);
			return -e;
		}
	} else {
		snprintf(dir, sizeof dir, "%s", slash ? "/" : ".");
	}
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
		if (errno != EADDRINUSE)
			goto fail;
		/* Is another coordinator listening there, or is it stale? */
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
		if (probe >= 0)
			close(probe);
		if (live) {
			snprintf(err, errlen, "%s: another coordinator is listening there", path);
			close(s);
			return -EADDRINUSE;
		}
		unlink(path);
		if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0)
			goto fail;
	}
	/* Bound, not listening yet: until shmmap__coord_init ends, a client
	 * gets ECONNREFUSED at once rather than waiting on a coordinator that
	 * is still loading a snapshot (and may yet fail).  The price: in that
	 * window another coordinator configured with the same socket path
	 * (and another segment) takes the file for a stale one. */
	if (chmod(path, c->conf.server.socket_mode & 0777) < 0) {
		int e = errno;
		unlink(path);
		errno = e;
		goto fail;
	}
	c->lsock = s;
	return 0;
fail:;
	int e = errno;
	if (e == EACCES || e == EPERM || e == EROFS)
		snprintf(err, errlen, "%s: cannot create the socket: %s: directory %s is not "
			 "writable by uid %u%s", path, strerror(e), dir, (unsigned)geteuid(), sock_hint);
	else
		snprintf(err, errlen, "%s: %s", path, strerror(e));
	close(s);
	return -e;
}

/* "user NAME (uid N)" of the shm object called name, or "" if unknown. */
static void shm_owner(const char *name, char *buf, size_t len)
{
	char path[300];
	struct stat st;
	buf[0] = '\0';
	snprintf(path, sizeof path, "/dev/shm%s", name); /* where glibc keeps shm objects */
	if (stat(path, &st) < 0)
		return;
	char pwbuf[1024];
	struct passwd pw, *res = NULL;
	if (getpwuid_r(st.st_uid, &pw, pwbuf, sizeof pwbuf, &res) == 0 && res)
		snprintf(buf, len, "user %s (uid %u)", res->pw_name, (unsigned)st.st_uid);
	else
		snprintf(buf, len, "uid %u", (unsigned)st.st_uid);
}

/* The shm object `object` (the segment or its lock) exists and is not ours
 * to open: say whose, and how to use another name. */
static void shm_not_ours(const char *object, const char *segment, int rc, char *err,
			 size_t errlen)
{
	char owner[320];
	shm_owner(object, owner, sizeof owner);
	snprintf(err, errlen,
		 "%s: %s: it belongs to %s, not to uid %u: another user's coordinator uses the "
		 "segment name %s; give this one another name ([segment] name; the default is "
		 "/shmmap-UID for users other than root)",
		 object, strerror(-rc), owner[0] ? owner : "another user", (unsigned)geteuid(),
		 segment);
}

/* The segment could not be created: why, with what to do about it. */
static void create_failed(const struct shmmap_conf *cf, int rc, char *err, size_t errlen)
{
	struct statvfs vs;
	if (rc == -ENOSPC && statvfs("/dev/shm", &vs) == 0) {
		unsigned long long avail = (unsigned long long)vs.f_bavail * vs.f_frsize;
		unsigned long long total = (unsigned long long)vs.f_blocks * vs.f_frsize;
		snprintf(err, errlen,
			 "%s: cannot create a segment of %llu MiB: /dev/shm is too small "
			 "(%llu MiB free of %llu MiB): lower [segment] size, or enlarge /dev/shm "
			 "(mount -o remount,size=... /dev/shm)",
			 cf->segment.name, (unsigned long long)(cf->segment.size >> 20), avail >> 20,
			 total >> 20);
		return;
	}
	snprintf(err, errlen, "%s: cannot create segment of %llu bytes: %s", cf->segment.name,
		 (unsigned long long)cf->segment.size, shmmap_strerror(rc));
}

/*
 * One coordinator per segment: an exclusive flock on a companion object
 * (NAME.lock in the same shm namespace, never removed, so that every
 * coordinator locks the same one), taken before the segment is touched.
 * The kernel releases it when the process dies, however it dies.
 */
static int lock_segment(struct coord *c, char *err, size_t errlen)
{
	char name[256];
	snprintf(name, sizeof name, "%.240s.lock", c->conf.segment.name);
	c->lockfd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (c->lockfd < 0) {
		int e = errno;
		if (e == EACCES || e == EPERM)
			shm_not_ours(name, c->conf.segment.name, -e, err, errlen);
		else
			snprintf(err, errlen, "%s: %s", name, strerror(e));
		return -e;
	}
	/* Another user's lock (made first: anyone may create it) would let
	 * them keep this coordinator out, or hand it their segment. */
	struct stat st;
	if (fstat(c->lockfd, &st) < 0 || st.st_uid != geteuid()) {
		close(c->lockfd);
		c->lockfd = -1;
		shm_not_ours(name, c->conf.segment.name, -EACCES, err, errlen);
		return -EACCES;
	}
	if (flock(c->lockfd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		if (e == EWOULDBLOCK)
			snprintf(err, errlen,
				 "%s: another coordinator is running on this segment; not touching it",
				 c->conf.segment.name);
		else
			snprintf(err, errlen, "%s: %s", name, strerror(e));
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	return 0;
}

static void seg_params_of(const struct shmmap_conf *cf, struct seg_params *p)
{
	*p = (struct seg_params){
		.size = cf->segment.size, .max_size = cf->segment.max_size, .base = cf->segment.base,
		.max_clients = cf->segment.max_clients, .max_maps = cf->segment.max_maps,
		.huge_pages = cf->segment.huge_pages,
	};
}

/* Can the initial table of the map called name (NULL: one with no [map
 * NAME] section) fit in the heap at max_size (g)?  If not, why in err. */
static bool table_fits(const struct shmmap_conf *cf, const struct seg_geom *g, const char *name,
		       char *err, size_t errlen)
{
	struct map_params mp;
	shmmap__conf_map_params(cf, name ? name : "", NULL, &mp);
	uint64_t need = shmmap__table_bytes(mp.nbuckets, mp.nstripes);
	uint64_t heap = (uint64_t)g->npages_max * SEG_PAGE;
	if (need <= heap)
		return true;
	char where[96];
	if (name)
		snprintf(where, sizeof where, "[map %s]", name);
	else
		snprintf(where, sizeof where, "[map]");
	snprintf(err, errlen,
		 "%s: the initial table of %u buckets (%u stripes) takes %llu bytes, more than "
		 "the whole heap of the segment at its max size (%llu bytes): every map open "
		 "would fail; lower buckets (or capacity) there, or raise [segment] size or "
		 "max_size",
		 where, mp.nbuckets, mp.nstripes, (unsigned long long)need,
		 (unsigned long long)heap);
	return false;
}

int shmmap__coord_check_geometry(const struct shmmap_conf *cf, char *err, size_t errlen)
{
	struct seg_params p;
	seg_params_of(cf, &p);
	struct seg_geom g = {0};
	if (shmmap__seg_layout(&p, &g) < 0) {
		snprintf(err, errlen,
			 "segment.size %llu is too small for max_clients %u, max_maps %u and "
			 "max_size %llu (slots, directory, counters and page descriptors need "
			 "%llu bytes before the heap, and the heap at least 2 pages of 64 KiB)",
			 (unsigned long long)p.size, p.max_clients, p.max_maps,
			 (unsigned long long)(p.max_size ? p.max_size : p.size),
			 (unsigned long long)(g.heap_off ? g.heap_off : g.pages_off));
		return -EINVAL;
	}
	if (cf->nmaps > p.max_maps) {
		snprintf(err, errlen,
			 "%u [map NAME] sections, but max_maps is %u: raise [segment] max_maps "
			 "(each map takes one directory entry)",
			 cf->nmaps, p.max_maps);
		return -EINVAL;
	}
	if (!table_fits(cf, &g, NULL, err, errlen))
		return -EINVAL;
	for (uint32_t i = 0; i < cf->nmaps; i++)
		if (!table_fits(cf, &g, cf->maps[i].name, err, errlen))
			return -EINVAL;
	return 0;
}

/* The refusal of a segment made with another geometry (was) than the
 * configuration's (p). */
static void geometry_msg(const struct shmmap_conf *cf, const struct seg_params *p,
			 const struct seg_params *was, char *err, size_t errlen)
{
	uint64_t max = p->max_size ? p->max_size : p->size;
	snprintf(err, errlen,
		 "%s: a shmmap segment of another geometry exists: made with "
		 "max_size %llu, max_clients %u, max_maps %u; this "
		 "configuration has max_size %llu (segment.max_size, or its "
		 "size when unset), max_clients %u, max_maps %u; set them back "
		 "to adopt it with its data, or start with --reinit to replace "
		 "it (its data is lost)",
		 cf->segment.name, (unsigned long long)was->max_size, was->max_clients,
		 was->max_maps, (unsigned long long)max, p->max_clients, p->max_maps);
}

static void not_a_segment_msg(const struct shmmap_conf *cf, int rc, char *err, size_t errlen)
{
	snprintf(err, errlen,
		 "%s: an object of that name exists but is not a shmmap segment of "
		 "this configuration (%s); not touching it: remove it or start "
		 "with --reinit",
		 cf->segment.name, shmmap_strerror(rc));
}

int shmmap__coord_check_existing(const struct shmmap_conf *cf, char *err, size_t errlen)
{
	struct seg_params p, was;
	seg_params_of(cf, &p);
	int rc = shmmap__seg_peek(cf->segment.name, &was);
	if (rc == -ENOENT)
		return 0; /* a start creates it */
	if (rc == -EACCES || rc == -EPERM) {
		shm_not_ours(cf->segment.name, cf->segment.name, rc, err, errlen);
		return rc;
	}
	if (rc < 0) {
		if (shmmap__coord_half_loaded(cf->segment.name))
			return 0; /* a start replaces it and loads again */
		not_a_segment_msg(cf, rc, err, errlen);
		return rc;
	}
	uint64_t max = p.max_size ? p.max_size : p.size;
	if (was.max_size == max && was.max_clients == p.max_clients && was.max_maps == p.max_maps)
		return 0; /* a start adopts it */
	geometry_msg(cf, &p, &was, err, errlen);
	return -SHMMAP_EBADSEG;
}

static int setup_segment(struct coord *c, unsigned flags, char *err, size_t errlen)
{
	const struct shmmap_conf *cf = &c->conf;
	int rc = shmmap__coord_check_geometry(cf, err, errlen);
	if (rc < 0)
		return rc;
	struct seg_params p;
	seg_params_of(cf, &p);
	rc = shmmap__seg_open_existing(cf->segment.name, &p, &c->seg, &c->g);
	if (rc == 0) {
		c->adopted = true;
		log_notice("adopted existing segment %s (%llu bytes, max %llu)", cf->segment.name,
			   (unsigned long long)shmmap__seg_cur_size(&c->seg, &c->g),
			   (unsigned long long)c->g.max_size);
		/* The configured mode, also for a segment made under another
		 * (ours: open_existing checked): a `mode` tightened in the
		 * config left the segment as readable as before. */
		struct stat st;
		unsigned want = cf->segment.mode & 0777;
		if (fstat(c->seg.fd, &st) == 0 && (st.st_mode & 0777) != want) {
			if (fchmod(c->seg.fd, want) == 0)
				log_notice("segment %s: mode %03o set as configured (it was %03o)",
					   cf->segment.name, want, (unsigned)(st.st_mode & 0777));
			else
				log_warning("segment %s: cannot set mode %03o: %s", cf->segment.name,
					    want, strerror(errno));
		}
	} else if (rc == -EACCES || rc == -EPERM) {
		shm_not_ours(cf->segment.name, cf->segment.name, rc, err, errlen);
		return rc;
	} else if (rc != -ENOENT && shmmap__coord_half_loaded(cf->segment.name)) {
		log_warning("%s: its coordinator died while loading a snapshot into it: replacing it",
		      cf->segment.name);
		shm_unlink(cf->segment.name);
		rc = -ENOENT;
	} else if (rc != -ENOENT) {
		struct seg_params was;
		bool other_geometry = rc == -SHMMAP_EBADSEG &&
				      shmmap__seg_peek(cf->segment.name, &was) == 0;
		if (!(flags & COORD_REINIT) && other_geometry) {
			/* A segment of another geometry: say which, and that
			 * setting it back keeps the data (a user read "not a
			 * shmmap segment" and reached for --reinit). */
			geometry_msg(cf, &p, &was, err, errlen);
			return rc;
		}
		if (!(flags & COORD_REINIT)) {
			not_a_segment_msg(cf, rc, err, errlen);
			return rc;
		}
		if (other_geometry)
			log_warning("--reinit: replacing %s, a segment of another geometry (made "
				    "with max_size %llu, max_clients %u, max_maps %u): its data is lost",
				    cf->segment.name, (unsigned long long)was.max_size,
				    was.max_clients, was.max_maps);
		else
			log_warning("--reinit: replacing %s (%s)", cf->segment.name,
				    shmmap_strerror(rc));
		shm_unlink(cf->segment.name);
		rc = -ENOENT;
	}
	if (rc == -ENOENT) {
		rc = shmmap__seg_create(cf->segment.name, cf->segment.mode, &p, &c->seg, &c->g);
		if (rc < 0) {
			create_failed(cf, rc, err, errlen);
			return rc;
		}
		c->created = true;
		log_info("created segment %s: %llu bytes (max %llu), %u pages of %u KiB, at %p%s",
		      cf->segment.name, (unsigned long long)shmmap__seg_cur_size(&c->seg, &c->g),
		      (unsigned long long)c->g.max_size, (uint32_t)c->g.npages,
		      SEG_PAGE / 1024, (void *)c->seg.base,
		      c->seg.at_agreed_base ? "" : " (not at the agreed base)");
	}
	struct seg_header *h = seg_hdr(&c->seg);
	if ((h->flags & SEG_F_HUGE) && h->base % (UINT64_C(2) << 20))
		log_notice("segment %s: base %#llx is not a multiple of 2 MiB: processes that "
			   "map it there cannot map it in 2 MiB pages (huge_pages needs a "
			   "2 MiB-aligned base)",
			   cf->segment.name, (unsigned long long)h->base);
	c->seg.grow = coord_grow_hook;
	/* A new coordinator tries growing again, whatever the last one found. */
	atomic_store(&h->grow_state, SEG_GROW_OK);
	uint64_t me_start = 0;
	shmmap__proc_start_time(getpid(), &me_start);
	atomic_store(&h->coord_start, me_start);
	atomic_store(&h->coord_pid, (uint32_t)getpid());
	atomic_fetch_add(&h->coord_gen, 1);
	atomic_store(&h->state, SEG_DIRTY);
	return 0;
}

int shmmap__coord_init(struct coord **out, const struct shmmap_conf *conf, unsigned flags,
		       char *err, size_t errlen)
{
	struct coord *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->conf = *conf;
	c->lsock = c->epfd = c->wakefd = c->lockfd = -1;
	c->seg.fd = -1;
	pthread_mutex_init(&c->recover_mu, NULL);
	pthread_mutex_init(&c->save.mu, NULL);
	c->save.what = "cannot send the reply to SAVE";
	pthread_mutex_init(&c->greq.mu, NULL);
	c->greq.what = "cannot send the reply to GROW";
	pthread_mutex_init(&c->grow_mu, NULL);
	c->start_ms = shmmap__mono_ms();
	c->save_next_ms = c->start_ms + (uint64_t)conf->persistence.interval * 1000u;
	shmmap__log_set_level(conf->server.log_level);
	int rc = -ENOMEM;
	c->access = access_from(conf);
	if (!c->access)
		goto fail;
	/* Lock, bind, then the segment: a start that cannot serve (the socket
	 * path is taken or not writable) fails before it creates anything. */
	rc = lock_segment(c, err, errlen);
	if (rc < 0)
		goto fail;
	rc = bind_socket(c, err, errlen);
	if (rc < 0)
		goto fail;
	rc = setup_segment(c, flags, err, errlen);
	if (rc < 0)
		goto fail;
	c->lk = (struct lock_ctx){.s = &c->seg, .g = &c->g, .owner = LOCK_OWNER_COORD,
				  .wait_ms = COORD_LOCK_WAIT_MS};
	c->orphan = calloc(c->g.max_clients, sizeof *c->orphan);
	c->bye_gen = calloc(c->g.max_clients, sizeof *c->bye_gen);
	c->reclaim_at = calloc(c->g.max_maps, sizeof *c->reclaim_at);
	c->reclaim_dense = calloc(c->g.max_maps, sizeof *c->reclaim_dense);
	c->grow_track = calloc(c->g.max_maps, sizeof *c->grow_track);
	if (!c->orphan || !c->bye_gen || !c->reclaim_at || !c->reclaim_dense || !c->grow_track) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Slots left by an earlier coordinator: dead ones are recovered now,
	 * live ones are adopted and watched.  Then the allocator is swept, so
	 * that whatever instant the last coordinator died at, it is whole. */
	if (c->adopted) {
		shmmap__coord_adopt_repair(c);
		for (uint32_t i = 0; i < c->g.max_clients; i++) {
			struct seg_slot *sl = seg_slot(&c->seg, &c->g, i);
			uint32_t st = atomic_load(&sl->state);
			if (st == SLOT_DEAD ||
			    (st == SLOT_LIVE && pid_gone((pid_t)sl->pid, sl->start_time)))
				shmmap__coord_recover_slot(c, i, atomic_load(&sl->gen), true);
			else if (st == SLOT_LIVE)
				atomic_store(&c->orphan[i], true);
		}
		struct sweep_report r;
		pthread_mutex_lock(&c->recover_mu);
		shmmap__coord_sweep_or_defer(c, "adopted segment", &r);
		pthread_mutex_unlock(&c->recover_mu);
	}
	rc = shmmap__coord_load_snapshot(c, err, errlen);
	if (rc == 0) {
		/* The maps of [map NAME] sections exist from the start (one
		 * that exists already keeps the options it was created with). */
		for (uint32_t i = 0; i < c->conf.nmaps; i++) {
			uint32_t idx, gen;
			int r = shmmap__coord_open_map(c, c->conf.maps[i].name, true, false, NULL, &idx, &gen);
			if (r == -ENOSPC && shmmap__coord_dir_full(c))
				log_warning("map '%s' of the config not created: all %u map "
					    "directory entries are taken: raise [segment] max_maps "
					    "(or drop a map)",
					    c->conf.maps[i].name, c->g.max_maps);
			else if (r < 0)
				log_warning("map '%s' of the config not created: %s",
					    c->conf.maps[i].name, shmmap_strerror(r));
		}
	}
	if (rc < 0)
		goto fail; /* the segment is ours, made for the load: start over next time */
	c->sessions = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!c->sessions || c->epfd < 0 || c->wakefd < 0) {
		rc = -ENOMEM;
		snprintf(err, errlen, "cannot set up the event loop");
		goto fail;
	}
	if (listen(c->lsock, LISTEN_BACKLOG) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: listen: %s", c->conf.server.socket, strerror(-rc));
		goto fail;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->lsock};
	epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->lsock, &ev);
	ev.data.ptr = &c->wakefd;
	epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->wakefd, &ev);
	log_info("listening on %s", c->conf.server.socket);
	*out = c;
	return 0;
fail:
	/* Leave nothing behind: a segment this start created goes (an adopted
	 * one stays, with its data); coord_free removes the socket file. */
	if (c->created)
		shm_unlink(c->conf.segment.name);
	shmmap__coord_free(c);
	return rc;
}

int shmmap__coord_start(struct coord *c)
{
	int rc = pthread_create(&c->io, NULL, io_main, c);
	if (rc)
		return -rc;
	rc = pthread_create(&c->house, NULL, house_main, c);
	if (rc) {
		atomic_store(&c->stop, true);
		pthread_join(c->io, NULL);
		return -rc;
	}
	rc = pthread_create(&c->grow, NULL, grow_main, c);
	if (rc) {
		atomic_store(&c->stop, true);
		pthread_join(c->io, NULL);
		pthread_join(c->house, NULL);
		return -rc;
	}
	c->threads_started = true;
	return 0;
}

int shmmap__coord_stop(struct coord *c)
{
	if (!c->threads_started)
		return 0;
	atomic_store(&c->stop, true);
	uint64_t one = 1;
	if (write(c->wakefd, &one, sizeof one) < 0) { /* epoll_wait times out anyway */ }
	pthread_join(c->io, NULL);
	pthread_join(c->house, NULL);
	syscall(SYS_futex, (uint32_t *)&seg_hdr(&c->seg)->grow_wake, FUTEX_WAKE, 1, NULL, NULL, 0);
	pthread_join(c->grow, NULL);
	c->threads_started = false;
	/* The final snapshot, now that nothing else of ours runs. */
	if (c->conf.persistence.snapshot[0])
		return shmmap__coord_save_now(c, c->conf.persistence.snapshot, NULL, 0);
	return 0;
}

void shmmap__coord_free(struct coord *c)
{
	if (!c)
		return;
	(void)shmmap__coord_stop(c); /* (a stop before, or a failed start: said) */
	if (c->lsock >= 0) {
		close(c->lsock);
		unlink(c->conf.server.socket);
	}
	if (c->sessions) {
		rcu_barrier(); /* every call_rcu'd session is freed */
		cds_lfht_destroy(c->sessions, NULL);
	}
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->wakefd >= 0)
		close(c->wakefd);
	if (c->seg.base) {
		struct seg_header *h = seg_hdr(&c->seg);
		uint32_t me = (uint32_t)getpid();
		if (atomic_compare_exchange_strong(&h->coord_pid, &me, 0))
			atomic_store(&h->state, SEG_CLEAN);
		shmmap__seg_unmap(&c->seg);
	}
	if (c->lockfd >= 0)
		close(c->lockfd);
	free(c->orphan);
	free(c->bye_gen);
	free(c->reclaim_at);
	free(c->reclaim_dense);
	free(c->access); /* the threads, its only readers, are gone */
	if (c->grow_track)
		for (uint32_t m = 0; m < c->g.max_maps; m++)
			shmmap__grow_track_free(&c->grow_track[m]);
	free(c->grow_track);
	pthread_mutex_destroy(&c->recover_mu);
	pthread_mutex_destroy(&c->save.mu);
	pthread_mutex_destroy(&c->greq.mu);
	pthread_mutex_destroy(&c->grow_mu);
	free(c);
}
