//! `zlive import POOL | --scan`: the host id, then the pools. A pool named on the command
//! line is imported forced (a live system's host id changes from machine to machine). A scan
//! imports every pool it finds read-only, looks at what their zvols carry (asking, bounded,
//! for the keys of locked ones only while a persistence label is still missing), imports
//! read-write only a pool holding a persistence volume whose label no other zvol carries, and
//! lets every other pool go again (exported). Read-only persistence makes sure every pool it
//! uses is imported read-only. Every import has an altroot under /run/zlive, so that no
//! dataset of any pool can ever be mounted over the live system.

use crate::exec::{self, run};
use crate::systemd::pid1::Pid1;
use crate::zfs::{keys, members, zvols};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};
use zlive::names::Dataset;
use zlive::plan::{Import, Plan, VolumeKind};
use zlive::tool_output::{self, Probed, ZvolRow};

/// The least a named pool's import (or a scan, for the disk of its persistence) looks for its
/// disks, however late it starts. On a slow machine a disk's driver was seen loading 8 s after
/// udev's coldplug ended, after udev had already been found idle: 5 s was not enough.
const MIN_POOL_WAIT: Duration = Duration::from_secs(10);
/// How often an import is tried again while its disks are not all there.
const RETRY: Duration = Duration::from_millis(250);
/// How long an export may stay busy (udev still probing the zvols).
const EXPORT_WAIT: Duration = Duration::from_secs(10);

/// Why the zfs module is not loaded, written by `zlive load-zfs` when modprobe failed: the
/// import and the volume waits say it instead of what a missing pool would make them say.
const ZFS_REFUSED: &str = "/run/zlive/zfs-module-refused";

/// `zlive load-zfs`: load the ZFS module at the start of the initrd, in parallel with udev's
/// coldplug and the medium, rather than inside the first `zpool` call after them.
pub fn load_module() -> Result<()> {
    let started = Instant::now();
    let (ok, text) = run(Command::new("modprobe").arg("zfs"))?;
    if !ok {
        let why = refusal(&text, &Signatures::of_this_machine());
        let _ = std::fs::create_dir_all("/run/zlive");
        let _ = std::fs::write(ZFS_REFUSED, &why);
        error!("{why}");
        exec::console(&format!("zlive: {why}\n"));
        bail!("the zfs module could not be loaded");
    }
    info!(
        "loaded the zfs module in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the machine says about module signatures: the firmware's `SecureBoot` variable
/// (`None` without UEFI or efivarfs) and the kernel's lockdown mode.
#[derive(Debug, Default)]
pub struct Signatures {
    pub secure_boot: Option<bool>,
    pub lockdown: String,
}

/// The firmware's SecureBoot variable, as `mokutil --sb-state` reads it: four bytes of
/// attributes, then the value.
const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

impl Signatures {
    pub fn of_this_machine() -> Signatures {
        Signatures {
            secure_boot: std::fs::read(SECURE_BOOT_VAR)
                .ok()
                .and_then(|v| v.get(4).map(|&b| b == 1)),
            lockdown: std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default(),
        }
    }
}

/// What went wrong when modprobe could not load zfs, for the journal and the console. A
/// signature the kernel does not trust (Secure Boot: the kernel is locked down and takes only
/// signed modules) is said as such, with the evidence and the two ways out; the rest as
/// modprobe said it.
pub fn refusal(modprobe_said: &str, machine: &Signatures) -> String {
    let said = modprobe_said.trim().replace('\n', " ");
    let untrusted = ["Key was rejected by service", "Required key not available"]
        .iter()
        .any(|m| said.contains(m));
    let locked = ["[integrity]", "[confidentiality]"]
        .iter()
        .any(|m| machine.lockdown.contains(m));
    let tail = "Persistence on ZFS is off for this boot: no pool was imported or looked at, and nothing on any disk was written or changed.";
    let signature_refused = untrusted || (locked && said.contains("not permitted"));
    if !signature_refused {
        return format!("the zfs module could not be loaded ({said}). {tail}");
    }
    let mut evidence = Vec::new();
    if machine.secure_boot == Some(true) {
        evidence.push("the firmware's SecureBoot variable is set");
    }
    if locked {
        evidence.push("the kernel is locked down");
    }
    let state = match evidence.is_empty() {
        true => "the kernel loads only modules signed by a key it trusts".to_owned(),
        false => format!("Secure Boot is on ({})", evidence.join(", ")),
    };
    format!(
        "the kernel refused the zfs module ({said}): {state}, and this zfs module is not signed by a key this machine trusts. Either enrol the key that signed it, then confirm it in MokManager at the next boot ('zlive secure-boot --enroll' in the live system for the key of an image built by zlive's recipe, 'mokutil --import /var/lib/dkms/mok.pub' for DKMS's own key), or switch Secure Boot off in the firmware. {tail}"
    )
}

/// Why ZFS cannot be used in this boot, when the zfs module is not loaded; `None` when it is.
pub fn zfs_unavailable() -> Option<String> {
    if Path::new("/sys/module/zfs").exists() {
        return None;
    }
    Some(
        std::fs::read_to_string(ZFS_REFUSED)
            .ok()
            .map(|why| why.trim().to_owned())
            .filter(|why| !why.is_empty())
            .unwrap_or_else(|| "the zfs module is not loaded".to_owned()),
    )
}

/// Pools zlive imported or took over in this boot, one per line: the exitrd exports them at
/// shutdown, and is only prepared when there is one.
pub const IMPORTED: &str = "/run/zlive/imported";

pub fn import(plan: &Plan, pool: Option<&str>) -> Result<()> {
    if let Some(why) = zfs_unavailable() {
        error!(
            ZLIVE_POOL = pool.unwrap_or(""),
            "no pool can be imported: {why}"
        );
        bail!("no ZFS in this boot");
    }
    set_host_id();
    match pool {
        Some(pool) => import_named(plan, pool)?,
        None => import_scan(plan)?,
    }
    let pools = imported_pools()?;
    if !pools.is_empty() {
        record(&pools);
    }
    Ok(())
}

/// Add pools to [`IMPORTED`].
fn record(pools: &[String]) {
    use std::io::Write;
    let path = Path::new(IMPORTED);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            f.write_all(format!("{}\n", pools.join("\n")).as_bytes())
        });
    if let Err(e) = written {
        warn!("cannot record the imported pools in {IMPORTED}: {e}; there will be no exitrd to export them at shutdown");
    }
}

