//! The kernel command line: tokenising and the live-boot and zlive parameters.
//!
//! Pure: `&str` in, [`Cmdline`] out. Two steps: the words are sorted into slots by the
//! [`PARAMETERS`] table (last occurrence wins, as in live-boot), then one small rule per
//! parameter group turns the slots into settings. Everything the user should hear about
//! (an ignored value, a parameter that turns persistence off) becomes a [`Notice`].

use crate::names::{self, Dataset, PoolName, Snapshot};
use crate::notice::Notice;
use crate::paths::DEFAULT_MEDIA_PATH;
use std::collections::HashMap;

/// Default `persistence-label=`.
pub const DEFAULT_LABEL: &str = "persistence";
/// Default `overlay-size=`, as in live-boot.
const DEFAULT_OVERLAY_SIZE: &str = "50%";

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
    /// Explicit ZFS datasets (`persistence-dataset=`), in the order given: persistence on a
    /// dataset directly, as the overlays' upper layer (OpenZFS 2.2.2 and later).
    pub datasets: Vec<Dataset>,
    /// Pools to import by name with `-f` (`persistence-zpool=`).
    pub pools: Vec<PoolName>,
    pub medium: MediumSpec,
    /// `live-media-path=`, normalised, relative to the medium root, without slashes at the ends.
    pub media_path: String,
    /// `overlay-size=`: the size of the tmpfs that holds the root overlay's changes.
    pub overlay_size: String,
    /// `live-media-timeout=`: seconds to wait for the medium device.
    pub medium_timeout: Option<u32>,
    /// Which volumes `persistence-encryption=` accepts.
    pub encryption: Encryption,
    /// `persistence-zpool-timeout=`: how long a named pool's disks may take to appear.
    pub pool_timeout: u32,
    /// Snapshots of the volumes: how many to keep, and what to return to.
    pub snapshots: Snapshots,
    /// `toram`: copy the image into RAM and release the medium.
    pub toram: bool,
    /// `findiso=`: the medium is this ISO file on a file system of some device.
    pub findiso: Option<String>,
    /// `live-media=removable` / `removable-usb`: which devices a scan may take.
    pub removable: Removable,
    /// `persistence-create[=SIZE,encrypted]`: make persistence in the free space of the
    /// medium's disk when none is found.
    pub create: Option<CreateOnBoot>,
    pub notices: Vec<Notice>,
}

/// What `persistence-create` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateOnBoot {
    /// The new partition's size; all of the free space when `None`.
    pub size: Option<u64>,
    /// ZFS native encryption, with a new passphrase asked twice.
    pub encrypted: bool,
}

/// Which devices the medium scan considers (`live-media=removable|removable-usb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removable {
    /// Every block device.
    Any,
    /// Only removable disks (sysfs `removable` is 1).
    Removable,
    /// Only removable disks on USB.
    Usb,
}

/// Default `persistence-snapshots=`: a week of daily boots. A snapshot costs only what
/// changed since it; seven bound that, and reach back far enough to undo a bad update.
pub const DEFAULT_SNAPSHOTS: u32 = 7;

/// What `persistence-snapshots=`, `persistence-rollback=`, `persistence-reset` and
/// `persistence-snapshot=` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshots {
    /// zlive's snapshots to keep per volume (a new one at every boot); 0: none taken.
    pub keep: u32,
    /// `previous`, a snapshot's name on the volume, or `POOL/VOL@NAME`.
    pub rollback: Option<String>,
    /// Start from an empty volume (its persistence.conf kept), the old state kept as a snapshot.
    pub reset: bool,
    /// `persistence-migrate`: an ext4-on-zvol volume found by its label becomes a dataset.
    pub migrate: bool,
    /// Boot this snapshot, read-only.
    pub view: Option<Snapshot>,
    /// `persistence-image-change=`: what a boot of a different live image does (a snapshot
    /// from before the change is taken either way).
    pub image_change: crate::image::OnChange,
}

/// Default `persistence-zpool-timeout=`: a USB stick's disk is there within seconds.
pub const DEFAULT_POOL_TIMEOUT: u32 = 20;

