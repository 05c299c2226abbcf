/*
 * order_check: a test plugin that checks the host's per-session guarantees
 * (SPEC section 3) from the inside, on a "raw" service.
 *
 * For every session it records a phase (new, connected, disconnected) and
 * whether one of its callbacks is running. Every callback - on_connected,
 * on_recv, on_send, on_disconnected, its timers (timer_start) and functions
 * posted to it (post) from a thread this plugin owns - checks that:
 *   - no other callback of the same session is running (no overlap);
 *   - the phase is right: on_connected first and once, on_disconnected last
 *     and once, everything else in between;
 *   - the state pointer is the session's state.
 * Every broken rule counts as a violation; the first few are logged.
 * Received bytes are echoed back. on_unload logs one line:
 *   order_check summary: sessions=N disconnected=D callbacks=M violations=V
 * which tests/integration/test_order.py reads from the host's log.
 *
 * Settings: none ("{}").
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef _WIN32
#include <windows.h>
typedef HANDLE order_thread_t;
typedef SRWLOCK order_mutex_t;
#define ORDER_MUTEX_INIT SRWLOCK_INIT
#define order_lock(m) AcquireSRWLockExclusive(m)
#define order_unlock(m) ReleaseSRWLockExclusive(m)
#define order_sleep_ms(ms) Sleep(ms)
#else
#include <pthread.h>
#include <time.h>
typedef pthread_t order_thread_t;
typedef pthread_mutex_t order_mutex_t;
#define ORDER_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define order_lock(m) pthread_mutex_lock(m)
#define order_unlock(m) pthread_mutex_unlock(m)
static void order_sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
#endif

enum order_phase { PHASE_NEW = 0, PHASE_CONNECTED = 1, PHASE_DISCONNECTED = 2 };

#define VIOLATIONS_LOGGED 20

typedef struct order_state {
  atomic_int phase;
  atomic_int inside;
  uint64_t rng;
  uint64_t repeat_timer;
  uint32_t recv_calls;
  /* Registry of live sessions for the posting thread; guarded by
   * registry_mutex. `session` is acquired while the state is listed. */
  iocphost_session_t *session;
  struct order_state *prev, *next;
} order_state_t;

static const iocphost_api_t *api;

static atomic_ulong sessions;
static atomic_ulong disconnected;
static atomic_ulong callbacks;
static atomic_ulong violations;
static atomic_ulong timer_calls;
static atomic_ulong posted_calls;

static order_mutex_t registry_mutex = ORDER_MUTEX_INIT;
static order_state_t *registry;
static size_t registry_count;

static atomic_int poster_stop;
static int poster_running;
static order_thread_t poster;

/* Distinct addresses passed as `arg`, so a callback can check it got its
 * own argument back. */
static const char repeat_tag, oneshot_tag, post_tag;

static void violation(const char *where, const char *what) {
  unsigned long n = atomic_fetch_add(&violations, 1) + 1;
  if (n <= VIOLATIONS_LOGGED)
    api->log(api, IOCPHOST_LOG_ERROR, "order_check violation #%lu: %s: %s", n,
             where, what);
}

static void enter(iocphost_session_t *session, order_state_t *st,
                  const char *where, int expected_phase) {
  atomic_fetch_add(&callbacks, 1);
  if (!st) {
    violation(where, "state pointer is NULL");
    return;
  }
  if (atomic_exchange(&st->inside, 1))
    violation(where, "overlaps another callback of the same session");
  int phase = atomic_load(&st->phase);
  if (phase != expected_phase)
    violation(where, phase == PHASE_NEW            ? "runs before on_connected"
                     : phase == PHASE_DISCONNECTED ? "runs after on_disconnected"
                                                   : "on_connected twice");
  if (api->session_state(session) != st)
    violation(where, "state is not session_state(session)");
}

static void leave(order_state_t *st) {
  if (st)
    atomic_store(&st->inside, 0);
}

static uint32_t next_random(order_state_t *st) {
  /* xorshift64: cheap, per session, no shared state. */
  uint64_t x = st->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  st->rng = x;
  return (uint32_t)(x >> 32);
}

static void repeat_tick(iocphost_session_t *session, void *state, void *arg) {
  order_state_t *st = state;
  enter(session, st, "repeating timer", PHASE_CONNECTED);
  atomic_fetch_add(&timer_calls, 1);
  if (arg != &repeat_tag)
    violation("repeating timer", "wrong arg");
  leave(st);
}

static void oneshot_tick(iocphost_session_t *session, void *state, void *arg) {
  order_state_t *st = state;
  enter(session, st, "one-shot timer", PHASE_CONNECTED);
  atomic_fetch_add(&timer_calls, 1);
  if (arg != &oneshot_tag)
    violation("one-shot timer", "wrong arg");
  leave(st);
}

static void posted(iocphost_session_t *session, void *state, void *arg) {
  order_state_t *st = state;
  enter(session, st, "posted function", PHASE_CONNECTED);
  atomic_fetch_add(&posted_calls, 1);
  if (arg != &post_tag)
    violation("posted function", "wrong arg");
  leave(st);
}

/* The plugin-owned thread: every millisecond, post a function to every live
 * session. It holds its own reference to each session while posting, so it
 * never calls the host under registry_mutex except to acquire. */
