#!/usr/bin/env bash
# CPU per message of each transport against TCP, 64-byte ping-pong, side by
# side: one host (1 worker thread, pinned to SERVER_CPU) serves the echo
# plugin on a tcp, a websocket, a tls and a wss service (the test
# certificates of tests/fixtures/tls); ws_pingpong (pinned to CLIENT_CPU)
# alternates between them for ROUNDS rounds; prints each run, the median of
# each and its ratio to tcp, then TLS handshakes per second
# (docs/benchmarks.md, "WebSocket" and "TLS").
#
#   tests/bench/ws_bench.sh     # BUILD (default build-bench, Release), ROUNDS (5),
#                               # DURATION (2), CONNS (100), SIZE (64),
#                               # TRANSPORTS ("tcp ws tls wss")
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-2}
CONNS=${CONNS:-100}
SIZE=${SIZE:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-17900}
TRANSPORTS=${TRANSPORTS:-tcp ws tls wss}
CERTS=$ROOT/tests/fixtures/tls
if [ ! -x "$BUILD/bin/iocphost" ] || [ ! -x "$BUILD/tests/bench/ws_pingpong" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" --target iocphost echo ws_pingpong >/dev/null
fi
work=$(mktemp -d)
trap 'kill "$host" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
tcp_port=$BASE_PORT
ws_port=$((BASE_PORT + 1))
tls_port=$((BASE_PORT + 2))
wss_port=$((BASE_PORT + 3))
tls='"tls": {"cert_file": "'$CERTS/server.pem'", "key_file": "'$CERTS/server.key'"}'
cat > "$work/bench.json" <<JSON
{ "name": "ws-bench", "log": {"level": "warn", "file": null}, "runtime_dir": "$work/run",
  "cores": [{"name": "main", "threads": 1}],
  "plugins": [{"name": "echo", "path": "$BUILD/plugins/echo/echo"}],
  "services": [
    {"name": "tcp", "type": "server", "core": "main", "plugin": "echo",
     "address": "127.0.0.1:$tcp_port"},
    {"name": "ws", "type": "server", "core": "main", "plugin": "echo",
     "address": "127.0.0.1:$ws_port", "transport": "websocket"},
    {"name": "tls", "type": "server", "core": "main", "plugin": "echo",
     "address": "127.0.0.1:$tls_port", $tls},
    {"name": "wss", "type": "server", "core": "main", "plugin": "echo",
     "address": "127.0.0.1:$wss_port", "transport": "websocket", $tls}]}
JSON
taskset -c "$SERVER_CPU" "$BUILD/bin/iocphost" run -c "$work/bench.json" &
host=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$wss_port) 2>/dev/null && break
  sleep 0.05
done
results=()
for round in $(seq "$ROUNDS"); do
  for t in $TRANSPORTS; do
    port_var=${t}_port
    port=${!port_var}
    line=$(taskset -c "$CLIENT_CPU" "$BUILD/tests/bench/ws_pingpong" $t --port $port \
      --server-pid $host --conns "$CONNS" --size "$SIZE" --duration "$DURATION")
    echo "round $round: $line"
    results+=("$line")
  done
done
printf '%s\n' "${results[@]}" | python3 -c '
import re, statistics, sys
v, r = {}, {}
for line in sys.stdin:
    t = re.search(r"transport=(\w+)", line).group(1)
    v.setdefault(t, []).append(float(re.search(r"server_cpu_us_per_msg=([\d.]+)", line).group(1)))
    r.setdefault(t, []).append(float(re.search(r"msgs_per_s=([\d.]+)", line).group(1)))
tcp = statistics.median(v["tcp"])
for t in v:
    m = statistics.median(v[t])
    print("median server CPU per message: %-3s %.3f us (%.2fx tcp), %.0f messages/s"
          % (t, m, m / tcp, statistics.median(r[t])))'
if [[ " $TRANSPORTS " == *" tls "* ]]; then
  for round in $(seq "$ROUNDS"); do
    echo "round $round: $(taskset -c "$CLIENT_CPU" "$BUILD/tests/bench/ws_pingpong" handshakes \
      --port $tls_port --server-pid $host --duration "$DURATION")"
  done
fi
