/*
 * The contract every platform backend fulfils (epoll and io_uring on Linux,
 * IOCP on Windows): a proactor. The engine issues an operation on a handle and later receives
 * its completion, with a status (0 or a negative errno-style code) and a
 * byte count. The operation record (io_op_t) embeds what the OS needs (the
 * OVERLAPPED on Windows) and the completion recovers the op from it; the
 * owner is found from the op with container_of, never from a lookup table.
 *
 * Rules both backends keep:
 *  - Every issued op completes exactly once, through op->complete, also when
 *    it failed at once or was cancelled (status IO_ECANCELED). Completions
 *    are never delivered from inside io_submit: a caller never handles the
 *    same result in two places, and never re-enters itself.
 *  - Every completion of ops on one handle is delivered on that handle's
 *    worker, one at a time. This is what gives a session its serial order
 *    (SPEC section 3) without a lock on the hot path.
 *  - io_submit, io_post and io_timer_start may be called from any thread;
 *    io_handle_close, io_timer_cancel and io_handle_shutdown_write only on
 *    the handle's worker (from inside a completion).
 *  - Receives read into a per-worker buffer that is valid only during the
 *    completion (IOCP: zero-byte WSARecv, then a non-blocking read into the
 *    same per-thread buffer). An idle session costs no receive buffer.
 *
 * A session's receive and its wake-up (the engine's "kick") are not op
 * records but bits of its handle (io_recv_start, io_wake), reported to the
 * core's io_handle_events_t: an idle session's bytes are counted (issue 18),
 * and the two records cost it 72 bytes. Everything else is an op.
 */
#ifndef IOCPHOST_BACKEND_H
#define IOCPHOST_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "engine/address.h"

#ifdef _WIN32
#include <winsock2.h>
typedef SOCKET io_socket_t;
#define IO_INVALID_SOCKET INVALID_SOCKET
typedef WSABUF io_buf_t; /* ULONG len; CHAR *buf */
#else
#include <sys/socket.h>
#include <sys/uio.h>
typedef int io_socket_t;
#define IO_INVALID_SOCKET (-1)
typedef struct iovec io_buf_t;
#endif

/* Linux: an accepted socket inherits TCP_NODELAY from its listener, so
 * setting it once on the listener saves a system call per connection.
 * Windows (AcceptEx) promises no such thing. */
#ifdef _WIN32
#define IO_ACCEPT_INHERITS_NODELAY 0
#else
#define IO_ACCEPT_INHERITS_NODELAY 1
#endif

/* Status codes besides 0 and -errno. */
#define IO_ECANCELED (-125)

#ifndef container_of
#define container_of(ptr, type, member)                                        \
  ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

typedef struct io_core io_core_t;
typedef struct io_worker io_worker_t;
typedef struct io_op io_op_t;
typedef struct io_handle io_handle_t;

typedef enum io_op_type {
  IO_OP_ACCEPT = 1,
  IO_OP_CONNECT,
  IO_OP_RECV,
  IO_OP_SEND,
  IO_OP_POST,
  IO_OP_TIMER,
  IO_OP_STOP /* backend-internal: ends a worker */
} io_op_type_t;

typedef void (*io_complete_fn)(io_op_t *op, int status, size_t bytes);

/* What every op is: a post or a timer is this alone; a socket op embeds it
 * first in the record of its type below, which carries its arguments, so
 * each record is as large as its own type needs (an idle session's ops are
 * counted, issue 18). The backend finds the record from the op by its
 * type (io_recv_op and the like). */
struct io_op {
#ifdef _WIN32
  OVERLAPPED overlapped;
#endif
  io_complete_fn complete;
  union {
    io_op_t *next;  /* backend lists of ops */
    uintptr_t link; /* Linux: a worker's delivery queue (dispatch.h) */
  };
  io_handle_t *handle; /* issued on; routes the op to its worker */
  int status;          /* result, or for IO_OP_POST the status to deliver */
  uint8_t type;        /* io_op_type_t */
};

typedef struct io_recv_op {
  io_op_t op;
  uint8_t *data; /* out: the bytes, valid during the completion */
} io_recv_op_t;

typedef struct io_send_op {
  io_op_t op;
  io_buf_t *bufs;
  int count;
#ifndef _WIN32
  struct msghdr msg; /* io_uring: the sendmsg the kernel reads (backend's) */
#endif
} io_send_op_t;

typedef struct io_accept_op {
  io_op_t op;
  io_socket_t socket; /* out: the accepted socket */
  address_t *peer;    /* out: the peer's address */
#ifdef _WIN32
  void *addresses; /* AcceptEx's address block, owned by the backend */
#endif
} io_accept_op_t;

