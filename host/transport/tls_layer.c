/*
 * TLS as a transport layer: see tls_layer.h. Each op drives the codec the
 * way tls.h's top comment says (read until it wants input, send the output
 * after every call); the engine runs every op under the session's lock,
 * which is the serialisation a connection needs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "tls_layer.h"
#include "transport_log.h"

/* One record's plaintext at most: a read never yields more at once. */
#define TLS_PLAIN_MAX (16u * 1024u)

typedef struct tls_layer {
  const tls_layer_config_t *cfg;
  session_t *session; /* NULL in unit tests */
  tls_conn_t *conn;
  /* Plaintext written from above before the handshake completed. */
  uint8_t *early;
  size_t early_len;
  uint8_t failed; /* the connection failed, its reason logged */
} tls_layer_t;

static void tls_log(const tls_layer_t *t, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  transport_log(level, "tls", t->cfg->service, t->session, fmt, ap);
  va_end(ap);
}

/* Sends what the codec has queued (records, alerts, close_notify). */
static int drain(tls_layer_t *t, const transport_sink_t *down) {
  const void *bytes;
  size_t n;
  while ((n = tls_conn_output(t->conn, &bytes)) > 0) {
    int rc = transport_sink_write(down, bytes, n);
    tls_conn_output_done(t->conn, n);
    if (rc)
      return rc;
  }
  return 0;
}

/* The connection failed: its alert goes out, one line says why, and the
 * session ends (before on_connected when it was the handshake). */
static int failed(tls_layer_t *t, const transport_sink_t *down) {
  int rc = drain(t, down);
  if (!t->failed)
    tls_log(t, LOG_WARN, "%s: closing (protocol_error)",
            tls_conn_error(t->conn));
  t->failed = 1;
  return rc ? rc : REASON_PROTOCOL_ERROR;
}

static int tls_open(void *config, session_t *s, void **layer) {
  tls_layer_config_t *cfg = config;
  tls_layer_t *t = calloc(1, sizeof *t);
  if (!t)
    return -1;
  t->cfg = cfg;
  t->session = s;
  char err[256];
  tls_ctx_t *ctx = tls_slot_get(&cfg->slot);
  t->conn = ctx ? tls_conn_new(ctx, err, sizeof err) : NULL;
  tls_ctx_release(ctx);
  if (!t->conn) {
    tls_log(t, LOG_WARN, "cannot start TLS: %s",
            ctx ? err : "the service has no TLS context");
    free(t);
    return -1;
  }
  *layer = t;
  return 0;
}

/* A client's ClientHello is in the output from tls_conn_new. */
static int tls_start(void *layer, const transport_sink_t *down) {
  return drain(layer, down);
}

/* Encrypts plaintext: one record per 16 KiB of it, however many buffers
 * it came in (a WebSocket frame's header and payload make one record). */
static int encrypt(tls_layer_t *t, const session_buf_t *bufs, size_t count) {
  if (count == 1)
    return tls_conn_write(t->conn, bufs[0].data, bufs[0].len) == TLS_OK ? 0
                                                                        : -1;
  uint8_t gather[TLS_PLAIN_MAX];
  size_t used = 0;
  for (size_t i = 0; i < count; i++) {
    const uint8_t *p = bufs[i].data;
    size_t len = bufs[i].len;
    while (len > 0) {
      if (used == 0 && len >= sizeof gather) {
        /* A whole record's worth in place: no copy. */
        size_t n = len - len % sizeof gather;
        if (tls_conn_write(t->conn, p, n) != TLS_OK)
          return -1;
        p += n;
        len -= n;
        continue;
      }
      size_t n = sizeof gather - used < len ? sizeof gather - used : len;
      memcpy(gather + used, p, n);
      used += n;
      p += n;
      len -= n;
      if (used == sizeof gather) {
        if (tls_conn_write(t->conn, gather, used) != TLS_OK)
          return -1;
        used = 0;
      }
    }
  }
  if (used && tls_conn_write(t->conn, gather, used) != TLS_OK)
    return -1;
  return 0;
}

