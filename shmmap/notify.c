/*
 * notify.c - the sd_notify(3) datagram protocol, written out instead of
 * linking libsystemd: the protocol is one AF_UNIX datagram of
 * "KEY=VALUE\n" lines sent to the socket named by $NOTIFY_SOCKET, which
 * takes fewer lines than the build and packaging glue for libsystemd, and
 * keeps shmmapd free of a run-time dependency on it (it runs the same
 * without systemd, where $NOTIFY_SOCKET is simply unset).
 *
 * $NOTIFY_SOCKET is untrusted input: it must be "/absolute/path" (shorter
 * than sun_path) or "@abstract-name" (the '@' stands for the leading NUL
 * of Linux's abstract namespace; at most sizeof sun_path bytes in all).
 * Anything else (including systemd 254's "vsock:" addresses, which a
 * Debian 12 systemd never sets) turns notifications off with a reason.
 *
 * Invariants: the address is parsed and checked once, by
 * shmmap__notify_init, before threads start; afterwards only the main
 * thread sends.  A send waits at most NOTIFY_SEND_TIMEOUT_S for room in
 * systemd's queue (dropping READY=1 would fail the start) and never raises
 * SIGPIPE; a failed send is reported to the caller and changes nothing.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

#define NOTIFY_MSG_MAX 1024
#define NOTIFY_SEND_TIMEOUT_S 5

static struct {
	int fd;
	struct sockaddr_un sa;
	socklen_t len;
} nt = {.fd = -1};

int shmmap__notify_init(char *err, size_t errlen)
{
	if (errlen)
		err[0] = '\0';
	shmmap__notify_close();
	const char *e = getenv("NOTIFY_SOCKET");
	if (!e || !*e)
		return 0;
	size_t n = strlen(e);
	memset(&nt.sa, 0, sizeof nt.sa);
	nt.sa.sun_family = AF_UNIX;
	if (e[0] == '/') {
		if (n >= sizeof nt.sa.sun_path) {
			snprintf(err, errlen, "$NOTIFY_SOCKET: path too long (%zu bytes, at most %zu)",
				 n, sizeof nt.sa.sun_path - 1);
			return -ENAMETOOLONG;
		}
		memcpy(nt.sa.sun_path, e, n + 1);
		nt.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	} else if (e[0] == '@') {
		if (n < 2 || n > sizeof nt.sa.sun_path) {
			snprintf(err, errlen, "$NOTIFY_SOCKET: abstract name of %zu bytes (1..%zu)",
				 n - 1, sizeof nt.sa.sun_path - 1);
			return -ENAMETOOLONG;
		}
		memcpy(nt.sa.sun_path + 1, e + 1, n - 1); /* sun_path[0] stays NUL */
		nt.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		snprintf(err, errlen, "$NOTIFY_SOCKET: unsupported address (not \"/path\" or \"@name\")");
		return -EAFNOSUPPORT;
	}
	nt.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (nt.fd < 0) {
		int rc = -errno;
		snprintf(err, errlen, "$NOTIFY_SOCKET: socket: %s", strerror(-rc));
		return rc;
	}
	struct timeval tv = {.tv_sec = NOTIFY_SEND_TIMEOUT_S};
	setsockopt(nt.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return 1;
}

int shmmap__notify(const char *fmt, ...)
{
	if (nt.fd < 0)
		return 0;
	char msg[NOTIFY_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
	ssize_t w;
	do
		w = sendto(nt.fd, msg, len, MSG_NOSIGNAL,
			   (const struct sockaddr *)&nt.sa, nt.len);
	while (w < 0 && errno == EINTR);
	return w < 0 ? -errno : 0;
}

void shmmap__notify_close(void)
{
	if (nt.fd >= 0)
		close(nt.fd);
	nt.fd = -1;
}
