#!/usr/bin/env bash
# Bounded fuzz runs of every target: SECONDS each (default 20). cargo-fuzz needs nightly
# features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them. The seeds (and every
# crash ever found, kept there as a regression input) run first.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in cmdline conf plan tool_output; do
    mkdir -p "corpus/$target"
    if ! cargo fuzz run "$target" "corpus/$target" seeds -- -max_total_time="$seconds" >"$log" 2>&1; then
        echo "fuzz target $target failed:"
        grep -v '^ *Compiling ' "$log" | tail -n 60
        exit 1
    fi
    tail -n 1 "$log"
done
