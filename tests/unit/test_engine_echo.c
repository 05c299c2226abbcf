/* The engine end to end on loopback: a server service echoes, and every
 * session behaviour a plugin relies on (SPEC sections 2, 3 and 7) is checked
 * from both ends of the connection. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "testutil.h"

/* ---- what a test's sessions do, and what they saw ---- */

typedef enum mode {
  MODE_ECHO,
  MODE_SINK,      /* consumes nothing */
  MODE_FLOOD,     /* sends from a timer until refused */
  MODE_BYE,       /* echoes; "bye" queues a tail, then disconnects */
  MODE_TIMERS,    /* one-shot, repeating and stopped timers */
  MODE_SILENT,    /* does nothing; the test drives it */
  MODE_HOLD       /* on input waits for the test, then aborts itself */
} mode_t_;

typedef struct behaviour {
  mode_t_ mode;
  atomic_int connected;
  atomic_int disconnected;
  atomic_int reasons[10];
  atomic_int violations; /* overlap, double callbacks, late timers */
  atomic_uint_fast64_t last_id;
  atomic_int send_after_close; /* the result of a send after disconnect */
  atomic_int flood_refused;
  atomic_int posts_run;
  atomic_int posts_out_of_order;
  atomic_int once_fired, repeat_fired, stopped_fired, stopped_after_stop;
  atomic_int timer_in_disconnect; /* session_timer_start there: 0 expected */
  atomic_int in_recv, timer_started;
} behaviour_t;

typedef struct sess {
  atomic_int in_cb;
  int connected;
  int disconnected;
  int posts_seen;
  uint64_t stop_me;
  int stop_requested;
} sess_t;

#define TAIL_BYTES (256 * 1024)

static size_t prepare(void *ctx, void **context) {
  *context = ctx;
  return sizeof(sess_t);
}

static behaviour_t *beh(session_t *s) { return session_context(s); }
static sess_t *st(session_t *s) { return session_extra(s); }

static void enter(session_t *s) {
  if (atomic_exchange(&st(s)->in_cb, 1) != 0)
    atomic_fetch_add(&beh(s)->violations, 1);
  if (st(s)->disconnected)
    atomic_fetch_add(&beh(s)->violations, 1);
}
static void leave(session_t *s) { atomic_store(&st(s)->in_cb, 0); }

static void flood_tick(session_t *s, void *arg) {
  (void)arg;
  enter(s);
  static uint8_t chunk[32 * 1024];
  int rc = session_send(s, chunk, sizeof chunk);
  if (rc == ENGINE_E_QUEUE_FULL)
    atomic_fetch_add(&beh(s)->flood_refused, 1);
  leave(s);
}

static void once_fn(session_t *s, void *arg) {
  (void)arg;
  enter(s);
  atomic_fetch_add(&beh(s)->once_fired, 1);
  leave(s);
}

static void repeat_fn(session_t *s, void *arg) {
  (void)arg;
  enter(s);
  atomic_fetch_add(&beh(s)->repeat_fired, 1);
  leave(s);
}

static void stopped_fn(session_t *s, void *arg) {
  (void)arg;
  enter(s);
  if (st(s)->stop_requested)
    atomic_fetch_add(&beh(s)->stopped_after_stop, 1);
  int n = atomic_fetch_add(&beh(s)->stopped_fired, 1) + 1;
  if (n == 3) {
    st(s)->stop_requested = 1;
    ck_assert_int_eq(session_timer_stop(s, st(s)->stop_me), ENGINE_OK);
    ck_assert_int_eq(session_timer_stop(s, st(s)->stop_me), ENGINE_E_NOTFOUND);
  }
  leave(s);
}

