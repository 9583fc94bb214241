/*
 * notify.h - systemd's service notification protocol (sd_notify(3)), for
 * shmmapd run as a Type=notify unit: READY=1, RELOADING=1, STOPPING=1,
 * STATUS=...
 */
#ifndef SHMMAP_NOTIFY_H
#define SHMMAP_NOTIFY_H

#include <stddef.h>

/*
 * Read $NOTIFY_SOCKET once (call before any thread starts).  Returns 1 if
 * it names a socket to notify, 0 if it is unset or empty (every later
 * shmmap__notify is then a no-op), or a negative errno if it is set but
 * unusable (too long, not "/..." or "@...", no socket), with the reason in
 * err: notifications are then off too.
 */
int shmmap__notify_init(char *err, size_t errlen);

/*
 * Send one notification: fmt expands to newline-separated KEY=VALUE
 * assignments ("READY=1\nSTATUS=serving").  Returns 0 (also when
 * notifications are off) or a negative errno; waits at most a few seconds
 * for room in the receiver's queue.  Main thread only.
 */
__attribute__((format(printf, 1, 2))) int shmmap__notify(const char *fmt, ...);

/* Close the notification socket (at exit; idempotent). */
void shmmap__notify_close(void);

#endif /* SHMMAP_NOTIFY_H */
