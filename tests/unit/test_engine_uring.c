/* The io_uring backend where it differs from epoll: its receive buffers are
 * a small ring the worker's sockets share, and a socket whose multishot
 * receive found the ring empty waits until a buffer comes back. These tests
 * run every worker with two buffers (io__uring_buffer_count), so the ring
 * is empty most of the time: sessions must still be served byte for byte,
 * and sessions closed while their receive waits for a buffer (or is in
 * flight) must end with a reason and be freed, never hang. */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/engine.h"
#include "testutil.h"

#define CLIENTS 8
#define BYTES_EACH (256 * 1024)

static atomic_int connected, disconnected, freed, ended_with_reason;
static atomic_int abort_after_bytes; /* 0: echo; otherwise abort past it */
/* Consume nothing: with max_recv_bytes 16 and no linger, the session is
 * closed inside its received call (protocol_error), receive disarmed. */
static atomic_int consume_nothing;
static atomic_int protocol_errors;

typedef struct state {
  uint64_t received;
} state_t;

static size_t prepare(void *ctx, void **context) {
  (void)ctx;
  *context = NULL;
  return sizeof(state_t);
}

static void on_connected(session_t *s) {
  (void)s;
  atomic_fetch_add(&connected, 1);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  state_t *st = session_extra(s);
  if (atomic_load(&consume_nothing))
    return 0;
  st->received += len;
  int limit = atomic_load(&abort_after_bytes);
  if (limit && st->received > (uint64_t)limit) {
    session_abort(s, REASON_LOCAL);
    return len;
  }
  if (!limit)
    session_send(s, data, len);
  return len;
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  (void)s;
  if (reason >= REASON_PEER_CLOSED && reason <= REASON_IO_ERROR)
    atomic_fetch_add(&ended_with_reason, 1);
  if (reason == REASON_PROTOCOL_ERROR)
    atomic_fetch_add(&protocol_errors, 1);
  atomic_fetch_add(&disconnected, 1);
}

static void on_free(session_t *s) {
  (void)s;
  atomic_fetch_add(&freed, 1);
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
    .on_free = on_free,
};

typedef struct rig {
  core_t *core;
  service_t *svc;
  int port;
} rig_t;

static void rig_start(rig_t *r) {
  atomic_store(&connected, 0);
  atomic_store(&disconnected, 0);
  atomic_store(&freed, 0);
  atomic_store(&ended_with_reason, 0);
  atomic_store(&protocol_errors, 0);
  char err[256];
  io__uring_buffer_count(2);
  int rc = core_create("uring", 2, CORE_BACKEND_IO_URING, &r->core, err,
                       sizeof err);
  io__uring_buffer_count(0);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_msg(strcmp(core_backend_name(r->core), "io_uring") == 0,
                "io_uring is not available on this kernel: these tests "
                "prove nothing on %s",
                core_backend_name(r->core));
  service_options_t o;
  service_options_init(&o);
  o.name = "uring";
  ck_assert_int_eq(address_parse("127.0.0.1:0", &o.address, err, sizeof err),
                   0);
  o.factory.handler = &handler;
  o.factory.prepare = prepare;
  o.send_queue_limit_bytes = 4 * BYTES_EACH;
  if (atomic_load(&consume_nothing)) {
    o.max_recv_bytes = 16;
    o.close_linger_ms = 0;
  }
  ck_assert_msg(service_create(r->core, &o, &r->svc, err, sizeof err) == 0,
                "%s", err);
  ck_assert_msg(service_start(r->svc, err, sizeof err) == 0, "%s", err);
  address_t bound;
  ck_assert_int_eq(service_local_address(r->svc, &bound), 0);
  r->port = address_port(&bound);
}

static void rig_stop(rig_t *r) {
  ck_assert_int_eq(service_destroy_within(r->svc, 10000), 0);
  core_destroy(r->core);
  ck_assert_int_eq(engine_live_objects(), 0);
}

static uint8_t pattern(int conn, size_t i) {
  return (uint8_t)((size_t)conn * 131 + i * 7 + (i >> 9));
}

/* Every client writes and reads at once (non-blocking, one poll loop), so
 * all of them have bytes in flight while the two buffers go round. */
