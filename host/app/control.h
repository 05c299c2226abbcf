/*
 * The control endpoint (SPEC section 8): how `iocphost status|stop|reload`
 * reach a running instance. On Linux a Unix socket <runtime_dir>/<name>.sock,
 * mode 0600 in a 0700 folder, and the peer's uid is checked as well: only the
 * user the host runs as may use it.
 *
 * The protocol is one request line (at most CONTROL_REQUEST_MAX bytes), then
 * a reply the server ends by closing. The first reply line is "ok" or
 * "error: ..."; the rest is the answer. The status line is the protocol's
 * own: the commands never print it (SPEC section 8). A "stop" request is
 * answered at once and its connection stays open until the host has stopped, so
 * the client can wait for the end.
 */
#ifndef IOCPHOST_CONTROL_H
#define IOCPHOST_CONTROL_H

#include <stddef.h>
#include <stdio.h>

#define CONTROL_REQUEST_MAX 256

typedef struct control control_t;

/* Answers one request: returns a malloc'd reply (starting with "ok\n" or
 * "error: "). *stop is set to 1 when the request asks the host to stop. */
typedef char *(*control_handler_fn)(void *ctx, const char *request, int *stop);

/* Creates the endpoint and starts its thread. Fails (with a reason) if
 * another live instance already owns the endpoint. */
int control_open(const char *runtime_dir, const char *name,
                 control_handler_fn handler, void *ctx, control_t **out,
                 char *err, size_t err_len);
/* Closes the endpoint. Connections waiting on "stop" stay open until the
 * process exits, so `iocphost stop` returns only when the host is gone. */
void control_close(control_t *control);

/* A reply as the client reads it (control_reply.c, every platform): the
 * status line ("ok" / "error: ...") is the protocol's and is taken off; only
 * what follows "ok" is the answer a command shows. */
typedef struct control_reply {
  FILE *answer; /* where the answer goes as it arrives; NULL: kept in text */
  int state;
  int out_of_memory;
  char *text; /* the status line while incomplete; then the error's text, or
               * the kept answer (NUL-terminated, len bytes) */
  size_t len, cap;
} control_reply_t;

void control_reply_init(control_reply_t *r, FILE *answer);
void control_reply_feed(control_reply_t *r, const char *data, size_t len);
/* After the reply's last byte: 0 for an answer; 1 for an error reply, its
 * text (without "error: ") in err; -1 when there was no whole status line
 * (reason in err). */
int control_reply_end(control_reply_t *r, char *err, size_t err_len);
void control_reply_free(control_reply_t *r);

/* Client side: sends request and reads the reply into *reply (initialised
 * by the caller: the answer streams to its FILE, or is kept), and for
 * "stop" waits (up to wait_ms) until the host has gone. Returns 0 for an
 * answer, 1 for an error reply (its text in err), -1 when no instance
 * answered or the reply broke off (reason in err). */
int control_request(const char *runtime_dir, const char *name,
                    const char *request, unsigned wait_ms,
                    control_reply_t *reply, char *err, size_t err_len);

/* The endpoint's path, for messages. */
int control_path(const char *runtime_dir, const char *name, char *buf,
                 size_t len);

#endif /* IOCPHOST_CONTROL_H */
