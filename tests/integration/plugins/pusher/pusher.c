/*
 * pusher: a test plugin for the graceful stop (SPEC section 9), on a "raw"
 * service. It pushes a deterministic byte stream to every session until the
 * host stops accepting its sends, and counts every byte the host ACCEPTED, so
 * a test can check that each client received exactly that many bytes before
 * a clean FIN.
 *
 * The stream of a session: bytes 0..7 are the session id (uint64,
 * little-endian); every byte at position p >= 8 is (p * 131 + seed) & 0xFF,
 * with seed = id & 0xFF. All bytes, the id included, count as accepted.
 *
 * on_connected sends the id and starts a repeating timer (interval_ms) that
 * sends the next chunk_bytes of the stream. The plugin never lets its queue
 * in the host run away: it sends only while fewer than max_in_flight
 * accepted bytes are still unsent (on_send reports what reached the network),
 * so a slow reader never makes the host hit send_queue_limit_bytes. A send
 * that fails (E_CLOSED once the session is closing, E_QUEUE_FULL, anything)
 * ends the pushing for that session; only accepted sends are counted.
 * Pushing goes on after on_stopping, until the host refuses.
 *
 * Log lines tests read (api->log, level info):
 *   pusher session <id> accepted=<bytes> reason=<reason text>
 *       one per session, from on_disconnected
 *   pusher on_stopping: N session(s) so far, B bytes accepted, U unsent
 *       U: accepted bytes the host had not yet handed to the network (its
 *       queues), summed over the sessions, when on_stopping ran
 *   pusher summary: sessions=N disconnected=D accepted=B host_stopping=H
 *       after_stopping=A refused=R queue_full=Q stopping_calls=S
 *       from on_unload
 *
 * Settings (all optional): {"interval_ms": 1, "chunk_bytes": 2048,
 * "max_in_flight": 65536, "unload_delay_ms": 0}.
 *
 * unload_delay_ms makes the library's destructor (run when the host unloads
 * the plugin, after on_unload) sleep that long: a slow end of the host
 * process that `iocphost stop` must wait for.
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#endif

#define CHUNK_MAX 16384

typedef struct pusher_state {
  uint64_t id;
  uint64_t accepted; /* bytes the host accepted = next stream position */
  uint64_t sent;     /* bytes on_send reported handed to the network */
  uint64_t timer;
  int done;          /* a send failed: stop pushing */
  uint8_t chunk[CHUNK_MAX];
} pusher_state_t;

static const iocphost_api_t *api;
static uint32_t interval_ms = 1;
static uint32_t chunk_bytes = 2048;
static uint64_t max_in_flight = 65536;
static uint64_t unload_delay_ms;

static atomic_ullong sessions;
static atomic_ullong disconnected;
static atomic_ullong accepted_total;
static atomic_ullong unsent_total;   /* accepted - reported by on_send */
static atomic_ullong host_stopping;
static atomic_ullong after_stopping; /* bytes accepted after on_stopping */
static atomic_ullong refused;        /* sends the host refused */
static atomic_ullong queue_full;     /* ... of which with E_QUEUE_FULL */
static atomic_int stopping;
static atomic_int stopping_calls;

static int pusher_load(const iocphost_api_t *host_api,
                       const char *settings_json, char *err, size_t err_len) {
  (void)settings_json;
  api = host_api;
  int64_t interval = api->setting_int(api, "/interval_ms", interval_ms);
  int64_t chunk = api->setting_int(api, "/chunk_bytes", chunk_bytes);
  int64_t in_flight =
      api->setting_int(api, "/max_in_flight", (int64_t)max_in_flight);
  int64_t unload_delay = api->setting_int(api, "/unload_delay_ms", 0);
  if (interval < 1 || interval > 60000 || chunk < 1 || chunk > CHUNK_MAX ||
      in_flight < chunk || unload_delay < 0 || unload_delay > 60000) {
    snprintf(err, err_len,
             "settings: need 1 <= interval_ms <= 60000, 1 <= chunk_bytes <= "
             "%d, max_in_flight >= chunk_bytes, unload_delay_ms <= 60000",
             CHUNK_MAX);
    return -1;
  }
  interval_ms = (uint32_t)interval;
  chunk_bytes = (uint32_t)chunk;
  max_in_flight = (uint64_t)in_flight;
  unload_delay_ms = (uint64_t)unload_delay;
  return 0;
}

static void count_accepted(pusher_state_t *st, size_t len) {
  st->accepted += len;
  atomic_fetch_add(&accepted_total, len);
  atomic_fetch_add(&unsent_total, len);
  if (atomic_load(&stopping))
    atomic_fetch_add(&after_stopping, len);
}

