/* metrics_sock.h on Windows: Winsock, WSAPoll. */
#ifdef _WIN32 /* POSIX: metrics_sock_posix.c */
#include "metrics_sock.h"

#include <stdio.h>
#include <string.h>
#include <winsock2.h>
#include <ws2tcpip.h>

int msock_init(void) {
  WSADATA wsa;
  return WSAStartup(MAKEWORD(2, 2), &wsa) == 0 ? 0 : -1;
}

void msock_cleanup(void) { WSACleanup(); }

static int nonblocking(SOCKET s) {
  u_long on = 1;
  return ioctlsocket(s, FIONBIO, &on) == 0 ? 0 : -1;
}

int msock_listen(const address_t *addr, int backlog, msock_t *out, char *err,
                 size_t err_len) {
  SOCKET s = WSASocketW(address_family(addr), SOCK_STREAM, IPPROTO_TCP, NULL,
                        0, WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET) {
    snprintf(err, err_len, "cannot make a socket: Winsock error %d",
             WSAGetLastError());
    return -1;
  }
  /* Exclusive, as the engine's listeners: SO_REUSEADDR on Windows would let
   * another process take the port from under us. */
  BOOL on = TRUE;
  setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&on, sizeof on);
  if (address_family(addr) == AF_INET6) {
    DWORD v6only = 1;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&v6only,
               sizeof v6only);
  }
  if (bind(s, &addr->u.sa, address_length(addr)) != 0 ||
      listen(s, backlog) != 0 || nonblocking(s) != 0) {
    int e = WSAGetLastError();
    closesocket(s);
    if (e == WSAEADDRINUSE || e == WSAEACCES)
      snprintf(err, err_len, "the address is in use");
    else if (e == WSAEADDRNOTAVAIL)
      snprintf(err, err_len, "the address is not one of this machine's");
    else
      snprintf(err, err_len, "Winsock error %d", e);
    return -1;
  }
  *out = (msock_t)s;
  return 0;
}

msock_t msock_accept(msock_t listener) {
  SOCKET s = accept((SOCKET)listener, NULL, NULL);
  if (s == INVALID_SOCKET)
    return MSOCK_INVALID;
  if (nonblocking(s) != 0) {
    closesocket(s);
    return MSOCK_INVALID;
  }
  return (msock_t)s;
}

static long result(int n) {
  if (n >= 0)
    return n;
  int e = WSAGetLastError();
  return e == WSAEWOULDBLOCK || e == WSAEINTR ? -1 : -2;
}

long msock_recv(msock_t s, void *buf, size_t len) {
  return result(recv((SOCKET)s, buf, len > 65536 ? 65536 : (int)len, 0));
}

long msock_send(msock_t s, const void *buf, size_t len) {
  return result(send((SOCKET)s, buf, len > 65536 ? 65536 : (int)len, 0));
}

void msock_shutdown_send(msock_t s) { shutdown((SOCKET)s, SD_SEND); }

void msock_close(msock_t s) {
  if (s != MSOCK_INVALID)
    closesocket((SOCKET)s);
}

int msock_wait(msock_poll_t *set, size_t count, int timeout_ms) {
  WSAPOLLFD fds[64 + 2];
  if (count > sizeof fds / sizeof fds[0])
    return -1;
  for (size_t i = 0; i < count; i++) {
    fds[i].fd = (SOCKET)set[i].sock;
    fds[i].events = (SHORT)((set[i].events & MSOCK_IN ? POLLRDNORM : 0) |
                            (set[i].events & MSOCK_OUT ? POLLWRNORM : 0));
    fds[i].revents = 0;
  }
  int n = WSAPoll(fds, (ULONG)count, timeout_ms);
  if (n < 0)
    return -1;
  for (size_t i = 0; i < count; i++) {
    SHORT r = fds[i].revents;
    set[i].revents =
        (r & (POLLRDNORM | POLLERR | POLLHUP | POLLNVAL) ? MSOCK_IN : 0) |
        (r & POLLWRNORM ? MSOCK_OUT : 0);
  }
  return n;
}

int msock_waker_open(msock_t *out, char *err, size_t err_len) {
  /* WSAPoll takes sockets only: a loopback UDP socket sending to itself. */
  SOCKET s = WSASocketW(AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0,
                        WSA_FLAG_NO_HANDLE_INHERIT);
  struct sockaddr_in a;
  int len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (s == INVALID_SOCKET || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(s, (struct sockaddr *)&a, &len) != 0 ||
      connect(s, (struct sockaddr *)&a, sizeof a) != 0 || nonblocking(s) != 0) {
    snprintf(err, err_len,
             "cannot make the metrics thread's wake socket: Winsock error %d",
             WSAGetLastError());
    if (s != INVALID_SOCKET)
      closesocket(s);
    return -1;
  }
  *out = (msock_t)s;
  return 0;
}

void msock_wake(msock_t waker) {
  char byte = 1;
  send((SOCKET)waker, &byte, 1, 0);
}

void msock_waker_drain(msock_t waker) {
  char buf[64];
  while (recv((SOCKET)waker, buf, sizeof buf, 0) > 0) {
  }
}

void msock_thread_background(void) {
  SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_LOWEST);
}

#endif
