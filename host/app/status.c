/*
 * `status` (SPEC section 8): services, sessions, plugins and their
 * generations, counters; as text for people and as one JSON document for
 * tools.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/log.h"
#include "host_internal.h"
#include "snapshot.h"
#include "version.h"

/* ---- status (SPEC section 8) ---- */

static cJSON *service_json(const snap_service_t *ss) {
  const config_service_t *cs = ss->config;
  const service_stats_t *st = &ss->stats;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", cs->name);
  cJSON_AddStringToObject(
      o, "type", cs->type == CONFIG_SERVICE_SERVER ? "server" : "client");
  cJSON_AddStringToObject(o, "address", cs->address_text);
  cJSON_AddStringToObject(o, "core", cs->core);
  cJSON_AddStringToObject(o, "plugin", cs->plugin);
  cJSON_AddStringToObject(o, "framing", ss->packet_framing ? "packet" : "raw");
  cJSON_AddNumberToObject(o, "sessions", (double)st->sessions_now);
  cJSON_AddNumberToObject(o, "max_sessions", (double)st->sessions_max);
  cJSON_AddNumberToObject(o, "accepted", (double)st->accepted);
  cJSON_AddNumberToObject(o, "rejected", (double)st->rejected);
  cJSON_AddNumberToObject(o, "accept_errors", (double)st->accept_errors);
  cJSON_AddNumberToObject(o, "connects", (double)st->connects);
  cJSON_AddNumberToObject(o, "connect_failures", (double)st->connect_failures);
  cJSON_AddNumberToObject(o, "bytes_in", (double)st->bytes_in);
  cJSON_AddNumberToObject(o, "bytes_out", (double)st->bytes_out);
  cJSON_AddNumberToObject(o, "packets_in", (double)ss->packets_in);
  cJSON_AddNumberToObject(o, "packets_out", (double)ss->packets_out);
  cJSON *d = cJSON_AddObjectToObject(o, "disconnects");
  for (int r = 1; r < SNAPSHOT_REASONS; r++)
    if (snapshot_reason_name(r))
      cJSON_AddNumberToObject(d, snapshot_reason_name(r),
                              (double)st->disconnects[r]);
  return o;
}

