#!/usr/bin/env bash
# Burn-down: N pre-enqueued canvas.noop jobs drained by one `pgworker --concurrency C`.
# Prints jobs/s from the first claim to the last finish (server clock) and wall time.
# Usage: DATABASE_URL=… BIN=.build/release bench/burndown.sh [N] [C]
set -euo pipefail
BIN="${BIN:-.build/release}"
n="${1:-100000}"
c="${2:-8}"
psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs" -c "DELETE FROM canvas.workers" \
    -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, $n)" -c "VACUUM ANALYZE canvas.jobs"
start=$(date +%s.%N)
"$BIN/pgworker" --concurrency "$c" --loglevel ${LOGLEVEL:-warning} ${WORKER_ARGS:-} >/tmp/pgcanvas-burndown.log 2>&1 &
pid=$!
while [ "$(psql "$DATABASE_URL" -qAt -c "SELECT count(*) FROM canvas.jobs WHERE state <> 'succeeded'")" != 0 ]; do
    sleep 0.1
done
end=$(date +%s.%N)
kill -TERM $pid
wait $pid
psql "$DATABASE_URL" -qAt -F ' ' -c "SELECT count(*), round((count(*) / extract(epoch FROM max(finished_at) - min(started_at)))::numeric), max(attempt) FROM canvas.jobs" |
    while read -r count rate attempts; do
        python3 -c "import sys; print(f'burn-down: {int(sys.argv[1]):,} jobs, concurrency {sys.argv[4]}: {int(sys.argv[2]):,} jobs/s (first claim to last finish), wall {float(sys.argv[3]):.2f} s incl. start-up, max attempt {sys.argv[5]}')" "$count" "$rate" "$(python3 -c "print($end - $start)")" "$c" "$attempts"
    done
