//! Rendering: a [`Plan`] becomes a list of [`Output`]s (units, drop-ins, links). Every value
//! goes through [`UnitText`], whose setters are the only way text reaches a unit file.

use crate::cmdline::MediumSpec;
use crate::conf::Mode;
use crate::escape;
use crate::paths::{
    IMAGE_DIR, IMAGE_NAME, MEDIUM_DIR, OVERLAY_DIR, PROC_CMDLINE, SYSROOT, SYSTEMD_CRYPTSETUP,
};
use crate::plan::{self, LuksContainer, Plan, PlannedEntry, Storage, Volume, VolumeKind};
use crate::units::{
    self, INITRD_FS_TARGET, INITRD_ROOT_FS_TARGET, RELOAD, SYSROOT_MOUNT, UMOUNT_TARGET,
};

/// Which of the generator's three output directories a file goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutDir {
    Normal,
    /// Only `sysroot.mount`: it must beat the `sysroot.mount` other generators may write
    /// into the normal directory (systemd-fstab-generator for an unknown `root=`).
    Early,
}

/// One file the generator writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Unit {
        dir: OutDir,
        name: String,
        body: String,
    },
    DropIn {
        dir: OutDir,
        unit: String,
        name: &'static str,
        body: String,
    },
    /// `<target>.requires/<unit>` pointing at `../<unit>`.
    RequiresLink {
        dir: OutDir,
        target: &'static str,
        unit: String,
    },
    /// `<unit>` pointing at `/dev/null`: the unit is masked.
    Mask { dir: OutDir, unit: &'static str },
}

impl Output {
    pub fn unit_name(&self) -> Option<&str> {
        match self {
            Output::Unit { name, .. } => Some(name),
            _ => None,
        }
    }
}

pub const DOC_GENERATOR: &str = "man:zlive-generator(8)";
pub const DOC_CONF: &str = "man:zlive.persistence.conf(5)";
const DROPIN: &str = "50-zlive.conf";
/// How long a volume's device may take to appear once its import has finished is bounded by
/// the `zlive-volume@` helper; this only stops a stray device job from lingering.
const VOLUME_DEVICE_TIMEOUT: &str = "2min";
const MEDIUM_TIMEOUT_DEFAULT: u32 = 60;

/// Unit file text. Setters escape what they are given; nothing else appends to the text.
#[derive(Debug, Default)]
pub struct UnitText(String);

impl UnitText {
    fn new() -> Self {
        UnitText(String::with_capacity(512))
    }
    fn section(&mut self, name: &str) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        self.0.push('[');
        self.0.push_str(name);
        self.0.push_str("]\n");
        self
    }
    /// A free-form value (`Description=`, `What=`, `Options=` …): `%` doubled, no line breaks.
    fn value(&mut self, key: &str, value: &str) -> &mut Self {
        self.line(key, &escape::value(value))
    }
    /// A list of unit names, written literally: they come from the escaping functions.
    fn units<S: AsRef<str>>(&mut self, key: &str, units: &[S]) -> &mut Self {
        for u in units {
            self.line(key, u.as_ref());
        }
        self
    }
    /// One path of a path-list setting (`RequiresMountsFor=`).
    fn path(&mut self, key: &str, path: &str) -> &mut Self {
        self.line(key, &escape::path_list_item(path))
    }
    fn line(&mut self, key: &str, value: &str) -> &mut Self {
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(value);
        self.0.push('\n');
        self
    }
    /// The `[Unit]` section's head that every generated unit has.
    fn head(&mut self, description: &str, docs: &[&str], source: &str) -> &mut Self {
        self.section("Unit").value("Description", description);
        for d in docs {
            self.line("Documentation", d);
        }
        self.value("SourcePath", source)
    }
    fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

/// OpenZFS's own imports and mounts, masked: what the generator writes on every live boot,
/// in the initrd and in the live root (see [`units::OPENZFS_AUTOMATIC`]).
pub fn openzfs_masks() -> Vec<Output> {
    units::OPENZFS_AUTOMATIC
        .iter()
        .map(|unit| Output::Mask {
            dir: OutDir::Normal,
            unit,
        })
        .collect()
}