static void on_connected(session_t *s) {
  enter(s);
  behaviour_t *b = beh(s);
  if (st(s)->connected++)
    atomic_fetch_add(&b->violations, 1);
  atomic_store(&b->last_id, session_id(s));
  if (b->mode == MODE_FLOOD)
    session_timer_start(s, 1, 1, flood_tick, NULL);
  if (b->mode == MODE_TIMERS) {
    ck_assert_uint_gt(session_timer_start(s, 20, 0, once_fn, NULL), 0);
    ck_assert_uint_gt(session_timer_start(s, 5, 5, repeat_fn, NULL), 0);
    st(s)->stop_me = session_timer_start(s, 5, 5, stopped_fn, NULL);
    ck_assert_uint_gt(st(s)->stop_me, 0);
  }
  atomic_fetch_add(&b->connected, 1);
  leave(s);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  enter(s);
  behaviour_t *b = beh(s);
  size_t used = len;
  switch (b->mode) {
  case MODE_SINK:
    used = 0;
    break;
  case MODE_BYE:
    if (len >= 3 && memcmp(data + len - 3, "bye", 3) == 0) {
      static uint8_t tail[TAIL_BYTES];
      for (size_t i = 0; i < sizeof tail; i++)
        tail[i] = (uint8_t)(i * 7 + 1);
      ck_assert_int_eq(session_send(s, tail, sizeof tail), ENGINE_OK);
      ck_assert_int_eq(session_disconnect(s, REASON_LOCAL), ENGINE_OK);
      atomic_store(&b->send_after_close, session_send(s, "x", 1));
    } else {
      session_send(s, data, len);
    }
    break;
  case MODE_HOLD:
    atomic_store(&b->in_recv, 1);
    for (int i = 0; i < 5000 && !atomic_load(&b->timer_started); i++) {
      tu_sleep_ms(1);
    }
    session_abort(s, REASON_LOCAL);
    break;
  case MODE_ECHO:
  case MODE_TIMERS:
    session_send(s, data, len);
    break;
  default:
    break;
  }
  leave(s);
  return used;
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  enter(s);
  behaviour_t *b = beh(s);
  if (!st(s)->connected)
    atomic_fetch_add(&b->violations, 1);
  st(s)->disconnected++;
  if (reason > 0 && reason < 10)
    atomic_fetch_add(&b->reasons[reason], 1);
  if (session_timer_start(s, 1, 0, once_fn, NULL) != 0)
    atomic_fetch_add(&b->timer_in_disconnect, 1);
  atomic_store(&st(s)->in_cb, 0);
  atomic_fetch_add(&b->disconnected, 1);
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
};

/* ---- set-up ---- */

typedef struct rig {
  core_t *core;
  service_t *svc;
  int port;
  behaviour_t b;
} rig_t;

static void rig_start(rig_t *r, mode_t_ mode, const char *address, int threads,
                      void (*tweak)(service_options_t *)) {
  memset(r, 0, sizeof *r);
  r->b.mode = mode;
  char err[256];
  ck_assert_msg(core_create("test", threads, CORE_BACKEND_DEFAULT, &r->core, err, sizeof err) == 0,
                "%s", err);
  service_options_t o;
  service_options_init(&o);
  o.name = "echo";
  ck_assert_int_eq(address_parse(address, &o.address, err, sizeof err), 0);
  o.factory.handler = &handler;
  o.factory.ctx = &r->b;
  o.factory.prepare = prepare;
  if (tweak)
    tweak(&o);
  ck_assert_msg(service_create(r->core, &o, &r->svc, err, sizeof err) == 0,
                "%s", err);
  ck_assert_msg(service_start(r->svc, err, sizeof err) == 0, "%s", err);
  address_t bound;
  ck_assert_int_eq(service_local_address(r->svc, &bound), 0);
  r->port = address_port(&bound);
  ck_assert_int_gt(r->port, 0);
}

