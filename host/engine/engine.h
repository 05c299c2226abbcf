/*
 * The engine: cores, services (server and client), sessions, timers.
 * It knows nothing of JSON or plugins; the host wires those on through the
 * session factory and handler below.
 *
 * Lifetime (SPEC section 2): sessions and listeners are reference-counted.
 * Every pending operation holds a reference to its owner, released exactly
 * once when its completion has been processed; an accept also holds the
 * session it will hand over. A session's memory (and the extra state that
 * rides with it) is freed only when the last reference is gone.
 *
 * Threads: every function here may be called from any thread, except where
 * a comment says otherwise. A session's callbacks, timers and posted
 * functions run one at a time on the session's worker.
 */
#ifndef IOCPHOST_ENGINE_H
#define IOCPHOST_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/address.h"

typedef struct core core_t;
typedef struct service service_t;
typedef struct session session_t;
typedef struct shared_buf shared_buf_t;

typedef struct session_buf {
  const void *data;
  size_t len;
} session_buf_t;

/* Results: 0 or one of these (they match iocphost_result in the SDK). */
enum {
  ENGINE_OK = 0,
  ENGINE_E_CLOSED = -1,
  ENGINE_E_INVAL = -2,
  ENGINE_E_NOMEM = -3,
  ENGINE_E_QUEUE_FULL = -4,
  ENGINE_E_NOTFOUND = -5,
  ENGINE_E_BUSY = -8 /* the work queue is full (IOCPHOST_E_BUSY) */
};

/* Why a session ended (values match iocphost_reason_t). */
typedef enum session_reason {
  REASON_PEER_CLOSED = 1,
  REASON_PEER_RESET = 2,
  REASON_LOCAL = 3,
  REASON_PROTOCOL_ERROR = 4,
  REASON_SEND_QUEUE_FULL = 5,
  REASON_IDLE_TIMEOUT = 6,
  REASON_HOST_STOPPING = 7,
  REASON_CONNECT_FAILED = 8,
  REASON_IO_ERROR = 9
} session_reason_t;
const char *session_reason_name(int reason);

/* ---- cores ---- */

/* The completion engine a core runs on. Linux: epoll (the default) or
 * io_uring; Windows: IOCP only. */
typedef enum core_backend {
  CORE_BACKEND_DEFAULT = 0, /* the platform's; see core_create */
  CORE_BACKEND_EPOLL,
  CORE_BACKEND_IO_URING,
  CORE_BACKEND_IOCP
} core_backend_t;

/* threads <= 0 means one per CPU. backend CORE_BACKEND_DEFAULT is the
 * platform's default, or for tests what the environment variable
 * IOCPHOST_DEFAULT_BACKEND names ("epoll" or "io_uring", read once), so a
 * whole test suite can run on io_uring without changing its configs. A
 * core asked for io_uring where the kernel refuses it (too old, or
 * forbidden by a sandbox) runs on epoll, with one log line saying so. */
int core_create(const char *name, int threads, core_backend_t backend,
                core_t **out, char *err, size_t err_len);
/* Every service of the core must be destroyed first. */
void core_destroy(core_t *core);
const char *core_name(const core_t *core);
int core_thread_count(const core_t *core);
uint64_t core_completions(const core_t *core);
/* The backend the core runs on ("epoll", "io_uring", "iocp"). */
const char *core_backend_name(const core_t *core);
/* The backend named name ("epoll", "io_uring", "iocp"), if this platform
 * has it: returns 0, or -1 when it does not. */
int core_backend_parse(const char *name, core_backend_t *out);
/* The names core_backend_parse accepts here, for error messages. */
const char *core_backend_choices(void);

/* Sessions, listeners, timers and posts alive in the process; tests check
 * it returns to 0. */
long engine_live_objects(void);

/* ---- what a session is: decided by the layer above ---- */

typedef struct session_handler {
  /* Required. */
  void (*on_connected)(session_t *s);
  /* Returns how many bytes it consumed; the rest is presented again. */
  size_t (*on_recv)(session_t *s, const uint8_t *data, size_t len);
  void (*on_disconnected)(session_t *s, session_reason_t reason);
  /* Optional. */
  void (*on_sent)(session_t *s, size_t bytes);
  /* Optional: the last reference is gone, right before the memory is. */
  void (*on_free)(session_t *s);
} session_handler_t;

