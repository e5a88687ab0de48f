//! Directory handles that never follow a symlink. A persistence volume comes from a disk
//! anyone may have written to; every path below it is resolved with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so that a planted symlink cannot make zlive read,
//! create, chown or mount anything outside the volume.

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Owner and permission bits to give a directory zlive creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Attrs {
    /// For directories on a volume that only lead to a source, or hold an overlay's `rw`
    /// and `work`: the volume stays mounted at /run/live/persistence after switch-root, and
    /// nobody but root should reach data there that the live system keeps private.
    pub const ROOT_0700: Attrs = Attrs {
        uid: 0,
        gid: 0,
        mode: 0o700,
    };
    /// For directories that lead to a `link` source: its symlinks point through them, so
    /// anyone may pass (not list); the source's own mode guards it.
    pub const ROOT_0711: Attrs = Attrs {
        uid: 0,
        gid: 0,
        mode: 0o711,
    };
    pub const ROOT_0755: Attrs = Attrs {
        uid: 0,
        gid: 0,
        mode: 0o755,
    };
    pub fn of(stat: &FileStat) -> Attrs {
        Attrs {
            uid: stat.st_uid,
            gid: stat.st_gid,
            mode: stat.st_mode & 0o7777,
        }
    }
}

/// An open directory, and the path it was reached by (for messages only).
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    pub path: String,
    /// Whether resolution below it may cross mount points (true under `/sysroot`, where
    /// entries are stacked; false on a volume).
    cross_mounts: bool,
}

fn join(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_owned()
    } else if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

