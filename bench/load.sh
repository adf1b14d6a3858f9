#!/usr/bin/env bash
# bench/load.sh: sugang's HTTP enrollment throughput against a bare axum
# echo server's and against the PostgreSQL yardstick (bench/pg.sh: the same
# enrollment as two durable PostgreSQL transactions through pgbench, at the
# same concurrency), measured in one run, and enrollment latency with the
# payment gateway down once the breaker is open. PG=0 skips PostgreSQL.
#
# Builds release, starts sugang (auth off, durable journal: the default
# fsync, a fresh temporary data directory, a loopback port) and sugang-echo
# (bench/echo.rs, the same JSON with nothing behind it), then drives each in
# turn with wrk (100 connections, 2 threads) through bench/enroll.lua: every
# request a new student, round-robin over 100 pre-created courses. Then it
# turns the gateway down (PUT /admin/faults/payment {"down":true}), enrolls
# until GET /admin/breaker says "open", and drives POST /classes again, at
# 100 connections and at LOW_CONNECTIONS (10), with the echo server at 10 as
# well for reference: at 100 on two cores queueing sets any server's p99.
# Prints each figure, and a final block of `name=value` lines that
# bench/report.sh reads. Everything it started stops on exit (trap).
#
# Usage: bench/load.sh            (DURATION=10s CONNECTIONS=100 LOW_CONNECTIONS=10 THREADS=2 to change)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-100}
THREADS=${THREADS:-2}
LOW_CONNECTIONS=${LOW_CONNECTIONS:-10}
COURSES=100

if ! command -v wrk >/dev/null; then
    echo "load.sh: installing wrk" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --quiet --bin sugang --bin sugang-echo
load_before=$(cut -d" " -f1 /proc/loadavg)

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() { # URL
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "load.sh: $1 never became ready" >&2
    exit 1
}

# wrk's "99%" latency line, in milliseconds.
p99_ms() {
    awk '$1 == "99%" {
        v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
        if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000
        printf "%.2f", v }' "$1"
}
rps() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
non2xx() { awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$1"; }
errors() { awk '/Socket errors:/ { print; f = 1 } END { if (!f) print "none" }' "$1"; }

drive() { # NAME URL [CONNECTIONS]
    local connections=${3:-$CONNECTIONS}
    echo "== wrk -t$THREADS -c$connections -d$DURATION --latency -s bench/enroll.lua $2 ($1)" >&2
    RUN_TAG="load-$1-$$" COURSES=$COURSES wrk -t"$THREADS" -c"$connections" -d"$DURATION" --latency \
        -s bench/enroll.lua "$2" | tee "$work/$1.wrk" >&2
}

sugang_port=$(free_port)
echo_port=$(free_port)
sugang_url="http://127.0.0.1:$sugang_port"
echo_url="http://127.0.0.1:$echo_port"

./target/release/sugang serve --listen "127.0.0.1:$sugang_port" --data-dir "$work/data" \
    >"$work/sugang.log" 2>&1 &
pids+=($!)
./target/release/sugang-echo "127.0.0.1:$echo_port" >"$work/echo.log" 2>&1 &
pids+=($!)
wait_ready "$sugang_url/health/ready"
wait_ready "$echo_url/courses/1"

for i in $(seq $COURSES); do
    curl -sf -o /dev/null -X POST "$sugang_url/courses" -H 'content-type: application/json' \
        -d "{\"name\":\"load-$i\",\"teacher\":\"load-teacher\",\"fee\":10000,\"textBook\":\"book\"}"
done

drive echo "$echo_url"
drive sugang "$sugang_url"
pg_tps=""
if [ "${PG:-1}" != 0 ]; then
    pg_tps=$(DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS bench/pg.sh | awk -F= '/^pg_tps=/ { print $2 }')
fi

# The breaker: gateway down, enroll until it opens, then measure.
curl -sf -o /dev/null -X PUT "$sugang_url/admin/faults/payment" -H 'content-type: application/json' \
    -d '{"latencyMs":0,"failureRate":0.0,"down":true}'
state=""
for i in $(seq 50); do
    curl -s -o /dev/null -X POST "$sugang_url/classes" -H 'content-type: application/json' \
        -d "{\"courseId\":1,\"student\":\"breaker-opener-$i\"}"
    state=$(curl -sf "$sugang_url/admin/breaker" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    [ "$state" = open ] && break
done
if [ "$state" != open ]; then
    echo "load.sh: the breaker did not open (state: $state)" >&2
    exit 1
fi
drive breaker "$sugang_url"
breaker_503=$(non2xx "$work/breaker.wrk")
# At 100 connections on two cores shared with wrk, queueing sets the p99 of
# any server (the echo's included): the fail-fast path alone shows at fewer.
drive breaker_low "$sugang_url" "$LOW_CONNECTIONS"
drive echo_low "$echo_url" "$LOW_CONNECTIONS"

echo_rps=$(rps "$work/echo.wrk")
sugang_rps=$(rps "$work/sugang.wrk")
ratio=$(awk -v a="$sugang_rps" -v b="$echo_rps" 'BEGIN { printf "%.3f", a / b }')
cat <<REPORT

load.sh figures ($(nproc) cores, load average before: $load_before, $DURATION per run, $CONNECTIONS connections, $THREADS wrk threads)
  echo:    $echo_rps req/s, p99 $(p99_ms "$work/echo.wrk") ms, non-2xx $(non2xx "$work/echo.wrk"), socket errors: $(errors "$work/echo.wrk")
  sugang:  $sugang_rps req/s, p99 $(p99_ms "$work/sugang.wrk") ms, non-2xx $(non2xx "$work/sugang.wrk"), socket errors: $(errors "$work/sugang.wrk")
  ratio (sugang / echo): $ratio   (target >= 0.5; sugang p99 target <= 2 x the echo's)
  PostgreSQL (pgbench, pg-enroll.sql, $CONNECTIONS clients): ${pg_tps:-skipped} enrollments/s; sugang / PostgreSQL: $( [ -n "$pg_tps" ] && awk -v a="$sugang_rps" -v b="$pg_tps" 'BEGIN { printf "%.2f", a / b }' || echo -)   (target >= 5)
  breaker open: $(rps "$work/breaker.wrk") req/s, p99 $(p99_ms "$work/breaker.wrk") ms, non-2xx (503) $breaker_503   (target p99 < 5 ms)
  at $LOW_CONNECTIONS connections: breaker open $(rps "$work/breaker_low.wrk") req/s, p99 $(p99_ms "$work/breaker_low.wrk") ms (non-2xx $(non2xx "$work/breaker_low.wrk")); echo $(rps "$work/echo_low.wrk") req/s, p99 $(p99_ms "$work/echo_low.wrk") ms

load_average_before=$load_before
echo_rps=$echo_rps
echo_p99_ms=$(p99_ms "$work/echo.wrk")
sugang_rps=$sugang_rps
sugang_p99_ms=$(p99_ms "$work/sugang.wrk")
sugang_non2xx=$(non2xx "$work/sugang.wrk")
ratio=$ratio
pg_tps=${pg_tps:-}
breaker_rps=$(rps "$work/breaker.wrk")
breaker_p99_ms=$(p99_ms "$work/breaker.wrk")
breaker_non2xx=$breaker_503
low_connections=$LOW_CONNECTIONS
breaker_low_rps=$(rps "$work/breaker_low.wrk")
breaker_low_p99_ms=$(p99_ms "$work/breaker_low.wrk")
echo_low_p99_ms=$(p99_ms "$work/echo_low.wrk")
REPORT
