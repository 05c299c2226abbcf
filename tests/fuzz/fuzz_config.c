/*
 * libFuzzer target: the config loader (config_parse in host/app/config.c).
 * Any text must give either a config (freed again without leaks) or exactly
 * one error line that names the file.
 */
#include <stdint.h>
#include <string.h>

#include "config.h"

#define CHECK(x)                                                               \
  do {                                                                         \
    if (!(x))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  config_t *c = NULL;
  char err[1024];
  memset(err, 'x', sizeof err);
  int rc = config_parse("fuzz.json", (const char *)data, size, &c, err,
                        sizeof err);
  if (rc == 0) {
    CHECK(c != NULL);
    CHECK(c->core_count >= 1);
    for (size_t i = 0; i < c->service_count; i++) {
      const config_service_t *s = &c->services[i];
      CHECK(s->core_index >= 0 && (size_t)s->core_index < c->core_count);
      CHECK(s->plugin_index >= 0 &&
            (size_t)s->plugin_index < c->plugin_count);
      CHECK(s->max_packet_bytes >= 4 && s->max_packet_bytes <= 65535);
      if (s->framing == CONFIG_FRAMING_PACKET)
        CHECK(s->max_recv_bytes >= s->max_packet_bytes);
    }
    config_free(c);
  } else {
    CHECK(rc == -1 && c == NULL);
    size_t len = strnlen(err, sizeof err);
    CHECK(len > 0 && len < sizeof err);
    CHECK(memchr(err, '\n', len) == NULL);
    CHECK(strstr(err, "fuzz.json") != NULL);
  }
  return 0;
}
