#!/bin/sh
# scripts/bench-growth.sh - build and run the growth benchmark of issue 11
# (tests/bench/grow.c): shmmap with the DEFAULT [map] config (maps start at
# 4096 buckets and grow online) next to an in-process open-addressing table,
# at 100k, 1M and 4M keys: load time, gets and puts.
#
#   scripts/bench-growth.sh [--short] [grow options...]
#
# Builds build/bench/grow against build/libshmmap.a, starts a private
# shmmapd (temp config and socket, a unique segment of 1536M, no [map]
# section), runs the program; then again with maps sized up front (the
# reference a growing map should match); then the segment growing under a
# writer of 100 KB values (tests/bench/seggrow.c: how long puts wait for a
# growth step); stops and removes all of it on any exit.
# $O is the build directory (default build), $CC the compiler.
set -eu
cd "$(dirname "$0")/.."
O=${O:-build}
CC=${CC:-cc}

if [ ! -f "$O/libshmmap.a" ] || [ ! -x "$O/shmmapd" ]; then
	${MAKE:-make} --no-print-directory O="$O" all
fi
mkdir -p "$O/bench"
$CC -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Ishmmap \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Wno-format-nonliteral -pthread \
	-o "$O/bench/grow" tests/bench/grow.c "$O/libshmmap.a" -lrt -lm
$CC -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Wno-format-nonliteral -pthread \
	-o "$O/bench/seggrow" tests/bench/seggrow.c "$O/libshmmap.a" -lrt -lm

work=$(mktemp -d "${TMPDIR:-/tmp}/shmmap-grow.XXXXXX")
# Absolute: the socket path in its config must be (a relative $TMPDIR).
case $work in /*) ;; *) work=$PWD/$work ;; esac
seg="/shmmap-grow-$$-$(date +%s)"
pid=""
cleanup() {
	trap - EXIT INT TERM HUP
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -f "/dev/shm$seg" "/dev/shm$seg.lock"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

. scripts/bench-lib.sh
start() { # extra config lines [segment lines, default: size = 1536M]
	cat >"$work/shmmap.ini" <<CONF
[segment]
name = $seg
${2:-size = 1536M}
max_clients = 8

[server]
socket = $work/shmmapd.sock
$1
CONF
	rm -f "$work/shmmapd.sock"
	"$O/shmmapd" -c "$work/shmmap.ini" --foreground 2>"$work/shmmapd.log" &
	pid=$!
	# Ready once it answers (the socket file exists, bound, before the
	# coordinator listens: only then does a client get in).
	wait_ready "$pid" shmmapd "$O/shmmapctl" -s "$work/shmmapd.sock" status || exit 1
}
stop() {
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=""
	rm -f "/dev/shm$seg" "/dev/shm$seg.lock"
}

# No [map] section: the defaults are what is measured.
start ""
"$O/bench/grow" --sock "$work/shmmapd.sock" "$@"
stop
# The reference: every map sized up front for the largest count (4M
# buckets, no growth), as a tuned config would be.
echo
start "[map]
buckets = 4194304
max_buckets = 4194304"
"$O/bench/grow" --sock "$work/shmmapd.sock" --label "maps sized up front (4194304 buckets, no growth)" "$@"
stop

# The segment growing under a writer (tests/bench/seggrow.c): the default
# size (64M) and max_size 4G (short: 512M), 100 KB values as fast as one
# writer stores them; how long its puts wait for the growth.
short=""
for a in "$@"; do
	[ "$a" = "--short" ] && short=1
done
echo
if [ -n "$short" ]; then max=512M mb=400; else max=4G mb=3000; fi
start "" "max_size = $max"
"$O/bench/seggrow" --sock "$work/shmmapd.sock" --mb "$mb" \
	--label "segment growth (size 64M, max_size $max)"
hp=$("$O/shmmapctl" -s "$work/shmmapd.sock" status 2>/dev/null | sed -n 's/^huge pages *//p')
echo "  huge pages: ${hp:-unknown}"
