# shmmap - one non-recursive Makefile.
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
#   make          build shmmapd, shmmapctl, libshmmap.a, libshmmap.so (in build/)
#   make run      install missing packages, build, run shmmapd on conf/shmmap.ini
#   make test     install missing packages, build, run every test (T=check_cli: one)
#   make asan     the tests again under AddressSanitizer + UBSan (in build-asan/)
#   make python   the Python module shmmap (build/python/), for Debian's /usr/bin/python3
#   make install-python   install it into Debian's python3 site directory
#   make bench    shmmap against the ceiling, LMDB and Redis (bench-short: CI's run)
#   make bench-cache      hit ratios on traces against LRU, memcached and Redis

CC      ?= cc
O       ?= build
OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wvla -Wno-format-nonliteral
PKGS    := liburcu-memb liburcu-cds inih
CPPFLAGS += -Iinclude -Ishmmap -D_GNU_SOURCE
CFLAGS  += -std=c11 $(OPT) $(WARN) -fPIC -fvisibility=hidden -pthread -MMD -MP $(EXTRA_CFLAGS)
LDFLAGS += $(EXTRA_LDFLAGS)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) check 2>/dev/null)
URCU_LIBS  = $(shell pkg-config --libs liburcu-memb liburcu-cds 2>/dev/null)
INIH_LIBS  = $(shell pkg-config --libs inih 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)

LIB_SRCS := shmmap/errors.c shmmap/segment.c shmmap/lock.c shmmap/alloc.c \
            shmmap/table.c shmmap/proto.c shmmap/client.c shmmap/check.c \
            shmmap/sweep.c shmmap/grow.c shmmap/evict.c shmmap/crashpoint.c shmmap/version.c \
            shmmap/paths.c
D_SRCS   := shmmap/shmmapd.c shmmap/coordinator.c shmmap/recover.c shmmap/mapdir.c shmmap/persist.c shmmap/conf.c shmmap/snapshot.c \
            shmmap/log.c shmmap/notify.c
CTL_SRCS := shmmap/shmmapctl.c
TESTS    := $(patsubst tests/%.c,%,$(wildcard tests/check_*.c))

LIB_OBJS := $(LIB_SRCS:%.c=$(O)/%.o)
# The library again with the crash-point hook compiled in (internal.h), for
# the crash tests only: shmmapd, shmmapctl and every user get the plain one.
CRASH_OBJS := $(LIB_SRCS:%.c=$(O)/crash/%.o)
CRASH_TESTS := check_crash
D_OBJS   := $(D_SRCS:%.c=$(O)/%.o)
CTL_OBJS := $(CTL_SRCS:%.c=$(O)/%.o)
T_BINS   := $(TESTS:%=$(O)/tests/%)
T_COMMON := $(O)/tests/testutil.o

# The Python binding: a CPython extension for $(PY) (Debian's, with
# python3-dev), linking libshmmap.a (position-independent) in, its symbols
# kept private to the module.
PY        ?= /usr/bin/python3
PY_CONFIG ?= $(PY)-config
PY_INC     = $(shell $(PY_CONFIG) --includes 2>/dev/null)
PY_EXT     = $(shell $(PY_CONFIG) --extension-suffix 2>/dev/null)
PY_MOD     = $(O)/python/shmmap$(PY_EXT)


# The version is written once, in include/shmmap.h; the soname follows its
# major (libshmmap.so.MAJOR), and the build directory has the same links as
# an installation (libshmmap.so and libshmmap.so.MAJOR -> libshmmap.so.X.Y.Z).
version_of = $(shell sed -n 's/^.define SHMMAP_VERSION_$(1)[[:space:]]*\([0-9][0-9]*\).*/\1/p' include/shmmap.h)
VERSION_MAJOR := $(call version_of,MAJOR)
VERSION := $(VERSION_MAJOR).$(call version_of,MINOR).$(call version_of,PATCH)
SO_NAME := libshmmap.so.$(VERSION_MAJOR)
SO_FILE := libshmmap.so.$(VERSION)
SO_LINKS := $(SO_NAME) libshmmap.so