static void rig_stop(rig_t *r) {
  service_destroy(r->svc);
  core_destroy(r->core);
  ck_assert_int_eq(atomic_load(&r->b.violations), 0);
  ck_assert_int_eq(atomic_load(&r->b.connected),
                   atomic_load(&r->b.disconnected));
  ck_assert_int_eq(atomic_load(&r->b.timer_in_disconnect), 0);
  ck_assert_int_eq(engine_live_objects(), 0);
}

static uint8_t pattern(uint64_t conn, int msg, size_t i) {
  uint64_t x = conn * 0x9E3779B97F4A7C15ULL + (uint64_t)msg * 0x632BE59BD9B4E019ULL +
               i * 0x2545F4914F6CDD1DULL;
  return (uint8_t)(x >> 56);
}

/* ---- 1,000 concurrent sessions, random sizes, every byte checked ---- */

#define ECHO_CLIENTS 1000
#define ECHO_THREADS 4
#define ECHO_MESSAGES 3
#define ECHO_MAX_BYTES (64 * 1024)

typedef struct conn {
  int fd;
  int msg;
  size_t size, sent, got;
} conn_t;

typedef struct echo_thread {
  int port;
  int index;
  int count;
  atomic_int *connected_clients;
  int errors;
  uint64_t bytes_checked;
} echo_thread_t;

static void next_message(conn_t *c, uint64_t *rng) {
  c->size = 1 + (size_t)(tu_rand(rng) % ECHO_MAX_BYTES);
  c->sent = c->got = 0;
}

static void *echo_client(void *arg) {
  echo_thread_t *t = arg;
  conn_t *conns = calloc((size_t)t->count, sizeof *conns);
  struct pollfd *pfds = calloc((size_t)t->count, sizeof *pfds);
  uint8_t *buf = malloc(ECHO_MAX_BYTES);
  uint64_t rng = 0x1234567ULL + (uint64_t)t->index * 7919;
  for (int i = 0; i < t->count; i++) {
    conns[i].fd = tu_connect(t->port, 0);
    if (conns[i].fd < 0) {
      t->errors++;
      continue;
    }
    tu_set_nonblocking(conns[i].fd);
    atomic_fetch_add(t->connected_clients, 1);
  }
  /* Wait until every client of every thread is connected: the server then
   * holds all sessions at once. */
  for (int i = 0; i < 20000 && atomic_load(t->connected_clients) < ECHO_CLIENTS;
       i++) {
    tu_sleep_ms(1);
  }
  for (int i = 0; i < t->count; i++)
    next_message(&conns[i], &rng);
  int done = 0;
  for (int i = 0; i < t->count; i++)
    if (conns[i].fd < 0)
      done++;
  for (int round = 0; done < t->count && round < 1000000; round++) {
    int n = 0;
    for (int i = 0; i < t->count; i++) {
      conn_t *c = &conns[i];
      if (c->fd < 0 || c->msg >= ECHO_MESSAGES)
        continue;
      pfds[n].fd = c->fd;
      pfds[n].events = POLLIN | (c->sent < c->size ? POLLOUT : 0);
      pfds[n].revents = 0;
      n++;
    }
    int r = poll(pfds, (nfds_t)n, 10000);
    if (r <= 0) {
      t->errors++;
      break;
    }
    int k = 0;
    for (int i = 0; i < t->count; i++) {
      conn_t *c = &conns[i];
      if (c->fd < 0 || c->msg >= ECHO_MESSAGES)
        continue;
      struct pollfd *p = &pfds[k++];
      uint64_t id = (uint64_t)t->index * 100000 + (uint64_t)i;
      if ((p->revents & POLLOUT) && c->sent < c->size) {
        size_t len = c->size - c->sent;
        if (len > ECHO_MAX_BYTES)
          len = ECHO_MAX_BYTES;
        for (size_t j = 0; j < len; j++)
          buf[j] = pattern(id, c->msg, c->sent + j);
        ssize_t w = send(c->fd, (const void *)buf, len, MSG_NOSIGNAL);
        if (w > 0)
          c->sent += (size_t)w;
        else if (w < 0 && !tu_would_block()) {
          t->errors++;
          c->msg = ECHO_MESSAGES;
          done++;
          continue;
        }
      }
      if (p->revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t got = recv(c->fd, (void *)buf, ECHO_MAX_BYTES, 0);
        if (got <= 0 && !(got < 0 && tu_would_block())) {
          t->errors++;
          c->msg = ECHO_MESSAGES;
          done++;
          continue;
        }
        for (ssize_t j = 0; j < got; j++) {
          if (c->got + (size_t)j >= c->sent ||
              buf[j] != pattern(id, c->msg, c->got + (size_t)j)) {
            t->errors++;
            break;
          }
        }
        if (got > 0) {
          c->got += (size_t)got;
          t->bytes_checked += (uint64_t)got;
        }
        if (c->got == c->size) {
          c->msg++;
          if (c->msg >= ECHO_MESSAGES)
            done++;
          else
            next_message(c, &rng);
        }
      }
    }
  }
  for (int i = 0; i < t->count; i++)
    if (conns[i].fd >= 0)
      tu_close(conns[i].fd);
  free(conns);
  free(pfds);
  free(buf);
  return NULL;
}

