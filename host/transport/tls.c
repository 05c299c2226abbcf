/* The TLS codec over OpenSSL 3 (tls.h says how it is used). Each connection
 * talks to OpenSSL through one BIO of its own kind: reads take the caller's
 * wire bytes in place for the length of one tls_conn_read, writes append to
 * the connection's output buffer, which the session sends from. So no
 * socket, no memory BIO pair and no copy beyond OpenSSL's record buffers and
 * that one output buffer. */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct tls_ctx {
  atomic_int refs;
  tls_role_t role;
  SSL_CTX *ssl_ctx;
  BIO_METHOD *wire_method; /* the connections' BIO kind, per context */
  char *server_name;       /* client: SNI and the name verified */
  bool server_name_is_ip;
};

struct tls_conn {
  tls_ctx_t *ctx;
  SSL *ssl;
  /* The wire bytes of the tls_conn_read in progress (none between calls). */
  const unsigned char *in;
  size_t in_len;
  /* Wire bytes to send: out[out_head, out_len). */
  unsigned char *out;
  size_t out_head, out_len, out_cap;
  bool established, failed, peer_closed, close_sent;
  char error[256];
};

/* An output buffer larger than this is given back once drained, so an idle
 * connection keeps no more than a few records' worth. */
#define TLS_OUT_KEEP (64 * 1024)

static void format(char *buf, size_t len, const char *fmt, ...) {
  if (!buf || len == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
}

/* ---- The wire BIO ------------------------------------------------------ */

static int wire_write(BIO *bio, const char *data, int len) {
  tls_conn_t *c = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  if (len <= 0) {
    return 0;
  }
  size_t n = (size_t)len;
  if (c->out_head == c->out_len) {
    c->out_head = c->out_len = 0;
  }
  if (c->out_cap - c->out_len < n) {
    if (c->out_head > 0) { /* reuse the sent front before growing */
      memmove(c->out, c->out + c->out_head, c->out_len - c->out_head);
      c->out_len -= c->out_head;
      c->out_head = 0;
    }
    if (c->out_cap - c->out_len < n) {
      size_t cap = c->out_cap ? c->out_cap : 4096;
      while (cap - c->out_len < n) {
        cap *= 2;
      }
      unsigned char *grown = realloc(c->out, cap);
      if (!grown) {
        return -1;
      }
      c->out = grown;
      c->out_cap = cap;
    }
  }
  memcpy(c->out + c->out_len, data, n);
  c->out_len += n;
  return len;
}

static int wire_read(BIO *bio, char *buf, int len) {
  tls_conn_t *c = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  if (len <= 0) {
    return 0;
  }
  if (c->in_len == 0) {
    BIO_set_retry_read(bio); /* SSL_ERROR_WANT_READ: wait for more */
    return -1;
  }
  size_t n = c->in_len < (size_t)len ? c->in_len : (size_t)len;
  memcpy(buf, c->in, n);
  c->in += n;
  c->in_len -= n;
  return (int)n;
}

static long wire_ctrl(BIO *bio, int cmd, long num, void *ptr) {
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1; /* the output is the session's to send */
  case BIO_CTRL_PENDING: {
    tls_conn_t *c = BIO_get_data(bio);
    return c->in_len > LONG_MAX ? LONG_MAX : (long)c->in_len;
  }
  default:
    return 0;
  }
}

static int wire_create(BIO *bio) {
  BIO_set_init(bio, 1);
  return 1;
}

static BIO_METHOD *wire_method_new(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                               "iocphost wire");
  if (m && BIO_meth_set_write(m, wire_write) && BIO_meth_set_read(m, wire_read) &&
      BIO_meth_set_ctrl(m, wire_ctrl) && BIO_meth_set_create(m, wire_create)) {
    return m;
  }
  BIO_meth_free(m);
  return NULL;
}

/* ---- Contexts ---------------------------------------------------------- */

/* OpenSSL's last queued reason, for messages; clears the queue. */
static const char *openssl_reason(void) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : "no reason given";
}

/* A file the context needs: say which, and what to do, when it cannot be
 * opened, before OpenSSL's less telling messages. */
