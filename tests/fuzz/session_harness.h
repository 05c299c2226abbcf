/*
 * A session with its socket stubbed out, fed by hand: the engine's real
 * receive path (session__receive in host/engine/session.c: kept input,
 * max_recv_bytes, incomplete_timeout_ms) and the real send queue
 * (send_queue_limit_bytes), with whatever handler the caller gives the
 * service. Used by the libFuzzer target fuzz_recv and by
 * tests/unit/test_engine_hostile.c, so the harness itself runs in CI.
 *
 * The session is attached to IO_INVALID_SOCKET: its handle is a place in a
 * worker's serial order and nothing more. Its receive op waits forever (until
 * the session is closed) and so does a send, so sends pile up in the queue
 * until the queue limit ends the session. Input is fed from a function
 * posted to the session, so the receive path runs on the session's worker
 * as it does for real.
 *
 * Header-only (static functions), as tests/unit builds one file per test.
 */
#ifndef IOCPHOST_SESSION_HARNESS_H
#define IOCPHOST_SESSION_HARNESS_H

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/internal.h"

typedef struct harness_chunk {
  const uint8_t *data;
  size_t len;
} harness_chunk_t;

typedef struct harness_feed {
  const harness_chunk_t *chunks;
  size_t count;
  size_t delivered; /* chunks handed to the receive path */
  /* What the session kept after the last chunk, read on the worker. */
  uint32_t pending_len;
  uint32_t pending_cap;
  int open_after;
  int done;
  pthread_mutex_t lock;
  pthread_cond_t cond;
} harness_feed_t;

typedef struct harness_session {
  service_t *svc;
  session_t *s; /* held by the harness: one reference of its own */
} harness_session_t;

static void harness_feed_on_worker(session_t *s, void *arg) {
  harness_feed_t *f = arg;
  for (size_t i = 0; i < f->count && session_is_open(s); i++) {
    session__receive(s, f->chunks[i].data, f->chunks[i].len);
    f->delivered++;
  }
  pthread_mutex_lock(&f->lock);
  f->pending_len = s->kept ? s->kept->len : 0;
  f->pending_cap = s->kept ? s->kept->cap : 0;
  f->open_after = session_is_open(s);
  f->done = 1;
  pthread_cond_broadcast(&f->cond);
  pthread_mutex_unlock(&f->lock);
}

/* Opens a session of svc (a service that was created, not started) with no
 * socket; on_connected runs on its worker before anything fed. The handler
 * must not close the session in on_connected. Returns 0 or -1. */
static int harness_open(harness_session_t *h, service_t *svc) {
  h->svc = svc;
  h->s = session__new(svc);
  if (!h->s)
    return -1;
  session__ref(h->s);
  if (session__attach(h->s, IO_INVALID_SOCKET, 0) != 0) {
    session_release(h->s);
    h->s = NULL;
    return -1;
  }
  return 0;
}

/* Feeds the chunks, one receive each, stopping once the session is no
 * longer open; waits (at most timeout_ms) until the worker is done. Returns
 * 0, or -1 if the worker did not finish in time or the session had already
 * ended. */
static int harness_feed(harness_session_t *h, harness_feed_t *f,
                        uint32_t timeout_ms) {
  f->delivered = 0;
  f->done = 0;
  pthread_mutex_init(&f->lock, NULL);
  pthread_cond_init(&f->cond, NULL);
  int rc = -1;
  if (session_post(h->s, harness_feed_on_worker, f) == ENGINE_OK) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&f->lock);
    while (!f->done)
      if (pthread_cond_timedwait(&f->cond, &f->lock, &deadline) != 0)
        break;
    rc = f->done ? 0 : -1;
    pthread_mutex_unlock(&f->lock);
  }
  if (rc == 0) {
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
  }
  return rc;
}

/* Ends the session (if it has not ended) and waits until it is freed.
 * Returns 0, or -1 if it was not freed within timeout_ms. */
static int harness_close(harness_session_t *h, uint32_t timeout_ms) {
  session_abort(h->s, REASON_LOCAL);
  session_release(h->s);
  h->s = NULL;
  return service_wait_closed(h->svc, timeout_ms);
}

#endif /* IOCPHOST_SESSION_HARNESS_H */
