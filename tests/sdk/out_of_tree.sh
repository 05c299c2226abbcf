#!/bin/sh
# Builds sdk/examples/hello the way a content team would: copied to a folder
# outside the repository, configured against the SDK package only, first
# straight from the build tree (-Diocphost_DIR=<build>/sdk), then from an
# installed copy (cmake --install --component sdk, CMAKE_PREFIX_PATH).
# Checks each result exists and exports iocphost_plugin_entry and nothing
# else. With a third argument, copies the built hello plugin there.
#
#   tests/sdk/out_of_tree.sh <build-dir> <src-dir> [<keep-dir>]
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 <build-dir> <src-dir> [<keep-dir>]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
keep=${3:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/iocphost-sdk.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
case "$work/" in
  "$src"/*) echo "FAIL: $work is inside the source tree $src" >&2; exit 1 ;;
esac

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Only iocphost_plugin_entry may be exported (besides linker-made symbols).
check_plugin() {
  plugin=$1
  [ -f "$plugin" ] || fail "$plugin was not built"
  exported=$(nm -D --defined-only "$plugin" | awk '$2 ~ /^[TtDdBbRrVvWwi]$/ {print $3}')
  echo "$exported" | grep -qx 'iocphost_plugin_entry' ||
    fail "$plugin does not export iocphost_plugin_entry; it exports: $exported"
  others=$(echo "$exported" | grep -vx -e 'iocphost_plugin_entry' \
    -e '_init' -e '_fini' -e '_edata' -e '_end' -e '__bss_start' || true)
  [ -z "$others" ] || fail "$plugin exports more than the entry point: $others"
  echo "ok: $plugin exports iocphost_plugin_entry only"
}

# 1. Against the build tree.
cp -R "$src/sdk/examples/hello" "$work/hello"
cmake -S "$work/hello" -B "$work/hello/build" -Diocphost_DIR="$build/sdk" \
  -DCMAKE_BUILD_TYPE=Release ||
  fail "configuring against $build/sdk failed"
cmake --build "$work/hello/build" || fail "building against $build/sdk failed"
check_plugin "$work/hello/build/hello.so"

# 2. Against an installed SDK, found through CMAKE_PREFIX_PATH.
cmake --install "$build" --component sdk --prefix "$work/prefix" ||
  fail "installing the sdk component failed"
[ -f "$work/prefix/include/iocphost/plugin.h" ] ||
  fail "the installed SDK has no include/iocphost/plugin.h"
cp -R "$src/sdk/examples/hello" "$work/hello-installed"
cmake -S "$work/hello-installed" -B "$work/hello-installed/build" \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release ||
  fail "configuring against the installed SDK failed"
cmake --build "$work/hello-installed/build" ||
  fail "building against the installed SDK failed"
check_plugin "$work/hello-installed/build/hello.so"

if [ -n "$keep" ]; then
  mkdir -p "$keep"
  cp "$work/hello/build/hello.so" "$keep/hello.so"
  echo "kept: $keep/hello.so"
fi
echo "PASS: sdk/examples/hello builds out of tree"
