/*
 * Each service's TLS (SPEC section 14): its context made from the config's
 * files when the host opens (so `check` reads and matches them), published
 * in the service's slot for its sessions (tls_layer.c), and rotated by
 * `reload`: a new context for new sessions, while every existing session
 * keeps the one it started with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "host_internal.h"
#include "shadow.h"

enum { TLS_CERT, TLS_KEY, TLS_CA, TLS_NAME, TLS_PARTS };
static const char *const PART_NAMES[TLS_PARTS] = {"cert_file", "key_file",
                                                  "ca_file", "server_name"};

/* What a context is made of, each part hashed: a file's bytes with its
 * path, or the name. A part not given hashes to 0. */
static int tls_hashes(const config_tls_t *t, uint64_t h[TLS_PARTS], char *err,
                      size_t err_len) {
  const char *files[3] = {t->cert_file, t->key_file, t->ca_file};
  for (int i = 0; i < 3; i++) {
    h[i] = 0;
    if (!files[i])
      continue;
    /* Unreadable: tls_ctx_new says so, with what to do. */
    if (file_hash(files[i], &h[i], err, err_len) != 0)
      h[i] = 1;
  }
  uint64_t n = 14695981039346656037ull;
  for (const char *p = t->server_name; p && *p; p++)
    n = (n ^ (unsigned char)*p) * 1099511628211ull;
  h[TLS_NAME] = t->server_name ? n : 0;
  /* A file given under another path counts as changed. */
  for (int i = 0; i < 3; i++) {
    uint64_t path = 14695981039346656037ull;
    for (const char *p = files[i]; p && *p; p++)
      path = (path ^ (unsigned char)*p) * 1099511628211ull;
    if (files[i])
      h[i] ^= path;
  }
  return 0;
}

static tls_ctx_t *context_of(const config_service_t *cs, size_t index,
                             char *err, size_t err_len) {
  tls_ctx_config_t c = {
      .role = cs->type == CONFIG_SERVICE_CLIENT ? TLS_CLIENT : TLS_SERVER,
      .cert_file = cs->tls.cert_file,
      .key_file = cs->tls.key_file,
      .ca_file = cs->tls.ca_file,
      .server_name = cs->tls.server_name,
      .versions = TLS_VERSIONS_1_2_AND_1_3,
  };
  char why[1024];
  tls_ctx_t *ctx = tls_ctx_new(&c, why, sizeof why);
  if (!ctx)
    snprintf(err, err_len, "services[%zu].tls (service %s): %s", index,
             cs->name, why);
  return ctx;
}

int tls_services_open(host_t *host, char *err, size_t err_len) {
  const config_t *c = host->config;
  for (size_t i = 0; i < c->service_count; i++) {
    const config_service_t *cs = &c->services[i];
    host_service_t *hs = &host->services[i];
    if (!cs->tls.enabled)
      continue;
    tls_ctx_t *ctx = context_of(cs, i, err, err_len);
    if (!ctx)
      return -1;
    char ignored[256];
    tls_hashes(&cs->tls, hs->tls_hash, ignored, sizeof ignored);
    hs->tls.service = cs->name;
    tls_slot_init(&hs->tls.slot, ctx);
    hs->tls_open = 1;
  }
  return 0;
}

void tls_services_close(host_t *host) {
  for (size_t i = 0; host->services && i < host->config->service_count; i++) {
    host_service_t *hs = &host->services[i];
    if (hs->tls_open)
      tls_slot_destroy(&hs->tls.slot);
    hs->tls_open = 0;
  }
}

struct tls_reload {
  size_t count;
  tls_ctx_t **fresh;           /* per service: a new context, or NULL */
  uint64_t (*hash)[TLS_PARTS]; /* per service: what made it */
  char (*why)[64];             /* per service: which parts changed */
};

static void reload_free(tls_reload_t *r) {
  if (!r)
    return;
  for (size_t i = 0; r->fresh && i < r->count; i++)
    tls_ctx_release(r->fresh[i]);
  free(r->fresh);
  free(r->hash);
  free(r->why);
  free(r);
}

int tls_reload_prepare(host_t *host, const config_t *next, tls_reload_t **out,
                       char *err, size_t err_len) {
  const config_t *c = host->config;
  *out = NULL;
  size_t count = c->service_count < next->service_count ? c->service_count
                                                        : next->service_count;
  tls_reload_t *r = calloc(1, sizeof *r);
  if (r) {
    r->count = count;
    r->fresh = calloc(count + 1, sizeof *r->fresh);
    r->hash = calloc(count + 1, sizeof *r->hash);
    r->why = calloc(count + 1, sizeof *r->why);
  }
  if (!r || !r->fresh || !r->hash || !r->why) {
    reload_free(r);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < count; i++) {
    const config_service_t *cs = &next->services[i];
    host_service_t *hs = &host->services[i];
    /* A service that gains or loses TLS, or changes its role, needs a
     * restart (restart_notes says so). */
    if (!hs->tls_open || !cs->tls.enabled ||
        cs->type != c->services[i].type)
      continue;
    char ignored[256];
    tls_hashes(&cs->tls, r->hash[i], ignored, sizeof ignored);
    size_t used = 0;
    for (int p = 0; p < TLS_PARTS; p++) {
      if (r->hash[i][p] == hs->tls_hash[p])
        continue;
      int n = snprintf(r->why[i] + used, sizeof r->why[i] - used, "%s%s",
                       used ? ", " : "", PART_NAMES[p]);
      if (n > 0 && (size_t)n < sizeof r->why[i] - used)
        used += (size_t)n;
    }
    if (!used)
      continue;
    r->fresh[i] = context_of(cs, i, err, err_len);
    if (!r->fresh[i]) {
      reload_free(r);
      return -1;
    }
  }
  *out = r;
  return 0;
}

void tls_reload_finish(host_t *host, tls_reload_t *r, int apply, int dry_run,
                       char **out, size_t *len, size_t *cap) {
  for (size_t i = 0; r && apply && i < r->count; i++) {
    host_service_t *hs = &host->services[i];
    if (!r->fresh[i])
      continue;
    const char *name = host->config->services[i].name;
    if (dry_run) {
      text_append(out, len, cap,
                  "service %s: would reload its TLS context (%s changed)\n",
                  name, r->why[i]);
      continue;
    }
    tls_slot_swap(&hs->tls.slot, r->fresh[i]);
    r->fresh[i] = NULL;
    memcpy(hs->tls_hash, r->hash[i], sizeof hs->tls_hash);
    text_append(out, len, cap,
                "service %s: TLS context reloaded (%s changed); new sessions "
                "use it, existing sessions keep theirs\n",
                name, r->why[i]);
    log_write(LOG_INFO, "host",
              "reload: service %s: TLS context reloaded (%s changed)", name,
              r->why[i]);
  }
  reload_free(r);
}
