//! `zlive find-medium`: find and mount the live medium when no mount unit can: without
//! `live-media=` (a scan of the block devices, as live-boot does, but without writing to any
//! of them and without taking the wrong one), with `findiso=` (the medium is an ISO file on
//! some device's file system) and with `toram` (the image is copied into RAM and the medium
//! released; see `toram.rs`).
//!
//! Only file systems a medium can have are mounted (their type as udev's blkid saw it, else
//! probed): read-only, without journal replay, with the block device itself made read-only
//! first (see `blockdev.rs`), and `nodev,nosuid,noexec`. A medium carrying this initrd's
//! live-uuid (`.disk/live-uuid*`, as live-build writes it) is preferred over any other with
//! an image, and the scan stops at it; those files are read as a stranger's stick may have
//! made them: no symlink followed, no FIFO or device opened, at most 4 KiB.

use super::blockdev::{disk_dir, disk_name, partitions_pending, ReadOnly};
use super::toram;
use crate::exec::{self, run, umount};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use zlive::cmdline::{MediumSpec, Removable};
use zlive::paths::{FINDISO_DIR, IMAGE_NAME, MEDIUM_DIR};
use zlive::plan::Plan;

const DEFAULT_MEDIUM_WAIT: u64 = 60;
/// How long to keep looking for the medium with this initrd's live-uuid once others with an
/// image were found (a slow USB stick), before taking one of those.
const MATCH_GRACE: Duration = Duration::from_secs(10);
/// How long before the medium wait ends a whole disk is mounted even though its table lists
/// partitions the kernel never added.
const PARTITION_WAIT: Duration = Duration::from_secs(5);
/// The initrd's live-uuid, installed by the dracut module from the build host.
const LIVE_UUID_FILE: &str = "/etc/zlive/live-uuid";

/// What to look for, from the plan.
struct Wanted<'a> {
    /// The image, relative to the medium's root.
    image: String,
    /// `findiso=`: the ISO file, relative to its device's root.
    iso: Option<&'a str>,
    uuid: Option<String>,
}

/// Block devices that may hold the medium, in name order: the named one, or every one but
/// zvols, loops and RAM disks, only removable (USB) ones with `live-media=removable(-usb)`.
fn candidates(plan: &Plan) -> Vec<String> {
    if let MediumSpec::Device(device) = &plan.cmdline.medium {
        return match Path::new(device).exists() {
            true => vec![device.clone()],
            false => Vec::new(),
        };
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| {
        !["zd", "loop", "ram", "zram", "fd"]
            .iter()
            .any(|p| n.starts_with(p))
    });
    names.retain(|n| accepts(plan.cmdline.removable, &disk_dir(n)));
    // Each disk's partitions before the disk itself. A hybrid ISO's first partition carries
    // the medium as its whole disk does; mounting the disk would claim all of it, and no
    // other partition on it (the persistence pool's, after the ISO) could then be opened
    // exclusively, as ZFS and mount do.
    names.sort_by_key(|n| {
        let disk = disk_name(n);
        (disk.clone(), disk == *n, n.clone())
    });
    names.into_iter().map(|n| format!("/dev/{n}")).collect()
}

/// Whether a disk (its sysfs directory) may hold the medium under `live-media=`.
fn accepts(removable: Removable, disk: &Path) -> bool {
    let is_removable =
        || std::fs::read_to_string(disk.join("removable")).is_ok_and(|flag| flag.trim() == "1");
    // A USB disk's sysfs path runs through its USB port: …/usb2/2-1/2-1:1.0/host2/…
    let on_usb = || {
        disk.components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with("usb"))
    };
    match removable {
        Removable::Any => true,
        Removable::Removable => is_removable(),
        Removable::Usb => is_removable() && on_usb(),
    }
}

