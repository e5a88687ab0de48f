//! What `zlive create` makes, as data: the pool's options (each with its reason), the kind of
//! persistence, and its `persistence.conf`. Pure, so that the commands are tested as
//! written; `mod.rs` runs them.

use anyhow::{bail, Result};
use zlive::tool_output::DATASET_LABEL;

/// `zpool create` options for a pool on a stick, and why (zlive(8) says the same).
pub const POOL_OPTIONS: &[(&str, &str)] = &[
    // Flash has 4 KiB pages or larger whatever sector size it reports.
    ("ashift", "12"),
    // Tells the stick which blocks are free, which keeps cheap flash fast.
    ("autotrim", "on"),
    // A live system has no stable cache file: pools are found by scanning.
    ("cachefile", "none"),
    // OpenZFS 2.1 (Debian 12, Ubuntu 22.04) and later can import it, read-write; it also
    // leaves block cloning off, whose 2.2.0/2.2.1 bug corrupted data.
    ("compatibility", "openzfs-2.1-linux"),
];

/// `zpool create -O` properties of the pool's root, inherited by the persistence: compression
/// that costs little CPU, no access-time writes to flash, extended attributes in the inode
/// (overlayfs keeps its own there) and POSIX ACLs as the live system's files have them. The
/// root itself is never mounted: only zlive mounts the persistence, where it chooses.
pub const ROOT_PROPERTIES: &[(&str, &str)] = &[
    ("compression", "lz4"),
    ("atime", "off"),
    ("xattr", "sa"),
    ("acltype", "posix"),
    ("canmount", "off"),
    ("mountpoint", "none"),
];

/// Set on the pool's root from its creation until the label is set: a pool that still has it
/// and no label is one an interrupted create left, which persistence-create may take back.
pub const UNFINISHED: &str = "org.zlive:unfinished";

/// Encryption: ZFS native, a passphrase read from standard input (never an argument).
const ENCRYPTION: &[(&str, &str)] = &[
    ("encryption", "on"),
    ("keyformat", "passphrase"),
    ("keylocation", "prompt"),
];

/// The seed's layout: the set-up zlive was made for.
const SEED: &str =
    "/etc union\n/usr union\n/var union\n/home union\n/root union\n/srv union\n/opt union\n";

/// A `persistence.conf` to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `/home union`: the user's files, the system stays the image's.
    Home,
    /// The seed's seven union entries.
    Seed,
    /// `/ union`: everything.
    Full,
    /// A file of the user's, checked as at boot.
    File(String),
}

impl Layout {
    pub fn parse(text: &str) -> Layout {
        match text {
            "home" => Layout::Home,
            "seed" => Layout::Seed,
            "full" => Layout::Full,
            path => Layout::File(path.to_owned()),
        }
    }
}

/// The text of `persistence.conf` for `layout`; a file is read by `read` and refused when a
/// line of it would be refused at boot.
pub fn conf_text(layout: &Layout, read: impl Fn(&str) -> Result<Vec<u8>>) -> Result<String> {
    let text = match layout {
        Layout::Home => "/home union\n".to_owned(),
        Layout::Seed => SEED.to_owned(),
        Layout::Full => "/ union\n".to_owned(),
        Layout::File(path) => {
            let bytes = read(path)?;
            let parsed = zlive::conf::parse(path, &bytes);
            if let Some(r) = parsed.rejected.first() {
                bail!(
                    "{}, line {}: {:?}: {} (a boot would refuse it)",
                    r.file,
                    r.line,
                    r.text,
                    r.reason
                );
            }
            if parsed.entries.is_empty() {
                bail!("{path} has no entries");
            }
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{path} is not UTF-8"))?
        }
    };
    Ok(text)
}

/// The kind of persistence made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dataset carrying the label (OpenZFS 2.2.2 and later).
    Dataset,
    /// ext4 on a zvol, labelled: what live-boot users and older OpenZFS have.
    Zvol,
}

