#!/usr/bin/env bash
# Quick start, first command: installs what is needed, builds, runs the main demo (the channel
# hand-off: 30 sender threads x 200,000 messages through one xproc Channel, checked exactly once
# and in order per thread), then xproc-bench --quick (every transport side by side).
# Arguments go to channel_handoff_demo (e.g. --threads 8 --per-thread 100000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" release
"$root/build/release/examples/channel_handoff_demo" "$@"
echo
"$root/build/release/tools/xproc-bench/xproc-bench" --quick
