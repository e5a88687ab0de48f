//! The serial protocol: the live root's agent prints what the initrd captured and what it
//! saw itself as sections, `=== ZLIVE-BEGIN NAME` … `=== ZLIVE-END NAME`, and markers
//! (`ZLIVE-AGENT-DONE`, `ZLIVE-FAIL: …`, …) on lines of their own. A [`Boot`] is one boot's
//! serial output split into those sections. A section a check needs and the boot did not
//! print fails the check, naming the section: a missing section never passes for an empty one.

use std::collections::HashMap;
use std::time::Duration;

/// What one boot printed.
#[derive(Debug)]
pub struct Boot {
    /// `TEST/bootN`, also the directory under `target/vm-artifacts/`.
    pub name: String,
    pub serial: String,
    pub sections: HashMap<String, String>,
    pub wall: Duration,
}

impl Boot {
    pub fn from_serial(name: String, serial: String, wall: Duration) -> Boot {
        let sections = split_sections(&serial);
        Boot {
            name,
            serial,
            sections,
            wall,
        }
    }

    /// Where to look when a check fails, with zlive's own journal lines from the initrd (the
    /// last 40): CI keeps only the test's output, not the artifacts.
    pub fn where_(&self) -> String {
        let zlive: Vec<&str> = self
            .sections
            .get("journal")
            .map(|j| j.lines().filter(|l| l.contains(" zlive[")).collect())
            .unwrap_or_default();
        let tail = &zlive[zlive.len().saturating_sub(40)..];
        let said = match tail.is_empty() {
            true => String::new(),
            false => format!("\nzlive said in the initrd:\n{}", tail.join("\n")),
        };
        format!("see target/vm-artifacts/{}/{said}", self.name)
    }

    /// A section's text; a boot that did not print it fails the test.
    pub fn section(&self, name: &str) -> &str {
        match self.sections.get(name) {
            Some(text) => text,
            None => panic!(
                "{}: the serial log has no section '{name}' (the agent did not run to it, or the capture failed); {}",
                self.name,
                self.where_()
            ),
        }
    }

    /// `(active, sub)` of a unit in `systemctl list-units --all` taken in the initrd.
    pub fn unit_state(&self, unit: &str) -> Option<(String, String)> {
        self.section("units").lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&unit) && f.len() >= 4).then(|| (f[2].to_owned(), f[3].to_owned()))
        })
    }

    /// The exit status `zlive status` had in the initrd, and its output.
    pub fn status_in_initrd(&self) -> (i32, &str) {
        self.status_from("status")
    }

    /// The exit status `zlive status` had in the live root (after switch-root), and its output.
    pub fn status_in_live_root(&self) -> (i32, &str) {
        self.status_from("live-status")
    }

    fn status_from(&self, section: &str) -> (i32, &str) {
        let text = self.section(section);
        let code = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("exit="))
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no exit= line in section '{section}'", self.name));
        (code, text)
    }

    /// `zlive status --json` as taken in the initrd.
    pub fn status_json(&self) -> serde_json::Value {
        let text = self.section("status-json");
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{}: zlive status --json printed no JSON ({e}): {text}",
                self.name
            )
        })
    }

    /// What `journalctl -u UNIT` showed in the initrd.
    pub fn unit_journal(&self, unit: &str) -> String {
        let text = self.section("unit-journals");
        let header = format!("## {unit}");
        assert!(
            text.lines().any(|l| l == header),
            "{}: no journal of {unit} was captured; {}",
            self.name,
            self.where_()
        );
        let mut out = String::new();
        for l in text.lines().skip_while(|l| *l != header).skip(1) {
            if l.starts_with("## ") {
                break;
            }
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// The live root's mount at `dir`: (fstype, super options).
    pub fn mount_of(&self, dir: &str) -> Option<(String, String)> {
        self.section("mountinfo").lines().rev().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            (f.get(4) == Some(&dir)).then(|| {
                (
                    f[dash + 1].to_owned(),
                    f.get(dash + 3).unwrap_or(&"").to_string(),
                )
            })
        })
    }
}

fn split_sections(serial: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in serial.lines() {
        if let Some(name) = line.strip_prefix("=== ZLIVE-BEGIN ") {
            current = Some((name.trim().to_owned(), String::new()));
        } else if line.starts_with("=== ZLIVE-END ") {
            if let Some((name, text)) = current.take() {
                out.insert(name, text);
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}
