#!/usr/bin/env bash
# A same-run A/B of server variants (issue 19: keep a change only when an
# A/B inside one run shows it helps; on a shared 2-core box, rates measured
# in different runs differ by more than most changes do). Every variant
# runs at once, on its own port; ghz drives one at a time, the variants in
# turn, ROUNDS times (the order rotated each round), and the medians are
# reported with their ratio to the first variant:
#
#   bench/ab.sh [--rpc get|list|create] [--clients "8 32"] [--secs S]
#               [--rounds N] NAME=COMMAND...
#
#   NAME=COMMAND   a server variant: COMMAND is a shell command line run with
#                  TODO_QUERY_ADDR / TODO_COMMAND_ADDR and their metrics
#                  addresses set to free ports, e.g.
#                    t8=build/dev/src/query/todo-query
#                    "t2=TODO_GRPC_THREADS=2 build/dev/src/query/todo-query"
#                    "new=/tmp/todo-query"
#                  or "peer" for the Go peer (bench/peers/go).
#
# Defaults: --rpc get, --clients "8 32", --secs 5, --rounds 3. The stack
# (bench), todo-command, todo-projector and todo-saga run as in
# bench/peers.sh. Results: bench/results/ab-<UTC time>/results.json and
# table.txt (also on stdout): per variant and client count the rate,
# latency, the server's CPU and context switches per call, and where the
# machine's CPU went per call (the server, ghz, every PostgreSQL process,
# the whole machine's busy time).
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/common.sh"
cd "$TODO_REPO"

RPC=get; CLIENTS="8 32"; SECS=5; ROUNDS=3; VARIANTS=()
while [ $# -gt 0 ]; do
  case $1 in
    --rpc) RPC=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    *=*) VARIANTS+=("$1") ;;
    *) die "usage: bench/ab.sh [--rpc get|list|create] [--clients \"8 32\"] [--secs S] [--rounds N] NAME=COMMAND..." ;;
  esac
  shift