/// The kind: what the user asked for, else a dataset where the loaded OpenZFS can be an
/// overlay's upper layer (`dataset_refused` says why not, when it cannot).
pub fn choose_kind(dataset: bool, zvol: bool, dataset_refused: Option<&str>) -> Result<Kind> {
    match (dataset, zvol, dataset_refused) {
        (true, _, Some(why)) => bail!("--dataset: {why}"),
        (true, _, None) => Ok(Kind::Dataset),
        (false, true, _) => Ok(Kind::Zvol),
        (false, false, None) => Ok(Kind::Dataset),
        (false, false, Some(_)) => Ok(Kind::Zvol),
    }
}

/// Where zfsutils-linux keeps the feature sets `compatibility=` names.
pub const COMPATIBILITY_DIR: &str = "/usr/share/zfs/compatibility.d";

/// `zpool create` for `pool` on `vdev`; without `compatibility=` when its feature set is not
/// installed (`zpool create` would refuse it).
pub fn zpool_create(pool: &str, vdev: &str, compatibility_known: bool) -> Vec<String> {
    let mut argv = vec!["create".to_owned()];
    for (k, v) in POOL_OPTIONS {
        if *k == "compatibility" && !compatibility_known {
            continue;
        }
        argv.extend(["-o".to_owned(), format!("{k}={v}")]);
    }
    for (k, v) in ROOT_PROPERTIES {
        argv.extend(["-O".to_owned(), format!("{k}={v}")]);
    }
    argv.extend(["-O".to_owned(), format!("{UNFINISHED}=yes")]);
    argv.extend([pool.to_owned(), vdev.to_owned()]);
    argv
}

/// The feature set file `compatibility=` names, to check it is installed.
pub fn compatibility_file() -> String {
    let name = POOL_OPTIONS
        .iter()
        .find(|(k, _)| *k == "compatibility")
        .map(|(_, v)| *v)
        .unwrap_or_default();
    format!("{COMPATIBILITY_DIR}/{name}")
}

/// `zfs create` for the persistence `name` (POOL/persistence). A dataset gets no label yet:
/// the label is set last, once its `persistence.conf` is written, so that an interrupted
/// create leaves nothing a boot would take for persistence. A zvol of `zvol_bytes`.
pub fn zfs_create(name: &str, kind: Kind, zvol_bytes: u64, encrypt: bool) -> Vec<String> {
    let mut argv = vec!["create".to_owned()];
    let mut set = |k: &str, v: &str| argv.extend(["-o".to_owned(), format!("{k}={v}")]);
    if encrypt {
        ENCRYPTION.iter().for_each(|(k, v)| set(k, v));
    }
    match kind {
        // Never mounted by `zfs mount -a` (its mountpoint is the root's none as well).
        Kind::Dataset => set("canmount", "noauto"),
        Kind::Zvol => {
            // 16 KiB blocks: ext4's 4 KiB blocks without the write amplification of the 8 KiB
            // default on compressed data; sparse, so that the pool keeps its free space for
            // snapshots.
            set("volblocksize", "16K");
        }
    }
    if kind == Kind::Zvol {
        argv.extend(["-s".to_owned(), "-V".to_owned(), zvol_bytes.to_string()]);
    }
    argv.push(name.to_owned());
    argv
}

/// `zfs set` that makes the dataset persistence: the last step.
pub fn label_dataset(name: &str, label: &str) -> Vec<String> {
    vec![
        "set".to_owned(),
        format!("{DATASET_LABEL}={label}"),
        name.to_owned(),
    ]
}

/// `zfs inherit` that drops [`UNFINISHED`] from the pool's root: after the label.
pub fn finished(pool: &str) -> Vec<String> {
    ["inherit", UNFINISHED, pool].map(str::to_owned).to_vec()
}

