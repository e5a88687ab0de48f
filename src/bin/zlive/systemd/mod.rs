//! systemd: the one client that talks to PID 1 ([`pid1`]), and the second generator pass
//! ([`reload`]). Knows unit names and jobs, not pools, volumes or files on them.

pub mod pid1;
pub mod reload;
