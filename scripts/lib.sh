# Shared helpers for the project's shell scripts. Sourced, never run.
#
# Every script works from the repository root and keeps the state of a local
# stack under $TODO_STACK_ROOT/<stack name> (outside the work tree, because the
# PostgreSQL server runs as the `postgres` user and must be able to reach its
# data folder even when the clone lives under /root).

set -euo pipefail

TODO_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_VERSION=${TODO_KAFKA_VERSION:-3.9.1}
PG_BIN=${TODO_PG_BIN:-/usr/lib/postgresql/15/bin}
repo_hash=$(printf '%s' "$TODO_REPO" | md5sum | cut -c1-8)
TODO_STACK_ROOT=${TODO_STACK_ROOT:-/var/tmp/todo-$repo_hash}
TODO_CACHE=${TODO_CACHE:-/var/tmp/todo-cache}
KAFKA_LIBS="$TODO_CACHE/kafka-$KAFKA_VERSION/libs"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# as_postgres CMD...: runs CMD as the postgres user when we are root (initdb
# and postgres refuse to run as root), as ourselves otherwise.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# port_open PORT: true when something accepts connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for SECONDS DESCRIPTION LOGFILE CMD...: retries CMD until it succeeds;
# on time-out prints the log tail and fails.
wait_for() {
  local secs=$1 what=$2 logf=$3; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "error: $what did not answer within ${secs}s; last lines of $logf:"
      tail -n 30 "$logf" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# pid_alive FILE: true when FILE names a running process.
pid_alive() {
  [ -f "$1" ] && kill -0 "$(head -n1 "$1")" 2>/dev/null
}
