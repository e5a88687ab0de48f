//! Where a new partition fits: the free space after the last partition of a disk, from what
//! `sfdisk --json` says of its table. Pure arithmetic, so that the hybrid ISO's MBR (its first
//! partition starts at sector 64 and its EFI partition lies inside it) and an ISO's GPT (whose
//! backup header sits at the ISO's end, not the disk's) are tested without a disk.
//!
//! Why sfdisk: it is util-linux's scriptable front end to libfdisk, on every Debian system
//! (package fdisk), and it appends a partition to a table without rewriting the others
//! (`--append`), moves a GPT's backup header to the disk's end (`--relocate gpt-bak-std`),
//! and reads MBR hybrids as they are, where parted rewrites or refuses them.

use anyhow::{bail, Context, Result};

/// Partitions start on a MiB boundary, as every partitioning tool now does (flash erase
/// blocks and 4 KiB sectors).
pub const ALIGN_BYTES: u64 = 1 << 20;
/// The least space persistence is made in.
pub const MIN_BYTES: u64 = 64 << 20;
/// A GPT's backup: its header and a 128-entry array, at the disk's end (33 sectors of 512 B).
const GPT_BACKUP_SECTORS: u64 = 33;
/// The partition type of a ZFS vdev: MBR "Solaris" (what zpool and FreeBSD use), and GPT's
/// "Solaris /usr & Apple ZFS" (what `zpool create` gives a whole disk's partition).
const MBR_ZFS: &str = "bf";
const GPT_ZFS: &str = "6A898CC3-1DD2-11B2-99A6-080020736631";

/// The kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Dos,
    Gpt,
}

/// What sfdisk says of a disk's table, in sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub label: Label,
    pub sector_size: u64,
    /// GPT: the last sector partitions may use, as the table says now.
    pub last_lba: Option<u64>,
    /// (start, size) of each partition.
    pub partitions: Vec<(u64, u64)>,
}

/// A run of sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub sectors: u64,
}

/// Read `sfdisk --json` output.
pub fn parse_table(json: &str) -> Result<Table> {
    let value: serde_json::Value = serde_json::from_str(json).context("sfdisk --json")?;
    let table = &value["partitiontable"];
    let label = match table["label"].as_str() {
        Some("dos") => Label::Dos,
        Some("gpt") => Label::Gpt,
        other => bail!("a partition table of a kind zlive does not extend: {other:?}"),
    };
    let sector_size = table["sectorsize"].as_u64().unwrap_or(512);
    let mut partitions = Vec::new();
    for p in table["partitions"].as_array().into_iter().flatten() {
        match (p["start"].as_u64(), p["size"].as_u64()) {
            (Some(start), Some(size)) => partitions.push((start, size)),
            _ => bail!("sfdisk listed a partition without start and size: {p}"),
        }
    }
    Ok(Table {
        label,
        sector_size,
        last_lba: table["lastlba"].as_u64(),
        partitions,
    })
}

/// The free space after the last partition of a disk of `disk_sectors` sectors, aligned, and
/// at most `want_bytes` long (all of it when `None`). For a GPT the backup header is counted
/// at the disk's end, where it is moved before the partition is added. An error says why
/// there is no room.
pub fn free_after_last(
    table: &Table,
    disk_sectors: u64,
    want_bytes: Option<u64>,
) -> Result<Extent> {
    if table.label == Label::Dos && table.partitions.len() >= 4 {
        bail!("its MBR already holds four partitions, the most it can");
    }
    let align = (ALIGN_BYTES / table.sector_size).max(1);
    let used_end = table
        .partitions
        .iter()
        .map(|(start, size)| start + size)
        .max()
        .unwrap_or(align);
    let start = used_end.div_ceil(align) * align;
    let end = match table.label {
        Label::Dos => disk_sectors.min(u32::MAX as u64),
        Label::Gpt => disk_sectors.saturating_sub(GPT_BACKUP_SECTORS + 1),
    };
    let free = end.saturating_sub(start);
    // Whole MiB, so that the partition ends on a boundary too.
    let mut sectors = free / align * align;
    if let Some(want) = want_bytes {
        sectors = sectors.min(want / table.sector_size / align * align);
    }
    if sectors * table.sector_size < MIN_BYTES {
        bail!(
            "{} MiB are free after its last partition; persistence needs at least {} MiB",
            (free * table.sector_size) >> 20,
            MIN_BYTES >> 20
        );
    }
    Ok(Extent { start, sectors })
}

