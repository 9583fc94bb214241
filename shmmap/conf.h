/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * conf.h - the coordinator's configuration: defaults, the INI loader
 * (inih) and size parsing.  See conf/shmmap.ini for every key.
 */
#ifndef SHMMAP_CONF_H
#define SHMMAP_CONF_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define CONF_PATH_MAX 108 /* sun_path */
#define CONF_SNAPSHOT_MAX 256 /* snapshot file path (fits a protocol name) */
#define CONF_MAX_IDS 32

/* A list of uids or gids from the config ("0, 1000, www-data"). */
struct conf_ids {
	uint32_t n;
	uint32_t id[CONF_MAX_IDS];
};

/* A [map NAME] section: the options of one map, over [map].  has: the
 * CMS_* bits of the keys it sets. */
#define CONF_MAP_NAME_MAX 63 /* SHMMAP_NAME_MAX */
#define CONF_MAX_MAP_SECTIONS 64
enum {
	CMS_KEY_MAX = 1u << 0, CMS_VALUE_MAX = 1u << 1, CMS_BUCKETS = 1u << 2,
	CMS_STRIPES = 1u << 3, CMS_POLICY = 1u << 4, CMS_MAX_BUCKETS = 1u << 5,
	CMS_QUOTA = 1u << 6, CMS_DEFAULT_TTL = 1u << 7, CMS_CAPACITY = 1u << 8,
};
struct conf_map_sect {
	char name[CONF_MAP_NAME_MAX + 1];
	uint32_t has;
	uint32_t key_max, value_max, buckets, stripes, policy, max_buckets, default_ttl;
	uint64_t quota, capacity;
};

struct shmmap_conf {
	struct {
		char name[256];       /* POSIX shm name, "/shmmap": starts with '/', no other '/' */
		uint64_t size;        /* bytes, >= 1 MiB: the initial size */
		uint64_t max_size;    /* bytes, >= size: the most it may grow to (0 in a file: size) */
		uint64_t base;        /* agreed mapping address, page-aligned, user space */
		unsigned mode;        /* octal file mode, default 0600 */
		uint32_t max_clients; /* 1..4096, default 128 */
		uint32_t max_maps;    /* 1..4096, default 64 */
		bool huge_pages;      /* advise transparent huge pages, default yes */
	} segment;
	struct {
		char socket[CONF_PATH_MAX]; /* Unix socket path */
		unsigned socket_mode;       /* octal, default 0600 */
		/* Peers allowed besides root and the coordinator's own uid. */
		struct conf_ids allow_uids, allow_gids;
		/* Peers allowed read-only (unless also allowed above). */
		struct conf_ids readonly_uids, readonly_gids;
		int log_level;              /* syslog priority LOG_ERR (3)..LOG_DEBUG (7), default LOG_INFO */
	} server;
	struct {
		uint32_t key_max;   /* 1..65535, default 250 */
		uint32_t value_max; /* 0..(1 GiB), default 1 MiB */
		uint32_t buckets;   /* initial buckets: power of two, default 4096 (maps grow) */
		uint32_t stripes;   /* power of two <= buckets, default 256 */
		uint32_t policy;    /* MAP_POLICY_EVICT (default) or MAP_POLICY_REJECT */
		uint32_t max_buckets; /* growth stops here: power of two >= buckets, default 2^30 */
		uint32_t grow_step; /* buckets per stripe the coordinator moves per round, default 64;
				       0: writers alone move them (tests) */
		uint64_t quota;     /* bytes of entries a map may use, 0 = no quota */
		uint32_t default_ttl; /* seconds for puts with ttl 0, 0 = none */
		uint64_t capacity;  /* entries expected: initial buckets follow; 0 = buckets */
	} map;
	/* [map NAME] sections: maps created at start, with these options. */
	struct conf_map_sect maps[CONF_MAX_MAP_SECTIONS];
	uint32_t nmaps;
	struct {
		char snapshot[CONF_SNAPSHOT_MAX]; /* file path, "" = none */
		uint32_t interval;  /* seconds between snapshots, 0 = only on request and at exit */
	} persistence;
};

/* Fill c with the defaults (socket: $SHMMAP_SOCKET if set, else SHMMAP_DEFAULT_SOCKET). */
void shmmap__conf_defaults(struct shmmap_conf *c);

/*
 * Load the INI file at path over c (which holds defaults).  Unknown sections
 * or keys, malformed values, values out of range and lines the parser cannot
 * read are errors.  On error returns a negative errno (-ENOENT/-EACCES for an
 * unreadable file, -EINVAL for bad content) and writes to err a message
 * "PATH:LINE: KEY: why" (or "PATH: why").  $SHMMAP_SOCKET, when set,
 * overrides [server] socket.
 */
int shmmap__conf_load(struct shmmap_conf *c, const char *path, char *err, size_t errlen);

/*
 * The keys that differ between a and b and that a running coordinator
 * cannot change (every key but [server] allow_uids, allow_gids,
 * readonly_uids, readonly_gids and log_level, which SIGHUP reloads):
 * writes up to max of their names ("segment.size") to names and returns
 * how many differ.
 */
size_t shmmap__conf_fixed_changes(const struct shmmap_conf *a, const struct shmmap_conf *b,
				  const char **names, size_t max);

/* A [map NAME] section that differs between two configs: its name (in
 * one of them) and what happened to it ("added", "removed", "changed"). */
struct conf_map_change {
	const char *name;
	const char *what;
};

/*
 * The [map NAME] sections added in b, removed from a, or whose keys differ:
 * none of that reaches a running coordinator (it creates the maps of the
 * sections at start only).  Writes up to max of them to out (pointers into
 * a and b) and returns how many there are.
 */
size_t shmmap__conf_map_changes(const struct shmmap_conf *a, const struct shmmap_conf *b,
				struct conf_map_change *out, size_t max);

/* Parse "123", "64K", "16M", "1G" (also lower case, optional 'B'/"iB"), into bytes. */
int shmmap__parse_size(const char *s, uint64_t *out);

#endif /* SHMMAP_CONF_H */
