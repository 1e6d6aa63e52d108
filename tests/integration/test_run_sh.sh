#!/usr/bin/env bash
# scripts/run.sh keeps the services up: a kill -9 of todo-projector is
# logged and the projector started again, while the other services and the
# stack go on; SIGTERM then stops every service and leaves the stack (which
# was up before) running. Runs on the tests' stack (TODO_STACK) with the
# binaries of this build ($1: its src folder); skipped without a stack.
set -euo pipefail
bin=$1
[ -n "${TODO_STACK:-}" ] || exit 77
repo=$(cd "$(dirname "$0")/../.." && pwd)
log=$(dirname "$bin")/tests/logs/run-sh.log
mkdir -p "$(dirname "$log")"
fail() { echo "FAIL: $*"; echo "--- run.sh log:"; tail -n 40 "$log"; exit 1; }
# wait_until SECONDS CMD...: polls CMD every 0.1 s.
wait_until() {
  local until=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$until" ] || return 1; sleep 0.1; done
}
# The pid of service $1 that this run.sh started (its supervisor's child):
# other processes of the same binary (a test that failed elsewhere) are not
# ours.
pid_of() {
  local p sup
  for p in $(pgrep -f "^$bin/$1\$"); do
    sup=$(ps -o ppid= -p "$p" | tr -d ' ')
    [ -n "$sup" ] && [ "$(ps -o ppid= -p "$sup" | tr -d ' ')" = "$run" ] && { echo "$p"; return; }
  done
}

TODO_RUN_STACK=$TODO_STACK TODO_RUN_NO_BUILD=1 TODO_RUN_BIN=$bin bash "$repo/scripts/run.sh" >"$log" 2>&1 &
run=$!
trap 'kill -TERM $run 2>/dev/null || true' EXIT
wait_until 120 grep -q "ready: command on" "$log" || fail "run.sh was not ready within 120 s"

projector=$(pid_of projection/todo-projector); command=$(pid_of command/todo-command)
[ -n "$projector" ] && [ -n "$command" ] || fail "the services are not running"
kill -9 "$projector"
wait_until 30 grep -q "todo-projector exited with status 137" "$log" || fail "the projector's death was not logged"
again() { local p; p=$(pid_of projection/todo-projector); [ -n "$p" ] && [ "$p" != "$projector" ]; }
wait_until 30 again || fail "the projector was not started again"
[ "$(pid_of command/todo-command)" = "$command" ] || fail "todo-command was restarted too"
kill -0 "$run" || fail "run.sh stopped"
eval "$(bash "$repo/scripts/stack.sh" env "$TODO_STACK")"
wait_until 60 "$bin/cli/todoctl" health || fail "not healthy after the restart"
echo "the projector came back as $(pid_of projection/todo-projector); todo-command $command went on"

ours=""
for s in command/todo-command query/todo-query projection/todo-projector saga/todo-saga; do ours+=" $(pid_of $s)"; done
kill -TERM "$run"
wait "$run" || true
trap - EXIT
for p in $ours; do
  ! kill -0 "$p" 2>/dev/null || fail "$(ps -o cmd= -p "$p") (pid $p) still runs after run.sh stopped"
done
bash "$repo/scripts/stack.sh" status "$TODO_STACK" | grep -q "kafka-1 *up" || fail "run.sh stopped a stack it had not started"
echo "run.sh restarted a killed service and stopped every service on SIGTERM"
