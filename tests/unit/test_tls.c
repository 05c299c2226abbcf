/* The TLS codec (host/transport/tls.c, SPEC section 14) in memory: a client
 * and a server connection with bytes pumped between them, no sockets. The
 * certificates are the committed fixtures of tests/fixtures/tls (make.sh
 * there says what each is and regenerates them). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

#define FX(name) TEST_SOURCE_DIR "/tests/fixtures/tls/" name

/* ---- Helpers ----------------------------------------------------------- */

static tls_ctx_t *server_ctx(const char *cert, const char *key, const char *ca,
                             tls_versions_t versions) {
  char err[512];
  tls_ctx_config_t cfg = {.role = TLS_SERVER, .cert_file = cert, .key_file = key,
                          .ca_file = ca, .versions = versions};
  tls_ctx_t *ctx = tls_ctx_new(&cfg, err, sizeof err);
  ck_assert_msg(ctx != NULL, "server context: %s", err);
  return ctx;
}

static tls_ctx_t *client_ctx(const char *ca, const char *name, tls_versions_t versions) {
  char err[512];
  tls_ctx_config_t cfg = {.role = TLS_CLIENT, .ca_file = ca, .server_name = name,
                          .versions = versions};
  tls_ctx_t *ctx = tls_ctx_new(&cfg, err, sizeof err);
  ck_assert_msg(ctx != NULL, "client context: %s", err);
  return ctx;
}

/* One end: its connection, what it last said, and the plaintext it read. */
typedef struct end {
  tls_conn_t *c;
  tls_status_t status;
  unsigned char *plain;
  size_t plain_len, plain_cap;
} end_t;

static void end_open(end_t *e, tls_ctx_t *ctx) {
  char err[512];
  memset(e, 0, sizeof *e);
  e->c = tls_conn_new(ctx, err, sizeof err);
  ck_assert_msg(e->c != NULL, "connection: %s", err);
  e->status = TLS_WANT_INPUT;
}

static void end_close(end_t *e) {
  tls_conn_free(e->c);
  free(e->plain);
}

static void keep_plain(end_t *e, const unsigned char *p, size_t n) {
  if (n == 0) {
    return;
  }
  if (e->plain_cap - e->plain_len < n) {
    size_t cap = e->plain_cap ? e->plain_cap : 1024;
    while (cap - e->plain_len < n) {
      cap *= 2;
    }
    e->plain = realloc(e->plain, cap);
    ck_assert_ptr_nonnull(e->plain);
    e->plain_cap = cap;
  }
  memcpy(e->plain + e->plain_len, p, n);
  e->plain_len += n;
}

/* Gives wire bytes to e, chunk bytes at a time, reading plaintext through a
 * small buffer (so records span several reads), as a session would. */
static void feed(end_t *e, const unsigned char *wire, size_t len, size_t chunk) {
  unsigned char plain[1000];
  while (len > 0 && e->status != TLS_FAILED && e->status != TLS_CLOSED) {
    size_t n = len < chunk ? len : chunk;
    const void *p = wire;
    size_t left = n;
    for (int i = 0; i < 100000; i++) {
      size_t got = 0;
      e->status = tls_conn_read(e->c, &p, &left, plain, sizeof plain, &got);
      keep_plain(e, plain, got);
      if (e->status != TLS_OK) {
        break;
      }
      ck_assert_uint_gt(got, 0);
    }
    if (e->status == TLS_WANT_INPUT) {
      ck_assert_msg(left == 0, "%zu wire bytes left with TLS_WANT_INPUT", left);
    }
    wire += n;
    len -= n;
  }
}

/* Moves one end's output to the other; returns how many bytes moved. */
static size_t move(end_t *from, end_t *to, size_t chunk) {
  const void *bytes;
  size_t n = tls_conn_output(from->c, &bytes);
  if (n > 0) {
    feed(to, bytes, n, chunk);
    tls_conn_output_done(from->c, n);
  }
  return n;
}

/* Pumps bytes both ways until neither end has anything to send. */
static void pump(end_t *a, end_t *b, size_t chunk) {
  for (int round = 0; round < 10000; round++) {
    size_t moved = move(a, b, chunk);
    moved += move(b, a, chunk);
    if (moved == 0) {
      return;
    }
  }
  ck_abort_msg("the ends never stopped talking");
}

