//! Pool disks for the boot tests, described by parameters: the pool `dpool` on the test's
//! first disk, with volumes (zvols holding ext4), files on them, and the shell steps a
//! scenario needs (a symlink planted, a file system damaged). The description becomes a
//! setup script and a payload; a setup guest runs it, and the disk is cached by the content
//! of both, so a changed description is a new disk.

use super::{artifacts, images::images, qemu};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How a volume is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crypt {
    /// ZFS native encryption, its own encryption root, `keylocation=prompt`, this passphrase.
    Zfs(&'static str),
    /// A LUKS2 container on the zvol, this passphrase.
    Luks(&'static str),
}

/// A persistence volume: a zvol holding an ext4 file system, or a ZFS dataset carrying its
/// label in `org.zlive:label`.
#[derive(Debug, Clone)]
pub struct Volume {
    pub name: String,
    /// A dataset (`xattr=sa`, `acltype=posix`) instead of a zvol.
    pub dataset: bool,
    pub crypt: Option<Crypt>,
    pub size: &'static str,
    /// Thin (`zfs create -s`): no reservation, for many small volumes on one disk.
    pub sparse: bool,
    pub label: String,
    /// Files copied onto the file system: (path, content).
    pub files: Vec<(String, String)>,
    /// Shell run while the file system is mounted at `/mnt/vol`.
    pub while_mounted: String,
    /// Shell run after it is unmounted, with `$dev` its device.
    pub after_unmount: String,
}

impl Volume {
    /// A volume `dpool/NAME` of SIZE with its label equal to its name.
    pub fn new(name: &str, size: &'static str) -> Volume {
        Volume {
            name: name.to_owned(),
            dataset: false,
            crypt: None,
            size,
            sparse: false,
            label: name.to_owned(),
            files: Vec::new(),
            while_mounted: String::new(),
            after_unmount: String::new(),
        }
    }
    /// A dataset `dpool/NAME` carrying its label, instead of a zvol (its size is ignored).
    pub fn dataset(mut self) -> Self {
        self.dataset = true;
        self
    }
    pub fn encrypted(mut self, crypt: Crypt) -> Self {
        self.crypt = Some(crypt);
        self
    }
    pub fn sparse(mut self) -> Self {
        self.sparse = true;
        self
    }
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }
    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.push((path.to_owned(), content.to_owned()));
        self
    }
    pub fn conf(self, conf: &str) -> Self {
        self.file("persistence.conf", conf)
    }
    pub fn while_mounted(mut self, shell: &str) -> Self {
        self.while_mounted.push_str(shell);
        self.while_mounted.push('\n');
        self
    }
    pub fn after_unmount(mut self, shell: &str) -> Self {
        self.after_unmount.push_str(shell);
        self.after_unmount.push('\n');
        self
    }
}

/// A pool disk: the pool (`dpool` unless named), its volumes, and how it is left.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: &'static str,
    /// No pool at all: a blank disk.
    pub blank: bool,
    /// The host id the setup guest stamps the pool with (`spl_hostid`), if not its own.
    pub hostid: Option<&'static str>,
    /// A second vdev that only exists in the setup guest: the pool misses it at boot.
    pub missing_vdev: bool,
    pub volumes: Vec<Volume>,
    /// Exported at the end (as after a clean shutdown) or left imported (as by a crash).
    pub exported: bool,
}

