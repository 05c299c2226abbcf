#!/usr/bin/env bash
# Side-by-side benchmarks: every workload on every peer, in one run, as
# ratios to the raw epoll reference and to libuv (docs/benchmarks.md).
#
#   tests/bench/run.sh            # about two minutes on 2 cores
#   SUITE=game tests/bench/run.sh # rooms and work (issue 15), below
#
# Peers (each a fresh process per round, pinned to SERVER_CPU):
#   epoll            tests/bench/epoll_echo.c: single-threaded, edge-triggered
#   libuv            tests/bench/uv_echo.c: shared read buffer, try-write first
#   iocphost         bin/iocphost + plugins/echo, raw framing, 1 worker thread
#   iocphost-packet  bin/iocphost + tests/bench/plugins/packet_echo, packets
#   uring            iocphost with "backend": "io_uring" (same plugin, raw)
#   uring-packet     the same with packets
#   metrics          iocphost as "iocphost", with the metrics endpoint on and
#                    scraped every second (GET /metrics) during its runs:
#                    the ratio metrics / iocphost is the cost of being watched
# Workloads (the client, tests/bench/loadgen.c, pinned to CLIENT_CPU):
#   pingpong  100 connections, 64-byte messages, 1 in flight each
#   bulk      8 connections, 64 KiB messages, 1 in flight each
#   rate      1,000 connections, 50,000 messages/s in total, open loop
#   churn     32 at a time: connect, one 64-byte echo, close
#   idle      10,000 connections held (once per peer)
# SUITE=game runs other peers and workloads instead (docs/benchmarks.md,
# "Rooms and work"):
#   bcast-epoll      tests/bench/bcast_epoll.c: raw epoll rooms, the floor
#   rooms            iocphost + plugins/room_broadcast: room_broadcast_packet
#   rooms-loop       iocphost + room_send_loop: send_packet to each member
#   uv-work          tests/bench/uv_work_echo.c: uv_queue_work, then reply
#   iocphost-work    iocphost + plugins/work_echo: session_work, then reply
#   rooms     ROOMS x MEMBERS connections (100 x 100) only reading; every
#             room ticks every PERIOD_MS (33) and sends a 4 + PAYLOAD (28)
#             byte packet to its members; the server logs its tick lateness
#   work      rate mode: 100 connections, WORK_RATE (10,000) packets/s of
#             64 bytes in total, each a work round trip; WORK_THREADS (2)
#             work threads in both peers
# Rounds interleave the peers (the order rotates) and the table shows the
# median of the rounds. System calls are counted in separate short runs
# (perf stat on the raw_syscalls tracepoint, or strace -c), so the tracing
# never slows the measured runs.
#
# Environment: BUILD (build folder, default build-bench, configured as
# Release when missing), OUT (results folder, default $BUILD/bench-results),
# ROUNDS (3), DURATION (seconds measured per run, 1.2), WARMUP (0.3),
# SERVER_CPU (0), CLIENT_CPU (1), BASE_PORT (17800), PEERS (all four,
# space-separated), OTHER_MAX (25: foreign load, in % of a CPU, above which
# a run is repeated), RETRIES (1), RT (0; 1: the game suite at SCHED_FIFO
# priority, see pinned), WORKLOADS (only these, e.g. "rate"), SYSCALL_COUNTER (perf or strace; perf when
# its syscall tracepoints work), SKIP_BUILD=1, SKIP_SYSCALLS=1, SKIP_IDLE=1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
OUT=${OUT:-$BUILD/bench-results}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-1.2}
WARMUP=${WARMUP:-0.3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-17800}
SUITE=${SUITE:-echo}
case $SUITE in
  echo) PEERS=${PEERS:-"epoll libuv iocphost iocphost-packet uring uring-packet metrics"} ;;
  game)
    PEERS=${PEERS:-"bcast-epoll rooms rooms-loop uv-work iocphost-work"}
    SKIP_SYSCALLS=${SKIP_SYSCALLS:-1} # counted for the echo suite only
    SKIP_IDLE=${SKIP_IDLE:-1}
    ;;
  *) echo "run.sh: SUITE is \"echo\" (the default) or \"game\", not \"$SUITE\"" >&2; exit 2 ;;