static void connect_ends(end_t *client, tls_ctx_t *cctx, end_t *server, tls_ctx_t *sctx,
                         size_t chunk) {
  end_open(client, cctx);
  end_open(server, sctx);
  pump(client, server, chunk);
}

static void assert_established(end_t *client, end_t *server) {
  ck_assert_msg(tls_conn_established(client->c), "client: %s", tls_conn_error(client->c));
  ck_assert_msg(tls_conn_established(server->c), "server: %s", tls_conn_error(server->c));
  ck_assert_int_eq(client->status, TLS_WANT_INPUT);
  ck_assert_int_eq(server->status, TLS_WANT_INPUT);
}

static void send_plain(end_t *e, const void *bytes, size_t len) {
  ck_assert_int_eq(tls_conn_write(e->c, bytes, len), TLS_OK);
}

static unsigned char *pattern(size_t len, unsigned seed) {
  unsigned char *p = malloc(len);
  ck_assert_ptr_nonnull(p);
  for (size_t i = 0; i < len; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (unsigned char)(seed >> 16);
  }
  return p;
}

/* Data both ways after a handshake, each side's bytes arriving intact. */
static void exchange(end_t *client, end_t *server, size_t len, size_t chunk) {
  unsigned char *up = pattern(len, 1), *down = pattern(len, 2);
  size_t c0 = client->plain_len, s0 = server->plain_len;
  send_plain(client, up, len);
  send_plain(server, down, len);
  pump(client, server, chunk);
  ck_assert_uint_eq(server->plain_len - s0, len);
  ck_assert_uint_eq(client->plain_len - c0, len);
  ck_assert(memcmp(server->plain + s0, up, len) == 0);
  ck_assert(memcmp(client->plain + c0, down, len) == 0);
  free(up);
  free(down);
}

static void assert_contains(const char *text, const char *part) {
  ck_assert_msg(strstr(text, part) != NULL, "'%s' does not say '%s'", text, part);
}

/* ---- Handshakes -------------------------------------------------------- */

static void handshake_with(tls_versions_t sv, tls_versions_t cv, const char *want) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, sv);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", cv);
  end_t client, server;
  connect_ends(&client, c, &server, s, 1 << 20);
  assert_established(&client, &server);
  ck_assert_str_eq(tls_conn_version(client.c), want);
  ck_assert_str_eq(tls_conn_version(server.c), want);
  ck_assert_str_ne(tls_conn_cipher(client.c), "");
  exchange(&client, &server, 100, 1 << 20);
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}

START_TEST(test_handshake_completes_with_tls_1_3_by_default) {
  handshake_with(TLS_VERSIONS_1_2_AND_1_3, TLS_VERSIONS_1_2_AND_1_3, "TLSv1.3");
}
END_TEST

START_TEST(test_handshake_completes_with_tls_1_2_forced_by_either_side) {
  handshake_with(TLS_VERSIONS_1_2_ONLY, TLS_VERSIONS_1_2_AND_1_3, "TLSv1.2");
  handshake_with(TLS_VERSIONS_1_2_AND_1_3, TLS_VERSIONS_1_2_ONLY, "TLSv1.2");
}
END_TEST

START_TEST(test_handshake_completes_with_tls_1_3_forced) {
  handshake_with(TLS_VERSIONS_1_3_ONLY, TLS_VERSIONS_1_3_ONLY, "TLSv1.3");
}
END_TEST

START_TEST(test_the_state_before_the_handshake_is_not_established) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, 0);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", 0);
  end_t client, server;
  end_open(&client, c);
  end_open(&server, s);
  const void *bytes;
  ck_assert_uint_gt(tls_conn_output(client.c, &bytes), 0); /* ClientHello */
  ck_assert_uint_eq(tls_conn_output(server.c, &bytes), 0);
  ck_assert(!tls_conn_established(client.c));
  ck_assert_str_eq(tls_conn_version(client.c), "");
  ck_assert_int_eq(tls_conn_write(server.c, "x", 1), TLS_FAILED);
  assert_contains(tls_conn_error(server.c), "before the handshake completed");
  /* A read without a plaintext buffer: refused, the connection unharmed. */
  const void *hello;
  size_t hello_len = tls_conn_output(client.c, &hello), got = 0;
  ck_assert_int_eq(tls_conn_read(server.c, &hello, &hello_len, NULL, 0, &got), TLS_FAILED);
  assert_contains(tls_conn_error(server.c), "no plaintext buffer");
  pump(&client, &server, 1 << 20);
  assert_established(&client, &server);
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}
END_TEST

