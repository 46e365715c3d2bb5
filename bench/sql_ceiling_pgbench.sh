#!/usr/bin/env bash
# The ceiling a worker can approach, measured by pgbench: N no-op jobs claimed and finished by
# canvas.finish_and_claim, one round per transaction (bench/pgbench/finish_and_claim.sql), by one
# client as a worker's broker connection does, at each batch size given. The client round trips
# are counted, as a worker's are; the pool (running the jobs) is not. Prints jobs/s.
# CLIENTS=K runs K such clients at once (one worker registration, each client finishing what it
# claimed): the ceiling of a worker with K broker connections.
# Usage: DATABASE_URL=… [CLIENTS=1] bench/sql_ceiling_pgbench.sh [N] [BATCH …]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
n="${1:-100000}"
shift || true
batches=("${@:-100 200 500}")
clients="${CLIENTS:-1}"
for batch in ${batches[@]}; do
    worker=$(psql "$DATABASE_URL" -qAt -c "TRUNCATE canvas.jobs" -c "DELETE FROM canvas.workers" \
        -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, $n)" \
        -c "VACUUM ANALYZE canvas.jobs" \
        -c "SELECT canvas.register_worker('pgbench', 1, '{default}', 1, 60, 600)" | tail -1)
    # One more round than batches: the last one finishes what the one before claimed. With more
    # clients each runs that many: the rounds past the end claim nothing, finish what is held,
    # and fall outside the span measured.
    rounds=$(( (n + batch - 1) / batch + 1 ))
    pgbench "$DATABASE_URL" -n -M extended -c "$clients" -j "$clients" -t "$rounds" -f "$here/pgbench/finish_and_claim.sql" \
        -D worker="$worker" -D batch="$batch" -D ids='{}' -D attempts='{}' >/dev/null
    psql "$DATABASE_URL" -qAt -F ' ' -c "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*),
            round(count(*) / extract(epoch FROM max(finished_at) - min(started_at)))
        FROM canvas.jobs" | while read -r done total rate; do
        echo "pgbench ceiling, $clients client(s): batches of $batch: $done of $total jobs succeeded, $rate jobs/s (first claim to last finish)"
    done
done
