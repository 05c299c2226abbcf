/*
 * Sessions: one TCP connection, its send queue, its unconsumed input, its
 * timers, and the serial order its callbacks run in.
 *
 * Everything that changes a session's state runs on its worker, inside a
 * completion: the receive, the send, the "kick" (start, flush, close
 * requests from any thread) and timers. Other threads only append to the
 * send queue or record a close request under the session's lock, then post
 * the kick. So callbacks never overlap and need no lock of their own.
 *
 * References (SPEC section 2): the session is born with one, the "open"
 * reference, dropped when its socket is closed. Every op in flight (recv,
 * send or connect, kick, each timer, each post) holds one more, taken when
 * it is issued and released at the end of its completion. The plugin's
 * acquire/release add to the same count. Memory goes at zero.
 *
 * Receiving costs no buffer while idle: the backend reads into its worker's
 * buffer, the handler consumes what it can, and only a remainder is copied
 * into a per-session buffer that is freed again once consumed. That buffer
 * never holds more than the bytes that arrived (a header declaring 65535
 * bytes costs 4), is bounded by max_recv_bytes, and must be consumed within
 * incomplete_timeout_ms: one internal timer per session, armed only while
 * input is kept, so complete packets cost no timer at all.
 *
 * Closing is graceful unless the peer failed: stop delivering input, flush
 * the queue, send FIN, call on_disconnected, then keep reading (and
 * discarding) until the peer's FIN, so the close never turns into a reset
 * because of unread input; a timer bounds both the flush and the linger
 * (close_timeout_ms, close_linger_ms).
 *
 * A service with a transport (engine.h: WebSocket, TLS) puts its layers
 * between the socket and the handler: received bytes pass up through them
 * before deliver_input, sent bytes down through them before the queue,
 * both under the session's lock; on_connected waits until every layer's
 * handshake is done (bounded by handshake_timeout_ms), and a graceful close
 * lets each layer write its closing bytes before the FIN. Sessions of other
 * services test has_transport once per receive and per send.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/log.h"

#define SEND_BUFS_MAX 64
#define SEND_NOW_BUFS 8 /* buffers of one send call that may go out at once */
#define CHUNK_MIN_ROOM 512

struct send_chunk {
  send_chunk_t *next;
  shared_buf_t *shared; /* when the bytes belong to a shared buffer */
  uint8_t *data;        /* next unsent byte */
  size_t len;           /* unsent bytes */
  size_t room;          /* free bytes after data + len (private chunks) */
  uint8_t bytes[];
};

/* What a session has only while bytes wait to be sent: allocated when the
 * first byte is queued, freed (under the lock) once the queue is empty and
 * no send is in flight. An idle session, and one whose sends go out at once
 * (enqueue's try-write), holds none of it. The send op in flight lives here
 * and holds its session (SPEC section 2), so the block is never freed under
 * it: on_send_done frees it, after the op completed. */
struct send_state {
  io_send_op_t op;
  send_chunk_t *head;
  send_chunk_t *tail;
  uint64_t queued_bytes;
  io_buf_t bufs[SEND_BUFS_MAX]; /* the gather list of the send in flight */
};

struct shared_buf {
  atomic_int refs;
  size_t len;
  uint8_t data[];
};


static atomic_uint_fast64_t next_session_id = 1;
/* The session whose input this worker is delivering right now: bytes it
 * sends at once are reported (on_sent) when its callback has returned. */
static _Thread_local session_t *delivering;

static void begin_close(session_t *s, int reason, int graceful);
static void on_kick(io_handle_t *h);
static void flush(session_t *s);
static void start_recv(session_t *s);
static uint64_t timer_start(session_t *s, uint32_t delay_ms,
                            uint32_t repeat_ms, session_fn fn, void *arg,
                            int internal);

static const strand_owner_ops_t session_strand_ops;
static void transport_start(session_t *s);
static void transport_receive(session_t *s, const uint8_t *data, size_t len);
static int transport_close_locked(session_t *s, int reason);
static void transport_free(session_t *s);

static size_t extra_offset(void) {
  return (sizeof(session_t) + 15) & ~(size_t)15;
}

static const service_options_t *opts_of(const session_t *s) {
  return service__options(s->service);
}

/* The session's own counts (`sessions`) and its service's (status). */
static void count_bytes(session_t *s, uint64_t in, uint64_t out) {
  if (in)
    atomic_fetch_add_explicit(&s->bytes_in, in, memory_order_relaxed);
  if (out)
    atomic_fetch_add_explicit(&s->bytes_out, out, memory_order_relaxed);
  service__count_bytes(s->service, in, out);
}

/* ---- references ---- */

