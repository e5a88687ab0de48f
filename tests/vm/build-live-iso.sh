#!/usr/bin/env bash
# The live-build recipe's ISO (examples/live-build/build.sh) with the boot tests' agent added
# (tests/vm/live-build-test) and the console on the serial port, built once per content:
# $ZLIVE_VM_CACHE/live-build-KEY.iso. The ZFS module is this machine's DKMS build
# (--zfs-modules host), which saves building it again in the image. Prints ISO=PATH.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/image-env.sh"

deb=$(bash debian/build-deb.sh | tail -n 1)
# What the package installs (its files, not the .deb, whose timestamps change every build),
# the recipe, the test's additions and the kernel.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked"
key=$({ (cd "$unpacked" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        find examples/live-build tests/vm/live-build-test tests/vm/dracut-test-root/agent.sh \
            -type f -print0 | sort -z | xargs -0 sha256sum
        find examples/live-build tests/vm/live-build-test -type f -printf '%p %m\n' | sort
        echo "$kver"; } | sha256sum | cut -c1-16)
iso=$cache/live-build-$key.iso
if [ ! -f "$iso" ]; then
    rm -f "$cache"/live-build-*.iso
    overlay=$(mktemp -d)
    cp -r tests/vm/live-build-test/. "$overlay/"
    install -Dm755 tests/vm/dracut-test-root/agent.sh "$overlay/includes.chroot/usr/lib/zlive-test/agent"
    started=$(date +%s)
    # A work directory of this build's own: two source trees may build at once.
    work=$(mktemp -d "$cache/live-build-work.XXXXXX")
    ZLIVE_DEB=$deb bash examples/live-build/build.sh --zfs-modules host \
        --append "console=ttyS0 systemd.journald.forward_to_console=1 panic=-1" \
        --overlay "$overlay" --workdir "$work/lb" "$work/live.iso" >&2
    mv "$work/live.iso" "$iso"
    rm -rf --one-file-system "$overlay" "$work"
    echo "build-live-iso: the ISO took $(($(date +%s) - started)) s to build" >&2
fi
echo "ISO=$iso"
