/* Prometheus text exposition: see prom.h. */
#include "prom.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void prom_init(prom_t *p) { memset(p, 0, sizeof(*p)); }

void prom_free(prom_t *p) {
  free(p->data);
  memset(p, 0, sizeof(*p));
}

static int reserve(prom_t *p, size_t more) {
  if (p->failed) return -1;
  if (p->len + more + 1 <= p->cap) return 0;
  size_t cap = p->cap ? p->cap : 4096;
  while (cap < p->len + more + 1) {
    if (cap > SIZE_MAX / 2) {
      p->failed = 1;
      return -1;
    }
    cap *= 2;
  }
  char *data = realloc(p->data, cap);
  if (!data) {
    p->failed = 1;
    return -1;
  }
  p->data = data;
  p->cap = cap;
  return 0;
}

static void put(prom_t *p, const char *s, size_t n) {
  if (reserve(p, n) != 0) return;
  memcpy(p->data + p->len, s, n);
  p->len += n;
  p->data[p->len] = '\0';
}

static void puts_(prom_t *p, const char *s) { put(p, s, strlen(s)); }

static void printf_(prom_t *p, const char *fmt, ...) {
  char small[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0) {
    p->failed = 1;
    return;
  }
  if ((size_t)n < sizeof(small)) {
    put(p, small, (size_t)n);
    return;
  }
  if (reserve(p, (size_t)n) != 0) return;
  va_start(ap, fmt);
  vsnprintf(p->data + p->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  p->len += (size_t)n;
}

/* HELP text escapes backslash and newline; label values also the quote. */
static void put_escaped(prom_t *p, const char *s, int is_label_value) {
  for (; *s; s++) {
    if (*s == '\\')
      puts_(p, "\\\\");
    else if (*s == '\n')
      puts_(p, "\\n");
    else if (*s == '"' && is_label_value)
      puts_(p, "\\\"");
    else
      put(p, s, 1);
  }
}

void prom_family(prom_t *p, const char *name, prom_type_t type,
                 const char *help) {
  static const char *const type_names[] = {"counter", "gauge", "histogram"};
  printf_(p, "# HELP %s ", name);
  put_escaped(p, help ? help : "", 0);
  printf_(p, "\n# TYPE %s %s\n", name, type_names[type]);
}

/* name{a="x",b="y"[,extra_name="extra_value"]} */
static void put_series(prom_t *p, const char *name, const char *suffix,
                       const char *const *labels, const char *extra_name,
                       const char *extra_value) {
  puts_(p, name);
  if (suffix) puts_(p, suffix);
  int any = 0;
  for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
    put(p, any ? "," : "{", 1);
    puts_(p, labels[i]);
    puts_(p, "=\"");
    put_escaped(p, labels[i + 1], 1);
    put(p, "\"", 1);
    any = 1;
  }
  if (extra_name) {
    put(p, any ? "," : "{", 1);
    puts_(p, extra_name);
    puts_(p, "=\"");
    put_escaped(p, extra_value, 1);
    put(p, "\"", 1);
    any = 1;
  }
  if (any) put(p, "}", 1);
}

/* The shortest of %.15g..%.17g that reads back as the same double, so a
 * bound of 0.1 is le="0.1" (what dashboards and queries match), not
 * 0.10000000000000001. */
static void format_double(char *out, size_t len, double value) {
  for (int precision = 15; precision <= 17; precision++) {
    snprintf(out, len, "%.*g", precision, value);
    if (strtod(out, NULL) == value)
      return;
  }
}

static void put_double(prom_t *p, double value) {
  if (isnan(value))
    puts_(p, "NaN");
  else if (isinf(value))
    puts_(p, value > 0 ? "+Inf" : "-Inf");
  else if (value == (double)(int64_t)value && fabs(value) < 9.0e15)
    printf_(p, "%" PRId64, (int64_t)value);
  else {
    char text[32];
    format_double(text, sizeof text, value);
    puts_(p, text);
  }
}

void prom_sample(prom_t *p, const char *name, const char *const *labels,
                 double value) {
  put_series(p, name, NULL, labels, NULL, NULL);
  put(p, " ", 1);
  put_double(p, value);
  put(p, "\n", 1);
}

void prom_sample_u64(prom_t *p, const char *name, const char *const *labels,
                     uint64_t value) {
  put_series(p, name, NULL, labels, NULL, NULL);
  printf_(p, " %" PRIu64 "\n", value);
}

void prom_histogram(prom_t *p, const char *name, const char *const *labels,
                    const double *bounds, const uint64_t *bucket_counts,
                    size_t count_bounds, double sum) {
  uint64_t cumulative = 0;
  char le[64];
  for (size_t i = 0; i < count_bounds; i++) {
    cumulative += bucket_counts[i];
    format_double(le, sizeof(le), bounds[i]);
    put_series(p, name, "_bucket", labels, "le", le);
    printf_(p, " %" PRIu64 "\n", cumulative);
  }
  cumulative += bucket_counts[count_bounds];
  put_series(p, name, "_bucket", labels, "le", "+Inf");
  printf_(p, " %" PRIu64 "\n", cumulative);
  put_series(p, name, "_sum", labels, NULL, NULL);
  put(p, " ", 1);
  put_double(p, sum);
  put(p, "\n", 1);
  put_series(p, name, "_count", labels, NULL, NULL);
  printf_(p, " %" PRIu64 "\n", cumulative);
}

static int is_alpha_(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_digit(char c) { return c >= '0' && c <= '9'; }

int prom_valid_metric_name(const char *name) {
  if (!name || !(is_alpha_(name[0]) || name[0] == ':')) return 0;
  for (const char *s = name + 1; *s; s++)
    if (!(is_alpha_(*s) || is_digit(*s) || *s == ':')) return 0;
  return 1;
}

int prom_valid_label_name(const char *name) {
  if (!name || !is_alpha_(name[0])) return 0;
  if (name[0] == '_' && name[1] == '_') return 0;
  for (const char *s = name + 1; *s; s++)
    if (!(is_alpha_(*s) || is_digit(*s))) return 0;
  return 1;
}
