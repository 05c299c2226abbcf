/*
 * staller: a test plugin for the stall watchdog and the session admin
 * commands (SPEC section 15), on a "packet" service.
 *
 * Packets in (payloads little-endian):
 *   1 stall {u32 sleep_ms}: sleeps sleep_ms inside on_packet (what the
 *           watchdog must report), then answers packet 1 {u32 sleep_ms,
 *           u64 session id}.
 *   2 echo  anything: answered at once with packet 2 and the same payload.
 *   3 join  joins the plugin's one room (made in on_load); answers packet 3
 *           {u64 room id} from the room's on_join.
 *
 * Log lines tests read (api->log, level info):
 *   staller disconnected: session=N reason=R
 *       from on_disconnected, R the reason's name (reason_text).
 */
#include <iocphost/plugin.h>

#include <stdint.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#endif

static const iocphost_api_t *api;
static iocphost_room_t *room;

static void sleep_ms(uint32_t ms) {
#ifdef _WIN32
  Sleep(ms);
#else
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
#endif
}

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void joined(iocphost_room_t *r, void *state,
                   iocphost_session_t *session) {
  (void)state;
  uint8_t reply[8];
  put_u64(reply, api->room_id(r));
  api->send_packet(session, 3, reply, sizeof reply);
}

static const iocphost_room_class_t room_class = {
    .struct_size = sizeof(iocphost_room_class_t),
    .on_join = joined,
};

static int staller_load(const iocphost_api_t *host_api, const char *settings,
                        char *err, size_t err_len) {
  (void)settings;
  api = host_api;
  room = api->room_create(api, &room_class, NULL);
  if (!room) {
    strncpy(err, "cannot create the room", err_len - 1);
    err[err_len - 1] = '\0';
    return -1;
  }
  return 0;
}

static void staller_stopping(void) {
  if (room) {
    api->room_close(room);
    api->room_release(room);
    room = NULL;
  }
}

static void staller_connected(iocphost_session_t *session, void *state) {
  (void)session;
  (void)state;
}

static void staller_packet(iocphost_session_t *session, void *state,
                           uint16_t id, const uint8_t *payload, size_t len) {
  (void)state;
  if (id == 1 && len >= 4) {
    sleep_ms((uint32_t)payload[0] | (uint32_t)payload[1] << 8 |
             (uint32_t)payload[2] << 16 | (uint32_t)payload[3] << 24);
    uint8_t reply[12];
    memcpy(reply, payload, 4);
    put_u64(reply + 4, api->session_id(session));
    api->send_packet(session, 1, reply, sizeof reply);
  } else if (id == 2) {
    api->send_packet(session, 2, payload, len);
  } else if (id == 3 && room) {
    api->room_join(room, session);
  }
}

static void staller_disconnected(iocphost_session_t *session, void *state,
                                 iocphost_reason_t reason) {
  (void)state;
  api->log(api, IOCPHOST_LOG_INFO,
           "staller disconnected: session=%llu reason=%s",
           (unsigned long long)api->session_id(session),
           api->reason_text(reason));
}

static const iocphost_plugin_t staller_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "staller",
    .version = "1.0.0",
    .on_load = staller_load,
    .on_stopping = staller_stopping,
    .on_connected = staller_connected,
    .on_packet = staller_packet,
    .on_disconnected = staller_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &staller_plugin; }
