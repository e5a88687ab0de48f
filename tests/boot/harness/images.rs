//! The images every boot uses, built (or reused from the VM cache, keyed by content) by
//! `tests/vm/build-images.sh`, and the accelerator the guests run with.

use super::top;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Images {
    pub kernel: PathBuf,
    /// zlive's initrd.
    pub initrd: PathBuf,
    /// The same, with OpenZFS's own dracut module in it too.
    pub initrd_zfs: PathBuf,
    /// The live medium: an ext4 disk with `live/filesystem.squashfs` and this initrd's
    /// live-uuid.
    pub medium: PathBuf,
    /// Another live medium, with another live-uuid.
    pub medium_other: PathBuf,
    /// A new image of the same live system (its next release: files under /usr and /etc
    /// changed, one added), with this initrd's live-uuid.
    pub medium_new: PathBuf,
    /// The medium as an ISO 9660 image.
    pub medium_iso: PathBuf,
    /// Sticks holding that ISO as `/isos/live.iso`: ext4 and vfat (`findiso=`).
    pub stick_ext4: PathBuf,
    pub stick_vfat: PathBuf,
    /// An ext4 disk that needs journal recovery.
    pub dirty_disk: PathBuf,
    pub accel: &'static str,
}

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let text = run_builder("build-images.sh");
        let get = |key: &str| printed(&text, "build-images.sh", key);
        let kernel = get("KERNEL");
        let accel = choose_accel(&kernel);
        Images {
            initrd: get("INITRD"),
            initrd_zfs: get("INITRD_ZFS"),
            medium: get("MEDIUM"),
            medium_other: get("MEDIUM_OTHER"),
            medium_new: get("MEDIUM_NEW"),
            medium_iso: get("MEDIUM_ISO"),
            stick_ext4: get("STICK_EXT4"),
            stick_vfat: get("STICK_VFAT"),
            dirty_disk: get("DIRTY_DISK"),
            kernel,
            accel,
        }
    })
}

/// The live-build recipe's ISO with the test agent in it, built (about six minutes) or reused
/// by `tests/vm/build-live-iso.sh`, only for the tests that boot it.
pub fn live_build_iso() -> &'static Path {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| printed(live_build(), "build-live-iso.sh", "ISO"))
}

/// The certificate (PEM) of the key that signed that ISO's ZFS modules.
pub fn module_signing_pem() -> &'static Path {
    static PEM: OnceLock<PathBuf> = OnceLock::new();
    PEM.get_or_init(|| printed(live_build(), "build-live-iso.sh", "MODULE_SIGNING_PEM"))
}

fn live_build() -> &'static str {
    static PRINTED: OnceLock<String> = OnceLock::new();
    PRINTED.get_or_init(|| run_builder("build-live-iso.sh"))
}

/// The seed's initrd (Debian's live-boot with zfs-initramfs and the seed's change), built
/// (about five minutes) or reused by `tests/vm/build-seed-initrd.sh`, for the boot benchmark.
pub fn seed_initrd() -> &'static Path {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD.get_or_init(|| {
        printed(
            &run_builder("build-seed-initrd.sh"),
            "build-seed-initrd.sh",
            "SEED_INITRD",
        )
    })
}

/// Run an image builder of `tests/vm/`; what it printed (`KEY=VALUE` lines).
fn run_builder(script: &str) -> String {
    let out = Command::new("bash")
        .arg(top().join("tests/vm").join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "tests/vm/{script} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path a builder printed as `KEY=PATH`.
fn printed(text: &str, script: &str, key: &str) -> PathBuf {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{script} printed no {key}="))
        .into()
}

/// KVM when a guest kernel really runs under it, TCG otherwise (KVM is present but crashes
/// nested guests on some hosts). `ZLIVE_VM_ACCEL=kvm|tcg` overrides the probe.
fn choose_accel(kernel: &Path) -> &'static str {
    match std::env::var("ZLIVE_VM_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return "tcg";
    }
    // One probe per machine and hour: every test binary would otherwise pay for it.
    let memo = super::vm_cache().join("kvm-probe");
    let fresh = fs::metadata(&memo)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(3600));
    if fresh {
        match fs::read_to_string(&memo).as_deref() {
            Ok("kvm") => return "kvm",
            Ok("tcg") => return "tcg",
            _ => {}
        }
    }
    let accel = probe_kvm(kernel);
    let _ = fs::write(&memo, accel);
    accel
}

fn probe_kvm(kernel: &Path) -> &'static str {
    // The kernel alone, no initrd: it panics at once for want of a root, and panic=-1 reboots,
    // which -no-reboot turns into a clean exit.
    let spawned = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", "512", "-nographic", "-no-reboot"])
        .args(["-nic", "none", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        return "tcg";
    };
    let started = Instant::now();
    while !matches!(child.try_wait(), Ok(Some(_))) {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("KVM probe: no answer in 20 s, using TCG");
            return "tcg";
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    if text.contains("Kernel panic") {
        eprintln!("KVM probe: the guest kernel ran, using KVM");
        "kvm"
    } else {
        eprintln!("KVM probe: the guest did not reach its panic, using TCG");
        "tcg"
    }
}