/* ---- Data -------------------------------------------------------------- */

START_TEST(test_a_large_write_is_split_over_many_records_and_arrives_whole) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, _i);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", _i);
  end_t client, server;
  connect_ends(&client, c, &server, s, 1 << 20);
  assert_established(&client, &server);
  const void *bytes;
  unsigned char *big = pattern(1 << 20, 3);
  send_plain(&client, big, 1 << 20);
  /* 64 records of at most 16 KiB, each with its overhead. */
  ck_assert_uint_gt(tls_conn_output(client.c, &bytes), (1 << 20) + 64 * 16);
  pump(&client, &server, 1 << 20);
  ck_assert_uint_eq(server.plain_len, 1 << 20);
  ck_assert(memcmp(server.plain, big, 1 << 20) == 0);
  exchange(&client, &server, 300000, 7000); /* reads cut mid-record */
  free(big);
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}
END_TEST

START_TEST(test_input_fed_one_byte_at_a_time_handshakes_and_carries_data) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, _i);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", _i);
  end_t client, server;
  connect_ends(&client, c, &server, s, 1);
  assert_established(&client, &server);
  exchange(&client, &server, 40000, 1);
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}
END_TEST

/* ---- Refusals ---------------------------------------------------------- */

/* A client that can speak only TLS 1.0 and 1.1: plain OpenSSL, since the
 * codec itself never goes below TLS 1.2. */
START_TEST(test_a_client_pinned_to_tls_1_0_or_1_1_is_refused_with_a_clear_reason) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, 0);
  SSL_CTX *legacy = SSL_CTX_new(TLS_client_method());
  ck_assert_ptr_nonnull(legacy);
  ck_assert_int_eq(SSL_CTX_set_min_proto_version(legacy, TLS1_VERSION), 1);
  ck_assert_int_eq(SSL_CTX_set_max_proto_version(legacy, _i), 1); /* 1.0, then 1.1 */
  ck_assert_int_eq(SSL_CTX_set_cipher_list(legacy, "DEFAULT:@SECLEVEL=0"), 1);
  SSL *ssl = SSL_new(legacy);
  BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  ck_assert_int_ne(SSL_do_handshake(ssl), 1);
  ck_assert_int_eq(SSL_get_error(ssl, -1), SSL_ERROR_WANT_READ);

  end_t server;
  end_open(&server, s);
  char *hello;
  long n = BIO_get_mem_data(out, &hello);
  ck_assert_int_gt(n, 0);
  feed(&server, (unsigned char *)hello, (size_t)n, 1 << 20);
  ck_assert_int_eq(server.status, TLS_FAILED);
  ck_assert(!tls_conn_established(server.c));
  assert_contains(tls_conn_error(server.c), "handshake failed");
  assert_contains(tls_conn_error(server.c), "TLS 1.2 or newer is required");
  /* The refusal reaches the client as a protocol_version alert. */
  const void *alert;
  size_t alen = tls_conn_output(server.c, &alert);
  ck_assert_uint_gt(alen, 0);
  BIO_write(in, alert, (int)alen);
  ck_assert_int_ne(SSL_do_handshake(ssl), 1);
  unsigned long e = ERR_get_error();
  ck_assert_int_eq(ERR_GET_REASON(e), SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
  ERR_clear_error();
  /* Later calls say the same, and change nothing. */
  const void *nothing = NULL;
  size_t zero = 0, got = 0;
  unsigned char plain[16];
  ck_assert_int_eq(tls_conn_read(server.c, &nothing, &zero, plain, sizeof plain, &got),
                   TLS_FAILED);
  ck_assert_uint_eq(got, 0);
  SSL_free(ssl);
  SSL_CTX_free(legacy);
  end_close(&server);
  tls_ctx_release(s);
}
END_TEST

/* A verifying client against a server it must refuse: the client fails
 * with the reason, the server hears the client's alert. */
