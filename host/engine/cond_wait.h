/*
 * Waiting on a condition variable until a monotonic deadline.
 *
 * pthread_cond_timedwait takes a wall-clock deadline (winpthreads offers no
 * other clock), so a wall-clock step would stretch or cut a wait measured
 * with it. cond_wait_until_ms waits in slices of at most 100 ms against the
 * monotonic clock_now_ms: a step moves one slice, never the whole wait.
 */
#ifndef IOCPHOST_COND_WAIT_H
#define IOCPHOST_COND_WAIT_H

#include <pthread.h>
#include <stdint.h>

/* With mutex held: waits until cond is signalled, a slice ends, or
 * deadline_ms (clock_now_ms) has passed. Returns 1 once the deadline has
 * passed (without waiting), 0 otherwise: callers loop on their own
 * condition until it holds or this returns 1. */
int cond_wait_until_ms(pthread_cond_t *cond, pthread_mutex_t *mutex,
                       uint64_t deadline_ms);

#endif
