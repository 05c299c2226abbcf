/*
 * `reload` (SPEC section 10): every plugin whose file or settings changed
 * gets a new generation, all or none; what would need a restart is named.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "engine/log.h"
#include "host_internal.h"
#include "shadow.h"

/* ---- reload (SPEC section 10) ---- */

static void note(char **out, size_t *len, size_t *cap, const char *what,
                 const char *path, const char *before, const char *after) {
  text_append(out, len, cap,
              "needs a restart, not applied: %s%s%s (%s -> %s)\n", what,
              path ? "." : "", path ? path : "", before, after);
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
  DIFF_NUM("config", a, b, work_threads);
  DIFF_NUM("config", a, b, work_queue_limit);
  DIFF_NUM("config", a, b, stall_warn_ms);
  DIFF_STR("config", a, b, metrics_address_text);
  DIFF_NUM("config", a, b, metrics_max_connections);
  DIFF_NUM("config", a, b, metrics_timeout_ms);
  DIFF_NUM("config", a, b, metrics_callback_sample);
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
    DIFF_NUM(label, x, y, close_linger_ms);
    DIFF_NUM(label, x, y, tcp_nodelay);
    DIFF_NUM(label, x, y, max_sessions);
    DIFF_NUM(label, x, y, backlog);
    DIFF_NUM(label, x, y, sessions);
    DIFF_NUM(label, x, y, connect_timeout_ms);
    DIFF_NUM(label, x, y, reconnect);
    DIFF_NUM(label, x, y, reconnect_min_delay_ms);
    DIFF_NUM(label, x, y, reconnect_max_delay_ms);
    DIFF_NUM(label, x, y, reconnect_jitter);
    DIFF_NUM(label, x, y, tls.enabled);
    DIFF_NUM(label, x, y, transport);
    DIFF_NUM(label, x, y, handshake_timeout_ms);
    DIFF_STR(label, x, y, websocket.path);
    DIFF_STR(label, x, y, websocket.subprotocol);
    DIFF_NUM(label, x, y, websocket.max_request_bytes);
    DIFF_NUM(label, x, y, websocket.ping_interval_ms);
    DIFF_STR(label, x, y, websocket.origin);
    DIFF_STR(label, x, y, websocket.host);
    int origins_differ = x->websocket.origin_count != y->websocket.origin_count;
    for (size_t k = 0; !origins_differ && k < x->websocket.origin_count; k++)
      origins_differ =
          strcmp(x->websocket.origins[k], y->websocket.origins[k]) != 0;
    if (origins_differ)
      note(out, len, cap, label, "websocket.origins", "the old list",
           "a new one");
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
    text_append(&out, &len, &cap,
                "error: the config is invalid; nothing changed: %s\n", err);
    return out;
  }
  pthread_mutex_lock(&host->reload_lock);
  if (atomic_load(&host->stopped)) {
    pthread_mutex_unlock(&host->reload_lock);
    config_free(next);
    text_append(&out, &len, &cap,
                "error: the host is stopping; nothing changed\n");
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
  char *tls_lines = NULL;
  size_t tls_len = 0, tls_cap = 0;
  restart_notes(c, next, &notes, &notes_len, &notes_cap);
  if (next->log_level != c->log_level) {
    if (!dry_run)
      log_set_level(next->log_level);
    text_append(&notes, &notes_len, &notes_cap, "%s: log.level %s -> %s\n",
                dry_run ? "would apply" : "applied",
                log_level_name(c->log_level), log_level_name(next->log_level));
  }
  /* Which plugins changed: their file's bytes, their path or settings. */
  for (size_t i = 0; !failed && i < count; i++) {
    host_plugin_t *p = &host->plugins[i];
    pthread_mutex_lock(&host->gen_lock);
    generation_t *current = p->current;
    pthread_mutex_unlock(&host->gen_lock);
    const config_plugin_t *np = NULL;
    size_t np_index = 0;
    for (size_t j = 0; j < next->plugin_count; j++)
      if (strcmp(next->plugins[j].name, p->name) == 0) {
        np = &next->plugins[j];
        np_index = j;
      }
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
    if (!why[i])
      continue;
    /* A dry run makes every check a reload would (admission, the plugin's
     * settings check), all but on_load. */
    fresh[i] = generation_open(p, np->path, np->settings_json, host->shadow_dir,
                               err, sizeof err);
    if (!fresh[i] ||
        generation_check_settings(fresh[i], np_index, err, sizeof err) != 0) {
      failed = 1;
      break;
    }
    if (dry_run)
      continue;
    /* Its on_load may arm timers on running sessions: they must find it. */
    pthread_mutex_lock(&host->gen_lock);
    p->loading = fresh[i];
    pthread_mutex_unlock(&host->gen_lock);
  }
  /* New TLS contexts (certificate rotation) are made before any on_load:
   * a certificate that fails to load refuses the reload like a plugin. */
  tls_reload_t *tls_next = NULL;
  if (!failed && tls_reload_prepare(host, next, &tls_next, err, sizeof err) != 0)
    failed = 1;
  for (size_t i = 0; !failed && !dry_run && i < count; i++)
    if (fresh[i] && generation_load(fresh[i], err, sizeof err) != 0)
      failed = 1;
  tls_reload_finish(host, tls_next, !failed, dry_run, &tls_lines, &tls_len,
                    &tls_cap);
  if (failed) {
    /* Nothing changes: the new generations go, on_unload for any whose
     * on_load ran; the running ones never noticed. */
    for (size_t i = 0; fresh && i < count; i++)
      if (fresh[i])
        generation_discard(&host->plugins[i], fresh[i]);
    if (dry_run) {
      text_append(&out, &len, &cap, "error: a reload would be refused: %s\n",
                  err);
    } else {
      text_append(&out, &len, &cap,
                  "error: reload refused; nothing changed: %s\n", err);
      log_write(LOG_ERROR, "host", "reload refused; nothing changed: %s", err);
    }
  } else {
    text_append(&out, &len, &cap, "ok\n");
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
      if (dry_run && fresh[i])
        generation_discard(p, fresh[i]); /* checked, never loaded */
      if (!why[i]) {
        text_append(&out, &len, &cap, "plugin %s: unchanged\n", p->name);
      } else if (dry_run) {
        text_append(&out, &len, &cap, "plugin %s: would redeploy (%s)\n",
                    p->name, why[i]);
      } else {
        text_append(&out, &len, &cap,
                    "plugin %s: generation %u, version %s (%s); existing "
                    "sessions keep generation %u\n",
                    p->name, fresh[i]->number, fresh[i]->desc->version, why[i],
                    fresh[i]->number - 1);
        log_write(LOG_INFO, "host",
                  "reload: plugin %s generation %u (%s) is current (%s)",
                  p->name, fresh[i]->number, fresh[i]->desc->version, why[i]);
      }
    }
    if (tls_lines)
      text_append(&out, &len, &cap, "%s", tls_lines);
    if (notes)
      text_append(&out, &len, &cap, "%s", notes);
  }
  pthread_mutex_unlock(&host->reload_lock);
  free(notes);
  free(tls_lines);
  free(fresh);
  free(why);
  config_free(next);
  return out;
}