void session__ref(session_t *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void free_chunk(send_chunk_t *c) {
  if (c->shared)
    shared_buf_release(c->shared);
  free(c);
}

/* Under the lock (or once nothing else can see the session): drops the
 * send side, its queued bytes with it. Never while a send is in flight. */
static void tx_free_locked(session_t *s) {
  send_state_t *tx = s->tx;
  if (!tx)
    return;
  send_chunk_t *c = tx->head;
  while (c) {
    send_chunk_t *next = c->next;
    free_chunk(c);
    c = next;
  }
  service__count_buffers(s->service, -(int64_t)tx->queued_bytes, 0);
  free(tx);
  s->tx = NULL;
}

/* Under the lock: the send side, allocated at the first byte queued. */
static send_state_t *tx_get_locked(session_t *s) {
  if (!s->tx)
    s->tx = calloc(1, sizeof *s->tx);
  return s->tx;
}

static uint64_t queued_bytes_locked(const session_t *s) {
  return s->tx ? s->tx->queued_bytes : 0;
}

static uint32_t kept_len(const session_t *s) {
  return s->kept ? s->kept->len : 0;
}

/* The kept input's capacity is counted in the service (metrics). Frees it
 * when cap is 0. Returns 0, or -1 when memory ran out (nothing changed). */
static int kept_resize(session_t *s, size_t cap) {
  uint32_t old = s->kept ? s->kept->cap : 0;
  if (cap == 0) {
    free(s->kept);
    s->kept = NULL;
  } else {
    kept_input_t *grown = realloc(s->kept, sizeof *grown + cap);
    if (!grown)
      return -1;
    if (!s->kept)
      grown->len = 0;
    grown->cap = (uint32_t)cap;
    s->kept = grown;
  }
  service__count_buffers(s->service, 0, (int64_t)cap - (int64_t)old);
  return 0;
}

static void destroy(session_t *s) {
  service_t *svc = s->service;
  const session_handler_t *h = opts_of(s)->factory.handler;
  if (h && h->on_free)
    h->on_free(s);
  if (s->has_transport)
    transport_free(s);
  tx_free_locked(s);
  kept_resize(s, 0);
  engine_lock_destroy(&s->lock);
  free(s);
  engine__live_add(-1);
  service__session_freed(svc);
}

session_t *session_acquire(session_t *s) {
  session__ref(s);
  return s;
}

void session_release(session_t *s) {
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
    destroy(s);
}

/* ---- creation ---- */

session_t *session__new(service_t *svc) {
  const service_options_t *o = service__options(svc);
  void *context = NULL;
  size_t extra = 0;
  if (o->factory.prepare) {
    extra = o->factory.prepare(o->factory.ctx, &context);
    if (extra == (size_t)-1)
      return NULL;
  }
  /* One block: the session, the factory's extra state, and the tail for
   * a client session or one with transport layers. */
  int has_tail = o->type == SERVICE_CLIENT || o->transport_layers > 0;
  size_t tail_at = extra_offset() + ((extra + 7) & ~(size_t)7);
  size_t size = has_tail ? tail_at + sizeof(session_tail_t) +
                               o->transport_layers * sizeof(void *)
                         : extra_offset() + extra;
  session_t *s = calloc(1, size);
  if (!s)
    return NULL;
  s->extra_size = (uint32_t)extra;
  if (has_tail)
    s->tail = (session_tail_t *)((char *)s + tail_at);
  s->has_transport = o->transport_layers > 0;
  atomic_init(&s->refs, 1); /* the open reference */
  s->id = atomic_fetch_add_explicit(&next_session_id, 1, memory_order_relaxed);
  s->service = svc;
  s->context = context;
  s->handle.socket = IO_INVALID_SOCKET;
  engine_lock_init(&s->lock);
  strand_init(&s->strand);
  engine__live_add(1);
  /* The service outlives its sessions: service_wait_closed waits for this
   * count, and destroy() still reads the service's options. */
  service__session_allocated(svc);
  return s;
}

void session__free_unattached(session_t *s) { session_release(s); }

/* Under the lock: the kick runs once more, holding a reference until it
 * ran (on_kick releases it). */
static void kick_locked(session_t *s) {
  if (s->kick_pending)
    return;
  s->kick_pending = 1;
  session__ref(s);
  io_wake(&s->handle);
}

/* A flush or start: while a send is in flight, its completion flushes. */
static void post_kick_locked(session_t *s) {
  if (!s->sending)
    kick_locked(s);
}

/* Drops the socket and the open reference; s may be gone afterwards. */
static void drop_socket(session_t *s) {
  io_handle_close(&s->handle);
  session_release(s);
}

/* ---- timers and posts: the session's strand (strand.c) ---- */

static void strand_ref(void *owner) { session__ref(owner); }
static void strand_release(void *owner) { session_release(owner); }

/* Under the session's lock. The plugin's timers and posts may start until
 * a close is asked for (also before on_connected), and run only while the
 * session is open. */
static int strand_may_start(void *owner) {
  session_t *s = owner;
  return !s->close_request && s->state < SESSION_CLOSING;
}

static int strand_may_run(void *owner) {
  session_t *s = owner;
  return s->state == SESSION_OPEN && !s->close_request;
}

static const strand_owner_ops_t session_strand_ops = {
    .ref = strand_ref,
    .release = strand_release,
    .may_start = strand_may_start,
    .may_run = strand_may_run,
    .room = 0,
    .strand_at = offsetof(session_t, strand),
    .handle_at = offsetof(session_t, handle),
    .lock_at = offsetof(session_t, lock),
};

/* Worker only: every timer stops (the engine's own too). */
static void cancel_timers(session_t *s) {
  strand_cancel_timers(&s->strand, &session_strand_ops);
}

/* The engine's own timers: they run while closing too. */
static uint64_t timer_start(session_t *s, uint32_t delay_ms,
                            uint32_t repeat_ms, session_fn fn, void *arg,
                            int internal) {
  strand_call_t call = {.kind = STRAND_SESSION1, .fn.session1 = fn,
                        .arg = arg};
  return strand_timer_start(&s->strand, &session_strand_ops, delay_ms,
                            repeat_ms, &call, internal);
}

uint64_t session_timer_start(session_t *s, uint32_t delay_ms,
                             uint32_t repeat_ms, session_fn fn, void *arg) {
  if (!fn)
    return 0;
  return timer_start(s, delay_ms, repeat_ms, fn, arg, 0);
}

uint64_t session_timer_start2(session_t *s, uint32_t delay_ms,
                              uint32_t repeat_ms, session_fn2 fn,
                              session_fn2 done, void *arg, void *arg2) {
  if (!fn)
    return 0;
  strand_call_t call = {.kind = STRAND_SESSION2, .fn.session2 = fn,
                        .done.session = done, .arg = arg, .arg2 = arg2};
  return strand_timer_start(&s->strand, &session_strand_ops, delay_ms,
                            repeat_ms, &call, 0);
}

int session_timer_stop(session_t *s, uint64_t timer_id) {
  return strand_timer_stop(&s->strand, &session_strand_ops, timer_id);
}

int session_post(session_t *s, session_fn fn, void *arg) {
  if (!fn)
    return ENGINE_E_INVAL;
  strand_call_t call = {.kind = STRAND_SESSION1, .fn.session1 = fn,
                        .arg = arg};
  return strand_post(&s->strand, &session_strand_ops, &call, 0);
}

int session_post2(session_t *s, session_fn2 fn, session_fn2 done, void *arg,
                  void *arg2) {
  if (!fn)
    return ENGINE_E_INVAL;
  strand_call_t call = {.kind = STRAND_SESSION2, .fn.session2 = fn,
                        .done.session = done, .arg = arg, .arg2 = arg2};
  return strand_post(&s->strand, &session_strand_ops, &call, 0);
}

int session_post_always(session_t *s, session_fn2 fn, void *arg, void *arg2) {
  if (!fn)
    return ENGINE_E_INVAL;
  strand_call_t call = {.kind = STRAND_SESSION2, .fn.session2 = fn,
                        .arg = arg, .arg2 = arg2};
  return strand_post(&s->strand, &session_strand_ops, &call, 1);
}

/* ---- idle timeout ---- */

/* No timer per session (its record would be 144 bytes in every idle
 * session, issue 18): the service sweeps its sessions (service.c) and asks
 * those that look quiet to check here, on their worker. */
static uint32_t quiet_ms(const session_t *s) {
  return (uint32_t)clock_now_ms() -
         atomic_load_explicit(&s->last_recv_ms, memory_order_relaxed);
}

static void note_receive(session_t *s) {
  atomic_store_explicit(&s->last_recv_ms, (uint32_t)clock_now_ms(),
                        memory_order_relaxed);
}

void session__idle_check(session_t *s, uint32_t now, uint32_t idle) {
  uint32_t last = atomic_load_explicit(&s->last_recv_ms, memory_order_relaxed);
  /* A receive stamped after the sweep read its clock is "just now", not
   * 49 days ago: the difference is negative, not huge. */
  int32_t quiet = (int32_t)(now - last);
  if (quiet < 0 || (uint32_t)quiet < idle)
    return;
  engine_lock(&s->lock);
  if (s->state == SESSION_OPEN && !s->close_request && !s->idle_check) {
    s->idle_check = 1;
    kick_locked(s);
  }
  engine_unlock(&s->lock);
}

/* Worker: the kick's part of the idle check. */
static void check_idle(session_t *s) {
  if (s->state == SESSION_OPEN && quiet_ms(s) >= opts_of(s)->idle_timeout_ms)
    begin_close(s, REASON_IDLE_TIMEOUT, 1);
}

/* ---- incomplete input ---- */

static void check_incomplete(session_t *s, void *arg);

static void arm_incomplete(session_t *s, uint64_t delay_ms) {
  if (timer_start(s, (uint32_t)delay_ms, 0, check_incomplete, NULL, 1) != 0)
    s->incomplete_armed = 1;
}

/* Fires at the earliest moment the oldest kept byte could be overdue; input
 * consumed meanwhile moved kept->since_ms on, so it re-arms for the rest
 * (or not at all once nothing is kept). */
static void check_incomplete(session_t *s, void *arg) {
  uint32_t limit = opts_of(s)->incomplete_timeout_ms;
  s->incomplete_armed = 0;
  if (s->state != SESSION_OPEN || kept_len(s) == 0 || !limit)
    return;
  uint64_t now = clock_now_ms();
  uint64_t deadline = s->kept->since_ms + limit;
  if (now < deadline) {
    arm_incomplete(s, deadline - now);
    return;
  }
  char peer[ADDRESS_TEXT_MAX] = "?";
  address_format(&s->peer, peer, sizeof peer);
  log_write(LOG_WARN, "session",
            "service %s: session %llu (%s) kept %u unconsumed bytes (an "
            "incomplete packet or message) for longer than "
            "incomplete_timeout_ms %u: disconnecting (protocol_error)",
            service_name(s->service), (unsigned long long)s->id, peer,
            s->kept->len, limit);
  begin_close(s, REASON_PROTOCOL_ERROR, 1);
}

/* ---- the kick: start, flush and close requests ---- */

/* A transport session is receiving already (its handshake needed it). */
static void open_session(session_t *s, int start_receiving) {
  const service_options_t *o = opts_of(s);
  note_receive(s); /* idle time counts from here (before the sweep sees it) */
  engine_lock(&s->lock);
  s->state = SESSION_OPEN;
  engine_unlock(&s->lock);
  s->opened = 1;
  if (s->tail && s->tail->slot)
    service__client_opened(s->tail->slot);
  o->factory.handler->on_connected(s);
  if (start_receiving)
    start_recv(s);
}

/* Worker only: on_sent for bytes that went out at once (see enqueue). */
static void report_sent(session_t *s) {
  size_t sent = s->sent_unreported;
  if (!sent)
    return;
  s->sent_unreported = 0;
  if (s->state == SESSION_OPEN)
    opts_of(s)->factory.handler->on_sent(s, sent);
}

static void on_kick(io_handle_t *h) {
  session_t *s = container_of(h, session_t, handle);
  engine_lock(&s->lock);
  s->kick_pending = 0;
  int request = s->close_request;
  int abort_now = s->close_abort;
  int idle_check = s->idle_check;
  s->idle_check = 0;
  engine_unlock(&s->lock);
  /* A session that was accepted or connected before its service's stop
   * began, and opens after: the stop has told the plugin (on_stopping), so
   * no on_connected may follow it. It ends quietly. */
  if (s->state == SESSION_OPENING && !request && service__stopping(s->service)) {
    request = REASON_HOST_STOPPING;
    abort_now = 0;
  }
  if (s->state == SESSION_OPENING && !request) {
    /* A transport's handshake runs first; on_connected follows when it is
     * done (transport_receive). Later kicks (its flushes) start nothing. */
    if (!s->has_transport)
      open_session(s, 1);
    else if (!s->transport_started)
      transport_start(s);
    engine_lock(&s->lock);
    request = s->close_request;
    abort_now = s->close_abort;
    engine_unlock(&s->lock);
  }
  if (request)
    begin_close(s, request, !abort_now);
  else if (idle_check)
    check_idle(s);
  report_sent(s);
  flush(s);
  session_release(s);
}

static int request_close(session_t *s, int reason, int abort_now) {
  if (!reason)
    return ENGINE_E_INVAL;
  engine_lock(&s->lock);
  if (s->state >= SESSION_CLOSED ||
      (s->close_request && (!abort_now || s->close_abort))) {
    /* Read the state before unlocking: the worker may be changing it. */
    int rc = s->state >= SESSION_CLOSED ? ENGINE_E_CLOSED : ENGINE_OK;
    engine_unlock(&s->lock);
    return rc;
  }
  if (!s->close_request)
    s->close_request = (uint8_t)reason;
  if (abort_now)
    s->close_abort = 1;
  /* The kick must run even while a send is in flight. */
  kick_locked(s);
  engine_unlock(&s->lock);
  return ENGINE_OK;
}

int session_disconnect(session_t *s, session_reason_t reason) {
  return request_close(s, reason, 0);
}

int session_abort(session_t *s, session_reason_t reason) {
  return request_close(s, reason, 1);
}

/* ---- attaching and connecting ---- */

int session__attach(session_t *s, io_socket_t sock, int worker_hint) {
  const service_options_t *o = opts_of(s);
  int rc = io_handle_open(service_core(s->service)->io, &s->handle, sock,
                          worker_hint);
  if (rc < 0) {
    io_socket_close(sock);
    s->handle.socket = IO_INVALID_SOCKET;
    s->handle.closed = 1;
    session_release(s);
    return rc;
  }
  if (o->tcp_nodelay && !IO_ACCEPT_INHERITS_NODELAY)
    io_socket_set_nodelay(sock, 1);
  s->state = SESSION_OPENING;
  s->connected_ms = clock_now_ms();
  /* Once registered, a stop on another thread may abort the session, and
   * its close may release the open reference before we post the kick:
   * hold one of our own across the gap (a connected client session holds
   * its connect's reference there). */
  session__ref(s);
  service__register(s->service, s);
  engine_lock(&s->lock);
  post_kick_locked(s);
  engine_unlock(&s->lock);
  session_release(s);
  return 0;
}

static void on_connect_done(io_op_t *op, int status, size_t bytes) {
  /* The connect op is in the tail, at no fixed place: the handle it was
   * issued on is the session's. */
  session_t *s = container_of(op->handle, session_t, handle);
  engine_lock(&s->lock);
  if (status == 0 && s->close_request)
    status = IO_ECANCELED;
  engine_unlock(&s->lock);
  if (status < 0) {
    engine_lock(&s->lock);
    s->close_request = REASON_CONNECT_FAILED;
    s->state = SESSION_CLOSED;
    engine_unlock(&s->lock);
    s->close_started = 1;
    service__connect_done(s->tail->slot, s, status);
    if (!s->handle.closed)
      drop_socket(s);
    else
      session_release(s); /* the open reference */
    session_release(s);   /* the connect's reference */
    return;
  }
  if (opts_of(s)->tcp_nodelay)
    io_socket_set_nodelay(s->handle.socket, 1);
  /* Other threads read the state under the lock (session_is_open). */
  engine_lock(&s->lock);
  s->state = SESSION_OPENING;
  engine_unlock(&s->lock);
  s->connected_ms = clock_now_ms();
  service__register(s->service, s);
  service__connect_done(s->tail->slot, s, 0);
  engine_lock(&s->lock);
  post_kick_locked(s);
  engine_unlock(&s->lock);
  session_release(s);
}

void session__connect(session_t *s, io_socket_t sock, int worker_hint) {
  io_connect_op_t *c = &s->tail->connect_op;
  c->op.complete = on_connect_done;
  c->op.handle = &s->handle;
  s->peer = opts_of(s)->address; /* a client session's peer is its target */
  session__ref(s); /* the connect's reference */
  int rc = io_handle_open(service_core(s->service)->io, &s->handle, sock,
                          worker_hint);
  if (rc < 0) {
    io_socket_close(sock);
    s->handle.socket = IO_INVALID_SOCKET;
    s->handle.closed = 1;
    io_post(&s->handle, &c->op, rc);
    return;
  }
  c->op.type = IO_OP_CONNECT;
  c->op.status = 0;
  c->to = &opts_of(s)->address;
  io_submit(&c->op);
}

/* ---- receiving ---- */

static void deliver_input(session_t *s, const uint8_t *in, size_t n);

/* A receive or send failed: the network's doing (a reset, an unreachable
 * peer, a keepalive that timed out) is peer_reset; a shortage or fault of
 * ours (no memory, no provided buffer, no submission slot, an I/O error)
 * is io_error, and worth a line to the operator: the peer did nothing. */
static uint64_t io_error_log_ms, io_error_log_suppressed;

static int reason_of_failure(session_t *s, int status, const char *what) {
  switch (-status) {
  case EIO:
  case ENOMEM:
  case ENOBUFS:
  case EBUSY:
  case EBADF:
  case EINVAL:
  case EFAULT:
  case EMFILE:
  case ENFILE:
    break;
  default:
    return REASON_PEER_RESET;
  }
  if (log_ratelimit(&io_error_log_ms, &io_error_log_suppressed)) {
    char peer[ADDRESS_TEXT_MAX] = "?";
    address_format(&s->peer, peer, sizeof peer);
    log_write(LOG_WARN, "session",
              "service %s: session %llu (%s): %s failed here, not at the "
              "peer: %s; disconnecting (io_error)",
              service_name(s->service), (unsigned long long)s->id, peer, what,
              io_strerror(status));
  }
  return REASON_IO_ERROR;
}

static void on_recv_done(io_handle_t *h, int status, const uint8_t *data,
                         size_t bytes) {
  session_t *s = container_of(h, session_t, handle);
  if (status == IO_ECANCELED) {
    session_release(s);
    return;
  }
  if (s->lingering) {
    if (status < 0 || bytes == 0) {
      s->lingering = 0;
      cancel_timers(s);
      drop_socket(s);
    } else {
      start_recv(s);
    }
    session_release(s);
    return;
  }
  if (status < 0) {
    begin_close(s, reason_of_failure(s, status, "a receive"), 0);
  } else if (bytes == 0) {
    s->peer_eof = 1;
    begin_close(s, REASON_PEER_CLOSED, 1);
  } else {
    /* The next receive is armed before these bytes are delivered, so an
     * open session always has one (and the reference it holds), also when
     * the handler closes it: a backend then never finds its handle with
     * requests in the kernel and nothing to keep it alive (io_uring.c).
     * The bytes stay valid: deliveries are serial, the next one comes
     * after this call. Reading goes on once a close was asked for: input
     * is no longer delivered, but the socket stays drained and the linger
     * after our FIN needs a receive to see the peer's. */
    start_recv(s);
    session__receive(s, data, bytes);
  }
  session_release(s);
}

void session__receive(session_t *s, const uint8_t *data, size_t len) {
  if (s->has_transport) {
    transport_receive(s, data, len);
    return;
  }
  if (s->state != SESSION_OPEN || !session_is_open(s))
    return;
  count_bytes(s, len, 0);
  note_receive(s);
  delivering = s;
  deliver_input(s, data, len);
  delivering = NULL;
  report_sent(s);
}

static void start_recv(session_t *s) {
  session__ref(s);
  io_recv_start(&s->handle);
}

const io_handle_events_t session__io_events = {on_recv_done, on_kick};

static int keep_pending(session_t *s, const uint8_t *data, size_t len) {
  if (len == 0)
    return kept_resize(s, 0);
  /* Is data inside the kept buffer (what was kept before, partly used)?
   * No buffer yet: then it cannot be (and NULL + 0 is undefined). */
  kept_input_t *k = s->kept;
  if (k && data >= k->bytes && data < k->bytes + k->cap) {
    memmove(k->bytes, data, len);
  } else {
    if ((!k || len > k->cap) && kept_resize(s, len) != 0)
      return -1;
    memcpy(s->kept->bytes, data, len);
  }
  s->kept->len = (uint32_t)len;
  return 0;
}

static void deliver_input(session_t *s, const uint8_t *in, size_t n) {
  const service_options_t *o = opts_of(s);
  const uint8_t *data = in;
  size_t len = n;
  int had_pending = kept_len(s) > 0;
  int consumed = 0;
  if (had_pending) {
    size_t need = (size_t)s->kept->len + n;
    if (need > s->kept->cap) {
      size_t cap = (size_t)s->kept->cap * 2;
      if (cap < need)
        cap = need;
      if (kept_resize(s, cap) != 0) {
        begin_close(s, REASON_IO_ERROR, 0);
        return;
      }
    }
    memcpy(s->kept->bytes + s->kept->len, in, n);
    data = s->kept->bytes;
    len = need;
  }
  for (;;) {
    size_t used = o->factory.handler->on_recv(s, data, len);
    if (used > len)
      used = len;
    if (used)
      consumed = 1;
    data += used;
    len -= used;
    if (len == 0 || !session_is_open(s))
      break;
    if (len < o->max_recv_bytes)
      break;
    if (used == 0) {
      char peer[ADDRESS_TEXT_MAX] = "?";
      address_format(&s->peer, peer, sizeof peer);
      log_write(LOG_WARN, "session",
                "service %s: session %llu (%s) left %zu unconsumed bytes, "
                "reaching max_recv_bytes %u: disconnecting (protocol_error)",
                service_name(s->service), (unsigned long long)s->id, peer, len,
                o->max_recv_bytes);
      begin_close(s, REASON_PROTOCOL_ERROR, 1);
      break;
    }
    /* Something was consumed and a full buffer remains: present it again
     * before reading more, so the kept input never grows past the limit. */
  }
  if (!session_is_open(s))
    len = 0;
  if (keep_pending(s, data, len) != 0) {
    begin_close(s, REASON_IO_ERROR, 0);
    return;
  }
  if (len == 0)
    return;
  /* What is kept now started arriving in this read, unless nothing was
   * consumed from what was kept before. */
  if (!had_pending || consumed)
    s->kept->since_ms = clock_now_ms();
  if (o->incomplete_timeout_ms && !s->incomplete_armed) {
    uint64_t now = clock_now_ms();
    uint64_t deadline = s->kept->since_ms + o->incomplete_timeout_ms;
    arm_incomplete(s, deadline > now ? deadline - now : 0);
  }
}

/* ---- sending ---- */

static void on_send_done(io_op_t *op, int status, size_t bytes);

/* Fills one gather buffer. Returns 0 when the piece had to be cut (a
 * WSABUF's length is a ULONG): nothing after it may join the same call,
 * since what a partial write took must be a prefix of the bytes. */
static int fill_buf(io_buf_t *b, const void *data, size_t len) {
#ifdef _WIN32
  int whole = len <= ULONG_MAX;
  b->buf = (CHAR *)data;
  b->len = whole ? (ULONG)len : ULONG_MAX;
  return whole;
#else
  b->iov_base = (void *)data;
  b->iov_len = len;
  return 1;
#endif
}

static void flush(session_t *s) {
  engine_lock(&s->lock);
  if (s->sending || s->handle.closed || s->state == SESSION_NEW) {
    engine_unlock(&s->lock);
    return;
  }
  send_state_t *tx = s->tx;
  if (!tx) {
    engine_unlock(&s->lock);
    if (s->state == SESSION_CLOSING && s->close_started)
      begin_close(s, s->reason, 1); /* drained: go on closing */
    return;
  }
  int count = 0;
  for (send_chunk_t *c = tx->head; c && count < SEND_BUFS_MAX; c = c->next) {
    if (!fill_buf(&tx->bufs[count++], c->data, c->len))
      break;
  }
  s->sending = 1;
  session__ref(s);
  tx->op.op.type = IO_OP_SEND;
  tx->op.op.handle = &s->handle;
  tx->op.op.status = 0;
  tx->op.op.complete = on_send_done;
  tx->op.bufs = tx->bufs;
  tx->op.count = count;
  engine_unlock(&s->lock);
  io_submit(&tx->op.op);
}

static void on_send_done(io_op_t *op, int status, size_t bytes) {
  send_state_t *tx = container_of(op, send_state_t, op.op);
  session_t *s = container_of(op->handle, session_t, handle);
  engine_lock(&s->lock);
  s->sending = 0;
  size_t left = status == 0 ? bytes : 0;
  while (left > 0 && tx->head) {
    send_chunk_t *c = tx->head;
    if (left < c->len) {
      c->data += left;
      c->len -= left;
      left = 0;
      break;
    }
    left -= c->len;
    tx->head = c->next;
    if (!tx->head)
      tx->tail = NULL;
    free_chunk(c);
  }
  if (status == 0) {
    tx->queued_bytes -= bytes;
    service__count_buffers(s->service, -(int64_t)bytes, 0);
  }
  /* Drained: the send side goes until bytes wait again. (What an abort
   * left behind a send in flight stays until destroy: flush sends no more
   * once the socket is closed.) */
  if (!tx->head)
    tx_free_locked(s);
  engine_unlock(&s->lock);
  if (status < 0) {
    if (status != IO_ECANCELED)
      begin_close(s, reason_of_failure(s, status, "a send"), 0);
    session_release(s);
    return;
  }
  count_bytes(s, 0, bytes);
  const session_handler_t *h = opts_of(s)->factory.handler;
  if (h->on_sent && s->state == SESSION_OPEN)
    h->on_sent(s, bytes);
  flush(s);
  session_release(s);
}

/* Appends under the lock; the caller has checked the limit. */
static int append_locked(send_state_t *tx, const session_buf_t *bufs,
                         size_t count, size_t total) {
  send_chunk_t *tail = tx->tail;
  if (tail && !tail->shared && tail->room >= total) {
    uint8_t *end = tail->data + tail->len;
    for (size_t i = 0; i < count; i++) {
      memcpy(end, bufs[i].data, bufs[i].len);
      end += bufs[i].len;
    }
    tail->len += total;
    tail->room -= total;
    return 0;
  }
  size_t cap = total < CHUNK_MIN_ROOM ? CHUNK_MIN_ROOM : total;
  send_chunk_t *c = malloc(sizeof *c + cap);
  if (!c)
    return -1;
  c->next = NULL;
  c->shared = NULL;
  c->data = c->bytes;
  c->len = 0;
  for (size_t i = 0; i < count; i++) {
    memcpy(c->bytes + c->len, bufs[i].data, bufs[i].len);
    c->len += bufs[i].len;
  }
  c->room = cap - total;
  if (tail)
    tail->next = c;
  else
    tx->head = c;
  tx->tail = c;
  return 0;
}

/* Under the lock, with the session accepting sends: the bytes go to the
 * socket at once or into the queue. Returns ENGINE_OK, ENGINE_E_NOMEM, or
 * ENGINE_E_QUEUE_FULL; on either error *partial says part of the bytes
 * went out already, and the caller unlocks, then gives up the session
 * (queue_full, stream_broken). */
static int enqueue_locked(session_t *s, const session_buf_t *bufs,
                          size_t count, shared_buf_t *shared, size_t total,
                          int *partial) {
  /* Like libuv's try-write: on the session's worker, with nothing queued
   * or in flight, the bytes go to the socket at once, from the caller's
   * buffer; only what the socket does not take is copied into the queue.
   * Echo-like traffic then costs no allocation, no copy and no op. It is
   * tried before the limit is looked at: send_queue_limit_bytes bounds what
   * waits unsent, so a send larger than it still goes out whole when the
   * socket takes the excess. (A transport's handshake answer goes out the
   * same way, before the session is open.) */
  size_t sent = 0;
  /* What went out at once is owed to on_sent in a 32-bit count: a send
   * that could overflow it (4 GiB unreported within one callback) takes
   * the queue, whose completions report as they go. */
  if (!s->tx && !s->sending &&
      (s->state == SESSION_OPEN ||
       (s->state == SESSION_OPENING && s->transport_started)) &&
      io_handle_on_worker(&s->handle) &&
      total <= UINT32_MAX - s->sent_unreported) {
    io_buf_t iov[SEND_NOW_BUFS];
    size_t n_iov = shared ? 1 : count;
    if (n_iov <= SEND_NOW_BUFS) {
      for (size_t i = 0; i < n_iov; i++) {
        const void *d = shared ? shared->data : bufs[i].data;
        size_t l = shared ? shared->len : bufs[i].len;
        if (!fill_buf(&iov[i], d, l))
          n_iov = i + 1;
      }
      int n = io_send_now(&s->handle, iov, (int)n_iov);
      if (n > 0) {
        sent = (size_t)n;
        count_bytes(s, 0, sent);
        if (opts_of(s)->factory.handler->on_sent) {
          /* Reported after the running callback: by session__receive
           * when it is this session's, otherwise by the kick. */
          s->sent_unreported += (uint32_t)sent;
          if (s != delivering)
            post_kick_locked(s);
        }
      }
      /* Errors other than "full" surface through the send op below. */
    }
  }
  if (sent == total)
    return ENGINE_OK;
  uint64_t limit = opts_of(s)->send_queue_limit_bytes;
  if (total - sent > limit ||
      queued_bytes_locked(s) > limit - (total - sent)) {
    *partial = sent > 0;
    return ENGINE_E_QUEUE_FULL;
  }
  /* Out of memory below after part went out: the caller resets. */
  *partial = sent > 0;
  send_state_t *tx = tx_get_locked(s);
  if (!tx)
    return ENGINE_E_NOMEM;
  int rc;
  if (shared && sent > 0) {
    /* A shared buffer the socket took part of: copy the rest. */
    session_buf_t rest = {shared->data + sent, shared->len - sent};
    shared = NULL;
    bufs = &rest;
    count = 1;
    total -= sent;
    sent = 0;
    rc = append_locked(tx, bufs, count, total);
  } else if (shared) {
    send_chunk_t *c = malloc(sizeof *c);
    rc = c ? 0 : -1;
    if (c) {
      atomic_fetch_add_explicit(&shared->refs, 1, memory_order_relaxed);
      c->next = NULL;
      c->shared = shared;
      c->data = shared->data;
      c->len = shared->len;
      c->room = 0;
      if (tx->tail)
        tx->tail->next = c;
      else
        tx->head = c;
      tx->tail = c;
    }
  } else {
    /* Skip what the socket already took. */
    session_buf_t rest[SEND_NOW_BUFS];
    if (sent > 0) {
      size_t k = 0, skip = sent;
      while (skip >= bufs[k].len)
        skip -= bufs[k++].len;
      for (size_t i = k; i < count; i++) {
        rest[i - k].data = (const uint8_t *)bufs[i].data + (i == k ? skip : 0);
        rest[i - k].len = bufs[i].len - (i == k ? skip : 0);
      }
      bufs = rest;
      count -= k;
      total -= sent;
    }
    rc = append_locked(tx, bufs, count, total);
  }
  if (rc != 0) {
    if (!tx->head)
      tx_free_locked(s); /* made for these bytes only */
    return ENGINE_E_NOMEM;
  }
  tx->queued_bytes += total;
  service__count_buffers(s->service, (int64_t)total, 0);
  post_kick_locked(s);
  return ENGINE_OK;
}

/* After enqueue_locked refused for the limit, unlocked: one log line and
 * the session ends. */
static void queue_full(session_t *s, int partial) {
  char peer[ADDRESS_TEXT_MAX] = "?";
  address_format(&s->peer, peer, sizeof peer);
  log_write(LOG_WARN, "session",
            "service %s: session %llu (%s) would queue more than "
            "send_queue_limit_bytes %llu (a slow reader, or one send "
            "larger than the limit): disconnecting (send_queue_full)",
            service_name(s->service), (unsigned long long)s->id, peer,
            (unsigned long long)opts_of(s)->send_queue_limit_bytes);
  /* Part of this call's bytes went out, the rest never will: a FIN
   * would tell the peer the stream ended whole. */
  if (partial)
    io_handle_reset_on_close(&s->handle);
  session_abort(s, REASON_SEND_QUEUE_FULL);
}

static int transport_encode_locked(session_t *s, const session_buf_t *bufs,
                                   size_t count, shared_buf_t *shared,
                                   session_buf_t *encoded);

/* Memory ran out after part of a send went out, or after the layers had
 * encoded it (a TLS record's sequence number moved on): the stream lacks
 * bytes the peer would need, so it must not read what follows as whole. */
static void stream_broken(session_t *s) {
  char peer[ADDRESS_TEXT_MAX] = "?";
  address_format(&s->peer, peer, sizeof peer);
  log_write(LOG_ERROR, "session",
            "service %s: session %llu (%s): out of memory queueing a send "
            "that was partly written or already encoded: resetting",
            service_name(s->service), (unsigned long long)s->id, peer);
  /* Any thread may be here (a plugin's send): the socket is the worker's,
   * which may be closing it now, so the worker's close does the reset. */
  engine_lock(&s->lock);
  s->reset_asked = 1;
  engine_unlock(&s->lock);
  session_abort(s, REASON_LOCAL);
}

/* encoded: shared holds bytes session__transport_share encoded already. */
static int enqueue(session_t *s, const session_buf_t *bufs, size_t count,
                   shared_buf_t *shared, int encoded) {
  size_t total = 0;
  if (shared) {
    total = shared->len;
  } else {
    for (size_t i = 0; i < count; i++) {
      if (!bufs[i].data && bufs[i].len)
        return ENGINE_E_INVAL;
      /* Lengths adding up past SIZE_MAX describe no memory there is. */
      if (bufs[i].len > SIZE_MAX - total)
        return ENGINE_E_INVAL;
      total += bufs[i].len;
    }
  }
  if (total == 0)
    return ENGINE_OK;
  engine_lock(&s->lock);
  if (s->close_request || s->state >= SESSION_CLOSING) {
    engine_unlock(&s->lock);
    return ENGINE_E_CLOSED;
  }
  session_buf_t wire;
  if (s->has_transport) {
    /* Before its handshake is done (on_connected) a transport session
     * takes no sends, nor after a layer ended the stream (a close frame
     * went out). Encoding under the lock keeps concurrent senders' frames
     * (or records) whole and in the order they queue. */
    if (!s->transport_ready || s->transport_closed) {
      engine_unlock(&s->lock);
      return ENGINE_E_CLOSED;
    }
    if (!encoded) {
      int rc = transport_encode_locked(s, bufs, count, shared, &wire);
      if (rc != 0) {
        engine_unlock(&s->lock);
        if (rc == ENGINE_E_NOMEM)
          stream_broken(s);
        return rc;
      }
      bufs = &wire;
      count = 1;
      shared = NULL;
      total = wire.len;
    }
  }
  int partial = 0;
  int rc = enqueue_locked(s, bufs, count, shared, total, &partial);
  engine_unlock(&s->lock);
  if (rc == ENGINE_E_QUEUE_FULL)
    queue_full(s, partial);
  else if (rc == ENGINE_E_NOMEM && (partial || s->has_transport))
    stream_broken(s);
  return rc;
}

int session_send(session_t *s, const void *data, size_t len) {
  session_buf_t b = {data, len};
  return enqueue(s, &b, 1, NULL, 0);
}

int session_sendv(session_t *s, const session_buf_t *bufs, size_t count) {
  return enqueue(s, bufs, count, NULL, 0);
}

int session_send_shared(session_t *s, shared_buf_t *buf) {
  return enqueue(s, NULL, 0, buf, 0);
}

int session__send_encoded(session_t *s, shared_buf_t *encoded) {
  return enqueue(s, NULL, 0, encoded, 1);
}

/* ---- closing ---- */

/* Reasons under which a plugin may assume its queued bytes were delivered. */
static int claims_clean_end(int reason) {
  return reason == REASON_PEER_CLOSED || reason == REASON_LOCAL;
}

static void on_close_timeout(session_t *s, void *arg) {
  if (s->lingering) {
    s->lingering = 0;
    drop_socket(s);
  } else if (s->state == SESSION_CLOSING) {
    /* The peer did not take what was queued in time. The bytes are lost,
     * so a reason that claims a clean end must not stay (SPEC section 3):
     * it becomes a slow reader. Other reasons already say it failed. */
    int reason = s->reason;
    if (claims_clean_end(reason)) {
      reason = REASON_SEND_QUEUE_FULL;
      engine_lock(&s->lock);
      unsigned long long left = (unsigned long long)queued_bytes_locked(s);
      engine_unlock(&s->lock);
      char peer[ADDRESS_TEXT_MAX] = "?";
      address_format(&s->peer, peer, sizeof peer);
      log_write(LOG_WARN, "session",
                "service %s: session %llu (%s) closing (%s) did not take its "
                "last %llu queued bytes within %u ms: disconnecting "
                "(send_queue_full)",
                service_name(s->service), (unsigned long long)s->id, peer,
                session_reason_name(s->reason), left,
                opts_of(s)->close_timeout_ms);
    }
    begin_close(s, reason, 0);
  }
}

static void finish_close(session_t *s, int graceful) {
  const service_options_t *o = opts_of(s);
  /* After the peer's FIN the socket is closed right below, and close()
   * sends our FIN: a shutdown first would be one more system call. */
  if (graceful && !s->peer_eof)
    io_handle_shutdown_write(&s->handle);
  engine_lock(&s->lock);
  s->state = SESSION_CLOSED;
  engine_unlock(&s->lock);
  cancel_timers(s);
  /* Out of the service's set (and counters) first: whoever sees
   * on_disconnected's effects must not still find the session open in
   * service_find_session, a broadcast or the stats. */
  service__unregister(s->service, s, s->reason);
  /* A transport session whose handshake failed never heard on_connected. */
  if (s->opened)
    o->factory.handler->on_disconnected(s, (session_reason_t)s->reason);
  if (s->tail && s->tail->slot)
    service__client_closed(s->tail->slot, s);
  if (graceful && !s->peer_eof && s->handle.socket != IO_INVALID_SOCKET &&
      o->close_linger_ms > 0) {
    /* Our FIN is out; read until the peer's, bounded in time. (A session
     * with no socket, as tests and the fuzzer make, has nothing to drain;
     * a close_linger_ms of 0 asks for no wait.) */
    s->lingering = 1;
    timer_start(s, o->close_linger_ms, 0, on_close_timeout, NULL, 1);
  } else {
    drop_socket(s);
  }
}

static void begin_close(session_t *s, int reason, int graceful) {
  engine_lock(&s->lock);
  if (!s->close_request)
    s->close_request = (uint8_t)reason;
  /* A reason asked for earlier (from a callback or another thread, with
   * the kick still on its way) wins over what happened since: a peer's FIN
   * or reset arriving right after a protocol_error or send_queue_full. */
  int first = s->close_request;
  if (!graceful)
    s->close_abort = 1;
  engine_unlock(&s->lock);
  if (s->state >= SESSION_CLOSED)
    return;
  if (s->state == SESSION_NEW) {
    /* A connect in flight: cancelling it ends the session through
     * on_connect_done, which tells the client slot. */
    io_handle_close(&s->handle);
    return;
  }
  if (!s->close_started) {
    s->close_started = 1;
    s->reason = (uint8_t)first;
    /* A transport's handshake that fails closes gracefully: its answer (an
     * HTTP error) goes out before the FIN, still with no callbacks. */
    if (s->state == SESSION_OPENING && (!graceful || !s->transport_started)) {
      /* Never reached on_connected: end quietly, no callbacks. A timer
       * armed meanwhile (the session is findable by id from the moment it
       * is registered) dies with it rather than hold it for its delay. */
      engine_lock(&s->lock);
      s->state = SESSION_CLOSED;
      engine_unlock(&s->lock);
      cancel_timers(s);
      service__unregister(s->service, s, first);
      if (s->tail && s->tail->slot)
        service__client_closed(s->tail->slot, s);
      drop_socket(s);
      return;
    }
    engine_lock(&s->lock);
    s->state = SESSION_CLOSING;
    /* The transport's closing bytes (a close frame, close_notify), after
     * everything queued and before the FIN. */
    if (graceful && s->transport_started &&
        transport_close_locked(s, first) != 0)
      graceful = 0;
    engine_unlock(&s->lock);
    cancel_timers(s);
    if (graceful)
      timer_start(s, opts_of(s)->close_timeout_ms, 0, on_close_timeout, NULL, 1);
  }
  if (!graceful) {
    /* The queue is thrown away, but not under a send in flight: IOCP reads
     * those buffers until the send completes (cancelled, once the socket
     * is closed below). destroy() frees what is left. */
    engine_lock(&s->lock);
    int lost = s->tx && s->tx->head;
    int reset = lost || s->reset_asked;
    if (!s->sending)
      tx_free_locked(s);
    engine_unlock(&s->lock);
    /* The first reason wins, except that accepted bytes thrown away here
     * were lost for this reason, and a reason that claims a clean end must
     * not stay (a reset while flushing after the peer's FIN is peer_reset,
     * not peer_closed): SPEC section 3. */
    if (lost && claims_clean_end(s->reason))
      s->reason = (uint8_t)reason;
    /* Bytes the game was told were accepted will never arrive: a FIN would
     * tell the peer the stream ended whole (a gateway would pass a clean
     * EOF on). A reset says it was cut. */
    if (reset)
      io_handle_reset_on_close(&s->handle);
    finish_close(s, 0);
    return;
  }
  engine_lock(&s->lock);
  int drained = !s->tx && !s->sending;
  engine_unlock(&s->lock);
  if (drained)
    finish_close(s, 1);
}

/* ---- transports ---- */

/* Bytes the layers write during one call: toward the handler (up) and
 * toward the socket (wire). One pair per thread, reused, so a receive or a
 * send through a transport allocates nothing once they have grown; freed
 * when the thread ends. */
typedef struct byte_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
} byte_buf_t;

