/*
 * check_daemon.c - shmmapd as a service: the sd_notify protocol (READY=1
 * only once the socket accepts, RELOADING=1/READY=1 around SIGHUP,
 * STOPPING=1, an unusable $NOTIFY_SOCKET ignored), the log (journald's
 * "<N>" prefixes when $JOURNAL_STREAM names stderr, the level filter),
 * SIGHUP reloads (access lists, log level, a broken file keeps the old
 * settings, fixed keys reported), an ordinary user's daemon, shmmapctl and
 * client on the per-user defaults, start failures that leave nothing
 * behind with messages that say what to do, and the systemd unit; and
 * workers attaching and exiting by the hundred (sessions closed many per
 * batch of events); a process attached to a segment that was removed
 * (its writes fail with EDETACHED, not succeed unseen).
 *
 * Tests that switch uids need root and /usr/bin/setpriv; without them they
 * say "SKIP" on stderr and pass.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define NOBODY 65534

static struct tu_coord co;

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

static bool can_switch_uid(const char *test)
{
	if (geteuid() == 0 && access("/usr/bin/setpriv", X_OK) == 0)
		return true;
	tu_skip(test, "needs root and /usr/bin/setpriv");
	return false;
}

/* ---- files and logs ---- */

static char *slurp(const char *path)
{
	static char buf[1 << 17];
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static size_t count_in(const char *path, const char *needle)
{
	const char *l = slurp(path);
	size_t n = 0;
	for (const char *p = l; p && (p = strstr(p, needle)); p++)
		n++;
	return n;
}

struct log_wait {
	const char *path, *needle;
	size_t n; /* at least this many occurrences */
};

static bool log_has(void *arg)
{
	struct log_wait *w = arg;
	return count_in(w->path, w->needle) >= w->n;
}

#define WAIT_LOG(path_, needle_, n_)                                                     \
	do {                                                                             \
		struct log_wait w_ = {(path_), (needle_), (n_)};                         \
		ck_assert_msg(tu_wait(log_has, &w_, 10000), "no \"%s\" (x%zu) in the log:\n%s", \
			      w_.needle, w_.n, slurp(w_.path));                          \
	} while (0)

/* Rewrite co's config (the layout tu_coord_start writes) with other extras. */
static void rewrite_conf(const struct tu_coord *c, const char *extra)
{
	char tmp[320];
	snprintf(tmp, sizeof tmp, "%s.new", c->conf);
	FILE *f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[segment]\nname = %s\nsize = 8M\n\n[server]\nsocket = %s\n\n%s\n", c->shm,
		c->sock, extra);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(rename(tmp, c->conf), 0); /* the daemon never reads half a file */
}

static bool accepts(void *arg)
{
	const char *path = arg;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	bool ok = s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
	if (s >= 0)
		close(s);
	return ok;
}

/* Start shmmapd on c's config without waiting for anything. */
static pid_t spawn_coord(const struct tu_coord *c)
{
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(c->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		execl(getenv("SHMMAPD"), "shmmapd", "-c", c->conf, "--foreground", (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* ---- sd_notify ---- */

/* A datagram socket playing systemd's part; name "@..." is abstract. */
static int notify_listen(const char *name)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t n = strlen(name);
	ck_assert(n < sizeof sa.sun_path);
	memcpy(sa.sun_path, name, n);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
				    (name[0] == '@' ? 0 : 1));
	ck_assert_msg(bind(fd, (struct sockaddr *)&sa, len) == 0, "bind %s: %s", name,
		      strerror(errno));
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
	return fd;
}

/* The next notification (NUL-terminated), or fail after 10 s. */
static void notify_next(int fd, char *buf, size_t cap)
{
	struct pollfd p = {fd, POLLIN, 0};
	ck_assert_msg(poll(&p, 1, 10000) == 1, "no notification within 10 s");
	ssize_t n = recv(fd, buf, cap - 1, 0);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
}

START_TEST(notify_ready_only_once_listening)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	char name[64], msg[1024];
	snprintf(name, sizeof name, "@shmmap-test-notify-%d", (int)getpid());
	int fd = notify_listen(name);
	co.pid = spawn_coord(&co);
	notify_next(fd, msg, sizeof msg);
	/* The first word it says is READY=1, and by then the socket accepts. */
	ck_assert_msg(strncmp(msg, "READY=1\n", 8) == 0, "first notification: %s", msg);
	ck_assert_msg(accepts(co.sock), "READY=1 before the socket accepts");
	ck_assert_msg(strstr(msg, "STATUS=serving on ") != NULL, "%s", msg);
	shmmap *sm = tu_attach(co.sock);
	shmmap_detach(sm);
	kill(co.pid, SIGTERM);
	notify_next(fd, msg, sizeof msg);
	ck_assert_msg(strncmp(msg, "STOPPING=1\n", 11) == 0, "on SIGTERM: %s", msg);
	int st = tu_waitpid(co.pid, 10000);
	co.pid = 0;
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
	close(fd);
}
END_TEST

START_TEST(notify_reload_and_path_socket)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	char name[300], msg[1024];
	snprintf(name, sizeof name, "%s/notify", co.dir);
	int fd = notify_listen(name);
	co.pid = spawn_coord(&co);
	notify_next(fd, msg, sizeof msg);
	ck_assert_msg(strstr(msg, "READY=1") != NULL, "%s", msg);
	kill(co.pid, SIGHUP);
	notify_next(fd, msg, sizeof msg);
	ck_assert_msg(strncmp(msg, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0, "on SIGHUP: %s", msg);
	char *end;
	unsigned long long us = strtoull(msg + 27, &end, 10);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ck_assert_msg(us > 0 && *end == '\n' &&
			      us <= (unsigned long long)ts.tv_sec * 1000000u + (unsigned long long)ts.tv_nsec / 1000u,
		      "MONOTONIC_USEC: %s", msg);
	notify_next(fd, msg, sizeof msg);
	ck_assert_msg(strncmp(msg, "READY=1\n", 8) == 0, "after the reload: %s", msg);
	/* Still serving. */
	shmmap *sm = tu_attach(co.sock);
	shmmap_detach(sm);
	kill(co.pid, SIGTERM);
	notify_next(fd, msg, sizeof msg);
	ck_assert_msg(strstr(msg, "STOPPING=1") != NULL, "%s", msg);
	int st = tu_waitpid(co.pid, 10000);
	co.pid = 0;
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
	close(fd);
	unlink(name);
}
END_TEST

/* A $NOTIFY_SOCKET that cannot be right is reported and ignored. */
static const char *const bad_notify[] = {
	"relative/notify.sock",
	"@" /* empty abstract name */,
	"vsock:2:1234",
	NULL, /* an abstract name longer than sun_path: built below */
	NULL, /* a path longer than sun_path */
};

START_TEST(notify_bad_socket_is_ignored)
{
	char longname[300];
	const char *v = bad_notify[_i];
	if (!v) {
		memset(longname, 'n', 200);
		longname[0] = _i == 3 ? '@' : '/';
		longname[200] = '\0';
		v = longname;
	}
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", v, 1), 0);
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_detach(sm);
	WAIT_LOG(co.log, "$NOTIFY_SOCKET: ", 1);
	ck_assert_ptr_nonnull(strstr(slurp(co.log), "not notifying systemd"));
	ck_assert_int_eq(tu_coord_stop(&co), 0);
}
END_TEST

/* ---- the log ---- */

START_TEST(log_journal_prefixes)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	ck_assert_int_eq(truncate(co.log, 0), 0);
	struct stat st;
	ck_assert_int_eq(stat(co.log, &st), 0);
	char js[64];
	snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	ck_assert_int_eq(setenv("JOURNAL_STREAM", js, 1), 0);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_detach(sm);
	WAIT_LOG(co.log, "<6>client pid ", 1);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	const char *l = slurp(co.log);
	ck_assert_msg(strstr(l, "<5>adopted existing segment") != NULL, "%s", l);
	ck_assert_msg(strstr(l, "<6>listening on ") != NULL, "%s", l);
	ck_assert_msg(strstr(l, "<5>Terminated: shutting down") != NULL, "%s", l);
	/* Every line carries a priority and nothing else before it. */
	for (const char *p = l; *p; p = strchr(p, '\n') + 1) {
		ck_assert_msg(p[0] == '<' && p[1] >= '3' && p[1] <= '7' && p[2] == '>', "line: %.80s", p);
		ck_assert_ptr_nonnull(strchr(p, '\n'));
	}
}
END_TEST

