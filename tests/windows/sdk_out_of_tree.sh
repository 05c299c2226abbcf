#!/bin/sh
# The SDK as a content team on Windows uses it, cross-built here: copies
# sdk/examples/hello out of the tree, configures it with the mingw-w64
# toolchain against the Windows build's SDK package (-Diocphost_DIR), builds
# hello.dll, checks it exports only iocphost_plugin_entry, and keeps it in
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

cp -R "$src/sdk/examples/hello" "$work/hello"
cmake -S "$work/hello" -B "$work/hello/build" -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="$toolchain" -Diocphost_DIR="$build/sdk" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null ||
  { echo "FAIL: configuring hello against $build/sdk failed" >&2; exit 1; }
cmake --build "$work/hello/build" ||
  { echo "FAIL: building hello against $build/sdk failed" >&2; exit 1; }
sh "$src/tests/windows/plugin_exports.sh" "$objdump" "$work/hello/build/hello.dll"
mkdir -p "$keep"
cp "$work/hello/build/hello.dll" "$keep/hello.dll"
echo "PASS: sdk/examples/hello builds out of tree for Windows; kept $keep/hello.dll"