typedef struct io_connect_op {
  io_op_t op;
  const address_t *to;
} io_connect_op_t;

static inline io_recv_op_t *io_recv_op(io_op_t *op) {
  return container_of(op, io_recv_op_t, op);
}
static inline io_send_op_t *io_send_op(io_op_t *op) {
  return container_of(op, io_send_op_t, op);
}
static inline io_accept_op_t *io_accept_op(io_op_t *op) {
  return container_of(op, io_accept_op_t, op);
}
static inline io_connect_op_t *io_connect_op(io_op_t *op) {
  return container_of(op, io_connect_op_t, op);
}

/* A socket (or, with IO_INVALID_SOCKET, just a place in a worker's serial
 * order for timers and posts). Embedded in its owner. The "worker" is the
 * serial order the handle's completions run in: a thread with epoll, a
 * strand that any of the core's threads may run with IOCP. */
#ifndef _WIN32
#endif

struct io_handle {
  io_socket_t socket;
#ifdef _WIN32
  uint8_t closed;
  int family;
  io_worker_t *worker;
  /* io_recv_start and io_wake are ops here: the zero-byte WSARecv needs
   * its OVERLAPPED, and a strand runs ops (the records live in the handle,
   * so neither ever needs memory). */
  io_recv_op_t recv_op;
  io_op_t wake_op;
#else
  /* Touched on the handle's worker only, so bits will do: the socket, the
   * flags fill 8 bytes (a handle is in every session). */
  uint32_t closed : 1;
  /* epoll: readiness; io_uring: its own flags (see io_uring.c). */
  uint32_t readable : 1;
  uint32_t writable : 1;
  uint32_t hangup : 1; /* the peer closed or failed: reads won't block */
  uint32_t recv_armed : 1;  /* io_recv_start: a receive is awaited */
  uint32_t recv_queued : 1; /* in the worker's delivery queue for it */
  /* io_uring's own (io_uring.c). */
  uint32_t backend_bits : 24;
  io_worker_t *worker;
  /* Links in the worker's delivery queue (dispatch.h): to be woken, and
   * to have its receive delivered. */
  uintptr_t wake_link;
  uintptr_t recv_link;
  io_op_t *pending_read;  /* accept ops waiting for readiness */
  io_op_t *pending_write; /* send or connect op waiting for readiness */
  /* io_uring's per-socket state (io_uring.c); epoll leaves it alone. All
   * zero (as io_handle_open leaves it) is an idle socket. */
  struct {
    void *staged;        /* the staged send in the kernel, or NULL */
    uint16_t head, tail; /* received pieces waiting: piece index + 1, 0 none */
    int16_t end;         /* the receive side's end (-errno, 0 the FIN) */
    int16_t send_error;  /* a failed send's -errno: the next ones fail */
  } uring;
#endif
};

#if !defined(_WIN32) && defined(__x86_64__)
/* A handle is in every session, idle ones included (issue 18's budget). */
_Static_assert(sizeof(io_handle_t) == 64, "io_handle_t must stay 64 bytes");
#endif

typedef struct io_timer {
  io_op_t op; /* completes with 0 when due, IO_ECANCELED when cancelled */
  uint64_t due_ms;
  uint32_t heap_index; /* UINT32_MAX when not armed */
} io_timer_t;

/* Which backend a core runs on. Linux has two in one binary (a table of
 * functions per core picks them, see engine/unix/dispatch.h); Windows has
 * IOCP only. */
typedef enum io_backend {
  IO_BACKEND_DEFAULT = 0, /* the platform's: epoll on Linux, IOCP on Windows */
  IO_BACKEND_EPOLL,
  IO_BACKEND_IO_URING,
  IO_BACKEND_IOCP
} io_backend_t;

/* io_core_create's result when the kernel lacks the backend asked for (an
 * io_uring refused with ENOSYS or EPERM): the caller may fall back. */
#define IO_CORE_UNSUPPORTED (-2)

/* What a handle's receive and wake-up report to: one table per core,
 * since every handle that uses them is a session (a pointer per handle
 * would cost every idle session 8 bytes). */
typedef struct io_handle_events {
  /* The receive io_recv_start armed has a result: status 0 with len bytes
   * at data (valid during the call only; len 0 is the peer's FIN), or a
   * negative code (IO_ECANCELED once the handle is closed). The receive is
   * disarmed: io_recv_start asks for the next. */
  void (*received)(io_handle_t *h, int status, const uint8_t *data,
                   size_t len);
  /* io_wake's call, in the handle's serial order. */
  void (*woken)(io_handle_t *h);
} io_handle_events_t;

