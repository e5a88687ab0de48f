//! The live root and the seed's command line: union and `/ union` persistence, the
//! medium found by scanning, no persistence, a pool without its volume or missing entirely,
//! OpenZFS's own dracut module alongside, and the demo.

use crate::harness::{assert_unchanged, digest, Boot, Lab, Pool};

const UNION_CONF: &str =
    "# the seed's three directories\n/home/user union\n/etc union\n/var/lib union\n";

/// zlive status in the initrd and after switch-root, and `journalctl -u` of an entry.
fn assert_status_reports_entries(first: &Boot) {
    let (code, text) = first.status_in_initrd();
    assert_eq!(code, 0, "zlive status failed in the initrd:\n{text}");
    assert!(
        text.contains("sysroot-home-user.mount") && text.contains("active/mounted"),
        "{text}"
    );
    let json = first.status_json();
    assert_eq!(json["failed"], false);
    assert!(
        json["units"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["unit"] == "sysroot-etc.mount" && u["state"] == "active"),
        "{json}"
    );
    // …and after switch-root, where the entries are the live system's own mounts.
    let (code, text) = first.status_in_live_root();
    assert_eq!(code, 0, "zlive status failed in the live root:\n{text}");
    assert!(
        text.contains("after switch-root")
            && text.contains("home-user.mount")
            && text.contains("active/mounted"),
        "{text}"
    );
    // journalctl -u on an entry's mount unit shows zlive's message about that entry.
    let unit_log = first.unit_journal("sysroot-home-user.mount");
    assert!(
        unit_log.contains("/home/user (union) from"),
        "journalctl -u sysroot-home-user.mount:\n{unit_log}"
    );
}

/// What every boot of the seed's three unions shows: zlive's units up, nothing failed, the
/// entries accepted, one reload (the second pass; the root is in RAM, so it did not change),
/// and no pool imported but the stick's. (The scenario's own end is the caller's to check.)
fn assert_seed_union_boot(b: &Boot) {
    for unit in [
        "zlive-import@dpool.service",
        "zlive-volume@persistence.service",
        "run-live-persistence-persistence.mount",
        "zlive-reload.service",
        "sysroot.mount",
        "sysroot-home-user.mount",
        "sysroot-etc.mount",
        "sysroot-var-lib.mount",
        "zlive-prepare@sysroot-home-user.service",
    ] {
        b.assert_active(unit);
    }
    b.assert_no_failed_units();
    b.assert_journal("zlive[");
    b.assert_journal_any(&["imported pool dpool", "pool dpool is already imported"]);
    b.assert_journal("generator: pass 2: persistence entries accepted: 3, lines refused: 0");
    b.assert_mount_type("/home/user", "overlay");
    // The machine has a floppy drive (QEMU's default), which the import's scan must not read.
    b.assert_not_in_journal("dev fd0");
    b.assert_journal_count("Reloading finished", 1);
    b.assert_not_in_journal("the root overlay changed");
}

/// The pools the live system has imported are the stick's alone, and a stranger's dataset
/// that would mount over /etc is not mounted.
const ONLY_THE_STICKS_POOL: &str = "expect_no_mount /etc/zlive-canary\n\
     pools=$(zpool list -H -o name | tr '\\n' ' '); [ \"$pools\" = 'dpool ' ] || fail \"pools imported: $pools\"\n";

/// The seed's command line plus live-media= and persistence-zpool=: files written under
/// /home/user, /etc and /var/lib in boot 1 are there in boot 2, which has OpenZFS's own dracut
/// module in its initrd; boot 3's kernel refuses the zfs module; boot 4 is boot 2's initrd
/// without `boot=live`, where OpenZFS imports as it would without zlive.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_seed_cmdline_union_entries_persist() {
    let lab = Lab::new("seed-union", &Pool::with_conf(UNION_CONF));
    let first = lab.boot(
        1,
        &format!(
            "write /home/user/notes.txt 'written in boot 1'\nwrite /etc/zlive-test.conf 'etc boot 1'\nwrite /var/lib/zlive/state 'state 1'\nexpect /etc/image-file 'image file'\n{ONLY_THE_STICKS_POOL}"
        ),
    );
    first.assert_agent_ok();
    assert_seed_union_boot(&first);
    assert_status_reports_entries(&first);
    // The module was loaded by its own unit, beside udev, not inside the import. (With
    // OpenZFS's dracut module in the initrd, either may load it.)
    first.assert_journal("loaded the zfs module in");
    with_openzfs_dracut_module(&lab);
    zfs_module_refused(&lab);
    not_a_live_boot(&lab);
}