START_TEST(log_plain_when_stream_is_not_stderr)
{
	/* An inherited $JOURNAL_STREAM that names another file: plain lines. */
	ck_assert_int_eq(setenv("JOURNAL_STREAM", "1:1", 1), 0);
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	const char *l = slurp(co.log);
	ck_assert_msg(strstr(l, "<6>") == NULL, "%s", l);
	/* "YYYY-MM-DD HH:MM:SS shmmapd[PID]: listening on ..." */
	const char *p = strstr(l, "listening on ");
	ck_assert_ptr_nonnull(p);
	while (p > l && p[-1] != '\n')
		p--;
	ck_assert_msg(p[4] == '-' && p[7] == '-' && p[10] == ' ' && p[13] == ':' &&
			      strncmp(p + 20, "shmmapd[", 8) == 0,
		      "line: %.80s", p);
}
END_TEST

/* A connection that breaks the protocol: a warning in the log. */
static void bad_client(const char *sock)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(connect(s, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(send(s, "garbage!", 8, 0), 8);
	char b;
	ck_assert_int_le(recv(s, &b, 1, 0), 0); /* the coordinator hangs up */
	close(s);
}

/* SIGHUP, then wait for the reload to be over: RELOADING=1, READY=1. */
static void hup_and_wait(pid_t pid, int nfd)
{
	char msg[1024];
	kill(pid, SIGHUP);
	notify_next(nfd, msg, sizeof msg);
	ck_assert_msg(strstr(msg, "RELOADING=1") != NULL, "%s", msg);
	notify_next(nfd, msg, sizeof msg);
	ck_assert_msg(strstr(msg, "READY=1") != NULL, "%s", msg);
}

START_TEST(log_level_filters_and_reloads)
{
	char name[64], msg[1024];
	snprintf(name, sizeof name, "@shmmap-test-notify-%d", (int)getpid());
	int nfd = notify_listen(name);
	ck_assert_int_eq(tu_coord_start(&co, "8M", "[server]\nlog_level = warning\n"), 0);
	notify_next(nfd, msg, sizeof msg); /* READY=1 */
	shmmap *sm = tu_attach(co.sock);
	shmmap_detach(sm);
	bad_client(co.sock); /* its line is written before the hang-up */
	const char *l = slurp(co.log);
	ck_assert_msg(strstr(l, "bad message") != NULL, "no warning:\n%s", l);
	ck_assert_msg(!strstr(l, "listening on") && !strstr(l, "attached as slot"),
		      "info lines at level warning:\n%s", l);

	/* Reloaded to info: routine events are logged again. */
	rewrite_conf(&co, "[server]\nlog_level = info\n");
	hup_and_wait(co.pid, nfd);
	ck_assert_ptr_nonnull(strstr(slurp(co.log), "log_level info"));
	sm = tu_attach(co.sock);
	shmmap_detach(sm);
	WAIT_LOG(co.log, "attached as slot", 1);

	/* To error: a warning is dropped. */
	rewrite_conf(&co, "[server]\nlog_level = error\n");
	hup_and_wait(co.pid, nfd);
	bad_client(co.sock);
	ck_assert_uint_eq(count_in(co.log, "bad message"), 1);
	/* A file that does not load is an error: logged; the level stays. */
	rewrite_conf(&co, "[server]\nlog_level = bogus\n");
	hup_and_wait(co.pid, nfd);
	ck_assert_msg(count_in(co.log, "unknown level \"bogus\"") == 1 &&
			      count_in(co.log, "keeping the current settings") == 1,
		      "%s", slurp(co.log));
	bad_client(co.sock);
	ck_assert_uint_eq(count_in(co.log, "bad message"), 1);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	close(nfd);
}
END_TEST

/* ---- SIGHUP: access lists ---- */

/* Run $SHMMAPCTL as nobody with the given arguments (up to 4). */
static int ctl_as_nobody(char *out, size_t cap, const char *sock, const char *a, const char *b,
			 const char *c, const char *d)
{
	char *argv[16];
	int n = 0;
	argv[n++] = "/usr/bin/setpriv";
	argv[n++] = "--reuid=65534";
	argv[n++] = "--regid=65534";
	argv[n++] = "--clear-groups";
	argv[n++] = getenv("SHMMAPCTL");
	if (sock) {
		argv[n++] = "-s";
		argv[n++] = (char *)sock;
	}
	const char *rest[] = {a, b, c, d};
	for (int i = 0; i < 4 && rest[i]; i++)
		argv[n++] = (char *)rest[i];
	argv[n] = NULL;
	char err[2048];
	int st = tu_run(argv, out, cap, err, sizeof err);
	strncat(out, err, cap - strlen(out) - 1);
	return st;
}

START_TEST(reload_changes_access_keeps_clients)
{
	if (!can_switch_uid("reload_changes_access_keeps_clients"))
		return;
	const char *base = "[server]\nsocket_mode = 0666\n";
	ck_assert_int_eq(tu_coord_start(&co, "8M", base), 0);
	ck_assert_int_eq(chmod(co.dir, 0755), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "m");
	ck_assert_int_eq(shmmap_put(sm, m, "root", 4, "1", 1, 0, 0), 0);
	char out[4096];

	int st = ctl_as_nobody(out, sizeof out, co.sock, "put", "m", "nobody", "1");
	ck_assert_msg(st != 0 && strstr(out, "ermission denied"), "before: exit %d: %s", st, out);

	char extra[256];
	snprintf(extra, sizeof extra, "%sallow_uids = %d\n", base, NOBODY);
	rewrite_conf(&co, extra);
	kill(co.pid, SIGHUP);
	WAIT_LOG(co.log, "reloaded: allow_uids 1", 1);
	st = ctl_as_nobody(out, sizeof out, co.sock, "put", "m", "nobody", "1");
	ck_assert_msg(st == 0, "allowed: exit %d: %s", st, out);
	/* The attached client kept working all along, and sees nobody's put. */
	char v[8];
	size_t vl;
	ck_assert_int_eq(shmmap_get(sm, m, "nobody", 6, v, sizeof v, &vl), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "root", 4, "2", 1, 0, 0), 0);

	/* A file that does not load: the old settings stay. */
	rewrite_conf(&co, "[server]\nallow_uids = no-such-user-xyz\n");
	kill(co.pid, SIGHUP);
	WAIT_LOG(co.log, "keeping the current settings", 1);
	ck_assert_ptr_nonnull(strstr(slurp(co.log), "no such user \"no-such-user-xyz\""));
	st = ctl_as_nobody(out, sizeof out, co.sock, "get", "m", "root", NULL);
	ck_assert_msg(st == 0 && strstr(out, "2"), "after a bad reload: exit %d: %s", st, out);

	/* Read-only now, and a key that needs a restart is reported. */
	snprintf(extra, sizeof extra, "%sreadonly_uids = nobody\n[map]\nkey_max = 100\n", base);
	rewrite_conf(&co, extra);
	kill(co.pid, SIGHUP);
	WAIT_LOG(co.log, "reloaded: allow_uids 0", 1);
	ck_assert_ptr_nonnull(strstr(slurp(co.log), "map.key_max changed: ignored until"));
	st = ctl_as_nobody(out, sizeof out, co.sock, "get", "m", "root", NULL);
	ck_assert_msg(st == 0 && strstr(out, "2"), "read-only get: exit %d: %s", st, out);
	st = ctl_as_nobody(out, sizeof out, co.sock, "put", "m", "nobody", "2");
	ck_assert_msg(st != 0 && strstr(out, "not permitted"), "read-only put: exit %d: %s", st, out);

	/* Removed from the lists: refused again; the old client still works. */
	rewrite_conf(&co, base);
	kill(co.pid, SIGHUP);
	WAIT_LOG(co.log, "reloaded: allow_uids 0, allow_gids 0, readonly_uids 0", 1);
	st = ctl_as_nobody(out, sizeof out, co.sock, "get", "m", "root", NULL);
	ck_assert_msg(st != 0 && strstr(out, "ermission denied"), "removed: exit %d: %s", st, out);
	ck_assert_int_eq(shmmap_get(sm, m, "root", 4, v, sizeof v, &vl), 0);
	ck_assert_int_eq(shmmap_put(sm, m, "root", 4, "3", 1, 0, 0), 0);
	shmmap_detach(sm);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
}
END_TEST

