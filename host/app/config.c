/*
 * The configuration loader (SPEC section 6). cJSON stays inside this file:
 * the JSON tree is walked once, every object's keys are checked against the
 * keys allowed at that place, and plain C structs come out. The first error
 * wins; its message names the file, the JSON path and what to do.
 */
#include "config.h"
#include "path.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef _WIN32
#include <direct.h>
#define PLUGIN_SUFFIX ".dll"
#else
#include <unistd.h>
#define PLUGIN_SUFFIX ".so"
#endif

#include "engine/log.h"

/* A config larger than this is certainly a mistake (a log file passed with
 * -c, say), and refusing it keeps the parser's memory bounded. */
#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)

/* Longest JSON path kept for messages; longer ones are cut. */
#define PATH_MAX_TEXT 256

/* Names of cores, plugins, services and the host: they appear in logs, in
 * status output and on the command line, so they stay plain. */
#define NAME_MAX_LEN 63

#define MS_MAX 2147483647.0 /* about 24.8 days: fits every timer */

typedef struct loader {
  const char *file;
  char *err;
  size_t err_len;
  const char *dir;
} loader_t;

/* ---- small portable helpers ------------------------------------------ */

static char *dup_string(const char *s) {
  size_t n = strlen(s) + 1;
  char *copy = malloc(n);
  if (copy != NULL)
    memcpy(copy, s, n);
  return copy;
}

static char *dup_printf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static char *dup_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (s == NULL)
    return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

static int is_separator(char c) {
#ifdef _WIN32
  return c == '/' || c == '\\';
#else
  return c == '/';
#endif
}

static int path_is_absolute(const char *p) {
#ifdef _WIN32
  if (((p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= 'a' && p[0] <= 'z')) &&
      p[1] == ':')
    return 1;
#endif
  return is_separator(p[0]);
}

/* Index just past the last separator, 0 when there is none. */
static size_t path_base_offset(const char *p) {
  size_t base = 0;
  for (size_t i = 0; p[i] != '\0'; i++)
    if (is_separator(p[i]))
      base = i + 1;
  return base;
}

/* dir joined with a relative path, normalised (path.h) so that messages,
 * logs and status show "/srv/game/build/x.so", not
 * "/srv/game/conf/../build/x.so". */
static char *path_join(const char *dir, const char *relative) {
  size_t n = strlen(dir);
  int need_separator = n > 0 && !is_separator(dir[n - 1]);
  char *joined = dup_printf("%s%s%s", dir, need_separator ? "/" : "", relative);
  if (joined != NULL)
    path_normalise(joined);
  return joined;
}

static char *path_resolve(const char *dir, const char *given) {
  if (!path_is_absolute(given))
    return path_join(dir, given);
  char *path = dup_string(given);
  if (path != NULL)
    path_normalise(path);
  return path;
}

/* The absolute folder of a file, with symbolic links resolved when the
 * folder exists (config_parse may name a file that was never on disk). */
static char *absolute_folder(const char *file) {
  size_t base = path_base_offset(file);
  char *folder;
  if (base == 0)
    folder = dup_string(".");
  else if (base == 1)
    folder = dup_printf("%c", file[0]);
  else
    folder = dup_printf("%.*s", (int)(base - 1), file);
  if (folder == NULL)
    return NULL;
#ifdef _WIN32
  char *real = _fullpath(NULL, folder, 0);
#else
  char *real = realpath(folder, NULL);
#endif
  if (real != NULL) {
    free(folder);
    return real;
  }
  if (path_is_absolute(folder))
    return folder;
  char cwd[4096];
#ifdef _WIN32
  char *got = _getcwd(cwd, (int)sizeof cwd);
#else
  char *got = getcwd(cwd, sizeof cwd);
#endif
  char *joined = got != NULL ? path_join(cwd, folder) : NULL;
  free(folder);
  return joined;
}

static int is_regular_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Copies text for a message: control characters become '?', long text is
 * cut with "...". Keys and values in messages come from the user's file. */
static const char *printable(char *buf, size_t len, const char *s) {
  size_t i = 0;
  for (; s[i] != '\0' && i + 1 < len; i++) {
    unsigned char c = (unsigned char)s[i];
    buf[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  buf[i] = '\0';
  if (s[i] != '\0' && len >= 4)
    memcpy(buf + len - 4, "...", 4);
  return buf;
}

/* ---- errors and JSON paths ------------------------------------------- */

static int fail(loader_t *ld, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Writes "file: path: message" once; returns -1 for "return fail(...)". */
static int fail(loader_t *ld, const char *path, const char *fmt, ...) {
  if (ld->err == NULL || ld->err_len == 0)
    return -1;
  int n;
  if (path != NULL && path[0] != '\0')
    n = snprintf(ld->err, ld->err_len, "%s: %s: ", ld->file, path);
  else
    n = snprintf(ld->err, ld->err_len, "%s: ", ld->file);
  if (n < 0 || (size_t)n >= ld->err_len)
    return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ld->err + n, ld->err_len - (size_t)n, fmt, ap);
  va_end(ap);
  /* One line whatever the config held: a value quoted in the message (a
   * path with a newline in it, say) must not break or forge log lines. */
  for (char *c = ld->err; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f)
      *c = '?';
  return -1;
}

static int fail_memory(loader_t *ld, const char *path) {
  return fail(ld, path, "out of memory while reading the config");
}

typedef struct json_path {
  char text[PATH_MAX_TEXT];
} json_path_t;

static void path_key(json_path_t *out, const char *parent, const char *key) {
  char shown[64];
  printable(shown, sizeof shown, key);
  if (parent == NULL || parent[0] == '\0')
    snprintf(out->text, sizeof out->text, "%s", shown);
  else
    snprintf(out->text, sizeof out->text, "%s.%s", parent, shown);
}

static void path_index(json_path_t *out, const char *parent, size_t index) {
  snprintf(out->text, sizeof out->text, "%s[%lu]", parent,
           (unsigned long)index);
}

static const char *json_kind(const cJSON *v) {
  if (cJSON_IsString(v))
    return "a string";
  if (cJSON_IsNumber(v))
    return "a number";
  if (cJSON_IsBool(v))
    return cJSON_IsTrue(v) ? "true" : "false";
  if (cJSON_IsNull(v))
    return "null";
  if (cJSON_IsArray(v))
    return "an array";
  if (cJSON_IsObject(v))
    return "an object";
  return "an unknown value";
}

/* ---- key checking ---------------------------------------------------- */

static int list_find(const char *const *list, const char *s) {
  for (size_t i = 0; list[i] != NULL; i++)
    if (strcmp(list[i], s) == 0)
      return (int)i;
  return -1;
}

/* "a, b, c" into buf, cut with "..." when it does not fit. */
static const char *list_join(char *buf, size_t len, const char *const *list,
                             const char *quote) {
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; list[i] != NULL; i++) {
    int n = snprintf(buf + used, len - used, "%s%s%s%s", i > 0 ? ", " : "",
                     quote, list[i], quote);
    if (n < 0 || (size_t)n >= len - used) {
      if (len >= 4)
        memcpy(buf + len - 4, "...", 4);
      break;
    }
    used += (size_t)n;
  }
  return buf;
}

static int fold(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Edit distance (case-insensitive), capped: keys are short. */
static size_t edit_distance(const char *a, const char *b) {
  size_t n = strlen(a), m = strlen(b);
  if (n > 40 || m > 40)
    return 99;
  size_t row[41];
  for (size_t j = 0; j <= m; j++)
    row[j] = j;
  for (size_t i = 1; i <= n; i++) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= m; j++) {
      size_t above = row[j];
      size_t cost =
          fold((unsigned char)a[i - 1]) == fold((unsigned char)b[j - 1]) ? 0
                                                                         : 1;
      size_t best = diagonal + cost;
      if (row[j] + 1 < best)
        best = row[j] + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diagonal = above;
    }
  }
  return row[m];
}

static const char *closest_key(const char *key, const char *const *allowed) {
  /* "min_delay" for "min_delay_ms": a long enough prefix is a good guess. */
  size_t n = strlen(key);
  if (n >= 4)
    for (size_t i = 0; allowed[i] != NULL; i++)
      if (strncmp(allowed[i], key, n) == 0)
        return allowed[i];
  const char *best = NULL;
  size_t best_distance = strlen(key) <= 4 ? 2 : 3;
  for (size_t i = 0; allowed[i] != NULL; i++) {
    size_t d = edit_distance(key, allowed[i]);
    if (d < best_distance) {
      best_distance = d;
      best = allowed[i];
    }
  }
  return best;
}

