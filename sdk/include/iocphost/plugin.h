/*
 * iocphost plugin ABI: the one header a content plugin includes.
 *
 * A plugin is a shared library (.so / .dll) that exports one symbol,
 * IOCPHOST_PLUGIN_ENTRY (iocphost_plugin_entry), returning a pointer to a
 * static, constant descriptor (iocphost_plugin_t). The host checks that
 * descriptor before it runs any other code of the plugin; then it calls
 * on_load with a table of host functions (iocphost_api_t). The plugin never
 * links against the host.
 *
 * Evolution is append-only: new host functions and new plugin callbacks are
 * added at the end of their struct and bump IOCPHOST_ABI_MINOR. Both structs
 * start with struct_size, so either side can tell whether a field exists
 * (IOCPHOST_API_HAS). A change that is not append-only bumps the major.
 *
 * Nothing platform-, compiler- or cJSON-specific crosses this boundary: only
 * fixed-width integers, size_t, char strings and opaque pointers.
 *
 * Guarantees to plugins (SPEC section 3):
 *  - For every session, callbacks run one at a time, in order: on_connected
 *    once, then on_recv / on_packet / on_send any number of times, then
 *    on_disconnected exactly once. Timers and posted functions of a session
 *    run in that same serial order and never after on_disconnected.
 *    Different sessions run in parallel on the core's worker threads.
 *  - Every host function is safe to call from any callback, timer or a
 *    thread the plugin owns. On a session that has ended it returns
 *    IOCPHOST_E_CLOSED; it never crashes.
 *  - Sends of one session reach the peer in the order they were made. Bytes
 *    accepted by a send call are delivered, or the session ends with a reason
 *    saying why they were not.
 *  - The plugin never frees host memory; the host never frees plugin memory.
 */
#ifndef IOCPHOST_PLUGIN_H
#define IOCPHOST_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IOCPHOST_ABI_MAJOR 1
#define IOCPHOST_ABI_MINOR 3

/* The exported entry symbol's name, as a string for the host's loader. */
#define IOCPHOST_PLUGIN_ENTRY_NAME "iocphost_plugin_entry"

#if defined(_WIN32)
#define IOCPHOST_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define IOCPHOST_EXPORT __attribute__((visibility("default")))
#else
#define IOCPHOST_EXPORT
#endif

/* Declares the entry point. Use it once per plugin:
 *   IOCPHOST_PLUGIN_ENTRY { return &my_plugin; }
 * The body must only return the descriptor: the host calls it before it has
 * checked anything, so it must not allocate, start threads or log. */
#ifdef __cplusplus
#define IOCPHOST_PLUGIN_ENTRY                                                  \
  extern "C" IOCPHOST_EXPORT const iocphost_plugin_t *iocphost_plugin_entry(  \
      void);                                                                   \
  extern "C" IOCPHOST_EXPORT const iocphost_plugin_t *iocphost_plugin_entry(void)
#else
/* The prototype first keeps -Wmissing-prototypes quiet in plugins. */
#define IOCPHOST_PLUGIN_ENTRY                                                  \
  IOCPHOST_EXPORT const iocphost_plugin_t *iocphost_plugin_entry(void);        \
  IOCPHOST_EXPORT const iocphost_plugin_t *iocphost_plugin_entry(void)
#endif

/* The host formats log lines with a C99 printf (%zu, %lld work everywhere,
 * also on mingw). */
#ifndef IOCPHOST_PRINTF_FORMAT
#if defined(__MINGW32__)
#define IOCPHOST_PRINTF_FORMAT gnu_printf
#else
#define IOCPHOST_PRINTF_FORMAT printf
#endif
#endif

/* Result codes: 0 is success, errors are negative. */
#define IOCPHOST_RESULTS(X)                                                    \
  X(OK, 0, "ok")                                                               \
  X(E_CLOSED, -1, "session has ended")                                         \
  X(E_INVAL, -2, "invalid argument")                                           \
  X(E_NOMEM, -3, "out of memory")                                              \
  X(E_QUEUE_FULL, -4, "send queue limit reached; the session is closing")      \
  X(E_NOTFOUND, -5, "not found")                                               \
  X(E_TOOBIG, -6, "larger than the service allows")                          \
  X(E_FRAMING, -7, "wrong call for this service's framing")                  \
  X(E_BUSY, -8, "the work queue is full; try again later")                   \
  X(E_CONFLICT, -9, "the name is taken by a different definition")            \
  X(E_LOAD_ONLY, -10, "allowed only while on_load runs")

