//! Real boots in QEMU: a live system with zlive in its initrd and its persistence on a ZFS
//! zvol. Needs root, QEMU and OpenZFS (tests/vm/setup-host.sh); run by `make check`:
//! `cargo test --release --test boot -- --ignored --test-threads=1`.

mod vm;

use vm::{boot, images, pool, PoolSpec, SEED, STANDARD_POOL};

const UNION_CONF: &str =
    "# the seed's three directories\n/home/user union\n/etc union\n/var/lib union\n";

fn union_pool(test: &str) -> std::path::PathBuf {
    vm::conf_pool(test, STANDARD_POOL, UNION_CONF)
}

/// The seed's command line plus live-media= and persistence-zpool=: files written under
/// /home/user, /etc and /var/lib in boot 1 are there in boot 2.
fn seed_union_survives_reboot(test: &str, initrd: &std::path::Path) {
    let disk = union_pool(test);
    let cmdline = format!("{SEED} persistence-zpool=dpool");
    let first = boot(
        test,
        1,
        initrd,
        &disk,
        &cmdline,
        "write /home/user/notes.txt 'written in boot 1'\nwrite /etc/zlive-test.conf 'etc boot 1'\nwrite /var/lib/zlive/state 'state 1'\nexpect /etc/image-file 'image file'\n",
    );
    first.assert_agent_ok();
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
        first.assert_active(unit);
    }
    first.assert_no_failed_units();
    first.assert_journal("zlive[");
    first.assert_journal_any(&["imported pool dpool", "pool dpool is already imported"]);
    first.assert_journal("generator: pass 2: persistence entries accepted: 3, lines refused: 0");
    // zlive status in the initrd: everything up, exit 0, the entries with their mounts.
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
    assert_eq!(
        first.mount_of("/home/user").map(|m| m.0).as_deref(),
        Some("overlay"),
        "/home/user in the live root"
    );

    let second = boot(
        test,
        2,
        initrd,
        &disk,
        &cmdline,
        "expect /home/user/notes.txt 'written in boot 1'\nexpect /etc/zlive-test.conf 'etc boot 1'\nexpect /var/lib/zlive/state 'state 1'\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
}

#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_seed_cmdline_union_entries_persist() {
    seed_union_survives_reboot("seed-union", &images().initrd);
}

