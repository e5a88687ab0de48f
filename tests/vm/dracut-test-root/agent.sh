#!/bin/bash
# The test agent, run by systemd in the live root (zlive-test-agent.service). Prints what the
# initrd captured and what `zlive status` says now, runs the scenario's script (base64 in
# zlive.test.script=), and powers off. Everything goes to the serial console.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
exec >/dev/console 2>&1
echo "ZLIVE-AGENT-START uptime=$(cut -d' ' -f1 /proc/uptime)"

section() {
    echo "=== ZLIVE-BEGIN $1"
    cat "$2" 2>&1
    echo "=== ZLIVE-END $1"
}
for f in units failed journal status status-json unit-journals initrd-mountinfo dmesg capture-times status-debug critical-chain; do
    section "$f" "/run/zlive-test/$f.txt"
done
section mountinfo /proc/self/mountinfo
# zlive status after switch-root, with systemd as PID 1 of the live system.
zlive status > /tmp/live-status 2>&1; echo "exit=$?" >> /tmp/live-status
section live-status /tmp/live-status
zlive status --json > /tmp/live-status-json 2>&1
section live-status-json /tmp/live-status-json
# The live system once its boot has finished: its state and every failed unit.
timeout 60 systemctl is-system-running --wait > /tmp/live-state 2>&1
section live-state /tmp/live-state
systemctl --failed --all --no-legend --plain > /tmp/live-failed 2>&1
section live-failed /tmp/live-failed
# The journal of earlier boots (journald keeps it on the volume under /var/log/journal).
journalctl --list-boots --no-pager > /tmp/list-boots 2>&1
section list-boots /tmp/list-boots

fail() { echo "ZLIVE-FAIL: $*"; }
# write PATH TEXT: create or replace a file, parents included.
write() { mkdir -p "$(dirname "$1")" && printf '%s\n' "$2" > "$1" || fail "cannot write $1"; }
# expect PATH TEXT: the file exists with exactly that content.
expect() {
    if [ ! -f "$1" ]; then fail "$1 is missing"
    elif [ "$(cat "$1")" != "$2" ]; then fail "$1 contains '$(cat "$1")', expected '$2'"
    else echo "ZLIVE-OK: $1"; fi
}
# expect_missing PATH: nothing there.
expect_missing() { if [ -e "$1" ] || [ -L "$1" ]; then fail "$1 exists"; else echo "ZLIVE-OK: no $1"; fi; }
# expect_mount DIR FSTYPE: a mount of that type sits exactly on DIR.
expect_mount() {
    if awk -v d="$1" -v t="$2" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == t) found = 1 } } END { exit !found }' /proc/self/mountinfo
    then echo "ZLIVE-OK: $1 is $2"; else fail "$1 is not a $2 mount"; fi
}

