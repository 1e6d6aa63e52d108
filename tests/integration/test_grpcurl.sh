#!/usr/bin/env bash
# Integration test with a real third-party client: grpcurl lists and
# describes the services through server reflection (no proto files), calls
# CreateTask with a token from todoctl, checks health, and gets the statuses
# the runtime promises for unknown and unimplemented methods.
# Usage: test_grpcurl.sh <build>/src   (needs the stack's env; skips without)
set -u
bin=$1
[ -n "${TODO_STACK:-}" ] || { echo "SKIP: no stack"; exit 0; }
GRPCURL=${GRPCURL:-$(command -v grpcurl || echo "${TODO_CACHE:-/var/tmp/todo-cache}/go/bin/grpcurl")}
[ -x "$GRPCURL" ] || { echo "FAIL: grpcurl not found (scripts/install-deps.sh installs it)"; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export TODO_COMMAND_ADDR=127.0.0.1:$(port) TODO_QUERY_ADDR=127.0.0.1:$(port)
logs=$bin/../tests/logs; mkdir -p "$logs"
"$bin/command/todo-command" >>"$logs/grpcurl-command.log" 2>&1 & cpid=$!
"$bin/query/todo-query" >>"$logs/grpcurl-query.log" 2>&1 & qpid=$!
trap 'kill $cpid $qpid 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do "$bin/cli/todoctl" health >/dev/null 2>&1 && break; sleep 0.1; done

fails=0 passes=0
check() { # name, command..., expects its output to contain $want
  local name=$1; shift
  local out; out=$("$@" 2>&1)
  if grep -q -- "$want" <<<"$out"; then passes=$((passes+1)); echo "ok   $name"
  else fails=$((fails+1)); echo "FAIL $name: wanted '$want' in:"; echo "$out" | head -20; fi
}
C=$TODO_COMMAND_ADDR Q=$TODO_QUERY_ADDR
want=todo.v1.TaskCommandService check "list command services" "$GRPCURL" -plaintext "$C" list
want=grpc.reflection.v1alpha.ServerReflection check "list names reflection" "$GRPCURL" -plaintext "$C" list
want=todo.v1.TaskQueryService check "list query services" "$GRPCURL" -plaintext "$Q" list
want="rpc CreateTask ( .todo.v1.CreateTaskRequest ) returns ( .todo.v1.CommandReply )" \
  check "describe service" "$GRPCURL" -plaintext "$C" describe todo.v1.TaskCommandService
want="google.protobuf.BoolValue completed" check "describe message" "$GRPCURL" -plaintext "$Q" describe todo.v1.ListTasksRequest
want=SERVING check "health" "$GRPCURL" -plaintext "$C" grpc.health.v1.Health/Check
TOKEN=$("$bin/cli/todoctl" token --user grpcurl-user)
want='"version": "1"' check "create with a todoctl token" "$GRPCURL" -plaintext -H "authorization: Bearer $TOKEN" \
  -d '{"title":"from grpcurl","priority":"PRIORITY_HIGH"}' "$C" todo.v1.TaskCommandService/CreateTask
want='"consistencyToken"' check "notification preferences (the README tour)" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" \
  -d '{"email": "alice@example.com", "webhook_url": "http://127.0.0.1:9999/hook", "time_zone": "Europe/Berlin"}' \
  "$C" todo.v1.TaskCommandService/SetNotificationPreferences
want='{' check "the inbox (the README tour)" "$GRPCURL" -plaintext -H "authorization: Bearer $TOKEN" \
  -d '{"unread_only": true}' "$Q" todo.v1.TaskQueryService/ListNotifications
want='"keepAlive"' check "live updates (the README tour)" timeout 3 "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"after_position": 0}' "$Q" todo.v1.TaskQueryService/WatchUpdates
want="rpc WatchUpdates ( .todo.v1.WatchUpdatesRequest ) returns ( stream .todo.v1.Update )" \
  check "describe the stream" "$GRPCURL" -plaintext "$Q" describe todo.v1.TaskQueryService
want='"date": "2026-11-30"' check "productivity stats (the README tour)" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"from_date": "2026-11-01", "to_date": "2026-11-30"}' \
  "$Q" todo.v1.TaskQueryService/GetProductivityStats
