/*
 * The host's metrics and the process's: the same snapshot status --json
 * prints (snapshot.h), plus what status leaves out (buffers in use, the
 * work pool's latency, tick lateness), through the one Prometheus writer
 * (prom.h). Names are iocphost_*; labels service, plugin, core,
 * generation where they apply. Counters only ever grow (a retired
 * generation's series end with it).
 */
#include <stdio.h>
#include <string.h>

#include "host_internal.h"
#include "metrics.h"
#include "procstat.h"
#include "snapshot.h"
#include "version.h"

/* One service-labelled family: the value of every service. */
typedef uint64_t (*service_value_fn)(const snap_service_t *s);

static void service_family(prom_t *p, const host_snapshot_t *snap,
                           const char *name, prom_type_t type,
                           const char *help, service_value_fn value) {
  prom_family(p, name, type, help);
  for (size_t i = 0; i < snap->service_count; i++) {
    const snap_service_t *s = &snap->services[i];
    const char *labels[] = {"service", s->config->name, "plugin", s->plugin,
                            "core", s->config->core, NULL};
    prom_sample_u64(p, name, labels, value(s));
  }
}

#define SERVICE_VALUE(field_name, expr)                                        \
  static uint64_t field_name(const snap_service_t *s) { return (expr); }
SERVICE_VALUE(v_sessions, s->stats.sessions_now)
SERVICE_VALUE(v_sessions_max, s->stats.sessions_max)
SERVICE_VALUE(v_accepted, s->stats.accepted)
SERVICE_VALUE(v_rejected, s->stats.rejected)
SERVICE_VALUE(v_accept_errors, s->stats.accept_errors)
SERVICE_VALUE(v_connects, s->stats.connects)
SERVICE_VALUE(v_connect_failures, s->stats.connect_failures)
SERVICE_VALUE(v_bytes_in, s->stats.bytes_in)
SERVICE_VALUE(v_bytes_out, s->stats.bytes_out)
SERVICE_VALUE(v_packets_in, s->packets_in)
SERVICE_VALUE(v_packets_out, s->packets_out)
SERVICE_VALUE(v_send_queue, s->stats.send_queue_bytes)
SERVICE_VALUE(v_recv_buffer, s->stats.recv_buffer_bytes)
#undef SERVICE_VALUE

static void render_services(prom_t *p, const host_snapshot_t *snap) {
  static const struct {
    const char *name;
    prom_type_t type;
    const char *help;
    service_value_fn value;
  } families[] = {
      {"iocphost_sessions", PROM_GAUGE, "Sessions open now.", v_sessions},
      {"iocphost_sessions_max", PROM_GAUGE,
       "Most sessions at once (max_sessions, or a client's sessions).",
       v_sessions_max},
      {"iocphost_accepted_total", PROM_COUNTER, "Connections accepted.",
       v_accepted},
      {"iocphost_rejected_total", PROM_COUNTER,
       "Connections refused at max_sessions.", v_rejected},
      {"iocphost_accept_errors_total", PROM_COUNTER,
       "Accepts that failed (descriptors or memory exhausted).",
       v_accept_errors},
      {"iocphost_connects_total", PROM_COUNTER,
       "Client sessions that connected.", v_connects},
      {"iocphost_connect_failures_total", PROM_COUNTER,
       "Client connects that failed.", v_connect_failures},
      {"iocphost_bytes_in_total", PROM_COUNTER, "Bytes received.", v_bytes_in},
      {"iocphost_bytes_out_total", PROM_COUNTER, "Bytes sent.", v_bytes_out},
      {"iocphost_packets_in_total", PROM_COUNTER,
       "Packets delivered to the plugin (packet framing).", v_packets_in},
      {"iocphost_packets_out_total", PROM_COUNTER,
       "Packets the plugin sent (packet framing).", v_packets_out},
      {"iocphost_send_queue_bytes", PROM_GAUGE,
       "Bytes queued to send now, over the service's sessions.", v_send_queue},
      {"iocphost_recv_buffer_bytes", PROM_GAUGE,
       "Bytes of buffers keeping unconsumed input now.", v_recv_buffer},
  };
  for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
    service_family(p, snap, families[i].name, families[i].type,
                   families[i].help, families[i].value);
  prom_family(p, "iocphost_disconnects_total", PROM_COUNTER,
              "Sessions ended, by reason.");
  for (size_t i = 0; i < snap->service_count; i++) {
    const snap_service_t *s = &snap->services[i];
    for (int r = 1; r < SNAPSHOT_REASONS; r++) {
      if (!snapshot_reason_name(r))
        continue;
      const char *labels[] = {"service", s->config->name,
                              "plugin",  s->plugin,
                              "core",    s->config->core,
                              "reason",  snapshot_reason_name(r),
                              NULL};
      prom_sample_u64(p, "iocphost_disconnects_total", labels,
                      s->stats.disconnects[r]);
    }
  }
}

