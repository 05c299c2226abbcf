/*
 * chat: a chat room on a "packet" service.
 *
 * Every packet is the host's frame: uint16 size (whole packet, header
 * included), uint16 id, both little-endian, then the payload. Text is UTF-8
 * (not checked) without a terminating zero.
 *
 * Client to server:
 *   JOIN   1  payload = name (1..32 bytes, no control characters)
 *   SAY    2  payload = text (at most 1024 bytes); only after JOIN
 *   LEAVE  3  no payload; the server answers LEFT and then disconnects
 *
 * Server to clients (broadcasts go to every open session of the service,
 * joined or not, as one shared buffer):
 *   JOINED   101  payload = name             broadcast after a JOIN
 *   SAID     102  payload = "name: text"     broadcast after a SAY
 *   LEFT     103  payload = name             broadcast after LEAVE, or when
 *                                            a joined client disconnects
 *   PRESENCE 104  payload = "N online"       to each session, every
 *                                            presence_interval_ms (N counts
 *                                            the joined sessions of every
 *                                            service using this plugin)
 *   ERROR    199  payload = reason text      to the sender only: SAY before
 *                                            JOIN, a second JOIN, a bad name,
 *                                            a too long text, an unknown id
 *
 * Settings: {"presence_interval_ms": 1000} (the default; 0 turns PRESENCE
 * off; at most 3600000), checked by check_settings (ABI 1.2), so `iocphost
 * check` refuses a bad value before a deploy. The settings text is read with
 * strstr/strtol, not a JSON parser: a plugin must not link cJSON, and one
 * integer does not need one.
 */
#include <iocphost/plugin.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum chat_packet_id {
  CHAT_JOIN = 1,
  CHAT_SAY = 2,
  CHAT_LEAVE = 3,
  CHAT_JOINED = 101,
  CHAT_SAID = 102,
  CHAT_LEFT = 103,
  CHAT_PRESENCE = 104,
  CHAT_ERROR = 199
};

#define CHAT_NAME_MAX 32
#define CHAT_TEXT_MAX 1024

typedef struct chat_session {
  char name[CHAT_NAME_MAX + 1];
  size_t name_len;
  int joined;
} chat_session_t;

static const iocphost_api_t *api;
static uint32_t presence_interval_ms = 1000;
static atomic_int joined_count;

/* Reads `"key": <integer>` from flat settings JSON. Returns 0 if the key is
 * absent (value untouched), 1 if read, -1 if the value is not an integer in
 * [min, max] (then *found points at it, when found is not NULL). */
static int settings_uint(const char *json, const char *key, long min, long max,
                         uint32_t *value, const char **found) {
  char quoted[64];
  snprintf(quoted, sizeof quoted, "\"%s\"", key);
  const char *at = json ? strstr(json, quoted) : NULL;
  if (!at)
    return 0;
  at += strlen(quoted);
  while (*at == ' ' || *at == '\t' || *at == '\r' || *at == '\n')
    at++;
  if (found)
    *found = at;
  if (*at++ != ':')
    return -1;
  while (*at == ' ' || *at == '\t' || *at == '\r' || *at == '\n')
    at++;
  if (found)
    *found = at;
  char *end;
  errno = 0;
  long parsed = strtol(at, &end, 10);
  if (end == at || errno != 0 || parsed < min || parsed > max)
    return -1;
  *value = (uint32_t)parsed;
  return 1;
}

static void send_error(iocphost_session_t *session, const char *text) {
  api->send_packet(session, CHAT_ERROR, text, strlen(text));
}

static void presence_tick(iocphost_session_t *session, void *state,
                          void *arg) {
  (void)state;
  (void)arg;
  char text[32];
  int len = snprintf(text, sizeof text, "%d online",
                     atomic_load(&joined_count));
  api->send_packet(session, CHAT_PRESENCE, text, (size_t)len);
}

#define PRESENCE_INTERVAL_MAX 3600000 /* an hour */

/* ABI 1.2: the settings' check, with no side effects: `iocphost check` and
 * `reload --dry-run` refuse bad settings before a deploy, and the host
 * calls it before chat_load too. */
