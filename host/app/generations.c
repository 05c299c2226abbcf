/*
 * Plugin generations (SPEC section 10): each load of a plugin, from its own
 * shadow copy; what keeps one loaded (its sessions, and the timers and
 * posts that will run its code); and the reaper thread that unloads a
 * retired one once nothing holds it, never from inside plugin code.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "engine/cond_wait.h"
#include "engine/log.h"
#include "host_internal.h"
#include "plugin_metrics.h"
#include "shadow.h"

/* ---- generations ---- */

generation_t *generation_acquire(host_plugin_t *p) {
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

void generation_release(generation_t *g) {
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
/* Under gen_lock. */
static generation_t *hold_code_locked(host_t *host, uintptr_t address) {
  generation_t *found = NULL;
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
  return found;
}

generation_t *generation_hold_code(host_t *host, uintptr_t address) {
  pthread_mutex_lock(&host->gen_lock);
  generation_t *found = hold_code_locked(host, address);
  pthread_mutex_unlock(&host->gen_lock);
  return found;
}

void generation_hold_code2(host_t *host, uintptr_t a, uintptr_t b,
                           generation_t **held_a, generation_t **held_b) {
  pthread_mutex_lock(&host->gen_lock);
  *held_a = hold_code_locked(host, a);
  *held_b = hold_code_locked(host, b);
  pthread_mutex_unlock(&host->gen_lock);
}

/* Under gen_lock. */
static void drop_hold_locked(host_t *host, generation_t *g) {
  g->holds--;
  if (generation_unused(g))
    pthread_cond_broadcast(&host->gen_changed);
}

void generation_drop_hold(generation_t *g) {
  host_t *host = g->plugin->host;
  pthread_mutex_lock(&host->gen_lock);
  drop_hold_locked(host, g);
  pthread_mutex_unlock(&host->gen_lock);
}

void generation_drop_room(generation_t *g) {
  host_t *host = g->plugin->host;
  pthread_mutex_lock(&host->gen_lock);
  g->rooms--;
  drop_hold_locked(host, g);
  pthread_mutex_unlock(&host->gen_lock);
}

void generation_drop_holds2(generation_t *a, generation_t *b) {
  generation_t *any = a ? a : b;
  if (!any)
    return;
  host_t *host = any->plugin->host;
  pthread_mutex_lock(&host->gen_lock);
  if (a)
    drop_hold_locked(host, a);
  if (b)
    drop_hold_locked(host, b);
  pthread_mutex_unlock(&host->gen_lock);
}

/* ---- lifecycle ---- */

/* Opens a generation of plugin p from path, admitted by the one decision
 * run, check and reload share (admission.h; nothing of the plugin run but
 * its entry symbol). shadow_dir NULL loads the file in place (for `check`);
 * otherwise from a fresh copy of the checked file. */
generation_t *generation_open(host_plugin_t *p, const char *path,
                              const char *settings_json, const char *shadow_dir,
                              char *err, size_t err_len) {
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
  /* Parsed once here, so the getters only read (from any thread). */
  if (settings_parse(g->settings_json, &g->settings, err, err_len) != 0) {
    free(g->settings_json);
    free(g->source_path);
    free(g);
    return NULL;
  }
  plugin_admitted_t admitted;
  if (plugin_admit(p->name, path, p->host->config, shadow_dir, g->number,
                   &admitted, err, err_len) != 0) {
    settings_free(g->settings);
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
void generation_close(generation_t *g) {
  if (g->loaded && g->desc->on_unload)
    g->desc->on_unload();
  g->loaded = 0;
  /* The plugin's metric handles were valid until on_unload returned. */
  plugin_metrics_generation_closed(g);
  plugin_module_close(g->module);
  shadow_remove(g->shadow_path);
  free(g->shadow_path);
  settings_free(g->settings); /* after on_unload: setting_string's texts */
  free(g->settings_json);
  free(g->source_path);
  free(g);
}

/* The plugin's own verdict on its settings (ABI 1.2 check_settings, when
 * it has one): before on_load at run and reload, and all that check and
 * reload --dry-run run of it. index is the plugin's place in the config,
 * for the JSON path. */
int generation_check_settings(generation_t *g, size_t index, char *err,
                              size_t err_len) {
  if (!g->desc->check_settings)
    return 0;
  settings_check_api_t table;
  settings_check_api_init(&table, g->settings);
  char reason[512] = "";
  if (g->desc->check_settings(&table.api, g->settings_json, reason,
                              sizeof reason) == 0)
    return 0;
  reason[sizeof reason - 1] = '\0';
  snprintf(err, err_len,
           "plugins[%zu].settings: plugin \"%s\" (%s) refused its settings: "
           "%s",
           index, g->plugin->name, g->source_path,
           reason[0] ? reason : "(no reason given)");
  return -1;
}

int generation_load(generation_t *g, char *err, size_t err_len) {
  if (g->desc->on_load) {
    char reason[512] = "";
    /* metric_define works only meanwhile (plugin.h). */
    atomic_store(&g->metrics_open, 1);
    int refused =
        g->desc->on_load(&g->api, g->settings_json, reason, sizeof reason);
    atomic_store(&g->metrics_open, 0);
    if (refused != 0) {
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

void generation_make_current(host_plugin_t *p, generation_t *g) {
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
void generation_discard(host_plugin_t *p, generation_t *g) {
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

/* Unloads retired generations once their last session is gone. It is a
 * thread of its own so that on_unload and the library's unmapping never
 * run inside the code being unloaded (a session's last release can come
 * from within a plugin callback). */
void *reaper_main(void *arg) {
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

/* How long the stop waits, after on_unload, for what I/O workers still
 * hold of a generation (see unload_plugins); only a leak waits it out. */
#define UNLOAD_GRACE_MS 2000

/* Unloads every generation still there: the stop, after every session.
 * Under the reload lock, so a reload still answering has finished with the
 * generations it names. */
void unload_plugins(host_t *host) {
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
    /* None is current now: a drop to nothing held wakes the wait below. */
    for (generation_t *r = g; r; r = r->next)
      r->retired = 1;
    pthread_mutex_unlock(&host->gen_lock);
    while (g) {
      generation_t *next = g->next;
      if (g->holds != 0 && atomic_load(&host->work_abandoned)) {
        /* A work the stop gave up on may still be running its code. */
        log_write(LOG_WARN, "host",
                  "plugin %s generation %u stays loaded: work the stop gave "
                  "up on may still run its code",
                  p->name, g->number);
        g = next;
        continue;
      }
      /* on_unload first: a plugin lets go of the sessions and rooms it
       * kept there, and only what is still held after it is a leak. */
      if (g->loaded && g->desc->on_unload)
        g->desc->on_unload();
      g->loaded = 0;
      /* What on_unload let go of may still be held a moment by an I/O
       * worker: a closed room's last reference is often the one of the
       * timer, post or close that ran last in its order, released after
       * that op's done, which is what rooms_close_all waited for (strand.c:
       * done, then release). Wait for those (the cores still run), bounded:
       * only what stays held is a leak, and the generation must not be
       * freed while a worker is still to drop its hold on it. */
      uint64_t deadline = clock_now_ms() + UNLOAD_GRACE_MS;
      pthread_mutex_lock(&host->gen_lock);
      while ((g->sessions != 0 || g->holds != 0) &&
             !cond_wait_until_ms(&host->gen_changed, &host->gen_lock,
                                 deadline)) {
      }
      long sessions = g->sessions, holds = g->holds, rooms = g->rooms;
      pthread_mutex_unlock(&host->gen_lock);
      if (sessions != 0 || holds != 0)
        log_write(LOG_ERROR, "host",
                  "plugin %s generation %u still has %ld sessions, %ld rooms "
                  "and %ld timers, posts or work after on_unload (the plugin "
                  "kept a session handle without session_release or a room "
                  "handle without room_release)",
                  p->name, g->number, sessions, rooms, holds - rooms);
      generation_close(g);
      g = next;
    }
  }
  pthread_mutex_unlock(&host->reload_lock);
}

/* At start, the generations `host_open` checked in place are loaded again
 * from shadow copies: the deployed files must stay free to be replaced. No
 * code of theirs but the entry symbol ran, so nothing is lost. */
int move_to_shadow(host_t *host, char *err, size_t err_len) {
  const config_t *c = host->config;
  if (shadow_dir_create(c->runtime_dir, c->name, &host->shadow_dir, err,
                        err_len) != 0)
    return -1;
  for (size_t i = 0; i < host->plugin_count; i++) {
    host_plugin_t *p = &host->plugins[i];
    generation_t *checked = p->current;
    p->generation_count = 0;
    generation_t *g =
        generation_open(p, checked->source_path, checked->settings_json,
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

/* on_stopping for every loaded generation, with no host lock held: a
 * plugin that releases its last reference to a session there frees the
 * session, which releases its generation under gen_lock. The generations
 * are pinned (counted like sessions) meanwhile so the reaper keeps them. */
void tell_plugins_stopping(host_t *host) {
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
