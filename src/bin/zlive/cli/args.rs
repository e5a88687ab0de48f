//! The command line, as clap reads it: the commands a person runs, and the service verbs
//! zlive's units run (each named with the unit that runs it). Every command answers `--help`;
//! a wrong one exits 2 with one line and a hint (see `main.rs`).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "zlive",
    version,
    about = "Live-boot persistence on ZFS: the helper of zlive's units, and the tool to see what \
             persistence did (see zlive(8))"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What persistence did in this boot: per pool, volume and entry, the unit and its state
    Status {
        /// One JSON object, for scripts
        #[arg(long)]
        json: bool,
    },
    /// zlive's snapshots of the volumes this boot found, and how to return to each
    Snapshots {
        /// One JSON array, for scripts
        #[arg(long)]
        json: bool,
    },
    /// What the generator would write for a kernel command line, without booting
    Plan {
        /// The kernel command line (it must have boot=live)
        #[arg(long, value_name = "STRING")]
        cmdline: String,
        /// A volume's persistence.conf, in the order of the volumes (repeat for more)
        #[arg(long = "persistence-conf", value_name = "FILE")]
        persistence_conf: Vec<PathBuf>,
        /// One JSON object, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Make persistence: a pool on a stick or disk, with a dataset (or ext4 on a zvol) labelled
    /// for zlive and its persistence.conf (see zlive(8), CREATE)
    Create(CreateArgs),
    /// Back up persistence with zfs send: to a file or a directory of streams,
    /// pool:NAME[/DATASET], or ssh://[USER@]HOST/POOL/DATASET; incremental after the first,
    /// raw when encrypted (see zlive(8), BACKUP)
    Backup(BackupArgs),
    /// Restore persistence from a backup into a pool (see zlive(8), BACKUP)
    Restore(RestoreArgs),
    /// Make a second bootable persistent stick: the live medium's partitions, and the newest
    /// persistence state sent with zfs send (see zlive(8), BACKUP)
    Clone(CloneArgs),
    /// Whether Secure Boot lets this image's zfs module load; --enroll asks shim to trust the
    /// image's module signing key from the next boot on (see zlive(8), SECURE BOOT)
    SecureBoot {
        /// Enrol the key through mokutil (a one-time password, asked now and at the next
        /// boot by MokManager)
        #[arg(long)]
        enroll: bool,
        /// The key's certificate (DER), instead of the image's
        /// /usr/share/zlive/secure-boot.der
        #[arg(long, value_name = "FILE")]
        certificate: Option<PathBuf>,
        /// The password's hash from a file (made by mokutil), not asked (only when enrolling)
        #[arg(long, value_name = "FILE", requires = "enroll")]
        hash_file: Option<PathBuf>,
    },
    /// Print a shell completion script for zlive (bash, zsh or fish)
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Import a named pool, or scan for pools (run by zlive-import@.service and
    /// zlive-import-scan.service)
    Import {
        /// The pool to import, forced
        #[arg(required_unless_present = "scan", conflicts_with = "scan")]
        pool: Option<String>,
        /// Import the pools a scan finds, read-only unless they hold the persistence volume
        #[arg(long)]
        scan: bool,
    },
    /// Wait, bounded, for a persistence volume and prepare it for its fsck and mount (run by
    /// zlive-volume@.service)
    WaitVolume {
        /// The volume's name: its label, or the last component of its zvol
        name: String,
    },
    /// Load a ZFS encryption root's key (run by zlive-load-key@.service)
    LoadKey {
        /// The encryption root, POOL/DATASET
        encryption_root: String,
    },
    /// Load the ZFS kernel module early (run by zlive-load-zfs.service)
    LoadZfs,
    /// Find and mount the live medium (run by zlive-find-medium.service)
    FindMedium,
    /// Prepare a persistence entry before it is mounted (run by zlive-prepare@.service)
    Prepare {
        /// Where the entry is mounted, below /sysroot
        dest: String,
    },
    /// Make a link entry's symlinks (run by zlive-link@.service)
    Link {
        /// Where the entry's links go, below /sysroot
        dest: String,
    },
    /// The generator's second pass: reload PID 1 once the volumes are mounted (run by
    /// zlive-reload.service)
    Reload,
    /// Remove a volume's old boot snapshots (run by zlive-prune@.service)
    PruneSnapshots {
        /// The volume's name
        name: String,
    },
    /// Drop cached passphrases and build the exitrd for shutdown (run by
    /// zlive-exitrd.service)
    Exitrd,
}

/// What `zlive create` is asked to make.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// A whole disk or a partition; default: the free space after the last partition of
    /// the disk holding the live medium
    #[arg(long, value_name = "DEV")]
    pub device: Option<String>,
    /// The new partition's size (the free space's), or the zvol's on --device (4G, 512M)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// A dataset as the persistence (the default where OpenZFS is 2.2.2 or later)
    #[arg(long, conflicts_with = "zvol")]
    pub dataset: bool,
    /// ext4 on a zvol, as live-boot users have
    #[arg(long)]
    pub zvol: bool,
    /// persistence.conf: home (/home union), seed (the seven union entries), full (/
    /// union), or a file
    #[arg(long, value_name = "LAYOUT", default_value = "home")]
    pub layout: String,
    /// ZFS native encryption with a passphrase, asked twice
    #[arg(long)]
    pub encrypt: bool,
    /// The new pool's name
    #[arg(long, value_name = "NAME", default_value = "zlive")]
    pub pool: String,
    /// The persistence label
    #[arg(long, value_name = "LABEL", default_value = "persistence")]
    pub label: String,
    /// Overwrite what the partition named by --device holds (never a whole disk)
    #[arg(long, requires = "device")]
    pub wipe: bool,
    /// Do not ask for confirmation (for scripts)
    #[arg(long)]
    pub yes: bool,
}

