/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * conf.c - the coordinator's configuration: defaults, the INI loader (on the
 * system inih) and the size/number parsers.  conf/shmmap.ini documents every
 * key.
 *
 * Invariants:
 *   - shmmap__conf_load() changes *c only on success: it works on a copy,
 *     applies every check (per key, then cross-field, then $SHMMAP_SOCKET)
 *     and copies the result back at the end.
 *   - Every error is a negative errno plus one message in err (the first
 *     error wins): "PATH:LINE: section.key: why" for a bad value,
 *     "PATH:LINE: why" for a bad line, "PATH: why" for an unreadable file.
 *     Nothing here prints, exits, aborts or touches global state (inih's
 *     runtime-option globals are left alone); no allocation.
 *   - Lines reach inih only through conf_reader(), which counts them (so the
 *     handler knows its line: Debian's inih has no INI_HANDLER_LINENO) and
 *     refuses what inih would silently get wrong:
 *       * a line longer than CONF_LINE_MAX bytes (inih's fgets-style buffer
 *         is INI_MAX_LINE = 200 bytes; the rest of a longer line would be
 *         parsed as a line of its own);
 *       * a NUL byte (inih would cut the line there);
 *       * an unknown [section] (inih does not tell the handler about
 *         section lines, so an empty unknown section would pass).
 *     For the same reason it records each section header itself, as inih
 *     reads it (section_end()): the section of the lines that follow
 *     (x->section, which the handler uses: inih's copy is cut to 49
 *     bytes), and every [map NAME], so that one with no key still makes
 *     its map.
 *     It strips the line terminator, a UTF-8 BOM on line 1 and leading
 *     whitespace, so inih's multi-line continuation (an indented line
 *     continues the previous value) never applies: indentation is ignored
 *     and every key = value pair stands on its own line.
 *   - conf_keys is the one list of keys: section, name, kind, range, and
 *     whether SIGHUP applies it to a running coordinator (reloadable);
 *     shmmap__conf_fixed_changes() names the others when they differ.
 *     No [map NAME] section is reloadable: shmmap__conf_map_changes() names
 *     those added, removed or changed.
 *   - Two defaults depend on the effective uid and the environment
 *     (paths.c): segment.name and server.socket.
 *   - Values as inih hands them: trimmed, with an inline comment removed
 *     only when it starts with ';' after whitespace (Debian's inih
 *     default); '#' starts a comment only at the start of a line.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <grp.h>
#include <pwd.h>
#include <syslog.h>
#include <unistd.h>

#include <ini.h>

#include "conf.h"
#include "internal.h"
#include "paths.h"

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)

/* Longest line accepted, terminator excluded (inih's buffer is 200 bytes). */
#define CONF_LINE_MAX 199
/* x86-64 user space with 4-level page tables ends at 2^47 - 4 KiB. */
#define CONF_USER_END UINT64_C(0x7ffffffff000)
#define CONF_BASE_ALIGN ((uint64_t)SEG_PAGE)
#define CONF_SHM_NAME_MAX 255

_Static_assert(SEG_PAGE == 64u * 1024u, "conf/shmmap.ini documents a 64 KiB base alignment");
_Static_assert(SEG_MAX_CLIENTS_LIMIT == 4096u && SEG_MAX_MAPS_LIMIT == 4096u,
	       "conf/shmmap.ini documents max_clients/max_maps <= 4096");
_Static_assert(sizeof(((struct shmmap_conf *)0)->segment.name) == CONF_SHM_NAME_MAX + 1,
	       "segment.name holds a 255-byte name");

enum conf_kind {
	KIND_NAME, /* POSIX shm name */
	KIND_SIZE, /* size with K/M/G/T suffix */
	KIND_ADDR, /* address: 0x hex or decimal */
	KIND_MODE, /* octal file mode */
	KIND_UINT, /* decimal number */
	KIND_POW2, /* decimal power of two */
	KIND_PATH, /* absolute socket path */
	KIND_UIDS, /* list of user names or uids */
	KIND_GIDS, /* list of group names or gids */
	KIND_POLICY, /* evict | reject */
	KIND_FILE, /* absolute file path */
	KIND_LEVEL, /* log level name */
	KIND_BOOL, /* yes/no, on/off, true/false, 1/0 */
};

enum conf_key_id {
	K_SEG_NAME,
	K_SEG_SIZE,
	K_SEG_MAX_SIZE,
	K_SEG_BASE,
	K_SEG_MODE,
	K_SEG_MAX_CLIENTS,
	K_SEG_MAX_MAPS,
	K_SEG_HUGE_PAGES,
	K_SRV_SOCKET,
	K_SRV_SOCKET_MODE,
	K_SRV_ALLOW_UIDS,
	K_SRV_ALLOW_GIDS,
	K_SRV_RO_UIDS,
	K_SRV_RO_GIDS,
	K_SRV_LOG_LEVEL,
	K_MAP_KEY_MAX,
	K_MAP_VALUE_MAX,
	K_MAP_BUCKETS,
	K_MAP_STRIPES,
	K_MAP_POLICY,
	K_MAP_MAX_BUCKETS,
	K_MAP_GROW_STEP,
	K_MAP_QUOTA,
	K_MAP_DEFAULT_TTL,
	K_MAP_CAPACITY,
	K_PERS_SNAPSHOT,
	K_PERS_INTERVAL,
	K_COUNT
};

struct conf_key {
	const char *section;
	const char *name;
	const char *full; /* "section.name" */
	enum conf_kind kind;
	uint64_t min, max; /* inclusive, for sizes and numbers */
	bool reloadable;   /* SIGHUP applies it to a running coordinator */
};

