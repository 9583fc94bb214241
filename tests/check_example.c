/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_example.c - the README's example (tests/example.c) is a program
 * that works: built by the Makefile against the build directory's
 * libshmmap.so link (as the README's build line does), run against a real
 * shmmapd, twice, with the effects checked through shmmapctl; and the
 * README shows exactly that file.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmmap.h"
#include "testutil.h"

static struct tu_coord co;
static char out[8192], err[8192];
static char example[PATH_MAX];

static void setup(void)
{
	snprintf(example, sizeof example, "%s/tests/example", tu_env("SHMMAP_BUILDDIR"));
	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
}

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

static int run_example(void)
{
	char *argv[] = {example, NULL};
	return tu_run(argv, out, sizeof out, err, sizeof err);
}

START_TEST(runs_against_coordinator)
{
	/* The example attaches with NULL: the socket comes from the environment. */
	setenv("SHMMAP_SOCKET", co.sock, 1);
	int st = run_example();
	ck_assert_msg(st == 0, "example: exit %d: %s", st, err);
	ck_assert_str_eq(out, "user:42 = alice, hits = 1\n");
	ck_assert_str_eq(err, "");
	/* A second process sees the first one's counter. */
	st = run_example();
	ck_assert_msg(st == 0, "example: exit %d: %s", st, err);
	ck_assert_str_eq(out, "user:42 = alice, hits = 2\n");

	ck_assert_int_eq(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "get", "sessions",
				"user:42", NULL), 0);
	ck_assert_str_eq(out, "alice\n");
	ck_assert_int_eq(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "get", "sessions",
				"hits", NULL), 0);
	ck_assert_str_eq(out, "2\n");
	ck_assert_int_eq(tu_ctl(co.sock, out, sizeof out, err, sizeof err, "check", NULL), 0);
}
END_TEST

START_TEST(says_why_without_coordinator)
{
	char sock[300];
	snprintf(sock, sizeof sock, "%s/no-such.sock", co.dir);
	setenv("SHMMAP_SOCKET", sock, 1);
	int st = run_example();
	ck_assert_int_eq(st, 1);
	ck_assert_str_eq(out, "");
	char want[256];
	snprintf(want, sizeof want, "attach: %s\n", shmmap_strerror(-ECONNREFUSED));
	ck_assert_str_eq(err, want);
}
END_TEST

/* The example is linked against the shared library (libshmmap.so.MAJOR). */
START_TEST(uses_shared_library)
{
	char *argv[] = {"/usr/bin/readelf", "-d", example, NULL};
	ck_assert_int_eq(tu_run(argv, out, sizeof out, err, sizeof err), 0);
	char needed[80];
	snprintf(needed, sizeof needed, "Shared library: [libshmmap.so.%d]", SHMMAP_VERSION_MAJOR);
	ck_assert_msg(strstr(out, needed) != NULL, "no %s in:\n%s", needed, out);
}
END_TEST

/* README.md shows tests/example.c, all of it, in one ```c block. */
START_TEST(readme_shows_example)
{
	const char *src = tu_env("SHMMAP_SRCDIR");
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/tests/example.c", src);
	char *code = tu_slurp(path, NULL);
	snprintf(path, sizeof path, "%s/README.md", src);
	char *readme = tu_slurp(path, NULL);
	size_t n = strlen(code) + 16;
	char *block = malloc(n);
	ck_assert_ptr_nonnull(block);
	snprintf(block, n, "```c\n%s```\n", code);
	const char *at = strstr(readme, block);
	ck_assert_msg(at != NULL, "README.md does not show tests/example.c as it is");
	ck_assert_msg(strstr(at + 1, block) == NULL, "README.md shows the example twice");
	free(block);
	free(readme);
	free(code);
}
END_TEST

static Suite *example_suite(void)
{
	Suite *s = suite_create("example");
	TCase *tc = tcase_create("example");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, runs_against_coordinator);
	tcase_add_test(tc, says_why_without_coordinator);
	tcase_add_test(tc, uses_shared_library);
	tcase_add_test(tc, readme_shows_example);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(example_suite());
}
