#!/usr/bin/env bash
# The long fuzz runs (not part of `make check`): RUNS executions of each target (default 10^7),
# without the address sanitizer (the library forbids unsafe code; overflow checks and debug
# assertions stay on), from the kept corpus and the seeds. Prints each target's figures;
# new inputs that add coverage land in corpus/TARGET (merge them before committing:
# cargo fuzz cmin TARGET). Usage: fuzz/long-run.sh [RUNS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(cmdline conf plan tool_output)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log=$(mktemp)
    started=$(date +%s)
    if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" seeds -- -runs="$runs" >"$log" 2>&1; then
        echo "fuzz target $target failed:"
        tail -n 60 "$log"
        exit 1
    fi
    seconds=$(( $(date +%s) - started ))
    stats=$(grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -n 1)
    echo "$target: $runs runs in ${seconds} s; last: $stats"
    rm -f "$log"
done