enum iocphost_result {
#define IOCPHOST_RESULT_ENUM(name, value, text) IOCPHOST_##name = value,
  IOCPHOST_RESULTS(IOCPHOST_RESULT_ENUM)
#undef IOCPHOST_RESULT_ENUM
};

/* Why a session ended; passed to on_disconnected. */
#define IOCPHOST_REASONS(X)                                                    \
  X(PEER_CLOSED, 1, "peer_closed")       /* the peer closed (FIN) */           \
  X(PEER_RESET, 2, "peer_reset")         /* reset or network error */          \
  X(LOCAL, 3, "local")                   /* the plugin called disconnect */    \
  X(PROTOCOL_ERROR, 4, "protocol_error") /* malformed frame, buffer limit */   \
  X(SEND_QUEUE_FULL, 5, "send_queue_full") /* slow reader */                   \
  X(IDLE_TIMEOUT, 6, "idle_timeout")     /* nothing received for too long */   \
  X(HOST_STOPPING, 7, "host_stopping")   /* graceful stop of the host */       \
  X(CONNECT_FAILED, 8, "connect_failed") /* client service: never connected */ \
  X(IO_ERROR, 9, "io_error")             /* local failure (e.g. no memory) */

typedef enum iocphost_reason {
#define IOCPHOST_REASON_ENUM(name, value, text) IOCPHOST_REASON_##name = value,
  IOCPHOST_REASONS(IOCPHOST_REASON_ENUM)
#undef IOCPHOST_REASON_ENUM
} iocphost_reason_t;

typedef enum iocphost_log_level {
  IOCPHOST_LOG_DEBUG = 0,
  IOCPHOST_LOG_INFO = 1,
  IOCPHOST_LOG_WARN = 2,
  IOCPHOST_LOG_ERROR = 3
} iocphost_log_level_t;

/* A service's framing (SPEC section 5): the config's "framing". Since 1.1. */
typedef enum iocphost_framing {
  IOCPHOST_FRAMING_RAW = 1,   /* a byte stream: on_recv, send */
  IOCPHOST_FRAMING_PACKET = 2 /* packets: on_packet, send_packet */
} iocphost_framing_t;

/* Opaque handles. A session pointer passed to a callback is valid for that
 * callback; keep it longer only with session_acquire / session_release. */
typedef struct iocphost_session iocphost_session_t;
typedef struct iocphost_service iocphost_service_t;

/* One buffer of a gathered send. */
typedef struct iocphost_buf {
  const void *data;
  size_t len;
} iocphost_buf_t;

/* Timer and posted-function callback: runs in the session's serial order,
 * with the session's state. Never runs after on_disconnected. */
typedef void (*iocphost_session_fn)(iocphost_session_t *session, void *state,
                                    void *arg);

typedef struct iocphost_api iocphost_api_t;

/* ---- ABI 1.2: rooms and work (SPEC section 12) ---- */

/* A room: an object of the plugin with its own serial order, like a
 * session's. Its posts, timers, joins, leaves and work completions run one
 * at a time, never concurrently with each other; different rooms and
 * sessions run in parallel. Opaque; kept beyond a callback only with
 * room_acquire / room_release. */
typedef struct iocphost_room iocphost_room_t;

/* How a member left a room (on_leave). */
typedef enum iocphost_leave {
  IOCPHOST_LEAVE_ASKED = 1,   /* room_leave */
  IOCPHOST_LEAVE_ENDED = 2,   /* the session ended (on_disconnected ran) */
  IOCPHOST_LEAVE_CLOSING = 3  /* the room is closing */
} iocphost_leave_t;

/* A room's callbacks and state size, given to room_create: a static
 * constant of the plugin, like the descriptor. Every callback runs in the
 * room's serial order with the room's state (state_size zeroed bytes). */
