/*
 * Linux backend: a proactor on io_uring (liburing 2.3, kernel 6.0 or later;
 * 6.12 or later for incremental receive buffers).
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
 * A socket's state is in its handle (backend.h's uring fields and
 * backend_bits), not in a table of the worker's: an idle session costs
 * nothing here beyond its handle (issue 18).
 *
 * Receiving: one multishot receive per socket, armed at the first
 * io_recv_start and left armed, reads into a provided buffer ring that the
 * worker's sockets share. Where the kernel has it (6.12), the ring is
 * registered for incremental consumption (IOU_PBUF_RING_INC): a receive
 * takes only the bytes it got, at the buffer's running offset, and the
 * kernel keeps the rest of the buffer for the next receives, of any socket
 * (IORING_CQE_F_BUF_MORE on the CQE), so the worker's 1 MiB is 4 buffers
 * of 256 KiB and a 64 KiB message arrives in one receive. Older kernels
 * refuse the flag (EINVAL): each receive then takes a whole buffer, 64 of
 * 16 KiB. What a receive got is a "piece" (buffer, offset, length) in the
 * worker's table, queued on its handle; an idle session holds no piece and
 * no buffer. A buffer goes back to the ring only when both the kernel is
 * done with it (a CQE without BUF_MORE) and every piece of it was
 * delivered, in whatever order the sockets' owners take them: each piece
 * stays valid until its owner's received call has run. When the ring is
 * empty the kernel ends the multishot (ENOBUFS); the socket then waits in
 * the worker's "starved" list and is armed again as soon as a buffer comes
 * back. Ops, wake-ups and handles whose receive has a result share one
 * delivery queue (dispatch.h).
 *
 * Sending: io_send_now copies a small send (up to STAGE_SMALL; a larger
 * one goes out with sendmsg, whose cost is spread over its bytes) into a
 * staged send and returns; the send is submitted with the round's other
 * requests. That is epoll's send(2) without the system call, and like the
 * socket's own buffer the staged bytes reach the peer also when the handle
 * is closed after them (the record then carries the descriptor and closes
 * it after them, bounded by ORPHAN_MS), unless the close resets. While one
 * staged send or send op is in the kernel, the next waits (-EAGAIN, or the
 * op is held): two sends on one socket in flight at once could be written
 * out of order. A staged send that fails ends the receive side with its
 * error, so the session ends with a reason.
 *
 * Accepting: listeners stay out of the ring (see "accepting" below).
 *
 * Lifetime. A completion's user_data is a pointer with its kind in the low
 * 3 bits (handles, ops and records are 8-aligned): the multishot receive's
 * names the handle, a send or connect op's names the op (whose owner keeps
 * it, and so its handle, until its completion), a staged send's names its
 * record (the backend's own memory). Cancels and closes name nothing.
 * So the only request that names a handle is its multishot receive, and
 * the invariant is: a handle whose multishot is in the kernel is alive,
 * because either it is open, or its receive is armed (the owner holds a
 * reference for that), or its close is still running. io_handle_close
 * keeps it so:
 *  - receive armed: its IO_ECANCELED is delivered only after the
 *    multishot's final CQE (no IORING_CQE_F_MORE);
 *  - receive not armed (the owner closes inside its received call, or
 *    after an end of its own): the close cancels the multishot and waits
 *    for its final CQE right there, reaping completions (queued, none
 *    delivered). An owner that arms its next receive before it may close
 *    never pays that wait; an end the backend makes itself (a failed staged
 *    send) is delivered only after the multishot ended, for the same
 *    reason.
 * Every request queued is submitted before completions are reaped again,
 * so a cancel by user_data always runs while what it names is alive: a
 * cancel never finds a newer request at the same address. The starved list
 * holds open handles only: the close takes the handle out of it.
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>
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
/* Receive buffers per worker, 1 MiB either way, all touched in time
 * (FIFO). Consumed incrementally, a buffer holds many receives, and a
 * 64 KiB message fits in one unless it meets the buffer's end (one in
 * four: 64 KiB buffers split nearly every one, 2.1 against 1.6 system
 * calls per echoed 64 KiB); consumed whole, each receive takes one. */
#define BUFFER_BYTES_INC (256 * 1024)
#define BUFFER_COUNT_INC 4
#define BUFFER_BYTES_WHOLE (16 * 1024)
#define BUFFER_COUNT_WHOLE 64
#define BUFFER_GROUP 0
#define PIECES_FIRST 256 /* the worker's table of received pieces, at first */
#define PIECES_MAX 65535 /* ... at most: a handle's queue has 16-bit links */
#define STAGE_SMALL 2048 /* staged records this size are kept for reuse */
#define STAGE_CACHE 128  /* ... this many per worker */
#define ORPHAN_MS 5000   /* a closed socket's staged bytes, at most */
#define DELIVERIES_PER_ROUND 4096
#define CQES_PER_BATCH 256
#define STOP_DRAIN_MS 2000
/* A handle's queue links pieces by index plus one in 16 bits, so that 0
 * (what io_handle_open leaves) is "none". */
#define NO_PIECE 0u

/* Incremental consumption of provided buffers (kernel 6.12), from the
 * kernel's include/uapi/linux/io_uring.h; liburing 2.3's copy predates it.
 * IOU_PBUF_RING_INC: a flag of IORING_REGISTER_PBUF_RING's
 * io_uring_buf_reg; IORING_CQE_F_BUF_MORE: the kernel keeps the rest of
 * the CQE's buffer for more completions. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/* What a completion is for: the low 3 bits of its user_data. */
