#!/usr/bin/env bash
# Fails when a C or C++ file of the project is not clang-formatted (.clang-format).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
files=$(git ls-files -co --exclude-standard | grep -E '\.(h|cc|c)$' | grep -v '^build' || true)
[ -z "$files" ] && exit 0
# shellcheck disable=SC2086
clang-format --dry-run -Werror $files
