/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * version.c - shmmap_version(): the version of the library as built.  The
 * version is written in one place, the SHMMAP_VERSION_* macros of
 * include/shmmap.h; the Makefile reads the soname's major from there too.
 * Invariant: no state, never NULL, thread-safe.
 */
#include "internal.h"

#define VERSION_STR_(x) #x
#define VERSION_STR(x) VERSION_STR_(x)

/* Built from the numbers, so the string cannot disagree with them;
 * tests/check_version.c checks it against SHMMAP_VERSION_STRING. */
static const char version[] = VERSION_STR(SHMMAP_VERSION_MAJOR) "." VERSION_STR(
	SHMMAP_VERSION_MINOR) "." VERSION_STR(SHMMAP_VERSION_PATCH);

SHMMAP_EXPORT const char *shmmap_version(int *major, int *minor, int *patch)
{
	if (major)
		*major = SHMMAP_VERSION_MAJOR;
	if (minor)
		*minor = SHMMAP_VERSION_MINOR;
	if (patch)
		*patch = SHMMAP_VERSION_PATCH;
	return version;
}
