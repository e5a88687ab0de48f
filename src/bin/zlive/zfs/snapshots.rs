//! Snapshots of the persistence volumes, taken by the volume wait before the volume is
//! opened (before its fsck and mount): one at every boot (`persistence-snapshots=N` of them
//! kept), a rollback to one (`persistence-rollback=`), a reset to an empty volume
//! (`persistence-reset`), and `zlive snapshots` to list them with the parameter and the GRUB
//! entry that return to each.
//!
//! A rollback never destroys a snapshot: `zfs rollback -r` would destroy the newer ones. The
//! volume is replaced by a clone of the snapshot instead, which is then promoted (when not
//! encrypted); the volume as it was is kept as `VOL-zlive-rolled-TIME` (with its newer
//! snapshots, its device hidden so its label is not seen twice), and can be returned to like
//! any other snapshot.

use super::{datasets, image_change};
use crate::exec::{self, run};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use tracing::{info, warn};
use zlive::names::{Dataset, Snapshot};
use zlive::plan::Plan;
use zlive::tool_output::{self, SnapshotRow, SNAPSHOT_KIND};
use zlive::world::{ConfRead, RealWorld, World};

/// zlive's snapshots are named `zlive-TIME` and carry [`SNAPSHOT_KIND`]: a user's snapshot,
/// whatever its name, is never pruned.
const KIND: &str = SNAPSHOT_KIND;
const PREFIX: &str = "zlive-";
/// The kind of the snapshot every boot takes: the only kind pruned. The snapshots taken
/// before a reset or a rollback hold what the user asked to leave; they stay until the user
/// drops them.
const BOOT: &str = "boot";
/// A dataset whose snapshot zlive made visible for `persistence-snapshot=`, to hide again.
const VIEWED: &str = "zlive:snapdev";
/// What this boot started from, for `zlive status` and `zlive snapshots`.
pub const STARTED: &str = "/run/zlive/snapshots";
/// The dataset of each volume found, `NAME DATASET` per line.
pub const DATASETS: &str = "/run/zlive/datasets";

/// A time as `YYYYMMDDTHHMMSSZ` (UTC).
pub fn timestamp(unix: u64) -> String {
    let c = zlive::utc::Civil::from_unix(unix);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn zfs(args: &[&str]) -> Result<()> {
    let (ok, text) = run(Command::new("zfs").args(args))?;
    if !ok {
        bail!("zfs {}: {}", args.join(" "), text.replace('\n', " "));
    }
    Ok(())
}

/// Take `DATASET@zlive-TIME`, marked with its kind; the snapshot's full name.
fn take(dataset: &Dataset, kind: &str) -> Result<String> {
    let name = format!("{dataset}@{PREFIX}{}", timestamp(now()));
    let snapshot =
        |name: String| zfs(&["snapshot", "-o", &format!("{KIND}={kind}"), &name]).map(|()| name);
    // Two in one second (a rollback right after the boot's own): the second one's kind keeps
    // them apart. Tried rather than looked up first: the boot waits for every zfs process here.
    // (A kind that describes, "before image NEW (was OLD)", gives its first two words.)
    let suffix = kind
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("-");
    let taken = snapshot(name.clone()).or_else(|e| {
        if format!("{e:#}").contains("already exists") {
            snapshot(format!("{name}-{suffix}"))
        } else {
            Err(e)
        }
    });
    match taken {
        Err(e) if format!("{e:#}").contains("out of space") => bail!("{}", no_space(dataset)),
        other => other,
    }
}

fn exists(snapshot: &str) -> bool {
    run(Command::new("zfs").args(["list", "-H", "-o", "name", snapshot])).is_ok_and(|(ok, _)| ok)
}

/// Why a snapshot did not fit, with what a thick volume needs.
pub fn no_space(dataset: &Dataset) -> String {
    let props = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        "available,refreservation,volsize",
        dataset.as_str(),
    ]))
    .unwrap_or_default();
    let [available, refreservation, volsize] = props.as_slice() else {
        return format!(
            "pool {} has no space for a snapshot of {dataset}",
            dataset.pool()
        );
    };
    format!(
        "pool {} has no space for a snapshot of {dataset} ({available} available). A thick volume (refreservation={refreservation}, volsize={volsize}) needs room for all the data it holds before it can be snapshotted; free space in the pool, or make the volume sparse (zfs set refreservation=none {dataset})",
        dataset.pool()
    )
}

/// The volume's dataset and its earlier generations (kept by rollbacks).
fn lineage(dataset: &Dataset) -> Vec<String> {
    let prefix = format!("{dataset}-zlive-rolled-");
    let mut out = vec![dataset.to_string()];
    let all = exec::lines(Command::new("zfs").args([
        "list",
        "-H",
        "-t",
        "filesystem,volume",
        "-o",
        "name",
        "-r",
        dataset.pool().as_str(),
    ]))
    .unwrap_or_default();
    out.extend(all.into_iter().filter(|d| d.starts_with(&prefix)));
    out
}

/// zlive's snapshots of the volume and its generations, oldest first.
fn listing(dataset: &Dataset) -> Vec<SnapshotRow> {
    let mut out = Vec::new();
    for d in lineage(dataset) {
        let lines = exec::lines(
            Command::new("zfs")
                .args(["list", "-H", "-p", "-t", "snapshot", "-d", "1", "-o"])
                .arg(format!("name,creation,used,{KIND}"))
                .arg(&d),
        )
        .unwrap_or_default();
        out.extend(tool_output::snapshot_rows(&lines.join("\n"), PREFIX));
    }
    out.sort_by_key(|s| s.creation);
    out
}

