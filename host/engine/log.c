/*
 * The engine's log. Each line is formatted into a local buffer and handed to
 * the OS in one write, so lines from different threads never interleave.
 * The target (stderr or a file opened for appending) is guarded by a
 * read-write lock: writers of lines share it, log_set_file and log_reopen
 * take it exclusively, so a line is never written to a closed descriptor.
 */
#include "engine/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#include <sys/stat.h>
#include <windows.h>
#else
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#endif

/* Longest line, newline included. At most PIPE_BUF (4096 on Linux), so a line
 * to a pipe is written atomically as well. */
#define LINE_MAX_BYTES 4096
#define ELLIPSIS "..."

#define STDERR_FD 2

static int current_level = LOG_INFO;
static int target_fd = STDERR_FD; /* guarded by target_lock */
static char *target_path;         /* guarded by target_lock; NULL: stderr */

#ifdef _WIN32
static SRWLOCK target_lock = SRWLOCK_INIT;
/* The CRT's _write is not one system call, so Windows writes exclusively. */
static void lock_for_line(void) { AcquireSRWLockExclusive(&target_lock); }
static void unlock_for_line(void) { ReleaseSRWLockExclusive(&target_lock); }
static void lock_for_change(void) { AcquireSRWLockExclusive(&target_lock); }
static void unlock_for_change(void) { ReleaseSRWLockExclusive(&target_lock); }
#else
static pthread_rwlock_t target_lock = PTHREAD_RWLOCK_INITIALIZER;
static void lock_for_line(void) { pthread_rwlock_rdlock(&target_lock); }
static void unlock_for_line(void) { pthread_rwlock_unlock(&target_lock); }
static void lock_for_change(void) { pthread_rwlock_wrlock(&target_lock); }
static void unlock_for_change(void) { pthread_rwlock_unlock(&target_lock); }
#endif

/* Atomics on plain integers: the public API hands out uint64_t*, and the
 * level is read on every call without a lock. */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static int load_int(const int *p) {
  return (int)_InterlockedOr((volatile long *)p, 0);
}
static void store_int(int *p, int v) {
  _InterlockedExchange((volatile long *)p, (long)v);
}
static uint64_t load_u64(uint64_t *p) {
  return (uint64_t)_InterlockedOr64((volatile __int64 *)p, 0);
}
static int cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
  return (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p,
                                                 (__int64)desired,
                                                 (__int64)expected) == expected;
}
static void add_u64(uint64_t *p, uint64_t v) {
  _InterlockedExchangeAdd64((volatile __int64 *)p, (__int64)v);
}
#else
static int load_int(const int *p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static void store_int(int *p, int v) {
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static uint64_t load_u64(uint64_t *p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static int cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
  return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED);
}
static void add_u64(uint64_t *p, uint64_t v) {
  __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
#endif

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};

static int level_valid(int level) {
  return level >= LOG_DEBUG && level <= LOG_ERROR;
}

void log_set_level(int level) {
  if (level_valid(level))
    store_int(&current_level, level);
}

int log_get_level(void) { return load_int(&current_level); }

const char *log_level_name(int level) {
  return level_valid(level) ? level_names[level] : "unknown";
}

static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

int log_level_parse(const char *name) {
  if (name == NULL)
    return -1;
  for (int level = LOG_DEBUG; level <= LOG_ERROR; level++) {
    const char *a = name, *b = level_names[level];
    while (*a != '\0' && ascii_lower((unsigned char)*a) == *b) {
      a++;
      b++;
    }
    if (*a == '\0' && *b == '\0')
      return level;
  }
  return -1;
}

#ifdef _WIN32
static int errno_of_win32(DWORD error) {
  switch (error) {
  case ERROR_FILE_NOT_FOUND:
  case ERROR_PATH_NOT_FOUND:
  case ERROR_INVALID_DRIVE:
    return ENOENT;
  case ERROR_ACCESS_DENIED:
  case ERROR_SHARING_VIOLATION:
  case ERROR_LOCK_VIOLATION:
    return EACCES;
  case ERROR_INVALID_NAME:
    return EINVAL;
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_OUTOFMEMORY:
    return ENOMEM;
  case ERROR_DISK_FULL:
    return ENOSPC;
  default:
    return EIO;
  }
}
#endif

static int open_append(const char *path) {
#ifdef _WIN32
  /* Not _open: the CRT opens without FILE_SHARE_DELETE, so a log rotator
   * could not rename the file while the host has it open. Shared for
   * delete, it rotates as on POSIX: rename, then "iocphost reopen-logs".
   * FILE_APPEND_DATA alone makes every write land at the end, also with
   * another writer. The path is UTF-8, like every path in the config. */
  int wide_len = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1,
                                     NULL, 0);
  wchar_t *wide = wide_len > 0 ? malloc((size_t)wide_len * sizeof *wide) : NULL;
  if (wide == NULL ||
      MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, wide,
                          wide_len) <= 0) {
    free(wide);
    errno = wide_len > 0 ? ENOMEM : EINVAL;
    return -1;
  }
  HANDLE file = CreateFileW(
      wide, FILE_APPEND_DATA | SYNCHRONIZE,
      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
      NULL /* not inherited */, OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
  DWORD error = GetLastError();
  free(wide);
  if (file == INVALID_HANDLE_VALUE) {
    errno = errno_of_win32(error);
    return -1;
  }
  int fd = _open_osfhandle((intptr_t)file, _O_WRONLY | _O_APPEND | _O_BINARY);
  if (fd < 0) {
    CloseHandle(file);
    errno = EMFILE;
  }
  return fd;
#else
  /* Never world-readable (lines carry peers' addresses and what plugins
   * log), and never through a link: in a shared folder a planted link
   * would send the host's writes, with its rights, into any file. */
  return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
              0640);
