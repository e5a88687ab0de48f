//! A block device made read-only in the kernel (`BLKROSET`, as `blockdev --setro` does) while
//! the medium scan looks at the file system on it. Mount options alone do not protect a disk
//! that is not ours: ext4 processes its orphan inodes even on a read-only, `noload` mount
//! unless the block device itself is read-only (`bdev_read_only` in fs/ext4/orphan.c), and a
//! hibernated or crashed host's file system would be changed.

// The ioctls have no safe wrapper in nix; each call passes a pointer to a local integer, or
// nothing.
#![allow(unsafe_code)]

use anyhow::{Context, Result};
use nix::libc::c_int;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

// linux/fs.h: BLKROSET _IO(0x12, 93), BLKROGET _IO(0x12, 94).
nix::ioctl_write_ptr_bad!(blkroset, 0x125d, c_int);
nix::ioctl_read_bad!(blkroget, 0x125e, c_int);
// BLKFLSBUF _IO(0x12, 97).
nix::ioctl_none_bad!(blkflsbuf, 0x1261);

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
        let (file, was) = open_read_only_flag(device)?;
        if !was {
            set_flag(&file, device, true)?;
        }
        Ok(ReadOnly {
            file,
            device: device.to_owned(),
            restore: !was,
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
            let _ = set_flag(&self.file, &self.device, false);
        }
    }
}

/// Whether the whole disk `name` has a partition table whose partitions the kernel has not
/// listed yet: it lists a disk in sysfs a moment before it has read its table (a slow USB
/// stick under emulation takes a while), and mounting the disk then would claim all of it.
pub fn partitions_pending(name: &str) -> bool {
    let sys = std::path::Path::new("/sys/class/block").join(name);
    if sys.join("partition").exists() {
        return false;
    }
    let can_have_partitions = std::fs::read_to_string(sys.join("ext_range"))
        .ok()
        .and_then(|r| r.trim().parse::<u32>().ok())
        .is_some_and(|r| r > 1);
    let listed = std::fs::read_dir(&sys)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("partition").exists());
    if !can_have_partitions || listed {
        return false;
    }
    let mut sector = [0u8; 512];
    let read = std::fs::File::open(format!("/dev/{name}"))
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut sector));
    read.is_ok() && mbr_lists_partitions(&sector)
}

/// Whether a disk's first sector is an MBR (or GPT's protective MBR) with a used entry (one
/// with sectors: the kernel adds those, whatever their type).
pub fn mbr_lists_partitions(sector: &[u8; 512]) -> bool {
    sector[510..512] == [0x55, 0xaa]
        && (0..4).any(|i| {
            let entry = 446 + 16 * i;
            sector[entry + 12..entry + 16] != [0, 0, 0, 0]
        })
}

/// The sysfs directory of the disk a block device (by kernel name) is, or is a partition of.
pub fn disk_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new("/sys/class/block").join(name);
    let dir = dir.canonicalize().unwrap_or(dir);
    match dir.join("partition").exists() {
        true => dir
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or(dir),
        false => dir,
    }
}

/// The kernel name of that disk (`sda` for `sda1` and for `sda`).
pub fn disk_name(name: &str) -> String {
    disk_dir(name)
        .file_name()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned())
}

/// Make `device` writable again if it was read-only (the medium's disk, kept so since the
/// scan, when `zlive create` adds a partition to it). Whether it was read-only.
pub fn make_writable(device: &str) -> Result<bool> {
    let (file, was) = open_read_only_flag(device)?;
    if was {
        set_flag(&file, device, false)?;
    }
    Ok(was)
}

/// Drop what the kernel has cached of `device`'s blocks (`blockdev --flushbufs`), so that the
/// next read sees the disk: a whole disk's cache is not told of writes made through one of
/// its partitions, or by ZFS, which writes past every cache.
pub fn flush_buffers(device: &str) -> Result<()> {
    let (file, _) = open_read_only_flag(device)?;
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe { blkflsbuf(file.as_raw_fd()) }.with_context(|| format!("BLKFLSBUF on {device}"))?;
    Ok(())
}

/// The device opened (without waiting on a medium), and whether the kernel has it read-only.
fn open_read_only_flag(device: &str) -> Result<(File, bool)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(device)
        .with_context(|| format!("Failed to open {device}"))?;
    let mut was: c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points at `was`.
    unsafe { blkroget(file.as_raw_fd(), &mut was) }
        .with_context(|| format!("{device} is not a block device (BLKROGET)"))?;
    Ok((file, was != 0))
}

/// Set the kernel's read-only flag of an open device.
fn set_flag(file: &File, device: &str, read_only: bool) -> Result<()> {
    let flag: c_int = read_only.into();
    // SAFETY: BLKROSET reads one int through the pointer, which points at `flag`.
    unsafe { blkroset(file.as_raw_fd(), &flag) }
        .with_context(|| format!("Failed to set {device} read-only={read_only} (BLKROSET)"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn read_only(device: &str) -> bool {
        open_read_only_flag(device).unwrap().1
    }

    /// A hybrid ISO's MBR (its first entry of type 0, its EFI entry), a GPT's protective MBR,
    /// an empty one, and a sector that is no MBR.
    #[test]
    fn an_mbr_with_used_entries_lists_partitions() {
        let mut hybrid = [0u8; 512];
        hybrid[510..].copy_from_slice(&[0x55, 0xaa]);
        assert!(!mbr_lists_partitions(&hybrid), "no entry is used");
        // Entry 1: type 0, 716736 sectors from 64.
        hybrid[446 + 8..446 + 12].copy_from_slice(&64u32.to_le_bytes());
        hybrid[446 + 12..446 + 16].copy_from_slice(&716_736u32.to_le_bytes());
        assert!(mbr_lists_partitions(&hybrid));
        let mut protective = [0u8; 512];
        protective[510..].copy_from_slice(&[0x55, 0xaa]);
        protective[446 + 4] = 0xee;
        protective[446 + 12..446 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(mbr_lists_partitions(&protective));
        let mut iso_only = hybrid;
        iso_only[510] = 0;
        assert!(!mbr_lists_partitions(&iso_only), "no boot signature");
    }

    /// On a loop device: set makes it read-only and dropping restores it, keep leaves it so,
    /// and make_writable undoes that once.
    #[test]
    #[ignore = "needs root (a loop device)"]
    fn the_read_only_flag_is_set_restored_and_released() {
        let image = crate::testing::image("disk.img", 8 << 20);
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let loop_dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let checks = std::panic::catch_unwind(|| {
            assert!(!read_only(&loop_dev));
            let held = ReadOnly::set(&loop_dev).unwrap();
            assert!(read_only(&loop_dev));
            assert!(!held.has_partitions());
            drop(held);
            assert!(!read_only(&loop_dev));
            ReadOnly::set(&loop_dev).unwrap().keep();
            assert!(read_only(&loop_dev));
            assert!(make_writable(&loop_dev).unwrap());
            assert!(!make_writable(&loop_dev).unwrap());
            assert!(!read_only(&loop_dev));
        });
        let _ = Command::new("losetup").args(["-d", &loop_dev]).status();
        checks.unwrap();
    }
}
