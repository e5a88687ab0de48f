//! `zlive create`: a persistent stick made from the running live system, or on any machine
//! with ZFS. Owns choosing the target, refusing what is not safe to write, and making the
//! pool, the persistence and its `persistence.conf`; never touches a device it did not
//! check. `first_boot.rs` does the same in the initrd for `persistence-create`, only in the
//! free space of the medium's disk.
//!
//! The steps run in an order that leaves nothing a boot would take for persistence until the
//! last one: the label (a dataset's `org.zlive:label`, or the ext4 label) is set only after
//! `persistence.conf` is written. An error part-way destroys what was made.

pub mod first_boot;
pub mod onto;
mod probe;
mod recipe;
mod rules;
mod space;

use crate::cli::args::CreateArgs as Request;
use crate::exec::run;
use crate::zfs::keys::Secret;
use anyhow::{bail, Context, Result};
use recipe::{Kind, Layout};
use std::io::{BufRead, IsTerminal, Write};
use std::process::{Command, Stdio};

/// Where the pool goes.
#[derive(Debug)]
enum Target {
    /// A partition the user named.
    Partition(String),
    /// A blank whole disk the user named: it gets a GPT with one partition for the pool
    /// (made here rather than by `zpool create`, whose labelling waits on udev).
    WholeDisk(String),
    /// A new partition in the free space after the last partition of the medium's disk.
    FreeSpace {
        disk: String,
        table: space::Table,
        extent: space::Extent,
    },
}

/// Everything decided before anything is written.
struct Decided {
    target: Target,
    kind: Kind,
    conf: String,
    /// A zvol's size when the user gave one; else most of the pool.
    zvol_bytes: Option<u64>,
}

/// Run `zlive create`; `Ok(false)` when it refused (said on stderr), nothing written.
pub fn create(request: &Request) -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("zlive create makes a pool and partitions: run it as root");
    }
    let decided = match decide(request) {
        Ok(decided) => decided,
        Err(refusal) => {
            eprintln!("zlive create: {refusal:#}");
            eprintln!("Nothing was written.");
            return Ok(false);
        }
    };
    show(request, &decided);
    if !request.yes && !confirmed()? {
        eprintln!("zlive create: not confirmed; nothing was written.");
        return Ok(false);
    }
    let secret = match request.encrypt {
        true => Some(ask_passphrase()?),
        false => None,
    };
    make(request, &decided, secret.as_ref(), Finish::Export)?;
    print_end(request, &decided);
    Ok(true)
}

/// Every check, in the order the user can fix them; an error is the refusal.
fn decide(request: &Request) -> Result<Decided> {
    zlive::names::check_label(&request.label).map_err(anyhow::Error::msg)?;
    zlive::names::PoolName::parse(&request.pool).map_err(anyhow::Error::msg)?;
    let conf = recipe::conf_text(&Layout::parse(&request.layout), |path| {
        Ok(zlive::world::read_small(std::path::Path::new(path))
            .with_context(|| format!("cannot read {path}"))?
            .into_bytes())
    })?;
    let refused = crate::zfs::datasets::check_module()
        .err()
        .map(|e| format!("{e:#}"));
    let kind = recipe::choose_kind(request.dataset, request.zvol, refused.as_deref())?;
    let size = request
        .size
        .as_deref()
        .map(zlive::names::parse_size)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let medium = probe::medium();
    let target = match &request.device {
        Some(path) => {
            let device = probe::device(path, &medium)?;
            if let Some(why) = rules::refuse_device(&device, request.wipe) {
                bail!(why);
            }
            match device.whole_disk {
                true => Target::WholeDisk(device.path),
                false => Target::Partition(device.path),
            }
        }
        None => free_space(&medium, size)?,
    };
    // Last, as zpool import reads every disk.
    let (imported, visible) = probe::pool_names();
    if let Some(why) = rules::refuse_pool_name(&request.pool, &imported, &visible) {
        bail!(why);
    }
    // --size is the new partition's size; on a device the user named, a zvol's.
    let zvol_bytes = match &target {
        Target::Partition(_) | Target::WholeDisk(_) => size,
        Target::FreeSpace { .. } => None,
    };
    Ok(Decided {
        target,
        kind,
        conf,
        zvol_bytes,
    })
}