static bool readable(const char *path, const char *what, const char *key, char *err,
                     size_t err_len) {
  errno = 0;
  BIO *b = BIO_new_file(path, "r");
  if (!b) {
    int e = errno;
    ERR_clear_error();
    format(err, err_len, "cannot open the %s '%s': %s; check %s", what, path,
           e ? strerror(e) : "cannot be read", key);
    return false;
  }
  BIO_free(b);
  return true;
}

static bool load_cert_and_key(SSL_CTX *s, const char *cert, const char *key, char *err,
                              size_t err_len) {
  if (!readable(cert, "certificate chain file", "tls.cert_file", err, err_len) ||
      !readable(key, "key file", "tls.key_file", err, err_len)) {
    return false;
  }
  if (SSL_CTX_use_certificate_chain_file(s, cert) != 1) {
    format(err, err_len,
           "the certificate chain file '%s' holds no usable PEM certificate (%s); "
           "tls.cert_file must be PEM, the leaf certificate first",
           cert, openssl_reason());
    return false;
  }
  if (SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM) != 1) {
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      format(err, err_len,
             "the key in '%s' does not match the certificate in '%s'; give the key the "
             "certificate was issued for",
             key, cert);
      return false;
    }
    format(err, err_len,
           "the key file '%s' holds no usable PEM private key (%s); tls.key_file must be "
           "an unencrypted PEM key",
           key, openssl_reason());
    return false;
  }
  /* Other key kinds are compared here. */
  if (SSL_CTX_check_private_key(s) != 1) {
    ERR_clear_error();
    format(err, err_len,
           "the key in '%s' does not match the certificate in '%s'; give the key the "
           "certificate was issued for",
           key, cert);
    return false;
  }
  return true;
}

static bool load_ca(SSL_CTX *s, const char *ca, char *err, size_t err_len) {
  if (!readable(ca, "CA file", "tls.ca_file", err, err_len)) {
    return false;
  }
  if (SSL_CTX_load_verify_locations(s, ca, NULL) != 1) {
    format(err, err_len,
           "the CA file '%s' holds no usable PEM certificate (%s); tls.ca_file must "
           "be PEM CA certificates",
           ca, openssl_reason());
    return false;
  }
  return true;
}

