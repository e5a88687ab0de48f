//! `zlive wait-volume NAME`: a persistence volume's life in the initrd, read top to bottom in
//! [`wait_volume`], up to the moment its fsck and mount take it over. Each step is one method
//! of [`Life`], which holds the plan (updated, not made again, when LUKS containers appear or
//! a label turns out to be a dataset's) and the one connection to PID 1 the steps share.

use crate::create::first_boot::Made;
use crate::exec;
use crate::systemd::pid1::Pid1;
use crate::zfs::snapshots::Target;
use crate::zfs::{datasets, keys, luks, migrate, snapshots, zvols};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use zlive::names::Dataset;
use zlive::plan::{Import, Plan, Volume, VolumeKind};
use zlive::tool_output::ZvolRow;

/// How long a volume's device may take to appear after the imports.
const VOLUME_WAIT: Duration = Duration::from_secs(15);

/// The volume's life, step by step.
pub fn wait_volume(plan: &Plan, name: &str) -> Result<()> {
    let mut life = Life::begin(plan, name)?;
    // 1. Unlock: the keys of locked encryption roots on pools the command line names (a scan
    //    asked for its own pools' keys, bounded), then LUKS containers.
    life.unlock()?;
    life.open_containers()?;
    // 2. persistence-snapshot=: the snapshot's device instead of the volume.
    life.show_snapshot()?;
    // 3. Find it, at once from what the pools hold (a label on a dataset makes the volume
    //    that dataset), then an ext4 volume's device, bounded; or make it (persistence-create);
    //    or withdraw it.
    if !life.appears()? {
        let made = life.created();
        if !matches!(made, Ok(true)) {
            life.absent()?;
            return made.map(|_| ());
        }
    }
    // 4. Check it: the kind persistence-encryption= accepts, one volume with the label, and a
    //    dataset's ZFS fit for an overlay's upper layer.
    if !life.checked()? {
        return Ok(());
    }
    // 5. Snapshot it (or roll it back, or reset it) before anything writes to it; with
    //    persistence-migrate an ext4 zvol then becomes a dataset.
    life.snapshot()?;
    life.migrate()?;
    // 6. Hand it to its fsck (ext4) and mount.
    life.hand_over()
}

/// One volume on its way to its mount.
struct Life {
    plan: Plan,
    index: usize,
    /// The zvols that may hold it, locked or in a container.
    zvols: Vec<ZvolRow>,
    /// When the waiting for it began.
    started: Instant,
    pid1: Option<Pid1>,
}

impl Life {
    fn begin(plan: &Plan, name: &str) -> Result<Life> {
        let index = plan
            .volumes
            .iter()
            .position(|v| v.name == name)
            .with_context(|| {
                format!("no persistence volume named {name} on the kernel command line")
            })?;
        let zvols = candidate_zvols(&plan.volumes[index]);
        Ok(Life {
            plan: plan.clone(),
            index,
            zvols,
            started: Instant::now(),
            pid1: None,
        })
    }

    fn volume(&self) -> &Volume {
        &self.plan.volumes[self.index]
    }

    /// PID 1, connected the first time a step needs it.
    fn pid1(&mut self) -> Result<&mut Pid1> {
        if self.pid1.is_none() {
            self.pid1 = Some(Pid1::connect()?);
        }
        Ok(self.pid1.as_mut().expect("connected above"))
    }

    fn unlock(&mut self) -> Result<()> {
        let named = named_pools(&self.plan);
        let mut locked: Vec<String> = keys::locked_roots(&self.zvols)
            .into_iter()
            .filter(|root| named.iter().any(|p| root.split('/').next() == Some(p)))
            .collect();
        if let Some(root) = self.volume().dataset().and_then(keys::locked_root_of) {
            locked.push(root);
        }
        if !locked.is_empty() {
            keys::unlock(self.pid1()?, &locked)?;
        }
        Ok(())
    }

    /// LUKS containers among the zvols: opened, and the plan told of them (a volume named
    /// by its zvol is then mounted from the container's mapped device).
    fn open_containers(&mut self) -> Result<()> {
        if !self.plan.cmdline.encryption.luks || self.zvols.is_empty() {
            return Ok(());
        }
        let (volume, zvols) = (self.volume().clone(), self.zvols.clone());
        let found = luks::open(self.pid1()?, &volume, &zvols)?;
        self.plan.add_luks(&found);
        self.started = Instant::now();
        Ok(())
    }

