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
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h" /* the walk test holds a stripe as a writer would */
#include "shmmap.h"
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

/* Start the Python test class cls against co (with $name=value in its
 * environment if name is not NULL); its pid. */
static pid_t start_python(const char *cls, const char *name, const char *value)
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
		if (name)
			setenv(name, value, 1);
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
	return pid;
}

/* Wait for start_python's pid; its exit status. */
static int wait_python(pid_t pid, const char *cls)
{
	int st = tu_waitpid(pid, PY_DEADLINE_MS);
	ck_assert_msg(st >= 0, "%s: python did not finish within %d ms", cls, PY_DEADLINE_MS);
	ck_assert_msg(WIFEXITED(st), "%s: python died of signal %d", cls,
		      WIFSIGNALED(st) ? WTERMSIG(st) : -1);
	return WEXITSTATUS(st);
}

/* Run the Python test class cls against co; its exit status. */
static int run_python(const char *cls)
{
	return wait_python(start_python(cls, NULL, NULL), cls);
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

/* ---- a walk waiting for a stopped writer lets the GIL go ---- */

struct walk_wait {
	struct seg_stripe *st;
	uint64_t waits0;
};

static bool walk_waited(void *arg)
{
	const struct walk_wait *w = arg;
	return atomic_load(&w->st->lock_waits) != w->waits0;
}

/*
 * keys() (any walk: values, items, iteration, popitem) waits for a writer
 * stopped in mid-write (SIGSTOP, a debugger) for as long as it is stopped:
 * it held the GIL meanwhile, and the process's other threads froze.  Here
 * the stripe of a key is held as such a writer holds it (its lock taken,
 * its seq odd) until the Python process's walk has waited 300 ms; its
 * ticker thread must have run meanwhile (TestWalkWait).
 */
START_TEST(walk_lets_other_threads_run)
{
	shmmap *sm = tu_attach(co.sock);
	shmmap_map m = tu_open(sm, "gilwalk");
	char k[16];
	for (int i = 0; i < 50; i++) {
		int n = snprintf(k, sizeof k, "k%d", i);
		ck_assert_int_eq(shmmap_put(sm, m, k, (size_t)n, "v", 1, 0, 0), 0);
	}
	ck_assert_int_eq(shmmap_put(sm, m, "w", 1, "v", 1, 0, 0), 0);
	const struct map_view *v;
	ck_assert_int_eq(shmmap__resolve(sm, m, &v), 0);
	struct seg_stripe *st = &v->stripes[shmmap__hash(&sm->geom, "w", 1) & (v->nstripes - 1)];
	struct lock_ctx lk = {.s = &sm->seg, .g = &sm->geom, .owner = sm->slot + 1};
	ck_assert_int_eq(shmmap__lock(&st->lock, &lk, NULL), 0);
	atomic_fetch_add(&st->seq, 1); /* a write under way */
	struct walk_wait w = {st, atomic_load(&st->lock_waits)};
	fflush(stdout);
	pid_t pid = start_python("TestWalkWait", "SHMMAP_WALK_MAP", "gilwalk");
	bool waited = tu_wait(walk_waited, &w, 20000);
	long long t0 = tu_mono_ms();
	while (waited && tu_mono_ms() - t0 < 300)
		poll(NULL, 0, 30); /* (the window the ticker must run in, not a wait for it) */
	atomic_fetch_add(&st->seq, 1);
	shmmap__unlock(&st->lock);
	int rc = wait_python(pid, "TestWalkWait");
	ck_assert_msg(waited, "the Python walk never waited for the stripe");
	ck_assert_msg(rc == 0, "TestWalkWait: python exited with %d (its output is above)", rc);
	shmmap_detach(sm);
}
END_TEST

/*
 * A forked child's first call re-attaches: a round trip to the
 * coordinator, which waits for as long as the coordinator is stopped (up
 * to the reply timeout, 10 s).  It kept the GIL meanwhile, and the child's
 * other threads froze (a gthread worker's other requests).  TestForkWait
 * stops this coordinator, forks, and checks that the child's ticker ran
 * while the child's first get waited; the coordinator goes on after 300 ms.
 */
START_TEST(fork_reattach_lets_other_threads_run)
{
	char pid[24];
	snprintf(pid, sizeof pid, "%d", (int)co.pid);
	fflush(stdout);
	int rc = wait_python(start_python("TestForkWait", "SHMMAP_COORD_PID", pid), "TestForkWait");
	kill(co.pid, SIGCONT); /* (whatever became of the Python side) */
	ck_assert_msg(rc == 0, "TestForkWait: python exited with %d (its output is above)", rc);
}
END_TEST

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
	tcase_add_test(tc, walk_lets_other_threads_run);
	tcase_add_test(tc, fork_reattach_lets_other_threads_run);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
