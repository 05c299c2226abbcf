/*
 * Cores: a named completion engine (backend.h) with its worker threads.
 * Nothing here is global but the live-object counter, which exists so tests
 * can prove every session, listener, timer and post was freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <unistd.h>
#endif

#include "engine/internal.h"
#include "engine/log.h"

static atomic_long live_objects;

static int cpu_count(void) {
#ifdef _WIN32
  SYSTEM_INFO info;
  GetSystemInfo(&info);
  return info.dwNumberOfProcessors > 0 ? (int)info.dwNumberOfProcessors : 1;
#else
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus > 0 ? (int)cpus : 1;
#endif
}

void engine__live_add(long delta) {
  atomic_fetch_add_explicit(&live_objects, delta, memory_order_relaxed);
}

long engine_live_objects(void) { return atomic_load(&live_objects); }

static const char *backend_name(core_backend_t backend) {
  switch (backend) {
  case CORE_BACKEND_EPOLL:
    return "epoll";
  case CORE_BACKEND_IO_URING:
    return "io_uring";
  case CORE_BACKEND_IOCP:
    return "iocp";
  default:
    return "default";
  }
}

int core_backend_parse(const char *name, core_backend_t *out) {
#ifdef _WIN32
  static const core_backend_t here[] = {CORE_BACKEND_IOCP};
#else
  static const core_backend_t here[] = {CORE_BACKEND_EPOLL,
                                        CORE_BACKEND_IO_URING};
#endif
  for (size_t i = 0; name && i < sizeof here / sizeof here[0]; i++) {
    if (strcmp(name, backend_name(here[i])) == 0) {
      *out = here[i];
      return 0;
    }
  }
  return -1;
}

const char *core_backend_choices(void) {
#ifdef _WIN32
  return "\"iocp\"";
#else
  return "\"epoll\", \"io_uring\"";
#endif
}

/* IOCPHOST_DEFAULT_BACKEND, read once: for tests, which run a whole suite
 * on another backend without touching its configs. */
static core_backend_t default_backend;
static pthread_once_t default_backend_once = PTHREAD_ONCE_INIT;

static void read_default_backend(void) {
  const char *env = getenv("IOCPHOST_DEFAULT_BACKEND");
  if (!env || !*env)
    return;
  if (core_backend_parse(env, &default_backend) != 0)
    log_write(LOG_WARN, "core",
              "IOCPHOST_DEFAULT_BACKEND=%s is not a backend of this platform "
              "(%s): ignored",
              env, core_backend_choices());
}

int core_create(const char *name, int threads, core_backend_t backend,
                core_t **out, char *err, size_t err_len) {
  if (threads <= 0)
    threads = cpu_count();
  if (backend == CORE_BACKEND_DEFAULT) {
    pthread_once(&default_backend_once, read_default_backend);
    backend = default_backend;
  }
  core_t *core = calloc(1, sizeof *core);
  if (!core || !(core->name = strdup(name ? name : "core"))) {
    free(core);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  char reason[256];
  int rc = io_core_create(threads, (io_backend_t)backend, &session__io_events,
                          &core->io, reason, sizeof reason);
  if (rc == IO_CORE_UNSUPPORTED) {
    log_write(LOG_WARN, "core",
              "core %s: %s is not available here (%s): running on epoll "
              "instead",
              core->name, backend_name(backend), reason);
    rc = io_core_create(threads, IO_BACKEND_DEFAULT, &session__io_events,
                        &core->io, reason, sizeof reason);
  }
  if (rc != 0) {
    snprintf(err, err_len, "core %s: %s", core->name, reason);
    free(core->name);
    free(core);
    return -1;
  }
  *out = core;
  return 0;
}

void core_destroy(core_t *core) {
  if (!core)
    return;
  io_core_destroy(core->io);
  free(core->name);
  free(core);
}

const char *core_name(const core_t *core) { return core->name; }
int core_thread_count(const core_t *core) {
  return io_core_thread_count(core->io);
}
uint64_t core_completions(const core_t *core) {
  return io_core_completions(core->io);
}
const char *core_backend_name(const core_t *core) {
  return backend_name((core_backend_t)io_core_backend(core->io));
}

const char *session_reason_name(int reason) {
  static const char *const names[] = {
      "unknown",         "peer_closed",  "peer_reset",    "local",
      "protocol_error",  "send_queue_full", "idle_timeout", "host_stopping",
      "connect_failed",  "io_error"};
  if (reason < 0 || reason >= (int)(sizeof names / sizeof names[0]))
    return "unknown";
  return names[reason];
}
