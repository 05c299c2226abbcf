/*
 * The host: config and plugins wired onto the engine.
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
#include "host.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <cjson/cJSON.h>

#include "admission.h"
#include "engine/engine.h"
#include "engine/log.h"
#include "framing.h"
#include "iocphost/plugin.h"
#include "plugin_loader.h"
#include "shadow.h"
#include "version.h"

typedef struct host_plugin host_plugin_t;
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
  uint64_t source_hash;
  long sessions; /* bound sessions; under host->gen_lock */
  long holds;    /* timers and posts that will run its code; gen_lock */
  uintptr_t image_start, image_end; /* where its library is mapped */
  int loaded;    /* on_load succeeded: on_unload is owed */
  int retired;   /* no longer current: unload at 0 sessions */
  generation_t *next; /* the plugin's generations, newest first */
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
 * it when it fits (it is sized by the generation current at allocation). */
typedef struct host_session {
  generation_t *generation; /* bound at connect; NULL before */
  void *state;
  int connected; /* the plugin saw on_connected */
} host_session_t;

#define HOST_SESSION_BYTES ((sizeof(host_session_t) + 15) & ~(size_t)15)

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
} host_service_t;

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
  int started;
  atomic_int stopped;
};

#define SESSION(x) ((session_t *)(x))
#define PLUGIN_SESSION(x) ((iocphost_session_t *)(x))

static host_service_t *host_service_of(session_t *s) {
  return service_user(session_service(s));
}

/* Sequentially consistent on both sides: either the caller sees the
 * service unpublished, or destroy_services sees the caller's pin. */
static service_t *engine_pin(host_service_t *hs) {
  atomic_fetch_add(&hs->api_pins, 1);
  service_t *svc = atomic_load(&hs->api_engine);
  if (!svc)
    atomic_fetch_sub(&hs->api_pins, 1);
  return svc;
}

static void engine_unpin(host_service_t *hs) {
  atomic_fetch_sub(&hs->api_pins, 1);
}

/* ---- generations ---- */

static generation_t *generation_acquire(host_plugin_t *p) {
  host_t *host = p->host;
  pthread_mutex_lock(&host->gen_lock);
  generation_t *g = p->current;
  g->sessions++;
  pthread_mutex_unlock(&host->gen_lock);
  return g;
}

/* Nothing can run the generation's code any more; under gen_lock. */
static int generation_unused(const generation_t *g) {
  return g->retired && g->sessions == 0 && g->holds == 0;
}

static void generation_release(generation_t *g) {
  host_t *host = g->plugin->host;
  pthread_mutex_lock(&host->gen_lock);
  g->sessions--;
  if (generation_unused(g))
    pthread_cond_broadcast(&host->gen_changed); /* the reaper's turn */
  pthread_mutex_unlock(&host->gen_lock);
}

static int generation_holds_code(const generation_t *g, uintptr_t address) {
  return address >= g->image_start && address < g->image_end;
}

/* Holds the generation whose library holds the code at address, or none
 * (NULL) when it is no plugin's: a function of a library a plugin links,
 * which the host cannot keep. */
static generation_t *generation_hold_code(host_t *host, uintptr_t address) {
  generation_t *found = NULL;
  pthread_mutex_lock(&host->gen_lock);
  for (size_t i = 0; i < host->plugin_count && !found; i++) {
    host_plugin_t *p = &host->plugins[i];
    if (p->loading && generation_holds_code(p->loading, address))
      found = p->loading;
    for (generation_t *g = p->generations; g && !found; g = g->next)
      if (generation_holds_code(g, address))
        found = g;
  }
  if (found)
    found->holds++;
  pthread_mutex_unlock(&host->gen_lock);
  return found;
}

static void generation_drop_hold(generation_t *g) {
  host_t *host = g->plugin->host;
  pthread_mutex_lock(&host->gen_lock);
  g->holds--;
  if (generation_unused(g))
    pthread_cond_broadcast(&host->gen_changed);
  pthread_mutex_unlock(&host->gen_lock);
}

/* ---- engine handler: forwards to the session's generation ---- */

static host_session_t *host_session(session_t *s) {
  return session_extra(s);
}

static const iocphost_plugin_t *desc_of(session_t *s) {
  return host_session(s)->generation->desc;
}

static void *plugin_state(session_t *s) { return host_session(s)->state; }

static void on_connected(session_t *s) {
  host_session_t *h = host_session(s);
  host_service_t *hs = host_service_of(s);
  generation_t *g = generation_acquire(hs->plugin);
  h->generation = g;
  uint32_t size = g->desc->session_size;
  if (size <= session_extra_size(s) - HOST_SESSION_BYTES) {
    h->state = (char *)h + HOST_SESSION_BYTES;
  } else {
    /* The generation changed since this session was allocated and needs
     * more room than was reserved. */
    h->state = calloc(1, size);
    if (!h->state) {
      session_abort(s, REASON_IO_ERROR);
      return;
    }
  }
  h->connected = 1;
  g->desc->on_connected(PLUGIN_SESSION(s), h->state);
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  host_session_t *h = host_session(s);
  if (h->connected)
    desc_of(s)->on_disconnected(PLUGIN_SESSION(s), h->state,
                                (iocphost_reason_t)reason);
}

static void on_sent(session_t *s, size_t bytes) {
  const iocphost_plugin_t *d = desc_of(s);
  if (d->on_send)
    d->on_send(PLUGIN_SESSION(s), plugin_state(s), bytes);
}

static void on_free(session_t *s) {
  host_session_t *h = host_session(s);
  if (!h->generation)
    return;
  if (h->state != (char *)h + HOST_SESSION_BYTES)
    free(h->state);
  generation_release(h->generation);
}

/* What every packet of one receive needs, looked up once per receive
 * rather than once per packet. */
typedef struct packet_delivery {
  session_t *session;
  const iocphost_plugin_t *desc;
  void *state;
  uint64_t packets;
} packet_delivery_t;

static int deliver_packet(void *ctx, const framing_packet_t *packet) {
  packet_delivery_t *d = ctx;
  d->packets++;
  d->desc->on_packet(PLUGIN_SESSION(d->session), d->state, packet->id,
                     packet->payload, packet->payload_len);
  return !session_is_open(d->session);
}

/* SPEC section 5, parsed by framing.c. A declared size is checked before
 * anything waits for it, so a hostile header never makes the host keep
 * more than max_packet_bytes. */
