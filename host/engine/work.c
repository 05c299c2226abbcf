/*
 * Work threads (engine.h): a bounded pool, apart from the cores, where
 * blocking calls run so that no I/O worker ever waits on them. One FIFO
 * queue under one lock: items are few and long (milliseconds), so the
 * lock is not what limits them. The pool never calls back into a core
 * itself; the caller's finish hands each result back (a session's post).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <unistd.h>
#endif

#include "engine/engine.h"
#include "engine/cond_wait.h"
#include "engine/log.h"

typedef struct work_item {
  struct work_item *next;
  void (*run)(void *arg);
  void (*finish)(void *arg);
  void *arg;
  uint64_t submitted_us;
} work_item_t;

struct work_pool {
  pthread_mutex_t lock;
  pthread_cond_t has_work; /* threads wait on it for items or the stop */
  pthread_cond_t changed;  /* a drain waits on it for the pool to empty */
  pthread_t *threads;
  int thread_count;
  int threads_alive; /* started and not yet returned; under lock */
  work_item_t *head, *tail;
  uint32_t queue_limit;
  uint32_t queued;
  uint32_t running;
  int accepting; /* 0 once a drain began */
  int stopping;  /* threads return when they see it */
  int abandoned; /* destroyed with work left: the last thread frees */
  uint64_t completed;
  uint64_t rejected;
  uint64_t wait_us_sum;
  uint64_t run_us_sum;
  uint64_t wait_histogram[WORK_HISTOGRAM_BUCKETS];
  uint64_t run_histogram[WORK_HISTOGRAM_BUCKETS];
};

static _Thread_local int on_work_thread;

static int cpu_count(void) {
#ifdef _WIN32
  SYSTEM_INFO info;
  GetSystemInfo(&info);
  return info.dwNumberOfProcessors > 0 ? (int)info.dwNumberOfProcessors : 1;
#else
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus > 0 ? (int)cpus : 1;
#endif
}

/* Monotonic microseconds, for the latency sums. */
static uint64_t now_us(void) {
#ifdef _WIN32
  static LARGE_INTEGER frequency; /* the same for the whole run */
  LARGE_INTEGER count;
  if (frequency.QuadPart == 0)
    QueryPerformanceFrequency(&frequency);
  QueryPerformanceCounter(&count);
  return (uint64_t)(count.QuadPart / frequency.QuadPart) * 1000000u +
         (uint64_t)(count.QuadPart % frequency.QuadPart) * 1000000u /
             (uint64_t)frequency.QuadPart;
#else
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
#endif
}

static unsigned bucket_of(uint64_t us) {
  unsigned b = 0;
  while (b + 1 < WORK_HISTOGRAM_BUCKETS && us >= ((uint64_t)1 << b))
    b++;
  return b;
}

static void free_pool(work_pool_t *pool) {
  pthread_mutex_destroy(&pool->lock);
  pthread_cond_destroy(&pool->has_work);
  pthread_cond_destroy(&pool->changed);
  free(pool->threads);
  free(pool);
}

/* Takes the oldest item and runs it, run then finish, until the stop. */
static void *work_thread_main(void *arg) {
  work_pool_t *pool = arg;
  on_work_thread = 1;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    while (!pool->head && !pool->stopping)
      pthread_cond_wait(&pool->has_work, &pool->lock);
    if (pool->stopping)
      break;
    work_item_t *item = pool->head;
    pool->head = item->next;
    if (!pool->head)
      pool->tail = NULL;
    pool->queued--;
    pool->running++;
    pthread_mutex_unlock(&pool->lock);

    uint64_t started = now_us();
    item->run(item->arg);
    if (item->finish)
      item->finish(item->arg);
    uint64_t ended = now_us();
    uint64_t waited = started - item->submitted_us;
    free(item);

    pthread_mutex_lock(&pool->lock);
    pool->running--;
    pool->completed++;
    pool->wait_us_sum += waited;
    pool->run_us_sum += ended - started;
    pool->wait_histogram[bucket_of(waited)]++;
    pool->run_histogram[bucket_of(ended - started)]++;
    if (pool->queued == 0 && pool->running == 0)
      pthread_cond_broadcast(&pool->changed);
  }
  /* The stop: the last thread of an abandoned pool frees it. */
  int last = --pool->threads_alive == 0 && pool->abandoned;
  pthread_mutex_unlock(&pool->lock);
  if (last)
    free_pool(pool);
  return NULL;
}

