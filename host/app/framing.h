/*
 * Packet framing (SPEC section 5), as pure functions: no session, no socket,
 * no allocation. Every packet is uint16 size (the whole packet, header
 * included), uint16 id, both little-endian, then the payload. The host's
 * receive path and its sends use these, and so do the unit tests and the
 * fuzzer (tests/fuzz), which therefore test the parser the host runs.
 */
#ifndef IOCPHOST_FRAMING_H
#define IOCPHOST_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#define FRAMING_HEADER_BYTES 4

typedef struct framing_packet {
  uint16_t id;
  const uint8_t *payload; /* points into the caller's data */
  size_t payload_len;
} framing_packet_t;

/* Called for each whole packet, in order. Returns 0 to go on, anything else
 * to stop (the session ended, say). */
typedef int (*framing_packet_fn)(void *ctx, const framing_packet_t *packet);

typedef struct framing_result {
  size_t used;       /* bytes of the packets passed to fn */
  int stopped;       /* fn asked to stop */
  int bad;           /* a header declared a size outside 4..max_packet_bytes */
  uint32_t bad_size; /* that size */
} framing_result_t;

/* Passes the whole packets at the front of data to fn and returns how far
 * it got. It stops before a packet not yet complete (its bytes wait for
 * more input), when fn asks to, or at a header declaring a size under 4 or
 * over max_packet_bytes. A size is checked as soon as its header is there,
 * before anything waits for the rest, so a hostile header never makes a
 * caller keep (let alone allocate) more than max_packet_bytes. */
framing_result_t framing_split(const uint8_t *data, size_t len,
                               uint32_t max_packet_bytes, framing_packet_fn fn,
                               void *ctx);

/* Writes the header of a packet of payload_len bytes. Returns 0, or -1 if
 * the packet would be larger than max_packet_bytes or 65535. */
int framing_write_header(uint8_t header[FRAMING_HEADER_BYTES], uint16_t id,
                         size_t payload_len, uint32_t max_packet_bytes);

#endif /* IOCPHOST_FRAMING_H */
