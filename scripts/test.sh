#!/usr/bin/env bash
# Builds and runs every test three times: a normal build, an AddressSanitizer
# + UndefinedBehaviorSanitizer build, and a ThreadSanitizer build. Unit tests
# (Check) and integration tests (the real host binary over loopback) run in
# each. Usage: scripts/test.sh [normal|asan|tsan ...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(normal asan tsan)
jobs=$(nproc)

for build in "${builds[@]}"; do
  case "$build" in
    normal) dir=build-test;  sanitize="" ; stress=100000 ;;
    asan)   dir=build-asan;  sanitize=address; stress=20000 ;;
    tsan)   dir=build-tsan;  sanitize=thread;  stress=10000 ;;
    *) echo "unknown build '$build' (normal, asan or tsan)" >&2; exit 2 ;;
  esac
  echo "=== $build build ($dir) ==="
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DIOCPHOST_SANITIZE="$sanitize" >/dev/null
  cmake --build "$dir"
  # Sanitizer reports fail the test that triggered them.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  IOCPHOST_STRESS_SESSIONS=$stress \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs"
done
