/* The io_uring backend where it differs from epoll: its receive buffers are
 * a small ring the worker's sockets share, and a socket whose multishot
 * receive found the ring empty waits until a buffer comes back. These tests
 * run every worker with two buffers (io__uring_buffer_count), so the ring
 * is empty most of the time: sessions must still be served byte for byte,
 * and sessions closed while their receive waits for a buffer (or is in
 * flight) must end with a reason and be freed, never hang. */
#include <check.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "engine/backend.h"
#include "engine/engine.h"
#include "testutil.h"

#define CLIENTS 8
#define BYTES_EACH (256 * 1024)

static atomic_int connected, disconnected, freed, ended_with_reason;
static atomic_int abort_after_bytes; /* 0: echo; otherwise abort past it */
/* Consume nothing: with max_recv_bytes 16 and no linger, the session is
 * closed inside its received call (protocol_error), receive disarmed. */
static atomic_int consume_nothing;
static atomic_int protocol_errors;

typedef struct state {
  uint64_t received;
} state_t;

static size_t prepare(void *ctx, void **context) {
  (void)ctx;
  *context = NULL;
  return sizeof(state_t);
}

static void on_connected(session_t *s) {
  (void)s;
  atomic_fetch_add(&connected, 1);
}

static size_t on_recv(session_t *s, const uint8_t *data, size_t len) {
  state_t *st = session_extra(s);
  if (atomic_load(&consume_nothing))
    return 0;
  st->received += len;
  int limit = atomic_load(&abort_after_bytes);
  if (limit && st->received > (uint64_t)limit) {
    session_abort(s, REASON_LOCAL);
    return len;
  }
  if (!limit)
    session_send(s, data, len);
  return len;
}

static void on_disconnected(session_t *s, session_reason_t reason) {
  (void)s;
  if (reason >= REASON_PEER_CLOSED && reason <= REASON_IO_ERROR)
    atomic_fetch_add(&ended_with_reason, 1);
  if (reason == REASON_PROTOCOL_ERROR)
    atomic_fetch_add(&protocol_errors, 1);
  atomic_fetch_add(&disconnected, 1);
}

static void on_free(session_t *s) {
  (void)s;
  atomic_fetch_add(&freed, 1);
}

static const session_handler_t handler = {
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
    .on_free = on_free,
};

typedef struct rig {
  core_t *core;
  service_t *svc;
  int port;
} rig_t;

static void rig_start(rig_t *r) {
  atomic_store(&connected, 0);
  atomic_store(&disconnected, 0);
  atomic_store(&freed, 0);
  atomic_store(&ended_with_reason, 0);
  atomic_store(&protocol_errors, 0);
  char err[256];
  io__uring_buffer_count(2);
  int rc = core_create("uring", 2, CORE_BACKEND_IO_URING, &r->core, err,
                       sizeof err);
  io__uring_buffer_count(0);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_msg(strcmp(core_backend_name(r->core), "io_uring") == 0,
                "io_uring is not available on this kernel: these tests "
                "prove nothing on %s",
                core_backend_name(r->core));
  service_options_t o;
  service_options_init(&o);
  o.name = "uring";
  ck_assert_int_eq(address_parse("127.0.0.1:0", &o.address, err, sizeof err),
                   0);
  o.factory.handler = &handler;
  o.factory.prepare = prepare;
  o.send_queue_limit_bytes = 4 * BYTES_EACH;
  if (atomic_load(&consume_nothing)) {
    o.max_recv_bytes = 16;
    o.close_linger_ms = 0;
  }
  ck_assert_msg(service_create(r->core, &o, &r->svc, err, sizeof err) == 0,
                "%s", err);
  ck_assert_msg(service_start(r->svc, err, sizeof err) == 0, "%s", err);
  address_t bound;
  ck_assert_int_eq(service_local_address(r->svc, &bound), 0);
  r->port = address_port(&bound);
}

static void rig_stop(rig_t *r) {
  ck_assert_int_eq(service_destroy_within(r->svc, 10000), 0);
  core_destroy(r->core);
  ck_assert_int_eq(engine_live_objects(), 0);
}

static uint8_t pattern(int conn, size_t i) {
  return (uint8_t)((size_t)conn * 131 + i * 7 + (i >> 9));
}

/* Every client writes and reads at once (non-blocking, one poll loop), so
 * all of them have bytes in flight while the two buffers go round. */
