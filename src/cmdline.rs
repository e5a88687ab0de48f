//! The kernel command line: tokenising and the live-boot and zlive parameters.
//!
//! Pure: `&str` in, [`Cmdline`] out. Every parameter that zlive understands, ignores or
//! refuses is decided here, and every decision that the user should hear about is recorded
//! as a [`Notice`] for the caller to log.

use crate::names::{self, Dataset, PoolName};
use std::fmt;

/// Default `live-media-path=`: the directory on the medium that holds the images.
pub const DEFAULT_MEDIA_PATH: &str = "live";
/// Default `persistence-label=`.
pub const DEFAULT_LABEL: &str = "persistence";

/// How loud a notice is; maps onto syslog priorities when logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

/// Something about the command line the user should know: an ignored or refused parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub text: String,
}

/// Where the live medium comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediumSpec {
    /// A device node, either given as a path or derived from `LABEL=`/`UUID=`/… (a udev link).
    Device(String),
    /// No `live-media=`: a helper service scans the block devices, as live-boot does.
    Scan,
}

/// The parsed command line, reduced to what zlive acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `boot=live` (the last `boot=` wins). Without it zlive does nothing at all.
    pub live: bool,
    /// Persistence requested (`persistence` present, `nopersistence` absent) and not disabled
    /// by a parameter that excludes zvols.
    pub persistence: bool,
    pub read_only: bool,
    /// File-system labels to look for (`persistence-label=`), in the order given.
    pub labels: Vec<String>,
    /// Explicit volumes (`persistence-zvol=`), in the order given.
    pub zvols: Vec<Dataset>,
    /// Pools to import by name with `-f` (`persistence-zpool=`).
    pub pools: Vec<PoolName>,
    pub medium: MediumSpec,
    /// `live-media-path=`, normalised, relative to the medium root, without slashes at the ends.
    pub media_path: String,
    /// `overlay-size=`: the size of the tmpfs that holds the root overlay's changes.
    pub overlay_size: String,
    /// `live-media-timeout=`: seconds to wait for the medium device.
    pub medium_timeout: Option<u32>,
    pub notices: Vec<Notice>,
}

/// Split a command line into words the way the kernel does: whitespace separates words,
/// double quotes group (and are removed), there is no other escaping.
pub fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Parameters of live-boot that zlive deliberately does not implement, with the reason given
/// to the user. They are ignored with a warning; the boot goes on.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "persistence-path",
        "only applies to file and directory persistence, which zvols do not use",
    ),
    (
        "persistence-remove",
        "live-boot's own implementation never touches persistent data; nothing to do",
    ),
    (
        "live-boot.persistence-remove",
        "live-boot's own implementation never touches persistent data; nothing to do",
    ),
    ("nfsoverlay", "NFS overlays are not supported"),
    (
        "findiso",
        "booting from an ISO file is not supported; give live-media= instead",
    ),
    (
        "fromiso",
        "booting from an ISO file is not supported; give live-media= instead",
    ),
    (
        "isofrom",
        "booting from an ISO file is not supported; give live-media= instead",
    ),
    (
        "live-media-offset",
        "media inside other images are not supported",
    ),
    ("live-media-encryption", "loop-AES images are not supported"),
    ("encryption", "loop-AES images are not supported"),
    ("module", "only the image live/filesystem.squashfs is used"),
    ("toram", "copying the medium to RAM is not supported"),
    ("todisk", "copying the medium to a disk is not supported"),
    ("plainroot", "a plain root file system is not supported"),
    ("exposedroot", "an exposed root is not supported"),
    ("skipunion", "an exposed root is not supported"),
    ("verify-checksums", "checksum verification is not supported"),
    (
        "live-boot.verify-checksums",
        "checksum verification is not supported",
    ),
    (
        "ramdisk-size",
        "copying the medium is not supported, so there is no ramdisk",
    ),
];

