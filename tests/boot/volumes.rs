//! Every persistence.conf mode, read-only and multi-volume persistence, hostile or broken
//! volumes and pools, and what a power cut and a clean poweroff leave behind.

use crate::harness::qemu::MACHINE_UUID;
use crate::harness::{assert_unchanged, digest, Lab, Pool, Volume, SEED};
use crate::shutdown::SEED_LAYOUT;

/// Every mode on one volume, nested entries, and a second zvol (both named with
/// persistence-zvol=): `source=.` on it works, and the first volume wins a directory both name.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_every_entry_mode_persists() {
    let conf = "/home/user union\n/var/lib union\n/var/lib/app bind,source=app-data\n/opt/data bind,source=data\n/home/user/.config link,source=dotfiles\n";
    let whole = Volume::new("whole", "64M")
        .conf("/home/user bind\n/srv bind,source=.\n")
        .file("existing/file", "kept\n");
    let pool = Pool::standard()
        .first(|v| {
            v.conf(conf)
                .file("dotfiles/app.conf", "linked config\n")
                .file("dotfiles/sub/deep.conf", "deep\n")
        })
        .volume(whole);
    let lab = Lab::new("every-mode", &pool).cmdline(&format!(
        "{SEED} persistence-zvol=dpool/persistence,dpool/whole"
    ));
    let first = lab.boot(
        1,
        "expect /home/user/.config/app.conf 'linked config'\nexpect /home/user/.config/sub/deep.conf 'deep'\n\
         [ -L /home/user/.config/app.conf ] || fail 'app.conf is not a symlink'\n\
         [ \"$(readlink /home/user/.config/app.conf)\" = /run/live/persistence/persistence/dotfiles/app.conf ] || fail \"app.conf points to $(readlink /home/user/.config/app.conf)\"\n\
         expect /srv/existing/file kept\nexpect_mount /srv ext4\nexpect_mount /opt/data ext4\nexpect_mount /var/lib/app ext4\nexpect_mount /var/lib overlay\n\
         write /home/user/u.txt union\nwrite /var/lib/v.txt varlib\nwrite /var/lib/app/a.txt app\nwrite /opt/data/d.txt data\nwrite /srv/s.txt srv\necho edited > /home/user/.config/app.conf\n",
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_mount_type("/home/user", "overlay");
    first.assert_journal("/home/user is already made persistent by line 1 of /run/live/persistence/persistence/persistence.conf");
    for unit in [
        "run-live-persistence-whole.mount",
        "sysroot-var-lib.mount",
        "sysroot-var-lib-app.mount",
        "sysroot-opt-data.mount",
        "sysroot-srv.mount",
        "zlive-link@sysroot-home-user-.config.service",
    ] {
        first.assert_active(unit);
    }
    let second = lab.boot(
        2,
        "expect /home/user/u.txt union\nexpect /var/lib/v.txt varlib\nexpect /var/lib/app/a.txt app\nexpect /opt/data/d.txt data\nexpect /srv/s.txt srv\nexpect /home/user/.config/app.conf edited\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
}

/// `persistence-read-only` on the seed's seven unions (and a bind entry nested in one), with
/// OpenZFS's own dracut module in the initrd, whose import would take the pool read-write
/// first: on a live boot it is masked and zlive alone imports the pool, read-only; what is on
/// the volume shows, changes go to RAM, and neither the boot nor its poweroff (the export of a
/// read-only pool) writes a byte to the pool's disk.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_read_only_persistence_changes_nothing() {
    let conf = format!("{SEED_LAYOUT}/etc/app bind\n");
    let pool = Pool::standard().first(|v| {
        v.conf(&conf)
            .file("home/rw/user/kept.txt", "kept\n")
            .file("etc/app/config", "original\n")
    });
    let lab = Lab::new("read-only", &pool)
        .with_openzfs_module()
        .cmdline(&format!(
            "{SEED} persistence-zpool=dpool persistence-read-only"
        ));
    let before = digest(&lab.disk);
    let b = lab.boot(
        1,
        "expect /home/user/kept.txt kept\nexpect /etc/app/config original\nexpect /home/user/.profile 'image profile'\n\
         write /home/user/new.txt new\nwrite /etc/app/config changed\nexpect /etc/app/config changed\n\
         write /var/lib/in-ram ram\nclean_poweroff\n",
    );
    b.assert_clean_poweroff();
    b.assert_no_failed_units();
    b.assert_journal("imported pool dpool (forced, read-only)");
    // OpenZFS's own import is masked: nothing imported the pool read-write before zlive looked.
    b.assert_unit_masked("zfs-import-scan.service");
    b.assert_not_in_journal("had been imported read-write");
    assert_unchanged(
        &lab.disk,
        &before,
        "a persistence-read-only boot and its poweroff",
    );
}