/// The kinds of persistence volume `persistence-encryption=` accepts. ZFS native encryption
/// is below the volume and counts as `none` here: the zvol shows a plain file system once
/// its key is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encryption {
    /// `none`: a file system directly on the zvol.
    pub plain: bool,
    /// `luks`: a LUKS container on the zvol, holding the file system.
    pub luks: bool,
}

impl Encryption {
    /// live-boot's default, `persistence-encryption=none`.
    pub const PLAIN: Encryption = Encryption {
        plain: true,
        luks: false,
    };
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

/// What a parameter's words are collected into; aliases share a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Boot,
    Persistence,
    NoPersistence,
    ReadOnly,
    Label,
    Zvol,
    Dataset,
    Zpool,
    Encryption,
    Storage,
    Media,
    Method,
    LiveMedia,
    MediaPath,
    Union,
    OverlaySize,
    MediumTimeout,
    PoolTimeout,
    SnapshotsKeep,
    Rollback,
    Reset,
    Migrate,
    View,
    ImageChange,
    Toram,
    Findiso,
    Create,
}

/// How a word must look to count: `persistence=yes` is not the flag `persistence`, and a
/// bare `persistence-label` is not a label list (live-boot matches words the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Flag,
    Value,
}

/// Every parameter zlive acts on: the word's key, its form, and its slot.
const PARAMETERS: &[(&str, Form, Slot)] = &[
    ("boot", Form::Value, Slot::Boot),
    ("persistence", Form::Flag, Slot::Persistence),
    ("nopersistence", Form::Flag, Slot::NoPersistence),
    ("persistence-read-only", Form::Flag, Slot::ReadOnly),
    ("persistence-label", Form::Value, Slot::Label),
    ("persistence-zvol", Form::Value, Slot::Zvol),
    ("persistence-dataset", Form::Value, Slot::Dataset),
    ("persistence-zpool", Form::Value, Slot::Zpool),
    ("persistence-encryption", Form::Value, Slot::Encryption),
    ("persistence-storage", Form::Value, Slot::Storage),
    ("persistence-media", Form::Value, Slot::Media),
    ("persistence-method", Form::Value, Slot::Method),
    ("live-media", Form::Value, Slot::LiveMedia),
    ("bootfrom", Form::Value, Slot::LiveMedia),
    ("live-media-path", Form::Value, Slot::MediaPath),
    ("union", Form::Value, Slot::Union),
    ("overlay-size", Form::Value, Slot::OverlaySize),
    ("live-media-timeout", Form::Value, Slot::MediumTimeout),
    ("persistence-zpool-timeout", Form::Value, Slot::PoolTimeout),
    ("persistence-snapshots", Form::Value, Slot::SnapshotsKeep),
    ("persistence-rollback", Form::Value, Slot::Rollback),
    ("persistence-reset", Form::Flag, Slot::Reset),
    ("persistence-migrate", Form::Flag, Slot::Migrate),
    ("persistence-snapshot", Form::Value, Slot::View),
    ("persistence-image-change", Form::Value, Slot::ImageChange),
    ("toram", Form::Flag, Slot::Toram),
    ("toram", Form::Value, Slot::Toram),
    ("findiso", Form::Value, Slot::Findiso),
    ("persistence-create", Form::Flag, Slot::Create),
    ("persistence-create", Form::Value, Slot::Create),
];

/// Parameters of live-boot that zlive deliberately does not implement, in either form, with
/// the reason given to the user. They are ignored with a warning; the boot goes on.
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

/// The words of a command line, sorted into slots.
#[derive(Debug, Default)]
struct Words {
    /// The last word for each slot: `None` for a flag, the value otherwise.
    slots: HashMap<Slot, Option<String>>,
    /// Unsupported parameters, each once, in the order first seen.
    unsupported: Vec<(&'static str, &'static str)>,
}

