/*
 * frag.c - large values among small ones in a full cache: how much a
 * value of several pages costs to admit.  One writer puts --per small
 * values (100..2000 B, random keys of 400,000) for each large value (--big
 * bytes, 64 keys), --rounds times, into one map of a segment that does not
 * grow (scripts/bench-cache.sh starts the coordinator, 128M).  In the
 * second half it prints, averaged over the large puts: the share of the
 * segment in free pages just before one (free pages scattered among the
 * small values' pages: fragmentation), live key + value bytes over the
 * segment, and the entries evicted per round (a large put and its small
 * ones).
 *
 * Usage: frag --sock PATH [--rounds N] [--big BYTES] [--per N]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmmap.h"
#include "internal.h" /* the header's free page count */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int put(shmmap *sm, shmmap_map m, const char *k, const void *v, size_t n)
{
	int rc = shmmap_put(sm, m, k, strlen(k), v, n, 0, 0);
	if (rc < 0)
		fprintf(stderr, "frag: put %s (%zu B): %s\n", k, n, shmmap_strerror(rc));
	return rc;
}

int main(int argc, char **argv)
{
	const char *sock = NULL;
	long rounds = 2000, per = 20;
	size_t big = 1000000;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--sock") && i + 1 < argc)
			sock = argv[++i];
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atol(argv[++i]);
		else if (!strcmp(argv[i], "--big") && i + 1 < argc)
			big = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--per") && i + 1 < argc)
			per = atol(argv[++i]);
		else {
			fprintf(stderr, "usage: frag --sock PATH [--rounds N] [--big BYTES] [--per N]\n");
			return 2;
		}
	}
	if (!sock || rounds < 2 || per < 0 || big < 1 || big > (1u << 20)) {
		fprintf(stderr, "frag: --sock is required; --rounds >= 2, --big 1..1048576\n");
		return 2;
	}
	shmmap *sm;
	shmmap_map m;
	struct shmmap_stats st;
	int rc = shmmap_attach(sock, &sm);
	if (rc == 0)
		rc = shmmap_open(sm, "frag", SHMMAP_CREATE, &m);
	if (rc < 0) {
		fprintf(stderr, "frag: %s\n", shmmap_strerror(rc));
		return 1;
	}
	static unsigned char v[1 << 20];
	memset(v, 7, sizeof v);
	const struct seg_header *h = seg_hdr(&sm->seg);
	double seg_bytes = (double)sm->geom.npages * SEG_PAGE, free_sum = 0, live_sum = 0;
	uint64_t s = 88172645463325252ull, ev0 = 0;
	long n = 0;
	char k[32];
	for (long r = 0; r < rounds; r++) {
		for (long i = 0; i < per; i++) {
			snprintf(k, sizeof k, "s%llu", (unsigned long long)(rnd(&s) % 400000));
			if (put(sm, m, k, v, 100 + rnd(&s) % 1900) < 0)
				return 1;
		}
		snprintf(k, sizeof k, "b%llu", (unsigned long long)(rnd(&s) % 64));
		double fr = (double)__atomic_load_n(&h->pool_free, __ATOMIC_RELAXED) * SEG_PAGE /
			    seg_bytes;
		if (put(sm, m, k, v, big) < 0)
			return 1;
		if (shmmap_stats(sm, m, &st) < 0)
			return 1;
		if (r == rounds / 2) {
			ev0 = st.evictions;
		} else if (r > rounds / 2) {
			free_sum += fr;
			live_sum += (double)st.bytes / seg_bytes;
			n++;
		}
	}
	if (shmmap_stats(sm, m, &st) < 0)
		return 1;
	printf("  %zu B values, %ld small puts each: free pages before one %.3f of the segment, "
	       "live bytes %.3f, %.2f entries evicted per round\n",
	       big, per, free_sum / (double)n, live_sum / (double)n,
	       (double)(st.evictions - ev0) / (double)n);
	shmmap_detach(sm);
	return 0;
}
