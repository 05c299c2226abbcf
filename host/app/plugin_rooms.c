/*
 * Rooms for plugins (SPEC section 12, plugin.h's ABI 1.2 room functions):
 * the engine's rooms (room.c: a serial order, posts, ticks, close) with the
 * plugin's class and state, members, broadcast, lookup by id, and the
 * generation that created them.
 *
 * Members. A membership is one node, in two lists: its room's (touched
 * only in the room's order) and its session's (under host->rooms_lock,
 * since the session's order and the rooms' differ). Each member holds a
 * reference to its session. Joins and leaves travel to the room's order as
 * posts; when a session ends (on_disconnected), its list is taken at once
 * and each of its rooms is sent a leave, heard in that room's own order;
 * the room then finds the member by session, so no post ever points at a
 * node another leave may have freed.
 *
 * Lifetime. room_create gives the room two references: the host's, kept
 * while the room is open, and the plugin's. The close (room_close, or the
 * host's stop) runs in the room's order: every member leaves
 * (IOCPHOST_LEAVE_CLOSING), on_close runs, the room leaves the registry and
 * the host lets go of it. The room holds its generation loaded (a hold)
 * until its memory goes, and so does every post or timer for the code it
 * will run.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cond_wait.h"
#include "engine/log.h"
#include "framing.h"
#include "host_internal.h"

typedef struct membership membership_t;

struct membership {
  session_t *session; /* acquired while a member */
  struct host_room *room;
  membership_t *room_prev, *room_next; /* the room's list: its order only */
  membership_t *session_next;          /* the session's: rooms_lock */
  uint8_t in_session_list;             /* rooms_lock */
};

typedef struct host_room {
  host_t *host;
  room_t *room;
  generation_t *generation; /* held until the memory goes */
  const iocphost_room_class_t *room_class;
  void *state;                 /* state_size bytes, after this record */
  membership_t *members;       /* the room's order only */
  uint32_t member_count;       /* the room's order only */
  atomic_uint members_now;     /* for status, from any thread */
  uint8_t registered;          /* rooms_lock */
  uint8_t open_queued;         /* on_open will run: so must on_close */
  struct host_room *hash_next; /* rooms_lock */
} host_room_t;

#define HOST_ROOM_BYTES ((sizeof(host_room_t) + 15) & ~(size_t)15)
#define ROOM(x) ((room_t *)(x))
#define PLUGIN_ROOM(x) ((iocphost_room_t *)(x))

static host_room_t *host_room(room_t *r) { return room_extra(r); }

/* watch_begin (watchdog.h) for a call of code's generation (the room's
 * when NULL) in room r's order. */
static watch_mark_t watch_room(room_t *r, generation_t *code,
                               watch_kind_t kind) {
  host_room_t *h = host_room(r);
  watch_call_t call = {h->host, code ? code : h->generation, kind, NULL,
                       room_id(r), -1};
  return watch_begin(&call);
}

/* Smallest room class the host accepts: up to on_close. */
#define ROOM_CLASS_MIN_SIZE                                                    \
  (offsetof(iocphost_room_class_t, on_close) +                                 \
   sizeof(((iocphost_room_class_t *)0)->on_close))

/* ---- the registry: rooms by id, under rooms_lock ---- */

static size_t bucket_of(const host_t *host, uint64_t id) {
  return (size_t)(id * 0x9E3779B97F4A7C15ULL >> 7) &
         (host->room_bucket_count - 1);
}

static int registry_add(host_t *host, host_room_t *h) {
  pthread_mutex_lock(&host->rooms_lock);
  if (host->room_count + 1 > host->room_bucket_count) {
    size_t count = host->room_bucket_count ? host->room_bucket_count * 2 : 64;
    host_room_t **buckets = calloc(count, sizeof *buckets);
    if (!buckets && host->room_bucket_count == 0) {
      pthread_mutex_unlock(&host->rooms_lock);
      return -1;
    }
    if (buckets) { /* else: keep the old table, longer chains */
      host_room_t **old = host->room_buckets;
      size_t old_count = host->room_bucket_count;
      host->room_buckets = buckets;
      host->room_bucket_count = count;
      for (size_t i = 0; i < old_count; i++) {
        host_room_t *e = old[i];
        while (e) {
          host_room_t *next = e->hash_next;
          size_t b = bucket_of(host, room_id(e->room));
          e->hash_next = buckets[b];
          buckets[b] = e;
          e = next;
        }
      }
      free(old);
    }
  }
  size_t b = bucket_of(host, room_id(h->room));
  h->hash_next = host->room_buckets[b];
  host->room_buckets[b] = h;
  h->registered = 1;
  host->room_count++;
  pthread_mutex_unlock(&host->rooms_lock);
  return 0;
}

