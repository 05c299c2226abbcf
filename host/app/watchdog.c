/*
 * The stall watchdog and callback durations: see watchdog.h.
 *
 * A slot is a seqlock with one writer, its thread: seq is odd while a
 * callback runs. watch_begin writes the callback's facts, then makes seq
 * odd (release); watch_end makes it even again. The scan reads seq, the
 * facts, and seq again (all acquire): the same odd value twice means the
 * facts belong to that one call. Slots are never freed; a thread's slot goes back to the
 * pool when the thread ends (a key's destructor) and the next new thread
 * takes it, so their number stays the number of threads alive at once.
 */
#include "watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#include <windows.h>
#endif

#include "engine/cond_wait.h"
#include "engine/log.h"
#include "host_internal.h"

static const char *const kind_names[] = {
#define WATCH_KIND_NAME(name, text) [name] = text,
    WATCH_KINDS(WATCH_KIND_NAME)
#undef WATCH_KIND_NAME
};

const char *watch_kind_name(watch_kind_t kind) {
  return (unsigned)kind < WATCH_KIND_COUNT ? kind_names[kind] : "?";
}

const double watch_bounds_seconds[WATCH_BOUNDS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005,   0.01,   0.025,   0.1,    0.25,  1.0};
static const uint64_t bounds_ns[WATCH_BOUNDS] = {
    50000,   100000,   250000,   500000,    1000000,   2500000,
    5000000, 10000000, 25000000, 100000000, 250000000, 1000000000};

/* ---- the clock ---- */

#ifdef _WIN32
static atomic_llong qpc_frequency;

uint64_t watch_now_ns(void) {
  long long f = atomic_load_explicit(&qpc_frequency, memory_order_relaxed);
  if (f == 0) {
    LARGE_INTEGER freq;
    QueryPerformanceFrequency(&freq);
    f = freq.QuadPart;
    atomic_store_explicit(&qpc_frequency, f, memory_order_relaxed);
  }
  LARGE_INTEGER c;
  QueryPerformanceCounter(&c);
  uint64_t ticks = (uint64_t)c.QuadPart, freq = (uint64_t)f;
  return ticks / freq * 1000000000u + ticks % freq * 1000000000u / freq;
}
#else
uint64_t watch_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif

/* ---- histograms ---- */

void watch_histogram_add(watch_histogram_t *h, uint64_t ns, uint32_t weight) {
  size_t b = 0;
  while (b < WATCH_BOUNDS && ns > bounds_ns[b])
    b++;
  atomic_fetch_add_explicit(&h->buckets[b], weight, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, ns * weight, memory_order_relaxed);
}

