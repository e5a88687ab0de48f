//! Every unit name zlive writes, starts, orders against or asks PID 1 about, in one place:
//! systemd's own units, zlive's static units in `units/`, and the names derived from pools,
//! volumes and paths. Nothing else spells a unit name out.

use crate::escape::{self, EscapeError};
use crate::paths;

// systemd's units in the initrd (bootup(7), systemd.special(7)).
pub const SYSROOT_MOUNT: &str = "sysroot.mount";
pub const INITRD_TARGET: &str = "initrd.target";
pub const INITRD_FS_TARGET: &str = "initrd-fs.target";
pub const INITRD_ROOT_FS_TARGET: &str = "initrd-root-fs.target";
pub const INITRD_ROOT_DEVICE_TARGET: &str = "initrd-root-device.target";
pub const LOCAL_FS_PRE_TARGET: &str = "local-fs-pre.target";
pub const UMOUNT_TARGET: &str = "umount.target";

// zlive's static units (units/*.service).
pub const RELOAD: &str = "zlive-reload.service";
pub const FIND_MEDIUM: &str = "zlive-find-medium.service";
pub const IMPORT_SCAN: &str = "zlive-import-scan.service";
pub const EXITRD: &str = "zlive-exitrd.service";
const IMPORT_TEMPLATE: &str = "zlive-import";
const VOLUME_TEMPLATE: &str = "zlive-volume";
const PREPARE_TEMPLATE: &str = "zlive-prepare";
const LINK_TEMPLATE: &str = "zlive-link";
const FSCK_TEMPLATE: &str = "systemd-fsck";
const CRYPTSETUP_TEMPLATE: &str = "systemd-cryptsetup";
const LOAD_KEY_TEMPLATE: &str = "zlive-load-key";

/// OpenZFS's units that import pools, mount their datasets or ask for their keys by
/// themselves (zfsutils-linux in the live root, `zfs-dracut`'s 90zfs in the initrd), and its
/// module load, which zlive-load-zfs does without waiting for udev. On a live boot zlive alone
/// decides which pools are imported, and how: these are masked, in the initrd and in the live
/// root, so that a stranger's pool is never imported read-write, mounted over the live system
/// or asked for its key, and `systemd-udev-settle`, which all of them but zfs-mount pull in, no
/// longer delays the boot.
pub const OPENZFS_AUTOMATIC: &[&str] = &[
    "zfs-import-scan.service",
    "zfs-import-cache.service",
    "zfs-import@.service",
    "zfs-mount.service",
    "zfs-load-key.service",
    "zfs-load-module.service",
];

/// Every unit file in `units/`, for the tests that check the tree and the install.
pub const STATIC: &[&str] = &[
    EXITRD,
    FIND_MEDIUM,
    IMPORT_SCAN,
    "zlive-import@.service",
    "zlive-link@.service",
    "zlive-load-key@.service",
    "zlive-load-zfs.service",
    "zlive-prepare@.service",
    "zlive-prune@.service",
    RELOAD,
    "zlive-volume@.service",
];

/// The mount unit of a path (`/sysroot/home` → `sysroot-home.mount`).
pub fn mount(path: &str) -> Result<String, EscapeError> {
    escape::unit_name_from_path(path, ".mount")
}

/// The device unit of a device node or udev link.
pub fn device(path: &str) -> Result<String, EscapeError> {
    escape::unit_name_from_path(path, ".device")
}

/// The mount unit of a path zlive fixes itself (cannot fail: the paths are short and clean).
fn fixed_mount(path: &str) -> String {
    mount(path).unwrap_or_default()
}

pub fn medium_mount() -> String {
    fixed_mount(paths::MEDIUM_DIR)
}
pub fn image_mount() -> String {
    fixed_mount(paths::IMAGE_DIR)
}
pub fn overlay_mount() -> String {
    fixed_mount(paths::OVERLAY_DIR)
}

/// `zlive-import@POOL.service`.
pub fn import(pool: &str) -> String {
    instance(IMPORT_TEMPLATE, &escape::instance_escape(pool))
}

/// `zlive-volume@NAME.service`: waits, bounded, for a volume's device.
pub fn volume_wait(name: &str) -> String {
    instance(VOLUME_TEMPLATE, &escape::instance_escape(name))
}

/// systemd's fsck service for a device.
pub fn fsck(device: &str) -> String {
    instance(
        FSCK_TEMPLATE,
        &escape::path_escape(device).unwrap_or_default(),
    )
}

/// `systemd-cryptsetup@NAME.service` for a device-mapper name.
pub fn cryptsetup(name: &str) -> String {
    instance(CRYPTSETUP_TEMPLATE, &escape::instance_escape(name))
}