esac
# The game suite's shape (the defaults are issue 15's).
ROOMS=${ROOMS:-100}
MEMBERS=${MEMBERS:-100}
PERIOD_MS=${PERIOD_MS:-33}
PAYLOAD=${PAYLOAD:-28}
ROOMS_DURATION=${ROOMS_DURATION:-3}
ROOMS_WARMUP=${ROOMS_WARMUP:-1}
WORK_RATE=${WORK_RATE:-10000}
WORK_THREADS=${WORK_THREADS:-2}
# CANDIDATE: another build folder (an engine change, say) whose iocphost
# runs as two more peers, "candidate" and "candidate-packet", in the same
# rounds, so that the change is compared with iocphost under the same noise.
CANDIDATE=${CANDIDATE:-}
if [ -n "$CANDIDATE" ]; then
  CANDIDATE=$(cd "$CANDIDATE" && pwd)
  case " $PEERS " in *" candidate "*) ;; *) PEERS="$PEERS candidate candidate-packet" ;; esac
fi
SYSCALL_SECONDS=${SYSCALL_SECONDS:-1}
OTHER_MAX=${OTHER_MAX:-25}
RETRIES=${RETRIES:-1}
RT=${RT:-0}
if [ "$RT" = 1 ] && ! chrt -f 1 true 2>/dev/null; then
  echo "run.sh: RT=1 needs real-time priority (root, or CAP_SYS_NICE / an rtprio limit): chrt -f 1 failed" >&2
  exit 2
fi

LOADGEN=$BUILD/tests/bench/loadgen
SERVER_PID=
COUNTER_PID=
SCRAPER_PID=

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
  # Only what this script started, by process id.
  if [ -n "$COUNTER_PID" ]; then kill -INT "$COUNTER_PID" 2>/dev/null || true; fi
  if [ -n "$SCRAPER_PID" ]; then kill -TERM "$SCRAPER_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools and build ----

apt_install() { # package
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "$1" >/dev/null
}
need_tool() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (for $1)"
  apt_install "$2" || die "cannot install $2"
}
need_tool taskset util-linux
need_tool python3 python3
need_tool gnuplot gnuplot-nox
if ! pkg-config --exists libuv 2>/dev/null; then
  log "installing libuv1-dev (the libuv peer)"
  apt_install libuv1-dev || log "warning: cannot install libuv1-dev"
  if [ -f "$BUILD/CMakeCache.txt" ]; then cmake "$BUILD" >/dev/null; fi # find it now
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    log "configuring $BUILD (Release)"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  log "building"
  cmake --build "$BUILD" --target iocphost echo packet_echo loadgen epoll_echo \
    idle_sessions bcast_epoll room_broadcast room_send_loop work_echo >/dev/null
  cmake --build "$BUILD" --target uv_echo uv_work_echo >/dev/null 2>&1 || true
fi
[ -x "$LOADGEN" ] || die "no $LOADGEN: build first"
if [ -n "$CANDIDATE" ] && [ ! -x "$CANDIDATE/bin/iocphost" ]; then
  die "no $CANDIDATE/bin/iocphost: build the candidate first"
fi
case "$(grep -E '^CMAKE_BUILD_TYPE' "$BUILD/CMakeCache.txt" 2>/dev/null)" in
  *Release*) ;;
  *) log "warning: $BUILD is not a Release build; the figures will not mean much" ;;