want="to_date: 2026-10-30 is before from_date" check "productivity stats refused" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"from_date": "2026-11-01", "to_date": "2026-10-30"}' \
  "$Q" todo.v1.TaskQueryService/GetProductivityStats
want="webhook_url: must start with" check "notification preferences refused" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"webhook_url": "ftp://example.com"}' \
  "$C" todo.v1.TaskCommandService/SetNotificationPreferences
want="Code: Unauthenticated" check "create without a token" "$GRPCURL" -plaintext -d '{"title":"x"}' \
  "$C" todo.v1.TaskCommandService/CreateTask
want="Code: InvalidArgument" check "empty title" "$GRPCURL" -plaintext -H "authorization: Bearer $TOKEN" \
  -d '{"title":""}' "$C" todo.v1.TaskCommandService/CreateTask
want='"pending"' check "stats" "$GRPCURL" -plaintext -emit-defaults -H "authorization: Bearer $TOKEN" \
  -d '{}' "$Q" todo.v1.TaskQueryService/GetTaskStats
want="x-correlation-id: corr-42" check "correlation id comes back" "$GRPCURL" -plaintext -v \
  -H "authorization: Bearer $TOKEN" -H "x-correlation-id: corr-42" -d '{"title":"traced"}' \
  "$C" todo.v1.TaskCommandService/CreateTask
# The schema registry, hosted by todo-command.
want=todo.v1.SchemaRegistryService check "list names the registry" "$GRPCURL" -plaintext "$C" list
want='"subject": "task.created"' check "registry subjects" "$GRPCURL" -plaintext -H "authorization: Bearer $TOKEN" \
  -d '{}' "$C" todo.v1.SchemaRegistryService/ListSubjects
want='"message": "todo.v1.TaskCreated"' check "registry schema by version" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"subject":"task.created","version":1}' "$C" todo.v1.SchemaRegistryService/GetSchema
want="Code: PermissionDenied" check "registry writes need a writer" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"subject":"task.created","mode":"NONE"}' "$C" todo.v1.SchemaRegistryService/SetMode
want="Code: InvalidArgument" check "registry mode must be a mode" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"subject":"task.created","mode":"SIDEWAYS"}' "$C" todo.v1.SchemaRegistryService/SetMode
want="Code: NotFound" check "registry unknown id" "$GRPCURL" -plaintext \
  -H "authorization: Bearer $TOKEN" -d '{"schema_id":999999999}' "$C" todo.v1.SchemaRegistryService/GetSchema
want='"status": "SERVING"' check "health watch" "$GRPCURL" -plaintext -max-time 2 "$C" grpc.health.v1.Health/Watch
want='"status": "SERVICE_UNKNOWN"' check "health watch of an unknown service" "$GRPCURL" -plaintext -max-time 2 \
  -d '{"service":"no.such.Service"}' "$Q" grpc.health.v1.Health/Watch

# Watchers of a server that stops: NOT_SERVING, then the stream ends
# (grpcurl, and todoctl health --watch exiting 0).
"$GRPCURL" -plaintext -max-time 60 "$C" grpc.health.v1.Health/Watch >"$logs/grpcurl-watch.out" 2>&1 & gpid=$!
"$bin/cli/todoctl" health --watch command >"$logs/todoctl-watch.out" 2>&1 & tpid=$!
for _ in $(seq 100); do
  grep -q SERVING "$logs/grpcurl-watch.out" && grep -q SERVING "$logs/todoctl-watch.out" && break; sleep 0.1
