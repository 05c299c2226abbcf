/*
 * Linux backend: a proactor on io_uring (liburing 2.3, kernel 6.0 or later).
 *
 * One ring per worker thread, and every handle is bound to one worker for
 * its whole life, as with epoll (see epoll.c for why). The ring is created
 * by its own thread with SINGLE_ISSUER and DEFER_TASKRUN: only that thread
 * submits, and the kernel's completion work runs when the worker asks for
 * events, not by interrupting it. Each round of the loop is one system
 * call, io_uring_enter, which submits every request queued by the round
 * before and waits for the next completions: the cost is paid per round,
 * not per message.
 *
 * Receiving: one multishot receive per socket, armed at the first receive
 * op and left armed, reads into a provided buffer ring that the worker's
 * sockets share. An idle session holds no buffer; a buffer that arrives
 * while no receive op waits queues on the handle (by buffer id, no
 * allocation) and goes back to the ring once its completion has run. When
 * the ring is empty the kernel ends the multishot (ENOBUFS); the socket
 * then waits in the worker's "starved" list and is armed again as soon as a
 * buffer comes back.
 *
 * Sending: io_send_now copies a small send (up to STAGE_SMALL; a larger
 * one goes out with sendmsg, whose cost is spread over its bytes) into a
 * staged send and returns; the send is submitted with the round's other
 * requests. That is epoll's send(2) without the system call, and like the
 * socket's own buffer the staged bytes reach the peer also when the handle is
 * closed after them (the close waits for them, bounded by ORPHAN_MS), unless
 * the close resets. While one staged send or send op is in the kernel, the next
 * waits (-EAGAIN, or the op is held): two sends on one socket in flight at
 * once could be written out of order. A staged send that fails ends the
 * receive side with its error, so the session ends with a reason.
 *
 * Accepting: listeners stay out of the ring (see "accepting" below).
 *
 * Lifetime: a completion names a slot in its worker's table, never a
 * handle, so a handle may be freed while the kernel still has requests on
 * its socket. io_handle_close cancels them all (by descriptor, or one by one
 * when a staged send must survive), closes the descriptor through the ring,
 * and completes the handle's ops with IO_ECANCELED only after every
 * completion of its requests has arrived: when the owner sees the
 * cancellation, the kernel holds nothing of it. The slot itself is freed
 * when its last completion arrives.
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/log.h"
#include "engine/timer_heap.h"
#include "engine/unix/dispatch.h"

#define SQ_ENTRIES 256
#define CQ_ENTRIES 4096
#define BUFFER_BYTES (16 * 1024)
#define BUFFER_COUNT 64 /* per worker: 1 MiB, all touched in time (FIFO) */
#define BUFFER_GROUP 0
#define STAGE_SMALL 2048 /* staged records this size are kept for reuse */
#define STAGE_CACHE 128  /* ... this many per worker */
#define ORPHAN_MS 5000   /* a closed socket's staged bytes, at most */
#define DELIVERIES_PER_ROUND 4096
#define CQES_PER_BATCH 256
#define STOP_DRAIN_MS 2000
#define NO_SLOT IO_NO_SLOT /* also ends the free list */
#define NO_BUFFER 0xffffu

/* What a completion is for. */
enum {
  KIND_WAKE = 1,
  KIND_RECV,
  KIND_LISTEN,
  KIND_STAGED,
  KIND_SEND_OP,
  KIND_CONNECT,
  KIND_CANCEL,
  KIND_CLOSE
};

typedef struct op_queue {
  io_op_t *head;
  io_op_t *tail;
} op_queue_t;

/* A staged send in the kernel (io_send_now's copy). A send op needs no
 * record of its own: its msghdr is in the op (io_send_op_t). */
typedef struct send_rec {
  io_timer_t orphan; /* after a close: bounds the wait */
  uint32_t slot;
  uint32_t len;
  uint32_t off;
  uint8_t data[]; /* staged bytes */
} send_rec_t;

/* A socket's state in its worker, found from completions by index: one
 * per socket, idle ones included (issue 18 counts it), so 56 bytes. The
 * worker alone touches it, so its flags share a byte. */
typedef struct uslot {
  io_handle_t *key; /* the handle; only compared once closing */
  io_op_t *held;    /* ops waiting for the drain, to complete cancelled */
  send_rec_t *staged;
  io_op_t *kernel_op;   /* the send or connect op in the kernel (its type) */
  uint32_t inflight;    /* requests whose last completion has not come */
  uint32_t next_free;
  int fd;              /* the socket, also once the handle forgot it */
  uint16_t head, tail; /* received buffers waiting, by buffer id */
  /* -errno codes, which fit 16 bits (and 0). */
  int16_t end;         /* with has_end: the receive side's last result */
  int16_t send_error;
  uint8_t closing : 1;
  uint8_t has_end : 1;
  uint8_t recv_armed : 1;
  uint8_t starved : 1;
  uint8_t reset : 1; /* the close resets: nothing staged survives it */
  uint8_t shutdown_pending : 1;
  uint8_t fd_closed : 1;
} uslot_t;

typedef struct uring_worker {
  io_worker_t base; /* first: the dispatch head */
  struct io_uring ring;
  int ring_ready;
  int wake_fd;
  uint64_t wake_value;
  pthread_t thread;
  sem_t started;
  int start_rc; /* 0, -1 or IO_CORE_UNSUPPORTED */
  char start_err[200];
  op_queue_t ready;
  pthread_mutex_t mailbox_lock;
  op_queue_t mailbox;
  int mailbox_signalled;
  timer_heap_t timers;
  int stopping;
  io_handle_t internal; /* no socket: the orphan timers' handle */
  int listen_epoll;     /* the listeners, see "accepting" */
  int listen_polled;
  /* The provided buffers. */
  struct io_uring_buf_ring *buf_ring;
  size_t buf_ring_bytes;
  uint8_t *buffers;
  unsigned buffer_count;
  unsigned buffers_free; /* in the ring now: taken by a CQE, back on recycle */
  uint16_t *buffer_next; /* a handle's queue of received buffers */
  uint32_t *buffer_len;
  /* Slots, in chunks: the table grows by a chunk, not by doubling (an
   * idle socket's slot is counted, issue 18), and a slot never moves. */
  uslot_t **slot_chunks;
  uint32_t chunk_count, chunk_cap;
  uint32_t slot_count, free_slot, live_slots;
  uint32_t *starved;
  uint32_t starved_count, starved_cap;
  /* Small staged records, kept: echo-like traffic then costs no malloc. */
  send_rec_t *stage_cache[STAGE_CACHE];
  unsigned stage_cached;
} uring_worker_t;

