//! The entries of persistence.conf, once their volume is mounted: preparing them before they
//! are mounted ([`prepare`], the root's own in [`root`]), `link` entries' symlink farms
//! ([`link`]), and the directory handles that never follow a symlink on a volume ([`safe`]).
//! Owns everything below the volumes' mount points and /sysroot; never imports a pool, opens a
//! volume or finds the medium. Everything here runs as root on data that came from a disk;
//! paths are relative to a [`Layout`] so that tests can use a temporary tree.

pub mod link;
pub mod prepare;
pub mod root;
pub mod safe;

use anyhow::{anyhow, Result};
use safe::{Attrs, SafeDir};
use std::path::PathBuf;
use tracing::{error, info};
use zlive::paths;
use zlive::plan::{Plan, PlannedEntry};
use zlive::units;

/// `zlive prepare DEST` and `zlive link DEST`, with their story in the journal under the
/// entry's fields.
pub fn prepare_or_link(plan: &Plan, prepare: bool, dest: &str) -> Result<()> {
    let layout = Layout { root: "/".into() };
    let entry = plan.entries.iter().find(|e| e.dest == dest);
    let (volume, dir, unit) = match entry {
        Some(e) => (
            plan.volumes[e.volume].describe(),
            e.entry.dir.clone(),
            e.unit.clone(),
        ),
        None => (
            String::new(),
            "/".to_owned(),
            units::SYSROOT_MOUNT.to_owned(),
        ),
    };
    if prepare && dest == paths::SYSROOT {
        // The root on a volume (`/ union`): sysroot.mount must have it before it starts.
        root::root_unit_up_to_date(plan)?;
    }
    let result = if prepare {
        prepare::prepare(plan, &layout, dest).or_else(|e| {
            if dest != paths::SYSROOT || plan.root.upper_base == paths::OVERLAY_DIR {
                return Err(e);
            }
            // A `/ union` that cannot be prepared on its volume: the root in RAM.
            root::root_in_ram(&layout, &format!("{e:#}"))
        })
    } else {
        link::link(plan, &layout, dest)
    };
    let (volume, dir, unit) = (volume.as_str(), dir.as_str(), unit.as_str());
    match result {
        Ok(report) => {
            for action in &report.actions {
                info!(
                    ZLIVE_ENTRY = dir,
                    ZLIVE_VOLUME = volume,
                    OBJECT_SYSTEMD_UNIT = unit,
                    "{dir}: {action}"
                );
            }
            if report.actions.is_empty() {
                info!(
                    ZLIVE_ENTRY = dir,
                    ZLIVE_VOLUME = volume,
                    OBJECT_SYSTEMD_UNIT = unit,
                    "{dir}: ready, nothing to create"
                );
            }
            Ok(())
        }
        Err(e) => {
            error!(
                ZLIVE_ENTRY = dir,
                ZLIVE_VOLUME = volume,
                OBJECT_SYSTEMD_UNIT = unit,
                "{dir}: {e:#}; this entry stays off for this boot"
            );
            Err(e)
        }
    }
}

/// Where the absolute paths of a plan are found: `/` at boot, a temporary tree in tests.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn host(&self, path: &str) -> String {
        let p: PathBuf = self.root.join(path.trim_start_matches('/'));
        p.to_string_lossy().into_owned()
    }
}

fn relative(dir: &str) -> &str {
    dir.trim_start_matches('/')
}

/// What prepare or link did, for the journal.
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

/// Create the mount point below `/sysroot` if it is missing. Missing parents are owned like
/// their own parent (so a new directory under `/home/alice` belongs to alice); the mount
/// point itself gets `leaf`. Returns whether anything was created.
fn create_dest(sysroot: &SafeDir, rel: &str, leaf: Attrs) -> Result<bool> {
    let (_, created) = sysroot.create_dirs_with(rel, |parent, last| {
        Ok(if last {
            leaf
        } else {
            Attrs {
                mode: 0o755,
                ..Attrs::of(&parent.stat()?)
            }
        })
    })?;
    Ok(created)
}

