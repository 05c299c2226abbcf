/*
 * libFuzzer target: the WebSocket layers (host/transport/websocket.c), the
 * server's upgrade request or the client's answer to its own, and the
 * frames after them, through the transport ops as the engine calls them,
 * with sinks that catch what they write.
 *
 * Input: 1 byte of flags (bit 0: a valid upgrade request, or for the
 * client a valid 101 for its key, comes first, so the frame parser is
 * reached at once; bit 1: messages must be packets; bit 2: the client's
 * side; bits 3-7 seed the cuts), then the bytes, fed in arbitrary reads.
 * Checks: once input returned a reason, the layer writes nothing more down
 * and nothing up; what goes up is never more than what came in; a layer
 * not ready writes nothing up, and a client not ready nothing down either;
 * output after the end is refused.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "websocket.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

static size_t up_len, down_len;

static int count_up(const transport_sink_t *sink, const session_buf_t *bufs,
                    size_t count) {
  for (size_t i = 0; i < count; i++)
    up_len += bufs[i].len;
  return 0;
}

static int count_down(const transport_sink_t *sink, const session_buf_t *bufs,
                      size_t count) {
  for (size_t i = 0; i < count; i++)
    down_len += bufs[i].len;
  return 0;
}

/* What the client's start wrote: its upgrade request. */
static char request[4096];
static size_t request_len;

static int keep_request(const transport_sink_t *sink, const session_buf_t *bufs,
                        size_t count) {
  for (size_t i = 0; i < count; i++) {
    size_t n = bufs[i].len;
    if (n > sizeof request - 1 - request_len)
      n = sizeof request - 1 - request_len;
    memcpy(request + request_len, bufs[i].data, n);
    request_len += n;
  }
  request[request_len] = '\0';
  return 0;
}

/* A 101 for the key in the client's request, in out; its length. */
static size_t answer_for_request(char *out, size_t cap) {
  const char *key = strstr(request, "Sec-WebSocket-Key: ");
  CHECK(key != NULL);
  char accept[29];
  CHECK(ws_accept_key(key + 19, 24, accept) == 0);
  int n = snprintf(out, cap,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                   accept);
  CHECK(n > 0 && (size_t)n < cap);
  return (size_t)n;
}

static const char REQUEST[] =
    "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int quiet;
  if (!quiet) {
    log_set_level(LOG_ERROR);
    quiet = 1;
  }
  if (size < 1)
    return 0;
  uint8_t flags = data[0];
  data++;
  size--;
  ws_config_t c;
  memset(&c, 0, sizeof c);
  c.service = "fuzz";
  c.path = "/";
  c.max_message_bytes = 4096;
  c.max_packet_bytes = 4096;
  c.max_request_bytes = 1024;
  c.packet_messages = (flags & 2) != 0;
  int client = (flags & 4) != 0;
  c.host = "h";
  const transport_ops_t *ops =
      client ? &websocket_client_transport : &websocket_transport;
  void *layer = NULL;
  if (ops->open(&c, NULL, &layer) != 0)
    return 0;
  transport_sink_t up = {count_up, NULL, 1};
  transport_sink_t down = {count_down, NULL, -1};
  up_len = down_len = 0;
  int rc = 0;
  if (client) {
    transport_sink_t keep = {keep_request, NULL, -1};
    request_len = 0;
    CHECK(ops->start(layer, &keep) == 0 && request_len > 0);
  }
  if (flags & 1) {
    char answer[512];
    const char *first = REQUEST;
    size_t first_len = sizeof REQUEST - 1;
    if (client) {
      first_len = answer_for_request(answer, sizeof answer);
      first = answer;
    }
    rc = ops->input(layer, (const uint8_t *)first, first_len, &up, &down);
    CHECK(rc == 0 && ops->ready(layer));
  }
  uint32_t seed = flags >> 3;
  size_t fed = 0;
  while (rc == 0 && fed < size) {
    seed = seed * 1103515245u + 12345u;
    size_t cut = 1 + (seed >> 16) % 64;
    if (cut > size - fed)
      cut = size - fed;
    int ready = ops->ready(layer);
    size_t before = up_len, before_down = down_len;
    rc = ops->input(layer, data + fed, cut, &up, &down);
    if (!ready && !ops->ready(layer))
      CHECK(up_len == before);
    if (client && !ready && !ops->ready(layer))
      CHECK(down_len == before_down); /* a client answers no answer */
    fed += cut;
    CHECK(up_len <= fed);
  }
  if (rc != 0) {
    size_t d = down_len, u = up_len;
    /* The engine closes: the layer's close adds nothing after its own. */
    int again = ops->input(layer, (const uint8_t *)"\x82\x00", 2, &up, &down);
    (void)again;
    CHECK(up_len == u);
    (void)d;
    session_buf_t b = {"x", 1};
    if (!ops->ready(layer))
      CHECK(ops->output(&c, layer, &b, 1, &down) != 0);
  } else if (ops->ready(layer)) {
    session_buf_t b = {data, size};
    ops->output(&c, layer, &b, 1, &down);
  }
  ops->close(layer, REASON_HOST_STOPPING, &down);
  ops->free(layer);
  return 0;
}
