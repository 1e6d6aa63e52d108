#!/usr/bin/env bash
# Builds todo-go-peer (bench/peers/go/main.go) into build/peer/: installs
# protoc-gen-go and protoc-gen-go-grpc from the Go module proxy when
# missing, generates the Go code of proto/todo/v1/{task,query,command,events}.proto
# into bench/peers/go/pb/ (not committed) and builds with the versions go.sum
# pins.
source "$(dirname "$0")/../../../scripts/lib.sh"
cd "$TODO_REPO/bench/peers/go"
export GOBIN=$TODO_CACHE/go/bin PATH=$TODO_CACHE/go/bin:$PATH GOFLAGS=-mod=mod
[ -x "$GOBIN/protoc-gen-go" ] || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[ -x "$GOBIN/protoc-gen-go-grpc" ] || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
opts=(--go_opt=module=todo.bench/peer --go-grpc_opt=module=todo.bench/peer)
for f in task query command events; do
  opts+=("--go_opt=Mtodo/v1/$f.proto=todo.bench/peer/pb" "--go-grpc_opt=Mtodo/v1/$f.proto=todo.bench/peer/pb")
done
mkdir -p pb
protoc -I "$TODO_REPO/proto" --go_out=. --go-grpc_out=. "${opts[@]}" todo/v1/task.proto todo/v1/query.proto todo/v1/command.proto todo/v1/events.proto
go build -o "$TODO_REPO/build/peer/todo-go-peer" .
