//! zlive-generator: a systemd generator. Reads the kernel command line and, in pass 2, the
//! persistence volumes' `persistence.conf`, and writes units. No D-Bus, no journald, no
//! child processes, no waiting: see systemd.generator(7) and man:zlive-generator(8).

use anyhow::Result;
use std::env;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zlive::cmdline;
use zlive::emit::{self, OutDirs};
use zlive::kmsg::{self, Logger};
use zlive::{paths, plan, render, world};

fn usage() -> ExitCode {
    eprintln!("usage: zlive-generator NORMAL_DIR [EARLY_DIR LATE_DIR]");
    ExitCode::from(2)
}

fn env_bool(name: &str) -> Option<bool> {
    match env::var(name).ok()?.as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = env::args_os().skip(1).map(PathBuf::from).collect();
    let dirs = match args.as_slice() {
        [one] => OutDirs {
            normal: one.clone(),
            early: one.clone(),
            late: one.clone(),
        },
        [normal, early, late] => OutDirs {
            normal: normal.clone(),
            early: early.clone(),
            late: late.clone(),
        },
        _ => return usage(),
    };
    // Test seam: every input is read below this directory.
    let test_root = env::var_os("ZLIVE_ROOT").map(PathBuf::from);
    let root = test_root.clone().unwrap_or_else(|| PathBuf::from("/"));

    let cmdline_text = match env::var("SYSTEMD_PROC_CMDLINE") {
        Ok(text) => text,
        Err(_) => world::read_small(&root.join(paths::PROC_CMDLINE.trim_start_matches('/')))
            .unwrap_or_default(),
    };
    let words = cmdline::split_words(&cmdline_text);
    let level = env::var("SYSTEMD_LOG_LEVEL")
        .ok()
        .and_then(|l| kmsg::parse_level(&l))
        .or_else(|| {
            words
                .iter()
                .rev()
                .find_map(|w| w.strip_prefix("systemd.log_level="))
                .and_then(kmsg::parse_level)
        })
        .unwrap_or(kmsg::INFO);
    let mut log = Logger::new(test_root.is_none(), level);

    let in_initrd = env_bool("SYSTEMD_IN_INITRD").unwrap_or_else(|| {
        root.join(paths::INITRD_RELEASE.trim_start_matches('/'))
            .exists()
    });
    if !in_initrd {
        log.log(kmsg::DEBUG, "not in the initrd, nothing to do");
        return ExitCode::SUCCESS;
    }
    let cmd = cmdline::parse(&cmdline_text);
    if !cmd.live {
        log.log(
            kmsg::DEBUG,
            "no boot=live on the command line, nothing to do",
        );
        return ExitCode::SUCCESS;
    }
    let code = match generate(&cmd, &root, &dirs, &mut log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.log(kmsg::ERR, &format!("{e:#}"));
            ExitCode::FAILURE
        }
    };
    log.finish();
    code
}

fn generate(cmd: &cmdline::Cmdline, root: &Path, dirs: &OutDirs, log: &mut Logger) -> Result<()> {
    let world = world::RealWorld::new(root);
    let plan = plan::plan(cmd, &world);
    // Said before anything is written: a failed write must not swallow why a line was refused.
    for notice in &plan.notices {
        log.log(notice.level.syslog_priority(), &notice.text);
    }
    for rejection in &plan.rejected {
        log.log(kmsg::WARNING, &rejection.to_string());
    }
    let outputs = render::render(&plan);
    emit::write_all(dirs, &outputs)?;

    let units = outputs.iter().filter(|o| o.unit_name().is_some()).count();
    let summary = if !plan.persistence {
        format!("live root in RAM, no persistence; {units} units")
    } else if plan.is_second_pass() {
        format!(
            "pass 2: persistence entries accepted: {}, lines refused: {}; {units} units",
            plan.entries.len(),
            plan.rejected.len()
        )
    } else {
        format!(
            "pass 1: waiting for persistence volumes: {}; {units} units",
            plan.volumes.len()
        )
    };
    log.log(kmsg::INFO, &summary);
    Ok(())
}
