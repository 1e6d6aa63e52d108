#!/usr/bin/env bash
# Ours against the implementation a team would otherwise write (issue 19),
# in the same run on the same machine: todo-query and todo-command, the Go
# peer (bench/peers/go: grpc-go, a pgx pool of 8, golang-jwt) and pgbench
# running the same SQL, with ghz (a neutral load generator, installed with
# `go install`) driving both gRPC servers:
#
#   get     GetTask of one task               pgbench: the same SELECT
#   list    ListTasks, a page of 20 of 1,000  pgbench: the same SELECT
#   create  CreateTask                        pgbench: the two-row transaction
#           (ours: the write model, the outbox, group commit, relayed to
#           Kafka and projected with todo-projector and todo-saga running;
#           the Go peer: the two rows of the pgbench script, nothing behind)
#
# at 1, 8, 32 and 64 concurrent calls (ghz --concurrency, over at most 8
# connections), each for SECS seconds after a warm-up. For both servers:
# calls/s, p50/p99, and the server's CPU microseconds per call (utime +
# stime of its process from /proc over the window, divided by the calls).
#
#   bench/peers.sh [--quick] [--only get|list|create]...
#                  full: 20 s per point (about 15 minutes);
#                  --quick: 5 s, clients 1 and 8 (about 4 minutes)
#
# Results: bench/results/peers-<UTC time>/results.json, table.txt (also on
# stdout) and chart.png.
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/common.sh"
cd "$TODO_REPO"

SECS=20; CLIENTS="1 8 32 64"; WARM=10; ONLY=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) SECS=5; CLIENTS="1 8"; WARM=3 ;;
    --only) ONLY+=("$2"); shift ;;
    *) die "usage: bench/peers.sh [--quick] [--only get|list|create]..." ;;
  esac
  shift
done
[ ${#ONLY[@]} -gt 0 ] || ONLY=(get list create)
out="$TODO_REPO/bench/results/peers-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

bash scripts/install-deps.sh >/dev/null
bench_ghz_install
bash bench/peers/go/build.sh
bench_stack
# One secret for both servers' HS256 check (a loopback-only local stack).
export TODO_JWT_SECRET=peers-bench-secret-0123456789abcdef0123456789abcdef
PSQL="$PG_BIN/psql -X -q -v ON_ERROR_STOP=1 $TODO_PG_URL"
PGBENCH="$PG_BIN/pgbench"

declare -A svc server
$bin/command/todo-command >"$out/command.log" 2>&1 & pids+=($!); svc[command]=$!
$bin/query/todo-query >"$out/query.log" 2>&1 & pids+=($!); svc[query]=$!
$bin/projection/todo-projector >"$out/projector.log" 2>&1 & pids+=($!)
$bin/saga/todo-saga >"$out/saga.log" 2>&1 & pids+=($!)
peer_addr=$(bench_free_addr)
PEER_ADDR=$peer_addr build/peer/todo-go-peer >"$out/peer.log" 2>&1 & pids+=($!); svc[peer]=$!
for _ in $(seq 100); do $bin/cli/todoctl health >/dev/null 2>&1 && break; sleep 0.1; done

bench_baseline_tables "$out"

# Warm-up, not recorded: a new Kafka JVM compiles its hot paths under the
# first minute of load and takes CPU from everything else (bench/run.sh).
build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds "$((WARM * 3))" --user-prefix warmup >/dev/null

bench_reader "$out"
server[get]=query; server[list]=query; server[create]=command
addr_of() { case $1 in query) echo "$TODO_QUERY_ADDR" ;; command) echo "$TODO_COMMAND_ADDR" ;; peer) echo "$peer_addr" ;; esac; }

pgb() { # script clients -> tps
  "$PGBENCH" -n -c "$2" -j "$(( $2 < 2 ? $2 : 2 ))" -T "$SECS" -f "$out/$1" "$TODO_PG_URL" 2>/dev/null |
    awk '/^tps = / {print $3; exit}'
}

rows=()
for s in "${ONLY[@]}"; do
  ours=${server[$s]}
  bench_ghz "$s" "$(addr_of "$ours")" 8 "$WARM"; bench_ghz "$s" "$peer_addr" 8 "$WARM" # warm-up, not recorded
  for c in $CLIENTS; do
    line="{\"scenario\": \"$s\", \"clients\": $c"
    for who in "$ours" peer; do
      p=${svc[$who]}
      c0=$(cpu_of "$p")
      bench_ghz "$s" "$(addr_of "$who")" "$c" "$SECS" "$out/ghz.json"
      c1=$(cpu_of "$p")
      name=$([ "$who" = peer ] && echo go || echo ours)
      line+=", \"$name\": $(bench_ghz_summary "$out/ghz.json" "$c0" "$c1")"
    done
    rm -f "$out/ghz.json"
    line+=", \"pgbench_tps\": $(pgb "${sql[$s]}" "$c")}"
    rows+=("$line")
    echo "$line" >&2
  done
done

printf '%s\n' "${rows[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
json.dump(rows, open(sys.argv[1], "w"), indent=2)
h = "%-7s %7s | %9s %7s %7s %7s | %9s %7s %7s %7s | %9s | %6s %6s %6s"
print(h % ("rpc", "clients", "ours/s", "p50 ms", "p99 ms", "us/call", "go/s", "p50 ms", "p99 ms", "us/call",
           "pgbench/s", "vs go", "cpu", "vs pgb"))
for r in rows:
    o, g = r["ours"], r["go"]
    print("%-7s %7d | %9.0f %7.2f %7.2f %7.0f | %9.0f %7.2f %7.2f %7.0f | %9.0f | %5.2fx %5.2fx %5.2fx" % (
        r["scenario"], r["clients"], o["rps"], o["p50_ms"], o["p99_ms"], o["cpu_us_per_call"], g["rps"], g["p50_ms"],
        g["p99_ms"], g["cpu_us_per_call"], r["pgbench_tps"], o["rps"] / max(g["rps"], 1e-9),
        o["cpu_us_per_call"] / max(g["cpu_us_per_call"], 1e-9), o["rps"] / max(r["pgbench_tps"], 1e-9)))
    for who in ("ours", "go"):
        if r[who]["errors"]:
            print("  %s: %d of %d calls failed" % (who, r[who]["errors"], r[who]["calls"]))
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write("\"%s %d\" %.1f %.1f %.1f\n" % (r["scenario"], r["clients"], r["ours"]["rps"], r["go"]["rps"], r["pgbench_tps"]))
' "$out/results.json" "$out/chart.dat" | tee "$out/table.txt"
echo "(vs go: our rate over the Go peer's; cpu: our CPU per call over the Go peer's; vs pgb: our rate over pgbench's)" |
  tee -a "$out/table.txt"

bench_chart "$out" "todo vs the Go peer vs pgbench, same run, same machine ($(nproc) cores) - calls per second" \
  "plot \"$out/chart.dat\" using 2:xtic(1) title \"todo\", \"\" using 3 title \"Go peer (grpc-go, pgx)\", \"\" using 4 title \"pgbench\""
log "results in $out/results.json"
