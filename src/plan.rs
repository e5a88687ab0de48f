//! Planning: from the command line and what the generator may observe (the [`World`]) to a
//! [`Plan`]: volumes, the root overlay and the accepted persistence entries. Pure apart
//! from the reads the `World` does; `render.rs` turns a plan into unit files.

use crate::cmdline::{Cmdline, Encryption, MediumSpec};
use crate::conf::{self, Entry, Mode, Rejection};
use crate::names::{Dataset, PoolName};
use crate::notice::Notice;
use crate::paths::{self, CONF_NAME, OVERLAY_DIR, PERSISTENCE_DIR};
use crate::units;
use crate::world::{ConfRead, DirState, World};
use std::collections::BTreeSet;

/// How a volume is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// `persistence-zvol=`: ext4 on this zvol.
    Zvol(Dataset),
    /// `persistence-dataset=`: this ZFS dataset itself.
    Dataset(Dataset),
    /// `persistence-label=` (or the default label): an ext4 file system with this label on a
    /// zvol, or a dataset whose `org.zlive:label` property holds it.
    Label(String),
}

/// What holds a volume's files, and so how it is checked and mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// ext4 on a block device (a zvol, a LUKS container on one, or what a label leads to):
    /// checked by fsck, mounted from its device node once udev has made it.
    Ext4 { device: String, device_unit: String },
    /// A ZFS dataset, mounted with `zfsutil` where zlive says (never at its own
    /// `mountpoint`): no device, no fsck.
    Dataset(Dataset),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub kind: VolumeKind,
    /// Directory name under `/run/live/persistence/`.
    pub name: String,
    pub storage: Storage,
    pub mount_point: String,
    pub mount_unit: String,
    /// The import units the volume waits for.
    pub imports: Vec<String>,
    /// Pass 2: the volume is mounted and its `persistence.conf` was read.
    pub conf_read: bool,
}

impl Volume {
    /// How the volume is named to a person.
    pub fn describe(&self) -> String {
        match &self.kind {
            VolumeKind::Zvol(d) | VolumeKind::Dataset(d) => d.to_string(),
            VolumeKind::Label(l) => format!("LABEL={l}"),
        }
    }
    pub fn conf_path(&self) -> String {
        format!("{}/{CONF_NAME}", self.mount_point)
    }
    /// The service that waits, bounded, for the volume.
    pub fn wait_unit(&self) -> String {
        units::volume_wait(&self.name)
    }
    /// What its mount unit mounts (`What=`): the device node, or the dataset's name.
    pub fn what(&self) -> &str {
        match &self.storage {
            Storage::Ext4 { device, .. } => device,
            Storage::Dataset(d) => d.as_str(),
        }
    }
    /// The device node of an ext4 volume; `None` for a dataset.
    pub fn device(&self) -> Option<&str> {
        match &self.storage {
            Storage::Ext4 { device, .. } => Some(device),
            Storage::Dataset(_) => None,
        }
    }
    /// The device unit of an ext4 volume's node; `None` for a dataset.
    pub fn device_unit(&self) -> Option<&str> {
        match &self.storage {
            Storage::Ext4 { device_unit, .. } => Some(device_unit),
            Storage::Dataset(_) => None,
        }
    }
    /// The dataset of a volume that is one.
    pub fn dataset(&self) -> Option<&Dataset> {
        match &self.storage {
            Storage::Dataset(d) => Some(d),
            Storage::Ext4 { .. } => None,
        }
    }
    /// systemd's fsck service for an ext4 volume's device; `None` for a dataset (ZFS checks
    /// itself).
    pub fn fsck_unit(&self) -> Option<String> {
        self.device().map(units::fsck)
    }
    /// Whether a volume that is not there is a failure. One named with `persistence-zvol=` or
    /// `persistence-dataset=` is; a label search that finds nothing is only a notice
    /// (persistence is "use it if it is there"), as systemd treats a `nofail` mount.
    pub fn required(&self) -> bool {
        !matches!(self.kind, VolumeKind::Label(_))
    }
    /// The absolute path of a source directory on this volume.
    pub fn source_path(&self, source: &str) -> String {
        if source.is_empty() {
            self.mount_point.clone()
        } else {
            format!("{}/{source}", self.mount_point)
        }
    }
    /// An ext4 volume on `device` from now on (a LUKS container's mapped device).
    fn on_device(&mut self, device: &str) {
        if let (Storage::Ext4 { .. }, Ok(device_unit)) = (&self.storage, units::device(device)) {
            self.storage = Storage::Ext4 {
                device: device.to_owned(),
                device_unit,
            };
        }
    }
}

/// The device-mapper names of zlive's LUKS containers start with this.
pub const DM_PREFIX: &str = "zlive-";

/// A LUKS container on a zvol, opened by systemd's own systemd-cryptsetup@.service: the
/// unit the generator writes for it as systemd-cryptsetup-generator would for a crypttab line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksContainer {
    pub dataset: Dataset,
    /// The device-mapper name: `zlive-POOL-VOL…`.
    pub name: String,
    /// `systemd-cryptsetup@NAME.service`.
    pub unit: String,
    /// The container (`/dev/zvol/POOL/VOL`) and its device unit.
    pub source: String,
    pub source_unit: String,
    /// The opened device, `/dev/mapper/NAME`, which holds the file system.
    pub mapped: String,
}

