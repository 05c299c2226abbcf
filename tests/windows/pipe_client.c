/* pipe_client: a control-pipe client that misbehaves on purpose, for
 * test_windows_control.py (Linux's Python cannot open a Wine pipe).
 *
 *   pipe_client send PIPE BYTES        sends BYTES (C escapes: \n \r \0 \\
 *                                      \xHH), reads the reply to its end
 *                                      and writes it to stdout
 *   pipe_client repeat PIPE N TEXT     sends TEXT N times in one go, then
 *                                      reads the reply as send does
 *   pipe_client silent PIPE MS         sends nothing; waits up to MS for the
 *                                      server to drop it
 *   pipe_client trickle PIPE MS BYTES  sends one byte of BYTES every MS ms
 *                                      (round and round), never a newline
 *                                      unless BYTES has one, until the
 *                                      server drops it (or 60 s)
 *   pipe_client noread PIPE MS BYTES   sends BYTES, never reads, holds the
 *                                      pipe open for MS ms (a server that
 *                                      gave up on it may have left the
 *                                      reply's start in the pipe's buffer,
 *                                      so no "dropped" here)
 *
 * A client that waits for the server to drop it prints "dropped after N ms"
 * or "not dropped after N ms" on stdout. The line "connected" goes to
 * stderr as soon as the pipe is open, so a test can start the next client
 * knowing this one holds the endpoint. Exit 0, or 1 with the reason on
 * stderr (2: no pipe to connect to).
 */
#include <windows.h>

#include <fcntl.h>
#include <io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t unescape(const char *text, char *out) {
  size_t n = 0;
  for (const char *p = text; *p; p++) {
    if (*p != '\\' || !p[1]) {
      out[n++] = *p;
      continue;
    }
    p++;
    switch (*p) {
    case 'n':
      out[n++] = '\n';
      break;
    case 'r':
      out[n++] = '\r';
      break;
    case '0':
      out[n++] = '\0';
      break;
    case 'x': {
      char hex[3] = {p[1], p[1] ? p[2] : 0, 0};
      out[n++] = (char)strtol(hex, NULL, 16);
      p += p[1] && p[2] ? 2 : 0;
      break;
    }
    default:
      out[n++] = *p;
    }
  }
  return n;
}

static HANDLE open_pipe(const char *name) {
  ULONGLONG deadline = GetTickCount64() + 10000;
  for (;;) {
    HANDLE pipe = CreateFileA(
        name, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
        FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
        NULL);
    if (pipe != INVALID_HANDLE_VALUE) {
      fprintf(stderr, "connected\n");
      fflush(stderr);
      return pipe;
    }
    DWORD e = GetLastError();
    if (e != ERROR_PIPE_BUSY || GetTickCount64() >= deadline) {
      fprintf(stderr, "pipe_client: cannot open %s (error %lu)\n", name,
              (unsigned long)e);
      exit(2);
    }
    WaitNamedPipeA(name, 200);
  }
}

/* Whether the server has closed its end: peeking takes nothing from the
 * pipe, so the server's pending write stays pending. */
static int dropped(HANDLE pipe) {
  DWORD available = 0;
  return !PeekNamedPipe(pipe, NULL, 0, NULL, &available, NULL);
}

static int wait_dropped(HANDLE pipe, DWORD ms) {
  ULONGLONG start = GetTickCount64();
  while (!dropped(pipe) && GetTickCount64() - start < ms)
    Sleep(20);
  ULONGLONG took = GetTickCount64() - start;
  printf("%s after %llu ms\n", dropped(pipe) ? "dropped" : "not dropped",
         (unsigned long long)took);
  return 0;
}

/* Writes len bytes, waiting at most ms; 0 when all went. */
static int write_bytes(HANDLE pipe, const char *data, size_t len, DWORD ms) {
  OVERLAPPED ov = {0};
  ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  DWORD written = 0;
  BOOL ok = WriteFile(pipe, data, (DWORD)len, &written, &ov);
  if (!ok && GetLastError() == ERROR_IO_PENDING) {
    if (WaitForSingleObject(ov.hEvent, ms) != WAIT_OBJECT_0)
      CancelIoEx(pipe, &ov);
    ok = GetOverlappedResult(pipe, &ov, &written, TRUE);
  }
  CloseHandle(ov.hEvent);
  return ok && written == len ? 0 : -1;
}

