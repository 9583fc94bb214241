/*
 * shmmapmodule.c - the Python binding: the CPython extension module `shmmap`,
 * written against the C API and the public libshmmap API (include/shmmap.h)
 * only.
 *
 *   shmmap.attach(socket=None) -> Client        (also shmmap.Client(socket))
 *   Client.open(name, create=True) -> Map       Client.drop(name)
 *   Client.detach(), with Client as c: ...
 *   Map: a collections.abc.MutableMapping of bytes to bytes (str keys and
 *   values are encoded as UTF-8, any bytes-like object is accepted), plus
 *   get, put(k, v, ttl=0, nx=False, xx=False), incr, cas, stats, flush,
 *   and pop, setdefault and popitem of its own (safe against other
 *   processes, unlike the mixins).
 *   Errors: shmmap.Error(OSError), with errno the library's (its own codes
 *   are the constants EBADSEG, EVERSION, ECORRUPT, EDETACHED, ESEGSIZE),
 *   and its subclasses that are also the
 *   standard OSError subclasses of their errno (shmmap.FileNotFoundError is
 *   both a shmmap.Error and a FileNotFoundError); a missing key in m[k] and
 *   del m[k] is a KeyError.
 *
 * Types: Client (one attachment) and MapBase (one map handle) are static C
 * types.  The type users see, shmmap.Map, is made at module init as
 * `class Map(MapBase, collections.abc.MutableMapping): __slots__ = ()`: the
 * C slots come first in its MRO (m[k] goes straight to map_subscript), the
 * ABC supplies update, ==, and isinstance() (pop, popitem and setdefault
 * are our own: see take()).
 *
 * The GIL and the lifetime of an attachment (invariants):
 *   - The GIL is released around the calls that talk to the coordinator
 *     (attach, open, drop, flush, detach) and around copies of values of
 *     at least GIL_COPY_MIN bytes (get, put, cas).  Small data calls keep
 *     it: releasing and taking it back costs more than the call (measured,
 *     see the README's Python section).  But a small call that has to wait
 *     for a lock another process holds (as long as that process is
 *     stopped) releases it before it sleeps: see small_begin().
 *   - Client.sm may be used while the GIL is released, or while Python code
 *     may run (an allocation may run a finalizer that detaches), only
 *     between client_hold() and client_release(): busy counts those uses,
 *     and detach() while busy > 0 only marks the client closing; the last
 *     client_release() detaches.  A use that runs no Python code between
 *     reading Client.sm and the library call's return needs no hold.
 *   - No per-process state: busy counts uses by threads of this process,
 *     and a forked child has only the forking thread, so a child resets
 *     busy (forkgen, bumped by a pthread_atfork child handler) instead of
 *     waiting for threads that do not exist there.  Nothing here knows a
 *     pid; the library itself makes an inherited attachment work in the
 *     child.  There is no lock of our own: busy and closing change only
 *     under the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "shmmap.h"

/* Values up to this size are read into a stack buffer and copied into one
 * new bytes object; a longer one is read again, straight into a bytes
 * object of the size the first get reported (-ENOBUFS).  Measured on 1 KB
 * to 6 KB values: 2 KiB and 8 KiB buffers cost the same (a second lookup
 * of a hot entry against a second copy), so one page. */
#ifndef STACK_VALUE
#define STACK_VALUE 4096
#endif
/* Copies of at least this many bytes are made without the GIL.  Measured
 * with two threads reading one value: 128 KiB copies lose 35-60% of their
 * throughput to the GIL hand-over when it is released, 256 KiB break even,
 * 512 KiB and 1 MiB gain 1.7x to 1.9x. */
#ifndef GIL_COPY_MIN
#define GIL_COPY_MIN (256 * 1024)
#endif

PyMODINIT_FUNC PyInit_shmmap(void);

static PyObject *Error;        /* shmmap.Error */
static PyObject *errno_types;  /* dict: errno -> subclass of Error */
static PyTypeObject *MapType;  /* shmmap.Map, a subclass of MapBase */
static unsigned long forkgen;  /* bumped in every forked child */

/* ---- errors ---- */

/* Raise the exception for the library's result rc (< 0), with name (may be
 * NULL) as its filename, like OSError's.  Its message is shmmap_strerror()
 * and, where the library has them, the particulars (shmmap_errdetail():
 * the socket path, the coordinator's reason): after a call that talks to
 * the coordinator (coord), or a data call whose first use in a forked
 * child had to re-attach.  The call ran on this thread, so the detail,
 * which is per thread, is that call's.
 *
 * -EAGAIN also comes from the data path (an allocator lock awaiting
 * repair), which leaves the detail as it was: a data call gets it for
 * -EAGAIN only when it was its client's first in a forked child
 * (t_child_first, set by client_live), so that the re-attach ran in it
 * (no free client slot). */
static _Thread_local int t_child_first;
static void *raise_rc_detail(int rc, PyObject *name, int coord);

static void *raise_rc(int rc, PyObject *name)
{
	return raise_rc_detail(rc, name, 0);
}

static void *raise_rc_detail(int rc, PyObject *name, int coord)
{
	int e = -rc;
	PyObject *num = PyLong_FromLong(e);
	if (!num)
		return NULL;
	PyObject *type = PyDict_GetItemWithError(errno_types, num);
	Py_DECREF(num);
	if (!type) {
		if (PyErr_Occurred())
			return NULL;
		type = Error;
	}
	const char *detail = shmmap_errdetail();
	int with = detail[0] && (coord || rc == -ECONNREFUSED || rc == -SHMMAP_EDETACHED ||
				 rc == -ETIMEDOUT || rc == -EACCES || (rc == -EAGAIN && t_child_first));
	PyObject *msg = with ? PyUnicode_FromFormat("%s: %s", shmmap_strerror(rc), detail)
			     : PyUnicode_FromString(shmmap_strerror(rc));
	if (!msg)
		return NULL;
	PyObject *args = name ? Py_BuildValue("(iNO)", e, msg, name) : Py_BuildValue("(iN)", e, msg);
	if (args) {
		PyErr_SetObject(type, args);
		Py_DECREF(args);
	}
	return NULL;
}

/* ---- bytes-like arguments ---- */

struct bytes_arg {
	const char *p;
	Py_ssize_t n;
	Py_buffer view;
	int has_view;
};

/* bytes (the fast path), str (UTF-8, kept by the str object), or any
 * object with a contiguous buffer (held until arg_done). */
