//! What planning may observe of the system, as a [`World`]: the generator's read-only view
//! ([`RealWorld`]: `/proc/self/mountinfo`, the mounted image and the persistence volumes, all
//! below a root directory, `/` or `ZLIVE_ROOT` in tests), and a world given in full
//! ([`GivenWorld`]) for `zlive plan` and tests.

use crate::paths::{CHECKED_DIR, CONF_NAME, DATASETS_FOUND, IMAGE_DIR, LUKS_FOUND, ROOT_FALLBACK};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest `persistence.conf` zlive reads. live-boot has no limit; a real file is a few
/// hundred bytes, and a hostile one must not make the generator slow.
pub const MAX_CONF_SIZE: u64 = 256 * 1024;

/// What the generator found when it looked at a volume's `persistence.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfRead {
    /// No such file: the volume contributes nothing (as in live-boot).
    Missing,
    /// The file exists but is not used; the reason says why (symlink, FIFO, owner, size…).
    Refused(String),
    Text(Vec<u8>),
}

/// What a directory path turned out to be, checked component by component without
/// following symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    Directory,
    Missing,
    /// A component is not a directory (the path of that component).
    NotDirectory(String),
    /// A component is a symlink (the path of that component).
    Symlink(String),
    /// Not known (the tree is not mounted, or `zlive plan` without a system to look at).
    Unknown,
}

/// The read-only view of the system that planning may use.
pub trait World {
    /// A file system is mounted exactly at `path`.
    fn is_mounted(&self, path: &str) -> bool;
    /// Read `persistence.conf` from the volume mounted at `volume_dir`.
    fn read_conf(&self, volume_dir: &str) -> ConfRead;
    /// The state of `dir` (absolute, inside the live image) in the mounted image.
    fn image_dir(&self, dir: &str) -> DirState;
    /// The state of `source` (relative; empty = the root) on the volume mounted at `volume_dir`.
    fn volume_dir(&self, volume_dir: &str, source: &str) -> DirState;
    /// Why the root's changes must stay in RAM in this boot although `/ union` asks for the
    /// volume (`paths::ROOT_FALLBACK`, written when preparing the volume failed).
    fn root_fallback(&self) -> Option<String>;
    /// The zvols (`POOL/VOL`) the volume wait found to hold LUKS containers
    /// (`paths::LUKS_FOUND`).
    fn luks_containers(&self) -> Vec<String>;
    /// For a volume found by its label: whether what is mounted at `mount_point` is what the
    /// volume wait checked (`paths::CHECKED_DIR/NAME`), and why not.
    fn mounted_as_checked(&self, _name: &str, _mount_point: &str) -> Result<(), String> {
        Ok(())
    }
    /// The datasets the volume wait found for labels, `(label, POOL/DS)`
    /// (`paths::DATASETS_FOUND`).
    fn datasets_found(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A world described in full: the volumes mounted (each with its `persistence.conf` text),
/// and the state of directories in the image and on the volumes, by path prefix.
#[derive(Debug, Clone)]
pub struct GivenWorld {
    /// (mount point, `persistence.conf` bytes) of every mounted volume.
    pub confs: Vec<(String, Vec<u8>)>,
    /// (DIR, state) in the image: a DIR at or below the first matching prefix has that state.
    pub image: Vec<(String, DirState)>,
    pub image_default: DirState,
    /// (source, state) on any volume, matched like `image`.
    pub volume: Vec<(String, DirState)>,
    pub volume_default: DirState,
    pub root_fallback: Option<String>,
    pub luks: Vec<String>,
    /// `(label, POOL/DS)` the volume wait found.
    pub datasets: Vec<(String, String)>,
}

impl GivenWorld {
    /// Volumes with these configurations; nothing known about any directory.
    pub fn with_confs(confs: Vec<(String, Vec<u8>)>) -> Self {
        GivenWorld {
            confs,
            image: Vec::new(),
            image_default: DirState::Unknown,
            volume: Vec::new(),
            volume_default: DirState::Unknown,
            root_fallback: None,
            luks: Vec::new(),
            datasets: Vec::new(),
        }
    }
}

/// The state of the first prefix of `path` (on component boundaries) in `states`.
fn state_of(states: &[(String, DirState)], default: &DirState, path: &str) -> DirState {
    states
        .iter()
        .find(|(prefix, _)| crate::conf::is_within(path, prefix))
        .map_or_else(|| default.clone(), |(_, state)| state.clone())
}

impl World for GivenWorld {
    fn is_mounted(&self, path: &str) -> bool {
        self.confs.iter().any(|(p, _)| p == path)
    }
    fn read_conf(&self, volume_dir: &str) -> ConfRead {
        match self.confs.iter().find(|(p, _)| p == volume_dir) {
            Some((_, text)) => ConfRead::Text(text.clone()),
            None => ConfRead::Missing,
        }
    }
    fn image_dir(&self, dir: &str) -> DirState {
        state_of(&self.image, &self.image_default, dir)
    }
    fn volume_dir(&self, _volume_dir: &str, source: &str) -> DirState {
        state_of(&self.volume, &self.volume_default, source)
    }
    fn root_fallback(&self) -> Option<String> {
        self.root_fallback.clone()
    }
    fn luks_containers(&self) -> Vec<String> {
        self.luks.clone()
    }
    fn datasets_found(&self) -> Vec<(String, String)> {
        self.datasets.clone()
    }
}

#[derive(Debug)]
pub struct RealWorld {
    root: PathBuf,
    /// Mount point → what is mounted there.
    mounts: HashMap<String, Mounted>,
    /// The uid that stands for root: 0, or the owner of `ZLIVE_ROOT` in tests.
    root_uid: u32,
    /// What each path walked so far turned out to be: entries share their parents (`/srv/a`,
    /// `/srv/b`), which are then looked at once.
    seen: RefCell<HashMap<PathBuf, Seen>>,
}

/// The kind of one path component, as lstat found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Missing,
    Symlink,
    Other,
    Directory,
}

/// Undo the octal escapes of `/proc/self/mountinfo` (`\040` for a space, …).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points listed in a mountinfo text (field 5).
pub fn mount_points(mountinfo: &str) -> HashSet<String> {
    mount_devices(mountinfo).into_keys().collect()
}

/// What is mounted somewhere, as mountinfo says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounted {
    /// The device number, `MAJOR:MINOR` (field 3).
    pub device: String,
    /// The mount source after the separator (for a dataset, its name).
    pub source: String,
}

