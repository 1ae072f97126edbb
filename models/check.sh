#!/usr/bin/env bash
# Model-checks xproc's Mutex and CondVar protocols with spin (see models/README.md).
# Every verification runs in a temporary directory: spin -a, gcc pan.c, ./pan.
#   expect=pass: pan must report "errors: 0" and a complete search, else this script fails
#                and prints pan's report and the counterexample trail.
#   expect=fail: a deliberately broken variant (or a known limitation); pan must find an
#                error, else this script fails (the property could not have caught the bug).
# One summary line per verification. Exit 0 only when every line is as expected.
# Usage: models/check.sh [-v] [--full] [name-filter]
#   -v: print the counterexample of the expected failures too; --full: add the longer runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
verbose=0
full=0
while [[ ${1:-} == -* ]]; do
  case $1 in
    -v) verbose=1 ;;
    --full) full=1 ;;
    *)
      echo "usage: models/check.sh [-v] [--full] [name-filter]" >&2
      exit 2
      ;;
  esac
  shift
done
filter=${1:-}

if ! command -v spin >/dev/null; then
  echo "models/check.sh: spin is not installed (apt-get install spin)" >&2
  exit 1
fi
cc=${CC:-gcc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xproc-models.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
total_start=$(date +%s.%N)

# trail_summary DIR MODEL SPINFLAGS...: the counterexample, one line per step, last 60 steps.
trail_summary() {
  local dir=$1 model=$2
  shift 2
  (cd "$dir" && spin "$@" -t -p -g -l "$model" 2>&1 | grep -E '^ *[0-9]+:|^#|assert|sleep|word|seq' |
    tail -n 60) || true
}

# verify NAME EXPECT MODEL "SPIN FLAGS" "CC FLAGS" "PAN FLAGS" DESCRIPTION
verify() {
  local name=$1 expect=$2 model=$3 spinflags=$4 ccflags=$5 panflags=$6 what=$7
  if [[ -n $filter && $name != *"$filter"* ]]; then return 0; fi
  local dir=$tmp/$name
  mkdir -p "$dir"
  cp "$here/$model" "$dir/"
  local start end secs out=$dir/pan.out
  start=$(date +%s.%N)
  # shellcheck disable=SC2086 # the flag strings are word lists on purpose
  if ! (cd "$dir" && spin $spinflags -a "$model" >spin.out 2>&1 &&
    $cc -w $ccflags -o pan pan.c >cc.out 2>&1); then
    echo "ERROR  $name: spin -a or the pan build failed:"
    cat "$dir/spin.out" "$dir/cc.out" 2>/dev/null | tail -n 20
    failures=$((failures + 1))
    return 0
  fi
  # shellcheck disable=SC2086
  (cd "$dir" && ./pan $panflags >"$out" 2>&1) || true
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  local states depth errors
  states=$(awk '/states, stored/ { print $1; exit }' "$out")
  depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | head -n 1)
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | head -n 1)
  local stats="states=${states:-?} depth=${depth:-?} ${secs}s"
  local truncated=0
  if grep -q -E 'max search depth too small|out of memory' "$out"; then truncated=1; fi
  if [[ $expect == pass ]]; then
    if [[ ${errors:-x} == 0 && $truncated == 0 ]]; then
      printf 'PASS   %-28s %-44s %s\n' "$name" "$stats" "$what"
    else
      printf 'FAIL   %-28s %-44s %s\n' "$name" "$stats" "$what"
      echo "------ pan report ($model, spin $spinflags, pan $panflags):"
      grep -v -E '^\s*$' "$out" | head -n 40
      echo "------ counterexample (last steps):"
      # shellcheck disable=SC2086
      trail_summary "$dir" "$model" $spinflags
      echo "------"
      failures=$((failures + 1))
    fi
  else
    if [[ -n $errors && $errors != 0 ]]; then
      local found
      found=$(grep -m 1 -E '^pan:[0-9]+:|assertion violated|invalid end state|acceptance cycle' "$out" |
        sed 's/^pan:[0-9]*: *//' || true)
      printf 'CAUGHT %-28s %-44s %s -> %s\n' "$name" "$stats" "$what" "${found:-error}"
      if ((verbose)); then
        # shellcheck disable=SC2086
        trail_summary "$dir" "$model" $spinflags
      fi
    else
      printf 'FAIL   %-28s %-44s %s: NOT caught (errors: %s)\n' "$name" "$stats" "$what" "${errors:-?}"
      grep -v -E '^\s*$' "$out" | head -n 20
      failures=$((failures + 1))
    fi
  fi
}

# pan builds: exhaustive safety search (assertions, invalid end states) with a compressed
# state store; -O0 for the expected failures (tiny searches: compiling dominates);
# acceptance-cycle search (LTL claim) under weak fairness (uncompressed: much faster with -a).
safe="-O2 -DSAFETY -DCOLLAPSE"
small="-O0 -DSAFETY"
live="-O2"
depth="-m200000"

# ---- Mutex (models/mutex.pml): 3 threads x 2 lock/unlock rounds; thread 3 may die anywhere.
verify mutex-nodeath pass mutex.pml "-DNO_DEATH -DNO_BACKSTOP" "$safe" "$depth" \
  "mutual exclusion; no lost wake-up (no invalid end state)"
verify mutex-death pass mutex.pml "" "$safe" "$depth" \
  "with a death anywhere: mutual exclusion, owner-died delivered, backstop only after a death"
