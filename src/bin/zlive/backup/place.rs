//! Where a backup goes or a restore comes from, as zlive works with it: a dataset on a pool
//! of this machine or of an ssh host (zfs runs there, with the user's own ssh set-up), a
//! directory of streams, or one stream file.

use crate::exec::run;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use zlive::backup_plan::{self, Place, StreamHeader};
use zlive::names::Dataset;

/// Where the `zfs` commands for a destination run.
#[derive(Debug, Clone)]
pub enum Side {
    Local,
    Ssh { host: String, port: Option<u16> },
}

impl Side {
    /// `zfs ARGS` on this side (over ssh, each argument quoted for the remote shell).
    pub fn zfs(&self, args: &[&str]) -> Command {
        match self {
            Side::Local => {
                let mut c = Command::new("zfs");
                c.args(args);
                c
            }
            Side::Ssh { host, port } => {
                let mut c = Command::new("ssh");
                if let Some(p) = port {
                    c.args(["-p", &p.to_string()]);
                }
                let quoted: Vec<String> = args.iter().map(|a| quote(a)).collect();
                c.arg(host)
                    .arg("--")
                    .arg(format!("zfs {}", quoted.join(" ")));
                c
            }
        }
    }

    fn name(&self) -> String {
        match self {
            Side::Local => "this machine".to_owned(),
            Side::Ssh { host, .. } => host.clone(),
        }
    }
}

fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// A destination, opened for one volume.
#[derive(Debug, Clone)]
pub enum Target {
    Zfs { side: Side, dataset: String },
    Dir(PathBuf),
    File(PathBuf),
}

impl Target {
    pub fn open(place: &Place, volume: &Dataset) -> Result<Target> {
        Ok(match place {
            Place::Pool { pool, .. } => {
                if pool == volume.pool().as_str() {
                    bail!(
                        "pool:{pool} is the pool of {volume} itself: a backup goes to another disk"
                    );
                }
                let (ok, _) = run(Command::new("zpool").args(["list", "-H", "-o", "name", pool]))?;
                if !ok {
                    bail!("pool {pool} is not imported on this machine (zpool import {pool})");
                }
                Target::Zfs {
                    side: Side::Local,
                    dataset: place.dataset_for(volume).expect("a pool's dataset"),
                }
            }
            Place::Ssh { host, port, .. } => Target::Zfs {
                side: Side::Ssh {
                    host: host.clone(),
                    port: *port,
                },
                dataset: place.dataset_for(volume).expect("an ssh dataset"),
            },
            Place::File(path)
                if path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/') =>
            {
                Target::Dir(path.clone())
            }
            Place::File(path) => Target::File(path.clone()),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Zfs {
                side: Side::Local,
                dataset,
            } => format!("dataset {dataset}"),
            Target::Zfs { side, dataset } => format!("dataset {dataset} on {}", side.name()),
            Target::Dir(p) => format!("directory {}", p.display()),
            Target::File(p) => format!("file {}", p.display()),
        }
    }

    /// What the destination holds of `volume`: `None` when nothing yet; else its snapshots (or
    /// streams) as `(name, guid)`, oldest first.
    pub fn holds(&self, volume: &Dataset) -> Result<Option<Vec<(String, u64)>>> {
        match self {
            Target::Zfs { side, dataset } => zfs_holds(side, dataset),
            Target::Dir(dir) => {
                let held: Vec<(String, u64)> = streams(dir, volume)?
                    .into_iter()
                    .map(|(name, h)| (name, h.to_guid))
                    .collect();
                Ok((!held.is_empty()).then_some(held))
            }
            Target::File(path) if path.exists() => bail!(
                "{} exists; a file holds one full stream and is never overwritten: name a directory (ending in /) for incremental backups, or remove it",
                path.display()
            ),
            Target::File(_) => Ok(None),
        }
    }

    /// A receive's resume token, when an interrupted transfer left one.
    pub fn resume_token(&self) -> Result<Option<String>> {
        let Target::Zfs { side, dataset } = self else {
            return Ok(None);
        };
        let (ok, text) =
            run(&mut side.zfs(&["get", "-H", "-o", "value", "receive_resume_token", dataset]))?;
        let token = text.trim();
        Ok((ok && !token.is_empty() && token != "-").then(|| token.to_owned()))
    }

    /// The space the destination has for a stream, in bytes.
    pub fn available(&self) -> Result<u64> {
        match self {
            Target::Zfs { side, dataset } => {
                // The dataset, or where it will be made.
                let mut at = dataset.as_str();
                loop {
                    let (ok, text) =
                        run(&mut side.zfs(&["get", "-H", "-p", "-o", "value", "available", at]))?;
                    if ok {
                        return text
                            .trim()
                            .parse()
                            .with_context(|| format!("available space of {at}: {text}"));
                    }
                    match at.rsplit_once('/') {
                        Some((parent, _)) => at = parent,
                        None => bail!("{}: {}", side.name(), text.replace('\n', " ")),
                    }
                }
            }
            Target::Dir(p) | Target::File(p) => {
                let dir = match self {
                    Target::Dir(_) => p.clone(),
                    _ => p
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(Path::new("."))
                        .to_owned(),
                };
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("Failed to make {}", dir.display()))?;
                let st = nix::sys::statvfs::statvfs(&dir).with_context(|| {
                    format!("Failed to read the free space of {}", dir.display())
                })?;
                Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
            }
        }
    }
}