/// The volumes of the hostile test: symlinks out of the volume on the main one, and
/// persistence.conf files that are a FIFO, a device node, huge, binary or world-writable.
fn hostile_pool() -> Pool {
    let conf = "/etc union,source=escape\n/home/user bind,source=inner/deeper\n/var/lib union\n/proc/sys bind\n/run/live/persistence bind\n/var/run bind\n/root union,source=fine\n/tmp/landed bind,source=ok-data\n";
    let planted = "ln -s /etc /mnt/vol/escape\nmkdir -p /mnt/vol/inner /mnt/vol/var/lib\n\
         ln -s ../../../.. /mnt/vol/inner/deeper\nln -s /etc /mnt/vol/var/lib/rw\n\
         mkdir -p /mnt/vol/ok-data && echo fine > /mnt/vol/ok-data/x";
    let bad_conf = |name: &str, shell: &str| Volume::new(name, "32M").sparse().while_mounted(shell);
    Pool::standard()
        .first(|v| v.conf(conf).while_mounted(planted))
        .volume(bad_conf("fifo", "mkfifo /mnt/vol/persistence.conf"))
        .volume(bad_conf("devnode", "mknod /mnt/vol/persistence.conf c 1 3"))
        .volume(bad_conf(
            "huge",
            "dd if=/dev/zero bs=1024 count=300 2>/dev/null | tr '\\0' '#' > /mnt/vol/persistence.conf",
        ))
        .volume(bad_conf(
            "binary",
            "dd if=/dev/urandom of=/mnt/vol/persistence.conf bs=1024 count=8 2>/dev/null",
        ))
        .volume(bad_conf(
            "shared",
            "echo '/srv bind' > /mnt/vol/persistence.conf; chmod 666 /mnt/vol/persistence.conf",
        ))
        // The same on datasets: symlinks out, a world-writable persistence.conf, and a child
        // dataset ZFS would mount by itself (zlive never mounts one).
        .volume(
            Volume::new("dhostile", "0")
                .dataset()
                .label("dhostile")
                .conf("/opt union,source=escape\n/usr/local bind,source=inner/deeper\n/mnt union\n/media bind,source=fine\n")
                .file("fine/x", "fine on a dataset\n")
                .while_mounted(
                    "ln -s /etc /mnt/vol/escape\nmkdir -p /mnt/vol/inner /mnt/vol/mnt\n\
                     ln -s ../../../.. /mnt/vol/inner/deeper\nln -s /etc /mnt/vol/mnt/rw\n\
                     zfs create -o canmount=on \"$pool/dhostile/child\"",
                ),
        )
        .volume(
            Volume::new("dshared", "0")
                .dataset()
                .label("dshared")
                .while_mounted("echo '/srv bind' > /mnt/vol/persistence.conf; chmod 666 /mnt/vol/persistence.conf")
                .after_unmount("zfs set xattr=on acltype=off \"$pool/dshared\""),
        )
}

/// A volume prepared by an attacker: symlinks out of the volume, entries over API file systems
/// and the volume itself, an image symlink, and persistence.conf files that are a FIFO, a
/// device node, huge, or binary; and datasets with the same symlinks, a world-writable
/// persistence.conf and a child dataset. Each is refused by name; nothing outside changes; the
/// boot goes on.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_hostile_volumes_are_refused() {
    let lab = Lab::new("hostile", &hostile_pool()).cmdline(&format!(
        "{SEED} persistence-zpool=dpool persistence-label=persistence,fifo,devnode,huge,binary,shared,dhostile,dshared"
    ));
    let b = lab.boot(
        1,
        "expect /tmp/landed/x fine\nexpect_missing /etc/rw\nexpect_missing /etc/work\nexpect_missing /srv/x\n\
         expect /media/x 'fine on a dataset'\nexpect_mount /media zfs\n\
         grep -q 'dhostile/child' /proc/self/mountinfo && fail 'the child dataset was mounted'\n\
         awk '$5 == \"/opt\" || $5 == \"/usr/local\" || $5 == \"/mnt\" { print \"ZLIVE-FAIL: \" $5 \" is a mount\" }' /proc/self/mountinfo\n\
         awk '$5 == \"/etc\" || $5 == \"/home/user\" || $5 == \"/var/lib\" { print \"ZLIVE-FAIL: \" $5 \" is a mount\" }' /proc/self/mountinfo\n\
         [ -e /etc/hostname ] || fail '/etc lost its files'\n",
    );
    b.assert_agent_ok();
    b.assert_no_failed_units();
    b.assert_active("sysroot-tmp-landed.mount");
    b.assert_active("sysroot-root.mount");
    for needle in [
        "/run/live/persistence/persistence/escape on LABEL=persistence is a symlink",
        "/run/live/persistence/persistence/inner/deeper on LABEL=persistence is a symlink",
        "/run/live/persistence/persistence/var/lib/rw on LABEL=persistence is a symlink",
        "ignoring '/proc/sys': refused: /proc",
        "ignoring '/run/live/persistence': refused: /run",
        "/var/run is a symlink in the live image",
        "/run/live/persistence/fifo/persistence.conf is not used: it is a FIFO",
        "/run/live/persistence/devnode/persistence.conf is not used: it is a device node",
        "/run/live/persistence/huge/persistence.conf is not used: it is larger than 256 KiB",
        "/run/live/persistence/shared/persistence.conf is not used: it is writable by group or others",
        "/run/live/persistence/binary/persistence.conf:",
        "/run/live/persistence/dhostile/escape on LABEL=dhostile is a symlink",
        "/run/live/persistence/dhostile/inner/deeper on LABEL=dhostile is a symlink",
        "/run/live/persistence/dhostile/mnt/rw on LABEL=dhostile is a symlink",
        "/run/live/persistence/dshared/persistence.conf is not used: it is writable by group or others",
        "dataset dpool/dshared keeps extended attributes in hidden directories (xattr=on)",
        "dataset dpool/dshared keeps no POSIX ACLs (acltype=off)",
    ] {
        b.assert_journal(needle);
    }
}

