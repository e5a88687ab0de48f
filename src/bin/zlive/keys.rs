//! ZFS native encryption: `zlive load-key ENCRYPTIONROOT` (zlive-load-key@.service) loads an
//! encryption root's key, asking for the passphrase through systemd's password agents (the
//! console, a serial console, Plymouth, systemd-tty-ask-password-agent), and the volume wait
//! starts one such unit per locked encryption root it needs.
//!
//! The passphrase goes from systemd-ask-password's standard output to `zfs load-key`'s
//! standard input through this process's memory: never an argument, an environment variable
//! or a file. systemd-ask-password keeps it in the kernel keyring (`--keyname=zlive`) for a
//! few minutes, so the next encryption root tries it first: one passphrase for several roots
//! is asked once.

use crate::exec;
use crate::pid1::Pid1;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use tracing::{error, info, warn};
use zlive::units;

/// How many passphrases a person gets for one encryption root.
pub const TRIES: usize = 3;
const ASK_PASSWORD: &str = "systemd-ask-password";
/// The kernel keyring entry systemd-ask-password caches passphrases under.
const KEYNAME: &str = "zlive";

/// A passphrase, wiped from memory when dropped.
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

fn property(dataset: &str, name: &str) -> Result<String> {
    let lines = exec::lines(Command::new("zfs").args(["get", "-H", "-o", "value", name, dataset]))?;
    Ok(lines.into_iter().next().unwrap_or_default())
}

/// `zlive load-key ENCRYPTIONROOT`.
pub fn load_key(root: &str) -> Result<()> {
    let unit = units::load_key(root);
    if property(root, "keystatus")? == "available" {
        info!(
            OBJECT_SYSTEMD_UNIT = unit.as_str(),
            "the key of {root} is already loaded"
        );
        return Ok(());
    }
    let location = property(root, "keylocation")?;
    if location.starts_with("file://") {
        let (ok, text) = exec::run(Command::new("zfs").args(["load-key", root]))?;
        if !ok {
            error!(OBJECT_SYSTEMD_UNIT = unit.as_str(), "the key of {root} could not be loaded from {location}: {}. Its persistence volumes stay locked for this boot.", text.replace('\n', " "));
            bail!("key of {root} not loaded");
        }
        info!(
            OBJECT_SYSTEMD_UNIT = unit.as_str(),
            "loaded the key of {root} from {location}"
        );
        return Ok(());
    }
    if location != "prompt" {
        error!(OBJECT_SYSTEMD_UNIT = unit.as_str(), "the key of {root} is at {location}, which zlive cannot reach in the initrd (use keylocation=prompt or file://)");
        bail!("key of {root} not loaded");
    }
    for attempt in 1..=TRIES {
        // The first try may be a passphrase another encryption root took a moment ago.
        let secret = ask(root, attempt == 1)?;
        match give_to_zfs(root, &secret) {
            Ok(()) => {
                info!(OBJECT_SYSTEMD_UNIT = unit.as_str(), "unlocked {root}");
                return Ok(());
            }
            Err(why) => warn!(
                OBJECT_SYSTEMD_UNIT = unit.as_str(),
                "wrong passphrase for ZFS dataset {root} (try {attempt} of {TRIES}): {why}"
            ),
        }
    }
    error!(
        OBJECT_SYSTEMD_UNIT = unit.as_str(),
        "the key of {root} was not loaded after {TRIES} tries: its persistence volumes stay locked and this boot goes on without them. Nothing was written to them."
    );
    bail!("key of {root} not loaded")
}

/// Ask the password agents for the passphrase of `root`.
fn ask(root: &str, accept_cached: bool) -> Result<Secret> {
    let mut cmd = Command::new(ASK_PASSWORD);
    cmd.args(["--timeout=0", "--icon=drive-harddisk"])
        .arg(format!("--keyname={KEYNAME}"))
        .arg(format!("--id=zlive:{root}"));
    if accept_cached {
        cmd.arg("--accept-cached");
    }
    let mut child = cmd
        .arg(format!(
            "Passphrase for ZFS dataset {root} (live persistence):"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("Failed to run {ASK_PASSWORD}"))?;
    let mut secret = Secret(Vec::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut secret.0)?;
    }
    if !child.wait()?.success() {
        bail!("no passphrase for {root}: the password prompt was cancelled");
    }
    while secret.0.last().is_some_and(|b| *b == b'\n') {
        secret.0.pop();
    }
    Ok(secret)
}

/// `zfs load-key -L prompt ROOT` with the passphrase on its standard input; the error zfs
/// gave when it refused it.
fn give_to_zfs(root: &str, secret: &Secret) -> std::result::Result<(), String> {
    let mut child = Command::new("zfs")
        .args(["load-key", "-L", "prompt", root])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run zfs: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut line = Secret(secret.0.clone());
        line.0.push(b'\n');
        let _ = stdin.write_all(&line.0);
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " ")),
    }
}

/// The locked encryption roots above these zvols (`keystatus=unavailable`), each once.
pub fn locked_roots(zvols: &[String]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for zvol in zvols {
        let lines = exec::lines(Command::new("zfs").args([
            "get",
            "-H",
            "-o",
            "value",
            "encryptionroot,keystatus",
            zvol,
        ]))
        .unwrap_or_default();
        if let [root, status] = lines.as_slice() {
            if status == "unavailable" && root != "-" && !roots.contains(root) {
                roots.push(root.clone());
            }
        }
    }
    roots
}

/// Load the keys these zvols need, one zlive-load-key@ unit per encryption root, in turn (one
/// prompt at a time). A root that stays locked is that unit's failure; the volumes below it
/// simply do not appear.
pub fn unlock(zvols: &[String]) -> Result<()> {
    let roots = locked_roots(zvols);
    if roots.is_empty() {
        return Ok(());
    }
    let mut pid1 = Pid1::connect()?;
    for root in roots {
        let unit = units::load_key(&root);
        let state = pid1.start_and_wait(&unit)?;
        if state != "active" {
            warn!("{root} stays locked ({unit} is {state})");
        }
    }
    Ok(())
}
