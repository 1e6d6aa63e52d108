# Sourced by the bench scripts (after scripts/lib.sh, from the repository
# root): bench_stack builds build/dev, starts the "bench" stack afresh (free
# ports), applies the migrations and topics and sets $bin; the services and
# tools a script starts go into pids=() and are stopped, with the stack, when
# the script exits.
bench_stack() {
  bash scripts/build.sh dev >/dev/null
  # From empty: what an earlier run left (a grown database, a migration
  # applied by hand) would change what is measured.
  bash scripts/stack.sh wipe bench >/dev/null 2>&1 || true
  pids=()
  trap bench_cleanup EXIT
  bash scripts/stack.sh start bench >/dev/null
  eval "$(bash scripts/stack.sh env bench)"
  export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations"
  bin=build/dev/src
  $bin/cli/todoctl migrate >/dev/null
  $bin/cli/todoctl topics apply >/dev/null
}

bench_cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  bash scripts/stack.sh stop bench >/dev/null 2>&1 || true
}

# CPU seconds (utime + stime, with those of reaped children) of the pids;
# 0 for pids that are gone.
cpu_of() {
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print t + ($12 + $13 + $14 + $15) / hz}' "/proc/$p/stat")
  done
  echo "$t"
}

# Context switches (voluntary and not) of every live thread of pid: each
# is a thread going to sleep or being put off the CPU, and most of a
# server's hand-offs between threads are two (a wake-up, then a sleep).
switches_of() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {t += $2} END {print t + 0}'
}

# CPU seconds the whole machine has been busy (every core: user, nice,
# system, irq, softirq, steal), from /proc/stat.
box_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" {print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit}' /proc/stat
}

# CPU seconds of this shell's finished children (the `times` builtin's
# second line) into variable $1: a foreground command's own cost, read
# before and after it. Not in a $(...): a subshell has children of its own.
children_cpu() {
  local f
  f=$(mktemp)
  times >"$f"
  printf -v "$1" '%s' "$(awk 'NR == 2 {t = 0; for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); t += a[1] * 60 + a[2]}; print t}' "$f")"
  rm -f "$f"
}

# The pgbench baseline's tables (the write model's, without our trigger's
# neighbours: bench.tasks and bench.events, made afresh) and its CreateTask
# script, the two-row transaction, as DIR/create.sql; needs $PSQL.
bench_baseline_tables() {
  $PSQL <<'SQL'
drop schema if exists bench cascade;
create schema bench;
create table bench.tasks (like write.tasks including all);
create table bench.events (like write.events including all);
SQL
  cat > "$1/create.sql" <<'SQL'
BEGIN;
INSERT INTO bench.tasks (id, user_id, title, description, priority, category, tags, version, created_at, updated_at)
  VALUES (gen_random_uuid(), 'u' || :client_id, 'benchmark task', '', 2, '', '{}', 1, now(), now());
INSERT INTO bench.events (event_id, event_type, schema_version, user_id, aggregate_type, aggregate_id,
  aggregate_version, envelope)
  VALUES (gen_random_uuid(), 'task.created', 2, 'u' || :client_id, 'task', gen_random_uuid(), 1,
  decode(repeat('ab', 180), 'hex'));
END;
SQL
}

# A clustered bar chart of DIR/chart.dat as DIR/chart.png, titled TITLE;
# LINES (gnuplot) add settings and the plot command. gnuplot is installed
# when missing; without it, no chart.
bench_chart() {
  command -v gnuplot >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null 2>&1; } || true
  command -v gnuplot >/dev/null || { log "gnuplot is not available: no chart"; return 0; }
  gnuplot <<GP
set terminal pngcairo size 1200,600 noenhanced font ",10"
set output "$1/chart.png"
set title "$2"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30
set key top left
set grid ytics
$3
GP
  log "chart in $1/chart.png"
}

# A free loopback address (127.0.0.1:port).
bench_free_addr() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print("127.0.0.1:%d" % s.getsockname()[1])'
}

# ghz (go install, into the cache) as $GHZ.
bench_ghz_install() {
  GHZ=$TODO_CACHE/go/bin/ghz
  [ -x "$GHZ" ] || GOBIN=$TODO_CACHE/go/bin GOFLAGS=-mod=mod go install github.com/bojand/ghz/cmd/ghz@v0.121.0
}

