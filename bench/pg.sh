#!/usr/bin/env bash
# bench/pg.sh: the PostgreSQL yardstick. The same enrollment as two PostgreSQL
# transactions (../shared/reference/pg-enroll.sql: reserve the seat, then
# complete it with its payment, shipment and three notifications), driven by
# pgbench at the same concurrency as bench/load.sh drives sugang, on the
# same machine. synchronous_commit on (the default): every commit is durable.
#
# Installs PostgreSQL from Debian if it is missing, runs a throwaway cluster
# in a temporary directory on a free loopback port as the postgres user, and
# prints `pg_tps=N` and `pg_p99_ms=N` (pgbench's per-script latency) last.
#
# Usage: bench/pg.sh   (DURATION=10s CONNECTIONS=100 THREADS=2 to change)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-100}
THREADS=${THREADS:-2}
reference=${REFERENCE:-../shared/reference}
seconds=${DURATION%s}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ] || ! command -v pgbench >/dev/null; then
    echo "pg.sh: installing postgresql" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work=$(mktemp -d)
chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown postgres "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

as_pg "$bindir/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
    -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_connections=$((CONNECTIONS + 10)) -c shared_buffers=256MB" \
    start >/dev/null
as_pg "$bindir/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c 'CREATE DATABASE enroll' >/dev/null
as_pg "$bindir/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d enroll -f "$reference/pg-schema.sql" >/dev/null 2>&1
cp "$reference/pg-enroll.sql" "$work/pg-enroll.sql"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg-enroll.sql"

echo "== pgbench -n -M prepared -c $CONNECTIONS -j $THREADS -T $seconds -f pg-enroll.sql (synchronous_commit on)" >&2
as_pg "$bindir/pgbench" -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "$seconds" -r -P 5 \
    -h 127.0.0.1 -p "$port" -U postgres -f "$work/pg-enroll.sql" enroll 2>&1 | tee "$work/pgbench.out" >&2
tps=$(awk '/^tps = / { printf "%.0f", $3 }' "$work/pgbench.out")
latency=$(awk '/^latency average = / { print $4 }' "$work/pgbench.out")
echo "pg_tps=$tps"
echo "pg_latency_avg_ms=$latency"