static void refused_by_client(const char *cert, const char *key, const char *name,
                              const char *reason) {
  tls_ctx_t *s = server_ctx(cert, key, NULL, 0);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), name, 0);
  end_t client, server;
  connect_ends(&client, c, &server, s, 1 << 20);
  ck_assert_int_eq(client.status, TLS_FAILED);
  ck_assert(!tls_conn_established(client.c));
  assert_contains(tls_conn_error(client.c), "handshake failed: certificate verify failed");
  assert_contains(tls_conn_error(client.c), reason);
  ck_assert_int_eq(server.status, TLS_FAILED);
  assert_contains(tls_conn_error(server.c), "the peer sent the alert");
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}

START_TEST(test_a_verifying_client_refuses_a_certificate_from_another_ca) {
  refused_by_client(FX("other_server.pem"), FX("other_server.key"), "localhost",
                    "unable to get local issuer certificate");
}
END_TEST

START_TEST(test_a_verifying_client_refuses_a_wrong_server_name) {
  refused_by_client(FX("server.pem"), FX("server.key"), "game.example",
                    "the certificate is not for 'game.example'");
  refused_by_client(FX("server.pem"), FX("server.key"), "10.1.2.3",
                    "the certificate is not for '10.1.2.3'");
}
END_TEST

START_TEST(test_a_verifying_client_refuses_an_expired_certificate) {
  refused_by_client(FX("expired.pem"), FX("expired.key"), "localhost",
                    "(the server's: certificate has expired)");
}
END_TEST

START_TEST(test_the_server_name_is_sent_as_sni) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, 0);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", 0);
  end_t client, server;
  connect_ends(&client, c, &server, s, 1 << 20);
  assert_established(&client, &server);
  ck_assert_str_eq(tls_conn_server_name(server.c), "localhost");
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}
END_TEST

/* RFC 6066: no IP literal in SNI; the address is checked all the same. */
START_TEST(test_a_server_name_that_is_an_ip_address_is_checked_against_the_cert) {
  const char *names[] = {"127.0.0.1", "::1"};
  for (int i = 0; i < 2; i++) {
    tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, 0);
    tls_ctx_t *c = client_ctx(FX("ca.pem"), names[i], 0);
    end_t client, server;
    connect_ends(&client, c, &server, s, 1 << 20);
    assert_established(&client, &server);
    ck_assert_str_eq(tls_conn_server_name(server.c), "");
    end_close(&client);
    end_close(&server);
    tls_ctx_release(s);
    tls_ctx_release(c);
  }
}
END_TEST

START_TEST(test_client_certificates_are_required_when_the_server_has_a_ca_file) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), FX("ca.pem"), _i);
  char err[512];

  /* Without one: refused, the server saying why. */
  tls_ctx_t *bare = client_ctx(FX("ca.pem"), "localhost", _i);
  end_t client, server;
  connect_ends(&client, bare, &server, s, 1 << 20);
  ck_assert_int_eq(server.status, TLS_FAILED);
  ck_assert(!tls_conn_established(server.c));
  assert_contains(tls_conn_error(server.c), "the client presented no certificate");
  ck_assert_int_eq(client.status, TLS_FAILED);
  end_close(&client);
  end_close(&server);
  tls_ctx_release(bare);

  /* With one the CA issued: in, and the server sees who. */
  tls_ctx_config_t cfg = {.role = TLS_CLIENT, .ca_file = FX("ca.pem"),
                          .server_name = "localhost", .cert_file = FX("client.pem"),
                          .key_file = FX("client.key"), .versions = _i};
  tls_ctx_t *with = tls_ctx_new(&cfg, err, sizeof err);
  ck_assert_msg(with != NULL, "%s", err);
  connect_ends(&client, with, &server, s, 1 << 20);
  assert_established(&client, &server);
  exchange(&client, &server, 1000, 1 << 20);
  char subject[256];
  ck_assert(tls_conn_peer_subject(server.c, subject, sizeof subject));
  ck_assert_str_eq(subject, "CN=iocphost test client");
  end_close(&client);
  end_close(&server);
  tls_ctx_release(with);

  /* With one from another CA: refused. */
  cfg.cert_file = FX("other_server.pem");
  cfg.key_file = FX("other_server.key");
  tls_ctx_t *stranger = tls_ctx_new(&cfg, err, sizeof err);
  ck_assert_msg(stranger != NULL, "%s", err);
  connect_ends(&client, stranger, &server, s, 1 << 20);
  ck_assert_int_eq(server.status, TLS_FAILED);
  assert_contains(tls_conn_error(server.c), "certificate verify failed (the client's: ");
  end_close(&client);
  end_close(&server);
  tls_ctx_release(stranger);
  tls_ctx_release(s);
}
END_TEST

