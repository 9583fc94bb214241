#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# scripts/fuzz.sh - build and run the libFuzzer targets in tests/fuzz/:
#   proto    the attach-protocol decoder and encoder (proto.c)
#   conf     the INI config loader (conf.c, on inih)
#   segment  validation, reads, checker, writes and repairs on a patched
#            segment image (segment.c, table.c, check.c, alloc.c, sweep.c)
#
#   scripts/fuzz.sh [--short] [TARGET...]
#
# Installs clang and the libFuzzer runtime if missing (Debian), builds each
# target with ASan and UBSan into build-fuzz/, then runs each for
# $FUZZ_SECONDS seconds (default 60; --short: 10, the CI smoke run) on a
# working corpus in build-fuzz/corpus/TARGET/, seeded from
# tests/fuzz/corpus/TARGET/ (never written to; conf also gets the configs in
# tests/data/conf/ and conf/).  The working corpus is kept between runs.
# Prints one line per target; a crash, leak, timeout or out-of-memory leaves
# its input in build-fuzz/artifacts/ and the log in build-fuzz/TARGET.log.
# Reproduce one with:  build-fuzz/fuzz_TARGET build-fuzz/artifacts/FILE
# Exit status: 0 if no target failed, 1 if one did, 2 if it could not build.
# shellcheck disable=SC2086 # flag and file lists are split on purpose
set -eu
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=""
for a in "$@"; do
	case "$a" in
	--short) seconds=10 ;;
	proto|conf|segment) targets="$targets $a" ;;
	*) echo "usage: $0 [--short] [proto|conf|segment]..." >&2; exit 2 ;;
	esac
done
[ -n "$targets" ] || targets="proto conf segment"

CLANG=${CLANG:-clang}
B=build-fuzz

# ---- packages ----
# clang, and libFuzzer's runtime (libclang-rt-14-dev on Debian 12, pulled in
# by libclang-rt-dev): present if a trivial target links.
fuzzer_links() {
	command -v "$CLANG" >/dev/null 2>&1 || return 1
	mkdir -p "$B"
	printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\n%s\n' \
		'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
		>"$B/probe.c"
	"$CLANG" -fsanitize=fuzzer,address,undefined -o "$B/probe" "$B/probe.c" >/dev/null 2>&1
}
if ! fuzzer_links; then
	echo "fuzz: installing clang libclang-rt-dev" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev >/dev/null
	if ! fuzzer_links; then
		echo "fuzz: $CLANG cannot build a libFuzzer target" >&2
		exit 2
	fi
fi
rm -f "$B/probe" "$B/probe.c"

# ---- build ----
# The library sources, as the Makefile lists them.
# shellcheck disable=SC2016 # $(LIB_SRCS) is for make
lib_srcs=$(printf 'fuzz-print-lib-srcs:\n\t@echo $(LIB_SRCS)\n' |
	env -u MAKEFLAGS -u MAKELEVEL ${MAKE:-make} -s --no-print-directory -f Makefile -f - \
		fuzz-print-lib-srcs)
[ -n "$lib_srcs" ] || { echo "fuzz: no LIB_SRCS in the Makefile" >&2; exit 2; }
cflags="-g -O1 -fno-omit-frame-pointer -std=c11 -Wall -Wextra -Iinclude -Ishmmap -D_GNU_SOURCE -pthread"
cflags="$cflags -fno-sanitize-recover=undefined" # a UBSan report is a crash
inih_cflags=$(pkg-config --cflags inih)
inih_libs=$(pkg-config --libs inih)

mkdir -p "$B/obj" "$B/artifacts"
objs=""
for src in $lib_srcs shmmap/conf.c; do
	obj="$B/obj/$(basename "$src" .c).o"
	"$CLANG" $cflags $inih_cflags -fsanitize=fuzzer-no-link,address,undefined -c "$src" -o "$obj" ||
		{ echo "fuzz: cannot compile $src" >&2; exit 2; }
	[ "$src" = shmmap/conf.c ] || objs="$objs $obj"
done
for t in $targets; do
	extra=""
	[ "$t" = conf ] && extra="$B/obj/conf.o $inih_libs"
	"$CLANG" $cflags -fsanitize=fuzzer,address,undefined -o "$B/fuzz_$t" \
		"tests/fuzz/fuzz_$t.c" $objs $extra -lrt ||
		{ echo "fuzz: cannot build fuzz_$t" >&2; exit 2; }
done

# ---- run ----
failed=""
for t in $targets; do
	corpus="$B/corpus/$t"
	mkdir -p "$corpus"
	cp tests/fuzz/corpus/"$t"/* "$corpus"/
	if [ "$t" = conf ]; then
		for f in tests/data/conf/*.ini conf/shmmap.ini; do
			cp "$f" "$corpus/$(echo "$f" | tr / _)"
		done
	fi
	log="$B/$t.log"
	start=$(date +%s)
	rc=0
	"$B/fuzz_$t" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$B/artifacts/$t-" "$corpus" >"$log" 2>&1 || rc=$?
	took=$(($(date +%s) - start))
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
	[ -n "$runs" ] || runs=$(echo "$last" | sed -n 's/^#\([0-9]*\).*/\1/p')
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
	if [ "$rc" -eq 0 ]; then
		st=ok
	else
		st=FAIL
		failed="$failed $t"
	fi
	printf 'fuzz_%-8s %-4s runs %-9s cov %-5s ft %-5s corpus %-5s %ss\n' "$t" "$st" \
		"${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$took"
	if [ "$st" = FAIL ]; then
		grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | head -n 3 | sed 's/^/    /'
		sed -n 's/.*Test unit written to \(.*\)/    input: \1/p' "$log"
		echo "    log: $log; reproduce: $B/fuzz_$t INPUT"
	fi
done
[ -z "$failed" ] || { echo "fuzz: failed:$failed"; exit 1; }
