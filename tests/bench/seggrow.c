/*
 * seggrow.c - how long puts wait while the segment grows: one writer
 * stores fresh keys with values of --vlen bytes (100 KB by default) as fast
 * as it can into a segment that starts at the default size and may grow to
 * [segment] max_size (scripts/bench-growth.sh starts the coordinator), until
 * it has written --mb megabytes.  Every put is timed; it prints the slowest
 * put, the 99.9th percentile, how many took over 10 ms and where, the
 * total time, and reads every value back (exit 1 if one is missing or
 * wrong: a put that waited must still have stored its value).
 *
 * Usage: seggrow --sock PATH [--mb N] [--vlen BYTES] [--label TEXT]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmmap.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Value i: vlen bytes derived from i. */
static void fill(unsigned char *v, size_t vlen, uint64_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull + 1;
	for (size_t k = 0; k < vlen; k += 8) {
		x ^= x >> 29;
		x *= 0xbf58476d1ce4e5b9ull;
		memcpy(v + k, &x, vlen - k < 8 ? vlen - k : 8);
	}
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *label = "segment growth";
	uint64_t mb = 3000;
	size_t vlen = 100000;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--sock") && i + 1 < argc)
			sock = argv[++i];
		else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
			mb = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--vlen") && i + 1 < argc)
			vlen = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--label") && i + 1 < argc)
			label = argv[++i];
		else {
			fprintf(stderr, "usage: seggrow --sock PATH [--mb N] [--vlen BYTES] "
					"[--label TEXT]\n");
			return 2;
		}
	}
	if (!sock || vlen < 8 || vlen > (1u << 20) || mb == 0) {
		fprintf(stderr, "seggrow: --sock is required; --vlen 8..1048576, --mb > 0\n");
		return 2;
	}
	uint64_t n = mb * 1000000u / vlen;
	shmmap *sm;
	shmmap_map m;
	int rc = shmmap_attach(sock, &sm);
	if (rc == 0)
		rc = shmmap_open(sm, "seggrow", SHMMAP_CREATE, &m);
	if (rc < 0) {
		fprintf(stderr, "seggrow: %s\n", shmmap_strerror(rc));
		return 1;
	}
	unsigned char *v = malloc(vlen), *w = malloc(vlen);
	double *lat = malloc(n * sizeof *lat);
	if (!v || !w || !lat) {
		fprintf(stderr, "seggrow: out of memory\n");
		return 1;
	}
	printf("%s: %llu puts of %zu-byte values (%llu MB), one writer\n", label,
	       (unsigned long long)n, vlen, (unsigned long long)mb);
	char key[32];
	double t0 = now_s(), worst = 0;
	uint64_t slow = 0, worst_at = 0;
	for (uint64_t i = 0; i < n; i++) {
		int kl = snprintf(key, sizeof key, "k%llu", (unsigned long long)i);
		fill(v, vlen, i);
		double a = now_s();
		rc = shmmap_put(sm, m, key, (size_t)kl, v, vlen, 0, 0);
		lat[i] = now_s() - a;
		if (rc < 0) {
			fprintf(stderr, "seggrow: put %llu (at %.0f MB): %s\n", (unsigned long long)i,
				(double)i * (double)vlen / 1e6, shmmap_strerror(rc));
			return 1;
		}
		if (lat[i] > 0.010)
			slow++;
		if (lat[i] > worst) {
			worst = lat[i];
			worst_at = i;
		}
	}
	double total = now_s() - t0;
	for (uint64_t i = 0; i < n; i++) {
		int kl = snprintf(key, sizeof key, "k%llu", (unsigned long long)i);
		size_t got = 0;
		fill(v, vlen, i);
		rc = shmmap_get(sm, m, key, (size_t)kl, w, vlen, &got);
		if (rc < 0 || got != vlen || memcmp(v, w, vlen) != 0) {
			fprintf(stderr, "seggrow: value %llu is %s\n", (unsigned long long)i,
				rc < 0 ? shmmap_strerror(rc) : "wrong");
			return 1;
		}
	}
	qsort(lat, n, sizeof *lat, cmp_double);
	printf("  slowest put %.1f ms (at %.0f MB), p99.9 %.2f ms, p50 %.1f us; "
	       "%llu puts over 10 ms\n", worst * 1e3, (double)worst_at * (double)vlen / 1e6,
	       lat[n * 999 / 1000] * 1e3, lat[n / 2] * 1e6, (unsigned long long)slow);
	printf("  %.2f s in all (%.0f MB/s); every value read back\n", total,
	       (double)n * (double)vlen / 1e6 / total);
	shmmap_detach(sm);
	free(lat);
	free(v);
	free(w);
	return 0;
}