/* ---- Closing ----------------------------------------------------------- */

static void close_from(bool client_first) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, 0);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", 0);
  end_t client, server;
  connect_ends(&client, c, &server, s, 1 << 20);
  assert_established(&client, &server);
  end_t *first = client_first ? &client : &server;
  end_t *second = client_first ? &server : &client;
  /* Bytes written before the close still arrive, then close_notify. */
  send_plain(first, "last words", 10);
  ck_assert_int_eq(tls_conn_close(first->c), TLS_OK);
  ck_assert_int_eq(tls_conn_close(first->c), TLS_OK); /* once only */
  ck_assert_int_eq(tls_conn_write(first->c, "x", 1), TLS_FAILED);
  move(first, second, 1 << 20);
  ck_assert_int_eq(second->status, TLS_CLOSED);
  ck_assert_uint_eq(second->plain_len, 10);
  ck_assert(memcmp(second->plain, "last words", 10) == 0);
  ck_assert_int_eq(tls_conn_close(second->c), TLS_OK);
  move(second, first, 1 << 20);
  ck_assert_int_eq(first->status, TLS_CLOSED);
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}

START_TEST(test_close_notify_from_the_client_reaches_the_server_and_back) {
  close_from(true);
}
END_TEST

START_TEST(test_close_notify_from_the_server_reaches_the_client_and_back) {
  close_from(false);
}
END_TEST

/* ---- Rotation ---------------------------------------------------------- */

START_TEST(test_a_swapped_context_serves_new_connections_while_old_ones_keep_theirs) {
  tls_slot_t slot;
  tls_slot_init(&slot, server_ctx(FX("server.pem"), FX("server.key"), NULL, _i));
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", _i);
  char subject[256];

  tls_ctx_t *first = tls_slot_get(&slot);
  end_t old_client, old_server;
  connect_ends(&old_client, c, &old_server, first, 1 << 20);
  tls_ctx_release(first);
  assert_established(&old_client, &old_server);
  ck_assert(tls_conn_peer_subject(old_client.c, subject, sizeof subject));
  ck_assert_str_eq(subject, "CN=localhost");

  /* The slot's old context is now held by the old connection alone. */
  tls_slot_swap(&slot, server_ctx(FX("server2.pem"), FX("server2.key"), NULL, _i));
  exchange(&old_client, &old_server, 50000, 1 << 20);

  tls_ctx_t *second = tls_slot_get(&slot);
  end_t new_client, new_server;
  connect_ends(&new_client, c, &new_server, second, 1 << 20);
  tls_ctx_release(second);
  assert_established(&new_client, &new_server);
  ck_assert(tls_conn_peer_subject(new_client.c, subject, sizeof subject));
  ck_assert_str_eq(subject, "CN=localhost,O=rotated");
  exchange(&new_client, &new_server, 50000, 1 << 20);
  exchange(&old_client, &old_server, 50000, 1 << 20);

  end_close(&old_client);
  end_close(&old_server);
  end_close(&new_client);
  end_close(&new_server);
  tls_slot_destroy(&slot);
  tls_ctx_release(c);
}
END_TEST

/* Reload swaps while I/O threads make connections: every connection gets a
 * whole context and holds it (ASan and TSan watch the references). */
typedef struct swapper {
  tls_slot_t *slot;
  atomic_int stop;
  int swaps;
} swapper_t;

static void *swap_contexts(void *arg) {
  swapper_t *w = arg;
  while (!atomic_load(&w->stop) && w->swaps < 1000) {
    bool second = w->swaps++ % 2;
    tls_slot_swap(w->slot, server_ctx(second ? FX("server2.pem") : FX("server.pem"),
                                      second ? FX("server2.key") : FX("server.key"),
                                      NULL, 0));
  }
  return NULL;
}

