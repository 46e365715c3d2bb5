#!/bin/sh
# Runs a command with libpq reading the password from a passfile built from the Docker secret
# named by PGCANVAS_PASSWORD_SECRET, so it never sits in a URL, an argument or the environment.
# usage: with-password.sh voteradmin migrate
set -eu
secret="/run/secrets/${PGCANVAS_PASSWORD_SECRET:?set PGCANVAS_PASSWORD_SECRET to a secret name}"
umask 077
PGPASSFILE="$(mktemp)"
printf '*:*:*:*:%s\n' "$(sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$secret")" > "$PGPASSFILE"
export PGPASSFILE
unset PGCANVAS_PASSWORD_SECRET
exec "$@"
