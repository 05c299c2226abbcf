/*
 * The process's own figures, under the names every Prometheus client
 * library uses (process_resident_memory_bytes, process_open_fds, ...).
 * procstat_read is the platform's (procstat_linux.c: /proc;
 * procstat_win.c: GetProcessMemoryInfo, GetProcessHandleCount,
 * GetProcessTimes); the parsers below are pure, for the unit tests.
 */
#ifndef IOCPHOST_PROCSTAT_H
#define IOCPHOST_PROCSTAT_H

#include <stddef.h>
#include <stdint.h>

typedef struct procstat {
  /* Each figure is valid when its has_ flag is set. */
  int has_rss, has_vsize, has_fds, has_max_fds, has_cpu, has_start;
  double rss_bytes;
  double vsize_bytes;
  double open_fds;
  double max_fds;
  double cpu_seconds;        /* user + system */
  double start_time_seconds; /* since the Unix epoch */
} procstat_t;

void procstat_read(procstat_t *out);

/* /proc/self/stat: user + system CPU seconds, start time (seconds since
 * boot), virtual and resident sizes. 0, or -1 when the text is not a stat
 * line. */
int procstat_parse_stat(const char *text, double ticks_per_second,
                        double page_size, procstat_t *out,
                        double *start_since_boot);
/* /proc/stat's "btime" line: boot time, seconds since the epoch. */
int procstat_parse_btime(const char *text, double *out);
/* Windows FILETIMEs: a duration in 100 ns units to seconds, and a moment
 * (since 1601) to seconds since the Unix epoch. */
double procstat_filetime_seconds(uint64_t hundreds_of_ns);
double procstat_filetime_unix(uint64_t hundreds_of_ns_since_1601);

#endif
