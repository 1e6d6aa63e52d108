#!/usr/bin/env bash
# What the metrics cost (issue 14): CreateTask and GetTask at 8 clients
# against todo-command and todo-query run with the metrics on (the default)
# and off (TODO_METRICS=off: no family is declared, nothing is counted, no
# endpoint), alternating on/off for ROUNDS rounds so that drift on a shared
# machine hits both alike. Reports per mode the median rate and the server's
# CPU microseconds per call (from /proc), and the ratio on/off.
#
#   bench/metrics_overhead.sh [ROUNDS [SECONDS]]     (default 3 rounds of 10 s)
source "$(dirname "$0")/../scripts/lib.sh"
cd "$TODO_REPO"
ROUNDS=${1:-3}
SECS=${2:-10}
out="$TODO_REPO/bench/results/metrics-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

source bench/common.sh
bench_stack
$bin/projection/todo-projector >"$out/projector.log" 2>&1 & pids+=($!)

cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# Starts todo-command and todo-query with the metrics on|off; sets cmd, qry.
start() {
  local env=()
  [ "$1" = off ] && env=(TODO_METRICS=off)
  env "${env[@]}" $bin/command/todo-command >>"$out/command-$1.log" 2>&1 & cmd=$!
  env "${env[@]}" $bin/query/todo-query >>"$out/query-$1.log" 2>&1 & qry=$!
  pids+=("$cmd" "$qry") # stopped with the stack if this script stops early
  for _ in $(seq 100); do $bin/cli/todoctl health >/dev/null 2>&1 && break; sleep 0.1; done
}
stop() { kill -TERM "$cmd" "$qry"; wait "$cmd" "$qry" 2>/dev/null || true; }

# rpc pid mode round -> one JSON line: rate and the server's CPU per call
measure() {
  local rpc=$1 pid=$2 mode=$3 c0 j c1
  c0=$(cpu "$pid")
  # loadgen exits 1 when a call failed: the rate still counts (errors are in its JSON)
  j=$(build/dev/bench/todo-loadgen --rpc "$rpc" --clients 8 --seconds "$SECS" --user-prefix "ovh-$rpc-$mode-$4") || true
  c1=$(cpu "$pid")
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); calls=max(j.get("calls", j["rps"]*float(sys.argv[5])),1)
print(json.dumps({"rpc":sys.argv[2],"mode":sys.argv[3],"rps":j["rps"],"p99_ms":j["p99_ms"],
 "cpu_us_per_call":(float(sys.argv[4]))*1e6/calls}))' "$j" "$rpc" "$mode" "$(python3 -c "print($c1-$c0)")" "$SECS"
}

log "warming up"
start on
build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds 10 --user-prefix ovh-warm >/dev/null
stop
: >"$out/results.jsonl"
for r in $(seq "$ROUNDS"); do
  for mode in on off; do
    start "$mode"
    measure create "$cmd" "$mode" "$r" >>"$out/results.jsonl"
    measure get "$qry" "$mode" "$r" >>"$out/results.jsonl"
    stop
  done
done
python3 - "$out/results.jsonl" <<'PY' | tee "$out/table.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("%-7s %-4s %10s %10s %14s" % ("rpc", "mode", "rate/s", "p99 ms", "cpu us/call"))
med = {}
for rpc in ("create", "get"):
    for mode in ("on", "off"):
        rs = [r for r in rows if r["rpc"] == rpc and r["mode"] == mode]
        m = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p99_ms", "cpu_us_per_call")}
        med[rpc, mode] = m
        print("%-7s %-4s %10.0f %10.2f %14.1f" % (rpc, mode, m["rps"], m["p99_ms"], m["cpu_us_per_call"]))
for rpc in ("create", "get"):
    on, off = med[rpc, "on"], med[rpc, "off"]
    print("%s: rate on/off %.3f, CPU per call on/off %.3f" % (rpc, on["rps"] / off["rps"], on["cpu_us_per_call"] / off["cpu_us_per_call"]))
PY
