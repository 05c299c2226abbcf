#!/bin/sh
# Every plugin DLL of a Windows build exports iocphost_plugin_entry and
# nothing else (IOCPHOST_EXPORT in sdk/include/iocphost/plugin.h, built with
# iocphost_add_plugin from sdk/cmake/iocphostPlugin.cmake).
#
#   tests/windows/plugin_exports.sh <objdump> <dll>...
set -eu
objdump=$1
shift
[ $# -gt 0 ] || { echo "FAIL: no DLL given" >&2; exit 1; }
for dll in "$@"; do
  [ -f "$dll" ] || { echo "FAIL: $dll was not built" >&2; exit 1; }
  # The names listed under "[Ordinal/Name Pointer] Table" of objdump -p.
  names=$("$objdump" -p "$dll" | awk '
    /\[Ordinal\/Name Pointer\] Table/ { table = 1; next }
    table && /^\t\[/ { print $NF; next }
    table { table = 0 }')
  if [ "$names" != "iocphost_plugin_entry" ]; then
    echo "FAIL: $dll exports: ${names:-nothing}; expected iocphost_plugin_entry only" >&2
    exit 1
  fi
  echo "ok: $dll exports iocphost_plugin_entry only"
done
