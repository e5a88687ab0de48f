//! The ZFS member disks udev has probed, to hand to `zpool import -d`: then zpool reads those
//! disks, not every block device libblkid can find (a CD-ROM, a floppy drive, each USB stick,
//! every zvol; seconds under emulation, and each one's driver woken).

use std::path::Path;
use zlive::tool_output;

/// udev's database: one file per device it has handled, `bMAJ:MIN` for block devices.
const UDEV_DATA: &str = "/run/udev/data";

/// The /dev paths of the disks udev saw as members of `pool` (of any pool with `None`),
/// sorted; empty when udev has seen none (or its database cannot be read).
pub fn seen_by_udev(pool: Option<&str>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(UDEV_DATA) else {
        return Vec::new();
    };
    let mut devices: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let number = name.strip_prefix('b')?;
            let label = tool_output::udev_zfs_member(&std::fs::read_to_string(entry.path()).ok()?)?;
            if pool.is_some_and(|p| p != label) {
                return None;
            }
            let uevent = Path::new("/sys/dev/block").join(number).join("uevent");
            let node = tool_output::uevent_devname(&std::fs::read_to_string(uevent).ok()?)?;
            Some(format!("/dev/{node}"))
        })
        .collect();
    devices.sort();
    devices
}

/// `-d DEVICE` for each device: the arguments that make `zpool import` read only those.
pub fn search_args(devices: &[String]) -> Vec<&str> {
    devices.iter().flat_map(|d| ["-d", d.as_str()]).collect()
}