static int chat_check_settings(const char *settings_json, char *err,
                               size_t err_len) {
  uint32_t interval;
  const char *found = "";
  if (settings_uint(settings_json, "presence_interval_ms", 0,
                    PRESENCE_INTERVAL_MAX, &interval, &found) < 0) {
    size_t shown = strcspn(found, ",}\r\n");
    snprintf(err, err_len,
             "presence_interval_ms must be an integer from 0 to %d "
             "(milliseconds; 0 turns PRESENCE off), found %.*s",
             PRESENCE_INTERVAL_MAX, (int)(shown > 40 ? 40 : shown), found);
    return 1;
  }
  return 0;
}

static int chat_load(const iocphost_api_t *host, const char *settings_json,
                     char *err, size_t err_len) {
  (void)err;
  (void)err_len;
  api = host;
  atomic_store(&joined_count, 0);
  /* chat_check_settings accepted them before this runs. */
  presence_interval_ms = 1000;
  settings_uint(settings_json, "presence_interval_ms", 0, PRESENCE_INTERVAL_MAX,
                &presence_interval_ms, NULL);
  return 0;
}

static void chat_connected(iocphost_session_t *session, void *state) {
  (void)state;
  if (presence_interval_ms > 0)
    api->timer_start(session, presence_interval_ms, presence_interval_ms,
                     presence_tick, NULL);
}

static int valid_name(const uint8_t *name, size_t len) {
  if (len == 0 || len > CHAT_NAME_MAX)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (name[i] < 0x20 || name[i] == 0x7f)
      return 0;
  return 1;
}

static void on_join(iocphost_session_t *session, chat_session_t *chat,
                    const uint8_t *name, size_t len) {
  if (chat->joined) {
    send_error(session, "already joined");
    return;
  }
  if (!valid_name(name, len)) {
    send_error(session, "a name is 1 to 32 bytes without control characters");
    return;
  }
  memcpy(chat->name, name, len);
  chat->name[len] = '\0';
  chat->name_len = len;
  chat->joined = 1;
  atomic_fetch_add(&joined_count, 1);
  api->broadcast_packet(api->session_service(session), CHAT_JOINED,
                        chat->name, chat->name_len);
}

static void on_say(iocphost_session_t *session, chat_session_t *chat,
                   const uint8_t *text, size_t len) {
  if (!chat->joined) {
    send_error(session, "join first: SAY before JOIN");
    return;
  }
  if (len > CHAT_TEXT_MAX) {
    send_error(session, "text longer than 1024 bytes");
    return;
  }
  char line[CHAT_NAME_MAX + 2 + CHAT_TEXT_MAX];
  memcpy(line, chat->name, chat->name_len);
  memcpy(line + chat->name_len, ": ", 2);
  memcpy(line + chat->name_len + 2, text, len);
  api->broadcast_packet(api->session_service(session), CHAT_SAID, line,
                        chat->name_len + 2 + len);
}

/* Announces that a joined client is gone; safe to call twice. */
static void leave_room(iocphost_session_t *session, chat_session_t *chat) {
  if (!chat->joined)
    return;
  chat->joined = 0;
  atomic_fetch_sub(&joined_count, 1);
  api->broadcast_packet(api->session_service(session), CHAT_LEFT, chat->name,
                        chat->name_len);
}

static void chat_packet(iocphost_session_t *session, void *state, uint16_t id,
                        const uint8_t *payload, size_t len) {
  chat_session_t *chat = state;
  switch (id) {
  case CHAT_JOIN:
    on_join(session, chat, payload, len);
    break;
  case CHAT_SAY:
    on_say(session, chat, payload, len);
    break;
  case CHAT_LEAVE:
    leave_room(session, chat);
    api->disconnect(session);
    break;
  default: {
    char text[48];
    snprintf(text, sizeof text, "unknown packet id %u", (unsigned)id);
    send_error(session, text);
  }
  }
}

static void chat_disconnected(iocphost_session_t *session, void *state,
                              iocphost_reason_t reason) {
  (void)reason;
  leave_room(session, state);
}

static const iocphost_plugin_t chat_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "chat",
    .version = "1.0.0",
    .session_size = sizeof(chat_session_t),
    .on_load = chat_load,
    .on_connected = chat_connected,
    .on_packet = chat_packet,
    .on_disconnected = chat_disconnected,
    .check_settings = chat_check_settings,
};

IOCPHOST_PLUGIN_ENTRY { return &chat_plugin; }