enum {
  KIND_NONE = 0, /* a cancel or a close: nothing to do with its result */
  KIND_WAKE,     /* the mailbox's eventfd */
  KIND_LISTEN,   /* the listeners' epoll */
  KIND_RECV,     /* a handle's multishot receive: names the handle */
  KIND_STAGED,   /* a staged send: names its send_rec_t */
  KIND_OP        /* a send or connect op: names the op */
};
#define KIND_MASK ((uint64_t)7)

_Static_assert(_Alignof(io_handle_t) >= 8 && _Alignof(io_op_t) >= 8,
               "a completion's kind lives in the low 3 bits of a pointer");

/* The handle's backend_bits. The worker alone touches them. */
#define UB_MULTISHOT (1u << 0)   /* the multishot receive is in the kernel */
#define UB_HAS_END (1u << 1)     /* the receive side ended: uring.end */
#define UB_STARVED (1u << 2)     /* in the worker's starved list */
#define UB_RESET (1u << 3)       /* the close resets: nothing staged survives */
#define UB_SHUTDOWN (1u << 4)    /* shutdown(SHUT_WR) after the sends in flight */
#define UB_OP_IN_KERNEL (1u << 5) /* a send or connect op is in the kernel */

static int has(const io_handle_t *h, unsigned bit) {
  return (h->backend_bits & bit) != 0;
}
static void set_bit(io_handle_t *h, unsigned bit) {
  h->backend_bits = h->backend_bits | bit;
}
static void clear_bit(io_handle_t *h, unsigned bit) {
  h->backend_bits = h->backend_bits & ~bit;
}

/* A staged send in the kernel (io_send_now's copy). A send op needs no
 * record of its own: its msghdr is in the op (io_send_op_t). Once its
 * handle is closed (handle NULL), the record is an "orphan": it finishes
 * on its own and closes the descriptor after its bytes. */
typedef struct send_rec {
  io_timer_t orphan;   /* after a close: bounds the wait */
  io_handle_t *handle; /* NULL once the handle closed */
  int fd;              /* the socket; an orphan's to close, or -1 */
  uint32_t len;
  uint32_t off;
  uint8_t reset; /* stop at the next completion: the rest is not sent */
  uint8_t data[]; /* staged bytes */
} send_rec_t;

/* A provided buffer, as the worker sees it. It goes back to the ring when
 * the kernel is done with it (out) and each of its pieces was delivered. */
typedef struct buffer_state {
  uint32_t off;    /* incremental: where the kernel's next bytes go in it */
  uint32_t pieces; /* received pieces of it not yet delivered */
  uint8_t out;     /* the kernel is done with it: not in the ring */
} buffer_state_t;

/* Bytes one receive put in a buffer, waiting in a handle's queue. */
typedef struct piece {
  uint32_t off, len;
  uint16_t buffer; /* its id */
  uint16_t next;   /* the next in the queue (or the free list), index + 1 */
} piece_t;

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
  io_fifo_t ready;
  pthread_mutex_t mailbox_lock;
  io_fifo_t mailbox;
  int mailbox_signalled;
  timer_heap_t timers;
  int stopping;
  io_handle_t internal; /* no socket: the orphan timers' handle */
  int listen_epoll;     /* the listeners, see "accepting" */
  int listen_polled;
  /* The provided buffers (see "receiving"). */
  struct io_uring_buf_ring *buf_ring;
  size_t buf_ring_bytes;
  uint8_t *buffers;
  unsigned buffer_count;
  unsigned buffer_bytes;
  int incremental;       /* registered with IOU_PBUF_RING_INC */
  unsigned buffers_free; /* in the ring: out on a final CQE, back on recycle */
  buffer_state_t *buffer_state;
  /* Received pieces not yet delivered, each in a handle's queue; free
   * ones in a list. */
  piece_t *pieces;
  uint32_t piece_cap;
  uint16_t piece_free; /* index + 1, NO_PIECE: none */
  /* Open handles whose multishot found no buffer, oldest first: a ring of
   * pointers (a closed handle leaves a NULL behind). */
  io_handle_t **starved;
  uint32_t starved_head, starved_count, starved_cap;
  uint32_t orphans; /* staged sends in the kernel whose handle closed */
  /* Small staged records, kept: echo-like traffic then costs no malloc. */
  send_rec_t *stage_cache[STAGE_CACHE];
  unsigned stage_cached;
} uring_worker_t;

typedef struct uring_core {
  io_core_t base; /* first: the dispatch head */
  uring_worker_t *workers;
} uring_core_t;

static atomic_uint buffer_count_override;
static atomic_int whole_buffers_forced;

void io__uring_buffer_count(unsigned count) {
  atomic_store(&buffer_count_override, count);
}

/* Tests only: cores created afterwards consume their receive buffers
 * whole even where the kernel could do it incrementally (on = 1), to
 * prove the older kernels' path; 0 restores the default. */
void io__uring_whole_buffers(int on) {
  atomic_store(&whole_buffers_forced, on);
}

/* IOCPHOST_URING_WHOLE_BUFFERS=1, for tests: every core consumes its
 * buffers whole, as on Debian 12's 6.1 kernel, so a whole suite runs the
 * older kernels' path on a newer one. */
static int whole_buffers_asked(void) {
  const char *env = getenv("IOCPHOST_URING_WHOLE_BUFFERS");
  return env && strcmp(env, "1") == 0;
}

