#!/usr/bin/env bash
# Installs the Debian 12 packages xproc needs to build, test and benchmark; skips what is there.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config git
  clang-14 libclang-rt-14-dev          # second compiler, TSan/libFuzzer runtimes
  clang-format clang-tidy
  libgtest-dev libgmock-dev libbenchmark-dev
  spin                                 # Promela model checker for the protocol models
  libboost-dev                         # xproc-bench: Boost.Interprocess message_queue row
  iceoryx libiceoryx-posh-dev          # xproc-bench: iceoryx 2.0.3 row (iox-roudi + headers)
  libgrpc++-dev libprotobuf-dev        # xproc-bench: rpc-grpc row (gRPC 1.51, protobuf)
  protobuf-compiler protobuf-compiler-grpc  # protoc, grpc_cpp_plugin for its .proto
  gnuplot-nox                          # xproc-bench --png
)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if ((${#missing[@]})); then
  echo "xproc: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
