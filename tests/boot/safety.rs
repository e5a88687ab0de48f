//! Data safety: what zlive must never do to data or to disks that are not its own, each
//! shown on a real boot. Every one of these failed before its fix.

use crate::harness::{assert_unchanged, digest, images, Crypt, Lab, Pool, Volume, SEED};

/// A link entry over a directory that holds another entry's mount, and a private bind entry:
/// the link never deletes or replaces the nested entry's data, and the private data is not
/// readable by others through the volume, which stays mounted under /run/live/persistence.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_link_and_private_data_stay_put() {
    let pool = Pool::standard().first(|v| {
        v.conf("/home/user link,source=dotfiles\n/home/user/.ssh bind,source=user-ssh\n/root/notes bind\n")
            .file("dotfiles/.ssh", "a file where the entry's directory is\n")
            .file("dotfiles/.bashrc", "linked\n")
            .file("user-ssh/id", "secret key\n")
            // As ~/.ssh is: the user's alone.
            .while_mounted("chown -R 1000:1000 /mnt/vol/user-ssh && chmod 700 /mnt/vol/user-ssh")
    });
    let volume = "/run/live/persistence/persistence";
    let first = Lab::new("link-safety", &pool).boot(
        1,
        &format!(
            "expect /home/user/.ssh/id 'secret key'\nexpect /home/user/.bashrc linked\n\
             [ -L /home/user/.bashrc ] || fail '.bashrc is not a symlink'\n\
             write /root/notes/secret private\nchmod 644 /root/notes/secret\n\
             setpriv --reuid=65534 --regid=65534 --clear-groups cat {volume}/root/notes/secret && fail 'nobody read /root/notes through the volume'\n\
             setpriv --reuid=65534 --regid=65534 --clear-groups cat {volume}/user-ssh/id && fail 'nobody read the ssh key through the volume'\n\
             awk '$5 == \"/root/notes\" && $6 ~ /nosuid/ && $6 ~ /nodev/ {{ ok = 1 }} END {{ if (!ok) print \"ZLIVE-FAIL: /root/notes is not nosuid,nodev\" }}' /proc/self/mountinfo\n"
        ),
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_active("zlive-link@sysroot-home-user.service");
    first.assert_journal("left /sysroot/home/user/.ssh alone: another mount is there");
}

/// A `bind` entry's first boot copies the image's directory onto the volume; a power cut
/// right after the initrd (the copy's directory rename committed, its data still in the page
/// cache): the next boot sees the whole copy, not empty files that are never copied again,
/// and binds it (ext4, not an overlay).
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_bootstrap_copy_survives_a_power_cut() {
    let lab = Lab::new("bootstrap-power-cut", &Pool::with_conf("/home/user bind\n"));
    let cut = format!(
        "{} zlive.test.cut-in-initrd=/run/live/persistence/persistence/home",
        lab.cmdline
    );
    let first = lab.boot_with(1, &cut, "");
    first.assert_power_cut();
    // The journal reaches the console (forward_to_console): the copy was made before the cut.
    assert!(
        first.serial.contains("(first boot of this entry)"),
        "the first boot did not copy the image's /home/user; {}",
        first.where_()
    );
    let second = lab.boot(
        2,
        "expect /home/user/.profile 'image profile'\nwrite /home/user/bind.txt 'bound'\n",
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_active("sysroot-home-user.mount");
    second.assert_mount_type("/home/user", "ext4");
    second.assert_not_in_journal("(first boot of this entry)");
}

/// The seed's command line exactly, on a machine with more disks than the stick: a
/// stranger's pool, a dirty ext4 disk with an orphan inode and another live medium sort
/// before the medium. Pools are found by scanning; only the one with the persistence volume
/// is imported read-write, and the stranger's is let go again: its dataset that would mount
/// over /etc is never mounted, its 30 hidden zvols cost no wait, its two encrypted zvols are
/// never asked for (the label was found without them), and nobody has to type anything. The
/// medium is found by scanning and the one with this initrd's live-uuid is taken; no other
/// disk is written to. The host id is this machine's own.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_scans_take_only_their_own() {
    let stranger = Pool::standard()
        .named("bpool")
        .first(|v| {
            v.label("backup").conf("/srv bind\n").after_unmount(
                "zfs create -o mountpoint=/etc/zlive-canary $pool/canary\n\
                 echo owned > /etc/zlive-canary/owned\n\
                 i=0; while [ $i -lt 30 ]; do i=$((i + 1)); zfs create -s -V 1M -o volmode=none $pool/hidden$i; done",
            )
        })
        .volume(Volume::new("locked1", "16M").encrypted(Crypt::Zfs("strangers secret")))
        .volume(Volume::new("locked2", "16M").encrypted(Crypt::Zfs("another secret")))
        .build("scans");
    let dirty = vm_copy("scans", &images().dirty_disk, "dirty.img");
    let other_medium = vm_copy("scans", &images().medium_other, "other-medium.img");
    let before: Vec<String> = [&stranger, &dirty, &other_medium]
        .iter()
        .map(|d| digest(d))
        .collect();
    let lab = Lab::new("scans", &Pool::with_conf("/home/user union\n"))
        .cmdline(SEED)
        .scan_for_the_medium()
        .with_disk(stranger.clone(), false)
        .with_disk(dirty.clone(), false)
        .with_disk(other_medium.clone(), false);
    let b = lab.boot(
        1,
        "write /home/user/found.txt found\nexpect /etc/image-file 'image file'\n\
         expect_no_mount /etc/zlive-canary\nexpect_missing /etc/zlive-canary/owned\n\
         pools=$(zpool list -H -o name | tr '\\n' ' ')\n\
         [ \"$pools\" = 'dpool ' ] || fail \"pools imported in the live system: $pools\"\n",
    );
    b.assert_agent_ok();
    b.assert_no_failed_units();
    b.assert_active("zlive-find-medium.service");
    b.assert_active("sysroot-home-user.mount");
    b.assert_journal("pool dpool holds a persistence volume: imported read-write");
    b.assert_journal("pool bpool holds no persistence volume: let go (exported again)");
    assert!(
        !b.serial.contains("Passphrase for ZFS dataset"),
        "a stranger's encrypted zvols were asked for; {}",
        b.where_()
    );
    b.assert_journal("live media found: /dev/vdd (another live-uuid, or none), /dev/vde (this initrd's live-uuid); using /dev/vde");
    b.assert_journal("live medium found on /dev/vde");
    b.assert_journal(", from this machine's firmware UUID");
    for ((disk, was), what) in [&stranger, &dirty, &other_medium].iter().zip(&before).zip([
        "the stranger's pool",
        "the dirty disk with an orphan inode",
        "the other medium",
    ]) {
        assert_unchanged(disk, was, &format!("a boot that scanned {what}"));
    }
}

