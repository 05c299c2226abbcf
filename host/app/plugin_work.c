/*
 * Work (SPEC section 12): a plugin's blocking call runs on the host's work
 * pool (engine work_pool_t), never on an I/O worker; its done runs back in
 * the serial order of the session (or room) that asked, exactly once, also
 * when that one has ended meanwhile (ended = 1) and also at a stop.
 *
 * A call holds its owner (the session) and the generations whose code its
 * work and done are, as a timer or post does, until done has returned; the
 * host lists the calls in flight so that a stop whose drain_timeout_ms
 * passes can let go of what they hold without waiting for them.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "host_internal.h"

/* The address of a function pointer, as the generations compare it. */
static uintptr_t code_address(const void *fn_bytes, size_t size) {
  uintptr_t address = 0;
  memcpy(&address, fn_bytes, size < sizeof address ? size : sizeof address);
  return address;
}

/* A call's stripe: by its address, past malloc's alignment bits. */
static struct work_stripe *stripe_of(const work_call_t *c) {
  uintptr_t a = (uintptr_t)c;
  return &c->host->work_stripes[(a >> 6 ^ a >> 12) & (WORK_STRIPES - 1)];
}

static void lock_all_stripes(host_t *host) {
  for (size_t i = 0; i < WORK_STRIPES; i++)
    pthread_mutex_lock(&host->work_stripes[i].lock);
}

static void unlock_all_stripes(host_t *host) {
  for (size_t i = WORK_STRIPES; i-- > 0;)
    pthread_mutex_unlock(&host->work_stripes[i].lock);
}

