/*
 * The metrics endpoint: see metrics.h for what it answers and how it treats
 * clients. One thread multiplexes the listener and up to max_connections
 * connections with poll (WSAPoll on Windows, metrics_sock.h); each
 * connection is a small state machine (read the request, write the answer,
 * drain after our FIN) with one deadline for its whole life. Memory is
 * bounded: a fixed table of connections, each holding at most
 * METRICS_REQUEST_MAX request bytes counted (parsed as they come, never
 * kept) and one rendered page.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "engine/log.h"
#include "host_internal.h"
#include "metrics_sock.h"
#include "plugin_metrics.h"
#include "watchdog.h"

/* ---- the page ---- */

typedef void (*metrics_renderer_fn)(host_t *host, prom_t *p);

/* Every source of metrics, in the order the page shows them. A new source
 * is added here, and only here. */
static const metrics_renderer_fn metrics_renderers[] = {
    host_render_metrics,           /* metrics_host.c: status --json and more */
    watchdog_render_metrics,       /* stalls, callback durations */
    plugin_metrics_render_metrics, /* what plugins define (ABI 1.3) */
    process_render_metrics,        /* process_* */
};

void metrics_render(host_t *host, prom_t *p) {
  for (size_t i = 0; i < sizeof metrics_renderers / sizeof metrics_renderers[0];
       i++)
    metrics_renderers[i](host, p);
}

/* ---- connections ---- */

#define DRAIN_MS 500 /* after our FIN, for the peer's */
#define URL_MAX 256  /* longer: not /metrics, answered 404 */
#define BACKLOG 64

typedef enum conn_state {
  CONN_FREE = 0,
  CONN_READ,  /* the request, until complete */
  CONN_WRITE, /* the answer */
  CONN_DRAIN, /* FIN sent; reading until the peer's, so close sends no RST */
} conn_state_t;

typedef struct conn {
  conn_state_t state;
  msock_t sock;
  uint64_t deadline_ms;
  uint64_t order; /* accept order: the oldest reader makes room */
  http_parser parser;
  size_t request_bytes;
  char url[URL_MAX];
  size_t url_len;
  int url_overflow;
  int complete;
  char head[256];
  size_t head_len;
  prom_t body;
  size_t body_len; /* what is sent of body (0 for HEAD) */
  size_t sent;     /* of head, then body */
} conn_t;

struct metrics_server {
  host_t *host;
  msock_t listener;
  msock_t waker;
  conn_t *conns;
  size_t conn_max;
  uint32_t timeout_ms;
  uint64_t next_order;
  char address[ADDRESS_TEXT_MAX];
  pthread_t thread;
  int running;
  atomic_int stop;
  int sockets_ready; /* msock_init succeeded */
};

