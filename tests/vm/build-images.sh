#!/usr/bin/env bash
# Builds, or reuses from the VM cache (image-env.sh; keyed by content), everything the boot tests need:
# zlive's package installed in a scratch root, the initrds (with and without OpenZFS's dracut
# module), the live root squashfs and the media. Prints KEY=VALUE lines for the harness.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/image-env.sh"

kernel=/boot/vmlinuz-$kver

# zlive itself: its Debian package (make deb), installed with dpkg into a scratch root from
# which the initrds take it, as `dracut --add zlive` takes it from a system with the package.
deb=$(bash debian/build-deb.sh | tail -n 1)
# Scratch space of this run's own (builders from two source trees may run at once, the
# cache being shared): the staged package, the live root, the media before they are moved into
# the cache under their key.
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/var/lib/dpkg/info" "$stage/var/lib/dpkg/updates"
touch "$stage/var/lib/dpkg/status"
dpkg --root="$stage" --force-depends --force-script-chrootless -i "$deb" >/dev/null 2>&1 ||
    { echo "build-images: installing $deb into $stage failed" >&2; exit 1; }
# The live-uuid tying the initrd to its medium; a second medium carries another one.
live_uuid=5a11ce00-7e57-4000-8000-000000000001
mkdir -p "$stage/etc/zlive"
echo "$live_uuid" > "$stage/etc/zlive/live-uuid"

# Content and permission bits: a file that only became executable is a new input.
hash_of() { { cat "$@"; stat -L -c '%a' "$@"; } | sha256sum | cut -c1-16; }

# A dracut tree of our own: the system's modules plus zlive and the test module, so that
# test images never touch the machine's dracut or initrd.
dracut_key=$(hash_of "$stage"/usr/lib/dracut/modules.d/50zlive/* tests/vm/dracut-test/* tests/vm/dracut-test-root/* /usr/lib/dracut/dracut-version.sh)
dbase=$cache/dracut-$dracut_key
if [ ! -d "$dbase" ]; then
    bash tests/vm/dracut-tree.sh /usr/lib/dracut "$stage" "$dbase"
fi

modules="bash systemd systemd-initrd systemd-journald systemd-udevd udev-rules dracut-systemd base fs-lib kernel-modules zlive zlive-test"
# qemu_fw_cfg is loaded only for a scenario too long for the command line (rd.driver.pre=).
drivers="virtio_blk virtio_pci virtio_console xhci_pci ata_piix qemu_fw_cfg"
build_initrd() { # NAME EXTRA_MODULES
    local key out
    key=$(hash_of "$stage"/usr/bin/zlive "$stage"/lib/systemd/system-generators/zlive-generator \
        "$stage"/lib/systemd/system/zlive* "$stage"/etc/zlive/live-uuid <(echo "$kver $modules $2 $drivers") "$dbase"/modules.d/5*/*)
    out=$cache/initrd-$1-$key.img
    if [ ! -f "$out" ]; then
        rm -f "$cache"/initrd-"$1"-*.img
        ZLIVE_STAGING=$stage dracutbasedir=$dbase dracut -q -f --no-hostonly --no-hostonly-cmdline \
            --kver "$kver" -m "$modules $2" --add-drivers "$drivers" \
            --compress zstd "$work/initrd-$1.img" >&2
        mv "$work/initrd-$1.img" "$out"
    fi
    echo "$out"
}
initrd=$(build_initrd zlive "")
initrd_zfs=$(build_initrd zlive-zfs "zfs")

