#!/bin/bash
# Test-only dracut module: builds pools in a setup guest, and captures the initrd's state
# (units, journal) before switch-root for the boot tests. Never part of a real image.
check() { return 255; }
depends() { echo systemd-initrd; }
install() {
    inst_multiple tar mkfs.ext4 tune2fs debugfs journalctl systemctl sync sleep base64 od dd \
        head tail sed grep cat ls mkdir chmod chown ln stat sha256sum truncate find sort awk dmesg mkfifo mknod tr modprobe mount \
        mktemp readlink rm
    # Setup guests make LUKS containers.
    inst_multiple cryptsetup
    inst_script "$moddir/setup.sh" /usr/lib/zlive-test/setup.sh
    inst_script "$moddir/capture.sh" /usr/lib/zlive-test/capture.sh
    inst_script "$moddir/cut.sh" /usr/lib/zlive-test/cut.sh
    inst_script "$moddir/zfs-version.sh" /usr/lib/zlive-test/zfs-version.sh
    inst_simple "$moddir/zlive-test-zfs-version.conf" "$systemdsystemunitdir/zlive-load-zfs.service.d/zlive-test-zfs-version.conf"
    inst_simple "$moddir/zlive-test-cut.service" "$systemdsystemunitdir/zlive-test-cut.service"
    inst_simple "$moddir/zlive-test-setup.service" "$systemdsystemunitdir/zlive-test-setup.service"
    inst_simple "$moddir/zlive-test-capture.service" "$systemdsystemunitdir/zlive-test-capture.service"
    inst_simple "$moddir/zlive-test-dump.service" "$systemdsystemunitdir/zlive-test-dump.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target zlive-test-setup.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target zlive-test-capture.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target zlive-test-cut.service
    $SYSTEMCTL -q --root "$initdir" add-wants emergency.target zlive-test-dump.service
}
