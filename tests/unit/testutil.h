/* Helpers shared by the Check programs: blocking loopback clients with
 * deadlines, and bounded waiting for a condition (no fixed sleeps).
 *
 * The same tests build for Windows (mingw-w64, run under Wine): sockets stay
 * ints here (a SOCKET handle fits), and this header maps the few POSIX calls
 * the tests use onto Winsock: poll is WSAPoll, MSG_NOSIGNAL is 0 (Windows
 * raises no SIGPIPE), SHUT_WR is SD_SEND. Close sockets with tu_close, never
 * close(), and test "would block" with tu_would_block(), never errno. */
#ifndef IOCPHOST_TESTUTIL_H
#define IOCPHOST_TESTUTIL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
typedef ULONG nfds_t;
#define poll(fds, count, timeout_ms) WSAPoll((fds), (count), (timeout_ms))
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif
#ifndef SHUT_WR
#define SHUT_WR SD_SEND
#endif
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

/* A TCP socket of family (AF_INET or AF_INET6), blocking, not inherited by
 * child processes; -1 on failure. Starts Winsock when needed. */
int tu_socket(int family);
/* Connects to 127.0.0.1:port (or [::1] when v6); returns the fd or -1. */
int tu_connect(int port, int v6);
/* Closes a socket. */
void tu_close(int fd);
/* Makes a socket non-blocking. */
void tu_set_nonblocking(int fd);
/* 1 if the last failed socket call on this thread would have blocked
 * (EAGAIN / WSAEWOULDBLOCK). */
int tu_would_block(void);
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
/* The same for a counter to reach at least want: 1, or 0 on timeout. */
int tu_wait_at_least(atomic_int *counter, int want, int timeout_ms);
/* A free loopback TCP port, found by binding port 0. */
int tu_free_port(void);
/* A loopback port where connections are refused and stay refused: bound
 * (so no other process, a parallel test say, can take it) but not
 * listening. *holder keeps it; tu_close(*holder) frees it. */
int tu_closed_port(int *holder);
/* A deterministic PRNG (xorshift64*) for reproducible random tests. */
uint64_t tu_rand(uint64_t *state);
/* Monotonic milliseconds. */
uint64_t tu_now_ms(void);
/* Sleeps about ms milliseconds (only where a test must let time pass). */
void tu_sleep_ms(int ms);
/* The same in microseconds (Windows sleeps whole milliseconds). */
void tu_sleep_us(int us);
/* Creates a new empty file in the system's temp folder (/tmp, %TEMP%) and
 * writes its path into path; returns 0 or -1. */
int tu_temp_file(char *path, size_t len, const char *prefix);
/* Raises the soft descriptor limit to the hard one (nothing on Windows,
 * which has no per-process socket limit). */
void tu_raise_fd_limit(void);

#endif
