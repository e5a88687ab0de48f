#!/usr/bin/env bash
# Build the man pages from markdown and check that man renders them without warnings.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
status=0
for src in *.md; do
    page=build/${src%.md}
    pandoc --standalone --from markdown --to man "$src" -o "$page"
    warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null || true)
    if [ -n "$warnings" ]; then
        echo "$src: $warnings" >&2
        status=1
    else
        echo "$src: ok"
    fi
done
exit $status
