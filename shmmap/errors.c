/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * errors.c - shmmap_strerror(): one description for every error code the
 * library returns, errno values and our own SHMMAP_E* codes alike.
 * Invariant: never returns NULL, never allocates, thread-safe.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

SHMMAP_EXPORT const char *shmmap_strerror(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0: return "success";
	case SHMMAP_EBADSEG: return "shared segment header is invalid (wrong magic, version or size)";
	case SHMMAP_EVERSION: return "protocol or layout version mismatch with the coordinator";
	case SHMMAP_ECORRUPT: return "a structure in the shared segment is corrupt (run shmmapctl check)";
	case SHMMAP_EDETACHED:
		return "this attachment is no longer valid (its client slot was recovered, or its "
		       "segment was removed): detach and attach again";
	case SHMMAP_ESEGSIZE:
		return "the shared segment grew to a size this process cannot map (beyond its "
		       "reserved address range or the object's length): nothing was changed";
	case ENOENT: return "no such key or map";
	case EEXIST: return "key already exists";
	case E2BIG: return "key or value larger than the map allows";
	case ENOSPC: return "shared segment is full";
	case ENOBUFS: return "value larger than the buffer";
	case ESTALE: return "map handle is stale: its map was dropped (or dropped and created again)";
	case ECONNREFUSED: return "no coordinator is listening at the socket path (is shmmapd running?)";
	case EBADF: return "map handle does not belong to this attachment";
	case ERANGE: return "integer overflow";
	case ECONNRESET: return "connection to the coordinator lost";
	}
	/* strerror() of glibc returns static strings for known codes ("Unknown
	 * error N" uses a thread-local buffer): still never NULL. */
	if (err < SHMMAP_ERRNO_BASE)
		return strerror(err);
	return "unknown shmmap error";
}
