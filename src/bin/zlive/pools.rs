//! `zlive import POOL | --scan`: the host id, then the pools. A pool named on the command
//! line is imported forced (a live system's host id changes from machine to machine); a scan
//! imports every pool it finds read-only, and only those that hold a persistence volume
//! read-write. Read-only persistence makes sure every pool it uses is imported read-only.

use crate::exec::{self, run};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use zlive::plan::{Import, Plan, VolumeKind};

/// How long a scan keeps looking for a first pool (a disk that is late).
const SCAN_WAIT: Duration = Duration::from_secs(10);
/// The least a named pool's import looks for its disks, however late it starts.
const MIN_POOL_WAIT: Duration = Duration::from_secs(5);
/// How often an import is tried again while its disks are not all there.
const RETRY: Duration = Duration::from_millis(250);
/// How long a freshly imported pool's zvols may take to appear.
const ZVOL_WAIT: Duration = Duration::from_secs(5);
/// How long an export may stay busy (udev still probing the zvols).
const EXPORT_WAIT: Duration = Duration::from_secs(10);

/// `zlive load-zfs`: load the ZFS module at the start of the initrd, in parallel with udev's
/// coldplug and the medium, rather than inside the first `zpool` call after them.
pub fn load_module() -> Result<()> {
    let started = Instant::now();
    let (ok, text) = run(Command::new("modprobe").arg("zfs"))?;
    if !ok {
        bail!("modprobe zfs failed: {}", text.replace('\n', " "));
    }
    info!(
        "loaded the zfs module in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Pools zlive imported or took over in this boot, one per line: the exitrd exports them at
/// shutdown, and is only prepared when there is one.
pub const IMPORTED: &str = "/run/zlive/imported";

pub fn import(plan: &Plan, pool: Option<&str>) -> Result<()> {
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

fn options(read_only: bool) -> Vec<&'static str> {
    let mut o = vec!["-N", "-o", "cachefile=none"];
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
    let deadline = member_deadline(plan.pool_timeout, started);
    let mut attempts = 0;
    let last = loop {
        // udev's link for a ZFS member device names its pool: no import is tried before a
        // disk of the pool is there, and one is tried as soon as it is.
        wait_for_member(pool, deadline);
        attempts += 1;
        let attempt_started = Instant::now();
        let (ok, text) = run(Command::new("zpool")
            .arg("import")
            .args(options(plan.import_read_only()))
            .arg("-f")
            .arg(pool))?;
        if ok {
            let ro = if plan.import_read_only() {
                ", read-only"
            } else {
                ""
            };
            info!(
                ZLIVE_POOL = pool,
                "imported pool {pool} (forced{ro}) after {attempts} attempt(s), {:.1} s, of which the last zpool import took {:.1} s",
                started.elapsed().as_secs_f64(),
                attempt_started.elapsed().as_secs_f64()
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
        if Instant::now() >= deadline {
            break text;
        }
        // Some of its disks are there, not all (or not yet probed): try again shortly.
        sleep(RETRY);
    };
    error!(
        ZLIVE_POOL = pool,
        "pool {pool} could not be imported within {} s of the initrd's start (persistence-zpool-timeout=; {attempts} attempt(s) in {:.1} s): {}. Persistence on this pool is off for this boot; nothing was written to it. 'zpool import' lists the pools this system can see.",
        plan.pool_timeout,
        started.elapsed().as_secs_f64(),
        last.replace('\n', " ")
    );
    bail!("pool {pool} not imported")
}

/// When a named pool's disks stop being waited for: see [`member_wait`].
fn member_deadline(timeout: u32, now: Instant) -> Instant {
    now + member_wait(
        Duration::from_secs(u64::from(timeout)),
        since_initrd_start(),
    )
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
/// udev makes for ZFS members), or the deadline.
fn wait_for_member(pool: &str, deadline: Instant) {
    let Ok(link) = zlive::names::device_from_spec(&format!("LABEL={pool}")) else {
        return;
    };
    while !Path::new(&link).exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
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
    let started = Instant::now();
    loop {
        let (ok, text) = run(Command::new("zpool").args(["export", pool]))?;
        if ok {
            break;
        }
        if started.elapsed() >= EXPORT_WAIT {
            error!(ZLIVE_POOL = pool, "pool {pool} cannot be exported to import it again ({}); persistence on it is off for this boot", text.replace('\n', " "));
            bail!("pool {pool} is busy");
        }
        sleep(Duration::from_millis(250));
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
fn member_devices(pool: &str) -> Vec<String> {
    let (ok, text) = run(Command::new("zpool").args(["status", "-P", pool])).unwrap_or_default();
    if !ok {
        return Vec::new();
    }
    vdev_paths(&text)
}

/// The `/dev/…` vdev paths of a `zpool status -P` listing.
fn vdev_paths(status: &str) -> Vec<String> {
    status
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("/dev/"))
        .map(str::to_owned)
        .collect()
}

fn import_scan(plan: &Plan) -> Result<()> {
    let before = imported_pools()?;
    // Pools OpenZFS's own units imported read-write, under read-only persistence.
    for pool in &before {
        keep_read_only(plan, pool)?;
    }
    let started = Instant::now();
    loop {
        let labelled_before = labelled_disks();
        // Read-only first: a scan also finds backups and other systems' pools, which a
        // read-write import would change. Only the pools with a persistence volume get
        // read-write below.
        let (ok, text) = run(Command::new("zpool")
            .arg("import")
            .arg("-a")
            .args(options(true)))?;
        if !ok && !text.is_empty() {
            warn!("zpool import -a: {}", text.replace('\n', " "));
        }
        let missing = plan.volumes.iter().any(|v| !Path::new(&v.device).exists());
        if !missing || started.elapsed() >= SCAN_WAIT {
            break;
        }
        // Again when udev has probed another labelled disk (a late USB stick), not on a timer.
        while labelled_disks() == labelled_before && started.elapsed() < SCAN_WAIT {
            sleep(Duration::from_millis(50));
        }
    }
    let scanned: Vec<String> = imported_pools()?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    settle_scanned(plan, &scanned)?;
    let all = imported_pools()?;
    info!(
        "pools imported: {}",
        if all.is_empty() {
            "none".to_owned()
        } else {
            all.join(", ")
        }
    );
    // Pools a scan leaves alone: say which and why, so the user can name them.
    let (_, listing) = run(Command::new("zpool").arg("import"))?;
    for (pool, status) in left_alone(&listing) {
        warn!(
            ZLIVE_POOL = pool.as_str(),
            "pool {pool} was found but not imported: {status} Pools found by scanning are never forced; add persistence-zpool={pool} to the kernel command line to import it with -f."
        );
    }
    Ok(())
}

/// The pools a scan imported read-only: those holding a volume with a persistence label
/// are imported again read-write (unless persistence is read-only); the others stay
/// read-only, untouched.
fn settle_scanned(plan: &Plan, scanned: &[String]) -> Result<()> {
    let labels: Vec<String> = plan
        .volumes
        .iter()
        .filter_map(|v| match &v.kind {
            VolumeKind::Label(l) => Some(l.clone()),
            VolumeKind::Zvol(_) => None,
        })
        .collect();
    for pool in scanned {
        let zvols = exec::lines(
            Command::new("zfs").args(["list", "-H", "-r", "-t", "volume", "-o", "name", pool]),
        )
        .unwrap_or_default();
        let holds = zvols.iter().any(|z| carries_a_label(z, &labels));
        if holds && !plan.import_read_only() {
            reimport(pool, false, false)?;
            info!(
                ZLIVE_POOL = pool.as_str(),
                "pool {pool} holds a persistence volume: imported read-write"
            );
        } else if holds {
            info!(ZLIVE_POOL = pool.as_str(), "pool {pool} holds a persistence volume: imported read-only (persistence-read-only)");
        } else {
            info!(ZLIVE_POOL = pool.as_str(), "pool {pool} holds no persistence volume: imported read-only, nothing is written to it");
        }
    }
    Ok(())
}

/// Whether zvol `dataset` (waited for, bounded) has a file system with one of `labels`.
fn carries_a_label(dataset: &str, labels: &[String]) -> bool {
    let device = format!("/dev/zvol/{dataset}");
    let started = Instant::now();
    while !Path::new(&device).exists() && started.elapsed() < ZVOL_WAIT {
        sleep(Duration::from_millis(100));
    }
    let label = exec::probe(&device, "LABEL");
    label.is_some_and(|l| labels.contains(&l))
}

fn imported_pools() -> Result<Vec<String>> {
    let (_, text) = run(Command::new("zpool").args(["list", "-H", "-o", "name"]))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("no pools"))
        .map(str::to_owned)
        .collect())
}

/// Pools listed by `zpool import` (those that were not imported), with their status line.
pub fn left_alone(listing: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("pool: ") {
            out.push((name.trim().to_owned(), String::new()));
        } else if let Some(status) = line.strip_prefix("status: ") {
            if let Some(last) = out.last_mut() {
                last.1 = status.trim().to_owned();
            }
        }
    }
    out
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
        assert_eq!(member_wait(s(20), Duration::from_millis(19_500)), s(5));
        assert_eq!(member_wait(s(20), s(25)), s(5));
        assert_eq!(member_wait(s(3), s(25)), s(3));
        assert_eq!(member_wait(s(0), s(6)), s(0));
    }

    #[test]
    fn vdev_paths_from_zpool_status() {
        let status = "  pool: dpool\n state: ONLINE\nconfig:\n\n\tNAME          STATE     READ WRITE CKSUM\n\tdpool         ONLINE       0     0     0\n\t  mirror-0    ONLINE       0     0     0\n\t    /dev/vda9 ONLINE       0     0     0\n\t    /dev/disk/by-id/usb-x-part1  ONLINE  0 0 0\n\tlogs\n\t  /dev/vdc    ONLINE       0     0     0\n\nerrors: No known data errors\n";
        assert_eq!(
            vdev_paths(status),
            ["/dev/vda9", "/dev/disk/by-id/usb-x-part1", "/dev/vdc"]
        );
        assert!(vdev_paths("no pools available\n").is_empty());
    }

    #[test]
    fn left_alone_pools() {
        let listing = "   pool: dpool\n     id: 1\n  state: ONLINE\n status: The pool was last accessed by another system.\n action: ...\n\n   pool: other\n  state: ONLINE\n";
        let pools = left_alone(listing);
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].0, "dpool");
        assert!(pools[0].1.contains("another system"));
        assert_eq!(pools[1].1, "");
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
