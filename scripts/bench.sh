#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# scripts/bench.sh - build and run the benchmark of issues 6 and 14
# (tests/bench/bench.c): shmmap side by side with the ceiling (an in-process
# open-addressing table with keys and values inline), LMDB and Redis, with
# instructions per get and put under callgrind, ending in the summary of
# issue 14's targets; then the Python binding's of issue 15
# (tests/bench/bench_python.py): gets/s of one Python process against a
# dict, a multiprocessing Manager dict and redis-py, on the same servers.
#
#   scripts/bench.sh [--short] [bench options...]
#
# Installs liblmdb-dev, libhiredis-dev, redis-server, python3-redis and
# valgrind if missing (Debian), builds the Python module (make python),
# builds build/bench/bench against build/libshmmap.a, starts a private shmmapd
# (temp config and socket, a unique /dev/shm segment, 512M, the default
# [map] config) and a private redis-server (Unix socket in a temp dir, no
# TCP port, no persistence), counts instructions per operation (12 short
# callgrind runs, below), runs the benchmarks, and stops and removes all of
# it, even on failure or interrupt.  The LMDB environment lives in a temp
# dir on /dev/shm (tmpfs, like the shmmap segment) when there is one.
#
# --short is the CI smoke mode (~15 s): tiny key counts; if Redis, LMDB or
# valgrind cannot be installed it runs without them (and the Python
# benchmark without redis-py).  Extra arguments go to the C
# program (see the head of tests/bench/bench.c), e.g. --systems shmmap,ceiling
# --sizes 16 --ops get.  $O is the build directory (default build), $CC the
# compiler, $BENCH_WRAP a command to run the program under, for profiling, e.g.
#   BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" \
#     scripts/bench.sh --systems shmmap,ceiling --sizes 16 --ops get --procs 1
# $BENCH_PYTHON=0 skips the Python benchmark, $BENCH_CALLGRIND=0 the
# instruction counts.
# Exit status: 0, or 1 if a cell of either benchmark or a callgrind run
# failed.
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
for p in liblmdb-dev libhiredis-dev redis-server python3-redis valgrind; do
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
# valgrind/callgrind.h (Debian's valgrind package): client requests around
# the measured part of --count; without it the driver subtracts whole runs.
cg_flags=""
if [ -f /usr/include/valgrind/callgrind.h ]; then
	defs="$defs -DHAVE_CALLGRIND"
	cg_flags="--instr-atstart=no --collect-atstart=no"
fi
mkdir -p "$O/bench"
# The project's flags (Makefile WARN), plus the peers that are installed.
$CC -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Ishmmap \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Wno-format-nonliteral -pthread $defs \
	-o "$O/bench/bench" tests/bench/bench.c "$O/libshmmap.a" $libs -lrt -lm

# ---- private servers, removed on any exit ----
work=$(mktemp -d "${TMPDIR:-/tmp}/shmmap-bench.XXXXXX")
# Absolute: the socket path in its config must be (a relative $TMPDIR).
case $work in /*) ;; *) work=$PWD/$work ;; esac
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

. scripts/bench-lib.sh

cat >"$work/shmmap.ini" <<EOF
[segment]
name = $seg
size = 512M
max_clients = 32

[server]
socket = $work/shmmapd.sock
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

# ---- instructions per operation, under callgrind ----
# For each system (shmmap, the ceiling, and the empty loop whose count the
# program takes out of the others') and each of get and put: the program's
# --count mode twice, with N operations and with 0, in one process each
# (16 B keys, 64 B values, uniform keys; the table loaded and warmed up
# first, uninstrumented); (Ir(N) - Ir(0)) / N is the figure, passed on to
# the program with --instr for its tables.  The profiles of the N runs stay
# in $O/bench/callgrind.SYSTEM.OP (callgrind_annotate FILE).
# $BENCH_CALLGRIND=0 skips this.
instr=""
instr_failed=""
ir_total() { # system op count: prints what callgrind collected (Ir)
	f="$work/callgrind.$1.$2.$3"
	if ! valgrind --tool=callgrind $cg_flags --callgrind-out-file="$f" \
		"$O/bench/bench" --shmmap-sock "$work/shmmapd.sock" --count "$3" \
		--systems "$1" --ops "$2" --sizes 16 --keys "$cg_keys" >"$f.log" 2>&1; then
		echo "bench: callgrind: $1 $2 --count $3 failed; its log:" >&2
		cat "$f.log" >&2
		return 1
	fi
	# "totals:" (the events of every part), else "summary:".
	awk '$1 == "totals:" { t = $2 } $1 == "summary:" { s = $2 }
		END { if (t != "") print t; else if (s != "") print s }' "$f"
}
if [ "${BENCH_CALLGRIND:-1}" = 0 ]; then
	:
elif ! command -v valgrind >/dev/null 2>&1; then
	echo "bench: valgrind is missing: no instruction counts" >&2
	[ -n "$short" ] || exit 2
else
	if [ -n "$short" ]; then cg_keys=2000 cg_n=2000; else cg_keys=100000 cg_n=100000; fi
	for sys in shmmap ceiling loop; do
		for op in get put; do
			echo "bench: callgrind: $sys $op, $cg_n ops" >&2
			if ir0=$(ir_total $sys $op 0) && irn=$(ir_total $sys $op $cg_n) &&
				[ -n "$ir0" ] && [ -n "$irn" ]; then
				per=$(awk -v a="$ir0" -v b="$irn" -v n="$cg_n" \
					'BEGIN { printf "%.1f", (b - a) / n }')
				instr="$instr${instr:+,}$sys:$op=$per"
				cp "$work/callgrind.$sys.$op.$cg_n" "$O/bench/callgrind.$sys.$op"
			else
				instr_failed=1
			fi
		done
	done
fi

# The program writes the summary of targets to $O/bench/summary.txt too
# (make bench prints it again at its very end).
rm -f "$O/bench/summary.txt"
# In the background, so that a signal to this script alone (timeout, kill)
# runs the trap at once; the trap stops the program, whose workers die with
# it (PR_SET_PDEATHSIG).
${BENCH_WRAP:-} "$O/bench/bench" --shmmap-sock "$work/shmmapd.sock" --redis-sock "$redis_arg" \
	--lmdb-dir "$lmdb" ${instr:+--instr "$instr"} --summary "$O/bench/summary.txt" "$@" &
bench_pid=$!
set +e
wait "$bench_pid"
rc=$?
set -e
bench_pid=""
[ -z "$instr_failed" ] || rc=1
# Whether the system gave the segment huge pages ([segment] huge_pages is
# on by default; /dev/shm must allow them: see shmmap.ini(5)).
hp=$("$O/shmmapctl" -s "$work/shmmapd.sock" status 2>/dev/null | sed -n 's/^huge pages *//p')
echo "shmmap's segment, huge pages: ${hp:-unknown}"
[ ! -f "$O/bench/summary.txt" ] ||
	echo "shmmap's segment, huge pages: ${hp:-unknown}" >>"$O/bench/summary.txt"

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