/// What `zlive backup` is asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// A file, a directory (ending in /), pool:NAME[/DATASET] or ssh://[USER@]HOST/POOL/DATASET
    #[arg(value_name = "DEST")]
    pub destination: String,
    /// The volume to back up, POOL/VOLUME; default: this boot's persistence volume, or the
    /// one on the imported pools
    #[arg(long, value_name = "DATASET")]
    pub volume: Option<String>,
    /// The persistence label looked for when no volume is named
    #[arg(long, value_name = "LABEL", default_value = "persistence")]
    pub label: String,
}

/// What `zlive restore` is asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// What `zlive backup` wrote to: a file, a directory, pool:NAME/DATASET or
    /// ssh://[USER@]HOST/POOL/DATASET
    #[arg(value_name = "SRC")]
    pub source: String,
    /// An imported pool to restore into, or a device (/dev/...: a blank disk, or an empty
    /// partition) that gets a new pool as zlive create makes one; default: this stick, whose
    /// next boot swaps the restored state in
    #[arg(long, value_name = "POOL|DEVICE")]
    pub to: Option<String>,
    /// The new pool's name, with --to DEVICE
    #[arg(long, value_name = "NAME", default_value = "zlive")]
    pub pool: String,
    /// Do not ask before writing a device (for scripts)
    #[arg(long)]
    pub yes: bool,
    /// The restored volume's name in that pool; default: the backed-up volume's
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The persistence label the restored dataset gets (a zvol keeps its file system's)
    #[arg(long, value_name = "LABEL", default_value = "persistence")]
    pub label: String,
    /// Which volume's streams, when a directory holds several (POOL/VOLUME as sent)
    #[arg(long, value_name = "DATASET")]
    pub volume: Option<String>,
}

/// What `zlive clone` is asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct CloneArgs {
    /// The whole disk that becomes the clone (blank: zlive create's refusals apply)
    #[arg(long, value_name = "DEVICE")]
    pub to: String,
    /// The persistence volume to copy, POOL/VOLUME; default: this boot's
    #[arg(long, value_name = "DATASET")]
    pub volume: Option<String>,
    /// The persistence label looked for when no volume is named
    #[arg(long, value_name = "LABEL", default_value = "persistence")]
    pub label: String,
    /// Do not ask before writing the disk (for scripts)
    #[arg(long)]
    pub yes: bool,
}

/// The shells `zlive completions` writes a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}