START_TEST(test_sessions_are_served_byte_for_byte_with_the_buffers_exhausted) {
  rig_t r;
  atomic_store(&abort_after_bytes, 0);
  rig_start(&r);
  int fds[CLIENTS];
  size_t sent[CLIENTS], got[CLIENTS];
  static uint8_t out[CLIENTS][BYTES_EACH];
  for (int c = 0; c < CLIENTS; c++) {
    fds[c] = tu_connect(r.port, 0);
    ck_assert_int_ge(fds[c], 0);
    tu_set_nonblocking(fds[c]);
    sent[c] = got[c] = 0;
    for (size_t i = 0; i < BYTES_EACH; i++)
      out[c][i] = pattern(c, i);
  }
  uint64_t deadline = tu_now_ms() + 30000;
  int done = 0;
  while (done < CLIENTS && tu_now_ms() < deadline) {
    struct pollfd p[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
      p[c].fd = got[c] < BYTES_EACH ? fds[c] : -1;
      p[c].events = POLLIN | (sent[c] < BYTES_EACH ? POLLOUT : 0);
      p[c].revents = 0;
    }
    poll(p, CLIENTS, 100);
    for (int c = 0; c < CLIENTS; c++) {
      if (p[c].revents & POLLOUT) {
        ssize_t n = send(fds[c], out[c] + sent[c], BYTES_EACH - sent[c],
                         MSG_NOSIGNAL);
        if (n > 0)
          sent[c] += (size_t)n;
      }
      if (p[c].revents & (POLLIN | POLLHUP | POLLERR)) {
        uint8_t in[16384];
        ssize_t n = recv(fds[c], in, sizeof in, 0);
        ck_assert_msg(n != 0, "client %d: the server closed after %zu bytes",
                      c, got[c]);
        for (ssize_t i = 0; i > -1 && i < n; i++)
          ck_assert_msg(in[i] == pattern(c, got[c] + (size_t)i),
                        "client %d: byte %zu differs", c,
                        got[c] + (size_t)i);
        if (n > 0) {
          got[c] += (size_t)n;
          if (got[c] == BYTES_EACH)
            done++;
        }
      }
    }
  }
  for (int c = 0; c < CLIENTS; c++)
    ck_assert_msg(got[c] == BYTES_EACH, "client %d: %zu of %d bytes echoed",
                  c, got[c], BYTES_EACH);
  for (int c = 0; c < CLIENTS; c++)
    tu_close(fds[c]);
  ck_assert(tu_wait_at_least(&freed, CLIENTS, 10000));
  ck_assert_int_eq(atomic_load(&ended_with_reason), CLIENTS);
  rig_stop(&r);
}
END_TEST

/* The server aborts each session once it has read a little, while the
 * clients keep writing: the closes meet receives in flight and sockets
 * waiting for a buffer. Every session ends with a reason and is freed. */
START_TEST(test_closing_with_receives_in_flight_and_the_buffers_exhausted) {
  rig_t r;
  atomic_store(&abort_after_bytes, 64 * 1024);
  rig_start(&r);
  int rounds = 4, total = 0;
  static uint8_t junk[32768];
  memset(junk, 'x', sizeof junk);
  for (int round = 0; round < rounds; round++) {
    int fds[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
      fds[c] = tu_connect(r.port, 0);
      ck_assert_int_ge(fds[c], 0);
      tu_set_nonblocking(fds[c]);
    }
    total += CLIENTS;
    /* Write until the server has cut every connection. */
    uint64_t deadline = tu_now_ms() + 20000;
    int open = CLIENTS;
    while (open > 0 && tu_now_ms() < deadline) {
      open = 0;
      for (int c = 0; c < CLIENTS; c++) {
        if (fds[c] < 0)
          continue;
        ssize_t n = send(fds[c], junk, sizeof junk, MSG_NOSIGNAL);
        if (n < 0 && !tu_would_block()) {
          tu_close(fds[c]);
          fds[c] = -1;
          continue;
        }
        open++;
      }
      if (open)
        tu_sleep_ms(1);
    }
    ck_assert_msg(open == 0, "round %d: %d clients never cut", round, open);
    ck_assert_msg(tu_wait_at_least(&freed, total, 10000),
                  "round %d: %d of %d sessions freed", round,
                  atomic_load(&freed), total);
  }
  ck_assert_int_eq(atomic_load(&ended_with_reason), total);
  ck_assert_int_eq(atomic_load(&connected), total);
  rig_stop(&r);
}
END_TEST