static void registry_remove(host_t *host, host_room_t *h) {
  pthread_mutex_lock(&host->rooms_lock);
  if (h->registered) {
    host_room_t **p = &host->room_buckets[bucket_of(host, room_id(h->room))];
    while (*p && *p != h)
      p = &(*p)->hash_next;
    if (*p)
      *p = h->hash_next;
    h->registered = 0;
    host->room_count--;
    pthread_cond_broadcast(&host->rooms_changed);
  }
  pthread_mutex_unlock(&host->rooms_lock);
}

/* ---- members: in the room's order ---- */

static membership_t *find_member(host_room_t *h, session_t *s) {
  for (membership_t *m = h->members; m; m = m->room_next)
    if (m->session == s)
      return m;
  return NULL;
}

/* Out of both lists; the caller calls on_leave, then frees m. */
static void unlink_member(host_room_t *h, membership_t *m) {
  if (m->room_prev)
    m->room_prev->room_next = m->room_next;
  else
    h->members = m->room_next;
  if (m->room_next)
    m->room_next->room_prev = m->room_prev;
  h->member_count--;
  atomic_store(&h->members_now, h->member_count);
  pthread_mutex_lock(&h->host->rooms_lock);
  if (m->in_session_list) {
    /* Listed: the session has not ended, its rooms are a list. */
    host_session_t *hs = host_session(m->session);
    membership_t **p = &hs->rooms;
    while (*p && *p != m)
      p = &(*p)->session_next;
    if (*p)
      *p = m->session_next;
    m->in_session_list = 0;
  }
  pthread_mutex_unlock(&h->host->rooms_lock);
}

static void member_leaves(host_room_t *h, membership_t *m,
                          iocphost_leave_t why) {
  unlink_member(h, m);
  if (h->room_class->on_leave) {
    watch_mark_t mark = watch_room(h->room, NULL, WATCH_ROOM_LEAVE);
    h->room_class->on_leave(PLUGIN_ROOM(h->room), h->state,
                            PLUGIN_SESSION(m->session), why);
    watch_end(&mark);
  }
  session_release(m->session);
  free(m);
}

static void join_in_order(room_t *r, void *session, void *unused) {
  (void)unused;
  host_room_t *h = host_room(r);
  session_t *s = session;
  if (find_member(h, s))
    return; /* joining twice is one membership */
  membership_t *m = calloc(1, sizeof *m);
  if (!m)
    return;
  m->session = session_acquire(s);
  m->room = h;
  /* A session that ended meanwhile does not become a member: its leaves
   * went out already. */
  pthread_mutex_lock(&h->host->rooms_lock);
  host_session_t *hs = host_session(s);
  int ended = session_rooms_ended(hs);
  if (!ended) {
    m->session_next = hs->rooms;
    hs->rooms = m;
    m->in_session_list = 1;
  }
  pthread_mutex_unlock(&h->host->rooms_lock);
  if (ended) {
    session_release(s);
    free(m);
    return;
  }
  m->room_next = h->members;
  if (h->members)
    h->members->room_prev = m;
  h->members = m;
  h->member_count++;
  atomic_store(&h->members_now, h->member_count);
  if (h->room_class->on_join) {
    watch_mark_t mark = watch_room(r, NULL, WATCH_ROOM_JOIN);
    h->room_class->on_join(PLUGIN_ROOM(r), h->state, PLUGIN_SESSION(s));
    watch_end(&mark);
  }
}

