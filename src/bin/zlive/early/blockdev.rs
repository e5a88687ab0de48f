//! A block device made read-only in the kernel (`BLKROSET`, as `blockdev --setro` does) while
//! the medium scan looks at the file system on it. Mount options alone do not protect a disk
//! that is not ours: ext4 processes its orphan inodes even on a read-only, `noload` mount
//! unless the block device itself is read-only (`bdev_read_only` in fs/ext4/orphan.c), and a
//! hibernated or crashed host's file system would be changed.

// The two ioctls have no safe wrapper in nix; each call passes a pointer to a local integer.
#![allow(unsafe_code)]

use anyhow::{Context, Result};
use nix::libc::c_int;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

// linux/fs.h: BLKROSET _IO(0x12, 93), BLKROGET _IO(0x12, 94).
nix::ioctl_write_ptr_bad!(blkroset, 0x125d, c_int);
nix::ioctl_read_bad!(blkroget, 0x125e, c_int);

/// A device set read-only for as long as this lives; set back to read-write when dropped,
/// unless it was read-only already or [`ReadOnly::keep`] was called.
#[derive(Debug)]
pub struct ReadOnly {
    file: File,
    device: String,
    restore: bool,
}

impl ReadOnly {
    /// Make `device` read-only. An error when it cannot be made so: then nothing on it may be
    /// mounted.
    pub fn set(device: &str) -> Result<ReadOnly> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(device)
            .with_context(|| format!("Failed to open {device}"))?;
        let fd = file.as_raw_fd();
        let mut was: c_int = 0;
        // SAFETY: BLKROGET writes one int through the pointer, which points at `was`.
        unsafe { blkroget(fd, &mut was) }
            .with_context(|| format!("{device} is not a block device (BLKROGET)"))?;
        if was != 0 {
            return Ok(ReadOnly {
                file,
                device: device.to_owned(),
                restore: false,
            });
        }
        let on: c_int = 1;
        // SAFETY: BLKROSET reads one int through the pointer, which points at `on`.
        unsafe { blkroset(fd, &on) }
            .with_context(|| format!("Failed to make {device} read-only (BLKROSET)"))?;
        Ok(ReadOnly {
            file,
            device: device.to_owned(),
            restore: true,
        })
    }

    /// Leave the device read-only for good (the medium, which stays mounted).
    pub fn keep(mut self) {
        self.restore = false;
    }

    /// Whether the device is a whole disk with partitions. Its read-only flag would cover
    /// them all: a stick holding the ISO and, after it, a partition with the persistence pool.
    pub fn has_partitions(&self) -> bool {
        let Some(name) = std::fs::canonicalize(&self.device)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        else {
            return false;
        };
        let sys = std::path::Path::new("/sys/class/block").join(&name);
        std::fs::read_dir(&sys)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("partition").exists())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.restore {
            let off: c_int = 0;
            // SAFETY: as in `set`.
            let _ = unsafe { blkroset(self.file.as_raw_fd(), &off) };
        }
    }
}

/// Make `device` writable again if it was read-only (the medium's disk, kept so since the
/// scan, when `zlive create` adds a partition to it). Whether it was read-only.
pub fn make_writable(device: &str) -> Result<bool> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(device)
        .with_context(|| format!("Failed to open {device}"))?;
    let fd = file.as_raw_fd();
    let mut was: c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points at `was`.
    unsafe { blkroget(fd, &mut was) }
        .with_context(|| format!("{device} is not a block device (BLKROGET)"))?;
    if was == 0 {
        return Ok(false);
    }
    let off: c_int = 0;
    // SAFETY: BLKROSET reads one int through the pointer, which points at `off`.
    unsafe { blkroset(fd, &off) }
        .with_context(|| format!("Failed to make {device} writable (BLKROSET)"))?;
    Ok(true)
}
