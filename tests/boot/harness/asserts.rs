//! The checks a boot test makes, each failing with the boot's name and where its logs are.

use super::serial::Boot;
use super::timing::printk_seconds;

impl Boot {
    /// The agent ran to its end and no check failed.
    pub fn assert_agent_ok(&self) {
        self.assert_reached(
            "ZLIVE-AGENT-DONE",
            "the live root's agent did not finish (no switch-root, or a hang)",
        );
    }

    /// The agent ran the scenario up to its power cut, with no check failed.
    pub fn assert_power_cut(&self) {
        self.assert_reached(
            "ZLIVE-CUT-POWER",
            "the scenario did not reach its power cut",
        );
    }

    /// The scenario asked for a normal poweroff, and the guest powered itself off (QEMU was
    /// not killed). Prints how long the shutdown took, from the guest's clock.
    pub fn assert_clean_poweroff(&self) {
        self.assert_clean_stop("ZLIVE-CLEAN-POWEROFF", "reboot: Power down", "poweroff");
    }

    /// The same for `systemctl reboot` (QEMU runs with -no-reboot: a reboot ends it).
    pub fn assert_clean_reboot(&self) {
        self.assert_clean_stop("ZLIVE-CLEAN-REBOOT", "reboot: Restarting system", "reboot");
    }

    fn assert_clean_stop(&self, marker: &str, kernel_line: &str, verb: &str) {
        self.assert_reached(marker, &format!("the scenario did not reach its {verb}"));
        let done = self.serial.lines().find(|l| l.contains(kernel_line));
        assert!(
            done.is_some() && !self.serial.contains("ZLIVE-HARNESS: killed"),
            "{}: systemctl {verb} did not end the guest by itself; {}",
            self.name,
            self.where_()
        );
        let asked = self
            .serial
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{marker} uptime=")))
            .and_then(|t| t.trim().parse::<f64>().ok());
        if let (Some(asked), Some(done)) = (asked, done.and_then(printk_seconds)) {
            println!(
                "TIMING {}: systemctl {verb} to the kernel's last line {:.2}s",
                self.name,
                done - asked
            );
        }
    }

    fn assert_reached(&self, marker: &str, otherwise: &str) {
        assert!(
            self.serial.contains(marker),
            "{}: {otherwise}; {}",
            self.name,
            self.where_()
        );
        let failures: Vec<&str> = self
            .serial
            .lines()
            .filter(|l| l.starts_with("ZLIVE-FAIL"))
            .collect();
        assert!(
            failures.is_empty(),
            "{}: checks failed in the live root:\n{}\n{}",
            self.name,
            failures.join("\n"),
            self.where_()
        );
    }

    fn assert_state(&self, unit: &str, expected: &str) {
        match self.unit_state(unit) {
            Some((active, _)) if active == expected => {}
            other => panic!(
                "{}: {unit} is {other:?} in the initrd, expected {expected}; {}",
                self.name,
                self.where_()
            ),
        }
    }

    pub fn assert_active(&self, unit: &str) {
        self.assert_state(unit, "active");
    }

    pub fn assert_failed(&self, unit: &str) {
        self.assert_state(unit, "failed");
    }

    pub fn assert_inactive(&self, unit: &str) {
        self.assert_state(unit, "inactive");
    }