    fn show_snapshot(&mut self) -> Result<()> {
        let device = self.volume().device().map(str::to_owned);
        let Some(view) = self
            .plan
            .cmdline
            .snapshots
            .view
            .as_ref()
            .filter(|v| Some(v.device()) == device)
        else {
            return Ok(());
        };
        if let Err(e) = snapshots::show(view) {
            error!(ZLIVE_VOLUME = self.volume().describe().as_str(), "persistence-snapshot={view}: {e:#}. Booting without persistence; the volume is untouched.");
            bail!("snapshot {view} not found");
        }
        Ok(())
    }

    /// Whether the volume is there: a dataset at once (its key loaded); a label carried by a
    /// dataset makes the volume that dataset; an ext4 volume decided at once from what the
    /// imported pools hold (no waiting for a device no pool has), then its device waited for
    /// while udev makes its link.
    fn appears(&mut self) -> Result<bool> {
        if let VolumeKind::Label(label) = self.volume().kind.clone() {
            if let Some(dataset) = labelled_datasets(&label).into_iter().next() {
                self.become_dataset(&label, &dataset)?;
            }
        }
        if let Some(dataset) = self.volume().dataset() {
            return Ok(datasets::state(dataset) == Some((true, true)));
        }
        if !held(self.volume()) {
            return Ok(false);
        }
        let device = self.volume().what().to_owned();
        wait_until(VOLUME_WAIT.saturating_sub(self.started.elapsed()), || {
            Path::new(&device).exists()
        });
        Ok(Path::new(&device).exists())
    }

