/*
 * Services: a server service owns a listener; a client service keeps N
 * outbound sessions alive. Both keep the set of their open sessions (a hash
 * by id, walked whole for broadcast and stop) and their counters.
 *
 * Listener: several accepts stay in flight (accepts_pending), each holding a
 * reference to the listener and the session it will hand over, so a burst of
 * connections is taken in one wake-up. An accept that fails for lack of
 * descriptors or memory is not retried at once (the listening socket stays
 * readable and would spin): the slot waits for a backoff timer, 10 ms
 * doubling to 1 s, and the failure is logged at most once a second. An error
 * about one connection (aborted before accept) is retried at once.
 *
 * The listener's own state (its slots, its backoff) is touched only on its
 * worker: even the first accepts are issued there, by a posted start, so a
 * factory refusing at start-up arms the backoff in the same serial order
 * that accept completions run in.
 *
 * Client slots: each slot lives on one worker with its session, so its
 * connect, timeout and backoff never race. The delay before a reconnect
 * doubles from min_delay_ms to max_delay_ms, with jitter (from 0 it grows
 * 1, 2, 4, ... ms), and returns to the minimum only after a session stayed
 * up for reconnect_reset_after_ms: a server that accepts and drops at once
 * is backed off like one that refuses.
 *
 * Idle timeout: one sweep per service, not a timer per session (a timer
 * record is 144 bytes, and issue 18 counts an idle session's bytes). Every
 * idle_timeout_ms / 8 (5 ms to 1 s) it walks the open sessions under the
 * service's lock (a slice at a time) and asks each that has been quiet
 * that long to check itself on its worker (session__idle_check: a flag and
 * its kick), where its last receive is exact. A silent session is thus cut between
 * idle_timeout_ms and 1.125 times it after its last byte.
 *
 * Stopping: service_stop_accepting marks the service stopping under its
 * lock before anything else, and a session that starts (its first kick)
 * from then on ends quietly instead of opening (session.c, on_kick). A
 * stop's sweep over the registered sessions therefore misses nobody:
 * whoever registered before the mark is in the set it walks, whoever
 * registers after ends at its start.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cond_wait.h"
#include "engine/internal.h"
#include "engine/log.h"

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000

typedef struct listener listener_t;

typedef struct accept_slot {
  io_accept_op_t op;
  listener_t *listener;
  session_t *session; /* the session this accept will hand over */
  uint8_t waiting;    /* waits for the backoff timer */
} accept_slot_t;

struct listener {
  atomic_int refs;
  service_t *service;
  io_handle_t handle;
  accept_slot_t *slots;
  int slot_count;
  io_timer_t backoff;
  uint32_t backoff_ms;
  uint8_t backoff_armed;
  uint8_t stopped;
  io_op_t start_op;
  io_op_t stop_op;
  uint64_t log_last_ms, log_suppressed;
  uint64_t reject_log_last_ms, reject_log_suppressed;
};

typedef enum slot_state {
  SLOT_IDLE,
  SLOT_CONNECTING,
  SLOT_CONNECTED,
  SLOT_WAITING
} slot_state_t;

struct client_slot {
  service_t *service;
  int index;
  io_handle_t handle; /* no socket: a place in a worker's serial order */
  io_timer_t connect_timer;
  io_timer_t retry_timer;
  io_op_t start_op;
  io_op_t stop_op;
  session_t *session;
  uint32_t delay_ms;     /* the last backoff chosen */
  uint8_t backing_off;   /* delay_ms counts: failures since a stable session */
  uint64_t connected_ms; /* when the slot's session connected; 0 if none */
  uint8_t state;
  uint8_t stopping;
  /* Connected, but the transport's handshake (TLS, the WebSocket upgrade)
   * is not done: the connect counts, and the backoff may reset, only once
   * it is; a handshake that fails counts as a failed connect. */
  uint8_t handshaking;
  uint64_t rng;
  uint64_t log_last_ms, log_suppressed;
};

typedef struct idle_sweeper {
  service_t *service;
  io_handle_t handle; /* no socket: a place in a worker's serial order */
  io_timer_t timer;
  io_op_t start_op;
  io_op_t stop_op;
  uint32_t period_ms;
  uint8_t running; /* the timer has a completion to come */
  uint8_t stopped;
} idle_sweeper_t;

struct service {
  core_t *core;
  char *name;
  service_options_t opt;
  void *user;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  long objects; /* sessions, the listener, slot ops in flight */
  long session_objects; /* of which sessions (allocated, not yet freed) */
  uint64_t open_sessions;
  /* The open sessions, chained through hash_next: found by id, and walked
   * whole (FOR_EACH_SESSION) for broadcast and stop. Never empty of
   * buckets (made with the service), so registering cannot fail. */
  session_t **buckets;
  size_t bucket_count;
  int started;
  /* Set under lock (service_stop_accepting); read without it elsewhere. */
  atomic_int stopping;
  listener_t *listener;
  client_slot_t *slots;
  uint32_t slot_count;
  idle_sweeper_t *sweeper; /* with idle_timeout_ms only */
  atomic_uint_fast64_t reconnect_delay_ms;
  atomic_uint_fast64_t accepted, rejected, connects, connect_failures,
      bytes_in, bytes_out, accept_errors;
  atomic_uint_fast64_t disconnects[10];
  atomic_uint_fast64_t sessions_now;
  /* Bytes held by its sessions now: send queues, kept input buffers. */
  atomic_int_fast64_t send_queue_bytes, recv_buffer_bytes;
};