/// The altroot of every pool zlive imports: were its datasets ever mounted (`zfs mount -a` by
/// hand; OpenZFS's own units are masked on live boots), they would land below this, never
/// where a stranger's `mountpoint=` says (`/etc/sudoers.d`, `/home`).
const ALTROOT: &str = "altroot=/run/zlive/altroot";

fn options(read_only: bool) -> Vec<&'static str> {
    let mut o = vec!["-N", "-o", "cachefile=none", "-o", ALTROOT];
    if read_only {
        o.extend(["-o", "readonly=on"]);
    }
    o
}

fn imported(pool: &str) -> Result<bool> {
    Ok(run(Command::new("zpool").args(["list", "-H", "-o", "name", pool]))?.0)
}

fn import_named(plan: &Plan, pool: &str) -> Result<()> {
    if !plan
        .imports
        .iter()
        .any(|i| matches!(i, Import::Named(p) if p.as_str() == pool))
    {
        warn!(
            ZLIVE_POOL = pool,
            "pool {pool} is not named on the kernel command line; importing it anyway"
        );
    }
    if imported(pool)? {
        info!(ZLIVE_POOL = pool, "pool {pool} is already imported");
        return keep_read_only(plan, pool);
    }
    let started = Instant::now();
    let wait = MemberWait::new(plan.cmdline.pool_timeout, started);
    let mut attempts = 0;
    let last = loop {
        // udev's link for a ZFS member device names its pool: no import is tried before a
        // disk of the pool is there, and one is tried as soon as it is.
        wait_for_member(pool, &wait);
        attempts += 1;
        // The disks udev saw as the pool's members are read, not every block device; once
        // the wait is over, the last try reads them all, for a member udev did not label.
        let everywhere = wait.over();
        let disks = match everywhere {
            true => Vec::new(),
            false => members::of_pool(pool),
        };
        let attempt_started = Instant::now();
        let (ok, text) = run(Command::new("zpool")
            .arg("import")
            .args(options(plan.import_read_only()))
            .arg("-f")
            .args(members::search_args(&disks))
            .arg(pool))?;
        if ok {
            let ro = if plan.import_read_only() {
                ", read-only"
            } else {
                ""
            };
            info!(
                ZLIVE_POOL = pool,
                "imported pool {pool} (forced{ro}) after {attempts} attempt(s), {:.1} s, of which the last zpool import took {:.1} s (reading {})",
                started.elapsed().as_secs_f64(),
                attempt_started.elapsed().as_secs_f64(),
                read_where(&disks)
            );
            return Ok(());
        }
        // Another importer (OpenZFS's own units) may have won the race.
        if imported(pool)? {
            info!(
                ZLIVE_POOL = pool,
                "pool {pool} was imported by someone else meanwhile"
            );
            return keep_read_only(plan, pool);
        }
        if everywhere {
            break text;
        }
        // Some of its disks are there, not all (or not yet probed): try again shortly.
        sleep(RETRY);
    };
    error!(
        ZLIVE_POOL = pool,
        "pool {pool} could not be imported within {} s of the initrd's start (persistence-zpool-timeout=, longer while udev still handled devices; {attempts} attempt(s) in {:.1} s): {}. Persistence on this pool is off for this boot; nothing was written to it. 'zpool import' lists the pools this system can see.",
        plan.cmdline.pool_timeout,
        started.elapsed().as_secs_f64(),
        last.replace('\n', " ")
    );
    bail!("pool {pool} not imported")
}