static void leave_in_order(room_t *r, void *session, void *why) {
  host_room_t *h = host_room(r);
  membership_t *m = find_member(h, session);
  if (m)
    member_leaves(h, m, (iocphost_leave_t)(uintptr_t)why);
}

/* done of the posts that carry a session: the post's own reference. */
static void release_session_arg(room_t *r, void *session, void *unused) {
  (void)r;
  (void)unused;
  session_release(session);
}

/* A session ended (its on_disconnected ran): it leaves each of its rooms,
 * in that room's order. */
void rooms_session_ended(session_t *s) {
  host_t *host = host_service_of(s)->host;
  host_session_t *hs = host_session(s);
  pthread_mutex_lock(&host->rooms_lock);
  membership_t *rooms = session_rooms(hs);
  hs->rooms = ROOMS_ENDED;
  size_t count = 0;
  for (membership_t *m = rooms; m; m = m->session_next)
    count++;
  /* Hold the rooms while posting: a room's own close may free its nodes as
   * soon as the lock is released. */
  room_t **held = count ? malloc(count * sizeof *held) : NULL;
  size_t n = 0;
  for (membership_t *m = rooms; m; m = m->session_next) {
    m->in_session_list = 0;
    if (held)
      held[n++] = room_acquire(m->room->room);
  }
  pthread_mutex_unlock(&host->rooms_lock);
  if (count && !held)
    log_write(LOG_ERROR, "rooms",
              "out of memory: session %llu leaves its %zu rooms only when "
              "they close",
              (unsigned long long)session_id(s), count);
  for (size_t i = 0; i < n; i++) {
    session_acquire(s);
    if (room_post(held[i], leave_in_order, release_session_arg, s,
                  (void *)(uintptr_t)IOCPHOST_LEAVE_ENDED) != ENGINE_OK)
      session_release(s); /* closed: its close takes the member out */
    room_release(held[i]);
  }
  free(held);
}

/* ---- the engine's room handler ---- */

static void on_room_close(room_t *r) {
  host_room_t *h = host_room(r);
  while (h->members)
    member_leaves(h, h->members, IOCPHOST_LEAVE_CLOSING);
  if (h->open_queued && h->room_class->on_close) {
    watch_mark_t mark = watch_room(r, NULL, WATCH_ROOM_CLOSE);
    h->room_class->on_close(PLUGIN_ROOM(r), h->state);
    watch_end(&mark);
  }
  registry_remove(h->host, h);
  room_release(r); /* the host's open reference */
}

static void on_room_free(room_t *r) {
  host_room_t *h = host_room(r);
  if (h->generation)
    generation_drop_room(h->generation);
}

static const room_handler_t room_handler = {.on_close = on_room_close,
                                            .on_free = on_room_free};

/* ---- plugin calls in the room's order ---- */

typedef struct room_call {
  iocphost_room_fn fn;
  iocphost_room_timer_fn timer_fn;
  void *arg;
  generation_t *generation; /* held: the code fn runs */
} room_call_t;

static generation_t *hold_code_of(host_t *host, const void *fn_bytes,
                                  size_t size) {
  uintptr_t address = 0;
  memcpy(&address, fn_bytes, size < sizeof address ? size : sizeof address);
  return generation_hold_code(host, address);
}

static void room_call_done(room_t *r, void *call, void *unused) {
  (void)unused;
  room_call_t *c = call;
  if (c->generation)
    generation_drop_hold(c->generation);
  free(c);
  host_t *host = host_room(r)->host;
  pthread_mutex_lock(&host->rooms_lock);
  if (--host->room_calls == 0)
    pthread_cond_broadcast(&host->rooms_changed);
  pthread_mutex_unlock(&host->rooms_lock);
}

static void run_room_call(room_t *r, void *call, void *unused) {
  (void)unused;
  room_call_t *c = call;
  watch_mark_t mark = watch_room(r, c->generation, WATCH_ROOM_POST);
  c->fn(PLUGIN_ROOM(r), host_room(r)->state, c->arg);
  watch_end(&mark);
}

