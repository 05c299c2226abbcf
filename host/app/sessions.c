/*
 * `sessions` and `kick` (SPEC section 15): the operator's view of the
 * sessions of a running host, and the one way to end one of them from the
 * command line. Both run on the control thread; each session they look at
 * is held (acquired) while they do.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/log.h"
#include "host_internal.h"

static void add_room_id(void *rooms, uint64_t id) {
  cJSON_AddItemToArray(rooms, cJSON_CreateNumber((double)id));
}

static cJSON *session_json(host_service_t *hs, session_t *s,
                           uint64_t now_ms) {
  session_info_t info;
  session_get_info(s, &info);
  char peer[ADDRESS_TEXT_MAX] = "?";
  address_format(&info.peer, peer, sizeof peer);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "id", (double)info.id);
  cJSON_AddStringToObject(o, "service", hs->config->name);
  cJSON_AddStringToObject(o, "peer", peer);
  cJSON_AddNumberToObject(
      o, "age_ms",
      (double)(now_ms > info.connected_ms ? now_ms - info.connected_ms : 0));
  cJSON_AddNumberToObject(o, "bytes_in", (double)info.bytes_in);
  cJSON_AddNumberToObject(o, "bytes_out", (double)info.bytes_out);
  cJSON_AddNumberToObject(o, "queued_bytes", (double)info.queued_bytes);
  /* 0 until the plugin's on_connected (the generation binds there). The
   * acquire pairs with on_connected's release on the worker. The session
   * holds its generation until on_free, and on_free cannot run while this
   * listing holds the session (service_sessions acquired it while it was
   * registered), so the generation is alive to read its number. */
  generation_t *g =
      atomic_load_explicit(&host_session(s)->generation, memory_order_acquire);
  cJSON_AddNumberToObject(o, "generation", g ? (double)g->number : 0);
  cJSON *rooms = cJSON_AddArrayToObject(o, "rooms");
  rooms_of_session(s, add_room_id, rooms);
  return o;
}

/* Appends the sessions of hs to list; -1 without memory. */
static int add_service_sessions(host_service_t *hs, cJSON *list) {
  if (!hs->engine)
    return 0;
  session_t **sessions;
  size_t count;
  if (service_sessions(hs->engine, &sessions, &count) != ENGINE_OK)
    return -1;
  uint64_t now = clock_now_ms();
  for (size_t i = 0; i < count; i++) {
    cJSON_AddItemToArray(list, session_json(hs, sessions[i], now));
    session_release(sessions[i]);
  }
  free(sessions);
  return 0;
}

static char *error_reply(const char *fmt, const char *a, const char *b) {
  size_t len = strlen(fmt) + strlen(a) + strlen(b) + 16;
  char *reply = malloc(len);
  if (reply) {
    memcpy(reply, "error: ", 7);
    snprintf(reply + 7, len - 7, fmt, a, b);
    strcat(reply, "\n");
  }
  return reply;
}

/* The config's service names, "a, b, c", malloc'd. */
static char *service_names(host_t *host) {
  size_t len = 1;
  for (size_t i = 0; i < host->config->service_count; i++)
    len += strlen(host->config->services[i].name) + 2;
  char *names = malloc(len);
  if (!names)
    return NULL;
  names[0] = '\0';
  for (size_t i = 0; i < host->config->service_count; i++) {
    if (i)
      strcat(names, ", ");
    strcat(names, host->config->services[i].name);
  }
  return names;
}

