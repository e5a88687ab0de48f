//! `zlive link DEST`: a `link` entry's symlink farm, made after every mount is in place.

use super::safe::{is_dir, Attrs, SafeDir};
use super::{relative, Layout, Report};
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, mkdirat, Mode};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
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
    super::create_dest(&sysroot, relative(&e.entry.dir), Attrs::of(&src.stat()?))?;
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
