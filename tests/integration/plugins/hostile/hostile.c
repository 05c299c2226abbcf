/*
 * hostile: a test plugin for the hostile-input, limits and faults tests
 * (tests/integration/test_hostile_*.py, tests/soak). What a session does
 * depends on its service's name, "<mode>-<anything>", and on the service's
 * framing, which it asks the host for (service_framing, ABI 1.1); chaos
 * services must have packet framing:
 *
 *   echo-*   raw: sends back every byte; packet: sends back every packet.
 *   sink-*   consumes nothing (raw on_recv returns 0; packets are dropped).
 *   push-*   pushes push_chunk bytes every millisecond (push_burst chunks a
 *            tick) with no flow control at all, until the host refuses: a
 *            slow reader must hit send_queue_limit_bytes.
 *   chaos-*  packet framing; each packet is a command (below) that makes
 *            the plugin misbehave the way plugins do.
 *
 * Every session first gets a hello carrying its session id (uint64 LE): on a
 * raw service the 8 bytes alone, on a packet service packet 0xFFFE.
 *
 * Chaos commands (packet id; payload bytes as noted):
 *   1 ECHO      send the packet back.
 *   2 BYE       send it back, disconnect, then send again (must fail).
 *   3 TIMERS    a repeating timer (every p[0] ms) sending packet 103 and a
 *               one-shot (after p[1] ms) sending packet 104; they run until
 *               the session ends and must never run after on_disconnected.
 *   4 LATE      hand the session (acquired) to the plugin's own thread,
 *               which after p[0] ms sends packet 105, posts a function that
 *               sends 106, starts a timer that sends 107 and calls
 *               disconnect when p[1] is 1; then releases it. On a session
 *               that has ended, every call must fail cleanly.
 *   5 ON_SEND   the next on_send disconnects, then sends (must fail).
 *   6 FLOOD     push 16 KiB packets every millisecond until refused.
 *   7 POST      post a function that sends packet 108.
 * Sessions whose id is a multiple of 16 disconnect inside on_connected,
 * right after the hello, and then try to send (which must fail).
 *
 * Every byte the host accepts (a send returning OK) is counted per session,
 * under a lock shared with on_disconnected, so the count is exact. With
 * "log_sessions": true each session logs, from on_disconnected:
 *   hostile session <id> service=<name> accepted=<bytes> reason=<reason>
 * and on_unload always logs
 *   hostile summary: sessions=N disconnected=D violations=V late=L
 *       late_refused=R refused=Q
 * A violation is a broken host guarantee: overlapping callbacks, a callback
 * after on_disconnected, a call on an ended session that did not fail.
 *
 * Settings (all optional): {"log_sessions": false, "push_chunk": 16384,
 * "push_burst": 4}.
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
typedef HANDLE hs_thread_t;
typedef SRWLOCK hs_mutex_t;
#define HS_MUTEX_INIT SRWLOCK_INIT
#define hs_lock(m) AcquireSRWLockExclusive(m)
#define hs_unlock(m) ReleaseSRWLockExclusive(m)
#define hs_sleep_ms(ms) Sleep(ms)
#else
#include <pthread.h>
#include <time.h>
typedef pthread_t hs_thread_t;
typedef pthread_mutex_t hs_mutex_t;
#define HS_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define hs_lock(m) pthread_mutex_lock(m)
#define hs_unlock(m) pthread_mutex_unlock(m)
static void hs_sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
#endif

enum mode { MODE_ECHO, MODE_SINK, MODE_PUSH, MODE_CHAOS };
enum phase { PHASE_NEW = 0, PHASE_CONNECTED = 1, PHASE_ENDED = 2 };

enum {
  CMD_ECHO = 1,
  CMD_BYE = 2,
  CMD_TIMERS = 3,
  CMD_LATE = 4,
  CMD_ON_SEND = 5,
  CMD_FLOOD = 6,
  CMD_POST = 7
};

#define HELLO_ID 0xFFFE
#define PUSH_CHUNK_MAX (64 * 1024)
#define FLOOD_CHUNK (16 * 1024)
#define LOCKS 64
#define VIOLATIONS_LOGGED 20

typedef struct hs_state {
  atomic_int inside;
  atomic_int phase;
  uint64_t id;
  int mode;
  int packet;
  int disconnect_on_send;
  int pushing;
  uint64_t push_timer;
  uint64_t accepted; /* under lock_of(id) */
} hs_state_t;

