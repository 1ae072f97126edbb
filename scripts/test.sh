#!/usr/bin/env bash
# Quick start, second command (and CI): installs what is needed, then
#   1. lint: layering and syscall rules, clang-format, protocol models (spin)
#   2. release build (g++), every public header alone, clang-tidy, all tests, install + consumer test
#   3. ASan+UBSan build (g++), all tests
#   4. TSan build (clang 14), the thread-level tests
# XPROC_TEST_SCALE scales stress tests (default 1 = CI size).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)
step() { printf '\n== xproc: %s\n' "$*"; }

"$root/scripts/install-deps.sh"

step "lint"
scripts/check-layering.sh
scripts/check-format.sh
if [ -x models/check.sh ]; then
  step "protocol models (spin)"
  models/check.sh
fi

step "release build (g++ 12)"
scripts/build.sh release
cmake --build build/release --target header_check
step "clang-tidy"
scripts/check-tidy.sh build/release
step "release tests"
ctest --test-dir build/release --output-on-failure -j "$jobs"
step "install and consume"
tests/install/run.sh build/release

step "ASan+UBSan build"
scripts/build.sh asan
step "ASan+UBSan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/asan --output-on-failure -j "$jobs" -LE model

step "TSan build (clang 14)"
scripts/build.sh tsan
step "TSan thread-level tests"
# clang 14's TSan predates the larger mmap randomisation of recent kernels; run without ASLR.
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  setarch "$(uname -m)" -R ctest --test-dir build/tsan --output-on-failure -j "$jobs" -L thread

step "fuzz smoke (clang 14)"
# libFuzzer targets for untrusted shared memory (docs/design/fuzzing.md): 15 s each from the corpus.
tests/fuzz/smoke.sh 15
step "all suites passed"