impl Pool {
    /// The standard pool: `dpool/persistence`, 256 MiB, labelled `persistence`, exported.
    pub fn standard() -> Pool {
        Pool {
            name: "dpool",
            blank: false,
            hostid: None,
            missing_vdev: false,
            volumes: vec![Volume::new("persistence", "256M")],
            exported: true,
        }
    }
    /// The standard pool whose volume holds just this `persistence.conf`.
    pub fn with_conf(conf: &str) -> Pool {
        Pool::standard().first(|v| v.conf(conf))
    }
    /// The standard pool with its persistence a dataset, `dpool/live`, carrying the label
    /// `persistence`, holding just this `persistence.conf`.
    pub fn dataset_with_conf(conf: &str) -> Pool {
        Pool {
            volumes: vec![Volume::new("live", "0")
                .dataset()
                .label("persistence")
                .conf(conf)],
            ..Pool::standard()
        }
    }
    /// A stranger's pool, `name`, whose zvol carries `label` (not `persistence`) and which
    /// has a dataset that would mount over /etc/zlive-canary, holding a file `owned`: what a
    /// boot must never import nor mount.
    pub fn stranger(name: &'static str, label: &'static str) -> Pool {
        Pool::standard().named(name).first(|v| {
            v.label(label).after_unmount(
                "zfs create -o mountpoint=/etc/zlive-canary $pool/canary\n\
                 echo owned > /etc/zlive-canary/owned",
            )
        })
    }
    pub fn blank() -> Pool {
        Pool {
            blank: true,
            volumes: Vec::new(),
            ..Pool::standard()
        }
    }
    /// Change the first volume.
    pub fn first(mut self, change: impl FnOnce(Volume) -> Volume) -> Self {
        let v = self.volumes.remove(0);
        self.volumes.insert(0, change(v));
        self
    }
    pub fn volume(mut self, v: Volume) -> Self {
        self.volumes.push(v);
        self
    }
    /// Another pool name than `dpool`.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
    pub fn hostid(mut self, id: &'static str) -> Self {
        self.hostid = Some(id);
        self
    }
    pub fn missing_vdev(mut self) -> Self {
        self.missing_vdev = true;
        self
    }
    pub fn left_imported(mut self) -> Self {
        self.exported = false;
        self
    }

    /// The setup guest's script (run with `sh -e`; the payload is in `/payload`).
    pub fn script(&self) -> String {
        if self.blank {
            return "true\n".to_owned();
        }
        let mut s = String::from(SCRIPT_HEAD);
        if let Some(id) = self.hostid {
            s.push_str(&format!(
                "echo {id} > /sys/module/spl/parameters/spl_hostid\n"
            ));
        }
        let mut vdevs = "/dev/vda".to_owned();
        if self.missing_vdev {
            s.push_str("truncate -s 128M /tmp/vdev2\n");
            vdevs.push_str(" /tmp/vdev2");
        }
        let pool = self.name;
        s.push_str(&format!(
            "pool={pool}\nzpool create -f -o cachefile=none $pool {vdevs}\nmkdir -p /mnt/vol\n"
        ));
        for v in &self.volumes {
            let sparse = if v.sparse { " -s" } else { "" };
            if v.dataset {
                let pass = match v.crypt {
                    Some(Crypt::Zfs(pass)) => format!(" '{pass}'"),
                    _ => String::new(),
                };
                s.push_str(&format!("mkds {} {}{pass}\n", v.name, v.label));
                if !v.files.is_empty() {
                    s.push_str(&format!("cp -a /payload/volumes/{}/. /mnt/vol/\n", v.name));
                }
                s.push_str(&v.while_mounted);
                s.push_str("umount /mnt/vol\n");
                s.push_str(&v.after_unmount);
                continue;
            }
            let (make, dev) = match v.crypt {
                None => (
                    format!("mkvol {} {} {}{sparse}", v.name, v.size, v.label),
                    format!("/dev/zvol/$pool/{}", v.name),
                ),
                Some(Crypt::Zfs(pass)) => (
                    format!(
                        "mkvol_zfs {} {} {} '{pass}'{sparse}",
                        v.name, v.size, v.label
                    ),
                    format!("/dev/zvol/$pool/{}", v.name),
                ),
                Some(Crypt::Luks(pass)) => (
                    format!("mkvol_luks {} {} {} '{pass}'", v.name, v.size, v.label),
                    format!("/dev/mapper/setup-{}", v.name),
                ),
            };
            s.push_str(&format!("{make}\ndev={dev}\nmount \"$dev\" /mnt/vol\n"));
            if !v.files.is_empty() {
                s.push_str(&format!("cp -a /payload/volumes/{}/. /mnt/vol/\n", v.name));
            }
            s.push_str(&v.while_mounted);
            s.push_str("umount /mnt/vol\n");
            s.push_str(&v.after_unmount);
            if matches!(v.crypt, Some(Crypt::Luks(_))) {
                s.push_str(&format!("cryptsetup close setup-{}\n", v.name));
            }
        }
        s.push_str(if self.exported {
            "zpool export $pool\n"
        } else {
            "sync\n"
        });
        s
    }

