//! What `zlive create` refuses, decided from facts gathered beforehand (see `probe.rs`), so
//! that every rule is tested without a disk. Each refusal names the device, what is on it,
//! and what would let the user go on.

use super::space::MIN_BYTES;

/// What is known of a block device before anything is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// `/dev/NAME`.
    pub path: String,
    /// A whole disk (not a partition).
    pub whole_disk: bool,
    pub bytes: u64,
    /// A CD or DVD drive.
    pub optical: bool,
    /// What uses it, one of its partitions or something built on it: mounts, swap, pools.
    pub in_use: Vec<String>,
    /// What `wipefs` finds on it: file systems, pool labels, LUKS headers, partition tables.
    pub signatures: Vec<String>,
    /// Its partitions, for a whole disk.
    pub partitions: Vec<String>,
    /// It is, or holds, the running live medium.
    pub holds_medium: bool,
}

/// Where the running live system came from, for the default target (free space on its disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    /// A disk or stick, and the whole disk that holds it.
    Disk(String),
    Optical,
    /// An ISO file on another file system (`findiso=`).
    IsoFile,
    /// Copied to RAM (`toram`) and its stick gone.
    InRam,
    /// No live medium (run on an installed system).
    None,
}

/// Why the default target cannot be used; `None` when it can.
pub fn refuse_medium(medium: &Medium) -> Option<String> {
    let why = match medium {
        Medium::Disk(_) => return None,
        Medium::Optical => "the live system runs from a CD or DVD, which cannot hold persistence",
        Medium::IsoFile => {
            "the live system runs from an ISO file (findiso=); zlive does not write beside it"
        }
        Medium::InRam => "the live system runs from RAM (toram) and its stick is gone",
        Medium::None => "no live medium is mounted (this is not a running live system)",
    };
    Some(format!(
        "{why}. Name a disk or partition with --device DEV."
    ))
}

/// What wipefs calls partition tables.
const PARTITION_TABLES: &[&str] = &["dos", "gpt", "PMBR"];

/// Why `device` may not be made persistence; `None` when it may. `wipe` is the user's
/// `--wipe`: a partition with data on it is then overwritten (never a whole disk).
pub fn refuse_device(device: &Device, wipe: bool) -> Option<String> {
    let path = &device.path;
    if device.optical {
        return Some(format!("{path} is a CD or DVD drive."));
    }
    if device.holds_medium {
        return Some(format!(
            "{path} holds the running live medium. Run zlive create without --device to use the \
             free space after its last partition."
        ));
    }
    if !device.in_use.is_empty() {
        return Some(format!(
            "{path} is in use ({}). Stop using it first, or choose another device.",
            device.in_use.join(", ")
        ));
    }
    if device.bytes < MIN_BYTES {
        return Some(format!(
            "{path} has {} MiB; persistence needs at least {} MiB.",
            device.bytes >> 20,
            MIN_BYTES >> 20
        ));
    }
    if device.whole_disk && !device.partitions.is_empty() {
        return Some(format!(
            "{path} holds partitions ({}). Name one of them with --device, or the free space of \
             the live medium's disk by giving no --device.",
            device.partitions.join(", ")
        ));
    }
    // An empty partition table holds no data.
    let data: Vec<&str> = device
        .signatures
        .iter()
        .map(String::as_str)
        .filter(|s| !(device.partitions.is_empty() && PARTITION_TABLES.contains(s)))
        .collect();
    // Only a partition's data is overwritten, and only with --wipe.
    let overwrite = wipe && !device.whole_disk;
    if !data.is_empty() && !overwrite {
        let what = data.join(", ");
        let proceed = match device.whole_disk {
            true => "zlive does not overwrite a whole disk that holds data; remove it yourself \
                     (wipefs --all) if it is not wanted"
                .to_owned(),
            false => format!("add --wipe to overwrite it (everything on {path} is lost)"),
        };
        return Some(format!("{path} holds {what}: {proceed}."));
    }
    None
}

