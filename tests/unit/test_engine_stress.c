/* Lifetime stress (SPEC sections 2 and 3): many sessions that end every way
 * a session can end, at random moments, while receives, sends, timers, posts
 * and references held by a plugin-like thread are in flight. Whatever
 * happens, each session sees on_connected at most once, then on_disconnected
 * exactly once, callbacks never overlap, and every object is freed.
 *
 * IOCPHOST_STRESS_SESSIONS sets how many client connections are made in
 * total (default 100000; sanitizer builds use fewer). */
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

/* ---- shared observations ---- */

typedef struct tally {
  atomic_long prepared, freed;
  atomic_long connected, disconnected;
  atomic_long violations; /* overlap, twice, out of order */
  atomic_long timers_run, posts_run, plugin_ops;
  atomic_long reasons[10];
} tally_t;

static tally_t server_tally, client_tally;

enum { ST_NEW = 0, ST_CONNECTED = 1, ST_DISCONNECTED = 2 };

typedef struct sess {
  atomic_int state;
  atomic_int in_cb;
  uint64_t rng;
  int timers_started;
} sess_t;

static tally_t *tally_of(session_t *s) { return session_context(s); }
static sess_t *st(session_t *s) { return session_extra(s); }

static size_t prepare(void *ctx, void **context) {
  *context = ctx;
  atomic_fetch_add(&((tally_t *)ctx)->prepared, 1);
  return sizeof(sess_t);
}

static void enter(session_t *s) {
  if (atomic_exchange(&st(s)->in_cb, 1) != 0)
    atomic_fetch_add(&tally_of(s)->violations, 1);
}
static void leave(session_t *s) { atomic_store(&st(s)->in_cb, 0); }

static uint32_t roll(session_t *s, uint32_t n) {
  return (uint32_t)(tu_rand(&st(s)->rng) % n);
}

/* ---- the plugin-like thread: holds references, acts from outside ---- */

#define HELD_MAX 4096

static struct {
  pthread_mutex_t lock;
  session_t *held[HELD_MAX];
  int count;
  atomic_int stop;
} plugin = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void hand_to_plugin(session_t *s) {
  pthread_mutex_lock(&plugin.lock);
  if (plugin.count < HELD_MAX && !atomic_load(&plugin.stop)) {
    plugin.held[plugin.count++] = session_acquire(s);
  }
  pthread_mutex_unlock(&plugin.lock);
}

static void timer_fn(session_t *s, void *arg);
static void post_fn(session_t *s, void *arg);

static void *plugin_main(void *arg) {
  (void)arg;
  uint64_t rng = 0xC0FFEE;
  for (long i = 0; i < 100000000L; i++) {
    session_t *s = NULL;
    pthread_mutex_lock(&plugin.lock);
    int stopping = atomic_load(&plugin.stop);
    /* Keep a few references for a while unless stopping. */
    if (plugin.count > (stopping ? 0 : 16)) {
      int k = (int)(tu_rand(&rng) % (uint64_t)plugin.count);
      s = plugin.held[k];
      plugin.held[k] = plugin.held[--plugin.count];
    }
    pthread_mutex_unlock(&plugin.lock);
    if (!s) {
      if (stopping)
        break;
      tu_sleep_us(200);
      continue;
    }
    switch (tu_rand(&rng) % 8) {
    case 0:
      session_disconnect(s, REASON_LOCAL);
      break;
    case 1:
      session_abort(s, REASON_LOCAL);
      break;
    case 2:
      session_timer_start(s, (uint32_t)(tu_rand(&rng) % 5), 0, timer_fn, NULL);
      break;
    case 3:
      session_post(s, post_fn, NULL);
      break;
    default:
      session_send(s, "plugin", 6);
      break;
    }
    (void)session_is_open(s);
    atomic_fetch_add(&tally_of(s)->plugin_ops, 1);
    session_release(s);
  }
  return NULL;
}

/* ---- the handler: random actions at random moments ---- */

static void act(session_t *s) {
  switch (roll(s, 16)) {
  case 0:
    session_disconnect(s, REASON_LOCAL);
    break;
  case 1:
    session_abort(s, REASON_LOCAL);
    break;
  case 2:
  case 3:
    if (st(s)->timers_started < 4) {
      st(s)->timers_started++;
      session_timer_start(s, roll(s, 10), roll(s, 2) ? 0 : 1 + roll(s, 5),
                          timer_fn, NULL);
    }
    break;
  case 4:
    session_post(s, post_fn, NULL);
    break;
  case 5:
    hand_to_plugin(s);
    break;
  default:
    break;
  }
}

