//! zlive: the helper run by zlive's units in the initrd, and the command-line tool.
//! See man:zlive(8).
//!
//! The rooms, in the order of a boot: [`early`] (the medium), [`zfs`] (pools and volumes),
//! [`entries`] (persistence.conf's entries), [`systemd`] (PID 1, the second pass),
//! [`shutdown`] (the way back out); [`cli`] holds what a person runs, and [`create`] makes
//! persistence, [`backup`] sends it elsewhere and back. `exec` and `log` serve them all.

mod backup;
mod cli;
mod create;
mod early;
mod entries;
mod exec;
mod log;
mod shutdown;
mod systemd;
#[cfg(test)]
mod testing;
mod udev;
mod zfs;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::args::{Cli, Command};
use std::process::ExitCode;
use tracing::{error, info, warn};
use zlive::plan::Plan;
use zlive::{cmdline, paths, plan, world};

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

/// A service verb, with its story in the journal.
fn service(command: Command) -> Result<()> {
    match command {
        Command::Import { scan: true, .. } => zfs::import::import(&current_plan()?, None),
        Command::Import { pool, .. } => zfs::import::import(&current_plan()?, pool.as_deref()),
        Command::WaitVolume { name } => zfs::volume::wait_volume(&current_plan()?, &name),
        Command::LoadKey { encryption_root } => {
            zfs::keys::load_key(&current_plan()?, &encryption_root)
        }
        Command::LoadZfs => zfs::import::load_module(),
        Command::FindMedium => early::medium::find_medium(&current_plan()?),
        Command::Prepare { dest } => entries::prepare_or_link(&current_plan()?, true, &dest),
        Command::Link { dest } => entries::prepare_or_link(&current_plan()?, false, &dest),
        Command::Reload => systemd::reload::reload(&current_plan()?),
        Command::PruneSnapshots { name } => zfs::snapshots::prune_due(&current_plan()?, &name),
        Command::Exitrd => exitrd(),
        Command::Status { .. }
        | Command::Snapshots { .. }
        | Command::Plan { .. }
        | Command::Create { .. }
        | Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Clone { .. }
        | Command::SecureBoot { .. }
        | Command::Completions { .. } => unreachable!("not a service verb"),
    }
}

/// zlive's last step in the initrd: every volume is open, no passphrase is needed any more,
/// and none may outlive the initrd; then the exitrd for shutdown.
fn exitrd() -> Result<()> {
    match zfs::keys::forget_passphrases() {
        Ok(true) => info!("dropped the cached passphrase from the kernel keyring"),
        Ok(false) => {}
        Err(e) => warn!("{e:#}; it expires from the keyring by itself within minutes"),
    }
    let (files, bytes) = shutdown::exitrd::build(std::path::Path::new(shutdown::exitrd::EXITRD))?;
    info!(
        "exitrd ready in {}: {files} files, {:.1} MiB of RAM; at shutdown the live system is taken apart from there",
        shutdown::exitrd::EXITRD,
        bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// A command's outcome as its exit status: 0 done, 1 something it reports failed, 2 it could
/// not run.
fn exit_of(name: &str, result: Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("zlive {name}: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A command whose failures are all ones it reports (a refusal, a transfer that stopped): said
/// on stderr, with exit status 1.
fn reported(name: &str, result: Result<bool>) -> Result<bool> {
    result.or_else(|e| {
        eprintln!("zlive {name}: {e:#}");
        Ok(false)
    })
}

/// The command line, or the exit a wrong one gets: help and version to stdout with 0; a usage
/// error as one line and a hint on stderr, with 2.
fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            let _ = e.print();
            return ExitCode::from(2);
        }
        // clap's message is its first paragraph (a missing argument is named on the lines
        // below the first); usage and tips follow after a blank line.
        let text = e.render().to_string();
        let message: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let message = message.join(" ");
        eprintln!("zlive: {}", message.trim_start_matches("error: "));
        // The help of the command given, when it is one.
        let known = <Cli as clap::CommandFactory>::command();
        let command = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .filter(|c| known.find_subcommand(c).is_some())
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        eprintln!("Try 'zlive{command} --help'.");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    // systemd-shutdown runs the exitrd's /shutdown (this program) as PID 1: `/shutdown VERB …`.
    let mut argv = std::env::args();
    if argv.next().as_deref() == Some("/shutdown") {
        shutdown::exitrd::shutdown(argv.next().as_deref().unwrap_or("poweroff"));
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Plan {
            cmdline,
            persistence_conf,
            json,
        } => cli::plan::main(&cmdline, &persistence_conf, json),
        Command::Status { json } => exit_of(
            "status",
            current_plan().and_then(|plan| cli::status::status(&plan, json)),
        ),
        Command::Snapshots { json } => exit_of("snapshots", zfs::snapshots::list(json)),
        Command::Create(request) => exit_of("create", create::create(&request)),
        Command::Backup(request) => exit_of("backup", reported("backup", backup::backup(&request))),
        Command::Restore(request) => {
            exit_of("restore", reported("restore", backup::restore(&request)))
        }
        Command::Clone(request) => exit_of("clone", reported("clone", backup::clone(&request))),
        Command::SecureBoot {
            enroll,
            certificate,
            hash_file,
        } => {
            let certificate = certificate.as_deref();
            let result = match enroll {
                true => cli::secure_boot::enroll(certificate, hash_file.as_deref()),
                false => cli::secure_boot::show(certificate),
            };
            exit_of("secure-boot", reported("secure-boot", result))
        }
        Command::Completions { shell } => {
            cli::completions(shell);
            ExitCode::SUCCESS
        }
        command => {
            log::init();
            match service(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