START_TEST(test_echo_1000_concurrent_sessions_every_byte_checked) {
  tu_raise_fd_limit();
  rig_t r;
  rig_start(&r, MODE_ECHO, "127.0.0.1:0", 2, NULL);
  ck_assert_int_eq(core_thread_count(r.core), 2);
  atomic_int connected_clients = 0;
  pthread_t th[ECHO_THREADS];
  echo_thread_t et[ECHO_THREADS];
  for (int i = 0; i < ECHO_THREADS; i++) {
    et[i] = (echo_thread_t){.port = r.port,
                            .index = i,
                            .count = ECHO_CLIENTS / ECHO_THREADS,
                            .connected_clients = &connected_clients};
    pthread_create(&th[i], NULL, echo_client, &et[i]);
  }
  /* Every session is open on the server at the same time. */
  ck_assert(tu_wait_at_least(&r.b.connected, ECHO_CLIENTS, 20000));
  uint64_t checked = 0;
  for (int i = 0; i < ECHO_THREADS; i++) {
    pthread_join(th[i], NULL);
    ck_assert_int_eq(et[i].errors, 0);
    checked += et[i].bytes_checked;
  }
  fprintf(stderr, "echo: %llu bytes checked\n", (unsigned long long)checked);
  ck_assert(tu_wait_at_least(&r.b.disconnected, ECHO_CLIENTS, 20000));
  ck_assert_int_eq(atomic_load(&r.b.reasons[REASON_PEER_CLOSED]), ECHO_CLIENTS);
  service_stats_t stats;
  service_get_stats(r.svc, &stats);
  ck_assert_uint_eq(stats.accepted, ECHO_CLIENTS);
  ck_assert_uint_eq(stats.bytes_in, checked);
  ck_assert_uint_eq(stats.bytes_out, checked);
  ck_assert_uint_eq(stats.sessions_now, 0);
  rig_stop(&r);
}
END_TEST

START_TEST(test_echo_over_ipv6_loopback) {
  rig_t r;
  rig_start(&r, MODE_ECHO, "[::1]:0", 2, NULL);
  int fd = tu_connect(r.port, 1);
  ck_assert_int_ge(fd, 0);
  char msg[] = "hello over IPv6";
  char back[sizeof msg];
  ck_assert_int_eq(tu_write_all(fd, msg, sizeof msg), 0);
  ck_assert_int_eq(tu_read_exact(fd, back, sizeof back, 5000), 0);
  ck_assert_mem_eq(msg, back, sizeof msg);
  tu_close(fd);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  rig_stop(&r);
}
END_TEST

