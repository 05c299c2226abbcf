/*
 * arena: matches of `capacity` players in rooms (SPEC section 12), a sample
 * to copy. The wire protocol is in PROTOCOL.md beside this file.
 *
 *  - Matchmaking: JOIN takes a seat in the oldest room that is still
 *    filling, or in a new one. A room whose seats are all joined starts its
 *    match: a 20 Hz room tick broadcasts STATE (every player's position and
 *    score) to the room's members with one shared buffer.
 *  - A match ends after /match/seconds, or when fewer than two players are
 *    left; MATCH_END goes to the players, the result is saved, the room
 *    closes. Players stay connected and may JOIN again.
 *  - Results go to an SQLite database (/db/path) through room_work: the
 *    blocking calls run on the host's work threads, never on an I/O worker.
 *
 * Threads. Packets of a session run in the session's order, everything of
 * a room in the room's order; they meet only through:
 *  - the session's state, which the room reads and writes with atomics
 *    (position, moves, player id, the room joined);
 *  - the host's functions (room_join, room_leave, room_broadcast_packet),
 *    which hand work to the room's order themselves;
 *  - the list of filling rooms, under a mutex (matchmaking).
 * MOVE is latest-wins input: a session stores it, the room's tick samples
 * it. So no packet needs a post carrying memory to the room.
 *
 * Built with -DARENA_VERSION=N, the version goes into WELCOME, STATE and
 * MATCH_END (tests/integration/test_arena.py deploys version 2 over 1).
 */
#include <iocphost/plugin.h>

#include <math.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
typedef SRWLOCK arena_mutex_t;
#define ARENA_MUTEX_INIT SRWLOCK_INIT
#define arena_lock(m) AcquireSRWLockExclusive(m)
#define arena_unlock(m) ReleaseSRWLockExclusive(m)
static uint64_t now_ms(void) { return GetTickCount64(); }
#else
#include <pthread.h>
#include <time.h>
typedef pthread_mutex_t arena_mutex_t;
#define ARENA_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define arena_lock(m) pthread_mutex_lock(m)
#define arena_unlock(m) pthread_mutex_unlock(m)
static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
#endif

#ifndef ARENA_VERSION
#define ARENA_VERSION 1
#endif
#define ARENA_STR2(x) #x
#define ARENA_STR(x) ARENA_STR2(x)

/* ---- the protocol (PROTOCOL.md) ---- */

enum arena_packet_id {
  ARENA_JOIN = 1,
  ARENA_MOVE = 2,
  ARENA_CHAT = 3,
  ARENA_LEAVE = 4,
  ARENA_WELCOME = 101,
  ARENA_STATE = 102,
  ARENA_CHAT_FROM = 103,
  ARENA_MATCH_END = 104,
  ARENA_ERROR = 199
};

enum arena_error {
  ERR_BAD_PACKET = 1,
  ERR_NOT_IN_ROOM = 2,
  ERR_ALREADY_IN_ROOM = 3,
  ERR_BUSY = 4
};

enum arena_end {
  END_TIME_UP = 1,     /* /match/seconds passed */
  END_PLAYERS_LEFT = 2 /* fewer than two players left */
};

#define NAME_BYTES 16
#define CHAT_MAX 200
#define WORLD_SIZE 1000 /* positions are 0..WORLD_SIZE on both axes */
#define TICK_MS 50      /* 20 Hz */

/* Little-endian writers and readers: the wire's byte order on any CPU. */
static uint8_t *put16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  return p + 2;
}
static uint8_t *put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
  return p + 4;
}
static uint8_t *put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
  return p + 8;
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

/* ---- settings ---- */

#define CAPACITY_SETTING "/match/capacity"
#define SECONDS_SETTING "/match/seconds"
#define DB_PATH_SETTING "/db/path"
#define CAPACITY_MIN 2
#define CAPACITY_MAX 100
#define SECONDS_MAX 3600

static const iocphost_api_t *host;
static uint32_t capacity = 4;
/* Metrics (ABI 1.3): finished matches by how they ended, and how long they
 * lasted. The series are found once in on_load; updates are atomic, from
 * any room's order. */
static iocphost_series_t *matches_time_up, *matches_players_left;
static iocphost_series_t *match_seconds_observed;
static uint32_t match_seconds = 10;