int work_pool_create(int threads, uint32_t queue_limit, work_pool_t **out,
                     char *err, size_t err_len) {
  if (threads <= 0)
    threads = cpu_count();
  if (queue_limit == 0) {
    snprintf(err, err_len, "work queue_limit must be at least 1");
    return -1;
  }
  work_pool_t *pool = calloc(1, sizeof *pool);
  pthread_t *ids = calloc((size_t)threads, sizeof *ids);
  if (!pool || !ids) {
    free(pool);
    free(ids);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  pool->threads = ids;
  pool->queue_limit = queue_limit;
  pool->accepting = 1;
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->has_work, NULL);
  pthread_cond_init(&pool->changed, NULL);
  for (int i = 0; i < threads; i++) {
    pthread_mutex_lock(&pool->lock);
    int rc = pthread_create(&pool->threads[i], NULL, work_thread_main, pool);
    if (rc == 0)
      pool->threads_alive++;
    pthread_mutex_unlock(&pool->lock);
    if (rc != 0) {
      snprintf(err, err_len, "cannot start work thread %d of %d: %s", i + 1,
               threads, strerror(rc));
      pool->thread_count = i;
      pool->accepting = 0;
      work_pool_destroy(pool, NULL);
      return -1;
    }
  }
  pool->thread_count = threads;
  *out = pool;
  return 0;
}

int work_pool_submit(work_pool_t *pool, void (*run)(void *arg),
                     void (*finish)(void *arg), void *arg) {
  if (!pool || !run)
    return ENGINE_E_INVAL;
  work_item_t *item = malloc(sizeof *item);
  if (!item)
    return ENGINE_E_NOMEM;
  item->next = NULL;
  item->run = run;
  item->finish = finish;
  item->arg = arg;
  item->submitted_us = now_us();
  pthread_mutex_lock(&pool->lock);
  int rc = ENGINE_OK;
  if (!pool->accepting) {
    rc = ENGINE_E_CLOSED;
  } else if (pool->queued >= pool->queue_limit) {
    pool->rejected++;
    rc = ENGINE_E_BUSY;
  } else {
    if (pool->tail)
      pool->tail->next = item;
    else
      pool->head = item;
    pool->tail = item;
    pool->queued++;
    pthread_cond_signal(&pool->has_work);
  }
  pthread_mutex_unlock(&pool->lock);
  if (rc != ENGINE_OK)
    free(item);
  return rc;
}

int work_pool_drain(work_pool_t *pool, uint32_t timeout_ms) {
  uint64_t end = clock_now_ms() + timeout_ms;
  pthread_mutex_lock(&pool->lock);
  pool->accepting = 0;
  /* On the monotonic clock (cond_wait.h). */
  while (pool->queued > 0 || pool->running > 0)
    if (cond_wait_until_ms(&pool->changed, &pool->lock, end))
      break;
  int rc = pool->queued == 0 && pool->running == 0 ? 0 : -1;
  pthread_mutex_unlock(&pool->lock);
  return rc;
}

uint32_t work_pool_destroy(work_pool_t *pool, void (*drop)(void *arg)) {
  if (!pool)
    return 0;
  pthread_mutex_lock(&pool->lock);
  pool->accepting = 0;
  pool->stopping = 1;
  uint32_t dropped = pool->queued;
  work_item_t *item = pool->head;
  pool->head = pool->tail = NULL;
  pool->queued = 0;
  int busy = pool->running > 0;
  if (busy) {
    /* The threads free the pool; from here it is theirs. Detached under
     * the lock: none of them can reach its end (and the free) before. */
    pool->abandoned = 1;
    for (int i = 0; i < pool->thread_count; i++)
      pthread_detach(pool->threads[i]);
  }
  pthread_cond_broadcast(&pool->has_work);
  pthread_mutex_unlock(&pool->lock);
  while (item) {
    work_item_t *next = item->next;
    if (drop)
      drop(item->arg);
    free(item);
    item = next;
  }
  if (busy)
    return dropped;
  for (int i = 0; i < pool->thread_count; i++)
    pthread_join(pool->threads[i], NULL);
  free_pool(pool);
  return dropped;
}

void work_pool_get_stats(work_pool_t *pool, work_pool_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&pool->lock);
  out->threads = pool->thread_count;
  out->queue_limit = pool->queue_limit;
  out->queued = pool->queued;
  out->running = pool->running;
  out->completed = pool->completed;
  out->rejected = pool->rejected;
  out->wait_us_sum = pool->wait_us_sum;
  out->run_us_sum = pool->run_us_sum;
  memcpy(out->wait_histogram, pool->wait_histogram,
         sizeof out->wait_histogram);
  memcpy(out->run_histogram, pool->run_histogram, sizeof out->run_histogram);
  pthread_mutex_unlock(&pool->lock);
}

int work_pool_on_thread(void) { return on_work_thread; }
