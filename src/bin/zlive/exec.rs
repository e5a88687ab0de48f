//! Running the tools zlive drives (zpool, zfs, blkid, mount): their success and what they said.

use anyhow::{Context, Result};
use std::process::Command;

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
