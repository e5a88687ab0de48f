//! `zlive clone --to DEVICE`: a second bootable persistent stick. The live medium's disk is
//! copied up to the end of its live partitions (the ISO, with its partition table and boot
//! loaders), the copy's table loses the stick's own pool partition, and a new pool in the
//! free space after it receives the newest state of the persistence (`zfs send`, raw when
//! encrypted). The pool keeps the stick's pool name on disk, so the clone boots as the stick
//! does.

use super::source::{self, Source};
use super::{send_flags, transfer};
use crate::cli::args::CloneArgs;
use crate::create::onto::{self, NewPool, Onto};
use crate::exec::run;
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;
use transfer::Sink;
use zlive::backup_plan::size_text;

/// `zlive clone --to DEVICE`.
pub fn clone(args: &CloneArgs) -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("zlive clone writes a disk: run it as root");
    }
    let refused = |why: anyhow::Error| {
        eprintln!("zlive clone: {why:#}");
        eprintln!("Nothing was written.");
        Ok(false)
    };
    let medium = match medium_disk() {
        Ok(disk) => disk,
        Err(why) => return refused(why),
    };
    let copy = match Copy::plan(&medium) {
        Ok(copy) => copy,
        Err(why) => return refused(why),
    };
    let source = source::find(args.volume.as_deref(), &args.label)?;
    let target = match onto::checked_device(&args.to) {
        Ok(device) if !device.whole_disk => {
            return refused(anyhow::anyhow!(
            "{} is a partition: a clone needs a whole disk (its boot loader and table are copied)",
            args.to
        ))
        }
        Ok(device) => device,
        Err(why) => return refused(why),
    };
    let needed = copy.bytes + volume_bytes(&source) * 11 / 10 + (128 << 20);
    if target.bytes < needed {
        return refused(anyhow::anyhow!(
            "{} has {}; the live medium's partitions and the persistence need about {}",
            target.path,
            size_text(target.bytes),
            size_text(needed)
        ));
    }
    let pool = source.dataset.pool().to_string();
    println!(
        "Cloning the live medium {medium} ({} of live partitions) and {} ({}) to {}",
        size_text(copy.bytes),
        source.dataset,
        if source.encrypted {
            "encrypted: sent raw, the clone asks for the same passphrase"
        } else {
            "its newest state"
        },
        target.path
    );
    if !args.yes && !crate::create::onto::confirmed()? {
        eprintln!("zlive clone: not confirmed; nothing was written.");
        return Ok(false);
    }
    copy.write_to(&target.path)?;
    let new = NewPool {
        onto: Onto::FreeSpaceOf(&target.path),
        pool: &pool,
        holding: format!("the newest state of {}", source.dataset),
        yes: true,
        command: "zlive clone",
    };
    let made = onto::make_filled(&new, &mut |here| fill(&source, here, &args.label))?;
    if made {
        println!(
            "{} is a clone of this stick: the live system and {}'s newest state, in pool {pool}. Boot it alone.",
            target.path, source.dataset
        );
    }
    Ok(made)
}

/// The whole disk the live medium is on.
fn medium_disk() -> Result<String> {
    use crate::create::onto::Medium;
    match crate::create::onto::medium() {
        Medium::Disk(disk) => Ok(disk),
        Medium::Optical => bail!("the live system runs from a CD or DVD: write its ISO to the new stick (dd), boot it, and zlive restore a backup there"),
        Medium::IsoFile => bail!("the live system runs from an ISO file (findiso=): copy that file instead"),
        Medium::InRam => bail!("the live system runs from RAM (toram) and its stick is gone"),
        Medium::None => bail!("no live medium is mounted (this is not a running live system)"),
    }
}

/// The part of the medium's disk that is copied.
struct Copy {
    disk: String,
    bytes: u64,
    /// The stick's own pool partitions, listed in the copied table.
    pool_partitions: Vec<usize>,
}

