/*
 * Linux has two backends in one binary, epoll and io_uring, chosen per core
 * (nginx's event modules: a struct of function pointers picked at start-up).
 * Every core and every worker begins with the same head, so the functions
 * of backend.h find the table from a handle in two loads, and what does not
 * depend on the backend (timers' bookkeeping, posts, socket options, the
 * "am I on the worker" test) is written once, in dispatch.c.
 */
#ifndef IOCPHOST_UNIX_DISPATCH_H
#define IOCPHOST_UNIX_DISPATCH_H

#include <stdatomic.h>

#include <stdint.h>

#include "engine/backend.h"

typedef struct io_backend_ops {
  io_backend_t backend;
  const char *name;
  /* Returns 0, -1 or IO_CORE_UNSUPPORTED, with the reason in err. */
  int (*core_create)(int threads, const io_handle_events_t *events,
                     io_core_t **out, char *err, size_t err_len);
  void (*core_destroy)(io_core_t *core);
  /* The handle's fields are set (worker, socket, flags) by dispatch.c. */
  int (*handle_open)(io_handle_t *h);
  void (*handle_close)(io_handle_t *h);
  int (*send_now)(io_handle_t *h, const io_buf_t *bufs, int count);
  void (*shutdown_write)(io_handle_t *h);
  void (*reset_on_close)(io_handle_t *h);
  void (*submit)(io_op_t *op);
  void (*timer_cancel)(io_timer_t *t);
  void (*recv_start)(io_handle_t *h);
  void (*wake)(io_handle_t *h);
} io_backend_ops_t;

/* The head of every backend's worker. */
struct io_worker {
  const io_backend_ops_t *ops;
  io_core_t *core;
  int index;
};

/* The head of every backend's core. workers[i] is the head of worker i. */
struct io_core {
  const io_backend_ops_t *ops;
  const io_handle_events_t *events; /* io_recv_start's and io_wake's */
  int thread_count;
  io_worker_t **workers;
  atomic_uint next_worker;
  atomic_uint_fast64_t completions;
};

/* A worker's delivery queue: ops, handles to wake and handles whose
 * receive has a result, in one order, so that a post and a wake issued by
 * one thread are delivered as issued. Each entry is linked through a field
 * of its own (op->link, h->wake_link, h->recv_link), and the low bits of a
 * link say what kind of entry it leads to: ops and handles are at least
 * 8-aligned. Not locked: a mailbox locks around it. */
typedef enum io_entry_kind {
  IO_ENTRY_OP = 0,
  IO_ENTRY_WAKE = 1,
  IO_ENTRY_RECV = 2
} io_entry_kind_t;

#define IO_ENTRY_KIND_MASK ((uintptr_t)3)

typedef struct io_fifo {
  uintptr_t head, tail; /* tagged, 0 when empty */
} io_fifo_t;

static inline uintptr_t *io__entry_link(uintptr_t tagged) {
  void *p = (void *)(tagged & ~IO_ENTRY_KIND_MASK);
  switch ((io_entry_kind_t)(tagged & IO_ENTRY_KIND_MASK)) {
  case IO_ENTRY_WAKE:
    return &((io_handle_t *)p)->wake_link;
  case IO_ENTRY_RECV:
    return &((io_handle_t *)p)->recv_link;
  default:
    return &((io_op_t *)p)->link;
  }
}

static inline void io_fifo_push(io_fifo_t *q, void *entry,
                                io_entry_kind_t kind) {
  uintptr_t tagged = (uintptr_t)entry | (uintptr_t)kind;
  *io__entry_link(tagged) = 0;
  if (q->tail)
    *io__entry_link(q->tail) = tagged;
  else
    q->head = tagged;
  q->tail = tagged;
}

/* Appends every entry of from to q and empties from. */
static inline void io_fifo_splice(io_fifo_t *q, io_fifo_t *from) {
  if (!from->head)
    return;
  if (q->tail)
    *io__entry_link(q->tail) = from->head;
  else
    q->head = from->head;
  q->tail = from->tail;
  from->head = from->tail = 0;
}

/* The first entry, or NULL when empty; its kind in *kind. */
static inline void *io_fifo_pop(io_fifo_t *q, io_entry_kind_t *kind) {
  uintptr_t tagged = q->head;
  if (!tagged)
    return NULL;
  uintptr_t *link = io__entry_link(tagged);
  q->head = *link;
  if (!q->head)
    q->tail = 0;
  *link = 0;
  *kind = (io_entry_kind_t)(tagged & IO_ENTRY_KIND_MASK);
  return (void *)(tagged & ~IO_ENTRY_KIND_MASK);
}

/* Both backends deliver a handle's receive and wake-up the same way: the
 * receive is disarmed before its owner hears of it (who may arm the next
 * one inside the call), and each counts as a completion. */
static inline void io__deliver_received(io_worker_t *w, io_handle_t *h,
                                        int status, const uint8_t *data,
                                        size_t len) {
  h->recv_armed = 0;
  atomic_fetch_add_explicit(&w->core->completions, 1, memory_order_relaxed);
  w->core->events->received(h, status, data, len);
}

static inline void io__deliver_woken(io_worker_t *w, io_handle_t *h) {
  atomic_fetch_add_explicit(&w->core->completions, 1, memory_order_relaxed);
  w->core->events->woken(h);
}

/* The worker running on this thread, set by each backend's thread. */
extern _Thread_local io_worker_t *io__current_worker;

extern const io_backend_ops_t io__epoll_ops;
extern const io_backend_ops_t io__uring_ops;

#endif /* IOCPHOST_UNIX_DISPATCH_H */