/// Boot 2: OpenZFS's own dracut module in the same initrd, and a stranger's pool beside the
/// stick: on a live boot OpenZFS's import units are masked (so is the udev-settle they pull
/// in), zlive alone imports, boot 1's files are there, and the stranger's pool is never
/// imported nor written; the poweroff exports the stick's pool.
fn with_openzfs_dracut_module(lab: &Lab) {
    let stranger = Pool::stranger("spool", "strangers-data").build("seed-union");
    let before = digest(&stranger);
    let second = lab
        .clone()
        .with_openzfs_module()
        .with_disk(stranger.clone(), false)
        .boot(
            2,
            &format!(
                "expect /home/user/notes.txt 'written in boot 1'\nexpect /etc/zlive-test.conf 'etc boot 1'\nexpect /var/lib/zlive/state 'state 1'\n{ONLY_THE_STICKS_POOL}clean_poweroff\n"
            ),
        );
    // The pool is exported at the poweroff, OpenZFS's module or not: boot 4's import, which
    // never forces, takes it.
    second.assert_clean_poweroff();
    assert_seed_union_boot(&second);
    for unit in [
        "zfs-import-scan.service",
        "zfs-import-cache.service",
        "zfs-load-module.service",
    ] {
        second.assert_unit_masked(unit);
    }
    assert!(
        second
            .unit_state("systemd-udev-settle.service")
            .is_none_or(|(active, _)| active != "active"),
        "{}: systemd-udev-settle ran; {}",
        second.name,
        second.where_()
    );
    second.assert_not_in_journal("spool");
    assert_unchanged(&stranger, &before, "a live boot beside it");
}

/// Boot 3: the kernel refuses the zfs module (`module_blacklist=zfs`, as a kernel under
/// Secure Boot refuses an unsigned one). The reason is on the console, in the journal and in
/// `zlive status`, which fails; no pool is tried, nobody is told to make a new volume, the
/// boot goes on in RAM, and the stick is not written.
fn zfs_module_refused(lab: &Lab) {
    let before = digest(&lab.disk);
    let refused = lab
        .clone()
        .cmdline(&format!("{} module_blacklist=zfs", lab.cmdline))
        .boot(3, "expect_missing /home/user/notes.txt\n");
    refused.assert_agent_ok();
    refused.assert_root_in_ram();
    let why = "the zfs module could not be loaded (modprobe: ERROR: could not insert 'zfs': Operation not permitted). Persistence on ZFS is off for this boot";
    refused.assert_zfs_refused(why);
    refused.assert_journal("no pool can be imported: the zfs module could not be loaded");
    // The volume's wait never runs after a failed import: nothing says the volume is missing.
    refused.assert_not_in_journal("is not there");
    for (name, (code, text)) in [
        ("initrd", refused.status_in_initrd()),
        ("live root", refused.status_in_live_root()),
    ] {
        assert!(
            code != 0
                && text.contains("something failed")
                && text.contains("zlive-import@dpool.service")
                && text.contains("the zfs module could not be loaded"),
            "{}: zlive status in the {name} does not fail with the reason (exit {code}):\n{text}",
            refused.name
        );
    }
    assert_unchanged(&lab.disk, &before, "a boot whose zfs module was refused");
}

