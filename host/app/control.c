/*
 * The control endpoint on Linux: a Unix stream socket served by one thread,
 * in runtime_dir, which trust.h has made sure is the host's own. The
 * instance holds an flock on <runtime_dir>/<name>.lock for its whole life,
 * so two instances of one name never both take the socket however they
 * race; and the client believes only a server of its own uid.
 * Operator traffic is a few requests a minute, so requests are handled one
 * at a time with short timeouts rather than on the engine: a stuck or
 * hostile client can delay the next request by CLIENT_TIMEOUT_MS at most and
 * can never touch a game session.
 */
#ifndef _WIN32 /* Windows: control_win.c */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "engine/log.h"
#include "trust.h"

#define CLIENT_TIMEOUT_MS 2000
#define DRAIN_MS 500
/* Clients of "stop" wait until the host is gone; more than this many at once
 * get "ok" at once instead (the endpoint is the owner's alone, but a script
 * looping on stop must not grow the host without bound). */
#define STOP_WAITERS_MAX 1024

struct control {
  int listen_fd;
  int dir_fd;  /* runtime_dir, checked */
  int lock_fd; /* holds the instance's lock while the endpoint lives */
  char socket_name[sizeof(((struct sockaddr_un *)0)->sun_path)];
  int wake_pipe[2];
  pthread_t thread;
  control_handler_fn handler;
  void *ctx;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  int *stop_waiters; /* grows as clients of "stop" arrive */
  int stop_waiter_count, stop_waiter_cap;
};

/* Keeps a client of "stop" until the host is gone; 0, or -1 when it cannot
 * (then the caller answers and closes it now). */
static int keep_stop_waiter(control_t *c, int client) {
  if (c->stop_waiter_count == c->stop_waiter_cap) {
    int cap = c->stop_waiter_cap ? c->stop_waiter_cap * 2 : 4;
    if (cap > STOP_WAITERS_MAX)
      return -1;
    int *grown = realloc(c->stop_waiters, (size_t)cap * sizeof *grown);
    if (!grown)
      return -1;
    c->stop_waiters = grown;
    c->stop_waiter_cap = cap;
  }
  c->stop_waiters[c->stop_waiter_count++] = client;
  return 0;
}

int control_path(const char *runtime_dir, const char *name, char *buf,
                 size_t len) {
  int n = snprintf(buf, len, "%s/%s.sock", runtime_dir, name);
  return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int make_address(const char *runtime_dir, const char *name,
                        struct sockaddr_un *addr, char *err, size_t err_len) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (control_path(runtime_dir, name, addr->sun_path, sizeof addr->sun_path) !=
      0) {
    snprintf(err, err_len,
             "the control socket path %s/%s.sock is longer than %zu bytes: "
             "choose a shorter runtime_dir",
             runtime_dir, name, sizeof addr->sun_path - 1);
    return -1;
  }
  return 0;
}

static void write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    data += n;
    len -= (size_t)n;
  }
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Closes after the reply without a reset: a client that sent more than we
 * read would otherwise get an RST, and with it lose the reply. Bounded in
 * bytes and in time (DRAIN_MS in all): a client that keeps sending must not
 * hold the endpoint. */
static void close_gracefully(int fd) {
  shutdown(fd, SHUT_WR);
  char sink[4096];
  uint64_t deadline = now_ms() + DRAIN_MS;
  for (int budget = 16; budget > 0; budget--) {
    uint64_t now = now_ms();
    if (now >= deadline)
      break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(deadline - now)) <= 0)
      break;
    ssize_t n = recv(fd, sink, sizeof sink, 0);
    if (n <= 0)
      break;
  }
  close(fd);
}

/* Reads one line; returns its length, -1 on timeout or error, -2 when the
 * line is longer than CONTROL_REQUEST_MAX, -3 when it holds a NUL byte.
 * CLIENT_TIMEOUT_MS bounds the whole request, not each read: a client that
 * trickles one byte a second must not hold the endpoint (and with it every
 * other request, and control_close at stop) for minutes. */