typedef struct session_factory {
  const session_handler_t *handler;
  void *ctx;
  /* Called for every new session before it is allocated: returns how many
   * bytes of extra state ride with it (zeroed; session_extra) and sets the
   * session's context (session_context). Returns (size_t)-1 to refuse. */
  size_t (*prepare)(void *ctx, void **session_context);
} session_factory_t;

/* ---- transports: layers between a session's socket and its handler ---- */

/* A transport (SPEC section 14) is a stack of layers, the socket's side
 * first (tcp < tls < websocket): each turns the bytes below it into the
 * bytes above it and back. The engine knows no layer; the host chooses
 * them per service (service_options.transport). A service without layers
 * pays one predicted branch per receive and per send, nothing else.
 *
 * Every layer call runs under the session's send lock, so the wire stream
 * is never reordered between a receive (a handshake answer, a pong) and
 * sends from other threads, and a layer's state needs no lock of its own.
 * So a layer must not call back into the session's functions (send,
 * timers, posts) from inside its ops; it writes through the sinks it is
 * handed, and the engine queues what they collect before unlocking. */
typedef struct transport_sink transport_sink_t;
struct transport_sink {
  /* Returns 0, a session_reason_t (> 0) that ends the session (returned
   * by a layer above), or ENGINE_E_* (< 0). A layer passes a non-zero
   * result on, as its own. */
  int (*write)(const transport_sink_t *sink, const session_buf_t *bufs,
               size_t count);
  void *ctx; /* the writer's: the engine's, or a test's */
  int level;
};

static inline int transport_sink_write(const transport_sink_t *sink,
                                       const void *data, size_t len) {
  session_buf_t b = {data, len};
  return sink->write(sink, &b, 1);
}

/* A layer's output may be shared among sessions (one encoding of a
 * broadcast): it depends on the bytes and config only, never on the
 * session, and the layer accepts output(config, NULL, ...). */
#define TRANSPORT_SHARED_OUTPUT 1u

typedef struct transport_ops {
  const char *name; /* "websocket", "tls": for log lines */
  unsigned flags;   /* TRANSPORT_* */
  /* Worker, no lock: the layer's state for session s, before any byte
   * moves. config is the transport_layer_t's. Returns 0, or -1 (the
   * session ends quietly, io_error). */
  int (*open)(void *config, session_t *s, void **layer);
  /* Optional, right after open: what the layer says first (a client's
   * upgrade request, a ClientHello) is written to down. Same returns as
   * input. */
  int (*start)(void *layer, const transport_sink_t *down);
  /* Bytes from below (the socket, or the layer under this one), in order.
   * What they decode to goes to up (toward the handler), what must be
   * answered (a handshake reply, a pong) to down. Returns 0, or a
   * session_reason_t (> 0) to end the session gracefully: what up got
   * before is still delivered, then the session closes (close() below
   * runs, but a layer that already wrote its closing bytes adds none), or
   * ENGINE_E_* (< 0): the session aborts (io_error). */
  int (*input)(void *layer, const uint8_t *data, size_t len,
               const transport_sink_t *up, const transport_sink_t *down);
  /* Bytes the session sends (any thread): their encoding goes to down.
   * Returns 0 or ENGINE_E_* (the send fails with it). config is the
   * layer's; layer is NULL for a shared encoding (TRANSPORT_SHARED_OUTPUT). */
  int (*output)(void *config, void *layer, const session_buf_t *bufs,
                size_t count, const transport_sink_t *down);
  /* 1 once the layer's handshake is done: on_connected runs when every
   * layer is ready. */
  int (*ready)(void *layer);
  /* Optional, worker, no lock: every layer became ready, right before
   * on_connected (a layer starts its keepalive timers here). */
  void (*opened)(void *layer);
  /* A graceful close, before the engine's FIN: the layer's closing bytes
   * (a close frame; close_notify) for reason go to down. Also for a session
   * whose handshake failed or timed out (it never reached on_connected). */
  void (*close)(void *layer, session_reason_t reason,
                const transport_sink_t *down);
  /* When the session's memory goes (any thread). */
  void (*free)(void *layer);
} transport_ops_t;

