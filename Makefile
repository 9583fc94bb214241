# shmmap - one non-recursive Makefile.
#   make          build shmmapd, shmmapctl, libshmmap.a, libshmmap.so (in build/)
#   make run      install missing packages, build, run shmmapd on conf/shmmap.ini
#   make test     install missing packages, build, run every test
#   make asan     the tests again under AddressSanitizer + UBSan (in build-asan/)

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
            shmmap/sweep.c shmmap/grow.c shmmap/crashpoint.c
D_SRCS   := shmmap/shmmapd.c shmmap/coordinator.c shmmap/conf.c shmmap/snapshot.c
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

all: $(O)/shmmapd $(O)/shmmapctl $(O)/libshmmap.a $(O)/libshmmap.so

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

$(O)/libshmmap.so: $(LIB_OBJS)
	$(CC) -shared $(CFLAGS) -Wl,-soname,libshmmap.so.1 -o $@ $^ $(LDFLAGS) -lrt

$(O)/shmmapd: $(D_OBJS) $(O)/libshmmap.a
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

# Tests drive the real binaries; they find them through these variables.
TEST_ENV = SHMMAPD=$(abspath $(O)/shmmapd) SHMMAPCTL=$(abspath $(O)/shmmapctl) \
           SHMMAP_TESTDATA=$(abspath tests/data) CK_DEFAULT_TIMEOUT=60

deps:
	@scripts/deps.sh

build-tests: all $(T_BINS)

check-tests: build-tests
	@scripts/run-tests.sh $(O) $(TEST_ENV) -- $(T_BINS)

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
bench: deps
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench.sh $(BENCH_ARGS)
	@O=$(O) CC="$(CC)" scripts/bench-growth.sh $(GROW_ARGS)

bench-growth:
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench-growth.sh $(GROW_ARGS)

bench-short: deps
	@$(MAKE) --no-print-directory all
	@O=$(O) CC="$(CC)" scripts/bench.sh --short
	@O=$(O) CC="$(CC)" scripts/bench-growth.sh --short

# libFuzzer targets in tests/fuzz/ (installs clang and the libFuzzer runtime
# if missing; builds in build-fuzz/); fuzz-short is the CI smoke run.
fuzz: deps
	@scripts/fuzz.sh

fuzz-short: deps
	@scripts/fuzz.sh --short

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all deps build-tests check-tests test asan run bench bench-growth bench-short fuzz fuzz-short clean
-include $(shell find $(O) -name '*.d' 2>/dev/null)
