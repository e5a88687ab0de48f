//! `persistence-create`: in the initrd, when the volume wait found no persistence, what
//! `zlive create --yes --layout home` does, in the free space of the live medium's disk only,
//! saying each step on the console. The pool stays imported: the boot goes on with it.
//!
//! A pool an interrupted creation left (a power cut before its label: it still carries
//! [`recipe::UNFINISHED`] and no label) fills that free space; it is destroyed and made
//! again, as nothing ever used it.

use super::recipe::{self, Kind};
use super::{decide, make, say, show, Finish, Request};
use crate::exec;
use crate::zfs::keys;
use anyhow::{bail, Context, Result};
use std::process::Command;
use zlive::cmdline::CreateOnBoot;
use zlive::names::Dataset;

/// The pool's name, as `zlive create` names it by default.
const POOL: &str = "zlive";
/// Where an unfinished pool is imported read-only to be looked at.
const ALTROOT: &str = "/run/zlive/altroot-create";

/// What was made: the volume the label now names.
pub enum Made {
    Dataset(Dataset),
    /// ext4 on a zvol (an OpenZFS older than 2.2.2), found by its label's device link.
    Zvol,
}

/// Make persistence labelled `label` on the medium's disk, as `create` asks.
pub fn on_first_boot(create: CreateOnBoot, label: &str) -> Result<Made> {
    let request = Request {
        device: None,
        size: create.size.map(|bytes| bytes.to_string()),
        dataset: false,
        zvol: false,
        layout: "home".to_owned(),
        encrypt: create.encrypted,
        pool: POOL.to_owned(),
        label: label.to_owned(),
        wipe: false,
        yes: true,
    };
    let name = format!("{POOL}/persistence");
    say("zlive: no persistence found; persistence-create makes it in the free space of the live medium's disk.");
    let decided = match decide(&request) {
        Ok(decided) => decided,
        Err(refusal) => match take_back_unfinished(POOL)? {
            true => decide(&request)?,
            false => return Err(refusal),
        },
    };
    show(&request, &decided);
    let secret = match create.encrypted {
        true => {
            say("zlive: persistence-create=encrypted: choose the passphrase (asked twice).");
            Some(keys::ask_new(&name)?)
        }
        false => None,
    };
    make(&request, &decided, secret.as_ref(), Finish::KeepImported)?;
    say(&format!(
        "zlive: persistence is ready on pool {POOL}; the boot goes on with it. Later boots with the same menu entry use it and create nothing."
    ));
    Ok(match decided.kind {
        Kind::Dataset => Made::Dataset(Dataset::parse(&name).map_err(anyhow::Error::msg)?),
        Kind::Zvol => Made::Zvol,
    })
}

/// Take back what an interrupted creation left in the medium's free space, so that it can
/// start again: the pool `pool` when it carries [`recipe::UNFINISHED`] and no label and its
/// one device is the last partition of the medium's disk, destroyed; or a last partition
/// that holds nothing at all (cut off before its pool was made). The partition goes too.
/// Whether anything was taken back.
fn take_back_unfinished(pool: &str) -> Result<bool> {
    let medium = super::probe::medium();
    let super::rules::Medium::Disk(disk) = &medium else {
        return Ok(false);
    };
    let number = match unfinished_pool(pool, disk)? {
        Some(number) => {
            say(&format!(
                "zlive: pool {pool} on partition {number} of {disk} is what an interrupted persistence-create left (no label was ever set, nothing used it): destroying it and starting again."
            ));
            destroy(pool)?;
            number
        }
        None => match empty_last_partition(disk, &medium)? {
            Some(number) => {
                say(&format!(
                    "zlive: partition {number} of {disk} holds nothing, as an interrupted persistence-create leaves it: removing it and starting again."
                ));
                number
            }
            None => return Ok(false),
        },
    };
    remove_partition(disk, number)?;
    Ok(true)
}

/// The number of the partition the unfinished pool `pool` is on, when it is one.
fn unfinished_pool(pool: &str, disk: &str) -> Result<Option<usize>> {
    let listing = exec::stdout(Command::new("zpool").arg("import"));
    if !zlive::tool_output::listed_pools(&listing)
        .iter()
        .any(|p| p.name == pool)
    {
        return Ok(None);
    }
    let (imported, said) = exec::run(Command::new("zpool").args([
        "import",
        "-N",
        "-o",
        "readonly=on",
        "-R",
        ALTROOT,
        pool,
    ]))?;
    if !imported {
        bail!("pool {pool} is on this system's disks and could not be looked at: {said}");
    }
    let unfinished = unfinished_on(pool, disk);
    let _ = exec::run(Command::new("zpool").args(["export", pool]));
    unfinished
}

fn destroy(pool: &str) -> Result<()> {
    // -f: the interruption may have been on another machine (another host id).
    let (ok, said) = exec::run(Command::new("zpool").args(["import", "-N", "-f", pool]))?;
    if !ok {
        bail!("pool {pool} could not be imported to be destroyed: {said}");
    }
    let (ok, said) = exec::run(Command::new("zpool").args(["destroy", "-f", pool]))?;
    if !ok {
        bail!("zpool destroy {pool}: {said}");
    }
    Ok(())
}

