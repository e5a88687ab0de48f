//! The way back out: a small exitrd in /run/initramfs that systemd-shutdown pivots into at the
//! very end of shutdown (it runs `/run/initramfs/shutdown VERB` when that exists). From there
//! nothing of the live root is in use any more, so the entries, the root overlay, the image,
//! the medium and the persistence volumes can all be unmounted, the pools exported, and the
//! machine halted, powered off, rebooted or kexec'd as asked.
//!
//! `zlive exitrd` builds it in the initrd, before switch-root (the live root has no initrd
//! image to unpack, unlike dracut's shutdown module expects): zlive itself as `/shutdown`,
//! `zpool`, and the libraries both need, copied from the running initrd.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where systemd-shutdown looks for an exitrd.
pub const EXITRD: &str = "/run/initramfs";
/// Where the live root is after systemd-shutdown's pivot into the exitrd.
const OLD_ROOT: &str = "/oldroot";
/// How long each of the two unmount phases (the live root, then the volumes and the medium
/// moved out of it) may take, all its passes together.
const UNMOUNT_DEADLINE: Duration = Duration::from_secs(20);
/// How long one `zpool export` may take.
const EXPORT_DEADLINE: Duration = Duration::from_secs(20);

/// The programs the exitrd runs, by the names the initrd has them under.
const PROGRAMS: &[&str] = &["/usr/sbin/zpool", "/sbin/zpool", "/usr/bin/zpool"];
/// dmsetup, which closes the LUKS containers zlive opened before their pools are exported.
const DMSETUP: &[&str] = &["/usr/sbin/dmsetup", "/sbin/dmsetup"];

