/*
 * hello: the smallest useful raw plugin. Whatever bytes arrive, it answers
 * a greeting followed by those bytes, in one gathered send:
 *   client sends "world"  ->  host answers "hello world"
 * (TCP is a byte stream, so one answer per arrival of bytes, not per write
 * of the client; use "packet" framing when messages must keep their
 * boundaries.)
 *
 * Settings: {"greeting": "hello"} (the default), read with the host's
 * typed getter: {"greeting": "hi"} answers "hi world".
 */
#include <iocphost/plugin.h>

#include <string.h>

/* The host's functions; valid from on_load until on_unload returns. */
static const iocphost_api_t *host;
/* The host's text (setting_string): valid until on_unload too. */
static const char *greeting;
static size_t greeting_len;

static int hello_load(const iocphost_api_t *api, const char *settings_json,
                      char *err, size_t err_len) {
  (void)settings_json, (void)err, (void)err_len;
  host = api;
  greeting = host->setting_string(host, "/greeting", "hello");
  greeting_len = strlen(greeting);
  host->log(host, IOCPHOST_LOG_INFO, "hello plugin ready (host %s): \"%s\"",
            host->host_version, greeting);
  return 0;
}

static void hello_connected(iocphost_session_t *session, void *state) {
  (void)session, (void)state;
}

static size_t hello_recv(iocphost_session_t *session, void *state,
                         const uint8_t *data, size_t len) {
  (void)state;
  iocphost_buf_t reply[3] = {{greeting, greeting_len}, {" ", 1}, {data, len}};
  host->sendv(session, reply, 3); /* copies: data may go once we return */
  return len;                     /* consumed everything */
}

static void hello_disconnected(iocphost_session_t *session, void *state,
                               iocphost_reason_t reason) {
  (void)session, (void)state, (void)reason;
}

static const iocphost_plugin_t hello_plugin = {
    IOCPHOST_PLUGIN_HEADER, .name = "hello",
    .version = "1.0.0",     .session_size = 0,
    .on_load = hello_load,  .on_connected = hello_connected,
    .on_recv = hello_recv,  .on_disconnected = hello_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &hello_plugin; }