static bool configure(tls_ctx_t *t, const tls_ctx_config_t *cfg, char *err,
                      size_t err_len) {
  SSL_CTX *s = t->ssl_ctx;
  int max = cfg->versions == TLS_VERSIONS_1_2_ONLY ? TLS1_2_VERSION : TLS1_3_VERSION;
  int min = cfg->versions == TLS_VERSIONS_1_3_ONLY ? TLS1_3_VERSION : TLS1_2_VERSION;
  /* TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3's are all so). */
  if (SSL_CTX_set_min_proto_version(s, min) != 1 ||
      SSL_CTX_set_max_proto_version(s, max) != 1 ||
      SSL_CTX_set_cipher_list(s, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
    format(err, err_len, "cannot set up TLS: %s", openssl_reason());
    return false;
  }
  SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Idle connections give their record buffers back. */
  SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);

  if (cfg->role == TLS_SERVER) {
    if (!cfg->cert_file || !cfg->key_file) {
      format(err, err_len, "a TLS server needs tls.cert_file and tls.key_file");
      return false;
    }
    if (!load_cert_and_key(s, cfg->cert_file, cfg->key_file, err, err_len)) {
      return false;
    }
    SSL_CTX_set_options(s, SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Resumed sessions must come from this service's contexts. */
    static const unsigned char sid[] = "iocphost";
    SSL_CTX_set_session_id_context(s, sid, sizeof sid - 1);
    if (cfg->ca_file) {
      if (!load_ca(s, cfg->ca_file, err, err_len)) {
        return false;
      }
      STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
      if (names) {
        SSL_CTX_set_client_CA_list(s, names);
      }
      ERR_clear_error();
      SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return true;
  }

  if (!cfg->ca_file || !cfg->server_name || !cfg->server_name[0]) {
    format(err, err_len,
           "a TLS client needs tls.ca_file (the CAs to trust) and tls.server_name "
           "(the name the server's certificate must carry)");
    return false;
  }
  if (!load_ca(s, cfg->ca_file, err, err_len)) {
    return false;
  }
  if (cfg->cert_file || cfg->key_file) {
    if (!cfg->cert_file || !cfg->key_file) {
      format(err, err_len, "a client certificate needs both tls.cert_file and "
                           "tls.key_file");
      return false;
    }
    if (!load_cert_and_key(s, cfg->cert_file, cfg->key_file, err, err_len)) {
      return false;
    }
  }
  SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
  t->server_name = strdup(cfg->server_name);
  if (!t->server_name) {
    format(err, err_len, "out of memory");
    return false;
  }
  ASN1_OCTET_STRING *ip = a2i_IPADDRESS(cfg->server_name);
  t->server_name_is_ip = ip != NULL;
  ASN1_OCTET_STRING_free(ip);
  ERR_clear_error();
  return true;
}

tls_ctx_t *tls_ctx_new(const tls_ctx_config_t *cfg, char *err, size_t err_len) {
  format(err, err_len, "%s", "");
  ERR_clear_error();
  tls_ctx_t *t = calloc(1, sizeof *t);
  if (!t) {
    format(err, err_len, "out of memory");
    return NULL;
  }
  atomic_init(&t->refs, 1);
  t->role = cfg->role;
  t->ssl_ctx =
      SSL_CTX_new(cfg->role == TLS_SERVER ? TLS_server_method() : TLS_client_method());
  t->wire_method = wire_method_new();
  if (!t->ssl_ctx || !t->wire_method) {
    format(err, err_len, "cannot set up TLS: %s", openssl_reason());
    tls_ctx_release(t);
    return NULL;
  }
  if (!configure(t, cfg, err, err_len)) {
    tls_ctx_release(t);
    return NULL;
  }
  return t;
}

tls_ctx_t *tls_ctx_acquire(tls_ctx_t *ctx) {
  atomic_fetch_add(&ctx->refs, 1);
  return ctx;
}

void tls_ctx_release(tls_ctx_t *ctx) {
  if (!ctx || atomic_fetch_sub(&ctx->refs, 1) != 1) {
    return;
  }
  SSL_CTX_free(ctx->ssl_ctx);
  BIO_meth_free(ctx->wire_method);
  free(ctx->server_name);
  free(ctx);
}

tls_role_t tls_ctx_role(const tls_ctx_t *ctx) { return ctx->role; }

void tls_slot_init(tls_slot_t *slot, tls_ctx_t *ctx) {
  pthread_mutex_init(&slot->lock, NULL);
  slot->ctx = ctx;
}

void tls_slot_swap(tls_slot_t *slot, tls_ctx_t *ctx) {
  pthread_mutex_lock(&slot->lock);
  tls_ctx_t *old = slot->ctx;
  slot->ctx = ctx;
  pthread_mutex_unlock(&slot->lock);
  tls_ctx_release(old);
}

tls_ctx_t *tls_slot_get(tls_slot_t *slot) {
  pthread_mutex_lock(&slot->lock);
  tls_ctx_t *ctx = slot->ctx ? tls_ctx_acquire(slot->ctx) : NULL;
  pthread_mutex_unlock(&slot->lock);
  return ctx;
}

void tls_slot_destroy(tls_slot_t *slot) {
  tls_ctx_release(slot->ctx);
  slot->ctx = NULL;
  pthread_mutex_destroy(&slot->lock);
}

/* ---- Connections ------------------------------------------------------- */

/* Records why the connection failed, from OpenSSL's error queue and the
 * certificate check, as one line; clears the queue. */
static tls_status_t fail(tls_conn_t *c, int ssl_error) {
  const char *stage = c->established ? "TLS failed" : "handshake failed";
  unsigned long e = ERR_peek_last_error();
  int reason = e ? ERR_GET_REASON(e) : 0;
  const char *text = e ? ERR_reason_error_string(e) : NULL;
  long verify = SSL_get_verify_result(c->ssl);
  c->failed = true;
  if (ssl_error == SSL_ERROR_ZERO_RETURN) {
    format(c->error, sizeof c->error, "%s: the peer closed TLS (close_notify)", stage);
  } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
             reason == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK) {
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      format(c->error, sizeof c->error,
             "%s: certificate verify failed (%s: the certificate is not for '%s')",
             stage, X509_verify_cert_error_string(verify),
             c->ctx->server_name ? c->ctx->server_name : "?");
    } else {
      format(c->error, sizeof c->error, "%s: certificate verify failed (the %s's: %s)",
             stage, c->ctx->role == TLS_SERVER ? "client" : "server",
             X509_verify_cert_error_string(verify));
    }
  } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && reason == SSL_R_UNSUPPORTED_PROTOCOL) {
    format(c->error, sizeof c->error,
           "%s: the peer offered only protocol versions older than TLS 1.2 (unsupported "
           "protocol); TLS 1.2 or newer is required",
           stage);
  } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
             reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    format(c->error, sizeof c->error,
           "%s: the client presented no certificate, and this service requires one "
           "(tls.ca_file is set)",
           stage);
  } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && reason > SSL_AD_REASON_OFFSET &&
             reason < SSL_AD_REASON_OFFSET + 256) {
    format(c->error, sizeof c->error, "%s: the peer sent the alert '%s' (%s)", stage,
           SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET),
           text ? text : "alert");
  } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
             (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST ||
              reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
              reason == SSL_R_UNKNOWN_PROTOCOL)) {
    format(c->error, sizeof c->error, "%s: the peer does not speak TLS (%s)", stage,
           text ? text : "not a TLS record");
  } else if (text) {
    format(c->error, sizeof c->error, "%s: %s", stage, text);
  } else if (ssl_error == SSL_ERROR_SYSCALL) {
    format(c->error, sizeof c->error, "%s: out of memory for the output", stage);
  } else {
    format(c->error, sizeof c->error, "%s: OpenSSL error %d", stage, ssl_error);
  }
  ERR_clear_error();
  return TLS_FAILED;
}

