/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * shmmapd.c - the coordinator's main program: options, configuration,
 * signals, daemonizing, and telling systemd how it goes.  The service
 * itself is coordinator.c.
 *
 * Without --foreground it forks: the child makes a new session and goes
 * to "/", with the config file's path and the socket's made absolute
 * first; the parent exits once the child serves (0) or failed (1).
 *
 *   shmmapd [-c FILE] [--foreground] [--reinit] [--check-config]
 *
 * Signals are blocked in every thread and taken with sigwait() by the main
 * thread alone:
 *   - SIGINT, SIGTERM stop it cleanly (the segment and its data stay for
 *     the next start);
 *   - SIGHUP reloads the configuration file: the access lists and the log
 *     level change (shmmap__coord_reload), clients stay attached; a file
 *     that does not load leaves everything as it was.
 * Under systemd (Type=notify, $NOTIFY_SOCKET; notify.c) it reports READY=1
 * once the socket listens and the threads run, RELOADING=1 then READY=1
 * around a reload, STOPPING=1 on the way out, and STATUS= lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "coordinator.h"
#include "internal.h"
#include "log.h"
#include "notify.h"
#include "paths.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmmapd [-c FILE] [--foreground] [--reinit] [--check-config]\n"
		"  -c, --config FILE   INI configuration (default: built-in defaults)\n"
		"  -f, --foreground    stay in the foreground, log to stderr\n"
		"      --reinit        replace an existing object under the segment name\n"
		"                      that is not a valid segment of this configuration\n"
		"      --check-config  validate the configuration and exit\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          this text\n");
}

/* A failure to start: to the journal with its priority, else as before
 * ("shmmapd: why" on stderr, for whoever ran it). */
__attribute__((format(printf, 1, 2))) static void fatal(const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (shmmap__log_to_journal())
		log_error("%s", msg);
	else
		fprintf(stderr, "shmmapd: %s\n", msg);
}

/* Why the configuration names no socket: only an ordinary user without
 * $XDG_RUNTIME_DIR, or one whose path is too long, gets no default. */
static void no_socket(void)
{
	char buf[108];
	if (shmmap__default_socket(buf, sizeof buf, true) == -ENAMETOOLONG)
		fatal("no socket path: $XDG_RUNTIME_DIR" SHMMAP_USER_SOCKET " is too long for a "
		      "Unix socket; set [server] socket or $SHMMAP_SOCKET");
	else
		fatal("no socket path: uid %u may not write " SHMMAP_SYSTEM_RUNDIR " and "
		      "$XDG_RUNTIME_DIR is not set (a user other than root listens on "
		      "$XDG_RUNTIME_DIR" SHMMAP_USER_SOCKET "); set XDG_RUNTIME_DIR, or [server] "
		      "socket or $SHMMAP_SOCKET", (unsigned)geteuid());
}

/* A relative path (a config file given as such, a $SHMMAP_SOCKET) made
 * absolute against the working directory, for a daemon that leaves it for
 * "/"; 0, or -1 with what failed in err. */
static int absolute(char *out, size_t cap, const char *rel, const char *what, char *err,
		    size_t errlen)
{
	char cwd[4096];
	if (rel[0] == '/') {
		if (strlen(rel) >= cap)
			goto toolong;
		memmove(out, rel, strlen(rel) + 1);
		return 0;
	}
	if (!getcwd(cwd, sizeof cwd)) {
		snprintf(err, errlen, "%s %s: cannot tell the working directory: %s", what, rel,
			 strerror(errno));
		return -1;
	}
	char tmp[4096 + 2];
	int w = snprintf(tmp, sizeof tmp, "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", rel);
	if (w < 0 || (size_t)w >= cap)
		goto toolong;
	memcpy(out, tmp, (size_t)w + 1);
	return 0;
toolong:
	snprintf(err, errlen, "%s %s: the absolute path is too long (at most %zu bytes)", what, rel,
		 cap - 1);
	return -1;
}

static unsigned long long mono_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000u + (unsigned long long)ts.tv_nsec / 1000u;
}

/* SIGHUP: load the file again and apply what can change at run time.
 * MONOTONIC_USEC is what systemd 253+ wants with RELOADING=1 (for
 * Type=notify-reload); older ones ignore it. */
