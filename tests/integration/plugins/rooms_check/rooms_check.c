/*
 * rooms_check: the room guarantees (SPEC section 12), checked from inside a
 * plugin under load.
 *
 *  - on_load makes ROOMS rooms, each ticking at 60 Hz and broadcasting one
 *    packet (id 7, the room id) to its members on every tick.
 *  - Every session joins a random room when it connects, then hops: every
 *    HOP_MS a timer of its own leaves its room and joins another (and now
 *    and then joins a second one too: a session may be in several rooms).
 *  - A thread of the plugin closes a random room now and then and makes a
 *    new one in its place (closing is safe from any thread, any moment).
 *
 * What is checked, counted with atomics and reported at on_unload in one
 * line ("rooms_check summary: ..."), which the test reads:
 *  - overlaps: a room callback that began while another of the same room
 *    ran (an in-flight flag per room);
 *  - after_close: any callback of a room after its on_close;
 *  - joins == leaves: every on_join matched by exactly one on_leave (a
 *    member count per room must also be 0 at on_close, after the leaves);
 *  - members_bad: room_member_count disagreeing with the plugin's own count;
 *  - dead_members (reported, not a fault): on_join of a session whose
 *    on_disconnected ran meanwhile in its own order; the room then hears it
 *    leave (IOCPHOST_LEAVE_ENDED) next, which joins == leaves checks.
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
typedef HANDLE rc_thread_t;
static SRWLOCK slots_lock = SRWLOCK_INIT;
#define rc_lock() AcquireSRWLockExclusive(&slots_lock)
#define rc_unlock() ReleaseSRWLockExclusive(&slots_lock)
#define rc_sleep_ms(ms) Sleep(ms)
#else
#include <pthread.h>
#include <time.h>
typedef pthread_t rc_thread_t;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
#define rc_lock() pthread_mutex_lock(&slots_lock)
#define rc_unlock() pthread_mutex_unlock(&slots_lock)
static void rc_sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
#endif

#define ROOMS 100

static const iocphost_api_t *host;
static uint32_t hop_ms = 50;

static atomic_long joins, leaves, leaves_ended, leaves_closing, ticks,
    late_ticks, overlaps, after_close, members_bad, dead_members, closes, opens,
    hops, rooms_made, works, work_runs, work_dones, work_ended, work_busy;

typedef struct room_state {
  atomic_int in_flight;
  atomic_int closed;
  uint32_t members; /* the plugin's own count, in the room's order */
  uint16_t index;
} room_state_t;

typedef struct session_state {
  atomic_int ended; /* on_disconnected ran */
  uint64_t rng;
  uint64_t in_room; /* the room id joined last (0: none) */
} session_state_t;

/* The current room of each slot (acquired), under slots_lock. */
static iocphost_room_t *slots[ROOMS];

static void enter(void *state) {
  room_state_t *st = state;
  if (atomic_exchange(&st->in_flight, 1))
    atomic_fetch_add(&overlaps, 1);
  if (atomic_load(&st->closed))
    atomic_fetch_add(&after_close, 1);
}

static void leave_cb(void *state) {
  room_state_t *st = state;
  atomic_store(&st->in_flight, 0);
}

/* Work from a room: work_fn on a work thread, done back in the room's
 * order (also after the room closed: then ended = 1). */
static void work_fn(void *arg) {
  (void)arg;
  atomic_fetch_add(&work_runs, 1);
}

static void work_done(iocphost_room_t *room, void *state, void *arg,
                      int ended) {
  (void)room;
  (void)arg;
  room_state_t *st = state;
  if (atomic_exchange(&st->in_flight, 1))
    atomic_fetch_add(&overlaps, 1);
  atomic_fetch_add(&work_dones, 1);
  if (ended)
    atomic_fetch_add(&work_ended, 1);
  else if (atomic_load(&st->closed))
    atomic_fetch_add(&after_close, 1); /* not ended, yet closed: wrong */
  atomic_store(&st->in_flight, 0);
}

