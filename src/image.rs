//! The live image's identity, and what a change of image means for persistence: pure
//! functions over the squashfs superblock, `.disk/info` and the kernel's release, and the rule
//! for which `persistence.conf` entries `persistence-image-change=reset-system` starts empty.
//!
//! An overlay made over one image is specific to it: persisted `/usr`, `/etc` or
//! `/var/lib/dpkg` files shadow a new image's own. The helper compares the identity of the
//! image it boots with the one stored with the volume (a ZFS user property, readable before
//! anything opens the volume) and keeps a snapshot from before the change.

use crate::conf::{Entry, Mode};

/// A squashfs image's own record of itself, from its superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Squashfs {
    /// When mksquashfs made it (seconds since the epoch, UTC).
    pub made: u32,
    /// Its size in bytes.
    pub bytes: u64,
    pub inodes: u32,
}

/// The squashfs magic, "hsqs" little-endian.
const MAGIC: u32 = 0x7371_7368;

impl Squashfs {
    /// The superblock's fields, from the image's first bytes; `None` for anything that is not
    /// a squashfs superblock (96 bytes at least).
    pub fn from_superblock(bytes: &[u8]) -> Option<Squashfs> {
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        if bytes.len() < 96 || u32_at(0)? != MAGIC {
            return None;
        }
        Some(Squashfs {
            inodes: u32_at(4)?,
            made: u32_at(8)?,
            bytes: u64_at(40)?,
        })
    }
}

/// The live image and the kernel a boot runs: what is compared from boot to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub squashfs: Squashfs,
    /// `uname -r`.
    pub kernel: String,
    /// live-build's `.disk/info` (its first line), when the medium has one: for people, not
    /// compared (a `toram` boot has released the medium before it is read).
    pub info: Option<String>,
}

/// The longest `.disk/info` line kept.
const INFO_MAX: usize = 200;

impl Identity {
    pub fn new(squashfs: Squashfs, kernel: &str, info: Option<&str>) -> Identity {
        let info = info
            .and_then(|text| text.lines().next())
            .map(|line| printable(line.trim()))
            .filter(|line| !line.is_empty());
        Identity {
            squashfs,
            kernel: printable(kernel.trim()),
            info,
        }
    }

    /// The same image and kernel (`.disk/info` aside).
    pub fn same_as(&self, other: &Identity) -> bool {
        self.squashfs == other.squashfs && self.kernel == other.kernel
    }

    /// The stored form, one line: `squashfs MADE BYTES INODES kernel RELEASE[ info TEXT]`.
    pub fn to_property(&self) -> String {
        let s = &self.squashfs;
        let mut text = format!(
            "squashfs {} {} {} kernel {}",
            s.made, s.bytes, s.inodes, self.kernel
        );
        if let Some(info) = &self.info {
            text.push_str(" info ");
            text.push_str(info);
        }
        text
    }

    /// The stored form read back; `None` for anything else (a property someone set by hand).
    pub fn from_property(text: &str) -> Option<Identity> {
        let mut words = text.splitn(7, ' ');
        let mut next = || words.next();
        if next()? != "squashfs" {
            return None;
        }
        let squashfs = Squashfs {
            made: next()?.parse().ok()?,
            bytes: next()?.parse().ok()?,
            inodes: next()?.parse().ok()?,
        };
        if next()? != "kernel" {
            return None;
        }
        let kernel = next()?;
        let info = match next() {
            None => None,
            Some(rest) => Some(rest.strip_prefix("info ")?),
        };
        (!kernel.is_empty()).then(|| Identity::new(squashfs, kernel, info))
    }

    /// How people are told which image this is: `.disk/info` when there is one, then the
    /// image's date and size and the kernel.
    pub fn describe(&self) -> String {
        let s = &self.squashfs;
        let made = format!(
            "image made {}, {} MiB",
            utc_minute(s.made),
            s.bytes.div_ceil(1 << 20)
        );
        match &self.info {
            Some(info) => format!("{info} ({made}, kernel {})", self.kernel),
            None => format!("{made}, kernel {}", self.kernel),
        }
    }
}

/// What an untrusted text may keep: printable ASCII and spaces, at most [`INFO_MAX`] bytes.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(INFO_MAX)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the epoch.
pub fn utc_minute(seconds: u32) -> String {
    let c = crate::utc::Civil::from_unix(u64::from(seconds));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

/// Kernel releases ordered as people read them (`6.12.10` after `6.12.9`): runs of digits
/// compare as numbers, everything else as text.
pub fn release_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (x, y) = (chunks(a), chunks(b));
    for ((x_digits, x), (y_digits, y)) in x.iter().zip(&y) {
        let order = match (x_digits, y_digits) {
            (true, true) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then(x.cmp(y))
            }
            _ => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    x.len().cmp(&y.len())
}

/// The kernels persistence holds that are newer than the running one: module trees in the live
/// system (`installed`) that the image does not have (`in_image`), newest first. The medium's
/// kernel is what boots; these never run.
pub fn newer_kernels(running: &str, installed: &[String], in_image: &[String]) -> Vec<String> {
    let mut newer: Vec<String> = installed
        .iter()
        .filter(|k| !in_image.contains(k))
        .filter(|k| release_order(k, running).is_gt())
        .cloned()
        .collect();
    newer.sort_by(|a, b| release_order(b, a));
    newer
}

/// What `persistence-image-change=` asks for when a boot finds a different image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// live-boot's behaviour, plus the snapshot and the message.
    #[default]
    Keep,
    /// Start empty what `union` entries keep over the image's own directories.
    ResetSystem,
}