START_TEST(test_connections_made_during_swaps_each_hold_a_whole_context) {
  tls_slot_t slot;
  tls_slot_init(&slot, server_ctx(FX("server.pem"), FX("server.key"), NULL, 0));
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", 0);
  swapper_t w = {.slot = &slot};
  atomic_init(&w.stop, 0);
  pthread_t thread;
  ck_assert_int_eq(pthread_create(&thread, NULL, swap_contexts, &w), 0);
  for (int i = 0; i < 40; i++) {
    tls_ctx_t *s = tls_slot_get(&slot);
    end_t client, server;
    connect_ends(&client, c, &server, s, 1 << 20);
    tls_ctx_release(s); /* the connection holds its own */
    assert_established(&client, &server);
    exchange(&client, &server, 1000, 1 << 20);
    end_close(&client);
    end_close(&server);
  }
  atomic_store(&w.stop, 1);
  pthread_join(thread, NULL);
  ck_assert_int_gt(w.swaps, 0);
  tls_slot_destroy(&slot);
  tls_ctx_release(c);
}
END_TEST

/* ---- Garbage ----------------------------------------------------------- */

START_TEST(test_garbage_input_fails_cleanly_with_a_reason) {
  tls_ctx_t *s = server_ctx(FX("server.pem"), FX("server.key"), NULL, 0);
  tls_ctx_t *c = client_ctx(FX("ca.pem"), "localhost", 0);
  static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  unsigned char *noise = pattern(4096, 9);

  end_t server;
  end_open(&server, s);
  feed(&server, (const unsigned char *)http, sizeof http - 1, 1 << 20);
  ck_assert_int_eq(server.status, TLS_FAILED);
  assert_contains(tls_conn_error(server.c), "handshake failed: the peer does not speak TLS");
  end_close(&server);

  for (size_t chunk = 1; chunk <= 4096; chunk *= 64) {
    end_open(&server, s);
    feed(&server, noise, 4096, chunk);
    ck_assert_int_eq(server.status, TLS_FAILED);
    assert_contains(tls_conn_error(server.c), "handshake failed");
    end_close(&server);
  }

  /* A close_notify alert in the middle of a handshake. */
  static const unsigned char close_notify[] = {21, 3, 3, 0, 2, 1, 0};
  end_t client;
  end_open(&client, c);
  end_open(&server, s);
  move(&client, &server, 1 << 20); /* the ClientHello */
  ck_assert_int_eq(server.status, TLS_WANT_INPUT);
  feed(&server, close_notify, sizeof close_notify, 1 << 20);
  ck_assert_int_eq(server.status, TLS_FAILED);
  assert_contains(tls_conn_error(server.c), "handshake failed: the peer closed TLS");
  end_close(&client);
  end_close(&server);

  /* A client whose server answers noise; and an established connection
   * whose peer sends noise after the handshake. */
  end_open(&client, c);
  feed(&client, noise, 4096, 1 << 20);
  ck_assert_int_eq(client.status, TLS_FAILED);
  end_close(&client);

  connect_ends(&client, c, &server, s, 1 << 20);
  assert_established(&client, &server);
  static const unsigned char forged[] = {23, 3, 3, 0, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                         11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                         23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
                                         35, 36, 37, 38, 39, 40};
  feed(&server, forged, sizeof forged, 1 << 20);
  ck_assert_int_eq(server.status, TLS_FAILED);
  assert_contains(tls_conn_error(server.c), "TLS failed: ");
  ck_assert_int_eq(tls_conn_write(server.c, "x", 1), TLS_FAILED);
  free(noise);
  end_close(&client);
  end_close(&server);
  tls_ctx_release(s);
  tls_ctx_release(c);
}
END_TEST

/* ---- Context errors ---------------------------------------------------- */

typedef struct bad_config {
  tls_ctx_config_t cfg;
  const char *says[3];
} bad_config_t;