done
case $RPC in get|list|create) ;; *) die "--rpc: get, list or create" ;; esac
[ ${#VARIANTS[@]} -ge 1 ] || die "name at least one variant (NAME=COMMAND)"
out="$TODO_REPO/bench/results/ab-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

bash scripts/install-deps.sh >/dev/null
bench_ghz_install
for v in "${VARIANTS[@]}"; do [ "${v#*=}" = peer ] && bash bench/peers/go/build.sh; done
bench_stack
export TODO_JWT_SECRET=peers-bench-secret-0123456789abcdef0123456789abcdef
PSQL="$PG_BIN/psql -X -q -v ON_ERROR_STOP=1 $TODO_PG_URL"
$bin/command/todo-command >"$out/command.log" 2>&1 & pids+=($!)
$bin/query/todo-query >"$out/query.log" 2>&1 & pids+=($!)
$bin/projection/todo-projector >"$out/projector.log" 2>&1 & pids+=($!)
$bin/saga/todo-saga >"$out/saga.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do $bin/cli/todoctl health >/dev/null 2>&1 && break; sleep 0.1; done

declare -A vpid vaddr
names=()
for v in "${VARIANTS[@]}"; do
  name=${v%%=*}; cmd=${v#*=}; addr=$(bench_free_addr); names+=("$name")
  if [ "$cmd" = peer ]; then
    PEER_ADDR=$addr build/peer/todo-go-peer >"$out/$name.log" 2>&1 &
  else
    TODO_QUERY_ADDR=$addr TODO_COMMAND_ADDR=$addr TODO_QUERY_METRICS_ADDR=$(bench_free_addr) \
      TODO_COMMAND_METRICS_ADDR=$(bench_free_addr) bash -c "exec env $cmd" >"$out/$name.log" 2>&1 &
  fi
  pids+=($!); vpid[$name]=$!; vaddr[$name]=$addr
done
build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds 15 --user-prefix warmup >/dev/null
bench_reader "$out"
for name in "${names[@]}"; do
  kill -0 "${vpid[$name]}" 2>/dev/null || die "variant $name is not running: $(tail -3 "$out/$name.log")"
  bench_ghz "$RPC" "${vaddr[$name]}" 8 3 # warm-up, not recorded
done

: > "$out/rounds.jsonl"
n=${#names[@]}
for r in $(seq "$ROUNDS"); do
  for c in $CLIENTS; do
    for i in $(seq 0 $((n - 1))); do
      name=${names[$(( (i + r) % n ))]}
      c0=$(cpu_of "${vpid[$name]}") s0=$(switches_of "${vpid[$name]}")
      children_cpu g0; p0=$(cpu_of $(pgrep -x postgres)) b0=$(box_cpu)
      bench_ghz "$RPC" "${vaddr[$name]}" "$c" "$SECS" "$out/ghz.json"
      children_cpu g1; p1=$(cpu_of $(pgrep -x postgres)) b1=$(box_cpu)
      c1=$(cpu_of "${vpid[$name]}") s1=$(switches_of "${vpid[$name]}")
      # Where the machine's CPU went, per call: ghz, PostgreSQL (every
      # backend), the whole box.
      res=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); n = max(r["calls"], 1)
g0, g1, p0, p1, b0, b1 = map(float, sys.argv[2:])
r.update(ghz_us_per_call=round((g1 - g0) * 1e6 / n, 1), pg_us_per_call=round((p1 - p0) * 1e6 / n, 1),
         box_us_per_call=round((b1 - b0) * 1e6 / n, 1))
print(json.dumps(r))' "$(bench_ghz_summary "$out/ghz.json" "$c0" "$c1" "$s0" "$s1")" "$g0" "$g1" "$p0" "$p1" "$b0" "$b1")
      line="{\"round\": $r, \"clients\": $c, \"variant\": \"$name\", \"result\": $res}"
      echo "$line" >> "$out/rounds.jsonl"
      echo "$line" >&2
    done
  done
done
rm -f "$out/ghz.json"

python3 - "$out" "$RPC" "${names[@]}" <<'PY' | tee "$out/table.txt"
import json, statistics, sys
out, rpc, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [json.loads(l) for l in open(out + "/rounds.jsonl")]
med = {}
for c in sorted({r["clients"] for r in rows}):
    for v in names:
        rs = [r["result"] for r in rows if r["clients"] == c and r["variant"] == v]
        med[(c, v)] = {k: statistics.median(x[k] for x in rs)
                       for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_call", "switches_per_call",
                                 "ghz_us_per_call", "pg_us_per_call", "box_us_per_call")}
        med[(c, v)]["errors"] = sum(x["errors"] for x in rs)
json.dump([dict(clients=c, variant=v, **m) for (c, v), m in med.items()], open(out + "/results.json", "w"), indent=2)
print("%s, medians of %d rounds; ratios against %s" % (rpc, len({r["round"] for r in rows}), names[0]))
print("%-12s %7s | %9s %7s %7s %8s %8s %6s | %6s %6s" % ("variant", "clients", "rate/s", "p50 ms", "p99 ms", "us/call",
                                                          "cs/call", "errors", "rate", "cpu"))
for (c, v), m in med.items():
    b = med[(c, names[0])]
    print("%-12s %7d | %9.0f %7.2f %7.2f %8.0f %8.2f %6d | %5.2fx %5.2fx" % (v, c, m["rps"], m["p50_ms"], m["p99_ms"],
          m["cpu_us_per_call"], m["switches_per_call"], m["errors"], m["rps"] / max(b["rps"], 1e-9),
          m["cpu_us_per_call"] / max(b["cpu_us_per_call"], 1e-9)))
print("(cs/call: the server's context switches per call, every thread, voluntary or not)")
print()
print("where the machine's CPU went, us per call (medians)")
print("%-12s %7s | %8s %8s %8s %8s %8s" % ("variant", "clients", "server", "ghz", "postgres", "other", "machine"))
for (c, v), m in med.items():
    other = m["box_us_per_call"] - m["cpu_us_per_call"] - m["ghz_us_per_call"] - m["pg_us_per_call"]
    print("%-12s %7d | %8.0f %8.0f %8.0f %8.0f %8.0f" % (v, c, m["cpu_us_per_call"], m["ghz_us_per_call"],
          m["pg_us_per_call"], other, m["box_us_per_call"]))
print("(machine: every core's busy time over the window, per call; other: the rest of the stack, the kernel's")
print(" work not charged to a process, and the variants not under load)")
PY
log "results in $out"
