#!/usr/bin/env bash
# The live image's module signing key in DIR: module-signing.key (private, root's alone) and
# module-signing.der (its certificate), made on the first call and kept for every later one,
# so that images built later load on machines that enrolled an earlier one.
# Usage: signing-key.sh DIR
set -euo pipefail
dir=$1
key=$dir/module-signing.key cert=$dir/module-signing.der
[ -f "$key" ] && [ -f "$cert" ] && exit 0
mkdir -p "$dir" && chmod 700 "$dir"
(umask 077 && openssl req -new -x509 -newkey rsa:2048 -nodes -sha256 -days 36500 \
    -subj "/CN=zlive live image module signing key ($(hostname) $(date -u +%F))/" \
    -keyout "$key.new" -outform DER -out "$cert.new" 2>/dev/null)
mv "$key.new" "$key" && mv "$cert.new" "$cert"
echo "live-build: made the module signing key $key" >&2
