/*
 * The stall watchdog and callback durations (SPEC section 15).
 *
 * Every call the host makes into plugin code in a serial order (session
 * callbacks, session timers and posts, room callbacks, work completions) is
 * bracketed by watch_begin / watch_end. The bracket is cheap and takes no
 * lock: each thread publishes what it runs in a slot of its own (found
 * through a thread-local pointer, registered once per thread), with
 * atomics; its end adds the duration to a fixed-bound histogram of the
 * plugin generation and callback kind.
 *
 * The host's watchdog thread scans the slots every few milliseconds. A
 * callback running longer than watchdog.stall_warn_ms is logged once per
 * stall, with plugin, generation, service, session or room id, kind and
 * packet id, and counted in its generation's stalls.
 *
 * A work's own function is not bracketed: it runs on a work thread, where
 * blocking is what it is for.
 */
#ifndef IOCPHOST_WATCHDOG_H
#define IOCPHOST_WATCHDOG_H

#include <stdatomic.h>
#include <stdint.h>

#include "prom.h"

typedef struct host host_t;
typedef struct generation generation_t;

/* The kinds of plugin callback, with their names in logs and metrics. */
#define WATCH_KINDS(X)                                                         \
  X(WATCH_ON_CONNECTED, "on_connected")                                        \
  X(WATCH_ON_RECV, "on_recv")                                                  \
  X(WATCH_ON_PACKET, "on_packet")                                              \
  X(WATCH_ON_SEND, "on_send")                                                  \
  X(WATCH_ON_DISCONNECTED, "on_disconnected")                                  \
  X(WATCH_SESSION_TIMER, "session_timer")                                      \
  X(WATCH_SESSION_POST, "session_post")                                        \
  X(WATCH_SESSION_WORK_DONE, "session_work_done")                              \
  X(WATCH_ROOM_OPEN, "room_open")                                              \
  X(WATCH_ROOM_JOIN, "room_join")                                              \
  X(WATCH_ROOM_LEAVE, "room_leave")                                            \
  X(WATCH_ROOM_POST, "room_post")                                              \
  X(WATCH_ROOM_TICK, "room_tick")                                              \
  X(WATCH_ROOM_CLOSE, "room_close")                                            \
  X(WATCH_ROOM_WORK_DONE, "room_work_done")

typedef enum watch_kind {
#define WATCH_KIND_ENUM(name, text) name,
  WATCH_KINDS(WATCH_KIND_ENUM)
#undef WATCH_KIND_ENUM
      WATCH_KIND_COUNT
} watch_kind_t;

const char *watch_kind_name(watch_kind_t kind);

/* Histogram bounds, in seconds (and in nanoseconds for the hot path). */
#define WATCH_BOUNDS 12
extern const double watch_bounds_seconds[WATCH_BOUNDS];

/* One histogram: buckets[i] counts durations <= bound i (not cumulative),
 * buckets[WATCH_BOUNDS] the longer ones. */
typedef struct watch_histogram {
  atomic_uint_fast64_t buckets[WATCH_BOUNDS + 1];
  atomic_uint_fast64_t sum_ns;
} watch_histogram_t;

/* A generation's bookkeeping (in generation_t, zeroed with it). */
typedef struct watch_stats {
  atomic_uint_fast64_t stalls;
  watch_histogram_t kinds[WATCH_KIND_COUNT];
} watch_stats_t;

/* Adds one timed duration to a histogram, counted weight times (a sampled
 * call stands for the calls that were not timed). */
void watch_histogram_add(watch_histogram_t *h, uint64_t ns, uint32_t weight);
/* A snapshot: counts[WATCH_BOUNDS + 1] as prom_histogram takes them;
 * returns the total count and sets *sum_seconds. */
uint64_t watch_histogram_read(const watch_histogram_t *h, uint64_t *counts,
                              double *sum_seconds);

/* What a callback is, for the watchdog's line. */
typedef struct watch_call {
  host_t *host;
  generation_t *generation; /* held while the callback runs; NULL: no plugin
                               code, nothing measured */
  watch_kind_t kind;
  const char *service; /* NULL for a room */
  uint64_t id;         /* session or room id */
  int packet_id;       /* -1 when none */
} watch_call_t;

/* Returned by watch_begin, given back to watch_end on the same thread. */
typedef struct watch_mark {
  void *slot; /* the thread's slot, NULL when nested or not watched */
  generation_t *generation;
  watch_kind_t kind;
  uint64_t start_ns; /* 0: not timed */
  uint32_t weight;   /* the calls a timed one stands for */
} watch_mark_t;

watch_mark_t watch_begin(const watch_call_t *call);
void watch_end(const watch_mark_t *mark);

/* The monotonic clock the bracket uses, in nanoseconds. */
uint64_t watch_now_ns(void);

/* The host's watchdog thread: started with the host (when
 * config->stall_warn_ms > 0), stopped before its plugins are unloaded.
 * watchdog_stop is safe to call twice and without a start. */
int watchdog_start(host_t *host, char *err, size_t err_len);
void watchdog_stop(host_t *host);

/* One pass of the scan (the thread's body calls it; tests may too): logs
 * and counts each callback of host running longer than warn_ms that was
 * not reported yet. Returns how many it reported. */
int watchdog_scan(host_t *host, uint32_t warn_ms);

/* iocphost_plugin_stalls_total{plugin,generation} and
 * iocphost_plugin_callback_duration_seconds{plugin,generation,kind}. */
void watchdog_render_metrics(host_t *h, prom_t *p);

#endif
