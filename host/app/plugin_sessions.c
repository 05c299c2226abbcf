/*
 * A plugin's sessions: the engine's session handler, forwarding each
 * callback to the generation the session bound to when it connected, and
 * splitting packets for packet-framing services (SPEC section 5).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "framing.h"
#include "host_internal.h"

/* ---- engine handler: forwards to the session's generation ---- */

watch_mark_t watch_session(session_t *s, generation_t *g, watch_kind_t kind,
                           int packet_id) {
  host_service_t *hs = host_service_of(s);
  watch_call_t call = {hs->host,         g,  kind, hs->config->name,
                       session_id(s), packet_id};
  return watch_begin(&call);
}

static void on_connected(session_t *s) {
  host_session_t *h = host_session(s);
  host_service_t *hs = host_service_of(s);
  generation_t *g = generation_acquire(hs->plugin);
  uint32_t size = g->desc->session_size;
  if (size > session_extra_size(s) - HOST_SESSION_BYTES) {
    /* The generation changed since this session was allocated and needs
     * more room than was reserved: its state lives outside, in the engine
     * session's context (plugin_state), freed by on_free. */
    void *state = calloc(1, size);
    if (!state) {
      /* Unbound: the plugin never hears of this session. */
      generation_release(g);
      session_abort(s, REASON_IO_ERROR);
      return;
    }
    session_set_context(s, state);
  }
  /* Bound only now, with the state in place: a bound generation means the
   * plugin saw on_connected (on_disconnected, on_free and `sessions` rely
   * on it). Release: `sessions` and session_state on other threads. */
  atomic_store_explicit(&h->generation, g, memory_order_release);
  watch_mark_t mark = watch_session(s, g, WATCH_ON_CONNECTED, -1);
  g->desc->on_connected(PLUGIN_SESSION(s), plugin_state(s));
  watch_end(&mark);
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  generation_t *g = session_generation(s);
  if (g) {
    watch_mark_t mark = watch_session(s, g, WATCH_ON_DISCONNECTED, -1);
    g->desc->on_disconnected(PLUGIN_SESSION(s), plugin_state(s),
                             (iocphost_reason_t)reason);
    watch_end(&mark);
  }
  /* Then it leaves its rooms, each in its own order: no room keeps a
   * member whose on_disconnected has run. */
  rooms_session_ended(s);
}

static void on_sent(session_t *s, size_t bytes) {
  /* Unbound (its state could not be allocated, the abort on its way): a
   * transport session is open until the abort's kick, and a send queued
   * while it was opening may complete first. The plugin never saw it. */
  generation_t *g = session_generation(s);
  if (g && g->desc->on_send) {
    watch_mark_t mark = watch_session(s, g, WATCH_ON_SEND, -1);
    g->desc->on_send(PLUGIN_SESSION(s), plugin_state(s), bytes);
    watch_end(&mark);
  }
}

/* Any thread, the last reference gone: ordered after the worker's stores
 * by the reference count. */
static void on_free(session_t *s) {
  generation_t *g = session_generation(s);
  if (!g)
    return;
  free(session_context(s)); /* the state, if it was calloc'd */
  generation_release(g);
}

/* What every packet of one receive needs, looked up once per receive
 * rather than once per packet. */
typedef struct packet_delivery {
  session_t *session;
  generation_t *generation;
  const iocphost_plugin_t *desc;
  void *state;
  uint64_t packets;
} packet_delivery_t;

static int deliver_packet(void *ctx, const framing_packet_t *packet) {
  packet_delivery_t *d = ctx;
  d->packets++;
  watch_mark_t mark =
      watch_session(d->session, d->generation, WATCH_ON_PACKET, packet->id);
  d->desc->on_packet(PLUGIN_SESSION(d->session), d->state, packet->id,
                     packet->payload, packet->payload_len);
  watch_end(&mark);
  return !session_is_open(d->session);
}

/* SPEC section 5, parsed by framing.c. A declared size is checked before
 * anything waits for it, so a hostile header never makes the host keep
 * more than max_packet_bytes. */
static size_t on_recv_packets(session_t *s, host_service_t *hs,
                              const uint8_t *data, size_t len) {
  generation_t *g = session_generation(s);
  packet_delivery_t d = {s, g, g->desc, plugin_state(s), 0};
  framing_result_t r =
      framing_split(data, len, hs->max_packet_bytes, deliver_packet, &d);
  if (d.packets)
    atomic_fetch_add_explicit(&hs->packets_in, d.packets, memory_order_relaxed);
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
  generation_t *g = session_generation(s);
  watch_mark_t mark = watch_session(s, g, WATCH_ON_RECV, -1);
  size_t used = g->desc->on_recv(PLUGIN_SESSION(s), plugin_state(s), data, len);
  watch_end(&mark);
  return used;
}

const session_handler_t plugin_session_handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
    .on_sent = on_sent,
    .on_free = on_free,
};

/* Room for the host's record and the current generation's state. */
size_t prepare_session(void *ctx, void **session_context) {
  host_service_t *hs = ctx;
  host_t *host = hs->host;
  pthread_mutex_lock(&host->gen_lock);
  size_t room =
      ((size_t)hs->plugin->current->desc->session_size + 15) & ~(size_t)15;
  pthread_mutex_unlock(&host->gen_lock);
  *session_context = NULL;
  return HOST_SESSION_BYTES + room;
}