static int arg_bytes(PyObject *o, struct bytes_arg *a, const char *what)
{
	a->has_view = 0;
	if (PyBytes_Check(o)) {
		a->p = PyBytes_AS_STRING(o);
		a->n = PyBytes_GET_SIZE(o);
		return 0;
	}
	if (PyUnicode_Check(o)) {
		a->p = PyUnicode_AsUTF8AndSize(o, &a->n);
		return a->p ? 0 : -1;
	}
	if (PyObject_CheckBuffer(o)) {
		if (PyObject_GetBuffer(o, &a->view, PyBUF_SIMPLE) < 0)
			return -1;
		a->has_view = 1;
		a->p = a->view.buf;
		a->n = a->view.len;
		return 0;
	}
	PyErr_Format(PyExc_TypeError, "%s must be bytes, str or bytes-like, not %.100s", what,
		     Py_TYPE(o)->tp_name);
	return -1;
}

static void arg_done(struct bytes_arg *a)
{
	if (a->has_view)
		PyBuffer_Release(&a->view);
}

/* A ttl in whole seconds, 0..UINT32_MAX (0: never expires). */
static int arg_ttl(PyObject *o, uint32_t *out)
{
	if (!o || o == Py_None) {
		*out = 0;
		return 0;
	}
	if (!PyLong_Check(o)) {
		PyErr_Format(PyExc_TypeError, "ttl must be an int, not %.100s", Py_TYPE(o)->tp_name);
		return -1;
	}
	int over = 0;
	long long v = PyLong_AsLongLongAndOverflow(o, &over);
	if (v == -1 && PyErr_Occurred())
		return -1;
	if (over || v < 0 || v > (long long)UINT32_MAX) {
		PyErr_SetString(PyExc_ValueError, "ttl must be 0..4294967295 seconds");
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

/* A map name: str (UTF-8) or bytes, as a bytes object without NUL. */
static PyObject *arg_name(PyObject *o)
{
	PyObject *b;
	if (PyUnicode_Check(o))
		b = PyUnicode_AsUTF8String(o);
	else if (PyBytes_Check(o))
		b = Py_NewRef(o);
	else
		return PyErr_Format(PyExc_TypeError, "map name must be str or bytes, not %.100s",
				    Py_TYPE(o)->tp_name);
	if (b && memchr(PyBytes_AS_STRING(b), 0, (size_t)PyBytes_GET_SIZE(b))) {
		Py_DECREF(b);
		PyErr_SetString(PyExc_ValueError, "map name contains a NUL byte");
		return NULL;
	}
	return b;
}

/* Sort the arguments of a METH_FASTCALL | METH_KEYWORDS call into slots[]
 * (zeroed by the caller) by position and keyword; the first `required`
 * must be given.  Cheaper than PyArg_ParseTupleAndKeywords, which builds a
 * tuple and a dict (measured: m.put(k, v) 121 -> 107 ns a call, and
 * m.put(k, v, ttl=60) 232 -> 178 ns). */
static int fast_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwn,
		     const char *const *names, PyObject **slots, int nslots, int required)
{
	if (nargs > nslots) {
		PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn,
			     nslots, nargs);
		return -1;
	}
	for (Py_ssize_t i = 0; i < nargs; i++)
		slots[i] = args[i];
	Py_ssize_t nkw = kwn ? PyTuple_GET_SIZE(kwn) : 0;
	for (Py_ssize_t j = 0; j < nkw; j++) {
		PyObject *name = PyTuple_GET_ITEM(kwn, j);
		int i = 0;
		while (i < nslots && PyUnicode_CompareWithASCIIString(name, names[i]) != 0)
			i++;
		if (i == nslots) {
			PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R",
				     fn, name);
			return -1;
		}
		if (slots[i]) {
			PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
				     fn, names[i]);
			return -1;
		}
		slots[i] = args[nargs + j];
	}
	for (int i = 0; i < required; i++) {
		if (!slots[i]) {
			PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn,
				     names[i]);
			return -1;
		}
	}
	return 0;
}

/* An optional flag argument: false when absent. */
static int arg_flag(PyObject *o)
{
	return o ? PyObject_IsTrue(o) : 0;
}

/* ---- Client ---- */

typedef struct {
	PyObject_HEAD
	shmmap *sm;             /* NULL once detached */
	Py_ssize_t busy;        /* uses of sm in flight (see the head) */
	int closing;            /* detach() was called */
	unsigned long forkgen;  /* of busy */
	unsigned long usegen;   /* forkgen at the last use (client_live) */
} Client;

static PyTypeObject ClientType;

static void fork_child(void)
{
	forkgen++;
}

static Py_ssize_t *busy_of(Client *c)
{
	if (c->forkgen != forkgen) {
		c->forkgen = forkgen; /* a child: the threads counted are in the parent */
		c->busy = 0;
	}
	return &c->busy;
}

/* Every use of c starts here; so the first one in a forked child is seen
 * here (t_child_first, for raise_rc_detail). */
static shmmap *client_live(Client *c)
{
	if (!c->sm || c->closing) {
		PyErr_SetString(PyExc_ValueError, "operation on a detached shmmap client");
		return NULL;
	}
	t_child_first = c->usegen != forkgen;
	c->usegen = forkgen;
	return c->sm;
}

/* Detach c's attachment, without the GIL: detaching may wait for the
 * coordinator (a stopped one: seconds) or for an allocator lock of the
 * segment (to give back the slot's spare blocks).  c->sm is NULL before
 * the GIL goes, so other threads see a detached client meanwhile. */
static void client_close(Client *c)
{
	shmmap *sm = c->sm;
	c->sm = NULL;
	if (!sm)
		return;
	Py_BEGIN_ALLOW_THREADS
	shmmap_detach(sm);
	Py_END_ALLOW_THREADS
}

static shmmap *client_hold(Client *c)
{
	shmmap *sm = client_live(c);
	if (sm)
		++*busy_of(c);
	return sm;
}

static void client_release(Client *c)
{
	if (--*busy_of(c) == 0 && c->closing)
		client_close(c);
}

/* ---- small calls that may wait for another process ----
 * A small data call keeps the GIL, but it may have to wait for a lock of
 * the segment that another process holds, for as long as that process is
 * stopped (SIGSTOP, a debugger): the whole interpreter froze with it (its
 * other threads, a gthread server's other requests).  The library calls
 * wait_hook() before it sleeps on a lock (shmmap_set_wait_hook); inside
 * small_begin() .. small_end() that releases the GIL, and small_end()
 * takes it back once the call has returned (not in the hook: the call may
 * hold a lock of the segment by then, and other processes would wait for
 * this one's GIL).  The client is held meanwhile, as around any call
 * without the GIL (another thread may detach it). */
static _Thread_local int t_armed;            /* in small_begin .. small_end */
static _Thread_local PyThreadState *t_saved; /* the hook released the GIL */

static void wait_hook(void)
{
	if (t_armed && !t_saved)
		t_saved = PyEval_SaveThread();
}