typedef struct transport_scratch {
  byte_buf_t up;
  byte_buf_t wire;
} transport_scratch_t;

static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;

static void scratch_destroy(void *p) {
  transport_scratch_t *sc = p;
  free(sc->up.data);
  free(sc->wire.data);
  free(sc);
}

static void scratch_key_create(void) {
  pthread_key_create(&scratch_key, scratch_destroy);
}

static transport_scratch_t *scratch_get(void) {
  pthread_once(&scratch_once, scratch_key_create);
  transport_scratch_t *sc = pthread_getspecific(scratch_key);
  if (!sc) {
    sc = calloc(1, sizeof *sc);
    if (sc && pthread_setspecific(scratch_key, sc) != 0) {
      free(sc);
      sc = NULL;
    }
  }
  return sc;
}

static int byte_buf_append(byte_buf_t *b, const session_buf_t *bufs,
                           size_t count) {
  for (size_t i = 0; i < count; i++) {
    size_t len = bufs[i].len;
    if (len > SIZE_MAX / 2 - b->len)
      return ENGINE_E_NOMEM;
    if (b->len + len > b->cap) {
      size_t cap = b->cap ? b->cap * 2 : 1024;
      while (cap < b->len + len)
        cap *= 2;
      uint8_t *grown = realloc(b->data, cap);
      if (!grown)
        return ENGINE_E_NOMEM;
      b->data = grown;
      b->cap = cap;
    }
    if (len)
      memcpy(b->data + b->len, bufs[i].data, len);
    b->len += len;
  }
  return 0;
}