/* Every key of obj must be in allowed, and appear once. what names the
 * object for the message ("a server service", "\"log\""). */
static int check_keys(loader_t *ld, const cJSON *obj, const char *path,
                      const char *const *allowed, const char *what) {
  unsigned seen = 0; /* allowed lists are short: one bit each */
  for (const cJSON *item = obj->child; item != NULL; item = item->next) {
    json_path_t item_path;
    path_key(&item_path, path, item->string != NULL ? item->string : "");
    int index = item->string != NULL ? list_find(allowed, item->string) : -1;
    if (index < 0) {
      char keys[512];
      list_join(keys, sizeof keys, allowed, "");
      const char *near = closest_key(item->string ? item->string : "", allowed);
      if (near != NULL)
        return fail(ld, item_path.text,
                    "unknown key; did you mean \"%s\"? Keys allowed in %s: %s",
                    near, what, keys);
      return fail(ld, item_path.text,
                  "unknown key; remove it or fix its spelling. Keys allowed "
                  "in %s: %s",
                  what, keys);
    }
    if (seen & (1u << index))
      return fail(ld, item_path.text,
                  "key given twice in the same object; keep only one");
    seen |= 1u << index;
  }
  return 0;
}

/* ---- typed getters: absent members take the default ------------------ */

static const cJSON *member(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static int name_is_valid(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > NAME_MAX_LEN)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return 0;
  }
  return 1;
}

static int missing(loader_t *ld, const char *path, const char *hint) {
  return fail(ld, path, "missing; %s", hint);
}

/* A string member: required (def == NULL and required) or defaulted.
 * *out is a copy, or NULL when absent without a default. */
static int get_text(loader_t *ld, const cJSON *obj, const char *parent,
                    const char *key, int required, const char *def,
                    const char *hint, char **out) {
  json_path_t path;
  path_key(&path, parent, key);
  const cJSON *v = member(obj, key);
  *out = NULL;
  if (v == NULL) {
    if (required)
      return missing(ld, path.text, hint);
    if (def == NULL)
      return 0;
    *out = dup_string(def);
    return *out != NULL ? 0 : fail_memory(ld, path.text);
  }
  if (!cJSON_IsString(v))
    return fail(ld, path.text, "must be a string, found %s; %s", json_kind(v),
                hint);
  if (v->valuestring[0] == '\0')
    return fail(ld, path.text, "must not be empty; %s", hint);
  *out = dup_string(v->valuestring);
  return *out != NULL ? 0 : fail_memory(ld, path.text);
}

static int get_name(loader_t *ld, const cJSON *obj, const char *parent,
                    const char *key, int required, const char *def,
                    const char *hint, char **out) {
  if (get_text(ld, obj, parent, key, required, def, hint, out) != 0)
    return -1;
  if (*out != NULL && !name_is_valid(*out)) {
    json_path_t path;
    char shown[80];
    path_key(&path, parent, key);
    return fail(ld, path.text,
                "\"%s\" is not a valid name; use 1 to %d letters, digits, "
                "'-', '_' or '.'",
                printable(shown, sizeof shown, *out), NAME_MAX_LEN);
  }
  return 0;
}

static void format_number(char *buf, size_t len, double d) {
  snprintf(buf, len, "%.15g", d);
}

/* An integer member in [min, max]; integers up to 2^53 are exact in a
 * JSON number, and every limit here is far below that. */
static int get_integer(loader_t *ld, const cJSON *obj, const char *parent,
                       const char *key, double min, double max, double def,
                       double *out) {
  json_path_t path;
  path_key(&path, parent, key);
  const cJSON *v = member(obj, key);
  if (v == NULL) {
    *out = def;
    return 0;
  }
  char lo[32], hi[32];
  format_number(lo, sizeof lo, min);
  format_number(hi, sizeof hi, max);
  if (!cJSON_IsNumber(v))
    return fail(ld, path.text,
                "must be an integer from %s to %s, found %s; write it "
                "without quotes",
                lo, hi, json_kind(v));
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d) || d < min || d > max) {
    char found[32];
    format_number(found, sizeof found, d);
    return fail(ld, path.text, "must be an integer from %s to %s, found %s", lo,
                hi, found);
  }
  *out = d;
  return 0;
}

static int get_u32(loader_t *ld, const cJSON *obj, const char *parent,
                   const char *key, double min, double max, double def,
                   uint32_t *out) {
  double d;
  if (get_integer(ld, obj, parent, key, min, max, def, &d) != 0)
    return -1;
  *out = (uint32_t)d;
  return 0;
}

static int get_int(loader_t *ld, const cJSON *obj, const char *parent,
                   const char *key, double min, double max, double def,
                   int *out) {
  double d;
  if (get_integer(ld, obj, parent, key, min, max, def, &d) != 0)
    return -1;
  *out = (int)d;
  return 0;
}

static int get_bool(loader_t *ld, const cJSON *obj, const char *parent,
                    const char *key, int def, int *out) {
  json_path_t path;
  path_key(&path, parent, key);
  const cJSON *v = member(obj, key);
  if (v == NULL) {
    *out = def;
    return 0;
  }
  if (!cJSON_IsBool(v))
    return fail(ld, path.text,
                "must be true or false (without quotes), found %s",
                json_kind(v));
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return 0;
}

/* A string member that must be one of names; *out gets the index. */
static int get_choice(loader_t *ld, const cJSON *obj, const char *parent,
                      const char *key, const char *const *names, int def,
                      int *out) {
  json_path_t path;
  path_key(&path, parent, key);
  const cJSON *v = member(obj, key);
  char choices[256];
  list_join(choices, sizeof choices, names, "\"");
  if (v == NULL) {
    if (def < 0)
      return fail(ld, path.text, "missing; add it with one of %s", choices);
    *out = def;
    return 0;
  }
  if (cJSON_IsString(v)) {
    int index = list_find(names, v->valuestring);
    if (index >= 0) {
      *out = index;
      return 0;
    }
    char shown[64];
    return fail(ld, path.text, "must be one of %s, found \"%s\"", choices,
                printable(shown, sizeof shown, v->valuestring));
  }
  return fail(ld, path.text, "must be one of %s, found %s", choices,
              json_kind(v));
}

/* An object member: NULL when absent. */
static int get_object(loader_t *ld, const cJSON *obj, const char *parent,
                      const char *key, const cJSON **out) {
  json_path_t path;
  path_key(&path, parent, key);
  const cJSON *v = member(obj, key);
  *out = NULL;
  if (v == NULL)
    return 0;
  if (!cJSON_IsObject(v))
    return fail(ld, path.text, "must be an object { ... }, found %s",
                json_kind(v));
  *out = v;
  return 0;
}

static int get_array(loader_t *ld, const cJSON *obj, const char *key,
                     const char *example, const cJSON **out) {
  const cJSON *v = member(obj, key);
  *out = NULL;
  if (v == NULL)
    return 0;
  if (!cJSON_IsArray(v))
    return fail(ld, key, "must be an array such as %s, found %s", example,
                json_kind(v));
  *out = v;
  return 0;
}

/* The element at path must be an object with only the allowed keys. */
static int check_element(loader_t *ld, const cJSON *item, const char *path,
                         const char *const *allowed, const char *what) {
  if (!cJSON_IsObject(item))
    return fail(ld, path, "must be an object { ... } describing %s, found %s",
                what, json_kind(item));
  return check_keys(ld, item, path, allowed, what);
}

/* ---- sections -------------------------------------------------------- */

static const char *const TOP_KEYS[] = {
    "name", "log", "runtime_dir", "shutdown", "work", "cores", "plugins",
    "services", "watchdog", "metrics", NULL};
static const char *const LOG_KEYS[] = {"level", "file", NULL};
static const char *const SHUTDOWN_KEYS[] = {"drain_timeout_ms", NULL};
static const char *const WORK_KEYS[] = {"threads", "queue_limit", NULL};
static const char *const WATCHDOG_KEYS[] = {"stall_warn_ms", NULL};
static const char *const METRICS_KEYS[] = {
    "address", "max_connections", "timeout_ms", "callback_sample", NULL};