/* Writes into found what the setting at pointer holds, for a message;
 * returns 0 when there is nothing there. */
static int describe_setting(const iocphost_api_t *settings,
                            const char *pointer, char *found, size_t size) {
  double number = settings->setting_number(settings, pointer, NAN);
  const char *text = settings->setting_string(settings, pointer, NULL);
  int flag = settings->setting_bool(settings, pointer, -1);
  if (!isnan(number))
    snprintf(found, size, "%.15g", number);
  else if (text)
    snprintf(found, size, "\"%.40s\"", text);
  else if (flag >= 0)
    snprintf(found, size, "%s", flag ? "true" : "false");
  else if (settings->setting_array_length(settings, pointer) >= 0)
    snprintf(found, size, "an array");
  else
    return 0;
  return 1;
}

/* An integer setting within [min, max], or its default when absent. */
static int check_int(const iocphost_api_t *settings, const char *pointer,
                     int64_t min, int64_t max, const char *what, char *err,
                     size_t err_len) {
  int64_t value = settings->setting_int(settings, pointer, INT64_MIN);
  char found[64];
  if (value == INT64_MIN) {
    if (!describe_setting(settings, pointer, found, sizeof found))
      return 0; /* absent: the default */
  } else if (value >= min && value <= max) {
    return 0;
  } else {
    snprintf(found, sizeof found, "%lld", (long long)value);
  }
  snprintf(err, err_len, "%s must be an integer from %lld to %lld (%s), found %s",
           pointer, (long long)min, (long long)max, what, found);
  return 1;
}

/* ABI 1.2: refuses bad settings before a deploy (`iocphost check`,
 * `reload --dry-run`) and before arena_load. No side effects. */
static int arena_check_settings(const iocphost_api_t *settings,
                                const char *settings_json, char *err,
                                size_t err_len) {
  (void)settings_json;
  if (check_int(settings, CAPACITY_SETTING, CAPACITY_MIN, CAPACITY_MAX,
                "players per match", err, err_len) ||
      check_int(settings, SECONDS_SETTING, 1, SECONDS_MAX,
                "the length of a match in seconds", err, err_len))
    return 1;
  const char *path = settings->setting_string(settings, DB_PATH_SETTING, NULL);
  char found[64];
  if ((path && !*path) ||
      (!path && describe_setting(settings, DB_PATH_SETTING, found,
                                 sizeof found))) {
    snprintf(err, err_len,
             "%s must be the SQLite file for match results (a non-empty "
             "string), found %s",
             DB_PATH_SETTING, path ? "\"\"" : found);
    return 1;
  }
  return 0;
}

/* ---- the results database ---- */

