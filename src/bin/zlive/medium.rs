//! `zlive find-medium`: without `live-media=`, find the live medium as live-boot does, by
//! trying the block devices, but without writing to any of them and without taking the
//! wrong one: only file systems a medium can have are mounted, read-only and without journal
//! replay, and a medium carrying this initrd's live-uuid (`.disk/live-uuid*`, as live-build
//! writes it) is preferred over any other with an image.

use crate::exec::{self, run};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use zlive::paths::{IMAGE_NAME, MEDIUM_DIR};
use zlive::plan::Plan;

const DEFAULT_MEDIUM_WAIT: u64 = 60;
/// How long to keep looking for the medium with this initrd's live-uuid once others with an
/// image were found (a slow USB stick), before taking one of those.
const MATCH_GRACE: Duration = Duration::from_secs(10);
/// The initrd's live-uuid, installed by the dracut module from the build host.
const LIVE_UUID_FILE: &str = "/etc/zlive/live-uuid";

/// Block devices that may hold the medium, in name order: not zvols, loops or RAM disks.
fn candidates() -> Vec<String> {
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

/// Read-only mount options that also keep a journalling file system from replaying its
/// journal (a dirty internal disk, a hibernated system); `None`: not a medium's file system.
pub fn probe_options(fstype: &str) -> Option<&'static str> {
    match fstype {
        "iso9660" | "udf" | "vfat" | "exfat" | "ext2" | "ntfs3" => Some("ro,noatime"),
        "ext3" | "ext4" => Some("ro,noatime,noload"),
        "xfs" => Some("ro,noatime,norecovery"),
        "btrfs" => Some("ro,noatime,rescue=nologreplay"),
        _ => None,
    }
}

/// A device with the image.
#[derive(Debug, Clone)]
struct Medium {
    device: String,
    fstype: String,
    /// Whether it carries the initrd's live-uuid (`None`: the initrd has none).
    matches: Option<bool>,
}

/// Mount `device` read-only at the medium's place if its file system may be a medium.
fn mount(device: &str) -> Result<Option<String>> {
    let fstype = exec::lines(Command::new("blkid").args([
        "-c",
        "/dev/null",
        "-o",
        "value",
        "-s",
        "TYPE",
        device,
    ]))
    .ok()
    .and_then(|l| l.into_iter().next());
    let Some((fstype, options)) = fstype.and_then(|t| probe_options(&t).map(|o| (t, o))) else {
        return Ok(None);
    };
    let (ok, _) =
        run(Command::new("mount").args(["-t", &fstype, "-o", options, device, MEDIUM_DIR]))?;
    Ok(ok.then_some(fstype))
}

/// Whether the mounted medium carries `uuid` in one of its `.disk/live-uuid*` files.
fn carries(uuid: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(Path::new(MEDIUM_DIR).join(".disk")) else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("live-uuid"))
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.trim() == uuid))
}

/// Every candidate with the image, each mounted and unmounted again.
fn look(image: &str, uuid: Option<&str>) -> Result<Vec<Medium>> {
    let mut found = Vec::new();
    for device in candidates() {
        let Some(fstype) = mount(&device)? else {
            continue;
        };
        if Path::new(MEDIUM_DIR).join(image).is_file() {
            let matches = uuid.map(carries);
            found.push(Medium {
                device,
                fstype,
                matches,
            });
        }
        run(Command::new("umount").arg(MEDIUM_DIR))?;
    }
    Ok(found)
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
            Some(true) => format!("{} (this initrd's live-uuid)", m.device),
            Some(false) => format!("{} (another live-uuid, or none)", m.device),
            None => m.device.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn find_medium(plan: &Plan) -> Result<()> {
    let wait = Duration::from_secs(
        plan.medium_timeout
            .map(u64::from)
            .unwrap_or(DEFAULT_MEDIUM_WAIT),
    );
    let image = format!("{}/{IMAGE_NAME}", plan.media_path);
    let uuid = std::fs::read_to_string(LIVE_UUID_FILE)
        .ok()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    std::fs::create_dir_all(MEDIUM_DIR)?;
    let started = Instant::now();
    let mut first_seen: Option<Instant> = None;
    while started.elapsed() < wait {
        let found = look(&image, uuid.as_deref())?;
        if !found.is_empty() {
            let seen = *first_seen.get_or_insert_with(Instant::now);
            let patient =
                seen.elapsed() < MATCH_GRACE && started.elapsed() + Duration::from_secs(1) < wait;
            if let Some(m) = choose(&found, patient) {
                return take(m, &found, &image);
            }
        }
        sleep(Duration::from_secs(1));
    }
    error!(
        "no device with {image} found within {} s; give the medium with live-media=DEVICE or live-media=LABEL=…",
        wait.as_secs()
    );
    bail!("live medium not found")
}

fn take(m: &Medium, found: &[Medium], image: &str) -> Result<()> {
    let (ok, text) = run(Command::new("mount").args([
        "-t",
        &m.fstype,
        "-o",
        probe_options(&m.fstype).unwrap_or("ro"),
        &m.device,
        MEDIUM_DIR,
    ]))?;
    if !ok {
        bail!("mounting the live medium {} failed: {text}", m.device);
    }
    if found.len() > 1 {
        warn!("live media found: {}; using {}", describe(found), m.device);
    }
    if m.matches == Some(false) {
        warn!("no medium carries this initrd's live-uuid (.disk/live-uuid*); using {}, the first with {image}: it may not be the image this initrd was built for", m.device);
    }
    info!("live medium found on {} ({image})", m.device);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(device: &str, matches: Option<bool>) -> Medium {
        Medium {
            device: device.into(),
            fstype: "ext4".into(),
            matches,
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
        assert_eq!(probe_options("ext4"), Some("ro,noatime,noload"));
        assert_eq!(probe_options("xfs"), Some("ro,noatime,norecovery"));
        assert!(probe_options("btrfs").unwrap().contains("nologreplay"));
        for not_a_medium in ["zfs_member", "crypto_LUKS", "swap", "LVM2_member", ""] {
            assert_eq!(probe_options(not_a_medium), None, "{not_a_medium}");
        }
    }
}