    /// Build (or reuse) the disk, and return a fresh copy of it for this test.
    pub fn build(&self, test: &str) -> PathBuf {
        let tar = self.payload(test);
        let key = &super::digest(&tar);
        let cache = super::vm_cache().join("pools");
        fs::create_dir_all(&cache).unwrap();
        let pristine = cache.join(format!("pool-{key}.img"));
        if !pristine.exists() {
            // Per test: two tests may build the same pool at once; the last rename wins.
            let tmp = cache.join(format!("pool-{key}.{test}.tmp"));
            fs::File::create(&tmp).unwrap().set_len(512 << 20).unwrap();
            let serial = qemu::run(
                &images().initrd,
                "console=ttyS0 zlive.test.setup panic=-1",
                &[(&tmp, false), (&tar, true)],
                Duration::from_secs(600),
            );
            fs::write(artifacts(test).join("setup-serial.log"), &serial).unwrap();
            assert!(
                serial.contains("ZLIVE-SETUP-OK"),
                "building the pool failed; see target/vm-artifacts/{test}/setup-serial.log"
            );
            fs::rename(&tmp, &pristine).unwrap();
        }
        let copy = artifacts(test).join(format!("{}.img", self.name));
        let status = Command::new("cp")
            .arg("--sparse=always")
            .arg(&pristine)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        copy
    }

    /// The payload disk: the script and each volume's files, as a reproducible tar.
    fn payload(&self, test: &str) -> PathBuf {
        payload(test, &self.script(), &self.volumes)
    }
}

