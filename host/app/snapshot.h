/*
 * One consistent read of the host's state and counters, for every reader
 * that reports them: `status` (status.c, text and JSON) and the metrics
 * endpoint (metrics.c). Taken under the host's locks, then read at leisure
 * without them: no reader formats while holding a lock the game's threads
 * take.
 */
#ifndef IOCPHOST_SNAPSHOT_H
#define IOCPHOST_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engine/engine.h"

typedef struct host host_t;

typedef struct snap_room {
  uint64_t id;
  uint32_t members;
} snap_room_t;

typedef struct snap_generation {
  unsigned number;
  char *version;
  int current; /* else retired */
  long sessions;
  long holds; /* timers and posts that will run its code */
  snap_room_t *rooms;
  size_t room_count;
  uint64_t members; /* over its rooms */
  uint64_t ticks, late_ticks, late_ms_sum;
  uint64_t stalls; /* callbacks past watchdog.stall_warn_ms */
} snap_generation_t;

typedef struct snap_plugin {
  const char *name; /* the config's */
  int has_current;
  char *version; /* of the current generation */
  char *path;
  unsigned generation; /* the current one's number */
  snap_generation_t *generations; /* newest first */
  size_t generation_count;
} snap_plugin_t;

typedef struct snap_core {
  const char *name; /* the config's */
  int running;      /* the core exists: threads and completions are set */
  int threads;
  uint64_t completions;
} snap_core_t;

typedef struct snap_service {
  const config_service_t *config;
  const char *plugin; /* the config's name */
  int packet_framing;
  service_stats_t stats;
  uint64_t packets_in, packets_out;
} snap_service_t;

typedef struct host_snapshot {
  int stopping;
  snap_core_t *cores;
  size_t core_count;
  int has_work;
  work_pool_stats_t work;
  snap_plugin_t *plugins;
  size_t plugin_count;
  snap_service_t *services;
  size_t service_count;
} host_snapshot_t;

/* 0, or -1 when memory ran out (then *out holds nothing to free). */
int host_snapshot_take(host_t *host, host_snapshot_t *out);
void host_snapshot_free(host_snapshot_t *snap);

/* The name of a disconnect reason (session_reason_t) as status and the
 * metrics print it ("peer_closed"), or NULL. */
const char *snapshot_reason_name(int reason);
#define SNAPSHOT_REASONS 10

#endif
