#!/usr/bin/env bash
# Soak test (not part of CI): churn plus load against one host on loopback,
# printing the host's memory (VmRSS, VmHWM) and descriptor count every
# interval, and their drift at the end. Exit 0 when nothing went wrong.
#
# Usage: tests/soak/soak.sh [minutes] [build dir] [extra soak.py options]
#   minutes    default 30
#   build dir  default build (a normal build with tests: the hostile plugin
#              lives in <build>/tests/integration/plugins/hostile)
# e.g. tests/soak/soak.sh 5 build-test --interval 30
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
minutes="${1:-30}"
build="$(cd "${2:-$root/build}" && pwd)"
shift $(( $# > 2 ? 2 : $# ))
[ -x "$build/bin/iocphost" ] || {
  echo "soak: no $build/bin/iocphost; build first (cmake --build $build)" >&2
  exit 2
}
ulimit -n 65536 2>/dev/null || true
export IOCPHOST_BIN="$build/bin/iocphost" IOCPHOST_BUILD_DIR="$build" \
       IOCPHOST_SOURCE_DIR="$root"
exec python3 "$root/tests/soak/soak.py" --minutes "$minutes" "$@"