typedef struct transport_layer {
  const transport_ops_t *ops;
  void *config; /* passed to open; outlives the service */
} transport_layer_t;

#define TRANSPORT_LAYERS_MAX 4

/* Runs fn(layer, arg, down) under s's lock, with layer's down sink, and
 * queues what it writes: for a layer that speaks on its own (a keepalive
 * ping from a timer). fn returns as input does. Returns ENGINE_OK,
 * ENGINE_E_CLOSED (the session is closing or ended), ENGINE_E_INVAL
 * (layer is not one of s's) or what fn returned when < 0. */
int session_transport_call(session_t *s, void *layer,
                           int (*fn)(void *layer, void *arg,
                                     const transport_sink_t *down),
                           void *arg);

/* ---- services ---- */

typedef enum service_type { SERVICE_SERVER = 1, SERVICE_CLIENT = 2 } service_type_t;

typedef struct service_options {
  const char *name;
  service_type_t type;
  address_t address;
  session_factory_t factory;
  uint32_t max_recv_bytes;         /* unconsumed bytes kept; default 65536 */
  uint64_t send_queue_limit_bytes; /* default 1 MiB */
  uint32_t idle_timeout_ms;        /* 0 = none */
  /* Input kept unconsumed (an incomplete packet or message) must be
   * consumed within this time, or the session ends with protocol_error:
   * a peer that trickles a packet byte by byte cannot hold a session (and
   * its buffer) forever by staying just short of idle_timeout_ms. Measured
   * from when the oldest kept byte arrived; 0 = none; default 30000. */
  uint32_t incomplete_timeout_ms;
  int tcp_nodelay;
  uint32_t close_timeout_ms; /* flush + FIN before giving up; default 5000 */
  /* After our FIN, how long a session keeps reading (and discarding) until
   * the peer's FIN before its socket is closed anyway: closing with unread
   * input would turn the clean end into a reset. A peer that never closes
   * holds the session (and a graceful stop) this long. 0 = close at once
   * after the FIN; default 2000. */
  uint32_t close_linger_ms;
  /* server */
  uint32_t max_sessions;
  int backlog;
  int accepts_pending; /* accepts kept in flight; default 8 */
  /* client */
  uint32_t client_sessions;
  uint32_t connect_timeout_ms;
  int reconnect;
  uint32_t reconnect_min_delay_ms;
  uint32_t reconnect_max_delay_ms;
  double reconnect_jitter;
  /* A session that stayed connected this long proves the server healthy:
   * the next reconnect starts again from min_delay_ms. One that ends
   * sooner counts as a failure and the delay goes on doubling, so a
   * server that accepts and drops at once is not hammered at the minimum.
   * 0 = reconnect_max_delay_ms (at least 1 s). */
  uint32_t reconnect_reset_after_ms;
  /* The transport's layers, the socket's side first; none (NULL, 0) is
   * plain TCP. The array and its configs outlive the service. */
  const transport_layer_t *transport;
  size_t transport_layers; /* at most TRANSPORT_LAYERS_MAX */
  /* Every layer must be ready (its handshake done) this long after the
   * connection: otherwise the session ends (idle_timeout) without ever
   * reaching on_connected. Default 10000; 0 = none. */
  uint32_t handshake_timeout_ms;
} service_options_t;

/* Fills the documented defaults. */
void service_options_init(service_options_t *opt);

typedef struct service_stats {
  uint64_t sessions_now;
  uint64_t sessions_max;
  uint64_t accepted;
  uint64_t rejected;
  /* A client's connects, and those that failed; with a transport, a
   * connect counts once its handshakes are done, and a failed handshake
   * is a failed connect. */
  uint64_t connects;
  uint64_t connect_failures;
  uint64_t reconnect_delay_ms; /* the backoff chosen after the last failure,
                                  before jitter */
  uint64_t bytes_in;
  uint64_t bytes_out;
  uint64_t accept_errors;
  uint64_t disconnects[10]; /* by session_reason_t */
  /* In use now by its sessions: bytes queued to send (shared broadcast
   * buffers counted once per session), and capacity of the buffers keeping
   * unconsumed input. */
  uint64_t send_queue_bytes;
  uint64_t recv_buffer_bytes;
} service_stats_t;

