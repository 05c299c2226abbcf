/*
 * libFuzzer target: the engine's receive path with the host's packet
 * framing, socket stubbed out (session_harness.h). Each input opens one
 * session of a service that was never started, feeds it chunks as if read
 * from its socket, then ends it and waits until it is freed.
 *
 * Input: byte 0 picks the behaviour
 *   bit 0     packet framing (else raw)
 *   bits 1-2  raw: consume nothing / everything / half / up to the last '\n'
 *   bit 3     echo every packet (sends pile up: there is no socket, so the
 *             queue limit of 4096 bytes ends the session: send_queue_full)
 *   bit 4     disconnect when a packet with id 0x6666 arrives
 *   bits 5-6  which service: max_recv_bytes 64, 4096 or 65536
 * bytes 1-2 max_packet_bytes (folded into 4..max_recv_bytes), then chunks:
 * uint16 length (little-endian, cut to what is left) and the bytes.
 *
 * Checked on every input: packets lie inside what the handler was shown;
 * the engine keeps less than max_recv_bytes and never more buffer than
 * twice (kept + one read); every byte fed is either consumed or kept while
 * the session is open; the session ends and is freed; nothing is left
 * alive in the engine afterwards.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/log.h"
#include "framing.h"
#include "session_harness.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

#define MAX_CHUNKS 256

static const uint32_t recv_limits[3] = {64, 4096, 65536};
static core_t *core;
static service_t *services[3];

/* The input being run: written before the feed is posted, read on the
 * worker (the post and the harness's condition variable order them). */
static struct {
  uint8_t flags;
  uint32_t max_packet;
  uint64_t consumed;
  const uint8_t *shown, *shown_end;
} in;

static void on_connected(session_t *s) { (void)s; }
static void on_disconnected(session_t *s, session_reason_t r) {
  (void)s;
  CHECK(r >= REASON_PEER_CLOSED && r <= REASON_IO_ERROR);
}

static int on_packet(void *ctx, const framing_packet_t *p) {
  session_t *s = ctx;
  CHECK(p->payload >= in.shown + FRAMING_HEADER_BYTES &&
        p->payload + p->payload_len <= in.shown_end);
  if (in.flags & 8) {
    uint8_t header[FRAMING_HEADER_BYTES];
    CHECK(framing_write_header(header, p->id, p->payload_len, 65535) == 0);
    session_buf_t bufs[2] = {{header, sizeof header},
                             {p->payload, p->payload_len}};
    int rc = session_sendv(s, bufs, 2);
    CHECK(rc == ENGINE_OK || rc == ENGINE_E_QUEUE_FULL ||
          rc == ENGINE_E_CLOSED);
  }
  if ((in.flags & 16) && p->id == 0x6666)
    session_disconnect(s, REASON_LOCAL);
  return !session_is_open(s);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  in.shown = data;
  in.shown_end = data + len;
  size_t used;
  if (in.flags & 1) {
    framing_result_t r = framing_split(data, len, in.max_packet, on_packet, s);
    if (r.bad) {
      session_disconnect(s, REASON_PROTOCOL_ERROR);
      used = len;
    } else {
      used = r.stopped ? len : r.used;
    }
  } else {
    switch ((in.flags >> 1) & 3) {
    case 0:
      used = 0;
      break;
    case 1:
      used = len;
      break;
    case 2:
      used = len / 2;
      break;
    default: {
      const uint8_t *nl = NULL;
      for (size_t i = len; i-- > 0;)
        if (data[i] == '\n') {
          nl = data + i;
          break;
        }
      used = nl ? (size_t)(nl - data) + 1 : 0;
      break;
    }
    }
  }
  CHECK(used <= len);
  in.consumed += used;
  return used;
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
};

static size_t prepare(void *ctx, void **context) {
  (void)ctx;
  *context = NULL;
  return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  log_set_level(LOG_ERROR); /* one line per protocol error is noise here */
  char err[256];
  if (core_create("fuzz", 1, CORE_BACKEND_DEFAULT, &core, err, sizeof err) != 0)
    abort();
  for (int i = 0; i < 3; i++) {
    service_options_t o;
    service_options_init(&o);
    o.name = "fuzz";
    o.factory.handler = &handler;
    o.factory.prepare = prepare;
    o.max_recv_bytes = recv_limits[i];
    o.send_queue_limit_bytes = 4096;
    if (service_create(core, &o, &services[i], err, sizeof err) != 0)
      abort();
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  int which = ((data[0] >> 5) & 3) % 3;
  uint32_t max_recv = recv_limits[which];
  in.flags = data[0];
  uint32_t max_packet = 4 + (uint32_t)((data[1] | data[2] << 8) % 65532);
  in.max_packet = max_packet > max_recv ? max_recv : max_packet;
  in.consumed = 0;
  data += 3;
  size -= 3;

  harness_chunk_t chunks[MAX_CHUNKS];
  uint8_t *copies[MAX_CHUNKS];
  size_t count = 0, total = 0, biggest = 0;
  while (size >= 2 && count < MAX_CHUNKS) {
    size_t len = (size_t)(data[0] | data[1] << 8);
    data += 2;
    size -= 2;
    if (len > size)
      len = size;
    /* Exact-size copies: ASan sees a read past any chunk. */
    copies[count] = malloc(len ? len : 1);
    memcpy(copies[count], data, len);
    chunks[count] = (harness_chunk_t){copies[count], len};
    total += len;
    if (len > biggest)
      biggest = len;
    count++;
    data += len;
    size -= len;
  }

  harness_session_t h;
  CHECK(harness_open(&h, services[which]) == 0);
  harness_feed_t f = {.chunks = chunks, .count = count};
  CHECK(harness_feed(&h, &f, 10000) == 0);
  if (f.open_after) {
    CHECK(f.delivered == count);
    CHECK(f.pending_len < max_recv);
    CHECK(in.consumed + f.pending_len == total);
    CHECK(f.pending_cap <= 2 * ((size_t)max_recv + biggest));
    if (in.flags & 1)
      CHECK(f.pending_len < in.max_packet || f.pending_len < 4);
  }
  CHECK(harness_close(&h, 10000) == 0);
  CHECK(engine_live_objects() == 0);
  for (size_t i = 0; i < count; i++)
    free(copies[i]);
  return 0;
}
