#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, starts the dev
# stack (PostgreSQL, Redis, Kafka), applies migrations, creates the topics and
# runs todo-command, todo-query, todo-projector and todo-saga in the foreground.
# A service that exits (a crash, a kill -9) is started again, after 1 s
# doubling to 30 s while it keeps exiting (back to 1 s once it ran a
# minute), each restart logged; the others go on.
# Ctrl-C (or SIGTERM) stops the services, and the stack if this run started it.
#
# Settings: TODO_RUN_STACK (the stack, default dev), TODO_RUN_NO_BUILD=1
# (neither install nor build: the tests' way), TODO_RUN_BIN (the services'
# folder, default build/dev/src).
source "$(dirname "$0")/lib.sh"
cd "$TODO_REPO"
stack=${TODO_RUN_STACK:-dev}

if [ "${TODO_RUN_NO_BUILD:-0}" != 1 ]; then
  bash scripts/install-deps.sh
  bash scripts/build.sh dev
fi

stack_was_up=0
bash scripts/stack.sh status "$stack" 2>/dev/null | grep -q "kafka-1 *up" && stack_was_up=1
bash scripts/stack.sh start "$stack"
eval "$(bash scripts/stack.sh env "$stack")"
export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations"
bin=${TODO_RUN_BIN:-build/dev/src}
$bin/cli/todoctl migrate
$bin/cli/todoctl topics apply

# supervise NAME PATH: runs the service, and again whenever it exits, until
# this script stops it (SIGTERM to the supervisor reaches the service).
supervise() {
  local name=$1 path=$2 backoff=1 child=0 rc started ran
  trap 'kill -TERM $child 2>/dev/null || true; wait $child 2>/dev/null || true; exit 0' TERM INT
  while :; do
    started=$(date +%s)
    "$path" & child=$!
    echo "$child" > "$rundir/$name.pid"
    rc=0; wait $child || rc=$?
    ran=$(( $(date +%s) - started ))
    [ $ran -ge 60 ] && backoff=1
    log "$name exited with status $rc after ${ran}s; starting it again in ${backoff}s"
    sleep $backoff & wait $! || true
    backoff=$(( backoff * 2 > 30 ? 30 : backoff * 2 ))
  done
}

pids=()
rundir=$(mktemp -d) # the services' current pids, one file each
cleanup() {
  trap - INT TERM EXIT
  log "stopping the services"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  # Each supervisor waits for its service; this makes sure of it (30 s,
  # then SIGKILL) before the script, and perhaps the stack, goes.
  local f p
  for f in "$rundir"/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null || continue
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$rundir"
  [ $stack_was_up -eq 1 ] || bash scripts/stack.sh stop "$stack"
}
trap cleanup INT TERM EXIT
supervise todo-command $bin/command/todo-command & pids+=($!)
supervise todo-query $bin/query/todo-query & pids+=($!)
supervise todo-projector $bin/projection/todo-projector & pids+=($!)
supervise todo-saga $bin/saga/todo-saga & pids+=($!)
# Ready means the whole pipeline: both servers serving with their database,
# the outbox's producer able to deliver (it has its idempotent producer id:
# a broker that just started answers "coordinator load in progress" for
# seconds), and the projector holding its partitions.
projector_assigned() {
  python3 - "$TODO_PROJECTOR_METRICS_ADDR" <<'PY'
import sys, urllib.request
try:
    text = urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=1).read().decode()
except Exception:
    sys.exit(1)
for line in text.splitlines():
    if line.startswith('todo_consumer_assigned_partitions{group="projection-task-read-v1"}'):
        sys.exit(0 if float(line.split()[-1]) > 0 else 1)
sys.exit(1)
PY
}
ready=0
for _ in $(seq 600); do
  if $bin/cli/todoctl health >/dev/null 2>&1 && projector_assigned; then ready=1; break; fi
  sleep 0.1
done
if [ $ready -eq 1 ]; then
  log "ready: command on $TODO_COMMAND_ADDR, query on $TODO_QUERY_ADDR (Ctrl-C stops)"
else
  log "not ready after 60 s; what is down:"
  $bin/cli/todoctl health || true
fi
log "try:  eval \"\$(scripts/stack.sh env $stack)\"; build/dev/src/cli/todoctl add \"Buy milk\" --due tomorrow"
wait "${pids[@]}" || true
