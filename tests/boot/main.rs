//! Real boots in QEMU: a live system with zlive in its initrd and its persistence on a ZFS
//! zvol. Needs root, QEMU and OpenZFS (tests/vm/setup-host.sh); run by `make check`:
//! `ZLIVE_VMS=2 cargo test --release --test boot -- --ignored --test-threads=2`. The harness's own unit
//! tests are not ignored and run with every `cargo test`.

mod backup;
mod bench;
mod create;
mod datasets;
mod encryption;
mod harness;
mod image_change;
mod live_build;
mod live_root;
mod media;
mod safety;
mod shutdown;
mod snapshots;
mod timeline;
mod volumes;
