/* The stall watchdog's bookkeeping (watchdog.h): histogram buckets, a stall
 * reported once while it lasts and counted, nested calls, another host's
 * calls left alone, and the bracket from many threads at once (run under
 * ThreadSanitizer in the tsan build). */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"
#include "watchdog.h"

/* A host with one plugin and one generation, as far as the watchdog
 * looks. */
typedef struct fake {
  host_t host;
  host_plugin_t plugin;
  generation_t *generation;
} fake_t;

static fake_t *fake_new(void) {
  fake_t *f = calloc(1, sizeof *f);
  pthread_mutex_init(&f->host.gen_lock, NULL);
  f->generation = calloc(1, sizeof *f->generation);
  f->generation->plugin = &f->plugin;
  f->generation->number = 3;
  f->plugin.host = &f->host;
  f->plugin.name = "fake";
  f->plugin.generations = f->generation;
  f->host.plugins = &f->plugin;
  f->host.plugin_count = 1;
  f->host.callback_sample = 1; /* metrics on, every callback timed */
  return f;
}

static void fake_free(fake_t *f) {
  pthread_mutex_destroy(&f->host.gen_lock);
  free(f->generation);
  free(f);
}

static watch_call_t packet_call(fake_t *f) {
  watch_call_t call = {&f->host, f->generation, WATCH_ON_PACKET, "play", 42,
                       7};
  return call;
}

START_TEST(durations_fall_in_the_bucket_of_their_upper_bound) {
  watch_histogram_t h;
  memset(&h, 0, sizeof h);
  watch_histogram_add(&h, 0, 1);
  watch_histogram_add(&h, 50000, 1);      /* le 0.00005 */
  watch_histogram_add(&h, 50001, 1);      /* le 0.0001 */
  watch_histogram_add(&h, 1000000000, 1); /* le 1 */
  watch_histogram_add(&h, 2000000000, 1); /* +Inf */
  uint64_t counts[WATCH_BOUNDS + 1];
  double sum;
  ck_assert_uint_eq(watch_histogram_read(&h, counts, &sum), 5);
  ck_assert_uint_eq(counts[0], 2);
  ck_assert_uint_eq(counts[1], 1);
  ck_assert_uint_eq(counts[WATCH_BOUNDS - 1], 1);
  ck_assert_uint_eq(counts[WATCH_BOUNDS], 1);
  ck_assert_double_eq_tol(sum, 3.000100001, 1e-9);
  ck_assert_double_eq(watch_bounds_seconds[0], 0.00005);
  ck_assert_double_eq(watch_bounds_seconds[WATCH_BOUNDS - 1], 1.0);
}
END_TEST

/* A thread that runs one callback until told to end it. */
typedef struct runner {
  watch_call_t call;
  int nested; /* a second callback inside the first */
  pthread_mutex_t lock;
  pthread_cond_t changed;
  int running, finish;
  pthread_t thread;
} runner_t;

static void *run_callback(void *arg) {
  runner_t *r = arg;
  watch_mark_t mark = watch_begin(&r->call);
  watch_mark_t inner = {0};
  if (r->nested) {
    watch_call_t call = r->call;
    call.kind = WATCH_SESSION_POST;
    call.packet_id = -1;
    inner = watch_begin(&call);
  }
  pthread_mutex_lock(&r->lock);
  r->running = 1;
  pthread_cond_broadcast(&r->changed);
  while (!r->finish)
    pthread_cond_wait(&r->changed, &r->lock);
  pthread_mutex_unlock(&r->lock);
  if (r->nested)
    watch_end(&inner);
  watch_end(&mark);
  return NULL;
}

static void runner_start(runner_t *r, watch_call_t call, int nested) {
  memset(r, 0, sizeof *r);
  r->call = call;
  r->nested = nested;
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->changed, NULL);
  ck_assert_int_eq(pthread_create(&r->thread, NULL, run_callback, r), 0);
  pthread_mutex_lock(&r->lock);
  while (!r->running)
    pthread_cond_wait(&r->changed, &r->lock);
  pthread_mutex_unlock(&r->lock);
}

static void runner_finish(runner_t *r) {
  pthread_mutex_lock(&r->lock);
  r->finish = 1;
  pthread_cond_broadcast(&r->changed);
  pthread_mutex_unlock(&r->lock);
  pthread_join(r->thread, NULL);
  pthread_cond_destroy(&r->changed);
  pthread_mutex_destroy(&r->lock);
}

