/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * shmmapd.c - the coordinator's main program: options, configuration,
 * signals, daemonizing.  The service itself is coordinator.c.
 *
 *   shmmapd [-c FILE] [--foreground] [--reinit] [--check-config]
 *
 * SIGINT and SIGTERM stop it cleanly (the segment and its data stay for
 * the next start); they are blocked in every thread and taken with
 * sigwait() by the main thread alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "coordinator.h"
#include "internal.h"

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
		fprintf(stderr, "shmmapd: %s\n", err);
		return 1;
	}
	if (check_only) {
		printf("%s: configuration ok\n", path ? path : "(defaults)");
		return 0;
	}

	int ready[2] = {-1, -1};
	if (!foreground) {
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
		fprintf(stderr, "shmmapd: %s\n", err[0] ? err : shmmap_strerror(rc));
		return 1;
	}
	rc = shmmap__coord_start(c);
	if (rc < 0) {
		fprintf(stderr, "shmmapd: cannot start threads: %s\n", shmmap_strerror(rc));
		shmmap__coord_free(c);
		return 1;
	}
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
	do {
		sigwait(&set, &sig);
	} while (sig == SIGHUP); /* nothing to reload yet */
	fprintf(stderr, "shmmapd: %s: shutting down\n", strsignal(sig));
	shmmap__coord_free(c);
	fprintf(stderr, "shmmapd: stopped; the segment %s and its data are kept\n",
		conf.segment.name);
	return 0;
}
