/*
 * The metrics endpoint (SPEC section 15): `GET /metrics` in the Prometheus
 * text exposition format 0.0.4, on the address the config's "metrics"
 * gives, served by one thread of its own (never a core's I/O worker), so a
 * scrape cannot delay a game packet beyond the snapshot's brief locks.
 *
 * Hostile or broken clients (README "Metrics"):
 *  - at most metrics.max_connections connections at once; one more
 *    is accepted and the oldest connection still sending its request is
 *    closed to make room (an idle squatter cannot lock a scrape out); if
 *    every one is being answered, the newcomer is closed at once;
 *  - a request (line and headers) over METRICS_REQUEST_MAX bytes gets 431
 *    and the connection closes; one not complete within
 *    metrics.timeout_ms is cut, and so is a reader too slow to take the
 *    answer in that time;
 *  - requests are parsed by Debian's http-parser: what it refuses gets
 *    400; GET and HEAD of /metrics (a query string is ignored) the page,
 *    other methods on /metrics 405 (Allow: GET, HEAD), any other path 404.
 *    One request per connection (Connection: close).
 */
#ifndef IOCPHOST_METRICS_H
#define IOCPHOST_METRICS_H

#include <stddef.h>

#include "prom.h"

typedef struct host host_t;
typedef struct metrics_server metrics_server_t;

#define METRICS_REQUEST_MAX 8192

/* Binds the configured address (nothing when the config has no
 * "metrics"): 0, or -1 with err naming metrics.address and what to do.
 * Nothing is answered until metrics_serve. */
int metrics_open(host_t *host, metrics_server_t **out, char *err,
                 size_t err_len);
/* Starts the thread: once the host is started (status's rule: nothing
 * reads the host while host_start builds it). 0, or -1. */
int metrics_serve(metrics_server_t *m, char *err, size_t err_len);
/* Stops the thread (joined), closes every connection and the listener. */
void metrics_close(metrics_server_t *m);

/* The whole page, as a scrape gets it: every renderer of metrics.c's
 * list in turn. */
void metrics_render(host_t *host, prom_t *p);

/* The renderers: host's counters (metrics_host.c), the process's
 * (metrics_host.c, from procstat.h). */
void host_render_metrics(host_t *host, prom_t *p);
void process_render_metrics(host_t *host, prom_t *p);

#endif
