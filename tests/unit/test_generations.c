/*
 * The stop's unload of a generation (generations.c, unload_plugins): after
 * on_unload, what still holds the generation is a leak only if it stays.
 * A room's last reference is often let go on an I/O worker a moment after
 * the host's own waits ended (the tail of the timer, post or close that
 * held it: strand.c calls the done, then releases the room), so a hold may
 * be dropped after on_unload returned. The unload waits for that (bounded)
 * instead of reporting a leak and freeing the generation under the worker;
 * what is still held after the wait is reported by kind.
 *
 * No engine here: a host with one plugin and one generation, whose holds
 * the test sets and drops as the rooms' code does.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "host_internal.h"
#include "testutil.h"

static host_t *host;
static host_plugin_t plugin;
static generation_t *gen;
static char log_path[512];

/* The whole log, as a malloc'd string. */
static char *log_text(void) {
  FILE *f = fopen(log_path, "rb");
  ck_assert_ptr_nonnull(f);
  static char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strdup(buf);
}

static int log_has(const char *text) {
  char *all = log_text();
  int found = strstr(all, text) != NULL;
  free(all);
  return found;
}

/* ---- a plugin whose on_unload lets a worker drop the last hold ---- */

static atomic_int unloads;
static atomic_int dropped; /* the worker dropped its hold */
static atomic_int saw_report;
static pthread_t worker;
static int worker_started;

static int leak_reported(void *arg) {
  (void)arg;
  return log_has("after on_unload");
}

/* A worker finishing the op that held a closed room: it lets go a moment
 * after on_unload returned. It waits for the unload's verdict to be out
 * (a report in the log) or for 300 ms, whichever is first; if the unload
 * already reported a leak (and so freed the generation) it must not touch
 * the generation any more. */
static void *late_worker(void *arg) {
  int room = (int)(intptr_t)arg;
  if (tu_wait_until(leak_reported, NULL, 300)) {
    atomic_store(&saw_report, 1);
    return NULL;
  }
  /* Said before the drop: an unload that waited for it sees it said. */
  atomic_store(&dropped, 1);
  if (room)
    generation_drop_room(gen);
  else
    generation_drop_hold(gen);
  return NULL;
}

static int late_worker_room;

static void on_unload_late_worker(void) {
  atomic_fetch_add(&unloads, 1);
  worker_started =
      pthread_create(&worker, NULL, late_worker,
                     (void *)(intptr_t)late_worker_room) == 0;
}

static void on_unload_nothing(void) { atomic_fetch_add(&unloads, 1); }

static iocphost_plugin_t desc = {IOCPHOST_PLUGIN_HEADER, .name = "late",
                                 .version = "1.0.0"};

static void setup(void) {
  host = calloc(1, sizeof *host);
  ck_assert_ptr_nonnull(host);
  pthread_mutex_init(&host->gen_lock, NULL);
  pthread_mutex_init(&host->reload_lock, NULL);
  pthread_mutex_init(&host->metrics_lock, NULL);
  pthread_cond_init(&host->gen_changed, NULL);
  plugin = (host_plugin_t){.host = host, .name = (char *)"late"};
  host->plugins = &plugin;
  host->plugin_count = 1;
  gen = calloc(1, sizeof *gen);
  ck_assert_ptr_nonnull(gen);
  gen->plugin = &plugin;
  gen->number = 1;
  gen->desc = &desc;
  gen->loaded = 1;
  fill_api(gen);
  plugin.generations = gen;
  plugin.current = gen;
  plugin.generation_count = 1;
  atomic_store(&unloads, 0);
  atomic_store(&dropped, 0);
  atomic_store(&saw_report, 0);
  worker_started = 0;
  ck_assert_int_eq(tu_temp_file(log_path, sizeof log_path, "gen_log"), 0);
  ck_assert_int_eq(log_set_file(log_path), 0);
}

