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
    ] {
        assert!(dest.join(file).is_file(), "{file} was not installed");
    }
    let unit =
        std::fs::read_to_string(dest.join("usr/lib/systemd/system/zlive-reload.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/zlive reload"), "{unit}");
    assert!(!unit.contains("@BINDIR@"), "{unit}");
}
