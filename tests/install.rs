//! `make install DESTDIR=…` puts every file where Debian's dracut and systemd look.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn make_install_honours_destdir_and_prefix() {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install-root");
    let _ = std::fs::remove_dir_all(&dest);
    let status = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-s", "install"])
        .arg(format!("DESTDIR={}", dest.display()))
        .status()
        .expect("make");
    assert!(status.success(), "make install failed");
    // Every unit of units/ (the list zlive's own names are checked against in units.rs).
    for unit in zlive::units::STATIC {
        let file = format!("usr/lib/systemd/system/{unit}");
        assert!(dest.join(&file).is_file(), "{file} was not installed");
    }
    for file in [
        "usr/lib/systemd/system-generators/zlive-generator",
        "usr/bin/zlive",
        "usr/lib/dracut/modules.d/50zlive/module-setup.sh",
        "usr/lib/dracut/modules.d/50zlive/parse-zlive.sh",
        "usr/share/man/man8/zlive-generator.8",
        "usr/share/man/man8/zlive.8",
        "usr/share/man/man5/zlive.persistence.conf.5",
        "usr/share/man/man7/zlive.kernel-command-line.7",
        "usr/share/bash-completion/completions/zlive",
        "usr/share/zsh/vendor-completions/_zlive",
        "usr/share/fish/vendor_completions.d/zlive.fish",
    ] {
        assert!(dest.join(file).is_file(), "{file} was not installed");
    }
    let unit =
        std::fs::read_to_string(dest.join("usr/lib/systemd/system/zlive-reload.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/zlive reload"), "{unit}");
    assert!(!unit.contains("@BINDIR@"), "{unit}");
}

/// The boot tests' dracut tree on a machine where zlive is installed (`make install`, then
/// `make check`): the project's module replaces the installed one, never nested in it, and
/// the tree can be made again in place.
#[test]
fn the_test_dracut_tree_ignores_an_installed_zlive() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dracut-tree");
    let _ = std::fs::remove_dir_all(&base);
    let (system, stage, out) = (base.join("dracut"), base.join("stage"), base.join("out"));
    let module = |root: &std::path::Path, name: &str, text: &str| {
        let dir = root.join("modules.d").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("module-setup.sh"), text).unwrap();
    };
    module(&system, "50zlive", "installed\n");
    module(&system, "90other", "other\n");
    module(&stage.join("usr/lib/dracut"), "50zlive", "staged\n");
    for _ in 0..2 {
        let status = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/vm/dracut-tree.sh"
            ))
            .args([&system, &stage, &out])
            .status()
            .unwrap();
        assert!(status.success());
        let ours = out.join("modules.d/50zlive/module-setup.sh");
        assert_eq!(std::fs::read_to_string(&ours).unwrap(), "staged\n");
        assert!(!std::fs::symlink_metadata(&ours).unwrap().is_symlink());
        assert!(!out.join("modules.d/50zlive/50zlive").exists(), "nested");
        assert!(out.join("modules.d/51zlive-test/module-setup.sh").is_file());
        assert_eq!(
            std::fs::read_to_string(out.join("modules.d/90other/module-setup.sh")).unwrap(),
            "other\n"
        );
    }
}

/// With CARGO_TARGET_DIR set, `make install` takes the binaries from where cargo builds them
/// (it used to read target/release by hand and fail with "cannot stat").
#[test]
fn make_install_finds_the_build_where_cargo_puts_it() {
    let elsewhere = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("elsewhere");
    let out = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-n", "install", "DESTDIR=/nonexistent"])
        .env("CARGO_TARGET_DIR", &elsewhere)
        .output()
        .expect("make");
    assert!(out.status.success());
    let commands = String::from_utf8_lossy(&out.stdout);
    let release = format!("{}/release/", elsewhere.display());
    for binary in ["zlive-generator ", "zlive "] {
        assert!(
            commands.contains(&format!("install -Dm755 {release}{binary}")),
            "make install does not take {binary}from {release}:\n{commands}"
        );
    }
}