/// A dirty, lightly damaged file system: systemd-fsck repairs it and the boot uses it.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_fsck_repairs_a_dirty_volume() {
    let pool = Pool::standard().first(|v| {
        v.conf("/home/user union\n")
            .file("home/user/rw/before.txt", "before\n")
            .after_unmount("debugfs -w -R 'ssv state 0' \"$dev\"")
            .after_unmount("debugfs -w -R 'ssv free_blocks_count 1' \"$dev\"")
    });
    let b = Lab::new("fsck-dirty", &pool).boot(
        1,
        "expect /home/user/before.txt before\nwrite /home/user/after.txt after\n",
    );
    b.assert_agent_ok();
    b.assert_no_failed_units();
    b.assert_active("sysroot-home-user.mount");
    b.assert_journal_any(&["was not cleanly unmounted", "check forced", "FIXED"]);
    b.assert_mount_type("/home/user", "overlay");
}

/// A file system fsck cannot repair on its own: no persistence, a loud failure, the boot
/// goes on in RAM.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_fsck_beyond_repair_boots_in_ram() {
    let pool = Pool::with_conf("/home/user union\n").first(|v| {
        v.after_unmount("debugfs -w -R 'clri <2>' \"$dev\"")
            .after_unmount("debugfs -w -R 'ssv state 0' \"$dev\"")
    });
    let b = Lab::new("fsck-broken", &pool).boot(1, "write /home/user/ram.txt ram\n");
    b.assert_agent_ok();
    b.assert_failed("systemd-fsck@dev-disk-by\\x2dlabel-persistence.service");
    b.assert_journal("RUN fsck MANUALLY");
    b.assert_root_in_ram();
    let (code, text) = b.status_in_initrd();
    assert_eq!(
        code, 1,
        "zlive status should report the failed fsck:\n{text}"
    );
}

/// A full volume: the boot completes and the journal says the volume is full; a `/ union`
/// whose directories cannot be made there (no space) boots with the root in RAM, loudly,
/// instead of stopping at an emergency shell.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_full_volume_still_boots() {
    let pool = Pool::with_conf("/home/user union\n/ union,source=root\n").first(|v| {
        v.while_mounted("mkdir -p /mnt/vol/home/user/rw /mnt/vol/home/user/work")
            .while_mounted("dd if=/dev/zero of=/mnt/vol/filler bs=1M 2>/dev/null || true\nsync")
            // ext4 frees a few blocks it held back while dd wrote; left free, they let the
            // boot make the root's directories on the volume in some runs and not in others,
            // and a root on a full volume cannot even take the scenario's script. Take them.
            .while_mounted(
                "i=0; while mkdir /mnt/vol/.fill$i 2>/dev/null; do i=$((i + 1)); done\nsync",
            )
    });
    let b = Lab::new("full-volume", &pool).boot(1, "dd if=/dev/zero of=/home/user/big bs=1M count=8 2>/dev/null && fail 'writing 8 MiB to a full volume worked'\necho 'ZLIVE-OK: the full volume refused the write'\n");
    b.assert_agent_ok();
    b.assert_journal("persistence volume LABEL=persistence is full");
    b.assert_journal("/ union: preparing the root's changes on the volume failed");
    b.assert_active("sysroot.mount");
    b.assert_active("sysroot-home-user.mount");
    b.assert_root_in_ram();
    let (code, text) = b.status_in_initrd();
    assert_eq!(code, 1, "a / union in RAM is a failure:\n{text}");
    assert!(text.contains("failed/in-ram"), "{text}");
}

