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
 * off; at most 3600000), read with the host's setting_int and checked by
 * check_settings (ABI 1.2), so `iocphost check` refuses a bad value before a
 * deploy.
 */
#include <iocphost/plugin.h>

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
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
#define PRESENCE_INTERVAL_SETTING "/presence_interval_ms"

/* Writes into found what the setting at pointer holds, when it is not the
 * integer asked for: a number, a string, a bool or an array. Returns 0 if
 * it holds none of them (it is missing). */
static int describe_setting(const iocphost_api_t *settings,
                            const char *pointer, char *found, size_t size) {
  double number = settings->setting_number(settings, pointer, NAN);
  const char *text = settings->setting_string(settings, pointer, NULL);
  int flag = settings->setting_bool(settings, pointer, -1);
  if (!isnan(number))
    snprintf(found, size, "%.15g", number);
  else if (text)
    snprintf(found, size, "\"%.40s\"", text);
  else if (flag >= 0)
    snprintf(found, size, "%s", flag ? "true" : "false");
  else if (settings->setting_array_length(settings, pointer) >= 0)
    snprintf(found, size, "an array");
  else
    return 0;
  return 1;
}

/* ABI 1.2: the settings' check, with no side effects: `iocphost check` and
 * `reload --dry-run` refuse bad settings before a deploy, and the host
 * calls it before chat_load too. */
static int chat_check_settings(const iocphost_api_t *settings,
                               const char *settings_json, char *err,
                               size_t err_len) {
  (void)settings_json;
  int64_t interval =
      settings->setting_int(settings, PRESENCE_INTERVAL_SETTING, -1);
  char found[64];
  if ((interval < 0 || interval > PRESENCE_INTERVAL_MAX) &&
      describe_setting(settings, PRESENCE_INTERVAL_SETTING, found,
                       sizeof found)) {
    snprintf(err, err_len,
             "presence_interval_ms must be an integer from 0 to %d "
             "(milliseconds; 0 turns PRESENCE off), found %s",
             PRESENCE_INTERVAL_MAX, found);
    return 1;
  }
  return 0;
}

static int chat_load(const iocphost_api_t *host, const char *settings_json,
                     char *err, size_t err_len) {
  (void)settings_json;
  (void)err;
  (void)err_len;
  api = host;
  atomic_store(&joined_count, 0);
  /* chat_check_settings accepted them before this runs. */
  presence_interval_ms = (uint32_t)api->setting_int(
      api, PRESENCE_INTERVAL_SETTING, 1000);
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
