//! ZFS native encryption: `zlive load-key ENCRYPTIONROOT` (zlive-load-key@.service) loads an
//! encryption root's key, asking for the passphrase through systemd's password agents (the
//! console, a serial console, Plymouth, systemd-tty-ask-password-agent). The scan and the
//! volume wait start one such unit per locked encryption root they need.
//!
//! A root on a pool the command line names waits for its passphrase as long as it takes. A
//! root on a pool a scan found may be a stranger's: its prompt is bounded, says on the console
//! what it waits for and how to skip it, and once nobody answered one, no other is asked.
//! A key file must be a regular file (`file:///dev/console` would block for ever).
//!
//! The passphrase goes from systemd-ask-password's standard output to `zfs load-key`'s
//! standard input through this process's memory, in one buffer allocated once and wiped:
//! never an argument, an environment variable or a file. systemd-ask-password keeps it in the
//! kernel keyring (`--keyname=zlive`) for a few minutes, so the next encryption root tries it
//! first (one passphrase for several roots is asked once); `zlive exitrd`, zlive's last step
//! in the initrd, drops it from there before the live system starts.

use super::property;
use crate::exec;
use crate::systemd::pid1::Pid1;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use tracing::{error, info, warn};
use zlive::names::Dataset;
use zlive::plan::{Import, Plan};
use zlive::tool_output::ZvolRow;
use zlive::units;

/// How many passphrases a person gets for one encryption root.
pub const TRIES: usize = 3;
const ASK_PASSWORD: &str = "systemd-ask-password";
/// The kernel keyring entry systemd-ask-password caches passphrases under.
const KEYNAME: &str = "zlive";

/// How long the passphrase of a pool a scan found is waited for.
const SCANNED_PROMPT: Duration = Duration::from_secs(20);
/// How long `zfs load-key` from a key file may take.
const KEY_FILE_WAIT: Duration = Duration::from_secs(20);
/// The longest passphrase taken (ZFS's own limit is 512 bytes).
const SECRET_MAX: usize = 1024;

/// A passphrase in a buffer allocated once, never grown (so never copied by a reallocation),
/// and wiped when dropped.
pub struct Secret {
    bytes: Box<[u8; SECRET_MAX]>,
    len: usize,
}