static uring_worker_t *worker_of(const io_handle_t *h) {
  return (uring_worker_t *)h->worker;
}

static uint64_t tagged(const void *p, int kind) {
  return (uint64_t)(uintptr_t)p | (uint64_t)kind;
}

static void make_ready(uring_worker_t *w, io_op_t *op, int status) {
  op->status = status;
  io_fifo_push(&w->ready, op, IO_ENTRY_OP);
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
  return w->buffers + (size_t)id * w->buffer_bytes;
}

static void rearm_starved(uring_worker_t *w);

/* The buffer goes back to the ring if nothing holds it any more: the
 * kernel is done with it and every piece of it was delivered. */
static void buffer_check(uring_worker_t *w, unsigned id) {
  buffer_state_t *b = &w->buffer_state[id];
  if (!b->out || b->pieces > 0)
    return;
  b->out = 0;
  b->off = 0;
  io_uring_buf_ring_add(w->buf_ring, buffer_at(w, id), w->buffer_bytes,
                        (unsigned short)id,
                        io_uring_buf_ring_mask(w->buffer_count), 0);
  io_uring_buf_ring_advance(w->buf_ring, 1);
  w->buffers_free++;
  if (w->starved_count)
    rearm_starved(w);
}

/* A free piece, index + 1; NO_PIECE when the table cannot grow. */
static unsigned piece_alloc(uring_worker_t *w) {
  if (w->piece_free == NO_PIECE) {
    uint32_t cap = w->piece_cap ? w->piece_cap * 2 : PIECES_FIRST;
    if (cap > PIECES_MAX)
      cap = PIECES_MAX;
    if (cap <= w->piece_cap)
      return NO_PIECE;
    piece_t *grown = realloc(w->pieces, (size_t)cap * sizeof *grown);
    if (!grown)
      return NO_PIECE;
    for (uint32_t k = cap; k > w->piece_cap; k--) { /* k: index + 1 */
      grown[k - 1u].next = w->piece_free;
      w->piece_free = (uint16_t)k;
    }
    w->pieces = grown;
    w->piece_cap = cap;
  }
  unsigned p = w->piece_free;
  w->piece_free = w->pieces[p - 1u].next;
  return p;
}

static void piece_release(uring_worker_t *w, unsigned p) {
  w->pieces[p - 1u].next = w->piece_free;
  w->piece_free = (uint16_t)p;
}

/* Queues len bytes at off in buffer id on the handle. Bytes that follow
 * the queue's last piece in the same buffer join it (one socket reading on
 * while its owner is busy). Returns 0, or -1 when no piece is left. */
static int queue_piece(uring_worker_t *w, io_handle_t *h, unsigned id,
                       uint32_t off, uint32_t len) {
  if (h->uring.tail != NO_PIECE) {
    piece_t *last = &w->pieces[h->uring.tail - 1u];
    if (last->buffer == id && last->off + last->len == off) {
      last->len += len;
      return 0;
    }
  }
  unsigned p = piece_alloc(w);
  if (p == NO_PIECE)
    return -1;
  piece_t *piece = &w->pieces[p - 1u];
  piece->off = off;
  piece->len = len;
  piece->buffer = (uint16_t)id;
  piece->next = NO_PIECE;
  if (h->uring.tail != NO_PIECE)
    w->pieces[h->uring.tail - 1u].next = (uint16_t)p;
  else
    h->uring.head = (uint16_t)p;
  h->uring.tail = (uint16_t)p;
  w->buffer_state[id].pieces++;
  return 0;
}

/* The handle's queued pieces are dropped; their buffers may go back. */
static void drop_queued(uring_worker_t *w, io_handle_t *h) {
  while (h->uring.head != NO_PIECE) {
    unsigned p = h->uring.head;
    unsigned id = w->pieces[p - 1u].buffer;
    h->uring.head = w->pieces[p - 1u].next;
    piece_release(w, p);
    w->buffer_state[id].pieces--;
    buffer_check(w, id);
  }
  h->uring.tail = NO_PIECE;
}

/* ---- the starved list ---- */

static int starved_push(uring_worker_t *w, io_handle_t *h) {
  if (w->starved_count == w->starved_cap) {
    uint32_t cap = w->starved_cap ? w->starved_cap * 2 : 64;
    io_handle_t **grown = malloc((size_t)cap * sizeof *grown);
    if (!grown)
      return -1;
    for (uint32_t k = 0; k < w->starved_count; k++)
      grown[k] = w->starved[(w->starved_head + k) % w->starved_cap];
    free(w->starved);
    w->starved = grown;
    w->starved_cap = cap;
    w->starved_head = 0;
  }
  w->starved[(w->starved_head + w->starved_count++) % w->starved_cap] = h;
  return 0;
}

static io_handle_t *starved_pop(uring_worker_t *w) {
  while (w->starved_count) {
    io_handle_t *h = w->starved[w->starved_head];
    w->starved_head = (w->starved_head + 1) % w->starved_cap;
    w->starved_count--;
    if (h)
      return h;
  }
  return NULL;
}

/* A closing handle leaves the list (a linear search: starving is rare,
 * and only a starved handle's close pays it). */
static void starved_remove(uring_worker_t *w, io_handle_t *h) {
  for (uint32_t k = 0; k < w->starved_count; k++) {
    uint32_t at = (w->starved_head + k) % w->starved_cap;
    if (w->starved[at] == h) {
      w->starved[at] = NULL;
      return;
    }
  }
}

