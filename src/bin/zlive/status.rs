//! `zlive status`: per volume and per entry, the unit, its state, what it mounts where, and
//! for failed ones the last journal messages about it. Works in the initrd (zlive's own units
//! are loaded there) and after switch-root (the entries are then plain mounts of the running
//! system, and the initrd's services survive only in the journal).

use crate::pid1::Pid1;
use anyhow::Result;
use serde_json::{json, Value};
use std::process::Command;
use zlive::plan::{Plan, PlannedEntry, SYSROOT};

const UNIT: &str = "org.freedesktop.systemd1.Unit";
const MOUNT: &str = "org.freedesktop.systemd1.Mount";
/// Journal lines shown for a failed unit.
const LAST_LINES: &str = "5";

#[derive(Debug)]
struct Row {
    /// What the row is about: a pool, a volume, an entry, the root.
    what: String,
    unit: String,
    state: String,
    sub: String,
    /// `WHAT -> WHERE` for mounts.
    mount: String,
    /// For failed rows: the last journal lines about the unit.
    messages: Vec<String>,
}

impl Row {
    fn failed(&self) -> bool {
        self.state == "failed"
    }
}

/// Whether this process runs in the initrd.
fn in_initrd() -> bool {
    std::path::Path::new("/etc/initrd-release").exists()
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
    zlive::escape::unit_name_from_path(path, ".mount").unwrap_or_else(|_| "-.mount".to_owned())
}

fn string_property(pid1: &mut Pid1, path: &str, interface: &str, name: &str) -> String {
    pid1.property(path, interface, name)
        .ok()
        .and_then(|v| String::try_from(v).ok())
        .unwrap_or_default()
}

/// Ask PID 1 about a unit (loading it if needed, which does not start it).
fn row(pid1: &mut Pid1, what: String, unit: &str, journal_match: &[String]) -> Row {
    let path = pid1
        .unit_path(unit)
        .or_else(|_| pid1.manager::<_, zbus::zvariant::OwnedObjectPath>("LoadUnit", &(unit,)));
    let (state, sub, mount) = match path {
        Ok(p) => {
            let p = p.as_str().to_owned();
            let load = string_property(pid1, &p, UNIT, "LoadState");
            let state = if load == "not-found" {
                "not-found".to_owned()
            } else {
                string_property(pid1, &p, UNIT, "ActiveState")
            };
            let sub = string_property(pid1, &p, UNIT, "SubState");
            let mount = if unit.ends_with(".mount") {
                let what = string_property(pid1, &p, MOUNT, "What");
                let place = string_property(pid1, &p, MOUNT, "Where");
                if what.is_empty() {
                    String::new()
                } else {
                    format!("{what} -> {place}")
                }
            } else {
                String::new()
            };
            (state, sub, mount)
        }
        Err(_) => ("unknown".to_owned(), String::new(), String::new()),
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
        r.messages = journal(&[&["-u", unit][..]].concat());
        if r.messages.is_empty() && !journal_match.is_empty() {
            let args: Vec<&str> = journal_match.iter().map(String::as_str).collect();
            r.messages = journal(&args);
        }
    }
    r
}

