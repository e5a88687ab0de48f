//! Persistence on ZFS datasets (OpenZFS 2.2.2 and later): found by its label property with
//! the seed's command line, named with persistence-dataset=, the overlay semantics an upper
//! layer must keep, a power cut and a clean poweroff, read-only, encryption with reset and
//! rollback, and the refusal of an OpenZFS too old.

use crate::harness::pool::{assert_exported, inspect};
use crate::harness::{Crypt, Lab, Pool, Volume, SEED};

const PASSPHRASE: &str = "correct horse battery";

/// What an overlay's upper layer must keep across a power cut, checked after it: a deleted
/// lower file stays deleted (whiteout), a renamed lower directory keeps its contents, a hard
/// link made after a copy-up is still one, xattrs and POSIX ACLs, and a file fsynced just
/// before the cut.
const SEMANTICS_WRITE: &str = "write /home/user/notes.txt 'written in boot 1'\n\
    rm /etc/image-file || fail 'cannot delete a file of the image'\n\
    mv /etc/zlive-lower /etc/zlive-renamed || fail 'cannot rename a directory of the image'\n\
    ln /home/user/.profile /home/user/profile-link || fail 'cannot link a file of the image'\n\
    setfattr -n user.zlive -v kept /home/user/notes.txt || fail 'setfattr'\n\
    setfacl -m u:65534:r /home/user/notes.txt || fail 'setfacl'\n\
    printf 'synced\\n' > /home/user/synced.txt && sync /home/user/synced.txt\n\
    cut_power\n";

const SEMANTICS_CHECK: &str = "expect /home/user/notes.txt 'written in boot 1'\n\
    expect_missing /etc/image-file\n\
    expect /etc/zlive-renamed/file 'lower file'\n\
    expect_missing /etc/zlive-lower\n\
    [ \"$(stat -c %h /home/user/.profile)\" = 2 ] || fail 'the hard link is gone'\n\
    [ \"$(stat -c %i /home/user/.profile)\" = \"$(stat -c %i /home/user/profile-link)\" ] || fail 'the link is not the same file'\n\
    [ \"$(getfattr --only-values -n user.zlive /home/user/notes.txt)\" = kept ] || fail 'the xattr is gone'\n\
    getfacl -c /home/user/notes.txt | grep -q '^user:nobody:r--' || getfacl -cn /home/user/notes.txt | grep -q '^user:65534:r--' || fail 'the ACL is gone'\n\
    expect /home/user/synced.txt synced\n";

/// The seed's command line on a stick whose persistence is a dataset: the scan finds its
/// label, the volume becomes that dataset (mounted as one, no fsck), and the overlay keeps
/// what it must across a power cut; then a clean poweroff exports the pool.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_dataset_found_by_its_label_keeps_overlay_semantics() {
    let lab = Lab::new(
        "dataset-seed",
        &Pool::dataset_with_conf("/home/user union\n/etc union\n/var/lib union\n"),
    )
    .cmdline(SEED);
    let first = lab.boot(1, SEMANTICS_WRITE);
    first.assert_power_cut();
    first.assert_journal("pool dpool holds a persistence volume: imported read-write");
    first.assert_journal("the label persistence is on dataset dpool/live");
    first.assert_journal("makes the whiteouts overlayfs needs");
    first.assert_active("run-live-persistence-persistence.mount");
    first.assert_mount_type("/run/live/persistence/persistence", "zfs");
    first.assert_absent("systemd-fsck@");
    // One boot snapshot kept: the first boot's is pruned; zlive snapshots lists the second's.
    let second = lab.boot_with(
        2,
        &format!("{SEED} persistence-snapshots=1"),
        &format!(
            "{SEMANTICS_CHECK}zlive snapshots | grep -q 'dpool/live@zlive-' || fail 'zlive snapshots lists no snapshot of dpool/live'\n\
             [ \"$(zfs list -H -t snapshot -o name dpool/live | wc -l)\" = 1 ] || fail 'not one snapshot left'\n\
             clean_poweroff\n"
        ),
    );
    second.assert_clean_poweroff();
    second.assert_no_failed_units();
    // Proven once per module version: not again.
    second.assert_not_in_journal("makes the whiteouts overlayfs needs");
    second.assert_journal("(persistence-snapshots= keeps 1)");
    assert_exported(lab.test, &lab.disk);
    let (code, status) = second.status_in_initrd();
    assert_eq!(code, 0, "{status}");
}