static const char *const CORE_KEYS[] = {"name", "threads", "backend", NULL};
static const char *const PLUGIN_KEYS[] = {"name", "path", "settings", NULL};
static const char *const SERVER_KEYS[] = {"name",
                                          "type",
                                          "core",
                                          "plugin",
                                          "address",
                                          "framing",
                                          "max_recv_bytes",
                                          "max_packet_bytes",
                                          "send_queue_limit_bytes",
                                          "idle_timeout_ms",
                                          "incomplete_timeout_ms",
                                          "close_linger_ms",
                                          "tcp_nodelay",
                                          "max_sessions",
                                          "backlog",
                                          "transport",
                                          "websocket",
                                          "handshake_timeout_ms",
                                          "tls",
                                          NULL};
static const char *const CLIENT_KEYS[] = {"name",
                                          "type",
                                          "core",
                                          "plugin",
                                          "address",
                                          "framing",
                                          "max_recv_bytes",
                                          "max_packet_bytes",
                                          "send_queue_limit_bytes",
                                          "idle_timeout_ms",
                                          "incomplete_timeout_ms",
                                          "close_linger_ms",
                                          "tcp_nodelay",
                                          "tls",
                                          "sessions",
                                          "connect_timeout_ms",
                                          "reconnect",
                                          "websocket",
                                          "handshake_timeout_ms",
                                          "transport",
                                          NULL};
static const char *const SERVER_ONLY_KEYS[] = {"max_sessions", "backlog", NULL};
static const char *const CLIENT_ONLY_KEYS[] = {"sessions", "connect_timeout_ms",
                                               "reconnect", NULL};
static const char *const RECONNECT_KEYS[] = {"min_delay_ms", "max_delay_ms",
                                             "jitter", "reset_after_ms", NULL};
static const char *const SERVICE_TYPES[] = {"server", "client", NULL};
static const char *const FRAMINGS[] = {"raw", "packet", NULL};
static const char *const TRANSPORTS[] = {"tcp", "websocket", NULL};
static const char *const WEBSOCKET_KEYS[] = {"path", "origins", "subprotocol",
                                             "max_request_bytes",
                                             "ping_interval_ms", NULL};
/* A client service's "websocket": what its upgrade request says. */
static const char *const WEBSOCKET_CLIENT_KEYS[] = {
    "path", "origin", "subprotocol", "host", "ping_interval_ms", NULL};
static const char *const TLS_SERVER_KEYS[] = {"cert_file", "key_file",
                                              "ca_file", NULL};
static const char *const TLS_CLIENT_KEYS[] = {"ca_file", "server_name",
                                              "cert_file", "key_file", NULL};
/* The backends of this platform, as core_backend_parse knows them. */
#ifdef _WIN32
static const char *const BACKENDS[] = {"iocp", NULL};
#else
static const char *const BACKENDS[] = {"epoll", "io_uring", NULL};
#endif
static const char *const LOG_LEVELS[] = {"debug", "info", "warn", "error",
                                         NULL};
static const int LOG_LEVEL_VALUES[] = {LOG_DEBUG, LOG_INFO, LOG_WARN,
                                       LOG_ERROR};

static int parse_log(loader_t *ld, const cJSON *root, config_t *c) {
  const cJSON *log;
  if (get_object(ld, root, "", "log", &log) != 0)
    return -1;
  c->log_level = LOG_INFO;
  if (log == NULL)
    return 0;
  if (check_keys(ld, log, "log", LOG_KEYS, "\"log\"") != 0)
    return -1;
  int level;
  if (get_choice(ld, log, "log", "level", LOG_LEVELS, 1, &level) != 0)
    return -1;
  c->log_level = LOG_LEVEL_VALUES[level];
  const cJSON *file = member(log, "file");
  if (file == NULL || cJSON_IsNull(file))
    return 0;
  char *given;
  if (get_text(ld, log, "log", "file", 0, NULL,
               "give a log file path, or null for stderr", &given) != 0)
    return -1;
  c->log_file = path_resolve(c->dir, given);
  free(given);
  return c->log_file != NULL ? 0 : fail_memory(ld, "log.file");
}

/* "watchdog": {"stall_warn_ms": 100}; 0 turns the watchdog off. */
static int parse_watchdog(loader_t *ld, const cJSON *root, config_t *c) {
  const cJSON *watchdog;
  if (get_object(ld, root, "", "watchdog", &watchdog) != 0)
    return -1;
  c->stall_warn_ms = 100;
  if (watchdog != NULL &&
      (check_keys(ld, watchdog, "watchdog", WATCHDOG_KEYS, "\"watchdog\"") !=
           0 ||
       get_u32(ld, watchdog, "watchdog", "stall_warn_ms", 0, 3600000.0, 100,
               &c->stall_warn_ms) != 0))
    return -1;
  return 0;
}

/* "metrics" (SPEC section 15): the Prometheus endpoint, off when absent. */
static int parse_metrics(loader_t *ld, const cJSON *root, config_t *c) {
  const cJSON *metrics;
  if (get_object(ld, root, "", "metrics", &metrics) != 0)
    return -1;
  c->metrics_max_connections = 8;
  c->metrics_timeout_ms = 5000;
  c->metrics_callback_sample = 16;
  if (metrics == NULL)
    return 0;
  if (check_keys(ld, metrics, "metrics", METRICS_KEYS, "\"metrics\"") != 0 ||
      get_u32(ld, metrics, "metrics", "max_connections", 1, 64, 8,
              &c->metrics_max_connections) != 0 ||
      get_u32(ld, metrics, "metrics", "timeout_ms", 100, 600000, 5000,
              &c->metrics_timeout_ms) != 0 ||
      get_u32(ld, metrics, "metrics", "callback_sample", 1, 65536, 16,
              &c->metrics_callback_sample) != 0 ||
      get_text(ld, metrics, "metrics", "address", 1, NULL,
               "give the address Prometheus scrapes, such as "
               "\"127.0.0.1:9100\"",
               &c->metrics_address_text) != 0)
    return -1;
  char why[256];
  if (address_parse(c->metrics_address_text, &c->metrics_address, why,
                    sizeof why) != 0)
    return fail(ld, "metrics.address", "%s", why);
  if (address_port(&c->metrics_address) == 0)
    return fail(ld, "metrics.address",
                "port 0 would pick a port Prometheus cannot know; give a "
                "fixed port such as \"127.0.0.1:9100\"");
  return 0;
}

static int parse_top(loader_t *ld, const cJSON *root, config_t *c) {
  if (check_keys(ld, root, "", TOP_KEYS, "the top level") != 0)
    return -1;
  if (get_name(ld, root, "", "name", 0, "iocphost",
               "give the instance a name such as \"iocphost\"", &c->name) != 0)
    return -1;
  if (parse_log(ld, root, c) != 0)
    return -1;
  char *runtime;
  if (get_text(ld, root, "", "runtime_dir", 0, "run",
               "give a folder for the control socket and plugin copies",
               &runtime) != 0)
    return -1;
  c->runtime_dir = path_resolve(c->dir, runtime);
  free(runtime);
  if (c->runtime_dir == NULL)
    return fail_memory(ld, "runtime_dir");
  const cJSON *shutdown;
  if (get_object(ld, root, "", "shutdown", &shutdown) != 0)
    return -1;
  c->drain_timeout_ms = 10000;
  if (shutdown != NULL &&
      (check_keys(ld, shutdown, "shutdown", SHUTDOWN_KEYS, "\"shutdown\"") !=
           0 ||
       get_u32(ld, shutdown, "shutdown", "drain_timeout_ms", 0, 86400000.0,
               10000, &c->drain_timeout_ms) != 0))
    return -1;
  const cJSON *work;
  if (get_object(ld, root, "", "work", &work) != 0)
    return -1;
  c->work_threads = 4;
  c->work_queue_limit = 1024;
  if (work != NULL &&
      (check_keys(ld, work, "work", WORK_KEYS, "\"work\"") != 0 ||
       get_int(ld, work, "work", "threads", 0, 1024, 4, &c->work_threads) !=
           0 ||
       get_u32(ld, work, "work", "queue_limit", 1, 16777216.0, 1024,
               &c->work_queue_limit) != 0))
    return -1;
  if (parse_watchdog(ld, root, c) != 0 || parse_metrics(ld, root, c) != 0)
    return -1;
  return 0;
}