# The live root: a minimal systemd system (built by dracut from this machine's systemd, like
# an initrd, then made a root), whose default target runs the test agent and powers off; and
# zlive, for `zlive status` after switch-root.
root_key=$(hash_of tests/vm/build-images.sh tests/vm/dracut-test-root/* "$stage"/etc/zlive/live-uuid "$stage"/usr/bin/zlive "$stage"/lib/systemd/system-generators/zlive-generator \
    "$stage"/usr/lib/zlive/protect-running-kernel "$stage"/etc/dpkg/dpkg.cfg.d/zlive \
    "$stage"/lib/systemd/system/zlive* /usr/lib/dracut/dracut-version.sh <(echo "$kver"))
medium=$cache/medium-$root_key.img
if [ ! -f "$medium" ] || [ ! -f "${medium%.img}.iso" ] || [ ! -f "$cache/stick-vfat-$root_key.img" ] \
    || [ ! -f "${medium%.img}-new.img" ]; then
    rm -f "$cache"/medium-*.img
    r=$work/rootfs
    mkdir -p "$r"
    dracutbasedir=$dbase dracut -q -f --no-kernel --no-hostonly --no-hostonly-cmdline --no-early-microcode \
        --kver "$kver" -m "bash systemd systemd-journald zlive-test-root" --no-compress "$work/root.cpio" >&2
    (cd "$r" && cpio -idm --quiet < "$work/root.cpio")
    # A root, not an initrd.
    rm -f "$r/etc/initrd-release" "$r/init"
    rm -rf "$r/etc/cmdline.d"
    ln -sfn ../lib/systemd/systemd "$r/usr/sbin/init" 2>/dev/null || ln -sfn /lib/systemd/systemd "$r/sbin/init"
    mkdir -p "$r"/{proc,sys,dev,run,tmp,root,home/user,var/lib,var/tmp,var/log/journal,mnt,etc,srv,opt}
    # zlive installed in the live root as its package would be: the tool, the generator
    # (which does nothing outside the initrd) and the units (conditioned on the initrd), so
    # that what a failed initrd unit leaves behind is a known unit, not a "not-found" one.
    for f in usr/bin/zlive lib/systemd/system-generators/zlive-generator "$stage"/lib/systemd/system/zlive*; do
        f=${f#"$stage"/}
        install -Dm"$(stat -c %a "$stage/$f")" "$stage/$f" "$r/$f"
    done
    # zlive's dpkg hook, and a package database in which a package owns the running kernel's
    # module tree, as in a Debian live system (the lab's root has no other packages).
    install -Dm755 "$stage/usr/lib/zlive/protect-running-kernel" "$r/usr/lib/zlive/protect-running-kernel"
    install -Dm644 "$stage/etc/dpkg/dpkg.cfg.d/zlive" "$r/etc/dpkg/dpkg.cfg.d/zlive"
    mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/triggers" \
        "$r/usr/lib/modules/$kver"
    touch "$r/var/lib/dpkg/available"
    printf 'Package: linux-image-%s\nStatus: install ok installed\nPriority: optional\nSection: kernel\nMaintainer: zlive tests <zlive-devel@example.org>\nArchitecture: amd64\nVersion: %s\nDescription: the lab kernel'"'"'s module tree\n\n' \
        "$kver" "$kver" > "$r/var/lib/dpkg/status"
    # A package whose version the new image (below) raises, as a new ISO's packages have.
    printf 'Package: zlive-test-base\nStatus: install ok installed\nPriority: optional\nSection: misc\nMaintainer: zlive tests <zlive-devel@example.org>\nArchitecture: all\nVersion: 1.0-1\nDescription: the image'"'"'s release, as a package\n\n' \
        >> "$r/var/lib/dpkg/status"
    printf '/usr\n/usr/lib\n/usr/lib/modules\n/usr/lib/modules/%s\n' "$kver" \
        > "$r/var/lib/dpkg/info/linux-image-$kver.list"
    chmod 755 "$r/usr/lib/zlive-test/agent"
    chown 1000:1000 "$r/home/user"
    chmod 1777 "$r/tmp" "$r/var/tmp"
    echo "zlive-live" > "$r/etc/hostname"
    printf 'NAME="zlive test live system"\nID=zlive-test\n' > "$r/etc/os-release"
    printf 'image file\n' > "$r/etc/image-file"
    # A directory of the image a scenario renames (an overlay must keep what is in it).
    mkdir -p "$r/etc/zlive-lower"
    printf 'lower file\n' > "$r/etc/zlive-lower/file"
    printf 'image profile\n' > "$r/home/user/.profile"
    chown 1000:1000 "$r/home/user/.profile"
    [ -e "$r/var/run" ] || ln -s ../run "$r/var/run"
    # The image's release, in a file under /usr and one under /etc; the new image (below)
    # has the next one.
    mkdir -p "$r/usr/share/zlive-test"
    echo 1 > "$r/usr/share/zlive-test/release"
    echo 'release 1' > "$r/etc/zlive-release"
    mkdir -p "$work/medium-dir/live" "$work/medium-dir/.disk"
    mksquashfs "$r" "$work/medium-dir/live/filesystem.squashfs" -noappend -quiet -comp gzip >&2
    echo "$live_uuid" > "$work/medium-dir/.disk/live-uuid-zlive"
    echo 'zlive test live system, release 1' > "$work/medium-dir/.disk/info"
    truncate -s 128M "$work/medium.img"
    mkfs.ext4 -q -L ZLIVEMEDIUM -d "$work/medium-dir" "$work/medium.img"
    # The same medium as an ISO image (a CD-ROM), and that ISO as a file on two sticks, ext4
    # and vfat (findiso=), as a user keeps ISOs with GRUB loopback or Ventoy.
    rm -f "$cache"/medium-*.iso "$cache"/stick-*.img
    xorriso -as mkisofs -quiet -R -J -V ZLIVEISO -o "$work/medium.iso.tmp" "$work/medium-dir"
    iso_mib=$(( $(stat -c %s "$work/medium.iso.tmp") / 1048576 + 48 ))
    mkdir -p "$work/stick-dir/isos"
    cp "$work/medium.iso.tmp" "$work/stick-dir/isos/live.iso"
    truncate -s "${iso_mib}M" "$work/stick-ext4.tmp"
    mkfs.ext4 -q -L ZLIVESTICK -d "$work/stick-dir" "$work/stick-ext4.tmp"
    truncate -s "${iso_mib}M" "$work/stick-vfat.tmp"
    mkfs.vfat -n ZLIVESTICK "$work/stick-vfat.tmp" >/dev/null
    mmd -i "$work/stick-vfat.tmp" ::/isos
    mcopy -i "$work/stick-vfat.tmp" "$work/medium.iso.tmp" ::/isos/live.iso
    mv "$work/stick-ext4.tmp" "$cache/stick-ext4-$root_key.img"
    mv "$work/stick-vfat.tmp" "$cache/stick-vfat-$root_key.img"
    mv "$work/medium.iso.tmp" "$cache/medium-$root_key.iso"
    # Another live medium, as an old stick or a second image would be: another live-uuid.
    echo "5a11ce00-7e57-4000-8000-00000000dead" > "$work/medium-dir/.disk/live-uuid-zlive"
    truncate -s 128M "$work/medium-other.img"
    mkfs.ext4 -q -L OTHERMEDIUM -d "$work/medium-dir" "$work/medium-other.img"
    mv "$work/medium-other.img" "$cache/medium-other.tmp"
    # A new image of the same system, as the next ISO brings it: the same live-uuid, another
    # squashfs (made later), the release files changed and one more file under /usr.
    echo "$live_uuid" > "$work/medium-dir/.disk/live-uuid-zlive"
    echo 'zlive test live system, release 2' > "$work/medium-dir/.disk/info"
    echo 2 > "$r/usr/share/zlive-test/release"
    echo 'release 2' > "$r/etc/zlive-release"
    echo 'new in release 2' > "$r/usr/share/zlive-test/added"
    sed -i 's/^Version: 1.0-1$/Version: 2.0-1/' "$r/var/lib/dpkg/status"
    sleep 1
    mksquashfs "$r" "$work/medium-dir/live/filesystem.squashfs" -noappend -quiet -comp gzip >&2
    truncate -s 128M "$work/medium-new.img"
    mkfs.ext4 -q -L ZLIVEMEDIUM -d "$work/medium-dir" "$work/medium-new.img"
    mv "$work/medium-new.img" "${medium%.img}-new.img"
    mv "$cache/medium-other.tmp" "${medium%.img}-other.img"
    mv "$work/medium.img" "$medium"
fi
# A disk whose ext4 needs journal recovery and has an orphan inode to process (a dirty
# internal disk, a hibernated system): mounting it read-only without noload would replay its
# journal, and even with noload ext4 truncates the orphan unless the block device itself is
# read-only.
dirty=$cache/dirty-ext4-orphan.img
if [ ! -f "$dirty" ]; then
    rm -f "$cache"/dirty-ext4*.img
    truncate -s 32M "$work/dirty.img"
    mkdir -p "$work/dirty-dir"
    head -c 1048576 /dev/urandom > "$work/dirty-dir/victim"
    mkfs.ext4 -q -L DIRTYDISK -d "$work/dirty-dir" "$work/dirty.img"
    victim=$(debugfs -R "stat /victim" "$work/dirty.img" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
    [ -n "$victim" ] || { echo "build-images: no inode for the orphan" >&2; exit 1; }
    debugfs -w -R "ssv last_orphan $victim" "$work/dirty.img" >/dev/null 2>&1
    debugfs -w -R "feature needs_recovery" "$work/dirty.img" >/dev/null 2>&1
    mv "$work/dirty.img" "$dirty"
fi

echo "KVER=$kver"
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
echo "INITRD_ZFS=$initrd_zfs"
echo "MEDIUM=$medium"
echo "MEDIUM_OTHER=${medium%.img}-other.img"
echo "MEDIUM_NEW=${medium%.img}-new.img"
echo "MEDIUM_ISO=${medium%.img}.iso"
echo "STICK_EXT4=$cache/stick-ext4-$root_key.img"
echo "STICK_VFAT=$cache/stick-vfat-$root_key.img"
echo "DIRTY_DISK=$dirty"