int service_create(core_t *core, const service_options_t *opt,
                   service_t **out, char *err, size_t err_len);
/* Server: bind and listen (errors like "address in use" are returned);
 * client: start connecting. */
int service_start(service_t *svc, char *err, size_t err_len);
/* Stops accepting (server) or reconnecting (client). Sessions go on. */
void service_stop_accepting(service_t *svc);
/* Asks every session to flush and close with reason. */
void service_disconnect_all(service_t *svc, session_reason_t reason);
/* Closes every session at once, discarding what is queued. */
void service_abort_all(service_t *svc, session_reason_t reason);
/* Waits until no session of the service is open and nothing of it is
 * pending; returns 0, or -1 after timeout_ms. */
int service_wait_closed(service_t *svc, uint32_t timeout_ms);
/* Stops, waits and frees. Sessions still referenced from outside keep their
 * memory until released. */
void service_destroy(service_t *svc);
/* The same, waiting at most timeout_ms (service_destroy: 10 s) for what the
 * service's sessions and operations hold. Returns 0 when the service is
 * freed; -1 when something still holds it: then it logs what (sessions,
 * listener or client operations) and leaves the memory alone, and a later
 * call, once that was released, frees it. */
int service_destroy_within(service_t *svc, uint32_t timeout_ms);

const char *service_name(const service_t *svc);
core_t *service_core(const service_t *svc);
void service_get_stats(service_t *svc, service_stats_t *out);
/* Bound address (useful with port 0). */
int service_local_address(service_t *svc, address_t *out);
/* A live session by id, acquired; NULL if none. */
session_t *service_find_session(service_t *svc, uint64_t id);
/* The service's sessions (connected, not yet ended and unlisted), each
 * acquired, in a malloc'd array the caller frees after releasing each.
 * Returns ENGINE_OK (*out NULL when there are none) or ENGINE_E_NOMEM. */
int service_sessions(service_t *svc, session_t ***out, size_t *count);
/* Queues one shared buffer on every open session; returns the count. */
int service_broadcast(service_t *svc, shared_buf_t *buf);
/* The layer above's pointer for this service (e.g. the host's record). */
void service_set_user(service_t *svc, void *user);
void *service_user(const service_t *svc);

/* ---- shared buffers: one copy queued on many sessions ---- */

shared_buf_t *shared_buf_new(size_t len);
uint8_t *shared_buf_data(shared_buf_t *buf);
size_t shared_buf_len(const shared_buf_t *buf);
void shared_buf_release(shared_buf_t *buf);

/* ---- sessions ---- */

typedef void (*session_fn)(session_t *s, void *arg);

int session_send(session_t *s, const void *data, size_t len);
int session_sendv(session_t *s, const session_buf_t *bufs, size_t count);
int session_send_shared(session_t *s, shared_buf_t *buf);
/* Flush, FIN, then on_disconnected(reason). The first reason wins. */
int session_disconnect(session_t *s, session_reason_t reason);
/* Close now, discarding the queue. The connection ends with RST when queued
 * bytes were thrown away (so the peer sees the stream was cut), with FIN when
 * nothing was lost. The same holds for the engine's own forced closes:
 * send_queue_full, close_timeout_ms passing while flushing. */
int session_abort(session_t *s, session_reason_t reason);

session_t *session_acquire(session_t *s);
void session_release(session_t *s);

uint64_t session_id(const session_t *s);
const address_t *session_peer(const session_t *s);
service_t *session_service(const session_t *s);
void *session_extra(session_t *s);
size_t session_extra_size(const session_t *s);
void *session_context(const session_t *s);
/* Replaces the context (the factory's, until then). The session's worker
 * only: the context is read there without a lock. */