#ifdef _WIN32
static DWORD WINAPI poster_main(LPVOID unused)
#else
static void *poster_main(void *unused)
#endif
{
  (void)unused;
  iocphost_session_t **batch = NULL;
  size_t capacity = 0;
  while (!atomic_load(&poster_stop)) {
    size_t count = 0;
    order_lock(&registry_mutex);
    if (registry_count > capacity) {
      iocphost_session_t **grown =
          realloc(batch, registry_count * 2 * sizeof *batch);
      if (grown) {
        batch = grown;
        capacity = registry_count * 2;
      }
    }
    for (order_state_t *st = registry; st && count < capacity; st = st->next) {
      iocphost_session_t *held = api->session_acquire(st->session);
      if (held)
        batch[count++] = held;
    }
    order_unlock(&registry_mutex);
    for (size_t i = 0; i < count; i++) {
      api->post(batch[i], posted, (void *)&post_tag);
      api->session_release(batch[i]);
    }
    order_sleep_ms(1);
  }
  free(batch);
  return 0;
}

static int order_load(const iocphost_api_t *host, const char *settings_json,
                      char *err, size_t err_len) {
  (void)settings_json;
  api = host;
  atomic_store(&poster_stop, 0);
#ifdef _WIN32
  poster = CreateThread(NULL, 0, poster_main, NULL, 0, NULL);
  poster_running = poster != NULL;
#else
  poster_running = pthread_create(&poster, NULL, poster_main, NULL) == 0;
#endif
  if (!poster_running) {
    if (err_len > 0) {
      static const char text[] = "cannot start the posting thread";
      size_t n = sizeof text < err_len ? sizeof text : err_len;
      for (size_t i = 0; i + 1 < n; i++)
        err[i] = text[i];
      err[n - 1] = '\0';
    }
    return 1;
  }
  return 0;
}

static void order_unload(void) {
  atomic_store(&poster_stop, 1);
  if (poster_running) {
#ifdef _WIN32
    WaitForSingleObject(poster, INFINITE);
    CloseHandle(poster);
#else
    pthread_join(poster, NULL);
#endif
    poster_running = 0;
  }
  if (registry_count != 0)
    violation("on_unload", "sessions still registered: on_disconnected missing");
  api->log(api, IOCPHOST_LOG_INFO,
           "order_check summary: sessions=%lu disconnected=%lu callbacks=%lu "
           "violations=%lu timers=%lu posted=%lu",
           atomic_load(&sessions), atomic_load(&disconnected),
           atomic_load(&callbacks), atomic_load(&violations),
           atomic_load(&timer_calls), atomic_load(&posted_calls));
}

static void order_connected(iocphost_session_t *session, void *state) {
  order_state_t *st = state;
  enter(session, st, "on_connected", PHASE_NEW);
  if (!st)
    return;
  atomic_store(&st->phase, PHASE_CONNECTED);
  atomic_fetch_add(&sessions, 1);
  st->rng = api->session_id(session) * 0x9E3779B97F4A7C15ull | 1;

  st->repeat_timer = api->timer_start(session, 1 + next_random(st) % 5, 3,
                                      repeat_tick, (void *)&repeat_tag);
  if (st->repeat_timer == 0)
    violation("on_connected", "timer_start failed on a live session");
  api->timer_start(session, next_random(st) % 20, 0, oneshot_tick,
                   (void *)&oneshot_tag);

  st->session = api->session_acquire(session);
  if (!st->session) {
    violation("on_connected", "session_acquire failed on a live session");
  } else {
    order_lock(&registry_mutex);
    st->prev = NULL;
    st->next = registry;
    if (registry)
      registry->prev = st;
    registry = st;
    registry_count++;
    order_unlock(&registry_mutex);
  }
  leave(st);
}

static size_t order_recv(iocphost_session_t *session, void *state,
                         const uint8_t *data, size_t len) {
  order_state_t *st = state;
  enter(session, st, "on_recv", PHASE_CONNECTED);
  api->send(session, data, len);
  if (st && ++st->recv_calls % 8 == 0) {
    /* Exercise timer_stop and a fresh one-shot now and then. */
    if (st->repeat_timer && api->timer_stop(session, st->repeat_timer) == 0)
      st->repeat_timer = api->timer_start(session, 2, 4, repeat_tick,
                                          (void *)&repeat_tag);
    api->timer_start(session, next_random(st) % 10, 0, oneshot_tick,
                     (void *)&oneshot_tag);
  }
  leave(st);
  return len;
}

static void order_sent(iocphost_session_t *session, void *state,
                       size_t bytes) {
  order_state_t *st = state;
  enter(session, st, "on_send", PHASE_CONNECTED);
  if (bytes == 0)
    violation("on_send", "zero bytes reported as sent");
  leave(st);
}

static void order_disconnected(iocphost_session_t *session, void *state,
                               iocphost_reason_t reason) {
  order_state_t *st = state;
  enter(session, st, "on_disconnected", PHASE_CONNECTED);
  if (!st)
    return;
  atomic_store(&st->phase, PHASE_DISCONNECTED);
  atomic_fetch_add(&disconnected, 1);
  if (reason < IOCPHOST_REASON_PEER_CLOSED || reason > IOCPHOST_REASON_IO_ERROR)
    violation("on_disconnected", "reason out of range");
  if (st->session) {
    order_lock(&registry_mutex);
    if (st->prev)
      st->prev->next = st->next;
    else
      registry = st->next;
    if (st->next)
      st->next->prev = st->prev;
    registry_count--;
    order_unlock(&registry_mutex);
  }
  iocphost_session_t *held = st->session;
  st->session = NULL;
  leave(st);
  /* Last: after this release the host may free the state. */
  if (held)
    api->session_release(held);
}

static const iocphost_plugin_t order_check_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "order_check",
    .version = "1.0.0",
    .session_size = sizeof(order_state_t),
    .on_load = order_load,
    .on_unload = order_unload,
    .on_connected = order_connected,
    .on_recv = order_recv,
    .on_send = order_sent,
    .on_disconnected = order_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &order_check_plugin; }
