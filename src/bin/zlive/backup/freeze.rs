//! An ext4 file system frozen (`FIFREEZE`, as `fsfreeze` does) while its zvol is snapshotted,
//! so that a backup of a volume in use holds a clean file system, not one caught between two
//! writes. The freeze is released when the guard goes, whatever happened in between.

// The two ioctls have no safe wrapper in nix; each passes a pointer to a local integer, which
// the kernel ignores.
#![allow(unsafe_code)]

use anyhow::{Context, Result};
use nix::libc::c_int;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tracing::warn;

// linux/fs.h: FIFREEZE _IOWR('X', 119, int), FITHAW _IOWR('X', 120, int).
nix::ioctl_readwrite!(fifreeze, b'X', 119, c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, c_int);

/// A frozen file system; thawed on drop.
pub struct Frozen {
    dir: File,
    path: PathBuf,
}

/// Freeze the file system mounted at `mountpoint`.
pub fn freeze(mountpoint: &Path) -> Result<Frozen> {
    let dir = File::open(mountpoint)
        .with_context(|| format!("Failed to open {}", mountpoint.display()))?;
    let mut unused: c_int = 0;
    // SAFETY: FIFREEZE takes an int pointer it does not use; it points at `unused`.
    unsafe { fifreeze(dir.as_raw_fd(), &mut unused) }
        .with_context(|| format!("Failed to freeze {} (FIFREEZE)", mountpoint.display()))?;
    Ok(Frozen {
        dir,
        path: mountpoint.to_owned(),
    })
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let mut unused: c_int = 0;
        // SAFETY: as for FIFREEZE.
        if let Err(e) = unsafe { fithaw(self.dir.as_raw_fd(), &mut unused) } {
            warn!(
                "could not thaw {} (FITHAW: {e}); run fsfreeze --unfreeze {}",
                self.path.display(),
                self.path.display()
            );
        }
    }
}

/// Where the file system on this block device (or on a device mapped over it, a LUKS
/// container) is mounted, from /proc/self/mountinfo; `None` when it is not mounted.
pub fn mountpoint_of(device: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(device).ok()?;
    let rdev = std::fs::metadata(&real).ok()?.rdev();
    let mut numbers = vec![format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )];
    // Holders (dm-crypt over the zvol) give their own numbers.
    let name = real.file_name()?.to_string_lossy().into_owned();
    if let Ok(holders) = std::fs::read_dir(format!("/sys/block/{name}/holders")) {
        for holder in holders.flatten() {
            if let Ok(dev) = std::fs::read_to_string(holder.path().join("dev")) {
                numbers.push(dev.trim().to_owned());
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Any of its mount points freezes it (the binds share its superblock): the shortest.
    zlive::world::mount_devices(&mountinfo)
        .into_iter()
        .filter(|(_, m)| numbers.contains(&m.device))
        .map(|(point, _)| point)
        .min_by_key(|p| (p.len(), p.clone()))
        .map(PathBuf::from)
}
