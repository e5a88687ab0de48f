#!/usr/bin/env bash
# The set-up zlive replaces, as an initrd for the boot benchmark: Debian's live-boot with
# zfs-initramfs and the seed's change (tests/vm/anchor/, the project's reference copy), for the
# lab's kernel, built once per content of those scripts in $ZLIVE_VM_CACHE/seed-anchor-KEY
# (a minimal Debian root by debootstrap, about 5 minutes). Prints SEED_INITRD=PATH.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/image-env.sh"
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >&2
key=$({ cat tests/vm/anchor/*.sh; echo "$kver"; } | sha256sum | cut -c1-16)
dir=$cache/seed-anchor-$key
if [ ! -f "$dir/initrd.seed" ]; then
    for old in "$cache"/seed-anchor-*; do
        [ "$old" = "$dir" ] || [ ! -d "$old" ] || rm -rf --one-file-system "$old"
    done
    bash tests/vm/anchor/seed-initrd.sh "$dir" "$kver" dpool >&2
fi
echo "SEED_INITRD=$dir/initrd.seed"
