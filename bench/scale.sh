#!/usr/bin/env bash
# The scale-out measurements of docs/SCALING.md (issue 18), on a three-node
# Kafka cluster stack ("bench-scale": three KRaft nodes, the production
# topic profile) on this machine:
#
#   x1 rep3   one instance of each service, topics with 3 replicas
#             (min.insync.replicas 2, acks=all): production as configured
#   x2 rep3   two instances of each service (todo-command, todo-query,
#             todo-projector, todo-saga); the load generators balance over
#             both addresses (round_robin)
#   x1 rep1   one instance of each, the event topics recreated with one
#             replica (todo-eventgen replicate): the cost of replication
#   x1 rep3b  the first phase again (topics recreated with 3 replicas), on
#             brokers warmed by the whole run: the reference for the others
#
# In each phase: CreateTask at 8 and 32 clients (rate, p50/p99), then the
# CPU each group of processes spent per command over the load and its
# drain (todo-command, todo-projector, the Kafka nodes, PostgreSQL: /proc,
# utime + stime; commands counted as the events the write model gained);
# freshness (CreateTask reply -> listed) under a paced RATE commands/s
# (TODO_BENCH_SCALE_RATE, 100: what three brokers on these 2 cores sustain);
# the idle CPU per second of each group before the load;
# GetTask at 8 clients and todo-query's CPU per call. The machine is shared
# by everything, so a second instance shows what coordination costs, not
# what a second machine would add: the capacity model in docs/SCALING.md
# reads these per-call CPU figures.
#
#   bench/scale.sh [--quick]   full: 20 s per scenario (about 17 minutes);
#                              --quick: 5 s (about 8 minutes)
#
# Results: bench/results/scale-<UTC time>/results.json and table.txt (also
# on stdout).
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/common.sh"
cd "$TODO_REPO"

SECS=20; WARM=60; RATE=${TODO_BENCH_SCALE_RATE:-100}
[ "${1:-}" = --quick ] && { SECS=5; WARM=10; }
out="$TODO_REPO/bench/results/scale-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

bash scripts/install-deps.sh >/dev/null
bash scripts/build.sh dev >/dev/null
bash scripts/stack.sh wipe bench-scale >/dev/null 2>&1 || true
TODO_STACK_KAFKA_NODES=3 TODO_STACK_PG_REPLICA=0 bash scripts/stack.sh start bench-scale
eval "$(bash scripts/stack.sh env bench-scale)"
export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations"
bin=build/dev/src
$bin/cli/todoctl migrate >/dev/null
$bin/cli/todoctl topics apply >/dev/null
PSQL="$PG_BIN/psql -X -q -v ON_ERROR_STOP=1 $TODO_PG_URL"
primary_cmd=$TODO_COMMAND_ADDR primary_qry=$TODO_QUERY_ADDR

