//! What `zpool`, `zfs` and `blkid` print, parsed: pure functions over their text, so that the
//! helper's decisions about strangers' pools and disks rest on code the fuzzer reaches. Every
//! parser takes any text (a tool's warning, a truncated line, a hostile label) and returns
//! only what it could read.

use crate::names::{Dataset, PoolName};

/// Pool names from `zpool list -H -o name`: one valid name per line, nothing else.
pub fn pool_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| PoolName::parse(l).is_ok())
        .map(str::to_owned)
        .collect()
}

/// The `/dev/…` vdev paths of a `zpool status -P` listing.
pub fn vdev_paths(status: &str) -> Vec<String> {
    status
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("/dev/"))
        .map(str::to_owned)
        .collect()
}

/// A pool `zpool import` lists (one that is not imported), with its status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPool {
    pub name: String,
    pub status: String,
}

impl ListedPool {
    /// Whether ZFS says another system may still have the pool imported.
    pub fn in_use_elsewhere(&self) -> bool {
        self.status.contains("another system")
    }

    /// The status line when it says why the pool is not imported. `zpool import` also lists a
    /// pool that imports fine with a note (features not enabled, an old on-disk version):
    /// that note is no reason.
    pub fn reason(&self) -> Option<&str> {
        let note = ["features are not enabled", "legacy on-disk version"]
            .iter()
            .any(|n| self.status.contains(n));
        (!self.status.is_empty() && !note).then_some(self.status.as_str())
    }
}

/// The pools listed by `zpool import` (those that were not imported).
pub fn listed_pools(listing: &str) -> Vec<ListedPool> {
    let mut out: Vec<ListedPool> = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("pool: ") {
            out.push(ListedPool {
                name: name.trim().to_owned(),
                status: String::new(),
            });
        } else if let Some(status) = line.strip_prefix("status: ") {
            if let Some(last) = out.last_mut() {
                last.status = status.trim().to_owned();
            }
        }
    }
    out
}

/// The properties [`zvol_rows`] reads, in its column order.
pub const ZVOL_COLUMNS: &str = "name,volmode,keystatus,encryptionroot";

/// A zvol as `zfs list -H -t volume -o ZVOL_COLUMNS` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZvolRow {
    pub dataset: Dataset,
    /// `volmode=none`: no device node, ever (zlive hides old generations this way).
    pub hidden: bool,
    /// Its key is not loaded: no device node until it is.
    pub locked: bool,
    /// Its encryption root, when it is encrypted.
    pub encryption_root: Option<Dataset>,
}

impl ZvolRow {
    /// Whether udev will make a device node for it: not hidden, not locked.
    pub fn has_device(&self) -> bool {
        !self.hidden && !self.locked
    }
}

/// The zvols of a `zfs list -H -t volume -o ZVOL_COLUMNS` listing; lines that are not four
/// tab-separated fields with a valid dataset name are skipped.
pub fn zvol_rows(listing: &str) -> Vec<ZvolRow> {
    listing
        .lines()
        .filter_map(|line| {
            let [name, volmode, keystatus, root] = line.split('\t').collect::<Vec<_>>()[..] else {
                return None;
            };
            Some(ZvolRow {
                dataset: Dataset::parse(name.trim()).ok()?,
                hidden: volmode.trim() == "none",
                locked: keystatus.trim() == "unavailable",
                encryption_root: Dataset::parse(root.trim()).ok(),
            })
        })
        .collect()
}

/// The user property that makes a dataset a persistence volume: it holds the volume's label.
pub const DATASET_LABEL: &str = "org.zlive:label";
/// The user property of a dataset migrated from a zvol (`persistence-migrate`): the zvol it
/// replaces, whose file system label no longer counts.
pub const DATASET_REPLACES: &str = "org.zlive:replaces";

/// The datasets of a `zfs get -H -s local -o name,value DATASET_LABEL` listing with the label
/// each carries: two tab-separated fields, a valid dataset name, a label that could be a
/// directory name. Others are skipped.
pub fn dataset_labels(listing: &str) -> Vec<(Dataset, String)> {
    listing
        .lines()
        .filter_map(|line| {
            let (name, label) = line.split_once('\t')?;
            let label = label.trim();
            crate::names::check_label(label).ok()?;
            Some((Dataset::parse(name.trim()).ok()?, label.to_owned()))
        })
        .collect()
}

/// The user property that marks zlive's snapshots with their kind (`boot`, `before-reset`,
/// `before-rollback`, …): a user's snapshot, whatever its name, has none.
pub const SNAPSHOT_KIND: &str = "zlive:kind";

/// A snapshot as `zfs list -H -p -t snapshot -o name,creation,used,zlive:kind` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub name: String,
    /// Seconds since the epoch.
    pub creation: u64,
    pub used: u64,
    /// zlive's mark ([`SNAPSHOT_KIND`]).
    pub kind: String,
}

