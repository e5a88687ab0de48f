//! LUKS containers on zvols (`persistence-encryption=luks`): the volume wait finds the
//! containers among the zvols that may hold the volume, records them where the generator
//! looks (`paths::LUKS_FOUND`), has PID 1 reload so that the generator writes a
//! systemd-cryptsetup@ unit for each, and starts those units: systemd's own prompt, retries,
//! keyring cache and timeouts open them. The file system inside then shows up with its label.

use crate::systemd::pid1::Pid1;
use crate::zfs::zvols;
use anyhow::{Context, Result};
use std::io::Write;
use tracing::{info, warn};
use zlive::names::Dataset;
use zlive::paths::LUKS_FOUND;
use zlive::plan::{LuksContainer, Volume, VolumeKind};
use zlive::tool_output::ZvolRow;

/// Open the LUKS containers among `zvols`; the ones the generator had to learn of (the plan
/// changes with them: `Plan::add_luks`).
pub fn open(pid1: &mut Pid1, volume: &Volume, zvols: &[ZvolRow]) -> Result<Vec<String>> {
    let present = zvols::wait_for_devices(zvols, zvols::DEVICE_WAIT);
    let containers: Vec<String> = zvols::probe(&present)
        .into_iter()
        .filter(|(_, p)| p.fs_type.as_deref() == Some("crypto_LUKS"))
        .map(|(d, _)| d.to_string())
        .collect();
    if containers.is_empty() {
        return Ok(Vec::new());
    }
    let new = record(&containers)?;
    if !new.is_empty() {
        info!(
            "LUKS containers found: {}; writing their systemd-cryptsetup@ units",
            new.join(", ")
        );
        pid1.reload()?;
    }
    for dataset in &containers {
        let Some(c) = Dataset::parse(dataset).ok().and_then(LuksContainer::new) else {
            continue;
        };
        let state = pid1.start_and_wait(&c.unit)?;
        if state != "active" {
            warn!(
                "LUKS container {dataset} stays closed ({} is {state})",
                c.unit
            );
        }
    }
    // A named volume in a new container is now mounted from the mapped device: queue its
    // mount again, with the dependencies of the new unit (its fsck, the container).
    if let VolumeKind::Zvol(d) = &volume.kind {
        if new.contains(&d.to_string()) {
            pid1.queue_start(&volume.mount_unit)?;
        }
    }
    Ok(new)
}

/// Add containers to [`LUKS_FOUND`] under a lock (several volume waits run at once); returns
/// those that were not there yet.
fn record(containers: &[String]) -> Result<Vec<String>> {
    let path = std::path::Path::new(LUKS_FOUND);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{LUKS_FOUND}.lock"))?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("Failed to lock the LUKS record")?;
    let known = std::fs::read_to_string(path).unwrap_or_default();
    let new: Vec<String> = containers
        .iter()
        .filter(|c| !known.lines().any(|l| l.trim() == c.as_str()))
        .cloned()
        .collect();
    if !new.is_empty() {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(format!("{}\n", new.join("\n")).as_bytes())?;
    }
    Ok(new)
}
