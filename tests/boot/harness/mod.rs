//! The boot-test harness, one file per concern:
//! - [`images`]: the kernel, initrds and live medium (built and cached by `build-images.sh`)
//!   and the choice of accelerator;
//! - [`pool`]: pool disks described by parameters, built in a setup guest, cached by content;
//! - [`qemu`]: running a guest, and booting the live system with a scenario script;
//! - [`serial`]: the serial protocol (sections the initrd and the live root's agent print) and
//!   what a boot showed;
//! - [`asserts`]: the checks a test makes on a boot;
//! - [`timing`]: the boot's timings, printed, never asserted.

pub mod asserts;
pub mod images;
pub mod pool;
pub mod qemu;
pub mod serial;
pub mod timing;

pub use images::{images, live_build_iso, seed_initrd};
pub use pool::{Crypt, Pool, Volume};
pub use qemu::{Lab, MediumPort, SEED};
pub use serial::Boot;

use std::path::PathBuf;

/// The source tree.
pub fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where images and pools are kept between runs, keyed by their content: outside the source
/// tree (`ZLIVE_VM_CACHE`, default `/var/cache/zlive-vm`), so that a fresh clone reuses what
/// an earlier one built. tests/vm/image-env.sh names the same place.
pub fn vm_cache() -> PathBuf {
    std::env::var_os("ZLIVE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/zlive-vm"))
}

/// Where a test leaves what its boots printed: `target/vm-artifacts/TEST/`.
pub fn artifacts(test: &str) -> PathBuf {
    let dir = top().join("target/vm-artifacts").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A short digest of a file (a disk image), to show that a boot left it alone.
pub fn digest(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)[..16].to_owned()
}

/// The disk has the digest it had before (`digest`): the boot wrote nothing to it.
pub fn assert_unchanged(disk: &std::path::Path, before: &str, during: &str) {
    assert_eq!(
        digest(disk),
        before,
        "{} changed during {during}",
        disk.display()
    );
}