/* ---- receiving ---- */

/* The handle's receive has something to deliver: queue the handle, once. */
static void recv_ready(uring_worker_t *w, io_handle_t *h) {
  if (h->recv_armed && !h->recv_queued) {
    h->recv_queued = 1;
    io_fifo_push(&w->ready, h, IO_ENTRY_RECV);
  }
}

/* Would deliver_recv deliver something now? A closed handle's
 * cancellation and an end both wait for the multishot's final CQE. */
static int recv_deliverable(const io_handle_t *h) {
  if (h->closed)
    return !has(h, UB_MULTISHOT);
  if (h->uring.head != NO_PIECE)
    return 1;
  return has(h, UB_HAS_END) && !has(h, UB_MULTISHOT);
}

static void recv_maybe_ready(uring_worker_t *w, io_handle_t *h) {
  if (recv_deliverable(h))
    recv_ready(w, h);
}

/* Cancels the multishot receive; the cancel's own CQE names nothing. */
static void cancel_recv(uring_worker_t *w, io_handle_t *h) {
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe)
    return;
  io_uring_prep_cancel64(sqe, tagged(h, KIND_RECV), 0);
  io_uring_sqe_set_data64(sqe, KIND_NONE);
}

/* Ends the receive side with status (0: the peer's FIN). Data that came
 * before is delivered first. */
static void end_recv(uring_worker_t *w, io_handle_t *h, int status) {
  if (has(h, UB_HAS_END))
    return;
  set_bit(h, UB_HAS_END);
  h->uring.end = (int16_t)status;
  if (has(h, UB_MULTISHOT))
    cancel_recv(w, h); /* the end is delivered after its final CQE */
  recv_maybe_ready(w, h);
}

static void arm_recv(uring_worker_t *w, io_handle_t *h) {
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe) {
    end_recv(w, h, -EBUSY);
    return;
  }
  io_uring_prep_recv_multishot(sqe, h->socket, NULL, 0, 0);
  /* Wait for bytes before picking a buffer: the kernel picks one before it
   * tries to read, so without this a socket armed while the ring is empty
   * ends at once with ENOBUFS, bytes or not, and idle sockets would crowd
   * the starved list ahead of the ones with bytes. */
  sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BUFFER_GROUP;
  io_uring_sqe_set_data64(sqe, tagged(h, KIND_RECV));
  set_bit(h, UB_MULTISHOT);
}

/* No buffer for the handle's multishot: wait in the starved list. */
static void starve(uring_worker_t *w, io_handle_t *h) {
  /* The kernel found the ring empty, but buffers may have come back since
   * (recycled before this CQE was read): then no recycle is left to wake
   * this socket, so it reads again now rather than wait forever. */
  if (w->buffers_free > 0) {
    arm_recv(w, h);
    return;
  }
  if (starved_push(w, h) != 0) {
    end_recv(w, h, -ENOBUFS); /* nowhere to wait: end rather than hang */
    return;
  }
  set_bit(h, UB_STARVED);
}

/* A buffer came back, or a receive ended without taking one. Only sockets
 * whose bytes found the ring empty wait here (uring_recv_start arms an idle
 * one as usual), so each woken socket has bytes for a buffer. Consumed
 * whole, a buffer serves one receive: as many starved sockets read again
 * as there are buffers in the ring, longest-starved first. Consumed
 * incrementally, a buffer serves many: every starved socket reads again
 * (one per buffer would leave the rest waiting for a buffer that no
 * receive fills and returns). An entry that reads no more (closed, ended,
 * armed meanwhile) uses up nothing. */
static void rearm_starved(uring_worker_t *w) {
  unsigned woken = 0;
  while (w->incremental || woken < w->buffers_free) {
    io_handle_t *h = starved_pop(w);
    if (!h)
      return;
    clear_bit(h, UB_STARVED);
    if (h->closed || has(h, UB_MULTISHOT) || has(h, UB_HAS_END))
      continue;
    arm_recv(w, h);
    woken++;
  }
}

static void uring_recv_start(io_handle_t *h) {
  uring_worker_t *w = worker_of(h);
  h->recv_armed = 1;
  if (recv_deliverable(h)) {
    recv_ready(w, h);
    return;
  }
  if (h->closed || h->socket == IO_INVALID_SOCKET || has(h, UB_HAS_END) ||
      has(h, UB_MULTISHOT) || has(h, UB_STARVED))
    return;
  /* Armed even when the ring is empty: a socket with nothing to read then
   * waits in the kernel as any idle one does (arm_recv: poll first), and
   * one whose bytes find no buffer ends with ENOBUFS and starves
   * (on_recv_cqe). Starving an idle socket here would let it take a
   * returned buffer's re-arm from one with bytes, and make the list as
   * long as the idle sessions. */
  arm_recv(w, h);
}

/* The buffer a receive's CQE names: its bytes start at the buffer's
 * running offset (0 when consumed whole), and without BUF_MORE the kernel
 * is done with it. Returns the buffer's id, or -1 for none. The kernel
 * hands a buffer back unused on a receive of no bytes (io_recv recycles
 * it: no IORING_CQE_F_BUFFER then); the rules below are its commit rules
 * (io_kbuf_commit) should a flag come with such a result anyway. */
