/*
 * hello: the smallest useful raw plugin. Whatever bytes arrive, it answers
 * "hello " followed by those bytes, in one gathered send:
 *   client sends "world"  ->  host answers "hello world"
 * (TCP is a byte stream, so one answer per arrival of bytes, not per write
 * of the client; use "packet" framing when messages must keep their
 * boundaries.)
 */
#include <iocphost/plugin.h>

/* The host's functions; valid from on_load until on_unload returns. */
static const iocphost_api_t *host;

static int hello_load(const iocphost_api_t *api, const char *settings_json,
                      char *err, size_t err_len) {
  (void)settings_json, (void)err, (void)err_len;
  host = api;
  host->log(host, IOCPHOST_LOG_INFO, "hello plugin ready (host %s)",
            host->host_version);
  return 0;
}

static void hello_connected(iocphost_session_t *session, void *state) {
  (void)session, (void)state;
}

static size_t hello_recv(iocphost_session_t *session, void *state,
                         const uint8_t *data, size_t len) {
  (void)state;
  iocphost_buf_t reply[2] = {{"hello ", 6}, {data, len}};
  host->sendv(session, reply, 2); /* copies: data may go once we return */
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
