#!/usr/bin/env bash
# Installs what iocphost needs to build and test on Debian 12, and nothing
# that is already there. Safe to run any number of times.
set -euo pipefail

packages=(cmake ninja-build gcc clang pkg-config check libsubunit-dev
          libcjson-dev python3 netcat-openbsd)

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