/// Which disks an import read, for its message.
fn read_where(disks: &[String]) -> String {
    match disks.is_empty() {
        true => "every block device".to_owned(),
        false => disks.join(" "),
    }
}

/// How long a named pool's disks (or a scan's persistence) are waited for: until the deadline of [`member_wait`]; past
/// it, as long as udev is still handling events (a disk's driver loading beside the big zfs
/// module on a slow machine, a disk being probed), up to twice the timeout after the initrd's
/// start. A disk that is not there leaves udev idle, and the wait ends at the deadline.
struct MemberWait {
    deadline: Instant,
    at_most: Instant,
}

impl MemberWait {
    fn new(timeout: u32, now: Instant) -> MemberWait {
        let timeout = Duration::from_secs(u64::from(timeout));
        let since = since_initrd_start();
        MemberWait {
            deadline: now + member_wait(timeout, since),
            at_most: now + member_wait(timeout * 2, since),
        }
    }

    fn over(&self) -> bool {
        let now = Instant::now();
        now >= self.at_most || (now >= self.deadline && !udev_busy())
    }

    /// The pause between two looks: short before the deadline; past it, where each look asks
    /// udev, longer.
    fn pause(&self) {
        sleep(match Instant::now() >= self.deadline {
            true => Duration::from_millis(250),
            false => Duration::from_millis(50),
        });
    }
}