#define KEY(section, name) section, name, section "." name
static const struct conf_key conf_keys[K_COUNT] = {
	[K_SEG_NAME] = { KEY("segment", "name"), KIND_NAME, 0, 0, false },
	[K_SEG_SIZE] = { KEY("segment", "size"), KIND_SIZE, MIB, TIB, false },
	[K_SEG_MAX_SIZE] = { KEY("segment", "max_size"), KIND_SIZE, MIB, TIB, false },
	[K_SEG_BASE] = { KEY("segment", "base"), KIND_ADDR, 0, 0, false },
	[K_SEG_MODE] = { KEY("segment", "mode"), KIND_MODE, 0, 0777, false },
	[K_SEG_MAX_CLIENTS] = { KEY("segment", "max_clients"), KIND_UINT, 1, SEG_MAX_CLIENTS_LIMIT, false },
	[K_SEG_MAX_MAPS] = { KEY("segment", "max_maps"), KIND_UINT, 1, SEG_MAX_MAPS_LIMIT, false },
	[K_SEG_HUGE_PAGES] = { KEY("segment", "huge_pages"), KIND_BOOL, 0, 1, false },
	[K_SRV_SOCKET] = { KEY("server", "socket"), KIND_PATH, 0, 0, false },
	[K_SRV_SOCKET_MODE] = { KEY("server", "socket_mode"), KIND_MODE, 0, 0777, false },
	[K_SRV_ALLOW_UIDS] = { KEY("server", "allow_uids"), KIND_UIDS, 0, 0, true },
	[K_SRV_ALLOW_GIDS] = { KEY("server", "allow_gids"), KIND_GIDS, 0, 0, true },
	[K_SRV_RO_UIDS] = { KEY("server", "readonly_uids"), KIND_UIDS, 0, 0, true },
	[K_SRV_RO_GIDS] = { KEY("server", "readonly_gids"), KIND_GIDS, 0, 0, true },
	[K_SRV_LOG_LEVEL] = { KEY("server", "log_level"), KIND_LEVEL, 0, 0, true },
	[K_MAP_KEY_MAX] = { KEY("map", "key_max"), KIND_UINT, 1, 65535, false },
	[K_MAP_VALUE_MAX] = { KEY("map", "value_max"), KIND_SIZE, 0, GIB, false },
	[K_MAP_BUCKETS] = { KEY("map", "buckets"), KIND_POW2, 1, UINT64_C(1) << 26, false },
	[K_MAP_STRIPES] = { KEY("map", "stripes"), KIND_POW2, 1, 65536, false },
	[K_MAP_POLICY] = { KEY("map", "policy"), KIND_POLICY, 0, 0, false },
	[K_MAP_MAX_BUCKETS] = { KEY("map", "max_buckets"), KIND_POW2, 1, UINT64_C(1) << 30, false },
	[K_MAP_GROW_STEP] = { KEY("map", "grow_step"), KIND_UINT, 0, UINT64_C(1) << 20, false },
	[K_MAP_QUOTA] = { KEY("map", "quota"), KIND_SIZE, 0, TIB, false },
	[K_MAP_DEFAULT_TTL] = { KEY("map", "default_ttl"), KIND_UINT, 0, UINT64_C(86400) * 3650, false },
	[K_MAP_CAPACITY] = { KEY("map", "capacity"), KIND_UINT, 0, UINT64_C(1) << 32, false },
	[K_PERS_SNAPSHOT] = { KEY("persistence", "snapshot"), KIND_FILE, 0, 0, false },
	[K_PERS_INTERVAL] = { KEY("persistence", "interval"), KIND_UINT, 0, 86400 * 365, false },
};

