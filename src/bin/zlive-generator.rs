//! zlive-generator: a systemd generator. Reads the kernel command line and, in pass 2, the
//! persistence volumes' `persistence.conf`, and writes units. No D-Bus, no journald, no
//! child processes, no waiting: see systemd.generator(7) and man:zlive-generator(8).
//!
//! PID 1 runs every generator at boot and on every reload, so start-up counts: the binary has
//! its own C `main` rather than std's runtime start (see [`main`]).

#![no_main]

use anyhow::Result;
use std::env;
use std::ffi::{c_char, c_int};
use std::path::{Path, PathBuf};
use zlive::cmdline;
use zlive::emit::{self, OutDirs};
use zlive::kmsg::{self, Logger};
use zlive::{paths, plan, render, world};

fn usage() -> c_int {
    eprintln!("usage: zlive-generator NORMAL_DIR [EARLY_DIR LATE_DIR]");
    2
}

fn env_bool(name: &str) -> Option<bool> {
    match env::var(name).ok()?.as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// The C entry point, instead of std's `lang_start`. That start-up (the main thread's stack
/// guard, read from /proc/self/maps with sscanf, an alternate signal stack, SIGPIPE ignored)
/// was a third of the generator's run time when it has nothing to do, and the generator
/// needs none of it: it does not recurse, does not write to pipes, and aborts on panic.
/// The arguments come from `std::env`, which glibc fills before `main` anyway.
// `no_mangle` is what makes this the program's `main`; it has no unsafe body.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    standard_fds_open();
    match run() {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// What std's start-up does first, kept: with 0, 1 or 2 closed, the first unit file created
/// would get that descriptor and receive the log lines meant for stderr.
fn standard_fds_open() {
    use std::os::fd::AsFd;
    let closed = |fd: std::os::fd::BorrowedFd<'_>| {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF)
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    for fd in [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()] {
        if closed(fd) {
            // Opened on the lowest free descriptor, which is this one; kept open for good.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                std::mem::forget(null);
            }
        }
    }
}

/// The generator; `Err` carries the exit status.
fn run() -> Result<(), c_int> {
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
        _ => return Err(usage()),
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
    let cmd = cmdline::parse(&cmdline_text);
    if !cmd.live {
        log.log(
            kmsg::DEBUG,
            "no boot=live on the command line, nothing to do",
        );
        return Ok(());
    }
    let result = match in_initrd {
        true => generate(&cmd, &root, &dirs, &mut log),
        // The live root of a live boot: only keep OpenZFS's units from importing or mounting
        // what zlive let go of, or mounting the persistence pool's other datasets.
        false => emit::write_all(&dirs, &render::openzfs_masks()).map(|()| {
            log.log(
                kmsg::DEBUG,
                "live root: OpenZFS's own import and mount units masked",
            )
        }),
    };
    let result = result.map_err(|e| {
        log.log(kmsg::ERR, &format!("{e:#}"));
        1
    });
    log.finish();
    result
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