static size_t on_recv_packets(session_t *s, host_service_t *hs,
                              const uint8_t *data, size_t len) {
  packet_delivery_t d = {s, desc_of(s), plugin_state(s), 0};
  framing_result_t r =
      framing_split(data, len, hs->max_packet_bytes, deliver_packet, &d);
  if (d.packets)
    atomic_fetch_add_explicit(&hs->packets_in, d.packets,
                              memory_order_relaxed);
  if (r.bad) {
    char peer[ADDRESS_TEXT_MAX] = "?";
    address_format(session_peer(s), peer, sizeof peer);
    log_write(LOG_WARN, "framing",
              "service %s: session %llu (%s) sent a packet header declaring "
              "%u bytes (allowed 4..%u): disconnecting (protocol_error)",
              hs->config->name, (unsigned long long)session_id(s), peer,
              (unsigned)r.bad_size, hs->max_packet_bytes);
    session_disconnect(s, REASON_PROTOCOL_ERROR);
    return len;
  }
  return r.stopped ? len : r.used;
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  host_service_t *hs = host_service_of(s);
  if (hs->packet_framing)
    return on_recv_packets(s, hs, data, len);
  return desc_of(s)->on_recv(PLUGIN_SESSION(s), plugin_state(s), data, len);
}

static const session_handler_t plugin_session_handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
    .on_sent = on_sent,
    .on_free = on_free,
};

/* Room for the host's record and the current generation's state. */
static size_t prepare_session(void *ctx, void **session_context) {
  host_service_t *hs = ctx;
  host_t *host = hs->host;
  pthread_mutex_lock(&host->gen_lock);
  size_t room = ((size_t)hs->plugin->current->desc->session_size + 15) &
                ~(size_t)15;
  pthread_mutex_unlock(&host->gen_lock);
  *session_context = NULL;
  return HOST_SESSION_BYTES + room;
}


/* ---- the plugin API ---- */

static void api_log(const iocphost_api_t *api, iocphost_log_level_t level,
                    const char *fmt, ...) {
  const generation_t *g = (const generation_t *)api;
  char subsystem[80];
  snprintf(subsystem, sizeof subsystem, "plugin %s", g->plugin->name);
  va_list ap;
  va_start(ap, fmt);
  log_writev((int)level, subsystem, fmt, ap);
  va_end(ap);
}

static int api_send(iocphost_session_t *s, const void *data, size_t len) {
  if (!s || (!data && len))
    return IOCPHOST_E_INVAL;
  return session_send(SESSION(s), data, len);
}

_Static_assert(sizeof(iocphost_buf_t) == sizeof(session_buf_t) &&
                   offsetof(iocphost_buf_t, len) ==
                       offsetof(session_buf_t, len),
               "the SDK's buffer and the engine's must share a layout");

static int api_sendv(iocphost_session_t *s, const iocphost_buf_t *bufs,
                     size_t count) {
  if (!s || (!bufs && count))
    return IOCPHOST_E_INVAL;
  return session_sendv(SESSION(s), (const session_buf_t *)bufs, count);
}

static int api_send_packet(iocphost_session_t *s, uint16_t id,
                           const void *payload, size_t len) {
  if (!s || (!payload && len))
    return IOCPHOST_E_INVAL;
  host_service_t *hs = host_service_of(SESSION(s));
  if (!hs->packet_framing)
    return IOCPHOST_E_FRAMING;
  /* A small packet is written as one buffer: one plain send rather than a
   * two-part sendmsg, for the cost of copying a few hundred bytes. */
  uint8_t packet[FRAMING_HEADER_BYTES + 512];
  if (framing_write_header(packet, id, len, hs->max_packet_bytes) != 0)
    return IOCPHOST_E_TOOBIG;
  int rc;
  if (len <= sizeof packet - FRAMING_HEADER_BYTES) {
    if (len)
      memcpy(packet + FRAMING_HEADER_BYTES, payload, len);
    rc = session_send(SESSION(s), packet, FRAMING_HEADER_BYTES + len);
  } else {
    session_buf_t bufs[2] = {{packet, FRAMING_HEADER_BYTES}, {payload, len}};
    rc = session_sendv(SESSION(s), bufs, 2);
  }
  if (rc == 0)
    atomic_fetch_add_explicit(&hs->packets_out, 1, memory_order_relaxed);
  return rc;
}

static int api_disconnect(iocphost_session_t *s) {
  if (!s)
    return IOCPHOST_E_INVAL;
  return session_disconnect(SESSION(s), REASON_LOCAL);
}

static uint64_t api_session_id(iocphost_session_t *s) {
  return s ? session_id(SESSION(s)) : 0;
}

static int api_session_peer(iocphost_session_t *s, char *buf, size_t len) {
  if (!s || !buf)
    return IOCPHOST_E_INVAL;
  int n = address_format(session_peer(SESSION(s)), buf, len);
  return n < 0 ? IOCPHOST_E_INVAL : n;
}

static const char *api_session_service_name(iocphost_session_t *s) {
  return s ? service_name(session_service(SESSION(s))) : NULL;
}

static void *api_session_state(iocphost_session_t *s) {
  return s ? plugin_state(SESSION(s)) : NULL;
}

static iocphost_session_t *api_session_acquire(iocphost_session_t *s) {
  return s ? PLUGIN_SESSION(session_acquire(SESSION(s))) : NULL;
}

static void api_session_release(iocphost_session_t *s) {
  if (s)
    session_release(SESSION(s));
}

static iocphost_session_t *api_session_find(iocphost_service_t *service,
                                            uint64_t id) {
  host_service_t *hs = (host_service_t *)service;
  service_t *svc = hs ? engine_pin(hs) : NULL;
  if (!svc)
    return NULL;
  session_t *found = service_find_session(svc, id);
  engine_unpin(hs);
  return PLUGIN_SESSION(found);
}

static iocphost_service_t *api_session_service(iocphost_session_t *s) {
  return s ? (iocphost_service_t *)host_service_of(SESSION(s)) : NULL;
}

static iocphost_service_t *api_service_find(const iocphost_api_t *api,
                                            const char *name) {
  host_t *host = ((const generation_t *)api)->plugin->host;
  if (!name)
    return NULL;
  for (size_t i = 0; i < host->config->service_count; i++)
    if (strcmp(host->config->services[i].name, name) == 0)
      return (iocphost_service_t *)&host->services[i];
  return NULL;
}

static const char *api_service_name(iocphost_service_t *service) {
  return service ? ((host_service_t *)service)->config->name : NULL;
}

/* A broadcast larger than send_queue_limit_bytes could only end with every
 * session that cannot take it at once disconnected (send_queue_full): it is
 * refused before anyone is harmed. Nothing to send is sent to nobody. */
static int broadcast_bytes(host_service_t *hs, const void *header,
                           size_t header_len, const void *data, size_t len) {
  if (len > SIZE_MAX - header_len ||
      header_len + len > hs->config->send_queue_limit_bytes)
    return IOCPHOST_E_TOOBIG;
  if (header_len + len == 0)
    return 0;
  service_t *svc = engine_pin(hs);
  if (!svc)
    return IOCPHOST_E_CLOSED;
  shared_buf_t *buf = shared_buf_new(header_len + len);
  if (!buf) {
    engine_unpin(hs);
    return IOCPHOST_E_NOMEM;
  }
  if (header_len)
    memcpy(shared_buf_data(buf), header, header_len);
  if (len)
    memcpy(shared_buf_data(buf) + header_len, data, len);
  int count = service_broadcast(svc, buf);
  engine_unpin(hs);
  shared_buf_release(buf);
  return count;
}