/// A copy of an image for one test, which may write to it.
fn vm_copy(test: &str, image: &std::path::Path, name: &str) -> std::path::PathBuf {
    let copy = crate::harness::artifacts(test).join(name);
    std::fs::copy(image, &copy).unwrap();
    copy
}

/// A clone of the volume carries its label, and another pool holds a `zfs send | zfs recv`
/// copy of it: found by a scan, neither pool is imported read-write (neither disk changes),
/// zlive refuses to guess, names the three devices and boots in RAM; naming the volume with
/// persistence-zvol= chooses.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_duplicate_labels_are_refused() {
    let pool = Pool::with_conf("/home/user union\n").first(|v| {
        v.after_unmount(
            "zfs snapshot $pool/persistence@copy && zfs clone $pool/persistence@copy $pool/backup",
        )
    });
    let received = Pool::standard()
        .named("bpool")
        .first(|v| {
            v.conf("/home/user union\n").after_unmount(
                "zfs snapshot $pool/persistence@sent\n\
                 zfs send $pool/persistence@sent | zfs recv $pool/received\n\
                 zfs destroy -r $pool/persistence",
            )
        })
        .build("duplicate-label");
    let lab = Lab::new("duplicate-label", &pool)
        .cmdline(SEED)
        .with_disk(received.clone(), false);
    let before = [digest(&lab.disk), digest(&received)];
    let first = lab.boot(1, "write /home/user/ram.txt ram\n");
    first.assert_agent_ok();
    first.assert_failed("zlive-volume@persistence.service");
    first.assert_journal("3 volumes carry the label 'persistence'");
    first.assert_journal("(dpool/persistence)");
    first.assert_journal("(dpool/backup)");
    first.assert_journal("(bpool/received)");
    first.assert_journal("pool bpool holds a persistence volume whose label (persistence) other zvols carry too: kept read-only");
    first.assert_root_in_ram();
    assert_eq!(first.status_in_initrd().0, 1);
    assert_unchanged(
        &lab.disk,
        &before[0],
        "a boot that found the label three times",
    );
    assert_unchanged(
        &received,
        &before[1],
        "a boot that found the label three times",
    );
    let named = format!("{SEED} persistence-zvol=dpool/persistence");
    let second = lab.boot_with(2, &named, "write /home/user/kept.txt kept\n");
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_active("sysroot-home-user.mount");
}