void session_set_context(session_t *s, void *context);
/* A session as an operator sees it (`iocphost sessions`). */
typedef struct session_info {
  uint64_t id;
  address_t peer;
  uint64_t connected_ms; /* clock_now_ms when it connected */
  uint64_t bytes_in, bytes_out;
  uint64_t queued_bytes; /* queued to send, not yet taken by the socket */
} session_info_t;
/* Of a listed session (service_sessions). */
void session_get_info(session_t *s, session_info_t *out);
/* 1 while the session is open (between on_connected and disconnect). */
int session_is_open(session_t *s);

/* Timers run fn in the session's serial order; repeat_ms 0 = once.
 * Returns an id > 0, or 0 if the session has ended or memory ran out. */
uint64_t session_timer_start(session_t *s, uint32_t delay_ms,
                             uint32_t repeat_ms, session_fn fn, void *arg);
/* ENGINE_E_NOTFOUND if it already ended. */
int session_timer_stop(session_t *s, uint64_t timer_id);
/* Runs fn in the session's serial order, if the session is still open. */
int session_post(session_t *s, session_fn fn, void *arg);

/* The same with two pointers passed through, for a layer above that forwards
 * to a callback of its own (the host: the plugin's function and argument).
 * done, if not NULL, runs exactly once, on the session's worker, when the
 * timer or post is gone for good: after its last run, or stopped, or dropped
 * with its session; never while fn runs. It does not run when the call
 * fails (0 or an error): what arg and arg2 hold stays the caller's then.
 * (The host keeps the plugin's code loaded until then.) */
typedef void (*session_fn2)(session_t *s, void *arg, void *arg2);
uint64_t session_timer_start2(session_t *s, uint32_t delay_ms,
                              uint32_t repeat_ms, session_fn2 fn,
                              session_fn2 done, void *arg, void *arg2);
int session_post2(session_t *s, session_fn2 fn, session_fn2 done, void *arg,
                  void *arg2);
/* Runs fn in the session's serial order even if the session has ended by
 * then (a work completion must run exactly once, to free what it holds);
 * fn can tell with session_is_open. Returns ENGINE_OK or ENGINE_E_NOMEM. */
int session_post_always(session_t *s, session_fn2 fn, void *arg, void *arg2);

/* ---- rooms: objects with a serial order of their own, no socket ---- */

/* A room (SPEC section 12) runs posts and timers one at a time in its own
 * serial order, like a session's (the same mechanism: strand.h), on a
 * worker of its core. It follows the lifetime rule: every pending post or
 * timer holds a reference, and memory goes with the last one. room_close
 * is safe at any moment from any thread: the close runs in the room's
 * order, stops its timers, drops its posts not yet run, and on_close is
 * the last callback of the room. Membership and broadcast are the host's. */
typedef struct room room_t;

/* A room timer's tick (see room_timer_start). */
typedef struct room_tick {
  uint64_t due_ms;     /* monotonic ms it was due at */
  uint32_t late_ms;    /* how late it runs */
  uint32_t late_count; /* ticks of this timer that ran late so far */
  uint64_t count;      /* ticks of this timer so far, this one included */
} room_tick_t;

typedef void (*room_fn)(room_t *r, void *arg, void *arg2);
typedef void (*room_tick_fn)(room_t *r, void *arg, void *arg2,
                             const room_tick_t *tick);

typedef struct room_handler {
  /* In the room's order, once, after room_close: its last callback. */
  void (*on_close)(room_t *r);
  /* When its memory goes (any thread): free what the extra state holds. */
  void (*on_free)(room_t *r);
} room_handler_t;

/* A room on one of core's workers (round-robin), with extra zeroed bytes
 * of state (room_extra). Returned with one reference, the caller's. */
room_t *room_create(core_t *core, const room_handler_t *handler, size_t extra,
                    void *context);
uint64_t room_id(const room_t *r); /* unique, never 0 */
void *room_extra(room_t *r);
void *room_context(const room_t *r);
room_t *room_acquire(room_t *r);
void room_release(room_t *r);
/* ENGINE_OK, or ENGINE_E_CLOSED if it was closed already. */
int room_close(room_t *r);
/* Not closed (nor closing). */
int room_is_open(room_t *r);
/* True when called in the room's serial order (its worker). */
int room_in_order(const room_t *r);
/* Runs fn soon in the room's order, if the room is still open then; done,
 * if not NULL, once when the post is gone (ran or dropped). ENGINE_E_CLOSED
 * if it is closed already (done is not called). */