/// The helpers on a temporary tree laid out as at boot: the image, a volume, `/sysroot`.
#[cfg(test)]
pub mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::Path;
    use zlive::paths::{IMAGE_DIR, OVERLAY_DIR, PERSISTENCE_DIR, SYSROOT};
    use zlive::world::{DirState, GivenWorld};

    use crate::testing::tmp;

    const VOL: &str = "run/live/persistence/persistence";

    /// A tree with the image, the volume and /sysroot, and the plan for `conf`.
    fn tree(conf: &str) -> (Layout, Plan) {
        let root = tmp();
        for dir in [
            IMAGE_DIR,
            OVERLAY_DIR,
            SYSROOT,
            "/run/live/persistence/persistence",
        ] {
            fs::create_dir_all(root.join(dir.trim_start_matches('/'))).unwrap();
        }
        let cmd = zlive::cmdline::parse("boot=live persistence persistence-zpool=dpool");
        let mut world = GivenWorld::with_confs(vec![(
            format!("{PERSISTENCE_DIR}/persistence"),
            conf.as_bytes().to_vec(),
        )]);
        world.image_default = DirState::Directory;
        world.volume_default = DirState::Directory;
        (Layout { root }, zlive::plan::plan(&cmd, &world))
    }

    fn write(path: &Path, text: &str, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    #[ignore = "needs root (chown to other users): make check runs it as root"]
    fn bind_bootstrap_copies_the_live_directory_once() {
        let (layout, plan) = tree("/etc/app bind\n");
        let live = layout.root.join("sysroot/etc/app");
        write(&live.join("config"), "from the image\n", 0o640);
        write(&live.join("sub/deep"), "deep\n", 0o600);
        nix::unistd::chown(&live.join("config"), Some(1000.into()), Some(1000.into())).unwrap();
        symlink("config", live.join("link")).unwrap();
        fs::set_permissions(&live, fs::Permissions::from_mode(0o750)).unwrap();

        let report = prepare::prepare(&plan, &layout, "/sysroot/etc/app").unwrap();
        assert!(
            report.actions[0].contains("(first boot of this entry)"),
            "{report:?}"
        );
        let copy = layout.root.join(VOL).join("etc/app");
        assert_eq!(
            fs::read_to_string(copy.join("config")).unwrap(),
            "from the image\n"
        );
        assert_eq!(fs::read_to_string(copy.join("sub/deep")).unwrap(), "deep\n");
        assert_eq!(mode(&copy), 0o750);
        assert_eq!(mode(&copy.join("config")), 0o640);
        assert_eq!(fs::metadata(copy.join("config")).unwrap().uid(), 1000);
        assert_eq!(
            fs::read_link(copy.join("link")).unwrap(),
            Path::new("config")
        );
        let names: Vec<_> = fs::read_dir(copy.parent().unwrap()).unwrap().collect();
        assert_eq!(
            names.len(),
            1,
            "a temporary copy was left behind: {names:?}"
        );

        // The next boot finds the source and copies nothing again.
        fs::write(live.join("config"), "changed in the image\n").unwrap();
        let again = prepare::prepare(&plan, &layout, "/sysroot/etc/app").unwrap();
        assert!(again.actions.is_empty(), "{again:?}");
        assert_eq!(
            fs::read_to_string(copy.join("config")).unwrap(),
            "from the image\n"
        );
    }

    #[test]
    #[ignore = "needs root (chown to other users): make check runs it as root"]
    fn an_unfinished_copy_is_replaced() {
        let (layout, plan) = tree("/srv/data bind\n/srv/other bind\n");
        write(&layout.root.join("sysroot/srv/data/x"), "x\n", 0o644);
        let stale = layout.root.join(VOL).join("srv/.zlive-bootstrap-data");
        write(&stale.join("half"), "half a copy\n", 0o644);
        // An entry no longer in persistence.conf left one; /srv/other's may be under way.
        let gone = layout.root.join(VOL).join("srv/.zlive-bootstrap-gone");
        write(&gone.join("old"), "old\n", 0o644);
        let other = layout.root.join(VOL).join("srv/.zlive-bootstrap-other");
        write(&other.join("busy"), "busy\n", 0o644);
        prepare::prepare(&plan, &layout, "/sysroot/srv/data").unwrap();
        assert!(!gone.exists(), "a stale copy was left");
        assert!(
            other.join("busy").exists(),
            "a copy in progress was removed"
        );
        let data = layout.root.join(VOL).join("srv/data");
        assert_eq!(fs::read_to_string(data.join("x")).unwrap(), "x\n");
        assert!(!data.join("half").exists());
        assert!(!stale.exists());
    }

    #[test]
    #[ignore = "needs root (chown to other users): make check runs it as root"]
    fn union_dirs_take_the_image_owner_and_mode() {
        let (layout, plan) = tree("/home/user union\n");
        let image_home = layout
            .root
            .join(IMAGE_DIR.trim_start_matches('/'))
            .join("home/user");
        fs::create_dir_all(&image_home).unwrap();
        fs::set_permissions(&image_home, fs::Permissions::from_mode(0o750)).unwrap();
        nix::unistd::chown(&image_home, Some(1000.into()), Some(1000.into())).unwrap();
        let report = prepare::prepare(&plan, &layout, "/sysroot/home/user").unwrap();
        let src = layout.root.join(VOL).join("home/user");
        // rw/ is what the live system shows; everything above it is root's alone.
        for (dir, want_mode, want_uid) in [
            (&layout.root.join(VOL).join("home"), 0o700, 0),
            (&src, 0o700, 0),
            (&src.join("rw"), 0o750, 1000),
            (&src.join("work"), 0o700, 0),
        ] {
            assert_eq!(mode(dir), want_mode, "{}", dir.display());
            assert_eq!(
                fs::metadata(dir).unwrap().uid(),
                want_uid,
                "{}",
                dir.display()
            );
        }
        // The mount point below /sysroot was made too, owned like the source.
        let dest = layout.root.join("sysroot/home/user");
        assert_eq!(fs::metadata(&dest).unwrap().uid(), 1000);
        assert!(
            report.actions.iter().any(|a| a.contains("mount point")),
            "{report:?}"
        );
    }

    /// Data a live directory keeps private is not reachable by others through the volume,
    /// which stays mounted under /run/live/persistence; link sources stay reachable.
    #[test]
    #[ignore = "needs root (chown to other users): make check runs it as root"]
    fn parents_on_the_volume_are_private() {
        let (layout, plan) = tree("/root/notes bind\n/home/user/.config link\n");
        prepare::prepare(&plan, &layout, "/sysroot/root/notes").unwrap();
        link::link(&plan, &layout, "/sysroot/home/user/.config").unwrap();
        let vol = layout.root.join(VOL);
        assert_eq!(mode(&vol.join("root")), 0o700);
        assert_eq!(fs::metadata(vol.join("root")).unwrap().uid(), 0);
        assert_eq!(mode(&vol.join("home")), 0o711);
        assert_eq!(mode(&vol.join("home/user")), 0o711);
    }

    #[test]
    #[ignore = "needs root (chown to other users): make check runs it as root"]
    fn a_symlink_on_the_volume_is_refused() {
        let (layout, plan) = tree("/etc union\n/srv bind,source=data\n");
        let outside = tmp();
        symlink(&outside, layout.root.join(VOL).join("etc")).unwrap();
        let err = prepare::prepare(&plan, &layout, "/sysroot/etc").unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        symlink(&outside, layout.root.join(VOL).join("data")).unwrap();
        let err = prepare::prepare(&plan, &layout, "/sysroot/srv").unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "zlive wrote through a symlink"
        );
    }

    #[test]
    #[ignore = "needs root (chown to other users): make check runs it as root"]
    fn link_entries_make_a_symlink_farm() {
        let (layout, plan) = tree("/home/user/.config link,source=dotfiles\n");
        let dotfiles = layout.root.join(VOL).join("dotfiles");
        write(&dotfiles.join("app.conf"), "linked\n", 0o644);
        write(&dotfiles.join("sub/deep.conf"), "deep\n", 0o644);
        fs::create_dir_all(dotfiles.join("empty")).unwrap();
        let dest = layout.root.join("sysroot/home/user/.config");
        write(&dest.join("app.conf"), "from the image\n", 0o644);
        write(&dest.join("kept"), "not in the source\n", 0o644);

        let report = link::link(&plan, &layout, "/sysroot/home/user/.config").unwrap();
        assert!(
            report.actions.iter().any(|a| a.starts_with("2 symlinks")),
            "{report:?}"
        );
        let target = "/run/live/persistence/persistence/dotfiles";
        assert_eq!(
            fs::read_link(dest.join("app.conf")).unwrap(),
            Path::new(&format!("{target}/app.conf"))
        );
        assert_eq!(
            fs::read_link(dest.join("sub/deep.conf")).unwrap(),
            Path::new(&format!("{target}/sub/deep.conf"))
        );
        assert!(fs::symlink_metadata(dest.join("sub")).unwrap().is_dir());
        assert!(
            !dest.join("empty").exists(),
            "an empty source directory was linked"
        );
        assert_eq!(
            fs::read_to_string(dest.join("kept")).unwrap(),
            "not in the source\n"
        );
    }

    /// Bind-mount `from` on `to` for a test; `None` where this system does not allow it.
    fn bind(from: &Path, to: &Path) -> Option<()> {
        use nix::mount::{mount, MsFlags};
        fs::create_dir_all(to).unwrap();
        match mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
            Ok(()) => Some(()),
            Err(e) => {
                eprintln!("skipped: cannot bind-mount here ({e})");
                None
            }
        }
    }

    /// A link entry whose source has a *file* where a nested entry is mounted, and a
    /// directory where another is: the nested entries' data is never deleted or replaced.
    #[test]
    #[ignore = "needs root (chown to other users): make check runs it as root"]
    fn link_entries_never_touch_another_mount() {
        let (layout, plan) = tree(
            "/home/user link,source=dotfiles\n/home/user/.ssh bind,source=user-ssh\n/home/user/.cache bind,source=cache\n",
        );
        let vol = layout.root.join(VOL);
        write(
            &vol.join("dotfiles/.ssh"),
            "a file, not a directory\n",
            0o644,
        );
        write(
            &vol.join("dotfiles/.cache/x"),
            "would replace the cache's x\n",
            0o644,
        );
        write(&vol.join("dotfiles/.profile"), "linked\n", 0o644);
        write(&vol.join("user-ssh/id"), "secret key\n", 0o600);
        write(&vol.join("cache/x"), "cached\n", 0o644);
        let home = layout.root.join("sysroot/home/user");
        let (Some(()), Some(())) = (
            bind(&vol.join("user-ssh"), &home.join(".ssh")),
            bind(&vol.join("cache"), &home.join(".cache")),
        ) else {
            return;
        };
        let result = link::link(&plan, &layout, "/sysroot/home/user");
        for m in [".ssh", ".cache"] {
            nix::mount::umount(&home.join(m)).unwrap();
        }
        let report = result.unwrap();
        assert_eq!(
            fs::read_to_string(vol.join("user-ssh/id")).unwrap(),
            "secret key\n"
        );
        assert_eq!(fs::read_to_string(vol.join("cache/x")).unwrap(), "cached\n");
        assert!(fs::symlink_metadata(home.join(".profile"))
            .unwrap()
            .is_symlink());
        let left: Vec<&String> = report
            .actions
            .iter()
            .filter(|a| a.starts_with("left "))
            .collect();
        assert_eq!(left.len(), 2, "{report:?}");
    }
}
