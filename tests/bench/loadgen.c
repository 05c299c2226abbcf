/*
 * loadgen: the load generator of the side-by-side benchmarks (run.sh).
 *
 * One thread, one epoll instance, raw bytes over loopback. Five modes:
 *
 *   pingpong  closed loop: --conns connections each keep --depth messages of
 *             --size bytes in flight; a message is counted when its echo is
 *             back, and answered by the next one.
 *   rate      open loop: --rate messages per second in total, message k on
 *             connection k % conns at its scheduled time t0 + k / rate.
 *             Latency is measured from that scheduled time, not from when the
 *             client managed to send, so a stalled server (or client) shows
 *             in the tail instead of silently slowing the schedule down
 *             (no coordinated omission). Echoes still missing at the end
 *             count with the latency they had reached by then.
 *   churn     --concurrency connections at a time: connect, send one
 *             message, wait for its echo, close (the client closes first).
 *   idle      open --conns connections, echo one message on each so the
 *             server has surely set every one up, then measure the server's
 *             resident memory (VmRSS) growth per connection.
 *   listen    open --conns connections and only read: the server
 *             broadcasts (room ticks). Packets of --size bytes, each
 *             stamped with the monotonic time it was due at the server;
 *             reports packets delivered, the server's CPU per packet and
 *             the delivery delay from that stamp.
 *
 * --packet makes every message a packet of SPEC section 5 (uint16 size
 * including the 4-byte header, uint16 id, little-endian). A byte-stream echo
 * and a packet echo return the same bytes, so only the server differs.
 *
 * With --server-pid the server's CPU time (utime + stime from
 * /proc/PID/stat; utime, user space, also alone) is read at the start and
 * the end of the measured window, after the warm-up. The result is one line of key=value pairs on stdout.
 *
 * Bounded: loopback addresses only, limits on connections, sizes, rates and
 * time; every mode ends after --warmup + --duration (+ 1 s for late echoes
 * in rate mode, + a connect timeout in idle mode).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 60000
#define MAX_SIZE (1 << 20)
#define MAX_DURATION 120.0
#define MAX_RATE 2000000.0
#define READ_BUFFER_BYTES (256 * 1024)
#define EVENTS 1024
#define PACKET_HEADER 4
/* Rate mode: how long late echoes are awaited; how close the next send
 * must be for the client to poll instead of sleeping. */
#define DRAIN_NS 1000000000ull
#define SPIN_NS 200000ull
#define IDLE_CONNECT_NS 60000000000ull
#define LISTEN_READY_NS 60000000000ull

typedef struct options {
  const char *mode;
  struct sockaddr_in addr;
  int conns;
  int size;
  int depth;
  int packet;
  int verify;
  int concurrency;
  int sources;
  double rate;
  double duration;
  double warmup;
  double hold;
  pid_t server_pid;
  const char *latency_out;
} options_t;

typedef struct conn {
  int fd;
  uint32_t gen;
  uint8_t state;
  uint64_t sent;   /* bytes written */
  uint64_t target; /* pingpong: bytes that may be written so far */
  uint64_t recvd;  /* bytes read */
  /* rate mode: bytes the socket did not take yet, and a partial echo */
  uint8_t *out;
  size_t out_len, out_off, out_cap;
  uint8_t *rx;
  size_t rx_len;
  uint64_t msgs_sent, msgs_recvd;
} conn_t;

enum { C_FREE = 0, C_CONNECTING, C_OPEN, C_HELD, C_FAILED };

static options_t opt;
static int epfd = -1;
static conn_t *conns;
static uint8_t *tpl;    /* the message stream: repeated copies of one message */
static size_t tpl_len;  /* a multiple of opt.size */
static uint8_t *rbuf;   /* the one read buffer */
static uint64_t errors; /* connections that failed or lost bytes */
static char first_error[200];

/* ---- small helpers ---- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void note_error(const char *fmt, const char *detail) {
  if (errors++ == 0)
    snprintf(first_error, sizeof first_error, fmt, detail);
}

static void raise_fd_limit(long need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  if (rl.rlim_cur >= (rlim_t)need)
    return;
  rl.rlim_cur = rl.rlim_max < (rlim_t)need ? rl.rlim_max : (rlim_t)need;
  setrlimit(RLIMIT_NOFILE, &rl);
}

/* utime + stime of the whole process (every thread), in seconds; utime
 * alone into *user when it is not NULL. */
static double server_cpu(double *user) {
  if (opt.server_pid <= 0)
    return 0;
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)opt.server_pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char *p = strrchr(text, ')'); /* the command name may hold spaces */
  if (!p)
    return -1;
  unsigned long long utime = 0, stime = 0;
  /* After ")": field 3 (state) ... field 14 utime, field 15 stime. */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &utime, &stime) != 2)
    return -1;
  if (user)
    *user = (double)utime / (double)sysconf(_SC_CLK_TCK);
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static long server_rss_kb(void) {
  if (opt.server_pid <= 0)
    return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)opt.server_pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
      break;
  fclose(f);
  return kb;
}

static double client_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---- foreign load: what else ran on the CPUs of the server and client ----
 * Busy time of those CPUs (from /proc/stat) minus the CPU time of the two
 * processes, in percent of one CPU over the window. A shared machine runs
 * other work; run.sh repeats a run that was disturbed. Approximate: ticks,
 * and interrupt work done while a CPU idles counts as foreign. */

