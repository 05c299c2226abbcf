/*
 * The service manager's protocol, spoken directly: on Linux a datagram to
 * $NOTIFY_SOCKET (systemd's sd_notify). No libsystemd: the protocol is one
 * sendmsg, and linking libsystemd would add a dependency to every build and
 * to the Debian package for no gain. Without NOTIFY_SOCKET every call is a
 * no-op.
 */
#ifndef IOCPHOST_NOTIFY_H
#define IOCPHOST_NOTIFY_H

#include <stdint.h>

/* Sends state lines such as "READY=1" or "STOPPING=1". */
void notify_send(const char *state);
/* Watchdog interval in ms the manager asked for (WATCHDOG_USEC, for this
 * process), or 0. Ping with notify_send("WATCHDOG=1") at half of it. */
uint64_t notify_watchdog_ms(void);

#endif
