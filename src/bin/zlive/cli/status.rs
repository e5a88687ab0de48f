//! `zlive status`: per volume and per entry, the unit, its state, what it mounts where, and
//! for failed ones the last journal messages about it. Works in the initrd (zlive's own units
//! are loaded there) and after switch-root (the entries are then plain mounts of the running
//! system, and the initrd's services survive only in the journal).
//!
//! Three steps: the facts come from a [`Facts`] (PID 1 and `journalctl` at run time, a record
//! in tests), [`rows`] decides what to show, and [`text`] or [`json`] prints it.

use crate::systemd::pid1::Pid1;
use crate::zfs::image_change;
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Command;
use zlive::conf::Mode;
use zlive::paths::{INITRD_RELEASE, SYSROOT};
use zlive::plan::{Import, Plan, PlannedEntry};
use zlive::units;

const UNIT: &str = "org.freedesktop.systemd1.Unit";
const MOUNT: &str = "org.freedesktop.systemd1.Mount";
/// Journal lines shown for a failed unit.
const LAST_LINES: &str = "5";

/// What PID 1 says about a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitInfo {
    pub load: String,
    pub active: String,
    pub sub: String,
    /// For mounts: `What=` and `Where=`.
    pub what: String,
    pub place: String,
}

/// Where status gets its facts.
pub trait Facts {
    /// The unit's state, loading it if needed (which does not start it); `None` when PID 1
    /// could not be asked.
    fn unit(&mut self, unit: &str) -> Option<UnitInfo>;
    /// The last journal lines of this boot for a match (`-u UNIT`, `FIELD=value`, `-t ID`).
    fn journal(&mut self, args: &[&str]) -> Vec<String>;
    /// The loaded units whose names match a glob.
    fn units_matching(&mut self, pattern: &str) -> Vec<String>;
    /// What the boot started from: the snapshots zlive took, rolled back to or booted.
    fn snapshots(&mut self) -> Vec<String>;
    /// Whether an encryption root's key is loaded now (ZFS's `keystatus`); `None` when ZFS
    /// cannot be asked.
    fn key_loaded(&mut self, root: &str) -> Option<bool>;
}

/// The running system: PID 1 over D-Bus, and `journalctl`.
struct Live(Pid1);

impl Live {
    fn string(&mut self, path: &str, interface: &str, name: &str) -> String {
        self.0
            .property(path, interface, name)
            .ok()
            .and_then(|v| String::try_from(v).ok())
            .unwrap_or_default()
    }
}

/// One line of `ListUnitsByPatterns`.
type UnitListing = (
    String,
    String,
    String,
    String,
    String,
    String,
    zbus::zvariant::OwnedObjectPath,
    u32,
    String,
    zbus::zvariant::OwnedObjectPath,
);

impl Facts for Live {
    fn key_loaded(&mut self, root: &str) -> Option<bool> {
        let lines = crate::exec::lines(Command::new("zfs").args([
            "get",
            "-H",
            "-o",
            "value",
            "keystatus",
            root,
        ]))
        .ok()?;
        Some(lines.first()? == "available")
    }