/* Names must be unique within their section. */
static int check_unique(loader_t *ld, const char *section, const char *what,
                        size_t index, char *const *names, size_t stride) {
  const char *name = *(char *const *)((const char *)names + index * stride);
  for (size_t j = 0; j < index; j++) {
    const char *other = *(char *const *)((const char *)names + j * stride);
    if (strcmp(other, name) == 0)
      return fail(ld, NULL,
                  "%s[%lu].name: duplicate %s name \"%s\" (also at "
                  "%s[%lu].name); give each %s its own name",
                  section, (unsigned long)index, what, name, section,
                  (unsigned long)j, what);
  }
  return 0;
}

/* cores[].backend: omitted, the platform's default (CORE_BACKEND_DEFAULT). */
static int get_backend(loader_t *ld, const cJSON *item, const char *parent,
                       core_backend_t *out) {
  int index;
  *out = CORE_BACKEND_DEFAULT;
  if (member(item, "backend") == NULL)
    return 0;
  if (get_choice(ld, item, parent, "backend", BACKENDS, -1, &index) != 0)
    return -1;
  return core_backend_parse(BACKENDS[index], out) == 0
             ? 0
             : fail(ld, parent, "backend \"%s\" is unknown to the engine",
                    BACKENDS[index]);
}

static int parse_cores(loader_t *ld, const cJSON *root, config_t *c) {
  const cJSON *cores;
  if (get_array(ld, root, "cores", "[ { \"name\": \"main\", \"threads\": 0 } ]",
                &cores) != 0)
    return -1;
  size_t count = cores != NULL ? (size_t)cJSON_GetArraySize(cores) : 1;
  if (count == 0)
    return fail(ld, "cores",
                "is empty; list at least one core, or leave \"cores\" out to "
                "get one core \"main\" with one thread per CPU");
  c->cores = calloc(count, sizeof *c->cores);
  if (c->cores == NULL)
    return fail_memory(ld, "cores");
  c->core_count = count;
  if (cores == NULL) {
    c->cores[0].name = dup_string("main");
    c->cores[0].threads = 0;
    return c->cores[0].name != NULL ? 0 : fail_memory(ld, "cores");
  }
  size_t i = 0;
  for (const cJSON *item = cores->child; item != NULL; item = item->next, i++) {
    json_path_t path;
    path_index(&path, "cores", i);
    config_core_t *core = &c->cores[i];
    if (check_element(ld, item, path.text, CORE_KEYS, "a core") != 0 ||
        get_name(ld, item, path.text, "name", 1, NULL,
                 "give the core a name such as \"main\"", &core->name) != 0 ||
        get_int(ld, item, path.text, "threads", 0, 1024, 0, &core->threads) !=
            0 ||
        get_backend(ld, item, path.text, &core->backend) != 0 ||
        check_unique(ld, "cores", "core", i, &c->cores[0].name,
                     sizeof *c->cores) != 0)
      return -1;
  }
  return 0;
}

/* Finds the plugin file: the path as given, then with the platform suffix,
 * then with "lib" and the suffix, so one config serves every platform. */
static int resolve_plugin(loader_t *ld, const char *path_text,
                          const char *given, char **out) {
  char *base_path = path_resolve(ld->dir, given);
  if (base_path == NULL)
    return fail_memory(ld, path_text);
  char *candidates[3] = {base_path, NULL, NULL};
  size_t count = 1;
  if (!ends_with(base_path, PLUGIN_SUFFIX)) {
    size_t base = path_base_offset(base_path);
    candidates[1] = dup_printf("%s%s", base_path, PLUGIN_SUFFIX);
    candidates[2] = dup_printf("%.*slib%s%s", (int)base, base_path,
                               base_path + base, PLUGIN_SUFFIX);
    count = 3;
    if (candidates[1] == NULL || candidates[2] == NULL) {
      free(candidates[1]);
      free(candidates[2]);
      free(base_path);
      return fail_memory(ld, path_text);
    }
  }
  int rc = -1;
  for (size_t i = 0; i < count; i++) {
    if (is_regular_file(candidates[i])) {
      *out = candidates[i];
      candidates[i] = NULL;
      rc = 0;
      break;
    }
  }
  if (rc != 0) {
    char shown[256];
    printable(shown, sizeof shown, given);
    if (count == 1)
      fail(ld, path_text,
           "plugin file \"%s\" not found (looked for %s); build the plugin "
           "or fix the path (relative paths start at the config file's "
           "folder)",
           shown, candidates[0]);
    else
      fail(ld, path_text,
           "plugin file \"%s\" not found (looked for %s, %s and %s); build "
           "the plugin or fix the path (relative paths start at the config "
           "file's folder)",
           shown, candidates[0], candidates[1], candidates[2]);
  }
  for (size_t i = 0; i < count; i++)
    free(candidates[i]);
  return rc;
}

static int parse_plugins(loader_t *ld, const cJSON *root, config_t *c) {
  const cJSON *plugins;
  if (get_array(ld, root, "plugins",
                "[ { \"name\": \"echo\", \"path\": \"plugins/echo\" } ]",
                &plugins) != 0)
    return -1;
  if (plugins == NULL)
    return 0;
  size_t count = (size_t)cJSON_GetArraySize(plugins);
  if (count == 0)
    return 0;
  c->plugins = calloc(count, sizeof *c->plugins);
  if (c->plugins == NULL)
    return fail_memory(ld, "plugins");
  c->plugin_count = count;
  size_t i = 0;
  for (const cJSON *item = plugins->child; item != NULL;
       item = item->next, i++) {
    json_path_t path, field;
    path_index(&path, "plugins", i);
    config_plugin_t *plugin = &c->plugins[i];
    if (check_element(ld, item, path.text, PLUGIN_KEYS, "a plugin") != 0 ||
        get_name(ld, item, path.text, "name", 1, NULL,
                 "give the plugin the name services will use for it",
                 &plugin->name) != 0 ||
        check_unique(ld, "plugins", "plugin", i, &c->plugins[0].name,
                     sizeof *c->plugins) != 0 ||
        get_text(ld, item, path.text, "path", 1, NULL,
                 "give the plugin's file, with or without .so/.dll",
                 &plugin->path_given) != 0)
      return -1;
    path_key(&field, path.text, "path");
    if (resolve_plugin(ld, field.text, plugin->path_given, &plugin->path) != 0)
      return -1;
    const cJSON *settings;
    if (get_object(ld, item, path.text, "settings", &settings) != 0)
      return -1;
    path_key(&field, path.text, "settings");
    if (settings == NULL) {
      plugin->settings_json = dup_string("{}");
    } else {
      char *printed = cJSON_PrintUnformatted(settings);
      plugin->settings_json = printed != NULL ? dup_string(printed) : NULL;
      cJSON_free(printed);
    }
    if (plugin->settings_json == NULL)
      return fail_memory(ld, field.text);
  }
  return 0;
}

static int find_name(const char *name, char *const *names, size_t count,
                     size_t stride) {
  for (size_t i = 0; i < count; i++)
    if (strcmp(*(char *const *)((const char *)names + i * stride), name) == 0)
      return (int)i;
  return -1;
}

/* "a, b, c" of the names in a section, for "unknown ..." messages. */
static const char *names_join(char *buf, size_t len, char *const *names,
                              size_t count, size_t stride) {
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < count; i++) {
    const char *name = *(char *const *)((const char *)names + i * stride);
    int n =
        snprintf(buf + used, len - used, "%s\"%s\"", i > 0 ? ", " : "", name);
    if (n < 0 || (size_t)n >= len - used) {
      if (len >= 4)
        memcpy(buf + len - 4, "...", 4);
      break;
    }
    used += (size_t)n;
  }
  return buf;
}

/* One header value of a client's upgrade request (websocket.origin,
 * .host): at most 255 visible characters, no spaces. */
static int check_header_value(loader_t *ld, const char *parent, const char *key,
                              const char *value, const char *example) {
  json_path_t p;
  path_key(&p, parent, key);
  size_t len = strlen(value);
  int bad = len > 255;
  for (size_t i = 0; i < len && !bad; i++)
    bad = (unsigned char)value[i] <= 0x20 || value[i] == 0x7f;
  if (bad)
    return fail(ld, p.text,
                "must be at most 255 characters with no spaces or control "
                "characters, such as %s",
                example);
  return 0;
}

