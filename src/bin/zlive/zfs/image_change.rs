//! A new live image under old persistence: noticed by the volume step, before anything opens
//! the volume. The identity of the image this boot runs (see `zlive::image`) is compared with
//! the one stored with the volume, as a ZFS user property of its dataset: readable before the
//! volume is opened (an ext4 volume's file would need a mount, which writes), kept by a reset
//! (the file system is made again, the dataset stays), and sent along by `zfs send -p`. The
//! identity before is kept beside it.
//!
//! On a change a snapshot named for it is taken first (never pruned), then the volume's
//! record is updated, and the change is said on the console and in the journal and written to
//! [`CHANGED`] for the entries' preparation (`reset-system`) and `zlive status`.

use crate::exec;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use tracing::{info, warn};
use zlive::image::{Identity, OnChange, Squashfs};
use zlive::names::Dataset;
use zlive::paths::MEDIUM_DIR;
use zlive::plan::Plan;

/// The identity of the image the volume last ran under, and the one before it.
pub const IMAGE: &str = "org.zlive:image";
pub const IMAGE_BEFORE: &str = "org.zlive:image-before";
/// This boot's change of image, for the entries' preparation and `zlive status`: `KEY VALUE`
/// lines (`volume`, `old`, `new`, `snapshot`, `choice`), a block per volume.
pub const CHANGED: &str = "/run/zlive/image-changed";

/// The image this boot runs: the superblock of the squashfs file the image is mounted from
/// (read from the file, so the volume's step need not wait for the loop mount), the kernel's
/// release and the medium's `.disk/info`; `None` when the file cannot be read or is no
/// squashfs.
pub fn current(plan: &Plan) -> Option<Identity> {
    let file = plan.image_source();
    let mut superblock = [0u8; 96];
    let read = std::fs::File::open(&file).and_then(|mut f| f.read_exact(&mut superblock));
    if let Err(e) = read {
        warn!("cannot read the live image's superblock from {file}: {e}");
        return None;
    }
    let squashfs = Squashfs::from_superblock(&superblock)?;
    let kernel = nix::sys::utsname::uname().ok()?;
    let info = crate::early::medium::small_file(&Path::new(MEDIUM_DIR).join(".disk/info"));
    Some(Identity::new(
        squashfs,
        &kernel.release().to_string_lossy(),
        info.as_deref(),
    ))
}

fn record(dataset: &Dataset, now: &Identity, before: Option<&Identity>) {
    let mut cmd = Command::new("zfs");
    cmd.arg("set").arg(format!("{IMAGE}={}", now.to_property()));
    if let Some(before) = before {
        cmd.arg(format!("{IMAGE_BEFORE}={}", before.to_property()));
    }
    if let Err(e) = exec::lines(cmd.arg(dataset.as_str())) {
        warn!("cannot record the live image on {dataset}: {e:#}");
    }
}

/// Before `dataset` (volume `name`) is opened: compare this boot's image with the one the
/// volume last ran under (`stored`, its [`IMAGE`] property). The first boot only records it;
/// a different one is kept from in a snapshot (`take` makes it, of the kind given, and names
/// it), said, and recorded. Returns the snapshot's name when the image changed and the
/// snapshot was taken.
pub fn check(
    plan: &Plan,
    name: &str,
    dataset: &Dataset,
    stored: Option<&str>,
    take: impl FnOnce(&str) -> anyhow::Result<String>,
) -> Option<String> {
    let now = current(plan)?;
    let Some(old) = stored.and_then(Identity::from_property) else {
        record(dataset, &now, None);
        return None;
    };
    if old.same_as(&now) {
        return None;
    }
    let kind = format!("before image {} (was {})", now.describe(), old.describe());
    let snapshot = match take(&kind) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            warn!(
                ZLIVE_VOLUME = name,
                "the live image changed ({} -> {}), and no snapshot of {dataset} could be taken before it: {e:#}. Nothing on the volume is reset; persistence goes on as it is.",
                old.describe(),
                now.describe()
            );
            return None;
        }
    };
    record(dataset, &now, Some(&old));
    let choice = plan.cmdline.snapshots.image_change;
    let what_happens = match choice {
        OnChange::Keep => "Everything on the volume is kept (persistence-image-change=keep): the union entries over the image's own directories (each named as it is prepared) hide the new image's files with theirs; persistence-image-change=reset-system starts them empty".to_owned(),
        OnChange::ResetSystem => "persistence-image-change=reset-system: the union entries over the image's own directories start empty (each says so as it is prepared); /home, /root, /srv and source= entries are kept".to_owned(),
    };
    let said = format!(
        "the live image changed: {} -> {}. The state of {dataset} before this boot is kept in {snapshot} (never pruned); to return to it, boot the old image with persistence-rollback={snapshot}. {what_happens}.",
        old.describe(),
        now.describe()
    );
    info!(ZLIVE_VOLUME = name, "{said}");
    exec::console(&format!("zlive: {said}\n"));
    let choice = match choice {
        OnChange::Keep => "keep",
        OnChange::ResetSystem => "reset-system",
    };
    let block = format!(
        "volume {name}\nold {}\nnew {}\nsnapshot {snapshot}\nchoice {choice}\n\n",
        old.describe(),
        now.describe()
    );
    if let Err(e) = append(&block) {
        warn!("cannot record the change of image in {CHANGED}: {e}");
    }
    Some(snapshot)
}

