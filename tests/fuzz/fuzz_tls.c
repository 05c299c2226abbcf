/*
 * libFuzzer target: the TLS codec's input path (host/transport/tls.c).
 *
 * Input: 1 byte that picks the role (bit 0: a server meeting a client's
 * bytes, or a client, after its ClientHello, meeting a server's) and seeds
 * the cuts, then the wire bytes. They are fed in arbitrary cuts through
 * tls_conn_read with a small plaintext buffer, as a session would. Checked:
 * the codec only ever moves forward through the caller's bytes and never
 * past their end, never reports more plaintext than asked, says
 * TLS_WANT_INPUT only when it took everything, stays failed once failed,
 * and every output byte is readable (ASan sees a bad buffer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

#define FX(name) IOCPHOST_TLS_FIXTURES "/" name

static tls_ctx_t *server_ctx, *client_ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[512];
  tls_ctx_config_t s = {.role = TLS_SERVER, .cert_file = FX("server.pem"),
                        .key_file = FX("server.key")};
  tls_ctx_config_t c = {.role = TLS_CLIENT, .ca_file = FX("ca.pem"),
                        .server_name = "localhost"};
  server_ctx = tls_ctx_new(&s, err, sizeof err);
  client_ctx = tls_ctx_new(&c, err, sizeof err);
  CHECK(server_ctx && client_ctx);
  return 0;
}

static uint64_t sink;

static void drain(tls_conn_t *c) {
  const void *bytes;
  size_t n = tls_conn_output(c, &bytes);
  for (size_t i = 0; i < n; i++)
    sink += ((const uint8_t *)bytes)[i];
  tls_conn_output_done(c, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint64_t rng = data[0] * 0x9E3779B97F4A7C15ULL + 1;
  tls_conn_t *c = tls_conn_new(data[0] & 1 ? client_ctx : server_ctx, NULL, 0);
  CHECK(c);
  drain(c);
  data++;
  size--;
  /* An exact-size copy, so reading past the end is an ASan report. */
  uint8_t *wire = malloc(size ? size : 1);
  memcpy(wire, data, size);

  uint8_t plain[777];
  bool failed = false;
  size_t at = 0;
  while (at < size) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    size_t cut = 1 + (size_t)(rng >> 33) % 300;
    if (cut > size - at)
      cut = size - at;
    const void *p = wire + at;
    size_t left = cut;
    for (;;) {
      const void *before = p;
      size_t left_before = left, got = 0;
      tls_status_t st = tls_conn_read(c, &p, &left, plain, sizeof plain, &got);
      CHECK((const uint8_t *)p >= (const uint8_t *)before);
      CHECK((const uint8_t *)p + left == (const uint8_t *)before + left_before);
      CHECK(got <= sizeof plain);
      drain(c);
      if (failed)
        CHECK(st == TLS_FAILED);
      if (st == TLS_FAILED) {
        CHECK(tls_conn_error(c)[0] != '\0');
        failed = true;
        break;
      }
      if (st == TLS_WANT_INPUT) {
        CHECK(left == 0);
        break;
      }
      if (st == TLS_CLOSED)
        break;
      CHECK(got > 0);
    }
    if (failed)
      break;
    at += cut;
  }
  tls_conn_close(c);
  drain(c);
  tls_conn_free(c);
  free(wire);
  return 0;
}