static int on_url(http_parser *parser, const char *at, size_t len) {
  conn_t *c = parser->data;
  if (c->url_len + len >= sizeof c->url) {
    c->url_overflow = 1;
    return 0;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  c->url[c->url_len] = '\0';
  return 0;
}

static int on_message_complete(http_parser *parser) {
  conn_t *c = parser->data;
  c->complete = 1;
  /* Pause: bytes after the request (a pipelined second one) stay unread. */
  http_parser_pause(parser, 1);
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_message_complete = on_message_complete,
};

static void conn_close(conn_t *c) {
  msock_close(c->sock);
  prom_free(&c->body);
  memset(c, 0, sizeof *c);
  c->sock = MSOCK_INVALID;
  c->state = CONN_FREE;
}

static void conn_open(metrics_server_t *m, conn_t *c, msock_t sock) {
  memset(c, 0, sizeof *c);
  c->state = CONN_READ;
  c->sock = sock;
  c->deadline_ms = clock_now_ms() + m->timeout_ms;
  c->order = m->next_order++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  prom_init(&c->body);
}

/* Sets the answer and turns the connection to writing it. */
static void answer(conn_t *c, int code, const char *reason,
                   const char *content_type, const char *extra_headers,
                   int head_only) {
  c->body_len = head_only ? 0 : c->body.len;
  int n = snprintf(c->head, sizeof c->head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: "
                   "%zu\r\n%sConnection: close\r\n\r\n",
                   code, reason, content_type, c->body.len,
                   extra_headers ? extra_headers : "");
  c->head_len = n > 0 && (size_t)n < sizeof c->head ? (size_t)n : 0;
  c->sent = 0;
  c->state = CONN_WRITE;
}

static void answer_text(conn_t *c, int code, const char *reason,
                        const char *text, const char *extra_headers) {
  prom_free(&c->body);
  prom_init(&c->body);
  c->body.data = malloc(strlen(text) + 1);
  if (c->body.data) {
    c->body.len = c->body.cap = strlen(text);
    memcpy(c->body.data, text, c->body.len + 1);
  }
  answer(c, code, reason, "text/plain; charset=utf-8", extra_headers, 0);
}

static int is_metrics_path(const conn_t *c) {
  if (c->url_overflow)
    return 0;
  size_t path_len = strcspn(c->url, "?#");
  return path_len == 8 && memcmp(c->url, "/metrics", 8) == 0;
}

static void answer_request(metrics_server_t *m, conn_t *c) {
  if (!is_metrics_path(c)) {
    answer_text(c, 404, "Not Found", "not found: the metrics are at /metrics\n",
                NULL);
    return;
  }
  unsigned method = c->parser.method;
  if (method != HTTP_GET && method != HTTP_HEAD) {
    answer_text(c, 405, "Method Not Allowed",
                "method not allowed: use GET /metrics\n",
                "Allow: GET, HEAD\r\n");
    return;
  }
  metrics_render(m->host, &c->body);
  if (c->body.failed) {
    answer_text(c, 500, "Internal Server Error",
                "out of memory rendering the metrics\n", NULL);
    return;
  }
  answer(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL,
         method == HTTP_HEAD);
}

static void conn_read(metrics_server_t *m, conn_t *c) {
  char buf[4096];
  while (c->state == CONN_READ) {
    size_t room = METRICS_REQUEST_MAX + 1 - c->request_bytes;
    long n = msock_recv(c->sock, buf, room < sizeof buf ? room : sizeof buf);
    if (n == -1)
      return;
    if (n <= 0) { /* closed or failed before a whole request */
      conn_close(c);
      return;
    }
    size_t take = (size_t)n;
    if (c->request_bytes + take > METRICS_REQUEST_MAX)
      take = METRICS_REQUEST_MAX - c->request_bytes;
    c->request_bytes += (size_t)n;
    if (take > 0) /* 0 would tell the parser the stream ended */
      http_parser_execute(&c->parser, &parser_settings, buf, take);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->complete)
      answer_request(m, c);
    else if (e != HPE_OK)
      answer_text(c, 400, "Bad Request",
                  "bad request: send GET /metrics HTTP/1.1\n", NULL);
    else if (c->request_bytes > METRICS_REQUEST_MAX)
      answer_text(c, 431, "Request Header Fields Too Large",
                  "request too large\n", NULL);
  }
}

static void conn_write(conn_t *c) {
  for (;;) {
    size_t total = c->head_len + c->body_len;
    if (c->sent >= total) {
      msock_shutdown_send(c->sock);
      c->state = CONN_DRAIN;
      uint64_t drain = clock_now_ms() + DRAIN_MS;
      if (drain < c->deadline_ms)
        c->deadline_ms = drain;
      return;
    }
    const char *from;
    size_t len;
    if (c->sent < c->head_len) {
      from = c->head + c->sent;
      len = c->head_len - c->sent;
    } else {
      from = c->body.data + (c->sent - c->head_len);
      len = total - c->sent;
    }
    long n = msock_send(c->sock, from, len);
    if (n == -1)
      return;
    if (n < 0) {
      conn_close(c);
      return;
    }
    c->sent += (size_t)n;
  }
}

static void conn_drain(conn_t *c) {
  char buf[1024];
  for (;;) {
    long n = msock_recv(c->sock, buf, sizeof buf);
    if (n == -1)
      return;
    if (n <= 0) {
      conn_close(c);
      return;
    }
  }
}

/* A new connection: a free slot, or the oldest one still reading its
 * request gives way; if every one is being answered, the newcomer goes. */
static void take_connection(metrics_server_t *m, msock_t sock) {
  conn_t *slot = NULL, *oldest_reader = NULL;
  for (size_t i = 0; i < m->conn_max && !slot; i++) {
    conn_t *c = &m->conns[i];
    if (c->state == CONN_FREE)
      slot = c;
    else if (c->state == CONN_READ &&
             (!oldest_reader || c->order < oldest_reader->order))
      oldest_reader = c;
  }
  if (!slot && oldest_reader) {
    log_write(LOG_DEBUG, "metrics",
              "%zu connections at once (metrics.max_connections): closing "
              "the oldest one still sending its request",
              m->conn_max);
    conn_close(oldest_reader);
    slot = oldest_reader;
  }
  if (!slot) {
    msock_close(sock);
    return;
  }
  conn_open(m, slot, sock);
}

