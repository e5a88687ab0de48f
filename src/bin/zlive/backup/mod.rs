//! `zlive backup` and `zlive restore`: persistence sent with `zfs send` to a file or a
//! directory of streams, a pool on another disk, or a ZFS machine over ssh; incremental from
//! a bookmark the stick keeps, raw when the volume is encrypted, resumed when interrupted, and
//! checked by GUID on arrival. A restore receives the newest state into a pool.

mod clone;
mod freeze;
mod in_place;
mod place;
mod source;
mod transfer;

use crate::cli::args::{BackupArgs, RestoreArgs};
use crate::exec::run;
use anyhow::{anyhow, bail, Context, Result};
use place::{Side, Target};
use source::Source;
use std::process::Command;
use transfer::Sink;
use zlive::backup_plan::{choose_base, send_estimate, size_text, Base, Place};

pub use clone::clone;

/// `zlive backup DEST`.
pub fn backup(args: &BackupArgs) -> Result<bool> {
    let place = Place::parse(&args.destination).map_err(|e| anyhow!(e))?;
    let source = source::find(args.volume.as_deref(), &args.label)?;
    let target = Target::open(&place, &source.dataset)?;
    println!(
        "Backing up {} ({}{}) to {}",
        source.dataset,
        if source.zvol {
            "ext4 on a zvol"
        } else {
            "a dataset"
        },
        if source.encrypted { ", encrypted" } else { "" },
        target.describe()
    );
    if let Some(token) = target.resume_token()? {
        resume(&source, &target, &token)?;
    }
    let held = target.holds(&source.dataset)?;
    let base = choose_base(&source::marks(&source.dataset), held.as_deref());
    if let Base::Foreign(newest) = &base {
        bail!("{}", foreign(&source, &target, newest.as_ref()));
    }
    let snapshot = source::snapshot(&source, source::BACKUP_KIND)?;
    let sent = send_checked(&source, &target, &base, &snapshot)?;
    let bookmark = source::mark_sent(&source, &snapshot)?;
    summary(
        &source,
        &target,
        &base,
        &snapshot,
        &bookmark,
        sent,
        &args.destination,
    );
    Ok(true)
}

