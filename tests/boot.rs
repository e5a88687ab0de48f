//! Real boots in QEMU: a live system with zlive in its initrd and its persistence on a ZFS
//! zvol. Needs root, QEMU and OpenZFS (tests/vm/setup-host.sh); run by `make check`:
//! `cargo test --release --test boot -- --ignored --test-threads=1`.

mod vm;

use vm::{boot, images, pool, PoolSpec, SEED, STANDARD_POOL};

const UNION_CONF: &str =
    "# the seed's three directories\n/home/user union\n/etc union\n/var/lib union\n";

fn union_pool(test: &str) -> std::path::PathBuf {
    pool(
        test,
        &PoolSpec {
            setup: STANDARD_POOL,
            files: &[("persistence.conf", UNION_CONF)],
        },
    )
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
    first.assert_journal("imported pool dpool");
    first.assert_journal("generator: pass 2: persistence entries accepted: 3, lines refused: 0");
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