/* Sends data while reading the reply (a server that stops reading early
 * must not leave us both waiting), writes the reply to stdout until the
 * server ends it. */
static int send_and_read(HANDLE pipe, const char *data, size_t len) {
  OVERLAPPED wov = {0}, rov = {0};
  wov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  rov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  DWORD written = 0;
  /* The server may refuse before reading everything: a failed write is
   * fine, the reply is what counts. */
  BOOL writing = len > 0 &&
                 !WriteFile(pipe, data, (DWORD)len, &written, &wov) &&
                 GetLastError() == ERROR_IO_PENDING;
  char buf[4096];
  ULONGLONG deadline = GetTickCount64() + 30000;
  for (;;) {
    DWORD got = 0;
    ResetEvent(rov.hEvent);
    BOOL ok = ReadFile(pipe, buf, sizeof buf, &got, &rov);
    if (!ok && GetLastError() == ERROR_IO_PENDING) {
      ULONGLONG now = GetTickCount64();
      DWORD left = now < deadline ? (DWORD)(deadline - now) : 0;
      if (WaitForSingleObject(rov.hEvent, left) != WAIT_OBJECT_0) {
        CancelIoEx(pipe, &rov);
        fprintf(stderr, "pipe_client: no end of the reply within 30 s\n");
        GetOverlappedResult(pipe, &rov, &got, TRUE);
        break;
      }
      ok = GetOverlappedResult(pipe, &rov, &got, FALSE);
    }
    if (!ok || got == 0)
      break;
    fwrite(buf, 1, got, stdout);
  }
  if (writing) {
    CancelIoEx(pipe, &wov);
    GetOverlappedResult(pipe, &wov, &written, TRUE);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: see the top of pipe_client.c\n");
    return 1;
  }
  _setmode(_fileno(stdout), _O_BINARY);
  _setmode(_fileno(stderr), _O_BINARY);
  const char *mode = argv[1];
  HANDLE pipe = open_pipe(argv[2]);
  if (strcmp(mode, "send") == 0 && argc == 4) {
    char *data = malloc(strlen(argv[3]) + 1);
    size_t len = unescape(argv[3], data);
    return send_and_read(pipe, data, len);
  }
  if (strcmp(mode, "repeat") == 0 && argc == 5) {
    size_t n = strtoul(argv[3], NULL, 10), one = strlen(argv[4]);
    char *data = malloc(n * one + 1);
    for (size_t i = 0; i < n; i++)
      memcpy(data + i * one, argv[4], one);
    return send_and_read(pipe, data, n * one);
  }
  if (strcmp(mode, "silent") == 0 && argc == 4)
    return wait_dropped(pipe, (DWORD)strtoul(argv[3], NULL, 10));
  if (strcmp(mode, "trickle") == 0 && argc == 5) {
    DWORD every = (DWORD)strtoul(argv[3], NULL, 10);
    char *data = malloc(strlen(argv[4]) + 1);
    size_t len = unescape(argv[4], data);
    ULONGLONG start = GetTickCount64();
    for (size_t i = 0; GetTickCount64() - start < 60000; i++) {
      if (write_bytes(pipe, data + i % len, 1, 10000) != 0 || dropped(pipe))
        break;
      for (DWORD waited = 0; waited < every && !dropped(pipe); waited += 20)
        Sleep(20);
      if (dropped(pipe))
        break;
    }
    ULONGLONG took = GetTickCount64() - start;
    printf("%s after %llu ms\n", dropped(pipe) ? "dropped" : "not dropped",
           (unsigned long long)took);
    return 0;
  }
  if (strcmp(mode, "noread") == 0 && argc == 5) {
    char *data = malloc(strlen(argv[4]) + 1);
    size_t len = unescape(argv[4], data);
    write_bytes(pipe, data, len, 10000);
    Sleep((DWORD)strtoul(argv[3], NULL, 10));
    printf("held\n");
    return 0;
  }
  fprintf(stderr, "pipe_client: unknown mode or wrong arguments: %s\n", mode);
  return 1;
}
