#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Runs every fuzz target briefly from the committed seed corpus (CI smoke run; longer runs by hand:
# SECONDS_PER_TARGET=600 fuzz/smoke.sh). cargo-fuzz needs unstable flags; RUSTC_BOOTSTRAP enables
# them on the stable toolchain, as the kernel's own Rust build does.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${SECONDS_PER_TARGET:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    work=$(mktemp -d)
    mkdir "$work/corpus"
    cp corpus/"$target"/seed-* "$work/corpus"/
    echo "fuzz: $target for ${seconds}s"
    status=0
    cargo fuzz run "$target" "$work/corpus" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"$work/log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|==[0-9]+==|SUMMARY)|panicked' "$work/log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 30 "$work/log" >&2
        echo "fuzz: $target FAILED (artifacts in fuzz/artifacts/$target)" >&2
        exit 1
    fi
    rm -rf "$work"
done
