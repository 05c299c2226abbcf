/*
 * Windows backend: a proactor on an I/O completion port.
 *
 * One completion port per core, drained by the core's threads with
 * GetQueuedCompletionStatusEx. Each I/O completion carries its OVERLAPPED,
 * which is the first member of the op (io_op_t): the op, and through it the
 * handle and its owner, are recovered with container_of. Completion keys
 * only say what kind of packet it is (an I/O result, a strand's wake-up, a
 * timer wake-up, a stop); they never point at an object.
 *
 * Serial order: the engine needs each session's completions one at a time
 * (SPEC section 3). IOCP hands completions to whichever thread asks, so each
 * handle belongs to one of the core's "workers", here a strand: a queue of
 * ops any thread may run, but only one at a time. There are as many strands
 * as threads, and handles are spread over them round-robin, so the engine
 * sees the same serial contexts as with the epoll backend.
 *
 * One result path: whatever the backend delivers itself (an op that failed
 * at once, a posted function, a due or cancelled timer) is appended to its
 * strand's queue when it happens, so posts keep their order, and a wake-up
 * packet (the strand's own OVERLAPPED) makes a thread run the queue; I/O
 * completions join the same queue when a thread dequeues them. Successes
 * that complete at once still queue a completion
 * (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is not set), so nothing is ever
 * delivered from inside io_submit.
 *
 * Receives are zero-byte WSARecv calls: an idle session pins no buffer. When
 * one completes, the strand reads what is there, non-blocking, into its
 * thread's buffer, right before the completion runs.
 *
 * Tested under Wine (scripts/test.sh windows), whose differences are handled
 * where they show: an accept whose connection was reset fails with
 * WSAENOTCONN there (ERROR_NETNAME_DELETED on Windows).
 */
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0602
#endif
#include "engine/backend.h"

#include <errno.h>
#include <mswsock.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>
#include <winsock2.h>
#include <ws2tcpip.h>
/* address.h drops windows.h's 16-bit "far" and "near"; mmsystem.h, which
 * timeapi.h includes, still spells them. */
#define far
#define near
#include <timeapi.h>
#undef far
#undef near

#include "engine/log.h"
#include "engine/timer_heap.h"

#define RECV_BUFFER_BYTES (64 * 1024)
#define ENTRIES_PER_WAIT 64
#define ACCEPT_ADDRESS_BYTES (sizeof(struct sockaddr_in6) + 16)

/* Ops a thread runs from one strand before it gives other strands a turn. */
#define OPS_PER_STRAND_TURN 256

enum completion_key {
  KEY_IO = 0,     /* a socket's I/O completed: the OVERLAPPED is an op's */
  KEY_STRAND = 1, /* a strand has queued ops: the OVERLAPPED is its wake */
  KEY_WAKE = 2,   /* a timer became due earlier: recompute the wait */
  KEY_STOP = 3    /* a thread ends */
};

struct io_worker { /* a strand */
  io_core_t *core;
  int index;
  SRWLOCK lock;
  io_op_t *head, *tail; /* ops to run, in order */
  int running;          /* a thread is running the strand's ops */
  int scheduled;        /* a wake-up for it is in the port (or orphaned) */
  OVERLAPPED wake;      /* the wake-up's packet (KEY_STRAND) */
  io_worker_t *orphan_next; /* on the core's orphans list */
};

struct io_core {
  const io_handle_events_t *events; /* io_recv_start's and io_wake's */
  HANDLE port;
  int thread_count;
  HANDLE *threads;
  io_worker_t *strands;
  atomic_uint next_strand;
  atomic_uint_fast64_t completions;
  SRWLOCK timer_lock;  /* the core's timers are shared by its threads */
  timer_heap_t timers;
  LPFN_ACCEPTEX accept_ex;
  LPFN_GETACCEPTEXSOCKADDRS get_accept_addresses;
  LPFN_CONNECTEX connect_ex;
  int timer_period_set; /* timeBeginPeriod(1) to undo */
  /* Strands whose wake-up could not be posted (see wake_strand). */
  SRWLOCK orphan_lock;
  io_worker_t *orphans;
  atomic_int has_orphans;
  uint64_t wake_log_last_ms, wake_log_suppressed;
};

/* The longest a thread waits without looking at the orphans list: the
 * bound on how late a strand whose wake-up failed runs. */
#define ORPHAN_CHECK_MS 1000
static _Thread_local io_worker_t *current_strand;
static _Thread_local uint8_t *thread_buffer;

/* ---- errors ---- */