    /// The label is a dataset's: record it where the generator looks and have PID 1 reload,
    /// so that the volume's mount unit mounts the dataset (a unit `zlive status` shows, like
    /// every other mount), and plan on with it. Its key is asked for if it is locked: the
    /// label says it is the user's persistence.
    fn become_dataset(&mut self, label: &str, dataset: &Dataset) -> Result<()> {
        use std::io::Write;
        let path = Path::new(zlive::paths::DATASETS_FOUND);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut record = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("Failed to open {}", path.display()))?;
        writeln!(record, "{label} {dataset}")?;
        info!(
            ZLIVE_VOLUME = self.volume().describe().as_str(),
            "the label {label} is on dataset {dataset}: it is mounted as a dataset; writing its mount unit"
        );
        // The ext4 volume's fsck and device, queued in the first pass, wait for nothing now.
        let before = self.volume().clone();
        let stale: Vec<String> = before
            .fsck_unit()
            .into_iter()
            .chain(before.device_unit().map(str::to_owned))
            .collect();
        let pid1 = self.pid1()?;
        pid1.reload()?;
        let stale: Vec<&str> = stale.iter().map(String::as_str).collect();
        pid1.cancel_start_jobs(&stale)?;
        self.plan.add_dataset(label, dataset.as_str());
        if let Some(root) = keys::locked_root_of(dataset) {
            keys::unlock(self.pid1()?, &[root])?;
        }
        Ok(())
    }

    /// `persistence-create`: the volume, searched by the first label, made in the free space
    /// of the medium's disk. Whether it is there now; an error when it was asked for and
    /// could not be made (said on the console; the boot goes on without it).
    fn created(&mut self) -> Result<bool> {
        let (Some(create), VolumeKind::Label(label)) =
            (self.plan.cmdline.create, self.volume().kind.clone())
        else {
            return Ok(false);
        };
        if self.plan.cmdline.labels.first() != Some(&label) {
            return Ok(false);
        }
        if let Some(why) = crate::zfs::import::zfs_unavailable() {
            warn!(
                ZLIVE_VOLUME = label.as_str(),
                "persistence-create: nothing was made: {why}"
            );
            return Ok(false);
        }
        let made = match crate::create::first_boot::on_first_boot(create, &label) {
            Ok(made) => made,
            Err(e) => {
                let text = format!("persistence-create: no persistence was made: {e:#}. Booting without persistence.");
                error!(ZLIVE_VOLUME = label.as_str(), "{text}");
                exec::console(&format!("zlive: {text}\n"));
                bail!("persistence-create made nothing");
            }
        };
        info!(
            ZLIVE_VOLUME = label.as_str(),
            "persistence-create made the volume {label}"
        );
        match made {
            Made::Dataset(dataset) => {
                self.become_dataset(&label, &dataset)?;
                Ok(true)
            }
            Made::Zvol => {
                let device = self.volume().what().to_owned();
                wait_until(VOLUME_WAIT, || Path::new(&device).exists());
                Ok(Path::new(&device).exists())
            }
        }
    }

    /// Not there: a failure when it was named, else withdrawn quietly.
    fn absent(&mut self) -> Result<()> {
        not_found(&self.plan, self.volume(), self.started)?;
        let (volume, read_only) = (self.volume().clone(), self.plan.cmdline.read_only);
        stand_down(self.pid1()?, &volume, read_only)
    }

    /// Whether the volume found may be used: a label on a volume of a kind
    /// persistence-encryption= refuses is withdrawn (false); one several volumes carry is a
    /// failure, and so is a dataset on a ZFS that cannot carry an overlay.
    fn checked(&mut self) -> Result<bool> {
        let volume = self.volume().clone();
        let name = volume.describe();
        info!(
            ZLIVE_VOLUME = name.as_str(),
            OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
            "persistence volume {name} is {} ({:.1} s after the import)",
            volume.what(),
            self.started.elapsed().as_secs_f64()
        );
        if let VolumeKind::Label(label) = &volume.kind {
            let mapped = volume.device().is_some_and(is_mapped);
            if !self.plan.cmdline.encryption.plain && !mapped {
                info!(
                    ZLIVE_VOLUME = name.as_str(),
                    "persistence volume {name}: the volume labelled '{label}' is not in a LUKS container, and persistence-encryption= accepts only LUKS volumes; not using it"
                );
                let read_only = self.plan.cmdline.read_only;
                stand_down(self.pid1()?, &volume, read_only)?;
                return Ok(false);
            }
            let carriers = labelled(label)?;
            if carriers.len() > 1 {
                error!(
                    ZLIVE_VOLUME = name.as_str(),
                    OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
                    "persistence volume {name}: {} volumes carry the label '{label}': {}. A clone or a received backup has the same label, and zlive cannot tell which one holds your data; it uses neither. Name the volume with persistence-zvol=POOL/VOLUME or persistence-dataset=POOL/DATASET, or relabel the copy (e2label DEVICE NEWLABEL, or zfs inherit org.zlive:label DATASET).",
                    carriers.len(),
                    carriers.join(", ")
                );
                bail!("the label {label} is on several volumes");
            }
        }
        if let Some(dataset) = volume.dataset() {
            if let Err(e) = self.check_dataset(dataset) {
                let text = format!("persistence volume {name}: dataset {dataset} is not used: {e:#}. Booting without it; nothing was written to it.");
                error!(
                    ZLIVE_VOLUME = name.as_str(),
                    OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
                    "{text}"
                );
                // On the console too: with `quiet` systemd shows only that the unit failed.
                exec::console(&format!("zlive: {text}\n"));
                bail!("dataset {dataset} refused");
            }
        }
        Ok(true)
    }

    /// A dataset as an overlay's upper layer: OpenZFS new enough, and whiteouts that work
    /// (proven once per module version; a read-only boot writes none, its upper layer is in
    /// RAM).
    fn check_dataset(&self, dataset: &Dataset) -> Result<()> {
        let version = datasets::check_module()?;
        for warning in datasets::check_properties(dataset)? {
            warn!(ZLIVE_VOLUME = dataset.as_str(), "{warning}");
        }
        if !self.plan.cmdline.read_only && datasets::check_whiteouts(dataset, &version)? {
            info!(
                ZLIVE_VOLUME = dataset.as_str(),
                "dataset {dataset} makes the whiteouts overlayfs needs (checked once for OpenZFS {version})"
            );
        }
        Ok(())
    }

    /// The boot's snapshot, or a rollback or reset, before the volume is opened. A LUKS
    /// container is closed around a rollback (the zvol under it is swapped) and opened again
    /// with the passphrase systemd-cryptsetup keeps in the kernel keyring.
    fn snapshot(&mut self) -> Result<()> {
        if self.plan.cmdline.read_only {
            return Ok(());
        }
        let volume = self.volume().clone();
        if let Some(dataset) = volume.dataset() {
            snapshots::before_open(&self.plan, &volume.describe(), Target::Dataset(dataset));
            return Ok(());
        }
        let device = volume.what().to_owned();
        let container = self
            .plan
            .luks
            .iter()
            .find(|c| {
                is_mapped(&device)
                    && std::fs::canonicalize(&c.mapped).ok() == std::fs::canonicalize(&device).ok()
            })
            .cloned();
        let closing = container
            .as_ref()
            .filter(|_| self.plan.cmdline.snapshots.rollback.is_some());
        if let Some(c) = closing {
            self.pid1()?.queue_stop(&c.unit)?;
            wait_until(VOLUME_WAIT, || !Path::new(&c.mapped).exists());
        }
        // The device a LUKS volume is found at is known before closing; the snapshots work on
        // its container either way.
        let on = container
            .as_ref()
            .map_or(device.clone(), |c| c.mapped.clone());
        let swapped = snapshots::before_open(&self.plan, &volume.describe(), Target::Device(&on));
        if let Some(c) = closing {
            self.pid1()?.start_and_wait(&c.unit)?;
        }
        if swapped {
            wait_until(VOLUME_WAIT, || Path::new(&device).exists());
        }
        Ok(())
    }

    /// `persistence-migrate`: an ext4 volume on a zvol, found by its label, copied to a
    /// dataset that takes its label (see `migrate.rs`), and the boot goes on with the dataset.
    /// When anything fails the boot goes on with the zvol, as it was.
    fn migrate(&mut self) -> Result<()> {
        let volume = self.volume().clone();
        let (true, VolumeKind::Label(label), Some(device)) = (
            self.plan.cmdline.snapshots.migrate,
            &volume.kind,
            volume.device(),
        ) else {
            return Ok(());
        };
        let name = volume.describe();
        let migrated = datasets::check_module()
            .and_then(|_| match is_mapped(device) {
                true => bail!("a LUKS volume is not migrated (ZFS encrypts a dataset itself)"),
                false => Ok(()),
            })
            .and_then(|()| {
                snapshots::dataset_of(&self.plan, device)
                    .context("the volume is not on a zvol zlive can find")
            })
            .and_then(|zvol| migrate::migrate(&zvol, device, label));
        match migrated {
            Ok(dataset) => {
                info!(
                    ZLIVE_VOLUME = name.as_str(),
                    "persistence-migrate: {name} is now dataset {dataset}; the zvol it was on is kept, relabelled, until you destroy it"
                );
                self.become_dataset(label, &dataset)?;
                self.check_dataset(&dataset)
            }
            Err(e) => {
                warn!(
                    ZLIVE_VOLUME = name.as_str(),
                    "persistence-migrate: {name} stays on its zvol: {e:#}"
                );
                Ok(())
            }
        }
    }

    /// Record what was checked, queue the mount again (the device may have gone and come
    /// back while the pools were imported, or a rollback swapped the zvol: its fsck and mount
    /// start from the device as it is now), and warn when a read-only boot will show an ext4
    /// volume as it was before its journal.
    fn hand_over(&mut self) -> Result<()> {
        let volume = self.volume().clone();
        if matches!(volume.kind, VolumeKind::Label(_)) {
            record_checked(&volume)?;
        }
        self.pid1()?.queue_start(&volume.mount_unit)?;
        let replay = volume
            .device()
            .is_some_and(|d| ext4_needs_recovery(d).unwrap_or(false));
        if self.plan.cmdline.read_only && replay {
            let name = volume.describe();
            warn!(
                ZLIVE_VOLUME = name.as_str(),
                OBJECT_SYSTEMD_UNIT = volume.mount_unit.as_str(),
                "persistence volume {name} was not cleanly unmounted (a power cut?), and persistence-read-only mounts it without replaying its journal: this boot shows it as it was before its last changes. Boot once without persistence-read-only to recover them."
            );
        }
        Ok(())
    }
}