uint64_t watch_histogram_read(const watch_histogram_t *h, uint64_t *counts,
                              double *sum_seconds) {
  uint64_t total = 0;
  for (size_t b = 0; b <= WATCH_BOUNDS; b++) {
    counts[b] = atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
    total += counts[b];
  }
  *sum_seconds =
      (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
  return total;
}

/* ---- the threads' slots ---- */

typedef struct watch_slot watch_slot_t;
struct watch_slot {
  atomic_uint_fast64_t seq; /* odd while a callback runs */
  atomic_uint_fast64_t start_ns; /* 0: not timed (no durations kept) */
  /* The scan's own: the running call it first saw, and when. An untimed
   * call's stall is measured from there, so the hot path reads no clock
   * when nobody keeps durations. */
  atomic_uint_fast64_t seen_seq;
  atomic_uint_fast64_t seen_ns;
  _Atomic(host_t *) host;
  _Atomic(generation_t *) generation;
  _Atomic(const char *) service;
  atomic_uint_fast64_t id;
  atomic_int kind;
  atomic_int packet_id;
  /* The seq of the last call the watchdog reported: once per stall. */
  atomic_uint_fast64_t reported;
  atomic_int in_use;
  watch_slot_t *next; /* set before the slot is published, then fixed */
};

static _Atomic(watch_slot_t *) slots;
static _Thread_local watch_slot_t *thread_slot;
/* Calls since this thread last timed one (metrics.callback_sample). */
static _Thread_local uint32_t thread_untimed;
static pthread_key_t slot_key;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;

static void slot_thread_ended(void *slot) {
  atomic_store(&((watch_slot_t *)slot)->in_use, 0);
}

static void slot_key_create(void) {
  if (pthread_key_create(&slot_key, slot_thread_ended) != 0)
    log_write(LOG_WARN, "watchdog",
              "cannot create a thread key: the slots of ended threads are "
              "not reused");
}

/* Once per thread: a free slot, or a new one. NULL without memory (then
 * this thread's callbacks are measured but not watched). */
static watch_slot_t *slot_register(void) {
  pthread_once(&slot_key_once, slot_key_create);
  watch_slot_t *slot = NULL;
  for (watch_slot_t *s = atomic_load(&slots); s && !slot; s = s->next) {
    int free_slot = 0;
    if (atomic_compare_exchange_strong(&s->in_use, &free_slot, 1))
      slot = s;
  }
  if (!slot) {
    slot = calloc(1, sizeof *slot);
    if (!slot)
      return NULL;
    atomic_store(&slot->in_use, 1);
    watch_slot_t *head = atomic_load(&slots);
    do
      slot->next = head;
    while (!atomic_compare_exchange_weak(&slots, &head, slot));
  }
  pthread_setspecific(slot_key, slot);
  thread_slot = slot;
  return slot;
}

/* ---- the bracket ---- */

watch_mark_t watch_begin(const watch_call_t *call) {
  watch_mark_t mark = {NULL, call->generation, call->kind, 0, 0};
  if (!call->generation)
    return mark;
  watch_slot_t *slot = thread_slot;
  if (!slot)
    slot = slot_register();
  /* A clock read costs 20 ns on bare metal and over 100 ns where the
   * hypervisor traps the TSC: only when durations are kept, and then for
   * one call in callback_sample on this thread. */
  uint32_t every = call->host->callback_sample;
  if (every != 0 && ++thread_untimed >= every) {
    thread_untimed = 0;
    mark.start_ns = watch_now_ns();
    mark.weight = every;
  }
  if (!slot)
    return mark;
  uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_relaxed);
  if (seq & 1)
    return mark; /* nested in another callback: that one is watched */
  /* The facts are written while seq is even, each with release: a scan
   * that reads one of them (acquire) sees the even seq written before it,
   * so it never takes a fact of this call for one of the call before.
   * (Release stores and acquire loads are plain moves on x86; fences would
   * be too, but ThreadSanitizer does not understand them.) */
  atomic_store_explicit(&slot->host, call->host, memory_order_release);
  atomic_store_explicit(&slot->generation, call->generation,
                        memory_order_release);
  atomic_store_explicit(&slot->service, call->service, memory_order_release);
  atomic_store_explicit(&slot->id, call->id, memory_order_release);
  atomic_store_explicit(&slot->kind, (int)call->kind, memory_order_release);
  atomic_store_explicit(&slot->packet_id, call->packet_id,
                        memory_order_release);
  atomic_store_explicit(&slot->start_ns, mark.start_ns, memory_order_release);
  atomic_store_explicit(&slot->seq, seq + 1, memory_order_release);
  mark.slot = slot;
  return mark;
}

void watch_end(const watch_mark_t *mark) {
  if (!mark->generation)
    return;
  watch_slot_t *slot = mark->slot;
  if (slot)
    atomic_store_explicit(
        &slot->seq,
        atomic_load_explicit(&slot->seq, memory_order_relaxed) + 1,
        memory_order_release);
  if (mark->start_ns != 0)
    watch_histogram_add(&mark->generation->calls.kinds[mark->kind],
                        watch_now_ns() - mark->start_ns, mark->weight);
}

/* ---- the scan ---- */