/// The boot snapshots to destroy so that the newest `keep` of them remain: never a snapshot
/// of another kind (before a reset, before a rollback), never a user's.
fn due_for_pruning(all: &[SnapshotRow], keep: usize) -> Vec<&SnapshotRow> {
    let boots: Vec<&SnapshotRow> = all.iter().filter(|s| s.kind == BOOT).collect();
    boots[..boots.len().saturating_sub(keep)].to_vec()
}

/// Keep the newest `keep` of zlive's boot snapshots; a user's snapshots are never touched, nor
/// one another dataset was cloned from.
fn prune(dataset: &Dataset, keep: usize) {
    let all = listing(dataset);
    for snap in due_for_pruning(&all, keep) {
        let name = &snap.name;
        match zfs(&["destroy", name]) {
            Ok(()) => info!(
                ZLIVE_VOLUME = dataset.as_str(),
                "pruned snapshot {name} (persistence-snapshots= keeps {keep})"
            ),
            Err(e) => info!(
                ZLIVE_VOLUME = dataset.as_str(),
                "kept snapshot {name}: {e:#}"
            ),
        }
    }
}

/// Record what this boot started from.
fn record(path: &str, line: &str) {
    use std::io::Write;
    let written = std::fs::create_dir_all("/run/zlive").and_then(|()| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{line}")
    });
    if let Err(e) = written {
        warn!("cannot record in {path}: {e}");
    }
}

/// The dataset holding a volume found at `device`: the zvol named, the LUKS container of a
/// mapped device, or the zvol whose device it is.
pub fn dataset_of(plan: &Plan, device: &str) -> Option<Dataset> {
    located(plan, device).map(|(dataset, _)| dataset)
}

/// [`dataset_of`], and for a zvol found by its device whether an earlier read-only view left
/// it marked ([`VIEWED`]), read in the same `zfs list` (every zfs process is waited for
/// here); `None` when that was not read.
fn located(plan: &Plan, device: &str) -> Option<(Dataset, Option<bool>)> {
    if let Some(c) = plan.luks.iter().find(|c| c.mapped == device) {
        return Some((c.dataset.clone(), None));
    }
    let target = std::fs::canonicalize(device).ok()?;
    if let Some(c) = plan
        .luks
        .iter()
        .find(|c| std::fs::canonicalize(&c.mapped).ok().as_ref() == Some(&target))
    {
        return Some((c.dataset.clone(), None));
    }
    let columns = format!("name,{VIEWED}");
    let zvols =
        exec::lines(Command::new("zfs").args(["list", "-H", "-t", "volume", "-o", &columns]))
            .ok()?;
    zvols.into_iter().find_map(|row| {
        let (zvol, viewed) = row.split_once('\t')?;
        let ours = std::fs::canonicalize(format!("/dev/zvol/{zvol}")).ok()? == target;
        let dataset = Dataset::parse(zvol).ok().filter(|_| ours)?;
        Some((dataset, Some(viewed == "restore")))
    })
}

