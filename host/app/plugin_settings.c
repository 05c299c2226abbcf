/*
 * Typed settings (SPEC section 12, ABI 1.2): a plugin reads its "settings"
 * by JSON pointer with defaults (setting_int, setting_number,
 * setting_string, setting_bool, setting_array_length), so no plugin parses
 * JSON by hand.
 *
 * Each generation parses its settings text once, with the host's cJSON
 * (generation_open), and frees the document after on_unload
 * (generation_close). The getters only read it, so any thread may call
 * them at once without a lock; nothing of cJSON crosses the ABI.
 *
 * Two tables carry the getters: a generation's own (the api first in
 * generation_t), and the one check_settings gets (settings_check_api_t),
 * which has nothing else.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "host_internal.h"
#include "version.h"

/* RFC 8259 section 6: integers in [-(2^53 - 1), 2^53 - 1] are the ones
 * every JSON reader holds exactly. The host reads numbers as doubles (the
 * config went through cJSON already), so past that a number may not be the
 * integer that was written. */
#define EXACT_INTEGER_MAX 9007199254740991.0

int settings_parse(const char *json, cJSON **out, char *err, size_t err_len) {
  *out = cJSON_Parse(json ? json : "{}");
  if (*out)
    return 0;
  /* The config's own parser printed this text, so memory is what fails. */
  snprintf(err, err_len,
           "cannot read the plugin's settings: out of memory, or the text "
           "is not JSON");
  return -1;
}

void settings_free(cJSON *settings) { cJSON_Delete(settings); }

/* RFC 6901: "" or "/token/token...", where '~' is only "~0" ('~') or "~1"
 * ('/'). */
static int pointer_valid(const char *pointer) {
  if (pointer[0] != '\0' && pointer[0] != '/')
    return 0;
  for (const char *c = pointer; *c; c++)
    if (c[0] == '~' && c[1] != '0' && c[1] != '1')
      return 0;
  return 1;
}

/* Whether a member's key equals the escaped token [token, end). */
static int key_matches(const char *key, const char *token, const char *end) {
  while (token < end) {
    char want = *token++;
    if (want == '~')
      want = *token++ == '0' ? '~' : '/';
    if (*key++ != want)
      return 0;
  }
  return *key == '\0';
}

/* An array index token: "0" or digits without a leading zero, at most
 * INT_MAX (cJSON counts in int). "-", the element past the end, names no
 * value to read. Returns the index or -1. */
static long array_index(const char *token, const char *end) {
  if (token == end || (*token == '0' && end - token > 1))
    return -1;
  long index = 0;
  for (; token < end; token++) {
    if (*token < '0' || *token > '9')
      return -1;
    index = index * 10 + (*token - '0');
    if (index > 2147483647L)
      return -1;
  }
  return index;
}

const cJSON *settings_find(const cJSON *settings, const char *pointer) {
  if (!settings || !pointer || !pointer_valid(pointer))
    return NULL;
  const cJSON *at = settings;
  const char *token = pointer;
  while (at && *token == '/') {
    token++;
    const char *end = token + strcspn(token, "/");
    const cJSON *child = at->child;
    if (cJSON_IsObject(at)) {
      /* The first of duplicate keys, as cJSON's own lookups. */
      while (child &&
             !(child->string && key_matches(child->string, token, end)))
        child = child->next;
    } else if (cJSON_IsArray(at)) {
      long index = array_index(token, end);
      if (index < 0)
        return NULL;
      while (child && index-- > 0)
        child = child->next;
    } else {
      child = NULL; /* a number, string, ... has no members */
    }
    at = child;
    token = end;
  }
  return at;
}

