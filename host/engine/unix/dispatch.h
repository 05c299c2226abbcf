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

#include "engine/backend.h"

typedef struct io_backend_ops {
  io_backend_t backend;
  const char *name;
  /* Returns 0, -1 or IO_CORE_UNSUPPORTED, with the reason in err. */
  int (*core_create)(int threads, io_core_t **out, char *err, size_t err_len);
  void (*core_destroy)(io_core_t *core);
  /* The handle's fields are set (worker, socket, flags) by dispatch.c. */
  int (*handle_open)(io_handle_t *h);
  void (*handle_close)(io_handle_t *h);
  int (*send_now)(io_handle_t *h, const io_buf_t *bufs, int count);
  void (*shutdown_write)(io_handle_t *h);
  void (*reset_on_close)(io_handle_t *h);
  void (*submit)(io_op_t *op);
  void (*timer_cancel)(io_timer_t *t);
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
  int thread_count;
  io_worker_t **workers;
  atomic_uint next_worker;
  atomic_uint_fast64_t completions;
};

/* The worker running on this thread, set by each backend's thread. */
extern _Thread_local io_worker_t *io__current_worker;

extern const io_backend_ops_t io__epoll_ops;
extern const io_backend_ops_t io__uring_ops;

#endif /* IOCPHOST_UNIX_DISPATCH_H */
