/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * check_man.c - the man pages next to the sources (shmmap/NAME.[1-8]):
 *   - each is free of warnings under `groff -man -ww -z` (groff exits 0
 *     on a warning, so any output on stderr fails), and the same check
 *     does fail on a page with a real warning;
 *   - each names this version and its own section in .TH;
 *   - they cover what they document, so they cannot silently drift:
 *     shmmap.3 every function of include/shmmap.h (a .SS section each,
 *     listing every error code the header gives for it) and every
 *     SHMMAP_* macro; shmmapctl.1 every command and option of
 *     `shmmapctl --help`; shmmapd.8 every option of `shmmapd --help`;
 *     shmmap.ini.5 every key of conf/shmmap.ini under its section.
 */
#include <check.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmmap.h"
#include "testutil.h"

#define OUT_CAP 65536

static const char *const pages[] = {"shmmapctl.1", "shmmap.3", "shmmap.ini.5", "shmmapd.8"};
#define N_PAGES (sizeof pages / sizeof pages[0])

static char out[OUT_CAP], err[OUT_CAP];

static char *read_src(const char *rel)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", tu_env("SHMMAP_SRCDIR"), rel);
	return tu_slurp(path, NULL);
}

/* groff's warnings about the page at path, in err; its exit status. */
static int lint(const char *path)
{
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof cmd, "LC_ALL=C exec groff -man -ww -z '%s'", path);
	return tu_sh(cmd, out, sizeof out, err, sizeof err);
}

START_TEST(pages_lint_clean)
{
	for (size_t i = 0; i < N_PAGES; i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/shmmap/%s", tu_env("SHMMAP_SRCDIR"), pages[i]);
		int st = lint(path);
		ck_assert_msg(st == 0 && err[0] == '\0', "%s: exit %d:\n%s", pages[i], st, err);
	}
	/* No page next to the sources is left out of the list above. */
	ck_assert_int_eq(tu_sh("cd \"$SHMMAP_SRCDIR/shmmap\" && ls *.[1-8] | LC_ALL=C sort", out,
			       sizeof out, err, sizeof err),
			 0);
	ck_assert_str_eq(out, "shmmap.3\nshmmap.ini.5\nshmmapctl.1\nshmmapd.8\n");
}
END_TEST

/* The lint is not vacuous: a page with an undefined macro and a bad
 * escape gets warnings, so the check above would fail on it. */
START_TEST(lint_catches_warnings)
{
	char dir[] = "/tmp/shmmap-man-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char path[64];
	snprintf(path, sizeof path, "%s/bad.1", dir);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(".TH BAD 1\n.SH NAME\nbad \\- a page with mistakes\n.SH DESCRIPTION\n"
	      ".XYZ not a macro\ntext with a bad \\q escape\n",
	      f);
	fclose(f);
	lint(path);
	unlink(path);
	rmdir(dir);
	ck_assert_msg(strstr(err, "warning") != NULL, "groff did not warn: %s", err);
}
END_TEST

START_TEST(pages_name_version_and_section)
{
	for (size_t i = 0; i < N_PAGES; i++) {
		char rel[64];
		snprintf(rel, sizeof rel, "shmmap/%s", pages[i]);
		char *text = read_src(rel);
		const char *th = strstr(text, "\n.TH ");
		ck_assert_msg(th != NULL, "%s: no .TH", pages[i]);
		char name[32], sect[8];
		ck_assert_int_eq(sscanf(th, "\n.TH %31s %7s", name, sect), 2);
		ck_assert_str_eq(sect, strrchr(pages[i], '.') + 1);
		char ver[64];
		snprintf(ver, sizeof ver, "\"shmmap %s\"", SHMMAP_VERSION_STRING);
		const char *eol = strchr(th + 1, '\n');
		ck_assert_msg(strstr(th, ver) != NULL && strstr(th, ver) < eol,
			      "%s: .TH does not name %s", pages[i], ver);
		free(text);
	}
}
END_TEST

/* The text of section ".SS name" (up to the next .SS or .SH), or NULL. */
static char *subsection(const char *page, const char *name)
{
	char head[96];
	snprintf(head, sizeof head, "\n.SS %s\n", name);
	const char *a = strstr(page, head);
	if (!a)
		return NULL;
	a += strlen(head);
	const char *b = a;
	while ((b = strchr(b, '\n')) && strncmp(b, "\n.SS ", 5) && strncmp(b, "\n.SH ", 5))
		b++;
	size_t n = b ? (size_t)(b - a) : strlen(a);
	return strndup(a, n);
}

