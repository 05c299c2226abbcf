/*
 * Rooms: objects with a serial order of their own and no socket (engine.h).
 *
 * A room is born with one reference, its creator's, and an "open" state.
 * Its posts and timers are its strand's (strand.c), each holding a
 * reference until it is gone. room_close marks it closing under its lock,
 * so no post or timer of its own starts or runs from then on, and sends
 * the close itself into the room's order (an op of the room's own, so it
 * never fails): there it stops the timers and calls on_close, the room's
 * last callback. Memory
 * goes with the last reference (on_free), from whichever thread drops it.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/strand.h"

struct room {
  atomic_int refs;
  uint64_t id;
  core_t *core;
  const room_handler_t *handler;
  void *context;
  io_handle_t handle; /* no socket: a place in a worker's serial order */
  engine_lock_t lock;
  strand_t strand;
  uint8_t closing;  /* under lock: room_close was called */
  io_op_t close_op; /* the close, in the room's order (no allocation) */
  size_t extra_size;
  /* extra state follows, aligned */
};

static atomic_uint_fast64_t next_room_id = 1;

static size_t room_extra_offset(void) {
  return (sizeof(room_t) + 15) & ~(size_t)15;
}

static void strand_ref(void *owner) { room_acquire(owner); }
static void strand_release(void *owner) { room_release(owner); }

/* Under the room's lock. */
static int strand_open(void *owner) { return !((room_t *)owner)->closing; }

static const strand_owner_ops_t room_strand_ops = {
    .ref = strand_ref,
    .release = strand_release,
    .may_start = strand_open,
    .may_run = strand_open,
    .room = 1,
    .strand_at = offsetof(room_t, strand),
    .handle_at = offsetof(room_t, handle),
    .lock_at = offsetof(room_t, lock),
};

room_t *room_create(core_t *core, const room_handler_t *handler, size_t extra,
                    void *context) {
  if (!core || extra > SIZE_MAX - room_extra_offset())
    return NULL;
  room_t *r = calloc(1, room_extra_offset() + extra);
  if (!r)
    return NULL;
  if (io_handle_open(core->io, &r->handle, IO_INVALID_SOCKET, -1) != 0) {
    free(r);
    return NULL;
  }
  atomic_init(&r->refs, 1);
  r->id = atomic_fetch_add_explicit(&next_room_id, 1, memory_order_relaxed);
  r->core = core;
  r->handler = handler;
  r->context = context;
  r->extra_size = extra;
  engine_lock_init(&r->lock);
  strand_init(&r->strand);
  engine__live_add(1);
  return r;
}

uint64_t room_id(const room_t *r) { return r->id; }
void *room_extra(room_t *r) { return (char *)r + room_extra_offset(); }
void *room_context(const room_t *r) { return r->context; }

room_t *room_acquire(room_t *r) {
  atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
  return r;
}

void room_release(room_t *r) {
  if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (r->handler && r->handler->on_free)
    r->handler->on_free(r);
  engine_lock_destroy(&r->lock);
  free(r);
  engine__live_add(-1);
}

int room_is_open(room_t *r) {
  engine_lock(&r->lock);
  int open = !r->closing;
  engine_unlock(&r->lock);
  return open;
}

int room_in_order(const room_t *r) { return io_handle_on_worker(&r->handle); }

static void on_close_op(io_op_t *op, int status, size_t bytes) {
  (void)status;
  (void)bytes;
  room_t *r = container_of(op, room_t, close_op);
  strand_cancel_timers(&r->strand, &room_strand_ops);
  if (r->handler && r->handler->on_close)
    r->handler->on_close(r);
  room_release(r); /* the close op's reference */
}

int room_close(room_t *r) {
  engine_lock(&r->lock);
  if (r->closing) {
    engine_unlock(&r->lock);
    return ENGINE_E_CLOSED;
  }
  r->closing = 1;
  engine_unlock(&r->lock);
  /* The room's own op: a close can never fail for want of memory. */
  room_acquire(r);
  r->close_op.complete = on_close_op;
  io_post(&r->handle, &r->close_op, 0);
  return ENGINE_OK;
}

int room_post(room_t *r, room_fn fn, room_fn done, void *arg, void *arg2) {
  if (!fn)
    return ENGINE_E_INVAL;
  strand_call_t call = {.kind = STRAND_ROOM,
                        .fn.room = fn,
                        .done.room = done,
                        .arg = arg,
                        .arg2 = arg2};
  return strand_post(&r->strand, &room_strand_ops, &call, 0);
}

int room_post_always(room_t *r, room_fn fn, void *arg, void *arg2) {
  if (!fn)
    return ENGINE_E_INVAL;
  strand_call_t call = {
      .kind = STRAND_ROOM, .fn.room = fn, .arg = arg, .arg2 = arg2};
  return strand_post(&r->strand, &room_strand_ops, &call, 1);
}

uint64_t room_timer_start(room_t *r, uint32_t delay_ms, uint32_t repeat_ms,
                          room_tick_fn fn, room_fn done, void *arg,
                          void *arg2) {
  if (!fn)
    return 0;
  strand_call_t call = {.kind = STRAND_ROOM_TICK,
                        .fn.room_tick = fn,
                        .done.room = done,
                        .arg = arg,
                        .arg2 = arg2};
  return strand_timer_start(&r->strand, &room_strand_ops, delay_ms, repeat_ms,
                            &call, 0);
}

int room_timer_stop(room_t *r, uint64_t timer_id) {
  return strand_timer_stop(&r->strand, &room_strand_ops, timer_id);
}
