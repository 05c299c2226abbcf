/* The pure parts of procstat.h: the same on every platform. */
#include "procstat.h"

#include <stdlib.h>
#include <string.h>

int procstat_parse_stat(const char *text, double ticks_per_second,
                        double page_size, procstat_t *out,
                        double *start_since_boot) {
  /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
   * fields are counted from the last ')'. Field 3 (state) comes first. */
  const char *p = text ? strrchr(text, ')') : NULL;
  if (!p || ticks_per_second <= 0)
    return -1;
  p++;
  double utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
  int field = 3, seen = 0;
  while (*p && field <= 24) {
    while (*p == ' ')
      p++;
    if (!*p || *p == '\n')
      break;
    const char *end = p;
    while (*end && *end != ' ' && *end != '\n')
      end++;
    if (field >= 14) {
      char *stop;
      double v = strtod(p, &stop);
      if (stop != end)
        return -1;
      switch (field) {
      case 14: utime = v; seen++; break;
      case 15: stime = v; seen++; break;
      case 22: start = v; seen++; break;
      case 23: vsize = v; seen++; break;
      case 24: rss = v; seen++; break;
      default: break;
      }
    }
    field++;
    p = end;
  }
  if (seen != 5)
    return -1;
  out->cpu_seconds = (utime + stime) / ticks_per_second;
  out->has_cpu = 1;
  out->vsize_bytes = vsize;
  out->has_vsize = 1;
  out->rss_bytes = rss * page_size;
  out->has_rss = 1;
  *start_since_boot = start / ticks_per_second;
  return 0;
}

int procstat_parse_btime(const char *text, double *out) {
  for (const char *line = text; line && *line;) {
    if (strncmp(line, "btime ", 6) == 0) {
      char *stop;
      double v = strtod(line + 6, &stop);
      if (stop == line + 6 || v <= 0)
        return -1;
      *out = v;
      return 0;
    }
    line = strchr(line, '\n');
    if (line)
      line++;
  }
  return -1;
}

double procstat_filetime_seconds(uint64_t hundreds_of_ns) {
  return (double)hundreds_of_ns / 1e7;
}

double procstat_filetime_unix(uint64_t since_1601) {
  /* 11644473600 s from 1601-01-01 to 1970-01-01. */
  const uint64_t epoch = 116444736000000000ULL;
  return since_1601 < epoch ? 0.0 : (double)(since_1601 - epoch) / 1e7;
}
