/*
 * Linux backend: a proactor on epoll.
 *
 * One epoll instance per worker thread, and every handle is bound to one
 * worker for its whole life. Why not one epoll shared by all threads:
 *  - A session's completions then all run on one thread, which is exactly the
 *    serial order SPEC section 3 promises, with no per-callback lock.
 *  - Sockets are registered once, edge-triggered, for input and output; a
 *    shared epoll would need EPOLLONESHOT and one epoll_ctl re-arm per event,
 *    a system call per message that a raw epoll server does not make.
 *  - The per-worker receive buffer stays hot in that core's cache.
 * The cost: a busy session cannot move to an idle thread. Sessions are
 * spread round-robin when they are opened.
 *
 * An op is performed when it is delivered, not when readiness arrives: the
 * receive buffer is shared by the worker's sessions, so each read happens
 * right before its completion runs. Readiness only moves ops to the ready
 * queue; a read or write that then finds EAGAIN goes back to waiting.
 * A short read clears the readable flag (the socket is drained; edge
 * triggering reports the next arrival), which saves the EAGAIN round trip.
 *
 * Ops and wake-ups issued from another thread travel through the worker's
 * mailbox (a locked queue and an eventfd); those issued on the worker go
 * straight to the ready queue, which is drained until empty (bounded)
 * after each wait. A session's receive is a bit of its handle: readiness
 * queues the handle itself (h->recv_link), and the read happens when it is
 * delivered, like any op's.
 */
#include "engine/unix/dispatch.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/log.h"
#include "engine/timer_heap.h"

#define RECV_BUFFER_BYTES (64 * 1024)
#define EVENTS_PER_WAIT 256
/* Ops delivered per round before epoll is asked again: keeps one chatty
 * session from starving the sockets that became ready meanwhile. */
#define DELIVERIES_PER_ROUND 4096

typedef struct epoll_worker {
  io_worker_t base; /* first: the dispatch head */
  int epoll_fd;
  int wake_fd;
  pthread_t thread;
  io_fifo_t ready;
  /* Mailbox: ops and wake-ups handed over by other threads. */
  pthread_mutex_t mailbox_lock;
  io_fifo_t mailbox;
  int mailbox_signalled;
  timer_heap_t timers; /* this worker's own: no lock */
  int stopping;
  uint8_t *recv_buffer;
} epoll_worker_t;

typedef struct epoll_core {
  io_core_t base; /* first: the dispatch head */
  epoll_worker_t *workers;
} epoll_core_t;

static epoll_worker_t *worker_of(const io_handle_t *h) {
  return (epoll_worker_t *)h->worker;
}

static void make_ready(epoll_worker_t *w, io_op_t *op, int status) {
  op->status = status;
  io_fifo_push(&w->ready, op, IO_ENTRY_OP);
}

/* The handle's receive has something to deliver (bytes, or the close's
 * cancellation): queue the handle, once. */
static void recv_ready(epoll_worker_t *w, io_handle_t *h) {
  if (h->recv_armed && !h->recv_queued) {
    h->recv_queued = 1;
    io_fifo_push(&w->ready, h, IO_ENTRY_RECV);
  }
}

/* ---- timers ---- */

static void arm_timer(epoll_worker_t *w, io_timer_t *t) {
  /* If it cannot be armed, say so through its completion, as for any op. */
  if (timer_heap_insert(&w->timers, t) != 0)
    make_ready(w, &t->op, -ENOMEM);
}

static void expire_timers(epoll_worker_t *w) {
  uint64_t now = clock_now_ms();
  io_timer_t *t;
  while ((t = timer_heap_first(&w->timers)) != NULL && t->due_ms <= now) {
    timer_heap_remove(&w->timers, t);
    make_ready(w, &t->op, 0);
  }
}

/* ---- issuing ops on the owning worker ---- */

/* Starts an op on its handle's worker (the current thread). */
static void start_op(epoll_worker_t *w, io_op_t *op) {
  io_handle_t *h = op->handle;
  switch (op->type) {
  case IO_OP_POST:
    make_ready(w, op, op->status);
    return;
  case IO_OP_TIMER: {
    arm_timer(w, container_of(op, io_timer_t, op));
    return;
  }
  case IO_OP_STOP:
    w->stopping = 1;
    return;
  default:
    break;
  }
  if (h->closed) {
    make_ready(w, op, IO_ECANCELED);
    return;
  }
  switch (op->type) {
  case IO_OP_ACCEPT:
    if (h->readable) {
      make_ready(w, op, 0);
    } else {
      op->next = h->pending_read;
      h->pending_read = op;
    }
    return;
  case IO_OP_SEND:
    if (h->writable) {
      make_ready(w, op, 0);
    } else {
      op->next = NULL;
      h->pending_write = op;
    }
    return;
  case IO_OP_CONNECT: {
    const address_t *to = io_connect_op(op)->to;
    if (connect(h->socket, &to->u.sa, address_length(to)) == 0) {
      make_ready(w, op, 0);
    } else if (errno == EINPROGRESS) {
      h->writable = 0;
      op->next = NULL;
      h->pending_write = op;
    } else {
      make_ready(w, op, -errno);
    }
    return;
  }
  default:
    make_ready(w, op, -EINVAL);
    return;
  }
}

