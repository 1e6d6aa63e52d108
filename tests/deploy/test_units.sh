#!/usr/bin/env bash
# The systemd units in deploy/systemd pass `systemd-analyze verify` (with
# ExecStart pointing at this build's binaries and the example environment
# files of deploy/env), each unit runs its own service, and every setting the
# example environment files name is one docs/OPERATIONS.md documents.
set -euo pipefail
bin=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (Debian package systemd)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -A path=([command]=command/todo-command [query]=query/todo-query [projector]=projection/todo-projector
                 [saga]=saga/todo-saga)
failed=0
for short in command query projector saga; do
  unit="$repo/deploy/systemd/todo-$short@.service"
  [ -f "$unit" ] || { echo "FAIL: $unit missing"; failed=1; continue; }
  grep -q "^ExecStart=/usr/local/bin/todo-$short\$" "$unit" || [ "$short" = projector ] \
    || { echo "FAIL: $unit does not run todo-$short"; failed=1; }
  sed -e "s|^ExecStart=/usr/local/bin/.*|ExecStart=$bin/${path[$short]}|" \
      -e "s|/etc/todo/|$repo/deploy/env/|g" "$unit" > "$work/todo-$short@1.service"
  if ! out=$(cd "$work" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "./todo-$short@1.service" 2>&1); then
    echo "FAIL: systemd-analyze verify todo-$short@.service:"; echo "$out"; failed=1
  elif [ -n "$out" ]; then
    echo "FAIL: systemd-analyze warns about todo-$short@.service:"; echo "$out"; failed=1
  fi
done
grep -q '^ExecStart=/usr/local/bin/todo-projector$' "$repo/deploy/systemd/todo-projector@.service" \
  || { echo "FAIL: todo-projector@.service does not run todo-projector"; failed=1; }
# Every key of the example files is a documented setting.
for f in "$repo"/deploy/env/*.env; do
  for key in $(grep -oE '^[A-Z_]+=' "$f" | tr -d =); do
    grep -q "\`$key\`" "$repo/docs/OPERATIONS.md" || { echo "FAIL: $(basename "$f"): $key is not in docs/OPERATIONS.md"; failed=1; }
  done
done
[ $failed -eq 0 ] && echo "4 units verified; every example setting is documented"
exit $failed