/// The contents of dataset dpool/live, as a digest, read from a read-only import.
fn dataset_digest(test: &str, disk: &std::path::Path) -> String {
    let found = inspect(
        test,
        disk,
        "zpool import -N -f -o readonly=on dpool\nmkdir -p /mnt/ds\n\
         mount -t zfs -o zfsutil,ro dpool/live /mnt/ds\n\
         echo \"ZLIVE-INSPECT tree=$(cd /mnt/ds && find . -printf '%p %s %m\\n' | sort | sha256sum | head -c 16)\"\n\
         umount /mnt/ds\nzpool export dpool\n",
    );
    found
        .into_iter()
        .find_map(|(k, v)| (k == "tree").then_some(v))
        .expect("the inspection printed no tree digest")
}

/// persistence-dataset= with `/ union`: anything written to the root persists, until a quota
/// fills the dataset; then read-only, where writes go to RAM, the dataset is unchanged, and the
/// journal says it is full and what to do; then an OpenZFS too old for
/// datasets (simulated: the module's version file says 2.2.1), which refuses the dataset with
/// a message that says what to do, and boots in RAM.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_dataset_named_root_union_read_only_and_old_zfs() {
    let named = format!("{SEED} persistence-dataset=dpool/live");
    let lab = Lab::new("dataset-named", &Pool::dataset_with_conf("/ union\n")).cmdline(&named);
    // Then fill it up to a quota set from the live system.
    let first = lab.boot(
        1,
        "write /srv/x 'in the root'\nwrite /etc/y 'etc too'\n\
         used=$(zfs get -Hp -o value used dpool/live)\n\
         zfs set quota=$((used + 4194304)) dpool/live || fail 'cannot set a quota'\n\
         dd if=/dev/urandom of=/srv/fill bs=1M count=16 2>/dev/null; sync\n",
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_journal("imported pool dpool (forced)");
    // Named, it is mounted where live-boot mounts a volume: under its own (last) name.
    first.assert_mount_type("/run/live/persistence/live", "zfs");
    let before = dataset_digest(lab.test, &lab.disk);
    let read_only = lab.boot_with(
        2,
        &format!("{named} persistence-read-only"),
        "expect /srv/x 'in the root'\nexpect /etc/y 'etc too'\nwrite /srv/ram 'in RAM'\n",
    );
    read_only.assert_agent_ok();
    read_only.assert_no_failed_units();
    read_only.assert_journal("persistence volume dpool/live is full");
    read_only.assert_journal(
        "raise its quota or free space in its pool (zfs set quota=SIZE dpool/live)",
    );
    assert_eq!(
        dataset_digest(lab.test, &lab.disk),
        before,
        "a read-only boot changed the dataset"
    );
    let old = lab.boot_with(
        3,
        &format!("{named} zlive.test.zfs-version=2.2.1"),
        "expect_missing /srv/x\nwrite /srv/ram 'in RAM'\n",
    );
    old.assert_agent_ok();
    old.assert_failed("zlive-volume@live.service");
    old.assert_journal(
        "the loaded OpenZFS is 2.2.1, and a dataset is used as persistence only from 2.2.2 on",
    );
    old.assert_root_in_ram();
    // On the console as well, where `quiet` leaves only systemd's "Failed to start".
    assert!(
        old.serial
            .contains("zlive: persistence volume dpool/live: dataset dpool/live is not used: the loaded OpenZFS is 2.2.1"),
        "{}: the refusal is not on the console; {}",
        old.name,
        old.where_()
    );
}

