#!/bin/sh
# Run once by the postgres image on a fresh volume (docker-entrypoint-initdb.d), as its superuser.
# Creates the login roles the app uses; passwords come from Docker secrets, never from the compose
# file or the environment. `voteradmin roles` (run by the setup service) grants them their rights.
set -eu
owner_password="$(cat /run/secrets/pgcanvas_owner_password)"
worker_password="$(cat /run/secrets/pgcanvas_worker_password)"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner_password="$owner_password" -v worker_password="$worker_password" <<'SQL'
CREATE ROLE pgcanvas_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE pgcanvas_worker NOLOGIN;
CREATE ROLE pgcanvas_reader NOLOGIN;
CREATE ROLE pgcanvas_app LOGIN PASSWORD :'worker_password' IN ROLE pgcanvas_worker;
-- The owner runs migrations: it owns the database, hence its public schema (PostgreSQL 15).
ALTER DATABASE :"DBNAME" OWNER TO pgcanvas_owner;
SQL