static void run_room_tick(room_t *r, void *call, void *unused,
                          const room_tick_t *tick) {
  (void)unused;
  room_call_t *c = call;
  iocphost_tick_t t = {.due_ms = tick->due_ms,
                       .late_ms = tick->late_ms,
                       .late_count = tick->late_count,
                       .count = tick->count};
  watch_mark_t mark = watch_room(r, c->generation, WATCH_ROOM_TICK);
  generation_t *g = host_room(r)->generation;
  atomic_fetch_add_explicit(&g->ticks, 1, memory_order_relaxed);
  if (tick->late_ms > 0) {
    atomic_fetch_add_explicit(&g->late_ticks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->late_ms_sum, tick->late_ms,
                              memory_order_relaxed);
  }
  c->timer_fn(PLUGIN_ROOM(r), host_room(r)->state, c->arg, &t);
  watch_end(&mark);
}

/* ---- the API ---- */

static generation_t *generation_of_api(const iocphost_api_t *api) {
  return (generation_t *)api; /* the api is the generation's first member */
}

/* Rooms run on the core of the plugin's first service, or the first core. */
static core_t *core_for(host_t *host, const host_plugin_t *p) {
  const config_t *c = host->config;
  for (size_t i = 0; i < c->service_count; i++)
    if (host->services[i].plugin == p && host->cores[c->services[i].core_index])
      return host->cores[c->services[i].core_index];
  return c->core_count ? host->cores[0] : NULL;
}

static void open_in_order(room_t *r, void *arg, void *unused) {
  (void)unused;
  host_room_t *h = host_room(r);
  if (h->room_class->on_open) {
    watch_mark_t mark = watch_room(r, NULL, WATCH_ROOM_OPEN);
    h->room_class->on_open(PLUGIN_ROOM(r), h->state, arg);
    watch_end(&mark);
  }
}

static iocphost_room_t *api_room_create(const iocphost_api_t *api,
                                        const iocphost_room_class_t *cls,
                                        void *arg) {
  if (!api || !cls || cls->struct_size < ROOM_CLASS_MIN_SIZE)
    return NULL;
  generation_t *g = generation_of_api(api);
  host_t *host = g->plugin->host;
  core_t *core = core_for(host, g->plugin);
  if (!core)
    return NULL;
  size_t state = ((size_t)cls->state_size + 15) & ~(size_t)15;
  room_t *r = room_create(core, &room_handler, HOST_ROOM_BYTES + state, NULL);
  if (!r)
    return NULL;
  host_room_t *h = host_room(r);
  h->host = host;
  h->room = r;
  h->room_class = cls;
  h->state = (char *)h + HOST_ROOM_BYTES;
  pthread_mutex_lock(&host->gen_lock);
  g->holds++; /* the room's callbacks are this generation's code */
  g->rooms++;
  pthread_mutex_unlock(&host->gen_lock);
  h->generation = g;
  /* Always, even if the room is closed before it runs: on_open is a
   * room's first callback, on_close its last, and both run. A room that
   * fails before on_open is queued closes without calling the plugin. On
   * a failure the close alone ends the host's reference, the only one. */
  if (room_post_always(r, open_in_order, arg, NULL) != ENGINE_OK) {
    room_close(r);
    return NULL;
  }
  h->open_queued = 1;
  if (registry_add(host, h) != 0) {
    room_close(r); /* on_open, then on_close: the plugin sees it end */
    return NULL;
  }
  /* The host's reference stays until the close; the caller gets its own. */
  return PLUGIN_ROOM(room_acquire(r));
}

static uint64_t api_room_id(iocphost_room_t *room) {
  return room ? room_id(ROOM(room)) : 0;
}

static iocphost_room_t *api_room_find(const iocphost_api_t *api, uint64_t id) {
  if (!api)
    return NULL;
  generation_t *g = generation_of_api(api);
  host_t *host = g->plugin->host;
  room_t *found = NULL;
  pthread_mutex_lock(&host->rooms_lock);
  if (host->room_bucket_count) {
    for (host_room_t *h = host->room_buckets[bucket_of(host, id)]; h;
         h = h->hash_next) {
      if (room_id(h->room) == id && h->generation->plugin == g->plugin &&
          room_is_open(h->room)) {
        found = room_acquire(h->room);
        break;
      }
    }
  }
  pthread_mutex_unlock(&host->rooms_lock);
  return PLUGIN_ROOM(found);
}

