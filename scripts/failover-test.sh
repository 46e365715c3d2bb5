#!/usr/bin/env bash
# PostgreSQL failover under a running chord (issue 13 item 2), as `make test` runs it.
#
# A primary and a streaming standby (pg_basebackup -R) on loopback, the standby synchronous
# (synchronous_standby_names, synchronous_commit = on), so a commit the primary acknowledged is
# on the standby's disk. Two real pgworker processes and voteradmin connect with a libpq
# multi-host URL (target_session_attrs=read-write). Mid-chord the primary is killed
# (pg_ctl stop -m immediate) and the standby promoted; the workers must reconnect within
# seconds, and in the end every job ran and succeeded exactly once (one claim, no crash), the
# body ran once with every member's result in order, nothing was lost. Prints each step.
#
# Needs PostgreSQL's server binaries and the debug build (.build/debug: BIN= to change).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/testlib.sh

members=${PGCANVAS_FAILOVER_MEMBERS:-2000}
reconnect_bound=15

make_workdir failover
on_exit "rm -rf '$work'"
p1=$(free_port)
p2=$(free_port)
while [ "$p2" = "$p1" ]; do p2=$(free_port); done
url="postgresql://postgres@127.0.0.1:$p1,127.0.0.1:$p2/pgcanvas?target_session_attrs=read-write"
q() { psql -X -qAt "postgresql://postgres@127.0.0.1:$1/pgcanvas" -c "$2"; }

step "primary: initdb in $work/primary, port $p1 on 127.0.0.1"
as_owner "$bindir/initdb" -D "$work/primary" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$work/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $p1
unix_socket_directories = '$work'
max_connections = 100
wal_level = replica
max_wal_senders = 4
CONF
on_exit "as_owner '$bindir/pg_ctl' -D '$work/primary' -m immediate stop"
as_owner "$bindir/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w -t 60 start >/dev/null
createdb -h 127.0.0.1 -p "$p1" -U postgres pgcanvas

