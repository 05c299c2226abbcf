/*
 * WebSocket layers, server and client: see websocket.h. The upgrade request
 * (server) or its answer (client) is kept until its blank line (at most
 * max_request_bytes), then parsed whole by http-parser; frames in are
 * wslay's (masking, fragments, control frames, UTF-8 of text, message size,
 * the closing handshake); data frames out are written here, because a
 * server's frame is a few header bytes before the payload, and so needs no
 * copy and can be shared by a broadcast. A client's frame is masked, so its
 * payload is copied once, through a buffer on the stack, as it is masked.
 *
 * Every op runs under the session's lock (engine.h), so the layer keeps
 * no lock of its own and calls nothing of the session's but through the
 * sinks; its ping timer goes through session_transport_call.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <http_parser.h>
#include <wslay/wslay.h>

#include "engine/log.h"
#include "transport_log.h"
#include "websocket.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_HEADER_MAX 10 /* a server frame's header: no mask */
#define WS_GATHER_MAX 8
#define WS_MASK_CHUNK                                                          \
  2048 /* a client's payload is masked this much at a time */

typedef enum ws_phase {
  WS_HANDSHAKE = 0, /* reading the upgrade request (client: its answer) */
  WS_OPEN,          /* 101 sent (client: verified): frames */
  WS_REFUSED /* an HTTP error sent (client: a bad answer): nothing more */
} ws_phase_t;

/* The client's side: the Sec-WebSocket-Accept its key asks for, and random
 * bytes from the OS for its frames' mask keys, 4 a frame. */
typedef struct ws_client {
  char accept[29];
  uint8_t random_left;
  uint8_t random[64];
} ws_client_t;

typedef struct ws_layer {
  const ws_config_t *cfg;
  session_t *session; /* NULL in the unit tests and the fuzzer */
  ws_phase_t phase;
  uint8_t *request; /* the upgrade request so far */
  size_t request_len;
  wslay_event_context_ptr ev;
  /* During one op: where bytes come from and go to, and its verdict. */
  const uint8_t *in;
  size_t in_len;
  const transport_sink_t *up;
  const transport_sink_t *down;
  int result;  /* a session_reason_t that ends the session */
  int sink_rc; /* a sink's failure, passed on */
  uint8_t close_sent;
  uint8_t ping_outstanding;
  ws_client_t *client; /* the client's side; NULL: the server's */
} ws_layer_t;

/* ---- helpers ---- */

static void ws_log(const ws_layer_t *w, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  transport_log(level, "websocket", w->cfg->service, w->session, fmt, ap);
  va_end(ap);
}

uint16_t ws_close_code(int reason) {
  switch (reason) {
  case REASON_LOCAL:
  case REASON_PEER_CLOSED:
    return 1000; /* normal closure */
  case REASON_HOST_STOPPING:
    return 1001; /* going away */
  case REASON_PROTOCOL_ERROR:
    return 1002; /* protocol error */
  case REASON_IDLE_TIMEOUT:
  case REASON_SEND_QUEUE_FULL:
    return 1008; /* policy violation: silent too long, reads too slowly */
  default:
    return 1011; /* an error on our side */
  }
}

/* OpenSSL's libcrypto on both platforms (the TLS layer links it anyway;
 * Windows' bcrypt.dll is no KnownDLL, so importing it would let a DLL
 * beside the executable stand in for it). */
static int sha1(const void *data, size_t len, uint8_t out[20]) {
  unsigned int n = 0;
  return EVP_Digest(data, len, out, &n, EVP_sha1(), NULL) == 1 && n == 20 ? 0
                                                                        : -1;
}

/* Unpredictable bytes (a Sec-WebSocket-Key, mask keys: RFC 6455 asks for
 * them) from OpenSSL's generator, seeded from the operating system
 * (getrandom on Linux, advapi32's CryptGenRandom on Windows). Returns 0,
 * or -1. */