static int map_error(DWORD err) {
  switch (err) {
  case 0:
    return 0;
  case ERROR_OPERATION_ABORTED:
  case WSAEINTR:
    return IO_ECANCELED;
  case ERROR_NETNAME_DELETED:
  case WSAECONNRESET:
  case WSAENETRESET:
    return -ECONNRESET;
  case ERROR_CONNECTION_ABORTED:
  case WSAECONNABORTED:
    return -ECONNABORTED;
  case ERROR_CONNECTION_REFUSED:
  case WSAECONNREFUSED:
    return -ECONNREFUSED;
  case ERROR_SEM_TIMEOUT:
  case WSAETIMEDOUT:
    return -ETIMEDOUT;
  case ERROR_NETWORK_UNREACHABLE:
  case WSAENETUNREACH:
    return -ENETUNREACH;
  case ERROR_HOST_UNREACHABLE:
  case WSAEHOSTUNREACH:
    return -EHOSTUNREACH;
  case WSAEMFILE:
    return -EMFILE;
  case WSAENOBUFS:
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_NO_SYSTEM_RESOURCES:
    return -ENOBUFS;
  case WSAEADDRINUSE:
    return -EADDRINUSE;
  case WSAEADDRNOTAVAIL:
    return -EADDRNOTAVAIL;
  case WSAEACCES:
    return -EACCES;
  case WSAEINVAL:
    return -EINVAL;
  case WSAENOTCONN:
  case WSAESHUTDOWN:
    return -ENOTCONN;
  default:
    return -EIO;
  }
}

const char *io_strerror(int status) {
  switch (status) {
  case IO_ECANCELED:
    return "operation cancelled";
  case -ECONNRESET:
    return "Connection reset by peer";
  case -ECONNABORTED:
    return "Software caused connection abort";
  case -ECONNREFUSED:
    return "Connection refused";
  case -ETIMEDOUT:
    return "Connection timed out";
  case -ENETUNREACH:
    return "Network is unreachable";
  case -EHOSTUNREACH:
    return "No route to host";
  case -EMFILE:
    return "Too many open sockets";
  case -ENOBUFS:
    return "No buffer space available";
  case -EADDRINUSE:
    return "Address already in use";
  case -EADDRNOTAVAIL:
    return "Cannot assign requested address";
  case -ENOTCONN:
    return "Socket is not connected";
  default:
    return strerror(status < 0 ? -status : status);
  }
}

/* ---- strands ---- */

static void complete_op(io_op_t *op);

static atomic_int failing_wakes; /* io__fail_next_wakeups, for tests */

void io__fail_next_wakeups(int count) { atomic_store(&failing_wakes, count); }

static int injected_wake_failure(void) {
  int n = atomic_load_explicit(&failing_wakes, memory_order_relaxed);
  while (n > 0 && !atomic_compare_exchange_weak(&failing_wakes, &n, n - 1))
    ;
  return n > 0;
}

/* Posts a strand's wake-up (it is marked scheduled). PostQueuedCompletion-
 * Status can fail (non-paged pool exhausted): the strand would then stay
 * scheduled with no packet in the port and never run again. It goes on the
 * core's orphans list instead, which every thread drains after each wait;
 * no wait lasts longer than ORPHAN_CHECK_MS, so a strand is late, never
 * lost. */
static void wake_strand(io_core_t *c, io_worker_t *strand) {
  int injected = injected_wake_failure();
  if (!injected &&
      PostQueuedCompletionStatus(c->port, 0, KEY_STRAND, &strand->wake))
    return;
  DWORD error = injected ? ERROR_NO_SYSTEM_RESOURCES : GetLastError();
  AcquireSRWLockExclusive(&c->orphan_lock);
  strand->orphan_next = c->orphans;
  c->orphans = strand;
  atomic_store(&c->has_orphans, 1);
  int log = log_ratelimit(&c->wake_log_last_ms, &c->wake_log_suppressed);
  ReleaseSRWLockExclusive(&c->orphan_lock);
  if (log)
    log_write(LOG_ERROR, "core",
              "PostQueuedCompletionStatus failed (%lu): the strand runs at "
              "the next wake-up of a thread instead (within %d ms)",
              (unsigned long)error, ORPHAN_CHECK_MS);
}

static void strand_run(io_worker_t *strand);