static void timer_fn(session_t *s, void *arg) {
  (void)arg;
  enter(s);
  if (atomic_load(&st(s)->state) != ST_CONNECTED)
    atomic_fetch_add(&tally_of(s)->violations, 1);
  atomic_fetch_add(&tally_of(s)->timers_run, 1);
  session_send(s, "t", 1);
  act(s);
  leave(s);
}

static void post_fn(session_t *s, void *arg) {
  (void)arg;
  enter(s);
  if (atomic_load(&st(s)->state) != ST_CONNECTED)
    atomic_fetch_add(&tally_of(s)->violations, 1);
  atomic_fetch_add(&tally_of(s)->posts_run, 1);
  act(s);
  leave(s);
}

static void on_connected(session_t *s) {
  enter(s);
  int expected = ST_NEW;
  if (!atomic_compare_exchange_strong(&st(s)->state, &expected, ST_CONNECTED))
    atomic_fetch_add(&tally_of(s)->violations, 1);
  st(s)->rng = session_id(s) * 0x9E3779B97F4A7C15ULL + 1;
  atomic_fetch_add(&tally_of(s)->connected, 1);
  act(s);
  leave(s);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  enter(s);
  if (atomic_load(&st(s)->state) != ST_CONNECTED)
    atomic_fetch_add(&tally_of(s)->violations, 1);
  session_send(s, data, len);
  act(s);
  leave(s);
  return len;
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  enter(s);
  int expected = ST_CONNECTED;
  if (!atomic_compare_exchange_strong(&st(s)->state, &expected,
                                      ST_DISCONNECTED))
    atomic_fetch_add(&tally_of(s)->violations, 1);
  if (reason > 0 && reason < 10)
    atomic_fetch_add(&tally_of(s)->reasons[reason], 1);
  atomic_fetch_add(&tally_of(s)->disconnected, 1);
  leave(s);
}

static void on_free(session_t *s) {
  if (atomic_load(&st(s)->in_cb))
    atomic_fetch_add(&tally_of(s)->violations, 1);
  atomic_fetch_add(&tally_of(s)->freed, 1);
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
    .on_free = on_free,
};

/* ---- clients: many at a time, each ending at random ---- */

#define CLIENT_THREADS 4
#define CONCURRENT_PER_THREAD 125

typedef struct client_thread {
  int port;
  int index;
  long quota;
  long made;
  long connect_errors;
  atomic_int done;
} client_thread_t;

typedef struct slot {
  int fd;
  int action; /* 0 wait for echo then close, 1 wait then reset, 2 linger */
  uint64_t deadline;
  size_t want, got;
} slot_t;

static uint64_t mono_ms(void) { return tu_now_ms(); }

/* Connects from 127.0.x.y so that 100,000 short connections do not run out
 * of ephemeral ports (TIME_WAIT) on one source address. */
static int connect_from(int port, int thread, long n) {
  int fd = tu_socket(AF_INET);
  if (fd < 0)
    return -1;
  int one = 1;
#ifdef IP_BIND_ADDRESS_NO_PORT
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (const void *)&one, sizeof one);
  struct sockaddr_in src = {0};
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(0x7F000000u | (uint32_t)((thread + 1) << 16) |
                              (uint32_t)(1 + n % 200));
  struct sockaddr_in dst = {0};
  dst.sin_family = AF_INET;
  dst.sin_port = htons((uint16_t)port);
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
      connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
    tu_close(fd);
    return -1;
  }
  return fd;
}

static void reset_close(int fd) {
  tu_set_reset_on_close(fd);
  tu_close(fd);
}