/// `mkfs.ext4` for a zvol on flash: no label yet (e2label sets it last), no lazy init that
/// would write the whole volume later in the background, and no reserved blocks (no root
/// daemon needs them on a persistence volume).
pub fn mkfs_ext4(device: &str) -> Vec<String> {
    [
        "-q",
        "-F",
        "-m",
        "0",
        "-E",
        "lazy_itable_init=0,lazy_journal_init=0,discard",
        device,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The zvol's size when none is asked: the pool's free space less a fifth, kept for the
/// boot snapshots and ZFS's own reserve, in whole MiB.
pub fn default_zvol_bytes(pool_free: u64) -> u64 {
    (pool_free / 5 * 4) >> 20 << 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_the_documented_ones() {
        let no_file = |_: &str| -> Result<Vec<u8>> { unreachable!() };
        assert_eq!(
            conf_text(&Layout::parse("home"), no_file).unwrap(),
            "/home union\n"
        );
        assert_eq!(
            conf_text(&Layout::parse("full"), no_file).unwrap(),
            "/ union\n"
        );
        let seed = conf_text(&Layout::parse("seed"), no_file).unwrap();
        assert_eq!(seed.lines().count(), 7);
        assert!(zlive::conf::parse("seed", seed.as_bytes())
            .rejected
            .is_empty());
    }

    #[test]
    fn a_layout_file_is_checked_as_at_boot() {
        let file = |text: &'static str| move |_: &str| -> Result<Vec<u8>> { Ok(text.into()) };
        let ok = conf_text(&Layout::parse("/tmp/c"), file("/home/user bind\n")).unwrap();
        assert_eq!(ok, "/home/user bind\n");
        let err = conf_text(&Layout::parse("/tmp/c"), file("/proc union\n")).unwrap_err();
        assert!(err.to_string().starts_with("/tmp/c, line 1: "), "{err}");
        assert!(conf_text(&Layout::parse("/tmp/c"), file("# nothing\n")).is_err());
    }

    #[test]
    fn a_dataset_unless_openzfs_cannot() {
        assert_eq!(choose_kind(false, false, None).unwrap(), Kind::Dataset);
        assert_eq!(
            choose_kind(false, false, Some("2.1.11")).unwrap(),
            Kind::Zvol
        );
        assert_eq!(choose_kind(false, true, None).unwrap(), Kind::Zvol);
        let err = choose_kind(true, false, Some("the loaded OpenZFS is 2.1.11")).unwrap_err();
        assert_eq!(err.to_string(), "--dataset: the loaded OpenZFS is 2.1.11");
    }

    #[test]
    fn the_pool_is_made_for_a_stick() {
        let without = zpool_create("zlive", "/dev/sda3", false).join(" ");
        assert!(!without.contains("compatibility"), "{without}");
        let argv = zpool_create("zlive", "/dev/sda3", true).join(" ");
        assert_eq!(
            argv,
            "create -o ashift=12 -o autotrim=on -o cachefile=none -o compatibility=openzfs-2.1-linux \
             -O compression=lz4 -O atime=off -O xattr=sa -O acltype=posix -O canmount=off \
             -O mountpoint=none -O org.zlive:unfinished=yes zlive /dev/sda3"
        );
    }

    #[test]
    fn the_label_comes_last_and_the_passphrase_never_in_argv() {
        let ds = zfs_create("zlive/persistence", Kind::Dataset, 0, true).join(" ");
        assert_eq!(
            ds,
            "create -o encryption=on -o keyformat=passphrase -o keylocation=prompt \
             -o canmount=noauto zlive/persistence"
        );
        assert!(!ds.contains(DATASET_LABEL));
        let zv = zfs_create("zlive/persistence", Kind::Zvol, 1 << 30, false).join(" ");
        assert_eq!(
            zv,
            "create -o volblocksize=16K -s -V 1073741824 zlive/persistence"
        );
        assert_eq!(
            label_dataset("zlive/persistence", "persistence").join(" "),
            "set org.zlive:label=persistence zlive/persistence"
        );
        assert_eq!(
            finished("zlive").join(" "),
            "inherit org.zlive:unfinished zlive"
        );
        assert!(!mkfs_ext4("/dev/zd0").contains(&"-L".to_owned()));
        assert_eq!(default_zvol_bytes(1000 << 20), 800 << 20);
    }
}
