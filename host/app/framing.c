/* Packet framing (SPEC section 5): see framing.h. */
#include "framing.h"

static uint16_t read_le16(const uint8_t *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}

static void write_le16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v & 0xff);
  p[1] = (uint8_t)(v >> 8);
}

framing_result_t framing_split(const uint8_t *data, size_t len,
                               uint32_t max_packet_bytes, framing_packet_fn fn,
                               void *ctx) {
  framing_result_t r = {0, 0, 0, 0};
  while (len - r.used >= FRAMING_HEADER_BYTES) {
    const uint8_t *p = data + r.used;
    uint16_t size = read_le16(p);
    if (size < FRAMING_HEADER_BYTES || size > max_packet_bytes) {
      r.bad = 1;
      r.bad_size = size;
      return r;
    }
    if (len - r.used < size)
      return r;
    framing_packet_t packet = {read_le16(p + 2), p + FRAMING_HEADER_BYTES,
                               (size_t)size - FRAMING_HEADER_BYTES};
    r.used += size;
    if (fn(ctx, &packet) != 0) {
      r.stopped = 1;
      return r;
    }
  }
  return r;
}

int framing_write_header(uint8_t header[FRAMING_HEADER_BYTES], uint16_t id,
                         size_t payload_len, uint32_t max_packet_bytes) {
  if (payload_len > 65535 - FRAMING_HEADER_BYTES ||
      payload_len + FRAMING_HEADER_BYTES > max_packet_bytes)
    return -1;
  write_le16(header, (uint16_t)(payload_len + FRAMING_HEADER_BYTES));
  write_le16(header + 2, id);
  return 0;
}
