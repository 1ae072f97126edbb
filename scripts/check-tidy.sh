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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
printf '%s\n' $files | xargs -P "$(nproc)" -n 4 clang-tidy -p "$build" --quiet >"$log" 2>&1 || true
grep -v 'warnings generated' "$log" || true
if grep -qE '(error|warning):' "$log"; then
  echo "check-tidy: clang-tidy found problems (above)" >&2
  exit 1
fi
