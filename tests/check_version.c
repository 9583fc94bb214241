/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_version.c - the version is one thing everywhere: the header's
 * SHMMAP_VERSION_* macros, shmmap_version() of the static and of the shared
 * library, `shmmapd --version` and `shmmapctl --version`, the shared
 * library's file name, soname and links in the build directory, and the
 * newest entry of CHANGELOG.md.
 */
#include <check.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmmap.h"
#include "testutil.h"

static char out[8192], err[8192];
static char want[64]; /* "MAJOR.MINOR.PATCH" printed from the macros */

static void setup(void)
{
	snprintf(want, sizeof want, "%d.%d.%d", SHMMAP_VERSION_MAJOR, SHMMAP_VERSION_MINOR,
		 SHMMAP_VERSION_PATCH);
}

START_TEST(macros_agree_with_library)
{
	ck_assert_str_eq(SHMMAP_VERSION_STRING, want);
	int a = -1, b = -1, c = -1;
	const char *v = shmmap_version(&a, &b, &c);
	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(v, want);
	ck_assert_int_eq(a, SHMMAP_VERSION_MAJOR);
	ck_assert_int_eq(b, SHMMAP_VERSION_MINOR);
	ck_assert_int_eq(c, SHMMAP_VERSION_PATCH);
	/* Every out-parameter may be NULL. */
	ck_assert_str_eq(shmmap_version(NULL, NULL, NULL), want);
	a = -1;
	ck_assert_str_eq(shmmap_version(&a, NULL, NULL), want);
	ck_assert_int_eq(a, SHMMAP_VERSION_MAJOR);
}
END_TEST

/* PROG --version and -V print "NAME VERSION\n" on stdout, exit 0, and need
 * no coordinator. */
static void expect_version(const char *env, const char *name)
{
	const char *bin = tu_env(env);
	char line[128];
	snprintf(line, sizeof line, "%s %s\n", name, want);
	const char *flags[] = {"--version", "-V"};
	for (int i = 0; i < 2; i++) {
		char *argv[] = {(char *)bin, (char *)flags[i], NULL};
		int st = tu_run(argv, out, sizeof out, err, sizeof err);
		ck_assert_msg(st == 0, "%s %s: exit %d: %s", name, flags[i], st, err);
		ck_assert_str_eq(out, line);
		ck_assert_str_eq(err, "");
	}
	char *argv[] = {(char *)bin, "--help", NULL};
	ck_assert_int_eq(tu_run(argv, out, sizeof out, err, sizeof err), 0);
	ck_assert_msg(strstr(out, "--version") != NULL, "%s --help does not list --version:\n%s",
		      name, out);
}

START_TEST(programs_print_version)
{
	setenv("SHMMAP_SOCKET", "/nonexistent/shmmap.sock", 1);
	expect_version("SHMMAPD", "shmmapd");
	expect_version("SHMMAPCTL", "shmmapctl");
}
END_TEST

/* The build directory holds libshmmap.so.X.Y.Z with soname libshmmap.so.X,
 * and the links libshmmap.so.X and libshmmap.so to it. */
START_TEST(shared_library_names)
{
	const char *bd = tu_env("SHMMAP_BUILDDIR");
	char real[PATH_MAX], soname[64], path[PATH_MAX], target[PATH_MAX];
	snprintf(soname, sizeof soname, "libshmmap.so.%d", SHMMAP_VERSION_MAJOR);
	snprintf(real, sizeof real, "%s/libshmmap.so.%s", bd, want);
	struct stat st;
	ck_assert_msg(lstat(real, &st) == 0 && S_ISREG(st.st_mode), "%s: not a file", real);

	const char *links[] = {soname, "libshmmap.so"};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof path, "%s/%s", bd, links[i]);
		ck_assert_msg(lstat(path, &st) == 0 && S_ISLNK(st.st_mode), "%s: not a link", path);
		ssize_t n = readlink(path, target, sizeof target - 1);
		ck_assert(n > 0);
		target[n] = '\0';
		ck_assert_msg(strcmp(target, strrchr(real, '/') + 1) == 0, "%s -> %s", path, target);
	}

	char *argv[] = {"/usr/bin/readelf", "-d", real, NULL};
	ck_assert_int_eq(tu_run(argv, out, sizeof out, err, sizeof err), 0);
	char tag[96];
	snprintf(tag, sizeof tag, "Library soname: [%s]", soname);
	ck_assert_msg(strstr(out, tag) != NULL, "no %s in:\n%s", tag, out);

	/* The shared library exports shmmap_version and says the same. */
	snprintf(path, sizeof path, "%s/libshmmap.so", bd);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	ck_assert_msg(h != NULL, "dlopen: %s", dlerror());
	void *sym = dlsym(h, "shmmap_version");
	ck_assert_msg(sym != NULL, "dlsym: %s", dlerror());
	const char *(*fn)(int *, int *, int *);
	memcpy(&fn, &sym, sizeof fn);
	int major = -1;
	ck_assert_str_eq(fn(&major, NULL, NULL), want);
	ck_assert_int_eq(major, SHMMAP_VERSION_MAJOR);
	dlclose(h);
}
END_TEST

/* CHANGELOG.md has an entry "## [X.Y.Z]" for this version, and it is the
 * newest (the first "## [" heading). */
START_TEST(changelog_names_version)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/CHANGELOG.md", tu_env("SHMMAP_SRCDIR"));
	char *text = tu_slurp(path, NULL);
	const char *first = strstr(text, "\n## [");
	ck_assert_msg(first != NULL, "CHANGELOG.md has no \"## [VERSION]\" entry");
	char head[80];
	snprintf(head, sizeof head, "\n## [%s]", want);
	ck_assert_msg(strncmp(first, head, strlen(head)) == 0,
		      "the newest CHANGELOG.md entry is not %s: %.40s", want, first + 1);
	free(text);
}
END_TEST

static Suite *version_suite(void)
{
	Suite *s = suite_create("version");
	TCase *tc = tcase_create("version");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, macros_agree_with_library);
	tcase_add_test(tc, programs_print_version);
	tcase_add_test(tc, shared_library_names);
	tcase_add_test(tc, changelog_names_version);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(version_suite());
}
