#!/usr/bin/env bash
# The live-build recipe's ISO (examples/live-build/build.sh) with the boot tests' agent added
# (tests/vm/live-build-test) and the console on the serial port, built once per content:
# $ZLIVE_VM_CACHE/live-build-KEY.iso: the recipe's defaults, Debian 13 with the ZFS module built
# by DKMS in the image and signed with the image's key, kept in the cache. Prints ISO=PATH and
# MODULE_SIGNING_PEM=PATH (the key's certificate).
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/image-env.sh"

deb=$(bash debian/build-deb.sh | tail -n 1)
# The image's module signing key, kept in the cache as a user keeps theirs: every build signs
# with it, and the Secure Boot test enrols its certificate.
signing=$cache/module-signing
bash examples/live-build/signing-key.sh "$signing"
[ -f "$signing/module-signing.pem" ] ||
    openssl x509 -inform DER -in "$signing/module-signing.der" -out "$signing/module-signing.pem"
# What the package installs (its files, not the .deb, whose timestamps change every build),
# the recipe, the test's additions and the kernel.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked"
key=$({ (cd "$unpacked" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        find examples/live-build tests/vm/live-build-test tests/vm/dracut-test-root/agent.sh \
            -type f -print0 | sort -z | xargs -0 sha256sum
        find examples/live-build tests/vm/live-build-test -type f -printf '%p %m\n' | sort
        sha256sum "$signing/module-signing.der"
        echo "$kver"; } | sha256sum | cut -c1-16)
iso=$cache/live-build-$key.iso
if [ ! -f "$iso" ]; then
    overlay=$(mktemp -d)
    cp -r tests/vm/live-build-test/. "$overlay/"
    install -Dm755 tests/vm/dracut-test-root/agent.sh "$overlay/includes.chroot/usr/lib/zlive-test/agent"
    started=$(date +%s)
    # One work directory for every build, so that live-build's cache/ (the bootstrap stage
    # and the downloaded packages) makes a rebuild after a change of zlive minutes shorter;
    # two source trees building at once take turns.
    work=$cache/live-build-work
    mkdir -p "$work"
    exec {lock}>"$cache/live-build.lock"
    flock "$lock"
    if [ ! -f "$iso" ]; then
        ZLIVE_DEB=$deb bash examples/live-build/build.sh --signing-key "$signing" \
            --append "console=ttyS0 systemd.journald.forward_to_console=1 panic=-1" \
            --overlay "$overlay" --workdir "$work/lb-trixie" "$work/live.iso" >&2
        rm -f "$cache"/live-build-*.iso
        mv "$work/live.iso" "$iso"
        echo "build-live-iso: the ISO took $(($(date +%s) - started)) s to build" >&2
    fi
    flock -u "$lock"
    rm -rf --one-file-system "$overlay"
fi
echo "ISO=$iso"
echo "MODULE_SIGNING_PEM=$signing/module-signing.pem"