    fn snapshots(&mut self) -> Vec<String> {
        std::fs::read_to_string(crate::zfs::snapshots::STARTED)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn units_matching(&mut self, pattern: &str) -> Vec<String> {
        let no_states: Vec<&str> = Vec::new();
        self.0
            .manager::<_, Vec<UnitListing>>("ListUnitsByPatterns", &(no_states, vec![pattern]))
            .map(|units| units.into_iter().map(|u| u.0).collect())
            .unwrap_or_default()
    }

    fn unit(&mut self, unit: &str) -> Option<UnitInfo> {
        let path = self
            .0
            .unit_path(unit)
            .or_else(|_| {
                self.0
                    .manager::<_, zbus::zvariant::OwnedObjectPath>("LoadUnit", &(unit,))
            })
            .ok()?;
        let p = path.as_str().to_owned();
        let mut info = UnitInfo {
            load: self.string(&p, UNIT, "LoadState"),
            active: self.string(&p, UNIT, "ActiveState"),
            sub: self.string(&p, UNIT, "SubState"),
            ..UnitInfo::default()
        };
        if unit.ends_with(".mount") {
            info.what = self.string(&p, MOUNT, "What");
            info.place = self.string(&p, MOUNT, "Where");
        }
        Some(info)
    }

    fn journal(&mut self, args: &[&str]) -> Vec<String> {
        let out = Command::new("journalctl")
            .args(["-b", "--no-pager", "-o", "cat", "-n", LAST_LINES])
            .args(args)
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("-- "))
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What the row is about: a pool, a volume, an entry, the root.
    pub what: String,
    pub unit: String,
    pub state: String,
    pub sub: String,
    /// `WHAT -> WHERE` for mounts.
    pub mount: String,
    /// For failed rows: the last journal lines about the unit.
    pub messages: Vec<String>,
}

impl Row {
    fn failed(&self) -> bool {
        self.state == "failed"
    }
}

/// Where status runs: in the initrd or after switch-root, and what is mounted there.
#[derive(Debug, Clone)]
pub struct Context {
    pub initrd: bool,
    pub mounts: HashSet<String>,
}

/// After switch-root, what was mounted on /sysroot/X is mounted on /X.
fn live_path(path: &str, initrd: bool) -> String {
    if initrd {
        return path.to_owned();
    }
    match path.strip_prefix(SYSROOT) {
        Some("") => "/".to_owned(),
        Some(rest) => rest.to_owned(),
        None => path.to_owned(),
    }
}

fn unit_for_path(path: &str) -> String {
    units::mount(path).unwrap_or_else(|_| "-.mount".to_owned())
}

/// A row for a unit; a failed unit gets its journal lines (by unit, else by `journal_match`).
fn row(facts: &mut dyn Facts, what: String, unit: &str, journal_match: &[String]) -> Row {
    let (state, sub, mount) = match facts.unit(unit) {
        Some(info) => {
            let state = if info.load == "not-found" {
                "not-found".to_owned()
            } else {
                info.active
            };
            let mount = if info.what.is_empty() {
                String::new()
            } else {
                format!("{} -> {}", info.what, info.place)
            };
            (state, info.sub, mount)
        }
        None => ("unknown".to_owned(), String::new(), String::new()),
    };
    let mut r = Row {
        what,
        unit: unit.to_owned(),
        state,
        sub,
        mount,
        messages: Vec::new(),
    };
    if r.failed() {
        r.messages = facts.journal(&["-u", unit]);
        if r.messages.is_empty() && !journal_match.is_empty() {
            let args: Vec<&str> = journal_match.iter().map(String::as_str).collect();
            r.messages = facts.journal(&args);
        }
    }
    r
}

/// A mount that should be there and is not, after switch-root: a failure, with zlive's own
/// journal lines about it.
fn not_mounted(facts: &mut dyn Facts, r: &mut Row, fields: &[String]) {
    r.state = "failed".to_owned();
    r.sub = "not-mounted".to_owned();
    r.messages = zlive_lines(facts, fields);
}

fn zlive_lines(facts: &mut dyn Facts, fields: &[String]) -> Vec<String> {
    let mut args = vec!["-t", "zlive"];
    args.extend(fields.iter().map(String::as_str));
    facts.journal(&args)
}

/// The imports: all of them in the initrd; after switch-root only those that failed.
fn import_rows(facts: &mut dyn Facts, plan: &Plan, ctx: &Context, rows: &mut Vec<Row>) {
    for import in &plan.imports {
        let what = match import {
            Import::Named(p) => format!("pool {p}"),
            Import::Scan => "pools found by scanning".to_owned(),
        };
        let r = row(facts, what, &import.unit(), &[]);
        if ctx.initrd || r.failed() {
            rows.push(r);
        }
    }
}

/// ZFS encryption roots whose key zlive asked for, and LUKS containers: unlocked, or locked
/// with the reason. A key's state is ZFS's own where it can be asked (a passphrase skipped at
/// a bounded prompt leaves its unit done and the root locked).
fn lock_rows(facts: &mut dyn Facts, plan: &Plan, rows: &mut Vec<Row>) {
    let mut locks: Vec<(String, String, Option<String>)> = facts
        .units_matching(&units::load_key_glob())
        .into_iter()
        .filter_map(|unit| {
            let root = units::load_key_root(&unit)?;
            Some((format!("key of ZFS dataset {root}"), unit, Some(root)))
        })
        .collect();
    locks.extend(plan.luks.iter().map(|c| {
        (
            format!("LUKS container {}", c.dataset),
            c.unit.clone(),
            None,
        )
    }));
    for (what, unit, root) in locks {
        let mut r = row(facts, what, &unit, &[]);
        let loaded = root.and_then(|root| facts.key_loaded(&root));
        r.sub = match loaded.unwrap_or(r.state == "active") {
            true => "unlocked".to_owned(),
            false => "locked".to_owned(),
        };
        rows.push(r);
    }
}

/// Per volume: its device wait and fsck when they did not succeed, and its mount. A volume
/// that is not mounted although nothing failed was not found: a failure when it was named
/// (`persistence-zvol=`), only a notice ("absent") when a label search found nothing.
fn volume_rows(facts: &mut dyn Facts, plan: &Plan, ctx: &Context, rows: &mut Vec<Row>) {
    for v in &plan.volumes {
        let name = v.describe();
        let fields = vec![format!("ZLIVE_VOLUME={name}")];
        let wait = row(
            facts,
            format!("volume {name}: device"),
            &v.wait_unit(),
            &fields,
        );
        let mut failure = wait.failed();
        if failure || (ctx.initrd && wait.state != "active") {
            rows.push(wait);
        }
        if let Some(fsck) = v.fsck_unit().filter(|_| !plan.cmdline.read_only) {
            let fsck = row(facts, format!("volume {name}: fsck"), &fsck, &fields);
            if fsck.failed() {
                failure = true;
                rows.push(fsck);
            }
        }
        let mut r = row(facts, format!("volume {name}"), &v.mount_unit, &fields);
        let mounted = match ctx.initrd {
            true => r.state == "active",
            false => ctx.mounts.contains(&v.mount_point),
        };
        if !mounted && !r.failed() {
            if failure || v.required() {
                not_mounted(facts, &mut r, &fields);
            } else {
                r.state = "absent".to_owned();
                r.sub = "not-found".to_owned();
                r.messages = zlive_lines(facts, &fields);
            }
        }
        rows.push(r);
    }
}

fn entry_rows(facts: &mut dyn Facts, plan: &Plan, e: &PlannedEntry, initrd: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let volume = plan.volumes[e.volume].describe();
    let what = format!("{} ({}) from {volume}", e.entry.dir, e.entry.mode);
    let fields = vec![format!("ZLIVE_ENTRY={}", e.entry.dir)];
    let unit = if e.entry.mode == Mode::Link || initrd {
        e.unit.clone()
    } else {
        unit_for_path(&live_path(&e.dest, initrd))
    };
    if initrd {
        if let Some(prepare) = &e.prepare_unit {
            let r = row(facts, format!("{what}: prepare"), prepare, &fields);
            if r.failed() {
                rows.push(r);
            }
        }
    }
    let mut r = row(facts, what, &unit, &fields);
    if !initrd && e.entry.mode != Mode::Link && r.state != "active" {
        not_mounted(facts, &mut r, &fields);
    }
    rows.push(r);
    rows
}

/// Every row of the report, in the order a boot goes: pools, volumes, the reload, the root,
/// the entries.
pub fn rows(facts: &mut dyn Facts, plan: &Plan, ctx: &Context) -> Vec<Row> {
    let mut rows = Vec::new();
    import_rows(facts, plan, ctx, &mut rows);
    lock_rows(facts, plan, &mut rows);
    volume_rows(facts, plan, ctx, &mut rows);
    for line in facts.snapshots() {
        rows.push(Row {
            what: line,
            unit: "-".to_owned(),
            state: "snapshot".to_owned(),
            sub: String::new(),
            mount: String::new(),
            messages: Vec::new(),
        });
    }
    if ctx.initrd && plan.persistence {
        let what = "persistence.conf (second generator pass)".to_owned();
        rows.push(row(facts, what, units::RELOAD, &[]));
    }
    let root = unit_for_path(&live_path(SYSROOT, ctx.initrd));
    let mut r = row(facts, "live root".to_owned(), &root, &[]);
    if let Some(why) = &plan.root.fallback {
        // Mounted, but in RAM although `/ union` asked for the volume.
        r.state = "failed".to_owned();
        r.sub = "in-ram".to_owned();
        r.messages = vec![format!(
            "/ union could not be prepared on its volume: {why}"
        )];
    }
    rows.push(r);
    for e in plan.entries.iter().filter(|e| e.entry.dir != "/") {
        rows.extend(entry_rows(facts, plan, e, ctx.initrd));
    }
    rows
}

/// The report as `zlive status --json` prints it.
pub fn json(plan: &Plan, rows: &[Row], initrd: bool) -> Value {
    json!({
        "initrd": initrd,
        "persistence": plan.persistence,
        "failed": rows.iter().any(Row::failed),
        "units": rows.iter().map(|r| json!({
            "what": r.what, "unit": r.unit, "state": r.state, "sub": r.sub,
            "mount": r.mount, "messages": r.messages,
        })).collect::<Vec<Value>>(),
        "rejected": crate::cli::plan::rejections_json(plan),
    })
}

/// The report as `zlive status` prints it.
pub fn text(plan: &Plan, rows: &[Row], initrd: bool) -> String {
    let mut out = format!(
        "zlive: {} ({}), persistence {}\n",
        if initrd {
            "in the initrd"
        } else {
            "after switch-root"
        },
        if rows.iter().any(Row::failed) {
            "something failed"
        } else {
            "no failures"
        },
        if plan.persistence { "requested" } else { "off" }
    );
    for r in rows {
        let state = if r.sub.is_empty() {
            r.state.clone()
        } else {
            format!("{}/{}", r.state, r.sub)
        };
        out.push_str(&format!("  {:<10} {:<48} {}\n", state, r.unit, r.what));
        if !r.mount.is_empty() {
            out.push_str(&format!("  {:<10} {}\n", "", r.mount));
        }
        for m in &r.messages {
            out.push_str(&format!("  {:<10}   | {m}\n", ""));
        }
    }
    for r in &plan.rejected {
        out.push_str(&format!("  refused    {r}\n"));
    }
    out
}

/// The kernel releases whose module trees the live system has (below /sysroot in the
/// initrd) and the image does not, newer than the running kernel: installed in persistence.
fn newer_kernels(initrd: bool) -> Vec<String> {
    let trees = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let live = match initrd {
        true => format!("{SYSROOT}/usr/lib/modules"),
        false => "/usr/lib/modules".to_owned(),
    };
    let image = zlive::paths::in_image("/usr/lib/modules");
    let Ok(running) = nix::sys::utsname::uname() else {
        return Vec::new();
    };
    zlive::image::newer_kernels(
        &running.release().to_string_lossy(),
        &trees(&live),
        &trees(&image),
    )
}

/// What `zlive status` says about kernels installed in persistence.
fn kernels_text(kernels: &[String]) -> String {
    kernels
        .iter()
        .map(|k| {
            format!(
                "  kernel     persistence holds kernel {k}, newer than the running one: it never boots (the firmware loads the medium's kernel). Make a new image with it (README: Use it on your own live image), or remove its package\n"
            )
        })
        .collect()
}

/// This boot's persistence volumes and their newest backup (time, age in days), from the
/// bookmarks `zlive backup` leaves: the reminder to back up.
fn backups() -> Vec<(String, Option<(String, u64)>)> {
    let now = crate::zfs::snapshots::now();
    std::fs::read_to_string(crate::zfs::snapshots::DATASETS)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, d)| d.to_owned()))
        .map(|dataset| {
            let bookmarks = crate::exec::lines(std::process::Command::new("zfs").args([
                "list", "-H", "-t", "bookmark", "-d", "1", "-o", "name", &dataset,
            ]))
            .unwrap_or_default();
            let newest = zlive::backup_plan::newest_backup(&bookmarks, now);
            (dataset, newest)
        })
        .collect()
}

