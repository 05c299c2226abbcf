/* procstat.h on Linux: /proc/self. */
#ifndef _WIN32 /* Windows: procstat_win.c */
#include "procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The whole of a small /proc file; 0, or -1. */
static int read_small(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "re");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  buf[n] = '\0';
  return n > 0 ? 0 : -1;
}

void procstat_read(procstat_t *out) {
  memset(out, 0, sizeof *out);
  char buf[4096];
  double since_boot = 0, btime = 0;
  if (read_small("/proc/self/stat", buf, sizeof buf) == 0 &&
      procstat_parse_stat(buf, (double)sysconf(_SC_CLK_TCK),
                          (double)sysconf(_SC_PAGESIZE), out,
                          &since_boot) == 0) {
    /* /proc/stat is long; btime sits in its first few kilobytes. */
    char stat[16384];
    if (read_small("/proc/stat", stat, sizeof stat) == 0 &&
        procstat_parse_btime(stat, &btime) == 0) {
      out->start_time_seconds = btime + since_boot;
      out->has_start = 1;
    }
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    long count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
      if (e->d_name[0] != '.')
        count++;
    closedir(d);
    out->open_fds = (double)(count - 1); /* not the one reading the folder */
    out->has_fds = 1;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    out->max_fds = (double)rl.rlim_cur;
    out->has_max_fds = 1;
  }
}

#endif