/// `zfs list` of a dataset's snapshots or bookmarks (`types`) on a side, oldest first, as
/// `NAME GUID TXG` lines: whether it worked, and what it printed.
pub fn listing(side: &Side, types: &str, dataset: &str) -> Result<(bool, String)> {
    run(&mut side.zfs(&[
        "list",
        "-H",
        "-p",
        "-t",
        types,
        "-d",
        "1",
        "-s",
        "createtxg",
        "-o",
        "name,guid,createtxg",
        dataset,
    ]))
    .with_context(|| format!("Failed to run zfs on {}", side.name()))
}

/// A dataset's snapshots as `(name, guid)`, oldest first; `None` when there is no such
/// dataset. Failing to reach the side is an error that says so.
pub fn zfs_holds(side: &Side, dataset: &str) -> Result<Option<Vec<(String, u64)>>> {
    let (ok, text) = listing(side, "snapshot", dataset)?;
    if !ok {
        if text.contains("does not exist") {
            return Ok(None);
        }
        if matches!(side, Side::Ssh { .. }) && !text.contains("zfs") {
            bail!(
                "cannot reach {} over ssh: {}",
                side.name(),
                text.replace('\n', " ")
            );
        }
        bail!(
            "zfs list {dataset} on {}: {}",
            side.name(),
            text.replace('\n', " ")
        );
    }
    Ok(Some(
        backup_plan::marks(&text)
            .into_iter()
            .map(|m| (m.name, m.guid))
            .collect(),
    ))
}

/// Every stream in a directory, oldest first (by name): `(path, header)`; none when the
/// directory cannot be read (the first backup to it makes it).
pub fn all_streams(dir: &Path) -> Result<Vec<(PathBuf, StreamHeader)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(found);
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_some_and(|x| x == "zstream") {
            let header = read_header(&path)?;
            found.push((path, header));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The streams of `volume` in a directory, oldest first: `(file name, header)`.
pub fn streams(dir: &Path, volume: &Dataset) -> Result<Vec<(String, StreamHeader)>> {
    Ok(all_streams(dir)?
        .into_iter()
        .filter(|(_, h)| h.volume() == volume.as_str())
        .map(|(p, h)| (p.to_string_lossy().into_owned(), h))
        .collect())
}

/// A stream file's header.
pub fn read_header(path: &Path) -> Result<StreamHeader> {
    use std::io::Read;
    let mut head = vec![0u8; 312];
    let mut file =
        std::fs::File::open(path).with_context(|| format!("Failed to open {}", path.display()))?;
    file.read_exact(&mut head)
        .ok()
        .and_then(|()| backup_plan::stream_header(&head))
        .with_context(|| format!("{} is not a zfs send stream", path.display()))
}

/// The prefix of a volume's stream files: `POOL-VOLUME`.
pub fn stream_prefix(volume: &Dataset) -> String {
    format!("{}-{}", volume.pool().as_str(), volume.leaf())
}