static int api_broadcast(iocphost_service_t *service, const void *data,
                         size_t len) {
  if (!service || (!data && len))
    return IOCPHOST_E_INVAL;
  return broadcast_bytes((host_service_t *)service, NULL, 0, data, len);
}

static int api_broadcast_packet(iocphost_service_t *service, uint16_t id,
                                const void *payload, size_t len) {
  host_service_t *hs = (host_service_t *)service;
  if (!hs || (!payload && len))
    return IOCPHOST_E_INVAL;
  if (!hs->packet_framing)
    return IOCPHOST_E_FRAMING;
  uint8_t header[FRAMING_HEADER_BYTES];
  if (framing_write_header(header, id, len, hs->max_packet_bytes) != 0)
    return IOCPHOST_E_TOOBIG;
  int count = broadcast_bytes(hs, header, sizeof header, payload, len);
  if (count > 0)
    atomic_fetch_add_explicit(&hs->packets_out, (uint64_t)count,
                              memory_order_relaxed);
  return count;
}

/* A timer's or post's plugin function, its argument and the generation
 * it holds (see the top of the file); the engine carries it as a pointer
 * and says when it is done with it. */
typedef struct plugin_call {
  iocphost_session_fn fn;
  void *arg;
  generation_t *generation; /* held; NULL when fn is no plugin's code */
} plugin_call_t;

static plugin_call_t *plugin_call_new(session_t *s, iocphost_session_fn fn,
                                      void *arg) {
  plugin_call_t *c = malloc(sizeof *c);
  if (!c)
    return NULL;
  c->fn = fn;
  c->arg = arg;
  /* A function pointer as an address: what the library's image holds. */
  uintptr_t address;
  _Static_assert(sizeof fn == sizeof address,
                 "function pointers and addresses must have one size here");
  memcpy(&address, &fn, sizeof address);
  c->generation = generation_hold_code(host_service_of(s)->host, address);
  return c;
}

/* The engine is done with the timer or post (or never took it). */
static void plugin_call_free(plugin_call_t *c) {
  if (c->generation)
    generation_drop_hold(c->generation);
  free(c);
}

static void run_plugin_call(session_t *s, void *call, void *unused) {
  plugin_call_t *c = call;
  c->fn(PLUGIN_SESSION(s), plugin_state(s), c->arg);
}

static void plugin_call_done(session_t *s, void *call, void *unused) {
  plugin_call_free(call);
}

static uint64_t api_timer_start(iocphost_session_t *s, uint32_t delay_ms,
                                uint32_t repeat_ms, iocphost_session_fn fn,
                                void *arg) {
  if (!s || !fn)
    return 0;
  plugin_call_t *c = plugin_call_new(SESSION(s), fn, arg);
  if (!c)
    return 0;
  uint64_t id = session_timer_start2(SESSION(s), delay_ms, repeat_ms,
                                     run_plugin_call, plugin_call_done, c,
                                     NULL);
  if (id == 0)
    plugin_call_free(c);
  return id;
}

static int api_timer_stop(iocphost_session_t *s, uint64_t timer_id) {
  if (!s)
    return IOCPHOST_E_INVAL;
  return session_timer_stop(SESSION(s), timer_id);
}

static int api_post(iocphost_session_t *s, iocphost_session_fn fn, void *arg) {
  if (!s || !fn)
    return IOCPHOST_E_INVAL;
  plugin_call_t *c = plugin_call_new(SESSION(s), fn, arg);
  if (!c)
    return IOCPHOST_E_NOMEM;
  int rc = session_post2(SESSION(s), run_plugin_call, plugin_call_done, c,
                         NULL);
  if (rc != 0)
    plugin_call_free(c);
  return rc;
}

static int api_service_framing(iocphost_service_t *service) {
  if (!service)
    return IOCPHOST_E_INVAL;
  return ((host_service_t *)service)->packet_framing ? IOCPHOST_FRAMING_PACKET
                                                     : IOCPHOST_FRAMING_RAW;
}

static uint32_t api_service_max_packet_bytes(iocphost_service_t *service) {
  host_service_t *hs = (host_service_t *)service;
  return hs && hs->packet_framing ? hs->max_packet_bytes : 0;
}

static const char *api_result_text(int result) {
  switch (result) {
#define RESULT_TEXT(name, value, text)                                         \
  case value:                                                                  \
    return text;
    IOCPHOST_RESULTS(RESULT_TEXT)
#undef RESULT_TEXT
  default:
    return "unknown result";
  }
}

static const char *api_reason_text(iocphost_reason_t reason) {
  return session_reason_name((int)reason);
}

static void fill_api(generation_t *g) {
  iocphost_api_t *a = &g->api;
  memset(a, 0, sizeof *a);
  a->struct_size = sizeof *a;
  a->abi_major = IOCPHOST_ABI_MAJOR;
  a->abi_minor = IOCPHOST_ABI_MINOR;
  a->host_version = IOCPHOST_VERSION;
  a->log = api_log;
  a->send = api_send;
  a->sendv = api_sendv;
  a->send_packet = api_send_packet;
  a->disconnect = api_disconnect;
  a->session_id = api_session_id;
  a->session_peer = api_session_peer;
  a->session_service_name = api_session_service_name;
  a->session_state = api_session_state;
  a->session_acquire = api_session_acquire;
  a->session_release = api_session_release;
  a->session_find = api_session_find;
  a->session_service = api_session_service;
  a->service_find = api_service_find;
  a->service_name = api_service_name;
  a->broadcast = api_broadcast;
  a->broadcast_packet = api_broadcast_packet;
  a->timer_start = api_timer_start;
  a->timer_stop = api_timer_stop;
  a->post = api_post;
  a->result_text = api_result_text;
  a->reason_text = api_reason_text;
  a->service_framing = api_service_framing;
  a->service_max_packet_bytes = api_service_max_packet_bytes;
}

/* ---- lifecycle ---- */

/* Opens a generation of plugin p from path, admitted by the one decision
 * run, check and reload share (admission.h; nothing of the plugin run but
 * its entry symbol). shadow_dir NULL loads the file in place (for `check`);
 * otherwise from a fresh copy of the checked file. */
