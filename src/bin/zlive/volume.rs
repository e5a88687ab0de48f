//! `zlive wait-volume NAME`: wait, bounded, for a persistence volume's device after the
//! imports; refuse a label two devices carry; warn when a read-only boot will show a volume
//! as it was before its journal; and withdraw a volume a label search did not find.

use crate::exec;
use crate::pid1::Pid1;
use crate::zvols;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use zlive::plan::{Import, Plan, Volume, VolumeKind};
use zlive::tool_output::ZvolRow;

/// How long a volume's device may take to appear after the imports.
const VOLUME_WAIT: Duration = Duration::from_secs(15);

/// The volume a unit instance names.
pub fn named<'p>(plan: &'p Plan, name: &str) -> Result<&'p Volume> {
    plan.volumes
        .iter()
        .find(|v| v.name == name)
        .with_context(|| format!("no persistence volume named {name} on the kernel command line"))
}

pub fn wait_volume(plan: &Plan, name: &str) -> Result<()> {
    let volume = named(plan, name)?;
    // Locked ZFS encryption roots first: their zvols appear only with the key loaded. Only
    // those of pools the command line names: a scan asked for its pools' keys itself, bounded.
    let zvols = candidate_zvols(volume);
    let named_pools = named_pools(plan);
    let locked: Vec<String> = crate::keys::locked_roots(&zvols)
        .into_iter()
        .filter(|root| {
            named_pools
                .iter()
                .any(|p| root.split('/').next() == Some(p.as_str()))
        })
        .collect();
    crate::keys::unlock(&locked)?;
    let reloaded;
    let plan = if plan.encryption.luks && crate::luks::open(volume, &zvols)? {
        // The generator now knows the LUKS containers: a named volume's device changed.
        reloaded = crate::current_plan()?;
        &reloaded
    } else {
        plan
    };
    let volume = named(plan, name)?;
    let started = Instant::now();
    if let Some(view) = plan
        .snapshots
        .view
        .as_ref()
        .filter(|v| v.device() == volume.device)
    {
        if let Err(e) = crate::snapshots::show(view) {
            error!(ZLIVE_VOLUME = volume.describe().as_str(), "persistence-snapshot={view}: {e:#}. Booting without persistence; the volume is untouched.");
            bail!("snapshot {view} not found");
        }
    }
    // Decide from what the imported pools hold, at once: no waiting for a device that no
    // pool has.
    if !held(volume) {
        return not_found(plan, volume, started);
    }
    // udev makes the link a moment after it probed the device.
    while started.elapsed() < VOLUME_WAIT {
        if Path::new(&volume.device).exists() {
            return found(plan, volume, started);
        }
        sleep(Duration::from_millis(50));
    }
    not_found(plan, volume, started)
}

/// Whether the imported pools hold the volume: the zvol named exists, or a zvol (or an opened
/// LUKS container of zlive's) has a file system with the label.
fn held(volume: &Volume) -> bool {
    match &volume.kind {
        VolumeKind::Zvol(d) => {
            exec::run(Command::new("zfs").args(["list", "-H", "-o", "name", d.as_str()]))
                .is_ok_and(|(ok, _)| ok)
        }
        VolumeKind::Label(label) => {
            let present = zvols::wait_for_devices(&zvols::list(&[]), zvols::DEVICE_WAIT);
            let mut devices: Vec<String> =
                present.iter().map(|r| zvols::node(&r.dataset)).collect();
            devices.extend(mapped_devices());
            zvols::probe_devices(devices)
                .into_iter()
                .flatten()
                .any(|p| p.label.as_deref() == Some(label.as_str()))
        }
    }
}

/// zlive's opened LUKS containers.
fn mapped_devices() -> Vec<String> {
    std::fs::read_dir("/dev/mapper")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(zlive::plan::DM_PREFIX))
        .map(|n| format!("/dev/mapper/{n}"))
        .collect()
}

/// The zvols that may hold the volume, locked or in a LUKS container: the one named; for a
/// label not visible yet, every zvol of the imported pools (after a scan, only the pools that
/// may hold it are still imported).
fn candidate_zvols(volume: &Volume) -> Vec<ZvolRow> {
    match &volume.kind {
        VolumeKind::Zvol(d) => zvols::list(&[d.to_string()])
            .into_iter()
            .filter(|r| r.dataset == *d)
            .collect(),
        VolumeKind::Label(_) if Path::new(&volume.device).exists() => Vec::new(),
        VolumeKind::Label(_) => zvols::list(&[]),
    }
}

/// The pools the command line names.
fn named_pools(plan: &Plan) -> Vec<String> {
    plan.imports
        .iter()
        .filter_map(|i| match i {
            Import::Named(p) => Some(p.to_string()),
            Import::Scan => None,
        })
        .collect()
}