/// Run `script` (after the setup helpers) in a setup guest with `disk` as its first disk, and
/// return the `KEY=VALUE` pairs it printed as `ZLIVE-INSPECT KEY=VALUE` lines: how a test
/// looks at a pool from outside the live system (another machine, or the same one later).
pub fn inspect(test: &str, disk: &std::path::Path, script: &str) -> Vec<(String, String)> {
    let tar = payload(test, &format!("{SCRIPT_HEAD}{script}"), &[]);
    let serial = qemu::run(
        &images().initrd,
        "console=ttyS0 zlive.test.setup panic=-1",
        &[(disk, false), (&tar, true)],
        Duration::from_secs(300),
    );
    fs::write(artifacts(test).join("inspect-serial.log"), &serial).unwrap();
    assert!(
        serial.contains("ZLIVE-SETUP-OK"),
        "the inspection failed; see target/vm-artifacts/{test}/inspect-serial.log"
    );
    serial
        .lines()
        // Whatever comes before the marker on a line is not part of the value.
        .filter_map(|l| l.split_once("ZLIVE-INSPECT ").map(|(_, kv)| kv))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The pool on `disk` was exported: a machine with another host id imports it without `-f`
/// (only an exported pool allows that), checked in an inspection guest.
pub fn assert_exported(test: &str, disk: &std::path::Path) {
    let other = inspect(
        test,
        disk,
        "echo 0x1234abcd > /sys/module/spl/parameters/spl_hostid\n\
         zpool import -N dpool && echo ZLIVE-INSPECT imported=plain\nzpool export dpool\n",
    );
    assert!(
        other.iter().any(|(k, v)| k == "imported" && v == "plain"),
        "{test}: the pool was not exported at poweroff: another host cannot import it without -f; see target/vm-artifacts/{test}/inspect-serial.log"
    );
}

/// A digest of the content of the zvol `dpool/persistence`, read in an inspection guest:
/// what a boot that must not touch the volume is checked with. ZFS's own `written` would also
/// count the metadata a read-write import or an open for writing updates (the intent log's
/// header), which is not the user's data.
///
/// The pool is imported read-write, so that its intent log is replayed as the next boot's
/// import would replay it. A boot that ends with `sync` and an instant power-off leaves its
/// last writes only in the intent log when no transaction group was synced after them; a
/// read-only import does not replay it, so it would show an older volume than the next boot
/// sees and blame that boot for the difference (a flake seen in CI).
pub fn volume_digest(test: &str, disk: &std::path::Path) -> String {
    volume_digest_unlocked(test, disk, None)
}

/// The digest of the volume dpool/persistence's content (see [`volume_digest`]). A
/// volume with ZFS native encryption shows no device until its key is loaded, so `crypt`
/// gives the passphrase; loading a key writes nothing to the pool. (A LUKS container needs
/// nothing: the digest covers its ciphertext.)
pub fn volume_digest_unlocked(test: &str, disk: &std::path::Path, crypt: Option<&Crypt>) -> String {
    let unlock = match crypt {
        Some(Crypt::Zfs(passphrase)) => {
            format!("printf '%s\\n' '{passphrase}' | zfs load-key -L prompt dpool/persistence\n")
        }
        _ => String::new(),
    };
    let found = inspect(
        test,
        disk,
        &format!(
            "zpool import -N -f dpool\n{unlock}wait_dev /dev/zvol/dpool/persistence\n\
             echo \"ZLIVE-INSPECT volume=$(sha256sum < /dev/zvol/dpool/persistence | head -c 16)\"\nzpool export dpool\n"
        ),
    );
    let digest = found
        .into_iter()
        .find(|(k, _)| k == "volume")
        .map(|(_, v)| v)
        .unwrap_or_default();
    assert_eq!(digest.len(), 16, "{test}: no digest of the volume");
    digest
}

/// A payload tar: the setup script and each volume's files.
fn payload(test: &str, script: &str, volumes: &[Volume]) -> PathBuf {
    let work = artifacts(test).join("payload");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("setup-pool.sh"), script).unwrap();
    for v in volumes {
        for (path, content) in &v.files {
            let p = work.join("volumes").join(&v.name).join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
        }
    }
    let tar = artifacts(test).join("payload.tar");
    let status = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0"])
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&work)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    tar
}