impl LuksContainer {
    /// The container on zvol `dataset`, with the names derived from it.
    pub fn new(dataset: Dataset) -> Option<LuksContainer> {
        let name = dm_name(&dataset)?;
        let source = dataset.device();
        Some(LuksContainer {
            unit: units::cryptsetup(&name),
            source_unit: units::device(&source).ok()?,
            mapped: format!("/dev/mapper/{name}"),
            name,
            source,
            dataset,
        })
    }
}

/// The device-mapper name of the container on `dataset`: `zlive-`, then the dataset's name
/// with `/` as `-` and every character but letters, digits, `.` and `:` as `_XX` (its hex
/// code). Different datasets get different names (`tank/live-p` and `tank-live/p` would both
/// be `live-p` with `/` and `-` alike), and the name holds only characters dmsetup leaves as
/// they are. `None` past device-mapper's 127 characters.
pub fn dm_name(dataset: &Dataset) -> Option<String> {
    let mut name = String::from(DM_PREFIX);
    for c in dataset.as_str().chars() {
        match c {
            '/' => name.push('-'),
            c if c.is_ascii_alphanumeric() || c == '.' || c == ':' => name.push(c),
            c => {
                let mut bytes = [0u8; 4];
                for b in c.encode_utf8(&mut bytes).bytes() {
                    name.push_str(&format!("_{b:02x}"));
                }
            }
        }
    }
    (name.len() <= 127).then_some(name)
}

/// The LUKS containers to open, when `persistence-encryption=` allows LUKS: named volumes that
/// must be LUKS (`luks` without `none`), and those the volume wait found (`found`, from the
/// `World` for the generator). A named volume in a container is then mounted from the
/// container's mapped device.
fn luks_containers(
    encryption: Encryption,
    volumes: &mut [Volume],
    found: &[String],
) -> Vec<LuksContainer> {
    if !encryption.luks {
        return Vec::new();
    }
    let mut datasets: Vec<Dataset> = Vec::new();
    if !encryption.plain {
        datasets.extend(volumes.iter().filter_map(|v| match &v.kind {
            VolumeKind::Zvol(d) => Some(d.clone()),
            VolumeKind::Dataset(_) | VolumeKind::Label(_) => None,
        }));
    }
    datasets.extend(found.iter().filter_map(|f| Dataset::parse(f).ok()));
    datasets.sort();
    datasets.dedup();
    let containers: Vec<LuksContainer> = datasets
        .into_iter()
        .filter_map(LuksContainer::new)
        .collect();
    for v in volumes.iter_mut() {
        let VolumeKind::Zvol(d) = &v.kind else {
            continue;
        };
        if let Some(c) = containers.iter().find(|c| &c.dataset == d) {
            v.on_device(&c.mapped);
        }
    }
    containers
}

/// The volume of `label` is this dataset (the volume wait found it by its `org.zlive:label`
/// property): mounted as a dataset from now on. Anything else is left as it is.
fn on_dataset(volumes: &mut [Volume], label: &str, dataset: &str) {
    let Ok(dataset) = Dataset::parse(dataset) else {
        return;
    };
    if let Some(v) = volumes
        .iter_mut()
        .find(|v| v.kind == VolumeKind::Label(label.to_owned()))
    {
        v.storage = Storage::Dataset(dataset);
    }
}

/// How pools are imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// `zpool import -f -N POOL`: named on the command line.
    Named(PoolName),
    /// `zpool import -a -N` without `-f`: no pool named.
    Scan,
}

impl Import {
    pub fn unit(&self) -> String {
        match self {
            Import::Named(p) => units::import(p.as_str()),
            Import::Scan => units::IMPORT_SCAN.to_owned(),
        }
    }
}

/// One accepted persistence entry, with everything derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    /// Index into [`Plan::volumes`].
    pub volume: usize,
    pub entry: Entry,
    /// Where it is mounted before switch-root: `/sysroot` + DIR.
    pub dest: String,
    /// The source directory on the volume (absolute).
    pub src: String,
    /// The unit that makes it persistent: a mount unit, `sysroot.mount` for `/`, or a link service.
    pub unit: String,
    /// The helper that prepares it (creates the source, bootstrap copy), if any.
    pub prepare_unit: Option<String>,
}

/// Where the root overlay keeps its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPlan {
    /// Directory that holds `rw/` and `work/`.
    pub upper_base: String,
    /// Extra lower layer (read-only persistence of a `/ union` entry): `VOL/SRC/rw`.
    pub persistent_lower: Option<String>,
    /// Index into `Plan::entries` of the `/` entry, if there is one.
    pub entry: Option<usize>,
    /// Why a `/ union` entry's root is in RAM after all: its preparation on the volume failed
    /// in this boot (`paths::ROOT_FALLBACK` says why).
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the command line asks for (the medium, encryption, snapshots, read-only, …), as
    /// parsed: the plan is what follows from it and from the world.
    pub cmdline: Cmdline,
    /// The LUKS containers zlive opens: known from the command line, or found at run time.
    pub luks: Vec<LuksContainer>,
    /// Persistence was asked for and at least one volume could be planned.
    pub persistence: bool,
    pub imports: Vec<Import>,
    pub volumes: Vec<Volume>,
    pub root: RootPlan,
    pub entries: Vec<PlannedEntry>,
    pub rejected: Vec<Rejection>,
    /// The command line's notices, and planning's own.
    pub notices: Vec<Notice>,
}