typedef struct stall {
  watch_slot_t *slot;
  uint64_t seq;
  generation_t *generation;
  const char *service;
  uint64_t id;
  int kind;
  int packet_id;
  uint64_t ran_ms;
} stall_t;

/* A consistent look at a slot's running call of host that has run at
 * least warn_ns and was not reported; 1 if there is one. */
static int slot_stalled(watch_slot_t *s, host_t *host, uint64_t now,
                        uint64_t warn_ns, stall_t *out) {
  uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
  if (!(seq & 1) || atomic_load(&s->reported) == seq)
    return 0;
  out->slot = s;
  out->seq = seq;
  host_t *owner = atomic_load_explicit(&s->host, memory_order_acquire);
  uint64_t start = atomic_load_explicit(&s->start_ns, memory_order_acquire);
  out->generation = atomic_load_explicit(&s->generation, memory_order_acquire);
  out->service = atomic_load_explicit(&s->service, memory_order_acquire);
  out->id = atomic_load_explicit(&s->id, memory_order_acquire);
  out->kind = atomic_load_explicit(&s->kind, memory_order_acquire);
  out->packet_id = atomic_load_explicit(&s->packet_id, memory_order_acquire);
  if (atomic_load_explicit(&s->seq, memory_order_acquire) != seq)
    return 0; /* it ended meanwhile */
  if (owner != host)
    return 0;
  if (start == 0) {
    /* Untimed: from when a scan first saw this call running (at most one
     * scan period after it began). */
    if (atomic_load(&s->seen_seq) != seq) {
      atomic_store(&s->seen_ns, now);
      atomic_store(&s->seen_seq, seq);
    }
    start = atomic_load(&s->seen_ns);
  }
  if (now < start || now - start < warn_ns)
    return 0;
  out->ran_ms = (now - start) / 1000000u;
  return 1;
}

int watchdog_scan(host_t *host, uint32_t warn_ms) {
  uint64_t now = watch_now_ns();
  uint64_t warn_ns = (uint64_t)warn_ms * 1000000u;
  int reported = 0;
  for (watch_slot_t *s = atomic_load(&slots); s; s = s->next) {
    stall_t st;
    if (!slot_stalled(s, host, now, warn_ns, &st))
      continue;
    /* The generation is held while its call runs, and let go of under
     * gen_lock: with the lock held and the call still running, it is
     * there to count on and to name. */
    char plugin[128];
    unsigned number = 0;
    int counted = 0;
    pthread_mutex_lock(&host->gen_lock);
    if (atomic_load_explicit(&s->seq, memory_order_acquire) == st.seq) {
      /* Two hosts' watchdogs may look at one slot: one reports. */
      uint64_t old = atomic_load(&s->reported);
      counted = old != st.seq &&
                atomic_compare_exchange_strong(&s->reported, &old, st.seq);
      if (counted) {
        atomic_fetch_add(&st.generation->calls.stalls, 1);
        snprintf(plugin, sizeof plugin, "%s", st.generation->plugin->name);
        number = st.generation->number;
      }
    }
    pthread_mutex_unlock(&host->gen_lock);
    if (!counted)
      continue;
    char where[160], packet[40] = "";
    if (st.service)
      snprintf(where, sizeof where, "service %s, session %llu", st.service,
               (unsigned long long)st.id);
    else
      snprintf(where, sizeof where, "room %llu", (unsigned long long)st.id);
    if (st.packet_id >= 0)
      snprintf(packet, sizeof packet, " (packet %d)", st.packet_id);
    log_write(LOG_WARN, "watchdog",
              "stall: plugin %s, generation %u, %s, %s%s, running for at least %llu ms "
              "(over watchdog.stall_warn_ms %u): it holds an I/O worker and "
              "every session and room behind it; move blocking calls to "
              "session_work or room_work",
              plugin, number, where, watch_kind_name((watch_kind_t)st.kind),
              packet, (unsigned long long)st.ran_ms, warn_ms);
    reported++;
  }
  return reported;
}

