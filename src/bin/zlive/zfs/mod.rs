//! Pools and the persistence volumes, up to the moment a volume is handed to its fsck and
//! mount: the module, the host id and the imports ([`import`], reading the disks udev saw as
//! members, [`members`]), the zvols' devices
//! ([`zvols`]), datasets as volumes ([`datasets`]), keys and LUKS ([`keys`], [`luks`]), the volume's life ([`volume`]) and its
//! snapshots ([`snapshots`]). Never mounts an entry or touches /sysroot.

pub mod datasets;
pub mod image_change;
pub mod import;
pub mod keys;
pub mod luks;
pub mod members;
pub mod migrate;
pub mod snapshots;
pub mod volume;
pub mod zvols;

/// One property's value of a dataset (`zfs get -H -o value`; `-` when a user property is not
/// set).
pub fn property(dataset: &str, name: &str) -> anyhow::Result<String> {
    let lines = crate::exec::lines(
        std::process::Command::new("zfs").args(["get", "-H", "-o", "value", name, dataset]),
    )?;
    Ok(lines.into_iter().next().unwrap_or_default())
}
