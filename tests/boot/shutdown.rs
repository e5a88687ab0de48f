//! Shutting down: every layout leaves the volume clean and the pool exported, through the
//! exitrd zlive prepares in /run/initramfs. The lab's live root is made like a real one for
//! this: the seed's seven union entries (/usr and /var among them), journald keeping its
//! journal on the volume, and a service that writes when it stops, late in shutdown.

use crate::harness::pool::assert_exported;
use crate::harness::{Boot, Lab, Pool};

/// The seed's persistence.conf.
pub(crate) const SEED_LAYOUT: &str =
    "/etc union\n/usr union\n/var union\n/home union\n/root union\n/srv union\n/opt union\n";

/// Files written in every entry of the seed layout, and checked the next boot.
const WRITE_ALL: &str =
    "for d in etc usr var home root srv opt; do write /$d/zlive-kept \"$d\"; done\n";
const CHECK_ALL: &str = "for d in etc usr var home root srv opt; do expect /$d/zlive-kept \"$d\"; done\n\
     [ -f /var/lib/zlive-late-write ] || fail 'the service that writes at shutdown lost its write'\n\
     [ \"$(journalctl --list-boots --no-pager | wc -l)\" -ge 2 ] || fail 'the journal of the last boot is gone'\n";

/// The next boot found the volume clean: its fsck replayed nothing. (How the boot ended is
/// checked by the caller: the agent's end, or a clean poweroff.)
fn assert_found_clean(b: &Boot) {
    b.assert_no_failed_units();
    b.assert_journal("persistence: clean,");
    b.assert_not_in_journal("persistence: recovering journal");
    b.assert_not_in_journal("was not cleanly unmounted");
}

/// The seed layout through a reboot and a poweroff: each leaves the volume clean, keeps the
/// late write and the journal, and the poweroff exports the pool, which a machine with
/// another host id then imports without -f.
#[test]
#[ignore = "boots QEMU; run by make check"]
fn boot_seed_layout_shuts_down_clean() {
    let lab = Lab::new("seed-shutdown", &Pool::with_conf(SEED_LAYOUT));
    let first = lab.boot(1, &format!("{WRITE_ALL}clean_reboot\n"));
    first.assert_clean_reboot();
    let second = lab.boot(
        2,
        &format!("{CHECK_ALL}write /srv/second 2\nclean_poweroff\n"),
    );
    assert_found_clean(&second);
    second.assert_clean_poweroff();
    assert!(
        second.section("list-boots").lines().count() >= 2,
        "{}: journalctl --list-boots:\n{}",
        second.name,
        second.section("list-boots")
    );
    assert_exported(lab.test, &lab.disk);
    let third = lab.boot(3, &format!("{CHECK_ALL}expect /srv/second 2\n"));
    third.assert_agent_ok();
    assert_found_clean(&third);
    third.assert_journal("imported pool dpool");
}
