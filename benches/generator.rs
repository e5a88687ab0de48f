//! Benchmark (not a test): wall time of `zlive-generator` pass 2 with 10, 100 and 1000
//! persistence entries, side by side with systemd-fstab-generator given the same overlay
//! mounts as x-initrd.mount entries through SYSTEMD_SYSROOT_FSTAB; and the stripped size of
//! both binaries. Run with `cargo bench --bench generator` (`ZLIVE_BENCH_GENERATOR=PATH`
//! measures another build of the generator, a static one say, instead of this one).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FSTAB_GENERATOR: &str = "/usr/lib/systemd/system-generators/systemd-fstab-generator";
const VOL: &str = "run/live/persistence/persistence";
const IMAGE: &str = "run/live/rootfs/filesystem.squashfs";

/// On a tmpfs when there is one: at boot generators write to /run/systemd/generator*, a tmpfs.
fn scratch() -> PathBuf {
    let parent = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = parent.join(format!("zlive-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A fake root with the volume and image mounted and `n` union entries.
fn zlive_root(base: &Path, n: usize) -> PathBuf {
    let root = base.join(format!("root-{n}"));
    fs::create_dir_all(root.join("proc/self")).unwrap();
    fs::write(
        root.join("proc/self/mountinfo"),
        format!("30 1 7:0 / /{IMAGE} ro - squashfs /dev/loop0 ro\n31 1 230:0 / /{VOL} rw - ext4 /dev/zd0 rw\n"),
    )
    .unwrap();
    let mut conf = String::new();
    for i in 0..n {
        fs::create_dir_all(root.join(IMAGE).join(format!("srv/e{i}"))).unwrap();
        conf.push_str(&format!("/srv/e{i} union\n"));
    }
    fs::create_dir_all(root.join(VOL)).unwrap();
    fs::write(root.join(VOL).join("persistence.conf"), conf).unwrap();
    // The volume step's record of the device it checked, which pass 2 compares with the
    // mount's (without it the volume adds nothing).
    fs::create_dir_all(root.join("run/zlive/checked")).unwrap();
    fs::write(root.join("run/zlive/checked/persistence"), "230:0\n").unwrap();
    root
}

fn fstab(base: &Path, n: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "overlay /srv/e{i} overlay x-initrd.mount,noatime,lowerdir=/{IMAGE}/srv/e{i},upperdir=/{VOL}/srv/e{i}/rw,workdir=/{VOL}/srv/e{i}/work 0 0\n"
        ));
    }
    let p = base.join(format!("fstab-{n}"));
    fs::write(&p, text).unwrap();
    p
}

/// Median wall time of `runs` runs, each into fresh output directories.
fn time(base: &Path, runs: usize, mut make: impl FnMut(&Path) -> Command) -> Duration {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let out = base.join(format!("out-{i}"));
        for d in ["n", "e", "l"] {
            fs::create_dir_all(out.join(d)).unwrap();
        }
        let mut cmd = make(&out);
        let start = Instant::now();
        let status = cmd.status().unwrap();
        samples.push(start.elapsed());
        assert!(status.success());
        fs::remove_dir_all(&out).unwrap();
    }
    samples.sort();
    samples[runs / 2]
}

fn stripped_size(binary: &Path, base: &Path) -> u64 {
    let copy = base.join("stripped");
    fs::copy(binary, &copy).unwrap();
    let _ = Command::new("strip").arg(&copy).status();
    fs::metadata(&copy).unwrap().len()
}

const CMDLINE: &str = "boot=live persistence live-media=/dev/vdb persistence-zpool=dpool";

/// The generator on a fake root, into `dirs` (one directory, or normal/early/late).
fn generator_command(generator: &Path, root: &Path, dirs: &[PathBuf]) -> Command {
    let mut c = Command::new(generator);
    c.args(dirs)
        .env("SYSTEMD_IN_INITRD", "1")
        .env("SYSTEMD_PROC_CMDLINE", CMDLINE)
        .env("ZLIVE_ROOT", root)
        .env("SYSTEMD_LOG_LEVEL", "err");
    c
}

