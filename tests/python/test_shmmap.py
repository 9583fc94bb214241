"""test_shmmap.py - the Python binding (shmmap/python/shmmapmodule.c), stdlib only.

Run by tests/check_python.c against a coordinator it starts for each test
class ($SHMMAP_SOCKET; PYTHONPATH=build/python; value_max of at least 1M):

    /usr/bin/python3 tests/python/test_shmmap.py [TestClass ...]

Every test uses maps of its own and drops them.  tests/check_python.c
names each TestCase class: add a new class there too.  Nothing here sleeps to
synchronise: waits poll a condition with a deadline (wait_until).

Forked children use the attachment they inherited (the pre-fork pattern of
gunicorn --preload and multiprocessing): the library re-attaches it in the
child on its first call.
"""
import collections.abc
import errno
import multiprocessing
import os
import sys
import threading
import time
import unittest
import uuid

import shmmap


def wait_until(pred, deadline_s=10.0):
    """Poll pred() every 10 ms until it is true or the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)


def ticks_during(fn):
    """Run fn() while another thread counts milliseconds: (fn's result,
    how many it counted meanwhile; few if fn kept the GIL)."""
    ticks = [0]
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)
    t = threading.Thread(target=tick)
    t.start()
    try:
        if not wait_until(lambda: ticks[0] > 0, 5.0):
            raise AssertionError("the ticker thread never ran")
        before = ticks[0]
        result = fn()
        return result, ticks[0] - before
    finally:
        stop.set()
        t.join()


def unique(prefix="t"):
    return "%s-%d-%s" % (prefix, os.getpid(), uuid.uuid4().hex[:12])


class MapTest(unittest.TestCase):
    """A client and a fresh map per test, dropped afterwards."""

    def setUp(self):
        self.client = shmmap.attach()
        self.name = unique()
        self.m = self.client.open(self.name)

    def tearDown(self):
        if not self.client.detached:
            try:
                self.client.drop(self.name)
            except FileNotFoundError:
                pass
            self.client.detach()


class TestMapping(MapTest):
    def test_is_a_mutable_mapping(self):
        self.assertIsInstance(self.m, collections.abc.MutableMapping)
        self.assertIsInstance(self.m, shmmap.Map)
        self.assertEqual(self.m.name, self.name)
        self.assertIs(self.m.client, self.client)
        self.assertIn(self.name, repr(self.m))

    def test_set_get_bytes_and_str(self):
        m = self.m
        m[b"k1"] = b"v1"
        m["k2"] = "v\u00e9"
        self.assertEqual(m[b"k1"], b"v1")
        self.assertEqual(m["k1"], b"v1")  # str keys are UTF-8
        self.assertEqual(m[b"k2"], "v\u00e9".encode())
        self.assertEqual(m["k2"], b"v\xc3\xa9")
        m[bytearray(b"k3")] = memoryview(b"v3")
        self.assertEqual(m[b"k3"], b"v3")
        self.assertIsInstance(m[b"k3"], bytes)

    def test_binary_and_empty(self):
        m = self.m
        key = bytes(range(200))  # NULs included; key_max is 250
        m[key] = b"\x00\x01\x00"
        self.assertEqual(m[key], b"\x00\x01\x00")
        m[b"empty"] = b""
        self.assertEqual(m[b"empty"], b"")
        self.assertIn(b"empty", m)

    def test_replace(self):
        self.m["k"] = "one"
        self.m["k"] = "two"
        self.assertEqual(self.m["k"], b"two")
        self.assertEqual(len(self.m), 1)

    def test_missing_key_is_keyerror(self):
        with self.assertRaises(KeyError) as cm:
            self.m["absent"]
        self.assertEqual(cm.exception.args, ("absent",))
        with self.assertRaises(KeyError):
            del self.m[b"absent"]

    def test_del_and_contains(self):
        m = self.m
        m["a"] = "1"
        self.assertIn("a", m)
        self.assertIn(b"a", m)
        self.assertNotIn("b", m)
        del m["a"]
        self.assertNotIn("a", m)
        self.assertEqual(len(m), 0)

    def test_len_iter_keys_values_items(self):
        m = self.m
        want = {("k%d" % i).encode(): ("v%d" % i).encode() for i in range(300)}
        for k, v in want.items():
            m[k] = v
        self.assertEqual(len(m), 300)
        self.assertTrue(m)
        self.assertEqual(sorted(m), sorted(want))
        self.assertEqual(sorted(m.keys()), sorted(want))
        self.assertEqual(sorted(m.values()), sorted(want.values()))
        self.assertEqual(dict(m.items()), want)
        self.assertEqual(dict(m), want)
        self.assertEqual(m, want)

    def test_get_default(self):
        self.m["a"] = "1"
        self.assertEqual(self.m.get("a"), b"1")
        self.assertIsNone(self.m.get("b"))
        self.assertEqual(self.m.get("b", 7), 7)
        with self.assertRaises(TypeError):
            self.m.get()

    def test_mixins(self):
        m = self.m
        m.update({"a": "1", "b": "2"}, c="3")
        self.assertEqual(m["c"], b"3")
        self.assertEqual(m.pop("a"), b"1")
        self.assertEqual(m.pop("a", None), None)
        self.assertEqual(m.setdefault("b", b"x"), b"2")
        self.assertEqual(m.setdefault("d", b"4"), b"4")
        k, v = m.popitem()
        self.assertNotIn(k, m)
        self.assertEqual(len(m), 2)
        m.clear()
        self.assertEqual(len(m), 0)
        self.assertEqual(list(m), [])

    def test_setdefault_returns_the_stored_bytes(self):
        # What it stores it returns, as bytes: a str default came back as
        # the str when stored, and as bytes from the next call on.
        m = self.m
        self.assertEqual(m.setdefault("sd", "\u00e9"), "\u00e9".encode())
        self.assertEqual(m.setdefault("sd", "b"), "\u00e9".encode())
        got = m.setdefault("ba", bytearray(b"x"))
        self.assertIs(type(got), bytes)
        self.assertEqual(got, b"x")
        self.assertEqual(m.setdefault("by", b"y"), b"y")

    def test_flush(self):
        for i in range(50):
            self.m["k%d" % i] = "v"
        self.m.flush()
        self.assertEqual(len(self.m), 0)
        self.m["after"] = "1"  # the handle stays valid
        self.assertEqual(self.m["after"], b"1")

    def test_bad_types(self):
        with self.assertRaises(TypeError):
            self.m[1] = b"x"
        with self.assertRaises(TypeError):
            self.m[b"x"] = 1
        with self.assertRaises(TypeError):
            self.m[None]
        with self.assertRaises(TypeError):
            1 in self.m

    def test_two_handles_one_map(self):
        other = self.client.open(self.name, create=False)
        self.m["shared"] = "yes"
        self.assertEqual(other["shared"], b"yes")
        c2 = shmmap.attach()
        try:
            self.assertEqual(c2.open(self.name)["shared"], b"yes")
        finally:
            c2.detach()


class TestPut(MapTest):
    def test_nx_xx(self):
        m = self.m
        self.assertTrue(m.put("k", "1", nx=True))
        self.assertFalse(m.put("k", "2", nx=True))
        self.assertEqual(m["k"], b"1")
        self.assertTrue(m.put("k", "3", xx=True))
        self.assertEqual(m["k"], b"3")
        self.assertFalse(m.put("absent", "x", xx=True))
        self.assertNotIn("absent", m)
        self.assertTrue(m.put("k", "4"))
        with self.assertRaises(ValueError):
            m.put("k", "5", nx=True, xx=True)

    def test_ttl_arguments(self):
        with self.assertRaises(ValueError):
            self.m.put("k", "v", ttl=-1)
        with self.assertRaises(ValueError):
            self.m.put("k", "v", ttl=2**32)
        with self.assertRaises(TypeError):
            self.m.put("k", "v", ttl=1.5)
        self.assertTrue(self.m.put("k", "v", 0))
        self.assertTrue(self.m.put(key="k2", value="v", ttl=3600))
        self.assertEqual(self.m["k2"], b"v")

    def test_arguments(self):
        m = self.m
        self.assertTrue(m.put(value="v", key="k", xx=0))
        self.assertTrue(m.cas(new="w", expected="v", key="k", ttl=None))
        self.assertEqual(m["k"], b"w")
        for bad in (lambda: m.put("k"), lambda: m.put("k", "v", 1, False, False, False, 5),
                    lambda: m.put("k", "v", foo=1), lambda: m.put("k", "v", key="x"),
                    lambda: m.cas("k", "v"), lambda: m.incr(),
                    lambda: m.incr("k", delta=1, key="z")):
            with self.assertRaises(TypeError):
                bad()

    def test_nottl(self):
        m = self.m
        self.assertTrue(m.put("k", "v", nottl=True))
        self.assertEqual(m["k"], b"v")
        with self.assertRaises(shmmap.Error) as cm:
            m.put("k", "v", ttl=5, nottl=True)
        self.assertEqual(cm.exception.errno, errno.EINVAL)

    def test_ttl_expires(self):
        m = self.m
        m.put("short", "v", ttl=1)
        m.put("long", "v", ttl=3600)
        m["never"] = "v"
        self.assertEqual(m["short"], b"v")
        self.assertTrue(wait_until(lambda: "short" not in m, 5.0))
        self.assertIsNone(m.get("short"))
        with self.assertRaises(KeyError):
            m["short"]
        self.assertEqual(m["long"], b"v")
        self.assertEqual(m["never"], b"v")
        self.assertEqual(sorted(m.keys()), [b"long", b"never"])


class TestIncrCas(MapTest):
    def test_incr(self):
        m = self.m
        self.assertEqual(m.incr("n"), 1)
        self.assertEqual(m.incr("n", 10), 11)
        self.assertEqual(m.incr("n", delta=-20), -9)
        self.assertEqual(m["n"], b"-9")
        m["n2"] = "41"
        self.assertEqual(m.incr(key="n2"), 42)

    def test_incr_errors(self):
        m = self.m
        m["text"] = "abc"
        with self.assertRaises(shmmap.Error) as cm:
            m.incr("text")
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        m["big"] = str(2**63 - 1)
        with self.assertRaises(shmmap.Error) as cm:
            m.incr("big")
        self.assertEqual(cm.exception.errno, errno.ERANGE)
        self.assertEqual(m["big"], str(2**63 - 1).encode())
        with self.assertRaises(OverflowError):
            m.incr("n", 2**63)
        with self.assertRaises(TypeError):
            m.incr("n", "1")
        with self.assertRaises(TypeError):
            m.incr("n", 1, 2, 3)
        with self.assertRaises(ValueError):
            m.incr("n", 1, ttl=-1)

    def test_incr_error_says_why(self):
        m = self.m
        m["text"] = "abc"
        with self.assertRaises(shmmap.Error) as cm:
            m.incr("text")
        self.assertIn("not a decimal integer", str(cm.exception))

    def test_incr_empty_key_has_no_stale_why(self):
        # An empty key is EINVAL without the library's detail: the detail
        # of an earlier call (a value that is not a number) was shown.
        m = self.m
        m["text"] = "abc"
        with self.assertRaises(shmmap.Error):
            m.incr("text")
        with self.assertRaises(shmmap.Error) as cm:
            m.incr("")
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        self.assertNotIn("decimal integer", str(cm.exception))

    def test_incr_ttl(self):
        # A rate limiter's window: the TTL goes to the key incr creates.
        m = self.m
        m["never"] = "5"
        self.assertEqual(m.incr("w", ttl=1), 1)
        self.assertEqual(m.incr("w", 1, 3600), 2)  # keeps its 1 s
        self.assertEqual(m.incr("never", ttl=1), 6)  # keeps no expiry
        self.assertTrue(wait_until(lambda: "w" not in m, 5.0))
        self.assertEqual(m.incr("w", ttl=1), 1)  # the next window
        self.assertEqual(m["never"], b"6")

    def test_cas(self):
        m = self.m
        m["k"] = "old"
        self.assertTrue(m.cas("k", "old", "new"))
        self.assertEqual(m["k"], b"new")
        self.assertFalse(m.cas("k", "old", "newer"))
        self.assertEqual(m["k"], b"new")
        self.assertFalse(m.cas("absent", "x", "y"))
        self.assertNotIn("absent", m)
        self.assertTrue(m.cas("fresh", None, "1"))  # None: only if absent
        self.assertFalse(m.cas("fresh", None, "2"))
        self.assertEqual(m["fresh"], b"1")

    def test_cas_ttl(self):
        m = self.m
        m["k"] = "a"
        self.assertTrue(m.cas("k", b"a", b"b", ttl=1))
        self.assertTrue(wait_until(lambda: "k" not in m, 5.0))


class TestStats(MapTest):
    def test_exact_counters(self):
        m = self.m
        st = m.stats()
        self.assertEqual(
            set(st),
            {"entries", "bytes", "hits", "misses", "puts", "dels", "incrs", "cas",
             "evictions", "expirations", "lock_waits"})
        self.assertEqual(st["entries"], 0)
        m["ab"] = "xyz"
        m["cd"] = "uvw"
        m["ab"]
        m["ab"]
        m.get("absent")
        del m["cd"]
        m.incr("n", 5)
        m.cas("ab", "xyz", "q")
        st = m.stats()
        self.assertEqual(st["entries"], 2)
        self.assertEqual(st["bytes"], len("ab") + len("q") + len("n") + len("5"))
        self.assertEqual(st["hits"], 2)
        self.assertEqual(st["misses"], 1)
        self.assertEqual(st["puts"], 2)
        self.assertEqual(st["dels"], 1)
        self.assertEqual(st["incrs"], 1)
        self.assertEqual(st["cas"], 1)
        self.assertEqual(st["evictions"], 0)


    def test_cas_of_absent_counts_as_a_put(self):
        # cas(k, None, v) is a put with nx (shmmap_cas compares with a
        # present value): puts counts it, cas counts the C call's swaps.
        m = self.m
        self.assertTrue(m.cas("k", None, "v"))
        self.assertFalse(m.cas("k", None, "w"))
        st = m.stats()
        self.assertEqual((st["puts"], st["cas"]), (1, 0))
        self.assertTrue(m.cas("k", "v", "w"))
        st = m.stats()
        self.assertEqual((st["puts"], st["cas"]), (1, 1))


class TestErrors(unittest.TestCase):
    def setUp(self):
        self.client = shmmap.attach()

    def tearDown(self):
        self.client.detach()

    def test_error_classes(self):
        self.assertTrue(issubclass(shmmap.Error, OSError))
        self.assertTrue(issubclass(shmmap.FileNotFoundError, shmmap.Error))
        self.assertTrue(issubclass(shmmap.FileNotFoundError, FileNotFoundError))
        self.assertTrue(issubclass(shmmap.PermissionError, PermissionError))

    def test_open_missing_map(self):
        name = unique("missing")
        with self.assertRaises(FileNotFoundError) as cm:
            self.client.open(name, create=False)
        e = cm.exception
        self.assertIsInstance(e, shmmap.Error)
        self.assertEqual(e.errno, errno.ENOENT)
        self.assertEqual(e.strerror, shmmap.strerror(-errno.ENOENT))
        self.assertEqual(e.filename, name)
        with self.assertRaises(FileNotFoundError):
            self.client.drop(name)

    def test_open_options(self):
        with self.assertRaises(TypeError):
            self.client.open(unique(), capacity=10)
        with self.assertRaises(TypeError):
            self.client.open(unique(), True, create=True)
        with self.assertRaises(TypeError):
            self.client.open()
        name = unique()
        m = self.client.open(name, create=True)
        self.client.open(name, False)
        self.client.open(name=name, create=False)
        self.client.drop(name)
        self.assertIsNotNone(m)

    def test_bad_names(self):
        for bad in ("", "x" * (shmmap.NAME_MAX + 1)):
            with self.assertRaises(shmmap.Error) as cm:
                self.client.open(bad)
            self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(ValueError):
            self.client.open("a\0b")
        with self.assertRaises(TypeError):
            self.client.open(42)

    def test_dropped_map_is_stale(self):
        name = unique()
        m = self.client.open(name)
        m["k"] = "v"
        self.client.drop(name)
        with self.assertRaises(shmmap.Error) as cm:
            m["k"]
        self.assertEqual(cm.exception.errno, errno.ESTALE)
        with self.assertRaises(shmmap.Error):
            m["k"] = "v"
        m2 = self.client.open(name)  # a new map of the same name
        self.assertNotIn("k", m2)
        with self.assertRaises(shmmap.Error):
            len(m)
        self.client.drop(name)

    def test_key_limits(self):
        name = unique()
        m = self.client.open(name)
        try:
            with self.assertRaises(shmmap.Error) as cm:
                m[b""] = b"v"
            self.assertEqual(cm.exception.errno, errno.EINVAL)
            with self.assertRaises(shmmap.Error) as cm:
                m[b"k" * 70000] = b"v"
            self.assertEqual(cm.exception.errno, errno.E2BIG)
            # Reads of a key too long to be in the map answer absent,
            # as a dict does (they raised E2BIG): keys from URLs, say.
            long_key = b"k" * 70000
            self.assertNotIn(long_key, m)
            self.assertIsNone(m.get(long_key))
            self.assertEqual(m.get(long_key, 7), 7)
            self.assertEqual(m.pop(long_key, 8), 8)
            with self.assertRaises(KeyError):
                m[long_key]
            with self.assertRaises(KeyError):
                del m[long_key]
            with self.assertRaises(shmmap.Error) as cm:
                m[b"k"] = b"v" * (64 << 20)
            self.assertEqual(cm.exception.errno, errno.E2BIG)
        finally:
            self.client.drop(name)

    def test_no_coordinator(self):
        path = "/tmp/shmmap-no-such-%s.sock" % uuid.uuid4().hex
        with self.assertRaises(ConnectionRefusedError) as cm:
            shmmap.attach(path)
        self.assertIsInstance(cm.exception, shmmap.Error)
        self.assertEqual(cm.exception.errno, errno.ECONNREFUSED)
        # The library's particulars: the path it tried, what to check.
        self.assertIn("no socket", cm.exception.strerror)
        with self.assertRaises(TypeError):
            shmmap.attach(socket=3)

    def test_detached(self):
        with shmmap.attach() as c:
            name = unique()
            m = c.open(name)
            self.assertFalse(c.detached)
        self.assertTrue(c.detached)
        c.detach()  # idempotent
        for op in (lambda: m["k"], lambda: m.put("k", "v"), lambda: len(m),
                   lambda: list(m), lambda: c.open("x"), lambda: m.flush()):
            with self.assertRaises(ValueError):
                op()
        self.client.drop(name)

    def test_strerror(self):
        self.assertIn("stale", shmmap.strerror(-errno.ESTALE))
        self.assertIn("coordinator", shmmap.strerror(-errno.ECONNREFUSED))
        self.assertIn("corrupt", shmmap.strerror(-shmmap.ECORRUPT))

    def test_own_errno_constants(self):
        # Every SHMMAP_E* code an error can carry is a constant, so that
        # e.errno can be compared with it (EDETACHED: detach and attach
        # again, after a removed segment or a recovered slot).
        for name, word in (("EBADSEG", "segment"), ("EVERSION", "version"),
                           ("ECORRUPT", "corrupt"), ("EDETACHED", "no longer valid"),
                           ("ESEGSIZE", "grew")):
            code = getattr(shmmap, name)
            self.assertGreater(code, 4096, name)
            self.assertIn(word, shmmap.strerror(-code), name)
        self.assertEqual(len({shmmap.EBADSEG, shmmap.EVERSION, shmmap.ECORRUPT,
                              shmmap.EDETACHED, shmmap.ESEGSIZE}), 5)


class TestLarge(MapTest):
    # Around the stack buffer (4 KiB) and the GIL threshold (256 KiB).
    SIZES = (4095, 4096, 4097, 65536, 262143, 262144, 262145, 1000000)

    def test_round_trip(self):
        m = self.m
        for n in self.SIZES:
            v = bytes((i * 7 + n) & 0xFF for i in range(n))
            m[b"big"] = v
            self.assertEqual(m[b"big"], v, n)
            self.assertEqual(m.get(b"big"), v, n)
        self.assertEqual(m.items(), [(b"big", v)])

    def test_growing_value(self):
        """A value that outgrows what the first get reported is read again."""
        m = self.m
        stop = threading.Event()
        small, big = b"s" * 9000, b"b" * 300000

        def writer():
            while not stop.is_set():
                m[b"k"] = small
                m[b"k"] = big

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(300):
                self.assertIn(m[b"k"], (small, big))
        finally:
            stop.set()
            t.join()

    def test_cas_large(self):
        m = self.m
        a, b = b"a" * 100000, b"b" * 100000
        m["k"] = a
        self.assertTrue(m.cas("k", a, b))
        self.assertFalse(m.cas("k", a, b"c"))
        self.assertEqual(m["k"], b)


def _thread_worker(m, me, n, errors):
    try:
        for i in range(n):
            m.incr("counter")
            k = "t%d-%d" % (me, i % 50)
            v = ("%d:%d" % (me, i)).encode() * (1 + i % 5)
            m[k] = v
            got = m[k]
            if got != v:
                errors.append("%s: %r != %r" % (k, got, v))
    except Exception as e:  # noqa: BLE001 - reported to the test
        errors.append(repr(e))


class TestThreads(MapTest):
    def test_lock_wait_releases_gil(self):
        # A small call that waits for another process's lock (as long as
        # that process is stopped) lets the other threads run: it froze
        # the whole interpreter before.
        _, ticks = ticks_during(lambda: shmmap._wait_hook_test(0.3))
        self.assertGreater(ticks, 10)

    def test_threads_hammer_one_map(self):
        nthreads, n = 8, 2000
        errors = []
        ts = [threading.Thread(target=_thread_worker, args=(self.m, t, n, errors))
              for t in range(nthreads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(int(self.m["counter"]), nthreads * n)
        self.assertEqual(len(self.m), 1 + nthreads * 50)

    def test_large_copies_in_parallel(self):
        """Large gets and puts run without the GIL, side by side."""
        vals = [bytes([i]) * 300000 for i in range(4)]
        errors = []

        def work(i):
            try:
                for _ in range(40):
                    self.m[b"big%d" % i] = vals[i]
                    if self.m[b"big%d" % i] != vals[i]:
                        errors.append(i)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])

    def test_detach_while_threads_run(self):
        """detach() while other threads are inside calls: they finish or get
        ValueError, nothing crashes, and the attachment ends."""
        c = shmmap.attach()
        m = c.open(self.name)
        m[b"big"] = b"x" * 500000
        started = threading.Barrier(5)
        outcomes = []

        def reader():
            started.wait()
            try:
                while True:
                    if len(m[b"big"]) != 500000:
                        outcomes.append("torn")
            except ValueError:
                outcomes.append("detached")
            except Exception as e:  # noqa: BLE001
                outcomes.append(repr(e))

        ts = [threading.Thread(target=reader) for _ in range(4)]
        for t in ts:
            t.start()
        started.wait()
        c.detach()
        for t in ts:
            t.join()
        self.assertEqual(outcomes, ["detached"] * 4)
        self.assertTrue(c.detached)


# ---- processes ----

_pool_map = None  # the map a pool worker uses


def _pool_init_attach(name):
    """Fallback: each worker attaches on its own."""
    global _pool_map
    _pool_map = shmmap.attach().open(name)


def _pool_incr(n):
    for _ in range(n):
        _pool_map.incr("counter")
    _pool_map["pid-%d" % os.getpid()] = str(os.getpid())
    return os.getpid()


class TestProcesses(MapTest):
    NPROC, NTASKS, PER_TASK = 4, 16, 500

    def _pool_counter(self, initializer, initargs):
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(self.NPROC, initializer=initializer, initargs=initargs) as pool:
            pids = pool.map(_pool_incr, [self.PER_TASK] * self.NTASKS)
            pool.close()
            pool.join()
        self.assertEqual(int(self.m["counter"]), self.NTASKS * self.PER_TASK)
        for pid in set(pids):
            self.assertEqual(self.m["pid-%d" % pid], str(pid).encode())
        self.assertNotIn(os.getpid(), pids)

    def test_pool_workers_attach(self):
        self._pool_counter(_pool_init_attach, (self.name,))

    def test_pool_workers_inherit(self):
        global _pool_map
        _pool_map = self.m  # made before the fork: the pre-fork pattern
        try:
            self._pool_counter(None, ())
        finally:
            _pool_map = None

    def test_fork_child_uses_parent_map(self):
        self.m["from-parent"] = "1"
        pid = os.fork()
        if pid == 0:  # child: only os._exit leaves it
            code = 1
            try:
                if self.m["from-parent"] == b"1":
                    self.m["from-child"] = str(os.getpid())
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(self.m["from-child"], str(pid).encode())
        self.m["after"] = "1"  # the parent's attachment still works
        self.assertEqual(self.m["after"], b"1")

    def test_fork_child_without_a_slot_says_why(self):
        # Every client slot taken: the child's re-attach (on its first
        # call) fails with EAGAIN, and says why, as the library does.
        extra = []
        try:
            while True:
                extra.append(shmmap.attach())
        except BlockingIOError:
            pass
        pid = os.fork()
        if pid == 0:  # child: only os._exit leaves it
            code = 1
            try:
                self.m["from-child"] = "1"
                code = 2
            except BlockingIOError as e:
                code = 0 if "no free client slot" in str(e) else 3
                if code:
                    sys.stderr.write("child: %s\n" % e)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        for c in extra:
            c.detach()
        self.assertTrue(extra)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)

    def test_handles_do_not_pickle_and_say_why(self):
        # spawn and forkserver pools pickle their arguments: the error
        # says to attach in the child instead.
        import pickle
        for obj in (self.m, self.client):
            for proto in (2, pickle.HIGHEST_PROTOCOL):
                with self.assertRaises(TypeError) as cm:
                    pickle.dumps(obj, proto)
                self.assertIn("attach", str(cm.exception))
                self.assertIn("initializer", str(cm.exception))

    def test_unrelated_process_sees_writes(self):
        self.m["hello"] = "from parent"
        code = ("import shmmap, sys; m = shmmap.attach().open(sys.argv[1], create=False); "
                "assert m['hello'] == b'from parent'; m['reply'] = 'from child'")
        pid = os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, "-c", code, self.name])
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(self.m["reply"], b"from child")


def _first_line_of(func, opnames):
    """The line of func's first instruction named one of opnames, or None."""
    import dis
    line = None
    for ins in dis.get_instructions(func):
        ln = getattr(ins, "line_number", None)
        if ln is None and isinstance(ins.starts_line, int) and ins.starts_line is not True:
            ln = ins.starts_line
        if ln is not None:
            line = ln
        if ins.opname in opnames:
            return line
    return None


