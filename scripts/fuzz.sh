#!/usr/bin/env bash
# The libFuzzer targets (fuzz/fuzz_*.c; clang, ASan + UBSan) in build/fuzz,
# with their committed corpora in fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh replay [runs]   the test gate (scripts/test.sh): builds
#       every target, runs every committed corpus file once, then `runs`
#       mutations per target from those files with a fixed seed (-seed=1).
#       Nothing is random and nothing is written into fuzz/corpus, so the
#       same commit gives the same result. Fails, with the log tail and the
#       artifact's path, when any target finds something.
#   scripts/fuzz.sh hunt [seconds]  open-ended search, not part of the gate:
#       a random seed, `seconds` per target, the corpus growing in
#       build/fuzz/corpus/<target>, findings in build/fuzz/findings/<target>.
#   scripts/fuzz.sh seeds           remakes the seed files
#       fuzz/corpus/<target>/seed-* with fuzz/make_seeds.c (regression
#       files, named by their SHA-1 as libFuzzer names them, are kept).
#
# Environment (the arguments above win over these):
#   TODO_FUZZ_RUNS     replay: mutations per target (default 100000)
#   TODO_FUZZ_SECONDS  hunt: seconds per target (default 300); never read by
#                      the gate
#   TODO_FUZZ_TARGETS  the targets to build and run, space-separated
#                      (default: every fuzz/fuzz_*.c with a fuzz entry point)
#
# A finding becomes a regression file: copy it into fuzz/corpus/<target>/
# under the name libFuzzer gave it (crash-<sha1>, leak-<sha1>...), commit
# it with its fix; from then on every replay runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

mode=${1:-replay}
build=build/fuzz
max_len=1048576 # 1 MiB: deep nesting and large sets are reachable
common=(-max_len=$max_len -rss_limit_mb=2048 -timeout=10)
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

command -v clang >/dev/null || die "clang is missing (scripts/install-deps.sh installs it)"
if [ -n "${TODO_FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$TODO_FUZZ_TARGETS"
else
  mapfile -t targets < <(grep -l LLVMFuzzerTestOneInput fuzz/fuzz_*.c | xargs -n1 basename | sed 's/\.c$//' | LC_ALL=C sort)
fi

# configure_and_build TARGET...: the fuzz tree, with clang and every library
# instrumented.
configure_and_build() {
  CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTODO_FUZZ=ON >/dev/null
  cmake --build "$build" --target "$@" -j"$(nproc)" >"$build/build.log" 2>&1 \
    || { tail -n 40 "$build/build.log" >&2; die "the fuzz build failed (see $build/build.log)"; }
}

# corpus_files TARGET: the committed corpus files of a target, sorted.
corpus_files() {
  [ -d "fuzz/corpus/$1" ] || return 0
  find "fuzz/corpus/$1" -maxdepth 1 -type f | LC_ALL=C sort
}

# replay_flags TARGET: what a target needs, beyond a fixed seed, for its
# replay to repeat exactly.
replay_flags() {
  case "$1" in
    # librdkafka's threads compare strings while a run is in progress, and
    # libFuzzer would draw CMP mutations from those comparisons.
    fuzz_headers) echo -use_cmp=0 ;;
  esac
}

# report_failure TARGET LOG WHAT: the log tail and the artifact.
report_failure() {
  local t=$1 logf=$2 what=$3 artifact
  tail -n 60 "$logf" >&2
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logf" | tail -n1)
  log "$t: $what"
  [ -n "$artifact" ] && log "$t: the input is $artifact (reproduce: $build/fuzz/$t $artifact)"
  log "$t: full log in $logf"
}

