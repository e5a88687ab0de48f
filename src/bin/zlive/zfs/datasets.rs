//! ZFS datasets as persistence volumes (OpenZFS 2.2.2 and later): which datasets carry a
//! persistence label (`org.zlive:label`, visible even while a dataset is locked), whether the
//! loaded module may be trusted with an overlay's upper layer, and whether a dataset really
//! makes the whiteouts overlayfs needs.
//!
//! overlayfs does not check at mount time that its upper layer supports whiteouts: deletes
//! fail later, one by one. So the first use of a dataset (per module version) makes one in a
//! scratch directory on it, and a dataset that cannot is refused loudly.

use crate::exec::{self, run};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use zlive::names::Dataset;
use zlive::tool_output::{self, DATASET_LABEL};

/// The oldest OpenZFS whose datasets zlive uses as an upper layer: 2.2.0 brought
/// `RENAME_WHITEOUT` and overlayfs support, 2.2.2 fixed a data corruption bug of 2.2.0 and
/// 2.2.1 (openzfs/zfs #15526).
pub const MINIMUM: (u32, u32, u32) = (2, 2, 2);
/// Where the loaded module says its version.
const VERSION_FILE: &str = "/sys/module/zfs/version";
/// The property that records the module version a dataset's whiteouts were proven with.
const CHECKED: &str = "org.zlive:whiteouts";
/// Below where a dataset is mounted for that proof, and to replay its intent log: a
/// directory per process, as the volume waits of several datasets run at once.
const SCRATCH: &str = "/run/zlive/scratch";

/// What a dataset made to be an overlay's upper layer gets (`-o` options of `zfs create` or
/// `zfs receive`): never mounted by `zfs mount -a`, and the extended attributes and ACLs
/// overlayfs keeps stored with the files.
pub const UPPER_LAYER_OPTIONS: [&str; 6] = [
    "-o",
    "canmount=noauto",
    "-o",
    "xattr=sa",
    "-o",
    "acltype=posix",
];

/// The datasets of these pools (every imported pool when empty) that carry a persistence
/// label of their own (not inherited), with the label.
pub fn labelled(pools: &[String]) -> Vec<(Dataset, String)> {
    let mut cmd = Command::new("zfs");
    cmd.args([
        "get",
        "-H",
        "-s",
        "local",
        "-o",
        "name,value",
        "-t",
        "filesystem",
    ]);
    if !pools.is_empty() {
        cmd.arg("-r");
    }
    cmd.arg(DATASET_LABEL).args(pools);
    exec::lines(&mut cmd)
        .map(|lines| tool_output::dataset_labels(&lines.join("\n")))
        .unwrap_or_default()
}

/// The zvols that datasets of the imported pools replace (`persistence-migrate` made them):
/// their file system's label no longer counts.
pub fn replaced() -> Vec<String> {
    exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-s",
        "local",
        "-o",
        "value",
        "-t",
        "filesystem",
        zlive::tool_output::DATASET_REPLACES,
    ]))
    .unwrap_or_default()
    .into_iter()
    .filter(|z| Dataset::parse(z).is_ok())
    .collect()
}

/// Whether `dataset` exists as a file system, and whether its key is loaded (or it has none).
pub fn state(dataset: &Dataset) -> Option<(bool, bool)> {
    let lines = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        "type,keystatus",
        dataset.as_str(),
    ]))
    .ok()?;
    let [kind, keys] = lines.as_slice() else {
        return None;
    };
    Some((kind == "filesystem", keys != "unavailable"))
}

/// The loaded module's version, `major.minor.patch` of `/sys/module/zfs/version`
/// (`2.3.2-2~bpo12+2`).
pub fn module_version() -> Option<(u32, u32, u32)> {
    parse_version(&std::fs::read_to_string(VERSION_FILE).ok()?)
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let numbers = text.trim().split(['-', '~', '+', '_']).next()?;
    let mut parts = numbers.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Refuse datasets when the module is too old, saying which version and what to do.
pub fn check_module() -> Result<String> {
    let Some(version) = module_version() else {
        bail!("the loaded ZFS module's version cannot be read from {VERSION_FILE}");
    };
    let shown = format!("{}.{}.{}", version.0, version.1, version.2);
    if version < MINIMUM {
        bail!(
            "the loaded OpenZFS is {shown}, and a dataset is used as persistence only from {}.{}.{} on (overlayfs needs its whiteouts, and 2.2.0 and 2.2.1 corrupt data with block cloning, openzfs/zfs #15526). Build the live image with a newer OpenZFS, or keep persistence on an ext4 zvol",
            MINIMUM.0,
            MINIMUM.1,
            MINIMUM.2
        );
    }
    Ok(shown)
}

/// Replay the intent log of `dataset`, which ZFS does only when it is mounted: records a crash
/// left in the log (what the last boot wrote and fsynced) are not in a snapshot taken before
/// the replay, and not in a clone of it. So before zlive snapshots a dataset, it is mounted
/// once on a scratch directory and unmounted again.
pub fn replay_intent_log(dataset: &Dataset) -> Result<()> {
    mount_scratch(dataset).context("mounting it to replay its intent log failed")?;
    unmount_scratch().context("unmounting it after replaying its intent log failed")
}

fn scratch() -> std::path::PathBuf {
    Path::new(SCRATCH).join(std::process::id().to_string())
}

fn mount_scratch(dataset: &Dataset) -> Result<()> {
    std::fs::create_dir_all(scratch())?;
    let (ok, text) = run(Command::new("mount")
        .args(["-t", "zfs", "-o", "zfsutil,nosuid,nodev,noexec"])
        .arg(dataset.as_str())
        .arg(scratch()))?;
    if !ok {
        bail!("{}", text.trim());
    }
    Ok(())
}

fn unmount_scratch() -> Result<()> {
    let (ok, text) = run(Command::new("umount").arg(scratch()))?;
    if !ok {
        bail!("{}", text.trim());
    }
    let _ = std::fs::remove_dir(scratch());
    Ok(())
}

/// The properties of `dataset` an overlay's upper layer depends on: refused when it keeps no
/// xattrs (overlayfs records opaque directories in them, so a deleted directory of the image
/// would come back), and warnings for what works but costs (xattrs in hidden directories) or
/// loses something (ACLs). Returns the warnings.
pub fn check_properties(dataset: &Dataset) -> Result<Vec<String>> {
    let values = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        "xattr,acltype",
        dataset.as_str(),
    ]))?;
    let [xattr, acltype] = values.as_slice() else {
        bail!("zfs get xattr,acltype printed {values:?}");
    };
    upper_layer_fit(dataset, xattr, acltype)
}

