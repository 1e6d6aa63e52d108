#!/usr/bin/env bash
# The benchmark harness (issue 6, first scenarios): brings up its own stack
# ("bench", on free ports), runs the services of build/dev, and measures each
# scenario against a baseline taken in the same run on the same machine:
#
#   create     CreateTask through gRPC      vs pgbench running the same SQL
#                                               transaction (task row + event row)
#   get        GetTask through gRPC         vs pgbench running the same SELECT
#   list       ListTasks (20 of 1,000)      vs pgbench running the same SELECT
#   freshness  CreateTask reply -> listed by ListTasks, under 1,000 CreateTask/s
#              (and freshness-max: under as many as 8 clients can send)
#   freshness-token  CreateTask reply -> GetTask with its consistency token answered,
#              1, 3 and 8 concurrent writers of one user (target p99 < 50 ms)
#   catchup    the live projector applying N events written straight to the
#              topic (todo-eventgen: created, every 2nd updated, every 3rd
#              completed; 1,000 users)   vs the raw consume rate of the topics
#                                            (librdkafka alone, no database)
#   saga       4 clients completing tasks (each with a reminder); completed
#              task-completion sagas/s   vs the completions offered per second
#   reminders  reminders all due at one second: firing delay p50/p99, rate
#   delivery   200 EMAIL reminders of 4 users all due at one second: from the due
#              second to each mail in the SMTP sink (aiosmtpd, Maildir) p50/p99,
#              mails/s           vs the firing rate of "reminders" (1.0: mail keeps up)
#   rebuild    `todoctl projection rebuild` of the whole read model (every
#              record of both topics)    vs pgbench upserting the same number of
#                                            rows, 500 per INSERT ... ON CONFLICT
#   seal-write, seal-read  events sealed (todo-command) / opened (projector)
#              per second on one core (todo-sealbench)
#                                        vs the same events unsealed
#   rebuild-sealed  `todoctl projection rebuild tasks` of events sealed
#              (todo-eventgen --sealed), records/s
#                                        vs the same number unsealed
#
#   bench/run.sh [--quick]     (after a warm-up: 10 s quick, 30 s full; see below)
#                              --quick: clients 1 and 8, 3 s each, 10,000 events
#                              (about 2 minutes); full: 1, 8, 32, 64 clients, 20 s
#                              each, 100,000 and 1,000,000 events (about 20 minutes)
#
# Results: bench/results/<UTC time>/results.json (with the CPU seconds and
# peak RSS of each service per scenario), table.txt (also on stdout) and
# chart.png (gnuplot, installed when missing).
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/common.sh"
cd "$TODO_REPO"

quick=0
[ "${1:-}" = --quick ] && quick=1
if [ $quick = 1 ]; then CLIENTS="1 8"; SECS=3; EVENTS="10000"; WARM=10; else CLIENTS="1 8 32 64"; SECS=20; EVENTS="100000 1000000"; WARM=30; fi
out="$TODO_REPO/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

bash scripts/install-deps.sh >/dev/null
bash scripts/build.sh dev >/dev/null
bash scripts/stack.sh wipe bench >/dev/null 2>&1 || true # every run from an empty stack: the replay scenarios count what the topics hold
bash scripts/stack.sh start bench
eval "$(bash scripts/stack.sh env bench)"
export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations"
bin=build/dev/src
$bin/cli/todoctl migrate >/dev/null
$bin/cli/todoctl topics apply >/dev/null
PSQL="$PG_BIN/psql -X -q -v ON_ERROR_STOP=1 $TODO_PG_URL"
PGBENCH="$PG_BIN/pgbench"

pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  bash scripts/stack.sh stop bench >/dev/null 2>&1 || true
}
trap cleanup EXIT
# The mail sink of the delivery scenario (Debian's python3-aiosmtpd).
smtp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
/usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$out/maildir" \
  >"$out/smtpd.log" 2>&1 & pids+=($!)
export TODO_NOTIFY_SMTP_URL=smtp://127.0.0.1:$smtp_port TODO_NOTIFY_SMTP_FROM=reminders@bench.test
declare -A svc
$bin/command/todo-command >"$out/command.log" 2>&1 & pids+=($!); svc[command]=$!
$bin/query/todo-query >"$out/query.log" 2>&1 & pids+=($!); svc[query]=$!
$bin/projection/todo-projector >"$out/projector.log" 2>&1 & pids+=($!); svc[projector]=$!
$bin/saga/todo-saga >"$out/saga.log" 2>&1 & pids+=($!); svc[saga]=$!
for _ in $(seq 100); do $bin/cli/todoctl health >/dev/null 2>&1 && break; sleep 0.1; done

