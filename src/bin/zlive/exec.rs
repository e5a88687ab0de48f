//! Running the tools zlive drives (zpool, zfs, blkid, mount): their success and what they said.

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Run a command; `(succeeded, stderr and stdout, trimmed)`. Failing to start it is an error.
pub fn run(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd
        .output()
        .with_context(|| format!("Failed to run {:?}", cmd.get_program()))?;
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    Ok((out.status.success(), text))
}

/// The standard output of a command that must succeed, as lines.
pub fn lines(cmd: &mut Command) -> Result<Vec<String>> {
    let out = cmd
        .output()
        .with_context(|| format!("Failed to run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// One tag (`TYPE`, `LABEL`, `UUID`) of what is on a device, probed from the device itself
/// (blkid without its cache), not udev's record of it; `None` when there is none.
pub fn probe(device: &str, tag: &str) -> Option<String> {
    lines(Command::new("blkid").args(["-c", "/dev/null", "-o", "value", "-s", tag, device]))
        .ok()?
        .into_iter()
        .next()
}

/// The standard output of a command, whatever its exit status (blkid exits 2 when a device
/// holds nothing it knows); empty when it cannot be run.
pub fn stdout(cmd: &mut Command) -> String {
    cmd.stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Run a command to its end, or kill it at the deadline; its error output when it failed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<()> {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("Failed to run {:?}", cmd.get_program()))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("{}", err.trim().replace('\n', " "));
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A line on the console, where a person at the machine looks (a long copy, a prompt that
/// will not wait for ever); best effort.
pub fn console(line: &str) {
    use std::io::Write;
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = c.write_all(line.as_bytes());
    }
}

/// Unmount `at`, retrying for a moment while it is busy: the loop device of an ISO file just
/// unmounted lets go of the file (on the device below) only shortly after.
pub fn umount(at: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        let (ok, text) = run(Command::new("umount").arg(at))?;
        if ok {
            return Ok(());
        }
        tries += 1;
        if !text.contains("busy") || tries >= 30 {
            bail!("unmounting {at} failed: {text}");
        }
        sleep(Duration::from_millis(100));
    }
}
