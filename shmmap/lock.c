/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * lock.c - cross-process futex locks that survive the death of their owner.
 *
 * A lock word is 0 when free, else the owner id (client slot + 1, or
 * LOCK_OWNER_COORD) with LOCK_WAITERS set when someone may be asleep on it.
 * The futex calls are the shared (non-PRIVATE) ones: the word lives in a
 * MAP_SHARED mapping that other processes map at other addresses.
 *
 * Algorithm (Drepper's "mutex 2", with an owner instead of 1):
 *   lock:   CAS 0 -> me.  Contended: set LOCK_WAITERS and FUTEX_WAIT with
 *           a timeout.  Whoever takes the lock after sleeping takes it with
 *           LOCK_WAITERS set, so that its unlock wakes the next sleeper.
 *   unlock: exchange 0; if LOCK_WAITERS was set, FUTEX_WAKE one.
 * Dead owners: a sleeper wakes up every LOCK_SLICE_NS and checks whether
 * the owner is still alive (its slot is LIVE, its pid exists and has the
 * recorded start time).  If not, it takes the lock over with a CAS from the
 * exact word it saw (so exactly one taker wins) and tells its caller, who
 * must repair what the lock guards.  A waiter never sleeps forever.
 *
 * Before its first sleep on a lock, a thread calls the process's wait hook
 * (shmmap_set_wait_hook), if one is set: a binding releases its GIL there.
 *
 * Bounded waits: a lock_ctx with wait_ms (the coordinator's) gives up with
 * -EBUSY once a live owner has held the lock that long; the caller defers.
 *
 * Allocator locks (classes, pool) are never taken over by a waiter: what
 * they guard is repaired only by the coordinator's sweep (sweep.c), which
 * takes them over itself.  Their waiters (shmmap__lock_nosteal) give up
 * with -EAGAIN once the owner has been dead for LOCK_DEAD_WAIT_MS.
 */
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define LOCK_SPIN 64
#define LOCK_SLICE_NS (20 * 1000 * 1000) /* 20 ms between liveness checks */

/* shmmap_set_wait_hook's function: called before a sleep on a lock. */
static _Atomic(shmmap_wait_hook) wait_hook;

SHMMAP_EXPORT void shmmap_set_wait_hook(shmmap_wait_hook hook)
{
	atomic_store_explicit(&wait_hook, hook, memory_order_release);
}

void shmmap__wait_hook_run(void)
{
	shmmap_wait_hook hook = atomic_load_explicit(&wait_hook, memory_order_acquire);
	if (hook)
		hook();
}

static long futex(_Atomic uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (uint32_t *)uaddr, op, val, ts, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static bool pid_alive(uint32_t pid, uint64_t start_time)
{
	if (pid == 0)
		return false;
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
		return false;
	uint64_t now;
	int rc = shmmap__proc_start_time((pid_t)pid, &now);
	if (rc == -ESRCH)
		return false; /* gone, or a zombie */
	/* A pid that exists with another start time was reused. */
	if (rc == 0 && start_time != 0 && now != start_time)
		return false;
	return true;
}

bool shmmap__slot_alive(const struct seg *s, const struct seg_geom *g, uint32_t slot)
{
	if (slot >= g->max_clients)
		return false;
	const struct seg_slot *sl = seg_slot(s, g, slot);
	if (atomic_load_explicit(&sl->state, memory_order_acquire) != SLOT_LIVE)
		return false;
	return pid_alive(__atomic_load_n(&sl->pid, __ATOMIC_RELAXED),
			 __atomic_load_n(&sl->start_time, __ATOMIC_RELAXED));
}

bool shmmap__owner_alive(const struct lock_ctx *c, uint32_t owner)
{
	if (owner == c->owner)
		return true; /* another thread of this very process */
	if (owner == LOCK_OWNER_COORD) {
		const struct seg_header *h = seg_hdr(c->s);
		uint64_t start = atomic_load(&h->coord_start);
		return pid_alive(atomic_load(&h->coord_pid), start);
	}
	if (owner == 0 || owner > c->g->max_clients)
		return false; /* not a valid owner: garbage in a lock word */
	return shmmap__slot_alive(c->s, c->g, owner - 1);
}

bool shmmap__lock_take_from(_Atomic uint32_t *w, uint32_t owner, uint32_t me)
{
	uint32_t v = atomic_load(w);
	while (v != 0 && (v & LOCK_OWNER_MASK) == owner) {
		/* Keep the waiters bit: whoever sleeps on it gets woken. */
		if (atomic_compare_exchange_weak(w, &v, me | LOCK_WAITERS))
			return true;
	}
	return false;
}

/* steal: take over from a dead owner (returns 1); else give up with
 * -EAGAIN once the owner has been seen dead for LOCK_DEAD_WAIT_MS. */
static int lock_slow(_Atomic uint32_t *w, const struct lock_ctx *c, uint64_t *waits, bool steal)
{
	const uint32_t me = c->owner;
	uint32_t v = 0;
	for (int i = 0; i < LOCK_SPIN; i++) {
		cpu_relax();
		v = atomic_load_explicit(w, memory_order_relaxed);
		if (v == 0 && atomic_compare_exchange_weak_explicit(
				      w, &v, me, memory_order_acquire, memory_order_relaxed))
			return 0;
	}
	if (waits)
		atomic_fetch_add_explicit((_Atomic uint64_t *)waits, 1, memory_order_relaxed);
	uint64_t dead_since = 0, give_up = c->wait_ms ? shmmap__mono_ms() + c->wait_ms : 0;
	bool hooked = false;
	for (;;) {
		v = atomic_load_explicit(w, memory_order_relaxed);
		if (v == 0) {
			if (atomic_compare_exchange_weak_explicit(w, &v, me | LOCK_WAITERS,
								  memory_order_acquire,
								  memory_order_relaxed))
				return 0;
			continue;
		}
		if (!(v & LOCK_WAITERS)) {
			if (!atomic_compare_exchange_weak_explicit(w, &v, v | LOCK_WAITERS,
								   memory_order_relaxed,
								   memory_order_relaxed))
				continue;
			v |= LOCK_WAITERS;
		}
		struct timespec ts = {0, LOCK_SLICE_NS};
		if (give_up) {
			uint64_t now = shmmap__mono_ms();
			if (now >= give_up && shmmap__owner_alive(c, v & LOCK_OWNER_MASK))
				return -EBUSY; /* alive, and holding on: maybe stopped */
			uint64_t left = now < give_up ? give_up - now : 1;
			if (left * 1000000u < (uint64_t)LOCK_SLICE_NS)
				ts.tv_nsec = (long)(left * 1000000u);
		}
		shmmap_wait_hook hook = atomic_load_explicit(&wait_hook, memory_order_acquire);
		if (hook && !hooked) {
			hooked = true; /* (once per wait) */
			hook();
		}
		long r = futex(w, FUTEX_WAIT, v, &ts);
		if (r == 0 || errno != ETIMEDOUT)
			continue;
		if (shmmap__owner_alive(c, v & LOCK_OWNER_MASK)) {
			dead_since = 0;
			continue;
		}
		if (steal) {
			/* Take over from the dead owner: only the CAS winner does. */
			if (atomic_compare_exchange_strong_explicit(w, &v, me | LOCK_WAITERS,
								    memory_order_acquire,
								    memory_order_relaxed))
				return 1;
		} else if (me == LOCK_OWNER_COORD) {
			return -EAGAIN; /* the coordinator sweeps rather than wait */
		} else if (!dead_since) {
			dead_since = shmmap__mono_ms();
		} else if (shmmap__mono_ms() - dead_since >= LOCK_DEAD_WAIT_MS) {
			return -EAGAIN;
		}
	}
}

int shmmap__lock(_Atomic uint32_t *w, const struct lock_ctx *c, uint64_t *waits)
{
	uint32_t v = 0;
	if (atomic_compare_exchange_strong_explicit(w, &v, c->owner, memory_order_acquire,
						    memory_order_relaxed))
		return 0;
	return lock_slow(w, c, waits, true);
}

int shmmap__lock_nosteal(_Atomic uint32_t *w, const struct lock_ctx *c)
{
	uint32_t v = 0;
	if (atomic_compare_exchange_strong_explicit(w, &v, c->owner, memory_order_acquire,
						    memory_order_relaxed))
		return 0;
	return lock_slow(w, c, NULL, false);
}

void shmmap__unlock_wake(_Atomic uint32_t *w)
{
	futex(w, FUTEX_WAKE, 1, NULL);
}
