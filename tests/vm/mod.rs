//! The boot-test harness: images (built and cached by `build-images.sh`), pools (built in a
//! setup guest, cached by the content of their payload), and QEMU boots whose serial output
//! is split into the sections the initrd and the live root's agent print.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug)]
pub struct Images {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub initrd_zfs: PathBuf,
    pub medium: PathBuf,
    pub accel: &'static str,
}

/// Boots run one at a time: two TCG guests on two cores only slow each other down.
static VM_LOCK: Mutex<()> = Mutex::new(());

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let out = Command::new("bash")
            .arg(top().join("tests/vm/build-images.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run build-images.sh");
        assert!(out.status.success(), "tests/vm/build-images.sh failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| -> PathBuf {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("build-images.sh printed no {key}"))
                .into()
        };
        let kernel = get("KERNEL");
        let accel = choose_accel(&kernel);
        Images {
            initrd: get("INITRD"),
            initrd_zfs: get("INITRD_ZFS"),
            medium: get("MEDIUM"),
            kernel,
            accel,
        }
    })
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
    let memo = top().join("target/vm-cache/kvm-probe");
    if let Ok(meta) = fs::metadata(&memo) {
        let fresh = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(3600));
        if fresh {
            match fs::read_to_string(&memo).as_deref() {
                Ok("kvm") => return "kvm",
                Ok("tcg") => return "tcg",
                _ => {}
            }
        }
    }
    let accel = probe_kvm(kernel);
    let _ = fs::write(&memo, accel);
    accel
}

fn probe_kvm(kernel: &Path) -> &'static str {
    // The kernel alone, no initrd: it panics at once for want of a root, and panic=-1 reboots,
    // which -no-reboot turns into a clean exit.
    let mut child = match Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-kernel",
        ])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return "tcg",
    };
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("KVM probe: no answer in 20 s, using TCG");
            return "tcg";
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut text = String::new();
    use std::io::Read;
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

fn artifacts(test: &str) -> PathBuf {
    let dir = top().join("target/vm-artifacts").join(test);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pool disk: `setup` is a shell script run in the setup guest (`sh -e`), `files` go into
/// `/payload/volume` (path, content, mode); the standard script copies them onto the volume.
pub struct PoolSpec<'a> {
    pub setup: &'a str,
    pub files: &'a [(&'a str, &'a str)],
}

pub const STANDARD_POOL: &str = include_str!("pool-standard.sh");

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..16].to_owned()
}

/// A digest of a disk image, to show that a boot left it alone.
pub fn digest(path: &Path) -> String {
    sha256_hex(path)
}

/// A pool whose volume holds only a persistence.conf.
pub fn conf_pool(test: &str, setup: &str, conf: &str) -> PathBuf {
    pool(
        test,
        &PoolSpec {
            setup,
            files: &[("persistence.conf", conf)],
        },
    )
}

/// Build (or reuse) the pool, and return a fresh copy for this test.
pub fn pool(test: &str, spec: &PoolSpec) -> PathBuf {
    let images = images();
    let cache = top().join("target/vm-cache/pools");
    fs::create_dir_all(&cache).unwrap();
    let work = artifacts(test).join("payload");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("volume")).unwrap();
    fs::write(work.join("setup-pool.sh"), spec.setup).unwrap();
    for (path, content) in spec.files {
        let p = work.join("volume").join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    let tar = artifacts(test).join("payload.tar");
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(&work)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let key = sha256_hex(&tar);
    let pristine = cache.join(format!("pool-{key}.img"));
    if !pristine.exists() {
        let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = cache.join(format!("pool-{key}.tmp"));
        fs::File::create(&tmp).unwrap().set_len(512 << 20).unwrap();
        let serial = run_qemu(
            &images.initrd,
            "console=ttyS0 zlive.test.setup panic=-1",
            &[(&tmp, false), (&tar, true)],
            Duration::from_secs(600),
        );
        fs::write(artifacts(test).join("setup-serial.log"), &serial).unwrap();
        assert!(
            serial.contains("ZLIVE-SETUP-OK"),
            "building the pool failed; see target/vm-artifacts/{test}/setup-serial.log"
        );
        fs::rename(&tmp, &pristine).unwrap();
    }
    let copy = artifacts(test).join("pool.img");
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(&pristine)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

fn run_qemu(initrd: &Path, append: &str, disks: &[(&Path, bool)], timeout: Duration) -> String {
    let images = images();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        images.accel,
        "-m",
        "1536",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
    ])
    .args(["-nic", "none", "-kernel"])
    .arg(&images.kernel)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(append);
    for (disk, read_only) in disks {
        let mut spec = format!("file={},format=raw,if=virtio", disk.display());
        if *read_only {
            spec.push_str(",readonly=on");
        }
        cmd.arg("-drive").arg(spec);
    }
    let log = tempfile_path();
    let mut child = cmd
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        // The live root asked for a power cut: kill QEMU, no shutdown of any kind.
        if fs::read(&log).is_ok_and(|b| b.windows(15).any(|w| w == b"ZLIVE-CUT-POWER")) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let _ = writeln!(f, "\nZLIVE-HARNESS: killed after {} s", timeout.as_secs());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let serial = String::from_utf8_lossy(&fs::read(&log).unwrap()).replace('\r', "");
    let _ = fs::remove_file(&log);
    serial
}