#endif
}

static void close_fd(int fd) {
  if (fd == STDERR_FD || fd < 0)
    return;
#ifdef _WIN32
  _close(fd);
#else
  close(fd);
#endif
}

int log_set_file(const char *path) {
  int fd = STDERR_FD;
  char *copy = NULL;
  if (path != NULL) {
    copy = strdup(path);
    if (copy == NULL)
      return -1;
    fd = open_append(path);
    if (fd < 0) {
      int saved = errno;
      free(copy);
      errno = saved;
      return -1;
    }
  }
  lock_for_change();
  int old_fd = target_fd;
  char *old_path = target_path;
  target_fd = fd;
  target_path = copy;
  unlock_for_change();
  close_fd(old_fd);
  free(old_path);
  return 0;
}

int log_reopen(void) {
  int rc = 0;
  lock_for_change();
  if (target_path != NULL) {
    int fd = open_append(target_path);
    if (fd < 0) {
      rc = -1; /* keep writing to the old (rotated) file rather than lose lines
                */
    } else {
      close_fd(target_fd);
      target_fd = fd;
    }
  }
  unlock_for_change();
  return rc;
}

/* Writes "2026-11-29T05:06:25.123Z" (24 characters) into out. */
static int format_timestamp(char *out, size_t len) {
#ifdef _WIN32
  SYSTEMTIME st;
  GetSystemTime(&st);
  return snprintf(out, len, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ",
                  (unsigned)st.wYear, (unsigned)st.wMonth, (unsigned)st.wDay,
                  (unsigned)st.wHour, (unsigned)st.wMinute,
                  (unsigned)st.wSecond, (unsigned)st.wMilliseconds);
#else
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  return snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min, tm.tm_sec, (long)(ts.tv_nsec / 1000000));
#endif
}

/* A message must stay one line: a peer's bytes or a multi-line error must not
 * forge or split log lines. Line breaks and tabs become spaces, other control
 * characters '?'. */
static void sanitize(char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n' || c == '\r' || c == '\t')
      s[i] = ' ';
    else if (c < 0x20 || c == 0x7f)
      s[i] = '?';
  }
}

static void write_line(const char *line, size_t len) {
  lock_for_line();
#ifdef _WIN32
  (void)_write(target_fd, line, (unsigned)len);
#else
  ssize_t n;
  do {
    n = write(target_fd, line, len);
  } while (n < 0 && errno == EINTR);
  /* A short write (disk full, signal mid-pipe) loses the rest of the line;
   * retrying could interleave it with other threads' lines. */
#endif
  unlock_for_line();
}

void log_writev(int level, const char *subsystem, const char *fmt, va_list ap) {
  if (!level_valid(level) || level < log_get_level() || fmt == NULL)
    return;
  int saved_errno = errno; /* callers log and then look at errno */

  char line[LINE_MAX_BYTES];
  /* Leave room for the newline and the terminating NUL. */
  const size_t room = sizeof line - 1;
  size_t pos = 0;
  int n = format_timestamp(line, room);
  if (n > 0)
    pos = (size_t)n;
  if (subsystem == NULL || subsystem[0] == '\0')
    subsystem = "-";
  n = snprintf(line + pos, room - pos, " %s [%.64s] ", level_tags[level],
               subsystem);
  if (n > 0)
    pos += (size_t)n < room - pos ? (size_t)n : room - pos - 1;

  size_t msg_start = pos;
  n = vsnprintf(line + pos, room - pos, fmt, ap);
  if (n > 0) {
    if ((size_t)n < room - pos) {
      pos += (size_t)n;
    } else {
      /* Truncated: end with "..." and never cut a UTF-8 sequence in two. */
      size_t cut = room - 1 - (sizeof ELLIPSIS - 1);
      while (cut > msg_start && ((unsigned char)line[cut] & 0xC0) == 0x80)
        cut--;
      memcpy(line + cut, ELLIPSIS, sizeof ELLIPSIS - 1);
      pos = cut + sizeof ELLIPSIS - 1;
    }
  }
  sanitize(line + msg_start, pos - msg_start);
  line[pos++] = '\n';
  write_line(line, pos);
  errno = saved_errno;
}

void log_write(int level, const char *subsystem, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_writev(level, subsystem, fmt, ap);
  va_end(ap);
}

uint64_t clock_now_ms(void) {
#ifdef _WIN32
  return (uint64_t)GetTickCount64();
#else
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
#endif
}

int log_ratelimit(uint64_t *last_ms, uint64_t *suppressed) {
  /* 0 in *last_ms means "never written", so a stamp is never 0. */
  uint64_t now = clock_now_ms();
  if (now == 0)
    now = 1;
  uint64_t prev = load_u64(last_ms);
  /* now may be below prev when another thread stamped a later time. */
  if ((prev == 0 || now >= prev + 1000) && cas_u64(last_ms, prev, now))
    return 1;
  /* Too soon, or another thread won the same slot. */
  if (suppressed != NULL)
    add_u64(suppressed, 1);
  return 0;
}
