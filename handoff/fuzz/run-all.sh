#!/usr/bin/env bash
# Run every fuzz target one after another on one core, each for SECONDS
# (default 600), logging to LOG_DIR (default /tmp/handoff-fuzz).
#
#   handoff/fuzz/run-all.sh [SECONDS] [TARGET...]
#
# Stable toolchain: cargo-fuzz needs -Z flags (sanitizers), so this sets
# RUSTC_BOOTSTRAP=1. Limits checked on every input: one allocation at most
# 2 MiB (-malloc_limit_mb=2; the frame cap is 1 MiB, so a peer-chosen 4 GiB
# length that reached an allocation stops the run) and 10 s per input
# (-timeout=10: a hang is a finding).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decode read_message_stream journal_decode crash_spec handoff_env incumbent_session)
fi
log_dir=${LOG_DIR:-/tmp/handoff-fuzz}
mkdir -p "$log_dir"
export RUSTC_BOOTSTRAP=1
python3 seeds/make-seeds.py
RUSTC_BOOTSTRAP=1 cargo fuzz build
for target in "${targets[@]}"; do
    dict=()
    extra=()
    case $target in
        frame_decode | read_message_stream) dict=(-dict=dicts/frame.dict) ;;
        journal_decode) dict=(-dict=dicts/journal.dict) ;;
        crash_spec) dict=(-dict=dicts/crash_spec.dict) ;;
        # The incumbent's heartbeat thread runs in a `thread::scope`, whose
        # join returns before the OS thread has run its TLS destructors: the
        # per-input leak check then sees the exiting thread's handle (80
        # bytes) as leaked, at random. Not a leak (re-running the input never
        # reports it). And the incumbent this target serves from lives in a
        # static until the process exits, which the exit-time check reports
        # (about 1 KiB, constant). Leak checking is off for this target only.
        incumbent_session) extra=(-detect_leaks=0) ;;
    esac
    asan_options=${ASAN_OPTIONS:-}
    [ "$target" = incumbent_session ] && asan_options="detect_leaks=0${asan_options:+:$asan_options}"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds}s, log $log_dir/$target.log"
    status=0
    ASAN_OPTIONS=$asan_options cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -malloc_limit_mb=2 -timeout=10 \
        -print_final_stats=1 "${dict[@]}" "${extra[@]}" >"$log_dir/$target.log" 2>&1 || status=$?
    grep -E "^#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb" "$log_dir/$target.log" || true
    echo "== $target exit status $status"
done