all: $(O)/shmmapd $(O)/shmmapctl $(O)/libshmmap.a $(SO_LINKS:%=$(O)/%)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(O)/crash/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DSHMMAP_CRASHPOINTS $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(O)/libshmmap.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(O)/libshmmap_crash.a: $(CRASH_OBJS)
	rm -f $@ && ar rcs $@ $^

$(O)/$(SO_FILE): $(LIB_OBJS)
	$(CC) -shared $(CFLAGS) -Wl,-soname,$(SO_NAME) -o $@ $^ $(LDFLAGS) -lrt

$(SO_LINKS:%=$(O)/%): $(O)/$(SO_FILE)
	ln -sf $(SO_FILE) $@

$(O)/shmmapd: $(D_OBJS) $(O)/libshmmap.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(URCU_LIBS) $(INIH_LIBS) -lrt

# shmmapd again with the crash-point hook, for check_crash's coordinator
# killed inside a growth step ($SHMMAP_CRASH_GROW); never installed.
$(O)/tests/shmmapd-crash: $(D_SRCS:%.c=$(O)/crash/%.o) $(O)/libshmmap_crash.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(URCU_LIBS) $(INIH_LIBS) -lrt

$(O)/shmmapctl: $(CTL_OBJS) $(O)/libshmmap.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) -lrt

$(O)/tests/check_%: $(O)/tests/check_%.o $(T_COMMON) $(O)/shmmap/conf.o $(O)/libshmmap.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(INIH_LIBS) $(CHECK_LIBS) -lrt

# check_snapshot also reads snapshot files itself.
$(O)/tests/check_snapshot: $(O)/tests/check_snapshot.o $(T_COMMON) $(O)/shmmap/snapshot.o \
                           $(O)/shmmap/conf.o $(O)/libshmmap.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(INIH_LIBS) $(CHECK_LIBS) -lrt

$(CRASH_TESTS:%=$(O)/tests/%.o): CPPFLAGS += -DSHMMAP_CRASHPOINTS
$(CRASH_TESTS:%=$(O)/tests/%): $(O)/tests/%: $(O)/tests/%.o $(T_COMMON) $(O)/libshmmap_crash.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(CHECK_LIBS) -lrt

# The README's example, built as its build line says: only the public
# header, linked against the build directory's libshmmap.so link (found at
# run time through the rpath).  check_example runs it.
$(O)/tests/example: tests/example.c $(SO_LINKS:%=$(O)/%)
	@mkdir -p $(dir $@)
	$(CC) -Iinclude $(CFLAGS) -o $@ $< -L$(O) -lshmmap -Wl,-rpath,$(abspath $(O)) $(LDFLAGS) -lrt

