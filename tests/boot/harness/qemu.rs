//! Running guests: `ZLIVE_VMS` at a time (default one), with the serial console captured, a
//! power cut on request and a bounded run time.

use super::images::images;
use super::pool::Pool;
use super::serial::Boot;
use super::{artifacts, timing};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The seed's command line, as in live-boot.
pub const SEED: &str = "boot=live noeject persistence skipconfig quiet splash";

/// How many guests run at once: `ZLIVE_VMS` (1 to 4, default 1), with as many test threads.
/// A TCG guest keeps about one core busy whatever its vCPUs, and idles while it waits: two
/// guests of one vCPU each get more from two cores than one guest of two.
pub fn vm_slots() -> usize {
    std::env::var("ZLIVE_VMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1usize)
        .clamp(1, 4)
}

static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A place among the guests that may run at once, held while one runs.
struct Slot;

impl Slot {
    fn take() -> Slot {
        let (count, freed) = &RUNNING;
        let mut running = count.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= vm_slots() {
            running = freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// How long one boot of the live system may take before the harness kills it.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// The firmware UUID of the live system's machine (its host id derives from it).
pub const MACHINE_UUID: &str = "5a11ce00-0000-4000-8000-00000000c0de";

/// Run a guest with these disks (path, read-only) until it powers off, asks for a power cut
/// (`ZLIVE-CUT-POWER` on the console) or times out. Returns the serial output.
pub fn run(initrd: &Path, append: &str, disks: &[(&Path, bool)], timeout: Duration) -> String {
    Guest {
        start: Start::Kernel {
            initrd,
            append,
            fw_cfg_script: None,
        },
        disks,
        timeout,
        uuid: None,
        answers: &[],
        usb: None,
        cdrom: None,
        uefi: None,
    }
    .run()
}

/// The text of the password prompts a person answers on the serial console: zlive's for
/// ZFS keys, systemd-cryptsetup's for LUKS.
pub const PROMPTS: &[&str] = &[
    "Passphrase for ZFS dataset",
    "passphrase for disk",
    "New passphrase for",
    "The same passphrase again for",
];

/// How a guest starts.
pub enum Start<'a> {
    /// QEMU loads the lab's kernel with this initrd and command line; a scenario too long
    /// for the command line comes through fw_cfg (`fw_cfg_script`).
    Kernel {
        initrd: &'a Path,
        append: &'a str,
        fw_cfg_script: Option<&'a str>,
    },
    /// The firmware boots the CD-ROM, else the USB stick, with the boot loader on it (an
    /// ISO's). The command line is the boot menu's, so the agent's scenario comes through
    /// QEMU's fw_cfg (`opt/zlive.test.script`, base64) instead.
    Firmware { script: &'a str },
    /// The same, with a boot menu entry chosen as a person would.
    Menu {
        script: &'a str,
        choice: &'a MenuChoice<'a>,
    },
}

/// How a boot through the medium's menu goes: `keys` typed on the serial console once the
/// boot loader printed `seen` there, and the power cut once the console shows `cut_at`.
#[derive(Clone, Copy)]
pub struct MenuChoice<'a> {
    pub seen: &'a str,
    pub keys: &'a str,
    pub cut_at: Option<&'a str>,
}

/// The scenario as QEMU's fw_cfg item `opt/zlive.test.script` (base64), which the agent reads
/// when the command line has none.
fn fw_cfg(script: &str) -> [String; 2] {
    [
        "-fw_cfg".to_owned(),
        format!(
            "name=opt/zlive.test.script,string={}",
            base64(script.as_bytes())
        ),
    ]
}

/// One guest run.
pub struct Guest<'a> {
    pub start: Start<'a>,
    pub disks: &'a [(&'a Path, bool)],
    pub timeout: Duration,
    /// The machine's firmware UUID (none: QEMU's default, all zeros).
    pub uuid: Option<&'a str>,
    /// Typed on the serial console, one at each new password prompt, as a person would.
    pub answers: &'a [&'a str],
    /// A read-only USB stick (removable, /dev/sda), which the live root may ask the harness
    /// to pull out (`ZLIVE-UNPLUG-MEDIUM` on the console).
    /// A USB stick: its image, and whether the guest may write to it.
    pub usb: Option<(&'a Path, bool)>,
    /// A CD-ROM (/dev/sr0).
    pub cdrom: Option<&'a Path>,
    /// UEFI firmware (OVMF), and the writable copy of its variable store; none: BIOS.
    pub uefi: Option<(Firmware, &'a Path)>,
}

/// The machine's firmware, for boots through the medium's own boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF (Debian's `ovmf`), Secure Boot off.
    Uefi,
    /// OVMF with Secure Boot on and Microsoft's keys enrolled, as on a laptop from a shop:
    /// Debian's signed shim, GRUB and kernel boot, and the kernel is locked down.
    SecureBoot,
    /// The same machine after its user enrolled the live-build image's module signing key in
    /// shim's MokList, as MokManager does after `zlive secure-boot --enroll` (written into the
    /// variable store by `virt-fw-vars --add-mok`: MokManager's screen takes no serial input).
    SecureBootEnrolled,
}

