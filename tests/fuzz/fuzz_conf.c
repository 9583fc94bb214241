/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * fuzz_conf.c - libFuzzer target for the configuration loader
 * (shmmap__conf_load in shmmap/conf.c, on the system inih), built and run by
 * scripts/fuzz.sh.
 *
 * Each input is the whole content of a config file.  It is written to a
 * memfd and loaded through /proc/self/fd/N, so the real fopen/inih path is
 * taken and nothing touches the disk.  Beyond "no crash, no leak", the
 * loader's contract (conf.h, conf.c) is checked, each broken property being
 * a __builtin_trap():
 *   - it returns 0 or -EINVAL (-ENOMEM only if inih could not allocate);
 *   - on error it leaves the config as it was (here: the defaults) and
 *     writes a message "PATH: ..." or "PATH:LINE: ...", NUL-terminated;
 *   - on success the message is empty and every value is within the range
 *     conf/shmmap.ini documents.
 * The descriptor is closed after every input (libFuzzer -detect_leaks and
 * the fd count stay flat).  $SHMMAP_SOCKET is unset once at start.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "internal.h"

#define CHECK(cond)                                  \
	do {                                         \
		if (!(cond))                         \
			__builtin_trap();            \
	} while (0)

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)
#define USER_END UINT64_C(0x7ffffffff000)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static bool terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static void check_ids(const struct conf_ids *ids)
{
	CHECK(ids->n <= CONF_MAX_IDS);
}

/* What a successful load promises (conf.h and conf/shmmap.ini). */
static void check_valid(const struct shmmap_conf *c)
{
	const char *name = c->segment.name;
	CHECK(terminated(name, sizeof c->segment.name));
	CHECK(name[0] == '/' && name[1] != '\0' && strchr(name + 1, '/') == NULL);
	CHECK(c->segment.size >= MIB && c->segment.size <= TIB);
	CHECK(c->segment.base != 0 && c->segment.base % SEG_PAGE == 0);
	CHECK(c->segment.size <= USER_END && c->segment.base <= USER_END - c->segment.size);
	CHECK(c->segment.mode <= 0777 && c->server.socket_mode <= 0777);
	CHECK(c->segment.max_clients >= 1 && c->segment.max_clients <= SEG_MAX_CLIENTS_LIMIT);
	CHECK(c->segment.max_maps >= 1 && c->segment.max_maps <= SEG_MAX_MAPS_LIMIT);
	CHECK(terminated(c->server.socket, sizeof c->server.socket));
	check_ids(&c->server.allow_uids);
	check_ids(&c->server.allow_gids);
	check_ids(&c->server.readonly_uids);
	check_ids(&c->server.readonly_gids);
	CHECK(c->map.key_max >= 1 && c->map.key_max <= 65535);
	CHECK(c->map.value_max <= GIB);
	CHECK(pow2(c->map.buckets) && c->map.buckets <= (UINT32_C(1) << 26));
	CHECK(pow2(c->map.stripes) && c->map.stripes <= 65536);
	CHECK(c->map.stripes <= c->map.buckets);
	CHECK(c->map.policy == MAP_POLICY_EVICT || c->map.policy == MAP_POLICY_REJECT);
	const char *snap = c->persistence.snapshot;
	CHECK(terminated(snap, sizeof c->persistence.snapshot));
	CHECK(snap[0] == '\0' || snap[0] == '/');
	CHECK(c->persistence.interval <= 86400u * 365u);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	unsetenv("SHMMAP_SOCKET");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("shmmap-fuzz-conf", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	size_t done = 0;
	while (done < size) {
		ssize_t w = write(fd, data + done, size - done);
		if (w <= 0) {
			close(fd);
			return 0;
		}
		done += (size_t)w;
	}
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);

	struct shmmap_conf c, defaults;
	shmmap__conf_defaults(&defaults);
	shmmap__conf_defaults(&c);
	char err[512];
	memset(err, 'x', sizeof err);
	int rc = shmmap__conf_load(&c, path, err, sizeof err);
	close(fd);

	CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
	CHECK(terminated(err, sizeof err));
	if (rc == 0) {
		CHECK(err[0] == '\0');
		check_valid(&c);
	} else {
		size_t pl = strlen(path);
		CHECK(memcmp(&c, &defaults, sizeof c) == 0);
		CHECK(strncmp(err, path, pl) == 0 && err[pl] == ':' && err[pl + 1] != '\0');
	}
	return 0;
}