static void on_tick(iocphost_room_t *room, void *state, void *arg,
                    const iocphost_tick_t *tick) {
  (void)arg;
  enter(state);
  atomic_fetch_add(&ticks, 1);
  if (tick->late_ms)
    atomic_fetch_add(&late_ticks, 1);
  room_state_t *st = state;
  if (host->room_member_count(room) != st->members)
    atomic_fetch_add(&members_bad, 1);
  uint64_t id = host->room_id(room);
  host->room_broadcast_packet(room, 7, &id, sizeof id);
  if (tick->count % 30 == 0) {
    int rc = host->room_work(room, work_fn, work_done, NULL);
    if (rc == IOCPHOST_OK)
      atomic_fetch_add(&works, 1);
    else if (rc == IOCPHOST_E_BUSY)
      atomic_fetch_add(&work_busy, 1);
  }
  leave_cb(state);
}

static void on_open(iocphost_room_t *room, void *state, void *arg) {
  enter(state);
  room_state_t *st = state;
  st->index = (uint16_t)(uintptr_t)arg;
  atomic_fetch_add(&opens, 1);
  host->room_timer_start(room, 16, 16, on_tick, NULL);
  leave_cb(state);
}

static void on_join(iocphost_room_t *room, void *state,
                    iocphost_session_t *session) {
  (void)room;
  enter(state);
  room_state_t *st = state;
  st->members++;
  atomic_fetch_add(&joins, 1);
  session_state_t *ss = host->session_state(session);
  if (atomic_load(&ss->ended))
    atomic_fetch_add(&dead_members, 1);
  leave_cb(state);
}

static void on_leave(iocphost_room_t *room, void *state,
                     iocphost_session_t *session, iocphost_leave_t why) {
  (void)room;
  (void)session;
  enter(state);
  room_state_t *st = state;
  st->members--;
  atomic_fetch_add(&leaves, 1);
  if (why == IOCPHOST_LEAVE_ENDED)
    atomic_fetch_add(&leaves_ended, 1);
  if (why == IOCPHOST_LEAVE_CLOSING)
    atomic_fetch_add(&leaves_closing, 1);
  leave_cb(state);
}

static void on_close(iocphost_room_t *room, void *state) {
  (void)room;
  enter(state);
  room_state_t *st = state;
  if (st->members != 0)
    atomic_fetch_add(&members_bad, 1);
  atomic_store(&st->closed, 1);
  atomic_fetch_add(&closes, 1);
  leave_cb(state);
}

static const iocphost_room_class_t room_class = {
    .struct_size = sizeof(iocphost_room_class_t),
    .state_size = sizeof(room_state_t),
    .on_open = on_open,
    .on_join = on_join,
    .on_leave = on_leave,
    .on_close = on_close,
};

static iocphost_room_t *make_room(int index) {
  iocphost_room_t *r =
      host->room_create(host, &room_class, (void *)(uintptr_t)index);
  if (r)
    atomic_fetch_add(&rooms_made, 1);
  return r;
}

/* A room of a random slot, acquired (or NULL). */
static iocphost_room_t *random_room(uint64_t *rng) {
  uint64_t x = *rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *rng = x;
  rc_lock();
  iocphost_room_t *r = slots[x % ROOMS];
  if (r)
    host->room_acquire(r);
  rc_unlock();
  return r;
}

/* ---- the closer thread ---- */

static atomic_int stop_closer;
static rc_thread_t closer;
static int closer_running;

static void closer_loop(void) {
  uint64_t rng = 0x9E3779B97F4A7C15ULL;
  while (!atomic_load(&stop_closer)) {
    rc_sleep_ms(20);
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    int index = (int)(rng % ROOMS);
    iocphost_room_t *fresh = make_room(index);
    rc_lock();
    iocphost_room_t *old = slots[index];
    slots[index] = fresh;
    rc_unlock();
    if (old) {
      host->room_close(old);
      host->room_close(old); /* twice: harmless */
      host->room_release(old);
    }
  }
}

#ifdef _WIN32
static DWORD WINAPI closer_main(LPVOID arg) {
  (void)arg;
  closer_loop();
  return 0;
}
#else
static void *closer_main(void *arg) {
  (void)arg;
  closer_loop();
  return NULL;
}
#endif

