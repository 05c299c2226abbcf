/* Limits (SPEC section 7): max_sessions turns connections away without
 * stopping the listener, and running out of descriptors makes the listener
 * back off (no spinning, no dying) and serve again once descriptors return. */
#include <check.h>
#ifndef _WIN32
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>
#endif
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#include "engine/engine.h"
#include "testutil.h"

static atomic_int connected, disconnected, overlaps;

typedef struct sess {
  atomic_int in_cb;
} sess_t;

static size_t prepare(void *ctx, void **context) {
  (void)ctx;
  *context = NULL;
  return sizeof(sess_t);
}

static void enter(session_t *s) {
  sess_t *x = session_extra(s);
  if (atomic_exchange(&x->in_cb, 1))
    atomic_fetch_add(&overlaps, 1);
}
static void leave(session_t *s) {
  atomic_store(&((sess_t *)session_extra(s))->in_cb, 0);
}

static void on_connected(session_t *s) {
  enter(s);
  atomic_fetch_add(&connected, 1);
  leave(s);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  enter(s);
  session_send(s, data, len);
  leave(s);
  return len;
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  (void)reason;
  enter(s);
  atomic_fetch_add(&disconnected, 1);
  leave(s);
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
};

typedef struct rig {
  core_t *core;
  service_t *svc;
  int port;
} rig_t;

static void rig_start(rig_t *r, uint32_t max_sessions) {
  atomic_store(&connected, 0);
  atomic_store(&disconnected, 0);
  atomic_store(&overlaps, 0);
  char err[256];
  ck_assert_msg(core_create("limits", 2, CORE_BACKEND_DEFAULT, &r->core, err, sizeof err) == 0, "%s",
                err);
  service_options_t o;
  service_options_init(&o);
  o.name = "limits";
  ck_assert_int_eq(address_parse("127.0.0.1:0", &o.address, err, sizeof err),
                   0);
  o.factory.handler = &handler;
  o.factory.prepare = prepare;
  o.max_sessions = max_sessions;
  ck_assert_msg(service_create(r->core, &o, &r->svc, err, sizeof err) == 0,
                "%s", err);
  ck_assert_msg(service_start(r->svc, err, sizeof err) == 0, "%s", err);
  address_t bound;
  ck_assert_int_eq(service_local_address(r->svc, &bound), 0);
  r->port = address_port(&bound);
}

static void rig_stop(rig_t *r) {
  service_destroy(r->svc);
  core_destroy(r->core);
  ck_assert_int_eq(atomic_load(&overlaps), 0);
  ck_assert_int_eq(atomic_load(&connected), atomic_load(&disconnected));
  ck_assert_int_eq(engine_live_objects(), 0);
}

typedef struct stat_wait {
  service_t *svc;
  uint64_t want;
  int field; /* 0 accepted+rejected, 1 sessions_now, 2 accepted, 3 errors */
} stat_wait_t;

static int stat_reached(void *arg) {
  stat_wait_t *w = arg;
  service_stats_t st;
  service_get_stats(w->svc, &st);
  switch (w->field) {
  case 0:
    return st.accepted + st.rejected >= w->want;
  case 1:
    return st.sessions_now == w->want;
  case 2:
    return st.accepted >= w->want;
  default:
    return st.accept_errors >= w->want;
  }
}

static int wait_stat(service_t *svc, int field, uint64_t want, int timeout_ms) {
  stat_wait_t w = {svc, want, field};
  return tu_wait_until(stat_reached, &w, timeout_ms);
}

/* 1 if fd echoes a byte, 0 if the server closed it. */
static int echoes(int fd) {
  char c = 'e', back = 0;
  if (tu_write_all(fd, &c, 1) != 0)
    return 0;
  return tu_read_exact(fd, &back, 1, 3000) == 0 && back == c;
}

#define MAX_N 20

START_TEST(test_max_sessions_serves_n_rejects_the_rest_and_keeps_listening) {
  rig_t r;
  rig_start(&r, MAX_N);
  int fds[2 * MAX_N];
  for (int i = 0; i < 2 * MAX_N; i++) {
    fds[i] = tu_connect(r.port, 0);
    ck_assert_int_ge(fds[i], 0);
  }
  ck_assert(wait_stat(r.svc, 0, 2 * MAX_N, 5000));
  int served = 0, rejected = 0;
  int served_fd[2 * MAX_N];
  for (int i = 0; i < 2 * MAX_N; i++) {
    if (echoes(fds[i])) {
      served_fd[served++] = fds[i];
    } else {
      rejected++;
      tu_close(fds[i]);
    }
  }
  ck_assert_int_eq(served, MAX_N);
  ck_assert_int_eq(rejected, MAX_N);
  service_stats_t st;
  service_get_stats(r.svc, &st);
  ck_assert_uint_eq(st.rejected, MAX_N);
  ck_assert_uint_eq(st.accepted, MAX_N);
  ck_assert_uint_eq(st.sessions_now, MAX_N);
  /* Five leave; five newcomers are served. */
  for (int i = 0; i < 5; i++)
    tu_close(served_fd[i]);
  ck_assert(wait_stat(r.svc, 1, MAX_N - 5, 5000));
  for (int i = 0; i < 5; i++) {
    served_fd[i] = tu_connect(r.port, 0);
    ck_assert_int_ge(served_fd[i], 0);
    ck_assert(echoes(served_fd[i]));
  }
  service_get_stats(r.svc, &st);
  ck_assert_uint_eq(st.rejected, MAX_N);
  ck_assert_uint_eq(st.accepted, MAX_N + 5);
  for (int i = 0; i < MAX_N; i++)
    tu_close(served_fd[i]);
  ck_assert(wait_stat(r.svc, 1, 0, 5000));
  rig_stop(&r);
}
END_TEST