typedef struct uring_core {
  io_core_t base; /* first: the dispatch head */
  uring_worker_t *workers;
} uring_core_t;

static atomic_uint buffer_count_override;

void io__uring_buffer_count(unsigned count) {
  atomic_store(&buffer_count_override, count);
}

static uring_worker_t *worker_of(const io_handle_t *h) {
  return (uring_worker_t *)h->worker;
}

/* A completion's user_data: the slot and the kind (the low 4 bits). */
#define KIND_MASK 0xfu
static uint64_t user_data(uint32_t slot, int kind) {
  return ((uint64_t)slot << 4) | (uint64_t)kind;
}

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

static void make_ready(uring_worker_t *w, io_op_t *op, int status) {
  op->status = status;
  queue_push(&w->ready, op);
}

/* The kernel's own ECANCELED (a request it gave up) is not the engine's
 * cancellation: IO_ECANCELED means only "you closed it". */
static int kernel_status(int res) { return res == -ECANCELED ? -EIO : res; }

/* An SQE, submitting what is queued when the ring is full. NULL only if the
 * kernel refuses to take more. */
static struct io_uring_sqe *get_sqe(uring_worker_t *w) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
  if (!sqe && io_uring_submit(&w->ring) >= 0)
    sqe = io_uring_get_sqe(&w->ring);
  return sqe;
}

/* ---- provided buffers ---- */

static uint8_t *buffer_at(uring_worker_t *w, unsigned id) {
  return w->buffers + (size_t)id * BUFFER_BYTES;
}

static void rearm_starved(uring_worker_t *w);

static void buffer_recycle(uring_worker_t *w, unsigned id) {
  io_uring_buf_ring_add(w->buf_ring, buffer_at(w, id), BUFFER_BYTES,
                        (unsigned short)id,
                        io_uring_buf_ring_mask(w->buffer_count), 0);
  io_uring_buf_ring_advance(w->buf_ring, 1);
  w->buffers_free++;
  if (w->starved_count)
    rearm_starved(w);
}

/* The buffer a delivered receive pointed into, or NO_BUFFER. */
static unsigned buffer_of(uring_worker_t *w, const uint8_t *data) {
  if (data < w->buffers ||
      data >= w->buffers + (size_t)w->buffer_count * BUFFER_BYTES)
    return NO_BUFFER;
  return (unsigned)((size_t)(data - w->buffers) / BUFFER_BYTES);
}

/* ---- slots ---- */

#define SLOTS_PER_CHUNK 512

static uslot_t *slot_at(uring_worker_t *w, uint32_t i) {
  return &w->slot_chunks[i / SLOTS_PER_CHUNK][i % SLOTS_PER_CHUNK];
}

static uint32_t slot_alloc(uring_worker_t *w, io_handle_t *h) {
  uint32_t i = w->free_slot;
  if (i != NO_SLOT) {
    w->free_slot = slot_at(w, i)->next_free;
  } else {
    if (w->slot_count == NO_SLOT)
      return NO_SLOT; /* the handle's 24 bits are all used */
    if (w->slot_count == w->chunk_count * SLOTS_PER_CHUNK) {
      if (w->chunk_count == w->chunk_cap) {
        uint32_t cap = w->chunk_cap ? w->chunk_cap * 2 : 8;
        uslot_t **grown =
            realloc(w->slot_chunks, (size_t)cap * sizeof *grown);
        if (!grown)
          return NO_SLOT;
        w->slot_chunks = grown;
        w->chunk_cap = cap;
      }
      uslot_t *chunk = malloc(SLOTS_PER_CHUNK * sizeof *chunk);
      if (!chunk)
        return NO_SLOT;
      w->slot_chunks[w->chunk_count++] = chunk;
    }
    i = w->slot_count++;
  }
  uslot_t *s = slot_at(w, i);
  memset(s, 0, sizeof *s);
  s->key = h;
  s->head = s->tail = NO_BUFFER;
  s->next_free = NO_SLOT;
  w->live_slots++;
  return i;
}

/* The handle's slot, made at its first socket op (on the worker: the
 * table is the worker's alone). */
static uslot_t *slot_of(uring_worker_t *w, io_handle_t *h) {
  if (h->slot == NO_SLOT) {
    uint32_t i = slot_alloc(w, h);
    if (i == NO_SLOT)
      return NULL;
    h->slot = i;
    slot_at(w, i)->fd = h->socket;
  }
  return slot_at(w, h->slot);
}

/* The slot of a closed handle that still drains, or NULL. */
static uslot_t *draining_slot(uring_worker_t *w, const io_handle_t *h) {
  if (h->slot == NO_SLOT || h->slot >= w->slot_count)
    return NULL;
  uslot_t *s = slot_at(w, h->slot);
  return s->key == h && s->closing ? s : NULL;
}

/* Held ops complete once the kernel has nothing of the handle but a
 * staged send, which holds only the backend's own memory. */
static int kernel_done(const uslot_t *s) {
  return s->inflight == (s->staged ? 1u : 0u);
}