/// The free space after the last partition of the medium's disk.
fn free_space(medium: &rules::Medium, size: Option<u64>) -> Result<Target> {
    if let Some(why) = rules::refuse_medium(medium) {
        bail!(why);
    }
    let rules::Medium::Disk(disk) = medium else {
        unreachable!("refuse_medium takes only disks");
    };
    let (sectors, json) = probe::table(disk)?;
    let Some(json) = json else {
        bail!(
            "the live medium's disk {disk} has no partition table; zlive adds persistence only \
             after its last partition. Name another disk or partition with --device DEV."
        );
    };
    let table = space::parse_table(&json)?;
    let extent = space::free_after_last(&table, sectors, size)
        .with_context(|| format!("the live medium's disk {disk}"))?;
    let found = probe::region_signatures(
        disk,
        extent.start * table.sector_size,
        extent.sectors * table.sector_size,
    );
    if !found.is_empty() {
        bail!(
            "the free space after the last partition of {disk} holds {}: it may be data of \
             a partition table zlive cannot see. Name a device with --device DEV.",
            found.join(", ")
        );
    }
    Ok(Target::FreeSpace {
        disk: disk.clone(),
        table,
        extent,
    })
}

/// What will be done, before the question.
fn show(request: &Request, decided: &Decided) {
    show_target(&decided.target);
    let kind = match decided.kind {
        Kind::Dataset => format!("the dataset {}/persistence", request.pool),
        Kind::Zvol => format!("ext4 on the zvol {}/persistence", request.pool),
    };
    let sealed = match request.encrypt {
        true => ", encrypted (ZFS native, a passphrase)",
        false => "",
    };
    say(&format!(
        "Persistence: pool {}, {kind}{sealed}, labelled {}",
        request.pool, request.label
    ));
    say("persistence.conf:");
    for line in decided.conf.lines() {
        say(&format!("    {line}"));
    }
}

/// The device and what becomes of it.
fn show_target(target: &Target) {
    let (device, what) = match target {
        Target::Partition(path) => (path.clone(), format!("all of {path} becomes the pool")),
        Target::WholeDisk(path) => (
            path.clone(),
            format!("{path} gets a new GPT with one partition, all of it, for the pool"),
        ),
        Target::FreeSpace {
            disk,
            table,
            extent,
        } => (
            disk.clone(),
            format!(
                "a new partition from sector {} ({} MiB) in the free space after the last one; \
                 the existing partitions are not touched",
                extent.start,
                (extent.sectors * table.sector_size) >> 20
            ),
        ),
    };
    let model = probe::model(&device);
    let model = match model.is_empty() {
        true => String::new(),
        false => format!(" ({model})"),
    };
    say(&format!("Device:      {device}{model}"));
    let name = probe::kernel_name(&device).unwrap_or_default();
    let parts = probe::partitions_of(&name);
    let parts = match parts.is_empty() {
        true => "none".to_owned(),
        false => parts.join(", "),
    };
    say(&format!("Partitions:  {parts}"));
    say(&format!("What:        {what}"));
}

/// The user's yes, at a terminal.
pub(crate) fn confirmed() -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to confirm at: add --yes to go on without the question");
    }
    eprint!("Type yes to make it: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// The new passphrase, twice; from the terminal without echo, or two lines of standard input.
fn ask_passphrase() -> Result<Secret> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    for _ in 0..3 {
        let first = read_secret(terminal, "New passphrase: ")?;
        let again = read_secret(terminal, "The same again: ")?;
        if first.as_bytes() != again.as_bytes() {
            eprintln!("zlive create: the two passphrases differ.");
        } else if first.as_bytes().len() < 8 {
            // ZFS's own minimum.
            eprintln!("zlive create: a passphrase has at least 8 characters.");
        } else {
            return Ok(first);
        }
        if !terminal {
            break;
        }
    }
    bail!("no passphrase; nothing was written")
}

