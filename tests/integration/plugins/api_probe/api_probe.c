/*
 * api_probe: calls host functions with the arguments a careless or hostile
 * plugin would pass and tells the client what they returned, so a test can
 * hold the host to the result table of plugin.h (test_api_limits.py).
 *
 * Raw framing. Each line the client sends is a command; the answer is the
 * line "<command> <result>\n" (the result of the call, a number):
 *   ping                  answers "ping 0"
 *   broadcast N           broadcasts N bytes of 'x' to the service
 *   broadcast_huge        broadcast with a length of SIZE_MAX - 8
 *   sendv_overflow        sendv of two buffers whose lengths add up past
 *                         SIZE_MAX
 *   send_packet           send_packet of one byte (on a raw service)
 *   broadcast_packet      broadcast_packet of one byte (on a raw service)
 * Broadcast bytes reach the sender before its answer.
 */
#include <iocphost/plugin.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const iocphost_api_t *host;
static const uint8_t tiny[16] = "xxxxxxxxxxxxxxxx";

static int on_load(const iocphost_api_t *api, const char *settings, char *err,
                   size_t err_len) {
  (void)settings;
  (void)err;
  (void)err_len;
  host = api;
  return 0;
}

static void on_connected(iocphost_session_t *s, void *state) {
  (void)s;
  (void)state;
}

static long run(iocphost_session_t *s, const char *command) {
  iocphost_service_t *service = host->session_service(s);
  if (strcmp(command, "ping") == 0)
    return 0;
  if (strncmp(command, "broadcast ", 10) == 0) {
    size_t len = (size_t)strtoull(command + 10, NULL, 10);
    uint8_t *bytes = malloc(len ? len : 1);
    if (!bytes)
      return -1000;
    memset(bytes, 'x', len);
    long rc = host->broadcast(service, bytes, len);
    free(bytes);
    return rc;
  }
  if (strcmp(command, "broadcast_huge") == 0)
    return host->broadcast(service, tiny, SIZE_MAX - 8);
  if (strcmp(command, "sendv_overflow") == 0) {
    iocphost_buf_t bufs[2] = {{tiny, SIZE_MAX - 8}, {tiny, 16}};
    return host->sendv(s, bufs, 2);
  }
  if (strcmp(command, "send_packet") == 0)
    return host->send_packet(s, 1, tiny, 1);
  if (strcmp(command, "broadcast_packet") == 0)
    return host->broadcast_packet(service, 1, tiny, 1);
  return -1001;
}

static size_t on_recv(iocphost_session_t *s, void *state, const uint8_t *data,
                      size_t len) {
  (void)state;
  const uint8_t *end = memchr(data, '\n', len);
  if (!end)
    return 0;
  char command[128];
  size_t n = (size_t)(end - data);
  if (n >= sizeof command)
    n = sizeof command - 1;
  memcpy(command, data, n);
  command[n] = '\0';
  char answer[200];
  int m = snprintf(answer, sizeof answer, "%s %ld\n", command, run(s, command));
  host->send(s, answer, (size_t)m);
  return (size_t)(end - data) + 1;
}

static void on_disconnected(iocphost_session_t *s, void *state,
                            iocphost_reason_t reason) {
  (void)s;
  (void)state;
  (void)reason;
}

static const iocphost_plugin_t plugin = {
    IOCPHOST_PLUGIN_HEADER,
    .name = "api_probe",
    .version = "1.0.0",
    .on_load = on_load,
    .on_connected = on_connected,
    .on_recv = on_recv,
    .on_disconnected = on_disconnected,
};

IOCPHOST_PLUGIN_ENTRY { return &plugin; }
