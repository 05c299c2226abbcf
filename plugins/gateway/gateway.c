/*
 * gateway: routes player packets to a backend server and the replies back.
 *
 * One plugin, two services of one host (conf/gateway.json), both "packet"
 * framing:
 *   - a server service for players ("players" by default);
 *   - a client service that keeps one link to the backend ("backend").
 *
 * Player to gateway:   packet (id, payload), any id.
 * Gateway to backend:  packet (id, player_id + payload), where player_id is
 *                      the player's session id as 8 bytes little-endian.
 * Backend to gateway:  packet (id, player_id + reply); the gateway finds the
 *                      player by id and sends it packet (id, reply). Replies
 *                      for players that have left are dropped.
 * Gateway to player:   GATEWAY_ERROR (id 65535, payload = reason text) when
 *                      there is no backend link, or the packet is too large
 *                      to forward.
 *
 * Settings: {"players_service": "players", "backend_service": "backend"}
 * (the defaults), read with the host's setting_string.
 *
 * Threads: player callbacks run on any worker thread, so the backend link
 * (kept with session_acquire) is guarded by a mutex. A sender takes its own
 * reference under the mutex and sends outside it.
 */
#include <iocphost/plugin.h>

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
typedef SRWLOCK gateway_mutex_t;
#define GATEWAY_MUTEX_INIT SRWLOCK_INIT
#define gateway_lock(m) AcquireSRWLockExclusive(m)
#define gateway_unlock(m) ReleaseSRWLockExclusive(m)
#else
#include <pthread.h>
typedef pthread_mutex_t gateway_mutex_t;
#define GATEWAY_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define gateway_lock(m) pthread_mutex_lock(m)
#define gateway_unlock(m) pthread_mutex_unlock(m)
#endif

#define GATEWAY_ERROR 0xFFFFu
#define PLAYER_ID_BYTES 8
#define PACKET_HEADER_BYTES 4
#define PACKET_MAX_BYTES 65535u
#define SERVICE_NAME_MAX 64

static const iocphost_api_t *api;
static char players_name[SERVICE_NAME_MAX] = "players";
static char backend_name[SERVICE_NAME_MAX] = "backend";

static gateway_mutex_t link_mutex = GATEWAY_MUTEX_INIT;
static iocphost_session_t *backend_link; /* acquired; guarded by link_mutex */

/* Looked up on first use: service_find is a host function, and the host's
 * services may not all exist yet while plugins load. */
static _Atomic(iocphost_service_t *) players_service;

/* Whether the settings hold no number, bool or array at pointer. */
static int no_other_setting(const char *pointer) {
  return isnan(api->setting_number(api, pointer, NAN)) &&
         api->setting_bool(api, pointer, -1) < 0 &&
         api->setting_array_length(api, pointer) < 0;
}

/* Copies the string setting at pointer into value (left as it is when
 * there is none); -1 if it is not a string of 1 to size - 1 bytes. */
static int copy_setting(const char *pointer, char *value, size_t size) {
  const char *text = api->setting_string(api, pointer, NULL);
  if (!text)
    return no_other_setting(pointer) ? 0 : -1;
  size_t len = strlen(text);
  if (len == 0 || len >= size)
    return -1;
  memcpy(value, text, len + 1);
  return 0;
}

static void put_u64_le(uint8_t *out, uint64_t value) {
  for (int i = 0; i < 8; i++)
    out[i] = (uint8_t)(value >> (8 * i));
}

static uint64_t get_u64_le(const uint8_t *in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; i++)
    value |= (uint64_t)in[i] << (8 * i);
  return value;
}

static void send_error(iocphost_session_t *player, const char *text) {
  api->send_packet(player, GATEWAY_ERROR, text, strlen(text));
}

static int is_backend(iocphost_session_t *session) {
  const char *service = api->session_service_name(session);
  return service && strcmp(service, backend_name) == 0;
}

static iocphost_service_t *find_players_service(void) {
  iocphost_service_t *service = atomic_load(&players_service);
  if (!service) {
    service = api->service_find(api, players_name);
    if (service)
      atomic_store(&players_service, service);
  }
  return service;
}

