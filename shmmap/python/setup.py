"""setup.py - build the shmmap Python module with setuptools, for users who
prefer pip or setup.py to `make python` (the project's own build, which does
not use this file).

It compiles shmmapmodule.c and links libshmmap.a, from the build tree by
default (run `make` at the top first) or from $SHMMAP_LIBDIR, with the
header from the repository's include/ or $SHMMAP_INCLUDEDIR:

    make && cd shmmap/python && python3 setup.py build_ext --inplace
    SHMMAP_LIBDIR=/usr/local/lib SHMMAP_INCLUDEDIR=/usr/local/include pip install .
"""
import os

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
top = os.path.normpath(os.path.join(here, "..", ".."))
libdir = os.environ.get("SHMMAP_LIBDIR", os.path.join(top, "build"))
incdir = os.environ.get("SHMMAP_INCLUDEDIR", os.path.join(top, "include"))
lib = os.path.join(libdir, "libshmmap.a")
if not os.path.exists(lib):
    raise SystemExit("setup.py: %s not found: run make first, or set SHMMAP_LIBDIR" % lib)

setup(
    name="shmmap",
    version="0.1",
    description="Cross-process shared-memory maps of bytes to bytes (libshmmap)",
    ext_modules=[
        Extension(
            "shmmap",
            sources=[os.path.join(here, "shmmapmodule.c")],
            include_dirs=[incdir],
            define_macros=[("_GNU_SOURCE", "1")],
            extra_compile_args=["-std=c11", "-fvisibility=hidden", "-pthread"],
            extra_objects=[lib],
            extra_link_args=["-Wl,--exclude-libs,ALL", "-pthread"],
            libraries=["rt"],
        )
    ],
)