impl Words {
    fn collect(cmdline: &str) -> Words {
        let mut words = Words::default();
        for word in split_words(cmdline) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            let form = if value.is_some() {
                Form::Value
            } else {
                Form::Flag
            };
            if let Some(&(_, _, slot)) = PARAMETERS.iter().find(|p| p.0 == key && p.1 == form) {
                words.slots.insert(slot, value.map(str::to_owned));
            } else if let Some(&(k, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                if !words.unsupported.iter().any(|(seen, _)| *seen == k) {
                    words.unsupported.push((k, why));
                }
            }
        }
        words
    }

    fn flag(&self, slot: Slot) -> bool {
        self.slots.contains_key(&slot)
    }

    fn value(&self, slot: Slot) -> Option<&str> {
        self.slots.get(&slot).and_then(Option::as_deref)
    }
}

/// The command line being built by the rules, with the helpers they share.
struct Builder<'w> {
    words: &'w Words,
    out: Cmdline,
}

impl Builder<'_> {
    fn warn(&mut self, text: String) {
        self.out.notices.push(Notice::warning(text));
    }

    fn notice(&mut self, text: String) {
        self.out.notices.push(Notice::info(text));
    }

    /// Turn persistence off, saying why once (only when it was on).
    fn disable(&mut self, why: String) {
        if self.out.persistence {
            self.warn(format!("persistence disabled: {why}"));
        }
        self.out.persistence = false;
    }

    /// A comma-separated value: each item parsed, bad ones named and skipped, repeats dropped.
    fn list<T: PartialEq>(
        &mut self,
        key: &str,
        value: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for item in list(value) {
            match parse(item) {
                Ok(v) if !out.contains(&v) => out.push(v),
                Ok(_) => {}
                Err(why) => self.warn(format!(
                    "{key}: ignoring '{}': {why}",
                    names::printable(item)
                )),
            }
        }
        out
    }

    /// A single value: parsed, or named with the reason and what happens instead (`None`).
    fn setting<T>(
        &mut self,
        slot: Slot,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        instead: &str,
    ) -> Option<T> {
        let value = self.words.value(slot)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(why) => {
                let shown = names::printable(value);
                self.warn(format!("{key}={shown}: {why}; {instead}"));
                None
            }
        }
    }
}

/// One rule per parameter group, applied in this order (which is the order of the notices).
const RULES: &[fn(&mut Builder)] = &[
    unsupported,
    union_type,
    restrictions,
    labels_and_volumes,
    snapshots,
    pools,
    medium,
    overlay_size,
    medium_timeout,
    pool_timeout,
    create_on_boot,
];

/// Parse the command line. Never fails: anything unusable becomes a notice.
pub fn parse(cmdline: &str) -> Cmdline {
    let words = Words::collect(cmdline);
    let live = words.value(Slot::Boot) == Some("live");
    let mut b = Builder {
        words: &words,
        out: Cmdline {
            live,
            persistence: words.flag(Slot::Persistence) && !words.flag(Slot::NoPersistence),
            read_only: words.flag(Slot::ReadOnly),
            labels: vec![DEFAULT_LABEL.to_owned()],
            zvols: Vec::new(),
            datasets: Vec::new(),
            pools: Vec::new(),
            medium: MediumSpec::Scan,
            media_path: DEFAULT_MEDIA_PATH.to_owned(),
            overlay_size: DEFAULT_OVERLAY_SIZE.to_owned(),
            medium_timeout: None,
            encryption: Encryption::PLAIN,
            pool_timeout: DEFAULT_POOL_TIMEOUT,
            snapshots: Snapshots {
                keep: DEFAULT_SNAPSHOTS,
                rollback: None,
                reset: false,
                migrate: false,
                view: None,
                image_change: crate::image::OnChange::Keep,
            },
            toram: false,
            findiso: None,
            removable: Removable::Any,
            create: None,
            notices: Vec::new(),
        },
    };
    for rule in RULES {
        rule(&mut b);
    }
    let mut out = b.out;
    if !live {
        // Nothing of the above matters; keep the notices out of a non-live boot's log.
        out.notices.clear();
        out.persistence = false;
        out.create = None;
    }
    out
}