/* [server] log_level, by syslog priority. */
static const char *const log_level_names[] = {
	[LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

static const char *const conf_sections[] = { "segment", "server", "map", "persistence" };

struct conf_ctx {
	FILE *fp;
	const char *path;
	struct shmmap_conf conf;  /* working copy, committed on success */
	unsigned lineno;          /* line last handed to inih, from 1 */
	/* The section of the lines that follow, whole: inih cuts a section
	 * name to 49 bytes (its MAX_SECTION), a [map NAME] may have 67. */
	char section[4 + CONF_MAP_NAME_MAX + 1];
	unsigned set_on[K_COUNT]; /* line that set each key, 0 = default */
	int rc;                   /* first error (negative errno), 0 = none */
	unsigned err_line;        /* its line, 0 = not tied to a line */
	char *err;
	size_t errlen;
};

/* ---- messages ---------------------------------------------------------- */

/*
 * Record the first error: "PATH[:LINE]: [SECTION.NAME: ]why".  section may
 * be NULL (no key) or "" (a key outside any section: just NAME).
 */
__attribute__((format(printf, 6, 7)))
static void conf_fail(struct conf_ctx *x, int rc, unsigned line, const char *section,
		      const char *name, const char *fmt, ...)
{
	if (x->rc)
		return;
	x->rc = rc;
	x->err_line = line;
	if (!x->err || !x->errlen)
		return;

	size_t n = 0;
	int w;
	if (line)
		w = snprintf(x->err, x->errlen, "%s:%u: ", x->path, line);
	else
		w = snprintf(x->err, x->errlen, "%s: ", x->path);
	if (w > 0)
		n = (size_t)w;
	if (n < x->errlen && section) {
		w = snprintf(x->err + n, x->errlen - n, "%s%s%s: ", section, *section ? "." : "", name);
		if (w > 0)
			n += (size_t)w;
	}
	if (n < x->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(x->err + n, x->errlen - n, fmt, ap);
		va_end(ap);
	}
}

/* "64M", "1G", "4096": the shortest exact spelling of a byte count. */
static const char *fmt_size(char *buf, size_t len, uint64_t v)
{
	static const char sfx[] = "KMGT";
	int i = -1;
	while (v && i < 3 && v % KIB == 0) {
		v /= KIB;
		i++;
	}
	if (i < 0)
		snprintf(buf, len, "%" PRIu64, v);
	else
		snprintf(buf, len, "%" PRIu64 "%c", v, sfx[i]);
	return buf;
}

/* ---- value parsers ----------------------------------------------------- */

/* Decimal digits only (no sign, no space), fully consumed. */
static int parse_dec(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (end)
		*end = p;
	else if (*p)
		return -EINVAL;
	*out = v;
	return 0;
}

int shmmap__parse_size(const char *s, uint64_t *out)
{
	const char *p;
	uint64_t v, mul = 1;
	int rc;

	if (!s || !out)
		return -EINVAL;
	rc = parse_dec(s, &p, &v);
	if (rc)
		return rc;
	switch (*p) {
	case 'k': case 'K': mul = KIB; p++; break;
	case 'm': case 'M': mul = MIB; p++; break;
	case 'g': case 'G': mul = GIB; p++; break;
	case 't': case 'T': mul = TIB; p++; break;
	}
	if (mul != 1 && (*p == 'i' || *p == 'I')) {
		p++;
		if (*p != 'b' && *p != 'B')
			return -EINVAL;
	}
	if (*p == 'b' || *p == 'B')
		p++;
	if (*p)
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

/* "0x" then hex digits, or decimal digits; fully consumed. */
static int parse_addr(const char *s, uint64_t *out)
{
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		const char *p = s + 2;
		uint64_t v = 0;
		if (!isxdigit((unsigned char)*p))
			return -EINVAL;
		for (; isxdigit((unsigned char)*p); p++) {
			unsigned d = isdigit((unsigned char)*p) ? (unsigned)(*p - '0')
				: (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
			if (v >> 60)
				return -ERANGE;
			v = v << 4 | d;
		}
		if (*p)
			return -EINVAL;
		*out = v;
		return 0;
	}
	return parse_dec(s, NULL, out);
}

/* Octal digits only ("0600", "600"). */
static int parse_octal(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;
	if (!*p)
		return -EINVAL;
	for (; *p; p++) {
		if (*p < '0' || *p > '7')
			return -EINVAL;
		if (v >> 60)
			return -ERANGE;
		v = v << 3 | (unsigned)(*p - '0');
	}
	*out = v;
	return 0;
}

/* ---- id lists ---------------------------------------------------------- */

static struct conf_ids *ids_of(struct shmmap_conf *c, enum conf_key_id id)
{
	switch (id) {
	case K_SRV_ALLOW_UIDS: return &c->server.allow_uids;
	case K_SRV_ALLOW_GIDS: return &c->server.allow_gids;
	case K_SRV_RO_UIDS: return &c->server.readonly_uids;
	default: return &c->server.readonly_gids;
	}
}

/* Resolve one list item: a decimal id or a user/group name. */
static int resolve_id(const char *item, bool group, uint32_t *out)
{
	uint64_t n;
	if (parse_dec(item, NULL, &n) == 0)
		return n < UINT32_MAX ? (*out = (uint32_t)n, 0) : -ERANGE;
	char buf[4096];
	if (group) {
		struct group gr, *res = NULL;
		if (getgrnam_r(item, &gr, buf, sizeof buf, &res) != 0 || !res)
			return -ENOENT;
		*out = (uint32_t)res->gr_gid;
	} else {
		struct passwd pw, *res = NULL;
		if (getpwnam_r(item, &pw, buf, sizeof buf, &res) != 0 || !res)
			return -ENOENT;
		*out = (uint32_t)res->pw_uid;
	}
	return 0;
}

/* ---- one key ----------------------------------------------------------- */

static const char *comment_hint(const char *v)
{
	for (const char *p = v; *p; p++)
		if (*p == '#' && p > v && isspace((unsigned char)p[-1]))
			return " (inline comments start with ';', not '#')";
	return "";
}

static void store_num(struct shmmap_conf *c, enum conf_key_id id, uint64_t v)
{
	switch (id) {
	case K_SEG_SIZE: c->segment.size = v; break;
	case K_SEG_MAX_SIZE: c->segment.max_size = v; break;
	case K_SEG_BASE: c->segment.base = v; break;
	case K_SEG_MODE: c->segment.mode = (unsigned)v; break;
	case K_SEG_MAX_CLIENTS: c->segment.max_clients = (uint32_t)v; break;
	case K_SEG_MAX_MAPS: c->segment.max_maps = (uint32_t)v; break;
	case K_SEG_HUGE_PAGES: c->segment.huge_pages = v != 0; break;
	case K_SRV_SOCKET_MODE: c->server.socket_mode = (unsigned)v; break;
	case K_MAP_KEY_MAX: c->map.key_max = (uint32_t)v; break;
	case K_MAP_VALUE_MAX: c->map.value_max = (uint32_t)v; break;
	case K_MAP_BUCKETS: c->map.buckets = (uint32_t)v; break;
	case K_MAP_STRIPES: c->map.stripes = (uint32_t)v; break;
	case K_MAP_MAX_BUCKETS: c->map.max_buckets = (uint32_t)v; break;
	case K_MAP_GROW_STEP: c->map.grow_step = (uint32_t)v; break;
	case K_MAP_QUOTA: c->map.quota = v; break;
	case K_MAP_DEFAULT_TTL: c->map.default_ttl = (uint32_t)v; break;
	case K_MAP_CAPACITY: c->map.capacity = v; break;
	case K_PERS_INTERVAL: c->persistence.interval = (uint32_t)v; break;
	default: break;
	}
}

/* Parse and store one value; on error record it and return false. */
static bool conf_set(struct conf_ctx *x, enum conf_key_id id, const char *v)
{
	const struct conf_key *k = &conf_keys[id];
	const unsigned ln = x->lineno;
	const char *sec = k->section, *nm = k->name;
	char a[32], b[32];
	uint64_t n = 0;
	size_t len = strlen(v);
	int rc;

	if (!len) {
		conf_fail(x, -EINVAL, ln, sec, nm, "empty value");
		return false;
	}

	switch (k->kind) {
	case KIND_NAME:
		if (v[0] != '/') {
			conf_fail(x, -EINVAL, ln, sec, nm, "shm name \"%s\" must start with '/'", v);
			return false;
		}
		if (len < 2) {
			conf_fail(x, -EINVAL, ln, sec, nm, "shm name \"/\" needs at least one character after the '/'");
			return false;
		}
		if (strchr(v + 1, '/')) {
			conf_fail(x, -EINVAL, ln, sec, nm, "shm name \"%s\" must not contain '/' after the first character", v);
			return false;
		}
		if (len > CONF_SHM_NAME_MAX) {
			conf_fail(x, -EINVAL, ln, sec, nm, "shm name is too long (%zu bytes, at most %d)", len, CONF_SHM_NAME_MAX);
			return false;
		}
		memcpy(x->conf.segment.name, v, len + 1);
		return true;

	case KIND_BOOL: {
		static const char *const yes[] = {"yes", "on", "true", "1"};
		static const char *const no[] = {"no", "off", "false", "0"};
		for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
			if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
				store_num(&x->conf, id, strcasecmp(v, yes[i]) == 0);
				return true;
			}
		conf_fail(x, -EINVAL, ln, sec, nm, "\"%s\" is not yes or no (yes/no, on/off, true/false, 1/0)%s",
			  v, comment_hint(v));
		return false;
	}

	case KIND_POLICY:
		if (strcmp(v, "evict") == 0) {
			x->conf.map.policy = MAP_POLICY_EVICT;
		} else if (strcmp(v, "reject") == 0) {
			x->conf.map.policy = MAP_POLICY_REJECT;
		} else {
			conf_fail(x, -EINVAL, ln, sec, nm, "unknown policy \"%s\" (evict or reject)%s", v,
				  comment_hint(v));
			return false;
		}
		return true;

	case KIND_FILE:
		if (v[0] != '/') {
			conf_fail(x, -EINVAL, ln, sec, nm, "\"%s\" is not an absolute path", v);
			return false;
		}
		if (len >= sizeof(x->conf.persistence.snapshot)) {
			conf_fail(x, -EINVAL, ln, sec, nm, "path is too long (%zu bytes, at most %zu)", len,
				  sizeof(x->conf.persistence.snapshot) - 1);
			return false;
		}
		memcpy(x->conf.persistence.snapshot, v, len + 1);
		return true;

	case KIND_PATH:
		/* Clients find it from any directory, and shmmapd in the
		 * background runs in "/". */
		if (v[0] != '/') {
			conf_fail(x, -EINVAL, ln, sec, nm, "\"%s\" must be an absolute path", v);
			return false;
		}
		if (len >= sizeof(x->conf.server.socket)) {
			conf_fail(x, -EINVAL, ln, sec, nm, "socket path is too long (%zu bytes, at most %zu)", len,
				  sizeof(x->conf.server.socket) - 1);
			return false;
		}
		memcpy(x->conf.server.socket, v, len + 1);
		return true;

	case KIND_LEVEL:
		for (int lv = LOG_ERR; lv <= LOG_DEBUG; lv++) {
			if (strcmp(v, log_level_names[lv]) == 0) {
				x->conf.server.log_level = lv;
				return true;
			}
		}
		conf_fail(x, -EINVAL, ln, sec, nm,
			  "unknown level \"%s\" (error, warning, notice, info or debug)%s", v,
			  comment_hint(v));
		return false;

	case KIND_UIDS:
	case KIND_GIDS: {
		struct conf_ids *ids = ids_of(&x->conf, id);
		char item[256];
		ids->n = 0;
		for (const char *p = v; *p;) {
			while (*p == ' ' || *p == '\t' || *p == ',')
				p++;
			size_t il = strcspn(p, ", \t");
			if (il == 0)
				break;
			if (il >= sizeof item) {
				conf_fail(x, -EINVAL, ln, sec, nm, "list item too long");
				return false;
			}
			memcpy(item, p, il);
			item[il] = '\0';
			p += il;
			if (ids->n == CONF_MAX_IDS) {
				conf_fail(x, -EINVAL, ln, sec, nm, "more than %d ids", CONF_MAX_IDS);
				return false;
			}
			rc = resolve_id(item, k->kind == KIND_GIDS, &ids->id[ids->n]);
			if (rc < 0) {
				conf_fail(x, -EINVAL, ln, sec, nm, "no such %s \"%s\"",
					  k->kind == KIND_GIDS ? "group" : "user", item);
				return false;
			}
			ids->n++;
		}
		return true;
	}

	case KIND_SIZE:
		rc = shmmap__parse_size(v, &n);
		if (rc == -EINVAL) {
			conf_fail(x, -EINVAL, ln, sec, nm, "bad size \"%s\" (use a number with an optional K, M, G or T suffix: 64M, 64MB and 64MiB alike)%s", v,
				  comment_hint(v));
			return false;
		}
		if (rc || n < k->min || n > k->max) {
			const char *what = (rc || n > k->max) ? "too large" : "too small";
			conf_fail(x, -EINVAL, ln, sec, nm, "size \"%s\" is %s (%s..%s)", v, what,
				  fmt_size(a, sizeof(a), k->min), fmt_size(b, sizeof(b), k->max));
			return false;
		}
		break;

	case KIND_ADDR:
		rc = parse_addr(v, &n);
		if (rc == -EINVAL) {
			conf_fail(x, -EINVAL, ln, sec, nm, "bad address \"%s\" (use 0x and hex digits, or a decimal number)%s", v,
				  comment_hint(v));
			return false;
		}
		if (rc || n >= CONF_USER_END) {
			conf_fail(x, -EINVAL, ln, sec, nm, "address %s is outside user space (must be below 0x%" PRIx64 ")", v,
				  CONF_USER_END);
			return false;
		}
		if (n == 0) {
			conf_fail(x, -EINVAL, ln, sec, nm, "address must not be 0 (every process maps the segment there)");
			return false;
		}
		if (n % CONF_BASE_ALIGN) {
			conf_fail(x, -EINVAL, ln, sec, nm, "address %s is not a multiple of 64K (0x%" PRIx64 ")", v,
				  CONF_BASE_ALIGN);
			return false;
		}
		break;

	case KIND_MODE:
		rc = parse_octal(v, &n);
		if (rc == -EINVAL) {
			conf_fail(x, -EINVAL, ln, sec, nm, "bad mode \"%s\" (use octal digits, e.g. 0600)%s", v, comment_hint(v));
			return false;
		}
		if (rc || n > k->max) {
			conf_fail(x, -EINVAL, ln, sec, nm, "mode %s is out of range (at most 0777)", v);
			return false;
		}
		break;

	case KIND_UINT:
	case KIND_POW2:
		rc = parse_dec(v, NULL, &n);
		if (rc == -EINVAL) {
			conf_fail(x, -EINVAL, ln, sec, nm, "bad number \"%s\" (use decimal digits)%s", v, comment_hint(v));
			return false;
		}
		if (rc || n < k->min || n > k->max) {
			conf_fail(x, -EINVAL, ln, sec, nm, "%s is out of range (%" PRIu64 "..%" PRIu64 ")", v, k->min, k->max);
			return false;
		}
		if (k->kind == KIND_POW2 && (n & (n - 1))) {
			conf_fail(x, -EINVAL, ln, sec, nm, "%s is not a power of two", v);
			return false;
		}
		break;
	}
	store_num(&x->conf, id, n);
	return true;
}

/* ---- inih glue --------------------------------------------------------- */

/* "map NAME": a map's own section; the name as map names go (1..63 bytes). */
static bool map_section(const char *s, size_t len, const char **name, size_t *nlen)
{
	if (len < 5 || memcmp(s, "map ", 4))
		return false;
	*name = s + 4;
	*nlen = len - 4;
	return *nlen >= 1 && *nlen <= CONF_MAP_NAME_MAX && memchr(*name, '\0', *nlen) == NULL;
}

static bool known_section(const char *s, size_t len)
{
	const char *nm;
	size_t nl;
	if (map_section(s, len, &nm, &nl))
		return true;
	for (size_t i = 0; i < sizeof(conf_sections) / sizeof(conf_sections[0]); i++)
		if (strlen(conf_sections[i]) == len && !memcmp(conf_sections[i], s, len))
			return true;
	return false;
}

/*
 * Where inih ends the section name that starts at s: at the first ']', or
 * at an inline comment (';' after whitespace) or the end of the line, where
 * it finds no ']' and reports a syntax error.
 */
static const char *section_end(const char *s)
{
	bool was_space = false;
	for (; *s && *s != ']' && !(was_space && *s == ';'); s++)
		was_space = isspace((unsigned char)*s);
	return s;
}

/* The entry of the [map NAME] section mname, made at its first header;
 * NULL (error recorded) past CONF_MAX_MAP_SECTIONS. */
static struct conf_map_sect *map_sect_get(struct conf_ctx *x, const char *mname)
{
	struct shmmap_conf *c = &x->conf;
	for (uint32_t i = 0; i < c->nmaps; i++)
		if (!strcmp(c->maps[i].name, mname))
			return &c->maps[i];
	if (c->nmaps == CONF_MAX_MAP_SECTIONS) {
		conf_fail(x, -EINVAL, x->lineno, NULL, NULL, "[map %s]: more than %d [map NAME] sections",
			  mname, CONF_MAX_MAP_SECTIONS);
		return NULL;
	}
	struct conf_map_sect *ms = &c->maps[c->nmaps++];
	memset(ms, 0, sizeof *ms);
	snprintf(ms->name, sizeof ms->name, "%s", mname);
	return ms;
}

/*
 * An fgets-style reader for ini_parse_stream(): one whole line per call,
 * counted, terminator and leading whitespace removed; NULL at the end or
 * once an error is recorded (which stops the parse).
 */
static char *conf_reader(char *str, int num, void *stream)
{
	struct conf_ctx *x = stream;
	char buf[CONF_LINE_MAX + 2];
	size_t len = 0, total = 0;
	bool nul = false;
	int ch;

	if (x->rc || num < 2)
		return NULL;
	while ((ch = getc(x->fp)) != EOF && ch != '\n') {
		if (ch == '\0')
			nul = true;
		if (len < sizeof(buf) - 1)
			buf[len++] = (char)ch;
		total++;
	}
	if (ch == EOF && ferror(x->fp)) {
		int e = errno ? errno : EIO;
		conf_fail(x, -e, 0, NULL, NULL, "%s", strerror(e));
		return NULL;
	}
	if (ch == EOF && total == 0)
		return NULL;
	x->lineno++;
	if (total && len == total && buf[len - 1] == '\r') {
		len--;
		total--;
	}
	buf[len] = '\0';

	size_t limit = (size_t)num - 1 < CONF_LINE_MAX ? (size_t)num - 1 : CONF_LINE_MAX;
	if (total > limit) {
		conf_fail(x, -EINVAL, x->lineno, NULL, NULL, "line too long (%zu bytes, at most %zu)", total, limit);
		return NULL;
	}
	if (nul) {
		conf_fail(x, -EINVAL, x->lineno, NULL, NULL, "NUL byte in line");
		return NULL;
	}

	char *p = buf;
	if (x->lineno == 1 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
	    (unsigned char)p[2] == 0xBF)
		p += 3;
	while (isspace((unsigned char)*p))
		p++;

	if (*p == '[') {
		const char *end = section_end(p + 1);
		/* Without ']' inih reports a syntax error on this line. */
		if (*end == ']') {
			size_t n = (size_t)(end - (p + 1));
			if (n > 4 + CONF_MAP_NAME_MAX && !memcmp(p + 1, "map ", 4)) {
				conf_fail(x, -EINVAL, x->lineno, NULL, NULL,
					  "[%.*s...]: map name too long (%zu bytes, at most %d)",
					  20, p + 1, n - 4, CONF_MAP_NAME_MAX);
				return NULL;
			}
			if (!known_section(p + 1, n)) {
				conf_fail(x, -EINVAL, x->lineno, NULL, NULL,
					  "[%.*s]: unknown section (expected [segment], [server], [map], [map NAME] or [persistence])", (int)n, p + 1);
				return NULL;
			}
			const char *q = end + 1;
			while (isspace((unsigned char)*q))
				q++;
			if (*q && *q != ';' && *q != '#') {
				conf_fail(x, -EINVAL, x->lineno, NULL, NULL, "junk after [%.*s]: \"%s\"", (int)n, p + 1, q);
				return NULL;
			}
			/* known: n <= 4 + CONF_MAP_NAME_MAX */
			memcpy(x->section, p + 1, n);
			x->section[n] = '\0';
			/* A [map NAME] header records the map, keys or not. */
			const char *mname;
			size_t mlen;
			if (map_section(x->section, n, &mname, &mlen) && !map_sect_get(x, mname))
				return NULL;
		}
	}
	memcpy(str, p, strlen(p) + 1); /* fits: strlen(p) <= limit <= num - 1 */
	return str;
}

/* The [map] keys a [map NAME] section may set, and where they go. */
static const struct {
	enum conf_key_id id;
	uint32_t bit;
} map_sect_keys[] = {
	{K_MAP_KEY_MAX, CMS_KEY_MAX}, {K_MAP_VALUE_MAX, CMS_VALUE_MAX},
	{K_MAP_BUCKETS, CMS_BUCKETS}, {K_MAP_STRIPES, CMS_STRIPES},
	{K_MAP_POLICY, CMS_POLICY}, {K_MAP_MAX_BUCKETS, CMS_MAX_BUCKETS},
	{K_MAP_QUOTA, CMS_QUOTA}, {K_MAP_DEFAULT_TTL, CMS_DEFAULT_TTL},
	{K_MAP_CAPACITY, CMS_CAPACITY},
};

/* A key of a [map NAME] section: parsed as its [map] key, stored in the
 * section's entry (made by the reader at the section's header). */
static int map_section_key(struct conf_ctx *x, const char *section, const char *mname,
			   const char *name, const char *value)
{
	struct shmmap_conf *c = &x->conf;
	struct conf_map_sect *ms = map_sect_get(x, mname);
	if (!ms)
		return 0;
	for (size_t i = 0; i < sizeof map_sect_keys / sizeof map_sect_keys[0]; i++) {
		enum conf_key_id id = map_sect_keys[i].id;
		if (strcmp(conf_keys[id].name, name))
			continue;
		if (ms->has & map_sect_keys[i].bit) {
			conf_fail(x, -EINVAL, x->lineno, section, name, "duplicate key");
			return 0;
		}
		/* Parsed into [map]'s field, which is then put back. */
		struct shmmap_conf saved = *c;
		unsigned line = x->set_on[id];
		if (!conf_set(x, id, value))
			return 0;
		ms->has |= map_sect_keys[i].bit;
		ms->key_max = id == K_MAP_KEY_MAX ? c->map.key_max : ms->key_max;
		ms->value_max = id == K_MAP_VALUE_MAX ? c->map.value_max : ms->value_max;
		ms->buckets = id == K_MAP_BUCKETS ? c->map.buckets : ms->buckets;
		ms->stripes = id == K_MAP_STRIPES ? c->map.stripes : ms->stripes;
		ms->policy = id == K_MAP_POLICY ? c->map.policy : ms->policy;
		ms->max_buckets = id == K_MAP_MAX_BUCKETS ? c->map.max_buckets : ms->max_buckets;
		ms->quota = id == K_MAP_QUOTA ? c->map.quota : ms->quota;
		ms->default_ttl = id == K_MAP_DEFAULT_TTL ? c->map.default_ttl : ms->default_ttl;
		ms->capacity = id == K_MAP_CAPACITY ? c->map.capacity : ms->capacity;
		struct conf_map_sect keep = *ms;
		size_t at = (size_t)(ms - c->maps);
		*c = saved;
		c->maps[at] = keep;
		x->set_on[id] = line;
		return 1;
	}
	conf_fail(x, -EINVAL, x->lineno, section, name,
		  "unknown key (expected one of: key_max, value_max, buckets, stripes, policy, "
		  "max_buckets, quota, default_ttl, capacity)");
	return 0;
}

static int conf_handler(void *user, const char *isection, const char *name, const char *value)
{
	struct conf_ctx *x = user;
	/* inih's section is ours cut to 49 bytes: use ours, whole. */
	const char *section = x->section;

	if (x->rc)
		return 1; /* already failed: the reader stops the parse */
	if (strncmp(isection, section, strlen(isection))) {
		conf_fail(x, -EINVAL, x->lineno, NULL, NULL, "syntax error (section [%s] unclear)", isection);
		return 0;
	}
	if (!name || !value) {
		conf_fail(x, -EINVAL, x->lineno, NULL, NULL, "expected key = value");
		return 0;
	}
	if (!*name) {
		conf_fail(x, -EINVAL, x->lineno, NULL, NULL, "missing key name before '='");
		return 0;
	}
	if (!*section) {
		conf_fail(x, -EINVAL, x->lineno, section, name, "key outside any section (put it under [segment], [server] or [map])");
		return 0;
	}
	const char *mname;
	size_t mlen;
	if (map_section(section, strlen(section), &mname, &mlen))
		return map_section_key(x, section, mname, name, value);
	for (int i = 0; i < K_COUNT; i++) {
		const struct conf_key *k = &conf_keys[i];
		if (strcmp(k->section, section) || strcmp(k->name, name))
			continue;
		if (x->set_on[i]) {
			conf_fail(x, -EINVAL, x->lineno, section, name, "duplicate key (already set on line %u)", x->set_on[i]);
			return 0;
		}
		x->set_on[i] = x->lineno;
		return conf_set(x, (enum conf_key_id)i, value) ? 1 : 0;
	}

	/* Unknown key: list the section's keys. */
	char keys[160] = "";
	size_t n = 0;
	for (int i = 0; i < K_COUNT; i++) {
		if (strcmp(conf_keys[i].section, section))
			continue;
		int w = snprintf(keys + n, sizeof(keys) - n, "%s%s", n ? ", " : "", conf_keys[i].name);
		if (w < 0 || (size_t)w >= sizeof(keys) - n)
			break;
		n += (size_t)w;
	}
	conf_fail(x, -EINVAL, x->lineno, section, name, "unknown key (expected one of: %s)", keys);
	return 0;
}

/* Cross-field checks, blaming the key set last in the file (else the other). */
static void conf_check(struct conf_ctx *x)
{
	struct shmmap_conf *c = &x->conf;
	char a[32], b[32];

	/* The initial bucket count is at least the stripes, unless both were
	 * set (configs written for the old default of 16384 buckets, with
	 * more than 1024 stripes, still load). */
	if (c->map.stripes > c->map.buckets && !x->set_on[K_MAP_BUCKETS])
		c->map.buckets = c->map.stripes;
	/* So does a max_buckets alone below the default (down to the stripes). */
	if (c->map.max_buckets < c->map.buckets && !x->set_on[K_MAP_BUCKETS])
		c->map.buckets = c->map.max_buckets > c->map.stripes ? c->map.max_buckets
								     : c->map.stripes;
	if (c->map.stripes > c->map.buckets) {
		if (x->set_on[K_MAP_STRIPES] >= x->set_on[K_MAP_BUCKETS])
			conf_fail(x, -EINVAL, x->set_on[K_MAP_STRIPES], "map", "stripes",
				  "%" PRIu32 " is more than map.buckets (%" PRIu32 ")", c->map.stripes, c->map.buckets);
		else
			conf_fail(x, -EINVAL, x->set_on[K_MAP_BUCKETS], "map", "buckets",
				  "%" PRIu32 " is fewer than map.stripes (%" PRIu32 ")", c->map.buckets, c->map.stripes);
	}
	if (c->map.max_buckets < c->map.buckets) {
		if (x->set_on[K_MAP_MAX_BUCKETS] >= x->set_on[K_MAP_BUCKETS])
			conf_fail(x, -EINVAL, x->set_on[K_MAP_MAX_BUCKETS], "map", "max_buckets",
				  "%" PRIu32 " is fewer than map.buckets (%" PRIu32 ")", c->map.max_buckets, c->map.buckets);
		else
			conf_fail(x, -EINVAL, x->set_on[K_MAP_BUCKETS], "map", "buckets",
				  "%" PRIu32 " is more than map.max_buckets (%" PRIu32 ")", c->map.buckets, c->map.max_buckets);
	}
	/* Sizes are whole pages (the heap is counted in pages of 64K): an
	 * initial size that is not would be cut down without a word, and be
	 * the max_size shown when max_size is left out. */
	if (c->segment.size % SEG_PAGE)
		conf_fail(x, -EINVAL, x->set_on[K_SEG_SIZE], "segment", "size",
			  "%" PRIu64 " is not a multiple of 64K (use %" PRIu64 " or %" PRIu64
			  ", or a K, M, G or T suffix)", c->segment.size,
			  c->segment.size / SEG_PAGE * SEG_PAGE,
			  (c->segment.size / SEG_PAGE + 1) * SEG_PAGE);
	if (x->set_on[K_SEG_MAX_SIZE]) {
		if (c->segment.max_size < c->segment.size)
			conf_fail(x, -EINVAL, x->set_on[K_SEG_MAX_SIZE], "segment", "max_size",
				  "%s is less than segment.size (%s)", fmt_size(a, sizeof(a), c->segment.max_size),
				  fmt_size(b, sizeof(b), c->segment.size));
		else if (c->segment.max_size % SEG_PAGE)
			conf_fail(x, -EINVAL, x->set_on[K_SEG_MAX_SIZE], "segment", "max_size",
				  "%s is not a multiple of 64K", fmt_size(a, sizeof(a), c->segment.max_size));
	} else {
		x->conf.segment.max_size = c->segment.size; /* default: no growth */
	}
	if (c->segment.size > CONF_USER_END || c->segment.base > CONF_USER_END - c->segment.size) {
		if (x->set_on[K_SEG_BASE] >= x->set_on[K_SEG_SIZE])
			conf_fail(x, -EINVAL, x->set_on[K_SEG_BASE], "segment", "base",
				  "0x%" PRIx64 " + segment.size (%s) ends outside user space (must end at or below 0x%" PRIx64 ")",
				  c->segment.base, fmt_size(a, sizeof(a), c->segment.size), CONF_USER_END);
		else
			conf_fail(x, -EINVAL, x->set_on[K_SEG_SIZE], "segment", "size",
				  "%s at segment.base (0x%" PRIx64 ") ends outside user space (must end at or below 0x%" PRIx64 ")",
				  fmt_size(b, sizeof(b), c->segment.size), c->segment.base, CONF_USER_END);
	}
	else if (x->set_on[K_SEG_MAX_SIZE] && c->segment.max_size >= c->segment.size &&
		 (c->segment.max_size > CONF_USER_END ||
		  c->segment.base > CONF_USER_END - c->segment.max_size)) {
		bool base_last = x->set_on[K_SEG_BASE] > x->set_on[K_SEG_MAX_SIZE];
		conf_fail(x, -EINVAL, base_last ? x->set_on[K_SEG_BASE] : x->set_on[K_SEG_MAX_SIZE],
			  "segment", base_last ? "base" : "max_size",
			  "0x%" PRIx64 " + segment.max_size (%s) ends outside user space (must end at or below 0x%" PRIx64 ")",
			  c->segment.base, fmt_size(a, sizeof(a), c->segment.max_size), CONF_USER_END);
	}
}

/* ---- public (internal) entry points ------------------------------------ */

void shmmap__conf_defaults(struct shmmap_conf *c)
{
	memset(c, 0, sizeof(*c));
	shmmap__default_segment(c->segment.name, sizeof(c->segment.name));
	c->segment.size = 64 * MIB;
	c->segment.max_size = 64 * MIB; /* conf_check: size, unless set */
	c->segment.base = UINT64_C(0x200000000000);
	c->segment.mode = 0600;
	c->segment.max_clients = 128;
	c->segment.max_maps = 64;
	c->segment.huge_pages = true;

	/* A $SHMMAP_SOCKET too long for sun_path is left to shmmap__conf_load()
	 * to report; here it falls back to the built-in default.  That default
	 * is "" when it cannot be made (an ordinary user without
	 * $XDG_RUNTIME_DIR): shmmapd then says why, unless the file names one. */
	const char *env = getenv("SHMMAP_SOCKET");
	if (env && *env && strlen(env) < sizeof(c->server.socket))
		snprintf(c->server.socket, sizeof(c->server.socket), "%s", env);
	else
		shmmap__default_socket(c->server.socket, sizeof(c->server.socket), true);
	c->server.socket_mode = 0600;
	c->server.log_level = LOG_INFO;

	c->map.key_max = 250;
	c->map.value_max = (uint32_t)MIB;
	c->map.buckets = 4096; /* with 256 stripes of 128 B: one 64 KiB page */
	c->map.stripes = 256;
	c->map.max_buckets = UINT32_C(1) << 30;
	c->map.grow_step = 64;
}

static bool ids_equal(const struct conf_ids *a, const struct conf_ids *b)
{
	return a->n == b->n && memcmp(a->id, b->id, a->n * sizeof a->id[0]) == 0;
}

/* Does key id have the same value in a and b? */
static bool key_equal(const struct shmmap_conf *a, const struct shmmap_conf *b,
		      enum conf_key_id id)
{
	switch (id) {
	case K_SEG_NAME: return strcmp(a->segment.name, b->segment.name) == 0;
	case K_SEG_SIZE: return a->segment.size == b->segment.size;
	case K_SEG_MAX_SIZE: return a->segment.max_size == b->segment.max_size;
	case K_SEG_BASE: return a->segment.base == b->segment.base;
	case K_SEG_MODE: return a->segment.mode == b->segment.mode;
	case K_SEG_MAX_CLIENTS: return a->segment.max_clients == b->segment.max_clients;
	case K_SEG_MAX_MAPS: return a->segment.max_maps == b->segment.max_maps;
	case K_SEG_HUGE_PAGES: return a->segment.huge_pages == b->segment.huge_pages;
	case K_SRV_SOCKET: return strcmp(a->server.socket, b->server.socket) == 0;
	case K_SRV_SOCKET_MODE: return a->server.socket_mode == b->server.socket_mode;
	case K_SRV_ALLOW_UIDS: return ids_equal(&a->server.allow_uids, &b->server.allow_uids);
	case K_SRV_ALLOW_GIDS: return ids_equal(&a->server.allow_gids, &b->server.allow_gids);
	case K_SRV_RO_UIDS: return ids_equal(&a->server.readonly_uids, &b->server.readonly_uids);
	case K_SRV_RO_GIDS: return ids_equal(&a->server.readonly_gids, &b->server.readonly_gids);
	case K_SRV_LOG_LEVEL: return a->server.log_level == b->server.log_level;
	case K_MAP_KEY_MAX: return a->map.key_max == b->map.key_max;
	case K_MAP_VALUE_MAX: return a->map.value_max == b->map.value_max;
	case K_MAP_BUCKETS: return a->map.buckets == b->map.buckets;
	case K_MAP_STRIPES: return a->map.stripes == b->map.stripes;
	case K_MAP_POLICY: return a->map.policy == b->map.policy;
	case K_MAP_MAX_BUCKETS: return a->map.max_buckets == b->map.max_buckets;
	case K_MAP_GROW_STEP: return a->map.grow_step == b->map.grow_step;
	case K_MAP_QUOTA: return a->map.quota == b->map.quota;
	case K_MAP_DEFAULT_TTL: return a->map.default_ttl == b->map.default_ttl;
	case K_MAP_CAPACITY: return a->map.capacity == b->map.capacity;
	case K_PERS_SNAPSHOT:
		return strcmp(a->persistence.snapshot, b->persistence.snapshot) == 0;
	case K_PERS_INTERVAL: return a->persistence.interval == b->persistence.interval;
	case K_COUNT: break;
	}
	return true;
}

size_t shmmap__conf_fixed_changes(const struct shmmap_conf *a, const struct shmmap_conf *b,
				  const char **names, size_t max)
{
	size_t n = 0;
	for (int i = 0; i < K_COUNT; i++) {
		if (conf_keys[i].reloadable || key_equal(a, b, (enum conf_key_id)i))
			continue;
		if (n < max)
			names[n] = conf_keys[i].full;
		n++;
	}
	return n;
}

static const struct conf_map_sect *map_sect_find(const struct shmmap_conf *c, const char *name)
{
	for (uint32_t i = 0; i < c->nmaps; i++)
		if (!strcmp(c->maps[i].name, name))
			return &c->maps[i];
	return NULL;
}

/* The same keys with the same values (a key not set is 0 in both). */
static bool map_sect_equal(const struct conf_map_sect *a, const struct conf_map_sect *b)
{
	return a->has == b->has && a->key_max == b->key_max && a->value_max == b->value_max &&
	       a->buckets == b->buckets && a->stripes == b->stripes && a->policy == b->policy &&
	       a->max_buckets == b->max_buckets && a->default_ttl == b->default_ttl &&
	       a->quota == b->quota && a->capacity == b->capacity;
}

size_t shmmap__conf_map_changes(const struct shmmap_conf *a, const struct shmmap_conf *b,
				struct conf_map_change *out, size_t max)
{
	size_t n = 0;
	for (uint32_t i = 0; i < b->nmaps; i++) {
		const struct conf_map_sect *old = map_sect_find(a, b->maps[i].name);
		if (old && map_sect_equal(old, &b->maps[i]))
			continue;
		if (n < max)
			out[n] = (struct conf_map_change){b->maps[i].name, old ? "changed" : "added"};
		n++;
	}
	for (uint32_t i = 0; i < a->nmaps; i++) {
		if (map_sect_find(b, a->maps[i].name))
			continue;
		if (n < max)
			out[n] = (struct conf_map_change){a->maps[i].name, "removed"};
		n++;
	}
	return n;
}

int shmmap__conf_load(struct shmmap_conf *c, const char *path, char *err, size_t errlen)
{
	struct conf_ctx x;

	memset(&x, 0, sizeof(x));
	x.path = path ? path : "(null)";
	x.err = err;
	x.errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
	if (!c || !path) {
		conf_fail(&x, -EINVAL, 0, NULL, NULL, "no configuration to load into");
		return x.rc;
	}
	x.conf = *c;

	x.fp = fopen(path, "re");
	if (!x.fp) {
		int e = errno;
		conf_fail(&x, -e, 0, NULL, NULL, "%s", strerror(e));
		return x.rc;
	}
	int line = ini_parse_stream(conf_reader, &x, conf_handler, &x);
	fclose(x.fp);
	x.fp = NULL;

	if (line == -2) {
		x.rc = 0; /* inih could not allocate: that error came first */
		conf_fail(&x, -ENOMEM, 0, NULL, NULL, "%s", strerror(ENOMEM));
	} else if (line > 0 && (!x.rc || (unsigned)line < x.err_line)) {
		/* A line inih could not parse, before any error of ours. */
		x.rc = 0;
		conf_fail(&x, -EINVAL, (unsigned)line, NULL, NULL,
			  "syntax error (expected [section], key = value, or a comment)");
	}
	if (x.rc)
		return x.rc;

	conf_check(&x);
	if (x.rc)
		return x.rc;

	const char *env = getenv("SHMMAP_SOCKET");
	if (env && *env) {
		size_t len = strlen(env);
		if (len >= sizeof(x.conf.server.socket)) {
			if (err && errlen)
				snprintf(err, errlen, "$SHMMAP_SOCKET: socket path is too long (%zu bytes, at most %zu)", len,
					 sizeof(x.conf.server.socket) - 1);
			return -EINVAL;
		}
		memcpy(x.conf.server.socket, env, len + 1);
	}

	*c = x.conf;
	return 0;
}
