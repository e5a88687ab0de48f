//! The live-build recipe (examples/live-build): a whole Debian 13 live ISO whose initrd is
//! dracut with zlive (systemd 257, the ZFS module built by DKMS in the image), with the seed's
//! persistence layout, booted by the firmware through the ISO's own boot menu (BIOS and UEFI), as a
//! CD-ROM and as a USB disk (the hybrid image), with persistence on the pool disk; then `zlive create` makes
//! persistence in the free space of the stick, which the stick alone then boots with; and the
//! menu's "Live with persistence (created on first boot)" makes it on a new stick. Under
//! Secure Boot the kernel refuses the zfs module, signed by the image's own key, until the
//! machine has enrolled that key; zlive says so, and then it loads.

use crate::harness::qemu::{Firmware, MenuChoice};
use crate::harness::{assert_unchanged, digest, live_build_iso, Lab, MediumPort, Pool};
use crate::shutdown::SEED_LAYOUT;
use std::path::{Path, PathBuf};

/// Two boots of the same ISO and pool: from a CD-ROM (BIOS), then the hybrid image as a USB
/// disk (UEFI). Each finds the medium by scanning (the menu has no live-media=), finds the
/// medium's live-uuid, and the second sees what the first wrote. Then the CD-ROM under UEFI
/// with Secure Boot (boot 8), and the stick alone (boots 4 to 7).
///
/// A stranger's disk sits beside the stick: its pool has a dataset that would mount over
/// /etc. A real Debian live root with zfsutils-linux (zfs-mount.service enabled) never
/// imports or mounts it, and the disk is never written.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_live_build_iso_as_cdrom_and_as_usb_disk() {
    let iso = live_build_iso().to_path_buf();
    let evil = Pool::stranger("evil", "evil-data").build("live-build-iso");
    let evil_before = digest(&evil);
    let lab = Lab::new("live-build-iso", &Pool::with_conf(SEED_LAYOUT))
        .with_disk(evil.clone(), false)
        .medium(MediumPort::Cdrom(iso.clone()));
    let cd = lab.boot_from_firmware(
        1,
        "expect_mount /run/live/medium iso9660\nexpect_mount /home overlay\n\
         mokutil --sb-state 2>&1 || true\n\
         grep -q '^VERSION_ID=\"13\"' /etc/os-release || fail \"not Debian 13: $(grep VERSION= /etc/os-release)\"\n\
         systemctl --version | grep -q '^systemd 257 ' || fail \"not systemd 257: $(systemctl --version | head -n 1)\"\n\
         for d in /etc /usr /var /root /srv /opt; do expect_mount $d overlay; done\n\
         write /home/user/cd.txt 'written on the CD-ROM boot'\n\
         cmp /run/live/medium/zlive/secure-boot.der /usr/share/zlive/secure-boot.der || fail 'the image key is not on the medium'\n\
         expect_no_mount /etc/zlive-canary\nexpect_missing /etc/zlive-canary/owned\n\
         pools=$(zpool list -H -o name | tr '\\n' ' ')\n\
         [ \"$pools\" = 'dpool ' ] || fail \"pools imported in the live system: $pools\"\n\
         state=$(systemctl show -P LoadState zfs-mount.service)\n\
         [ \"$state\" = masked ] || fail \"zfs-mount.service is $state in the live system, not masked\"\n",
    );
    cd.assert_journal("pool evil holds no persistence volume: let go (exported again)");
    // The initrd's systemd is Debian 13's as well (the journal holds both starts).
    cd.assert_journal("Running in initrd.");
    cd.assert_journal("systemd 257.");
    cd.assert_agent_ok();
    // The menu's line is live-boot's; zlive, not live-boot, made the root.
    assert!(
        cd.serial
            .contains("boot=live components noeject persistence"),
        "the kernel did not get the recipe's boot line; {}",
        cd.where_()
    );
    cd.assert_journal("live medium found on /dev/sr0");
    cd.assert_not_in_journal("no medium carries this initrd's live-uuid");
    cd.assert_live_system_running();
    let (code, status) = cd.status_in_live_root();
    assert_eq!(code, 0, "zlive status in the ISO's live root: {status}");

    // The hybrid image written to a larger stick, as `dd` does: zlive create makes persistence
    // in the free space after it.
    let stick_image = grown_copy(&iso, "stick.img", 1 << 30);
    // Boots 2 and 3 through UEFI (OVMF): GRUB's menu, not ISOLINUX's, whose default entry
    // carries an empty `findiso=` when the stick is booted directly.
    let usb = lab
        .medium(MediumPort::WritableUsb(stick_image.clone()))
        .firmware(Firmware::Uefi);
    let stick = usb.boot_from_firmware(
        2,
        "[ -d /sys/firmware/efi ] || fail 'not booted through UEFI'\n\
         mokutil --sb-state 2>&1 || true\n\
         expect /home/user/cd.txt 'written on the CD-ROM boot'\n\
         expect_mount /run/live/medium iso9660\n\
         write /home/user/usb.txt 'written on the USB boot'\n\
         zlive create --yes > /tmp/create.out 2>&1 || fail \"zlive create: $(tr '\\n' ' ' < /tmp/create.out)\"\n\
         cat /tmp/create.out\n\
         grep -q 'The boot menu needs nothing more' /tmp/create.out || fail 'no word on the boot menu'\n",
    );
    stick.assert_agent_ok();
    // The ISO's first partition, not the whole disk, whose claim would keep the pool
    // zlive create makes after it from being opened.
    stick.assert_journal("live medium found on /dev/sda1");
    // GRUB's entry carries an empty findiso=, which means no ISO file (no warning about it).
    assert!(
        stick
            .serial
            .lines()
            .any(|l| l.contains("Kernel command line:")
                && l.split_whitespace().any(|word| word == "findiso=")),
        "{}: GRUB's line has no empty findiso=; {}",
        stick.name,
        stick.where_()
    );
    stick.assert_not_in_journal("not an absolute path");
    stick.assert_live_system_running();
    assert_iso_untouched(&iso, &stick_image);

    assert_unchanged(&evil, &evil_before, "two live boots beside it");

    // The CD-ROM under UEFI is boot 8's, with Secure Boot on, and boot 10's, with the image's
    // key enrolled.
    let cd_uefi = usb.medium(MediumPort::Cdrom(iso.clone()));
    secure_boot_refuses_the_module(&cd_uefi);
    secure_boot_with_the_key_enrolled(&cd_uefi);
    sticks_alone(&iso, &stick_image);
}