esac
if [ ! -x "$BUILD/tests/bench/uv_echo" ]; then
  log "warning: uv_echo was not built (no libuv): the libuv column stays empty"
  PEERS=${PEERS//libuv/}
  PEERS=${PEERS//uv-work/}
fi

if [ "$(nproc)" -lt 2 ]; then
  log "warning: fewer than 2 CPUs: server and client share one"
  CLIENT_CPU=$SERVER_CPU
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge 10100 ] || log "warning: ulimit -n is $(ulimit -n): the idle run needs 10,100"
if [ "$SUITE" = game ] && [ "$(ulimit -n)" -lt $((ROOMS * MEMBERS + 100)) ]; then
  die "ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn)): the rooms run needs $((ROOMS * MEMBERS + 100)); raise the hard limit (limits.conf, or ulimit -Hn as root)"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: >"$RESULTS"

# ---- the machine ----
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
    git -C "$ROOT" diff --quiet HEAD -- host plugins 2>/dev/null || echo ' (host/ or plugins/ modified)')"
  echo "kernel: $(uname -r)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|Hypervisor vendor|L2 cache|L3 cache)' |
    sed 's/  */ /g'
  echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$SUITE" = game ]; then
    echo "suite game: $ROOMS rooms x $MEMBERS members, a tick every $PERIOD_MS ms, $((PAYLOAD + 4))-byte packets, $ROOMS_DURATION s measured after $ROOMS_WARMUP s warm-up; work: $WORK_RATE packets/s, $WORK_THREADS work threads, $DURATION s after $WARMUP s"
    echo "server CPU $SERVER_CPU, client CPU $CLIENT_CPU, rounds $ROUNDS$([ "$RT" = 1 ] && echo '; servers and the rooms client at SCHED_FIFO 1 (RT=1)')"
  else
    echo "server CPU $SERVER_CPU, client CPU $CLIENT_CPU, rounds $ROUNDS, $DURATION s measured after $WARMUP s warm-up"
  fi
} >"$OUT/machine.txt"

# ---- peers ----

peer_port() {
  case $1 in
    epoll) echo $((BASE_PORT + 1)) ;;
    libuv) echo $((BASE_PORT + 2)) ;;
    iocphost) echo $((BASE_PORT + 3)) ;;
    iocphost-packet) echo $((BASE_PORT + 4)) ;;
    candidate) echo $((BASE_PORT + 5)) ;;
    candidate-packet) echo $((BASE_PORT + 6)) ;;
    uring) echo $((BASE_PORT + 7)) ;;
    uring-packet) echo $((BASE_PORT + 8)) ;;
    bcast-epoll) echo $((BASE_PORT + 9)) ;;
    rooms) echo $((BASE_PORT + 10)) ;;
    rooms-loop) echo $((BASE_PORT + 11)) ;;
    uv-work) echo $((BASE_PORT + 12)) ;;
    iocphost-work) echo $((BASE_PORT + 13)) ;;
    metrics) echo $((BASE_PORT + 14)) ;;
  esac
}

metrics_port() { echo $((BASE_PORT + 15)); }

# The metrics peer's Prometheus stand-in: GET /metrics every second while
# the server lives (bash's /dev/tcp, so the bench needs no HTTP client).
start_scraper() {
  (
    while kill -0 "$SERVER_PID" 2>/dev/null; do
      if exec 3<>"/dev/tcp/127.0.0.1/$(metrics_port)"; then
        printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n' >&3
        cat <&3 >/dev/null
        exec 3<&-
      fi
      sleep 1
    done
  ) 2>/dev/null &
  SCRAPER_PID=$!
}

build_of() { # peer
  case $1 in candidate*) echo "$CANDIDATE" ;; *) echo "$BUILD" ;; esac
}

write_config() { # peer port file
  local plugin path framing build backend=epoll level=warn settings="{}" metrics=
  [ "$1" = metrics ] && metrics="\"metrics\": { \"address\": \"127.0.0.1:$(metrics_port)\" },"
  build=$(build_of "$1")
  case $1 in uring*) backend=io_uring ;; esac
  case $1 in
    *-packet)
      plugin=packet_echo framing=packet
      path=$build/tests/bench/plugins/packet_echo/packet_echo ;;
    rooms | rooms-loop)
      plugin=room_broadcast framing=packet level=info settings="{ \"rooms\": $ROOMS, \"members\": $MEMBERS, \"period_ms\": $PERIOD_MS, \"payload\": $PAYLOAD }"
      [ "$1" = rooms-loop ] && plugin=room_send_loop
      path=$build/tests/bench/plugins/room_broadcast/$plugin ;;
    iocphost-work)
      plugin=work_echo framing=packet level=info
      path=$build/tests/bench/plugins/work_echo/work_echo ;;
    *) plugin=echo framing=raw path=$build/plugins/echo/echo ;;
  esac
  cat >"$3" <<EOF
{
  "name": "bench-$1",
  "log": { "level": "$level", "file": null },
  "runtime_dir": "$OUT/run-$1",
  "shutdown": { "drain_timeout_ms": 2000 },
  "work": { "threads": $WORK_THREADS, "queue_limit": 65536 },$metrics
  "cores": [ { "name": "main", "threads": 1, "backend": "$backend" } ],
  "plugins": [ { "name": "$plugin", "path": "$path", "settings": $settings } ],
  "services": [
    { "name": "bench", "type": "server", "core": "main", "plugin": "$plugin",
      "address": "127.0.0.1:$2", "max_sessions": 20000, "backlog": 4096,
      "framing": "$framing", "tcp_nodelay": true }
  ]
}
EOF
}