/// What a volume's snapshots are of.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// An ext4 volume at this device: the zvol below it (or below its LUKS container).
    Device(&'a str),
    /// A dataset volume: the dataset itself.
    Dataset(&'a Dataset),
}

/// What the volume wait does with snapshots once the volume is found, before it is opened:
/// a rollback or a reset if asked, else the boot's snapshot; then pruning. Returns whether the
/// volume changed under its name (a rollback), so that the caller waits for it again. A
/// failure is reported and the boot goes on with the volume as it is.
pub fn before_open(plan: &Plan, name: &str, target: Target) -> bool {
    let (dataset, device, viewed) = match target {
        Target::Dataset(d) => (d.clone(), None, None),
        Target::Device(device) => match located(plan, device) {
            Some((d, viewed)) => (d, Some(device), viewed),
            None => {
                warn!(
                    ZLIVE_VOLUME = name,
                    "persistence volume {name} ({device}) is not a zvol zlive can find: no snapshot"
                );
                return false;
            }
        },
    };
    record(DATASETS, &format!("{name} {dataset}"));
    hide_viewed(&dataset, viewed);
    let s = &plan.cmdline.snapshots;
    let mut changed = false;
    let snapshots_taken = s.reset || s.rollback.is_some() || s.keep > 0;
    if device.is_none() && snapshots_taken {
        if let Err(e) = datasets::replay_intent_log(&dataset) {
            warn!(ZLIVE_VOLUME = name, "persistence volume {name}: {e:#}");
        }
    }
    // A new live image: a snapshot from before it, which is also where this boot starts from
    // (no boot snapshot beside it).
    let marks = VolumeMarks::read(&dataset);
    let new_image = image_change::check(plan, name, &dataset, marks.image.as_deref(), |kind| {
        take(&dataset, kind)
    });
    if let Some(snap) = &new_image {
        record(STARTED, &format!("{dataset} took {snap}"));
    }
    let outcome = if s.reset {
        match device {
            Some(device) => reset(&dataset, device),
            None => reset_dataset(&dataset),
        }
    } else if let Some(target) = &s.rollback {
        rollback(&dataset, target, device.is_none()).map(|()| changed = true)
    } else if let Some(restored) = &marks.restore {
        let in_luks = plan.luks.iter().any(|c| c.dataset == dataset);
        apply_restore(plan, &dataset, restored, device.is_none(), in_luks).map(|()| changed = true)
    } else if s.keep > 0 && new_image.is_none() {
        take(&dataset, BOOT).map(|snap| {
            info!(
                ZLIVE_VOLUME = name,
                "took snapshot {snap}: this boot starts from it"
            );
            record(STARTED, &format!("{dataset} took {snap}"));
        })
    } else {
        Ok(())
    };
    if let Err(e) = outcome {
        warn!(
            ZLIVE_VOLUME = name,
            "persistence volume {name}: {e:#}. The boot goes on with the volume as it is."
        );
    }
    // Old snapshots are pruned by zlive-prune@NAME.service, beside the boot: destroying one
    // waits for a ZFS transaction group, and nothing on the way to the live root needs it.
    changed
}

/// What a volume's dataset carries for the volume step, read in one `zfs get` (every zfs
/// process is waited for here): the image it last ran under, and a restore `zlive restore`
/// left for this boot.
#[derive(Debug, Default)]
struct VolumeMarks {
    image: Option<String>,
    restore: Option<String>,
}

impl VolumeMarks {
    fn read(dataset: &Dataset) -> VolumeMarks {
        let properties = format!("{},{RESTORE_PENDING}", image_change::IMAGE);
        let lines = exec::lines(Command::new("zfs").args([
            "get",
            "-H",
            "-o",
            "property,value",
            &properties,
            dataset.as_str(),
        ]))
        .unwrap_or_default();
        let mut marks = VolumeMarks::default();
        for line in &lines {
            let (property, value) = line.split_once('\t').unwrap_or((line, "-"));
            let value = Some(value.to_owned()).filter(|v| v != "-" && !v.is_empty());
            if property == image_change::IMAGE {
                marks.image = value;
            } else if property == RESTORE_PENDING {
                marks.restore = value;
            }
        }
        marks
    }
}

/// `zlive prune-snapshots NAME` (zlive-prune@NAME.service): keep the newest
/// `persistence-snapshots=` of zlive's snapshots of a volume whose boot snapshot was taken.
pub fn prune_due(plan: &Plan, name: &str) -> Result<()> {
    let volume = plan
        .volume_named(name)
        .with_context(|| format!("no persistence volume named {name} on the kernel command line"))?
        .describe();
    if plan.cmdline.snapshots.keep == 0 {
        return Ok(());
    }
    let found = recorded_datasets().into_iter().find(|(v, _)| *v == volume);
    if let Some((_, dataset)) = found {
        prune(&dataset, plan.cmdline.snapshots.keep as usize);
    }
    Ok(())
}

/// The volumes this boot found and their datasets, as the volume step recorded them in
/// [`DATASETS`].
fn recorded_datasets() -> Vec<(String, Dataset)> {
    std::fs::read_to_string(DATASETS)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(name, d)| Some((name.to_owned(), Dataset::parse(d).ok()?)))
        .collect()
}

/// The snapshot `persistence-rollback=` names, on this volume or one of its generations:
/// `previous` is the newest of zlive's snapshots taken before this boot.
fn resolve(dataset: &Dataset, wanted: &str, before: &str) -> Result<String> {
    let all = listing(dataset);
    let found = match wanted {
        "previous" => all
            .iter()
            .rev()
            .map(|s| &s.name)
            .find(|n| n.as_str() != before)
            .cloned(),
        full if full.contains('@') => all
            .iter()
            .map(|s| &s.name)
            .find(|n| n.as_str() == full)
            .cloned(),
        short => all
            .iter()
            .map(|s| &s.name)
            .find(|n| n.ends_with(&format!("@{short}")))
            .cloned(),
    };
    found.with_context(|| {
        let names: Vec<&str> = all.iter().rev().take(5).map(|s| s.name.as_str()).collect();
        format!(
            "persistence-rollback={wanted} names no snapshot of {dataset} (zlive's newest: {}; 'zlive snapshots' lists them all)",
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        )
    })
}

/// Return the volume to a snapshot without destroying any: snapshot it as it is, clone the
/// snapshot, swap the clone in under the volume's name, promote it, and keep the volume as it
/// was as a hidden generation.
fn rollback(dataset: &Dataset, wanted: &str, is_dataset: bool) -> Result<()> {
    // Check the name before anything is written: a misspelt one leaves the volume untouched.
    let probe = resolve(dataset, wanted, "")?;
    let before = take(dataset, "before-rollback")?;
    let target = match wanted {
        "previous" => resolve(dataset, wanted, &before)?,
        _ => probe,
    };
    let old = generation_name(dataset, &before);
    let steps = match is_dataset {
        false => swap_steps(dataset.as_str(), &target, &old),
        true => dataset_swap_steps(dataset.as_str(), &target, &old, &own_label(dataset)),
    };
    run_steps(&steps, &mut |args| zfs(args))?;
    promote_unless_encrypted(dataset, &old);
    let before = moved_to(&before, &old);
    info!(
        ZLIVE_VOLUME = dataset.as_str(),
        "rolled {dataset} back to {target}; the state before is {before} (persistence-rollback={before} returns to it)"
    );
    record(
        STARTED,
        &format!("{dataset} rolled-back-to {target} before {before}"),
    );
    Ok(())
}

