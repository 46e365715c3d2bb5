# Shared by the shell tests that `make test` runs (scripts/*-test.sh): PostgreSQL's binaries,
# running them as the cluster owner, timed step lines, and clean-up on any exit.
# Sourced, never run.

bindir="$(pg_config --bindir 2>/dev/null || true)"
if [ ! -x "$bindir/initdb" ]; then
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
fi
if [ ! -x "$bindir/initdb" ]; then
    # As for the Swift suites: only a local run that asks to skip database tests may.
    if [ "${PGCANVAS_SKIP_DB_TESTS:-}" = 1 ]; then
        echo "SKIP: PostgreSQL server binaries not found (PGCANVAS_SKIP_DB_TESTS=1)"
        exit 0
    fi
    echo "FAIL: PostgreSQL server binaries not found (scripts/deps.sh installs them)" >&2
    exit 1
fi
BIN="${BIN:-.build/debug}"
for exe in pgworker voteradmin; do
    if [ ! -x "$BIN/$exe" ]; then
        echo "FAIL: $BIN/$exe is missing; run 'swift build --build-tests' first" >&2
        exit 1
    fi
done

# PostgreSQL refuses to run as root: as root, clusters belong to the 'postgres' user.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

test_started=${EPOCHREALTIME/./}
# Microseconds since the test started.
elapsed_us() { echo $((${EPOCHREALTIME/./} - test_started)); }
step() {
    local us
    us=$(elapsed_us)
    printf '[%3d.%02ds] %s\n' $((us / 1000000)) $((us % 1000000 / 10000)) "$*"
}
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# A folder of the test's own, reachable by the cluster owner; removed on exit.
make_workdir() {
    work="$(mktemp -d "/tmp/pgcanvas-$1.XXXXXX")"
    chmod 755 "$work"
    if [ "$(id -u)" = 0 ]; then chown postgres "$work"; fi
}

# Clean-up actions, run last-registered first on any exit.
cleanups=()
on_exit() { cleanups+=("$1"); }
run_cleanups() {
    local rc=$?
    set +e
    # A failed run leaves its story: the last lines of every log (servers, workers) before they go.
    if [ "$rc" != 0 ] && [ -n "${work:-}" ]; then
        for log in "$work"/*.log; do
            [ -f "$log" ] || continue
            echo "---- last lines of $(basename "$log") (per-task lines left out)" >&2
            grep -v '\] \(received\|succeeded in\)\|^ *\. \|^ *$' "$log" | tail -25 | cut -c1-300 >&2
        done
    fi
    for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[$i]}" >/dev/null 2>&1; done
    step "cleaned up (exit status $rc)"
    exit $rc
}
trap run_cleanups EXIT
trap 'exit 130' INT TERM

# Polls a command until it succeeds. Usage: wait_for SECONDS COMMAND…
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# A free TCP port on loopback (another test may pick the same; the server start then fails loudly).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

# The canvas every multi-process test runs: a chord of N chains (sleep, then return i), whose body
# sums the members' results. Each member's result counts in the body, so the sum proves that every
# member's outcome was recorded once and reached the body.
chord_json() {
    local n=$1 sleep=$2
    local i sep=""
    printf '{"chord": ['
    for ((i = 1; i <= n; i++)); do
        printf '%s{"chain": [{"task": "canvas.sleep", "args": [%s]}, {"task": "canvas.add", "args": [%d, 0], "options": {"immutable": true}}]}' "$sep" "$sleep" "$i"
        sep=", "
    done
    printf '], "body": {"task": "canvas.sum"}}\n'
}