/// The last lines of the journal for a match (`-u UNIT` or `FIELD=value`).
fn journal(args: &[&str]) -> Vec<String> {
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

fn entry_rows(pid1: &mut Pid1, plan: &Plan, e: &PlannedEntry, initrd: bool, rows: &mut Vec<Row>) {
    let volume = plan.volumes[e.volume].describe();
    let what = format!("{} ({}) from {volume}", e.entry.dir, e.entry.mode);
    let fields = vec![format!("ZLIVE_ENTRY={}", e.entry.dir)];
    let unit = if e.entry.mode == zlive::conf::Mode::Link || initrd {
        e.unit.clone()
    } else {
        unit_for_path(&live_path(&e.dest, initrd))
    };
    if initrd {
        if let Some(prepare) = &e.prepare_unit {
            let r = row(pid1, format!("{what}: prepare"), prepare, &fields);
            if r.failed() {
                rows.push(r);
            }
        }
    }
    let mut r = row(pid1, what, &unit, &fields);
    if !initrd && e.entry.mode != zlive::conf::Mode::Link && r.state != "active" {
        not_mounted(&mut r, &fields);
    }
    rows.push(r);
}

/// A mount that should be there and is not, after switch-root.
fn not_mounted(r: &mut Row, fields: &[String]) {
    r.state = "failed".to_owned();
    r.sub = "not-mounted".to_owned();
    let mut args = vec!["-t", "zlive"];
    args.extend(fields.iter().map(String::as_str));
    r.messages = journal(&args);
}

pub fn status(plan: &Plan, as_json: bool) -> Result<bool> {
    let initrd = in_initrd();
    let mounts = zlive::world::mount_points(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    let mut pid1 = Pid1::connect()?;
    let mut rows: Vec<Row> = Vec::new();
    if initrd {
        for import in &plan.imports {
            let unit = import.unit();
            let what = match import {
                zlive::plan::Import::Named(p) => format!("pool {p}"),
                zlive::plan::Import::Scan => "pools found by scanning".to_owned(),
            };
            rows.push(row(&mut pid1, what, &unit, &[]));
        }
    }
    for v in &plan.volumes {
        let fields = vec![format!("ZLIVE_VOLUME={}", v.describe())];
        if initrd {
            let r = row(
                &mut pid1,
                format!("volume {}: device", v.describe()),
                &v.wait_unit(),
                &fields,
            );
            if r.state != "active" {
                rows.push(r);
            }
            if !plan.read_only {
                let r = row(
                    &mut pid1,
                    format!("volume {}: fsck", v.describe()),
                    &v.fsck_unit(),
                    &fields,
                );
                if r.failed() {
                    rows.push(r);
                }
            }
        }
        let mut r = row(
            &mut pid1,
            format!("volume {}", v.describe()),
            &v.mount_unit,
            &fields,
        );
        if !initrd && !mounts.contains(&v.mount_point) {
            // After switch-root the initrd's units are gone; what is left is whether the
            // volume is mounted, and the journal of what happened to it.
            not_mounted(&mut r, &fields);
        }
        rows.push(r);
    }
    if initrd && plan.persistence {
        rows.push(row(
            &mut pid1,
            "persistence.conf (second generator pass)".to_owned(),
            "zlive-reload.service",
            &[],
        ));
    }
    let root = unit_for_path(&live_path(SYSROOT, initrd));
    rows.push(row(&mut pid1, "live root".to_owned(), &root, &[]));
    for e in plan.entries.iter().filter(|e| e.entry.dir != "/") {
        entry_rows(&mut pid1, plan, e, initrd, &mut rows);
    }
    let failed = rows.iter().any(Row::failed);

    if as_json {
        let value = json!({
            "initrd": initrd,
            "persistence": plan.persistence,
            "failed": failed,
            "units": rows.iter().map(|r| json!({
                "what": r.what, "unit": r.unit, "state": r.state, "sub": r.sub,
                "mount": r.mount, "messages": r.messages,
            })).collect::<Vec<Value>>(),
            "rejected": plan.rejected.iter().map(|r| json!({"file": r.file, "line": r.line, "text": r.text, "reason": r.reason})).collect::<Vec<Value>>(),
        });
        println!("{value}");
    } else {
        println!(
            "zlive: {} ({}), persistence {}",
            if initrd {
                "in the initrd"
            } else {
                "after switch-root"
            },
            if failed {
                "something failed"
            } else {
                "no failures"
            },
            if plan.persistence { "requested" } else { "off" }
        );
        for r in &rows {
            let state = if r.sub.is_empty() {
                r.state.clone()
            } else {
                format!("{}/{}", r.state, r.sub)
            };
            println!("  {:<10} {:<48} {}", state, r.unit, r.what);
            if !r.mount.is_empty() {
                println!("  {:<10} {}", "", r.mount);
            }
            for m in &r.messages {
                println!("  {:<10}   | {m}", "");
            }
        }
        for r in &plan.rejected {
            println!("  refused    {r}");
        }
    }
    Ok(!failed)
}