static void teardown(void) {
  if (worker_started)
    pthread_join(worker, NULL);
  pthread_cond_destroy(&host->gen_changed);
  pthread_mutex_destroy(&host->metrics_lock);
  pthread_mutex_destroy(&host->reload_lock);
  pthread_mutex_destroy(&host->gen_lock);
  free(host);
  log_set_file(NULL);
  remove(log_path);
}

/* A hold dropped on another thread after on_unload returned (the tail of
 * a room's timer or post) is waited for: no leak is reported, and the
 * generation is closed only after it. Fails without the wait: the unload
 * reports "1 timers, posts or rooms" and frees the generation while the
 * worker still has to drop its hold on it. */
START_TEST(a_hold_dropped_just_after_on_unload_is_waited_for_not_reported) {
  gen->holds = 1;
  desc.on_unload = on_unload_late_worker;
  late_worker_room = 0;
  unload_plugins(host);
  ck_assert_int_eq(atomic_load(&unloads), 1);
  ck_assert_int_eq(worker_started, 1);
  char *all = log_text();
  ck_assert_msg(!atomic_load(&saw_report) && !strstr(all, "ERROR"),
                "a hold dropped after on_unload was reported as a leak:\n%s",
                all);
  free(all);
  /* unload_plugins returned only after the drop: the generation it freed
   * was no longer the worker's. */
  ck_assert_int_eq(atomic_load(&dropped), 1);
  ck_assert_ptr_null(plugin.generations);
}
END_TEST

START_TEST(a_room_freed_just_after_on_unload_is_waited_for_not_reported) {
  gen->holds = 1;
  gen->rooms = 1;
  desc.on_unload = on_unload_late_worker;
  late_worker_room = 1;
  unload_plugins(host);
  ck_assert_int_eq(worker_started, 1);
  char *all = log_text();
  ck_assert_msg(!atomic_load(&saw_report) && !strstr(all, "ERROR"),
                "a room freed after on_unload was reported as a leak:\n%s",
                all);
  free(all);
  ck_assert_int_eq(atomic_load(&dropped), 1);
}
END_TEST

/* What stays held is a leak, reported by kind so an operator can tell a
 * kept room handle from a kept session or a pending timer. */
START_TEST(what_stays_held_after_on_unload_is_reported_by_kind) {
  gen->sessions = 2;
  gen->holds = 4; /* 3 rooms and 1 timer, post or work */
  gen->rooms = 3;
  desc.on_unload = on_unload_nothing;
  uint64_t start = tu_now_ms();
  unload_plugins(host);
  ck_assert_int_eq(atomic_load(&unloads), 1);
  /* It waited for them (bounded) before saying so. */
  ck_assert_uint_ge(tu_now_ms() - start, 500);
  char *all = log_text();
  ck_assert_msg(strstr(all, "ERROR [host] plugin late generation 1 still has "
                            "2 sessions, 3 rooms and 1 timers, posts or work "
                            "after on_unload") != NULL,
                "%s", all);
  ck_assert_msg(strstr(all, "session_release") && strstr(all, "room_release"),
                "%s", all);
  free(all);
}
END_TEST

/* Nothing held: no wait, no report. */
START_TEST(an_unheld_generation_unloads_at_once_without_a_report) {
  desc.on_unload = on_unload_nothing;
  uint64_t start = tu_now_ms();
  unload_plugins(host);
  ck_assert_int_eq(atomic_load(&unloads), 1);
  ck_assert_uint_lt(tu_now_ms() - start, 500);
  ck_assert(!log_has("ERROR"));
}
END_TEST

static Suite *generations_suite(void) {
  Suite *s = suite_create("generations");
  TCase *tc = tcase_create("unload");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc,
                 a_hold_dropped_just_after_on_unload_is_waited_for_not_reported);
  tcase_add_test(tc,
                 a_room_freed_just_after_on_unload_is_waited_for_not_reported);
  tcase_add_test(tc, what_stays_held_after_on_unload_is_reported_by_kind);
  tcase_add_test(tc, an_unheld_generation_unloads_at_once_without_a_report);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(generations_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
