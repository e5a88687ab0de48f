#!/bin/bash
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
# Which unit waited for which, and how long (the boot benchmark prints it). systemd-analyze
# critical-chain refuses until the boot has finished, which it never has in the initrd; so the
# chain is walked here the same way, from the units' timestamps: from initrd.target to the
# After= dependency that became active (or, for a oneshot service, finished) last before it
# started, and on. @ is when a unit started (seconds since boot), + how long it took.
# Asking PID 1 for every unit's properties takes seconds under TCG, and this capture delays
# the switch-root: only boots that ask for the chain (the benchmark's) pay for it.
if grep -qw zlive.test.chain /proc/cmdline; then
step chain
systemctl show -p Id -p After -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic \
    -p InactiveEnterTimestampMonotonic '*' 2>&1 |
    awk 'BEGIN { RS = ""; FS = "\n" }
{
    id = ""; a = ""; s = 0; e = 0; d = 0
    for (i = 1; i <= NF; i++) {
        k = substr($i, 1, index($i, "=") - 1); v = substr($i, index($i, "=") + 1)
        if (k == "Id") id = v
        else if (k == "After") a = v
        else if (k == "InactiveExitTimestampMonotonic") s = v + 0
        else if (k == "ActiveEnterTimestampMonotonic") e = v + 0
        else if (k == "InactiveEnterTimestampMonotonic") d = v + 0
    }
    # A oneshot service that has run is never active: it is done when it went inactive.
    if (e == 0 && d > s && s > 0) e = d
    after[id] = a; start[id] = s; up[id] = e
}
END {
    u = "initrd.target"; indent = ""; gap = 0
    while (u != "" && n++ < 40) {
        t = start[u] ? start[u] : up[u]
        line = sprintf("%s%s @%.3fs", indent, u, t / 1e6)
        if (start[u] && up[u] > start[u]) line = line sprintf(" +%.3fs", (up[u] - start[u]) / 1e6)
        if (gap >= 100000) line = line sprintf(" (done %.3fs before the unit above started)", gap / 1e6)
        print line
        best = ""; bt = 0
        k = split(after[u], deps, " ")
        for (i = 1; i <= k; i++) {
            # Names with a backslash come quoted, the backslash doubled.
            d = deps[i]; gsub(/"/, "", d); gsub(/\\\\/, "\\", d)
            if (up[d] > bt && up[d] <= t) { bt = up[d]; best = d }
        }
        gap = t - bt; u = best; indent = indent "  "
    }
    # Then every unit that started, for the benchmark timeline picture: id, start, end.
    print "== unit times"
    for (id in start) if (start[id] > 0) printf "%s %.3f %.3f\n", id, start[id] / 1e6, (up[id] > start[id] ? up[id] : start[id]) / 1e6
}
' > "$out/critical-chain.txt" 2>&1
# What a reload runs again: each of the initrd's generators once more, into scratch
# directories, with its wall time in milliseconds (bash's EPOCHREALTIME).
step generators
{
    echo "== generators"
    for g in /etc/systemd/system-generators/* /usr/lib/systemd/system-generators/*; do
        [ -x "$g" ] && [ "$(readlink -f "$g")" != /dev/null ] || continue
        scratch=$(mktemp -d)
        began=$EPOCHREALTIME
        "$g" "$scratch" "$scratch" "$scratch" > /dev/null 2>&1
        ended=$EPOCHREALTIME
        rm -rf "$scratch"
        awk -v n="${g##*/}" -v a="$began" -v b="$ended" 'BEGIN { printf "%s %.1f\n", n, (b - a) * 1000 }'
    done
} >> "$out/critical-chain.txt" 2>&1
fi
step status
ZLIVE_DEBUG_DBUS=1 /usr/bin/zlive status > "$out/status.txt" 2>"$out/status-debug.txt"
echo "exit=$?" >> "$out/status.txt"
step status-json
ZLIVE_DEBUG_DBUS=1 /usr/bin/zlive status --json > "$out/status-json.txt" 2>>"$out/status-debug.txt"
step end
# A boot that is not a live one (zlive.test.initrd-only: OpenZFS's own import, a root of no
# live system) has no agent after the switch-root: what was captured goes to the console from
# here, as the agent prints it, and the machine powers off.
if grep -qw zlive.test.initrd-only /proc/cmdline; then
    exec > /dev/console 2>&1
    for f in units failed journal initrd-mountinfo; do
        echo "=== ZLIVE-BEGIN $f"
        cat "$out/$f.txt"
        echo "=== ZLIVE-END $f"
    done
    sync
    echo o > /proc/sysrq-trigger
fi
exit 0