static void refuse(iocphost_session_t *session, pusher_state_t *st, int rc) {
  st->done = 1;
  atomic_fetch_add(&refused, 1);
  if (rc == IOCPHOST_E_QUEUE_FULL) {
    atomic_fetch_add(&queue_full, 1);
    api->log(api, IOCPHOST_LOG_WARN,
             "pusher session %llu: send refused with E_QUEUE_FULL after "
             "%llu bytes (the flow control failed)",
             (unsigned long long)st->id, (unsigned long long)st->accepted);
  }
  if (st->timer) {
    api->timer_stop(session, st->timer);
    st->timer = 0;
  }
}

static void push(iocphost_session_t *session, void *state, void *arg) {
  (void)arg;
  pusher_state_t *st = state;
  if (st->done || st->accepted - st->sent >= max_in_flight)
    return;
  uint64_t pos = st->accepted;
  uint8_t seed = (uint8_t)(st->id & 0xFF);
  for (uint32_t k = 0; k < chunk_bytes; k++)
    st->chunk[k] = (uint8_t)((pos + k) * 131u + seed);
  int rc = api->send(session, st->chunk, chunk_bytes);
  if (rc == IOCPHOST_OK)
    count_accepted(st, chunk_bytes);
  else
    refuse(session, st, rc);
}

static void pusher_connected(iocphost_session_t *session, void *state) {
  pusher_state_t *st = state;
  atomic_fetch_add(&sessions, 1);
  st->id = api->session_id(session);
  uint8_t header[8];
  for (int i = 0; i < 8; i++)
    header[i] = (uint8_t)(st->id >> (8 * i));
  int rc = api->send(session, header, sizeof header);
  if (rc != IOCPHOST_OK) {
    refuse(session, st, rc);
    return;
  }
  count_accepted(st, sizeof header);
  st->timer = api->timer_start(session, interval_ms, interval_ms, push, NULL);
  if (st->timer == 0)
    st->done = 1; /* the session has already ended */
}

static size_t pusher_recv(iocphost_session_t *session, void *state,
                          const uint8_t *data, size_t len) {
  (void)session;
  (void)state;
  (void)data;
  return len; /* whatever a client says is ignored */
}

static void pusher_sent(iocphost_session_t *session, void *state,
                        size_t bytes) {
  pusher_state_t *st = state;
  st->sent += bytes;
  atomic_fetch_sub(&unsent_total, bytes);
  /* Room again: top up at once rather than waiting for the next tick. */
  push(session, state, NULL);
}

static void pusher_disconnected(iocphost_session_t *session, void *state,
                                iocphost_reason_t reason) {
  (void)session;
  pusher_state_t *st = state;
  atomic_fetch_add(&disconnected, 1);
  if (reason == IOCPHOST_REASON_HOST_STOPPING)
    atomic_fetch_add(&host_stopping, 1);
  api->log(api, IOCPHOST_LOG_INFO,
           "pusher session %llu accepted=%llu reason=%s",
           (unsigned long long)st->id, (unsigned long long)st->accepted,
           api->reason_text(reason));
}

static void pusher_stopping(void) {
  atomic_store(&stopping, 1);
  atomic_fetch_add(&stopping_calls, 1);
  api->log(api, IOCPHOST_LOG_INFO,
           "pusher on_stopping: %llu session(s) so far, %llu bytes "
           "accepted, %llu unsent",
           (unsigned long long)atomic_load(&sessions),
           (unsigned long long)atomic_load(&accepted_total),
           (unsigned long long)atomic_load(&unsent_total));
}

static void pusher_unload(void) {
  api->log(api, IOCPHOST_LOG_INFO,
           "pusher summary: sessions=%llu disconnected=%llu accepted=%llu "
           "host_stopping=%llu after_stopping=%llu refused=%llu "
           "queue_full=%llu stopping_calls=%d",
           (unsigned long long)atomic_load(&sessions),
           (unsigned long long)atomic_load(&disconnected),
           (unsigned long long)atomic_load(&accepted_total),
           (unsigned long long)atomic_load(&host_stopping),
           (unsigned long long)atomic_load(&after_stopping),
           (unsigned long long)atomic_load(&refused),
           (unsigned long long)atomic_load(&queue_full),
           atomic_load(&stopping_calls));
}

#if defined(__GNUC__)
/* Runs when the host unloads the library (dlclose / FreeLibrary). */
__attribute__((destructor)) static void pusher_fini(void) {
  if (unload_delay_ms == 0)
    return;
#ifdef _WIN32
  Sleep((DWORD)unload_delay_ms);
#else
  struct timespec ts = {(time_t)(unload_delay_ms / 1000),
                        (long)(unload_delay_ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
#endif
}
#endif

static const iocphost_plugin_t pusher_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "pusher",
    .version = "1.0.0",
    .session_size = sizeof(pusher_state_t),
    .on_load = pusher_load,
    .on_unload = pusher_unload,
    .on_stopping = pusher_stopping,
    .on_connected = pusher_connected,
    .on_recv = pusher_recv,
    .on_send = pusher_sent,
    .on_disconnected = pusher_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &pusher_plugin; }