/* [map NAME] sections added, removed or changed are not applied by a
 * reload: each is logged as such, an unchanged one is not. */
START_TEST(reload_reports_map_sections)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", "[map kept]\nquota = 1M\n[map gone]\n"
					       "[map edited]\nquota = 1M\n"), 0);
	rewrite_conf(&co, "[map edited]\nquota = 2M\n[map new]\n[map kept]\nquota = 1M\n");
	kill(co.pid, SIGHUP);
	WAIT_LOG(co.log, "reloaded: allow_uids 0", 1);
	const char *l = slurp(co.log);
	ck_assert_msg(strstr(l, "reload: [map new] added: ignored until shmmapd restarts") &&
			      strstr(l, "reload: [map gone] removed: ignored until shmmapd restarts") &&
			      strstr(l, "reload: [map edited] changed: ignored until shmmapd restarts") &&
			      !strstr(l, "[map kept]") && !strstr(l, "segment.name changed"),
		      "%s", l);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
}
END_TEST

/* ---- an ordinary user ---- */

/* A user's world: dir (0755) holds the config, the log and xdg (the
 * user's $XDG_RUNTIME_DIR, 0700, owned by nobody). */
struct user_env {
	char dir[64], xdg[96], conf[96], log[96], sock[128], shm[64];
};

