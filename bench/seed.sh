#!/usr/bin/env bash
# Seeding benchmark: `voteradmin seed N` against the physical limit measured in the same run on
# the same server: psql's \copy of the same rows (exported to text files) into empty tables with
# the same indexes and constraints, in one transaction.
# Usage: DATABASE_URL=… BIN=.build/release bench/seed.sh [N …]
set -euo pipefail
BIN="${BIN:-.build/release}"
sizes=("${@:-10000 100000 1000000}")
[ $# -eq 0 ] && sizes=(10000 100000 1000000)
admin="${DATABASE_URL:?set DATABASE_URL}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

db_url() {
    python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p.scheme+'://'+p.netloc+'/'+sys.argv[2]+('?'+p.query if p.query else ''))" "$admin" "$1"
}
fresh_db() {
    psql "$admin" -qAt -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null 2>&1
    DATABASE_URL="$(db_url "$1")" "$BIN/voteradmin" migrate >/dev/null
}
now() { date +%s.%N; }

fresh_db pgcanvas_bench_seed
fresh_db pgcanvas_bench_copy
seed_url="$(db_url pgcanvas_bench_seed)"
copy_url="$(db_url pgcanvas_bench_copy)"

printf "%-10s %10s %10s %7s\n" voters "seed (s)" "\\copy (s)" ratio
for n in "${sizes[@]}"; do
    psql "$seed_url" -qAc "CHECKPOINT" >/dev/null
    t0=$(now)
    DATABASE_URL="$seed_url" "$BIN/voteradmin" seed "$n" --random-seed 1 >/dev/null 2>&1
    t1=$(now)
    for t in polling_center voter voter_registration; do
        psql "$seed_url" -qAc "\\copy $t TO '$tmp/$t.txt'"
    done
    psql "$copy_url" -qAc "TRUNCATE station_assignment, voter_registration, voter, polling_center" >/dev/null
    psql "$copy_url" -qAc "CHECKPOINT" >/dev/null
    psql "$seed_url" -qAc "CHECKPOINT" >/dev/null
    t2=$(now)
    psql "$copy_url" -q -1 -v ON_ERROR_STOP=1 \
        -c "TRUNCATE station_assignment, voter_registration, voter, polling_center" \
        -c "\\copy polling_center FROM '$tmp/polling_center.txt'" \
        -c "\\copy voter FROM '$tmp/voter.txt'" \
        -c "\\copy voter_registration FROM '$tmp/voter_registration.txt'"
    t3=$(now)
    python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); c=float(sys.argv[4])-float(sys.argv[3]); print(f'{int(sys.argv[5]):<10} {s:10.2f} {c:10.2f} {s/c:6.2f}x')" "$t0" "$t1" "$t2" "$t3" "$n"
done
psql "$admin" -qAtc "DROP DATABASE pgcanvas_bench_seed WITH (FORCE)" -c "DROP DATABASE pgcanvas_bench_copy WITH (FORCE)" >/dev/null