/// Boot 4: boot 2's initrd (OpenZFS's dracut module in it) without `boot=live`, its root the
/// ext4 file system on the pool's zvol. zlive writes no unit and masks nothing: OpenZFS's own
/// scan imports the pool, as in an initrd without zlive, and the root mounts from it. The
/// initrd's capture prints its sections and powers off (no live system follows).
fn not_a_live_boot(lab: &Lab) {
    let b = lab
        .clone()
        .with_openzfs_module()
        .cmdline("root=/dev/zvol/dpool/persistence ro zlive.test.initrd-only")
        .boot(4, "");
    for unit in [
        "zlive-load-zfs",
        "zlive-import",
        "zlive-volume",
        "zlive-find-medium",
    ] {
        b.assert_absent(unit);
    }
    // Wanted always, it runs only after zlive imported a pool.
    b.assert_inactive("zlive-exitrd.service");
    b.assert_not_in_journal("zlive[");
    b.assert_active("zfs-import-scan.service");
    b.assert_active("zfs-import.target");
    b.assert_active("sysroot.mount");
    let sysroot = b
        .section("initrd-mountinfo")
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/sysroot"))
        .unwrap_or_default();
    assert!(
        sysroot.contains(" - ext4 /dev/zd"),
        "{}: /sysroot is not the ext4 on the pool's zvol: '{sysroot}'; {}",
        b.name,
        b.where_()
    );
}

/// dpkg asked to remove the package that owns the running kernel's module tree, in a live
/// system whose root persists: zlive's hook refuses, says why, and the tree stays.
const REMOVE_THE_KERNEL: &str = "k=linux-image-$(uname -r)\n\
    dpkg --remove $k > /tmp/remove.out 2>&1 && fail \"dpkg removed $k\"\ncat /tmp/remove.out\n\
    grep -q \"zlive: refusing to remove $k: it holds the modules of the running kernel\" /tmp/remove.out || fail 'the guard did not say why'\n\
    [ -d /usr/lib/modules/$(uname -r) ] || fail 'the module tree is gone'\n\
    dpkg-query -W -f '${Status}' $k | grep -q 'install ok installed' || fail \"$k is no longer installed\"\n";

/// `/ union`: a file written anywhere in the root survives, and the root overlay's upper
/// layer is on the volume; dpkg may not remove the running kernel's package
/// ([`REMOVE_THE_KERNEL`]), whose modules boot 2 still has. Then persistence-read-only: the
/// volume's rw/ becomes a lower layer, changes go to RAM, and the pool is not written. Then a
/// root whose upper layer hides the running kernel's module tree (made by hand in boot 2) is
/// refused: the root in RAM.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_root_union_persists_everything() {
    let lab = Lab::new("root-union", &Pool::with_conf("/ union\n"));
    let first = lab.boot(
        1,
        &format!("write /srv/anywhere/file.txt 'root union 1'\nwrite /usr/local/share/x 'usr too'\n{REMOVE_THE_KERNEL}"),
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_active("zlive-reload.service");
    let (fstype, options) = first.mount_of("/").expect("a mount on / in the live root");
    assert_eq!(fstype, "overlay");
    assert!(
        options.contains("upperdir=/run/live/persistence/persistence/rw"),
        "the root's upper layer is not on the volume: {options}"
    );
    // The root's preparation reloads PID 1 so that sysroot.mount has its upper layer on the
    // volume; that reload also loads the second pass, so the second pass does not reload again.
    first.assert_journal("persistence.conf has / union: reloaded systemd");
    first.assert_journal("systemd had already reloaded with the volume mounted");
    first.assert_journal_count("Reloading finished", 1);
    // Then the running kernel's module tree is hidden by hand, as a removal of its package
    // would leave it: a whiteout made directly in the upper layer on the volume.
    let second = lab.boot(
        2,
        "expect /srv/anywhere/file.txt 'root union 1'\nexpect /usr/local/share/x 'usr too'\n\
         [ -d /usr/lib/modules/$(uname -r) ] || fail 'the module tree is gone'\n\
         up=/run/live/persistence/persistence/rw/usr/lib/modules\n\
         mkdir -p $up && mknod $up/$(uname -r) c 0 0 || fail 'cannot make the whiteout'\nsync\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();

    let before = digest(&lab.disk);
    let third = lab.boot_with(
        3,
        &format!("{} persistence-read-only", lab.cmdline),
        "expect /srv/anywhere/file.txt 'root union 1'\nwrite /srv/anywhere/file.txt 'in RAM'\nexpect /srv/anywhere/file.txt 'in RAM'\n",
    );
    third.assert_agent_ok();
    third.assert_no_failed_units();
    third.assert_root_in_ram();
    let (_, options) = third.mount_of("/").expect("a mount on / in the live root");
    assert!(
        options.contains("lowerdir=/run/live/persistence/persistence/rw:"),
        "read-only / union: the volume's rw/ is not a lower layer: {options}"
    );
    assert_unchanged(&lab.disk, &before, "a persistence-read-only boot");
    // A live root without its kernel's modules is refused: the root in RAM, said on the
    // console and in the journal, with the way back.
    let fourth = lab.boot(4, "expect_missing /srv/anywhere/file.txt\n");
    fourth.assert_agent_ok();
    fourth.assert_root_in_ram();
    fourth.assert_journal(
        "is hidden by persistence (removed in the live system: its kernel package?)",
    );
    fourth
        .assert_journal("persistence-rollback=previous returns to the state before the last boot");
    assert!(
        fourth
            .serial
            .contains("zlive: / union: the running kernel's module tree /usr/lib/modules/"),
        "the hidden module tree is not on the console; {}",
        fourth.where_()
    );
}

/// No `persistence` word: the root is in RAM, the pool is never imported nor written.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_without_persistence_leaves_the_pool_alone() {
    let lab = Lab::new("no-persistence", &Pool::with_conf(UNION_CONF))
        .cmdline("boot=live noeject skipconfig quiet splash persistence-zpool=dpool");
    let before = digest(&lab.disk);
    let first = lab.boot(
        1,
        "write /home/user/ram.txt 'in RAM'\n[ -e /sys/module/zfs ] && fail 'the zfs module was loaded'\n",
    );
    assert_unchanged(&lab.disk, &before, "a boot without persistence");
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_absent("zlive-import");
    first.assert_absent("run-live-persistence");
    first.assert_absent("zlive-reload");
    first.assert_root_in_ram();
}

