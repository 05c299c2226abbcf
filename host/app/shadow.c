#include "shadow.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"

#ifdef _WIN32
#include <direct.h>
#include <fcntl.h>
#include <io.h>
#include <process.h>
#include <sys/stat.h>
#include <windows.h>
#define current_pid() ((long)_getpid())
#define PLUGIN_SUFFIX ".dll"
#define read_fd(fd, buf, n) _read(fd, buf, (unsigned)(n))
#include "trust_win.h"
#else
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trust.h"
#define current_pid() ((long)getpid())
#define PLUGIN_SUFFIX ".so"
#define read_fd(fd, buf, n) read(fd, buf, n)
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

/* Whether entry is plugins-<name>-<pid> of a process that is gone, or of
 * this very pid (which has no shadow folder yet when this runs: one left
 * over is a dead process's that had the same pid). */
static int is_stale(const char *entry, const char *prefix, size_t prefix_len) {
  if (strncmp(entry, prefix, prefix_len) != 0)
    return 0;
  char *end = NULL;
  long pid = strtol(entry + prefix_len, &end, 10);
  if (!end || end == entry + prefix_len || *end != '\0' || pid <= 0)
    return 0;
  return pid == current_pid() || !process_alive(pid);
}

#ifdef _WIN32

/* The shadow folder gets a DACL of its own (the host's account, SYSTEM,
 * Administrators), whatever its parent's would give it. */
static int make_dir(const char *path) { return trust_win_make_private_dir(path); }

void shadow_dir_remove(const char *dir) {
  if (!dir)
    return;
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
}

static void remove_stale(const char *runtime_dir, const char *prefix,
                         size_t prefix_len) {
  char pattern[1024];
  snprintf(pattern, sizeof pattern, "%s\\%s*", runtime_dir, prefix);
  WIN32_FIND_DATAA found;
  HANDLE h = FindFirstFileA(pattern, &found);
  if (h == INVALID_HANDLE_VALUE)
    return;
  do {
    if (!is_stale(found.cFileName, prefix, prefix_len))
      continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", runtime_dir, found.cFileName);
    shadow_dir_remove(path);
  } while (FindNextFileA(h, &found));
  FindClose(h);
}

int shadow_dir_create(const char *runtime_dir, const char *name, char **dir,
                      char *err, size_t err_len) {
  char prefix[256];
  int n = snprintf(prefix, sizeof prefix, "plugins-%s-", name);
  if (n > 0 && (size_t)n < sizeof prefix)
    remove_stale(runtime_dir, prefix, (size_t)n);
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

static int create_copy(const char *dir, const char *file, char *target,
                       size_t target_len, char *err, size_t err_len) {
  snprintf(target, target_len, "%s/%s", dir, file);
  int fd =
      _open(target, _O_WRONLY | _O_CREAT | _O_TRUNC | _O_BINARY | _O_NOINHERIT,
            _S_IREAD | _S_IWRITE);
  if (fd < 0)
    snprintf(err, err_len, "cannot write the shadow copy %s: %s", target,
             strerror(errno));
  return fd;
}

static void seal_copy(int fd) { (void)fd; }

#else /* POSIX */

/* Removes the entry name of the folder dir_fd without following a link: a
 * link or file is unlinked; a folder is emptied (of files and links) and
 * removed, but only if it is the host user's own: those the host made. */
static void remove_entry_at(int dir_fd, const char *name, const char *shown) {
  struct stat st;
  if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
    return;
  if (!S_ISDIR(st.st_mode)) {
    unlinkat(dir_fd, name, 0);
    return;
  }
  int fd =
      openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return;
  if (fstat(fd, &st) != 0 || st.st_uid != geteuid()) {
    log_write(LOG_WARN, "host",
              "left %s as it is: it is not the host user's, so the host did "
              "not make it",
              shown);
    close(fd);
    return;
  }
  /* A killed run may have left it read-only; it is the host's own. */
  fchmod(fd, 0700);
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    struct stat inner;
    if (fstatat(dirfd(d), e->d_name, &inner, AT_SYMLINK_NOFOLLOW) == 0 &&
        !S_ISDIR(inner.st_mode))
      unlinkat(dirfd(d), e->d_name, 0);
  }
  closedir(d);
  if (unlinkat(dir_fd, name, AT_REMOVEDIR) != 0)
    log_write(LOG_WARN, "host", "cannot remove %s: %s", shown, strerror(errno));
}

/* Splits path into its folder (malloc'd) and last name (inside path). */
static char *split_parent(const char *path, const char **base) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    *base = path;
    return strdup(".");
  }
  *base = slash + 1;
  return slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
}

void shadow_dir_remove(const char *dir) {
  if (!dir)
    return;
  const char *base;
  char *parent = split_parent(dir, &base);
  char reason[1024];
  int parent_fd =
      parent ? trust_open_private_dir(parent, 0, reason, sizeof reason) : -1;
  if (parent_fd >= 0) {
    remove_entry_at(parent_fd, base, dir);
    close(parent_fd);
  }
  free(parent);
}

