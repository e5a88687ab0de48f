//! `zlive backup` and `zlive restore` in the live system, on the seed's layout (ext4 on a zvol,
//! frozen around each snapshot): a full and then incremental backups to a pool on a second
//! disk, to a stream file and to a directory of streams; a destination holding another stream
//! and one too small, both refused with the stick unchanged; a transfer killed part-way and
//! resumed; to ssh:// (an sshd in the same guest), and syncoid pulling over ssh beside
//! zlive's own chain, then zlive restore from syncoid's copy; then a restore onto a blank disk (a pool made as zlive create makes one), which
//! the next boot uses alone; there a restore onto the same stick, which the boot after swaps
//! in, keeping the state it replaced a rollback away.

use crate::harness::{artifacts, Lab, Pool, SEED};
use std::path::PathBuf;

/// Boot 1's scenario. The disks: vdb (bak, 512 MiB), vdc (1 GiB, blank, no table: the restore makes
/// its pool as zlive create does), vdd (tiny, 96 MiB).
const BACKUPS: &str = "zpool create -f -O mountpoint=none bak /dev/vdb1\n\
    zpool create -f -O mountpoint=none tiny /dev/vdd1\n\
    write /home/user/notes.txt one\n\
    ok b1 zlive backup pool:bak\nsays b1 '(full)'\nsays b1 'verified, the GUIDs match'\n\
    write /home/user/notes.txt two\n\
    ok b2 zlive backup pool:bak\nsays b2 'incremental from dpool/persistence#zlive-'\n\
    [ \"$(zfs list -Ht snapshot -d1 -o name bak/dpool-persistence | wc -l)\" = 2 ] || fail 'bak holds not 2 snapshots'\n\
    [ \"$(zfs get -Ho value volmode bak/dpool-persistence)\" = none ] || fail 'the copy has a device'\n\
    ok f1 zlive backup /run/stick.zstream\nsays f1 '(full)'\n\
    ok d1 zlive backup /run/d/\nok d2 zlive backup /run/d/\nsays d2 incremental\n\
    [ \"$(ls /run/d | wc -l)\" = 2 ] || fail \"/run/d holds $(ls /run/d)\"\n\
    zfs create bak/other && zfs snapshot bak/other@x\n\
    refused 'holds a different stream' zlive backup pool:bak/other\n\
    start_sshd\n\
    refused 'cannot reach root@127.0.0.1 over ssh' zlive backup ssh://root@127.0.0.1:2/bak/viassh\n\
    ok s1 zlive backup ssh://root@127.0.0.1/bak/viassh\nsays s1 '(full)'\nsays s1 'verified, the GUIDs match'\n\
    ok s2 zlive backup ssh://root@127.0.0.1/bak/viassh\nsays s2 'incremental from dpool/persistence#zlive-'\n\
    grep -q 'Accepted publickey for root' /tmp/sshd.log || fail 'the backups did not go through sshd'\n\
    ok y1 syncoid --recvoptions='u o volmode=none' root@127.0.0.1:dpool/persistence bak/viasyncoid\n\
    [ \"$(zfs get -Ho value volmode bak/viasyncoid)\" = none ] || fail 'the syncoid copy has a device'\n\
    ok b5 zlive backup pool:bak\nsays b5 'incremental from dpool/persistence#zlive-'\n\
    ok ry zlive restore pool:bak/viasyncoid --to bak --name fromsyncoid\nsays ry 'verified, the GUIDs match'\n\
    dd if=/dev/urandom of=/home/user/big bs=1M count=128 2>/dev/null; sync\n\
    n=$(zfs list -Ht all -d1 -o name dpool/persistence | wc -l)\n\
    refused 'Nothing was written, and the stick is as it was' zlive backup pool:tiny\n\
    [ \"$(zfs list -Ht all -d1 -o name dpool/persistence | wc -l)\" = \"$n\" ] || fail 'the refusal changed the stick'\n\
    [ \"$(zfs list -Ht all -r -o name tiny | wc -l)\" = 1 ] || fail 'tiny was written'\n\
    zlive backup pool:bak > /tmp/b3.out 2>&1 &\n\
    kill_send_after /tmp/b3.out ' sent of about'\nwait\ncat /tmp/b3.out\n\
    says b3 'the next zlive backup to the same place resumes it'\n\
    [ \"$(zfs get -Ho value receive_resume_token bak/dpool-persistence)\" != - ] || fail 'no resume token'\n\
    ok b4 zlive backup pool:bak\nsays b4 'resuming it'\nsays b4 'Resumed and finished'\n\
    ok st zlive status\nsays st 'dpool/persistence was last backed up 0 days ago'\n\
    refused '/dev/vdb is in use' zlive restore pool:bak/dpool-persistence --to /dev/vdb --yes\n\
    ok r zlive restore pool:bak/dpool-persistence --to /dev/vdc --pool restored --yes\n\
    says r 'gets a new GPT with one partition'\nsays r 'verified, the GUIDs match'\nsays r 'zlive restore: exporting restored'\n\
    ! zpool list -H -o name | grep -qx restored || fail 'the restore left its pool imported'\n";

