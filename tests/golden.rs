//! Golden tests: every case in `tests/cases/NN-name/` runs the real `zlive-generator` with
//! three distinct output directories and compares them with `expected/{normal,early,late}`.
//! Then `systemd-analyze verify` checks every expected tree as systemd would load it in the
//! initrd, and fails on any output.
//!
//! A case holds `cmdline` (the kernel command line), optionally `env` (KEY=VALUE lines for
//! the generator) and `root/` (the fake root given as ZLIVE_ROOT: `proc/self/mountinfo`, the
//! persistence volumes under `run/live/persistence/`, the image under `run/live/rootfs/`).
//! `ZLIVE_BLESS=1 cargo test --test golden` rewrites the expected trees.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cmdline").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected the golden cases in tests/cases"
    );
    cases
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run the generator for a case into `out/{normal,early,late}`.
fn generate(case: &Path, out: &Path) -> (bool, String) {
    for d in ["normal", "early", "late"] {
        fs::create_dir_all(out.join(d)).unwrap();
    }
    let cmdline = fs::read_to_string(case.join("cmdline")).unwrap();
    let root = case.join("root");
    let empty_root = out.join("empty-root");
    fs::create_dir_all(&empty_root).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zlive-generator"));
    cmd.arg(out.join("normal"))
        .arg(out.join("early"))
        .arg(out.join("late"))
        .env_clear()
        .env("SYSTEMD_IN_INITRD", "1")
        .env("SYSTEMD_PROC_CMDLINE", cmdline.trim_end_matches('\n'))
        .env(
            "ZLIVE_ROOT",
            if root.exists() { &root } else { &empty_root },
        );
    if let Ok(env) = fs::read_to_string(case.join("env")) {
        for line in env.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').unwrap();
            cmd.env(k, v);
        }
    }
    let output = cmd.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File(String),
    Link(String),
}