static void render_cores(prom_t *p, const host_snapshot_t *snap) {
  prom_family(p, "iocphost_core_threads", PROM_GAUGE,
              "Worker threads of the core.");
  for (size_t i = 0; i < snap->core_count; i++) {
    const char *labels[] = {"core", snap->cores[i].name, NULL};
    if (snap->cores[i].running)
      prom_sample_u64(p, "iocphost_core_threads", labels,
                      (uint64_t)snap->cores[i].threads);
  }
  prom_family(p, "iocphost_completions_total", PROM_COUNTER,
              "I/O completions the core processed.");
  for (size_t i = 0; i < snap->core_count; i++) {
    const char *labels[] = {"core", snap->cores[i].name, NULL};
    if (snap->cores[i].running)
      prom_sample_u64(p, "iocphost_completions_total", labels,
                      snap->cores[i].completions);
  }
}

static void work_histogram(prom_t *p, const char *name, const char *help,
                           const uint64_t *buckets, uint64_t sum_us) {
  /* Bucket i counts times below 2^i microseconds; the last, the rest. */
  double bounds[WORK_HISTOGRAM_BUCKETS - 1];
  for (int i = 0; i < WORK_HISTOGRAM_BUCKETS - 1; i++)
    bounds[i] = (double)(1ULL << i) / 1e6;
  prom_family(p, name, PROM_HISTOGRAM, help);
  prom_histogram(p, name, NULL, bounds, buckets, WORK_HISTOGRAM_BUCKETS - 1,
                 (double)sum_us / 1e6);
}

static void render_work(prom_t *p, const host_snapshot_t *snap) {
  if (!snap->has_work)
    return;
  const work_pool_stats_t *w = &snap->work;
  static const char *const gauge_names[] = {
      "iocphost_work_threads", "iocphost_work_queue_limit",
      "iocphost_work_queued", "iocphost_work_running"};
  static const char *const gauge_help[] = {
      "Threads of the work pool.", "Items that may wait before E_BUSY.",
      "Items waiting in the work queue now.", "Items running now."};
  uint64_t gauges[] = {(uint64_t)w->threads, w->queue_limit, w->queued,
                       w->running};
  for (int i = 0; i < 4; i++) {
    prom_family(p, gauge_names[i], PROM_GAUGE, gauge_help[i]);
    prom_sample_u64(p, gauge_names[i], NULL, gauges[i]);
  }
  prom_family(p, "iocphost_work_completed_total", PROM_COUNTER,
              "Work items completed.");
  prom_sample_u64(p, "iocphost_work_completed_total", NULL, w->completed);
  prom_family(p, "iocphost_work_rejected_total", PROM_COUNTER,
              "Work refused with E_BUSY (the queue was full).");
  prom_sample_u64(p, "iocphost_work_rejected_total", NULL, w->rejected);
  work_histogram(p, "iocphost_work_wait_seconds",
                 "From submit to the start of the work (queue wait).",
                 w->wait_histogram, w->wait_us_sum);
  work_histogram(p, "iocphost_work_run_seconds",
                 "The work and its hand-back, run on a pool thread.",
                 w->run_histogram, w->run_us_sum);
}

/* One generation-labelled family. */
typedef double (*gen_value_fn)(const snap_generation_t *g);
#define GEN_VALUE(fn, expr)                                                    \
  static double fn(const snap_generation_t *g) { return (double)(expr); }
GEN_VALUE(g_sessions, g->sessions)
GEN_VALUE(g_holds, g->holds)
GEN_VALUE(g_rooms, g->room_count)
GEN_VALUE(g_members, g->members)
GEN_VALUE(g_ticks, g->ticks)
GEN_VALUE(g_late_ticks, g->late_ticks)
GEN_VALUE(g_lateness, (double)g->late_ms_sum / 1000.0)
#undef GEN_VALUE

