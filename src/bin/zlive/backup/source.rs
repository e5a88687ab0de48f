//! The volume a backup reads: found (this boot's, or the one persistence volume of the
//! imported pools, or the one named), snapshotted consistently, and marked afterwards with a
//! bookmark that keeps the chain of incrementals when the snapshot goes.

use super::freeze;
use super::place::{listing, Side};
use crate::exec::{self, run};
use crate::zfs::{datasets, snapshots, zvols};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use zlive::backup_plan::Mark;
use zlive::names::Dataset;

/// The kind a backup's snapshot carries in `org.zlive:snapshot`.
pub const BACKUP_KIND: &str = "backup";
/// How long the file system may stay frozen for the snapshot.
const FREEZE_LIMIT: Duration = Duration::from_secs(30);

/// The persistence volume a backup reads.
#[derive(Debug, Clone)]
pub struct Source {
    pub dataset: Dataset,
    /// ext4 on a zvol, rather than a dataset.
    pub zvol: bool,
    /// Encrypted: sent raw.
    pub encrypted: bool,
}

/// The volume named, or else this boot's persistence volume, or else the one persistence
/// volume (a labelled dataset, or a zvol whose file system is labelled `label`) on the pools
/// this machine has imported.
pub fn find(named: Option<&str>, label: &str) -> Result<Source> {
    let dataset = match named {
        Some(name) => Dataset::parse(name).map_err(|e| anyhow::anyhow!("--volume {name}: {e}"))?,
        None => only_one(candidates(label), label)?,
    };
    let props = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        "type,encryption",
        dataset.as_str(),
    ]))
    .with_context(|| format!("{dataset} is not a volume on an imported pool"))?;
    let [kind, encryption] = props.as_slice() else {
        bail!("zfs get of {dataset} said nothing");
    };
    if kind != "volume" && kind != "filesystem" {
        bail!("{dataset} is a {kind}, not a persistence volume");
    }
    Ok(Source {
        dataset,
        zvol: kind == "volume",
        encrypted: encryption != "off",
    })
}

fn candidates(label: &str) -> Vec<Dataset> {
    let this_boot: Vec<Dataset> = std::fs::read_to_string(snapshots::DATASETS)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Dataset::parse(l.split_once(' ')?.1).ok())
        .collect();
    if !this_boot.is_empty() {
        return this_boot;
    }
    let mut found: Vec<Dataset> = datasets::labelled(&[])
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let rows: Vec<_> = zvols::list(&[])
        .into_iter()
        .filter(|r| r.has_device())
        .collect();
    found.extend(
        zvols::probe(&rows)
            .into_iter()
            .filter(|(_, p)| p.label.as_deref() == Some(label))
            .map(|(d, _)| d),
    );
    found
}

fn only_one(mut found: Vec<Dataset>, label: &str) -> Result<Dataset> {
    found.dedup();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no persistence volume (a dataset or zvol labelled {label}) on the imported pools; import the stick's pool (zpool import POOL), or name the volume with --volume POOL/VOLUME"
        ),
        _ => bail!(
            "several persistence volumes: {}; name one with --volume",
            found
                .iter()
                .map(Dataset::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Snapshot the volume as it is now, consistent: an ext4 zvol in use is frozen around it (a
/// dataset's snapshot is consistent by itself). `kind` goes in `org.zlive:snapshot`. The
/// snapshot's full name.
pub fn snapshot(source: &Source, kind: &str) -> Result<String> {
    let frozen = match source.zvol {
        true => match freeze::mountpoint_of(Path::new(&source.dataset.device())) {
            Some(point) => Some(freeze::freeze(&point)?),
            None => None,
        },
        false => None,
    };
    let stamp = snapshots::timestamp(snapshots::now());
    let mut name = format!("{}@zlive-{stamp}", source.dataset);
    let take = |name: &str| {
        exec::run_bounded(
            Command::new("zfs").args([
                "snapshot",
                "-o",
                &format!("{}={kind}", zlive::tool_output::SNAPSHOT_KIND),
                name,
            ]),
            FREEZE_LIMIT,
        )
    };
    if let Err(e) = take(&name) {
        let said = format!("{e:#}");
        if said.contains("out of space") {
            bail!(
                "{}. Nothing was written.",
                snapshots::no_space(&source.dataset)
            );
        }
        // A boot snapshot taken in the same second.
        if !said.contains("already exists") {
            bail!("could not snapshot {}: {said}", source.dataset);
        }
        name.push('-');
        name.push_str(kind);
        take(&name).with_context(|| format!("could not snapshot {}", source.dataset))?;
    }
    drop(frozen);
    Ok(name)
}

/// The volume's snapshots and bookmarks, oldest first.
pub fn marks(dataset: &Dataset) -> Vec<Mark> {
    let (_, text) =
        listing(&Side::Local, "snapshot,bookmark", dataset.as_str()).unwrap_or_default();
    zlive::backup_plan::marks(&text)
}

/// A snapshot's GUID.
pub fn guid(snapshot: &str) -> Result<u64> {
    let line = exec::lines(
        Command::new("zfs").args(["get", "-H", "-p", "-o", "value", "guid", snapshot]),
    )?;
    line.first()
        .and_then(|g| g.parse().ok())
        .with_context(|| format!("no GUID for {snapshot}"))
}

/// Bookmark the snapshot the destination now has (`VOLUME#NAME`), and let the older backup
/// snapshots go: their bookmarks keep the chain. The bookmark's name.
pub fn mark_sent(source: &Source, snapshot: &str) -> Result<String> {
    let bookmark = snapshot.replacen('@', "#", 1);
    let (ok, text) = run(Command::new("zfs").args(["bookmark", snapshot, &bookmark]))?;
    if !ok && !text.contains("already exists") {
        bail!("could not bookmark {snapshot}: {}", text.replace('\n', " "));
    }
    let listed = exec::stdout(Command::new("zfs").args([
        "list",
        "-H",
        "-t",
        "snapshot",
        "-d",
        "1",
        "-o",
        &format!("name,{}", zlive::tool_output::SNAPSHOT_KIND),
        source.dataset.as_str(),
    ]));
    let marks = marks(&source.dataset);
    for line in listed.lines() {
        let Some((name, kind)) = line.split_once('\t') else {
            continue;
        };
        let kept_by_bookmark = marks.iter().any(|m| m.name == name.replacen('@', "#", 1));
        if kind == BACKUP_KIND && name != snapshot && kept_by_bookmark {
            let _ = run(Command::new("zfs").args(["destroy", name]));
        }
    }
    Ok(bookmark)
}

/// Destroy a snapshot this run took and did not send (the stick as it was before).
pub fn drop_unsent(snapshot: &str) {
    let _ = run(Command::new("zfs").args(["destroy", snapshot]));
}
