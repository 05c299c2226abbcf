/*
 * echo: the smallest useful plugin. A "raw" service: every byte a client
 * sends comes back to it unchanged, in order.
 *
 * on_recv sends what it got and reports it all consumed, so the host never
 * has to keep a remainder. Settings: none ("{}").
 *
 * Metrics (ABI 1.3): echo_bytes_total{service}, the bytes echoed per
 * service. The series of a session's service is found once, in
 * on_connected, and kept in the session's state; on_recv only adds to it.
 */
#include <iocphost/plugin.h>
#include <stdio.h>

typedef struct echo_session {
  iocphost_series_t *bytes; /* echo_bytes_total{service="<its service>"} */
} echo_session_t;

static const iocphost_api_t *api;
static iocphost_metric_t *bytes_total;

static int echo_load(const iocphost_api_t *host, const char *settings_json,
                     char *err, size_t err_len) {
  (void)settings_json;
  api = host;
  static const char *const by_service[] = {"service", NULL};
  const iocphost_metric_def_t bytes = {
      IOCPHOST_METRIC_DEF_HEADER, .type = IOCPHOST_METRIC_COUNTER,
      .name = "echo_bytes_total", .help = "Bytes echoed, by service.",
      .labels = by_service};
  int rc = api->metric_define(api, &bytes, &bytes_total);
  if (rc != IOCPHOST_OK) {
    snprintf(err, err_len, "cannot define echo_bytes_total: %s",
             api->result_text(rc));
    return 1;
  }
  return 0;
}

static void echo_connected(iocphost_session_t *session, void *state) {
  const char *service[] = {api->session_service_name(session), NULL};
  ((echo_session_t *)state)->bytes = api->metric_series(bytes_total, service);
}

static size_t echo_recv(iocphost_session_t *session, void *state,
                        const uint8_t *data, size_t len) {
  (void)api->metric_add(((echo_session_t *)state)->bytes, (double)len);
  /* A failed send means the session is closing (queue full or ended); the
   * host reports why in on_disconnected, so the bytes are consumed anyway. */
  (void)api->send(session, data, len);
  return len;
}

static void echo_disconnected(iocphost_session_t *session, void *state,
                              iocphost_reason_t reason) {
  (void)session;
  (void)state;
  (void)reason;
}

static const iocphost_plugin_t echo_plugin = {
    IOCPHOST_PLUGIN_HEADER, .name = "echo",
    .version = "1.0.0",     .session_size = sizeof(echo_session_t),
    .on_load = echo_load,   .on_connected = echo_connected,
    .on_recv = echo_recv,   .on_disconnected = echo_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &echo_plugin; }
