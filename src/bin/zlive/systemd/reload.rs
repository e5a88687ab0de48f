//! `zlive reload`: the second generator pass. Ask PID 1 to reload (the generator then sees the
//! mounted volumes and writes their entries), re-queue the targets that gained units, and log
//! the plan's story to the journal, entry by entry.

use crate::systemd::pid1::Pid1;
use anyhow::{bail, Context, Result};
use tracing::{info, warn};
use zbus::zvariant::OwnedObjectPath;
use zlive::plan::Plan;
use zlive::units::{INITRD_FS_TARGET, INITRD_ROOT_FS_TARGET, SYSROOT_MOUNT};

const MOUNT: &str = "org.freedesktop.systemd1.Mount";

/// PID 1 refuses to reload with less free space than this in /run.
const RUN_MIN_FREE: u64 = 16 * 1024 * 1024;

pub fn reload(plan: &Plan) -> Result<()> {
    let stat = nix::sys::statvfs::statvfs("/run").context("Failed to statvfs /run")?;
    let free = stat.blocks_available() * stat.fragment_size();
    if free < RUN_MIN_FREE {
        bail!(
            "/run has only {} KiB free; systemd refuses to reload with less than 16 MiB, so persistence.conf cannot be applied. Something filled /run (a toram copy, or files in /run/live/overlay?)",
            free / 1024
        );
    }
    let mut pid1 = Pid1::connect()?;
    // Read once no mount runs: a mounted unit's Options come from the kernel's mount table, so
    // reading them while sysroot.mount mounts would see a change that is not one.
    pid1.wait_for_mounts()?;
    let root_before = pid1.unit_string(SYSROOT_MOUNT, MOUNT, "Options");
    let started = std::time::Instant::now();
    let done = if pass_two_loaded(&mut pid1, plan) {
        "systemd had already reloaded with the volume mounted (the root's preparation, for / union), so no reload".to_owned()
    } else {
        pid1.reload()?;
        format!("reloaded systemd in {} ms", started.elapsed().as_millis())
    };
    let root_after = pid1.unit_string(SYSROOT_MOUNT, MOUNT, "Options");
    // Jobs exist only for dependencies known when a job was queued: queue the targets again
    // so that the new units get jobs. Never wait for them: this service is ordered before them.
    let job: OwnedObjectPath = pid1
        .manager("StartUnit", &(INITRD_FS_TARGET, "replace"))
        .with_context(|| format!("Failed to queue {INITRD_FS_TARGET}"))?;
    info!("{done}; queued {INITRD_FS_TARGET} again ({})", job.as_str());
    if root_before != root_after {
        let job: OwnedObjectPath = pid1
            .manager("StartUnit", &(INITRD_ROOT_FS_TARGET, "replace"))
            .with_context(|| format!("Failed to queue {INITRD_ROOT_FS_TARGET}"))?;
        info!(
            "the root overlay changed (persistent /); queued {INITRD_ROOT_FS_TARGET} again ({})",
            job.as_str()
        );
    }
    tell_the_story(plan)
}

/// Whether PID 1 has loaded the generator's second pass already: a reload since the volumes
/// were mounted (the root's preparation does one for `/ union`) loaded every entry's mount
/// unit from the generator. Entries without a mount unit (`link`) cannot tell, so a plan with
/// none of them mounted always reloads.
fn pass_two_loaded(pid1: &mut Pid1, plan: &Plan) -> bool {
    let mounts: Vec<&str> = plan
        .entries
        .iter()
        .map(|e| e.unit.as_str())
        .filter(|u| u.ends_with(".mount"))
        .collect();
    let root = plan.root_on_volume();
    if mounts.is_empty() && root.is_none() {
        return false;
    }
    root.is_none_or(|wanted| {
        pid1.unit_string(SYSROOT_MOUNT, MOUNT, "Options")
            .contains(&wanted)
    }) && mounts.iter().all(|unit| {
        pid1.unit_string(unit, "org.freedesktop.systemd1.Unit", "FragmentPath")
            .starts_with("/run/systemd/generator")
    })
}

/// Log what pass 2 decided, with fields for `journalctl -u UNIT` and `ZLIVE_*` filters.
fn tell_the_story(plan: &Plan) -> Result<()> {
    for notice in &plan.notices {
        crate::log::notice(notice);
    }
    for r in &plan.rejected {
        warn!(ZLIVE_CONF = r.file.as_str(), "{r}");
    }
    for v in plan.volumes.iter().filter(|v| v.conf_read) {
        report_space(v);
    }
    for e in &plan.entries {
        let volume = plan.volumes[e.volume].describe();
        info!(
            ZLIVE_ENTRY = e.entry.dir.as_str(),
            ZLIVE_VOLUME = volume.as_str(),
            OBJECT_SYSTEMD_UNIT = e.unit.as_str(),
            "{} ({}) from {} line {}: source {}, unit {}",
            e.entry.dir,
            e.entry.mode,
            plan.volumes[e.volume].conf_path(),
            e.entry.line,
            e.src,
            e.unit
        );
    }
    info!(
        "persistence: {} entries from {} volume(s), {} lines refused",
        plan.entries.len(),
        plan.volumes.iter().filter(|v| v.conf_read).count(),
        plan.rejected.len()
    );
    Ok(())
}

/// Free space on a volume: a full volume still boots, but changes will not be saved.
fn report_space(v: &zlive::plan::Volume) {
    let volume = v.describe();
    let volume = volume.as_str();
    let Ok(st) = nix::sys::statvfs::statvfs(v.mount_point.as_str()) else {
        return;
    };
    let grow = match v.dataset() {
        Some(d) => format!("raise its quota or free space in its pool (zfs set quota=SIZE {d})"),
        None => "grow it (zfs set volsize=SIZE POOL/VOLUME, then resize2fs)".to_owned(),
    };
    let unit = st.fragment_size();
    let free = st.blocks_available() * unit;
    let total = st.blocks() * unit;
    if free < 1024 * 1024 || free.saturating_mul(100) < total {
        warn!(
            ZLIVE_VOLUME = volume,
            "persistence volume {volume} is full ({} KiB free of {} MiB): changes made in this boot may not be saved. Delete files from it, or {grow}.",
            free / 1024,
            total >> 20
        );
    } else {
        info!(
            ZLIVE_VOLUME = volume,
            "persistence volume {volume}: {} MiB free of {} MiB",
            free >> 20,
            total >> 20
        );
    }
}
