/*
 * log.c - the coordinator's log (log.h): priorities, the level filter, and
 * the two line formats.
 *
 * Format, chosen once by shmmap__log_init():
 *   - journal: "<N>message\n", the prefix journald turns into the entry's
 *     priority (sd-daemon(3)); journald adds the time and the identifier.
 *     Chosen when $JOURNAL_STREAM ("DEV:INO", set by systemd for a unit
 *     whose stdout/stderr go to the journal) names the file stderr is now:
 *     the detection systemd.exec(5) documents.  A mere $NOTIFY_SOCKET, or a
 *     $JOURNAL_STREAM inherited by a process whose stderr was redirected
 *     since, is not enough.
 *   - plain: "YYYY-MM-DD HH:MM:SS shmmapd[PID]: message\n".
 *
 * Invariants: one line per call, written with one write(2), so lines of
 * several threads never interleave; control characters of the message
 * (which may quote names a client chose) become '?', so a message never
 * forges a second line; the level is one atomic int, readable and settable
 * from any thread (SIGHUP sets it from the main thread).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX 1024

static _Atomic int log_level = LOG_INFO;
static bool log_journal;

static const char *const level_names[] = {
	[LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/* Parse "DEV:INO" (decimal, nothing else): $JOURNAL_STREAM's format. */
static bool parse_dev_ino(const char *s, uint64_t *dev, uint64_t *ino)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long d = strtoull(s, &end, 10);
	if (errno || *end != ':' || end[1] < '0' || end[1] > '9')
		return false;
	unsigned long long i = strtoull(end + 1, &end, 10);
	if (errno || *end)
		return false;
	*dev = d;
	*ino = i;
	return true;
}

void shmmap__log_init(void)
{
	uint64_t dev, ino;
	struct stat st;
	log_journal = parse_dev_ino(getenv("JOURNAL_STREAM"), &dev, &ino) &&
		      fstat(STDERR_FILENO, &st) == 0 && (uint64_t)st.st_dev == dev &&
		      (uint64_t)st.st_ino == ino;
}

bool shmmap__log_to_journal(void)
{
	return log_journal;
}

void shmmap__log_set_level(int level)
{
	if (level < LOG_ERR)
		level = LOG_ERR;
	if (level > LOG_DEBUG)
		level = LOG_DEBUG;
	atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int shmmap__log_level(void)
{
	return atomic_load_explicit(&log_level, memory_order_relaxed);
}

const char *shmmap__log_level_name(int level)
{
	return level >= LOG_ERR && level <= LOG_DEBUG ? level_names[level] : "?";
}

void shmmap__log(int prio, const char *fmt, ...)
{
	if (prio > shmmap__log_level())
		return;
	int saved = errno; /* callers may log between a failure and its errno */
	char line[LOG_LINE_MAX];
	size_t n;
	if (log_journal) {
		n = (size_t)snprintf(line, sizeof line, "<%d>", prio < 0 ? LOG_ERR : prio);
	} else {
		char ts[32];
		time_t t = time(NULL);
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
		n = (size_t)snprintf(line, sizeof line, "%s shmmapd[%d]: ", ts, (int)getpid());
	}
	size_t msg = n;
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(line + n, sizeof line - n - 1, fmt, ap); /* room for '\n' */
	va_end(ap);
	if (w > 0)
		n += (size_t)w < sizeof line - n - 1 ? (size_t)w : sizeof line - n - 2;
	for (size_t i = msg; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[n++] = '\n';
	/* stderr may be a pipe or the journal's stream socket: one write. */
	for (size_t off = 0; off < n;) {
		ssize_t k = write(STDERR_FILENO, line + off, n - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	errno = saved;
}
