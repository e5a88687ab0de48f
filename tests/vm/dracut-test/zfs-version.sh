#!/bin/sh
# The simulation of an older OpenZFS for the boot tests (no older module builds for this
# kernel): a file with the version zlive.test.zfs-version= names, bind-mounted over
# /sys/module/zfs/version, where zlive reads the loaded module's version. Nothing without
# that parameter.
version=$(sed -n 's/.*zlive\.test\.zfs-version=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$version" ] || exit 0
printf '%s\n' "$version" > /run/zlive-test-zfs-version
mount --bind /run/zlive-test-zfs-version /sys/module/zfs/version
