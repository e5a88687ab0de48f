#!/bin/sh
# root=zlive: zlive-generator owns sysroot.mount (see module-setup.sh).
[ "$root" = zlive ] && rootok=1