impl Plan {
    /// Whether the pools are imported read-only: with read-only persistence, except when a
    /// snapshot is booted (making its device visible is a property change).
    pub fn import_read_only(&self) -> bool {
        self.cmdline.read_only && self.cmdline.snapshots.view.is_none()
    }

    /// The image file on the medium.
    pub fn image_file(&self) -> String {
        paths::image_file(&self.cmdline.media_path)
    }
    /// The file the image is mounted from: its copy in RAM with `toram`, else on the medium.
    pub fn image_source(&self) -> String {
        match self.cmdline.toram {
            true => format!("{}/{}", paths::TORAM_DIR, paths::IMAGE_NAME),
            false => self.image_file(),
        }
    }
    /// Whether zlive-find-medium.service provides the medium (and the image's file), rather
    /// than a mount unit of a named device: a scan, an ISO file to find, or a copy to RAM.
    pub fn medium_by_service(&self) -> bool {
        self.cmdline.medium == MediumSpec::Scan
            || self.cmdline.toram
            || self.cmdline.findiso.is_some()
    }
    /// What sysroot.mount's options hold once it is the second pass's, when persistence.conf
    /// puts the root on a volume (`/ union`): its upper layer there, or the volume as a lower
    /// layer under persistence-read-only.
    pub fn root_on_volume(&self) -> Option<String> {
        self.root.entry.as_ref()?;
        Some(match &self.root.persistent_lower {
            Some(lower) => lower.clone(),
            None => format!("upperdir={}/rw", self.root.upper_base),
        })
    }
    /// The plan once the volume wait has found LUKS containers on these zvols (`POOL/VOL`):
    /// what the generator plans when it reads them back (`World::luks_containers`).
    pub fn add_luks(&mut self, found: &[String]) {
        let mut all: Vec<String> = self.luks.iter().map(|c| c.dataset.to_string()).collect();
        all.extend(found.iter().cloned());
        self.luks = luks_containers(self.cmdline.encryption, &mut self.volumes, &all);
    }
    /// The plan once the volume wait has found that `label` is carried by this dataset: what
    /// the generator plans when it reads that back (`World::datasets_found`).
    pub fn add_dataset(&mut self, label: &str, dataset: &str) {
        on_dataset(&mut self.volumes, label, dataset);
    }
    /// The volume a unit instance names (`zlive-volume@NAME`, `zlive-prune@NAME`).
    pub fn volume_named(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }
    /// Pass 2: at least one volume's `persistence.conf` was read.
    pub fn is_second_pass(&self) -> bool {
        self.volumes.iter().any(|v| v.conf_read)
    }
}

fn volumes_from(cmdline: &Cmdline, imports: &[Import], notices: &mut Vec<Notice>) -> Vec<Volume> {
    let mut volumes: Vec<Volume> = Vec::new();
    let candidates = cmdline
        .zvols
        .iter()
        .map(|d| VolumeKind::Zvol(d.clone()))
        .chain(
            cmdline
                .datasets
                .iter()
                .map(|d| VolumeKind::Dataset(d.clone())),
        )
        .chain(cmdline.labels.iter().map(|l| VolumeKind::Label(l.clone())));
    for kind in candidates {
        let (name, storage, imports) = where_it_is(&kind, cmdline, imports);
        if let Err(why) = crate::names::check_label(&name) {
            notices.push(Notice::warning(format!(
                "persistence volume {}: its name cannot be a directory name: {why}",
                describe_kind(&kind)
            )));
            continue;
        }
        if let Some(other) = volumes.iter().find(|v| v.name == name) {
            notices.push(Notice::warning(format!(
                "persistence volume {} is ignored: {} already uses {PERSISTENCE_DIR}/{name}",
                describe_kind(&kind),
                other.describe()
            )));
            continue;
        }
        let mount_point = format!("{PERSISTENCE_DIR}/{name}");
        // The fsck and wait units are the longest names derived from the device and the name.
        let fsck_fits = match &storage {
            Ok(Storage::Ext4 { device, .. }) => units::fitting(units::fsck(device)).is_ok(),
            _ => true,
        };
        let (Ok(mount_unit), Ok(storage), true, Ok(_)) = (
            units::mount(&mount_point),
            storage,
            fsck_fits,
            units::fitting(units::volume_wait(&name)),
        ) else {
            notices.push(Notice::warning(format!(
                "persistence volume {}: name too long for a unit",
                describe_kind(&kind)
            )));
            continue;
        };
        volumes.push(Volume {
            kind,
            name,
            storage,
            mount_point,
            mount_unit,
            imports,
            conf_read: false,
        });
    }
    volumes
}

/// A volume's directory name, what holds it and the imports it waits for. A zvol or a
/// dataset names its pool, which `imports_from` always imports by name. A snapshot booted
/// read-only is the volume's snapshot device.
fn where_it_is(
    kind: &VolumeKind,
    cmdline: &Cmdline,
    imports: &[Import],
) -> (
    String,
    Result<Storage, crate::escape::EscapeError>,
    Vec<String>,
) {
    match kind {
        VolumeKind::Zvol(d) => (
            d.leaf().to_owned(),
            ext4_on(match &cmdline.snapshots.view {
                Some(view) if &view.dataset == d => view.device(),
                _ => d.device(),
            }),
            vec![Import::Named(d.pool()).unit()],
        ),
        VolumeKind::Dataset(d) => (
            d.leaf().to_owned(),
            Ok(Storage::Dataset(d.clone())),
            vec![Import::Named(d.pool()).unit()],
        ),
        VolumeKind::Label(l) => (
            l.clone(),
            ext4_on(format!("/dev/disk/by-label/{l}")),
            imports.iter().map(Import::unit).collect(),
        ),
    }
}

