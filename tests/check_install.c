/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_install.c - `make install` and `make uninstall` into a temporary
 * DESTDIR: every file where the README says, with its mode and links; the
 * shared library's soname; shmmap.pc with the installation's directories;
 * the README's example (tests/example.c) built with
 * `pkg-config --cflags --libs shmmap` against the DESTDIR (PKG_CONFIG_PATH,
 * PKG_CONFIG_SYSROOT_DIR), linked dynamically and statically, and run
 * against a real shmmapd; custom directories; the systemd unit's paths;
 * and an uninstall that removes exactly what install put there.
 *
 * make runs here as the Makefile's TEST_ENV says ($SHMMAP_MAKEVARS: the
 * build directory and flags of this build), so it installs what this build
 * made and rebuilds nothing.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmmap.h"
#include "testutil.h"

#define OUT_CAP 65536

static char dest[64];      /* the DESTDIR, also $D for the commands */
static char out[OUT_CAP], err[OUT_CAP];
static struct tu_coord co;

static void setup(void)
{
	snprintf(dest, sizeof dest, "/tmp/shmmap-install-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dest));
	setenv("D", dest, 1);
	/* The make running the tests must not steer the make run here. */
	unsetenv("MAKEFLAGS");
	unsetenv("MFLAGS");
	unsetenv("MAKELEVEL");
	unsetenv("PKG_CONFIG_LIBDIR");
	memset(&co, 0, sizeof co);
}

static void teardown(void)
{
	tu_coord_cleanup(&co);
	if (dest[0] && strncmp(dest, "/tmp/shmmap-install-", 20) == 0) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dest);
		tu_sh(cmd, NULL, 0, NULL, 0);
	}
}

/* Run a shell command (printf format); its output goes to out and err. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	ck_assert(n > 0 && (size_t)n < sizeof cmd);
	return tu_sh(cmd, out, sizeof out, err, sizeof err);
}

#define SH_OK(...)                                                                    \
	do {                                                                          \
		int st_ = sh(__VA_ARGS__);                                            \
		ck_assert_msg(st_ == 0, "exit %d: %s\nstdout: %s\nstderr: %s", st_,   \
			      #__VA_ARGS__, out, err);                                \
	} while (0)

/* make TARGET VARS... in the source tree, this build's directory and flags,
 * DESTDIR=$D. */
#define MAKE(target, vars)                                                            \
	SH_OK("eval \"set -- $SHMMAP_MAKEVARS\"; exec make --no-print-directory "      \
	      "-C \"$SHMMAP_SRCDIR\" \"$@\" DESTDIR=\"$D\" %s %s", vars, target)

static const char *at(const char *rel) /* $D/rel, in one of 4 rotating buffers */
{
	static char buf[4][640];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof buf[i], "%s%s", dest, rel);
	return buf[i];
}

static void expect_file(const char *rel, mode_t mode)
{
	struct stat st;
	ck_assert_msg(lstat(at(rel), &st) == 0, "%s: %s", rel, strerror(errno));
	ck_assert_msg(S_ISREG(st.st_mode), "%s: not a regular file", rel);
	ck_assert_msg((st.st_mode & 07777) == mode, "%s: mode %o, wanted %o", rel,
		      (unsigned)(st.st_mode & 07777), (unsigned)mode);
}

static void expect_link(const char *rel, const char *target)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(at(rel), buf, sizeof buf - 1);
	ck_assert_msg(n > 0, "%s: not a link (%s)", rel, strerror(errno));
	buf[n] = '\0';
	ck_assert_msg(strcmp(buf, target) == 0, "%s -> %s, wanted %s", rel, buf, target);
}

static bool exists(const char *rel)
{
	struct stat st;
	return lstat(at(rel), &st) == 0;
}

/* The files and links under $D, one path (relative to $D) per line, sorted. */
static void list_installed(void)
{
	SH_OK("cd \"$D\" && find . \\( -type f -o -type l \\) | sed 's|^\\.||' | LC_ALL=C sort");
}

static const char *version_file(void)
{
	static char name[64];
	snprintf(name, sizeof name, "libshmmap.so.%s", SHMMAP_VERSION_STRING);
	return name;
}

static const char *soname(void)
{
	static char name[64];
	snprintf(name, sizeof name, "libshmmap.so.%d", SHMMAP_VERSION_MAJOR);
	return name;
}