static void slot_check(uring_worker_t *w, uint32_t i) {
  uslot_t *s = slot_at(w, i);
  if (!s->closing)
    return;
  if (s->held && kernel_done(s)) {
    io_op_t *op = s->held;
    s->held = NULL;
    while (op) {
      io_op_t *next = op->next;
      make_ready(w, op, IO_ECANCELED);
      op = next;
    }
  }
  if (s->inflight == 0) {
    s->key = NULL;
    s->starved = 0;
    s->next_free = w->free_slot;
    w->free_slot = i;
    w->live_slots--;
  }
}

/* Cancels an op of a closed handle: at once, or when its slot has drained. */
static void cancel_op(uring_worker_t *w, io_op_t *op) {
  uslot_t *s = draining_slot(w, op->handle);
  if (s && !kernel_done(s)) {
    op->next = s->held;
    s->held = op;
    return;
  }
  make_ready(w, op, IO_ECANCELED);
}

/* ---- receiving ---- */

static void arm_recv(uring_worker_t *w, uint32_t i) {
  uslot_t *s = slot_at(w, i);
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe) {
    s->has_end = 1;
    s->end = -EBUSY;
    return;
  }
  io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BUFFER_GROUP;
  io_uring_sqe_set_data64(sqe, user_data(i, KIND_RECV));
  s->recv_armed = 1;
  s->inflight++;
}

/* Hands the next received buffer (or the end) to the waiting receive op,
 * or arms the multishot receive when nothing is waiting. */
static void serve_recv(uring_worker_t *w, uint32_t i) {
  uslot_t *s = slot_at(w, i);
  io_handle_t *h = s->key;
  io_op_t *op = h->pending_read;
  if (!op)
    return;
  if (s->head != NO_BUFFER) {
    unsigned id = s->head;
    s->head = w->buffer_next[id];
    if (s->head == NO_BUFFER)
      s->tail = NO_BUFFER;
    h->pending_read = NULL;
    io_recv_op(op)->data = buffer_at(w, id);
    make_ready(w, op, (int)w->buffer_len[id]); /* bytes, until delivery */
    return;
  }
  if (s->has_end) {
    h->pending_read = NULL;
    make_ready(w, op, s->end);
    return;
  }
  if (!s->recv_armed && !s->starved)
    arm_recv(w, i);
}

static void starve(uring_worker_t *w, uint32_t i) {
  /* The kernel found the ring empty, but buffers may have come back since
   * (recycled before this CQE was read): then no recycle is left to wake
   * this socket, so it reads again now rather than wait forever. */
  if (w->buffers_free > 0) {
    arm_recv(w, i);
    return;
  }
  if (w->starved_count == w->starved_cap) {
    uint32_t cap = w->starved_cap ? w->starved_cap * 2 : 64;
    uint32_t *grown = realloc(w->starved, (size_t)cap * sizeof *grown);
    if (!grown) {
      /* Nowhere to wait: end the receive side rather than hang. */
      slot_at(w, i)->has_end = 1;
      slot_at(w, i)->end = -ENOBUFS;
      return;
    }
    w->starved = grown;
    w->starved_cap = cap;
  }
  slot_at(w, i)->starved = 1;
  w->starved[w->starved_count++] = i;
}

/* A buffer came back: the longest-starved socket may read again. */
static void rearm_starved(uring_worker_t *w) {
  while (w->starved_count) {
    uint32_t i = w->starved[0];
    memmove(w->starved, w->starved + 1,
            (size_t)--w->starved_count * sizeof *w->starved);
    uslot_t *s = slot_at(w, i);
    if (!s->starved || s->closing || !s->key)
      continue;
    s->starved = 0;
    if (!s->recv_armed && !s->has_end)
      arm_recv(w, i);
    return;
  }
}

static void on_recv_cqe(uring_worker_t *w, uint32_t i, int res,
                        unsigned flags) {
  uslot_t *s = slot_at(w, i);
  unsigned id = flags & IORING_CQE_F_BUFFER ? flags >> IORING_CQE_BUFFER_SHIFT
                                            : NO_BUFFER;
  if (id != NO_BUFFER)
    w->buffers_free--;
  if (!(flags & IORING_CQE_F_MORE))
    s->recv_armed = 0;
  if (s->closing || (s->has_end && res > 0)) {
    if (id != NO_BUFFER)
      buffer_recycle(w, id);
    return;
  }
  if (res > 0 && id != NO_BUFFER) {
    w->buffer_len[id] = (uint32_t)res;
    w->buffer_next[id] = NO_BUFFER;
    if (s->tail != NO_BUFFER)
      w->buffer_next[s->tail] = (uint16_t)id;
    else
      s->head = (uint16_t)id;
    s->tail = (uint16_t)id;
  } else if (res == -ENOBUFS) {
    starve(w, i);
  } else if (res == -ECANCELED && !s->recv_armed) {
    /* Not ours (we cancel only when closing): read on. */
  } else if (res <= 0) {
    s->has_end = 1;
    s->end = res;
  }
  serve_recv(w, i);
}

/* ---- accepting ---- */

/* Listeners are not given to the ring: a request on a socket holds the
 * socket until the ring lets it go, and a killed process's ring is torn
 * down after the process is gone, so its listening port would stay taken
 * for a moment and a restarted host would fail with "address in use".
 * Nor would a multishot accept do: it keeps the descriptor limit it was
 * armed with, so it never sees the limit drop nor backs off. Instead each
 * worker keeps a small epoll for its listeners (an epoll holds no socket
 * alive), watched through the ring, and accepts with accept4 as the epoll
 * backend does. Connections are not the hot path; messages are. */

static int watch_listeners(uring_worker_t *w) {
  if (w->listen_epoll < 0) {
    w->listen_epoll = epoll_create1(EPOLL_CLOEXEC);
    if (w->listen_epoll < 0)
      return -errno;
  }
  if (!w->listen_polled) {
    struct io_uring_sqe *sqe = get_sqe(w);
    if (!sqe)
      return -EBUSY;
    io_uring_prep_poll_multishot(sqe, w->listen_epoll, POLLIN);
    io_uring_sqe_set_data64(sqe, user_data(0, KIND_LISTEN));
    w->listen_polled = 1;
  }
  return 0;
}

