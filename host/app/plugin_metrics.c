/*
 * Metrics a plugin defines (plugin_metrics.h, plugin.h ABI 1.3).
 *
 * A family (iocphost_metric_t) is defined while its generation's on_load
 * runs and lives on host->metric_families until the generation closes. Its
 * series (iocphost_series_t, one per tuple of label values) are found or
 * made under host->metrics_lock, which also keeps a scrape from seeing a
 * series freed; an update touches only the series' atomic cells and takes
 * no lock. A counter or gauge is one double, kept as its bits in an atomic
 * 64-bit cell and added to with compare-and-swap; a histogram counts with
 * one atomic per bucket and adds its sum the same way. A scrape reads the
 * cells one at a time, so a histogram's _count and _sum may be one
 * observation apart, as in every Prometheus client.
 */
#include "plugin_metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "host_internal.h"

#define NAME_MAX_BYTES 200
#define VALUE_MAX_BYTES 1024
#define SERIES_BUCKETS 64 /* hash chains per family */

static const char HOST_PREFIX[] = "iocphost_";

struct iocphost_series {
  struct iocphost_metric *metric;
  iocphost_series_t *next;      /* the family's series, in order made */
  iocphost_series_t *hash_next; /* its hash chain */
  uint64_t hash;
  char **values; /* label_count copies */
  /* The counter's or gauge's value, or the histogram's sum: a double's
   * bits. */
  atomic_uint_fast64_t value;
  atomic_uint_fast64_t counts[]; /* histogram: bucket_count + 1 (+Inf) */
};

struct iocphost_metric {
  generation_t *generation;
  struct iocphost_metric *next; /* host->metric_families */
  iocphost_metric_type_t type;
  char *name;
  char *help;
  size_t label_count;
  char **labels;
  size_t bucket_count;
  double *buckets;
  /* Under host->metrics_lock. */
  iocphost_series_t *series, *series_last;
  size_t series_count;
  iocphost_series_t *chains[SERIES_BUCKETS];
  /* A refused series or update is logged once per family. */
  atomic_int warned_series;
  atomic_int warned_update;
};

static host_t *host_of(const generation_t *g) { return g->plugin->host; }

/* "plugin echo generation 2: metric "x"" opens every line about a family. */
static void refuse(const generation_t *g, const char *name, const char *fmt,
                   ...)
#if defined(__GNUC__)
    __attribute__((format(IOCPHOST_PRINTF_FORMAT, 3, 4)))
#endif
    ;

