/* What an idle session costs in user space: opens IOCPHOST_BENCH_SESSIONS
 * (default 10,000) connections to an in-process server service, waits until
 * all are open, and divides the heap growth (mallinfo2) by their number.
 * The clients live in a forked child so that both ends fit the descriptor
 * limit, and so that their memory is not counted. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/internal.h"

static void on_connected(session_t *s) { (void)s; }
static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  session_send(s, data, len);
  return len;
}
static void on_disconnected(session_t *s, session_reason_t reason) {
  (void)s;
  (void)reason;
}
static const session_handler_t handler = {on_connected, on_recv,
                                          on_disconnected, NULL, NULL};

/* IOCPHOST_BENCH_EXTRA_BYTES: extra state per session, in the session's
 * own block, as the host asks for its record (16 bytes, host_internal.h)
 * plus a plugin's session_size: 16 measures the engine with the host's
 * record, which is what an idle session of a plugin without state costs. */
static size_t extra_bytes;

static size_t prepare(void *ctx, void **session_context) {
  (void)ctx;
  *session_context = NULL;
  return extra_bytes;
}

static void raise_fd_limit(long need) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max < (rlim_t)need)
    rl.rlim_max = (rlim_t)need; /* works when privileged */
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int run_clients(int port, long n, int ready_fd, int quit_fd) {
  raise_fd_limit(n + 64);
  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons((uint16_t)port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  long made = 0;
  for (; made < n; made++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
      perror("client connect");
      break;
    }
  }
  if (write(ready_fd, &made, sizeof made) != sizeof made)
    return 1;
  char c;
  (void)read(quit_fd, &c, 1); /* until the parent closes it */
  return 0;
}

int main(void) {
  const char *v = getenv("IOCPHOST_BENCH_SESSIONS");
  long n = v ? strtol(v, NULL, 10) : 10000;
  if (n <= 0)
    n = 10000;
  raise_fd_limit(n + 64);
  char err[256];
  core_t *core;
  if (core_create("bench", 2, CORE_BACKEND_DEFAULT, &core, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  service_options_t o;
  service_options_init(&o);
  o.name = "idle";
  address_parse("127.0.0.1:0", &o.address, err, sizeof err);
  o.factory.handler = &handler;
  const char *extra = getenv("IOCPHOST_BENCH_EXTRA_BYTES");
  extra_bytes = extra ? (size_t)strtoul(extra, NULL, 10) : 0;
  o.factory.prepare = prepare;
  o.max_sessions = (uint32_t)n + 1;
  /* IOCPHOST_BENCH_IDLE_TIMEOUT_MS: the same with an idle timeout set (what
   * the idle check costs per session). */
  const char *idle = getenv("IOCPHOST_BENCH_IDLE_TIMEOUT_MS");
  o.idle_timeout_ms = idle ? (uint32_t)strtoul(idle, NULL, 10) : 0;
  o.backlog = 4096;
  service_t *svc;
  if (service_create(core, &o, &svc, err, sizeof err) != 0 ||
      service_start(svc, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  address_t bound;
  service_local_address(svc, &bound);
  int port = address_port(&bound);

  int ready[2], quit[2];
  if (pipe(ready) != 0 || pipe(quit) != 0)
    return 1;
  struct mallinfo2 before = mallinfo2();
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    close(quit[1]);
    _exit(run_clients(port, n, ready[1], quit[0]));
  }
  close(ready[1]);
  close(quit[0]);
  long made = 0;
  if (read(ready[0], &made, sizeof made) != sizeof made || made != n) {
    fprintf(stderr, "the clients made %ld of %ld connections\n", made, n);
    kill(child, SIGKILL);
    return 1;
  }
  service_stats_t st;
  for (int i = 0; i < 30000; i++) {
    service_get_stats(svc, &st);
    if (st.sessions_now >= (uint64_t)n)
      break;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  service_get_stats(svc, &st);
  /* Let the sessions settle: on_connected ran, the first receive is
   * pending on every one. */
  struct timespec settle = {0, 200 * 1000000};
  nanosleep(&settle, NULL);
  struct mallinfo2 after = mallinfo2();
  /* In use: small chunks plus mmapped ones (big tables). */
  size_t used_before = before.uordblks + before.hblkhd;
  size_t used_after = after.uordblks + after.hblkhd;
  double per = ((double)used_after - (double)used_before) / (double)n;
  printf("idle sessions: %llu open of %ld\n",
         (unsigned long long)st.sessions_now, n);
  printf("sizeof(session_t): %zu bytes\n", sizeof(session_t));
  printf("heap growth: %zu bytes, %.1f bytes per idle session (goal <= 256)\n",
         used_after - used_before, per);
  close(quit[1]);
  waitpid(child, NULL, 0);
  service_destroy(svc);
  core_destroy(core);
  return st.sessions_now >= (uint64_t)n ? 0 : 1;
}
