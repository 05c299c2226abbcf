#include "notify.h"

#ifdef _WIN32
/* Windows has no NOTIFY_SOCKET: a Windows service reports its state to the
 * service manager itself (main.c). */
void notify_send(const char *state) { (void)state; }

uint64_t notify_watchdog_ms(void) { return 0; }

#else

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine/log.h"

void notify_send(const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || !*path)
    return;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    log_write(LOG_WARN, "notify", "NOTIFY_SOCKET %s is not a usable socket "
              "address; not notifying", path);
    return;
  }
  memcpy(addr.sun_path, path, len);
  if (path[0] == '@')
    addr.sun_path[0] = '\0'; /* an abstract socket */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  socklen_t addr_len =
      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr,
             addr_len) < 0)
    log_write(LOG_WARN, "notify", "cannot notify the service manager (%s)",
              state);
  close(fd);
}

uint64_t notify_watchdog_ms(void) {
  const char *usec = getenv("WATCHDOG_USEC");
  if (!usec || !*usec)
    return 0;
  const char *pid = getenv("WATCHDOG_PID");
  if (pid && *pid && strtol(pid, NULL, 10) != (long)getpid())
    return 0;
  unsigned long long value = strtoull(usec, NULL, 10);
  return value / 1000;
}

#endif /* _WIN32 */
