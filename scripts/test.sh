#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the dev and the
# sanitizer trees, starts a fresh test stack on free ports, and runs
#   1. the unit tests (dev build), the alert rules (promtool), the unit
#      tests again under valgrind (no leaks),
#      and the fuzz targets' deterministic replay (scripts/fuzz.sh replay:
#      the committed corpora, then TODO_FUZZ_RUNS mutations with a fixed
#      seed),
#   2. the integration tests (dev build) on the secure stack: Kafka over
#      SASL_SSL with SCRAM users, PostgreSQL over TLS only (verify-full),
#      Redis over TLS with a password (scripts/stack.sh, "secure"),
#   3. every test again in the ASan+UBSan build, on the plaintext test stack,
#   4. the tests that run threads (ctest label threads) in the
#      ThreadSanitizer build (tests/tsan.supp, cmake/tsan_thrd.c).
# The stacks are stopped at the end, whatever happened.
source "$(dirname "$0")/lib.sh"
cd "$TODO_REPO"
t0=$(date +%s)

bash scripts/install-deps.sh
bash scripts/build.sh dev
bash scripts/build.sh asan

bash scripts/stack.sh wipe test >/dev/null 2>&1 || true
bash scripts/stack.sh wipe secure >/dev/null 2>&1 || true
trap 'bash scripts/stack.sh stop test; bash scripts/stack.sh stop secure' EXIT
export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations" GRPCURL="$TODO_CACHE/go/bin/grpcurl"
# Starts stack $1 and takes its settings into this shell.
use_stack() {
  bash scripts/stack.sh start "$1"
  eval "$(bash scripts/stack.sh env "$1")"
  build/dev/src/cli/todoctl migrate
  build/dev/src/cli/todoctl topics apply
}
use_stack secure
use_stack test
# The sanitizer runs use the plaintext stack: the secure one's settings must be gone.
[ -z "${TODO_STACK_SECURE:-}" ] && [ -z "${TODO_KAFKA_CONFIG:-}" ] || die "the test stack came up secure"

failed=0
failed_steps=()
current=""
step() { current="$*"; log "== $* (at $(( $(date +%s) - t0 ))s)"; }
# Marks the current step failed; the verdict at the end names it.
fail() { failed=1; failed_steps+=("$current"); }

# Unit tests run side by side: most of their time is waiting on librdkafka's
# mock cluster, and each has its own (the integration tests share the stack:
# RESOURCE_LOCK stack keeps them one at a time).
step "unit tests (dev)"
ctest --test-dir build/dev -L unit -j4 --output-on-failure || fail

step "alert rules (promtool check rules, promtool test rules)"
bash tests/rules/check.sh || fail

step "unit tests under valgrind"
# The unit tests only (the integration tests spawn services and wait on the
# stack: valgrind's pace turns them into minutes without finding more). Each
# binary once, with every case (a sharded test's shards are one binary), three
# at a time.
vg_one() {
  local t=build/dev/tests/$1
  [ -x "$t" ] || return 0
  if ! valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 "$t" >"$t.valgrind.log" 2>&1; then
    echo "valgrind found errors in $1:"; tail -n 40 "$t.valgrind.log"; return 1
  fi
}
export -f vg_one
if ctest --test-dir build/dev -L unit -N | awk '/Test +#/ {sub(/\.[0-9]+$/, "", $3); print $3}' | sort -u |
   xargs -P 3 -I{} bash -c 'vg_one {}' >&2; then
  log "valgrind: no errors, no definite leaks"
else
  fail
fi

step "fuzzing the decoders (libFuzzer replay: committed corpora, fixed-seed mutations)"
bash scripts/fuzz.sh replay || fail

step "integration tests (dev) on the secure stack (SASL_SSL Kafka, TLS PostgreSQL, Redis over TLS)"
( eval "$(bash scripts/stack.sh env secure)"
  ctest --test-dir build/dev -L integration --output-on-failure ) || fail
bash scripts/stack.sh stop secure

step "all tests (ASan + UBSan)"
ctest --test-dir build/asan -j3 --output-on-failure || fail

step "the tests that run threads (ThreadSanitizer)"
# Only what they need is built: the services and those tests (label threads).
tsan_tests=$(ctest --test-dir build/dev -L threads -N | awk '/Test +#/ {print $3}')
# The C ones are build targets; a script test (test_watch.py) runs the services.
tsan_targets=$(for t in $tsan_tests; do if [ -f "tests/unit/$t.c" ] || [ -f "tests/integration/$t.c" ]; then echo "$t"; fi; done)
if bash scripts/build.sh tsan todo-command todo-query todo-projector todo-saga todoctl $tsan_targets >/dev/null; then
  TSAN_OPTIONS="suppressions=$TODO_REPO/tests/tsan.supp exitcode=66" \
    ctest --test-dir build/tsan -L threads --output-on-failure || fail
else
  log "the ThreadSanitizer build failed"; fail
fi

log "test run took $(( $(date +%s) - t0 ))s"
if [ $failed -eq 0 ]; then
  log "PASSED: every step"
else
  log "FAILED: ${#failed_steps[@]} step(s):"
  for s in "${failed_steps[@]}"; do log "  - $s"; done
fi
exit $failed
