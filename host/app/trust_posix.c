/*
 * Trust on POSIX: owners and mode bits (see trust.h).
 *
 * A path is walked one component at a time from the root, each one opened
 * with O_PATH | O_NOFOLLOW relative to the folder before it, so what is
 * checked is what is used: a link is read (never followed by the kernel)
 * and its target walked the same way; the final file or folder is opened
 * from the checked folder and compared with what was checked. Every step
 * asks the same question: can anyone but the host's user and root change
 * this entry, or the folder that holds it?
 */
#ifndef _WIN32
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_PATH */
#endif
#include "trust.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* As the kernel: at most this many links in one path. */
#define MAX_LINKS 40

static int trusted_owner(uid_t owner, uid_t user) {
  return owner == user || owner == 0;
}

static const char *kind_of(const struct stat *st) {
  if (S_ISLNK(st->st_mode))
    return "the link";
  if (S_ISDIR(st->st_mode))
    return "the folder";
  return "the file";
}

/* "writable by other users" or "writable by its group", the chmod that
 * fixes it, or NULL when neither may write. */
static const char *writers_of(mode_t mode, const char **fix) {
  if (mode & S_IWOTH) {
    *fix = mode & S_IWGRP ? "go-w" : "o-w";
    return "writable by other users";
  }
  if (mode & S_IWGRP) {
    *fix = "g-w";
    return "writable by its group";
  }
  return NULL;
}

int trust_check_entry(const struct stat *folder, const char *folder_path,
                      const struct stat *entry, const char *entry_path,
                      uid_t user, char *reason, size_t len) {
  if (!trusted_owner(folder->st_uid, user)) {
    snprintf(reason, len,
             "the folder %s is owned by uid %ld, not by the host's user "
             "(uid %ld) or root, so that user could replace %s; fix: chown "
             "%ld %s, or move what the host uses to a folder of its own user",
             folder_path, (long)folder->st_uid, (long)user, entry_path,
             (long)user, folder_path);
    return -1;
  }
  if (!trusted_owner(entry->st_uid, user)) {
    snprintf(reason, len,
             "%s %s is owned by uid %ld, not by the host's user (uid %ld) "
             "or root, so that user could change it; fix: chown %ld %s, or "
             "use a copy of the host's own user",
             kind_of(entry), entry_path, (long)entry->st_uid, (long)user,
             (long)user, entry_path);
    return -1;
  }
  /* A sticky folder (like /tmp) lets only an entry's owner (and the
   * folder's) rename or delete it: the entry is safe, as it is trusted. */
  const char *fix = NULL;
  const char *writers = writers_of(folder->st_mode, &fix);
  if (writers && !(folder->st_mode & S_ISVTX)) {
    snprintf(reason, len,
             "its folder %s is %s (mode %04o), so anyone who may write there "
             "could put another file in place of %s; fix: chmod %s %s, or "
             "move it to a folder only its owner can write",
             folder_path, writers, (unsigned)(folder->st_mode & 07777),
             entry_path, fix, folder_path);
    return -1;
  }
  return 0;
}

int trust_check_file(const struct stat *file, const char *path, char *reason,
                     size_t len) {
  if (!S_ISREG(file->st_mode)) {
    snprintf(reason, len, "%s is not a regular file", path);
    return -1;
  }
  const char *fix = NULL;
  const char *writers = writers_of(file->st_mode, &fix);
  if (writers) {
    snprintf(reason, len,
             "the file %s is %s (mode %04o), so anyone who may write it "
             "could replace the code the host runs; fix: chmod %s %s",
             path, writers, (unsigned)(file->st_mode & 07777), fix, path);
    return -1;
  }
  return 0;
}

int trust_check_private_dir(const struct stat *dir, const char *path,
                            uid_t user, char *reason, size_t len) {
  if (!S_ISDIR(dir->st_mode)) {
    snprintf(reason, len, "%s is not a folder", path);
    return -1;
  }
  if (dir->st_uid != user) {
    snprintf(reason, len,
             "the folder %s is owned by uid %ld, not by the host's user "
             "(uid %ld); the host keeps its control socket and the plugin "
             "copies it runs there; fix: point runtime_dir at a folder of "
             "the host's user (a missing one is created with mode 0700)",
             path, (long)dir->st_uid, (long)user);
    return -1;
  }
  const char *fix = NULL;
  const char *writers = writers_of(dir->st_mode, &fix);
  if (writers) {
    snprintf(reason, len,
             "the folder %s is %s (mode %04o); the host keeps its control "
             "socket and the plugin copies it runs there, and never changes "
             "the mode of a folder it did not create; fix: point runtime_dir "
             "at a folder of its own (a missing one is created with mode "
             "0700), or chmod %s %s if no one else uses it",
             path, writers, (unsigned)(dir->st_mode & 07777), fix, path);
    return -1;
  }
  return 0;
}