fn append(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = Path::new(CHANGED).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(CHANGED)?
        .write_all(text.as_bytes())
}

/// A change of image this boot found under a volume, as [`CHANGED`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub volume: String,
    pub old: String,
    pub new: String,
    /// The snapshot from before it.
    pub snapshot: String,
    /// `keep` or `reset-system`.
    pub choice: String,
}

/// The changes [`CHANGED`] records.
pub fn changes() -> Vec<Change> {
    parse_changes(&std::fs::read_to_string(CHANGED).unwrap_or_default())
}

fn parse_changes(text: &str) -> Vec<Change> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                    .map(str::to_owned)
            };
            Some(Change {
                volume: field("volume")?,
                old: field("old")?,
                new: field("new")?,
                snapshot: field("snapshot")?,
                choice: field("choice")?,
            })
        })
        .collect()
}

/// The change of image this boot found under `volume`, if any.
pub fn found_under(volume: &str) -> Option<Change> {
    changes().into_iter().find(|c| c.volume == volume)
}

/// The directories of the plan's entries on `volume` that lie over the image's own
/// directories (`zlive::image::over_the_image`): what a new image's files are hidden by.
pub fn entries_over_the_image(plan: &Plan, volume: &str) -> Vec<String> {
    plan.entries
        .iter()
        .filter(|e| plan.volumes[e.volume].describe() == volume)
        .filter(|e| zlive::image::over_the_image(&e.entry))
        .map(|e| e.entry.dir.clone())
        .collect()
}

/// What `zlive status` says about the changes of image; `over` gives the entries of a volume
/// that lie over the image's own directories.
pub fn status_text(changes: &[Change], over: impl Fn(&str) -> Vec<String>) -> String {
    changes
        .iter()
        .map(|c| {
            let entries = over(&c.volume);
            let entries = match (entries.is_empty(), c.choice.as_str()) {
                (true, _) => "no entry lies over the image's own directories".to_owned(),
                (false, "reset-system") => format!(
                    "reset for it (they lie over the image's own directories): {}",
                    entries.join(", ")
                ),
                (false, _) => format!(
                    "kept over the image's own directories, where their files hide the new image's: {}",
                    entries.join(", ")
                ),
            };
            format!(
                "  image      the live image changed under {}: {} -> {}\n             {entries}\n             the state before is in {} (never pruned); boot the old image with persistence-rollback={} to return to it (persistence-image-change={})\n",
                c.volume, c.old, c.new, c.snapshot, c.snapshot, c.choice
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_changes_read_back_and_are_said() {
        let text =
            "volume LABEL=persistence\nold image made 2026-01-01 10:00 UTC, 300 MiB, kernel 6.1\n\
                    new image made 2026-12-01 10:00 UTC, 310 MiB, kernel 6.12\n\
                    snapshot dpool/persistence@zlive-20261207T040000Z\nchoice reset-system\n\n\
                    volume half a block\n\n";
        let changes = parse_changes(text);
        assert_eq!(changes.len(), 1);
        let c = &changes[0];
        assert_eq!(c.volume, "LABEL=persistence");
        assert_eq!(c.choice, "reset-system");
        assert!(c.new.ends_with("kernel 6.12"));
        let said = status_text(&changes, |v| match v {
            "LABEL=persistence" => vec!["/etc".to_owned(), "/usr".to_owned()],
            _ => Vec::new(),
        });
        assert!(
            said.contains("the live image changed under LABEL=persistence: image made 2026-01-01")
        );
        assert!(
            said.contains("reset for it (they lie over the image's own directories): /etc, /usr\n")
        );
        let kept = Change {
            choice: "keep".to_owned(),
            ..c.clone()
        };
        assert!(status_text(std::slice::from_ref(&kept), |_| vec!["/usr".to_owned()])
            .contains("kept over the image's own directories, where their files hide the new image's: /usr\n"));
        assert!(status_text(&[kept], |_| Vec::new())
            .contains("no entry lies over the image's own directories"));
        assert!(said
            .contains("persistence-rollback=dpool/persistence@zlive-20261207T040000Z to return"));
        assert!(parse_changes("").is_empty());
    }
}