static void run_orphans(io_core_t *c) {
  if (!atomic_load(&c->has_orphans))
    return;
  AcquireSRWLockExclusive(&c->orphan_lock);
  io_worker_t *list = c->orphans;
  c->orphans = NULL;
  atomic_store(&c->has_orphans, 0);
  ReleaseSRWLockExclusive(&c->orphan_lock);
  while (list) {
    io_worker_t *next = list->orphan_next;
    AcquireSRWLockExclusive(&list->lock);
    list->scheduled = 0;
    ReleaseSRWLockExclusive(&list->lock);
    strand_run(list);
    list = next;
  }
}

/* Runs the strand's queued ops on this thread, unless another thread is
 * running it already (which then runs ours too). After a budget it hands the
 * rest back to the port, so one busy strand cannot keep a thread from the
 * others. */
static void strand_run(io_worker_t *strand) {
  AcquireSRWLockExclusive(&strand->lock);
  if (strand->running || !strand->head) {
    ReleaseSRWLockExclusive(&strand->lock);
    return;
  }
  strand->running = 1;
  ReleaseSRWLockExclusive(&strand->lock);
  current_strand = strand;
  int budget = OPS_PER_STRAND_TURN;
  for (;;) {
    AcquireSRWLockExclusive(&strand->lock);
    io_op_t *op = strand->head;
    if (!op || budget-- == 0) {
      strand->running = 0;
      int reschedule = op && !strand->scheduled;
      if (reschedule)
        strand->scheduled = 1;
      ReleaseSRWLockExclusive(&strand->lock);
      if (reschedule)
        wake_strand(strand->core, strand);
      break;
    }
    strand->head = op->next;
    if (!strand->head)
      strand->tail = NULL;
    ReleaseSRWLockExclusive(&strand->lock);
    complete_op(op);
  }
  current_strand = NULL;
}

/* Appends op to its strand's queue. The order ops are appended in is the
 * order they run in: posts from one thread to one handle keep their order,
 * which a shared completion port alone would not give (two threads dequeue
 * two packets and race to deliver them). Returns 1 when the strand was idle
 * with nothing scheduled: with schedule set it is now marked scheduled and
 * the caller posts its wake-up; otherwise the caller runs it. */
static int strand_append(io_worker_t *strand, io_op_t *op, int schedule) {
  op->next = NULL;
  AcquireSRWLockExclusive(&strand->lock);
  if (strand->tail)
    strand->tail->next = op;
  else
    strand->head = op;
  strand->tail = op;
  int idle = !strand->running && !strand->scheduled;
  if (idle && schedule)
    strand->scheduled = 1;
  ReleaseSRWLockExclusive(&strand->lock);
  return idle;
}

/* Delivers a result the backend produced itself (a failure at issue time,
 * a cancelled or due timer, a posted function): queued on the strand now, in
 * order, and run by a worker thread, never inside the caller. */
static void post_result(io_core_t *core, io_op_t *op, int status) {
  op->status = status;
  io_worker_t *strand = op->handle->worker;
  if (strand_append(strand, op, 1))
    wake_strand(core, strand);
}

static io_core_t *core_of(const io_handle_t *h) { return h->worker->core; }

/* ---- timers: one heap per core, under a lock ---- */

static void timer_arm(io_timer_t *t) {
  io_core_t *c = core_of(t->op.handle);
  AcquireSRWLockExclusive(&c->timer_lock);
  if (timer_heap_insert(&c->timers, t) != 0) {
    ReleaseSRWLockExclusive(&c->timer_lock);
    post_result(c, &t->op, -ENOMEM);
    return;
  }
  int earliest = t->heap_index == 0;
  ReleaseSRWLockExclusive(&c->timer_lock);
  /* Threads may be sleeping with a longer timeout: wake one. */
  if (earliest)
    PostQueuedCompletionStatus(c->port, 0, KEY_WAKE, NULL);
}

static void expire_timers(io_core_t *c) {
  uint64_t now = clock_now_ms();
  AcquireSRWLockExclusive(&c->timer_lock);
  io_timer_t *t;
  while ((t = timer_heap_first(&c->timers)) != NULL && t->due_ms <= now) {
    timer_heap_remove(&c->timers, t);
    post_result(c, &t->op, 0);
  }
  ReleaseSRWLockExclusive(&c->timer_lock);
}

static DWORD wait_timeout(io_core_t *c) {
  if (atomic_load(&c->has_orphans))
    return 0;
  DWORD wait = ORPHAN_CHECK_MS;
  AcquireSRWLockShared(&c->timer_lock);
  io_timer_t *first = timer_heap_first(&c->timers);
  if (first) {
    uint64_t now = clock_now_ms();
    uint64_t due = first->due_ms;
    wait = due <= now ? 0
                      : (DWORD)(due - now > ORPHAN_CHECK_MS ? ORPHAN_CHECK_MS
                                                            : due - now);
  }
  ReleaseSRWLockShared(&c->timer_lock);
  return wait;
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
  timer_arm(t);
}