/// Render the plan.
pub fn render(plan: &Plan) -> Vec<Output> {
    let mut out = openzfs_masks();
    let image_unit = units::image_mount();
    render_medium(plan, &image_unit, &mut out);
    render_overlay_tmpfs(plan, &mut out);
    render_root(plan, &image_unit, &mut out);
    if plan.persistence {
        render_volumes(plan, &mut out);
        for container in &plan.luks {
            render_cryptsetup(plan, container, &mut out);
        }
        render_reload(plan, &image_unit, &mut out);
        for (index, entry) in plan.entries.iter().enumerate() {
            render_entry(plan, index, entry, &image_unit, &mut out);
        }
        render_initrd_fs_wants(plan, &mut out);
    }
    out
}

fn render_medium(plan: &Plan, image_unit: &str, out: &mut Vec<Output>) {
    let mut image = UnitText::new();
    image
        .head(
            &format!("Live image {}", IMAGE_NAME),
            &[DOC_GENERATOR],
            PROC_CMDLINE,
        )
        .line("DefaultDependencies", "no")
        .units("Conflicts", &[UMOUNT_TARGET])
        .units("Before", &[UMOUNT_TARGET]);
    match &plan.cmdline.medium {
        MediumSpec::Device(device) => {
            let Ok(device_unit) = units::device(device) else {
                return;
            };
            if !plan.medium_by_service() {
                render_medium_mount(device, out);
            }
            let timeout = plan
                .cmdline
                .medium_timeout
                .unwrap_or(MEDIUM_TIMEOUT_DEFAULT);
            let mut drop_in = UnitText::new();
            drop_in
                .section("Unit")
                .line("JobRunningTimeoutSec", &format!("{timeout}s"));
            out.push(Output::DropIn {
                dir: OutDir::Normal,
                unit: device_unit.clone(),
                name: DROPIN,
                body: drop_in.finish(),
            });
            let mut root_device = UnitText::new();
            root_device
                .section("Unit")
                .units("Requires", &[&device_unit])
                .units("After", &[&device_unit]);
            out.push(Output::DropIn {
                dir: OutDir::Normal,
                unit: units::INITRD_ROOT_DEVICE_TARGET.to_owned(),
                name: DROPIN,
                body: root_device.finish(),
            });
        }
        MediumSpec::Scan => {}
    }
    if plan.medium_by_service() {
        // zlive-find-medium.service mounts the medium itself (the ISO file's device too,
        // and with toram releases both once the image is in RAM).
        image
            .units("Requires", &[units::FIND_MEDIUM])
            .units("After", &[units::FIND_MEDIUM]);
    }
    image
        .section("Mount")
        .value("What", &plan.image_source())
        .value("Where", IMAGE_DIR)
        .value("Type", "squashfs")
        .value("Options", "ro,noatime");
    out.push(Output::Unit {
        dir: OutDir::Normal,
        name: image_unit.to_owned(),
        body: image.finish(),
    });
}

/// The unit after which the image's file can be read: the medium's mount, or the service that
/// finds the medium (and copies the image to RAM with `toram`).
fn image_file_provider(plan: &Plan) -> String {
    match plan.medium_by_service() {
        true => units::FIND_MEDIUM.to_owned(),
        false => units::medium_mount(),
    }
}

/// run-live-medium.mount: a named device mounted read-only as it is.
fn render_medium_mount(device: &str, out: &mut Vec<Output>) {
    let mut medium = UnitText::new();
    medium
        .head(
            &format!("Live medium {device}"),
            &[DOC_GENERATOR],
            PROC_CMDLINE,
        )
        .line("DefaultDependencies", "no")
        .units("Conflicts", &[UMOUNT_TARGET])
        .units("Before", &[UMOUNT_TARGET])
        .section("Mount")
        .value("What", device)
        .value("Where", MEDIUM_DIR)
        .value("Options", "ro,noatime");
    out.push(Output::Unit {
        dir: OutDir::Normal,
        name: units::medium_mount(),
        body: medium.finish(),
    });
}

fn render_overlay_tmpfs(plan: &Plan, out: &mut Vec<Output>) {
    let mut t = UnitText::new();
    t.head("Live root changes in RAM", &[DOC_GENERATOR], PROC_CMDLINE)
        .line("DefaultDependencies", "no")
        .units("Conflicts", &[UMOUNT_TARGET])
        .units("Before", &[UMOUNT_TARGET])
        .section("Mount")
        .value("What", "tmpfs")
        .value("Where", OVERLAY_DIR)
        .value("Type", "tmpfs")
        .value(
            "Options",
            &format!("mode=0755,size={},noatime", plan.cmdline.overlay_size),
        );
    out.push(Output::Unit {
        dir: OutDir::Normal,
        name: units::overlay_mount(),
        body: t.finish(),
    });
}

