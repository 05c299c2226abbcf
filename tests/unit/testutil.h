/* Helpers shared by the Check programs: blocking loopback clients with
 * deadlines, and bounded waiting for a condition (no fixed sleeps). */
#ifndef IOCPHOST_TESTUTIL_H
#define IOCPHOST_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Connects to 127.0.0.1:port (or [::1] when v6); returns the fd or -1. */
int tu_connect(int port, int v6);
/* Writes all bytes; returns 0 or -1. */
int tu_write_all(int fd, const void *data, size_t len);
/* Reads exactly len bytes within timeout_ms; returns 0, or -1 on error/EOF/timeout. */
int tu_read_exact(int fd, void *data, size_t len, int timeout_ms);
/* Waits until the peer closes: 1 on FIN (EOF), 2 on reset, 0 on timeout. */
int tu_wait_closed(int fd, int timeout_ms);
/* Sets SO_LINGER 0 so close() sends RST. */
void tu_set_reset_on_close(int fd);
/* Polls cond(arg) every millisecond until true or timeout_ms; returns 1 if it held. */
int tu_wait_until(int (*cond)(void *arg), void *arg, int timeout_ms);
/* A free loopback TCP port, found by binding port 0. */
int tu_free_port(void);
/* A deterministic PRNG (xorshift64*) for reproducible random tests. */
uint64_t tu_rand(uint64_t *state);

#endif