/* SSL_get_error needs an empty error queue before each call into the
 * connection. Clearing it walks all its slots (OpenSSL 3.0: 2.7% of a
 * TLS echo's server CPU, perf); it is nearly always empty already, and
 * peeking at an empty queue is cheap. */
static void clear_errors(void) {
  if (ERR_peek_error() != 0)
    ERR_clear_error();
}

tls_conn_t *tls_conn_new(tls_ctx_t *ctx, char *err, size_t err_len) {
  format(err, err_len, "%s", "");
  ERR_clear_error();
  tls_conn_t *c = calloc(1, sizeof *c);
  if (!c) {
    format(err, err_len, "out of memory");
    return NULL;
  }
  c->ctx = tls_ctx_acquire(ctx);
  c->ssl = SSL_new(ctx->ssl_ctx);
  BIO *bio = BIO_new(ctx->wire_method);
  if (!c->ssl || !bio) {
    BIO_free(bio);
    format(err, err_len, "cannot set up a TLS connection: %s", openssl_reason());
    tls_conn_free(c);
    return NULL;
  }
  BIO_set_data(bio, c);
  SSL_set_bio(c->ssl, bio, bio); /* one reference, for both directions */
  if (ctx->role == TLS_SERVER) {
    SSL_set_accept_state(c->ssl);
    return c;
  }
  SSL_set_connect_state(c->ssl);
  bool named = ctx->server_name_is_ip
                   ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
                                                   ctx->server_name) == 1
                   : SSL_set_tlsext_host_name(c->ssl, ctx->server_name) == 1 &&
                         SSL_set1_host(c->ssl, ctx->server_name) == 1;
  if (!named) {
    format(err, err_len, "cannot use '%s' as the TLS server name: %s", ctx->server_name,
           openssl_reason());
    tls_conn_free(c);
    return NULL;
  }
  SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  /* The ClientHello, into the output. */
  int r = SSL_do_handshake(c->ssl);
  if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
    fail(c, SSL_get_error(c->ssl, r));
    format(err, err_len, "%s", c->error);
    tls_conn_free(c);
    return NULL;
  }
  ERR_clear_error();
  return c;
}

void tls_conn_free(tls_conn_t *c) {
  if (!c) {
    return;
  }
  SSL_free(c->ssl);
  tls_ctx_release(c->ctx);
  free(c->out);
  free(c);
}