static void user_env_make(struct user_env *u, const char *conf_text)
{
	snprintf(u->dir, sizeof u->dir, "/tmp/shmmap-user-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(u->dir));
	ck_assert_int_eq(chmod(u->dir, 0755), 0);
	snprintf(u->xdg, sizeof u->xdg, "%s/xdg", u->dir);
	ck_assert_int_eq(mkdir(u->xdg, 0700), 0);
	ck_assert_int_eq(chown(u->xdg, NOBODY, NOBODY), 0);
	snprintf(u->conf, sizeof u->conf, "%s/shmmap.ini", u->dir);
	snprintf(u->log, sizeof u->log, "%s/shmmapd.log", u->dir);
	snprintf(u->sock, sizeof u->sock, "%s/shmmap/shmmap.sock", u->xdg);
	snprintf(u->shm, sizeof u->shm, "/shmmap-test-user-%d", (int)getpid());
	FILE *f = fopen(u->conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[segment]\nname = %s\nsize = 8M\n%s", u->shm, conf_text ? conf_text : "");
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(u->conf, 0644), 0);
	ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", u->xdg, 1), 0);
	unsetenv("SHMMAP_SOCKET");
}

static void user_env_remove(struct user_env *u)
{
	char p[160], lock[80];
	unlink(u->sock);
	snprintf(p, sizeof p, "%s/shmmap", u->xdg);
	rmdir(p);
	rmdir(u->xdg);
	unlink(u->conf);
	unlink(u->log);
	rmdir(u->dir);
	snprintf(lock, sizeof lock, "%s.lock", u->shm);
	shm_unlink(u->shm);
	shm_unlink(lock);
}

/* shmmapd as nobody, on u's config, stderr into u's log; not waited for. */
static pid_t spawn_as_nobody(const struct user_env *u)
{
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(u->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		execl("/usr/bin/setpriv", "setpriv", "--reuid=65534", "--regid=65534",
		      "--clear-groups", getenv("SHMMAPD"), "-c", u->conf, "--foreground",
		      (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* shmmapd as nobody to completion: its exit status, stderr into err. */
static int run_as_nobody(const struct user_env *u, char *err, size_t cap)
{
	char out[512];
	char *argv[] = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			getenv("SHMMAPD"), "-c", (char *)u->conf, "--foreground", NULL};
	return tu_run(argv, out, sizeof out, err, cap);
}

static bool shm_exists(const char *name)
{
	int fd = shm_open(name, O_RDONLY, 0);
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

/* A client as nobody in a child: attach with no path, put, get. */
static int client_as_nobody(void)
{
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
		    setresuid(NOBODY, NOBODY, NOBODY) < 0)
			_exit(10);
		shmmap *sm;
		if (shmmap_attach(NULL, &sm) < 0)
			_exit(11);
		shmmap_map m;
		char v[8];
		size_t vl;
		if (shmmap_open(sm, "user", SHMMAP_CREATE, &m) < 0 ||
		    shmmap_put(sm, m, "k2", 2, "lib", 3, 0, 0) < 0 ||
		    shmmap_get(sm, m, "k", 1, v, sizeof v, &vl) < 0 || vl != 3 ||
		    memcmp(v, "ctl", 3) != 0)
			_exit(12);
		shmmap_detach(sm);
		_exit(0);
	}
	int st = tu_waitpid(pid, 20000);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(ordinary_user_daemon_ctl_and_client)
{
	if (!can_switch_uid("ordinary_user_daemon_ctl_and_client"))
		return;
	struct user_env u;
	user_env_make(&u, NULL); /* no socket named: the per-user default */
	pid_t pid = spawn_as_nobody(&u);
	if (!tu_wait(accepts, u.sock, 10000)) {
		kill(pid, SIGKILL);
		tu_waitpid(pid, 10000);
		ck_abort_msg("no coordinator on %s:\n%s", u.sock, slurp(u.log));
	}
	struct stat st;
	ck_assert_int_eq(stat(u.sock, &st), 0);
	ck_assert_uint_eq(st.st_uid, NOBODY);
	char shmpath[128];
	snprintf(shmpath, sizeof shmpath, "/dev/shm%s", u.shm);
	ck_assert_int_eq(stat(shmpath, &st), 0);
	ck_assert_uint_eq(st.st_uid, NOBODY);

	/* shmmapctl as nobody, no -s: finds the user's own coordinator. */
	char out[4096];
	int rc = ctl_as_nobody(out, sizeof out, NULL, "put", "user", "k", "ctl");
	ck_assert_msg(rc == 0, "shmmapctl put: exit %d: %s", rc, out);
	ck_assert_int_eq(client_as_nobody(), 0);
	rc = ctl_as_nobody(out, sizeof out, NULL, "get", "user", "k2", NULL);
	ck_assert_msg(rc == 0 && strstr(out, "lib"), "shmmapctl get: exit %d: %s", rc, out);

	kill(pid, SIGTERM);
	int ws = tu_waitpid(pid, 10000);
	ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "status %d:\n%s", ws, slurp(u.log));
	ck_assert_msg(access(u.sock, F_OK) < 0, "socket left behind");
	user_env_remove(&u);
}
END_TEST

START_TEST(ordinary_user_without_xdg_runtime_dir)
{
	if (!can_switch_uid("ordinary_user_without_xdg_runtime_dir"))
		return;
	struct user_env u;
	user_env_make(&u, NULL);
	unsetenv("XDG_RUNTIME_DIR");
	char err[2048];
	int rc = run_as_nobody(&u, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "XDG_RUNTIME_DIR is not set") &&
			      strstr(err, "[server] socket"),
		      "exit %d: %s", rc, err);
	ck_assert(!shm_exists(u.shm));
	/* shmmapctl tries the system socket and says what it did not try. */
	char out[4096];
	rc = ctl_as_nobody(out, sizeof out, NULL, "status", NULL, NULL, NULL);
	ck_assert_msg(rc != 0 && strstr(out, "attach to " SHMMAP_DEFAULT_SOCKET) &&
			      strstr(out, "$XDG_RUNTIME_DIR is not set"),
		      "shmmapctl: exit %d: %s", rc, out);
	user_env_remove(&u);
}
END_TEST

START_TEST(ordinary_user_socket_dir_not_writable)
{
	if (!can_switch_uid("ordinary_user_socket_dir_not_writable"))
		return;
	struct user_env u;
	char extra[256], rootdir[] = "/tmp/shmmap-rootdir-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(rootdir));
	ck_assert_int_eq(chmod(rootdir, 0755), 0);
	/* Its directory exists and belongs to root; then one to be made. */
	for (int i = 0; i < 2; i++) {
		snprintf(extra, sizeof extra, "[server]\nsocket = %s%s/sock\n", rootdir,
			 i ? "/sub" : "");
		user_env_make(&u, extra);
		char err[2048], want[128];
		int rc = run_as_nobody(&u, err, sizeof err);
		snprintf(want, sizeof want, "%s%s", rootdir, i ? "/sub: cannot create" : "");
		ck_assert_msg(rc == 1 && strstr(err, want) && strstr(err, "Permission denied") &&
				      strstr(err, "[server] socket") && strstr(err, "XDG_RUNTIME_DIR"),
			      "exit %d: %s", rc, err);
		ck_assert_msg(!shm_exists(u.shm), "a segment was left behind");
		user_env_remove(&u);
	}
	rmdir(rootdir);
}
END_TEST

START_TEST(ordinary_user_meets_roots_segment)
{
	if (!can_switch_uid("ordinary_user_meets_roots_segment"))
		return;
	struct user_env u;
	user_env_make(&u, NULL);
	int fd = shm_open(u.shm, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4096), 0);
	char err[2048];
	int rc = run_as_nobody(&u, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, u.shm) && strstr(err, "belongs to user root (uid 0)") &&
			      strstr(err, "[segment] name"),
		      "exit %d: %s", rc, err);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(st.st_size, 4096); /* untouched */
	close(fd);
	ck_assert_msg(access(u.sock, F_OK) < 0, "socket left behind");
	user_env_remove(&u);
}
END_TEST

/*
 * The reverse: a user who made the segment's name first (their own
 * coordinator on it, stopped; or only its lock) does not get root's
 * coordinator to adopt it.  It did: root's data then lived in an object
 * the user owns, reads and writes, and may chmod for anyone.
 */
static void write_root_conf(const struct user_env *u, char *conf, size_t cap)
{
	snprintf(conf, cap, "%s/root.ini", u->dir);
	FILE *f = fopen(conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[segment]\nname = %s\nsize = 8M\n[server]\nsocket = %s/root.sock\n", u->shm,
		u->dir);
	ck_assert_int_eq(fclose(f), 0);
}

/* Root's shmmapd on conf with arg: it must refuse, naming nobody. */
static void root_start_refused(const struct user_env *u, const char *conf, const char *arg,
			       const char *object)
{
	char out[512], err[2048], sock[160];
	char *argv[] = {getenv("SHMMAPD"), "-c", (char *)conf, (char *)arg, NULL};
	int rc = tu_run(argv, out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, object) &&
			      strstr(err, "belongs to user nobody (uid 65534)") &&
			      strstr(err, "[segment] name"),
		      "%s: exit %d: %s%s", arg, rc, out, err);
	snprintf(sock, sizeof sock, "%s/root.sock", u->dir);
	unlink(sock);
}

/* A segment adopted takes the configured mode: a `mode` tightened in the
 * config left it as readable as it was made. */
START_TEST(adopted_segment_takes_the_configured_mode)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", "[segment]\nmode = 0644\n"), 0);
	char path[160];
	snprintf(path, sizeof path, "/dev/shm%s", co.shm);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	CK_EQ(st.st_mode & 0777, 0644);
	int s = tu_coord_stop(&co);
	ck_assert(s >= 0 && WIFEXITED(s) && WEXITSTATUS(s) == 0);
	rewrite_conf(&co, "[segment]\nmode = 0600\n");
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	CK_EQ(st.st_mode & 0777, 0600);
	WAIT_LOG(co.log, "mode 600 set as configured (it was 644)", 1);
}
END_TEST