static void objects_add(service_t *svc, long delta) {
  pthread_mutex_lock(&svc->lock);
  svc->objects += delta;
  if (svc->objects == 0)
    pthread_cond_broadcast(&svc->changed);
  pthread_mutex_unlock(&svc->lock);
}

static void session_objects_add(service_t *svc, long delta) {
  pthread_mutex_lock(&svc->lock);
  svc->session_objects += delta;
  svc->objects += delta;
  if (svc->objects == 0)
    pthread_cond_broadcast(&svc->changed);
  pthread_mutex_unlock(&svc->lock);
}

void service__session_allocated(service_t *svc) {
  session_objects_add(svc, 1);
}
void service__session_freed(service_t *svc) { session_objects_add(svc, -1); }

void service_options_init(service_options_t *o) {
  memset(o, 0, sizeof *o);
  o->type = SERVICE_SERVER;
  o->max_recv_bytes = 65536;
  o->send_queue_limit_bytes = 1048576;
  o->incomplete_timeout_ms = 30000;
  o->tcp_nodelay = 1;
  o->close_timeout_ms = 5000;
  o->close_linger_ms = 2000;
  o->max_sessions = 10000;
  o->backlog = 511;
  o->accepts_pending = 8;
  o->client_sessions = 1;
  o->connect_timeout_ms = 5000;
  o->reconnect = 1;
  o->reconnect_min_delay_ms = 100;
  o->reconnect_max_delay_ms = 10000;
  o->reconnect_jitter = 0.2;
  o->handshake_timeout_ms = 10000;
}

int service__stopping(service_t *svc) { return atomic_load(&svc->stopping); }

const service_options_t *service__options(const service_t *svc) {
  return &svc->opt;
}

const char *service_name(const service_t *svc) { return svc->name; }
core_t *service_core(const service_t *svc) { return svc->core; }
void service_set_user(service_t *svc, void *user) { svc->user = user; }
void *service_user(const service_t *svc) { return svc->user; }

/* ---- the set of open sessions ---- */

/* Under svc->lock. */
#define FOR_EACH_SESSION(svc, s)                                               \
  for (size_t bucket_ = 0; bucket_ < (svc)->bucket_count; bucket_++)          \
    for (session_t *s = (svc)->buckets[bucket_]; s; s = s->hash_next)

/* Buckets grow (doubling) when there are more than this many sessions per
 * bucket: 8 bytes of table per 1 to 2 sessions, chains of 1 or 2. */
#define SESSIONS_PER_BUCKET 2
/* The idle sweep's walk, per hold of the service's lock (on_sweep). */
#define SWEEP_BUCKETS_PER_LOCK 512

static size_t bucket_of(const service_t *svc, uint64_t id) {
  return (size_t)(id * 0x9E3779B97F4A7C15ULL >> 7) & (svc->bucket_count - 1);
}

static void rehash_locked(service_t *svc) {
  size_t count = svc->bucket_count * 2;
  session_t **buckets = calloc(count, sizeof *buckets);
  if (!buckets)
    return; /* keep the old table: longer chains, still correct */
  session_t **old = svc->buckets;
  size_t old_count = svc->bucket_count;
  svc->buckets = buckets;
  svc->bucket_count = count;
  for (size_t i = 0; i < old_count; i++) {
    session_t *s = old[i];
    while (s) {
      session_t *next = s->hash_next;
      size_t b = bucket_of(svc, s->id);
      s->hash_next = buckets[b];
      buckets[b] = s;
      s = next;
    }
  }
  free(old);
}

void service__register(service_t *svc, session_t *s) {
  pthread_mutex_lock(&svc->lock);
  if (svc->open_sessions + 1 > svc->bucket_count * SESSIONS_PER_BUCKET)
    rehash_locked(svc);
  size_t b = bucket_of(svc, s->id);
  s->hash_next = svc->buckets[b];
  svc->buckets[b] = s;
  s->registered = 1;
  svc->open_sessions++;
  atomic_store(&svc->sessions_now, svc->open_sessions);
  pthread_mutex_unlock(&svc->lock);
  /* Registered after the stop's sweep began (an accept or connect that was
   * already completing), no sweep sees it: its own start (the kick its
   * caller posts next) finds the service stopping and ends it quietly,
   * before on_connected. Closing it here instead would race that kick on
   * another worker, which may free it while the caller still posts. */
}

void service__unregister(service_t *svc, session_t *s, int reason) {
  pthread_mutex_lock(&svc->lock);
  if (s->registered) {
    s->registered = 0;
    session_t **p = &svc->buckets[bucket_of(svc, s->id)];
    while (*p && *p != s)
      p = &(*p)->hash_next;
    if (*p)
      *p = s->hash_next;
    svc->open_sessions--;
    atomic_store(&svc->sessions_now, svc->open_sessions);
    if (reason > 0 && reason < 10)
      atomic_fetch_add(&svc->disconnects[reason], 1);
    pthread_cond_broadcast(&svc->changed);
  }
  pthread_mutex_unlock(&svc->lock);
}