/* A client service's "websocket" object: its upgrade request's path
 * (a query allowed), Origin, subprotocol and Host, and its pings. */
static int parse_websocket_client(loader_t *ld, const cJSON *ws,
                                  const char *wpath, config_websocket_t *w) {
  if (check_keys(ld, ws, wpath, WEBSOCKET_CLIENT_KEYS,
                 "a client service's \"websocket\"") != 0 ||
      get_text(ld, ws, wpath, "path", 0, "/",
               "give the path the server upgrades on, such as \"/\" or "
               "\"/play\"",
               &w->path) != 0 ||
      (!cJSON_IsNull(member(ws, "origin")) &&
       get_text(ld, ws, wpath, "origin", 0, NULL,
                "give the Origin to send, such as \"https://game.example\", "
                "or null for none",
                &w->origin) != 0) ||
      (!cJSON_IsNull(member(ws, "subprotocol")) &&
       get_text(ld, ws, wpath, "subprotocol", 0, NULL,
                "give the subprotocol to ask for, or null for none",
                &w->subprotocol) != 0) ||
      (!cJSON_IsNull(member(ws, "host")) &&
       get_text(ld, ws, wpath, "host", 0, NULL,
                "give the Host to send, such as \"game.example\", or null "
                "for the address",
                &w->host) != 0) ||
      get_u32(ld, ws, wpath, "ping_interval_ms", 0, MS_MAX, 0,
              &w->ping_interval_ms) != 0)
    return -1;
  /* The server's answer (not configurable): as a request's default cap. */
  w->max_request_bytes = 8192;
  json_path_t p;
  path_key(&p, wpath, "path");
  size_t len = strlen(w->path);
  int bad = w->path[0] != '/' || len > 1024;
  for (size_t i = 0; i < len && !bad; i++)
    bad = (unsigned char)w->path[i] <= 0x20 || w->path[i] == 0x7f;
  if (bad)
    return fail(ld, p.text,
                "must start with '/' and hold no spaces or control "
                "characters (at most 1024), such as \"/\" or "
                "\"/play?room=1\"");
  path_key(&p, wpath, "subprotocol");
  if (w->subprotocol && (strlen(w->subprotocol) > 64 ||
                         strpbrk(w->subprotocol, " ,;\t\r\n\"") != NULL))
    return fail(ld, p.text,
                "must be one token of at most 64 characters (no spaces, "
                "commas or quotes), such as \"game.v1\"");
  if (w->origin && check_header_value(ld, wpath, "origin", w->origin,
                                      "\"https://game.example\"") != 0)
    return -1;
  if (w->host && check_header_value(ld, wpath, "host", w->host,
                                    "\"game.example\" or "
                                    "\"game.example:8080\"") != 0)
    return -1;
  return 0;
}

/* SPEC section 14: "transport", and for "websocket" its object. */
static int parse_transport(loader_t *ld, const cJSON *item, const char *path,
                           int server, config_service_t *s) {
  json_path_t wpath;
  path_key(&wpath, path, "websocket");
  int transport;
  if (get_choice(ld, item, path, "transport", TRANSPORTS, 0, &transport) != 0)
    return -1;
  s->transport = transport == 1 ? CONFIG_TRANSPORT_WEBSOCKET
                                : CONFIG_TRANSPORT_TCP;
  /* SPEC section 14: a handshake always has a deadline (a peer that never
   * finishes one would hold its session and request buffer for good). */
  if (get_u32(ld, item, path, "handshake_timeout_ms", 1, MS_MAX, 10000,
              &s->handshake_timeout_ms) != 0)
    return -1;
  const cJSON *ws;
  if (get_object(ld, item, path, "websocket", &ws) != 0)
    return -1;
  if (ws && s->transport != CONFIG_TRANSPORT_WEBSOCKET)
    return fail(ld, wpath.text,
                "given, but \"transport\" is \"tcp\"; add \"transport\": "
                "\"websocket\" or remove \"websocket\"");
  if (s->transport != CONFIG_TRANSPORT_WEBSOCKET)
    return 0;
  config_websocket_t *w = &s->websocket;
  static const cJSON empty = {0};
  if (!ws)
    ws = &empty;
  if (!server)
    return parse_websocket_client(ld, ws, wpath.text, w);
  if (check_keys(ld, ws, wpath.text, WEBSOCKET_KEYS, "\"websocket\"") != 0 ||
      get_text(ld, ws, wpath.text, "path", 0, "/",
               "give the path clients upgrade on, such as \"/\" or "
               "\"/play\"",
               &w->path) != 0 ||
      (!cJSON_IsNull(member(ws, "subprotocol")) &&
       get_text(ld, ws, wpath.text, "subprotocol", 0, NULL,
                "give the subprotocol clients must offer, or null for none",
                &w->subprotocol) != 0) ||
      get_u32(ld, ws, wpath.text, "max_request_bytes", 256, 65536, 8192,
              &w->max_request_bytes) != 0 ||
      get_u32(ld, ws, wpath.text, "ping_interval_ms", 0, MS_MAX, 0,
              &w->ping_interval_ms) != 0)
    return -1;
  json_path_t p;
  path_key(&p, wpath.text, "path");
  if (w->path[0] != '/' || strpbrk(w->path, "? \t\r\n") != NULL)
    return fail(ld, p.text,
                "must start with '/' and hold no '?' or spaces, such as "
                "\"/\" or \"/play\"");
  path_key(&p, wpath.text, "subprotocol");
  if (w->subprotocol &&
      (strlen(w->subprotocol) > 64 ||
       strpbrk(w->subprotocol, " ,;\t\r\n\"") != NULL))
    return fail(ld, p.text,
                "must be one token of at most 64 characters (no spaces, "
                "commas or quotes), such as \"game.v1\"");
  path_key(&p, wpath.text, "origins");
  const cJSON *origins = member(ws, "origins");
  if (origins && !cJSON_IsNull(origins)) {
    if (!cJSON_IsArray(origins))
      return fail(ld, p.text,
                  "must be an array of origins such as "
                  "[\"https://game.example\"], found %s",
                  json_kind(origins));
    size_t n = (size_t)cJSON_GetArraySize(origins);
    w->origins = n ? calloc(n, sizeof *w->origins) : NULL;
    if (n && !w->origins)
      return fail_memory(ld, p.text);
    size_t i = 0;
    for (const cJSON *o = origins->child; o; o = o->next, i++) {
      json_path_t op;
      snprintf(op.text, sizeof op.text, "%.200s[%lu]", p.text,
               (unsigned long)i);
      if (!cJSON_IsString(o) || o->valuestring[0] == '\0' ||
          strpbrk(o->valuestring, "\r\n") != NULL)
        return fail(ld, op.text,
                    "must be an origin such as \"https://game.example\" "
                    "(scheme, host and port as browsers send it), found %s",
                    json_kind(o));
      if (!(w->origins[i] = dup_string(o->valuestring)))
        return fail_memory(ld, op.text);
      w->origin_count = i + 1;
    }
  }
  return 0;
}

/* One path of "tls": resolved against the config's folder; NULL when
 * absent or null. */
static int get_tls_path(loader_t *ld, const cJSON *tls, const char *tpath,
                        const char *key, const char *hint, char **out) {
  *out = NULL;
  if (cJSON_IsNull(member(tls, key)))
    return 0;
  char *given;
  if (get_text(ld, tls, tpath, key, 0, NULL, hint, &given) != 0)
    return -1;
  if (!given)
    return 0;
  *out = path_resolve(ld->dir, given);
  free(given);
  json_path_t p;
  path_key(&p, tpath, key);
  return *out != NULL ? 0 : fail_memory(ld, p.text);
}

/* SPEC section 14: "tls" under the transport. What each role needs is
 * checked here; the files themselves when the host opens. */