START_TEST(a_stall_is_reported_once_while_it_lasts_and_counted) {
  fake_t *f = fake_new();
  runner_t r;
  runner_start(&r, packet_call(f), 0);
  /* warn_ms 0: whatever runs now has run long enough. */
  ck_assert_int_eq(watchdog_scan(&f->host, 0), 1);
  ck_assert_int_eq(watchdog_scan(&f->host, 0), 0);
  ck_assert_int_eq(watchdog_scan(&f->host, 0), 0);
  runner_finish(&r);
  ck_assert_int_eq(watchdog_scan(&f->host, 0), 0);
  ck_assert_uint_eq(atomic_load(&f->generation->calls.stalls), 1);
  /* The next stall is another one. */
  runner_start(&r, packet_call(f), 0);
  ck_assert_int_eq(watchdog_scan(&f->host, 0), 1);
  ck_assert_int_eq(watchdog_scan(&f->host, 0), 0);
  runner_finish(&r);
  ck_assert_uint_eq(atomic_load(&f->generation->calls.stalls), 2);
  /* Both were measured. */
  uint64_t counts[WATCH_BOUNDS + 1];
  double sum;
  ck_assert_uint_eq(watch_histogram_read(
                        &f->generation->calls.kinds[WATCH_ON_PACKET], counts,
                        &sum),
                    2);
  fake_free(f);
}
END_TEST

/* Without the metrics endpoint nothing keeps durations: the bracket reads
 * no clock, and a stall is timed from the watchdog's first sight of it. */
START_TEST(an_untimed_stall_counts_from_the_first_scan_that_saw_it) {
  fake_t *f = fake_new();
  f->host.callback_sample = 0;
  runner_t r;
  runner_start(&r, packet_call(f), 0);
  /* A day's threshold: first seen now, not reported. */
  ck_assert_int_eq(watchdog_scan(&f->host, 86400000), 0);
  /* 20 ms past the first sight (however long the call had run before):
   * reported once, by a bounded wait on the condition. */
  uint64_t deadline = watch_now_ns() + 10000000000ull;
  int reported = 0;
  while (!reported && watch_now_ns() < deadline)
    reported = watchdog_scan(&f->host, 20);
  ck_assert_int_eq(reported, 1);
  ck_assert_int_eq(watchdog_scan(&f->host, 20), 0);
  runner_finish(&r);
  ck_assert_uint_eq(atomic_load(&f->generation->calls.stalls), 1);
  /* Nothing measured. */
  uint64_t counts[WATCH_BOUNDS + 1];
  double sum;
  ck_assert_uint_eq(watch_histogram_read(
                        &f->generation->calls.kinds[WATCH_ON_PACKET], counts,
                        &sum),
                    0);
  fake_free(f);
}
END_TEST

/* metrics.callback_sample 4: one call in four on a thread is timed, and
 * counts for four, so the count still matches the calls in whole samples. */
START_TEST(sampled_calls_count_for_the_calls_they_stand_for) {
  fake_t *f = fake_new();
  f->host.callback_sample = 4;
  watch_call_t call = packet_call(f);
  int timed = 0;
  for (int i = 0; i < 8; i++) {
    watch_mark_t mark = watch_begin(&call);
    timed += mark.start_ns != 0;
    watch_end(&mark);
  }
  ck_assert_int_eq(timed, 2);
  uint64_t counts[WATCH_BOUNDS + 1];
  double sum;
  ck_assert_uint_eq(watch_histogram_read(
                        &f->generation->calls.kinds[WATCH_ON_PACKET], counts,
                        &sum),
                    8);
  fake_free(f);
}
END_TEST

START_TEST(a_call_shorter_than_the_threshold_is_no_stall) {
  fake_t *f = fake_new();
  runner_t r;
  runner_start(&r, packet_call(f), 0);
  ck_assert_int_eq(watchdog_scan(&f->host, 3600000), 0);
  runner_finish(&r);
  ck_assert_uint_eq(atomic_load(&f->generation->calls.stalls), 0);
  fake_free(f);
}
END_TEST