void service__count_bytes(service_t *svc, uint64_t in, uint64_t out) {
  if (in)
    atomic_fetch_add_explicit(&svc->bytes_in, in, memory_order_relaxed);
  if (out)
    atomic_fetch_add_explicit(&svc->bytes_out, out, memory_order_relaxed);
}

void service__count_buffers(service_t *svc, int64_t send_delta,
                            int64_t recv_delta) {
  if (send_delta)
    atomic_fetch_add_explicit(&svc->send_queue_bytes, send_delta,
                              memory_order_relaxed);
  if (recv_delta)
    atomic_fetch_add_explicit(&svc->recv_buffer_bytes, recv_delta,
                              memory_order_relaxed);
}

session_t *service_find_session(service_t *svc, uint64_t id) {
  session_t *found = NULL;
  pthread_mutex_lock(&svc->lock);
  for (session_t *s = svc->buckets[bucket_of(svc, id)]; s; s = s->hash_next) {
    if (s->id == id) {
      found = session_acquire(s);
      break;
    }
  }
  pthread_mutex_unlock(&svc->lock);
  return found;
}

int service_sessions(service_t *svc, session_t ***out, size_t *count) {
  *out = NULL;
  *count = 0;
  pthread_mutex_lock(&svc->lock);
  size_t n = (size_t)svc->open_sessions;
  session_t **list = n ? malloc(n * sizeof *list) : NULL;
  if (n && !list) {
    pthread_mutex_unlock(&svc->lock);
    return ENGINE_E_NOMEM;
  }
  size_t i = 0;
  FOR_EACH_SESSION(svc, s)
    list[i++] = session_acquire(s);
  pthread_mutex_unlock(&svc->lock);
  *out = list;
  *count = n;
  return ENGINE_OK;
}

int service_broadcast(service_t *svc, shared_buf_t *buf) {
  int count = 0;
  /* A transport that allows it encodes the bytes once for everyone (a
   * WebSocket frame); otherwise each session encodes its own copy. */
  shared_buf_t *encoded =
      svc->opt.transport_layers ? session__transport_share(svc, buf) : NULL;
  pthread_mutex_lock(&svc->lock);
  FOR_EACH_SESSION(svc, s)
    if ((encoded ? session__send_encoded(s, encoded)
                 : session_send_shared(s, buf)) == ENGINE_OK)
      count++;
  pthread_mutex_unlock(&svc->lock);
  if (encoded)
    shared_buf_release(encoded);
  return count;
}

void service_disconnect_all(service_t *svc, session_reason_t reason) {
  pthread_mutex_lock(&svc->lock);
  FOR_EACH_SESSION(svc, s)
    session_disconnect(s, reason);
  pthread_mutex_unlock(&svc->lock);
}

void service_abort_all(service_t *svc, session_reason_t reason) {
  pthread_mutex_lock(&svc->lock);
  FOR_EACH_SESSION(svc, s)
    session_abort(s, reason);
  pthread_mutex_unlock(&svc->lock);
}

void service_get_stats(service_t *svc, service_stats_t *out) {
  memset(out, 0, sizeof *out);
  out->sessions_now = atomic_load(&svc->sessions_now);
  out->sessions_max = svc->opt.type == SERVICE_SERVER ? svc->opt.max_sessions
                                                      : svc->opt.client_sessions;
  out->accepted = atomic_load(&svc->accepted);
  out->rejected = atomic_load(&svc->rejected);
  out->connects = atomic_load(&svc->connects);
  out->connect_failures = atomic_load(&svc->connect_failures);
  out->reconnect_delay_ms = atomic_load(&svc->reconnect_delay_ms);
  out->bytes_in = atomic_load(&svc->bytes_in);
  out->bytes_out = atomic_load(&svc->bytes_out);
  out->accept_errors = atomic_load(&svc->accept_errors);
  for (int i = 0; i < 10; i++)
    out->disconnects[i] = atomic_load(&svc->disconnects[i]);
  int_fast64_t q = atomic_load(&svc->send_queue_bytes);
  int_fast64_t r = atomic_load(&svc->recv_buffer_bytes);
  out->send_queue_bytes = q > 0 ? (uint64_t)q : 0;
  out->recv_buffer_bytes = r > 0 ? (uint64_t)r : 0;
}

/* ---- listener ---- */

static void listener_release(listener_t *l) {
  if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
    return;
  service_t *svc = l->service;
  for (int i = 0; i < l->slot_count; i++)
    if (l->slots[i].session)
      session__free_unattached(l->slots[i].session);
  free(l->slots);
  free(l);
  engine__live_add(-1);
  objects_add(svc, -1); /* the listener itself, not a session */
}

static void on_accept_done(io_op_t *op, int status, size_t bytes);
static void arm_backoff(listener_t *l);

