/*
 * The control endpoint on Windows: a named pipe,
 * \\.\pipe\iocphost-<name>-<hash of runtime_dir>, served by one thread.
 * Its security descriptor grants access to the host's own user only, and
 * remote clients are rejected. The first instance is created with
 * FILE_FLAG_FIRST_PIPE_INSTANCE, so a second host with the same name and
 * runtime_dir fails instead of sharing the pipe, and from then on an
 * instance is always open (the next is created before a client is served),
 * so no one else can create a pipe of that name while the host runs. The
 * protocol is the one of control.h: a request line, a reply the server ends
 * by closing. Clients are served one at a time, each within deadlines for
 * the whole request and for the whole reply, as on Linux: a client that
 * trickles, stays silent or never reads its reply is dropped, and never
 * holds the endpoint (or a stop) for longer.
 */
#ifdef _WIN32
#include "control.h"

#include <windows.h> /* before sddl.h, which relies on its macros */

#include <sddl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"

/* The whole request must arrive within this, and the whole reply be taken
 * within REPLY_TIMEOUT_MS: deadlines per request, not per read. */
#define CLIENT_TIMEOUT_MS 2000
#define REPLY_TIMEOUT_MS 2000
/* "stopped" to a client of "stop", at the end: a few bytes into the pipe's
 * buffer, which a client that stopped reading may have filled. */
#define STOPPED_TIMEOUT_MS 100
/* Clients of "stop" wait until the host is gone; more than this many at once
 * get "ok" at once instead (the endpoint is the owner's alone, but a script
 * looping on stop must not grow the host without bound). */
#define STOP_WAITERS_MAX 1024
#define PIPE_BUFFER 4096

struct control {
  HANDLE thread;
  HANDLE stop_event;
  control_handler_fn handler;
  void *ctx;
  wchar_t pipe_name[256];
  char path[256];
  SECURITY_ATTRIBUTES security;
  PSECURITY_DESCRIPTOR descriptor;
  HANDLE first_instance;
  HANDLE *stop_waiters; /* grows as clients of "stop" arrive */
  int stop_waiter_count, stop_waiter_cap;
};

/* Keeps a client of "stop" until the host is gone; 0, or -1 when it cannot
 * (then the caller answers and closes it now). */
static int keep_stop_waiter(control_t *c, HANDLE client) {
  if (c->stop_waiter_count == c->stop_waiter_cap) {
    int cap = c->stop_waiter_cap ? c->stop_waiter_cap * 2 : 4;
    if (cap > STOP_WAITERS_MAX)
      return -1;
    HANDLE *grown = realloc(c->stop_waiters, (size_t)cap * sizeof *grown);
    if (!grown)
      return -1;
    c->stop_waiters = grown;
    c->stop_waiter_cap = cap;
  }
  c->stop_waiters[c->stop_waiter_count++] = client;
  return 0;
}

static uint32_t fnv1a(const char *text) {
  uint32_t h = 2166136261u;
  for (; *text; text++) {
    h ^= (uint8_t)*text;
    h *= 16777619u;
  }
  return h;
}

int control_path(const char *runtime_dir, const char *name, char *buf,
                 size_t len) {
  int n = snprintf(buf, len, "\\\\.\\pipe\\iocphost-%s-%08x", name,
                   (unsigned)fnv1a(runtime_dir));
  return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int pipe_name(const char *runtime_dir, const char *name, char *path,
                     size_t path_len, wchar_t *wide, size_t wide_len) {
  if (control_path(runtime_dir, name, path, path_len) != 0)
    return -1;
  return MultiByteToWideChar(CP_UTF8, 0, path, -1, wide, (int)wide_len) > 0
             ? 0
             : -1;
}

/* "D:P(A;;GA;;;<the user's SID>)": the owner's user only, nothing inherited. */
static int make_security(control_t *c, char *err, size_t err_len) {
  HANDLE token = NULL;
  if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token)) {
    snprintf(err, err_len, "cannot read the process token (error %lu)",
             (unsigned long)GetLastError());
    return -1;
  }
  DWORD size = 0;
  GetTokenInformation(token, TokenUser, NULL, 0, &size);
  TOKEN_USER *user = malloc(size ? size : 1);
  wchar_t *sid = NULL;
  int ok = user && GetTokenInformation(token, TokenUser, user, size, &size) &&
           ConvertSidToStringSidW(user->User.Sid, &sid);
  CloseHandle(token);
  free(user);
  if (!ok) {
    snprintf(err, err_len, "cannot read the process's user (error %lu)",
             (unsigned long)GetLastError());
    return -1;
  }
  wchar_t sddl[512];
  _snwprintf(sddl, sizeof sddl / sizeof sddl[0], L"D:P(A;;GA;;;%ls)", sid);
  sddl[sizeof sddl / sizeof sddl[0] - 1] = L'\0';
  LocalFree(sid);
  if (!ConvertStringSecurityDescriptorToSecurityDescriptorW(
          sddl, SDDL_REVISION_1, &c->descriptor, NULL)) {
    snprintf(err, err_len, "cannot build the pipe's security (error %lu)",
             (unsigned long)GetLastError());
    return -1;
  }
  c->security.nLength = sizeof c->security;
  c->security.lpSecurityDescriptor = c->descriptor;
  c->security.bInheritHandle = FALSE;
  return 0;
}