static const char *const man_pages[] = {
	"/man1/shmmapctl.1", "/man3/shmmap.3", "/man5/shmmap.ini.5", "/man8/shmmapd.8",
};
/* Every call of include/shmmap.h has a link page to shmmap(3). */
static const char *const api_calls[] = {
	"shmmap_attach", "shmmap_detach", "shmmap_open",   "shmmap_put",     "shmmap_get",
	"shmmap_del",    "shmmap_incr",   "shmmap_incr_ttl", "shmmap_cas",    "shmmap_flush",   "shmmap_drop",
	"shmmap_foreach", "shmmap_stats", "shmmap_strerror", "shmmap_version",
};
#define N_CALLS (sizeof api_calls / sizeof api_calls[0])

/* Everything install puts under prefix P with the default directories. */
static void expect_layout(const char *p)
{
	char rel[512], tgt[64];
	snprintf(rel, sizeof rel, "%s/bin/shmmapd", p);
	expect_file(rel, 0755);
	snprintf(rel, sizeof rel, "%s/bin/shmmapctl", p);
	expect_file(rel, 0755);
	snprintf(rel, sizeof rel, "%s/include/shmmap.h", p);
	expect_file(rel, 0644);
	snprintf(rel, sizeof rel, "%s/lib/libshmmap.a", p);
	expect_file(rel, 0644);
	snprintf(rel, sizeof rel, "%s/lib/%s", p, version_file());
	expect_file(rel, 0644);
	snprintf(tgt, sizeof tgt, "%s", version_file());
	snprintf(rel, sizeof rel, "%s/lib/%s", p, soname());
	expect_link(rel, tgt);
	snprintf(rel, sizeof rel, "%s/lib/libshmmap.so", p);
	expect_link(rel, tgt);
	snprintf(rel, sizeof rel, "%s/lib/pkgconfig/shmmap.pc", p);
	expect_file(rel, 0644);
	for (size_t i = 0; i < 4; i++) {
		snprintf(rel, sizeof rel, "%s/share/man%s", p, man_pages[i]);
		expect_file(rel, 0644);
	}
	for (size_t i = 0; i < N_CALLS; i++) {
		snprintf(rel, sizeof rel, "%s/share/man/man3/%s.3", p, api_calls[i]);
		expect_file(rel, 0644);
		char *text = tu_slurp(at(rel), NULL);
		ck_assert_str_eq(text, ".so man3/shmmap.3\n");
		free(text);
	}
}

START_TEST(default_layout)
{
	MAKE("install", "");
	expect_layout("/usr/local");

	/* The header installed is the tree's, byte for byte. */
	SH_OK("cmp \"$SHMMAP_SRCDIR/include/shmmap.h\" \"$D/usr/local/include/shmmap.h\"");

	/* The shared library's soname follows the major version. */
	SH_OK("readelf -d \"$D/usr/local/lib/%s\"", version_file());
	char tag[96];
	snprintf(tag, sizeof tag, "Library soname: [%s]", soname());
	ck_assert_msg(strstr(out, tag) != NULL, "no %s in:\n%s", tag, out);

	/* The installed programs run and say their version. */
	SH_OK("\"$D/usr/local/bin/shmmapctl\" --version && \"$D/usr/local/bin/shmmapd\" --version");
	char want[128];
	snprintf(want, sizeof want, "shmmapctl %s\nshmmapd %s\n", SHMMAP_VERSION_STRING,
		 SHMMAP_VERSION_STRING);
	ck_assert_str_eq(out, want);

	/* man finds a call's page through its link page. */
	SH_OK("man -w -M \"$D/usr/local/share/man\" shmmap_put");
	ck_assert_msg(strstr(out, "/usr/local/share/man/man3/shmmap.3") != NULL, "man -w: %s", out);

	/* The unit goes in only when conf/ has one. */
	char unit[PATH_MAX];
	snprintf(unit, sizeof unit, "%s/conf/shmmapd.service", tu_env("SHMMAP_SRCDIR"));
	if (access(unit, F_OK) == 0)
		expect_file("/usr/local/lib/systemd/system/shmmapd.service", 0644);
	else
		ck_assert(!exists("/usr/local/lib/systemd"));

	/* Nothing outside the prefix. */
	SH_OK("cd \"$D\" && find . -mindepth 1 ! -path ./usr ! -path './usr/local*'");
	ck_assert_str_eq(out, "");
}
END_TEST

/* The example, built against the DESTDIR through pkg-config, dynamically
 * and statically, runs against a real coordinator. */
