#!/usr/bin/env bash
# A 3-server NATS JetStream cluster on loopback, for sugang's cluster mode
# (sugang-cluster's layout is R3 on it), for CI and for people trying it.
#
#   deploy/nats/cluster.sh start [DIR]   start n1..n3, stores and logs in DIR
#   deploy/nats/cluster.sh wait  [DIR]   wait until every server is healthy
#   deploy/nats/cluster.sh stop  [DIR]   stop them (SIGTERM, then SIGKILL)
#
# DIR defaults to ./nats-cluster. Ports: clients on BASE, BASE+1, BASE+2
# (BASE = $SUGANG_NATS_PORT, default 4222), routes on BASE+2000.., monitoring
# on BASE+4000.. (so 4222-4224, 6222-6224, 8222-8224 by default). Clients
# connect with all three URLs: nats://127.0.0.1:4222,nats://127.0.0.1:4223,…
# Needs Debian's nats-server (apt-get install nats-server; 2.9 or later).
# Loopback only: every listen address is 127.0.0.1.
set -euo pipefail

cmd="${1:-}"
dir="${2:-nats-cluster}"
base="${SUGANG_NATS_PORT:-4222}"
server="${SUGANG_NATS_SERVER:-nats-server}"

client_port() { echo $((base + $1 - 1)); }
route_port() { echo $((base + 2000 + $1 - 1)); }
http_port() { echo $((base + 4000 + $1 - 1)); }

start() {
    command -v "$server" >/dev/null || { echo "no $server: apt-get install nats-server" >&2; exit 1; }
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    for i in 1 2 3; do
        if [ -f "$dir/n$i.pid" ] && kill -0 "$(cat "$dir/n$i.pid")" 2>/dev/null; then
            echo "n$i already runs (pid $(cat "$dir/n$i.pid"))"; continue
        fi
        routes=""
        for j in 1 2 3; do
            [ "$j" = "$i" ] && continue
            routes="$routes${routes:+, }nats-route://127.0.0.1:$(route_port "$j")"
        done
        mkdir -p "$dir/n$i"
        cat >"$dir/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$(client_port "$i")
http: 127.0.0.1:$(http_port "$i")
jetstream { store_dir: "$dir/n$i" }
cluster { name: sugang, listen: 127.0.0.1:$(route_port "$i"), routes: [$routes] }
CONF
        "$server" -c "$dir/n$i.conf" -l "$dir/n$i.log" -P "$dir/n$i.pid" &
        echo "n$i: nats://127.0.0.1:$(client_port "$i") (log $dir/n$i.log)"
    done
}

wait_healthy() {
    for i in 1 2 3; do
        ok=""
        for _ in $(seq 1 150); do
            if curl -sf "http://127.0.0.1:$(http_port "$i")/healthz" >/dev/null 2>&1; then ok=yes; break; fi
            sleep 0.2
        done
        if [ -z "$ok" ]; then
            echo "n$i is not healthy after 30 s; its log:" >&2
            tail -20 "$dir/n$i.log" >&2 || true
            exit 1
        fi
    done
    # Healthy servers, and a JetStream meta leader: streams can be created.
    for _ in $(seq 1 150); do
        if curl -sf "http://127.0.0.1:$(http_port 1)/jsz" 2>/dev/null | grep -q '"leader"'; then
            echo "3 servers healthy, JetStream meta leader elected:" \
                "nats://127.0.0.1:$(client_port 1),nats://127.0.0.1:$(client_port 2),nats://127.0.0.1:$(client_port 3)"
            return 0
        fi
        sleep 0.2
    done
    echo "no JetStream meta leader after 30 s" >&2
    exit 1
}

stop() {
    for i in 1 2 3; do
        pidfile="$dir/n$i.pid"
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

case "$cmd" in
    start) start ;;
    wait) wait_healthy ;;
    stop) stop ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