fn unsupported(b: &mut Builder) {
    for (key, why) in &b.words.unsupported {
        b.warn(format!(
            "{key}= is not supported by zlive and is ignored: {why}"
        ));
    }
}

fn union_type(b: &mut Builder) {
    if let Some(u) = b.words.value(Slot::Union).filter(|u| *u != "overlay") {
        b.warn(format!(
            "union={u} is not supported; zlive always uses overlay"
        ));
    }
}

/// live-boot parameters that restrict where persistence may come from: those that exclude
/// a plain ext4 file system on a zvol turn persistence off.
fn restrictions(b: &mut Builder) {
    let w = b.words;
    if let Some(m) = w.value(Slot::Method) {
        if !list(m).any(|x| x == "overlay") {
            b.disable(format!("persistence-method={m} does not contain 'overlay'"));
        }
    }
    if let Some(m) = w.value(Slot::Media) {
        b.disable(format!(
            "persistence-media={m} restricts persistence to removable disks, and zvols are never removable"
        ));
    }
    if let Some(s) = w.value(Slot::Storage) {
        let kinds: Vec<&str> = list(s).collect();
        if !kinds.contains(&"filesystem") {
            b.disable(format!("persistence-storage={s} does not contain 'filesystem', the only storage a zvol provides"));
        } else if kinds.iter().any(|k| *k != "filesystem") {
            b.warn(format!("persistence-storage={s}: only 'filesystem' is supported; image files and directories are not searched"));
        }
    }
    if let Some(e) = w.value(Slot::Encryption) {
        let kinds: Vec<&str> = list(e).collect();
        for unknown in kinds.iter().filter(|k| !matches!(**k, "none" | "luks")) {
            b.warn(format!(
                "persistence-encryption={e}: '{}' is not a kind of volume (none, luks); ignored",
                names::printable(unknown)
            ));
        }
        b.out.encryption = Encryption {
            plain: kinds.contains(&"none"),
            luks: kinds.contains(&"luks"),
        };
        if b.out.encryption
            == (Encryption {
                plain: false,
                luks: false,
            })
        {
            b.disable(format!(
                "persistence-encryption={e} accepts neither 'none' nor 'luks'"
            ));
        }
    }
}

/// `persistence-label=`, `persistence-zvol=` and `persistence-dataset=`: an explicit zvol or
/// dataset replaces the default label; an explicit label is searched as well.
fn labels_and_volumes(b: &mut Builder) {
    let w = b.words;
    let given_labels = w.value(Slot::Label);
    if let Some(value) = given_labels {
        b.out.labels = b.list("persistence-label", value, |l| {
            names::check_label(l).map(|()| l.to_owned())
        });
        if b.out.labels.is_empty() {
            let shown = names::printable(value);
            b.disable(format!("persistence-label={shown} names no usable label"));
        }
    }
    if let Some(value) = w.value(Slot::Zvol) {
        b.out.zvols = b.list("persistence-zvol", value, Dataset::parse);
        if b.out.zvols.is_empty() {
            b.disable("persistence-zvol= names no usable volume".to_owned());
        }
    }
    if let Some(value) = w.value(Slot::Dataset) {
        b.out.datasets = b.list("persistence-dataset", value, Dataset::parse);
        if b.out.datasets.is_empty() {
            b.disable("persistence-dataset= names no usable dataset".to_owned());
        }
    }
    if given_labels.is_none() && !(b.out.zvols.is_empty() && b.out.datasets.is_empty()) {
        b.out.labels.clear();
    }
}

