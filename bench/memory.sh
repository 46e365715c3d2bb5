#!/usr/bin/env bash
# Resident memory of a pgworker's supervisor and its pool processes while a chord of N no-op
# members runs, sampled every half second from /proc: it must not grow with the number of jobs.
# Usage: DATABASE_URL=… BIN=.build/release bench/memory.sh [N]
set -euo pipefail
BIN="${BIN:-.build/release}"
n="${1:-100000}"
psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs, canvas.chords" -c "DELETE FROM canvas.workers"
"$BIN/pgworker" -c 8 --loglevel warning >/dev/null 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT
sleep 1.5
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
"$BIN/canvas-bench" chord "$n" >/tmp/pgcanvas-memory-chord.log 2>&1 &
bench=$!
echo "seconds supervisor_kib pool_max_kib pool_total_kib jobs_done"
t=0
while kill -0 $bench 2>/dev/null; do
    pools=$(cat "/proc/$worker/task/$worker/children")
    max=0; total=0
    for p in $pools; do r=$(rss "$p"); total=$((total + r)); [ "$r" -gt "$max" ] && max=$r; done
    done_jobs=$(psql "$DATABASE_URL" -qAt -c "SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'")
    echo "$t $(rss $worker) $max $total $done_jobs"
    sleep 0.5
    t=$(python3 -c "print(round($t + 0.5, 1))")
done
tail -1 /tmp/pgcanvas-memory-chord.log
