/*
 * room_broadcast: the rooms benchmark's plugin (docs/benchmarks.md, "Rooms
 * and work"). bcast_epoll.c is its raw epoll twin.
 *
 * on_load makes `rooms` rooms, each with a repeating tick every `period_ms`.
 * A connecting session joins room n % rooms (n counts connections), so
 * `rooms` x `members` connections fill every room evenly. Each tick sends
 * one packet (id 7; payload: the tick's due time in monotonic nanoseconds,
 * then a byte pattern up to `payload` bytes) to every member of its room.
 * One source, two plugins:
 *
 *   room_broadcast  room_broadcast_packet (one shared buffer)
 *   room_send_loop  send_packet to each member in turn (room_members):
 *                   what a plugin without room broadcast would write
 *
 * While every room is full (rooms x members members in all), each tick's
 * lateness goes into two histograms: the host's own figure (tick->late_ms,
 * whole milliseconds, 0 below the engine's threshold) and the lateness in
 * microseconds measured here against tick->due_ms. on_unload logs both in
 * one line, "room_broadcast summary: ..." (or room_send_loop), which run.sh
 * reads.
 *
 * Settings (these are the defaults): {"rooms": 100, "members": 100,
 * "period_ms": 33, "payload": 28}.
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tick_hist.h"

#define MAX_ROOMS 10000
#define MAX_PAYLOAD 1024

static const iocphost_api_t *host;
static uint32_t n_rooms, members_per_room, period_ms;
static size_t payload_len;
/* Built twice: room_broadcast sends with room_broadcast_packet, and
 * room_send_loop (ROOM_SEND_LOOP) with send_packet to each member. */
#ifdef ROOM_SEND_LOOP
#define PLUGIN_NAME "room_send_loop"
static const int send_loop = 1;
#else
#define PLUGIN_NAME "room_broadcast"
static const int send_loop = 0;
#endif
static iocphost_room_t **rooms;

static atomic_uint_fast64_t next_session; /* connections so far */
static atomic_long members_now;           /* members of all rooms */
static atomic_uint_fast64_t packets_queued, send_errors;
static tick_hist_t late_us, late_ms_abi;

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

typedef struct tick_packet {
  const uint8_t *data;
  size_t len;
} tick_packet_t;

static void send_to_member(iocphost_room_t *room, void *state,
                           iocphost_session_t *member, void *arg) {
  (void)room;
  (void)state;
  const tick_packet_t *p = arg;
  if (host->send_packet(member, 7, p->data, p->len) == IOCPHOST_OK)
    atomic_fetch_add_explicit(&packets_queued, 1, memory_order_relaxed);
  else
    atomic_fetch_add_explicit(&send_errors, 1, memory_order_relaxed);
}

static void on_tick(iocphost_room_t *room, void *state, void *arg,
                    const iocphost_tick_t *tick) {
  (void)state;
  (void)arg;
  uint64_t now = now_us(), due = tick->due_ms * 1000u;
  if (atomic_load_explicit(&members_now, memory_order_relaxed) ==
      (long)n_rooms * (long)members_per_room) {
    tick_hist_record(&late_us, now > due ? now - due : 0);
    tick_hist_record(&late_ms_abi, (uint64_t)tick->late_ms * 1000u);
  }
  uint8_t payload[MAX_PAYLOAD];
  uint64_t due_ns = tick->due_ms * 1000000u;
  memset(payload, 'r', payload_len);
  memcpy(payload, &due_ns, sizeof due_ns);
  if (send_loop) {
    tick_packet_t p = {payload, payload_len};
    host->room_members(room, send_to_member, &p);
  } else {
    int n = host->room_broadcast_packet(room, 7, payload, payload_len);
    if (n >= 0)
      atomic_fetch_add_explicit(&packets_queued, (uint64_t)n,
                                memory_order_relaxed);
    else
      atomic_fetch_add_explicit(&send_errors, 1, memory_order_relaxed);
  }
}

static void on_open(iocphost_room_t *room, void *state, void *arg) {
  (void)state;
  (void)arg;
  host->room_timer_start(room, period_ms, period_ms, on_tick, NULL);
}

