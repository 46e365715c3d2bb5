#!/usr/bin/env bash
# The dashboard in a real browser, as `make test` runs it: a database of its own on the server
# DATABASE_URL names, a virtualenv with selenium and prometheus-client (made once, under .build/),
# headless Chromium from Debian's packages, then tests/browser/dashboard_test.py, which starts
# real pgworker and dashboard processes. Screenshots: .build/browser-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?DATABASE_URL names the server}"
for tool in chromium chromedriver; do
    command -v "$tool" >/dev/null || { echo "browser-test: $tool is missing (apt-get install chromium chromium-driver)" >&2; exit 1; }
done
venv=.build/browser-venv
if ! "$venv/bin/python" -c 'import selenium, prometheus_client' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q selenium prometheus-client
fi
name="pgcanvas_browser_$$"
case "$DATABASE_URL" in
    postgres://* | postgresql://*)
        url="$(printf '%s' "$DATABASE_URL" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\\1/$name#")" ;;
    *) url="$DATABASE_URL dbname=$name" ;;
esac
psql "$DATABASE_URL" -qAt -c "CREATE DATABASE $name"
trap 'psql "$DATABASE_URL" -qAt -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"' EXIT
DATABASE_URL="$url" .build/debug/voteradmin migrate >/dev/null
DATABASE_URL="$url" BIN=.build/debug SCREENSHOTS=.build/browser-screenshots "$venv/bin/python" tests/browser/dashboard_test.py
