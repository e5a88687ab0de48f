//! Backups of persistence with `zfs send`, the pure part: where a backup goes (parsed from what
//! the user typed, never passed to a shell unchecked), which snapshot a destination already
//! has (the base of the next incremental), the chain of streams in a directory, the header of
//! a stream file (what it holds, checked after writing), and the progress line.
//!
//! The naming scheme, which replication tools can rely on: a backup snapshot is
//! `VOLUME@zlive-TIME` (kind `backup` in `org.zlive:snapshot`), its bookmark `VOLUME#zlive-TIME`;
//! a directory of streams holds `LABEL-TIME.full.zstream` and `LABEL-TIME.incr.zstream`.

use crate::names::Dataset;
use std::path::PathBuf;
use std::time::Duration;

/// Where a backup goes, or a restore comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A file holding one stream, or (an existing directory, or a path ending in `/`) a
    /// directory of streams.
    File(PathBuf),
    /// A pool this machine has imported: `pool:NAME` (the dataset is named after the volume)
    /// or `pool:NAME/DATASET` (exactly that one).
    Pool {
        pool: String,
        dataset: Option<Dataset>,
    },
    /// A ZFS machine over ssh: `ssh://[USER@]HOST[:PORT]/POOL/DATASET`.
    Ssh {
        /// `USER@HOST` or `HOST`, as ssh takes it.
        host: String,
        port: Option<u16>,
        dataset: Dataset,
    },
}

impl Place {
    pub fn parse(text: &str) -> Result<Place, String> {
        if let Some(rest) = text.strip_prefix("pool:") {
            let (pool, dataset) = match rest.split_once('/') {
                Some((pool, _)) => (pool, Some(Dataset::parse(rest)?)),
                None => (rest, None),
            };
            crate::names::PoolName::parse(pool)?;
            return Ok(Place::Pool {
                pool: pool.to_owned(),
                dataset,
            });
        }
        if let Some(rest) = text.strip_prefix("ssh://") {
            return parse_ssh(rest);
        }
        if text.contains("://") {
            return Err(format!(
                "{text}: not a destination zlive knows (a file or directory, pool:NAME[/DATASET], or ssh://[USER@]HOST/POOL/DATASET)"
            ));
        }
        if text.is_empty() {
            return Err("an empty destination".to_owned());
        }
        Ok(Place::File(PathBuf::from(text)))
    }

    /// The dataset a backup of `volume` goes to, or a restore reads (the file's is `None`).
    pub fn dataset_for(&self, volume: &Dataset) -> Option<String> {
        match self {
            Place::File(_) => None,
            Place::Pool {
                dataset: Some(d), ..
            }
            | Place::Ssh { dataset: d, .. } => Some(d.to_string()),
            Place::Pool {
                pool,
                dataset: None,
            } => Some(format!(
                "{pool}/{}-{}",
                volume.pool().as_str(),
                volume.leaf()
            )),
        }
    }
}

/// `[USER@]HOST[:PORT]/POOL/DATASET`. A host that ssh could read as an option (a leading `-`)
/// or that holds anything but a host name's characters is refused.
fn parse_ssh(rest: &str) -> Result<Place, String> {
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("ssh://{rest}: no POOL/DATASET after the host"))?;
    let (user_host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| format!("ssh://{rest}: port {p:?} is not a number"))?,
            ),
        ),
        None => (authority, None),
    };
    let (user, host) = match user_host.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, user_host),
    };
    let word_ok = |w: &str| {
        !w.is_empty()
            && !w.starts_with('-')
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !word_ok(host) || user.is_some_and(|u| !word_ok(u)) {
        return Err(format!(
            "ssh://{rest}: {user_host:?} is not a user and host name zlive passes to ssh"
        ));
    }
    let dataset = Dataset::parse(path)?;
    if !path.contains('/') {
        return Err(format!(
            "ssh://{rest}: name a dataset below the pool (POOL/DATASET), not the pool itself"
        ));
    }
    Ok(Place::Ssh {
        host: user_host.to_owned(),
        port,
        dataset,
    })
}

/// A snapshot or bookmark of the volume on the stick: its full name, GUID and creation txg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    pub guid: u64,
    pub txg: u64,
}

/// `zfs list -H -p -o name,guid,createtxg` of snapshots and bookmarks, as marks; lines that
/// do not parse are left out.
pub fn marks(text: &str) -> Vec<Mark> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, guid, txg) = (f.next()?, f.next()?, f.next()?);
            Some(Mark {
                name: name.trim().to_owned(),
                guid: guid.trim().parse().ok()?,
                txg: txg.trim().parse().ok()?,
            })
        })
        .collect()
}

