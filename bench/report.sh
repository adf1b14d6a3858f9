#!/usr/bin/env bash
# bench/report.sh: runs the benchmarks and rewrites the figures table of
# bench/README.md (between its `figures:begin` and `figures:end` markers)
# from what they printed. Nothing in that table is typed by hand.
#
# Usage: bench/report.sh [NAME...]   NAME in: journal enroll fanout http load rush million
#                                    (default: all of them)
# Each NAME's rows are kept in bench/figures/NAME.md with the date and the
# machine they came from; running some NAMEs refreshes those and keeps the
# others, and the table is rebuilt from every file there.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(journal enroll fanout http load rush million)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")
mkdir -p bench/figures

machine() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "$(nproc) cores (${cpu:-unknown cpu}), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
}
# The code the figures come from: the commit when this script started, not
# when a run ended (a long run outlives commits made meanwhile).
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- . ':!bench/figures' ':!bench/README.md' 2>/dev/null || COMMIT="$COMMIT+uncommitted"
stamp() { # NAME LOAD: the header of one figures file
    echo "<!-- $1 -->"
    echo "| **$1** | $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT, 1-min load average before the run: $2 |"
}

# criterion's output: one row per benchmark id, its throughput when it has
# one (the middle of criterion's interval), else its time.
criterion_rows() { # LOG
    awk '
        /^[A-Za-z0-9_.\/-]+/ && !/^(Benchmarking|Found|Gnuplot|WARNING|Warning|Running|Finished|Compiling)/ { id = $1 }
        # The first time/thrpt of an id is its figure; later ones are the change since the last run.
        (/^[A-Za-z0-9_.\/-]+ +time:/ || /^ +time:/) && !(id in time) { sub(/.*\[/, ""); split($0, t, " "); time[id] = t[3] " " t[4]; order[++n] = id }
        /^ +thrpt:/ && !(id in thrpt) { sub(/.*\[/, ""); split($0, t, " "); thrpt[id] = t[3] " " t[4] }
        END { for (i = 1; i <= n; i++) { id = order[i]; if (seen[id]++) continue
              if (id in thrpt) print "| `" id "` | " thrpt[id] " |"; else print "| `" id "` | " time[id] " per iteration |" } }
    ' "$1"
}

load_now() { cut -d' ' -f1 /proc/loadavg; }

run_criterion() { # NAME
    local log load
    log=$(mktemp)
    cargo bench --quiet --bench "$1" --no-run
    load=$(load_now)
    cargo bench --bench "$1" 2>&1 | tee "$log" >&2
    {
        stamp "$1" "$load"
        criterion_rows "$log"
        # fanout prints its lag figures after criterion's groups.
        if [ "$1" = fanout ]; then
            sed -n '/^fanout\/lag/,$p' "$log" | grep -v '^\s*$' | sed 's/|/\\|/g; s/^/| lag | /; s/$/ |/' || true
        fi
    } >"bench/figures/$1.md"
    rm -f "$log"
}

# A script that ends with `name=value` lines: those become its rows.
run_script() { # NAME TITLE: runs bench/NAME.sh (built already) into figures/NAME.md
    local log load
    log=$(mktemp)
    load=$(load_now)
    "bench/$1.sh" 2>&1 | tee "$log" >&2
    {
        stamp "$2" "$load"
        awk -F= '/^[a-z_0-9]+=/ { print "| " $1 " | " $2 " |" }' "$log"
    } >"bench/figures/$1.md"
    rm -f "$log"
}

run_load() {
    cargo build --release --quiet --bin sugang --bin sugang-echo
    run_script load "load.sh (wrk, 100 connections, 10 s per run)"
}

run_rush() {
    local work log port pid tries
    cargo build --release --quiet --bin sugang
    {
        stamp "rush (20,000 students, 50 courses x 40 seats, zipf 1.0, 64 in flight)" "$(load_now)"
        for tries in 1 3; do
            work=$(mktemp -d)
            log="$work/rush.log"
            port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
            ./target/release/sugang serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
            pid=$!
            for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready" && break; sleep 0.1; done
            ./target/release/sugang rush --url "http://127.0.0.1:$port" --students 20000 --courses 50 --capacity 40 \
                --concurrency 64 --zipf 1.0 --tries "$tries" 2>&1 | tee "$log" >&2 || echo "exit: non-zero" >>"$log"
            kill "$pid"
            wait "$pid" || true
            grep -E '^(enroll|latency|statuses|invariants|wall time|exit):' "$log" | sed "s/^\([^:]*\): /| --tries $tries: \1 | /; s/$/ |/"
            rm -rf "$work"
        done
    } >bench/figures/rush.md
}

run_million() {
    cargo build --release --quiet --bin sugang
    run_script million "million.sh (${STUDENTS:-1000000} students, ${COURSES:-10000} courses x ${CAPACITY:-100} seats, ${CONCURRENCY:-128} in flight)"
}

for name in "${names[@]}"; do
    case "$name" in
        journal | enroll | fanout | http) run_criterion "$name" ;;
        load) run_load ;;
        rush) run_rush ;;
        million) run_million ;;
        *) echo "report.sh: no benchmark named $name (one of: ${ALL[*]})" >&2; exit 2 ;;
    esac
done

table=$(mktemp)
{
    echo "Machine: $(machine). Regenerated by \`bench/report.sh\`; do not edit by hand."
    echo
    echo "| benchmark | figure |"
    echo "| --- | --- |"
    for name in "${ALL[@]}"; do
        [ -f "bench/figures/$name.md" ] && cat "bench/figures/$name.md"
    done
} >"$table"
python3 - "$table" <<'PY'
import re, sys
table = open(sys.argv[1]).read().rstrip("\n")
path = "bench/README.md"
text = open(path).read()
begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
if begin not in text or end not in text:
    sys.exit("report.sh: bench/README.md has no figures markers")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + table + "\n" + end + tail)
PY
rm -f "$table"
echo "report.sh: bench/README.md's table rewritten" >&2