/// The last partition of `disk` when it is not the only one and holds nothing `wipefs`
/// knows, and nothing uses it.
fn empty_last_partition(disk: &str, medium: &super::rules::Medium) -> Result<Option<usize>> {
    let parts = super::probe::partitions_of(&super::probe::kernel_name(disk)?);
    let [_, .., last] = parts.as_slice() else {
        return Ok(None);
    };
    let device = super::probe::device(&format!("/dev/{last}"), medium)?;
    Ok(
        match device.signatures.is_empty() && device.in_use.is_empty() {
            true => super::probe::partition_number(last),
            false => None,
        },
    )
}

/// Partition `number` of `disk` removed from its table and from the kernel, with every
/// signature on it cleared first: the free space must hold nothing blkid knows for the next
/// try.
fn remove_partition(disk: &str, number: usize) -> Result<()> {
    crate::early::blockdev::make_writable(disk)?;
    let node = super::probe::partition_node(disk, number, 5)?;
    let node = node.display().to_string();
    let (ok, said) = exec::run(Command::new("zpool").args(["labelclear", "-f", &node]))?;
    if !ok {
        // Its failure is said, not fatal: the label areas are zeroed below anyway.
        say(&format!(
            "zlive: zpool labelclear {node} did not clear it ({said}); its label areas are zeroed instead"
        ));
    }
    let (ok, said) = exec::run(Command::new("wipefs").args(["--all", "--quiet", &node]))?;
    if !ok {
        bail!("wipefs {node}: {said}");
    }
    zero_zfs_labels(&node).with_context(|| format!("zeroing the ZFS labels of {node}"))?;
    let number = number.to_string();
    let (ok, said) = exec::run(Command::new("sfdisk").args([
        "--delete",
        "--no-reread",
        "--no-tell-kernel",
        disk,
        &number,
    ]))?;
    if !ok {
        bail!("sfdisk --delete {disk} {number}: {said}");
    }
    let _ = exec::run(Command::new("partx").args(["--delete", "--nr", &number, disk]));
    // blkid reads the free space through the whole disk, whose cache may still hold the
    // pool's labels (seen under Debian 13: "the free space holds zfs_member").
    crate::early::blockdev::flush_buffers(disk)
        .with_context(|| format!("dropping the cached blocks of {disk}"))
}

/// The four ZFS label areas of `node` zeroed: two in its first 512 KiB, two in the last
/// 512 KiB of its size rounded down to 256 KiB. `wipefs` erases only the magic numbers blkid
/// reports, and blkid still finds a pool in what it leaves.
fn zero_zfs_labels(node: &str) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    const LABEL: u64 = 256 * 1024;
    let mut device = std::fs::OpenOptions::new().write(true).open(node)?;
    let size = device.seek(SeekFrom::End(0))?;
    let aligned = size - size % LABEL;
    let zeros = vec![0u8; 2 * LABEL as usize];
    let mut areas = vec![0];
    if aligned >= 4 * LABEL {
        areas.push(aligned - 2 * LABEL);
    }
    for offset in areas {
        let length = (2 * LABEL).min(size - offset) as usize;
        device.seek(SeekFrom::Start(offset))?;
        device.write_all(&zeros[..length])?;
    }
    device.sync_all()?;
    Ok(())
}

/// The partition number of the pool's one device when the pool, imported read-only, is an
/// unfinished one on the last partition of `disk`.
fn unfinished_on(pool: &str, disk: &str) -> Result<Option<usize>> {
    let marker = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        recipe::UNFINISHED,
        pool,
    ]))?;
    if marker.first().map(String::as_str) != Some("yes") {
        return Ok(None);
    }
    if !crate::zfs::datasets::labelled(&[pool.to_owned()]).is_empty() {
        return Ok(None);
    }
    let devices = crate::zfs::import::member_devices(pool);
    let [device] = devices.as_slice() else {
        return Ok(None);
    };
    let parts = super::probe::partitions_of(&super::probe::kernel_name(disk)?);
    let name = super::probe::kernel_name(device)?;
    Ok(match parts.last() == Some(&name) {
        true => super::probe::partition_number(&name),
        false => None,
    })
}

#[cfg(test)]
mod tests {
    use super::zero_zfs_labels;

    #[test]
    fn the_four_label_areas_are_zeroed_and_nothing_between() {
        const KIB: usize = 1024;
        // 3 MiB and 100 KiB: the end labels sit below the size rounded down to 256 KiB.
        let size = 3 * 1024 * KIB + 100 * KIB;
        let path = std::env::temp_dir().join(format!("zlive-labels-{}", std::process::id()));
        std::fs::write(&path, vec![0xffu8; size]).unwrap();
        zero_zfs_labels(path.to_str().unwrap()).unwrap();
        let after = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(after.len(), size);
        let aligned = 3 * 1024 * KIB;
        let zeroed = |from: usize, to: usize| after[from..to].iter().all(|b| *b == 0);
        let kept = |from: usize, to: usize| after[from..to].iter().all(|b| *b == 0xff);
        assert!(zeroed(0, 512 * KIB));
        assert!(kept(512 * KIB, aligned - 512 * KIB));
        assert!(zeroed(aligned - 512 * KIB, aligned));
        assert!(kept(aligned, size));
    }
}
