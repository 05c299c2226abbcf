/*
 * The control endpoint (SPEC section 8): how `iocphost status|stop|reload`
 * reach a running instance. On Linux a Unix socket <runtime_dir>/<name>.sock,
 * mode 0600 in a 0700 folder, and the peer's uid is checked as well: only the
 * user the host runs as may use it.
 *
 * The protocol is one request line (at most CONTROL_REQUEST_MAX bytes), then
 * a reply the server ends by closing. The first reply line is "ok" or
 * "error: ..."; the rest is the answer. A "stop" request is answered at once
 * and its connection stays open until the host has stopped, so the client
 * can wait for the end.
 */
#ifndef IOCPHOST_CONTROL_H
#define IOCPHOST_CONTROL_H

#include <stddef.h>

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

/* Client side: sends request, writes the reply to out (stdout), and for
 * "stop" waits (up to wait_ms) until the host has gone. Returns 0 when the
 * reply began with "ok", 1 for an error reply, -1 when no instance answered
 * (reason in err). */
int control_request(const char *runtime_dir, const char *name,
                    const char *request, unsigned wait_ms, char *err,
                    size_t err_len);

/* The endpoint's path, for messages. */
int control_path(const char *runtime_dir, const char *name, char *buf,
                 size_t len);

#endif /* IOCPHOST_CONTROL_H */