static iocphost_room_t *api_room_acquire(iocphost_room_t *room) {
  return room ? PLUGIN_ROOM(room_acquire(ROOM(room))) : NULL;
}

static void api_room_release(iocphost_room_t *room) {
  if (room)
    room_release(ROOM(room));
}

static int api_room_close(iocphost_room_t *room) {
  if (!room)
    return IOCPHOST_E_INVAL;
  room_close(ROOM(room));
  return IOCPHOST_OK;
}

static void *api_room_state(iocphost_room_t *room) {
  return room ? host_room(ROOM(room))->state : NULL;
}

static int api_room_join(iocphost_room_t *room, iocphost_session_t *session) {
  if (!room || !session)
    return IOCPHOST_E_INVAL;
  session_t *s = SESSION(session);
  if (!session_is_open(s))
    return IOCPHOST_E_CLOSED;
  session_acquire(s);
  if (room_post(ROOM(room), join_in_order, release_session_arg, s, NULL) !=
      ENGINE_OK) {
    session_release(s);
    return IOCPHOST_E_CLOSED;
  }
  return IOCPHOST_OK;
}

static int api_room_leave(iocphost_room_t *room, iocphost_session_t *session) {
  if (!room || !session)
    return IOCPHOST_E_INVAL;
  session_t *s = SESSION(session);
  session_acquire(s);
  if (room_post(ROOM(room), leave_in_order, release_session_arg, s,
                (void *)(uintptr_t)IOCPHOST_LEAVE_ASKED) != ENGINE_OK) {
    session_release(s);
    return IOCPHOST_E_CLOSED;
  }
  return IOCPHOST_OK;
}

static uint32_t api_room_member_count(iocphost_room_t *room) {
  if (!room || !room_in_order(ROOM(room)))
    return 0;
  return host_room(ROOM(room))->member_count;
}

static void api_room_members(iocphost_room_t *room, iocphost_member_fn fn,
                             void *arg) {
  if (!room || !fn || !room_in_order(ROOM(room)))
    return;
  host_room_t *h = host_room(ROOM(room));
  for (membership_t *m = h->members; m; m = m->room_next)
    fn(room, h->state, PLUGIN_SESSION(m->session), arg);
}

/* In the room's order: one shared buffer into every member's queue. A
 * packet goes only to members of packet services whose max_packet_bytes
 * it fits; nothing goes to a member whose service's send_queue_limit_bytes
 * it exceeds (it could only cut that member off, as broadcast refuses). */
static int send_to_members(host_room_t *h, shared_buf_t *buf, int packet) {
  int count = 0;
  size_t len = shared_buf_len(buf);
  for (membership_t *m = h->members; m; m = m->room_next) {
    host_service_t *hs = host_service_of(m->session);
    if (packet && (!hs->packet_framing || len > hs->max_packet_bytes))
      continue;
    if (len > hs->config->send_queue_limit_bytes)
      continue;
    if (session_send_shared(m->session, buf) == ENGINE_OK)
      count++;
  }
  return count;
}

static void broadcast_in_order(room_t *r, void *buf, void *packet) {
  send_to_members(host_room(r), buf, packet != NULL);
}

static void release_buf(room_t *r, void *buf, void *unused) {
  (void)r;
  (void)unused;
  shared_buf_release(buf);
}