static cpu_set_t watched_cpus;

static void watch_cpus(void) {
  CPU_ZERO(&watched_cpus);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    CPU_OR(&watched_cpus, &watched_cpus, &set);
  if (opt.server_pid > 0 &&
      sched_getaffinity(opt.server_pid, sizeof set, &set) == 0)
    CPU_OR(&watched_cpus, &watched_cpus, &set);
}

/* Busy and stolen seconds of the watched CPUs. */
static void cpus_busy(double *busy, double *steal) {
  *busy = *steal = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f)
    return;
  char line[512];
  unsigned long long ticks_busy = 0, ticks_steal = 0;
  while (fgets(line, sizeof line, f)) {
    int cpu;
    unsigned long long user, nice, sys, idle, iowait, irq, softirq, st;
    if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu,
               &user, &nice, &sys, &idle, &iowait, &irq, &softirq, &st) != 9)
      continue;
    if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &watched_cpus))
      continue;
    ticks_busy += user + nice + sys + irq + softirq;
    ticks_steal += st;
  }
  fclose(f);
  double hz = (double)sysconf(_SC_CLK_TCK);
  *busy = (double)ticks_busy / hz;
  *steal = (double)ticks_steal / hz;
}

typedef struct window {
  uint64_t t;
  double server, server_user, client, busy, steal;
} window_t;

static void window_mark(window_t *w) {
  w->t = now_ns();
  w->server = server_cpu(&w->server_user);
  w->client = client_cpu();
  cpus_busy(&w->busy, &w->steal);
}

/* " other_pct=.. steal_pct=..": foreign load over the window a..b. */
static void report_foreign(const window_t *a, const window_t *b) {
  double secs = (b->t - a->t) / 1e9;
  double ours = (b->client - a->client) +
                (opt.server_pid > 0 ? b->server - a->server : 0);
  double other = (b->busy - a->busy) - ours;
  if (other < 0)
    other = 0;
  printf(" other_pct=%.1f steal_pct=%.1f", other * 100.0 / secs,
         (b->steal - a->steal) * 100.0 / secs);
}

/* ---- latency histogram: log-linear buckets in nanoseconds ----
 * Exact below 128 ns, then 64 buckets per power of two (1.6% wide). */

#define HIST_BUCKETS (128 + 41 * 64)
static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count, hist_max;

static int hist_index(uint64_t v) {
  if (v < 128)
    return (int)v;
  int e = 63 - __builtin_clzll(v);
  int shift = e - 6;
  int i = 128 + (e - 7) * 64 + (int)((v >> shift) - 64);
  return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

static uint64_t hist_value(int i) {
  if (i < 128)
    return (uint64_t)i;
  int e = (i - 128) / 64 + 7, m = (i - 128) % 64 + 64, shift = e - 6;
  return ((uint64_t)m << shift) + ((1ull << shift) >> 1); /* mid-bucket */
}

static void hist_record(uint64_t v) {
  hist[hist_index(v)]++;
  hist_count++;
  if (v > hist_max)
    hist_max = v;
}

/* The value at percentile p (0..100). */
static uint64_t hist_at(double p) {
  if (hist_count == 0)
    return 0;
  uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)hist_count);
  if (rank < 1)
    rank = 1;
  uint64_t seen = 0;
  for (int i = 0; i < HIST_BUCKETS; i++) {
    seen += hist[i];
    if (seen >= rank) {
      uint64_t v = hist_value(i);
      return v > hist_max ? hist_max : v;
    }
  }
  return hist_max;
}

/* Percentile spectrum for plotting: p = 1 - 2^(-j/4) until the last
 * sample, then the maximum. Columns: percentile, 1/(1-p), latency in us. */
static void hist_write(const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "loadgen: cannot write %s\n", path);
    return;
  }
  fprintf(f, "# percentile one_over_one_minus_p latency_us (%llu samples)\n",
          (unsigned long long)hist_count);
  for (int j = 0;; j++) {
    double tail = pow(2.0, -j / 4.0);
    double p = 1.0 - tail;
    if (tail * (double)hist_count < 1.0)
      break;
    fprintf(f, "%.6f %.3f %.3f\n", p * 100, 1.0 / tail,
            hist_at(p * 100) / 1000.0);
  }
  fprintf(f, "%.6f %.3f %.3f\n", 100.0, (double)hist_count, hist_max / 1000.0);
  fclose(f);
}

/* ---- messages ---- */

static void put_le16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

/* One message: the packet header when framed, then a byte pattern. */
static void fill_message(uint8_t *m) {
  for (int i = 0; i < opt.size; i++)
    m[i] = (uint8_t)('a' + i % 26);
  if (opt.packet) {
    put_le16(m, (uint16_t)opt.size);
    put_le16(m + 2, 7);
  }
}

static void build_template(void) {
  size_t copies = (size_t)(2 * READ_BUFFER_BYTES) / (size_t)opt.size + 2;
  tpl_len = copies * (size_t)opt.size;
  tpl = malloc(tpl_len);
  if (!tpl)
    fail("malloc");
  for (size_t i = 0; i < copies; i++)
    fill_message(tpl + i * (size_t)opt.size);
}

