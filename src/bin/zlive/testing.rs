//! Helpers for the helper's unit tests.

use std::path::PathBuf;

/// A fresh directory under the system's temporary directory.
pub fn tmp() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "zlive-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A sparse file of `bytes` in a fresh temporary directory: a disk image.
pub fn image(name: &str, bytes: u64) -> PathBuf {
    let path = tmp().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    path
}
