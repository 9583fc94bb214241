#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# scripts/bench.sh - build and run the benchmark of issue 6 (tests/bench/bench.c):
# shmmap side by side with an in-process hash table, LMDB and Redis; then
# the Python binding's of issue 15 (tests/bench/bench_python.py): gets/s of
# one Python process against a dict, a multiprocessing Manager dict and
# redis-py, on the same servers.
#
#   scripts/bench.sh [--short] [bench options...]
#
# Installs liblmdb-dev, libhiredis-dev, redis-server and python3-redis if
# missing (Debian), builds the Python module (make python),
# builds build/bench/bench against build/libshmmap.a, starts a private shmmapd
# (temp config and socket, a unique /dev/shm segment, 512M) and a private
# redis-server (Unix socket in a temp dir, no TCP port, no persistence),
# runs the benchmarks, and stops and removes all of it, even on failure or
# interrupt.  The LMDB environment lives in a temp dir on /dev/shm (tmpfs,
# like the shmmap segment) when there is one.
#
# --short is the CI smoke mode (~10 s): tiny key counts; if Redis or LMDB
# cannot be installed it runs without them (and the Python benchmark
# without redis-py).  Extra arguments go to the C
# program (see the head of tests/bench/bench.c), e.g. --systems shmmap,inproc
# --sizes 16 --ops get.  $O is the build directory (default build), $CC the
# compiler, $BENCH_WRAP a command to run the program under, for profiling, e.g.
#   BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" \
#     scripts/bench.sh --systems shmmap,inproc --sizes 16 --ops get --procs 1
# $BENCH_PYTHON=0 skips the Python benchmark.
# Exit status: 0, or 1 if a cell of either benchmark failed.
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
missing=""
for p in liblmdb-dev libhiredis-dev redis-server python3-redis; do
	installed "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "bench: installing$missing" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }; then
		if [ -z "$short" ]; then
			echo "bench: could not install$missing" >&2
			exit 2
		fi
		echo "bench: could not install$missing; the short run goes on without them" >&2
	fi
fi

# ---- build ----
if [ ! -f "$O/libshmmap.a" ] || [ ! -x "$O/shmmapd" ]; then
	${MAKE:-make} --no-print-directory O="$O" all
fi
if [ "${BENCH_PYTHON:-1}" != 0 ]; then
	${MAKE:-make} --no-print-directory O="$O" python
fi
defs=""
libs=""
if [ -f /usr/include/lmdb.h ]; then defs="$defs -DHAVE_LMDB"; libs="$libs -llmdb"; fi
if [ -f /usr/include/hiredis/hiredis.h ]; then defs="$defs -DHAVE_HIREDIS"; libs="$libs -lhiredis"; fi
mkdir -p "$O/bench"
# The project's flags (Makefile WARN), plus the peers that are installed.
$CC -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Ishmmap \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Wno-format-nonliteral -pthread $defs \
	-o "$O/bench/bench" tests/bench/bench.c "$O/libshmmap.a" $libs -lrt -lm

# ---- private servers, removed on any exit ----
work=$(mktemp -d "${TMPDIR:-/tmp}/shmmap-bench.XXXXXX")
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
	lmdb=$(mktemp -d /dev/shm/shmmap-bench-lmdb.XXXXXX)
else
	lmdb="$work/lmdb"
	mkdir "$lmdb"
fi
seg="/shmmap-bench-$$-$(date +%s)"
shmmapd_pid=""
redis_pid=""
bench_pid=""
cleanup() {
	trap - EXIT INT TERM HUP
	if [ -n "$bench_pid" ]; then
		kill -TERM "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	for pid in $redis_pid $shmmapd_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $redis_pid $shmmapd_pid; do
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -f "/dev/shm$seg" "/dev/shm$seg.lock"
	rm -rf "$work" "$lmdb"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

wait_ready() { # pid name command...: until the command succeeds
	wpid=$1 wname=$2
	shift 2
	i=0
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$wpid" 2>/dev/null || [ $i -ge 200 ]; then
			echo "bench: $wname did not start; its log:" >&2
			cat "$work/$wname.log" >&2 || true
			return 1
		fi
		sleep 0.05
		i=$((i + 1))
	done
}

cat >"$work/shmmap.ini" <<EOF
[segment]
name = $seg
size = 512M
max_clients = 32

[server]
socket = $work/shmmapd.sock

[map]
key_max = 64
value_max = 4K
buckets = 131072
stripes = 256
EOF
"$O/shmmapd" -c "$work/shmmap.ini" --foreground 2>"$work/shmmapd.log" &
shmmapd_pid=$!
# Ready once it answers: the socket exists from the start (bound before
# the segment is made), but a client gets in only once it listens.
wait_ready "$shmmapd_pid" shmmapd "$O/shmmapctl" -s "$work/shmmapd.sock" status

redis_arg=""
if command -v redis-server >/dev/null 2>&1; then
	redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 \
		--save '' --appendonly no --daemonize no --dir "$work" \
		--logfile "$work/redis.log" &
	redis_pid=$!
	wait_ready "$redis_pid" redis test -S "$work/redis.sock"
	redis_arg="$work/redis.sock"
elif [ -z "$short" ]; then
	echo "bench: redis-server is missing" >&2
	exit 2
fi

# In the background, so that a signal to this script alone (timeout, kill)
# runs the trap at once; the trap stops the program, whose workers die with
# it (PR_SET_PDEATHSIG).
${BENCH_WRAP:-} "$O/bench/bench" --shmmap-sock "$work/shmmapd.sock" --redis-sock "$redis_arg" \
	--lmdb-dir "$lmdb" "$@" &
bench_pid=$!
set +e
wait "$bench_pid"
rc=$?
set -e
bench_pid=""

# The Python benchmark: Debian's interpreter, the module just built.
if [ "${BENCH_PYTHON:-1}" != 0 ]; then
	echo
	PYTHONPATH="$O/python" "${PY:-/usr/bin/python3}" tests/bench/bench_python.py \
		--shmmap-sock "$work/shmmapd.sock" --redis-sock "$redis_arg" ${short:+--short} &
	bench_pid=$!
	set +e
	wait "$bench_pid"
	prc=$?
	set -e
	bench_pid=""
	[ $rc -ne 0 ] || rc=$prc
fi
exit $rc