static generation_t *generation_open(host_plugin_t *p, const char *path,
                                     const char *settings_json,
                                     const char *shadow_dir, char *err,
                                     size_t err_len) {
  generation_t *g = calloc(1, sizeof *g);
  if (!g || !(g->source_path = strdup(path)) ||
      !(g->settings_json = strdup(settings_json ? settings_json : "{}"))) {
    if (g) {
      free(g->source_path);
      free(g);
    }
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  g->plugin = p;
  g->number = p->generation_count + 1;
  plugin_admitted_t admitted;
  if (plugin_admit(p->name, path, p->host->config, shadow_dir, g->number,
                   &admitted, err, err_len) != 0) {
    free(g->settings_json);
    free(g->source_path);
    free(g);
    return NULL;
  }
  g->module = admitted.module;
  g->shadow_path = admitted.shadow_path;
  g->source_hash = admitted.hash;
  g->desc = plugin_module_descriptor(g->module);
  if (plugin_module_image(g->module, &g->image_start, &g->image_end) != 0)
    log_write(LOG_WARN, "host",
              "plugin %s (%s): cannot tell where its library is mapped; "
              "its timers and posts will not keep it loaded",
              p->name, path);
  fill_api(g);
  return g;
}

/* on_unload if owed, then the library and its copy go. */
static void generation_close(generation_t *g) {
  if (g->loaded && g->desc->on_unload)
    g->desc->on_unload();
  g->loaded = 0;
  plugin_module_close(g->module);
  shadow_remove(g->shadow_path);
  free(g->shadow_path);
  free(g->settings_json);
  free(g->source_path);
  free(g);
}

static int generation_load(generation_t *g, char *err, size_t err_len) {
  if (g->desc->on_load) {
    char reason[512] = "";
    if (g->desc->on_load(&g->api, g->settings_json, reason, sizeof reason) !=
        0) {
      reason[sizeof reason - 1] = '\0';
      snprintf(err, err_len, "plugin \"%s\" (%s): on_load refused: %s",
               g->plugin->name, g->source_path,
               reason[0] ? reason : "(no reason given)");
      return -1;
    }
  }
  g->loaded = 1;
  log_write(LOG_INFO, "host", "plugin %s %s (generation %u) loaded from %s",
            g->plugin->name, g->desc->version, g->number, g->source_path);
  return 0;
}

static void generation_make_current(host_plugin_t *p, generation_t *g) {
  g->next = p->generations;
  p->generations = g;
  p->generation_count = g->number;
  if (p->current)
    p->current->retired = 1;
  p->current = g;
  if (p->loading == g)
    p->loading = NULL;
}

/* A refused reload's new generation goes: at once, unless its on_load
 * armed timers or posts that still hold it; then the reaper closes it
 * after them, as a retired one. */
static void generation_discard(host_plugin_t *p, generation_t *g) {
  host_t *host = p->host;
  pthread_mutex_lock(&host->gen_lock);
  if (p->loading == g)
    p->loading = NULL;
  int held = g->holds > 0;
  if (held) {
    g->retired = 1;
    g->next = p->generations;
    p->generations = g;
    p->generation_count = g->number;
    pthread_cond_broadcast(&host->gen_changed);
  }
  pthread_mutex_unlock(&host->gen_lock);
  if (!held)
    generation_close(g);
}

int host_open(const config_t *config, host_t **out, char *err,
              size_t err_len) {
  host_t *host = calloc(1, sizeof *host);
  if (!host) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  host->config = config;
  pthread_mutex_init(&host->lock, NULL);
  pthread_mutex_init(&host->gen_lock, NULL);
  pthread_mutex_init(&host->reload_lock, NULL);
  pthread_cond_init(&host->gen_changed, NULL);
  host->plugins = calloc(config->plugin_count + 1, sizeof *host->plugins);
  host->services = calloc(config->service_count + 1, sizeof *host->services);
  host->cores = calloc(config->core_count + 1, sizeof *host->cores);
  generation_t **gens = calloc(config->plugin_count + 1, sizeof *gens);
  if (!host->plugins || !host->services || !host->cores || !gens) {
    free(gens);
    host_close(host);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  host->plugin_count = config->plugin_count;
  for (size_t i = 0; i < config->plugin_count; i++) {
    host->plugins[i].host = host;
    host->plugins[i].name = config->plugins[i].name;
  }
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < config->plugin_count; i++) {
    gens[i] = generation_open(&host->plugins[i], config->plugins[i].path,
                              config->plugins[i].settings_json, NULL, err,
                              err_len);
    if (!gens[i])
      rc = -1;
  }
  for (size_t i = 0; i < config->service_count; i++) {
    const config_service_t *cs = &config->services[i];
    host_service_t *hs = &host->services[i];
    hs->host = host;
    hs->config = cs;
    hs->plugin = &host->plugins[cs->plugin_index];
    hs->packet_framing = cs->framing == CONFIG_FRAMING_PACKET;
    hs->max_packet_bytes = cs->max_packet_bytes;
  }
  for (size_t i = 0; i < config->plugin_count; i++) {
    if (!gens[i])
      continue;
    if (rc == 0)
      generation_make_current(&host->plugins[i], gens[i]);
    else
      generation_close(gens[i]);
  }
  free(gens);
  if (rc != 0) {
    host_close(host);
    return -1;
  }
  *out = host;
  return 0;
}

/* Unloads retired generations once their last session is gone. It is a
 * thread of its own so that on_unload and the library's unmapping never
 * run inside the code being unloaded (a session's last release can come
 * from within a plugin callback). */
static void *reaper_main(void *arg) {
  host_t *host = arg;
  pthread_mutex_lock(&host->gen_lock);
  for (;;) {
    generation_t *done = NULL;
    for (size_t i = 0; i < host->plugin_count && !done; i++) {
      for (generation_t **link = &host->plugins[i].generations; *link;
           link = &(*link)->next) {
        generation_t *g = *link;
        if (generation_unused(g)) {
          *link = g->next;
          done = g;
          break;
        }
      }
    }
    if (done) {
      pthread_mutex_unlock(&host->gen_lock);
      log_write(LOG_INFO, "host",
                "plugin %s generation %u (%s): last session, timer and post "
                "ended; unloading",
                done->plugin->name, done->number, done->desc->version);
      /* Loading and unloading never interleave: a reload may map its new
       * library where this one was (and ThreadSanitizer, which cannot see
       * the loader's own lock, would take that reuse for a race). */
      pthread_mutex_lock(&host->reload_lock);
      generation_close(done);
      pthread_mutex_unlock(&host->reload_lock);
      pthread_mutex_lock(&host->gen_lock);
      continue;
    }
    if (host->reaper_stop)
      break;
    pthread_cond_wait(&host->gen_changed, &host->gen_lock);
  }
  pthread_mutex_unlock(&host->gen_lock);
  return NULL;
}

/* Unloads every generation still there: the stop, after every session.
 * Under the reload lock, so a reload still answering has finished with the
 * generations it names. */
static void unload_plugins(host_t *host) {
  if (host->reaper_running) {
    pthread_mutex_lock(&host->gen_lock);
    host->reaper_stop = 1;
    pthread_cond_broadcast(&host->gen_changed);
    pthread_mutex_unlock(&host->gen_lock);
    pthread_join(host->reaper, NULL);
    host->reaper_running = 0;
  }
  pthread_mutex_lock(&host->reload_lock);
  for (size_t i = host->plugin_count; i-- > 0;) {
    host_plugin_t *p = &host->plugins[i];
    pthread_mutex_lock(&host->gen_lock);
    generation_t *g = p->generations;
    p->generations = NULL;
    p->current = NULL;
    pthread_mutex_unlock(&host->gen_lock);
    while (g) {
      generation_t *next = g->next;
      if (g->sessions != 0 || g->holds != 0)
        log_write(LOG_ERROR, "host",
                  "plugin %s generation %u still has %ld sessions and %ld "
                  "timers or posts at unload (a session handle was kept "
                  "without release)",
                  p->name, g->number, g->sessions, g->holds);
      generation_close(g);
      g = next;
    }
  }
  pthread_mutex_unlock(&host->reload_lock);
}

/* At start, the generations `host_open` checked in place are loaded again
 * from shadow copies: the deployed files must stay free to be replaced. No
 * code of theirs but the entry symbol ran, so nothing is lost. */
static int move_to_shadow(host_t *host, char *err, size_t err_len) {
  const config_t *c = host->config;
  if (shadow_dir_create(c->runtime_dir, c->name, &host->shadow_dir, err,
                        err_len) != 0)
    return -1;
  for (size_t i = 0; i < host->plugin_count; i++) {
    host_plugin_t *p = &host->plugins[i];
    generation_t *checked = p->current;
    p->generation_count = 0;
    generation_t *g = generation_open(p, checked->source_path,
                                      checked->settings_json,
                                      host->shadow_dir, err, err_len);
    if (!g) {
      p->generation_count = checked->number;
      return -1;
    }
    p->generations = checked->next;
    p->current = NULL;
    generation_close(checked);
    generation_make_current(p, g);
  }
  return 0;
}
static int create_service(host_t *host, size_t i, char *err, size_t err_len) {
  host_service_t *hs = &host->services[i];
  const config_service_t *cs = hs->config;
  service_options_t o;
  service_options_init(&o);
  o.name = cs->name;
  o.type = cs->type == CONFIG_SERVICE_CLIENT ? SERVICE_CLIENT : SERVICE_SERVER;
  o.address = cs->address;
  o.factory.handler = &plugin_session_handler;
  o.factory.ctx = hs;
  o.factory.prepare = prepare_session;
  o.max_recv_bytes = cs->max_recv_bytes;
  /* A whole packet must fit in what a session may keep unconsumed. */
  if (hs->packet_framing && o.max_recv_bytes < cs->max_packet_bytes)
    o.max_recv_bytes = cs->max_packet_bytes;
  o.send_queue_limit_bytes = cs->send_queue_limit_bytes;
  o.idle_timeout_ms = cs->idle_timeout_ms;
  o.incomplete_timeout_ms = cs->incomplete_timeout_ms;
  o.tcp_nodelay = cs->tcp_nodelay;
  o.max_sessions = cs->max_sessions;
  o.backlog = cs->backlog;
  o.client_sessions = cs->sessions;
  o.connect_timeout_ms = cs->connect_timeout_ms;
  o.reconnect = cs->reconnect;
  o.reconnect_min_delay_ms = cs->reconnect_min_delay_ms;
  o.reconnect_max_delay_ms = cs->reconnect_max_delay_ms;
  o.reconnect_jitter = cs->reconnect_jitter;
  o.reconnect_reset_after_ms = cs->reconnect_reset_after_ms;
  /* A session asked to close may flush for as long as a graceful stop may
   * drain, and a little longer: the stop's deadline, not one of its own,
   * decides when a stop gives up (and says so in the log). */
  if (host->config->drain_timeout_ms > 0)
    o.close_timeout_ms = host->config->drain_timeout_ms + 1000;
  service_t *svc;
  if (service_create(host->cores[cs->core_index], &o, &svc, err, err_len) != 0)
    return -1;
  service_set_user(svc, hs);
  pthread_mutex_lock(&host->lock); /* status may be reading */
  hs->engine = svc;
  pthread_mutex_unlock(&host->lock);
  atomic_store(&hs->api_engine, svc);
  return 0;
}

static void destroy_services(host_t *host) {
  for (size_t i = 0; i < host->config->service_count; i++) {
    host_service_t *hs = &host->services[i];
    pthread_mutex_lock(&host->lock);
    service_t *svc = hs->engine;
    hs->engine = NULL;
    pthread_mutex_unlock(&host->lock);
    atomic_store(&hs->api_engine, NULL);
    /* A pin lasts one API call (a lookup, a broadcast): short, and it
     * never waits for the stop. */
    while (atomic_load(&hs->api_pins) > 0)
      sched_yield();
    if (svc)
      service_destroy(svc);
  }
}

static void destroy_cores(host_t *host) {
  for (size_t i = 0; i < host->config->core_count; i++) {
    pthread_mutex_lock(&host->lock);
    core_t *core = host->cores[i];
    host->cores[i] = NULL;
    pthread_mutex_unlock(&host->lock);
    core_destroy(core);
  }
}

int host_start(host_t *host, char *err, size_t err_len) {
  const config_t *c = host->config;
  if (move_to_shadow(host, err, err_len) != 0)
    return -3;
  for (size_t i = 0; i < host->plugin_count; i++) {
    if (generation_load(host->plugins[i].current, err, err_len) != 0) {
      unload_plugins(host);
      return -1;
    }
  }
  if (pthread_create(&host->reaper, NULL, reaper_main, host) == 0)
    host->reaper_running = 1;
  for (size_t i = 0; i < c->core_count; i++) {
    core_t *core;
    if (core_create(c->cores[i].name, c->cores[i].threads, c->cores[i].backend,
                    &core, err, err_len) != 0)
      goto fail;
    pthread_mutex_lock(&host->lock); /* status may be reading */
    host->cores[i] = core;
    pthread_mutex_unlock(&host->lock);
    log_write(LOG_INFO, "host", "core %s: %d worker threads", c->cores[i].name,
              core_thread_count(host->cores[i]));
  }
  for (size_t i = 0; i < c->service_count; i++)
    if (create_service(host, i, err, err_len) != 0)
      goto fail;
  /* Bind every server first, so an address in use fails before any client
   * service has dialled out. */
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < c->service_count; i++) {
      const config_service_t *cs = &c->services[i];
      if ((cs->type == CONFIG_SERVICE_SERVER) != (pass == 0))
        continue;
      if (service_start(host->services[i].engine, err, err_len) != 0)
        goto fail;
      log_write(LOG_INFO, "host", "service %s: %s %s, plugin %s, %s framing",
                cs->name, cs->type == CONFIG_SERVICE_SERVER ? "listening on"
                                                            : "connecting to",
                cs->address_text, host->services[i].plugin->name,
                cs->framing == CONFIG_FRAMING_PACKET ? "packet" : "raw");
    }
  }
  host->started = 1;
  return 0;