static char *text_of(cJSON *list) {
  char *out = NULL;
  size_t len = 0, cap = 0;
  text_append(&out, &len, &cap, "ok\n");
  if (cJSON_GetArraySize(list) == 0)
    text_append(&out, &len, &cap, "no sessions\n");
  cJSON *s;
  cJSON_ArrayForEach(s, list) {
#define NUM(key) cJSON_GetObjectItem(s, key)->valuedouble
    text_append(&out, &len, &cap,
                "session %.0f: service %s, peer %s, age %.0f ms, bytes in "
                "%.0f out %.0f, queued %.0f, generation %.0f, rooms",
                NUM("id"), cJSON_GetObjectItem(s, "service")->valuestring,
                cJSON_GetObjectItem(s, "peer")->valuestring, NUM("age_ms"),
                NUM("bytes_in"), NUM("bytes_out"), NUM("queued_bytes"),
                NUM("generation"));
#undef NUM
    cJSON *rooms = cJSON_GetObjectItem(s, "rooms"), *r;
    if (cJSON_GetArraySize(rooms) == 0)
      text_append(&out, &len, &cap, " none");
    cJSON_ArrayForEach(r, rooms) {
      text_append(&out, &len, &cap, " %.0f", r->valuedouble);
    }
    text_append(&out, &len, &cap, "\n");
  }
  return out;
}

char *host_sessions(host_t *host, const char *service, int json) {
  const config_t *c = host->config;
  size_t index = c->service_count;
  if (service) {
    for (size_t i = 0; i < c->service_count; i++)
      if (strcmp(c->services[i].name, service) == 0)
        index = i;
    if (index == c->service_count) {
      char *names = service_names(host);
      char *reply = error_reply(
          "no service named \"%s\"; this instance's services are: %s",
          service, names ? names : "?");
      free(names);
      return reply;
    }
  }
  cJSON *root = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(root, "sessions");
  int rc = 0;
  /* Under the host's lock, as status: the stop detaches the services under
   * it, so none goes while it is listed. */
  pthread_mutex_lock(&host->lock);
  for (size_t i = 0; rc == 0 && i < c->service_count; i++)
    if (!service || i == index)
      rc = add_service_sessions(&host->services[i], list);
  pthread_mutex_unlock(&host->lock);
  char *out = NULL;
  if (rc != 0) {
    out = strdup("error: out of memory listing the sessions\n");
  } else if (json) {
    char *text = cJSON_Print(root);
    size_t len = text ? strlen(text) : 0;
    out = text ? malloc(len + 5) : NULL;
    if (out)
      snprintf(out, len + 5, "ok\n%s\n", text);
    cJSON_free(text);
  } else {
    out = text_of(list);
  }
  cJSON_Delete(root);
  return out;
}

char *host_kick(host_t *host, uint64_t id) {
  session_t *found = NULL;
  host_service_t *where = NULL;
  pthread_mutex_lock(&host->lock);
  for (size_t i = 0; !found && i < host->config->service_count; i++) {
    host_service_t *hs = &host->services[i];
    if (hs->engine && (found = service_find_session(hs->engine, id)))
      where = hs;
  }
  pthread_mutex_unlock(&host->lock);
  char number[24];
  snprintf(number, sizeof number, "%llu", (unsigned long long)id);
  if (!found)
    return error_reply("no session %s in this instance (it may have ended "
                       "already; `iocphost sessions` lists them)%s",
                       number, "");
  char peer[ADDRESS_TEXT_MAX] = "?";
  address_format(session_peer(found), peer, sizeof peer);
  /* Flushed and closed as a plugin's disconnect is: reason local. */
  int rc = session_disconnect(found, REASON_LOCAL);
  session_release(found);
  char *out = NULL;
  size_t len = 0, cap = 0;
  if (rc == ENGINE_OK) {
    log_write(LOG_INFO, "host",
              "control endpoint: kicked session %s (service %s, peer %s)",
              number, where->config->name, peer);
    text_append(&out, &len, &cap,
                "ok\nsession %s (service %s, peer %s) disconnected (reason "
                "local)\n",
                number, where->config->name, peer);
  } else {
    text_append(&out, &len, &cap,
                "error: session %s (service %s, peer %s) is ending already\n",
                number, where->config->name, peer);
  }
  return out;
}
