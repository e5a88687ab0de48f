#!/bin/sh
# Runs in the initrd after initrd.target, before cleanup; /run moves into the live root.
out=/run/zlive-test
mkdir -p "$out"
# When each step ran (seconds since boot), to see what a slow capture waited for.
step() { read -r up _ < /proc/uptime; echo "$up $*" >> "$out/capture-times.txt"; }
step start
systemctl list-units --all --no-pager --plain --no-legend > "$out/units.txt" 2>&1
systemctl --failed --no-pager --plain --no-legend > "$out/failed.txt" 2>&1
journalctl -b -o short-monotonic --no-pager > "$out/journal.txt" 2>&1
step journal
cp /proc/self/mountinfo "$out/initrd-mountinfo.txt"
dmesg > "$out/dmesg.txt" 2>&1
# What `journalctl -u` shows for every entry mount: PID 1's lines and zlive's own.
for unit in $(systemctl list-units --all --plain --no-legend 'sysroot-*.mount' | awk '{print $1}'); do
    echo "## $unit"
    journalctl -b -u "$unit" -o cat --no-pager
done > "$out/unit-journals.txt" 2>&1
step status
# Which unit waited for which, and how long (the boot benchmark prints it).
systemd-analyze critical-chain --no-pager initrd.target > "$out/critical-chain.txt" 2>&1
ZLIVE_DEBUG_DBUS=1 /usr/bin/zlive status > "$out/status.txt" 2>"$out/status-debug.txt"
echo "exit=$?" >> "$out/status.txt"
step status-json
ZLIVE_DEBUG_DBUS=1 /usr/bin/zlive status --json > "$out/status-json.txt" 2>>"$out/status-debug.txt"
step end
exit 0
