#!/usr/bin/env bash
# Configures and builds one flavour of xproc into build/<flavour>.
#   scripts/build.sh release|asan|tsan|clang [extra cmake args...]
set -euo pipefail
flavour=${1:-release}; shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
args=(-G Ninja -DXPROC_WERROR=ON)
case "$flavour" in
  release) args+=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ -DCMAKE_C_COMPILER=gcc) ;;
  asan)    args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=g++ -DCMAKE_C_COMPILER=gcc
                  "-DXPROC_SANITIZE=address,undefined" -DXPROC_BUILD_BENCH=OFF) ;;
  tsan)    args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14
                  -DCMAKE_C_COMPILER=clang-14 -DXPROC_SANITIZE=thread -DXPROC_BUILD_BENCH=OFF) ;;
  clang)   args+=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14) ;;
  *) echo "xproc-build: unknown flavour '$flavour': use release, asan, tsan or clang" >&2; exit 2 ;;
esac
cmake -S "$root" -B "$root/build/$flavour" "${args[@]}" "$@" >/dev/null
cmake --build "$root/build/$flavour"
