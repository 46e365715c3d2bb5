#!/usr/bin/env bash
# Pruning: 1,000,000 finished jobs older than the age (a tenth of them members of 20,000
# finished chords, finished in batches of 500 as canvas.finish records them), deleted by
# canvas.prune the way Pruner.swift calls it: one batch per transaction, the cursor carried from
# one call to the next, until a batch comes back short. Prints rows/s and the batch times.
# With BIN set, then does it again through one idle `pgworker` (default heartbeat: a second of
# batches every heartbeat while behind), which is what a fleet gets: one pruner at a time.
# Replaces what the database's canvas tables hold.
# Usage: DATABASE_URL=… [BIN=.build/release] bench/prune.sh
set -euo pipefail
JOBS="${JOBS:-1000000}"
BATCH="${BATCH:-5000}"
load() {
psql "$DATABASE_URL" -qAt -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
    -c "TRUNCATE canvas.jobs, canvas.chords, canvas.schedules CASCADE" \
    -c "INSERT INTO canvas.chords (kind, size, remaining, state, finished_at)
        SELECT 'group', 5, 0, 'succeeded', now() - interval '2 days' FROM generate_series(1, $JOBS / 50)" \
    -c "INSERT INTO canvas.jobs (task, state, result, created_at, started_at, finished_at, chord_id, position)
        SELECT 'canvas.add', 'succeeded', '3', now() - interval '3 days', now() - interval '3 days',
               now() - interval '3 days' + (g / 500) * interval '10 ms',
               CASE WHEN g % 10 = 0 THEN c.first + (g / 10) % ($JOBS / 50) END, CASE WHEN g % 10 = 0 THEN 0 END
        FROM generate_series(1, $JOBS) g, (SELECT min(id) AS first FROM canvas.chords) c" \
    -c "VACUUM ANALYZE canvas.jobs" -c "VACUUM ANALYZE canvas.chords"
}
load
psql "$DATABASE_URL" -qAt -v ON_ERROR_STOP=1 -c "SET client_min_messages = notice" -c "
DO \$\$
DECLARE
    r record;
    at timestamptz;
    id bigint;
    started timestamptz := clock_timestamp();
    t timestamptz;
    ms double precision[] := '{}';
    jobs bigint := 0;
    chords bigint := 0;
    secs double precision;
BEGIN
    LOOP
        t := clock_timestamp();
        SELECT * INTO r FROM canvas.prune('1 day', $BATCH, at, id);
        COMMIT;
        ms := ms || extract(epoch FROM clock_timestamp() - t) * 1000;
        jobs := jobs + r.jobs;
        chords := chords + r.chords;
        -- As Pruner.swift: a full batch of chord members (no cursor, jobs reach the batch) has more.
        EXIT WHEN r.next_at IS NULL AND r.jobs < $BATCH AND r.chords < $BATCH;
        at := r.next_at;
        id := r.next_id;
    END LOOP;
    secs := extract(epoch FROM clock_timestamp() - started);
    RAISE NOTICE 'prune: % jobs and % chords in % batches of $BATCH, % s: % rows/s; batch p50 % ms, p99 % ms, max % ms',
        jobs, chords, cardinality(ms), round(secs::numeric, 2), round(((jobs + chords) / secs)::numeric),
        (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY m)::numeric, 1) FROM unnest(ms) m),
        (SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY m)::numeric, 1) FROM unnest(ms) m),
        (SELECT round(max(m)::numeric, 1) FROM unnest(ms) m);
END
\$\$" 2>&1 | sed 's/^NOTICE: *//'
psql "$DATABASE_URL" -qAt -c "SELECT 'left: ' || (SELECT count(*) FROM canvas.jobs) || ' jobs, ' || (SELECT count(*) FROM canvas.chords) || ' chords'"
if [ -n "${BIN:-}" ]; then
    load
    psql "$DATABASE_URL" -qAt -c "DELETE FROM canvas.workers"
    started=$(date +%s.%N)
    "$BIN/pgworker" -c 1 --prune-after 86400 --loglevel warning >/tmp/pgcanvas-prune-bench.log 2>&1 &
    worker=$!
    until [ "$(psql "$DATABASE_URL" -qAt -c "SELECT count(*) FROM canvas.jobs")" = 0 ]; do sleep 0.2; done
    ended=$(date +%s.%N)
    kill -TERM "$worker"
    wait "$worker" || true
    echo "prune: one pgworker (heartbeat 2 s): $JOBS jobs in $(echo "$ended - $started" | bc -l | xargs printf %.2f) s:" \
        "$(echo "$JOBS / ($ended - $started)" | bc -l | xargs printf %.0f) rows/s (worker start included)"
fi
