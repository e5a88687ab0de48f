# Sourced by the image builders: ZFS_KVER, the newest kernel with a DKMS-built zfs module (the
# kernel every test guest runs, and the one the live-build ISO's module package is for).
ZFS_KVER=$(for k in $(ls -1 /lib/modules); do
    ls /lib/modules/"$k"/updates/dkms/zfs.ko* >/dev/null 2>&1 && echo "$k"; done | sort -V | tail -n1)
[ -n "$ZFS_KVER" ] || { echo "${0##*/}: no kernel with OpenZFS; run tests/vm/setup-host.sh" >&2; exit 1; }
