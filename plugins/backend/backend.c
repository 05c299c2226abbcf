/*
 * backend: the game-server side of the gateway sample (plugins/gateway,
 * conf/backend.json). A "packet" service.
 *
 * Gateway to backend:  packet (id, player_id + payload), player_id being
 *                      8 bytes little-endian.
 * Backend to gateway:  packet (id, player_id + "reply:<player_id>:<payload>"),
 *                      the player id printed in decimal, so every player can
 *                      tell its replies from anyone else's.
 * A packet shorter than a player id is a protocol error: the backend logs it
 * and disconnects the link (the gateway reconnects).
 *
 * Settings: none ("{}").
 */
#include <iocphost/plugin.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLAYER_ID_BYTES 8

static const iocphost_api_t *api;

static uint64_t get_u64_le(const uint8_t *in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; i++)
    value |= (uint64_t)in[i] << (8 * i);
  return value;
}

static int backend_load(const iocphost_api_t *host, const char *settings_json,
                        char *err, size_t err_len) {
  (void)settings_json;
  (void)err;
  (void)err_len;
  api = host;
  return 0;
}

static void backend_connected(iocphost_session_t *session, void *state) {
  (void)state;
  char peer[64] = "?";
  api->session_peer(session, peer, sizeof peer);
  api->log(api, IOCPHOST_LOG_INFO, "gateway connected from %s", peer);
}

static void backend_packet(iocphost_session_t *session, void *state,
                           uint16_t id, const uint8_t *payload, size_t len) {
  (void)state;
  if (len < PLAYER_ID_BYTES) {
    api->log(api, IOCPHOST_LOG_WARN,
             "packet %u of %zu bytes has no player id; closing the link",
             (unsigned)id, len);
    api->disconnect(session);
    return;
  }
  uint64_t player_id = get_u64_le(payload);
  const uint8_t *body = payload + PLAYER_ID_BYTES;
  size_t body_len = len - PLAYER_ID_BYTES;

  char prefix[48];
  int prefix_len =
      snprintf(prefix, sizeof prefix, "reply:%" PRIu64 ":", player_id);
  size_t reply_len = PLAYER_ID_BYTES + (size_t)prefix_len + body_len;
  uint8_t *reply = malloc(reply_len);
  if (!reply) {
    api->disconnect(session);
    return;
  }
  memcpy(reply, payload, PLAYER_ID_BYTES);
  memcpy(reply + PLAYER_ID_BYTES, prefix, (size_t)prefix_len);
  memcpy(reply + PLAYER_ID_BYTES + prefix_len, body, body_len);
  int rc = api->send_packet(session, id, reply, reply_len);
  free(reply);
  if (rc == IOCPHOST_E_TOOBIG)
    api->log(api, IOCPHOST_LOG_WARN,
             "reply to player %" PRIu64 " too large; dropped", player_id);
}

static void backend_disconnected(iocphost_session_t *session, void *state,
                                 iocphost_reason_t reason) {
  (void)session;
  (void)state;
  api->log(api, IOCPHOST_LOG_INFO, "gateway disconnected (%s)",
           api->reason_text(reason));
}

static const iocphost_plugin_t backend_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "backend",
    .version = "1.0.0",
    .session_size = 0,
    .on_load = backend_load,
    .on_connected = backend_connected,
    .on_packet = backend_packet,
    .on_disconnected = backend_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &backend_plugin; }