/// The pool was last imported by another host (never exported): a named pool is forced, as
/// in the seed. A scan never forces: the stick was in machine B when the power went, and
/// machine A, booting the same initrd (OpenZFS's dracut module in it too) with the seed's
/// command line, leaves the pool alone and says how to take it.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_pool_from_another_host() {
    let pool = Pool::with_conf("/home/user union\n")
        .hostid("0x0badcafe")
        .left_imported();
    let named = Lab::new("foreign-host", &pool).boot(1, "write /home/user/forced.txt forced\n");
    named.assert_agent_ok();
    named.assert_no_failed_units();
    named.assert_active("sysroot-home-user.mount");
    let b = Lab::new("foreign-host", &Pool::with_conf("/home/user union\n"))
        .cmdline(SEED)
        .with_openzfs_module()
        .machine(MACHINE_B);
    let in_b = b.boot(2, "write /home/user/b.txt 'written in B'\ncut_power\n");
    in_b.assert_power_cut();
    let in_a = b.machine(MACHINE_UUID);
    let scanned = in_a.boot(
        3,
        "expect_missing /home/user/b.txt\nwrite /home/user/ram.txt ram\n",
    );
    scanned.assert_agent_ok();
    scanned.assert_journal("pool dpool was found but not imported");
    scanned.assert_journal("a scan never takes such a pool over");
    scanned.assert_journal("add persistence-zpool=dpool");
    scanned.assert_root_in_ram();
    // No volume was found by the label search: a notice, nothing failed.
    scanned.assert_active("zlive-volume@persistence.service");
    scanned.assert_journal("is off for this boot (not an error");
}

/// Another machine's firmware UUID: another ZFS host id.
const MACHINE_B: &str = "5a11ce00-0000-4000-8000-0000000000b2";

/// A pool with a missing vdev cannot be imported: bounded wait, message with zpool's reason,
/// boot in RAM.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_pool_missing_a_vdev() {
    let pool = Pool::with_conf("/home/user union\n").missing_vdev();
    let b = Lab::new("missing-vdev", &pool).boot(1, "write /home/user/ram.txt ram\n");
    b.assert_agent_ok();
    b.assert_failed("zlive-import@dpool.service");
    b.assert_journal("pool dpool could not be imported within 20 s of the initrd's start");
    b.assert_root_in_ram();
}

/// `/ union` on a source of its own, plus a union entry: the root overlay keeps the volume
/// busy to the end, the hardest case for a shutdown.
const ROOT_AND_HOME: &str = "/home/user union\n/ union,source=root\n";

const CHECK_KEPT: &str = "expect /home/user/kept.txt kept\nexpect /srv/root.txt root\n";

/// Power cut, then the shutdown a user does, with `/ union` (the root overlay keeps the
/// volume busy to the end, the hardest case): boot 1 writes and syncs, then QEMU is killed. A
/// read-only boot then warns that it shows the volume as it was before its journal; the next
/// read-write boot sees the files intact, the journal replayed, and ends with `systemctl
/// poweroff`, which finishes on its own; the boot after it finds the volume clean (no journal
/// to replay) with the data there.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_survives_a_power_cut_and_powers_off_clean() {
    let lab = Lab::new("power-cut", &Pool::with_conf(ROOT_AND_HOME));
    let first = lab.boot(
        1,
        "write /home/user/kept.txt kept\nwrite /srv/root.txt root\ncut_power\n",
    );
    first.assert_power_cut();
    let read_only = format!("{} persistence-read-only", lab.cmdline);
    let second = lab.boot_with(2, &read_only, "");
    second.assert_agent_ok();
    second.assert_journal("was not cleanly unmounted (a power cut?)");
    let third = lab.boot(3, &format!("{CHECK_KEPT}clean_poweroff\n"));
    third.assert_clean_poweroff();
    third.assert_no_failed_units();
    // A dirty volume, told apart from a clean one: its journal is replayed.
    third.assert_journal("persistence: recovering journal");
    third.assert_active("run-live-persistence-persistence.mount");
    let fourth = lab.boot(4, CHECK_KEPT);
    fourth.assert_agent_ok();
    fourth.assert_no_failed_units();
    fourth.assert_journal("persistence: clean,");
    fourth.assert_not_in_journal("persistence: recovering journal");
}
