//! `persistence-migrate`: an ext4-on-zvol persistence found by its label becomes a dataset, in
//! the initrd, before anything of the live system writes to it. The zvol is copied to a new
//! dataset with everything kept (owners, modes, times, hard links, device nodes such as
//! overlayfs's whiteouts, xattrs such as its `trusted.overlay.*` and POSIX ACLs), the copy is
//! compared with the original, and only then does the dataset take the label, naming the
//! zvol it replaces in the same `zfs set`. The zvol stays, relabelled, until the user
//! destroys it.
//!
//! A power cut leaves one working persistence at every step: before the `zfs set` the zvol is
//! it (a half-made copy carries no label, and the next migration starts it again); after it
//! the dataset is, because a dataset that replaces a zvol wins over that zvol's label.

use crate::exec::run;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use tracing::info;
use zlive::names::Dataset;
use zlive::tool_output::{DATASET_LABEL, DATASET_REPLACES};

/// Where the zvol's file system and the new dataset are mounted for the copy.
const FROM: &str = "/run/zlive/migrate/from";
const TO: &str = "/run/zlive/migrate/to";

/// The dataset a zvol is migrated to: beside it, `POOL/VOL-dataset`.
pub fn dataset_for(zvol: &Dataset) -> Result<Dataset> {
    Dataset::parse(&format!("{zvol}-dataset")).map_err(anyhow::Error::msg)
}

/// Copy the ext4 on `device` (zvol `zvol`, labelled `label`) to a new dataset, compare, and
/// hand the label over. Returns the dataset, which is now the persistence.
pub fn migrate(zvol: &Dataset, device: &str, label: &str) -> Result<Dataset> {
    let dataset = dataset_for(zvol)?;
    // A copy a power cut interrupted carries no label: start it again.
    if exists(&dataset) {
        zfs(&["destroy", "-r", dataset.as_str()])?;
    }
    fs::create_dir_all(FROM)?;
    fs::create_dir_all(TO)?;
    mount(&["-t", "ext4", "-o", "ro,nosuid,nodev,noexec", device, FROM])
        .context("mounting the zvol's file system")?;
    let copied = copy_to_new(&dataset);
    let _ = run(Command::new("umount").arg(TO));
    let _ = run(Command::new("umount").arg(FROM));
    copied?;
    // The hand-over, in one `zfs set`: the dataset takes the label and names the zvol it
    // replaces.
    zfs(&[
        "set",
        &format!("{DATASET_LABEL}={label}"),
        &format!("{DATASET_REPLACES}={zvol}"),
        dataset.as_str(),
    ])?;
    let (ok, text) = run(Command::new("e2label").args([device, &format!("{label}-migrated")]))?;
    if !ok {
        // The dataset wins over the zvol's label anyway.
        info!("the zvol {zvol} keeps its label ({text}); the dataset replaces it all the same");
    }
    Ok(dataset)
}

/// Create the dataset, copy FROM into it, compare.
fn copy_to_new(dataset: &Dataset) -> Result<()> {
    let mut create = vec!["create"];
    create.extend(super::datasets::UPPER_LAYER_OPTIONS);
    create.push(dataset.as_str());
    zfs(&create)?;
    mount(&[
        "-t",
        "zfs",
        "-o",
        "zfsutil,nosuid,nodev,noexec",
        dataset.as_str(),
        TO,
    ])
    .context("mounting the new dataset")?;
    let from = format!("{FROM}/.");
    let (ok, text) = run(Command::new("cp").args(["-a", "--preserve=all", &from, TO]))?;
    if !ok {
        bail!("copying to {dataset} failed: {text}");
    }
    let compared = same_tree(Path::new(FROM), Path::new(TO))
        .with_context(|| format!("{dataset} is not the same as the zvol's file system"))?;
    info!("copied {compared} files and directories to {dataset}, and compared them");
    Ok(())
}

fn mount(args: &[&str]) -> Result<()> {
    let (ok, text) = run(Command::new("mount").args(args))?;
    if !ok {
        bail!("{}", text.replace('\n', " "));
    }
    Ok(())
}

fn zfs(args: &[&str]) -> Result<()> {
    let (ok, text) = run(Command::new("zfs").args(args))?;
    if !ok {
        bail!("zfs {}: {}", args.join(" "), text.replace('\n', " "));
    }
    Ok(())
}

fn exists(dataset: &Dataset) -> bool {
    run(Command::new("zfs").args(["list", "-H", "-o", "name", dataset.as_str()]))
        .is_ok_and(|(ok, _)| ok)
}

/// Whether `copy` holds what `original` does: the same names, each of the same type, mode,
/// owner, size, modification time, link count, symlink target, device number and contents.
/// How many entries were compared.
pub fn same_tree(original: &Path, copy: &Path) -> Result<usize> {
    let names = sorted_names(original)?;
    let copied = sorted_names(copy)?;
    if names != copied {
        bail!(
            "{} and {} hold different names",
            original.display(),
            copy.display()
        );
    }
    let mut count = 0;
    for name in names {
        let (a, b) = (original.join(&name), copy.join(&name));
        let (ma, mb) = (fs::symlink_metadata(&a)?, fs::symlink_metadata(&b)?);
        let same = ma.file_type() == mb.file_type()
            && ma.mode() == mb.mode()
            && (ma.uid(), ma.gid()) == (mb.uid(), mb.gid())
            && (ma.is_dir() || ma.size() == mb.size())
            && (ma.is_dir() || ma.nlink() == mb.nlink())
            && ma.mtime() == mb.mtime()
            && (!is_device(&ma) || ma.rdev() == mb.rdev());
        if !same {
            bail!("{} differs from the original", b.display());
        }
        if ma.file_type().is_symlink() && fs::read_link(&a)? != fs::read_link(&b)? {
            bail!("{} points elsewhere", b.display());
        }
        if ma.is_file() && !same_contents(&a, &b)? {
            bail!("{} has other contents", b.display());
        }
        count += 1;
        if ma.is_dir() {
            count += same_tree(&a, &b)?;
        }
    }
    Ok(count)
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

fn is_device(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() || meta.file_type().is_block_device()
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb)? == 0);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_compared_in_full() {
        let (a, b) = (crate::testing::tmp(), crate::testing::tmp());
        fs::create_dir_all(a.join("home/rw")).unwrap();
        fs::write(a.join("home/rw/f"), "contents").unwrap();
        std::os::unix::fs::symlink("f", a.join("home/rw/l")).unwrap();
        let status = Command::new("cp")
            .args(["-a", "--preserve=all"])
            .arg(format!("{}/.", a.display()))
            .arg(&b)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(same_tree(&a, &b).unwrap(), 4);
        fs::write(b.join("home/rw/f"), "Contents").unwrap();
        // Same size, other bytes; the time differs too, but contents alone must be caught.
        let set_time = Command::new("touch")
            .arg("-r")
            .arg(a.join("home/rw/f"))
            .arg(b.join("home/rw/f"))
            .status()
            .unwrap();
        assert!(set_time.success());
        assert!(same_tree(&a, &b).is_err());
        fs::write(b.join("home/rw/f"), "contents").unwrap();
        fs::write(b.join("extra"), "").unwrap();
        assert!(same_tree(&a, &b).is_err());
    }

    #[test]
    fn the_dataset_sits_beside_the_zvol() {
        let zvol = Dataset::parse("dpool/persistence").unwrap();
        assert_eq!(
            dataset_for(&zvol).unwrap().as_str(),
            "dpool/persistence-dataset"
        );
    }
}