    /// The unit was masked in the initrd (`systemctl list-units --all` shows it so when
    /// something wants it).
    pub fn assert_unit_masked(&self, unit: &str) {
        let load = self.section("units").lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&unit)).then(|| f.get(1).copied().unwrap_or_default())
        });
        assert_eq!(
            load,
            Some("masked"),
            "{}: {unit} is not masked in the initrd; {}",
            self.name,
            self.where_()
        );
    }

    /// No unit whose name starts with `unit_prefix` was loaded in the initrd.
    pub fn assert_absent(&self, unit_prefix: &str) {
        let found: Vec<&str> = self
            .section("units")
            .lines()
            .filter(|l| l.starts_with(unit_prefix))
            .collect();
        assert!(
            found.is_empty(),
            "{}: expected no {unit_prefix}* units, found:\n{}",
            self.name,
            found.join("\n")
        );
    }

    pub fn assert_no_failed_units(&self) {
        let failed = self.section("failed").trim();
        assert!(
            failed.is_empty(),
            "{}: failed units in the initrd:\n{failed}\n{}",
            self.name,
            self.where_()
        );
    }

    pub fn assert_journal(&self, needle: &str) {
        self.assert_journal_any(&[needle]);
    }

    pub fn assert_journal_any(&self, needles: &[&str]) {
        let journal = self.section("journal");
        assert!(
            needles.iter().any(|n| journal.contains(n)),
            "{}: the initrd's journal contains none of {needles:?}; {}",
            self.name,
            self.where_()
        );
    }

    /// The zfs module was refused and zlive said `why` in the journal and, as `zlive: why`,
    /// on the console; no `zpool` ran without it, and nothing advised making a new volume.
    pub fn assert_zfs_refused(&self, why: &str) {
        self.assert_journal(why);
        assert!(
            self.serial.contains(&format!("zlive: {why}")),
            "{}: the refusal is not on the console; {}",
            self.name,
            self.where_()
        );
        self.assert_not_in_journal("Failed to initialize the libzfs library");
        self.assert_not_in_journal("create one with");
    }

    pub fn assert_not_in_journal(&self, needle: &str) {
        assert!(
            !self.section("journal").contains(needle),
            "{}: the initrd's journal contains {needle:?}; {}",
            self.name,
            self.where_()
        );
    }

    /// `times` lines of the initrd's journal contain `needle`.
    pub fn assert_journal_count(&self, needle: &str, times: usize) {
        let found: Vec<&str> = self
            .section("journal")
            .lines()
            .filter(|l| l.contains(needle))
            .collect();
        assert!(
            found.len() == times,
            "{}: {} lines of the initrd's journal contain {needle:?}, expected {times}:\n{}\n{}",
            self.name,
            found.len(),
            found.join("\n"),
            self.where_()
        );
    }

    /// `systemctl is-system-running --wait` in the live root said `running`: no failed unit.
    pub fn assert_live_system_running(&self) {
        let state = self.section("live-state").trim();
        assert!(
            state == "running",
            "{}: the live system is '{state}', not running; failed units:\n{}\n{}",
            self.name,
            self.section("live-failed"),
            self.where_()
        );
    }

    /// No unit the initrd left failed shows up in the live root as "not-found".
    pub fn assert_no_not_found_units(&self) {
        let failed = self.section("live-failed");
        assert!(
            !failed.contains("not-found"),
            "{}: the live root has failed units it does not know:\n{failed}\n{}",
            self.name,
            self.where_()
        );
    }

    /// The live root's overlay keeps its changes in RAM (no persistence for `/`).
    pub fn assert_root_in_ram(&self) {
        let (_, options) = self
            .mount_of("/")
            .unwrap_or_else(|| panic!("{}: no mount on / in the live root", self.name));
        assert!(
            options.contains("upperdir=/run/live/overlay/rw"),
            "{}: / is not in RAM: {options}",
            self.name
        );
    }

    /// A mount of this type sits on `dir` in the live root.
    pub fn assert_mount_type(&self, dir: &str, fstype: &str) {
        assert_eq!(
            self.mount_of(dir).map(|m| m.0).as_deref(),
            Some(fstype),
            "{}: {dir} in the live root; {}",
            self.name,
            self.where_()
        );
    }
}

/// The harness must fail when what it checks was never printed.
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RECORDED: &str = include_str!("recorded-serial.log");

    fn boot(serial: &str) -> Boot {
        Boot::from_serial("harness/boot1".into(), serial.to_owned(), Duration::ZERO)
    }

    /// The recorded log without one section (its BEGIN and END lines and everything between).
    fn without(section: &str) -> String {
        let begin = format!("=== ZLIVE-BEGIN {section}");
        let end = format!("=== ZLIVE-END {section}");
        assert!(RECORDED.contains(&begin), "the recording has no {section}");
        let mut out = String::new();
        let mut skipping = false;
        for line in RECORDED.lines() {
            if line == begin {
                skipping = true;
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            if line == end {
                skipping = false;
            }
        }
        out
    }

    #[test]
    fn the_recorded_boot_passes() {
        let b = boot(RECORDED);
        b.assert_agent_ok();
        b.assert_no_failed_units();
        b.assert_absent("zlive-find-medium");
        b.assert_active("sysroot-home-user.mount");
        b.assert_journal("generator: pass 2: persistence entries accepted: 1");
        b.assert_mount_type("/home/user", "overlay");
        b.assert_live_system_running();
        b.assert_no_not_found_units();
        assert_eq!(b.status_in_initrd().0, 0);
        assert!(b
            .unit_journal("sysroot-home-user.mount")
            .contains("(union)"));
    }

    #[test]
    #[should_panic(expected = "has no section 'units'")]
    fn a_missing_units_section_fails_assert_absent() {
        boot(&without("units")).assert_absent("zlive-find-medium");
    }

    #[test]
    #[should_panic(expected = "has no section 'failed'")]
    fn a_missing_failed_section_fails_assert_no_failed_units() {
        boot(&without("failed")).assert_no_failed_units();
    }

    #[test]
    #[should_panic(expected = "has no section 'journal'")]
    fn a_missing_journal_fails_assert_not_in_journal() {
        boot(&without("journal")).assert_not_in_journal("recovering journal");
    }

    #[test]
    #[should_panic(expected = "has no section 'mountinfo'")]
    fn a_missing_mountinfo_fails_the_mount_checks() {
        boot(&without("mountinfo")).assert_root_in_ram();
    }

    #[test]
    #[should_panic(expected = "has no section 'live-state'")]
    fn a_missing_live_state_fails_assert_live_system_running() {
        boot(&without("live-state")).assert_live_system_running();
    }

    #[test]
    #[should_panic(expected = "expected no zlive-import* units")]
    fn assert_absent_sees_what_is_there() {
        boot(RECORDED).assert_absent("zlive-import");
    }
}