START_TEST(pkg_config_builds_example)
{
	MAKE("install", "");
	char pc[256];
	snprintf(pc, sizeof pc, "%s/usr/local/lib/pkgconfig", dest);
	setenv("PKG_CONFIG_PATH", pc, 1);
	setenv("PKG_CONFIG_SYSROOT_DIR", dest, 1);

	SH_OK("pkg-config --modversion shmmap");
	char want[1024];
	snprintf(want, sizeof want, "%s\n", SHMMAP_VERSION_STRING);
	ck_assert_str_eq(out, want);
	SH_OK("pkg-config --cflags --libs shmmap");
	snprintf(want, sizeof want, "-I%s/usr/local/include -L%s/usr/local/lib -lshmmap", dest,
		 dest);
	ck_assert_msg(strstr(out, want) != NULL, "pkg-config: %s\nwanted: %s", out, want);
	SH_OK("pkg-config --static --libs shmmap");
	ck_assert_msg(strstr(out, "-pthread") && strstr(out, "-lrt"), "private libs: %s", out);

	/* The README's commands ($SHMMAP_CC adds this build's sanitizer flags). */
	SH_OK("cd \"$D\" && $SHMMAP_CC -o example-dyn \"$SHMMAP_SRCDIR/tests/example.c\" "
	      "$(pkg-config --cflags --libs shmmap) $SHMMAP_LDFLAGS");
	SH_OK("cd \"$D\" && $SHMMAP_CC -o example-static \"$SHMMAP_SRCDIR/tests/example.c\" "
	      "$(pkg-config --cflags shmmap) -Wl,-Bstatic $(pkg-config --libs shmmap) "
	      "-Wl,-Bdynamic -pthread -lrt $SHMMAP_LDFLAGS");

	/* The dynamic one loads the DESTDIR's libshmmap.so.MAJOR; the static
	 * one needs none. */
	SH_OK("LD_LIBRARY_PATH=\"$D/usr/local/lib\" LD_TRACE_LOADED_OBJECTS=1 \"$D/example-dyn\"");
	snprintf(want, sizeof want, "%s => %s/usr/local/lib/%s", soname(), dest, soname());
	ck_assert_msg(strstr(out, want) != NULL, "ld.so: %s\nwanted: %s", out, want);
	SH_OK("readelf -d \"$D/example-static\"");
	ck_assert_msg(strstr(out, "libshmmap") == NULL, "static example needs: %s", out);

	ck_assert_int_eq(tu_coord_start(&co, "8M", NULL), 0);
	setenv("SHMMAP_SOCKET", co.sock, 1);
	SH_OK("LD_LIBRARY_PATH=\"$D/usr/local/lib\" \"$D/example-dyn\"");
	ck_assert_str_eq(out, "user:42 = alice, hits = 1\n");
	SH_OK("\"$D/example-static\"");
	ck_assert_str_eq(out, "user:42 = alice, hits = 2\n");
	/* And the installed shmmapctl sees what they wrote. */
	SH_OK("\"$D/usr/local/bin/shmmapctl\" get sessions hits");
	ck_assert_str_eq(out, "2\n");
}
END_TEST

#define CUSTOM_VARS                                                                   \
	"PREFIX=/opt/sm BINDIR=/opt/sm/sbin LIBDIR=/opt/sm/lib64 "                    \
	"INCLUDEDIR=/opt/sm/include/shmmap MANDIR=/opt/sm/man"

/* Every directory variable is obeyed, shmmap.pc follows them, and
 * uninstall with the same variables leaves no file behind. */
