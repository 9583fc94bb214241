/*
 * log.h - the coordinator's log: one line per event, with a priority.
 *
 * Priorities are syslog's (LOG_ERR 3 .. LOG_DEBUG 7), the numbers journald
 * reads from a "<N>" line prefix (sd-daemon(3)).  Use the macros:
 *   log_error    a failure: something the coordinator could not do
 *   log_warning  a refusal, or something replaced or lost
 *   log_notice   a recovery or a repair; starting and stopping
 *   log_info     routine events (attach, detach, map created, saved)
 *   log_debug    chatter
 * Lines above the level ([server] log_level, default info) are dropped.
 */
#ifndef SHMMAP_LOG_H
#define SHMMAP_LOG_H

#include <stdbool.h>
#include <syslog.h> /* LOG_ERR .. LOG_DEBUG */

/* Choose the format, once, before any thread starts: journald's "<N>"
 * prefix if stderr is the journal stream named by $JOURNAL_STREAM (see
 * log.c), else timestamped lines. */
void shmmap__log_init(void);
/* Does the log go to the journal (the "<N>" format)? */
bool shmmap__log_to_journal(void);
/* Set the level (LOG_ERR..LOG_DEBUG; others are clamped).  Any thread. */
void shmmap__log_set_level(int level);
int shmmap__log_level(void);
/* "error", "warning", "notice", "info", "debug". */
const char *shmmap__log_level_name(int level);

/* Log one line at priority prio (thread-safe: one write(2) per line). */
__attribute__((format(printf, 2, 3))) void shmmap__log(int prio, const char *fmt, ...);

#define log_error(...) shmmap__log(LOG_ERR, __VA_ARGS__)
#define log_warning(...) shmmap__log(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) shmmap__log(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) shmmap__log(LOG_INFO, __VA_ARGS__)
#define log_debug(...) shmmap__log(LOG_DEBUG, __VA_ARGS__)

#endif /* SHMMAP_LOG_H */
