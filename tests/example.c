/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * example.c - the README's example, a complete program: attach to the
 * coordinator, store a key with a TTL, read it back, count a hit.
 *   cc -o example example.c $(pkg-config --cflags --libs shmmap)
 */
#include <stdio.h>
#include <shmmap.h>

int main(void)
{
	shmmap *sm;
	shmmap_map m;
	int rc = shmmap_attach(NULL, &sm); /* $SHMMAP_SOCKET or the default socket */
	if (rc < 0) {
		fprintf(stderr, "attach: %s\n", shmmap_strerror(rc));
		return 1;
	}
	char buf[256];
	size_t n;
	int64_t hits;
	if ((rc = shmmap_open(sm, "sessions", SHMMAP_CREATE, &m)) < 0 ||
	    (rc = shmmap_put(sm, m, "user:42", 7, "alice", 5, 60 /* ttl s */, 0)) < 0 ||
	    (rc = shmmap_get(sm, m, "user:42", 7, buf, sizeof buf, &n)) < 0 ||
	    (rc = shmmap_incr(sm, m, "hits", 4, 1, &hits)) < 0) { /* stored as decimal ASCII */
		fprintf(stderr, "shmmap: %s\n", shmmap_strerror(rc));
		shmmap_detach(sm);
		return 1;
	}
	printf("user:42 = %.*s, hits = %lld\n", (int)n, buf, (long long)hits);
	shmmap_detach(sm);
	return 0;
}
