#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build/fuzz) and runs each for a
# while from seeds made of the registry's test schemas and our own
# descriptor set. Usage: scripts/fuzz.sh [seconds per target, default 30]
# Findings (crash-*, leak-*, timeout-* files) are kept in build/fuzz/findings.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
secs=${1:-30}
command -v clang >/dev/null || die "clang is missing (scripts/install-deps.sh installs it)"
[ -d build/dev/tests/registry ] || die "build the dev tree first (scripts/build.sh): the seeds come from it"

CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTODO_FUZZ=ON >/dev/null
cmake --build build/fuzz --target fuzz_descriptors -j"$(nproc)" >/dev/null

# Seeds: pairs of descriptor sets, the first one's length in two bytes (see
# fuzz/fuzz_descriptors.c).
seeds=build/fuzz/seeds corpus=build/fuzz/corpus findings=build/fuzz/findings
rm -rf "$seeds"; mkdir -p "$seeds" "$corpus" "$findings"
python3 - "$seeds" build/dev/tests/registry/*.pb build/dev/gen/todo_descriptors.pb <<'PY'
import sys, os, itertools
out, files = sys.argv[1], sys.argv[2:]
blobs = [open(f, 'rb').read() for f in files]
small = [b for b in blobs if len(b) < 65536]
for i, (a, b) in enumerate(itertools.product(small[:6], small)):
    with open(os.path.join(out, f"pair{i:03d}"), "wb") as f:
        f.write(len(a).to_bytes(2, "little") + a + b)
PY
log "fuzz_descriptors: $(ls "$seeds" | wc -l) seeds, ${secs}s"
build/fuzz/fuzz/fuzz_descriptors -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
  -artifact_prefix="$findings/" -print_final_stats=1 "$corpus" "$seeds" 2>build/fuzz/fuzz_descriptors.log \
  || { tail -n 60 build/fuzz/fuzz_descriptors.log >&2; die "fuzz_descriptors found a problem (see $findings)"; }
grep -E '^stat::(number_of_executed_units|peak_rss_mb)' build/fuzz/fuzz_descriptors.log | tr '\n' ' '; echo
log "fuzz_descriptors: no findings"
