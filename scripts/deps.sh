#!/usr/bin/env bash
# Installs the system packages pgcanvas needs, through apt, only when something is missing.
set -euo pipefail

# pgbouncer: the tests run workers through it (PgBouncerTests), as a child process of their own.
# iproute2: `ip netns` for the multi-host test (scripts/netns-test.sh).
packages=(postgresql postgresql-contrib libpq-dev pkg-config libcairo2-dev fonts-dejavu-core poppler-utils qpdf pgbouncer
    iproute2)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif command -v sudo >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "deps: missing packages: ${missing[*]} (install them with apt-get as root)" >&2
    exit 1
fi
# The Debian package starts a system cluster; pgcanvas never uses it, so leave the machine quiet.
if command -v pg_ctlcluster >/dev/null && [ "$(id -u)" = 0 ]; then
    for c in /etc/postgresql/*/main; do
        [ -d "$c" ] || continue
        v="$(basename "$(dirname "$c")")"
        pg_ctlcluster "$v" main stop 2>/dev/null || true
    done
fi
# Likewise the package's own PgBouncer service (where an init system started it): tests start theirs.
if [ "$(id -u)" = 0 ] && command -v service >/dev/null && [ -e /etc/init.d/pgbouncer ]; then
    service pgbouncer stop >/dev/null 2>&1 || true
fi
