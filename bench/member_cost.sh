#!/usr/bin/env bash
# What a chord member costs the broker beyond a plain job, on the server: 100,000 plain jobs,
# then a 100,000-member chord (`voteradmin enqueue --canvas`), each claimed and finished BATCH at
# a time by a DO block on the server (canvas.claim, then canvas.finish with every run succeeded),
# 250 batches in a row, committing each. Prints the median claim and finish of a batch for each,
# alternating RUNS times. No worker, no client round trips: the SQL alone.
# Usage: DATABASE_URL=… [BIN=.build/release] [BATCH=366] [RUNS=2] bench/member_cost.sh
set -euo pipefail
BIN="${BIN:-.build/release}"
batch="${BATCH:-366}"
file="/tmp/pgcanvas-member-cost-chord.json"
python3 -c "import json, sys; json.dump({'chord': [{'task': 'canvas.noop'}] * 100000, 'body': {'task': 'canvas.noop'}}, open(sys.argv[1], 'w'))" "$file"
for run in $(seq 1 "${RUNS:-2}"); do
    for kind in plain chord; do
        psql "$DATABASE_URL" -qAt -c "SET client_min_messages = warning" -c "TRUNCATE canvas.jobs, canvas.chords CASCADE" \
            -c "DELETE FROM canvas.workers" >/dev/null
        if [ "$kind" = plain ]; then
            psql "$DATABASE_URL" -qAt -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, 100000)" >/dev/null
        else
            "$BIN/voteradmin" enqueue --canvas "$file" >/dev/null
        fi
        psql "$DATABASE_URL" -qAt -c "VACUUM ANALYZE canvas.jobs" >/dev/null
        psql "$DATABASE_URL" -qAt 2>&1 <<SQL | sed 's/^NOTICE:  //' | python3 -c "
import statistics, sys
v = [float(x) for x in sys.stdin.read().split()]
print(f'$kind: batch of $batch, median claim {statistics.median(v[1::2]):.3f} ms, finish {statistics.median(v[0::2]):.3f} ms ({len(v) // 2} batches)')"
DO \$\$
DECLARE
    w bigint := canvas.register_worker('member-cost', 1, '{default}', $batch, 60, 600);
    ids bigint[];
    attempts integer[];
    t0 timestamptz;
    t1 timestamptz;
BEGIN
    COMMIT;
    FOR i IN 1 .. 250 LOOP
        t1 := clock_timestamp();
        SELECT array_agg(c.id ORDER BY c.id), array_agg(c.attempt ORDER BY c.id) INTO ids, attempts
        FROM canvas.claim(w, '{default}', $batch) c;
        t0 := clock_timestamp();
        PERFORM canvas.finish(w, ids, attempts, array_fill('succeeded'::text, ARRAY[$batch]),
                              array_fill('null'::jsonb, ARRAY[$batch]), array_fill(NULL::text, ARRAY[$batch]),
                              array_fill(NULL::jsonb, ARRAY[$batch]));
        RAISE NOTICE '% %', extract(epoch FROM clock_timestamp() - t0) * 1000, extract(epoch FROM t0 - t1) * 1000;
        COMMIT;
    END LOOP;
END
\$\$;
SQL
    done
done