static void *client_main(void *arg) {
  client_thread_t *t = arg;
  slot_t slots[CONCURRENT_PER_THREAD];
  struct pollfd pfds[CONCURRENT_PER_THREAD];
  int map[CONCURRENT_PER_THREAD];
  uint64_t rng = 0xABCDEF12345ULL * (uint64_t)(t->index + 1);
  for (int i = 0; i < CONCURRENT_PER_THREAD; i++)
    slots[i].fd = -1;
  char buf[4096];
  char msg[256];
  memset(msg, 'm', sizeof msg);
  long active = 0;
  for (long round = 0; round < 10000000L; round++) {
    /* Fill free slots with new connections. */
    for (int i = 0; i < CONCURRENT_PER_THREAD && t->made < t->quota; i++) {
      if (slots[i].fd >= 0)
        continue;
      int fd = connect_from(t->port, t->index, t->made);
      if (fd < 0) {
        t->connect_errors++;
        if (t->connect_errors > 1000)
          t->made = t->quota; /* give up; the test fails on the count */
        break;
      }
      t->made++;
      size_t len = 1 + (size_t)(tu_rand(&rng) % sizeof msg);
      int what = (int)(tu_rand(&rng) % 10);
      if (what < 3) { /* send and reset at once */
        send(fd, msg, len, MSG_NOSIGNAL);
        reset_close(fd);
        continue;
      }
      if (what < 5) { /* send and close at once */
        send(fd, msg, len, MSG_NOSIGNAL);
        tu_close(fd);
        continue;
      }
      if (what < 6) { /* reset without a word */
        reset_close(fd);
        continue;
      }
      tu_set_nonblocking(fd);
      send(fd, msg, len, MSG_NOSIGNAL);
      slots[i] = (slot_t){.fd = fd,
                          .action = (int)(tu_rand(&rng) % 3),
                          .deadline = mono_ms() + 1 + tu_rand(&rng) % 30,
                          .want = len,
                          .got = 0};
      active++;
    }
    if (active == 0 && t->made >= t->quota)
      break;
    int n = 0;
    for (int i = 0; i < CONCURRENT_PER_THREAD; i++) {
      if (slots[i].fd < 0)
        continue;
      pfds[n] = (struct pollfd){.fd = slots[i].fd, .events = POLLIN};
      map[n++] = i;
    }
    poll(pfds, (nfds_t)n, 2);
    uint64_t now = mono_ms();
    for (int k = 0; k < n; k++) {
      slot_t *sl = &slots[map[k]];
      int end = 0;
      if (pfds[k].revents) {
        ssize_t got = recv(sl->fd, buf, sizeof buf, 0);
        if (got > 0)
          sl->got += (size_t)got;
        else if (got == 0 || !tu_would_block())
          end = 1; /* the server ended it */
      }
      if (!end && sl->action != 2 && sl->got >= sl->want)
        end = 1;
      if (!end && now >= sl->deadline)
        end = 1;
      if (end) {
        if (sl->action == 1)
          reset_close(sl->fd);
        else
          tu_close(sl->fd);
        sl->fd = -1;
        active--;
      }
    }
  }
  atomic_store(&t->done, 1);
  return NULL;
}

/* ---- set-up ---- */

static long stress_sessions(void) {
  const char *v = getenv("IOCPHOST_STRESS_SESSIONS");
  long n = v ? strtol(v, NULL, 10) : 100000;
  return n > 0 ? n : 100000;
}

static void check_tally(tally_t *t, const char *who) {
  ck_assert_msg(atomic_load(&t->violations) == 0, "%s: %ld violations", who,
                atomic_load(&t->violations));
  ck_assert_msg(atomic_load(&t->connected) == atomic_load(&t->disconnected),
                "%s: %ld connected, %ld disconnected", who,
                atomic_load(&t->connected), atomic_load(&t->disconnected));
  ck_assert_msg(atomic_load(&t->prepared) == atomic_load(&t->freed),
                "%s: %ld prepared, %ld freed", who, atomic_load(&t->prepared),
                atomic_load(&t->freed));
}