/// The line `sfdisk --append` reads to add `extent` as a ZFS partition.
pub fn append_script(table: &Table, extent: Extent) -> String {
    let kind = match table.label {
        Label::Dos => MBR_ZFS,
        Label::Gpt => GPT_ZFS,
    };
    format!(
        "start={}, size={}, type={kind}\n",
        extent.start, extent.sectors
    )
}

/// What `sfdisk DISK` reads to give a blank disk a GPT with one ZFS partition over all of it,
/// from the first MiB.
pub fn whole_disk_script() -> String {
    format!("label: gpt\nstart=2048, type={GPT_ZFS}\n")
}

/// What a clone copies of the live medium's disk: everything up to the end of its last
/// partition that is not a ZFS one (the ISO's, from sector 0 with its table), in bytes; and
/// the numbers of the ZFS partitions the copied table still lists (the stick's own pool,
/// which is sent instead), to take out of the copy's table.
pub fn medium_extent(json: &str) -> Result<(u64, Vec<usize>)> {
    let value: serde_json::Value = serde_json::from_str(json).context("sfdisk --json")?;
    let sector_size = value["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let mut end = 0;
    let mut zfs = Vec::new();
    for p in value["partitiontable"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(start), Some(size)) = (p["start"].as_u64(), p["size"].as_u64()) else {
            bail!("sfdisk listed a partition without start and size: {p}");
        };
        let kind = p["type"].as_str().unwrap_or_default();
        if kind.eq_ignore_ascii_case(MBR_ZFS) || kind.eq_ignore_ascii_case(GPT_ZFS) {
            let node = p["node"].as_str().unwrap_or_default();
            let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            match node[node.len() - digits..].parse() {
                Ok(number) => zfs.push(number),
                Err(_) => bail!("sfdisk listed a partition without a number: {p}"),
            }
        } else {
            end = end.max(start + size);
        }
    }
    if end == 0 {
        bail!("the live medium's disk has no partition but ZFS ones: nothing of the live system to copy");
    }
    Ok((end * sector_size, zfs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sfdisk prints for live-build's ISO (isohybrid MBR: the ISO partition from sector
    /// 64, the EFI image inside it).
    const HYBRID: &str = r#"{"partitiontable": {"label": "dos", "id": "0xa8ef5139",
        "device": "live.iso", "unit": "sectors", "sectorsize": 512, "partitions": [
        {"node": "live.iso1", "start": 64, "size": 716736, "type": "0", "bootable": true},
        {"node": "live.iso2", "start": 740, "size": 10368, "type": "ef"}]}}"#;

    #[test]
    fn the_hybrid_isos_free_space_starts_after_the_iso() {
        let table = parse_table(HYBRID).unwrap();
        // A 1 GiB stick: the ISO ends at 350 MiB, already aligned.
        let free = free_after_last(&table, 2 * 1024 * 1024, None).unwrap();
        assert_eq!(
            free,
            Extent {
                start: 716_800,
                sectors: 2_097_152 - 716_800
            }
        );
        assert_eq!(
            append_script(&table, free),
            "start=716800, size=1380352, type=bf\n"
        );
        // --size takes less, in whole MiB.
        let some = free_after_last(&table, 2 * 1024 * 1024, Some(100 << 20)).unwrap();
        assert_eq!(some.sectors, 204_800);
    }

    /// A stick zlive create extended: the ISO's two partitions are copied, the pool's third
    /// is not, and is named for deletion from the copy's table.
    #[test]
    fn a_clone_copies_the_iso_and_not_the_pool() {
        let stick = HYBRID.replace(
            r#""type": "ef"}]"#,
            r#""type": "ef"}, {"node": "/dev/sda3", "start": 716800, "size": 1380352, "type": "bf"}]"#,
        );
        assert_eq!(medium_extent(&stick).unwrap(), (716_800 * 512, vec![3]));
        assert_eq!(medium_extent(HYBRID).unwrap(), (716_800 * 512, vec![]));
        let gpt = r#"{"partitiontable": {"label": "gpt", "partitions": [
            {"node": "/dev/nvme0n1p1", "start": 64, "size": 1000, "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
            {"node": "/dev/nvme0n1p12", "start": 4096, "size": 8192, "type": "6a898cc3-1dd2-11b2-99a6-080020736631"}]}}"#;
        assert_eq!(medium_extent(gpt).unwrap(), (1064 * 512, vec![12]));
        let only_zfs = r#"{"partitiontable": {"label": "dos", "partitions": [
            {"node": "sdb1", "start": 2048, "size": 8192, "type": "bf"}]}}"#;
        assert!(medium_extent(only_zfs).is_err());
    }

    #[test]
    fn the_start_is_rounded_up_to_a_mib() {
        let table = Table {
            label: Label::Dos,
            sector_size: 512,
            last_lba: None,
            partitions: vec![(64, 1000)],
        };
        let free = free_after_last(&table, 1 << 21, None).unwrap();
        assert_eq!(free.start, 2048);
    }

    #[test]
    fn a_gpt_keeps_room_for_its_backup_at_the_disks_end() {
        let json = r#"{"partitiontable": {"label": "gpt", "sectorsize": 512,
            "firstlba": 64, "lastlba": 716766,
            "partitions": [{"start": 64, "size": 716700}]}}"#;
        let table = parse_table(json).unwrap();
        assert_eq!(table.last_lba, Some(716_766));
        let free = free_after_last(&table, 2_097_152, None).unwrap();
        assert_eq!(free.start, 716_800);
        // Up to the backup's 34 sectors, in whole MiB.
        assert_eq!(free.sectors, 673 * 2048);
        assert!(free.start + free.sectors <= 2_097_152 - 34);
    }

    #[test]
    fn no_room_is_said_in_mib() {
        let table = parse_table(HYBRID).unwrap();
        let err = free_after_last(&table, 716_800 + 2048 * 10, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "10 MiB are free after its last partition; persistence needs at least 64 MiB"
        );
        let full = Table {
            label: Label::Dos,
            sector_size: 512,
            last_lba: None,
            partitions: vec![(2048, 10); 4],
        };
        let err = free_after_last(&full, 1 << 30, None).unwrap_err();
        assert!(err.to_string().contains("four partitions"), "{err}");
        let err = parse_table(r#"{"partitiontable": {"label": "sun"}}"#).unwrap_err();
        assert!(err.to_string().contains("sun"), "{err}");
    }

    /// sfdisk itself, on a disk image (no root, no loop device): the line appended lands where
    /// the arithmetic said, and the table's other partitions are unchanged.
    #[test]
    fn sfdisk_appends_where_the_arithmetic_says() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let image = crate::testing::image("stick.img", 256 << 20);
        let sfdisk = |image: &std::path::Path, args: &[&str], input: &str| {
            let mut child = Command::new("sfdisk")
                .args(args)
                .arg(image)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("sfdisk (package fdisk) is needed by this test");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        sfdisk(
            &image,
            &["--quiet"],
            "label: dos\nstart=2048, size=100000, type=83\n",
        );
        let table = parse_table(&sfdisk(&image, &["--json"], "")).unwrap();
        let free = free_after_last(&table, (256 << 20) / 512, None).unwrap();
        sfdisk(
            &image,
            &["--quiet", "--append", "--wipe", "never"],
            &append_script(&table, free),
        );
        let after = parse_table(&sfdisk(&image, &["--json"], "")).unwrap();
        assert_eq!(
            after.partitions,
            vec![(2048, 100_000), (free.start, free.sectors)]
        );
        assert_eq!(free.start, 102_400);
        // A blank disk's new table: one partition, from the first MiB to the GPT's backup.
        let blank = crate::testing::image("blank.img", 256 << 20);
        sfdisk(&blank, &["--quiet"], &whole_disk_script());
        let table = parse_table(&sfdisk(&blank, &["--json"], "")).unwrap();
        assert_eq!(table.label, Label::Gpt);
        let [(start, size)] = table.partitions[..] else {
            panic!("{:?}", table.partitions);
        };
        let end = start + size;
        assert_eq!(start, 2048);
        assert!(end <= (256 << 20) / 512 - 34 && end > (256 << 20) / 512 - 34 - 2048);
    }
}
