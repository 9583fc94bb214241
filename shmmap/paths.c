/*
 * paths.c - the default socket path and segment name (paths.h).
 *
 * Invariant: the decision depends only on the effective uid, whether
 * SHMMAP_SYSTEM_RUNDIR is writable, $XDG_RUNTIME_DIR and (for a client)
 * whether a socket exists at the per-user path: the same inputs give
 * shmmapd, shmmapctl and shmmap_attach(NULL) the same answer.  Nothing here
 * prints or allocates.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "paths.h"
#include "shmmap.h"

/* What fits sun_path, terminator included. */
#define SUN_PATH_CAP sizeof(((struct sockaddr_un *)0)->sun_path)

static int put(char *buf, size_t cap, const char *a, const char *b)
{
	int n = snprintf(buf, cap, "%s%s", a, b);
	if (n < 0 || (size_t)n >= cap || (size_t)n >= SUN_PATH_CAP) {
		if (cap)
			buf[0] = '\0';
		return -ENAMETOOLONG;
	}
	return 0;
}

int shmmap__default_socket(char *buf, size_t cap, bool server)
{
	if (geteuid() == 0 || faccessat(AT_FDCWD, SHMMAP_SYSTEM_RUNDIR, W_OK, AT_EACCESS) == 0)
		return put(buf, cap, SHMMAP_DEFAULT_SOCKET, "");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (!xdg || xdg[0] != '/') { /* the XDG spec: a relative one is ignored */
		if (!server)
			return put(buf, cap, SHMMAP_DEFAULT_SOCKET, "");
		if (cap)
			buf[0] = '\0';
		return -ENOENT;
	}
	int rc = put(buf, cap, xdg, SHMMAP_USER_SOCKET);
	if (server)
		return rc;
	struct stat st;
	if (rc == 0 && stat(buf, &st) == 0 && S_ISSOCK(st.st_mode))
		return 0;
	/* No coordinator of this user's (none can listen on a path too long
	 * for sun_path either): the system-wide one. */
	return put(buf, cap, SHMMAP_DEFAULT_SOCKET, "");
}

void shmmap__default_segment(char *buf, size_t cap)
{
	uid_t uid = geteuid();
	if (uid == 0)
		snprintf(buf, cap, "/shmmap");
	else
		snprintf(buf, cap, "/shmmap-%u", (unsigned)uid);
}
