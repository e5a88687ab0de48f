#!/usr/bin/env bash
# Bounded fuzz runs of every target: SECONDS each (default 20). cargo-fuzz needs nightly
# features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in cmdline conf plan; do
    mkdir -p "corpus/$target"
    cargo fuzz run "$target" "corpus/$target" seeds -- -max_total_time="$seconds" 2>&1 | tail -n 1
done