class TestRaces(MapTest):
    """pop, setdefault and popitem against another process acting between
    their steps.  If a method is Python code (the MutableMapping mixin: a
    get, then a put or a delete), _between() runs the other process's call
    just before the line of its second step, so the interleaving is exact;
    a method of the C type has no such line and the call runs alone."""

    def _between(self, method, opnames, other):
        func = getattr(type(self.m), method)
        code = getattr(func, "__code__", None)
        line = _first_line_of(func, opnames) if code is not None else None
        fired = []

        def local(frame, event, arg):
            if event == "line" and frame.f_lineno == line and not fired:
                fired.append(other())
            return local

        def glob(frame, event, arg):
            return local if frame.f_code is code else None

        if line is not None:
            sys.settrace(glob)
        return fired, lambda: sys.settrace(None)

    def test_setdefault_returns_what_the_map_keeps(self):
        fired, done = self._between(
            "setdefault", ("STORE_SUBSCR",), lambda: self.m.setdefault("k", "theirs"))
        try:
            mine = self.m.setdefault("k", "mine")
        finally:
            done()
        stored = self.m["k"]
        self.assertEqual(mine, stored)
        for theirs in fired:  # the other caller was told the same value
            self.assertEqual(theirs, stored)
        self.assertEqual(self.m.setdefault("k", "again"), stored)
        self.assertEqual(self.m.setdefault("k"), stored)
        with self.assertRaises(TypeError):  # None cannot be stored
            self.m.setdefault("absent")

    def test_pop_with_default_never_raises(self):
        self.m["tok"] = "once"
        fired, done = self._between(
            "pop", ("DELETE_SUBSCR",), lambda: self.m.pop("tok", None))
        try:
            mine = self.m.pop("tok", None)
        finally:
            done()
        got = [v for v in [mine] + fired if v is not None]
        self.assertEqual(got, [b"once"])  # taken exactly once
        self.assertNotIn("tok", self.m)
        self.assertIsNone(self.m.pop("tok", None))
        with self.assertRaises(KeyError):
            self.m.pop("tok")

    def test_popitem_skips_what_others_took(self):
        self.m["a"] = "1"
        self.m["b"] = "2"
        # The other process takes whichever key popitem picked first.
        fired, done = self._between(
            "popitem", ("BINARY_SUBSCR",),
            lambda: [self.m.pop(k, None) for k in list(self.m.keys())[:1]])
        try:
            item = self.m.popitem()
        finally:
            done()
        self.assertIn(item, [(b"a", b"1"), (b"b", b"2")])
        self.assertEqual(len(self.m), 2 - 1 - len(fired))
        while len(self.m):
            self.m.popitem()
        with self.assertRaises(KeyError):
            self.m.popitem()

    def test_setdefault_from_two_processes(self):
        # Forked processes (a pre-fork server's workers) call setdefault on
        # the same fresh keys at once: each must get back what the map keeps.
        n = 3000
        go_r, go_w = os.pipe()
        pids = []
        for who in ("A", "B"):
            pid = os.fork()
            if pid == 0:  # child: only os._exit leaves it
                code = 1
                try:
                    os.read(go_r, 1)
                    for i in range(n):
                        got = self.m.setdefault("k%d" % i, who)
                        if isinstance(got, str):
                            got = got.encode()
                        self.m["seen-%s-%d" % (who, i)] = got
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        os.write(go_w, b"go")
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        os.close(go_r)
        os.close(go_w)
        bad = [i for i in range(n) for who in "AB"
               if self.m["seen-%s-%d" % (who, i)] != self.m["k%d" % i]]
        self.assertEqual(bad, [], "setdefault returned a value the map does not keep")


