//! `zlive create`: persistence made from the running live system. Its refusals, each leaving
//! the disk as it was, a create interrupted before its last step, then an encrypted dataset
//! with the seed's layout on a blank disk, which the next boot, with the seed's command line,
//! finds and uses.

use crate::harness::{assert_unchanged, digest, Lab, Pool, SEED};
use std::path::PathBuf;
use std::process::Command;

const PASSPHRASE: &str = "made in the live system";

/// A disk image of `size` in this test's artifacts, blank or made by `make`.
fn disk(name: &str, size: &str, make: Option<&str>) -> PathBuf {
    let dir = crate::harness::artifacts("create");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let ok = Command::new("truncate")
        .args(["-s", size])
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    if let Some(mkfs) = make {
        let ok = Command::new(mkfs)
            .args(["-q", "-F"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success(), "{mkfs} {}", path.display());
    }
    path
}

/// Each refusal names what it found, exits 1 and writes nothing (the digests are compared on
/// the host). A create killed at its worst step, just before the label (a `zfs` in PATH that
/// kills zlive there), leaves a pool whose dataset no boot takes. Then `zlive create --device
/// /dev/vda --layout seed --encrypt --yes` with the passphrase fed on its standard input; the
/// pool it made is exported at the end. The power is cut with the half-made pool imported.
const CREATE: &str = "c() { zlive create --yes \"$@\"; }\n\
    refused '/dev/vdb holds ext4: zlive does not overwrite a whole disk' c --device /dev/vdb\n\
    refused '/dev/vdc holds partitions (/dev/vdc1, /dev/vdc9)' c --device /dev/vdc\n\
    refused '/dev/vdc1 holds zfs_member: add --wipe' c --device /dev/vdc1\n\
    refused '/dev/vdd has 32 MiB; persistence needs at least 64 MiB.' c --device /dev/vdd\n\
    refused 'holds the running live medium' c --device /dev/vdf\n\
    refused 'has no partition table' c --layout seed\n\
    refused 'a pool named other is on a disk of this system' c --device /dev/vda --pool other\n\
    refused 'a boot would refuse it' c --device /dev/vda --layout /proc/cmdline\n\
    zfs_kills 'set org.zlive:label='\n\
    PATH=/tmp/shim:$PATH c --device /dev/vde --pool half > /tmp/half.out 2>&1; cat /tmp/half.out\n\
    grep -q 'killed at zfs' /tmp/half.out || fail 'the create was not killed before its label'\n\
    zpool list -H -o name | grep -qx half || fail 'no pool half left behind'\n\
    p='made in the live system'\n\
    printf '%s\\n%s\\n' \"$p\" \"$p\" | c --device /dev/vda --layout seed --encrypt > /tmp/c.out 2>&1 ||\n\
      fail \"zlive create: $(tr '\\n' ' ' < /tmp/c.out)\"\n\
    cat /tmp/c.out\n\
    grep -q 'The boot menu needs nothing more' /tmp/c.out || fail 'no word on the boot menu'\n\
    ! zpool list -H -o name | grep -qx zlive || fail 'zlive create left its pool imported'\n\
    cut_power\n";

/// The refusals and the making in boot 1; boot 2, with the seed's command line and the
/// passphrase typed, mounts the seven entries from the new dataset.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_create_refuses_then_makes_what_the_next_boot_uses() {
    let other = Pool::standard()
        .named("other")
        .first(|v| v.label("not-persistence"))
        .build("create");
    let ext4 = disk("ext4.img", "96M", Some("mkfs.ext4"));
    let small = disk("small.img", "32M", None);
    let half = disk("half.img", "256M", None);
    let lab = Lab::new("create", &Pool::blank())
        .cmdline(SEED)
        .with_disk(ext4.clone(), false)
        .with_disk(other.clone(), false)
        .with_disk(small.clone(), false)
        .with_disk(half, false);
    let before: Vec<String> = [&ext4, &other, &small].iter().map(|d| digest(d)).collect();
    let first = lab.boot(1, CREATE);
    first.assert_power_cut();
    for (d, b) in [&ext4, &other, &small].iter().zip(&before) {
        assert_unchanged(d, b, "zlive create's refusals");
    }
    let second = lab.boot_answering(
        2,
        SEED,
        "write /etc/made.txt 'on the new persistence'\nexpect_mount /etc overlay\n",
        &[PASSPHRASE],
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_journal("unlocked zlive/persistence");
    // The half-made pool, left imported by the power cut (by the live system, whose host id
    // differs from the initrd's), is not taken over by a scan, and its dataset never counts.
    second.assert_journal("pool half was found but not imported");
    second.assert_not_in_journal("half/persistence");
    for dir in ["etc", "usr", "var", "home", "root", "srv", "opt"] {
        second.assert_active(&format!("sysroot-{dir}.mount"));
    }
}
