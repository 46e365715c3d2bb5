#!/usr/bin/env bash
# `make bench`: every benchmark driver in turn, on the database DATABASE_URL names (its canvas
# tables are emptied). Figures go to stdout; docs/benchmarks.md has the write-up.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.build/release}"
export BIN

# Runs a command while one idle `pgworker -c 8` serves the database.
with_worker() {
    psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs, canvas.chords" -c "DELETE FROM canvas.workers"
    "$BIN/pgworker" -c 8 --loglevel warning >/dev/null 2>&1 &
    local pid=$!
    sleep 1.5
    "$@"
    kill -TERM $pid
    wait $pid
}
echo "== seed (voteradmin seed vs psql \\copy)"
bench/seed.sh
echo "== burn-down (100,000 canvas.noop, pgworker -c 8), then with 1,000,000 + 1,000,000 jobs it must not read"
bench/burndown.sh 100000 8
BACKLOG=1000000 bench/burndown.sh 100000 8
echo "== the ceiling: claim + finish in pure SQL, batches of 100 and 1,000; and by pgbench, one client"
bench/sql_ceiling.sh 100000 100 1000
bench/sql_ceiling_pgbench.sh 100000 100 200 500
echo "== bulk enqueue"
psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs"
"$BIN/canvas-bench" enqueue 100000
psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs"
psql "$DATABASE_URL" -qAt -c '\timing on' -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, 100000)" | sed 's/^/sql INSERT … SELECT of 100,000: /'
echo "== latency (idle worker, LISTEN/NOTIFY)"
with_worker "$BIN/canvas-bench" latency 300
echo "== chord of 100,000 canvas.noop with a canvas.noop body (pgworker -c 8)"
with_worker "$BIN/canvas-bench" chord 100000
echo "== the chord against the plain drain (issue 14), and its enqueue from the CLI"
ROUNDS=3 bench/chord_vs_plain.sh 100000 8
echo "== voter rolls: all_in_one and the station chord (pgworker -c 8)"
bench/voterrolls.sh 10000 100000 1000000
"$BIN/canvas-bench" pdf 200
echo "== beat: 1,000 schedules every second, two beat processes"
bench/beat.sh
echo "== pgqueuer 1.6 as it runs itself (../shared/bench/peer_queues.py), against each pool, interleaved"
bench/peers.sh 100000 3 prefork threads async