fn tempfile_path() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "zlive-serial-{}-{}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// The seed's command line, as in live-boot.
pub const SEED: &str = "boot=live noeject persistence skipconfig quiet splash";

/// What one boot printed.
#[derive(Debug)]
pub struct Boot {
    pub name: String,
    pub serial: String,
    pub sections: HashMap<String, String>,
    pub wall: Duration,
}

/// Boot the live system with the medium named (`live-media=/dev/vdb`). `cmdline` is the
/// live-boot part; `script` runs in the live root.
pub fn boot(test: &str, n: usize, initrd: &Path, pool: &Path, cmdline: &str, script: &str) -> Boot {
    boot_exactly(
        test,
        n,
        initrd,
        pool,
        &format!("{cmdline} live-media=/dev/vdb"),
        script,
    )
}

/// Boot with exactly this live-boot command line (no medium named: zlive scans for it).
pub fn boot_exactly(
    test: &str,
    n: usize,
    initrd: &Path,
    pool: &Path,
    cmdline: &str,
    script: &str,
) -> Boot {
    let images = images();
    let encoded = base64(script.as_bytes());
    let append = format!(
        "console=ttyS0 {cmdline} rd.shell=0 panic=-1 systemd.journald.forward_to_console=1 zlive.test.script={encoded}"
    );
    let started = Instant::now();
    let serial = {
        let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        run_qemu(
            initrd,
            &append,
            &[(pool, false), (&images.medium, true)],
            Duration::from_secs(420),
        )
    };
    let wall = started.elapsed();
    let dir = artifacts(test).join(format!("boot{n}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("serial.log"), &serial).unwrap();
    fs::write(dir.join("cmdline.txt"), &append).unwrap();
    let sections = split_sections(&serial);
    for (name, text) in &sections {
        fs::write(dir.join(format!("{name}.txt")), text).unwrap();
    }
    let boot = Boot {
        name: format!("{test}/boot{n}"),
        serial,
        sections,
        wall,
    };
    boot.print_timings();
    boot
}

fn split_sections(serial: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in serial.lines() {
        if let Some(name) = line.strip_prefix("=== ZLIVE-BEGIN ") {
            current = Some((name.trim().to_owned(), String::new()));
        } else if line.starts_with("=== ZLIVE-END ") {
            if let Some((name, text)) = current.take() {
                out.insert(name, text);
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Boot {
    fn where_(&self) -> String {
        format!("see target/vm-artifacts/{}/", self.name)
    }

    pub fn section(&self, name: &str) -> &str {
        self.sections.get(name).map(String::as_str).unwrap_or("")
    }

    /// The agent ran to its end and no check failed.
    pub fn assert_agent_ok(&self) {
        self.assert_reached(
            "ZLIVE-AGENT-DONE",
            "the live root's agent did not finish (no switch-root, or a hang)",
        );
    }

    /// The agent ran the scenario up to its power cut, with no check failed.
    pub fn assert_power_cut(&self) {
        self.assert_reached(
            "ZLIVE-CUT-POWER",
            "the scenario did not reach its power cut",
        );
    }

    /// The scenario asked for a normal poweroff, and the guest powered itself off (QEMU was
    /// not killed). Prints how long the shutdown took, from the guest's clock.
    pub fn assert_clean_poweroff(&self) {
        self.assert_reached(
            "ZLIVE-CLEAN-POWEROFF",
            "the scenario did not reach its poweroff",
        );
        let powered_down = self
            .serial
            .lines()
            .find(|l| l.contains("reboot: Power down"));
        assert!(
            powered_down.is_some() && !self.serial.contains("ZLIVE-HARNESS: killed"),
            "{}: systemctl poweroff did not power the guest off; {}",
            self.name,
            self.where_()
        );
        let asked = self
            .serial
            .lines()
            .find_map(|l| l.strip_prefix("ZLIVE-CLEAN-POWEROFF uptime="))
            .and_then(|t| t.trim().parse::<f64>().ok());
        let done = powered_down.and_then(printk_seconds);
        if let (Some(asked), Some(done)) = (asked, done) {
            println!(
                "TIMING {}: systemctl poweroff to power down {:.2}s",
                self.name,
                done - asked
            );
        }
    }

    fn assert_reached(&self, marker: &str, otherwise: &str) {
        assert!(
            self.serial.contains(marker),
            "{}: {otherwise}; {}",
            self.name,
            self.where_()
        );
        let failures: Vec<&str> = self
            .serial
            .lines()
            .filter(|l| l.starts_with("ZLIVE-FAIL"))
            .collect();
        assert!(
            failures.is_empty(),
            "{}: checks failed in the live root:\n{}\n{}",
            self.name,
            failures.join("\n"),
            self.where_()
        );
    }

    /// `(active, sub)` of a unit in `systemctl list-units --all` taken in the initrd.
    pub fn unit_state(&self, unit: &str) -> Option<(String, String)> {
        self.section("units").lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&unit) && f.len() >= 4).then(|| (f[2].to_owned(), f[3].to_owned()))
        })
    }

    pub fn assert_active(&self, unit: &str) {
        match self.unit_state(unit) {
            Some((active, _)) if active == "active" => {}
            other => panic!(
                "{}: {unit} is {other:?} in the initrd, expected active; {}",
                self.name,
                self.where_()
            ),
        }
    }

    pub fn assert_failed(&self, unit: &str) {
        match self.unit_state(unit) {
            Some((active, _)) if active == "failed" => {}
            other => panic!(
                "{}: {unit} is {other:?} in the initrd, expected failed; {}",
                self.name,
                self.where_()
            ),
        }
    }

    pub fn assert_absent(&self, unit_prefix: &str) {
        let found: Vec<&str> = self
            .section("units")
            .lines()
            .filter(|l| l.starts_with(unit_prefix))
            .collect();
        assert!(
            found.is_empty(),
            "{}: expected no {unit_prefix}* units, found:\n{}",
            self.name,
            found.join("\n")
        );
    }

    pub fn assert_no_failed_units(&self) {
        let failed = self.section("failed").trim();
        assert!(
            failed.is_empty(),
            "{}: failed units in the initrd:\n{failed}\n{}",
            self.name,
            self.where_()
        );
    }

    pub fn assert_journal(&self, needle: &str) {
        assert!(
            self.section("journal").contains(needle),
            "{}: the initrd's journal does not contain {needle:?}; {}",
            self.name,
            self.where_()
        );
    }

    pub fn assert_journal_any(&self, needles: &[&str]) {
        assert!(
            needles.iter().any(|n| self.section("journal").contains(n)),
            "{}: the initrd's journal contains none of {needles:?}; {}",
            self.name,
            self.where_()
        );
    }

    /// The exit status `zlive status` had in the initrd, and its output.
    pub fn status_in_initrd(&self) -> (i32, &str) {
        self.status_from("status")
    }

    /// The exit status `zlive status` had in the live root (after switch-root), and its output.
    pub fn status_in_live_root(&self) -> (i32, &str) {
        self.status_from("live-status")
    }

    fn status_from(&self, section: &str) -> (i32, &str) {
        let text = self.section(section);
        let code = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("exit="))
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(-1);
        (code, text)
    }

    /// `zlive status --json` as taken in the initrd.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(self.section("status-json").trim()).unwrap_or_else(|e| {
            panic!(
                "{}: zlive status --json printed no JSON ({e}): {}",
                self.name,
                self.section("status-json")
            )
        })
    }

    /// What `journalctl -u UNIT` showed in the initrd.
    pub fn unit_journal(&self, unit: &str) -> String {
        let text = self.section("unit-journals");
        let mut lines = text
            .lines()
            .skip_while(|l| *l != format!("## {unit}"))
            .skip(1);
        let mut out = String::new();
        for l in lines.by_ref() {
            if l.starts_with("## ") {
                break;
            }
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// The live root's overlay keeps its changes in RAM (no persistence for `/`).
    pub fn assert_root_in_ram(&self) {
        let (_, options) = self
            .mount_of("/")
            .unwrap_or_else(|| panic!("{}: no mount on / in the live root", self.name));
        assert!(
            options.contains("upperdir=/run/live/overlay/rw"),
            "{}: / is not in RAM: {options}",
            self.name
        );
    }

    /// The live root's mount at `dir`: (fstype, super options).
    pub fn mount_of(&self, dir: &str) -> Option<(String, String)> {
        self.section("mountinfo").lines().rev().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            (f.get(4) == Some(&dir)).then(|| {
                (
                    f[dash + 1].to_owned(),
                    f.get(dash + 3).unwrap_or(&"").to_string(),
                )
            })
        })
    }

    /// Seconds since kernel start of the first journal line containing `needle`.
    fn at(&self, needle: &str) -> Option<f64> {
        self.section("journal")
            .lines()
            .find(|l| l.contains(needle))
            .and_then(printk_seconds)
    }

    /// Start and end (seconds since kernel start) of a unit's job, from the journal.
    pub fn step(&self, unit: &str) -> Option<(f64, f64)> {
        let start = self
            .at(&format!("Starting {unit}"))
            .or_else(|| self.at(&format!("Mounting {unit}")))?;
        let end = self
            .at(&format!("Finished {unit}"))
            .or_else(|| self.at(&format!("Mounted {unit}")))
            .or_else(|| self.at(&format!("Failed to start {unit}")))
            .or_else(|| self.at(&format!("{unit}: Failed")))?;
        Some((start, end))
    }

    /// Time from kernel start to the live root's init, and the parts spent in each step.
    pub fn print_timings(&self) {
        // "Switching root." is PID 1's last line in the initrd's journal; the agent's start
        // (live system up) is the fallback.
        let switch = self
            .serial
            .lines()
            .find(|l| l.contains("Switching root."))
            .and_then(printk_seconds);
        let live = self
            .serial
            .lines()
            .find_map(|l| l.strip_prefix("ZLIVE-AGENT-START uptime="))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let mut parts = Vec::new();
        // zpool loads the module: that part of the import is the module load.
        if let (Some(start), Some(loaded)) = (
            self.at("Starting zlive-import"),
            self.at("ZFS: Loaded module"),
        ) {
            if loaded >= start {
                parts.push(format!("zfs module load {:.2}s", loaded - start));
            } else {
                parts.push("zfs module loaded before the import".to_owned());
            }
        }
        let steps = [
            ("import", "zlive-import"),
            ("volume", "zlive-volume@"),
            ("fsck", "systemd-fsck@dev"),
            ("volume mount", "run-live-persistence-"),
            ("reload", "zlive-reload.service"),
            ("root overlay", "sysroot.mount"),
        ];
        for (label, unit) in steps {
            if let Some((a, b)) = self.step(unit) {
                parts.push(format!("{label} {:.2}s", b - a));
            }
        }
        // The entry mounts run in parallel: from the first start to the last finish.
        let entries: Vec<(f64, f64)> = self
            .section("units")
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|u| u.starts_with("sysroot-") && u.ends_with(".mount"))
            .filter_map(|u| self.step(u))
            .collect();
        if !entries.is_empty() {
            let first = entries.iter().map(|e| e.0).fold(f64::MAX, f64::min);
            let last = entries.iter().map(|e| e.1).fold(0.0, f64::max);
            parts.push(format!(
                "{} entry mounts {:.2}s",
                entries.len(),
                last - first
            ));
        }
        let shown = |t: Option<f64>| t.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into());
        eprintln!(
            "TIMING {}: kernel start to switch-root {} (live system up at {}; wall {:.1}s, accel {}): {}",
            self.name,
            shown(switch),
            shown(live),
            self.wall.as_secs_f64(),
            images().accel,
            parts.join(", ")
        );
    }
}

/// The timestamp of a kernel console or `short-monotonic` journal line, `[   12.345678] …`,
/// in seconds.
fn printk_seconds(line: &str) -> Option<f64> {
    let inside = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inside.trim().parse().ok()
}
