/*
 * The host's inside, shared by its files (host.h is the outside):
 *   host.c             the host's life: open (check), start, stop, close
 *   generations.c      plugin generations: open from a shadow copy, load,
 *                      make current, retire, the reaper that unloads them
 *   plugin_sessions.c  the engine's session handler: a plugin's sessions
 *                      ("derived sessions") forwarded to their generation
 *   plugin_api.c       the table of host functions a plugin calls
 *   plugin_rooms.c     rooms: the plugin's class on the engine's rooms,
 *                      members, broadcast, lookup by id
 *   plugin_work.c      work: a plugin's blocking call on the work pool,
 *                      its completion back in its owner's serial order
 *   plugin_settings.c  typed settings: the getters by JSON pointer
 *   plugin_metrics.c   metrics a plugin defines: families, series, render
 *   services.c         the config's cores and services made engine objects
 *   status.c           status, as text and as JSON
 *   reload.c           reload (hot deploy)
 *
 * A plugin's sessions are engine sessions carrying a small host record and
 * the plugin's session_size bytes (the "derived session").
 * iocphost_session_t is the engine's session_t and iocphost_service_t is
 * the host's service record: both stay opaque to plugins.
 *
 * Generations (hot deploy, SPEC section 10): every load of a plugin is a
 * generation, loaded from its own shadow copy. A session binds to the
 * plugin's current generation when it connects (not when it is allocated:
 * a listener keeps sessions ready for its pending accepts, and those must
 * not pin an old generation) and keeps it to the end; the generation counts
 * its sessions. A reload makes new generations current all at once, or
 * none; a retired generation is unloaded by the reaper thread once its last
 * session is freed, never from inside plugin code.
 *
 * Each generation has its own iocphost_api_t, embedded first in it, so the
 * functions that take the api pointer (log, service_find) know which plugin
 * is calling without any global state.
 *
 * A timer or post keeps the generation whose code it will run loaded, as a
 * session does: a generation-1 timer armed on a generation-2 session (the
 * gateway after its link reconnected) or on another plugin's session may
 * outlive every generation-1 session. The host tells by address which
 * generation's library holds the function, counts a hold on it, and drops
 * the hold when the engine is done with the timer or post.
 */
#ifndef IOCPHOST_HOST_INTERNAL_H
#define IOCPHOST_HOST_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "engine/engine.h"
#include "host.h"
#include "iocphost/plugin.h"
#include "plugin_loader.h"
#include "tls_layer.h"
#include "watchdog.h"
#include "websocket.h"

struct cJSON; /* the host's JSON; never seen by plugins */
typedef struct host_plugin host_plugin_t;
typedef struct generation generation_t;
typedef struct generation generation_t;

struct generation {
  iocphost_api_t api; /* first: the plugin's api pointer leads back here */
  host_plugin_t *plugin;
  plugin_module_t *module;
  const iocphost_plugin_t *desc;
  unsigned number;     /* 1, 2, ... per plugin */
  char *source_path;   /* the deployed file */
  char *shadow_path;   /* the copy it was loaded from (NULL for check) */
  char *settings_json; /* what on_load got */
  /* settings_json parsed once, for the getters (plugin_settings.c). */
  struct cJSON *settings;
  uint64_t source_hash;
  long sessions; /* bound sessions; under host->gen_lock */
  long holds;    /* timers and posts that will run its code; gen_lock */
  long rooms;    /* of the holds: its rooms not yet freed; gen_lock */
  uintptr_t image_start, image_end; /* where its library is mapped */
  int loaded;                       /* on_load succeeded: on_unload is owed */
  int retired;        /* no longer current: unload at 0 sessions */
  /* on_load is running: metric_define is allowed (plugin_metrics.c). */
  atomic_int metrics_open;
  /* Callback durations and stalls (watchdog.c), from any thread. */
  watch_stats_t calls;
  generation_t *next; /* the plugin's generations, newest first */
  /* Its rooms' timer ticks (metrics.c): how many ran, how many late, and
   * their lateness summed in ms. */
  atomic_uint_fast64_t ticks, late_ticks, late_ms_sum;
};

struct host_plugin {
  host_t *host;
  char *name;            /* the config's name */
  generation_t *current; /* under host->gen_lock */
  generation_t *loading; /* a reload's new one, before it is current */
  generation_t *generations;
  unsigned generation_count;
};

/* The host's part of a session's extra state; the plugin's state follows
 * it when it fits (it is sized by the generation current at allocation),
 * else it is calloc'd at connect and kept in the engine session's context
 * (plugin_state). */