typedef struct iocphost_room_class {
  uint32_t struct_size; /* sizeof(iocphost_room_class_t) */
  uint32_t state_size;
  /* Optional: first, with room_create's arg; it runs even if the room is
   * closed before (then its timers and posts do not start). */
  void (*on_open)(iocphost_room_t *room, void *state, void *arg);
  /* Optional: a session joined (room_join) and is a member now. */
  void (*on_join)(iocphost_room_t *room, void *state,
                  iocphost_session_t *session);
  /* Optional: a member left; after it, the session is no member. */
  void (*on_leave)(iocphost_room_t *room, void *state,
                   iocphost_session_t *session, iocphost_leave_t why);
  /* Optional: last, after every member left (IOCPHOST_LEAVE_CLOSING);
   * nothing of the room runs after it. Free what the state points to. */
  void (*on_close)(iocphost_room_t *room, void *state);
} iocphost_room_class_t;

/* A room's timer tick: when it was due and how late it ran. Repeating
 * timers are scheduled from their start (due = start + n * repeat), so they
 * do not drift; a tick that runs late is counted and still runs (the next
 * is not moved). */
typedef struct iocphost_tick {
  uint64_t due_ms;     /* monotonic milliseconds it was due at */
  uint32_t late_ms;    /* how late it runs now */
  uint32_t late_count; /* ticks of this timer that ran late so far */
  uint64_t count;      /* ticks of this timer so far, this one included */
} iocphost_tick_t;

typedef void (*iocphost_room_fn)(iocphost_room_t *room, void *state,
                                 void *arg);
typedef void (*iocphost_room_timer_fn)(iocphost_room_t *room, void *state,
                                       void *arg, const iocphost_tick_t *tick);
typedef void (*iocphost_member_fn)(iocphost_room_t *room, void *state,
                                   iocphost_session_t *member, void *arg);

/* Work: work_fn runs on one of the host's work threads (never an I/O
 * worker), so it may block (a database, a file, an HTTP call); then done
 * runs in the serial order of the session or room that submitted it. done
 * always runs, exactly once, also when the session or room ended meanwhile:
 * then ended is 1 (send nothing; free what arg holds). The one exception is
 * a graceful stop whose drain_timeout_ms passes: work not yet started gets
 * done with ended = 1 without having run; a work_fn still running is left,
 * its done never runs, and the library stays loaded (sdk/README.md, Work). */
typedef void (*iocphost_work_fn)(void *arg);
typedef void (*iocphost_session_done_fn)(iocphost_session_t *session,
                                         void *state, void *arg, int ended);
typedef void (*iocphost_room_done_fn)(iocphost_room_t *room, void *state,
                                      void *arg, int ended);

/* ---- ABI 1.3: metrics a plugin defines (SPEC section 15) ---- */

/* A metric family the plugin defined (metric_define), and one series of it:
 * one tuple of label values (metric_series). Both are the host's, valid
 * until the plugin's on_unload returns; the plugin never frees them. */
typedef struct iocphost_metric iocphost_metric_t;
typedef struct iocphost_series iocphost_series_t;

typedef enum iocphost_metric_type {
  IOCPHOST_METRIC_COUNTER = 1,  /* only goes up: metric_add(series, >= 0) */
  IOCPHOST_METRIC_GAUGE = 2,    /* metric_set, metric_add (either sign) */
  IOCPHOST_METRIC_HISTOGRAM = 3 /* metric_observe, into the plugin's bounds */
} iocphost_metric_type_t;

/* At most this many label names per metric (plugin and generation, which
 * the host adds, not counted), bucket bounds per histogram, and series
 * (tuples of label values) per metric: a label whose values come from
 * players (ids, names) would grow a scrape without end. */
#define IOCPHOST_METRIC_MAX_LABELS 8
#define IOCPHOST_METRIC_MAX_BUCKETS 64
#define IOCPHOST_METRIC_MAX_SERIES 4096

