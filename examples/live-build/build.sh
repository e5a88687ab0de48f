#!/usr/bin/env bash
# Builds a Debian live ISO whose initrd is dracut with zlive (not live-boot), with OpenZFS from
# contrib, its ZFS modules signed with the image's own key: Debian 13 (trixie) by default, or
# Debian 12 (bookworm) with OpenZFS, systemd, dracut and the kernel from bookworm-backports.
# Run as root from anywhere in the source tree:
#
#     examples/live-build/build.sh [OPTIONS] [OUTPUT.iso]      (default target/live-build/zlive-live.iso)
#
#   --distribution trixie|bookworm   the Debian release (default trixie)
#   --zfs-modules dkms   build the ZFS module in the image with zfs-dkms (the default; slow)
#   --zfs-modules host   take this machine's DKMS build instead; its kernel must be the one
#                        the image gets (checked by apt in the chroot): a bookworm machine's
#                        for --distribution bookworm
#   --append "PARAMS"    more kernel parameters on the live boot menu entries
#   --overlay DIR        a live-build config/ tree merged over this one (hooks, includes)
#   --workdir DIR        where live-build works (default target/live-build/work; wiped first)
#   --signing-key DIR    the image's module signing key (default /var/lib/zlive/module-signing):
#                        made there on the first build, reused by every later one; the ZFS
#                        modules are signed with it, for Secure Boot (see the README)
#
# ZLIVE_DEB=path.deb uses that package instead of building it with `make deb`;
# ZLIVE_MIRROR=URL the Debian mirror (default: this machine's, else deb.debian.org).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

zfs_modules=dkms append="" overlay="" workdir=$top/target/live-build/work
signing=/var/lib/zlive/module-signing distribution=trixie
output=$top/target/live-build/zlive-live.iso
while [ $# -gt 0 ]; do
    case "$1" in
        --zfs-modules) zfs_modules=$2; shift 2 ;;
        --append) append=$2; shift 2 ;;
        --overlay) overlay=$(cd "$2" && pwd); shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --signing-key) signing=$2; shift 2 ;;
        --distribution) distribution=$2; shift 2 ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
        *) output=$1; shift ;;
    esac
done
case "$zfs_modules" in dkms | host) ;; *) echo "build.sh: --zfs-modules dkms|host" >&2; exit 2 ;; esac
# Debian 12's OpenZFS, systemd and dracut are too old for zlive: they come from its backports.
case "$distribution" in
    trixie) backports=false areas="main contrib non-free-firmware" ;;
    bookworm) backports=true areas="main contrib" ;;
    *) echo "build.sh: --distribution trixie|bookworm" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "build.sh: live-build needs root" >&2; exit 1; }
output=$(realpath -m "$output")
log() { printf 'live-build: %s\n' "$*" >&2; }

