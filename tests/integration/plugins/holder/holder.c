/*
 * holder: the plugin behaviours a graceful stop must survive.
 *
 *  - Every session is acquired in on_connected and kept; on_stopping
 *    releases them all. The last release frees the session, whose end
 *    releases its plugin generation: a host that called on_stopping with
 *    its generation lock held deadlocked here.
 *  - With settings {"broadcast": true}, a thread of the plugin's own
 *    broadcasts a line to the service "hold" back to back from on_load
 *    until on_unload: the service must stay valid (or answer an error) for
 *    as long as the plugin is loaded, whatever the stop is doing.
 *
 * Received bytes are consumed and ignored.
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
typedef HANDLE ho_thread_t;
static SRWLOCK held_lock = SRWLOCK_INIT;
#define ho_lock() AcquireSRWLockExclusive(&held_lock)
#define ho_unlock() ReleaseSRWLockExclusive(&held_lock)
#define ho_sleep_ms(ms) Sleep(ms)
#else
#include <pthread.h>
#include <time.h>
typedef pthread_t ho_thread_t;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
#define ho_lock() pthread_mutex_lock(&held_lock)
#define ho_unlock() pthread_mutex_unlock(&held_lock)
static void ho_sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
#endif

static const iocphost_api_t *host;
static iocphost_session_t **held;
static size_t held_count, held_cap;
static int stopping; /* under held_lock: on_stopping ran */

static atomic_int broadcasting, stop_broadcast;
static atomic_long broadcasts;
static ho_thread_t broadcaster;

static void broadcast_loop(void) {
  iocphost_service_t *svc = host->service_find(host, "hold");
  while (!atomic_load(&stop_broadcast)) {
    if (svc && host->broadcast(svc, "tick\n", 5) >= 0)
      atomic_fetch_add(&broadcasts, 1);
    /* Mostly back to back: the stop must be safe at any instant of it. */
    if (atomic_load(&broadcasts) % 64 == 0)
      ho_sleep_ms(1);
  }
}

#ifdef _WIN32
static DWORD WINAPI broadcast_main(LPVOID arg) {
  (void)arg;
  broadcast_loop();
  return 0;
}
#else
static void *broadcast_main(void *arg) {
  (void)arg;
  broadcast_loop();
  return NULL;
}
#endif

static int on_load(const iocphost_api_t *api, const char *settings, char *err,
                   size_t err_len) {
  (void)err;
  (void)err_len;
  host = api;
  (void)settings;
  if (api->setting_bool(api, "/broadcast", 0)) {
#ifdef _WIN32
    broadcaster = CreateThread(NULL, 0, broadcast_main, NULL, 0, NULL);
    atomic_store(&broadcasting, broadcaster != NULL);
#else
    atomic_store(&broadcasting,
                 pthread_create(&broadcaster, NULL, broadcast_main, NULL) == 0);
#endif
  }
  return 0;
}

static void on_stopping(void) {
  ho_lock();
  size_t count = held_count;
  for (size_t i = 0; i < held_count; i++)
    host->session_release(held[i]);
  held_count = 0;
  stopping = 1;
  ho_unlock();
  host->log(host, IOCPHOST_LOG_INFO, "holder: released %zu sessions in "
                                     "on_stopping",
            count);
}

static void on_unload(void) {
  if (atomic_load(&broadcasting)) {
    atomic_store(&stop_broadcast, 1);
#ifdef _WIN32
    WaitForSingleObject(broadcaster, INFINITE);
    CloseHandle(broadcaster);
#else
    pthread_join(broadcaster, NULL);
#endif
  }
  host->log(host, IOCPHOST_LOG_INFO, "holder: unloaded after %ld broadcasts",
            (long)atomic_load(&broadcasts));
  free(held);
  held = NULL;
}

static void on_connected(iocphost_session_t *s, void *state) {
  (void)state;
  ho_lock();
  /* A session whose on_connected was already running when the stop began:
   * keep nothing after on_stopping let go of everything. */
  if (stopping) {
    ho_unlock();
    return;
  }
  if (held_count == held_cap) {
    size_t cap = held_cap ? held_cap * 2 : 64;
    iocphost_session_t **grown = realloc(held, cap * sizeof *grown);
    if (!grown) {
      ho_unlock();
      return;
    }
    held = grown;
    held_cap = cap;
  }
  held[held_count++] = host->session_acquire(s);
  ho_unlock();
}

static size_t on_recv(iocphost_session_t *s, void *state, const uint8_t *data,
                      size_t len) {
  (void)s;
  (void)state;
  (void)data;
  return len;
}

static void on_disconnected(iocphost_session_t *s, void *state,
                            iocphost_reason_t reason) {
  (void)s;
  (void)state;
  (void)reason;
}

static const iocphost_plugin_t plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "holder",
    .version = "1.0.0",
    .session_size = 0,
    .on_load = on_load,
    .on_unload = on_unload,
    .on_stopping = on_stopping,
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &plugin; }