static void issue_accept(listener_t *l, accept_slot_t *slot) {
  if (!slot->session) {
    slot->session = session__new(l->service);
    if (!slot->session) {
      /* The factory refused or memory ran out: try again later (without the
       * timer nothing would ever issue this slot's accept again). */
      slot->waiting = 1;
      arm_backoff(l);
      return;
    }
  }
  atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
  slot->op.op.type = IO_OP_ACCEPT;
  slot->op.op.handle = &l->handle;
  slot->op.op.status = 0;
  slot->op.op.complete = on_accept_done;
  slot->op.socket = IO_INVALID_SOCKET;
  slot->op.peer = &slot->session->peer;
  io_submit(&slot->op.op);
}

static void on_backoff(io_op_t *op, int status, size_t bytes) {
  listener_t *l = container_of(op, listener_t, backoff.op);
  l->backoff_armed = 0;
  if (status == 0 && !l->stopped) {
    /* A slot that fails again re-arms the timer (issue_accept or its
     * completion), with the delay doubled. */
    for (int i = 0; i < l->slot_count; i++) {
      if (l->slots[i].waiting) {
        l->slots[i].waiting = 0;
        issue_accept(l, &l->slots[i]);
      }
    }
  }
  listener_release(l);
}

static void arm_backoff(listener_t *l) {
  /* Every waiting slot fails in the same round; the delay doubles once per
   * round, not once per slot. */
  if (l->backoff_armed || l->stopped)
    return;
  l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (l->backoff_ms > BACKOFF_MAX_MS)
    l->backoff_ms = BACKOFF_MAX_MS;
  l->backoff_armed = 1;
  atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
  io_timer_start(&l->backoff, l->backoff_ms);
}

static int error_is_per_connection(int status) {
  switch (-status) {
  case ECONNABORTED:
  case EPROTO:
  case EPERM:
  case ENETDOWN:
  case ENOPROTOOPT:
#ifdef EHOSTDOWN
  case EHOSTDOWN:
#endif
#ifdef ENONET
  case ENONET:
#endif
  case EHOSTUNREACH:
  case EOPNOTSUPP:
  case ENETUNREACH:
  case ECONNRESET:
  case EINTR:
    return 1;
  default:
    return 0;
  }
}

static void on_accept_done(io_op_t *op, int status, size_t bytes) {
  accept_slot_t *slot = container_of(op, accept_slot_t, op.op);
  listener_t *l = slot->listener;
  service_t *svc = l->service;
  /* The service may be stopping before this listener's stop op arrives (on
   * epoll a listener may deliver thousands of accepts first): a connection
   * taken now is closed, and the slot stays idle. */
  if (!l->stopped && atomic_load(&svc->stopping))
    l->stopped = 1;
  if (status == IO_ECANCELED || l->stopped) {
    if (status == 0)
      io_socket_close(io_accept_op(op)->socket);
    listener_release(l);
    return;
  }
  if (status < 0) {
    atomic_fetch_add(&svc->accept_errors, 1);
    if (error_is_per_connection(status)) {
      issue_accept(l, slot);
    } else {
      slot->waiting = 1;
      arm_backoff(l);
      if (log_ratelimit(&l->log_last_ms, &l->log_suppressed))
        log_write(LOG_ERROR, "listener",
                  "service %s: accept failed: %s; the listener keeps serving "
                  "and retries in %u ms (if descriptors ran out, raise the "
                  "limit: ulimit -n / LimitNOFILE)",
                  svc->name, io_strerror(status), l->backoff_ms);
    }
    listener_release(l);
    return;
  }
  l->backoff_ms = 0;
  io_socket_t sock = io_accept_op(op)->socket;
  if (atomic_load(&svc->sessions_now) >= svc->opt.max_sessions) {
    io_socket_close(sock);
    atomic_fetch_add(&svc->rejected, 1);
    if (log_ratelimit(&l->reject_log_last_ms, &l->reject_log_suppressed))
      log_write(LOG_WARN, "listener",
                "service %s: max_sessions %u reached: connection refused "
                "(counted as rejected)",
                svc->name, svc->opt.max_sessions);
    issue_accept(l, slot);
    listener_release(l);
    return;
  }
  session_t *s = slot->session;
  slot->session = NULL;
  atomic_fetch_add(&svc->accepted, 1);
  session__attach(s, sock, -1);
  issue_accept(l, slot);
  listener_release(l);
}

static void on_listener_start(io_op_t *op, int status, size_t bytes) {
  listener_t *l = container_of(op, listener_t, start_op);
  if (!l->stopped && !atomic_load(&l->service->stopping))
    for (int i = 0; i < l->slot_count; i++)
      issue_accept(l, &l->slots[i]);
  listener_release(l);
}

static void on_listener_stop(io_op_t *op, int status, size_t bytes) {
  listener_t *l = container_of(op, listener_t, stop_op);
  l->stopped = 1;
  io_timer_cancel(&l->backoff);
  io_handle_close(&l->handle);
  listener_release(l);
}