verify mutex-death-liveness pass mutex.pml "-DLIVENESS" "$live" "$depth -a -f" \
  "LTL <>(every live thread finished), weak fairness"
verify mutex-death-no-backstop fail mutex.pml "-DNO_BACKSTOP" "$small" "$depth" \
  "known limit: kernel robust list alone strands a waiter"
verify mutex-death-no-fastpath pass mutex.pml "-DNO_BACKSTOP -DNO_FASTPATH" "$safe" "$depth" \
  "experiment: without fast-path barging the kernel alone suffices"
verify mutex-broken-no-waiters-bit fail mutex.pml "-DNO_DEATH -DNO_BACKSTOP -DBROKEN_NO_WAITERS_BIT" \
  "$small" "$depth" "woken thread acquires without WAITERS"
verify mutex-broken-unlock-load-store fail mutex.pml "-DNO_DEATH -DNO_BACKSTOP -DBROKEN_UNLOCK_LOAD_STORE" \
  "$small" "$depth" "unlock = load + store instead of exchange"
verify mutex-broken-wait-no-compare fail mutex.pml "-DNO_DEATH -DNO_BACKSTOP -DBROKEN_WAIT_NO_COMPARE" \
  "$small" "$depth" "futex_wait without the value check"
verify mutex-broken-nonatomic-lock fail mutex.pml "-DNO_DEATH -DNO_BACKSTOP -DBROKEN_NONATOMIC_LOCK" \
  "$small" "$depth" "fast path = load + store instead of CAS"
verify mutex-broken-drop-owner-died fail mutex.pml "-DBROKEN_DROP_OWNER_DIED" "$small" "$depth" \
  "slow path clears OWNER_DIED"
verify mutex-broken-kernel-keeps-tid fail mutex.pml "-DBROKEN_KERNEL_KEEPS_TID" "$small" "$depth" \
  "death leaves the TID in the word"

# ---- CondVar (models/condvar.pml): 2 waiters take 1 token each, 1 notifier hands out 2.
verify condvar-one pass condvar.pml "" "$safe" "$depth" \
  "notify_one: mutual exclusion; no lost wake-up (no invalid end state)"
verify condvar-one-liveness pass condvar.pml "-DLIVENESS" "$live" "$depth -a -f" \
  "notify_one: LTL <>(both waiters done), weak fairness"
verify condvar-all pass condvar.pml "-DNOTIFY_ALL" "$safe" "$depth" \
  "notify_all+requeue: mutual exclusion; no lost wake-up"
verify condvar-all-liveness pass condvar.pml "-DNOTIFY_ALL -DLIVENESS" "$live" "$depth -a -f" \
  "notify_all+requeue: LTL <>(both waiters done), weak fairness"
verify condvar-all-death pass condvar.pml "-DNOTIFY_ALL -DDEATH" "$safe" "$depth" \
  "notify_all, a waiter dies anywhere: mutual exclusion, owner-died, backstop only after a death"
verify condvar-all-death-no-backstop fail condvar.pml "-DNOTIFY_ALL -DDEATH -DNO_BACKSTOP" "$small" "$depth" \
  "known limit: a dying waiter strands another"
verify condvar-broken-seq-after-unlock fail condvar.pml "-DBROKEN_SEQ_AFTER_UNLOCK" "$small" "$depth" \
  "wait reads seq after unlocking"
verify condvar-broken-notify-skips-seq fail condvar.pml "-DBROKEN_NOTIFY_SKIPS_SEQ" "$small" "$depth" \
  "notify_one wakes without bumping seq"
verify condvar-broken-requeue-plain-lock fail condvar.pml "-DNOTIFY_ALL -DBROKEN_REQUEUE_PLAIN_LOCK" \
  "$small" "$depth" "requeued waiter relocks with the fast path"

# ---- Longer runs (about 2 more minutes, ~0.6 GiB each): models/check.sh --full
if ((full)); then
  verify condvar-one-death pass condvar.pml "-DDEATH" "$safe" "$depth" \
    "notify_one, a waiter dies anywhere: as condvar-all-death"
  verify condvar-one-death-notifier pass condvar.pml "-DDEATH -DVICTIM=3" "$safe" "$depth" \
    "notify_one, the notifier dies anywhere"
  verify condvar-all-death-notifier pass condvar.pml "-DNOTIFY_ALL -DDEATH -DVICTIM=3" "$safe" "$depth" \
    "notify_all, the notifier dies anywhere"
  verify condvar-all-death-no-fastpath fail condvar.pml "-DNOTIFY_ALL -DDEATH -DNO_BACKSTOP -DNO_FASTPATH" \
    "$safe" "$depth" "experiment: a requeued waiter dies outside list_op_pending"
  verify condvar-all-death-no-fastpath-cv-pending pass condvar.pml \
    "-DNOTIFY_ALL -DDEATH -DNO_BACKSTOP -DNO_FASTPATH -DCV_PENDING" "$safe" "$depth" \
    "experiment: list_op_pending kept across the wait closes that window"
  verify condvar-all-death-liveness pass condvar.pml "-DNOTIFY_ALL -DDEATH -DLIVENESS" "$live" \
    "$depth -a -f" "notify_all, a waiter dies: LTL <>(every live waiter done)"
fi

total_end=$(date +%s.%N)
total=$(awk -v a="$total_start" -v b="$total_end" 'BEGIN { printf "%.1f", b - a }')
if ((failures)); then
  echo "models/check.sh: $failures verification(s) did not come out as expected (${total}s)" >&2
  exit 1
fi
echo "models/check.sh: all verifications as expected (${total}s)"
