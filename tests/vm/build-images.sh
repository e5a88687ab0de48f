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
stage=$cache/stage
rm -rf "$stage"
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
    rm -rf "$cache"/dracut-*
    cp -as /usr/lib/dracut "$dbase.tmp"
    cp -r "$stage/usr/lib/dracut/modules.d/50zlive" "$dbase.tmp/modules.d/50zlive"
    cp -r tests/vm/dracut-test "$dbase.tmp/modules.d/51zlive-test"
    cp -r tests/vm/dracut-test-root "$dbase.tmp/modules.d/52zlive-test-root"
    mv "$dbase.tmp" "$dbase"
fi

modules="bash systemd systemd-initrd systemd-journald systemd-udevd udev-rules dracut-systemd base fs-lib kernel-modules zlive zlive-test"
build_initrd() { # NAME EXTRA_MODULES
    local key out
    key=$(hash_of "$stage"/usr/bin/zlive "$stage"/lib/systemd/system-generators/zlive-generator \
        "$stage"/lib/systemd/system/zlive* "$stage"/etc/zlive/live-uuid <(echo "$kver $modules $2") "$dbase"/modules.d/5*/*)
    out=$cache/initrd-$1-$key.img
    if [ ! -f "$out" ]; then
        rm -f "$cache"/initrd-"$1"-*.img
        ZLIVE_STAGING=$stage dracutbasedir=$dbase dracut -q -f --no-hostonly --no-hostonly-cmdline \
            --kver "$kver" -m "$modules $2" --add-drivers "virtio_blk virtio_pci virtio_console xhci_pci ata_piix" \
            --compress zstd "$out.tmp" >&2
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}
initrd=$(build_initrd zlive "")
initrd_zfs=$(build_initrd zlive-zfs "zfs")

# The live root: a minimal systemd system (built by dracut from this machine's systemd, like
# an initrd, then made a root), whose default target runs the test agent and powers off; and
# zlive, for `zlive status` after switch-root.
root_key=$(hash_of tests/vm/dracut-test-root/* "$stage"/etc/zlive/live-uuid "$stage"/usr/bin/zlive "$stage"/lib/systemd/system-generators/zlive-generator \
    "$stage"/lib/systemd/system/zlive* /usr/lib/dracut/dracut-version.sh <(echo "$kver"))
medium=$cache/medium-$root_key.img
if [ ! -f "$medium" ] || [ ! -f "${medium%.img}.iso" ] || [ ! -f "$cache/stick-vfat-$root_key.img" ]; then
    rm -f "$cache"/medium-*.img
    r=$cache/rootfs
    rm -rf "$r" "$cache/medium-dir" "$cache/root.cpio"
    mkdir -p "$r"
    dracutbasedir=$dbase dracut -q -f --no-kernel --no-hostonly --no-hostonly-cmdline --no-early-microcode \
        --kver "$kver" -m "bash systemd systemd-journald zlive-test-root" --no-compress "$cache/root.cpio" >&2
    (cd "$r" && cpio -idm --quiet < "$cache/root.cpio")
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
    chmod 755 "$r/usr/lib/zlive-test/agent"
    chown 1000:1000 "$r/home/user"
    chmod 1777 "$r/tmp" "$r/var/tmp"
    echo "zlive-live" > "$r/etc/hostname"
    printf 'NAME="zlive test live system"\nID=zlive-test\n' > "$r/etc/os-release"
    printf 'image file\n' > "$r/etc/image-file"
    printf 'image profile\n' > "$r/home/user/.profile"
    chown 1000:1000 "$r/home/user/.profile"
    [ -e "$r/var/run" ] || ln -s ../run "$r/var/run"
    mkdir -p "$cache/medium-dir/live" "$cache/medium-dir/.disk"
    mksquashfs "$r" "$cache/medium-dir/live/filesystem.squashfs" -noappend -quiet -comp gzip >&2
    echo "$live_uuid" > "$cache/medium-dir/.disk/live-uuid-zlive"
    truncate -s 128M "$medium.tmp"
    mkfs.ext4 -q -L ZLIVEMEDIUM -d "$cache/medium-dir" "$medium.tmp"
    # The same medium as an ISO image (a CD-ROM), and that ISO as a file on two sticks, ext4
    # and vfat (findiso=), as a user keeps ISOs with GRUB loopback or Ventoy.
    rm -f "$cache"/medium-*.iso "$cache"/stick-*.img
    xorriso -as mkisofs -quiet -R -J -V ZLIVEISO -o "$cache/medium.iso.tmp" "$cache/medium-dir"
    iso_mib=$(( $(stat -c %s "$cache/medium.iso.tmp") / 1048576 + 48 ))
    mkdir -p "$cache/stick-dir/isos"
    cp "$cache/medium.iso.tmp" "$cache/stick-dir/isos/live.iso"
    truncate -s "${iso_mib}M" "$cache/stick-ext4.tmp"
    mkfs.ext4 -q -L ZLIVESTICK -d "$cache/stick-dir" "$cache/stick-ext4.tmp"
    rm -rf "$cache/stick-dir"
    truncate -s "${iso_mib}M" "$cache/stick-vfat.tmp"
    mkfs.vfat -n ZLIVESTICK "$cache/stick-vfat.tmp" >/dev/null
    mmd -i "$cache/stick-vfat.tmp" ::/isos
    mcopy -i "$cache/stick-vfat.tmp" "$cache/medium.iso.tmp" ::/isos/live.iso
    mv "$cache/stick-ext4.tmp" "$cache/stick-ext4-$root_key.img"
    mv "$cache/stick-vfat.tmp" "$cache/stick-vfat-$root_key.img"
    mv "$cache/medium.iso.tmp" "$cache/medium-$root_key.iso"
    # Another live medium, as an old stick or a second image would be: another live-uuid.
    echo "5a11ce00-7e57-4000-8000-00000000dead" > "$cache/medium-dir/.disk/live-uuid-zlive"
    truncate -s 128M "$medium.other.tmp"
    mkfs.ext4 -q -L OTHERMEDIUM -d "$cache/medium-dir" "$medium.other.tmp"
    rm -rf "$cache/medium-dir"
    mv "$medium.other.tmp" "${medium%.img}-other.img"
    mv "$medium.tmp" "$medium"
fi
# A disk whose ext4 needs journal recovery and has an orphan inode to process (a dirty
# internal disk, a hibernated system): mounting it read-only without noload would replay its
# journal, and even with noload ext4 truncates the orphan unless the block device itself is
# read-only.
dirty=$cache/dirty-ext4-orphan.img
if [ ! -f "$dirty" ]; then
    rm -f "$cache"/dirty-ext4*.img
    truncate -s 32M "$dirty.tmp"
    mkdir -p "$cache/dirty-dir"
    head -c 1048576 /dev/urandom > "$cache/dirty-dir/victim"
    mkfs.ext4 -q -L DIRTYDISK -d "$cache/dirty-dir" "$dirty.tmp"
    rm -rf "$cache/dirty-dir"
    victim=$(debugfs -R "stat /victim" "$dirty.tmp" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
    [ -n "$victim" ] || { echo "build-images: no inode for the orphan" >&2; exit 1; }
    debugfs -w -R "ssv last_orphan $victim" "$dirty.tmp" >/dev/null 2>&1
    debugfs -w -R "feature needs_recovery" "$dirty.tmp" >/dev/null 2>&1
    mv "$dirty.tmp" "$dirty"
fi

echo "KVER=$kver"
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
echo "INITRD_ZFS=$initrd_zfs"
echo "MEDIUM=$medium"
echo "MEDIUM_OTHER=${medium%.img}-other.img"
echo "MEDIUM_ISO=${medium%.img}.iso"
echo "STICK_EXT4=$cache/stick-ext4-$root_key.img"
echo "STICK_VFAT=$cache/stick-vfat-$root_key.img"
echo "DIRTY_DISK=$dirty"