fn upper_layer_fit(dataset: &Dataset, xattr: &str, acltype: &str) -> Result<Vec<String>> {
    if xattr == "off" {
        bail!("it keeps no extended attributes (xattr=off), where overlayfs records which directories replace the image's; run zfs set xattr=sa {dataset}");
    }
    let mut warnings = Vec::new();
    if xattr != "sa" {
        warnings.push(format!("dataset {dataset} keeps extended attributes in hidden directories (xattr={xattr}), which makes every file overlayfs touches slower; zfs set xattr=sa {dataset} fixes that for new files"));
    }
    if !matches!(acltype, "posix" | "posixacl") {
        warnings.push(format!("dataset {dataset} keeps no POSIX ACLs (acltype={acltype}): the ACLs of changed files are lost; zfs set acltype=posix {dataset} keeps them"));
    }
    Ok(warnings)
}

/// Prove that `dataset` makes whiteouts as overlayfs does (a whiteout device node, and a
/// rename that leaves one), once per module version: the version proven is kept in a
/// property of the dataset.
pub fn check_whiteouts(dataset: &Dataset, version: &str) -> Result<bool> {
    let proven = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        CHECKED,
        dataset.as_str(),
    ]))
    .unwrap_or_default();
    if proven.first().map(String::as_str) == Some(version) {
        return Ok(false);
    }
    mount_scratch(dataset).context("mounting it to check its whiteouts failed")?;
    let proof = make_whiteouts(&scratch());
    let unmounted = unmount_scratch();
    proof.context("overlayfs could not delete or rename files on it (no whiteouts)")?;
    unmounted.context("unmounting it after checking its whiteouts failed")?;
    let (ok, text) = run(Command::new("zfs")
        .args(["set", &format!("{CHECKED}={version}")])
        .arg(dataset.as_str()))?;
    if !ok {
        bail!("recording that its whiteouts work failed: {text}");
    }
    Ok(true)
}

/// In a scratch directory below `root`: a whiteout (character device 0:0) made directly, and
/// one left by `renameat2(RENAME_WHITEOUT)`; then everything removed.
fn make_whiteouts(root: &Path) -> Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    use nix::sys::stat::{mknod, Mode, SFlag};
    let dir = root.join(".zlive-whiteout-check");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir)?;
    let result = (|| -> Result<()> {
        mknod(
            &dir.join("made"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .context("mknod of a whiteout")?;
        std::fs::write(dir.join("renamed"), b"")?;
        renameat2(
            AT_FDCWD,
            &dir.join("renamed"),
            AT_FDCWD,
            &dir.join("moved"),
            RenameFlags::RENAME_WHITEOUT,
        )
        .context("renameat2 with RENAME_WHITEOUT")?;
        use std::os::unix::fs::FileTypeExt;
        let left = std::fs::symlink_metadata(dir.join("renamed"))?;
        if !left.file_type().is_char_device() {
            bail!("RENAME_WHITEOUT left no whiteout behind");
        }
        Ok(())
    })();
    std::fs::remove_dir_all(&dir)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_versions() {
        assert_eq!(parse_version("2.3.2-2~bpo12+2\n"), Some((2, 3, 2)));
        assert_eq!(parse_version("2.2.1"), Some((2, 2, 1)));
        assert_eq!(parse_version("2.1"), Some((2, 1, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("2.2.1").unwrap() < MINIMUM);
        assert!(parse_version("2.2.2-1").unwrap() >= MINIMUM);
        assert!(parse_version("2.10.0").unwrap() >= MINIMUM);
    }

    #[test]
    fn upper_layer_properties() {
        let d = Dataset::parse("dpool/live").unwrap();
        assert!(upper_layer_fit(&d, "sa", "posix").unwrap().is_empty());
        let refused = upper_layer_fit(&d, "off", "posix").unwrap_err().to_string();
        assert!(refused.contains("zfs set xattr=sa dpool/live"), "{refused}");
        let warned = upper_layer_fit(&d, "on", "off").unwrap();
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(warned[0].contains("xattr=on") && warned[1].contains("acltype=off"));
    }

    /// On the test machine's own file system (tmpfs or ext4 supports both kinds of whiteout):
    /// the proof passes and leaves nothing behind. Needs root (mknod of a device node).
    #[test]
    #[ignore = "needs root (mknod): make check runs it as root"]
    fn whiteouts_on_a_file_system_that_makes_them() {
        let root = crate::testing::tmp();
        make_whiteouts(&root).unwrap();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }
}