/// `zlive status [--json]`: prints the report; `Ok(false)` when something failed.
pub fn status(plan: &Plan, as_json: bool) -> Result<bool> {
    let ctx = Context {
        initrd: std::path::Path::new(INITRD_RELEASE).exists(),
        mounts: zlive::world::mount_points(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        ),
    };
    let mut facts = Live(Pid1::connect()?);
    let rows = rows(&mut facts, plan, &ctx);
    let changes = image_change::changes();
    let kernels = newer_kernels(ctx.initrd);
    let backups = match ctx.initrd {
        true => Vec::new(),
        false => backups(),
    };
    if as_json {
        let mut report = json(plan, &rows, ctx.initrd);
        report["image_changes"] = changes
            .iter()
            .map(|c| {
                json!({
                    "volume": c.volume, "old": c.old, "new": c.new,
                    "snapshot": c.snapshot, "choice": c.choice,
                    "entries_over_the_image": image_change::entries_over_the_image(plan, &c.volume),
                })
            })
            .collect();
        report["newer_kernels"] = json!(kernels);
        report["backups"] = backups
            .iter()
            .map(|(volume, newest)| {
                json!({
                    "volume": volume,
                    "newest": newest.as_ref().map(|n| &n.0),
                    "days": newest.as_ref().map(|n| n.1),
                })
            })
            .collect();
        println!("{report}");
    } else {
        print!("{}", text(plan, &rows, ctx.initrd));
        let over = |volume: &str| image_change::entries_over_the_image(plan, volume);
        print!("{}", image_change::status_text(&changes, over));
        print!("{}", kernels_text(&kernels));
        for (volume, newest) in &backups {
            let said = zlive::backup_plan::backup_reminder(volume, newest.as_ref());
            println!("  backup     {said}");
        }
    }
    Ok(!rows.iter().any(Row::failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zlive::paths::PERSISTENCE_DIR;
    use zlive::world::GivenWorld;

    /// Facts recorded beforehand: unit states by name, journal lines by match.
    #[derive(Default)]
    struct Recorded {
        units: HashMap<String, UnitInfo>,
        journal: HashMap<String, Vec<String>>,
        asked: Vec<String>,
        /// Encryption roots and whether their key is loaded.
        keys: HashMap<String, bool>,
    }

    impl Recorded {
        fn unit(mut self, name: &str, active: &str, sub: &str) -> Self {
            let info = UnitInfo {
                load: "loaded".into(),
                active: active.into(),
                sub: sub.into(),
                ..UnitInfo::default()
            };
            self.units.insert(name.into(), info);
            self
        }
        fn lines(mut self, key: &str, lines: &[&str]) -> Self {
            let lines = lines.iter().map(|l| l.to_string()).collect();
            self.journal.insert(key.into(), lines);
            self
        }
    }

    impl Facts for Recorded {
        fn unit(&mut self, unit: &str) -> Option<UnitInfo> {
            self.asked.push(unit.to_owned());
            Some(self.units.get(unit).cloned().unwrap_or(UnitInfo {
                load: "not-found".into(),
                active: "inactive".into(),
                sub: "dead".into(),
                ..UnitInfo::default()
            }))
        }
        fn journal(&mut self, args: &[&str]) -> Vec<String> {
            self.journal
                .get(&args.join(" "))
                .cloned()
                .unwrap_or_default()
        }
        fn snapshots(&mut self) -> Vec<String> {
            self.journal.get("snapshots").cloned().unwrap_or_default()
        }
        fn key_loaded(&mut self, root: &str) -> Option<bool> {
            self.keys.get(root).copied()
        }
        fn units_matching(&mut self, pattern: &str) -> Vec<String> {
            let prefix = pattern.trim_end_matches("*.service");
            let mut found: Vec<String> = self
                .units
                .keys()
                .filter(|u| u.starts_with(prefix))
                .cloned()
                .collect();
            found.sort();
            found
        }
    }

    fn seed_plan(conf: &str) -> Plan {
        let cmd = zlive::cmdline::parse("boot=live persistence persistence-zpool=dpool");
        let mount = format!("{PERSISTENCE_DIR}/persistence");
        let world = GivenWorld::with_confs(vec![(mount, conf.as_bytes().to_vec())]);
        zlive::plan::plan(&cmd, &world)
    }

    fn initrd() -> Context {
        Context {
            initrd: true,
            mounts: HashSet::new(),
        }
    }

    #[test]
    fn all_active_in_the_initrd() {
        let plan = seed_plan("/home/user union\n");
        let mut facts = Recorded::default()
            .lines(
                "snapshots",
                &["dpool/persistence took dpool/persistence@zlive-20261126T235959Z"],
            )
            .unit("zlive-import@dpool.service", "active", "exited")
            .unit("zlive-volume@persistence.service", "active", "exited")
            .unit(
                "run-live-persistence-persistence.mount",
                "active",
                "mounted",
            )
            .unit(units::RELOAD, "active", "exited")
            .unit("sysroot.mount", "active", "mounted")
            .unit("sysroot-home-user.mount", "active", "mounted")
            .unit(
                "zlive-prepare@sysroot-home-user.service",
                "active",
                "exited",
            );
        let rows = rows(&mut facts, &plan, &initrd());
        let units: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
        assert_eq!(
            units,
            [
                "zlive-import@dpool.service",
                "run-live-persistence-persistence.mount",
                "-",
                units::RELOAD,
                "sysroot.mount",
                "sysroot-home-user.mount"
            ]
        );
        let shown = text(&plan, &rows, true);
        assert!(shown.starts_with("zlive: in the initrd (no failures), persistence requested\n"));
        assert!(
            shown.contains("active/mounted sysroot-home-user.mount"),
            "{shown}"
        );
        assert!(
            shown.contains("snapshot   -")
                && shown.contains("took dpool/persistence@zlive-20261126T235959Z"),
            "{shown}"
        );
        assert_eq!(json(&plan, &rows, true)["failed"], false);
    }

    #[test]
    fn a_failed_volume_shows_its_journal() {
        let plan = seed_plan("");
        let wait = "zlive-volume@persistence.service";
        let mut facts = Recorded::default()
            .unit("zlive-import@dpool.service", "active", "exited")
            .unit(wait, "failed", "failed")
            .lines(&format!("-u {wait}"), &["did not appear within 15 s"]);
        let rows = rows(&mut facts, &plan, &initrd());
        let failed = rows.iter().find(|r| r.unit == wait).expect("the wait row");
        assert_eq!(failed.messages, ["did not appear within 15 s"]);
        let shown = text(&plan, &rows, true);
        assert!(shown.contains("(something failed)"), "{shown}");
        assert!(shown.contains("| did not appear within 15 s"), "{shown}");
        let value = json(&plan, &rows, true);
        assert_eq!(value["failed"], true);
        assert_eq!(value["units"][1]["state"], "failed");
    }

    /// After switch-root an entry is a plain mount of the live system; a volume whose fsck
    /// failed is not mounted, a failure explained by zlive's own journal lines.
    #[test]
    fn after_switch_root() {
        let plan = seed_plan("/home/user union\n/etc/x bind\nbogus\n");
        let mut facts = Recorded::default()
            .unit("-.mount", "active", "mounted")
            .unit("home-user.mount", "active", "mounted")
            .unit("zlive-import@dpool.service", "active", "exited")
            .unit(
                "systemd-fsck@dev-disk-by\\x2dlabel-persistence.service",
                "failed",
                "failed",
            )
            .lines("-t zlive ZLIVE_VOLUME=LABEL=persistence", &["fsck failed"]);
        let ctx = Context {
            initrd: false,
            mounts: HashSet::new(),
        };
        let rows = rows(&mut facts, &plan, &ctx);
        let units: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
        assert_eq!(
            units,
            [
                "systemd-fsck@dev-disk-by\\x2dlabel-persistence.service",
                "run-live-persistence-persistence.mount",
                "-.mount",
                "home-user.mount",
                "etc-x.mount"
            ]
        );
        let volume = &rows[1];
        assert_eq!(
            (volume.state.as_str(), volume.sub.as_str()),
            ("failed", "not-mounted")
        );
        assert_eq!(volume.messages, ["fsck failed"]);
        let shown = text(&plan, &rows, false);
        assert!(
            shown.starts_with("zlive: after switch-root (something failed)"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "refused    /run/live/persistence/persistence/persistence.conf:3: ignoring 'bogus'"
            ),
            "{shown}"
        );
        assert_eq!(json(&plan, &rows, false)["rejected"][0]["line"], 3);
    }

    /// Encryption roots and LUKS containers show whether they are unlocked.
    #[test]
    fn locks_show_as_unlocked_or_locked() {
        let cmd = zlive::cmdline::parse(
            "boot=live persistence persistence-encryption=luks persistence-zvol=dpool/secret",
        );
        let plan = zlive::plan::plan(&cmd, &GivenWorld::with_confs(Vec::new()));
        let mut facts = Recorded::default()
            .unit("zlive-load-key@dpool-keys.service", "failed", "failed")
            .unit(
                "zlive-load-key@tank-live\\x2ddata.service",
                "active",
                "exited",
            )
            .unit(
                "zlive-load-key@tank-my\\x20data.service",
                "active",
                "exited",
            )
            .unit(
                "systemd-cryptsetup@zlive\\x2ddpool\\x2dsecret.service",
                "active",
                "exited",
            );
        facts.keys.insert("tank/live-data".into(), true);
        // Skipped at a bounded prompt: the unit is done, the key is not loaded.
        facts.keys.insert("tank/my data".into(), false);
        let rows = rows(&mut facts, &plan, &initrd());
        let shown = text(&plan, &rows, true);
        assert!(
            shown.contains("failed/locked") && shown.contains("key of ZFS dataset dpool/keys"),
            "{shown}"
        );
        let line = |what: &str| {
            shown
                .lines()
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("no {what} in {shown}"))
                .to_owned()
        };
        assert!(
            line("key of ZFS dataset tank/live-data").contains("active/unlocked"),
            "{shown}"
        );
        assert!(
            line("key of ZFS dataset tank/my data").contains("active/locked"),
            "{shown}"
        );
        assert!(
            shown.contains("active/unlocked") && shown.contains("LUKS container dpool/secret"),
            "{shown}"
        );
        assert!(shown.contains("(something failed)"), "{shown}");
    }

    /// A label search that found nothing is a notice: no failure, the reason shown. A volume
    /// named with persistence-zvol= that is not there is a failure.
    #[test]
    fn a_missing_volume_fails_only_when_it_was_named() {
        let story =
            "persistence volume LABEL=persistence (/dev/disk/by-label/persistence) did not appear";
        let ctx = Context {
            initrd: false,
            mounts: HashSet::new(),
        };
        let plan = seed_plan("");
        let mut facts = Recorded::default()
            .unit("zlive-volume@persistence.service", "active", "exited")
            .unit("-.mount", "active", "mounted")
            .lines("-t zlive ZLIVE_VOLUME=LABEL=persistence", &[story]);
        let rows = super::rows(&mut facts, &plan, &ctx);
        assert_eq!(
            (rows[0].state.as_str(), rows[0].sub.as_str()),
            ("absent", "not-found")
        );
        assert!(!rows.iter().any(Row::failed), "{rows:?}");
        let shown = text(&plan, &rows, false);
        assert!(
            shown.contains("(no failures)") && shown.contains(story),
            "{shown}"
        );

        let cmd = zlive::cmdline::parse("boot=live persistence persistence-zvol=dpool/gone");
        let plan = zlive::plan::plan(&cmd, &GivenWorld::with_confs(Vec::new()));
        let mut facts = Recorded::default()
            .unit("zlive-import@dpool.service", "active", "exited")
            .unit("zlive-volume@gone.service", "failed", "failed");
        let rows = super::rows(&mut facts, &plan, &ctx);
        assert!(rows
            .iter()
            .any(|r| r.unit == "zlive-volume@gone.service" && r.failed()));
        assert_eq!(json(&plan, &rows, false)["failed"], true);
    }
}