static void remove_stale(int runtime_fd, const char *runtime_dir,
                         const char *prefix, size_t prefix_len) {
  int fd = dup(runtime_fd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0)
      close(fd);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!is_stale(e->d_name, prefix, prefix_len))
      continue;
    char shown[4096];
    snprintf(shown, sizeof shown, "%s/%s", runtime_dir, e->d_name);
    remove_entry_at(runtime_fd, e->d_name, shown);
  }
  closedir(d);
}

int shadow_dir_create(const char *runtime_dir, const char *name, char **dir,
                      char *err, size_t err_len) {
  char reason[2048];
  int runtime_fd =
      trust_open_private_dir(runtime_dir, 1, reason, sizeof reason);
  if (runtime_fd < 0) {
    snprintf(err, err_len, "runtime_dir: %s", reason);
    return -1;
  }
  char entry[320];
  int n = snprintf(entry, sizeof entry, "plugins-%s-", name);
  if (n < 0 || (size_t)n >= sizeof entry - 24) {
    snprintf(err, err_len, "the instance name is too long");
    close(runtime_fd);
    return -1;
  }
  remove_stale(runtime_fd, runtime_dir, entry, (size_t)n);
  snprintf(entry + n, sizeof entry - (size_t)n, "%ld", current_pid());
  size_t len = strlen(runtime_dir) + strlen(entry) + 2;
  char *path = malloc(len);
  if (!path) {
    snprintf(err, err_len, "out of memory");
    close(runtime_fd);
    return -1;
  }
  snprintf(path, len, "%s/%s", runtime_dir, entry);
  if (mkdirat(runtime_fd, entry, 0700) != 0) {
    snprintf(err, err_len,
             "cannot create the plugin shadow folder %s: %s (runtime_dir "
             "must be writable by the host's user)",
             path, strerror(errno));
    free(path);
    close(runtime_fd);
    return -1;
  }
  close(runtime_fd);
  *dir = path;
  return 0;
}

/* A new file in the (checked) shadow folder, never through a link. */
static int create_copy(const char *dir, const char *file, char *target,
                       size_t target_len, char *err, size_t err_len) {
  snprintf(target, target_len, "%s/%s", dir, file);
  char reason[2048];
  int dir_fd = trust_open_private_dir(dir, 0, reason, sizeof reason);
  if (dir_fd < 0) {
    snprintf(err, err_len, "the plugin shadow folder: %s", reason);
    return -1;
  }
  unlinkat(dir_fd, file, 0); /* a copy a failed attempt left */
  int fd = openat(dir_fd, file,
                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    snprintf(err, err_len, "cannot write the shadow copy %s: %s", target,
             strerror(errno));
  close(dir_fd);
  return fd;
}

/* Read and map, nothing else. */
static void seal_copy(int fd) { fchmod(fd, 0500); }

#endif

static int write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
#ifdef _WIN32
    int w = _write(fd, p, (unsigned)n);
#else
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
#endif
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int shadow_copy(const char *dir, const char *plugin, unsigned generation,
                int source_fd, const char *source, char **path, uint64_t *hash,
                char *err, size_t err_len) {
  char file[320];
  snprintf(file, sizeof file, "%s.%u%s", plugin, generation, PLUGIN_SUFFIX);
  size_t len = strlen(dir) + strlen(file) + 2;
  char *target = malloc(len);
  if (!target) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  int out = create_copy(dir, file, target, len, err, err_len);
  if (out < 0) {
    free(target);
    return -1;
  }
  uint64_t h = FNV_OFFSET;
  unsigned char buf[65536];
  int failed = 0;
  for (;;) {
    long n = (long)read_fd(source_fd, buf, sizeof buf);
#ifndef _WIN32
    if (n < 0 && errno == EINTR)
      continue;
#endif
    if (n <= 0) {
      failed = n < 0;
      break;
    }
    h = fnv1a(h, buf, (size_t)n);
    if (write_all(out, buf, (size_t)n) != 0) {
      failed = 1;
      break;
    }
  }
  int saved = errno;
  seal_copy(out);
#ifdef _WIN32
  failed |= _close(out) != 0;
#else
  failed |= close(out) != 0;
#endif
  if (failed) {
    snprintf(err, err_len, "cannot copy %s to %s: %s", source, target,
             strerror(saved));
    remove(target);
    free(target);
    return -1;
  }
  *path = target;
  *hash = h;
  return 0;
}

void shadow_remove(const char *path) {
  if (path)
    remove(path);
}

int fd_hash(int fd, const char *source, uint64_t *hash, char *err,
            size_t err_len) {
  uint64_t h = FNV_OFFSET;
  unsigned char buf[65536];
  for (;;) {
    long n = (long)read_fd(fd, buf, sizeof buf);
#ifndef _WIN32
    if (n < 0 && errno == EINTR)
      continue;
#endif
    if (n < 0) {
      snprintf(err, err_len, "cannot read %s: %s", source, strerror(errno));
      return -1;
    }
    if (n == 0)
      break;
    h = fnv1a(h, buf, (size_t)n);
  }
  *hash = h;
  return 0;
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