bench_baseline_tables "$out"

cpu() { # CPU seconds (user+system) of a pid; 0 for one that is not running
  [ -r "/proc/$1/stat" ] && [ "$1" != 0 ] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
rss() { [ -r "/proc/$1/status" ] && [ "$1" != 0 ] || { echo 0; return; }; awk '/VmHWM/ {print $2 / 1024}' "/proc/$1/status"; }

results=()
# "name=cpu-seconds ..." of every service now
snap() {
  local out="" n
  for n in command query projector saga; do out+="$n=$(cpu "${svc[$n]}") "; done
  echo "$out"
}
# scenario name, clients, loadgen json, baseline tps, snap before
record() {
  local name=$1 clients=$2 json=$3 base=$4 before=$5 rsss="" n
  for n in command query projector saga; do rsss+="$n=$(rss "${svc[$n]}") "; done
  results+=("$(python3 - "$name" "$clients" "$json" "$base" "$before" "$(snap)" "$rsss" <<'PY'
import json, sys
name, clients, j, base = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
kv = lambda s: {k: float(v) for k, v in (p.split("=") for p in s.split())}
before, after, rss = kv(sys.argv[5]), kv(sys.argv[6]), kv(sys.argv[7])
j.update(scenario=name, clients=clients, baseline_tps=float(base) if base else None,
         ratio=(j["rps"] / float(base)) if base else None,
         cpu_s={k: round(after[k] - before[k], 2) for k in after},
         peak_rss_mib={k: round(v, 1) for k, v in rss.items()})
print(json.dumps(j))
PY
)")
  echo "${results[-1]}" >&2
}

pgb() { # script-file clients [-D ...] -> tps
  local f=$1 c=$2; shift 2
  "$PGBENCH" -n -c "$c" -j "$(( c < 2 ? c : 2 ))" -T "$SECS" -f "$f" "$@" "$TODO_PG_URL" 2>/dev/null |
    awk '/^tps = / {print $3; exit}'
}

loadgen() { build/dev/bench/todo-loadgen "$@" --seconds "$SECS"; }

# Warm-up, not recorded: a freshly started Kafka broker (a JVM) compiles its
# hot paths during its first seconds under load and takes CPU from everything
# else on the 2 cores: CreateTask at 8 clients measured 1,365/s in the first
# 3 s of a new stack and ~2,500/s after 15 s. Both sides get the warm machine.
log "warming up (${WARM}s of CreateTask and pgbench, not recorded)"
build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds "$WARM" --user-prefix warmup >/dev/null
"$PGBENCH" -n -c 8 -j 2 -T 3 -f "$out/create.sql" "$TODO_PG_URL" >/dev/null 2>&1 || true

for c in $CLIENTS; do
  s0=$(snap)
  j=$(loadgen --rpc create --clients "$c")
  base=$(pgb "$out/create.sql" "$c")
  record create "$c" "$j" "$base" "$s0"
done

# Reads: a user with 1,000 tasks, one task id of it.
read_user=bench-reader-$$
build/dev/bench/todo-loadgen --rpc list --clients 1 --seconds 1 --user-prefix "$read_user" >/dev/null
for _ in $(seq 300); do # the projector has them all (at most 30 s)
  list_user=$($PSQL -Atc "select user_id from read.tasks where user_id like '$read_user%' group by 1 having count(*) >= 1000 limit 1")
  [ -n "$list_user" ] && break
  sleep 0.1
done
$PSQL -c "analyze read.tasks" # fresh statistics for both sides' plans
task_id=$($PSQL -Atc "select id from read.tasks where user_id = '$list_user' limit 1")
cat > "$out/get.sql" <<SQL
SELECT id, user_id, title, description, priority, due_at, completed, category, tags, created_at, updated_at, version
  FROM read.tasks WHERE id = '$task_id' AND user_id = '$list_user' AND NOT deleted;
SQL
cat > "$out/list.sql" <<SQL
SELECT id, user_id, title, description, priority, due_at, completed, category, tags, created_at, updated_at, version
  FROM read.tasks WHERE user_id = '$list_user' AND NOT deleted ORDER BY created_at DESC, id DESC LIMIT 21;
SQL
for c in $CLIENTS; do
  s0=$(snap)
  j=$(loadgen --rpc get --clients "$c")
  record get "$c" "$j" "$(pgb "$out/get.sql" "$c")" "$s0"
  s0=$(snap)
  j=$(loadgen --rpc list --clients "$c")
  record list "$c" "$j" "$(pgb "$out/list.sql" "$c")" "$s0"
done

s0=$(snap)
# Freshness: CreateTask reply -> listed by ListTasks, under 1,000 CreateTask/s
# from 8 paced clients (and unpaced, as fast as 8 clients go).
j=$(loadgen --rpc freshness --clients 9 --rate 1000)
record freshness 9 "$j" "" "$s0"
s0=$(snap)
j=$(loadgen --rpc freshness --clients 9)
record freshness-max 9 "$j" "" "$s0"
# Read-your-writes through the token path: 1, 3 and 8 concurrent writers of
# one user, each CreateTask followed by GetTask with its consistency token;
# latency from the CreateTask reply to the read's answer (target p99 < 50 ms).
for c in 1 3 8; do
  s0=$(snap)
  j=$(loadgen --rpc ryw --clients "$c")
  record freshness-token "$c" "$j" "" "$s0"
done

# Sagas: 4 clients completing tasks (each with a reminder) for SECS seconds;
# todo-saga drives a task-completion saga per completion. Rate: completed
# sagas per second from the first saga's start to the last one's end; its
# baseline: the completions offered per second (1.0 = keeping up).
t0=$($PSQL -Atc "select now()")
s0=$(snap)
j=$(loadgen --rpc complete --clients 4)
for _ in $(seq 600); do # at most 5 minutes
  [ "$($PSQL -Atc "select count(*) from saga.sagas where created_at >= '$t0' and state in ('RUNNING', 'COMPENSATING')")" = 0 ] && break
  sleep 0.5
done
offered=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rps"])' "$j")
j=$($PSQL -Atc "select json_build_object('rps', count(*) / greatest(extract(epoch from max(updated_at) - min(created_at)), 0.001),
  'sagas', count(*), 'p50_ms', coalesce(percentile_cont(0.5) within group (order by extract(epoch from updated_at - created_at) * 1000), 0),
  'p99_ms', coalesce(percentile_cont(0.99) within group (order by extract(epoch from updated_at - created_at) * 1000), 0),
  'errors', count(*) filter (where state <> 'COMPLETED'))
  from saga.sagas where created_at >= '$t0'")
record saga 4 "$j" "$offered" "$s0"

# Reminders: as many as 4 clients schedule in SECS seconds, all due at the same
# second; the delay from that second to each firing (p50/p99), and the firing
# rate. No baseline.
due=$(( $(date +%s) + SECS + 3 ))
s0=$(snap)
loadgen --rpc remind --clients 4 --at "$due" >/dev/null
for _ in $(seq 600); do
  [ "$($PSQL -Atc "select count(*) from write.reminders where remind_at = to_timestamp($due) and status = 'scheduled'")" = 0 ] && break
  sleep 0.5
done
j=$($PSQL -Atc "select json_build_object('rps', count(*) / greatest(extract(epoch from max(updated_at) - to_timestamp($due)), 0.001),
  'reminders', count(*), 'p50_ms', percentile_cont(0.5) within group (order by extract(epoch from updated_at - remind_at) * 1000),
  'p99_ms', percentile_cont(0.99) within group (order by extract(epoch from updated_at - remind_at) * 1000),
  'errors', count(*) filter (where status <> 'fired'))
  from write.reminders where remind_at = to_timestamp($due)")
record reminders 4 "$j" "" "$s0"
fire_rps=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rps"])' "$j")

# Delivery: 4 users with an address schedule 50 EMAIL reminders each, all due
# at one second; from that second to each mail's arrival in the sink (the
# Maildir file's time), p50/p99, and mails per second from the due second to
# the last; baseline: the firing rate above (1.0: mail keeps up with firing).
due=$(( $(date +%s) + SECS + 3 ))
s0=$(snap)
loadgen --rpc remind --clients 4 --at "$due" --channel email --max 50 >/dev/null
want=$($PSQL -Atc "select count(*) from write.reminders where remind_at = to_timestamp($due)")
for _ in $(seq 600); do # at most 5 minutes
  [ "$(ls "$out/maildir/new" 2>/dev/null | wc -l)" -ge "$want" ] && break
  sleep 0.5
done
j=$(python3 - "$out/maildir/new" "$due" "$want" <<'PY'
import json, os, sys
d, due, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ms = sorted((os.stat(os.path.join(d, f)).st_mtime - due) * 1000 for f in os.listdir(d)) if os.path.isdir(d) else []
pct = lambda p: ms[int((len(ms) - 1) * p)] if ms else 0
print(json.dumps({"rps": len(ms) / max(ms[-1] / 1000, 0.001) if ms else 0, "mails": len(ms), "p50_ms": pct(0.5),
                  "p99_ms": pct(0.99), "errors": want - len(ms)}))
PY
)
record delivery 4 "$j" "$fire_rps" "$s0"

# todo-saga sits the replay scenarios out: the synthetic task.completed
# events of todo-eventgen would each start a saga.
kill -TERM "${svc[saga]}" && wait "${svc[saga]}" 2>/dev/null || true
svc[saga]=0 # reported as 0 CPU, 0 RSS from here on

# Catch-up and rebuild: events written straight to the topic.
$PSQL <<'SQL'
create table bench.read_tasks (like read.tasks including all);
SQL
cat > "$out/upsert.sql" <<'SQL'
INSERT INTO bench.read_tasks (id, user_id, title, description, priority, category, tags, version, created_at, updated_at)
  SELECT gen_random_uuid(), 'u' || (i % 1000), 'replayed task ' || i,
         'a task written by todo-eventgen for the rebuild benchmark', 1 + i % 4, 'bench', '{bench,replay}', 1, now(), now()
  FROM generate_series(1, 500) i
  ON CONFLICT (id) DO UPDATE SET title = excluded.title, version = excluded.version, updated_at = excluded.updated_at;
SQL
behind() { $bin/cli/todoctl projection status tasks | awk '/behind by/ {print $3}'; }
for n in $EVENTS; do
  s0=$(snap)
  t0=$(date +%s.%N)
  build/dev/bench/todo-eventgen produce --events "$n" --prefix "replay-$n" >"$out/produce-$n.json"
  until [ "$(behind)" = 0 ]; do sleep 0.1; done
  t1=$(date +%s.%N)
  raw=$(build/dev/bench/todo-eventgen consume | python3 -c 'import json,sys; print(json.load(sys.stdin)["rate"])')
  j=$(python3 -c 'import sys; n, s = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); print("{\"rps\": %.1f, \"events\": %d, \"seconds\": %.2f, \"p50_ms\": 0, \"p99_ms\": 0, \"errors\": 0}" % (n / s, n, s))' "$n" "$t0" "$t1")
  record catchup "$n" "$j" "$raw" "$s0"

  s0=$(snap)
  /usr/bin/time -f "%e %U %S %M" -o "$out/rebuild-$n.time" $bin/cli/todoctl projection rebuild >"$out/rebuild-$n.log" 2>&1
  records=$(awk '/swapped:/ {print $3}' "$out/rebuild-$n.log" | tail -1)
  $PSQL -c "truncate bench.read_tasks"
  upsert=$("$PGBENCH" -n -c 1 -t $(( (records + 499) / 500 )) -f "$out/upsert.sql" "$TODO_PG_URL" 2>/dev/null |
           awk '/^tps = / {print $3 * 500; exit}')
  j=$(python3 - "$records" "$out/rebuild-$n.time" <<'PY'
import json, sys
records = int(sys.argv[1]); wall, user, sys_s, rss_kib = open(sys.argv[2]).read().split()[-4:]
print(json.dumps({"rps": records / float(wall), "records": records, "seconds": float(wall), "p50_ms": 0, "p99_ms": 0,
                  "errors": 0, "todoctl_cpu_s": round(float(user) + float(sys_s), 2),
                  "todoctl_peak_rss_mib": round(int(rss_kib) / 1024, 1)}))
PY
)
  record rebuild "$records" "$j" "$upsert" "$s0"
done

# seal: sealing and opening events' personal fields (todo-sealbench, one
# core), events per second against the same events unsealed.
s0=$(snap)
build/dev/bench/todo-sealbench --events $([ $quick = 1 ] && echo 50000 || echo 400000) >"$out/seal.json"
for side in write read; do
  j=$(python3 - "$out/seal.json" "$side" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[sys.argv[2] + "_us_per_event"]
print(json.dumps({"rps": 1e6 / r["sealed"], "p50_ms": 0, "p99_ms": 0, "errors": 0, "us_per_event": r}))
PY
)
  base=$(python3 -c 'import json,sys; print(1e6 / json.load(open(sys.argv[1]))[sys.argv[2] + "_us_per_event"]["baseline"])' "$out/seal.json" "$side")
  record "seal-$side" 1 "$j" "$base" "$s0"
done

# rebuild-sealed: `todoctl projection rebuild tasks` of the same number of
# events with their personal fields sealed, against them unsealed; each
# variant alone on the topics (todo-eventgen truncate before it), the two
# alternated twice, the median of each reported (a rebuild's fixed costs
# are in both).
SEAL_N=$([ $quick = 1 ] && echo 100000 || echo 400000)
declare -A seal_rates=([plain]="" [sealed]="")
s0=$(snap)
for r in 1 2; do
  for v in plain sealed; do
    build/dev/bench/todo-eventgen truncate >/dev/null
    build/dev/bench/todo-eventgen produce --events "$SEAL_N" --prefix "seal-$v-$r" $([ $v = sealed ] && echo --sealed) \
      >"$out/produce-seal-$v-$r.json"
    until [ "$(behind)" = 0 ]; do sleep 0.1; done
    t0=$(date +%s.%N)
    $bin/cli/todoctl projection rebuild tasks >"$out/rebuild-seal-$v-$r.log" 2>&1
    t1=$(date +%s.%N)
    records=$(awk '/swapped:/ {print $3}' "$out/rebuild-seal-$v-$r.log" | tail -1)
    seal_rates[$v]+="$(python3 -c 'import sys; print(int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])))' \
      "$records" "$t0" "$t1") "
  done
done
med() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
# shellcheck disable=SC2086 # word lists
j=$(python3 -c 'import json, sys; print(json.dumps({"rps": float(sys.argv[1]), "records": int(sys.argv[2]),
  "p50_ms": 0, "p99_ms": 0, "errors": 0, "rates": {"plain": sys.argv[3].split(), "sealed": sys.argv[4].split()}}))' \
  "$(med ${seal_rates[sealed]})" "$SEAL_N" "${seal_rates[plain]}" "${seal_rates[sealed]}")
