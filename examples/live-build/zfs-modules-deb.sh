#!/usr/bin/env bash
# Packages this machine's DKMS build of OpenZFS (spl.ko, zfs.ko) for its newest kernel that
# has one, as zlive-zfs-modules-KVER_VERSION_amd64.deb in DIR. It provides zfs-modules, as
# Debian's prebuilt module packages do, so the image needs neither zfs-dkms nor a compiler.
# With KEY and CERT the modules are signed with them (DKMS's own signature taken off first).
# Usage: zfs-modules-deb.sh DIR [KEY CERT]
set -euo pipefail
dir=$(realpath "$1")
key=${2:-} cert=${3:-}
kver=$(for k in $(ls -1 /lib/modules); do
    ls /lib/modules/"$k"/updates/dkms/zfs.ko* >/dev/null 2>&1 && echo "$k"; done | sort -V | tail -n 1)
[ -n "$kver" ] || { echo "zfs-modules-deb: no DKMS-built zfs module here" >&2; exit 1; }
version=$(modinfo -F version "/lib/modules/$kver/updates/dkms/"zfs.ko*)
pkg=zlive-zfs-modules-$kver
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/DEBIAN" "$stage/lib/modules/$kver/updates/dkms"
cp /lib/modules/"$kver"/updates/dkms/{spl,zfs}.ko* "$stage/lib/modules/$kver/updates/dkms/"
if [ -n "$key" ]; then
    sign_file=$(ls -1 /usr/src/linux-headers-"$kver"/scripts/sign-file /usr/lib/linux-kbuild-*/scripts/sign-file \
        2>/dev/null | head -n 1)
    [ -n "$sign_file" ] || { echo "zfs-modules-deb: no sign-file (linux-headers-$kver)" >&2; exit 1; }
    for m in "$stage/lib/modules/$kver/updates/dkms/"*.ko; do
        [ -f "$m" ] || { echo "zfs-modules-deb: no uncompressed module to sign" >&2; exit 1; }
        # A new ELF file has no appended signature: DKMS's goes, and the debug sections with it.
        objcopy --strip-debug "$m" "$m.unsigned"
        mv "$m.unsigned" "$m"
        "$sign_file" sha256 "$key" "$cert" "$m"
    done
fi
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