/// Parse the command line. Never fails: anything unusable becomes a notice.
pub fn parse(cmdline: &str) -> Cmdline {
    let mut boot_live = false;
    let mut persistence_flag = false;
    let mut nopersistence = false;
    let mut read_only = false;
    let mut labels: Option<String> = None;
    let mut zvols: Option<String> = None;
    let mut pools: Option<String> = None;
    let mut encryption: Option<String> = None;
    let mut storage: Option<String> = None;
    let mut media: Option<String> = None;
    let mut method: Option<String> = None;
    let mut live_media: Option<String> = None;
    let mut media_path: Option<String> = None;
    let mut union: Option<String> = None;
    let mut overlay_size: Option<String> = None;
    let mut medium_timeout: Option<String> = None;
    let mut unsupported_seen: Vec<(&'static str, &'static str)> = Vec::new();

    for word in split_words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        let slot = match (key, value) {
            ("boot", Some(v)) => {
                boot_live = v == "live";
                continue;
            }
            ("persistence", None) => {
                persistence_flag = true;
                continue;
            }
            ("nopersistence", None) => {
                nopersistence = true;
                continue;
            }
            ("persistence-read-only", None) => {
                read_only = true;
                continue;
            }
            ("persistence-label", Some(_)) => &mut labels,
            ("persistence-zvol", Some(_)) => &mut zvols,
            ("persistence-zpool", Some(_)) => &mut pools,
            ("persistence-encryption", Some(_)) => &mut encryption,
            ("persistence-storage", Some(_)) => &mut storage,
            ("persistence-media", Some(_)) => &mut media,
            ("persistence-method", Some(_)) => &mut method,
            ("live-media" | "bootfrom", Some(_)) => &mut live_media,
            ("live-media-path", Some(_)) => &mut media_path,
            ("union", Some(_)) => &mut union,
            ("overlay-size", Some(_)) => &mut overlay_size,
            ("live-media-timeout", Some(_)) => &mut medium_timeout,
            _ => {
                if let Some(&(k, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                    if !unsupported_seen.iter().any(|(seen, _)| *seen == k) {
                        unsupported_seen.push((k, why));
                    }
                }
                continue;
            }
        };
        // Last occurrence wins.
        *slot = value.map(str::to_owned);
    }

    let mut notices = Vec::new();
    let mut warn = |text: String| {
        notices.push(Notice {
            level: Level::Warning,
            text,
        })
    };
    for (key, why) in &unsupported_seen {
        warn(format!(
            "{key}= is not supported by zlive and is ignored: {why}"
        ));
    }

    let mut persistence = persistence_flag && !nopersistence;
    let mut disable = |why: String, warn: &mut dyn FnMut(String)| {
        if persistence {
            warn(format!("persistence disabled: {why}"));
        }
        persistence = false;
    };

    if let Some(u) = &union {
        if u != "overlay" {
            warn(format!(
                "union={u} is not supported; zlive always uses overlay"
            ));
        }
    }
    if let Some(m) = &method {
        if !list(m).any(|w| w == "overlay") {
            disable(
                format!("persistence-method={m} does not contain 'overlay'"),
                &mut warn,
            );
        }
    }
    if let Some(m) = &media {
        disable(
            format!(
                "persistence-media={m} restricts persistence to removable disks, and zvols are never removable"
            ),
            &mut warn,
        );
    }
    if let Some(s) = &storage {
        let words: Vec<&str> = list(s).collect();
        if !words.contains(&"filesystem") {
            disable(
                format!("persistence-storage={s} does not contain 'filesystem', the only storage a zvol provides"),
                &mut warn,
            );
        } else if words.iter().any(|w| *w != "filesystem") {
            warn(format!(
                "persistence-storage={s}: only 'filesystem' is supported; image files and directories are not searched"
            ));
        }
    }
    if let Some(e) = &encryption {
        let words: Vec<&str> = list(e).collect();
        if words.contains(&"luks") {
            warn(format!(
                "persistence-encryption={e}: LUKS is not supported; use ZFS native encryption on the zvol's dataset"
            ));
        }
        if !words.contains(&"none") {
            disable(
                format!("persistence-encryption={e} excludes unencrypted volumes, and LUKS is not supported"),
                &mut warn,
            );
        }
    }

    let label_given = labels.is_some();
    let labels = match &labels {
        None => vec![DEFAULT_LABEL.to_owned()],
        Some(value) => {
            let mut out = Vec::new();
            for label in list(value) {
                match names::check_label(label) {
                    Ok(()) if !out.iter().any(|l: &String| l == label) => {
                        out.push(label.to_owned())
                    }
                    Ok(()) => {}
                    Err(why) => warn(format!(
                        "persistence-label: ignoring '{}': {why}",
                        names::printable(label)
                    )),
                }
            }
            if out.is_empty() {
                disable(
                    format!(
                        "persistence-label={} names no usable label",
                        names::printable(value)
                    ),
                    &mut warn,
                );
            }
            out
        }
    };

    let mut zvol_list = Vec::new();
    for name in zvols.as_deref().map(list).into_iter().flatten() {
        match Dataset::parse(name) {
            Ok(d) if !zvol_list.contains(&d) => zvol_list.push(d),
            Ok(_) => {}
            Err(why) => warn(format!(
                "persistence-zvol: ignoring '{}': {why}",
                names::printable(name)
            )),
        }
    }
    if zvols.is_some() && zvol_list.is_empty() {
        disable(
            "persistence-zvol= names no usable volume".to_owned(),
            &mut warn,
        );
    }
    // An explicit zvol replaces the default label; an explicit label is searched as well.
    let labels = if label_given || zvol_list.is_empty() {
        labels
    } else {
        Vec::new()
    };

    let mut pool_list = Vec::new();
    for name in pools.as_deref().map(list).into_iter().flatten() {
        match PoolName::parse(name) {
            Ok(p) if !pool_list.contains(&p) => pool_list.push(p),
            Ok(_) => {}
            Err(why) => warn(format!(
                "persistence-zpool: ignoring '{}': {why}",
                names::printable(name)
            )),
        }
    }

    let medium = match live_media.as_deref() {
        None | Some("") => MediumSpec::Scan,
        Some(spec) => match names::device_from_spec(spec) {
            Ok(dev) => MediumSpec::Device(dev),
            Err(why) => {
                warn(format!(
                    "live-media={}: {why}; scanning for the medium instead",
                    names::printable(spec)
                ));
                MediumSpec::Scan
            }
        },
    };

    let media_path = match media_path.as_deref() {
        None => DEFAULT_MEDIA_PATH.to_owned(),
        Some(p) => match names::relative_path(p) {
            Ok(p) => p,
            Err(why) => {
                warn(format!(
                    "live-media-path={}: {why}; using '{DEFAULT_MEDIA_PATH}'",
                    names::printable(p)
                ));
                DEFAULT_MEDIA_PATH.to_owned()
            }
        },
    };

    let overlay_size = match overlay_size.as_deref() {
        None => "50%".to_owned(),
        Some(s) if names::is_tmpfs_size(s) => s.to_owned(),
        Some(s) => {
            warn(format!(
                "overlay-size={}: not a tmpfs size (N, Nk, Nm, Ng or N%); using 50%",
                names::printable(s)
            ));
            "50%".to_owned()
        }
    };

    let medium_timeout = match medium_timeout.as_deref() {
        None => None,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n > 0 && n <= 3600 => Some(n),
            _ => {
                warn(format!(
                    "live-media-timeout={}: not a number of seconds between 1 and 3600; ignored",
                    names::printable(s)
                ));
                None
            }
        },
    };

    if !boot_live {
        // Nothing of the above matters; keep the notices out of a non-live boot's log.
        notices.clear();
        persistence = false;
    }

    Cmdline {
        live: boot_live,
        persistence,
        read_only,
        labels,
        zvols: zvol_list,
        pools: pool_list,
        medium,
        media_path,
        overlay_size,
        medium_timeout,
        notices,
    }
}

