# Sourced by the image builders (build-images.sh, build-live-iso.sh) after `set -euo pipefail`:
# top, the source tree (also the working directory); cache, $ZLIVE_VM_CACHE (default
# /var/cache/zlive-vm: outside the tree, so a fresh clone reuses it); kver, the
# newest kernel with a DKMS-built zfs module (the kernel every test guest runs, and the one the
# live-build ISO's module package is for).
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${ZLIVE_VM_CACHE:-/var/cache/zlive-vm}
mkdir -p "$cache"
cd "$top"
kver=$(for k in $(ls -1 /lib/modules); do
    ls /lib/modules/"$k"/updates/dkms/zfs.ko* >/dev/null 2>&1 && echo "$k"; done | sort -V | tail -n1)
[ -n "$kver" ] || { echo "${0##*/}: no kernel with OpenZFS; run tests/vm/setup-host.sh" >&2; exit 1; }
