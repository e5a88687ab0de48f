//! zlive: Debian live-boot persistence as a systemd-in-initrd generator, with the persistent
//! data on a ZFS zvol.
//!
//! Pure parts: [`cmdline`], [`conf`], [`names`], [`escape`], [`plan`], [`render`].
//! The one module that writes files: [`emit`]. Reading the system: [`world`].

pub mod cmdline;
pub mod conf;
pub mod emit;
pub mod escape;
pub mod kmsg;
pub mod names;
pub mod plan;
pub mod prepare;
pub mod render;
pub mod safe;
pub mod world;