/* A metric's definition, given to metric_define; the host copies what it
 * keeps, so it may live on the stack.
 *  - name: Prometheus's [a-zA-Z_:][a-zA-Z0-9_:]*, at most 200 bytes, not
 *    starting with "iocphost_" (the host's own). A counter's name should
 *    end in _total, a unit in the name (_seconds, _bytes) is the custom.
 *  - labels: a NULL-terminated list of label names ([a-zA-Z_][a-zA-Z0-9_]*,
 *    not starting with "__"), or NULL for none. "plugin" and "generation"
 *    are the host's (it adds them to every series), "le" the histogram's.
 *  - buckets (histograms only): bucket_count upper bounds, finite and
 *    strictly increasing; +Inf is added by the host. Ignored otherwise. */
typedef struct iocphost_metric_def {
  uint32_t struct_size; /* sizeof(iocphost_metric_def_t) */
  uint32_t type;        /* iocphost_metric_type_t */
  const char *name;
  const char *help; /* one line for # HELP; NULL is "" */
  const char *const *labels;
  const double *buckets;
  uint32_t bucket_count;
} iocphost_metric_def_t;

/* Fills the header of a definition:
 *   static const char *const by_service[] = {"service", NULL};
 *   iocphost_metric_def_t def = {IOCPHOST_METRIC_DEF_HEADER,
 *       .type = IOCPHOST_METRIC_COUNTER, .name = "echo_messages_total",
 *       .help = "Messages echoed.", .labels = by_service};               */
#define IOCPHOST_METRIC_DEF_HEADER .struct_size = sizeof(iocphost_metric_def_t)

/* Host functions, passed to on_load. Valid until on_unload returns. */
struct iocphost_api {
  uint32_t struct_size; /* sizeof(iocphost_api_t) of the host */
  uint16_t abi_major;
  uint16_t abi_minor;
  const char *host_version; /* e.g. "0.1.0" */

  /* Log one line, prefixed with time, level and the plugin's name. */
  void (*log)(const iocphost_api_t *api, iocphost_log_level_t level,
              const char *fmt, ...)
#if defined(__GNUC__)
      __attribute__((format(IOCPHOST_PRINTF_FORMAT, 3, 4)))
#endif
      ;

  /* Queue bytes for sending (copied). Raw framing: the bytes as given.
   * Packet framing: these bytes too (they must be whole packets).
   * Returns 0 (accepted; 0 bytes are accepted and send nothing), or
   * IOCPHOST_E_CLOSED, IOCPHOST_E_INVAL (NULL data with a length),
   * IOCPHOST_E_NOMEM, or IOCPHOST_E_QUEUE_FULL: the bytes not yet sent
   * would pass the service's send_queue_limit_bytes, so the session is
   * closing (reason send_queue_full). The limit bounds what waits unsent:
   * with nothing queued, called from the session's own callback, timer or
   * post, the bytes go to the socket at once, and a send larger than the
   * limit succeeds if the socket takes the excess. Otherwise (a plugin
   * thread, or a queue already waiting) it ends the session: send large
   * data in pieces no larger than the limit, paced by on_send. */
  int (*send)(iocphost_session_t *session, const void *data, size_t len);
  /* Queue several buffers as one send (copied, in order); as send.
   * IOCPHOST_E_INVAL if their lengths add up past SIZE_MAX. */
  int (*sendv)(iocphost_session_t *session, const iocphost_buf_t *bufs,
               size_t count);
  /* Queue one packet: 4-byte header (uint16 size incl. header, uint16 id,
   * little-endian) then the payload; otherwise as send.
   * IOCPHOST_E_TOOBIG if it exceeds the service's max_packet_bytes;
   * IOCPHOST_E_FRAMING on a raw service (nothing is sent). */
  int (*send_packet)(iocphost_session_t *session, uint16_t id,
                     const void *payload, size_t len);
  /* Flush what was queued, then close with FIN. on_disconnected follows
   * with IOCPHOST_REASON_LOCAL. Safe to call more than once. */
  int (*disconnect)(iocphost_session_t *session);