START_TEST(root_refuses_a_users_segment)
{
	if (!can_switch_uid("root_refuses_a_users_segment"))
		return;
	struct user_env u;
	user_env_make(&u, "[server]\nsocket_mode = 0600\n");
	pid_t pid = spawn_as_nobody(&u);
	if (!tu_wait(accepts, u.sock, 10000)) {
		kill(pid, SIGKILL);
		tu_waitpid(pid, 10000);
		ck_abort_msg("no coordinator on %s:\n%s", u.sock, slurp(u.log));
	}
	kill(pid, SIGTERM);
	int ws = tu_waitpid(pid, 10000);
	ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "status %d:\n%s", ws, slurp(u.log));
	char conf[160], lock[80];
	write_root_conf(&u, conf, sizeof conf);
	snprintf(lock, sizeof lock, "%s.lock", u.shm);
	/* nobody's segment and lock */
	root_start_refused(&u, conf, "--check-config", u.shm);
	root_start_refused(&u, conf, "--foreground", lock);
	/* nobody's segment, no lock: root's own lock, and still refused */
	ck_assert_int_eq(shm_unlink(lock), 0);
	root_start_refused(&u, conf, "--foreground", u.shm);
	root_start_refused(&u, conf, "--reinit", u.shm); /* not replaced either */
	char shmpath[128];
	struct stat st;
	snprintf(shmpath, sizeof shmpath, "/dev/shm%s", u.shm);
	ck_assert_int_eq(stat(shmpath, &st), 0);
	ck_assert_uint_eq(st.st_uid, NOBODY);
	/* no segment, only a lock of nobody's (which nobody could hold) */
	ck_assert_int_eq(shm_unlink(u.shm), 0);
	shm_unlink(lock);
	int fd = shm_open(lock, O_RDWR | O_CREAT | O_EXCL, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fchown(fd, NOBODY, NOBODY), 0);
	close(fd);
	root_start_refused(&u, conf, "--foreground", lock);
	ck_assert_msg(!shm_exists(u.shm), "a segment was made");
	unlink(conf);
	user_env_remove(&u);
}
END_TEST

/* ---- start failures leave nothing behind ---- */

static void write_conf(const char *extra);
static int run_daemon(const char *arg, char *out, size_t cap, char *err, size_t errcap);

/* The test coordinator's config, with [segment] size = size. */
static void write_conf_size(const char *size)
{
	char line[64];
	snprintf(line, sizeof line, "size = %s", size);
	write_conf(line);
}

/* Start shmmapd in the foreground on that config: its exit status, stderr
 * in err. */
static int start_with_size(const char *size, char *err, size_t cap)
{
	write_conf_size(size);
	char out[512];
	return run_daemon("--foreground", out, sizeof out, err, cap);
}

/* A segment made with another max_size: the start is refused with the
 * geometry it has and the configuration's, and that setting them back
 * keeps the data (it said "not a shmmap segment of this configuration"
 * and pointed at --reinit, which loses it); set back, the data is there. */
START_TEST(geometry_change_names_the_fields)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "m");
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "v", 1, 0, 0), 0);
	shmmap_detach(sm);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	char err[2048];
	int rc = start_with_size("16M", err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "another geometry") &&
			      strstr(err, "max_size 8388608") && strstr(err, "max_size 16777216") &&
			      strstr(err, "set them back"),
		      "exit %d: %s", rc, err);
	write_conf_size("8M");
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	sm = tu_attach(co.sock);
	m = tu_open(sm, "m");
	char buf[4];
	size_t n = 0;
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &n), 0);
	shmmap_detach(sm);
}
END_TEST

START_TEST(bind_failure_leaves_no_segment)
{
	char extra[256];
	snprintf(extra, sizeof extra, "[server]\nsocket = /nonexistent-shmmap-%d/sub/sock\n",
		 (int)getpid());
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	shm_unlink(co.shm);
	/* [server] socket in a directory whose parent is missing. */
	FILE *f = fopen(co.conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[segment]\nname = %s\nsize = 8M\n%s", co.shm, extra);
	fclose(f);
	char out[512], err[2048], want[96];
	char *argv[] = {getenv("SHMMAPD"), "-c", co.conf, "--foreground", NULL};
	int rc = tu_run(argv, out, sizeof out, err, sizeof err);
	snprintf(want, sizeof want, "/nonexistent-shmmap-%d/sub: cannot create", (int)getpid());
	ck_assert_msg(rc == 1 && strstr(err, want), "exit %d: %s", rc, err);
	ck_assert_msg(!shm_exists(co.shm), "a segment was left behind");
	/* Only the lock file stays, as README and shmmapd.8 say: removing it
	 * could let two coordinators lock two different files. */
	char lock[96];
	snprintf(lock, sizeof lock, "%s.lock", co.shm);
	ck_assert_msg(shm_exists(lock), "the lock file %s was removed", lock);
}
END_TEST

START_TEST(dev_shm_too_small)
{
	struct statvfs vs;
	ck_assert_int_eq(statvfs("/dev/shm", &vs), 0);
	if ((unsigned long long)vs.f_blocks * vs.f_frsize >= (1ull << 40)) {
		TU_SKIP("/dev/shm holds 1T");
	}
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	shm_unlink(co.shm);
	char err[2048];
	int rc = start_with_size("1T", err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "/dev/shm is too small") && strstr(err, "MiB free of") &&
			      strstr(err, "[segment] size"),
		      "exit %d: %s", rc, err);
	ck_assert_msg(!shm_exists(co.shm), "a segment was left behind");
	ck_assert_msg(access(co.sock, F_OK) < 0, "the socket was left behind");
}
END_TEST

/* ---- configurations that load but cannot start ---- */

/* Write co.conf: the segment's name, the socket, then extra. */
static void write_conf(const char *extra)
{
	FILE *f = fopen(co.conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[segment]\nname = %s\n%s\n[server]\nsocket = %s\n", co.shm, extra, co.sock);
	ck_assert_int_eq(fclose(f), 0);
}

static int run_daemon(const char *arg, char *out, size_t cap, char *err, size_t errcap)
{
	char *argv[] = {getenv("SHMMAPD"), "-c", co.conf, (char *)arg, NULL};
	return tu_run(argv, out, cap, err, errcap);
}

/*
 * --check-config runs the geometry check a start runs (and creates
 * nothing): a segment too small for its slots and directory, and a map
 * table that cannot fit in the heap, are errors, not "configuration ok".
 */
START_TEST(check_config_checks_the_geometry)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	shm_unlink(co.shm);
	char out[512], err[2048];
	write_conf("size = 1M\nmax_clients = 4096\nmax_maps = 4096");
	int rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "segment.size 1048576 is too small for max_clients "
					   "4096, max_maps 4096") && !strstr(out, "ok"),
		      "exit %d: %s%s", rc, out, err);
	/* the same words as a real start */
	char err2[2048];
	rc = run_daemon("--foreground", out, sizeof out, err2, sizeof err2);
	ck_assert_msg(rc == 1 && strstr(err2, "need 947200896 bytes") && strstr(err, "need 947200896 bytes"),
		      "exit %d: %s", rc, err2);
	write_conf("size = 1M\n[map]\nbuckets = 67108864");
	rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "[map]: the initial table of 67108864 buckets") &&
			      strstr(err, "lower buckets"),
		      "exit %d: %s%s", rc, out, err);
	write_conf("size = 1M\n[map big]\ncapacity = 1000000");
	rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "[map big]: the initial table"), "exit %d: %s%s", rc,
		      out, err);
	ck_assert_msg(!shm_exists(co.shm), "--check-config made a segment");
	write_conf("size = 8M\n[map]\nbuckets = 65536");
	rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 0 && strstr(out, "configuration ok"), "exit %d: %s%s", rc, out, err);
}
END_TEST

