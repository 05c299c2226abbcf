/*
 * ws_pingpong: 64-byte ping-pong over plain TCP or over WebSocket, with or
 * without TLS, one client for all so only the server's transport differs
 * (ws_bench.sh runs them side by side; docs/benchmarks.md).
 *
 *   ws_pingpong tcp|ws|tls|wss --port P --server-pid PID [--conns 100]
 *               [--size 64] [--warmup 0.3] [--duration 2]
 *   ws_pingpong handshakes --port P --server-pid PID [--duration 2]
 *
 * tls and wss speak TLS (OpenSSL, no certificate check: a benchmark) over
 * the same bytes. handshakes makes one connection after another, each a
 * full TLS handshake (no resumption) and one 1-byte echo (so a TLS 1.3
 * server has finished its side), and reports handshakes per second and the
 * server's CPU per handshake.
 *
 * Every connection keeps one message in flight: tcp sends size bytes and
 * waits for size bytes back; ws upgrades first, then sends one masked
 * binary frame of size bytes and waits for the server's frame (2 + size
 * bytes). Prints one line: msgs, msgs_per_s and the server's CPU per
 * message (utime + stime from /proc/PID/stat over the measured window).
 * Loopback only, bounded in connections, size and time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CONNS 10000
#define MAX_SIZE 125 /* one short frame header each way */

typedef struct conn {
  int fd;
  SSL *ssl; /* tls and wss */
  size_t got; /* bytes of the current echo */
} conn_t;

