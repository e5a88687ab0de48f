//! `zlive plan`: what the generator would write for a command line and persistence.conf
//! files, without booting. With `--json`, one JSON object for scripts and tests.

use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use zlive::cmdline;
use zlive::plan;
use zlive::render::{self, OutDir, Output};
use zlive::world::GivenWorld;

fn unusable(message: &str) -> ExitCode {
    eprintln!("zlive plan: {message}");
    ExitCode::from(2)
}

pub fn main(text: &str, conf_files: &[PathBuf], as_json: bool) -> ExitCode {
    let cmd = cmdline::parse(text);
    if !cmd.live {
        return unusable("the command line has no boot=live: zlive would do nothing");
    }
    let skeleton = plan::plan(&cmd, &GivenWorld::with_confs(Vec::new()));
    if conf_files.len() > skeleton.volumes.len() {
        return unusable(&format!(
            "{} persistence.conf files given, but the command line names {} persistence volume(s)",
            conf_files.len(),
            skeleton.volumes.len()
        ));
    }
    let mut confs = Vec::new();
    for (file, volume) in conf_files.iter().zip(&skeleton.volumes) {
        match std::fs::read(file) {
            Ok(bytes) => confs.push((volume.mount_point.clone(), bytes)),
            Err(e) => return unusable(&format!("cannot read {}: {e}", file.display())),
        }
    }
    let plan = plan::plan(&cmd, &GivenWorld::with_confs(confs));
    let outputs = render::render(&plan);
    if as_json {
        print_json(&plan, &outputs);
    } else {
        print_text(&plan, &outputs);
    }
    ExitCode::SUCCESS
}

/// Every unit the plan involves: files written plus template instances pulled in.
fn unit_names(plan: &plan::Plan, outputs: &[Output]) -> Vec<String> {
    let mut names: Vec<String> = outputs
        .iter()
        .filter_map(|o| o.unit_name().map(str::to_owned))
        .collect();
    for o in outputs {
        if let Output::DropIn { unit, .. } = o {
            if unit.contains('@') {
                names.push(unit.clone());
            }
        }
    }
    names.extend(plan.entries.iter().map(|e| e.unit.clone()));
    names.sort();
    names.dedup();
    names
}

fn print_json(plan: &plan::Plan, outputs: &[Output]) {
    let entries: Vec<_> = plan
        .entries
        .iter()
        .map(|e| {
            json!({
                "dir": e.entry.dir,
                "mode": e.entry.mode.as_str(),
                "source": if e.entry.source.is_empty() { "." } else { e.entry.source.as_str() },
                "unit": e.unit,
                "volume": plan.volumes[e.volume].describe(),
                "line": e.entry.line,
            })
        })
        .collect();
    let notices: Vec<_> = plan
        .notices
        .iter()
        .map(|n| json!({"level": n.level.to_string(), "text": n.text}))
        .collect();
    let value = json!({
        "pass": if plan.is_second_pass() { 2 } else { 1 },
        "persistence": plan.persistence,
        "volumes": plan.volumes.iter().map(|v| json!({"name": v.name, "device": v.what(), "mount": v.mount_point, "unit": v.mount_unit})).collect::<Vec<_>>(),
        "entries": entries,
        "rejected": rejections_json(plan),
        "notices": notices,
        "units": unit_names(plan, outputs),
    });
    println!("{value}");
}

/// The refused lines, as `zlive plan --json` and `zlive status --json` show them.
pub fn rejections_json(plan: &plan::Plan) -> serde_json::Value {
    plan.rejected
        .iter()
        .map(|r| json!({"file": r.file, "line": r.line, "text": r.text, "reason": r.reason}))
        .collect()
}

fn print_text(plan: &plan::Plan, outputs: &[Output]) {
    for o in outputs {
        let (dir, path, body) = match o {
            Output::Unit { dir, name, body } => (dir, name.clone(), body.as_str()),
            Output::DropIn {
                dir,
                unit,
                name,
                body,
            } => (dir, format!("{unit}.d/{name}"), body.as_str()),
            Output::RequiresLink { dir, target, unit } => {
                println!(
                    "# {} {target}.requires/{unit} -> ../{unit}\n",
                    dir_name(*dir)
                );
                continue;
            }
            Output::Mask { dir, unit } => {
                println!("# {} {unit} -> /dev/null (masked)\n", dir_name(*dir));
                continue;
            }
        };
        println!("# {} {path}\n{body}", dir_name(*dir));
    }
    for n in &plan.notices {
        println!("# {}: {}", n.level, n.text);
    }
    for r in &plan.rejected {
        println!("# refused: {r}");
    }
}

fn dir_name(dir: OutDir) -> &'static str {
    match dir {
        OutDir::Normal => "normal",
        OutDir::Early => "early",
    }
}