typedef struct host_session {
  /* Bound at connect once the plugin's state is in place; NULL before, and
   * so non-NULL exactly when the plugin saw on_connected. Stored once on
   * the session's worker (release); `sessions` reads it from the control
   * thread (acquire). */
  _Atomic(generation_t *) generation;
  /* The rooms it is in, or ROOMS_ENDED once it left them all: only through
   * session_rooms and session_rooms_ended, under host->rooms_lock. */
  struct membership *rooms;
} host_session_t;
/* In every session: issue 18 counts the bytes of an idle session. */
_Static_assert(sizeof(host_session_t) <= 16,
               "host_session_t is in every session: keep it 16 bytes");

#define HOST_SESSION_BYTES ((sizeof(host_session_t) + 15) & ~(size_t)15)

/* A session's rooms list, once it ended, is this mark: no membership is
 * ever at address 1, and an ended session joins nothing again. */
#define ROOMS_ENDED ((struct membership *)(uintptr_t)1)

/* The rooms a session is in (none once it ended); under rooms_lock. */
static inline struct membership *session_rooms(const host_session_t *h) {
  return h->rooms == ROOMS_ENDED ? NULL : h->rooms;
}
/* It left them all (rooms_session_ended); under rooms_lock. */
static inline int session_rooms_ended(const host_session_t *h) {
  return h->rooms == ROOMS_ENDED;
}

typedef struct host_service {
  host_t *host;
  const config_service_t *config;
  host_plugin_t *plugin;
  service_t *engine; /* main thread and status (under host->lock) */
  /* The same service as seen by the plugin API, which plugin threads may
   * call at any moment of a stop: each call pins it (api_pins) for its
   * duration, and destroy_services frees it only once it is unpublished
   * and unpinned. Lock-free, so a plugin thread calling in a loop can never
   * starve the stop, and no lock is held while the call runs. */
  _Atomic(service_t *) api_engine;
  atomic_int api_pins;
  int packet_framing;
  uint32_t max_packet_bytes;
  atomic_uint_fast64_t packets_in;
  atomic_uint_fast64_t packets_out;
  /* The service's transport (SPEC section 14), its layers' configs: they
   * live as long as the engine service that points at them. */
  ws_config_t websocket;
  transport_layer_t transport[TRANSPORT_LAYERS_MAX];
  size_t transport_layers;
  /* Its TLS (tls_services.c): the layer's config and slot, and hashes of
   * what made the slot's context (cert_file, key_file, ca_file bytes,
   * server_name), which tell a reload what changed. */
  tls_layer_config_t tls;
  int tls_open;
  uint64_t tls_hash[4];
} host_service_t;

/* Stripes of the work call list (plugin_work.c); a power of two. */
#define WORK_STRIPES 16

struct host {
  /* Guards the service and core pointers against a status request racing
   * the stop: they are detached under it, destroyed outside it. */
  pthread_mutex_t lock;
  /* Guards generations: current pointers, session counts, retirement. */
  pthread_mutex_t gen_lock;
  pthread_cond_t gen_changed;
  pthread_t reaper;
  int reaper_running;
  int reaper_stop;
  pthread_mutex_t reload_lock; /* one reload at a time */
  char *shadow_dir;
  const config_t *config;
  host_plugin_t *plugins;
  size_t plugin_count;
  core_t **cores;
  host_service_t *services;
  /* Rooms (plugin_rooms.c): the registry by id, and every session's list
   * of memberships. */
  pthread_mutex_t rooms_lock;
  pthread_cond_t rooms_changed; /* a room left the registry */
  struct host_room **room_buckets;
  size_t room_bucket_count;
  size_t room_count;
  /* Room posts and timers of plugin code not yet gone (their done drops a
   * hold on a generation): the stop waits for them before unloading. */
  long room_calls; /* rooms_lock */
  int started;
  atomic_int stopped;
  /* Work (plugin_work.c): the pool, set in host_start and cleared at the
   * stop under lock (status reads it); the calls in flight, listed so that
   * a stop that gives up on them can let them go. The list is striped by
   * call address: a call takes its stripe's lock three times (submit,
   * finish, end), so work threads and I/O workers handling different calls
   * rarely meet on one lock. A stop takes every stripe. */
  work_pool_t *work;
  struct work_stripe {
    pthread_mutex_t lock;
    struct work_call *calls;
  } work_stripes[WORK_STRIPES];
  /* Set under every stripe's lock: the stop gave up on the rest. */
  atomic_int work_abandoned;
  /* Plugin-defined metrics (plugin_metrics.c): every live family, in the
   * order defined, and their series lists, under metrics_lock. */
  pthread_mutex_t metrics_lock;
  struct iocphost_metric *metric_families;
  /* The stall watchdog's thread (watchdog.c); NULL when off. */
  struct watchdog *watchdog;
  /* Callback durations are measured (two clock reads per timed callback)
   * only when the metrics endpoint can show them: one callback in
   * callback_sample per thread, or none (0); set at host_open. */
  uint32_t callback_sample;
  /* The metrics endpoint (metrics.c): bound first in host_start, served
   * once the host is started, closed first in host_stop. NULL when off. */
  struct metrics_server *metrics;
};

