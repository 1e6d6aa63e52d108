#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, starts the dev
# stack (PostgreSQL, Redis, Kafka), applies migrations, creates the topics and
# runs todo-command, todo-query, todo-projector and todo-saga in the foreground.
# Ctrl-C (or SIGTERM) stops the services, and the stack if this run started it.
source "$(dirname "$0")/lib.sh"
cd "$TODO_REPO"

bash scripts/install-deps.sh
bash scripts/build.sh dev

stack_was_up=0
bash scripts/stack.sh status dev 2>/dev/null | grep -q "kafka-1 *up" && stack_was_up=1
bash scripts/stack.sh start dev
eval "$(bash scripts/stack.sh env dev)"
export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations"
bin=build/dev/src
$bin/cli/todoctl migrate
$bin/cli/todoctl topics apply

pids=()
cleanup() {
  trap - INT TERM EXIT
  log "stopping the services"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  [ $stack_was_up -eq 1 ] || bash scripts/stack.sh stop dev
}
trap cleanup INT TERM EXIT
$bin/command/todo-command & pids+=($!)
$bin/query/todo-query & pids+=($!)
$bin/projection/todo-projector & pids+=($!)
$bin/saga/todo-saga & pids+=($!)
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
log "try:  eval \"\$(scripts/stack.sh env dev)\"; build/dev/src/cli/todoctl add \"Buy milk\" --due tomorrow"
wait -n "${pids[@]}" || true
