//! Where the live system comes from: `toram` from a USB stick that is pulled out after boot,
//! a CD-ROM, and `findiso=` with the ISO file on an ext4 and on a vfat stick.

use crate::harness::{images, Lab, MediumPort, Pool, SEED};

const CONF: &str = "/home/user union\n";

/// `toram` from a USB stick found by `live-media=removable-usb`: the image is copied into
/// RAM, the stick released and pulled out, and the live root still reads every file and
/// keeps what is written. The next boot takes the medium from a CD-ROM (removable, not USB).
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_toram_then_the_stick_is_pulled_out() {
    let lab = Lab::new("toram-usb", &Pool::with_conf(CONF))
        .medium(MediumPort::Usb(images().medium.clone()))
        .cmdline(&format!(
            "{SEED} persistence-zpool=dpool toram live-media=removable-usb"
        ));
    let first = lab.boot(
        1,
        "expect_mount /run/live/toram tmpfs\nexpect_no_mount /run/live/medium\n\
         unplug_medium\nread_live_root\nwrite /home/user/toram.txt 'after the stick went'\n",
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_journal("copied into RAM");
    first.assert_journal("the live medium is released and may be removed");
    assert!(
        first.serial.contains("zlive: toram: 100%"),
        "no progress on the console; {}",
        first.where_()
    );
    assert!(
        first.serial.contains("ZLIVE-HARNESS: USB stick pulled out"),
        "the harness did not pull the stick; {}",
        first.where_()
    );
    let lab = lab
        .medium(MediumPort::Cdrom(images().medium_iso.clone()))
        .cmdline(&format!(
            "{SEED} persistence-zpool=dpool live-media=removable"
        ));
    let second = lab.boot(
        2,
        "expect /home/user/toram.txt 'after the stick went'\nexpect_mount /run/live/medium iso9660\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_journal("live medium found on /dev/sr0");
}

/// `findiso=`: the ISO file on an ext4 stick, then on a vfat stick with `toram` (both the
/// ISO and its stick released); a missing ISO file fails the boot with a message naming it,
/// within live-media-timeout=.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_findiso_on_ext4_and_vfat() {
    let iso = "findiso=/isos/live.iso";
    let lab = Lab::new("findiso", &Pool::with_conf(CONF))
        .medium(MediumPort::Virtio(images().stick_ext4.clone()))
        .scan_for_the_medium()
        .cmdline(&format!("{SEED} persistence-zpool=dpool {iso}"));
    let first = lab.boot(
        1,
        "expect_mount /run/live/findiso ext4\nexpect_mount /run/live/medium iso9660\n\
         write /home/user/iso.txt 'from the ISO'\n",
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_journal("live medium found on /run/live/findiso/isos/live.iso (on /dev/vdb)");
    let lab = lab
        .medium(MediumPort::Virtio(images().stick_vfat.clone()))
        .cmdline(&format!("{SEED} persistence-zpool=dpool {iso} toram"));
    let second = lab.boot(
        2,
        "expect /home/user/iso.txt 'from the ISO'\nexpect_mount /run/live/toram tmpfs\n\
         expect_no_mount /run/live/medium\nexpect_no_mount /run/live/findiso\nread_live_root\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_journal("the live medium is released and may be removed");
    let third = lab
        .cmdline(&format!(
            "{SEED} persistence-zpool=dpool findiso=/isos/missing.iso live-media-timeout=5"
        ))
        .boot(3, "");
    for needle in [
        "ZLIVE-EMERGENCY",
        "no device with the ISO file /isos/missing.iso (findiso=) found within 5 s",
    ] {
        assert!(
            third.serial.contains(needle),
            "boot 3 printed no '{needle}'; {}",
            third.where_()
        );
    }
}
