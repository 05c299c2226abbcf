/* Rooms in the engine (SPEC section 12): a serial order of their own for
 * posts and timers, closed at any moment from any thread, with nothing
 * running after on_close, and ticks that do not drift. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"
#include "testutil.h"

#define ROOMS 100

typedef struct room_state {
  atomic_int in_flight; /* a callback of this room runs now */
  atomic_int closed;    /* on_close ran */
  atomic_int freed;
} room_state_t;

static atomic_int overlaps, after_close, ticks, posts, closes, frees;

static void enter(room_t *r) {
  room_state_t *st = room_extra(r);
  if (atomic_exchange(&st->in_flight, 1))
    atomic_fetch_add(&overlaps, 1);
  if (atomic_load(&st->closed))
    atomic_fetch_add(&after_close, 1);
}

static void leave(room_t *r) {
  room_state_t *st = room_extra(r);
  atomic_store(&st->in_flight, 0);
}

static void on_tick(room_t *r, void *arg, void *arg2, const room_tick_t *t) {
  (void)arg;
  (void)arg2;
  (void)t;
  enter(r);
  atomic_fetch_add(&ticks, 1);
  leave(r);
}

static void on_post(room_t *r, void *arg, void *arg2) {
  (void)arg;
  (void)arg2;
  enter(r);
  atomic_fetch_add(&posts, 1);
  leave(r);
}

static void on_close(room_t *r) {
  enter(r);
  room_state_t *st = room_extra(r);
  atomic_store(&st->closed, 1);
  atomic_fetch_add(&closes, 1);
  leave(r);
}

static void on_free(room_t *r) {
  room_state_t *st = room_extra(r);
  atomic_fetch_add(&st->freed, 1);
  atomic_fetch_add(&frees, 1);
}

static const room_handler_t handler = {.on_close = on_close,
                                       .on_free = on_free};

static room_t *rooms[ROOMS];
static atomic_int stop_threads;

typedef struct poster {
  uint64_t rng;
  int posted;
} poster_t;

/* Posts to random rooms, and closes a few, as plugin threads would. */
static void *poster_main(void *arg) {
  poster_t *p = arg;
  for (int i = 0; i < 200000 && !atomic_load(&stop_threads); i++) {
    room_t *r = rooms[tu_rand(&p->rng) % ROOMS];
    if (room_post(r, on_post, NULL, NULL, NULL) == ENGINE_OK)
      p->posted++;
    if (tu_rand(&p->rng) % 5000 == 0)
      room_close(r);
  }
  return NULL;
}

static int all_freed(void *arg) {
  (void)arg;
  return atomic_load(&frees) == ROOMS;
}

START_TEST(test_rooms_run_one_at_a_time_and_nothing_after_close) {
  char err[256];
  core_t *core;
  ck_assert_msg(core_create("rooms", 2, CORE_BACKEND_DEFAULT, &core, err,
                            sizeof err) == 0,
                "%s", err);
  for (int i = 0; i < ROOMS; i++) {
    rooms[i] = room_create(core, &handler, sizeof(room_state_t), NULL);
    ck_assert_ptr_nonnull(rooms[i]);
    /* 60 Hz ticks on every room. */
    ck_assert_uint_ne(
        room_timer_start(rooms[i], 1, 16, on_tick, NULL, NULL, NULL), 0);
  }
  pthread_t th[4];
  poster_t ps[4];
  for (int i = 0; i < 4; i++) {
    ps[i] = (poster_t){.rng = 0x1234 + (uint64_t)i};
    pthread_create(&th[i], NULL, poster_main, &ps[i]);
  }
  /* Let them run a while, then close every room from this thread while
   * the posters still post. */
  ck_assert(tu_wait_at_least(&ticks, ROOMS * 5, 20000));
  for (int i = 0; i < ROOMS; i++)
    room_close(rooms[i]);
  atomic_store(&stop_threads, 1);
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  /* Closing twice is harmless; after the close, nothing new starts. */
  ck_assert_int_eq(room_close(rooms[0]), ENGINE_E_CLOSED);
  ck_assert_int_eq(room_post(rooms[0], on_post, NULL, NULL, NULL),
                   ENGINE_E_CLOSED);
  ck_assert_uint_eq(room_timer_start(rooms[0], 1, 0, on_tick, NULL, NULL, NULL),
                    0);
  for (int i = 0; i < ROOMS; i++)
    room_release(rooms[i]);
  ck_assert(tu_wait_until(all_freed, NULL, 10000));
  core_destroy(core);
  fprintf(stderr, "rooms: %d ticks, %d posts, %d closes\n", atomic_load(&ticks),
          atomic_load(&posts), atomic_load(&closes));
  ck_assert_int_eq(atomic_load(&overlaps), 0);
  ck_assert_int_eq(atomic_load(&after_close), 0);
  ck_assert_int_eq(atomic_load(&closes), ROOMS);
  ck_assert_int_gt(atomic_load(&posts), 0);
  ck_assert_int_eq(engine_live_objects(), 0);
}
END_TEST

/* ---- ticks ---- */

#define TICKS 50
static uint64_t due[TICKS + 1];
static uint64_t counts[TICKS + 1];
static atomic_int ticked;

static void record_tick(room_t *r, void *arg, void *arg2,
                        const room_tick_t *t) {
  (void)r;
  (void)arg;
  (void)arg2;
  int n = atomic_load(&ticked);
  if (n < TICKS) {
    due[n] = t->due_ms;
    counts[n] = t->count;
    /* Every fifth tick works for 25 ms: the next two are late, and run
     * late rather than being skipped or moving the schedule. */
    if (n % 5 == 0)
      tu_sleep_ms(25);
    atomic_store(&ticked, n + 1);
  }
}

START_TEST(test_room_ticks_do_not_drift_and_late_ones_still_run) {
  atomic_store(&ticked, 0);
  char err[256];
  core_t *core;
  ck_assert_msg(core_create("ticks", 1, CORE_BACKEND_DEFAULT, &core, err,
                            sizeof err) == 0,
                "%s", err);
  room_t *r = room_create(core, NULL, 0, NULL);
  ck_assert_ptr_nonnull(r);
  ck_assert_uint_ne(room_timer_start(r, 10, 10, record_tick, NULL, NULL, NULL),
                    0);
  ck_assert(tu_wait_at_least(&ticked, TICKS, 20000));
  room_close(r);
  room_release(r);
  for (int i = 1; i < TICKS; i++) {
    ck_assert_msg(due[i] == due[i - 1] + 10,
                  "tick %d due at +%llu ms after the one before", i,
                  (unsigned long long)(due[i] - due[i - 1]));
    ck_assert_uint_eq(counts[i], (uint64_t)i + 1);
  }
  core_destroy(core);
  ck_assert_int_eq(engine_live_objects(), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("engine_rooms");
  TCase *tc = tcase_create("rooms");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_rooms_run_one_at_a_time_and_nothing_after_close);
  tcase_add_test(tc, test_room_ticks_do_not_drift_and_late_ones_still_run);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