/// `zlive exitrd`: build the exitrd under `root` (/run/initramfs); returns (files, bytes).
pub fn build(root: &Path) -> Result<(usize, u64)> {
    let me = std::env::current_exe().context("Failed to find zlive itself")?;
    let zpool = PROGRAMS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("no zpool in the initrd")?;
    let interpreter = elf_interpreter(&fs::read(&me)?).context("zlive has no ELF interpreter")?;
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    files.insert(interpreter.clone());
    let mut programs = vec![me.as_path(), zpool];
    // Only when a LUKS container of zlive's is open.
    if opened_containers().next().is_some() {
        programs.extend(DMSETUP.iter().map(Path::new).find(|p| p.exists()));
    }
    for program in programs {
        files.insert(program.to_owned());
        files.extend(libraries(&interpreter, program)?);
    }
    // libzfs loads libgcc_s at run time (pthread_cancel); ld.so --list does not see that.
    files.extend(libgcc(&files));
    for dir in ["proc", "sys", "dev", "run", "oldroot", "tmp"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let mut bytes = 0;
    for file in &files {
        bytes += install(file, root)?;
    }
    let shutdown = root.join("shutdown");
    let _ = fs::remove_file(&shutdown);
    // Relative: it must resolve inside the exitrd, before the pivot (systemd-shutdown checks
    // it is executable) and after it.
    let relative = me.strip_prefix("/").unwrap_or(&me);
    symlink(relative, &shutdown).context("Failed to create /run/initramfs/shutdown")?;
    Ok((files.len(), bytes))
}

/// The dynamic loader a program names (`PT_INTERP`), from its ELF header.
pub fn elf_interpreter(elf: &[u8]) -> Option<PathBuf> {
    // 64-bit little-endian ELF only: what this code is built for.
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    for i in 0..usize::from(u16_at(0x38)?) {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? == 3 {
            // PT_INTERP: offset and size of a NUL-terminated path.
            let offset = usize::try_from(u64_at(ph + 8)?).ok()?;
            let size = usize::try_from(u64_at(ph + 32)?).ok()?;
            let path = elf.get(offset..offset + size)?;
            let path = path.split(|b| *b == 0).next()?;
            return Some(PathBuf::from(std::str::from_utf8(path).ok()?));
        }
    }
    None
}

/// The libraries `program` loads, as the dynamic loader resolves them (`ld.so --list`).
fn libraries(interpreter: &Path, program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new(interpreter)
        .arg("--list")
        .arg(program)
        .output()
        .with_context(|| format!("Failed to run {}", interpreter.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list {} failed: {}",
            interpreter.display(),
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(loader_paths(&String::from_utf8_lossy(&out.stdout)))
}

/// The paths in `ld.so --list` output: `name => /path (0x…)` and `/path (0x…)` lines.
pub fn loader_paths(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=> ").map_or(l, |(_, p)| p);
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// libgcc_s next to the C library, if the initrd has it there.
fn libgcc(files: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .filter_map(|libc| libc.parent().map(|d| d.join("libgcc_s.so.1")))
        .filter(|p| p.exists())
        .collect()
}

/// Copy `path` into `root` as it is here: symlinks on the way are made again (and followed),
/// directories created, the file copied with its mode. Returns the bytes copied.
pub fn install(path: &Path, root: &Path) -> Result<u64> {
    install_depth(path, root, 0)
}

fn install_depth(path: &Path, root: &Path, depth: usize) -> Result<u64> {
    if depth > 16 {
        bail!("too many symlinks on the way to {}", path.display());
    }
    let mut here = PathBuf::from("/");
    let parts: Vec<Component> = path.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            continue;
        };
        let next = here.join(name);
        let target = root.join(next.strip_prefix("/").unwrap_or(&next));
        let meta = fs::symlink_metadata(&next)
            .with_context(|| format!("Failed to stat {}", next.display()))?;
        if meta.file_type().is_symlink() {
            let link = fs::read_link(&next)?;
            if fs::symlink_metadata(&target).is_err() {
                symlink(&link, &target)
                    .with_context(|| format!("Failed to create {}", target.display()))?;
            }
            let mut resolved = normalize(&here.join(&link));
            for rest in &parts[i + 1..] {
                resolved.push(rest);
            }
            return install_depth(&resolved, root, depth + 1);
        }
        if meta.is_dir() {
            fs::create_dir_all(&target)?;
            here = next;
            continue;
        }
        fs::copy(&next, &target).with_context(|| format!("Failed to copy {}", next.display()))?;
        fs::set_permissions(
            &target,
            fs::Permissions::from_mode(meta.permissions().mode()),
        )?;
        return Ok(meta.len());
    }
    Ok(0)
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// How systemd-shutdown asked to end: its first argument.
pub fn reboot_mode(verb: &str) -> nix::sys::reboot::RebootMode {
    use nix::sys::reboot::RebootMode;
    match verb {
        "reboot" => RebootMode::RB_AUTOBOOT,
        "halt" => RebootMode::RB_HALT_SYSTEM,
        "kexec" => RebootMode::RB_KEXEC,
        // "poweroff", and anything unknown: power off rather than loop.
        _ => RebootMode::RB_POWER_OFF,
    }
}

/// One line on the console and in the kernel log. A new open each time: the kernel limits
/// how many lines one open file may write in a burst.
fn say(level: u8, text: &str) {
    use std::io::Write;
    let line = format!("<{level}>zlive-shutdown: {text}\n");
    match fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        Ok(mut kmsg) => {
            let _ = kmsg.write_all(line.as_bytes());
        }
        Err(_) => eprintln!("zlive-shutdown: {text}"),
    }
}

/// What the exitrd takes apart: the mounts of the live root (below /oldroot, and /oldroot
/// itself), in the order they can go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Mounts under /oldroot/run/live to move to /run/live first: they sit below the root
    /// overlay and are in use by it, so they cannot go before it, nor it before them.
    pub moves: Vec<String>,
    /// Everything else of the old root, deepest first, /oldroot last.
    pub unmounts: Vec<String>,
}

impl Teardown {
    /// Mounts that could not be moved out stay where they are: they are unmounted (or, when
    /// that fails, remounted read-only and reported) with the rest of the live root, never
    /// forgotten.
    pub fn stay(&mut self, stuck: Vec<String>) {
        self.moves.retain(|m| !stuck.contains(m));
        self.unmounts.extend(stuck);
        self.unmounts
            .sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    }
}

/// Plan the teardown from the mount points in mountinfo order.
pub fn teardown(mount_points: &[String]) -> Teardown {
    let live = format!("{OLD_ROOT}/run/live");
    let mut plan = Teardown::default();
    for m in mount_points {
        if zlive::conf::is_within(m, &live) {
            // A mount inside one already moved goes with it.
            if !plan.moves.iter().any(|p| zlive::conf::is_within(m, p)) {
                plan.moves.push(m.clone());
            }
        } else if zlive::conf::is_within(m, OLD_ROOT) && !plan.unmounts.contains(m) {
            plan.unmounts.push(m.clone());
        }
    }
    plan.unmounts
        .sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    plan
}

/// The mount points below `under` (or it), deepest first.
fn mounts_under(under: &str) -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| zlive::conf::is_within(m, under))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    points.dedup();
    points
}

fn unescape(field: &str) -> String {
    zlive::world::mount_points(&format!("0 0 0:0 / {field} rw - x x rw"))
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Unmount these, in passes (an overlay must go before its layers), until none is left or
/// no pass makes progress or the deadline passes. Returns those left, with the last error.
fn unmount_all(mut points: Vec<String>, deadline: Instant) -> Vec<(String, nix::errno::Errno)> {
    let mut left = Vec::new();
    while !points.is_empty() && Instant::now() < deadline {
        left.clear();
        for p in &points {
            if let Err(e) = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::empty()) {
                left.push((p.clone(), e));
            }
        }
        if left.len() == points.len() {
            std::thread::sleep(Duration::from_millis(200));
        }
        points = left.iter().map(|(p, _)| p.clone()).collect();
    }
    left
}

