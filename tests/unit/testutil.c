#include "testutil.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#endif

uint64_t tu_now_ms(void) {
#ifdef _WIN32
  return (uint64_t)GetTickCount64();
#else
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
#endif
}

void tu_sleep_ms(int ms) {
#ifdef _WIN32
  Sleep((DWORD)ms);
#else
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
#endif
}

void tu_sleep_us(int us) {
#ifdef _WIN32
  Sleep((DWORD)((us + 999) / 1000));
#else
  struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
#endif
}

#ifdef _WIN32
static INIT_ONCE winsock_once = INIT_ONCE_STATIC_INIT;

static BOOL CALLBACK start_winsock(INIT_ONCE *once, void *param, void **ctx) {
  (void)once;
  (void)param;
  (void)ctx;
  WSADATA wsa;
  return WSAStartup(MAKEWORD(2, 2), &wsa) == 0;
}
#endif

int tu_socket(int family) {
#ifdef _WIN32
  InitOnceExecuteOnce(&winsock_once, start_winsock, NULL, NULL);
  SOCKET s = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                        WSA_FLAG_NO_HANDLE_INHERIT);
  return s == INVALID_SOCKET ? -1 : (int)s;
#else
  return socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
#endif
}

void tu_close(int fd) {
  if (fd < 0)
    return;
#ifdef _WIN32
  closesocket((SOCKET)fd);
#else
  close(fd);
#endif
}

void tu_set_nonblocking(int fd) {
#ifdef _WIN32
  u_long on = 1;
  ioctlsocket((SOCKET)fd, FIONBIO, &on);
#else
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
#endif
}

int tu_would_block(void) {
#ifdef _WIN32
  return WSAGetLastError() == WSAEWOULDBLOCK;
#else
  return errno == EAGAIN || errno == EWOULDBLOCK;
#endif
}

static int interrupted(void) {
#ifdef _WIN32
  return WSAGetLastError() == WSAEINTR;
#else
  return errno == EINTR;
#endif
}

int tu_connect(int port, int v6) {
  int fd = tu_socket(v6 ? AF_INET6 : AF_INET);
  if (fd < 0)
    return -1;
  int rc;
  if (v6) {
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)port);
    a.sin6_addr = in6addr_loopback;
    rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  } else {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  }
  if (rc != 0) {
    tu_close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (const void *)&one, sizeof one);
  return fd;
}

int tu_write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
    int n = (int)send(fd, p, chunk, MSG_NOSIGNAL);
    if (n < 0) {
      if (interrupted())
        continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Waits until fd is readable; 1 readable, 0 timeout, -1 error. */
static int wait_readable(int fd, uint64_t deadline) {
  for (;;) {
    uint64_t now = tu_now_ms();
    if (now >= deadline)
      return 0;
    struct pollfd pfd;
    memset(&pfd, 0, sizeof pfd);
    pfd.fd = fd;
    pfd.events = POLLIN;
    int r = poll(&pfd, 1, (int)(deadline - now));
    if (r < 0 && interrupted())
      continue;
    return r < 0 ? -1 : r > 0;
  }
}

int tu_read_exact(int fd, void *data, size_t len, int timeout_ms) {
  char *p = data;
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  while (len > 0) {
    if (wait_readable(fd, deadline) <= 0)
      return -1;
    int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
    int n = (int)recv(fd, p, chunk, 0);
    if (n < 0 && interrupted())
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int tu_wait_closed(int fd, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  char buf[4096];
  for (;;) {
    if (wait_readable(fd, deadline) <= 0)
      return 0;
    int n = (int)recv(fd, buf, sizeof buf, 0);
    if (n == 0)
      return 1;
    if (n < 0 && !interrupted() && !tu_would_block())
      return 2;
  }
}

void tu_set_reset_on_close(int fd) {
  struct linger lg;
  memset(&lg, 0, sizeof lg);
  lg.l_onoff = 1;
  lg.l_linger = 0;
  setsockopt(fd, SOL_SOCKET, SO_LINGER, (const void *)&lg, sizeof lg);
}

int tu_wait_until(int (*cond)(void *arg), void *arg, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    if (cond(arg))
      return 1;
    if (tu_now_ms() >= deadline)
      return 0;
    tu_sleep_ms(1);
  }
}

typedef struct at_least {
  atomic_int *counter;
  int want;
} at_least_t;

static int reached_at_least(void *arg) {
  at_least_t *a = arg;
  return atomic_load(a->counter) >= a->want;
}

int tu_wait_at_least(atomic_int *counter, int want, int timeout_ms) {
  at_least_t a = {counter, want};
  return tu_wait_until(reached_at_least, &a, timeout_ms);
}

int tu_free_port(void) {
  int fd = tu_socket(AF_INET);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    tu_close(fd);
    return -1;
  }
  tu_close(fd);
  return ntohs(a.sin_port);
}

int tu_closed_port(int *holder) {
  int fd = tu_socket(AF_INET);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    tu_close(fd);
    return -1;
  }
  *holder = fd;
  return ntohs(a.sin_port);
}

int tu_temp_file(char *path, size_t len, const char *prefix) {
#ifdef _WIN32
  char folder[MAX_PATH + 1], file[MAX_PATH + 1];
  DWORD n = GetTempPathA(sizeof folder, folder);
  if (n == 0 || n > MAX_PATH || GetTempFileNameA(folder, prefix, 0, file) == 0 ||
      strlen(file) >= len)
    return -1;
  memcpy(path, file, strlen(file) + 1);
  return 0;
#else
  int n = snprintf(path, len, "/tmp/%s-XXXXXX", prefix);
  if (n < 0 || (size_t)n >= len)
    return -1;
  int fd = mkstemp(path);
  if (fd < 0)
    return -1;
  close(fd);
  return 0;
#endif
}

void tu_raise_fd_limit(void) {
#ifndef _WIN32
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
#endif
}

uint64_t tu_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}
