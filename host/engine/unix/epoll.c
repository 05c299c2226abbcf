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
 * Ops issued from another thread travel through the worker's mailbox (a
 * locked list and an eventfd); ops issued on the worker go straight to the
 * ready queue, which is drained until empty (bounded) after each wait.
 */
#include "engine/backend.h"

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

typedef struct op_queue {
  io_op_t *head;
  io_op_t *tail;
} op_queue_t;

struct io_worker {
  io_core_t *core;
  int index;
  int epoll_fd;
  int wake_fd;
  pthread_t thread;
  op_queue_t ready;
  /* Mailbox: ops handed over by other threads. */
  pthread_mutex_t mailbox_lock;
  op_queue_t mailbox;
  int mailbox_signalled;
  timer_heap_t timers; /* this worker's own: no lock */
  int stopping;
  uint8_t *recv_buffer;
};

struct io_core {
  int thread_count;
  io_worker_t *workers;
  atomic_uint next_worker;
  atomic_uint_fast64_t completions;
};

static _Thread_local io_worker_t *current_worker;

static void queue_push(op_queue_t *q, io_op_t *op) {
  op->next = NULL;
  if (q->tail)
    q->tail->next = op;
  else
    q->head = op;
  q->tail = op;
}

static io_op_t *queue_pop(op_queue_t *q) {
  io_op_t *op = q->head;
  if (op) {
    q->head = op->next;
    if (!q->head)
      q->tail = NULL;
    op->next = NULL;
  }
  return op;
}

static void make_ready(io_worker_t *w, io_op_t *op, int status) {
  op->status = status;
  queue_push(&w->ready, op);
}

/* ---- timers ---- */

static void arm_timer(io_worker_t *w, io_timer_t *t) {
  /* If it cannot be armed, say so through its completion, as for any op. */
  if (timer_heap_insert(&w->timers, t) != 0)
    make_ready(w, &t->op, -ENOMEM);
}

static void expire_timers(io_worker_t *w) {
  uint64_t now = clock_now_ms();
  io_timer_t *t;
  while ((t = timer_heap_first(&w->timers)) != NULL && t->due_ms <= now) {
    timer_heap_remove(&w->timers, t);
    make_ready(w, &t->op, 0);
  }
}

/* ---- issuing ops on the owning worker ---- */