/// Send the new snapshot once the destination is known to have room for it, then check that
/// it arrived whole. A refusal or a failed file write leaves the stick as it was (the
/// snapshot goes); a failed receive keeps it, for the next run to resume.
fn send_checked(
    source: &Source,
    target: &Target,
    base: &Base,
    snapshot: &str,
) -> Result<(u64, f64)> {
    let from = match base {
        Base::From(from) => Some(from.as_str()),
        _ => None,
    };
    // The same stream, estimated (`-n -P`) and then sent.
    let mut stream = send_flags(source.encrypted);
    if let Some(from) = from {
        stream.extend(["-i", from]);
    }
    stream.push(snapshot);
    let (_, said) = run(Command::new("zfs").args(["send", "-n", "-P"]).args(&stream))?;
    let estimate = send_estimate(&said).unwrap_or(0);
    let available = target.available()?;
    let needed = estimate + estimate / 20 + (1 << 20);
    if needed > available {
        source::drop_unsent(snapshot);
        bail!(
            "{} has {} free; this backup needs about {} ({} stream). Nothing was written, and the stick is as it was.",
            target.describe(),
            size_text(available),
            size_text(needed),
            if from.is_some() { "an incremental" } else { "a full" }
        );
    }
    let mut send = Command::new("zfs");
    send.arg("send").args(&stream);
    let started = std::time::Instant::now();
    let sink = sink(source, target, snapshot, from.is_none())?;
    let written = match &sink {
        Sink::File(path) => Some(path.clone()),
        Sink::Receiver(_) => None,
    };
    let sent = transfer::transfer(send, sink, Some(estimate)).map_err(|e| {
        match target {
            Target::Zfs { .. } => e.context(format!(
                "the transfer of {snapshot} stopped; what arrived is kept, and the next zlive backup to the same place resumes it"
            )),
            _ => {
                source::drop_unsent(snapshot);
                e.context("the stream was not written whole; nothing on the stick changed")
            }
        }
    })?;
    verify(source, target, snapshot, sent, written.as_deref())?;
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// `-w` (raw: never decrypted) for an encrypted volume; otherwise blocks as they are stored.
fn send_flags<'a>(encrypted: bool) -> Vec<&'a str> {
    match encrypted {
        true => vec!["-w"],
        false => vec!["-L", "-e", "-c"],
    }
}

/// Where the stream goes: `zfs receive -s` (resumable), kept unmounted and, for a zvol,
/// without a device (its file system label must not be seen twice by a boot); or a file.
fn sink(source: &Source, target: &Target, snapshot: &str, full: bool) -> Result<Sink> {
    Ok(match target {
        Target::Zfs { side, dataset } => {
            let backup_of = format!("org.zlive:backup-of={}", source.dataset);
            let mut args = vec!["receive", "-s", "-u"];
            if full {
                args.extend(["-o", &backup_of]);
                args.extend(match source.zvol {
                    true => ["-o", "volmode=none"],
                    false => ["-o", "canmount=noauto"],
                });
            }
            args.push(dataset);
            Sink::Receiver(side.zfs(&args))
        }
        Target::File(path) => Sink::File(path.clone()),
        Target::Dir(dir) => {
            let time = snapshot.rsplit_once("@zlive-").map_or("backup", |(_, t)| t);
            let name = zlive::backup_plan::stream_file_name(
                &place::stream_prefix(&source.dataset),
                time,
                full,
            );
            // A file an interrupted run left: a file stream cannot be resumed.
            let _ = std::fs::remove_file(dir.join(format!("{name}.part")));
            Sink::File(dir.join(name))
        }
    })
}

/// The snapshot arrived: the destination's newest snapshot (or the stream file's header) has
/// the stick's GUID.
fn verify(
    source: &Source,
    target: &Target,
    snapshot: &str,
    sent: u64,
    file: Option<&std::path::Path>,
) -> Result<()> {
    let guid = source::guid(snapshot)?;
    let found = match (target, file) {
        (_, Some(path)) => Some(checked_file(path, sent)?),
        (_, None) => target
            .holds(&source.dataset)?
            .and_then(|h| h.last().map(|(_, g)| *g)),
    };
    if found != Some(guid) {
        bail!(
            "{} does not hold {snapshot} after the transfer: expected GUID {guid}, found {}",
            target.describe(),
            found.map_or("none".to_owned(), |g| g.to_string())
        );
    }
    Ok(())
}

/// A stream file's GUID, once its length is what was sent.
fn checked_file(path: &std::path::Path, sent: u64) -> Result<u64> {
    let len = std::fs::metadata(path)?.len();
    if len != sent {
        bail!("{} holds {len} bytes, {sent} were sent", path.display());
    }
    Ok(place::read_header(path)?.to_guid)
}

/// Finish the transfer an earlier run left, from its receive token, and bookmark what it
/// sent.
fn resume(source: &Source, target: &Target, token: &str) -> Result<()> {
    println!(
        "An earlier transfer to {} was interrupted: resuming it",
        target.describe()
    );
    let Target::Zfs { side, dataset } = target else {
        return Ok(());
    };
    let (_, said) = run(Command::new("zfs").args(["send", "-n", "-P", "-t", token]))?;
    let mut send = Command::new("zfs");
    send.args(["send", "-t", token]);
    let sink = Sink::Receiver(side.zfs(&["receive", "-s", "-u", dataset]));
    transfer::transfer(send, sink, send_estimate(&said)).with_context(|| {
        format!("resuming the interrupted transfer (to give it up instead: zfs receive -A {dataset} where it was received)")
    })?;
    let arrived = target
        .holds(&source.dataset)?
        .and_then(|h| h.last().cloned())
        .context("the resumed transfer left no snapshot")?;
    let on_stick = source::marks(&source.dataset)
        .into_iter()
        .find(|m| m.guid == arrived.1 && m.name.contains('@'));
    if let Some(snapshot) = on_stick {
        source::mark_sent(source, &snapshot.name)?;
        println!(
            "Resumed and finished: {} (GUID {})",
            snapshot.name, arrived.1
        );
    }
    Ok(())
}

/// Why a destination that holds something else is refused.
fn foreign(source: &Source, target: &Target, newest: Option<&(String, u64)>) -> String {
    let ours = source::marks(&source.dataset)
        .into_iter()
        .rfind(|m| m.name.contains('#'))
        .map_or("none yet".to_owned(), |m| {
            format!("{} (GUID {})", m.name, m.guid)
        });
    let found = newest.map_or("a dataset with no snapshot".to_owned(), |(n, g)| {
        format!("{n} (GUID {g})")
    });
    format!(
        "{} holds a different stream: expected a backup of this stick's {} (its newest bookmark: {ours}), found {found}. Nothing was written; choose another destination.",
        target.describe(),
        source.dataset
    )
}

fn summary(
    source: &Source,
    target: &Target,
    base: &Base,
    snapshot: &str,
    bookmark: &str,
    sent: (u64, f64),
    destination: &str,
) {
    let how = match base {
        Base::From(from) => format!("incremental from {from}"),
        _ => "full".to_owned(),
    };
    println!(
        "Backed up {snapshot} ({how}) to {}: {} in {:.1} s; verified, the GUIDs match.",
        target.describe(),
        size_text(sent.0),
        sent.1
    );
    println!("The stick keeps bookmark {bookmark}: the next backup to this place is incremental from it.");
    if source.encrypted {
        println!("The volume is encrypted and was sent raw: the destination holds no key and no plaintext.");
    }
    let from = match target {
        Target::Zfs {
            dataset,
            side: Side::Local,
        } => format!("pool:{dataset}"),
        Target::Zfs {
            dataset,
            side: Side::Ssh { host, port },
        } => {
            format!(
                "ssh://{host}{}/{dataset}",
                port.map_or(String::new(), |p| format!(":{p}"))
            )
        }
        _ => destination.to_owned(),
    };
    println!("Restore it with: zlive restore {from} --to POOL");
}

/// `zlive restore SRC [--to POOL|DEVICE]`.
pub fn restore(args: &RestoreArgs) -> Result<bool> {
    let place = Place::parse(&args.source).map_err(|e| anyhow!(e))?;
    let plan = restore_plan(&place, args)?;
    let name = args.name.clone().unwrap_or_else(|| plan.leaf.clone());
    let Some(to) = &args.to else {
        return in_place::restore_here(plan, args);
    };
    if to.starts_with("/dev/") {
        let new = crate::create::onto::NewPool {
            onto: crate::create::onto::Onto::Device(to),
            pool: &args.pool,
            holding: format!("{} restored as {}/{name}", plan.from, args.pool),
            yes: args.yes,
            command: "zlive restore",
        };
        let mut plan = Some(plan);
        let made = crate::create::onto::make_filled(&new, &mut |pool| {
            let plan = plan.take().context("one restore per pool")?;
            receive(
                plan,
                &format!("{pool}/{name}"),
                &args.label,
                Landing::NewPool,
            )
        })?;
        if made {
            println!(
                "{} holds pool {} (exported): boot it, or import it with zpool import {}.",
                to, args.pool, args.pool
            );
        }
        return Ok(made);
    }
    let (ok, _) = run(Command::new("zpool").args(["list", "-H", "-o", "name", to]))?;
    if !ok {
        bail!("pool {to} is not imported (make it with zpool create or zlive create, or zpool import it; or name a blank device: --to /dev/...)");
    }
    let target = format!("{to}/{name}");
    if run(Command::new("zfs").args(["list", "-H", "-o", "name", &target]))?.0 {
        bail!("{target} exists; a restore never overwrites: name another with --name");
    }
    receive(plan, &target, &args.label, Landing::Imported)?;
    Ok(true)
}

/// Where a restore lands, and how it is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landing {
    /// A pool imported here: the volume is seen (labelled) at once.
    Imported,
    /// A pool made for it: unseen until its pool is exported.
    NewPool,
    /// Beside the volume in use: unseen until the next boot swaps it in.
    Waiting,
}

