/*
 * paths.h - where a coordinator and its clients meet when nobody names a
 * socket: the one resolver shared by the library (shmmap_attach(NULL)),
 * shmmapctl and shmmapd, so that the three always agree.
 */
#ifndef SHMMAP_PATHS_H
#define SHMMAP_PATHS_H

#include <stdbool.h>
#include <stddef.h>

#define SHMMAP_SYSTEM_RUNDIR "/run/shmmap"        /* SHMMAP_DEFAULT_SOCKET's directory */
#define SHMMAP_USER_SOCKET "/shmmap/shmmap.sock" /* under $XDG_RUNTIME_DIR */

/*
 * The default socket path, into buf (cap bytes):
 *   - root, or a process that may write SHMMAP_SYSTEM_RUNDIR (a service
 *     user that owns it): SHMMAP_DEFAULT_SOCKET;
 *   - otherwise (an ordinary user): $XDG_RUNTIME_DIR/shmmap/shmmap.sock.
 *     A coordinator (server true) binds there; a client (server false)
 *     connects there if a socket exists there, and otherwise to
 *     SHMMAP_DEFAULT_SOCKET: the system-wide coordinator, which may allow
 *     this user ([server] allow_uids).
 * Returns 0; for a coordinator only: -ENOENT if $XDG_RUNTIME_DIR is needed
 * but unset, empty or not an absolute path, -ENAMETOOLONG if the path does
 * not fit cap (or sun_path); buf is then "".  Reads the environment: call it before threads start
 * or where nothing else changes the environment.
 */
int shmmap__default_socket(char *buf, size_t cap, bool server);

/* The default segment name, into buf: "/shmmap" for root, "/shmmap-UID"
 * for any other effective uid, so that users never share a name. */
void shmmap__default_segment(char *buf, size_t cap);

#endif /* SHMMAP_PATHS_H */