static int take_buffer(uring_worker_t *w, int res, unsigned flags,
                       uint32_t *off) {
  if (!(flags & IORING_CQE_F_BUFFER))
    return -1;
  unsigned id = flags >> IORING_CQE_BUFFER_SHIFT;
  if (id >= w->buffer_count || res < 0 || (w->incremental && res == 0))
    return -1; /* not consumed */
  buffer_state_t *b = &w->buffer_state[id];
  *off = b->off;
  if (w->incremental && (flags & IORING_CQE_F_BUF_MORE)) {
    b->off += (uint32_t)res;
  } else {
    b->out = 1;
    w->buffers_free--;
  }
  return (int)id;
}

static void on_recv_cqe(uring_worker_t *w, io_handle_t *h, int res,
                        unsigned flags) {
  uint32_t off = 0;
  int id = take_buffer(w, res, flags, &off);
  if (!(flags & IORING_CQE_F_MORE))
    clear_bit(h, UB_MULTISHOT);
  int queued = 0;
  if (h->closed || (has(h, UB_HAS_END) && res > 0)) {
    /* Nobody reads these bytes. */
  } else if (res > 0 && id >= 0) {
    queued = queue_piece(w, h, (unsigned)id, off, (uint32_t)res) == 0;
    if (!queued) /* 65535 pieces wait here: the owners do not keep up */
      end_recv(w, h, -ENOBUFS);
    /* A multishot the kernel ended without an error is armed again by the
     * next io_recv_start that finds nothing queued. */
  } else if (res == -ENOBUFS) {
    /* An owner that has no receive armed arms it again itself. */
    if (h->recv_armed && !has(h, UB_HAS_END))
      starve(w, h);
  } else if (res == -ECANCELED) {
    /* Not ours (we cancel only when closing or ending): read on. */
    if (h->recv_armed && !has(h, UB_HAS_END) && !has(h, UB_MULTISHOT))
      arm_recv(w, h);
  } else if (res <= 0) {
    end_recv(w, h, res);
  }
  if (id >= 0 && !queued)
    buffer_check(w, (unsigned)id);
  /* A receive woken for a buffer that ended without taking it (its peer's
   * FIN or reset): the buffer is still in the ring, so the next starved
   * socket reads now rather than wait for another buffer to come back. */
  if (w->starved_count && id < 0 && !(flags & IORING_CQE_F_MORE) &&
      w->buffers_free > 0)
    rearm_starved(w);
  recv_maybe_ready(w, h);
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
    io_uring_sqe_set_data64(sqe, KIND_LISTEN);
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

static void close_fd(uring_worker_t *w, int fd);

static void issue_send_op(uring_worker_t *w, io_handle_t *h, io_op_t *op) {
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
  io_uring_prep_sendmsg(sqe, h->socket, &send->msg, MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, tagged(op, KIND_OP));
  set_bit(h, UB_OP_IN_KERNEL);
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

/* Returns 0, or -1 when the kernel takes no request (the bytes are lost). */
static int submit_staged(uring_worker_t *w, send_rec_t *rec) {
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe)
    return -1;
  io_uring_prep_send(sqe, rec->fd, rec->data + rec->off, rec->len - rec->off,
                     MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, tagged(rec, KIND_STAGED));
  return 0;
}

static int uring_send_now(io_handle_t *h, const io_buf_t *bufs, int count) {
  uring_worker_t *w = worker_of(h);
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return IO_ECANCELED;
  if (h->uring.send_error)
    return h->uring.send_error;
  if (h->uring.staged || has(h, UB_OP_IN_KERNEL) || h->pending_write)
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
      n = sendmsg(h->socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
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
  rec->handle = h;
  rec->fd = h->socket;
  rec->len = (uint32_t)total;
  rec->off = 0;
  rec->reset = 0;
  rec->orphan.heap_index = UINT32_MAX;
  size_t at = 0;
  for (int k = 0; k < count && at < total; k++) {
    size_t n = bufs[k].iov_len < total - at ? bufs[k].iov_len : total - at;
    memcpy(rec->data + at, bufs[k].iov_base, n);
    at += n;
  }
  if (submit_staged(w, rec) != 0) {
    /* Cannot happen once the ring took what was queued; if it does, the
     * session must hear it. */
    stage_free(w, rec);
    h->uring.send_error = -EBUSY;
    return -EBUSY;
  }
  h->uring.staged = rec;
  return (int)total;
}

/* A send failed after it was reported taken: end the receive side with
 * the error, so the session ends with a reason (SPEC section 3). */
static void send_failed(uring_worker_t *w, io_handle_t *h, int status) {
  h->uring.send_error = (int16_t)status;
  end_recv(w, h, status);
}

/* The open socket's send in the kernel is done: what waited behind it
 * goes on. */
static void after_send(uring_worker_t *w, io_handle_t *h) {
  if (h->uring.staged || has(h, UB_OP_IN_KERNEL))
    return;
  io_op_t *op = h->pending_write;
  if (op) {
    h->pending_write = NULL;
    if (h->uring.send_error)
      make_ready(w, op, h->uring.send_error);
    else
      issue_send_op(w, h, op);
  }
  if (has(h, UB_SHUTDOWN) && !has(h, UB_OP_IN_KERNEL)) {
    clear_bit(h, UB_SHUTDOWN);
    shutdown(h->socket, SHUT_WR);
  }
}

static void on_staged_cqe(uring_worker_t *w, send_rec_t *rec, int res) {
  if (res > 0 && rec->off + (uint32_t)res < rec->len && !rec->reset) {
    rec->off += (uint32_t)res; /* interrupted: send the rest */
    if (submit_staged(w, rec) == 0)
      return;
    res = -EBUSY;
  }
  if (rec->orphan.heap_index != UINT32_MAX)
    timer_heap_remove(&w->timers, &rec->orphan);
  io_handle_t *h = rec->handle;
  int fd = rec->fd;
  stage_free(w, rec);
  if (!h) {
    /* An orphan: the descriptor ends with its bytes. */
    w->orphans--;
    if (fd >= 0)
      close_fd(w, fd);
    return;
  }
  h->uring.staged = NULL;
  if (res < 0)
    send_failed(w, h, kernel_status(res));
  after_send(w, h);
}

/* A send or connect op's completion. Its owner keeps the op, and so the
 * handle, until the op is delivered. */
static void on_op_cqe(uring_worker_t *w, io_op_t *op, int res) {
  io_handle_t *h = op->handle;
  clear_bit(h, UB_OP_IN_KERNEL);
  if (op->type != IO_OP_SEND) {
    make_ready(w, op, kernel_status(res));
    return;
  }
  int status = res < 0 ? kernel_status(res) : res;
  if (status < 0 && !h->closed)
    h->uring.send_error = (int16_t)status;
  make_ready(w, op, status);
  if (!h->closed)
    after_send(w, h);
}

/* ---- closing ---- */

static void close_fd(uring_worker_t *w, int fd) {
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe) {
    close(fd);
    return;
  }
  io_uring_prep_close(sqe, fd);
  io_uring_sqe_set_data64(sqe, KIND_NONE);
}

/* Everything the kernel has on the socket, by descriptor: one request,
 * however many it finds. Then the close, after it (the descriptor stays
 * ours until then, so the cancel cannot meet another socket's). */
static void cancel_all_and_close(uring_worker_t *w, int fd) {
  if (io_uring_sq_space_left(&w->ring) < 2)
    io_uring_submit(&w->ring);
  struct io_uring_sqe *sqe = get_sqe(w);
  if (sqe) {
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, KIND_NONE);
    sqe->flags |= IOSQE_IO_HARDLINK; /* the close runs after it, always */
  }
  close_fd(w, fd);
}

