//! The ZFS member disks udev has probed, to hand a named pool's `zpool import -d`: then zpool
//! reads those disks, not every block device libblkid can find (a CD-ROM, a floppy drive, each
//! USB stick, every zvol; seconds under emulation, and each one's driver woken).

use crate::udev;
use std::time::{Duration, Instant};
use zlive::tool_output;

/// The /dev paths of the disks udev saw as members of `pool`, sorted; empty when udev has seen
/// none (or its database cannot be read).
fn seen_by_udev(pool: &str) -> Vec<String> {
    seen(|label| label == pool)
}

/// The /dev paths of the disks udev saw as members of any pool, sorted: what a scan reads
/// (a disk udev has not probed yet is read once its link comes, or by the last try, which
/// reads every block device).
pub fn of_any_pool() -> Vec<String> {
    seen(|_| true)
}

fn seen(pool_wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut devices: Vec<String> = udev::block_entries()
        .into_iter()
        .filter(|(_, entry)| tool_output::udev_zfs_member(entry).is_some_and(|l| pool_wanted(&l)))
        .map(|(node, _)| node)
        .collect();
    devices.sort();
    devices
}

/// How long the disks of a pool are looked for in udev's database once its link is there:
/// udev makes a device's links just before it writes the device's entry.
const ENTRY_WAIT: Duration = Duration::from_secs(2);

/// The disks to read for `pool`, whose link (`/dev/disk/by-label/POOL`) is there: those
/// udev's database names as its members, once it names the linked one too; that one as well
/// when its entry is not written within [`ENTRY_WAIT`].
pub fn of_pool(pool: &str) -> Vec<String> {
    let linked = zlive::names::device_from_spec(&format!("LABEL={pool}"))
        .ok()
        .and_then(|link| std::fs::canonicalize(link).ok())
        .and_then(|path| path.to_str().map(str::to_owned));
    let started = Instant::now();
    loop {
        let mut seen = seen_by_udev(pool);
        let Some(linked) = &linked else {
            return seen;
        };
        if seen.contains(linked) {
            return seen;
        }
        if started.elapsed() >= ENTRY_WAIT {
            seen.push(linked.clone());
            seen.sort();
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `-d DEVICE` for each device: the arguments that make `zpool import` read only those.
pub fn search_args(devices: &[String]) -> Vec<&str> {
    devices.iter().flat_map(|d| ["-d", d.as_str()]).collect()
}