START_TEST(test_sessions_are_served_byte_for_byte_with_the_buffers_exhausted) {
  rig_t r;
  atomic_store(&abort_after_bytes, 0);
  rig_start(&r);
  int fds[CLIENTS];
  size_t sent[CLIENTS], got[CLIENTS];
  static uint8_t out[CLIENTS][BYTES_EACH];
  for (int c = 0; c < CLIENTS; c++) {
    fds[c] = tu_connect(r.port, 0);
    ck_assert_int_ge(fds[c], 0);
    tu_set_nonblocking(fds[c]);
    sent[c] = got[c] = 0;
    for (size_t i = 0; i < BYTES_EACH; i++)
      out[c][i] = pattern(c, i);
  }
  uint64_t deadline = tu_now_ms() + 30000;
  int done = 0;
  while (done < CLIENTS && tu_now_ms() < deadline) {
    struct pollfd p[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
      p[c].fd = got[c] < BYTES_EACH ? fds[c] : -1;
      p[c].events = POLLIN | (sent[c] < BYTES_EACH ? POLLOUT : 0);
      p[c].revents = 0;
    }
    poll(p, CLIENTS, 100);
    for (int c = 0; c < CLIENTS; c++) {
      if (p[c].revents & POLLOUT) {
        ssize_t n = send(fds[c], out[c] + sent[c], BYTES_EACH - sent[c],
                         MSG_NOSIGNAL);
        if (n > 0)
          sent[c] += (size_t)n;
      }
      if (p[c].revents & (POLLIN | POLLHUP | POLLERR)) {
        uint8_t in[16384];
        ssize_t n = recv(fds[c], in, sizeof in, 0);
        ck_assert_msg(n != 0, "client %d: the server closed after %zu bytes",
                      c, got[c]);
        for (ssize_t i = 0; i > -1 && i < n; i++)
          ck_assert_msg(in[i] == pattern(c, got[c] + (size_t)i),
                        "client %d: byte %zu differs", c,
                        got[c] + (size_t)i);
        if (n > 0) {
          got[c] += (size_t)n;
          if (got[c] == BYTES_EACH)
            done++;
        }
      }
    }
  }
  for (int c = 0; c < CLIENTS; c++)
    ck_assert_msg(got[c] == BYTES_EACH, "client %d: %zu of %d bytes echoed",
                  c, got[c], BYTES_EACH);
  for (int c = 0; c < CLIENTS; c++)
    tu_close(fds[c]);
  ck_assert(tu_wait_at_least(&freed, CLIENTS, 10000));
  ck_assert_int_eq(atomic_load(&ended_with_reason), CLIENTS);
  rig_stop(&r);
}
END_TEST

/* The server aborts each session once it has read a little, while the
 * clients keep writing: the closes meet receives in flight and sockets
 * waiting for a buffer. Every session ends with a reason and is freed. */
START_TEST(test_closing_with_receives_in_flight_and_the_buffers_exhausted) {
  rig_t r;
  atomic_store(&abort_after_bytes, 64 * 1024);
  rig_start(&r);
  int rounds = 4, total = 0;
  static uint8_t junk[32768];
  memset(junk, 'x', sizeof junk);
  for (int round = 0; round < rounds; round++) {
    int fds[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
      fds[c] = tu_connect(r.port, 0);
      ck_assert_int_ge(fds[c], 0);
      tu_set_nonblocking(fds[c]);
    }
    total += CLIENTS;
    /* Write until the server has cut every connection. */
    uint64_t deadline = tu_now_ms() + 20000;
    int open = CLIENTS;
    while (open > 0 && tu_now_ms() < deadline) {
      open = 0;
      for (int c = 0; c < CLIENTS; c++) {
        if (fds[c] < 0)
          continue;
        ssize_t n = send(fds[c], junk, sizeof junk, MSG_NOSIGNAL);
        if (n < 0 && !tu_would_block()) {
          tu_close(fds[c]);
          fds[c] = -1;
          continue;
        }
        open++;
      }
      if (open)
        tu_sleep_ms(1);
    }
    ck_assert_msg(open == 0, "round %d: %d clients never cut", round, open);
    ck_assert_msg(tu_wait_at_least(&freed, total, 10000),
                  "round %d: %d of %d sessions freed", round,
                  atomic_load(&freed), total);
  }
  ck_assert_int_eq(atomic_load(&ended_with_reason), total);
  ck_assert_int_eq(atomic_load(&connected), total);
  rig_stop(&r);
}
END_TEST

/* The session is closed inside its received call, so no receive is armed
 * while the socket's multishot receive is still in the kernel: the close
 * must not let the session (and its handle) be freed before the kernel's
 * last completion naming the handle (ASan sees the use after free). */
START_TEST(test_closing_inside_the_received_call) {
  rig_t r;
  atomic_store(&abort_after_bytes, 0);
  atomic_store(&consume_nothing, 1);
  rig_start(&r);
  static const char junk[64] = "more than max_recv_bytes, consumed by nobody";
  int rounds = 8, total = 0;
  for (int round = 0; round < rounds; round++) {
    int fds[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
      fds[c] = tu_connect(r.port, 0);
      ck_assert_int_ge(fds[c], 0);
      ck_assert_int_eq(tu_write_all(fds[c], junk, sizeof junk), 0);
    }
    total += CLIENTS;
    for (int c = 0; c < CLIENTS; c++) {
      ck_assert_msg(tu_wait_closed(fds[c], 10000) != 0,
                    "round %d: client %d was never closed", round, c);
      tu_close(fds[c]);
    }
    ck_assert_msg(tu_wait_at_least(&freed, total, 10000),
                  "round %d: %d of %d sessions freed", round,
                  atomic_load(&freed), total);
  }
  ck_assert_int_eq(atomic_load(&protocol_errors), total);
  atomic_store(&consume_nothing, 0);
  rig_stop(&r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("engine_uring");
  TCase *tc = tcase_create("uring");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc,
                 test_sessions_are_served_byte_for_byte_with_the_buffers_exhausted);
  tcase_add_test(tc, test_closing_with_receives_in_flight_and_the_buffers_exhausted);
  tcase_add_test(tc, test_closing_inside_the_received_call);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