done
kill -TERM $cpid; wait $cpid
wait $gpid
wait $tpid; trc=$?
want=NOT_SERVING check "grpcurl watch hears the shutdown" cat "$logs/grpcurl-watch.out"
want="the server is shutting down" check "grpcurl watch ends with it" cat "$logs/grpcurl-watch.out"
want="command  NOT_SERVING" check "todoctl health --watch hears it" cat "$logs/todoctl-watch.out"
want="exit 0" check "todoctl health --watch exits 0" echo "exit $trc"

# gRPC over TLS, with certificates made now (scripts/make-certs.sh): a
# client that trusts the CA gets through, plaintext and another CA do not;
# with a client CA the server wants a client certificate of it (mutual TLS).
certs=$logs/certs
bash "$(dirname "$0")/../../scripts/make-certs.sh" "$certs" >/dev/null
tls_start() { # port, extra env...
  local port=$1; shift
  env TODO_COMMAND_ADDR=127.0.0.1:$port TODO_COMMAND_METRICS_ADDR= TODO_GRPC_TLS_CERT="$certs/server.pem" \
    TODO_GRPC_TLS_KEY="$certs/server.key" "$@" "$bin/command/todo-command" >>"$logs/grpcurl-tls-command.log" 2>&1 &
}
T=127.0.0.1:$(port); tls_start "${T#*:}"; tpid1=$!
M=127.0.0.1:$(port); tls_start "${M#*:}" TODO_GRPC_TLS_CLIENT_CA="$certs/ca.pem"; tpid2=$!
trap 'kill $cpid $qpid $tpid1 $tpid2 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do
  TODO_COMMAND_ADDR=$T TODO_GRPC_TLS_CA=$certs/ca.pem "$bin/cli/todoctl" health command >/dev/null 2>&1 && break
  sleep 0.1
done
want=todo.v1.TaskCommandService check "TLS: grpcurl -cacert" "$GRPCURL" -cacert "$certs/ca.pem" "$T" list
want="Failed to dial target host" check "TLS: plaintext refused" "$GRPCURL" -plaintext -max-time 3 "$T" list
want="certificate signed by unknown authority" check "TLS: another CA refused" "$GRPCURL" \
  -cacert "$certs/other-ca.pem" -max-time 3 "$T" list
want='"version": "1"' check "TLS: create over TLS" "$GRPCURL" -cacert "$certs/ca.pem" \
  -H "authorization: Bearer $TOKEN" -d '{"title":"over tls"}' "$T" todo.v1.TaskCommandService/CreateTask
want="SERVING" check "TLS: todoctl health with TODO_GRPC_TLS_CA" \
  env TODO_COMMAND_ADDR=$T TODO_GRPC_TLS_CA="$certs/ca.pem" "$bin/cli/todoctl" health command
want="todoctl: UNAVAILABLE" check "TLS: todoctl without the CA" \
  env TODO_COMMAND_ADDR=$T "$bin/cli/todoctl" health command
want=todo.v1.TaskCommandService check "mTLS: a client certificate of the CA" "$GRPCURL" -cacert "$certs/ca.pem" \
  -cert "$certs/operator.pem" -key "$certs/operator.key" "$M" list
want="Failed to dial target host" check "mTLS: no client certificate" "$GRPCURL" -cacert "$certs/ca.pem" -max-time 3 "$M" list
want="Failed to dial target host" check "mTLS: a certificate of another CA" "$GRPCURL" -cacert "$certs/ca.pem" \
  -cert "$certs/rogue.pem" -key "$certs/rogue.key" -max-time 3 "$M" list
want="SERVING" check "mTLS: todoctl with its certificate" env TODO_COMMAND_ADDR=$M TODO_GRPC_TLS_CA="$certs/ca.pem" \
  TODO_GRPC_TLS_CLIENT_CERT="$certs/operator.pem" TODO_GRPC_TLS_CLIENT_KEY="$certs/operator.key" \
  "$bin/cli/todoctl" health command
kill -TERM $tpid1 $tpid2; wait $tpid1 $tpid2

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
