/*
 * epoll_echo: the reference for what the kernel path itself costs.
 *
 * One thread, one epoll instance, edge-triggered, one shared 64 KiB read
 * buffer. A connection is a 24-byte record; it allocates an output buffer
 * only while its socket refuses bytes, and stops reading until that buffer
 * is gone (so memory stays bounded). Per message: one read, one write, and
 * a share of one epoll_wait. A short read means the socket is drained (the
 * next bytes raise a new edge), so no read ends in EAGAIN on the hot path.
 *
 * usage: epoll_echo PORT   (listens on 127.0.0.1; SIGTERM ends it)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER_BYTES (64 * 1024)
#define EVENTS 256

typedef struct conn {
  int fd;
  uint8_t read_blocked; /* stopped reading while out holds bytes */
  uint8_t hangup;       /* the peer's FIN has been signalled */
  uint8_t *out;         /* bytes the socket did not take yet */
  uint32_t out_len, out_off;
} conn_t;

static uint8_t buffer[BUFFER_BYTES];
static int epfd;

static void conn_close(conn_t *c) {
  close(c->fd); /* also leaves the epoll set */
  free(c->out);
  free(c);
}

/* Writes data; keeps what the socket refused. Returns -1 on error. */
static int send_or_keep(conn_t *c, const uint8_t *data, size_t len) {
  ssize_t n;
  do {
    n = write(c->fd, data, len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -1;
    n = 0;
  }
  if ((size_t)n == len)
    return 0;
  c->out = malloc(len - (size_t)n);
  if (!c->out)
    return -1;
  memcpy(c->out, data + n, len - (size_t)n);
  c->out_len = (uint32_t)(len - (size_t)n);
  c->out_off = 0;
  return 0;
}

/* Returns -1 when the connection is gone. With hangup (the peer's FIN came
 * in this edge) a short read does not end the loop: the 0 must be read. */
static int on_readable(conn_t *c, int hangup) {
  for (;;) {
    if (c->out) {
      c->read_blocked = 1; /* resume after the output drained */
      return 0;
    }
    ssize_t n = read(c->fd, buffer, sizeof buffer);
    if (n > 0) {
      if (send_or_keep(c, buffer, (size_t)n) != 0)
        return -1;
      if (n < (ssize_t)sizeof buffer && !hangup)
        return 0;
      continue;
    }
    if (n == 0)
      return -1;
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}

static int on_writable(conn_t *c) {
  while (c->out) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
    c->out_off += (uint32_t)n;
    if (c->out_off == c->out_len) {
      free(c->out);
      c->out = NULL;
    }
  }
  if (c->read_blocked) {
    c->read_blocked = 0;
    return on_readable(c, c->hangup);
  }
  return 0;
}

static void on_accept(int listen_fd) {
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return; /* EAGAIN, or out of descriptors: try at the next edge */
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->fd = fd;
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
      conn_close(c);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: epoll_echo PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)atoi(argv[1]));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(lfd, 4096) != 0) {
    perror("epoll_echo: listen");
    return 3;
  }
  epfd = epoll_create1(EPOLL_CLOEXEC);
  /* The listener is the one record with a NULL pointer. */
  struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
  struct epoll_event events[EVENTS];
  for (;;) {
    int n = epoll_wait(epfd, events, EVENTS, -1);
    if (n < 0 && errno != EINTR) {
      perror("epoll_echo: epoll_wait");
      return 3;
    }
    for (int i = 0; i < n; i++) {
      conn_t *c = events[i].data.ptr;
      if (!c) {
        on_accept(lfd);
        continue;
      }
      uint32_t e = events[i].events;
      int rc = 0;
      if (e & EPOLLOUT)
        rc = on_writable(c);
      if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hangup = 1;
      if (rc == 0 && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        rc = on_readable(c, c->hangup);
      if (rc != 0)
        conn_close(c);
    }
  }
}