/// An encrypted dataset found by its label: its passphrase is asked for (and waited for: the
/// label says it is the user's), a reset empties it but for its persistence.conf, and a
/// rollback to the snapshot taken before the reset brings everything back.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_dataset_encrypted_reset_and_rollback() {
    let pool = Pool {
        volumes: vec![Volume::new("live", "0")
            .dataset()
            .label("persistence")
            .encrypted(Crypt::Zfs(PASSPHRASE))
            .conf("/home/user union\n")],
        ..Pool::standard()
    };
    let bak = crate::backup::blank_disk("dataset-encrypted", "bak.img", 256 << 20);
    let lab = Lab::new("dataset-encrypted", &pool)
        .cmdline(SEED)
        .with_disk(bak, false);
    let first = lab.boot_answering(
        1,
        SEED,
        "write /home/user/a 'before the reset'\n",
        &[PASSPHRASE],
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_journal("unlocked dpool/live");
    let reset = format!("{SEED} persistence-reset");
    let second = lab.boot_answering(
        2,
        &reset,
        "expect_missing /home/user/a\nwrite /home/user/b 'after the reset'\n",
        &[PASSPHRASE],
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_journal("reset dpool/live: emptied but for its persistence.conf");
    let before = crate::snapshots::snapshot_named(&second, "the state before is ");
    let back = format!("{SEED} persistence-rollback={before}");
    let third = lab.boot_answering(
        3,
        &back,
        &format!(
            "expect /home/user/a 'before the reset'\nexpect_missing /home/user/b\n{RAW_BACKUP}"
        ),
        &[PASSPHRASE],
    );
    third.assert_agent_ok();
    third.assert_no_failed_units();
    third.assert_journal("rolled dpool/live back to");
    third.assert_journal("(encrypted: promoting it now would lock it)");
}

/// An encrypted volume's backup is sent raw: the copy on the pool has no key, and a stream
/// written to a file holds no plaintext of what the volume holds.
const RAW_BACKUP: &str = "zpool create -f -O mountpoint=none bak /dev/vdb1\n\
    write /home/user/marker PLAINTEXT-zlive-marker; sync\n\
    ok e1 zlive backup pool:bak\nsays e1 'sent raw: the destination holds no key and no plaintext'\n\
    [ \"$(zfs get -Ho value keystatus bak/dpool-live)\" = unavailable ] || fail 'the copy has a key'\n\
    ok e2 zlive backup /run/raw/\n\
    grep -qa PLAINTEXT-zlive-marker /run/raw/*.zstream && fail 'the stream holds plaintext'\n";

/// persistence-migrate with the seed's command line: the ext4 volume on its zvol is copied to
/// a dataset, compared, and the dataset takes the label; that boot and the next use the
/// dataset, with everything the zvol held; the zvol is kept, relabelled.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_zvol_migrates_to_a_dataset() {
    let pool = Pool::with_conf("/home/user union\n").first(|v| {
        v.file("home/user/rw/kept.txt", "from the zvol\n")
            .while_mounted("ln /mnt/vol/home/user/rw/kept.txt /mnt/vol/home/user/rw/linked.txt")
    });
    let lab = Lab::new("migrate", &pool).cmdline(SEED);
    let first = lab.boot_with(
        1,
        &format!("{SEED} persistence-migrate"),
        "expect /home/user/kept.txt 'from the zvol'\n\
         [ \"$(stat -c %h /home/user/linked.txt)\" = 2 ] || fail 'the hard link was not kept'\n\
         write /home/user/new.txt 'on the dataset'\n",
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_journal(
        "persistence-migrate: LABEL=persistence is now dataset dpool/persistence-dataset",
    );
    first.assert_mount_type("/run/live/persistence/persistence", "zfs");
    let second = lab.boot(
        2,
        "expect /home/user/kept.txt 'from the zvol'\nexpect /home/user/new.txt 'on the dataset'\n\
         zfs list -H -o name dpool/persistence >/dev/null || fail 'the zvol is gone'\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_mount_type("/run/live/persistence/persistence", "zfs");
    second.assert_not_in_journal("devices carry the label");
    second.assert_not_in_journal("volumes carry the label");
}
