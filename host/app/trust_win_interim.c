/*
 * Trust on Windows, for now (see trust.h): the behaviour the host had
 * before the trust decision existed, with no ownership check. The DACL
 * decision belongs in trust_win.c, which implements the same two functions
 * (trust_open_plugin_file, trust_prepare_runtime_dir); this file goes when
 * it lands.
 */
#ifdef _WIN32
#include "trust.h"

#include <direct.h>
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int trust_open_plugin_file(const char *path, char *reason, size_t len) {
  int fd = _open(path, _O_RDONLY | _O_BINARY | _O_NOINHERIT);
  if (fd < 0)
    snprintf(reason, len, "cannot read %s: %s", path, strerror(errno));
  return fd;
}

static int is_separator(char c) { return c == '/' || c == '\\'; }

static int is_directory(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR;
}

/* Creates path and its missing parents. A parent that cannot be created
 * (a drive "C:", a UNC share, a folder we may not list) is not an error by
 * itself: only the last folder decides. */
int trust_prepare_runtime_dir(const char *path, char *reason, size_t len) {
  char buf[4096];
  size_t path_len = strlen(path);
  if (path_len == 0 || path_len >= sizeof buf) {
    snprintf(reason, len, "cannot create %s: the path is empty or too long",
             path);
    return -1;
  }
  memcpy(buf, path, path_len + 1);
  for (char *p = buf + 1; *p; p++) {
    if (is_separator(*p) && !is_separator(p[-1])) {
      char saved = *p;
      *p = '\0';
      (void)_mkdir(buf);
      *p = saved;
    }
  }
  if (_mkdir(buf) != 0 && !is_directory(buf)) {
    snprintf(reason, len,
             "cannot create %s: %s (create it or point runtime_dir at a "
             "writable folder)",
             path, strerror(errno == EEXIST ? ENOTDIR : errno));
    return -1;
  }
  return 0;
}

#endif /* _WIN32 */