/// Whether udev still has events to handle (`udevadm settle --timeout=0` asks without
/// waiting).
fn udev_busy() -> bool {
    Command::new("udevadm")
        .args(["settle", "--timeout=0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| !s.success())
}

/// How much longer a named pool's disks are looked for: until `timeout` after systemd started
/// in the initrd, as systemd waits for a device from the moment its job is queued at that
/// start, not from whenever the import began (after the module load and udev's coldplug). An
/// import that starts later than that still looks for MIN_POOL_WAIT (or the whole timeout when
/// it is shorter): on a slow machine the first attempt can come before udev has finished with
/// the disk.
fn member_wait(timeout: Duration, since_start: Duration) -> Duration {
    timeout
        .saturating_sub(since_start)
        .max(MIN_POOL_WAIT.min(timeout))
}

/// Time since PID 1 (systemd in the initrd) started; since the kernel started if that cannot
/// be read.
fn since_initrd_start() -> Duration {
    let seconds = |text: Option<String>| {
        text.and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map(Duration::from_secs_f64)
            .unwrap_or_default()
    };
    let uptime = seconds(std::fs::read_to_string("/proc/uptime").ok());
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0);
    let started = std::fs::read_to_string("/proc/1/stat")
        .ok()
        .and_then(|stat| start_ticks(&stat))
        .zip(ticks_per_second)
        .map(|(ticks, hz)| Duration::from_secs_f64(ticks as f64 / hz as f64))
        .unwrap_or_default();
    uptime.saturating_sub(started)
}

/// A process's start time in clock ticks after boot: field 22 of /proc/PID/stat, counted
/// after the command name in parentheses (which may hold spaces and parentheses itself).
fn start_ticks(stat: &str) -> Option<u64> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    // The first field after the command is field 3 (the state).
    after_command.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Wait until a disk of `pool` is there (its udev link `/dev/disk/by-label/POOL`, which
/// udev makes for ZFS members), or the wait is over.
fn wait_for_member(pool: &str, wait: &MemberWait) {
    let Ok(link) = zlive::names::device_from_spec(&format!("LABEL={pool}")) else {
        return;
    };
    while !Path::new(&link).exists() && !wait.over() {
        wait.pause();
    }
}

/// persistence-read-only and a pool someone else (OpenZFS's own units) imported read-write:
/// import it again, read-only. A pool that cannot be exported (a volume in use) makes
/// read-only persistence impossible, which is refused rather than done half.
fn keep_read_only(plan: &Plan, pool: &str) -> Result<()> {
    if !plan.import_read_only() {
        return Ok(());
    }
    let lines =
        exec::lines(Command::new("zpool").args(["get", "-H", "-o", "value", "readonly", pool]))?;
    if lines.first().map(String::as_str) == Some("on") {
        return Ok(());
    }
    reimport(pool, true, true)?;
    warn!(
        ZLIVE_POOL = pool,
        "pool {pool} had been imported read-write (by OpenZFS's own units?); exported it and imported it read-only for persistence-read-only. Its labels were written by that first import and by the export, its volumes were not."
    );
    Ok(())
}

/// Export a pool and import it again, read-only or not (`force`: `-f`). Retries the export
/// while the pool is busy: udev may still be probing its zvols.
fn reimport(pool: &str, read_only: bool, force: bool) -> Result<()> {
    let devices = member_devices(pool);
    if let Err(why) = export(pool) {
        error!(ZLIVE_POOL = pool, "pool {pool} cannot be exported to import it again ({why}); persistence on it is off for this boot");
        bail!("pool {pool} is busy");
    }
    let mut cmd = Command::new("zpool");
    cmd.arg("import").args(options(read_only));
    if force {
        cmd.arg("-f");
    }
    // Only the pool's own disks are read again, not every block device (a CD-ROM, a USB
    // stick: seconds under emulation).
    for device in &devices {
        cmd.arg("-d").arg(device);
    }
    let (ok, text) = run(cmd.arg(pool))?;
    if !ok {
        error!(
            ZLIVE_POOL = pool,
            "pool {pool} could not be imported again: {}",
            text.replace('\n', " ")
        );
        bail!("pool {pool} not imported again");
    }
    Ok(())
}

/// Export a pool, retrying for a while as long as it is busy (udev may still be probing its
/// zvols); what `zpool export` said when it never succeeded.
fn export(pool: &str) -> std::result::Result<(), String> {
    let started = Instant::now();
    loop {
        match run(Command::new("zpool").args(["export", pool])) {
            Ok((true, _)) => return Ok(()),
            Ok((false, text)) if started.elapsed() < EXPORT_WAIT => {
                let _ = text;
                sleep(Duration::from_millis(250));
            }
            Ok((false, text)) => return Err(text.replace('\n', " ")),
            Err(e) => return Err(format!("{e:#}")),
        }
    }
}

/// The names in /dev/disk/by-label. udev adds one for every disk it has probed that carries
/// a label, a ZFS pool member included (its pool's name).
fn labelled_disks() -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir("/dev/disk/by-label")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The device paths of an imported pool's disks, from `zpool status -P`; empty when they
/// cannot be read, and the import looks everywhere again.
pub fn member_devices(pool: &str) -> Vec<String> {
    let (ok, text) = run(Command::new("zpool").args(["status", "-P", pool])).unwrap_or_default();
    if !ok {
        return Vec::new();
    }
    tool_output::vdev_paths(&text)
}

fn import_scan(plan: &Plan) -> Result<()> {
    let before = imported_pools()?;
    // Pools OpenZFS's own units imported read-write, under read-only persistence.
    for pool in &before {
        keep_read_only(plan, pool)?;
    }
    let started = Instant::now();
    let (attempts, left_out) = import_everything_read_only(plan)?;
    let imported_at = Instant::now();
    let scanned: Vec<String> = imported_pools()?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let survey = survey(plan, &scanned)?;
    let surveyed_at = Instant::now();
    settle_scanned(plan, &scanned, &survey)?;
    let all = imported_pools()?;
    info!(
        "pools imported: {}; the scan took {:.1} s: {attempts} read-only import(s) of every pool found {:.1} s, looking at their volumes {:.1} s, settling each pool {:.1} s",
        if all.is_empty() {
            "none".to_owned()
        } else {
            all.join(", ")
        },
        started.elapsed().as_secs_f64(),
        (imported_at - started).as_secs_f64(),
        (surveyed_at - imported_at).as_secs_f64(),
        surveyed_at.elapsed().as_secs_f64(),
    );
    if left_out {
        say_left_out(&scanned)?;
    }
    Ok(())
}

/// `zpool import -a`, read-only, until the persistence labels the plan looks for are seen or
/// the wait is over. How many imports ran, and whether any left a pool out (it said so).
fn import_everything_read_only(plan: &Plan) -> Result<(usize, bool)> {
    // As long as a named pool's disks: a USB stick's driver can load well after the scan
    // starts (CI saw one come more than 10 s after it).
    let wait = MemberWait::new(plan.cmdline.pool_timeout, Instant::now());
    let (mut attempts, mut left_out) = (0, false);
    loop {
        let labelled_before = labelled_disks();
        let members_before = members::of_any_pool();
        // The disks udev saw as ZFS members; every block device once the wait is over, or
        // while udev has seen none (libblkid then finds what udev has not probed yet).
        let disks = match wait.over() {
            true => Vec::new(),
            false => members_before.clone(),
        };
        // Read-only first: a scan also finds backups and other systems' pools, which a
        // read-write import would change. Only the pools with a persistence volume get
        // read-write below.
        let started = Instant::now();
        let (ok, text) = run(Command::new("zpool")
            .arg("import")
            .arg("-a")
            .args(options(true))
            .args(members::search_args(&disks)))?;
        attempts += 1;
        debug!(
            "zpool import -a (read-only) took {:.1} s, reading {}",
            started.elapsed().as_secs_f64(),
            read_where(&disks)
        );
        if !ok || !text.is_empty() {
            left_out = true;
            if !text.is_empty() {
                warn!("zpool import -a: {}", text.replace('\n', " "));
            }
        }
        let missing = labels_missing(plan);
        // A locked zvol shows its label only once its key is loaded (below): no disk that
        // comes late would change that.
        if !missing || wait.over() || any_locked(&imported_pools()?) {
            return Ok((attempts, left_out));
        }
        // Again when udev has probed another labelled disk (a late USB stick), not on a timer.
        while labelled_disks() == labelled_before && !wait.over() {
            wait.pause();
        }
        // Most often the new label is the persistence volume's own, on a zvol of a pool just
        // imported: when udev has seen no new ZFS member since, there is no other disk to
        // read, and another import attempt costs up to a second under emulation. A pool
        // whose disk came meanwhile is still looked at: a copy of the volume there keeps
        // both read-only.
        if !labels_missing(plan) && members::of_any_pool() == members_before {
            return Ok((attempts, left_out));
        }
    }
}

/// The pools a scan found and left alone, each with why, so that the user can name them:
/// read from `zpool import`'s listing (another read of every device, so only after an import
/// that said it left something out).
fn say_left_out(scanned: &[String]) -> Result<()> {
    let (_, listing) = run(Command::new("zpool").arg("import"))?;
    for listed in tool_output::listed_pools(&listing) {
        let pool = listed.name.as_str();
        // A pool the survey let go was imported and is said above.
        if scanned.iter().any(|s| s == pool) {
            continue;
        }
        let why = match (listed.reason(), listed.in_use_elsewhere()) {
            (Some(status), true) => format!("{status} It may be in use by another system, or that system stopped without exporting it (a power cut); a scan never takes such a pool over."),
            (Some(status), false) => status.to_owned(),
            (None, _) => "zpool import gives no reason (its disk may have come after the scan).".to_owned(),
        };
        warn!(
            ZLIVE_POOL = pool,
            "pool {pool} was found but not imported: {why} Pools found by scanning are never forced; if it is yours, add persistence-zpool={pool} to the kernel command line to import it with -f."
        );
    }
    Ok(())
}

/// Whether a persistence label the plan looks for is on no device udev has probed and on no
/// dataset of the imported pools (a dataset has no device node to wait for).
fn labels_missing(plan: &Plan) -> bool {
    let on_devices = |l: &String| Path::new(&format!("/dev/disk/by-label/{l}")).exists();
    let wanted: Vec<String> = wanted_labels(plan)
        .into_iter()
        .filter(|l| !on_devices(l))
        .collect();
    if wanted.is_empty() {
        return false;
    }
    let on_datasets = crate::zfs::datasets::labelled(&[]);
    wanted
        .iter()
        .any(|l| !on_datasets.iter().any(|(_, label)| label == l))
}

/// Whether any zvol of these pools is locked (its key not loaded).
fn any_locked(pools: &[String]) -> bool {
    !pools.is_empty() && zvols::list(pools).iter().any(|r| r.locked && !r.hidden)
}

/// What the scanned pools' zvols carry, and the encryption roots the survey unlocked.
#[derive(Debug, Default)]
struct Survey {
    probed: Vec<(Dataset, Probed)>,
    unlocked: Vec<String>,
}

/// The persistence labels a plan looks for.
fn wanted_labels(plan: &Plan) -> Vec<String> {
    plan.volumes
        .iter()
        .filter_map(|v| match &v.kind {
            VolumeKind::Label(l) => Some(l.clone()),
            VolumeKind::Zvol(_) | VolumeKind::Dataset(_) => None,
        })
        .collect()
}

/// Look at the volumes of the scanned pools: the datasets' labels (their property, visible
/// even while they are locked), and the zvols' (one bounded wait for all their device nodes,
/// one probe). Only while a persistence label is still missing are the keys of locked
/// encryption roots asked for (bounded: these are not pools the command line named), and the
/// zvols they open looked at too.
fn survey(plan: &Plan, pools: &[String]) -> Result<Survey> {
    if pools.is_empty() {
        return Ok(Survey::default());
    }
    let wanted = wanted_labels(plan);
    let rows = zvols::list(pools);
    let mut probed = dataset_carriers(pools);
    // A zvol a dataset replaces (persistence-migrate) no longer carries its label.
    let replaced = crate::zfs::datasets::replaced();
    let live: Vec<ZvolRow> = rows
        .iter()
        .filter(|r| !replaced.iter().any(|z| z == r.dataset.as_str()))
        .cloned()
        .collect();
    probed.extend(zvols::probe(&zvols::wait_for_devices(
        &live,
        zvols::DEVICE_WAIT,
    )));
    let missing =
        |probed: &[(Dataset, Probed)]| wanted.iter().any(|l| zvols::carrying(probed, l).is_empty());
    let roots = keys::locked_roots(&rows);
    if !missing(&probed) || roots.is_empty() {
        return Ok(Survey {
            probed,
            unlocked: Vec::new(),
        });
    }
    let unlocked = keys::unlock(&mut Pid1::connect()?, &roots)?;
    let opened: Vec<ZvolRow> = zvols::list(pools)
        .into_iter()
        .filter(|r| {
            r.encryption_root
                .as_ref()
                .is_some_and(|root| unlocked.iter().any(|u| u == root.as_str()))
        })
        .collect();
    probed.extend(zvols::probe(&zvols::wait_for_devices(
        &opened,
        zvols::DEVICE_WAIT,
    )));
    Ok(Survey { probed, unlocked })
}

/// The datasets of these pools that carry a persistence label, as what their volume holds:
/// a ZFS file system with that label (its node is the dataset's name), so that labels on
/// datasets and on zvols are counted together.
fn dataset_carriers(pools: &[String]) -> Vec<(Dataset, Probed)> {
    crate::zfs::datasets::labelled(pools)
        .into_iter()
        .map(|(dataset, label)| {
            let probed = Probed {
                device: dataset.to_string(),
                fs_type: Some("zfs".to_owned()),
                label: Some(label),
            };
            (dataset, probed)
        })
        .collect()
}

/// What becomes of a pool a scan imported read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// It holds a persistence volume no other zvol has the label of: read-write.
    ReadWrite,
    /// It holds a persistence volume, and persistence is read-only.
    ReadOnly,
    /// It holds only copies of persistence volumes (a label on several zvols): kept read-only
    /// so that the volume wait can name them, written to by nobody. The labels.
    Copies(Vec<String>),
    /// No label seen, but LUKS containers that may hold one (`persistence-encryption=luks`):
    /// kept read-only for the volume wait, which opens them.
    Containers,
    /// Nothing zlive uses: exported again.
    LetGo,
}

/// The fate of each scanned pool, from the labels its zvols carry. A label counts only when
/// exactly one zvol, across every scanned pool, carries it: a received backup or a clone on
/// another pool makes neither copy writable.
fn fates(
    pools: &[String],
    wanted: &[String],
    probed: &[(Dataset, Probed)],
    read_only: bool,
    luks: bool,
) -> Vec<(String, Fate)> {
    pools
        .iter()
        .map(|pool| {
            let held: Vec<&String> = wanted
                .iter()
                .filter(|l| {
                    zvols::carrying(probed, l)
                        .iter()
                        .any(|d| d.pool().as_str() == pool)
                })
                .collect();
            let unique = held.iter().any(|l| zvols::carrying(probed, l).len() == 1);
            let containers = luks
                && probed.iter().any(|(d, p)| {
                    d.pool().as_str() == pool && p.fs_type.as_deref() == Some("crypto_LUKS")
                });
            let fate = match (held.is_empty(), unique, read_only) {
                (true, _, _) if containers => Fate::Containers,
                (true, _, _) => Fate::LetGo,
                (false, true, false) => Fate::ReadWrite,
                (false, true, true) => Fate::ReadOnly,
                (false, false, _) => Fate::Copies(held.into_iter().cloned().collect()),
            };
            (pool.clone(), fate)
        })
        .collect()
}

/// Act on each scanned pool's fate. A pool made read-write loses the keys the survey loaded
/// (an export unloads them): they are loaded again, from the passphrase the prompt cached.
fn settle_scanned(plan: &Plan, scanned: &[String], survey: &Survey) -> Result<()> {
    let wanted = wanted_labels(plan);
    let read_only = plan.import_read_only();
    let luks = plan.cmdline.encryption.luks;
    for (pool, fate) in fates(scanned, &wanted, &survey.probed, read_only, luks) {
        let pool = pool.as_str();
        match fate {
            Fate::ReadWrite => {
                reimport(pool, false, false)?;
                info!(
                    ZLIVE_POOL = pool,
                    "pool {pool} holds a persistence volume: imported read-write"
                );
                let roots: Vec<String> = survey
                    .unlocked
                    .iter()
                    .filter(|r| r.split('/').next() == Some(pool))
                    .cloned()
                    .collect();
                if !roots.is_empty() {
                    keys::unlock(&mut Pid1::connect()?, &roots)?;
                }
            }
            Fate::ReadOnly => info!(
                ZLIVE_POOL = pool,
                "pool {pool} holds a persistence volume: imported read-only (persistence-read-only)"
            ),
            Fate::Copies(labels) => warn!(
                ZLIVE_POOL = pool,
                "pool {pool} holds a persistence volume whose label ({}) other zvols carry too: kept read-only, and nothing is written to it",
                labels.join(", ")
            ),
            Fate::Containers => warn!(
                ZLIVE_POOL = pool,
                "pool {pool} holds LUKS containers, which may hold a persistence volume: kept read-only for the volume step, which opens them. A LUKS volume on a pool found by scanning is used read-only; name its pool with persistence-zpool={pool} to use it read-write"
            ),
            Fate::LetGo => match export(pool) {
                Ok(()) => info!(
                    ZLIVE_POOL = pool,
                    "pool {pool} holds no persistence volume: let go (exported again); nothing was written to it"
                ),
                Err(why) => warn!(
                    ZLIVE_POOL = pool,
                    "pool {pool} holds no persistence volume, but it could not be exported again ({why}); it stays imported read-only, and nothing is written to it"
                ),
            },
        }
    }
    Ok(())
}

/// The pools imported now: `zpool list`'s standard output only, and a failure said as one.
fn imported_pools() -> Result<Vec<String>> {
    let lines = exec::lines(Command::new("zpool").args(["list", "-H", "-o", "name"]))?;
    Ok(tool_output::pool_names(&lines.join("\n")))
}

/// zlive's host id policy. A live system moves between machines, so the build host's id
/// (which the initrd would otherwise carry) says nothing. The id is this machine's own,
/// derived from its firmware UUID (DMI), so a pool imported here and not exported is seen
/// as "in use by another system" elsewhere; without a firmware UUID there is none (0).
/// `spl_hostid=` on the kernel command line (OpenZFS's own parameter) wins.
fn set_host_id() {
    let cmdline = std::fs::read_to_string(zlive::paths::PROC_CMDLINE).unwrap_or_default();
    if zlive::cmdline::split_words(&cmdline)
        .iter()
        .any(|w| w.starts_with("spl_hostid="))
    {
        info!("host id: spl_hostid= on the kernel command line");
        return;
    }
    let uuid = std::fs::read_to_string("/sys/class/dmi/id/product_uuid").unwrap_or_default();
    let result = match host_id_from_uuid(&uuid) {
        Some(id) => std::fs::write("/etc/hostid", id.to_ne_bytes())
            .map(|()| format!("{id:08x}, from this machine's firmware UUID")),
        None => match std::fs::remove_file("/etc/hostid") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok("none (0): this machine has no firmware UUID".to_owned()),
        },
    };
    match result {
        Ok(what) => info!("host id: {what}"),
        Err(e) => warn!("host id: cannot write /etc/hostid: {e}"),
    }
}