/// The snapshots of such a listing whose short name starts with `prefix` and that carry
/// zlive's mark: zlive's own, never a user's, whatever its name.
pub fn snapshot_rows(listing: &str, prefix: &str) -> Vec<SnapshotRow> {
    listing
        .lines()
        .filter_map(|line| {
            let [name, creation, used, kind] = line.split('\t').collect::<Vec<_>>()[..] else {
                return None;
            };
            let (_, short) = name.split_once('@')?;
            if !short.starts_with(prefix) || kind == "-" || kind.is_empty() {
                return None;
            }
            Some(SnapshotRow {
                name: name.to_owned(),
                creation: creation.parse().unwrap_or(0),
                used: used.parse().unwrap_or(0),
                kind: kind.to_owned(),
            })
        })
        .collect()
}

/// One device of a `blkid -o export` listing: its node and the tags blkid found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    pub device: String,
    pub fs_type: Option<String>,
    pub label: Option<String>,
}

/// The devices of a `blkid -c /dev/null -o export DEV…` listing: `KEY=value` lines, one
/// block per device, blocks separated by a blank line, `DEVNAME` first.
pub fn blkid_export(listing: &str) -> Vec<Probed> {
    let mut out: Vec<Probed> = Vec::new();
    // Whether the last block is still open: a blank line ends it.
    let mut open = false;
    for line in listing.lines() {
        let Some((key, value)) = line.split_once('=') else {
            open &= !line.trim().is_empty();
            continue;
        };
        if key == "DEVNAME" {
            out.push(Probed {
                device: value.to_owned(),
                ..Probed::default()
            });
            open = true;
            continue;
        }
        let Some(last) = out.last_mut().filter(|_| open) else {
            continue;
        };
        match key {
            "TYPE" => last.fs_type = Some(value.to_owned()),
            "LABEL" => last.label = Some(value.to_owned()),
            _ => {}
        }
    }
    out
}

/// The pool a block device is a member of, from its entry in udev's database
/// (`/run/udev/data/bMAJ:MIN`): blkid's `ID_FS_TYPE=zfs_member`, and the pool's name, which
/// blkid reads as the device's label. `None` for any other device, or a name no pool can have.
pub fn udev_zfs_member(entry: &str) -> Option<String> {
    let label = udev_property(entry, "ID_FS_LABEL")?;
    let member = udev_property(entry, "ID_FS_TYPE") == Some("zfs_member");
    (member && PoolName::parse(label).is_ok()).then(|| label.to_owned())
}

/// A property (an `E:KEY=value` line) of a device's entry in udev's database.
pub fn udev_property<'a>(entry: &'a str, key: &str) -> Option<&'a str> {
    entry
        .lines()
        .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, value)| value)
}

