#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# Run the test programs given after "--" with the environment given before
# it; print each program's Check summary and a final
# "N passed, N failed, N skipped".  Exit non-zero if any program failed.
#
# A test that cannot run here (not root, a missing tool) says so with
# TU_SKIP (tests/testutil.h): one line "SKIP: TEST: why" in its program's
# output.  Such a test is counted as skipped, not as passed, and its line is
# shown under the program's summary.
set -u
builddir=$1; shift
while [ $# -gt 0 ] && [ "$1" != "--" ]; do export "$1"; shift; done
[ "${1:-}" = "--" ] && shift
pass=0; fail=0; skip=0; failed=""
for t in "$@"; do
	name=$(basename "$t")
	log="$builddir/tests/$name.log"
	if "$t" >"$log" 2>&1; then
		st=ok
	else
		st=FAIL; failed="$failed $name"
	fi
	summary=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -n 1)
	checks=$(echo "$summary" | sed -n 's/.*Checks: \([0-9]*\).*/\1/p')
	fails=$(echo "$summary" | sed -n 's/.*Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2/p')
	nf=0; for x in $fails; do nf=$((nf + x)); done
	[ -n "$checks" ] || { checks=0; [ $st = ok ] || nf=1; }
	[ $st = FAIL ] && [ $nf -eq 0 ] && nf=1
	ns=$(grep -c '^SKIP: ' "$log")
	# A test that skipped and then failed (in its teardown) is one failure.
	np=$((checks - nf - ns)); [ $np -ge 0 ] || { ns=$((checks - nf)); np=0; }
	pass=$((pass + np)); fail=$((fail + nf)); skip=$((skip + ns))
	extra=""; [ "$ns" -gt 0 ] && extra=", $ns skipped"
	printf '%-20s %s  %s%s\n' "$name" "$st" "${summary:-no Check summary (see $log)}" "$extra"
	grep '^SKIP: ' "$log" | sed 's/^/    /'
	[ $st = FAIL ] && sed -n '/:[EF]:/p' "$log" | head -n 20
done
echo "$pass passed, $fail failed, $skip skipped"
[ -z "$failed" ] || { echo "failed:$failed (logs in $builddir/tests/)"; exit 1; }
