#!/usr/bin/env bash
# dracut-tree.sh DRACUT_DIR STAGE OUT: a dracut tree of the boot tests' own in OUT, made anew:
# the system's dracut (DRACUT_DIR, symlinked), with zlive's module taken from the staged
# package (STAGE) and the two test modules from the source tree. A zlive installed on the
# machine (DRACUT_DIR/modules.d/50zlive from `make install`) is replaced, never merged or
# nested; the tree is built beside OUT and renamed into place, so builders running at once
# never share a half-made one.
set -euo pipefail
dracut=$1 stage=$2 out=$3
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -as "$dracut/." "$tmp/"
for module in 50zlive 51zlive-test 52zlive-test-root; do
    rm -rf "$tmp/modules.d/$module"
done
cp -r "$stage/usr/lib/dracut/modules.d/50zlive" "$tmp/modules.d/50zlive"
cp -r "$top/tests/vm/dracut-test" "$tmp/modules.d/51zlive-test"
cp -r "$top/tests/vm/dracut-test-root" "$tmp/modules.d/52zlive-test-root"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