static int room_broadcast_bytes(iocphost_room_t *room, const void *header,
                                size_t header_len, const void *data, size_t len,
                                int packet) {
  if (!room || (!data && len))
    return IOCPHOST_E_INVAL;
  if (len > SIZE_MAX - header_len)
    return IOCPHOST_E_TOOBIG;
  if (header_len + len == 0)
    return 0;
  shared_buf_t *buf = shared_buf_new(header_len + len);
  if (!buf)
    return IOCPHOST_E_NOMEM;
  if (header_len)
    memcpy(shared_buf_data(buf), header, header_len);
  if (len)
    memcpy(shared_buf_data(buf) + header_len, data, len);
  room_t *r = ROOM(room);
  int rc;
  if (room_in_order(r)) {
    rc = send_to_members(host_room(r), buf, packet);
    shared_buf_release(buf);
  } else {
    /* From elsewhere: into the room's order, where the members are. */
    rc = room_post(r, broadcast_in_order, release_buf, buf,
                   packet ? (void *)1 : NULL) == ENGINE_OK
             ? 0
             : IOCPHOST_E_CLOSED;
    if (rc != 0)
      shared_buf_release(buf);
  }
  return rc;
}

static int api_room_broadcast(iocphost_room_t *room, const void *data,
                              size_t len) {
  return room_broadcast_bytes(room, NULL, 0, data, len, 0);
}

static int api_room_broadcast_packet(iocphost_room_t *room, uint16_t id,
                                     const void *payload, size_t len) {
  uint8_t header[FRAMING_HEADER_BYTES];
  if (framing_write_header(header, id, len, 65535) != 0)
    return IOCPHOST_E_TOOBIG;
  return room_broadcast_bytes(room, header, sizeof header, payload, len, 1);
}

static room_call_t *room_call_new(iocphost_room_t *room, iocphost_room_fn fn,
                                  iocphost_room_timer_fn timer_fn, void *arg) {
  room_call_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->fn = fn;
  c->timer_fn = timer_fn;
  c->arg = arg;
  host_t *host = host_room(ROOM(room))->host;
  c->generation = fn ? hold_code_of(host, &fn, sizeof fn)
                     : hold_code_of(host, &timer_fn, sizeof timer_fn);
  pthread_mutex_lock(&host->rooms_lock);
  host->room_calls++;
  pthread_mutex_unlock(&host->rooms_lock);
  return c;
}

static int api_room_post(iocphost_room_t *room, iocphost_room_fn fn,
                         void *arg) {
  if (!room || !fn)
    return IOCPHOST_E_INVAL;
  room_call_t *c = room_call_new(room, fn, NULL, arg);
  if (!c)
    return IOCPHOST_E_NOMEM;
  if (room_post(ROOM(room), run_room_call, room_call_done, c, NULL) !=
      ENGINE_OK) {
    room_call_done(ROOM(room), c, NULL);
    return IOCPHOST_E_CLOSED;
  }
  return IOCPHOST_OK;
}

static uint64_t api_room_timer_start(iocphost_room_t *room, uint32_t delay_ms,
                                     uint32_t repeat_ms,
                                     iocphost_room_timer_fn fn, void *arg) {
  if (!room || !fn)
    return 0;
  room_call_t *c = room_call_new(room, NULL, fn, arg);
  if (!c)
    return 0;
  uint64_t id = room_timer_start(ROOM(room), delay_ms, repeat_ms, run_room_tick,
                                 room_call_done, c, NULL);
  if (id == 0)
    room_call_done(ROOM(room), c, NULL);
  return id;
}

static int api_room_timer_stop(iocphost_room_t *room, uint64_t timer_id) {
  if (!room)
    return IOCPHOST_E_INVAL;
  return room_timer_stop(ROOM(room), timer_id) == ENGINE_OK
             ? IOCPHOST_OK
             : IOCPHOST_E_NOTFOUND;
}

/* ---- work submitted by a room (plugin_work.c's shared path) ---- */

static void release_room(void *owner) { room_release(owner); }

static void room_work_done(room_t *r, void *call, void *unused) {
  (void)unused;
  work_call_t *c = call;
  watch_mark_t mark = watch_room(r, c->done_code, WATCH_ROOM_WORK_DONE);
  c->done.room(PLUGIN_ROOM(r), host_room(r)->state, c->arg,
               c->skipped || !room_is_open(r));
  watch_end(&mark); /* before work_call_end lets go of done_code */
  work_call_end(c);
}

static int room_post_back(work_call_t *c) {
  return room_post_always(c->owner, room_work_done, c, NULL);
}

