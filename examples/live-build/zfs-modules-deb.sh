#!/usr/bin/env bash
# Packages this machine's DKMS build of OpenZFS (spl.ko, zfs.ko) for its newest kernel that
# has one, as zlive-zfs-modules-KVER_VERSION_amd64.deb in DIR. It provides zfs-modules, as
# Debian's prebuilt module packages do, so the image needs neither zfs-dkms nor a compiler.
# Usage: zfs-modules-deb.sh DIR
set -euo pipefail
dir=$(realpath "$1")
kver=$(for k in $(ls -1 /lib/modules); do
    ls /lib/modules/"$k"/updates/dkms/zfs.ko* >/dev/null 2>&1 && echo "$k"; done | sort -V | tail -n 1)
[ -n "$kver" ] || { echo "zfs-modules-deb: no DKMS-built zfs module here" >&2; exit 1; }
version=$(modinfo -F version "/lib/modules/$kver/updates/dkms/"zfs.ko*)
pkg=zlive-zfs-modules-$kver
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/DEBIAN" "$stage/lib/modules/$kver/updates/dkms"
cp /lib/modules/"$kver"/updates/dkms/{spl,zfs}.ko* "$stage/lib/modules/$kver/updates/dkms/"
cat > "$stage/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: amd64
Maintainer: zlive developers <zlive@localhost>
Depends: linux-image-$kver
Provides: zfs-modules
Section: contrib/kernel
Priority: optional
Description: OpenZFS $version kernel modules for Linux $kver (built by DKMS)
 The spl and zfs modules of the machine that built this live image, so that
 the image needs no zfs-dkms and no compiler.
EOF
printf '#!/bin/sh\nset -e\ndepmod -a %s\n' "$kver" > "$stage/DEBIAN/postinst"
chmod 755 "$stage/DEBIAN/postinst"
out=$dir/${pkg}_${version}_amd64.deb
dpkg-deb --root-owner-group --build "$stage" "$out" >/dev/null
echo "$out"
