/*
 * backend.h on Linux: each call goes to its core's backend (dispatch.h),
 * and what is the same for both backends is here once.
 */
#include "engine/unix/dispatch.h"

#include "engine/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

_Thread_local io_worker_t *io__current_worker;

int io_core_create(int threads, io_backend_t backend,
                   const io_handle_events_t *events, io_core_t **out,
                   char *err, size_t err_len) {
  const io_backend_ops_t *ops;
  switch (backend) {
  case IO_BACKEND_DEFAULT:
  case IO_BACKEND_EPOLL:
    ops = &io__epoll_ops;
    break;
  case IO_BACKEND_IO_URING:
    ops = &io__uring_ops;
    break;
  default:
    snprintf(err, err_len, "this platform has no such backend");
    return -1;
  }
  return ops->core_create(threads < 1 ? 1 : threads, events, out, err,
                          err_len);
}

void io_core_destroy(io_core_t *core) {
  if (core)
    core->ops->core_destroy(core);
}

io_backend_t io_core_backend(const io_core_t *core) {
  return core->ops->backend;
}

int io_core_thread_count(const io_core_t *core) { return core->thread_count; }

uint64_t io_core_completions(const io_core_t *core) {
  return atomic_load_explicit(&((io_core_t *)core)->completions,
                              memory_order_relaxed);
}

int io_handle_open(io_core_t *core, io_handle_t *h, io_socket_t socket,
                   int hint) {
  unsigned index = hint >= 0 ? (unsigned)hint
                             : atomic_fetch_add_explicit(&core->next_worker, 1,
                                                         memory_order_relaxed);
  h->socket = socket;
  h->worker = core->workers[index % (unsigned)core->thread_count];
  h->pending_read = h->pending_write = NULL;
  h->readable = h->writable = 0;
  h->hangup = 0;
  h->closed = 0;
  h->recv_armed = h->recv_queued = 0;
  h->backend_bits = 0;
  h->wake_link = h->recv_link = 0;
  memset(&h->uring, 0, sizeof h->uring);
  if (socket == IO_INVALID_SOCKET)
    return 0;
  return core->ops->handle_open(h);
}

int io_handle_worker_index(const io_handle_t *h) { return h->worker->index; }

int io_handle_on_worker(const io_handle_t *h) {
  return io__current_worker == h->worker;
}

void io_handle_close(io_handle_t *h) { h->worker->ops->handle_close(h); }

int io_send_now(io_handle_t *h, const io_buf_t *bufs, int count) {
  return h->worker->ops->send_now(h, bufs, count);
}

void io_handle_shutdown_write(io_handle_t *h) {
  h->worker->ops->shutdown_write(h);
}

void io_handle_reset_on_close(io_handle_t *h) {
  h->worker->ops->reset_on_close(h);
}

void io_submit(io_op_t *op) { op->handle->worker->ops->submit(op); }

void io_post(io_handle_t *h, io_op_t *op, int status) {
  op->type = IO_OP_POST;
  op->handle = h;
  op->status = status;
  io_submit(op);
}

void io_recv_start(io_handle_t *h) { h->worker->ops->recv_start(h); }

void io_wake(io_handle_t *h) { h->worker->ops->wake(h); }

void io_timer_init(io_timer_t *t, io_handle_t *h, io_complete_fn complete) {
  memset(t, 0, sizeof *t);
  t->op.type = IO_OP_TIMER;
  t->op.handle = h;
  t->op.complete = complete;
  t->heap_index = UINT32_MAX;
}

void io_timer_start(io_timer_t *t, uint64_t delay_ms) {
  t->op.type = IO_OP_TIMER;
  t->due_ms = clock_now_ms() + delay_ms;
  io_submit(&t->op);
}

void io_timer_cancel(io_timer_t *t) {
  if (t->heap_index != UINT32_MAX)
    t->op.handle->worker->ops->timer_cancel(t);
}

io_socket_t io_socket_tcp(int family) {
  return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

void io_socket_close(io_socket_t s) {
  if (s >= 0)
    close(s);
}

int io_socket_listen(io_socket_t s, const address_t *addr, int backlog) {
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (address_family(addr) == AF_INET6)
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(s, &addr->u.sa, address_length(addr)) != 0)
    return -errno;
  if (listen(s, backlog) != 0)
    return -errno;
  return 0;
}

void io_socket_set_nodelay(io_socket_t s, int on) {
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

const char *io_strerror(int status) {
  if (status == IO_ECANCELED)
    return "operation cancelled";
  return strerror(status < 0 ? -status : status);
}
