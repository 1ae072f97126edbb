#!/usr/bin/env bash
# Regenerates tests/fuzz/corpus/<target>/ (docs/design/fuzzing.md, "Corpus"):
#   1. xproc_fuzz_seeds writes real segments and channel regions (and damaged variants);
#   2. each target fuzzes from those seeds plus the current corpus for <seconds> (default 300);
#   3. libFuzzer's merge (-use_counters=0: edge coverage only, smallest inputs first) keeps the
#      few inputs that cover every edge the seeds, the old corpus and the new finds cover,
#      named by their SHA-1; they replace the corpus.
# Needs the libFuzzer build of tests/fuzz/smoke.sh (build/fuzz; run that first).
#   tests/fuzz/update-corpus.sh [seconds-per-target]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
seconds=${1:-300}
build="$root/build/fuzz"
cmake --build "$build" --target xproc_fuzz_seeds segment_open_fuzz channel_region_fuzz pool_region_fuzz transfer_table_fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/tests/fuzz/xproc_fuzz_seeds" "$work/seeds"
for target in segment_open_fuzz channel_region_fuzz pool_region_fuzz transfer_table_fuzz; do
  mkdir -p "$work/new/$target" "$work/merged/$target"
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=5 \
    -artifact_prefix="$build/$target-" "$work/new/$target" "$work/seeds/$target" \
    "tests/fuzz/corpus/$target"
  "$build/tests/fuzz/$target" -merge=1 -use_counters=0 "$work/merged/$target" \
    "$work/seeds/$target" "tests/fuzz/corpus/$target" "$work/new/$target"
  rm -rf "tests/fuzz/corpus/$target"
  mkdir -p "tests/fuzz/corpus/$target"
  cp "$work/merged/$target"/* "tests/fuzz/corpus/$target/"
  echo "update-corpus: $target: $(ls "tests/fuzz/corpus/$target" | wc -l) inputs"
done