/// A sparse file of `bytes` in the test's artifacts: a blank disk with one partition (the
/// live root has no udev rules for the partition `zpool create` makes on a whole disk).
pub fn blank_disk(test: &str, name: &str, bytes: u64) -> PathBuf {
    use std::io::Write;
    let dir = artifacts(test);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    let mut sfdisk = std::process::Command::new("sfdisk")
        .args(["-q"])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,,\n")
        .unwrap();
    assert!(
        sfdisk.wait().unwrap().success(),
        "sfdisk {}",
        path.display()
    );
    path
}

#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_backup_incremental_resumed_then_restored() {
    let test = "backup";
    let restored = artifacts(test).join("restored.img");
    std::fs::create_dir_all(artifacts(test)).unwrap();
    std::fs::File::create(&restored)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    // Sparse: a thick volume holding the 128 MiB file would need as much again free in the
    // 512 MiB pool for each snapshot.
    let pool = Pool::with_conf("/home/user union\n").first(|v| v.sparse());
    let lab = Lab::new(test, &pool)
        .with_disk(blank_disk(test, "bak.img", 512 << 20), false)
        .with_disk(restored.clone(), false)
        .with_disk(blank_disk(test, "tiny.img", 96 << 20), false);
    let first = lab.boot(1, BACKUPS);
    first.assert_agent_ok();
    // The scenario came through fw_cfg; the initrd's capture ran all the same.
    first.assert_journal("took snapshot dpool/persistence@zlive-");
    assert!(
        first.serial.contains("ZLIVE-OK: killed zfs send"),
        "{}: the transfer was not interrupted; {}",
        first.name,
        first.where_()
    );
    // Taken as the live system came up, before the first backup: the reminder.
    let (_, status) = first.status_in_live_root();
    assert!(
        status.contains("no backup of dpool/persistence yet"),
        "{}: zlive status does not remind of a backup:\n{status}",
        first.name
    );
    // The restored disk alone, found by the seed's line: the newest backup's files.
    let alone = Lab {
        disk: restored,
        disks: Vec::new(),
        ..lab.clone().cmdline(SEED)
    };
    let second = alone.boot(2, RESTORE_HERE);
    second.assert_agent_ok();
    second.assert_journal("pool restored holds a persistence volume: imported read-write");
    // The restore onto the same stick is swapped in before the volume is opened.
    let third = alone.boot(
        3,
        "expect /home/user/notes.txt three\nexpect_missing /home/user/after.txt\n\
         zfs list -H -o name | grep -q '^restored/persistence-zlive-rolled-' || fail 'no rolled generation'\n\
         [ \"$(zfs get -Ho value org.zlive:restore-pending restored/persistence)\" = - ] || fail 'still pending'\n\
         ok s zlive snapshots\nsays s before-restore\n",
    );
    third.assert_agent_ok();
    third.assert_journal("restored restored/persistence from the backup zlive restore received");
    third.assert_journal("persistence-rollback=restored/persistence-zlive-rolled-");
    // Bookmarks are not sent: the restored volume has had no backup of its own.
    let (_, status) = third.status_in_live_root();
    assert!(
        status.contains("no backup of restored/persistence yet"),
        "{}: zlive status does not remind of a backup:\n{status}",
        third.name
    );
}

/// Boot 2's scenario, the restored disk alone: the backup's newest files; then a backup of
/// this state to a file, a change, and a restore of that file onto the same stick: it waits
/// for the next boot, hidden, and a second one is refused.
const RESTORE_HERE: &str = "expect /home/user/notes.txt two\n\
    [ \"$(stat -c %s /home/user/big)\" = 134217728 ] || fail 'big is not whole'\n\
    rm /home/user/big\nwrite /home/user/notes.txt three\n\
    ok s zlive backup /run/s.zstream\n\
    write /home/user/notes.txt four\nwrite /home/user/after.txt after\n\
    ok h zlive restore /run/s.zstream\nsays h 'The restore waits in restored/persistence-zlive-restored-'\n\
    w=$(zfs get -Ho value org.zlive:restore-pending restored/persistence)\n\
    [ \"$(zfs get -Ho value volmode \"$w\")\" = none ] || fail \"$w has a device\"\n\
    refused 'a restore already waits for the next boot' zlive restore /run/s.zstream\n";
