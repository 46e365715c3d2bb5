#!/usr/bin/env bash
# Soak: N no-op jobs through one `pgworker -c C --prune-after S` at full speed, the queue kept
# fed at steady state, pruning on. Is throughput flat and are canvas.jobs and its indexes bounded?
#
# A producer keeps LOW..LOW+CHUNK jobs queued ahead (INSERT … SELECT generate_series, CHUNK rows a
# transaction, never all N at once) and goes on past N, so the last million runs at the same
# steady state as the first rather than in a draining tail. Chunks are small because an insert's
# transaction holds back what VACUUM may remove for as long as it runs, as any producer's would.
# A sampler records every second: jobs finished so far, jobs/s, canvas.jobs heap and index
# sizes, dead tuples, autovacuum runs, who is vacuuming the table at that moment, and the pages
# one claim's scan of the claim index reads (its SELECT, without the locks: EXPLAIN ANALYZE) —
# the cost that grows when dead entries pile up, whatever else the machine is doing.
# It stops once N jobs finished, then prints the first million against the last and the sizes
# (bench/soak_plot.py --summary; `bench/soak_plot.py CSV PNG` draws the curve).
#
# "Finished" survives pruning: the producer counts what it inserted (soak.produced, updated in
# the insert's transaction) and finished = produced − queued − running, read in one snapshot.
# Queued is counted from ids, not with count(*): a producer alone inserts, one statement at a
# time, so a chunk's ids are consecutive and the claim takes queued jobs in id order; queued =
# last id inserted − first id still queued + 1, one probe of the claim index (as a claim makes).
#
# Replaces what the database's canvas.jobs holds; use a database of its own.
# Usage: DATABASE_URL=… [BIN=.build/release] [PRUNE_AFTER=10] [LOW=200000] [CHUNK=25000]
#        [CSV=.build/soak.csv] bench/soak.sh [N=10000000] [C=8]
set -euo pipefail
BIN="${BIN:-.build/release}"
n="${1:-10000000}"
c="${2:-8}"
prune_after="${PRUNE_AFTER:-10}"
low="${LOW:-200000}"
chunk="${CHUNK:-25000}"
csv="${CSV:-.build/soak.csv}"
here="$(cd "$(dirname "$0")" && pwd)"
export PGAPPNAME=soak
q() { psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 "$@"; }

q -c "SET client_min_messages = warning" \
    -c "TRUNCATE canvas.jobs, canvas.chords CASCADE" -c "DELETE FROM canvas.workers" -c "TRUNCATE canvas.finish_counts" \
    -c "CREATE SCHEMA IF NOT EXISTS soak" \
    -c "DROP TABLE IF EXISTS soak.produced" \
    -c "CREATE TABLE soak.produced (total bigint NOT NULL, last_id bigint)" \
    -c "INSERT INTO soak.produced VALUES (0, NULL)" \
    -c "CREATE OR REPLACE FUNCTION soak.claim_pages() RETURNS integer LANGUAGE plpgsql AS \$\$
        DECLARE p json;
        BEGIN
            EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
                     SELECT x.id FROM canvas.jobs x
                     WHERE x.state = ''queued'' AND x.queue = ''default'' AND (x.expires_at IS NULL OR x.expires_at > now())
                     ORDER BY x.priority, x.id LIMIT 16' INTO p;
            RETURN (p->0->'Plan'->>'Shared Hit Blocks')::integer + (p->0->'Plan'->>'Shared Read Blocks')::integer;
        END \$\$" \
    -c "SELECT pg_stat_reset_single_table_counters('canvas.jobs'::regclass)"

# One chunk of k jobs and the producer's count, in one transaction.
produce() {
    q -c "BEGIN" \
        -c "INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, $1)" \
        -c "UPDATE soak.produced SET total = total + $1, last_id = currval(pg_get_serial_sequence('canvas.jobs', 'id'))" \
        -c "COMMIT"
}
# queued, running and finished in one snapshot (see the top).
counts="SELECT p.total,
       coalesce(p.last_id - (SELECT id FROM canvas.jobs WHERE state = 'queued' AND queue = 'default'
                             ORDER BY priority, id LIMIT 1) + 1, 0) AS queued,
       (SELECT count(*) FROM canvas.jobs WHERE state = 'running') AS running
FROM soak.produced p"

# The first LOW + CHUNK before the worker starts, then statistics so the plans are the usual ones.
produce $((low + chunk))
q -c "VACUUM ANALYZE canvas.jobs"

