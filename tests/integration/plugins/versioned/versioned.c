/*
 * versioned: a packet echo built several times from this one file, to test
 * redeploying a plugin under load (SPEC section 10).
 *
 *   id 1  ECHO     the payload comes back as is
 *   id 2  VERSION  the answer is the VERSION this file was built with and
 *                  the generation-local count of sessions it has seen
 *   id 3  ARM      payload: a session id (8 bytes, little-endian) of this
 *                  service. This generation's code arms a repeating 10 ms
 *                  timer on that session (which may be another
 *                  generation's), sending it TICK (id 3, this VERSION) each
 *                  time; the answer is "armed" or "not found"
 *   id 4  WHOAMI   the answer is this session's id (8 bytes, little-endian)
 *
 * Builds (tests/integration/plugins/versioned/CMakeLists.txt): versioned_v1
 * and versioned_v2 differ in VERSION and in session_size (a new generation
 * may need more per-session state than the sessions allocated before it);
 * versioned_bad refuses in on_load. All carry the name "versioned".
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#ifndef VERSION
#define VERSION "1.0.0"
#endif
#ifndef STATE_BYTES
#define STATE_BYTES 16
#endif

static const iocphost_api_t *host;
static atomic_long sessions_seen;

typedef struct session_state {
  uint64_t packets;
  uint8_t padding[STATE_BYTES - sizeof(uint64_t)];
} session_state_t;

static int on_load(const iocphost_api_t *api, const char *settings, char *err,
                   size_t err_len) {
#ifdef FAIL_ON_LOAD
  (void)api;
  snprintf(err, err_len, "versioned %s refuses to load (settings %s)",
           VERSION, settings);
  return 1;
#else
  (void)err;
  (void)err_len;
  host = api;
  host->log(host, IOCPHOST_LOG_INFO, "versioned %s loaded, settings %s",
            VERSION, settings);
  return 0;
#endif
}

static void on_unload(void) {
  host->log(host, IOCPHOST_LOG_INFO, "versioned %s unloaded after %ld sessions",
            VERSION, (long)atomic_load(&sessions_seen));
}

static void on_connected(iocphost_session_t *s, void *state) {
  (void)s;
  session_state_t *st = state;
  /* The host zeroes the state; a non-zero byte means it handed us memory
   * sized or owned by another generation. */
  for (size_t i = 0; i < sizeof st->padding; i++)
    if (st->padding[i] != 0)
      host->log(host, IOCPHOST_LOG_ERROR, "versioned: state not zeroed");
  memset(st->padding, 0xA5, sizeof st->padding);
  atomic_fetch_add(&sessions_seen, 1);
}

/* Runs this generation's code on whatever session it was armed on. */
static void tick(iocphost_session_t *s, void *state, void *arg) {
  (void)state;
  (void)arg;
  host->send_packet(s, 3, VERSION, strlen(VERSION));
}

static uint64_t read_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static void write_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void on_packet(iocphost_session_t *s, void *state, uint16_t id,
                      const uint8_t *payload, size_t len) {
  session_state_t *st = state;
  st->packets++;
  if (id == 3 && len == 8) {
    iocphost_session_t *target =
        host->session_find(host->session_service(s), read_u64(payload));
    int armed = target && host->timer_start(target, 10, 10, tick, NULL) != 0;
    if (target)
      host->session_release(target);
    const char *answer = armed ? "armed" : "not found";
    host->send_packet(s, 3, answer, strlen(answer));
    return;
  }
  if (id == 4) {
    uint8_t answer[8];
    write_u64(answer, host->session_id(s));
    host->send_packet(s, 4, answer, sizeof answer);
    return;
  }
  if (id == 2) {
    char answer[64];
    int n = snprintf(answer, sizeof answer, "%s", VERSION);
    host->send_packet(s, 2, answer, (size_t)n);
    return;
  }
  host->send_packet(s, id, payload, len);
}

static void on_disconnected(iocphost_session_t *s, void *state,
                            iocphost_reason_t reason) {
  (void)s;
  (void)reason;
  session_state_t *st = state;
  for (size_t i = 0; i < sizeof st->padding; i++)
    if (st->padding[i] != 0xA5)
      host->log(host, IOCPHOST_LOG_ERROR, "versioned: state overwritten");
}

static const iocphost_plugin_t plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "versioned",
    .version = VERSION,
    .session_size = sizeof(session_state_t),
    .on_load = on_load,
    .on_unload = on_unload,
    .on_connected = on_connected,
    .on_packet = on_packet,
    .on_disconnected = on_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &plugin; }
