/* What the session lock (engine/lock.h) costs against a pthread_mutex_t:
 * THREADS threads (default 2) each take and release one shared lock
 * ITERATIONS times around a few instructions of work, as a sender on
 * another thread and the session's worker do; and one thread alone (no
 * contention, the common case). Prints ns per lock+unlock pair for each.
 * Usage: lock_contention [threads] [iterations] */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/lock.h"

static engine_lock_t small;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static long iterations = 2000000;
static volatile unsigned long counter;
static int use_small;

static void *run(void *arg) {
  (void)arg;
  for (long i = 0; i < iterations; i++) {
    if (use_small)
      engine_lock(&small);
    else
      pthread_mutex_lock(&mutex);
    counter++; /* a few fields, as enqueue or on_kick touch */
    counter++;
    if (use_small)
      engine_unlock(&small);
    else
      pthread_mutex_unlock(&mutex);
  }
  return NULL;
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double measure(int threads) {
  pthread_t t[64];
  counter = 0;
  double t0 = now_ns();
  for (int i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, run, NULL);
  for (int i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  double total = now_ns() - t0;
  if (counter != 2UL * (unsigned long)threads * (unsigned long)iterations) {
    fprintf(stderr, "lost updates: the lock does not exclude\n");
    exit(1);
  }
  return total / ((double)threads * (double)iterations);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (argc > 2)
    iterations = atol(argv[2]);
  if (threads < 1 || threads > 64 || iterations < 1)
    return 2;
  engine_lock_init(&small);
  for (int round = 0; round < 3; round++) {
    for (use_small = 0; use_small < 2; use_small++) {
      double alone = measure(1);
      double contended = measure(threads);
      printf("%-16s alone %6.1f ns/pair, %d threads %6.1f ns/pair\n",
             use_small ? "engine_lock_t" : "pthread_mutex_t", alone, threads,
             contended);
    }
  }
  return 0;
}
