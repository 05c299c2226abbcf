/*
 * libFuzzer target: the packet parser (host/app/framing.c).
 *
 * Input: 2 bytes of max_packet_bytes (folded into 4..65535), 1 byte that
 * seeds the cuts, then the stream. The stream is parsed whole, and again as
 * the host meets it: cut into reads, the unused rest kept and presented
 * again with the next read. Both must give the same packets and the same
 * verdict, every packet must lie inside the input, and what is kept must
 * never reach max_packet_bytes (the declared size is never waited for with
 * more than one packet's bytes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

typedef struct trace {
  const uint8_t *begin, *end; /* the buffer the packets must lie in */
  uint64_t hash;
  size_t packets;
  size_t bytes;
} trace_t;

static int on_packet(void *ctx, const framing_packet_t *p) {
  trace_t *t = ctx;
  CHECK(p->payload >= t->begin + FRAMING_HEADER_BYTES);
  CHECK(p->payload + p->payload_len <= t->end);
  uint64_t h = t->hash ^ p->id;
  h *= 0x100000001B3ULL;
  h ^= p->payload_len;
  for (size_t i = 0; i < p->payload_len; i++)
    h = (h ^ p->payload[i]) * 0x100000001B3ULL;
  t->hash = h;
  t->packets++;
  t->bytes += p->payload_len + FRAMING_HEADER_BYTES;
  return 0;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  uint32_t max = 4 + (uint32_t)(le16(data) % 65532);
  uint64_t rng = data[2] * 0x9E3779B97F4A7C15ULL + 1;
  data += 3;
  size -= 3;
  /* An exact-size copy, so reading past the end is an ASan report. */
  uint8_t *whole = malloc(size ? size : 1);
  memcpy(whole, data, size);

  trace_t a = {whole, whole + size, 0, 0, 0};
  framing_result_t r = framing_split(whole, size, max, on_packet, &a);
  CHECK(r.used <= size && r.used == a.bytes && !r.stopped);
  size_t rest = size - r.used;
  if (r.bad) {
    CHECK(rest >= 4 && r.bad_size == le16(whole + r.used));
    CHECK(r.bad_size < 4 || r.bad_size > max);
  } else if (rest >= 4) {
    uint16_t next = le16(whole + r.used);
    CHECK(next >= 4 && next <= max && next > rest); /* it waits */
  }

  /* The same stream, cut into reads as a socket might deliver it. */
  uint8_t *kept = malloc(size + 1);
  size_t kept_len = 0, pos = 0;
  trace_t b = {NULL, NULL, 0, 0, 0};
  framing_result_t last = {0, 0, 0, 0};
  while (pos < size && !last.bad) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    size_t cut = 1 + (size_t)(rng % 97);
    if (rng & 0x100000)
      cut = 1 + (size_t)(rng % 4096);
    if (cut > size - pos)
      cut = size - pos;
    memcpy(kept + kept_len, whole + pos, cut);
    kept_len += cut;
    pos += cut;
    b.begin = kept;
    b.end = kept + kept_len;
    last = framing_split(kept, kept_len, max, on_packet, &b);
    memmove(kept, kept + last.used, kept_len - last.used);
    kept_len -= last.used;
    if (!last.bad)
      CHECK(kept_len < max || kept_len < 4);
  }
  CHECK(b.packets == a.packets && b.hash == a.hash && b.bytes == a.bytes);
  CHECK(last.bad == r.bad && (!r.bad || last.bad_size == r.bad_size));
  free(kept);
  free(whole);

  /* A header written for a send parses back to what was written. */
  uint8_t header[FRAMING_HEADER_BYTES];
  size_t payload_len = (size_t)(rng % 70000);
  uint16_t id = (uint16_t)(rng >> 20);
  if (framing_write_header(header, id, payload_len, max) == 0) {
    CHECK(payload_len + 4 <= max && le16(header) == payload_len + 4 &&
          le16(header + 2) == id);
  } else {
    CHECK(payload_len + 4 > max);
  }
  return 0;
}
