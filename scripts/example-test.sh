#!/usr/bin/env bash
# The example application end to end, as `make test` runs it: a database of its own on the server
# DATABASE_URL names, pgcanvas's schema applied by voteradmin, then `make run` in Examples/hello
# (its worker, a typed chord, a typed failure), then the database is dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?DATABASE_URL names the server}"
name="pgcanvas_example_$$"
# The same server and credentials, another database: swap a URL's path, or let a key=value
# conninfo name it last (libpq takes the last of a repeated key).
case "$DATABASE_URL" in
    postgres://* | postgresql://*)
        url="$(printf '%s' "$DATABASE_URL" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\\1/$name#")" ;;
    *) url="$DATABASE_URL dbname=$name" ;;
esac
psql "$DATABASE_URL" -qAt -c "CREATE DATABASE $name"
trap 'psql "$DATABASE_URL" -qAt -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"' EXIT
DATABASE_URL="$url" .build/debug/voteradmin migrate >/dev/null
DATABASE_URL="$url" make -s -C Examples/hello run SWIFT="${SWIFT:-swift}"
