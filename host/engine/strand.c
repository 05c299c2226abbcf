/*
 * Strands: timers and posts in an owner's serial order (strand.h says
 * what, and why one mechanism serves sessions and rooms).
 *
 * References: a timer holds one on its owner from its start until it is
 * gone (after its last run, or cancelled); a post from its issue until it
 * ran or was dropped. Each frees its record and calls its done exactly
 * once, on the worker, in the owner's order.
 *
 * A timer started from another thread travels to the worker as a post and
 * is armed there. Armed directly, it would wait in the worker's mailbox,
 * where io_timer_cancel cannot reach it: a close in between would leave it
 * armed for its whole delay, holding its owner that long.
 */
#include "engine/strand.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "engine/internal.h"
#include "engine/log.h"

struct strand_timer {
  io_timer_t timer;
  strand_t *strand;
  const strand_owner_ops_t *ops;
  strand_timer_t *next;
  uint64_t id;
  strand_call_t call;
  uint32_t repeat_ms;
  uint8_t stopped;  /* under the owner's lock */
  uint8_t internal; /* the engine's own: passes the gate */
  uint64_t due_ms;  /* the next tick's due time (monotonic ms) */
  uint64_t count;   /* ticks run */
  uint32_t late_count;
};

typedef struct strand_post_op {
  io_op_t op;
  strand_t *strand;
  const strand_owner_ops_t *ops;
  strand_call_t call;
  uint8_t internal;
} strand_post_op_t;

/* A tick later than this (ms) counts as late: the timer heap's own
 * granularity is a millisecond, and a tick is never early. */
#define LATE_AFTER_MS 2

static atomic_uint_fast64_t next_timer_id = 1;

void strand_init(strand_t *st) { st->timers = NULL; }

static void *owner_of(const strand_t *st, const strand_owner_ops_t *ops) {
  return (char *)st - ops->strand_at;
}

static io_handle_t *handle_of(const strand_t *st,
                              const strand_owner_ops_t *ops) {
  return (io_handle_t *)((char *)owner_of(st, ops) + ops->handle_at);
}

static engine_lock_t *lock_of(const strand_t *st,
                              const strand_owner_ops_t *ops) {
  return (engine_lock_t *)((char *)owner_of(st, ops) + ops->lock_at);
}

static void invoke(const strand_call_t *c, void *owner,
                   const room_tick_t *tick) {
  switch (c->kind) {
  case STRAND_SESSION1:
    c->fn.session1(owner, c->arg);
    break;
  case STRAND_SESSION2:
    c->fn.session2(owner, c->arg, c->arg2);
    break;
  case STRAND_ROOM:
    c->fn.room(owner, c->arg, c->arg2);
    break;
  case STRAND_ROOM_TICK:
    c->fn.room_tick(owner, c->arg, c->arg2, tick);
    break;
  default:
    break;
  }
}

static void invoke_done(const strand_t *st, const strand_owner_ops_t *ops,
                        const strand_call_t *c) {
  if (ops->room) {
    if (c->done.room)
      c->done.room(owner_of(st, ops), c->arg, c->arg2);
  } else if (c->done.session) {
    c->done.session(owner_of(st, ops), c->arg, c->arg2);
  }
}

/* Under the owner's lock. */
static int may_run(const strand_t *st, const strand_owner_ops_t *ops,
                   int internal) {
  return internal || ops->may_run(owner_of(st, ops));
}

static int may_start(const strand_t *st, const strand_owner_ops_t *ops,
                     int internal) {
  return internal || ops->may_start(owner_of(st, ops));
}

/* ---- timers ---- */

void strand_cancel_timers(strand_t *st, const strand_owner_ops_t *ops) {
  engine_lock(lock_of(st, ops));
  for (strand_timer_t *t = st->timers; t; t = t->next) {
    t->stopped = 1;
    io_timer_cancel(&t->timer);
  }
  engine_unlock(lock_of(st, ops));
}

