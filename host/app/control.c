/*
 * The control endpoint on Linux: a Unix stream socket served by one thread,
 * in runtime_dir, which trust.h has made sure is the host's own. The
 * instance holds an flock on <runtime_dir>/<name>.lock for its whole life,
 * so two instances of one name never both take the socket however they
 * race; and the client believes only a server of its own uid.
 * Operator traffic is a few requests a minute, served by this one thread
 * rather than the engine, so nothing here can touch a game session. Clients
 * are multiplexed (up to CLIENTS_MAX at once, each a small state machine:
 * read the request, write the reply, drain), each bounded in time as a
 * whole: a client that is silent, trickles, or never reads a long reply
 * holds only its own connection, never the next operator's request.
 * Handlers (status, reload, stop) run one at a time, here.
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

#define CLIENT_TIMEOUT_MS 2000 /* to send the request; then to take the reply */
#define DRAIN_MS 500
#define CLIENTS_MAX 64
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

/* Blocking write, for the "stopped" line at close (the waiters read). */
static void write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
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

typedef enum client_phase {
  CLIENT_READING, /* the request line */
  CLIENT_WRITING, /* the reply */
  CLIENT_DRAINING /* after our FIN: read and discard, so no reset eats the
                     reply a client that sent too much is still reading */
} client_phase_t;

typedef struct client {
  int fd;
  client_phase_t phase;
  uint64_t deadline; /* of the current phase */
  int stop;          /* a "stop": kept until the host is gone */
  int drain_budget;  /* reads left while draining */
  size_t len;        /* request bytes read */
  char request[CONTROL_REQUEST_MAX + 2];
  char *reply;       /* malloc'd, or a constant when reply_owned is 0 */
  int reply_owned;
  size_t reply_len, reply_sent;
} client_t;

static void client_free(client_t *cl) {
  if (cl->reply_owned)
    free(cl->reply);
  free(cl);
}

static void client_reply(client_t *cl, char *reply, int owned) {
  cl->reply = reply;
  cl->reply_owned = owned;
  cl->reply_len = reply ? strlen(reply) : 0;
  cl->reply_sent = 0;
  cl->phase = CLIENT_WRITING;
  cl->deadline = now_ms() + CLIENT_TIMEOUT_MS;
}

/* Scans what was read; returns 1 when the request is complete (and
 * handled: a reply is set), 0 to read on. "stop\0junk" must not pass for
 * "stop", so a NUL is refused; so is a line longer than the limit. */
static int client_take_request(control_t *c, client_t *cl, size_t from) {
  for (size_t i = from; i < cl->len; i++) {
    if (cl->request[i] == '\0') {
      client_reply(cl, "error: request holds a NUL byte\n", 0);
      return 1;
    }
    if (cl->request[i] == '\n') {
      cl->request[i] = '\0';
      if (i > 0 && cl->request[i - 1] == '\r')
        cl->request[i - 1] = '\0';
      client_reply(cl, c->handler(c->ctx, cl->request, &cl->stop), 1);
      return 1;
    }
  }
  if (cl->len > CONTROL_REQUEST_MAX) {
    client_reply(cl, "error: request too long (at most 256 bytes)\n", 0);
    return 1;
  }
  return 0;
}

static client_t *client_accept(control_t *c, int fd) {
  client_t *cl = calloc(1, sizeof *cl);
  if (!cl) {
    close(fd);
    return NULL;
  }
  cl->fd = fd;
  cl->phase = CLIENT_READING;
  cl->deadline = now_ms() + CLIENT_TIMEOUT_MS;
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
    client_reply(cl,
                 "error: permission denied: only the host's user may use "
                 "this endpoint\n",
                 0);
  }
  return cl;
}

/* Moves a client on after poll said it may; returns 0 to keep it, 1 when
 * it is finished (closed, or handed to the stop waiters). */
