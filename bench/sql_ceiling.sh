#!/usr/bin/env bash
# The ceiling a worker can approach: claim + finish of N no-op jobs in pure SQL, one batch per
# transaction, no client round trips (a DO block that commits after each batch), at the batch
# sizes given. Prints jobs/s on the server's clock.
# Usage: DATABASE_URL=… bench/sql_ceiling.sh [N] [BATCH …]
set -euo pipefail
n="${1:-100000}"
shift || true
batches=("${@:-100 1000}")
for batch in ${batches[@]}; do
    psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs" -c "DELETE FROM canvas.workers" \
        -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, $n)" \
        -c "VACUUM ANALYZE canvas.jobs" >/dev/null
    psql "$DATABASE_URL" -qAt -v ON_ERROR_STOP=1 2>&1 <<SQL | sed -n 's/^.*NOTICE:  //p'
DO \$\$
DECLARE
    w bigint := canvas.register_worker('ceiling', 1, '{default}', 1, 2, 15);
    ids bigint[];
    attempts integer[];
    k integer;
    total integer := 0;
    started timestamptz := clock_timestamp();
BEGIN
    COMMIT;
    LOOP
        SELECT array_agg(c.id ORDER BY c.id), array_agg(c.attempt ORDER BY c.id) INTO ids, attempts
        FROM canvas.claim(w, '{default}', $batch) c;
        EXIT WHEN ids IS NULL;
        k := cardinality(ids);
        PERFORM canvas.finish(w, ids, attempts, array_fill('succeeded'::text, ARRAY[k]),
                              array_fill('null'::jsonb, ARRAY[k]), array_fill(NULL::text, ARRAY[k]),
                              array_fill(NULL::jsonb, ARRAY[k]));
        total := total + k;
        COMMIT;
    END LOOP;
    RAISE NOTICE 'sql ceiling: % jobs, batches of %: % jobs/s', total, $batch,
        round(total / extract(epoch FROM clock_timestamp() - started));
END
\$\$;
SQL
done