/* The GIL back, if the hook let it go (and the hook off). */
static void small_disarm(void)
{
	t_armed = 0;
	if (t_saved) {
		PyThreadState *ts = t_saved;
		t_saved = NULL;
		PyEval_RestoreThread(ts);
	}
}

/* A small call on c begins: its attachment, held, or NULL (a Python
 * error set). */
static shmmap *small_begin(Client *c)
{
	shmmap *sm = client_hold(c);
	if (sm)
		t_armed = 1;
	return sm;
}

static void small_end(Client *c)
{
	small_disarm();
	client_release(c);
}

/* The library's: runs the wait hook as a lock wait would (linked in
 * statically, like the rest of libshmmap). */
void shmmap__wait_hook_run(void);

/* shmmap._wait_hook_test(seconds): a lock wait of that long inside a small
 * call, for the tests: the GIL is let go for it. */
static PyObject *mod_wait_hook_test(PyObject *mod, PyObject *arg)
{
	(void)mod;
	double s = PyFloat_AsDouble(arg);
	if (s == -1.0 && PyErr_Occurred())
		return NULL;
	if (!(s >= 0 && s <= 10))
		return PyErr_Format(PyExc_ValueError, "seconds must be in 0..10");
	t_armed = 1;
	shmmap__wait_hook_run();
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	small_disarm();
	Py_RETURN_NONE;
}

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"socket", NULL};
	PyObject *sock = Py_None, *path = NULL;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:attach", kwlist, &sock))
		return NULL;
	if (sock != Py_None && !PyUnicode_FSConverter(sock, &path))
		return NULL;
	Client *c = (Client *)type->tp_alloc(type, 0);
	if (!c) {
		Py_XDECREF(path);
		return NULL;
	}
	c->forkgen = forkgen;
	c->usegen = forkgen;
	const char *p = path ? PyBytes_AS_STRING(path) : NULL;
	shmmap *sm = NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = shmmap_attach(p, &sm);
	Py_END_ALLOW_THREADS
	Py_XDECREF(path);
	if (rc < 0) {
		Py_DECREF(c);
		return raise_rc_detail(rc, sock == Py_None ? NULL : sock, 1);
	}
	c->sm = sm;
	return (PyObject *)c;
}

static void client_dealloc(Client *c)
{
	/* Nothing can be in flight: every use holds a reference. */
	client_close(c);
	Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *client_detach(Client *c, PyObject *unused)
{
	(void)unused;
	if (c->sm && !c->closing) {
		c->closing = 1;
		if (*busy_of(c) == 0)
			client_close(c);
	}
	Py_RETURN_NONE;
}

static PyObject *client_enter(PyObject *self, PyObject *unused)
{
	(void)unused;
	return Py_NewRef(self);
}

static PyObject *client_exit(Client *c, PyObject *args)
{
	(void)args;
	Py_XDECREF(client_detach(c, NULL));
	Py_RETURN_FALSE;
}

static PyObject *client_get_detached(Client *c, void *unused)
{
	(void)unused;
	return PyBool_FromLong(!c->sm || c->closing);
}

typedef struct {
	PyObject_HEAD
	Client *client;
	shmmap_map h;
	PyObject *name; /* str */
} MapObj;

static PyTypeObject MapBaseType;

/* open(name, create=True, **options): options are checked against the
 * (for now empty) list of per-map options of the C API. */
static PyObject *client_open(Client *c, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"name", "create", NULL};
	PyObject *name, *create = Py_True, *known = NULL;
	if (kw) {
		/* Per-map options would be taken out of kw here; none exist yet. */
		Py_ssize_t pos = 0;
		PyObject *k, *v;
		while (PyDict_Next(kw, &pos, &k, &v)) {
			if (PyUnicode_Check(k) && (PyUnicode_CompareWithASCIIString(k, "name") == 0 ||
						   PyUnicode_CompareWithASCIIString(k, "create") == 0))
				continue;
			return PyErr_Format(PyExc_TypeError,
					    "open() got an unknown option %R (it takes none yet)", k);
		}
		known = kw;
	}
	if (!PyArg_ParseTupleAndKeywords(args, known, "O|O:open", kwlist, &name, &create))
		return NULL;
	int cr = PyObject_IsTrue(create);
	if (cr < 0)
		return NULL;
	PyObject *nb = arg_name(name);
	if (!nb)
		return NULL;
	PyObject *sname = PyUnicode_Check(name) ? Py_NewRef(name)
				: PyUnicode_DecodeUTF8(PyBytes_AS_STRING(nb), PyBytes_GET_SIZE(nb),
						       "backslashreplace");
	shmmap *sm = sname ? client_hold(c) : NULL;
	if (!sm) {
		Py_DECREF(nb);
		Py_XDECREF(sname);
		return NULL;
	}
	shmmap_map h;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = shmmap_open(sm, PyBytes_AS_STRING(nb), cr ? SHMMAP_CREATE : 0, &h);
	Py_END_ALLOW_THREADS
	client_release(c);
	Py_DECREF(nb);
	if (rc < 0) {
		raise_rc_detail(rc, sname, 1);
		Py_DECREF(sname);
		return NULL;
	}
	MapObj *m = (MapObj *)MapType->tp_alloc(MapType, 0);
	if (!m) {
		Py_DECREF(sname);
		return NULL;
	}
	m->client = (Client *)Py_NewRef(c);
	m->h = h;
	m->name = sname;
	return (PyObject *)m;
}

static PyObject *client_drop(Client *c, PyObject *name)
{
	PyObject *nb = arg_name(name);
	if (!nb)
		return NULL;
	shmmap *sm = client_hold(c);
	if (!sm) {
		Py_DECREF(nb);
		return NULL;
	}
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = shmmap_drop(sm, PyBytes_AS_STRING(nb));
	Py_END_ALLOW_THREADS
	client_release(c);
	Py_DECREF(nb);
	if (rc < 0)
		return raise_rc_detail(rc, name, 1);
	Py_RETURN_NONE;
}

/* Client and Map do not pickle: an attachment is this process's (its
 * slot, its mapping); say what to do instead of "cannot pickle". */
static PyObject *no_pickle(PyObject *self, PyObject *unused)
{
	(void)unused;
	return PyErr_Format(PyExc_TypeError,
			    "cannot pickle a %s: an attachment belongs to its process; "
			    "with multiprocessing's spawn or forkserver start methods, attach "
			    "and open the map in the child (a pool initializer), or create "
			    "the pool with the fork start method after attaching",
			    Py_TYPE(self) == &ClientType ? "shmmap.Client" : "shmmap.Map");
}

