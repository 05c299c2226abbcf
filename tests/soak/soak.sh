#!/usr/bin/env bash
# Soak test (not part of CI): churn plus load against one host on loopback,
# printing the host's memory (VmRSS, VmHWM) and descriptor count every
# interval, and their drift at the end. Exit 0 when nothing went wrong.
#
# Usage: tests/soak/soak.sh [minutes] [build dir] [extra soak.py options]
#   minutes    default 30
#   build dir  default build (a build with tests: the hostile plugin lives
#              in <build>/tests/integration/plugins/hostile). A Windows build
#              (build-win, bin/iocphost.exe) runs under Wine, in its prefix
#              <build>/wineprefix (scripts/test.sh windows makes it).
# e.g. tests/soak/soak.sh 5 build-test --interval 30
#      tests/soak/soak.sh 10 build-win --interval 60
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
minutes="${1:-30}"
build="$(cd "${2:-$root/build}" && pwd)"
shift $(( $# > 2 ? 2 : $# ))
export IOCPHOST_BUILD_DIR="$build" IOCPHOST_SOURCE_DIR="$root"
if [ -x "$build/bin/iocphost" ]; then
  export IOCPHOST_BIN="$build/bin/iocphost"
elif [ -f "$build/bin/iocphost.exe" ]; then
  command -v wine >/dev/null || {
    echo "soak: $build is a Windows build and Wine is missing" \
         "(scripts/deps.sh windows)" >&2
    exit 2
  }
  export WINEPREFIX="${WINEPREFIX:-$build/wineprefix}" WINEDEBUG=-all \
         IOCPHOST_BIN="wine $build/bin/iocphost.exe" \
         IOCPHOST_PLUGIN_SUFFIX=.dll IOCPHOST_TIMEOUT_SCALE=3
  [ -f "$WINEPREFIX/system.reg" ] || { wineboot -i >/dev/null 2>&1; wineserver -w; }
  # One wineserver for the whole run; Wine's own processes start here,
  # writing nowhere, not holding the host's log open.
  wineserver -p 2>/dev/null || true  # already running is fine
  wine cmd /c exit </dev/null >/dev/null 2>&1 || true
else
  echo "soak: no $build/bin/iocphost; build first (cmake --build $build)" >&2
  exit 2
fi
ulimit -n 65536 2>/dev/null || true
exec python3 "$root/tests/soak/soak.py" --minutes "$minutes" "$@"