fn found(plan: &Plan, volume: &Volume, started: Instant) -> Result<()> {
    let name = volume.describe();
    info!(
        ZLIVE_VOLUME = name.as_str(),
        OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
        "persistence volume {name} is {} ({:.1} s after the import)",
        volume.device,
        started.elapsed().as_secs_f64()
    );
    if let VolumeKind::Label(label) = &volume.kind {
        if !plan.encryption.plain && !is_mapped(&volume.device) {
            info!(
                ZLIVE_VOLUME = name.as_str(),
                "persistence volume {name}: the file system labelled '{label}' is not in a LUKS container, and persistence-encryption= accepts only LUKS volumes; not using it"
            );
            return stand_down(volume, plan.read_only);
        }
        let devices = labelled(label)?;
        if devices.len() > 1 {
            error!(
                ZLIVE_VOLUME = name.as_str(),
                OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
                "persistence volume {name}: {} devices carry the label '{label}': {}. A clone or a received backup has the same file system label, and zlive cannot tell which one holds your data; it uses neither. Name the volume with persistence-zvol=POOL/VOLUME, or relabel the copy (e2label DEVICE NEWLABEL).",
                devices.len(),
                devices.join(", ")
            );
            bail!("the label {label} is on several devices");
        }
    }
    if !plan.read_only {
        snapshot_before_open(plan, volume)?;
    }
    if matches!(volume.kind, VolumeKind::Label(_)) {
        record_checked(volume)?;
    }
    // The device may have gone and come back while the pools were imported (a scan imports
    // read-only first, a rollback swaps the zvol): queue the mount again, so that it and its
    // fsck start from the device as it is now.
    let _: zbus::zvariant::OwnedObjectPath = crate::pid1::Pid1::connect()?
        .manager("StartUnit", &(volume.mount_unit.as_str(), "replace"))
        .with_context(|| format!("Failed to queue {} again", volume.mount_unit))?;
    if plan.read_only && ext4_needs_recovery(&volume.device).unwrap_or(false) {
        warn!(
            ZLIVE_VOLUME = name.as_str(),
            OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
            "persistence volume {name} was not cleanly unmounted (a power cut?), and persistence-read-only mounts it without replaying its journal: this boot shows it as it was before its last changes. Boot once without persistence-read-only to recover them."
        );
    }
    Ok(())
}

/// Record which device the label led to once it was found on exactly one: the generator uses
/// the volume only if that is the device mounted (`paths::CHECKED_DIR`).
fn record_checked(volume: &Volume) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(&volume.device)
        .with_context(|| format!("Failed to stat {}", volume.device))?
        .rdev();
    let number = format!(
        "{}:{}\n",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    std::fs::create_dir_all(zlive::paths::CHECKED_DIR)?;
    let path = format!("{}/{}", zlive::paths::CHECKED_DIR, volume.name);
    std::fs::write(&path, number).with_context(|| format!("Failed to write {path}"))
}