static void render_generations(prom_t *p, const host_snapshot_t *snap) {
  prom_family(p, "iocphost_plugin_generation", PROM_GAUGE,
              "The plugin's current generation (it grows at each redeploy).");
  for (size_t i = 0; i < snap->plugin_count; i++) {
    const snap_plugin_t *pl = &snap->plugins[i];
    const char *labels[] = {"plugin", pl->name, "version",
                            pl->version ? pl->version : "", NULL};
    if (pl->has_current)
      prom_sample_u64(p, "iocphost_plugin_generation", labels, pl->generation);
  }
  static const struct {
    const char *name;
    prom_type_t type;
    const char *help;
    gen_value_fn value;
  } families[] = {
      {"iocphost_generation_sessions", PROM_GAUGE,
       "Sessions bound to the plugin generation.", g_sessions},
      {"iocphost_generation_timers_and_posts", PROM_GAUGE,
       "Timers and posts that will still run the generation's code.",
       g_holds},
      {"iocphost_rooms", PROM_GAUGE, "Rooms of the generation.", g_rooms},
      {"iocphost_room_members", PROM_GAUGE,
       "Members over the generation's rooms.", g_members},
      {"iocphost_room_ticks_total", PROM_COUNTER,
       "Room timer ticks run.", g_ticks},
      {"iocphost_room_late_ticks_total", PROM_COUNTER,
       "Room timer ticks that ran late.", g_late_ticks},
      {"iocphost_room_tick_lateness_seconds_total", PROM_COUNTER,
       "How late the late ticks ran, summed.", g_lateness},
  };
  for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
    prom_family(p, families[f].name, families[f].type, families[f].help);
    for (size_t i = 0; i < snap->plugin_count; i++) {
      const snap_plugin_t *pl = &snap->plugins[i];
      for (size_t j = 0; j < pl->generation_count; j++) {
        const snap_generation_t *g = &pl->generations[j];
        char number[16];
        snprintf(number, sizeof number, "%u", g->number);
        const char *labels[] = {"plugin", pl->name, "generation", number,
                                NULL};
        prom_sample(p, families[f].name, labels, families[f].value(g));
      }
    }
  }
}

void host_render_metrics(host_t *host, prom_t *p) {
  host_snapshot_t snap;
  if (host_snapshot_take(host, &snap) != 0) {
    p->failed = 1;
    return;
  }
  prom_family(p, "iocphost_build_info", PROM_GAUGE,
              "Always 1: the host's version and instance name.");
  const char *info[] = {"version", IOCPHOST_VERSION, "name",
                        host->config->name, NULL};
  prom_sample_u64(p, "iocphost_build_info", info, 1);
  render_services(p, &snap);
  render_cores(p, &snap);
  render_work(p, &snap);
  render_generations(p, &snap);
  host_snapshot_free(&snap);
}

void process_render_metrics(host_t *host, prom_t *p) {
  (void)host;
  procstat_t st;
  procstat_read(&st);
  if (st.has_cpu) {
    prom_family(p, "process_cpu_seconds_total", PROM_COUNTER,
                "Total user and system CPU time spent in seconds.");
    prom_sample(p, "process_cpu_seconds_total", NULL, st.cpu_seconds);
  }
  if (st.has_fds) {
    prom_family(p, "process_open_fds", PROM_GAUGE,
                "Number of open file descriptors (Windows: handles).");
    prom_sample(p, "process_open_fds", NULL, st.open_fds);
  }
  if (st.has_max_fds) {
    prom_family(p, "process_max_fds", PROM_GAUGE,
                "Maximum number of open file descriptors.");
    prom_sample(p, "process_max_fds", NULL, st.max_fds);
  }
  if (st.has_vsize) {
    prom_family(p, "process_virtual_memory_bytes", PROM_GAUGE,
                "Virtual memory size in bytes (Windows: private bytes).");
    prom_sample(p, "process_virtual_memory_bytes", NULL, st.vsize_bytes);
  }
  if (st.has_rss) {
    prom_family(p, "process_resident_memory_bytes", PROM_GAUGE,
                "Resident memory size in bytes (Windows: working set).");
    prom_sample(p, "process_resident_memory_bytes", NULL, st.rss_bytes);
  }
  if (st.has_start) {
    prom_family(p, "process_start_time_seconds", PROM_GAUGE,
                "Start time of the process since unix epoch in seconds.");
    prom_sample(p, "process_start_time_seconds", NULL, st.start_time_seconds);
  }
}