static const iocphost_api_t *api;
static int log_sessions;
static uint32_t push_chunk = 16384;
static uint32_t push_burst = 4;
static uint8_t zeros[PUSH_CHUNK_MAX];

static hs_mutex_t locks[LOCKS];
static atomic_ulong sessions, disconnected, violations, late_runs,
    late_refused, refused;

static hs_mutex_t *lock_of(uint64_t id) { return &locks[id % LOCKS]; }

static void violation(uint64_t id, const char *where, const char *what) {
  unsigned long n = atomic_fetch_add(&violations, 1) + 1;
  if (n <= VIOLATIONS_LOGGED)
    api->log(api, IOCPHOST_LOG_ERROR,
             "hostile violation #%lu: session %llu: %s: %s", n,
             (unsigned long long)id, where, what);
}

static void enter(hs_state_t *st, const char *where) {
  if (atomic_exchange(&st->inside, 1))
    violation(st->id, where, "overlaps another callback of the session");
  if (atomic_load(&st->phase) != PHASE_CONNECTED)
    violation(st->id, where, "runs outside on_connected..on_disconnected");
}

static void leave(hs_state_t *st) { atomic_store(&st->inside, 0); }

/* Sends and counts what the host accepted. A packet service gets a packet
 * with that id; a raw one the bare bytes. */
static int counted_send(iocphost_session_t *session, hs_state_t *st,
                        uint16_t id, const void *data, size_t len) {
  hs_lock(lock_of(st->id));
  int rc = st->packet ? api->send_packet(session, id, data, len)
                      : api->send(session, data, len);
  if (rc == IOCPHOST_OK)
    st->accepted += len + (st->packet ? 4 : 0);
  hs_unlock(lock_of(st->id));
  if (rc != IOCPHOST_OK)
    atomic_fetch_add(&refused, 1);
  return rc;
}

/* A call that must fail because the session has ended or is ending. */
static void send_must_fail(iocphost_session_t *session, hs_state_t *st,
                           const char *where) {
  if (counted_send(session, st, 99, "late", 4) == IOCPHOST_OK)
    violation(st->id, where, "a send after disconnect was accepted");
}

/* ---- the plugin's own thread: LATE sessions ---- */

typedef struct late {
  iocphost_session_t *session; /* acquired */
  uint64_t id;
  uint32_t due_ticks;
  int disconnect;
  struct late *next;
} late_t;

static hs_mutex_t late_lock = HS_MUTEX_INIT;
static late_t *late_list;
static atomic_int late_stop;
static int late_running;
static hs_thread_t late_thread;

static void late_posted(iocphost_session_t *session, void *state, void *arg) {
  hs_state_t *st = state;
  enter(st, "posted function");
  counted_send(session, st, 106, "posted", 6);
  leave(st);
}

static void late_timer(iocphost_session_t *session, void *state, void *arg) {
  hs_state_t *st = state;
  enter(st, "timer from plugin thread");
  counted_send(session, st, 107, "timer", 5);
  leave(st);
}

static void late_run(late_t *l) {
  iocphost_session_t *s = l->session;
  hs_state_t *st = api->session_state(s);
  atomic_fetch_add(&late_runs, 1);
  int ended = atomic_load(&st->phase) == PHASE_ENDED;
  int rc = counted_send(s, st, 105, "late", 4);
  int prc = api->post(s, late_posted, NULL);
  uint64_t timer = api->timer_start(s, 1, 0, late_timer, NULL);
  if (ended) {
    atomic_fetch_add(&late_refused, 1);
    if (rc == IOCPHOST_OK || prc == IOCPHOST_OK || timer != 0)
      violation(st->id, "plugin thread", "a call on an ended session worked");
  }
  if (l->disconnect)
    api->disconnect(s);
  api->session_release(s);
}

