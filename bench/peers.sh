#!/usr/bin/env bash
# pgcanvas against pgqueuer as pgqueuer runs itself, in one session on one server, rounds
# interleaved so background noise hits every side alike. pgqueuer is run by the comparison driver
# we share with the other teams (../shared/bench/peer_queues.py: uvloop, 2 PgQueuer instances,
# batch 500, drain mode; its burn-down runs from worker start to worker exit). pgcanvas is timed
# the same way, from starting `pgworker -c 8 --pool P` to the last job done (bench/burndown.sh's
# wall figure), and also on the server clock. Each side drains N no-op jobs.
# Needs a virtualenv with the peer's packages: PEER_VENV (default /tmp/pgcanvas-peer-venv) is
# made with pip when missing. PEER_QUEUES names the driver if it is not at ../shared/bench/.
# A pool written POOL:K runs with K broker connections (`--broker-connections K`), e.g. async:2.
# Usage: DATABASE_URL=… BIN=.build/release bench/peers.sh [N] [ROUNDS] [POOLS…]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
rounds="${2:-3}"
shift 2 || true
pools=("${@:-prefork async}")
driver="${PEER_QUEUES:-$(cd .. && pwd)/shared/bench/peer_queues.py}"
venv="${PEER_VENV:-/tmp/pgcanvas-peer-venv}"
[ -f "$driver" ] || { echo "peers.sh: no comparison driver at $driver (set PEER_QUEUES)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q pgqueuer==1.6.0 procrastinate==3.10.0 asyncpg 'psycopg[binary]' uvloop
fi
# The peer's databases go beside ours on the same server: <db>_pgqueuer.
peer_dsn=$(python3 -c "
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); q = dict(u.parse_qsl(p.query))
host = q.get('host', p.hostname or ''); port = q.get('port', str(p.port or 5432)); user = q.get('user', p.username or 'postgres')
print(f'postgresql://{user}@/peerbench?host={host}&port={port}')" "$DATABASE_URL")
results=$(mktemp)
for round in $(seq 1 "$rounds"); do
    line=$("$venv/bin/python" "$driver" --dsn "$peer_dsn" --jobs "$n" --which pgqueuer | grep burn-down)
    echo "round $round: $line"
    echo "pgqueuer $(sed -E 's/.*burn-down ([0-9,]+) jobs\/s.*/\1/' <<<"$line" | tr -d ,)" >>"$results"
    for pool in ${pools[@]}; do
        args="--pool ${pool%%:*}"
        [[ "$pool" == *:* ]] && args="$args --broker-connections ${pool##*:}"
        out=$(WORKER_ARGS="$args" bench/burndown.sh "$n" 8 | tail -1)
        echo "round $round: pgcanvas $args: $out"
        server=$(sed -E 's/.*: ([0-9,]+) jobs\/s \(first claim.*/\1/' <<<"$out" | tr -d ,)
        wall=$(sed -E 's/.*wall ([0-9.]+) s.*/\1/' <<<"$out")
        echo "$pool $(python3 -c "print(round($n / $wall))") $server" >>"$results"
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
peer = statistics.median(int(r[1]) for r in rows if r[0] == "pgqueuer")
print(f"median over rounds: pgqueuer {peer:,.0f} jobs/s (worker start to exit)")
for pool in dict.fromkeys(r[0] for r in rows if r[0] != "pgqueuer"):
    wall = statistics.median(int(r[1]) for r in rows if r[0] == pool)
    server = statistics.median(int(r[2]) for r in rows if r[0] == pool)
    name = pool.split(":")[0] + (f" --broker-connections {pool.split(':')[1]}" if ":" in pool else "")
    print(f"  pgcanvas --pool {name}: {wall:,.0f} jobs/s start to done ({wall / peer:.2f}x), "
          f"{server:,.0f} on the server clock ({server / peer:.2f}x)")
PY
rm -f "$results"