static PyMethodDef client_methods[] = {
	{"open", (PyCFunction)(void (*)(void))client_open, METH_VARARGS | METH_KEYWORDS,
	 "open(name, create=True) -> Map\n\n"
	 "A handle to the map called name (str or bytes, 1..63 bytes), created\n"
	 "if create is true and it does not exist (else FileNotFoundError).\n"
	 "Per-map options will be keyword arguments; there are none yet, and an\n"
	 "unknown one raises TypeError."},
	{"drop", (PyCFunction)client_drop, METH_O,
	 "drop(name)\n\nDelete the map called name and its entries; every handle to it\n"
	 "in every process fails with errno ESTALE from then on."},
	{"detach", (PyCFunction)client_detach, METH_NOARGS,
	 "detach()\n\nDetach (idempotent). Calls still running in other threads finish\n"
	 "first; later calls on this client or its maps raise ValueError."},
	{"__enter__", client_enter, METH_NOARGS, NULL},
	{"__reduce__", no_pickle, METH_NOARGS, NULL},
	{"__exit__", (PyCFunction)client_exit, METH_VARARGS, NULL},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef client_getset[] = {
	{"detached", (getter)client_get_detached, NULL, "True once detach() was called", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ClientType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "shmmap.Client",
	.tp_basicsize = sizeof(Client),
	.tp_dealloc = (destructor)client_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Client(socket=None): one attachment to a shmmap coordinator.\n\n"
		  "socket: the coordinator's Unix socket path; None (or \"\") means\n"
		  "$SHMMAP_SOCKET, then the default: DEFAULT_SOCKET for root (or a user\n"
		  "who may write /run/shmmap), else $XDG_RUNTIME_DIR/shmmap/shmmap.sock\n"
		  "where a coordinator of this user's listens, else DEFAULT_SOCKET.\n"
		  "Usable from several threads, and in a\n"
		  "child after fork() (the library re-attaches it there).",
	.tp_methods = client_methods,
	.tp_getset = client_getset,
	.tp_new = client_new,
};

/* ---- Map ---- */

static void map_dealloc(MapObj *m)
{
	Py_XDECREF(m->client);
	Py_XDECREF(m->name);
	Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *map_repr(MapObj *m)
{
	return PyUnicode_FromFormat("<shmmap.Map %R>", m->name);
}

/* The value under key, or NULL with *rc < 0 from the library (no Python
 * error set), or NULL with *rc == 0 and a Python error. */
static PyObject *value_of(MapObj *m, const struct bytes_arg *k, int *rc)
{
	Client *c = m->client;
	shmmap *sm = small_begin(c);
	*rc = 0;
	if (!sm)
		return NULL;
	char buf[STACK_VALUE];
	size_t n = 0;
	int r = shmmap_get(sm, m->h, k->p, (size_t)k->n, buf, sizeof buf, &n);
	small_end(c);
	if (r == 0)
		return PyBytes_FromStringAndSize(buf, (Py_ssize_t)n);
	/* Longer than the stack buffer: read it into a bytes object of the
	 * size reported, again if it grew meanwhile. */
	while (r == -ENOBUFS) {
		if (n > PY_SSIZE_T_MAX)
			return PyErr_NoMemory();
		PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
		if (!b || !(sm = client_hold(c))) {
			Py_XDECREF(b);
			return NULL;
		}
		size_t cap = n;
		char *p = PyBytes_AS_STRING(b);
		if (cap >= GIL_COPY_MIN) {
			Py_BEGIN_ALLOW_THREADS
			r = shmmap_get(sm, m->h, k->p, (size_t)k->n, p, cap, &n);
			Py_END_ALLOW_THREADS
		} else {
			t_armed = 1;
			r = shmmap_get(sm, m->h, k->p, (size_t)k->n, p, cap, &n);
			small_disarm();
		}
		client_release(c);
		if (r == 0 && (n == cap || _PyBytes_Resize(&b, (Py_ssize_t)n) == 0))
			return b;
		if (r == 0)
			return NULL; /* the resize failed and freed b */
		Py_DECREF(b);
	}
	/* A key longer than the map's key_max cannot be in it: a read answers
	 * absent, as a dict does for any key it lacks (keys from URLs, say);
	 * a write of it still raises E2BIG. */
	*rc = r == -E2BIG ? -ENOENT : r;
	return NULL;
}

static PyObject *map_subscript(MapObj *m, PyObject *key)
{
	struct bytes_arg k;
	if (arg_bytes(key, &k, "key") < 0)
		return NULL;
	int rc;
	PyObject *v = value_of(m, &k, &rc);
	arg_done(&k);
	if (rc == -ENOENT)
		PyErr_SetObject(PyExc_KeyError, key);
	else if (rc < 0)
		raise_rc(rc, NULL);
	return v;
}

/* Store a value (put, or cas when exp is not NULL); the GIL is released
 * for long values.  Returns the library's result, or 1 with a Python error. */
static int store(MapObj *m, const struct bytes_arg *k, const struct bytes_arg *exp,
		 const struct bytes_arg *v, uint32_t ttl, unsigned flags)
{
	Client *c = m->client;
	int rc;
	size_t len = (size_t)v->n + (exp ? (size_t)exp->n : 0);
	/* (One client_live per call: a second would forget t_child_first.) */
	shmmap *sm = len < GIL_COPY_MIN ? small_begin(c) : client_hold(c);
	if (!sm)
		return 1;
	if (len < GIL_COPY_MIN) {
		if (exp)
			rc = shmmap_cas(sm, m->h, k->p, (size_t)k->n, exp->p, (size_t)exp->n, v->p,
					(size_t)v->n, ttl);
		else
			rc = shmmap_put(sm, m->h, k->p, (size_t)k->n, v->p, (size_t)v->n, ttl,
					flags);
		small_end(c);
		return rc;
	}
	Py_BEGIN_ALLOW_THREADS
	if (exp)
		rc = shmmap_cas(sm, m->h, k->p, (size_t)k->n, exp->p, (size_t)exp->n, v->p,
				(size_t)v->n, ttl);
	else
		rc = shmmap_put(sm, m->h, k->p, (size_t)k->n, v->p, (size_t)v->n, ttl, flags);
	Py_END_ALLOW_THREADS
	client_release(c);
	return rc;
}

static int map_ass_subscript(MapObj *m, PyObject *key, PyObject *val)
{
	struct bytes_arg k, v;
	if (arg_bytes(key, &k, "key") < 0)
		return -1;
	int rc;
	if (val) {
		if (arg_bytes(val, &v, "value") < 0) {
			arg_done(&k);
			return -1;
		}
		rc = store(m, &k, NULL, &v, 0, 0);
		arg_done(&v);
	} else {
		shmmap *sm = small_begin(m->client);
		rc = sm ? shmmap_del(sm, m->h, k.p, (size_t)k.n) : 1;
		if (sm)
			small_end(m->client);
	}
	arg_done(&k);
	if (rc == 0)
		return 0;
	if ((rc == -ENOENT || rc == -E2BIG) && !val) /* (too long to be a key) */
		PyErr_SetObject(PyExc_KeyError, key);
	else if (rc < 0)
		raise_rc(rc, NULL);
	return -1;
}

static int map_contains(MapObj *m, PyObject *key)
{
	struct bytes_arg k;
	if (arg_bytes(key, &k, "key") < 0)
		return -1;
	shmmap *sm = small_begin(m->client);
	int rc = sm ? shmmap_get(sm, m->h, k.p, (size_t)k.n, NULL, 0, NULL) : 1;
	if (sm)
		small_end(m->client);
	arg_done(&k);
	if (rc == 0 || rc == -ENOBUFS)
		return 1;
	if (rc == -ENOENT || rc == -E2BIG) /* (too long to be a key: see value_of) */
		return 0;
	if (rc < 0)
		raise_rc(rc, NULL);
	return -1;
}

static int map_stats_of(MapObj *m, struct shmmap_stats *st)
{
	shmmap *sm = client_live(m->client);
	if (!sm)
		return -1;
	int rc = shmmap_stats(sm, m->h, st);
	if (rc < 0) {
		raise_rc(rc, NULL);
		return -1;
	}
	return 0;
}

static Py_ssize_t map_length(MapObj *m)
{
	struct shmmap_stats st;
	if (map_stats_of(m, &st) < 0)
		return -1;
	return st.entries > (uint64_t)PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)st.entries;
}

/* keys(), values(), items() and iteration: one walk of the map. */
enum { WANT_KEYS, WANT_VALUES, WANT_ITEMS };

struct collect {
	PyObject *list;
	int want;
};

/* Called outside any lock of the segment (shmmap_foreach): the GIL back
 * if the walk's wait hook let it go, and the hook armed again after. */
static int collect_entry(struct collect *cl, const void *key, size_t klen, const void *val,
			 size_t vlen)
{
	PyObject *o = NULL, *k = NULL, *v = NULL;
	if (cl->want != WANT_VALUES && !(k = PyBytes_FromStringAndSize(key, (Py_ssize_t)klen)))
		return 1;
	if (cl->want != WANT_KEYS && !(v = PyBytes_FromStringAndSize(val, (Py_ssize_t)vlen))) {
		Py_XDECREF(k);
		return 1;
	}
	if (cl->want == WANT_ITEMS) {
		o = PyTuple_Pack(2, k, v);
		Py_DECREF(k);
		Py_DECREF(v);
	} else {
		o = k ? k : v;
	}
	if (!o)
		return 1;
	int rc = PyList_Append(cl->list, o);
	Py_DECREF(o);
	return rc < 0 ? 1 : 0;
}

static int collect_one(const void *key, size_t klen, const void *val, size_t vlen,
		       uint64_t expire_ms, void *arg)
{
	(void)expire_ms;
	small_disarm();
	int rc = collect_entry(arg, key, klen, val, vlen);
	t_armed = 1;
	return rc;
}

static PyObject *map_collect(MapObj *m, int want)
{
	struct collect cl = {PyList_New(0), want};
	if (!cl.list)
		return NULL;
	/* Held: the callback allocates, and a finalizer may detach. */
	shmmap *sm = client_hold(m->client);
	if (!sm) {
		Py_DECREF(cl.list);
		return NULL;
	}
	/* The walk may wait for another process's stripe lock (a stopped
	 * writer's): armed, as a small call is, so that the wait lets the
	 * GIL go; the callback takes it back for its Python objects. */
	t_armed = 1;
	int rc = shmmap_foreach(sm, m->h, collect_one, &cl);
	small_disarm();
	client_release(m->client);
	if (rc == 0)
		return cl.list;
	Py_DECREF(cl.list);
	return rc < 0 ? raise_rc(rc, NULL) : NULL;
}

static PyObject *map_iter(MapObj *m)
{
	PyObject *keys = map_collect(m, WANT_KEYS);
	if (!keys)
		return NULL;
	PyObject *it = PyObject_GetIter(keys);
	Py_DECREF(keys);
	return it;
}

static PyObject *map_keys(MapObj *m, PyObject *unused)
{
	(void)unused;
	return map_collect(m, WANT_KEYS);
}

static PyObject *map_values(MapObj *m, PyObject *unused)
{
	(void)unused;
	return map_collect(m, WANT_VALUES);
}

static PyObject *map_items(MapObj *m, PyObject *unused)
{
	(void)unused;
	return map_collect(m, WANT_ITEMS);
}

static PyObject *map_get(MapObj *m, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs < 1 || nargs > 2)
		return PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd",
				    nargs);
	struct bytes_arg k;
	if (arg_bytes(args[0], &k, "key") < 0)
		return NULL;
	int rc;
	PyObject *v = value_of(m, &k, &rc);
	arg_done(&k);
	if (rc == -ENOENT)
		return Py_NewRef(nargs > 1 ? args[1] : Py_None);
	if (rc < 0)
		raise_rc(rc, NULL);
	return v;
}

