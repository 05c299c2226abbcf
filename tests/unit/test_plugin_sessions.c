/*
 * A plugin's session state (plugin_sessions.c) across a reload that raised
 * session_size. A listener keeps sessions ready for its pending accepts,
 * sized by the generation current when they were made; a session accepted
 * after a reload binds the new generation, whose state may not fit in what
 * was reserved. Then the state lives outside the session's block, and every
 * callback and session_state must find that same state until the session
 * is freed.
 *
 * The real engine and the host's session handler on loopback; no library:
 * two generations whose descriptors are this file's functions.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"
#include "testutil.h"

#define SMALL_STATE 16
#define LARGE_STATE 4096
#define PATTERN 0xA5

static host_t *host;
static host_plugin_t plugin;
static generation_t *gen1, *gen2;
static config_service_t service_config;
static host_service_t service;

/* What the plugin saw, checked by the tests once the session is freed. */
static struct seen {
  void *state;        /* on_connected's */
  size_t state_bytes; /* its generation's session_size */
  atomic_int connected, disconnected;
  atomic_int bad_connect; /* not zeroed, or session_state disagreed */
  atomic_int bad_recv;    /* another state, or its bytes were lost */
  atomic_int bad_disconnect;
  atomic_int overflows; /* the state ran past the session's block */
  atomic_int outside;   /* the state was not in the session's block */
} seen;

static generation_t *generation_of_size(size_t size) {
  for (generation_t *g = plugin.generations; g; g = g->next)
    if (g->desc->session_size == size)
      return g;
  return NULL;
}

static int state_intact(const void *state, size_t size) {
  const unsigned char *p = state;
  for (size_t i = 0; i < size; i++)
    if (p[i] != PATTERN)
      return 0;
  return 1;
}

static void check_connected(iocphost_session_t *session, void *state,
                            size_t size) {
  session_t *s = SESSION(session);
  char *block = session_extra(s);
  char *end = block + session_extra_size(s);
  char *at = state;
  if (at >= block && at < end) {
    if (at + size > end)
      atomic_fetch_add(&seen.overflows, 1);
  } else {
    atomic_fetch_add(&seen.outside, 1);
  }
  const unsigned char *p = state;
  for (size_t i = 0; i < size; i++)
    if (p[i] != 0)
      atomic_fetch_add(&seen.bad_connect, 1);
  generation_t *g = generation_of_size(size);
  if (g->api.session_state(session) != state)
    atomic_fetch_add(&seen.bad_connect, 1);
  memset(state, PATTERN, size);
  seen.state = state;
  seen.state_bytes = size;
  atomic_fetch_add(&seen.connected, 1);
}

static void small_connected(iocphost_session_t *session, void *state) {
  check_connected(session, state, SMALL_STATE);
}

static void large_connected(iocphost_session_t *session, void *state) {
  check_connected(session, state, LARGE_STATE);
}

/* Answers each byte with '1' when the state is the one on_connected got,
 * bytes and all, else '0'. */
static size_t on_recv(iocphost_session_t *session, void *state,
                      const uint8_t *data, size_t len) {
  (void)data;
  generation_t *g = generation_of_size(seen.state_bytes);
  int good = state == seen.state &&
             g->api.session_state(session) == seen.state &&
             state_intact(state, seen.state_bytes);
  if (!good)
    atomic_fetch_add(&seen.bad_recv, 1);
  for (size_t i = 0; i < len; i++)
    g->api.send(session, good ? "1" : "0", 1);
  return len;
}

static void on_disconnected(iocphost_session_t *session, void *state,
                            iocphost_reason_t reason) {
  (void)session;
  (void)reason;
  if (state != seen.state || !state_intact(state, seen.state_bytes))
    atomic_fetch_add(&seen.bad_disconnect, 1);
  atomic_fetch_add(&seen.disconnected, 1);
}

static iocphost_plugin_t small_desc = {IOCPHOST_PLUGIN_HEADER,
                                       .name = "state",
                                       .version = "1.0.0",
                                       .session_size = SMALL_STATE,
                                       .on_connected = small_connected,
                                       .on_recv = on_recv,
                                       .on_disconnected = on_disconnected};
static iocphost_plugin_t large_desc = {IOCPHOST_PLUGIN_HEADER,
                                       .name = "state",
                                       .version = "2.0.0",
                                       .session_size = LARGE_STATE,
                                       .on_connected = large_connected,
                                       .on_recv = on_recv,
                                       .on_disconnected = on_disconnected};

static generation_t *new_generation(unsigned number,
                                    const iocphost_plugin_t *desc) {
  generation_t *g = calloc(1, sizeof *g);
  ck_assert_ptr_nonnull(g);
  g->plugin = &plugin;
  g->number = number;
  g->desc = desc;
  g->loaded = 1;
  fill_api(g);
  return g;
}

static void setup(void) {
  host = calloc(1, sizeof *host);
  ck_assert_ptr_nonnull(host);
  pthread_mutex_init(&host->lock, NULL);
  pthread_mutex_init(&host->gen_lock, NULL);
  pthread_mutex_init(&host->rooms_lock, NULL);
  pthread_cond_init(&host->gen_changed, NULL);
  plugin = (host_plugin_t){.host = host, .name = (char *)"state"};
  host->plugins = &plugin;
  host->plugin_count = 1;
  gen1 = new_generation(1, &small_desc);
  gen2 = new_generation(2, &large_desc);
  gen2->next = gen1;
  plugin.generations = gen2;
  plugin.current = gen1;
  plugin.generation_count = 2;
  service_config = (config_service_t){.name = (char *)"game"};
  service = (host_service_t){
      .host = host, .config = &service_config, .plugin = &plugin};
  memset(&seen, 0, sizeof seen);
}

