#!/usr/bin/env bash
# make deb: the package from a `make install` with Debian's paths in target/deb-root, built
# by cargo-deb (the assets in Cargo.toml), then given the md5sums cargo-deb does not write.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/target/deb-root
# One build at a time in a source tree: cargo-deb's assets are read from target/deb-root, so two
# image builders packaging at once would write into each other's tree.
mkdir -p target
exec 9>target/deb-root.lock
flock 9
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
rm -rf "$root"
make -s install DESTDIR="$root" PREFIX=/usr UNITDIR=/lib/systemd/system \
    GENERATORDIR=/lib/systemd/system-generators
gzip -9n "$root"/usr/share/man/man*/*
strip --remove-section=.comment --remove-section=.note \
    "$root/usr/bin/zlive" "$root/lib/systemd/system-generators/zlive-generator"
deb=$(cargo deb --no-build --no-strip --locked | tail -n 1)
unpacked=$PWD/target/deb-unpacked
rm -rf "$unpacked"
dpkg-deb -R "$deb" "$unpacked"
(cd "$unpacked" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    > "$unpacked/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$unpacked" "$deb" >/dev/null
rm -rf "$unpacked"
echo "$deb"