static int read_request(int fd, char *buf) {
  size_t len = 0;
  uint64_t deadline = now_ms() + CLIENT_TIMEOUT_MS;
  for (;;) {
    uint64_t now = now_ms();
    if (now >= deadline)
      return -1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, (int)(deadline - now));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    ssize_t n = recv(fd, buf + len, CONTROL_REQUEST_MAX + 1 - len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return len > 0 ? (int)len : -1; /* a request without newline */
    for (size_t i = len; i < len + (size_t)n; i++) {
      /* The request is handled as a C string: "stop\0junk" must not pass
       * for "stop". */
      if (buf[i] == '\0')
        return -3;
      if (buf[i] == '\n') {
        buf[i] = '\0';
        if (i > 0 && buf[i - 1] == '\r')
          buf[i - 1] = '\0';
        return (int)i;
      }
    }
    len += (size_t)n;
    if (len > CONTROL_REQUEST_MAX)
      return -2;
  }
}

static void serve_client(control_t *c, int fd) {
  struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
  socklen_t cred_len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0 ||
      cred.uid != geteuid()) {
    static uint64_t last, suppressed;
    if (log_ratelimit(&last, &suppressed))
      log_write(LOG_WARN, "control",
                "refused a control client of uid %ld: only uid %ld (the "
                "host's user) may use %s",
                (long)cred.uid, (long)geteuid(), c->path);
    const char *msg = "error: permission denied: only the host's user may "
                      "use this endpoint\n";
    write_all(fd, msg, strlen(msg));
    close_gracefully(fd);
    return;
  }
  char request[CONTROL_REQUEST_MAX + 2];
  int n = read_request(fd, request);
  if (n == -2 || n == -3) {
    const char *msg = n == -2
                          ? "error: request too long (at most 256 bytes)\n"
                          : "error: request holds a NUL byte\n";
    write_all(fd, msg, strlen(msg));
    close_gracefully(fd);
    return;
  }
  if (n < 0) {
    close(fd); /* silent or too slow: no reply to protect, so no drain */
    return;
  }
  request[n] = '\0';
  int stop = 0;
  char *reply = c->handler(c->ctx, request, &stop);
  if (reply) {
    write_all(fd, reply, strlen(reply));
    free(reply);
  }
  if (!stop || keep_stop_waiter(c, fd) != 0)
    close_gracefully(fd);
}

static void *control_main(void *arg) {
  control_t *c = arg;
  for (;;) {
    struct pollfd p[2] = {{.fd = c->listen_fd, .events = POLLIN},
                          {.fd = c->wake_pipe[0], .events = POLLIN}};
    int r = poll(p, 2, -1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 || (p[1].revents & POLLIN))
      break;
    if (p[0].revents & POLLIN) {
      int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0)
        serve_client(c, fd);
    }
  }
  return NULL;
}

/* Takes <name>.lock in runtime_dir (created 0600, never through a link)
 * and holds it: the one instance that holds it owns the endpoint. Probing
 * the socket, unlinking and binding are three steps two instances could
 * interleave; the lock is one. Returns the lock's descriptor, or -1. */
