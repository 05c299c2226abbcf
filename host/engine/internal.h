/*
 * Engine internals shared by core.c, session.c and service.c. Nothing here
 * is visible above the engine.
 */
#ifndef IOCPHOST_ENGINE_INTERNAL_H
#define IOCPHOST_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/strand.h"

struct core {
  char *name;
  io_core_t *io;
};

typedef struct send_chunk send_chunk_t;
typedef struct send_state send_state_t;
typedef struct client_slot client_slot_t;

typedef enum session_state {
  SESSION_NEW = 0,     /* allocated, not yet connected */
  SESSION_OPENING = 1, /* socket attached, on_connected not yet run */
  SESSION_OPEN = 2,
  SESSION_CLOSING = 3, /* flushing what was queued */
  SESSION_CLOSED = 4   /* on_disconnected has run */
} session_state_t;

struct session {
  atomic_int refs;
  uint8_t state;           /* session_state_t; written on the worker only */
  uint8_t close_started;   /* worker only */
  uint8_t sending;         /* under lock: a send op is in flight */
  uint8_t kick_pending;    /* under lock: the kick op is queued */
  uint8_t peer_eof;        /* worker only: the peer sent FIN */
  uint8_t lingering;       /* worker only: FIN sent, draining input */
  /* Written under lock (a reason asked from any thread); atomic so that
   * the worker may read it without the lock. */
  _Atomic uint8_t close_request;
  uint8_t close_abort;     /* under lock: abort rather than flush */
  uint8_t reason;          /* the reason on_disconnected gets */
  uint8_t registered;      /* counted in the service */
  uint8_t incomplete_armed; /* worker only: the incomplete-input check runs */
  uint8_t opened;          /* worker only: on_connected has run */
  /* Transports (engine.h): has_transport is fixed at creation, so a plain
   * TCP session pays one predicted branch per receive and send. */
  uint8_t has_transport;
  uint8_t transport_started; /* the layers are open: worker, under lock */
  uint8_t transport_ready;   /* under lock: every layer's handshake is done */
  uint8_t transport_closed;  /* under lock: a layer ended the stream */
  void *layers[TRANSPORT_LAYERS_MAX]; /* each layer's state, socket's first */
  uint64_t id;
  service_t *service;
  void *context;
  uint32_t extra_size; /* bytes of extra state, as the factory asked */
  client_slot_t *slot; /* client sessions: the slot that keeps it */
  io_handle_t handle;
  /* The receive; before the first one it carries the connect (a client
   * session's), so an op exists for every moment of the session's life. */
  io_op_t recv_op;
  io_op_t kick_op; /* start, flush and close requests, in serial order */
  engine_lock_t lock;
  /* The send side (under lock): the queue, its send op and gather list,
   * allocated only while bytes wait (session.c); NULL when idle. */
  send_state_t *tx;
  size_t sent_unreported; /* worker only: sent at once, on_sent still owed */
  /* Unconsumed received bytes, allocated only while there are some. */
  uint8_t *pending_in;
  uint32_t pending_in_len;
  uint32_t pending_in_cap;
  uint64_t pending_since_ms; /* when the oldest kept input byte arrived */
  strand_t strand; /* timers and posts in the session's order */
  uint64_t last_recv_ms;
  /* For `sessions` (session_get_info): written on the worker, read from
   * anywhere. connected_ms is set before the service lists the session. */
  atomic_uint_fast64_t bytes_in, bytes_out;
  uint64_t connected_ms;
  session_t *service_prev, *service_next, *hash_next; /* service lock */
  address_t peer;
  /* extra state follows, aligned */
};

/* service.c and session.c call into each other, and only each other: a
 * parent and its child. The service creates sessions (its listener or
 * client slots) and keeps the set of them; a session reports back the
 * moments the service must count or act on (registered, unregistered,
 * bytes, a client session's connect and close, its memory freed). No other
 * pair of engine files is circular, and nothing above the engine calls
 * these double-underscore functions (but the tests and the fuzzer, which
 * stub the socket out). */

/* session.c, for service.c */
session_t *session__new(service_t *svc);
void session__free_unattached(session_t *s);
/* Takes ownership of the socket; on_connected follows on its worker. */
int session__attach(session_t *s, io_socket_t sock, int worker_hint);
void session__connect(session_t *s, io_socket_t sock, int worker_hint);
void session__ref(session_t *s);
/* Runs the receive path on bytes just read: counts them, delivers them to
 * the handler, keeps what it did not consume. Worker only. on_recv_done
 * calls it; so do the tests and the fuzzer (tests/fuzz), which attach a
 * session to IO_INVALID_SOCKET and feed it from a posted function: the
 * real code, with the socket stubbed out. */
void session__receive(session_t *s, const uint8_t *data, size_t len);

/* A broadcast encoded once for every session of svc, when each of its
 * transport's layers allows it (TRANSPORT_SHARED_OUTPUT): a new buffer, or
 * NULL (then each session encodes its own copy). */
shared_buf_t *session__transport_share(service_t *svc, shared_buf_t *buf);
/* session_send_shared for bytes session__transport_share encoded. */
int session__send_encoded(session_t *s, shared_buf_t *encoded);

/* service.c, for session.c */
const service_options_t *service__options(const service_t *svc);
void service__register(service_t *svc, session_t *s);
void service__unregister(service_t *svc, session_t *s, int reason);
void service__count_bytes(service_t *svc, uint64_t in, uint64_t out);
/* A session's send queue or kept input buffer grew or shrank (metrics). */
void service__count_buffers(service_t *svc, int64_t send_delta,
                            int64_t recv_delta);
void service__connect_done(client_slot_t *slot, session_t *s, int status);
void service__client_closed(client_slot_t *slot, session_t *s);
void service__session_allocated(service_t *svc);
void service__session_freed(service_t *svc);
/* The service's stop has begun (service_stop_accepting). */
int service__stopping(service_t *svc);

void engine__live_add(long delta);

#endif /* IOCPHOST_ENGINE_INTERNAL_H */