/// `/ union`: a file written anywhere in the root survives, and the root overlay's upper
/// layer is on the volume.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_root_union_persists_everything() {
    let test = "root-union";
    let disk = vm::conf_pool(test, STANDARD_POOL, "/ union\n");
    let cmdline = format!("{SEED} persistence-zpool=dpool");
    let initrd = &images().initrd;
    let first = boot(
        test,
        1,
        initrd,
        &disk,
        &cmdline,
        "write /srv/anywhere/file.txt 'root union 1'\nwrite /usr/local/share/x 'usr too'\n",
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
    first.assert_journal("the root overlay changed (persistent /)");
    let second = boot(
        test,
        2,
        initrd,
        &disk,
        &cmdline,
        "expect /srv/anywhere/file.txt 'root union 1'\nexpect /usr/local/share/x 'usr too'\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    // persistence-read-only: the volume's rw/ becomes a lower layer, changes go to RAM, and
    // the pool is not written.
    let before = vm::digest(&disk);
    let third = boot(
        test,
        3,
        initrd,
        &disk,
        &format!("{cmdline} persistence-read-only"),
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
    assert_eq!(
        vm::digest(&disk),
        before,
        "the pool disk changed under persistence-read-only"
    );
}

/// A `bind` entry: the first boot copies the image's directory onto the volume, and what is
/// written there survives.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_bind_entry_bootstraps_and_persists() {
    let test = "bind";
    let disk = vm::conf_pool(test, STANDARD_POOL, "/home/user bind\n");
    let cmdline = format!("{SEED} persistence-zpool=dpool");
    let initrd = &images().initrd;
    let first = boot(
        test,
        1,
        initrd,
        &disk,
        &cmdline,
        "expect /home/user/.profile 'image profile'\nwrite /home/user/bind.txt 'bound 1'\n",
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_active("sysroot-home-user.mount");
    first.assert_journal("(first boot of this entry)");
    assert_eq!(
        first.mount_of("/home/user").map(|m| m.0).as_deref(),
        Some("ext4"),
        "/home/user is not the volume's bind mount"
    );
    let second = boot(
        test,
        2,
        initrd,
        &disk,
        &cmdline,
        "expect /home/user/bind.txt 'bound 1'\nexpect /home/user/.profile 'image profile'\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
}

/// No `persistence` word: the root is in RAM, the pool is never imported, nothing survives.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_without_persistence_leaves_the_pool_alone() {
    let test = "no-persistence";
    let disk = union_pool(test);
    let cmdline = "boot=live noeject skipconfig quiet splash persistence-zpool=dpool";
    let initrd = &images().initrd;
    let script = "write /home/user/ram.txt 'in RAM'\n[ -e /sys/module/zfs ] && fail 'the zfs module was loaded'\n";
    let before = vm::digest(&disk);
    let first = boot(test, 1, initrd, &disk, cmdline, script);
    assert_eq!(
        vm::digest(&disk),
        before,
        "the pool disk changed in a boot without persistence"
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_absent("zlive-import");
    first.assert_absent("run-live-persistence");
    first.assert_absent("zlive-reload");
    first.assert_root_in_ram();
    let second = boot(
        test,
        2,
        initrd,
        &disk,
        cmdline,
        "expect_missing /home/user/ram.txt\n",
    );
    second.assert_agent_ok();
}

/// The pool exists but holds no volume labelled `persistence`: the boot finishes in RAM, in
/// bounded time, and the journal says what was looked for and what to do.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_pool_without_persistence_volume_falls_back_to_ram() {
    let test = "no-volume";
    let setup = format!("LABEL=other\n{STANDARD_POOL}");
    let disk = vm::conf_pool(test, &setup, UNION_CONF);
    let cmdline = format!("{SEED} persistence-zpool=dpool");
    let b = boot(
        test,
        1,
        &images().initrd,
        &disk,
        &cmdline,
        "write /home/user/ram.txt 'in RAM'\n",
    );
    b.assert_agent_ok();
    b.assert_active("zlive-import@dpool.service");
    b.assert_failed("zlive-volume@persistence.service");
    b.assert_journal("did not appear within 15 s");
    b.assert_journal("mkfs.ext4 -L persistence");
    let (code, text) = b.status_in_initrd();
    assert_eq!(
        code, 1,
        "zlive status should fail when the volume is missing:\n{text}"
    );
    assert!(
        text.contains("zlive-volume@persistence.service") && text.contains("did not appear"),
        "{text}"
    );
    assert_eq!(b.status_json()["failed"], true);
    // After switch-root the failed initrd services are history: the volume is simply not
    // mounted, which zlive status reports as a failure with the journal's explanation.
    let (code, text) = b.status_in_live_root();
    assert_eq!(
        code, 1,
        "zlive status in the live root should report the missing volume:\n{text}"
    );
    assert!(text.contains("did not appear"), "{text}");
    assert_ne!(
        b.unit_state("run-live-persistence-persistence.mount")
            .map(|s| s.0)
            .as_deref(),
        Some("active")
    );
    b.assert_root_in_ram();
    let (start, end) = b
        .step("zlive-volume@persistence.service")
        .expect("the volume wait in the journal");
    assert!(
        end - start < 30.0,
        "the volume wait took {:.1} s",
        end - start
    );
}

/// OpenZFS's own dracut module in the same initrd: its import runs too, and persistence works.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_with_openzfs_dracut_module() {
    seed_union_survives_reboot("with-openzfs-module", &images().initrd_zfs);
}

/// `make demo`: two boots of the demo live system, showing what survives and the journal lines
/// that prove it.
#[test]
#[ignore = "the demo; run by make demo"]
fn demo_two_boots() {
    let test = "demo";
    let disk = union_pool(test);
    let cmdline = format!("{SEED} persistence-zpool=dpool");
    let initrd = &images().initrd;
    println!("\nzlive demo: a minimal systemd live system with persistence.conf:\n{UNION_CONF}");
    println!("kernel command line: {cmdline} live-media=/dev/vdb\n");
    let first = boot(
        test,
        1,
        initrd,
        &disk,
        &cmdline,
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
    let second = boot(
        test,
        2,
        initrd,
        &disk,
        &cmdline,
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

fn show(b: &vm::Boot) {
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

/// The seed's command line exactly, plus the pool's name: no live-media=, so
/// zlive-find-medium.service finds the medium by scanning, as live-boot does.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_seed_cmdline_finds_the_medium_by_scanning() {
    let test = "medium-scan";
    let disk = union_pool(test);
    let cmdline = format!("{SEED} persistence-zpool=dpool");
    let b = vm::boot_exactly(
        test,
        1,
        &images().initrd,
        &disk,
        &cmdline,
        "write /home/user/found.txt 'found'\nexpect /etc/image-file 'image file'\n",
    );
    b.assert_agent_ok();
    b.assert_no_failed_units();
    b.assert_active("zlive-find-medium.service");
    b.assert_active("sysroot-home-user.mount");
    b.assert_journal("live medium found on /dev/vdb");
}

/// The named pool is not there at all (a blank disk): the import gives up after its bounded
/// wait, the journal says so, and the system boots in RAM.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_missing_pool_falls_back_to_ram() {
    let test = "missing-pool";
    let disk = pool(
        test,
        &PoolSpec {
            setup: "true\n",
            files: &[],
        },
    );
    let cmdline = format!("{SEED} persistence-zpool=dpool");
    let b = boot(
        test,
        1,
        &images().initrd,
        &disk,
        &cmdline,
        "write /home/user/ram.txt 'in RAM'\n",
    );
    b.assert_agent_ok();
    b.assert_failed("zlive-import@dpool.service");
    b.assert_journal("pool dpool could not be imported within 20 s");
    b.assert_journal("Persistence on this pool is off for this boot");
    b.assert_root_in_ram();
    let (start, end) = b
        .step("zlive-import@dpool.service")
        .expect("the import in the journal");
    assert!(end - start < 40.0, "the import took {:.1} s", end - start);
    // The volume does not wait for a pool that is not there.
    assert_eq!(
        b.unit_state("zlive-volume@persistence.service")
            .map(|s| s.0)
            .as_deref(),
        Some("inactive"),
        "zlive-volume@ should not run when its only pool failed"
    );
}