# Runs a peer's server or client on one CPU, in place of the shell (so $!
# is its pid). With RT=1 the game suite runs at real-time priority
# (SCHED_FIFO 1): other work on the machine then no longer delays a tick or
# a work round trip, only the server's own load does. Use it only for
# shapes that leave the CPU idle part of the time (a saturated server would
# hold it for the whole run, leaving other work 5%). The work client stays
# at normal priority: it polls while a send is near, and at real-time
# priority it starved the kernel's own threads on its CPU.
pinned() { # peer|client:peer cpu program args...
  local peer=$1 cpu=$2
  shift 2
  case "$RT:$peer" in
    1:bcast-epoll | 1:rooms* | 1:*-work | 1:client:bcast-epoll | 1:client:rooms*)
      exec chrt -f 1 taskset -c "$cpu" "$@" ;;
  esac
  exec taskset -c "$cpu" "$@"
}

start_peer() { # peer
  local peer=$1 port
  port=$(peer_port "$peer")
  case $peer in
    epoll) pinned "$peer" "$SERVER_CPU" "$BUILD/tests/bench/epoll_echo" "$port" \
      2>>"$OUT/server-$peer.log" & ;;
    libuv) pinned "$peer" "$SERVER_CPU" "$BUILD/tests/bench/uv_echo" "$port" \
      2>>"$OUT/server-$peer.log" & ;;
    bcast-epoll) pinned "$peer" "$SERVER_CPU" "$BUILD/tests/bench/bcast_epoll" "$port" "$ROOMS" \
      "$MEMBERS" "$PERIOD_MS" "$PAYLOAD" 2>>"$OUT/server-$peer.log" & ;;
    uv-work) UV_THREADPOOL_SIZE=$WORK_THREADS pinned "$peer" "$SERVER_CPU" \
      "$BUILD/tests/bench/uv_work_echo" "$port" 2>>"$OUT/server-$peer.log" & ;;
    iocphost* | candidate* | uring* | rooms* | metrics)
      write_config "$peer" "$port" "$OUT/$peer.json"
      pinned "$peer" "$SERVER_CPU" "$(build_of "$peer")/bin/iocphost" run -c "$OUT/$peer.json" \
        2>>"$OUT/server-$peer.log" & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "$peer exited at start (see $OUT/server-$peer.log)"
    sleep 0.05
  done
  die "$peer does not listen on $port"
}

start_peer_scraped() { # peer: start_peer, and the scraper for "metrics"
  start_peer "$1"
  [ "$1" != metrics ] || start_scraper
}

stop_peer() {
  if [ -n "$SCRAPER_PID" ]; then
    kill -TERM "$SCRAPER_PID" 2>/dev/null || true
    wait "$SCRAPER_PID" 2>/dev/null || true
    SCRAPER_PID=
  fi
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# ---- workloads ----

workloads_of() { # peer: the packet peers run what differs from raw
  local all w
  case $1 in
    bcast-epoll | rooms*) all=rooms ;;
    *-work) all=work ;;
    *-packet | metrics) all="pingpong rate" ;;
    *) all="pingpong bulk rate churn" ;;
  esac
  [ -n "${WORKLOADS:-}" ] || { echo "$all"; return; }
  for w in $all; do # WORKLOADS: only these (e.g. "rate")
    case " $WORKLOADS " in *" $w "*) printf '%s ' "$w" ;; esac
  done
  echo
}