impl SafeDir {
    /// Open a trusted absolute path (a mount point zlive made, or `/sysroot`).
    pub fn open_trusted(path: &str, cross_mounts: bool) -> Result<SafeDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("Failed to open {path}"))?;
        Ok(SafeDir {
            fd,
            path: path.to_owned(),
            cross_mounts,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn how(&self, flags: OFlag, cross_mounts: bool) -> OpenHow {
        let mut resolve = ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        if !cross_mounts {
            resolve |= ResolveFlag::RESOLVE_NO_XDEV;
        }
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve)
    }

    fn explain(&self, rel: &str, errno: Errno) -> anyhow::Error {
        let path = join(&self.path, rel);
        match errno {
            Errno::ELOOP => {
                anyhow!("{path}: a component is a symlink, which zlive does not follow")
            }
            Errno::EXDEV => anyhow!(
                "{path}: a component is a mount point or leaves {}",
                self.path
            ),
            Errno::ENOTDIR => anyhow!("{path}: a component is not a directory"),
            e => anyhow!("{path}: {}", e.desc()),
        }
    }

    /// Open the directory `rel` below this one (empty: this one again).
    pub fn open(&self, rel: &str) -> Result<SafeDir> {
        self.open_with(rel, self.cross_mounts)
    }

    /// Open the directory `rel` below this one on the same mount, whatever this handle
    /// allows: a mount point on the way is an error (EXDEV), and so is everything below it.
    pub fn open_same_mount(&self, rel: &str) -> Result<SafeDir> {
        self.open_with(rel, false)
    }

    fn open_with(&self, rel: &str, cross_mounts: bool) -> Result<SafeDir> {
        let target = if rel.is_empty() { "." } else { rel };
        let fd = openat2(
            self.fd(),
            target,
            self.how(OFlag::O_RDONLY | OFlag::O_DIRECTORY, cross_mounts),
        )
        .map_err(|e| self.explain(rel, e))?;
        Ok(SafeDir {
            fd,
            path: join(&self.path, rel),
            cross_mounts,
        })
    }

    /// Remove the entry `name` of this directory and, for a directory, everything below it:
    /// never through a symlink, and never into another mount (that is an error, and the
    /// caller should have looked first: what came before it is already gone).
    pub fn remove_tree(&self, name: &str) -> Result<()> {
        self.remove_below(name, 0)
    }

    fn remove_below(&self, name: &str, depth: usize) -> Result<()> {
        const MAX_DEPTH: usize = 256;
        if depth > MAX_DEPTH {
            anyhow::bail!("{}/{name} is nested too deeply to remove", self.path);
        }
        let st = fstatat(self.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.explain(name, e))?;
        if is_dir(&st) {
            let sub = self.open_same_mount(name)?;
            for child in sub.names()? {
                sub.remove_below(&child, depth + 1)?;
            }
        }
        let flag = match is_dir(&st) {
            true => UnlinkatFlags::RemoveDir,
            false => UnlinkatFlags::NoRemoveDir,
        };
        unlinkat(self.fd(), name, flag).map_err(|e| self.explain(name, e))
    }

    /// Open `rel` if it exists; `None` if it does not.
    pub fn open_if_exists(&self, rel: &str) -> Result<Option<SafeDir>> {
        match self.open(rel) {
            Ok(d) => Ok(Some(d)),
            Err(e) if self.lookup(rel)?.is_none() => {
                drop(e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `lstat` of `rel` resolved safely: `None` when the last component does not exist.
    pub fn lookup(&self, rel: &str) -> Result<Option<FileStat>> {
        if rel.is_empty() {
            return self.stat().map(Some);
        }
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, rel),
        };
        let parent = match parent {
            Some(p) => match self.open(p) {
                Ok(d) => d,
                Err(_) if self.lookup(p)?.is_none() => return Ok(None),
                Err(e) => return Err(e),
            },
            None => self.open("")?,
        };
        match fstatat(parent.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(parent.explain(name, e)),
        }
    }

    pub fn stat(&self) -> Result<FileStat> {
        fstat(self.fd()).with_context(|| format!("Failed to stat {}", self.path))
    }

    /// Create `rel` and any missing parents; directories that are created get `attrs`
    /// (parents get `parent_attrs`). Returns the directory and whether its last component
    /// was created. An existing symlink anywhere on the way is an error.
    pub fn create_dirs(
        &self,
        rel: &str,
        attrs: Attrs,
        parent_attrs: Attrs,
    ) -> Result<(SafeDir, bool)> {
        self.create_dirs_with(rel, |_, last| Ok(if last { attrs } else { parent_attrs }))
    }

    /// Create `rel` and any missing parents; a directory that is created gets the attributes
    /// `attrs_for(its parent, whether it is the last component)` returns. Returns the
    /// directory and whether its last component was created (then so were its missing parents).
    pub fn create_dirs_with(
        &self,
        rel: &str,
        attrs_for: impl Fn(&SafeDir, bool) -> Result<Attrs>,
    ) -> Result<(SafeDir, bool)> {
        let mut current = self.open("")?;
        let mut created = false;
        let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        for (i, component) in components.iter().enumerate() {
            created = match mkdirat(current.fd(), *component, Mode::from_bits_truncate(0o700)) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(e) => return Err(current.explain(component, e)),
            };
            let next = current.open(component)?;
            if created {
                next.set_attrs(attrs_for(&current, i + 1 == components.len())?)?;
            }
            current = next;
        }
        Ok((current, created))
    }

    /// The names in this directory, without `.` and `..`; names that are not UTF-8 are left
    /// out (they could not be shown in a message, nor linked faithfully).
    pub fn names(&self) -> Result<Vec<String>> {
        let listing = nix::dir::Dir::openat(
            self.fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .with_context(|| format!("Failed to list {}", self.path))?;
        let mut names = Vec::new();
        for item in listing {
            let item = item.with_context(|| format!("Failed to list {}", self.path))?;
            match item.file_name().to_str() {
                Ok(".") | Ok("..") | Err(_) => {}
                Ok(name) => names.push(name.to_owned()),
            }
        }
        Ok(names)
    }

    pub fn set_attrs(&self, attrs: Attrs) -> Result<()> {
        fchown(
            self.fd(),
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
        )
        .with_context(|| format!("Failed to chown {}", self.path))?;
        fchmod(self.fd(), Mode::from_bits_truncate(attrs.mode))
            .with_context(|| format!("Failed to chmod {}", self.path))
    }

    /// The path by which this process and its children reach exactly this directory, without
    /// resolving its path again (`/proc/self` would name the child).
    pub fn proc_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }
}

/// Whether a stat is a directory.
pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tmp;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_are_never_followed() {
        let root = tmp();
        let outside = tmp();
        std::fs::create_dir_all(root.join("vol/real")).unwrap();
        symlink(&outside, root.join("vol/evil")).unwrap();
        symlink("../..", root.join("vol/up")).unwrap();
        let vol = SafeDir::open_trusted(root.join("vol").to_str().unwrap(), false).unwrap();
        assert!(vol.open("real").is_ok());
        let err = vol.open("evil").unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(vol.open("up/x").is_err());
        assert!(vol.open("../vol").is_err());
        let err = vol
            .create_dirs("evil/new", Attrs::ROOT_0755, Attrs::ROOT_0755)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(!outside.join("new").exists());
        let (d, created) = vol
            .create_dirs(
                "a/b/c",
                Attrs {
                    uid: 0,
                    gid: 0,
                    mode: 0o750,
                },
                Attrs::ROOT_0755,
            )
            .unwrap();
        assert!(created);
        assert_eq!(d.stat().unwrap().st_mode & 0o7777, 0o750);
        assert!(vol.lookup("a/b/c").unwrap().is_some_and(|s| is_dir(&s)));
        assert!(vol.lookup("a/missing/c").unwrap().is_none());
        assert!(vol.lookup("evil/x").is_err());
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
