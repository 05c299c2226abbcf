#!/bin/sh
# iocphost.exe imports only KnownDLLs (and the C runtime, one of them): the
# loader maps those from the system folder, whatever lies beside the
# executable. Any other DLL it imports would be looked for in the
# executable's folder first, before main runs, so one planted there would
# run as the host; such DLLs are loaded at run time from System32 instead
# (LoadLibraryExW with LOAD_LIBRARY_SEARCH_SYSTEM32, as winmm.dll in
# host/engine/win/iocp.c).
#
#   tests/windows/system_imports.sh <objdump> <exe>...
set -eu
objdump=$1
shift
# HKLM\System\CurrentControlSet\Control\Session Manager\KnownDLLs (Windows
# 10 and later), the ones a host may plausibly import.
known="advapi32 combase gdi32 kernel32 msvcrt ole32 oleaut32 rpcrt4 sechost
shell32 shlwapi user32 ws2_32 nsi psapi"
for exe in "$@"; do
  [ -f "$exe" ] || { echo "FAIL: $exe was not built" >&2; exit 1; }
  for dll in $("$objdump" -p "$exe" | awk '/DLL Name:/ { print tolower($3) }'); do
    case " $(echo $known) " in
      *" ${dll%.dll} "*) ;;
      *) echo "FAIL: $exe imports $dll, which is no KnownDLL: load it from" \
              "System32 at run time instead (LOAD_LIBRARY_SEARCH_SYSTEM32)" >&2
         exit 1 ;;
    esac
  done
  echo "ok: $exe imports KnownDLLs only"
done
