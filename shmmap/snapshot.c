/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * snapshot.c - snapshot files: writing every live entry of every map to a
 * file, verifying a file, and loading one back.  It owns the file format
 * and the crash-safe replacement of the file; what is saved and where it
 * is loaded is up to the caller (coordinator.c).
 *
 * Format, version 1.  Every integer is little-endian.  A file holds values
 * only, never an address or a segment offset, so it loads into a segment
 * of any size, base or geometry.
 *
 *   header, 32 bytes
 *     0  magic       8 bytes "SHMMAPS\0"
 *     8  version     u32, 1
 *    12  flags       u32, 0 (a reader refuses bits it does not know)
 *    16  created_ns  u64, CLOCK_REALTIME ns when the save started
 *    24  records     u64, how many records follow
 *   records, one per entry, back to back (those of one map are together)
 *        name_len    u8, 1..63: the map's name
 *        name        name_len bytes, no NUL
 *        klen        u32, 1..65535
 *        vlen        u32, 0..2^30 (1 GiB)
 *        expire_ms   u64, absolute CLOCK_REALTIME ms, 0 = never
 *        key         klen bytes
 *        value       vlen bytes
 *   trailer, 16 bytes
 *        records     u64, the header's count again
 *        checksum    u64, XXH64 (seed 0) of every byte before the trailer
 *   and nothing after it.
 *
 * Invariants:
 *   - PATH is only ever replaced by a complete, synced file: a save writes
 *     PATH.tmp.<pid> (created O_EXCL, mode 0600), syncs it, renames it over
 *     PATH and syncs the directory.  On any error the temp file is removed
 *     and PATH is left as it was.  The checksum is computed from the bytes
 *     read back from the temp file, after the header's count was patched.
 *   - Saving reads the segment only (shmmap__tbl_foreach); it never takes
 *     a lock for longer than one bucket's copy.  Entries expired at save
 *     time are left out.
 *   - Reading never writes.  A load verifies the whole file first (magic,
 *     version, flags, every length within its bound, the record count, the
 *     checksum, no trailing bytes) and hands no record to its sink before
 *     that succeeded; it then reads the same open file again, with the same
 *     bounds checks, and skips records that have expired meanwhile.
 *   - Every length read from a file is checked before it is used: no read
 *     past a buffer, no allocation larger than the receiving map accepts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "snapshot.h"

#define IOBUF (256u * 1024u) /* write buffer and read buffer */
#define REC_FIXED 16u        /* klen, vlen, expire_ms */

_Static_assert(sizeof SNAP_MAGIC == 8, "the magic is 8 bytes with its NUL");
_Static_assert(SHMMAP_NAME_MAX < 256, "a map name length fits a u8");