static void serve_accept(uring_worker_t *w, io_handle_t *h) {
  while (h->pending_read && h->readable) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd;
    do {
      fd = accept4(h->socket, (struct sockaddr *)&ss, &len,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      h->readable = 0;
      return;
    }
    io_op_t *op = h->pending_read;
    h->pending_read = op->next;
    if (fd < 0) {
      make_ready(w, op, -errno); /* the owner backs off */
      continue;
    }
    io_accept_op(op)->socket = fd;
    if (io_accept_op(op)->peer)
      address_from_sockaddr(io_accept_op(op)->peer, (struct sockaddr *)&ss, len);
    make_ready(w, op, 0);
  }
}

static void start_accept(uring_worker_t *w, io_op_t *op) {
  io_handle_t *h = op->handle;
  if (!h->writable) { /* not yet in the listeners' epoll */
    int rc = watch_listeners(w);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = h};
    if (rc == 0 &&
        epoll_ctl(w->listen_epoll, EPOLL_CTL_ADD, h->socket, &ev) != 0)
      rc = -errno;
    if (rc != 0) {
      make_ready(w, op, rc);
      return;
    }
    h->writable = 1; /* registered */
    h->readable = 1; /* connections may be waiting already */
  }
  op->next = h->pending_read;
  h->pending_read = op;
  serve_accept(w, h);
}

static void on_listen_cqe(uring_worker_t *w, int res, unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) {
    w->listen_polled = 0;
    if (res != -ECANCELED)
      watch_listeners(w);
  }
  struct epoll_event events[64];
  int n = epoll_wait(w->listen_epoll, events, 64, 0);
  for (int k = 0; k < n; k++) {
    io_handle_t *h = events[k].data.ptr;
    h->readable = 1;
    serve_accept(w, h);
  }
}

/* ---- sending ---- */

static void close_fd(uring_worker_t *w, uint32_t i);

static void issue_send_op(uring_worker_t *w, uint32_t i, io_op_t *op) {
  uslot_t *s = slot_at(w, i);
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe) {
    make_ready(w, op, -EBUSY);
    return;
  }
  io_send_op_t *send = io_send_op(op);
  memset(&send->msg, 0, sizeof send->msg);
  send->msg.msg_iov = send->bufs;
  send->msg.msg_iovlen = (size_t)send->count;
  /* MSG_WAITALL: the kernel finishes a short write itself. */
  io_uring_prep_sendmsg(sqe, s->fd, &send->msg, MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, user_data(i, KIND_SEND_OP));
  s->kernel_op = op;
  s->inflight++;
}

static send_rec_t *stage_alloc(uring_worker_t *w, size_t len) {
  if (len <= STAGE_SMALL && w->stage_cached)
    return w->stage_cache[--w->stage_cached];
  return malloc(sizeof(send_rec_t) + (len <= STAGE_SMALL ? STAGE_SMALL : len));
}

static void stage_free(uring_worker_t *w, send_rec_t *rec) {
  if (rec->len <= STAGE_SMALL && w->stage_cached < STAGE_CACHE)
    w->stage_cache[w->stage_cached++] = rec;
  else
    free(rec);
}

static void submit_staged(uring_worker_t *w, uint32_t i) {
  uslot_t *s = slot_at(w, i);
  send_rec_t *rec = s->staged;
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe) {
    /* Cannot happen once the ring took what was queued; if it does, the
     * bytes are lost, and the session must hear it. */
    stage_free(w, rec);
    s->staged = NULL;
    s->send_error = -EBUSY;
    return;
  }
  io_uring_prep_send(sqe, s->fd, rec->data + rec->off, rec->len - rec->off,
                     MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, user_data(i, KIND_STAGED));
  s->inflight++;
}

static int uring_send_now(io_handle_t *h, const io_buf_t *bufs, int count) {
  uring_worker_t *w = worker_of(h);
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return IO_ECANCELED;
  uslot_t *s = slot_of(w, h);
  if (!s)
    return -ENOMEM;
  if (s->send_error)
    return s->send_error;
  if (s->staged || s->kernel_op || h->pending_write)
    return -EAGAIN;
  size_t total = 0;
  for (int k = 0; k < count && total <= STAGE_SMALL; k++)
    total += bufs[k].iov_len;
  if (total > STAGE_SMALL) {
    /* Large: one system call spread over many bytes costs less than the
     * copy, and what the socket does not take waits in the owner's queue
     * (a send op), as with epoll. */
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)bufs;
    msg.msg_iovlen = (size_t)count;
    ssize_t n;
    do {
      n = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n >= 0)
      return (int)n;
    return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
  if (total == 0)
    return 0;
  send_rec_t *rec = stage_alloc(w, total);
  if (!rec)
    return -EAGAIN; /* the op path will say why */
  rec->slot = h->slot;
  rec->len = (uint32_t)total;
  rec->off = 0;
  rec->orphan.heap_index = UINT32_MAX;
  size_t at = 0;
  for (int k = 0; k < count && at < total; k++) {
    size_t n = bufs[k].iov_len < total - at ? bufs[k].iov_len : total - at;
    memcpy(rec->data + at, bufs[k].iov_base, n);
    at += n;
  }
  s->staged = rec;
  submit_staged(w, h->slot);
  return s->staged ? (int)total : -EAGAIN;
}

/* A send failed after it was reported taken: end the receive side with
 * the error, so the session ends with a reason (SPEC section 3). */
static void send_failed(uring_worker_t *w, uint32_t i, int status) {
  uslot_t *s = slot_at(w, i);
  s->send_error = status;
  if (!s->has_end) {
    s->has_end = 1;
    s->end = status;
  }
  serve_recv(w, i);
}

