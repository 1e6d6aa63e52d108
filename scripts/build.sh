#!/usr/bin/env bash
# Configures and builds one build tree: scripts/build.sh [dev|asan|tsan] [TARGET...]
#   dev   build/dev   RelWithDebInfo
#   asan  build/asan  Debug with AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan  build/tsan  RelWithDebInfo with ThreadSanitizer (tests/tsan.supp)
# With targets, builds only those (the test command builds only what its
# ThreadSanitizer step runs).
source "$(dirname "$0")/lib.sh"
kind=${1:-dev}
case "$kind" in
  dev) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) flags=(-DCMAKE_BUILD_TYPE=Debug -DTODO_SANITIZE=ON) ;;
  tsan) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTODO_TSAN=ON) ;;
  *) die "unknown build '$kind' (dev, asan or tsan)" ;;
esac
shift || true
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake -S "$TODO_REPO" -B "$TODO_REPO/build/$kind" "${flags[@]}" >/dev/null
cmake --build "$TODO_REPO/build/$kind" -j "$(nproc)" "${targets[@]}"