__attribute__((format(printf, 3, 4))) static void msg(char *err, size_t errlen, const char *fmt,
						      ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static int write_all(int fd, const void *p, size_t n, uint64_t off)
{
	const unsigned char *b = p;
	while (n) {
		ssize_t k = pwrite(fd, b, n, (off_t)off);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += k;
		off += (uint64_t)k;
		n -= (size_t)k;
	}
	return 0;
}

/* ---- writing ---- */

/* A buffered writer; the first error sticks and makes the rest no-ops. */
struct writer {
	int fd;
	unsigned char *buf;
	size_t len;       /* buffered bytes, to go at file offset off - len */
	uint64_t off;     /* bytes written so far, the buffered ones included */
	int err;
};

static void wr_flush(struct writer *w)
{
	if (!w->err && w->len)
		w->err = write_all(w->fd, w->buf, w->len, w->off - w->len);
	w->len = 0;
}

static void wr(struct writer *w, const void *p, size_t n)
{
	if (w->err || n == 0)
		return;
	if (w->len + n > IOBUF) {
		wr_flush(w);
		if (w->err)
			return;
	}
	if (n > IOBUF) {
		w->err = write_all(w->fd, p, n, w->off);
	} else {
		memcpy(w->buf + w->len, p, n);
		w->len += n;
	}
	w->off += n;
}

struct save_ctx {
	struct writer w;
	const char *name;
	uint8_t nlen;
	uint64_t now_ms;
	uint64_t records;
	bool bad_len; /* an entry's lengths are outside the format's bounds */
};

static int save_entry(const void *key, size_t klen, const void *val, size_t vlen,
		      uint64_t expire_ms, void *arg)
{
	struct save_ctx *x = arg;
	if (expire_ms && expire_ms <= x->now_ms)
		return 0; /* expired since the walk started */
	if (klen == 0 || klen > SNAP_KEY_MAX || vlen > SNAP_VAL_MAX) {
		x->bad_len = true;
		return 1;
	}
	unsigned char h[1 + SHMMAP_NAME_MAX + REC_FIXED];
	h[0] = x->nlen;
	memcpy(h + 1, x->name, x->nlen);
	unsigned char *f = h + 1 + x->nlen;
	put_le32(f, (uint32_t)klen);
	put_le32(f + 4, (uint32_t)vlen);
	put_le64(f + 8, expire_ms);
	wr(&x->w, h, 1u + x->nlen + REC_FIXED);
	wr(&x->w, key, klen);
	wr(&x->w, val, vlen);
	x->records++;
	return x->w.err ? 1 : 0;
}

/*
 * Walk every map into x.  Returns 0 or a negative errno with a message.
 * A map dropped during the walk keeps what was written of it (it existed
 * while the save ran); a map whose structure is corrupt fails the save.
 */
static int save_maps(const struct op_ctx *o, struct save_ctx *x, struct snap_save_report *r,
		     const char *path, char *err, size_t errlen)
{
	for (uint32_t idx = 0; idx < o->g->max_maps; idx++) {
		struct seg_mapdir *d = seg_dir(o->s, o->g, idx);
		struct map_view v;
		int rc = shmmap__map_view(o->s, o->g, idx, &v);
		if (rc == -ENOENT)
			continue;
		if (rc == 0) {
			/* The name, copied while the map is known to be this one:
			 * a drop or create meanwhile moves gen. */
			char name[SHMMAP_NAME_MAX + 1];
			memcpy(name, d->name, sizeof name);
			if (atomic_load_explicit(&d->state, memory_order_acquire) != MAP_LIVE ||
			    atomic_load(&d->gen) != v.gen)
				continue;
			size_t nlen = strnlen(name, sizeof name);
			if (nlen == 0 || nlen > SHMMAP_NAME_MAX) {
				msg(err, errlen, "%s: map %u has a bad name in the segment: not saved",
				    path, idx);
				return -SHMMAP_ECORRUPT;
			}
			x->name = name;
			x->nlen = (uint8_t)nlen;
			x->now_ms = shmmap__now_ms();
			uint64_t before = x->records;
			rc = shmmap__tbl_foreach(o, &v, save_entry, x);
			if (x->w.err) {
				msg(err, errlen, "%s: write: %s", path, strerror(-x->w.err));
				return x->w.err;
			}
			if (x->bad_len) {
				msg(err, errlen, "%s: map '%s' has an entry longer than a snapshot holds",
				    path, name);
				return -EFBIG;
			}
			if (x->records > before)
				r->maps++;
			if (rc == 0 || rc == -ESTALE) /* done, or dropped meanwhile */
				continue;
			msg(err, errlen, "%s: reading map '%s': %s", path, name, shmmap_strerror(rc));
			return rc;
		}
		/* A directory entry that does not make sense: unless it was
		 * being dropped or created meanwhile, the segment is corrupt. */
		if (atomic_load(&d->state) != MAP_LIVE)
			continue;
		msg(err, errlen, "%s: map %u: %s", path, idx, shmmap_strerror(rc));
		return rc;
	}
	return 0;
}

/* XXH64 of the first n bytes of fd, read back through buf (IOBUF bytes). */
static int hash_file(int fd, uint64_t n, unsigned char *buf, uint64_t *out)
{
	XXH64_state_t st;
	XXH64_reset(&st, 0);
	for (uint64_t off = 0; off < n;) {
		size_t want = n - off < IOBUF ? (size_t)(n - off) : IOBUF;
		ssize_t k = pread(fd, buf, want, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO; /* the file is shorter than what we wrote */
		XXH64_update(&st, buf, (size_t)k);
		off += (uint64_t)k;
	}
	*out = XXH64_digest(&st);
	return 0;
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

int shmmap__snap_save(const struct op_ctx *o, const char *path, struct snap_save_report *r,
		      char *err, size_t errlen)
{
	struct snap_save_report dummy;
	if (!r)
		r = &dummy;
	memset(r, 0, sizeof *r);
	if (err && errlen)
		err[0] = '\0';
	if (!o || !path || path[0] != '/') {
		msg(err, errlen, "%s: not an absolute path", path ? path : "(null)");
		return -EINVAL;
	}
	const char *slash = strrchr(path, '/');
	if (slash[1] == '\0') {
		msg(err, errlen, "%s: names a directory, not a file", path);
		return -EINVAL;
	}
	char tmp[PATH_MAX], dir[PATH_MAX];
	int n = snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof tmp) {
		msg(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	size_t dlen = slash == path ? 1 : (size_t)(slash - path);
	memcpy(dir, path, dlen);
	dir[dlen] = '\0';

	struct save_ctx x = {.w = {.fd = -1}};
	x.w.buf = malloc(IOBUF);
	if (!x.w.buf) {
		msg(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {
		/* Left by a dead process that had our pid (saves of one
		 * process never overlap): it is garbage. */
		unlink(tmp);
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		int e = -errno;
		msg(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(-e));
		free(x.w.buf);
		return e;
	}
	x.w.fd = fd;

	unsigned char h[SNAP_HEADER] = {0};
	memcpy(h, SNAP_MAGIC, sizeof SNAP_MAGIC);
	put_le32(h + 8, SNAP_VERSION);
	put_le32(h + 12, 0);
	put_le64(h + 16, shmmap__now_ns());
	put_le64(h + 24, 0); /* patched below, once the count is known */
	wr(&x.w, h, sizeof h);

	int rc = save_maps(o, &x, r, path, err, errlen);
	if (rc < 0)
		goto fail;
	wr_flush(&x.w);
	unsigned char t[SNAP_TRAILER];
	put_le64(t, x.records);
	uint64_t sum = 0;
	if (x.w.err) {
		rc = x.w.err;
	} else if ((rc = write_all(fd, t, 8, 24)) == 0 &&
		   (rc = hash_file(fd, x.w.off, x.w.buf, &sum)) == 0) {
		put_le64(t + 8, sum);
		rc = write_all(fd, t, sizeof t, x.w.off);
	}
	if (rc < 0) {
		msg(err, errlen, "%s: writing %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	if (fsync(fd) < 0) {
		rc = -errno;
		msg(err, errlen, "%s: fsync of %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	int cfd = fd;
	fd = -1;
	if (close(cfd) < 0) {
		rc = -errno;
		msg(err, errlen, "%s: close of %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		rc = -errno;
		msg(err, errlen, "%s: cannot rename %s over it: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	free(x.w.buf);
	r->entries = x.records;
	r->bytes = x.w.off + SNAP_TRAILER;
	rc = sync_dir(dir);
	if (rc < 0) {
		msg(err, errlen, "%s: written, but syncing its directory %s failed: %s", path, dir,
		    strerror(-rc));
		return rc;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(x.w.buf);
	memset(r, 0, sizeof *r);
	return rc;
}

int shmmap__snap_remove_stale(const char *path, void (*report)(void *arg, const char *file,
								long long size),
			      void *arg)
{
	if (!path || path[0] != '/')
		return -EINVAL;
	const char *slash = strrchr(path, '/');
	const char *base = slash + 1;
	size_t blen = strlen(base);
	char dir[PATH_MAX];
	size_t dlen = slash == path ? 1 : (size_t)(slash - path);
	if (blen == 0 || dlen >= sizeof dir)
		return -EINVAL;
	memcpy(dir, path, dlen);
	dir[dlen] = '\0';
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	int removed = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		/* BASE.tmp.DIGITS, and nothing else: the names a save makes. */
		const char *n = e->d_name;
		if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0)
			continue;
		const char *digits = n + blen + 5;
		size_t nd = strspn(digits, "0123456789");
		if (nd == 0 || nd > 10 || digits[nd] != '\0' || digits[0] == '0')
			continue;
		long long pid = strtoll(digits, NULL, 10);
		if (pid <= 0 || pid > INT_MAX || pid == (long long)getpid())
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue; /* alive (EPERM: another user's), or cannot tell */
		struct stat st;
		if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (unlinkat(dirfd(d), n, 0) < 0)
			continue;
		removed++;
		if (report) {
			char full[PATH_MAX + 256];
			snprintf(full, sizeof full, "%s%s%s", dir, dlen == 1 ? "" : "/", n);
			report(arg, full, (long long)st.st_size);
		}
	}
	closedir(d);
	return removed;
}

/* ---- reading ---- */

struct reader {
	int fd;
	const char *path;
	unsigned char *buf;
	size_t len, pos;   /* buf[pos..len) is unread */
	uint64_t off;      /* file offset of buf[pos] */
	bool hashing;
	XXH64_state_t h;
	char *err;
	size_t errlen;
};

/* Refill an empty buffer: 0, -EBADMSG at end of file, or -errno. */
static int rd_fill(struct reader *r)
{
	for (;;) {
		ssize_t k = read(r->fd, r->buf, IOBUF);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = -errno;
			msg(r->err, r->errlen, "%s: read at byte %" PRIu64 ": %s", r->path, r->off,
			    strerror(-e));
			return e;
		}
		if (k == 0) {
			msg(r->err, r->errlen, "%s: truncated at byte %" PRIu64, r->path, r->off);
			return -EBADMSG;
		}
		r->pos = 0;
		r->len = (size_t)k;
		return 0;
	}
}

/* Consume n bytes into dst (NULL: skip them), hashing them if asked. */
static int rd(struct reader *r, void *dst, uint64_t n)
{
	unsigned char *d = dst;
	while (n) {
		if (r->pos == r->len) {
			int rc = rd_fill(r);
			if (rc < 0)
				return rc;
		}
		size_t k = r->len - r->pos;
		if (n < k)
			k = (size_t)n;
		if (r->hashing)
			XXH64_update(&r->h, r->buf + r->pos, k);
		if (d) {
			memcpy(d, r->buf + r->pos, k);
			d += k;
		}
		r->pos += k;
		r->off += k;
		n -= k;
	}
	return 0;
}

/* Is there anything left to read?  1 yes, 0 no, or -errno. */
static int rd_more(struct reader *r)
{
	if (r->pos < r->len)
		return 1;
	for (;;) {
		ssize_t k = read(r->fd, r->buf, IOBUF);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		r->pos = 0;
		r->len = (size_t)k;
		return k > 0;
	}
}

static int corrupt(struct reader *r, uint64_t at, const char *why)
{
	msg(r->err, r->errlen, "%s: corrupt at byte %" PRIu64 ": %s", r->path, at, why);
	return -EBADMSG;
}

/* The load's state: the map records currently go to. */
struct load_state {
	const struct snap_sink *sink;
	struct snap_load_report *rep;
	char name[SHMMAP_NAME_MAX + 1]; /* "" before the first open */
	int open_rc;
	uint32_t key_max, val_max;
	unsigned char *kv;  /* key then value of the current record */
	size_t kv_cap;
	bool failed;        /* the sink or memory failed (not the file) */
};

/* One record whose fields are read and checked: store it or skip it. */
static int load_record(struct reader *r, struct load_state *ls, const char *name,
		       uint32_t klen, uint32_t vlen, uint64_t expire_ms, uint64_t recno)
{
	struct snap_load_report *rep = ls->rep;
	uint64_t n = (uint64_t)klen + vlen;
	if (expire_ms && expire_ms <= shmmap__now_ms()) {
		rep->expired++;
		return rd(r, NULL, n);
	}
	if (strcmp(name, ls->name) != 0) {
		snprintf(ls->name, sizeof ls->name, "%s", name);
		ls->open_rc = ls->sink->open(ls->sink->arg, name, &ls->key_max, &ls->val_max);
	}
	if (ls->open_rc < 0) {
		rep->no_map++;
		return rd(r, NULL, n);
	}
	if (klen > ls->key_max || vlen > ls->val_max) {
		rep->too_big++;
		return rd(r, NULL, n);
	}
	if (n > ls->kv_cap) {
		unsigned char *p = realloc(ls->kv, (size_t)n);
		if (!p) {
			msg(r->err, r->errlen, "%s: out of memory for record %" PRIu64 " (%" PRIu64
				" bytes)", r->path, recno, n);
			ls->failed = true;
			return -ENOMEM;
		}
		ls->kv = p;
		ls->kv_cap = (size_t)n;
	}
	int rc = rd(r, ls->kv, n);
	if (rc < 0)
		return rc;
	rc = ls->sink->put(ls->sink->arg, ls->kv, klen, ls->kv + klen, vlen, expire_ms);
	if (rc == 0) {
		rep->loaded++;
	} else if (rc == -E2BIG) {
		rep->too_big++;
	} else if (rc == -ENOSPC) {
		rep->no_room++;
	} else {
		msg(r->err, r->errlen,
		    "%s: record %" PRIu64 " (map '%s'): %s; %" PRIu64 " records loaded before it",
		    r->path, recno, name, shmmap_strerror(rc), rep->loaded);
		ls->failed = true;
		return rc;
	}
	return 0;
}

/*
 * Read the whole file from the start.  ls NULL: verify only.  Otherwise
 * each record is loaded (the file was verified before).
 */
static int parse(struct reader *r, uint64_t size, struct snap_info *info, struct load_state *ls)
{
	r->pos = r->len = 0;
	r->off = 0;
	r->hashing = true;
	XXH64_reset(&r->h, 0);
	if (lseek(r->fd, 0, SEEK_SET) < 0) {
		int e = -errno;
		msg(r->err, r->errlen, "%s: %s", r->path, strerror(-e));
		return e;
	}
	/* The magic first: a short file that is not ours is "not a
	 * snapshot", a short one that starts like one is truncated. */
	unsigned char h[SNAP_HEADER];
	size_t m = size < 8 ? (size_t)size : 8;
	int rc = rd(r, h, m);
	if (rc < 0)
		return rc;
	if (memcmp(h, SNAP_MAGIC, m) != 0) {
		msg(r->err, r->errlen, "%s: not a shmmap snapshot", r->path);
		return -EBADMSG;
	}
	if ((rc = rd(r, h + m, SNAP_HEADER - m)) < 0)
		return rc;
	info->version = get_le32(h + 8);
	info->flags = get_le32(h + 12);
	info->created_ns = get_le64(h + 16);
	info->records = get_le64(h + 24);
	info->bytes = size;
	if (info->version != SNAP_VERSION) {
		msg(r->err, r->errlen, "%s: format version %" PRIu32 " not supported (this is %u)",
		    r->path, info->version, SNAP_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (info->flags) {
		msg(r->err, r->errlen, "%s: format flags %#" PRIx32 " not supported", r->path,
		    info->flags);
		return -EPROTONOSUPPORT;
	}
	for (uint64_t i = 0; i < info->records; i++) {
		uint64_t at = r->off;
		unsigned char nl;
		char name[SHMMAP_NAME_MAX + 1];
		unsigned char f[REC_FIXED];
		if ((rc = rd(r, &nl, 1)) < 0)
			return rc;
		if (nl == 0 || nl > SHMMAP_NAME_MAX)
			return corrupt(r, at, "map name length out of range (1..63)");
		if ((rc = rd(r, name, nl)) < 0)
			return rc;
		name[nl] = '\0';
		if (strlen(name) != nl)
			return corrupt(r, at, "map name with a NUL byte");
		if ((rc = rd(r, f, sizeof f)) < 0)
			return rc;
		uint32_t klen = get_le32(f), vlen = get_le32(f + 4);
		uint64_t expire_ms = get_le64(f + 8);
		if (klen == 0 || klen > SNAP_KEY_MAX)
			return corrupt(r, at, "key length out of range (1..65535)");
		if (vlen > SNAP_VAL_MAX)
			return corrupt(r, at, "value length out of range (0..1 GiB)");
		/* Cheap early answer for a truncated file, before reading a
		 * value that cannot be there. */
		if (r->off + klen + vlen > size) {
			msg(r->err, r->errlen, "%s: truncated at byte %" PRIu64, r->path, size);
			return -EBADMSG;
		}
		rc = ls ? load_record(r, ls, name, klen, vlen, expire_ms, i)
			: rd(r, NULL, (uint64_t)klen + vlen);
		if (rc < 0)
			return rc;
	}
	uint64_t sum = XXH64_digest(&r->h);
	r->hashing = false;
	uint64_t at = r->off;
	unsigned char t[SNAP_TRAILER];
	if ((rc = rd(r, t, sizeof t)) < 0)
		return rc;
	if (get_le64(t) != info->records)
		return corrupt(r, at, "the trailer's record count differs from the header's");
	if (get_le64(t + 8) != sum) {
		msg(r->err, r->errlen, "%s: checksum mismatch", r->path);
		return -EBADMSG;
	}
	rc = rd_more(r);
	if (rc < 0) {
		msg(r->err, r->errlen, "%s: read: %s", r->path, strerror(-rc));
		return rc;
	}
	if (rc > 0 || r->off != size) {
		msg(r->err, r->errlen, "%s: trailing bytes after the trailer, at byte %" PRIu64,
		    r->path, r->off);
		return -EBADMSG;
	}
	return 0;
}

static int open_reader(struct reader *r, const char *path, uint64_t *size, char *err,
		       size_t errlen)
{
	memset(r, 0, sizeof *r);
	r->fd = -1;
	r->path = path;
	r->err = err;
	r->errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
	if (!path) {
		msg(err, errlen, "(null): no path");
		return -EINVAL;
	}
	/* O_NONBLOCK: a FIFO put there must not hang us (no effect on files). */
	r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (r->fd < 0) {
		int oe = -errno;
		msg(err, errlen, "%s: %s", path, strerror(-oe));
		return oe;
	}
	struct stat st;
	int e = fstat(r->fd, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EINVAL;
	if (e < 0) {
		msg(err, errlen, "%s: %s", path, e == -EINVAL ? "not a regular file" : strerror(-e));
		close(r->fd);
		r->fd = -1;
		return e;
	}
	*size = (uint64_t)st.st_size;
	r->buf = malloc(IOBUF);
	if (!r->buf) {
		msg(err, errlen, "%s: out of memory", path);
		close(r->fd);
		r->fd = -1;
		return -ENOMEM;
	}
	return 0;
}

static void close_reader(struct reader *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	r->fd = -1;
	r->buf = NULL;
}

int shmmap__snap_verify(const char *path, struct snap_info *info, char *err, size_t errlen)
{
	struct snap_info dummy;
	if (!info)
		info = &dummy;
	memset(info, 0, sizeof *info);
	struct reader r;
	uint64_t size = 0;
	int rc = open_reader(&r, path, &size, err, errlen);
	if (rc < 0)
		return rc;
	rc = parse(&r, size, info, NULL);
	close_reader(&r);
	return rc;
}

int shmmap__snap_load(const char *path, const struct snap_sink *sink,
		      struct snap_load_report *rep, char *err, size_t errlen)
{
	struct snap_load_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof *rep);
	if (!sink || !sink->open || !sink->put) {
		msg(err, errlen, "%s: no sink to load into", path ? path : "(null)");
		return -EINVAL;
	}
	struct reader r;
	uint64_t size = 0;
	int rc = open_reader(&r, path, &size, err, errlen);
	if (rc < 0)
		return rc;
	/* Verify everything first, then load from the same open file (a
	 * replacement by rename meanwhile does not affect it). */
	rc = parse(&r, size, &rep->info, NULL);
	if (rc == 0) {
		struct load_state ls = {.sink = sink, .rep = rep};
		struct snap_info again;
		rc = parse(&r, size, &again, &ls);
		free(ls.kv);
		if (rc < 0 && !ls.failed && err && errlen) {
			/* It verified a moment ago: it was changed in place. */
			size_t l = strlen(err);
			snprintf(err + l, errlen - l, " (the file changed while it was loaded; %" PRIu64
				 " records loaded)", rep->loaded);
		}
	}
	close_reader(&r);
	return rc;
}
