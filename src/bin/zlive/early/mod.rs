//! The live medium and its image, before any pool: finding and mounting the medium (a scan,
//! `findiso=`, `live-media=`), keeping the disks it looks at read-only, and `toram`. Never
//! touches ZFS, a persistence volume or an entry.

pub mod blockdev;
pub mod medium;
pub mod toram;