/* pop, setdefault and popitem of our own: the MutableMapping mixins are a
 * get and a delete (or a put) with other processes between them.  Their
 * pop(k, d) raised KeyError when another process deleted k in between,
 * their setdefault could return a value that another process's overwrote
 * (both setdefault(k, own) calls got their own value back), and popitem
 * raised KeyError, "empty", while other processes took keys of a map that
 * still had more. */

/* Take the value under key: read it, then delete it; only the process
 * whose delete removed the entry gets it.  NULL with *rc == -ENOENT (no
 * Python error) when it is absent or another process took it first. */
static PyObject *take(MapObj *m, PyObject *key, int *rc)
{
	struct bytes_arg k;
	*rc = 0;
	if (arg_bytes(key, &k, "key") < 0)
		return NULL;
	PyObject *v = value_of(m, &k, rc);
	if (v) {
		shmmap *sm = small_begin(m->client);
		int r = sm ? shmmap_del(sm, m->h, k.p, (size_t)k.n) : 1;
		if (sm)
			small_end(m->client);
		if (r != 0) {
			Py_DECREF(v);
			v = NULL;
			if (r < 0)
				*rc = r;
		}
	}
	arg_done(&k);
	return v;
}

static PyObject *map_pop(MapObj *m, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs < 1 || nargs > 2)
		return PyErr_Format(PyExc_TypeError, "pop expected 1 or 2 arguments, got %zd",
				    nargs);
	int rc;
	PyObject *v = take(m, args[0], &rc);
	if (v || (rc == 0 && PyErr_Occurred()))
		return v;
	if (rc == -ENOENT) {
		if (nargs > 1)
			return Py_NewRef(args[1]);
		PyErr_SetObject(PyExc_KeyError, args[0]);
		return NULL;
	}
	return raise_rc(rc, NULL);
}