static service_t *make_service(core_t *core, service_options_t *o) {
  char err[256];
  service_t *svc;
  ck_assert_msg(service_create(core, o, &svc, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(service_start(svc, err, sizeof err) == 0, "%s", err);
  return svc;
}

static void options(service_options_t *o, service_type_t type, tally_t *t,
                    const char *address) {
  char err[256];
  service_options_init(o);
  o->name = type == SERVICE_SERVER ? "stress" : "stress-client";
  o->type = type;
  ck_assert_int_eq(address_parse(address, &o->address, err, sizeof err), 0);
  o->factory.handler = &handler;
  o->factory.ctx = t;
  o->factory.prepare = prepare;
  o->close_timeout_ms = 1000;
  o->max_sessions = 100000;
}

START_TEST(test_sessions_ending_every_way_keep_callbacks_serial_and_free_all) {
  tu_raise_fd_limit();
  memset(&server_tally, 0, sizeof server_tally);
  memset(&client_tally, 0, sizeof client_tally);
  atomic_store(&plugin.stop, 0);
  char err[256];
  core_t *core;
  ck_assert_msg(core_create("stress", 2, CORE_BACKEND_DEFAULT, &core, err, sizeof err) == 0, "%s",
                err);
  service_options_t o;
  options(&o, SERVICE_SERVER, &server_tally, "127.0.0.1:0");
  service_t *server = make_service(core, &o);
  address_t bound;
  ck_assert_int_eq(service_local_address(server, &bound), 0);
  int port = address_port(&bound);

  /* Client sessions of the engine itself, connecting while being aborted:
   * a 1 ms connect timeout and aborts from the test thread. */
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  options(&o, SERVICE_CLIENT, &client_tally, target);
  o.client_sessions = 20;
  o.connect_timeout_ms = 1;
  o.reconnect_min_delay_ms = 1;
  o.reconnect_max_delay_ms = 4;
#ifdef _WIN32
  /* Under Wine every socket call is a round trip to one wineserver, so 20
   * sessions reconnecting every few milliseconds would fill the listener's
   * backlog faster than it accepts, and the test's own clients would wait on
   * SYN retransmits. Fewer, slower reconnects still connect while aborted. */
  o.client_sessions = 4;
  o.reconnect_min_delay_ms = 5;
  o.reconnect_max_delay_ms = 20;
#endif
  /* This part was once kept off under Wine, its rare "client session never
   * freed" blamed on Wine. It was the engine's own stop race: a connect that
   * completed after the stop's sweep registered a session nobody closed
   * (issue "Engine edges"; tests/unit/test_engine_edges.c). */
  service_t *client = make_service(core, &o);

  pthread_t plugin_thread;
  pthread_create(&plugin_thread, NULL, plugin_main, NULL);
  long total = stress_sessions();
  client_thread_t ct[CLIENT_THREADS];
  pthread_t th[CLIENT_THREADS];
  for (int i = 0; i < CLIENT_THREADS; i++) {
    ct[i] = (client_thread_t){.port = port,
                              .index = i,
                              .quota = total / CLIENT_THREADS +
                                       (i < total % CLIENT_THREADS)};
    pthread_create(&th[i], NULL, client_main, &ct[i]);
  }
  /* While the clients run, abort the client service's sessions now and
   * then, whatever state they are in. */
  for (int i = 0; i < 100000; i++) {
    int running = 0;
    for (int k = 0; k < CLIENT_THREADS; k++)
      running |= !atomic_load(&ct[k].done);
    if (!running)
      break;
    service_abort_all(client, REASON_LOCAL);
    tu_sleep_ms(3);
  }
  long made = 0, errors = 0;
  for (int i = 0; i < CLIENT_THREADS; i++) {
    pthread_join(th[i], NULL);
    made += ct[i].made;
    errors += ct[i].connect_errors;
  }
  /* The plugin gives its references back before the services go: a
   * service waits for its sessions' memory. */
  service_stop_accepting(client);
  service_stop_accepting(server);
  atomic_store(&plugin.stop, 1);
  pthread_join(plugin_thread, NULL);
  service_destroy(client);
  service_destroy(server);
  core_destroy(core);

  fprintf(stderr,
          "stress: %ld client connections (%ld connect errors); server: %ld "
          "sessions, %ld timers, %ld posts, %ld plugin ops; client service: "
          "%ld sessions\n",
          made, errors, atomic_load(&server_tally.connected),
          atomic_load(&server_tally.timers_run),
          atomic_load(&server_tally.posts_run),
          atomic_load(&server_tally.plugin_ops),
          atomic_load(&client_tally.connected));
  ck_assert_int_eq(made, total);
  ck_assert_int_lt(errors, total / 100 + 10);
  check_tally(&server_tally, "server");
  check_tally(&client_tally, "client service");
  /* Enough sessions reached on_connected to mean something. Many clients
   * reset or close before the host's kick runs; how many depends on the
   * machine's load, so this is a floor, not a ratio to expect. Under Wine,
   * where every socket call is a round trip to the wineserver, a busy
   * machine measured 47%, hence a lower floor there only. */
#ifdef _WIN32
  ck_assert_int_gt(atomic_load(&server_tally.connected), total / 5);
#else
  ck_assert_int_gt(atomic_load(&server_tally.connected), total / 2);
#endif
  ck_assert_int_gt(atomic_load(&server_tally.timers_run), 0);
  ck_assert_int_gt(atomic_load(&server_tally.posts_run), 0);
  ck_assert_int_gt(atomic_load(&server_tally.plugin_ops), 0);
  ck_assert_int_gt(atomic_load(&client_tally.connected), 0);
  ck_assert_int_eq(engine_live_objects(), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("engine_stress");
  TCase *tc = tcase_create("stress");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc,
                 test_sessions_ending_every_way_keep_callbacks_serial_and_free_all);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