/* One connection for the generation, used by one work thread at a time. */
static sqlite3 *db;
static arena_mutex_t db_lock = ARENA_MUTEX_INIT;

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS matches ("
    " id INTEGER PRIMARY KEY,"
    " room_id INTEGER NOT NULL,"
    " arena_version INTEGER NOT NULL,"
    " reason TEXT NOT NULL," /* time_up or players_left */
    " duration_ms INTEGER NOT NULL,"
    " players INTEGER NOT NULL,"
    " late_ticks INTEGER NOT NULL,"
    " ended_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
    "CREATE TABLE IF NOT EXISTS match_players ("
    " match_id INTEGER NOT NULL REFERENCES matches(id),"
    " player_id INTEGER NOT NULL,"
    " name TEXT NOT NULL,"
    " score INTEGER NOT NULL,"
    " left_early INTEGER NOT NULL,"
    " PRIMARY KEY (match_id, player_id));";

/* Opens (creating if missing) the database and its tables, in WAL mode: a
 * reader (a report, a second generation after a reload) never blocks the
 * writer. A busy database is waited for, up to 5 s, on the work thread. */
static int db_open(const char *path, char *err, size_t err_len) {
  int rc = sqlite3_open_v2(path, &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  char *message = NULL;
  if (rc == SQLITE_OK)
    rc = sqlite3_busy_timeout(db, 5000);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL;", NULL, NULL, &message);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, schema, NULL, NULL, &message);
  if (rc != SQLITE_OK) {
    snprintf(err, err_len,
             "cannot open the results database %s (setting %s): %s; give a "
             "path to a file the host may create and write",
             path, DB_PATH_SETTING,
             message ? message : db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_free(message);
    sqlite3_close(db);
    db = NULL;
    return -1;
  }
  return 0;
}

/* ---- sessions ---- */

typedef struct arena_session {
  char name[NAME_BYTES]; /* zero-padded; written before room_join */
  /* The room this session plays in (0: none). Set by JOIN, cleared by
   * LEAVE, by the room when it lets the player go, or when it ends. */
  _Atomic uint64_t room_id;
  _Atomic uint32_t player_id; /* given by the room at on_join */
  _Atomic uint64_t position;  /* x | y << 32, latest MOVE */
  _Atomic uint32_t moves;     /* MOVEs so far: the score counts them */
} arena_session_t;

static void send_error(iocphost_session_t *session, uint16_t code,
                       const char *text) {
  uint8_t payload[2 + 96];
  size_t len = strlen(text);
  if (len > 96)
    len = 96;
  put16(payload, code);
  memcpy(payload + 2, text, len);
  host->send_packet(session, ARENA_ERROR, payload, 2 + len);
}

static uint64_t pack_position(int32_t x, int32_t y) {
  return (uint32_t)x | (uint64_t)(uint32_t)y << 32;
}

/* ---- rooms ---- */

typedef struct player {
  uint64_t session_id; /* 0: a free slot */
  iocphost_session_t *session; /* while a member (the membership holds it) */
  char name[NAME_BYTES];
  uint32_t base_moves; /* moves at the match's start */
  uint32_t score;      /* final, once left */
  uint8_t left;        /* left during the match */
} player_t;

typedef struct arena_room {
  player_t *players;  /* capacity slots; player id = slot + 1 */
  uint32_t present;   /* members seated now */
  uint8_t started, ended;
  uint64_t started_ms;
  uint64_t tick_timer;
  uint32_t late_ticks;
  /* Under mm_lock (matchmaking reads them from sessions' threads). */
  uint32_t seats; /* taken by JOINs, joined or on their way */
  uint8_t listed; /* in the filling list */
  uint8_t gone;   /* on_close ran: never list it again */
} arena_room_t;

/* Matchmaking: the rooms still filling, oldest first, each holding a
 * reference. Per generation (a new generation's globals are its own). */
typedef struct filling {
  iocphost_room_t *room;
  struct filling *next;
} filling_t;

static arena_mutex_t mm_lock = ARENA_MUTEX_INIT;
static filling_t *filling_head;

static void on_room_open(iocphost_room_t *room, void *state, void *arg);
static void on_room_join(iocphost_room_t *room, void *state,
                      iocphost_session_t *session);
static void on_room_leave(iocphost_room_t *room, void *state,
                       iocphost_session_t *session, iocphost_leave_t why);
static void on_room_close(iocphost_room_t *room, void *state);

static const iocphost_room_class_t arena_room_class = {
    .struct_size = sizeof(iocphost_room_class_t),
    .state_size = sizeof(arena_room_t),
    .on_open = on_room_open,
    .on_join = on_room_join,
    .on_leave = on_room_leave,
    .on_close = on_room_close,
};

/* mm_lock held: puts the room at the end of the filling list. */
static void list_filling(iocphost_room_t *room, arena_room_t *ar) {
  filling_t *f = malloc(sizeof *f);
  if (!f)
    return; /* it stays unlisted: its seated players wait for a rejoin */
  f->room = host->room_acquire(room);
  f->next = NULL;
  filling_t **p = &filling_head;
  while (*p)
    p = &(*p)->next;
  *p = f;
  ar->listed = 1;
}

/* mm_lock held: takes the room off the list; the caller gets the list's
 * reference to release (outside the lock is not needed: release never runs
 * plugin code). */
static void unlist_filling(iocphost_room_t *room, arena_room_t *ar) {
  for (filling_t **p = &filling_head; *p; p = &(*p)->next) {
    if ((*p)->room == room) {
      filling_t *f = *p;
      *p = f->next;
      host->room_release(f->room);
      free(f);
      break;
    }
  }
  ar->listed = 0;
}

/* A seat in the oldest filling room, or in a new one; the room comes back
 * acquired, or NULL (no memory). */
static iocphost_room_t *seat_take(void) {
  arena_lock(&mm_lock);
  iocphost_room_t *room = filling_head ? filling_head->room : NULL;
  if (!room) {
    room = host->room_create(host, &arena_room_class, NULL);
    if (room) {
      arena_room_t *ar = host->room_state(room);
      list_filling(room, ar);
      if (!ar->listed) /* no memory */
        host->room_close(room);
      host->room_release(room); /* the list's reference remains */
      if (!ar->listed)
        room = NULL;
    }
  }
  if (room) {
    arena_room_t *ar = host->room_state(room);
    host->room_acquire(room);
    if (++ar->seats == capacity)
      unlist_filling(room, ar); /* full: no more JOINs go there */
  }
  arena_unlock(&mm_lock);
  return room;
}

/* A seat given back before the match started (a JOIN that did not join, a
 * player who left while the room filled): the room fills again. A room
 * left empty closes instead: an empty room of a generation retired by a
 * reload would otherwise keep that generation loaded for ever. */
static void seat_return(iocphost_room_t *room) {
  arena_lock(&mm_lock);
  arena_room_t *ar = host->room_state(room);
  ar->seats--;
  if (ar->seats == 0) {
    if (ar->listed)
      unlist_filling(room, ar);
    ar->gone = 1;
    host->room_close(room);
  } else if (!ar->listed && !ar->gone) {
    list_filling(room, ar);
  }
  arena_unlock(&mm_lock);
}

static void on_room_open(iocphost_room_t *room, void *state, void *arg) {
  (void)arg;
  arena_room_t *ar = state;
  ar->players = calloc(capacity, sizeof *ar->players);
  if (!ar->players) {
    host->log(host, IOCPHOST_LOG_ERROR, "room %llu: out of memory",
              (unsigned long long)host->room_id(room));
    host->room_close(room);
  }
}

/* The STATE of every player still in the match, to every member. */
static void send_state(iocphost_room_t *room, arena_room_t *ar,
                       uint32_t tick) {
  uint8_t buf[16 + CAPACITY_MAX * 16];
  uint8_t *p = buf + 16;
  uint32_t count = 0;
  for (uint32_t i = 0; i < capacity; i++) {
    player_t *pl = &ar->players[i];
    if (!pl->session_id || pl->left)
      continue;
    arena_session_t *ss = host->session_state(pl->session);
    uint64_t pos = atomic_load(&ss->position);
    p = put32(p, i + 1);
    p = put32(p, (uint32_t)pos);
    p = put32(p, (uint32_t)(pos >> 32));
    p = put32(p, atomic_load(&ss->moves) - pl->base_moves);
    count++;
  }
  uint8_t *h = put16(buf, ARENA_VERSION);
  h = put16(h, count);
  h = put32(h, tick);
  put64(h, host->room_id(room));
  host->room_broadcast_packet(room, ARENA_STATE, buf, (size_t)(p - buf));
}

/* ---- saving a result (room_work) ---- */

typedef struct result {
  uint64_t room_id;
  uint32_t reason, duration_ms, late_ticks, count;
  int64_t match_id; /* set by the work: the row's id, or -1 */
  char error[160];  /* set by the work when it failed */
  struct {
    uint32_t player_id, score, left;
    char name[NAME_BYTES + 1];
  } players[];
} result_t;

static int save_rows(result_t *r) {
  sqlite3_stmt *match = NULL, *player = NULL;
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(
        db,
        "INSERT INTO matches (room_id, arena_version, reason, duration_ms, "
        "players, late_ticks) VALUES (?, ?, ?, ?, ?, ?)",
        -1, &match, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(match, 1, (sqlite3_int64)r->room_id);
    sqlite3_bind_int(match, 2, ARENA_VERSION);
    sqlite3_bind_text(match, 3,
                      r->reason == END_TIME_UP ? "time_up" : "players_left",
                      -1, SQLITE_STATIC);
    sqlite3_bind_int64(match, 4, r->duration_ms);
    sqlite3_bind_int64(match, 5, r->count);
    sqlite3_bind_int64(match, 6, r->late_ticks);
    rc = sqlite3_step(match) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  }
  r->match_id = rc == SQLITE_OK ? sqlite3_last_insert_rowid(db) : -1;
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db,
                            "INSERT INTO match_players (match_id, player_id, "
                            "name, score, left_early) VALUES (?, ?, ?, ?, ?)",
                            -1, &player, NULL);
  for (uint32_t i = 0; rc == SQLITE_OK && i < r->count; i++) {
    sqlite3_reset(player);
    sqlite3_bind_int64(player, 1, r->match_id);
    sqlite3_bind_int64(player, 2, r->players[i].player_id);
    sqlite3_bind_text(player, 3, r->players[i].name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(player, 4, r->players[i].score);
    sqlite3_bind_int(player, 5, (int)r->players[i].left);
    rc = sqlite3_step(player) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    snprintf(r->error, sizeof r->error, "%s", sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    r->match_id = -1;
  }
  sqlite3_finalize(match);
  sqlite3_finalize(player);
  return rc;
}

/* On a work thread: it may block (the disk, a busy database). */
static void save_result(void *arg) {
  arena_lock(&db_lock);
  save_rows(arg);
  arena_unlock(&db_lock);
}

/* Back in the room's order. The room closed right after its MATCH_END, so
 * ended is 1 as a rule: there is nothing to send, only memory to free. */
static void result_saved(iocphost_room_t *room, void *state, void *arg,
                         int ended) {
  (void)room;
  (void)state;
  (void)ended;
  result_t *r = arg;
  if (r->match_id >= 0)
    host->log(host, IOCPHOST_LOG_INFO,
              "match of room %llu saved as match %lld (%u players, %u ms, %s)",
              (unsigned long long)r->room_id, (long long)r->match_id, r->count,
              r->duration_ms,
              r->reason == END_TIME_UP ? "time_up" : "players_left");
  else
    host->log(host, IOCPHOST_LOG_ERROR,
              "match of room %llu not saved: %s", (unsigned long long)r->room_id,
              r->error);
  free(r);
}

/* Ends the match: MATCH_END to the players, the result to the database,
 * and the room closes. */
static void end_match(iocphost_room_t *room, arena_room_t *ar,
                      uint32_t reason) {
  ar->ended = 1;
  host->room_timer_stop(room, ar->tick_timer);
  uint64_t room_id = host->room_id(room);
  uint32_t duration = (uint32_t)(now_ms() - ar->started_ms);
  result_t *r = calloc(1, sizeof *r + capacity * sizeof r->players[0]);
  uint8_t buf[24 + CAPACITY_MAX * 12];
  uint8_t *p = buf + 24;
  uint32_t count = 0, winner = 0, best = 0;
  for (uint32_t i = 0; i < capacity; i++) {
    player_t *pl = &ar->players[i];
    if (!pl->session_id)
      continue;
    if (!pl->left) {
      arena_session_t *ss = host->session_state(pl->session);
      pl->score = atomic_load(&ss->moves) - pl->base_moves;
      /* Free to JOIN again at once, while this room is still closing. */
      uint64_t mine = room_id;
      atomic_compare_exchange_strong(&ss->room_id, &mine, 0);
      if (!winner || pl->score > best)
        winner = i + 1, best = pl->score;
    }
    p = put32(p, i + 1);
    p = put32(p, pl->score);
    p = put32(p, pl->left);
    if (r) {
      r->players[count].player_id = i + 1;
      r->players[count].score = pl->score;
      r->players[count].left = pl->left;
      memcpy(r->players[count].name, pl->name, NAME_BYTES);
    }
    count++;
  }
  uint8_t *h = put16(buf, ARENA_VERSION);
  h = put16(h, reason);
  h = put32(h, duration);
  h = put64(h, room_id);
  h = put32(h, winner);
  h = put16(h, count);
  put16(h, 0);
  host->room_broadcast_packet(room, ARENA_MATCH_END, buf, (size_t)(p - buf));
  host->metric_add(reason == END_TIME_UP ? matches_time_up
                                         : matches_players_left,
                   1);
  host->metric_observe(match_seconds_observed, duration / 1000.0);

  if (!r) {
    host->log(host, IOCPHOST_LOG_ERROR,
              "match of room %llu not saved: out of memory",
              (unsigned long long)room_id);
  } else {
    r->room_id = room_id;
    r->reason = reason;
    r->duration_ms = duration;
    r->late_ticks = ar->late_ticks;
    r->count = count;
    int rc = host->room_work(room, save_result, result_saved, r);
    if (rc != IOCPHOST_OK) {
      host->log(host, IOCPHOST_LOG_ERROR,
                "match of room %llu not saved: %s (raise the config's "
                "work.queue_limit if the queue is full)",
                (unsigned long long)room_id, host->result_text(rc));
      free(r);
    }
  }
  host->room_close(room);
}

static void room_tick(iocphost_room_t *room, void *state, void *arg,
                      const iocphost_tick_t *tick) {
  (void)arg;
  arena_room_t *ar = state;
  if (ar->ended)
    return;
  /* A tick more than one period late means the core is overloaded: count
   * it (saved with the result) rather than skip it. */
  if (tick->late_ms >= TICK_MS)
    ar->late_ticks++;
  send_state(room, ar, (uint32_t)tick->count);
  if (tick->count * TICK_MS >= (uint64_t)match_seconds * 1000)
    end_match(room, ar, END_TIME_UP);
}

static void start_match(iocphost_room_t *room, arena_room_t *ar) {
  ar->started = 1;
  ar->started_ms = now_ms();
  for (uint32_t i = 0; i < capacity; i++) {
    arena_session_t *ss = host->session_state(ar->players[i].session);
    ar->players[i].base_moves = atomic_load(&ss->moves);
  }
  ar->tick_timer = host->room_timer_start(room, TICK_MS, TICK_MS, room_tick,
                                          NULL);
  host->log(host, IOCPHOST_LOG_DEBUG, "room %llu: match of %u started",
            (unsigned long long)host->room_id(room), capacity);
}

static void on_room_join(iocphost_room_t *room, void *state,
                      iocphost_session_t *session) {
  arena_room_t *ar = state;
  arena_session_t *ss = host->session_state(session);
  uint32_t slot = 0;
  while (ar->players && slot < capacity && ar->players[slot].session_id)
    slot++;
  if (!ar->players || ar->started || slot == capacity) {
    /* Cannot happen with seats counted; never seat more than capacity. */
    host->room_leave(room, session);
    return;
  }
  player_t *pl = &ar->players[slot];
  pl->session_id = host->session_id(session);
  pl->session = session;
  memcpy(pl->name, ss->name, NAME_BYTES);
  ar->present++;
  atomic_store(&ss->player_id, slot + 1);
  /* Spawn points on a grid, 10 a row. */
  atomic_store(&ss->position,
               pack_position((int32_t)(50 + (slot % 10) * 100),
                             (int32_t)(50 + (slot / 10) * 100)));
  uint8_t welcome[20];
  uint8_t *p = put16(welcome, ARENA_VERSION);
  p = put16(p, capacity);
  p = put32(p, slot + 1);
  p = put64(p, host->room_id(room));
  p = put16(p, 1000 / TICK_MS);
  put16(p, (uint16_t)match_seconds);
  host->send_packet(session, ARENA_WELCOME, welcome, sizeof welcome);
  if (ar->present == capacity)
    start_match(room, ar);
}

static void on_room_leave(iocphost_room_t *room, void *state,
                       iocphost_session_t *session, iocphost_leave_t why) {
  (void)why;
  arena_room_t *ar = state;
  arena_session_t *ss = host->session_state(session);
  uint64_t mine = host->room_id(room);
  atomic_compare_exchange_strong(&ss->room_id, &mine, 0);
  uint64_t id = host->session_id(session);
  player_t *pl = NULL;
  for (uint32_t i = 0; ar->players && i < capacity; i++)
    if (ar->players[i].session_id == id && !ar->players[i].left)
      pl = &ar->players[i];
  if (!pl || !pl->session)
    return; /* refused at on_join, or already out */
  if (ar->ended) {
    pl->session = NULL;
    return;
  }
  ar->present--;
  if (!ar->started) {
    memset(pl, 0, sizeof *pl); /* the seat is free again */
    if (why != IOCPHOST_LEAVE_CLOSING)
      seat_return(room);
    return;
  }
  pl->score = atomic_load(&ss->moves) - pl->base_moves;
  pl->left = 1;
  pl->session = NULL;
  if (ar->present < 2 && why != IOCPHOST_LEAVE_CLOSING)
    end_match(room, ar, END_PLAYERS_LEFT);
}

static void on_room_close(iocphost_room_t *room, void *state) {
  arena_room_t *ar = state;
  arena_lock(&mm_lock);
  ar->gone = 1;
  if (ar->listed)
    unlist_filling(room, ar);
  arena_unlock(&mm_lock);
  if (ar->started && !ar->ended)
    host->log(host, IOCPHOST_LOG_INFO,
              "room %llu closed during its match (the host is stopping): "
              "result not saved",
              (unsigned long long)host->room_id(room));
  free(ar->players);
  ar->players = NULL;
}

/* ---- packets ---- */

static void on_join_packet(iocphost_session_t *session, arena_session_t *ss,
                           const uint8_t *payload, size_t len) {
  if (len == 0 || len > NAME_BYTES) {
    send_error(session, ERR_BAD_PACKET, "JOIN: a name of 1 to 16 bytes");
    return;
  }
  if (atomic_load(&ss->room_id)) {
    send_error(session, ERR_ALREADY_IN_ROOM, "JOIN: already in a match");
    return;
  }
  memset(ss->name, 0, sizeof ss->name);
  memcpy(ss->name, payload, len);
  atomic_store(&ss->player_id, 0);
  iocphost_room_t *room = seat_take();
  if (!room) {
    send_error(session, ERR_BUSY, "JOIN: the server is out of memory");
    return;
  }
  atomic_store(&ss->room_id, host->room_id(room));
  if (host->room_join(room, session) != IOCPHOST_OK) {
    /* The room closed (the host is stopping) or so did this session. */
    atomic_store(&ss->room_id, 0);
    seat_return(room);
    send_error(session, ERR_BUSY, "JOIN: try again");
  }
  host->room_release(room);
}

/* The room this session plays in, acquired, or NULL after an ERROR. */
static iocphost_room_t *my_room(iocphost_session_t *session,
                                arena_session_t *ss, const char *what) {
  uint64_t id = atomic_load(&ss->room_id);
  iocphost_room_t *room = id ? host->room_find(host, id) : NULL;
  if (!room) {
    char text[64];
    snprintf(text, sizeof text, "%s: not in a match (JOIN first)", what);
    send_error(session, ERR_NOT_IN_ROOM, text);
  }
  return room;
}

static void arena_packet(iocphost_session_t *session, void *state, uint16_t id,
                         const uint8_t *payload, size_t len) {
  arena_session_t *ss = state;
  switch (id) {
  case ARENA_JOIN:
    on_join_packet(session, ss, payload, len);
    break;
  case ARENA_MOVE: {
    if (len != 8) {
      send_error(session, ERR_BAD_PACKET, "MOVE: int32 x, int32 y");
      break;
    }
    if (!atomic_load(&ss->room_id)) {
      send_error(session, ERR_NOT_IN_ROOM, "MOVE: not in a match (JOIN first)");
      break;
    }
    /* Latest wins: the room's next tick reads it. */
    int32_t x = (int32_t)get32(payload), y = (int32_t)get32(payload + 4);
    x = x < 0 ? 0 : x > WORLD_SIZE ? WORLD_SIZE : x;
    y = y < 0 ? 0 : y > WORLD_SIZE ? WORLD_SIZE : y;
    atomic_store(&ss->position, pack_position(x, y));
    atomic_fetch_add(&ss->moves, 1);
    break;
  }
  case ARENA_CHAT: {
    if (len == 0 || len > CHAT_MAX) {
      send_error(session, ERR_BAD_PACKET, "CHAT: a text of 1 to 200 bytes");
      break;
    }
    iocphost_room_t *room = my_room(session, ss, "CHAT");
    if (!room)
      break;
    uint8_t buf[4 + NAME_BYTES + CHAT_MAX];
    put32(buf, atomic_load(&ss->player_id));
    memcpy(buf + 4, ss->name, NAME_BYTES);
    memcpy(buf + 4 + NAME_BYTES, payload, len);
    host->room_broadcast_packet(room, ARENA_CHAT_FROM, buf,
                                4 + NAME_BYTES + len);
    host->room_release(room);
    break;
  }
  case ARENA_LEAVE: {
    iocphost_room_t *room = my_room(session, ss, "LEAVE");
    if (!room)
      break;
    host->room_leave(room, session);
    atomic_store(&ss->room_id, 0); /* free to JOIN again at once */
    host->room_release(room);
    break;
  }
  default:
    send_error(session, ERR_BAD_PACKET, "unknown packet id");
  }
}

static void arena_connected(iocphost_session_t *session, void *state) {
  (void)session;
  (void)state;
}

/* The host takes the session out of its rooms by itself (on_leave with
 * IOCPHOST_LEAVE_ENDED, in each room's order). */
static void arena_disconnected(iocphost_session_t *session, void *state,
                               iocphost_reason_t reason) {
  (void)session;
  (void)state;
  (void)reason;
}

/* ---- the plugin ---- */

/* arena_matches_total{reason} and arena_match_seconds (histogram). */
static int define_metrics(char *err, size_t err_len) {
  static const char *const by_reason[] = {"reason", NULL};
  static const double seconds[] = {1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
  const iocphost_metric_def_t matches = {
      IOCPHOST_METRIC_DEF_HEADER, .type = IOCPHOST_METRIC_COUNTER,
      .name = "arena_matches_total",
      .help = "Matches finished, by how they ended.", .labels = by_reason};
  const iocphost_metric_def_t length = {
      IOCPHOST_METRIC_DEF_HEADER,
      .type = IOCPHOST_METRIC_HISTOGRAM,
      .name = "arena_match_seconds",
      .help = "How long finished matches lasted.",
      .buckets = seconds,
      .bucket_count = sizeof seconds / sizeof seconds[0]};
  iocphost_metric_t *m, *h;
  int rc = host->metric_define(host, &matches, &m);
  if (rc == IOCPHOST_OK)
    rc = host->metric_define(host, &length, &h);
  if (rc != IOCPHOST_OK) {
    snprintf(err, err_len, "cannot define its metrics: %s",
             host->result_text(rc));
    return 1;
  }
  static const char *const time_up[] = {"time_up", NULL};
  static const char *const players_left[] = {"players_left", NULL};
  matches_time_up = host->metric_series(m, time_up);
  matches_players_left = host->metric_series(m, players_left);
  match_seconds_observed = host->metric_series(h, NULL);
  return 0;
}

static int arena_load(const iocphost_api_t *api, const char *settings_json,
                      char *err, size_t err_len) {
  (void)settings_json;
  host = api;
  if (!IOCPHOST_API_HAS(api, metric_observe) || !api->setting_int ||
      !api->room_work || !api->metric_define) {
    snprintf(err, err_len, "needs a host with rooms, work, typed settings "
                           "and metrics (ABI 1.3): upgrade iocphost");
    return 1;
  }
  /* arena_check_settings accepted them before this runs. */
  capacity = (uint32_t)api->setting_int(api, CAPACITY_SETTING, 4);
  match_seconds = (uint32_t)api->setting_int(api, SECONDS_SETTING, 10);
  const char *path = api->setting_string(api, DB_PATH_SETTING, "arena.db");
  if (define_metrics(err, err_len) != 0 || db_open(path, err, err_len) != 0)
    return 1;
  host->log(host, IOCPHOST_LOG_INFO,
            "arena %s: matches of %u players, %u s, results in %s",
            ARENA_STR(ARENA_VERSION) ".0.0", capacity, match_seconds, path);
  return 0;
}

/* After the last room, session and work of this generation: nothing uses
 * the list or the database any more. */
static void arena_unload(void) {
  while (filling_head) {
    filling_t *f = filling_head;
    filling_head = f->next;
    host->room_release(f->room);
    free(f);
  }
  sqlite3_close(db);
  db = NULL;
}

static const iocphost_plugin_t arena_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "arena",
    .version = ARENA_STR(ARENA_VERSION) ".0.0",
    .session_size = sizeof(arena_session_t),
    .on_load = arena_load,
    .on_unload = arena_unload,
    .on_connected = arena_connected,
    .on_packet = arena_packet,
    .on_disconnected = arena_disconnected,
    .check_settings = arena_check_settings,
};

IOCPHOST_PLUGIN_ENTRY { return &arena_plugin; }
