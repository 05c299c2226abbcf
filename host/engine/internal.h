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

/* The input a session keeps (unconsumed bytes), allocated only while there
 * are some, header and bytes in one block. */
typedef struct kept_input {
  uint32_t len;
  uint32_t cap;
  uint64_t since_ms; /* when the oldest kept byte arrived */
  uint8_t bytes[];
} kept_input_t;

/* What only some sessions have, placed in the session's own block after
 * the extra state: a client session's slot, a transport's layers. An
 * accepted plain TCP session has none (tail NULL). */
typedef struct session_tail {
  client_slot_t *slot;        /* client sessions: the slot that keeps it */
  io_connect_op_t connect_op; /* client sessions: the connect */
  void *layers[];             /* each layer's state, socket's first */
} session_tail_t;

/* A session, laid out for what an idle one needs (issue 18: its bytes are
 * counted): what it uses only while busy (the send side, kept input,
 * timers) is allocated then, and what only some services use (transport
 * layers) is placed in the same block only for them. */
struct session {
  atomic_int refs;
  uint8_t state;           /* session_state_t; written on the worker only */
  /* Written under lock (a reason asked from any thread); atomic so that
   * the worker may read it without the lock. */
  _Atomic uint8_t close_request;
  uint8_t reason;          /* the reason on_disconnected gets */
  uint8_t registered;      /* counted in the service: its lock */
  /* Flags, one bit each, in two groups that C11 keeps apart (the
   * zero-width field between them): a thread may write one group while
   * another writes the other. */
  /* Worker only. */
  uint8_t close_started : 1;
  uint8_t peer_eof : 1;         /* the peer sent FIN */
  uint8_t lingering : 1;        /* FIN sent, draining input */
  uint8_t incomplete_armed : 1; /* the incomplete-input check runs */
  uint8_t opened : 1;           /* on_connected has run */
  uint8_t : 0;
  /* Written under lock. */
  uint8_t sending : 1;      /* a send op is in flight */
  uint8_t kick_pending : 1; /* the kick op is queued */
  uint8_t close_abort : 1;  /* abort rather than flush */
  /* Transports (engine.h). */
  uint8_t transport_ready : 1;   /* every layer's handshake is done */
  uint8_t transport_closed : 1;  /* a layer ended the stream */
  uint8_t idle_check : 1;        /* the service's sweep asks the kick to
                                    look at the session's last receive */
  uint8_t reset_asked : 1;       /* end with a reset, not a FIN: asked from
                                    any thread, done by the worker's close */
  /* Fixed at creation (read by any thread without the lock, so not a bit
   * beside the others), so a plain TCP session pays one predicted branch
   * per receive and send. */
  uint8_t has_transport;
  /* The layers are open. Written once on the worker under lock; the worker
   * reads it without the lock, other threads under it: a byte of its own,
   * since the bits above are written under lock by other threads. */
  uint8_t transport_started;
  engine_lock_t lock;
  uint32_t extra_size; /* bytes of extra state, as the factory asked */
  address_t peer;      /* 4-byte aligned: here it fills what would be holes */
  /* Worker only: sent at once, on_sent still owed (reported at the end of
   * the callback that sent it, so far below 4 GiB). */
  uint32_t sent_unreported;
  /* clock_now_ms() of the last receive (or the open), its low 32 bits,
   * compared by wrapping difference: written on the worker, read by the
   * service's idle sweep (service.c), which looks more often than every
   * idle_timeout_ms (a uint32_t), so a difference never wraps unseen. */
  _Atomic uint32_t last_recv_ms;
  session_tail_t *tail; /* NULL: an accepted session without transport */
  uint64_t id;
  service_t *service;
  void *context;
  /* The socket, and with it the receive and the kick (start, flush and
   * close requests, in serial order): bits of the handle, not op records
   * (backend.h: io_recv_start, io_wake). */
  io_handle_t handle;
  /* The send side (under lock): the queue, its send op and gather list,
   * allocated only while bytes wait (session.c); NULL when idle. */
  send_state_t *tx;
  kept_input_t *kept; /* worker only: unconsumed input, NULL when none */
  strand_t strand;    /* timers and posts in the session's order */
  /* For `sessions` (session_get_info): written on the worker, read from
   * anywhere. connected_ms is set before the service lists the session. */
  atomic_uint_fast64_t bytes_in, bytes_out;
  uint64_t connected_ms;
  session_t *hash_next; /* the service's set of open sessions: its lock */
  /* extra state follows, aligned; then the tail, when there is one */
};

/* service.c and session.c call into each other, and only each other: a
 * parent and its child. The service creates sessions (its listener or
 * client slots) and keeps the set of them; a session reports back the
 * moments the service must count or act on (registered, unregistered,
 * bytes, a client session's connect and close, its memory freed). No other
 * pair of engine files is circular, and nothing above the engine calls
 * these double-underscore functions (but the tests and the fuzzer, which
 * stub the socket out). */

/* session.c, for core.c: what a session's handle reports (its receive,
 * its kick), given to every core. */
extern const io_handle_events_t session__io_events;

/* session.c, for service.c */
session_t *session__new(service_t *svc);
void session__free_unattached(session_t *s);
/* Takes ownership of the socket; on_connected follows on its worker. */
int session__attach(session_t *s, io_socket_t sock, int worker_hint);
void session__connect(session_t *s, io_socket_t sock, int worker_hint);
void session__ref(session_t *s);
/* The service's idle sweep, under its lock: if s has been quiet for idle
 * ms by now (clock_now_ms, low 32 bits), its kick checks on its worker
 * and ends it with idle_timeout. */
void session__idle_check(session_t *s, uint32_t now, uint32_t idle);
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
/* A client session's on_connected is about to run (its transport's
 * handshakes are done). */
void service__client_opened(client_slot_t *slot);
void service__session_allocated(service_t *svc);
void service__session_freed(service_t *svc);
/* The service's stop has begun (service_stop_accepting). */
int service__stopping(service_t *svc);

void engine__live_add(long delta);

#endif /* IOCPHOST_ENGINE_INTERNAL_H */
