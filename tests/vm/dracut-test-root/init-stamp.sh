#!/bin/bash
# The live root's first program when the boot benchmark gives init=/usr/lib/zlive-test/init-stamp:
# prints when the real init started (the same point for zlive's initrd and for live-boot's,
# which logs no switch-root), then becomes systemd.
read -r up _ < /proc/uptime
echo "ZLIVE-INIT-START uptime=$up" > /dev/console
exec /usr/lib/systemd/systemd "$@"