/// The estimated size `zfs send -nP` prints (its `size` line).
pub fn send_estimate(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once('\t')?;
        (key.trim() == "size").then(|| value.trim().parse().ok())?
    })
}

/// What the next backup sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The destination has nothing of this volume: a full stream.
    Full,
    /// Incremental from this snapshot or bookmark of the stick, which the destination has.
    From(String),
    /// The destination holds something this stick never sent: its newest snapshot (name and
    /// GUID), or `None` when it holds a dataset with no snapshot at all.
    Foreign(Option<(String, u64)>),
}

/// The base of the next backup: the newest of the stick's snapshots and bookmarks whose GUID
/// the destination has. `dest` is `None` when the destination has no such dataset (or
/// directory) yet; its entries are `(name, guid)`, oldest first.
pub fn choose_base(stick: &[Mark], dest: Option<&[(String, u64)]>) -> Base {
    let Some(dest) = dest else {
        return Base::Full;
    };
    let newest_common = stick
        .iter()
        .filter(|m| dest.iter().any(|(_, g)| *g == m.guid))
        .max_by_key(|m| m.txg);
    match newest_common {
        Some(m) => Base::From(m.name.clone()),
        None => Base::Foreign(dest.last().cloned()),
    }
}

/// The kind of file system a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Dataset,
    Zvol,
    Other(u32),
}

/// What the first record of a `zfs send` stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub to_guid: u64,
    /// 0 for a full stream.
    pub from_guid: u64,
    /// `POOL/VOLUME@SNAPSHOT` as the sender named it.
    pub to_name: String,
    pub kind: StreamKind,
}

impl StreamHeader {
    /// The volume the stream was sent from, `POOL/VOLUME`.
    pub fn volume(&self) -> &str {
        self.to_name.split('@').next().unwrap_or_default()
    }
}

const DRR_MAGIC: u64 = 0x2_F5BA_CBAC;

