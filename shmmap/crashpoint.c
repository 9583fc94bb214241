/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * crashpoint.c - the test hook that kills (or freezes) a writer at the k-th
 * store to shared memory, for the crash-point sweep tests.  It exists only
 * in the test build of the library (-DSHMMAP_CRASHPOINTS); the normal build
 * compiles CRASH_POINT() to nothing and this file to an empty unit.
 *
 * State is per process: the countdown is armed by the test in the child
 * that is to die, and only that process counts.
 */
#include "internal.h"

#ifdef SHMMAP_CRASHPOINTS
#include <signal.h>

static _Atomic unsigned long countdown; /* 0 = disarmed */
static _Atomic unsigned long passed;
static _Atomic int crash_sig;
static _Atomic bool every; /* raise again at every point after the k-th */

void shmmap__crash_arm(unsigned long k, int sig)
{
	atomic_store(&passed, 0);
	atomic_store(&crash_sig, sig);
	atomic_store(&every, false);
	atomic_store(&countdown, k);
}

void shmmap__crash_arm_every(unsigned long k, int sig)
{
	shmmap__crash_arm(k, sig);
	atomic_store(&every, true);
}

unsigned long shmmap__crash_count(void)
{
	return atomic_load(&passed);
}

void shmmap__crash_point(void)
{
	if (atomic_load_explicit(&countdown, memory_order_relaxed) == 0)
		return;
	atomic_fetch_add(&passed, 1);
	if (atomic_fetch_sub(&countdown, 1) == 1) {
		if (atomic_load(&every))
			atomic_store(&countdown, 1);
		raise(atomic_load(&crash_sig));
	}
}
#else
typedef int shmmap_crashpoints_disabled; /* ISO C wants a non-empty unit */
#endif