/// shim's GUID, the owner of the MokList entries it adds.
const SHIM_GUID: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";

impl Firmware {
    /// OVMF's code and the variable store every boot gets a fresh copy of.
    fn ovmf(self) -> Option<(&'static str, &'static str)> {
        match self {
            Firmware::Bios => None,
            Firmware::Uefi => Some((
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
            )),
            Firmware::SecureBoot | Firmware::SecureBootEnrolled => Some((
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
            )),
        }
    }
}

/// Add a certificate (PEM) to shim's MokList in an OVMF variable store.
fn enrol_mok(vars: &Path, pem: &Path) {
    let out = Command::new("virt-fw-vars")
        .arg("--inplace")
        .arg(vars)
        .args(["--add-mok", SHIM_GUID])
        .arg(pem)
        .output()
        .expect("virt-fw-vars (apt install python3-virt-firmware)");
    assert!(
        out.status.success(),
        "virt-fw-vars --add-mok failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The QEMU id of the USB stick, for `device_del`.
const USB_ID: &str = "zlive-usb-stick";

impl Guest<'_> {
    pub fn run(&self) -> String {
        let _slot = Slot::take();
        let log = serial_file();
        fs::File::create(&log).unwrap();
        // QEMU appends, as the harness does when it notes what it did: with its own file
        // offset QEMU would write over the harness's lines.
        let console_out = fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut child = self
            .command(&log)
            .stdout(console_out)
            .stderr(Stdio::inherit())
            .stdin(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64");
        let mut console = child.stdin.take().unwrap();
        let started = Instant::now();
        let mut answered = 0;
        let mut unplugged = false;
        let mut chosen = false;
        while !matches!(child.try_wait(), Ok(Some(_))) {
            let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
            if !unplugged && text.contains("ZLIVE-UNPLUG-MEDIUM") {
                unplugged = true;
                let said = monitor(&log, &format!("device_del {USB_ID}"));
                // The monitor echoes what it is sent; only an error is worth keeping.
                let outcome = match said.contains("rror") || said.starts_with("monitor:") {
                    true => said,
                    false => "device_del sent".to_owned(),
                };
                harness_note(&log, &format!("USB stick pulled out ({outcome})"));
            }
            let mut cut_at = None;
            if let Start::Menu { choice, .. } = self.start {
                if !chosen && text.contains(choice.seen) {
                    chosen = true;
                    // A key at a time, as a person types: ISOLINUX polls the serial port,
                    // and what arrives while it redraws the menu overflows the UART's FIFO.
                    for key in choice.keys.bytes() {
                        let _ = console.write_all(&[key]).and_then(|()| console.flush());
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    harness_note(&log, &format!("typed {:?} at the boot menu", choice.keys));
                }
                cut_at = choice.cut_at.filter(|c| text.contains(c));
            }
            let prompts: usize = PROMPTS.iter().map(|p| text.matches(p).count()).sum();
            if prompts > answered && answered < self.answers.len() {
                let _ = writeln!(console, "{}", self.answers[answered]);
                answered += 1;
            }
            // The live root asked for a power cut: kill QEMU, no shutdown of any kind.
            let cut = text.contains("ZLIVE-CUT-POWER") || cut_at.is_some();
            if let Some(line) = cut_at {
                harness_note(&log, &format!("power cut at {line:?}"));
            }
            let late = started.elapsed() > self.timeout;
            if cut || late {
                let _ = child.kill();
                let _ = child.wait();
                if late {
                    harness_note(&log, &format!("killed after {} s", self.timeout.as_secs()));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let serial = String::from_utf8_lossy(&fs::read(&log).unwrap()).replace('\r', "");
        let _ = fs::remove_file(&log);
        let _ = fs::remove_file(log.with_extension("monitor"));
        serial
    }

    /// OVMF's code and variables, when the guest boots UEFI.
    fn uefi_firmware(&self, cmd: &mut Command) {
        let Some((firmware, vars)) = self.uefi else {
            return;
        };
        let (code, _) = firmware.ovmf().expect("UEFI firmware");
        if matches!(
            firmware,
            Firmware::SecureBoot | Firmware::SecureBootEnrolled
        ) {
            // OVMF's Secure Boot build needs SMM, which needs the q35 machine, and its
            // variable store writable only from SMM.
            cmd.args(["-machine", "q35,smm=on"])
                .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        }
        cmd.arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={code}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ));
    }

    fn command(&self, log: &Path) -> Command {
        let images = images();
        let mut cmd = Command::new("qemu-system-x86_64");
        if let Some(uuid) = self.uuid {
            cmd.args(["-uuid", uuid]);
        }
        let vcpus = if vm_slots() > 1 { "1" } else { "2" };
        cmd.args(["-accel", images.accel, "-m", "1536", "-smp", vcpus])
            .args(["-nographic", "-no-reboot", "-nic", "none"]);
        self.uefi_firmware(&mut cmd);
        let firmware = match self.start {
            Start::Kernel {
                initrd,
                append,
                fw_cfg_script,
            } => {
                cmd.arg("-kernel").arg(&images.kernel);
                cmd.arg("-initrd").arg(initrd).arg("-append").arg(append);
                if let Some(script) = fw_cfg_script {
                    cmd.args(fw_cfg(script));
                }
                false
            }
            Start::Firmware { script } | Start::Menu { script, .. } => {
                cmd.args(fw_cfg(script));
                cmd.args([
                    "-boot",
                    if self.cdrom.is_some() {
                        "order=d"
                    } else {
                        "order=c"
                    },
                ]);
                true
            }
        };
        for (disk, read_only) in self.disks {
            let mut spec = format!("file={},format=raw,if=virtio", disk.display());
            if *read_only {
                spec.push_str(",readonly=on");
            }
            cmd.arg("-drive").arg(spec);
        }
        if let Some((stick, writable)) = self.usb {
            let monitor = log.with_extension("monitor");
            cmd.arg("-monitor")
                .arg(format!("unix:{},server=on,wait=off", monitor.display()))
                .args(["-device", "qemu-xhci,id=xhci", "-drive"])
                .arg(format!(
                    "if=none,id=stick,file={},format=raw{}",
                    stick.display(),
                    if writable { "" } else { ",readonly=on" }
                ))
                .arg("-device")
                .arg(format!(
                    "usb-storage,bus=xhci.0,drive=stick,id={USB_ID},removable=on{}",
                    if firmware && self.cdrom.is_none() {
                        ",bootindex=0"
                    } else {
                        ""
                    }
                ));
        }
        if let Some(cd) = self.cdrom {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,media=cdrom,readonly=on",
                cd.display()
            ));
        }
        cmd
    }
}

/// A line of the harness's own in the guest's serial log (`ZLIVE-HARNESS: WHAT`), appended
/// after what QEMU wrote.
fn harness_note(log: &Path, what: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(log).unwrap();
    let _ = writeln!(f, "\nZLIVE-HARNESS: {what}");
}

/// One command to QEMU's human monitor (the guest's socket next to its serial log); what
/// it answered, or why it could not be asked.
fn monitor(log: &Path, command: &str) -> String {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let ask = || -> std::io::Result<String> {
        let mut socket = UnixStream::connect(log.with_extension("monitor"))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        writeln!(socket, "{command}")?;
        std::thread::sleep(Duration::from_millis(500));
        let mut answer = vec![0u8; 4096];
        let n = socket.read(&mut answer).unwrap_or(0);
        Ok(String::from_utf8_lossy(&answer[..n]).replace(['\r', '\n'], " "))
    };
    ask().unwrap_or_else(|e| format!("monitor: {e}"))
}

fn serial_file() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "zlive-serial-{}-{}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// One test's lab: its pool disk, the initrd and the command line its boots use.
#[derive(Debug, Clone)]
pub struct Lab {
    pub test: &'static str,
    pub disk: PathBuf,
    pub initrd: PathBuf,
    /// The live-boot part of the command line.
    pub cmdline: String,
    /// `live-media=/dev/vdb` is added unless the test wants the medium found by scanning.
    pub name_the_medium: bool,
    /// Disks between the pool disk and the medium: (path, read-only).
    pub disks: Vec<(PathBuf, bool)>,
    pub medium: MediumPort,
    /// The machine's firmware UUID (its host id derives from it).
    pub machine: &'static str,
    /// The firmware, for boots through the medium's own boot loader.
    pub firmware: Firmware,
}

/// How the live medium (or what holds it) is attached.
#[derive(Debug, Clone)]
pub enum MediumPort {
    /// A virtio disk, the last one (/dev/vdX).
    Virtio(PathBuf),
    /// A removable USB stick (/dev/sda) that the live root can have pulled out.
    Usb(PathBuf),
    /// A USB stick the live system may write to (/dev/sda): a copy of an image, never the
    /// cached image itself.
    WritableUsb(PathBuf),
    /// A CD-ROM (/dev/sr0).
    Cdrom(PathBuf),
}

impl Lab {
    /// The pool built for `test`, zlive's initrd, and the seed's command line with the pool
    /// named (`persistence-zpool=dpool`) and the medium given.
    pub fn new(test: &'static str, pool: &Pool) -> Lab {
        Lab {
            test,
            disk: pool.build(test),
            initrd: images().initrd.clone(),
            cmdline: format!("{SEED} persistence-zpool=dpool"),
            name_the_medium: true,
            disks: Vec::new(),
            medium: MediumPort::Virtio(images().medium.clone()),
            machine: MACHINE_UUID,
            firmware: Firmware::Bios,
        }
    }
    /// Boots through the medium's boot loader start from this firmware.
    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }
    /// Another machine, by its firmware UUID: another ZFS host id.
    pub fn machine(mut self, uuid: &'static str) -> Self {
        self.machine = uuid;
        self
    }
    /// The medium attached another way, or another image in its place.
    pub fn medium(mut self, port: MediumPort) -> Self {
        self.medium = port;
        self
    }
    /// One more disk, after those already there (the medium comes last).
    pub fn with_disk(mut self, path: PathBuf, read_only: bool) -> Self {
        self.disks.push((path, read_only));
        self
    }
    pub fn cmdline(mut self, cmdline: &str) -> Self {
        self.cmdline = cmdline.to_owned();
        self
    }
    /// Another initrd (the seed's live-boot, for the benchmark).
    pub fn with_initrd(mut self, initrd: &Path) -> Self {
        self.initrd = initrd.to_path_buf();
        self
    }
    /// The initrd with OpenZFS's own dracut module as well.
    pub fn with_openzfs_module(mut self) -> Self {
        self.initrd = images().initrd_zfs.clone();
        self
    }
    pub fn scan_for_the_medium(mut self) -> Self {
        self.name_the_medium = false;
        self
    }

    /// Boot `n` of this test with the lab's command line; `script` runs in the live root.
    pub fn boot(&self, n: usize, script: &str) -> Boot {
        self.boot_with(n, &self.cmdline, script)
    }

    /// Boot `n` with another live-boot command line.
    pub fn boot_with(&self, n: usize, cmdline: &str, script: &str) -> Boot {
        self.boot_answering(n, cmdline, script, &[])
    }

    /// Boot `n`, typing `answers` at the password prompts on the console.
    pub fn boot_answering(&self, n: usize, cmdline: &str, script: &str, answers: &[&str]) -> Boot {
        let medium = match self.name_the_medium && matches!(self.medium, MediumPort::Virtio(_)) {
            // The pool is /dev/vda, then the extra disks, then the medium.
            true => format!(
                " live-media=/dev/vd{}",
                (b'b' + self.disks.len() as u8) as char
            ),
            false => String::new(),
        };
        let mut append = format!(
            "console=ttyS0 {cmdline}{medium} rd.shell=0 panic=-1 systemd.journald.forward_to_console=1 zlive.test.script={}",
            base64(script.as_bytes())
        );
        // x86's COMMAND_LINE_SIZE: a longer line hangs the boot before the kernel says a word.
        // A long scenario comes through fw_cfg, whose driver the initrd then loads; the
        // command line says so (the initrd's capture runs only for a boot with a scenario).
        let mut fw_cfg_script = None;
        if append.len() >= 2048 {
            append = format!(
                "console=ttyS0 {cmdline}{medium} rd.shell=0 panic=-1 systemd.journald.forward_to_console=1 rd.driver.pre=qemu_fw_cfg zlive.test.script=fw_cfg"
            );
            fw_cfg_script = Some(script);
        }
        let start = Start::Kernel {
            initrd: &self.initrd,
            append: &append,
            fw_cfg_script,
        };
        self.run_boot(n, start, answers)
    }

    /// Boot `n` through the medium's own boot loader and menu (a CD-ROM or USB stick with an
    /// ISO image); `script` runs in the live root.
    pub fn boot_from_firmware(&self, n: usize, script: &str) -> Boot {
        self.run_boot(n, Start::Firmware { script }, &[])
    }

    /// Boot `n` through the medium's own boot menu, the entry chosen as `choice` says (the
    /// test ISO's boot loader also talks on the serial port), typing `answers` at the
    /// password prompts.
    pub fn boot_from_menu(
        &self,
        n: usize,
        choice: &MenuChoice,
        script: &str,
        answers: &[&str],
    ) -> Boot {
        self.run_boot(n, Start::Menu { script, choice }, answers)
    }

    fn run_boot(&self, n: usize, start: Start, answers: &[&str]) -> Boot {
        let cmdline = match start {
            Start::Kernel { append, .. } => append.to_owned(),
            Start::Firmware { .. } | Start::Menu { .. } => "(the boot menu's)".to_owned(),
        };
        let started = Instant::now();
        let mut disks = vec![(self.disk.as_path(), false)];
        disks.extend(self.disks.iter().map(|(p, ro)| (p.as_path(), *ro)));
        let (mut usb, mut cdrom) = (None, None);
        match &self.medium {
            MediumPort::Virtio(path) => disks.push((path.as_path(), true)),
            MediumPort::Usb(path) => usb = Some((path.as_path(), false)),
            MediumPort::WritableUsb(path) => usb = Some((path.as_path(), true)),
            MediumPort::Cdrom(path) => cdrom = Some(path.as_path()),
        }
        let dir = artifacts(self.test).join(format!("boot{n}"));
        fs::create_dir_all(&dir).unwrap();
        let vars = dir.join("OVMF_VARS.fd");
        let uefi = self.firmware.ovmf().map(|(_, store)| {
            fs::copy(store, &vars).expect("OVMF's variable store (apt install ovmf)");
            if self.firmware == Firmware::SecureBootEnrolled {
                enrol_mok(&vars, super::images::module_signing_pem());
            }
            (self.firmware, vars.as_path())
        });
        // What the machine booted from, beside what the kernel says of it in journal.txt
        // (`secureboot: Secure boot enabled` / `disabled`).
        let firmware = match self.firmware.ovmf() {
            None => "BIOS (SeaBIOS, QEMU's default)\n".to_owned(),
            Some((code, store)) => format!(
                "UEFI ({:?}): code {code}, variables a fresh copy of {store}{}\n",
                self.firmware,
                match self.firmware {
                    Firmware::SecureBootEnrolled => format!(
                        ", with {} added to shim's MokList",
                        super::images::module_signing_pem().display()
                    ),
                    _ => String::new(),
                }
            ),
        };
        fs::write(dir.join("firmware.txt"), firmware).unwrap();
        let serial = Guest {
            start,
            disks: &disks,
            timeout: BOOT_TIMEOUT,
            uuid: Some(self.machine),
            answers,
            usb,
            cdrom,
            uefi,
        }
        .run();
        fs::write(dir.join("serial.log"), &serial).unwrap();
        fs::write(dir.join("cmdline.txt"), &cmdline).unwrap();
        let boot = Boot::from_serial(format!("{}/boot{n}", self.test), serial, started.elapsed());
        for (name, text) in &boot.sections {
            fs::write(dir.join(format!("{name}.txt")), text).unwrap();
        }
        timing::print(&boot);
        boot
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn base64_as_coreutils() {
        assert_eq!(super::base64(b"write /a 'x'\n"), "d3JpdGUgL2EgJ3gnCg==");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b""), "");
    }
}
