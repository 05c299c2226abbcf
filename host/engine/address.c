/*
 * Socket addresses. Parsing accepts only IP literals (inet_pton), never host
 * names: a config must mean the same thing on every machine, and a name
 * lookup at start-up can hang.
 */
#include "engine/address.h"

#include <stdio.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#endif

#define HINT                                                                   \
  "write an IPv4 address like 127.0.0.1:7777 or an IPv6 one like [::1]:7777"

/* Longest text we quote back in an error, so a huge input cannot hide the
 * reason at the end of the message. */
#define QUOTE_MAX 64

static void fail(char *err, size_t err_len, const char *text, const char *fmt,
                 const char *detail) {
  if (err == NULL || err_len == 0)
    return;
  char reason[256]; /* the longest format, HINT and QUOTE_MAX bytes quoted */
  snprintf(reason, sizeof reason, fmt, detail ? detail : "");
  size_t text_len = strlen(text);
  if (text_len > QUOTE_MAX)
    snprintf(err, err_len, "\"%.*s...\": %s", QUOTE_MAX, text, reason);
  else
    snprintf(err, err_len, "\"%s\": %s", text, reason);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Parses the text after the host's ':' into *port. */
static int parse_port(const char *text, const char *port_text, uint16_t *port,
                      char *err, size_t err_len) {
  if (*port_text == '\0') {
    fail(err, err_len, text, "missing port after \":\"; " HINT, NULL);
    return -1;
  }
  if (!is_digit(*port_text)) {
    char quoted[QUOTE_MAX + 1];
    snprintf(quoted, sizeof quoted, "%s", port_text);
    fail(err, err_len, text,
         "port \"%s\" is not a number from 0 to 65535; " HINT, quoted);
    return -1;
  }
  unsigned long value = 0;
  const char *p = port_text;
  int too_big = 0;
  for (; is_digit(*p); p++) {
    value = value * 10 + (unsigned long)(*p - '0');
    if (value > 65535) {
      too_big = 1;
      value = 65536; /* stays bounded however many digits follow */
    }
  }
  if (*p != '\0') {
    char quoted[QUOTE_MAX + 1];
    snprintf(quoted, sizeof quoted, "%s", p);
    fail(err, err_len, text, "unexpected \"%s\" after the port; " HINT, quoted);
    return -1;
  }
  if (too_big) {
    char quoted[QUOTE_MAX + 1];
    snprintf(quoted, sizeof quoted, "%s", port_text);
    fail(err, err_len, text, "port %s is out of range 0..65535", quoted);
    return -1;
  }
  *port = (uint16_t)value;
  return 0;
}

static int parse_ipv6(const char *text, address_t *out, char *err,
                      size_t err_len) {
  const char *close = strchr(text, ']');
  if (close == NULL) {
    fail(err, err_len, text,
         "missing \"]\" after the IPv6 address; write it like [::1]:7777",
         NULL);
    return -1;
  }
  size_t host_len = (size_t)(close - (text + 1));
  char host[INET6_ADDRSTRLEN + 1];
  if (memchr(text + 1, '%', host_len) != NULL) {
    fail(err, err_len, text,
         "IPv6 scope ids (\"%%...\") are not supported; " HINT, NULL);
    return -1;
  }
  if (host_len == 0 || host_len >= sizeof host) {
    fail(err, err_len, text, "not an IPv6 literal inside the brackets; " HINT,
         NULL);
    return -1;
  }
  memcpy(host, text + 1, host_len);
  host[host_len] = '\0';
  struct in6_addr addr6;
  if (inet_pton(AF_INET6, host, &addr6) != 1) {
    fail(err, err_len, text, "not an IPv6 literal inside the brackets; " HINT,
         NULL);
    return -1;
  }
  if (close[1] != ':') {
    if (close[1] == '\0')
      fail(err, err_len, text, "missing port after \"]\"; " HINT, NULL);
    else
      fail(err, err_len, text, "expected \":port\" after \"]\"; " HINT, NULL);
    return -1;
  }
  uint16_t port;
  if (parse_port(text, close + 2, &port, err, err_len) != 0)
    return -1;
  out->u.v6.sin6_family = AF_INET6;
  out->u.v6.sin6_addr = addr6;
  out->u.v6.sin6_port = htons(port);
  return 0;
}

/* Whether s (up to len bytes) is an IPv6 literal, to explain a missing
 * bracket instead of calling it "not an IP literal". */
static int looks_like_ipv6(const char *s, size_t len) {
  char host[INET6_ADDRSTRLEN + 1];
  struct in6_addr addr6;
  if (len == 0 || len >= sizeof host)
    return 0;
  memcpy(host, s, len);
  host[len] = '\0';
  return inet_pton(AF_INET6, host, &addr6) == 1;
}

static int parse_ipv4(const char *text, address_t *out, char *err,
                      size_t err_len) {
  const char *colon = strchr(text, ':');
  const char *last_colon = strrchr(text, ':');
  if (colon != last_colon) {
    if (looks_like_ipv6(text, strlen(text)) ||
        looks_like_ipv6(text, (size_t)(last_colon - text)))
      fail(err, err_len, text,
           "an IPv6 address needs brackets, like [::1]:7777", NULL);
    else
      fail(err, err_len, text, "not an IP literal; " HINT, NULL);
    return -1;
  }
  size_t host_len = colon ? (size_t)(colon - text) : strlen(text);
  if (host_len == 0) {
    fail(err, err_len, text,
         "missing IP address before \":\" (0.0.0.0 means every IPv4 "
         "interface); " HINT,
         NULL);
    return -1;
  }
  char host[INET_ADDRSTRLEN + 1];
  struct in_addr addr4;
  int ok = host_len < sizeof host;
  if (ok) {
    memcpy(host, text, host_len);
    host[host_len] = '\0';
    ok = inet_pton(AF_INET, host, &addr4) == 1;
  }
  if (!ok) {
    fail(err, err_len, text, "not an IP literal; " HINT, NULL);
    return -1;
  }
  if (colon == NULL) {
    fail(err, err_len, text, "missing port; " HINT, NULL);
    return -1;
  }
  uint16_t port;
  if (parse_port(text, colon + 1, &port, err, err_len) != 0)
    return -1;
  out->u.v4.sin_family = AF_INET;
  out->u.v4.sin_addr = addr4;
  out->u.v4.sin_port = htons(port);
  return 0;
}

int address_parse(const char *text, address_t *out, char *err, size_t err_len) {
  if (err != NULL && err_len > 0)
    err[0] = '\0';
  address_t parsed;
  memset(&parsed, 0, sizeof parsed);
  if (text == NULL || text[0] == '\0') {
    if (err != NULL && err_len > 0)
      snprintf(err, err_len, "empty address; " HINT);
    return -1;
  }
  int rc = text[0] == '[' ? parse_ipv6(text, &parsed, err, err_len)
                          : parse_ipv4(text, &parsed, err, err_len);
  if (rc == 0 && out != NULL)
    *out = parsed;
  return rc;
}

int address_format(const address_t *addr, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN];
  int n;
  if (addr == NULL || buf == NULL || len == 0)
    return -1;
  switch (addr->u.sa.sa_family) {
  case AF_INET:
    if (inet_ntop(AF_INET, &addr->u.v4.sin_addr, host, sizeof host) == NULL)
      return -1;
    n = snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(addr->u.v4.sin_port));
    break;
  case AF_INET6:
    /* The scope id is left out: parsing does not accept it either. */
    if (inet_ntop(AF_INET6, &addr->u.v6.sin6_addr, host, sizeof host) == NULL)
      return -1;
    n = snprintf(buf, len, "[%s]:%u", host,
                 (unsigned)ntohs(addr->u.v6.sin6_port));
    break;
  default:
    buf[0] = '\0';
    return -1;
  }
  if (n < 0 || (size_t)n >= len) {
    buf[0] = '\0';
    return -1;
  }
  return n;
}

socklen_t address_length(const address_t *addr) {
  switch (addr->u.sa.sa_family) {
  case AF_INET:
    return (socklen_t)sizeof(struct sockaddr_in);
  case AF_INET6:
    return (socklen_t)sizeof(struct sockaddr_in6);
  default:
    return 0;
  }
}

int address_family(const address_t *addr) { return addr->u.sa.sa_family; }

uint16_t address_port(const address_t *addr) {
  switch (addr->u.sa.sa_family) {
  case AF_INET:
    return ntohs(addr->u.v4.sin_port);
  case AF_INET6:
    return ntohs(addr->u.v6.sin6_port);
  default:
    return 0;
  }
}

void address_from_sockaddr(address_t *addr, const struct sockaddr *sa,
                           socklen_t len) {
  memset(addr, 0, sizeof *addr);
  if (sa == NULL)
    return;
  size_t want;
  if (sa->sa_family == AF_INET)
    want = sizeof(struct sockaddr_in);
  else if (sa->sa_family == AF_INET6)
    want = sizeof(struct sockaddr_in6);
  else
    return; /* stays AF_UNSPEC: formats as an error, length 0 */
  if ((long long)len < (long long)want)
    return;
  memcpy(&addr->u, sa, want);
}