/* A closed socket's staged bytes go out like those in a socket's buffer
 * after close(2), but not for ever: after ORPHAN_MS the send is cancelled
 * (the record lives until its completion, which comes after the cancel
 * ran: see "Lifetime"). */
static void orphan_expired(uring_worker_t *w, send_rec_t *rec) {
  rec->reset = 1;
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe)
    return;
  io_uring_prep_cancel64(sqe, tagged(rec, KIND_STAGED), 0);
  io_uring_sqe_set_data64(sqe, KIND_NONE);
}

static void reap(uring_worker_t *w);

/* The owner closed the handle with no receive armed while its multishot
 * is in the kernel (the cancel is queued): nothing of the owner's holds
 * the handle until the final CQE, so the close waits for it here. The
 * completions reaped meanwhile are queued, none delivered: the owner is
 * not re-entered. */
static void await_recv_end(uring_worker_t *w, io_handle_t *h) {
  uint64_t started = clock_now_ms();
  int logged = 0;
  while (has(h, UB_MULTISHOT)) {
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100000000};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
    reap(w);
    if (!logged && has(h, UB_MULTISHOT) && clock_now_ms() - started > 1000) {
      log_write(LOG_ERROR, "core",
                "io_uring: a closed socket's receive is not cancelled after "
                "1 s; still waiting for the kernel");
      logged = 1;
    }
  }
}

static void uring_handle_close(io_handle_t *h) {
  uring_worker_t *w = worker_of(h);
  if (h->closed)
    return;
  h->closed = 1;
  /* Ops waiting here (accepts, a send behind a send in the kernel) are
   * not in the kernel: they end at once. Ops in the kernel end with their
   * own completions. */
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
  if (has(h, UB_STARVED)) {
    starved_remove(w, h);
    clear_bit(h, UB_STARVED);
  }
  drop_queued(w, h);
  int fd = h->socket;
  h->socket = IO_INVALID_SOCKET;
  if (fd != IO_INVALID_SOCKET) {
    send_rec_t *rec = h->uring.staged;
    h->uring.staged = NULL;
    if (h->writable) /* a listener, in the listeners' epoll */
      epoll_ctl(w->listen_epoll, EPOLL_CTL_DEL, fd, NULL);
    if (!rec && !has(h, UB_MULTISHOT) && !has(h, UB_OP_IN_KERNEL)) {
      close(fd); /* nothing of it in the kernel */
    } else if (rec && !has(h, UB_RESET)) {
      /* The staged bytes were reported sent: they go out first, and the
       * record closes the descriptor after them. Only the receive is
       * cancelled: no send op is in the kernel beside a staged send. */
      rec->handle = NULL;
      w->orphans++;
      if (has(h, UB_MULTISHOT))
        cancel_recv(w, h);
      rec->orphan.op.handle = &w->internal;
      rec->orphan.due_ms = clock_now_ms() + ORPHAN_MS;
      if (timer_heap_insert(&w->timers, &rec->orphan) != 0)
        orphan_expired(w, rec);
    } else {
      if (rec) { /* cancelled with the rest; the ring closes the socket */
        rec->handle = NULL;
        rec->fd = -1;
        rec->reset = 1;
        w->orphans++;
      }
      cancel_all_and_close(w, fd);
    }
  }
  if (has(h, UB_MULTISHOT) && !h->recv_armed)
    await_recv_end(w, h);
  recv_maybe_ready(w, h); /* an armed receive ends cancelled */
}

