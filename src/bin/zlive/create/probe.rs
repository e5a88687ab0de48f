//! What `zlive create` looks at before it decides: a device's size, kind, partitions,
//! signatures and users (sysfs, mountinfo, swaps, `wipefs`, `zpool status`), the live medium's
//! disk, and the pool names in sight. Reads only.

use super::rules::{Device, Medium};
use crate::early::blockdev::disk_name;
use crate::exec;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use zlive::paths;

const SYS_BLOCK: &str = "/sys/class/block";

/// The kernel's name of a block device path (`/dev/disk/by-id/…` → `sdb`).
pub fn kernel_name(path: &str) -> Result<String> {
    let real = fs::canonicalize(path).with_context(|| format!("{path} does not exist"))?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{path} is not a device"))?
        .to_owned();
    if !Path::new(SYS_BLOCK).join(&name).exists() {
        bail!("{path} is not a block device");
    }
    Ok(name)
}

fn sys(name: &str, file: &str) -> Option<String> {
    fs::read_to_string(Path::new(SYS_BLOCK).join(name).join(file))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn is_partition(name: &str) -> bool {
    Path::new(SYS_BLOCK).join(name).join("partition").exists()
}

/// A partition's number in its disk's table.
pub fn partition_number(name: &str) -> Option<usize> {
    sys(name, "partition").and_then(|n| n.parse().ok())
}

/// The partitions of a whole disk, in order.
pub fn partitions_of(disk: &str) -> Vec<String> {
    let mut parts: Vec<(u32, String)> = fs::read_dir(Path::new(SYS_BLOCK).join(disk))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let number = fs::read_to_string(e.path().join("partition")).ok()?;
            Some((number.trim().parse().ok()?, n))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, n)| n).collect()
}

/// A device and everything built on it (its partitions, and the dm or md devices holding
/// them), by kernel name.
fn family(name: &str) -> Vec<String> {
    let mut all = vec![name.to_owned()];
    let mut i = 0;
    while i < all.len() {
        let current = all[i].clone();
        all.extend(partitions_of(&current));
        for holder in fs::read_dir(Path::new(SYS_BLOCK).join(&current).join("holders"))
            .into_iter()
            .flatten()
            .flatten()
        {
            all.push(holder.file_name().to_string_lossy().into_owned());
        }
        i += 1;
        if all.len() > 256 {
            break;
        }
    }
    all
}

/// Who uses any of `names`: mounts, swap, imported pools.
fn users(names: &[String]) -> Vec<String> {
    let numbers: Vec<String> = names.iter().filter_map(|n| sys(n, "dev")).collect();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut users: Vec<String> = zlive::world::mount_devices(&mountinfo)
        .into_iter()
        .filter(|(_, m)| numbers.contains(&m.device))
        .map(|(point, _)| format!("mounted on {point}"))
        .collect();
    users.sort();
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    for n in names {
        if swaps.lines().any(|l| l.starts_with(&format!("/dev/{n} "))) {
            users.push(format!("/dev/{n} is swap"));
        }
    }
    let status = exec::stdout(Command::new("zpool").args(["status", "-P"]));
    let mut pool = String::new();
    for line in status.lines() {
        if let Some(p) = line.trim().strip_prefix("pool: ") {
            pool = p.to_owned();
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|w| w.starts_with("/dev/"))
        {
            let used = kernel_name(path).is_ok_and(|k| names.contains(&k));
            if used && !users.iter().any(|u| u.ends_with(&format!("pool {pool}"))) {
                users.push(format!("in the imported pool {pool}"));
            }
        }
    }
    users
}