/* Under the call's stripe lock. */
static void unlist(work_call_t *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    stripe_of(c)->calls = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

void work_call_end(work_call_t *c) {
  struct work_stripe *stripe = stripe_of(c);
  pthread_mutex_lock(&stripe->lock);
  unlist(c);
  void *owner = c->owner;
  c->owner = NULL;
  pthread_mutex_unlock(&stripe->lock);
  if (owner)
    c->release_owner(owner);
  generation_drop_holds2(c->work_code, c->done_code);
  free(c);
}

/* On the pool thread, after work returned: done goes to the owner's order.
 * Under the stripe lock, so that a stop that gave up on the calls (and then
 * ends the cores) never sees a post arrive after it. */
static void work_finish(void *arg) {
  work_call_t *c = arg;
  struct work_stripe *stripe = stripe_of(c);
  pthread_mutex_lock(&stripe->lock);
  if (atomic_load(&c->host->work_abandoned)) {
    /* The stop went on without this call: its owner was let go of there
     * (or is here), and its code holds stay, so the library that ran work
     * stays mapped to the end of the process. */
    unlist(c);
    void *owner = c->owner;
    c->owner = NULL;
    if (owner)
      c->release_owner(owner);
    pthread_mutex_unlock(&stripe->lock);
    free(c);
    return;
  }
  int rc = c->post_back(c);
  pthread_mutex_unlock(&stripe->lock);
  if (rc != 0) {
    log_write(LOG_ERROR, "host",
              "plugin %s: out of memory handing a work's result back; its "
              "done does not run (what its argument holds is lost)",
              c->plugin_name);
    work_call_end(c);
  }
}

static void work_run(void *arg) {
  work_call_t *c = arg;
  c->work(c->arg);
}

int work_submit(const work_call_t *call) {
  work_call_t *c = malloc(sizeof *c);
  if (!c) {
    call->release_owner(call->owner);
    return IOCPHOST_E_NOMEM;
  }
  *c = *call;
  host_t *host = c->host;
  generation_hold_code2(host, code_address(&c->work, sizeof c->work),
                        code_address(&c->done, sizeof c->done), &c->work_code,
                        &c->done_code);
  c->prev = NULL;
  struct work_stripe *stripe = stripe_of(c);
  pthread_mutex_lock(&stripe->lock);
  int rc = IOCPHOST_E_CLOSED;
  /* host->work is cleared under every stripe lock (work_stop). */
  if (host->work && !atomic_load(&host->work_abandoned)) {
    /* Listed before it can finish: work_call_end unlists it. */
    c->next = stripe->calls;
    if (c->next)
      c->next->prev = c;
    stripe->calls = c;
    rc = work_pool_submit(host->work, work_run, work_finish, c);
    if (rc != ENGINE_OK)
      unlist(c);
  }
  pthread_mutex_unlock(&stripe->lock);
  if (rc != ENGINE_OK) {
    generation_drop_holds2(c->work_code, c->done_code);
    c->release_owner(c->owner);
    free(c);
  }
  return rc;
}

/* ---- the pool's life ---- */

int work_start(host_t *host, char *err, size_t err_len) {
  const config_t *cfg = host->config;
  work_pool_t *pool;
  char reason[256];
  if (work_pool_create(cfg->work_threads, cfg->work_queue_limit, &pool, reason,
                       sizeof reason) != 0) {
    snprintf(err, err_len, "work threads: %s", reason);
    return -1;
  }
  pthread_mutex_lock(&host->lock); /* status may be reading */
  lock_all_stripes(host);
  host->work = pool;
  unlock_all_stripes(host);
  pthread_mutex_unlock(&host->lock);
  work_pool_stats_t st;
  work_pool_get_stats(pool, &st);
  log_write(LOG_INFO, "host", "work: %d threads, queue limit %u", st.threads,
            st.queue_limit);
  return 0;
}

/* A call the pool dropped at destroy (its work never started): its done
 * still runs, in its owner's order, with ended = 1, so that the plugin
 * frees what arg holds. */
static void drop_call(void *arg) {
  work_call_t *c = arg;
  c->skipped = 1;
  struct work_stripe *stripe = stripe_of(c);
  pthread_mutex_lock(&stripe->lock);
  int rc = c->post_back(c);
  pthread_mutex_unlock(&stripe->lock);
  if (rc != 0) {
    log_write(LOG_ERROR, "host",
              "plugin %s: out of memory at the stop; a work's done does not "
              "run (what its argument holds is lost)",
              c->plugin_name);
    work_call_end(c);
  }
}

void work_stop(host_t *host, uint64_t deadline_ms) {
  pthread_mutex_lock(&host->lock);
  work_pool_t *pool = host->work;
  pthread_mutex_unlock(&host->lock);
  if (!pool)
    return;
  uint64_t now = clock_now_ms();
  uint32_t left = now < deadline_ms ? (uint32_t)(deadline_ms - now) : 0;
  int drained = work_pool_drain(pool, left) == 0;
  pthread_mutex_lock(&host->lock);
  lock_all_stripes(host);
  host->work = NULL;
  unlock_all_stripes(host);
  pthread_mutex_unlock(&host->lock);
  if (drained) {
    work_pool_destroy(pool, NULL);
    return;
  }
  work_pool_stats_t st;
  work_pool_get_stats(pool, &st);
  lock_all_stripes(host);
  atomic_store(&host->work_abandoned, 1);
  const char *plugin = NULL;
  size_t listed = 0;
  for (size_t i = 0; i < WORK_STRIPES; i++)
    for (work_call_t *c = host->work_stripes[i].calls; c; c = c->next) {
      if (!plugin)
        plugin = c->plugin_name;
      listed++;
    }
  log_write(LOG_WARN, "host",
            "drain_timeout_ms %u passed with %u work items running and %u "
            "queued (plugin %s%s): the queued ones get done with ended = 1 "
            "without running; the running ones are left to end (their done "
            "never runs) and their plugins stay loaded until the process "
            "exits",
            host->config->drain_timeout_ms, st.running, st.queued,
            plugin ? plugin : "-", listed > 1 ? " and others" : "");
  unlock_all_stripes(host);
  work_pool_destroy(pool, drop_call);
  /* The running ones hold their owners: let go of them now, so the
   * sessions (and their services) can go. */
  lock_all_stripes(host);
  for (size_t i = 0; i < WORK_STRIPES; i++)
    for (work_call_t *c = host->work_stripes[i].calls; c; c = c->next) {
      if (c->owner && !c->skipped) {
        c->release_owner(c->owner);
        c->owner = NULL;
      }
    }
  unlock_all_stripes(host);
}

/* ---- session_work ---- */

static void release_session(void *owner) { session_release(owner); }

static void session_done(session_t *s, void *call, void *unused) {
  (void)unused;
  work_call_t *c = call;
  watch_mark_t mark =
      watch_session(s, c->done_code ? c->done_code : session_generation(s),
                    WATCH_SESSION_WORK_DONE, -1);
  c->done.session(PLUGIN_SESSION(s), plugin_state(s), c->arg,
                  c->skipped || !session_is_open(s));
  watch_end(&mark); /* before work_call_end lets go of done_code */
  work_call_end(c);
}

static int session_post_back(work_call_t *c) {
  return session_post_always(c->owner, session_done, c, NULL);
}

int api_session_work(iocphost_session_t *s, iocphost_work_fn work,
                     iocphost_session_done_fn done, void *arg) {
  if (!s || !work || !done)
    return IOCPHOST_E_INVAL;
  session_t *session = SESSION(s);
  if (!session_is_open(session))
    return IOCPHOST_E_CLOSED;
  host_service_t *hs = host_service_of(session);
  work_call_t call = {.host = hs->host,
                      .work = work,
                      .done.session = done,
                      .arg = arg,
                      .owner = session_acquire(session),
                      .release_owner = release_session,
                      .post_back = session_post_back,
                      .plugin_name = hs->plugin->name};
  return work_submit(&call);
}