/// The name the volume as it was keeps after a rollback or a restore: `VOL-zlive-rolled-`
/// and the time of `before`, the snapshot taken of it first.
fn generation_name(dataset: &Dataset, before: &str) -> String {
    let stamp = before.rsplit_once(PREFIX).map_or("old", |(_, t)| t);
    format!("{dataset}-zlive-rolled-{stamp}")
}

/// The snapshot `before` under its volume's new name `old`: it went with the volume it was
/// taken of.
fn moved_to(before: &str, old: &str) -> String {
    match before.split_once('@') {
        Some((_, name)) => format!("{old}@{name}"),
        None => before.to_owned(),
    }
}

/// Make the volume the origin of what it was cloned from, so that the old generation can be
/// destroyed on its own later; the volume works either way. Not when it is encrypted: the
/// promotion moves the encryption root to it, and the key loaded for the old root does not
/// follow, which would lock the volume until the next boot.
fn promote_unless_encrypted(dataset: &Dataset, old: &str) {
    let root = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        "encryptionroot",
        dataset.as_str(),
    ]))
    .ok()
    .and_then(|v| v.into_iter().next())
    .unwrap_or_default();
    if !matches!(root.as_str(), "" | "-") {
        info!(
            ZLIVE_VOLUME = dataset.as_str(),
            "{dataset} stays a clone of {old} (encrypted: promoting it now would lock it); to destroy {old} later, run zfs promote {dataset}, then zfs load-key {dataset}, on a system not running from it"
        );
        return;
    }
    if let Err(e) = zfs(&["promote", dataset.as_str()]) {
        warn!(ZLIVE_VOLUME = dataset.as_str(), "{e:#}");
    }
}

/// One `zfs` step of a change, and the step that undoes it.
type Step = (Vec<String>, Option<Vec<String>>);

/// The swap of a rollback: the clone of `target` is hidden (`volmode=none`) until it has the
/// volume's name, so that its label is never seen twice; the volume as it was is renamed and
/// hidden for good. Every step has its undo.
fn swap_steps(dataset: &str, target: &str, old: &str) -> Vec<Step> {
    let fresh = format!("{dataset}-zlive-new");
    let v = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    vec![
        (
            v(&["clone", "-o", "volmode=none", target, &fresh]),
            Some(v(&["destroy", &fresh])),
        ),
        (
            v(&["rename", dataset, old]),
            Some(v(&["rename", old, dataset])),
        ),
        (
            v(&["set", "volmode=none", old]),
            Some(v(&["inherit", "volmode", old])),
        ),
        (
            v(&["rename", &fresh, dataset]),
            Some(v(&["rename", dataset, &fresh])),
        ),
        (v(&["inherit", "volmode", dataset]), None),
    ]
}

/// The persistence label a dataset carries itself (`org.zlive:label`), empty when none.
fn own_label(dataset: &Dataset) -> String {
    exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-s",
        "local",
        "-o",
        "value",
        zlive::tool_output::DATASET_LABEL,
        dataset.as_str(),
    ]))
    .ok()
    .and_then(|v| v.into_iter().next())
    .unwrap_or_default()
}

/// The swap of a dataset's rollback: the clone of `target` carries no persistence label
/// until it has the dataset's name (a clone does not take its origin's own properties), and
/// the dataset as it was gives its label up; neither is ever mounted by ZFS
/// (`canmount=noauto`). Every step has its undo.
fn dataset_swap_steps(dataset: &str, target: &str, old: &str, label: &str) -> Vec<Step> {
    use zlive::tool_output::DATASET_LABEL;
    let fresh = format!("{dataset}-zlive-new");
    let v = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let mut steps = vec![
        (
            v(&["clone", "-o", "canmount=noauto", target, &fresh]),
            Some(v(&["destroy", &fresh])),
        ),
        (
            v(&["rename", dataset, old]),
            Some(v(&["rename", old, dataset])),
        ),
        (v(&["set", "canmount=noauto", old]), None),
    ];
    if !label.is_empty() {
        let labelled = format!("{DATASET_LABEL}={label}");
        steps.push((
            v(&["inherit", DATASET_LABEL, old]),
            Some(v(&["set", &labelled, old])),
        ));
        steps.push((
            v(&["rename", &fresh, dataset]),
            Some(v(&["rename", dataset, &fresh])),
        ));
        steps.push((v(&["set", &labelled, dataset]), None));
    } else {
        steps.push((
            v(&["rename", &fresh, dataset]),
            Some(v(&["rename", dataset, &fresh])),
        ));
    }
    steps
}

/// Run the steps in order; when one fails, undo those done, newest first, and return its
/// error: a failed rollback leaves the volume as it was, and no clone carrying its label.
fn run_steps(steps: &[Step], zfs: &mut dyn FnMut(&[&str]) -> Result<()>) -> Result<()> {
    for (done, (step, _)) in steps.iter().enumerate() {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        if let Err(e) = zfs(&args) {
            undo_steps(&steps[..done], zfs);
            return Err(e.context("the change was undone"));
        }
    }
    Ok(())
}

