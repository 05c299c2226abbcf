/* The WebSocket layer (host/transport/websocket.c) without a session: its
 * ops fed by hand, what it writes up (to the handler) and down (to the
 * wire) caught by two test sinks. The accept key of RFC 6455's example, the
 * upgrade whole and byte by byte, each refusal's status, frames in
 * (masked, fragmented, unmasked, oversize, ping, close), the frame header
 * for every length class, and the close codes. */
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
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
