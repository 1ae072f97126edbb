#!/usr/bin/env bash
# Fuzz smoke test (CI: scripts/test.sh, step "fuzz smoke (clang 14)"): builds the libFuzzer
# targets of tests/fuzz into build/fuzz (clang 14, ASan+UBSan, XPROC_FUZZ=ON), then runs each
# target for XPROC_FUZZ_SECONDS (default 15) seconds starting from its committed corpus. A crash,
# a sanitizer report, a leak or an input that runs longer than 5 s (a hang) fails the step; the
# reproducer is left as build/fuzz/<target>-crash-<sha1> (see docs/design/fuzzing.md).
# New inputs go to a scratch directory: the committed corpus is never modified here.
# XPROC_FUZZ_BUILD names another build directory (default build/fuzz).
#   tests/fuzz/smoke.sh [seconds-per-target]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
seconds=${1:-${XPROC_FUZZ_SECONDS:-15}}
targets=(segment_open_fuzz channel_region_fuzz pool_region_fuzz transfer_table_fuzz)
build=${XPROC_FUZZ_BUILD:-$root/build/fuzz}

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 -DXPROC_FUZZ=ON \
  "-DXPROC_SANITIZE=address,undefined" -DXPROC_WERROR=ON -DXPROC_BUILD_BENCH=OFF \
  -DXPROC_BUILD_EXAMPLES=OFF -DXPROC_BUILD_TOOLS=OFF >/dev/null
cmake --build "$build" --target "${targets[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  echo "fuzz smoke: $target for ${seconds}s"
  UBSAN_OPTIONS=print_stacktrace=1 "$build/tests/fuzz/$target" \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/$target-" "$scratch/$target" "tests/fuzz/corpus/$target" \
    2>&1 | grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|^".*# Uses: ' || { echo "fuzz smoke: $target FAILED" >&2; exit 1; }
done
echo "fuzz smoke: passed"