/// Poll `done` until it holds or `limit` has passed.
fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() && started.elapsed() < limit {
        sleep(Duration::from_millis(50));
    }
}

/// Whether the imported pools hold the volume: the zvol named exists, or a zvol (or an opened
/// LUKS container of zlive's) has a file system with the label.
fn held(volume: &Volume) -> bool {
    match &volume.kind {
        VolumeKind::Zvol(d) | VolumeKind::Dataset(d) => {
            exec::run(Command::new("zfs").args(["list", "-H", "-o", "name", d.as_str()]))
                .is_ok_and(|(ok, _)| ok)
        }
        VolumeKind::Label(label) => {
            let present = zvols::wait_for_devices(&zvols::list(&[]), zvols::DEVICE_WAIT);
            let mut devices: Vec<String> =
                present.iter().map(|r| zvols::node(&r.dataset)).collect();
            devices.extend(mapped_devices());
            zvols::probe_devices(devices)
                .into_iter()
                .flatten()
                .any(|p| p.label.as_deref() == Some(label.as_str()))
        }
    }
}

/// zlive's opened LUKS containers.
fn mapped_devices() -> Vec<String> {
    std::fs::read_dir("/dev/mapper")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(zlive::plan::DM_PREFIX))
        .map(|n| format!("/dev/mapper/{n}"))
        .collect()
}