replay() {
  local runs=${1:-${TODO_FUZZ_RUNS:-100000}} failed=0
  configure_and_build "${targets[@]}"
  mkdir -p "$build/logs"
  # Addresses must repeat too: code that hashes pointers (the registry's pair
  # sets) takes other paths at other addresses, and comparisons with stack
  # addresses end up in libFuzzer's CMP dictionary. So no address-space
  # randomization, and a fixed environment and relative paths (they decide
  # where the stack starts). -reload=0: no re-reading of the corpus on a timer.
  local fixed=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
               UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 setarch "$(uname -m)" -R)
  if ! "${fixed[@]}" true 2>/dev/null; then
    log "warning: cannot turn address-space randomization off here; replays may differ from run to run"
    fixed=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
  fi
  for t in "${targets[@]}"; do
    local bin=$build/fuzz/$t work=$build/replay/$t findings=$build/findings/$t logf=$build/logs/$t.replay.log
    local files n start secs
    mapfile -t files < <(corpus_files "$t")
    n=${#files[@]}
    rm -rf "$work"; mkdir -p "$work/seeds" "$work/new" "$findings"
    start=$(date +%s)

    # 1. Every committed file once, by name, so a failure names its file.
    if [ "$n" -gt 0 ] && ! "${fixed[@]}" "$bin" "${common[@]}" -artifact_prefix="$findings/" "${files[@]}" >"$logf" 2>&1; then
      report_failure "$t" "$logf" "committed corpus file $(sed -n 's/^Running: //p' "$logf" | tail -n1) fails"
      failed=1; continue
    fi

    # 2. Mutations from a copy of the corpus with a fixed seed. The seeds go
    # in as a sorted list of relative paths (a directory's order depends on
    # the file system), new inputs into a scratch directory.
    local seeded=()
    if [ "$n" -gt 0 ]; then
      cp "${files[@]}" "$work/seeds/"
      (cd "$work/seeds" && ls | LC_ALL=C sort) | sed "s|^|$work/seeds/|" | paste -sd, - >"$work/seeds.list"
      seeded=(-seed_inputs=@"$work/seeds.list")
    fi
    # shellcheck disable=SC2046 # replay_flags gives separate flags
    if ! "${fixed[@]}" "$bin" "${common[@]}" -seed=1 -runs=$((runs + n)) -reload=0 $(replay_flags "$t") \
        -print_final_stats=1 -artifact_prefix="$findings/" "${seeded[@]}" "$work/new" >>"$logf" 2>&1; then
      report_failure "$t" "$logf" "a mutation with -seed=1 found a problem"
      failed=1; continue
    fi
    secs=$(( $(date +%s) - start ))
    local done_line
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logf" | tail -n1 |
      sed -E 's/^#([0-9]+)[[:space:]]+DONE[[:space:]]+cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/\1 executions, cov \2, ft \3, corpus \4/')
    log "$t: $n corpus files and $runs mutations (seed 1): ${done_line:-no stats}; ${secs}s"
  done
  rm -rf "$build/replay"
  [ $failed -eq 0 ] || die "fuzz replay failed; to keep a finding as a regression file see the top of scripts/fuzz.sh"
  log "fuzz replay: no findings"
}

hunt() {
  local secs=${1:-${TODO_FUZZ_SECONDS:-300}} found=0
  configure_and_build "${targets[@]}"
  mkdir -p "$build/logs"
  for t in "${targets[@]}"; do
    local corpus=$build/corpus/$t findings=$build/findings/$t logf=$build/logs/$t.hunt.log dirs
    mkdir -p "$corpus" "$findings"
    dirs=("$corpus"); [ -d "fuzz/corpus/$t" ] && dirs+=("fuzz/corpus/$t") # only the first one is written to
    log "$t: hunting for ${secs}s (random seed; corpus $corpus)"
    if ! "$build/fuzz/$t" "${common[@]}" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$findings/" "${dirs[@]}" >"$logf" 2>&1; then
      report_failure "$t" "$logf" "found a problem"
      found=1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$logf" | tr '\n' ' ' >&2 || true
    echo >&2
  done
  if [ $found -eq 1 ]; then
    log "to keep a finding: minimize it ($build/fuzz/<target> -minimize_crash=1 -runs=100000 <file>),"
    log "copy it into fuzz/corpus/<target>/ under libFuzzer's name (crash-<sha1>...), fix the code,"
    log "check with scripts/fuzz.sh replay, and commit the file with the fix"
    exit 1
  fi
  log "fuzz hunt: no findings"
}

seeds() {
  configure_and_build make_seeds reg_test_schemas todo_descriptors
  mapfile -t sets < <(find "$build/tests/registry" -name '*.pb' | LC_ALL=C sort)
  [ ${#sets[@]} -gt 0 ] || die "no registry test schemas in $build/tests/registry (is cmocka installed?)"
  find fuzz/corpus -type f -name 'seed-*' -delete 2>/dev/null || true
  mkdir -p fuzz/corpus
  "$build/fuzz/make_seeds" fuzz/corpus "${sets[@]}" "$build/gen/todo_descriptors.pb"
  log "corpus size: $(du -sh fuzz/corpus | cut -f1)"
}

case "$mode" in
  replay) replay "${2:-}" ;;
  hunt) hunt "${2:-}" ;;
  seeds) seeds ;;
  *) die "usage: scripts/fuzz.sh replay [runs] | hunt [seconds] | seeds" ;;
esac
