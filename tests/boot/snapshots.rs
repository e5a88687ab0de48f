//! Snapshots of the persistence volume: one at every boot, a misspelt name, rollback and
//! back, reset and back with pruning, a past state booted read-only, and a pool too full.

use crate::harness::pool::volume_digest;
use crate::harness::{Boot, Lab, Pool, Volume};

/// The full name of a snapshot the journal names after `after` (up to the next blank or
/// closing parenthesis).
pub(crate) fn snapshot_named(b: &Boot, after: &str) -> String {
    let journal = b.section("journal");
    let at = journal
        .find(after)
        .unwrap_or_else(|| panic!("{}: no {after:?} in the journal", b.name));
    journal[at + after.len()..]
        .split(|c: char| c.is_whitespace() || c == ')' || c == ';')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Boot 1 asks for a misspelt snapshot (there is none yet): the journal says so and nothing
/// changes; it writes A. Boot 2 takes the first snapshot and writes B; boot 3 rolls back to
/// the previous state (A, not B); boot 4 returns to the state the rollback kept (A and B).
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_rollback_and_back() {
    let lab = Lab::new("rollback", &Pool::with_conf("/home/user union\n"));
    let misspelt = format!(
        "{} persistence-rollback=zlive-20000101T000000Z",
        lab.cmdline
    );
    let first = lab.boot_with(1, &misspelt, "write /home/user/a A\n");
    first.assert_agent_ok();
    first.assert_active("sysroot-home-user.mount");
    first.assert_journal(
        "persistence-rollback=zlive-20000101T000000Z names no snapshot of dpool/persistence",
    );
    first.assert_not_in_journal("rolled dpool/persistence back");
    let second = lab.boot(2, "expect /home/user/a A\nwrite /home/user/b B\n");
    second.assert_agent_ok();
    second.assert_journal("took snapshot dpool/persistence@zlive-");
    let rollback = format!("{} persistence-rollback=previous", lab.cmdline);
    let third = lab.boot_with(
        3,
        &rollback,
        "expect /home/user/a A\nexpect_missing /home/user/b\n\
         zlive snapshots > /tmp/snaps 2>&1; cat /tmp/snaps\n\
         grep -q 'return to it: persistence-rollback=dpool/persistence@zlive-' /tmp/snaps || fail 'zlive snapshots lists no parameter'\n\
         grep -q \"menuentry 'Live system, persistence as of\" /tmp/snaps || fail 'zlive snapshots prints no GRUB entry'\n",
    );
    third.assert_agent_ok();
    third.assert_no_failed_units();
    third.assert_journal("rolled dpool/persistence back to dpool/persistence@zlive-");
    let (_, status) = third.status_in_live_root();
    assert!(status.contains("rolled-back-to"), "{status}");
    let kept = snapshot_named(&third, "the state before is ");
    let back = format!("{} persistence-rollback={kept}", lab.cmdline);
    let fourth = lab.boot_with(4, &back, "expect /home/user/a A\nexpect /home/user/b B\n");
    fourth.assert_agent_ok();
    fourth.assert_no_failed_units();
}

/// A reset starts from an empty volume (its persistence.conf kept); the snapshot taken before
/// it is never pruned, nor are a user's own snapshots (one even named like zlive's), even
/// keeping one snapshot and booting once more; the state before comes back with a rollback;
/// and that state booted read-only from its snapshot keeps the volume as it is (writes go to
/// RAM).
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_reset_pruning_and_a_past_state_read_only() {
    let pool = Pool::with_conf("/home/user union\n").first(|v| {
        v.after_unmount(
            "zfs snapshot $pool/persistence@mine && zfs snapshot $pool/persistence@zlive-users-own",
        )
    });
    let lab = Lab::new("reset", &pool);
    // A user's shutdown: the snapshot the next boot takes is of a clean file system, which a
    // read-only view shows whole (after a power cut it would show it before its journal).
    let first = lab.boot(1, "write /home/user/x X\nclean_poweroff\n");
    first.assert_clean_poweroff();
    let keep_one = format!("{} persistence-snapshots=1", lab.cmdline);
    let reset = format!("{keep_one} persistence-reset");
    let second = lab.boot_with(
        2,
        &reset,
        "expect_missing /home/user/x\nwrite /home/user/fresh F\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_active("sysroot-home-user.mount");
    second.assert_journal(
        "reset dpool/persistence: a new, empty file system with its persistence.conf",
    );
    let before = snapshot_named(&second, "the state before is ");
    // A boot snapshot newer than it, and pruning down to one: only zlive's boot snapshots go
    // (zlive snapshots lists its own: the one boot snapshot kept and the reset's).
    let pruned = lab.boot_with(
        3,
        &keep_one,
        &format!(
            "zlive snapshots > /tmp/snaps 2>&1; cat /tmp/snaps\n\
             grep -q '^{before} ' /tmp/snaps || fail 'the snapshot before the reset is gone'\n\
             grep -q 'never pruned; drop it when you no longer need it: zfs destroy {before}' /tmp/snaps || fail 'zlive snapshots does not say how to drop it'\n\
             n=$(grep -c '^dpool/persistence@zlive-' /tmp/snaps); [ \"$n\" = 2 ] || fail \"zlive lists $n of its snapshots, not 2\"\n\
             zfs list -H -t snapshot -o name > /tmp/all; cat /tmp/all\n\
             grep -qx 'dpool/persistence@mine' /tmp/all || fail 'the user snapshot @mine was pruned'\n\
             grep -qx 'dpool/persistence@zlive-users-own' /tmp/all || fail 'the user snapshot @zlive-users-own was pruned'\n"
        ),
    );
    pruned.assert_agent_ok();
    pruned.assert_journal("pruned snapshot dpool/persistence@zlive-");
    pruned.assert_not_in_journal(&format!("pruned snapshot {before}"));
    pruned.assert_not_in_journal("pruned snapshot dpool/persistence@zlive-users-own");
    // Beside the boot, not in the volume's wait.
    pruned.assert_active("zlive-prune@persistence.service");
    let back = format!("{} persistence-rollback={before}", lab.cmdline);
    let third = lab.boot_with(
        4,
        &back,
        "expect /home/user/x X\nexpect_missing /home/user/fresh\n",
    );
    third.assert_agent_ok();
    let digest_before = volume_digest(lab.test, &lab.disk);
    let view = format!(
        "boot=live noeject persistence skipconfig quiet splash persistence-snapshot={before}"
    );
    let fourth = lab.boot_with(
        5,
        &view,
        "expect /home/user/x X\nwrite /home/user/ram R\nexpect /home/user/ram R\n",
    );
    fourth.assert_agent_ok();
    fourth.assert_no_failed_units();
    fourth.assert_active("sysroot-home-user.mount");
    fourth.assert_not_in_journal("was not cleanly unmounted");
    let digest_after = volume_digest(lab.test, &lab.disk);
    assert_eq!(
        digest_before, digest_after,
        "booting a snapshot read-only changed the volume"
    );
}

/// A pool too full for a snapshot of a thick volume: a warning that says why, and the boot
/// goes on with persistence.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_pool_too_full_for_a_snapshot() {
    let pool = Pool::standard()
        .first(|v| {
            v.conf("/home/user union\n")
                .while_mounted("dd if=/dev/urandom of=/mnt/vol/data bs=1M count=120 2>/dev/null; sync")
        })
        .volume(Volume::new("filler", "1M").after_unmount(
            "zfs set refreservation=none $pool/filler && avail=$(zfs get -Hp -o value available $pool) && size=$(( (avail - 40 * 1048576) / 1048576 * 1048576 )) && zfs set volsize=$size $pool/filler && zfs set refreservation=$size $pool/filler",
        ));
    let lab = Lab::new("snapshot-full", &pool);
    let b = lab.boot(1, "write /home/user/still works\n");
    b.assert_agent_ok();
    b.assert_active("sysroot-home-user.mount");
    b.assert_journal("has no space for a snapshot of dpool/persistence");
    b.assert_journal("needs room for all the data it holds");
}