/// The volume of the `/` entry, if there is one.
fn root_volume(plan: &Plan) -> Option<(&PlannedEntry, &Volume)> {
    let entry = &plan.entries[plan.root.entry?];
    Some((entry, &plan.volumes[entry.volume]))
}

fn render_root(plan: &Plan, image_unit: &str, out: &mut Vec<Output>) {
    let image_dir = IMAGE_DIR;
    // A `/ union` whose preparation failed in this boot is a root in RAM like any other.
    let root = root_volume(plan).filter(|_| plan.root.fallback.is_none());
    let (description, source) = match root {
        Some((_, v)) if plan.cmdline.read_only => (
            format!(
                "Live root from {} with persistent / from {} (read-only)",
                IMAGE_NAME,
                v.describe()
            ),
            v.conf_path(),
        ),
        Some((_, v)) => (
            format!("Persistent / (union) from {}", v.describe()),
            v.conf_path(),
        ),
        None => (
            format!("Live root from {} with changes in RAM", IMAGE_NAME),
            PROC_CMDLINE.to_owned(),
        ),
    };
    let upper = &plan.root.upper_base;
    let lower = match &plan.root.persistent_lower {
        Some(extra) => format!("{extra}:{image_dir}"),
        None => image_dir.to_owned(),
    };
    let prepare = units::prepare(SYSROOT);
    let mut t = UnitText::new();
    t.head(&description, &[DOC_GENERATOR], &source)
        .units("Before", &[INITRD_ROOT_FS_TARGET])
        .units("Requires", &[&prepare])
        .units("After", &[&prepare, image_unit]);
    t.path("RequiresMountsFor", image_dir)
        .path("RequiresMountsFor", upper);
    if let Some((_, v)) = root {
        if plan.cmdline.read_only {
            t.path("RequiresMountsFor", &v.mount_point);
        }
    }
    t.section("Mount")
        .value("What", "overlay")
        .value("Where", SYSROOT)
        .value("Type", "overlay")
        .value("Options", &plan::overlay_options(&lower, upper));
    out.push(Output::Unit {
        dir: OutDir::Early,
        name: SYSROOT_MOUNT.to_owned(),
        body: t.finish(),
    });
    out.push(Output::RequiresLink {
        dir: OutDir::Early,
        target: INITRD_ROOT_FS_TARGET,
        unit: SYSROOT_MOUNT.to_owned(),
    });
    render_root_prepare(plan, prepare, image_unit, out);
}

/// The root overlay's upper and work directories are made by the prepare helper, which also
/// reads the image root's owner and mode.
fn render_root_prepare(plan: &Plan, prepare: String, image_unit: &str, out: &mut Vec<Output>) {
    let (image_dir, upper) = (IMAGE_DIR, &plan.root.upper_base);
    let mut d = UnitText::new();
    d.section("Unit")
        .value(
            "Description",
            &format!("Prepare the live root's changes in {upper}"),
        )
        .units("After", &[image_unit]);
    if plan.persistence {
        // Not after the reload: the preparation reads persistence.conf itself once the
        // volumes are mounted, and reloads only when the root is on a volume (`/ union`).
        // A root in RAM does not wait for the second pass. Ordering only: a dependency
        // would start the persistence chain again at the switch-root isolate.
        let mounts: Vec<&str> = plan.volumes.iter().map(|v| v.mount_unit.as_str()).collect();
        d.units("After", &mounts);
    }
    d.path("RequiresMountsFor", image_dir)
        .path("RequiresMountsFor", upper);
    out.push(Output::DropIn {
        dir: OutDir::Normal,
        unit: prepare,
        name: DROPIN,
        body: d.finish(),
    });
}

fn render_volumes(plan: &Plan, out: &mut Vec<Output>) {
    for volume in &plan.volumes {
        render_volume_mount(plan, volume, out);
        render_volume_waits(plan, volume, out);
    }
}