static int parse_tls(loader_t *ld, const cJSON *item, const char *path,
                     int server, config_service_t *s) {
  const cJSON *tls;
  if (get_object(ld, item, path, "tls", &tls) != 0)
    return -1;
  if (!tls)
    return 0;
  json_path_t tpath, p;
  path_key(&tpath, path, "tls");
  config_tls_t *t = &s->tls;
  t->enabled = 1;
  if (check_keys(ld, tls, tpath.text, server ? TLS_SERVER_KEYS : TLS_CLIENT_KEYS,
                 server ? "a server service's \"tls\""
                        : "a client service's \"tls\"") != 0 ||
      get_tls_path(ld, tls, tpath.text, "cert_file",
                   "give the PEM certificate chain file (leaf first)",
                   &t->cert_file) != 0 ||
      get_tls_path(ld, tls, tpath.text, "key_file",
                   "give the PEM private key file of the certificate",
                   &t->key_file) != 0 ||
      get_tls_path(ld, tls, tpath.text, "ca_file",
                   "give a PEM file of CA certificates, or null", &t->ca_file) != 0)
    return -1;
  if (server) {
    if (!t->cert_file) {
      path_key(&p, tpath.text, "cert_file");
      return missing(ld, p.text,
                     "a TLS server needs its certificate chain: give "
                     "\"cert_file\" (PEM, leaf first) and \"key_file\"");
    }
    if (!t->key_file) {
      path_key(&p, tpath.text, "key_file");
      return missing(ld, p.text,
                     "a TLS server needs the private key of cert_file: give "
                     "\"key_file\" (PEM)");
    }
    return 0;
  }
  if (get_text(ld, tls, tpath.text, "server_name", 0, NULL,
               "give the name the server's certificate must carry, such as "
               "\"game.example\" or \"127.0.0.1\"",
               &t->server_name) != 0)
    return -1;
  if (!t->ca_file) {
    path_key(&p, tpath.text, "ca_file");
    return missing(ld, p.text,
                   "a TLS client verifies the server: give \"ca_file\", a "
                   "PEM file of the CAs to trust");
  }
  if (!t->server_name) {
    path_key(&p, tpath.text, "server_name");
    return missing(ld, p.text,
                   "a TLS client verifies the server's name: give "
                   "\"server_name\", such as \"game.example\" or "
                   "\"127.0.0.1\"");
  }
  if (!t->cert_file != !t->key_file) {
    path_key(&p, tpath.text, t->cert_file ? "key_file" : "cert_file");
    return missing(ld, p.text,
                   "a client certificate needs both \"cert_file\" and "
                   "\"key_file\" (or neither)");
  }
  return 0;
}

static int parse_reconnect(loader_t *ld, const cJSON *item, const char *path,
                           config_service_t *s) {
  json_path_t rpath;
  path_key(&rpath, path, "reconnect");
  const cJSON *r = member(item, "reconnect");
  s->reconnect = 1;
  s->reconnect_min_delay_ms = 100;
  s->reconnect_max_delay_ms = 10000;
  s->reconnect_jitter = 0.2;
  s->reconnect_reset_after_ms = 0; /* the engine's default */
  if (r == NULL || cJSON_IsTrue(r))
    return 0;
  if (cJSON_IsFalse(r)) {
    s->reconnect = 0;
    return 0;
  }
  if (!cJSON_IsObject(r))
    return fail(ld, rpath.text,
                "must be an object { \"min_delay_ms\": 100, "
                "\"max_delay_ms\": 10000, \"jitter\": 0.2 } or false, found %s",
                json_kind(r));
  if (check_keys(ld, r, rpath.text, RECONNECT_KEYS, "\"reconnect\"") != 0 ||
      get_u32(ld, r, rpath.text, "min_delay_ms", 0, 86400000.0, 100,
              &s->reconnect_min_delay_ms) != 0 ||
      get_u32(ld, r, rpath.text, "max_delay_ms", 0, 86400000.0, 10000,
              &s->reconnect_max_delay_ms) != 0 ||
      get_u32(ld, r, rpath.text, "reset_after_ms", 0, 86400000.0, 0,
              &s->reconnect_reset_after_ms) != 0)
    return -1;
  const cJSON *jitter = member(r, "jitter");
  if (jitter != NULL) {
    json_path_t jpath;
    path_key(&jpath, rpath.text, "jitter");
    if (!cJSON_IsNumber(jitter))
      return fail(ld, jpath.text, "must be a number from 0 to 1, found %s",
                  json_kind(jitter));
    double d = jitter->valuedouble;
    if (!(d >= 0.0 && d <= 1.0)) {
      char found[32];
      format_number(found, sizeof found, d);
      return fail(ld, jpath.text,
                  "must be a number from 0 to 1 (a fraction of the delay), "
                  "found %s",
                  found);
    }
    s->reconnect_jitter = d;
  }
  if (s->reconnect_min_delay_ms > s->reconnect_max_delay_ms)
    return fail(ld, rpath.text,
                "min_delay_ms (%u) is greater than max_delay_ms (%u%s); make "
                "min_delay_ms the smaller one",
                (unsigned)s->reconnect_min_delay_ms,
                (unsigned)s->reconnect_max_delay_ms,
                member(r, "max_delay_ms") == NULL ? ", the default" : "");
  return 0;
}

static int parse_service(loader_t *ld, const cJSON *item, const char *path,
                         config_t *c, config_service_t *s) {
  if (!cJSON_IsObject(item))
    return fail(ld, path,
                "must be an object { ... } describing a service, found %s",
                json_kind(item));
  int type;
  if (get_choice(ld, item, path, "type", SERVICE_TYPES, -1, &type) != 0)
    return -1;
  s->type = type == 0 ? CONFIG_SERVICE_SERVER : CONFIG_SERVICE_CLIENT;
  int server = s->type == CONFIG_SERVICE_SERVER;

  /* A key that belongs to the other kind of service gets its own message:
   * "unknown key" would be misleading. */
  const char *const *foreign = server ? CLIENT_ONLY_KEYS : SERVER_ONLY_KEYS;
  for (const cJSON *m = item->child; m != NULL; m = m->next) {
    if (m->string != NULL && list_find(foreign, m->string) >= 0) {
      json_path_t kpath;
      path_key(&kpath, path, m->string);
      return fail(ld, kpath.text,
                  "only %s services have this key, and this one has "
                  "\"type\": \"%s\"; remove it or change the type",
                  server ? "client" : "server", server ? "server" : "client");
    }
  }
  if (check_keys(ld, item, path, server ? SERVER_KEYS : CLIENT_KEYS,
                 server ? "a server service" : "a client service") != 0)
    return -1;

  if (get_name(ld, item, path, "name", 1, NULL,
               "give the service a name such as \"game\"", &s->name) != 0)
    return -1;

  /* core: may be left out when there is exactly one. */
  char known[512] = "";
  json_path_t field;
  path_key(&field, path, "core");
  if (member(item, "core") == NULL && c->core_count == 1) {
    s->core = dup_string(c->cores[0].name);
    if (s->core == NULL)
      return fail_memory(ld, field.text);
  } else {
    names_join(known, sizeof known, &c->cores[0].name, c->core_count,
               sizeof *c->cores);
    if (member(item, "core") == NULL)
      return fail(ld, field.text,
                  "missing; this config has %lu cores (%s), so each service "
                  "must name the one it runs on",
                  (unsigned long)c->core_count, known);
    if (get_text(ld, item, path, "core", 1, NULL, "give the name of a core",
                 &s->core) != 0)
      return -1;
  }
  s->core_index =
      find_name(s->core, &c->cores[0].name, c->core_count, sizeof *c->cores);
  if (s->core_index < 0) {
    char shown[80];
    return fail(ld, field.text, "unknown core \"%s\"; use one of the cores: %s",
                printable(shown, sizeof shown, s->core), known);
  }

  path_key(&field, path, "plugin");
  if (get_text(ld, item, path, "plugin", 1, NULL,
               "name the plugin (from \"plugins\") whose sessions this "
               "service runs",
               &s->plugin) != 0)
    return -1;
  s->plugin_index =
      find_name(s->plugin, c->plugin_count > 0 ? &c->plugins[0].name : NULL,
                c->plugin_count, sizeof *c->plugins);
  if (s->plugin_index < 0) {
    char shown[80];
    printable(shown, sizeof shown, s->plugin);
    if (c->plugin_count == 0)
      return fail(ld, field.text,
                  "unknown plugin \"%s\"; \"plugins\" lists none, add it "
                  "there",
                  shown);
    names_join(known, sizeof known, &c->plugins[0].name, c->plugin_count,
               sizeof *c->plugins);
    return fail(ld, field.text,
                "unknown plugin \"%s\"; use one of the plugins (%s) or add "
                "it to \"plugins\"",
                shown, known);
  }

  path_key(&field, path, "address");
  if (get_text(ld, item, path, "address", 1, NULL,
               server ? "give the address to listen on, such as "
                        "\"0.0.0.0:7777\" or \"[::]:7777\""
                      : "give the address to connect to, such as "
                        "\"127.0.0.1:7000\" or \"[::1]:7000\"",
               &s->address_text) != 0)
    return -1;
  char why[256];
  /* address_parse quotes the text back in its reason. */
  if (address_parse(s->address_text, &s->address, why, sizeof why) != 0)
    return fail(ld, field.text, "%s", why);
  if (!server && address_port(&s->address) == 0)
    return fail(ld, field.text,
                "a client service cannot connect to port 0; give the port "
                "the other server listens on");

  int framing;
  if (get_choice(ld, item, path, "framing", FRAMINGS, 0, &framing) != 0)
    return -1;
  s->framing = framing == 0 ? CONFIG_FRAMING_RAW : CONFIG_FRAMING_PACKET;
  double queue_limit;
  if (get_u32(ld, item, path, "max_recv_bytes", 1, 67108864.0, 65536,
              &s->max_recv_bytes) != 0 ||
      get_u32(ld, item, path, "max_packet_bytes", 4, 65535, 65535,
              &s->max_packet_bytes) != 0 ||
      get_integer(ld, item, path, "send_queue_limit_bytes", 1, 1099511627776.0,
                  1048576, &queue_limit) != 0 ||
      get_u32(ld, item, path, "idle_timeout_ms", 0, MS_MAX, 0,
              &s->idle_timeout_ms) != 0 ||
      get_u32(ld, item, path, "incomplete_timeout_ms", 0, MS_MAX, 30000,
              &s->incomplete_timeout_ms) != 0 ||
      get_u32(ld, item, path, "close_linger_ms", 0, MS_MAX, 2000,
              &s->close_linger_ms) != 0 ||
      get_bool(ld, item, path, "tcp_nodelay", 1, &s->tcp_nodelay) != 0)
    return -1;
  s->send_queue_limit_bytes = (uint64_t)queue_limit;
  if (s->framing == CONFIG_FRAMING_PACKET &&
      s->max_recv_bytes < s->max_packet_bytes) {
    path_key(&field, path, "max_recv_bytes");
    return fail(ld, field.text,
                "%u is smaller than max_packet_bytes (%u), so the largest "
                "packet could never be received; raise max_recv_bytes or "
                "lower max_packet_bytes",
                (unsigned)s->max_recv_bytes, (unsigned)s->max_packet_bytes);
  }

  if (parse_transport(ld, item, path, server, s) != 0)
    return -1;
  if (parse_tls(ld, item, path, server, s) != 0)
    return -1;
  if (server)
    return get_u32(ld, item, path, "max_sessions", 1, 10000000.0, 10000,
                   &s->max_sessions) != 0 ||
                   get_int(ld, item, path, "backlog", 1, 65535, 511,
                           &s->backlog) != 0
               ? -1
               : 0;
  if (get_u32(ld, item, path, "sessions", 1, 65535, 1, &s->sessions) != 0 ||
      get_u32(ld, item, path, "connect_timeout_ms", 1, MS_MAX, 5000,
              &s->connect_timeout_ms) != 0)
    return -1;
  return parse_reconnect(ld, item, path, s);
}

