//! The live-build recipe's menu hook (examples/live-build/config/hooks/normal/
//! 0910-zlive-menu.hook.binary) on the menus live-build writes: one more entry after the
//! first live one, with `persistence-create`, in ISOLINUX's and GRUB's menus; the others as
//! they were. The boot test chooses the entry on a real ISO; this checks the text.

use std::path::Path;
use std::process::Command;

const HOOK: &str = "examples/live-build/config/hooks/normal/0910-zlive-menu.hook.binary";

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
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join(HOOK);
    let ok = Command::new("sh")
        .arg(&hook)
        .current_dir(&tree)
        .status()
        .unwrap();
    assert!(ok.success());

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