impl Copy {
    fn plan(disk: &str) -> Result<Copy> {
        let (_, json) = crate::create::onto::table(disk)?;
        let json = json.with_context(|| {
            format!("the live medium's disk {disk} has no partition table (not a hybrid ISO)")
        })?;
        let (bytes, pool_partitions) = crate::create::onto::medium_extent(&json)?;
        Ok(Copy {
            disk: disk.to_owned(),
            bytes,
            pool_partitions,
        })
    }

    /// Copy the bytes, flushed to the device, then take the pool's partitions out of the
    /// copy's table.
    fn write_to(&self, target: &str) -> Result<()> {
        println!(
            "zlive clone: copying {} of {} to {target}",
            size_text(self.bytes),
            self.disk
        );
        let mut from = std::fs::File::open(&self.disk)
            .with_context(|| format!("cannot read {}", self.disk))?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .open(target)
            .with_context(|| format!("cannot open {target}"))?;
        let mut buffer = vec![0u8; 4 << 20];
        let mut done = 0u64;
        let mut shown = std::time::Instant::now();
        while done < self.bytes {
            let want = buffer.len().min((self.bytes - done) as usize);
            from.seek(SeekFrom::Start(done))?;
            from.read_exact(&mut buffer[..want])
                .with_context(|| format!("reading {} at {done}", self.disk))?;
            to.write_all_at(&buffer[..want], done)
                .with_context(|| format!("writing {target} at {done}"))?;
            done += want as u64;
            if shown.elapsed().as_secs() >= 5 {
                eprintln!(
                    "zlive clone: {} of {}",
                    size_text(done),
                    size_text(self.bytes)
                );
                shown = std::time::Instant::now();
            }
        }
        to.flush()?;
        to.sync_all()?;
        drop(to);
        if !self.pool_partitions.is_empty() {
            let numbers: Vec<String> = self.pool_partitions.iter().map(usize::to_string).collect();
            let (ok, said) = run(Command::new("sfdisk")
                .args(["--no-reread", "--no-tell-kernel", "--delete", target])
                .args(&numbers))?;
            if !ok {
                bail!("sfdisk --delete {target}: {said}");
            }
        }
        // The kernel learns the copied table (the disk is not in use).
        let (ok, said) = run(Command::new("partx").args(["--update", target]))?;
        if !ok {
            let (added, also) = run(Command::new("partx").args(["--add", target]))?;
            if !added {
                bail!("partx could not tell the kernel of {target}'s partitions: {said} {also}");
            }
        }
        Ok(())
    }
}

/// What the volume holds, for the room the clone needs.
fn volume_bytes(source: &Source) -> u64 {
    crate::exec::lines(Command::new("zfs").args([
        "get",
        "-Hp",
        "-o",
        "value",
        "referenced",
        source.dataset.as_str(),
    ]))
    .ok()
    .and_then(|l| l.first()?.parse().ok())
    .unwrap_or(0)
}

/// Receive the newest state into `pool` as `POOL/persistence`, named and labelled as the
/// stick's. The snapshot taken for it goes from the stick again: the stick is left as it was.
fn fill(source: &Source, pool: &str, label: &str) -> Result<()> {
    let snapshot = source::snapshot(source, source::BACKUP_KIND)?;
    let leaf = source
        .dataset
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or("persistence");
    let volume = format!("{pool}/{leaf}");
    println!("zlive clone: sending {snapshot} to {volume}");
    let mut send = Command::new("zfs");
    send.arg("send")
        .args(send_flags(source.encrypted))
        .arg(&snapshot);
    let mut receive = Command::new("zfs");
    receive
        .args(["receive", "-u"])
        .args(onto::hidden_volume_options(source.zvol))
        .arg(&volume);
    let sent = transfer::transfer(send, Sink::Receiver(receive), None);
    source::drop_unsent(&snapshot);
    sent.with_context(|| format!("sending {snapshot} to {volume}"))?;
    onto::reveal(&volume, source.zvol)?;
    if !source.zvol {
        onto::label(&volume, label)?;
    }
    Ok(())
}