/* The session is closed inside its received call, so no receive is armed
 * while the socket's multishot receive is still in the kernel: the close
 * must not let the session (and its handle) be freed before the kernel's
 * last completion naming the handle (ASan sees the use after free). */
START_TEST(test_closing_inside_the_received_call) {
  rig_t r;
  atomic_store(&abort_after_bytes, 0);
  atomic_store(&consume_nothing, 1);
  rig_start(&r);
  static const char junk[64] = "more than max_recv_bytes, consumed by nobody";
  int rounds = 8, total = 0;
  for (int round = 0; round < rounds; round++) {
    int fds[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
      fds[c] = tu_connect(r.port, 0);
      ck_assert_int_ge(fds[c], 0);
      ck_assert_int_eq(tu_write_all(fds[c], junk, sizeof junk), 0);
    }
    total += CLIENTS;
    for (int c = 0; c < CLIENTS; c++) {
      ck_assert_msg(tu_wait_closed(fds[c], 10000) != 0,
                    "round %d: client %d was never closed", round, c);
      tu_close(fds[c]);
    }
    ck_assert_msg(tu_wait_at_least(&freed, total, 10000),
                  "round %d: %d of %d sessions freed", round,
                  atomic_load(&freed), total);
  }
  ck_assert_int_eq(atomic_load(&protocol_errors), total);
  atomic_store(&consume_nothing, 0);
  rig_stop(&r);
}
END_TEST

/* ---- the provided buffers themselves, below the session layer ----
 *
 * Where the kernel consumes provided buffers incrementally (6.12), one
 * buffer holds receives of several sockets, each a "piece": the buffer may
 * go back to the ring only when the kernel is done with it and every piece
 * of it was delivered, in whatever order the sockets' owners take them. */

/* Does this kernel take IOU_PBUF_RING_INC (kernel 6.12)? Asked directly,
 * as io_uring.c does, so the tests know which mode they run in. */
static int kernel_has_incremental_buffers(void) {
  struct io_uring ring;
  if (io_uring_queue_init(4, &ring, 0) != 0)
    return 0;
  size_t bytes = 4 * sizeof(struct io_uring_buf);
  void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  int ok = 0;
  if (mem != MAP_FAILED) {
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (unsigned long)mem;
    reg.ring_entries = 4;
    reg.bgid = 0;
    uint16_t inc = 2; /* IOU_PBUF_RING_INC, after bgid ("pad" in 2.3) */
    memcpy((char *)&reg + offsetof(struct io_uring_buf_reg, bgid) +
               sizeof reg.bgid,
           &inc, sizeof inc);
    ok = io_uring_register_buf_ring(&ring, &reg, 0) == 0;
  }
  io_uring_queue_exit(&ring);
  if (mem != MAP_FAILED)
    munmap(mem, bytes);
  return ok;
}

enum { CMD_NONE, CMD_ARM, CMD_CLOSE };

typedef struct conn {
  io_handle_t h;
  int client;       /* the test's end */
  int server;       /* the handle's socket */
  int seed;         /* of the bytes the client sends */
  atomic_int cmd;   /* what woken does on the worker */
  atomic_int rearm; /* received arms the next receive itself */
  atomic_int got;   /* bytes received */
  atomic_int max_len;
  atomic_int bad;   /* 1 + the offset of the first wrong byte, 0 none */
  atomic_int ended; /* IO_ECANCELED (or an end) delivered */
} conn_t;

static uint8_t conn_byte(int seed, size_t i) {
  return (uint8_t)((size_t)seed * 29 + i * 13 + (i >> 8));
}

static void conn_received(io_handle_t *h, int status, const uint8_t *data,
                          size_t len) {
  conn_t *c = container_of(h, conn_t, h);
  if (status != 0 || len == 0) {
    atomic_store(&c->ended, 1);
    return;
  }
  size_t at = (size_t)atomic_load(&c->got);
  for (size_t i = 0; i < len; i++)
    if (data[i] != conn_byte(c->seed, at + i) && !atomic_load(&c->bad))
      atomic_store(&c->bad, (int)(at + i) + 1);
  if ((int)len > atomic_load(&c->max_len))
    atomic_store(&c->max_len, (int)len);
  atomic_fetch_add(&c->got, (int)len);
  if (atomic_load(&c->rearm))
    io_recv_start(h);
}

static void conn_woken(io_handle_t *h) {
  conn_t *c = container_of(h, conn_t, h);
  switch (atomic_exchange(&c->cmd, CMD_NONE)) {
  case CMD_ARM:
    io_recv_start(h);
    break;
  case CMD_CLOSE:
    io_handle_close(h);
    break;
  default:
    break;
  }
}