void io_timer_cancel(io_timer_t *t) {
  io_core_t *c = core_of(t->op.handle);
  AcquireSRWLockExclusive(&c->timer_lock);
  int armed = t->heap_index != UINT32_MAX;
  if (armed)
    timer_heap_remove(&c->timers, t);
  ReleaseSRWLockExclusive(&c->timer_lock);
  if (armed)
    post_result(c, &t->op, IO_ECANCELED);
}

/* ---- issuing ops ---- */

static int issue_zero_byte_recv(io_op_t *op) {
  io_handle_t *h = op->handle;
  WSABUF none = {0, NULL};
  DWORD flags = 0;
  memset(&op->overlapped, 0, sizeof op->overlapped);
  if (WSARecv(h->socket, &none, 1, NULL, &flags, &op->overlapped, NULL) == 0)
    return 0;
  int err = WSAGetLastError();
  return err == WSA_IO_PENDING ? 0 : map_error((DWORD)err);
}

static int issue_accept(io_op_t *op) {
  io_handle_t *h = op->handle;
  io_core_t *c = core_of(h);
  SOCKET s = WSASocketW(h->family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET)
    return map_error((DWORD)WSAGetLastError());
  if (!io_accept_op(op)->addresses)
    io_accept_op(op)->addresses = malloc(2 * ACCEPT_ADDRESS_BYTES);
  if (!io_accept_op(op)->addresses) {
    closesocket(s);
    return -ENOMEM;
  }
  io_accept_op(op)->socket = s;
  DWORD received = 0;
  memset(&op->overlapped, 0, sizeof op->overlapped);
  /* Zero receive bytes: the accept completes at connect, not at the first
   * data, so a silent peer cannot hold an accept. */
  if (c->accept_ex(h->socket, s, io_accept_op(op)->addresses, 0,
                   ACCEPT_ADDRESS_BYTES, ACCEPT_ADDRESS_BYTES, &received,
                   &op->overlapped))
    return 0;
  int err = WSAGetLastError();
  if (err == ERROR_IO_PENDING)
    return 0;
  closesocket(s);
  io_accept_op(op)->socket = INVALID_SOCKET;
  return map_error((DWORD)err);
}

static int issue_connect(io_op_t *op) {
  io_handle_t *h = op->handle;
  io_core_t *c = core_of(h);
  const address_t *to = io_connect_op(op)->to;
  /* ConnectEx needs a bound socket. */
  address_t any;
  memset(&any, 0, sizeof any);
  any.u.sa.sa_family = (ADDRESS_FAMILY)address_family(to);
  if (bind(h->socket, &any.u.sa, address_length(to)) != 0)
    return map_error((DWORD)WSAGetLastError());
  memset(&op->overlapped, 0, sizeof op->overlapped);
  if (c->connect_ex(h->socket, &to->u.sa, (int)address_length(to), NULL, 0,
                    NULL, &op->overlapped))
    return 0;
  int err = WSAGetLastError();
  return err == ERROR_IO_PENDING ? 0 : map_error((DWORD)err);
}

static int issue_send(io_op_t *op) {
  io_handle_t *h = op->handle;
  memset(&op->overlapped, 0, sizeof op->overlapped);
  if (WSASend(h->socket, io_send_op(op)->bufs, (DWORD)io_send_op(op)->count, NULL, 0,
              &op->overlapped, NULL) == 0)
    return 0;
  int err = WSAGetLastError();
  return err == WSA_IO_PENDING ? 0 : map_error((DWORD)err);
}

void io_submit(io_op_t *op) {
  io_handle_t *h = op->handle;
  io_core_t *c = core_of(h);
  int rc;
  if (op->type == IO_OP_POST) {
    post_result(c, op, op->status);
    return;
  }
  if (op->type == IO_OP_TIMER) {
    timer_arm(container_of(op, io_timer_t, op));
    return;
  }
  if (h->closed || h->socket == INVALID_SOCKET) {
    post_result(c, op, IO_ECANCELED);
    return;
  }
  op->status = 0;
  switch (op->type) {
  case IO_OP_RECV:
    rc = issue_zero_byte_recv(op);
    break;
  case IO_OP_SEND:
    rc = issue_send(op);
    break;
  case IO_OP_ACCEPT:
    rc = issue_accept(op);
    break;
  case IO_OP_CONNECT:
    rc = issue_connect(op);
    break;
  default:
    rc = -EINVAL;
    break;
  }
  if (rc != 0)
    post_result(c, op, rc);
}