fail:
  destroy_services(host);
  destroy_cores(host);
  unload_plugins(host);
  return -3;
}

/* on_stopping for every loaded generation, with no host lock held: a
 * plugin that releases its last reference to a session there frees the
 * session, which releases its generation under gen_lock. The generations
 * are pinned (counted like sessions) meanwhile so the reaper keeps them. */
static void tell_plugins_stopping(host_t *host) {
  size_t count = 0;
  pthread_mutex_lock(&host->gen_lock);
  for (size_t i = 0; i < host->plugin_count; i++)
    for (generation_t *g = host->plugins[i].generations; g; g = g->next)
      count++;
  generation_t **pinned = count ? calloc(count, sizeof *pinned) : NULL;
  size_t n = 0;
  for (size_t i = 0; pinned && i < host->plugin_count; i++) {
    for (generation_t *g = host->plugins[i].generations; g; g = g->next) {
      if (g->loaded && g->desc->on_stopping) {
        g->sessions++;
        pinned[n++] = g;
      }
    }
  }
  pthread_mutex_unlock(&host->gen_lock);
  if (count && !pinned)
    log_write(LOG_ERROR, "host",
              "out of memory: plugins are not told the host is stopping");
  for (size_t i = 0; i < n; i++) {
    pinned[i]->desc->on_stopping();
    generation_release(pinned[i]);
  }
  free(pinned);
}