static const io_handle_events_t conn_events = {conn_received, conn_woken};

/* A core of one worker on io_uring, buffers as asked. */
static io_core_t *conn_core(unsigned buffers, int whole) {
  char err[256];
  io_core_t *core = NULL;
  io__uring_buffer_count(buffers);
  io__uring_whole_buffers(whole);
  int rc = io_core_create(1, IO_BACKEND_IO_URING, &conn_events, &core, err,
                          sizeof err);
  io__uring_buffer_count(0);
  io__uring_whole_buffers(0);
  ck_assert_msg(rc == 0, "io_uring core: %s", err);
  return core;
}

/* A loopback connection whose accepted end the core's handle owns. */
static void conn_open(io_core_t *core, conn_t *c, int seed) {
  memset(c, 0, sizeof *c);
  c->seed = seed;
  int lfd = tu_socket(AF_INET);
  ck_assert_int_ge(lfd, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_eq(listen(lfd, 1), 0);
  ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
  c->client = tu_connect(ntohs(a.sin_port), 0);
  ck_assert_int_ge(c->client, 0);
  c->server = accept(lfd, NULL, NULL);
  ck_assert_int_ge(c->server, 0);
  tu_close(lfd);
  tu_set_nonblocking(c->server);
  ck_assert_int_eq(io_handle_open(core, &c->h, c->server, 0), 0);
}

static void conn_command(conn_t *c, int cmd) {
  atomic_store(&c->cmd, cmd);
  io_wake(&c->h);
}

static int conn_got(conn_t *c, int want) {
  return tu_wait_at_least(&c->got, want, 20000);
}

/* Sends len bytes of the connection's pattern from offset at. */
static void conn_send(conn_t *c, size_t at, size_t len) {
  static uint8_t out[64 * 1024];
  while (len > 0) {
    size_t n = len < sizeof out ? len : sizeof out;
    for (size_t i = 0; i < n; i++)
      out[i] = conn_byte(c->seed, at + i);
    ck_assert_int_eq(tu_write_all(c->client, out, n), 0);
    at += n;
    len -= n;
  }
}

static int socket_drained(void *arg) {
  int queued = -1;
  return ioctl(*(int *)arg, FIONREAD, &queued) == 0 && queued == 0;
}

/* Closes the handle (its receive armed, so IO_ECANCELED ends it), then the
 * client's socket. */
static void conn_close(conn_t *c) {
  atomic_store(&c->rearm, 1);
  conn_command(c, CMD_CLOSE);
  ck_assert_msg(tu_wait_at_least(&c->ended, 1, 10000),
                "the closed handle's receive never ended");
  tu_close(c->client);
}

/* Socket A's bytes wait, undelivered (its owner has no receive armed), in
 * a buffer whose rest socket B fills; B's bytes are delivered and go on
 * through the ring, many times round. A's bytes must be intact when its
 * owner finally takes them: their buffer went back to the ring only after
 * they were delivered. */
static void pieces_out_of_order(int whole) {
  io_core_t *core = conn_core(2, whole);
  static conn_t a, b;
  conn_open(core, &a, 1);
  conn_open(core, &b, 2);
  atomic_store(&b.rearm, 1);
  conn_command(&a, CMD_ARM);
  conn_command(&b, CMD_ARM);
  /* A's first bytes are delivered; its owner does not read on. */
  conn_send(&a, 0, 100);
  ck_assert(conn_got(&a, 100));
  /* A's next bytes: taken by the kernel (the socket drains), queued. */
  conn_send(&a, 100, 1000);
  ck_assert_msg(tu_wait_until(socket_drained, &a.server, 10000),
                "the kernel never read socket A");
  ck_assert_int_eq(atomic_load(&a.got), 100);
  /* B: eight times the ring's bytes (2 x 256 KiB), delivered as they
   * come. */
  size_t through = 8 * 2 * 256 * 1024;
  conn_send(&b, 0, through);
  ck_assert_msg(conn_got(&b, (int)through), "B: %d of %zu bytes",
                atomic_load(&b.got), through);
  ck_assert_msg(atomic_load(&b.bad) == 0, "B: byte %d differs",
                atomic_load(&b.bad) - 1);
  /* Now A's owner reads on. */
  atomic_store(&a.rearm, 1);
  conn_command(&a, CMD_ARM);
  ck_assert_msg(conn_got(&a, 1100), "A: %d of 1100 bytes",
                atomic_load(&a.got));
  ck_assert_msg(atomic_load(&a.bad) == 0,
                "A: byte %d was overwritten while it waited in its buffer",
                atomic_load(&a.bad) - 1);
  conn_close(&a);
  conn_close(&b);
  io_core_destroy(core);
}

START_TEST(test_pieces_of_one_buffer_delivered_out_of_order) {
  if (!kernel_has_incremental_buffers())
    printf("test_engine_uring: this kernel consumes provided buffers whole "
           "(before 6.12): the incremental mode is not tested here\n");
  pieces_out_of_order(0);
}
END_TEST

START_TEST(test_pieces_out_of_order_with_whole_buffers) {
  pieces_out_of_order(1);
}
END_TEST

static int fionread(int fd) {
  int queued = -1;
  return ioctl(fd, FIONREAD, &queued) == 0 ? queued : -1;
}

typedef struct unread {
  int fd, want;
} unread_t;

static int unread_is(void *arg) {
  unread_t *u = arg;
  return fionread(u->fd) == u->want;
}

/* Sockets that found the ring empty wait for a buffer to come back. A
 * buffer consumed incrementally serves many receives: when one comes
 * back, every waiting socket must read again, not only as many as came
 * back (the others would wait for a buffer that nobody fills and returns:
 * 1,000 ping-pong sessions on a small ring hung that way). */
static void starved_sockets_read_on(int whole) {
  enum { WAITING = 8 };
  int incremental = !whole && kernel_has_incremental_buffers();
  int ring_bytes = 2 * (incremental ? 256 * 1024 : 16 * 1024);
  io_core_t *core = conn_core(2, whole);
  static conn_t a, s[WAITING];
  conn_open(core, &a, 4);
  for (int k = 0; k < WAITING; k++)
    conn_open(core, &s[k], 10 + k);
  /* A's owner takes nothing: its bytes fill both buffers and hold them. */
  conn_command(&a, CMD_ARM);
  conn_send(&a, 0, 100);
  ck_assert(conn_got(&a, 100));
  int rest = ring_bytes + 4096;
  /* What the ring takes of them: its bytes, less the first 100 where they
   * shared a buffer (the kernel takes that buffer's rest). */
  int taken = incremental ? ring_bytes - 100 : ring_bytes;
  conn_send(&a, 100, (size_t)rest);
  unread_t u = {a.server, rest - taken};
  ck_assert_msg(tu_wait_until(unread_is, &u, 10000),
                "the kernel read %d of A's %d bytes, not the ring's %d",
                rest - fionread(a.server), rest, taken);
  /* The ring is empty: each socket armed now waits for a buffer. */
  for (int k = 0; k < WAITING; k++) {
    conn_send(&s[k], 0, 100);
    atomic_store(&s[k].rearm, 1);
    conn_command(&s[k], CMD_ARM);
  }
  /* A reads on: both buffers come back, and every waiting socket reads. */
  atomic_store(&a.rearm, 1);
  conn_command(&a, CMD_ARM);
  ck_assert(conn_got(&a, 100 + rest));
  for (int k = 0; k < WAITING; k++)
    ck_assert_msg(conn_got(&s[k], 100),
                  "socket %d of %d waiting for a buffer never read on", k,
                  WAITING);
  ck_assert_int_eq(atomic_load(&a.bad), 0);
  for (int k = 0; k < WAITING; k++) {
    ck_assert_int_eq(atomic_load(&s[k].bad), 0);
    conn_close(&s[k]);
  }
  conn_close(&a);
  io_core_destroy(core);
}

START_TEST(test_starved_sockets_all_read_on_when_a_buffer_comes_back) {
  starved_sockets_read_on(0);
  starved_sockets_read_on(1);
}
END_TEST

/* 64 KiB messages, one at a time: with incremental buffers (256 KiB) each
 * arrives in one received call while the buffer has room for it (at least
 * one of 16 does), with whole 16 KiB buffers never. */
static int largest_receive(int whole) {
  io_core_t *core = conn_core(0, whole);
  static conn_t c;
  conn_open(core, &c, 3);
  atomic_store(&c.rearm, 1);
  conn_command(&c, CMD_ARM);
  const int message = 64 * 1024;
  for (int k = 0; k < 16; k++) {
    conn_send(&c, (size_t)k * message, (size_t)message);
    ck_assert_msg(conn_got(&c, (k + 1) * message), "message %d: %d bytes", k,
                  atomic_load(&c.got));
  }
  ck_assert_msg(atomic_load(&c.bad) == 0, "byte %d differs",
                atomic_load(&c.bad) - 1);
  int largest = atomic_load(&c.max_len);
  conn_close(&c);
  io_core_destroy(core);
  return largest;
}

START_TEST(test_a_64k_message_arrives_in_one_received_call) {
  if (!kernel_has_incremental_buffers()) {
    printf("test_engine_uring: skipped the 64 KiB receive: this kernel "
           "consumes provided buffers whole (before 6.12)\n");
    return;
  }
  int largest = largest_receive(0);
  ck_assert_msg(largest >= 64 * 1024,
                "the largest received call had %d bytes: a 64 KiB message "
                "was split",
                largest);
  ck_assert_int_le(largest_receive(1), 16 * 1024);
}
END_TEST

/* Sockets that arm their receive while the ring is empty, but have nothing
 * to read, must not stand in the way of one that has bytes: with whole
 * buffers a returned buffer re-armed only the longest-starved socket, and
 * idle sockets starved at arm time came first, so the buffer sat unused in
 * the ring while D's bytes waited for a return that never came (found in
 * review; D got 0). */
static void idle_starved_ahead(int whole) {
  enum { IDLE = 8 };
  int incremental = !whole && kernel_has_incremental_buffers();
  int ring_bytes = 2 * (incremental ? 256 * 1024 : 16 * 1024);
  io_core_t *core = conn_core(2, whole);
  static conn_t a, d, idle[IDLE];
  conn_open(core, &a, 4);
  conn_open(core, &d, 5);
  for (int k = 0; k < IDLE; k++)
    conn_open(core, &idle[k], 20 + k);
  conn_command(&a, CMD_ARM);
  conn_send(&a, 0, 100);
  ck_assert(conn_got(&a, 100));
  int rest = ring_bytes + 4096;
  int taken = incremental ? ring_bytes - 100 : ring_bytes;
  conn_send(&a, 100, (size_t)rest);
  unread_t u = {a.server, rest - taken};
  ck_assert(tu_wait_until(unread_is, &u, 10000));
  /* The ring is empty. Idle sockets arm first, then D, which has bytes. */
  for (int k = 0; k < IDLE; k++) {
    atomic_store(&idle[k].rearm, 1);
    conn_command(&idle[k], CMD_ARM);
  }
  conn_send(&d, 0, 100);
  atomic_store(&d.rearm, 1);
  conn_command(&d, CMD_ARM);
  atomic_store(&a.rearm, 1);
  conn_command(&a, CMD_ARM);
  ck_assert(conn_got(&a, 100 + rest));
  ck_assert_msg(tu_wait_at_least(&d.got, 100, 3000),
                "%s buffers: D's 100 bytes were never read, though the ring "
                "has buffers again (D got %d)",
                whole ? "whole" : "incremental", atomic_load(&d.got));
  for (int k = 0; k < IDLE; k++)
    conn_close(&idle[k]);
  conn_close(&d);
  conn_close(&a);
  io_core_destroy(core);
}

START_TEST(test_idle_sockets_leave_buffers_to_one_with_bytes_incremental) {
  idle_starved_ahead(0);
}
END_TEST

START_TEST(test_idle_sockets_leave_buffers_to_one_with_bytes_whole) {
  idle_starved_ahead(1);
}
END_TEST

int main(void) {
  /* These tests choose each core's buffer mode themselves (conn_core):
   * the uring stage's whole-buffer run must not choose it for them. */
  unsetenv("IOCPHOST_URING_WHOLE_BUFFERS");
  Suite *s = suite_create("engine_uring");
  TCase *tc = tcase_create("uring");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc,
                 test_sessions_are_served_byte_for_byte_with_the_buffers_exhausted);
  tcase_add_test(tc, test_closing_with_receives_in_flight_and_the_buffers_exhausted);
  tcase_add_test(tc, test_closing_inside_the_received_call);
  tcase_add_test(tc, test_pieces_of_one_buffer_delivered_out_of_order);
  tcase_add_test(tc, test_pieces_out_of_order_with_whole_buffers);
  tcase_add_test(tc, test_a_64k_message_arrives_in_one_received_call);
  tcase_add_test(tc, test_starved_sockets_all_read_on_when_a_buffer_comes_back);
  tcase_add_test(tc,
                 test_idle_sockets_leave_buffers_to_one_with_bytes_incremental);
  tcase_add_test(tc, test_idle_sockets_leave_buffers_to_one_with_bytes_whole);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