# The readers' set-up, after bench_stack with the services running and
# TODO_JWT_SECRET set: a user with 1,000 tasks (todo-loadgen's list
# set-up), one of its tasks, bearer tokens, and for each scenario (get,
# list, create) the ghz call, data and token (call[], data[], auth[]) and
# the pgbench script in DIR (sql[]); needs $PSQL.
bench_reader() {
  local read_user=peers-reader-$$ list_user task_id token writer_token sel
  declare -gA call data sql auth
  build/dev/bench/todo-loadgen --rpc list --clients 1 --seconds 1 --user-prefix "$read_user" >/dev/null
  for _ in $(seq 300); do
    list_user=$($PSQL -Atc "select user_id from read.tasks where user_id like '$read_user%' group by 1 having count(*) >= 1000 limit 1")
    [ -n "$list_user" ] && break
    sleep 0.1
  done
  [ -n "$list_user" ] || die "the reader's 1,000 tasks were not projected in 30 s"
  $PSQL -c "analyze read.tasks"
  task_id=$($PSQL -Atc "select id from read.tasks where user_id = '$list_user' limit 1")
  token=$($bin/cli/todoctl token --user "$list_user" --ttl 7200)
  writer_token=$($bin/cli/todoctl token --user "peers-writer-$$" --ttl 7200)
  sel="select id::text, user_id, title, description, priority, (extract(epoch from due_at) * 1000000)::bigint, completed,
 (extract(epoch from completed_at) * 1000000)::bigint, category, array_to_string(tags, E'\\x1f'),
 (extract(epoch from created_at) * 1000000)::bigint, (extract(epoch from updated_at) * 1000000)::bigint,
 version, (due_at is not null and due_at < now() and not completed), coalesce(recurring_pattern_id::text, '')"
  echo "$sel from read.tasks where id = '$task_id' and user_id = '$list_user' and not deleted;" > "$1/get.sql"
  echo "$sel, created_at from read.tasks where user_id = '$list_user' and not deleted order by created_at desc, id desc limit 21;" > "$1/list.sql"
  call[get]=todo.v1.TaskQueryService.GetTask; data[get]="{\"task_id\":\"$task_id\"}"; sql[get]=get.sql; auth[get]=$token
  call[list]=todo.v1.TaskQueryService.ListTasks; data[list]='{"page_size":20}'; sql[list]=list.sql; auth[list]=$token
  call[create]=todo.v1.TaskCommandService.CreateTask; data[create]='{"title":"benchmark task"}'; sql[create]=create.sql
  auth[create]=$writer_token
}

# ghz against one server: scenario (of bench_reader) addr clients seconds
# [file] -> ghz's JSON report in file (it lists every call: too long for an
# argument); calls over at most 8 connections.
bench_ghz() {
  local s=$1 addr=$2 c=$3 secs=$4 file=${5:-/dev/null} proto=todo/v1/query.proto
  [ "$s" = create ] && proto=todo/v1/command.proto
  "$GHZ" --insecure --proto "$proto" --import-paths proto --call "${call[$s]}" -d "${data[$s]}" \
    -m "{\"authorization\":\"Bearer ${auth[$s]}\"}" -c "$c" --connections "$(( c < 8 ? c : 8 ))" -z "${secs}s" \
    --count-errors -O json -o "$file" "$addr"
}

# One JSON object of a ghz report FILE and the server's CPU seconds before
# and after (C0, C1), optionally its context switches before and after (S0,
# S1): rps, calls, ok, errors, p50_ms, p99_ms, cpu_us_per_call (and
# switches_per_call).
bench_ghz_summary() {
  python3 - "$@" <<'PY'
import json, sys
j, c0, c1 = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3])
more = {}
if len(sys.argv) > 5:
  more["switches_per_call"] = round((float(sys.argv[5]) - float(sys.argv[4])) / max(j["count"], 1), 2)
lat = {d["percentage"]: d["latency"] / 1e6 for d in j.get("latencyDistribution") or []}
ok = j.get("statusCodeDistribution", {}).get("OK", 0)
print(json.dumps(dict(rps=round(j["rps"], 1), calls=j["count"], ok=ok, errors=j["count"] - ok,
  p50_ms=round(lat.get(50, 0), 3), p99_ms=round(lat.get(99, 0), 3),
  cpu_us_per_call=round((c1 - c0) * 1e6 / max(j["count"], 1), 1), **more)))
PY
}