int room_post(room_t *r, room_fn fn, room_fn done, void *arg, void *arg2);
/* Runs fn in the room's order even if the room has closed by then (a work
 * completion must run exactly once). ENGINE_OK or ENGINE_E_NOMEM. */
int room_post_always(room_t *r, room_fn fn, void *arg, void *arg2);
/* After delay_ms, then every repeat_ms (repeat_ms 0: once), in the room's
 * order until stopped or closed. Ticks are due at start + delay +
 * n * repeat: no drift; a late tick runs late (tick->late_ms), never
 * skipped. Returns an id (> 0) or 0 (closed, no memory; done not called). */
uint64_t room_timer_start(room_t *r, uint32_t delay_ms, uint32_t repeat_ms,
                          room_tick_fn fn, room_fn done, void *arg, void *arg2);
int room_timer_stop(room_t *r, uint64_t timer_id);

/* ---- work threads: blocking calls off the I/O workers ---- */

/* A bounded pool of threads of its own, apart from every core: run may
 * block (a database, a file, a DNS lookup) without stalling any session's
 * I/O. Items wait in one FIFO queue of at most queue_limit items; a full
 * queue refuses at once (ENGINE_E_BUSY), it never grows. */
typedef struct work_pool work_pool_t;

/* Latency buckets: bucket i counts times below 2^i microseconds (bucket 0:
 * below 1 us), the last one everything longer. */
#define WORK_HISTOGRAM_BUCKETS 26

typedef struct work_pool_stats {
  int threads;
  uint32_t queue_limit;
  uint32_t queued;   /* waiting now */
  uint32_t running;  /* in run or finish now */
  uint64_t completed; /* finish returned */
  uint64_t rejected;  /* ENGINE_E_BUSY answers */
  /* Sums over completed items, in microseconds: from submit to the start
   * of run (queue wait), and run plus finish. */
  uint64_t wait_us_sum;
  uint64_t run_us_sum;
  uint64_t wait_histogram[WORK_HISTOGRAM_BUCKETS];
  uint64_t run_histogram[WORK_HISTOGRAM_BUCKETS];
} work_pool_stats_t;

/* threads <= 0 means one per CPU; queue_limit >= 1. */
int work_pool_create(int threads, uint32_t queue_limit, work_pool_t **out,
                     char *err, size_t err_len);
/* Queues run(arg) then finish(arg), both on the same pool thread, one
 * after the other; finish's job is to hand the result back to a serial
 * order (a session's post), so it should not block. Never runs on the
 * caller's thread. Returns ENGINE_OK; ENGINE_E_BUSY at once when
 * queue_limit items are waiting (nothing is queued then); ENGINE_E_CLOSED
 * once a drain began; ENGINE_E_INVAL without run. When it returns
 * ENGINE_OK, run and finish each run exactly once (unless the pool is
 * destroyed before the item started, see work_pool_destroy). */
int work_pool_submit(work_pool_t *pool, void (*run)(void *arg),
                     void (*finish)(void *arg), void *arg);
/* Stops taking work (submit answers ENGINE_E_CLOSED from now on) and waits
 * until nothing is queued or running, at most timeout_ms on the monotonic
 * clock. Returns 0, or -1 when work is left (see the stats). */
int work_pool_drain(work_pool_t *pool, uint32_t timeout_ms);
/* Stops the threads and frees the pool. After a drain that returned 0 it
 * joins them. Otherwise items not yet started are dropped: neither run nor
 * finish runs; drop(arg), if not NULL, runs for each instead, on the
 * caller's thread, to let go of what arg holds. The threads still in an
 * item are left to end it (run and finish complete) and free the pool
 * after them: a call stuck forever cannot hold the caller. Returns how many
 * items were dropped. */
uint32_t work_pool_destroy(work_pool_t *pool, void (*drop)(void *arg));
void work_pool_get_stats(work_pool_t *pool, work_pool_stats_t *out);
/* 1 on a thread of any work pool (for checks that blocking code is there). */
int work_pool_on_thread(void);

#endif /* IOCPHOST_ENGINE_H */
