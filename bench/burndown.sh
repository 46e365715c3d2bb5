#!/usr/bin/env bash
# Burn-down: N pre-enqueued canvas.noop jobs drained by one `pgworker --concurrency C`.
# Prints jobs/s from the first claim to the last finish (server clock) and wall time.
# BACKLOG=M first adds M jobs due tomorrow on the same queue and M queued on another queue, which a
# claim must not read: the figure should match the one without them. With a backlog, a CHECKPOINT
# after the setup writes out what it dirtied (400 MB for a million), which the drain would
# otherwise share the cores with; without one (as bench/peers.sh runs it, beside a peer that has
# none) the setup is left as it is. CHECKPOINT=1 takes one without a backlog too: compare the two
# only so. After a checkpoint, the first change to each page writes the whole page to the WAL,
# and a drain that starts right after one pays that for every page it touches: with it on one
# side only, the backlog's drain read 9-13 % slower than the empty table's, against 5-7 % with
# it on both (docs/benchmarks.md).
# Usage: DATABASE_URL=… BIN=.build/release [BACKLOG=1000000] [CHECKPOINT=1] bench/burndown.sh [N] [C]
set -euo pipefail
BIN="${BIN:-.build/release}"
n="${1:-100000}"
c="${2:-8}"
backlog="${BACKLOG:-0}"
psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs" -c "DELETE FROM canvas.workers" \
    -c "INSERT INTO canvas.jobs (task, run_at) SELECT 'canvas.noop', now() + interval '1 day' FROM generate_series(1, $backlog)" \
    -c "INSERT INTO canvas.jobs (task, queue) SELECT 'canvas.noop', 'elsewhere' FROM generate_series(1, $backlog)" \
    -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, $n)" -c "VACUUM ANALYZE canvas.jobs"
if [ "$backlog" -gt 0 ] || [ "${CHECKPOINT:-0}" = 1 ]; then psql "$DATABASE_URL" -qAt -c "CHECKPOINT"; fi
measured="queue = 'default' AND run_at <= now()"
start=$(date +%s.%N)
"$BIN/pgworker" --concurrency "$c" --loglevel ${LOGLEVEL:-warning} ${WORKER_ARGS:-} >/tmp/pgcanvas-burndown.log 2>&1 &
pid=$!
# A look every 50 ms, each its own psql and transaction: one session looping in a DO block would
# be one long transaction, and its snapshot would stop the claims from marking the entries of
# claimed jobs dead (they would walk past all of them: half the throughput). EXISTS, not count(*):
# counting 100,000 index entries 20 times a second would take a good part of a core.
remaining="SELECT EXISTS (SELECT 1 FROM canvas.jobs WHERE state = 'queued' AND queue = 'default')
                OR EXISTS (SELECT 1 FROM canvas.jobs WHERE state = 'running')"
while [ "$(psql "$DATABASE_URL" -qAt -c "$remaining")" = t ]; do
    sleep 0.05
done
end=$(date +%s.%N)
kill -TERM $pid
wait $pid
psql "$DATABASE_URL" -qAt -F ' ' -c "SELECT count(*), round((count(*) / extract(epoch FROM max(finished_at) - min(started_at)))::numeric), max(attempt) FROM canvas.jobs WHERE $measured" |
    while read -r count rate attempts; do
        python3 -c "import sys; print(f'burn-down: {int(sys.argv[1]):,} jobs (backlog {int(sys.argv[6]):,} + {int(sys.argv[6]):,}), concurrency {sys.argv[4]}: {int(sys.argv[2]):,} jobs/s (first claim to last finish), wall {float(sys.argv[3]):.2f} s incl. start-up, max attempt {sys.argv[5]}')" "$count" "$rate" "$(python3 -c "print($end - $start)")" "$c" "$attempts" "$backlog"
    done