/// The zvols that may hold the volume, locked or in a LUKS container: the one named; for a
/// label not visible yet, every zvol of the imported pools (after a scan, only the pools that
/// may hold it are still imported).
fn candidate_zvols(volume: &Volume) -> Vec<ZvolRow> {
    match &volume.kind {
        VolumeKind::Zvol(d) => zvols::list(&[d.to_string()])
            .into_iter()
            .filter(|r| r.dataset == *d)
            .collect(),
        VolumeKind::Dataset(_) => Vec::new(),
        VolumeKind::Label(_) if Path::new(volume.what()).exists() => Vec::new(),
        VolumeKind::Label(_) => zvols::list(&[]),
    }
}

/// The datasets of the imported pools that carry `label`.
fn labelled_datasets(label: &str) -> Vec<Dataset> {
    datasets::labelled(&[])
        .into_iter()
        .filter(|(_, l)| l == label)
        .map(|(d, _)| d)
        .collect()
}

/// The pools the command line names.
fn named_pools(plan: &Plan) -> Vec<String> {
    plan.imports
        .iter()
        .filter_map(|i| match i {
            Import::Named(p) => Some(p.to_string()),
            Import::Scan => None,
        })
        .collect()
}

/// Record what the label led to once it was found on exactly one volume (the device number,
/// or the dataset): the generator uses the volume only if that is what is mounted
/// (`paths::CHECKED_DIR`).
fn record_checked(volume: &Volume) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let checked = match volume.dataset() {
        Some(dataset) => format!("dataset {dataset}\n"),
        None => {
            let rdev = std::fs::metadata(volume.what())
                .with_context(|| format!("Failed to stat {}", volume.what()))?
                .rdev();
            format!(
                "{}:{}\n",
                nix::sys::stat::major(rdev),
                nix::sys::stat::minor(rdev)
            )
        }
    };
    std::fs::create_dir_all(zlive::paths::CHECKED_DIR)?;
    let path = format!("{}/{}", zlive::paths::CHECKED_DIR, volume.name);
    std::fs::write(&path, checked).with_context(|| format!("Failed to write {path}"))
}

fn not_found(plan: &Plan, volume: &Volume, started: Instant) -> Result<()> {
    let pools: Vec<String> = plan
        .imports
        .iter()
        .map(|i| match i {
            Import::Named(p) => p.to_string(),
            Import::Scan => "every pool found".to_owned(),
        })
        .collect();
    let fields = (volume.describe(), volume.mount_unit.as_str());
    if let Some(why) = crate::zfs::import::zfs_unavailable() {
        // Nothing was looked at: no advice about what the pools hold, and not a first boot.
        error!(
            ZLIVE_VOLUME = fields.0.as_str(),
            OBJECT_SYSTEMD_UNIT = fields.1,
            "persistence volume {} ({}) could not be looked for: {why}",
            fields.0,
            volume.what()
        );
        return match volume.required() {
            true => bail!("persistence volume {} not found", fields.0),
            false => Ok(()),
        };
    }
    let advice = match &volume.kind {
        VolumeKind::Zvol(d) => format!(
            "the pool has no volume {d} ('zfs list -t volume' shows what it has), or the volume is hidden (volmode=none) or its key is not loaded"
        ),
        VolumeKind::Dataset(d) => format!(
            "the pool has no dataset {d} ('zfs list' shows what it has), or its key is not loaded"
        ),
        VolumeKind::Label(l) => format!(
            "no dataset with org.zlive:label={l} and no volume with an ext4 file system labelled '{l}' exists; create one with 'zfs create -o org.zlive:label={l} POOL/persistence' (OpenZFS 2.2.2 or later), or 'zfs create -V 1G POOL/persistence' and 'mkfs.ext4 -L {l} /dev/zvol/POOL/persistence'"
        ),
    };
    let story = format!(
        "persistence volume {} ({}) is not there ({:.1} s after importing {}): {advice}. Booting without it; zlive wrote nothing to the pool's volumes.",
        volume.describe(),
        volume.what(),
        started.elapsed().as_secs_f64(),
        pools.join(", ")
    );
    if volume.required() {
        error!(
            ZLIVE_VOLUME = fields.0.as_str(),
            OBJECT_SYSTEMD_UNIT = fields.1,
            "{story}"
        );
        bail!("persistence volume {} not found", volume.describe())
    }
    // A label search that finds nothing is a normal first boot: the caller stands the
    // volume's mount down without failing anything.
    info!(
        ZLIVE_VOLUME = fields.0.as_str(),
        OBJECT_SYSTEMD_UNIT = fields.1,
        "{story}"
    );
    Ok(())
}

