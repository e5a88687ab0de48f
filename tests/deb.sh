#!/usr/bin/env bash
# The Debian package: built by `make deb`, clean under lintian (every override justified in
# debian/zlive.lintian-overrides), installed with dpkg into a scratch root with every file
# zlive needs at Debian's paths, and purged again without a trace. (The boot tests build
# their initrds from the same package installed the same way: tests/vm/build-images.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v lintian >/dev/null || { apt-get install -y -q --no-install-recommends lintian >/dev/null; }
# Two builds at once (two image builders do this) must both succeed: they share the tree
# cargo-deb reads its assets from.
bash debian/build-deb.sh > /tmp/zlive-deb-a.$$ 2>&1 & a=$!
bash debian/build-deb.sh > /tmp/zlive-deb-b.$$ 2>&1 & b=$!
for pid in $a $b; do
    wait "$pid" || { cat /tmp/zlive-deb-[ab].$$ >&2; echo "two package builds at once failed" >&2; exit 1; }
done
rm -f /tmp/zlive-deb-[ab].$$
deb=$(bash debian/build-deb.sh | tail -n 1)
echo "package: $deb ($(stat -c %s "$deb") bytes)"
lintian --fail-on error,warning,info --pedantic "$deb" 2>&1 | grep -v '^running with root' || true
lintian --fail-on error,warning,info --pedantic "$deb" >/dev/null 2>&1 || { echo "lintian found problems" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
# The scratch root has none of the dependencies (systemd, dracut, zfsutils-linux).
dpkg --root="$root" --force-depends --force-script-chrootless -i "$deb" >/dev/null 2>&1
expected=(usr/bin/zlive lib/systemd/system-generators/zlive-generator
    usr/lib/dracut/modules.d/50zlive/module-setup.sh usr/lib/dracut/modules.d/50zlive/parse-zlive.sh
    usr/share/man/man8/zlive.8.gz usr/share/man/man8/zlive-generator.8.gz
    usr/share/man/man7/zlive.kernel-command-line.7.gz usr/share/man/man5/zlive.persistence.conf.5.gz
    usr/share/doc/zlive/copyright usr/share/bash-completion/completions/zlive
    usr/share/zsh/vendor-completions/_zlive usr/share/fish/vendor_completions.d/zlive.fish
    usr/lib/zlive/protect-running-kernel etc/dpkg/dpkg.cfg.d/zlive)
for unit in units/*.service; do expected+=("lib/systemd/system/${unit#units/}"); done
for f in "${expected[@]}"; do
    [ -f "$root/$f" ] || { echo "the package did not install /$f" >&2; exit 1; }
done
grep -q '^ExecStart=/usr/bin/zlive ' "$root/lib/systemd/system/zlive-reload.service" ||
    { echo "zlive-reload.service does not run /usr/bin/zlive" >&2; exit 1; }
"$root/usr/bin/zlive" --help >/dev/null
# The generator PID 1 runs at every start and reload: static (no dynamic loader), small, and
# without D-Bus code (zbus is the helper's).
generator=$root/lib/systemd/system-generators/zlive-generator
file "$generator" | grep -q 'static-pie linked' ||
    { echo "zlive-generator is not static-pie: $(file -b "$generator")" >&2; exit 1; }
size=$(stat -c %s "$generator")
[ "$size" -le 1572864 ] || { echo "zlive-generator is $size bytes, over 1.5 MiB" >&2; exit 1; }
! grep -q 'org.freedesktop.DBus' "$generator" || { echo "zlive-generator carries D-Bus code" >&2; exit 1; }
echo "installed: ${#expected[@]} expected files present"

dpkg --root="$root" --force-script-chrootless --purge zlive >/dev/null 2>&1
left=$(cd "$root" && find . -mindepth 1 -not -path './var' -not -path './var/lib' -not -path './var/lib/dpkg*')
if [ -n "$left" ]; then
    echo "purging left behind:" >&2
    echo "$left" >&2
    exit 1
fi
echo "purged: nothing left behind"