/// Items of a comma-separated value; empty items are dropped.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter(|w| !w.is_empty())
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_quotes_and_whitespace() {
        assert_eq!(
            split_words("  a b=\"c d\"\te\n\"f g\"h \"\" "),
            vec!["a", "b=c d", "e", "f gh", ""]
        );
        assert_eq!(
            split_words("x=\"unterminated rest"),
            vec!["x=unterminated rest"]
        );
        assert!(split_words("   ").is_empty());
    }

    #[test]
    fn seed_command_line_activates_persistence() {
        let c = parse("boot=live noeject persistence skipconfig quiet splash");
        assert!(c.live);
        assert!(c.persistence);
        assert!(!c.read_only);
        assert_eq!(c.labels, vec!["persistence"]);
        assert_eq!(c.medium, MediumSpec::Scan);
        assert_eq!(c.media_path, "live");
        assert!(c.notices.is_empty(), "{:?}", c.notices);
    }

    #[test]
    fn without_boot_live_nothing_happens() {
        let c = parse("persistence toram root=/dev/sda1");
        assert!(!c.live);
        assert!(!c.persistence);
        assert!(c.notices.is_empty());
        // The last boot= wins.
        assert!(!parse("boot=live boot=casper persistence").live);
        assert!(parse("boot=casper boot=live").live);
    }

    #[test]
    fn nopersistence_wins_in_any_order() {
        assert!(!parse("boot=live nopersistence persistence").persistence);
        assert!(!parse("boot=live persistence nopersistence").persistence);
        assert!(!parse("boot=live persistence=yes").persistence);
    }

    #[test]
    fn labels_last_wins_and_commas() {
        let c = parse("boot=live persistence persistence-label=a persistence-label=b,c,,b");
        assert_eq!(c.labels, vec!["b", "c"]);
        let c = parse("boot=live persistence persistence-label=");
        assert!(!c.persistence);
        assert!(c.notices.iter().any(|n| n.text.contains("no usable label")));
        let c = parse("boot=live persistence persistence-label=\"a b\",ok");
        assert_eq!(c.labels, vec!["ok"]);
        assert!(c.notices.iter().any(|n| n.text.contains("'a b'")));
    }

    #[test]
    fn zvols_and_pools() {
        let c = parse("boot=live persistence persistence-zvol=dpool/persistence,tank/a/b persistence-zpool=dpool,tank,bad/name");
        assert_eq!(
            c.zvols.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            vec!["dpool/persistence", "tank/a/b"]
        );
        assert_eq!(
            c.pools.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            vec!["dpool", "tank"]
        );
        assert!(c.notices.iter().any(|n| n.text.contains("bad/name")));
        assert!(
            c.labels.is_empty(),
            "an explicit zvol replaces the default label"
        );
        let c = parse("boot=live persistence persistence-zvol=p/v persistence-label=x");
        assert_eq!(c.labels, vec!["x"]);
        let c = parse("boot=live persistence persistence-zvol=nopool");
        assert!(!c.persistence);
    }

    #[test]
    fn parameters_that_exclude_zvols_disable_persistence() {
        for p in [
            "persistence-media=removable",
            "persistence-storage=file",
            "persistence-encryption=luks",
            "persistence-method=snapshot",
        ] {
            let c = parse(&format!("boot=live persistence {p}"));
            assert!(!c.persistence, "{p}");
            assert!(
                c.notices
                    .iter()
                    .any(|n| n.text.starts_with("persistence disabled")),
                "{p}: {:?}",
                c.notices
            );
        }
        let c = parse("boot=live persistence persistence-storage=filesystem,file persistence-encryption=none,luks");
        assert!(c.persistence);
        assert_eq!(c.notices.len(), 2);
    }

    #[test]
    fn medium_and_overlay_parameters() {
        let c = parse("boot=live live-media=LABEL=LIVE live-media-path=/images//x/ overlay-size=2g live-media-timeout=30");
        assert_eq!(
            c.medium,
            MediumSpec::Device("/dev/disk/by-label/LIVE".into())
        );
        assert_eq!(c.media_path, "images/x");
        assert_eq!(c.overlay_size, "2g");
        assert_eq!(c.medium_timeout, Some(30));
        let c = parse("boot=live bootfrom=/dev/vdb overlay-size=lots live-media-path=../x");
        assert_eq!(c.medium, MediumSpec::Device("/dev/vdb".into()));
        assert_eq!(c.overlay_size, "50%");
        assert_eq!(c.media_path, "live");
        assert_eq!(c.notices.len(), 2, "{:?}", c.notices);
    }

    #[test]
    fn unsupported_parameters_are_named_once() {
        let c = parse("boot=live toram toram=filesystem.squashfs findiso=/x.iso union=aufs");
        let texts: Vec<&str> = c.notices.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(texts.iter().filter(|t| t.starts_with("toram=")).count(), 1);
        assert!(texts.iter().any(|t| t.starts_with("findiso=")));
        assert!(texts.iter().any(|t| t.starts_with("union=aufs")));
    }

    #[test]
    fn read_only_flag() {
        assert!(parse("boot=live persistence persistence-read-only").read_only);
    }
}