static int os_random(void *buf, size_t len) {
  return len <= (size_t)0x7fffffff && RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

/* A client's mask key: from the layer's pool, refilled from the OS one
 * system call per 16 frames. */
static int mask_key(ws_layer_t *w, uint8_t key[4]) {
  ws_client_t *c = w->client;
  if (c->random_left < 4) {
    if (os_random(c->random, sizeof c->random) != 0) {
      ws_log(w, LOG_ERROR,
             "cannot read random bytes from the OS for a "
             "WebSocket mask key: closing");
      return -1;
    }
    c->random_left = sizeof c->random;
  }
  c->random_left = (uint8_t)(c->random_left - 4);
  memcpy(key, c->random + c->random_left, 4);
  return 0;
}

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const uint8_t *in, size_t len, char *out) {
  size_t i = 0;
  for (; i + 2 < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *out++ = B64[v >> 18];
    *out++ = B64[(v >> 12) & 63];
    *out++ = B64[(v >> 6) & 63];
    *out++ = B64[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
    *out++ = B64[v >> 18];
    *out++ = B64[(v >> 12) & 63];
    *out++ = i + 1 < len ? B64[(v >> 6) & 63] : '=';
    *out++ = '=';
  }
  *out = '\0';
}

int ws_accept_key(const char *key, size_t key_len, char out[29]) {
  /* 16 bytes in base64: 22 characters and "==". */
  if (key_len != 24 || key[22] != '=' || key[23] != '=')
    return -1;
  for (size_t i = 0; i < 22; i++)
    if (!memchr(B64, key[i], 64))
      return -1;
  char joined[24 + sizeof WS_GUID];
  memcpy(joined, key, 24);
  memcpy(joined + 24, WS_GUID, sizeof WS_GUID - 1);
  uint8_t digest[20];
  if (sha1(joined, 24 + sizeof WS_GUID - 1, digest) != 0)
    return -1;
  base64(digest, sizeof digest, out);
  return 0;
}

static size_t frame_header(uint8_t h[WS_HEADER_MAX], uint8_t opcode,
                           uint64_t len) {
  h[0] = (uint8_t)(0x80 | opcode); /* FIN: messages are never fragmented */
  if (len < 126) {
    h[1] = (uint8_t)len;
    return 2;
  }
  if (len < 65536) {
    h[1] = 126;
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
    return 4;
  }
  h[1] = 127;
  for (int i = 0; i < 8; i++)
    h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
  return 10;
}

/* A close frame of ours, written directly: for errors wslay's own close
 * would carry no status code (a frame it cannot parse). A client's is
 * masked. */
static void write_close(ws_layer_t *w, uint16_t code, const char *text) {
  uint8_t frame[2 + 4 + 2 + 123];
  size_t tlen = text ? strlen(text) : 0;
  if (tlen > 123)
    tlen = 123;
  size_t head = 2;
  frame[0] = 0x88;
  frame[1] = (uint8_t)(2 + tlen);
  uint8_t key[4] = {0, 0, 0, 0};
  if (w->client) {
    if (mask_key(w, key) != 0) {
      w->sink_rc = ENGINE_E_NOMEM;
      return;
    }
    frame[1] |= 0x80;
    memcpy(frame + 2, key, 4);
    head += 4;
  }
  frame[head] = (uint8_t)(code >> 8);
  frame[head + 1] = (uint8_t)code;
  if (tlen)
    memcpy(frame + head + 2, text, tlen);
  for (size_t i = 0; i < 2 + tlen; i++)
    frame[head + i] ^= key[i & 3];
  int rc = transport_sink_write(w->down, frame, head + 2 + tlen);
  if (rc && !w->sink_rc)
    w->sink_rc = rc;
  w->close_sent = 1;
}

/* ---- wslay's callbacks ---- */

static ssize_t on_wslay_recv(wslay_event_context_ptr ctx, uint8_t *buf,
                             size_t len, int flags, void *user) {
  (void)flags;
  ws_layer_t *w = user;
  if (w->in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < w->in_len ? len : w->in_len;
  memcpy(buf, w->in, n);
  w->in += n;
  w->in_len -= n;
  return (ssize_t)n;
}

static ssize_t on_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data,
                             size_t len, int flags, void *user) {
  (void)flags;
  ws_layer_t *w = user;
  int rc = w->down ? transport_sink_write(w->down, data, len) : ENGINE_E_INVAL;
  if (rc) {
    if (!w->sink_rc)
      w->sink_rc = rc;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

/* Only a client masks (its pings, pongs and close); a server never asks. */
static int on_wslay_genmask(wslay_event_context_ptr ctx, uint8_t *buf,
                            size_t len, void *user) {
  ws_layer_t *w = user;
  uint8_t key[4];
  if (!w->client) {
    memset(buf, 0, len);
    return 0;
  }
  for (size_t i = 0; i < len; i += 4) {
    if (mask_key(w, key) != 0) {
      wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
      return -1;
    }
    memcpy(buf + i, key, len - i < 4 ? len - i : 4);
  }
  return 0;
}

static void on_wslay_message(wslay_event_context_ptr ctx,
                             const struct wslay_event_on_msg_recv_arg *arg,
                             void *user) {
  ws_layer_t *w = user;
  if (w->result || w->sink_rc)
    return; /* closing already: nothing more goes up */
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME:
  case WSLAY_BINARY_FRAME:
    if (w->cfg->packet_messages) {
      size_t size = arg->msg_length >= 2
                        ? (size_t)(arg->msg[0] | arg->msg[1] << 8)
                        : 0;
      if (arg->msg_length < 4 || size != arg->msg_length) {
        ws_log(w, LOG_WARN,
               "sent a message of %zu bytes that is not one packet (its "
               "header declares %zu bytes; a message carries exactly one "
               "packet, header included): closing with 1002 "
               "(protocol_error)",
               arg->msg_length, size);
        wslay_event_queue_close(ctx, 1002, (const uint8_t *)"not one packet",
                                14);
        w->result = REASON_PROTOCOL_ERROR;
        return;
      }
    }
    if (arg->msg_length) {
      int rc = transport_sink_write(w->up, arg->msg, arg->msg_length);
      if (rc)
        w->sink_rc = rc;
    }
    return;
  case WSLAY_PONG:
    w->ping_outstanding = 0;
    return;
  case WSLAY_CONNECTION_CLOSE:
    /* wslay has queued the answering close frame. */
    w->result = REASON_PEER_CLOSED;
    return;
  default:
    return; /* a ping: wslay queued the pong */
  }
}

static const struct wslay_event_callbacks wslay_callbacks = {
    on_wslay_recv, on_wslay_send, on_wslay_genmask, NULL, NULL, NULL,
    on_wslay_message};

/* Sends what wslay queued (pongs, a close) through the current down. */
static void flush_wslay(ws_layer_t *w) {
  if (wslay_event_want_write(w->ev) && wslay_event_send(w->ev) != 0 &&
      !w->sink_rc)
    w->sink_rc = ENGINE_E_NOMEM;
  if (wslay_event_get_close_sent(w->ev))
    w->close_sent = 1;
}

/* ---- the upgrade ---- */

typedef struct upgrade {
  const ws_config_t *cfg;
  const char *url;
  size_t url_len;
  const char *field, *value;
  size_t field_len, value_len;
  int last; /* 1: the last piece was a field's, 2: a value's */
  int done;
  int has_host, upgrade_ws, connection_upgrade, protocol_offered;
  int duplicate_key;
  const char *key, *version, *origin;
  size_t key_len, version_len, origin_len;
  /* An answer's (the client's side). */
  const char *accept, *protocol;
  size_t accept_len, protocol_len;
  int accepts, protocols, extensions;
} upgrade_t;

static int ieq(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z')
      x = (char)(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z')
      y = (char)(y - 'A' + 'a');
    if (x != y)
      return 0;
  }
  return 1;
}

/* Whether a comma-separated header value lists token (case-insensitive). */
static int lists_token(const char *v, size_t len, const char *token) {
  size_t i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t start = i;
    while (i < len && v[i] != ',')
      i++;
    size_t end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
      end--;
    if (end > start && ieq(v + start, end - start, token))
      return 1;
  }
  return 0;
}

static void header_done(upgrade_t *u) {
  const char *f = u->field, *v = u->value;
  size_t fl = u->field_len, vl = u->value_len;
  if (!f)
    return;
  if (ieq(f, fl, "host")) {
    u->has_host = 1;
  } else if (ieq(f, fl, "upgrade")) {
    u->upgrade_ws |= lists_token(v, vl, "websocket");
  } else if (ieq(f, fl, "connection")) {
    u->connection_upgrade |= lists_token(v, vl, "upgrade");
  } else if (ieq(f, fl, "sec-websocket-key")) {
    u->duplicate_key |= u->key != NULL;
    u->key = v;
    u->key_len = vl;
  } else if (ieq(f, fl, "sec-websocket-version")) {
    u->version = v;
    u->version_len = vl;
  } else if (ieq(f, fl, "origin")) {
    u->origin = v;
    u->origin_len = vl;
  } else if (ieq(f, fl, "sec-websocket-protocol")) {
    if (u->cfg->subprotocol)
      u->protocol_offered |= lists_token(v, vl, u->cfg->subprotocol);
    u->protocol = v;
    u->protocol_len = vl;
    u->protocols++;
  } else if (ieq(f, fl, "sec-websocket-accept")) {
    u->accept = v;
    u->accept_len = vl;
    u->accepts++;
  } else if (ieq(f, fl, "sec-websocket-extensions")) {
    u->extensions = 1;
  }
  u->field = u->value = NULL;
  u->field_len = u->value_len = 0;
}

/* http-parser may hand a string over in pieces; in one buffer they are
 * contiguous, so a piece extends the last one. */
static int on_url(http_parser *p, const char *at, size_t len) {
  upgrade_t *u = p->data;
  if (!u->url)
    u->url = at;
  u->url_len = (size_t)(at + len - u->url);
  return 0;
}

static int on_field(http_parser *p, const char *at, size_t len) {
  upgrade_t *u = p->data;
  if (u->last != 1) {
    header_done(u);
    u->field = at;
  }
  u->field_len = (size_t)(at + len - u->field);
  u->last = 1;
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t len) {
  upgrade_t *u = p->data;
  if (u->last != 2)
    u->value = at;
  u->value_len = (size_t)(at + len - u->value);
  u->last = 2;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  upgrade_t *u = p->data;
  header_done(u);
  u->done = 1;
  return 1; /* a GET has no body */
}

/* Answers with an HTTP error and one log line; the session then closes. */
static int refuse(ws_layer_t *w, int status, const char *why, ...) {
  static const struct {
    int status;
    const char *text;
  } texts[] = {{400, "Bad Request"},
               {403, "Forbidden"},
               {404, "Not Found"},
               {408, "Request Timeout"},
               {426, "Upgrade Required"},
               {431, "Request Header Fields Too Large"},
               {503, "Service Unavailable"}};
  const char *text = "Error";
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    if (texts[i].status == status)
      text = texts[i].text;
  char reason[256];
  va_list ap;
  va_start(ap, why);
  vsnprintf(reason, sizeof reason, why, ap);
  va_end(ap);
  char answer[512];
  int n = snprintf(answer, sizeof answer,
                   "HTTP/1.1 %d %s\r\nConnection: close\r\n%s"
                   "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n"
                   "%s\n",
                   status, text,
                   status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "",
                   strlen(reason) + 1, reason);
  if (n > 0 && (size_t)n < sizeof answer) {
    int rc = transport_sink_write(w->down, answer, (size_t)n);
    if (rc && !w->sink_rc)
      w->sink_rc = rc;
  }
  if (status != 408 && status != 503)
    ws_log(w, LOG_WARN, "WebSocket upgrade refused with %d (%s): %s", status,
           text, reason);
  w->phase = WS_REFUSED;
  return REASON_PROTOCOL_ERROR;
}

static int accept_upgrade(ws_layer_t *w, const upgrade_t *u) {
  char accept[29];
  if (ws_accept_key(u->key, u->key_len, accept) != 0)
    return refuse(w, 400, "Sec-WebSocket-Key is not the base64 of 16 bytes");
  if (wslay_event_context_server_init(&w->ev, &wslay_callbacks, w) != 0)
    return ENGINE_E_NOMEM;
  wslay_event_config_set_max_recv_msg_length(w->ev, w->cfg->max_message_bytes);
  char answer[256];
  int n = snprintf(answer, sizeof answer,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s"
                   "\r\n",
                   accept, w->cfg->subprotocol ? "Sec-WebSocket-Protocol: " : "",
                   w->cfg->subprotocol ? w->cfg->subprotocol : "",
                   w->cfg->subprotocol ? "\r\n" : "");
  if (n <= 0 || (size_t)n >= sizeof answer)
    return ENGINE_E_INVAL; /* a subprotocol too long: config.c caps it */
  w->phase = WS_OPEN;
  return transport_sink_write(w->down, answer, (size_t)n);
}

/* The request in w->request, whole up to its blank line (len bytes). */
static int parse_upgrade(ws_layer_t *w, size_t len) {
  const ws_config_t *cfg = w->cfg;
  upgrade_t u;
  memset(&u, 0, sizeof u);
  u.cfg = cfg;
  http_parser parser;
  http_parser_init(&parser, HTTP_REQUEST);
  parser.data = &u;
  http_parser_settings settings;
  memset(&settings, 0, sizeof settings);
  settings.on_url = on_url;
  settings.on_header_field = on_field;
  settings.on_header_value = on_value;
  settings.on_headers_complete = on_headers_complete;
  http_parser_execute(&parser, &settings, (const char *)w->request, len);
  if (HTTP_PARSER_ERRNO(&parser) != HPE_OK || !u.done)
    return refuse(w, 400, "not an HTTP/1.1 request (%s)",
                  http_errno_name(HTTP_PARSER_ERRNO(&parser)));
  if (parser.method != HTTP_GET || parser.http_major != 1 ||
      parser.http_minor < 1)
    return refuse(w, 400, "an upgrade is a GET over HTTP/1.1");
  size_t path_len = 0;
  while (path_len < u.url_len && u.url[path_len] != '?')
    path_len++;
  if (path_len != strlen(cfg->path) ||
      memcmp(u.url, cfg->path, path_len) != 0)
    return refuse(w, 404, "the path %.*s is not this service's (%s)",
                  (int)(path_len > 100 ? 100 : path_len), u.url, cfg->path);
  if (!u.upgrade_ws || !u.connection_upgrade || !u.has_host)
    return refuse(w, 400,
                  "not a WebSocket upgrade (Host, Upgrade: websocket and "
                  "Connection: Upgrade are required)");
  if (!u.version || u.version_len != 2 || memcmp(u.version, "13", 2) != 0)
    return refuse(w, 426, "Sec-WebSocket-Version %.*s is not 13",
                  u.version ? (int)(u.version_len > 20 ? 20 : u.version_len)
                            : 4,
                  u.version ? u.version : "none");
  if (!u.key || u.duplicate_key)
    return refuse(w, 400, "Sec-WebSocket-Key is missing or given twice");
  if (cfg->origin_count) {
    int allowed = 0;
    for (size_t i = 0; u.origin && i < cfg->origin_count && !allowed; i++)
      allowed = ieq(u.origin, u.origin_len, cfg->origins[i]);
    if (!allowed)
      return refuse(w, 403, "Origin %.*s is not among the allowed origins",
                    u.origin ? (int)(u.origin_len > 100 ? 100 : u.origin_len)
                             : 4,
                    u.origin ? u.origin : "none");
  }
  if (cfg->subprotocol && !u.protocol_offered)
    return refuse(w, 400, "the client does not offer the subprotocol %s",
                  cfg->subprotocol);
  return accept_upgrade(w, &u);
}

/* ---- the client's upgrade: its request, the server's answer ---- */

/* The answer failed: one log line saying what the server answered; the
 * session ends (protocol_error) with nothing more written, and a client
 * service connects again after its backoff. */
static int client_fail(ws_layer_t *w, const char *why, ...) {
  char reason[320];
  va_list ap;
  va_start(ap, why);
  vsnprintf(reason, sizeof reason, why, ap);
  va_end(ap);
  ws_log(w, LOG_WARN,
         "WebSocket upgrade to %s failed: %s; closing (protocol_error), the "
         "service connects again after its reconnect backoff",
         w->cfg->path, reason);
  w->phase = WS_REFUSED;
  return REASON_PROTOCOL_ERROR;
}

static int ws_client_start(void *layer, const transport_sink_t *down) {
  ws_layer_t *w = layer;
  const ws_config_t *cfg = w->cfg;
  char peer[ADDRESS_TEXT_MAX];
  const char *host = cfg->host;
  if (!host) {
    if (!w->session ||
        address_format(session_peer(w->session), peer, sizeof peer) < 0)
      return ENGINE_E_INVAL;
    host = peer;
  }
  uint8_t nonce[16];
  char key[25];
  if (os_random(nonce, sizeof nonce) != 0) {
    ws_log(w, LOG_ERROR,
           "cannot read random bytes from the OS for a "
           "Sec-WebSocket-Key: closing");
    return ENGINE_E_NOMEM;
  }
  base64(nonce, sizeof nonce, key);
  if (ws_accept_key(key, 24, w->client->accept) != 0)
    return ENGINE_E_INVAL;
  char request[2048];
  int n = snprintf(request, sizeof request,
                   "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s%s%s%s%s%s\r\n",
                   cfg->path, host, key, cfg->origin ? "Origin: " : "",
                   cfg->origin ? cfg->origin : "", cfg->origin ? "\r\n" : "",
                   cfg->subprotocol ? "Sec-WebSocket-Protocol: " : "",
                   cfg->subprotocol ? cfg->subprotocol : "",
                   cfg->subprotocol ? "\r\n" : "");
  if (n <= 0 || (size_t)n >= sizeof request)
    return ENGINE_E_INVAL; /* config.c caps what goes in */
  return transport_sink_write(down, request, (size_t)n);
}

/* The answer's first line, for a log line: at most 100 bytes. */
static void status_line(const uint8_t *head, size_t len, char out[104]) {
  size_t n = 0;
  while (n < len && n < 100 && head[n] != '\r' && head[n] != '\n')
    n++;
  memcpy(out, head, n);
  out[n] = '\0';
}

/* The server's answer in w->request, whole up to its blank line (len
 * bytes): a 101 with our key's Sec-WebSocket-Accept (RFC 6455 section
 * 4.1), and the subprotocol asked for, no other and no extensions. */
static int check_answer(ws_layer_t *w, size_t len) {
  const ws_config_t *cfg = w->cfg;
  upgrade_t u;
  memset(&u, 0, sizeof u);
  u.cfg = cfg;
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &u;
  http_parser_settings settings;
  memset(&settings, 0, sizeof settings);
  settings.on_header_field = on_field;
  settings.on_header_value = on_value;
  settings.on_headers_complete = on_headers_complete;
  http_parser_execute(&parser, &settings, (const char *)w->request, len);
  char line[104];
  status_line(w->request, len, line);
  if (HTTP_PARSER_ERRNO(&parser) != HPE_OK || !u.done)
    return client_fail(w,
                       "the server answered \"%s\", which is not an "
                       "HTTP/1.1 response (%s)",
                       line, http_errno_name(HTTP_PARSER_ERRNO(&parser)));
  if (parser.status_code != 101)
    return client_fail(w,
                       "the server answered \"%s\", not 101 Switching "
                       "Protocols (is the address a WebSocket service, "
                       "and websocket.path its path?)",
                       line);
  if (!u.upgrade_ws || !u.connection_upgrade)
    return client_fail(w, "the server's 101 lacks \"Upgrade: websocket\" or "
                          "\"Connection: Upgrade\"");
  if (u.accepts != 1 || u.accept_len != 28 ||
      memcmp(u.accept, w->client->accept, 28) != 0)
    return client_fail(
        w,
        "the server answered Sec-WebSocket-Accept \"%.*s\"%s, not \"%s\" "
        "(the answer to our Sec-WebSocket-Key)",
        u.accept ? (int)(u.accept_len > 60 ? 60 : u.accept_len) : 4,
        u.accept ? u.accept : "none", u.accepts > 1 ? " among others" : "",
        w->client->accept);
  if (u.extensions)
    return client_fail(w, "the server's 101 names extensions "
                          "(Sec-WebSocket-Extensions), which we did not ask "
                          "for");
  if (cfg->subprotocol &&
      (u.protocols != 1 || u.protocol_len != strlen(cfg->subprotocol) ||
       memcmp(u.protocol, cfg->subprotocol, u.protocol_len) != 0))
    return client_fail(
        w,
        "the server's 101 names the subprotocol \"%.*s\", not \"%s\" as "
        "websocket.subprotocol asks",
        u.protocol ? (int)(u.protocol_len > 64 ? 64 : u.protocol_len) : 4,
        u.protocol ? u.protocol : "none", cfg->subprotocol);
  if (!cfg->subprotocol && u.protocols)
    return client_fail(
        w,
        "the server's 101 names the subprotocol \"%.*s\", which we did "
        "not ask for (set websocket.subprotocol)",
        (int)(u.protocol_len > 64 ? 64 : u.protocol_len), u.protocol);
  if (wslay_event_context_client_init(&w->ev, &wslay_callbacks, w) != 0)
    return ENGINE_E_NOMEM;
  wslay_event_config_set_max_recv_msg_length(w->ev, w->cfg->max_message_bytes);
  w->phase = WS_OPEN;
  return 0;
}

/* Keeps request bytes until the blank line. Returns how many of data
 * belonged to the request (the rest are frames), or sets w->result. */
static size_t take_request(ws_layer_t *w, const uint8_t *data, size_t len,
                           int *rc) {
  size_t cap = w->cfg->max_request_bytes;
  size_t old = w->request_len;
  size_t room = cap - old;
  size_t take = len < room ? len : room;
  if (!w->request) {
    w->request = malloc(cap);
    if (!w->request) {
      *rc = ENGINE_E_NOMEM;
      return len;
    }
  }
  memcpy(w->request + old, data, take);
  w->request_len += take;
  /* The blank line may straddle the old bytes and the new. */
  size_t from = old > 3 ? old - 3 : 0;
  for (size_t i = from; i + 4 <= w->request_len; i++) {
    if (memcmp(w->request + i, "\r\n\r\n", 4) == 0) {
      size_t end = i + 4;
      *rc = w->client ? check_answer(w, end) : parse_upgrade(w, end);
      free(w->request);
      w->request = NULL;
      w->request_len = 0;
      return end - old;
    }
  }
  if (w->request_len >= cap && w->client)
    *rc = client_fail(w,
                      "the server's answer is longer than %zu bytes "
                      "before its blank line",
                      cap);
  else if (w->request_len >= cap)
    *rc = refuse(w, 431, "the upgrade request is longer than %zu bytes",
                 cap);
  return len;
}

/* ---- frames ---- */

static int frames_in(ws_layer_t *w, const uint8_t *data, size_t len) {
  w->in = data;
  w->in_len = len;
  int r = wslay_event_recv(w->ev);
  if (r == WSLAY_ERR_NOMEM)
    return ENGINE_E_NOMEM;
  if (w->sink_rc)
    return w->sink_rc;
  if (r != 0 && !w->result) {
    /* A frame wslay cannot parse (a control frame over 125 bytes or
     * fragmented, a length not in its shortest form): it queued a close
     * without a status; ours says 1002. */
    ws_log(w, LOG_WARN,
           "sent a malformed frame (RFC 6455 section 5): closing with 1002 "
           "(protocol_error)");
    write_close(w, 1002, "malformed frame");
    w->result = REASON_PROTOCOL_ERROR;
    return w->sink_rc ? w->sink_rc : w->result;
  }
  flush_wslay(w);
  if (!w->result && wslay_event_get_close_sent(w->ev) &&
      !wslay_event_get_close_received(w->ev)) {
    /* wslay closed on its own: a frame broke the protocol. */
    uint16_t code = wslay_event_get_status_code_sent(w->ev);
    if (code == 1009)
      ws_log(w, LOG_WARN,
             "sent a message longer than %s %u: closing with 1009 "
             "(protocol_error)",
             w->cfg->max_message_name ? w->cfg->max_message_name : "the limit",
             w->cfg->max_message_bytes);
    else
      ws_log(w, LOG_WARN,
             "sent a frame that breaks RFC 6455 (%s, reserved bits, an "
             "unknown opcode, a bad continuation or invalid UTF-8 text): "
             "closing with %u (protocol_error)",
             w->client ? "masked by a server" : "unmasked", (unsigned)code);
    w->result = REASON_PROTOCOL_ERROR;
  }
  if (w->sink_rc)
    return w->sink_rc;
  return w->result;
}

/* ---- the layer's ops ---- */

static int ws_open(void *config, session_t *s, void **layer) {
  ws_layer_t *w = calloc(1, sizeof *w);
  if (!w)
    return -1;
  w->cfg = config;
  w->session = s;
  *layer = w;
  return 0;
}

/* The client's state rides behind the layer: a server's stays small. */
static int ws_client_open(void *config, session_t *s, void **layer) {
  ws_layer_t *w = calloc(1, sizeof *w + sizeof(ws_client_t));
  if (!w)
    return -1;
  w->cfg = config;
  w->session = s;
  w->client = (ws_client_t *)(w + 1);
  *layer = w;
  return 0;
}

static int ws_input(void *layer, const uint8_t *data, size_t len,
                    const transport_sink_t *up, const transport_sink_t *down) {
  ws_layer_t *w = layer;
  w->up = up;
  w->down = down;
  w->sink_rc = 0;
  int rc = 0;
  if (w->phase == WS_HANDSHAKE) {
    size_t used = take_request(w, data, len, &rc);
    data += used;
    len -= used;
  }
  if (rc == 0 && w->phase == WS_OPEN && len > 0)
    rc = frames_in(w, data, len);
  else if (rc == 0 && w->phase == WS_REFUSED)
    rc = REASON_PROTOCOL_ERROR;
  w->up = w->down = NULL;
  return rc;
}

/* The byte at offset off of the bytes bufs describe. */
static uint8_t byte_at(const session_buf_t *bufs, size_t count, size_t off) {
  for (size_t i = 0; i < count; i++) {
    if (off < bufs[i].len)
      return ((const uint8_t *)bufs[i].data)[off];
    off -= bufs[i].len;
  }
  return 0;
}

/* One binary message of bytes [off, off + len) of bufs: its header, then
 * the slices of bufs it covers, gathered in as few writes as fit. */
static int write_message(const session_buf_t *bufs, size_t count, size_t off,
                         size_t len, const transport_sink_t *down) {
  uint8_t header[WS_HEADER_MAX];
  session_buf_t v[1 + WS_GATHER_MAX];
  size_t n = 0;
  v[n].data = header;
  v[n++].len = frame_header(header, WSLAY_BINARY_FRAME, len);
  size_t pos = 0, end = off + len;
  for (size_t i = 0; i < count && pos < end; i++) {
    size_t b0 = pos, b1 = pos + bufs[i].len;
    pos = b1;
    size_t from = b0 > off ? b0 : off, to = b1 < end ? b1 : end;
    if (from >= to)
      continue;
    v[n].data = (const uint8_t *)bufs[i].data + (from - b0);
    v[n++].len = to - from;
    if (n == sizeof v / sizeof v[0]) {
      int rc = down->write(down, v, n);
      if (rc)
        return rc;
      n = 0;
    }
  }
  return n ? down->write(down, v, n) : 0;
}

/* A client's binary message of bytes [off, off + len) of bufs: its header
 * with a fresh mask key, then the payload masked through a buffer on the
 * stack (the sink copies what it is given). */
static int write_masked_message(ws_layer_t *w, const session_buf_t *bufs,
                                size_t count, size_t off, size_t len,
                                const transport_sink_t *down) {
  uint8_t out[WS_HEADER_MAX + 4 + WS_MASK_CHUNK];
  uint8_t key[4];
  if (mask_key(w, key) != 0)
    return ENGINE_E_NOMEM;
  size_t n = frame_header(out, WSLAY_BINARY_FRAME, len);
  out[1] |= 0x80;
  memcpy(out + n, key, 4);
  n += 4;
  size_t pos = 0, end = off + len, k = 0;
  for (size_t i = 0; i < count && pos < end; i++) {
    size_t b0 = pos, b1 = pos + bufs[i].len;
    pos = b1;
    size_t from = b0 > off ? b0 : off, to = b1 < end ? b1 : end;
    const uint8_t *p =
        (const uint8_t *)bufs[i].data + (from > b0 ? from - b0 : 0);
    for (size_t j = from; j < to; j++) {
      if (n == sizeof out) {
        int rc = transport_sink_write(down, out, n);
        if (rc)
          return rc;
        n = 0;
      }
      out[n++] = (uint8_t)(*p++ ^ key[k++ & 3]);
    }
  }
  return n ? transport_sink_write(down, out, n) : 0;
}

/* One message: a client's masked, a server's (or a shared one) as is. */
static int emit_message(ws_layer_t *w, const session_buf_t *bufs, size_t count,
                        size_t off, size_t len, const transport_sink_t *down) {
  if (w && w->client)
    return write_masked_message(w, bufs, count, off, len, down);
  return write_message(bufs, count, off, len, down);
}

/* Every send call is one message; on a packet service, every packet of it
 * is one (so two packets sent in one call reach the client as two
 * messages, as they would as two packets over TCP). Bytes that are not
 * whole packets go out as one message, as they were given. */
static int ws_output(void *config, void *layer, const session_buf_t *bufs,
                     size_t count, const transport_sink_t *down) {
  const ws_config_t *cfg = config;
  ws_layer_t *w = layer;
  if (w && (w->phase != WS_OPEN || w->close_sent))
    return ENGINE_E_CLOSED;
  size_t total = 0;
  for (size_t i = 0; i < count; i++)
    total += bufs[i].len;
  size_t off = 0;
  while (cfg->packet_messages && total - off >= 4) {
    size_t size = (size_t)byte_at(bufs, count, off) |
                  (size_t)byte_at(bufs, count, off + 1) << 8;
    if (size < 4 || size > total - off)
      break;
    if (size == total - off && off == 0)
      break; /* one packet: the common case, below */
    int rc = emit_message(w, bufs, count, off, size, down);
    if (rc)
      return rc;
    off += size;
  }
  if (off < total || total == 0)
    return emit_message(w, bufs, count, off, total - off, down);
  return 0;
}

static int ws_ready(void *layer) {
  return ((ws_layer_t *)layer)->phase == WS_OPEN;
}

static int send_ping(void *layer, void *arg, const transport_sink_t *down) {
  (void)arg;
  ws_layer_t *w = layer;
  if (w->phase != WS_OPEN || w->close_sent)
    return 0;
  if (w->ping_outstanding) {
    ws_log(w, LOG_WARN,
           "did not answer a ping within ping_interval_ms %u: closing with "
           "1008 (idle_timeout)",
           w->cfg->ping_interval_ms);
    return REASON_IDLE_TIMEOUT;
  }
  struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
  if (wslay_event_queue_msg(w->ev, &ping) != 0)
    return ENGINE_E_NOMEM;
  w->down = down;
  w->sink_rc = 0;
  flush_wslay(w);
  w->down = NULL;
  w->ping_outstanding = 1;
  return w->sink_rc;
}

static void ping_tick(session_t *s, void *arg) {
  session_transport_call(s, arg, send_ping, NULL);
}

static void ws_opened(void *layer) {
  ws_layer_t *w = layer;
  if (w->session && w->cfg->ping_interval_ms)
    session_timer_start(w->session, w->cfg->ping_interval_ms,
                        w->cfg->ping_interval_ms, ping_tick, w);
}

static void ws_close(void *layer, session_reason_t reason,
                     const transport_sink_t *down) {
  ws_layer_t *w = layer;
  w->down = down;
  if (w->phase == WS_HANDSHAKE) {
    /* A handshake cut short: its deadline (the engine logs it), the host
     * stopping, or (a client's) the server's FIN. A client has no answer
     * to give: its FIN is all. */
    if (w->client && reason == REASON_PEER_CLOSED)
      client_fail(w, "the server closed the connection %s",
                  w->request_len ? "in the middle of its answer"
                                 : "without answering");
    else if (!w->client && reason == REASON_IDLE_TIMEOUT)
      refuse(w, 408, "the upgrade request took too long");
    else if (!w->client && reason == REASON_HOST_STOPPING)
      refuse(w, 503, "the host is stopping");
    w->phase = WS_REFUSED;
  } else if (w->phase == WS_OPEN && !w->close_sent &&
             !wslay_event_get_close_sent(w->ev)) {
    const char *name = session_reason_name(reason);
    if (wslay_event_queue_close(w->ev, ws_close_code(reason),
                                (const uint8_t *)name, strlen(name)) == 0)
      flush_wslay(w);
    w->close_sent = 1;
  }
  w->down = NULL;
}

static void ws_free(void *layer) {
  ws_layer_t *w = layer;
  if (w->ev)
    wslay_event_context_free(w->ev);
  free(w->request);
  free(w);
}

const transport_ops_t websocket_transport = {
    .name = "websocket",
    .flags = TRANSPORT_SHARED_OUTPUT,
    .open = ws_open,
    .input = ws_input,
    .output = ws_output,
    .ready = ws_ready,
    .opened = ws_opened,
    .close = ws_close,
    .free = ws_free,
};

const transport_ops_t websocket_client_transport = {
    .name = "websocket",
    .flags = 0, /* masked with the session's own keys: never shared */
    .open = ws_client_open,
    .start = ws_client_start,
    .input = ws_input,
    .output = ws_output,
    .ready = ws_ready,
    .opened = ws_opened,
    .close = ws_close,
    .free = ws_free,
};
