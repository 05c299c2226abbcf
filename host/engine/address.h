/*
 * Socket addresses: IPv4 "a.b.c.d:port" and IPv6 "[v6]:port", parsed and
 * formatted without touching DNS (a config must mean the same thing on every
 * machine, and a name lookup at start-up can hang).
 */
#ifndef IOCPHOST_ADDRESS_H
#define IOCPHOST_ADDRESS_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
/* Old 16-bit keywords windows.h still defines; they break ordinary names. */
#undef near
#undef far
#else
#include <netinet/in.h>
#include <sys/socket.h>
#endif

typedef struct address {
  union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } u;
} address_t;

/* Longest text address_format writes, with its terminating NUL:
 * "[" + INET6_ADDRSTRLEN + "]:" + 5 digits. */
#define ADDRESS_TEXT_MAX 56

/* Parses "host:port". host is an IPv4 literal or a bracketed IPv6 literal;
 * port is 0..65535. Returns 0, or -1 with a reason in err (what was wrong
 * and an example of the right form). */
int address_parse(const char *text, address_t *out, char *err, size_t err_len);

/* Writes "1.2.3.4:80" or "[::1]:80"; returns the length, or -1. */
int address_format(const address_t *addr, char *buf, size_t len);

/* Length to pass to bind/connect for this address. */
socklen_t address_length(const address_t *addr);

int address_family(const address_t *addr);
uint16_t address_port(const address_t *addr);

/* Fills addr from a socket address the OS returned. */
void address_from_sockaddr(address_t *addr, const struct sockaddr *sa,
                           socklen_t len);

#endif /* IOCPHOST_ADDRESS_H */