static void uring_shutdown_write(io_handle_t *h) {
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return;
  if (h->uring.staged || has(h, UB_OP_IN_KERNEL)) {
    /* After the bytes before it, not before them. */
    set_bit(h, UB_SHUTDOWN);
    return;
  }
  shutdown(h->socket, SHUT_WR);
}

static void uring_reset_on_close(io_handle_t *h) {
  if (h->closed || h->socket == IO_INVALID_SOCKET)
    return;
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(h->socket, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  set_bit(h, UB_RESET);
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
    make_ready(w, op, IO_ECANCELED);
    return;
  }
  switch (op->type) {
  case IO_OP_ACCEPT:
    start_accept(w, op);
    return;
  case IO_OP_SEND:
    if (h->uring.send_error) {
      make_ready(w, op, h->uring.send_error);
    } else if (h->uring.staged || has(h, UB_OP_IN_KERNEL)) {
      op->next = NULL;
      h->pending_write = op;
    } else {
      issue_send_op(w, h, op);
    }
    return;
  case IO_OP_CONNECT: {
    struct io_uring_sqe *sqe = get_sqe(w);
    if (!sqe) {
      make_ready(w, op, -EBUSY);
      return;
    }
    const address_t *to = io_connect_op(op)->to;
    io_uring_prep_connect(sqe, h->socket, &to->u.sa, address_length(to));
    io_uring_sqe_set_data64(sqe, tagged(op, KIND_OP));
    set_bit(h, UB_OP_IN_KERNEL);
    return;
  }
  default: /* IO_OP_RECV is io_recv_start's now */
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

static void hand_over(uring_worker_t *w, void *entry, io_entry_kind_t kind) {
  int signal;
  pthread_mutex_lock(&w->mailbox_lock);
  io_fifo_push(&w->mailbox, entry, kind);
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
    hand_over(w, op, IO_ENTRY_OP);
}

static void uring_wake(io_handle_t *h) {
  uring_worker_t *w = worker_of(h);
  if (io__current_worker == &w->base)
    io_fifo_push(&w->ready, h, IO_ENTRY_WAKE);
  else
    hand_over(w, h, IO_ENTRY_WAKE);
}

/* The mailbox's eventfd is read through the ring: a blocking descriptor,
 * so the read waits in the kernel rather than failing with EAGAIN. */
static int arm_wake(uring_worker_t *w) {
  struct io_uring_sqe *sqe = get_sqe(w);
  if (!sqe)
    return -1;
  io_uring_prep_read(sqe, w->wake_fd, &w->wake_value, sizeof w->wake_value, 0);
  io_uring_sqe_set_data64(sqe, KIND_WAKE);
  return 0;
}

static void drain_mailbox(uring_worker_t *w) {
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

/* ---- completions ---- */

static void on_cqe(uring_worker_t *w, uint64_t data, int res, unsigned flags) {
  void *p = (void *)(uintptr_t)(data & ~KIND_MASK);
  switch ((int)(data & KIND_MASK)) {
  case KIND_WAKE:
    drain_mailbox(w);
    if (arm_wake(w) != 0)
      log_write(LOG_ERROR, "core", "io_uring: cannot re-arm the wake-up");
    return;
  case KIND_LISTEN:
    on_listen_cqe(w, res, flags);
    return;
  case KIND_RECV:
    on_recv_cqe(w, p, res, flags);
    return;
  case KIND_STAGED:
    on_staged_cqe(w, p, res);
    return;
  case KIND_OP:
    on_op_cqe(w, p, res);
    return;
  default: /* KIND_NONE: a cancel or a close */
    return;
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
  int is_socket_op = op->type == IO_OP_SEND || op->type == IO_OP_ACCEPT ||
                     op->type == IO_OP_CONNECT;
  if (is_socket_op && status != IO_ECANCELED && h->closed) {
    /* A result that came in before a close the owner made since: the
     * close wins, as with epoll. */
    if (op->type == IO_OP_ACCEPT && status == 0)
      close(io_accept_op(op)->socket);
    status = IO_ECANCELED;
  }
  size_t bytes = 0;
  if (op->type == IO_OP_SEND && status >= 0) {
    bytes = (size_t)status;
    status = 0;
  }
  atomic_fetch_add_explicit(&w->base.core->completions, 1,
                            memory_order_relaxed);
  op->complete(op, status, bytes);
}

/* A queued receive: the next piece, the end, or the close's
 * cancellation. The piece's hold on its buffer ends after the call. */
static void deliver_recv(uring_worker_t *w, io_handle_t *h) {
  h->recv_queued = 0;
  if (!h->recv_armed || !recv_deliverable(h))
    return;
  int status = 0;
  const uint8_t *data = w->buffers;
  size_t len = 0;
  int id = -1;
  if (h->closed) {
    status = IO_ECANCELED;
  } else if (h->uring.head != NO_PIECE) {
    /* Copied out: the table may grow (move) during the call. */
    unsigned p = h->uring.head;
    piece_t piece = w->pieces[p - 1u];
    h->uring.head = piece.next;
    if (h->uring.head == NO_PIECE)
      h->uring.tail = NO_PIECE;
    piece_release(w, p);
    id = piece.buffer;
    data = buffer_at(w, piece.buffer) + piece.off;
    len = piece.len;
  } else {
    status = h->uring.end; /* 0: the peer's FIN */
  }
  io__deliver_received(&w->base, h, status, data, len);
  if (id >= 0) { /* the bytes were valid only during the call */
    w->buffer_state[id].pieces--;
    buffer_check(w, (unsigned)id);
  }
}

static void deliver_entry(uring_worker_t *w, void *entry,
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
    io_entry_kind_t kind;
    void *entry = io_fifo_pop(&w->ready, &kind);
    if (!entry)
      break;
    deliver_entry(w, entry, kind);
  }
}

/* ---- the worker's thread ---- */

/* Registers the ring of provided buffers, consumed incrementally or whole
 * (their count and size then follow). Returns 0 or -errno. */
static int register_buffers(uring_worker_t *w, int incremental) {
  unsigned count = atomic_load(&buffer_count_override);
  w->buffer_count =
      count ? count : incremental ? BUFFER_COUNT_INC : BUFFER_COUNT_WHOLE;
  w->buffer_bytes = incremental ? BUFFER_BYTES_INC : BUFFER_BYTES_WHOLE;
  w->incremental = incremental;
  w->buf_ring_bytes = w->buffer_count * sizeof(struct io_uring_buf);
  void *ring_mem = mmap(NULL, w->buf_ring_bytes, PROT_READ | PROT_WRITE,
                        MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (ring_mem == MAP_FAILED)
    return -ENOMEM;
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (unsigned long)ring_mem;
  reg.ring_entries = w->buffer_count;
  reg.bgid = BUFFER_GROUP;
  if (incremental) {
    /* The 16 bits after bgid: "flags" in the kernel's struct, "pad" in
     * liburing 2.3's copy of it. */
    uint16_t reg_flags = IOU_PBUF_RING_INC;
    memcpy((char *)&reg + offsetof(struct io_uring_buf_reg, bgid) +
               sizeof reg.bgid,
           &reg_flags, sizeof reg_flags);
  }
  int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
  if (rc < 0) {
    munmap(ring_mem, w->buf_ring_bytes);
    return rc;
  }
  w->buf_ring = ring_mem;
  return 0;
}

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
  /* Incremental consumption where the kernel has it (6.12); before, it
   * refuses the flag with EINVAL and each receive takes a whole buffer. */
  rc = -EINVAL;
  if (!atomic_load(&whole_buffers_forced) && !whole_buffers_asked())
    rc = register_buffers(w, 1);
  if (rc == -EINVAL)
    rc = register_buffers(w, 0);
  if (rc < 0) {
    snprintf(w->start_err, sizeof w->start_err, "%s: %s",
             rc == -ENOMEM ? "no memory for the receive buffers"
                           : "cannot register the receive buffers",
             strerror(-rc));
    return rc == -EINVAL ? IO_CORE_UNSUPPORTED : -1;
  }
  log_write(LOG_DEBUG, "core",
            "io_uring worker %d: receive buffers %s (%u x %u KiB)",
            w->base.index,
            w->incremental ? "consumed incrementally"
            : whole_buffers_asked()
                ? "consumed whole (IOCPHOST_URING_WHOLE_BUFFERS=1)"
                : "consumed whole (the kernel predates 6.12)",
            w->buffer_count, w->buffer_bytes / 1024);
  w->buffers = malloc((size_t)w->buffer_count * w->buffer_bytes);
  w->buffer_state = calloc(w->buffer_count, sizeof *w->buffer_state);
  if (!w->buffers || !w->buffer_state) {
    snprintf(w->start_err, sizeof w->start_err, "out of memory");
    return -1;
  }
  io_uring_buf_ring_init(w->buf_ring);
  int mask = io_uring_buf_ring_mask(w->buffer_count);
  for (unsigned k = 0; k < w->buffer_count; k++)
    io_uring_buf_ring_add(w->buf_ring, buffer_at(w, k), w->buffer_bytes,
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
 * be queued for the kernel, and staged bytes of closed sockets may still
 * wait for a slow peer: those are cancelled now. */
static void worker_drain(uring_worker_t *w) {
  for (uint32_t k = 0; k < w->timers.count; k++) {
    io_timer_t *t = w->timers.items[k];
    if (t->op.handle == &w->internal)
      orphan_expired(w, container_of(t, send_rec_t, orphan));
  }
  io_uring_submit(&w->ring); /* the queued closes, whatever follows */
  uint64_t deadline = clock_now_ms() + STOP_DRAIN_MS;
  while (w->orphans > 0 && clock_now_ms() < deadline) {
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
    reap(w);
    io_entry_kind_t kind;
    while (io_fifo_pop(&w->ready, &kind))
      ; /* nothing is owed to anyone any more */
  }
  io_uring_submit(&w->ring);
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
  free(w->buffer_state);
  free(w->pieces);
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

static int uring_core_create(int threads, const io_handle_events_t *events,
                             io_core_t **out, char *err, size_t err_len) {
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
  core->base.events = events;
  int started = 0, rc = 0;
  for (int i = 0; i < threads && rc == 0; i++) {
    uring_worker_t *w = &core->workers[i];
    w->base.ops = &io__uring_ops;
    w->base.core = &core->base;
    w->base.index = i;
    w->internal.worker = &w->base;
    w->internal.socket = IO_INVALID_SOCKET;
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
  (void)h; /* nothing to register: requests name the handle themselves */
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
    .recv_start = uring_recv_start,
    .wake = uring_wake,
};