void io_post(io_handle_t *h, io_op_t *op, int status) {
  op->type = IO_OP_POST;
  op->handle = h;
  post_result(core_of(h), op, status);
}

/* ---- completing ops, inside their strand ---- */

/* The result of an I/O completion, read from its OVERLAPPED. */
static int io_result(io_op_t *op, DWORD *bytes) {
  DWORD flags = 0;
  if (WSAGetOverlappedResult(op->handle->socket, &op->overlapped, bytes, FALSE,
                             &flags))
    return 0;
  int err = WSAGetLastError();
  /* The socket may be closed already: fall back on the NTSTATUS. */
  if (err == WSAENOTSOCK)
    return op->overlapped.Internal == 0 ? 0 : IO_ECANCELED;
  return map_error((DWORD)err);
}

static void complete_op(io_op_t *op) {
  io_handle_t *h = op->handle;
  io_core_t *c = core_of(h);
  int status = op->status;
  DWORD bytes = 0;
  if (op->status == INT32_MIN) { /* an I/O completion: read its result */
    status = h->closed ? IO_ECANCELED : io_result(op, &bytes);
    if (status != 0 && h->closed)
      status = IO_ECANCELED;
  }
  size_t delivered = bytes;
  switch (op->type) {
  case IO_OP_RECV:
    if (status == 0) {
      if (h->closed) {
        status = IO_ECANCELED;
        break;
      }
      int n = recv(h->socket, (char *)thread_buffer, RECV_BUFFER_BYTES, 0);
      if (n >= 0) {
        io_recv_op(op)->data = thread_buffer;
        delivered = (size_t)n;
      } else {
        int err = WSAGetLastError();
        if (err == WSAEWOULDBLOCK) {
          /* Spurious: nothing to read after all; wait again. */
          int rc = issue_zero_byte_recv(op);
          if (rc == 0)
            return;
          status = rc;
        } else {
          status = map_error((DWORD)err);
        }
      }
    }
    break;
  case IO_OP_ACCEPT:
    if (status == 0) {
      SOCKET listen_socket = h->socket;
      setsockopt(io_accept_op(op)->socket, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                 (const char *)&listen_socket, sizeof listen_socket);
      struct sockaddr *local = NULL, *remote = NULL;
      int local_len = 0, remote_len = 0;
      c->get_accept_addresses(io_accept_op(op)->addresses, 0, ACCEPT_ADDRESS_BYTES,
                              ACCEPT_ADDRESS_BYTES, &local, &local_len,
                              &remote, &remote_len);
      if (io_accept_op(op)->peer && remote)
        address_from_sockaddr(io_accept_op(op)->peer, remote, remote_len);
      u_long nonblocking = 1;
      ioctlsocket(io_accept_op(op)->socket, FIONBIO, &nonblocking);
    } else {
      if (io_accept_op(op)->socket != INVALID_SOCKET) {
        closesocket(io_accept_op(op)->socket);
        io_accept_op(op)->socket = INVALID_SOCKET;
      }
      /* A connection that went away before it was accepted fails only that
       * accept: Windows says ERROR_NETNAME_DELETED, Wine WSAENOTCONN. The
       * listener must retry at once, not back off as for exhaustion. */
      if (status == -ECONNRESET || status == -ENOTCONN ||
          status == -ETIMEDOUT || status == -ENETUNREACH ||
          status == -EHOSTUNREACH)
        status = -ECONNABORTED;
    }
    free(io_accept_op(op)->addresses);
    io_accept_op(op)->addresses = NULL;
    break;
  case IO_OP_CONNECT:
    if (status == 0)
      setsockopt(h->socket, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0);
    break;
  default:
    break;
  }
  /* Cancelled, but not by the engine (CancelIoEx from elsewhere, a
   * thread's exit, WSAEINTR when the op was issued, re-issued or read): the
   * handle is still open, so this is a failure of the operation, never the
   * "closed" the engine reads IO_ECANCELED as (a receive would stop for
   * good, an accept slot would be lost, a send queue would stick). Timers
   * and posts are cancelled on open handles by design, and a handle with
   * no socket (the tests' stubbed sessions) has no operation to fail. */
  if (status == IO_ECANCELED && !h->closed && h->socket != INVALID_SOCKET &&
      op->type != IO_OP_TIMER && op->type != IO_OP_POST)
    status = -EIO;
  atomic_fetch_add_explicit(&c->completions, 1, memory_order_relaxed);
  op->complete(op, status, status == 0 ? delivered : 0);
}