/// The mount points of a mountinfo text (field 5), each with what is mounted there (the last
/// mount wins, as it hides the others).
pub fn mount_devices(mountinfo: &str) -> HashMap<String, Mounted> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            // After the optional fields, " - FSTYPE SOURCE OPTIONS".
            let source = line.split(" - ").nth(1)?.split(' ').nth(1)?;
            Some((
                unescape_mountinfo(point),
                Mounted {
                    device: device.to_owned(),
                    source: unescape_mountinfo(source),
                },
            ))
        })
        .collect()
}

impl RealWorld {
    pub fn new(root: &Path) -> Self {
        let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
        let root_uid = if root == Path::new("/") {
            0
        } else {
            fs::metadata(root).map(|m| m.uid()).unwrap_or(0)
        };
        RealWorld {
            root: root.to_owned(),
            mounts: mount_devices(&mountinfo),
            root_uid,
            seen: RefCell::default(),
        }
    }

    fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The volume's root directory holds persistence.conf: whoever may write that directory
    /// may replace the file, so it must belong to root and not be writable by anyone else.
    fn volume_root_problem(&self, volume_dir: &str) -> Option<String> {
        let meta = match fs::symlink_metadata(self.host_path(volume_dir)) {
            Ok(m) => m,
            Err(e) => return Some(format!("cannot stat the volume's root directory: {e}")),
        };
        if meta.uid() != self.root_uid {
            return Some(format!(
                "the volume's root directory is owned by uid {}, not root, who could replace it",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Some(format!(
                "the volume's root directory is writable by group or others (mode {:04o}), who could replace it; make it 0755",
                meta.mode() & 0o7777
            ));
        }
        None
    }

    /// Walk `base/relative` one component at a time with lstat.
    fn walk(&self, base: &str, relative: &str) -> DirState {
        let mut current = self.host_path(base);
        let mut shown = base.to_owned();
        for component in relative.split('/').filter(|c| !c.is_empty()) {
            current.push(component);
            shown.push('/');
            shown.push_str(component);
            match self.lstat(&current) {
                Seen::Missing => return DirState::Missing,
                Seen::Symlink => return DirState::Symlink(shown),
                Seen::Other => return DirState::NotDirectory(shown),
                Seen::Directory => {}
            }
        }
        DirState::Directory
    }

    fn lstat(&self, path: &Path) -> Seen {
        if let Some(seen) = self.seen.borrow().get(path) {
            return *seen;
        }
        let seen = match fs::symlink_metadata(path) {
            Err(_) => Seen::Missing,
            Ok(m) if m.file_type().is_symlink() => Seen::Symlink,
            Ok(m) if !m.is_dir() => Seen::Other,
            Ok(_) => Seen::Directory,
        };
        self.seen.borrow_mut().insert(path.to_owned(), seen);
        seen
    }
}

impl World for RealWorld {
    fn is_mounted(&self, path: &str) -> bool {
        self.mounts.contains_key(path)
    }

    fn read_conf(&self, volume_dir: &str) -> ConfRead {
        let path = self.host_path(volume_dir).join(CONF_NAME);
        // O_NOFOLLOW: a symlink is refused, not followed; O_NONBLOCK: a FIFO cannot block us.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                (nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_NONBLOCK
                    | nix::fcntl::OFlag::O_NOCTTY)
                    .bits(),
            )
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ConfRead::Missing,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return ConfRead::Refused("it is a symlink".to_owned())
            }
            // The volume is mounted nodev: a device node cannot even be opened. Say what it is.
            Err(e) => {
                return match fs::symlink_metadata(&path) {
                    Ok(meta) if !meta.is_file() => ConfRead::Refused(describe_type(&meta)),
                    _ => ConfRead::Refused(format!("cannot open it: {e}")),
                }
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return ConfRead::Refused(format!("cannot stat it: {e}")),
        };
        if !meta.is_file() {
            return ConfRead::Refused(describe_type(&meta));
        }
        if meta.uid() != self.root_uid {
            return ConfRead::Refused(format!(
                "it is owned by uid {}, not root; whoever can write it decides what is mounted over the system",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return ConfRead::Refused(format!(
                "it is writable by group or others (mode {:04o}); make it 0644 or stricter",
                meta.mode() & 0o7777
            ));
        }
        if meta.len() > MAX_CONF_SIZE {
            return ConfRead::Refused(format!("it is larger than {} KiB", MAX_CONF_SIZE / 1024));
        }
        if meta.nlink() != 1 {
            return ConfRead::Refused(format!(
                "it has {} hard links; through another name it could be changed where zlive does not look",
                meta.nlink()
            ));
        }
        if let Some(why) = self.volume_root_problem(volume_dir) {
            return ConfRead::Refused(why);
        }
        let mut text = Vec::with_capacity(meta.len() as usize);
        match file.take(MAX_CONF_SIZE + 1).read_to_end(&mut text) {
            Ok(_) if text.len() as u64 > MAX_CONF_SIZE => {
                ConfRead::Refused(format!("it is larger than {} KiB", MAX_CONF_SIZE / 1024))
            }
            Ok(_) => ConfRead::Text(text),
            Err(e) => ConfRead::Refused(format!("cannot read it: {e}")),
        }
    }

    fn image_dir(&self, dir: &str) -> DirState {
        if !self.is_mounted(IMAGE_DIR) {
            return DirState::Unknown;
        }
        self.walk(IMAGE_DIR, dir)
    }

    fn volume_dir(&self, volume_dir: &str, source: &str) -> DirState {
        self.walk(volume_dir, source)
    }

    fn root_fallback(&self) -> Option<String> {
        let text = read_small(&self.host_path(ROOT_FALLBACK)).ok()?;
        Some(crate::names::printable(text.trim()))
    }

    fn mounted_as_checked(&self, name: &str, mount_point: &str) -> Result<(), String> {
        let record = format!("{CHECKED_DIR}/{name}");
        let checked = read_small(&self.host_path(&record))
            .map_err(|e| format!("the volume step's record {record} cannot be read ({e}), so which device it checked is not known"))?;
        let checked = checked.trim();
        let Some(mounted) = self.mounts.get(mount_point) else {
            return Err("it is not mounted".to_owned());
        };
        let (what, expected) = match checked.strip_prefix("dataset ") {
            Some(dataset) => (&mounted.source, dataset),
            None => (&mounted.device, checked),
        };
        match what == expected {
            true => Ok(()),
            false => Err(format!(
                "what is mounted there ({what}) is not what the volume step checked ({expected}): another device or dataset with the same label appeared in between"
            )),
        }
    }

    fn datasets_found(&self) -> Vec<(String, String)> {
        read_small(&self.host_path(DATASETS_FOUND))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(label, dataset)| (label.to_owned(), dataset.trim().to_owned()))
            .collect()
    }

