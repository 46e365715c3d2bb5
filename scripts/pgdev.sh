#!/usr/bin/env bash
# The embedded default database: a private PostgreSQL cluster under .pgdata/ (or $PGCANVAS_PGDATA),
# listening only on a Unix socket. Usage: pgdev.sh start|stop|status|url
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
pgdata="${PGCANVAS_PGDATA:-$root/.pgdata}"
dbname="${PGCANVAS_DBNAME:-pgcanvas}"
port="${PGCANVAS_PGPORT:-5432}"

bindir="$(pg_config --bindir 2>/dev/null || true)"
if [ ! -x "$bindir/initdb" ]; then
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
fi
if [ ! -x "$bindir/initdb" ]; then
    echo "pgdev: PostgreSQL server binaries not found; run 'make deps' first" >&2
    exit 1
fi

# PostgreSQL refuses to run as root: as root, the cluster belongs to the 'postgres' user.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# As root, the 'postgres' user must be able to reach the data folder. When the checkout sits
# somewhere it cannot (a 0700 home, say), keep the cluster under /var/tmp and link it here.
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    if [ -L "$pgdata" ]; then
        pgdata="$(readlink -f "$pgdata")"
    elif [ ! -e "$pgdata" ] && ! runuser -u postgres -- test -x "$(dirname "$pgdata")"; then
        real="/var/tmp/pgcanvas-$(echo "$pgdata" | md5sum | cut -c1-12)"
        mkdir -p "$real"
        ln -sfn "$real" "$pgdata"
        pgdata="$real"
    fi
fi

socket_dir() {
    if [ -f "$pgdata/socket_dir" ]; then cat "$pgdata/socket_dir"; else echo "$pgdata/socket"; fi
}

url() {
    echo "postgresql:///$dbname?host=$(socket_dir)&port=$port&user=postgres"
}

running() {
    [ -f "$pgdata/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$pgdata" status >/dev/null 2>&1
}

start() {
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    mkdir -p "$pgdata"
    [ "$(id -u)" = 0 ] && chown postgres "$pgdata"
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        echo "pgdev: creating a cluster in $pgdata" >&2
        as_owner "$bindir/initdb" -D "$pgdata" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
        # A Unix socket path must stay under ~100 bytes; deep checkouts fall back to /tmp.
        local sock="$pgdata/socket"
        if [ ${#sock} -gt 80 ]; then sock="$(mktemp -d /tmp/pgcanvas-sock.XXXXXX)"; fi
        mkdir -p "$sock"
        echo "$sock" >"$pgdata/socket_dir"
        cat >>"$pgdata/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$sock'
port = $port
max_connections = 300
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 15min
CONF
    fi
    local sock
    sock="$(socket_dir)"
    mkdir -p "$sock"
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$pgdata" "$sock"; fi
    if ! running; then
        as_owner "$bindir/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 start >/dev/null
    fi
    if ! "$bindir/psql" "postgresql:///postgres?host=$sock&port=$port&user=postgres" -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$dbname'" | grep -q 1; then
        "$bindir/createdb" -h "$sock" -p "$port" -U postgres "$dbname"
    fi
    echo "pgdev: PostgreSQL is running; export DATABASE_URL='$(url)'" >&2
}

stop() {
    if running; then
        as_owner "$bindir/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
        echo "pgdev: stopped the server in $pgdata" >&2
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) if running; then echo "running: $(url)"; else echo "stopped"; exit 3; fi ;;
url) url ;;
*)
    echo "usage: $0 start|stop|status|url" >&2
    exit 64
    ;;
esac
