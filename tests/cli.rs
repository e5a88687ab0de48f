//! Command-line behaviour of both binaries: exit codes, `zlive plan --json`, and what the
//! generator binary links.

use std::path::PathBuf;
use std::process::Command;

const GEN: &str = env!("CARGO_BIN_EXE_zlive-generator");
const ZLIVE: &str = env!("CARGO_BIN_EXE_zlive");

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn code(cmd: &mut Command) -> i32 {
    cmd.output().unwrap().status.code().unwrap()
}

#[test]
fn generator_takes_one_or_three_directories() {
    let d = tmp("cli-gen");
    let live = |c: &mut Command| {
        c.env("SYSTEMD_IN_INITRD", "1")
            .env("SYSTEMD_PROC_CMDLINE", "boot=live live-media=/dev/vdb")
            .env("ZLIVE_ROOT", &d);
    };
    assert_eq!(code(Command::new(GEN).env("ZLIVE_ROOT", &d)), 2);
    assert_eq!(
        code(Command::new(GEN).args(["a", "b"]).env("ZLIVE_ROOT", &d)),
        2
    );
    assert_eq!(
        code(
            Command::new(GEN)
                .args(["a", "b", "c", "d"])
                .env("ZLIVE_ROOT", &d)
        ),
        2
    );
    let one = d.join("one");
    std::fs::create_dir_all(&one).unwrap();
    let mut c = Command::new(GEN);
    c.arg(&one);
    live(&mut c);
    assert_eq!(code(&mut c), 0);
    // With one directory, sysroot.mount (an early-dir unit) lands there too.
    assert!(one.join("sysroot.mount").exists());
    assert!(one.join("run-live-medium.mount").exists());
    // Writing into the same directory again finds the units there: exclusive create refuses.
    let mut again = Command::new(GEN);
    again.arg(&one);
    live(&mut again);
    assert_eq!(code(&mut again), 1);
    // Outside the initrd (the live root) of a live boot: only OpenZFS's own import and mount
    // units masked, exit 0; twice into the same directory is fine.
    let live_root = d.join("live-root");
    std::fs::create_dir_all(&live_root).unwrap();
    for _ in 0..2 {
        assert_eq!(
            code(
                Command::new(GEN)
                    .arg(&live_root)
                    .env("SYSTEMD_IN_INITRD", "0")
                    .env("SYSTEMD_PROC_CMDLINE", "boot=live")
                    .env("ZLIVE_ROOT", &d)
            ),
            0
        );
    }
    let mut written: Vec<String> = std::fs::read_dir(&live_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "zfs-import-cache.service",
            "zfs-import-scan.service",
            "zfs-import@.service",
            "zfs-load-key.service",
            "zfs-load-module.service",
            "zfs-mount.service"
        ]
    );
    assert_eq!(
        std::fs::read_link(live_root.join("zfs-mount.service")).unwrap(),
        std::path::Path::new("/dev/null")
    );
    // Without boot=live, in the initrd or not: nothing, exit 0.
    for in_initrd in ["0", "1"] {
        let quiet = d.join(format!("quiet-{in_initrd}"));
        std::fs::create_dir_all(&quiet).unwrap();
        assert_eq!(
            code(
                Command::new(GEN)
                    .arg(&quiet)
                    .env("SYSTEMD_IN_INITRD", in_initrd)
                    .env("SYSTEMD_PROC_CMDLINE", "persistence quiet")
                    .env("ZLIVE_ROOT", &d)
            ),
            0
        );
        assert_eq!(std::fs::read_dir(&quiet).unwrap().count(), 0);
    }
}

/// The exit status of `zlive plan ARGS`.
fn plan(args: &[&str]) -> i32 {
    code(Command::new(ZLIVE).arg("plan").args(args))
}

#[test]
fn plan_exit_codes() {
    let d = tmp("cli-plan");
    let conf = d.join("persistence.conf");
    std::fs::write(&conf, "/home union\nbogus\n").unwrap();
    let c = conf.to_str().unwrap();
    let live = "boot=live persistence";
    for (args, expected) in [
        (&[][..], 2),
        (&["--cmdline"][..], 2),
        (&["--cmdline", "boot=live", "--what"][..], 2),
        (&["--cmdline", "quiet splash"][..], 2),
        (
            &["--cmdline", live, "--persistence-conf", "/nonexistent/x"][..],
            2,
        ),
        // More files than volumes.
        (
            &[
                "--cmdline",
                live,
                "--persistence-conf",
                c,
                "--persistence-conf",
                c,
            ][..],
            2,
        ),
        (&["--cmdline", live, "--persistence-conf", c][..], 0),
    ] {
        assert_eq!(plan(args), expected, "zlive plan {args:?}");
    }
    assert_eq!(code(Command::new(ZLIVE).arg("no-such-command")), 2);
}

