#!/bin/sh
# Every ELF file given is linked with full RELRO: a GNU_RELRO segment and
# BIND_NOW, so the GOT is resolved at load and read-only afterwards (a heap
# bug in a plugin cannot redirect a host call through it).
# Usage: full_relro.sh READELF FILE...
readelf=$1
shift
failed=0
for file in "$@"; do
  if ! "$readelf" -lW "$file" | grep -q GNU_RELRO; then
    echo "$file: no GNU_RELRO segment (link with -z relro)" >&2
    failed=1
  fi
  if ! "$readelf" -dW "$file" | grep -Eq 'BIND_NOW|FLAGS.*NOW'; then
    echo "$file: lazy binding (link with -z now)" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] && echo "full RELRO: $*"
exit "$failed"
