/* The TLS codec (SPEC section 14): TLS 1.2 and 1.3 over OpenSSL 3, as a pure
 * bytes-in, bytes-out state machine. No sockets and no threads: the session
 * layer moves the bytes, so IOCP, epoll and io_uring share it. No global
 * state of its own (OpenSSL initialises itself).
 *
 * Contexts (tls_ctx_t) are made from files and reference-counted: a
 * connection holds its context, so `reload` can build a new one and publish
 * it in a tls_slot_t for NEW connections while existing connections keep the
 * one they started with (certificate rotation without a restart).
 *
 * How a session uses a connection (tls_conn_t):
 *
 *   1. Creation. ctx = tls_slot_get(slot); c = tls_conn_new(ctx, err,
 *      len); tls_ctx_release(ctx) (the connection holds its own). A
 *      client's ClientHello is in the output at once; a server's output is
 *      empty until the peer's hello arrives. The handshake's deadline is
 *      the session's (its incomplete-input timer); its size is bounded by
 *      OpenSSL (a ClientHello at most about 128 KiB, a certificate list
 *      100 KiB).
 *   2. After EVERY call below, send the output: while
 *      (n = tls_conn_output(c, &bytes)) > 0, hand `bytes` (owned by the
 *      connection, valid until the next call on c) to the socket or copy
 *      them into the send queue, then tls_conn_output_done(c, n). Handshake
 *      records, session tickets, alerts and close_notify all come out here.
 *   3. Input. For each received run of wire bytes: call
 *      tls_conn_read(c, &wire, &wire_len, plain, cap, &got) until it
 *      returns TLS_WANT_INPUT (everything given was taken and no plaintext
 *      is left: wait for the next receive), TLS_CLOSED or TLS_FAILED. It
 *      reads the wire bytes in place (OpenSSL copies what it takes into its
 *      record buffer; nothing of the caller's is kept after the call) and
 *      advances wire/wire_len past what it took; it writes decrypted bytes
 *      into the caller's `plain` (up to cap) and says how many in `got`.
 *      TLS_OK means `got` > 0 bytes of plaintext: deliver them (framing,
 *      the plugin) and call again with the rest of the wire bytes.
 *   4. Handshake. tls_conn_established(c) turns true inside a
 *      tls_conn_read; only then does the session call on_connected, and
 *      only then may it call tls_conn_write.
 *   5. Output plaintext. tls_conn_write(c, bytes, len) encrypts all of
 *      them (split into records of at most 16 KiB) into the output.
 *   6. Closing. TLS_CLOSED from tls_conn_read: the peer sent close_notify.
 *      To close, tls_conn_close(c) puts our close_notify in the output;
 *      send it, then close the socket (no need to wait for the peer's).
 *      After TLS_FAILED, send the output too (it may hold an alert for the
 *      peer), log tls_conn_error(c) (one line) and close the socket.
 *   7. tls_conn_free(c) when the session is destroyed.
 *
 * Threads: a connection is one OpenSSL SSL object, whose reads may write
 * (handshake replies, key updates) and whose writes may read. So every call
 * on one connection, tls_conn_read included, must be serialised by the
 * caller: under the session's send lock (take it around tls_conn_read and
 * its output too, and deliver the plaintext after unlocking), or all from
 * the session's serial order. Different connections, contexts and slots
 * need nothing: any thread may use them at once. */
#ifndef IOCPHOST_TRANSPORT_TLS_H
#define IOCPHOST_TRANSPORT_TLS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct tls_ctx tls_ctx_t;
typedef struct tls_conn tls_conn_t;

typedef enum tls_role { TLS_SERVER, TLS_CLIENT } tls_role_t;

/* Which protocol versions a context speaks: both by default; forcing one
 * is for tests and for peers known to need it. Never less than TLS 1.2. */
typedef enum tls_versions {
  TLS_VERSIONS_1_2_AND_1_3 = 0,
  TLS_VERSIONS_1_2_ONLY,
  TLS_VERSIONS_1_3_ONLY
} tls_versions_t;

/* What a context is made of. Paths are as given (UTF-8), read at once. */
typedef struct tls_ctx_config {
  tls_role_t role;
  /* Server: the certificate chain (PEM, leaf first) and its private key;
   * both required. Client: an optional client certificate and key, for
   * servers that ask for one. */
  const char *cert_file;
  const char *key_file;
  /* Server: when set, clients must present a certificate issued by a CA in
   * this PEM file. Client: required, the CAs the server's chain must reach. */
  const char *ca_file;
  /* Client only, required: the name sent as SNI and checked against the
   * server's certificate (a DNS name, or an IPv4/IPv6 literal, which is
   * checked against the certificate's IP addresses and sent without SNI). */
  const char *server_name;
  tls_versions_t versions;
} tls_ctx_config_t;

