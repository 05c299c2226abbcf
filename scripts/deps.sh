#!/usr/bin/env bash
# Installs what iocphost needs to build and test on Debian 12, and nothing
# that is already there. Safe to run any number of times.
#   scripts/deps.sh            the Linux builds
#   scripts/deps.sh windows    also the Windows cross-build and Wine to run it
#                              (dpkg-dev also serves apt-get source in
#                              scripts/windows-deps.sh, tcl its SQLite build)
set -euo pipefail

# dpkg-dev and file: cpack's .deb (dpkg-shlibdeps, file) for package.deb.
packages=(cmake ninja-build gcc clang libclang-rt-14-dev pkg-config check libsubunit-dev
          libcjson-dev liburing-dev libsqlite3-dev libhttp-parser-dev libwslay-dev libssl-dev python3 python3-websockets chromium netcat-openbsd dpkg-dev file jq
          prometheus)
if [ "${1:-}" = windows ]; then
  packages+=(gcc-mingw-w64-x86-64 wine wine64 tcl)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "iocphost: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
