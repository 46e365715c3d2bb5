#!/usr/bin/env bash
# `make bench`: every benchmark driver in turn. Figures go to stdout; docs/benchmarks.md has the
# write-up. Needs DATABASE_URL and BIN (the release build folder).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== seed"
bench/seed.sh