step "standby: pg_basebackup -R from the primary, port $p2, cluster_name = 'standby1'"
as_owner "$bindir/pg_basebackup" -h 127.0.0.1 -p "$p1" -U postgres -D "$work/standby" -R -X stream -c fast
cat >>"$work/standby/postgresql.conf" <<CONF
port = $p2
# Its walreceiver's application_name: the name synchronous_standby_names waits for.
cluster_name = 'standby1'
# Once promoted it has no standby of its own; waiting for one would stop every commit.
synchronous_standby_names = ''
CONF
on_exit "as_owner '$bindir/pg_ctl' -D '$work/standby' -m immediate stop"
as_owner "$bindir/pg_ctl" -D "$work/standby" -l "$work/standby.log" -w -t 60 start >/dev/null
# Only now: with a synchronous standby named and none connected, every commit would wait.
cat >>"$work/primary/postgresql.conf" <<CONF
# No commit is acknowledged before the standby has it on disk: a failover loses nothing acknowledged.
synchronous_standby_names = 'FIRST 1 (standby1)'
synchronous_commit = on
CONF
as_owner "$bindir/pg_ctl" -D "$work/primary" reload >/dev/null
sync_standby() {
    [ "$(q "$p1" "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1' AND state = 'streaming'")" = sync ]
}
wait_for 30 sync_standby || fail "the standby never became a synchronous, streaming standby"
step "primary: synchronous_standby_names = 'FIRST 1 (standby1)', synchronous_commit = on; standby streaming, sync_state = sync"

step "voteradmin migrate, through $url"
DATABASE_URL="$url" "$BIN/voteradmin" migrate >/dev/null
chord_json "$members" 0.01 >"$work/chord.json"
canvas=$(DATABASE_URL="$url" "$BIN/voteradmin" enqueue --canvas "$work/chord.json")
jobs=$((2 * members + 1))
step "enqueued canvas $canvas: a chord of $members chains (canvas.sleep, then canvas.add i), body canvas.sum: $jobs jobs in all"

worker_pids=()
for n in 1 2; do
    # The second claims through two connections: both break at the failover and reconcile.
    lanes=$n
    DATABASE_URL="$url" "$BIN/pgworker" -c 4 --hostname "failover-$n" --loglevel info --broker-connections $lanes \
        --heartbeat-interval 1 --rescue-after 10 >"$work/worker-$n.log" 2>&1 &
    worker_pids+=($!)
    on_exit "kill -KILL $! 2>/dev/null; wait $! 2>/dev/null"
done
step "started 2 pgworker processes (-c 4 each; the second with --broker-connections 2), pids ${worker_pids[*]}"

done_jobs() { q "$1" "SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'"; }
quarter() { [ "$(done_jobs "$p1")" -ge $((jobs / 4)) ]; }
wait_for 60 quarter || fail "workers did not get through a quarter of the jobs in 60 s"
before=$(done_jobs "$p1")
step "mid-run: $before of $jobs jobs succeeded on the primary"

as_owner "$bindir/pg_ctl" -D "$work/primary" -m immediate stop >/dev/null
killed_us=$(elapsed_us)
step "primary killed (pg_ctl stop -m immediate)"
as_owner "$bindir/pg_ctl" -D "$work/standby" -w -t 60 promote >/dev/null
step "standby promoted (pg_ctl promote); it is now the only read-write server"
[ "$(q "$p2" "SELECT pg_is_in_recovery()")" = f ] || fail "the standby is still in recovery after promote"
after_promote=$(done_jobs "$p2")
step "the new primary has $after_promote succeeded jobs (the old one had shown $before before the kill)"
[ "$after_promote" -ge "$before" ] || fail "acknowledged commits were lost: $before before, $after_promote after"
[ "$after_promote" -lt "$jobs" ] || fail "the chord was done before the failover; nothing was tested"

reconnected() { grep -q "reconnected to PostgreSQL" "$work/worker-1.log" && grep -q "reconnected to PostgreSQL" "$work/worker-2.log"; }
wait_for $reconnect_bound reconnected || fail "workers did not reconnect within $reconnect_bound s:
$(cat "$work"/worker-*.log)"
took_us=$(($(elapsed_us) - killed_us))
step "both workers reconnected to the new primary $((took_us / 1000)) ms after the kill"

body_done() { [ "$(q "$p2" "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum' AND state = 'succeeded'")" = 1 ]; }
wait_for 90 body_done || fail "the chord's body did not succeed within 90 s:
$(q "$p2" "SELECT state, count(*) FROM canvas.jobs GROUP BY 1")"
step "the chord's body succeeded"

# The invariants, on the new primary.
total=$(q "$p2" "SELECT count(*) FROM canvas.jobs")
[ "$total" = "$jobs" ] || fail "expected $jobs jobs, found $total"
not_ok=$(q "$p2" "SELECT count(*) FROM canvas.jobs WHERE state <> 'succeeded'")
[ "$not_ok" = 0 ] || fail "$not_ok jobs did not succeed"
# attempt counts claims that ran (a claim handed back after a lost answer is undone), crashes
# counts runs lost with their worker: 1 and 0 mean each job ran once.
twice=$(q "$p2" "SELECT count(*) FROM canvas.jobs WHERE attempt <> 1 OR crashes <> 0")
[ "$twice" = 0 ] || fail "$twice jobs ran more than once or crashed:
$(q "$p2" "SELECT id, task, attempt, crashes FROM canvas.jobs WHERE attempt <> 1 OR crashes <> 0 LIMIT 20")"
step "all $total jobs succeeded, each with attempt = 1 and crashes = 0: every job ran once"
# The workers' own account, independent of the database: each pool process logs every run it
# finished. A job whose acknowledged finish were lost would be handed back and run again.
runs=$(cat "$work"/worker-*.log | grep -Eo 'Task [a-z.]+\[[0-9]+\] succeeded in' | sort)
[ "$(wc -l <<<"$runs")" = "$jobs" ] && [ "$(uniq -d <<<"$runs" | wc -l)" = 0 ] ||
    fail "the workers ran $(wc -l <<<"$runs") jobs, $(uniq -d <<<"$runs" | wc -l) of them twice: $(uniq -d <<<"$runs" | head)"
step "the workers' logs show $jobs runs of $jobs distinct jobs: none ran twice"
bodies=$(q "$p2" "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'")
[ "$bodies" = 1 ] || fail "the body was enqueued $bodies times"
in_order=$(q "$p2" "SELECT args->0 = (SELECT jsonb_agg(i ORDER BY i) FROM generate_series(1, $members) i)
    FROM canvas.jobs WHERE task = 'canvas.sum'")
[ "$in_order" = t ] || fail "the body did not receive every member's result once, in order"
result=$(q "$p2" "SELECT result FROM canvas.jobs WHERE task = 'canvas.sum'")
[ "$result" = $((members * (members + 1) / 2)) ] || fail "the body returned $result"
step "the body ran once; it received [1, …, $members] in header order and returned $result"
outcome=$(DATABASE_URL="$url" "$BIN/voteradmin" result "$canvas")
grep -q "$result" <<<"$outcome" || fail "voteradmin result $canvas did not show $result: $outcome"
step "voteradmin result $canvas (multi-host URL) after the failover: $(head -1 <<<"$outcome")"

for n in 1 2; do
    log="$work/worker-$n.log"
    step "worker failover-$n log: $(grep -c "PostgreSQL is unavailable" "$log") 'PostgreSQL is unavailable', $(grep -c "reconnected to PostgreSQL" "$log") 'reconnected', $(grep -c "handed back jobs claimed before the connection broke" "$log") 'handed back'"
done
for pid in "${worker_pids[@]}"; do
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    [ "$rc" = 0 ] || fail "worker $pid exited with $rc after SIGTERM:
$(cat "$work"/worker-*.log)"
done
step "both workers stopped cleanly on SIGTERM"
step "PASS: failover mid-chord lost nothing and ran every job once"
