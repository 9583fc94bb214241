# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# scripts/bench-lib.sh - sourced by the bench scripts (POSIX sh).
#
# wait_ready PID NAME COMMAND...: run COMMAND every 50 ms until it
# succeeds (a server is ready once it answers); after 10 s, or once PID
# has died, print $work/NAME.log (the server's log) and return 1.
wait_ready() {
	wpid=$1 wname=$2
	shift 2
	i=0
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$wpid" 2>/dev/null || [ $i -ge 200 ]; then
			echo "$(basename "$0"): $wname did not start; its log:" >&2
			cat "$work/$wname.log" >&2 || true
			return 1
		fi
		sleep 0.05
		i=$((i + 1))
	done
}
