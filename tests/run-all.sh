#!/usr/bin/env bash
# Every test zlive has, after installing what they need (idempotent): `make check`.
# Order: cheap checks first, then the fuzz smoke runs, then the QEMU boot tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# Every step's wall time, printed at the end (failed or not): CI's
# budget is the sum, and the log says where it went.
started=$(date +%s) step_name="" step_started=$started timings=""
step_done() {
    [ -n "$step_name" ] || return 0
    timings+=$(printf '%6d s  %s' "$(($(date +%s) - step_started))" "$step_name")$'\n'
}
step() {
    step_done
    step_name=$* step_started=$(date +%s)
    printf '\n==== %s\n' "$*"
}
finish() {
    step_done
    printf '\n==== wall time per step\n%s%6d s  in all\n' "$timings" "$(($(date +%s) - started))"
}
trap finish EXIT

step "host set-up (apt sources, OpenZFS DKMS, dracut, QEMU)"
bash tests/vm/setup-host.sh

step "formatting and lints"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

step "unit, golden, systemd-analyze verify, escaping and CLI tests"
cargo test --locked
# The helper's tests that need root (chown to other users, chroot): this runs as root.
cargo test --locked --bin zlive -- --ignored

step "man pages"
bash man/check.sh

step "Debian package (make deb, lintian, install and purge in a scratch root)"
bash tests/deb.sh

step "fuzz smoke runs (bounded)"
bash fuzz/smoke.sh "${ZLIVE_FUZZ_SECONDS:-10}"

step "benchmark (prints figures; never fails on timings)"
# The generator as it ships (make build links it statically), copied aside: cargo bench
# links its own dynamic build over target/release/zlive-generator.
make -s build
release=$(make -s release-dir)
shipped=$release/../zlive-generator-shipped
cp "$release/zlive-generator" "$shipped"
ZLIVE_BENCH_GENERATOR=$shipped cargo bench --locked --bench generator

step "live-build ISO for the boot tests (examples/live-build; cached by content)"
# Built before the boots, not beside them: a loaded host slows the guests' timed waits.
bash tests/vm/build-live-iso.sh

step "boot tests in QEMU"
# Two guests at a time, one vCPU each: about 1.5 times the boots per hour of one guest with two.
ZLIVE_VMS=2 cargo test --locked --release --test boot -- --ignored --test-threads=2 --nocapture --skip demo_ --skip bench_
