/*
 * bcast_epoll: the floor for room broadcasts, the raw epoll twin of
 * plugins/room_broadcast (docs/benchmarks.md, "Rooms and work").
 *
 * One thread, one epoll instance, edge-triggered. ROOMS rooms tick every
 * PERIOD_MS from the start, each on its own schedule (due = start + n x
 * period, in whole monotonic milliseconds: the engine's timers work the
 * same way); connection n joins room n % ROOMS. A tick writes one packet
 * (the 4-byte header, the due time in monotonic nanoseconds, a byte
 * pattern: PAYLOAD bytes after the header) to every member's socket with
 * one write() each. Bytes a socket refuses wait in that connection's
 * buffer (later packets queue behind them); a connection whose buffer
 * passes 1 MiB is closed, as the host's send_queue_limit_bytes would, and
 * so is one whose write fails (closed_on_write counts both: at the end of
 * a run, the client's close makes most of them).
 *
 * While every room is full, each tick's lateness (microseconds after its
 * due millisecond) goes into the histogram of tick_hist.h. SIGTERM ends it
 * with one line on stderr, "bcast_epoll summary: ...", in the plugin's
 * form.
 *
 * usage: bcast_epoll PORT ROOMS MEMBERS PERIOD_MS PAYLOAD
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
#include <time.h>
#include <unistd.h>

#include "tick_hist.h"

#define EVENTS 256
#define OUT_LIMIT (1024 * 1024)
#define HEADER 4
#define MAX_PAYLOAD 1024

typedef struct conn {
  int fd;
  uint32_t room;
  uint32_t slot; /* index in the room's member array */
  uint8_t *out;  /* bytes the socket did not take yet */
  size_t out_len, out_off, out_cap;
} conn_t;

typedef struct room {
  conn_t **member;
  uint32_t count, cap;
  uint64_t due_ms;
} room_t;

static int epfd;
static room_t *rooms;
static uint32_t n_rooms, members_per_room, period_ms;
static size_t payload_len;
static uint64_t connections, members_now, packets_written, closed_on_write;
static tick_hist_t late_us;
static volatile sig_atomic_t stop;

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void on_term(int sig) {
  (void)sig;
  stop = 1;
}

static void conn_close(conn_t *c) {
  room_t *r = &rooms[c->room];
  r->member[c->slot] = r->member[--r->count];
  r->member[c->slot]->slot = c->slot;
  members_now--;
  close(c->fd); /* also leaves the epoll set */
  free(c->out);
  free(c);
}

/* Keeps bytes for later; -1 when the buffer would pass OUT_LIMIT. */
static int keep(conn_t *c, const uint8_t *data, size_t len) {
  if (c->out_len + len > OUT_LIMIT)
    return -1;
  if (c->out_len + len > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
    while (cap < c->out_len + len)
      cap *= 2;
    uint8_t *grown = realloc(c->out, cap);
    if (!grown)
      return -1;
    c->out = grown;
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, data, len);
  c->out_len += len;
  return 0;
}

/* Writes what waits; 0, or -1 when the connection failed. */
static int flush(conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
  return 0;
}

/* One packet to one member: straight to the socket when nothing waits. */
static int send_packet(conn_t *c, const uint8_t *p, size_t len) {
  if (c->out_len > c->out_off)
    return keep(c, p, len);
  ssize_t n;
  do {
    n = write(c->fd, p, len);
  } while (n < 0 && errno == EINTR);
  if (n == (ssize_t)len)
    return 0;
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -1;
    n = 0;
  }
  c->out_off = c->out_len = 0;
  return keep(c, p + n, len - (size_t)n);
}

