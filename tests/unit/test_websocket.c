/* The WebSocket layer (host/transport/websocket.c) without a session: its
 * ops fed by hand, what it writes up (to the handler) and down (to the
 * wire) caught by two test sinks. The accept key of RFC 6455's example, the
 * upgrade whole and byte by byte, each refusal's status, frames in
 * (masked, fragmented, unmasked, oversize, ping, close), the frame header
 * for every length class, and the close codes. The client's side: its
 * upgrade request, each answer it refuses, masked frames both ways. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "testutil.h"
#include "websocket.h"

typedef struct capture {
  uint8_t data[200000];
  size_t len;
} capture_t;

static capture_t up_bytes, down_bytes;

static int capture_write(const transport_sink_t *sink, const session_buf_t *bufs,
                         size_t count) {
  capture_t *c = sink->ctx;
  for (size_t i = 0; i < count; i++) {
    ck_assert_uint_le(c->len + bufs[i].len, sizeof c->data);
    memcpy(c->data + c->len, bufs[i].data, bufs[i].len);
    c->len += bufs[i].len;
  }
  return 0;
}

static const transport_sink_t up = {capture_write, &up_bytes, 1};
static const transport_sink_t down = {capture_write, &down_bytes, -1};

static ws_config_t config(void) {
  ws_config_t c;
  memset(&c, 0, sizeof c);
  c.service = "test";
  c.path = "/";
  c.max_message_bytes = 1000;
  c.max_message_name = "max_recv_bytes";
  c.max_packet_bytes = 1000;
  c.max_request_bytes = 2048;
  c.host = "h"; /* the client's: no session to take the address from */
  return c;
}

static const char REQUEST[] =
    "GET /?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

static void *layer_open(const ws_config_t *c) {
  void *layer = NULL;
  ck_assert_int_eq(websocket_transport.open((void *)c, NULL, &layer), 0);
  up_bytes.len = down_bytes.len = 0;
  return layer;
}

static int feed(void *layer, const void *data, size_t len) {
  return websocket_transport.input(layer, data, len, &up, &down);
}

static void *open_upgraded(const ws_config_t *c) {
  void *layer = layer_open(c);
  ck_assert_int_eq(feed(layer, REQUEST, sizeof REQUEST - 1), 0);
  ck_assert(websocket_transport.ready(layer));
  down_bytes.len = 0;
  return layer;
}

/* A client's frame: masked unless told otherwise. */
static size_t client_frame(uint8_t *out, int fin, int opcode, const void *data,
                           size_t len, int mask) {
  size_t n = 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  uint8_t bit = mask ? 0x80 : 0;
  if (len < 126) {
    out[n++] = (uint8_t)(bit | len);
  } else {
    out[n++] = (uint8_t)(bit | 126);
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  }
  static const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
  if (mask) {
    memcpy(out + n, key, 4);
    n += 4;
  }
  for (size_t i = 0; i < len; i++)
    out[n + i] = (uint8_t)(((const uint8_t *)data)[i] ^ (mask ? key[i % 4] : 0));
  return n + len;
}

static uint16_t sent_close_code(void) {
  /* The last frame down is the close: 0x88, length, code. */
  for (size_t i = 0; i + 3 < down_bytes.len; i++)
    if (down_bytes.data[i] == 0x88)
      return (uint16_t)(down_bytes.data[i + 2] << 8 | down_bytes.data[i + 3]);
  return 0;
}

START_TEST(test_accept_key_is_rfc_6455s_example) {
  char out[29];
  ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out), 0);
  ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=", 23, out), -1);
  ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZ!==", 24, out), -1);
}
END_TEST