/// A volume's mount unit: after its wait and, for ext4 read-write, its fsck.
fn render_volume_mount(plan: &Plan, volume: &Volume, out: &mut Vec<Output>) {
    let wait = volume.wait_unit();
    let mut t = UnitText::new();
    t.head(
        &format!("Persistence volume {}", volume.describe()),
        &[DOC_GENERATOR],
        PROC_CMDLINE,
    )
    .line("DefaultDependencies", "no")
    .units("Conflicts", &[UMOUNT_TARGET])
    .units("Before", &[UMOUNT_TARGET])
    .units("After", &[units::LOCAL_FS_PRE_TARGET])
    .units("Requires", &[&wait])
    .units("After", &[&wait]);
    if let Some(fsck) = volume.fsck_unit().filter(|_| !plan.cmdline.read_only) {
        t.units("Requires", &[&fsck]).units("After", &[&fsck]);
    }
    // A volume in a LUKS container: mounting it opens the container.
    if let Some(c) = plan
        .luks
        .iter()
        .find(|c| Some(c.mapped.as_str()) == volume.device())
    {
        t.units("Wants", &[&c.unit]).units("After", &[&c.unit]);
    }
    let (fs_type, options) = match (&volume.storage, plan.cmdline.read_only) {
        (Storage::Ext4 { .. }, false) => ("ext4", "noatime,nosuid,nodev"),
        (Storage::Ext4 { .. }, true) => ("ext4", "ro,noload,noatime,nosuid,nodev"),
        // zfsutil: a dataset whose mountpoint is not legacy is mounted where zlive says.
        (Storage::Dataset(_), false) => ("zfs", DATASET_OPTIONS),
        (Storage::Dataset(_), true) => ("zfs", DATASET_OPTIONS_READ_ONLY),
    };
    t.section("Mount")
        .value("What", volume.what())
        .value("Where", &volume.mount_point)
        .value("Type", fs_type)
        .value("Options", options);
    out.push(Output::Unit {
        dir: OutDir::Normal,
        name: volume.mount_unit.clone(),
        body: t.finish(),
    });
}

/// A dataset as the overlays' upper layer: `zfsutil` (mounted where zlive says, whatever its
/// `mountpoint`), `noatime` (copy-ups need no access times), and `nosuid,nodev` as for ext4
/// volumes (the entries bring the image's set-uid programs; the volume brings none).
const DATASET_OPTIONS: &str = "zfsutil,noatime,nosuid,nodev";
const DATASET_OPTIONS_READ_ONLY: &str = "zfsutil,ro,noatime,nosuid,nodev";

/// A volume's wait after its imports, its fsck after its wait, and its device's own timeout.
fn render_volume_waits(plan: &Plan, volume: &Volume, out: &mut Vec<Output>) {
    let wait = volume.wait_unit();
    let mut w = UnitText::new();
    w.section("Unit")
        .value(
            "Description",
            &format!("Wait for persistence volume {}", volume.describe()),
        )
        // One import: without it the volume cannot appear, so fail at once. Several
        // pools: any of them may hold the volume, so wait once they have all tried.
        .units(
            if volume.imports.len() == 1 {
                "Requires"
            } else {
                "Wants"
            },
            &volume.imports,
        )
        .units("After", &volume.imports);
    // The image's file comes first: the volume's check of which image it last ran under
    // reads its superblock, before anything opens the volume (not when read-only: nothing is
    // recorded). The file is there once the medium is; its loop mount goes on beside the
    // volume's step. persistence-create, which makes the volume on the medium's disk, keeps
    // the whole image before it, as its boot tests run it.
    let create = plan.cmdline.create.is_some() && matches!(volume.kind, VolumeKind::Label(_));
    if create {
        w.units("After", &[units::image_mount()]);
    } else if !plan.cmdline.read_only {
        w.units("After", &[image_file_provider(plan)]);
    }
    out.push(Output::DropIn {
        dir: OutDir::Normal,
        unit: wait.clone(),
        name: DROPIN,
        body: w.finish(),
    });

    // fsck runs on the device the wait found, not on one an import shows for a moment
    // (a scan imports pools read-only first).
    if let Some(fsck) = volume.fsck_unit().filter(|_| !plan.cmdline.read_only) {
        let mut f = UnitText::new();
        f.section("Unit").units("After", &[&wait]);
        out.push(Output::DropIn {
            dir: OutDir::Normal,
            unit: fsck,
            name: DROPIN,
            body: f.finish(),
        });
    }

    if let Some(device_unit) = volume.device_unit() {
        let mut dev = UnitText::new();
        dev.section("Unit")
            .line("JobRunningTimeoutSec", VOLUME_DEVICE_TIMEOUT);
        out.push(Output::DropIn {
            dir: OutDir::Normal,
            unit: device_unit.to_owned(),
            name: DROPIN,
            body: dev.finish(),
        });
    }
}

