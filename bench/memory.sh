#!/usr/bin/env bash
# Resident memory of a pgworker's supervisor and its pool processes while a canvas runs, sampled
# every half second from /proc: it must not grow with the number of jobs.
#   bench/memory.sh [N]            a chord of N no-op members (default 100000)
#   bench/memory.sh --voters N     seed N voters (--random-seed 1), then the station chord
#                                  (`voteradmin enqueue assign_stations_and_generate_lists_with_chord
#                                  --wait`), which writes the PDFs into a temporary folder
# Usage: DATABASE_URL=… BIN=.build/release bench/memory.sh [N | --voters N]
set -euo pipefail
BIN="${BIN:-.build/release}"
voters=""
if [ "${1:-}" = "--voters" ]; then
    voters="${2:?usage: bench/memory.sh --voters N}"
    "$BIN/voteradmin" seed "$voters" --random-seed 1 >/dev/null 2>&1
fi
out="$(mktemp -d /tmp/pgcanvas-memory.XXXXXX)"
psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs, canvas.chords" -c "DELETE FROM canvas.workers" \
    ${voters:+-c "VACUUM ANALYZE"}
"$BIN/pgworker" -c 8 --loglevel warning --output-dir "$out" >/dev/null 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null; rm -rf "$out"' EXIT
sleep 1.5
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
if [ -n "$voters" ]; then
    log=/tmp/pgcanvas-memory-voters.log
    "$BIN/voteradmin" enqueue assign_stations_and_generate_lists_with_chord --wait >"$log" 2>&1 &
else
    log=/tmp/pgcanvas-memory-chord.log
    "$BIN/canvas-bench" chord "${1:-100000}" >"$log" 2>&1 &
fi
bench=$!
echo "seconds supervisor_kib pool_max_kib pool_total_kib jobs_done"
start=$(date +%s.%N)
while kill -0 $bench 2>/dev/null; do
    pools=$(cat "/proc/$worker/task/$worker/children")
    max=0; total=0
    for p in $pools; do r=$(rss "$p"); total=$((total + r)); [ "$r" -gt "$max" ] && max=$r; done
    done_jobs=$(psql "$DATABASE_URL" -qAt -c "SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'")
    echo "$(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f') $(rss $worker) $max $total $done_jobs"
    sleep 0.5
done
# The last sample after the canvas ended: what each process kept.
pools=$(cat "/proc/$worker/task/$worker/children")
max=0; total=0
for p in $pools; do r=$(rss "$p"); total=$((total + r)); [ "$r" -gt "$max" ] && max=$r; done
echo "end $(rss $worker) $max $total $(psql "$DATABASE_URL" -qAt -c "SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'")"
grep -E '^Total pages written|chord' "$log" | tail -1 || tail -1 "$log"
