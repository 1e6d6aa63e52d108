#!/usr/bin/env bash
# Configures and builds one build tree: scripts/build.sh [dev|asan]
#   dev   build/dev   RelWithDebInfo
#   asan  build/asan  Debug with AddressSanitizer + UndefinedBehaviorSanitizer
source "$(dirname "$0")/lib.sh"
kind=${1:-dev}
case "$kind" in
  dev) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) flags=(-DCMAKE_BUILD_TYPE=Debug -DTODO_SANITIZE=ON) ;;
  *) die "unknown build '$kind' (dev or asan)" ;;
esac
cmake -S "$TODO_REPO" -B "$TODO_REPO/build/$kind" "${flags[@]}" >/dev/null
cmake --build "$TODO_REPO/build/$kind" -j "$(nproc)"