static void teardown(void) {
  free(gen1);
  free(gen2);
  pthread_cond_destroy(&host->gen_changed);
  pthread_mutex_destroy(&host->rooms_lock);
  pthread_mutex_destroy(&host->gen_lock);
  pthread_mutex_destroy(&host->lock);
  free(host);
}

static long sessions_of(generation_t *g) {
  pthread_mutex_lock(&host->gen_lock);
  long n = g->sessions;
  pthread_mutex_unlock(&host->gen_lock);
  return n;
}

static int generation_unbound(void *g) { return sessions_of(g) == 0; }

/* The host's prepare, counted: the listener makes its ready sessions on its
 * worker after service_start returned. */
static atomic_int prepared;

static size_t counted_prepare(void *ctx, void **session_context) {
  atomic_fetch_add(&prepared, 1);
  return prepare_session(ctx, session_context);
}

/* One session's life on a listener started under generation 1; with
 * reload, generation 2 (256 times the state) is made current before the
 * client connects, so its session was sized for generation 1. */
static void one_session(int reload) {
  char err[256];
  core_t *core;
  ck_assert_msg(core_create("state", 1, CORE_BACKEND_DEFAULT, &core, err,
                            sizeof err) == 0,
                "%s", err);
  service_options_t o;
  service_options_init(&o);
  o.name = "game";
  o.type = SERVICE_SERVER;
  ck_assert_int_eq(address_parse("127.0.0.1:0", &o.address, err, sizeof err),
                   0);
  o.factory.handler = &plugin_session_handler;
  o.factory.ctx = &service;
  o.factory.prepare = counted_prepare;
  atomic_store(&prepared, 0);
  service_t *svc;
  ck_assert_msg(service_create(core, &o, &svc, err, sizeof err) == 0, "%s",
                err);
  service_set_user(svc, &service);
  service.engine = svc;
  ck_assert_msg(service_start(svc, err, sizeof err) == 0, "%s", err);
  address_t bound;
  ck_assert_int_eq(service_local_address(svc, &bound), 0);
  generation_t *bound_to = gen1;
  /* Every pending accept has its session, sized for generation 1. */
  ck_assert(tu_wait_at_least(&prepared, o.accepts_pending, 5000));
  if (reload) {
    pthread_mutex_lock(&host->gen_lock);
    plugin.current = gen2;
    pthread_mutex_unlock(&host->gen_lock);
    bound_to = gen2;
  }

  int fd = tu_connect(address_port(&bound), 0);
  ck_assert_int_ge(fd, 0);
  for (int i = 0; i < 3; i++) {
    char answer = '?';
    ck_assert_int_eq(tu_write_all(fd, "x", 1), 0);
    ck_assert_int_eq(tu_read_exact(fd, &answer, 1, 5000), 0);
    ck_assert_msg(answer == '1',
                  "exchange %d: on_recv saw another state than "
                  "on_connected, or lost its bytes",
                  i);
  }
  ck_assert_int_eq(sessions_of(bound_to), 1);
  tu_close(fd);
  ck_assert(tu_wait_at_least(&seen.disconnected, 1, 5000));
  ck_assert_int_eq(atomic_load(&seen.connected), 1);
  ck_assert_uint_eq(seen.state_bytes, reload ? LARGE_STATE : SMALL_STATE);
  ck_assert_int_eq(atomic_load(&seen.overflows), 0);
  ck_assert_int_eq(atomic_load(&seen.bad_connect), 0);
  ck_assert_int_eq(atomic_load(&seen.bad_recv), 0);
  ck_assert_int_eq(atomic_load(&seen.bad_disconnect), 0);
  /* Where the state was: outside the block only when it did not fit. */
  int outside_expected = reload ? 1 : 0;
  ck_assert_int_eq(atomic_load(&seen.outside), outside_expected);
  /* on_free lets go of the generation (and frees an outside state). */
  ck_assert_msg(tu_wait_until(generation_unbound, bound_to, 5000),
                "the freed session still holds generation %u",
                bound_to->number);
  service_stop_accepting(svc);
  ck_assert_int_eq(service_destroy_within(svc, 5000), 0);
  core_destroy(core);
  ck_assert_int_eq(sessions_of(gen1), 0);
  ck_assert_int_eq(sessions_of(gen2), 0);
}

/* Fails if the state outgrowing the reserved room were put in the block
 * anyway (an overflow), or if a later callback or session_state found
 * another place than on_connected's (the state lost). */
START_TEST(a_session_sized_before_a_reload_that_grew_the_state_keeps_it) {
  one_session(1);
}
END_TEST

START_TEST(a_session_whose_state_fits_keeps_it_in_its_block) { one_session(0); }
END_TEST

int main(void) {
  Suite *suite = suite_create("plugin_sessions");
  TCase *tc = tcase_create("state");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc,
                 a_session_sized_before_a_reload_that_grew_the_state_keeps_it);
  tcase_add_test(tc, a_session_whose_state_fits_keeps_it_in_its_block);
  suite_add_tcase(suite, tc);
  SRunner *runner = srunner_create(suite);
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed ? 1 : 0;
}