/// The snapshot parameters. Booting a snapshot is read-only and names its volume, so it
/// replaces the volumes searched otherwise; a rollback or a reset writes, so neither goes with
/// read-only persistence, and a reset wins over a rollback.
fn snapshots(b: &mut Builder) {
    let parse = |s: &str| match s.parse::<u32>() {
        Ok(n) if n <= 1000 => Ok(n),
        _ => Err("not a number from 0 to 1000".to_owned()),
    };
    let instead = format!("keeping {DEFAULT_SNAPSHOTS}");
    if let Some(n) = b.setting(
        Slot::SnapshotsKeep,
        "persistence-snapshots",
        parse,
        &instead,
    ) {
        b.out.snapshots.keep = n;
    }
    let rollback_name = |s: &str| match s == "previous"
        || Snapshot::parse(s).is_ok()
        || names::check_label(s).is_ok()
    {
        true => Ok(s.to_owned()),
        false => Err("not 'previous', a snapshot name or POOL/VOLUME@NAME".to_owned()),
    };
    b.out.snapshots.rollback = b.setting(
        Slot::Rollback,
        "persistence-rollback",
        rollback_name,
        "no rollback",
    );
    b.out.snapshots.reset = b.words.flag(Slot::Reset);
    let on_change = |s: &str| {
        crate::image::OnChange::parse(s).ok_or_else(|| "not 'keep' or 'reset-system'".to_owned())
    };
    if let Some(choice) = b.setting(
        Slot::ImageChange,
        "persistence-image-change",
        on_change,
        "keep",
    ) {
        b.out.snapshots.image_change = choice;
    }
    b.out.snapshots.migrate = b.words.flag(Slot::Migrate);
    b.out.snapshots.view = b.setting(
        Slot::View,
        "persistence-snapshot",
        Snapshot::parse,
        "booting the volume as it is",
    );
    if let Some(view) = b.out.snapshots.view.clone() {
        if b.out.read_only {
            b.notice(format!(
                "persistence-snapshot= with persistence-read-only: pool {} is imported read-write all the same, to make the snapshot's device visible (a property of {}); the volume itself is not written",
                view.dataset.pool().as_str(),
                view.dataset
            ));
        }
        b.out.zvols = vec![view.dataset.clone()];
        b.out.datasets.clear();
        b.out.labels.clear();
        b.out.read_only = true;
    }
    let writes =
        b.out.snapshots.reset || b.out.snapshots.rollback.is_some() || b.out.snapshots.migrate;
    if writes && b.out.read_only {
        let why = match b.out.snapshots.view {
            Some(_) => "persistence-snapshot= boots a snapshot read-only",
            None => "persistence-read-only writes nothing",
        };
        b.warn(format!(
            "persistence-rollback=, persistence-reset and persistence-migrate are ignored: {why}"
        ));
        b.out.snapshots.rollback = None;
        b.out.snapshots.reset = false;
        b.out.snapshots.migrate = false;
    }
    if b.out.snapshots.reset && b.out.snapshots.rollback.take().is_some() {
        b.warn(
            "persistence-rollback= is ignored: persistence-reset starts from an empty volume"
                .to_owned(),
        );
    }
}

fn pools(b: &mut Builder) {
    if let Some(value) = b.words.value(Slot::Zpool) {
        b.out.pools = b.list("persistence-zpool", value, PoolName::parse);
    }
}

/// `live-media=` (`bootfrom=`) and `live-media-path=`.
fn medium(b: &mut Builder) {
    let keyword = match b.words.value(Slot::LiveMedia) {
        Some("removable") => Some(Removable::Removable),
        Some("removable-usb") => Some(Removable::Usb),
        _ => None,
    };
    if let Some(removable) = keyword {
        b.out.removable = removable;
    } else if b
        .words
        .value(Slot::LiveMedia)
        .is_some_and(|m| !m.is_empty())
    {
        let device = b.setting(
            Slot::LiveMedia,
            "live-media",
            names::device_from_spec,
            "scanning for the medium instead",
        );
        b.out.medium = device.map_or(MediumSpec::Scan, MediumSpec::Device);
    }
    let absolute = |p: &str| match p.starts_with('/') {
        true => names::relative_path(p).map(|r| format!("/{r}")),
        false => Err("not an absolute path on the device".to_owned()),
    };
    // Empty, as live-build's GRUB entries give it (`findiso=${iso_path}`) when the stick is
    // booted directly rather than through a loopback ISO: not from an ISO file, as in live-boot.
    if b.words.value(Slot::Findiso).is_some_and(|f| !f.is_empty()) {
        b.out.findiso = b.setting(
            Slot::Findiso,
            "findiso",
            absolute,
            "not looking for an ISO file",
        );
    }
    b.out.toram = b.words.flag(Slot::Toram);
    let image = b.words.value(Slot::Toram);
    if let Some(image) = image {
        b.out.toram = true;
        if image != crate::paths::IMAGE_NAME {
            let shown = names::printable(image);
            b.warn(format!(
                "toram={shown}: zlive uses only {}; copying that to RAM",
                crate::paths::IMAGE_NAME
            ));
        }
    }
    let fallback = format!("using '{DEFAULT_MEDIA_PATH}'");
    if let Some(path) = b.setting(
        Slot::MediaPath,
        "live-media-path",
        names::relative_path,
        &fallback,
    ) {
        b.out.media_path = path;
    }
}