static int gateway_load(const iocphost_api_t *host, const char *settings_json,
                        char *err, size_t err_len) {
  (void)settings_json;
  api = host;
  if (copy_setting("/players_service", players_name, sizeof players_name) <
          0 ||
      copy_setting("/backend_service", backend_name, sizeof backend_name) <
          0) {
    snprintf(err, err_len,
             "settings.players_service and settings.backend_service must be "
             "service names (strings of 1 to %d bytes)",
             SERVICE_NAME_MAX - 1);
    return 1;
  }
  atomic_store(&players_service, NULL);
  return 0;
}

static void gateway_connected(iocphost_session_t *session, void *state) {
  (void)state;
  if (!is_backend(session))
    return;
  int kept = 0;
  gateway_lock(&link_mutex);
  if (!backend_link) {
    backend_link = api->session_acquire(session);
    kept = backend_link != NULL;
  }
  gateway_unlock(&link_mutex);
  char peer[64] = "?";
  api->session_peer(session, peer, sizeof peer);
  api->log(api, IOCPHOST_LOG_INFO, "backend link %s to %s",
           kept ? "up" : "extra (not used)", peer);
}

/* A player's packet goes to the backend, prefixed with the player's id. */
static void forward_to_backend(iocphost_session_t *player, uint16_t id,
                               const uint8_t *payload, size_t len) {
  size_t size = PACKET_HEADER_BYTES + PLAYER_ID_BYTES + len;
  if (size > PACKET_MAX_BYTES) {
    send_error(player, "packet too large to forward");
    return;
  }
  gateway_lock(&link_mutex);
  iocphost_session_t *link =
      backend_link ? api->session_acquire(backend_link) : NULL;
  gateway_unlock(&link_mutex);
  if (!link) {
    send_error(player, "backend unavailable");
    return;
  }
  /* Header and player id are written by hand so the payload is not copied
   * twice; sendv queues the three pieces as one packet. */
  uint8_t head[PACKET_HEADER_BYTES + PLAYER_ID_BYTES];
  head[0] = (uint8_t)size;
  head[1] = (uint8_t)(size >> 8);
  head[2] = (uint8_t)id;
  head[3] = (uint8_t)(id >> 8);
  put_u64_le(head + PACKET_HEADER_BYTES, api->session_id(player));
  iocphost_buf_t bufs[2] = {{head, sizeof head}, {payload, len}};
  int rc = api->sendv(link, bufs, len ? 2 : 1);
  api->session_release(link);
  if (rc < 0)
    send_error(player, "backend unavailable");
}

/* A backend reply goes to the player it names. */
static void forward_to_player(uint16_t id, const uint8_t *payload,
                              size_t len) {
  if (len < PLAYER_ID_BYTES) {
    api->log(api, IOCPHOST_LOG_WARN,
             "backend packet %u without a player id dropped", (unsigned)id);
    return;
  }
  iocphost_service_t *players = find_players_service();
  if (!players) {
    api->log(api, IOCPHOST_LOG_ERROR, "no service named \"%s\"", players_name);
    return;
  }
  uint64_t player_id = get_u64_le(payload);
  iocphost_session_t *player = api->session_find(players, player_id);
  if (!player)
    return; /* the player has left */
  api->send_packet(player, id, payload + PLAYER_ID_BYTES,
                   len - PLAYER_ID_BYTES);
  api->session_release(player);
}

static void gateway_packet(iocphost_session_t *session, void *state,
                           uint16_t id, const uint8_t *payload, size_t len) {
  (void)state;
  if (is_backend(session))
    forward_to_player(id, payload, len);
  else
    forward_to_backend(session, id, payload, len);
}

static void gateway_disconnected(iocphost_session_t *session, void *state,
                                 iocphost_reason_t reason) {
  (void)state;
  if (!is_backend(session))
    return;
  int was_link = 0;
  gateway_lock(&link_mutex);
  if (backend_link == session) {
    backend_link = NULL;
    was_link = 1;
  }
  gateway_unlock(&link_mutex);
  if (was_link) {
    api->session_release(session);
    api->log(api, IOCPHOST_LOG_WARN, "backend link down (%s)",
             api->reason_text(reason));
  }
}

static const iocphost_plugin_t gateway_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "gateway",
    .version = "1.0.0",
    .session_size = 0,
    .on_load = gateway_load,
    .on_connected = gateway_connected,
    .on_packet = gateway_packet,
    .on_disconnected = gateway_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &gateway_plugin; }
