//! Unit names from paths, compared with the real `systemd-escape --path` over thousands of
//! generated and adversarial paths.

use std::process::Command;
use zlive::escape::{path_escape, EscapeError};

/// A small deterministic generator (xorshift64*), so failures are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "a", "Z", "0", "9", "-", "_", ".", ":", "\\", "%", " ", "\t", "\n", "~", ",", "@", "+", "=",
    "\"", "'", "x2d", "\\x2d", "é", "ü", "€", "😀", "/", "//", "/./", ".hidden", "-lead", "\u{7f}",
    "\u{1}", "sysroot", "home", "$", "*", "?", "[", "]", "#", "!",
];

fn generated(count: usize) -> Vec<String> {
    let mut rng = Rng(0x5eed_2026_1126);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let mut p = String::from("/");
        for _ in 0..rng.below(12) + 1 {
            p.push_str(PIECES[rng.below(PIECES.len())]);
        }
        // `..` components are refused by both sides; they are checked separately.
        if p.split('/').any(|c| c == "..") || p.split('/').any(|c| c.len() > 255) {
            continue;
        }
        out.push(p);
    }
    out
}

fn adversarial() -> Vec<String> {
    let mut v: Vec<String> = [
        "/",
        "//",
        "///",
        "/.",
        "/./",
        "/./.",
        "/a/.",
        "/.a",
        "/..a",
        "/a..",
        "/-",
        "/--",
        "/a-b",
        "/a\\b",
        "/a\\x2db",
        "/sysroot/home/user name",
        "/sysroot/.config",
        "/sysroot/ü",
        "/foo//bar/",
        "/.foo/.bar",
        "/a/./b/./",
        "/run/live/rootfs/filesystem.squashfs",
        "/dev/disk/by-label/persistence",
        "/dev/zvol/rpool/live-persist-part1",
        "/x%y%%z",
        "/\u{1}\u{1f}",
        "/tab\there",
        "/new\nline",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("/{}", "a".repeat(255)));
    v.push(format!("/{}/{}", "b".repeat(200), "c".repeat(200)));
    v
}

fn systemd_escape(paths: &[String]) -> Vec<String> {
    let mut all = Vec::new();
    for chunk in paths.chunks(500) {
        let out = Command::new("systemd-escape")
            .arg("--path")
            .arg("--")
            .args(chunk)
            .output()
            .expect("systemd-escape is required (package systemd)");
        assert!(
            out.status.success(),
            "systemd-escape failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let names: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        assert_eq!(
            names.len(),
            chunk.len(),
            "systemd-escape printed {} names for {} paths",
            names.len(),
            chunk.len()
        );
        all.extend(names);
    }
    all
}

#[test]
fn path_escape_matches_systemd_escape() {
    let mut paths = adversarial();
    paths.extend(generated(5000));
    let expected = systemd_escape(&paths);
    let mut mismatches = Vec::new();
    for (path, want) in paths.iter().zip(&expected) {
        let got = path_escape(path).unwrap();
        if &got != want {
            mismatches.push(format!("{path:?}: zlive {got:?}, systemd-escape {want:?}"));
        }
    }
    assert!(paths.len() > 5000);
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        paths.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}

#[test]
fn dotdot_is_refused_like_systemd_escape() {
    for path in ["/a/../b", "/..", "/x/.."] {
        assert_eq!(path_escape(path), Err(EscapeError::NotNormalized), "{path}");
        let status = Command::new("systemd-escape")
            .args(["--path", "--", path])
            .output()
            .unwrap()
            .status;
        assert!(!status.success(), "systemd-escape accepted {path}");
    }
}