/// Undo steps that were done, newest first.
fn undo_steps(done: &[Step], zfs: &mut dyn FnMut(&[&str]) -> Result<()>) {
    for (_, undo) in done.iter().rev() {
        if let Some(undo) = undo {
            let args: Vec<&str> = undo.iter().map(String::as_str).collect();
            if let Err(u) = zfs(&args) {
                warn!("undoing a failed change of the volume: {u:#}");
            }
        }
    }
}

/// The property `zlive restore` (onto the same stick) sets on the volume: the hidden dataset
/// it received into, which the next boot swaps in.
pub const RESTORE_PENDING: &str = "org.zlive:restore-pending";

/// Where a restore onto the same stick receives: beside the volume, hidden until swapped in.
pub fn restored_name(dataset: &Dataset, stamp: &str) -> String {
    format!("{dataset}-zlive-restored-{stamp}")
}

/// A restore `zlive restore` left for this boot: snapshot the volume as the last boot left
/// it, then swap the restored dataset in under its name (and label), keeping the volume as it
/// was as a generation a rollback returns to, as a rollback does. An encrypted restore has
/// its own key, asked for here; without it everything is swapped back and the restore waits.
fn apply_restore(
    plan: &Plan,
    dataset: &Dataset,
    restored: &str,
    is_dataset: bool,
    in_luks: bool,
) -> Result<()> {
    let drop_it = format!("zfs inherit {RESTORE_PENDING} {dataset} drops it");
    if !restored.starts_with(&restored_name(dataset, "")) || Dataset::parse(restored).is_err() {
        bail!("{RESTORE_PENDING}={restored} names no restore of {dataset} zlive made: left alone ({drop_it})");
    }
    if in_luks {
        bail!("a restore waits in {restored}, but {dataset} holds a LUKS container, which zlive does not swap: restore onto another disk instead ({drop_it})");
    }
    if !exists(restored) {
        bail!("the restore {RESTORE_PENDING} names, {restored}, is gone ({drop_it})");
    }
    let before = take(dataset, "before-restore")?;
    let old = generation_name(dataset, &before);
    let label = match is_dataset {
        true => own_label(dataset),
        false => String::new(),
    };
    let steps = restore_swap_steps(dataset.as_str(), restored, &old, is_dataset, &label);
    run_steps(&steps, &mut |args| zfs(args))?;
    if let Some(root) = super::keys::locked_root_of(dataset) {
        if let Err(e) = super::keys::load_key(plan, &root) {
            undo_steps(&steps, &mut |args| zfs(args));
            bail!("the restored {dataset} stays locked ({e:#}): the volume as it was is used, and the restore waits for the next boot ({drop_it})");
        }
    }
    let before = moved_to(&before, &old);
    info!(
        ZLIVE_VOLUME = dataset.as_str(),
        "restored {dataset} from the backup zlive restore received; the volume as it was is {old} (persistence-rollback={before} returns to it)"
    );
    exec::console(&format!(
        "zlive: {dataset} is the restored backup now; the state before is kept: persistence-rollback={before} returns to it\n"
    ));
    record(STARTED, &format!("{dataset} restored before {before}"));
    Ok(())
}

/// The swap of a restore: the volume becomes the hidden generation `old` (a zvol without a
/// device, a dataset without its label) and gives up the pending mark; the restored dataset
/// takes its name and is no longer hidden. Every step has its undo.
fn restore_swap_steps(
    dataset: &str,
    restored: &str,
    old: &str,
    is_dataset: bool,
    label: &str,
) -> Vec<Step> {
    use zlive::tool_output::DATASET_LABEL;
    let v = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let labelled = format!("{DATASET_LABEL}={label}");
    // (hide, show) for a volume named `name`.
    let hide_show = |name: &str| -> Option<(Vec<String>, Vec<String>)> {
        match (is_dataset, label.is_empty()) {
            (false, _) => Some((
                v(&["set", "volmode=none", name]),
                v(&["inherit", "volmode", name]),
            )),
            (true, false) => Some((
                v(&["inherit", DATASET_LABEL, name]),
                v(&["set", &labelled, name]),
            )),
            (true, true) => None,
        }
    };
    let mut steps = vec![(
        v(&["rename", dataset, old]),
        Some(v(&["rename", old, dataset])),
    )];
    if let Some((hide, show)) = hide_show(old) {
        steps.push((hide, Some(show)));
    }
    steps.push((
        v(&["rename", restored, dataset]),
        Some(v(&["rename", dataset, restored])),
    ));
    if let Some((hide, show)) = hide_show(dataset) {
        steps.push((show, Some(hide)));
    }
    steps.push((
        v(&["inherit", RESTORE_PENDING, old]),
        Some(v(&["set", &format!("{RESTORE_PENDING}={restored}"), old])),
    ));
    steps
}