/// Read-only mount options that also keep a journalling file system from replaying its
/// journal (a dirty internal disk, a hibernated system); `None`: not a medium's file system.
pub fn probe_options(fstype: &str) -> Option<&'static str> {
    match fstype {
        "iso9660" | "udf" | "vfat" | "exfat" | "ext2" | "ntfs3" => {
            Some("ro,noatime,nodev,nosuid,noexec")
        }
        "ext3" | "ext4" => Some("ro,noatime,noload,nodev,nosuid,noexec"),
        "xfs" => Some("ro,noatime,norecovery,nodev,nosuid,noexec"),
        "btrfs" => Some("ro,noatime,rescue=nologreplay,nodev,nosuid,noexec"),
        _ => None,
    }
}

/// A device with the image.
#[derive(Debug)]
struct Medium {
    /// The block device.
    device: String,
    /// What the journal calls it: the device, or the ISO file and its device.
    shown: String,
    fstype: String,
    /// Whether it carries the initrd's live-uuid (`None`: the initrd has none).
    matches: Option<bool>,
    /// Its devices, read-only while they are mounted.
    read_only: Vec<ReadOnly>,
}

/// Mount `device` read-only at `at` if its file system may be a medium: its type, and the
/// device kept read-only while the mount lasts.
fn mount(device: &str, at: &str) -> Result<Option<(String, ReadOnly)>> {
    let fstype = fs_type(device);
    let Some((fstype, options)) = fstype.and_then(|t| probe_options(&t).map(|o| (t, o))) else {
        return Ok(None);
    };
    let read_only = match ReadOnly::set(device) {
        Ok(r) => r,
        Err(e) => {
            warn!("not looking at {device}: {e:#}, and a read-only mount alone may write to it");
            return Ok(None);
        }
    };
    let (ok, _) = run(Command::new("mount").args(["-t", &fstype, "-o", options, device, at]))?;
    Ok(ok.then_some((fstype, read_only)))
}

/// A device's file system type: as udev's blkid found it, else as blkid finds it now (udev
/// has not handled the device yet).
fn fs_type(device: &str) -> Option<String> {
    crate::udev::entry_of(device)
        .and_then(|entry| {
            zlive::tool_output::udev_property(&entry, "ID_FS_TYPE").map(str::to_owned)
        })
        .or_else(|| exec::probe(device, "TYPE"))
}

/// Whether the medium mounted at `root` carries `uuid` in one of its `.disk/live-uuid*` files.
fn carries(root: &Path, uuid: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(root.join(".disk")) else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("live-uuid"))
        .take(64)
        .any(|e| small_file(&e.path()).is_some_and(|t| t.trim() == uuid))
}

