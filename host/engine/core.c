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

int core_create(const char *name, int threads, core_t **out, char *err,
                size_t err_len) {
  if (threads <= 0)
    threads = cpu_count();
  core_t *core = calloc(1, sizeof *core);
  if (!core || !(core->name = strdup(name ? name : "core"))) {
    free(core);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  char reason[256];
  if (io_core_create(threads, &core->io, reason, sizeof reason) != 0) {
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

const char *session_reason_name(int reason) {
  static const char *const names[] = {
      "unknown",         "peer_closed",  "peer_reset",    "local",
      "protocol_error",  "send_queue_full", "idle_timeout", "host_stopping",
      "connect_failed",  "io_error"};
  if (reason < 0 || reason >= (int)(sizeof names / sizeof names[0]))
    return "unknown";
  return names[reason];
}
