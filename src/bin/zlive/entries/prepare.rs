//! `zlive prepare DEST`: what a mount unit cannot do itself before it mounts: the source,
//! upper and work directories with the image's owner and mode, the first-boot bootstrap
//! copy of a `bind` entry, and on the first boot of a new live image with
//! `persistence-image-change=reset-system`, an empty start for a union over the image.

use super::safe::{is_dir, Attrs, SafeDir};
use super::{relative, Layout, Report};
use anyhow::{bail, Context, Result};
use zlive::conf::Mode as EntryMode;
use zlive::paths::{IMAGE_DIR, OVERLAY_DIR, SYSROOT};
use zlive::plan::{Plan, PlannedEntry};

/// The name of a bootstrap copy in progress: `.zlive-bootstrap-LEAF` next to the source.
const BOOTSTRAP_PREFIX: &str = ".zlive-bootstrap-";

/// Remove unfinished copies in `parent`: this entry's own, and any whose entry is gone from
/// the plan. The copies of other planned entries may be in progress right now and stay.
fn remove_stale_copies(
    parent: &SafeDir,
    parent_rel: &str,
    leaf: &str,
    planned: &[String],
) -> Result<()> {
    for name in parent.names()? {
        let Some(of) = name.strip_prefix(BOOTSTRAP_PREFIX) else {
            continue;
        };
        let source = if parent_rel.is_empty() {
            of.to_owned()
        } else {
            format!("{parent_rel}/{of}")
        };
        if of == leaf || !planned.contains(&source) {
            parent.remove_tree(&name).with_context(|| {
                format!(
                    "Failed to remove the unfinished copy {}/{name}",
                    parent.path
                )
            })?;
        }
    }
    Ok(())
}

/// Owner and mode of `dir` in the live image, if the image has it as a directory.
fn image_attrs(layout: &Layout, dir: &str) -> Result<Option<Attrs>> {
    let image = SafeDir::open_trusted(&layout.host(IMAGE_DIR), false)?;
    Ok(image
        .lookup(relative(dir))?
        .filter(is_dir)
        .map(|st| Attrs::of(&st)))
}

/// Create `rw/` (with `upper_attrs`, which the merged directory shows) and `work/` in `base`.
fn make_upper(base: &SafeDir, upper_attrs: Attrs, report: &mut Report) -> Result<()> {
    for (name, attrs) in [
        ("rw", upper_attrs),
        (
            "work",
            Attrs {
                mode: 0o700,
                ..Attrs::ROOT_0755
            },
        ),
    ] {
        let (_, created) = base.create_dirs(name, attrs, attrs)?;
        if created {
            report.did(format!("created {}/{name}", base.path));
        }
    }
    Ok(())
}

/// On the first boot of a new image, a union entry over the image's own directories: with
/// `persistence-image-change=reset-system` what it keeps (see `zlive::image::what_to_reset`)
/// is emptied before its upper layer is made again (what it held is in the snapshot taken
/// before the change; a failure is said and leaves the entry as it was); with `keep` it is
/// named, since its files hide the new image's own.
fn reset_for_new_image(plan: &Plan, e: &PlannedEntry, base: &SafeDir, report: &mut Report) {
    let volume = plan.volumes[e.volume].describe();
    let Some(change) = crate::zfs::image_change::found_under(&volume) else {
        return;
    };
    let snapshot = change.snapshot;
    if change.choice != "reset-system" {
        if zlive::image::over_the_image(&e.entry) {
            report.did(format!(
                "kept over the new live image (persistence-image-change=keep): what {}/rw holds hides the image's own files; the state before the new image is in {snapshot}",
                base.path
            ));
        }
        return;
    }
    let upper = match base.open_if_exists("rw") {
        Ok(Some(upper)) => upper,
        Ok(None) => return,
        Err(e) => return report.did(format!("could not reset for the new image: {e:#}")),
    };
    let names = upper.names().unwrap_or_default();
    let what = zlive::image::what_to_reset(&e.entry, &names);
    let reset = |report: &mut Report| -> Result<()> {
        for part in &what {
            match part.is_empty() {
                true => base.remove_tree("rw")?,
                false => upper.remove_tree(part)?,
            }
        }
        if !what.is_empty() && base.open_if_exists("work")?.is_some() {
            base.remove_tree("work")?;
        }
        let shown = match what.as_slice() {
            [whole] if whole.is_empty() => format!("{}/rw", base.path),
            parts => format!("{}/rw/{{{}}}", base.path, parts.join(",")),
        };
        report.did(format!(
            "reset {shown} for the new live image (persistence-image-change=reset-system); what it held is in {snapshot}"
        ));
        Ok(())
    };
    if what.is_empty() {
        return;
    }
    if let Err(err) = reset(report) {
        report.did(format!(
            "could not reset {}/rw for the new live image, which stays as it was: {err:#}",
            base.path
        ));
    }
}