START_TEST(test_connected_once_then_disconnected_once_when_peer_closes) {
  rig_t r;
  rig_start(&r, MODE_ECHO, "127.0.0.1:0", 2, NULL);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert(tu_wait_at_least(&r.b.connected, 1, 5000));
  ck_assert_int_eq(atomic_load(&r.b.disconnected), 0);
  tu_close(fd);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  ck_assert_int_eq(atomic_load(&r.b.reasons[REASON_PEER_CLOSED]), 1);
  ck_assert_int_eq(atomic_load(&r.b.connected), 1);
  ck_assert_int_eq(atomic_load(&r.b.disconnected), 1);
  rig_stop(&r);
}
END_TEST

START_TEST(test_server_disconnect_flushes_queue_then_fin_and_reason_local) {
  rig_t r;
  rig_start(&r, MODE_BYE, "127.0.0.1:0", 2, NULL);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(tu_write_all(fd, "bye", 3), 0);
  /* Everything queued before the disconnect arrives, then FIN. */
  static uint8_t tail[TAIL_BYTES];
  ck_assert_int_eq(tu_read_exact(fd, tail, sizeof tail, 5000), 0);
  for (size_t i = 0; i < sizeof tail; i++)
    ck_assert_uint_eq(tail[i], (uint8_t)(i * 7 + 1));
  ck_assert_int_eq(tu_wait_closed(fd, 5000), 1);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  ck_assert_int_eq(atomic_load(&r.b.reasons[REASON_LOCAL]), 1);
  ck_assert_int_eq(atomic_load(&r.b.send_after_close), ENGINE_E_CLOSED);
  tu_close(fd);
  rig_stop(&r);
}
END_TEST

START_TEST(test_send_after_disconnect_returns_closed) {
  rig_t r;
  rig_start(&r, MODE_SILENT, "127.0.0.1:0", 2, NULL);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert(tu_wait_at_least(&r.b.connected, 1, 5000));
  session_t *s = service_find_session(r.svc, atomic_load(&r.b.last_id));
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq(session_is_open(s), 1);
  ck_assert_int_eq(session_send(s, "hi", 2), ENGINE_OK);
  ck_assert_int_eq(session_disconnect(s, REASON_LOCAL), ENGINE_OK);
  ck_assert_int_eq(session_send(s, "x", 1), ENGINE_E_CLOSED);
  char hi[2];
  ck_assert_int_eq(tu_read_exact(fd, hi, 2, 5000), 0);
  ck_assert_int_eq(tu_wait_closed(fd, 5000), 1);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  /* Held by the test after it ended: every call fails cleanly. */
  ck_assert_int_eq(session_is_open(s), 0);
  ck_assert_int_eq(session_send(s, "x", 1), ENGINE_E_CLOSED);
  ck_assert_int_eq(session_disconnect(s, REASON_LOCAL), ENGINE_E_CLOSED);
  ck_assert_int_eq(session_abort(s, REASON_LOCAL), ENGINE_E_CLOSED);
  ck_assert_int_eq(session_post(s, once_fn, NULL), ENGINE_E_CLOSED);
  ck_assert_uint_eq(session_timer_start(s, 1, 0, once_fn, NULL), 0);
  session_release(s);
  tu_close(fd);
  rig_stop(&r);
}
END_TEST

static void small_queue(service_options_t *o) {
  o->send_queue_limit_bytes = 256 * 1024;
}

START_TEST(test_send_queue_limit_disconnects_slow_reader_send_queue_full) {
  rig_t r;
  rig_start(&r, MODE_FLOOD, "127.0.0.1:0", 2, small_queue);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  /* The client never reads: kernel buffers fill, then the queue. */
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 20000));
  ck_assert_int_eq(atomic_load(&r.b.reasons[REASON_SEND_QUEUE_FULL]), 1);
  ck_assert_int_eq(atomic_load(&r.b.flood_refused), 1);
  ck_assert_int_ne(tu_wait_closed(fd, 5000), 0);
  tu_close(fd);
  rig_stop(&r);
}
END_TEST

