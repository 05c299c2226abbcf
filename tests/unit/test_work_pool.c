/* Work threads (engine.h, work.c): every item's run and finish run exactly
 * once, on one pool thread that is never the caller's; a full queue says
 * ENGINE_E_BUSY at once; a drain waits for running work, within its bound;
 * a pool destroyed with work stuck in it leaves that work to end. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "testutil.h"

typedef struct item {
  atomic_int runs;
  atomic_int finishes;
  atomic_int on_pool_thread; /* run and finish both saw a pool thread */
  atomic_int same_thread;    /* finish ran on run's thread */
  pthread_t run_thread;
  atomic_int *gate; /* when set, run waits for it to become 1 */
  int sleep_ms;
  atomic_int dropped;
} item_t;

static pthread_t caller;

static void run_item(void *arg) {
  item_t *it = arg;
  it->run_thread = pthread_self();
  if (work_pool_on_thread() && !pthread_equal(pthread_self(), caller))
    atomic_fetch_add(&it->on_pool_thread, 1);
  if (it->gate)
    while (!atomic_load(it->gate))
      tu_sleep_ms(1);
  if (it->sleep_ms)
    tu_sleep_ms(it->sleep_ms);
  atomic_fetch_add(&it->runs, 1);
}

static void finish_item(void *arg) {
  item_t *it = arg;
  if (pthread_equal(pthread_self(), it->run_thread))
    atomic_fetch_add(&it->same_thread, 1);
  if (work_pool_on_thread() && !pthread_equal(pthread_self(), caller))
    atomic_fetch_add(&it->on_pool_thread, 1);
  atomic_fetch_add(&it->finishes, 1);
}

static void drop_item(void *arg) {
  atomic_fetch_add(&((item_t *)arg)->dropped, 1);
}

static work_pool_t *make_pool(int threads, uint32_t queue_limit) {
  char err[256] = "";
  work_pool_t *pool = NULL;
  ck_assert_msg(work_pool_create(threads, queue_limit, &pool, err,
                                 sizeof err) == 0,
                "%s", err);
  return pool;
}

static work_pool_stats_t stats_of(work_pool_t *pool) {
  work_pool_stats_t st;
  work_pool_get_stats(pool, &st);
  return st;
}

static int one_running(void *arg) { return stats_of(arg).running == 1; }

#define MANY 2000

START_TEST(test_every_item_runs_and_finishes_exactly_once_off_the_caller) {
  caller = pthread_self();
  ck_assert(!work_pool_on_thread());
  work_pool_t *pool = make_pool(4, MANY);
  item_t *items = calloc(MANY, sizeof *items);
  ck_assert_ptr_nonnull(items);
  for (int i = 0; i < MANY; i++)
    ck_assert_int_eq(work_pool_submit(pool, run_item, finish_item, &items[i]),
                     ENGINE_OK);
  ck_assert_int_eq(work_pool_drain(pool, 30000), 0);
  for (int i = 0; i < MANY; i++) {
    ck_assert_int_eq(atomic_load(&items[i].runs), 1);
    ck_assert_int_eq(atomic_load(&items[i].finishes), 1);
    ck_assert_int_eq(atomic_load(&items[i].on_pool_thread), 2);
    ck_assert_int_eq(atomic_load(&items[i].same_thread), 1);
  }
  work_pool_stats_t st = stats_of(pool);
  ck_assert_int_eq(st.threads, 4);
  ck_assert_uint_eq(st.completed, MANY);
  ck_assert_uint_eq(st.queued, 0);
  ck_assert_uint_eq(st.running, 0);
  ck_assert_uint_eq(st.rejected, 0);
  uint64_t in_histogram = 0;
  for (int b = 0; b < WORK_HISTOGRAM_BUCKETS; b++)
    in_histogram += st.run_histogram[b];
  ck_assert_uint_eq(in_histogram, MANY);
  /* A drained pool takes no more work. */
  item_t late = {0};
  ck_assert_int_eq(work_pool_submit(pool, run_item, finish_item, &late),
                   ENGINE_E_CLOSED);
  ck_assert_uint_eq(work_pool_destroy(pool, NULL), 0);
  ck_assert_int_eq(atomic_load(&late.runs), 0);
  free(items);
}
END_TEST

START_TEST(test_zero_threads_means_one_per_cpu) {
  work_pool_t *pool = make_pool(0, 1);
  ck_assert_int_ge(stats_of(pool).threads, 1);
  ck_assert_int_eq(work_pool_drain(pool, 1000), 0);
  work_pool_destroy(pool, NULL);
}
END_TEST

