//! A new live image under old persistence: the lab's medium (release 1) and a new image of the
//! same system (release 2: a file under /usr and one under /etc changed, one added under
//! /usr, and one package's version raised), both with this initrd's live-uuid.

use crate::harness::{images, Lab, MediumPort, Pool};
use crate::snapshots::snapshot_named;

const CONF: &str = "/home union\n/etc union\n/usr union\n";

/// Files boot 1 writes under each entry, and the image's release file it edits.
/// And a kernel's module tree, as installing a newer kernel package in the live system leaves it.
const WRITE: &str = "write /home/user/h home\nwrite /etc/e etc\nwrite /usr/local/u usr\n\
    write /etc/zlive-release 'edited on release 1'\nwrite /usr/lib/modules/99.1.0-zlive-test/modules.dep ''\n";
const ALL_KEPT: &str = "expect /home/user/h home\nexpect /etc/e etc\nexpect /usr/local/u usr\n\
    expect /etc/zlive-release 'edited on release 1'\n";

/// The version of the package release 2 raised, as the running image's package database says
/// (/var is not an entry: the image's own).
fn package_version(version: &str) -> String {
    format!(
        "v=$(dpkg-query -W -f '${{Version}}' zlive-test-base); [ \"$v\" = {version} ] || fail \"zlive-test-base is $v, not {version}\"\n"
    )
}

/// Boot 1 (release 1) writes under /home, /etc and /usr and records its image; boot 2 boots
/// release 2 (`keep`, the default): a snapshot from before it, the change said on the console,
/// in the journal, `zlive status` and `zlive snapshots`, and everything kept (the edited
/// release file hides the new image's; `zlive status` names the kernel boot 1 installed). Boot 3 goes back to release 1 with
/// `persistence-image-change=reset-system`: /home kept, /etc and /usr start empty. Boot 4
/// (release 1) rolls back to the snapshot from before release 2: the old state again.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_new_image_snapshot_keep_reset_and_back() {
    let lab = Lab::new("image-change", &Pool::with_conf(CONF));
    let first = lab.boot(
        1,
        &format!(
            "{WRITE}zfs get -H -o value org.zlive:image dpool/persistence | grep -q '^squashfs .* kernel .* info zlive test live system, release 1$' || fail 'the image is not recorded'\n"
        ),
    );
    first.assert_agent_ok();
    first.assert_no_failed_units();
    first.assert_not_in_journal("the live image changed");

    let new = lab
        .clone()
        .medium(MediumPort::Virtio(images().medium_new.clone()));
    let second = new.boot(
        2,
        &format!(
            "{ALL_KEPT}{}expect /usr/share/zlive-test/added 'new in release 2'\n\
             zlive snapshots > /tmp/snaps 2>&1; cat /tmp/snaps\n\
             grep -q '(before image zlive test live system, release 2 (image made .*(was zlive test live system, release 1 ' /tmp/snaps || fail 'zlive snapshots does not show the change'\n\
             grep -q 'never pruned' /tmp/snaps || fail 'the snapshot before the change may be pruned'\n",
            package_version("2.0-1")
        ),
    );
    second.assert_agent_ok();
    second.assert_no_failed_units();
    second.assert_journal("the live image changed: zlive test live system, release 1 (image made");
    second.assert_journal("-> zlive test live system, release 2 (image made");
    second.assert_journal("persistence-image-change=keep");
    for dir in ["/etc", "/usr"] {
        second.assert_journal(&format!(
            "{dir}: kept over the new live image (persistence-image-change=keep)"
        ));
    }
    second.assert_not_in_journal("/home: kept over the new live image");
    assert!(
        second.serial.contains("zlive: the live image changed:"),
        "the change is not on the console; {}",
        second.where_()
    );
    let (code, status) = second.status_in_live_root();
    assert_eq!(code, 0, "{status}");
    assert!(
        status.contains("the live image changed under LABEL=persistence")
            || status.contains("the live image changed under dpool/persistence"),
        "zlive status does not say the image changed:\n{status}"
    );
    assert!(
        status.contains("kept over the image's own directories, where their files hide the new image's: /etc, /usr\n"),
        "zlive status does not name the entries over the image:\n{status}"
    );
    assert!(
        status.contains("persistence holds kernel 99.1.0-zlive-test, newer than the running one"),
        "zlive status does not name the kernel installed in persistence:\n{status}"
    );
    let before_release_2 = snapshot_named(&second, "is kept in ");

    let reset = format!("{} persistence-image-change=reset-system", lab.cmdline);
    let third = lab.boot_with(
        3,
        &reset,
        &format!(
            "expect /home/user/h home\nexpect_missing /etc/e\nexpect_missing /usr/local/u\n\
             expect /etc/zlive-release 'release 1'\nexpect_missing /usr/share/zlive-test/added\n{}",
            package_version("1.0-1")
        ),
    );
    third.assert_agent_ok();
    third.assert_no_failed_units();
    third.assert_journal("persistence-image-change=reset-system");
    third.assert_journal("for the new live image (persistence-image-change=reset-system)");
    third.assert_not_in_journal("could not reset");
    let (_, status) = third.status_in_live_root();
    assert!(
        status.contains("reset for it (they lie over the image's own directories): /etc, /usr\n"),
        "zlive status does not name the entries reset:\n{status}"
    );

    let back = format!("{} persistence-rollback={before_release_2}", lab.cmdline);
    let fourth = lab.boot_with(4, &back, &format!("{ALL_KEPT}{}", package_version("1.0-1")));
    fourth.assert_agent_ok();
    fourth.assert_no_failed_units();
    fourth.assert_not_in_journal("the live image changed");
}