#ifdef _WIN32
static DWORD WINAPI late_main(LPVOID unused)
#else
static void *late_main(void *unused)
#endif
{
  (void)unused;
  while (!atomic_load(&late_stop)) {
    late_t *due = NULL;
    hs_lock(&late_lock);
    for (late_t **p = &late_list; *p;) {
      late_t *l = *p;
      if (l->due_ticks == 0) {
        *p = l->next;
        l->next = due;
        due = l;
      } else {
        l->due_ticks--;
        p = &l->next;
      }
    }
    hs_unlock(&late_lock);
    while (due) {
      late_t *next = due->next;
      late_run(due);
      free(due);
      due = next;
    }
    hs_sleep_ms(1);
  }
  /* Whatever is left is run now: the host waits for these references. */
  hs_lock(&late_lock);
  late_t *rest = late_list;
  late_list = NULL;
  hs_unlock(&late_lock);
  while (rest) {
    late_t *next = rest->next;
    late_run(rest);
    free(rest);
    rest = next;
  }
  return 0;
}

/* ---- lifecycle ---- */

static int hostile_load(const iocphost_api_t *host, const char *settings_json,
                        char *err, size_t err_len) {
  api = host;
  for (int i = 0; i < LOCKS; i++) {
#ifdef _WIN32
    InitializeSRWLock(&locks[i]);
#else
    pthread_mutex_init(&locks[i], NULL);
#endif
  }
  (void)settings_json;
  log_sessions = api->setting_bool(api, "/log_sessions", 0);
  int64_t chunk = api->setting_int(api, "/push_chunk", push_chunk);
  int64_t burst = api->setting_int(api, "/push_burst", push_burst);
  if (chunk < 1 || chunk > PUSH_CHUNK_MAX || burst < 1 || burst > 64)
    goto bad;
  push_chunk = (uint32_t)chunk;
  push_burst = (uint32_t)burst;
  atomic_store(&late_stop, 0);
#ifdef _WIN32
  late_thread = CreateThread(NULL, 0, late_main, NULL, 0, NULL);
  late_running = late_thread != NULL;
#else
  late_running = pthread_create(&late_thread, NULL, late_main, NULL) == 0;
#endif
  if (!late_running) {
    snprintf(err, err_len, "cannot start the plugin thread");
    return -1;
  }
  return 0;
bad:
  snprintf(err, err_len,
           "settings: expected {\"log_sessions\": bool, \"push_chunk\": "
           "1..%d, \"push_burst\": 1..64}",
           PUSH_CHUNK_MAX);
  return -1;
}

/* The plugin thread holds session references, so it must let go of them
 * before the host can finish stopping: on_stopping ends it. */
static void stop_late_thread(void) {
  hs_lock(&late_lock);
  atomic_store(&late_stop, 1);
  hs_unlock(&late_lock);
  if (late_running) {
#ifdef _WIN32
    WaitForSingleObject(late_thread, INFINITE);
    CloseHandle(late_thread);
#else
    pthread_join(late_thread, NULL);
#endif
    late_running = 0;
  }
}

static void hostile_stopping(void) { stop_late_thread(); }

static void hostile_unload(void) {
  stop_late_thread();
  api->log(api, IOCPHOST_LOG_INFO,
           "hostile summary: sessions=%lu disconnected=%lu violations=%lu "
           "late=%lu late_refused=%lu refused=%lu",
           atomic_load(&sessions), atomic_load(&disconnected),
           atomic_load(&violations), atomic_load(&late_runs),
           atomic_load(&late_refused), atomic_load(&refused));
}

/* ---- pushing ---- */

static void push_tick(iocphost_session_t *session, void *state, void *arg) {
  hs_state_t *st = state;
  enter(st, "push timer");
  size_t chunk = (uintptr_t)arg;
  for (uint32_t i = 0; i < push_burst && st->pushing; i++) {
    int rc = counted_send(session, st, 6, zeros, chunk);
    if (rc != IOCPHOST_OK) {
      st->pushing = 0;
      api->timer_stop(session, st->push_timer);
      if (rc != IOCPHOST_E_QUEUE_FULL && rc != IOCPHOST_E_CLOSED)
        violation(st->id, "push timer", api->result_text(rc));
    }
  }
  leave(st);
}