static void refuse(const generation_t *g, const char *name, const char *fmt,
                   ...) {
  char reason[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  log_write(LOG_ERROR, "host", "plugin %s generation %u: metric \"%.*s\": %s",
            g->plugin->name, g->number, NAME_MAX_BYTES, name ? name : "(null)",
            reason);
}

/* ---- doubles in atomic cells ---- */

static uint64_t bits_of(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double double_of(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static void cell_add(atomic_uint_fast64_t *cell, double v) {
  uint_fast64_t old = atomic_load_explicit(cell, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(
      cell, &old, bits_of(double_of(old) + v), memory_order_relaxed,
      memory_order_relaxed)) {
  }
}

/* ---- checking a definition ---- */

static int valid_utf8(const char *s, size_t max_bytes) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = 0;
  while (p[n]) {
    unsigned char c = p[n];
    size_t more;
    uint32_t cp;
    if (c < 0x80) {
      n++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      more = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      more = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      more = 3, cp = c & 0x07;
    } else {
      return 0;
    }
    for (size_t i = 1; i <= more; i++) {
      if ((p[n + i] & 0xC0) != 0x80)
        return 0;
      cp = (cp << 6) | (p[n + i] & 0x3F);
    }
    /* Overlong forms, surrogates and past U+10FFFF are not UTF-8. */
    if ((more == 1 && cp < 0x80) || (more == 2 && cp < 0x800) ||
        (more == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    n += more + 1;
    if (n > max_bytes)
      return 0;
  }
  return n <= max_bytes;
}

static int is_reserved_label(const char *label) {
  return strcmp(label, "plugin") == 0 || strcmp(label, "generation") == 0 ||
         strcmp(label, "le") == 0;
}

/* The definition's own rules (iocphost_metric_def_t); 0, or -1 after
 * logging what to fix. def is the host's zero-filled copy. */
static int check_def(const generation_t *g, const iocphost_metric_def_t *def) {
  const char *name = def->name;
  if (!name || !prom_valid_metric_name(name) || strlen(name) > NAME_MAX_BYTES) {
    refuse(g, name,
           "invalid metric name: use letters, digits, '_' and ':', not "
           "starting with a digit, at most %d bytes",
           NAME_MAX_BYTES);
    return -1;
  }
  if (strncmp(name, HOST_PREFIX, sizeof HOST_PREFIX - 1) == 0) {
    refuse(g, name,
           "names starting with \"%s\" are the host's; name it after your "
           "plugin",
           HOST_PREFIX);
    return -1;
  }
  if (def->type < IOCPHOST_METRIC_COUNTER ||
      def->type > IOCPHOST_METRIC_HISTOGRAM) {
    refuse(g, name,
           "unknown type %u: use IOCPHOST_METRIC_COUNTER, _GAUGE or "
           "_HISTOGRAM",
           (unsigned)def->type);
    return -1;
  }
  if (def->help && !valid_utf8(def->help, 4096)) {
    refuse(g, name, "help is not UTF-8 text of at most 4096 bytes");
    return -1;
  }
  size_t count = 0;
  for (; def->labels && def->labels[count]; count++) {
    const char *label = def->labels[count];
    if (count == IOCPHOST_METRIC_MAX_LABELS) {
      refuse(g, name,
             "more than %d label names: drop some (every label "
             "multiplies the series)",
             IOCPHOST_METRIC_MAX_LABELS);
      return -1;
    }
    if (!prom_valid_label_name(label) || strlen(label) > NAME_MAX_BYTES) {
      refuse(g, name,
             "invalid label name \"%.*s\": use letters, digits and '_', not "
             "starting with a digit or \"__\"",
             NAME_MAX_BYTES, label);
      return -1;
    }
    if (is_reserved_label(label)) {
      refuse(g, name,
             "label name \"%s\" is reserved (the host adds plugin and "
             "generation; le is a histogram's): rename it",
             label);
      return -1;
    }
    for (size_t j = 0; j < count; j++) {
      if (strcmp(def->labels[j], label) == 0) {
        refuse(g, name, "label name \"%s\" is listed twice", label);
        return -1;
      }
    }
  }
  if (def->type != IOCPHOST_METRIC_HISTOGRAM)
    return 0;
  if (!def->buckets || def->bucket_count == 0 ||
      def->bucket_count > IOCPHOST_METRIC_MAX_BUCKETS) {
    refuse(g, name,
           "a histogram needs 1 to %d bucket bounds (buckets, bucket_count), "
           "found %u",
           IOCPHOST_METRIC_MAX_BUCKETS, def->buckets ? def->bucket_count : 0);
    return -1;
  }
  for (uint32_t i = 0; i < def->bucket_count; i++) {
    if (!isfinite(def->buckets[i]) ||
        (i > 0 && !(def->buckets[i] > def->buckets[i - 1]))) {
      refuse(g, name,
             "bucket bound %u (%g) must be finite and greater than the one "
             "before (+Inf is added by the host)",
             (unsigned)i, def->buckets[i]);
      return -1;
    }
  }
  return 0;
}

static size_t label_count(const iocphost_metric_def_t *def) {
  size_t n = 0;
  while (def->labels && def->labels[n])
    n++;
  return n;
}

static int same_labels(const struct iocphost_metric *m,
                       const iocphost_metric_def_t *def) {
  if (m->label_count != label_count(def))
    return 0;
  for (size_t i = 0; i < m->label_count; i++)
    if (strcmp(m->labels[i], def->labels[i]) != 0)
      return 0;
  return 1;
}

static int same_buckets(const struct iocphost_metric *m,
                        const iocphost_metric_def_t *def) {
  if (def->type != IOCPHOST_METRIC_HISTOGRAM)
    return 1;
  if (m->bucket_count != def->bucket_count)
    return 0;
  for (size_t i = 0; i < m->bucket_count; i++)
    if (m->buckets[i] != def->buckets[i])
      return 0;
  return 1;
}

/* 1 if name is hist's name followed by _bucket, _sum or _count: the two
 * would mix in one page. */
static int histogram_part(const char *hist, const char *name) {
  size_t n = strlen(hist);
  if (strncmp(hist, name, n) != 0)
    return 0;
  return strcmp(name + n, "_bucket") == 0 || strcmp(name + n, "_sum") == 0 ||
         strcmp(name + n, "_count") == 0;
}

static void describe_labels(const struct iocphost_metric *m, char *buf,
                            size_t len) {
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < m->label_count && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "",
                             m->labels[i]);
}

static const char *type_name(iocphost_metric_type_t type) {
  return type == IOCPHOST_METRIC_COUNTER ? "counter"
         : type == IOCPHOST_METRIC_GAUGE ? "gauge"
                                         : "histogram";
}

/* Against the live families (under metrics_lock): IOCPHOST_OK with *same
 * set when this generation defined it the same way already, or
 * IOCPHOST_E_CONFLICT after logging whose definition it clashes with. */
static int check_conflicts(const generation_t *g,
                           const iocphost_metric_def_t *def,
                           struct iocphost_metric **same) {
  *same = NULL;
  for (struct iocphost_metric *m = host_of(g)->metric_families; m;
       m = m->next) {
    const char *owner = m->generation->plugin->name;
    unsigned number = m->generation->number;
    if (strcmp(m->name, def->name) == 0) {
      if (m->type == (iocphost_metric_type_t)def->type && same_labels(m, def)) {
        if (m->generation == g && same_buckets(m, def))
          *same = m;
        if (m->generation == g && !same_buckets(m, def)) {
          refuse(g, def->name,
                 "defined twice by this generation with other bucket "
                 "bounds; define it once");
          return IOCPHOST_E_CONFLICT;
        }
        continue;
      }
      char labels[256];
      describe_labels(m, labels, sizeof labels);
      refuse(g, def->name,
             "plugin %s generation %u defined it already as a %s with labels "
             "(%s); one name has one type and label set in the host: keep "
             "that definition or use another name",
             owner, number, type_name(m->type), labels);
      return IOCPHOST_E_CONFLICT;
    }
    if (m->type == IOCPHOST_METRIC_HISTOGRAM &&
        histogram_part(m->name, def->name)) {
      refuse(g, def->name,
             "clashes with the samples of histogram \"%s\" (plugin %s "
             "generation %u: name_bucket, name_sum, name_count); use another "
             "name",
             m->name, owner, number);
      return IOCPHOST_E_CONFLICT;
    }
    if (def->type == IOCPHOST_METRIC_HISTOGRAM &&
        histogram_part(def->name, m->name)) {
      refuse(g, def->name,
             "as a histogram its samples (name_bucket, name_sum, name_count) "
             "would clash with \"%s\" of plugin %s generation %u; use "
             "another name",
             m->name, owner, number);
      return IOCPHOST_E_CONFLICT;
    }
  }
  return IOCPHOST_OK;
}

/* ---- families ---- */

static void free_strings(char **list, size_t count) {
  for (size_t i = 0; list && i < count; i++)
    free(list[i]);
  free(list);
}

static void series_free(iocphost_series_t *s) {
  free_strings(s->values, s->metric->label_count);
  free(s);
}

static void family_free(struct iocphost_metric *m) {
  for (iocphost_series_t *s = m->series, *next; s; s = next) {
    next = s->next;
    series_free(s);
  }
  free(m->name);
  free(m->help);
  free_strings(m->labels, m->label_count);
  free(m->buckets);
  free(m);
}

static struct iocphost_metric *family_new(generation_t *g,
                                          const iocphost_metric_def_t *def) {
  struct iocphost_metric *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->generation = g;
  m->type = (iocphost_metric_type_t)def->type;
  m->name = strdup(def->name);
  m->help = strdup(def->help ? def->help : "");
  m->label_count = label_count(def);
  m->labels = calloc(m->label_count + 1, sizeof *m->labels);
  int ok = m->name && m->help && m->labels;
  for (size_t i = 0; ok && i < m->label_count; i++)
    ok = (m->labels[i] = strdup(def->labels[i])) != NULL;
  if (ok && m->type == IOCPHOST_METRIC_HISTOGRAM) {
    m->bucket_count = def->bucket_count;
    m->buckets = malloc(m->bucket_count * sizeof *m->buckets);
    ok = m->buckets != NULL;
    if (ok)
      memcpy(m->buckets, def->buckets, m->bucket_count * sizeof *m->buckets);
  }
  if (!ok) {
    family_free(m);
    return NULL;
  }
  return m;
}

static int api_metric_define(const iocphost_api_t *api,
                             const iocphost_metric_def_t *plugin_def,
                             iocphost_metric_t **out) {
  generation_t *g = (generation_t *)api;
  if (out)
    *out = NULL;
  if (!plugin_def || !out) {
    refuse(g, NULL,
           "metric_define needs a definition and a place for the "
           "metric (def and out are NULL)");
    return IOCPHOST_E_INVAL;
  }
  /* The host's copy: a definition from an older, shorter header reads as
   * zero past its struct_size. */
  iocphost_metric_def_t def;
  memset(&def, 0, sizeof def);
  size_t size = plugin_def->struct_size;
  if (size < offsetof(iocphost_metric_def_t, help)) {
    refuse(g, NULL,
           "the definition's struct_size is %u: initialise it with "
           "IOCPHOST_METRIC_DEF_HEADER",
           (unsigned)size);
    return IOCPHOST_E_INVAL;
  }
  memcpy(&def, plugin_def, size < sizeof def ? size : sizeof def);
  if (!atomic_load(&g->metrics_open)) {
    refuse(g, def.name,
           "defined outside on_load: define every metric in on_load, keep "
           "the handle, and update it from anywhere");
    return IOCPHOST_E_LOAD_ONLY;
  }
  if (check_def(g, &def) != 0)
    return IOCPHOST_E_INVAL;
  host_t *host = host_of(g);
  pthread_mutex_lock(&host->metrics_lock);
  struct iocphost_metric *same;
  int rc = check_conflicts(g, &def, &same);
  if (rc == IOCPHOST_OK && same) {
    *out = same;
  } else if (rc == IOCPHOST_OK) {
    struct iocphost_metric *m = family_new(g, &def);
    if (!m) {
      rc = IOCPHOST_E_NOMEM;
    } else {
      struct iocphost_metric **link = &host->metric_families;
      while (*link)
        link = &(*link)->next;
      *link = m; /* at the end: families render in the order defined */
      *out = m;
    }
  }
  pthread_mutex_unlock(&host->metrics_lock);
  if (rc == IOCPHOST_E_NOMEM)
    refuse(g, def.name, "out of memory");
  return rc;
}

void plugin_metrics_generation_closed(generation_t *g) {
  host_t *host = host_of(g);
  struct iocphost_metric *gone = NULL;
  pthread_mutex_lock(&host->metrics_lock);
  for (struct iocphost_metric **link = &host->metric_families; *link;) {
    struct iocphost_metric *m = *link;
    if (m->generation == g) {
      *link = m->next;
      m->next = gone;
      gone = m;
    } else {
      link = &m->next;
    }
  }
  pthread_mutex_unlock(&host->metrics_lock);
  while (gone) {
    struct iocphost_metric *next = gone->next;
    family_free(gone);
    gone = next;
  }
}

/* ---- series ---- */

static uint64_t hash_values(const char *const *values, size_t count) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a, with a separator */
  for (size_t i = 0; i < count; i++) {
    for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
      h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xFF) * 1099511628211ull;
  }
  return h;
}

static void series_refused(struct iocphost_metric *m, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(IOCPHOST_PRINTF_FORMAT, 2, 3)))
#endif
    ;

