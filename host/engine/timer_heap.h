/*
 * The timers of a backend: a binary min-heap of io_timer_t ordered by due
 * time, each timer knowing its own index so it can be removed in O(log n).
 * Shared by both backends; the caller provides the locking (none with
 * epoll, where a worker owns its heap; a lock with IOCP, where the heap is
 * the core's).
 */
#ifndef IOCPHOST_TIMER_HEAP_H
#define IOCPHOST_TIMER_HEAP_H

#include <stdint.h>

#include "engine/backend.h"

typedef struct timer_heap {
  io_timer_t **items;
  uint32_t count;
  uint32_t capacity;
} timer_heap_t;

/* Returns 0, or -1 if memory ran out (the timer is then not armed). */
int timer_heap_insert(timer_heap_t *heap, io_timer_t *t);
/* t must be in the heap; it leaves with heap_index UINT32_MAX. */
void timer_heap_remove(timer_heap_t *heap, io_timer_t *t);
/* The earliest timer, or NULL. */
io_timer_t *timer_heap_first(const timer_heap_t *heap);
void timer_heap_free(timer_heap_t *heap);

#endif /* IOCPHOST_TIMER_HEAP_H */