static const bad_config_t bad_configs[] = {
    {{TLS_SERVER, FX("missing.pem"), FX("server.key"), NULL, NULL, 0},
     {"cannot open the certificate chain file", "missing.pem", "tls.cert_file"}},
    {{TLS_SERVER, FX("server.pem"), FX("missing.key"), NULL, NULL, 0},
     {"cannot open the key file", "missing.key", "tls.key_file"}},
    {{TLS_SERVER, FX("server.pem"), FX("server2.key"), NULL, NULL, 0},
     {"does not match the certificate", "server2.key", "server.pem"}},
    {{TLS_SERVER, FX("server.key"), FX("server.key"), NULL, NULL, 0},
     {"holds no usable PEM certificate", "server.key", "leaf certificate first"}},
    {{TLS_SERVER, FX("server.pem"), FX("server.pem"), NULL, NULL, 0},
     {"holds no usable PEM private key", "server.pem", "tls.key_file"}},
    {{TLS_SERVER, FX("server.pem"), FX("server.key"), FX("make.sh"), NULL, 0},
     {"the CA file", "make.sh", "holds no usable PEM certificate"}},
    {{TLS_SERVER, FX("server.pem"), FX("server.key"), FX("missing_ca.pem"), NULL, 0},
     {"cannot open the CA file", "missing_ca.pem", "tls.ca_file"}},
    {{TLS_SERVER, NULL, FX("server.key"), NULL, NULL, 0},
     {"a TLS server needs tls.cert_file and tls.key_file", "", ""}},
    {{TLS_CLIENT, NULL, NULL, FX("ca.pem"), NULL, 0},
     {"a TLS client needs", "tls.server_name", ""}},
    {{TLS_CLIENT, NULL, NULL, NULL, "localhost", 0},
     {"a TLS client needs", "tls.ca_file", ""}},
    {{TLS_CLIENT, FX("client.pem"), NULL, FX("ca.pem"), "localhost", 0},
     {"a client certificate needs both", "", ""}},
};

START_TEST(test_each_bad_context_is_refused_with_a_reason_naming_the_file) {
  const bad_config_t *b = &bad_configs[_i];
  char err[512] = "untouched";
  ck_assert_ptr_null(tls_ctx_new(&b->cfg, err, sizeof err));
  for (int k = 0; k < 3; k++) {
    assert_contains(err, b->says[k]);
  }
  ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

static Suite *tls_suite(void) {
  Suite *s = suite_create("tls");
  TCase *tc = tcase_create("codec");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_handshake_completes_with_tls_1_3_by_default);
  tcase_add_test(tc, test_handshake_completes_with_tls_1_2_forced_by_either_side);
  tcase_add_test(tc, test_handshake_completes_with_tls_1_3_forced);
  tcase_add_test(tc, test_the_state_before_the_handshake_is_not_established);
  tcase_add_loop_test(tc, test_a_large_write_is_split_over_many_records_and_arrives_whole,
                      TLS_VERSIONS_1_2_ONLY, TLS_VERSIONS_1_3_ONLY + 1);
  tcase_add_loop_test(tc, test_input_fed_one_byte_at_a_time_handshakes_and_carries_data,
                      TLS_VERSIONS_1_2_ONLY, TLS_VERSIONS_1_3_ONLY + 1);
  tcase_add_loop_test(tc, test_a_client_pinned_to_tls_1_0_or_1_1_is_refused_with_a_clear_reason,
                      TLS1_VERSION, TLS1_1_VERSION + 1);
  tcase_add_test(tc, test_a_verifying_client_refuses_a_certificate_from_another_ca);
  tcase_add_test(tc, test_a_verifying_client_refuses_a_wrong_server_name);
  tcase_add_test(tc, test_a_verifying_client_refuses_an_expired_certificate);
  tcase_add_test(tc, test_the_server_name_is_sent_as_sni);
  tcase_add_test(tc, test_a_server_name_that_is_an_ip_address_is_checked_against_the_cert);
  tcase_add_loop_test(tc, test_client_certificates_are_required_when_the_server_has_a_ca_file,
                      TLS_VERSIONS_1_2_ONLY, TLS_VERSIONS_1_3_ONLY + 1);
  tcase_add_test(tc, test_close_notify_from_the_client_reaches_the_server_and_back);
  tcase_add_test(tc, test_close_notify_from_the_server_reaches_the_client_and_back);
  tcase_add_loop_test(tc,
                      test_a_swapped_context_serves_new_connections_while_old_ones_keep_theirs,
                      TLS_VERSIONS_1_2_ONLY, TLS_VERSIONS_1_3_ONLY + 1);
  tcase_add_test(tc, test_connections_made_during_swaps_each_hold_a_whole_context);
  tcase_add_test(tc, test_garbage_input_fails_cleanly_with_a_reason);
  tcase_add_loop_test(tc, test_each_bad_context_is_refused_with_a_reason_naming_the_file, 0,
                      (int)(sizeof bad_configs / sizeof bad_configs[0]));
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(tls_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
