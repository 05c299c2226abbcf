/* transport_log.h */
#include "transport_log.h"

#include <stdio.h>

#include "engine/address.h"
#include "engine/log.h"

void transport_log(int level, const char *subsystem, const char *service,
                   session_t *session, const char *fmt, va_list ap) {
  char what[512];
  vsnprintf(what, sizeof what, fmt, ap);
  char peer[ADDRESS_TEXT_MAX] = "?";
  unsigned long long id = 0;
  if (session) {
    address_format(session_peer(session), peer, sizeof peer);
    id = (unsigned long long)session_id(session);
  }
  log_write(level, subsystem, "service %s: session %llu (%s) %s",
            service ? service : "?", id, peer, what);
}
