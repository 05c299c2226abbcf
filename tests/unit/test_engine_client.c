/* Client services: reconnect with growing, jittered, capped delays while
 * nothing listens; connect and exchange data once a server appears; notice
 * the server going away and come back with it. */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "testutil.h"

typedef struct side {
  atomic_int connected, disconnected, echoes, overlaps;
  atomic_int reasons[10];
} side_t;

static side_t client_side, server_side;

typedef struct sess {
  atomic_int in_cb;
} sess_t;

static size_t prepare(void *ctx, void **context) {
  *context = ctx;
  return sizeof(sess_t);
}

static side_t *side_of(session_t *s) { return session_context(s); }

static void enter(session_t *s) {
  if (atomic_exchange(&((sess_t *)session_extra(s))->in_cb, 1))
    atomic_fetch_add(&side_of(s)->overlaps, 1);
}
static void leave(session_t *s) {
  atomic_store(&((sess_t *)session_extra(s))->in_cb, 0);
}

static void on_connected(session_t *s) {
  enter(s);
  side_t *side = side_of(s);
  atomic_fetch_add(&side->connected, 1);
  if (side == &client_side)
    session_send(s, "ping", 4);
  leave(s);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  enter(s);
  side_t *side = side_of(s);
  size_t used = len;
  if (side == &server_side) {
    session_send(s, data, len);
  } else if (len < 4) {
    used = 0; /* wait for the whole echo */
  } else {
    if (memcmp(data, "ping", 4) == 0)
      atomic_fetch_add(&side->echoes, 1);
    used = 4;
  }
  leave(s);
  return used;
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  enter(s);
  if (reason > 0 && reason < 10)
    atomic_fetch_add(&side_of(s)->reasons[reason], 1);
  atomic_fetch_add(&side_of(s)->disconnected, 1);
  leave(s);
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
};

static uint64_t mono_ms(void) { return tu_now_ms(); }

static service_t *start_service(core_t *core, service_type_t type, int port,
                                side_t *side) {
  char err[256], text[64];
  service_options_t o;
  service_options_init(&o);
  o.name = type == SERVICE_SERVER ? "server" : "client";
  o.type = type;
  snprintf(text, sizeof text, "127.0.0.1:%d", port);
  ck_assert_int_eq(address_parse(text, &o.address, err, sizeof err), 0);
  o.factory.handler = &handler;
  o.factory.ctx = side;
  o.factory.prepare = prepare;
  o.client_sessions = 1;
  o.reconnect = 1;
  o.reconnect_min_delay_ms = 20;
  o.reconnect_max_delay_ms = 200;
  o.reconnect_jitter = 0.2;
  o.connect_timeout_ms = 1000;
  service_t *svc;
  ck_assert_msg(service_create(core, &o, &svc, err, sizeof err) == 0, "%s",
                err);
  ck_assert_msg(service_start(svc, err, sizeof err) == 0, "%s", err);
  return svc;
}

static int at_least(atomic_int *v, int want, int timeout_ms) {
  uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
  while (atomic_load(v) < want) {
    if (mono_ms() >= deadline)
      return 0;
    tu_sleep_ms(1);
  }
  return 1;
}

#define FAILURES 10

/* The backoff the engine must choose after the k-th failure in a row
 * (k from 1): 20 ms doubling, capped at 200 ms. */
static uint64_t backoff_after_failure(uint64_t k) {
  uint64_t delay = 20;
  for (uint64_t i = 1; i < k && delay < 200; i++)
    delay *= 2;
  return delay > 200 ? 200 : delay;
}

/* Records when connect_failures grows, polling every millisecond, and the
 * backoff the engine chose after that failure (0 when another failure came
 * before the poll could tell which delay belonged to which). late[n] is how
 * long the poll before the one that saw it had been: the failure happened
 * at most that long before at[n] (a loaded machine wakes the poll late). */
static int record_failures(service_t *svc, uint64_t *at, uint64_t *delay,
                           uint64_t *number, uint64_t *late, int count) {
  service_stats_t st;
  service_get_stats(svc, &st);
  uint64_t seen = st.connect_failures;
  int n = 0;
  uint64_t deadline = mono_ms() + 10000;
  uint64_t last_poll = mono_ms();
  while (n < count && mono_ms() < deadline) {
    service_get_stats(svc, &st);
    uint64_t now = mono_ms();
    int several = st.connect_failures > seen + 1;
    while (seen < st.connect_failures && n < count) {
      seen++;
      delay[n] = several ? 0 : st.reconnect_delay_ms;
      number[n] = seen; /* which failure, counted from the service's start */
      late[n] = now - last_poll;
      at[n++] = now;
    }
    last_poll = now;
    tu_sleep_ms(1);
  }
  return n;
}

