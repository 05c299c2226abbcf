/*
 * work_echo: the work round trip of the benchmarks (docs/benchmarks.md,
 * "Rooms and work"); uv_work_echo.c is its libuv twin.
 *
 * Every packet that arrives is copied and submitted with session_work; the
 * work function does nothing; done, back in the session's serial order,
 * sends the packet back with its id and frees the copy. The client times
 * request to reply, so what is measured is the trip through the host's
 * work queue and back into the session's order. A full work queue
 * (IOCPHOST_E_BUSY) drops the packet and counts it; on_unload logs the
 * counts ("work_echo summary: ...").
 * Settings: none ("{}").
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const iocphost_api_t *api;
static atomic_ulong submitted, busy, ended_early;

typedef struct job {
  uint16_t id;
  size_t len;
  uint8_t payload[];
} job_t;

static int work_echo_load(const iocphost_api_t *host, const char *settings_json,
                          char *err, size_t err_len) {
  (void)settings_json;
  if (!IOCPHOST_API_HAS(host, session_work) || !host->session_work) {
    snprintf(err, err_len, "this host has no work threads (session_work is "
                           "missing): work_echo needs a host with ABI 1.2 work");
    return 1;
  }
  api = host;
  return 0;
}

static void work_echo_unload(void) {
  api->log(api, IOCPHOST_LOG_INFO,
           "work_echo summary: submitted=%lu busy=%lu ended_early=%lu",
           (unsigned long)atomic_load(&submitted),
           (unsigned long)atomic_load(&busy),
           (unsigned long)atomic_load(&ended_early));
}

static void nothing(void *arg) { (void)arg; }

static void done(iocphost_session_t *session, void *state, void *arg,
                 int ended) {
  (void)state;
  job_t *j = arg;
  if (ended)
    atomic_fetch_add_explicit(&ended_early, 1, memory_order_relaxed);
  else /* a failure means the session is ending */
    (void)api->send_packet(session, j->id, j->payload, j->len);
  free(j);
}

static void work_echo_connected(iocphost_session_t *session, void *state) {
  (void)session;
  (void)state;
}

static void work_echo_packet(iocphost_session_t *session, void *state,
                             uint16_t id, const uint8_t *payload, size_t len) {
  (void)state;
  job_t *j = malloc(sizeof *j + len);
  if (!j) {
    api->disconnect(session);
    return;
  }
  j->id = id;
  j->len = len;
  memcpy(j->payload, payload, len);
  int rc = api->session_work(session, nothing, done, j);
  if (rc == IOCPHOST_OK) {
    atomic_fetch_add_explicit(&submitted, 1, memory_order_relaxed);
    return;
  }
  if (rc == IOCPHOST_E_BUSY)
    atomic_fetch_add_explicit(&busy, 1, memory_order_relaxed);
  free(j);
}

static void work_echo_disconnected(iocphost_session_t *session, void *state,
                                   iocphost_reason_t reason) {
  (void)session;
  (void)state;
  (void)reason;
}

static const iocphost_plugin_t work_echo_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "work_echo",
    .version = "1.0.0",
    .on_load = work_echo_load,
    .on_unload = work_echo_unload,
    .on_connected = work_echo_connected,
    .on_packet = work_echo_packet,
    .on_disconnected = work_echo_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &work_echo_plugin; }
