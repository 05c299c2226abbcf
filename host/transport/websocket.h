/*
 * WebSocket (RFC 6455), server and client sides, as transport layers
 * (engine.h): the HTTP/1.1 upgrade parsed by http-parser, frames by wslay,
 * between a session's socket (or TLS) and its handler. It knows nothing of
 * JSON or plugins: the host fills a ws_config_t per service.
 *
 * What a message carries (README, "WebSocket"): on a packet service every
 * packet sent is one binary message, its 4-byte header included (the size
 * field equals the message's length), so a client reads the same bytes
 * over ws as over tcp; on a raw service every send call is one message.
 * Received messages, binary or text (text is UTF-8-checked by wslay and passed
 * on as bytes), go up in order: on a packet service each must be exactly one
 * packet, on a raw one it is a run of bytes.
 */
#ifndef IOCPHOST_TRANSPORT_WEBSOCKET_H
#define IOCPHOST_TRANSPORT_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct ws_config {
  const char *service;      /* for log lines */
  const char *path;         /* the upgrade's path, "/" (a query is ignored) */
  const char *const *origins; /* Origins allowed; none: any */
  size_t origin_count;
  const char *subprotocol;  /* the client must offer it; NULL: none */
  uint32_t max_message_bytes; /* a longer message closes with 1009 */
  const char *max_message_name; /* the config key of that limit, for logs */
  /* Each message must be one packet (SPEC section 5) whose size field
   * equals the message's length; otherwise the session closes (1002). */
  int packet_messages;
  uint32_t max_packet_bytes;
  uint32_t max_request_bytes; /* the upgrade request's size cap (431) */
  uint32_t ping_interval_ms;  /* 0: no pings of ours; else a ping not
                                 answered by the next one ends it (1008) */
  /* The client's side (websocket_client_transport): the upgrade request's
   * Host (NULL: the session's peer, "1.2.3.4:80") and Origin (NULL: none);
   * path and subprotocol above are what it asks for, and max_request_bytes
   * caps the server's answer. origins is the server's only. */
  const char *host;
  const char *origin;
} ws_config_t;

/* The server's side: answers an upgrade request; its frames are shared by
 * a broadcast (TRANSPORT_SHARED_OUTPUT). */
extern const transport_ops_t websocket_transport;

/* The client's side: start sends the upgrade request (a fresh random
 * Sec-WebSocket-Key each time), input verifies the server's 101 within
 * handshake_timeout_ms, and every frame it sends is masked with a fresh
 * random key, so its output is the session's own. Any other answer ends the
 * session (protocol_error) with one log line saying what the server
 * answered; a client service then reconnects with its backoff. */
extern const transport_ops_t websocket_client_transport;

/* The close code that carries a session's reason (README's table). */
uint16_t ws_close_code(int reason);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: 28 characters and a NUL.
 * Returns 0, or -1 if key is not the base64 of 16 bytes. */
int ws_accept_key(const char *key, size_t key_len, char out[29]);

#endif /* IOCPHOST_TRANSPORT_WEBSOCKET_H */
