#!/bin/sh
# The SDK as a content team on Windows uses it, cross-built here: copies
# sdk/examples/hello out of the tree and builds hello.dll with mingw-w64
#   1. against the Windows build's SDK package (-Diocphost_DIR=<build>/sdk);
#   2. against an installed SDK (cmake --install --component sdk), found
#      through CMAKE_PREFIX_PATH with the tree's toolchain file;
#   3. against the installed SDK with the toolchain file the SDK ships
#      (<prefix>/share/cmake/iocphost/mingw-w64-x86_64.cmake) and nothing else.
# Checks each DLL exports only iocphost_plugin_entry, and keeps the first in
# <keep-dir> for integration.sdk_plugin.
#
#   tests/windows/sdk_out_of_tree.sh <build-dir> <src-dir> <toolchain> <objdump> <keep-dir>
set -eu
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
toolchain=$3
objdump=$4
keep=$5

work=$(mktemp -d "${TMPDIR:-/tmp}/iocphost-sdk-win.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# hello <folder name> <what it is built against> <cmake arguments...>
hello() {
  dir=$work/$1
  what=$2
  shift 2
  cp -R "$src/sdk/examples/hello" "$dir"
  cmake -S "$dir" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" \
    >"$dir.log" 2>&1 ||
    { cat "$dir.log" >&2; fail "configuring hello against $what failed"; }
  cmake --build "$dir/build" || fail "building hello against $what failed"
  sh "$src/tests/windows/plugin_exports.sh" "$objdump" "$dir/build/hello.dll"
  echo "ok: hello.dll built against $what"
}

hello hello "$build/sdk" \
  -DCMAKE_TOOLCHAIN_FILE="$toolchain" -Diocphost_DIR="$build/sdk"

cmake --install "$build" --component sdk --prefix "$work/prefix" >/dev/null ||
  fail "installing the sdk component failed"
sdk_toolchain=$work/prefix/share/cmake/iocphost/mingw-w64-x86_64.cmake
[ -f "$sdk_toolchain" ] || fail "the installed SDK has no $sdk_toolchain"
hello hello-prefix-path "the installed SDK (CMAKE_PREFIX_PATH)" \
  -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_PREFIX_PATH="$work/prefix"
hello hello-sdk-toolchain "the installed SDK (its own toolchain file)" \
  -DCMAKE_TOOLCHAIN_FILE="$sdk_toolchain"

mkdir -p "$keep"
cp "$work/hello/build/hello.dll" "$keep/hello.dll"
echo "PASS: sdk/examples/hello builds out of tree for Windows; kept $keep/hello.dll"