target=$((n + low + chunk))
(
    while :; do
        read -r total queued running <<<"$(q -F ' ' -c "$counts")"
        [ "$total" -ge "$target" ] && break
        if [ "$queued" -lt "$low" ]; then
            produce "$chunk"
        else
            sleep 0.2
        fi
    done
) &
producer=$!

# VACUUM_EVERY=S: an explicit VACUUM of canvas.jobs every S seconds beside autovacuum (an experiment).
vacuumer=""
if [ -n "${VACUUM_EVERY:-}" ]; then
    ( while :; do sleep "$VACUUM_EVERY"; s=$(date +%s.%N); q -c "VACUUM (SKIP_LOCKED) canvas.jobs"; echo "$s $(date +%s.%N)" >>"${csv%.csv}-vacuum.log"; done ) &
    vacuumer=$!
fi

log="${csv%.csv}-pgworker.log"
"$BIN/pgworker" --concurrency "$c" --prune-after "$prune_after" --loglevel "${LOGLEVEL:-warning}" \
    ${WORKER_ARGS:-} >"$log" 2>&1 &
worker=$!
cleanup() {
    kill -TERM "$producer" 2>/dev/null || true
    [ -n "$vacuumer" ] && kill -TERM "$vacuumer" 2>/dev/null || true
    kill -TERM "$worker" 2>/dev/null || true
    wait "$worker" 2>/dev/null || true
}
trap cleanup EXIT

echo "t,finished,jobs_per_s,produced,queued,running,table_bytes,indexes_bytes,queued_idx_bytes,claim_idx_bytes,finished_idx_bytes,running_idx_bytes,pkey_bytes,live_tuples,dead_tuples,autovacuums,autoanalyzes,finish_counts_bytes,vacuuming,claim_pages" >"$csv"
sample="WITH k AS ($counts)
SELECT extract(epoch FROM clock_timestamp()), k.total - k.queued - k.running, k.total, k.queued, k.running,
       pg_table_size('canvas.jobs'), pg_indexes_size('canvas.jobs'),
       coalesce(pg_relation_size(to_regclass('canvas.jobs_queued_idx')), 0), coalesce(pg_relation_size(to_regclass('canvas.jobs_claim_idx')), 0),
       coalesce(pg_relation_size(to_regclass('canvas.jobs_finished_idx')), 0), coalesce(pg_relation_size(to_regclass('canvas.jobs_running_idx')), 0),
       coalesce(pg_relation_size(to_regclass('canvas.jobs_pkey')), 0),
       s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count,
       pg_total_relation_size('canvas.finish_counts'),
       -- Who is vacuuming canvas.jobs now: 1 a worker (VACUUM), 2 autovacuum, 0 nobody.
       coalesce((SELECT max(CASE WHEN a.backend_type = 'autovacuum worker' THEN 2 ELSE 1 END)
                 FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a USING (pid)
                 WHERE v.relid = 'canvas.jobs'::regclass), 0),
       soak.claim_pages()
FROM k, pg_stat_user_tables s WHERE s.relid = 'canvas.jobs'::regclass"
t0=""
prev_t=""
prev_f=0
first_claim=""
while :; do
    row="$(q -F ',' -c "$sample")"
    IFS=, read -r now finished rest <<<"$row"
    [ -z "$t0" ] && t0="$now"
    if [ -z "$first_claim" ] && [ "$finished" -gt 0 ]; then
        # The start of the first million, on the server's clock: jobs are not pruned yet.
        first_claim="$(q -c "SELECT extract(epoch FROM min(started_at)) FROM canvas.jobs WHERE started_at IS NOT NULL")"
    fi
    awk -v now="$now" -v t0="$t0" -v f="$finished" -v pf="$prev_f" -v pt="$prev_t" -v rest="$rest" \
        'BEGIN { printf "%.3f,%d,%d,%s\n", now - t0, f, (pt == "" ? 0 : (f - pf) / (now - pt) + 0.5), rest }' >>"$csv"
    prev_t="$now"
    prev_f="$finished"
    [ "$finished" -ge "$n" ] && break
    if ! kill -0 "$worker" 2>/dev/null; then
        echo "soak: pgworker exited early; see $log" >&2
        exit 1
    fi
    sleep 1
done
cleanup
trap - EXIT
python3 "$here/soak_plot.py" --summary "$csv" --jobs "$n" --first-claim "$(awk -v a="$first_claim" -v b="$t0" 'BEGIN { print a - b }')" \
    --worker "pgworker -c $c --prune-after $prune_after"
