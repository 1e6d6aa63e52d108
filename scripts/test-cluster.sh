#!/usr/bin/env bash
# The scale-out tests (docs/SCALING.md), apart from the README's test
# command because they take minutes of broker restarts: installs what is
# missing, builds the dev tree, starts a fresh "cluster" stack (three Kafka
# nodes in one KRaft quorum, the production topic profile: replication 3,
# min.insync.replicas 2) and runs the tests labelled cluster
# (tests/integration/test_cluster.c). The stack is stopped at the end.
source "$(dirname "$0")/lib.sh"
cd "$TODO_REPO"
t0=$(date +%s)

bash scripts/install-deps.sh
bash scripts/build.sh dev

bash scripts/stack.sh wipe cluster >/dev/null 2>&1 || true
trap 'bash scripts/stack.sh stop cluster' EXIT
bash scripts/stack.sh start cluster
eval "$(bash scripts/stack.sh env cluster)"
export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations"
build/dev/src/cli/todoctl migrate
build/dev/src/cli/todoctl topics apply

failed=0
ctest --test-dir build/dev -L cluster --output-on-failure || failed=1
log "cluster test run took $(( $(date +%s) - t0 ))s"
exit $failed