    fn luks_containers(&self) -> Vec<String> {
        let text = read_small(&self.host_path(LUKS_FOUND)).unwrap_or_default();
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

fn describe_type(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "not a regular file"
    };
    format!("it is {what}, not a regular file")
}

/// Read a whole small file, for `/proc/cmdline`.
pub fn read_small(path: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    File::open(path)?.take(64 * 1024).read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields() {
        let text = "22 1 0:21 / /run rw - tmpfs tmpfs rw\n30 22 7:0 / /run/live/persistence/my\\040vol rw - ext4 /dev/zd0 rw\n";
        let m = mount_points(text);
        assert!(m.contains("/run"));
        assert!(m.contains("/run/live/persistence/my vol"));
        assert_eq!(m.len(), 2);
    }

    /// A persistence.conf that cannot even be opened (a socket here; a device node on the
    /// volume's nodev mount in a boot) is refused by what it is, not by the open's error.
    #[test]
    fn an_unopenable_conf_is_named_by_its_type() {
        let root = std::env::temp_dir().join(format!("zlive-world-{}", std::process::id()));
        let volume = root.join("run/live/persistence/v");
        fs::create_dir_all(&volume).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(volume.join(CONF_NAME)).unwrap();
        let found = RealWorld::new(&root).read_conf("/run/live/persistence/v");
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            found,
            ConfRead::Refused("it is a socket, not a regular file".to_owned())
        );
    }
    /// Walks that share parents answer as walks from scratch would: a parent looked at once
    /// still stops the walks below it at a symlink, a file or a missing component.
    #[test]
    fn walks_sharing_parents_see_each_component() {
        let root = std::env::temp_dir().join(format!("zlive-walk-{}", std::process::id()));
        let image = root.join(IMAGE_DIR.trim_start_matches('/'));
        fs::create_dir_all(image.join("srv/a")).unwrap();
        fs::write(image.join("srv/file"), "").unwrap();
        std::os::unix::fs::symlink("/etc", image.join("srv/link")).unwrap();
        let mountinfo = root.join("proc/self/mountinfo");
        fs::create_dir_all(mountinfo.parent().unwrap()).unwrap();
        fs::write(
            &mountinfo,
            format!("30 1 7:0 / {IMAGE_DIR} ro - squashfs /dev/loop0 ro\n"),
        )
        .unwrap();
        let world = RealWorld::new(&root);
        let found: Vec<DirState> = [
            "/srv/a",
            "/srv/link/x",
            "/srv/file/x",
            "/srv/none/x",
            "/srv/a",
            "/srv/link",
        ]
        .iter()
        .map(|d| world.image_dir(d))
        .collect();
        fs::remove_dir_all(&root).unwrap();
        let shown = |p: &str| format!("{IMAGE_DIR}{p}");
        assert_eq!(
            found,
            [
                DirState::Directory,
                DirState::Symlink(shown("/srv/link")),
                DirState::NotDirectory(shown("/srv/file")),
                DirState::Missing,
                DirState::Directory,
                DirState::Symlink(shown("/srv/link")),
            ]
        );
    }
}
