/*
 * Prometheus text exposition (format 0.0.4), written into a growable buffer.
 *
 * One writer for every source of metrics (the host's counters, callback
 * durations, the stall watchdog, plugin-defined metrics), so the escaping and
 * the family rules live in one place. The format's one rule a renderer must
 * keep itself: all samples of a family follow its one HELP/TYPE header, so
 * render a family by looping over its label sets, not by source.
 *
 * Memory failures are sticky: the buffer stops growing, `failed` is set and
 * the caller answers 500 instead of a truncated page.
 */
#ifndef IOCPHOST_PROM_H
#define IOCPHOST_PROM_H

#include <stddef.h>
#include <stdint.h>

typedef struct prom {
  char *data; /* NUL-terminated while !failed */
  size_t len;
  size_t cap;
  int failed;
} prom_t;

typedef enum prom_type {
  PROM_COUNTER,
  PROM_GAUGE,
  PROM_HISTOGRAM,
} prom_type_t;

void prom_init(prom_t *p);
void prom_free(prom_t *p);

/* "# HELP name help" and "# TYPE name type". name is the full metric name,
 * prefix included (iocphost_...). */
void prom_family(prom_t *p, const char *name, prom_type_t type,
                 const char *help);

/* Labels are a NULL-terminated list of name, value pairs, or NULL for none:
 *   const char *labels[] = {"service", "echo", "core", "main", NULL};
 * Values are escaped (backslash, double quote, newline). */
void prom_sample(prom_t *p, const char *name, const char *const *labels,
                 double value);
void prom_sample_u64(prom_t *p, const char *name, const char *const *labels,
                     uint64_t value);

/* A histogram's samples: name_bucket{...,le="b"} (cumulative), the +Inf
 * bucket, name_sum and name_count. bucket_counts has count_bounds + 1
 * non-cumulative entries, the last one for values above every bound. */
void prom_histogram(prom_t *p, const char *name, const char *const *labels,
                    const double *bounds, const uint64_t *bucket_counts,
                    size_t count_bounds, double sum);

/* Prometheus name rules: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* and not starting with "__". 1 if valid. */
int prom_valid_metric_name(const char *name);
int prom_valid_label_name(const char *name);

#endif