static void small_recv(service_options_t *o) { o->max_recv_bytes = 1024; }

START_TEST(test_unconsumed_input_past_max_recv_bytes_is_protocol_error) {
  rig_t r;
  rig_start(&r, MODE_SINK, "127.0.0.1:0", 2, small_recv);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  uint8_t junk[2000];
  memset(junk, 'j', sizeof junk);
  ck_assert_int_eq(tu_write_all(fd, junk, sizeof junk), 0);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  ck_assert_int_eq(atomic_load(&r.b.reasons[REASON_PROTOCOL_ERROR]), 1);
  ck_assert_int_ne(tu_wait_closed(fd, 5000), 0);
  tu_close(fd);
  rig_stop(&r);
}
END_TEST

/* idle_timeout_ms counts from a session's last receive (its start, for one
 * that never talks). The window a cut must fall in is [IDLE_MS, IDLE_MS +
 * IDLE_MARGIN_MS] from the last byte: a deadline at half or twice the
 * setting falls outside it. */
enum { IDLE_MS = 500, IDLE_MARGIN_MS = 300 };

static void idle_500(service_options_t *o) { o->idle_timeout_ms = IDLE_MS; }

static uint64_t mono_ms(void) { return tu_now_ms(); }

typedef struct idle_peer {
  int fd;
  uint64_t before, after; /* around its last byte (or its connect) */
  uint64_t cut;           /* when its end was seen; 0 while open */
} idle_peer_t;

/* Sees whether a peer's session was cut, waiting at most 1 ms. */
static void see_cut(idle_peer_t *p) {
  if (!p->cut && tu_wait_closed(p->fd, 1) != 0)
    p->cut = mono_ms();
}

static void assert_cut_in_window(const idle_peer_t *p, const char *name) {
  ck_assert_msg(p->cut != 0, "%s was never cut", name);
  ck_assert_msg(p->cut - p->before >= IDLE_MS,
                "%s cut early: %llu ms after its last byte (idle %d)", name,
                (unsigned long long)(p->cut - p->before), IDLE_MS);
  ck_assert_msg(p->cut - p->after <= IDLE_MS + IDLE_MARGIN_MS,
                "%s cut late: %llu ms after its last byte (idle %d)", name,
                (unsigned long long)(p->cut - p->after), IDLE_MS);
}

START_TEST(test_idle_timeout_disconnects_silent_session_not_chatty_one) {
  rig_t r;
  rig_start(&r, MODE_ECHO, "127.0.0.1:0", 2, idle_500);
  idle_peer_t silent = {0}, quiet = {0};
  silent.before = mono_ms();
  silent.fd = tu_connect(r.port, 0);
  silent.after = mono_ms();
  quiet.fd = tu_connect(r.port, 0);
  int chatty = tu_connect(r.port, 0);
  ck_assert_int_ge(silent.fd, 0);
  ck_assert_int_ge(quiet.fd, 0);
  ck_assert_int_ge(chatty, 0);
  uint64_t start = mono_ms();
  int quiet_talked = 0;
  /* The chatty client talks every few ms for three idle periods and stays;
   * the quiet one talks once, 0.6 idle in; each round looks whether the
   * others were cut. */
  while (mono_ms() - start < 3 * IDLE_MS) {
    char c = 'a', back;
    ck_assert_int_eq(tu_write_all(chatty, &c, 1), 0);
    ck_assert_int_eq(tu_read_exact(chatty, &back, 1, 5000), 0);
    if (!quiet_talked && mono_ms() - start >= IDLE_MS * 6 / 10) {
      quiet.before = mono_ms();
      ck_assert_int_eq(tu_write_all(quiet.fd, &c, 1), 0);
      ck_assert_int_eq(tu_read_exact(quiet.fd, &back, 1, 5000), 0);
      quiet.after = mono_ms();
      quiet_talked = 1;
    }
    see_cut(&silent);
    if (quiet_talked)
      see_cut(&quiet);
  }
  assert_cut_in_window(&silent, "the silent peer");
  assert_cut_in_window(&quiet, "the peer that talked once");
  printf("idle: idle_timeout_ms %d: the silent peer cut %llu ms, the one "
         "that talked once %llu ms after its last byte\n",
         IDLE_MS, (unsigned long long)(silent.cut - silent.before),
         (unsigned long long)(quiet.cut - quiet.before));
  ck_assert_int_eq(atomic_load(&r.b.reasons[REASON_IDLE_TIMEOUT]), 2);
  ck_assert_int_eq(tu_wait_closed(chatty, 5000), 1);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 3, 5000));
  ck_assert_int_eq(atomic_load(&r.b.reasons[REASON_IDLE_TIMEOUT]), 3);
  tu_close(silent.fd);
  tu_close(quiet.fd);
  tu_close(chatty);
  rig_stop(&r);
}
END_TEST

