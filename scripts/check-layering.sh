#!/usr/bin/env bash
# Enforces DESIGN.md's layering: only the sys layer makes raw system calls or includes
# <linux/futex.h>, and a layer includes only headers of the layers below it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
status=0
sources=$(git ls-files -co --exclude-standard -- 'include' 'src' 'tools' 'bench' 'apps' 'examples' | grep -E '\.(h|cc|c)$' || true)
for file in $sources; do
  case "$file" in include/xproc/sys/*|src/sys/*) continue ;; esac
  if grep -nE '(^|[^_a-zA-Z])syscall[[:space:]]*\(|#include[[:space:]]*<linux/futex\.h>' "$file"; then
    echo "check-layering: $file: raw syscall() or <linux/futex.h> above the sys layer" >&2
    status=1
  fi
done
layers=(sys sync shm channel bulk rpc)
for index in "${!layers[@]}"; do
  layer=${layers[$index]}
  allowed="sys"
  for ((lower = 1; lower <= index; lower++)); do allowed="$allowed|${layers[$lower]}"; done
  for file in $(printf '%s\n' $sources | grep -E "^(include/xproc|src)/$layer/" || true); do
    if grep -nE '#include[[:space:]]*"xproc/' "$file" | grep -vE "\"xproc/($allowed)/" ; then
      echo "check-layering: $file: includes a header of a higher layer" >&2
      status=1
    fi
  done
done
exit $status
