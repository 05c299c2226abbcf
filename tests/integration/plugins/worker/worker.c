/*
 * worker: a test plugin for work threads (session_work, SPEC section 12),
 * on a "packet" service.
 *
 * Packets in (payloads little-endian):
 *   1 work  {u32 token, u32 sleep_ms}: submits a work that sleeps sleep_ms
 *           on a work thread (a blocking call) and computes token * 2 + 1.
 *           Its done sends packet 2 {u32 token, u32 result} when the
 *           session is still there (ended = 0). A full work queue answers
 *           packet 3 {u32 token}; any other refusal packet 4 {u32 token,
 *           i32 result}.
 *   5 echo  anything: answered at once with packet 5 and the same payload.
 *
 * Log lines tests read (api->log, level info):
 *   worker summary: submitted=N done=D ended=E busy=B overlaps=O
 *       from on_unload: works accepted, done calls (each exactly once:
 *       D == N when every done ran), done calls with ended = 1, E_BUSY
 *       answers, and done calls that overlapped another callback of their
 *       session (must be 0).
 */
#include <iocphost/plugin.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#endif

typedef struct worker_state {
  atomic_int in_callback; /* callbacks of this session running now */
} worker_state_t;

typedef struct job {
  uint32_t token;
  uint32_t sleep_ms;
  uint32_t result;
} job_t;

static const iocphost_api_t *api;
static atomic_ullong submitted, done_calls, ended_calls, busy, overlaps;

static void sleep_ms(uint32_t ms) {
#ifdef _WIN32
  Sleep(ms);
#else
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
#endif
}

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static void enter(worker_state_t *st) {
  if (atomic_fetch_add(&st->in_callback, 1) != 0)
    atomic_fetch_add(&overlaps, 1);
}

static void leave(worker_state_t *st) {
  atomic_fetch_sub(&st->in_callback, 1);
}

/* On a work thread: a blocking call. */
static void run_job(void *arg) {
  job_t *job = arg;
  sleep_ms(job->sleep_ms);
  job->result = job->token * 2 + 1;
}

/* In the session's order; once per accepted work, ended or not. */
static void job_done(iocphost_session_t *session, void *state, void *arg,
                     int ended) {
  worker_state_t *st = state;
  job_t *job = arg;
  enter(st);
  if (ended) {
    atomic_fetch_add(&ended_calls, 1);
  } else {
    uint8_t reply[8];
    put_u32(reply, job->token);
    put_u32(reply + 4, job->result);
    api->send_packet(session, 2, reply, sizeof reply);
  }
  free(job);
  leave(st);
  atomic_fetch_add(&done_calls, 1);
}

static int worker_load(const iocphost_api_t *host_api, const char *settings,
                       char *err, size_t err_len) {
  (void)settings;
  (void)err;
  (void)err_len;
  api = host_api;
  return 0;
}

static void worker_unload(void) {
  api->log(api, IOCPHOST_LOG_INFO,
           "worker summary: submitted=%llu done=%llu ended=%llu busy=%llu "
           "overlaps=%llu",
           (unsigned long long)submitted, (unsigned long long)done_calls,
           (unsigned long long)ended_calls, (unsigned long long)busy,
           (unsigned long long)overlaps);
}

static void worker_connected(iocphost_session_t *session, void *state) {
  (void)session;
  (void)state;
}

static void submit(iocphost_session_t *session, const uint8_t *payload,
                   size_t len) {
  if (len < 8)
    return;
  job_t *job = calloc(1, sizeof *job);
  if (!job)
    return;
  job->token = get_u32(payload);
  job->sleep_ms = get_u32(payload + 4);
  int rc = api->session_work(session, run_job, job_done, job);
  if (rc == IOCPHOST_OK) {
    atomic_fetch_add(&submitted, 1);
    return;
  }
  uint8_t reply[8];
  put_u32(reply, job->token);
  free(job);
  if (rc == IOCPHOST_E_BUSY) {
    atomic_fetch_add(&busy, 1);
    api->send_packet(session, 3, reply, 4);
  } else {
    put_u32(reply + 4, (uint32_t)rc);
    api->send_packet(session, 4, reply, 8);
  }
}

static void worker_packet(iocphost_session_t *session, void *state,
                          uint16_t id, const uint8_t *payload, size_t len) {
  worker_state_t *st = state;
  enter(st);
  if (id == 1)
    submit(session, payload, len);
  else if (id == 5)
    api->send_packet(session, 5, payload, len);
  leave(st);
}

static void worker_disconnected(iocphost_session_t *session, void *state,
                                iocphost_reason_t reason) {
  (void)session;
  (void)state;
  (void)reason;
}

static const iocphost_plugin_t worker_plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "worker",
    .version = "1.0.0",
    .session_size = sizeof(worker_state_t),
    .on_load = worker_load,
    .on_unload = worker_unload,
    .on_connected = worker_connected,
    .on_packet = worker_packet,
    .on_disconnected = worker_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &worker_plugin; }