START_TEST(custom_directories)
{
	MAKE("install", CUSTOM_VARS);
	expect_file("/opt/sm/sbin/shmmapd", 0755);
	expect_file("/opt/sm/sbin/shmmapctl", 0755);
	expect_file("/opt/sm/include/shmmap/shmmap.h", 0644);
	expect_file("/opt/sm/lib64/libshmmap.a", 0644);
	expect_link("/opt/sm/lib64/libshmmap.so", version_file());
	expect_file("/opt/sm/lib64/pkgconfig/shmmap.pc", 0644);
	expect_file("/opt/sm/man/man8/shmmapd.8", 0644);
	expect_file("/opt/sm/man/man3/shmmap_get.3", 0644);
	ck_assert(!exists("/usr"));

	char *pc = tu_slurp(at("/opt/sm/lib64/pkgconfig/shmmap.pc"), NULL);
	ck_assert_msg(strstr(pc, "\nprefix=/opt/sm\n") && strstr(pc, "\nlibdir=/opt/sm/lib64\n") &&
			      strstr(pc, "\nincludedir=/opt/sm/include/shmmap\n"),
		      "shmmap.pc:\n%s", pc);
	char ver[64];
	snprintf(ver, sizeof ver, "\nVersion: %s\n", SHMMAP_VERSION_STRING);
	ck_assert_msg(strstr(pc, ver) != NULL, "shmmap.pc:\n%s", pc);
	ck_assert_msg(strchr(pc, '@') == NULL, "unsubstituted @VAR@ in shmmap.pc:\n%s", pc);
	free(pc);

	SH_OK("PKG_CONFIG_PATH=\"$D/opt/sm/lib64/pkgconfig\" PKG_CONFIG_SYSROOT_DIR=\"$D\" "
	      "pkg-config --cflags --libs shmmap");
	char want[1024];
	snprintf(want, sizeof want, "-I%s/opt/sm/include/shmmap -L%s/opt/sm/lib64 -lshmmap", dest,
		 dest);
	ck_assert_msg(strstr(out, want) != NULL, "pkg-config: %s\nwanted: %s", out, want);

	MAKE("uninstall", CUSTOM_VARS);
	list_installed();
	ck_assert_msg(out[0] == '\0', "left behind:\n%s", out);
}
END_TEST

/* uninstall removes what install put there, and nothing else. */
START_TEST(uninstall_removes_only_its_files)
{
	MAKE("install", "");
	SH_OK("echo other >\"$D/usr/local/lib/libother.so.1\" && "
	      "echo other >\"$D/usr/local/bin/other\" && "
	      "echo other >\"$D/usr/local/share/man/man3/other.3\"");
	MAKE("uninstall", "");
	list_installed();
	ck_assert_str_eq(out, "/usr/local/bin/other\n/usr/local/lib/libother.so.1\n"
			      "/usr/local/share/man/man3/other.3\n");
	/* A second uninstall finds nothing to remove and still succeeds. */
	MAKE("uninstall", "");
}
END_TEST

/* A unit (here one of the test's own, in place of conf/shmmapd.service)
 * is installed to SYSTEMDUNITDIR with the paths of shmmapd and shmmapctl
 * on its Exec lines made BINDIR's, and everything else kept. */
START_TEST(systemd_unit_paths)
{
	SH_OK("mkdir \"$D/src\" && cat >\"$D/src/shmmapd.service\" <<'EOF'\n"
	      "[Unit]\n"
	      "Description=shmmap coordinator\n"
	      "[Service]\n"
	      "ExecStart=/usr/bin/shmmapd -c /etc/shmmap/shmmap.ini --foreground\n"
	      "ExecStartPost=-@BINDIR@/shmmapctl status\n"
	      "ExecReload=/bin/kill -HUP $MAINPID\n"
	      "ReadWritePaths=/var/lib/shmmapd\n"
	      "EOF");
	char vars[512];
	snprintf(vars, sizeof vars, "PREFIX=/opt/sm SYSTEMDUNITDIR=/etc/systemd/system "
		 "SHMMAPD_UNIT=%s/src/shmmapd.service", dest);
	MAKE("install", vars);
	expect_file("/etc/systemd/system/shmmapd.service", 0644);
	char *unit = tu_slurp(at("/etc/systemd/system/shmmapd.service"), NULL);
	ck_assert_str_eq(unit, "[Unit]\n"
			       "Description=shmmap coordinator\n"
			       "[Service]\n"
			       "ExecStart=/opt/sm/bin/shmmapd -c /etc/shmmap/shmmap.ini --foreground\n"
			       "ExecStartPost=-/opt/sm/bin/shmmapctl status\n"
			       "ExecReload=/bin/kill -HUP $MAINPID\n"
			       "ReadWritePaths=/var/lib/shmmapd\n");
	free(unit);
	MAKE("uninstall", vars);
	ck_assert(!exists("/etc/systemd/system/shmmapd.service"));
}
END_TEST

static Suite *install_suite(void)
{
	Suite *s = suite_create("install");
	TCase *tc = tcase_create("install");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, default_layout);
	tcase_add_test(tc, pkg_config_builds_example);
	tcase_add_test(tc, custom_directories);
	tcase_add_test(tc, uninstall_removes_only_its_files);
	tcase_add_test(tc, systemd_unit_paths);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(install_suite());
}