void host_stop(host_t *host) {
  if (!host->started || host->stopped)
    return;
  host->stopped = 1;
  const config_t *c = host->config;
  for (size_t i = 0; i < c->service_count; i++)
    service_stop_accepting(host->services[i].engine);
  tell_plugins_stopping(host);
  for (size_t i = 0; i < c->service_count; i++)
    service_disconnect_all(host->services[i].engine, REASON_HOST_STOPPING);
  uint64_t deadline = clock_now_ms() + c->drain_timeout_ms;
  int drained = 1;
  for (size_t i = 0; i < c->service_count; i++) {
    uint64_t now = clock_now_ms();
    uint32_t left = now < deadline ? (uint32_t)(deadline - now) : 0;
    if (service_wait_closed(host->services[i].engine, left) != 0)
      drained = 0;
  }
  if (!drained) {
    log_write(LOG_WARN, "host",
              "drain_timeout_ms %u passed with sessions still flushing: "
              "closing them now",
              c->drain_timeout_ms);
    for (size_t i = 0; i < c->service_count; i++)
      service_abort_all(host->services[i].engine, REASON_HOST_STOPPING);
  }
  destroy_services(host);
  unload_plugins(host);
  destroy_cores(host);
}

void host_close(host_t *host) {
  if (!host)
    return;
  if (host->started)
    host_stop(host);
  unload_plugins(host); /* what check opened, or what a failed start left */
  shadow_dir_remove(host->shadow_dir);
  free(host->shadow_dir);
  free(host->plugins);
  free(host->services);
  free(host->cores);
  pthread_mutex_destroy(&host->lock);
  pthread_mutex_destroy(&host->gen_lock);
  pthread_mutex_destroy(&host->reload_lock);
  pthread_cond_destroy(&host->gen_changed);
  free(host);
}

/* ---- status (SPEC section 8) ---- */

static const char *const reason_names[] = {
#define REASON_NAME(name, value, text) [value] = text,
    IOCPHOST_REASONS(REASON_NAME)
#undef REASON_NAME
};
#define REASON_COUNT ((int)(sizeof reason_names / sizeof reason_names[0]))

static cJSON *service_json(host_service_t *hs) {
  const config_service_t *cs = hs->config;
  service_stats_t st;
  memset(&st, 0, sizeof st);
  if (hs->engine)
    service_get_stats(hs->engine, &st);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", cs->name);
  cJSON_AddStringToObject(o, "type",
                          cs->type == CONFIG_SERVICE_SERVER ? "server" : "client");
  cJSON_AddStringToObject(o, "address", cs->address_text);
  cJSON_AddStringToObject(o, "core", cs->core);
  cJSON_AddStringToObject(o, "plugin", cs->plugin);
  cJSON_AddStringToObject(o, "framing", hs->packet_framing ? "packet" : "raw");
  cJSON_AddNumberToObject(o, "sessions", (double)st.sessions_now);
  cJSON_AddNumberToObject(o, "max_sessions", (double)st.sessions_max);
  cJSON_AddNumberToObject(o, "accepted", (double)st.accepted);
  cJSON_AddNumberToObject(o, "rejected", (double)st.rejected);
  cJSON_AddNumberToObject(o, "accept_errors", (double)st.accept_errors);
  cJSON_AddNumberToObject(o, "connects", (double)st.connects);
  cJSON_AddNumberToObject(o, "connect_failures", (double)st.connect_failures);
  cJSON_AddNumberToObject(o, "bytes_in", (double)st.bytes_in);
  cJSON_AddNumberToObject(o, "bytes_out", (double)st.bytes_out);
  cJSON_AddNumberToObject(o, "packets_in", (double)atomic_load(&hs->packets_in));
  cJSON_AddNumberToObject(o, "packets_out",
                          (double)atomic_load(&hs->packets_out));
  cJSON *d = cJSON_AddObjectToObject(o, "disconnects");
  for (int r = 1; r < REASON_COUNT && r < 10; r++)
    if (reason_names[r])
      cJSON_AddNumberToObject(d, reason_names[r], (double)st.disconnects[r]);
  return o;
}

static cJSON *status_json(host_t *host, uint64_t uptime_ms) {
  const config_t *c = host->config;
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "name", c->name);
  cJSON_AddStringToObject(root, "version", IOCPHOST_VERSION);
  cJSON_AddNumberToObject(root, "pid", (double)getpid());
  cJSON_AddNumberToObject(root, "uptime_ms", (double)uptime_ms);
  cJSON_AddStringToObject(root, "config", c->file);
  cJSON_AddStringToObject(root, "state", host->stopped ? "stopping" : "running");
  cJSON *cores = cJSON_AddArrayToObject(root, "cores");
  for (size_t i = 0; i < c->core_count; i++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", c->cores[i].name);
    if (host->cores[i]) {
      cJSON_AddNumberToObject(o, "threads", core_thread_count(host->cores[i]));
      cJSON_AddNumberToObject(o, "completions",
                              (double)core_completions(host->cores[i]));
    }
    cJSON_AddItemToArray(cores, o);
  }
  cJSON *plugins = cJSON_AddArrayToObject(root, "plugins");
  for (size_t i = 0; i < host->plugin_count; i++) {
    host_plugin_t *p = &host->plugins[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", p->name);
    pthread_mutex_lock(&host->gen_lock);
    generation_t *current = p->current;
    if (current) {
      cJSON_AddStringToObject(o, "version", current->desc->version);
      cJSON_AddStringToObject(o, "path", current->source_path);
      cJSON_AddNumberToObject(o, "generation", current->number);
    }
    cJSON *gens = cJSON_AddArrayToObject(o, "generations");
    for (generation_t *g = p->generations; g; g = g->next) {
      cJSON *go = cJSON_CreateObject();
      cJSON_AddNumberToObject(go, "generation", g->number);
      cJSON_AddStringToObject(go, "version", g->desc->version);
      cJSON_AddStringToObject(go, "state", g == current ? "current" : "retired");
      cJSON_AddNumberToObject(go, "sessions", (double)g->sessions);
      /* Timers and posts of its code still to run (or be dropped). */
      cJSON_AddNumberToObject(go, "timers_and_posts", (double)g->holds);
      cJSON_AddItemToArray(gens, go);
    }
    pthread_mutex_unlock(&host->gen_lock);
    cJSON_AddItemToArray(plugins, o);
  }
  cJSON *services = cJSON_AddArrayToObject(root, "services");
  for (size_t i = 0; i < c->service_count; i++)
    cJSON_AddItemToArray(services, service_json(&host->services[i]));
  return root;
}

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
    va_end(ap);
    if (n < 0)
      return;
    if (*buf && *len + (size_t)n < *cap) {
      *len += (size_t)n;
      return;
    }
    size_t want = (*cap ? *cap * 2 : 1024) + (size_t)n;
    char *grown = realloc(*buf, want);
    if (!grown)
      return;
    *buf = grown;
    *cap = want;
  }
}