static PyObject *map_setdefault(MapObj *m, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs < 1 || nargs > 2)
		return PyErr_Format(PyExc_TypeError, "setdefault expected 1 or 2 arguments, got %zd",
				    nargs);
	/* default is None if not given: fine while key is present, a
	 * TypeError (not storable) once it has to be stored. */
	PyObject *dflt = nargs > 1 ? args[1] : Py_None;
	struct bytes_arg k, d = {0};
	int have_d = 0;
	if (arg_bytes(args[0], &k, "key") < 0)
		return NULL;
	PyObject *ret = NULL;
	for (;;) {
		int rc;
		PyObject *v = value_of(m, &k, &rc);
		if (v || rc == 0) { /* present, or a Python error */
			ret = v;
			break;
		}
		if (rc != -ENOENT) {
			raise_rc(rc, NULL);
			break;
		}
		/* Absent: store default unless another process stores first;
		 * then read what it stored (or go round if it is gone again). */
		if (!have_d) {
			if (arg_bytes(dflt, &d, "value") < 0)
				break;
			have_d = 1;
		}
		rc = store(m, &k, NULL, &d, 0, SHMMAP_NX);
		if (rc == 0) { /* what the map keeps: bytes, as a get gives them */
			ret = PyBytes_CheckExact(dflt) ? Py_NewRef(dflt)
						       : PyBytes_FromStringAndSize(d.p, d.n);
			break;
		}
		if (rc != -EEXIST) {
			if (rc < 0)
				raise_rc(rc, NULL);
			break;
		}
	}
	if (have_d)
		arg_done(&d);
	arg_done(&k);
	return ret;
}

static PyObject *map_popitem(MapObj *m, PyObject *unused)
{
	(void)unused;
	PyObject *keys = map_collect(m, WANT_KEYS);
	if (!keys)
		return NULL;
	for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
		PyObject *key = PyList_GET_ITEM(keys, i);
		int rc;
		PyObject *v = take(m, key, &rc);
		if (v) {
			PyObject *t = PyTuple_Pack(2, key, v);
			Py_DECREF(v);
			Py_DECREF(keys);
			return t;
		}
		if (rc != -ENOENT) { /* a Python error, or the library's */
			Py_DECREF(keys);
			return rc < 0 ? raise_rc(rc, NULL) : NULL;
		}
	}
	Py_DECREF(keys);
	PyErr_SetString(PyExc_KeyError, "popitem(): shmmap map is empty");
	return NULL;
}

static PyObject *map_put(MapObj *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwn)
{
	static const char *const names[] = {"key", "value", "ttl", "nx", "xx", "nottl"};
	PyObject *a[6] = {NULL};
	uint32_t ttl;
	int nx, xx, nottl;
	if (fast_args("put", args, nargs, kwn, names, a, 6, 2) < 0 || arg_ttl(a[2], &ttl) < 0 ||
	    (nx = arg_flag(a[3])) < 0 || (xx = arg_flag(a[4])) < 0 || (nottl = arg_flag(a[5])) < 0)
		return NULL;
	PyObject *key = a[0], *val = a[1];
	if (nx && xx) {
		PyErr_SetString(PyExc_ValueError, "put: nx and xx exclude each other");
		return NULL;
	}
	struct bytes_arg k, v;
	if (arg_bytes(key, &k, "key") < 0)
		return NULL;
	if (arg_bytes(val, &v, "value") < 0) {
		arg_done(&k);
		return NULL;
	}
	int rc = store(m, &k, NULL, &v, ttl,
		       (nx ? SHMMAP_NX : 0) | (xx ? SHMMAP_XX : 0) | (nottl ? SHMMAP_NOTTL : 0));
	arg_done(&v);
	arg_done(&k);
	if (rc == 0)
		Py_RETURN_TRUE;
	if ((rc == -EEXIST && nx) || (rc == -ENOENT && xx))
		Py_RETURN_FALSE;
	return rc < 0 ? raise_rc(rc, NULL) : NULL;
}

static PyObject *map_incr(MapObj *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwn)
{
	static const char *const names[] = {"key", "delta", "ttl"};
	PyObject *a[3] = {NULL};
	uint32_t ttl;
	if (fast_args("incr", args, nargs, kwn, names, a, 3, 1) < 0 || arg_ttl(a[2], &ttl) < 0)
		return NULL;
	PyObject *key = a[0], *delta = a[1];
	long long d = 1;
	if (delta) {
		if (!PyLong_Check(delta))
			return PyErr_Format(PyExc_TypeError, "delta must be an int, not %.100s",
					    Py_TYPE(delta)->tp_name);
		d = PyLong_AsLongLong(delta);
		if (d == -1 && PyErr_Occurred())
			return NULL;
	}
	struct bytes_arg k;
	if (arg_bytes(key, &k, "key") < 0)
		return NULL;
	shmmap *sm = small_begin(m->client);
	int64_t out = 0;
	int rc = sm ? shmmap_incr_ttl(sm, m->h, k.p, (size_t)k.n, (int64_t)d, ttl, &out) : 1;
	if (sm)
		small_end(m->client);
	Py_ssize_t kn = k.n;
	arg_done(&k);
	if (rc == 0)
		return PyLong_FromLongLong((long long)out);
	/* -EINVAL for a key: the value is not a number (the library's detail
	 * says so).  For an empty key the library sets none: an older call's
	 * would be shown. */
	return rc < 0 ? raise_rc_detail(rc, NULL, rc == -EINVAL && kn > 0) : NULL;
}

static PyObject *map_cas(MapObj *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwn)
{
	static const char *const names[] = {"key", "expected", "new", "ttl"};
	PyObject *a[4] = {NULL};
	uint32_t ttl;
	if (fast_args("cas", args, nargs, kwn, names, a, 4, 3) < 0 || arg_ttl(a[3], &ttl) < 0)
		return NULL;
	PyObject *key = a[0], *expo = a[1], *val = a[2];
	struct bytes_arg k, e, v;
	if (arg_bytes(key, &k, "key") < 0)
		return NULL;
	if (arg_bytes(val, &v, "new") < 0) {
		arg_done(&k);
		return NULL;
	}
	int rc;
	if (expo == Py_None) { /* expected absent: store only if absent */
		rc = store(m, &k, NULL, &v, ttl, SHMMAP_NX);
	} else if (arg_bytes(expo, &e, "expected") == 0) {
		rc = store(m, &k, &e, &v, ttl, 0);
		arg_done(&e);
	} else {
		rc = 1;
	}
	arg_done(&v);
	arg_done(&k);
	if (rc == 0)
		Py_RETURN_TRUE;
	if (rc == -ECANCELED || rc == -ENOENT || rc == -EEXIST)
		Py_RETURN_FALSE;
	return rc < 0 ? raise_rc(rc, NULL) : NULL;
}