/// The device node's name in a sysfs `uevent` file (`DEVNAME=vda`, `DEVNAME=sda1`): a name
/// below /dev, never one that climbs out of it.
pub fn uevent_devname(uevent: &str) -> Option<String> {
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let fine = !name.is_empty()
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.:+".contains(c));
    fine.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfs_members_from_udev_entries() {
        let member = "S:disk/by-label/dpool\nW:12\nE:ID_FS_LABEL=dpool\nE:ID_FS_LABEL_ENC=dpool\nE:ID_FS_TYPE=zfs_member\nE:ID_FS_USAGE=filesystem\nG:systemd\n";
        assert_eq!(udev_zfs_member(member).as_deref(), Some("dpool"));
        // Another file system, a member without a label, a label no pool can have.
        assert_eq!(
            udev_zfs_member("E:ID_FS_LABEL=dpool\nE:ID_FS_TYPE=ext4\n"),
            None
        );
        assert_eq!(udev_zfs_member("E:ID_FS_TYPE=zfs_member\n"), None);
        assert_eq!(
            udev_zfs_member("E:ID_FS_TYPE=zfs_member\nE:ID_FS_LABEL=../etc\n"),
            None
        );
        assert_eq!(udev_property(member, "ID_FS_USAGE"), Some("filesystem"));
        assert_eq!(udev_property(member, "ID_FS"), None);
        // Only E: lines count.
        assert_eq!(
            udev_zfs_member("S:ID_FS_TYPE=zfs_member\nE:ID_FS_LABEL=dpool\n"),
            None
        );
    }

    #[test]
    fn device_names_from_uevent_files() {
        let uevent = "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n";
        assert_eq!(uevent_devname(uevent).as_deref(), Some("vda"));
        assert_eq!(uevent_devname("DEVNAME=sda1\n").as_deref(), Some("sda1"));
        for bad in [
            "DEVNAME=../sda\n",
            "DEVNAME=\n",
            "DEVNAME=a b\n",
            "MAJOR=8\n",
            "DEVNAME=/x\n",
        ] {
            assert_eq!(uevent_devname(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pool_names_skip_what_is_not_a_name() {
        let text = "dpool\nno pools available\nbpool\n\ncannot open 'x': no such pool\n";
        assert_eq!(pool_names(text), ["dpool", "bpool"]);
    }

    #[test]
    fn vdev_paths_from_zpool_status() {
        let status = "  pool: dpool\n state: ONLINE\nconfig:\n\n\tNAME          STATE     READ WRITE CKSUM\n\tdpool         ONLINE       0     0     0\n\t  mirror-0    ONLINE       0     0     0\n\t    /dev/vda9 ONLINE       0     0     0\n\t    /dev/disk/by-id/usb-x-part1  ONLINE  0 0 0\n\tlogs\n\t  /dev/vdc    ONLINE       0     0     0\n\nerrors: No known data errors\n";
        assert_eq!(
            vdev_paths(status),
            ["/dev/vda9", "/dev/disk/by-id/usb-x-part1", "/dev/vdc"]
        );
        assert!(vdev_paths("no pools available\n").is_empty());
    }

    #[test]
    fn pools_zpool_import_lists() {
        let listing = "   pool: dpool\n     id: 1\n  state: ONLINE\n status: The pool was last accessed by another system.\n action: ...\n\n   pool: other\n  state: ONLINE\n";
        let pools = listed_pools(listing);
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].name, "dpool");
        assert!(pools[0].in_use_elsewhere());
        assert_eq!(pools[1].status, "");
        assert!(!pools[1].in_use_elsewhere());
        assert_eq!(pools[1].reason(), None);
        assert_eq!(
            pools[0].reason(),
            Some("The pool was last accessed by another system.")
        );
        let noted = " pool: zlive\n status: Some supported features are not enabled on the pool.\n";
        assert_eq!(listed_pools(noted)[0].reason(), None);
    }

    #[test]
    fn zvols_with_what_hides_their_device() {
        let listing = "dpool/persistence\tdefault\t-\t-\n\
                       dpool/persistence-zlive-rolled-1\tnone\t-\t-\n\
                       bpool/enc/a\tdefault\tunavailable\tbpool/enc\n\
                       bpool/enc/b\tfull\tavailable\tbpool/enc\n\
                       garbage line\n\
                       bad name!\tdefault\t-\t-\n";
        let rows = zvol_rows(listing);
        assert_eq!(rows.len(), 4);
        assert!(rows[0].has_device() && rows[0].encryption_root.is_none());
        assert!(rows[1].hidden && !rows[1].has_device());
        assert!(rows[2].locked && !rows[2].has_device());
        assert_eq!(
            rows[2].encryption_root.as_ref().map(Dataset::as_str),
            Some("bpool/enc")
        );
        assert!(rows[3].has_device());
    }

    #[test]
    fn labelled_datasets() {
        let listing =
            "dpool/live\tpersistence\nbpool/x\t../etc\nnot a row\nbad name!\tp\ncpool/a/b\tdata\n";
        let found = dataset_labels(listing);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].0.as_str(), found[0].1.as_str()),
            ("dpool/live", "persistence")
        );
        assert_eq!(found[1].1, "data");
    }

    #[test]
    fn blkid_blocks_per_device() {
        let listing = "DEVNAME=/dev/zd0\nLABEL=persistence\nUUID=1\nBLOCK_SIZE=4096\nTYPE=ext4\n\n\
                       DEVNAME=/dev/zd16\nTYPE=crypto_LUKS\n\nLABEL=orphan\nDEVNAME=/dev/zd32\n";
        let found = blkid_export(listing);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].label.as_deref(), Some("persistence"));
        assert_eq!(found[0].fs_type.as_deref(), Some("ext4"));
        assert_eq!(found[1].fs_type.as_deref(), Some("crypto_LUKS"));
        assert_eq!(
            found[1].label, None,
            "a tag after a block's end belongs to none"
        );
        assert_eq!(found[2].device, "/dev/zd32");
    }

    #[test]
    fn only_zlives_marked_snapshots() {
        let listing = "dpool/p@zlive-20261126T235959Z\t1795737599\t4096\tboot\n\
                       dpool/p@zlive-users-own\t1795737600\t0\t-\n\
                       dpool/p@mine\t1795737601\t0\tboot\n\
                       dpool/p@zlive-20261127T000000Z\tx\ty\tbefore-reset\n\
                       not a row\n";
        let rows = snapshot_rows(listing, "zlive-");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].creation, 1_795_737_599);
        assert_eq!(rows[0].kind, "boot");
        assert_eq!(
            rows[1].creation, 0,
            "an unreadable number is 0, not a panic"
        );
        assert_eq!(rows[1].kind, "before-reset");
    }
}