fn overlay_size(b: &mut Builder) {
    let parse = |s: &str| match names::is_tmpfs_size(s) {
        true => Ok(s.to_owned()),
        false => Err("not a tmpfs size (N, Nk, Nm, Ng or N%)".to_owned()),
    };
    let instead = format!("using {DEFAULT_OVERLAY_SIZE}");
    if let Some(size) = b.setting(Slot::OverlaySize, "overlay-size", parse, &instead) {
        b.out.overlay_size = size;
    }
}

fn medium_timeout(b: &mut Builder) {
    let parse = |s: &str| match s.parse::<u32>() {
        Ok(n) if n > 0 && n <= 3600 => Ok(n),
        _ => Err("not a number of seconds between 1 and 3600".to_owned()),
    };
    b.out.medium_timeout = b.setting(Slot::MediumTimeout, "live-media-timeout", parse, "ignored");
}

fn pool_timeout(b: &mut Builder) {
    let parse = |s: &str| match s.parse::<u32>() {
        Ok(n) if n <= 600 => Ok(n),
        _ => Err("not a number of seconds between 0 and 600".to_owned()),
    };
    let instead = format!("using {DEFAULT_POOL_TIMEOUT}");
    if let Some(n) = b.setting(
        Slot::PoolTimeout,
        "persistence-zpool-timeout",
        parse,
        &instead,
    ) {
        b.out.pool_timeout = n;
    }
}

/// `persistence-create[=SIZE,encrypted]`, last: it is dropped, with the reason, where the
/// other parameters rule out making persistence on the medium's disk.
fn create_on_boot(b: &mut Builder) {
    if !b.words.flag(Slot::Create) {
        return;
    }
    let mut create = CreateOnBoot::default();
    if let Some(value) = b.words.value(Slot::Create) {
        for item in list(value) {
            match (item, names::parse_size(item)) {
                ("encrypted", _) => create.encrypted = true,
                (_, Ok(bytes)) => create.size = Some(bytes),
                (_, Err(why)) => b.warn(format!(
                    "persistence-create: ignoring '{}': {why}; the words are a size (4G) and 'encrypted'",
                    names::printable(item)
                )),
            }
        }
    }
    let cmdline = &b.out;
    let refused = if !cmdline.persistence {
        Some("persistence is not requested (no 'persistence', or it was disabled)")
    } else if cmdline.snapshots.view.is_some() {
        Some("persistence-snapshot= boots a snapshot")
    } else if cmdline.read_only {
        Some("persistence-read-only writes nothing")
    } else if cmdline.toram {
        Some("with toram the medium's disk may be gone, and zlive never writes to it then")
    } else if cmdline.findiso.is_some() {
        Some("the medium is an ISO file (findiso=), and the disk holding it is not zlive's to change")
    } else if cmdline.labels.is_empty() {
        Some("no persistence label is searched for (persistence-zvol= or persistence-dataset= names the volume)")
    } else {
        None
    };
    match refused {
        Some(why) => b.warn(format!(
            "persistence-create is ignored: {why}; nothing is created"
        )),
        None => b.out.create = Some(create),
    }
}

