/*
 * The few socket calls the metrics endpoint (metrics.c) makes, one file per
 * platform as run_posix.c / run_win.c are: metrics_sock_posix.c (poll) and
 * metrics_sock_win.c (Winsock, WSAPoll). Every socket is non-blocking.
 */
#ifndef IOCPHOST_METRICS_SOCK_H
#define IOCPHOST_METRICS_SOCK_H

#include <stddef.h>
#include <stdint.h>

#include "engine/address.h"

typedef uintptr_t msock_t; /* an fd, or a SOCKET */
#define MSOCK_INVALID ((msock_t)~(uintptr_t)0)

/* What to wait for, and what happened (error and hang-up read as MSOCK_IN:
 * the following recv says which). */
#define MSOCK_IN 1
#define MSOCK_OUT 2

typedef struct msock_poll {
  msock_t sock;
  int events;
  int revents;
} msock_poll_t;

/* Around all other calls (Winsock's WSAStartup). 0, or -1. */
/* Makes the calling thread (the endpoint's) yield to the cores' workers:
 * a scrape renders a page of many kilobytes, and on a host with as many
 * workers as CPUs it must not delay a game packet. Best effort. */
void msock_thread_background(void);

int msock_init(void);
void msock_cleanup(void);

/* Binds and listens; 0, or -1 with err telling why (and whether the
 * address is in use or not this machine's). */
int msock_listen(const address_t *addr, int backlog, msock_t *out, char *err,
                 size_t err_len);
/* A connection waiting on a listener, or MSOCK_INVALID when none. */
msock_t msock_accept(msock_t listener);
/* > 0 bytes, 0 the peer closed, -1 nothing now, -2 an error. */
long msock_recv(msock_t s, void *buf, size_t len);
/* > 0 bytes taken, -1 no room now, -2 an error. */
long msock_send(msock_t s, const void *buf, size_t len);
/* No more sending: FIN. */
void msock_shutdown_send(msock_t s);
void msock_close(msock_t s);
/* Waits up to timeout_ms (-1 without end); the count ready, or -1. */
int msock_wait(msock_poll_t *set, size_t count, int timeout_ms);

/* A waker: a socket that becomes readable when msock_wake is called from
 * another thread (a loopback UDP socket sending to itself, on both
 * platforms). */
int msock_waker_open(msock_t *out, char *err, size_t err_len);
void msock_wake(msock_t waker);
void msock_waker_drain(msock_t waker);

#endif