static PyObject *map_stats(MapObj *m, PyObject *unused)
{
	(void)unused;
	struct shmmap_stats st;
	if (map_stats_of(m, &st) < 0)
		return NULL;
	return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsK}", "entries",
			     (unsigned long long)st.entries, "bytes", (unsigned long long)st.bytes,
			     "hits", (unsigned long long)st.hits, "misses",
			     (unsigned long long)st.misses, "puts", (unsigned long long)st.puts,
			     "dels", (unsigned long long)st.dels, "incrs",
			     (unsigned long long)st.incrs, "cas", (unsigned long long)st.cas,
			     "evictions", (unsigned long long)st.evictions, "expirations",
			     (unsigned long long)st.expirations, "lock_waits",
			     (unsigned long long)st.lock_waits);
}

static PyObject *map_flush(MapObj *m, PyObject *unused)
{
	(void)unused;
	shmmap *sm = client_hold(m->client);
	if (!sm)
		return NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = shmmap_flush(sm, m->h);
	Py_END_ALLOW_THREADS
	client_release(m->client);
	if (rc < 0)
		return raise_rc_detail(rc, m->name, 1);
	Py_RETURN_NONE;
}

static PyMethodDef map_methods[] = {
	{"get", (PyCFunction)(void (*)(void))map_get, METH_FASTCALL,
	 "get(key, default=None) -> bytes or default"},
	{"put", (PyCFunction)(void (*)(void))map_put, METH_FASTCALL | METH_KEYWORDS,
	 "put(key, value, ttl=0, nx=False, xx=False, nottl=False) -> bool\n\n"
	 "Store value under key; ttl in seconds (0: never expires, or after the\n"
	 "map's default_ttl if its [map NAME] section sets one; nottl=True with\n"
	 "ttl 0: never, whatever default_ttl says).  nx: only if the key is\n"
	 "absent; xx: only if present.  False when that condition kept the\n"
	 "value from being stored, else True."},
	{"incr", (PyCFunction)(void (*)(void))map_incr, METH_FASTCALL | METH_KEYWORDS,
	 "incr(key, delta=1, ttl=0) -> int\n\n"
	 "Add delta to the decimal integer under key (absent counts as 0),\n"
	 "atomically across processes; returns the new value.  ttl: seconds, the\n"
	 "TTL of a key this call creates (a rate limiter's window counter); 0:\n"
	 "the map's default_ttl or none.  A present key keeps its expiry."},
	{"cas", (PyCFunction)(void (*)(void))map_cas, METH_FASTCALL | METH_KEYWORDS,
	 "cas(key, expected, new, ttl=0) -> bool\n\n"
	 "Store new only if the value under key is expected (None: only if the\n"
	 "key is absent: a put with nx, counted in stats()[\"puts\"], not\n"
	 "[\"cas\"]), atomically across processes.  True if stored."},
	{"pop", (PyCFunction)(void (*)(void))map_pop, METH_FASTCALL,
	 "pop(key[, default]) -> bytes\n\n"
	 "Remove key and return its value; default (else KeyError) if it is\n"
	 "absent.  Of processes popping one key at once, only the one whose\n"
	 "delete removed the entry gets the value; the others get default."},
	{"setdefault", (PyCFunction)(void (*)(void))map_setdefault, METH_FASTCALL,
	 "setdefault(key, default=None) -> bytes\n\n"
	 "The value under key; if absent, store default (only if still absent,\n"
	 "across processes) and return it as stored (bytes; a str is UTF-8).\n"
	 "What it returns is what the map holds: of processes calling it at\n"
	 "once, one stores, the others get that value."},
	{"popitem", (PyCFunction)map_popitem, METH_NOARGS,
	 "popitem() -> (key, value)\n\n"
	 "Remove and return some entry; KeyError only if the map is empty (an\n"
	 "entry another process takes meanwhile is skipped)."},
	{"__reduce__", no_pickle, METH_NOARGS, NULL},
	{"stats", (PyCFunction)map_stats, METH_NOARGS,
	 "stats() -> dict of the map's counters (struct shmmap_stats)"},
	{"flush", (PyCFunction)map_flush, METH_NOARGS,
	 "flush()\n\nRemove every entry (entries written meanwhile may survive)."},
	{"clear", (PyCFunction)map_flush, METH_NOARGS, "clear(): the same as flush()"},
	{"keys", (PyCFunction)map_keys, METH_NOARGS,
	 "keys() -> list of the keys (a snapshot)\n\nA map dropped meanwhile raises "
	 "shmmap.Error (errno ESTALE): a list is always whole."},
	{"values", (PyCFunction)map_values, METH_NOARGS,
	 "values() -> list of the values (a snapshot)\n\nAs keys(), ESTALE included."},
	{"items", (PyCFunction)map_items, METH_NOARGS,
	 "items() -> list of (key, value) pairs (a consistent copy of each)\n\nAs keys(), "
	 "ESTALE included."},
	{NULL, NULL, 0, NULL},
};

static PyObject *map_get_client(MapObj *m, void *unused)
{
	(void)unused;
	return Py_NewRef((PyObject *)m->client);
}

static PyObject *map_get_name(MapObj *m, void *unused)
{
	(void)unused;
	return Py_NewRef(m->name);
}

