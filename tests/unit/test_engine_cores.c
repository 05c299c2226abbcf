/* Several cores in one process (SPEC section 1): nothing is global, each
 * core serves its own services, and either can stop first. */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"
#include "testutil.h"

static atomic_int connected, disconnected;

static void on_connected(session_t *s) {
  (void)s;
  atomic_fetch_add(&connected, 1);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  session_send(s, data, len);
  return len;
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  (void)s;
  (void)reason;
  atomic_fetch_add(&disconnected, 1);
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
};

#define CORES 2
#define SERVICES 2
#define CLIENTS 10

typedef struct engine_set {
  core_t *core[CORES];
  service_t *svc[CORES][SERVICES];
  int port[CORES][SERVICES];
  int fd[CORES][SERVICES][CLIENTS];
} engine_set_t;

static void start_all(engine_set_t *e) {
  atomic_store(&connected, 0);
  atomic_store(&disconnected, 0);
  char err[256];
  for (int c = 0; c < CORES; c++) {
    ck_assert_msg(core_create(c ? "links" : "players", 2, CORE_BACKEND_DEFAULT, &e->core[c], err,
                              sizeof err) == 0,
                  "%s", err);
    for (int v = 0; v < SERVICES; v++) {
      service_options_t o;
      service_options_init(&o);
      o.name = "svc";
      ck_assert_int_eq(
          address_parse("127.0.0.1:0", &o.address, err, sizeof err), 0);
      o.factory.handler = &handler;
      ck_assert(service_create(e->core[c], &o, &e->svc[c][v], err,
                               sizeof err) == 0);
      ck_assert_msg(service_start(e->svc[c][v], err, sizeof err) == 0, "%s",
                    err);
      ck_assert_ptr_eq(service_core(e->svc[c][v]), e->core[c]);
      address_t bound;
      ck_assert_int_eq(service_local_address(e->svc[c][v], &bound), 0);
      e->port[c][v] = address_port(&bound);
    }
  }
}

static void traffic(engine_set_t *e) {
  for (int c = 0; c < CORES; c++)
    for (int v = 0; v < SERVICES; v++)
      for (int k = 0; k < CLIENTS; k++) {
        int fd = tu_connect(e->port[c][v], 0);
        ck_assert_int_ge(fd, 0);
        e->fd[c][v][k] = fd;
      }
  for (int round = 0; round < 20; round++)
    for (int c = 0; c < CORES; c++)
      for (int v = 0; v < SERVICES; v++)
        for (int k = 0; k < CLIENTS; k++) {
          char msg[32], back[32];
          int len = snprintf(msg, sizeof msg, "%d/%d/%d/%d", c, v, k, round);
          ck_assert_int_eq(tu_write_all(e->fd[c][v][k], msg, (size_t)len), 0);
          ck_assert_int_eq(
              tu_read_exact(e->fd[c][v][k], back, (size_t)len, 5000), 0);
          ck_assert_mem_eq(msg, back, (size_t)len);
        }
  for (int c = 0; c < CORES; c++) {
    for (int v = 0; v < SERVICES; v++) {
      service_stats_t st;
      service_get_stats(e->svc[c][v], &st);
      ck_assert_uint_eq(st.sessions_now, CLIENTS);
    }
    ck_assert_uint_gt(core_completions(e->core[c]), 0);
  }
}

/* Stops one core's services (its clients still connected) and the core;
 * the other core keeps serving meanwhile. */
static void stop_core(engine_set_t *e, int c, int other) {
  for (int v = 0; v < SERVICES; v++)
    service_destroy(e->svc[c][v]);
  core_destroy(e->core[c]);
  for (int v = 0; v < SERVICES; v++)
    for (int k = 0; k < CLIENTS; k++) {
      ck_assert_int_ne(tu_wait_closed(e->fd[c][v][k], 5000), 0);
      tu_close(e->fd[c][v][k]);
    }
  if (other >= 0) {
    for (int v = 0; v < SERVICES; v++)
      for (int k = 0; k < CLIENTS; k++) {
        char back[2];
        ck_assert_int_eq(tu_write_all(e->fd[other][v][k], "ok", 2), 0);
        ck_assert_int_eq(tu_read_exact(e->fd[other][v][k], back, 2, 5000), 0);
      }
  }
}

static void check_clean(void) {
  ck_assert_int_eq(atomic_load(&connected), CORES * SERVICES * CLIENTS);
  ck_assert_int_eq(atomic_load(&disconnected), CORES * SERVICES * CLIENTS);
  ck_assert_int_eq(engine_live_objects(), 0);
}

START_TEST(test_two_cores_serve_and_stop_first_then_second) {
  engine_set_t e;
  start_all(&e);
  traffic(&e);
  stop_core(&e, 0, 1);
  stop_core(&e, 1, -1);
  check_clean();
}
END_TEST

START_TEST(test_two_cores_serve_and_stop_second_then_first) {
  engine_set_t e;
  start_all(&e);
  traffic(&e);
  stop_core(&e, 1, 0);
  stop_core(&e, 0, -1);
  check_clean();
}
END_TEST

int main(void) {
  Suite *s = suite_create("engine_cores");
  TCase *tc = tcase_create("cores");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_two_cores_serve_and_stop_first_then_second);
  tcase_add_test(tc, test_two_cores_serve_and_stop_second_then_first);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