START_TEST(test_a_full_queue_answers_busy_at_once) {
  caller = pthread_self();
  atomic_int gate = 0;
  work_pool_t *pool = make_pool(1, 3);
  item_t blocker = {.gate = &gate};
  ck_assert_int_eq(work_pool_submit(pool, run_item, finish_item, &blocker),
                   ENGINE_OK);
  ck_assert(tu_wait_until(one_running, pool, 10000));
  item_t waiting[3] = {{0}};
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(
        work_pool_submit(pool, run_item, finish_item, &waiting[i]), ENGINE_OK);
  item_t refused = {0};
  uint64_t start = tu_now_ms();
  ck_assert_int_eq(work_pool_submit(pool, run_item, finish_item, &refused),
                   ENGINE_E_BUSY);
  ck_assert_int_eq(work_pool_submit(pool, run_item, finish_item, &refused),
                   ENGINE_E_BUSY);
  /* At once: the blocker is still held, nothing waited for it. */
  ck_assert_uint_lt(tu_now_ms() - start, 1000);
  ck_assert_int_eq(atomic_load(&blocker.runs), 0);
  work_pool_stats_t st = stats_of(pool);
  ck_assert_uint_eq(st.queued, 3);
  ck_assert_uint_eq(st.running, 1);
  ck_assert_uint_eq(st.rejected, 2);
  atomic_store(&gate, 1);
  ck_assert_int_eq(work_pool_drain(pool, 30000), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(atomic_load(&waiting[i].finishes), 1);
  ck_assert_int_eq(atomic_load(&refused.runs), 0);
  ck_assert_int_eq(atomic_load(&refused.finishes), 0);
  ck_assert_uint_eq(stats_of(pool).completed, 4);
  work_pool_destroy(pool, NULL);
}
END_TEST

START_TEST(test_drain_waits_for_running_and_queued_work) {
  caller = pthread_self();
  work_pool_t *pool = make_pool(2, 16);
  item_t items[4] = {{.sleep_ms = 100}, {.sleep_ms = 100},
                     {.sleep_ms = 100}, {.sleep_ms = 100}};
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(work_pool_submit(pool, run_item, finish_item, &items[i]),
                     ENGINE_OK);
  uint64_t start = tu_now_ms();
  ck_assert_int_eq(work_pool_drain(pool, 30000), 0);
  /* Two rounds of two: the drain returned only after all four finished. */
  ck_assert_uint_ge(tu_now_ms() - start, 190);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(atomic_load(&items[i].finishes), 1);
  work_pool_destroy(pool, NULL);
}
END_TEST

static int finished(void *arg) {
  return atomic_load(&((item_t *)arg)->finishes) == 1;
}

START_TEST(test_drain_is_bounded_and_destroy_leaves_stuck_work_to_end) {
  caller = pthread_self();
  atomic_int gate = 0;
  work_pool_t *pool = make_pool(1, 16);
  item_t stuck = {.gate = &gate};
  item_t behind[2] = {{0}};
  ck_assert_int_eq(work_pool_submit(pool, run_item, finish_item, &stuck),
                   ENGINE_OK);
  ck_assert(tu_wait_until(one_running, pool, 10000));
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(
        work_pool_submit(pool, run_item, finish_item, &behind[i]), ENGINE_OK);
  uint64_t start = tu_now_ms();
  ck_assert_int_eq(work_pool_drain(pool, 200), -1);
  uint64_t waited = tu_now_ms() - start;
  ck_assert_uint_ge(waited, 195);
  ck_assert_uint_lt(waited, 5000);
  work_pool_stats_t st = stats_of(pool);
  ck_assert_uint_eq(st.running, 1);
  ck_assert_uint_eq(st.queued, 2);
  /* Destroy does not wait for the stuck item; what never started is
   * dropped, and the stuck one still ends (run, then finish). */
  start = tu_now_ms();
  ck_assert_uint_eq(work_pool_destroy(pool, drop_item), 2);
  ck_assert_int_eq(atomic_load(&behind[0].dropped), 1);
  ck_assert_int_eq(atomic_load(&behind[1].dropped), 1);
  ck_assert_int_eq(atomic_load(&stuck.dropped), 0);
  ck_assert_uint_lt(tu_now_ms() - start, 5000);
  ck_assert_int_eq(atomic_load(&stuck.runs), 0);
  atomic_store(&gate, 1);
  ck_assert(tu_wait_until(finished, &stuck, 10000));
  ck_assert_int_eq(atomic_load(&behind[0].runs), 0);
  ck_assert_int_eq(atomic_load(&behind[1].runs), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("work_pool");
  TCase *tc = tcase_create("work_pool");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_every_item_runs_and_finishes_exactly_once_off_the_caller);
  tcase_add_test(tc, test_zero_threads_means_one_per_cpu);
  tcase_add_test(tc, test_a_full_queue_answers_busy_at_once);
  tcase_add_test(tc, test_drain_waits_for_running_and_queued_work);
  tcase_add_test(tc, test_drain_is_bounded_and_destroy_leaves_stuck_work_to_end);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