/// Items of a comma-separated value; empty items are dropped.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter(|w| !w.is_empty())
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
            "persistence-encryption=lukslabel",
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
        assert_eq!(c.notices.len(), 1);
        assert_eq!(
            c.encryption,
            Encryption {
                plain: true,
                luks: true
            }
        );
        let c = parse("boot=live persistence persistence-encryption=luks");
        assert!(c.persistence && c.notices.is_empty(), "{:?}", c.notices);
        assert_eq!(
            c.encryption,
            Encryption {
                plain: false,
                luks: true
            }
        );
        assert_eq!(parse("boot=live persistence").encryption, Encryption::PLAIN);
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
        assert_eq!(c.pool_timeout, DEFAULT_POOL_TIMEOUT);
        assert_eq!(
            parse("boot=live persistence-zpool-timeout=5").pool_timeout,
            5
        );
        let c = parse("boot=live persistence-zpool-timeout=lots");
        assert_eq!(c.pool_timeout, DEFAULT_POOL_TIMEOUT);
        assert_eq!(c.notices.len(), 1);
        let c = parse("boot=live bootfrom=/dev/vdb overlay-size=lots live-media-path=../x");
        assert_eq!(c.medium, MediumSpec::Device("/dev/vdb".into()));
        assert_eq!(c.overlay_size, "50%");
        assert_eq!(c.media_path, "live");
        assert_eq!(c.notices.len(), 2, "{:?}", c.notices);
    }

    #[test]
    fn unsupported_parameters_are_named_once() {
        let c = parse("boot=live todisk=/dev/sdb todisk=/dev/sdc fromiso=/x.iso union=aufs");
        let texts: Vec<&str> = c.notices.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(texts.iter().filter(|t| t.starts_with("todisk=")).count(), 1);
        assert!(texts.iter().any(|t| t.starts_with("fromiso=")));
        assert!(texts.iter().any(|t| t.starts_with("union=aufs")));
    }

    #[test]
    fn read_only_flag() {
        assert!(parse("boot=live persistence persistence-read-only").read_only);
    }

    /// Each (key, form) appears once in the table, and no unsupported key shadows one.
    #[test]
    fn parameter_table_is_unambiguous() {
        for (i, (key, form, _)) in PARAMETERS.iter().enumerate() {
            assert!(
                !PARAMETERS[i + 1..]
                    .iter()
                    .any(|(k, f, _)| k == key && f == form),
                "{key} twice"
            );
            assert!(!UNSUPPORTED.iter().any(|(k, _)| k == key), "{key}");
        }
    }

    #[test]
    fn forms_and_aliases() {
        // A flag with a value, or a value parameter without one, is not that parameter.
        assert!(!parse("boot=live persistence-read-only=1").read_only);
        let c = parse("boot=live persistence persistence-label");
        assert_eq!(c.labels, vec!["persistence"]);
        // bootfrom= fills the same slot as live-media=: the last one wins.
        let c = parse("boot=live live-media=/dev/vdb bootfrom=/dev/vdc");
        assert_eq!(c.medium, MediumSpec::Device("/dev/vdc".into()));
        let c = parse("boot=live bootfrom=/dev/vdc live-media=");
        assert_eq!(c.medium, MediumSpec::Scan);
    }

    #[test]
    fn snapshot_parameters() {
        let c = parse("boot=live persistence");
        assert_eq!(c.snapshots.keep, DEFAULT_SNAPSHOTS);
        assert_eq!(c.snapshots.image_change, crate::image::OnChange::Keep);
        let c = parse("boot=live persistence persistence-image-change=reset-system");
        assert_eq!(
            c.snapshots.image_change,
            crate::image::OnChange::ResetSystem
        );
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        let c = parse("boot=live persistence persistence-image-change=wipe");
        assert_eq!(c.snapshots.image_change, crate::image::OnChange::Keep);
        assert!(
            c.notices[0].text.contains("persistence-image-change=wipe")
                && c.notices[0].text.contains("keep"),
            "{:?}",
            c.notices
        );
        let c =
            parse("boot=live persistence persistence-snapshots=0 persistence-rollback=previous");
        assert_eq!(c.snapshots.keep, 0);
        assert_eq!(c.snapshots.rollback.as_deref(), Some("previous"));
        let c =
            parse("boot=live persistence persistence-rollback=dpool/p@zlive-1 persistence-reset");
        assert!(c.snapshots.reset && c.snapshots.rollback.is_none());
        assert_eq!(c.notices.len(), 1, "{:?}", c.notices);
        let view = "boot=live persistence persistence-snapshot=dpool/p@zlive-1";
        assert!(parse(view).notices.is_empty(), "{:?}", parse(view).notices);
        let c = parse(&format!("{view} persistence-read-only"));
        assert!(
            c.notices.iter().any(|n| n
                .text
                .contains("pool dpool is imported read-write all the same")),
            "{:?}",
            c.notices
        );
        let c =
            parse("boot=live persistence persistence-snapshot=dpool/p@zlive-1 persistence-reset");
        assert!(c.read_only && !c.snapshots.reset);
        assert_eq!(c.zvols.len(), 1);
        assert!(c.labels.is_empty());
        let c = parse("boot=live persistence persistence-rollback=no/such/thing@");
        assert!(c.snapshots.rollback.is_none());
        assert!(
            c.notices[0]
                .text
                .contains("persistence-rollback=no/such/thing@"),
            "{:?}",
            c.notices
        );
    }

    #[test]
    fn persistence_create_takes_a_size_and_encrypted() {
        let c = parse("boot=live persistence persistence-create");
        assert_eq!(c.create, Some(CreateOnBoot::default()));
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        let c = parse("boot=live persistence persistence-create=encrypted,2G");
        let want = CreateOnBoot {
            size: Some(2 << 30),
            encrypted: true,
        };
        assert_eq!(c.create, Some(want));
        let c = parse("boot=live persistence persistence-create=2X,encrypted");
        assert_eq!(c.create.map(|c| (c.size, c.encrypted)), Some((None, true)));
        assert!(
            c.notices[0].text.contains("ignoring '2X'"),
            "{:?}",
            c.notices
        );
        // Never where the medium's disk is not there to write, or nothing is to be written.
        for (line, why) in [
            ("boot=live persistence-create", "not requested"),
            (
                "boot=live persistence persistence-read-only persistence-create",
                "writes nothing",
            ),
            ("boot=live persistence toram persistence-create", "toram"),
            (
                "boot=live persistence findiso=/a.iso persistence-create",
                "ISO file",
            ),
            (
                "boot=live persistence persistence-zvol=p/v persistence-create",
                "no persistence label",
            ),
            (
                "boot=live persistence persistence-snapshot=p/v@s persistence-create",
                "boots a snapshot",
            ),
        ] {
            let c = parse(line);
            assert_eq!(c.create, None, "{line}");
            assert!(
                c.notices
                    .iter()
                    .any(|n| n.text.contains("persistence-create is ignored")
                        && n.text.contains(why)),
                "{line}: {:?}",
                c.notices
            );
        }
        assert_eq!(
            parse("boot=other persistence persistence-create").create,
            None
        );
    }

    #[test]
    fn toram_findiso_and_removable_media() {
        let c = parse("boot=live toram findiso=//isos/live.iso live-media=removable-usb");
        assert!(c.toram);
        assert_eq!(c.findiso.as_deref(), Some("/isos/live.iso"));
        assert_eq!(c.removable, Removable::Usb);
        assert_eq!(c.medium, MediumSpec::Scan);
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        let c = parse("boot=live toram=other.squashfs findiso=relative.iso live-media=removable");
        assert!(c.toram && c.findiso.is_none());
        assert_eq!(c.removable, Removable::Removable);
        assert_eq!(c.notices.len(), 2, "{:?}", c.notices);
        // live-build's GRUB entries booted without a loopback ISO.
        let c = parse("boot=live persistence findiso= persistence-create");
        assert!(c.findiso.is_none());
        assert!(c.create.is_some(), "an empty findiso= is no ISO file");
        assert!(c.notices.is_empty(), "{:?}", c.notices);
    }
}
