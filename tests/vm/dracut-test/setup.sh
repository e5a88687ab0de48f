#!/bin/sh
# Setup guest: /dev/vda is the pool disk, /dev/vdb a tar payload with setup-pool.sh and
# the files for the volume. Runs setup-pool.sh, then powers off.
set -e
echo "ZLIVE-SETUP-START"
udevadm wait --timeout=60 /dev/vda /dev/vdb
mkdir -p /payload
tar -xf /dev/vdb -C /payload
modprobe zfs
if sh -e /payload/setup-pool.sh; then
    echo "ZLIVE-SETUP-OK"
else
    echo "ZLIVE-SETUP-FAILED"
fi
sync
echo o > /proc/sysrq-trigger
sleep 30