/// Where overlayfs left a whiteout (a character device 0:0, what it makes where a file or
/// directory of the lower layer was removed) over the running kernel's module tree,
/// `/usr/lib/modules/RELEASE`, or a directory above it, in the upper layer `upper` of a union
/// over `dir`: a live system that would find no module for its own kernel (its kernel package
/// removed in a `/ union` or `/usr union`).
fn hidden_modules(dir: &str, upper: &SafeDir) -> Option<String> {
    let release = nix::sys::utsname::uname().ok()?;
    let tree = format!("/usr/lib/modules/{}", release.release().to_string_lossy());
    let rel = match dir {
        "/" => tree.trim_start_matches('/'),
        _ => tree.strip_prefix(dir)?.strip_prefix('/')?,
    };
    let mut prefix = String::new();
    for part in rel.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        let st = upper.lookup(&prefix).ok()??;
        let kind =
            nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
        if kind == nix::sys::stat::SFlag::S_IFCHR && st.st_rdev == 0 {
            return Some(format!("{} (a whiteout at {}/{prefix})", tree, upper.path));
        }
        if !is_dir(&st) {
            return None;
        }
    }
    None
}

/// Refuse a union whose upper layer hides the running kernel's modules: said on the console
/// too, since the boot then goes on without this entry (or, for `/`, with the root in RAM).
fn refuse_hidden_modules(dir: &str, base: &SafeDir) -> Result<()> {
    let Some(upper) = base.open_if_exists("rw").ok().flatten() else {
        return Ok(());
    };
    let Some(what) = hidden_modules(dir, &upper) else {
        return Ok(());
    };
    let why = format!(
        "the running kernel's module tree {what} is hidden by persistence (removed in the live system: its kernel package?); a live system on it would load no module for its own kernel. persistence-rollback=previous returns to the state before the last boot ('zlive snapshots' lists the others)"
    );
    crate::exec::console(&format!("zlive: {dir} union: {why}\n"));
    bail!("{why}")
}

/// The root overlay's upper layer: in RAM, or on its volume (`/ union`).
fn prepare_root(plan: &Plan, layout: &Layout) -> Result<Report> {
    let mut report = Report::default();
    let attrs = image_attrs(layout, "/")?.unwrap_or(Attrs::ROOT_0755);
    let base = if plan.root.upper_base == OVERLAY_DIR {
        SafeDir::open_trusted(&layout.host(OVERLAY_DIR), false)?
    } else {
        let entry = &plan.entries[plan.root.entry.context("no / entry")?];
        let volume = &plan.volumes[entry.volume];
        let vol = SafeDir::open_trusted(&layout.host(&volume.mount_point), false)?;
        let base = vol
            .create_dirs(&entry.entry.source, Attrs::ROOT_0700, Attrs::ROOT_0700)?
            .0;
        reset_for_new_image(plan, entry, &base, &mut report);
        refuse_hidden_modules("/", &base)?;
        base
    };
    make_upper(&base, attrs, &mut report)?;
    Ok(report)
}