/// Start from an empty volume: snapshot it, make a new file system with the same label and
/// UUID, and put its persistence.conf back (the configuration stays, the data goes). The
/// persistence.conf kept is read as the generator reads it; one it would refuse (a symlink,
/// a device, too big, not root's) refuses the reset, which then changes nothing.
fn reset(dataset: &Dataset, device: &str) -> Result<()> {
    let before = take(dataset, "before-reset")?;
    let node = std::fs::canonicalize(device)?
        .to_string_lossy()
        .into_owned();
    let label = exec::probe(&node, "LABEL").context("the volume has no label")?;
    let uuid = exec::probe(&node, "UUID").context("the volume has no UUID")?;
    let dir = Path::new(RESET_DIR);
    std::fs::create_dir_all(dir)?;
    let conf = with_mounted(&node, dir, "ro,noload,nodev,nosuid,noexec", |d| {
        conf_to_keep(d)
    })
    .with_context(|| {
        format!("persistence-reset refused, the volume is as it was (and {before} holds it too)")
    })?;
    let (ok, text) =
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", &label, "-U", &uuid, &node]))?;
    if !ok {
        bail!("mkfs.ext4 failed: {text}");
    }
    if let Some(conf) = conf {
        with_mounted(&node, dir, "rw,nodev,nosuid,noexec", |d| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(d.join(zlive::paths::CONF_NAME))?;
            file.write_all(&conf)?;
            Ok(())
        })?;
    }
    info!(
        ZLIVE_VOLUME = dataset.as_str(),
        "reset {dataset}: a new, empty file system with its persistence.conf; the state before is {before} (persistence-rollback={before} returns to it)"
    );
    record(STARTED, &format!("{dataset} reset before {before}"));
    Ok(())
}

/// Start a dataset from empty: snapshot it, then remove everything at its root but its
/// persistence.conf, which must pass the generator's checks (or the reset is refused and the
/// dataset stays as it was). In place, so that an encrypted dataset stays encrypted under its
/// own key; what was there stays in the snapshot.
fn reset_dataset(dataset: &Dataset) -> Result<()> {
    let before = take(dataset, "before-reset")?;
    let dir = Path::new(RESET_DIR);
    std::fs::create_dir_all(dir)?;
    let (ok, text) = run(Command::new("mount")
        .args(["-t", "zfs", "-o", "zfsutil,nosuid,nodev,noexec"])
        .arg(dataset.as_str())
        .arg(dir))?;
    if !ok {
        bail!("mounting {dataset} failed: {text}");
    }
    let emptied = conf_to_keep(dir)
        .with_context(|| {
            format!(
                "persistence-reset refused, the dataset is as it was (and {before} holds it too)"
            )
        })
        .and_then(|_| empty_but_conf(dir));
    let _ = run(Command::new("umount").arg(dir));
    emptied?;
    info!(
        ZLIVE_VOLUME = dataset.as_str(),
        "reset {dataset}: emptied but for its persistence.conf; the state before is {before} (persistence-rollback={before} returns to it)"
    );
    record(STARTED, &format!("{dataset} reset before {before}"));
    Ok(())
}

/// Remove everything in `dir` but persistence.conf (symlinks are removed, never followed).
fn empty_but_conf(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == zlive::paths::CONF_NAME {
            continue;
        }
        let path = entry.path();
        match entry.file_type()?.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        }
        .with_context(|| format!("Failed to remove {}", path.display()))?;
    }
    Ok(())
}

/// Where a reset mounts the volume.
const RESET_DIR: &str = "/run/zlive/reset";

/// The persistence.conf of the volume mounted at `dir`, read by the generator's own checks;
/// `None` when there is none, an error when it would not be used.
fn conf_to_keep(dir: &Path) -> Result<Option<Vec<u8>>> {
    let (root, volume) = match dir.strip_prefix("/") {
        Ok(rel) => (Path::new("/"), format!("/{}", rel.display())),
        Err(_) => (dir, "/".to_owned()),
    };
    match RealWorld::new(root).read_conf(&volume) {
        ConfRead::Missing => Ok(None),
        ConfRead::Text(bytes) => Ok(Some(bytes)),
        ConfRead::Refused(why) => bail!("its {} is not kept: {why}", zlive::paths::CONF_NAME),
    }
}

/// Mount `device` at `dir` with `options`, run `f`, unmount.
fn with_mounted<T>(
    device: &str,
    dir: &Path,
    options: &str,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let (ok, text) = run(Command::new("mount")
        .args(["-t", "ext4", "-o", options, device])
        .arg(dir))?;
    if !ok {
        bail!("mounting {device} failed: {text}");
    }
    let result = f(dir);
    let _ = run(Command::new("umount").arg(dir));
    result
}

/// `persistence-snapshot=`: make the snapshot's device visible (the dataset is marked, so that
/// the next boot hides the snapshots again).
pub fn show(view: &Snapshot) -> Result<()> {
    if !exists(&view.to_string()) {
        bail!("there is no snapshot {view} ('zlive snapshots' lists them)");
    }
    zfs(&["set", &format!("{VIEWED}=restore"), view.dataset.as_str()])?;
    zfs(&["set", "snapdev=visible", view.dataset.as_str()])?;
    record(
        STARTED,
        &format!("{} booted-read-only {view}", view.dataset),
    );
    Ok(())
}

/// Hide the snapshot devices an earlier `persistence-snapshot=` boot made visible; `marked`
/// when the mark was already read.
fn hide_viewed(dataset: &Dataset, marked: Option<bool>) {
    let marked = marked.unwrap_or_else(|| {
        exec::lines(Command::new("zfs").args([
            "get",
            "-H",
            "-o",
            "value",
            VIEWED,
            dataset.as_str(),
        ]))
        .is_ok_and(|v| v.first().is_some_and(|v| v == "restore"))
    });
    if marked {
        let _ = zfs(&["inherit", "snapdev", dataset.as_str()]);
        let _ = zfs(&["inherit", VIEWED, dataset.as_str()]);
    }
}