  uint64_t (*session_id)(iocphost_session_t *session); /* unique, never 0 */
  /* Writes "ip:port" or "[v6]:port" into buf; returns the length or < 0. */
  int (*session_peer)(iocphost_session_t *session, char *buf, size_t len);
  const char *(*session_service_name)(iocphost_session_t *session);
  /* The plugin's per-session state: session_size zeroed bytes. */
  void *(*session_state)(iocphost_session_t *session);
  /* Keep a session beyond a callback. Every acquire needs one release. */
  iocphost_session_t *(*session_acquire)(iocphost_session_t *session);
  void (*session_release)(iocphost_session_t *session);
  /* Find a live session of a service by id; returns it acquired, or NULL. */
  iocphost_session_t *(*session_find)(iocphost_service_t *service,
                                      uint64_t id);
  /* The service a session belongs to (valid while the session is held). */
  iocphost_service_t *(*session_service)(iocphost_session_t *session);

  /* Services live as long as the host; NULL if there is no such name. */
  iocphost_service_t *(*service_find)(const iocphost_api_t *api,
                                      const char *name);
  const char *(*service_name)(iocphost_service_t *service);
  /* Send one copy of the data, shared by every open session of the service
   * (not N copies). Returns how many sessions it was queued to, or < 0.
   * 0 bytes reach nobody: 0. IOCPHOST_E_TOOBIG, with nothing sent to
   * anyone, if the data is larger than the service's
   * send_queue_limit_bytes: it could only end every session that cannot
   * take it at once. A session whose queue the data would push past the
   * limit (a slow reader) is closed with send_queue_full, as by send, and
   * not counted. */
  int (*broadcast)(iocphost_service_t *service, const void *data, size_t len);
  /* The same for one packet (header as send_packet): IOCPHOST_E_TOOBIG past
   * max_packet_bytes too, IOCPHOST_E_FRAMING on a raw service. */
  int (*broadcast_packet)(iocphost_service_t *service, uint16_t id,
                          const void *payload, size_t len);

  /* Run fn after delay_ms, then every repeat_ms if repeat_ms > 0, in the
   * session's serial order. Returns a timer id (> 0) or 0 if the session
   * has ended. The timer dies with the session.
   * Timers and posts keep your code loaded: fn may run on a session of
   * another plugin or of a newer generation of yours (after a reload), and
   * the generation whose library holds fn stays loaded (and gets on_unload)
   * only after its last session, timer and post have ended. fn must be a
   * function of your plugin's own library for that: a function of another
   * library you link is not kept. */
  uint64_t (*timer_start)(iocphost_session_t *session, uint32_t delay_ms,
                          uint32_t repeat_ms, iocphost_session_fn fn,
                          void *arg);
  /* Stop a timer; IOCPHOST_E_NOTFOUND if it already fired or was stopped. */
  int (*timer_stop)(iocphost_session_t *session, uint64_t timer_id);
  /* Run fn soon, in the session's serial order (e.g. from a plugin thread).
   * Keeps fn's generation loaded until it ran (see timer_start). */
  int (*post)(iocphost_session_t *session, iocphost_session_fn fn, void *arg);

  /* The text of a result code or of a reason. */
  const char *(*result_text)(int result);
  const char *(*reason_text)(iocphost_reason_t reason);

  /* ---- ABI 1.1: check IOCPHOST_API_HAS(api, service_framing) first when
   * the plugin may run on a 1.0 host (a 1.1 plugin never loads there). */

  /* The service's framing (iocphost_framing_t), or IOCPHOST_E_INVAL. One
   * plugin may serve raw and packet services: this says which send a
   * session needs before any input arrives (a greeting in on_connected). */
  int (*service_framing)(iocphost_service_t *service);
  /* The service's max_packet_bytes (a whole packet, header included) on a
   * packet service; 0 on a raw service or for NULL. */
  uint32_t (*service_max_packet_bytes)(iocphost_service_t *service);

  /* ---- ABI 1.2: typed settings, rooms, work (SPEC section 12); check
   * IOCPHOST_API_HAS(api, setting_int) first on a host that may be 1.1. */