static void unlink_timer(strand_t *st, const strand_owner_ops_t *ops,
                         strand_timer_t *t) {
  engine_lock(lock_of(st, ops));
  for (strand_timer_t **p = &st->timers; *p; p = &(*p)->next) {
    if (*p == t) {
      *p = t->next;
      break;
    }
  }
  engine_unlock(lock_of(st, ops));
}

static void timer_gone(strand_timer_t *t) {
  strand_t *st = t->strand;
  const strand_owner_ops_t *ops = t->ops;
  void *owner = owner_of(st, ops);
  unlink_timer(st, ops, t);
  invoke_done(st, ops, &t->call);
  free(t);
  engine__live_add(-1);
  ops->release(owner); /* st may be gone after this */
}

static void on_timer(io_op_t *op, int status, size_t bytes) {
  (void)bytes;
  strand_timer_t *t = container_of(op, strand_timer_t, timer.op);
  strand_t *st = t->strand;
  const strand_owner_ops_t *ops = t->ops;
  engine_lock(lock_of(st, ops));
  int run = status == 0 && !t->stopped && may_run(st, ops, t->internal);
  engine_unlock(lock_of(st, ops));
  if (!run) {
    timer_gone(t);
    return;
  }
  uint64_t now = clock_now_ms();
  room_tick_t tick = {.due_ms = t->due_ms, .count = ++t->count};
  if (now > t->due_ms + LATE_AFTER_MS) {
    tick.late_ms = (uint32_t)(now - t->due_ms);
    tick.late_count = ++t->late_count;
  } else {
    tick.late_count = t->late_count;
  }
  invoke(&t->call, owner_of(st, ops), &tick);
  engine_lock(lock_of(st, ops));
  int again = t->repeat_ms > 0 && !t->stopped && may_run(st, ops, t->internal);
  engine_unlock(lock_of(st, ops));
  if (!again) {
    timer_gone(t);
    return;
  }
  /* From the schedule, not from now: no drift. A tick already due runs at
   * once (late), so none is skipped. */
  t->due_ms += t->repeat_ms;
  now = clock_now_ms();
  io_timer_start(&t->timer, t->due_ms > now ? t->due_ms - now : 0);
}

static void on_timer_arm(io_op_t *op, int status, size_t bytes) {
  strand_timer_t *t = container_of(op, strand_timer_t, timer.op);
  strand_t *st = t->strand;
  const strand_owner_ops_t *ops = t->ops;
  t->timer.op.complete = on_timer;
  engine_lock(lock_of(st, ops));
  /* Stopped, or its owner closed while it travelled here: cancelling marks
   * every listed timer, but only the gate says a close ran. */
  int stopped = t->stopped || !may_start(st, ops, t->internal);
  engine_unlock(lock_of(st, ops));
  if (stopped || status != 0) {
    on_timer(op, IO_ECANCELED, bytes);
    return;
  }
  uint64_t now = clock_now_ms();
  io_timer_start(&t->timer, t->due_ms > now ? t->due_ms - now : 0);
}

uint64_t strand_timer_start(strand_t *st, const strand_owner_ops_t *ops,
                            uint32_t delay_ms, uint32_t repeat_ms,
                            const strand_call_t *call, int internal) {
  strand_timer_t *t = calloc(1, sizeof *t);
  if (!t)
    return 0;
  t->strand = st;
  t->ops = ops;
  t->call = *call;
  t->repeat_ms = repeat_ms;
  t->internal = (uint8_t)internal;
  t->id = atomic_fetch_add_explicit(&next_timer_id, 1, memory_order_relaxed);
  io_timer_init(&t->timer, handle_of(st, ops), on_timer);
  engine_lock(lock_of(st, ops));
  if (!may_start(st, ops, internal)) {
    engine_unlock(lock_of(st, ops));
    free(t);
    return 0;
  }
  t->next = st->timers;
  st->timers = t;
  ops->ref(owner_of(st, ops));
  engine__live_add(1);
  uint64_t id = t->id;
  t->due_ms = clock_now_ms() + delay_ms;
  if (io_handle_on_worker(handle_of(st, ops))) {
    io_timer_start(&t->timer, delay_ms);
  } else {
    t->timer.op.complete = on_timer_arm;
    io_post(handle_of(st, ops), &t->timer.op, 0);
  }
  engine_unlock(lock_of(st, ops));
  return id;
}