/// systemd-cryptsetup@NAME.service for a LUKS container, as systemd-cryptsetup-generator
/// writes it for a crypttab line: the passphrase prompt, its retries and the keyring cache are
/// systemd's. It is not part of cryptsetup.target: the container appears only after zlive's
/// import, which is ordered after that target.
fn render_cryptsetup(plan: &Plan, c: &LuksContainer, out: &mut Vec<Output>) {
    let options = if plan.cmdline.read_only {
        "read-only"
    } else {
        ""
    };
    let mut t = UnitText::new();
    t.head(
        &format!("Open LUKS persistence volume {}", c.dataset),
        &[DOC_GENERATOR, "man:systemd-cryptsetup@.service(8)"],
        PROC_CMDLINE,
    )
    .line("DefaultDependencies", "no")
    .line("IgnoreOnIsolate", "true")
    .units(
        "After",
        &["cryptsetup-pre.target", "systemd-udevd-kernel.socket"],
    )
    .units("BindsTo", &[&c.source_unit])
    .units("After", &[&c.source_unit])
    .units("Conflicts", &[UMOUNT_TARGET])
    .units("Before", &[UMOUNT_TARGET])
    .section("Service")
    .line("Type", "oneshot")
    .line("RemainAfterExit", "yes")
    .line("TimeoutSec", "infinity")
    .line("KeyringMode", "shared")
    .line("OOMScoreAdjust", "500")
    .value(
        "ExecStart",
        &format!(
            "{SYSTEMD_CRYPTSETUP} attach {} {} none {options}",
            c.name, c.source
        ),
    )
    .value(
        "ExecStop",
        &format!("{SYSTEMD_CRYPTSETUP} detach {}", c.name),
    );
    out.push(Output::Unit {
        dir: OutDir::Normal,
        name: c.unit.clone(),
        body: t.finish(),
    });
}

fn render_reload(plan: &Plan, image_unit: &str, out: &mut Vec<Output>) {
    let mounts: Vec<&str> = plan.volumes.iter().map(|v| v.mount_unit.as_str()).collect();
    let mut t = UnitText::new();
    t.section("Unit")
        .units("Wants", &mounts)
        .units("After", &mounts)
        .units("After", &[image_unit]);
    for v in &plan.volumes {
        t.value("ConditionPathExists", &format!("|{}", v.conf_path()));
    }
    out.push(Output::DropIn {
        dir: OutDir::Normal,
        unit: RELOAD.to_owned(),
        name: DROPIN,
        body: t.finish(),
    });
    // Wanted by initrd.target, which the isolate at switch-root does not start again.
    let mut w = UnitText::new();
    w.section("Unit").units("Wants", &[RELOAD]);
    out.push(Output::DropIn {
        dir: OutDir::Normal,
        unit: units::INITRD_TARGET.to_owned(),
        name: DROPIN,
        body: w.finish(),
    });
}

fn entry_description(plan: &Plan, e: &PlannedEntry) -> String {
    let volume = &plan.volumes[e.volume];
    let ro = if plan.cmdline.read_only {
        ", read-only"
    } else {
        ""
    };
    format!(
        "Persistent {} ({}{ro}) from {}",
        e.entry.dir,
        e.entry.mode,
        volume.describe()
    )
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => path,
    }
}