static void start_push(iocphost_session_t *session, hs_state_t *st,
                       size_t chunk) {
  if (st->pushing)
    return;
  st->pushing = 1;
  st->push_timer =
      api->timer_start(session, 1, 1, push_tick, (void *)(uintptr_t)chunk);
  if (!st->push_timer)
    violation(st->id, "push", "timer_start failed on a live session");
}

/* ---- session callbacks ---- */

static int mode_of(const char *service) {
  if (strncmp(service, "chaos", 5) == 0)
    return MODE_CHAOS;
  if (strncmp(service, "sink", 4) == 0)
    return MODE_SINK;
  if (strncmp(service, "push", 4) == 0)
    return MODE_PUSH;
  return MODE_ECHO;
}

static void hostile_connected(iocphost_session_t *session, void *state) {
  hs_state_t *st = state;
  st->id = api->session_id(session);
  if (atomic_load(&st->phase) != PHASE_NEW)
    violation(st->id, "on_connected", "called twice");
  atomic_store(&st->phase, PHASE_CONNECTED);
  enter(st, "on_connected");
  atomic_fetch_add(&sessions, 1);
  st->mode = mode_of(api->session_service_name(session));
  iocphost_service_t *service = api->session_service(session);
  int framing = api->service_framing(service);
  st->packet = framing == IOCPHOST_FRAMING_PACKET;
  if (framing != IOCPHOST_FRAMING_RAW && framing != IOCPHOST_FRAMING_PACKET)
    violation(st->id, "on_connected", "service_framing gave no framing");
  if ((api->service_max_packet_bytes(service) != 0) != st->packet)
    violation(st->id, "on_connected",
              "service_max_packet_bytes disagrees with service_framing");
  if (st->mode == MODE_CHAOS && !st->packet)
    violation(st->id, "on_connected", "a chaos service needs packet framing");
  uint8_t hello[8];
  for (int i = 0; i < 8; i++)
    hello[i] = (uint8_t)(st->id >> (8 * i));
  if (counted_send(session, st, HELLO_ID, hello, sizeof hello) != IOCPHOST_OK)
    violation(st->id, "on_connected", "the hello was refused");
  if (st->mode == MODE_PUSH)
    start_push(session, st, push_chunk);
  if (st->mode == MODE_CHAOS && st->id % 16 == 0) {
    api->disconnect(session);
    send_must_fail(session, st, "on_connected");
    if (api->timer_start(session, 1, 0, late_timer, NULL) != 0)
      violation(st->id, "on_connected", "timer_start after disconnect worked");
  }
  leave(st);
}

static size_t hostile_recv(iocphost_session_t *session, void *state,
                           const uint8_t *data, size_t len) {
  hs_state_t *st = state;
  enter(st, "on_recv");
  if (st->packet)
    violation(st->id, "on_recv", "called on a packet service");
  size_t used = len;
  if (st->mode == MODE_SINK)
    used = 0;
  else if (st->mode == MODE_ECHO)
    counted_send(session, st, 0, data, len);
  leave(st);
  return used;
}

static void chaos_timer(iocphost_session_t *session, void *state, void *arg) {
  hs_state_t *st = state;
  enter(st, "chaos timer");
  counted_send(session, st, (uint16_t)(uintptr_t)arg, "tick", 4);
  leave(st);
}

static void chaos_posted(iocphost_session_t *session, void *state, void *arg) {
  hs_state_t *st = state;
  enter(st, "posted function");
  counted_send(session, st, 108, "posted", 6);
  leave(st);
}

