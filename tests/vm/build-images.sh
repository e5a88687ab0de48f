#!/usr/bin/env bash
# Builds, or reuses from target/vm-cache (keyed by content), everything the boot tests need:
# a staged `make install`, the initrds (with and without OpenZFS's dracut module), the live
# root squashfs and the medium. Prints KEY=VALUE lines for the harness.
set -euo pipefail
shopt -s inherit_errexit
top=$(cd "$(dirname "$0")/../.." && pwd)
cache=$top/target/vm-cache
mkdir -p "$cache"
cd "$top"

kver=$(for k in $(ls -1 /lib/modules); do
    ls /lib/modules/"$k"/updates/dkms/zfs.ko* >/dev/null 2>&1 && echo "$k"; done | sort -V | tail -n1)
[ -n "$kver" ] || { echo "build-images: no kernel with OpenZFS; run tests/vm/setup-host.sh" >&2; exit 1; }
kernel=/boot/vmlinuz-$kver

# zlive itself, installed into a staging directory.
make -s build >&2
stage=$cache/stage
rm -rf "$stage"
make -s install DESTDIR="$stage" >&2

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# A dracut tree of our own: the system's modules plus zlive and the test module, so that
# test images never touch the machine's dracut or initrd.
dracut_key=$(hash_of "$stage"/usr/lib/dracut/modules.d/50zlive/* tests/vm/dracut-test/* /usr/lib/dracut/dracut-version.sh)
dbase=$cache/dracut-$dracut_key
if [ ! -d "$dbase" ]; then
    rm -rf "$cache"/dracut-*
    cp -as /usr/lib/dracut "$dbase.tmp"
    cp -r "$stage/usr/lib/dracut/modules.d/50zlive" "$dbase.tmp/modules.d/50zlive"
    cp -r tests/vm/dracut-test "$dbase.tmp/modules.d/51zlive-test"
    mv "$dbase.tmp" "$dbase"
fi

modules="bash systemd systemd-initrd systemd-journald systemd-udevd udev-rules dracut-systemd base fs-lib kernel-modules zlive zlive-test"
build_initrd() { # NAME EXTRA_MODULES
    local key out
    key=$(hash_of "$stage"/usr/bin/zlive "$stage"/usr/lib/systemd/system-generators/zlive-generator \
        "$stage"/usr/lib/systemd/system/zlive* <(echo "$kver $modules $2") "$dbase"/modules.d/5*/*)
    out=$cache/initrd-$1-$key.img
    if [ ! -f "$out" ]; then
        rm -f "$cache"/initrd-"$1"-*.img
        ZLIVE_STAGING=$stage dracutbasedir=$dbase dracut -q -f --no-hostonly --no-hostonly-cmdline \
            --kver "$kver" -m "$modules $2" --add-drivers "virtio_blk virtio_pci virtio_console" \
            --compress zstd "$out.tmp" >&2
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}
initrd=$(build_initrd zlive "")
initrd_zfs=$(build_initrd zlive-zfs "zfs")

# The live root: busybox, the agent as /sbin/init, zlive for `zlive status`.
root_key=$(hash_of tests/vm/agent.sh /bin/busybox "$stage"/usr/bin/zlive)
medium=$cache/medium-$root_key.img
if [ ! -f "$medium" ]; then
    rm -f "$cache"/medium-*.img
    r=$cache/rootfs
    rm -rf "$r" "$cache/medium-dir"
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,home/user,var/lib,var/tmp,mnt}
    cp /bin/busybox "$r/bin/busybox"
    for app in $("$r/bin/busybox" --list); do
        [ -e "$r/bin/$app" ] || ln -s busybox "$r/bin/$app"
    done
    install -m755 tests/vm/agent.sh "$r/sbin/init"
    install -m755 "$stage/usr/bin/zlive" "$r/usr/bin/zlive"
    chown 1000:1000 "$r/home/user"
    chmod 1777 "$r/tmp" "$r/var/tmp"
    echo "zlive-live" > "$r/etc/hostname"
    printf 'NAME="zlive test live system"\nID=zlive-test\n' > "$r/etc/os-release"
    printf 'image file\n' > "$r/etc/image-file"
    printf 'image profile\n' > "$r/home/user/.profile"
    chown 1000:1000 "$r/home/user/.profile"
    mkdir -p "$cache/medium-dir/live"
    mksquashfs "$r" "$cache/medium-dir/live/filesystem.squashfs" -noappend -quiet -comp gzip >&2
    truncate -s 64M "$medium.tmp"
    mkfs.ext4 -q -L ZLIVEMEDIUM -d "$cache/medium-dir" "$medium.tmp"
    mv "$medium.tmp" "$medium"
fi

echo "KVER=$kver"
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
echo "INITRD_ZFS=$initrd_zfs"
echo "MEDIUM=$medium"