/// Processes that hold something below `path`: their root, working directory, open files or
/// mapped files. Empty when none can be found.
fn holders(path: &str) -> Vec<String> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in procs.filter_map(|e| e.ok()) {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        let mut links: Vec<PathBuf> = vec![dir.join("root"), dir.join("cwd"), dir.join("exe")];
        if let Ok(fds) = fs::read_dir(dir.join("fd")) {
            links.extend(fds.filter_map(|f| f.ok()).map(|f| f.path()));
        }
        let holds = links
            .iter()
            .filter_map(|l| fs::read_link(l).ok())
            .any(|t| zlive::conf::is_within(&t.to_string_lossy(), path));
        if holds {
            let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}

/// The device-mapper names of zlive's open LUKS containers.
fn opened_containers() -> impl Iterator<Item = String> {
    fs::read_dir("/dev/mapper")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(zlive::plan::DM_PREFIX))
}

/// Close zlive's LUKS containers: their zvols stay busy, and their pools unexportable, while
/// they are open.
fn close_containers() {
    let Some(dmsetup) = DMSETUP.iter().find(|p| Path::new(p).exists()) else {
        return;
    };
    for name in opened_containers() {
        match crate::exec::run_bounded(
            Command::new(dmsetup).args(["remove", &name]),
            EXPORT_DEADLINE,
        ) {
            Ok(()) => say(6, &format!("closed LUKS container {name}")),
            Err(e) => say(
                3,
                &format!("LUKS container {name} could not be closed: {e:#}"),
            ),
        }
    }
}

