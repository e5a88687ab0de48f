//! The root overlay's own preparation, for `/ union`: PID 1 must have loaded the second
//! pass's sysroot.mount (with its upper layer on the volume) before it mounts it, and a root
//! that cannot be prepared on its volume stays in RAM for the boot instead.

use crate::systemd::pid1::Pid1;
use anyhow::{Context, Result};
use tracing::info;
use zlive::units::SYSROOT_MOUNT;

const MOUNT: &str = "org.freedesktop.systemd1.Mount";

/// Before the root overlay is mounted: when persistence.conf puts the root on a volume (or
/// adds a lower layer from it), PID 1 must reload so that the queued sysroot.mount is the one
/// the generator writes now, not the root in RAM of the first pass. A root in RAM needs no
/// reload here; the second pass (zlive-reload.service) runs beside it.
pub fn root_unit_up_to_date(plan: &zlive::plan::Plan) -> Result<()> {
    let Some(wanted) = plan.root_on_volume() else {
        return Ok(());
    };
    let mut pid1 = Pid1::connect()?;
    let loaded = pid1.unit_string(SYSROOT_MOUNT, MOUNT, "Options");
    if loaded.contains(&wanted) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    pid1.reload()?;
    info!(
        "persistence.conf has / union: reloaded systemd in {} ms so that the root overlay uses the volume",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// A `/ union` root whose preparation on the volume failed (a full volume, say): record why
/// where the generator looks, prepare the root's changes in RAM instead, and reload, so that
/// `sysroot.mount` (waiting for this preparation) mounts a root in RAM. The boot goes on,
/// without persistence for `/`, rather than stopping at an emergency shell.
pub fn root_in_ram(layout: &super::Layout, why: &str) -> Result<super::Report> {
    use zlive::paths::{ROOT_FALLBACK, SYSROOT};
    let flag = std::path::Path::new(ROOT_FALLBACK);
    if let Some(dir) = flag.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create {}", dir.display()))?;
    }
    std::fs::write(flag, format!("{why}\n"))
        .with_context(|| format!("Failed to write {ROOT_FALLBACK}"))?;
    let plan = crate::current_plan()?;
    let mut report = super::prepare::prepare(&plan, layout, SYSROOT)?;
    Pid1::connect()?.reload()?;
    tracing::error!(
        OBJECT_SYSTEMD_UNIT = SYSROOT_MOUNT,
        "/ union: preparing the root's changes on the volume failed ({why}); this boot keeps them in RAM instead, and they will be lost at shutdown. Free space on the volume (or check it), then reboot."
    );
    report
        .actions
        .push("the root's changes are in RAM for this boot".to_owned());
    Ok(report)
}