/* Two listeners conflict on the same port when their addresses are equal or
 * either is the wildcard of the same family; port 0 (any free port) never
 * conflicts. */
static int addresses_conflict(const address_t *a, const address_t *b) {
  if (address_family(a) != address_family(b))
    return 0;
  uint16_t port = address_port(a);
  if (port == 0 || port != address_port(b))
    return 0;
  if (address_family(a) == AF_INET) {
    uint32_t x = a->u.v4.sin_addr.s_addr, y = b->u.v4.sin_addr.s_addr;
    return x == y || x == 0 || y == 0; /* 0 is INADDR_ANY */
  }
  static const unsigned char any6[16] = {0};
  const unsigned char *x = (const unsigned char *)&a->u.v6.sin6_addr;
  const unsigned char *y = (const unsigned char *)&b->u.v6.sin6_addr;
  return memcmp(x, y, 16) == 0 || memcmp(x, any6, 16) == 0 ||
         memcmp(y, any6, 16) == 0;
}

static int parse_services(loader_t *ld, const cJSON *root, config_t *c) {
  const cJSON *services;
  if (get_array(ld, root, "services",
                "[ { \"name\": \"game\", \"type\": \"server\", ... } ]",
                &services) != 0)
    return -1;
  if (services == NULL)
    return 0;
  size_t count = (size_t)cJSON_GetArraySize(services);
  if (count == 0)
    return 0;
  c->services = calloc(count, sizeof *c->services);
  if (c->services == NULL)
    return fail_memory(ld, "services");
  c->service_count = count;
  size_t i = 0;
  for (const cJSON *item = services->child; item != NULL;
       item = item->next, i++) {
    json_path_t path;
    path_index(&path, "services", i);
    config_service_t *s = &c->services[i];
    if (parse_service(ld, item, path.text, c, s) != 0 ||
        check_unique(ld, "services", "service", i, &c->services[0].name,
                     sizeof *c->services) != 0)
      return -1;
    if (s->type != CONFIG_SERVICE_SERVER)
      continue;
    for (size_t j = 0; j < i; j++) {
      const config_service_t *other = &c->services[j];
      if (other->type == CONFIG_SERVICE_SERVER &&
          addresses_conflict(&s->address, &other->address)) {
        char a[80], b[80];
        return fail(ld, NULL,
                    "services[%lu].address: \"%s\" overlaps \"%s\" of "
                    "server service \"%s\" (services[%lu].address); two "
                    "servers cannot listen on the same port, give one "
                    "another port",
                    (unsigned long)i, printable(a, sizeof a, s->address_text),
                    printable(b, sizeof b, other->address_text), other->name,
                    (unsigned long)j);
      }
    }
    if (c->metrics_address_text &&
        addresses_conflict(&s->address, &c->metrics_address)) {
      char a[80], b[80];
      return fail(ld, NULL,
                  "metrics.address: \"%s\" overlaps \"%s\" of server "
                  "service \"%s\" (services[%lu].address); the metrics "
                  "endpoint needs a port of its own, give it another port",
                  printable(a, sizeof a, c->metrics_address_text),
                  printable(b, sizeof b, s->address_text), s->name,
                  (unsigned long)i);
    }
  }
  return 0;
}

/* ---- text to tree ---------------------------------------------------- */

static void line_column(const char *text, size_t offset, size_t *line,
                        size_t *column) {
  *line = 1;
  *column = 1;
  for (size_t i = 0; i < offset; i++) {
    unsigned char ch = (unsigned char)text[i];
    if (ch == '\n') {
      (*line)++;
      *column = 1;
    } else if ((ch & 0xC0) != 0x80) { /* count characters, not bytes */
      (*column)++;
    }
  }
}

static int is_json_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* cJSON lets a raw line break or tab stand inside a string, which JSON
 * forbids; a string left open then swallows the next line and the error
 * appears far from its cause. Returns the offset of the opening quote of
 * the first such string before limit, or (size_t)-1. */
static size_t find_open_string(const char *text, size_t limit) {
  size_t quote = 0;
  int in_string = 0;
  for (size_t i = 0; i < limit; i++) {
    unsigned char ch = (unsigned char)text[i];
    if (!in_string) {
      if (ch == '"') {
        in_string = 1;
        quote = i;
      }
    } else if (ch == '\\') {
      i++;
    } else if (ch == '"') {
      in_string = 0;
    } else if (ch < 0x20) {
      return quote;
    }
  }
  return (size_t)-1;
}

/* cJSON reports a bad object key (where a '"' was expected: after '{' or
 * ',' inside an object) one character past the offending one. Move back
 * when that is the case, so "trailing comma" points at the '}'. */
