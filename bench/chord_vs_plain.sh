#!/usr/bin/env bash
# A chord of N canvas.noop members (canvas.noop body) against N plain canvas.noop jobs, drained by
# one `pgworker --concurrency C` started after the enqueue in both cases, alternating, ROUNDS
# rounds. Both on the server's clock: plain = first claim to last finish; chord = min(started_at)
# of the members to the body's finished_at. Also times the chord's enqueue from the CLI
# (`voteradmin enqueue --canvas FILE`, a JSON file; wall clock, process start included).
# Usage: DATABASE_URL=… BIN=.build/release [ROUNDS=3] bench/chord_vs_plain.sh [N] [C]
set -euo pipefail
BIN="${BIN:-.build/release}"
n="${1:-100000}"
c="${2:-8}"
rounds="${ROUNDS:-3}"
file="${CHORD_FILE:-/tmp/pgcanvas-chord-$n.json}"
log="${WORKER_LOG:-/tmp/pgcanvas-chord-vs-plain.log}"
python3 -c "import json, sys; n = int(sys.argv[1]); json.dump({'chord': [{'task': 'canvas.noop'}] * n, 'body': {'task': 'canvas.noop'}}, open(sys.argv[2], 'w'))" "$n" "$file"

now() { date +%s.%N; }
reset() {
    psql "$DATABASE_URL" -qAt -c "SET client_min_messages = warning" -c "TRUNCATE canvas.jobs, canvas.chords CASCADE" \
        -c "DELETE FROM canvas.workers" >/dev/null
}
# Drains what is queued with one worker; returns once `done_sql` says 't'.
drain() {
    local done_sql="$1"
    "$BIN/pgworker" --concurrency "$c" --loglevel "${LOGLEVEL:-warning}" >>"$log" 2>&1 &
    local pid=$!
    until [ "$(psql "$DATABASE_URL" -qAt -c "$done_sql")" = t ]; do sleep 0.05; done
    kill -TERM $pid
    wait $pid || true
}

plain_times=()
chord_times=()
enqueue_times=()
: >"$log"
for round in $(seq 1 "$rounds"); do
    reset
    psql "$DATABASE_URL" -qAt -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, $n)" \
        -c "VACUUM ANALYZE canvas.jobs" >/dev/null
    # Each probe is served by a partial index, so watching does not load the server.
    drain "SELECT NOT EXISTS (SELECT 1 FROM canvas.jobs WHERE state = 'queued' AND queue = 'default')
                  AND NOT EXISTS (SELECT 1 FROM canvas.jobs WHERE state = 'running')"
    read -r plain plain_batches <<<"$(psql "$DATABASE_URL" -qAt -F ' ' -c "
        SELECT round(extract(epoch FROM max(finished_at) - min(started_at))::numeric, 3), count(DISTINCT finished_at)
        FROM canvas.jobs WHERE state = 'succeeded'")"
    plain_times+=("$plain")

    reset
    t0=$(now)
    root=$("$BIN/voteradmin" enqueue --canvas "$file")
    t1=$(now)
    enqueue=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    enqueue_times+=("$enqueue")
    psql "$DATABASE_URL" -qAt -c "VACUUM ANALYZE canvas.jobs" >/dev/null
    drain "SELECT state <> 'pending' FROM canvas.chords WHERE id = $root"
    # One finish transaction stamps one finished_at: distinct stamps count the batches.
    read -r chord state members chord_batches tail <<<"$(psql "$DATABASE_URL" -qAt -F ' ' -c "
        SELECT round(extract(epoch FROM b.finished_at - min(m.started_at))::numeric, 3), b.state,
               count(*) FILTER (WHERE m.state = 'succeeded'), count(DISTINCT m.finished_at),
               round(extract(epoch FROM b.finished_at - max(m.finished_at))::numeric, 3)
        FROM canvas.chords ch JOIN canvas.jobs b ON b.id = ch.body_id JOIN canvas.jobs m ON m.chord_id = ch.id
        WHERE ch.kind = 'chord' GROUP BY b.finished_at, b.state")"
    [ "$state" = succeeded ] && [ "$members" = "$n" ] || { echo "chord did not succeed: body $state, $members members" >&2; exit 1; }
    chord_times+=("$chord")
    python3 -c "import sys; p, ch, e = map(float, sys.argv[1:4]); print(f'round {sys.argv[4]}: plain {p:.3f} s ({int(sys.argv[5]) / p:,.0f} jobs/s, {sys.argv[6]} batches), chord {ch:.3f} s ({sys.argv[7]} batches; body finished {sys.argv[8]} s after the last member): {ch / p:.2f}x; CLI enqueue {e:.3f} s')" \
        "$plain" "$chord" "$enqueue" "$round" "$n" "$plain_batches" "$chord_batches" "$tail"
done
python3 - "$n" "$c" "${plain_times[*]}" "${chord_times[*]}" "${enqueue_times[*]}" <<'PY'
import statistics, sys
n, c = int(sys.argv[1]), int(sys.argv[2])
plain, chord, enq = ([float(x) for x in a.split()] for a in sys.argv[3:6])
ratios = [ch / p for p, ch in zip(plain, chord)]
print(f"{n:,} members / jobs, pgworker -c {c}, {len(plain)} rounds (plain, then chord, alternating)")
print(f"plain drain (first claim to last finish): median {statistics.median(plain):.3f} s  [{', '.join(f'{x:.3f}' for x in plain)}]")
print(f"chord (first member start to body finish): median {statistics.median(chord):.3f} s  [{', '.join(f'{x:.3f}' for x in chord)}]")
print(f"ratio per round: {', '.join(f'{r:.2f}' for r in ratios)}; median of medians {statistics.median(chord) / statistics.median(plain):.2f}x")
print(f"CLI enqueue (voteradmin enqueue --canvas FILE): median {statistics.median(enq):.3f} s  [{', '.join(f'{x:.3f}' for x in enq)}]")
PY