$(O)/python/shmmapmodule.o: shmmap/python/shmmapmodule.c
	@mkdir -p $(dir $@)
	@test -n "$(PY_EXT)" || { echo "make python: $(PY_CONFIG) not found (apt-get install python3-dev)" >&2; exit 1; }
	$(CC) $(PY_INC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(PY_MOD): $(O)/python/shmmapmodule.o $(O)/libshmmap.a
	$(CC) -shared $(CFLAGS) -Wl,--exclude-libs,ALL -o $@ $^ $(LDFLAGS) -lrt

python: $(PY_MOD)

# Tests drive the real binaries; they find them through these variables.
TEST_ENV = SHMMAPD=$(abspath $(O)/shmmapd) SHMMAPCTL=$(abspath $(O)/shmmapctl) \
           SHMMAPD_CRASH=$(abspath $(O)/tests/shmmapd-crash) \
           SHMMAP_TESTDATA=$(abspath tests/data) CK_DEFAULT_TIMEOUT=60 \
           SHMMAP_SRCDIR=$(abspath .) SHMMAP_BUILDDIR=$(abspath $(O)) \
           'SHMMAP_MAKEVARS=O=$(O) OPT="$(OPT)" EXTRA_CFLAGS="$(EXTRA_CFLAGS)" EXTRA_LDFLAGS="$(EXTRA_LDFLAGS)"' \
           'SHMMAP_CC=$(CC) $(EXTRA_CFLAGS)' 'SHMMAP_LDFLAGS=$(EXTRA_LDFLAGS)' \
           SHMMAP_PY=$(PY) SHMMAP_PYTHONPATH=$(abspath $(O)/python) \
           SHMMAP_PYTESTS=$(abspath tests/python)

deps:
	@scripts/deps.sh

# T=check_cli (or T=cli; several: T="cli api") runs only those programs.
T_NAMES := $(foreach t,$(T),$(if $(filter check_%,$(t)),$(t),check_$(t)))
ifneq ($(filter-out $(TESTS),$(T_NAMES)),)
$(error T: no test program $(filter-out $(TESTS),$(T_NAMES)) (there are: $(TESTS)))
endif
T_RUN := $(if $(T_NAMES),$(T_NAMES:%=$(O)/tests/%),$(T_BINS))

build-tests: all python $(T_RUN) $(O)/tests/example $(O)/tests/shmmapd-crash

check-tests: build-tests
	@scripts/run-tests.sh $(O) $(TEST_ENV) -- $(T_RUN)

test: deps
	@$(MAKE) --no-print-directory check-tests

asan: deps
	@$(MAKE) --no-print-directory O=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" check-tests

run: deps
	@$(MAKE) --no-print-directory all
	$(O)/shmmapd -c conf/shmmap.ini --foreground

# The benchmark of shmmap against its peers (installs liblmdb-dev,
# redis-server, libhiredis-dev if missing); bench-short is the CI smoke run.
# Then the growth benchmark (issue 11): the default map config at 100k, 1M
# and 4M keys against an in-process open-addressing table (bench-growth).
# Last, the summary of issue 14's targets from the first (written by it).
bench: deps
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench.sh $(BENCH_ARGS)
	@O=$(O) CC="$(CC)" scripts/bench-growth.sh $(GROW_ARGS)
	@cat $(O)/bench/summary.txt

bench-growth:
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench-growth.sh $(GROW_ARGS)

# The trace-driven cache benchmark (issue 13): shmmap as a look-aside cache
# next to an exact LRU simulation, memcached (installed if missing) and
# Redis, same trace and byte budget (10 to 20 minutes); bench-cache-short is
# the CI smoke run (under a minute, goes on without memcached; bench-short
# runs it too).
bench-cache:
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench-cache.sh $(CACHE_ARGS)

bench-cache-short:
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench-cache.sh --short

bench-short: deps
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench.sh --short
	@O=$(O) CC="$(CC)" scripts/bench-growth.sh --short
	@O=$(O) CC="$(CC)" scripts/bench-cache.sh --short

# libFuzzer targets in tests/fuzz/ (installs clang and the libFuzzer runtime
# if missing; builds in build-fuzz/); fuzz-short is the CI smoke run.
fuzz: deps
	@scripts/fuzz.sh

fuzz-short: deps
	@scripts/fuzz.sh --short

# ---- install ----
# make install [PREFIX=/usr/local] [DESTDIR=] [BINDIR=] [LIBDIR=] [INCLUDEDIR=]
#              [MANDIR=] [PKGCONFIGDIR=] [SYSTEMDUNITDIR=]
# installs the programs, the header, libshmmap.a, libshmmap.so.X.Y.Z with its
# links, shmmap.pc (from shmmap/shmmap.pc.in, with these directories), the
# man pages (and one shmmap_CALL(3) link page per public call), and the
# systemd unit conf/shmmapd.service when there is one (the paths of shmmapd
# and shmmapctl on its Exec lines, or @BINDIR@, become BINDIR's).
# make uninstall (same variables) removes exactly those files.
PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
LIBDIR         ?= $(PREFIX)/lib
INCLUDEDIR     ?= $(PREFIX)/include
MANDIR         ?= $(PREFIX)/share/man
PKGCONFIGDIR   ?= $(LIBDIR)/pkgconfig
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SHMMAPD_UNIT   ?= $(wildcard conf/shmmapd.service)
# The Python module goes where Debian's python3 looks: /usr/lib/python3/
# dist-packages for PREFIX=/usr, PREFIX/lib/python3.X/dist-packages else.
# make install includes it when python3-dev is there (make install-python
# alone installs only it).
PY_VER          = $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYTHONDIR      ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/python$(PY_VER)/dist-packages)
MAN_PAGES      := shmmap/shmmapctl.1 shmmap/shmmap.3 shmmap/shmmap.ini.5 shmmap/shmmapd.8
# Every function the header declares (its lines start with the return type).
lparen         := (
API_CALLS      := $(shell sed -n 's/^[a-z].*[ *]\(shmmap_[a-z_]*\)$(lparen).*/\1/p' include/shmmap.h)
INSTALL        ?= install

install-python: python
	$(INSTALL) -d "$(DESTDIR)$(PYTHONDIR)"
	$(INSTALL) -m 0644 $(PY_MOD) "$(DESTDIR)$(PYTHONDIR)/"

uninstall-python:
	rm -f "$(DESTDIR)$(PYTHONDIR)/$(notdir $(PY_MOD))"

install: all $(if $(PY_EXT),install-python)
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(LIBDIR)" "$(DESTDIR)$(INCLUDEDIR)" \
	  "$(DESTDIR)$(PKGCONFIGDIR)" $(sort $(foreach p,$(MAN_PAGES),"$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))"))
	$(INSTALL) -m 0755 $(O)/shmmapd $(O)/shmmapctl "$(DESTDIR)$(BINDIR)/"
	$(INSTALL) -m 0644 include/shmmap.h "$(DESTDIR)$(INCLUDEDIR)/"
	$(INSTALL) -m 0644 $(O)/libshmmap.a $(O)/$(SO_FILE) "$(DESTDIR)$(LIBDIR)/"
	$(foreach l,$(SO_LINKS),ln -sf $(SO_FILE) "$(DESTDIR)$(LIBDIR)/$(l)" &&) true
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	  -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	  shmmap/shmmap.pc.in >"$(DESTDIR)$(PKGCONFIGDIR)/shmmap.pc"
	chmod 0644 "$(DESTDIR)$(PKGCONFIGDIR)/shmmap.pc"
	$(foreach p,$(MAN_PAGES),$(INSTALL) -m 0644 $(p) "$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/" &&) true
	$(foreach f,$(API_CALLS),echo '.so man3/shmmap.3' >"$(DESTDIR)$(MANDIR)/man3/$(f).3" &&) true
	$(if $(SHMMAPD_UNIT),$(INSTALL) -d "$(DESTDIR)$(SYSTEMDUNITDIR)" && \
	  sed -E -e 's!@BINDIR@!$(BINDIR)!g' \
	      -e '/^Exec/s!/[^[:space:]=]*/(shmmapd|shmmapctl)([[:space:]]|$$)!$(BINDIR)/\1\2!g' \
	      "$(SHMMAPD_UNIT)" >"$(DESTDIR)$(SYSTEMDUNITDIR)/shmmapd.service" && \
	  chmod 0644 "$(DESTDIR)$(SYSTEMDUNITDIR)/shmmapd.service")
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

uninstall: $(if $(PY_EXT),uninstall-python)
	rm -f "$(DESTDIR)$(BINDIR)/shmmapd" "$(DESTDIR)$(BINDIR)/shmmapctl" \
	  "$(DESTDIR)$(INCLUDEDIR)/shmmap.h" "$(DESTDIR)$(LIBDIR)/libshmmap.a" \
	  $(foreach l,$(SO_FILE) $(SO_LINKS),"$(DESTDIR)$(LIBDIR)/$(l)") \
	  "$(DESTDIR)$(PKGCONFIGDIR)/shmmap.pc" \
	  $(foreach p,$(MAN_PAGES),"$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/$(notdir $(p))") \
	  $(foreach f,$(API_CALLS),"$(DESTDIR)$(MANDIR)/man3/$(f).3") \
	  "$(DESTDIR)$(SYSTEMDUNITDIR)/shmmapd.service"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all python install-python uninstall-python deps build-tests check-tests test asan run bench \
        bench-growth bench-cache bench-cache-short bench-short fuzz fuzz-short clean install uninstall
-include $(shell find $(O) -name '*.d' 2>/dev/null)
