/*
 * The plugin API (SPEC section 4): the table of host functions each
 * generation hands its plugin (iocphost_api_t, sdk/include/iocphost/
 * plugin.h). Every function is safe from any callback, timer or plugin
 * thread; on a session that has ended it returns an error, never crashes.
 */
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "framing.h"
#include "host_internal.h"
#include "plugin_metrics.h"
#include "version.h"

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

void service_unpublish(host_service_t *hs) {
  atomic_store(&hs->api_engine, NULL);
  /* A pin lasts one API call (a lookup, a broadcast): short, and it never
   * waits for the stop. */
  while (atomic_load(&hs->api_pins) > 0)
    sched_yield();
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
  if (!s)
    return NULL;
  /* Any thread: the acquire pairs with on_connected's release of the
   * generation, after the state's place (the context) was set. */
  if (!atomic_load_explicit(&host_session(SESSION(s))->generation,
                            memory_order_acquire))
    return NULL;
  return plugin_state(SESSION(s));
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
  watch_kind_t kind;        /* a timer's or a post's */
} plugin_call_t;

static plugin_call_t *plugin_call_new(session_t *s, iocphost_session_fn fn,
                                      void *arg, watch_kind_t kind) {
  plugin_call_t *c = malloc(sizeof *c);
  if (!c)
    return NULL;
  c->fn = fn;
  c->arg = arg;
  c->kind = kind;
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
  /* Its code's generation; the session's when fn is no plugin's code. */
  watch_mark_t mark = watch_session(
      s, c->generation ? c->generation : session_generation(s), c->kind, -1);
  c->fn(PLUGIN_SESSION(s), plugin_state(s), c->arg);
  watch_end(&mark);
}

static void plugin_call_done(session_t *s, void *call, void *unused) {
  plugin_call_free(call);
}

static uint64_t api_timer_start(iocphost_session_t *s, uint32_t delay_ms,
                                uint32_t repeat_ms, iocphost_session_fn fn,
                                void *arg) {
  if (!s || !fn)
    return 0;
  plugin_call_t *c = plugin_call_new(SESSION(s), fn, arg, WATCH_SESSION_TIMER);
  if (!c)
    return 0;
  uint64_t id =
      session_timer_start2(SESSION(s), delay_ms, repeat_ms, run_plugin_call,
                           plugin_call_done, c, NULL);
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
  plugin_call_t *c = plugin_call_new(SESSION(s), fn, arg, WATCH_SESSION_POST);
  if (!c)
    return IOCPHOST_E_NOMEM;
  int rc =
      session_post2(SESSION(s), run_plugin_call, plugin_call_done, c, NULL);
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

void fill_api(generation_t *g) {
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
  settings_fill_api(a); /* setting_int ... setting_array_length */
  rooms_fill_api(a);
  a->session_work = api_session_work; /* plugin_work.c */
  plugin_metrics_fill_api(a); /* metric_define ... metric_observe */
}