/// A regular file of at most 4 KiB, as text; `None` for anything else. Opened without
/// following a symlink and without blocking (a FIFO), and checked to be a regular file before
/// it is read (`/dev/zero` behind a symlink, a device node).
pub fn small_file(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const MAX: u64 = 4096;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX {
        return None;
    }
    let mut text = String::new();
    file.take(MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

/// What mounting a candidate showed.
enum Opened {
    /// Not a medium's file system, or no image (no ISO file) on it; nothing left mounted.
    Nothing,
    /// The medium is mounted at MEDIUM_DIR (and its ISO file's device at FINDISO_DIR).
    Medium(Medium),
    /// The ISO file is there but is no live medium: why. Nothing left mounted.
    BrokenIso(String),
}

/// Mount a candidate and the medium on it; leaves them mounted only if it is a medium.
fn open(device: &str, wanted: &Wanted) -> Result<Opened> {
    let shown;
    let fstype;
    let read_only;
    match wanted.iso {
        None => {
            let Some((t, r)) = mount(device, MEDIUM_DIR)? else {
                return Ok(Opened::Nothing);
            };
            (shown, fstype, read_only) = (device.to_owned(), t, r);
        }
        Some(iso) => {
            let Some((_, r)) = mount(device, FINDISO_DIR)? else {
                return Ok(Opened::Nothing);
            };
            read_only = r;
            let file = format!("{FINDISO_DIR}/{}", iso.trim_start_matches('/'));
            if !Path::new(&file).is_file() {
                umount(FINDISO_DIR)?;
                return Ok(Opened::Nothing);
            }
            let (ok, text) = run(Command::new("mount").args([
                "-t",
                "iso9660",
                "-o",
                "loop,ro,noatime,nodev,nosuid,noexec",
                &file,
                MEDIUM_DIR,
            ]))?;
            if !ok {
                umount(FINDISO_DIR)?;
                let why = format!("findiso={iso} on {device} is not an ISO 9660 image: {text}");
                return Ok(Opened::BrokenIso(why));
            }
            (shown, fstype) = (format!("{file} (on {device})"), "iso9660".to_owned());
        }
    }
    if !Path::new(MEDIUM_DIR).join(&wanted.image).is_file() {
        umount(MEDIUM_DIR)?;
        if let Some(iso) = wanted.iso {
            umount(FINDISO_DIR)?;
            let why = format!("findiso={iso} on {device} holds no {}", wanted.image);
            return Ok(Opened::BrokenIso(why));
        }
        return Ok(Opened::Nothing);
    }
    Ok(Opened::Medium(Medium {
        device: device.to_owned(),
        shown,
        fstype,
        matches: wanted
            .uuid
            .as_deref()
            .map(|u| carries(Path::new(MEDIUM_DIR), u)),
        read_only: vec![read_only],
    }))
}

fn close(wanted: &Wanted) -> Result<()> {
    umount(MEDIUM_DIR)?;
    if wanted.iso.is_some() {
        umount(FINDISO_DIR)?;
    }
    Ok(())
}

/// Every candidate with the image, each mounted and unmounted again (by its device), and
/// why each ISO file found is not a medium. While `patient`, a whole disk whose partitions
/// the kernel has yet to list is left for the next look.
fn look(plan: &Plan, wanted: &Wanted, patient: bool) -> Result<(Vec<Medium>, Vec<String>)> {
    let (mut found, mut broken) = (Vec::new(), Vec::new());
    // The disks one of whose partitions carries the medium: the disk itself is not mounted
    // then, not even to look. A mount claims the whole disk, and the pool import, running
    // beside this scan, could not open a persistence partition on it in the meantime.
    let mut by_partition: Vec<String> = Vec::new();
    for device in candidates(plan) {
        let name = device.trim_start_matches("/dev/");
        if by_partition.iter().any(|d| d == name) {
            continue;
        }
        if patient && disk_name(name) == name && partitions_pending(name) {
            continue;
        }
        match open(&device, wanted)? {
            Opened::Nothing => {}
            Opened::BrokenIso(why) => broken.push(why),
            Opened::Medium(m) => {
                close(wanted)?;
                let disk = disk_name(name);
                if disk != name {
                    by_partition.push(disk);
                }
                let ours = m.matches == Some(true);
                found.push(m);
                // The medium with this initrd's live-uuid: no other disk is mounted, not
                // even to look.
                if ours {
                    break;
                }
            }
        }
    }
    Ok((found, broken))
}

/// The medium to use: the first carrying the initrd's live-uuid; else, once `patient` is
/// over (or when the initrd has no live-uuid), the first with the image.
fn choose(found: &[Medium], patient: bool) -> Option<&Medium> {
    found
        .iter()
        .find(|m| m.matches == Some(true))
        .or_else(|| found.first().filter(|m| m.matches.is_none() || !patient))
}

fn describe(found: &[Medium]) -> String {
    found
        .iter()
        .map(|m| match m.matches {
            Some(true) => format!("{} (this initrd's live-uuid)", m.shown),
            Some(false) => format!("{} (another live-uuid, or none)", m.shown),
            None => m.shown.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn find_medium(plan: &Plan) -> Result<()> {
    let wait = Duration::from_secs(
        plan.cmdline
            .medium_timeout
            .map(u64::from)
            .unwrap_or(DEFAULT_MEDIUM_WAIT),
    );
    let wanted = Wanted {
        image: format!("{}/{IMAGE_NAME}", plan.cmdline.media_path),
        iso: plan.cmdline.findiso.as_deref(),
        uuid: std::fs::read_to_string(LIVE_UUID_FILE)
            .ok()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty()),
    };
    std::fs::create_dir_all(MEDIUM_DIR)?;
    if wanted.iso.is_some() {
        std::fs::create_dir_all(FINDISO_DIR)?;
    }
    let started = Instant::now();
    let mut first_seen: Option<Instant> = None;
    while started.elapsed() < wait {
        let (found, broken) = look(plan, &wanted, started.elapsed() + PARTITION_WAIT < wait)?;
        if !found.is_empty() {
            let seen = *first_seen.get_or_insert_with(Instant::now);
            let patient =
                seen.elapsed() < MATCH_GRACE && started.elapsed() + Duration::from_secs(1) < wait;
            if let Some(m) = choose(&found, patient) {
                take(m, &found, &wanted)?;
                return match plan.cmdline.toram {
                    true => toram::copy_and_release(plan),
                    false => Ok(()),
                };
            }
        } else if !broken.is_empty() {
            // The named ISO file is there and is not a medium: waiting will not change that.
            for why in &broken {
                error!("{why}");
            }
            bail!("the ISO file named by findiso= is not a live medium");
        }
        sleep(Duration::from_secs(1));
    }
    let what = match wanted.iso {
        Some(iso) => format!("the ISO file {iso} (findiso=)"),
        None => wanted.image.clone(),
    };
    let hint = match (&plan.cmdline.medium, plan.cmdline.removable) {
        (MediumSpec::Device(d), _) => format!("live-media={d} names the device; is it there?"),
        (MediumSpec::Scan, Removable::Any) => {
            "give the medium with live-media=DEVICE or live-media=LABEL=…".to_owned()
        }
        (MediumSpec::Scan, _) => {
            "only removable disks were looked at (live-media=removable…)".to_owned()
        }
    };
    error!(
        "no device with {what} found within {} s; {hint}",
        wait.as_secs()
    );
    bail!("live medium not found")
}

/// Mount the chosen medium again, to keep.
fn take(m: &Medium, found: &[Medium], wanted: &Wanted) -> Result<()> {
    match open(&m.device, wanted)? {
        // Its devices stay read-only while the live system runs from them, but for a whole
        // disk with partitions (a stick written from a hybrid ISO): its flag would make its
        // partitions read-only too, and one of them may hold the persistence pool. Its mount
        // is read-only all the same.
        Opened::Medium(kept) => {
            for device in kept.read_only {
                match device.has_partitions() {
                    true => drop(device),
                    false => device.keep(),
                }
            }
        }
        _ => bail!("the live medium {} went away while it was chosen", m.shown),
    }
    if found.len() > 1 {
        warn!("live media found: {}; using {}", describe(found), m.shown);
    }
    if m.matches == Some(false) {
        warn!("no medium carries this initrd's live-uuid (.disk/live-uuid*); using {}, the first with {}: it may not be the image this initrd was built for", m.shown, wanted.image);
    }
    info!(
        "live medium found on {} ({}, {})",
        m.shown, m.fstype, wanted.image
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(device: &str, matches: Option<bool>) -> Medium {
        Medium {
            device: device.into(),
            shown: device.into(),
            fstype: "ext4".into(),
            matches,
            read_only: Vec::new(),
        }
    }

    #[test]
    fn the_matching_medium_wins() {
        let found = [m("/dev/vdb", Some(false)), m("/dev/vdc", Some(true))];
        assert_eq!(choose(&found, true).unwrap().device, "/dev/vdc");
        let strangers = [m("/dev/vdb", Some(false))];
        assert!(
            choose(&strangers, true).is_none(),
            "waits for the matching one a little"
        );
        assert_eq!(choose(&strangers, false).unwrap().device, "/dev/vdb");
        let no_uuid = [m("/dev/vdb", None), m("/dev/vdc", None)];
        assert_eq!(choose(&no_uuid, true).unwrap().device, "/dev/vdb");
        assert!(describe(&found).contains("/dev/vdc (this initrd's live-uuid)"));
    }

    #[test]
    fn only_media_file_systems_are_probed_and_never_replayed() {
        assert_eq!(
            probe_options("ext4"),
            Some("ro,noatime,noload,nodev,nosuid,noexec")
        );
        assert!(probe_options("xfs").unwrap().contains("norecovery"));
        assert!(probe_options("btrfs").unwrap().contains("nologreplay"));
        for t in ["iso9660", "vfat", "ext2", "ext4", "xfs", "btrfs", "udf"] {
            let o = probe_options(t).unwrap();
            assert!(
                o.starts_with("ro,") && o.ends_with(",nodev,nosuid,noexec"),
                "{t}: {o}"
            );
        }
        for not_a_medium in ["zfs_member", "crypto_LUKS", "swap", "LVM2_member", ""] {
            assert_eq!(probe_options(not_a_medium), None, "{not_a_medium}");
        }
    }

    /// A stranger's stick cannot hang the scan or run it out of memory through its
    /// live-uuid files: a symlink to /dev/zero, a FIFO, a huge file are each "not this
    /// medium", at once.
    #[test]
    fn hostile_live_uuid_files_are_not_read() {
        let uuid = "5a11ce00-7e57-4000-8000-000000000001";
        let medium = |name: &str| {
            let root = crate::testing::tmp().join(name);
            std::fs::create_dir_all(root.join(".disk")).unwrap();
            root
        };
        let started = std::time::Instant::now();
        let zero = medium("zero");
        std::os::unix::fs::symlink("/dev/zero", zero.join(".disk/live-uuid-zero")).unwrap();
        assert!(!carries(&zero, uuid));
        let fifo = medium("fifo");
        nix::unistd::mkfifo(
            &fifo.join(".disk/live-uuid-fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(!carries(&fifo, uuid));
        let big = medium("big");
        std::fs::write(
            big.join(".disk/live-uuid-big"),
            format!("{uuid}{}", " ".repeat(8192)),
        )
        .unwrap();
        assert!(!carries(&big, uuid));
        let linked = medium("linked");
        std::fs::write(linked.join("real"), uuid).unwrap();
        std::os::unix::fs::symlink("../real", linked.join(".disk/live-uuid-x")).unwrap();
        assert!(!carries(&linked, uuid), "a symlink is not followed");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let good = medium("good");
        std::fs::write(good.join(".disk/live-uuid-zlive"), format!("{uuid}\n")).unwrap();
        assert!(carries(&good, uuid));
    }

    #[test]
    fn removable_and_usb_disks_by_their_sysfs_directory() {
        let root = crate::testing::tmp();
        let disk = |path: &str, flag: &str| {
            let dir = root.join(path);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("removable"), flag).unwrap();
            dir
        };
        let virtio = disk("devices/pci0000:00/0000:00:04.0/virtio2/block/vda", "0\n");
        let usb = disk(
            "devices/pci0000:00/0000:00:05.0/usb2/2-1/2-1:1.0/host2/target2:0:0/2:0:0:0/block/sda",
            "1\n",
        );
        let cd = disk(
            "devices/pci0000:00/0000:00:01.1/ata2/host1/target1:0:0/1:0:0:0/block/sr0",
            "1\n",
        );
        for (removable, accepted) in [
            (Removable::Any, [true, true, true]),
            (Removable::Removable, [false, true, true]),
            (Removable::Usb, [false, true, false]),
        ] {
            let got = [&virtio, &usb, &cd].map(|d| accepts(removable, d));
            assert_eq!(got, accepted, "{removable:?}");
        }
    }
}