char *host_status(host_t *host, int json, uint64_t uptime_ms) {
  pthread_mutex_lock(&host->lock);
  cJSON *root = status_json(host, uptime_ms);
  pthread_mutex_unlock(&host->lock);
  char *out = NULL;
  if (json) {
    char *text = cJSON_Print(root);
    size_t len = text ? strlen(text) : 0;
    out = malloc(len + 5);
    if (out)
      snprintf(out, len + 5, "ok\n%s\n", text ? text : "");
    cJSON_free(text);
    cJSON_Delete(root);
    return out;
  }
  size_t len = 0, cap = 0;
  append(&out, &len, &cap, "ok\niocphost %s \"%s\", pid %d, %s, up %llu s\n",
         IOCPHOST_VERSION, host->config->name, (int)getpid(),
         host->stopped ? "stopping" : "running",
         (unsigned long long)(uptime_ms / 1000));
  cJSON *item;
  cJSON_ArrayForEach(item, cJSON_GetObjectItem(root, "cores")) {
    append(&out, &len, &cap, "core %s: %d threads, %.0f completions\n",
           cJSON_GetObjectItem(item, "name")->valuestring,
           cJSON_GetObjectItem(item, "threads")
               ? cJSON_GetObjectItem(item, "threads")->valueint
               : 0,
           cJSON_GetObjectItem(item, "completions")
               ? cJSON_GetObjectItem(item, "completions")->valuedouble
               : 0.0);
  }
  cJSON_ArrayForEach(item, cJSON_GetObjectItem(root, "plugins")) {
    cJSON *version = cJSON_GetObjectItem(item, "version");
    cJSON *path = cJSON_GetObjectItem(item, "path");
    append(&out, &len, &cap, "plugin %s %s (%s), generations:",
           cJSON_GetObjectItem(item, "name")->valuestring,
           version ? version->valuestring : "-", path ? path->valuestring : "-");
    cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(item, "generations")) {
      append(&out, &len, &cap, " %.0f (%s, %s, %.0f sessions",
             cJSON_GetObjectItem(g, "generation")->valuedouble,
             cJSON_GetObjectItem(g, "version")->valuestring,
             cJSON_GetObjectItem(g, "state")->valuestring,
             cJSON_GetObjectItem(g, "sessions")->valuedouble);
      double holds =
          cJSON_GetObjectItem(g, "timers_and_posts")->valuedouble;
      if (holds > 0)
        append(&out, &len, &cap, ", %.0f timers or posts", holds);
      append(&out, &len, &cap, ")");
    }
    append(&out, &len, &cap, "\n");
  }
  cJSON_ArrayForEach(item, cJSON_GetObjectItem(root, "services")) {
#define NUM(key) cJSON_GetObjectItem(item, key)->valuedouble
#define STR(key) cJSON_GetObjectItem(item, key)->valuestring
    append(&out, &len, &cap,
           "service %s (%s %s, plugin %s, %s): sessions %.0f/%.0f, accepted "
           "%.0f, rejected %.0f, connects %.0f, connect failures %.0f, bytes "
           "in %.0f out %.0f, packets in %.0f out %.0f, disconnects:",
           STR("name"), STR("type"), STR("address"), STR("plugin"),
           STR("framing"), NUM("sessions"), NUM("max_sessions"),
           NUM("accepted"), NUM("rejected"), NUM("connects"),
           NUM("connect_failures"), NUM("bytes_in"), NUM("bytes_out"),
           NUM("packets_in"), NUM("packets_out"));
    cJSON *reason;
    int any = 0;
    cJSON_ArrayForEach(reason, cJSON_GetObjectItem(item, "disconnects")) {
      if (reason->valuedouble > 0) {
        append(&out, &len, &cap, " %s %.0f", reason->string, reason->valuedouble);
        any = 1;
      }
    }
    append(&out, &len, &cap, "%s\n", any ? "" : " none");
#undef NUM
#undef STR
  }
  cJSON_Delete(root);
  return out;
}

/* ---- reload (SPEC section 10) ---- */

static void note(char **out, size_t *len, size_t *cap, const char *what,
                 const char *path, const char *before, const char *after) {
  append(out, len, cap, "needs a restart, not applied: %s%s%s (%s -> %s)\n",
         what, path ? "." : "", path ? path : "", before, after);
}

#define DIFF_STR(label, x, y, field)                                           \
  if (strcmp((x)->field ? (x)->field : "", (y)->field ? (y)->field : "") != 0) \
    note(out, len, cap, label, #field, (x)->field ? (x)->field : "null",       \
         (y)->field ? (y)->field : "null");