static int listener_start(service_t *svc, char *err, size_t err_len) {
  char addr[ADDRESS_TEXT_MAX];
  address_format(&svc->opt.address, addr, sizeof addr);
  io_socket_t sock = io_socket_tcp(address_family(&svc->opt.address));
  if (sock == IO_INVALID_SOCKET) {
    snprintf(err, err_len, "service %s: cannot create a socket for %s: %s",
             svc->name, addr, strerror(errno));
    return -1;
  }
  if (svc->opt.tcp_nodelay) /* inherited by accepted sockets */
    io_socket_set_nodelay(sock, 1);
  int rc = io_socket_listen(sock, &svc->opt.address, svc->opt.backlog);
  if (rc < 0) {
    io_socket_close(sock);
    snprintf(err, err_len, "service %s: cannot listen on %s: %s%s", svc->name,
             addr, io_strerror(rc),
             rc == -EADDRINUSE
                 ? " (another process has it: stop it or choose another "
                   "address)"
                 : rc == -EADDRNOTAVAIL ? " (no interface has this address)"
                                        : "");
    return -1;
  }
  listener_t *l = calloc(1, sizeof *l);
  int count = svc->opt.accepts_pending > 0 ? svc->opt.accepts_pending : 1;
  if (l)
    l->slots = calloc((size_t)count, sizeof *l->slots);
  if (!l || !l->slots) {
    free(l);
    io_socket_close(sock);
    snprintf(err, err_len, "service %s: out of memory", svc->name);
    return -1;
  }
  atomic_init(&l->refs, 1); /* the service's reference */
  l->service = svc;
  l->slot_count = count;
  rc = io_handle_open(svc->core->io, &l->handle, sock, -1);
  if (rc < 0) {
    io_socket_close(sock);
    free(l->slots);
    free(l);
    snprintf(err, err_len, "service %s: cannot register %s: %s", svc->name,
             addr, io_strerror(rc));
    return -1;
  }
  io_timer_init(&l->backoff, &l->handle, on_backoff);
  l->start_op.complete = on_listener_start;
  l->stop_op.complete = on_listener_stop;
  engine__live_add(1);
  objects_add(svc, 1);
  svc->listener = l;
  for (int i = 0; i < count; i++)
    l->slots[i].listener = l;
  /* The first accepts are issued on the listener's worker, like every
   * later one: see the top of this file. */
  atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
  io_post(&l->handle, &l->start_op, 0);
  return 0;
}

int service_local_address(service_t *svc, address_t *out) {
  if (!svc->listener)
    return -1;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(svc->listener->handle.socket, (struct sockaddr *)&ss,
                  &len) != 0)
    return -1;
  address_from_sockaddr(out, (struct sockaddr *)&ss, len);
  return 0;
}

/* ---- client slots ---- */

static void slot_connect(client_slot_t *slot);