static void cancel_timer_on_worker(strand_t *st,
                                   const strand_owner_ops_t *ops,
                                   uint64_t id) {
  engine_lock(lock_of(st, ops));
  for (strand_timer_t *t = st->timers; t; t = t->next) {
    if (t->id == id) {
      io_timer_cancel(&t->timer);
      break;
    }
  }
  engine_unlock(lock_of(st, ops));
}

/* The cancel, travelling to the worker: it needs no reference of its own
 * on the owner, as the timer it cancels holds one until it is gone. */
typedef struct timer_cancel_op {
  io_op_t op;
  strand_t *strand;
  const strand_owner_ops_t *ops;
  uint64_t id;
} timer_cancel_op_t;

static void on_timer_cancel(io_op_t *op, int status, size_t bytes) {
  (void)status;
  (void)bytes;
  timer_cancel_op_t *c = container_of(op, timer_cancel_op_t, op);
  strand_t *st = c->strand;
  const strand_owner_ops_t *ops = c->ops;
  void *owner = owner_of(st, ops);
  cancel_timer_on_worker(st, ops, c->id);
  free(c);
  engine__live_add(-1);
  ops->release(owner);
}

int strand_timer_stop(strand_t *st, const strand_owner_ops_t *ops,
                      uint64_t timer_id) {
  engine_lock(lock_of(st, ops));
  strand_timer_t *t = st->timers;
  while (t && t->id != timer_id)
    t = t->next;
  if (!t || t->stopped || t->internal) {
    engine_unlock(lock_of(st, ops));
    return ENGINE_E_NOTFOUND;
  }
  t->stopped = 1;
  engine_unlock(lock_of(st, ops));
  /* Give the memory back now rather than when it would have fired. */
  if (io_handle_on_worker(handle_of(st, ops))) {
    cancel_timer_on_worker(st, ops, timer_id);
    return ENGINE_OK;
  }
  timer_cancel_op_t *c = calloc(1, sizeof *c);
  if (!c)
    return ENGINE_OK; /* stopped all the same: it frees itself when due */
  c->strand = st;
  c->ops = ops;
  c->id = timer_id;
  c->op.complete = on_timer_cancel;
  ops->ref(owner_of(st, ops));
  engine__live_add(1);
  io_post(handle_of(st, ops), &c->op, 0);
  return ENGINE_OK;
}

/* ---- posts ---- */

static void on_post(io_op_t *op, int status, size_t bytes) {
  (void)status;
  (void)bytes;
  strand_post_op_t *p = container_of(op, strand_post_op_t, op);
  strand_t *st = p->strand;
  const strand_owner_ops_t *ops = p->ops;
  void *owner = owner_of(st, ops);
  engine_lock(lock_of(st, ops));
  int run = may_run(st, ops, p->internal);
  engine_unlock(lock_of(st, ops));
  if (run)
    invoke(&p->call, owner, NULL);
  invoke_done(st, ops, &p->call);
  free(p);
  engine__live_add(-1);
  ops->release(owner);
}

int strand_post(strand_t *st, const strand_owner_ops_t *ops,
                const strand_call_t *call, int internal) {
  strand_post_op_t *p = calloc(1, sizeof *p);
  if (!p)
    return ENGINE_E_NOMEM;
  p->strand = st;
  p->ops = ops;
  p->call = *call;
  p->internal = (uint8_t)internal;
  p->op.complete = on_post;
  engine_lock(lock_of(st, ops));
  if (!may_start(st, ops, internal)) {
    engine_unlock(lock_of(st, ops));
    free(p);
    return ENGINE_E_CLOSED;
  }
  ops->ref(owner_of(st, ops));
  engine__live_add(1);
  io_post(handle_of(st, ops), &p->op, 0);
  engine_unlock(lock_of(st, ops));
  return ENGINE_OK;
}