static HANDLE create_instance(control_t *c, int first) {
  return CreateNamedPipeW(c->pipe_name,
                          PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED |
                              (first ? FILE_FLAG_FIRST_PIPE_INSTANCE : 0),
                          PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT |
                              PIPE_REJECT_REMOTE_CLIENTS,
                          PIPE_UNLIMITED_INSTANCES, PIPE_BUFFER, PIPE_BUFFER, 0,
                          &c->security);
}

static DWORD left_ms(ULONGLONG deadline) {
  ULONGLONG now = GetTickCount64();
  return now >= deadline ? 0 : (DWORD)(deadline - now);
}

/* Waits for an overlapped operation, the stop event (if any), or the
 * timeout. Returns 1 when it completed successfully, 0 on failure, stop or
 * timeout (then it is cancelled). */
static int wait_io(HANDLE stop, HANDLE pipe, OVERLAPPED *ov, DWORD timeout,
                   DWORD *bytes) {
  HANDLE events[2] = {ov->hEvent, stop};
  DWORD r = WaitForMultipleObjects(stop ? 2 : 1, events, FALSE, timeout);
  if (r == WAIT_OBJECT_0)
    return GetOverlappedResult(pipe, ov, bytes, FALSE) ? 1 : 0;
  CancelIoEx(pipe, ov);
  GetOverlappedResult(pipe, ov, bytes, TRUE);
  return 0;
}

/* Writes all of data before deadline; 0, or -1 when the client did not take
 * it in time (or went away, or the host is stopping). */
static int write_all(HANDLE stop, HANDLE pipe, const char *data,
                     ULONGLONG deadline) {
  size_t len = strlen(data);
  OVERLAPPED ov = {0};
  ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (ov.hEvent == NULL)
    return -1;
  int rc = 0;
  while (len > 0) {
    DWORD written = 0;
    ResetEvent(ov.hEvent);
    BOOL ok = WriteFile(pipe, data, (DWORD)len, &written, &ov);
    if (!ok && GetLastError() == ERROR_IO_PENDING)
      ok = wait_io(stop, pipe, &ov, left_ms(deadline), &written);
    if (!ok || written == 0) {
      rc = -1;
      break;
    }
    data += written;
    len -= written;
  }
  CloseHandle(ov.hEvent);
  return rc;
}

/* Ends a client's connection. Not FlushFileBuffers, which waits for as long
 * as the client does not read, and not DisconnectNamedPipe, which throws
 * away what it has not read yet: closing our end leaves the reply to be
 * read, then the client sees the end. */
static void close_client(HANDLE pipe) { CloseHandle(pipe); }

/* Reads one line; returns its length, -1 on timeout, error or stop, -2 when
 * the line is longer than CONTROL_REQUEST_MAX, -3 when it holds a NUL byte.
 * CLIENT_TIMEOUT_MS bounds the whole request, not each read: a client that
 * trickles a byte at a time must not hold the endpoint (and with it every
 * other request, and a stop) for minutes. */
static int read_request(control_t *c, HANDLE pipe, char *buf) {
  size_t len = 0;
  int rc = -1;
  ULONGLONG deadline = GetTickCount64() + CLIENT_TIMEOUT_MS;
  OVERLAPPED ov = {0};
  ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (ov.hEvent == NULL)
    return -1;
  for (;;) {
    DWORD got = 0;
    ResetEvent(ov.hEvent);
    BOOL ok = ReadFile(pipe, buf + len, (DWORD)(CONTROL_REQUEST_MAX + 1 - len),
                       &got, &ov);
    if (!ok && GetLastError() == ERROR_IO_PENDING)
      ok = wait_io(c->stop_event, pipe, &ov, left_ms(deadline), &got);
    if (!ok || got == 0) {
      /* The client closed its end: a request without a newline. A timeout
       * or a stop is not that. */
      DWORD e = ok ? ERROR_BROKEN_PIPE : GetLastError();
      if (len > 0 && (e == ERROR_BROKEN_PIPE || e == ERROR_PIPE_NOT_CONNECTED))
        rc = (int)len;
      break;
    }
    int done = 0;
    for (size_t i = len; i < len + got; i++) {
      /* The request is handled as a C string: "stop\0junk" must not pass
       * for "stop". */
      if (buf[i] == '\0') {
        rc = -3;
        done = 1;
        break;
      }
      if (buf[i] == '\n') {
        buf[i] = '\0';
        if (i > 0 && buf[i - 1] == '\r')
          buf[i - 1] = '\0';
        rc = (int)i;
        done = 1;
        break;
      }
    }
    if (done)
      break;
    len += got;
    if (len > CONTROL_REQUEST_MAX) {
      rc = -2;
      break;
    }
  }
  CloseHandle(ov.hEvent);
  return rc;
}