/// `zlive prepare DEST`.
pub fn prepare(plan: &Plan, layout: &Layout, dest: &str) -> Result<Report> {
    if dest == SYSROOT {
        return prepare_root(plan, layout);
    }
    let mut report = Report::default();

    let (index, e) = super::find(plan, dest)?;
    if e.entry.mode == EntryMode::Link {
        bail!("{dest} is a link entry; it is handled by 'zlive link'");
    }
    let volume = &plan.volumes[e.volume];
    let vol = SafeDir::open_trusted(&layout.host(&volume.mount_point), false)?;
    let image = image_attrs(layout, &e.entry.dir)?;
    let sysroot = SafeDir::open_trusted(&layout.host(SYSROOT), true)?;

    if plan.cmdline.read_only {
        // Nothing on the volume changes: only a tmpfs directory for the entry's changes.
        let src = vol.open(&e.entry.source)?;
        let from = if e.entry.mode == EntryMode::Union {
            src.open("rw")?
        } else {
            src
        };
        let tmpfs = SafeDir::open_trusted(&layout.host(OVERLAY_DIR), false)?;
        let (base, _) = tmpfs.create_dirs(
            &format!("entry-{index}"),
            Attrs::ROOT_0755,
            Attrs::ROOT_0755,
        )?;
        make_upper(&base, Attrs::of(&from.stat()?), &mut report)?;
    } else {
        match e.entry.mode {
            EntryMode::Union => {
                // The source only holds rw/ (what the live system shows, with the image's
                // owner and mode) and work/: root's alone, like every directory above it.
                let (src, created) =
                    vol.create_dirs(&e.entry.source, Attrs::ROOT_0700, Attrs::ROOT_0700)?;
                if created {
                    report.did(format!("created {}", src.path));
                }
                reset_for_new_image(plan, e, &src, &mut report);
                refuse_hidden_modules(&e.entry.dir, &src)?;
                make_upper(&src, image.unwrap_or(Attrs::ROOT_0755), &mut report)?;
            }
            EntryMode::Bind => {
                // The sources of the bind entries on this volume, whose copies may be under way.
                let planned: Vec<String> = plan
                    .entries
                    .iter()
                    .filter(|x| x.volume == e.volume && x.entry.mode == EntryMode::Bind)
                    .map(|x| x.entry.source.clone())
                    .collect();
                bootstrap(&vol, &sysroot, e, &planned, &mut report)?
            }
            EntryMode::Link => {}
        }
    }
    let leaf = match (plan.cmdline.read_only, e.entry.mode) {
        (true, _) | (false, EntryMode::Union) => image.unwrap_or(Attrs::ROOT_0755),
        (false, _) => Attrs::of(&vol.open(&e.entry.source)?.stat()?),
    };
    if super::create_dest(&sysroot, relative(&e.entry.dir), leaf)? {
        report.did(format!("created the mount point {dest}"));
    }
    Ok(report)
}