/* The layers one call runs through: a session's, or (layers NULL) a
 * shared encoding's. A sink's level is the layer its bytes go to: up from
 * layer i is level i + 1 (the handler past the top), down is level i - 1
 * (the socket below 0). */
typedef struct transport_chain {
  const transport_layer_t *tl;
  int count;
  void *const *layers;
  transport_scratch_t *sc;
} transport_chain_t;

static int sink_down(const transport_sink_t *sink, const session_buf_t *bufs,
                     size_t count);

static int sink_up(const transport_sink_t *sink, const session_buf_t *bufs,
                   size_t count) {
  const transport_chain_t *c = sink->ctx;
  int level = sink->level;
  if (level >= c->count)
    return byte_buf_append(&c->sc->up, bufs, count);
  transport_sink_t up = {sink_up, sink->ctx, level + 1};
  transport_sink_t down = {sink_down, sink->ctx, level - 1};
  for (size_t i = 0; i < count; i++) {
    if (!bufs[i].len)
      continue;
    int rc = c->tl[level].ops->input(c->layers[level], bufs[i].data,
                                     bufs[i].len, &up, &down);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int sink_down(const transport_sink_t *sink, const session_buf_t *bufs,
                     size_t count) {
  const transport_chain_t *c = sink->ctx;
  int level = sink->level;
  if (level < 0)
    return byte_buf_append(&c->sc->wire, bufs, count);
  transport_sink_t down = {sink_down, sink->ctx, level - 1};
  return c->tl[level].ops->output(c->tl[level].config,
                                  c->layers ? c->layers[level] : NULL, bufs,
                                  count, &down);
}

static transport_chain_t chain_of(session_t *s, transport_scratch_t *sc) {
  const service_options_t *o = opts_of(s);
  transport_chain_t c = {o->transport, (int)o->transport_layers,
                         s->tail->layers, sc};
  return c;
}

/* Under the lock: every layer's handshake is done. */
static int layers_ready(session_t *s) {
  const service_options_t *o = opts_of(s);
  for (size_t i = 0; i < o->transport_layers; i++)
    if (!o->transport[i].ops->ready(s->tail->layers[i]))
      return 0;
  return 1;
}

/* Under the lock: queues what the layers wrote toward the socket. Returns
 * as enqueue_locked. */
static int queue_wire_locked(session_t *s, transport_scratch_t *sc,
                             int *partial) {
  if (sc->wire.len == 0)
    return ENGINE_OK;
  session_buf_t b = {sc->wire.data, sc->wire.len};
  sc->wire.len = 0;
  return enqueue_locked(s, &b, 1, NULL, b.len, partial);
}

/* Under the lock, from enqueue: bufs (or shared) encoded by every layer,
 * top first, into the thread's wire buffer. */
static int transport_encode_locked(session_t *s, const session_buf_t *bufs,
                                   size_t count, shared_buf_t *shared,
                                   session_buf_t *encoded) {
  transport_scratch_t *sc = scratch_get();
  if (!sc)
    return ENGINE_E_NOMEM;
  session_buf_t one;
  if (shared) {
    one.data = shared->data;
    one.len = shared->len;
    bufs = &one;
    count = 1;
  }
  transport_chain_t c = chain_of(s, sc);
  transport_sink_t top = {sink_down, &c, c.count - 1};
  sc->wire.len = 0;
  int rc = top.write(&top, bufs, count);
  if (rc > 0)
    rc = ENGINE_E_CLOSED; /* a layer refuses: its stream has ended */
  encoded->data = sc->wire.data;
  encoded->len = sc->wire.len;
  sc->wire.len = 0; /* the caller queues it before unlocking */
  return rc;
}

shared_buf_t *session__transport_share(service_t *svc, shared_buf_t *buf) {
  const service_options_t *o = service__options(svc);
  for (size_t i = 0; i < o->transport_layers; i++)
    if (!(o->transport[i].ops->flags & TRANSPORT_SHARED_OUTPUT))
      return NULL;
  transport_scratch_t *sc = scratch_get();
  if (!sc)
    return NULL;
  transport_chain_t c = {o->transport, (int)o->transport_layers, NULL, sc};
  transport_sink_t top = {sink_down, &c, c.count - 1};
  session_buf_t b = {buf->data, buf->len};
  sc->wire.len = 0;
  shared_buf_t *out = NULL;
  if (top.write(&top, &b, 1) == 0) {
    out = shared_buf_new(sc->wire.len);
    if (out)
      memcpy(out->data, sc->wire.data, sc->wire.len);
  }
  sc->wire.len = 0;
  return out;
}

/* Worker: the handshake's deadline. */
static void check_handshake(session_t *s, void *arg) {
  (void)arg;
  /* Once the session opened it finds nothing to do (an engine timer
   * cannot be stopped early; it holds a few bytes until then). */
  if (s->state != SESSION_OPENING || s->close_started)
    return;
  engine_lock(&s->lock);
  int ready = s->transport_ready;
  const char *name = "transport";
  const service_options_t *o = opts_of(s);
  for (size_t i = 0; i < o->transport_layers; i++)
    if (!o->transport[i].ops->ready(s->tail->layers[i])) {
      name = o->transport[i].ops->name;
      break;
    }
  engine_unlock(&s->lock);
  if (ready)
    return;
  char peer[ADDRESS_TEXT_MAX] = "?";
  address_format(&s->peer, peer, sizeof peer);
  log_write(LOG_WARN, "session",
            "service %s: session %llu (%s) did not complete its %s handshake "
            "within handshake_timeout_ms %u: closing (idle_timeout)",
            service_name(s->service), (unsigned long long)s->id, peer, name,
            o->handshake_timeout_ms);
  begin_close(s, REASON_IDLE_TIMEOUT, 1);
}

/* Worker, unlocked: every layer became ready. */
static void transport_opened(session_t *s, int start_receiving) {
  const service_options_t *o = opts_of(s);
  if (service__stopping(s->service)) {
    begin_close(s, REASON_HOST_STOPPING, 1);
    return;
  }
  for (size_t i = 0; i < o->transport_layers; i++)
    if (o->transport[i].ops->opened)
      o->transport[i].ops->opened(s->tail->layers[i]);
  open_session(s, start_receiving);
}

/* Unlocked, after a layer call: the queue's verdict, then the layers'. */
static int transport_after(session_t *s, int qrc, int partial, int rc) {
  if (qrc == ENGINE_E_QUEUE_FULL) {
    queue_full(s, partial);
    return -1;
  }
  if (qrc != 0 || rc < 0) {
    /* Bytes the layers produced (a handshake record) were lost: the peer
     * must not read a FIN as the stream's whole end. */
    if (qrc == ENGINE_E_NOMEM)
      io_handle_reset_on_close(&s->handle);
    begin_close(s, REASON_IO_ERROR, 0);
    return -1;
  }
  return 0;
}

/* Worker, from on_kick: a session of a transport service was attached or
 * connected; its layers open and speak first if they do. */
static void transport_start(session_t *s) {
  const service_options_t *o = opts_of(s);
  for (size_t i = 0; i < o->transport_layers; i++) {
    if (o->transport[i].ops->open(o->transport[i].config, s,
                                  &s->tail->layers[i]) != 0) {
      begin_close(s, REASON_IO_ERROR, 0);
      return;
    }
  }
  /* Under the lock: a sender on another thread reads it (enqueue_locked). */
  engine_lock(&s->lock);
  s->transport_started = 1;
  engine_unlock(&s->lock);
  if (o->handshake_timeout_ms)
    timer_start(s, o->handshake_timeout_ms, 0, check_handshake, NULL, 1);
  transport_scratch_t *sc = scratch_get();
  if (!sc) {
    begin_close(s, REASON_IO_ERROR, 0);
    return;
  }
  transport_chain_t c = chain_of(s, sc);
  int rc = 0, qrc, partial = 0, ready = 0;
  engine_lock(&s->lock);
  sc->wire.len = 0;
  for (int i = 0; i < c.count && rc == 0; i++) {
    if (!o->transport[i].ops->start)
      continue;
    transport_sink_t down = {sink_down, &c, i - 1};
    rc = o->transport[i].ops->start(s->tail->layers[i], &down);
  }
  qrc = queue_wire_locked(s, sc, &partial);
  if (rc != 0)
    s->transport_closed = 1;
  else if (layers_ready(s))
    ready = s->transport_ready = 1;
  engine_unlock(&s->lock);
  if (transport_after(s, qrc, partial, rc) != 0)
    return;
  if (rc > 0) {
    begin_close(s, rc, 1);
    return;
  }
  if (ready)
    transport_opened(s, 0);
  if (!s->handle.closed)
    start_recv(s);
}

/* Worker: bytes read from the socket go up through the layers under the
 * lock; what reaches the top is delivered unlocked, as TCP's bytes are. */
static void transport_receive(session_t *s, const uint8_t *data, size_t len) {
  if (!s->transport_started || s->close_started ||
      atomic_load_explicit(&s->close_request, memory_order_relaxed))
    return;
  service__count_bytes(s->service, len, 0);
  note_receive(s);
  transport_scratch_t *sc = scratch_get();
  if (!sc) {
    begin_close(s, REASON_IO_ERROR, 0);
    return;
  }
  transport_chain_t c = chain_of(s, sc);
  transport_sink_t first = {sink_up, &c, 0};
  int rc, qrc, partial = 0, ready = 0;
  engine_lock(&s->lock);
  if (s->transport_closed) {
    engine_unlock(&s->lock);
    return;
  }
  sc->up.len = 0;
  sc->wire.len = 0;
  rc = transport_sink_write(&first, data, len);
  qrc = queue_wire_locked(s, sc, &partial);
  if (rc != 0)
    s->transport_closed = 1;
  else if (!s->transport_ready && layers_ready(s))
    ready = s->transport_ready = 1;
  engine_unlock(&s->lock);
  if (transport_after(s, qrc, partial, rc) != 0)
    return;
  if (ready)
    transport_opened(s, 0);
  /* The decoded bytes leave the thread's buffer while they are delivered:
   * a callback may send, which encodes through the same scratch. */
  byte_buf_t in = sc->up;
  sc->up.data = NULL;
  sc->up.len = sc->up.cap = 0;
  if (in.len && s->state == SESSION_OPEN && session_is_open(s)) {
    delivering = s;
    deliver_input(s, in.data, in.len);
    delivering = NULL;
    report_sent(s);
  }
  sc = scratch_get(); /* the same thread's */
  if (sc && !sc->up.data) {
    in.len = 0;
    sc->up = in;
  } else {
    free(in.data);
  }
  /* What came before a close frame (or a broken frame) was delivered;
   * then the session closes. */
  if (rc > 0)
    begin_close(s, rc, 1);
}

/* Under the lock, from begin_close: each layer's closing bytes, the top's
 * first (a close frame travels through TLS, then close_notify). Returns 0,
 * or non-zero when they could not be queued (the close aborts). */
static int transport_close_locked(session_t *s, int reason) {
  transport_scratch_t *sc = scratch_get();
  if (!sc)
    return -1;
  transport_chain_t c = chain_of(s, sc);
  sc->wire.len = 0;
  for (int i = c.count - 1; i >= 0; i--) {
    if (!c.tl[i].ops->close)
      continue;
    transport_sink_t down = {sink_down, &c, i - 1};
    c.tl[i].ops->close(s->tail->layers[i], (session_reason_t)reason, &down);
  }
  s->transport_closed = 1;
  int partial = 0;
  return queue_wire_locked(s, sc, &partial);
}

static void transport_free(session_t *s) {
  const service_options_t *o = opts_of(s);
  for (size_t i = 0; i < o->transport_layers; i++)
    if (s->tail->layers[i])
      o->transport[i].ops->free(s->tail->layers[i]);
}

int session_transport_call(session_t *s, void *layer,
                           int (*fn)(void *layer, void *arg,
                                     const transport_sink_t *down),
                           void *arg) {
  const service_options_t *o = opts_of(s);
  int level = -1;
  for (size_t i = 0; i < o->transport_layers; i++)
    if (layer && s->tail->layers[i] == layer)
      level = (int)i;
  if (level < 0 || !fn)
    return ENGINE_E_INVAL;
  transport_scratch_t *sc = scratch_get();
  if (!sc)
    return ENGINE_E_NOMEM;
  transport_chain_t c = chain_of(s, sc);
  transport_sink_t down = {sink_down, &c, level - 1};
  engine_lock(&s->lock);
  if (s->close_request || s->state >= SESSION_CLOSING || s->transport_closed) {
    engine_unlock(&s->lock);
    return ENGINE_E_CLOSED;
  }
  sc->wire.len = 0;
  int rc = fn(layer, arg, &down);
  int partial = 0;
  int qrc = queue_wire_locked(s, sc, &partial);
  if (rc != 0)
    s->transport_closed = 1;
  engine_unlock(&s->lock);
  if (qrc == ENGINE_E_QUEUE_FULL) {
    queue_full(s, partial);
    return ENGINE_E_QUEUE_FULL;
  }
  if (qrc != 0 || rc < 0) {
    session_abort(s, REASON_IO_ERROR);
    return qrc != 0 ? qrc : rc;
  }
  if (rc > 0) {
    if (io_handle_on_worker(&s->handle))
      begin_close(s, rc, 1);
    else
      session_disconnect(s, (session_reason_t)rc);
  }
  return ENGINE_OK;
}

/* ---- accessors ---- */

void session_get_info(session_t *s, session_info_t *out) {
  out->id = s->id;
  out->peer = s->peer;
  out->connected_ms = s->connected_ms;
  out->bytes_in = atomic_load_explicit(&s->bytes_in, memory_order_relaxed);
  out->bytes_out = atomic_load_explicit(&s->bytes_out, memory_order_relaxed);
  engine_lock(&s->lock);
  out->queued_bytes = queued_bytes_locked(s);
  engine_unlock(&s->lock);
}

uint64_t session_id(const session_t *s) { return s->id; }
const address_t *session_peer(const session_t *s) { return &s->peer; }
service_t *session_service(const session_t *s) { return s->service; }
void *session_extra(session_t *s) { return (char *)s + extra_offset(); }
size_t session_extra_size(const session_t *s) { return s->extra_size; }
void *session_context(const session_t *s) { return s->context; }

void session_set_context(session_t *s, void *context) { s->context = context; }

int session_is_open(session_t *s) {
  /* The worker writes the state and may read it without the lock; a close
   * asked from another thread shows in close_request at once. */
  if (io_handle_on_worker(&s->handle))
    return s->state == SESSION_OPEN &&
           !atomic_load_explicit(&s->close_request, memory_order_relaxed);
  engine_lock(&s->lock);
  int open = s->state == SESSION_OPEN && !s->close_request;
  engine_unlock(&s->lock);
  return open;
}

/* ---- shared buffers ---- */

shared_buf_t *shared_buf_new(size_t len) {
  if (len > SIZE_MAX - sizeof(shared_buf_t))
    return NULL;
  shared_buf_t *b = malloc(sizeof *b + len);
  if (!b)
    return NULL;
  atomic_init(&b->refs, 1);
  b->len = len;
  return b;
}

uint8_t *shared_buf_data(shared_buf_t *buf) { return buf->data; }
size_t shared_buf_len(const shared_buf_t *buf) { return buf->len; }

void shared_buf_release(shared_buf_t *buf) {
  if (atomic_fetch_sub_explicit(&buf->refs, 1, memory_order_acq_rel) == 1)
    free(buf);
}
