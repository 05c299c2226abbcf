#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a
# bounded time, starting from the committed seeds in tests/fuzz/corpus/.
# New inputs go to a scratch folder, never into the committed corpus. Any
# crash, sanitizer report or broken check fails the script and leaves the
# input in <build>/artifacts/ (replay: <build>/<target> <file>).
#
# Usage: tests/fuzz/run.sh [seconds per target] [build dir] [target ...]
#   defaults: 60 seconds (or $FUZZ_SECONDS), build-fuzz, every target
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${1:-${FUZZ_SECONDS:-60}}"
build="${2:-$root/build-fuzz}"
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_framing fuzz_recv fuzz_config fuzz_websocket fuzz_tls)

command -v clang >/dev/null || {
  echo "fuzz: clang is needed (apt-get install clang)" >&2
  exit 2
}
cmake -S "$root/tests/fuzz" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build"
mkdir -p "$build/artifacts"

status=0
for target in "${targets[@]}"; do
  scratch="$(mktemp -d)"
  extra=()
  [ -f "$root/tests/fuzz/${target#fuzz_}.dict" ] &&
    extra+=("-dict=$root/tests/fuzz/${target#fuzz_}.dict")
  echo "=== $target: ${seconds}s ==="
  # -timeout: one input may take at most 10 s (a hang is a failure too).
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
     "$build/$target" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$target-" "${extra[@]}" \
       "$scratch" "$root/tests/fuzz/corpus/$target" \
       >"$build/$target.log" 2>&1; then
    grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added)" \
      "$build/$target.log" || true
    echo "$target: ok ($(ls "$scratch" | wc -l) new inputs, not kept)"
  else
    status=1
    tail -n 60 "$build/$target.log"
    echo "$target: FAILED; input and log in $build/artifacts, $build/$target.log"
  fi
  rm -rf "$scratch"
done
exit $status