# shellcheck disable=SC2086
record rebuild-sealed "$SEAL_N" "$j" "$(med ${seal_rates[plain]})" "$s0"

printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
json.dump(rows, open(sys.argv[1], "w"), indent=2)
print("%-14s %8s %10s %10s %7s %8s %8s %8s" % ("scenario", "clients", "rate/s", "baseline", "ratio", "p50 ms", "p99 ms", "errors"))
for r in rows:
    b = "%.0f" % r["baseline_tps"] if r["baseline_tps"] else "-"
    ratio = "%.2f" % r["ratio"] if r["ratio"] else "-"
    # catchup/rebuild: "clients" is the number of events/records
    print("%-14s %8d %10.0f %10s %7s %8.2f %8.2f %8d" % (r["scenario"], r["clients"], r["rps"], b, ratio, r["p50_ms"], r["p99_ms"], r["errors"]))
# The chart data: every scenario with a baseline, ours beside it.
with open(sys.argv[2], "w") as f:
    for r in rows:
        if r["baseline_tps"]:
            f.write("\"%s %d\" %.1f %.1f\n" % (r["scenario"], r["clients"], r["rps"], r["baseline_tps"]))
' "$out/results.json" "$out/chart.dat" | tee "$out/table.txt"

# The chart: ours and the baseline per scenario (log scale), as a PNG.
bench_chart "$out" "todo vs its baselines, same run, same machine ($(nproc) cores) - rate per second, log scale" \
  "set logscale y
set yrange [10:*]
plot \"$out/chart.dat\" using 2:xtic(1) title \"todo\", \"\" using 3 title \"baseline\""
log "results in $out/results.json"