static double slot_random(client_slot_t *slot) {
  uint64_t x = slot->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  slot->rng = x;
  return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void slot_timer_start(client_slot_t *slot, io_timer_t *t,
                             uint64_t delay) {
  objects_add(slot->service, 1);
  io_timer_start(t, delay);
}

static uint64_t reset_after_ms(const service_t *svc) {
  if (svc->opt.reconnect_reset_after_ms)
    return svc->opt.reconnect_reset_after_ms;
  return svc->opt.reconnect_max_delay_ms > 1000 ? svc->opt.reconnect_max_delay_ms
                                                : 1000;
}

static void schedule_retry(client_slot_t *slot) {
  service_t *svc = slot->service;
  if (slot->stopping || !svc->opt.reconnect ||
      atomic_load(&svc->stopping)) {
    slot->state = SLOT_IDLE;
    return;
  }
  uint32_t min = svc->opt.reconnect_min_delay_ms;
  uint32_t max = svc->opt.reconnect_max_delay_ms;
  uint64_t delay = min;
  if (slot->backing_off) {
    /* Doubling 0 stays 0: from a zero minimum the delay grows 1, 2, 4 ms. */
    delay = (uint64_t)slot->delay_ms * 2;
    if (delay == 0)
      delay = 1;
  }
  if (delay > max)
    delay = max;
  if (delay < min)
    delay = min;
  slot->backing_off = 1;
  slot->delay_ms = (uint32_t)delay;
  atomic_store(&svc->reconnect_delay_ms, delay);
  double jitter = svc->opt.reconnect_jitter;
  double factor = 1.0 + jitter * (2.0 * slot_random(slot) - 1.0);
  uint64_t wait = (uint64_t)((double)delay * factor);
  slot->state = SLOT_WAITING;
  slot_timer_start(slot, &slot->retry_timer, wait);
}

void service__connect_done(client_slot_t *slot, session_t *s, int status) {
  service_t *svc = slot->service;
  io_timer_cancel(&slot->connect_timer);
  char addr[ADDRESS_TEXT_MAX];
  address_format(&svc->opt.address, addr, sizeof addr);
  if (status < 0) {
    slot->session = NULL;
    /* The delay is chosen before the failure is counted, so a reader that
     * sees the count also sees the delay that follows it. */
    schedule_retry(slot);
    atomic_fetch_add(&svc->connect_failures, 1);
    if (log_ratelimit(&slot->log_last_ms, &slot->log_suppressed))
      log_write(LOG_WARN, "client",
                "service %s: cannot connect to %s: %s; retrying with backoff",
                svc->name, addr,
                status == IO_ECANCELED ? "timed out or stopped"
                                       : io_strerror(status));
    return;
  }
  slot->state = SLOT_CONNECTED;
  if (svc->opt.transport_layers) {
    slot->handshaking = 1; /* service__client_opened counts it */
    return;
  }
  atomic_fetch_add(&svc->connects, 1);
  /* The backoff is reset when this session ends, if it stayed up long
   * enough to count as a healthy server (service__client_closed). */
  slot->connected_ms = clock_now_ms();
  log_write(LOG_DEBUG, "client", "service %s: connected to %s", svc->name,
            addr);
}

void service__client_opened(client_slot_t *slot) {
  if (!slot->handshaking)
    return;
  slot->handshaking = 0;
  atomic_fetch_add(&slot->service->connects, 1);
  slot->connected_ms = clock_now_ms();
  log_write(LOG_DEBUG, "client", "service %s: connected, handshake done",
            slot->service->name);
}

void service__client_closed(client_slot_t *slot, session_t *s) {
  if (slot->session == s)
    slot->session = NULL;
  if (slot->handshaking) {
    /* The layer that failed has said why, once (its own log line). A
     * handshake cut by the host's stop is no failure of the server's. */
    slot->handshaking = 0;
    if (s->reason != REASON_HOST_STOPPING)
      atomic_fetch_add(&slot->service->connect_failures, 1);
  }
  if (slot->connected_ms &&
      clock_now_ms() - slot->connected_ms >= reset_after_ms(slot->service))
    slot->backing_off = 0;
  slot->connected_ms = 0;
  schedule_retry(slot);
}

static void on_connect_timeout(io_op_t *op, int status, size_t bytes) {
  client_slot_t *slot = container_of(op, client_slot_t, connect_timer.op);
  if (status == 0 && slot->state == SLOT_CONNECTING && slot->session)
    session_abort(slot->session, REASON_CONNECT_FAILED);
  objects_add(slot->service, -1);
}

static void on_retry(io_op_t *op, int status, size_t bytes) {
  client_slot_t *slot = container_of(op, client_slot_t, retry_timer.op);
  if (status == 0 && !slot->stopping && slot->state == SLOT_WAITING)
    slot_connect(slot);
  objects_add(slot->service, -1);
}

static void slot_connect(client_slot_t *slot) {
  service_t *svc = slot->service;
  if (slot->stopping || atomic_load(&svc->stopping)) {
    slot->state = SLOT_IDLE;
    return;
  }
  session_t *s = session__new(svc);
  io_socket_t sock = IO_INVALID_SOCKET;
  if (s)
    sock = io_socket_tcp(address_family(&svc->opt.address));
  if (!s || sock == IO_INVALID_SOCKET) {
    if (s)
      session__free_unattached(s);
    schedule_retry(slot);
    atomic_fetch_add(&svc->connect_failures, 1);
    return;
  }
  s->tail->slot = slot; /* a client service's sessions have a tail */
  slot->session = s;
  slot->state = SLOT_CONNECTING;
  if (svc->opt.connect_timeout_ms)
    slot_timer_start(slot, &slot->connect_timer, svc->opt.connect_timeout_ms);
  session__connect(s, sock, io_handle_worker_index(&slot->handle));
}

static void on_slot_start(io_op_t *op, int status, size_t bytes) {
  client_slot_t *slot = container_of(op, client_slot_t, start_op);
  slot_connect(slot);
  objects_add(slot->service, -1);
}

static void on_slot_stop(io_op_t *op, int status, size_t bytes) {
  client_slot_t *slot = container_of(op, client_slot_t, stop_op);
  slot->stopping = 1;
  io_timer_cancel(&slot->retry_timer);
  io_timer_cancel(&slot->connect_timer);
  /* A connect still in flight is cut; a connected session closes
   * gracefully (it was swept already, unless it connected just after). */
  if (slot->state == SLOT_CONNECTING && slot->session)
    session_abort(slot->session, REASON_HOST_STOPPING);
  else if (slot->state == SLOT_CONNECTED && slot->session)
    session_disconnect(slot->session, REASON_HOST_STOPPING);
  objects_add(slot->service, -1);
}

static int client_start(service_t *svc, char *err, size_t err_len) {
  uint32_t n = svc->opt.client_sessions ? svc->opt.client_sessions : 1;
  svc->slots = calloc(n, sizeof *svc->slots);
  svc->slot_count = n;
  if (!svc->slots) {
    snprintf(err, err_len, "service %s: out of memory", svc->name);
    return -1;
  }
  for (uint32_t i = 0; i < n; i++) {
    client_slot_t *slot = &svc->slots[i];
    slot->service = svc;
    slot->index = (int)i;
    slot->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)(uintptr_t)slot << 1) ^
                clock_now_ms();
    if (!slot->rng)
      slot->rng = 1;
    io_handle_open(svc->core->io, &slot->handle, IO_INVALID_SOCKET, -1);
    io_timer_init(&slot->connect_timer, &slot->handle, on_connect_timeout);
    io_timer_init(&slot->retry_timer, &slot->handle, on_retry);
    slot->start_op.complete = on_slot_start;
    slot->stop_op.complete = on_slot_stop;
    objects_add(svc, 1);
    io_post(&slot->handle, &slot->start_op, 0);
  }
  return 0;
}

/* ---- idle sweep ---- */

/* The sweeper counts as one of the service's objects from its start until
 * its stop op has run and its timer has nothing more to complete: its
 * memory (freed with the service) is in use until then. */