static size_t fix_error_offset(const char *text, size_t offset) {
  if (offset == 0)
    return offset;
  char bad = text[offset - 1];
  if (is_json_space(bad) || bad == '"')
    return offset;
  size_t before = offset - 1;
  while (before > 0 && is_json_space(text[before - 1]))
    before--;
  if (before == 0 || (text[before - 1] != '{' && text[before - 1] != ','))
    return offset;
  /* Only inside an object: find the innermost open bracket. */
  char stack[CJSON_NESTING_LIMIT + 1];
  size_t depth = 0;
  int in_string = 0;
  for (size_t i = 0; i < before; i++) {
    char ch = text[i];
    if (in_string) {
      if (ch == '\\')
        i++;
      else if (ch == '"')
        in_string = 0;
    } else if (ch == '"') {
      in_string = 1;
    } else if (ch == '{' || ch == '[') {
      if (depth == sizeof stack)
        return offset;
      stack[depth++] = ch;
    } else if ((ch == '}' || ch == ']') && depth > 0) {
      depth--;
    }
  }
  return !in_string && depth > 0 && stack[depth - 1] == '{' ? offset - 1
                                                            : offset;
}

#define SYNTAX_HINT                                                            \
  "look for a missing or extra comma, quote or bracket (JSON allows no "       \
  "comments and no trailing commas)"

static int syntax_error(loader_t *ld, const char *text, size_t len,
                        size_t offset, const char *what, const char *hint) {
  size_t line, column;
  line_column(text, offset, &line, &column);
  char near[32];
  size_t n = 0;
  for (size_t i = offset;
       i < len && n + 1 < sizeof near && text[i] != '\n' && text[i] != '\r';
       i++) {
    unsigned char ch = (unsigned char)text[i];
    near[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
  }
  near[n] = '\0';
  if (n == 0)
    return fail(ld, NULL, "line %lu, column %lu: %s at the end of the line; %s",
                (unsigned long)line, (unsigned long)column, what, hint);
  return fail(ld, NULL, "line %lu, column %lu: %s near '%s'; %s",
              (unsigned long)line, (unsigned long)column, what, near, hint);
}

static cJSON *parse_json(loader_t *ld, const char *text, size_t len) {
  size_t start = 0;
  /* Editors on Windows like to start UTF-8 files with a byte-order mark. */
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
    start = 3;
  size_t first = start;
  while (first < len && is_json_space(text[first]))
    first++;
  if (first == len) {
    fail(ld, NULL,
         "the file is empty; it must hold one JSON object such as "
         "{ \"plugins\": [...], \"services\": [...] }");
    return NULL;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text + start, len - start, &end, 0);
  if (root == NULL) {
    size_t offset = end != NULL ? (size_t)(end - text) : start;
    if (offset > len)
      offset = len;
    size_t open = find_open_string(text + start, offset - start);
    if (open != (size_t)-1) {
      syntax_error(ld, text + start, len - start, open,
                   "string not closed on its line",
                   "end it with a '\"' before the line break");
      return NULL;
    }
    offset = start + fix_error_offset(text + start, offset - start);
    syntax_error(ld, text + start, len - start, offset - start, "invalid JSON",
                 SYNTAX_HINT);
    return NULL;
  }
  size_t open = find_open_string(text + start, len - start);
  if (open != (size_t)-1) {
    cJSON_Delete(root);
    syntax_error(ld, text + start, len - start, open,
                 "a line break, tab or other control character inside the "
                 "string starting",
                 "write it as \\n or \\t");
    return NULL;
  }
  size_t rest = end != NULL ? (size_t)(end - text) : len;
  while (rest < len && is_json_space(text[rest]))
    rest++;
  if (rest < len) {
    cJSON_Delete(root);
    syntax_error(ld, text + start, len - start, rest - start,
                 "text after the end of the JSON value",
                 "the file must hold exactly one object; remove the extra "
                 "text or a bracket closed too early");
    return NULL;
  }
  if (!cJSON_IsObject(root)) {
    fail(ld, NULL,
         "the top level must be a JSON object { ... }, found %s; wrap the "
         "settings in { }",
         json_kind(root));
    cJSON_Delete(root);
    return NULL;
  }
  return root;
}

/* ---- public ---------------------------------------------------------- */

/* identity_only: the top level alone (see config_load_identity). */
static int parse_scoped(const char *file, const char *text, size_t len,
                        int identity_only, config_t **out, char *err,
                        size_t err_len) {
  if (file == NULL)
    file = "(config)";
  loader_t ld = {.file = file, .err = err, .err_len = err_len};
  if (err != NULL && err_len > 0)
    err[0] = '\0';
  *out = NULL;
  if (text == NULL)
    len = 0;

  config_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return fail_memory(&ld, NULL);
  c->file = dup_string(file);
  c->dir = absolute_folder(file);
  if (c->file == NULL || c->dir == NULL) {
    config_free(c);
    return fail(&ld, NULL, "cannot find the folder of the config file");
  }
  ld.dir = c->dir;

  cJSON *root = parse_json(&ld, text != NULL ? text : "", len);
  int rc = -1;
  if (root != NULL && parse_top(&ld, root, c) == 0 &&
      (identity_only ||
       (parse_cores(&ld, root, c) == 0 && parse_plugins(&ld, root, c) == 0 &&
        parse_services(&ld, root, c) == 0)))
    rc = 0;
  cJSON_Delete(root);
  if (rc != 0) {
    config_free(c);
    return -1;
  }
  *out = c;
  return 0;
}

int config_parse(const char *file, const char *text, size_t len, config_t **out,
                 char *err, size_t err_len) {
  return parse_scoped(file, text, len, 0, out, err, err_len);
}

static int load_scoped(const char *file, int identity_only, config_t **out,
                       char *err, size_t err_len) {
  loader_t ld = {
      .file = file != NULL ? file : "(config)", .err = err, .err_len = err_len};
  *out = NULL;
  if (err != NULL && err_len > 0)
    err[0] = '\0';
  FILE *f = file != NULL ? fopen(file, "rb") : NULL;
  if (f == NULL)
    return fail(&ld, NULL,
                "cannot open the config file: %s; check the path, or pass "
                "another file with -c FILE",
                strerror(file != NULL ? errno : EINVAL));
  size_t cap = 4096, len = 0;
  char *text = malloc(cap);
  int read_error = 0, too_large = 0;
  while (text != NULL) {
    if (len == cap) {
      if (cap >= CONFIG_MAX_BYTES) {
        too_large = 1;
        break;
      }
      char *bigger = realloc(text, cap * 2);
      if (bigger == NULL) {
        free(text);
        text = NULL;
        break;
      }
      text = bigger;
      cap *= 2;
    }
    size_t n = fread(text + len, 1, cap - len, f);
    len += n;
    if (n == 0) {
      if (ferror(f))
        read_error = errno != 0 ? errno : EIO;
      break;
    }
  }
  fclose(f);
  if (text == NULL)
    return fail_memory(&ld, NULL);
  int rc;
  if (read_error != 0)
    rc = fail(&ld, NULL, "cannot read the config file: %s",
              strerror(read_error));
  else if (too_large)
    rc = fail(&ld, NULL,
              "the file is larger than %u MiB; is this really the config "
              "file?",
              CONFIG_MAX_BYTES / (1024u * 1024u));
  else
    rc = parse_scoped(file, text, len, identity_only, out, err, err_len);
  free(text);
  return rc;
}

int config_load(const char *file, config_t **out, char *err, size_t err_len) {
  return load_scoped(file, 0, out, err, err_len);
}

int config_load_identity(const char *file, config_t **out, char *err,
                         size_t err_len) {
  return load_scoped(file, 1, out, err, err_len);
}

void config_free(config_t *config) {
  if (config == NULL)
    return;
  for (size_t i = 0; i < config->core_count; i++)
    free(config->cores[i].name);
  free(config->cores);
  for (size_t i = 0; i < config->plugin_count; i++) {
    config_plugin_t *p = &config->plugins[i];
    free(p->name);
    free(p->path_given);
    free(p->path);
    free(p->settings_json);
  }
  free(config->plugins);
  for (size_t i = 0; i < config->service_count; i++) {
    config_service_t *s = &config->services[i];
    free(s->name);
    free(s->core);
    free(s->plugin);
    free(s->address_text);
    free(s->websocket.path);
    free(s->websocket.subprotocol);
    for (size_t j = 0; j < s->websocket.origin_count; j++)
      free(s->websocket.origins[j]);
    free(s->websocket.origins);
    free(s->websocket.origin);
    free(s->websocket.host);
    free(s->tls.cert_file);
    free(s->tls.key_file);
    free(s->tls.ca_file);
    free(s->tls.server_name);
  }
  free(config->services);
  free(config->file);
  free(config->dir);
  free(config->name);
  free(config->log_file);
  free(config->runtime_dir);
  free(config->metrics_address_text);
  free(config);
}