/// The signer `zlive secure-boot` names: the recipe's key, made in the VM cache.
const IMAGE_KEY: &str = "zlive live image module signing key (";

/// Boot 8 (numbered after the stick's): the same CD-ROM and pool on a machine with Secure Boot
/// on and Microsoft's keys, as laptops come. Debian's signed shim, GRUB and kernel boot; the
/// locked-down kernel refuses the zfs module, signed by the image's key, which this machine
/// has not enrolled. zlive says so, with the way out, on the console, in the journal, in
/// `zlive status` and `zlive secure-boot`; it tries no pool, tells nobody to make a new volume,
/// and the pool's disk is not written. `zlive secure-boot --enroll` then asks shim to enrol
/// the key at the next boot (mokutil's request, which `mokutil --list-new` shows).
fn secure_boot_refuses_the_module(lab: &Lab) {
    let secure = lab.clone().firmware(Firmware::SecureBoot);
    let pool_before = digest(&secure.disk);
    let refused = secure.boot_from_firmware(
        8,
        &format!(
            "[ -d /sys/firmware/efi ] || fail 'not booted through UEFI'\n\
             expect_missing /home/user/cd.txt\n\
             zlive secure-boot > /tmp/sb.out 2>&1 && fail 'zlive secure-boot exits 0 with the module refused'\n\
             cat /tmp/sb.out\n\
             grep -q '^Secure Boot   on ' /tmp/sb.out || fail 'Secure Boot is not shown on'\n\
             grep -q '^image key     .{IMAGE_KEY}.*: not enrolled$' /tmp/sb.out || fail 'the key is not shown, not enrolled'\n\
             grep -q '^zfs module    signed by .{IMAGE_KEY}.*(the image.s key), not loaded$' /tmp/sb.out || fail 'the module is not shown signed by the key'\n\
             grep -q '.zlive secure-boot --enroll.' /tmp/sb.out || fail 'no way out shown'\n\
             mokutil --generate-hash=live > /tmp/mok.hash\n\
             zlive secure-boot --enroll --hash-file /tmp/mok.hash > /tmp/enroll.out 2>&1 || fail \"zlive secure-boot --enroll: $(tr '\\n' ' ' < /tmp/enroll.out)\"\n\
             cat /tmp/enroll.out\n\
             grep -q 'Enroll MOK' /tmp/enroll.out || fail 'the enrolment does not say what MokManager shows'\n\
             mokutil --list-new | grep -q 'zlive live image module signing key' || fail 'mokutil --list-new has no zlive key'\n\
             zlive secure-boot | grep -q 'not enrolled yet: confirm it in MokManager' || fail 'the waiting enrolment is not shown'\n"
        ),
    );
    refused.assert_agent_ok();
    refused.assert_journal("Secure boot enabled");
    refused.assert_journal("live medium found on /dev/sr0");
    let why = "the kernel refused the zfs module (modprobe: ERROR: could not insert 'zfs': Key was rejected by service): Secure Boot is on (the firmware's SecureBoot variable is set, the kernel is locked down), and this zfs module is not signed by a key this machine trusts";
    refused.assert_zfs_refused(why);
    refused.assert_journal("mokutil --import /var/lib/dkms/mok.pub");
    refused.assert_journal("'zlive secure-boot --enroll' in the live system");
    refused.assert_journal("no pool can be imported: the kernel refused the zfs module");
    let (code, status) = refused.status_in_live_root();
    assert!(
        code != 0
            && status.contains("something failed")
            && status.contains("the kernel refused the zfs module"),
        "{}: zlive status after switch-root does not fail with the reason (exit {code}):\n{status}",
        refused.name
    );
    assert_unchanged(
        &secure.disk,
        &pool_before,
        "a Secure Boot boot that refused zfs",
    );
}