fn read_secret(terminal: bool, prompt: &str) -> Result<Secret> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let mut secret = Secret::new();
    if !terminal {
        secret.read_line(&mut stdin.lock())?;
        return Ok(secret);
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let read = secret.read_line(&mut stdin.lock());
    tcsetattr(&stdin, SetArg::TCSANOW, &saved)?;
    eprintln!();
    read?;
    Ok(secret)
}

/// What was made so far, to take back on an error.
#[derive(Default)]
struct Made {
    partition: Option<(String, usize)>,
    pool: Option<String>,
}

/// What becomes of the pool at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// Exported, so that the next boot imports it without `-f`.
    Export,
    /// Left imported: persistence-create, whose boot goes on with it.
    KeepImported,
}

/// The steps, with what they made destroyed again on an error.
fn make(
    request: &Request,
    decided: &Decided,
    secret: Option<&Secret>,
    finish: Finish,
) -> Result<()> {
    let mut made = Made::default();
    let result = make_steps(request, decided, secret, finish, &mut made);
    if result.is_err() {
        undo(&made);
    }
    result
}

/// Destroy what an interrupted make made: the pool, then the partition it added.
fn undo(made: &Made) {
    if let Some(pool) = &made.pool {
        let _ = run(Command::new("zpool").args(["destroy", "-f", pool]));
    }
    if let Some((disk, number)) = &made.partition {
        let _ = run(Command::new("sfdisk").args(["--delete", disk, &number.to_string()]));
    }
}

/// The pool's vdev: the partition named, or one this run makes.
fn vdev_for(target: &Target, made: &mut Made) -> Result<String> {
    match target {
        Target::Partition(path) => Ok(path.clone()),
        Target::WholeDisk(disk) => new_table(disk, made),
        Target::FreeSpace {
            disk,
            table,
            extent,
        } => add_partition(disk, table, *extent, made),
    }
}

fn make_steps(
    request: &Request,
    decided: &Decided,
    secret: Option<&Secret>,
    finish: Finish,
    made: &mut Made,
) -> Result<()> {
    let vdev = vdev_for(&decided.target, made)?;
    create_pool(&request.pool, None, &vdev, made)?;
    let name = format!("{}/persistence", request.pool);
    // A dataset grows with the pool; a zvol takes most of it (the pool's own reserve and the
    // boot snapshots need the rest).
    let zvol_bytes = match (decided.kind, decided.zvol_bytes) {
        (Kind::Dataset, _) => 0,
        (Kind::Zvol, Some(bytes)) => bytes,
        (Kind::Zvol, None) => recipe::default_zvol_bytes(pool_free(&request.pool)?),
    };
    step(&format!("creating {name}"));
    tool(
        "zfs",
        &recipe::zfs_create(&name, decided.kind, zvol_bytes, secret.is_some()),
        secret,
    )?;
    match decided.kind {
        Kind::Dataset => {
            write_conf_on_dataset(&name, &decided.conf)?;
            step(&format!("labelling {name} {}", request.label));
            tool("zfs", &recipe::label_dataset(&name, &request.label), None)?;
        }
        Kind::Zvol => {
            let device = format!("/dev/zvol/{name}");
            wait_for(&device)?;
            step(&format!(
                "making ext4 on {device} (slow sticks take a while)"
            ));
            tool("mkfs.ext4", &recipe::mkfs_ext4(&device), None)?;
            write_conf_on_ext4(&device, &decided.conf)?;
            step(&format!("labelling {device} {}", request.label));
            tool("e2label", &[device.clone(), request.label.clone()], None)?;
        }
    }
    tool("zfs", &recipe::finished(&request.pool), None)?;
    if finish == Finish::Export {
        step(&format!("exporting {}", request.pool));
        tool("zpool", &["export".to_owned(), request.pool.clone()], None)?;
    }
    Ok(())
}