/// ext4 on a device node, with the node's device unit.
fn ext4_on(device: String) -> Result<Storage, crate::escape::EscapeError> {
    let device_unit = units::device(&device)?;
    Ok(Storage::Ext4 {
        device,
        device_unit,
    })
}

fn describe_kind(kind: &VolumeKind) -> String {
    match kind {
        VolumeKind::Zvol(d) | VolumeKind::Dataset(d) => d.to_string(),
        VolumeKind::Label(l) => format!("labelled {l}"),
    }
}

/// Which pools to import: the pools named by `persistence-zpool=`, `persistence-zvol=` and
/// `persistence-dataset=`
/// (forced, as a live system's host id is not stable), or else every pool a scan finds.
fn imports_from(cmdline: &Cmdline) -> Vec<Import> {
    let mut imports: Vec<Import> = Vec::new();
    let named = cmdline
        .pools
        .iter()
        .cloned()
        .chain(cmdline.zvols.iter().map(Dataset::pool))
        .chain(cmdline.datasets.iter().map(Dataset::pool));
    for pool in named {
        let import = Import::Named(pool);
        if !imports.contains(&import) {
            imports.push(import);
        }
    }
    if imports.is_empty() {
        imports.push(Import::Scan);
    }
    imports
}

/// Build the plan. `cmdline.live` must be true.
pub fn plan(cmdline: &Cmdline, world: &dyn World) -> Plan {
    let mut notices = cmdline.notices.clone();
    let (imports, mut volumes) = if cmdline.persistence {
        let imports = imports_from(cmdline);
        let volumes = volumes_from(cmdline, &imports, &mut notices);
        (imports, volumes)
    } else {
        (Vec::new(), Vec::new())
    };

    let luks = match cmdline.persistence {
        true => luks_containers(cmdline.encryption, &mut volumes, &world.luks_containers()),
        false => Vec::new(),
    };
    for (label, dataset) in world.datasets_found() {
        on_dataset(&mut volumes, &label, &dataset);
    }
    let mut plan = Plan {
        cmdline: cmdline.clone(),
        luks,
        persistence: cmdline.persistence && !volumes.is_empty(),
        imports: Vec::new(),
        volumes: Vec::new(),
        root: RootPlan {
            upper_base: OVERLAY_DIR.to_owned(),
            persistent_lower: None,
            entry: None,
            fallback: None,
        },
        entries: Vec::new(),
        rejected: Vec::new(),
        notices,
    };
    if !plan.persistence {
        return plan;
    }

    let parsed = read_confs(&mut plan, &mut volumes, world);
    plan.imports = imports;
    plan.volumes = volumes;
    accept_entries(&mut plan, parsed, world);
    if plan.root.entry.is_some() && !plan.cmdline.read_only {
        if let Some(why) = world.root_fallback() {
            // The volume could not take the root's changes in this boot: keep them in RAM.
            plan.root.upper_base = OVERLAY_DIR.to_owned();
            plan.notices.push(Notice::error(format!(
                "/ union: the root's changes are in RAM for this boot, not on the volume: {why}"
            )));
            plan.root.fallback = Some(why);
        }
    }
    // One list in file order: volume by volume, line by line.
    let order: Vec<String> = plan.volumes.iter().map(Volume::conf_path).collect();
    plan.rejected
        .sort_by_key(|r| (order.iter().position(|f| *f == r.file), r.line));
    plan
}

/// Pass 2: read the configuration of every mounted volume, in volume order: the entries of
/// each volume whose `persistence.conf` is used, by volume index.
fn read_confs(
    plan: &mut Plan,
    volumes: &mut [Volume],
    world: &dyn World,
) -> Vec<(usize, Vec<Entry>)> {
    let mut parsed: Vec<(usize, Vec<Entry>)> = Vec::new();
    for (index, volume) in volumes.iter_mut().enumerate() {
        if !world.is_mounted(&volume.mount_point) {
            continue;
        }
        let conf_path = volume.conf_path();
        if matches!(volume.kind, VolumeKind::Label(_)) {
            if let Err(why) = world.mounted_as_checked(&volume.name, &volume.mount_point) {
                plan.notices.push(Notice::error(format!(
                    "{conf_path} is not used: {why}; {} adds nothing in this boot",
                    volume.describe()
                )));
                continue;
            }
        }
        match world.read_conf(&volume.mount_point) {
            ConfRead::Missing => plan.notices.push(Notice::info(format!(
                "{conf_path} does not exist; {} adds nothing",
                volume.describe()
            ))),
            ConfRead::Refused(why) => plan
                .notices
                .push(Notice::error(format!("{conf_path} is not used: {why}"))),
            ConfRead::Text(bytes) => {
                volume.conf_read = true;
                let p = conf::parse(&conf_path, &bytes);
                plan.rejected.extend(p.rejected);
                parsed.push((index, p.entries));
            }
        }
    }
    parsed
}

