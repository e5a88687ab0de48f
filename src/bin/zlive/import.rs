//! Pools, volumes and the medium: `zlive import`, `zlive wait-volume`, `zlive find-medium`.
//! Each waits for a bounded time and then says, in the journal, what it looked for and what
//! to do about it.

use crate::pid1::Pid1;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use zlive::paths::{IMAGE_NAME, MEDIUM_DIR};
use zlive::plan::{Import, Plan, Volume, VolumeKind};

/// How long a named pool may take to become importable (its disks to appear).
const IMPORT_WAIT: Duration = Duration::from_secs(20);
/// How long a scan keeps looking while expected volumes are still missing.
const SCAN_WAIT: Duration = Duration::from_secs(10);
/// How long a volume's device may take to appear after the imports.
const VOLUME_WAIT: Duration = Duration::from_secs(15);
const DEFAULT_MEDIUM_WAIT: u64 = 60;

fn run(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd
        .output()
        .with_context(|| format!("Failed to run {:?}", cmd.get_program()))?;
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    Ok((out.status.success(), text))
}

fn import_options(plan: &Plan) -> Vec<&'static str> {
    let mut o = vec!["-N", "-o", "cachefile=none"];
    if plan.read_only {
        o.extend(["-o", "readonly=on"]);
    }
    o
}

pub fn import(plan: &Plan, pool: Option<&str>) -> Result<()> {
    match pool {
        Some(pool) => import_named(plan, pool),
        None => import_scan(plan),
    }
}

fn import_named(plan: &Plan, pool: &str) -> Result<()> {
    if !plan
        .imports
        .iter()
        .any(|i| matches!(i, Import::Named(p) if p.as_str() == pool))
    {
        warn!(
            ZLIVE_POOL = pool,
            "pool {pool} is not named on the kernel command line; importing it anyway"
        );
    }
    if run(Command::new("zpool").args(["list", "-H", "-o", "name", pool]))?.0 {
        info!(ZLIVE_POOL = pool, "pool {pool} is already imported");
        return Ok(());
    }
    let started = Instant::now();
    let mut attempts = 0;
    let last = loop {
        attempts += 1;
        let (ok, text) = run(Command::new("zpool")
            .arg("import")
            .args(import_options(plan))
            .arg("-f")
            .arg(pool))?;
        if ok {
            let ro = if plan.read_only { ", read-only" } else { "" };
            info!(
                ZLIVE_POOL = pool,
                "imported pool {pool} (forced{ro}) after {attempts} attempt(s), {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        // Another importer (OpenZFS's own units) may have won the race.
        if run(Command::new("zpool").args(["list", "-H", "-o", "name", pool]))?.0 {
            info!(
                ZLIVE_POOL = pool,
                "pool {pool} was imported by someone else meanwhile"
            );
            return Ok(());
        }
        if started.elapsed() >= IMPORT_WAIT {
            break text;
        }
        sleep(Duration::from_secs(1));
    };
    error!(
        ZLIVE_POOL = pool,
        "pool {pool} could not be imported within {} s: {}. Persistence on this pool is off for this boot; nothing was written to it. 'zpool import' lists the pools this system can see.",
        IMPORT_WAIT.as_secs(),
        last.replace('\n', " ")
    );
    bail!("pool {pool} not imported")
}

fn expected_devices(plan: &Plan) -> Vec<&str> {
    plan.volumes.iter().map(|v| v.device.as_str()).collect()
}

fn import_scan(plan: &Plan) -> Result<()> {
    let started = Instant::now();
    loop {
        let (ok, text) = run(Command::new("zpool")
            .arg("import")
            .arg("-a")
            .args(import_options(plan)))?;
        if !ok && !text.is_empty() {
            warn!("zpool import -a: {}", text.replace('\n', " "));
        }
        let missing = expected_devices(plan)
            .into_iter()
            .any(|d| !Path::new(d).exists());
        if !missing || started.elapsed() >= SCAN_WAIT {
            break;
        }
        sleep(Duration::from_secs(1));
    }
    let (_, imported) = run(Command::new("zpool").args(["list", "-H", "-o", "name"]))?;
    let imported: Vec<&str> = imported
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("no pools"))
        .collect();
    info!(
        "pools imported: {}",
        if imported.is_empty() {
            "none".to_owned()
        } else {
            imported.join(", ")
        }
    );
    // Pools a scan leaves alone: say which and why, so the user can name them.
    let (_, listing) = run(Command::new("zpool").arg("import"))?;
    for (pool, status) in left_alone(&listing) {
        warn!(
            ZLIVE_POOL = pool.as_str(),
            "pool {pool} was found but not imported: {status} Pools found by scanning are never forced; add persistence-zpool={pool} to the kernel command line to import it with -f."
        );
    }
    Ok(())
}

/// Pools listed by `zpool import` (those that were not imported), with their status line.
pub fn left_alone(listing: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("pool: ") {
            out.push((name.trim().to_owned(), String::new()));
        } else if let Some(status) = line.strip_prefix("status: ") {
            if let Some(last) = out.last_mut() {
                last.1 = status.trim().to_owned();
            }
        }
    }
    out
}