/// Run `zpool export` for every imported pool, each bounded in time.
fn export_pools() {
    let zpool = PROGRAMS.iter().find(|p| Path::new(p).exists());
    let Some(zpool) = zpool else {
        say(3, "no zpool in the exitrd: the pools are not exported");
        return;
    };
    let pools = Command::new(zpool)
        .args(["list", "-H", "-o", "name"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for pool in pools.lines().map(str::trim).filter(|p| !p.is_empty()) {
        match crate::exec::run_bounded(Command::new(zpool).args(["export", pool]), EXPORT_DEADLINE) {
            Ok(()) => say(6, &format!("exported pool {pool}")),
            Err(e) => say(3, &format!("pool {pool} could not be exported: {e:#}; the next boot imports it with -f (a named pool) or leaves it alone (a scan)")),
        }
    }
}

/// Take the live system apart and end as `verb` says. Runs as PID 1 in the exitrd: it never
/// returns, and whatever fails, the machine still goes down.
pub fn shutdown(verb: &str) -> ! {
    let started = Instant::now();
    say(6, &format!("taking the live system apart before {verb}"));
    let mut plan = teardown(&mounts_under(OLD_ROOT).into_iter().rev().collect::<Vec<_>>());
    let mut stuck = Vec::new();
    for m in &plan.moves {
        let to = &m[OLD_ROOT.len()..];
        if let Err(e) = nix::mount::mount(
            Some(m.as_str()),
            to,
            None::<&str>,
            nix::mount::MsFlags::MS_MOVE,
            None::<&str>,
        ) {
            say(4, &format!("cannot move {m} out of the live root: {e}"));
            stuck.push(m.clone());
        }
    }
    plan.stay(stuck);
    // Each phase has its own bound: a live root that will not go must not leave the volumes
    // neither unmounted nor read-only, nor unreported.
    let mut left = unmount_all(plan.unmounts, Instant::now() + UNMOUNT_DEADLINE);
    left.extend(unmount_all(
        mounts_under("/run/live"),
        Instant::now() + UNMOUNT_DEADLINE,
    ));
    for (point, errno) in &left {
        let who = holders(point);
        let held = if who.is_empty() {
            String::new()
        } else {
            format!(", held by {}", who.join(", "))
        };
        let ro = nix::mount::mount(
            None::<&str>,
            point.as_str(),
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        );
        let then = if ro.is_ok() {
            "remounted read-only"
        } else {
            "left read-write"
        };
        say(
            3,
            &format!("cannot unmount {point}: {}{held}; {then}", errno.desc()),
        );
    }
    nix::unistd::sync();
    close_containers();
    export_pools();
    nix::unistd::sync();
    say(
        6,
        &format!("done in {:.2} s; {verb}", started.elapsed().as_secs_f64()),
    );
    let _ = nix::sys::reboot::reboot(reboot_mode(verb));
    // reboot(2) does not return on success; if it did, power off rather than exit as PID 1.
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_listing() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibzfs.so.6 => /lib/x86_64-linux-gnu/libzfs.so.6 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\tlibgone.so => not found\n";
        assert_eq!(
            loader_paths(listing),
            [
                "/lib/x86_64-linux-gnu/libzfs.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn our_own_interpreter() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf_interpreter(&me).expect("a dynamically linked test binary");
        assert!(
            interp.is_absolute() && interp.exists(),
            "{}",
            interp.display()
        );
        assert_eq!(elf_interpreter(b"not an elf"), None);
    }

    #[test]
    fn install_keeps_symlinks_on_the_way() {
        let src = crate::testing::tmp();
        let dest = crate::testing::tmp();
        fs::create_dir_all(src.join("usr/lib")).unwrap();
        fs::write(src.join("usr/lib/libx.so.1.2"), "library").unwrap();
        symlink("usr/lib", src.join("lib")).unwrap();
        symlink("libx.so.1.2", src.join("usr/lib/libx.so.1")).unwrap();
        let bytes = install(&src.join("lib/libx.so.1"), &dest).unwrap();
        assert_eq!(bytes, 7);
        let inside = |p: &str| dest.join(src.strip_prefix("/").unwrap()).join(p);
        assert!(fs::symlink_metadata(inside("lib")).unwrap().is_symlink());
        assert!(fs::symlink_metadata(inside("usr/lib/libx.so.1"))
            .unwrap()
            .is_symlink());
        assert_eq!(
            fs::read_to_string(inside("lib/libx.so.1")).unwrap(),
            "library"
        );
    }

    #[test]
    fn the_live_mounts_move_out_and_the_rest_go_deepest_first() {
        let points: Vec<String> = [
            "/oldroot",
            "/oldroot/run",
            "/oldroot/run/live/medium",
            "/oldroot/run/live/rootfs/filesystem.squashfs",
            "/oldroot/run/live/persistence/persistence",
            "/oldroot/run/live/persistence/persistence/sub",
            "/oldroot/usr",
            "/oldroot/var",
            "/oldroot/var/lib/app",
            "/run",
            "/proc",
        ]
        .map(String::from)
        .to_vec();
        let plan = teardown(&points);
        assert_eq!(
            plan.moves,
            [
                "/oldroot/run/live/medium",
                "/oldroot/run/live/rootfs/filesystem.squashfs",
                "/oldroot/run/live/persistence/persistence"
            ]
        );
        assert_eq!(plan.unmounts.last().map(String::as_str), Some("/oldroot"));
        assert_eq!(
            plan.unmounts.first().map(String::as_str),
            Some("/oldroot/var/lib/app")
        );
        assert_eq!(plan.unmounts.len(), 5);
        // A mount that could not be moved out is unmounted where it is, not dropped.
        let mut stuck = plan;
        stuck.stay(vec!["/oldroot/run/live/persistence/persistence".to_owned()]);
        assert_eq!(stuck.moves.len(), 2);
        assert_eq!(stuck.unmounts.len(), 6);
        assert!(stuck
            .unmounts
            .contains(&"/oldroot/run/live/persistence/persistence".to_owned()));
        assert_eq!(stuck.unmounts.last().map(String::as_str), Some("/oldroot"));
    }

    /// The exitrd built from this system runs its programs with nothing but what it holds.
    #[test]
    #[ignore = "needs root (chroot) and zpool: make check runs it as root"]
    fn the_exitrd_is_self_contained() {
        let root = crate::testing::tmp();
        let (files, bytes) = build(&root).unwrap();
        assert!(
            files >= 5 && bytes > 1 << 20,
            "{files} files, {bytes} bytes"
        );
        let shutdown = fs::read_link(root.join("shutdown")).unwrap();
        assert!(shutdown.is_relative(), "{}", shutdown.display());
        let zpool = PROGRAMS
            .iter()
            .find(|p| root.join(&p[1..]).exists())
            .unwrap();
        for program in [zpool, &"/shutdown"] {
            let out = Command::new("chroot")
                .arg(&root)
                .arg(program)
                .arg("--version")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !err.contains("error while loading shared libraries"),
                "{program}: {err}"
            );
            assert!(!err.contains("failed to run command"), "{program}: {err}");
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn verbs() {
        use nix::sys::reboot::RebootMode;
        assert_eq!(reboot_mode("reboot"), RebootMode::RB_AUTOBOOT);
        assert_eq!(reboot_mode("kexec"), RebootMode::RB_KEXEC);
        assert_eq!(reboot_mode("halt"), RebootMode::RB_HALT_SYSTEM);
        assert_eq!(reboot_mode("poweroff"), RebootMode::RB_POWER_OFF);
        assert_eq!(reboot_mode("???"), RebootMode::RB_POWER_OFF);
    }
}