static void series_refused(struct iocphost_metric *m, const char *fmt, ...) {
  if (atomic_exchange(&m->warned_series, 1))
    return;
  char reason[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  refuse(m->generation, m->name, "%s (said once per metric)", reason);
}

static iocphost_series_t *series_new(struct iocphost_metric *m,
                                     const char *const *values, uint64_t hash) {
  size_t cells = m->type == IOCPHOST_METRIC_HISTOGRAM ? m->bucket_count + 1 : 0;
  iocphost_series_t *s =
      calloc(1, sizeof *s + cells * sizeof(atomic_uint_fast64_t));
  if (!s)
    return NULL;
  s->metric = m;
  s->hash = hash;
  s->values = calloc(m->label_count + 1, sizeof *s->values);
  int ok = s->values != NULL;
  for (size_t i = 0; ok && i < m->label_count; i++)
    ok = (s->values[i] = strdup(values[i])) != NULL;
  if (!ok) {
    series_free(s);
    return NULL;
  }
  atomic_init(&s->value, bits_of(0.0));
  for (size_t i = 0; i < cells; i++)
    atomic_init(&s->counts[i], 0);
  return s;
}

static iocphost_series_t *api_metric_series(iocphost_metric_t *m,
                                            const char *const *values) {
  if (!m)
    return NULL;
  size_t count = 0;
  while (values && values[count] && count <= m->label_count)
    count++;
  if (count != m->label_count) {
    series_refused(m,
                   "metric_series got %s%zu label values for %zu label "
                   "names: give one value per name, in order, then NULL",
                   count > m->label_count ? "more than " : "", count,
                   m->label_count);
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    if (!valid_utf8(values[i], VALUE_MAX_BYTES)) {
      series_refused(m,
                     "the value of label \"%s\" is not UTF-8 text of at most "
                     "%d bytes",
                     m->labels[i], VALUE_MAX_BYTES);
      return NULL;
    }
  }
  uint64_t hash = hash_values(values, count);
  host_t *host = host_of(m->generation);
  pthread_mutex_lock(&host->metrics_lock);
  iocphost_series_t **chain = &m->chains[hash % SERIES_BUCKETS];
  iocphost_series_t *s = *chain;
  for (; s; s = s->hash_next) {
    size_t i = 0;
    while (s->hash == hash && i < count && strcmp(s->values[i], values[i]) == 0)
      i++;
    if (s->hash == hash && i == count)
      break;
  }
  int full = 0;
  if (!s && m->series_count >= IOCPHOST_METRIC_MAX_SERIES) {
    full = 1;
  } else if (!s && (s = series_new(m, values, hash)) != NULL) {
    s->hash_next = *chain;
    *chain = s;
    if (m->series_last)
      m->series_last->next = s;
    else
      m->series = s;
    m->series_last = s;
    m->series_count++;
  }
  pthread_mutex_unlock(&host->metrics_lock);
  if (full)
    series_refused(m,
                   "has %d series already, the most one metric may have: a "
                   "label whose values come from players (ids, names) has "
                   "no bound; label by something with few values",
                   IOCPHOST_METRIC_MAX_SERIES);
  else if (!s)
    series_refused(m, "out of memory for a new series");
  return s;
}

/* ---- updates: atomics only ---- */

static int update_refused(iocphost_series_t *s, const char *what,
                          double value) {
  struct iocphost_metric *m = s->metric;
  if (!atomic_exchange(&m->warned_update, 1))
    refuse(m->generation, m->name,
           "%s %g refused on a %s (said once per metric): counters take "
           "finite adds >= 0, gauges finite sets and adds, histograms finite "
           "observations",
           what, value, type_name(m->type));
  return IOCPHOST_E_INVAL;
}

static int api_metric_add(iocphost_series_t *s, double value) {
  if (!s)
    return IOCPHOST_E_INVAL;
  iocphost_metric_type_t type = s->metric->type;
  if (type == IOCPHOST_METRIC_HISTOGRAM || !isfinite(value) ||
      (type == IOCPHOST_METRIC_COUNTER && value < 0))
    return update_refused(s, "metric_add", value);
  cell_add(&s->value, value);
  return IOCPHOST_OK;
}

static int api_metric_set(iocphost_series_t *s, double value) {
  if (!s)
    return IOCPHOST_E_INVAL;
  if (s->metric->type != IOCPHOST_METRIC_GAUGE || !isfinite(value))
    return update_refused(s, "metric_set", value);
  atomic_store_explicit(&s->value, bits_of(value), memory_order_relaxed);
  return IOCPHOST_OK;
}

static int api_metric_observe(iocphost_series_t *s, double value) {
  if (!s)
    return IOCPHOST_E_INVAL;
  struct iocphost_metric *m = s->metric;
  if (m->type != IOCPHOST_METRIC_HISTOGRAM || !isfinite(value))
    return update_refused(s, "metric_observe", value);
  size_t i = 0; /* the first bound not below value (le), else +Inf */
  while (i < m->bucket_count && value > m->buckets[i])
    i++;
  atomic_fetch_add_explicit(&s->counts[i], 1, memory_order_relaxed);
  cell_add(&s->value, value);
  return IOCPHOST_OK;
}

void plugin_metrics_fill_api(iocphost_api_t *api) {
  api->metric_define = api_metric_define;
  api->metric_series = api_metric_series;
  api->metric_add = api_metric_add;
  api->metric_set = api_metric_set;
  api->metric_observe = api_metric_observe;
}

/* ---- render ---- */

static prom_type_t prom_type_of(iocphost_metric_type_t type) {
  return type == IOCPHOST_METRIC_COUNTER ? PROM_COUNTER
         : type == IOCPHOST_METRIC_GAUGE ? PROM_GAUGE
                                         : PROM_HISTOGRAM;
}

static void render_series(prom_t *p, const struct iocphost_metric *m) {
  char generation[16];
  snprintf(generation, sizeof generation, "%u", m->generation->number);
  /* The plugin's labels, then plugin and generation, then NULL. */
  const char *labels[2 * (IOCPHOST_METRIC_MAX_LABELS + 2) + 1];
  size_t n = 0;
  for (size_t i = 0; i < m->label_count; i++)
    labels[n++] = m->labels[i], labels[n++] = NULL;
  labels[n++] = "plugin";
  labels[n++] = m->generation->plugin->name;
  labels[n++] = "generation";
  labels[n++] = generation;
  labels[n] = NULL;
  uint64_t counts[IOCPHOST_METRIC_MAX_BUCKETS + 1];
  for (const iocphost_series_t *s = m->series; s; s = s->next) {
    for (size_t i = 0; i < m->label_count; i++)
      labels[2 * i + 1] = s->values[i];
    double value = double_of(atomic_load_explicit(
        &((iocphost_series_t *)s)->value, memory_order_relaxed));
    if (m->type != IOCPHOST_METRIC_HISTOGRAM) {
      prom_sample(p, m->name, labels, value);
      continue;
    }
    for (size_t i = 0; i <= m->bucket_count; i++)
      counts[i] = atomic_load_explicit(&((iocphost_series_t *)s)->counts[i],
                                       memory_order_relaxed);
    prom_histogram(p, m->name, labels, m->buckets, counts, m->bucket_count,
                   value);
  }
}

void plugin_metrics_render_metrics(host_t *h, prom_t *p) {
  pthread_mutex_lock(&h->metrics_lock);
  for (const struct iocphost_metric *m = h->metric_families; m; m = m->next) {
    /* A name is rendered where it first appears, with every family of
     * that name (other generations, other plugins) after its header. */
    const struct iocphost_metric *first = h->metric_families;
    while (strcmp(first->name, m->name) != 0)
      first = first->next;
    if (first != m)
      continue;
    prom_family(p, m->name, prom_type_of(m->type), m->help);
    for (const struct iocphost_metric *same = m; same; same = same->next)
      if (strcmp(same->name, m->name) == 0)
        render_series(p, same);
  }
  pthread_mutex_unlock(&h->metrics_lock);
}