int64_t settings_int(const cJSON *settings, const char *pointer, int64_t def) {
  const cJSON *v = settings_find(settings, pointer);
  if (!cJSON_IsNumber(v))
    return def;
  double d = v->valuedouble;
  /* Also refuses NaN and infinities: every comparison with them fails. */
  if (!(d >= -EXACT_INTEGER_MAX && d <= EXACT_INTEGER_MAX))
    return def;
  int64_t i = (int64_t)d; /* in range: truncates toward zero */
  return (double)i == d ? i : def;
}

double settings_number(const cJSON *settings, const char *pointer, double def) {
  const cJSON *v = settings_find(settings, pointer);
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
    return def;
  return v->valuedouble;
}

const char *settings_string(const cJSON *settings, const char *pointer,
                            const char *def) {
  const cJSON *v = settings_find(settings, pointer);
  return cJSON_IsString(v) && v->valuestring ? v->valuestring : def;
}

int settings_bool(const cJSON *settings, const char *pointer, int def) {
  const cJSON *v = settings_find(settings, pointer);
  return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

int settings_array_length(const cJSON *settings, const char *pointer) {
  const cJSON *v = settings_find(settings, pointer);
  return cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
}

/* ---- a generation's table: the api is first in generation_t ---- */

static const cJSON *generation_settings(const iocphost_api_t *api) {
  return api ? ((const generation_t *)api)->settings : NULL;
}

static int64_t api_setting_int(const iocphost_api_t *api, const char *pointer,
                               int64_t def) {
  return settings_int(generation_settings(api), pointer, def);
}

static double api_setting_number(const iocphost_api_t *api, const char *pointer,
                                 double def) {
  return settings_number(generation_settings(api), pointer, def);
}

static const char *api_setting_string(const iocphost_api_t *api,
                                      const char *pointer, const char *def) {
  return settings_string(generation_settings(api), pointer, def);
}

static int api_setting_bool(const iocphost_api_t *api, const char *pointer,
                            int def) {
  return settings_bool(generation_settings(api), pointer, def);
}

static int api_setting_array_length(const iocphost_api_t *api,
                                    const char *pointer) {
  return settings_array_length(generation_settings(api), pointer);
}

void settings_fill_api(iocphost_api_t *api) {
  api->setting_int = api_setting_int;
  api->setting_number = api_setting_number;
  api->setting_string = api_setting_string;
  api->setting_bool = api_setting_bool;
  api->setting_array_length = api_setting_array_length;
}

/* ---- check_settings' table: the getters and nothing else ---- */

static const cJSON *checked_settings(const iocphost_api_t *api) {
  return api ? ((const settings_check_api_t *)api)->settings : NULL;
}

static int64_t check_setting_int(const iocphost_api_t *api, const char *pointer,
                                 int64_t def) {
  return settings_int(checked_settings(api), pointer, def);
}

static double check_setting_number(const iocphost_api_t *api,
                                   const char *pointer, double def) {
  return settings_number(checked_settings(api), pointer, def);
}

static const char *check_setting_string(const iocphost_api_t *api,
                                        const char *pointer, const char *def) {
  return settings_string(checked_settings(api), pointer, def);
}

static int check_setting_bool(const iocphost_api_t *api, const char *pointer,
                              int def) {
  return settings_bool(checked_settings(api), pointer, def);
}

static int check_setting_array_length(const iocphost_api_t *api,
                                      const char *pointer) {
  return settings_array_length(checked_settings(api), pointer);
}

void settings_check_api_init(settings_check_api_t *table,
                             const cJSON *settings) {
  iocphost_api_t *a = &table->api;
  memset(table, 0, sizeof *table);
  a->struct_size = sizeof *a;
  a->abi_major = IOCPHOST_ABI_MAJOR;
  a->abi_minor = IOCPHOST_ABI_MINOR;
  a->host_version = IOCPHOST_VERSION;
  a->setting_int = check_setting_int;
  a->setting_number = check_setting_number;
  a->setting_string = check_setting_string;
  a->setting_bool = check_setting_bool;
  a->setting_array_length = check_setting_array_length;
  table->settings = settings;
}
