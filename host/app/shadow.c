#include "shadow.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <direct.h>
#include <process.h>
#include <windows.h>
#define current_pid() ((long)_getpid())
#define PLUGIN_SUFFIX ".dll"
#include "trust_win.h"
#else
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#define current_pid() ((long)getpid())
#define PLUGIN_SUFFIX ".so"
#endif

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= FNV_PRIME;
  }
  return h;
}

static int make_dir(const char *path) {
#ifdef _WIN32
  return trust_win_make_private_dir(path);
#else
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return -1;
  return chmod(path, 0700);
#endif
}

static int process_alive(long pid) {
#ifdef _WIN32
  HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
  if (!h)
    return 0;
  DWORD code = 0;
  int alive = GetExitCodeProcess(h, &code) && code == STILL_ACTIVE;
  CloseHandle(h);
  return alive;
#else
  return kill((pid_t)pid, 0) == 0 || errno == EPERM;
#endif
}

void shadow_dir_remove(const char *dir) {
  if (!dir)
    return;
#ifdef _WIN32
  char pattern[1024];
  snprintf(pattern, sizeof pattern, "%s\\*", dir);
  WIN32_FIND_DATAA found;
  HANDLE h = FindFirstFileA(pattern, &found);
  if (h != INVALID_HANDLE_VALUE) {
    do {
      if (found.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
        continue;
      char path[1024];
      snprintf(path, sizeof path, "%s\\%s", dir, found.cFileName);
      remove(path);
    } while (FindNextFileA(h, &found));
    FindClose(h);
  }
  _rmdir(dir);
#else
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  rmdir(dir);
#endif
}

/* Folders named plugins-<name>-<pid> whose process is gone. */
static void remove_stale(const char *runtime_dir, const char *name) {
  char prefix[256];
  int n = snprintf(prefix, sizeof prefix, "plugins-%s-", name);
  if (n < 0 || (size_t)n >= sizeof prefix)
    return;
#ifdef _WIN32
  char pattern[1024];
  snprintf(pattern, sizeof pattern, "%s\\%s*", runtime_dir, prefix);
  WIN32_FIND_DATAA found;
  HANDLE h = FindFirstFileA(pattern, &found);
  if (h == INVALID_HANDLE_VALUE)
    return;
  do {
    const char *entry = found.cFileName;
#else
  DIR *d = opendir(runtime_dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *entry = e->d_name;
#endif
    if (strncmp(entry, prefix, (size_t)n) != 0)
      continue;
    char *end = NULL;
    long pid = strtol(entry + n, &end, 10);
    if (!end || *end != '\0' || pid <= 0 || pid == current_pid() ||
        process_alive(pid))
      continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", runtime_dir, entry);
    shadow_dir_remove(path);
#ifdef _WIN32
  } while (FindNextFileA(h, &found));
  FindClose(h);
#else
  }
  closedir(d);
#endif
}

int shadow_dir_create(const char *runtime_dir, const char *name, char **dir,
                      char *err, size_t err_len) {
  remove_stale(runtime_dir, name);
  size_t len = strlen(runtime_dir) + strlen(name) + 48;
  char *path = malloc(len);
  if (!path) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  snprintf(path, len, "%s/plugins-%s-%ld", runtime_dir, name, current_pid());
  if (make_dir(path) != 0) {
    snprintf(err, err_len,
             "cannot create the plugin shadow folder %s: %s (runtime_dir "
             "must be writable)",
             path, strerror(errno));
    free(path);
    return -1;
  }
  *dir = path;
  return 0;
}

int shadow_copy(const char *dir, const char *plugin, unsigned generation,
                const char *source, char **path, uint64_t *hash, char *err,
                size_t err_len) {
  size_t len = strlen(dir) + strlen(plugin) + 48;
  char *target = malloc(len);
  if (!target) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  snprintf(target, len, "%s/%s.%u%s", dir, plugin, generation, PLUGIN_SUFFIX);
  FILE *in = fopen(source, "rb");
  if (!in) {
    snprintf(err, err_len, "cannot read %s: %s", source, strerror(errno));
    free(target);
    return -1;
  }
  FILE *out = fopen(target, "wb");
  if (!out) {
    snprintf(err, err_len, "cannot write the shadow copy %s: %s", target,
             strerror(errno));
    fclose(in);
    free(target);
    return -1;
  }
  uint64_t h = FNV_OFFSET;
  unsigned char buf[65536];
  size_t n;
  int failed = 0;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
    h = fnv1a(h, buf, n);
    if (fwrite(buf, 1, n, out) != n) {
      failed = 1;
      break;
    }
  }
  failed |= ferror(in);
  failed |= fclose(out) != 0;
  fclose(in);
  if (failed) {
    snprintf(err, err_len, "cannot copy %s to %s: %s", source, target,
             strerror(errno));
    remove(target);
    free(target);
    return -1;
  }
#ifndef _WIN32
  chmod(target, 0500); /* read and map, nothing else */
#endif
  *path = target;
  *hash = h;
  return 0;
}

void shadow_remove(const char *path) {
  if (path)
    remove(path);
}

int file_hash(const char *path, uint64_t *hash, char *err, size_t err_len) {
  FILE *in = fopen(path, "rb");
  if (!in) {
    snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  uint64_t h = FNV_OFFSET;
  unsigned char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0)
    h = fnv1a(h, buf, n);
  int failed = ferror(in);
  fclose(in);
  if (failed) {
    snprintf(err, err_len, "cannot read %s", path);
    return -1;
  }
  *hash = h;
  return 0;
}