/// Every file and symlink below `dir` (relative paths), ignoring `.empty` markers.
fn tree(dir: &Path) -> BTreeMap<String, Node> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    Node::Link(fs::read_link(&p).unwrap().to_string_lossy().into_owned()),
                );
            } else if meta.is_dir() {
                walk(base, &p, out);
            } else if p.file_name().unwrap() != ".empty" {
                out.insert(rel, Node::File(fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn copy_tree(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    let nodes = tree(from);
    if nodes.is_empty() {
        fs::write(to.join(".empty"), "").unwrap();
    }
    for (rel, node) in nodes {
        let p = to.join(&rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match node {
            Node::File(text) => fs::write(&p, text).unwrap(),
            Node::Link(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
        }
    }
}

#[test]
fn generator_output_matches_the_golden_trees() {
    let bless = std::env::var_os("ZLIVE_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = scratch(&format!("golden-{name}"));
        let (ok, stderr) = generate(&case, &out);
        if !ok {
            failures.push(format!("{name}: the generator failed:\n{stderr}"));
            continue;
        }
        if !bless {
            match fs::read_to_string(case.join("expected/log")) {
                Ok(expected_log) if expected_log == stderr => {}
                Ok(expected_log) => failures.push(format!(
                    "{name}: log differs:\n{}",
                    unified_diff(&expected_log, &stderr)
                )),
                Err(e) => failures.push(format!(
                    "{name}: no expected/log ({e}); ZLIVE_BLESS=1 writes it"
                )),
            }
        }
        if bless {
            fs::create_dir_all(case.join("expected")).unwrap();
            fs::write(case.join("expected/log"), &stderr).unwrap();
        }
        for d in ["normal", "early", "late"] {
            let expected = case.join("expected").join(d);
            if bless {
                copy_tree(&out.join(d), &expected);
                continue;
            }
            let (want, got) = (tree(&expected), tree(&out.join(d)));
            if want != got {
                let mut diff = String::new();
                for k in want
                    .keys()
                    .chain(got.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    let text = |n: Option<&Node>| match n {
                        None => String::new(),
                        Some(Node::File(t)) => t.clone(),
                        Some(Node::Link(t)) => format!("-> {t}\n"),
                    };
                    match (want.get(k), got.get(k)) {
                        (Some(a), Some(b)) if a == b => {}
                        (a, b) => diff.push_str(&format!(
                            "--- expected/{d}/{k}\n+++ actual/{d}/{k}\n{}",
                            unified_diff(&text(a), &text(b))
                        )),
                    }
                }
                failures.push(format!("{name}: {d} differs:\n{diff}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `diff -u` of two texts (the lines after its two file headers).
fn unified_diff(expected: &str, actual: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch(&format!("diff-{}", N.fetch_add(1, Ordering::SeqCst)));
    let (a, b) = (dir.join("expected"), dir.join("actual"));
    fs::write(&a, expected).unwrap();
    fs::write(&b, actual).unwrap();
    let out = Command::new("diff")
        .arg("-u")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The static units with their binary path pointing at the built `zlive`, as `make install`
/// would write them.
fn static_units(dir: &Path) {
    let bin = Path::new(env!("CARGO_BIN_EXE_zlive")).parent().unwrap();
    let units = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("units");
    for e in fs::read_dir(units).unwrap() {
        let p = e.unwrap().path();
        let text = fs::read_to_string(&p)
            .unwrap()
            .replace("@BINDIR@", &bin.to_string_lossy());
        fs::write(dir.join(p.file_name().unwrap()), text).unwrap();
    }
}

/// Units that systemd would load for a tree: unit files, and instances configured by drop-ins.
/// Masked units (links to /dev/null) are never loaded.
fn units_to_verify(trees: &[PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    for t in trees {
        for (rel, node) in tree(t) {
            if node == Node::Link("/dev/null".to_owned()) {
                continue;
            }
            let first = rel.split('/').next().unwrap().to_owned();
            let unit = first.strip_suffix(".d").unwrap_or(&first).to_owned();
            let is_unit = [".mount", ".service", ".target"]
                .iter()
                .any(|s| unit.ends_with(s));
            if is_unit
                && !unit.contains(".wants")
                && !unit.contains(".requires")
                && !names.contains(&unit)
            {
                names.push(unit);
            }
        }
    }
    names
}

#[test]
fn systemd_analyze_verify_accepts_every_expected_tree() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is required (package systemd)");
    }
    let statics = scratch("verify-static");
    static_units(&statics);
    let mut failures = Vec::new();
    let mut verified = 0;
    for case in cases() {
        let expected = case.join("expected");
        let trees = [
            expected.join("early"),
            expected.join("normal"),
            expected.join("late"),
        ];
        let units = units_to_verify(&trees);
        if units.is_empty() {
            continue;
        }
        let path = format!(
            "{}:{}:{}:{}:",
            trees[0].display(),
            trees[1].display(),
            statics.display(),
            trees[2].display()
        );
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .args(&units)
            .env("SYSTEMD_IN_INITRD", "1")
            .env("SYSTEMD_UNIT_PATH", &path)
            .env("SYSTEMD_LOG_LEVEL", "notice")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let said: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if !out.status.success() || !said.is_empty() {
            failures.push(format!(
                "{}: systemd-analyze verify said:\n{}",
                case.display(),
                said.join("\n")
            ));
        }
        verified += 1;
    }
    assert!(verified >= 10, "only {verified} cases had units to verify");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The verification above must be able to fail: a unit with an unknown key is reported.
#[test]
fn systemd_analyze_verify_reports_a_broken_unit() {
    let statics = scratch("verify-static-broken");
    static_units(&statics);
    let tree = scratch("verify-broken");
    copy_tree(&cases_dir().join("09-modes/expected/normal"), &tree);
    let unit = tree.join("sysroot-opt.mount");
    let text = fs::read_to_string(&unit)
        .unwrap()
        .replace("Options=bind", "Options=bind\nBogusKey=1");
    fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "sysroot-opt.mount"])
        .env("SYSTEMD_IN_INITRD", "1")
        .env(
            "SYSTEMD_UNIT_PATH",
            format!("{}:{}:", tree.display(), statics.display()),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("BogusKey"),
        "systemd-analyze did not report the bad key: {text}"
    );
}

/// Every generated unit reads well in `systemctl status`: a Description a person understands,
/// Documentation pointing at the man pages, and SourcePath naming where it came from.
/// (rust-ini with escapes and quotes off, so unit names with `\x2d` stay as written.)
#[test]
fn every_generated_unit_has_description_documentation_and_source_path() {
    let options = || ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..Default::default()
    };
    let mut checked = 0;
    for case in cases() {
        for d in ["normal", "early", "late"] {
            for (rel, node) in tree(&case.join("expected").join(d)) {
                let Node::File(text) = node else { continue };
                let is_unit =
                    (rel.ends_with(".mount") || rel.ends_with(".service")) && !rel.contains('/');
                if !is_unit {
                    continue;
                }
                let unit = ini::Ini::load_from_str_opt(&text, options()).unwrap();
                let section = unit
                    .section(Some("Unit"))
                    .unwrap_or_else(|| panic!("{rel}: no [Unit]"));
                let description = section.get("Description").unwrap_or_default();
                assert!(
                    description.len() > 10 && description.contains(' '),
                    "{}/{rel}: Description={description:?}",
                    case.display()
                );
                assert!(
                    section
                        .get("Documentation")
                        .is_some_and(|d| d.starts_with("man:zlive")),
                    "{}/{rel}: no Documentation",
                    case.display()
                );
                let source = section.get("SourcePath").unwrap_or_default();
                assert!(
                    source == "/proc/cmdline" || source.ends_with("/persistence.conf"),
                    "{}/{rel}: SourcePath={source:?}",
                    case.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} units checked");
}

/// Pass 2 keeps every file of pass 1 under the same name (jobs queued in pass 1 stay attached
/// to the same units), for every case with a mounted volume.
#[test]
fn pass_two_output_is_a_superset_of_pass_one() {
    let mut compared = 0;
    for case in cases() {
        if !case.join("root/proc/self/mountinfo").exists() {
            continue;
        }
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        // The same command line with nothing mounted: pass 1. What the volume wait found
        // before a volume was mounted (a label's dataset), the first pass knew already.
        let pass1 = scratch(&format!("pass1-{name}"));
        let fake = scratch(&format!("pass1-case-{name}"));
        fs::copy(case.join("cmdline"), fake.join("cmdline")).unwrap();
        let found = case.join("root/run/zlive/datasets-found");
        if found.exists() {
            fs::create_dir_all(fake.join("root/run/zlive")).unwrap();
            fs::copy(&found, fake.join("root/run/zlive/datasets-found")).unwrap();
        }
        let (ok, stderr) = generate(&fake, &pass1);
        assert!(ok, "{name}: {stderr}");
        assert!(
            stderr.contains("pass 1"),
            "{name}: not a pass-1 run: {stderr}"
        );
        for d in ["normal", "early", "late"] {
            let one = tree(&pass1.join(d));
            let two = tree(&case.join("expected").join(d));
            for file in one.keys() {
                assert!(
                    two.contains_key(file),
                    "{name}: {d}/{file} of pass 1 is missing in pass 2"
                );
            }
        }
        compared += 1;
    }
    assert!(compared >= 8, "only {compared} pass-2 cases");
}
