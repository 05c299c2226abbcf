/* Send sizes (issue 20): lengths that add up past SIZE_MAX are refused, not
 * wrapped into a small copy of a huge buffer; a shared buffer of an
 * impossible size is never allocated; a single send larger than
 * send_queue_limit_bytes goes out when the socket takes it at once, and
 * otherwise ends the session with send_queue_full. */
#include <check.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "testutil.h"

#define LIMIT 4096
#define BIG (4 * LIMIT)

/* What a session does with the byte it receives, and what it saw. */
static atomic_int command;
static atomic_int result = 1; /* 1: not run yet */
static atomic_int results_seen;
static atomic_int last_reason;
static atomic_int disconnected;
static uint8_t big[BIG];

enum { ECHO, SENDV_OVERFLOW, SEND_BIG };

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  int rc = 0;
  switch (atomic_load(&command)) {
  case SENDV_OVERFLOW: {
    /* Together past SIZE_MAX: a wrapped total would copy the first one. */
    session_buf_t bufs[2] = {{big, SIZE_MAX - 8}, {big, 16}};
    rc = session_sendv(s, bufs, 2);
    break;
  }
  case SEND_BIG:
    rc = session_send(s, big, BIG);
    break;
  default:
    break;
  }
  atomic_store(&result, rc);
  atomic_fetch_add(&results_seen, 1);
  if (rc == 0)
    session_send(s, data, len); /* still serving */
  return len;
}

static atomic_uint_fast64_t last_session_id;

static void on_connected(session_t *s) {
  atomic_store(&last_session_id, session_id(s));
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  (void)s;
  atomic_store(&last_reason, (int)reason);
  atomic_fetch_add(&disconnected, 1);
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

static void rig_start(rig_t *r, int what) {
  atomic_store(&command, what);
  atomic_store(&result, 1);
  atomic_store(&results_seen, 0);
  atomic_store(&last_reason, 0);
  atomic_store(&disconnected, 0);
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (uint8_t)(i * 131 + 7);
  char err[256];
  ck_assert_msg(core_create("sizes", 1, CORE_BACKEND_DEFAULT, &r->core, err, sizeof err) == 0, "%s",
                err);
  service_options_t o;
  service_options_init(&o);
  o.name = "sizes";
  ck_assert_int_eq(address_parse("127.0.0.1:0", &o.address, err, sizeof err),
                   0);
  o.factory.handler = &handler;
  o.send_queue_limit_bytes = LIMIT;
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
  ck_assert_int_eq(engine_live_objects(), 0);
}

START_TEST(test_sendv_lengths_past_size_max_are_refused_and_the_session_serves_on) {
  rig_t r;
  rig_start(&r, SENDV_OVERFLOW);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(tu_write_all(fd, "a", 1), 0);
  ck_assert(tu_wait_at_least(&results_seen, 1, 5000));
  ck_assert_int_eq(atomic_load(&result), ENGINE_E_INVAL);
  /* Refused without harm: the session still echoes. */
  atomic_store(&command, ECHO);
  char back = 0;
  ck_assert_int_eq(tu_write_all(fd, "b", 1), 0);
  ck_assert_int_eq(tu_read_exact(fd, &back, 1, 5000), 0);
  ck_assert_int_eq(back, 'b');
  ck_assert_int_eq(atomic_load(&disconnected), 0);
  tu_close(fd);
  ck_assert(tu_wait_at_least(&disconnected, 1, 5000));
  rig_stop(&r);
}
END_TEST

START_TEST(test_a_shared_buffer_of_an_impossible_size_is_not_allocated) {
  ck_assert_ptr_null(shared_buf_new(SIZE_MAX - 8));
  ck_assert_ptr_null(shared_buf_new(SIZE_MAX));
  shared_buf_t *b = shared_buf_new(16);
  ck_assert_ptr_nonnull(b);
  ck_assert_uint_eq(shared_buf_len(b), 16);
  shared_buf_release(b);
}
END_TEST

START_TEST(test_one_send_larger_than_the_limit_goes_out_when_the_socket_takes_it) {
  rig_t r;
  rig_start(&r, SEND_BIG);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  /* On the session's worker with nothing queued, an idle socket takes 16
   * KiB at once: nothing waits unsent, so the limit (4 KiB) is not passed. */
  ck_assert_int_eq(tu_write_all(fd, "a", 1), 0);
  ck_assert(tu_wait_at_least(&results_seen, 1, 5000));
  ck_assert_int_eq(atomic_load(&result), ENGINE_OK);
  static uint8_t got[BIG + 1];
  ck_assert_int_eq(tu_read_exact(fd, got, BIG + 1, 5000), 0);
  ck_assert(memcmp(got, big, BIG) == 0);
  ck_assert_int_eq(got[BIG], 'a');
  ck_assert_int_eq(atomic_load(&disconnected), 0);
  tu_close(fd);
  ck_assert(tu_wait_at_least(&disconnected, 1, 5000));
  rig_stop(&r);
}
END_TEST

START_TEST(test_one_send_larger_than_the_limit_that_must_wait_ends_the_session) {
  rig_t r;
  rig_start(&r, ECHO);
  int fd = tu_connect(r.port, 0);
  ck_assert_int_ge(fd, 0);
  char back = 0;
  ck_assert_int_eq(tu_write_all(fd, "a", 1), 0);
  ck_assert_int_eq(tu_read_exact(fd, &back, 1, 5000), 0);
  /* Off the session's worker nothing goes out at once: all of it would
   * wait, past the limit. Refused, and the session ends with the reason. */
  session_t *s = service_find_session(r.svc, atomic_load(&last_session_id));
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq(session_send(s, big, BIG), ENGINE_E_QUEUE_FULL);
  session_release(s);
  ck_assert(tu_wait_at_least(&disconnected, 1, 5000));
  ck_assert_int_eq(atomic_load(&last_reason), REASON_SEND_QUEUE_FULL);
  tu_close(fd);
  rig_stop(&r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("engine_send_sizes");
  TCase *tc = tcase_create("sizes");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc,
                 test_sendv_lengths_past_size_max_are_refused_and_the_session_serves_on);
  tcase_add_test(tc, test_a_shared_buffer_of_an_impossible_size_is_not_allocated);
  tcase_add_test(tc,
                 test_one_send_larger_than_the_limit_goes_out_when_the_socket_takes_it);
  tcase_add_test(tc,
                 test_one_send_larger_than_the_limit_that_must_wait_ends_the_session);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