/// Boot 10: the same machine once its user enrolled the image's key (MokList written into the
/// firmware's variables, as MokManager writes it): the kernel is locked down and loads the
/// zfs module, the pool is imported and the file boot 2 wrote is there, and a new one is
/// written to the volume. `zlive secure-boot` says the key is enrolled and the module loaded.
fn secure_boot_with_the_key_enrolled(lab: &Lab) {
    let enrolled = lab.clone().firmware(Firmware::SecureBootEnrolled);
    let boot = enrolled.boot_from_firmware(
        10,
        &format!(
            "[ -d /sys/firmware/efi ] || fail 'not booted through UEFI'\n\
             expect_mount /home overlay\n\
             expect /home/user/usb.txt 'written on the USB boot'\n\
             write /home/user/secure.txt 'written under Secure Boot'\n\
             zlive secure-boot > /tmp/sb.out 2>&1 || fail \"zlive secure-boot: $(tr '\\n' ' ' < /tmp/sb.out)\"\n\
             cat /tmp/sb.out\n\
             grep -q '^image key     .{IMAGE_KEY}.*: enrolled$' /tmp/sb.out || fail 'the key is not shown enrolled'\n\
             grep -q '(the image.s key), loaded$' /tmp/sb.out || fail 'the module is not shown loaded'\n"
        ),
    );
    boot.assert_agent_ok();
    boot.assert_journal("Secure boot enabled");
    boot.assert_not_in_journal("the kernel refused the zfs module");
    boot.assert_journal("live medium found on /dev/sr0");
    boot.assert_live_system_running();
    let (code, status) = boot.status_in_live_root();
    assert_eq!(
        code, 0,
        "zlive status under Secure Boot with the key enrolled: {status}"
    );
}

/// The stick alone (beside a blank disk): its own persistence, made by zlive create, which
/// the menu's first-boot entry finds, making nothing; `zlive clone` copies it to a second
/// disk, which then boots alone (boot 9) with the stick's files. Then a new stick through that entry,
/// with `persistence-create=encrypted` added at the menu: the power is cut while the first
/// boot makes the pool; the next boot takes the unfinished pool back, makes persistence again
/// with the passphrase typed twice, and uses it at once; the third asks for the passphrase
/// and finds what the second wrote, making nothing.
fn sticks_alone(iso: &Path, stick_image: &Path) {
    let alone = Lab::new("live-build-iso", &Pool::blank().named("blank"))
        .medium(MediumPort::WritableUsb(stick_image.to_path_buf()));
    stick_then_its_clone(iso, stick_image, &alone);

    let new_image = grown_copy(iso, "new-stick.img", 1 << 30);
    let new_stick = alone.medium(MediumPort::WritableUsb(new_image.clone()));
    let cut = MenuChoice {
        cut_at: Some("zlive create: creating zlive/persistence"),
        ..FIRST_BOOT_ENCRYPTED
    };
    let twice = [PASSPHRASE, PASSPHRASE];
    // The power goes in the initrd; the scenario is never reached.
    let cut_short =
        new_stick.boot_from_menu(5, &cut, "fail 'the power cut came too late'\n", &twice);
    assert!(
        cut_short
            .serial
            .contains("ZLIVE-HARNESS: power cut at \"zlive create: creating zlive/persistence\""),
        "the power was not cut while the pool was made; {}",
        cut_short.where_()
    );
    assert!(
        cut_short
            .serial
            .contains("zlive create: adding a partition to /dev/sda"),
        "the console did not show the steps; {}",
        cut_short.where_()
    );
    assert_iso_untouched(iso, &new_image);
    let made = new_stick.boot_from_menu(
        6,
        &FIRST_BOOT_ENCRYPTED,
        "expect_mount /home overlay\nwrite /home/user/first.txt 'on the first boot'\n\
         [ \"$(zfs get -H -o value org.zlive:label zlive/persistence)\" = persistence ] || fail 'no label'\n\
         [ \"$(zfs get -H -o value encryption zlive/persistence)\" != off ] || fail 'not encrypted'\n",
        &twice,
    );
    made.assert_agent_ok();
    made.assert_live_system_running();
    made.assert_journal("is what an interrupted persistence-create left");
    made.assert_journal("persistence-create made the volume persistence");
    // The unfinished pool was looked at and let go by the scan: never "not imported".
    made.assert_not_in_journal("pool zlive was found but not imported");
    assert_iso_untouched(iso, &new_image);
    let again = new_stick.boot_from_menu(
        7,
        &FIRST_BOOT,
        "expect /home/user/first.txt 'on the first boot'\n\
         n=$(zpool list -H -o name | wc -l)\n[ \"$n\" = 1 ] || fail \"$n pools\"\n",
        &[PASSPHRASE],
    );
    again.assert_agent_ok();
    again.assert_journal("unlocked zlive/persistence");
    again.assert_not_in_journal("persistence-create made");
    assert_iso_untouched(iso, &new_image);
}