START_TEST(test_client_backs_off_connects_and_reconnects_after_server_restart) {
  memset(&client_side, 0, sizeof client_side);
  memset(&server_side, 0, sizeof server_side);
  char err[256];
  core_t *core;
  ck_assert_msg(core_create("client", 2, CORE_BACKEND_DEFAULT, &core, err, sizeof err) == 0, "%s",
                err);
  int holder = -1;
  int port = tu_closed_port(&holder);
  ck_assert_int_gt(port, 0);
  service_t *client = start_service(core, SERVICE_CLIENT, port, &client_side);

  /* Nothing listens: after each failure the engine chooses 20, 40, 80,
   * 160, then 200 ms (the cap), and waits that long within +-20 % jitter.
   * The chosen delays are exact; of the wall clock only the lower bound is
   * asserted (a timer never fires early; on a loaded machine it may fire
   * late, and speed is not what this test is about). */
  uint64_t at[FAILURES], delay[FAILURES], number[FAILURES], late[FAILURES];
  ck_assert_int_eq(record_failures(client, at, delay, number, late, FAILURES),
                   FAILURES);
  for (int i = 0; i < FAILURES; i++) {
    uint64_t nominal = backoff_after_failure(number[i]);
    if (delay[i]) /* 0: two failures between polls, cannot tell */
      ck_assert_msg(delay[i] == nominal,
                    "backoff after failure %llu is %llu ms, expected %llu",
                    (unsigned long long)number[i],
                    (unsigned long long)delay[i], (unsigned long long)nominal);
    if (i > 0 && number[i] == number[i - 1] + 1) {
      double gap = (double)(at[i] - at[i - 1]);
      double previous = (double)backoff_after_failure(number[i - 1]);
      fprintf(stderr, "client: gap after failure %llu: %.0f ms (nominal %.0f)\n",
              (unsigned long long)number[i - 1], gap, previous);
      /* The earlier failure may have been seen up to late[i - 1] after it
       * happened, which shortens the gap seen by as much. */
      ck_assert_msg(gap >= previous * 0.8 - 1 - (double)late[i - 1],
                    "gap %.0f ms, under %.0f (the poll was %llu ms late)", gap,
                    previous * 0.8, (unsigned long long)late[i - 1]);
    }
  }
  ck_assert_int_eq(atomic_load(&client_side.connected), 0);

  /* A server appears: the client connects and data flows. */
  tu_close(holder);
  service_t *server = start_service(core, SERVICE_SERVER, port, &server_side);
  ck_assert(at_least(&client_side.connected, 1, 2000));
  ck_assert(at_least(&client_side.echoes, 1, 2000));
  service_stats_t st;
  service_get_stats(client, &st);
  ck_assert_uint_eq(st.connects, 1);
  ck_assert_uint_eq(st.sessions_now, 1);

  /* The server goes away: the client notices, and keeps trying. */
  service_destroy(server);
  ck_assert(at_least(&client_side.disconnected, 1, 2000));
  ck_assert_int_eq(atomic_load(&client_side.reasons[REASON_PEER_CLOSED]) +
                       atomic_load(&client_side.reasons[REASON_PEER_RESET]),
                   1);
  service_get_stats(client, &st);
  uint64_t failures = st.connect_failures;
  ck_assert(record_failures(client, at, delay, number, late, 2) == 2);
  service_get_stats(client, &st);
  ck_assert_uint_ge(st.connect_failures, failures + 2);

  /* It comes back on the same port: so does the client, and data. */
  server = start_service(core, SERVICE_SERVER, port, &server_side);
  ck_assert(at_least(&client_side.connected, 2, 2000));
  ck_assert(at_least(&client_side.echoes, 2, 2000));
  service_get_stats(client, &st);
  ck_assert_uint_eq(st.connects, 2);

  service_destroy(client);
  service_destroy(server);
  core_destroy(core);
  ck_assert_int_eq(atomic_load(&client_side.connected),
                   atomic_load(&client_side.disconnected));
  ck_assert_int_eq(atomic_load(&server_side.connected),
                   atomic_load(&server_side.disconnected));
  ck_assert_int_eq(atomic_load(&client_side.overlaps), 0);
  ck_assert_int_eq(atomic_load(&server_side.overlaps), 0);
  ck_assert_int_eq(engine_live_objects(), 0);
}
END_TEST

START_TEST(test_client_service_destroyed_while_connecting_frees_everything) {
  memset(&client_side, 0, sizeof client_side);
  char err[256];
  core_t *core;
  ck_assert_msg(core_create("client", 2, CORE_BACKEND_DEFAULT, &core, err, sizeof err) == 0, "%s",
                err);
  /* Nothing listens (a port of ours, bound and not listening, so no
   * parallel test can take it); each service is destroyed while its first connect,
   * its failure or its retry timer is still in flight. */
  int holder = -1;
  int port = tu_closed_port(&holder);
  ck_assert_int_gt(port, 0);
  service_t *clients[8];
  for (int i = 0; i < 8; i++)
    clients[i] = start_service(core, SERVICE_CLIENT, port, &client_side);
  for (int i = 0; i < 8; i++)
    service_destroy(clients[i]);
  tu_close(holder);
  core_destroy(core);
  ck_assert_int_eq(atomic_load(&client_side.connected), 0);
  ck_assert_int_eq(engine_live_objects(), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("engine_client");
  TCase *tc = tcase_create("client");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc,
                 test_client_backs_off_connects_and_reconnects_after_server_restart);
  tcase_add_test(tc, test_client_service_destroyed_while_connecting_frees_everything);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
