/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * proto.c - encoding and decoding of attach-protocol messages (proto.h).
 *
 * Invariants: the decoder is a pure function of its input bytes; it reads
 * nothing beyond len, accepts a body only if its length is exactly what
 * its type requires, and NUL-terminates every name it returns.  The
 * encoder never writes beyond cap.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "proto.h"

struct wbuf {
	unsigned char *p;
	size_t len, cap;
	bool overflow;
};

static void put(struct wbuf *w, const void *src, size_t n)
{
	if (w->overflow || n > w->cap - w->len) {
		w->overflow = true;
		return;
	}
	memcpy(w->p + w->len, src, n);
	w->len += n;
}

static void put_u16(struct wbuf *w, uint16_t v)
{
	unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
	put(w, b, 2);
}

static void put_u32(struct wbuf *w, uint32_t v)
{
	unsigned char b[4];
	for (int i = 0; i < 4; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	put(w, b, 4);
}

static void put_u64(struct wbuf *w, uint64_t v)
{
	put_u32(w, (uint32_t)v);
	put_u32(w, (uint32_t)(v >> 32));
}

static int put_name(struct wbuf *w, const char *name, size_t max)
{
	size_t n = strnlen(name, max + 1);
	if (n > max)
		return -EINVAL;
	put_u16(w, (uint16_t)n);
	put(w, name, n);
	return 0;
}

int shmmap__proto_encode(const struct proto_msg *m, void *buf, size_t cap)
{
	struct wbuf w = {.p = buf, .cap = cap};
	put_u32(&w, PROTO_MAGIC);
	put_u16(&w, PROTO_VERSION);
	put_u16(&w, m->type);
	put_u32(&w, 0); /* body length, patched below */
	put_u32(&w, m->seq);
	int rc = 0;
	switch (m->type) {
	case MSG_HELLO:
		put_u32(&w, m->u.hello.pid);
		put_u32(&w, m->u.hello.flags);
		break;
	case MSG_WELCOME:
		put_u32(&w, m->u.welcome.slot);
		put_u32(&w, m->u.welcome.flags);
		put_u64(&w, m->u.welcome.slot_gen);
		put_u64(&w, m->u.welcome.size);
		put_u64(&w, m->u.welcome.base);
		rc = put_name(&w, m->u.welcome.shm_name, PROTO_NAME_MAX);
		break;
	case MSG_OPEN:
	case MSG_DROP:
	case MSG_FLUSH:
		put_u32(&w, m->u.open.flags);
		rc = put_name(&w, m->u.open.name, SHMMAP_NAME_MAX);
		break;
	case MSG_SAVE:
		put_u32(&w, m->u.save.flags);
		rc = put_name(&w, m->u.save.path, PROTO_NAME_MAX);
		break;
	case MSG_OPEN_OPTS:
		put_u32(&w, m->u.openo.flags);
		put_u32(&w, m->u.openo.policy);
		put_u64(&w, m->u.openo.capacity);
		put_u64(&w, m->u.openo.quota);
		put_u32(&w, m->u.openo.key_max);
		put_u32(&w, m->u.openo.value_max);
		put_u32(&w, m->u.openo.default_ttl);
		put_u32(&w, 0);
		rc = put_name(&w, m->u.openo.name, SHMMAP_NAME_MAX);
		break;
	case MSG_OPENED:
		put_u32(&w, m->u.opened.index);
		put_u32(&w, m->u.opened.gen);
		break;
	case MSG_STATS_REPLY:
		put_u32(&w, m->u.stats.pid);
		put_u32(&w, m->u.stats.clients);
		put_u32(&w, m->u.stats.maps);
		put_u32(&w, 0);
		put_u64(&w, m->u.stats.uptime_ms);
		put_u64(&w, m->u.stats.coord_gen);
		break;
	case MSG_ERROR:
		put_u32(&w, (uint32_t)m->u.error.err);
		if (m->u.error.why[0])
			rc = put_name(&w, m->u.error.why, PROTO_NAME_MAX);
		break;
	case MSG_REPAIRED:
		put_u32(&w, m->u.repaired.slots);
		put_u32(&w, m->u.repaired.stripes);
		put_u64(&w, m->u.repaired.roots);
		put_u64(&w, m->u.repaired.freed);
		put_u64(&w, m->u.repaired.pages_freed);
		put_u64(&w, m->u.repaired.bad_roots);
		put_u32(&w, m->u.repaired.busy);
		put_u32(&w, m->u.repaired.pending);
		if (m->u.repaired.deferred)
			put_u32(&w, 1);
		break;
	case MSG_RESUME:
		put_u32(&w, m->u.resume.pid);
		put_u32(&w, m->u.resume.slot);
		put_u64(&w, m->u.resume.slot_gen);
		break;
	case MSG_GROW:
		put_u32(&w, m->u.grow.seen);
		put_u32(&w, m->u.grow.need);
		put_u64(&w, m->u.grow.target);
		break;
	case MSG_STATS:
	case MSG_BYE:
	case MSG_OK:
	case MSG_REPAIR:
		break;
	default:
		return -EINVAL;
	}
	if (rc < 0)
		return rc;
	if (w.overflow)
		return -ENOBUFS;
	if (w.len > PROTO_MAX_MSG)
		return -EINVAL;
	uint32_t body = (uint32_t)(w.len - PROTO_HDR);
	for (int i = 0; i < 4; i++)
		w.p[8 + i] = (unsigned char)(body >> (8 * i));
	return (int)w.len;
}

struct rbuf {
	const unsigned char *p;
	size_t len, pos;
	bool bad;
};

static const unsigned char *take(struct rbuf *r, size_t n)
{
	if (r->bad || n > r->len - r->pos) {
		r->bad = true;
		return NULL;
	}
	const unsigned char *q = r->p + r->pos;
	r->pos += n;
	return q;
}

static uint16_t get_u16(struct rbuf *r)
{
	const unsigned char *q = take(r, 2);
	return q ? (uint16_t)(q[0] | q[1] << 8) : 0;
}

static uint32_t get_u32(struct rbuf *r)
{
	const unsigned char *q = take(r, 4);
	if (!q)
		return 0;
	return (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
}

static uint64_t get_u64(struct rbuf *r)
{
	uint64_t lo = get_u32(r);
	return lo | (uint64_t)get_u32(r) << 32;
}

static void get_name(struct rbuf *r, char *out, size_t max)
{
	uint16_t n = get_u16(r);
	if (n > max) {
		r->bad = true;
		return;
	}
	const unsigned char *q = take(r, n);
	if (!q || memchr(q, '\0', n)) {
		r->bad = true;
		return;
	}
	memcpy(out, q, n);
	out[n] = '\0';
}

int shmmap__proto_decode(const void *buf, size_t len, struct proto_msg *m)
{
	if (!buf || len < PROTO_HDR || len > PROTO_MAX_MSG)
		return -EBADMSG;
	struct rbuf r = {.p = buf, .len = len};
	memset(m, 0, sizeof *m);
	if (get_u32(&r) != PROTO_MAGIC)
		return -EPROTO;
	if (get_u16(&r) != PROTO_VERSION)
		return -SHMMAP_EVERSION;
	uint16_t type = get_u16(&r);
	uint32_t body = get_u32(&r);
	m->seq = get_u32(&r);
	if (type == 0 || type > MSG_TYPE_MAX)
		return -EPROTO;
	if (body != len - PROTO_HDR)
		return -EBADMSG;
	m->type = type;
	switch (type) {
	case MSG_HELLO:
		m->u.hello.pid = get_u32(&r);
		m->u.hello.flags = get_u32(&r);
		break;
	case MSG_WELCOME:
		m->u.welcome.slot = get_u32(&r);
		m->u.welcome.flags = get_u32(&r);
		m->u.welcome.slot_gen = get_u64(&r);
		m->u.welcome.size = get_u64(&r);
		m->u.welcome.base = get_u64(&r);
		get_name(&r, m->u.welcome.shm_name, PROTO_NAME_MAX);
		break;
	case MSG_OPEN:
	case MSG_DROP:
	case MSG_FLUSH:
		m->u.open.flags = get_u32(&r);
		get_name(&r, m->u.open.name, SHMMAP_NAME_MAX);
		if (!r.bad && m->u.open.name[0] == '\0')
			r.bad = true;
		break;
	case MSG_SAVE:
		m->u.save.flags = get_u32(&r);
		get_name(&r, m->u.save.path, PROTO_NAME_MAX);
		break;
	case MSG_OPEN_OPTS:
		m->u.openo.flags = get_u32(&r);
		m->u.openo.policy = get_u32(&r);
		m->u.openo.capacity = get_u64(&r);
		m->u.openo.quota = get_u64(&r);
		m->u.openo.key_max = get_u32(&r);
		m->u.openo.value_max = get_u32(&r);
		m->u.openo.default_ttl = get_u32(&r);
		(void)get_u32(&r);
		get_name(&r, m->u.openo.name, SHMMAP_NAME_MAX);
		if (!r.bad && m->u.openo.name[0] == '\0')
			r.bad = true;
		break;
	case MSG_OPENED:
		m->u.opened.index = get_u32(&r);
		m->u.opened.gen = get_u32(&r);
		break;
	case MSG_STATS_REPLY:
		m->u.stats.pid = get_u32(&r);
		m->u.stats.clients = get_u32(&r);
		m->u.stats.maps = get_u32(&r);
		(void)get_u32(&r);
		m->u.stats.uptime_ms = get_u64(&r);
		m->u.stats.coord_gen = get_u64(&r);
		break;
	case MSG_ERROR:
		m->u.error.err = (int32_t)get_u32(&r);
		if (!r.bad && m->u.error.err >= 0)
			r.bad = true;
		m->u.error.why[0] = '\0';
		if (!r.bad && r.pos < len) {
			get_name(&r, m->u.error.why, PROTO_NAME_MAX);
			if (!r.bad && m->u.error.why[0] == '\0')
				r.bad = true; /* an empty reason is sent as none */
		}
		break;
	case MSG_REPAIRED:
		m->u.repaired.slots = get_u32(&r);
		m->u.repaired.stripes = get_u32(&r);
		m->u.repaired.roots = get_u64(&r);
		m->u.repaired.freed = get_u64(&r);
		m->u.repaired.pages_freed = get_u64(&r);
		m->u.repaired.bad_roots = get_u64(&r);
		m->u.repaired.busy = get_u32(&r);
		m->u.repaired.pending = get_u32(&r);
		m->u.repaired.deferred = 0;
		if (!r.bad && r.pos < len) {
			m->u.repaired.deferred = get_u32(&r);
			if (!r.bad && m->u.repaired.deferred != 1)
				r.bad = true; /* a sweep that ran is sent without it */
		}
		break;
	case MSG_RESUME:
		m->u.resume.pid = get_u32(&r);
		m->u.resume.slot = get_u32(&r);
		m->u.resume.slot_gen = get_u64(&r);
		break;
	case MSG_GROW:
		m->u.grow.seen = get_u32(&r);
		m->u.grow.need = get_u32(&r);
		m->u.grow.target = get_u64(&r);
		break;
	default: /* STATS, BYE, OK, REPAIR: empty body */
		break;
	}
	if (r.bad || r.pos != len)
		return -EBADMSG;
	return 0;
}

/* ---- socket I/O ---- */

int shmmap__proto_send(int sock, const struct proto_msg *m, int fd_pass)
{
	unsigned char buf[PROTO_MAX_MSG];
	int n = shmmap__proto_encode(m, buf, sizeof buf);
	if (n < 0)
		return n;
	struct iovec iov = {.iov_base = buf, .iov_len = (size_t)n};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cb;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd_pass >= 0) {
		memset(&cb, 0, sizeof cb);
		mh.msg_control = cb.b;
		mh.msg_controllen = sizeof cb.b;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd_pass, sizeof(int));
	}
	ssize_t r;
	do
		r = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EPIPE ? -ECONNRESET : -errno;
	return r == n ? 0 : -EIO;
}

int shmmap__proto_recv(int sock, struct proto_msg *m, int *fd_out)
{
	unsigned char buf[PROTO_MAX_MSG + 1];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 4)];
	} cb;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = cb.b, .msg_controllen = sizeof cb.b};
	if (fd_out)
		*fd_out = -1;
	ssize_t r;
	do
		r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	/* Collect passed descriptors: keep one if wanted, close the rest. */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (fd_out && *fd_out < 0)
				*fd_out = fd;
			else
				close(fd);
		}
	}
	int rc;
	if (r == 0)
		rc = -ECONNRESET;
	else if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC) || (size_t)r > PROTO_MAX_MSG)
		rc = -EBADMSG;
	else
		rc = shmmap__proto_decode(buf, (size_t)r, m);
	if (rc < 0 && fd_out && *fd_out >= 0) {
		close(*fd_out);
		*fd_out = -1;
	}
	return rc;
}
