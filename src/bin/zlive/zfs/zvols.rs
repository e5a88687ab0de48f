//! The zvols of the imported pools as the import, the keys, LUKS and the volume wait see them:
//! which will get a device node (not `volmode=none`, key loaded), one bounded wait for all of
//! those together, and what each holds (one `blkid` for all of them).
//!
//! A zvol that will never get a node (zlive's own hidden generations after a rollback, a
//! locked one) is never waited for: a pool with many of them costs nothing.

use crate::exec;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use zlive::names::Dataset;
use zlive::tool_output::{self, Probed, ZvolRow, ZVOL_COLUMNS};

/// How long the zvols of freshly imported pools, or of a key just loaded, may take to get
/// their device nodes from udev, all of them together.
pub const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// The zvols of these pools (every imported pool when `pools` is empty); none when `zfs`
/// cannot list them.
pub fn list(pools: &[String]) -> Vec<ZvolRow> {
    let mut cmd = Command::new("zfs");
    cmd.args(["list", "-H", "-t", "volume", "-o", ZVOL_COLUMNS]);
    if !pools.is_empty() {
        cmd.arg("-r").args(pools);
    }
    exec::lines(&mut cmd)
        .map(|lines| tool_output::zvol_rows(&lines.join("\n")))
        .unwrap_or_default()
}

/// The device node udev makes for a zvol.
pub fn node(dataset: &Dataset) -> String {
    dataset.device()
}

/// Wait, bounded by `limit` for all of them together, until the zvols that will get a device
/// node have it; returns those that have.
pub fn wait_for_devices(rows: &[ZvolRow], limit: Duration) -> Vec<ZvolRow> {
    let started = Instant::now();
    let expected: Vec<&ZvolRow> = rows.iter().filter(|r| r.has_device()).collect();
    let present = |r: &&ZvolRow| Path::new(&node(&r.dataset)).exists();
    while started.elapsed() < limit && !expected.iter().all(present) {
        sleep(Duration::from_millis(50));
    }
    expected.into_iter().filter(present).cloned().collect()
}

/// What is on each of these zvols (they must have their device node), probed from the devices
/// themselves in one `blkid` (no cache, not udev's record): `(zvol, what blkid found)`.
pub fn probe(rows: &[ZvolRow]) -> Vec<(Dataset, Probed)> {
    probe_devices(rows.iter().map(|r| node(&r.dataset)).collect())
        .into_iter()
        .zip(rows)
        .filter_map(|(probed, row)| Some((row.dataset.clone(), probed?)))
        .collect()
}

/// `blkid` on these devices; for each, in order, what it found (`None`: nothing it knows).
pub fn probe_devices(devices: Vec<String>) -> Vec<Option<Probed>> {
    if devices.is_empty() {
        return Vec::new();
    }
    let text = exec::stdout(
        Command::new("blkid")
            .args(["-c", "/dev/null", "-o", "export"])
            .args(&devices),
    );
    let found = tool_output::blkid_export(&text);
    // blkid names a device as it was given, or by its node: compare the nodes.
    let canonical = |d: &str| std::fs::canonicalize(d).ok();
    devices
        .iter()
        .map(|d| {
            let node = canonical(d);
            found
                .iter()
                .find(|p| p.device == *d || (node.is_some() && canonical(&p.device) == node))
                .cloned()
        })
        .collect()
}

/// The zvols among `probed` whose file system carries `label`.
pub fn carrying<'a>(probed: &'a [(Dataset, Probed)], label: &str) -> Vec<&'a Dataset> {
    probed
        .iter()
        .filter(|(_, p)| p.label.as_deref() == Some(label))
        .map(|(d, _)| d)
        .collect()
}
