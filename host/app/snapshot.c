/* One read of the host's state for status and the metrics: see snapshot.h. */
#include "snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"

static const char *const reason_names[] = {
#define REASON_NAME(name, value, text) [value] = text,
    IOCPHOST_REASONS(REASON_NAME)
#undef REASON_NAME
};

const char *snapshot_reason_name(int reason) {
  if (reason <= 0 ||
      reason >= (int)(sizeof reason_names / sizeof reason_names[0]) ||
      reason >= SNAPSHOT_REASONS)
    return NULL;
  return reason_names[reason];
}

static char *dup_text(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

typedef struct room_list {
  snap_generation_t *g;
  size_t cap;
  int failed;
} room_list_t;

static void add_room(void *arg, uint64_t id, uint32_t members) {
  room_list_t *l = arg;
  snap_generation_t *g = l->g;
  if (l->failed)
    return;
  if (g->room_count == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 8;
    snap_room_t *grown = realloc(g->rooms, cap * sizeof *grown);
    if (!grown) {
      l->failed = 1;
      return;
    }
    g->rooms = grown;
    l->cap = cap;
  }
  g->rooms[g->room_count].id = id;
  g->rooms[g->room_count].members = members;
  g->room_count++;
  g->members += members;
}

/* Under gen_lock. */
static int take_plugin(host_t *host, host_plugin_t *p, snap_plugin_t *out) {
  out->name = p->name;
  generation_t *current = p->current;
  if (current) {
    out->has_current = 1;
    out->version = dup_text(current->desc->version);
    out->path = dup_text(current->source_path);
    out->generation = current->number;
    if (!out->version || !out->path)
      return -1;
  }
  size_t count = 0;
  for (generation_t *g = p->generations; g; g = g->next)
    count++;
  out->generations = count ? calloc(count, sizeof *out->generations) : NULL;
  if (count && !out->generations)
    return -1;
  for (generation_t *g = p->generations; g; g = g->next) {
    snap_generation_t *sg = &out->generations[out->generation_count++];
    sg->number = g->number;
    sg->version = dup_text(g->desc->version);
    if (!sg->version)
      return -1;
    sg->current = g == current;
    sg->sessions = g->sessions;
    sg->holds = g->holds;
    sg->ticks = atomic_load(&g->ticks);
    sg->stalls = atomic_load(&g->calls.stalls);
    sg->late_ticks = atomic_load(&g->late_ticks);
    sg->late_ms_sum = atomic_load(&g->late_ms_sum);
    room_list_t rooms = {.g = sg};
    rooms_of_generation(host, g, add_room, &rooms);
    if (rooms.failed)
      return -1;
  }
  return 0;
}

int host_snapshot_take(host_t *host, host_snapshot_t *out) {
  const config_t *c = host->config;
  memset(out, 0, sizeof *out);
  out->cores = calloc(c->core_count + 1, sizeof *out->cores);
  out->plugins = calloc(host->plugin_count + 1, sizeof *out->plugins);
  out->services = calloc(c->service_count + 1, sizeof *out->services);
  if (!out->cores || !out->plugins || !out->services) {
    host_snapshot_free(out);
    return -1;
  }
  int rc = 0;
  pthread_mutex_lock(&host->lock);
  out->stopping = host->stopped != 0;
  out->core_count = c->core_count;
  for (size_t i = 0; i < c->core_count; i++) {
    snap_core_t *sc = &out->cores[i];
    sc->name = c->cores[i].name;
    if (host->cores[i]) {
      sc->running = 1;
      sc->threads = core_thread_count(host->cores[i]);
      sc->completions = core_completions(host->cores[i]);
    }
  }
  if (host->work) {
    out->has_work = 1;
    work_pool_get_stats(host->work, &out->work);
  }
  out->plugin_count = host->plugin_count;
  for (size_t i = 0; rc == 0 && i < host->plugin_count; i++) {
    pthread_mutex_lock(&host->gen_lock);
    rc = take_plugin(host, &host->plugins[i], &out->plugins[i]);
    pthread_mutex_unlock(&host->gen_lock);
  }
  out->service_count = c->service_count;
  for (size_t i = 0; i < c->service_count; i++) {
    host_service_t *hs = &host->services[i];
    snap_service_t *ss = &out->services[i];
    ss->config = hs->config;
    ss->plugin = hs->config->plugin;
    ss->packet_framing = hs->packet_framing;
    if (hs->engine)
      service_get_stats(hs->engine, &ss->stats);
    ss->packets_in = atomic_load(&hs->packets_in);
    ss->packets_out = atomic_load(&hs->packets_out);
  }
  pthread_mutex_unlock(&host->lock);
  if (rc != 0) {
    host_snapshot_free(out);
    return -1;
  }
  return 0;
}

void host_snapshot_free(host_snapshot_t *snap) {
  for (size_t i = 0; snap->plugins && i < snap->plugin_count; i++) {
    snap_plugin_t *p = &snap->plugins[i];
    free(p->version);
    free(p->path);
    for (size_t j = 0; j < p->generation_count; j++) {
      free(p->generations[j].version);
      free(p->generations[j].rooms);
    }
    free(p->generations);
  }
  free(snap->plugins);
  free(snap->cores);
  free(snap->services);
  memset(snap, 0, sizeof *snap);
}
