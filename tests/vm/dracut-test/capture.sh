#!/bin/sh
# Runs in the initrd after initrd.target, before cleanup; /run moves into the live root.
out=/run/zlive-test
mkdir -p "$out"
systemctl list-units --all --no-pager --plain --no-legend > "$out/units.txt" 2>&1
systemctl --failed --no-pager --plain --no-legend > "$out/failed.txt" 2>&1
journalctl -b -o short-monotonic --no-pager > "$out/journal.txt" 2>&1
journalctl -b -o export --no-pager -t zlive > "$out/journal-zlive.export" 2>&1
cp /proc/self/mountinfo "$out/initrd-mountinfo.txt"
dmesg > "$out/dmesg.txt" 2>&1 || cat /dev/kmsg > /dev/null
if [ -x /usr/bin/zlive ]; then
    /usr/bin/zlive status > "$out/status.txt" 2>&1; echo "exit=$?" >> "$out/status.txt"
fi
exit 0