static cJSON *status_json(host_t *host, const host_snapshot_t *snap,
                          uint64_t uptime_ms) {
  const config_t *c = host->config;
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "name", c->name);
  cJSON_AddStringToObject(root, "version", IOCPHOST_VERSION);
  cJSON_AddNumberToObject(root, "pid", (double)getpid());
  cJSON_AddNumberToObject(root, "uptime_ms", (double)uptime_ms);
  cJSON_AddStringToObject(root, "config", c->file);
  cJSON_AddStringToObject(root, "state", snap->stopping ? "stopping" : "running");
  cJSON *cores = cJSON_AddArrayToObject(root, "cores");
  for (size_t i = 0; i < snap->core_count; i++) {
    const snap_core_t *sc = &snap->cores[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", sc->name);
    if (sc->running) {
      cJSON_AddNumberToObject(o, "threads", sc->threads);
      cJSON_AddNumberToObject(o, "completions", (double)sc->completions);
    }
    cJSON_AddItemToArray(cores, o);
  }
  if (snap->has_work) {
    const work_pool_stats_t *st = &snap->work;
    cJSON *w = cJSON_AddObjectToObject(root, "work");
    cJSON_AddNumberToObject(w, "threads", st->threads);
    cJSON_AddNumberToObject(w, "queue_limit", st->queue_limit);
    cJSON_AddNumberToObject(w, "queued", st->queued);
    cJSON_AddNumberToObject(w, "running", st->running);
    cJSON_AddNumberToObject(w, "completed", (double)st->completed);
    cJSON_AddNumberToObject(w, "rejected", (double)st->rejected);
  }
  cJSON *plugins = cJSON_AddArrayToObject(root, "plugins");
  for (size_t i = 0; i < snap->plugin_count; i++) {
    const snap_plugin_t *p = &snap->plugins[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", p->name);
    if (p->has_current) {
      cJSON_AddStringToObject(o, "version", p->version);
      cJSON_AddStringToObject(o, "path", p->path);
      cJSON_AddNumberToObject(o, "generation", p->generation);
    }
    cJSON *gens = cJSON_AddArrayToObject(o, "generations");
    for (size_t j = 0; j < p->generation_count; j++) {
      const snap_generation_t *g = &p->generations[j];
      cJSON *go = cJSON_CreateObject();
      cJSON_AddNumberToObject(go, "generation", g->number);
      cJSON_AddStringToObject(go, "version", g->version);
      cJSON_AddStringToObject(go, "state", g->current ? "current" : "retired");
      cJSON_AddNumberToObject(go, "sessions", (double)g->sessions);
      /* Timers and posts of its code still to run (or be dropped). */
      cJSON_AddNumberToObject(go, "timers_and_posts", (double)g->holds);
      /* Callbacks that ran past watchdog.stall_warn_ms (SPEC section 15). */
      cJSON_AddNumberToObject(go, "stalls",
                              (double)g->stalls);
      /* Its rooms, with their members (SPEC section 12). */
      cJSON *rooms = cJSON_AddArrayToObject(go, "rooms");
      for (size_t k = 0; k < g->room_count; k++) {
        cJSON *ro = cJSON_CreateObject();
        cJSON_AddNumberToObject(ro, "id", (double)g->rooms[k].id);
        cJSON_AddNumberToObject(ro, "members", (double)g->rooms[k].members);
        cJSON_AddItemToArray(rooms, ro);
      }
      cJSON_AddItemToArray(gens, go);
    }
    cJSON_AddItemToArray(plugins, o);
  }
  cJSON *services = cJSON_AddArrayToObject(root, "services");
  for (size_t i = 0; i < snap->service_count; i++)
    cJSON_AddItemToArray(services, service_json(&snap->services[i]));
  return root;
}

void text_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n =
        vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
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
  host_snapshot_t snap;
  if (host_snapshot_take(host, &snap) != 0)
    return NULL;
  cJSON *root = status_json(host, &snap, uptime_ms);
  host_snapshot_free(&snap);
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
  text_append(&out, &len, &cap,
              "ok\niocphost %s \"%s\", pid %d, %s, up %llu s\n",
              IOCPHOST_VERSION, host->config->name, (int)getpid(),
              host->stopped ? "stopping" : "running",
              (unsigned long long)(uptime_ms / 1000));
  cJSON *item;
  cJSON_ArrayForEach(item, cJSON_GetObjectItem(root, "cores")) {
    text_append(&out, &len, &cap, "core %s: %d threads, %.0f completions\n",
                cJSON_GetObjectItem(item, "name")->valuestring,
                cJSON_GetObjectItem(item, "threads")
                    ? cJSON_GetObjectItem(item, "threads")->valueint
                    : 0,
                cJSON_GetObjectItem(item, "completions")
                    ? cJSON_GetObjectItem(item, "completions")->valuedouble
                    : 0.0);
  }
  cJSON *work = cJSON_GetObjectItem(root, "work");
  if (work)
    text_append(&out, &len, &cap,
                "work: %d threads, queued %.0f/%.0f, running %.0f, completed "
                "%.0f, rejected %.0f\n",
                cJSON_GetObjectItem(work, "threads")->valueint,
                cJSON_GetObjectItem(work, "queued")->valuedouble,
                cJSON_GetObjectItem(work, "queue_limit")->valuedouble,
                cJSON_GetObjectItem(work, "running")->valuedouble,
                cJSON_GetObjectItem(work, "completed")->valuedouble,
                cJSON_GetObjectItem(work, "rejected")->valuedouble);
  cJSON_ArrayForEach(item, cJSON_GetObjectItem(root, "plugins")) {
    cJSON *version = cJSON_GetObjectItem(item, "version");
    cJSON *path = cJSON_GetObjectItem(item, "path");
    text_append(&out, &len, &cap, "plugin %s %s (%s), generations:",
                cJSON_GetObjectItem(item, "name")->valuestring,
                version ? version->valuestring : "-",
                path ? path->valuestring : "-");
    cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(item, "generations")) {
      text_append(&out, &len, &cap, " %.0f (%s, %s, %.0f sessions",
                  cJSON_GetObjectItem(g, "generation")->valuedouble,
                  cJSON_GetObjectItem(g, "version")->valuestring,
                  cJSON_GetObjectItem(g, "state")->valuestring,
                  cJSON_GetObjectItem(g, "sessions")->valuedouble);
      double holds = cJSON_GetObjectItem(g, "timers_and_posts")->valuedouble;
      if (holds > 0)
        text_append(&out, &len, &cap, ", %.0f timers or posts", holds);
      double stalls = cJSON_GetObjectItem(g, "stalls")->valuedouble;
      if (stalls > 0)
        text_append(&out, &len, &cap, ", %.0f stalls", stalls);
      cJSON *rooms = cJSON_GetObjectItem(g, "rooms");
      int room_count = cJSON_GetArraySize(rooms);
      if (room_count > 0) {
        double members = 0;
        cJSON *r;
        cJSON_ArrayForEach(r, rooms) {
          members += cJSON_GetObjectItem(r, "members")->valuedouble;
        }
        text_append(&out, &len, &cap, ", %d rooms with %.0f members",
                    room_count, members);
      }
      text_append(&out, &len, &cap, ")");
    }
    text_append(&out, &len, &cap, "\n");
  }
  cJSON_ArrayForEach(item, cJSON_GetObjectItem(root, "services")) {
#define NUM(key) cJSON_GetObjectItem(item, key)->valuedouble
#define STR(key) cJSON_GetObjectItem(item, key)->valuestring
    text_append(
        &out, &len, &cap,
        "service %s (%s %s, plugin %s, %s): sessions %.0f/%.0f, accepted "
        "%.0f, rejected %.0f, connects %.0f, connect failures %.0f, bytes "
        "in %.0f out %.0f, packets in %.0f out %.0f, disconnects:",
        STR("name"), STR("type"), STR("address"), STR("plugin"), STR("framing"),
        NUM("sessions"), NUM("max_sessions"), NUM("accepted"), NUM("rejected"),
        NUM("connects"), NUM("connect_failures"), NUM("bytes_in"),
        NUM("bytes_out"), NUM("packets_in"), NUM("packets_out"));
    cJSON *reason;
    int any = 0;
    cJSON_ArrayForEach(reason, cJSON_GetObjectItem(item, "disconnects")) {
      if (reason->valuedouble > 0) {
        text_append(&out, &len, &cap, " %s %.0f", reason->string,
                    reason->valuedouble);
        any = 1;
      }
    }
    text_append(&out, &len, &cap, "%s\n", any ? "" : " none");
#undef NUM
#undef STR
  }
  cJSON_Delete(root);
  return out;
}