/* Running out of descriptors (EMFILE) is a POSIX limit, provoked here with
 * setrlimit; Windows has no per-process socket limit to lower. */
#ifndef _WIN32

static int highest_fd(void) {
  int high = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return 1024;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (fd > high)
      high = fd;
  }
  closedir(d);
  return high;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

#define FD_CLIENTS 50
#define FD_MARGIN 5

START_TEST(test_out_of_descriptors_listener_backs_off_then_serves_again) {
  rig_t r;
  rig_start(&r, 10000);
  /* The client sockets exist before the limit drops, so connecting them
   * needs no descriptor: only the server's accepts run out. */
  int fds[FD_CLIENTS];
  for (int i = 0; i < FD_CLIENTS; i++) {
    fds[i] = tu_socket(AF_INET);
    ck_assert_int_ge(fds[i], 0);
  }
  /* Descriptors are allocated lowest first: fill the holes below the
   * highest one, so exactly FD_MARGIN remain under the new limit. */
  int high = highest_fd();
  int fillers[4096];
  int filler_count = 0;
  while (filler_count < 4096) {
    int fd = dup(0);
    ck_assert_int_ge(fd, 0);
    if (fd > high) {
      close(fd);
      break;
    }
    fillers[filler_count++] = fd;
  }
  struct rlimit saved, low;
  getrlimit(RLIMIT_NOFILE, &saved);
  low = saved;
  low.rlim_cur = (rlim_t)(high + 1 + FD_MARGIN);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons((uint16_t)r.port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < FD_CLIENTS; i++)
    ck_assert_int_eq(connect(fds[i], (struct sockaddr *)&to, sizeof to), 0);
  /* The server takes what fits, then accept fails with EMFILE. */
  int failed = !wait_stat(r.svc, 3, 1, 5000);
  service_stats_t before, after;
  service_get_stats(r.svc, &before);
  ck_assert_msg(!failed, "no accept error: %llu accepted, limit %d",
                (unsigned long long)before.accepted, (int)low.rlim_cur);
  ck_assert_uint_le(before.accepted, FD_MARGIN);
  uint64_t completions = core_completions(r.core);
  double cpu = cpu_seconds();
  tu_wait_until(never, NULL, 500);
  cpu = cpu_seconds() - cpu;
  completions = core_completions(r.core) - completions;
  service_get_stats(r.svc, &after);
  fprintf(stderr,
          "limits: over 500 ms without descriptors: %llu accept errors, %llu "
          "completions, %.3f s CPU\n",
          (unsigned long long)(after.accept_errors - before.accept_errors),
          (unsigned long long)completions, cpu);
  ck_assert_uint_lt(after.accept_errors - before.accept_errors, 200);
  ck_assert_uint_lt(completions, 1000);
  ck_assert_double_lt(cpu, 0.2);
  ck_assert_uint_eq(after.accepted, before.accepted);
  /* Descriptors come back: every waiting client is served. */
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
  for (int i = 0; i < filler_count; i++)
    close(fillers[i]);
  ck_assert(wait_stat(r.svc, 2, FD_CLIENTS, 5000));
  for (int i = 0; i < FD_CLIENTS; i++)
    ck_assert(echoes(fds[i]));
  int late = tu_connect(r.port, 0);
  ck_assert_int_ge(late, 0);
  ck_assert(echoes(late));
  tu_close(late);
  for (int i = 0; i < FD_CLIENTS; i++)
    tu_close(fds[i]);
  ck_assert(wait_stat(r.svc, 1, 0, 5000));
  rig_stop(&r);
}
END_TEST

#endif /* !_WIN32 */

int main(void) {
  Suite *s = suite_create("engine_limits");
  TCase *tc = tcase_create("limits");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc,
                 test_max_sessions_serves_n_rejects_the_rest_and_keeps_listening);
#ifndef _WIN32
  tcase_add_test(tc, test_out_of_descriptors_listener_backs_off_then_serves_again);
#endif
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
