#!/usr/bin/env bash
# Builds and runs every test in four builds: a normal build, an
# AddressSanitizer + UndefinedBehaviorSanitizer build, a ThreadSanitizer
# build, and the Windows build (cross-compiled with mingw-w64, run under
# Wine). The uring stage runs the normal, ASan and TSan builds' whole
# suites again with io_uring as every core's backend
# (IOCPHOST_DEFAULT_BACKEND), and the normal one with its receive buffers
# consumed whole, as kernels before 6.12 do (IOCPHOST_URING_WHOLE_BUFFERS). Unit tests (Check) and integration
# tests (the real host binary over loopback) run in each; every build
# treats warnings as errors. A test that ran nothing shows as Not Run, and a
# build fails when a test that tests/must_run.txt says must run on its
# platform did not (checked from ctest's JUnit report by
# scripts/check_must_run.py). Between them,
# the libFuzzer targets (the packet parser, the receive path, the config
# loader, the TLS input path) run for a minute each.
# Usage: scripts/test.sh [normal|asan|tsan|uring|fuzz|windows ...]
set -euo pipefail
cd "$(dirname "$0")/.."

builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(normal asan tsan uring fuzz windows)
jobs=$(nproc)

deps=()
for build in "${builds[@]}"; do
  [ "$build" = windows ] && deps=(windows)
done
scripts/deps.sh "${deps[@]}"

# The Windows build: iocphost.exe, the DLL plugins and the test programs,
# cross-built here; cJSON, Check and SQLite for mingw come from Debian's source
# packages (scripts/windows-deps.sh). Tests run under Wine in a prefix of
# their own, build-win/wineprefix, with one persistent wineserver for the
# whole run (the Windows service test makes its own).
# Wine reads a sticky, world-writable folder (/tmp) as "Everyone may
# delete what it holds", and the host rightly refuses a plugin or runtime
# folder below one. A checkout below such a folder (a CI clone in /tmp, say)
# builds and tests its Windows side in the user's cache instead.
windows_build_dir() {
  local d=$PWD
  while [ "$d" != / ]; do
    if [ -n "$(find "$d" -maxdepth 0 -perm -o+w 2>/dev/null)" ]; then
      echo "$HOME/.cache/iocphost/build-win-$(printf %s "$PWD" | md5sum | cut -c1-12)"
      return
    fi
    d=$(dirname "$d")
  done
  echo "$PWD/build-win"
}

windows_stage() {
  local dir
  dir=$(windows_build_dir)
  [ "$dir" = "$PWD/build-win" ] ||
    echo "the checkout is below a folder others may write: the Windows build goes to $dir"
  mkdir -p "$dir"
  scripts/windows-deps.sh
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DIOCPHOST_WERROR=ON \
        -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/mingw-w64-x86_64.cmake" >/dev/null
  cmake --build "$dir"
  export WINEPREFIX="$dir/wineprefix" WINEDEBUG=-all
  if [ ! -f "$WINEPREFIX/system.reg" ]; then
    echo "creating the Wine prefix $WINEPREFIX (once)"
    wineboot -i >/dev/null 2>&1
    wineserver -w
  fi
  trap 'wineserver -k 2>/dev/null || true' EXIT
  # -p fails when a server for this prefix runs already: that one serves.
  wineserver -p || true
  # Wine's own processes start with the first program and inherit its
  # output: start them here, writing nowhere.
  wine cmd /c exit </dev/null >/dev/null 2>&1 || true
  IOCPHOST_STRESS_SESSIONS=10000 \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" \
          --output-junit "$dir/ctest-junit.xml"
  wineserver -k 2>/dev/null || true
  trap - EXIT
}

# Every test again with io_uring as the default backend, in the normal,
# ASan and TSan builds (the TSan suite takes under 2 minutes on 2 cores).
# Builds what is missing (after the normal, asan and tsan stages it is all
# there).
uring_stage() {
  local dir sanitize stress
  for dir in build-test build-asan build-tsan; do
    case "$dir" in
      build-test) sanitize="";      stress=100000 ;;
      build-asan) sanitize=address; stress=20000 ;;
      build-tsan) sanitize=thread;  stress=10000 ;;
    esac
    echo "--- io_uring: $dir (every test) ---"
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DIOCPHOST_WERROR=ON -DIOCPHOST_SANITIZE="$sanitize" >/dev/null
    cmake --build "$dir"
    IOCPHOST_DEFAULT_BACKEND=io_uring \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    IOCPHOST_STRESS_SESSIONS=$stress \
      ctest --test-dir "$dir" --output-on-failure -j "$jobs" \
            --output-junit "$PWD/$dir/ctest-junit-uring.xml"
    scripts/check_must_run.py "$dir/ctest-junit-uring.xml" linux
  done
  # Debian 12's kernel (6.1) cannot consume a receive buffer incrementally
  # (6.12): there each receive takes a whole buffer. The normal build's
  # suite once more on that path.
  echo "--- io_uring, buffers consumed whole (kernels before 6.12): build-test ---"
  IOCPHOST_DEFAULT_BACKEND=io_uring IOCPHOST_URING_WHOLE_BUFFERS=1 \
  IOCPHOST_STRESS_SESSIONS=100000 \
    ctest --test-dir build-test --output-on-failure -j "$jobs" \
          --output-junit "$PWD/build-test/ctest-junit-uring-whole.xml"
  scripts/check_must_run.py build-test/ctest-junit-uring-whole.xml linux
}

stage_start=$SECONDS
stage_times=()
# Each stage's time, printed when all passed: what CI's budget goes to.
stage_done() {
  stage_times+=("$1: $((SECONDS - stage_start)) s")
  stage_start=$SECONDS
}

for build in "${builds[@]}"; do
  stage_start=$SECONDS
  case "$build" in
    normal) dir=build-test;  sanitize="" ; stress=100000 ;;
    asan)   dir=build-asan;  sanitize=address; stress=20000 ;;
    tsan)   dir=build-tsan;  sanitize=thread;  stress=10000 ;;
    fuzz)
      echo "=== fuzzing (build-fuzz, clang) ==="
      # Five targets: 30 s each keeps the whole run well under 30 minutes.
      tests/fuzz/run.sh "${FUZZ_SECONDS:-30}" "$PWD/build-fuzz"
      stage_done fuzz
      continue ;;
    uring)
      echo "=== io_uring as the default backend ==="
      uring_stage
      stage_done uring
      continue ;;
    windows)
      echo "=== windows build (build-win, under Wine) ==="
      start=$SECONDS
      windows_stage
      scripts/check_must_run.py "$(windows_build_dir)/ctest-junit.xml" windows
      echo "=== windows build: $((SECONDS - start)) s ==="
      stage_done windows
      continue ;;
    *) echo "unknown build '$build' (normal, asan, tsan, uring, fuzz or windows)" >&2
       exit 2 ;;
  esac
  echo "=== $build build ($dir) ==="
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DIOCPHOST_WERROR=ON -DIOCPHOST_SANITIZE="$sanitize" >/dev/null
  cmake --build "$dir"
  # Sanitizer reports fail the test that triggered them.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  IOCPHOST_STRESS_SESSIONS=$stress \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" \
          --output-junit "$PWD/$dir/ctest-junit.xml"
  scripts/check_must_run.py "$dir/ctest-junit.xml" linux
  stage_done "$build"
done
echo "=== stage times: $(IFS=,; echo "${stage_times[*]}") ==="