/* Cores: threads workers (>= 1), each its own thread. events may be NULL
 * for a core whose handles never call io_recv_start or io_wake. Returns 0,
 * -1 with a reason in err, or IO_CORE_UNSUPPORTED (with the reason too). */
int io_core_create(int threads, io_backend_t backend,
                   const io_handle_events_t *events, io_core_t **out,
                   char *err, size_t err_len);
/* The backend the core runs on (never IO_BACKEND_DEFAULT). */
io_backend_t io_core_backend(const io_core_t *core);
/* Ends the workers. Every handle must be closed and every op completed. */
void io_core_destroy(io_core_t *core);
int io_core_thread_count(const io_core_t *core);
uint64_t io_core_completions(const io_core_t *core);

/* Binds a handle to a worker: hint < 0 picks round-robin, otherwise the
 * worker hint % thread count. With a socket, registers it for readiness
 * (the socket must already be non-blocking). Returns 0 or -errno. */
int io_handle_open(io_core_t *core, io_handle_t *h, io_socket_t socket,
                   int hint);
/* Index of the handle's worker, to bind a companion handle to it. */
int io_handle_worker_index(const io_handle_t *h);
/* True when called on the handle's worker thread. */
int io_handle_on_worker(const io_handle_t *h);
/* Closes the socket and completes its pending ops with IO_ECANCELED. */
void io_handle_close(io_handle_t *h);
/* Writes at once, without an op: the handle's worker only, with no send op
 * in flight. Returns the bytes the socket took (maybe fewer than offered),
 * -EAGAIN when it takes nothing now (issue an IO_OP_SEND for the rest), or
 * another negative code. The buffers are not used after it returns. */
int io_send_now(io_handle_t *h, const io_buf_t *bufs, int count);
/* Sends FIN after what was written; reading goes on. */
void io_handle_shutdown_write(io_handle_t *h);
/* Makes the coming io_handle_close reset the connection (RST, SO_LINGER 0)
 * instead of ending it with FIN: for a close that threw accepted bytes
 * away, so the peer sees a cut stream, not a complete one. Worker only. */
void io_handle_reset_on_close(io_handle_t *h);

/* Issues op (type and arguments set, complete set) on op->handle. */
void io_submit(io_op_t *op);
/* Delivers op's completion with status in h's serial order. */
void io_post(io_handle_t *h, io_op_t *op, int status);

/* Arms the handle's receive: events->received follows once, in its serial
 * order, with the next bytes (or the FIN, an error, or IO_ECANCELED when
 * the handle is closed meanwhile). The handle's worker only, with no
 * receive armed. */
void io_recv_start(io_handle_t *h);
/* Runs events->woken once in h's serial order, also after a close; in
 * order with io_post calls made by the same thread. From any thread; the
 * caller keeps at most one wake pending per handle. Never fails and never
 * needs memory: a close asked from another thread always gets through. */
void io_wake(io_handle_t *h);

/* Arms a timer on h's worker: completes after delay_ms. */
void io_timer_init(io_timer_t *t, io_handle_t *h, io_complete_fn complete);
void io_timer_start(io_timer_t *t, uint64_t delay_ms);
/* If still armed, completes it with IO_ECANCELED; otherwise nothing. */
void io_timer_cancel(io_timer_t *t);

/* Tests only (IOCP): the next count strand wake-ups fail as a failing
 * PostQueuedCompletionStatus would, to prove such a strand still runs. */
#ifdef _WIN32
void io__fail_next_wakeups(int count);
#else
/* Tests only (io_uring): cores created afterwards get count receive
 * buffers per worker (a power of two; 0 restores the default), to prove
 * what a session does when the provided buffers run out. */
void io__uring_buffer_count(unsigned count);
/* Tests only (io_uring): cores created afterwards use whole provided
 * buffers, as on kernels before 6.12, even where the kernel could consume
 * them incrementally (on = 1; 0 restores the default). */
void io__uring_whole_buffers(int on);
#endif

/* Sockets. */
io_socket_t io_socket_tcp(int family); /* non-blocking, close-on-exec */
void io_socket_close(io_socket_t s);
/* Binds and listens; returns 0 or -errno. */
int io_socket_listen(io_socket_t s, const address_t *addr, int backlog);
void io_socket_set_nodelay(io_socket_t s, int on);
/* Text of a status code, for logs. */
const char *io_strerror(int status);

#endif /* IOCPHOST_BACKEND_H */