/* ---- sessions ---- */

static void hop(iocphost_session_t *s, void *state, void *arg) {
  (void)arg;
  session_state_t *ss = state;
  atomic_fetch_add(&hops, 1);
  iocphost_room_t *old =
      ss->in_room ? host->room_find(host, ss->in_room) : NULL;
  if (old) {
    host->room_leave(old, s);
    host->room_release(old);
  }
  iocphost_room_t *r = random_room(&ss->rng);
  if (r) {
    if (host->room_join(r, s) == IOCPHOST_OK)
      ss->in_room = host->room_id(r);
    /* Now and then a second room too (a lobby and a match). */
    if ((ss->rng & 7) == 0) {
      iocphost_room_t *second = random_room(&ss->rng);
      if (second) {
        host->room_join(second, s);
        host->room_release(second);
      }
    }
    host->room_release(r);
  }
}

static int on_load(const iocphost_api_t *api, const char *settings, char *err,
                   size_t err_len) {
  (void)settings;
  (void)err;
  (void)err_len;
  host = api;
  for (int i = 0; i < ROOMS; i++)
    slots[i] = make_room(i);
#ifdef _WIN32
  closer = CreateThread(NULL, 0, closer_main, NULL, 0, NULL);
  closer_running = closer != NULL;
#else
  closer_running = pthread_create(&closer, NULL, closer_main, NULL) == 0;
#endif
  return 0;
}

static void on_stopping(void) {
  if (closer_running) {
    atomic_store(&stop_closer, 1);
#ifdef _WIN32
    WaitForSingleObject(closer, INFINITE);
    CloseHandle(closer);
#else
    pthread_join(closer, NULL);
#endif
    closer_running = 0;
  }
}

static void on_unload(void) {
  on_stopping();
  /* The host closed every room at its stop; the references are ours. */
  for (int i = 0; i < ROOMS; i++) {
    if (slots[i])
      host->room_release(slots[i]);
    slots[i] = NULL;
  }
  host->log(host, IOCPHOST_LOG_INFO,
            "rooms_check summary: joins=%ld leaves=%ld leaves_ended=%ld "
            "leaves_closing=%ld ticks=%ld late_ticks=%ld overlaps=%ld "
            "after_close=%ld members_bad=%ld dead_members=%ld closes=%ld "
            "opens=%ld rooms_made=%ld hops=%ld works=%ld work_runs=%ld "
            "work_dones=%ld work_ended=%ld work_busy=%ld",
            (long)joins, (long)leaves, (long)leaves_ended, (long)leaves_closing,
            (long)ticks, (long)late_ticks, (long)overlaps, (long)after_close,
            (long)members_bad, (long)dead_members, (long)closes, (long)opens,
            (long)rooms_made, (long)hops, (long)works, (long)work_runs,
            (long)work_dones, (long)work_ended, (long)work_busy);
}

static void on_connected(iocphost_session_t *s, void *state) {
  session_state_t *ss = state;
  ss->rng = host->session_id(s) * 0x9E3779B97F4A7C15ULL | 1;
  hop(s, state, NULL);
  host->timer_start(s, hop_ms, hop_ms, hop, NULL);
}

static void on_packet(iocphost_session_t *s, void *state, uint16_t id,
                      const uint8_t *payload, size_t len) {
  (void)s;
  (void)state;
  (void)id;
  (void)payload;
  (void)len;
}

static void on_disconnected(iocphost_session_t *s, void *state,
                            iocphost_reason_t reason) {
  (void)s;
  (void)reason;
  session_state_t *ss = state;
  atomic_store(&ss->ended, 1);
}

static const iocphost_plugin_t plugin = {
    IOCPHOST_PLUGIN_HEADER,     .name = "rooms_check",
    .version = "1.0.0",         .session_size = sizeof(session_state_t),
    .on_load = on_load,         .on_unload = on_unload,
    .on_stopping = on_stopping, .on_connected = on_connected,
    .on_packet = on_packet,     .on_disconnected = on_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &plugin; }