/* Bytes of the stream at stream offset pos compared with the template. */
static int stream_matches(uint64_t pos, const uint8_t *data, size_t len) {
  while (len > 0) {
    size_t off = (size_t)(pos % (uint64_t)opt.size);
    size_t n = tpl_len - off < len ? tpl_len - off : len;
    if (memcmp(tpl + off, data, n) != 0)
      return 0;
    data += n;
    len -= n;
    pos += n;
  }
  return 1;
}

/* ---- connections ---- */

static int socket_nonblocking(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    fail("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void watch(conn_t *c, uint32_t index) {
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = ((uint64_t)c->gen << 32) | index;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
    fail("epoll_ctl");
}

/* Starts a non-blocking connect. With --sources > 1 the source address
 * rotates over 127.0.0.1.., so a churn run does not run out of ports to
 * TIME_WAIT (the client closes first). */
static void start_connect(conn_t *c, uint32_t index, uint64_t serial) {
  c->fd = socket_nonblocking();
  c->gen++;
  c->sent = c->recvd = c->target = 0;
  c->rx_len = 0;
  if (opt.sources > 1) {
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in from = {0};
    from.sin_family = AF_INET;
    from.sin_addr.s_addr =
        htonl(0x7f000001u + (uint32_t)(serial % (uint64_t)opt.sources));
    if (bind(c->fd, (struct sockaddr *)&from, sizeof from) != 0)
      fail("bind");
  }
  int rc = connect(c->fd, (struct sockaddr *)&opt.addr, sizeof opt.addr);
  if (rc != 0 && errno != EINPROGRESS) {
    note_error("connect: %s", strerror(errno));
    close(c->fd);
    c->fd = -1;
    c->state = C_FAILED;
    return;
  }
  c->state = rc == 0 ? C_OPEN : C_CONNECTING;
  watch(c, index);
}

/* Connect finished (EPOLLOUT while connecting): 1 if it succeeded. */
static int connect_done(conn_t *c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) {
    note_error("connect: %s", strerror(err));
    close(c->fd);
    c->fd = -1;
    c->state = C_FAILED;
    return 0;
  }
  c->state = C_OPEN;
  return 1;
}