static DWORD WINAPI thread_main(void *arg) {
  io_core_t *c = arg;
  OVERLAPPED_ENTRY entries[ENTRIES_PER_WAIT];
  thread_buffer = malloc(RECV_BUFFER_BYTES);
  for (;;) {
    ULONG count = 0;
    BOOL ok = GetQueuedCompletionStatusEx(c->port, entries, ENTRIES_PER_WAIT,
                                          &count, wait_timeout(c), FALSE);
    expire_timers(c);
    run_orphans(c);
    if (!ok)
      continue; /* timeout */
    int stops = 0;
    for (ULONG i = 0; i < count; i++) {
      OVERLAPPED_ENTRY *e = &entries[i];
      switch (e->lpCompletionKey) {
      case KEY_IO: {
        io_op_t *op = container_of(e->lpOverlapped, io_op_t, overlapped);
        op->status = INT32_MIN; /* read the result in complete_op */
        io_worker_t *strand = op->handle->worker;
        if (strand_append(strand, op, 0))
          strand_run(strand);
        break;
      }
      case KEY_STRAND: {
        io_worker_t *strand = container_of(e->lpOverlapped, io_worker_t, wake);
        AcquireSRWLockExclusive(&strand->lock);
        strand->scheduled = 0;
        ReleaseSRWLockExclusive(&strand->lock);
        strand_run(strand);
        break;
      }
      case KEY_STOP:
        stops++;
        break;
      default: /* KEY_WAKE: only recompute the timeout */
        break;
      }
    }
    if (stops) {
      /* One sentinel per thread; a thread that took several in one batch
       * hands the others back. */
      while (--stops > 0)
        PostQueuedCompletionStatus(c->port, 0, KEY_STOP, NULL);
      break;
    }
  }
  free(thread_buffer);
  thread_buffer = NULL;
  return 0;
}

/* ---- cores and handles ---- */

static int load_extensions(io_core_t *c, char *err, size_t err_len) {
  SOCKET s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                        WSA_FLAG_OVERLAPPED);
  if (s == INVALID_SOCKET) {
    snprintf(err, err_len, "cannot create a socket (WSA error %d)",
             WSAGetLastError());
    return -1;
  }
  GUID accept_guid = WSAID_ACCEPTEX, addresses_guid = WSAID_GETACCEPTEXSOCKADDRS,
       connect_guid = WSAID_CONNECTEX;
  DWORD bytes;
  int rc = WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &accept_guid,
                    sizeof accept_guid, &c->accept_ex, sizeof c->accept_ex,
                    &bytes, NULL, NULL) |
           WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &addresses_guid,
                    sizeof addresses_guid, &c->get_accept_addresses,
                    sizeof c->get_accept_addresses, &bytes, NULL, NULL) |
           WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &connect_guid,
                    sizeof connect_guid, &c->connect_ex, sizeof c->connect_ex,
                    &bytes, NULL, NULL);
  closesocket(s);
  if (rc != 0 || !c->accept_ex || !c->get_accept_addresses || !c->connect_ex) {
    snprintf(err, err_len,
             "the Winsock provider lacks AcceptEx/ConnectEx (WSA error %d)",
             WSAGetLastError());
    return -1;
  }
  return 0;
}

/* timeBeginPeriod and timeEndPeriod live in winmm.dll, which is not one of
 * the system's KnownDLLs: imported, it would be looked for in the
 * executable's folder first, before main runs, so a winmm.dll planted there
 * would run as the host. It is loaded from the system folder only. */
typedef MMRESULT(WINAPI *time_period_fn)(UINT);
static time_period_fn time_begin_period, time_end_period;
static INIT_ONCE winmm_once = INIT_ONCE_STATIC_INIT;

static BOOL CALLBACK load_winmm(PINIT_ONCE once, PVOID param, PVOID *context) {
  HMODULE winmm =
      LoadLibraryExW(L"winmm.dll", NULL, LOAD_LIBRARY_SEARCH_SYSTEM32);
  if (winmm) { /* kept loaded: the functions are used until exit */
    time_begin_period = (time_period_fn)(void (*)(void))GetProcAddress(
        winmm, "timeBeginPeriod");
    time_end_period = (time_period_fn)(void (*)(void))GetProcAddress(
        winmm, "timeEndPeriod");
  }
  if (!time_begin_period || !time_end_period)
    log_write(LOG_WARN, "core",
              "cannot load timeBeginPeriod from winmm.dll in the system "
              "folder (error %lu): timers run on the 15.6 ms system tick",
              (unsigned long)GetLastError());
  return TRUE;
}