/// `zlive-load-key@ENCRYPTIONROOT.service`: loads a ZFS encryption root's key.
pub fn load_key(encryption_root: &str) -> String {
    instance(
        LOAD_KEY_TEMPLATE,
        &escape::path_escape(encryption_root).unwrap_or_default(),
    )
}

/// The encryption root a `zlive-load-key@…` unit is for; `None` for any other unit.
pub fn load_key_root(unit: &str) -> Option<String> {
    let instance = unit
        .strip_prefix(LOAD_KEY_TEMPLATE)?
        .strip_prefix('@')?
        .strip_suffix(".service")?;
    let path = escape::path_unescape(instance)?;
    Some(path.trim_start_matches('/').to_owned())
}

/// The glob of every `zlive-load-key@…` unit.
pub fn load_key_glob() -> String {
    instance(LOAD_KEY_TEMPLATE, "*")
}

/// `zlive-prepare@DEST.service`.
pub fn prepare(dest: &str) -> String {
    instance(
        PREPARE_TEMPLATE,
        &escape::path_escape(dest).unwrap_or_else(|_| "-".to_owned()),
    )
}

/// `zlive-link@DEST.service`, refused when it would be too long for systemd.
pub fn link(dest: &str) -> Result<String, EscapeError> {
    fitting(instance(LINK_TEMPLATE, &escape::path_escape(dest)?))
}

/// The units an entry at `dest` needs: its own (a mount, or a link service) and, because the
/// prepare instance is the longest name derived from DEST, a check that it fits too.
pub fn for_entry(dest: &str, is_link: bool) -> Result<String, EscapeError> {
    let unit = if is_link { link(dest)? } else { mount(dest)? };
    fitting(instance(PREPARE_TEMPLATE, &escape::path_escape(dest)?))?;
    Ok(unit)
}

fn instance(template: &str, instance: &str) -> String {
    escape::instance_unit(template, instance, ".service")
}

/// The name, if systemd accepts a unit name that long.
pub fn fitting(name: String) -> Result<String, EscapeError> {
    if name.len() > escape::UNIT_NAME_MAX {
        Err(EscapeError::TooLong)
    } else {
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        assert_eq!(medium_mount(), "run-live-medium.mount");
        assert_eq!(image_mount(), "run-live-rootfs-filesystem.squashfs.mount");
        assert_eq!(overlay_mount(), "run-live-overlay.mount");
        assert_eq!(mount(paths::SYSROOT).unwrap(), SYSROOT_MOUNT);
        assert_eq!(import("my-pool"), "zlive-import@my\\x2dpool.service");
        assert_eq!(
            volume_wait("persistence"),
            "zlive-volume@persistence.service"
        );
        assert_eq!(
            fsck("/dev/disk/by-label/persistence"),
            "systemd-fsck@dev-disk-by\\x2dlabel-persistence.service"
        );
        assert_eq!(prepare("/sysroot"), "zlive-prepare@sysroot.service");
        assert_eq!(
            cryptsetup("zlive-dpool-persistence"),
            "systemd-cryptsetup@zlive\\x2ddpool\\x2dpersistence.service"
        );
        assert_eq!(
            load_key("dpool/secret"),
            "zlive-load-key@dpool-secret.service"
        );
        // Back from the unit's name, through the escaping both ways.
        for root in [
            "dpool/secret",
            "tank/live-data",
            "tank/my data",
            "tank/.hidden",
        ] {
            assert_eq!(
                load_key_root(&load_key(root)).as_deref(),
                Some(root),
                "{}",
                load_key(root)
            );
        }
        assert_eq!(
            load_key("tank/live-data"),
            "zlive-load-key@tank-live\\x2ddata.service"
        );
        assert_eq!(load_key_root("zlive-volume@x.service"), None);
        assert_eq!(load_key_root("zlive-load-key@bad\\xZZ.service"), None);
        assert_eq!(
            link("/sysroot/home/a").unwrap(),
            "zlive-link@sysroot-home-a.service"
        );
        let long = format!("/sysroot/{}", "a".repeat(240));
        assert!(mount(&long).is_ok());
        assert_eq!(for_entry(&long, false), Err(EscapeError::TooLong));
    }

    /// The static names above are the files in units/, and the templates are among them.
    #[test]
    fn static_units_are_the_files_in_units() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/units");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, STATIC);
        for name in [RELOAD, FIND_MEDIUM, IMPORT_SCAN, EXITRD] {
            assert!(STATIC.contains(&name), "{name}");
        }
        for template in [
            IMPORT_TEMPLATE,
            VOLUME_TEMPLATE,
            PREPARE_TEMPLATE,
            LINK_TEMPLATE,
        ] {
            assert!(STATIC.contains(&format!("{template}@.service").as_str()));
        }
    }
}
