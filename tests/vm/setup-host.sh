#!/usr/bin/env bash
# Installs everything zlive's build, tests and demo need on a fresh Debian 12 machine:
# the backports + contrib apt sources, the backports kernel with OpenZFS (DKMS), dracut,
# QEMU with its UEFI firmware (OVMF) and the image tools, and the Rust tools used by the
# test command.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "setup-host: must run as root" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
need_update=0

# contrib (ZFS) for bookworm and bookworm-backports, same mirror and keyring as the base entry.
src=/etc/apt/sources.list.d/zlive-backports.sources
if [ ! -f "$src" ] || ! grep -q "^Components: contrib$" "$src"; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    cat >"$src" <<SRC
Types: deb
URIs: $uri
Suites: bookworm bookworm-updates
Components: contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    need_update=1
fi

pkgs=(linux-image-amd64 linux-headers-amd64 zfs-dkms zfsutils-linux dracut-core dracut
      qemu-system-x86 squashfs-tools e2fsprogs pandoc busybox-static cpio zstd man-db groff-base
      jq zfs-dracut cryptsetup-bin xorriso mtools dosfstools lintian attr acl fdisk ovmf
      openssh-client openssh-server sanoid python3-virt-firmware openssl)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# systemd 254 from backports comes with the ZFS stack; the tests expect it.
if ! dpkg --compare-versions "$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || echo 0)" ge 254; then
    missing+=(systemd)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$need_update" = 0 ] || true
    apt-get update -q
    # zfs-dkms asks a debconf question about its licence; answer it up front.
    echo "zfs-dkms zfs-dkms/note-incompatible-licenses note true" | debconf-set-selections
    apt-get install -y -q -t bookworm-backports --no-install-recommends "${missing[@]}"
fi

kver=$(zlive_kver() { ls -1 /lib/modules | while read -r k; do
           [ -e "/lib/modules/$k/updates/dkms/zfs.ko" ] || [ -e "/lib/modules/$k/updates/dkms/zfs.ko.xz" ] \
               || [ -e "/lib/modules/$k/updates/dkms/zfs.ko.zst" ] && echo "$k"; done | sort -V | tail -n1; }; zlive_kver)
if [ -z "$kver" ]; then
    echo "setup-host: no kernel with a DKMS-built zfs module under /lib/modules; trying dkms autoinstall" >&2
    dkms autoinstall || true
    echo "setup-host: still no zfs.ko; check 'dkms status'" >&2
    exit 1
fi
[ -e "/boot/vmlinuz-$kver" ] || { echo "setup-host: /boot/vmlinuz-$kver missing" >&2; exit 1; }

# Rust tools for the test command.
if ! command -v cargo >/dev/null; then
    echo "setup-host: cargo not found; install Rust first" >&2
    exit 1
fi
echo "setup-host: ready (kernel $kver)"