/// `zpool create` with zlive's options for a stick; `in_core` is the name the pool has until
/// it is exported, when its own (`pool`, on disk) is taken here.
fn create_pool(pool: &str, in_core: Option<&str>, vdev: &str, made: &mut Made) -> Result<()> {
    step(&format!("creating the pool {pool} on {vdev}"));
    let known = std::path::Path::new(&recipe::compatibility_file()).exists();
    if !known {
        step(&format!(
            "{} is missing: the pool gets every feature of this OpenZFS, and an older one may not import it",
            recipe::compatibility_file()
        ));
    }
    let mut argv = recipe::zpool_create(pool, vdev, known);
    if let Some(in_core) = in_core {
        argv.splice(1..1, ["-t".to_owned(), in_core.to_owned()]);
    }
    tool("zpool", &argv, None)?;
    made.pool = Some(in_core.unwrap_or(pool).to_owned());
    Ok(())
}

/// A GPT with one partition over all of a blank disk; its device.
fn new_table(disk: &str, made: &mut Made) -> Result<String> {
    step(&format!("writing a GPT with one partition to {disk}"));
    let (ok, said) = sfdisk(&[disk], &space::whole_disk_script())?;
    if !ok {
        bail!("sfdisk {disk}: {said}");
    }
    made.partition = Some((disk.to_owned(), 1));
    Ok(probe::partition_node(disk, 1, 10)?.display().to_string())
}

