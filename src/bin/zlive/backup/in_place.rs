//! `zlive restore SRC` without `--to`: back onto the stick in use. Nothing is destroyed and
//! nothing in use changes: the volume is snapshotted (`before-restore`), the backup is
//! received beside it (`VOL-zlive-restored-TIME`, hidden), and the volume is marked
//! (`org.zlive:restore-pending`). The next boot swaps the restored state in before the
//! volume is opened and keeps the volume as it was as a generation a rollback returns to
//! (see `zfs/snapshots.rs`).

use super::source::{self, Source};
use super::{receive, Landing, RestorePlan};
use crate::cli::args::RestoreArgs;
use crate::exec;
use crate::zfs::snapshots::{now, restored_name, timestamp, RESTORE_PENDING};
use anyhow::{bail, Result};
use std::process::Command;

/// The kind of the snapshot taken of the state a restore replaces.
const BEFORE_RESTORE: &str = "before-restore";

/// Receive the backup beside this stick's volume, for the next boot to swap in.
pub fn restore_here(plan: RestorePlan, args: &RestoreArgs) -> Result<bool> {
    let here = source::find(args.volume.as_deref(), &args.label)?;
    if here.zvol != plan.zvol {
        bail!(
            "the backup holds {}, and {} is {}: restore it onto another disk (--to /dev/...)",
            kind(plan.zvol),
            here.dataset,
            kind(here.zvol)
        );
    }
    if let Some(waiting) = waiting(&here)? {
        bail!(
            "a restore already waits for the next boot in {waiting}. Boot once to use it, or drop it: zfs destroy -r {waiting}; zfs inherit {RESTORE_PENDING} {}",
            here.dataset
        );
    }
    let restored = restored_name(&here.dataset, &timestamp(now()));
    let before = source::snapshot(&here, BEFORE_RESTORE)?;
    if let Err(e) = receive(plan, &restored, &args.label, Landing::Waiting) {
        let _ = exec::run(Command::new("zfs").args(["destroy", "-r", &restored]));
        source::drop_unsent(&before);
        return Err(e.context(format!(
            "nothing changed on {}; the restore was not kept",
            here.dataset
        )));
    }
    let mark = format!("{RESTORE_PENDING}={restored}");
    let (ok, said) = exec::run(Command::new("zfs").args(["set", &mark, here.dataset.as_str()]))?;
    if !ok {
        bail!(
            "could not mark {} for the next boot: {said} ({restored} holds the restore)",
            here.dataset
        );
    }
    println!(
        "The restore waits in {restored}: the next boot uses it as {}. The state now is kept: {before} (taken now), and the volume as it is at shutdown becomes {}-zlive-rolled-TIME, which zlive snapshots lists with the persistence-rollback= that returns to it.",
        here.dataset, here.dataset
    );
    Ok(true)
}

fn kind(zvol: bool) -> &'static str {
    match zvol {
        true => "ext4 on a zvol",
        false => "a dataset",
    }
}

/// The restore already marked on the volume, if any.
fn waiting(here: &Source) -> Result<Option<String>> {
    let value = crate::zfs::property(here.dataset.as_str(), RESTORE_PENDING)?;
    Ok(Some(value).filter(|v| !v.is_empty() && v != "-"))
}