/// What entries accepted so far claim: DIRs (with the volume and line that took them) and,
/// per volume, sources.
#[derive(Debug)]
struct Claims {
    dests: std::collections::HashMap<String, (usize, usize)>,
    sources: Vec<BTreeSet<String>>,
}

/// Apply the rules between entries (first wins for one DIR; no same or nested sources on
/// one volume), the checks against the image and the volume, and derive units.
fn accept_entries(plan: &mut Plan, parsed: Vec<(usize, Vec<Entry>)>, world: &dyn World) {
    let mut claims = Claims {
        dests: Default::default(),
        sources: vec![BTreeSet::new(); plan.volumes.len()],
    };
    for (vol_index, entries) in parsed {
        let volume = plan.volumes[vol_index].clone();
        for entry in entries {
            let dest = paths::in_sysroot(&entry.dir);
            let checked = units::for_entry(&dest, entry.mode == Mode::Link)
                .map_err(|e| e.to_string())
                .and_then(|unit| {
                    check_entry(plan, &claims, vol_index, &entry, world)?;
                    Ok(unit)
                });
            let unit = match checked {
                Ok(unit) => unit,
                Err(reason) => {
                    plan.rejected.push(Rejection {
                        file: volume.conf_path(),
                        line: entry.line,
                        text: entry.dir.clone(),
                        reason,
                    });
                    continue;
                }
            };
            if entry.mode == Mode::Bind && holds_set_uid_programs(&entry.dir) {
                plan.notices.push(Notice::warning(format!(
                    "{}:{}: {} bind: set-uid programs and device nodes do not work in a bind entry (persistence volumes are mounted nosuid,nodev); use union for a tree that has them",
                    volume.conf_path(),
                    entry.line,
                    entry.dir
                )));
            }
            claims
                .dests
                .insert(entry.dir.clone(), (vol_index, entry.line));
            claims.sources[vol_index].insert(entry.source.clone());
            let src = volume.source_path(&entry.source);
            let prepare_unit = match entry.mode {
                Mode::Link => None,
                _ => Some(units::prepare(&dest)),
            };
            if entry.dir == "/" {
                plan.root.entry = Some(plan.entries.len());
                if plan.cmdline.read_only {
                    plan.root.persistent_lower = Some(format!("{src}/rw"));
                } else {
                    plan.root.upper_base = src.clone();
                }
            }
            plan.entries.push(PlannedEntry {
                volume: vol_index,
                entry,
                dest,
                src,
                unit,
                prepare_unit,
            });
        }
    }
}