static int never(void *arg) {
  (void)arg;
  return 0;
}

START_TEST(test_timers_once_repeat_stop_and_never_after_disconnected) {
  rig_t r;
  rig_start(&r, MODE_TIMERS, "127.0.0.1:0", 2, NULL);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert(tu_wait_at_least(&r.b.repeat_fired, 10, 5000));
  ck_assert(tu_wait_at_least(&r.b.once_fired, 1, 5000));
  ck_assert(tu_wait_at_least(&r.b.stopped_fired, 3, 5000));
  tu_wait_until(never, NULL, 30);
  ck_assert_int_eq(atomic_load(&r.b.once_fired), 1);
  ck_assert_int_eq(atomic_load(&r.b.stopped_fired), 3);
  ck_assert_int_eq(atomic_load(&r.b.stopped_after_stop), 0);
  tu_close(fd);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  int after = atomic_load(&r.b.repeat_fired);
  tu_wait_until(never, NULL, 30);
  ck_assert_int_eq(atomic_load(&r.b.repeat_fired), after);
  ck_assert_int_eq(atomic_load(&r.b.once_fired), 1);
  rig_stop(&r); /* violations count a timer run after on_disconnected */
}
END_TEST

START_TEST(test_timer_started_from_thread_while_closing_does_not_hold_session) {
  rig_t r;
  rig_start(&r, MODE_HOLD, "127.0.0.1:0", 2, NULL);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert(tu_wait_at_least(&r.b.connected, 1, 5000));
  session_t *s = service_find_session(r.svc, atomic_load(&r.b.last_id));
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq(tu_write_all(fd, "x", 1), 0);
  ck_assert(tu_wait_at_least(&r.b.in_recv, 1, 5000));
  /* The worker is inside on_recv and closes the session right after: the
   * long timer must be cancelled with it, not kept for 60 s. */
  ck_assert_uint_gt(session_timer_start(s, 60000, 0, once_fn, NULL), 0);
  atomic_store(&r.b.timer_started, 1);
  session_release(s);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  uint64_t t0 = mono_ms();
  service_destroy(r.svc);
  r.svc = NULL;
  ck_assert_uint_lt(mono_ms() - t0, 3000);
  ck_assert_int_eq(atomic_load(&r.b.once_fired), 0);
  tu_close(fd);
  rig_stop(&r);
}
END_TEST

#define POSTS 2000

static void post_fn(session_t *s, void *arg) {
  enter(s);
  int n = (int)(intptr_t)arg;
  if (n != st(s)->posts_seen)
    atomic_fetch_add(&beh(s)->posts_out_of_order, 1);
  st(s)->posts_seen = n + 1;
  atomic_fetch_add(&beh(s)->posts_run, 1);
  leave(s);
}