/// A `bind` source that does not exist yet is made from the live system's DIR (the image,
/// plus whatever is persistent above it): owner, mode, times, symlinks and xattrs kept.
/// The copy goes to a temporary name first, so an interrupted copy is never taken for data.
fn bootstrap(
    vol: &SafeDir,
    sysroot: &SafeDir,
    e: &PlannedEntry,
    planned: &[String],
    report: &mut Report,
) -> Result<()> {
    let source = e.entry.source.as_str();
    if vol.lookup(source)?.is_some() {
        vol.open(source)?; // must be a real directory, not a symlink or a file
        return Ok(());
    }
    let (parent_rel, leaf) = match source.rsplit_once('/') {
        Some((p, l)) => (p, l),
        None => ("", source),
    };
    // The directories above the source are root's alone: the source itself, bind-mounted
    // onto DIR, has the live directory's owner and mode, but its parents on the volume would
    // otherwise let anyone reach it where the live system's parents of DIR do not.
    let (parent, _) = vol.create_dirs(parent_rel, Attrs::ROOT_0700, Attrs::ROOT_0700)?;
    let temporary = format!("{BOOTSTRAP_PREFIX}{leaf}");
    remove_stale_copies(&parent, parent_rel, leaf, planned)?;
    let live = sysroot.open_if_exists(relative(&e.entry.dir))?;
    let attrs = match &live {
        Some(d) => Attrs::of(&d.stat()?),
        None => Attrs::ROOT_0755,
    };
    let (target, _) = parent.create_dirs(&temporary, attrs, attrs)?;
    if let Some(live) = &live {
        // "DIR/." into "TARGET/": the contents, through the already opened directories.
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", live.proc_path()))
            .arg(format!("{}/", target.proc_path()))
            .status()
            .context("Failed to run cp")?;
        if !status.success() {
            bail!(
                "copying {} to {}/{leaf} failed ({status})",
                e.dest,
                parent.path
            );
        }
    }
    // The copy's data reaches the disk before its name does: with delayed allocation a
    // rename can be committed first, and a power cut would then leave empty files that are
    // never copied again.
    nix::unistd::syncfs(target.fd())
        .with_context(|| format!("Failed to sync the copy in {}", parent.path))?;
    nix::fcntl::renameat(parent.fd(), temporary.as_str(), parent.fd(), leaf)
        .with_context(|| format!("Failed to rename the copy to {}/{leaf}", parent.path))?;
    nix::unistd::fsync(parent.fd()).with_context(|| format!("Failed to sync {}", parent.path))?;
    report.did(match live {
        Some(_) => format!(
            "copied {} to {}/{leaf} (first boot of this entry)",
            e.dest, parent.path
        ),
        None => format!("created the empty source {}/{leaf}", parent.path),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upper layer in a scratch directory, with the directories given and a whiteout at
    /// `whiteout` (below it).
    fn upper(dirs: &[&str], whiteout: Option<&str>) -> (std::path::PathBuf, SafeDir) {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("zlive-hidden-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        if let Some(w) = whiteout {
            mknod(&root.join(w), SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).unwrap();
        }
        let dir = SafeDir::open_trusted(root.to_str().unwrap(), false).unwrap();
        (root, dir)
    }

    #[test]
    #[ignore = "needs root (mknod of a whiteout): make check runs it as root"]
    fn a_whiteout_over_the_running_kernels_modules_is_found() {
        let release = nix::sys::utsname::uname().unwrap();
        let release = release.release().to_string_lossy().into_owned();
        let tree = format!("usr/lib/modules/{release}");
        let (root, at_tree) = upper(&["usr/lib/modules"], Some(&tree));
        let found = hidden_modules("/", &at_tree).unwrap();
        assert!(
            found.contains(&format!("a whiteout at {}/{tree}", root.display())),
            "{found}"
        );
        // The same seen from a /usr union, and a whiteout over all of lib.
        let (usr_root, usr) = upper(&["lib/modules"], Some(&format!("lib/modules/{release}")));
        assert!(hidden_modules("/usr", &usr).is_some());
        let (lib_root, lib) = upper(&["usr"], Some("usr/lib"));
        assert!(hidden_modules("/", &lib).is_some());
        // Another kernel's tree removed, the tree itself there, or no entry over it.
        let (other_root, other) = upper(&["usr/lib/modules"], Some("usr/lib/modules/0.0.1-other"));
        assert_eq!(hidden_modules("/", &other), None);
        let (whole_root, whole) = upper(&[&tree], None);
        assert_eq!(hidden_modules("/", &whole), None);
        assert_eq!(hidden_modules("/var", &at_tree), None);
        for d in [root, usr_root, lib_root, other_root, whole_root] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
