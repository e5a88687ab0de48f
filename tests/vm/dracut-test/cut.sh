#!/bin/sh
# zlive.test.cut-in-initrd=DIR: commit DIR's metadata (fsync of the directory: a rename in it
# reaches the disk, file data written with delayed allocation does not), then have the
# harness kill QEMU. What an unlucky power cut right after the initrd's work does.
dir=$(sed -n 's/.*zlive\.test\.cut-in-initrd=\([^ ]*\).*/\1/p' /proc/cmdline)
sync "$dir"
echo "ZLIVE-CUT-POWER"
sleep 600