/// Helpers every setup script starts with: udev creates a zvol's node a moment after
/// `zfs create` returns, so wait for it (bounded) before mkfs.
const SCRIPT_HEAD: &str = r#"wait_dev() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ] || { echo "no $1 after 10 s"; exit 1; }
}
# mkvol NAME SIZE LABEL [-s]: a zvol $pool/NAME holding ext4 labelled LABEL.
mkvol() {
    zfs create $4 -V "$2" "$pool/$1"
    wait_dev "/dev/zvol/$pool/$1"
    mkfs.ext4 -q -L "$3" "/dev/zvol/$pool/$1"
}
# mkvol_zfs NAME SIZE LABEL PASSPHRASE [-s]: the same, natively encrypted (its own
# encryption root, the passphrase asked at the prompt).
mkvol_zfs() {
    printf '%s' "$4" | zfs create $5 -o encryption=on -o keyformat=passphrase \
        -o keylocation=prompt -o pbkdf2iters=100000 -V "$2" "$pool/$1"
    wait_dev "/dev/zvol/$pool/$1"
    mkfs.ext4 -q -L "$3" "/dev/zvol/$pool/$1"
}
# mkds NAME LABEL [PASSPHRASE]: a dataset $pool/NAME carrying LABEL, as zlive create makes one
# (never mounted by ZFS itself; system-attribute xattrs and POSIX ACLs for an overlay's upper
# layer), its own encryption root with a passphrase; mounted at /mnt/vol.
mkds() {
    if [ -n "$3" ]; then
        printf '%s' "$3" | zfs create -o encryption=on -o keyformat=passphrase -o keylocation=prompt \
            -o pbkdf2iters=100000 -o canmount=noauto -o xattr=sa -o acltype=posix \
            -o org.zlive:label="$2" "$pool/$1"
    else
        zfs create -o canmount=noauto -o xattr=sa -o acltype=posix -o org.zlive:label="$2" "$pool/$1"
    fi
    mount -t zfs -o zfsutil "$pool/$1" /mnt/vol
}
# mkvol_luks NAME SIZE LABEL PASSPHRASE: a LUKS2 container on the zvol (cheap key derivation:
# this is a test), open as /dev/mapper/setup-NAME with ext4 labelled LABEL inside.
mkvol_luks() {
    zfs create -V "$2" "$pool/$1"
    wait_dev "/dev/zvol/$pool/$1"
    printf '%s' "$4" | cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 \
        --pbkdf-force-iterations 1000 --key-file - "/dev/zvol/$pool/$1"
    printf '%s' "$4" | cryptsetup open --key-file - "/dev/zvol/$pool/$1" "setup-$1"
    mkfs.ext4 -q -L "$3" "/dev/mapper/setup-$1"
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_pool() {
        let s = Pool::with_conf("/home union\n").script();
        assert!(s.starts_with(SCRIPT_HEAD));
        let body = &s[SCRIPT_HEAD.len()..];
        assert_eq!(
            body,
            "pool=dpool\nzpool create -f -o cachefile=none $pool /dev/vda\nmkdir -p /mnt/vol\n\
             mkvol persistence 256M persistence\ndev=/dev/zvol/$pool/persistence\nmount \"$dev\" /mnt/vol\n\
             cp -a /payload/volumes/persistence/. /mnt/vol/\numount /mnt/vol\nzpool export $pool\n"
        );
    }

    #[test]
    fn variants_are_parameters() {
        let s = Pool::standard()
            .first(|v| {
                v.label("other")
                    .after_unmount("debugfs -w -R 'ssv state 0' \"$dev\"")
            })
            .volume(Volume::new("extra", "64M").sparse())
            .hostid("0x0badcafe")
            .missing_vdev()
            .left_imported()
            .script();
        for line in [
            "echo 0x0badcafe > /sys/module/spl/parameters/spl_hostid\n",
            "zpool create -f -o cachefile=none $pool /dev/vda /tmp/vdev2\n",
            "mkvol persistence 256M other\n",
            "umount /mnt/vol\ndebugfs -w -R 'ssv state 0' \"$dev\"\n",
            "mkvol extra 64M extra -s\n",
        ] {
            assert!(s.contains(line), "{line:?} not in:\n{s}");
        }
        assert!(s.ends_with("sync\n") && !s.contains("zpool export"), "{s}");
        assert!(Pool::standard()
            .named("bpool")
            .script()
            .contains("pool=bpool\n"));
        assert_eq!(
            s.matches("while [ ! -e").count(),
            1,
            "one zvol wait loop, in wait_dev"
        );
        assert_eq!(Pool::blank().script(), "true\n");
        let s = Pool::standard()
            .first(|v| v.encrypted(Crypt::Luks("pass phrase")))
            .volume(Volume::new("z", "64M").encrypted(Crypt::Zfs("secret12")))
            .script();
        assert!(s.contains("mkvol_luks persistence 256M persistence 'pass phrase'\ndev=/dev/mapper/setup-persistence\n"), "{s}");
        assert!(s.contains("cryptsetup close setup-persistence\n"), "{s}");
        assert!(s.contains("mkvol_zfs z 64M z 'secret12'\n"), "{s}");
    }
}