static void *serve(void *arg) {
  metrics_server_t *m = arg;
  msock_poll_t set[2 + 64];
  conn_t *owner[2 + 64];
  msock_thread_background();
  while (!atomic_load(&m->stop)) {
    size_t n = 0;
    set[n].sock = m->waker;
    set[n].events = MSOCK_IN;
    owner[n++] = NULL;
    set[n].sock = m->listener;
    set[n].events = MSOCK_IN;
    owner[n++] = NULL;
    uint64_t now = clock_now_ms(), next = UINT64_MAX;
    for (size_t i = 0; i < m->conn_max; i++) {
      conn_t *c = &m->conns[i];
      if (c->state == CONN_FREE)
        continue;
      if (c->deadline_ms <= now) {
        log_write(LOG_DEBUG, "metrics",
                  "a connection passed metrics.timeout_ms (%u ms): closed",
                  m->timeout_ms);
        conn_close(c);
        continue;
      }
      if (c->deadline_ms < next)
        next = c->deadline_ms;
      set[n].sock = c->sock;
      set[n].events = c->state == CONN_WRITE ? MSOCK_OUT : MSOCK_IN;
      owner[n++] = c;
    }
    int timeout = next == UINT64_MAX ? -1
                  : next - now > 60000 ? 60000
                                       : (int)(next - now);
    int ready = msock_wait(set, n, timeout);
    if (ready < 0) {
      log_write(LOG_ERROR, "metrics", "poll failed: the endpoint stops");
      break;
    }
    if (set[0].revents)
      msock_waker_drain(m->waker);
    for (size_t i = 2; i < n; i++) {
      conn_t *c = owner[i];
      if (!set[i].revents || c->sock != set[i].sock)
        continue;
      if (c->state == CONN_READ)
        conn_read(m, c);
      if (c->state == CONN_WRITE)
        conn_write(c); /* at once: a small page usually fits */
      else if (c->state == CONN_DRAIN)
        conn_drain(c);
    }
    if (set[1].revents) {
      /* Bounded per round, so a connect flood cannot starve the rest. */
      for (int k = 0; k < BACKLOG; k++) {
        msock_t s = msock_accept(m->listener);
        if (s == MSOCK_INVALID)
          break;
        take_connection(m, s);
      }
    }
  }
  return NULL;
}

/* ---- life ---- */

int metrics_open(host_t *host, metrics_server_t **out, char *err,
                 size_t err_len) {
  const config_t *c = host->config;
  *out = NULL;
  if (!c->metrics_address_text)
    return 0;
  metrics_server_t *m = calloc(1, sizeof *m);
  if (!m || !(m->conns = calloc(c->metrics_max_connections, sizeof *m->conns))) {
    free(m);
    snprintf(err, err_len, "metrics: out of memory");
    return -1;
  }
  m->host = host;
  m->listener = m->waker = MSOCK_INVALID;
  m->conn_max = c->metrics_max_connections;
  m->timeout_ms = c->metrics_timeout_ms;
  for (size_t i = 0; i < m->conn_max; i++)
    m->conns[i].sock = MSOCK_INVALID;
  snprintf(m->address, sizeof m->address, "%s", c->metrics_address_text);
  char why[200];
  if (msock_init() != 0) {
    snprintf(err, err_len, "metrics: the socket library did not start");
    metrics_close(m);
    return -1;
  }
  m->sockets_ready = 1;
  if (msock_listen(&c->metrics_address, BACKLOG, &m->listener, why,
                   sizeof why) != 0) {
    snprintf(err, err_len,
             "metrics.address \"%s\": cannot listen: %s; give metrics.address "
             "a free address of this machine (or stop what holds it)",
             c->metrics_address_text, why);
    metrics_close(m);
    return -1;
  }
  if (msock_waker_open(&m->waker, why, sizeof why) != 0) {
    snprintf(err, err_len, "metrics: %s", why);
    metrics_close(m);
    return -1;
  }
  *out = m;
  return 0;
}

int metrics_serve(metrics_server_t *m, char *err, size_t err_len) {
  if (!m)
    return 0;
  if (pthread_create(&m->thread, NULL, serve, m) != 0) {
    snprintf(err, err_len, "metrics: cannot start its thread");
    return -1;
  }
  m->running = 1;
  log_write(LOG_INFO, "metrics", "serving /metrics on %s (metrics.address)",
            m->address);
  return 0;
}

void metrics_close(metrics_server_t *m) {
  if (!m)
    return;
  if (m->running) {
    atomic_store(&m->stop, 1);
    msock_wake(m->waker);
    pthread_join(m->thread, NULL);
  }
  for (size_t i = 0; m->conns && i < m->conn_max; i++)
    if (m->conns[i].state != CONN_FREE)
      conn_close(&m->conns[i]);
  msock_close(m->listener);
  msock_close(m->waker);
  if (m->sockets_ready)
    msock_cleanup();
  free(m->conns);
  free(m);
}
