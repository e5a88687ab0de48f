//! The live-build recipe's menu hook (examples/live-build/config/hooks/normal/
//! 0910-zlive-menu.hook.binary) on the menus live-build writes: one more entry after the
//! first live one, with `persistence-create`, in ISOLINUX's and GRUB's menus; the others as
//! they were. The boot test chooses the entry on a real ISO; this checks the text. And the
//! medium hook (0900-zlive-medium.hook.binary): both menus wait 5 s, not forever.

use std::path::Path;
use std::process::Command;

const HOOK: &str = "examples/live-build/config/hooks/normal/0910-zlive-menu.hook.binary";
const MEDIUM_HOOK: &str = "examples/live-build/config/hooks/normal/0900-zlive-medium.hook.binary";

/// Run a hook in `tree`, as live-build does (in binary/).
fn run_hook(hook: &str, tree: &Path) {
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join(hook);
    let ok = Command::new("sh")
        .arg(&hook)
        .current_dir(tree)
        .status()
        .unwrap();
    assert!(ok.success(), "{} failed", hook.display());
}

/// live-build 20230502's ISOLINUX live.cfg for the recipe's command line.
const LIVE_CFG: &str = "label live-amd64\n\
\tmenu label ^Live system (amd64)\n\
\tmenu default\n\
\tlinux /boot/vmlinuz\n\
\tinitrd /boot/initrd.img\n\
\tappend boot=live components noeject persistence quiet splash\n\
\n\
label live-amd64-failsafe\n\
\tmenu label Live system (amd64 fail-safe mode)\n\
\tlinux /boot/vmlinuz\n\
\tinitrd /boot/initrd.img\n\
\tappend memtest noapic noapm nodma nomce nolapic nosmp nosplash vga=788\n";

/// The start of its GRUB grub.cfg.
const GRUB_CFG: &str = "source /boot/grub/config.cfg\n\
\n\
# Live boot\n\
menuentry \"Live system (amd64)\" --hotkey=l {\n\
\tlinux\t/boot/vmlinuz-6.12 boot=live components noeject persistence quiet splash findiso=${iso_path}\n\
\tinitrd\t/boot/initrd.img-6.12\n\
}\n\
menuentry \"Live system (amd64 fail-safe mode)\" {\n\
\tlinux\t/boot/vmlinuz-6.12 memtest noapic\n\
\tinitrd\t/boot/initrd.img-6.12\n\
}\n\
# menuentry \"Alternate live boot\" {\n";

#[test]
fn the_menus_get_a_first_boot_entry_after_the_first() {
    let tree = Path::new(env!("CARGO_TARGET_TMPDIR")).join("menu-hook");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("isolinux")).unwrap();
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    std::fs::write(tree.join("isolinux/live.cfg"), LIVE_CFG).unwrap();
    std::fs::write(tree.join("boot/grub/grub.cfg"), GRUB_CFG).unwrap();
    run_hook(HOOK, &tree);

    let live = std::fs::read_to_string(tree.join("isolinux/live.cfg")).unwrap();
    let added = "label live-amd64-persistence-create\n\
\tmenu label Live with ^persistence (created on first boot)\n\
\tlinux /boot/vmlinuz\n\
\tinitrd /boot/initrd.img\n\
\tappend boot=live components noeject persistence quiet splash persistence-create\n\n";
    let (first, rest) = LIVE_CFG.split_at(LIVE_CFG.find("label live-amd64-failsafe").unwrap());
    assert_eq!(live, format!("{first}{added}{rest}"));
    assert_eq!(live.matches("menu default").count(), 1);

    let grub = std::fs::read_to_string(tree.join("boot/grub/grub.cfg")).unwrap();
    let added = "menuentry \"Live with persistence (created on first boot)\" --hotkey=p {\n\
\tlinux\t/boot/vmlinuz-6.12 boot=live components noeject persistence quiet splash findiso=${iso_path} persistence-create\n\
\tinitrd\t/boot/initrd.img-6.12\n\
}\n";
    let at = GRUB_CFG
        .find("menuentry \"Live system (amd64 fail-safe")
        .unwrap();
    assert_eq!(
        grub,
        format!("{}{added}{}", &GRUB_CFG[..at], &GRUB_CFG[at..])
    );
}

/// live-build 20230502's ISOLINUX isolinux.cfg and the start of GRUB's config.cfg: both wait
/// for a key forever.
const ISOLINUX_CFG: &str = "include menu.cfg\ndefault vesamenu.c32\nprompt 0\ntimeout 0\n";
const GRUB_CONFIG_CFG: &str = "set default=0\n\nif [ x$feature_default_font_path = xy ] ; then\n";

#[test]
fn both_menus_wait_five_seconds_and_the_image_moves_to_live() {
    let tree = Path::new(env!("CARGO_TARGET_TMPDIR")).join("medium-hook");
    let _ = std::fs::remove_dir_all(&tree);
    for dir in ["isolinux", "boot/grub"] {
        std::fs::create_dir_all(tree.join(dir)).unwrap();
    }
    std::fs::write(tree.join("isolinux/isolinux.cfg"), ISOLINUX_CFG).unwrap();
    std::fs::write(tree.join("boot/grub/config.cfg"), GRUB_CONFIG_CFG).unwrap();
    std::fs::write(tree.join("boot/filesystem.squashfs"), "image").unwrap();
    run_hook(MEDIUM_HOOK, &tree);
    let isolinux = std::fs::read_to_string(tree.join("isolinux/isolinux.cfg")).unwrap();
    assert_eq!(isolinux, ISOLINUX_CFG.replace("timeout 0", "timeout 50"));
    let grub = std::fs::read_to_string(tree.join("boot/grub/config.cfg")).unwrap();
    assert_eq!(
        grub,
        GRUB_CONFIG_CFG.replace("set default=0\n", "set default=0\nset timeout=5\n")
    );
    assert!(tree.join("live/filesystem.squashfs").is_file());
    // A second run (a rebuild of the binary stage) adds no second timeout.
    std::fs::write(tree.join("boot/filesystem.squashfs"), "image").unwrap();
    run_hook(MEDIUM_HOOK, &tree);
    let again = std::fs::read_to_string(tree.join("boot/grub/config.cfg")).unwrap();
    assert_eq!(again, grub);
}
