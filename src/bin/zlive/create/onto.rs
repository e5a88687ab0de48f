//! A new pool made as `zlive create` makes one (the same refusals, partition, pool options,
//! confirmation, and undo on an error), holding what the caller receives into it instead of
//! a new persistence: `zlive restore --to DEVICE` and `zlive clone`.

use super::{
    create_pool, probe, recipe, rules, say, show_target, space, step, tool, undo, vdev_for, Made,
    Target,
};
use anyhow::{bail, Result};

pub(crate) use super::confirmed;
pub use super::probe::{medium, table};
pub use super::rules::Medium;
pub use super::space::medium_extent;

/// Where the new pool goes.
#[derive(Debug, Clone, Copy)]
pub enum Onto<'a> {
    /// A blank disk, or a partition holding nothing, that the user named: checked as
    /// `zlive create --device` checks it.
    Device(&'a str),
    /// The free space after the last partition of a disk this run has just written (a
    /// clone's copy of the live medium).
    FreeSpaceOf(&'a str),
}

/// A pool to make and fill.
pub struct NewPool<'a> {
    pub onto: Onto<'a>,
    /// Its name on disk, which the next boot imports.
    pub pool: &'a str,
    /// What goes into it, for the confirmation.
    pub holding: String,
    /// Asked already, or `--yes`.
    pub yes: bool,
    /// Who makes it, for the lines that show each step: `zlive restore`, `zlive clone`.
    pub command: &'static str,
}

/// Check the device, say what will be done and ask; make the pool, let `fill` put the
/// persistence in it (given the name the pool has while it is imported here), then mark it
/// finished and export it. `Ok(false)`: refused or not confirmed, nothing written. An error
/// after the pool was made destroys what was made.
pub fn make_filled(new: &NewPool, fill: &mut dyn FnMut(&str) -> Result<()>) -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("making a pool and partitions needs root");
    }
    let _ = super::COMMAND.set(new.command);
    let decided = target(new.onto).and_then(|target| Ok((target, in_core_name(new.pool)?)));
    let (target, in_core) = match decided {
        Ok(decided) => decided,
        Err(refusal) => {
            eprintln!("zlive: {refusal:#}");
            eprintln!("Nothing was written.");
            return Ok(false);
        }
    };
    show_target(&target);
    let while_here = match &in_core {
        Some(name) => format!(
            " (named {name} until it is exported: {} is taken here)",
            new.pool
        ),
        None => String::new(),
    };
    say(&format!("Pool:        {}{while_here}", new.pool));
    say(&format!("Holding:     {}", new.holding));
    if !new.yes && !confirmed()? {
        eprintln!("zlive: not confirmed; nothing was written.");
        return Ok(false);
    }
    let mut made = Made::default();
    let result = (|| {
        let vdev = vdev_for(&target, &mut made)?;
        create_pool(new.pool, in_core.as_deref(), &vdev, &mut made)?;
        let here = in_core.as_deref().unwrap_or(new.pool);
        fill(here)?;
        tool("zfs", &recipe::finished(here), None)?;
        step(&format!("exporting {here}"));
        tool("zpool", &["export".to_owned(), here.to_owned()], None)
    })();
    if result.is_err() {
        undo(&made);
    }
    result.map(|()| true)
}

/// Where the pool goes, once the device passes `zlive create`'s rules.
fn target(onto: Onto) -> Result<Target> {
    match onto {
        Onto::Device(path) => {
            let device = checked_device(path)?;
            Ok(match device.whole_disk {
                true => Target::WholeDisk(device.path),
                false => Target::Partition(device.path),
            })
        }
        Onto::FreeSpaceOf(disk) => {
            let (sectors, json) = probe::table(disk)?;
            let Some(json) = json else {
                bail!("{disk} has no partition table after the copy");
            };
            let table = space::parse_table(&json)?;
            let extent = space::free_after_last(&table, sectors, None)?;
            Ok(Target::FreeSpace {
                disk: disk.to_owned(),
                table,
                extent,
            })
        }
    }
}

/// The device at `path`, refused as `zlive create --device` refuses it (never with `--wipe`:
/// what it holds stays).
pub fn checked_device(path: &str) -> Result<rules::Device> {
    let device = probe::device(path, &probe::medium())?;
    // zlive create's own words for it point at its free-space default.
    if device.holds_medium {
        bail!(
            "{} holds the running live medium: name another disk.",
            device.path
        );
    }
    if let Some(why) = rules::refuse_device(&device, false) {
        bail!(why);
    }
    Ok(device)
}

/// The name the pool has while it is imported here: its own, unless a pool of that name is
/// imported (the stick this runs from); then `POOL-new` until it is exported. A pool of that
/// name on another disk here is refused, as by `zlive create`.
fn in_core_name(pool: &str) -> Result<Option<String>> {
    zlive::names::PoolName::parse(pool).map_err(anyhow::Error::msg)?;
    let (imported, visible) = probe::pool_names();
    if !imported.iter().any(|p| p == pool) {
        return match rules::refuse_pool_name(pool, &imported, &visible) {
            Some(why) => bail!(why),
            None => Ok(None),
        };
    }
    let temporary = format!("{pool}-new");
    if let Some(why) = rules::refuse_pool_name(&temporary, &imported, &visible) {
        bail!(why);
    }
    Ok(Some(temporary))
}

/// Receive-side `-o` options for a persistence volume that must not be seen before its pool
/// is exported: a zvol without a device node (its file system label would be seen twice), a
/// dataset never mounted. [`reveal`] undoes the first before the export.
pub fn hidden_volume_options(zvol: bool) -> Vec<&'static str> {
    match zvol {
        true => vec!["-o", "volmode=none"],
        false => crate::zfs::datasets::UPPER_LAYER_OPTIONS.to_vec(),
    }
}

/// A received zvol gets its device node at the next import (the boot's).
pub fn reveal(volume: &str, zvol: bool) -> Result<()> {
    if zvol {
        tool(
            "zfs",
            &[
                "inherit".to_owned(),
                "volmode".to_owned(),
                volume.to_owned(),
            ],
            None,
        )?;
    }
    Ok(())
}

/// `zfs set org.zlive:label=LABEL` on a dataset: the last step that makes it persistence.
pub fn label(volume: &str, label: &str) -> Result<()> {
    step(&format!("labelling {volume} {label}"));
    tool("zfs", &recipe::label_dataset(volume, label), None)
}
