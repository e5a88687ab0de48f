//! Encrypted persistence, unlocked at systemd's password prompt, typed on the serial console
//! as a person would: ZFS native encryption and LUKS on a zvol, read-only persistence on both,
//! wrong passphrases, and one passphrase for two encryption roots.

use crate::harness::pool::volume_digest_unlocked;
use crate::harness::{Boot, Crypt, Lab, Pool, Volume, SEED};

const MARKER: &str = "zlive-secret-marker-6f1d2c";
const PASSPHRASE: &str = "correct horse battery";

/// Whether the raw disk image holds `needle` anywhere (`grep -a`).
fn disk_contains(disk: &std::path::Path, needle: &str) -> bool {
    std::process::Command::new("grep")
        .args(["-q", "-a", "-F", needle])
        .arg(disk)
        .status()
        .unwrap()
        .success()
}

/// Prompts the boot showed on its console.
fn prompts(b: &Boot) -> usize {
    crate::harness::qemu::PROMPTS
        .iter()
        .map(|p| b.serial.matches(p).count())
        .sum()
}

/// A pool whose volume is encrypted as `crypt` says and holds the marker.
fn secret_pool(crypt: Crypt) -> Pool {
    Pool::standard().first(|v| {
        v.encrypted(crypt)
            .conf("/home/user union\n")
            .file("home/user/rw/marker.txt", MARKER)
    })
}

/// What no file may hold in the live system: the passphrase cached in the kernel keyring
/// during the initrd (`systemd-ask-password --keyname=zlive`).
const NO_CACHED_PASSPHRASE: &str = "awk '$8 == \"user\" && $9 == \"zlive:\" { print \"ZLIVE-FAIL: the passphrase is still in the kernel keyring\" }' /proc/keys\n";

/// The three checks for one kind of encryption: the marker is not on the disk in clear; the
/// right passphrase gives persistence across two boots (the second read-only), and is gone
/// from the kernel keyring in the live system; three wrong ones boot without persistence;
/// and the read-only and the failed boot write nothing to the volume (its content has the
/// same digest before and after them).
fn encrypted_volume_round(test: &'static str, crypt: Crypt, cmdline: &str, unlocked: &str) {
    let lab = Lab::new(test, &secret_pool(crypt)).cmdline(cmdline);
    assert!(
        !disk_contains(&lab.disk, MARKER),
        "{test}: the marker is readable in the raw pool image"
    );
    let first = lab.boot_answering(
        1,
        &lab.cmdline,
        // A clean shutdown: the read-only boot after it sees the volume as it is (after a
        // power cut it would show it as it was before its journal, and warn).
        &format!(
            "expect /home/user/marker.txt {MARKER}\nwrite /home/user/b1 'boot 1'\n{NO_CACHED_PASSPHRASE}clean_poweroff\n"
        ),
        &[PASSPHRASE],
    );
    first.assert_clean_poweroff();
    first.assert_no_failed_units();
    first.assert_active("sysroot-home-user.mount");
    first.assert_journal(unlocked);
    assert_eq!(prompts(&first), 1, "{}: prompts", first.name);
    let (_, status) = first.status_in_initrd();
    assert!(status.contains("active/unlocked"), "{status}");
    let before = volume_digest_unlocked(test, &lab.disk, Some(&crypt));
    let second = lab.boot_answering(
        2,
        &format!("{} persistence-read-only", lab.cmdline),
        "expect /home/user/b1 'boot 1'\nwrite /home/user/ram 'in RAM'\n",
        &[PASSPHRASE],
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    let third = lab.boot_answering(
        3,
        &lab.cmdline,
        "write /home/user/ram 'in RAM'\n",
        &["wrong one", "wrong two", "wrong three"],
    );
    third.assert_agent_ok();
    third.assert_root_in_ram();
    assert_eq!(prompts(&third), 3, "{}: prompts", third.name);
    third.assert_journal_any(&["was not loaded after 3 tries", "Too many attempts"]);
    let (code, status) = third.status_in_initrd();
    assert_eq!(code, 1, "three wrong passphrases are a failure:\n{status}");
    assert!(status.contains("failed/locked"), "{status}");
    assert_eq!(
        volume_digest_unlocked(test, &lab.disk, Some(&crypt)),
        before,
        "{test}: the read-only boot or the boot with wrong passphrases wrote to the volume"
    );
}

/// ZFS native encryption with the seed's command line only: the pool is found by a scan,
/// which asks for the key (the label is inside), then imports the pool read-write, so that
/// what boot 1 writes is there in boot 2.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_zfs_native_encryption() {
    encrypted_volume_round(
        "zfs-encrypted",
        Crypt::Zfs(PASSPHRASE),
        SEED,
        "unlocked dpool/persistence",
    );
}

#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_luks_on_a_zvol() {
    encrypted_volume_round(
        "luks",
        Crypt::Luks(PASSPHRASE),
        &format!("{SEED} persistence-zpool=dpool persistence-encryption=luks"),
        "LUKS containers found: dpool/persistence",
    );
}

/// Two encryption roots with one passphrase: it is asked once.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_two_encryption_roots_one_prompt() {
    let pool = secret_pool(Crypt::Zfs(PASSPHRASE)).volume(
        Volume::new("extra", "64M")
            .encrypted(Crypt::Zfs(PASSPHRASE))
            .conf("/srv bind\n"),
    );
    let lab = Lab::new("two-roots", &pool).cmdline(&format!(
        "{SEED} persistence-zpool=dpool persistence-label=persistence,extra"
    ));
    let b = lab.boot_answering(
        1,
        &lab.cmdline,
        &format!("expect /home/user/marker.txt {MARKER}\nwrite /srv/x x\n"),
        &[PASSPHRASE, PASSPHRASE],
    );
    b.assert_agent_ok();
    b.assert_no_failed_units();
    b.assert_active("sysroot-home-user.mount");
    b.assert_active("sysroot-srv.mount");
    b.assert_journal("unlocked dpool/persistence");
    b.assert_journal("unlocked dpool/extra");
    assert_eq!(prompts(&b), 1, "{}: one passphrase, asked once", b.name);
}