#define DIFF_NUM(label, x, y, field)                                           \
  if ((x)->field != (y)->field) {                                              \
    char before[32], after[32];                                                \
    snprintf(before, sizeof before, "%.17g", (double)(x)->field);              \
    snprintf(after, sizeof after, "%.17g", (double)(y)->field);                \
    note(out, len, cap, label, #field, before, after);                         \
  }

/* What differs between the running config and a new one beyond plugin
 * files and settings: reported, never half-applied. */
static void restart_notes(const config_t *a, const config_t *b, char **out,
                          size_t *len, size_t *cap) {
  DIFF_STR("config", a, b, name);
  DIFF_STR("config", a, b, runtime_dir);
  DIFF_STR("config", a, b, log_file);
  DIFF_NUM("config", a, b, drain_timeout_ms);
  if (a->core_count != b->core_count || a->service_count != b->service_count ||
      a->plugin_count != b->plugin_count) {
    char before[64], after[64];
    snprintf(before, sizeof before, "%zu cores, %zu plugins, %zu services",
             a->core_count, a->plugin_count, a->service_count);
    snprintf(after, sizeof after, "%zu cores, %zu plugins, %zu services",
             b->core_count, b->plugin_count, b->service_count);
    note(out, len, cap, "the set of cores, plugins or services", NULL, before,
         after);
    return;
  }
  char label[64];
  for (size_t i = 0; i < a->core_count; i++) {
    snprintf(label, sizeof label, "cores[%zu]", i);
    DIFF_STR(label, &a->cores[i], &b->cores[i], name);
    DIFF_NUM(label, &a->cores[i], &b->cores[i], threads);
    DIFF_NUM(label, &a->cores[i], &b->cores[i], backend);
  }
  for (size_t i = 0; i < a->plugin_count; i++) {
    snprintf(label, sizeof label, "plugins[%zu]", i);
    DIFF_STR(label, &a->plugins[i], &b->plugins[i], name);
  }
  for (size_t i = 0; i < a->service_count; i++) {
    const config_service_t *x = &a->services[i], *y = &b->services[i];
    snprintf(label, sizeof label, "services[%zu]", i);
    DIFF_STR(label, x, y, name);
    DIFF_NUM(label, x, y, type);
    DIFF_STR(label, x, y, core);
    DIFF_STR(label, x, y, plugin);
    DIFF_STR(label, x, y, address_text);
    DIFF_NUM(label, x, y, framing);
    DIFF_NUM(label, x, y, max_recv_bytes);
    DIFF_NUM(label, x, y, max_packet_bytes);
    DIFF_NUM(label, x, y, send_queue_limit_bytes);
    DIFF_NUM(label, x, y, idle_timeout_ms);
    DIFF_NUM(label, x, y, incomplete_timeout_ms);
    DIFF_NUM(label, x, y, tcp_nodelay);
    DIFF_NUM(label, x, y, max_sessions);
    DIFF_NUM(label, x, y, backlog);
    DIFF_NUM(label, x, y, sessions);
    DIFF_NUM(label, x, y, connect_timeout_ms);
    DIFF_NUM(label, x, y, reconnect);
    DIFF_NUM(label, x, y, reconnect_min_delay_ms);
    DIFF_NUM(label, x, y, reconnect_max_delay_ms);
    DIFF_NUM(label, x, y, reconnect_jitter);
  }
}
#undef DIFF_STR
#undef DIFF_NUM

char *host_reload(host_t *host, const char *config_file, int dry_run) {
  char err[2048] = "";
  char *out = NULL;
  size_t len = 0, cap = 0;
  config_t *next;
  if (config_load(config_file, &next, err, sizeof err) != 0) {
    append(&out, &len, &cap,
           "error: the config is invalid; nothing changed: %s\n", err);
    return out;
  }
  pthread_mutex_lock(&host->reload_lock);
  if (atomic_load(&host->stopped)) {
    pthread_mutex_unlock(&host->reload_lock);
    config_free(next);
    append(&out, &len, &cap, "error: the host is stopping; nothing changed\n");
    return out;
  }
  const config_t *c = host->config;
  size_t count = host->plugin_count;
  generation_t **fresh = calloc(count + 1, sizeof *fresh);
  char **why = calloc(count + 1, sizeof *why);
  int failed = !fresh || !why;
  if (failed)
    snprintf(err, sizeof err, "out of memory");
  char *notes = NULL;
  size_t notes_len = 0, notes_cap = 0;
  restart_notes(c, next, &notes, &notes_len, &notes_cap);
  if (next->log_level != c->log_level) {
    if (!dry_run)
      log_set_level(next->log_level);
    append(&notes, &notes_len, &notes_cap, "%s: log.level %s -> %s\n",
           dry_run ? "would apply" : "applied", log_level_name(c->log_level),
           log_level_name(next->log_level));
  }
  /* Which plugins changed: their file's bytes, their path or settings. */
  for (size_t i = 0; !failed && i < count; i++) {
    host_plugin_t *p = &host->plugins[i];
    pthread_mutex_lock(&host->gen_lock);
    generation_t *current = p->current;
    pthread_mutex_unlock(&host->gen_lock);
    const config_plugin_t *np = NULL;
    for (size_t j = 0; j < next->plugin_count; j++)
      if (strcmp(next->plugins[j].name, p->name) == 0)
        np = &next->plugins[j];
    if (!np)
      continue; /* reported as needing a restart */
    uint64_t hash = 0;
    if (file_hash(np->path, &hash, err, sizeof err) != 0) {
      failed = 1;
      break;
    }
    if (hash != current->source_hash)
      why[i] = "file changed";
    else if (strcmp(np->settings_json, current->settings_json) != 0)
      why[i] = "settings changed";
    else if (strcmp(np->path, current->source_path) != 0)
      why[i] = "path changed";
    if (!why[i] || dry_run)
      continue;
    fresh[i] = generation_open(p, np->path, np->settings_json,
                               host->shadow_dir, err, sizeof err);
    if (!fresh[i]) {
      failed = 1;
      break;
    }
    /* Its on_load may arm timers on running sessions: they must find it. */
    pthread_mutex_lock(&host->gen_lock);
    p->loading = fresh[i];
    pthread_mutex_unlock(&host->gen_lock);
  }
  for (size_t i = 0; !failed && !dry_run && i < count; i++)
    if (fresh[i] && generation_load(fresh[i], err, sizeof err) != 0)
      failed = 1;
  if (failed) {
    /* Nothing changes: the new generations go, on_unload for any whose
     * on_load ran; the running ones never noticed. */
    for (size_t i = 0; fresh && i < count; i++)
      if (fresh[i])
        generation_discard(&host->plugins[i], fresh[i]);
    append(&out, &len, &cap, "error: reload refused; nothing changed: %s\n",
           err);
    log_write(LOG_ERROR, "host", "reload refused; nothing changed: %s", err);
  } else {
    append(&out, &len, &cap, "ok\n");
    if (!dry_run) {
      pthread_mutex_lock(&host->gen_lock);
      for (size_t i = 0; i < count; i++)
        if (fresh[i])
          generation_make_current(&host->plugins[i], fresh[i]);
      pthread_cond_broadcast(&host->gen_changed);
      pthread_mutex_unlock(&host->gen_lock);
    }
    for (size_t i = 0; i < count; i++) {
      host_plugin_t *p = &host->plugins[i];
      if (!why[i]) {
        append(&out, &len, &cap, "plugin %s: unchanged\n", p->name);
      } else if (dry_run) {
        append(&out, &len, &cap, "plugin %s: would redeploy (%s)\n", p->name,
               why[i]);
      } else {
        append(&out, &len, &cap,
               "plugin %s: generation %u, version %s (%s); existing "
               "sessions keep generation %u\n",
               p->name, fresh[i]->number, fresh[i]->desc->version, why[i],
               fresh[i]->number - 1);
        log_write(LOG_INFO, "host",
                  "reload: plugin %s generation %u (%s) is current (%s)",
                  p->name, fresh[i]->number, fresh[i]->desc->version, why[i]);
      }
    }
    if (notes)
      append(&out, &len, &cap, "%s", notes);
  }
  pthread_mutex_unlock(&host->reload_lock);
  free(notes);
  free(fresh);
  free(why);
  config_free(next);
  return out;
}