/// A 32-bit host id from a firmware UUID (FNV-1a of its lower-case text); `None` for an
/// empty, all-zero or all-ones UUID, which firmware uses for "not set".
fn host_id_from_uuid(uuid: &str) -> Option<u32> {
    let uuid = uuid.trim().to_ascii_lowercase();
    let digits: String = uuid.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if digits.len() != 32 || digits.chars().all(|c| c == '0') || digits.chars().all(|c| c == 'f') {
        return None;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for b in uuid.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // 0 means "no host id" to ZFS.
    Some(hash.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_module_is_said_for_what_it_is() {
        // Secure Boot: kernel 6.12 under shim, a DKMS module signed by no enrolled key.
        let secure_boot = Signatures {
            secure_boot: Some(true),
            lockdown: "none [integrity] confidentiality\n".to_owned(),
        };
        let said = refusal(
            "modprobe: ERROR: could not insert 'zfs': Key was rejected by service\n",
            &secure_boot,
        );
        assert!(
            said.starts_with("the kernel refused the zfs module (modprobe: ERROR: could not insert 'zfs': Key was rejected by service): Secure Boot is on (the firmware's SecureBoot variable is set, the kernel is locked down), and this zfs module is not signed by a key this machine trusts. Either enrol"),
            "{said}"
        );
        assert!(said.contains("'mokutil --import /var/lib/dkms/mok.pub'"));
        assert!(said.contains("'zlive secure-boot --enroll' in the live system"));
        assert!(said.contains("or switch Secure Boot off"));
        assert!(said.contains("nothing on any disk was written"));
        // Lockdown refuses with EPERM; no EFI variable to read.
        let locked = Signatures {
            secure_boot: None,
            lockdown: "none [integrity] confidentiality".to_owned(),
        };
        let said = refusal("could not insert 'zfs': Operation not permitted", &locked);
        assert!(
            said.contains(": Secure Boot is on (the kernel is locked down), and"),
            "{said}"
        );
        // A signature refused with neither in sight (module.sig_enforce=1).
        let said = refusal(
            "could not insert 'zfs': Key was rejected by service",
            &Signatures::default(),
        );
        assert!(
            said.contains(": the kernel loads only modules signed by a key it trusts, and"),
            "{said}"
        );
        // Anything else (module_blacklist=zfs, a missing module) as modprobe said it.
        let plain = Signatures {
            secure_boot: Some(false),
            lockdown: "[none] integrity confidentiality".to_owned(),
        };
        assert_eq!(
            refusal("modprobe: ERROR: could not insert 'zfs': Operation not permitted", &plain),
            "the zfs module could not be loaded (modprobe: ERROR: could not insert 'zfs': Operation not permitted). Persistence on ZFS is off for this boot: no pool was imported or looked at, and nothing on any disk was written or changed."
        );
        let missing = refusal(
            "modprobe: FATAL: Module zfs not found in directory /lib/modules/6.12",
            &plain,
        );
        assert!(missing.starts_with("the zfs module could not be loaded (modprobe: FATAL"));
    }

    #[test]
    fn start_time_of_a_process() {
        let stat = "1 (sys temd) x) S 0 1 1 0 -1 4194560 1207 0 101 0 12 30 0 0 20 0 1 0 437 22196224 2851 18446744073709551615";
        assert_eq!(start_ticks(stat), Some(437));
        assert_eq!(start_ticks("1 (systemd) S 0 1"), None);
        assert_eq!(start_ticks("garbage"), None);
    }

    #[test]
    fn named_pools_wait_until_the_timeout_after_the_initrd_started() {
        let s = Duration::from_secs;
        assert_eq!(member_wait(s(20), s(6)), s(14));
        assert_eq!(member_wait(s(20), Duration::from_millis(19_500)), s(10));
        assert_eq!(member_wait(s(20), s(25)), s(10));
        assert_eq!(member_wait(s(3), s(25)), s(3));
        assert_eq!(member_wait(s(0), s(6)), s(0));
    }

    #[test]
    fn only_a_label_on_one_zvol_makes_its_pool_writable() {
        let zvol = |name: &str, label: &str| {
            (
                Dataset::parse(name).unwrap(),
                Probed {
                    device: format!("/dev/zvol/{name}"),
                    fs_type: Some("ext4".to_owned()),
                    label: Some(label.to_owned()),
                },
            )
        };
        let pools: Vec<String> = ["dpool", "bpool", "cpool", "epool"]
            .map(String::from)
            .to_vec();
        let wanted = ["persistence".to_owned(), "extra".to_owned()];
        let probed = [
            zvol("dpool/persistence", "persistence"),
            // A received backup of it, on another pool.
            zvol("bpool/backup/persistence", "persistence"),
            zvol("cpool/data", "extra"),
            zvol("epool/other", "something-else"),
        ];
        let got = fates(&pools, &wanted, &probed, false, false);
        assert_eq!(
            got,
            [
                (
                    "dpool".to_owned(),
                    Fate::Copies(vec!["persistence".to_owned()])
                ),
                (
                    "bpool".to_owned(),
                    Fate::Copies(vec!["persistence".to_owned()])
                ),
                ("cpool".to_owned(), Fate::ReadWrite),
                ("epool".to_owned(), Fate::LetGo),
            ]
        );
        let read_only = fates(&pools, &wanted, &probed[2..], true, false);
        assert_eq!(read_only[2].1, Fate::ReadOnly);
        assert_eq!(read_only[0].1, Fate::LetGo);
        // A LUKS container may hold the label: kept (read-only) when LUKS is allowed.
        let mut luks = probed[3].clone();
        luks.1.fs_type = Some("crypto_LUKS".to_owned());
        luks.1.label = None;
        assert_eq!(
            fates(
                &pools[3..],
                &wanted,
                std::slice::from_ref(&luks),
                false,
                true
            )[0]
            .1,
            Fate::Containers
        );
        assert_eq!(
            fates(&pools[3..], &wanted, &[luks], false, false)[0].1,
            Fate::LetGo
        );
    }

    #[test]
    fn host_ids_come_from_real_uuids_only() {
        let a = host_id_from_uuid("4C4C4544-0042-3510-8052-B4C04F4E4E32\n");
        assert_eq!(a, host_id_from_uuid("4c4c4544-0042-3510-8052-b4c04f4e4e32"));
        assert_ne!(a, host_id_from_uuid("4c4c4544-0042-3510-8052-b4c04f4e4e33"));
        assert!(a.is_some_and(|id| id != 0));
        for unset in [
            "",
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "junk",
        ] {
            assert_eq!(host_id_from_uuid(unset), None, "{unset}");
        }
    }
}