/* One step of input: the handshake until it completes, then one SSL_read. */
static tls_status_t read_step(tls_conn_t *c, void *plain, size_t cap, size_t *got) {
  if (!c->established) {
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      return e == SSL_ERROR_WANT_READ ? TLS_WANT_INPUT : fail(c, e);
    }
    c->established = true;
  }
  int r = SSL_read_ex(c->ssl, plain, cap, got);
  if (r == 1) {
    return TLS_OK;
  }
  *got = 0;
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    return TLS_WANT_INPUT;
  }
  if (e == SSL_ERROR_ZERO_RETURN) {
    c->peer_closed = true;
    return TLS_CLOSED;
  }
  return fail(c, e);
}

tls_status_t tls_conn_read(tls_conn_t *c, const void **wire, size_t *wire_len,
                           void *plain, size_t cap, size_t *got) {
  *got = 0;
  if (c->failed) {
    return TLS_FAILED;
  }
  if (c->peer_closed) {
    return TLS_CLOSED;
  }
  if (!plain || cap == 0) {
    /* The caller's mistake: refused, the connection unharmed. */
    format(c->error, sizeof c->error, "TLS failed: a read with no plaintext buffer");
    return TLS_FAILED;
  }
  clear_errors();
  c->in = *wire;
  c->in_len = *wire_len;
  tls_status_t st = read_step(c, plain, cap, got);
  *wire = c->in;
  *wire_len = c->in_len;
  c->in = NULL;
  c->in_len = 0;
  return st;
}

tls_status_t tls_conn_write(tls_conn_t *c, const void *plain, size_t len) {
  if (c->failed) {
    return TLS_FAILED;
  }
  if (!c->established || c->close_sent) {
    /* The caller's mistake: refused, the connection unharmed. */
    format(c->error, sizeof c->error, "TLS failed: a write %s",
           c->close_sent ? "after close_notify" : "before the handshake completed");
    return TLS_FAILED;
  }
  clear_errors();
  const unsigned char *p = plain;
  while (len > 0) {
    size_t n = 0;
    int r = SSL_write_ex(c->ssl, p, len, &n);
    if (r != 1) {
      return fail(c, SSL_get_error(c->ssl, r));
    }
    p += n;
    len -= n;
  }
  return TLS_OK;
}

tls_status_t tls_conn_close(tls_conn_t *c) {
  if (c->failed) {
    return TLS_FAILED;
  }
  if (c->close_sent || !c->established) {
    return TLS_OK; /* a handshake cut short has nothing to close */
  }
  c->close_sent = true;
  clear_errors();
  int r = SSL_shutdown(c->ssl);
  if (r < 0) {
    return fail(c, SSL_get_error(c->ssl, r));
  }
  return TLS_OK;
}

size_t tls_conn_output(tls_conn_t *c, const void **bytes) {
  *bytes = c->out ? c->out + c->out_head : NULL;
  return c->out_len - c->out_head;
}

void tls_conn_output_done(tls_conn_t *c, size_t n) {
  size_t left = c->out_len - c->out_head;
  c->out_head += n < left ? n : left;
  if (c->out_head == c->out_len) {
    c->out_head = c->out_len = 0;
    if (c->out_cap > TLS_OUT_KEEP) {
      free(c->out);
      c->out = NULL;
      c->out_cap = 0;
    }
  }
}

bool tls_conn_established(const tls_conn_t *c) { return c->established; }

const char *tls_conn_error(const tls_conn_t *c) { return c->error; }

const char *tls_conn_version(const tls_conn_t *c) {
  return c->established ? SSL_get_version(c->ssl) : "";
}

const char *tls_conn_cipher(const tls_conn_t *c) {
  const char *name = c->established ? SSL_get_cipher_name(c->ssl) : NULL;
  return name ? name : "";
}

const char *tls_conn_server_name(const tls_conn_t *c) {
  const char *name = c->ctx->role == TLS_SERVER
                         ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name)
                         : NULL;
  return name ? name : "";
}

bool tls_conn_peer_subject(const tls_conn_t *c, char *buf, size_t buf_len) {
  X509 *peer = SSL_get0_peer_certificate(c->ssl);
  if (!peer || buf_len == 0) {
    return false;
  }
  BIO *mem = BIO_new(BIO_s_mem());
  if (!mem) {
    return false;
  }
  X509_NAME_print_ex(mem, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
  int n = BIO_read(mem, buf, (int)(buf_len - 1 < INT_MAX ? buf_len - 1 : INT_MAX));
  buf[n > 0 ? n : 0] = '\0';
  BIO_free(mem);
  return true;
}
