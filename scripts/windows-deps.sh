#!/usr/bin/env bash
# Builds the Windows (mingw-w64) libraries iocphost needs, cJSON and Check,
# from Debian's own source packages, into build-win-deps/prefix. Nothing of
# theirs is copied into the repository. Safe to run again: it skips what is
# built already.
#
# It needs deb-src entries; it adds ones that mirror the machine's Debian
# entries (same URIs, suites and components) when none exist.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/build-win-deps"
prefix="$work/prefix"
toolchain="$root/cmake/mingw-w64-x86_64.cmake"

if [ -f "$prefix/lib/libcjson.a" ] && [ -f "$prefix/lib/libcheck.a" ]; then
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

need=()
for p in gcc-mingw-w64-x86-64 dpkg-dev cmake ninja-build; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# deb-src entries mirroring the Debian ones, in deb822 or one-line form.
have_src() {
  grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}
if ! have_src; then
  out=/etc/apt/sources.list.d/iocphost-deb-src.sources
  tmp=$(mktemp)
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Keep only stanzas of Debian's own archive; rewrite their type.
    awk 'BEGIN{RS="";ORS="\n\n"} /URIs:[^\n]*debian/ {gsub(/Types:[^\n]*/,"Types: deb-src"); print}' "$f" >> "$tmp"
  done
  if [ -f /etc/apt/sources.list ]; then
    grep -E '^deb [^ ]*debian' /etc/apt/sources.list | sed 's/^deb /deb-src /' > "$tmp.list" || true
    [ -s "$tmp.list" ] && $sudo cp "$tmp.list" /etc/apt/sources.list.d/iocphost-deb-src.list
  fi
  [ -s "$tmp" ] && $sudo cp "$tmp" "$out"
  rm -f "$tmp" "$tmp.list"
  $sudo apt-get update -qq
fi

mkdir -p "$work/src"
cd "$work/src"
fetch() { # package -> unpacked folder
  local dir
  dir=$(find . -maxdepth 1 -type d -name "$1-*" | head -n 1)
  if [ -z "$dir" ]; then
    apt-get source -qq --download-only "$1" >/dev/null
    dpkg-source -x --no-check "$(ls "$1"_*.dsc | head -n 1)" >/dev/null
    dir=$(find . -maxdepth 1 -type d -name "$1-*" | head -n 1)
  fi
  echo "$dir"
}

cjson=$(fetch cjson)
cmake -S "$cjson" -B "$work/cjson" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
  -DIOCPHOST_WINDOWS_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_SHARED_LIBS=OFF -DBUILD_SHARED_AND_STATIC_LIBS=OFF \
  -DENABLE_CJSON_TEST=OFF -DENABLE_CJSON_UTILS=OFF -DENABLE_CUSTOM_COMPILER_FLAGS=OFF >/dev/null
cmake --build "$work/cjson" >/dev/null
cmake --install "$work/cjson" >/dev/null

check=$(fetch check)
cmake -S "$check" -B "$work/check" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
  -DIOCPHOST_WINDOWS_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DCHECK_ENABLE_TESTS=OFF -DBUILD_TESTING=OFF \
  -DCHECK_ENABLE_SUBUNIT=OFF -DENABLE_MEMORY_LEAKING_TESTS=OFF >/dev/null
cmake --build "$work/check" >/dev/null
cmake --install "$work/check" >/dev/null
echo "Windows libraries in $prefix"