fn three(out: &Path) -> Vec<PathBuf> {
    ["n", "e", "l"].iter().map(|d| out.join(d)).collect()
}

/// The runs measured pass 2 with every entry: one more run, whose output is counted.
fn check_pass_two(generator: &Path, base: &Path, root: &Path, n: usize) {
    let check = base.join("check");
    fs::create_dir_all(&check).unwrap();
    generator_command(generator, root, std::slice::from_ref(&check))
        .status()
        .unwrap();
    let mounts = fs::read_dir(&check)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("sysroot-srv-")
        })
        .count();
    assert_eq!(mounts, n, "pass 2 did not produce {n} entry units");
    fs::remove_dir_all(&check).unwrap();
}

/// systemd-fstab-generator with the same mounts as `x-initrd.mount` entries, if installed.
fn fstab_time(base: &Path, n: usize, runs: usize) -> String {
    if !Path::new(FSTAB_GENERATOR).exists() {
        return "not installed".to_owned();
    }
    let tab = fstab(base, n);
    let runs = if n == 1000 { 5 } else { runs };
    let t = time(base, runs, |out| {
        let mut c = Command::new(FSTAB_GENERATOR);
        c.args(three(out))
            .env("SYSTEMD_IN_INITRD", "1")
            .env("SYSTEMD_PROC_CMDLINE", "rd.systemd.gpt_auto=0")
            .env("SYSTEMD_SYSROOT_FSTAB", &tab)
            .env("SYSTEMD_FSTAB", "/dev/null")
            .env("SYSTEMD_LOG_LEVEL", "err");
        c
    });
    format!("{:>10.3} ms", t.as_secs_f64() * 1e3)
}

fn main() {
    // Another build of the generator to measure (a static one, say): ZLIVE_BENCH_GENERATOR.
    let other = std::env::var_os("ZLIVE_BENCH_GENERATOR").map(PathBuf::from);
    let generator = other
        .as_deref()
        .unwrap_or(Path::new(env!("CARGO_BIN_EXE_zlive-generator")));
    let base = scratch();
    println!("output and inputs in {}", base.display());
    println!("generator: {}", generator.display());
    println!("entries  zlive-generator pass 2   systemd-fstab-generator   (median wall time)");
    let mut zlive_times = Vec::new();
    for (n, runs) in [(10usize, 301usize), (100, 101), (1000, 21)] {
        let root = zlive_root(&base, n);
        let z = time(&base, runs, |out| {
            generator_command(generator, &root, &three(out))
        });
        check_pass_two(generator, &base, &root, n);
        let f = fstab_time(&base, n, runs);
        println!("{n:>7}  {:>20.3} ms   {f:>23}", z.as_secs_f64() * 1e3);
        zlive_times.push((n, z));
    }
    // What any process costs here, for scale: /bin/true, and the generator with no boot=live.
    let floor = time(&base, 301, |_| Command::new("/bin/true"));
    let inactive = time(&base, 301, |out| {
        let mut c = Command::new(generator);
        c.args(three(out))
            .env("SYSTEMD_IN_INITRD", "1")
            .env("SYSTEMD_PROC_CMDLINE", "quiet");
        c
    });
    println!(
        "process start for scale: /bin/true {:.3} ms, zlive-generator without boot=live {:.3} ms",
        floor.as_secs_f64() * 1e3,
        inactive.as_secs_f64() * 1e3
    );
    let (n0, t0) = zlive_times[0];
    let (n2, t2) = zlive_times[2];
    println!(
        "growth: {:.1}x the time for {}x the entries (10 -> 1000)",
        t2.as_secs_f64() / t0.as_secs_f64(),
        n2 / n0
    );
    println!(
        "stripped size: zlive-generator {} bytes",
        stripped_size(generator, &base)
    );
    if Path::new(FSTAB_GENERATOR).exists() {
        println!(
            "stripped size: systemd-fstab-generator {} bytes (plus the shared libsystemd-shared it links)",
            stripped_size(Path::new(FSTAB_GENERATOR), &base)
        );
    }
    let _ = fs::remove_dir_all(&base);
}