/* Opens opt.conns connections, at most 256 connecting at once. */
static void connect_all(void) {
  int started = 0, open = 0, connecting = 0;
  struct epoll_event evs[EVENTS];
  uint64_t deadline = now_ns() + 20000000000ull;
  while (open < opt.conns) {
    while (started < opt.conns && connecting < 256) {
      start_connect(&conns[started], (uint32_t)started, (uint64_t)started);
      if (conns[started].state == C_FAILED) {
        fprintf(stderr, "loadgen: %s\n", first_error);
        exit(1);
      }
      if (conns[started].state == C_OPEN)
        open++;
      else
        connecting++;
      started++;
    }
    if (open >= opt.conns)
      break;
    int n = epoll_wait(epfd, evs, EVENTS, 100);
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[(uint32_t)evs[i].data.u64];
      if (c->state != C_CONNECTING ||
          !(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        continue;
      connecting--;
      if (!connect_done(c)) {
        fprintf(stderr, "loadgen: %s\n", first_error);
        exit(1);
      }
      open++;
    }
    if (now_ns() > deadline) {
      fprintf(stderr, "loadgen: %d of %d connections open after 20 s\n", open,
              opt.conns);
      exit(1);
    }
  }
}

static void close_all(void) {
  for (int i = 0; i < opt.conns; i++)
    if (conns[i].fd >= 0) {
      close(conns[i].fd);
      conns[i].fd = -1;
    }
}

/* Reads what is there; returns bytes read, -1 when the connection ended.
 * A short read means the socket is drained (edge-triggered: the next bytes
 * bring a new edge). */
static long read_some(conn_t *c, const uint8_t **data) {
  ssize_t n;
  do {
    n = read(c->fd, rbuf, READ_BUFFER_BYTES);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    *data = rbuf;
    return (long)n;
  }
  if (n == 0) {
    note_error("%s", "the server closed a connection");
    return -1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return 0;
  note_error("read: %s", strerror(errno));
  return -1;
}

static void drop(conn_t *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->state = C_FAILED;
}

/* ---- pingpong ---- */

static uint64_t pp_done; /* echoed messages, all connections */

static void pp_write(conn_t *c) {
  while (c->sent < c->target) {
    size_t off = (size_t)(c->sent % (uint64_t)opt.size);
    uint64_t want = c->target - c->sent;
    size_t len = want < tpl_len - off ? (size_t)want : tpl_len - off;
    ssize_t n = write(c->fd, tpl + off, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        note_error("write: %s", strerror(errno));
        drop(c);
      }
      return;
    }
    c->sent += (uint64_t)n;
    if ((size_t)n < len)
      return; /* the socket is full: EPOLLOUT brings the next edge */
  }
}

static void pp_read(conn_t *c) {
  for (;;) {
    const uint8_t *data;
    long n = read_some(c, &data);
    if (n < 0) {
      drop(c);
      return;
    }
    if (n == 0)
      break;
    if (opt.verify && !stream_matches(c->recvd, data, (size_t)n)) {
      note_error("%s", "an echo differs from what was sent");
      drop(c);
      return;
    }
    uint64_t before = c->recvd / (uint64_t)opt.size;
    c->recvd += (uint64_t)n;
    uint64_t after = c->recvd / (uint64_t)opt.size;
    pp_done += after - before;
    if (c->recvd > c->sent) {
      note_error("%s", "the server sent more than it was sent");
      drop(c);
      return;
    }
    if (n < READ_BUFFER_BYTES)
      break;
  }
  c->target = (c->recvd / (uint64_t)opt.size + (uint64_t)opt.depth) *
              (uint64_t)opt.size;
  pp_write(c);
}

static void report_common(const window_t *a, const window_t *b, uint64_t msgs) {
  double secs = (b->t - a->t) / 1e9;
  double cpu_s = b->server - a->server, client_s = b->client - a->client;
  printf(" secs=%.3f msgs=%llu msgs_per_s=%.0f mib_per_s=%.2f", secs,
         (unsigned long long)msgs, msgs / secs,
         msgs * (double)opt.size / secs / 1048576.0);
  if (opt.server_pid > 0)
    printf(" server_cpu_s=%.3f server_cpu_us_per_msg=%.3f server_cpu_pct=%.1f"
           " server_user_us_per_msg=%.3f",
           cpu_s, msgs ? cpu_s * 1e6 / (double)msgs : 0.0,
           cpu_s * 100.0 / secs,
           msgs ? (b->server_user - a->server_user) * 1e6 / (double)msgs : 0.0);
  printf(" client_cpu_us_per_msg=%.3f client_cpu_pct=%.1f",
         msgs ? client_s * 1e6 / (double)msgs : 0.0, client_s * 100.0 / secs);
  report_foreign(a, b);
}

static int run_pingpong(void) {
  connect_all();
  for (int i = 0; i < opt.conns; i++) {
    conns[i].target = (uint64_t)opt.depth * (uint64_t)opt.size;
    pp_write(&conns[i]);
  }
  struct epoll_event evs[EVENTS];
  uint64_t start = now_ns();
  uint64_t measure_at = start + (uint64_t)(opt.warmup * 1e9);
  uint64_t end = measure_at + (uint64_t)(opt.duration * 1e9);
  int measuring = 0;
  uint64_t msgs0 = 0;
  window_t w0, w1;
  for (;;) {
    int n = epoll_wait(epfd, evs, EVENTS, 50);
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[(uint32_t)evs[i].data.u64];
      if (c->fd < 0)
        continue;
      if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        pp_read(c);
      if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
        pp_write(c);
    }
    uint64_t now = now_ns();
    if (!measuring && now >= measure_at) {
      measuring = 1;
      msgs0 = pp_done;
      window_mark(&w0);
    }
    if (now >= end || errors)
      break;
  }
  if (!measuring)
    window_mark(&w0);
  window_mark(&w1);
  uint64_t msgs = pp_done - msgs0;
  close_all();
  printf("mode=pingpong conns=%d size=%d depth=%d packet=%d", opt.conns,
         opt.size, opt.depth, opt.packet);
  report_common(&w0, &w1, msgs);
  printf(" total_msgs=%llu errors=%llu\n", (unsigned long long)pp_done,
         (unsigned long long)errors);
  if (errors)
    fprintf(stderr, "loadgen: %s\n", first_error);
  return errors ? 1 : 0;
}

/* ---- rate (open loop) ---- */

static uint64_t rate_t0;
static double rate_interval;       /* ns between messages */
static uint64_t rate_measure_from; /* messages scheduled before: warm-up */

static uint64_t sched_of(uint64_t k) {
  return rate_t0 + (uint64_t)((double)k * rate_interval);
}

static int out_append(conn_t *c, const uint8_t *m, size_t len) {
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
  memcpy(c->out + c->out_len, m, len);
  c->out_len += len;
  return 0;
}

static void rate_flush(conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        note_error("write: %s", strerror(errno));
        drop(c);
      }
      return;
    }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
}

/* A message carries its own scheduled time after the (optional) header. */
static void rate_send(conn_t *c, uint64_t sched) {
  uint8_t *m = tpl; /* the first message of the template is scratch here */
  size_t at = opt.packet ? PACKET_HEADER : 0;
  memcpy(m + at, &sched, sizeof sched);
  c->msgs_sent++;
  if (c->out_len == 0) {
    ssize_t n;
    do {
      n = write(c->fd, m, (size_t)opt.size);
    } while (n < 0 && errno == EINTR);
    if (n == opt.size)
      return;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      note_error("write: %s", strerror(errno));
      drop(c);
      return;
    }
    if (n < 0)
      n = 0;
    if (out_append(c, m + n, (size_t)opt.size - (size_t)n) != 0)
      fail("realloc");
    return;
  }
  if (out_append(c, m, (size_t)opt.size) != 0)
    fail("realloc");
}

static uint64_t rate_got, rate_got_measured;

static void rate_message(conn_t *c, const uint8_t *m, uint64_t now) {
  uint64_t sched;
  memcpy(&sched, m + (opt.packet ? PACKET_HEADER : 0), sizeof sched);
  c->msgs_recvd++;
  rate_got++;
  if (sched >= sched_of(rate_measure_from)) {
    hist_record(now > sched ? now - sched : 0);
    rate_got_measured++;
  }
}

/* Reads what is there, cut into messages of --size bytes (a partial one is
 * kept for the next read); on_message gets each whole one. */