loadgen_args() { # workload peer port
  local packet=
  case $2 in *-packet | bcast-epoll | rooms* | *-work) packet=--packet ;; esac
  case $1 in
    pingpong) echo "pingpong --port $3 --conns 100 --size 64 --depth 1 $packet" ;;
    bulk) echo "pingpong --port $3 --conns 8 --size 65536 --depth 1 $packet" ;;
    rate) echo "rate --port $3 --conns 1000 --size 64 --rate 50000 $packet" ;;
    churn) echo "churn --port $3 --concurrency 32 --size 64 $packet" ;;
    idle) echo "idle --port $3 --conns 10000 --size 64 $packet" ;;
    rooms) echo "listen --port $3 --conns $((ROOMS * MEMBERS)) --size $((PAYLOAD + 4)) $packet" ;;
    work) echo "rate --port $3 --conns 100 --size 64 --rate $WORK_RATE $packet" ;;
  esac
}

# A run that other work on the machine disturbed (other_pct, the busy time
# of the two pinned CPUs not spent by server or client, above OTHER_MAX %)
# is repeated up to RETRIES times; the least disturbed attempt is kept.
# With LATENCY_OUT set, the kept attempt's latency spectrum is written there.
run_loadgen() { # tag workload peer extra-args...
  local tag=$1 workload=$2 peer=$3
  shift 3
  local line best= best_other= other attempt
  local -a lat=()
  local tries=0
  for ((attempt = 0; attempt <= RETRIES; attempt++)); do
    tries=$((tries + 1))
    [ -n "${LATENCY_OUT:-}" ] && lat=(--latency-out "$LATENCY_OUT.try")
    # shellcheck disable=SC2046
    if ! line=$(pinned "client:$peer" "$CLIENT_CPU" "$LOADGEN" $(loadgen_args "$workload" "$peer" \
      "$(peer_port "$peer")") --server-pid "$SERVER_PID" "${lat[@]}" "$@" 2>>"$OUT/loadgen.log"); then
      log "warning: $workload on $peer reported errors (see $OUT/loadgen.log)"
    fi
    other=$(sed -n 's/.*other_pct=\([0-9.]*\).*/\1/p' <<<"$line")
    other=${other:-0}
    if [ -z "$best" ] || awk -v a="$other" -v b="$best_other" 'BEGIN {exit !(a < b)}'; then
      best=$line best_other=$other
      if [ -n "${LATENCY_OUT:-}" ]; then mv -f "$LATENCY_OUT.try" "$LATENCY_OUT"; fi
    fi
    awk -v a="$other" -v m="$OTHER_MAX" 'BEGIN {exit !(a > m)}' || break
    if [ "$attempt" -lt "$RETRIES" ]; then
      log "  $workload on $peer: other work took ${other}% of a CPU: again"
    fi
  done
  if [ -n "${LATENCY_OUT:-}" ]; then rm -f "$LATENCY_OUT.try"; fi
  echo "$tag peer=$peer workload=$workload attempts=$tries $best" >>"$RESULTS"
}

# Peers in round r start at position r: every peer runs early and late.
rotated() { # round
  local -a p=($PEERS)
  local n=${#p[@]} i
  for ((i = 0; i < n; i++)); do echo "${p[(i + $1) % n]}"; done
}

START=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
  for peer in $(rotated "$round"); do
    log "round $round/$ROUNDS: $peer"
    start_peer_scraped "$peer"
    for w in $(workloads_of "$peer"); do
      lat_file=
      [ "$w" = rate ] && lat_file=$OUT/latency-$peer-$round.txt
      if [ "$w" = rooms ]; then
        # One attempt: the server's tick figures cover its whole life.
        RETRIES=0 run_loadgen "round=$round" "$w" "$peer" \
          --duration "$ROOMS_DURATION" --warmup "$ROOMS_WARMUP"
      else
        LATENCY_OUT=$lat_file run_loadgen "round=$round" "$w" "$peer" \
          --duration "$DURATION" --warmup "$WARMUP"
      fi
    done
    stop_peer
    # The servers of the game suite log one summary line as they end.
    case $peer in bcast-epoll | rooms* | iocphost-work)
      line=$(grep ' summary: ' "$OUT/server-$peer.log" | tail -n 1 | sed 's/.* summary: //' || true)
      [ -n "$line" ] || log "warning: $peer logged no summary (see $OUT/server-$peer.log)"
      echo "server round=$round peer=$peer workload=$(workloads_of "$peer") $line" >>"$RESULTS" ;;
    esac
  done
done

# ---- system calls per message: separate short runs ----