class TestWalkWait(unittest.TestCase):
    """Run by tests/check_python.c's walk_lets_other_threads_run, which
    holds the stripe of key "w" of the map named by $SHMMAP_WALK_MAP as a
    writer stopped in mid-write would (its lock held, its seq odd), and
    lets it go once this process's walk has waited for it 300 ms."""

    @unittest.skipUnless(os.environ.get("SHMMAP_WALK_MAP"), "run by check_python's walk test")
    def test_walk_lets_other_threads_run(self):
        c = shmmap.attach()
        m = c.open(os.environ["SHMMAP_WALK_MAP"])
        keys, ticks = ticks_during(m.keys)
        self.assertIn(b"w", keys)
        # 300 ms of waiting: the ticker ran meanwhile (it froze before).
        self.assertGreater(ticks, 10)
        c.detach()


class TestForkWait(unittest.TestCase):
    """Run by tests/check_python.c's fork_reattach_lets_other_threads_run,
    which names its coordinator's pid in $SHMMAP_COORD_PID: a forked
    child's first call re-attaches (a round trip to the coordinator), and
    while the coordinator is stopped that waits; the child's other threads
    must run meanwhile (the call let the GIL go)."""

    @unittest.skipUnless(os.environ.get("SHMMAP_COORD_PID"), "run by check_python's fork test")
    def test_first_call_in_child_lets_other_threads_run(self):
        import signal
        import select
        coord = int(os.environ["SHMMAP_COORD_PID"])
        c = shmmap.attach()
        m = c.open(unique("forkwait"))
        m[b"k"] = b"v"
        r, w = os.pipe()
        os.kill(coord, signal.SIGSTOP)
        try:
            pid = os.fork()
            if pid == 0:  # the child: one thread ticks while the other's get waits
                code = 3
                try:
                    def first_call():
                        os.write(w, b"g")  # the window starts now
                        return m.get(b"k")
                    got, ticks = ticks_during(first_call)
                    print("child: get gave %r, the ticker ran %d times meanwhile"
                          % (got, ticks), flush=True)
                    code = 0 if got == b"v" and ticks > 10 else 1
                finally:
                    os._exit(code)
            os.close(w)
            ready, _, _ = select.select([r], [], [], 10.0)
            self.assertTrue(ready, "the child never made its first call")
            # The window the child's ticker must run in while its get waits
            # on the stopped coordinator (not a wait for it).
            time.sleep(0.3)
        finally:
            os.kill(coord, signal.SIGCONT)
        end = time.monotonic() + 20.0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > end:
                break
            time.sleep(0.01)
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.assertTrue(done, "the child did not finish")
        self.assertEqual(os.waitstatus_to_exitcode(status), 0,
                         "the child's first call kept the GIL while it waited (see its output)")
        self.assertEqual(m.get(b"k"), b"v")
        c.drop(m.name)
        c.detach()


if __name__ == "__main__":
    unittest.main(verbosity=2)
