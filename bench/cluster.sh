#!/usr/bin/env bash
# bench/cluster.sh: enrollments/s of 1, 2 and 3 sugang nodes against one
# 3-server NATS JetStream cluster (R3) on this machine, with the cost of an
# enrollment on the wire, and the time a takeover takes.
#
# For each node count N in NODES (default "1 2 3"): a fresh 3-server NATS
# cluster (deploy/nats/cluster.sh, its own ports and directory), N release
# `sugang serve --nats … --nats-replicas 3` nodes with fresh data
# directories, then `sugang rush --spread --no-check` with STUDENTS new
# students over COURSES courses of CAPACITY seats, CONCURRENCY in flight,
# spread round-robin over the N nodes' URLs (so with N > 1 two thirds or
# half the commands are forwarded to the primary over NATS). Then, from
# every node's /metrics: the log appends and their bytes (the primary's
# journal groups), the forwarded requests, the log messages applied; and
# the NATS client's own counters are not exposed, so the wire cost is
# given as what sugang sends and receives per enrollment: appends (one
# NATS round trip each, ~R-1 replication messages inside the NATS cluster),
# forwards (one round trip each), the subscriber units' batches that
# nodes other than the primary commit through it (one round trip each, plus
# the append they join), and the log's bytes delivered to each node (every
# node applies the whole log).
#
# And the CPU time each process used during the rush, per enrollment: the
# primary, the replicas, the three NATS servers.
#
# Then the takeover: SIGKILL the primary, and time until a write (a course
# registration) succeeds on a survivor (polled every 50 ms).
#
# Everything here shares the machine's two cores — three NATS servers, the
# nodes, the load generator — so more nodes do not mean more capacity here:
# the figures say what the cluster costs, and the per-enrollment breakdown
# lets the scaling on separate machines be estimated. Prints name=value lines
# at the end.
#
# With PERF=DIR, the primary is profiled during each rush (perf record into
# DIR) and its samples bucketed by owner (bench/perf_buckets.py); the
# profiler's own cost lowers that run's figures.
#
# Usage: bench/cluster.sh   NODES="1 2 3" STUDENTS=20000 COURSES=200
#                           CAPACITY=100 CONCURRENCY=64 LEASE_TTL_MS=2000 PERF=DIR
#                           SUGANG_BIN=path/to/another/sugang NODE_FLAGS="--course-subjects"
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-"1 2 3"}
STUDENTS=${STUDENTS:-20000}
COURSES=${COURSES:-200}
CAPACITY=${CAPACITY:-100}
CONCURRENCY=${CONCURRENCY:-64}
LEASE_TTL_MS=${LEASE_TTL_MS:-2000}
NATS_BASE=${NATS_BASE:-14222}
HTTP_BASE=${HTTP_BASE:-18080}

command -v nats-server >/dev/null || { echo "bench/cluster.sh: needs nats-server (apt-get install nats-server)" >&2; exit 1; }
# SUGANG_BIN: another build to measure (an earlier commit's, side by side).
if [ -z "${SUGANG_BIN:-}" ]; then
    cargo build --release --bin sugang >/dev/null 2>&1 || cargo build --release --bin sugang