io_backend_t io_core_backend(const io_core_t *core) {
  (void)core;
  return IO_BACKEND_IOCP;
}

int io_core_create(int threads, io_backend_t backend,
                   const io_handle_events_t *events, io_core_t **out,
                   char *err, size_t err_len) {
  WSADATA wsa;
  if (backend != IO_BACKEND_DEFAULT && backend != IO_BACKEND_IOCP) {
    snprintf(err, err_len, "Windows has only the iocp backend");
    return -1;
  }
  if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
    snprintf(err, err_len, "WSAStartup failed");
    return -1;
  }
  if (threads < 1)
    threads = 1;
  io_core_t *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, err_len, "out of memory creating a core");
    WSACleanup();
    return -1;
  }
  c->events = events;
  InitializeSRWLock(&c->timer_lock);
  InitializeSRWLock(&c->orphan_lock);
  c->threads = calloc((size_t)threads, sizeof *c->threads);
  c->strands = calloc((size_t)threads, sizeof *c->strands);
  c->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0,
                                   (DWORD)threads);
  if (!c->threads || !c->strands || !c->port ||
      load_extensions(c, err, err_len) != 0) {
    if (!c->port)
      snprintf(err, err_len, "cannot create a completion port (error %lu)",
               (unsigned long)GetLastError());
    if (c->port)
      CloseHandle(c->port);
    free(c->threads);
    free(c->strands);
    free(c);
    WSACleanup();
    return -1;
  }
  for (int i = 0; i < threads; i++) {
    c->strands[i].core = c;
    c->strands[i].index = i;
    InitializeSRWLock(&c->strands[i].lock);
  }
  /* Timers wait in GetQueuedCompletionStatusEx, whose timeout is rounded up
   * to the system tick: 15.6 ms unless someone asks for better. A game's
   * 10 ms tick or a 5 ms reconnect would run late by up to a tick. Since
   * Windows 10 2004 this affects only this process; undone at destroy. */
  InitOnceExecuteOnce(&winmm_once, load_winmm, NULL, NULL);
  c->timer_period_set = time_begin_period && time_end_period &&
                        time_begin_period(1) == TIMERR_NOERROR;
  for (int i = 0; i < threads; i++) {
    c->threads[i] = CreateThread(NULL, 0, thread_main, c, 0, NULL);
    if (!c->threads[i]) {
      snprintf(err, err_len, "cannot start worker thread %d", i);
      c->thread_count = i;
      io_core_destroy(c);
      return -1;
    }
  }
  c->thread_count = threads;
  *out = c;
  return 0;
}

void io_core_destroy(io_core_t *c) {
  if (!c)
    return;
  /* Sentinel completions: each thread takes one and ends. */
  for (int i = 0; i < c->thread_count; i++)
    PostQueuedCompletionStatus(c->port, 0, KEY_STOP, NULL);
  for (int i = 0; i < c->thread_count; i++) {
    WaitForSingleObject(c->threads[i], INFINITE);
    CloseHandle(c->threads[i]);
  }
  CloseHandle(c->port);
  if (c->timer_period_set)
    time_end_period(1);
  timer_heap_free(&c->timers);
  free(c->threads);
  free(c->strands);
  free(c);
  WSACleanup();
}

int io_core_thread_count(const io_core_t *core) { return core->thread_count; }

uint64_t io_core_completions(const io_core_t *core) {
  return atomic_load_explicit(&((io_core_t *)core)->completions,
                              memory_order_relaxed);
}

int io_handle_open(io_core_t *core, io_handle_t *h, io_socket_t socket,
                   int hint) {
  unsigned index = hint >= 0 ? (unsigned)hint
                             : atomic_fetch_add_explicit(&core->next_strand, 1,
                                                         memory_order_relaxed);
  h->worker = &core->strands[index % (unsigned)core->thread_count];
  h->socket = socket;
  h->closed = 0;
  h->family = AF_INET;
  if (socket == INVALID_SOCKET)
    return 0;
  struct sockaddr_storage local;
  int len = sizeof local;
  if (getsockname(socket, (struct sockaddr *)&local, &len) == 0)
    h->family = local.ss_family; /* a listener accepts sockets of its family */
  if (!CreateIoCompletionPort((HANDLE)socket, core->port, KEY_IO, 0))
    return map_error(GetLastError());
  SetFileCompletionNotificationModes((HANDLE)socket,
                                     FILE_SKIP_SET_EVENT_ON_HANDLE);
  return 0;
}