/* Makes a context, or returns NULL and writes into err (at most err_len
 * bytes, NUL-terminated) one line naming the file, what is wrong and what
 * to do (a missing or unreadable file, no certificate in it, a key that
 * does not match the certificate, a client without ca_file or server_name).
 * The new context has one reference, the caller's. */
tls_ctx_t *tls_ctx_new(const tls_ctx_config_t *config, char *err, size_t err_len);
/* Adds a reference and returns ctx; tls_ctx_release drops one (the last
 * frees the context). Any thread. */
tls_ctx_t *tls_ctx_acquire(tls_ctx_t *ctx);
void tls_ctx_release(tls_ctx_t *ctx);
tls_role_t tls_ctx_role(const tls_ctx_t *ctx);

/* The context a service gives its new connections, swappable by reload. */
typedef struct tls_slot {
  pthread_mutex_t lock;
  tls_ctx_t *ctx; /* one reference, the slot's */
} tls_slot_t;

/* Takes over the caller's reference to ctx (which may be NULL). */
void tls_slot_init(tls_slot_t *slot, tls_ctx_t *ctx);
/* Publishes ctx (taking over the caller's reference) for connections made
 * from now on, and drops the slot's reference to the old context: the
 * connections that use it keep it alive. */
void tls_slot_swap(tls_slot_t *slot, tls_ctx_t *ctx);
/* The current context with a reference for the caller (release it), or
 * NULL when the slot is empty. */
tls_ctx_t *tls_slot_get(tls_slot_t *slot);
void tls_slot_destroy(tls_slot_t *slot);

typedef enum tls_status {
  TLS_OK = 0,          /* plaintext was produced (tls_conn_read), or done */
  TLS_WANT_INPUT = 1,  /* tls_conn_read: all input taken; wait for more */
  TLS_CLOSED = 2,      /* tls_conn_read: the peer sent close_notify */
  TLS_FAILED = -1      /* fatal: tls_conn_error says why; send the output */
} tls_status_t;

/* A connection on ctx (it takes its own reference: the caller keeps
 * theirs), or NULL with a reason in err. */
tls_conn_t *tls_conn_new(tls_ctx_t *ctx, char *err, size_t err_len);
void tls_conn_free(tls_conn_t *c);

/* Input: see the top of this file. cap must be > 0 (a call without a
 * plaintext buffer is refused with TLS_FAILED and changes nothing). */
tls_status_t tls_conn_read(tls_conn_t *c, const void **wire, size_t *wire_len,
                           void *plain, size_t cap, size_t *got);
/* Encrypts len bytes of plaintext into the output: TLS_OK, or TLS_FAILED
 * (fatal, as for tls_conn_read). A write before tls_conn_established or
 * after tls_conn_close is refused with TLS_FAILED and a reason, and leaves
 * the connection as it was. */
tls_status_t tls_conn_write(tls_conn_t *c, const void *plain, size_t len);
/* Puts close_notify in the output (once; later calls do nothing). */
tls_status_t tls_conn_close(tls_conn_t *c);

/* The wire bytes waiting to be sent: their count, and in *bytes where they
 * are (owned by c, valid until the next call on c). tls_conn_output_done
 * says that the first n of them have been sent or copied. */
size_t tls_conn_output(tls_conn_t *c, const void **bytes);
void tls_conn_output_done(tls_conn_t *c, size_t n);

/* True once the handshake has completed (and stays true). In TLS 1.3 a
 * client is established before the server has checked the client's
 * certificate: a refusal comes as TLS_FAILED from a later tls_conn_read. */
bool tls_conn_established(const tls_conn_t *c);
/* After TLS_FAILED: one line for the log, such as "handshake failed: the
 * client offered only TLS 1.0 or 1.1 (unsupported protocol); TLS 1.2 or
 * newer is required" or "handshake failed: certificate verify failed
 * (certificate has expired)". "" while nothing failed. */
const char *tls_conn_error(const tls_conn_t *c);
/* The negotiated protocol ("TLSv1.3") and cipher suite, for the log;
 * "" before the handshake. */
const char *tls_conn_version(const tls_conn_t *c);
const char *tls_conn_cipher(const tls_conn_t *c);
/* Server: the name the client asked for (SNI), "" when none (clients
 * send none for an IP address). */
const char *tls_conn_server_name(const tls_conn_t *c);
/* The peer certificate's subject (one line, RFC 2253), or false when the
 * peer presented none. */
bool tls_conn_peer_subject(const tls_conn_t *c, char *buf, size_t buf_len);

#endif