/*
 * --check-config before a restart: a segment of another geometry (the one a
 * running coordinator serves, or one left by a stopped one) makes the start
 * fail, so the check fails too, with the start's words (it said
 * "configuration ok", and the restart then failed); set back, ok.  With
 * --reinit the start replaces it, and its log names the geometry replaced
 * (it said "header is invalid (wrong magic, version or size)").
 */
START_TEST(check_config_sees_the_segments_geometry)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	char out[512], err[2048];
	write_conf_size("16M");
	int rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "a start would fail") &&
			      strstr(err, "another geometry") && strstr(err, "max_size 8388608") &&
			      !strstr(out, "ok"),
		      "running: exit %d: %s%s", rc, out, err);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "another geometry"), "stopped: exit %d: %s%s", rc, out,
		      err);
	write_conf_size("8M");
	rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 0 && strstr(out, "configuration ok"), "set back: exit %d: %s%s", rc, out,
		      err);
	write_conf_size("16M");
	ck_assert_int_eq(tu_coord_restart_with(&co, "--reinit"), 0);
	char *log = tu_slurp(co.log, NULL);
	ck_assert_msg(strstr(log, "--reinit: replacing") &&
			      strstr(log, "a segment of another geometry (made with max_size 8388608"),
		      "log: %s", log);
	free(log);
}
END_TEST

/* More [map NAME] sections than max_maps: the log names max_maps, not a
 * full segment. */
START_TEST(config_maps_beyond_max_maps)
{
	/* More [map NAME] sections than max_maps: refused by --check-config
	 * and by a start (it said "configuration ok", and the start went
	 * without map b). */
	ck_assert_int_eq(tu_coord_start(&co, "8M", "[segment]\nmax_maps = 2\n"), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	char out[512], err[2048];
	write_conf("size = 8M\nmax_maps = 1\n[map a]\nquota = 1M\n[map b]\nquota = 1M");
	int rc = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "2 [map NAME] sections, but max_maps is 1"),
		      "exit %d: %s%s", rc, out, err);
	rc = run_daemon("--foreground", out, sizeof out, err, sizeof err);
	ck_assert_msg(rc == 1 && strstr(err, "2 [map NAME] sections, but max_maps is 1"),
		      "exit %d: %s%s", rc, out, err);
	/* Room for the sections, but the directory holds a map made at run
	 * time: the start goes on, and says which map of the config it could
	 * not make and why. */
	write_conf("size = 8M\nmax_maps = 2");
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	shmmap *sm = tu_attach(co.sock);
	(void)tu_open(sm, "runtime");
	shmmap_detach(sm);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	write_conf("size = 8M\nmax_maps = 2\n[map a]\nquota = 1M\n[map b]\nquota = 1M");
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	WAIT_LOG(co.log, "map 'b' of the config not created: all 2 map directory entries are "
			 "taken: raise [segment] max_maps", 1);
	ck_assert_msg(count_in(co.log, "segment is full") == 0, "%s", slurp(co.log));
}
END_TEST

/* A [map NAME] section with no key makes its map too; a name longer than
 * inih's 49-byte section buffer is kept whole.  --check-config takes it. */
START_TEST(config_empty_map_section)
{
	static const char longname[] = "a-map-name-of-fifty-two-bytes-past-inih-s-49-bytes-";
	char extra[256], out[4096], err[2048];
	snprintf(extra, sizeof extra, "[map empty]\n[map %s]\n[map keyed]\nquota = 1M\n", longname);
	ck_assert_int_eq(tu_coord_start(&co, "8M", extra), 0);
	int st = tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "maps", NULL);
	ck_assert_msg(st == 0, "maps: exit %d: %s", st, err);
	char want[128];
	snprintf(want, sizeof want, "\"%s\"", longname);
	ck_assert_msg(strstr(out, "\"empty\"") && strstr(out, want) && strstr(out, "\"keyed\""),
		      "maps: %s", out);
	ck_assert_int_eq(tu_coord_stop(&co), 0);

	write_conf("size = 8M\n[map empty]");
	st = run_daemon("--check-config", out, sizeof out, err, sizeof err);
	ck_assert_msg(st == 0 && strstr(out, "configuration ok"), "exit %d: %s%s", st, out, err);
}
END_TEST

/* The pid of the process listening on the socket at path, or -1. */
static pid_t listener_pid(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	ck_assert(strlen(path) < sizeof sa.sun_path);
	memcpy(sa.sun_path, path, strlen(path));
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct ucred cr = {.pid = -1};
	socklen_t len = sizeof cr;
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		cr.pid = -1;
	if (s >= 0)
		close(s);
	return cr.pid;
}

static bool pid_gone(void *arg)
{
	return kill(*(pid_t *)arg, 0) < 0 && errno == ESRCH;
}

/*
 * In the background shmmapd runs in "/", with what it was given relative
 * to where it started (the config file, a $SHMMAP_SOCKET) made absolute:
 * the socket is where the starter meant, and SIGHUP reads the same file.
 */
START_TEST(daemon_runs_in_root_dir)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	char cmd[1024], out[512], err[512], sock[300];
	snprintf(cmd, sizeof cmd, "cd '%s' && SHMMAP_SOCKET=rel.sock '%s' -c shmmap.ini >>'%s' 2>&1",
		 co.dir, getenv("SHMMAPD"), co.log);
	int st = tu_sh(cmd, out, sizeof out, err, sizeof err);
	ck_assert_msg(st == 0, "exit %d: %s%s", st, err, slurp(co.log));
	snprintf(sock, sizeof sock, "%s/rel.sock", co.dir);
	pid_t pid = listener_pid(sock);
	ck_assert_msg(pid > 0, "nobody listens on %s: %s", sock, slurp(co.log));
	char link[64], cwd[256] = "";
	snprintf(link, sizeof link, "/proc/%d/cwd", (int)pid);
	ssize_t n = readlink(link, cwd, sizeof cwd - 1);
	if (n > 0)
		cwd[n] = '\0';
	kill(pid, SIGHUP);
	WAIT_LOG(co.log, "reloaded: allow_uids 0", 1);
	kill(pid, SIGTERM);
	ck_assert(tu_wait(pid_gone, &pid, 10000));
	ck_assert_msg(strcmp(cwd, "/") == 0, "the daemon runs in \"%s\"", cwd);
	char want[400];
	snprintf(want, sizeof want, "SIGHUP: reloading %s\n", co.conf);
	ck_assert_msg(strstr(slurp(co.log), want) && !strstr(slurp(co.log), "keeping the current"),
		      "%s", slurp(co.log));
}
END_TEST

/* ---- the systemd unit ---- */