/* The handle's receive and wake-up are ops in the handle itself here (see
 * backend.h): each completes into the core's events. */
static void handle_received(io_op_t *op, int status, size_t bytes) {
  io_handle_t *h = op->handle;
  core_of(h)->events->received(h, status, io_recv_op(op)->data, bytes);
}

static void handle_woken(io_op_t *op, int status, size_t bytes) {
  (void)status;
  (void)bytes;
  io_handle_t *h = op->handle;
  core_of(h)->events->woken(h);
}

void io_recv_start(io_handle_t *h) {
  io_op_t *op = &h->recv_op.op;
  op->type = IO_OP_RECV;
  op->handle = h;
  op->status = 0;
  op->complete = handle_received;
  io_submit(op);
}

void io_wake(io_handle_t *h) {
  h->wake_op.complete = handle_woken;
  io_post(h, &h->wake_op, 0);
}

int io_handle_worker_index(const io_handle_t *h) { return h->worker->index; }

int io_handle_on_worker(const io_handle_t *h) {
  return current_strand == h->worker;
}

void io_handle_close(io_handle_t *h) {
  if (h->closed)
    return;
  h->closed = 1;
  if (h->socket != INVALID_SOCKET) {
    /* Pending ops complete with ERROR_OPERATION_ABORTED; their memory (and
     * their owner's) stays until they have been delivered. */
    CancelIoEx((HANDLE)h->socket, NULL);
    closesocket(h->socket);
    h->socket = INVALID_SOCKET;
  }
}

/* A non-overlapped WSASend on the non-blocking socket, as libuv's
 * uv_try_write does on Windows: with no send op in flight (the caller's
 * promise) the bytes go out in order, and a send that the socket takes at
 * once costs no op, no completion packet and no copy into the queue. */
int io_send_now(io_handle_t *h, const io_buf_t *bufs, int count) {
  if (h->closed || h->socket == INVALID_SOCKET)
    return IO_ECANCELED;
  DWORD sent = 0;
  if (WSASend(h->socket, (WSABUF *)bufs, (DWORD)count, &sent, 0, NULL,
              NULL) == 0)
    return sent > INT32_MAX ? INT32_MAX : (int)sent;
  int err = WSAGetLastError();
  return err == WSAEWOULDBLOCK ? -EAGAIN : map_error((DWORD)err);
}

void io_handle_shutdown_write(io_handle_t *h) {
  if (!h->closed && h->socket != INVALID_SOCKET)
    shutdown(h->socket, SD_SEND);
}

void io_handle_reset_on_close(io_handle_t *h) {
  if (h->closed || h->socket == INVALID_SOCKET)
    return;
  /* closesocket with a zero linger timeout is an abortive close: RST, and
   * pending sends are cancelled. */
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(h->socket, SOL_SOCKET, SO_LINGER, (const char *)&reset,
             sizeof reset);
}

io_socket_t io_socket_tcp(int family) {
  SOCKET s = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s != INVALID_SOCKET) {
    u_long nonblocking = 1;
    ioctlsocket(s, FIONBIO, &nonblocking);
  }
  return s;
}

void io_socket_close(io_socket_t s) {
  if (s != INVALID_SOCKET)
    closesocket(s);
}

int io_socket_listen(io_socket_t s, const address_t *addr, int backlog) {
  /* Exclusive: on Windows SO_REUSEADDR would let another process take the
   * port from under us. */
  BOOL on = TRUE;
  setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&on, sizeof on);
  if (address_family(addr) == AF_INET6) {
    DWORD v6only = 1;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&v6only,
               sizeof v6only);
  }
  if (bind(s, &addr->u.sa, address_length(addr)) != 0)
    return map_error((DWORD)WSAGetLastError());
  if (listen(s, backlog) != 0)
    return map_error((DWORD)WSAGetLastError());
  return 0;
}

void io_socket_set_nodelay(io_socket_t s, int on) {
  /* IPPROTO_TCP level: the course code set it on SOL_SOCKET, where it means
   * nothing. */
  BOOL value = on ? TRUE : FALSE;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&value, sizeof value);
}
