#!/usr/bin/env bash
# Runs clang-tidy (.clang-tidy: bug-finding and concurrency checks, warnings are errors) over
# the library's sources, using a build directory's compile_commands.json.
#   scripts/check-tidy.sh <build-dir>
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/release}
cd "$root"
files=$(git ls-files -co --exclude-standard -- 'src/*.cc')
# shellcheck disable=SC2086
printf '%s\n' $files | xargs -P "$(nproc)" -n 4 clang-tidy -p "$build" --quiet 2>&1 \
  | grep -v 'warnings generated' | tee /tmp/xproc-tidy.log
! grep -qE '(error|warning):' /tmp/xproc-tidy.log