#define SESSION(x) ((session_t *)(x))
#define PLUGIN_SESSION(x) ((iocphost_session_t *)(x))

static inline host_service_t *host_service_of(session_t *s) {
  return service_user(session_service(s));
}

/* The host's record and the plugin's state of a plugin's session. */
static inline host_session_t *host_session(session_t *s) {
  return session_extra(s);
}
/* The generation a session bound to at connect, on its own worker (which
 * stored it, or is ordered after that by the session's serial order). */
static inline generation_t *session_generation(session_t *s) {
  return atomic_load_explicit(&host_session(s)->generation,
                              memory_order_relaxed);
}
/* The plugin's state, on the session's worker; NULL until it is bound (a
 * work's done or a call on a session found by id may come before, or
 * without, on_connected). Calloc'd at connect when the generation bound
 * then needed more than was reserved at allocation (its pointer is the
 * engine session's context, else NULL), otherwise right after the host's
 * record. */
static inline void *plugin_state(session_t *s) {
  if (!session_generation(s))
    return NULL;
  void *outside = session_context(s);
  return outside ? outside : (char *)session_extra(s) + HOST_SESSION_BYTES;
}

/* ---- generations.c ---- */

int generation_check_settings(generation_t *g, size_t index, char *err,
                              size_t err_len);
void generation_close(generation_t *g);
void generation_discard(host_plugin_t *p, generation_t *g);
int generation_load(generation_t *g, char *err, size_t err_len);
void generation_make_current(host_plugin_t *p, generation_t *g);
generation_t *generation_open(host_plugin_t *p, const char *path,
                              const char *settings_json, const char *shadow_dir,
                              char *err, size_t err_len);
/* Sessions and pins count on a generation (under gen_lock). */
generation_t *generation_acquire(host_plugin_t *p);
void generation_release(generation_t *g);
/* Holds: timers and posts that will run a generation's code. */
void generation_drop_hold(generation_t *g);
generation_t *generation_hold_code(host_t *host, uintptr_t address);
/* Both at once, under one lock: a work's code and its done's. */
void generation_hold_code2(host_t *host, uintptr_t a, uintptr_t b,
                           generation_t **held_a, generation_t **held_b);
void generation_drop_holds2(generation_t *a, generation_t *b);
/* A room's hold (api_room_create counts it in holds and rooms). */
void generation_drop_room(generation_t *g);
/* The reaper thread's body; unload_plugins ends it and unloads the rest. */
int move_to_shadow(host_t *host, char *err, size_t err_len);
void *reaper_main(void *arg);
void tell_plugins_stopping(host_t *host);
void unload_plugins(host_t *host);

/* ---- plugin_sessions.c ---- */

extern const session_handler_t plugin_session_handler;
/* The engine's factory hook: room for the host's record and the current
 * generation's state. */
size_t prepare_session(void *ctx, void **session_context);
/* watch_begin (watchdog.h) for a call of g's code on session s; packet_id
 * -1 when the call is not on_packet. */
watch_mark_t watch_session(session_t *s, generation_t *g, watch_kind_t kind,
                           int packet_id);

/* ---- plugin_api.c ---- */

void fill_api(generation_t *g);
/* Unpublishes a service from the plugin API and waits until no API call
 * still uses it; then it may be destroyed. */
void service_unpublish(host_service_t *hs);

/* ---- plugin_work.c ---- */

/* One plugin work in flight: work runs on the pool; then the owner's kind
 * hands the call back to the owner's serial order (post_back, on the pool
 * thread), where it calls the plugin's done with ended = whether the owner
 * has ended (or skipped), then work_call_end. Sessions (session_work) and rooms
 * (room_work) share this path and differ only in owner, post_back,
 * release_owner and which done they call. */
typedef struct work_call work_call_t;
struct work_call {
  host_t *host;
  iocphost_work_fn work;
  union {
    iocphost_session_done_fn session;
    iocphost_room_done_fn room;
  } done;
  void *arg; /* the plugin's */
  /* The owner (a session_t, a room), held from work_submit
   * until work_call_end releases it with release_owner. */
  void *owner;
  void (*release_owner)(void *owner);
  /* Runs on the pool thread: arrange for the completion to run in the
   * owner's serial order even if the owner has ended (session_post_always
   * for a session). Returns 0, or non-zero when it could not (no memory):
   * then done never runs, and the host logs it and ends the call. */
  int (*post_back)(work_call_t *c);
  const char *plugin_name; /* for the log */
  /* Set when a stop gave up on the pool before work started: done runs
   * all the same, with ended = 1 whatever the owner's state. */
  int skipped;
  generation_t *work_code, *done_code; /* held: their code will run */
  work_call_t *prev, *next; /* its stripe's calls, under the stripe lock */
};