/// `zlive snapshots [--json]`: zlive's snapshots of every volume this boot found.
pub fn list(as_json: bool) -> Result<bool> {
    let started = std::fs::read_to_string(STARTED).unwrap_or_default();
    let cmdline = std::fs::read_to_string(zlive::paths::PROC_CMDLINE).unwrap_or_default();
    let mut rows = Vec::new();
    for (name, dataset) in recorded_datasets() {
        for s in listing(&dataset) {
            let snap = &s.name;
            let start = started
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(snap.as_str()));
            // Only boot snapshots are pruned; the others stay until the user drops them.
            let drop = match s.kind == BOOT {
                true => serde_json::Value::Null,
                false => json!(format!("zfs destroy {snap}")),
            };
            rows.push(json!({
                "volume": name, "snapshot": snap, "created": timestamp(s.creation),
                "used": s.used, "kind": s.kind, "started_this_boot": start,
                "pruned": s.kind == BOOT, "drop": drop,
                "parameter": format!("persistence-rollback={snap}"),
                "grub": grub_entry(&cmdline, snap, &timestamp(s.creation)),
            }));
        }
    }
    if as_json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(true);
    }
    if rows.is_empty() {
        println!(
            "no snapshots of zlive's (persistence-snapshots=0, or no volume found in this boot)"
        );
    }
    for r in &rows {
        let mark = if r["started_this_boot"] == true {
            "  <- this boot"
        } else {
            ""
        };
        println!(
            "{}  {}  {} bytes used  ({}){mark}",
            r["snapshot"].as_str().unwrap_or(""),
            r["created"].as_str().unwrap_or(""),
            r["used"],
            r["kind"].as_str().unwrap_or("")
        );
        println!(
            "    return to it: {}",
            r["parameter"].as_str().unwrap_or("")
        );
        if let Some(drop) = r["drop"].as_str() {
            println!("    never pruned; drop it when you no longer need it: {drop}");
        }
        for l in r["grub"].as_str().unwrap_or("").lines() {
            println!("    {l}");
        }
    }
    Ok(true)
}

