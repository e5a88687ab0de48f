#![no_main]
//! What zpool, zfs and blkid print, as the helper parses it to decide about strangers' pools
//! and disks: no panic on any text, and every name taken from it is a valid one. Backups' too:
//! a stream file's header, listings and estimates, and the destination a user types.
use libfuzzer_sys::fuzz_target;
use zlive::names::{Dataset, PoolName};
use zlive::backup_plan as backup;
use zlive::tool_output as out;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for pool in out::pool_names(&text) {
        assert!(PoolName::parse(&pool).is_ok(), "{pool:?}");
    }
    for path in out::vdev_paths(&text) {
        assert!(path.starts_with("/dev/"), "{path:?}");
    }
    for listed in out::listed_pools(&text) {
        assert!(!listed.name.contains('\n') && !listed.status.contains('\n'));
        let _ = listed.in_use_elsewhere();
    }
    for row in out::zvol_rows(&text) {
        assert!(Dataset::parse(row.dataset.as_str()).is_ok());
        assert!(!row.has_device() || (!row.hidden && !row.locked));
    }
    for snap in out::snapshot_rows(&text, "zlive-") {
        let (_, short) = snap.name.split_once('@').expect("a snapshot name has an @");
        assert!(short.starts_with("zlive-") && !snap.kind.is_empty() && snap.kind != "-");
    }
    if let Some(pool) = out::udev_zfs_member(&text) {
        assert!(PoolName::parse(&pool).is_ok(), "{pool:?}");
    }
    if let Some(name) = out::uevent_devname(&text) {
        assert!(!name.starts_with('/') && !name.split('/').any(|p| p == ".."), "{name:?}");
    }
    for probed in out::blkid_export(&text) {
        assert!(!probed.device.contains('\n'));
    }
    let headers: Vec<(String, backup::StreamHeader)> = data
        .chunks(64)
        .filter_map(backup::stream_header)
        .map(|h| (String::new(), h))
        .chain(backup::stream_header(data).map(|h| (String::new(), h)))
        .collect();
    if let Ok(chain) = backup::stream_chain(&headers) {
        assert!(chain.iter().all(|&i| i < headers.len()) && headers[chain[0]].1.from_guid == 0);
    }
    let _ = backup::marks(&text);
    let _ = backup::send_estimate(&text);
    if let Ok(backup::Place::Ssh { host, .. }) = backup::Place::parse(&text) {
        assert!(!host.starts_with('-') && !host.contains([' ', ';', '\'', '$']), "{host:?}");
    }
});
