//! The work mount units cannot do, run by `zlive prepare DEST` and `zlive link DEST`:
//! creating sources, upper and work directories with the image's owner and mode, the
//! first-boot bootstrap copy of `bind` entries, and `link` symlink farms. Every path on a
//! volume is resolved through [`SafeDir`], which never follows a symlink.

use crate::conf::Mode as EntryMode;
use crate::plan::{Plan, PlannedEntry, OVERLAY_DIR, SYSROOT};
use crate::safe::{is_dir, Attrs, SafeDir};
use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, mkdirat, Mode};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::path::PathBuf;

/// Where the absolute paths of a plan are found: `/` at boot, a temporary tree in tests.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

/// Bounds for walking a link source, so that a hostile volume cannot keep the boot busy.
const LINK_MAX_DEPTH: usize = 64;
const LINK_MAX_ENTRIES: usize = 100_000;

impl Layout {
    pub fn host(&self, path: &str) -> String {
        let p: PathBuf = self.root.join(path.trim_start_matches('/'));
        p.to_string_lossy().into_owned()
    }
}

fn relative(dir: &str) -> &str {
    dir.trim_start_matches('/')
}

/// What prepare did, for the journal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub actions: Vec<String>,
}

impl Report {
    fn did(&mut self, what: String) {
        self.actions.push(what);
    }
}

fn find<'p>(plan: &'p Plan, dest: &str) -> Result<(usize, &'p PlannedEntry)> {
    plan.entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.dest == dest)
        .ok_or_else(|| anyhow!("{dest} is not a persistence entry in the current plan"))
}

/// Owner and mode of `dir` in the live image, if the image has it as a directory.
fn image_attrs(plan: &Plan, layout: &Layout, dir: &str) -> Result<Option<Attrs>> {
    let image = SafeDir::open_trusted(&layout.host(&plan.image_dir()), false)?;
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

/// `zlive prepare DEST`.
pub fn prepare(plan: &Plan, layout: &Layout, dest: &str) -> Result<Report> {
    let mut report = Report::default();
    if dest == SYSROOT {
        let attrs = image_attrs(plan, layout, "/")?.unwrap_or(Attrs::ROOT_0755);
        let base = if plan.root.upper_base == OVERLAY_DIR {
            SafeDir::open_trusted(&layout.host(OVERLAY_DIR), false)?
        } else {
            let entry = &plan.entries[plan.root.entry.context("no / entry")?];
            let volume = &plan.volumes[entry.volume];
            let vol = SafeDir::open_trusted(&layout.host(&volume.mount_point), false)?;
            vol.create_dirs(&entry.entry.source, Attrs::ROOT_0755, Attrs::ROOT_0755)?
                .0
        };
        make_upper(&base, attrs, &mut report)?;
        return Ok(report);
    }

    let (index, e) = find(plan, dest)?;
    if e.entry.mode == EntryMode::Link {
        bail!("{dest} is a link entry; it is handled by 'zlive link'");
    }
    let volume = &plan.volumes[e.volume];
    let vol = SafeDir::open_trusted(&layout.host(&volume.mount_point), false)?;
    let image = image_attrs(plan, layout, &e.entry.dir)?;
    let sysroot = SafeDir::open_trusted(&layout.host(SYSROOT), true)?;

    if plan.read_only {
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
                let attrs = image.unwrap_or(Attrs::ROOT_0755);
                let (src, created) = vol.create_dirs(&e.entry.source, attrs, Attrs::ROOT_0755)?;
                if created {
                    report.did(format!("created {}", src.path));
                }
                make_upper(&src, attrs, &mut report)?;
            }
            EntryMode::Bind => bootstrap(&vol, &sysroot, e, &mut report)?,
            EntryMode::Link => {}
        }
    }
    let leaf = match plan.read_only {
        true => image.unwrap_or(Attrs::ROOT_0755),
        false => Attrs::of(&vol.open(&e.entry.source)?.stat()?),
    };
    if create_dest(&sysroot, relative(&e.entry.dir), leaf)? {
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
    let (parent, _) = vol.create_dirs(parent_rel, Attrs::ROOT_0755, Attrs::ROOT_0755)?;
    let temporary = format!(".zlive-bootstrap-{leaf}");
    if parent.lookup(&temporary)?.is_some() {
        std::fs::remove_dir_all(format!("{}/{temporary}", parent.proc_path())).with_context(
            || {
                format!(
                    "Failed to remove the unfinished copy {}/{temporary}",
                    parent.path
                )
            },
        )?;
    }
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
    nix::fcntl::renameat(parent.fd(), temporary.as_str(), parent.fd(), leaf)
        .with_context(|| format!("Failed to rename the copy to {}/{leaf}", parent.path))?;
    report.did(match live {
        Some(_) => format!(
            "copied {} to {}/{leaf} (first boot of this entry)",
            e.dest, parent.path
        ),
        None => format!("created the empty source {}/{leaf}", parent.path),
    });
    Ok(())
}

