/*
 * tick_hist.h: the tick-lateness histogram shared by the room benchmark's
 * two servers (plugins/room_broadcast and bcast_epoll.c), so both count and
 * report lateness the same way.
 *
 * Lateness is in microseconds: how long after its due time (a whole
 * monotonic millisecond, as the engine schedules ticks) a tick began to
 * run. Buckets are 10 us wide up to 100 ms, then 10 ms wide up to 100 s
 * (an overloaded server's backlog); the maximum is kept exactly. Safe to record from several
 * threads at once (relaxed atomics: the figures are read once, at the end).
 */
#ifndef TICK_HIST_H
#define TICK_HIST_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define TICK_HIST_FINE 10000u /* 10 us buckets: 0 to 100 ms */
#define TICK_HIST_BUCKETS (TICK_HIST_FINE + 10000u) /* then 10 ms ones */

typedef struct tick_hist {
  atomic_uint_fast32_t bucket[TICK_HIST_BUCKETS];
  atomic_uint_fast64_t count;
  atomic_uint_fast64_t max_us;
} tick_hist_t;

static inline void tick_hist_record(tick_hist_t *h, uint64_t us) {
  uint64_t i = us < TICK_HIST_FINE * 10u
                   ? us / 10u
                   : TICK_HIST_FINE + (us - TICK_HIST_FINE * 10u) / 10000u;
  if (i >= TICK_HIST_BUCKETS)
    i = TICK_HIST_BUCKETS - 1;
  atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  uint64_t m = atomic_load_explicit(&h->max_us, memory_order_relaxed);
  while (us > m && !atomic_compare_exchange_weak_explicit(
                       &h->max_us, &m, us, memory_order_relaxed,
                       memory_order_relaxed)) {
  }
}

/* The upper edge of the bucket holding percentile p (0..100), in us; never
 * above the maximum. */
static inline uint64_t tick_hist_at(tick_hist_t *h, double p) {
  uint64_t n = atomic_load_explicit(&h->count, memory_order_relaxed);
  uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
  if (n == 0)
    return 0;
  uint64_t rank = (uint64_t)(p / 100.0 * (double)n + 0.999999);
  if (rank < 1)
    rank = 1;
  uint64_t seen = 0;
  for (uint32_t i = 0; i < TICK_HIST_BUCKETS; i++) {
    seen += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
    if (seen >= rank) {
      uint64_t edge = i < TICK_HIST_FINE
                          ? (uint64_t)(i + 1) * 10u
                          : TICK_HIST_FINE * 10u +
                                (uint64_t)(i - TICK_HIST_FINE + 1) * 10000u;
      return edge < max ? edge : max;
    }
  }
  return max;
}

/* " NAME_ticks=.. NAME_p50_us=.. NAME_p99_us=.. NAME_max_us=..": the
 * key=value form run.sh reads from the server's log. */
static inline int tick_hist_format(tick_hist_t *h, const char *name,
                                   char *out, size_t len) {
  return snprintf(out, len, " %s_ticks=%llu %s_p50_us=%llu %s_p99_us=%llu "
                            "%s_max_us=%llu",
                  name,
                  (unsigned long long)atomic_load_explicit(
                      &h->count, memory_order_relaxed),
                  name, (unsigned long long)tick_hist_at(h, 50), name,
                  (unsigned long long)tick_hist_at(h, 99), name,
                  (unsigned long long)atomic_load_explicit(
                      &h->max_us, memory_order_relaxed));
}

#endif /* TICK_HIST_H */