static int ws_mode;
static SSL_CTX *tls_ctx; /* tls, wss and handshakes */
static int size = 64;
static size_t echo_len;
static uint8_t message[6 + MAX_SIZE];
static size_t message_len;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double server_cpu_s(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  unsigned long utime = 0, stime = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                   &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void die(const char *what) {
  fprintf(stderr, "ws_pingpong: %s: %s\n", what, strerror(errno));
  exit(1);
}

static ssize_t conn_write(conn_t *k, const void *p, size_t n) {
  if (!k->ssl)
    return write(k->fd, p, n);
  size_t done = 0;
  return SSL_write_ex(k->ssl, p, n, &done) == 1 ? (ssize_t)done : -1;
}

/* -1 with errno EAGAIN when nothing is ready. */
static ssize_t conn_read(conn_t *k, void *p, size_t n) {
  if (!k->ssl)
    return read(k->fd, p, n);
  size_t got = 0;
  if (SSL_read_ex(k->ssl, p, n, &got) == 1)
    return (ssize_t)got;
  int e = SSL_get_error(k->ssl, 0);
  if (e == SSL_ERROR_WANT_READ) {
    errno = EAGAIN;
    return -1;
  }
  return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

static void open_conn(conn_t *k, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  k->fd = fd;
  k->ssl = NULL;
  if (tls_ctx) {
    k->ssl = SSL_new(tls_ctx);
    if (!k->ssl || SSL_set_fd(k->ssl, fd) != 1 || SSL_connect(k->ssl) != 1) {
      ERR_print_errors_fp(stderr);
      fprintf(stderr, "ws_pingpong: TLS handshake failed\n");
      exit(1);
    }
  }
  if (ws_mode) {
    static const char req[] =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    if (conn_write(k, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
      die("write upgrade");
    char head[1024];
    size_t n = 0;
    while (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0) {
      if (n == sizeof head || conn_read(k, head + n, 1) != 1)
        die("read upgrade answer");
      n++;
    }
    if (memcmp(head, "HTTP/1.1 101 ", 13) != 0) {
      fprintf(stderr, "ws_pingpong: upgrade refused: %.40s\n", head);
      exit(1);
    }
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* One full handshake and a 1-byte echo after another, for duration. */
static int handshakes(int port, int pid, double warmup, double duration) {
  double start = now_s(), measure_at = start + warmup,
         end = measure_at + duration, cpu0 = 0, t0 = 0;
  unsigned long long done = 0, done0 = 0;
  int measuring = 0;
  for (;;) {
    conn_t k;
    open_conn(&k, port);
    fcntl(k.fd, F_SETFL, fcntl(k.fd, F_GETFL) & ~O_NONBLOCK);
    char b = 'x';
    if (conn_write(&k, &b, 1) != 1 || conn_read(&k, &b, 1) != 1)
      die("echo after the handshake");
    SSL_free(k.ssl);
    close(k.fd);
    done++;
    double t = now_s();
    if (!measuring && t >= measure_at) {
      measuring = 1;
      done0 = done;
      cpu0 = server_cpu_s(pid);
      t0 = t;
    }
    if (t >= end)
      break;
  }
  double secs = now_s() - t0;
  double cpu = server_cpu_s(pid) - cpu0;
  unsigned long long n = done - done0;
  printf("handshakes=%llu secs=%.3f handshakes_per_s=%.0f server_cpu_s=%.3f "
         "server_cpu_us_per_handshake=%.1f\n",
         n, secs, n / secs, cpu, n ? cpu * 1e6 / (double)n : 0.0);
  return 0;
}

int main(int argc, char **argv) {
  int port = 0, pid = 0, conns = 100;
  double warmup = 0.3, duration = 2;
  const char *mode = argc >= 2 ? argv[1] : "";
  int tls_mode = !strcmp(mode, "tls") || !strcmp(mode, "wss") ||
                 !strcmp(mode, "handshakes");
  if (strcmp(mode, "tcp") && strcmp(mode, "ws") && !tls_mode) {
    fprintf(stderr, "usage: ws_pingpong tcp|ws|tls|wss|handshakes --port P "
                    "--server-pid PID [--conns N] [--size B] [--warmup S] "
                    "[--duration S]\n");
    return 2;
  }
  ws_mode = !strcmp(mode, "ws") || !strcmp(mode, "wss");
  if (tls_mode) {
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx)
      die("SSL_CTX_new");
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    /* Every handshake a full one. */
    SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(tls_ctx, SSL_OP_NO_TICKET);
  }
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--port"))
      port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--server-pid"))
      pid = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--conns"))
      conns = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--size"))
      size = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--warmup"))
      warmup = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--duration"))
      duration = atof(argv[i + 1]);
  }
  if (port <= 0 || port > 65535 || conns < 1 || conns > MAX_CONNS ||
      size < 1 || size > MAX_SIZE || duration <= 0 || duration > 60 ||
      warmup < 0 || warmup > 10) {
    fprintf(stderr, "ws_pingpong: --port, --conns 1..%d, --size 1..%d, "
                    "--duration up to 60 s\n", MAX_CONNS, MAX_SIZE);
    return 2;
  }
  if (!strcmp(mode, "handshakes"))
    return handshakes(port, pid, warmup, duration);
  if (ws_mode) {
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    message[0] = 0x82;
    message[1] = (uint8_t)(0x80 | size);
    memcpy(message + 2, key, 4);
    for (int i = 0; i < size; i++)
      message[6 + i] = (uint8_t)('a' + i % 26) ^ key[i % 4];
    message_len = 6 + (size_t)size;
    echo_len = 2 + (size_t)size;
  } else {
    for (int i = 0; i < size; i++)
      message[i] = (uint8_t)('a' + i % 26);
    message_len = echo_len = (size_t)size;
  }
  conn_t *c = calloc((size_t)conns, sizeof *c);
  int ep = epoll_create1(0);
  if (!c || ep < 0)
    die("setup");
  for (int i = 0; i < conns; i++) {
    open_conn(&c[i], port);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
    if (conn_write(&c[i], message, message_len) != (ssize_t)message_len)
      die("write");
  }
  double start = now_s(), measure_at = start + warmup,
         end = measure_at + duration, cpu0 = 0, t0 = 0;
  unsigned long long done = 0, done0 = 0;
  int measuring = 0;
  struct epoll_event evs[256];
  uint8_t buf[4096];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, 50);
    for (int i = 0; i < n; i++) {
      conn_t *k = &c[evs[i].data.u32];
      /* TLS may hold a whole record already read from the socket. */
      ssize_t r;
    again:
      r = conn_read(k, buf, sizeof buf);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
          continue;
        fprintf(stderr, "ws_pingpong: the server closed a connection\n");
        return 1;
      }
      k->got += (size_t)r;
      if (k->got > echo_len) {
        fprintf(stderr, "ws_pingpong: more bytes back than one echo\n");
        return 1;
      }
      if (k->got == echo_len) {
        k->got = 0;
        done++;
        if (conn_write(k, message, message_len) != (ssize_t)message_len)
          die("write");
      } else if (k->ssl) {
        goto again;
      }
    }
    double t = now_s();
    if (!measuring && t >= measure_at) {
      measuring = 1;
      done0 = done;
      cpu0 = server_cpu_s(pid);
      t0 = t;
    }
    if (t >= end)
      break;
  }
  double secs = now_s() - t0;
  double cpu = server_cpu_s(pid) - cpu0;
  unsigned long long msgs = done - done0;
  printf("transport=%s conns=%d size=%d secs=%.3f msgs=%llu msgs_per_s=%.0f "
         "server_cpu_s=%.3f server_cpu_us_per_msg=%.3f\n",
         mode, conns, size, secs, msgs, msgs / secs, cpu,
         msgs ? cpu * 1e6 / (double)msgs : 0.0);
  for (int i = 0; i < conns; i++) {
    SSL_free(c[i].ssl);
    close(c[i].fd);
  }
  free(c);
  return 0;
}
