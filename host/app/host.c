/*
 * The host: config and plugins wired onto the engine (host.h). Its life:
 * open (every plugin checked in place: `check` stops here), start (shadow
 * copies loaded, cores and services up), stop (graceful, SPEC section 9),
 * close. host_internal.h says which file holds the rest.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "engine/log.h"
#include "host_internal.h"
#include "metrics.h"
#include "shadow.h"

int host_open(const config_t *config, host_t **out, char *err, size_t err_len) {
  host_t *host = calloc(1, sizeof *host);
  if (!host) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  host->config = config;
  host->callback_sample =
      config->metrics_address_text ? config->metrics_callback_sample : 0;
  pthread_mutex_init(&host->lock, NULL);
  pthread_mutex_init(&host->gen_lock, NULL);
  pthread_mutex_init(&host->reload_lock, NULL);
  pthread_mutex_init(&host->rooms_lock, NULL);
  pthread_cond_init(&host->rooms_changed, NULL);
  for (size_t i = 0; i < WORK_STRIPES; i++)
    pthread_mutex_init(&host->work_stripes[i].lock, NULL);
  pthread_mutex_init(&host->metrics_lock, NULL);
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
    gens[i] =
        generation_open(&host->plugins[i], config->plugins[i].path,
                        config->plugins[i].settings_json, NULL, err, err_len);
    if (!gens[i] || generation_check_settings(gens[i], i, err, err_len) != 0)
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
  /* TLS certificates and keys are read and matched here, so `check` does. */
  if (rc == 0 && tls_services_open(host, err, err_len) != 0)
    rc = -1;
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

int host_start(host_t *host, char *err, size_t err_len) {
  const config_t *c = host->config;
  if (move_to_shadow(host, err, err_len) != 0)
    return -3;
  /* Bound before anything starts: a metrics address in use stops the start
   * here, with nothing to undo. */
  if (metrics_open(host, &host->metrics, err, err_len) != 0)
    return -3;
  /* The cores first: a plugin may make rooms in on_load (a world clock),
   * and rooms run on a core; the work pool too, as on_load may already
   * submit work. */
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
  if (work_start(host, err, err_len) != 0)
    goto fail;
  if (watchdog_start(host, err, err_len) != 0)
    goto fail;
  for (size_t i = 0; i < host->plugin_count; i++) {
    if (generation_load(host->plugins[i].current, err, err_len) != 0) {
      work_stop(host, clock_now_ms() + c->drain_timeout_ms);
      rooms_close_all(host, clock_now_ms() + c->drain_timeout_ms);
      watchdog_stop(host);
      unload_plugins(host);
      destroy_cores(host);
      metrics_close(host->metrics);
      host->metrics = NULL;
      return -1;
    }
  }
  if (pthread_create(&host->reaper, NULL, reaper_main, host) == 0)
    host->reaper_running = 1;
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
                cs->name,
                cs->type == CONFIG_SERVICE_SERVER ? "listening on"
                                                  : "connecting to",
                cs->address_text, host->services[i].plugin->name,
                cs->framing == CONFIG_FRAMING_PACKET ? "packet" : "raw");
    }
  }
  host->started = 1;
  if (metrics_serve(host->metrics, err, err_len) != 0) {
    host_stop(host);
    return -3;
  }
  return 0;
fail:
  work_stop(host, clock_now_ms() + c->drain_timeout_ms);
  destroy_services(host);
  rooms_close_all(host, clock_now_ms() + c->drain_timeout_ms);
  watchdog_stop(host);
  unload_plugins(host);
  destroy_cores(host);
  metrics_close(host->metrics);
  host->metrics = NULL;
  return -3;
}

void host_stop(host_t *host) {
  if (!host->started || host->stopped)
    return;
  host->stopped = 1;
  /* Scrapes end first: the page would only show the host going away. */
  metrics_close(host->metrics);
  host->metrics = NULL;
  const config_t *c = host->config;
  for (size_t i = 0; i < c->service_count; i++)
    service_stop_accepting(host->services[i].engine);
  tell_plugins_stopping(host);
  for (size_t i = 0; i < c->service_count; i++)
    service_disconnect_all(host->services[i].engine, REASON_HOST_STOPPING);
  uint64_t deadline = clock_now_ms() + c->drain_timeout_ms;
  /* Work in flight ends first: its done runs in its session's order (with
   * ended = 1 now), which the sessions' drain then waits for. */
  work_stop(host, deadline);
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
  /* Rooms close after their members' sessions (each hears them leave
   * first), within what is left of the drain (at least a second). */
  uint64_t now = clock_now_ms();
  rooms_close_all(host, (deadline > now ? deadline : now) + 1000);
  destroy_services(host);
  watchdog_stop(host); /* it names generations: before they go */
  unload_plugins(host);
  destroy_cores(host);
}

void host_close(host_t *host) {
  if (!host)
    return;
  if (host->started)
    host_stop(host);
  unload_plugins(host); /* what check opened, or what a failed start left */
  tls_services_close(host);
  shadow_dir_remove(host->shadow_dir);
  free(host->shadow_dir);
  free(host->plugins);
  free(host->services);
  free(host->cores);
  pthread_mutex_destroy(&host->lock);
  pthread_mutex_destroy(&host->gen_lock);
  pthread_mutex_destroy(&host->reload_lock);
  pthread_mutex_destroy(&host->rooms_lock);
  pthread_cond_destroy(&host->rooms_changed);
  free(host->room_buckets);
  for (size_t i = 0; i < WORK_STRIPES; i++)
    pthread_mutex_destroy(&host->work_stripes[i].lock);
  pthread_mutex_destroy(&host->metrics_lock);
  pthread_cond_destroy(&host->gen_changed);
  free(host);
}
