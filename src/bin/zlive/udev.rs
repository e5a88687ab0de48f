//! udev's database (`/run/udev/data`): what its rules and blkid found on each block device,
//! read instead of probing the device again (a `blkid` run per device is a process, and
//! seconds in all under emulation) or instead of reading every device (`zpool import`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One file per device udev has handled: `bMAJ:MIN` for block devices.
const DATA: &str = "/run/udev/data";

/// The database entry of a block device node (`/dev/vda`); `None` when it is no block device
/// or udev has not handled it (yet).
pub fn entry_of(device: &str) -> Option<String> {
    let meta = std::fs::metadata(device).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()),
        nix::sys::stat::minor(meta.rdev()),
    );
    std::fs::read_to_string(format!("{DATA}/b{major}:{minor}")).ok()
}

/// Every block device udev has handled: its node under /dev (from sysfs) and its entry.
pub fn block_entries() -> Vec<(String, String)> {
    let Ok(files) = std::fs::read_dir(DATA) else {
        return Vec::new();
    };
    files
        .flatten()
        .filter_map(|file| {
            let name = file.file_name().into_string().ok()?;
            let number = name.strip_prefix('b')?;
            let entry = std::fs::read_to_string(file.path()).ok()?;
            let uevent = Path::new("/sys/dev/block").join(number).join("uevent");
            let node = zlive::tool_output::uevent_devname(&std::fs::read_to_string(uevent).ok()?)?;
            Some((format!("/dev/{node}"), entry))
        })
        .collect()
}