impl OnChange {
    pub fn parse(value: &str) -> Option<OnChange> {
        match value {
            "keep" => Some(OnChange::Keep),
            "reset-system" => Some(OnChange::ResetSystem),
            _ => None,
        }
    }
}

/// Directories that hold the user's own data, never the image's: `reset-system` leaves what
/// persists there.
pub const USER_TREES: &[&str] = &["/home", "/root", "/srv"];

fn under(path: &str, tree: &str) -> bool {
    path == tree || path.strip_prefix(tree).is_some_and(|r| r.starts_with('/'))
}

/// The source an entry has without `source=`: its directory, relative (`.` for `/`).
fn default_source(dir: &str) -> &str {
    dir.trim_start_matches('/')
}

/// Whether an entry lies over the image's own directories: a `union` entry (the image is its
/// lower layer) outside the user's trees, with the source live-boot gives it (a `source=`
/// entry is the user's own arrangement). `bind` and `link` entries replace the image's
/// directory rather than lie over it.
pub fn over_the_image(entry: &Entry) -> bool {
    entry.mode == Mode::Union
        && entry.source == default_source(&entry.dir)
        && !USER_TREES.iter().any(|t| under(&entry.dir, t))
}

/// What `reset-system` empties of an entry over the image, as paths below the entry's
/// directory: all of it (`""`), or for `/` every top-level directory but the user's trees
/// (a `/ union` keeps `/home` in the same upper layer).
pub fn what_to_reset(entry: &Entry, top_level: &[String]) -> Vec<String> {
    if !over_the_image(entry) {
        return Vec::new();
    }
    if entry.dir != "/" {
        return vec![String::new()];
    }
    let mut names: Vec<String> = top_level
        .iter()
        .filter(|name| !USER_TREES.iter().any(|t| t[1..] == **name))
        .cloned()
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(inodes: u32, made: u32, bytes: u64) -> Vec<u8> {
        let mut b = vec![0u8; 96];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&inodes.to_le_bytes());
        b[8..12].copy_from_slice(&made.to_le_bytes());
        b[40..48].copy_from_slice(&bytes.to_le_bytes());
        b
    }

    fn entry(dir: &str, mode: Mode, source: &str) -> Entry {
        Entry {
            line: 1,
            dir: dir.to_owned(),
            mode,
            source: source.to_owned(),
        }
    }

    #[test]
    fn the_superblock_gives_date_size_and_inodes() {
        let s = Squashfs::from_superblock(&superblock(41_234, 1_765_000_000, 378_000_000));
        assert_eq!(
            s,
            Some(Squashfs {
                made: 1_765_000_000,
                bytes: 378_000_000,
                inodes: 41_234
            })
        );
        let mut not_squashfs = superblock(1, 2, 3);
        not_squashfs[0] = b'x';
        assert_eq!(Squashfs::from_superblock(&not_squashfs), None);
        assert_eq!(Squashfs::from_superblock(&superblock(1, 2, 3)[..95]), None);
    }

    #[test]
    fn identities_compare_image_and_kernel_not_info() {
        let s = Squashfs {
            made: 1_765_000_000,
            bytes: 378_000_000,
            inodes: 41_234,
        };
        let a = Identity::new(s, "6.12.95+deb12-amd64\n", Some("Debian 12 live\nsecond"));
        let a_toram = Identity::new(s, "6.12.95+deb12-amd64", None);
        assert!(a.same_as(&a_toram));
        let newer = Identity::new(
            Squashfs {
                made: s.made + 60,
                ..s
            },
            &a.kernel,
            None,
        );
        assert!(!a.same_as(&newer));
        let other_kernel = Identity::new(s, "6.12.96+deb12-amd64", None);
        assert!(!a.same_as(&other_kernel));
        assert_eq!(a.info.as_deref(), Some("Debian 12 live"));
    }

    #[test]
    fn the_stored_form_reads_back() {
        let s = Squashfs {
            made: 1_765_000_000,
            bytes: 378_000_000,
            inodes: 41_234,
        };
        for identity in [
            Identity::new(
                s,
                "6.12.95+deb12-amd64",
                Some("Debian GNU/Linux 12 \"Bookworm\" - Official amd64 LIVE"),
            ),
            Identity::new(s, "6.12.95+deb12-amd64", None),
        ] {
            let text = identity.to_property();
            assert!(!text.contains('\n'));
            assert_eq!(Identity::from_property(&text), Some(identity));
        }
        for bad in [
            "",
            "-",
            "squashfs 1 2",
            "squashfs x 2 3 kernel k",
            "squashfs 1 2 3 release k",
            "squashfs 1 2 3 kernel k extra",
        ] {
            assert_eq!(Identity::from_property(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn untrusted_info_is_printable_and_bounded() {
        let s = Squashfs {
            made: 0,
            bytes: 0,
            inodes: 0,
        };
        let long = "x".repeat(1000);
        let i = Identity::new(s, "k", Some(&format!("a\tb\u{1b}[31m {long}")));
        let info = i.info.unwrap();
        assert!(info.len() <= INFO_MAX && info.starts_with("a b [31m x"));
        assert!(info.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        assert_eq!(Identity::new(s, "k", Some(" \n")).info, None);
    }

    #[test]
    fn dates_for_people() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minute(1_765_000_000), "2025-12-06 05:46 UTC");
        let s = Squashfs {
            made: 1_765_000_000,
            bytes: 3 << 20,
            inodes: 9,
        };
        assert_eq!(
            Identity::new(s, "6.12", None).describe(),
            "image made 2025-12-06 05:46 UTC, 3 MiB, kernel 6.12"
        );
        assert_eq!(
            Identity::new(s, "6.12", Some("Debian live")).describe(),
            "Debian live (image made 2025-12-06 05:46 UTC, 3 MiB, kernel 6.12)"
        );
    }

    #[test]
    fn reset_system_takes_the_images_directories_only() {
        let over = |dir: &str, mode: Mode, source: &str| over_the_image(&entry(dir, mode, source));
        assert!(over("/usr", Mode::Union, "usr"));
        assert!(over("/etc", Mode::Union, "etc"));
        assert!(over("/var/lib", Mode::Union, "var/lib"));
        assert!(over("/opt", Mode::Union, "opt"));
        assert!(over("/", Mode::Union, ""));
        // The user's trees, custom sources, and entries that replace rather than lie over.
        assert!(!over("/home", Mode::Union, "home"));
        assert!(!over("/home/user", Mode::Union, "home/user"));
        assert!(!over("/root", Mode::Union, "root"));
        assert!(!over("/srv/www", Mode::Union, "srv/www"));
        assert!(!over("/usr", Mode::Union, "my-usr"));
        assert!(!over("/etc", Mode::Bind, "etc"));
        assert!(!over("/etc/app", Mode::Link, "etc/app"));
        // A name that only starts like a user tree is not one.
        assert!(over("/homework", Mode::Union, "homework"));
    }

    #[test]
    fn a_root_union_keeps_the_users_trees() {
        let top: Vec<String> = ["usr", "home", "etc", "root", "srv", "var"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            what_to_reset(&entry("/", Mode::Union, ""), &top),
            ["etc", "usr", "var"]
        );
        assert_eq!(
            what_to_reset(&entry("/usr", Mode::Union, "usr"), &top),
            [""]
        );
        assert!(what_to_reset(&entry("/home", Mode::Union, "home"), &top).is_empty());
    }

    #[test]
    fn kernel_releases_in_peoples_order() {
        use std::cmp::Ordering::*;
        assert_eq!(
            release_order("6.12.10+deb12-amd64", "6.12.9+deb12-amd64"),
            Greater
        );
        assert_eq!(
            release_order("6.12.9+deb12-amd64", "6.12.9+deb12-amd64"),
            Equal
        );
        assert_eq!(release_order("6.1.0-28-amd64", "6.12.95+deb12-amd64"), Less);
        assert_eq!(
            release_order("6.12.95+deb12-amd64", "6.12.95+deb12-rt-amd64"),
            Less
        );
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            newer_kernels(
                "6.12.95+deb12-amd64",
                &s(&[
                    "6.12.95+deb12-amd64",
                    "6.12.101+deb12-amd64",
                    "6.1.0-28-amd64",
                    "6.12.99+deb12-amd64"
                ]),
                &s(&["6.12.95+deb12-amd64", "6.12.99+deb12-amd64"]),
            ),
            ["6.12.101+deb12-amd64"]
        );
        assert!(newer_kernels("6.12.95", &s(&["6.12.95"]), &[]).is_empty());
    }

    #[test]
    fn the_parameter_values() {
        assert_eq!(OnChange::parse("keep"), Some(OnChange::Keep));
        assert_eq!(OnChange::parse("reset-system"), Some(OnChange::ResetSystem));
        assert_eq!(OnChange::parse("reset"), None);
        assert_eq!(OnChange::default(), OnChange::Keep);
    }
}