/// The pool exists but holds no volume labelled `persistence` (a fresh stick): the boot
/// finishes in RAM, in bounded time, the journal says what was looked for and what to do,
/// and since persistence means "use it if it is there" nothing counts as failed: zlive status
/// exits 0 and the live system is "running", not "degraded".
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_pool_without_persistence_volume_falls_back_to_ram() {
    let pool = Pool::with_conf(UNION_CONF).first(|v| v.label("other"));
    let b = Lab::new("no-volume", &pool).boot(1, "write /home/user/ram.txt 'in RAM'\n");
    b.assert_agent_ok();
    b.assert_no_failed_units();
    b.assert_active("zlive-import@dpool.service");
    b.assert_active("zlive-volume@persistence.service");
    b.assert_journal(
        "persistence volume LABEL=persistence (/dev/disk/by-label/persistence) is not there",
    );
    b.assert_journal("mkfs.ext4 -L persistence");
    b.assert_journal("is off for this boot (not an error");
    for (code, text) in [b.status_in_initrd(), b.status_in_live_root()] {
        assert_eq!(
            code, 0,
            "a label search that found nothing is no failure:\n{text}"
        );
        assert!(
            text.contains("absent/not-found") && text.contains("is not there"),
            "{text}"
        );
    }
    assert_eq!(b.status_json()["failed"], false);
    assert_ne!(
        b.unit_state("run-live-persistence-persistence.mount")
            .map(|s| s.0)
            .as_deref(),
        Some("active")
    );
    b.assert_root_in_ram();
    b.assert_live_system_running();
    b.assert_no_not_found_units();
    let (start, end) = b
        .step("zlive-volume@persistence.service")
        .expect("the volume wait in the journal");
    assert!(
        end - start < 30.0,
        "the volume wait took {:.1} s",
        end - start
    );
}

/// A volume named with persistence-zvol= that the pool does not have: a failure, shown by
/// zlive status (exit 1) in the initrd and the live root, and in the live root's failed units
/// as zlive's own unit (installed there), never as a "not-found" leftover of the initrd.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_named_zvol_missing_is_a_failure() {
    let lab = Lab::new("missing-zvol", &Pool::with_conf(UNION_CONF)).cmdline(
        "boot=live noeject persistence skipconfig quiet splash persistence-zvol=dpool/missing",
    );
    let b = lab.boot(1, "write /home/user/ram.txt 'in RAM'\n");
    b.assert_agent_ok();
    b.assert_failed("zlive-volume@missing.service");
    b.assert_journal("persistence volume dpool/missing (/dev/zvol/dpool/missing) is not there");
    for (code, text) in [b.status_in_initrd(), b.status_in_live_root()] {
        assert_eq!(code, 1, "a missing named volume is a failure:\n{text}");
        assert!(
            text.contains("zlive-volume@missing.service") && text.contains("is not there"),
            "{text}"
        );
    }
    b.assert_root_in_ram();
    b.assert_no_not_found_units();
    let failed = b.section("live-failed");
    assert!(
        failed.contains("zlive-volume@missing.service") && failed.contains("loaded failed"),
        "{}: the live root's failed units:\n{failed}",
        b.name
    );
}

