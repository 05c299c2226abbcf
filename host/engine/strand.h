/*
 * A strand: the serial order of one engine object (a session, a room) and
 * what runs in it besides I/O - timers and posted functions. One mechanism
 * for every kind of owner (SPEC section 12), so a room's timers and posts
 * are a session's, not a copy of them.
 *
 * The serial order itself is the owner's io_handle_t: every completion on
 * it runs on its worker, one at a time (backend.h). The strand adds:
 *  - timers, each holding a reference to its owner until it is gone;
 *    repeating ones are due at start + delay + n * repeat (no drift), and
 *    a tick that runs late is counted, never skipped;
 *  - posts, each holding a reference to its owner until it ran (or was
 *    dropped);
 *  - a gate: the owner says (under its lock) whether its own code may still
 *    run - a session that is closing, a room that is closed - and what the
 *    gate shuts is dropped; "internal" timers and posts (the engine's own)
 *    pass the gate;
 *  - a done callback per timer or post, called exactly once when it is
 *    gone, whether it ran or not (the host drops its hold on the plugin
 *    code there).
 * Engine internal: sessions and rooms wrap it in their public functions,
 * passing their kind's ops (strand_owner_ops_t) with every call.
 */
#ifndef IOCPHOST_STRAND_H
#define IOCPHOST_STRAND_H

#include <pthread.h>
#include <stdint.h>

#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/lock.h"

typedef struct strand strand_t;
typedef struct strand_timer strand_timer_t;

/* What a strand's callbacks are: the owner's kind decides the signature,
 * so every function is called through its own type. */
typedef enum strand_call_kind {
  STRAND_SESSION1 = 1, /* session_fn(s, arg) */
  STRAND_SESSION2,     /* session_fn2(s, arg, arg2) */
  STRAND_ROOM,         /* room_fn(r, arg, arg2) */
  STRAND_ROOM_TICK     /* room_tick_fn(r, arg, arg2, tick) */
} strand_call_kind_t;

typedef struct strand_call {
  uint8_t kind; /* strand_call_kind_t */
  union {
    session_fn session1;
    session_fn2 session2;
    room_fn room;
    room_tick_fn room_tick;
  } fn;
  /* Once, when the timer or post is gone: session_fn2 for sessions,
   * room_fn for rooms (by the owner's kind); may be NULL. */
  union {
    session_fn2 session;
    room_fn room;
  } done;
  void *arg;
  void *arg2;
} strand_call_t;

typedef struct strand_owner_ops {
  void (*ref)(void *owner);
  void (*release)(void *owner);
  /* Under the owner's lock: may the owner's own (non-internal) timers and
   * posts start now (a session not yet open may get them), and may they
   * run now? */
  int (*may_start)(void *owner);
  int (*may_run)(void *owner);
  uint8_t room; /* the owner is a room (done callbacks are room_fn) */
  /* Where the owner keeps its strand, its handle (the serial order) and
   * its lock (which guards the timers), as offsetof: one table per kind of
   * owner says it, instead of three pointers in every strand. */
  size_t strand_at, handle_at, lock_at;
} strand_owner_ops_t;

/* What varies per owner: its timers. The owner's ops (one table per kind
 * of owner) come with every call, so they cost an idle owner nothing. */
struct strand {
  strand_timer_t *timers;
};

void strand_init(strand_t *st);

/* Starts a timer (from any thread): after delay_ms, then every repeat_ms
 * if repeat_ms > 0. Returns its id (> 0), or 0 when the gate is shut (and
 * internal is 0) or memory ran out: then done is not called. */
uint64_t strand_timer_start(strand_t *st, const strand_owner_ops_t *ops,
                            uint32_t delay_ms, uint32_t repeat_ms,
                            const strand_call_t *call, int internal);
/* Stops a timer of the owner's own; ENGINE_E_NOTFOUND if it is gone, was
 * stopped, or is internal. */
int strand_timer_stop(strand_t *st, const strand_owner_ops_t *ops,
                      uint64_t timer_id);
/* Worker only: stops every timer (internal ones too); each completes and
 * frees itself (done runs). */
void strand_cancel_timers(strand_t *st, const strand_owner_ops_t *ops);

/* Runs call soon in the serial order (from any thread). internal: runs
 * even when the gate is shut by then. ENGINE_OK, ENGINE_E_CLOSED (gate
 * shut now, not internal: done is not called) or ENGINE_E_NOMEM. */
int strand_post(strand_t *st, const strand_owner_ops_t *ops,
                const strand_call_t *call, int internal);

#endif