/* Starts an op on its handle's worker (the current thread). */
static void start_op(io_worker_t *w, io_op_t *op) {
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
  case IO_OP_RECV:
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
    const address_t *to = op->u.connect.to;
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

static void wake_worker(io_worker_t *w) {
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(w->wake_fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
}

static void hand_over(io_worker_t *w, io_op_t *op) {
  int signal;
  pthread_mutex_lock(&w->mailbox_lock);
  queue_push(&w->mailbox, op);
  signal = !w->mailbox_signalled;
  w->mailbox_signalled = 1;
  pthread_mutex_unlock(&w->mailbox_lock);
  if (signal)
    wake_worker(w);
}

void io_submit(io_op_t *op) {
  io_worker_t *w = op->handle->worker;
  if (current_worker == w)
    start_op(w, op);
  else
    hand_over(w, op);
}

void io_post(io_handle_t *h, io_op_t *op, int status) {
  op->type = IO_OP_POST;
  op->handle = h;
  op->status = status;
  io_submit(op);
}

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
  io_worker_t *w = t->op.handle->worker;
  if (t->heap_index == UINT32_MAX)
    return;
  timer_heap_remove(&w->timers, t);
  make_ready(w, &t->op, IO_ECANCELED);
}

/* ---- performing ops when they are delivered ---- */

/* Returns 1 if the op has a result to deliver, 0 if it went back to wait. */
static int perform(io_worker_t *w, io_op_t *op) {
  io_handle_t *h = op->handle;
  if (op->status != 0 || op->type == IO_OP_POST || op->type == IO_OP_TIMER)
    return 1;
  if (h->closed) {
    op->status = IO_ECANCELED;
    return 1;
  }
  switch (op->type) {
  case IO_OP_RECV: {
    ssize_t n;
    do {
      n = recv(h->socket, w->recv_buffer, RECV_BUFFER_BYTES, 0);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      /* A short read drained the socket, unless the peer's FIN came in the
       * same edge as the data: then no further edge will report it. */
      if (n < RECV_BUFFER_BYTES && !h->hangup)
        h->readable = 0;
      op->u.recv.data = w->recv_buffer;
      op->status = (int)n; /* bytes, folded into status until delivery */
      return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      h->readable = 0;
      op->next = h->pending_read;
      h->pending_read = op;
      return 0;
    }
    op->status = -errno;
    return 1;
  }
  case IO_OP_SEND: {
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = op->u.send.bufs;
    msg.msg_iovlen = (size_t)op->u.send.count;
    ssize_t n;
    do {
      n = sendmsg(h->socket, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      size_t total = 0;
      for (int i = 0; i < op->u.send.count; i++)
        total += op->u.send.bufs[i].iov_len;
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
      op->u.accept.socket = fd;
      if (op->u.accept.peer)
        address_from_sockaddr(op->u.accept.peer, (struct sockaddr *)&ss, len);
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

static void deliver(io_worker_t *w, io_op_t *op) {
  if (!perform(w, op))
    return;
  int status = op->status;
  size_t bytes = 0;
  if ((op->type == IO_OP_RECV || op->type == IO_OP_SEND) && status >= 0) {
    bytes = (size_t)status;
    status = 0;
  }
  atomic_fetch_add_explicit(&w->core->completions, 1, memory_order_relaxed);
  op->complete(op, status, bytes);
}

static void on_readiness(io_worker_t *w, io_handle_t *h, uint32_t events) {
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    h->hangup = 1;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    h->readable = 1;
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

static void drain_mailbox(io_worker_t *w) {
  uint64_t value;
  ssize_t n;
  do {
    n = read(w->wake_fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  pthread_mutex_lock(&w->mailbox_lock);
  io_op_t *op = w->mailbox.head;
  w->mailbox.head = w->mailbox.tail = NULL;
  w->mailbox_signalled = 0;
  pthread_mutex_unlock(&w->mailbox_lock);
  while (op) {
    io_op_t *next = op->next;
    start_op(w, op);
    op = next;
  }
}

static int wait_timeout(io_worker_t *w) {
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
  io_worker_t *w = arg;
  struct epoll_event events[EVENTS_PER_WAIT];
  current_worker = w;
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
      io_op_t *op = queue_pop(&w->ready);
      if (!op)
        break;
      deliver(w, op);
    }
  }
  current_worker = NULL;
  return NULL;
}

/* ---- cores and handles ---- */

static void worker_release(io_worker_t *w) {
  if (w->epoll_fd >= 0)
    close(w->epoll_fd);
  if (w->wake_fd >= 0)
    close(w->wake_fd);
  pthread_mutex_destroy(&w->mailbox_lock);
  timer_heap_free(&w->timers);
  free(w->recv_buffer);
}

int io_core_create(int threads, io_core_t **out, char *err, size_t err_len) {
  if (threads < 1)
    threads = 1;
  io_core_t *core = calloc(1, sizeof *core);
  if (!core) {
    snprintf(err, err_len, "out of memory creating a core");
    return -1;
  }
  core->workers = calloc((size_t)threads, sizeof *core->workers);
  if (!core->workers) {
    free(core);
    snprintf(err, err_len, "out of memory creating a core");
    return -1;
  }
  int started = 0;
  for (int i = 0; i < threads; i++) {
    io_worker_t *w = &core->workers[i];
    w->core = core;
    w->index = i;
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
  core->thread_count = started;
  if (started < threads) {
    io_core_destroy(core);
    return -1;
  }
  *out = core;
  return 0;
}

void io_core_destroy(io_core_t *core) {
  if (!core)
    return;
  io_op_t *stops = calloc((size_t)core->thread_count + 1, sizeof *stops);
  io_handle_t *handles = calloc((size_t)core->thread_count + 1, sizeof *handles);
  for (int i = 0; i < core->thread_count; i++) {
    handles[i].worker = &core->workers[i];
    handles[i].socket = IO_INVALID_SOCKET;
    stops[i].type = IO_OP_STOP;
    stops[i].handle = &handles[i];
    hand_over(&core->workers[i], &stops[i]);
  }
  for (int i = 0; i < core->thread_count; i++) {
    pthread_join(core->workers[i].thread, NULL);
    worker_release(&core->workers[i]);
  }
  free(stops);
  free(handles);
  free(core->workers);
  free(core);
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
  io_worker_t *w = &core->workers[index % (unsigned)core->thread_count];
  h->socket = socket;
  h->worker = w;
  h->pending_read = h->pending_write = NULL;
  h->readable = h->writable = 0;
  h->hangup = 0;
  h->closed = 0;
  if (socket == IO_INVALID_SOCKET)
    return 0;
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = h;
  if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, socket, &ev) != 0)
    return -errno;
  return 0;
}

int io_handle_worker_index(const io_handle_t *h) { return h->worker->index; }

int io_handle_on_worker(const io_handle_t *h) {
  return current_worker == h->worker;
}

void io_handle_close(io_handle_t *h) {
  io_worker_t *w = h->worker;
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
}

int io_send_now(io_handle_t *h, const io_buf_t *bufs, int count) {
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

void io_handle_shutdown_write(io_handle_t *h) {
  if (!h->closed && h->socket != IO_INVALID_SOCKET)
    shutdown(h->socket, SHUT_WR);
}

void io_handle_reset_on_close(io_handle_t *h) {
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return;
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(h->socket, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
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