declare -A group # service -> "pid pid ..."
all_pids() { echo "${group[command]:-} ${group[query]:-} ${group[projector]:-} ${group[saga]:-}"; }
stop_services() {
  local p; p=$(all_pids)
  [ -n "${p// /}" ] || return 0
  kill -TERM $p 2>/dev/null || true
  for x in $p; do while kill -0 "$x" 2>/dev/null; do sleep 0.1; done; done
  group=()
}
cleanup() { stop_services; bash scripts/stack.sh stop bench-scale >/dev/null 2>&1 || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts n instances of each service; exports the address lists.
start_services() {
  local n=$1 i cmds="" qrys="" c q
  for i in $(seq 1 "$n"); do
    if [ "$i" = 1 ]; then c=$primary_cmd q=$primary_qry; else c=127.0.0.1:$(free_port) q=127.0.0.1:$(free_port); fi
    cmds+="${cmds:+,}$c" qrys+="${qrys:+,}$q"
    local m=(TODO_COMMAND_METRICS_ADDR=127.0.0.1:0 TODO_QUERY_METRICS_ADDR=127.0.0.1:0
             TODO_PROJECTOR_METRICS_ADDR=127.0.0.1:0 TODO_SAGA_METRICS_ADDR=127.0.0.1:0)
    env "${m[@]}" TODO_INSTANCE="scale-command-$i" TODO_COMMAND_ADDR="$c" $bin/command/todo-command >>"$out/command-$i.log" 2>&1 &
    group[command]+="$! "
    env "${m[@]}" TODO_INSTANCE="scale-query-$i" TODO_QUERY_ADDR="$q" $bin/query/todo-query >>"$out/query-$i.log" 2>&1 &
    group[query]+="$! "
    env "${m[@]}" TODO_INSTANCE="scale-projector-$i" $bin/projection/todo-projector >>"$out/projector-$i.log" 2>&1 &
    group[projector]+="$! "
    # todo-saga calls todo-command over the whole list (set below)
  done
  for i in $(seq 1 "$n"); do
    env TODO_SAGA_METRICS_ADDR=127.0.0.1:0 TODO_INSTANCE="scale-saga-$i" TODO_COMMAND_ADDR="$cmds" \
      $bin/saga/todo-saga >>"$out/saga-$i.log" 2>&1 &
    group[saga]+="$! "
  done
  export TODO_COMMAND_ADDR=$cmds TODO_QUERY_ADDR=$qrys
  for a in ${cmds//,/ } ${qrys//,/ }; do
    for _ in $(seq 200); do TODO_COMMAND_ADDR=$a TODO_QUERY_ADDR=$a $bin/cli/todoctl health >/dev/null 2>&1 && break; sleep 0.1; done
  done
  sleep 3 # the consumer groups settle
}

kafka_pids() { cat "$TODO_STACK_DIR"/kafka*/kafka.pid 2>/dev/null; }
pg_pids() { local pm; pm=$(head -1 "$TODO_STACK_DIR/pg/data/postmaster.pid"); echo "$pm $(pgrep -P "$pm")"; }
snap() { # command query projector saga kafka postgres
  echo "$(cpu_of ${group[command]}) $(cpu_of ${group[query]}) $(cpu_of ${group[projector]}) $(cpu_of ${group[saga]})" \
       "$(cpu_of $(kafka_pids)) $(cpu_of $(pg_pids))"
}
events() { $PSQL -Atc "select coalesce(max(position), 0) from write.events"; }
drained() {
  [ "$($PSQL -Atc "select count(*) from write.events where published_at is null")" = 0 ] &&
    [ "$($bin/cli/todoctl projection status | awk '/behind by/ {s += $3} END {print s + 0}')" = 0 ]
}
wait_drained() { for _ in $(seq 1200); do drained && return 0; sleep 0.1; done; log "not drained after 120 s"; return 1; }

rows=()
loadgen() { build/dev/bench/todo-loadgen "$@" --seconds "$SECS"; }
measure() {
  local phase=$1 c s0 s1 e0 e1 j
  # Idle: what each group spends per second with no load (the Kafka nodes'
  # own replication and quorum traffic), beside the per-command figures.
  wait_drained
  s0=$(snap); sleep 5; s1=$(snap)
  rows+=("$(python3 -c 'import json,sys; d=[b-a for a,b in zip(map(float,sys.argv[2].split()),map(float,sys.argv[3].split()))]; print(json.dumps(dict(phase=sys.argv[1], rpc="idle", clients=0, rps=0, p50_ms=0, p99_ms=0, errors=0, cpu_ms_per_s=dict(zip(["command","query","projector","saga","kafka","postgres"], [round(x*1000/5,1) for x in d])))))' "$phase" "$s0" "$s1")")
  echo "${rows[-1]}" >&2
  for c in 8 32; do
    wait_drained
    s0=$(snap); e0=$(events)
    j=$(loadgen --rpc create --clients "$c" --user-prefix "scale-$phase-$c")
    wait_drained
    s1=$(snap); e1=$(events)
    rows+=("$(python3 - "$phase" "create" "$c" "$j" "$s0" "$s1" "$((e1 - e0))" <<'PY'
import json, sys
phase, rpc, c, j, s0, s1, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])
d = [b - a for a, b in zip(map(float, s0.split()), map(float, s1.split()))]
per = lambda x: round(x * 1e6 / max(n, 1), 1)
print(json.dumps(dict(phase=phase, rpc=rpc, clients=c, rps=j["rps"], p50_ms=j["p50_ms"], p99_ms=j["p99_ms"],
  errors=j["errors"], commands=n, us_per_command=dict(command=per(d[0]), projector=per(d[2]), kafka=per(d[4]),
  postgres=per(d[5]), saga=per(d[3])))))
PY
)")
    echo "${rows[-1]}" >&2
  done
  wait_drained
  j=$(loadgen --rpc freshness --clients 9 --rate "$RATE" --user-prefix "scale-$phase-fresh")
  rows+=("$(python3 -c 'import json,sys; j=json.loads(sys.argv[2]); print(json.dumps(dict(phase=sys.argv[1], rpc="freshness", clients=9, rps=j["background_rps"], p50_ms=j["p50_ms"], p99_ms=j["p99_ms"], errors=j["errors"])))' "$phase" "$j")")
  echo "${rows[-1]}" >&2
  wait_drained
  s0=$(snap)
  j=$(loadgen --rpc get --clients 8 --user-prefix "scale-$phase-get")
  s1=$(snap)
  rows+=("$(python3 - "$phase" "$j" "$s0" "$s1" <<'PY'
import json, sys
phase, j, s0, s1 = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
d = [b - a for a, b in zip(map(float, s0.split()), map(float, s1.split()))]
# the loadgen's set-up (one CreateTask per client) is inside the window: negligible
print(json.dumps(dict(phase=phase, rpc="get", clients=8, rps=j["rps"], p50_ms=j["p50_ms"], p99_ms=j["p99_ms"],
  errors=j["errors"], calls=j["calls"], us_per_call=dict(query=round(d[1] * 1e6 / max(j["calls"], 1), 1),
  postgres=round(d[5] * 1e6 / max(j["calls"], 1), 1)))))
PY
)")
  echo "${rows[-1]}" >&2
}

