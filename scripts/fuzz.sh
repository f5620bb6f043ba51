#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints the execs and
# crashes per target. Needs a nightly toolchain; installs cargo-fuzz (crates.io, --locked) if it
# is missing. Not part of scripts/test.sh: crashes found become regression tests there.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment: FUZZ_TARGETS (space-separated subset), FUZZ_TIME_<target> (seconds for one
# target, overriding SECONDS), FUZZ_TOOLCHAIN (default nightly),
# FUZZ_JOBS (parallel targets, default 1), FUZZ_NICE (default 10), FUZZ_SANITIZER (cargo-fuzz's
# -s: address (default) or none, which runs the HTTP targets faster and still catches
# every panic, overflow and hang, but no longer enforces -malloc_limit_mb), FUZZ_WORK (working corpus
# and logs, default fuzz/.work; the committed seeds in fuzz/corpus/<target> are read, never
# written). Crash inputs land in fuzz/artifacts/<target>/; the script exits 1 when any target
# crashed. Reproduce one with `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`
# and minimise it with `cargo +nightly fuzz tmin <target> <file>`.
set -euo pipefail

secs="${1:-60}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
tc="${FUZZ_TOOLCHAIN:-nightly}"
nice_n="${FUZZ_NICE:-10}"
work="${FUZZ_WORK:-$root/fuzz/.work}"
jobs="${FUZZ_JOBS:-1}"
san="${FUZZ_SANITIZER:-address}"

if ! cargo "+$tc" --version >/dev/null 2>&1; then
    echo "fuzz.sh: toolchain '$tc' is not installed (rustup toolchain install $tc)" >&2
    exit 2
fi
if ! cargo "+$tc" fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo "+$tc" fuzz list)}"
echo "fuzz.sh: building ${targets//$'\n'/ }" >&2
# Release with debug assertions and overflow checks (cargo-fuzz's default without -O).
nice -n "$nice_n" cargo "+$tc" fuzz build -s "$san"

# Per-target libFuzzer options: the .wandb log needs inputs past one 32 KiB block; every target
# gets the same memory limits (an allocation over 512 MiB from inputs this small is a bug).
# ASan: no allocation stack traces (most of the cost of a Rust target's many small allocations),
# a small quarantine, no leak check (the targets' servers and statics live for the process).
export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=0:quarantine_size_mb=16:detect_leaks=0}"

max_len() {
    case "$1" in
        wandb_txlog) echo 70000 ;;
        tfevents | checkpoint_json | events_jsonl) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

run_one() {
    local t="$1"
    mkdir -p "$work/corpus/$t" "$root/fuzz/artifacts/$t"
    local seeds=()
    [ -d "corpus/$t" ] && seeds=("corpus/$t")
    local before t_secs var="FUZZ_TIME_$1"
    t_secs="${!var:-$secs}"
    before="$(find "artifacts/$t" -type f | wc -l)"
    nice -n "$nice_n" cargo "+$tc" fuzz run -s "$san" "$t" "$work/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$t_secs" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=20 \
        -max_len="$(max_len "$t")" -print_final_stats=1 >"$work/$t.log" 2>&1 || true
    local after execs
    after="$(find "artifacts/$t" -type f | wc -l)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$work/$t.log" | tail -n 1)"
    if [ -z "$execs" ]; then
        # No final stats (a crash ends the run first): the last status line's count.
        execs="$(grep -o '^#[0-9]*' "$work/$t.log" | tail -n 1 | tr -d '#')"
    fi
    echo "$t ${execs:-0} $((after - before))" >"$work/$t.result"
}

mkdir -p "$work"
rm -f "$work"/*.result
if [ "$jobs" -le 1 ]; then
    for t in $targets; do
        echo "fuzz.sh: $t" >&2
        run_one "$t"
    done
else
    for t in $targets; do
        echo "fuzz.sh: $t" >&2
        run_one "$t" &
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    done
    wait
fi

total_crashes=0
printf '\n%-18s %14s %8s\n' target execs crashes
for t in $targets; do
    read -r name execs crashes <"$work/$t.result"
    printf '%-18s %14s %8s\n' "$name" "$execs" "$crashes"
    total_crashes=$((total_crashes + crashes))
    if [ "$crashes" -gt 0 ]; then
        grep -m 3 -E '^(==[0-9]+==ERROR|thread .* panicked|SUMMARY|artifact_prefix)|Test unit written' "$work/$t.log" | sed 's/^/    /' || true
    fi
done
[ "$total_crashes" -eq 0 ]