START_TEST(unit_file_verifies)
{
	char unit[512], tmpdir[] = "/tmp/shmmap-unit-XXXXXX", copy[600];
	const char *td = getenv("SHMMAP_TESTDATA");
	snprintf(unit, sizeof unit, "%s/../../conf/shmmapd.service", td ? td : "tests/data");
	const char *text = slurp(unit);
	ck_assert_msg(text != NULL, "%s: %s", unit, strerror(errno));
	static const char *const must[] = {
		"\nType=notify\n", "\nExecReload=/bin/kill -HUP $MAINPID\n", "\nRuntimeDirectory=shmmap\n",
		"\nProtectSystem=strict\n", "\nNoNewPrivileges=yes\n", "\nRestrictAddressFamilies=AF_UNIX\n",
		" --foreground\n",
	};
	for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
		ck_assert_msg(strstr(text, must[i]) != NULL, "unit lacks %s", must[i]);
	/* Settings that would break the service (see the unit's comments). */
	static const char *const mustnt[] = {"\nPrivateUsers=", "\nDynamicUser=", "\nRemoveIPC=yes",
					     "\nProtectProc="};
	for (size_t i = 0; i < sizeof mustnt / sizeof mustnt[0]; i++)
		ck_assert_msg(strstr(text, mustnt[i]) == NULL, "unit has %s", mustnt[i]);
	if (access("/usr/bin/systemd-analyze", X_OK) != 0) {
		TU_SKIP("systemd-analyze is not installed (the unit's text was checked)");
	}
	/* systemd-analyze verify wants ExecStart's binary to exist: ours. */
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(copy, sizeof copy, "%s/shmmapd.service", tmpdir);
	FILE *f = fopen(copy, "w");
	ck_assert_ptr_nonnull(f);
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
		if (strncmp(p, "ExecStart=/usr/local/bin/shmmapd ", 33) == 0)
			fprintf(f, "ExecStart=%s %.*s", getenv("SHMMAPD"), (int)(n - 33), p + 33);
		else
			fwrite(p, 1, n, f);
		p += n;
	}
	fclose(f);
	char out[4096], err[4096];
	char *argv[] = {"/usr/bin/systemd-analyze", "verify", "--man=no", copy, NULL};
	int rc = tu_run(argv, out, sizeof out, err, sizeof err);
	unlink(copy);
	rmdir(tmpdir);
	ck_assert_msg(rc == 0 && !strstr(err, "shmmapd.service"), "verify: exit %d: %s%s", rc, out,
		      err);
}
END_TEST

/* ---- sessions ---- */

#define CHURN_WORKERS 1500
#define CHURN_AT_ONCE 120
#define CHURN_OPS 5

/* One short-lived worker: attach itself, bump the counter, exit without
 * detaching (as a killed or careless worker does).  Exit status: 0, or
 * which step failed. */
static void churn_worker(const char *sock)
{
	shmmap *sm;
	shmmap_map m;
	if (shmmap_attach(sock, &sm) < 0)
		_exit(2);
	if (shmmap_open(sm, "churn", SHMMAP_CREATE, &m) < 0)
		_exit(3);
	for (int i = 0; i < CHURN_OPS; i++)
		if (shmmap_incr(sm, m, "n", 1, 1, NULL) < 0)
			_exit(4);
	_exit(0);
}

static bool only_me_attached(void *arg)
{
	char out[4096], err[512];
	(void)arg;
	int st = tu_ctl(co.sock, out, sizeof out, err, sizeof err, "--json", "status", NULL);
	/* This test and shmmapctl itself. */
	return st == 0 && strstr(out, "\"clients\":2,") && strstr(out, "\"clients_dead\":0,");
}

/* Workers attaching and exiting by the hundred (php-fpm recycling its
 * pool): the coordinator closes many sessions per batch of events, some
 * flagged gone by housekeeping before their own hang-up was read.  It
 * read and closed such a session a second time (its fd already closed,
 * maybe another client's by then), freed it twice and aborted; before
 * that, new workers were refused (ECONNRESET, or EDETACHED at open).
 * Every worker must get through, the counter must be exact and the
 * coordinator alive. */
START_TEST(attach_exit_churn)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[segment]\nmax_clients = 256\n"), 0);
	shmmap *sm = tu_attach(co.sock);
	int live = 0, started = 0, failed = 0, first_status = 0;
	while (started < CHURN_WORKERS || live > 0) {
		while (live < CHURN_AT_ONCE && started < CHURN_WORKERS) {
			pid_t p = fork();
			ck_assert_int_ge(p, 0);
			if (p == 0)
				churn_worker(co.sock);
			started++;
			live++;
		}
		int st;
		pid_t p = wait(&st);
		ck_assert_int_gt(p, 0);
		live--;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			if (!failed++)
				first_status = st;
		}
	}
	ck_assert_msg(kill(co.pid, 0) == 0 && waitpid(co.pid, NULL, WNOHANG) == 0,
		      "the coordinator died");
	ck_assert_msg(failed == 0, "%d of %d workers failed (first: status 0x%x)", failed,
		      CHURN_WORKERS, first_status);
	shmmap_map m = tu_open(sm, "churn");
	char buf[32];
	size_t n = 0;
	ck_assert_int_eq(shmmap_get(sm, m, "n", 1, buf, sizeof buf - 1, &n), 0);
	buf[n] = '\0';
	ck_assert_int_eq(atol(buf), (long)CHURN_WORKERS * CHURN_OPS);
	ck_assert_msg(tu_wait(only_me_attached, NULL, 10000), "dead workers' slots not recovered");
	shmmap_detach(sm);
}
END_TEST

/* The segment removed while a process is attached (the documented way to
 * start from empty: stop shmmapd, rm /dev/shm/NAME, start it): the process
 * still maps the old segment, and its writes went there with success,
 * never to be seen (a user's counters lost their increments).  Its writes
 * must fail with -SHMMAP_EDETACHED within a bounded number, every call
 * after that too, and attaching again must find the new segment. */
/* Attaches refused for want of a slot are logged once a second at most
 * (with how many were not): a pool retrying every 100 ms logged two lines
 * a try.  The refusals are logged before they are answered, so the count
 * is final when the last attach returns. */
START_TEST(slot_refusals_are_logged_once_a_second)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", "[segment]\nmax_clients = 3\n"), 0);
	shmmap *a = tu_attach(co.sock), *b = tu_attach(co.sock); /* (one is the admin's) */
	long long t0 = tu_mono_ms();
	for (int i = 0; i < 40; i++) {
		shmmap *x = NULL;
		int rc = shmmap_attach(co.sock, &x);
		CK_MSG(rc == -EAGAIN, "attach %d of a full segment: %s", i, shmmap_strerror(rc));
	}
	long long secs = (tu_mono_ms() - t0) / 1000;
	size_t lines = count_in(co.log, "refusing pid");
	CK_MSG(lines >= 1 && (long long)lines <= secs + 1, "%zu lines for 40 refusals in %lld s",
	       lines, secs);
	shmmap_detach(a);
	shmmap_detach(b);
}
END_TEST