/// The signatures `wipefs` finds on a device (without changing it), by type.
fn signatures(path: &str) -> Vec<String> {
    let json = exec::stdout(Command::new("wipefs").args(["--no-act", "--json", path]));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let mut types: Vec<String> = value["signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["type"].as_str().map(str::to_owned))
        .collect();
    types.dedup();
    types
}

/// The signatures blkid finds in a region of a disk (bytes from `offset`, `size` long): what
/// the free space holds before a partition is made there.
pub fn region_signatures(disk: &str, offset: u64, size: u64) -> Vec<String> {
    let out = exec::stdout(Command::new("blkid").args([
        "--probe",
        "--offset",
        &offset.to_string(),
        "--size",
        &size.to_string(),
        "-o",
        "export",
        disk,
    ]));
    out.lines()
        .filter_map(|l| {
            l.strip_prefix("TYPE=")
                .or_else(|| l.strip_prefix("PTTYPE="))
        })
        .map(str::to_owned)
        .collect()
}

/// Everything the rules need about the device at `path`.
pub fn device(path: &str, medium: &Medium) -> Result<Device> {
    let name = kernel_name(path)?;
    let whole_disk = !is_partition(&name);
    let sectors: u64 = sys(&name, "size").and_then(|s| s.parse().ok()).unwrap_or(0);
    let optical = name.starts_with("sr") || sys(&name, "device/type").as_deref() == Some("5");
    let partitions = match whole_disk {
        true => partitions_of(&name)
            .iter()
            .map(|p| format!("/dev/{p}"))
            .collect(),
        false => Vec::new(),
    };
    let holds_medium = match medium {
        Medium::Disk(disk) => *disk == format!("/dev/{}", disk_name(&name)),
        _ => false,
    };
    Ok(Device {
        path: format!("/dev/{name}"),
        whole_disk,
        bytes: sectors * 512,
        optical,
        in_use: users(&family(&name)),
        signatures: signatures(&format!("/dev/{name}")),
        partitions,
        holds_medium,
    })
}

/// The model and vendor a disk reports, for the confirmation.
pub fn model(path: &str) -> String {
    let Ok(name) = kernel_name(path) else {
        return String::new();
    };
    let disk = disk_name(&name);
    [sys(&disk, "device/vendor"), sys(&disk, "device/model")]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the running live system came from.
pub fn medium() -> Medium {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = zlive::world::mount_devices(&mountinfo);
    if mounts.contains_key(paths::FINDISO_DIR) {
        return Medium::IsoFile;
    }
    let Some(m) = mounts.get(paths::MEDIUM_DIR) else {
        return match Path::new(paths::TORAM_DIR).exists() || mounts.contains_key(paths::TORAM_DIR) {
            true => Medium::InRam,
            false => Medium::None,
        };
    };
    let Ok(name) = kernel_name(&m.source) else {
        return Medium::InRam;
    };
    if name.starts_with("sr") || name.starts_with("loop") {
        return match name.starts_with("sr") {
            true => Medium::Optical,
            false => Medium::IsoFile,
        };
    }
    Medium::Disk(format!("/dev/{}", disk_name(&name)))
}

/// The pools imported here, and those `zpool import` sees on this system's disks.
pub fn pool_names() -> (Vec<String>, Vec<String>) {
    let imported = exec::stdout(Command::new("zpool").args(["list", "-H", "-o", "name"]));
    let visible = exec::stdout(Command::new("zpool").arg("import"));
    (
        zlive::tool_output::pool_names(&imported),
        zlive::tool_output::listed_pools(&visible)
            .into_iter()
            .map(|p| p.name)
            .collect(),
    )
}

/// A disk's size in its own sectors, and what sfdisk says of its table (`None`: no table).
pub fn table(disk: &str) -> Result<(u64, Option<String>)> {
    let name = kernel_name(disk)?;
    let sectors_512: u64 = sys(&name, "size").and_then(|s| s.parse().ok()).unwrap_or(0);
    let sector: u64 = sys(&name, "queue/logical_block_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let out = Command::new("sfdisk")
        .args(["--json", disk])
        .output()
        .context("cannot run sfdisk (package fdisk)")?;
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((
        sectors_512 * 512 / sector,
        out.status
            .success()
            .then_some(json)
            .filter(|j| !j.trim().is_empty()),
    ))
}

/// The device node of partition `number` of `disk`, once the kernel made it (`seconds` at
/// most).
pub fn partition_node(disk: &str, number: usize, seconds: u64) -> Result<PathBuf> {
    let name = kernel_name(disk)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let numbered = partitions_of(&name)
            .into_iter()
            .find(|p| sys(p, "partition").as_deref() == Some(number.to_string().as_str()));
        if let Some(part) = numbered {
            let node = PathBuf::from(format!("/dev/{part}"));
            if node.exists() {
                return Ok(node);
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("partition {number} of {disk} did not appear within {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
