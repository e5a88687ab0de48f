//! `toram`: copy the image from the mounted medium into a tmpfs of its own, then release the
//! medium (and the ISO file's device), so that the stick can be pulled out once the system is
//! up. The image is mounted from TORAM_DIR either way: when the copy does not fit in memory
//! or fails, the image file on the medium is bind-mounted there and the medium stays.

use crate::exec::{console, run};
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use zlive::paths::{FINDISO_DIR, IMAGE_NAME, MEDIUM_DIR, TORAM_DIR};
use zlive::plan::Plan;

const MIB: u64 = 1 << 20;
/// Memory left for the live system itself after the copy: the larger of this and an eighth
/// of the machine's memory.
const RESERVE_MIN: u64 = 256 * MIB;
/// How often the console hears how far the copy is, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// Whether an image of `image` bytes fits in memory, given /proc/meminfo's `MemAvailable`
/// and `MemTotal` (bytes): the copy and the live system's reserve.
pub fn fits(image: u64, available: u64, total: u64) -> bool {
    let reserve = RESERVE_MIN.max(total / 8);
    image.saturating_add(reserve) <= available
}

/// A /proc/meminfo field, in bytes.
fn meminfo(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn copy_and_release(plan: &Plan) -> Result<()> {
    let image = plan.image_file();
    let size = fs::metadata(&image)
        .with_context(|| format!("toram: {image}"))?
        .len();
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (available, total) = (
        meminfo(&text, "MemAvailable").unwrap_or(0),
        meminfo(&text, "MemTotal").unwrap_or(0),
    );
    fs::create_dir_all(TORAM_DIR)?;
    if !fits(size, available, total) {
        warn!(
            "toram: the image is {} MiB and only {} MiB of memory are available (the live system keeps {} MiB); booting from the medium, which must stay in place",
            size / MIB,
            available / MIB,
            RESERVE_MIN.max(total / 8) / MIB
        );
        return bind_from_medium(&image);
    }
    // The tmpfs is sized to the image, so nothing else can fill it.
    let tmpfs_size = (size / MIB + 1) * MIB;
    let (ok, text) = run(Command::new("mount").args([
        "-t",
        "tmpfs",
        "-o",
        &format!("size={tmpfs_size},mode=0755,nosuid,nodev,noexec"),
        "zlive-toram",
        TORAM_DIR,
    ]))?;
    if !ok {
        warn!("toram: mounting a tmpfs on {TORAM_DIR} failed ({text}); booting from the medium");
        return bind_from_medium(&image);
    }
    let started = Instant::now();
    let copy = Path::new(TORAM_DIR).join(IMAGE_NAME);
    if let Err(e) = copy_with_progress(Path::new(&image), &copy, size) {
        warn!("toram: copying {image} into RAM failed: {e:#}; booting from the medium");
        let _ = run(Command::new("umount").arg(TORAM_DIR));
        return bind_from_medium(&image);
    }
    let seconds = started.elapsed().as_secs_f64().max(0.001);
    info!(
        "toram: {image} ({} MiB) copied into RAM in {seconds:.1} s ({:.0} MiB/s)",
        size / MIB,
        size as f64 / MIB as f64 / seconds
    );
    release(plan)
}

/// Unmount the medium and the ISO file's device: nothing of them is used any more.
fn release(plan: &Plan) -> Result<()> {
    let mut mounts = vec![MEDIUM_DIR];
    if plan.cmdline.findiso.is_some() {
        mounts.push(FINDISO_DIR);
    }
    for at in mounts {
        if let Err(e) = crate::exec::umount(at) {
            warn!("toram: {e:#}; {at} stays mounted: do not remove the medium");
            return Ok(());
        }
    }
    info!("toram: the live medium is released and may be removed");
    console("zlive: the live system runs from RAM; the medium may be removed\n");
    Ok(())
}

/// The image on the medium, bind-mounted where the copy would be.
fn bind_from_medium(image: &str) -> Result<()> {
    let target = Path::new(TORAM_DIR).join(IMAGE_NAME);
    File::create(&target)?;
    let (ok, text) = run(Command::new("mount").arg("--bind").arg(image).arg(&target))?;
    if !ok {
        bail!(
            "toram: bind-mounting {image} on {} failed: {text}",
            target.display()
        );
    }
    Ok(())
}

fn copy_with_progress(from: &Path, to: &Path, size: u64) -> Result<()> {
    let mut input = File::open(from)?;
    let mut output = File::create(to)?;
    let mut buffer = vec![0u8; 4 * MIB as usize];
    let (mut done, mut told) = (0u64, Instant::now());
    console(&format!(
        "zlive: copying the live image ({} MiB) into RAM (toram)\n",
        size / MIB
    ));
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        output.write_all(&buffer[..n])?;
        done += n as u64;
        if told.elapsed() >= PROGRESS_EVERY {
            told = Instant::now();
            console(&progress(done, size));
        }
    }
    if done != size {
        bail!("read {done} bytes of {size}: the medium changed or went away");
    }
    console(&progress(done, size));
    Ok(())
}

fn progress(done: u64, size: u64) -> String {
    let percent = (done * 100).checked_div(size).unwrap_or(100);
    format!(
        "zlive: toram: {percent}% ({} of {} MiB)\n",
        done / MIB,
        size / MIB
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_must_leave_the_live_system_its_reserve() {
        let gib = 1024 * MIB;
        // 1.5 GiB machine, 1.3 GiB available: a 400 MiB image fits, a 1.1 GiB one does not.
        assert!(fits(400 * MIB, 1300 * MIB, 1536 * MIB));
        assert!(!fits(1100 * MIB, 1300 * MIB, 1536 * MIB));
        // 16 GiB machine: the reserve is an eighth, 2 GiB.
        assert!(fits(3 * gib, 14 * gib, 16 * gib));
        assert!(!fits(13 * gib, 14 * gib, 16 * gib));
        assert!(!fits(u64::MAX - 1, u64::MAX - 1, 0), "no overflow");
    }

    #[test]
    fn meminfo_fields_in_bytes() {
        let text = "MemTotal:        1530000 kB\nMemFree:  100 kB\nMemAvailable:    1300000 kB\n";
        assert_eq!(meminfo(text, "MemAvailable"), Some(1_300_000 * 1024));
        assert_eq!(meminfo(text, "MemTotal"), Some(1_530_000 * 1024));
        assert_eq!(meminfo(text, "Mem"), None);
    }

    #[test]
    fn progress_lines() {
        assert_eq!(progress(0, 0), "zlive: toram: 100% (0 of 0 MiB)\n");
        assert_eq!(
            progress(50 * MIB, 200 * MIB),
            "zlive: toram: 25% (50 of 200 MiB)\n"
        );
    }

    #[test]
    fn a_copy_is_checked_against_the_size() {
        let dir = crate::testing::tmp();
        let (from, to) = (dir.join("image"), dir.join("copy"));
        fs::write(&from, vec![7u8; 5 * MIB as usize + 3]).unwrap();
        copy_with_progress(&from, &to, 5 * MIB + 3).unwrap();
        assert_eq!(fs::read(&from).unwrap(), fs::read(&to).unwrap());
        assert!(copy_with_progress(&from, &to, 6 * MIB).is_err());
    }
}