/// The boot's snapshot, or a rollback or reset, before the volume is opened. A LUKS container
/// is closed around a rollback (the zvol under it is swapped) and opened again with the
/// passphrase systemd-cryptsetup keeps in the kernel keyring.
fn snapshot_before_open(plan: &Plan, volume: &Volume) -> Result<()> {
    let name = volume.describe();
    let container = plan.luks.iter().find(|c| {
        is_mapped(&volume.device)
            && std::fs::canonicalize(&c.mapped).ok() == std::fs::canonicalize(&volume.device).ok()
    });
    let closing = container.filter(|_| plan.snapshots.rollback.is_some());
    // Only a LUKS container closed for a rollback needs PID 1.
    let mut pid1 = match closing {
        Some(_) => Some(crate::pid1::Pid1::connect()?),
        None => None,
    };
    if let (Some(c), Some(pid1)) = (closing, pid1.as_mut()) {
        let _: zbus::zvariant::OwnedObjectPath =
            pid1.manager("StopUnit", &(c.unit.as_str(), "replace"))?;
        let started = Instant::now();
        while Path::new(&c.mapped).exists() && started.elapsed() < VOLUME_WAIT {
            sleep(Duration::from_millis(100));
        }
    }
    // The device a LUKS volume is found at is known before closing; the snapshots work on
    // its container either way.
    let device = container.map_or(volume.device.clone(), |c| c.mapped.clone());
    let swapped = crate::snapshots::before_open(plan, &name, &device);
    if let (Some(c), Some(pid1)) = (closing, pid1.as_mut()) {
        pid1.start_and_wait(&c.unit)?;
    }
    if swapped {
        let started = Instant::now();
        while !Path::new(&volume.device).exists() && started.elapsed() < VOLUME_WAIT {
            sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn not_found(plan: &Plan, volume: &Volume, started: Instant) -> Result<()> {
    let pools: Vec<String> = plan
        .imports
        .iter()
        .map(|i| match i {
            Import::Named(p) => p.to_string(),
            Import::Scan => "every pool found".to_owned(),
        })
        .collect();
    let advice = match &volume.kind {
        VolumeKind::Zvol(d) => format!(
            "the pool has no volume {d} ('zfs list -t volume' shows what it has), or the volume is hidden (volmode=none) or its key is not loaded"
        ),
        VolumeKind::Label(l) => format!(
            "no volume with an ext4 file system labelled '{l}' exists; create one with 'zfs create -V 1G POOL/persistence' and 'mkfs.ext4 -L {l} /dev/zvol/POOL/persistence', or name the volume with persistence-zvol="
        ),
    };
    let story = format!(
        "persistence volume {} ({}) is not there ({:.1} s after importing {}): {advice}. Booting without it; zlive wrote nothing to the pool's volumes.",
        volume.describe(),
        volume.device,
        started.elapsed().as_secs_f64(),
        pools.join(", ")
    );
    let fields = (volume.describe(), volume.mount_unit.as_str());
    if volume.required() {
        error!(
            ZLIVE_VOLUME = fields.0.as_str(),
            OBJECT_SYSTEMD_UNIT = fields.1,
            "{story}"
        );
        bail!("persistence volume {} not found", volume.describe())
    }
    // A label search that finds nothing is a normal first boot: stand the volume's mount
    // down without failing anything.
    info!(
        ZLIVE_VOLUME = fields.0.as_str(),
        OBJECT_SYSTEMD_UNIT = fields.1,
        "{story}"
    );
    stand_down(volume, plan.read_only)
}

/// Withdraw a volume nobody will find: cancel the queued start jobs of its mount, its fsck
/// and its device (dependents first, so nothing fails for want of them). Otherwise the
/// mount would wait for the device until the device's job timeout, and the reload with it.
fn stand_down(volume: &Volume, read_only: bool) -> Result<()> {
    let fsck = volume.fsck_unit();
    let mut units = vec![volume.mount_unit.as_str()];
    if !read_only {
        units.push(&fsck);
    }
    units.push(&volume.device_unit);
    let cancelled = Pid1::connect()?.cancel_start_jobs(&units)?;
    info!(
        ZLIVE_VOLUME = volume.describe().as_str(),
        "persistence volume {} is off for this boot (not an error: persistence is used when it is there); cancelled the waits of {}",
        volume.describe(),
        if cancelled.is_empty() { "nothing".to_owned() } else { cancelled.join(", ") }
    );
    Ok(())
}

/// The devices whose file system carries `label`, named by their zvol where they are one.
/// The imported pools' zvols are waited for first (bounded, all together): udev may not have
/// made them all yet, and a copy of the volume must not be missed.
fn labelled(label: &str) -> Result<Vec<String>> {
    let rows = zvols::list(&[]);
    zvols::wait_for_devices(&rows, zvols::DEVICE_WAIT);
    let zvols: Vec<String> = rows.iter().map(|r| r.dataset.to_string()).collect();
    // blkid probes the devices themselves (no cache), not udev's idea of them.
    let (_, text) = exec::run(
        Command::new("blkid")
            .args(["-c", "/dev/null", "-o", "device", "-t"])
            .arg(format!("LABEL={label}")),
    )?;
    let mut devices: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/"))
        .map(str::to_owned)
        .collect();
    devices.sort();
    devices.dedup();
    Ok(devices.iter().map(|d| name_device(d, &zvols)).collect())
}

/// Whether a device node is a device-mapper device (an opened LUKS container).
fn is_mapped(device: &str) -> bool {
    std::fs::canonicalize(device).is_ok_and(|p| p.to_string_lossy().starts_with("/dev/dm-"))
}

/// `/dev/zd16 (dpool/backup)` for a zvol, the device alone otherwise.
fn name_device(device: &str, zvols: &[String]) -> String {
    let target = std::fs::canonicalize(device).ok();
    zvols
        .iter()
        .find(|z| std::fs::canonicalize(format!("/dev/zvol/{z}")).ok() == target)
        .map_or_else(|| device.to_owned(), |z| format!("{device} ({z})"))
}

/// Whether an ext4 file system's journal must be replayed (the superblock's RECOVER flag):
/// read-only mounts skip that (`noload`) and show the file system as it was before.
fn ext4_needs_recovery(device: &str) -> Result<bool> {
    let mut superblock = [0u8; 1024];
    let mut file = std::fs::File::open(device)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(1024))?;
    file.read_exact(&mut superblock)?;
    Ok(superblock_needs_recovery(&superblock))
}

/// The ext2/3/4 superblock: magic 0xEF53 at 0x38, `s_feature_incompat` at 0x60, RECOVER = 4.
fn superblock_needs_recovery(sb: &[u8; 1024]) -> bool {
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    magic == 0xEF53 && incompat & 0x4 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recover_flag() {
        let mut sb = [0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert!(!superblock_needs_recovery(&sb));
        sb[0x60..0x64].copy_from_slice(&0x246u32.to_le_bytes());
        assert!(superblock_needs_recovery(&sb));
        sb[0x38] = 0;
        assert!(!superblock_needs_recovery(&sb), "not ext4: no claim");
    }
}
