#!/bin/bash
# dracut module for zlive: live-boot persistence on a ZFS zvol, as systemd units.
# Installed as modules.d/50zlive; include it with `dracut --add zlive`.
#
# ZLIVE_STAGING=DIR (optional) takes zlive's own files from a staged `make install
# DESTDIR=DIR` instead of the host, so test images can be built without installing zlive.

zlive_src() {
    printf '%s%s' "${ZLIVE_STAGING:-}" "$1"
}

# A file of zlive's below systemd's directory: /usr/lib/systemd/SUBPATH (make install), or
# /lib/systemd/SUBPATH (the Debian package, as bookworm's systemd packages do).
zlive_systemd() {
    if [ -e "$(zlive_src "/usr/lib/systemd/$1")" ] || [ ! -e "$(zlive_src "/lib/systemd/$1")" ]; then
        zlive_src "/usr/lib/systemd/$1"
    else
        zlive_src "/lib/systemd/$1"
    fi
}

# Only when asked for: a live initrd is a deliberate choice.
check() {
    require_binaries zpool zfs e2fsck || return 1
    [ -x "$(zlive_systemd system-generators/zlive-generator)" ] || return 1
    [ -x "$(zlive_src /usr/bin/zlive)" ] || return 1
    return 255
}

depends() {
    # Passphrases (ZFS keys, LUKS) are asked through systemd's password agents; LUKS
    # containers are opened by systemd-cryptsetup when cryptsetup is installed.
    local deps="systemd-initrd systemd-ask-password"
    if [ -x "$systemdutildir/systemd-cryptsetup" ] && command -v cryptsetup >/dev/null; then
        deps="$deps systemd-cryptsetup"
    fi
    echo "$deps"
    return 0
}

installkernel() {
    # The file systems a live medium, or the stick holding an ISO file (findiso=), can have,
    # with the code pages vfat mounts with; USB disks and CD-ROMs, for the medium scan.
    hostonly='' instmods zfs overlay squashfs loop ext4 iso9660 vfat exfat udf \
        nls_cp437 nls_iso8859-1 nls_utf8 sr_mod cdrom usb_storage uas
}

install() {
    local unit
    inst_binary "$(zlive_systemd system-generators/zlive-generator)" \
        "$systemdutildir/system-generators/zlive-generator"
    inst_binary "$(zlive_src /usr/bin/zlive)" /usr/bin/zlive
    # Every static unit zlive installs (units/ in the source tree); each is conditioned on
    # the initrd, so all of them belong there.
    for unit in "$(zlive_src /usr/lib/systemd/system)"/zlive-*.service \
        "$(zlive_src /lib/systemd/system)"/zlive-*.service; do
        [ -e "$unit" ] || continue
        inst_simple "$unit" "$systemdsystemunitdir/${unit##*/}"
    done

    # ZFS: the tools, the udev rules that create /dev/zvol/POOL/VOL, and libgcc_s, which
    # libzfs loads at run time (pthread_cancel).
    inst_multiple zpool zfs mount umount losetup cp e2fsck fsck fsck.ext4 mkfs.ext4 e2label blkid systemd-ask-password
    inst_multiple -o dmsetup
    # mount -t zfs: persistence on a dataset, mounted with zfsutil where zlive says.
    inst_multiple -o mount.zfs
    # persistence-create: a partition added in the medium's free space (sfdisk, partx), only
    # where blkid and wipefs find nothing, and a pool any current OpenZFS imports (its
    # compatibility= feature set).
    inst_multiple -o sfdisk partx wipefs /usr/share/zfs/compatibility.d/openzfs-2.1-linux
    inst_multiple -o /lib/udev/zvol_id /usr/lib/udev/zvol_id
    inst_rules 60-zvol.rules 60-persistent-storage.rules
    inst_libdir_file "libgcc_s.so*"
    # No /etc/hostid from the build host: a live system runs on many machines, and zlive
    # gives each its own (see zlive.kernel-command-line(7), HOST ID).

    # The live-uuid that ties the initrd to its medium (.disk/live-uuid* on the medium), as
    # live-boot's /conf/uuid.conf does: write it to /etc/zlive/live-uuid before running dracut.
    if [ -s "$(zlive_src /etc/zlive/live-uuid)" ]; then
        inst_simple "$(zlive_src /etc/zlive/live-uuid)" /etc/zlive/live-uuid
    fi

    # A live-boot command line has no root=. OpenZFS's dracut module reads a missing root=
    # as root=zfs:AUTO and would take over sysroot.mount; root=zlive keeps it (and dracut's
    # own root handling) out. /proc/cmdline still wins for anyone who gives root=.
    mkdir -p "$initdir/etc/cmdline.d"
    printf 'root=zlive\n' > "$initdir/etc/cmdline.d/50-zlive.conf"
    inst_hook cmdline 90 "$moddir/parse-zlive.sh"

    # No floppy driver in the initrd: `zpool import` finds pool members with libblkid, which
    # reads every device in /proc/partitions, and each read of an empty floppy drive (QEMU's
    # and some hypervisors' default machines have one) fails after about a second, on every
    # import attempt. The live system loads the driver as usual after switch-root.
    mkdir -p "$initdir/etc/modprobe.d"
    printf '# zlive: see module-setup.sh\nblacklist floppy\n' > "$initdir/etc/modprobe.d/zlive-no-floppy.conf"

    # The way back out at shutdown: built in /run/initramfs before switch-root when zlive
    # imported a pool (the unit's conditions say when).
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target zlive-exitrd.service
}