typedef void (*message_fn)(conn_t *c, const uint8_t *m, uint64_t now);

static void read_messages(conn_t *c, uint64_t now, message_fn on_message) {
  size_t size = (size_t)opt.size;
  for (;;) {
    const uint8_t *data;
    long n = read_some(c, &data);
    if (n < 0) {
      drop(c);
      return;
    }
    if (n == 0)
      return;
    size_t len = (size_t)n;
    if (c->rx_len > 0) { /* complete the partial message first */
      size_t take = size - c->rx_len < len ? size - c->rx_len : len;
      memcpy(c->rx + c->rx_len, data, take);
      c->rx_len += take;
      data += take;
      len -= take;
      if (c->rx_len == size) {
        on_message(c, c->rx, now);
        c->rx_len = 0;
      }
    }
    while (len >= size && c->fd >= 0) {
      on_message(c, data, now);
      data += size;
      len -= size;
    }
    if (c->fd < 0)
      return;
    if (len > 0) {
      memcpy(c->rx, data, len);
      c->rx_len = len;
    }
    if (n < READ_BUFFER_BYTES)
      return;
  }
}

static int run_rate(void) {
  size_t at = opt.packet ? PACKET_HEADER : 0;
  if ((size_t)opt.size < at + 8) {
    fprintf(stderr, "loadgen: rate mode needs --size >= %zu\n", at + 8);
    return 2;
  }
  /* Sleep precisely: the default 50 us timer slack would blur every wait. */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  connect_all();
  for (int i = 0; i < opt.conns; i++) {
    conns[i].rx = malloc((size_t)opt.size);
    if (!conns[i].rx)
      fail("malloc");
  }
  rate_interval = 1e9 / opt.rate;
  uint64_t total = (uint64_t)((opt.warmup + opt.duration) * opt.rate);
  rate_measure_from = (uint64_t)(opt.warmup * opt.rate);
  rate_t0 = now_ns() + 10000000ull;
  uint64_t next = 0;
  uint64_t drain_until = sched_of(total) + DRAIN_NS;
  int measuring = 0, measured_end = 0;
  window_t w0, w1;
  struct epoll_event evs[EVENTS];
  for (;;) {
    uint64_t now = now_ns();
    while (next < total && sched_of(next) <= now) {
      conn_t *c = &conns[next % (uint64_t)opt.conns];
      if (c->fd >= 0)
        rate_send(c, sched_of(next));
      next++;
    }
    if (!measuring && next >= rate_measure_from) {
      measuring = 1;
      window_mark(&w0);
    }
    if (!measured_end && next >= total) {
      measured_end = 1;
      window_mark(&w1);
    }
    if ((next >= total && rate_got + errors >= total) || now >= drain_until ||
        errors)
      break;
    uint64_t wake = next < total ? sched_of(next) : drain_until;
    struct timespec ts = {0, 0};
    /* Spin (poll without sleeping) when the next send is near: waking from
     * a sleep costs tens of microseconds on a virtual machine, and would be
     * charged to the server's latency. */
    if (wake > now + SPIN_NS) {
      ts.tv_sec = (time_t)((wake - now) / 1000000000ull);
      ts.tv_nsec = (long)((wake - now) % 1000000000ull);
    }
    int n = epoll_pwait2(epfd, evs, EVENTS, &ts, NULL);
    if (n < 0 && errno != EINTR)
      fail("epoll_pwait2");
    uint64_t got_at = now_ns();
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[(uint32_t)evs[i].data.u64];
      if (c->fd < 0)
        continue;
      if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        read_messages(c, got_at, rate_message);
      if (c->fd >= 0 && (evs[i].events & EPOLLOUT) && c->out_len)
        rate_flush(c);
    }
  }
  /* Echoes that never came count with the latency they had reached. */
  uint64_t end = now_ns(), missing = 0;
  for (int i = 0; i < opt.conns; i++) {
    conn_t *c = &conns[i];
    for (uint64_t j = c->msgs_recvd; j < c->msgs_sent; j++) {
      uint64_t k = j * (uint64_t)opt.conns + (uint64_t)i;
      missing++;
      if (k >= rate_measure_from)
        hist_record(end - sched_of(k));
    }
  }
  close_all();
  if (!measuring) /* ended early, by errors */
    window_mark(&w0);
  if (!measured_end)
    window_mark(&w1);
  uint64_t msgs = total - rate_measure_from;
  printf("mode=rate conns=%d size=%d rate=%.0f packet=%d", opt.conns, opt.size,
         opt.rate, opt.packet);
  report_common(&w0, &w1, msgs);
  printf(" p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f p9999_us=%.1f "
         "max_us=%.1f samples=%llu missing=%llu total_msgs=%llu errors=%llu\n",
         hist_at(50) / 1e3, hist_at(90) / 1e3, hist_at(99) / 1e3,
         hist_at(99.9) / 1e3, hist_at(99.99) / 1e3, hist_max / 1e3,
         (unsigned long long)hist_count, (unsigned long long)missing,
         (unsigned long long)rate_got, (unsigned long long)errors);
  if (opt.latency_out)
    hist_write(opt.latency_out);
  if (errors)
    fprintf(stderr, "loadgen: %s\n", first_error);
  return errors || missing ? 1 : 0;
}