fi
bin=${SUGANG_BIN:-target/release/sugang}
work=$(mktemp -d /tmp/sugang-cluster-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    SUGANG_NATS_PORT=$NATS_BASE deploy/nats/cluster.sh stop "$work/nats" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

urls_nats="nats://127.0.0.1:$NATS_BASE,nats://127.0.0.1:$((NATS_BASE + 1)),nats://127.0.0.1:$((NATS_BASE + 2))"

metric() { # metric URL NAME: the sum of every series of NAME
    curl -s "$1/metrics" | awk -v n="$2" '$1 == n || index($1, n"{") == 1 { s += $2 } END { printf "%.0f", s }'
}

cpu_ms() { # cpu_ms PID: the CPU time (user + system, every thread) PID has used so far, ms
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($14 + $15) * 1000 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

nats_pids() { # the three NATS servers' pids
    for i in 1 2 3; do echo "$(cat "$work/nats/n$i.pid")"; done
}

wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null "$1/health/ready" && return 0
        sleep 0.1
    done
    echo "bench/cluster.sh: $1 never became ready" >&2
    return 1
}

summary=()
for n in $NODES; do
    echo "== $n node(s)"
    rm -rf "$work/nats" "$work/data"
    SUGANG_NATS_PORT=$NATS_BASE deploy/nats/cluster.sh start "$work/nats" >/dev/null
    SUGANG_NATS_PORT=$NATS_BASE deploy/nats/cluster.sh wait "$work/nats" >/dev/null
    pids=()
    urls=()
    for i in $(seq 1 "$n"); do
        port=$((HTTP_BASE + i))
        mkdir -p "$work/data/n$i"
        "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data/n$i" --nats "$urls_nats" --node "node$i" \
            --nats-replicas 3 --lease-ttl-ms "$LEASE_TTL_MS" --passivate-enrollments-after-ms 1000 ${NODE_FLAGS:-} \
            >"$work/node$i.log" 2>&1 &
        pids+=($!)
        urls+=("http://127.0.0.1:$port")
        # The first node becomes the primary; the others join as replicas.
        wait_ready "http://127.0.0.1:$port"
    done
    rush_urls=()
    for u in "${urls[@]}"; do rush_urls+=(--url "$u"); done
    # CPU time each process uses during the rush: where an enrollment's
    # cost goes, process by process (the primary, each replica, the NATS
    # servers), which is what separate machines would each carry.
    cpu_before=()
    for pid in "${pids[@]}" $(nats_pids); do cpu_before+=("$(cpu_ms "$pid")"); done
    profiling=""
    if [ -n "${PERF:-}" ]; then
        # Where the primary's CPU goes during the rush (bench/perf_buckets.py).
        mkdir -p "$PERF"
        perf record -q -F 299 -g --call-graph dwarf,8192 -p "${pids[0]}" -o "$PERF/primary-$n.data" \
            >/dev/null 2>&1 &
        profiling=$!
    fi
    out=$("$bin" rush "${rush_urls[@]}" --students "$STUDENTS" --courses "$COURSES" --capacity "$CAPACITY" \
        --concurrency "$CONCURRENCY" --spread --no-check 2>&1 | tee /dev/stderr)
    if [ -n "$profiling" ]; then
        kill -INT "$profiling"
        wait "$profiling" || true
        perf script -i "$PERF/primary-$n.data" -F comm,tid,ip,sym >"$PERF/primary-$n.txt" 2>/dev/null
        echo "where the primary's CPU went ($n node(s)):"
        python3 bench/perf_buckets.py "$PERF/primary-$n.txt"
    fi
    cpu_used=()
    k=0
    for pid in "${pids[@]}" $(nats_pids); do
        cpu_used+=($(($(cpu_ms "$pid") - cpu_before[k])))
        k=$((k + 1))
    done
    rate=$(echo "$out" | sed -n 's/^enroll: .* = \([0-9]*\) req\/s.*/\1/p' | head -1)
    enrolled=$(echo "$out" | sed -n 's/^enroll: .*; \([0-9]*\) of [0-9]* students enrolled.*/\1/p' | head -1)
    p99=$(echo "$out" | sed -n 's/^latency of the 201s: .* p99 \([0-9.]*\) ms.*/\1/p' | head -1)
    appends=$(metric "${urls[0]}" sugang_cluster_appends_total)
    bytes=$(metric "${urls[0]}" sugang_cluster_append_bytes_total)
    forwards=0
    for u in "${urls[@]:1}"; do forwards=$((forwards + $(metric "$u" sugang_cluster_forward_seconds_count))); done
    unit_commits=0
    for u in "${urls[@]}"; do
        unit_commits=$((unit_commits + $(metric "$u" sugang_cluster_forwarded_commits_total)))
    done
    applied=$(metric "${urls[0]}" sugang_log_applied_total)
    echo "enrollments/s: $rate (p99 ${p99} ms); $enrolled enrolled"
    awk -v a="$appends" -v b="$bytes" -v f="$forwards" -v u="$unit_commits" -v e="$enrolled" -v n="$n" 'BEGIN {
        if (e == 0) e = 1;
        printf "per enrollment: %.3f log appends (NATS round trips of the primary), %.0f bytes appended, %.3f forwards (round trips of the replicas), %.3f unit batches committed through the primary (round trips of the other nodes'"'"' subscriber workers), log delivered to %d node(s): %.0f bytes in all\n", a / e, b / e, f / e, u / e, n, n * b / e
    }'
    # CPU ms used during the rush: [0] the primary, [1..n-1] the replicas,
    # [n..n+2] the NATS servers.
    replicas_cpu=0
    for i in $(seq 1 $((n - 1))); do replicas_cpu=$((replicas_cpu + cpu_used[i])); done
    nats_cpu=$((cpu_used[n] + cpu_used[n + 1] + cpu_used[n + 2]))
    awk -v p="${cpu_used[0]}" -v r="$replicas_cpu" -v s="$nats_cpu" -v e="$enrolled" -v n="$n" 'BEGIN {
        if (e == 0) e = 1;
        printf "CPU per enrollment: primary %.0f us, replicas %.0f us each, NATS servers %.0f us (3 together)\n", p * 1000 / e, (n > 1 ? r * 1000 / e / (n - 1) : 0), s * 1000 / e
    }'
    summary+=("nodes_${n}_cpu_ms_primary=${cpu_used[0]}" "nodes_${n}_cpu_ms_replicas=$replicas_cpu" "nodes_${n}_cpu_ms_nats=$nats_cpu")
    summary+=("nodes_${n}_enrollments_per_s=$rate" "nodes_${n}_p99_ms=$p99" "nodes_${n}_appends=$appends" "nodes_${n}_append_bytes=$bytes" "nodes_${n}_forwards=$forwards" "nodes_${n}_unit_commits=$unit_commits" "nodes_${n}_enrolled=$enrolled" "nodes_${n}_log_applied=$applied")
    if [ "$n" -gt 1 ]; then
        primary_pid=${pids[0]}
        kill -9 "$primary_pid"
        killed=$(date +%s%N)
        took=""
        for _ in $(seq 1 400); do
            code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "${urls[1]}/courses" -H 'content-type: application/json' \
                -d '{"name":"after the takeover","teacher":"kim","fee":1000,"capacity":10}' || true)
            if [ "$code" = "201" ]; then
                took=$((($(date +%s%N) - killed) / 1000000))
                break
            fi
            sleep 0.05
        done
        echo "takeover: a write succeeds on a survivor ${took:-never} ms after the primary's SIGKILL (lease TTL ${LEASE_TTL_MS} ms)"
        summary+=("nodes_${n}_takeover_ms=${took:-never}")
    fi
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    pids=()
    SUGANG_NATS_PORT=$NATS_BASE deploy/nats/cluster.sh stop "$work/nats" >/dev/null 2>&1 || true
done
echo "== summary"
printf '%s\n' "${summary[@]}"