static void reload(struct coord *c, const char *path, const char *sock)
{
	shmmap__notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s", mono_usec(),
		       path ? path : "(no file)");
	if (!path) {
		log_notice("SIGHUP: no configuration file (-c) to reload");
	} else {
		struct shmmap_conf nc;
		char err[512];
		shmmap__conf_defaults(&nc);
		log_notice("SIGHUP: reloading %s", path);
		if (shmmap__conf_load(&nc, path, err, sizeof err) < 0)
			log_error("reload: %s; keeping the current settings", err);
		else
			shmmap__coord_reload(c, &nc);
	}
	shmmap__notify("READY=1\nSTATUS=serving on %s", sock);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"foreground", no_argument, NULL, 'f'},
		{"reinit", no_argument, NULL, 'R'},
		{"check-config", no_argument, NULL, 'C'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0, 0, 0, 0},
	};
	const char *path = NULL;
	bool foreground = false, check_only = false;
	shmmap__log_init();
	unsigned flags = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, "c:fhV", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'f': foreground = true; break;
		case 'R': flags |= COORD_REINIT; break;
		case 'C': check_only = true; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("shmmapd %s\n", shmmap_version(NULL, NULL, NULL)); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	struct shmmap_conf conf;
	char err[512];
	shmmap__conf_defaults(&conf);
	if (path && shmmap__conf_load(&conf, path, err, sizeof err) < 0) {
		fatal("%s", err);
		return 1;
	}
	if (!conf.server.socket[0]) {
		no_socket();
		return 1;
	}
	if (check_only) {
		if (shmmap__coord_check_geometry(&conf, err, sizeof err) < 0) {
			fatal("%s: %s", path ? path : "(defaults)", err);
			return 1;
		}
		/* The segment there now: a start without --reinit refuses
		 * one of another geometry (checked before a restart, not
		 * after the stop). */
		if (!(flags & COORD_REINIT) &&
		    shmmap__coord_check_existing(&conf, err, sizeof err) < 0) {
			fatal("%s: a start would fail: %s", path ? path : "(defaults)", err);
			return 1;
		}
		printf("%s: configuration ok\n", path ? path : "(defaults)");
		return 0;
	}

	if (shmmap__notify_init(err, sizeof err) < 0)
		log_warning("%s: not notifying systemd", err);

	int ready[2] = {-1, -1};
	char abspath[4096];
	if (!foreground) {
		/* The daemon runs in "/" (it holds no directory busy): what it
		 * names later by a relative path is made absolute first.  The
		 * file's socket is absolute already; $SHMMAP_SOCKET may not be. */
		if ((path && absolute(abspath, sizeof abspath, path, "config", err, sizeof err) < 0) ||
		    absolute(conf.server.socket, sizeof conf.server.socket, conf.server.socket,
			     "socket", err, sizeof err) < 0) {
			fatal("%s", err);
			return 1;
		}
		if (path)
			path = abspath;
		/* Daemonize; the parent exits once the child is serving (or failed). */
		if (pipe(ready) < 0) {
			perror("shmmapd: pipe");
			return 1;
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("shmmapd: fork");
			return 1;
		}
		if (pid > 0) {
			close(ready[1]);
			char b = 1;
			ssize_t n = read(ready[0], &b, 1);
			return n == 1 && b == 0 ? 0 : 1;
		}
		close(ready[0]);
		setsid();
		if (chdir("/") < 0) { /* "/" always exists */ }
	}

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct coord *c;
	int rc = shmmap__coord_init(&c, &conf, flags, err, sizeof err);
	if (rc < 0) {
		fatal("%s", err[0] ? err : shmmap_strerror(rc));
		if (-rc < SHMMAP_ERRNO_BASE) /* ERRNO= takes an errno, not our codes */
			shmmap__notify("STATUS=failed to start\nERRNO=%d", -rc);
		return 1;
	}
	rc = shmmap__coord_start(c);
	if (rc < 0) {
		fatal("cannot start threads: %s", shmmap_strerror(rc));
		shmmap__coord_free(c);
		return 1;
	}
	/* The socket listens (since coord_init) and the threads serve it. */
	shmmap__notify("READY=1\nSTATUS=serving on %s", conf.server.socket);
	if (ready[1] >= 0) {
		char ok = 0;
		if (write(ready[1], &ok, 1) < 0) { /* the parent then reports failure */ }
		close(ready[1]);
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			close(devnull);
		}
	}
	int sig = 0;
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig != SIGHUP)
			break;
		reload(c, path, conf.server.socket);
	}
	shmmap__notify("STOPPING=1\nSTATUS=stopping (%s)", strsignal(sig));
	log_notice("%s: shutting down", strsignal(sig));
	/* The final snapshot's fate is the exit status: a service manager
	 * (or a script) sees a stop whose data did not reach the disk. */
	int saved = shmmap__coord_stop(c);
	shmmap__coord_free(c);
	if (saved < 0)
		log_error("stopped, but the final snapshot was not saved (see above): the segment %s "
			  "and its data are kept until the machine restarts; save again with a "
			  "coordinator started on it",
			  conf.segment.name);
	else
		log_notice("stopped; the segment %s and its data are kept", conf.segment.name);
	shmmap__notify_close();
	return saved < 0 ? 3 : 0;
}
