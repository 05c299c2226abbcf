/*
 * TLS (SPEC section 14) as a transport layer (engine.h) over the codec in
 * tls.h: the socket's side of a stack, under WebSocket or directly under
 * the handler, on server and client services alike. It knows nothing of
 * JSON or plugins: the host fills a tls_layer_config_t per service and
 * publishes its contexts in the config's slot (reload swaps them: new
 * sessions get the new context, a session keeps the one it started with).
 *
 * Every session encrypts its own records, so the layer's output is never
 * shared (no TRANSPORT_SHARED_OUTPUT): a broadcast is encrypted once per
 * session. A handshake that fails ends its session before on_connected
 * with one log line naming the service, the peer and OpenSSL's reason
 * (tls_conn_error); a graceful close sends close_notify before the FIN.
 * Bytes a layer above writes before the handshake is done (a WebSocket
 * client's upgrade request) wait in the layer and go out encrypted as soon
 * as it is.
 */
#ifndef IOCPHOST_TRANSPORT_TLS_LAYER_H
#define IOCPHOST_TRANSPORT_TLS_LAYER_H

#include "engine/engine.h"
#include "tls.h"

typedef struct tls_layer_config {
  const char *service; /* for log lines */
  tls_slot_t slot;     /* the context new sessions get */
} tls_layer_config_t;

extern const transport_ops_t tls_transport;

/* What a layer above may write before the handshake completes, at most
 * (a WebSocket client's upgrade request is far smaller). */
#define TLS_LAYER_EARLY_MAX (64u * 1024u)

#endif /* IOCPHOST_TRANSPORT_TLS_LAYER_H */