syscall_counter() {
  if perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then echo perf
  elif command -v strace >/dev/null 2>&1; then echo strace
  else echo none; fi
}
COUNTER=${SYSCALL_COUNTER:-$(syscall_counter)}
# The calls broken down by name, for the notes (perf only).
MIX=
for s in epoll_wait epoll_pwait io_uring_enter read recvfrom recvmsg write sendmsg sendto writev \
  epoll_ctl accept4 close shutdown setsockopt getsockopt futex madvise mmap munmap \
  brk mprotect; do
  [ -d /sys/kernel/tracing/events/syscalls/sys_enter_$s ] && MIX="$MIX,syscalls:sys_enter_$s"
done

if [ "${SKIP_SYSCALLS:-0}" != 1 ] && [ "$COUNTER" != none ]; then
  for peer in $(rotated 0); do
    [ "$peer" != metrics ] || continue # the scrapes' calls are not per message
    log "system calls: $peer ($COUNTER)"
    start_peer "$peer"
    for w in $(workloads_of "$peer"); do
      cf=$OUT/syscalls-$peer-$w.txt
      if [ "$COUNTER" = perf ]; then
        perf stat -x, -e "raw_syscalls:sys_enter$MIX" -p "$SERVER_PID" -o "$cf" &
      else
        strace -c -f -p "$SERVER_PID" -o "$cf" &
      fi
      COUNTER_PID=$!
      sleep 0.3 # attached before the first connection
      # One attempt: the counter covers every attempt made under it.
      RETRIES=0 run_loadgen "syscalls=$COUNTER" "$w" "$peer" --duration "$SYSCALL_SECONDS" --warmup 0.2
      kill -INT "$COUNTER_PID" 2>/dev/null || true
      wait "$COUNTER_PID" 2>/dev/null || true
      COUNTER_PID=
      if [ "$COUNTER" = perf ]; then
        calls=$(awk -F, '$3 == "raw_syscalls:sys_enter" {print $1}' "$cf")
        mix=$(awk -F, '$3 ~ /^syscalls:/ && $1 + 0 > 0 {sub("syscalls:sys_enter_", "", $3); printf "%s:%s;", $3, $1}' "$cf")
      else
        # Columns: % time, seconds, usecs/call, calls, [errors,] name.
        calls=$(awk '$NF == "total" {print $4}' "$cf")
        mix=$(awk 'NR > 2 && $NF != "total" && $1 !~ /^-/ {printf "%s:%s;", $NF, $4}' "$cf")
      fi
      echo "syscall_count peer=$peer workload=$w calls=${calls:-0} mix=${mix:-none}" >>"$RESULTS"
    done
    stop_peer
  done
fi

# ---- idle sessions: user-space memory per connection ----

if [ "${SKIP_IDLE:-0}" != 1 ]; then
  for peer in $(rotated 0); do
    [ "${peer%-packet}" != "$peer" ] && continue # the same sessions as raw
    [ "$peer" != metrics ] || continue           # the same sessions as iocphost
    log "idle: $peer"
    start_peer "$peer"
    run_loadgen "idle=1" idle "$peer"
    stop_peer
  done
  for peer in iocphost uring candidate; do
    case " $PEERS " in *" $peer "*) ;; *) continue ;; esac
    program=$(build_of "$peer")/tests/bench/idle_sessions
    [ -x "$program" ] || continue
    log "idle: the engine of $peer in-process, with the host's 16-byte record (idle_sessions, mallinfo2)"
    backend=epoll
    [ "$peer" = uring ] && backend=io_uring
    line=$(IOCPHOST_DEFAULT_BACKEND=$backend IOCPHOST_BENCH_EXTRA_BYTES=16 taskset -c "$SERVER_CPU,$CLIENT_CPU" "$program" 2>&1 |
      awk '/per idle session/ {print $5}') || true
    echo "engine_idle peer=$peer heap_bytes_per_session=${line:-0}" >>"$RESULTS"
  done
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); wall time $(($(date +%s) - START)) s" \
  >>"$OUT/machine.txt"

# ---- the table and the plot ----

python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
if command -v gnuplot >/dev/null 2>&1 && [ -f "$OUT/latency.gp" ]; then
  gnuplot "$OUT/latency.gp" && log "latency plot: $OUT/latency.png"
fi
log "results in $OUT"