/// Why an entry cannot be accepted, if it cannot: the root rule, an earlier claim on the same
/// DIR or source, and the state of DIR in the image and of the source on the volume.
fn check_entry(
    plan: &Plan,
    claims: &Claims,
    vol_index: usize,
    entry: &Entry,
    world: &dyn World,
) -> Result<(), String> {
    if entry.dir == "/" && entry.mode != Mode::Union {
        return Err(format!(
            "only '/ union' is supported for the root; '/ {}' would replace the whole system",
            entry.mode
        ));
    }
    if let Some(&(v, line)) = claims.dests.get(&entry.dir) {
        return Err(format!(
            "{} is already made persistent by line {line} of {}",
            entry.dir,
            plan.volumes[v].conf_path()
        ));
    }
    if let Some(other) = nesting_conflict(&claims.sources[vol_index], &entry.source) {
        return Err(format!(
            "its source '{}' and the source '{}' of an earlier entry are the same or nested; give one of them a source= outside the other",
            shown_source(&entry.source),
            shown_source(&other)
        ));
    }
    // The image side: a union needs the image's DIR as its lower layer, and no entry may sit
    // on a path that is a symlink in the image.
    match world.image_dir(&entry.dir) {
        DirState::Symlink(at) => {
            return Err(format!(
                "{at} is a symlink in the live image; make the symlink's target persistent instead"
            ))
        }
        DirState::NotDirectory(at) if entry.dir != "/" => {
            return Err(format!("{at} is not a directory in the live image"))
        }
        DirState::Missing if entry.mode == Mode::Union => {
            return Err(format!(
                "union needs {} in the live image as its lower layer, and the image has no such directory; use bind instead",
                entry.dir
            ))
        }
        _ => {}
    }
    let volume = &plan.volumes[vol_index];
    let src = volume.source_path(&entry.source);
    let options = match entry.dir.as_str() {
        "/" => Some(root_overlay_options(plan.cmdline.read_only, &src)),
        _ => entry_overlay_options(plan.cmdline.read_only, plan.entries.len(), entry, &src),
    };
    if let Some(len) = options
        .map(|o| o.len())
        .filter(|l| *l > MAX_OVERLAY_OPTIONS)
    {
        return Err(format!(
            "its overlay options would take {len} bytes, more than the {MAX_OVERLAY_OPTIONS} zlive allows below the kernel's 4095-byte limit for mount options; give it a shorter source="
        ));
    }
    // The volume side: never follow a symlink on a volume anyone may have written.
    match volume_problem(world, volume, entry, plan.cmdline.read_only) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Longest overlay option string zlive writes: the kernel takes one page (4095 bytes and a
/// NUL) of mount data, and libmount may add to it.
pub const MAX_OVERLAY_OPTIONS: usize = 3800;

/// The options of an overlay with these lower layers (colon-separated) and `rw`/`work` in
/// `upper_base`.
pub fn overlay_options(lower: &str, upper_base: &str) -> String {
    format!("noatime,lowerdir={lower},upperdir={upper_base}/rw,workdir={upper_base}/work")
}

/// Where an entry keeps its changes in read-only mode: a tmpfs directory per entry.
pub fn read_only_upper(index: usize) -> String {
    format!("{OVERLAY_DIR}/entry-{index}")
}

/// The overlay options of entry number `index` (not `/`), or `None` for a bind mount: in
/// read-only mode every entry is an overlay whose changes go to RAM.
pub fn entry_overlay_options(
    read_only: bool,
    index: usize,
    entry: &Entry,
    src: &str,
) -> Option<String> {
    let image_dir = paths::in_image(&entry.dir);
    match (read_only, entry.mode) {
        (true, Mode::Union) => Some(overlay_options(
            &format!("{src}/rw:{image_dir}"),
            &read_only_upper(index),
        )),
        (true, _) => Some(overlay_options(src, &read_only_upper(index))),
        (false, Mode::Union) => Some(overlay_options(&image_dir, src)),
        (false, _) => None,
    }
}

/// The root overlay's options for a `/ union` entry with its source at `src`.
fn root_overlay_options(read_only: bool, src: &str) -> String {
    match read_only {
        true => overlay_options(&format!("{src}/rw:{}", paths::IMAGE_DIR), OVERLAY_DIR),
        false => overlay_options(paths::IMAGE_DIR, src),
    }
}

/// Trees where a live system keeps set-uid programs (and, under /usr/lib, helpers that are).
const SET_UID_TREES: &[&str] = &[
    "/usr", "/bin", "/sbin", "/opt", "/lib", "/lib64", "/libexec",
];

/// Whether `dir` is, contains or lies in a tree that holds set-uid programs.
fn holds_set_uid_programs(dir: &str) -> bool {
    SET_UID_TREES
        .iter()
        .any(|tree| conf::is_within(dir, tree) || conf::is_within(tree, dir))
}

/// Why an entry's source on its volume cannot be used, if it cannot: a symlink or a
/// non-directory anywhere on the way (also for a union's `rw`/`work`), or a source missing
/// on a read-only volume.
fn volume_problem(
    world: &dyn World,
    volume: &Volume,
    entry: &Entry,
    read_only: bool,
) -> Option<String> {
    let mut paths = vec![entry.source.clone()];
    if entry.mode == Mode::Union {
        for sub in ["rw", "work"] {
            paths.push(if entry.source.is_empty() {
                sub.to_owned()
            } else {
                format!("{}/{sub}", entry.source)
            });
        }
    }
    for (i, path) in paths.iter().enumerate() {
        match world.volume_dir(&volume.mount_point, path) {
            DirState::Symlink(at) => {
                return Some(format!(
                "{at} on {} is a symlink; zlive does not follow symlinks on a persistence volume",
                volume.describe()
            ))
            }
            DirState::NotDirectory(at) => {
                return Some(format!("{at} on {} is not a directory", volume.describe()))
            }
            // Read-only: nothing can be created, so the source (and a union's rw) must exist.
            DirState::Missing if read_only && i < 2 => {
                return Some(format!(
                    "{} does not exist and the volume is read-only (persistence-read-only)",
                    volume.source_path(path)
                ))
            }
            // A missing source has no rw/ or work/ below it to check.
            DirState::Missing if i == 0 => return None,
            _ => {}
        }
    }
    None
}

fn shown_source(source: &str) -> &str {
    if source.is_empty() {
        "."
    } else {
        source
    }
}

/// An accepted source on the same volume that equals `source`, contains it, or lies inside it.
fn nesting_conflict(accepted: &BTreeSet<String>, source: &str) -> Option<String> {
    if accepted.contains("") {
        return Some(String::new());
    }
    if source.is_empty() {
        return accepted.iter().next().cloned();
    }
    if accepted.contains(source) {
        return Some(source.to_owned());
    }
    // An ancestor of `source` already accepted.
    let mut prefix = source;
    while let Some((parent, _)) = prefix.rsplit_once('/') {
        if accepted.contains(parent) {
            return Some(parent.to_owned());
        }
        prefix = parent;
    }
    // A descendant: names in ["source/", "source0"), as '0' follows '/' in ASCII.
    let low = format!("{source}/");
    let high = format!("{source}0");
    accepted.range(low..high).next().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline;
    use crate::world::GivenWorld;

    fn plan_for(cmd: &str, confs: &[(&str, &str)]) -> Plan {
        let world = GivenWorld {
            confs: confs
                .iter()
                .map(|(n, t)| (format!("{PERSISTENCE_DIR}/{n}"), t.as_bytes().to_vec()))
                .collect(),
            image: vec![("/media/data".into(), DirState::Missing)],
            image_default: DirState::Directory,
            volume: vec![("evil".into(), DirState::Symlink("evil".into()))],
            volume_default: DirState::Directory,
            root_fallback: None,
            luks: Vec::new(),
            datasets: Vec::new(),
        };
        plan(&cmdline::parse(cmd), &world)
    }

    fn dirs(plan: &Plan) -> Vec<(&str, usize)> {
        plan.entries
            .iter()
            .map(|e| (e.entry.dir.as_str(), e.volume))
            .collect()
    }

    #[test]
    fn nesting_rule_is_exact() {
        let set: BTreeSet<String> = ["a", "a-b", "x/y"].iter().map(|s| s.to_string()).collect();
        assert_eq!(nesting_conflict(&set, "a/b"), Some("a".into()));
        assert_eq!(nesting_conflict(&set, "x"), Some("x/y".into()));
        assert_eq!(nesting_conflict(&set, "x/y"), Some("x/y".into()));
        assert_eq!(nesting_conflict(&set, "a-"), None);
        assert_eq!(nesting_conflict(&set, "ab"), None);
        assert_eq!(nesting_conflict(&set, ""), Some("a".into()));
        let root: BTreeSet<String> = [String::new()].into();
        assert_eq!(nesting_conflict(&root, "z"), Some(String::new()));
    }

    #[test]
    fn example_a_from_the_spec() {
        // The spec's example A, as the golden case has it.
        let conf = include_str!(
            "../tests/cases/13-example-a/root/run/live/persistence/sdb3/persistence.conf"
        );
        let p = plan_for(
            "boot=live persistence persistence-label=sdb3",
            &[("sdb3", conf)],
        );
        assert_eq!(
            dirs(&p),
            vec![
                ("/home", 0),
                ("/home/alice/.ssh", 0),
                ("/usr", 0),
                ("/etc/NetworkManager/system-connections", 0),
                ("/home/alice", 0),
                ("/opt/tools", 0),
            ]
        );
        assert_eq!(p.entries[5].entry.mode, Mode::Bind);
        assert_eq!(p.entries[4].unit, "zlive-link@sysroot-home-alice.service");
        assert_eq!(p.entries[1].unit, "sysroot-home-alice-.ssh.mount");
        assert_eq!(
            p.rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![8, 9]
        );
    }

    #[test]
    fn example_b_nested_sources() {
        let p = plan_for(
            "boot=live persistence",
            &[("persistence", "/ union\n/home bind,source=home\n")],
        );
        assert_eq!(dirs(&p), vec![("/", 0)]);
        assert_eq!(p.rejected.len(), 1);
        assert!(p.rejected[0].reason.contains("same or nested"));
        assert_eq!(p.root.upper_base, "/run/live/persistence/persistence");
        let p = plan_for(
            "boot=live persistence",
            &[(
                "persistence",
                "/ union,source=root\n/home bind,source=home\n",
            )],
        );
        assert_eq!(dirs(&p), vec![("/", 0), ("/home", 0)]);
        assert_eq!(p.root.upper_base, "/run/live/persistence/persistence/root");
    }

    #[test]
    fn example_c_two_volumes_first_wins() {
        let p = plan_for(
            "boot=live persistence persistence-label=sdb3,sdc1",
            &[("sdb3", "/home\n"), ("sdc1", "/home union\n/srv\n")],
        );
        assert_eq!(dirs(&p), vec![("/home", 0), ("/srv", 1)]);
        assert!(p.rejected[0].reason.contains(
            "already made persistent by line 1 of /run/live/persistence/sdb3/persistence.conf"
        ));
    }

    #[test]
    fn image_and_volume_checks() {
        let p = plan_for(
            "boot=live persistence",
            &[(
                "persistence",
                "/media/data union\n/media/data\n/x source=evil/y\n/ bind\n",
            )],
        );
        assert_eq!(dirs(&p), vec![("/media/data", 0)]);
        assert_eq!(p.entries[0].entry.mode, Mode::Bind);
        let reasons: Vec<&str> = p.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert!(reasons[0].contains("lower layer"), "{reasons:?}");
        assert!(reasons[1].contains("symlink"), "{reasons:?}");
        assert!(reasons[2].contains("only '/ union'"), "{reasons:?}");
    }

    #[test]
    fn imports() {
        let p = plan_for("boot=live persistence", &[]);
        assert_eq!(p.imports, vec![Import::Scan]);
        assert_eq!(p.volumes[0].imports, vec!["zlive-import-scan.service"]);
        let p = plan_for("boot=live persistence persistence-zpool=dpool,tank", &[]);
        assert_eq!(
            p.volumes[0].imports,
            vec!["zlive-import@dpool.service", "zlive-import@tank.service"]
        );
        let p = plan_for("boot=live persistence persistence-zvol=my-pool/vol", &[]);
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(
            p.volumes[0].imports,
            vec!["zlive-import@my\\x2dpool.service"]
        );
        assert_eq!(
            p.volumes[0].device_unit(),
            Some("dev-zvol-my\\x2dpool-vol.device")
        );
        assert_eq!(p.volumes[0].mount_point, "/run/live/persistence/vol");
    }

    /// Found by the plan fuzzer: a zvol whose fsck unit (systemd-fsck@dev-zvol-….service)
    /// would be longer than systemd accepts, though its device unit is not.
    #[test]
    fn volumes_whose_unit_names_are_too_long_are_refused() {
        let long = format!("p/{}/{}/w", "G".repeat(120), "G".repeat(110));
        let p = plan_for(
            &format!("boot=live persistence persistence-zvol={long},p/v"),
            &[],
        );
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(p.volumes[0].name, "v");
        assert!(p
            .notices
            .iter()
            .any(|n| n.text.contains("name too long for a unit")));
        let dashes = format!("a{}", "-".repeat(70));
        assert!(
            PoolName::parse(&dashes).is_err(),
            "its import unit would be too long"
        );
        assert!(PoolName::parse(&dashes[..50]).is_ok());
    }

    #[test]
    fn volume_name_collisions_are_refused() {
        let p = plan_for("boot=live persistence persistence-zvol=a/p,b/p", &[]);
        assert_eq!(p.volumes.len(), 1);
        assert!(p.notices.iter().any(|n| n.text.contains("already uses")));
    }

    #[test]
    fn read_only_root_union() {
        let p = plan_for(
            "boot=live persistence persistence-read-only",
            &[("persistence", "/ union\n")],
        );
        assert_eq!(p.root.upper_base, OVERLAY_DIR);
        assert_eq!(
            p.root.persistent_lower.as_deref(),
            Some("/run/live/persistence/persistence/rw")
        );
    }

    /// An overlay whose options would pass the kernel's limit is refused, by its line.
    #[test]
    fn overlay_options_are_bounded() {
        let long = vec!["d".repeat(250); 15].join("/");
        let conf = format!("/srv union,source={long}\n/opt union,source=short\n");
        let p = plan_for("boot=live persistence", &[("persistence", &conf)]);
        assert_eq!(dirs(&p), vec![("/opt", 0)]);
        assert_eq!(p.rejected[0].line, 1);
        assert!(
            p.rejected[0].reason.contains("4095-byte limit"),
            "{:?}",
            p.rejected
        );
        let options = entry_overlay_options(false, 0, &p.entries[0].entry, &p.entries[0].src);
        assert!(options.is_some_and(|o| o.len() < MAX_OVERLAY_OPTIONS));
    }

    /// The containers the volume wait finds, added to its plan, give the plan the generator
    /// makes when it reads them back: the helper never plans the boot twice.
    #[test]
    fn containers_found_later_plan_as_the_generator_does() {
        let cmd = cmdline::parse(
            "boot=live persistence persistence-encryption=luks,none persistence-zvol=dpool/found",
        );
        let mut found_later = plan(&cmd, &GivenWorld::with_confs(Vec::new()));
        assert!(found_later.luks.is_empty());
        found_later.add_luks(&["dpool/found".to_owned(), "dpool/other".to_owned()]);
        let mut world = GivenWorld::with_confs(Vec::new());
        world.luks = vec!["dpool/found".to_owned(), "dpool/other".to_owned()];
        let generator = plan(&cmd, &world);
        assert_eq!(found_later, generator);
        assert_eq!(
            found_later.volumes[0].device(),
            Some("/dev/mapper/zlive-dpool-found")
        );
    }

    /// A dataset named on the command line is mounted as one, its pool imported by name; a
    /// label the volume wait found on a dataset becomes that dataset, in the helper's plan as
    /// in the generator's.
    #[test]
    fn datasets_named_or_found_by_their_label() {
        let named = plan_for(
            "boot=live persistence persistence-dataset=tank/live/persistence",
            &[],
        );
        assert_eq!(named.volumes.len(), 1, "the default label is not searched");
        let v = &named.volumes[0];
        assert_eq!(v.name, "persistence");
        assert_eq!(v.what(), "tank/live/persistence");
        assert_eq!((v.device(), v.fsck_unit()), (None, None));
        assert!(v.required());
        assert_eq!(
            named.imports,
            [Import::Named(PoolName::parse("tank").unwrap())]
        );
        let cmd = cmdline::parse("boot=live persistence persistence-label=persistence,other");
        let mut helper = plan(&cmd, &GivenWorld::with_confs(Vec::new()));
        assert_eq!(
            helper.volumes[0].device(),
            Some("/dev/disk/by-label/persistence")
        );
        helper.add_dataset("persistence", "dpool/live");
        let mut world = GivenWorld::with_confs(Vec::new());
        world.datasets = vec![("persistence".to_owned(), "dpool/live".to_owned())];
        let generator = plan(&cmd, &world);
        assert_eq!(helper, generator);
        assert_eq!(
            generator.volumes[0].dataset().map(Dataset::as_str),
            Some("dpool/live")
        );
        assert_eq!(
            generator.volumes[1].device(),
            Some("/dev/disk/by-label/other")
        );
    }

    #[test]
    fn luks_names_never_collide() {
        let name = |d: &str| dm_name(&Dataset::parse(d).unwrap()).unwrap();
        assert_eq!(name("dpool/secret"), "zlive-dpool-secret");
        assert_ne!(name("tank/live-p"), name("tank-live/p"));
        assert_eq!(name("tank/live-p"), "zlive-tank-live_2dp");
        assert_eq!(name("tank-live/p"), "zlive-tank_2dlive-p");
        assert_ne!(name("tank/a_2db"), name("tank/a-b"));
        let long = format!("tank/{}", "x".repeat(200));
        assert_eq!(dm_name(&Dataset::parse(&long).unwrap()), None);
    }

    #[test]
    fn bind_entries_in_set_uid_trees_get_a_warning() {
        let p = plan_for(
            "boot=live persistence",
            &[(
                "persistence",
                "/opt/tools bind\n/home/user bind\n/usr union\n",
            )],
        );
        let warned: Vec<&str> = p.notices.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("/opt/tools bind: set-uid programs"),
            "{warned:?}"
        );
        assert!(holds_set_uid_programs("/") && holds_set_uid_programs("/usr/local/bin"));
        assert!(!holds_set_uid_programs("/home") && !holds_set_uid_programs("/usrx"));
    }
}
