/*
 * uv_echo: an echo server written the way libuv is meant to be used, the
 * peer iocphost is measured against.
 *
 * One loop. alloc_cb hands every read the same static 64 KiB buffer, so
 * reading never allocates; the echo goes out with uv_try_write straight from
 * that buffer, and only what the socket did not take is copied into a write
 * request for uv_write (libuv keeps the order: uv_try_write refuses while
 * writes are queued). A connection whose queued output passes 1 MiB stops
 * reading until it drains, so a slow reader cannot grow memory. A
 * connection costs one malloc'd uv_tcp_t.
 *
 * usage: uv_echo PORT   (listens on 127.0.0.1; SIGTERM ends it)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define HIGH_WATER (1024 * 1024)

typedef struct write_req {
  uv_write_t req;
  char data[];
} write_req_t;

static char shared_buffer[64 * 1024];
static uv_loop_t *loop;

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  (void)suggested;
  buf->base = shared_buffer;
  buf->len = sizeof shared_buffer;
}

static void on_close(uv_handle_t *handle) { free(handle); }

static void close_stream(uv_stream_t *stream) {
  if (!uv_is_closing((uv_handle_t *)stream))
    uv_close((uv_handle_t *)stream, on_close);
}

static void on_write(uv_write_t *req, int status) {
  uv_stream_t *stream = req->handle;
  free(req);
  if (status < 0) {
    close_stream(stream);
    return;
  }
  /* Reading stopped at the high-water mark: resume once drained. */
  if (stream->data && stream->write_queue_size == 0) {
    stream->data = NULL;
    uv_read_start(stream, alloc_cb, on_read);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  if (nread < 0) { /* UV_EOF or an error */
    close_stream(stream);
    return;
  }
  if (nread == 0)
    return;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
  int written = uv_try_write(stream, &b, 1);
  if (written == nread)
    return;
  if (written < 0 && written != UV_EAGAIN) {
    close_stream(stream);
    return;
  }
  size_t done = written > 0 ? (size_t)written : 0;
  size_t rest = (size_t)nread - done;
  write_req_t *wr = malloc(sizeof *wr + rest);
  if (!wr) {
    close_stream(stream);
    return;
  }
  memcpy(wr->data, buf->base + done, rest);
  uv_buf_t rb = uv_buf_init(wr->data, (unsigned)rest);
  if (uv_write(&wr->req, stream, &rb, 1, on_write) != 0) {
    free(wr);
    close_stream(stream);
    return;
  }
  if (stream->write_queue_size > HIGH_WATER) {
    uv_read_stop(stream);
    stream->data = stream; /* marks "stopped for backpressure" */
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  uv_tcp_t *client = malloc(sizeof *client);
  if (!client)
    return;
  uv_tcp_init(loop, client);
  client->data = NULL;
  if (uv_accept(server, (uv_stream_t *)client) != 0) {
    uv_close((uv_handle_t *)client, on_close);
    return;
  }
  uv_tcp_nodelay(client, 1);
  uv_read_start((uv_stream_t *)client, alloc_cb, on_read);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: uv_echo PORT\n");
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
    fprintf(stderr, "uv_echo: listen: %s\n", uv_strerror(rc));
    return 3;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}
