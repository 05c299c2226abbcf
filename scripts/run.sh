#!/usr/bin/env bash
# Builds iocphost and the sample plugins, then runs the host in the
# foreground on conf/iocphost.json (echo on 127.0.0.1:7777, chat on :7778).
# Ctrl+C stops it gracefully. Extra arguments go to 'iocphost run'.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
exec build/bin/iocphost run -c conf/iocphost.json "$@"
