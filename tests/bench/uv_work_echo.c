/*
 * uv_work_echo: libuv's uv_queue_work doing what plugins/work_echo does
 * with session_work, the peer of the work round trip (docs/benchmarks.md,
 * "Rooms and work").
 *
 * Packet framing (SPEC section 5: uint16 size including the 4-byte header,
 * uint16 id, little-endian). Every packet that arrives is copied into a
 * work request and handed to uv_queue_work; the work function does
 * nothing; the after-work callback, back on the loop, sends the packet
 * back (uv_try_write first, the rest through uv_write, as uv_echo.c) and
 * frees the request. A connection stays allocated until its last request
 * came back, so a client that leaves early frees nothing still in use.
 * The pool has UV_THREADPOOL_SIZE threads (libuv's default: 4); run.sh
 * sets it to the host's work threads.
 *
 * usage: uv_work_echo PORT   (listens on 127.0.0.1; SIGTERM ends it)
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define HEADER 4
#define MAX_PACKET 65535

typedef struct conn {
  uv_tcp_t tcp;
  uint32_t pending; /* work requests not yet back */
  int closed;
  size_t rx_len; /* a partial packet waiting for its rest */
  uint8_t rx[MAX_PACKET];
} conn_t;

typedef struct work_req {
  uv_work_t work;
  conn_t *conn;
  size_t len;
  uint8_t data[];
} work_req_t;

typedef struct write_req {
  uv_write_t req;
  char data[];
} write_req_t;

static char shared_buffer[64 * 1024];
static uv_loop_t *loop;

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  (void)suggested;
  buf->base = shared_buffer;
  buf->len = sizeof shared_buffer;
}

static void conn_free_if_done(conn_t *c) {
  if (c->closed == 2 && c->pending == 0)
    free(c);
}

static void on_close(uv_handle_t *handle) {
  conn_t *c = (conn_t *)handle;
  c->closed = 2;
  conn_free_if_done(c);
}

static void close_conn(conn_t *c) {
  if (!c->closed) {
    c->closed = 1;
    uv_close((uv_handle_t *)&c->tcp, on_close);
  }
}

static void on_write(uv_write_t *req, int status) {
  conn_t *c = (conn_t *)req->handle;
  free(req);
  if (status < 0)
    close_conn(c);
}

static void reply(conn_t *c, const uint8_t *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int written = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (written == (int)len)
    return;
  if (written < 0 && written != UV_EAGAIN) {
    close_conn(c);
    return;
  }
  size_t done = written > 0 ? (size_t)written : 0;
  write_req_t *wr = malloc(sizeof *wr + (len - done));
  if (!wr) {
    close_conn(c);
    return;
  }
  memcpy(wr->data, data + done, len - done);
  uv_buf_t rb = uv_buf_init(wr->data, (unsigned)(len - done));
  if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &rb, 1, on_write) != 0) {
    free(wr);
    close_conn(c);
  }
}

static void work_nothing(uv_work_t *work) { (void)work; }

static void after_work(uv_work_t *work, int status) {
  work_req_t *w = (work_req_t *)work;
  conn_t *c = w->conn;
  c->pending--;
  if (status == 0 && !c->closed)
    reply(c, w->data, w->len);
  free(w);
  conn_free_if_done(c);
}

static void submit(conn_t *c, const uint8_t *packet, size_t len) {
  work_req_t *w = malloc(sizeof *w + len);
  if (!w) {
    close_conn(c);
    return;
  }
  w->conn = c;
  w->len = len;
  memcpy(w->data, packet, len);
  if (uv_queue_work(loop, &w->work, work_nothing, after_work) != 0) {
    free(w);
    close_conn(c);
    return;
  }
  c->pending++;
}

static size_t packet_size(const uint8_t *p) {
  return (size_t)p[0] | (size_t)p[1] << 8;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)stream;
  if (nread < 0) { /* UV_EOF or an error */
    close_conn(c);
    return;
  }
  const uint8_t *p = (const uint8_t *)buf->base;
  size_t len = (size_t)nread;
  while (len > 0 && !c->closed) {
    if (c->rx_len > 0 || len < HEADER || packet_size(p) > len) {
      /* A packet split over reads: gather it in rx. */
      size_t need = c->rx_len < HEADER ? HEADER - c->rx_len : 0;
      if (need == 0)
        need = packet_size(c->rx) - c->rx_len;
      size_t take = need < len ? need : len;
      memcpy(c->rx + c->rx_len, p, take);
      c->rx_len += take;
      p += take;
      len -= take;
      if (c->rx_len >= HEADER && packet_size(c->rx) < HEADER) {
        close_conn(c); /* malformed */
        return;
      }
      if (c->rx_len >= HEADER && c->rx_len == packet_size(c->rx)) {
        submit(c, c->rx, c->rx_len);
        c->rx_len = 0;
      }
      continue;
    }
    size_t size = packet_size(p);
    if (size < HEADER) {
      close_conn(c);
      return;
    }
    submit(c, p, size);
    p += size;
    len -= size;
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return;
  uv_tcp_init(loop, &c->tcp);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    close_conn(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: uv_work_echo PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (rc != 0) {
    fprintf(stderr, "uv_work_echo: listen: %s\n", uv_strerror(rc));
    return 3;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}
