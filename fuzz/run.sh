#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30), one after the other.
# Exits non-zero when a target crashes, hangs (-timeout) or runs out of memory; the input that did it
# is saved under fuzz/artifacts/<target>/.
#
# Usage: fuzz/run.sh [SECONDS]
#
# The seeds in fuzz/corpus/<target>/ are only read; what libFuzzer finds is kept in
# fuzz/target/corpus/<target>/ (ignored by git), so later runs go on from there.
set -uo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]  (a positive number of seconds per target)" >&2
    exit 2
fi
cd "$(dirname "$0")" || exit 2

targets=(body_json body_form body_csv body_text template config dates signing)

cargo +nightly fuzz build || exit 2

mkdir -p target/logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "corpus/$t"
    echo "=== $t: ${seconds}s"
    # One process (no -jobs/-workers: the machine is small); a single input taking over 10 s is a hang.
    cargo +nightly fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"target/logs/$t.log" 2>&1
    status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE' "target/logs/$t.log" | tail -n 1
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "target/logs/$t.log"
    if [ "$status" -ne 0 ]; then
        echo "!!! $t failed (exit $status); log: fuzz/target/logs/$t.log" >&2
        grep -E -A 20 '^(==[0-9]+==ERROR|thread .* panicked|ALARM|SUMMARY)' "target/logs/$t.log" | head -n 40 >&2
        grep -E 'Test unit written to' "target/logs/$t.log" >&2
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s each without a crash"