static int client_step(control_t *c, client_t *cl, short revents) {
  if (cl->phase == CLIENT_READING && (revents & (POLLIN | POLLHUP | POLLERR))) {
    ssize_t n = recv(cl->fd, cl->request + cl->len,
                     CONTROL_REQUEST_MAX + 1 - cl->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      return 0;
    if (n <= 0) {
      if (cl->len == 0 || n < 0) {
        close(cl->fd); /* said nothing: no reply to protect, no drain */
        return 1;
      }
      /* A request without its newline, then EOF: take it as a line. */
      cl->request[cl->len++] = '\n';
      client_take_request(c, cl, cl->len - 1);
    } else {
      size_t from = cl->len;
      cl->len += (size_t)n;
      if (!client_take_request(c, cl, from))
        return 0;
    }
    /* Answered: write at once. The handler may have begun the stop, and
     * the thread may end before another poll; a short reply goes out now
     * (a "stop" client is then kept among the waiters). */
    return client_step(c, cl, POLLOUT);
  }
  if (cl->phase == CLIENT_WRITING && (revents & (POLLOUT | POLLHUP | POLLERR))) {
    while (cl->reply_sent < cl->reply_len) {
      ssize_t n = send(cl->fd, cl->reply + cl->reply_sent,
                       cl->reply_len - cl->reply_sent,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return 0;
      if (n <= 0) {
        close(cl->fd);
        return 1;
      }
      cl->reply_sent += (size_t)n;
    }
    if (cl->stop && keep_stop_waiter(c, cl->fd) == 0)
      return 1;
    shutdown(cl->fd, SHUT_WR);
    cl->phase = CLIENT_DRAINING;
    cl->deadline = now_ms() + DRAIN_MS;
    cl->drain_budget = 16;
    return 0;
  }
  if (cl->phase == CLIENT_DRAINING && (revents & (POLLIN | POLLHUP | POLLERR))) {
    char sink[4096];
    ssize_t n = recv(cl->fd, sink, sizeof sink, MSG_DONTWAIT);
    if ((n < 0 && (errno == EINTR || errno == EAGAIN)) ||
        (n > 0 && --cl->drain_budget > 0))
      return 0;
    close(cl->fd);
    return 1;
  }
  return 0;
}

static void *control_main(void *arg) {
  control_t *c = arg;
  client_t *clients[CLIENTS_MAX];
  int count = 0;
  for (;;) {
    struct pollfd p[CLIENTS_MAX + 2];
    p[0] = (struct pollfd){.fd = c->wake_pipe[0], .events = POLLIN};
    /* At CLIENTS_MAX the listener is not polled: newcomers wait in the
     * backlog until one of the others is done. */
    p[1] = (struct pollfd){.fd = count < CLIENTS_MAX ? c->listen_fd : -1,
                           .events = POLLIN};
    uint64_t now = now_ms(), next = UINT64_MAX;
    for (int i = 0; i < count; i++) {
      client_t *cl = clients[i];
      p[2 + i] = (struct pollfd){
          .fd = cl->fd,
          .events = cl->phase == CLIENT_WRITING ? POLLOUT : POLLIN};
      if (cl->deadline < next)
        next = cl->deadline;
    }
    int timeout = next == UINT64_MAX ? -1
                  : next <= now      ? 0
                                     : (int)(next - now);
    int r = poll(p, (nfds_t)(2 + count), timeout);
    if (r < 0 && errno != EINTR)
      break;
    if (r > 0 && (p[0].revents & POLLIN))
      break;
    now = now_ms();
    /* Clients first (their slots match p[] as built), then newcomers. */
    int kept = 0;
    for (int i = 0; i < count; i++) {
      client_t *cl = clients[i];
      int done = r > 0 ? client_step(c, cl, p[2 + i].revents) : 0;
      if (!done && now >= cl->deadline) {
        close(cl->fd); /* too slow to send, or to take the reply */
        done = 1;
      }
      if (done)
        client_free(cl);
      else
        clients[kept++] = cl;
    }
    count = kept;
    if (r > 0 && (p[1].revents & POLLIN) && count < CLIENTS_MAX) {
      int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        client_t *cl = client_accept(c, fd);
        if (cl)
          clients[count++] = cl;
      }
    }
  }
  /* Ending (the host stops): a reply still owed gets one more try, so a
   * client whose request began the stop still hears its answer. */
  for (int i = 0; i < count; i++) {
    client_t *cl = clients[i];
    if (!(cl->phase == CLIENT_WRITING && client_step(c, cl, POLLOUT)))
      close(cl->fd);
    client_free(cl);
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
