#!/usr/bin/env bash
# The demo job end to end: seed N voters, then with one `pgworker -c 8` running, all_in_one and
# the station chord (`voteradmin enqueue … --wait`), each printing "Total pages written: P in S s".
# Usage: DATABASE_URL=… BIN=.build/release [SEED=0] bench/voterrolls.sh [N …]   (default 10000 100000)
# SEED=0 runs on the voters already seeded (one N), for alternating builds without re-seeding.
set -euo pipefail
BIN="${BIN:-.build/release}"
sizes=("$@")
[ $# -eq 0 ] && sizes=(10000 100000)
out="$(mktemp -d /tmp/pgcanvas-rolls.XXXXXX)"
trap 'rm -rf "$out"' EXIT
for n in "${sizes[@]}"; do
    [ "${SEED:-1}" = 0 ] || "$BIN/voteradmin" seed "$n" --random-seed 1 >/dev/null
    psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs, canvas.chords" -c "DELETE FROM canvas.workers" -c "VACUUM ANALYZE"
    "$BIN/pgworker" -c 8 --loglevel warning --output-dir "$out" >/tmp/pgcanvas-rolls-worker.log 2>&1 &
    pid=$!
    sleep 1
    tasks=(assign_stations_and_generate_lists_with_chord all_in_one assign_stations_and_generate_lists_with_chord)
    [ "$n" -ge 1000000 ] && tasks=(assign_stations_and_generate_lists_with_chord)
    for task in "${tasks[@]}"; do
        rm -f "$out"/*.pdf
        line="$("$BIN/voteradmin" enqueue "$task" --wait | grep '^Total pages written')"
        echo "$n voters, $task: $line ($(ls "$out" | wc -l) PDFs)"
    done
    kill -TERM $pid
    wait $pid
done
