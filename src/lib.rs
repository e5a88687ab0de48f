//! zlive: Debian live-boot persistence as a systemd-in-initrd generator, with the persistent
//! data on a ZFS zvol.
//!
//! This library is what the generator links: pure parsing and planning ([`cmdline`],
//! [`conf`], [`names`], [`plan`], the live image's identity [`image`], UTC dates [`utc`], what backups send and where
//! [`backup_plan`]), the names
//! of things ([`paths`], [`units`], [`escape`]),
//! rendering ([`render`]), the one module that writes files ([`emit`]), the read-only view of
//! the system ([`world`]) and the kmsg logger ([`kmsg`]). Code that changes disks or talks to
//! PID 1 lives in the `zlive` helper binary (`src/bin/zlive/`), never here.

// No unsafe code: the fuzz targets (fuzz/) reach only this library, so their long runs need no
// address sanitizer (overflow checks and debug assertions stay on).
#![forbid(unsafe_code)]

pub mod backup_plan;
pub mod cmdline;
pub mod conf;
pub mod emit;
pub mod escape;
pub mod image;
pub mod kmsg;
pub mod names;
pub mod notice;
pub mod paths;
pub mod plan;
pub mod render;
pub mod tool_output;
pub mod units;
pub mod utc;
pub mod world;