# The tools (idempotent).
if ! command -v lb >/dev/null || ! command -v debootstrap >/dev/null || ! command -v xorriso >/dev/null \
    || ! command -v openssl >/dev/null; then
    tools=(live-build debootstrap xorriso squashfs-tools mtools dosfstools openssl)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${tools[@]}" >&2 ||
        { apt-get update -q >&2 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${tools[@]}" >&2; }
fi

deb=${ZLIVE_DEB:-$(cd "$top" && make -s deb | tail -n 1)}
[ -f "$deb" ] || { echo "build.sh: no zlive package ($deb)" >&2; exit 1; }
mirror=${ZLIVE_MIRROR:-$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}

# live-build mounts /proc, /sys and /dev/pts in its chroot; a failed build can leave them
# there, and deleting the work directory would then delete through them.
unmount_under() {
    findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r | xargs -r -n 1 umount -l
}
workdir=$(realpath -m "$workdir")
unmount_under "$workdir"
# A new build each time, but the downloaded packages (live-build's cache/) are kept.
if [ -d "$workdir/cache" ]; then
    rm -rf --one-file-system "$workdir.cache"
    mv "$workdir/cache" "$workdir.cache"
fi
rm -rf --one-file-system "$workdir"
mkdir -p "$workdir" "$(dirname "$output")"
[ ! -d "$workdir.cache" ] || mv "$workdir.cache" "$workdir/cache"
trap 'unmount_under "$workdir"' EXIT
cd "$workdir"
# The ISO's own apt sources point at deb.debian.org whatever mirror built it.
lb config --quiet \
    --distribution "$distribution" --archive-areas "$areas" \
    --backports "$backports" --updates true --security true \
    --mirror-bootstrap "$mirror" --mirror-chroot "$mirror" \
    --mirror-chroot-security "${mirror%/debian}/debian-security" \
    --mirror-binary http://deb.debian.org/debian \
    --mirror-binary-security http://security.debian.org/debian-security \
    --initramfs none --apt-recommends false \
    --linux-flavours amd64 \
    --bootappend-live "boot=live components noeject persistence quiet splash${append:+ $append}" \
    --chroot-squashfs-compression-type zstd \
    --debian-installer none --memtest none --firmware-binary false --firmware-chroot false \
    --iso-volume "zlive live" --iso-application "zlive live system" \
    --image-name zlive-live >&2

cp -r "$here"/config/. config/
[ "$backports" = false ] || install -Dm644 "$here/zlive-backports.pref.chroot" config/archives/zlive-backports.pref.chroot
[ -z "$overlay" ] || cp -r "$overlay"/. config/
mkdir -p config/packages.chroot config/includes.chroot/etc/zlive
cp "$deb" config/packages.chroot/
# Ties the initrd to this medium (zlive prefers the medium with its live-uuid); the binary
# hook copies it to the medium's .disk/.
cat /proc/sys/kernel/random/uuid > config/includes.chroot/etc/zlive/live-uuid

# The module signing key: Secure Boot's kernel loads only modules signed by a key the machine
# trusts, so the ZFS modules are signed with this image's own key, which a user enrols once
# (zlive secure-boot --enroll). Its certificate goes into the image; the private key never does.
bash "$here/signing-key.sh" "$signing"
key=$signing/module-signing.key cert=$signing/module-signing.der
log "the ZFS modules are signed with $key: keep it safe and private (whoever has it can sign"
log "  modules every machine that enrolled it trusts), and back it up: later images must be"
log "  signed with it, or machines that enrolled this one refuse their ZFS module"
install -Dm644 "$cert" config/includes.chroot/usr/share/zlive/secure-boot.der
# And on the medium, for MokManager's "Enroll key from disk" on a machine that has not
# booted the stick yet.
install -Dm644 "$cert" config/includes.binary/zlive/secure-boot.der

case "$zfs_modules" in
    dkms)
        printf 'zfs-dkms\nlinux-headers-amd64\n' > config/package-lists/zfs-modules.list.chroot
        # zfs-dkms shows a licence note: answer it up front.
        mkdir -p config/preseed
        echo "zfs-dkms zfs-dkms/note-incompatible-licenses note true" > config/preseed/zfs-dkms.cfg.chroot
        # DKMS signs what it builds with the key its framework configuration names (else it
        # makes a key of its own, in the image). The key is there only while the chroot
        # builds; the hook 0905 removes it and checks the modules' signer.
        before=config/includes.chroot_before_packages
        install -Dm600 "$key" "$before/etc/dkms/zlive-module-signing.key"
        install -Dm644 "$cert" "$before/etc/dkms/zlive-module-signing.der"
        mkdir -p "$before/etc/dkms/framework.conf.d"
        printf 'mok_signing_key=/etc/dkms/zlive-module-signing.key\nmok_certificate=/etc/dkms/zlive-module-signing.der\n' \
            > "$before/etc/dkms/framework.conf.d/zlive-module-signing.conf"
        ;;
    host)
        bash "$here/zfs-modules-deb.sh" config/packages.chroot "$key" "$cert" >&2
        ;;
esac

log "building in $workdir (log: $workdir/build.log)"
started=$(date +%s)
if ! lb build > build.log 2>&1; then
    tail -n 40 build.log >&2
    echo "build.sh: lb build failed; the whole log is $workdir/build.log" >&2
    exit 1
fi
iso=$(ls -1 ./*.hybrid.iso ./*.iso 2>/dev/null | head -n 1)
[ -n "$iso" ] || { echo "build.sh: lb build made no ISO; see $workdir/build.log" >&2; exit 1; }
mv "$iso" "$output"
log "$(du -m "$output" | cut -f1) MiB in $(($(date +%s) - started)) s: $output"
echo "$output"
