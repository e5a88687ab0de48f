//! The ZFS member disks udev has probed, to hand to `zpool import -d`: then zpool reads those
//! disks, not every block device libblkid can find (a CD-ROM, a floppy drive, each USB stick,
//! every zvol; seconds under emulation, and each one's driver woken).

use crate::udev;
use zlive::tool_output;

/// The /dev paths of the disks udev saw as members of `pool` (of any pool with `None`),
/// sorted; empty when udev has seen none (or its database cannot be read).
pub fn seen_by_udev(pool: Option<&str>) -> Vec<String> {
    let mut devices: Vec<String> = udev::block_entries()
        .into_iter()
        .filter(|(_, entry)| {
            tool_output::udev_zfs_member(entry).is_some_and(|label| pool.is_none_or(|p| p == label))
        })
        .map(|(node, _)| node)
        .collect();
    devices.sort();
    devices
}

/// `-d DEVICE` for each device: the arguments that make `zpool import` read only those.
pub fn search_args(devices: &[String]) -> Vec<&str> {
    devices.iter().flat_map(|d| ["-d", d.as_str()]).collect()
}