/* The socket's sends are done: what waited behind them goes on. */
static void after_send(uring_worker_t *w, uint32_t i) {
  uslot_t *s = slot_at(w, i);
  if (s->closing) {
    if (!s->staged && !s->fd_closed)
      close_fd(w, i);
    return;
  }
  io_handle_t *h = s->key;
  io_op_t *op = h->pending_write;
  if (op && !s->staged) {
    h->pending_write = NULL;
    if (s->send_error)
      make_ready(w, op, s->send_error);
    else
      issue_send_op(w, i, op);
  }
  if (s->shutdown_pending && !s->staged && !s->kernel_op) {
    s->shutdown_pending = 0;
    shutdown(h->socket, SHUT_WR);
  }
}

static void on_staged_cqe(uring_worker_t *w, uint32_t i, int res) {
  uslot_t *s = slot_at(w, i);
  send_rec_t *rec = s->staged;
  if (res > 0 && rec->off + (uint32_t)res < rec->len && !s->reset) {
    rec->off += (uint32_t)res; /* interrupted: send the rest */
    submit_staged(w, i);
    return;
  }
  if (rec->orphan.heap_index != UINT32_MAX)
    timer_heap_remove(&w->timers, &rec->orphan);
  stage_free(w, rec);
  s->staged = NULL;
  if (res < 0 && !s->closing)
    send_failed(w, i, kernel_status(res));
  after_send(w, i);
}

static void on_send_op_cqe(uring_worker_t *w, uint32_t i, int res) {
  uslot_t *s = slot_at(w, i);
  io_op_t *op = s->kernel_op;
  s->kernel_op = NULL;
  if (s->closing) {
    op->next = s->held;
    s->held = op;
  } else {
    int status = res < 0 ? kernel_status(res) : res;
    if (status < 0)
      s->send_error = status;
    make_ready(w, op, status);
  }
  after_send(w, i);
}

/* ---- closing ---- */

static void close_fd(uring_worker_t *w, uint32_t i) {
  uslot_t *s = slot_at(w, i);
  struct io_uring_sqe *sqe = get_sqe(w);
  s->fd_closed = 1;
  if (!sqe) {
    close(s->fd);
    return;
  }
  io_uring_prep_close(sqe, s->fd);
  io_uring_sqe_set_data64(sqe, user_data(i, KIND_CLOSE));
  s->inflight++;
}

static void cancel_one(uring_worker_t *w, uint32_t i, int kind) {
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe)
    return;
  io_uring_prep_cancel64(sqe, user_data(i, kind), 0);
  io_uring_sqe_set_data64(sqe, user_data(i, KIND_CANCEL));
  slot_at(w, i)->inflight++;
}

/* Everything the kernel has on the socket, by descriptor: one request,
 * however many it finds. Then the close, after it. */
static void cancel_all_and_close(uring_worker_t *w, uint32_t i) {
  uslot_t *s = slot_at(w, i);
  if (io_uring_sq_space_left(&w->ring) < 2)
    io_uring_submit(&w->ring);
  struct io_uring_sqe *sqe = get_sqe(w);
  if (sqe) {
    io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, user_data(i, KIND_CANCEL));
    sqe->flags |= IOSQE_IO_HARDLINK; /* the close runs after it, always */
    s->inflight++;
  }
  close_fd(w, i);
}

/* A closed socket's staged bytes go out like those in a socket's buffer
 * after close(2), but not for ever: after ORPHAN_MS the send is cancelled. */
static void orphan_expired(uring_worker_t *w, send_rec_t *rec) {
  uslot_t *s = slot_at(w, rec->slot);
  s->reset = 1;
  cancel_one(w, rec->slot, KIND_STAGED);
}

static void uring_handle_close(io_handle_t *h) {
  uring_worker_t *w = worker_of(h);
  if (h->closed)
    return;
  h->closed = 1;
  if (h->socket == IO_INVALID_SOCKET)
    return;
  if (h->slot == NO_SLOT) {
    /* Never had a request in the kernel: a listener (its accepts wait
     * here, not in the kernel), or a socket that never did I/O. */
    if (h->writable)
      epoll_ctl(w->listen_epoll, EPOLL_CTL_DEL, h->socket, NULL);
    close(h->socket);
    h->socket = IO_INVALID_SOCKET;
    io_op_t *op = h->pending_read;
    h->pending_read = NULL;
    while (op) {
      io_op_t *next = op->next;
      make_ready(w, op, IO_ECANCELED);
      op = next;
    }
    return;
  }
  uint32_t i = h->slot;
  uslot_t *s = slot_at(w, i);
  h->socket = IO_INVALID_SOCKET;
  s->closing = 1;
  /* Ops waiting here complete cancelled once the kernel let go. */
  io_op_t *op = h->pending_read;
  h->pending_read = NULL;
  while (op) {
    io_op_t *next = op->next;
    op->next = s->held;
    s->held = op;
    op = next;
  }
  if (h->pending_write) {
    h->pending_write->next = s->held;
    s->held = h->pending_write;
    h->pending_write = NULL;
  }
  while (s->head != NO_BUFFER) {
    unsigned id = s->head;
    s->head = w->buffer_next[id];
    buffer_recycle(w, id);
  }
  s->tail = NO_BUFFER;
  if (s->inflight == 0) {
    close(s->fd);
    s->fd_closed = 1;
  } else if (s->staged && !s->reset) {
    /* The staged bytes were reported sent: they go out first, and the
     * descriptor is closed after them (after_send). The rest is cancelled
     * one by one. */
    if (s->recv_armed)
      cancel_one(w, i, KIND_RECV);
    if (s->kernel_op)
      cancel_one(w, i, s->kernel_op->type == IO_OP_SEND ? KIND_SEND_OP
                                                        : KIND_CONNECT);
    s->staged->orphan.op.handle = &w->internal;
    s->staged->orphan.due_ms = clock_now_ms() + ORPHAN_MS;
    if (timer_heap_insert(&w->timers, &s->staged->orphan) != 0)
      orphan_expired(w, s->staged);
  } else {
    cancel_all_and_close(w, i);
  }
  slot_check(w, i);
}