/// The subcommands `zlive --help` lists.
fn subcommands() -> Vec<String> {
    let out = Command::new(ZLIVE).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let list = text
        .split("Commands:\n")
        .nth(1)
        .expect("zlive --help lists its commands");
    list.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// Every subcommand answers --help on stdout with 0 and does nothing else; zlive(8) has each
/// in its synopsis with the same options.
#[test]
fn every_subcommand_has_help_and_is_in_the_man_page() {
    let commands = subcommands();
    assert!(commands.len() >= 14, "{commands:?}");
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/zlive.8.md")).unwrap();
    let synopsis = man
        .split("# SYNOPSIS")
        .nth(1)
        .and_then(|s| s.split("# DESCRIPTION").next())
        .unwrap();
    // `zlive import --help` used to rewrite /etc/hostid and import a pool named --help.
    let hostid = std::fs::read("/etc/hostid").ok();
    for command in &commands {
        let out = Command::new(ZLIVE)
            .args([command.as_str(), "--help"])
            .env("ZLIVE_LOG_STDERR", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "zlive {command} --help");
        assert!(
            out.stderr.is_empty(),
            "zlive {command} --help wrote to stderr"
        );
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains(&format!("Usage: zlive {command}")), "{help}");
        let line = synopsis
            .lines()
            .find(|l| l.starts_with(&format!("**zlive {command}**")))
            .unwrap_or_else(|| panic!("zlive(8) has no synopsis line for {command}"));
        let options: Vec<&str> = help
            .split_whitespace()
            .map(|w| w.trim_end_matches(','))
            .filter(|w| w.starts_with("--") && *w != "--help")
            .collect();
        for option in options {
            assert!(
                line.contains(&format!("**{option}**")),
                "zlive(8)'s synopsis of {command} lacks {option}: {line}"
            );
        }
    }
    assert_eq!(
        std::fs::read("/etc/hostid").ok(),
        hostid,
        "a --help changed /etc/hostid"
    );
    let version = Command::new(ZLIVE).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("zlive "));
}

/// A command line zlive does not understand: exit 2, one line and a hint, nothing done.
#[test]
fn usage_errors_are_one_line_and_a_hint() {
    for args in [
        &["status", "--jsn"][..],
        &["import"][..],
        &["import", "dpool", "--scan"][..],
        &["no-such-command"][..],
        &["snapshots", "extra"][..],
        &["completions", "tcsh"][..],
    ] {
        let out = Command::new(ZLIVE).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "zlive {args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "zlive {args:?}: {err}");
        assert!(lines[0].starts_with("zlive: "), "{err}");
        assert!(
            lines[1].starts_with("Try 'zlive") && lines[1].ends_with("--help'."),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// Completion scripts for the three shells name every subcommand.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let commands = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(ZLIVE)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell}: {command}");
        }
    }
}

#[test]
fn plan_json_lists_entries_rejections_and_units() {
    let d = tmp("cli-json");
    let conf = d.join("persistence.conf");
    std::fs::write(
        &conf,
        "/home/user union\n/etc bind,source=config\n/x Union\n/ union,source=root\n",
    )
    .unwrap();
    let out = Command::new(ZLIVE)
        .args([
            "plan",
            "--json",
            "--cmdline",
            "boot=live noeject persistence skipconfig quiet splash persistence-zpool=dpool",
            "--persistence-conf",
        ])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pass"], 2);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{v}");
    assert_eq!(entries[0]["dir"], "/home/user");
    assert_eq!(entries[0]["mode"], "union");
    assert_eq!(entries[0]["source"], "home/user");
    assert_eq!(entries[0]["unit"], "sysroot-home-user.mount");
    assert_eq!(entries[1]["source"], "config");
    assert_eq!(entries[2]["unit"], "sysroot.mount");
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["line"], 3);
    assert_eq!(rejected[0]["text"], "Union");
    assert_eq!(
        rejected[0]["file"],
        "/run/live/persistence/persistence/persistence.conf"
    );
    let units: Vec<&str> = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    for u in [
        "sysroot.mount",
        "sysroot-home-user.mount",
        "sysroot-etc.mount",
        "run-live-persistence-persistence.mount",
        "zlive-prepare@sysroot-etc.service",
    ] {
        assert!(units.contains(&u), "{u} missing from {units:?}");
    }
}

#[test]
fn generator_links_no_dbus_code() {
    let bytes = std::fs::read(GEN).unwrap();
    for needle in [
        &b"zbus"[..],
        b"org.freedesktop.DBus",
        b"tracing_journald",
        b"serde_json",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "zlive-generator contains {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // …while the helper does (so the check can fail).
    let helper = std::fs::read(ZLIVE).unwrap();
    assert!(helper.windows(4).any(|w| w == b"zbus"));
}

/// The generator says why it refused something even when writing its units fails.
#[test]
fn generator_logs_notices_when_writing_fails() {
    let d = tmp("cli-gen-fail");
    let not_a_dir = d.join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let out = Command::new(GEN)
        .arg(&not_a_dir)
        .env("SYSTEMD_IN_INITRD", "1")
        .env(
            "SYSTEMD_PROC_CMDLINE",
            "boot=live todisk=/dev/sdb live-media=/dev/vdb",
        )
        .env("ZLIVE_ROOT", &d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Failed to create"), "{stderr}");
    assert!(
        stderr.contains("todisk= is not supported by zlive"),
        "the notice was lost with the failed write:\n{stderr}"
    );
}