/* ---- listen: broadcasts from the server ----
 * The server sends; the client only reads. Every message is a packet of
 * --size bytes whose payload starts with the monotonic time (ns) it was
 * due at the server (a room tick's due time): the delivery delay is now
 * minus that. Counted over the measured window, with the server's CPU. */

static uint64_t listen_got, listen_from, listen_until;
static int listen_reached; /* connections that got their first packet */

static void listen_message(conn_t *c, const uint8_t *m, uint64_t now) {
  if (opt.packet && (m[0] | m[1] << 8) != opt.size) {
    note_error("%s", "a packet of another size than --size came");
    drop(c);
    return;
  }
  if (c->msgs_recvd++ == 0)
    listen_reached++;
  if (now < listen_from || now >= listen_until)
    return;
  uint64_t due;
  memcpy(&due, m + (opt.packet ? PACKET_HEADER : 0), sizeof due);
  hist_record(now > due ? now - due : 0);
  listen_got++;
}

static int run_listen(void) {
  size_t at = opt.packet ? PACKET_HEADER : 0;
  if ((size_t)opt.size < at + 8) {
    fprintf(stderr, "loadgen: listen mode needs --size >= %zu\n", at + 8);
    return 2;
  }
  for (int i = 0; i < opt.conns; i++) {
    conns[i].rx = malloc((size_t)opt.size);
    if (!conns[i].rx)
      fail("malloc");
  }
  connect_all();
  /* Bytes that came while connecting raised edges nobody read. */
  uint64_t start = now_ns();
  listen_from = listen_until = UINT64_MAX; /* nothing counts yet */
  for (int i = 0; i < opt.conns; i++)
    if (conns[i].fd >= 0)
      read_messages(&conns[i], start, listen_message);
  /* A connection the kernel accepted may not be the server's yet: the
   * warm-up starts when every one has had a packet, so every room is full
   * (bounded: LISTEN_READY_NS). */
  struct epoll_event evs[EVENTS];
  while (listen_reached < opt.conns && !errors) {
    if (now_ns() - start > LISTEN_READY_NS) {
      fprintf(stderr,
              "loadgen: %d of %d connections got a packet within %.0f s: is "
              "the server broadcasting to every connection?\n",
              listen_reached, opt.conns, LISTEN_READY_NS / 1e9);
      return 1;
    }
    int n = epoll_wait(epfd, evs, EVENTS, 100);
    if (n < 0 && errno != EINTR)
      fail("epoll_wait");
    uint64_t got_at = now_ns();
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[(uint32_t)evs[i].data.u64];
      if (c->fd >= 0 &&
          (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        read_messages(c, got_at, listen_message);
    }
  }
  uint64_t ready = now_ns();
  listen_from = ready + (uint64_t)(opt.warmup * 1e9);
  listen_until = listen_from + (uint64_t)(opt.duration * 1e9);
  int measuring = 0;
  window_t w0, w1;
  for (;;) {
    uint64_t now = now_ns();
    if (!measuring && now >= listen_from) {
      measuring = 1;
      window_mark(&w0);
    }
    if (now >= listen_until || errors)
      break;
    uint64_t wake = measuring ? listen_until : listen_from;
    int ms = (int)((wake - now) / 1000000u) + 1;
    int n = epoll_wait(epfd, evs, EVENTS, ms);
    if (n < 0 && errno != EINTR)
      fail("epoll_wait");
    uint64_t got_at = now_ns();
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[(uint32_t)evs[i].data.u64];
      if (c->fd >= 0 &&
          (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        read_messages(c, got_at, listen_message);
    }
  }
  if (!measuring)
    window_mark(&w0);
  window_mark(&w1);
  close_all();
  printf("mode=listen conns=%d size=%d packet=%d ready_s=%.2f", opt.conns,
         opt.size, opt.packet, (ready - start) / 1e9);
  report_common(&w0, &w1, listen_got);
  printf(" delivery_p50_us=%.1f delivery_p99_us=%.1f delivery_max_us=%.1f "
         "errors=%llu\n",
         hist_at(50) / 1e3, hist_at(99) / 1e3, hist_max / 1e3,
         (unsigned long long)errors);
  if (errors)
    fprintf(stderr, "loadgen: %s\n", first_error);
  return errors ? 1 : 0;
}

/* ---- churn ---- */

static uint64_t churn_done, churn_serial;

static void churn_start(uint32_t i) {
  conn_t *c = &conns[i];
  for (int tries = 0; tries < 3; tries++) {
    start_connect(c, i, churn_serial++);
    if (c->state != C_FAILED)
      break;
  }
  if (c->state == C_OPEN) {
    c->target = (uint64_t)opt.size;
    pp_write(c);
  }
}

static int run_churn(void) {
  opt.conns = opt.concurrency;
  struct epoll_event evs[EVENTS];
  for (int i = 0; i < opt.conns; i++)
    churn_start((uint32_t)i);
  uint64_t start = now_ns();
  uint64_t measure_at = start + (uint64_t)(opt.warmup * 1e9);
  uint64_t end = measure_at + (uint64_t)(opt.duration * 1e9);
  int measuring = 0;
  uint64_t done0 = 0;
  window_t w0, w1;
  for (;;) {
    int n = epoll_wait(epfd, evs, EVENTS, 50);
    for (int i = 0; i < n; i++) {
      uint32_t index = (uint32_t)evs[i].data.u64;
      conn_t *c = &conns[index];
      if (c->fd < 0 || (uint32_t)(evs[i].data.u64 >> 32) != c->gen)
        continue;
      if (c->state == C_CONNECTING) {
        if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
          continue;
        if (!connect_done(c)) {
          churn_start(index);
          continue;
        }
        c->target = (uint64_t)opt.size;
        pp_write(c);
      }
      if (c->fd >= 0 &&
          (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        const uint8_t *data;
        long got;
        while ((got = read_some(c, &data)) > 0)
          c->recvd += (uint64_t)got;
        if (got < 0) {
          drop(c);
          churn_start(index);
          continue;
        }
        if (c->recvd >= (uint64_t)opt.size) {
          close(c->fd);
          c->fd = -1;
          churn_done++;
          churn_start(index);
          continue;
        }
      }
      if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
        pp_write(c);
    }
    uint64_t now = now_ns();
    if (!measuring && now >= measure_at) {
      measuring = 1;
      done0 = churn_done;
      window_mark(&w0);
    }
    if (now >= end || errors > 100)
      break;
  }
  if (!measuring)
    window_mark(&w0);
  window_mark(&w1);
  close_all();
  double secs = (w1.t - w0.t) / 1e9;
  double cpu = w1.server - w0.server;
  uint64_t done = churn_done - done0;
  printf("mode=churn concurrency=%d size=%d packet=%d secs=%.3f "
         "connections=%llu accepts_per_s=%.0f",
         opt.concurrency, opt.size, opt.packet, secs, (unsigned long long)done,
         done / secs);
  if (opt.server_pid > 0)
    printf(" server_cpu_s=%.3f server_cpu_us_per_conn=%.3f server_cpu_pct=%.1f",
           cpu, done ? cpu * 1e6 / (double)done : 0.0, cpu * 100.0 / secs);
  printf(" client_cpu_pct=%.1f", (w1.client - w0.client) * 100.0 / secs);
  report_foreign(&w0, &w1);
  printf(" total_msgs=%llu errors=%llu\n", (unsigned long long)churn_done,
         (unsigned long long)errors);
  if (errors)
    fprintf(stderr, "loadgen: %llu errors, first: %s\n",
            (unsigned long long)errors, first_error);
  return errors > 100 ? 1 : 0;
}

/* ---- idle ---- */

static int run_idle(void) {
  long rss0 = server_rss_kb();
  struct epoll_event evs[EVENTS];
  int started = 0, connecting = 0, held = 0;
  uint64_t deadline = now_ns() + IDLE_CONNECT_NS;
  while (held < opt.conns) {
    while (started < opt.conns && connecting < 256) {
      conn_t *c = &conns[started];
      start_connect(c, (uint32_t)started, (uint64_t)started);
      if (c->state == C_FAILED) {
        fprintf(stderr, "loadgen: %s\n", first_error);
        return 1;
      }
      connecting++;
      if (c->state == C_OPEN) {
        c->target = (uint64_t)opt.size;
        pp_write(c);
      }
      started++;
    }
    int n = epoll_wait(epfd, evs, EVENTS, 100);
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[(uint32_t)evs[i].data.u64];
      if (c->fd < 0 || c->state == C_HELD)
        continue;
      if (c->state == C_CONNECTING) {
        if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
          continue;
        if (!connect_done(c)) {
          fprintf(stderr, "loadgen: %s\n", first_error);
          return 1;
        }
        c->target = (uint64_t)opt.size;
      }
      pp_write(c);
      const uint8_t *data;
      long got;
      while ((got = read_some(c, &data)) > 0)
        c->recvd += (uint64_t)got;
      if (got < 0) {
        fprintf(stderr, "loadgen: %s\n", first_error);
        return 1;
      }
      if (c->recvd >= (uint64_t)opt.size) {
        c->state = C_HELD;
        connecting--;
        held++;
      }
    }
    if (now_ns() > deadline) {
      fprintf(stderr, "loadgen: %d of %d connections echoed in time\n", held,
              opt.conns);
      return 1;
    }
  }
  /* Let the server finish what follows an echo (freeing send buffers). */
  struct timespec settle = {0, 500000000};
  nanosleep(&settle, NULL);
  long rss1 = server_rss_kb();
  printf("mode=idle conns=%d packet=%d", opt.conns, opt.packet);
  if (opt.server_pid > 0)
    printf(" rss_before_kb=%ld rss_after_kb=%ld rss_bytes_per_conn=%.1f", rss0,
           rss1, (double)(rss1 - rss0) * 1024.0 / opt.conns);
  printf(" errors=%llu\n", (unsigned long long)errors);
  fflush(stdout);
  if (opt.hold > 0) {
    struct timespec ts = {(time_t)opt.hold,
                          (long)((opt.hold - (time_t)opt.hold) * 1e9)};
    nanosleep(&ts, NULL);
  }
  close_all();
  return 0;
}

/* ---- command line ---- */

static void usage(void) {
  fprintf(
      stderr,
      "usage: loadgen MODE --port P [options]\n"
      "modes: pingpong | rate | churn | idle | listen\n"
      "  --host A          loopback IPv4 address (default 127.0.0.1)\n"
      "  --conns N         connections (default 100)\n"
      "  --size B          message size in bytes, header included (64)\n"
      "  --depth D         pingpong: messages in flight per connection (1)\n"
      "  --rate R          rate: messages per second in total (50000)\n"
      "  --duration S      measured seconds (2)\n"
      "  --warmup S        seconds before measuring (0.5)\n"
      "  --concurrency C   churn: connections at a time (32)\n"
      "  --sources K       churn: rotate over 127.0.0.1..K (8)\n"
      "  --hold S          idle: hold the connections this long (0)\n"
      "  --packet          4-byte packet header (uint16 size, uint16 id)\n"
      "  --verify          pingpong: compare every echoed byte\n"
      "  --server-pid PID  read the server's CPU time and RSS from /proc\n"
      "  --latency-out F   rate: write the percentile spectrum to F\n");
  exit(2);
}

static double num_arg(const char *s, double lo, double hi, const char *name) {
  char *end;
  double v = strtod(s, &end);
  if (*end || v < lo || v > hi) {
    fprintf(stderr, "loadgen: %s must be within %g..%g\n", name, lo, hi);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc < 2)
    usage();
  opt.mode = argv[1];
  opt.addr.sin_family = AF_INET;
  opt.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  opt.conns = 100;
  opt.size = 64;
  opt.depth = 1;
  opt.rate = 50000;
  opt.duration = 2;
  opt.warmup = 0.5;
  opt.concurrency = 32;
  opt.sources = 8;
  int port = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDS_VALUE                                                            \
  do {                                                                         \
    if (!v)                                                                    \
      usage();                                                                 \
    i++;                                                                       \
  } while (0)
    if (strcmp(a, "--packet") == 0) {
      opt.packet = 1;
    } else if (strcmp(a, "--verify") == 0) {
      opt.verify = 1;
    } else if (strcmp(a, "--host") == 0) {
      NEEDS_VALUE;
      if (inet_pton(AF_INET, v, &opt.addr.sin_addr) != 1 ||
          (ntohl(opt.addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: --host must be a loopback IPv4 address\n");
        return 2;
      }
    } else if (strcmp(a, "--port") == 0) {
      NEEDS_VALUE;
      port = (int)num_arg(v, 1, 65535, a);
    } else if (strcmp(a, "--conns") == 0) {
      NEEDS_VALUE;
      opt.conns = (int)num_arg(v, 1, MAX_CONNS, a);
    } else if (strcmp(a, "--size") == 0) {
      NEEDS_VALUE;
      opt.size = (int)num_arg(v, 1, MAX_SIZE, a);
    } else if (strcmp(a, "--depth") == 0) {
      NEEDS_VALUE;
      opt.depth = (int)num_arg(v, 1, 1024, a);
    } else if (strcmp(a, "--rate") == 0) {
      NEEDS_VALUE;
      opt.rate = num_arg(v, 1, MAX_RATE, a);
    } else if (strcmp(a, "--duration") == 0) {
      NEEDS_VALUE;
      opt.duration = num_arg(v, 0.1, MAX_DURATION, a);
    } else if (strcmp(a, "--warmup") == 0) {
      NEEDS_VALUE;
      opt.warmup = num_arg(v, 0, 10, a);
    } else if (strcmp(a, "--concurrency") == 0) {
      NEEDS_VALUE;
      opt.concurrency = (int)num_arg(v, 1, 4096, a);
    } else if (strcmp(a, "--sources") == 0) {
      NEEDS_VALUE;
      opt.sources = (int)num_arg(v, 1, 250, a);
    } else if (strcmp(a, "--hold") == 0) {
      NEEDS_VALUE;
      opt.hold = num_arg(v, 0, MAX_DURATION, a);
    } else if (strcmp(a, "--server-pid") == 0) {
      NEEDS_VALUE;
      opt.server_pid = (pid_t)num_arg(v, 1, 4194304, a);
    } else if (strcmp(a, "--latency-out") == 0) {
      NEEDS_VALUE;
      opt.latency_out = v;
    } else {
      usage();
    }
#undef NEEDS_VALUE
  }
  if (!port)
    usage();
  opt.addr.sin_port = htons((uint16_t)port);
  if (opt.packet && (opt.size < PACKET_HEADER || opt.size > 65535)) {
    fprintf(stderr, "loadgen: a packet is 4..65535 bytes\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int slots = strcmp(opt.mode, "churn") == 0 ? opt.concurrency : opt.conns;
  raise_fd_limit(slots + 64);
  conns = calloc((size_t)slots, sizeof *conns);
  rbuf = malloc(READ_BUFFER_BYTES);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!conns || !rbuf || epfd < 0)
    fail("setup");
  for (int i = 0; i < slots; i++)
    conns[i].fd = -1;
  build_template();
  watch_cpus();
  int rc;
  if (strcmp(opt.mode, "pingpong") == 0)
    rc = run_pingpong();
  else if (strcmp(opt.mode, "rate") == 0)
    rc = run_rate();
  else if (strcmp(opt.mode, "churn") == 0)
    rc = run_churn();
  else if (strcmp(opt.mode, "idle") == 0)
    rc = run_idle();
  else if (strcmp(opt.mode, "listen") == 0)
    rc = run_listen();
  else
    usage();
  fflush(stdout);
  return rc;
}