static int api_room_work(iocphost_room_t *room, iocphost_work_fn work,
                         iocphost_room_done_fn done, void *arg) {
  if (!room || !work || !done)
    return IOCPHOST_E_INVAL;
  room_t *r = ROOM(room);
  if (!room_is_open(r))
    return IOCPHOST_E_CLOSED;
  host_room_t *h = host_room(r);
  work_call_t call = {.host = h->host,
                      .work = work,
                      .done.room = done,
                      .arg = arg,
                      .owner = room_acquire(r),
                      .release_owner = release_room,
                      .post_back = room_post_back,
                      .plugin_name = h->generation->plugin->name};
  return work_submit(&call);
}

void rooms_fill_api(iocphost_api_t *a) {
  a->room_work = api_room_work;
  a->room_create = api_room_create;
  a->room_id = api_room_id;
  a->room_find = api_room_find;
  a->room_acquire = api_room_acquire;
  a->room_release = api_room_release;
  a->room_close = api_room_close;
  a->room_state = api_room_state;
  a->room_join = api_room_join;
  a->room_leave = api_room_leave;
  a->room_member_count = api_room_member_count;
  a->room_members = api_room_members;
  a->room_broadcast = api_room_broadcast;
  a->room_broadcast_packet = api_room_broadcast_packet;
  a->room_post = api_room_post;
  a->room_timer_start = api_room_timer_start;
  a->room_timer_stop = api_room_timer_stop;
}

/* ---- the host's stop and status ---- */

int rooms_close_all(host_t *host, uint64_t deadline_ms) {
  /* Close in batches: room_close never runs plugin code here (the close
   * runs in each room's order), but it must not run under rooms_lock
   * either, as a close may free the record in the registry. */
  for (;;) {
    room_t *batch[64];
    size_t n = 0;
    pthread_mutex_lock(&host->rooms_lock);
    for (size_t b = 0; b < host->room_bucket_count && n < 64; b++)
      for (host_room_t *h = host->room_buckets[b]; h && n < 64;
           h = h->hash_next)
        if (room_is_open(h->room))
          batch[n++] = room_acquire(h->room);
    pthread_mutex_unlock(&host->rooms_lock);
    if (n == 0)
      break;
    for (size_t i = 0; i < n; i++) {
      room_close(batch[i]);
      room_release(batch[i]);
    }
  }
  /* Every close runs in its room's order: wait for them to leave the
   * registry (their on_close ran), and for the timers and posts the closes
   * cancelled or dropped to be gone: their done drops a hold on plugin
   * code, which must happen before that code is unloaded. */
  pthread_mutex_lock(&host->rooms_lock);
  while (host->room_count > 0 || host->room_calls > 0)
    if (cond_wait_until_ms(&host->rooms_changed, &host->rooms_lock,
                           deadline_ms))
      break;
  size_t left = host->room_count;
  long calls = host->room_calls;
  pthread_mutex_unlock(&host->rooms_lock);
  if (left || calls)
    log_write(LOG_ERROR, "rooms",
              "%zu rooms still closing and %ld room timers or posts still "
              "pending at the stop's deadline (a room callback that does not "
              "return?)",
              left, calls);
  return left || calls ? -1 : 0;
}

size_t rooms_of_generation(host_t *host, const generation_t *g,
                           rooms_status_fn fn, void *arg) {
  size_t count = 0;
  pthread_mutex_lock(&host->rooms_lock);
  for (size_t b = 0; b < host->room_bucket_count; b++) {
    for (host_room_t *h = host->room_buckets[b]; h; h = h->hash_next) {
      if (h->generation != g)
        continue;
      count++;
      if (fn)
        fn(arg, room_id(h->room), atomic_load(&h->members_now));
    }
  }
  pthread_mutex_unlock(&host->rooms_lock);
  return count;
}

void rooms_of_session(session_t *s, void (*fn)(void *arg, uint64_t room_id),
                      void *arg) {
  host_t *host = host_service_of(s)->host;
  pthread_mutex_lock(&host->rooms_lock);
  for (membership_t *m = session_rooms(host_session(s)); m; m = m->session_next)
    fn(arg, room_id(m->room->room));
  pthread_mutex_unlock(&host->rooms_lock);
}