  /* The plugin's "settings" (the config's object), read by JSON pointer
   * (RFC 6901): "/match/capacity" is member "capacity" of member "match",
   * "/maps/0" the first element of array "maps", "" the whole object; in a
   * member's name, "~1" stands for '/' and "~0" for '~'. A missing value,
   * one of another type, or an invalid pointer (not starting with '/', a '~'
   * not followed by 0 or 1, an index with a leading zero) gives def; so no
   * plugin parses JSON by hand. Check types and ranges up front in
   * check_settings where a wrong value must be an error, not a default.
   * The host parsed the settings once: the getters are cheap, safe from any
   * thread, and read the settings this generation was loaded with. */
  /* An integer: a JSON number without a fraction, from -(2^53 - 1) to
   * 2^53 - 1. 3.5, 1e300 or 2^53 give def: JSON numbers are read as
   * doubles, and past 2^53 one may not be the integer that was written
   * (RFC 8259 section 6). */
  int64_t (*setting_int)(const iocphost_api_t *api, const char *pointer,
                         int64_t def);
  /* Any JSON number (an integer too). */
  double (*setting_number)(const iocphost_api_t *api, const char *pointer,
                           double def);
  /* A JSON string (UTF-8, escapes decoded, NUL-terminated). The text is
   * the host's: valid until on_unload returns; copy what you keep longer. */
  const char *(*setting_string)(const iocphost_api_t *api,
                                const char *pointer, const char *def);
  /* true (1) or false (0). Not numbers: 0 and 1 give def. */
  int (*setting_bool)(const iocphost_api_t *api, const char *pointer,
                      int def);
  /* Elements of the array there ("/maps" then "/maps/0" ...), or -1 if
   * there is no array there. */
  int (*setting_array_length)(const iocphost_api_t *api, const char *pointer);

  /* Rooms. room_create returns the room with one reference the caller
   * owns (room_release it when done), or NULL; on_open runs soon in the
   * room's order. Rooms belong to the generation that created them (its
   * code stays loaded while they live). */
  iocphost_room_t *(*room_create)(const iocphost_api_t *api,
                                  const iocphost_room_class_t *room_class,
                                  void *arg);
  uint64_t (*room_id)(iocphost_room_t *room); /* unique, never 0 */
  /* Finds a room of this plugin by id, acquired; NULL if none or closed. */
  iocphost_room_t *(*room_find)(const iocphost_api_t *api, uint64_t id);
  iocphost_room_t *(*room_acquire)(iocphost_room_t *room);
  void (*room_release)(iocphost_room_t *room);
  /* Closes the room, from anywhere, at any moment, any number of times:
   * members leave (on_leave, IOCPHOST_LEAVE_CLOSING), then on_close; its
   * timers stop; posts not yet run are dropped and work completions come
   * with ended = 1. Memory goes with the last reference. */
  int (*room_close)(iocphost_room_t *room);
  /* The room's state (state_size bytes); for the room's own callbacks. */
  void *(*room_state)(iocphost_room_t *room);
  /* Makes a session a member: on_join runs in the room's order. A session
   * may be in several rooms. When it ends, it leaves each by itself
   * (IOCPHOST_LEAVE_ENDED), each room in its own order, so room state never
   * holds a dead member. IOCPHOST_E_CLOSED if the room or the session has
   * ended; joining twice is one membership. */
  int (*room_join)(iocphost_room_t *room, iocphost_session_t *session);
  /* on_leave (IOCPHOST_LEAVE_ASKED) in the room's order; E_NOTFOUND if the
   * session is no member by then (nothing runs). */
  int (*room_leave)(iocphost_room_t *room, iocphost_session_t *session);
  /* Inside the room's order only (its callbacks, timers, posts): how many
   * members, and each member in turn (fn must not join or leave). */
  uint32_t (*room_member_count)(iocphost_room_t *room);
  void (*room_members)(iocphost_room_t *room, iocphost_member_fn fn,
                       void *arg);
  /* One copy of the data, shared by every member's send queue; returns how
   * many members it was queued to, or < 0 (as broadcast). In the room's
   * order it sends at once and counts; from elsewhere it is carried into
   * the room's order and returns 0. Members of different services may
   * differ: a member whose service's send_queue_limit_bytes the data
   * exceeds is skipped (it could only be cut off), and a packet goes only
   * to members of packet services whose max_packet_bytes it fits. */
  int (*room_broadcast)(iocphost_room_t *room, const void *data, size_t len);
  int (*room_broadcast_packet)(iocphost_room_t *room, uint16_t id,
                               const void *payload, size_t len);
  /* Run fn soon in the room's order (from any thread). A post the room's
   * close drops is not run: keep what arg points to in the room's state, or
   * free it in on_close, not only in fn. */
  int (*room_post)(iocphost_room_t *room, iocphost_room_fn fn, void *arg);
  /* A room timer: after delay_ms, then every repeat_ms from then on (ticks
   * due at start + delay + n * repeat: no drift), in the room's order,
   * until stopped or the room closes. A room with no members is the
   * plugin's world clock. Returns a timer id (> 0) or 0. */
  uint64_t (*room_timer_start)(iocphost_room_t *room, uint32_t delay_ms,
                               uint32_t repeat_ms, iocphost_room_timer_fn fn,
                               void *arg);
  int (*room_timer_stop)(iocphost_room_t *room, uint64_t timer_id);