static void serve_client(control_t *c, HANDLE pipe) {
  char request[CONTROL_REQUEST_MAX + 2];
  int n = read_request(c, pipe, request);
  ULONGLONG reply_deadline = GetTickCount64() + REPLY_TIMEOUT_MS;
  if (n == -2 || n == -3) {
    write_all(c->stop_event, pipe,
              n == -2 ? "error: request too long (at most 256 bytes)\n"
                      : "error: request holds a NUL byte\n",
              reply_deadline);
    close_client(pipe);
    return;
  }
  if (n < 0) {
    close_client(pipe); /* silent, too slow, or stopping: no reply */
    return;
  }
  request[n] = '\0';
  int stop = 0;
  char *reply = c->handler(c->ctx, request, &stop);
  int sent = 0;
  if (reply) {
    sent = write_all(c->stop_event, pipe, reply, reply_deadline) == 0;
    free(reply);
  }
  if (stop && sent && keep_stop_waiter(c, pipe) == 0)
    return;
  close_client(pipe);
}

static DWORD WINAPI control_main(void *arg) {
  control_t *c = arg;
  HANDLE pipe = c->first_instance;
  c->first_instance = NULL;
  OVERLAPPED ov = {0};
  ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  for (;;) {
    if (pipe == INVALID_HANDLE_VALUE || pipe == NULL) {
      pipe = create_instance(c, 0);
      if (pipe == INVALID_HANDLE_VALUE) {
        log_write(LOG_ERROR, "control",
                  "cannot create a pipe instance for %s "
                  "(error %lu); the control endpoint stops",
                  c->path, (unsigned long)GetLastError());
        break;
      }
    }
    ResetEvent(ov.hEvent);
    BOOL connected = ConnectNamedPipe(pipe, &ov);
    DWORD err = connected ? ERROR_PIPE_CONNECTED : GetLastError();
    if (err == ERROR_IO_PENDING) {
      DWORD ignored;
      if (!wait_io(c->stop_event, pipe, &ov, INFINITE, &ignored)) {
        CloseHandle(pipe);
        break; /* stopping */
      }
      err = ERROR_PIPE_CONNECTED;
    }
    if (err == ERROR_PIPE_CONNECTED) {
      /* The next instance first: while this client is served, the name
       * stays ours, and the next client waits its turn connected. */
      HANDLE next = create_instance(c, 0);
      if (next == INVALID_HANDLE_VALUE)
        next = NULL; /* created at the top, after this client */
      serve_client(c, pipe);
      pipe = next;
    } else {
      /* A client came and went (ERROR_NO_DATA): the instance is reused,
       * so there is no moment without one. */
      DisconnectNamedPipe(pipe);
    }
    if (WaitForSingleObject(c->stop_event, 0) == WAIT_OBJECT_0) {
      if (pipe)
        CloseHandle(pipe);
      break;
    }
  }
  CloseHandle(ov.hEvent);
  return 0;
}