# phase name instances [replicas]: the services restarted as n instances
# of each (the event topics recreated empty with that many replicas first,
# when given), a short warm-up, then measure.
phase() {
  local name=$1 n=$2 replicas=${3:-}
  wait_drained
  stop_services
  export TODO_COMMAND_ADDR=$primary_cmd TODO_QUERY_ADDR=$primary_qry
  [ -z "$replicas" ] || build/dev/bench/todo-eventgen replicate --replication "$replicas" >/dev/null
  start_services "$n"
  build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds 5 --user-prefix "warmup-$name" >/dev/null
  measure "$name"
}

log "x1 rep3: one instance of each service, 3 replicas"
start_services 1
build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds "$WARM" --user-prefix warmup >/dev/null
measure "x1-rep3"
log "x2 rep3: two instances of each service, 3 replicas"
phase "x2-rep3" 2
log "x1 rep1: one instance of each, the event topics recreated with 1 replica"
phase "x1-rep1" 1 1
# The first phase again, on brokers that have run for the whole bench: the
# Kafka JVMs were still compiling their hot paths during the first phase
# (idle CPU 0.44 cores then, 0.1-0.14 later), so the phases are compared
# with this one, and the first tells what a young cluster costs.
log "x1 rep3 again: the event topics recreated with 3 replicas"
phase "x1-rep3b" 1 3

printf '%s\n' "${rows[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
json.dump(rows, open(sys.argv[1], "w"), indent=2)
print("%-8s %-9s %7s %8s %7s %7s %6s | CPU us per command: %7s %9s %7s %8s | query us/call" %
      ("phase", "rpc", "clients", "rate/s", "p50 ms", "p99 ms", "errors", "command", "projector", "kafka", "postgres"))
for r in rows:
    u = r.get("us_per_command")
    cpu = "%27s %9s %7s %8s" % (u["command"], u["projector"], u["kafka"], u["postgres"]) if u else "%55s" % ""
    q = r.get("us_per_call", {}).get("query", "")
    i = r.get("cpu_ms_per_s")
    if i:
        cpu = "idle, CPU ms per s: %8s %9s %7s %8s" % (i["command"], i["projector"], i["kafka"], i["postgres"])
    print("%-8s %-9s %7d %8.0f %7.2f %7.2f %6d | %s | %s" % (r["phase"], r["rpc"], r["clients"], r["rps"], r["p50_ms"],
          r["p99_ms"], r["errors"], cpu, q))
' "$out/results.json" | tee "$out/table.txt"
log "results in $out/results.json"
