/* metrics_sock.h on POSIX: poll(2). */
#ifndef _WIN32 /* Windows: metrics_sock_win.c */
#include "metrics_sock.h"

#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int msock_init(void) { return 0; }
void msock_cleanup(void) {}

static int nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int msock_listen(const address_t *addr, int backlog, msock_t *out, char *err,
                 size_t err_len) {
  int fd = socket(address_family(addr), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, err_len, "cannot make a socket: %s", strerror(errno));
    return -1;
  }
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (address_family(addr) == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  if (bind(fd, &addr->u.sa, address_length(addr)) != 0 ||
      listen(fd, backlog) != 0 || nonblocking(fd) != 0) {
    int e = errno;
    close(fd);
    snprintf(err, err_len, "%s",
             e == EADDRINUSE      ? "the address is in use"
             : e == EADDRNOTAVAIL ? "the address is not one of this machine's"
             : e == EACCES        ? "permission denied (a port below 1024?)"
                                  : strerror(e));
    return -1;
  }
  *out = (msock_t)fd;
  return 0;
}

msock_t msock_accept(msock_t listener) {
  int fd = accept4((int)listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return fd < 0 ? MSOCK_INVALID : (msock_t)fd;
}

long msock_recv(msock_t s, void *buf, size_t len) {
  ssize_t n = recv((int)s, buf, len, 0);
  if (n >= 0)
    return (long)n;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

long msock_send(msock_t s, const void *buf, size_t len) {
  ssize_t n = send((int)s, buf, len, MSG_NOSIGNAL);
  if (n >= 0)
    return (long)n;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

void msock_shutdown_send(msock_t s) { shutdown((int)s, SHUT_WR); }

void msock_close(msock_t s) {
  if (s != MSOCK_INVALID)
    close((int)s);
}

int msock_wait(msock_poll_t *set, size_t count, int timeout_ms) {
  struct pollfd fds[64 + 2];
  if (count > sizeof fds / sizeof fds[0])
    return -1;
  for (size_t i = 0; i < count; i++) {
    fds[i].fd = (int)set[i].sock;
    fds[i].events = (short)((set[i].events & MSOCK_IN ? POLLIN : 0) |
                            (set[i].events & MSOCK_OUT ? POLLOUT : 0));
    fds[i].revents = 0;
  }
  int n = poll(fds, (nfds_t)count, timeout_ms);
  if (n < 0)
    return errno == EINTR ? 0 : -1;
  for (size_t i = 0; i < count; i++) {
    short r = fds[i].revents;
    set[i].revents = (r & (POLLIN | POLLERR | POLLHUP | POLLNVAL) ? MSOCK_IN : 0) |
                     (r & POLLOUT ? MSOCK_OUT : 0);
  }
  return n;
}

int msock_waker_open(msock_t *out, char *err, size_t err_len) {
  /* A pipe would do here; a loopback UDP socket keeps both platforms alike
   * in metrics.c (one descriptor, read and written). */
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0 ||
      connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    snprintf(err, err_len, "cannot make the metrics thread's wake socket: %s",
             strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  *out = (msock_t)fd;
  return 0;
}

void msock_wake(msock_t waker) {
  char byte = 1;
  (void)!send((int)waker, &byte, 1, MSG_NOSIGNAL);
}

void msock_waker_drain(msock_t waker) {
  char buf[64];
  while (recv((int)waker, buf, sizeof buf, 0) > 0) {
  }
}

void msock_thread_background(void) {
  /* Nice 19 for this thread alone (Linux's nice is per thread): a worker
   * that wakes preempts it, and a busy CPU still gives it a small share,
   * so a scrape is late under full load but never starved. */
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
}

#endif
