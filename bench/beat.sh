#!/usr/bin/env bash
# Beat: 1,000 schedules firing every second, two `pgworker --beat` processes, ~15 s.
# Prints fire-time lag (fired_at - fire_at) p50/p99/max, firings, duplicates and gaps.
# Usage: DATABASE_URL=… BIN=.build/release bench/beat.sh
set -euo pipefail
BIN="${BIN:-.build/release}"
psql "$DATABASE_URL" -qAt -c "SET client_min_messages = warning" -c "TRUNCATE canvas.jobs, canvas.chords, canvas.schedules CASCADE" -c "DELETE FROM canvas.workers" \
    -c "INSERT INTO canvas.schedules (name, canvas, every_seconds, next_fire_at)
        SELECT 'bench-' || i, '{\"task\": \"canvas.noop\"}', 1, date_trunc('second', now()) + interval '2 seconds'
        FROM generate_series(1, 1000) i"
pids=()
for i in 1 2; do
    "$BIN/pgworker" -c 2 --beat --loglevel warning >/tmp/pgcanvas-beat-$i.log 2>&1 &
    pids+=($!)
done
sleep 15
kill -TERM "${pids[@]}"
wait "${pids[@]}" || true
psql "$DATABASE_URL" -qAt -F ' ' -c "
    WITH f AS (SELECT schedule_id, fire_at, extract(epoch FROM fired_at - fire_at) * 1000 AS lag_ms,
                      fire_at - lag(fire_at) OVER (PARTITION BY schedule_id ORDER BY fire_at) AS gap
               FROM canvas.schedule_firings)
    SELECT count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1), round(max(lag_ms)::numeric, 1),
           count(*) - count(DISTINCT (schedule_id, fire_at)), count(*) FILTER (WHERE gap <> interval '1 second')
    FROM f" | while read -r n p50 p99 max dup gaps; do
    echo "beat: 1,000 schedules every second, 2 beat processes, 15 s: $n firings, lag p50 ${p50} ms, p99 ${p99} ms, max ${max} ms; duplicates $dup; gaps $gaps"
done
psql "$DATABASE_URL" -qAt -c "SET client_min_messages = warning" -c "TRUNCATE canvas.schedules CASCADE"
