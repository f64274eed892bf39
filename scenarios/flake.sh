#!/usr/bin/env bash
# Run the scenario suite N times in a row (default 20); stop at the first
# failure and say which run it was. Flaky is broken: a 19-in-20 pass is a bug.
#
#   scenarios/flake.sh [N] [extra cargo test args...]
set -euo pipefail
runs="${1:-20}"
shift || true
cd "$(dirname "$0")/.."
cargo test -q -p scenarios --test scenarios --no-run
start=$(date +%s)
for i in $(seq 1 "$runs"); do
  t0=$(date +%s.%N)
  if ! out=$(cargo test -q -p scenarios --test scenarios "$@" 2>&1); then
    printf '%s\n' "$out" | tail -200
    echo "flake.sh: run $i of $runs FAILED"
    exit 1
  fi
  t1=$(date +%s.%N)
  summary=$(printf '%s\n' "$out" | grep -E '^test result' | tail -1)
  printf 'run %2d/%d: %s (%.1fs)\n' "$i" "$runs" "$summary" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
done
echo "flake.sh: $runs runs, 0 failures, $(( $(date +%s) - start ))s"