/// Receive the plan's streams into `target` and check the newest snapshot's GUID; then, but
/// for a restore that waits for the next boot, label a dataset.
fn receive(plan: RestorePlan, target: &str, label: &str, landing: Landing) -> Result<()> {
    println!("Restoring {} into {target}", plan.from);
    for (i, sender) in plan.senders.into_iter().enumerate() {
        let mut receive = Command::new("zfs");
        receive.args(["receive", "-u"]);
        if i == 0 {
            match landing {
                Landing::NewPool | Landing::Waiting => {
                    receive.args(crate::create::onto::hidden_volume_options(plan.zvol))
                }
                Landing::Imported if !plan.zvol => {
                    receive.args(crate::zfs::datasets::UPPER_LAYER_OPTIONS)
                }
                Landing::Imported => &mut receive,
            };
        }
        receive.arg(target);
        transfer::transfer(sender, Sink::Receiver(receive), None)
            .with_context(|| format!("restoring into {target}"))?;
    }
    let arrived = place::zfs_holds(&Side::Local, target)?.and_then(|h| h.last().map(|(_, g)| *g));
    if arrived != Some(plan.guid) {
        bail!(
            "{target} does not hold the backup's newest snapshot (GUID {}) after the restore",
            plan.guid
        );
    }
    if landing == Landing::Waiting {
        return Ok(());
    }
    if landing == Landing::NewPool {
        crate::create::onto::reveal(target, plan.zvol)?;
    }
    if !plan.zvol {
        let (ok, said) = run(Command::new("zfs").args([
            "set",
            &format!("{}={label}", zlive::tool_output::DATASET_LABEL),
            target,
        ]))?;
        if !ok {
            bail!("could not label {target}: {said}");
        }
    }
    println!(
        "Restored {} into {target}{}; verified, the GUIDs match. A boot with this pool finds it by its label {label}{}.",
        plan.from,
        if plan.zvol { " (ext4 on a zvol)" } else { "" },
        if plan.encrypted { " and asks for its passphrase" } else { "" }
    );
    Ok(())
}