static void uring_shutdown_write(io_handle_t *h) {
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return;
  uring_worker_t *w = worker_of(h);
  if (h->slot != NO_SLOT) {
    uslot_t *s = slot_at(w, h->slot);
    if (s->staged || s->kernel_op) {
      /* After the bytes before it, not before them. */
      s->shutdown_pending = 1;
      return;
    }
  }
  shutdown(h->socket, SHUT_WR);
}

static void uring_reset_on_close(io_handle_t *h) {
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return;
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(h->socket, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  uring_worker_t *w = worker_of(h);
  uslot_t *s = slot_of(w, h);
  if (s)
    s->reset = 1;
}

/* ---- timers ---- */

static void expire_timers(uring_worker_t *w) {
  uint64_t now = clock_now_ms();
  io_timer_t *t;
  while ((t = timer_heap_first(&w->timers)) != NULL && t->due_ms <= now) {
    timer_heap_remove(&w->timers, t);
    if (t->op.handle == &w->internal)
      orphan_expired(w, container_of(t, send_rec_t, orphan));
    else
      make_ready(w, &t->op, 0);
  }
}

static void uring_timer_cancel(io_timer_t *t) {
  uring_worker_t *w = worker_of(t->op.handle);
  timer_heap_remove(&w->timers, t);
  make_ready(w, &t->op, IO_ECANCELED);
}

/* ---- issuing ops on the owning worker ---- */

static void start_op(uring_worker_t *w, io_op_t *op) {
  io_handle_t *h = op->handle;
  switch (op->type) {
  case IO_OP_POST:
    make_ready(w, op, op->status);
    return;
  case IO_OP_TIMER: {
    io_timer_t *t = container_of(op, io_timer_t, op);
    if (timer_heap_insert(&w->timers, t) != 0)
      make_ready(w, op, -ENOMEM);
    return;
  }
  case IO_OP_STOP:
    w->stopping = 1;
    return;
  default:
    break;
  }
  if (h->closed || h->socket == IO_INVALID_SOCKET) {
    cancel_op(w, op);
    return;
  }
  if (op->type == IO_OP_ACCEPT) {
    start_accept(w, op);
    return;
  }
  uslot_t *s = slot_of(w, h);
  if (!s) {
    make_ready(w, op, -ENOMEM);
    return;
  }
  uint32_t i = h->slot;
  switch (op->type) {
  case IO_OP_RECV:
    op->next = NULL;
    h->pending_read = op;
    serve_recv(w, i);
    return;
  case IO_OP_SEND:
    if (s->send_error) {
      make_ready(w, op, s->send_error);
    } else if (s->staged || s->kernel_op) {
      op->next = NULL;
      h->pending_write = op;
    } else {
      issue_send_op(w, i, op);
    }
    return;
  case IO_OP_CONNECT: {
    struct io_uring_sqe *sqe = get_sqe(w);
    if (!sqe) {
      make_ready(w, op, -EBUSY);
      return;
    }
    const address_t *to = io_connect_op(op)->to;
    io_uring_prep_connect(sqe, s->fd, &to->u.sa, address_length(to));
    io_uring_sqe_set_data64(sqe, user_data(i, KIND_CONNECT));
    s->kernel_op = op;
    s->inflight++;
    return;
  }
  default:
    make_ready(w, op, -EINVAL);
    return;
  }
}

static void wake_worker(uring_worker_t *w) {
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(w->wake_fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
}

static void hand_over(uring_worker_t *w, io_op_t *op) {
  int signal;
  pthread_mutex_lock(&w->mailbox_lock);
  queue_push(&w->mailbox, op);
  signal = !w->mailbox_signalled;
  w->mailbox_signalled = 1;
  pthread_mutex_unlock(&w->mailbox_lock);
  if (signal)
    wake_worker(w);
}

static void uring_submit(io_op_t *op) {
  uring_worker_t *w = worker_of(op->handle);
  if (io__current_worker == &w->base)
    start_op(w, op);
  else
    hand_over(w, op);
}

/* The mailbox's eventfd is read through the ring: a blocking descriptor,
 * so the read waits in the kernel rather than failing with EAGAIN. */
static int arm_wake(uring_worker_t *w) {
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe)
    return -1;
  io_uring_prep_read(sqe, w->wake_fd, &w->wake_value, sizeof w->wake_value, 0);
  io_uring_sqe_set_data64(sqe, user_data(0, KIND_WAKE));
  return 0;
}

static void drain_mailbox(uring_worker_t *w) {
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

/* ---- completions ---- */

static void on_cqe(uring_worker_t *w, uint64_t data, int res, unsigned flags) {
  int kind = (int)(data & KIND_MASK);
  uint32_t i = (uint32_t)(data >> 4);
  if (kind == KIND_WAKE) {
    drain_mailbox(w);
    if (arm_wake(w) != 0)
      log_write(LOG_ERROR, "core", "io_uring: cannot re-arm the wake-up");
    return;
  }
  if (kind == KIND_LISTEN) {
    on_listen_cqe(w, res, flags);
    return;
  }
  switch (kind) {
  case KIND_RECV:
    on_recv_cqe(w, i, res, flags);
    break;

  case KIND_STAGED:
    on_staged_cqe(w, i, res);
    break;
  case KIND_SEND_OP:
    on_send_op_cqe(w, i, res);
    break;
  case KIND_CONNECT: {
    uslot_t *s = slot_at(w, i);
    io_op_t *op = s->kernel_op;
    s->kernel_op = NULL;
    if (s->closing) {
      op->next = s->held;
      s->held = op;
    } else {
      make_ready(w, op, kernel_status(res));
    }
    break;
  }
  default: /* KIND_CANCEL, KIND_CLOSE: counted below */
    break;
  }
  if (!(flags & IORING_CQE_F_MORE)) {
    slot_at(w, i)->inflight--;
    slot_check(w, i);
  }
}

static void reap(uring_worker_t *w) {
  struct io_uring_cqe *cqes[CQES_PER_BATCH];
  unsigned n;
  while ((n = io_uring_peek_batch_cqe(&w->ring, cqes, CQES_PER_BATCH)) > 0) {
    struct {
      uint64_t data;
      int res;
      unsigned flags;
    } copy[CQES_PER_BATCH];
    for (unsigned k = 0; k < n; k++) {
      copy[k].data = cqes[k]->user_data;
      copy[k].res = cqes[k]->res;
      copy[k].flags = cqes[k]->flags;
    }
    io_uring_cq_advance(&w->ring, n);
    for (unsigned k = 0; k < n; k++)
      on_cqe(w, copy[k].data, copy[k].res, copy[k].flags);
    if (n < CQES_PER_BATCH)
      break;
  }
}

static void deliver(uring_worker_t *w, io_op_t *op) {
  io_handle_t *h = op->handle;
  int status = op->status;
  int is_socket_op = op->type == IO_OP_RECV || op->type == IO_OP_SEND ||
                     op->type == IO_OP_ACCEPT || op->type == IO_OP_CONNECT;
  unsigned id = op->type == IO_OP_RECV && status > 0
                    ? buffer_of(w, io_recv_op(op)->data)
                    : NO_BUFFER;
  if (is_socket_op && status != IO_ECANCELED && h->closed) {
    /* A result that came in before a close the owner made since: the
     * close wins, as with epoll. */
    if (id != NO_BUFFER)
      buffer_recycle(w, id);
    if (op->type == IO_OP_ACCEPT && status == 0)
      close(io_accept_op(op)->socket);
    cancel_op(w, op);
    return;
  }
  size_t bytes = 0;
  if ((op->type == IO_OP_RECV || op->type == IO_OP_SEND) && status >= 0) {
    bytes = (size_t)status;
    status = 0;
  }
  atomic_fetch_add_explicit(&w->base.core->completions, 1,
                            memory_order_relaxed);
  op->complete(op, status, bytes);
  if (id != NO_BUFFER)
    buffer_recycle(w, id); /* valid only during the completion */
}

static struct __kernel_timespec *wait_timeout(uring_worker_t *w,
                                              struct __kernel_timespec *ts) {
  io_timer_t *first = timer_heap_first(&w->timers);
  if (!first)
    return NULL;
  uint64_t now = clock_now_ms();
  uint64_t wait = first->due_ms > now ? first->due_ms - now : 0;
  if (wait > 60000)
    wait = 60000;
  ts->tv_sec = (long long)(wait / 1000);
  ts->tv_nsec = (long long)(wait % 1000) * 1000000;
  return ts;
}

static void run_round(uring_worker_t *w, int may_wait) {
  struct __kernel_timespec ts;
  struct io_uring_cqe *cqe;
  if (may_wait && !w->ready.head) {
    struct __kernel_timespec *t = wait_timeout(w, &ts);
    if (!t || t->tv_sec || t->tv_nsec)
      io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, t, NULL);
    else
      io_uring_submit_and_get_events(&w->ring);
  } else {
    io_uring_submit_and_get_events(&w->ring);
  }
  reap(w);
  expire_timers(w);
  for (int budget = DELIVERIES_PER_ROUND; budget > 0; budget--) {
    io_op_t *op = queue_pop(&w->ready);
    if (!op)
      break;
    deliver(w, op);
  }
}

/* ---- the worker's thread ---- */

static int worker_init(uring_worker_t *w) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL |
            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  p.cq_entries = CQ_ENTRIES;
  int rc = io_uring_queue_init_params(SQ_ENTRIES, &w->ring, &p);
  if (rc == -EINVAL) {
    /* Before 6.1: no deferred task work; the rest still works. */
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL |
              IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = CQ_ENTRIES;
    rc = io_uring_queue_init_params(SQ_ENTRIES, &w->ring, &p);
  }
  if (rc < 0) {
    snprintf(w->start_err, sizeof w->start_err, "io_uring_queue_init: %s",
             strerror(-rc));
    return rc == -ENOSYS || rc == -EPERM || rc == -EINVAL || rc == -EACCES
               ? IO_CORE_UNSUPPORTED
               : -1;
  }
  w->ring_ready = 1;
  /* Multishot receive came with 6.0, as did SEND_ZC, which a probe sees. */
  struct io_uring_probe *probe = io_uring_get_probe_ring(&w->ring);
  int recent = probe && io_uring_opcode_supported(probe, IORING_OP_SEND_ZC) &&
               (p.features & IORING_FEAT_EXT_ARG);
  io_uring_free_probe(probe);
  if (!recent) {
    snprintf(w->start_err, sizeof w->start_err,
             "the kernel's io_uring predates multishot receive (6.0)");
    return IO_CORE_UNSUPPORTED;
  }
  unsigned count = atomic_load(&buffer_count_override);
  w->buffer_count = count ? count : BUFFER_COUNT;
  w->buf_ring_bytes = w->buffer_count * sizeof(struct io_uring_buf);
  void *ring_mem = mmap(NULL, w->buf_ring_bytes, PROT_READ | PROT_WRITE,
                        MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  w->buffers = malloc((size_t)w->buffer_count * BUFFER_BYTES);
  w->buffer_next = calloc(w->buffer_count, sizeof *w->buffer_next);
  w->buffer_len = calloc(w->buffer_count, sizeof *w->buffer_len);
  if (ring_mem == MAP_FAILED || !w->buffers || !w->buffer_next ||
      !w->buffer_len) {
    if (ring_mem != MAP_FAILED)
      munmap(ring_mem, w->buf_ring_bytes);
    snprintf(w->start_err, sizeof w->start_err, "out of memory");
    return -1;
  }
  w->buf_ring = ring_mem;
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (unsigned long)ring_mem;
  reg.ring_entries = w->buffer_count;
  reg.bgid = BUFFER_GROUP;
  rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
  if (rc < 0) {
    snprintf(w->start_err, sizeof w->start_err,
             "cannot register the receive buffers: %s", strerror(-rc));
    return rc == -EINVAL ? IO_CORE_UNSUPPORTED : -1;
  }
  io_uring_buf_ring_init(w->buf_ring);
  int mask = io_uring_buf_ring_mask(w->buffer_count);
  for (unsigned k = 0; k < w->buffer_count; k++)
    io_uring_buf_ring_add(w->buf_ring, buffer_at(w, k), BUFFER_BYTES,
                          (unsigned short)k, mask, (int)k);
  io_uring_buf_ring_advance(w->buf_ring, (int)w->buffer_count);
  w->buffers_free = w->buffer_count;
  if (arm_wake(w) != 0) {
    snprintf(w->start_err, sizeof w->start_err, "cannot arm the wake-up");
    return -1;
  }
  return 0;
}

/* Stopping: every handle is closed (the contract), but closes may still
 * be on their way through the kernel, and staged bytes of closed sockets
 * may still wait for a slow peer: those are cancelled now. */
static void worker_drain(uring_worker_t *w) {
  for (uint32_t i = 0; i < w->slot_count; i++)
    if (slot_at(w, i)->key && slot_at(w, i)->staged)
      orphan_expired(w, slot_at(w, i)->staged);
  uint64_t deadline = clock_now_ms() + STOP_DRAIN_MS;
  while (w->live_slots > 0 && clock_now_ms() < deadline) {
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
    reap(w);
    while (queue_pop(&w->ready))
      ; /* nothing is owed to anyone any more */
  }
}

static void *worker_main(void *arg) {
  uring_worker_t *w = arg;
  w->start_rc = worker_init(w);
  int ok = w->start_rc == 0;
  sem_post(&w->started);
  if (!ok)
    return NULL;
  io__current_worker = &w->base;
  while (!w->stopping)
    run_round(w, 1);
  worker_drain(w);
  io__current_worker = NULL;
  return NULL;
}

/* ---- cores and handles ---- */

static void worker_release(uring_worker_t *w) {
  if (w->ring_ready)
    io_uring_queue_exit(&w->ring); /* unregisters the buffer ring too */
  w->ring_ready = 0;
  if (w->buf_ring)
    munmap(w->buf_ring, w->buf_ring_bytes);
  if (w->wake_fd >= 0)
    close(w->wake_fd);
  if (w->listen_epoll >= 0)
    close(w->listen_epoll);
  pthread_mutex_destroy(&w->mailbox_lock);
  sem_destroy(&w->started);
  timer_heap_free(&w->timers);
  free(w->buffers);
  free(w->buffer_next);
  free(w->buffer_len);
  for (uint32_t k = 0; k < w->chunk_count; k++)
    free(w->slot_chunks[k]);
  free(w->slot_chunks);
  free(w->starved);
  while (w->stage_cached)
    free(w->stage_cache[--w->stage_cached]);
}

static void uring_core_destroy(io_core_t *base) {
  uring_core_t *core = (uring_core_t *)base;
  int count = base->thread_count;
  io_op_t *stops = calloc((size_t)count + 1, sizeof *stops);
  io_handle_t *handles = calloc((size_t)count + 1, sizeof *handles);
  for (int i = 0; i < count; i++) {
    handles[i].worker = &core->workers[i].base;
    handles[i].socket = IO_INVALID_SOCKET;
    stops[i].type = IO_OP_STOP;
    stops[i].handle = &handles[i];
    hand_over(&core->workers[i], &stops[i]);
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

static int uring_core_create(int threads, io_core_t **out, char *err,
                             size_t err_len) {
  uring_core_t *core = calloc(1, sizeof *core);
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
  core->base.ops = &io__uring_ops;
  int started = 0, rc = 0;
  for (int i = 0; i < threads && rc == 0; i++) {
    uring_worker_t *w = &core->workers[i];
    w->base.ops = &io__uring_ops;
    w->base.core = &core->base;
    w->base.index = i;
    w->internal.worker = &w->base;
    w->internal.socket = IO_INVALID_SOCKET;
    w->internal.slot = NO_SLOT;
    w->free_slot = NO_SLOT;
    w->listen_epoll = -1;
    core->base.workers[i] = &w->base;
    pthread_mutex_init(&w->mailbox_lock, NULL);
    sem_init(&w->started, 0, 0);
    w->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (w->wake_fd < 0) {
      snprintf(err, err_len, "cannot create worker %d: %s", i, strerror(errno));
      rc = -1;
    } else if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      snprintf(err, err_len, "cannot start worker thread %d", i);
      rc = -1;
    } else {
      while (sem_wait(&w->started) != 0 && errno == EINTR)
        ;
      rc = w->start_rc;
      if (rc != 0) {
        snprintf(err, err_len, "%s", w->start_err);
        pthread_join(w->thread, NULL);
      } else {
        started++;
      }
    }
    if (rc != 0)
      worker_release(w);
  }
  core->base.thread_count = started;
  if (rc != 0) {
    uring_core_destroy(&core->base);
    return rc;
  }
  *out = &core->base;
  return 0;
}

static int uring_handle_open(io_handle_t *h) {
  (void)h; /* registered lazily, on the worker, at its first op */
  return 0;
}

const io_backend_ops_t io__uring_ops = {
    .backend = IO_BACKEND_IO_URING,
    .name = "io_uring",
    .core_create = uring_core_create,
    .core_destroy = uring_core_destroy,
    .handle_open = uring_handle_open,
    .handle_close = uring_handle_close,
    .send_now = uring_send_now,
    .shutdown_write = uring_shutdown_write,
    .reset_on_close = uring_reset_on_close,
    .submit = uring_submit,
    .timer_cancel = uring_timer_cancel,
};
