/*
 * check_python.c - the Python binding's tests (tests/python/test_shmmap.py,
 * unittest) run against a real shmmapd: one Check test per Python test
 * class, each with its own coordinator, segment and socket, so a failure
 * names the class and the summary of scripts/run-tests.sh counts them.
 *
 * From the environment (the Makefile's TEST_ENV): $SHMMAP_PY, the
 * interpreter (/usr/bin/python3), $SHMMAP_PYTHONPATH, the directory of the
 * built module (build/python), $SHMMAP_PYTESTS, tests/python.  The Python
 * output goes to this program's log.  Under AddressSanitizer (make asan)
 * the module is instrumented and the interpreter is not: the ASan runtime
 * this program was linked with is preloaded into the interpreter, and leak
 * detection is off there (the interpreter keeps its objects at exit).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define PY_DEADLINE_MS 50000

static struct tu_coord co;

static void setup(void)
{
	ck_assert_int_eq(tu_coord_start(&co, "64M", "[map]\nvalue_max = 2M\n"), 0);
}

static void teardown(void)
{
	tu_coord_cleanup(&co);
}

static const char *env_or_fail(const char *name)
{
	const char *v = getenv(name);
	ck_assert_msg(v && *v, "$%s is not set (run through make test)", name);
	return v;
}

#if defined(__SANITIZE_ADDRESS__)
/* The path of the ASan runtime mapped into this process, or NULL. */
static char *asan_runtime(void)
{
	static char path[512];
	FILE *f = fopen("/proc/self/maps", "r");
	char line[1024];
	char *found = NULL;
	while (f && !found && fgets(line, sizeof line, f)) {
		char *p = strchr(line, '/');
		if (p && strstr(p, "/libasan.so")) {
			p[strcspn(p, "\n")] = '\0';
			snprintf(path, sizeof path, "%s", p);
			found = path;
		}
	}
	if (f)
		fclose(f);
	return found;
}
#endif

/* Run the Python test class cls against co; its exit status. */
static int run_python(const char *cls)
{
	const char *py = env_or_fail("SHMMAP_PY");
	const char *pypath = env_or_fail("SHMMAP_PYTHONPATH");
	const char *dir = env_or_fail("SHMMAP_PYTESTS");
	char script[512];
	snprintf(script, sizeof script, "%s/test_shmmap.py", dir);
#if defined(__SANITIZE_ADDRESS__)
	const char *asan = asan_runtime();
	ck_assert_msg(asan != NULL, "ASan build, but no libasan.so mapped");
#endif
	pid_t pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setenv("SHMMAP_SOCKET", co.sock, 1);
		setenv("PYTHONPATH", pypath, 1);
		setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
#if defined(__SANITIZE_ADDRESS__)
		setenv("LD_PRELOAD", asan, 1);
		setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
#endif
		dup2(STDOUT_FILENO, STDERR_FILENO);
		execl(py, py, script, "-v", cls, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", py, strerror(errno));
		_exit(127);
	}
	int st = tu_waitpid(pid, PY_DEADLINE_MS);
	ck_assert_msg(st >= 0, "%s: python did not finish within %d ms", cls, PY_DEADLINE_MS);
	ck_assert_msg(WIFEXITED(st), "%s: python died of signal %d", cls,
		      WIFSIGNALED(st) ? WTERMSIG(st) : -1);
	return WEXITSTATUS(st);
}

#define PY_TEST(cls)                                                          \
	START_TEST(test_##cls)                                                \
	{                                                                     \
		fflush(stdout);                                               \
		int rc = run_python(#cls);                                    \
		ck_assert_msg(rc == 0, "%s: python exited with %d (its output is above)", \
			      #cls, rc);                                      \
	}                                                                     \
	END_TEST

PY_TEST(TestMapping)
PY_TEST(TestPut)
PY_TEST(TestIncrCas)
PY_TEST(TestStats)
PY_TEST(TestErrors)
PY_TEST(TestLarge)
PY_TEST(TestThreads)
PY_TEST(TestProcesses)
PY_TEST(TestRaces)

int main(void)
{
	Suite *s = suite_create("python");
	TCase *tc = tcase_create("python");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_TestMapping);
	tcase_add_test(tc, test_TestPut);
	tcase_add_test(tc, test_TestIncrCas);
	tcase_add_test(tc, test_TestStats);
	tcase_add_test(tc, test_TestErrors);
	tcase_add_test(tc, test_TestLarge);
	tcase_add_test(tc, test_TestThreads);
	tcase_add_test(tc, test_TestProcesses);
	tcase_add_test(tc, test_TestRaces);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
