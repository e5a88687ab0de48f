//! `zlive link DEST`: a `link` entry's symlink farm, made after every mount is in place.

use super::safe::{is_dir, Attrs, SafeDir};
use super::{relative, Layout, Report};
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::HashSet;
use zlive::conf::is_within;
use zlive::conf::Mode as EntryMode;
use zlive::paths::SYSROOT;
use zlive::plan::Plan;

/// Bounds for walking a link source, so that a hostile volume cannot keep the boot busy.
const LINK_MAX_DEPTH: usize = 64;
const LINK_MAX_ENTRIES: usize = 100_000;

/// `zlive link DEST`: a symlink in DEST for every file of the source, directories created as
/// needed; empty source directories are skipped (as in live-boot).
pub fn link(plan: &Plan, layout: &Layout, dest: &str) -> Result<Report> {
    let mut report = Report::default();
    let (_, e) = super::find(plan, dest)?;
    if e.entry.mode != EntryMode::Link {
        bail!("{dest} is not a link entry");
    }
    let volume = &plan.volumes[e.volume];
    let vol = SafeDir::open_trusted(&layout.host(&volume.mount_point), false)?;
    let sysroot = SafeDir::open_trusted(&layout.host(SYSROOT), true)?;
    let src = match vol.open_if_exists(&e.entry.source)? {
        Some(s) => s,
        None if plan.cmdline.read_only => bail!("{} does not exist", e.src),
        None => {
            let attrs = match sysroot.open_if_exists(relative(&e.entry.dir))? {
                Some(d) => Attrs::of(&d.stat()?),
                None => Attrs::ROOT_0755,
            };
            let (s, _) = vol.create_dirs(&e.entry.source, attrs, Attrs::ROOT_0711)?;
            report.did(format!("created the empty source {}", s.path));
            s
        }
    };
    super::create_dest(&sysroot, relative(&e.entry.dir), Attrs::of(&src.stat()?))?;
    let dest_dir = sysroot.open(relative(&e.entry.dir))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut walk = Walk {
        mounts: zlive::world::mount_points(&mountinfo),
        ..Walk::default()
    };
    walk.tree(&src, src.names()?, &dest_dir, &e.src, 0)?;
    report.did(format!(
        "{} symlinks in {dest} point into {}",
        walk.links, e.src
    ));
    for path in &walk.left_alone {
        report.did(format!(
            "left {path} alone: another mount is there (a nested persistence entry?)"
        ));
    }
    Ok(report)
}

/// One link walk: the mounts it must not touch, and what it did.
#[derive(Debug, Default)]
struct Walk {
    /// Every mount point of the system: nothing at or below one is removed or descended into.
    mounts: HashSet<String>,
    /// Names visited in the source, directories and empty ones included.
    entries: usize,
    links: usize,
    left_alone: Vec<String>,
}

impl Walk {
    /// A mount sits at `path` (`exact`) or at or below it.
    fn has_mount(&self, path: &str, exact: bool) -> bool {
        match exact {
            true => self.mounts.contains(path),
            false => self.mounts.iter().any(|m| is_within(m, path)),
        }
    }

    /// Link every name of `src` (listed by the caller, `names`) into `dest`.
    fn tree(
        &mut self,
        src: &SafeDir,
        mut names: Vec<String>,
        dest: &SafeDir,
        target: &str,
        depth: usize,
    ) -> Result<()> {
        if depth > LINK_MAX_DEPTH {
            bail!(
                "{} is nested more than {LINK_MAX_DEPTH} levels deep",
                src.path
            );
        }
        names.sort();
        for name in names {
            self.entries += 1;
            if self.entries > LINK_MAX_ENTRIES {
                bail!("more than {LINK_MAX_ENTRIES} files and directories below the link source");
            }
            if name.contains('\n') {
                continue; // cannot be shown or linked sanely; live-boot mangles it
            }
            let st = fstatat(src.fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .with_context(|| format!("Failed to stat {}/{name}", src.path))?;
            let target_path = format!("{target}/{name}");
            let dest_path = format!("{}/{name}", dest.path);
            if is_dir(&st) {
                self.directory(src, dest, &name, &st, &target_path, depth)?;
            } else if self.has_mount(&dest_path, false) {
                // Replacing it would delete another entry's data.
                self.left_alone.push(dest_path);
            } else {
                self.symlink(dest, &name, &st, &target_path)?;
            }
        }
        Ok(())
    }

    /// A directory of the source: made in DEST (unless it is empty) and walked, but never
    /// where another mount sits.
    fn directory(
        &mut self,
        src: &SafeDir,
        dest: &SafeDir,
        name: &str,
        st: &FileStat,
        target_path: &str,
        depth: usize,
    ) -> Result<()> {
        let sub = src.open(name)?;
        let sub_names = sub.names()?;
        if sub_names.is_empty() {
            return Ok(());
        }
        let dest_path = format!("{}/{name}", dest.path);
        if self.has_mount(&dest_path, true) {
            self.left_alone.push(dest_path);
            return Ok(());
        }
        let existing = dest.lookup(name)?;
        if existing.as_ref().is_some_and(|s| !is_dir(s)) {
            unlinkat(dest.fd(), name, UnlinkatFlags::NoRemoveDir)
                .with_context(|| format!("Failed to remove {dest_path}"))?;
        }
        if existing.as_ref().is_none_or(|s| !is_dir(s)) {
            mkdirat(dest.fd(), name, Mode::from_bits_truncate(0o700))
                .with_context(|| format!("Failed to create {dest_path}"))?;
            dest.open_same_mount(name)?.set_attrs(Attrs::of(st))?;
        }
        let below = dest.open_same_mount(name)?;
        self.tree(&sub, sub_names, &below, target_path, depth + 1)
    }

    /// A file (or anything not a directory) of the source: a symlink in DEST replaces what
    /// was there.
    fn symlink(
        &mut self,
        dest: &SafeDir,
        name: &str,
        st: &FileStat,
        target_path: &str,
    ) -> Result<()> {
        match dest.lookup(name)? {
            Some(existing) if is_dir(&existing) => dest.remove_tree(name)?,
            Some(_) => unlinkat(dest.fd(), name, UnlinkatFlags::NoRemoveDir)
                .with_context(|| format!("Failed to remove {}/{name}", dest.path))?,
            None => {}
        }
        symlinkat(target_path, dest.fd(), name)
            .with_context(|| format!("Failed to create the symlink {}/{name}", dest.path))?;
        fchownat(
            dest.fd(),
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .or_else(|e| if e == Errno::EPERM { Ok(()) } else { Err(e) })
        .with_context(|| format!("Failed to chown {}/{name}", dest.path))?;
        self.links += 1;
        Ok(())
    }
}