static void on_join(iocphost_room_t *room, void *state,
                    iocphost_session_t *session) {
  (void)room;
  (void)state;
  (void)session;
  atomic_fetch_add(&members_now, 1);
}

static void on_leave(iocphost_room_t *room, void *state,
                     iocphost_session_t *session, iocphost_leave_t why) {
  (void)room;
  (void)state;
  (void)session;
  (void)why;
  atomic_fetch_sub(&members_now, 1);
}

static const iocphost_room_class_t room_class = {
    .struct_size = sizeof(iocphost_room_class_t),
    .state_size = 0,
    .on_open = on_open,
    .on_join = on_join,
    .on_leave = on_leave,
};

static int on_load(const iocphost_api_t *api, const char *settings, char *err,
                   size_t err_len) {
  (void)settings;
  host = api;
  int64_t r = api->setting_int(api, "/rooms", 100);
  int64_t m = api->setting_int(api, "/members", 100);
  int64_t p = api->setting_int(api, "/period_ms", 33);
  int64_t len = api->setting_int(api, "/payload", 28);
  if (r < 1 || r > MAX_ROOMS || m < 1 || m > 100000 || p < 1 || p > 60000 ||
      len < 8 || len > MAX_PAYLOAD) {
    snprintf(err, err_len,
             "settings: rooms must be 1..%d, members 1..100000, period_ms "
             "1..60000 and payload 8..%d; got rooms %lld, members %lld, "
             "period_ms %lld, payload %lld",
             MAX_ROOMS, MAX_PAYLOAD, (long long)r, (long long)m, (long long)p,
             (long long)len);
    return 1;
  }
  n_rooms = (uint32_t)r;
  members_per_room = (uint32_t)m;
  period_ms = (uint32_t)p;
  payload_len = (size_t)len;
  rooms = calloc(n_rooms, sizeof *rooms);
  if (!rooms) {
    snprintf(err, err_len, "out of memory for %u rooms", n_rooms);
    return 1;
  }
  for (uint32_t i = 0; i < n_rooms; i++) {
    rooms[i] = api->room_create(api, &room_class, NULL);
    if (!rooms[i]) {
      snprintf(err, err_len, "room_create failed for room %u of %u", i + 1,
               n_rooms);
      return 1;
    }
  }
  return 0;
}

static void on_unload(void) {
  /* The host closed every room at its stop; the references are ours. */
  for (uint32_t i = 0; rooms && i < n_rooms; i++)
    if (rooms[i])
      host->room_release(rooms[i]);
  free(rooms);
  rooms = NULL;
  char a[256], b[256];
  tick_hist_format(&late_us, "late", a, sizeof a);
  tick_hist_format(&late_ms_abi, "abi_late", b, sizeof b);
  host->log(host, IOCPHOST_LOG_INFO,
            PLUGIN_NAME " summary: send=%s rooms=%u members=%u "
            "period_ms=%u payload=%zu packets_queued=%llu send_errors=%llu%s%s",
            send_loop ? "loop" : "room", n_rooms, members_per_room, period_ms,
            payload_len, (unsigned long long)atomic_load(&packets_queued),
            (unsigned long long)atomic_load(&send_errors), a, b);
}

static void on_connected(iocphost_session_t *session, void *state) {
  (void)state;
  uint64_t n = atomic_fetch_add(&next_session, 1);
  host->room_join(rooms[n % n_rooms], session);
}

static void on_packet(iocphost_session_t *session, void *state, uint16_t id,
                      const uint8_t *payload, size_t len) {
  (void)session;
  (void)state;
  (void)id;
  (void)payload;
  (void)len;
}

static void on_disconnected(iocphost_session_t *session, void *state,
                            iocphost_reason_t reason) {
  (void)session;
  (void)state;
  (void)reason;
}

static const iocphost_plugin_t plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = PLUGIN_NAME,
    .version = "1.0.0",
    .on_load = on_load,
    .on_unload = on_unload,
    .on_connected = on_connected,
    .on_packet = on_packet,
    .on_disconnected = on_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &plugin; }