/// A GRUB menu entry that boots this system with the volume rolled back to `snap`: this boot's
/// kernel command line, without zlive's one-time parameters, plus the rollback.
pub fn grub_entry(cmdline: &str, snap: &str, created: &str) -> String {
    let one_time = [
        "persistence-rollback=",
        "persistence-reset",
        "persistence-snapshot=",
        "BOOT_IMAGE=",
        "initrd=",
    ];
    let words = zlive::cmdline::split_words(cmdline);
    let kernel = words
        .iter()
        .find_map(|w| w.strip_prefix("BOOT_IMAGE="))
        .unwrap_or("/live/vmlinuz");
    let kept: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| !one_time.iter().any(|p| w.starts_with(p)))
        .collect();
    format!(
        "menuentry 'Live system, persistence as of {created}' {{\n    linux {kernel} {} persistence-rollback={snap}\n    initrd /live/initrd.img\n}}",
        kept.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_boot_snapshots_are_pruned() {
        let snap = |n: u64, kind: &str| SnapshotRow {
            name: format!("dpool/p@zlive-{n}"),
            creation: n,
            used: 0,
            kind: kind.to_owned(),
        };
        let all = [
            snap(1, "boot"),
            snap(2, "before-reset"),
            snap(3, "boot"),
            snap(4, "before-rollback"),
            snap(5, "boot"),
        ];
        let names = |keep| -> Vec<String> {
            due_for_pruning(&all, keep)
                .iter()
                .map(|s| s.name.clone())
                .collect()
        };
        assert_eq!(names(1), ["dpool/p@zlive-1", "dpool/p@zlive-3"]);
        assert_eq!(names(2), ["dpool/p@zlive-1"]);
        assert!(names(5).is_empty());
    }

    /// A reset keeps persistence.conf only as the generator would read it: a symlink to a
    /// file of the initrd (or a device, or a FIFO) refuses the reset.
    #[test]
    fn a_reset_keeps_only_a_conf_the_generator_would_read() {
        let volume = crate::testing::tmp();
        assert_eq!(conf_to_keep(&volume).unwrap(), None);
        std::os::unix::fs::symlink("/etc/hostname", volume.join("persistence.conf")).unwrap();
        let err = conf_to_keep(&volume).unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        std::fs::remove_file(volume.join("persistence.conf")).unwrap();
        nix::unistd::mkfifo(
            &volume.join("persistence.conf"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(conf_to_keep(&volume).is_err());
    }

    /// A rollback whose swap fails part-way is undone, newest step first, and no clone with
    /// the volume's label is left visible.
    #[test]
    fn a_failed_swap_is_undone() {
        let steps = swap_steps("dpool/p", "dpool/p@zlive-1", "dpool/p-zlive-rolled-2");
        assert_eq!(
            steps[0].0,
            [
                "clone",
                "-o",
                "volmode=none",
                "dpool/p@zlive-1",
                "dpool/p-zlive-new"
            ]
        );
        for fail_at in 0..steps.len() {
            let mut calls: Vec<String> = Vec::new();
            let mut n = 0;
            let result = run_steps(&steps, &mut |args| {
                calls.push(args.join(" "));
                n += 1;
                match n == fail_at + 1 {
                    true => anyhow::bail!("no"),
                    false => Ok(()),
                }
            });
            assert!(result.is_err());
            let undone: Vec<&str> = calls[fail_at + 1..].iter().map(String::as_str).collect();
            let expected: Vec<String> = steps[..fail_at]
                .iter()
                .rev()
                .filter_map(|(_, u)| u.as_ref().map(|u| u.join(" ")))
                .collect();
            assert_eq!(undone, expected, "failing at step {fail_at}");
        }
        let mut all = 0;
        run_steps(&steps, &mut |_| {
            all += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(all, steps.len());
    }

    /// A dataset's rollback moves the label with the name: at no point do two datasets carry
    /// it, and a failed swap gives it back.
    #[test]
    fn a_restore_swap_hides_the_old_volume_and_undoes_in_reverse() {
        let steps = restore_swap_steps(
            "p/v",
            "p/v-zlive-restored-T",
            "p/v-zlive-rolled-S",
            false,
            "",
        );
        let done: Vec<String> = steps.iter().map(|(s, _)| s.join(" ")).collect();
        assert_eq!(
            done,
            [
                "rename p/v p/v-zlive-rolled-S",
                "set volmode=none p/v-zlive-rolled-S",
                "rename p/v-zlive-restored-T p/v",
                "inherit volmode p/v",
                "inherit org.zlive:restore-pending p/v-zlive-rolled-S",
            ]
        );
        // The last step fails: everything before it is undone, newest first.
        let mut seen = Vec::new();
        let failed = run_steps(&steps, &mut |args| {
            seen.push(args.join(" "));
            match args[0] == "inherit" && args[1] == RESTORE_PENDING {
                true => bail!("no"),
                false => Ok(()),
            }
        });
        assert!(failed.is_err());
        assert_eq!(
            seen[5..],
            [
                "set volmode=none p/v",
                "rename p/v p/v-zlive-restored-T",
                "inherit volmode p/v-zlive-rolled-S",
                "rename p/v-zlive-rolled-S p/v",
            ]
        );
        // A labelled dataset moves its label; one without a label has nothing to hide.
        let moved = restore_swap_steps(
            "p/d",
            "p/d-zlive-restored-T",
            "p/d-old",
            true,
            "persistence",
        );
        assert_eq!(moved[1].0.join(" "), "inherit org.zlive:label p/d-old");
        assert_eq!(moved[3].0.join(" "), "set org.zlive:label=persistence p/d");
        let bare = restore_swap_steps("p/d", "p/d-zlive-restored-T", "p/d-old", true, "");
        assert_eq!(bare.len(), 3);
    }

    #[test]
    fn a_datasets_swap_moves_its_label() {
        let steps = dataset_swap_steps(
            "dpool/live",
            "dpool/live@zlive-1",
            "dpool/live-zlive-rolled-2",
            "persistence",
        );
        let line = |i: usize| steps[i].0.join(" ");
        assert_eq!(
            line(0),
            "clone -o canmount=noauto dpool/live@zlive-1 dpool/live-zlive-new"
        );
        let inherit = steps.iter().position(|(s, _)| s[0] == "inherit").unwrap();
        let labelled = steps
            .iter()
            .position(|(s, _)| s.join(" ") == "set org.zlive:label=persistence dpool/live")
            .unwrap();
        assert!(inherit < labelled, "the old one gives its label up first");
        let mut calls = Vec::new();
        let failed = run_steps(&steps, &mut |args| {
            calls.push(args.join(" "));
            match args[0] == "rename" && args[1] == "dpool/live-zlive-new" {
                true => anyhow::bail!("no"),
                false => Ok(()),
            }
        });
        assert!(failed.is_err());
        assert!(
            calls.contains(&"set org.zlive:label=persistence dpool/live-zlive-rolled-2".to_owned()),
            "{calls:?}"
        );
        assert_eq!(
            calls.last().map(String::as_str),
            Some("destroy dpool/live-zlive-new")
        );
    }

    #[test]
    fn emptying_keeps_only_the_conf() {
        let dir = crate::testing::tmp();
        std::fs::write(dir.join("persistence.conf"), "/home union\n").unwrap();
        std::fs::create_dir_all(dir.join("home/rw/user")).unwrap();
        std::fs::write(dir.join("home/rw/user/f"), "x").unwrap();
        let outside = crate::testing::tmp();
        std::fs::write(outside.join("kept"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        empty_but_conf(&dir).unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["persistence.conf"]);
        assert!(
            outside.join("kept").exists(),
            "a symlink is removed, not followed"
        );
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(timestamp(0), "19700101T000000Z");
        assert_eq!(timestamp(1_795_737_599), "20261126T235959Z");
        assert_eq!(timestamp(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn grub_entries_carry_the_boot_and_the_rollback() {
        let e = grub_entry(
            "BOOT_IMAGE=/live/vmlinuz-6.12 boot=live persistence persistence-rollback=previous quiet",
            "dpool/persistence@zlive-20261126T235959Z",
            "20261126T235959Z",
        );
        assert!(e.contains("linux /live/vmlinuz-6.12 boot=live persistence quiet persistence-rollback=dpool/persistence@zlive-20261126T235959Z"), "{e}");
        assert!(
            e.starts_with("menuentry 'Live system, persistence as of 20261126T235959Z' {"),
            "{e}"
        );
        assert!(!e.contains("persistence-rollback=previous"), "{e}");
    }
}
