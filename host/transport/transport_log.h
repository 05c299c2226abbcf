/*
 * One log line about a transport layer's session, the same shape for every
 * layer: "service S: session ID (PEER) what". session may be NULL (unit
 * tests drive a layer without one).
 */
#ifndef IOCPHOST_TRANSPORT_LOG_H
#define IOCPHOST_TRANSPORT_LOG_H

#include <stdarg.h>

#include "engine/engine.h"

void transport_log(int level, const char *subsystem, const char *service,
                   session_t *session, const char *fmt, va_list ap);

#endif