/// Boot 4: the stick alone finds its persistence; `zlive clone` copies it to a blank disk.
/// Boot 9: that disk alone, with the ISO's partitions byte for byte and the stick's files.
fn stick_then_its_clone(iso: &Path, stick_image: &Path, alone: &Lab) {
    // A blank disk (no table) for zlive clone: vdb.
    let clone_image = grown_copy(Path::new("/dev/null"), "clone.img", 1 << 30);
    let fourth = alone.clone().with_disk(clone_image.clone(), false).boot_from_menu(
        4,
        &FIRST_BOOT,
        "expect_mount /home overlay\nexpect_missing /home/user/cd.txt\n\
         write /home/user/stick.txt 'on the stick'\n\
         grep -qw persistence-create /proc/cmdline || fail 'not the first-boot menu entry'\n\
         n=$(zfs list -Ht all -r -o name zlive | wc -l)\n\
         refused 'holds the running live medium' zlive clone --to /dev/sda --yes\n\
         ok cl zlive clone --to /dev/vdb --yes\n\
         says cl 'copying'\nsays cl 'zlive clone: exporting zlive-new'\nsays cl 'is a clone of this stick'\n\
         [ \"$(zfs list -Ht all -r -o name zlive | wc -l)\" = \"$n\" ] || fail 'the clone changed the stick'\n",
        &[],
    );
    fourth.assert_agent_ok();
    fourth.assert_live_system_running();
    fourth.assert_journal("zlive/persistence");
    fourth.assert_not_in_journal("no persistence found");
    fourth.assert_not_in_journal("persistence-create made");
    assert_iso_untouched(iso, stick_image);
    // The clone alone: the ISO's partitions byte for byte, and the stick's files.
    assert_iso_untouched(iso, &clone_image);
    let cloned = alone
        .clone()
        .medium(MediumPort::WritableUsb(clone_image.clone()))
        .boot_from_menu(
            9,
            &FIRST_BOOT,
            "expect /home/user/stick.txt 'on the stick'\nexpect_mount /home overlay\n\
             [ \"$(zpool list -H -o name)\" = zlive ] || fail \"pools: $(zpool list -H -o name)\"\n",
            &[],
        );
    cloned.assert_agent_ok();
    cloned.assert_journal("zlive/persistence");
    cloned.assert_not_in_journal("persistence-create made");
}

const PASSPHRASE: &str = "made at the first boot";

/// "Live with persistence (created on first boot)" chosen at the test ISO's ISOLINUX menu,
/// which prints its menu on the serial port: its hot key, then Enter.
const FIRST_BOOT: MenuChoice = MenuChoice {
    seen: "fail-safe mode",
    keys: "p\r",
    cut_at: None,
};

/// The same entry with `persistence-create=encrypted` added to its line (Tab edits it; the
/// last word of a parameter counts).
const FIRST_BOOT_ENCRYPTED: MenuChoice = MenuChoice {
    keys: "p\t persistence-create=encrypted\r",
    ..FIRST_BOOT
};

/// A copy of `image` in the test's artifacts, named `name`, grown to `bytes` (sparse).
fn grown_copy(image: &Path, name: &str, bytes: u64) -> PathBuf {
    let dir = crate::harness::artifacts("live-build-iso");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(name);
    let ok = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    copy
}

/// The ISO's partitions (everything after its MBR, up to its end) are byte for byte what
/// the ISO holds: zlive create changed only the MBR's table and the free space.
fn assert_iso_untouched(iso: &Path, stick: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let len = std::fs::metadata(iso).unwrap().len();
    let read = |path: &Path| {
        let mut f = std::fs::File::open(path).unwrap();
        f.seek(SeekFrom::Start(512)).unwrap();
        let mut bytes = Vec::new();
        f.take(len - 512).read_to_end(&mut bytes).unwrap();
        bytes
    };
    assert!(
        read(iso) == read(stick),
        "the ISO's partitions on {} differ from {}",
        stick.display(),
        iso.display()
    );
}
