#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# Run the test programs given after "--" with the environment given before
# it; print each program's Check summary and a final "N passed, N failed".
# Exit non-zero if any program failed.
set -u
builddir=$1; shift
while [ $# -gt 0 ] && [ "$1" != "--" ]; do export "$1"; shift; done
[ "${1:-}" = "--" ] && shift
pass=0; fail=0; failed=""
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
	pass=$((pass + checks - nf)); fail=$((fail + nf))
	printf '%-20s %s  %s\n' "$name" "$st" "${summary:-no Check summary (see $log)}"
	[ $st = FAIL ] && sed -n '/:[EF]:/p' "$log" | head -n 20
done
echo "$pass passed, $fail failed"
[ -z "$failed" ] || { echo "failed:$failed (logs in $builddir/tests/)"; exit 1; }