/// Withdraw a volume nobody will find: cancel the queued start jobs of its mount, its fsck
/// and its device (dependents first, so nothing fails for want of them). Otherwise the
/// mount would wait for the device until the device's job timeout, and the reload with it.
fn stand_down(pid1: &mut Pid1, volume: &Volume, read_only: bool) -> Result<()> {
    let fsck = volume.fsck_unit().filter(|_| !read_only);
    let mut units = vec![volume.mount_unit.as_str()];
    units.extend(fsck.as_deref());
    units.extend(volume.device_unit());
    let cancelled = pid1.cancel_start_jobs(&units)?;
    info!(
        ZLIVE_VOLUME = volume.describe().as_str(),
        "persistence volume {} is off for this boot (not an error: persistence is used when it is there); cancelled the waits of {}",
        volume.describe(),
        if cancelled.is_empty() { "nothing".to_owned() } else { cancelled.join(", ") }
    );
    Ok(())
}

/// Every volume that carries `label`: the devices whose file system has it, named by their
/// zvol where they are one, and the datasets whose property holds it. The imported pools'
/// zvols are waited for first (bounded, all together): udev may not have made them all yet,
/// and a copy of the volume must not be missed.
fn labelled(label: &str) -> Result<Vec<String>> {
    // A zvol a dataset replaces (persistence-migrate) no longer carries its label.
    let replaced = datasets::replaced();
    let mut carriers: Vec<String> = labelled_devices(label)?
        .into_iter()
        .filter(|d| !replaced.iter().any(|z| d.ends_with(&format!("({z})"))))
        .collect();
    carriers.extend(
        labelled_datasets(label)
            .iter()
            .map(|d| format!("dataset {d}")),
    );
    Ok(carriers)
}

fn labelled_devices(label: &str) -> Result<Vec<String>> {
    let rows = zvols::list(&[]);
    zvols::wait_for_devices(&rows, zvols::DEVICE_WAIT);
    let zvols: Vec<String> = rows.iter().map(|r| r.dataset.to_string()).collect();
    // blkid probes the devices themselves (no cache), not udev's idea of them.
    let (_, text) = exec::run(
        Command::new("blkid")
            .args(["-c", "/dev/null", "-o", "device", "-t"])
            .arg(format!("LABEL={label}")),
    )?;
    let mut devices: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/"))
        .map(str::to_owned)
        .collect();
    devices.sort();
    devices.dedup();
    Ok(devices.iter().map(|d| name_device(d, &zvols)).collect())
}

/// Whether a device node is a device-mapper device (an opened LUKS container).
fn is_mapped(device: &str) -> bool {
    std::fs::canonicalize(device).is_ok_and(|p| p.to_string_lossy().starts_with("/dev/dm-"))
}

/// `/dev/zd16 (dpool/backup)` for a zvol, the device alone otherwise.
fn name_device(device: &str, zvols: &[String]) -> String {
    let target = std::fs::canonicalize(device).ok();
    zvols
        .iter()
        .find(|z| std::fs::canonicalize(format!("/dev/zvol/{z}")).ok() == target)
        .map_or_else(|| device.to_owned(), |z| format!("{device} ({z})"))
}

/// Whether an ext4 file system's journal must be replayed (the superblock's RECOVER flag):
/// read-only mounts skip that (`noload`) and show the file system as it was before.
fn ext4_needs_recovery(device: &str) -> Result<bool> {
    let mut superblock = [0u8; 1024];
    let mut file = std::fs::File::open(device)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(1024))?;
    file.read_exact(&mut superblock)?;
    Ok(superblock_needs_recovery(&superblock))
}

/// The ext2/3/4 superblock: magic 0xEF53 at 0x38, `s_feature_incompat` at 0x60, RECOVER = 4.
fn superblock_needs_recovery(sb: &[u8; 1024]) -> bool {
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    magic == 0xEF53 && incompat & 0x4 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recover_flag() {
        let mut sb = [0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert!(!superblock_needs_recovery(&sb));
        sb[0x60..0x64].copy_from_slice(&0x246u32.to_le_bytes());
        assert!(superblock_needs_recovery(&sb));
        sb[0x38] = 0;
        assert!(!superblock_needs_recovery(&sb), "not ext4: no claim");
    }
}
