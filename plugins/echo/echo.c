/*
 * echo: the smallest useful plugin. A "raw" service: every byte a client
 * sends comes back to it unchanged, in order.
 *
 * on_recv sends what it got and reports it all consumed, so the host never
 * has to keep a remainder. Settings: none ("{}").
 */
#include <iocphost/plugin.h>

static const iocphost_api_t *api;

static int echo_load(const iocphost_api_t *host, const char *settings_json,
                     char *err, size_t err_len) {
  (void)settings_json;
  (void)err;
  (void)err_len;
  api = host;
  return 0;
}

static void echo_connected(iocphost_session_t *session, void *state) {
  (void)session;
  (void)state;
}

static size_t echo_recv(iocphost_session_t *session, void *state,
                        const uint8_t *data, size_t len) {
  (void)state;
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
    IOCPHOST_PLUGIN_HEADER,
    .name = "echo",
    .version = "1.0.0",
    .session_size = 0,
    .on_load = echo_load,
    .on_connected = echo_connected,
    .on_recv = echo_recv,
    .on_disconnected = echo_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &echo_plugin; }
