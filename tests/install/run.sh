#!/usr/bin/env bash
# Installs a built tree into a temporary prefix and builds a tiny consumer against it both ways:
# CMake's find_package(xproc) (shared and static) and pkg-config. Runs each consumer.
#   tests/install/run.sh <build-dir>
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null

for variant in shared static; do
  cmake -S "$here/consumer" -B "$work/cmake-$variant" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
        -DCONSUMER_STATIC=$([ $variant = static ] && echo ON || echo OFF) >/dev/null
  cmake --build "$work/cmake-$variant" >/dev/null
  LD_LIBRARY_PATH="$work/prefix/lib" "$work/cmake-$variant/consumer"
done

libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -n 1)
export PKG_CONFIG_PATH="$libdir"
# shellcheck disable=SC2046
g++ -std=c++20 "$here/consumer/consumer.cc" -o "$work/pkgconfig-consumer" \
    $(pkg-config --cflags --libs xproc) -pthread
LD_LIBRARY_PATH="$work/prefix/lib" "$work/pkgconfig-consumer"
# shellcheck disable=SC2046
g++ -std=c++20 "$here/consumer/consumer.cc" -o "$work/pkgconfig-static-consumer" \
    $(pkg-config --cflags xproc) "$(dirname "$libdir")/libxproc.a" $(pkg-config --static --libs-only-other xproc) -pthread
"$work/pkgconfig-static-consumer"
echo "install test: cmake (shared, static) and pkg-config (shared, static) consumers built and ran"