/* Connections that never say HELLO (idle ones evicted past the 64 kept,
 * malformed ones, refused ones) cost a peer nothing and logged a line
 * each: a flood by any user who may reach the socket wrote 356699 lines
 * (41 MB) in 8 s.  At most 10 such lines a second now, then one line
 * with how many were not logged. */
START_TEST(pending_floods_are_logged_in_summary)
{
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	long long t0 = tu_mono_ms();
	enum { IDLE = 300, BAD = 100 };
	static int idle[IDLE];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", co.sock);
	for (int i = 0; i < IDLE + BAD; i++) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
		if (i < IDLE) {
			idle[i] = fd;
			continue;
		}
		/* malformed: closed by the coordinator (wait for it) */
		ck_assert_int_eq(send(fd, "abc", 3, 0), 3);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ck_assert_int_eq(poll(&p, 1, 10000), 1);
		char b[64];
		ck_assert_int_le(recv(fd, b, sizeof b, 0), 0);
		close(fd);
	}
	/* Accepted after every idle one: they have been counted and evicted. */
	shmmap *sm = tu_attach(co.sock);
	long long secs = (tu_mono_ms() - t0) / 1000;
	size_t lines = count_in(co.log, "connection from pid");
	CK_MSG(lines >= 1 && (long long)lines <= 10 * (secs + 2),
	       "%zu lines for %d evictions and %d bad messages in %lld s", lines, IDLE - 64, BAD,
	       secs);
	WAIT_LOG(co.log, "not logged", 1);
	shmmap_detach(sm);
	for (int i = 0; i < IDLE; i++)
		close(idle[i]);
}
END_TEST

/* A process attached, map "m" holding "k" = val; then the coordinator
 * stopped, the segment removed and a new coordinator started on a new
 * one, the process still mapping the old. */
static shmmap *attach_then_remove_segment(shmmap_map *m, const char *val)
{
	ck_assert_int_eq(tu_coord_start(&co, "16M", ""), 0);
	shmmap *sm = tu_attach(co.sock);
	*m = tu_open(sm, "m");
	ck_assert_int_eq(shmmap_put(sm, *m, "k", 1, val, strlen(val), 0, 0), 0);
	ck_assert_int_eq(tu_coord_stop(&co), 0);
	ck_assert_int_eq(shm_unlink(co.shm), 0);
	ck_assert_int_eq(tu_coord_restart(&co), 0);
	return sm;
}

START_TEST(removed_segment_fails_writes)
{
	shmmap_map m;
	shmmap *sm = attach_then_remove_segment(&m, "v");
	int rc = 0, n = 0;
	for (; n < 1000 && rc == 0; n++) {
		char k[32];
		int kl = snprintf(k, sizeof k, "after-%d", n);
		rc = shmmap_put(sm, m, k, (size_t)kl, "v", 1, 0, 0);
	}
	ck_assert_msg(rc == -SHMMAP_EDETACHED, "write %d on the removed segment: %s", n,
		      shmmap_strerror(rc));
	ck_assert_msg(strstr(shmmap_errdetail(), "removed"), "detail: %s", shmmap_errdetail());
	fprintf(stderr, "  removed segment: write %d failed\n", n);
	char buf[8];
	size_t len;
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &len), -SHMMAP_EDETACHED);
	ck_assert_int_eq(shmmap_incr(sm, m, "n", 1, 1, NULL), -SHMMAP_EDETACHED);
	shmmap_detach(sm);
	sm = tu_attach(co.sock);
	m = tu_open(sm, "m");
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &len), -ENOENT);
	ck_assert_int_eq(shmmap_put(sm, m, "k", 1, "w", 1, 0, 0), 0);
	shmmap_detach(sm);
}
END_TEST

/* The same for a process that only reads: it served the removed
 * segment's values forever (a worker read the old version of a key
 * 200,000 times after the operator had started from empty).  Every 4096th
 * hit of a map looks, so within that many its gets fail too. */
START_TEST(removed_segment_fails_reads)
{
	shmmap_map m;
	shmmap *sm = attach_then_remove_segment(&m, "old");
	char buf[8];
	size_t len;
	int rc = 0, n = 0;
	for (; n < 20000 && rc == 0; n++)
		rc = shmmap_get(sm, m, "k", 1, buf, sizeof buf, &len);
	ck_assert_msg(rc == -SHMMAP_EDETACHED, "get %d on the removed segment: %s", n,
		      shmmap_strerror(rc));
	ck_assert_msg(n <= 4096, "the gets noticed only at the %dth", n);
	ck_assert_msg(strstr(shmmap_errdetail(), "removed"), "detail: %s", shmmap_errdetail());
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &len), -SHMMAP_EDETACHED);
	shmmap_detach(sm);
	sm = tu_attach(co.sock);
	m = tu_open(sm, "m");
	ck_assert_int_eq(shmmap_get(sm, m, "k", 1, buf, sizeof buf, &len), -ENOENT);
	shmmap_detach(sm);
}
END_TEST

static Suite *daemon_suite(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = tcase_create("notify");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, notify_ready_only_once_listening);
	tcase_add_test(tc, notify_reload_and_path_socket);
	tcase_add_loop_test(tc, notify_bad_socket_is_ignored, 0,
			    (int)(sizeof bad_notify / sizeof bad_notify[0]));
	suite_add_tcase(s, tc);

	tc = tcase_create("log");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, log_journal_prefixes);
	tcase_add_test(tc, log_plain_when_stream_is_not_stderr);
	tcase_add_test(tc, log_level_filters_and_reloads);
	suite_add_tcase(s, tc);

	tc = tcase_create("reload");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, reload_changes_access_keeps_clients);
	tcase_add_test(tc, reload_reports_map_sections);
	suite_add_tcase(s, tc);

	tc = tcase_create("user");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, ordinary_user_daemon_ctl_and_client);
	tcase_add_test(tc, ordinary_user_without_xdg_runtime_dir);
	tcase_add_test(tc, ordinary_user_socket_dir_not_writable);
	tcase_add_test(tc, ordinary_user_meets_roots_segment);
	tcase_add_test(tc, root_refuses_a_users_segment);
	tcase_add_test(tc, adopted_segment_takes_the_configured_mode);
	suite_add_tcase(s, tc);

	tc = tcase_create("start");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, geometry_change_names_the_fields);
	tcase_add_test(tc, bind_failure_leaves_no_segment);
	tcase_add_test(tc, dev_shm_too_small);
	tcase_add_test(tc, check_config_checks_the_geometry);
	tcase_add_test(tc, check_config_sees_the_segments_geometry);
	tcase_add_test(tc, config_maps_beyond_max_maps);
	tcase_add_test(tc, config_empty_map_section);
	tcase_add_test(tc, daemon_runs_in_root_dir);
	tcase_add_test(tc, unit_file_verifies);
	suite_add_tcase(s, tc);

	tc = tcase_create("sessions");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, attach_exit_churn);
	tcase_add_test(tc, slot_refusals_are_logged_once_a_second);
	tcase_add_test(tc, pending_floods_are_logged_in_summary);
	tcase_add_test(tc, removed_segment_fails_writes);
	tcase_add_test(tc, removed_segment_fails_reads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(daemon_suite());
}