/// sfdisk with `script` on its standard input, never wiping anything it finds; whether it
/// succeeded, and what it said on stderr.
fn sfdisk(args: &[&str], script: &str) -> Result<(bool, String)> {
    let mut child = Command::new("sfdisk")
        .args(["--wipe", "never", "--wipe-partitions", "never"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run sfdisk (package fdisk)")?;
    child
        .stdin
        .take()
        .context("sfdisk's input")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', " ");
    Ok((out.status.success(), said))
}

/// Append the new partition, and return its device once the kernel and udev know it.
fn add_partition(
    disk: &str,
    table: &space::Table,
    extent: space::Extent,
    made: &mut Made,
) -> Result<String> {
    if table.label == space::Label::Gpt {
        // An ISO's GPT keeps its backup header at the ISO's end: move it to the disk's.
        step(&format!(
            "moving the GPT backup header of {disk} to its end"
        ));
        tool(
            "sfdisk",
            &["--relocate".into(), "gpt-bak-std".into(), disk.into()],
            None,
        )?;
    }
    // The medium scan left the medium's disk read-only in the kernel; the user asked to
    // write its free space.
    if crate::early::blockdev::make_writable(disk)? {
        step(&format!(
            "{disk} was read-only since the medium scan: made writable"
        ));
    }
    step(&format!("adding a partition to {disk}"));
    // The medium's disk is in use (the medium is mounted from it): the kernel cannot re-read
    // its table whole, so sfdisk only writes it (--no-reread), and partx then tells the
    // kernel of the one new partition (BLKPG). What counts is the table on the disk.
    let (_, said) = sfdisk(
        &["--append", "--no-reread", "--no-tell-kernel", disk],
        &space::append_script(table, extent),
    )?;
    let number = table.partitions.len() + 1;
    let (_, json) = probe::table(disk)?;
    let written = json.map(|j| space::parse_table(&j)).transpose()?;
    if written.map(|t| t.partitions.last().copied()) != Some(Some((extent.start, extent.sectors))) {
        bail!("sfdisk did not add the partition to {disk}: {said}");
    }
    made.partition = Some((disk.to_owned(), number));
    let (_, partx) = run(Command::new("partx").args(["--add", "--nr", &number.to_string(), disk]))?;
    let node =
        probe::partition_node(disk, number, 10).with_context(|| format!("partx: {partx}"))?;
    Ok(node.display().to_string())
}

/// The command whose steps are shown: `zlive create`, unless `zlive restore` or `zlive clone`
/// makes its pool here (see `onto.rs`).
static COMMAND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

fn step(what: &str) {
    let command = COMMAND.get().copied().unwrap_or("zlive create");
    say(&format!("{command}: {what}"));
}

/// A line for the person watching: on stderr, and in the initrd (persistence-create, whose
/// stderr goes only to the journal) on the console as well.
fn say(line: &str) {
    eprintln!("{line}");
    if std::path::Path::new(zlive::paths::INITRD_RELEASE).exists() {
        crate::exec::console(&format!("{line}\n"));
    }
}

/// Run a tool that must succeed, with `secret` on its standard input when given.
fn tool(program: &str, args: &[String], secret: Option<&Secret>) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(match secret {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        })
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let (Some(secret), Some(mut stdin)) = (secret, child.stdin.take()) {
        let _ = stdin
            .write_all(secret.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ")
        );
    }
    Ok(())
}

fn pool_free(pool: &str) -> Result<u64> {
    let lines = crate::exec::lines(Command::new("zfs").args([
        "get",
        "-Hp",
        "-o",
        "value",
        "available",
        pool,
    ]))?;
    lines
        .first()
        .and_then(|l| l.parse().ok())
        .with_context(|| format!("the free space of {pool}"))
}

fn wait_for(device: &str) -> Result<()> {
    for _ in 0..100 {
        if std::path::Path::new(device).exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("{device} did not appear within 10 s")
}

/// Where the new persistence is mounted to write its `persistence.conf`.
const SCRATCH: &str = "/run/zlive/create";

fn write_conf_on_dataset(name: &str, conf: &str) -> Result<()> {
    with_mounted(
        &["-t", "zfs", "-o", "zfsutil,nosuid,nodev,noexec", name],
        conf,
    )
}

fn write_conf_on_ext4(device: &str, conf: &str) -> Result<()> {
    with_mounted(&["-t", "ext4", "-o", "nosuid,nodev,noexec", device], conf)
}

fn with_mounted(mount_args: &[&str], conf: &str) -> Result<()> {
    std::fs::create_dir_all(SCRATCH)?;
    let (ok, text) = run(Command::new("mount").args(mount_args).arg(SCRATCH))?;
    if !ok {
        bail!("mount {}: {text}", mount_args.join(" "));
    }
    let path = std::path::Path::new(SCRATCH).join(zlive::paths::CONF_NAME);
    let written = std::fs::write(&path, conf).context("writing persistence.conf");
    let (unmounted, text) = run(Command::new("umount").arg(SCRATCH))?;
    written?;
    if !unmounted {
        bail!("umount {SCRATCH}: {text}");
    }
    Ok(())
}

/// What the boot menu needs, and what the next boot shows.
fn print_end(request: &Request, decided: &Decided) {
    let cmdline = std::fs::read_to_string(zlive::paths::PROC_CMDLINE).unwrap_or_default();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let mut needed = Vec::new();
    if !words.contains(&"persistence") {
        needed.push("persistence".to_owned());
    }
    if request.label != "persistence" {
        needed.push(format!("persistence-label={}", request.label));
    }
    println!("Persistence is ready: pool {}, exported.", request.pool);
    match needed.is_empty() {
        true => {
            println!("The boot menu needs nothing more: the next boot with this entry uses it.")
        }
        false => println!(
            "Add to the kernel command line of the boot menu entry: {}",
            needed.join(" ")
        ),
    }
    if request.encrypt {
        println!("The next boot asks for the passphrase.");
    }
    let what = match decided.kind {
        Kind::Dataset => format!("the dataset {}/persistence", request.pool),
        Kind::Zvol => format!("/dev/zvol/{}/persistence", request.pool),
    };
    println!(
        "zlive status will then show the volume {} ({what}) mounted on {}/{}.",
        request.label,
        zlive::paths::PERSISTENCE_DIR,
        request.label
    );
}
