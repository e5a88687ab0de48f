//! The way back out: the exitrd built before switch-root, and the live system taken apart
//! from it at shutdown, volumes unmounted and pools exported. Runs at the two ends of a boot
//! only; nothing else calls into it.

pub mod exitrd;