START_TEST(test_post_from_foreign_thread_runs_in_order_on_session) {
  rig_t r;
  rig_start(&r, MODE_ECHO, "127.0.0.1:0", 2, NULL);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert(tu_wait_at_least(&r.b.connected, 1, 5000));
  session_t *s = service_find_session(r.svc, atomic_load(&r.b.last_id));
  ck_assert_ptr_nonnull(s);
  /* Posts interleave with traffic: still one at a time, in order. */
  for (int i = 0; i < POSTS; i++) {
    ck_assert_int_eq(session_post(s, post_fn, (void *)(intptr_t)i), ENGINE_OK);
    if (i % 200 == 0) {
      char c = 'p', back;
      ck_assert_int_eq(tu_write_all(fd, &c, 1), 0);
      ck_assert_int_eq(tu_read_exact(fd, &back, 1, 5000), 0);
    }
  }
  ck_assert(tu_wait_at_least(&r.b.posts_run, POSTS, 5000));
  ck_assert_int_eq(atomic_load(&r.b.posts_out_of_order), 0);
  session_release(s);
  tu_close(fd);
  ck_assert(tu_wait_at_least(&r.b.disconnected, 1, 5000));
  rig_stop(&r);
}
END_TEST

START_TEST(test_find_session_and_broadcast_one_shared_buffer) {
  rig_t r;
  rig_start(&r, MODE_ECHO, "127.0.0.1:0", 2, NULL);
  enum { N = 5 };
  int fds[N];
  for (int i = 0; i < N; i++) {
    fds[i] = tu_connect(r.port, 0);
    ck_assert_int_ge(fds[i], 0);
  }
  ck_assert(tu_wait_at_least(&r.b.connected, N, 5000));
  session_t *s = service_find_session(r.svc, atomic_load(&r.b.last_id));
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_eq(session_id(s), atomic_load(&r.b.last_id));
  ck_assert_ptr_eq(session_service(s), r.svc);
  session_release(s);
  ck_assert_ptr_null(service_find_session(r.svc, 0xFFFFFFFFFFFFULL));
  shared_buf_t *buf = shared_buf_new(6);
  memcpy(shared_buf_data(buf), "hello", 6);
  ck_assert_uint_eq(shared_buf_len(buf), 6);
  ck_assert_int_eq(service_broadcast(r.svc, buf), N);
  shared_buf_release(buf); /* the queues keep their own references */
  for (int i = 0; i < N; i++) {
    char got[6];
    ck_assert_int_eq(tu_read_exact(fds[i], got, 6, 5000), 0);
    ck_assert_str_eq(got, "hello");
    tu_close(fds[i]);
  }
  ck_assert(tu_wait_at_least(&r.b.disconnected, N, 5000));
  rig_stop(&r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("engine_echo");
  TCase *tc = tcase_create("echo");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_echo_over_ipv6_loopback);
  tcase_add_test(tc, test_connected_once_then_disconnected_once_when_peer_closes);
  tcase_add_test(tc, test_server_disconnect_flushes_queue_then_fin_and_reason_local);
  tcase_add_test(tc, test_send_after_disconnect_returns_closed);
  tcase_add_test(tc, test_send_queue_limit_disconnects_slow_reader_send_queue_full);
  tcase_add_test(tc, test_unconsumed_input_past_max_recv_bytes_is_protocol_error);
  tcase_add_test(tc, test_idle_timeout_disconnects_silent_session_not_chatty_one);
  tcase_add_test(tc, test_timers_once_repeat_stop_and_never_after_disconnected);
  tcase_add_test(tc, test_post_from_foreign_thread_runs_in_order_on_session);
  tcase_add_test(tc,
                 test_timer_started_from_thread_while_closing_does_not_hold_session);
  tcase_add_test(tc, test_find_session_and_broadcast_one_shared_buffer);
  tcase_add_test(tc, test_echo_1000_concurrent_sessions_every_byte_checked);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
