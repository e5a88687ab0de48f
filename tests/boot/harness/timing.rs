//! Timings of a boot, read from the kernel's and the journal's timestamps: printed as TIMING
//! lines for the record, never asserted (a timed test flakes).

use super::images::images;
use super::serial::Boot;

/// The timestamp of a kernel console or `short-monotonic` journal line, `[   12.345678] …`,
/// in seconds.
pub fn printk_seconds(line: &str) -> Option<f64> {
    let inside = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inside.trim().parse().ok()
}

impl Boot {
    /// Seconds since kernel start of the first journal line containing `needle`.
    pub fn at(&self, needle: &str) -> Option<f64> {
        self.sections
            .get("journal")?
            .lines()
            .find(|l| l.contains(needle))
            .and_then(printk_seconds)
    }

    /// Start and end (seconds since kernel start) of a unit's job, from the journal.
    pub fn step(&self, unit: &str) -> Option<(f64, f64)> {
        let start = self
            .at(&format!("Starting {unit}"))
            .or_else(|| self.at(&format!("Mounting {unit}")))?;
        let end = self
            .at(&format!("Finished {unit}"))
            .or_else(|| self.at(&format!("Mounted {unit}")))
            .or_else(|| self.at(&format!("Failed to start {unit}")))
            .or_else(|| self.at(&format!("{unit}: Failed")))?;
        Some((start, end))
    }

    /// Seconds since kernel start when the serial line containing `needle` was printed.
    fn serial_at(&self, needle: &str) -> Option<f64> {
        self.serial
            .lines()
            .find(|l| l.contains(needle))
            .and_then(printk_seconds)
    }

    /// The agent's own clock when the live system was up.
    fn live_at(&self) -> Option<f64> {
        self.serial
            .lines()
            .find_map(|l| l.strip_prefix("ZLIVE-AGENT-START uptime="))
            .and_then(|v| v.trim().parse::<f64>().ok())
    }
}

/// How long the steps of the persistence chain took, in boot order.
fn parts(boot: &Boot) -> Vec<String> {
    let mut parts = Vec::new();
    // zpool loads the module: that part of the import is the module load.
    if let (Some(start), Some(loaded)) = (
        boot.at("Starting zlive-import"),
        boot.at("ZFS: Loaded module"),
    ) {
        if loaded >= start {
            parts.push(format!("zfs module load {:.2}s", loaded - start));
        } else {
            parts.push("zfs module loaded before the import".to_owned());
        }
    }
    let steps = [
        ("import", "zlive-import"),
        ("volume", "zlive-volume@"),
        ("fsck", "systemd-fsck@dev"),
        ("volume mount", "run-live-persistence-"),
        ("reload", "zlive-reload.service"),
        ("root overlay", "sysroot.mount"),
    ];
    for (label, unit) in steps {
        if let Some((a, b)) = boot.step(unit) {
            parts.push(format!("{label} {:.2}s", b - a));
        }
        // Of a named pool's import: the zpool command itself, apart from waiting for a disk.
        if label == "import" {
            if let Some(zpool) = last_zpool_import(boot) {
                parts.push(format!("(zpool import {zpool:.1}s)"));
            }
        }
    }
    // The entry mounts run in parallel: from the first start to the last finish.
    let units = boot.sections.get("units").map(String::as_str).unwrap_or("");
    let entries: Vec<(f64, f64)> = units
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| u.starts_with("sysroot-") && u.ends_with(".mount"))
        .filter_map(|u| boot.step(u))
        .collect();
    if !entries.is_empty() {
        let first = entries.iter().map(|e| e.0).fold(f64::MAX, f64::min);
        let last = entries.iter().map(|e| e.1).fold(0.0, f64::max);
        parts.push(format!(
            "{} entry mounts {:.2}s",
            entries.len(),
            last - first
        ));
    }
    parts
}

/// How long the last `zpool import` of a named pool took, as zlive logged it.
fn last_zpool_import(boot: &Boot) -> Option<f64> {
    const SAID: &str = "of which the last zpool import took ";
    let journal = boot.sections.get("journal")?;
    let line = journal.lines().find(|l| l.contains(SAID))?;
    let after = &line[line.find(SAID)? + SAID.len()..];
    after.split_whitespace().next()?.parse().ok()
}

/// Time from kernel start to switch-root and to the live root, and the parts of the chain.
/// A boot that printed nothing of this shows dashes: timings are for the record only.
pub fn print(boot: &Boot) {
    // "Switching root." is PID 1's last line in the initrd's journal.
    let switch = boot.serial_at("Switching root.");
    let shown = |t: Option<f64>| t.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into());
    eprintln!(
        "TIMING {}: kernel start to switch-root {} (live system up at {}; wall {:.1}s, accel {}): {}",
        boot.name,
        shown(switch),
        shown(boot.live_at()),
        boot.wall.as_secs_f64(),
        images().accel,
        parts(boot).join(", ")
    );
}