START_TEST(test_upgrade_whole_or_byte_by_byte_gives_the_same_101) {
  ws_config_t c = config();
  void *layer = layer_open(&c);
  ck_assert_int_eq(feed(layer, REQUEST, sizeof REQUEST - 1), 0);
  ck_assert(websocket_transport.ready(layer));
  capture_t whole = down_bytes;
  ck_assert(strstr((char *)whole.data, "HTTP/1.1 101 ") == (char *)whole.data);
  ck_assert(strstr((char *)whole.data,
                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  websocket_transport.free(layer);

  layer = layer_open(&c);
  for (size_t i = 0; i < sizeof REQUEST - 1; i++) {
    ck_assert(!websocket_transport.ready(layer));
    ck_assert_int_eq(feed(layer, REQUEST + i, 1), 0);
  }
  ck_assert(websocket_transport.ready(layer));
  ck_assert_uint_eq(down_bytes.len, whole.len);
  ck_assert(memcmp(down_bytes.data, whole.data, whole.len) == 0);
  websocket_transport.free(layer);
}
END_TEST

typedef struct refusal {
  const char *name;
  const char *request;
  int status;
} refusal_t;

static const refusal_t refusals[] = {
    {"no key",
     "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"bad key",
     "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"version 8",
     "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 8\r\n\r\n",
     426},
    {"wrong path",
     "GET /other HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n",
     404},
    {"POST",
     "POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"HTTP/1.0",
     "GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"no upgrade",
     "GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: "
     "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"garbage", "\x01\x02\x03 nonsense\r\n\r\n", 400},
};

START_TEST(test_each_bad_upgrade_gets_its_status) {
  const refusal_t *r = &refusals[_i];
  ws_config_t c = config();
  void *layer = layer_open(&c);
  ck_assert_int_eq(feed(layer, r->request, strlen(r->request)),
                   REASON_PROTOCOL_ERROR);
  ck_assert(!websocket_transport.ready(layer));
  char status[32];
  snprintf(status, sizeof status, "HTTP/1.1 %d ", r->status);
  down_bytes.data[down_bytes.len] = 0;
  ck_assert_msg(strstr((char *)down_bytes.data, status) ==
                    (char *)down_bytes.data,
                "%s: %s", r->name, (char *)down_bytes.data);
  if (r->status == 426)
    ck_assert(strstr((char *)down_bytes.data, "Sec-WebSocket-Version: 13\r\n"));
  /* Nothing more is said or taken. */
  down_bytes.len = 0;
  ck_assert_int_eq(feed(layer, "x", 1), REASON_PROTOCOL_ERROR);
  ck_assert_uint_eq(down_bytes.len, 0);
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_origins_and_subprotocol) {
  static const char *const origins[] = {"https://game.example"};
  ws_config_t c = config();
  c.origins = origins;
  c.origin_count = 1;
  c.subprotocol = "game.v1";
  const char *base = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: "
                     "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
  char req[1024];
  snprintf(req, sizeof req, "%sOrigin: https://evil.example\r\n"
           "Sec-WebSocket-Protocol: game.v1\r\n\r\n", base);
  void *layer = layer_open(&c);
  ck_assert_int_eq(feed(layer, req, strlen(req)), REASON_PROTOCOL_ERROR);
  ck_assert(memcmp(down_bytes.data, "HTTP/1.1 403 ", 13) == 0);
  websocket_transport.free(layer);

  snprintf(req, sizeof req, "%sOrigin: https://game.example\r\n\r\n", base);
  layer = layer_open(&c);
  ck_assert_int_eq(feed(layer, req, strlen(req)), REASON_PROTOCOL_ERROR);
  ck_assert(memcmp(down_bytes.data, "HTTP/1.1 400 ", 13) == 0);
  websocket_transport.free(layer);

  snprintf(req, sizeof req, "%sOrigin: https://game.example\r\n"
           "Sec-WebSocket-Protocol: chat, game.v1\r\n\r\n", base);
  layer = layer_open(&c);
  ck_assert_int_eq(feed(layer, req, strlen(req)), 0);
  down_bytes.data[down_bytes.len] = 0;
  ck_assert(strstr((char *)down_bytes.data, "Sec-WebSocket-Protocol: game.v1\r\n"));
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_a_request_over_the_cap_gets_431) {
  ws_config_t c = config();
  c.max_request_bytes = 256;
  void *layer = layer_open(&c);
  char junk[300];
  memset(junk, 'a', sizeof junk);
  ck_assert_int_eq(feed(layer, junk, sizeof junk), REASON_PROTOCOL_ERROR);
  ck_assert(memcmp(down_bytes.data, "HTTP/1.1 431 ", 13) == 0);
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_frames_in_whole_fragmented_and_after_the_request) {
  ws_config_t c = config();
  void *layer = layer_open(&c);
  uint8_t buf[4096];
  size_t n = sizeof REQUEST - 1;
  memcpy(buf, REQUEST, n);
  /* A frame right behind the request, then a fragmented message. */
  n += client_frame(buf + n, 1, 2, "one", 3, 1);
  n += client_frame(buf + n, 0, 2, "tw", 2, 1);
  n += client_frame(buf + n, 0, 0, "o-", 2, 1);
  n += client_frame(buf + n, 1, 0, "three", 5, 1);
  for (size_t cut = 1; cut < n; cut += 7) {
    websocket_transport.free(layer);
    layer = layer_open(&c);
    ck_assert_int_eq(feed(layer, buf, cut), 0);
    ck_assert_int_eq(feed(layer, buf + cut, n - cut), 0);
    ck_assert_uint_eq(up_bytes.len, 12);
    ck_assert(memcmp(up_bytes.data, "onetwo-three", 12) == 0);
  }
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_an_unmasked_frame_closes_with_1002) {
  ws_config_t c = config();
  void *layer = open_upgraded(&c);
  uint8_t buf[64];
  size_t n = client_frame(buf, 1, 2, "hi", 2, 0);
  ck_assert_int_eq(feed(layer, buf, n), REASON_PROTOCOL_ERROR);
  ck_assert_uint_eq(up_bytes.len, 0);
  ck_assert_uint_eq(sent_close_code(), 1002);
  /* Nothing more goes out after the close frame. */
  session_buf_t b = {"x", 1};
  ck_assert_int_eq(websocket_transport.output(&c, layer, &b, 1, &down),
                   ENGINE_E_CLOSED);
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_oversize_message_closes_with_1009_even_in_fragments) {
  ws_config_t c = config();
  void *layer = open_upgraded(&c);
  static uint8_t payload[1001], buf[4096];
  size_t n = client_frame(buf, 1, 2, payload, 1001, 1);
  ck_assert_int_eq(feed(layer, buf, n), REASON_PROTOCOL_ERROR);
  ck_assert_uint_eq(sent_close_code(), 1009);
  websocket_transport.free(layer);

  layer = open_upgraded(&c);
  n = client_frame(buf, 0, 2, payload, 600, 1);
  n += client_frame(buf + n, 1, 0, payload, 401, 1);
  ck_assert_int_eq(feed(layer, buf, n), REASON_PROTOCOL_ERROR);
  ck_assert_uint_eq(sent_close_code(), 1009);
  ck_assert_uint_eq(up_bytes.len, 0);
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_a_packet_message_must_be_exactly_one_packet) {
  ws_config_t c = config();
  c.packet_messages = 1;
  void *layer = open_upgraded(&c);
  uint8_t buf[64];
  size_t n = client_frame(buf, 1, 2, "\x06\x00\x07\x00hi", 6, 1);
  ck_assert_int_eq(feed(layer, buf, n), 0);
  ck_assert_uint_eq(up_bytes.len, 6);
  n = client_frame(buf, 1, 2, "\x07\x00\x07\x00hi", 6, 1);
  ck_assert_int_eq(feed(layer, buf, n), REASON_PROTOCOL_ERROR);
  ck_assert_uint_eq(sent_close_code(), 1002);
  ck_assert_uint_eq(up_bytes.len, 6);
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_ping_is_answered_and_close_is_echoed) {
  ws_config_t c = config();
  void *layer = open_upgraded(&c);
  uint8_t buf[64];
  size_t n = client_frame(buf, 1, 9, "abc", 3, 1);
  ck_assert_int_eq(feed(layer, buf, n), 0);
  ck_assert_uint_eq(down_bytes.len, 5);
  ck_assert(memcmp(down_bytes.data, "\x8a\x03" "abc", 5) == 0);
  down_bytes.len = 0;
  n = client_frame(buf, 1, 8, "\x03\xe8", 2, 1);
  ck_assert_int_eq(feed(layer, buf, n), REASON_PEER_CLOSED);
  ck_assert_uint_eq(sent_close_code(), 1000);
  websocket_transport.free(layer);
}
END_TEST

START_TEST(test_output_frame_header_for_each_length_class) {
  static const size_t lens[] = {0, 1, 125, 126, 65535, 65536};
  static const size_t heads[] = {2, 2, 2, 4, 4, 10};
  static uint8_t payload[65536];
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    down_bytes.len = 0;
    session_buf_t b = {payload, lens[i]};
    /* NULL: the shared encoding of a broadcast. */
    ws_config_t c = config();
    ck_assert_int_eq(websocket_transport.output(&c, NULL, &b, 1, &down), 0);
    ck_assert_uint_eq(down_bytes.len, heads[i] + lens[i]);
    ck_assert_uint_eq(down_bytes.data[0], 0x82);
    if (heads[i] == 2)
      ck_assert_uint_eq(down_bytes.data[1], lens[i]);
    else if (heads[i] == 4)
      ck_assert_uint_eq(down_bytes.data[2] << 8 | down_bytes.data[3], lens[i]);
    else
      ck_assert_uint_eq(down_bytes.data[7] << 16 | down_bytes.data[8] << 8 |
                            down_bytes.data[9],
                        lens[i]);
  }
}
END_TEST

START_TEST(test_on_a_packet_service_each_packet_sent_is_one_message) {
  ws_config_t c = config();
  c.packet_messages = 1;
  /* Two packets in one call, cut across three buffers, then a tail that
   * is no packet: three messages. */
  static const uint8_t bytes[] = "\x06\x00\x01\x00" "ab" "\x05\x00\x02\x00"
                                 "cxyz";
  session_buf_t b[3] = {{bytes, 3}, {bytes + 3, 6}, {bytes + 9, 5}};
  down_bytes.len = 0;
  ck_assert_int_eq(websocket_transport.output(&c, NULL, b, 3, &down), 0);
  static const uint8_t want[] = "\x82\x06\x06\x00\x01\x00" "ab"
                                "\x82\x05\x05\x00\x02\x00" "c"
                                "\x82\x03" "xyz";
  ck_assert_uint_eq(down_bytes.len, sizeof want - 1);
  ck_assert(memcmp(down_bytes.data, want, sizeof want - 1) == 0);
}
END_TEST

START_TEST(test_graceful_close_sends_our_reason_once) {
  ws_config_t c = config();
  void *layer = open_upgraded(&c);
  websocket_transport.close(layer, REASON_HOST_STOPPING, &down);
  ck_assert_uint_eq(sent_close_code(), 1001);
  int found = 0;
  for (size_t i = 0; i + 13 <= down_bytes.len && !found; i++)
    found = memcmp(down_bytes.data + i, "host_stopping", 13) == 0;
  ck_assert(found);
  size_t len = down_bytes.len;
  websocket_transport.close(layer, REASON_LOCAL, &down);
  ck_assert_uint_eq(down_bytes.len, len);
  websocket_transport.free(layer);
  ck_assert_uint_eq(ws_close_code(REASON_LOCAL), 1000);
  ck_assert_uint_eq(ws_close_code(REASON_PROTOCOL_ERROR), 1002);
  ck_assert_uint_eq(ws_close_code(REASON_IDLE_TIMEOUT), 1008);
  ck_assert_uint_eq(ws_close_code(REASON_IO_ERROR), 1011);
}
END_TEST

/* ---- the client's side ---- */

static char client_request[2048];
static char client_accept[29];

/* A client layer that has sent its request: kept in client_request, and
 * the Sec-WebSocket-Accept its key asks for in client_accept. */
static void *client_started(const ws_config_t *c) {
  void *layer = NULL;
  ck_assert_int_eq(websocket_client_transport.open((void *)c, NULL, &layer), 0);
  up_bytes.len = down_bytes.len = 0;
  ck_assert_int_eq(websocket_client_transport.start(layer, &down), 0);
  ck_assert(!websocket_client_transport.ready(layer));
  ck_assert_uint_lt(down_bytes.len, sizeof client_request);
  memcpy(client_request, down_bytes.data, down_bytes.len);
  client_request[down_bytes.len] = '\0';
  const char *key = strstr(client_request, "\r\nSec-WebSocket-Key: ");
  ck_assert_ptr_nonnull(key);
  key += strlen("\r\nSec-WebSocket-Key: ");
  ck_assert_int_eq(ws_accept_key(key, 24, client_accept), 0);
  ck_assert(key[24] == '\r');
  down_bytes.len = 0;
  return layer;
}

static int client_feed(void *layer, const void *data, size_t len) {
  return websocket_client_transport.input(layer, data, len, &up, &down);
}

/* The server's 101 for the request client_started kept, with extra header
 * lines. */
static size_t answer_101(char *out, size_t cap, const char *extra) {
  int n = snprintf(out, cap,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
                   client_accept, extra);
  ck_assert(n > 0 && (size_t)n < cap);
  return (size_t)n;
}

/* The client frame at data (masked, or the test fails): its opcode and
 * unmasked payload; returns its length on the wire. */
static size_t client_frame_read(const uint8_t *data, size_t len, int *opcode,
                                uint8_t *payload, size_t *payload_len) {
  ck_assert_uint_ge(len, 6);
  *opcode = data[0] & 0x0f;
  ck_assert_msg(data[1] & 0x80, "a client's frame must be masked");
  size_t n = data[1] & 0x7f, h = 2;
  if (n == 126) {
    n = (size_t)data[2] << 8 | data[3];
    h = 4;
  } else if (n == 127) {
    n = 0;
    for (int i = 0; i < 8; i++)
      n = n << 8 | data[2 + i];
    h = 10;
  }
  const uint8_t *key = data + h;
  h += 4;
  ck_assert_uint_le(h + n, len);
  for (size_t i = 0; i < n; i++)
    payload[i] = (uint8_t)(data[h + i] ^ key[i % 4]);
  *payload_len = n;
  return h + n;
}

START_TEST(test_client_request_asks_for_path_host_origin_and_subprotocol) {
  ws_config_t c = config();
  c.path = "/play?room=1";
  c.host = "game.example:8080";
  c.origin = "https://game.example";
  c.subprotocol = "game.v1";
  void *layer = client_started(&c);
  ck_assert(strstr(client_request, "GET /play?room=1 HTTP/1.1\r\n") ==
            client_request);
  ck_assert(strstr(client_request, "\r\nHost: game.example:8080\r\n"));
  ck_assert(strstr(client_request, "\r\nUpgrade: websocket\r\n"));
  ck_assert(strstr(client_request, "\r\nConnection: Upgrade\r\n"));
  ck_assert(strstr(client_request, "\r\nSec-WebSocket-Version: 13\r\n"));
  ck_assert(strstr(client_request, "\r\nOrigin: https://game.example\r\n"));
  ck_assert(strstr(client_request, "\r\nSec-WebSocket-Protocol: game.v1\r\n"));
  size_t len = strlen(client_request);
  ck_assert(strcmp(client_request + len - 4, "\r\n\r\n") == 0);
  char first[29];
  memcpy(first, client_accept, sizeof first);
  websocket_client_transport.free(layer);
  /* Without origin and subprotocol, none is sent; a fresh key each time. */
  c.origin = c.subprotocol = NULL;
  layer = client_started(&c);
  ck_assert(!strstr(client_request, "Origin:"));
  ck_assert(!strstr(client_request, "Sec-WebSocket-Protocol:"));
  ck_assert_str_ne(first, client_accept);
  websocket_client_transport.free(layer);
}
END_TEST

START_TEST(test_client_101_whole_or_byte_by_byte_then_frames) {
  ws_config_t c = config();
  char answer[512];
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    void *layer = client_started(&c);
    size_t n = answer_101(answer, sizeof answer - 8, "X-Other: 1\r\n");
    /* A server frame may follow the 101 in the same read. */
    memcpy(answer + n, "\x82\x02hi", 4);
    n += 4;
    if (bytewise) {
      for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(client_feed(layer, answer + i, 1), 0);
    } else {
      ck_assert_int_eq(client_feed(layer, answer, n), 0);
    }
    ck_assert(websocket_client_transport.ready(layer));
    ck_assert_uint_eq(up_bytes.len, 2);
    ck_assert(memcmp(up_bytes.data, "hi", 2) == 0);
    ck_assert_uint_eq(down_bytes.len, 0);
    websocket_client_transport.free(layer);
  }
}
END_TEST

typedef struct client_refusal {
  const char *name;
  const char *answer; /* %s: the right accept, where a line needs it */
  const char *subprotocol;
} client_refusal_t;

static const client_refusal_t client_refusals[] = {
    {"200", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", NULL},
    {"404", "HTTP/1.1 404 Not Found\r\n\r\n", NULL},
    {"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", NULL},
    {"wrong accept",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
     NULL},
    {"no accept",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\n\r\n",
     NULL},
    {"two accepts",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Accept: %s\r\n\r\n",
     NULL},
    {"no upgrade",
     "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Accept: %s\r\n\r\n",
     NULL},
    {"no connection",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
     "Sec-WebSocket-Accept: %s\r\n\r\n",
     NULL},
    {"extensions",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
     "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
     NULL},
    {"a subprotocol not asked for",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: x\r\n\r\n",
     NULL},
    {"another subprotocol",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: "
     "game.v2\r\n\r\n",
     "game.v1"},
    {"the subprotocol missing",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
     "Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
     "game.v1"},
};

START_TEST(test_client_refuses_each_bad_answer_quietly) {
  const client_refusal_t *r = &client_refusals[_i];
  ws_config_t c = config();
  c.subprotocol = r->subprotocol;
  void *layer = client_started(&c);
  char answer[1024];
  snprintf(answer, sizeof answer, r->answer, client_accept, client_accept);
  ck_assert_msg(client_feed(layer, answer, strlen(answer)) ==
                    REASON_PROTOCOL_ERROR,
                "%s", r->name);
  ck_assert_msg(!websocket_client_transport.ready(layer), "%s", r->name);
  /* A client answers nothing, then or later: the FIN says it all. */
  ck_assert_uint_eq(up_bytes.len, 0);
  ck_assert_uint_eq(down_bytes.len, 0);
  ck_assert_int_eq(client_feed(layer, "\x82\x00", 2), REASON_PROTOCOL_ERROR);
  websocket_client_transport.close(layer, REASON_PROTOCOL_ERROR, &down);
  ck_assert_uint_eq(down_bytes.len, 0);
  session_buf_t b = {"x", 1};
  ck_assert_int_ne(websocket_client_transport.output(&c, layer, &b, 1, &down),
                   0);
  websocket_client_transport.free(layer);
}
END_TEST

START_TEST(test_client_answer_over_the_cap_is_refused) {
  ws_config_t c = config();
  void *layer = client_started(&c);
  char line[100];
  memset(line, 'a', sizeof line);
  memcpy(line, "X-Pad: ", 7);
  memcpy(line + sizeof line - 2, "\r\n", 2);
  int rc = client_feed(layer, "HTTP/1.1 101 Switching Protocols\r\n", 34);
  for (int i = 0; rc == 0 && i < 100; i++)
    rc = client_feed(layer, line, sizeof line);
  ck_assert_int_eq(rc, REASON_PROTOCOL_ERROR);
  ck_assert_uint_eq(down_bytes.len, 0);
  websocket_client_transport.free(layer);
}
END_TEST

static void *client_open_ready(const ws_config_t *c) {
  void *layer = client_started(c);
  char answer[512];
  size_t n = answer_101(answer, sizeof answer, "");
  ck_assert_int_eq(client_feed(layer, answer, n), 0);
  ck_assert(websocket_client_transport.ready(layer));
  return layer;
}

START_TEST(test_client_frames_out_are_masked_each_with_its_own_key) {
  ws_config_t c = config();
  c.packet_messages = 1;
  void *layer = client_open_ready(&c);
  /* Two packets in one call: two messages; then a long one (16-bit length,
   * masked across several chunks). */
  static const uint8_t two[] = "\x06\x00\x01\x00"
                               "ab"
                               "\x05\x00\x02\x00"
                               "c";
  session_buf_t b[2] = {{two, 3}, {two + 3, 8}};
  ck_assert_int_eq(websocket_client_transport.output(&c, layer, b, 2, &down),
                   0);
  static uint8_t big[9000];
  big[0] = (uint8_t)(sizeof big & 0xff);
  big[1] = (uint8_t)(sizeof big >> 8);
  for (size_t i = 4; i < sizeof big; i++)
    big[i] = (uint8_t)(i * 7);
  session_buf_t one = {big, sizeof big};
  ck_assert_int_eq(websocket_client_transport.output(&c, layer, &one, 1, &down),
                   0);
  static uint8_t payload[9000];
  size_t n, off = 0;
  int opcode;
  off += client_frame_read(down_bytes.data + off, down_bytes.len - off, &opcode,
                           payload, &n);
  ck_assert_int_eq(opcode, 2);
  ck_assert_uint_eq(n, 6);
  ck_assert(memcmp(payload, two, 6) == 0);
  uint8_t key1[4];
  memcpy(key1, down_bytes.data + 2, 4);
  size_t second = off;
  off += client_frame_read(down_bytes.data + off, down_bytes.len - off, &opcode,
                           payload, &n);
  ck_assert_uint_eq(n, 5);
  ck_assert(memcmp(payload, two + 6, 5) == 0);
  ck_assert(memcmp(key1, down_bytes.data + second + 2, 4) != 0 ||
            memcmp(key1, "\0\0\0\0", 4) != 0);
  off += client_frame_read(down_bytes.data + off, down_bytes.len - off, &opcode,
                           payload, &n);
  ck_assert_uint_eq(n, sizeof big);
  ck_assert(memcmp(payload, big, sizeof big) == 0);
  ck_assert_uint_eq(off, down_bytes.len);
  websocket_client_transport.free(layer);
}
END_TEST

START_TEST(test_client_a_masked_server_frame_closes_with_1002) {
  ws_config_t c = config();
  void *layer = client_open_ready(&c);
  uint8_t frame[32];
  size_t n = client_frame(frame, 1, 2, "hello", 5, 1); /* masked */
  ck_assert_int_eq(client_feed(layer, frame, n), REASON_PROTOCOL_ERROR);
  ck_assert_uint_eq(up_bytes.len, 0);
  uint8_t payload[200];
  size_t len;
  int opcode;
  client_frame_read(down_bytes.data, down_bytes.len, &opcode, payload, &len);
  ck_assert_int_eq(opcode, 8);
  ck_assert_uint_ge(len, 2);
  ck_assert_uint_eq(payload[0] << 8 | payload[1], 1002);
  websocket_client_transport.free(layer);
}
END_TEST

START_TEST(test_client_answers_ping_and_close_masked_and_closes_with_1000) {
  ws_config_t c = config();
  void *layer = client_open_ready(&c);
  /* A server's ping, unmasked: a masked pong with its payload. */
  ck_assert_int_eq(client_feed(layer, "\x89\x02pq", 4), 0);
  uint8_t payload[200];
  size_t len;
  int opcode;
  size_t used = client_frame_read(down_bytes.data, down_bytes.len, &opcode,
                                  payload, &len);
  ck_assert_int_eq(opcode, 0xA);
  ck_assert_uint_eq(len, 2);
  ck_assert(memcmp(payload, "pq", 2) == 0);
  ck_assert_uint_eq(used, down_bytes.len);
  /* Our graceful close: masked, 1000 with the reason's name. */
  down_bytes.len = 0;
  websocket_client_transport.close(layer, REASON_LOCAL, &down);
  client_frame_read(down_bytes.data, down_bytes.len, &opcode, payload, &len);
  ck_assert_int_eq(opcode, 8);
  ck_assert_uint_eq(payload[0] << 8 | payload[1], 1000);
  ck_assert(len == 2 + 5 && memcmp(payload + 2, "local", 5) == 0);
  websocket_client_transport.free(layer);
  /* The server's close is echoed, masked, and ends the session. */
  layer = client_open_ready(&c);
  ck_assert_int_eq(client_feed(layer, "\x88\x02\x03\xe9", 4),
                   REASON_PEER_CLOSED);
  client_frame_read(down_bytes.data, down_bytes.len, &opcode, payload, &len);
  ck_assert_int_eq(opcode, 8);
  ck_assert_uint_eq(payload[0] << 8 | payload[1], 1001);
  websocket_client_transport.free(layer);
}
END_TEST

int main(void) {
  log_set_level(LOG_ERROR); /* the refusals' log lines are expected here */
  Suite *s = suite_create("websocket");
  TCase *tc = tcase_create("codec");
  tcase_add_test(tc, test_accept_key_is_rfc_6455s_example);
  tcase_add_test(tc, test_upgrade_whole_or_byte_by_byte_gives_the_same_101);
  tcase_add_loop_test(tc, test_each_bad_upgrade_gets_its_status, 0,
                      (int)(sizeof refusals / sizeof refusals[0]));
  tcase_add_test(tc, test_origins_and_subprotocol);
  tcase_add_test(tc, test_a_request_over_the_cap_gets_431);
  tcase_add_test(tc, test_frames_in_whole_fragmented_and_after_the_request);
  tcase_add_test(tc, test_an_unmasked_frame_closes_with_1002);
  tcase_add_test(tc, test_oversize_message_closes_with_1009_even_in_fragments);
  tcase_add_test(tc, test_a_packet_message_must_be_exactly_one_packet);
  tcase_add_test(tc, test_ping_is_answered_and_close_is_echoed);
  tcase_add_test(tc, test_output_frame_header_for_each_length_class);
  tcase_add_test(tc, test_on_a_packet_service_each_packet_sent_is_one_message);
  tcase_add_test(tc, test_graceful_close_sends_our_reason_once);
  suite_add_tcase(s, tc);
  TCase *client = tcase_create("client");
  tcase_add_test(client,
                 test_client_request_asks_for_path_host_origin_and_subprotocol);
  tcase_add_test(client, test_client_101_whole_or_byte_by_byte_then_frames);
  tcase_add_loop_test(
      client, test_client_refuses_each_bad_answer_quietly, 0,
      (int)(sizeof client_refusals / sizeof client_refusals[0]));
  tcase_add_test(client, test_client_answer_over_the_cap_is_refused);
  tcase_add_test(client,
                 test_client_frames_out_are_masked_each_with_its_own_key);
  tcase_add_test(client, test_client_a_masked_server_frame_closes_with_1002);
  tcase_add_test(
      client, test_client_answers_ping_and_close_masked_and_closes_with_1000);
  suite_add_tcase(s, client);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