/* The handshake just completed: what waited for it goes out. */
static int send_early(tls_layer_t *t) {
  if (!t->early_len)
    return 0;
  session_buf_t b = {t->early, t->early_len};
  int rc = encrypt(t, &b, 1);
  free(t->early);
  t->early = NULL;
  t->early_len = 0;
  return rc;
}

static int tls_input(void *layer, const uint8_t *data, size_t len,
                     const transport_sink_t *up, const transport_sink_t *down) {
  tls_layer_t *t = layer;
  if (t->failed)
    return REASON_PROTOCOL_ERROR;
  const void *wire = data;
  size_t wire_len = len;
  uint8_t plain[TLS_PLAIN_MAX];
  for (;;) {
    int was_established = tls_conn_established(t->conn);
    size_t got = 0;
    tls_status_t st =
        tls_conn_read(t->conn, &wire, &wire_len, plain, sizeof plain, &got);
    if (st == TLS_FAILED)
      return failed(t, down);
    if (!was_established && tls_conn_established(t->conn)) {
      tls_log(t, LOG_DEBUG, "%s %s", tls_conn_version(t->conn),
              tls_conn_cipher(t->conn));
      if (send_early(t) != 0)
        return failed(t, down);
    }
    /* The codec's answers (handshake, tickets) before what they precede. */
    int rc = drain(t, down);
    if (rc)
      return rc;
    if (st == TLS_WANT_INPUT)
      return 0;
    if (st == TLS_CLOSED)
      return REASON_PEER_CLOSED; /* close() answers with ours */
    rc = transport_sink_write(up, plain, got);
    if (rc)
      return rc;
  }
}

static int tls_output(void *config, void *layer, const session_buf_t *bufs,
                      size_t count, const transport_sink_t *down) {
  (void)config;
  tls_layer_t *t = layer;
  if (!t || t->failed)
    return ENGINE_E_CLOSED;
  if (!tls_conn_established(t->conn)) {
    /* A layer above speaks first (a client's upgrade request): it waits
     * for the handshake, bounded. */
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
      total += bufs[i].len;
    if (total > TLS_LAYER_EARLY_MAX - t->early_len)
      return ENGINE_E_NOMEM;
    uint8_t *grown = realloc(t->early, t->early_len + total);
    if (!grown && total)
      return ENGINE_E_NOMEM;
    t->early = grown;
    for (size_t i = 0; i < count; i++) {
      if (bufs[i].len)
        memcpy(t->early + t->early_len, bufs[i].data, bufs[i].len);
      t->early_len += bufs[i].len;
    }
    return 0;
  }
  if (encrypt(t, bufs, count) != 0) {
    /* Refused after close_notify, or OpenSSL failed (out of memory): the
     * send fails; a fatal failure also ends the next read. */
    return ENGINE_E_CLOSED;
  }
  return drain(t, down);
}

static int tls_ready(void *layer) {
  return tls_conn_established(((tls_layer_t *)layer)->conn);
}

/* close_notify after whatever the layers above said last; nothing after a
 * failure (its alert went out) or before the handshake completed. */
static void tls_close(void *layer, session_reason_t reason,
                      const transport_sink_t *down) {
  (void)reason;
  tls_layer_t *t = layer;
  if (t->failed || !tls_conn_established(t->conn))
    return;
  if (tls_conn_close(t->conn) == TLS_OK)
    drain(t, down);
}

static void tls_free(void *layer) {
  tls_layer_t *t = layer;
  tls_conn_free(t->conn);
  free(t->early);
  free(t);
}

const transport_ops_t tls_transport = {
    .name = "tls",
    .flags = 0, /* each session encrypts its own records */
    .open = tls_open,
    .start = tls_start,
    .input = tls_input,
    .output = tls_output,
    .ready = tls_ready,
    .close = tls_close,
    .free = tls_free,
};
