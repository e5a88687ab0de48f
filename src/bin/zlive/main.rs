//! zlive: the helper run by zlive's units in the initrd, and the command-line tool.
//! See man:zlive(8).

mod blockdev;
mod disk;
mod exec;
mod exitrd;
mod keys;
mod log;
mod luks;
mod medium;
mod pid1;
mod plan_cmd;
mod pools;
mod reload;
mod snapshots;
mod status;
mod toram;
mod volume;
mod zvols;

use anyhow::{bail, Context, Result};
use disk::Layout;
use std::process::ExitCode;
use tracing::{error, info, warn};
use zlive::plan::Plan;
use zlive::{cmdline, paths, plan, units, world};

const USAGE: &str = "usage:
  zlive plan --cmdline STRING [--persistence-conf FILE]... [--json]
  zlive import POOL | --scan      (run by zlive-import@.service)
  zlive wait-volume NAME          (run by zlive-volume@.service)
  zlive load-key ENCRYPTIONROOT   (run by zlive-load-key@.service)
  zlive load-zfs                  (run by zlive-load-zfs.service)
  zlive prepare DEST              (run by zlive-prepare@.service)
  zlive link DEST                 (run by zlive-link@.service)
  zlive reload                    (run by zlive-reload.service)
  zlive prune-snapshots NAME      (run by zlive-prune@.service)
  zlive find-medium               (run by zlive-find-medium.service)
  zlive exitrd                    (run by zlive-exitrd.service: the way back out at shutdown)
  zlive status [--json]           (what persistence did in this boot)
  zlive snapshots [--json]        (zlive's snapshots of the volumes, and how to return to each)";

/// The plan for this boot, from `/proc/cmdline` and the system as it is now.
fn current_plan() -> Result<Plan> {
    let text = world::read_small(std::path::Path::new(paths::PROC_CMDLINE))
        .with_context(|| format!("Failed to read {}", paths::PROC_CMDLINE))?;
    let cmd = cmdline::parse(&text);
    if !cmd.live {
        bail!("the kernel command line has no boot=live; zlive has nothing to do");
    }
    Ok(plan::plan(
        &cmd,
        &world::RealWorld::new(std::path::Path::new("/")),
    ))
}

fn one_arg(args: &[String]) -> Result<&str> {
    match args {
        [a] => Ok(a),
        _ => bail!("{USAGE}"),
    }
}

/// `zlive prepare DEST` and `zlive link DEST`, with their story in the journal under the
/// entry's fields.
fn prepare_or_link(prepare: bool, dest: &str) -> Result<()> {
    let layout = Layout { root: "/".into() };
    let plan = current_plan()?;
    let entry = plan.entries.iter().find(|e| e.dest == dest);
    let (volume, dir, unit) = match entry {
        Some(e) => (
            plan.volumes[e.volume].describe(),
            e.entry.dir.clone(),
            e.unit.clone(),
        ),
        None => (
            String::new(),
            "/".to_owned(),
            units::SYSROOT_MOUNT.to_owned(),
        ),
    };
    if prepare && dest == paths::SYSROOT {
        // The root on a volume (`/ union`): sysroot.mount must have it before it starts.
        reload::root_unit_up_to_date(&plan)?;
    }
    let result = if prepare {
        disk::prepare::prepare(&plan, &layout, dest).or_else(|e| {
            if dest != paths::SYSROOT || plan.root.upper_base == paths::OVERLAY_DIR {
                return Err(e);
            }
            // A `/ union` that cannot be prepared on its volume: the root in RAM.
            reload::root_in_ram(&layout, &format!("{e:#}"))
        })
    } else {
        disk::link::link(&plan, &layout, dest)
    };
    let (volume, dir, unit) = (volume.as_str(), dir.as_str(), unit.as_str());
    match result {
        Ok(report) => {
            for action in &report.actions {
                info!(
                    ZLIVE_ENTRY = dir,
                    ZLIVE_VOLUME = volume,
                    OBJECT_SYSTEMD_UNIT = unit,
                    "{dir}: {action}"
                );
            }
            if report.actions.is_empty() {
                info!(
                    ZLIVE_ENTRY = dir,
                    ZLIVE_VOLUME = volume,
                    OBJECT_SYSTEMD_UNIT = unit,
                    "{dir}: ready, nothing to create"
                );
            }
            Ok(())
        }
        Err(e) => {
            error!(
                ZLIVE_ENTRY = dir,
                ZLIVE_VOLUME = volume,
                OBJECT_SYSTEMD_UNIT = unit,
                "{dir}: {e:#}; this entry stays off for this boot"
            );
            Err(e)
        }
    }
}

fn service(command: &str, args: &[String]) -> Result<()> {
    match command {
        "import" => {
            let plan = current_plan()?;
            match one_arg(args)? {
                "--scan" => pools::import(&plan, None),
                pool => pools::import(&plan, Some(pool)),
            }
        }
        "wait-volume" => volume::wait_volume(&current_plan()?, one_arg(args)?),
        "load-key" => keys::load_key(&current_plan()?, one_arg(args)?),
        "load-zfs" => pools::load_module(),
        "find-medium" => medium::find_medium(&current_plan()?),
        "prepare" | "link" => prepare_or_link(command == "prepare", one_arg(args)?),
        "reload" => reload::reload(),
        "prune-snapshots" => snapshots::prune_due(&current_plan()?, one_arg(args)?),
        "exitrd" => {
            // zlive's last step in the initrd: every volume is open, no passphrase is needed
            // any more, and none may outlive the initrd.
            match keys::forget_passphrases() {
                Ok(true) => info!("dropped the cached passphrase from the kernel keyring"),
                Ok(false) => {}
                Err(e) => warn!("{e:#}; it expires from the keyring by itself within minutes"),
            }
            let (files, bytes) = exitrd::build(std::path::Path::new(exitrd::EXITRD))?;
            info!(
                "exitrd ready in {}: {files} files, {:.1} MiB of RAM; at shutdown the live system is taken apart from there",
                exitrd::EXITRD,
                bytes as f64 / (1024.0 * 1024.0)
            );
            Ok(())
        }
        _ => bail!("unknown command '{command}'\n{USAGE}"),
    }
}

fn exit_of(result: Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("zlive: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    // systemd-shutdown runs the exitrd's /shutdown (this program) as PID 1: `/shutdown VERB …`.
    let mut argv = std::env::args();
    if argv.next().as_deref() == Some("/shutdown") {
        exitrd::shutdown(argv.next().as_deref().unwrap_or("poweroff"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match command.as_str() {
        "plan" => plan_cmd::main(rest),
        "status" => {
            let as_json = match rest {
                [] => false,
                [flag] if flag == "--json" => true,
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            };
            match current_plan().and_then(|plan| status::status(&plan, as_json)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("zlive status: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        "snapshots" => match rest {
            [] => exit_of(snapshots::list(false)),
            [flag] if flag == "--json" => exit_of(snapshots::list(true)),
            _ => {
                eprintln!("{USAGE}");
                ExitCode::from(2)
            }
        },
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            log::init();
            match service(command, rest) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