static PyGetSetDef map_getset[] = {
	{"name", (getter)map_get_name, NULL, "the map's name", NULL},
	{"client", (getter)map_get_client, NULL, "the Client that opened it", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyMappingMethods map_as_mapping = {
	.mp_length = (lenfunc)map_length,
	.mp_subscript = (binaryfunc)map_subscript,
	.mp_ass_subscript = (objobjargproc)map_ass_subscript,
};

static PySequenceMethods map_as_sequence = {
	.sq_contains = (objobjproc)map_contains,
};

static PyTypeObject MapBaseType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "shmmap.MapBase",
	.tp_basicsize = sizeof(MapObj),
	.tp_dealloc = (destructor)map_dealloc,
	.tp_repr = (reprfunc)map_repr,
	.tp_as_sequence = &map_as_sequence,
	.tp_as_mapping = &map_as_mapping,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_doc = "The C part of shmmap.Map (made by Client.open only).",
	.tp_iter = (getiterfunc)map_iter,
	.tp_methods = map_methods,
	.tp_getset = map_getset,
};

/* ---- module ---- */

static PyObject *mod_attach(PyObject *mod, PyObject *args, PyObject *kw)
{
	(void)mod;
	return client_new(&ClientType, args, kw);
}

static PyObject *mod_strerror(PyObject *mod, PyObject *arg)
{
	(void)mod;
	long e = PyLong_AsLong(arg);
	if (e == -1 && PyErr_Occurred())
		return NULL;
	if (e < INT_MIN + 1 || e > INT_MAX) {
		PyErr_SetString(PyExc_OverflowError, "errno out of range");
		return NULL;
	}
	return PyUnicode_FromString(shmmap_strerror((int)e));
}

static PyMethodDef mod_methods[] = {
	{"attach", (PyCFunction)(void (*)(void))mod_attach, METH_VARARGS | METH_KEYWORDS,
	 "attach(socket=None) -> Client\n\n"
	 "Attach to the coordinator at socket (None: $SHMMAP_SOCKET, then the\n"
	 "default socket, as the C library finds it: see help(shmmap.Client))."},
	{"strerror", mod_strerror, METH_O, "strerror(errno) -> str (shmmap_strerror)"},
	{"_wait_hook_test", mod_wait_hook_test, METH_O,
	 "_wait_hook_test(seconds): for the tests, a wait for another process's\n"
	 "lock of that long, as a small call makes it (without the GIL)."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
	PyModuleDef_HEAD_INIT,
	.m_name = "shmmap",
	.m_doc = "Cross-process shared-memory maps of bytes to bytes (libshmmap).",
	.m_size = -1,
	.m_methods = mod_methods,
};

/* shmmap.Error and, for the errno values that have one, a subclass that is
 * also the standard OSError subclass (PEP 3151). */
static int add_errors(PyObject *mod)
{
	static const struct {
		int err;
		const char *name;
	} std[] = {
		{ENOENT, "FileNotFoundError"},        {EEXIST, "FileExistsError"},
		{EPERM, "PermissionError"},           {EACCES, "PermissionError"},
		{EAGAIN, "BlockingIOError"},          {ETIMEDOUT, "TimeoutError"},
		{ECONNREFUSED, "ConnectionRefusedError"}, {ECONNRESET, "ConnectionResetError"},
		{ECONNABORTED, "ConnectionAbortedError"}, {EPIPE, "BrokenPipeError"},
		{EINTR, "InterruptedError"},
	};
	Error = PyErr_NewExceptionWithDoc("shmmap.Error",
					  "An error of libshmmap: errno is the error's number, "
					  "strerror its shmmap_strerror() text.",
					  PyExc_OSError, NULL);
	errno_types = PyDict_New();
	if (!Error || !errno_types || PyModule_AddObjectRef(mod, "Error", Error) < 0)
		return -1;
	PyObject *builtins = PyEval_GetBuiltins();
	for (size_t i = 0; i < sizeof std / sizeof std[0]; i++) {
		PyObject *type = PyObject_GetAttrString(mod, std[i].name);
		if (!type) {
			PyErr_Clear();
			PyObject *base = PyDict_GetItemString(builtins, std[i].name);
			char qual[64];
			snprintf(qual, sizeof qual, "shmmap.%s", std[i].name);
			PyObject *bases = base ? PyTuple_Pack(2, Error, base) : NULL;
			type = bases ? PyErr_NewException(qual, bases, NULL) : NULL;
			Py_XDECREF(bases);
			if (!type || PyModule_AddObjectRef(mod, std[i].name, type) < 0) {
				Py_XDECREF(type);
				return -1;
			}
		}
		PyObject *num = PyLong_FromLong(std[i].err);
		int rc = num ? PyDict_SetItem(errno_types, num, type) : -1;
		Py_XDECREF(num);
		Py_DECREF(type);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* class Map(MapBase, collections.abc.MutableMapping): __slots__ = () */
static int add_map_type(PyObject *mod)
{
	PyObject *abc = PyImport_ImportModule("collections.abc");
	PyObject *mm = abc ? PyObject_GetAttrString(abc, "MutableMapping") : NULL;
	Py_XDECREF(abc);
	if (!mm)
		return -1;
	PyObject *t = PyObject_CallFunction(
		(PyObject *)Py_TYPE(mm), "s(OO){s:(),s:s,s:s}", "Map", (PyObject *)&MapBaseType,
		mm, "__slots__", "__module__", "shmmap", "__doc__",
		"A named shared map: a MutableMapping of bytes to bytes (str keys and\n"
		"values are encoded as UTF-8).  m[k] raises KeyError when k is absent.\n"
		"keys(), values() and items() return lists (a snapshot of a map that\n"
		"other processes change); len() counts entries not yet reclaimed,\n"
		"expired ones included until the coordinator removes them.");
	Py_DECREF(mm);
	if (!t)
		return -1;
	if (!PyType_Check(t) || ((PyTypeObject *)t)->tp_basicsize != sizeof(MapObj)) {
		Py_DECREF(t);
		PyErr_SetString(PyExc_SystemError, "shmmap.Map has an unexpected layout");
		return -1;
	}
	MapType = (PyTypeObject *)t;
	return PyModule_AddObjectRef(mod, "Map", t);
}

PyMODINIT_FUNC PyInit_shmmap(void)
{
	static int atfork_done;
	if (PyType_Ready(&ClientType) < 0 || PyType_Ready(&MapBaseType) < 0)
		return NULL;
	PyObject *mod = PyModule_Create(&moduledef);
	if (!mod)
		return NULL;
	if (PyModule_AddObjectRef(mod, "Client", (PyObject *)&ClientType) < 0 ||
	    PyModule_AddObjectRef(mod, "MapBase", (PyObject *)&MapBaseType) < 0 ||
	    add_errors(mod) < 0 || add_map_type(mod) < 0 ||
	    PyModule_AddIntConstant(mod, "NAME_MAX", SHMMAP_NAME_MAX) < 0 ||
	    PyModule_AddIntConstant(mod, "EBADSEG", SHMMAP_EBADSEG) < 0 ||
	    PyModule_AddIntConstant(mod, "EVERSION", SHMMAP_EVERSION) < 0 ||
	    PyModule_AddIntConstant(mod, "ECORRUPT", SHMMAP_ECORRUPT) < 0 ||
	    PyModule_AddIntConstant(mod, "EDETACHED", SHMMAP_EDETACHED) < 0 ||
	    PyModule_AddIntConstant(mod, "ESEGSIZE", SHMMAP_ESEGSIZE) < 0 ||
	    PyModule_AddStringConstant(mod, "DEFAULT_SOCKET", SHMMAP_DEFAULT_SOCKET) < 0) {
		Py_DECREF(mod);
		return NULL;
	}
	if (!atfork_done) {
		int rc = pthread_atfork(NULL, NULL, fork_child);
		if (rc) {
			Py_DECREF(mod);
			errno = rc;
			return PyErr_SetFromErrno(PyExc_OSError);
		}
		atfork_done = 1;
	}
	shmmap_set_wait_hook(wait_hook); /* (this module's copy of the library) */
	return mod;
}