/// Why the pool name cannot be used; `None` when it can.
pub fn refuse_pool_name(name: &str, imported: &[String], visible: &[String]) -> Option<String> {
    if imported.iter().any(|p| p == name) {
        return Some(format!(
            "a pool named {name} is imported on this system. Choose another name with --pool NAME."
        ));
    }
    if visible.iter().any(|p| p == name) {
        return Some(format!(
            "a pool named {name} is on a disk of this system (zpool import lists it). Choose \
             another name with --pool NAME."
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(path: &str) -> Device {
        Device {
            path: path.to_owned(),
            whole_disk: true,
            bytes: 1 << 30,
            ..Device::default()
        }
    }

    #[test]
    fn a_blank_disk_or_partition_is_taken() {
        assert_eq!(refuse_device(&blank("/dev/vdb"), false), None);
        let part = Device {
            whole_disk: false,
            ..blank("/dev/vdb1")
        };
        assert_eq!(refuse_device(&part, false), None);
    }

    #[test]
    fn data_is_never_overwritten_without_wipe_and_never_on_a_whole_disk() {
        let disk = Device {
            signatures: vec!["ext4".into()],
            ..blank("/dev/vdb")
        };
        let why = refuse_device(&disk, true).unwrap();
        assert!(why.starts_with("/dev/vdb holds ext4: "), "{why}");
        assert!(why.contains("wipefs"), "{why}");
        let part = Device {
            whole_disk: false,
            signatures: vec!["zfs_member".into()],
            ..blank("/dev/vdb2")
        };
        let why = refuse_device(&part, false).unwrap();
        assert_eq!(
            why,
            "/dev/vdb2 holds zfs_member: add --wipe to overwrite it (everything on /dev/vdb2 is lost)."
        );
        assert_eq!(refuse_device(&part, true), None);
        let table = Device {
            partitions: vec!["/dev/vdb1".into()],
            signatures: vec!["gpt".into()],
            ..blank("/dev/vdb")
        };
        assert!(refuse_device(&table, true)
            .unwrap()
            .contains("holds partitions (/dev/vdb1)"));
        // A table without partitions holds nothing.
        let empty_table = Device {
            signatures: vec!["gpt".into(), "PMBR".into()],
            ..blank("/dev/vdb")
        };
        assert_eq!(refuse_device(&empty_table, false), None);
    }

    #[test]
    fn mounted_optical_medium_and_small_devices_are_refused_whatever_the_flags() {
        let mounted = Device {
            in_use: vec!["mounted on /media/user/stick".into()],
            ..blank("/dev/sdb")
        };
        assert_eq!(
            refuse_device(&mounted, true).unwrap(),
            "/dev/sdb is in use (mounted on /media/user/stick). Stop using it first, or choose \
             another device."
        );
        let optical = Device {
            optical: true,
            ..blank("/dev/sr0")
        };
        assert!(refuse_device(&optical, true).unwrap().contains("CD or DVD"));
        let medium = Device {
            holds_medium: true,
            ..blank("/dev/sda")
        };
        assert!(refuse_device(&medium, true)
            .unwrap()
            .contains("holds the running live medium"));
        let small = Device {
            bytes: 32 << 20,
            ..blank("/dev/vdc")
        };
        assert_eq!(
            refuse_device(&small, false).unwrap(),
            "/dev/vdc has 32 MiB; persistence needs at least 64 MiB."
        );
    }

    #[test]
    fn the_default_target_needs_a_disk_medium() {
        assert_eq!(refuse_medium(&Medium::Disk("/dev/sda".into())), None);
        for m in [
            Medium::Optical,
            Medium::IsoFile,
            Medium::InRam,
            Medium::None,
        ] {
            assert!(
                refuse_medium(&m).unwrap().ends_with("--device DEV."),
                "{m:?}"
            );
        }
    }

    #[test]
    fn a_pool_name_in_sight_is_refused() {
        let imported = vec!["rpool".to_owned()];
        let visible = vec!["zlive".to_owned()];
        assert!(refuse_pool_name("rpool", &imported, &visible)
            .unwrap()
            .contains("imported"));
        assert!(refuse_pool_name("zlive", &imported, &visible)
            .unwrap()
            .contains("zpool import lists it"));
        assert_eq!(refuse_pool_name("stick", &imported, &visible), None);
    }
}
