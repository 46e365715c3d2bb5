#!/usr/bin/env bash
# pgqueuer 1.6 (PyPI, asyncpg) on the same server, for the side-by-side figures.
# Usage: DATABASE_URL=… bench/compare_pgqueuer.sh [N]
set -euo pipefail
venv="${PGQUEUER_VENV:-/tmp/pgcanvas-pgqueuer-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q pgqueuer==1.6.0 asyncpg
fi
"$venv/bin/python" "$(dirname "$0")/pgqueuer_bench.py" "$DATABASE_URL" "${1:-100000}"