  /* Work (see iocphost_work_fn): 0, or IOCPHOST_E_BUSY at once when the
   * work queue is full (config "work": {"queue_limit"}), or
   * IOCPHOST_E_CLOSED. The session or room is held until done ran. */
  int (*session_work)(iocphost_session_t *session, iocphost_work_fn work,
                      iocphost_session_done_fn done, void *arg);
  int (*room_work)(iocphost_room_t *room, iocphost_work_fn work,
                   iocphost_room_done_fn done, void *arg);

  /* ---- ABI 1.3: metrics (SPEC section 15); check
   * IOCPHOST_API_HAS(api, metric_define) first on a host that may be 1.2.
   * The host exports them with its own at /metrics, each series with the
   * labels plugin="<config name>" and generation="<n>" added to yours. */

  /* Defines a metric; only while on_load runs (IOCPHOST_E_LOAD_ONLY
   * otherwise), so the metrics of a generation are fixed once it serves
   * and a bad definition refuses the deploy, not a scrape hours later.
   * Returns IOCPHOST_OK with *out set, or an error with *out NULL, and the
   * host logs one line naming the plugin, the metric and what to fix:
   *   IOCPHOST_E_INVAL     a name, label or bucket list breaking the rules
   *                        of iocphost_metric_def_t, too many labels or
   *                        buckets, an unknown type
   *   IOCPHOST_E_CONFLICT  the name is defined already, by this plugin's
   *                        other live generation or by another plugin,
   *                        with another type or other label names (each
   *                        name has one definition in the host: every
   *                        generation's series render under one header);
   *                        or it collides with a histogram's name_bucket,
   *                        name_sum or name_count
   *   IOCPHOST_E_NOMEM
   * Defining the same name again in one generation, the same way, returns
   * the same metric; the same name by another generation or plugin, the
   * same way, is one family with series of each (the help of the first).
   * A metric lives as long as its generation: after a reload the old
   * generation's series are exported until it is unloaded, then vanish. */
  int (*metric_define)(const iocphost_api_t *api,
                       const iocphost_metric_def_t *def,
                       iocphost_metric_t **out);
  /* The series for one tuple of label values, given in the order of the
   * definition's label names (NULL-terminated, exactly that many; NULL for
   * a metric without labels); made at the first call, then the same
   * pointer. Values are UTF-8, at most 1024 bytes. This lookup may take a
   * lock: call it once per tuple (in on_load, on_connected) and keep the
   * series, not once per update. NULL for a wrong count, an invalid value,
   * past IOCPHOST_METRIC_MAX_SERIES, or no memory (the host logs why, once
   * per metric). Safe from any thread. */
  iocphost_series_t *(*metric_series)(iocphost_metric_t *metric,
                                      const char *const *values);
  /* Updates, from any thread at any time until on_unload returns, with
   * atomics and no lock: concurrent updates are never lost. 0, or
   * IOCPHOST_E_INVAL for a NULL series, a function of another type, a
   * value that is NaN or infinite, or a negative add to a counter (the
   * host logs that once per metric). Values are doubles: integers add up
   * exactly to 2^53. */
  int (*metric_add)(iocphost_series_t *series, double value); /* counter,
                                                               * gauge */
  int (*metric_set)(iocphost_series_t *series, double value); /* gauge */
  /* A histogram: the value counts in the first bucket whose bound it does
   * not exceed (le), or in +Inf, and adds to the sum. */
  int (*metric_observe)(iocphost_series_t *series, double value);
};