/* ---- the walk ---- */

enum want { WANT_FILE, WANT_PRIVATE_DIR };

typedef struct walk {
  uid_t user;
  int dir_fd; /* the folder reached so far (O_PATH) */
  struct stat dir_st;
  char dir_path[PATH_MAX]; /* its physical path, for messages */
  char *rest;              /* what is left to resolve; malloc'd */
  int links;
} walk_t;

static int walk_restart_at_root(walk_t *w, char *reason, size_t len) {
  int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &w->dir_st) != 0) {
    snprintf(reason, len, "cannot open /: %s", strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  if (w->dir_fd >= 0)
    close(w->dir_fd);
  w->dir_fd = fd;
  strcpy(w->dir_path, "/");
  return 0;
}

/* Splits the next component off w->rest into name; returns 0 when there is
 * none. Empty components and "." are skipped. */
static int next_component(walk_t *w, char *name, size_t cap) {
  for (;;) {
    char *p = w->rest;
    while (*p == '/')
      p++;
    if (*p == '\0') {
      w->rest = p;
      return 0;
    }
    size_t n = strcspn(p, "/");
    w->rest = p + n;
    if (n == 1 && p[0] == '.')
      continue;
    if (n >= cap)
      n = cap - 1; /* a name longer than NAME_MAX fails at openat */
    memcpy(name, p, n);
    name[n] = '\0';
    return 1;
  }
}

static int only_dots_left(const char *rest) {
  for (const char *p = rest; *p;) {
    while (*p == '/')
      p++;
    size_t n = strcspn(p, "/");
    if (n == 0)
      break;
    if (!(n == 1 && p[0] == '.'))
      return 0;
    p += n;
  }
  return 1;
}

/* out = dir + "/" + name; -1 when it does not fit. */
static int join_path(char *out, size_t cap, const char *dir, const char *name) {
  size_t dir_len = strcmp(dir, "/") == 0 ? 0 : strlen(dir);
  size_t name_len = strlen(name);
  if (dir_len + 1 + name_len + 1 > cap)
    return -1;
  memcpy(out, dir, dir_len);
  out[dir_len] = '/';
  memcpy(out + dir_len + 1, name, name_len + 1);
  return 0;
}

/* Replaces the walk's remaining path with target + "/" + remaining. */
static int splice_link(walk_t *w, const char *target, char *reason,
                       size_t len) {
  size_t target_len = strlen(target), rest_len = strlen(w->rest);
  char *joined = malloc(target_len + rest_len + 2);
  if (!joined) {
    snprintf(reason, len, "out of memory");
    return -1;
  }
  memcpy(joined, target, target_len);
  joined[target_len] = '/';
  memcpy(joined + target_len + 1, w->rest, rest_len + 1);
  w->rest = joined;
  return 0;
}

/* Walks path; on success returns a descriptor of the checked final file
 * (O_RDONLY) or folder (O_RDONLY | O_DIRECTORY). */
static int walk(const char *path, enum want want, int create, char *reason,
                size_t len) {
  walk_t w = {.user = geteuid(), .dir_fd = -1};
  char *buffers[MAX_LINKS + 2] = {0}; /* every rest ever allocated */
  int buffer_count = 0;
  int result = -1;
  if (!path || !path[0]) {
    snprintf(reason, len, "an empty path");
    return -1;
  }
  /* A relative path starts at the current folder, walked from the root. */
  char *start;
  if (path[0] == '/') {
    start = strdup(path);
  } else {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) {
      snprintf(reason, len, "cannot resolve %s: %s", path, strerror(errno));
      return -1;
    }
    start = malloc(strlen(cwd) + strlen(path) + 2);
    if (start)
      sprintf(start, "%s/%s", cwd, path);
  }
  if (!start) {
    snprintf(reason, len, "out of memory");
    return -1;
  }
  buffers[buffer_count++] = start;
  w.rest = start;
  if (walk_restart_at_root(&w, reason, len) != 0)
    goto done;

  char name[NAME_MAX + 2];
  char entry_path[PATH_MAX];
  for (;;) {
    if (!next_component(&w, name, sizeof name)) {
      /* The path ended on a folder already entered: "/", or "x/..". */
      snprintf(reason, len, "%s: expected %s, found the folder %s", path,
               want == WANT_FILE ? "a file" : "a folder named at its end",
               w.dir_path);
      goto done;
    }
    if (strcmp(name, "..") == 0) {
      /* The physical parent: every folder above has been checked on the
       * way down, and the next step checks it again as a folder. */
      int fd = openat(w.dir_fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0 || fstat(fd, &w.dir_st) != 0) {
        snprintf(reason, len, "cannot open the parent of %s: %s", w.dir_path,
                 strerror(errno));
        if (fd >= 0)
          close(fd);
        goto done;
      }
      close(w.dir_fd);
      w.dir_fd = fd;
      char *slash = strrchr(w.dir_path, '/');
      if (slash && slash != w.dir_path)
        *slash = '\0';
      else
        strcpy(w.dir_path, "/");
      continue;
    }
    int last = only_dots_left(w.rest);
    if (join_path(entry_path, sizeof entry_path, w.dir_path, name) != 0) {
      snprintf(reason, len, "%s: the path is too long", path);
      goto done;
    }
    int fd = openat(w.dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
      /* Only in a folder that would pass for a folder the host owns. */
      struct stat made = {.st_uid = w.user, .st_mode = S_IFDIR | 0700};
      if (trust_check_entry(&w.dir_st, w.dir_path, &made, entry_path, w.user,
                            reason, len) != 0)
        goto done;
      if (mkdirat(w.dir_fd, name, 0700) != 0 && errno != EEXIST) {
        snprintf(reason, len, "cannot create the folder %s: %s", entry_path,
                 strerror(errno));
        goto done;
      }
      fd = openat(w.dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      snprintf(reason, len, "cannot open %s: %s", entry_path, strerror(errno));
      if (fd >= 0)
        close(fd);
      goto done;
    }
    if (trust_check_entry(&w.dir_st, w.dir_path, &st, entry_path, w.user,
                          reason, len) != 0) {
      close(fd);
      goto done;
    }
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(fd, "", target, sizeof target - 1);
      close(fd);
      if (n < 0) {
        snprintf(reason, len, "cannot read the link %s: %s", entry_path,
                 strerror(errno));
        goto done;
      }
      target[n] = '\0';
      if (++w.links > MAX_LINKS) {
        snprintf(reason, len, "%s: more than %d links (a loop?)", path,
                 MAX_LINKS);
        goto done;
      }
      if (splice_link(&w, target, reason, len) != 0)
        goto done;
      buffers[buffer_count++] = w.rest;
      if (target[0] == '/' && walk_restart_at_root(&w, reason, len) != 0)
        goto done;
      continue;
    }
    if (S_ISDIR(st.st_mode) && !(last && want == WANT_PRIVATE_DIR)) {
      if (last) {
        snprintf(reason, len, "%s is a folder, not a file", entry_path);
        close(fd);
        goto done;
      }
      close(w.dir_fd);
      w.dir_fd = fd;
      w.dir_st = st;
      memcpy(w.dir_path, entry_path, sizeof w.dir_path);
      continue;
    }
    close(fd);
    if (!last) {
      snprintf(reason, len, "%s is not a folder", entry_path);
      goto done;
    }
    if (want == WANT_FILE
            ? trust_check_file(&st, entry_path, reason, len)
            : trust_check_private_dir(&st, entry_path, w.user, reason, len))
      goto done;
    /* The object to use, from the checked folder; the same one that was
     * checked (only a trusted user could have swapped it meanwhile, but a
     * swap is cheap to see). O_NONBLOCK: never hang on a FIFO. */
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK |
                (want == WANT_FILE ? 0 : O_DIRECTORY);
    int use = openat(w.dir_fd, name, flags);
    struct stat again;
    if (use < 0 || fstat(use, &again) != 0) {
      snprintf(reason, len, "cannot open %s: %s", entry_path, strerror(errno));
      if (use >= 0)
        close(use);
      goto done;
    }
    if (again.st_dev != st.st_dev || again.st_ino != st.st_ino) {
      snprintf(reason, len, "%s changed while it was checked; try again",
               entry_path);
      close(use);
      goto done;
    }
    fcntl(use, F_SETFL, fcntl(use, F_GETFL) & ~O_NONBLOCK);
    result = use;
    break;
  }
done:
  if (w.dir_fd >= 0)
    close(w.dir_fd);
  for (int i = 0; i < buffer_count; i++)
    free(buffers[i]);
  return result;
}

int trust_open_plugin_file(const char *path, char *reason, size_t len) {
  return walk(path, WANT_FILE, 0, reason, len);
}

int trust_open_private_dir(const char *path, int create, char *reason,
                           size_t len) {
  return walk(path, WANT_PRIVATE_DIR, create, reason, len);
}

int trust_prepare_runtime_dir(const char *path, char *reason, size_t len) {
  int fd = trust_open_private_dir(path, 1, reason, len);
  if (fd < 0)
    return -1;
  close(fd);
  return 0;
}

#endif /* !_WIN32 */