/* ---- the thread ---- */

struct watchdog {
  host_t *host;
  uint32_t warn_ms;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  int stop; /* under lock */
};

/* Often enough that a stall is seen within a quarter of the threshold
 * past it, never busier than every 5 ms. */
static uint32_t scan_period_ms(uint32_t warn_ms) {
  uint32_t period = warn_ms / 4;
  return period < 5 ? 5 : period > 1000 ? 1000 : period;
}

static void *watchdog_main(void *arg) {
  struct watchdog *w = arg;
  uint32_t period = scan_period_ms(w->warn_ms);
  pthread_mutex_lock(&w->lock);
  while (!w->stop) {
    pthread_mutex_unlock(&w->lock);
    watchdog_scan(w->host, w->warn_ms);
    uint64_t deadline = clock_now_ms() + period;
    pthread_mutex_lock(&w->lock);
    while (!w->stop && !cond_wait_until_ms(&w->wake, &w->lock, deadline)) {
    }
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

int watchdog_start(host_t *host, char *err, size_t err_len) {
  uint32_t warn_ms = host->config->stall_warn_ms;
  if (warn_ms == 0 || host->watchdog)
    return 0;
  struct watchdog *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(err, err_len, "watchdog: out of memory");
    return -1;
  }
  w->host = host;
  w->warn_ms = warn_ms;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->wake, NULL);
  if (pthread_create(&w->thread, NULL, watchdog_main, w) != 0) {
    snprintf(err, err_len, "watchdog: cannot start its thread");
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
    return -1;
  }
  host->watchdog = w;
  return 0;
}

void watchdog_stop(host_t *host) {
  struct watchdog *w = host->watchdog;
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  pthread_cond_signal(&w->wake);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->wake);
  pthread_mutex_destroy(&w->lock);
  free(w);
  host->watchdog = NULL;
}

/* ---- metrics ---- */

void watchdog_render_metrics(host_t *h, prom_t *p) {
  char number[16];
  pthread_mutex_lock(&h->gen_lock);
  prom_family(p, "iocphost_plugin_stalls_total", PROM_COUNTER,
              "Plugin callbacks that ran longer than watchdog.stall_warn_ms, "
              "counted once per stall.");
  for (size_t i = 0; i < h->plugin_count; i++) {
    for (generation_t *g = h->plugins[i].generations; g; g = g->next) {
      snprintf(number, sizeof number, "%u", g->number);
      const char *labels[] = {"plugin", h->plugins[i].name, "generation",
                              number, NULL};
      prom_sample_u64(p, "iocphost_plugin_stalls_total", labels,
                      atomic_load(&g->calls.stalls));
    }
  }
  prom_family(p, "iocphost_plugin_callback_duration_seconds", PROM_HISTOGRAM,
              "How long plugin callbacks ran, by plugin generation and "
              "callback kind; one call in metrics.callback_sample per "
              "thread is timed and counts for that many.");
  for (size_t i = 0; i < h->plugin_count; i++) {
    for (generation_t *g = h->plugins[i].generations; g; g = g->next) {
      snprintf(number, sizeof number, "%u", g->number);
      for (int k = 0; k < WATCH_KIND_COUNT; k++) {
        uint64_t counts[WATCH_BOUNDS + 1];
        double sum;
        /* Kinds the plugin never ran stay out: most have a few. */
        if (watch_histogram_read(&g->calls.kinds[k], counts, &sum) == 0)
          continue;
        const char *labels[] = {"plugin",
                                h->plugins[i].name,
                                "generation",
                                number,
                                "kind",
                                watch_kind_name((watch_kind_t)k),
                                NULL};
        prom_histogram(p, "iocphost_plugin_callback_duration_seconds", labels,
                       watch_bounds_seconds, counts, WATCH_BOUNDS, sum);
      }
    }
  }
  pthread_mutex_unlock(&h->gen_lock);
}