static int take_lock(int dir_fd, const char *runtime_dir, const char *name,
                     const char *socket_path, char *err, size_t err_len) {
  char file[300];
  snprintf(file, sizeof file, "%s.lock", name);
  int fd = openat(dir_fd, file, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                  0600);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(err, err_len, "cannot open the instance lock %s/%s: %s",
             runtime_dir, file, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    snprintf(err, err_len,
             "the instance lock %s/%s is not a file of the host's user: "
             "remove it",
             runtime_dir, file);
    close(fd);
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int busy = errno == EWOULDBLOCK;
    snprintf(err, err_len,
             busy ? "another instance is running with the control socket "
                    "%s (it holds %s/%s): stop it (iocphost stop) or give "
                    "this one another \"name\" or runtime_dir"
                  : "cannot lock %s: %s/%s: %s",
             socket_path, runtime_dir, file, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

int control_open(const char *runtime_dir, const char *name,
                 control_handler_fn handler, void *ctx, control_t **out,
                 char *err, size_t err_len) {
  struct sockaddr_un addr;
  if (make_address(runtime_dir, name, &addr, err, err_len) != 0)
    return -1;
  char reason[2048];
  int dir_fd = trust_open_private_dir(runtime_dir, 0, reason, sizeof reason);
  if (dir_fd < 0) {
    snprintf(err, err_len, "runtime_dir: %s", reason);
    return -1;
  }
  int lock_fd =
      take_lock(dir_fd, runtime_dir, name, addr.sun_path, err, err_len);
  if (lock_fd < 0) {
    close(dir_fd);
    return -1;
  }
  control_t *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, err_len, "out of memory");
    close(lock_fd);
    close(dir_fd);
    return -1;
  }
  c->dir_fd = dir_fd;
  c->lock_fd = lock_fd;
  snprintf(c->socket_name, sizeof c->socket_name, "%s.sock", name);
  /* A socket file left by an instance that died: with the lock held, no
   * live instance owns it. */
  unlinkat(dir_fd, c->socket_name, 0);
  c->handler = handler;
  c->ctx = ctx;
  memcpy(c->path, addr.sun_path, sizeof c->path);
  c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  /* The socket is created with mode 0600 by narrowing the umask around
   * bind, so there is no moment where another user could connect. */
  mode_t old_mask = umask(0177);
  int bound = c->listen_fd >= 0 &&
              bind(c->listen_fd, (struct sockaddr *)&addr, sizeof addr) == 0;
  umask(old_mask);
  if (!bound || listen(c->listen_fd, 16) != 0 ||
      pipe2(c->wake_pipe, O_CLOEXEC) != 0) {
    snprintf(err, err_len, "cannot create the control socket %s: %s",
             addr.sun_path, strerror(errno));
    if (c->listen_fd >= 0)
      close(c->listen_fd);
    if (bound)
      unlinkat(dir_fd, c->socket_name, 0);
    close(lock_fd);
    close(dir_fd);
    free(c);
    return -1;
  }
  if (pthread_create(&c->thread, NULL, control_main, c) != 0) {
    snprintf(err, err_len, "cannot start the control thread");
    close(c->listen_fd);
    close(c->wake_pipe[0]);
    close(c->wake_pipe[1]);
    unlinkat(dir_fd, c->socket_name, 0);
    close(lock_fd);
    close(dir_fd);
    free(c);
    return -1;
  }
  *out = c;
  return 0;
}

void control_close(control_t *c) {
  if (!c)
    return;
  char byte = 1;
  ssize_t ignored = write(c->wake_pipe[1], &byte, 1);
  (void)ignored;
  pthread_join(c->thread, NULL);
  close(c->listen_fd);
  unlinkat(c->dir_fd, c->socket_name, 0);
  /* The lock goes last: the next instance may take the path now. */
  close(c->lock_fd);
  close(c->dir_fd);
  close(c->wake_pipe[0]);
  close(c->wake_pipe[1]);
  /* The clients of "stop" hear "stopped" now, but their connections are
   * deliberately left open: the kernel closes them when this process exits,
   * so `iocphost stop` returns only once the host is really gone - after
   * host_close unloads the plugins (their destructors run then), after
   * every exit-time handler - not while the process still holds its files.
   * The descriptors are close-on-exec, so no child inherits them. */
  for (int i = 0; i < c->stop_waiter_count; i++) {
    const char *msg = "stopped\n";
    write_all(c->stop_waiters[i], msg, strlen(msg));
  }
  free(c->stop_waiters);
  free(c);
}

int control_request(const char *runtime_dir, const char *name,
                    const char *request, unsigned wait_ms,
                    control_reply_t *reply, char *err, size_t err_len) {
  struct sockaddr_un addr;
  if (make_address(runtime_dir, name, &addr, err, err_len) != 0)
    return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    snprintf(err, err_len,
             "no running instance answers at %s: %s (is it running, with "
             "this config?)",
             addr.sun_path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  /* Only the host's user can serve its endpoint: another user's socket in
   * its place (a rename in a shared folder) must not answer "stopped". */
  struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
  socklen_t cred_len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0 ||
      cred.uid != geteuid()) {
    snprintf(err, err_len,
             "refusing the answer of %s: it is served by uid %ld, not by "
             "this user (uid %ld), so it is not the host's endpoint; run "
             "the command as the host's user, and make sure runtime_dir is "
             "the host's own",
             addr.sun_path, (long)cred.uid, (long)geteuid());
    close(fd);
    return -1;
  }
  char line[CONTROL_REQUEST_MAX + 2];
  snprintf(line, sizeof line, "%s\n", request);
  write_all(fd, line, strlen(line));
  char buf[4096];
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed = (now.tv_sec - start.tv_sec) * 1000 +
                   (now.tv_nsec - start.tv_nsec) / 1000000;
    long left = (long)wait_ms - elapsed;
    if (left <= 0) {
      snprintf(err, err_len, "no complete answer from %s within %u ms",
               addr.sun_path, wait_ms);
      close(fd);
      return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      continue;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    control_reply_feed(reply, buf, (size_t)n);
  }
  close(fd);
  return control_reply_end(reply, err, err_len);
}
#endif /* !_WIN32 */
