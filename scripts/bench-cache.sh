#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# scripts/bench-cache.sh - build and run the trace-driven cache benchmark of
# issue 13 (tests/bench/cache.c): shmmap as a look-aside cache next to an
# exact LRU simulation, memcached and Redis, same trace, same byte budget.
#
#   scripts/bench-cache.sh [--short] [cache options...]
#
# Installs memcached if missing (Debian; the full run needs it, --short goes
# on without it and says so), builds build/bench/cache against
# build/libshmmap.a, makes a temp work dir and runs the program, which
# starts a private server per cell there (shmmapd with a temp config and a
# unique segment named after this script's pid, memcached and redis-server
# on Unix sockets, no TCP port, no persistence) and stops it after the cell.
# On any exit this script stops the program (its servers die with it:
# PR_SET_PDEATHSIG) and removes the work dir and the segments.  Then large
# values among small ones (tests/bench/frag.c) on a shmmapd of its own: what
# admitting a 1 MB value costs when the free pages are scattered.
#
# --short is the CI smoke mode (tiny key counts, well under a minute).
# Extra arguments go to the program (see the head of tests/bench/cache.c),
# e.g. --systems shmmap,lru --measure 1000000.
# $O is the build directory (default build), $CC the compiler.
# Exit status: 0, or 1 if a cell failed to run (the message says which).
set -eu
cd "$(dirname "$0")/.."
O=${O:-build}
CC=${CC:-cc}

short=""
for a in "$@"; do
	[ "$a" = "--short" ] && short=1
done

# ---- packages ----
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
if ! command -v memcached >/dev/null 2>&1 && [ -z "$short" ] && ! installed memcached; then
	echo "bench-cache: installing memcached" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null; }; then
		echo "bench-cache: could not install memcached" >&2
		exit 2
	fi
fi
memcached=$(command -v memcached || true)
[ -n "$memcached" ] || memcached=$(ls /usr/bin/memcached 2>/dev/null || true)
redis=$(command -v redis-server || true)
if [ -z "$short" ] && [ -z "$redis" ]; then
	echo "bench-cache: redis-server is missing (apt-get install redis-server)" >&2
	exit 2
fi
[ -n "$memcached" ] || echo "bench-cache: memcached is not installed: the short run goes on without it" >&2
[ -n "$redis" ] || echo "bench-cache: redis-server is not installed: the short run goes on without it" >&2

# ---- build ----
if [ ! -f "$O/libshmmap.a" ] || [ ! -x "$O/shmmapd" ]; then
	${MAKE:-make} --no-print-directory O="$O" all
fi
mkdir -p "$O/bench"
# The project's flags (Makefile WARN).
$CC -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Ishmmap \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Wno-format-nonliteral -pthread \
	-o "$O/bench/cache" tests/bench/cache.c "$O/libshmmap.a" -lrt -lm
$CC -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Ishmmap \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Wno-format-nonliteral -pthread \
	-o "$O/bench/frag" tests/bench/frag.c "$O/libshmmap.a" -lrt -lm

# ---- the work dir and segments, removed on any exit ----
work=$(mktemp -d "${TMPDIR:-/tmp}/shmmap-cache.XXXXXX")
# Absolute: the socket path in its config must be (a relative $TMPDIR).
case $work in /*) ;; *) work=$PWD/$work ;; esac
seg="/shmmap-cache-$$-$(date +%s)"
bench_pid=""
cleanup() {
	trap - EXIT INT TERM HUP
	if [ -n "$bench_pid" ]; then
		kill -TERM "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	rm -f "/dev/shm$seg"-*
	rm -rf "$work"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

# In the background, so that a signal to this script alone (timeout, kill)
# runs the trap at once.
"$O/bench/cache" --shmmapd "$O/shmmapd" --memcached "$memcached" --redis-server "$redis" \
	--workdir "$work" --seg-prefix "$seg" "$@" &
bench_pid=$!
set +e
wait "$bench_pid"
rc=$?
set -e
bench_pid=""
if [ $rc -ne 0 ]; then
	echo "bench-cache: FAILED (exit status $rc)" >&2
	exit $rc
fi

# ---- large values among small ones (tests/bench/frag.c) ----
# A 128M segment of one evict map, a value of 1 MB (16 pages) for every
# 20, 50 and 200 small ones: what admitting it costs when the free pages
# are scattered.
cat >"$work/frag.ini" <<CONF
[segment]
name = $seg-frag
size = 128M

[server]
socket = $work/frag.sock

[map]
value_max = 1M
CONF
"$O/shmmapd" -c "$work/frag.ini" --foreground 2>"$work/frag.log" &
bench_pid=$!
. scripts/bench-lib.sh
wait_ready "$bench_pid" frag "$O/shmmapctl" -s "$work/frag.sock" status || exit 1
echo
echo "large values among small ones (128M, one evict map, 1 MB values):"
rounds=2000
[ -z "$short" ] || rounds=200
for per in 20 50 200; do
	"$O/bench/frag" --sock "$work/frag.sock" --rounds $rounds --per $per || rc=1
done
kill -TERM "$bench_pid" 2>/dev/null || true
wait "$bench_pid" 2>/dev/null || true
bench_pid=""
exit $rc