/// Create the mount point below `/sysroot` if it is missing. Missing parents are owned like
/// their own parent (so a new directory under `/home/alice` belongs to alice); the mount
/// point itself gets `leaf`. Returns whether anything was created.
fn create_dest(sysroot: &SafeDir, rel: &str, leaf: Attrs) -> Result<bool> {
    let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut current = sysroot.open("")?;
    let mut created = false;
    for (i, component) in components.iter().enumerate() {
        match current.lookup(component)? {
            Some(st) if is_dir(&st) => {}
            Some(_) => bail!("{}/{component} exists and is not a directory", current.path),
            None => {
                let parent = Attrs::of(&current.stat()?);
                let attrs = if i + 1 == components.len() {
                    leaf
                } else {
                    Attrs {
                        mode: 0o755,
                        ..parent
                    }
                };
                mkdirat(current.fd(), *component, Mode::from_bits_truncate(0o700))
                    .with_context(|| format!("Failed to create {}/{component}", current.path))?;
                current.open(component)?.set_attrs(attrs)?;
                created = true;
            }
        }
        current = current.open(component)?;
    }
    Ok(created)
}

/// `zlive link DEST`: a symlink in DEST for every file of the source, directories created as
/// needed; empty source directories are skipped (as in live-boot).
pub fn link(plan: &Plan, layout: &Layout, dest: &str) -> Result<Report> {
    let mut report = Report::default();
    let (_, e) = find(plan, dest)?;
    if e.entry.mode != EntryMode::Link {
        bail!("{dest} is not a link entry");
    }
    let volume = &plan.volumes[e.volume];
    let vol = SafeDir::open_trusted(&layout.host(&volume.mount_point), false)?;
    let sysroot = SafeDir::open_trusted(&layout.host(SYSROOT), true)?;
    let src = match vol.open_if_exists(&e.entry.source)? {
        Some(s) => s,
        None if plan.read_only => bail!("{} does not exist", e.src),
        None => {
            let attrs = match sysroot.open_if_exists(relative(&e.entry.dir))? {
                Some(d) => Attrs::of(&d.stat()?),
                None => Attrs::ROOT_0755,
            };
            let (s, _) = vol.create_dirs(&e.entry.source, attrs, Attrs::ROOT_0755)?;
            report.did(format!("created the empty source {}", s.path));
            s
        }
    };
    create_dest(&sysroot, relative(&e.entry.dir), Attrs::of(&src.stat()?))?;
    let dest_dir = sysroot.open(relative(&e.entry.dir))?;
    let mut count = 0usize;
    link_tree(&src, src.names()?, &dest_dir, &e.src, 0, &mut count)?;
    report.did(format!("{count} symlinks in {dest} point into {}", e.src));
    Ok(report)
}

/// Link every name of `src` (listed by the caller, `names`) into `dest`.
fn link_tree(
    src: &SafeDir,
    mut names: Vec<String>,
    dest: &SafeDir,
    target: &str,
    depth: usize,
    count: &mut usize,
) -> Result<()> {
    if depth > LINK_MAX_DEPTH {
        bail!(
            "{} is nested more than {LINK_MAX_DEPTH} levels deep",
            src.path
        );
    }
    names.sort();
    for name in names {
        *count += 1;
        if *count > LINK_MAX_ENTRIES {
            bail!("more than {LINK_MAX_ENTRIES} files below the link source");
        }
        if name.contains('\n') {
            continue; // cannot be shown or linked sanely; live-boot mangles it
        }
        let st = fstatat(src.fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .with_context(|| format!("Failed to stat {}/{name}", src.path))?;
        let target_path = format!("{target}/{name}");
        if is_dir(&st) {
            let sub = src.open(&name)?;
            let sub_names = sub.names()?;
            if sub_names.is_empty() {
                continue;
            }
            let existing = dest.lookup(&name)?;
            if existing.as_ref().is_some_and(|s| !is_dir(s)) {
                unlinkat(dest.fd(), name.as_str(), UnlinkatFlags::NoRemoveDir)
                    .with_context(|| format!("Failed to remove {}/{name}", dest.path))?;
            }
            if existing.as_ref().is_none_or(|s| !is_dir(s)) {
                mkdirat(dest.fd(), name.as_str(), Mode::from_bits_truncate(0o700))
                    .with_context(|| format!("Failed to create {}/{name}", dest.path))?;
                dest.open(&name)?.set_attrs(Attrs::of(&st))?;
            }
            link_tree(
                &sub,
                sub_names,
                &dest.open(&name)?,
                &target_path,
                depth + 1,
                count,
            )?;
            *count -= 1;
            continue;
        }
        match dest.lookup(&name)? {
            Some(existing) if is_dir(&existing) => {
                std::fs::remove_dir_all(format!("{}/{name}", dest.proc_path()))
                    .with_context(|| format!("Failed to remove {}/{name}", dest.path))?;
            }
            Some(_) => unlinkat(dest.fd(), name.as_str(), UnlinkatFlags::NoRemoveDir)
                .with_context(|| format!("Failed to remove {}/{name}", dest.path))?,
            None => {}
        }
        symlinkat(target_path.as_str(), dest.fd(), name.as_str())
            .with_context(|| format!("Failed to create the symlink {}/{name}", dest.path))?;
        fchownat(
            dest.fd(),
            name.as_str(),
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .or_else(|e| if e == Errno::EPERM { Ok(()) } else { Err(e) })
        .with_context(|| format!("Failed to chown {}/{name}", dest.path))?;
    }
    Ok(())
}