int control_open(const char *runtime_dir, const char *name,
                 control_handler_fn handler, void *ctx, control_t **out,
                 char *err, size_t err_len) {
  control_t *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  c->handler = handler;
  c->ctx = ctx;
  if (pipe_name(runtime_dir, name, c->path, sizeof c->path, c->pipe_name,
                sizeof c->pipe_name / sizeof c->pipe_name[0]) != 0 ||
      make_security(c, err, err_len) != 0) {
    if (!err[0])
      snprintf(err, err_len, "the control pipe name is too long");
    free(c);
    return -1;
  }
  /* A pipe of that name exists already: another live instance (a pipe dies
   * with its process). FILE_FLAG_FIRST_PIPE_INSTANCE below closes the race
   * of two starting at once on Windows; Wine ignores that flag, so this
   * probe is what refuses a second instance there. */
  if (WaitNamedPipeW(c->pipe_name, 1) ||
      GetLastError() != ERROR_FILE_NOT_FOUND) {
    c->first_instance = INVALID_HANDLE_VALUE;
    SetLastError(ERROR_PIPE_BUSY);
  } else {
    c->first_instance = create_instance(c, 1);
  }
  if (c->first_instance == INVALID_HANDLE_VALUE) {
    DWORD e = GetLastError();
    if (e == ERROR_ACCESS_DENIED || e == ERROR_PIPE_BUSY)
      snprintf(err, err_len,
               "another instance is running with the control pipe %s: stop "
               "it (iocphost stop) or give this one another \"name\" or "
               "runtime_dir",
               c->path);
    else
      snprintf(err, err_len, "cannot create the control pipe %s (error %lu)",
               c->path, (unsigned long)e);
    LocalFree(c->descriptor);
    free(c);
    return -1;
  }
  c->stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
  c->thread = CreateThread(NULL, 0, control_main, c, 0, NULL);
  if (!c->thread) {
    snprintf(err, err_len, "cannot start the control thread");
    CloseHandle(c->first_instance);
    CloseHandle(c->stop_event);
    LocalFree(c->descriptor);
    free(c);
    return -1;
  }
  *out = c;
  return 0;
}

void control_close(control_t *c) {
  if (!c)
    return;
  SetEvent(c->stop_event);
  WaitForSingleObject(c->thread, INFINITE);
  CloseHandle(c->thread);
  CloseHandle(c->stop_event);
  for (int i = 0; i < c->stop_waiter_count; i++) {
    write_all(NULL, c->stop_waiters[i], "stopped\n",
              GetTickCount64() + STOPPED_TIMEOUT_MS);
    close_client(c->stop_waiters[i]);
  }
  free(c->stop_waiters);
  LocalFree(c->descriptor);
  free(c);
}

int control_request(const char *runtime_dir, const char *name,
                    const char *request, unsigned wait_ms,
                    control_reply_t *reply, char *err, size_t err_len) {
  char path[256];
  wchar_t wide[256];
  if (pipe_name(runtime_dir, name, path, sizeof path, wide,
                sizeof wide / sizeof wide[0]) != 0) {
    snprintf(err, err_len, "the control pipe name is too long");
    return -1;
  }
  HANDLE pipe = INVALID_HANDLE_VALUE;
  ULONGLONG deadline = GetTickCount64() + wait_ms;
  for (;;) {
    /* Identification only: whoever serves this name (a squatter, if the
     * host is not running) can learn who asks, never act as them. */
    pipe = CreateFileW(
        wide, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
        FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
        NULL);
    if (pipe != INVALID_HANDLE_VALUE)
      break;
    DWORD e = GetLastError();
    if (e != ERROR_PIPE_BUSY || GetTickCount64() >= deadline) {
      snprintf(err, err_len,
               "no running instance answers at %s (error %lu; is it running, "
               "with this config?)",
               path, (unsigned long)e);
      return -1;
    }
    WaitNamedPipeW(wide, 200);
  }
  char line[CONTROL_REQUEST_MAX + 2];
  snprintf(line, sizeof line, "%s\n", request);
  OVERLAPPED ov = {0};
  ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (ov.hEvent == NULL || write_all(NULL, pipe, line, deadline) != 0) {
    snprintf(err, err_len, "cannot send the request to %s (error %lu)", path,
             (unsigned long)GetLastError());
    if (ov.hEvent)
      CloseHandle(ov.hEvent);
    CloseHandle(pipe);
    return -1;
  }
  int timed_out = 0;
  char buf[4096];
  for (;;) {
    DWORD got = 0;
    /* The server ends the reply by closing; for "stop" that is when the
     * host has gone. wait_ms bounds it all, the host's drain included. */
    ResetEvent(ov.hEvent);
    BOOL done = ReadFile(pipe, buf, sizeof buf, &got, &ov);
    if (!done && GetLastError() == ERROR_IO_PENDING) {
      DWORD left = left_ms(deadline);
      done = wait_io(NULL, pipe, &ov, left, &got);
      timed_out = !done && left_ms(deadline) == 0;
    }
    if (!done || got == 0)
      break;
    control_reply_feed(reply, buf, got);
  }
  CloseHandle(ov.hEvent);
  CloseHandle(pipe);
  if (timed_out) {
    snprintf(err, err_len, "no complete answer from %s within %u ms", path,
             wait_ms);
    return -1;
  }
  return control_reply_end(reply, err, err_len);
}
#endif /* _WIN32 */
