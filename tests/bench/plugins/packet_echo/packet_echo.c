/*
 * packet_echo: the benchmark's packet-framed echo. A "packet" service: the
 * host cuts the stream into packets (SPEC section 5) and calls on_packet
 * for each; the plugin sends the payload back with the same id through
 * send_packet, which writes a fresh header. plugins/echo is the raw twin.
 * Settings: none ("{}").
 */
#include <iocphost/plugin.h>

static const iocphost_api_t *api;

static int packet_echo_load(const iocphost_api_t *host,
                            const char *settings_json, char *err,
                            size_t err_len) {
  (void)settings_json;
  (void)err;
  (void)err_len;
  api = host;
  return 0;
}

static void packet_echo_connected(iocphost_session_t *session, void *state) {
  (void)session;
  (void)state;
}

static void packet_echo_packet(iocphost_session_t *session, void *state,
                               uint16_t id, const uint8_t *payload,
                               size_t len) {
  (void)state;
  /* A failure means the session is ending; on_disconnected says why. */
  (void)api->send_packet(session, id, payload, len);
}

static void packet_echo_disconnected(iocphost_session_t *session, void *state,
                                     iocphost_reason_t reason) {
  (void)session;
  (void)state;
  (void)reason;
}

static const iocphost_plugin_t packet_echo_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "packet_echo",
    .version = "1.0.0",
    .session_size = 0,
    .on_load = packet_echo_load,
    .on_connected = packet_echo_connected,
    .on_packet = packet_echo_packet,
    .on_disconnected = packet_echo_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &packet_echo_plugin; }