static void sweeper_done(idle_sweeper_t *sw) {
  sw->running = 0;
  objects_add(sw->service, -1);
}

static void on_sweep(io_op_t *op, int status, size_t bytes) {
  (void)bytes;
  idle_sweeper_t *sw = container_of(op, idle_sweeper_t, timer.op);
  service_t *svc = sw->service;
  if (sw->stopped || status == IO_ECANCELED) {
    sweeper_done(sw);
    return;
  }
  if (status != 0) {
    /* The timer could not be armed (out of memory): idle sessions would
     * never be cut again, so say so and try once more next period. */
    log_write(LOG_ERROR, "service",
              "service %s: the idle-timeout sweep could not be scheduled "
              "(%s); retrying",
              svc->name, io_strerror(status));
  } else {
    /* A few hundred buckets per hold of the lock, so that accepts,
     * closes and broadcasts of a service with 100k sessions wait
     * microseconds for the sweep, not the half millisecond of a whole
     * walk. A rehash in between may make this sweep skip or look twice at
     * a few sessions: looking twice is harmless, and one skipped is
     * looked at by the next sweep, an eighth of the timeout later. */
    uint32_t now = (uint32_t)clock_now_ms();
    size_t bucket = 0, more;
    do {
      pthread_mutex_lock(&svc->lock);
      size_t end = bucket + SWEEP_BUCKETS_PER_LOCK;
      for (; bucket < svc->bucket_count && bucket < end; bucket++)
        for (session_t *s = svc->buckets[bucket]; s; s = s->hash_next)
          session__idle_check(s, now, svc->opt.idle_timeout_ms);
      more = bucket < svc->bucket_count;
      pthread_mutex_unlock(&svc->lock);
    } while (more);
  }
  io_timer_start(&sw->timer, sw->period_ms);
}

static void on_sweeper_start(io_op_t *op, int status, size_t bytes) {
  (void)status;
  (void)bytes;
  idle_sweeper_t *sw = container_of(op, idle_sweeper_t, start_op);
  if (atomic_load(&sw->service->stopping))
    return; /* its stop op follows (service_stop_accepting) and ends it */
  sw->running = 1;
  io_timer_start(&sw->timer, sw->period_ms);
}

static void on_sweeper_stop(io_op_t *op, int status, size_t bytes) {
  (void)status;
  (void)bytes;
  idle_sweeper_t *sw = container_of(op, idle_sweeper_t, stop_op);
  sw->stopped = 1;
  /* Armed: it completes cancelled. Due and queued: it completes and sees
   * the stop. Either way its completion ends the sweeper. Never started
   * (the service was stopping already): it ends here. */
  if (sw->running)
    io_timer_cancel(&sw->timer);
  else
    objects_add(sw->service, -1);
}

/* Made before the listener or the slots start, so that running out of
 * memory here leaves nothing to undo; posted once they have started, so
 * that a start that fails leaves nothing in flight (it is just freed). */
static idle_sweeper_t *sweeper_new(service_t *svc, char *err, size_t err_len) {
  idle_sweeper_t *sw = calloc(1, sizeof *sw);
  if (!sw) {
    snprintf(err, err_len, "service %s: out of memory", svc->name);
    return NULL;
  }
  uint32_t period = svc->opt.idle_timeout_ms / 8;
  sw->period_ms = period < 5 ? 5 : period > 1000 ? 1000 : period;
  sw->service = svc;
  io_handle_open(svc->core->io, &sw->handle, IO_INVALID_SOCKET, -1);
  io_timer_init(&sw->timer, &sw->handle, on_sweep);
  sw->start_op.complete = on_sweeper_start;
  sw->stop_op.complete = on_sweeper_stop;
  return sw;
}

static void sweeper_start(service_t *svc, idle_sweeper_t *sw) {
  svc->sweeper = sw;
  objects_add(svc, 1); /* until on_sweeper_stop, or its timer, ends it */
  io_post(&sw->handle, &sw->start_op, 0);
}

/* ---- lifecycle ---- */