# unplug_medium: have the harness pull out the USB stick, and wait until the kernel saw it go.
unplug_medium() {
    echo "ZLIVE-UNPLUG-MEDIUM"
    local i
    for ((i = 0; i < 60; i++)); do
        if [ ! -e /sys/block/sda ]; then echo "ZLIVE-OK: the USB stick is gone"; return; fi
        sleep 0.5
    done
    fail "the USB stick is still there 30 s after it was pulled out"
}
# read_tree DIR: read every regular file below DIR (no find(1) in this root).
read_tree() {
    local f
    for f in "$1"/* "$1"/.[!.]*; do
        if [ -L "$f" ]; then continue
        elif [ -d "$f" ]; then read_tree "$f" || return 1
        elif [ -f "$f" ]; then cat "$f" > /dev/null || { echo "$f"; return 1; }
        fi
    done
}
# read_live_root: read every file of the image's /usr and /etc, caches dropped first.
read_live_root() {
    echo 3 > /proc/sys/vm/drop_caches
    local bad
    if bad=$(read_tree /usr 2>&1) && bad=$(read_tree /etc 2>&1); then
        echo "ZLIVE-OK: every file of the live root reads"
    else fail "reading the live root failed at: $bad"; fi
}
# expect_no_mount DIR: nothing is mounted on DIR.
expect_no_mount() {
    if awk -v d="$1" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
    then fail "$1 is still mounted"; else echo "ZLIVE-OK: nothing on $1"; fi
}

# cut_power: make sure what was written is on the disk, then have the harness kill QEMU
# (no shutdown, no unmount, no export).
cut_power() { sync; echo "ZLIVE-CUT-POWER"; sleep 600; }
# clean_poweroff, clean_reboot: the shutdown a user does (systemctl poweroff or reboot);
# systemd stops this agent. QEMU runs with -no-reboot, so a reboot ends it too.
clean_poweroff() {
    echo "ZLIVE-CLEAN-POWEROFF uptime=$(cut -d' ' -f1 /proc/uptime)"
    systemctl --no-block poweroff
    sleep 600
}
clean_reboot() {
    echo "ZLIVE-CLEAN-REBOOT uptime=$(cut -d' ' -f1 /proc/uptime)"
    systemctl --no-block reboot
    sleep 600
}

# refused WANT COMMAND...: COMMAND exits 1 and says WANT (a refusal, such as zlive create's).
refused() {
    local want=$1 code
    shift
    "$@" > /tmp/refused.out 2>&1
    code=$?
    cat /tmp/refused.out
    if [ "$code" != 1 ]; then fail "$* exited $code, not 1"
    elif ! grep -qF -- "$want" /tmp/refused.out; then fail "$* did not say: $want"
    else echo "ZLIVE-OK: refused $*"; fi
}
# ok NAME COMMAND...: COMMAND succeeds; what it printed goes to the console and /tmp/NAME.out.
ok() {
    local name=$1 code
    shift
    "$@" > "/tmp/$name.out" 2>&1
    code=$?
    sed "s|^|$name: |" "/tmp/$name.out"
    if [ "$code" = 0 ]; then echo "ZLIVE-OK: $*"; else fail "$* exited $code"; fi
}
# says NAME TEXT: what `ok NAME` ran printed TEXT.
says() { if grep -qF -- "$2" "/tmp/$1.out"; then echo "ZLIVE-OK: $1 said $2"; else fail "$1 did not say: $2"; fi; }
# start_sshd: sshd on 127.0.0.1:22 of this guest, and root's key and ssh configuration to reach
# it without a question, as a user's own set-up would (zlive backup ssh://root@127.0.0.1/...).
start_sshd() {
    mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
    grep -q '^root:' /etc/passwd || echo 'root:x:0:0:root:/root:/bin/bash' >> /etc/passwd
    grep -q '^sshd:' /etc/passwd || echo 'sshd:x:101:65534::/run/sshd:/bin/false' >> /etc/passwd
    # systemd's first boot leaves root locked (!unprovisioned), which sshd refuses even for a
    # key; * is no password, not locked.
    [ ! -e /etc/shadow ] || sed -i 's/^root:![^:]*:/root:*:/' /etc/shadow
    ssh-keygen -q -t ed25519 -N '' -f /run/ssh_host_key < /dev/null
    ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 < /dev/null
    cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys
    printf 'Host 127.0.0.1\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  ConnectTimeout 10\n' > /root/.ssh/config
    printf 'HostKey /run/ssh_host_key\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPidFile /run/sshd.pid\nLogLevel VERBOSE\n' > /run/sshd_config
    /usr/sbin/sshd -f /run/sshd_config -E /tmp/sshd.log || fail "sshd did not start: $(cat /tmp/sshd.log)"
    echo "ZLIVE-OK: sshd started"
}
# kill_send_after FILE TEXT: once FILE holds TEXT (a transfer's progress), kill -9 the zfs send
# under way.
kill_send_after() {
    local i p
    for ((i = 0; i < 1200; i++)); do
        grep -qF -- "$2" "$1" 2> /dev/null && break
        sleep 0.1
    done
    # Builtins only: a fork per process under TCG took longer than the transfer.
    local argv
    for p in /proc/[0-9]*; do
        { mapfile -d '' -t argv < "$p/cmdline"; } 2> /dev/null || continue
        if [ "${argv[0]}" = zfs ] && [ "${argv[1]}" = send ]; then
            kill -9 "${p#/proc/}" && echo "ZLIVE-OK: killed zfs send after $((i / 10)) s"
        fi
    done
}
# zfs_kills PREFIX: under PATH=/tmp/shim:$PATH, a zfs command whose arguments start with PREFIX
# kills its caller instead of running: an interruption (Ctrl-C, a crash) at that very step.
zfs_kills() {
    mkdir -p /tmp/shim
    printf '#!/bin/sh\ncase "$*" in "%s"*) echo "ZLIVE-OK: killed at zfs %s"; kill -9 $PPID; exit 1;; esac\nexec %s "$@"\n' \
        "$1" "$1" "$(command -v zfs)" > /tmp/shim/zfs && chmod +x /tmp/shim/zfs
}

script=$(sed -n 's/.*zlive\.test\.script=\([^ ]*\).*/\1/p' /proc/cmdline)
# Booted through an image's own boot menu (the live-build ISO), the command line is the menu's:
# the scenario comes through QEMU's fw_cfg instead.
fw_cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/zlive.test.script/raw
# zlive.test.script=fw_cfg: a scenario too long for the command line.
if [ -z "$script" ] || [ "$script" = fw_cfg ]; then
    [ -r "$fw_cfg" ] || modprobe qemu_fw_cfg 2>/dev/null
    [ ! -r "$fw_cfg" ] || script=$(cat "$fw_cfg")
fi
echo "$script" | base64 -d > /tmp/scenario.sh 2>/dev/null || fail "cannot decode the scenario script"
echo "=== ZLIVE-BEGIN scenario"
. /tmp/scenario.sh
echo "=== ZLIVE-END scenario"
sync
echo "ZLIVE-AGENT-DONE"
echo o > /proc/sysrq-trigger
sleep 600