/// The named pool is not there at all (a blank disk): the import gives up after its bounded
/// wait, the journal says so, and the system boots in RAM.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_missing_pool_falls_back_to_ram() {
    let b = Lab::new("missing-pool", &Pool::blank()).boot(1, "write /home/user/ram.txt 'in RAM'\n");
    b.assert_agent_ok();
    b.assert_failed("zlive-import@dpool.service");
    b.assert_journal("pool dpool could not be imported within 20 s of the initrd's start");
    b.assert_journal("Persistence on this pool is off for this boot");
    b.assert_root_in_ram();
    let (start, end) = b
        .step("zlive-import@dpool.service")
        .expect("the import in the journal");
    assert!(end - start < 40.0, "the import took {:.1} s", end - start);
    // The volume does not wait for a pool that is not there.
    b.assert_inactive("zlive-volume@persistence.service");
}

/// `make demo`: two boots of the demo live system, showing what survives and the journal lines
/// that prove it.
#[test]
#[ignore = "the demo; run by make demo"]
fn demo_two_boots() {
    let lab = Lab::new("demo", &Pool::with_conf(UNION_CONF));
    println!("\nzlive demo: a minimal systemd live system with persistence.conf:\n{UNION_CONF}");
    println!("kernel command line: {} live-media=/dev/vdb\n", lab.cmdline);
    let first = lab.boot(
        1,
        concat!(
            "echo \"written in boot 1, $(cut -d' ' -f1 /proc/uptime) s after the kernel started\" > /home/user/notes.txt\n",
            "echo 'hostname=demo' > /etc/demo.conf\n",
            "mkdir -p /var/lib/demo && echo 1 > /var/lib/demo/counter\n",
            "echo 'ZLIVE-DEMO: boot 1 wrote:'\n",
            "for f in /home/user/notes.txt /etc/demo.conf /var/lib/demo/counter; do echo \"$f: $(cat $f)\"; done\n",
        ),
    );
    first.assert_agent_ok();
    show(&first);
    let second = lab.boot(
        2,
        concat!(
            "echo 'ZLIVE-DEMO: boot 2 finds:'\n",
            "for f in /home/user/notes.txt /etc/demo.conf /var/lib/demo/counter; do echo \"$f: $(cat $f)\"; done\n",
            "expect /etc/demo.conf 'hostname=demo'\n",
            "expect /var/lib/demo/counter 1\n",
            "echo $(( $(cat /var/lib/demo/counter) + 1 )) > /var/lib/demo/counter\n",
            "echo \"and counts this boot: /var/lib/demo/counter: $(cat /var/lib/demo/counter)\"\n",
        ),
    );
    second.assert_agent_ok();
    show(&second);
    println!("\nEverything above is in target/vm-artifacts/demo/ (serial logs, units, journals).");
}

/// The demo's part of a boot: what its script printed, zlive status, zlive's journal lines.
fn show(b: &Boot) {
    println!("---- {} ----", b.name);
    let mut printing = false;
    for line in b.serial.lines() {
        if line.starts_with("ZLIVE-DEMO:") {
            printing = true;
        }
        if line.starts_with("=== ZLIVE-BEGIN scenario")
            || line.starts_with("=== ZLIVE-END")
            || line.starts_with("ZLIVE-AGENT-DONE")
        {
            printing = line.starts_with("=== ZLIVE-BEGIN scenario");
            continue;
        }
        if printing {
            println!("  {line}");
        }
    }
    println!("  zlive status, in the live system:");
    for line in b.section("live-status").lines() {
        println!("    {line}");
    }
    println!("  journal (journalctl -b -t zlive, in the initrd):");
    for line in b
        .section("journal")
        .lines()
        .filter(|l| l.contains(" zlive["))
    {
        println!("    {line}");
    }
}
