/* procstat.h on Windows: the process's memory counters, handles and times. */
#ifdef _WIN32 /* Linux: procstat_linux.c */
#include "procstat.h"

#include <string.h>
#include <windows.h>
#include <psapi.h>

static uint64_t filetime_u64(FILETIME t) {
  return ((uint64_t)t.dwHighDateTime << 32) | t.dwLowDateTime;
}

void procstat_read(procstat_t *out) {
  memset(out, 0, sizeof *out);
  HANDLE self = GetCurrentProcess();
  PROCESS_MEMORY_COUNTERS_EX mem;
  memset(&mem, 0, sizeof mem);
  mem.cb = sizeof mem;
  if (GetProcessMemoryInfo(self, (PROCESS_MEMORY_COUNTERS *)&mem, sizeof mem)) {
    /* As Prometheus's Go client on Windows: the working set is resident,
     * the private bytes virtual. */
    out->rss_bytes = (double)mem.WorkingSetSize;
    out->has_rss = 1;
    out->vsize_bytes = (double)mem.PrivateUsage;
    out->has_vsize = 1;
  }
  DWORD handles = 0;
  /* A process has handles; 0 is a stub's answer (Wine's): not known. */
  if (GetProcessHandleCount(self, &handles) && handles > 0) {
    out->open_fds = (double)handles;
    out->has_fds = 1;
    out->max_fds = 16777216.0; /* the kernel's per-process handle limit */
    out->has_max_fds = 1;
  }
  FILETIME created, exited, kernel, user;
  if (GetProcessTimes(self, &created, &exited, &kernel, &user)) {
    out->cpu_seconds = procstat_filetime_seconds(filetime_u64(kernel) +
                                                 filetime_u64(user));
    out->has_cpu = 1;
    out->start_time_seconds = procstat_filetime_unix(filetime_u64(created));
    out->has_start = 1;
  }
}

#endif