/// The stream's begin record (`struct dmu_replay_record`'s `drr_begin`, written in the
/// sender's byte order, which its magic tells); `None` when the bytes are not one.
pub fn stream_header(bytes: &[u8]) -> Option<StreamHeader> {
    let field = |at: usize, len: usize| bytes.get(at..at + len);
    let magic = u64::from_le_bytes(field(8, 8)?.try_into().ok()?);
    let little = match magic {
        DRR_MAGIC => true,
        m if m.swap_bytes() == DRR_MAGIC => false,
        _ => return None,
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = field(at, 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |at: usize| {
        let b: [u8; 8] = field(at, 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    // DRR_BEGIN is record type 0.
    if u32_at(0)? != 0 {
        return None;
    }
    let kind = match u32_at(32)? {
        2 => StreamKind::Dataset,
        3 => StreamKind::Zvol,
        other => StreamKind::Other(other),
    };
    let name = field(56, 256)?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(StreamHeader {
        to_guid: u64_at(40)?,
        from_guid: u64_at(48)?,
        to_name: String::from_utf8_lossy(&name[..end]).into_owned(),
        kind,
    })
}

/// A stream file's name in a directory of streams.
pub fn stream_file_name(label: &str, time: &str, full: bool) -> String {
    format!(
        "{label}-{time}.{}.zstream",
        if full { "full" } else { "incr" }
    )
}

/// The order a directory's streams are received in: the full stream, then each incremental
/// whose base is the one before. `streams` are `(file name, header)`; the chain ends at the
/// newest stream that continues it. An error names a gap or a missing full stream.
pub fn stream_chain(streams: &[(String, StreamHeader)]) -> Result<Vec<usize>, String> {
    let full: Vec<usize> = (0..streams.len())
        .filter(|&i| streams[i].1.from_guid == 0)
        .collect();
    let Some(&first) = full.last() else {
        return Err("no full stream (*.full.zstream) to start from".to_owned());
    };
    let mut chain = vec![first];
    loop {
        let tip = streams[*chain.last().expect("one at least")].1.to_guid;
        match (0..streams.len()).find(|&i| streams[i].1.from_guid == tip && !chain.contains(&i)) {
            Some(next) => chain.push(next),
            None => break,
        }
    }
    Ok(chain)
}

/// The line progress is shown with: bytes sent, rate, and time left when the size is known.
pub fn progress_line(sent: u64, estimate: Option<u64>, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let rate = sent as f64 / seconds;
    let mut line = format!("{} sent", size_text(sent));
    if let Some(total) = estimate.filter(|&t| t > 0) {
        let percent = (sent as f64 * 100.0 / total as f64).min(100.0);
        line.push_str(&format!(" of about {} ({percent:.0} %)", size_text(total)));
    }
    line.push_str(&format!(", {}/s", size_text(rate as u64)));
    if let Some(total) = estimate.filter(|&t| t > sent && rate > 0.0) {
        let left = (total - sent) as f64 / rate;
        line.push_str(&format!(", about {} left", duration_text(left)));
    }
    line
}

/// Bytes as people read them: `812 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn duration_text(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// After how many days without a backup `zlive status` reminds the user.
pub const REMIND_AFTER_DAYS: u64 = 30;

/// The newest of a volume's backup bookmarks (`VOLUME#zlive-TIME`), as its time and its age
/// in whole days at `now`; `None` when it has none.
pub fn newest_backup(bookmarks: &[String], now: u64) -> Option<(String, u64)> {
    bookmarks
        .iter()
        .filter_map(|b| {
            let stamp = b.split_once("#zlive-")?.1.get(..16)?;
            let at = crate::utc::Civil::parse_stamp(stamp)?.to_unix();
            Some((stamp.to_owned(), at))
        })
        .max_by_key(|(_, at)| *at)
        .map(|(stamp, at)| (stamp, now.saturating_sub(at) / 86_400))
}

/// What `zlive status` says of a volume's backups: when the newest was made, and a reminder
/// when there is none or it is older than [`REMIND_AFTER_DAYS`].
pub fn backup_reminder(volume: &str, newest: Option<&(String, u64)>) -> String {
    match newest {
        None => {
            format!("no backup of {volume} yet: zlive backup DEST makes one (zlive(8), BACKUP)")
        }
        Some((stamp, days)) if *days > REMIND_AFTER_DAYS => format!(
            "the newest backup of {volume} is {days} days old ({stamp}): time for zlive backup DEST"
        ),
        Some((stamp, days)) => format!("{volume} was last backed up {days} days ago ({stamp})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_older_than_a_month_is_a_reminder() {
        let now = crate::utc::Civil::parse_stamp("20261207T120000Z")
            .unwrap()
            .to_unix();
        let marks = vec![
            "z/p#zlive-20261101T000000Z".to_owned(),
            "z/p#zlive-20261001T000000Z".to_owned(),
            "z/p#other".to_owned(),
        ];
        let newest = newest_backup(&marks, now);
        assert_eq!(newest, Some(("20261101T000000Z".to_owned(), 36)));
        assert!(backup_reminder("z/p", newest.as_ref()).contains("36 days old"));
        let recent = newest_backup(&marks[..1], now - 30 * 86_400);
        assert_eq!(
            backup_reminder("z/p", recent.as_ref()),
            "z/p was last backed up 6 days ago (20261101T000000Z)"
        );
        assert!(backup_reminder("z/p", None).starts_with("no backup of z/p yet"));
        assert_eq!(newest_backup(&marks[2..], now), None);
    }

    #[test]
    fn destinations_are_parsed_and_hostile_hosts_refused() {
        assert_eq!(
            Place::parse("/media/usb/backups/").unwrap(),
            Place::File("/media/usb/backups/".into())
        );
        assert_eq!(
            Place::parse("pool:bak").unwrap(),
            Place::Pool {
                pool: "bak".into(),
                dataset: None
            }
        );
        let pool = Place::parse("pool:bak/sticks/mine").unwrap();
        let volume = Dataset::parse("zlive/persistence").unwrap();
        assert_eq!(pool.dataset_for(&volume).unwrap(), "bak/sticks/mine");
        assert_eq!(
            Place::parse("pool:bak")
                .unwrap()
                .dataset_for(&volume)
                .unwrap(),
            "bak/zlive-persistence"
        );
        assert_eq!(
            Place::parse("ssh://me@server.example:2222/tank/sticks").unwrap(),
            Place::Ssh {
                host: "me@server.example".into(),
                port: Some(2222),
                dataset: Dataset::parse("tank/sticks").unwrap()
            }
        );
        for bad in [
            "ssh://-oProxyCommand=evil/tank/x",
            "ssh://host;reboot/tank/x",
            "ssh://host/tank",
            "ssh://host",
            "ssh://me@/tank/x",
            "ssh://host:port/tank/x",
            "ssh://host/tank/x;rm",
            "pool:",
            "pool:bak/../x",
            "http://host/x",
            "",
        ] {
            assert!(Place::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    fn mark(name: &str, guid: u64, txg: u64) -> Mark {
        Mark {
            name: name.into(),
            guid,
            txg,
        }
    }

    #[test]
    fn the_base_is_the_newest_thing_both_sides_have() {
        let stick = [
            mark("z/p#zlive-1", 11, 5),
            mark("z/p@zlive-2", 22, 9),
            mark("z/p#zlive-2", 22, 9),
            mark("z/p@zlive-3", 33, 12),
        ];
        assert_eq!(choose_base(&stick, None), Base::Full);
        let dest = [
            ("b/p@zlive-1".to_owned(), 11),
            ("b/p@zlive-2".to_owned(), 22),
        ];
        assert!(
            matches!(choose_base(&stick, Some(&dest)), Base::From(n) if n.ends_with("zlive-2"))
        );
        let old = [("b/p@zlive-1".to_owned(), 11)];
        assert_eq!(
            choose_base(&stick, Some(&old)),
            Base::From("z/p#zlive-1".into())
        );
        let other = [("b/p@x".to_owned(), 99)];
        assert_eq!(
            choose_base(&stick, Some(&other)),
            Base::Foreign(Some(("b/p@x".into(), 99)))
        );
        assert_eq!(choose_base(&stick, Some(&[])), Base::Foreign(None));
    }

    fn header(kind: u32, to: u64, from: u64, name: &str) -> Vec<u8> {
        let mut b = vec![0u8; 312];
        b[8..16].copy_from_slice(&DRR_MAGIC.to_le_bytes());
        b[32..36].copy_from_slice(&kind.to_le_bytes());
        b[40..48].copy_from_slice(&to.to_le_bytes());
        b[48..56].copy_from_slice(&from.to_le_bytes());
        b[56..56 + name.len()].copy_from_slice(name.as_bytes());
        b
    }

    #[test]
    fn a_stream_header_says_what_it_holds() {
        let h = stream_header(&header(3, 7, 0, "zlive/p@zlive-1")).unwrap();
        assert_eq!(
            h,
            StreamHeader {
                to_guid: 7,
                from_guid: 0,
                to_name: "zlive/p@zlive-1".into(),
                kind: StreamKind::Zvol
            }
        );
        assert_eq!(
            stream_header(&header(2, 8, 7, "z/d@s")).unwrap().kind,
            StreamKind::Dataset
        );
        // Big-endian senders.
        let mut big = vec![0u8; 312];
        big[8..16].copy_from_slice(&DRR_MAGIC.to_be_bytes());
        big[32..36].copy_from_slice(&2u32.to_be_bytes());
        big[40..48].copy_from_slice(&5u64.to_be_bytes());
        assert_eq!(stream_header(&big).unwrap().to_guid, 5);
        assert_eq!(stream_header(b"not a stream"), None);
        assert_eq!(stream_header(&header(2, 1, 0, "x")[..100]), None);
        let mut not_begin = header(2, 1, 0, "x");
        not_begin[0] = 1;
        assert_eq!(stream_header(&not_begin), None);
    }

    #[test]
    fn streams_chain_from_the_full_one() {
        let h = |to, from| StreamHeader {
            to_guid: to,
            from_guid: from,
            to_name: String::new(),
            kind: StreamKind::Dataset,
        };
        let streams = vec![
            ("b".to_owned(), h(2, 1)),
            ("a".to_owned(), h(1, 0)),
            ("c".to_owned(), h(3, 2)),
            ("stray".to_owned(), h(9, 8)),
        ];
        assert_eq!(stream_chain(&streams).unwrap(), vec![1, 0, 2]);
        assert!(stream_chain(&streams[2..]).is_err());
    }

    #[test]
    fn progress_says_bytes_rate_and_time_left() {
        let line = progress_line(10 << 20, Some(40 << 20), Duration::from_secs(5));
        assert_eq!(
            line,
            "10.0 MiB sent of about 40.0 MiB (25 %), 2.0 MiB/s, about 15 s left"
        );
        assert_eq!(
            progress_line(512, None, Duration::from_secs(1)),
            "512 B sent, 512 B/s"
        );
        assert_eq!(size_text(3 << 30), "3.0 GiB");
        assert_eq!(duration_text(3725.0), "1 h 2 min");
    }

    #[test]
    fn listings_and_estimates_are_read() {
        let listed = "z/p@zlive-1\t123\t40\nz/p#zlive-1\t123\t40\ngarbage\nz/p@x\tnot\t1\n";
        assert_eq!(
            marks(listed),
            vec![mark("z/p@zlive-1", 123, 40), mark("z/p#zlive-1", 123, 40)]
        );
        assert_eq!(send_estimate("full\tz/p@s\t4096\nsize\t4096\n"), Some(4096));
        assert_eq!(send_estimate("incremental\tz/p#a\tz/p@b\t10"), None);
    }
}