static void wake_worker(epoll_worker_t *w) {
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(w->wake_fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
}

static void hand_over(epoll_worker_t *w, void *entry, io_entry_kind_t kind) {
  int signal;
  pthread_mutex_lock(&w->mailbox_lock);
  io_fifo_push(&w->mailbox, entry, kind);
  signal = !w->mailbox_signalled;
  w->mailbox_signalled = 1;
  pthread_mutex_unlock(&w->mailbox_lock);
  if (signal)
    wake_worker(w);
}

static void epoll_submit(io_op_t *op) {
  epoll_worker_t *w = worker_of(op->handle);
  if (io__current_worker == &w->base)
    start_op(w, op);
  else
    hand_over(w, op, IO_ENTRY_OP);
}

static void epoll_recv_start(io_handle_t *h) {
  h->recv_armed = 1;
  if (h->readable || h->closed)
    recv_ready(worker_of(h), h);
}

static void epoll_wake(io_handle_t *h) {
  epoll_worker_t *w = worker_of(h);
  if (io__current_worker == &w->base)
    io_fifo_push(&w->ready, h, IO_ENTRY_WAKE);
  else
    hand_over(w, h, IO_ENTRY_WAKE);
}

static void epoll_timer_cancel(io_timer_t *t) {
  epoll_worker_t *w = worker_of(t->op.handle);
  timer_heap_remove(&w->timers, t);
  make_ready(w, &t->op, IO_ECANCELED);
}

/* ---- performing ops when they are delivered ---- */

/* Returns 1 if the op has a result to deliver, 0 if it went back to wait. */
static int perform(epoll_worker_t *w, io_op_t *op) {
  io_handle_t *h = op->handle;
  if (op->status != 0 || op->type == IO_OP_POST || op->type == IO_OP_TIMER)
    return 1;
  if (h->closed) {
    op->status = IO_ECANCELED;
    return 1;
  }
  switch (op->type) {
  case IO_OP_SEND: {
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = io_send_op(op)->bufs;
    msg.msg_iovlen = (size_t)io_send_op(op)->count;
    ssize_t n;
    do {
      n = sendmsg(h->socket, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      size_t total = 0;
      for (int i = 0; i < io_send_op(op)->count; i++)
        total += io_send_op(op)->bufs[i].iov_len;
      if ((size_t)n < total)
        h->writable = 0;
      op->status = (int)n;
      return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      h->writable = 0;
      op->next = NULL;
      h->pending_write = op;
      return 0;
    }
    op->status = -errno;
    return 1;
  }
  case IO_OP_ACCEPT: {
    /* Several accepts wait on one listener; once one found it drained,
     * the others wait for the next edge instead of each failing again. */
    if (!h->readable) {
      op->next = h->pending_read;
      h->pending_read = op;
      return 0;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd;
    do {
      fd = accept4(h->socket, (struct sockaddr *)&ss, &len,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd >= 0) {
      io_accept_op(op)->socket = fd;
      if (io_accept_op(op)->peer)
        address_from_sockaddr(io_accept_op(op)->peer, (struct sockaddr *)&ss, len);
      return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      h->readable = 0;
      op->next = h->pending_read;
      h->pending_read = op;
      return 0;
    }
    /* EMFILE and friends keep the listener readable; the owner backs off. */
    op->status = -errno;
    return 1;
  }
  case IO_OP_CONNECT: {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(h->socket, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      err = errno;
    op->status = err ? -err : 0;
    return 1;
  }
  default:
    return 1;
  }
}

static void deliver(epoll_worker_t *w, io_op_t *op) {
  if (!perform(w, op))
    return;
  int status = op->status;
  size_t bytes = 0;
  if (op->type == IO_OP_SEND && status >= 0) {
    bytes = (size_t)status;
    status = 0;
  }
  atomic_fetch_add_explicit(&w->base.core->completions, 1,
                            memory_order_relaxed);
  op->complete(op, status, bytes);
}

/* A queued receive: read now, right before the owner sees the bytes (the
 * buffer is the worker's). EAGAIN sends it back to wait for readiness. */
static void deliver_recv(epoll_worker_t *w, io_handle_t *h) {
  h->recv_queued = 0;
  if (!h->recv_armed)
    return;
  int status = 0;
  ssize_t n = 0;
  if (h->closed) {
    status = IO_ECANCELED;
  } else {
    do {
      n = recv(h->socket, w->recv_buffer, RECV_BUFFER_BYTES, 0);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      /* A short read drained the socket, unless the peer's FIN came in the
       * same edge as the data: then no further edge will report it. */
      if (n < RECV_BUFFER_BYTES && !h->hangup)
        h->readable = 0;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      h->readable = 0;
      return; /* still armed: the next edge queues it again */
    } else {
      status = -errno;
      n = 0;
    }
  }
  io__deliver_received(&w->base, h, status, w->recv_buffer, (size_t)n);
}

static void deliver_entry(epoll_worker_t *w, void *entry,
                          io_entry_kind_t kind) {
  switch (kind) {
  case IO_ENTRY_RECV:
    deliver_recv(w, entry);
    return;
  case IO_ENTRY_WAKE:
    io__deliver_woken(&w->base, entry);
    return;
  default:
    deliver(w, entry);
    return;
  }
}

static void on_readiness(epoll_worker_t *w, io_handle_t *h, uint32_t events) {
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    h->hangup = 1;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    h->readable = 1;
    recv_ready(w, h);
    io_op_t *op = h->pending_read;
    h->pending_read = NULL;
    while (op) {
      io_op_t *next = op->next;
      make_ready(w, op, 0);
      op = next;
    }
  }
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
    h->writable = 1;
    io_op_t *op = h->pending_write;
    h->pending_write = NULL;
    if (op)
      make_ready(w, op, 0);
  }
}

static void drain_mailbox(epoll_worker_t *w) {
  uint64_t value;
  ssize_t n;
  do {
    n = read(w->wake_fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  pthread_mutex_lock(&w->mailbox_lock);
  io_fifo_t arrived = w->mailbox;
  w->mailbox.head = w->mailbox.tail = 0;
  w->mailbox_signalled = 0;
  pthread_mutex_unlock(&w->mailbox_lock);
  /* Wake-ups go to the ready queue as they are; ops start (a post is
   * made ready there too), each in the order it arrived. */
  io_entry_kind_t kind;
  void *entry;
  while ((entry = io_fifo_pop(&arrived, &kind)) != NULL) {
    if (kind == IO_ENTRY_OP)
      start_op(w, entry);
    else
      io_fifo_push(&w->ready, entry, kind);
  }
}

static int wait_timeout(epoll_worker_t *w) {
  if (w->ready.head)
    return 0;
  io_timer_t *first = timer_heap_first(&w->timers);
  if (!first)
    return -1;
  uint64_t now = clock_now_ms();
  uint64_t due = first->due_ms;
  if (due <= now)
    return 0;
  uint64_t wait = due - now;
  return wait > 60000 ? 60000 : (int)wait;
}

static void *worker_main(void *arg) {
  epoll_worker_t *w = arg;
  struct epoll_event events[EVENTS_PER_WAIT];
  io__current_worker = &w->base;
  while (!w->stopping) {
    int n = epoll_wait(w->epoll_fd, events, EVENTS_PER_WAIT, wait_timeout(w));
    if (n < 0 && errno != EINTR) {
      log_write(LOG_ERROR, "core", "epoll_wait failed: %s", strerror(errno));
      break;
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL)
        drain_mailbox(w);
      else
        on_readiness(w, events[i].data.ptr, events[i].events);
    }
    expire_timers(w);
    for (int budget = DELIVERIES_PER_ROUND; budget > 0; budget--) {
      io_entry_kind_t kind;
      void *entry = io_fifo_pop(&w->ready, &kind);
      if (!entry)
        break;
      deliver_entry(w, entry, kind);
    }
  }
  io__current_worker = NULL;
  return NULL;
}

/* ---- cores and handles ---- */

static void worker_release(epoll_worker_t *w) {
  if (w->epoll_fd >= 0)
    close(w->epoll_fd);
  if (w->wake_fd >= 0)
    close(w->wake_fd);
  pthread_mutex_destroy(&w->mailbox_lock);
  timer_heap_free(&w->timers);
  free(w->recv_buffer);
}

static void epoll_core_destroy(io_core_t *base);

static int epoll_core_create(int threads, const io_handle_events_t *events,
                             io_core_t **out, char *err, size_t err_len) {
  epoll_core_t *core = calloc(1, sizeof *core);
  if (core) {
    core->workers = calloc((size_t)threads, sizeof *core->workers);
    core->base.workers = calloc((size_t)threads, sizeof *core->base.workers);
  }
  if (!core || !core->workers || !core->base.workers) {
    if (core) {
      free(core->workers);
      free(core->base.workers);
    }
    free(core);
    snprintf(err, err_len, "out of memory creating a core");
    return -1;
  }
  core->base.ops = &io__epoll_ops;
  core->base.events = events;
  int started = 0;
  for (int i = 0; i < threads; i++) {
    epoll_worker_t *w = &core->workers[i];
    w->base.ops = &io__epoll_ops;
    w->base.core = &core->base;
    w->base.index = i;
    core->base.workers[i] = &w->base;
    w->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&w->mailbox_lock, NULL);
    w->recv_buffer = malloc(RECV_BUFFER_BYTES);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (w->epoll_fd < 0 || w->wake_fd < 0 || !w->recv_buffer ||
        epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, w->wake_fd, &ev) != 0) {
      snprintf(err, err_len, "cannot create worker %d: %s", i,
               strerror(errno ? errno : ENOMEM));
      worker_release(w);
      break;
    }
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      snprintf(err, err_len, "cannot start worker thread %d", i);
      worker_release(w);
      break;
    }
    started++;
  }
  core->base.thread_count = started;
  if (started < threads) {
    epoll_core_destroy(&core->base);
    return -1;
  }
  *out = &core->base;
  return 0;
}

static void epoll_core_destroy(io_core_t *base) {
  epoll_core_t *core = (epoll_core_t *)base;
  int count = base->thread_count;
  io_op_t *stops = calloc((size_t)count + 1, sizeof *stops);
  io_handle_t *handles = calloc((size_t)count + 1, sizeof *handles);
  for (int i = 0; i < count; i++) {
    handles[i].worker = &core->workers[i].base;
    handles[i].socket = IO_INVALID_SOCKET;
    stops[i].type = IO_OP_STOP;
    stops[i].handle = &handles[i];
    hand_over(&core->workers[i], &stops[i], IO_ENTRY_OP);
  }
  for (int i = 0; i < count; i++) {
    pthread_join(core->workers[i].thread, NULL);
    worker_release(&core->workers[i]);
  }
  free(stops);
  free(handles);
  free(core->workers);
  free(base->workers);
  free(core);
}

static int epoll_handle_open(io_handle_t *h) {
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = h;
  if (epoll_ctl(worker_of(h)->epoll_fd, EPOLL_CTL_ADD, h->socket, &ev) != 0)
    return -errno;
  return 0;
}

static void epoll_handle_close(io_handle_t *h) {
  epoll_worker_t *w = worker_of(h);
  if (h->closed)
    return;
  h->closed = 1;
  if (h->socket != IO_INVALID_SOCKET) {
    epoll_ctl(w->epoll_fd, EPOLL_CTL_DEL, h->socket, NULL);
    close(h->socket);
    h->socket = IO_INVALID_SOCKET;
  }
  io_op_t *op = h->pending_read;
  h->pending_read = NULL;
  while (op) {
    io_op_t *next = op->next;
    make_ready(w, op, IO_ECANCELED);
    op = next;
  }
  if (h->pending_write) {
    make_ready(w, h->pending_write, IO_ECANCELED);
    h->pending_write = NULL;
  }
  recv_ready(w, h); /* an armed receive is cancelled when delivered */
}

static int epoll_send_now(io_handle_t *h, const io_buf_t *bufs, int count) {
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return IO_ECANCELED;
  if (!h->writable || h->pending_write)
    return -EAGAIN;
  size_t total = 0;
  for (int i = 0; i < count; i++)
    total += bufs[i].iov_len;
  ssize_t n;
  do {
    if (count == 1) {
      n = send(h->socket, bufs[0].iov_base, bufs[0].iov_len, MSG_NOSIGNAL);
    } else {
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = (struct iovec *)bufs;
      msg.msg_iovlen = (size_t)count;
      n = sendmsg(h->socket, &msg, MSG_NOSIGNAL);
    }
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      h->writable = 0;
      return -EAGAIN;
    }
    return -errno;
  }
  if ((size_t)n < total)
    h->writable = 0; /* full: EPOLLOUT brings the next edge */
  return (int)n;
}

static void epoll_shutdown_write(io_handle_t *h) {
  if (!h->closed && h->socket != IO_INVALID_SOCKET)
    shutdown(h->socket, SHUT_WR);
}

static void epoll_reset_on_close(io_handle_t *h) {
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return;
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(h->socket, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
}

const io_backend_ops_t io__epoll_ops = {
    .backend = IO_BACKEND_EPOLL,
    .name = "epoll",
    .core_create = epoll_core_create,
    .core_destroy = epoll_core_destroy,
    .handle_open = epoll_handle_open,
    .handle_close = epoll_handle_close,
    .send_now = epoll_send_now,
    .shutdown_write = epoll_shutdown_write,
    .reset_on_close = epoll_reset_on_close,
    .submit = epoll_submit,
    .timer_cancel = epoll_timer_cancel,
    .recv_start = epoll_recv_start,
    .wake = epoll_wake,
};