START_TEST(a_nested_call_is_part_of_the_one_around_it) {
  fake_t *f = fake_new();
  runner_t r;
  runner_start(&r, packet_call(f), 1);
  ck_assert_int_eq(watchdog_scan(&f->host, 0), 1);
  runner_finish(&r);
  ck_assert_uint_eq(atomic_load(&f->generation->calls.stalls), 1);
  uint64_t counts[WATCH_BOUNDS + 1];
  double sum;
  ck_assert_uint_eq(watch_histogram_read(
                        &f->generation->calls.kinds[WATCH_ON_PACKET], counts,
                        &sum),
                    1);
  ck_assert_uint_eq(watch_histogram_read(
                        &f->generation->calls.kinds[WATCH_SESSION_POST],
                        counts, &sum),
                    1);
  fake_free(f);
}
END_TEST

START_TEST(another_hosts_calls_are_left_to_its_own_watchdog) {
  fake_t *mine = fake_new(), *other = fake_new();
  runner_t r;
  runner_start(&r, packet_call(other), 0);
  ck_assert_int_eq(watchdog_scan(&mine->host, 0), 0);
  ck_assert_int_eq(watchdog_scan(&other->host, 0), 1);
  runner_finish(&r);
  fake_free(mine);
  fake_free(other);
}
END_TEST

enum { THREADS = 4, CALLS = 20000 };

static void *many_calls(void *arg) {
  fake_t *f = arg;
  watch_call_t call = packet_call(f);
  for (int i = 0; i < CALLS; i++) {
    watch_mark_t mark = watch_begin(&call);
    watch_end(&mark);
  }
  return NULL;
}

START_TEST(many_threads_bracket_while_the_watchdog_scans) {
  fake_t *f = fake_new();
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_create(&threads[i], NULL, many_calls, f), 0);
  /* Scans race the brackets: whatever they report is counted exactly. */
  int reported = 0;
  for (int i = 0; i < 200; i++)
    reported += watchdog_scan(&f->host, 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(threads[i], NULL);
  ck_assert_uint_eq(atomic_load(&f->generation->calls.stalls),
                    (uint64_t)reported);
  uint64_t counts[WATCH_BOUNDS + 1];
  double sum;
  ck_assert_uint_eq(watch_histogram_read(
                        &f->generation->calls.kinds[WATCH_ON_PACKET], counts,
                        &sum),
                    (uint64_t)THREADS * CALLS);
  fake_free(f);
}
END_TEST

START_TEST(metrics_name_plugin_generation_and_kind) {
  fake_t *f = fake_new();
  atomic_store(&f->generation->calls.stalls, 2);
  watch_histogram_add(&f->generation->calls.kinds[WATCH_ROOM_TICK], 30000, 1);
  prom_t p;
  prom_init(&p);
  watchdog_render_metrics(&f->host, &p);
  ck_assert_int_eq(p.failed, 0);
  ck_assert_ptr_nonnull(strstr(
      p.data, "# TYPE iocphost_plugin_stalls_total counter\n"
              "iocphost_plugin_stalls_total{plugin=\"fake\",generation=\"3\"} "
              "2\n"));
  ck_assert_ptr_nonnull(
      strstr(p.data, "# TYPE iocphost_plugin_callback_duration_seconds "
                     "histogram\n"));
  ck_assert_ptr_nonnull(
      strstr(p.data, "iocphost_plugin_callback_duration_seconds_count{plugin="
                     "\"fake\",generation=\"3\",kind=\"room_tick\"} 1\n"));
  /* Kinds that never ran stay out. */
  ck_assert_ptr_null(strstr(p.data, "on_packet"));
  /* One header per family. */
  ck_assert_ptr_null(
      strstr(strstr(p.data, "# TYPE iocphost_plugin_callback") + 1,
             "# TYPE iocphost_plugin_callback"));
  prom_free(&p);
  fake_free(f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("watchdog");
  TCase *tc = tcase_create("watchdog");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, durations_fall_in_the_bucket_of_their_upper_bound);
  tcase_add_test(tc, a_stall_is_reported_once_while_it_lasts_and_counted);
  tcase_add_test(tc, a_call_shorter_than_the_threshold_is_no_stall);
  tcase_add_test(tc, an_untimed_stall_counts_from_the_first_scan_that_saw_it);
  tcase_add_test(tc, sampled_calls_count_for_the_calls_they_stand_for);
  tcase_add_test(tc, a_nested_call_is_part_of_the_one_around_it);
  tcase_add_test(tc, another_hosts_calls_are_left_to_its_own_watchdog);
  tcase_add_test(tc, many_threads_bracket_while_the_watchdog_scans);
  tcase_add_test(tc, metrics_name_plugin_generation_and_kind);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
