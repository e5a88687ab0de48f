//! Every fixed path zlive uses, in one place. Paths that depend on input (a volume's mount
//! point, an entry's destination) are derived in `plan.rs` from these.

/// Where the initrd assembles the live root.
pub const SYSROOT: &str = "/sysroot";
/// The live medium (live-boot's path, kept for scripts that look there).
pub const MEDIUM_DIR: &str = "/run/live/medium";
/// `toram`: the tmpfs holding the copy of the image, so that the medium can go.
pub const TORAM_DIR: &str = "/run/live/toram";
/// `findiso=`: the device holding the ISO file, mounted read-only (live-boot's path).
pub const FINDISO_DIR: &str = "/run/live/findiso";
/// Where images are mounted, one directory per image file.
pub const ROOTFS_DIR: &str = "/run/live/rootfs";
/// The tmpfs that holds the root overlay's changes when they are not persistent.
pub const OVERLAY_DIR: &str = "/run/live/overlay";
/// Persistence volumes are mounted below this, one directory per volume.
pub const PERSISTENCE_DIR: &str = "/run/live/persistence";
/// The configuration file at the root of every persistence volume.
pub const CONF_NAME: &str = "persistence.conf";
/// The one image zlive mounts (Debian live-build's name).
pub const IMAGE_NAME: &str = "filesystem.squashfs";
/// Where that image is mounted: `ROOTFS_DIR/IMAGE_NAME`.
pub const IMAGE_DIR: &str = "/run/live/rootfs/filesystem.squashfs";
/// Default `live-media-path=`: the directory on the medium that holds the images.
pub const DEFAULT_MEDIA_PATH: &str = "live";
/// The kernel command line, also the `SourcePath=` of units derived from it.
pub const PROC_CMDLINE: &str = "/proc/cmdline";
/// Written when a `/ union` root could not be prepared on its volume: why. Its presence
/// makes the generator put the root's changes in RAM for the rest of this boot.
pub const ROOT_FALLBACK: &str = "/run/zlive/root-in-ram";
/// The zvols (`POOL/VOL`, a line each) found to hold LUKS containers, written by the volume
/// wait when `persistence-encryption=` allows LUKS; the generator writes a
/// systemd-cryptsetup@ unit for each.
pub const LUKS_FOUND: &str = "/run/zlive/luks";
/// Per volume found by its label, `CHECKED_DIR/NAME` holds the device number (`MAJOR:MINOR`)
/// of the one device the volume wait found to carry the label, or `dataset POOL/DS` for a
/// dataset: the generator uses the volume's persistence.conf only if that is what is mounted
/// (another device with the same label could appear between the check and the mount).
pub const CHECKED_DIR: &str = "/run/zlive/checked";
/// The datasets the volume wait found to carry a persistence label (their `org.zlive:label`
/// property), `LABEL POOL/DS` per line: the generator mounts that label's volume as the
/// dataset.
pub const DATASETS_FOUND: &str = "/run/zlive/datasets-found";
/// systemd's own LUKS helper, which its generated systemd-cryptsetup@ units run.
pub const SYSTEMD_CRYPTSETUP: &str = "/usr/lib/systemd/systemd-cryptsetup";
/// The file whose presence means "this is the initrd" (bootup(7)).
pub const INITRD_RELEASE: &str = "/etc/initrd-release";

/// The image file on the medium for a `live-media-path=`.
pub fn image_file(media_path: &str) -> String {
    format!("{MEDIUM_DIR}/{media_path}/{IMAGE_NAME}")
}

/// The directory that stands for DIR inside the mounted image.
pub fn in_image(dir: &str) -> String {
    below(IMAGE_DIR, dir)
}

/// Where an entry's DIR is mounted before switch-root: `/sysroot` + DIR.
pub fn in_sysroot(dir: &str) -> String {
    below(SYSROOT, dir)
}

/// `base` + absolute `dir`, where `/` stands for `base` itself.
fn below(base: &str, dir: &str) -> String {
    if dir == "/" {
        base.to_owned()
    } else {
        format!("{base}{dir}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_dir_is_below_rootfs() {
        assert_eq!(IMAGE_DIR, format!("{ROOTFS_DIR}/{IMAGE_NAME}"));
        assert_eq!(
            image_file("live"),
            "/run/live/medium/live/filesystem.squashfs"
        );
        assert_eq!(in_image("/"), IMAGE_DIR);
        assert_eq!(in_image("/etc"), format!("{IMAGE_DIR}/etc"));
        assert_eq!(in_sysroot("/"), "/sysroot");
        assert_eq!(in_sysroot("/home/user"), "/sysroot/home/user");
    }
}