impl Secret {
    pub fn new() -> Secret {
        Secret {
            bytes: Box::new([0; SECRET_MAX]),
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
    /// Read one line of `from`, without its newline, a byte at a time (nothing of the next
    /// line is taken, nor copied elsewhere); an error when it does not fit.
    pub fn read_line(&mut self, from: &mut impl Read) -> Result<()> {
        let mut byte = [0u8; 1];
        loop {
            match from.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) if byte[0] == b'\n' => return Ok(()),
                Ok(_) if self.len == SECRET_MAX => {
                    bail!("the passphrase is longer than {SECRET_MAX} bytes")
                }
                Ok(_) => {
                    self.bytes[self.len] = byte[0];
                    self.len += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            byte[0] = 0;
        }
    }
    /// Read it from `from` to its end; an error when it does not fit.
    fn read_from(&mut self, from: &mut impl Read) -> Result<()> {
        loop {
            if self.len == SECRET_MAX {
                bail!("the passphrase is longer than {SECRET_MAX} bytes");
            }
            match from.read(&mut self.bytes[self.len..]) {
                Ok(0) => return Ok(()),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.bytes.fill(0);
        std::hint::black_box(&self.bytes);
    }
}

/// Whether the pool of `root` is named on the command line: then a person is expected at the
/// prompt, and it waits.
fn pool_is_named(plan: &Plan, root: &str) -> bool {
    let pool = root.split('/').next().unwrap_or_default();
    plan.imports
        .iter()
        .any(|i| matches!(i, Import::Named(p) if p.as_str() == pool))
}

/// Whether a dataset below `root` carries a persistence label the plan looks for (the
/// property is readable while the dataset is locked): then the key is the user's, whatever
/// pool it is on, and the prompt waits.
fn holds_a_wanted_label(plan: &Plan, root: &str) -> bool {
    let wanted: Vec<&str> = plan
        .volumes
        .iter()
        .filter_map(|v| match &v.kind {
            zlive::plan::VolumeKind::Label(l) => Some(l.as_str()),
            _ => None,
        })
        .collect();
    crate::zfs::datasets::labelled(&[root.to_owned()])
        .iter()
        .any(|(_, label)| wanted.contains(&label.as_str()))
}

/// `zlive load-key ENCRYPTIONROOT`.
pub fn load_key(plan: &Plan, root: &str) -> Result<()> {
    let unit = units::load_key(root);
    let unit = unit.as_str();
    if property(root, "keystatus")? == "available" {
        info!(
            OBJECT_SYSTEMD_UNIT = unit,
            "the key of {root} is already loaded"
        );
        return Ok(());
    }
    let location = property(root, "keylocation")?;
    if let Some(path) = location.strip_prefix("file://") {
        return load_from_file(unit, root, path);
    }
    if location != "prompt" {
        error!(OBJECT_SYSTEMD_UNIT = unit, "the key of {root} is at {location}, which zlive cannot reach in the initrd (use keylocation=prompt or file://)");
        bail!("key of {root} not loaded");
    }
    let bound = match pool_is_named(plan, root) || holds_a_wanted_label(plan, root) {
        true => None,
        false => Some(SCANNED_PROMPT),
    };
    if let Some(bound) = bound {
        exec::console(&format!(
            "zlive: the ZFS dataset {root} on a pool found by scanning is locked. If your persistence is encrypted there, type its passphrase within {} s; press Enter without one to skip it.\n",
            bound.as_secs()
        ));
    }
    for attempt in 1..=TRIES {
        // The first try may be a passphrase another encryption root took a moment ago.
        let secret = match ask(root, attempt == 1, bound)? {
            Answer::Given(secret) => secret,
            Answer::Skipped(why) => {
                info!(OBJECT_SYSTEMD_UNIT = unit, "{root} stays locked: {why}");
                return Ok(());
            }
        };
        match give_to_zfs(root, &secret) {
            Ok(()) => {
                info!(OBJECT_SYSTEMD_UNIT = unit, "unlocked {root}");
                return Ok(());
            }
            Err(why) => warn!(
                OBJECT_SYSTEMD_UNIT = unit,
                "wrong passphrase for ZFS dataset {root} (try {attempt} of {TRIES}): {why}"
            ),
        }
    }
    error!(
        OBJECT_SYSTEMD_UNIT = unit,
        "the key of {root} was not loaded after {TRIES} tries: its persistence volumes stay locked and this boot goes on without them. Nothing was written to them."
    );
    bail!("key of {root} not loaded")
}

/// `keylocation=file://PATH`: only a regular file (a device or a FIFO would block `zfs
/// load-key` for ever), and `zfs load-key` bounded in time.
fn load_from_file(unit: &str, root: &str, path: &str) -> Result<()> {
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    if !regular {
        error!(OBJECT_SYSTEMD_UNIT = unit, "the key of {root} is to come from {path}, which is not a regular file (or is not there): not read. Its persistence volumes stay locked for this boot.");
        bail!("key of {root} not loaded");
    }
    if let Err(e) = exec::run_bounded(Command::new("zfs").args(["load-key", root]), KEY_FILE_WAIT) {
        error!(OBJECT_SYSTEMD_UNIT = unit, "the key of {root} could not be loaded from {path}: {e:#}. Its persistence volumes stay locked for this boot.");
        bail!("key of {root} not loaded");
    }
    info!(
        OBJECT_SYSTEMD_UNIT = unit,
        "loaded the key of {root} from {path}"
    );
    Ok(())
}

/// What the password prompt gave.
enum Answer {
    Given(Secret),
    /// Nothing to try: the person skipped it (an empty passphrase), or nobody answered a
    /// bounded prompt in time. Why.
    Skipped(String),
}

/// Ask the password agents for the passphrase of `root`, waiting at most `bound`.
fn ask(root: &str, accept_cached: bool, bound: Option<Duration>) -> Result<Answer> {
    let message = format!("Passphrase for ZFS dataset {root} (live persistence):");
    let Some(secret) = prompt(&message, root, accept_cached, bound)? else {
        return match bound {
            Some(b) => Ok(Answer::Skipped(format!(
                "no passphrase within {} s (a pool found by scanning is not waited for longer)",
                b.as_secs()
            ))),
            None => bail!("no passphrase for {root}: the password prompt was cancelled"),
        };
    };
    if secret.len == 0 {
        return Ok(Answer::Skipped("skipped at the prompt".to_owned()));
    }
    Ok(Answer::Given(secret))
}

/// A new passphrase for `root`, asked twice at systemd's password prompt until both agree
/// and it is long enough for ZFS (8 characters); `TRIES` rounds at most. The dataset made
/// with it has its key loaded at once; like every answer, it is cached under [`KEYNAME`]
/// until `zlive exitrd` drops it.
pub fn ask_new(root: &str) -> Result<Secret> {
    for _ in 0..TRIES {
        let first = prompt(
            &format!("New passphrase for {root} (live persistence):"),
            root,
            false,
            None,
        )?;
        let again = prompt(
            &format!("The same passphrase again for {root}:"),
            root,
            false,
            None,
        )?;
        let (Some(first), Some(again)) = (first, again) else {
            bail!("the password prompt was cancelled");
        };
        let text = match (first.as_bytes() == again.as_bytes(), first.len >= 8) {
            (true, true) => return Ok(first),
            (false, _) => "the two passphrases differ",
            (true, false) => "a passphrase has at least 8 characters",
        };
        exec::console(&format!("zlive: {text}; again.\n"));
    }
    bail!("no new passphrase after {TRIES} tries")
}

/// One question to the password agents: the answer without its newline; `None` when the
/// prompt was cancelled or timed out. Answers are cached under [`KEYNAME`] (dropped by
/// `zlive exitrd`).
fn prompt(
    message: &str,
    id: &str,
    accept_cached: bool,
    bound: Option<Duration>,
) -> Result<Option<Secret>> {
    let mut cmd = Command::new(ASK_PASSWORD);
    cmd.arg(format!("--timeout={}", bound.map_or(0, |b| b.as_secs())))
        .arg("--icon=drive-harddisk")
        .arg(format!("--id=zlive:{id}"))
        .arg(format!("--keyname={KEYNAME}"));
    if accept_cached {
        cmd.arg("--accept-cached");
    }
    let mut child = cmd
        .arg(message)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("Failed to run {ASK_PASSWORD}"))?;
    let mut secret = Secret::new();
    if let Some(mut out) = child.stdout.take() {
        secret.read_from(&mut out)?;
    }
    if !child.wait()?.success() {
        return Ok(None);
    }
    while secret.len > 0 && secret.bytes[secret.len - 1] == b'\n' {
        secret.len -= 1;
    }
    Ok(Some(secret))
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
        // Two writes, not a copy with the newline added.
        let _ = stdin
            .write_all(secret.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " ")),
    }
}

/// The encryption root of a dataset whose key is not loaded; `None` when it has none or it
/// is loaded.
pub fn locked_root_of(dataset: &Dataset) -> Option<String> {
    let lines = exec::lines(Command::new("zfs").args([
        "get",
        "-H",
        "-o",
        "value",
        "encryptionroot,keystatus",
        dataset.as_str(),
    ]))
    .ok()?;
    match lines.as_slice() {
        [root, status] if status == "unavailable" && root != "-" => Some(root.clone()),
        _ => None,
    }
}

/// The locked encryption roots of these zvols (those that are not hidden), each once.
pub fn locked_roots(rows: &[ZvolRow]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for row in rows.iter().filter(|r| r.locked && !r.hidden) {
        if let Some(root) = &row.encryption_root {
            if !roots.iter().any(|r| r == root.as_str()) {
                roots.push(root.to_string());
            }
        }
    }
    roots
}

/// Load the keys of these encryption roots, one zlive-load-key@ unit each, in turn (one
/// prompt at a time); returns the roots whose key is loaded now. A unit that ran before runs
/// again (an export unloaded its key). When a bounded prompt got no answer, nobody is at the
/// machine: the other roots are not asked for.
pub fn unlock(pid1: &mut Pid1, roots: &[String]) -> Result<Vec<String>> {
    let mut unlocked = Vec::new();
    for root in roots {
        let unit = units::load_key(root);
        let started = std::time::Instant::now();
        let state = pid1.restart_and_wait(&unit)?;
        let loaded = property(root, "keystatus").is_ok_and(|s| s == "available");
        if loaded {
            unlocked.push(root.clone());
            continue;
        }
        if state != "active" {
            warn!("{root} stays locked ({unit} is {state})");
        } else if started.elapsed() >= SCANNED_PROMPT {
            // A bounded prompt nobody answered (a skip is at once): nobody is there.
            info!("nobody answered the passphrase prompt of {root}; the other locked encryption roots are not asked for");
            break;
        }
    }
    Ok(unlocked)
}

/// Drop the passphrase systemd-ask-password cached under [`KEYNAME`] in the kernel keyring:
/// once every volume is open nothing needs it, and it must not outlive the initrd into the
/// live system. Whether there was one. (The unit that runs this shares the user keyring with
/// zlive-load-key@, `KeyringMode=shared`: only then may it search and drop the key.)
// keyctl(2) has no wrapper in nix; both calls pass only integers and NUL-terminated strings
// that outlive them.
#[allow(unsafe_code)]
pub fn forget_passphrases() -> Result<bool> {
    use nix::errno::Errno;
    use nix::libc::{c_long, syscall, SYS_keyctl, KEYCTL_INVALIDATE, KEYCTL_SEARCH};
    const KEY_SPEC_USER_KEYRING: c_long = -4;
    let kind = c"user";
    let name = std::ffi::CString::new(KEYNAME)?;
    // SAFETY: KEYCTL_SEARCH reads the two strings and returns a key serial or -1.
    let serial = unsafe {
        syscall(
            SYS_keyctl,
            c_long::from(KEYCTL_SEARCH),
            KEY_SPEC_USER_KEYRING,
            kind.as_ptr(),
            name.as_ptr(),
            0 as c_long,
        )
    };
    if serial < 0 {
        return match Errno::last() {
            Errno::ENOKEY | Errno::EKEYEXPIRED | Errno::EKEYREVOKED => Ok(false),
            e => Err(e).context("Failed to look for the cached passphrase in the kernel keyring"),
        };
    }
    // SAFETY: KEYCTL_INVALIDATE takes the serial only.
    if unsafe { syscall(SYS_keyctl, c_long::from(KEYCTL_INVALIDATE), serial) } < 0 {
        return Err(Errno::last()).context("Failed to drop the cached passphrase");
    }
    Ok(true)
}