static void tick(room_t *r) {
  uint64_t now = now_us(), due = r->due_ms * 1000u;
  if (members_now == (uint64_t)n_rooms * members_per_room)
    tick_hist_record(&late_us, now > due ? now - due : 0);
  uint8_t packet[HEADER + MAX_PAYLOAD];
  size_t len = HEADER + payload_len;
  packet[0] = (uint8_t)len;
  packet[1] = (uint8_t)(len >> 8);
  packet[2] = 7;
  packet[3] = 0;
  uint64_t due_ns = r->due_ms * 1000000u;
  memset(packet + HEADER, 'r', payload_len);
  memcpy(packet + HEADER, &due_ns, sizeof due_ns);
  for (uint32_t i = 0; i < r->count;) {
    conn_t *c = r->member[i];
    if (send_packet(c, packet, len) != 0) {
      closed_on_write++;
      conn_close(c); /* the last member moved into slot i */
      continue;
    }
    packets_written++;
    i++;
  }
  r->due_ms += period_ms; /* from the schedule: no drift */
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
    room_t *r = &rooms[connections % n_rooms];
    if (c && r->count == r->cap) {
      uint32_t cap = r->cap ? r->cap * 2 : 16;
      conn_t **grown = realloc(r->member, cap * sizeof *grown);
      if (grown) {
        r->member = grown;
        r->cap = cap;
      }
    }
    if (!c || r->count == r->cap) {
      free(c);
      close(fd);
      continue;
    }
    c->fd = fd;
    c->room = (uint32_t)(connections++ % n_rooms);
    c->slot = r->count;
    r->member[r->count++] = c;
    members_now++;
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
      conn_close(c);
  }
}

/* Clients send nothing; reading finds their close. -1: gone. */
static int on_readable(conn_t *c) {
  uint8_t sink[4096];
  for (;;) {
    ssize_t n = read(c->fd, sink, sizeof sink);
    if (n > 0)
      continue;
    if (n == 0)
      return -1;
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}

static long arg(const char *s, long lo, long hi, const char *name) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) {
    fprintf(stderr, "bcast_epoll: %s must be within %ld..%ld, not \"%s\"\n",
            name, lo, hi, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: bcast_epoll PORT ROOMS MEMBERS PERIOD_MS PAYLOAD\n");
    return 2;
  }
  int port = (int)arg(argv[1], 1, 65535, "PORT");
  n_rooms = (uint32_t)arg(argv[2], 1, 10000, "ROOMS");
  members_per_room = (uint32_t)arg(argv[3], 1, 100000, "MEMBERS");
  period_ms = (uint32_t)arg(argv[4], 1, 60000, "PERIOD_MS");
  payload_len = (size_t)arg(argv[5], 8, MAX_PAYLOAD, "PAYLOAD");
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {0};
  sa.sa_handler = on_term; /* no SA_RESTART: epoll_wait returns EINTR */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  rooms = calloc(n_rooms, sizeof *rooms);
  if (!rooms) {
    fprintf(stderr, "bcast_epoll: out of memory\n");
    return 3;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(lfd, 4096) != 0) {
    perror("bcast_epoll: listen");
    return 3;
  }
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
  uint64_t start_ms = now_us() / 1000u;
  for (uint32_t i = 0; i < n_rooms; i++)
    rooms[i].due_ms = start_ms + period_ms;
  struct epoll_event events[EVENTS];
  while (!stop) {
    uint64_t now_ms = now_us() / 1000u, next = UINT64_MAX;
    for (uint32_t i = 0; i < n_rooms; i++)
      if (rooms[i].due_ms < next)
        next = rooms[i].due_ms;
    int timeout = next > now_ms ? (int)(next - now_ms) : 0;
    int n = epoll_wait(epfd, events, EVENTS, timeout);
    if (n < 0 && errno != EINTR) {
      perror("bcast_epoll: epoll_wait");
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
        rc = flush(c);
      if (rc == 0 && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        rc = on_readable(c);
      if (rc != 0)
        conn_close(c);
    }
    now_ms = now_us() / 1000u;
    for (uint32_t i = 0; i < n_rooms; i++)
      if (rooms[i].due_ms <= now_ms)
        tick(&rooms[i]);
  }
  char line[256];
  tick_hist_format(&late_us, "late", line, sizeof line);
  fprintf(stderr,
          "bcast_epoll summary: rooms=%u members=%u period_ms=%u payload=%zu "
          "packets_queued=%llu closed_on_write=%llu%s\n",
          n_rooms, members_per_room, period_ms, payload_len,
          (unsigned long long)packets_written, (unsigned long long)closed_on_write,
          line);
  return 0;
}