/// What a restore sends, in order, and what it ends with.
struct RestorePlan {
    from: String,
    senders: Vec<Command>,
    /// The newest snapshot's GUID.
    guid: u64,
    leaf: String,
    zvol: bool,
    encrypted: bool,
}

fn restore_plan(place: &Place, args: &RestoreArgs) -> Result<RestorePlan> {
    let (side, dataset) = match place {
        Place::Pool {
            dataset: None,
            pool,
        } => bail!("name the backup's dataset: pool:{pool}/DATASET"),
        Place::Pool {
            dataset: Some(d), ..
        } => (Side::Local, d.to_string()),
        Place::Ssh {
            host,
            port,
            dataset,
        } => (
            Side::Ssh {
                host: host.clone(),
                port: *port,
            },
            dataset.to_string(),
        ),
        Place::File(path) => return file_restore_plan(path, args),
    };
    let get = |prop: &str| -> Result<String> {
        let (ok, text) = run(&mut side.zfs(&["get", "-H", "-o", "value", prop, &dataset]))?;
        if !ok {
            bail!("{dataset}: {}", text.replace('\n', " "));
        }
        Ok(text.trim().to_owned())
    };
    let kind = get("type")?;
    let encrypted = get("encryption")? != "off";
    let backup_of = get("org.zlive:backup-of")?;
    let newest = place::zfs_holds(&side, &dataset)?
        .and_then(|mut h| h.pop())
        .with_context(|| format!("{dataset} holds no snapshot to restore"))?;
    let mut send_args = vec!["send"];
    send_args.extend(send_flags(encrypted));
    send_args.push(&newest.0);
    let mut send = side.zfs(&send_args);
    send.stdin(std::process::Stdio::null());
    let leaf = match backup_of.as_str() {
        "-" | "" => dataset
            .rsplit('/')
            .next()
            .unwrap_or("persistence")
            .to_owned(),
        of => of.rsplit('/').next().unwrap_or("persistence").to_owned(),
    };
    Ok(RestorePlan {
        from: newest.0,
        senders: vec![send],
        guid: newest.1,
        leaf,
        zvol: kind == "volume",
        encrypted,
    })
}

/// A stream file, or a directory's chain of streams for one volume (named with --volume when
/// it holds several).
fn file_restore_plan(path: &std::path::Path, args: &RestoreArgs) -> Result<RestorePlan> {
    let files: Vec<(std::path::PathBuf, zlive::backup_plan::StreamHeader)> = if path.is_dir() {
        let all = place::all_streams(path)?;
        let mut volumes: Vec<String> = all.iter().map(|(_, h)| h.volume().to_owned()).collect();
        volumes.sort();
        volumes.dedup();
        let volume = match (&args.volume, volumes.as_slice()) {
            (Some(v), _) => v.clone(),
            (None, [one]) => one.clone(),
            (None, []) => bail!("{} holds no stream (*.zstream)", path.display()),
            (None, many) => bail!(
                "{} holds streams of several volumes ({}); name one with --volume",
                path.display(),
                many.join(", ")
            ),
        };
        let mut mine: Vec<(String, zlive::backup_plan::StreamHeader)> = all
            .into_iter()
            .filter(|(_, h)| h.volume() == volume)
            .map(|(p, h)| (p.to_string_lossy().into_owned(), h))
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        let order = zlive::backup_plan::stream_chain(&mine)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        order
            .into_iter()
            .map(|i| (mine[i].0.clone().into(), mine[i].1.clone()))
            .collect()
    } else {
        vec![(path.to_owned(), place::read_header(path)?)]
    };
    let (last_path, last) = files.last().cloned().context("no stream")?;
    let senders = files
        .iter()
        .map(|(p, _)| {
            let mut cat = Command::new("cat");
            cat.arg(p);
            cat
        })
        .collect();
    let leaf = last
        .volume()
        .rsplit('/')
        .next()
        .unwrap_or("persistence")
        .to_owned();
    Ok(RestorePlan {
        from: format!("{} ({})", last.to_name, last_path.display()),
        senders,
        guid: last.to_guid,
        leaf,
        zvol: last.kind == zlive::backup_plan::StreamKind::Zvol,
        // A raw stream's receive asks for nothing; the boot asks for the passphrase.
        encrypted: false,
    })
}