static void chaos_command(iocphost_session_t *session, hs_state_t *st,
                          uint16_t id, const uint8_t *p, size_t len) {
  switch (id) {
  case CMD_ECHO:
    counted_send(session, st, id, p, len);
    break;
  case CMD_BYE:
    counted_send(session, st, id, p, len);
    api->disconnect(session);
    send_must_fail(session, st, "on_packet BYE");
    break;
  case CMD_TIMERS:
    api->timer_start(session, len > 0 ? p[0] : 1, len > 0 ? p[0] : 1,
                     chaos_timer, (void *)(uintptr_t)103);
    api->timer_start(session, len > 1 ? p[1] : 1, 0, chaos_timer,
                     (void *)(uintptr_t)104);
    break;
  case CMD_LATE: {
    late_t *l = calloc(1, sizeof *l);
    if (!l)
      break;
    l->session = api->session_acquire(session);
    l->id = st->id;
    l->due_ticks = len > 0 ? p[0] : 0;
    l->disconnect = len > 1 && p[1] == 1;
    /* Once the thread is stopping nothing is queued: it could hold the
     * session past the host's stop. */
    hs_lock(&late_lock);
    int queued = !atomic_load(&late_stop);
    if (queued) {
      l->next = late_list;
      late_list = l;
    }
    hs_unlock(&late_lock);
    if (!queued) {
      api->session_release(l->session);
      free(l);
    }
    break;
  }
  case CMD_ON_SEND:
    st->disconnect_on_send = 1;
    counted_send(session, st, id, p, len);
    break;
  case CMD_FLOOD:
    start_push(session, st, FLOOD_CHUNK);
    break;
  case CMD_POST:
    if (api->post(session, chaos_posted, NULL) != IOCPHOST_OK)
      violation(st->id, "on_packet POST", "post failed on a live session");
    break;
  default:
    break;
  }
}

static void hostile_packet(iocphost_session_t *session, void *state,
                           uint16_t id, const uint8_t *payload, size_t len) {
  hs_state_t *st = state;
  enter(st, "on_packet");
  if (!st->packet)
    violation(st->id, "on_packet", "called on a raw service");
  if (st->mode == MODE_ECHO)
    counted_send(session, st, id, payload, len);
  else if (st->mode == MODE_CHAOS)
    chaos_command(session, st, id, payload, len);
  leave(st);
}

static void hostile_sent(iocphost_session_t *session, void *state,
                         size_t bytes) {
  hs_state_t *st = state;
  enter(st, "on_send");
  if (bytes == 0)
    violation(st->id, "on_send", "zero bytes");
  if (st->disconnect_on_send) {
    st->disconnect_on_send = 0;
    api->disconnect(session);
    send_must_fail(session, st, "on_send");
  }
  leave(st);
}

static void hostile_disconnected(iocphost_session_t *session, void *state,
                                 iocphost_reason_t reason) {
  hs_state_t *st = state;
  enter(st, "on_disconnected");
  hs_lock(lock_of(st->id));
  atomic_store(&st->phase, PHASE_ENDED);
  uint64_t accepted = st->accepted;
  hs_unlock(lock_of(st->id));
  atomic_fetch_add(&disconnected, 1);
  /* Every call on an ended session fails, and nothing runs later. */
  if (api->send(session, "x", 1) != IOCPHOST_E_CLOSED)
    violation(st->id, "on_disconnected", "send did not return E_CLOSED");
  if (api->timer_start(session, 1, 0, chaos_timer, NULL) != 0)
    violation(st->id, "on_disconnected", "timer_start worked");
  if (api->post(session, chaos_posted, NULL) != IOCPHOST_E_CLOSED)
    violation(st->id, "on_disconnected", "post did not return E_CLOSED");
  if (log_sessions)
    api->log(api, IOCPHOST_LOG_INFO,
             "hostile session %llu service=%s accepted=%llu reason=%s",
             (unsigned long long)st->id, api->session_service_name(session),
             (unsigned long long)accepted, api->reason_text(reason));
  atomic_store(&st->inside, 0);
}

static const iocphost_plugin_t hostile_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "hostile",
    .version = "1.0.0",
    .session_size = sizeof(hs_state_t),
    .on_load = hostile_load,
    .on_unload = hostile_unload,
    .on_stopping = hostile_stopping,
    .on_connected = hostile_connected,
    .on_recv = hostile_recv,
    .on_packet = hostile_packet,
    .on_send = hostile_sent,
    .on_disconnected = hostile_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &hostile_plugin; }