/* Submits a copy of call, which the caller filled: host, work, done, arg,
 * owner (a hold the caller took for it), release_owner, post_back and
 * plugin_name. The code of work and of done is held here
 * (generation_hold_code). Returns IOCPHOST_OK (the copy is the host's now:
 * work_call_end frees it), or IOCPHOST_E_BUSY (the queue is full),
 * IOCPHOST_E_CLOSED (the host is stopping), IOCPHOST_E_NOMEM: then nothing
 * was submitted and the owner's hold has been released here. */
int work_submit(const work_call_t *call);
/* In the owner's serial order, after the plugin's done returned: releases
 * the owner, the code holds and c. */
void work_call_end(work_call_t *c);
/* The host's pool: created in host_start; at a stop, waited for until
 * deadline_ms (clock_now_ms), then let go of with a log line. */
int work_start(host_t *host, char *err, size_t err_len);
void work_stop(host_t *host, uint64_t deadline_ms);
/* session_work of the plugin API. */
int api_session_work(iocphost_session_t *s, iocphost_work_fn work,
                     iocphost_session_done_fn done, void *arg);

/* ---- plugin_settings.c ---- */

/* Parses a generation's settings text; 0, or -1 with the reason in err. */
int settings_parse(const char *json, struct cJSON **out, char *err,
                   size_t err_len);
void settings_free(struct cJSON *settings);
/* The value an RFC 6901 JSON pointer names ("" the whole document), or NULL
 * when there is none or the pointer is invalid. */
const struct cJSON *settings_find(const struct cJSON *settings,
                                  const char *pointer);
/* The getters of plugin.h on a document: def (-1 for an array length) when
 * the value is missing or of another type. */
int64_t settings_int(const struct cJSON *settings, const char *pointer,
                     int64_t def);
double settings_number(const struct cJSON *settings, const char *pointer,
                       double def);
const char *settings_string(const struct cJSON *settings, const char *pointer,
                            const char *def);
int settings_bool(const struct cJSON *settings, const char *pointer, int def);
int settings_array_length(const struct cJSON *settings, const char *pointer);
/* Puts the getters into a generation's table (fill_api): they read
 * generation_t.settings. */
void settings_fill_api(iocphost_api_t *api);

/* The table check_settings gets: the getters, reading settings, and no
 * other host function (NULL). */
typedef struct settings_check_api {
  iocphost_api_t api; /* first: the getters find settings from it */
  const struct cJSON *settings;
} settings_check_api_t;
void settings_check_api_init(settings_check_api_t *table,
                             const struct cJSON *settings);

/* ---- services.c ---- */

int create_service(host_t *host, size_t i, char *err, size_t err_len);
void destroy_cores(host_t *host);
void destroy_services(host_t *host);

/* ---- tls_services.c ---- */

/* Every service's TLS context, made from its files (so `check` reads them
 * too); errors name services[i].tls and the file. */
int tls_services_open(host_t *host, char *err, size_t err_len);
void tls_services_close(host_t *host);
/* A reload: new contexts for the services whose TLS files or names
 * changed, made before anything is applied (a failure names the service
 * and file, and the reload changes nothing); then applied (new sessions
 * get them) or dropped, and reported into the reply. */
typedef struct tls_reload tls_reload_t;
int tls_reload_prepare(host_t *host, const config_t *next, tls_reload_t **out,
                       char *err, size_t err_len);
void tls_reload_finish(host_t *host, tls_reload_t *r, int apply, int dry_run,
                       char **out, size_t *len, size_t *cap);

/* ---- plugin_rooms.c ---- */

void rooms_fill_api(iocphost_api_t *a);
/* A session ended: it leaves each of its rooms, in that room's order. */
void rooms_session_ended(session_t *s);
/* The stop: closes every room and waits (until deadline_ms, monotonic) for
 * their on_close; 0, or -1 if some had not closed by then. */
int rooms_close_all(host_t *host, uint64_t deadline_ms);
/* For status: calls fn for each room of g; returns how many. */
typedef void (*rooms_status_fn)(void *arg, uint64_t id, uint32_t members);
size_t rooms_of_generation(host_t *host, const generation_t *g,
                           rooms_status_fn fn, void *arg);
/* For `sessions`: calls fn with the id of each room s is a member of. */
void rooms_of_session(session_t *s, void (*fn)(void *arg, uint64_t room_id),
                      void *arg);

/* ---- status.c ---- */

/* printf into a growing malloc'd buffer (*buf NULL at first). */
void text_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...);

#endif