pub fn wait_volume(plan: &Plan, name: &str) -> Result<()> {
    let volume = plan
        .volumes
        .iter()
        .find(|v| v.name == name)
        .with_context(|| {
            format!("no persistence volume named {name} on the kernel command line")
        })?;
    let started = Instant::now();
    while started.elapsed() < VOLUME_WAIT {
        if Path::new(&volume.device).exists() {
            info!(
                ZLIVE_VOLUME = volume.describe().as_str(),
                OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
                "persistence volume {} is {} ({:.1} s after the import)",
                volume.describe(),
                volume.device,
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
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
        "persistence volume {} ({}) did not appear within {} s after importing {}: {advice}. Booting without it; zlive wrote nothing to the pool's volumes.",
        volume.describe(),
        volume.device,
        VOLUME_WAIT.as_secs(),
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

/// Block devices that may hold the medium, in name order: not zvols, loops or RAM disks.
fn medium_candidates() -> Vec<String> {
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
    names.sort();
    names.into_iter().map(|n| format!("/dev/{n}")).collect()
}

/// Without `live-media=`: try every block device, mount it read-only, keep the first that
/// has the image (live-boot's scan, in a service instead of the initramfs's main script).
pub fn find_medium(plan: &Plan) -> Result<()> {
    let wait = Duration::from_secs(
        plan.medium_timeout
            .map(u64::from)
            .unwrap_or(DEFAULT_MEDIUM_WAIT),
    );
    let image = format!("{}/{IMAGE_NAME}", plan.media_path);
    std::fs::create_dir_all(MEDIUM_DIR)?;
    let started = Instant::now();
    let mut tried: Vec<String> = Vec::new();
    while started.elapsed() < wait {
        for device in medium_candidates() {
            let (ok, _) =
                run(Command::new("mount").args(["-o", "ro,noatime", &device, MEDIUM_DIR]))?;
            if !ok {
                continue;
            }
            if Path::new(MEDIUM_DIR).join(&image).is_file() {
                info!("live medium found on {device} ({image})");
                return Ok(());
            }
            run(Command::new("umount").arg(MEDIUM_DIR))?;
            if !tried.contains(&device) {
                tried.push(device);
            }
        }
        sleep(Duration::from_secs(1));
    }
    error!(
        "no device with {image} found within {} s (tried: {}); give the medium with live-media=DEVICE or live-media=LABEL=…",
        wait.as_secs(),
        if tried.is_empty() { "no mountable device".to_owned() } else { tried.join(", ") }
    );
    bail!("live medium not found")
}

#[cfg(test)]
mod tests {
    #[test]
    fn left_alone_pools() {
        let listing = "   pool: dpool\n     id: 1\n  state: ONLINE\n status: The pool was last accessed by another system.\n action: ...\n\n   pool: other\n  state: ONLINE\n";
        let pools = super::left_alone(listing);
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].0, "dpool");
        assert!(pools[0].1.contains("another system"));
        assert_eq!(pools[1].1, "");
    }
}