int service_create(core_t *core, const service_options_t *opt,
                   service_t **out, char *err, size_t err_len) {
  if (!opt->factory.handler || !opt->factory.handler->on_connected ||
      !opt->factory.handler->on_recv || !opt->factory.handler->on_disconnected) {
    snprintf(err, err_len, "service %s: the session handler is incomplete",
             opt->name ? opt->name : "?");
    return -1;
  }
  if (opt->transport_layers > TRANSPORT_LAYERS_MAX ||
      (opt->transport_layers && !opt->transport)) {
    snprintf(err, err_len, "service %s: a transport has 1 to %d layers",
             opt->name ? opt->name : "?", TRANSPORT_LAYERS_MAX);
    return -1;
  }
  for (size_t i = 0; i < opt->transport_layers; i++) {
    const transport_ops_t *t = opt->transport[i].ops;
    if (!t || !t->open || !t->input || !t->output || !t->ready || !t->free) {
      snprintf(err, err_len,
               "service %s: transport layer %lu lacks a required operation",
               opt->name ? opt->name : "?", (unsigned long)i);
      return -1;
    }
  }
  service_t *svc = calloc(1, sizeof *svc);
  if (svc) {
    svc->bucket_count = 64;
    svc->buckets = calloc(svc->bucket_count, sizeof *svc->buckets);
  }
  if (!svc || !svc->buckets ||
      !(svc->name = strdup(opt->name ? opt->name : "service"))) {
    if (svc)
      free(svc->buckets);
    free(svc);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  svc->core = core;
  svc->opt = *opt;
  svc->opt.name = svc->name;
  if (svc->opt.max_recv_bytes == 0)
    svc->opt.max_recv_bytes = 65536;
  if (svc->opt.close_timeout_ms == 0)
    svc->opt.close_timeout_ms = 5000;
  pthread_mutex_init(&svc->lock, NULL);
  pthread_cond_init(&svc->changed, NULL);
  *out = svc;
  return 0;
}

int service_start(service_t *svc, char *err, size_t err_len) {
  if (svc->started) {
    snprintf(err, err_len, "service %s: already started", svc->name);
    return -1;
  }
  idle_sweeper_t *sweeper = NULL;
  if (svc->opt.idle_timeout_ms && !(sweeper = sweeper_new(svc, err, err_len)))
    return -1;
  int rc = svc->opt.type == SERVICE_SERVER ? listener_start(svc, err, err_len)
                                           : client_start(svc, err, err_len);
  if (rc != 0) {
    free(sweeper); /* never posted: nothing of it is in flight */
    return rc;
  }
  if (sweeper)
    sweeper_start(svc, sweeper);
  svc->started = 1;
  return rc;
}

void service_stop_accepting(service_t *svc) {
  pthread_mutex_lock(&svc->lock);
  int first = !atomic_load(&svc->stopping);
  atomic_store(&svc->stopping, 1);
  pthread_mutex_unlock(&svc->lock);
  if (!first || !svc->started)
    return;
  if (svc->listener) {
    io_post(&svc->listener->handle, &svc->listener->stop_op, 0);
    svc->listener = NULL; /* its stop op carries the service's reference */
  }
  if (svc->slots) {
    for (uint32_t i = 0; i < svc->slot_count; i++) {
      objects_add(svc, 1);
      io_post(&svc->slots[i].handle, &svc->slots[i].stop_op, 0);
    }
  }
  if (svc->sweeper)
    io_post(&svc->sweeper->handle, &svc->sweeper->stop_op, 0);
}

/* Measured on the monotonic clock (cond_wait.h). */
int service_wait_closed(service_t *svc, uint32_t timeout_ms) {
  uint64_t end = clock_now_ms() + timeout_ms;
  pthread_mutex_lock(&svc->lock);
  while (svc->objects > 0)
    if (cond_wait_until_ms(&svc->changed, &svc->lock, end))
      break;
  int rc = svc->objects == 0 ? 0 : -1;
  pthread_mutex_unlock(&svc->lock);
  return rc;
}

/* Names what keeps a stopped service alive: sessions (a plugin that never
 * released one, or an operation that never completed) and the rest (the
 * listener's or client slots' operations still in flight). */
static void log_leftovers(service_t *svc, uint32_t waited_ms) {
  char open_ids[160] = "";
  size_t used = 0;
  int listed = 0;
  pthread_mutex_lock(&svc->lock);
  long objects = svc->objects, sessions = svc->session_objects;
  int full = 0;
  FOR_EACH_SESSION(svc, s) {
    if (full || listed == 5)
      break; /* this bucket's chain; the next ones stop here too */
    int n = snprintf(open_ids + used, sizeof open_ids - used, "%s%llu",
                     listed ? ", " : "", (unsigned long long)s->id);
    if (n < 0 || (size_t)n >= sizeof open_ids - used) {
      full = 1;
      break;
    }
    used += (size_t)n;
    listed++;
  }
  uint64_t still_open = svc->open_sessions;
  pthread_mutex_unlock(&svc->lock);
  log_write(LOG_ERROR, "service",
            "service %s: %ld objects still referenced %u ms after stop: %ld "
            "sessions (%llu never closed%s%s%s) and %ld listener or client "
            "operations; leaking them rather than freeing memory in use (a "
            "plugin that kept a session must release it)",
            svc->name, objects, (unsigned)waited_ms, sessions,
            (unsigned long long)still_open,
            listed ? ": id " : "", open_ids,
            still_open > (uint64_t)listed ? ", ..." : "", objects - sessions);
}

void service_destroy(service_t *svc) {
  (void)service_destroy_within(svc, 10000);
}

int service_destroy_within(service_t *svc, uint32_t timeout_ms) {
  if (!svc)
    return 0;
  service_stop_accepting(svc);
  service_abort_all(svc, REASON_HOST_STOPPING);
  if (service_wait_closed(svc, timeout_ms) != 0) {
    /* Something (usually a plugin) still holds a session: keep the memory
     * it may reach rather than free it under it, and say what is held. */
    log_leftovers(svc, timeout_ms);
    return -1;
  }
  free(svc->buckets);
  free(svc->slots);
  free(svc->sweeper);
  pthread_mutex_destroy(&svc->lock);
  pthread_cond_destroy(&svc->changed);
  free(svc->name);
  free(svc);
  return 0;
}
