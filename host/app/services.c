/*
 * The config's cores and services made engine objects: service options from
 * the config, the plugin's session factory, and their teardown. Services
 * are published to the plugin API here and unpublished before they go.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"

int create_service(host_t *host, size_t i, char *err, size_t err_len) {
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
  o.close_linger_ms = cs->close_linger_ms;
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
  /* SPEC section 14: a WebSocket message is one packet on a packet
   * service, a run of bytes (at most max_recv_bytes) on a raw one. */
  if (cs->transport == CONFIG_TRANSPORT_WEBSOCKET) {
    ws_config_t *w = &hs->websocket;
    memset(w, 0, sizeof *w);
    w->service = cs->name;
    w->path = cs->websocket.path;
    w->origins = (const char *const *)cs->websocket.origins;
    w->origin_count = cs->websocket.origin_count;
    w->subprotocol = cs->websocket.subprotocol;
    w->packet_messages = hs->packet_framing;
    w->max_packet_bytes = cs->max_packet_bytes;
    w->max_message_bytes =
        hs->packet_framing ? cs->max_packet_bytes : cs->max_recv_bytes;
    w->max_message_name =
        hs->packet_framing ? "max_packet_bytes" : "max_recv_bytes";
    w->max_request_bytes = cs->websocket.max_request_bytes;
    w->ping_interval_ms = cs->websocket.ping_interval_ms;
    hs->transport[0].ops = &websocket_transport;
    hs->transport[0].config = w;
    hs->transport_layers = 1;
  }
  /* A client service's WebSocket: its own upgrade request, masked frames. */
  if (cs->transport == CONFIG_TRANSPORT_WEBSOCKET &&
      cs->type == CONFIG_SERVICE_CLIENT) {
    hs->websocket.origin = cs->websocket.origin;
    hs->websocket.host = cs->websocket.host;
    hs->transport[0].ops = &websocket_client_transport;
  }
  /* TLS under whatever the service speaks (tcp, websocket): the socket's
   * side of the stack, layer 0, the rest moved up one. */
  if (cs->tls.enabled && hs->transport_layers < TRANSPORT_LAYERS_MAX) {
    memmove(&hs->transport[1], &hs->transport[0],
            hs->transport_layers * sizeof hs->transport[0]);
    hs->transport[0].ops = &tls_transport;
    hs->transport[0].config = &hs->tls;
    hs->transport_layers++;
  }
  o.transport = hs->transport_layers ? hs->transport : NULL;
  o.transport_layers = hs->transport_layers;
  o.handshake_timeout_ms = cs->handshake_timeout_ms;
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

void destroy_services(host_t *host) {
  for (size_t i = 0; i < host->config->service_count; i++) {
    host_service_t *hs = &host->services[i];
    pthread_mutex_lock(&host->lock);
    service_t *svc = hs->engine;
    hs->engine = NULL;
    pthread_mutex_unlock(&host->lock);
    service_unpublish(hs);
    if (svc)
      service_destroy(svc);
  }
}

void destroy_cores(host_t *host) {
  for (size_t i = 0; i < host->config->core_count; i++) {
    pthread_mutex_lock(&host->lock);
    core_t *core = host->cores[i];
    host->cores[i] = NULL;
    pthread_mutex_unlock(&host->lock);
    core_destroy(core);
  }
}
