#!/usr/bin/env bash
# Quick start, first command: installs what is needed, builds, runs the main demo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" release
"$root/build/release/examples/handoff_demo" "$@"