fn render_entry(
    plan: &Plan,
    index: usize,
    e: &PlannedEntry,
    image_unit: &str,
    out: &mut Vec<Output>,
) {
    if e.entry.dir == "/" {
        return; // The root overlay itself, rendered by render_root.
    }
    if e.entry.mode == Mode::Link {
        render_link_entry(plan, e, out);
        return;
    }
    let volume = &plan.volumes[e.volume];
    let description = entry_description(plan, e);
    let conf = volume.conf_path();
    let prepare = e.prepare_unit.clone().unwrap_or_default();
    let mut t = UnitText::new();
    t.head(&description, &[DOC_CONF, DOC_GENERATOR], &conf)
        .units("Requires", &[&prepare])
        .units("After", &[&prepare]);
    let (what, fstype, options) = entry_mount(plan, index, e, image_unit, &mut t);
    t.section("Mount")
        .value("What", &what)
        .value("Where", &e.dest)
        .value("Type", fstype)
        .value("Options", &options);
    out.push(Output::Unit {
        dir: OutDir::Normal,
        name: e.unit.clone(),
        body: t.finish(),
    });

    let mut d = UnitText::new();
    d.section("Unit")
        .value(
            "Description",
            &format!("Prepare {}", lowercase_first(&description)),
        )
        .line("Documentation", DOC_CONF)
        .value("SourcePath", &conf)
        .units("After", &[SYSROOT_MOUNT])
        .path("RequiresMountsFor", &volume.mount_point)
        .path("RequiresMountsFor", parent_of(&e.dest));
    if plan.cmdline.read_only {
        d.path("RequiresMountsFor", OVERLAY_DIR);
    }
    out.push(Output::DropIn {
        dir: OutDir::Normal,
        unit: prepare,
        name: DROPIN,
        body: d.finish(),
    });
}

/// What an entry's mount unit mounts (`What=`, `Type=`, `Options=`), adding the ordering the
/// mount needs to `t`.
fn entry_mount(
    plan: &Plan,
    index: usize,
    e: &PlannedEntry,
    image_unit: &str,
    t: &mut UnitText,
) -> (String, &'static str, String) {
    let volume = &plan.volumes[e.volume];
    match plan::entry_overlay_options(plan.cmdline.read_only, index, &e.entry, &e.src) {
        Some(options) => {
            t.units("After", &[image_unit])
                .path("RequiresMountsFor", IMAGE_DIR)
                .path("RequiresMountsFor", &volume.mount_point);
            if plan.cmdline.read_only {
                t.path("RequiresMountsFor", OVERLAY_DIR);
            }
            ("overlay".to_owned(), "overlay", options)
        }
        // The volume is mounted nosuid,nodev and a bind mount keeps that (plan.rs warns
        // about entries for trees with set-uid programs); said here too, for the reader.
        None => (e.src.clone(), "none", "bind,nosuid,nodev".to_owned()),
    }
}

/// A `link` entry: a drop-in for its static service, ordered after every mount and after the
/// link entries whose DEST contains its own (both would create the same directories).
fn render_link_entry(plan: &Plan, e: &PlannedEntry, out: &mut Vec<Output>) {
    let volume = &plan.volumes[e.volume];
    let mounts: Vec<&str> = plan
        .entries
        .iter()
        .filter(|x| x.entry.mode != Mode::Link)
        .map(|x| x.unit.as_str())
        .collect();
    let outer_links: Vec<&str> = plan
        .entries
        .iter()
        .filter(|x| x.entry.mode == Mode::Link && x.dest != e.dest)
        .filter(|x| crate::conf::is_within(&e.dest, &x.dest))
        .map(|x| x.unit.as_str())
        .collect();
    let mut d = UnitText::new();
    d.section("Unit")
        .value("Description", &entry_description(plan, e))
        .line("Documentation", DOC_CONF)
        .value("SourcePath", &volume.conf_path())
        .units("After", &mounts)
        .units("After", &outer_links)
        .path("RequiresMountsFor", &volume.mount_point)
        .path("RequiresMountsFor", parent_of(&e.dest));
    out.push(Output::DropIn {
        dir: OutDir::Normal,
        unit: e.unit.clone(),
        name: DROPIN,
        body: d.finish(),
    });
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// initrd-fs.target wants every entry but `/` (which sysroot.mount is) through one drop-in:
/// one file instead of a `.wants/` link per entry, and the only form that works for the link
/// services, which are template instances (a link would have to point outside the
/// generator's directories).
fn render_initrd_fs_wants(plan: &Plan, out: &mut Vec<Output>) {
    let entries: Vec<&str> = plan
        .entries
        .iter()
        .filter(|e| e.entry.dir != "/")
        .map(|e| e.unit.as_str())
        .collect();
    if entries.is_empty() {
        return;
    }
    let mut t = UnitText::new();
    t.section("Unit")
        .units("Wants", &entries)
        .units("After", &entries);
    out.push(Output::DropIn {
        dir: OutDir::Normal,
        unit: INITRD_FS_TARGET.to_owned(),
        name: DROPIN,
        body: t.finish(),
    });
}