static bool is_ident(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

START_TEST(api_page_covers_header)
{
	char *h = read_src("include/shmmap.h");
	char *page = read_src("shmmap/shmmap.3");
	int calls = 0;
	/* A declaration is a line that starts with its return type and holds
	 * "shmmap_NAME(" (the Makefile finds the calls the same way). */
	for (char *line = h; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (!islower((unsigned char)*line) || strncmp(line, "typedef", 7) == 0)
			continue;
		char *eol = strchr(line, '\n');
		char *p = strstr(line, "shmmap_");
		while (p && (!eol || p < eol) && p > line && is_ident(p[-1]))
			p = strstr(p + 1, "shmmap_");
		if (!p || (eol && p > eol))
			continue;
		size_t n = 0;
		while (is_ident(p[n]))
			n++;
		if (p[n] != '(')
			continue;
		char name[64];
		snprintf(name, sizeof name, "%.*s", (int)n, p);
		calls++;

		char proto[80];
		snprintf(proto, sizeof proto, "%s(", name);
		ck_assert_msg(strstr(page, proto) != NULL, "shmmap.3: %s is not in the synopsis", name);
		char *sec = subsection(page, name);
		ck_assert_msg(sec != NULL, "shmmap.3 has no \".SS %s\"", name);

		/* Every error code of the call's doc comment is in its section. */
		char *doc_end = line;
		char *doc = doc_end;
		while (doc > h && strncmp(doc, "/**", 3) != 0)
			doc--;
		for (char *q = doc; q < doc_end; q++) {
			if (q[0] != '-' || (q[1] != 'E' && strncmp(q + 1, "SHMMAP_E", 8) != 0))
				continue;
			size_t k = 1;
			while (is_ident(q[k]))
				k++;
			char code[48], man[56];
			snprintf(code, sizeof code, "%.*s", (int)(k - 1), q + 1);
			snprintf(man, sizeof man, "\\-%s", code);
			ck_assert_msg(strstr(sec, man) != NULL,
				      "shmmap.3, %s: the header names -%s, the page does not", name,
				      code);
		}
		free(sec);
	}
	ck_assert_int_ge(calls, 14);

	/* Every public macro. */
	for (char *p = strstr(h, "\n#define SHMMAP_"); p; p = strstr(p + 1, "\n#define SHMMAP_")) {
		const char *m = p + 9;
		size_t n = 0;
		while (is_ident(m[n]))
			n++;
		char name[64];
		snprintf(name, sizeof name, "%.*s", (int)n, m);
		if (strcmp(name, "SHMMAP_H") == 0)
			continue;
		ck_assert_msg(strstr(page, name) != NULL, "shmmap.3 does not mention %s", name);
	}
	free(page);
	free(h);
}
END_TEST

/* "--foo-bar" as a man page writes it: "\-\-foo\-bar". */
static void man_form(const char *opt, char *buf, size_t cap)
{
	size_t j = 0;
	for (size_t i = 0; opt[i] && j + 3 < cap; i++) {
		if (opt[i] == '-')
			buf[j++] = '\\';
		buf[j++] = opt[i];
	}
	buf[j] = '\0';
}

/* Whether a .TP tag line of the page's OPTIONS section names the option
 * man (as a whole word: \-c does not match \-\-check). */
static bool option_item(const char *page, const char *man)
{
	const char *sec = strstr(page, "\n.SH OPTIONS\n");
	if (!sec)
		return false;
	const char *end = strstr(sec + 1, "\n.SH ");
	for (const char *tp = strstr(sec, "\n.TP\n"); tp && (!end || tp < end);
	     tp = strstr(tp + 1, "\n.TP\n")) {
		const char *tag = tp + 5, *eol = strchr(tag, '\n');
		for (const char *m = strstr(tag, man); m && (!eol || m < eol); m = strstr(m + 1, man)) {
			char next = m[strlen(man)];
			if (!isalnum((unsigned char)next) && next != '_')
				return true;
		}
	}
	return false;
}

/* Every option ("-x" or "--long-name") that the help text names has an
 * item in the page's OPTIONS section. */
static void expect_options(const char *help, const char *page, const char *page_name)
{
	int found = 0;
	for (const char *p = help; *p; p++) {
		if (p[0] != '-' || (p > help && !isspace((unsigned char)p[-1]) && p[-1] != '['))
			continue;
		size_t n = 1;
		while (p[n] == '-' || isalnum((unsigned char)p[n]))
			n++;
		if (n < 2 || (p[1] != '-' && n != 2))
			continue;
		char opt[48], man[96];
		snprintf(opt, sizeof opt, "%.*s", (int)n, p);
		man_form(opt, man, sizeof man);
		ck_assert_msg(option_item(page, man), "%s: no OPTIONS item for %s", page_name, opt);
		found++;
		p += n - 1;
	}
	ck_assert_int_ge(found, 4);
}

START_TEST(ctl_page_covers_commands_and_options)
{
	char cmd[PATH_MAX];
	snprintf(cmd, sizeof cmd, "exec \"%s\" --help", tu_env("SHMMAPCTL"));
	ck_assert_int_eq(tu_sh(cmd, out, sizeof out, err, sizeof err), 0);
	char *page = read_src("shmmap/shmmapctl.1");
	const char *cmds = strstr(page, "\n.SH COMMANDS\n");
	ck_assert_ptr_nonnull(cmds);
	const char *cmds_end = strstr(cmds + 1, "\n.SH ");

	/* Commands: the lines of the "commands:" block that start with two
	 * spaces and a word. */
	const char *a = strstr(out, "\ncommands:\n"), *b = strstr(out, "\noptions:\n");
	ck_assert(a && b && a < b);
	int n_cmds = 0;
	for (const char *l = a + 11; l < b; l = strchr(l, '\n') + 1) {
		if (l[0] != ' ' || l[1] != ' ' || !islower((unsigned char)l[2]))
			continue;
		size_t n = 0;
		while (islower((unsigned char)l[2 + n]))
			n++;
		char word[32], tp[64];
		snprintf(word, sizeof word, "%.*s", (int)n, l + 2);
		/* A .TP item whose tag starts with the command. */
		bool ok = false;
		const char *tags[] = {".TP\n.B %s\n", ".TP\n.BI %s ", ".TP\n.BR %s ", ".TP\n.BI \"%s "};
		for (size_t t = 0; t < 4 && !ok; t++) {
			snprintf(tp, sizeof tp, tags[t], word);
			const char *hit = strstr(cmds, tp);
			ok = hit && hit < cmds_end;
		}
		ck_assert_msg(ok, "shmmapctl.1 has no COMMANDS item for %s", word);
		n_cmds++;
	}
	ck_assert_int_ge(n_cmds, 16);
	expect_options(b, page, "shmmapctl.1");
	free(page);
}
END_TEST

START_TEST(daemon_page_covers_options)
{
	char cmd[PATH_MAX];
	snprintf(cmd, sizeof cmd, "exec \"%s\" --help", tu_env("SHMMAPD"));
	ck_assert_int_eq(tu_sh(cmd, out, sizeof out, err, sizeof err), 0);
	char *page = read_src("shmmap/shmmapd.8");
	expect_options(out, page, "shmmapd.8");
	free(page);
}
END_TEST

START_TEST(ini_page_covers_keys)
{
	char *ini = read_src("conf/shmmap.ini");
	char *page = read_src("shmmap/shmmap.ini.5");
	char *sec = NULL;
	int keys = 0;
	for (char *l = ini; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (l[0] == '[') {
			char name[32];
			ck_assert_int_eq(sscanf(l, "[%31[a-z]]", name), 1);
			free(sec);
			char head[64];
			snprintf(head, sizeof head, "[%s]", name);
			sec = subsection(page, head);
			ck_assert_msg(sec != NULL, "shmmap.ini.5 has no \".SS [%s]\"", name);
			continue;
		}
		/* "key = value", or a commented-out example ";key = value". */
		const char *k = l;
		if (*k == ';')
			k++;
		while (*k == ' ')
			k++;
		size_t n = 0;
		while (islower((unsigned char)k[n]) || k[n] == '_')
			n++;
		const char *e = k + n;
		while (*e == ' ')
			e++;
		if (n == 0 || *e != '=')
			continue;
		ck_assert_msg(sec != NULL, "conf/shmmap.ini: a key outside any section");
		char item[64];
		snprintf(item, sizeof item, ".TP\n.B %.*s\n", (int)n, k);
		ck_assert_msg(strstr(sec, item) != NULL, "shmmap.ini.5 does not document %.*s",
			      (int)n, k);
		keys++;
	}
	ck_assert_int_ge(keys, 19);
	free(sec);
	free(page);
	free(ini);
}
END_TEST

static Suite *man_suite(void)
{
	Suite *s = suite_create("man");
	TCase *tc = tcase_create("man");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, pages_lint_clean);
	tcase_add_test(tc, lint_catches_warnings);
	tcase_add_test(tc, pages_name_version_and_section);
	tcase_add_test(tc, api_page_covers_header);
	tcase_add_test(tc, ctl_page_covers_commands_and_options);
	tcase_add_test(tc, daemon_page_covers_options);
	tcase_add_test(tc, ini_page_covers_keys);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(man_suite());
}