/* True if the host's table has the member (append-only evolution). */
#define IOCPHOST_API_HAS(api, member)                                          \
  ((api)->struct_size >=                                                       \
   offsetof(iocphost_api_t, member) + sizeof(((iocphost_api_t *)0)->member))

/* The plugin's descriptor: a static constant in the plugin. */
typedef struct iocphost_plugin {
  uint32_t struct_size; /* sizeof(iocphost_plugin_t) the plugin was built with */
  uint16_t abi_major;   /* IOCPHOST_ABI_MAJOR */
  uint16_t abi_minor;   /* IOCPHOST_ABI_MINOR */
  const char *name;     /* required; matches "name" in the config */
  const char *version;  /* required; shown by status */
  uint32_t session_size; /* bytes of per-session state the host allocates */

  /* Plugin lifecycle. on_load gets the settings object of the config as
   * JSON text ("{}" if none); return 0, or non-zero after writing a reason
   * into err. Optional. */
  int (*on_load)(const iocphost_api_t *api, const char *settings_json,
                 char *err, size_t err_len);
  void (*on_unload)(void);   /* optional: after the last session ended */
  void (*on_stopping)(void); /* optional: the host begins a graceful stop */

  /* Session callbacks. on_connected and on_disconnected are required;
   * on_recv is required for "raw" services, on_packet for "packet" ones. */
  void (*on_connected)(iocphost_session_t *session, void *state);
  /* Raw framing: return how many bytes were consumed; the rest is kept and
   * presented again, in front of the next bytes. */
  size_t (*on_recv)(iocphost_session_t *session, void *state,
                    const uint8_t *data, size_t len);
  /* Packet framing: one whole packet, header removed. */
  void (*on_packet)(iocphost_session_t *session, void *state, uint16_t id,
                    const uint8_t *payload, size_t len);
  /* Optional: bytes of this session were handed to the network. */
  void (*on_send)(iocphost_session_t *session, void *state, size_t bytes);
  void (*on_disconnected)(iocphost_session_t *session, void *state,
                          iocphost_reason_t reason);

  /* ---- ABI 1.2: settings checked before deploy. A descriptor built
   * against an older header is shorter and has no such field: the host
   * reads it only when struct_size covers it, as NULL otherwise. */

  /* Optional: says whether the settings are acceptable, without side
   * effects: return 0, or non-zero after writing a reason into err (say
   * which setting, what it must be and what was found). api is a table for
   * this call only, whose setting_* read the settings being checked (the
   * same ones on_load gets); its other functions are NULL: do not call
   * them. settings_json is the same settings as JSON text ("{}" if none).
   * It may run at any time, even while another generation of the plugin
   * serves, and on a library that is never loaded further: it must not
   * touch globals, files, threads or other host functions, nor keep api or
   * a setting_string text past its return. `iocphost check` and
   * `reload --dry-run` call it to refuse bad settings before a deploy;
   * `run` and `reload` call it before on_load, so on_load may rely on
   * settings it accepted. */
  int (*check_settings)(const iocphost_api_t *api, const char *settings_json,
                        char *err, size_t err_len);
} iocphost_plugin_t;

/* The smallest descriptor the host accepts: everything up to on_disconnected. */
#define IOCPHOST_PLUGIN_MIN_SIZE                                               \
  (offsetof(iocphost_plugin_t, on_disconnected) +                             \
   sizeof(((iocphost_plugin_t *)0)->on_disconnected))

/* Fills the header fields of a descriptor:
 *   static const iocphost_plugin_t my_plugin = {
 *     IOCPHOST_PLUGIN_HEADER, .name = "echo", .version = "1.0.0", ... };   */
#define IOCPHOST_PLUGIN_HEADER                                                 \
  .struct_size = sizeof(iocphost_plugin_t), .abi_major = IOCPHOST_ABI_MAJOR,   \
  .abi_minor = IOCPHOST_ABI_MINOR

typedef const iocphost_plugin_t *(*iocphost_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* IOCPHOST_PLUGIN_H */
