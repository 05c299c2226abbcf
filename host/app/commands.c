/*
 * The commands that do not run the host: check, and the requests a running
 * instance answers through its control endpoint (status, reload, stop,
 * reopen-logs). Standard output carries the answer only; diagnostics go to
 * standard error (SPEC section 8).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "control.h"
#include "host.h"
#include "run_platform.h"

void report_error(const char *fmt, const char *a, const char *b) {
  char text[4096];
  snprintf(text, sizeof text, fmt, a, b);
  fprintf(stderr, "iocphost: %s\n", text);
  platform_report_error(text);
}

int load_config(const char *file, config_t **config) {
  char err[2048];
  if (config_load(file, config, err, sizeof err) != 0) {
    report_error("invalid config: %s%s", err, "");
    return -1;
  }
  return 0;
}

int cmd_check(const char *file) {
  config_t *config;
  if (load_config(file, &config) != 0)
    return EXIT_INVALID;
  host_t *host;
  char err[2048];
  if (host_open(config, &host, err, sizeof err) != 0) {
    fprintf(stderr, "iocphost: %s: %s\n", file, err);
    config_free(config);
    return EXIT_INVALID;
  }
  printf("%s: ok: %zu core(s), %zu plugin(s), %zu service(s)\n", file,
         config->core_count, config->plugin_count, config->service_count);
  host_close(host);
  /* If this config's instance is running, say what a reload would change;
   * a reload it would refuse fails the check like a refusal of our own. */
  control_reply_t reply;
  control_reply_init(&reply, NULL);
  char why[8192];
  int code = EXIT_OK;
  int rc = control_request(config->runtime_dir, config->name,
                           "reload --dry-run", 10000, &reply, why, sizeof why);
  if (rc == 0) {
    printf("a reload of the running instance would answer:\n%s",
           reply.text ? reply.text : "");
  } else if (rc > 0) {
    fprintf(stderr, "iocphost: %s: the running instance says: %s\n", file, why);
    code = EXIT_INVALID;
  } else {
    printf("(no running instance of this config)\n");
  }
  control_reply_free(&reply);
  config_free(config);
  return code;
}

/* Sends request to the instance of file's config; the answer to stdout, an
 * error to stderr as "iocphost: COMMAND: why". */
static int send_request(const char *file, const char *command,
                        const char *request) {
  /* Only the instance's identity: the host owns the rest of the file, and a
   * missing plugin must not keep an operator from stopping it. */
  config_t *config;
  char load_err[2048];
  if (config_load_identity(file, &config, load_err, sizeof load_err) != 0) {
    report_error("invalid config: %s%s", load_err, "");
    return EXIT_INVALID;
  }
  unsigned wait_ms = 10000;
  if (strcmp(command, "stop") == 0)
    wait_ms = config->drain_timeout_ms + 15000;
  /* The answer streams to stdout as it arrives; the protocol's status line
   * never does, and an error goes to stderr (SPEC section 8). */
  control_reply_t reply;
  control_reply_init(&reply, stdout);
  char err[8192];
  int rc = control_request(config->runtime_dir, config->name, request, wait_ms,
                           &reply, err, sizeof err);
  control_reply_free(&reply);
  config_free(config);
  if (rc != 0)
    fprintf(stderr, "iocphost: %s: %s\n", command, err);
  return rc == 0 ? EXIT_OK : rc > 0 ? EXIT_INVALID : EXIT_RUNTIME;
}

int cmd_control(const char *file, const char *command, int json, int dry_run) {
  char request[64];
  snprintf(request, sizeof request, "%s%s", command,
           json      ? " --json"
           : dry_run ? " --dry-run"
                     : "");
  return send_request(file, command, request);
}

int cmd_sessions(const char *file, const char *service, int json) {
  char request[CONTROL_REQUEST_MAX + 1];
  int n = snprintf(request, sizeof request, "sessions%s%s%s",
                   service ? " --service " : "", service ? service : "",
                   json ? " --json" : "");
  if (n < 0 || (size_t)n >= sizeof request || (service && strchr(service, ' ')))
    return usage_error("--service needs a service name as the config "
                       "gives it (no spaces, at most 200 bytes), not '%s'",
                       service);
  return send_request(file, "sessions", request);
}

int cmd_kick(const char *file, const char *id) {
  if (!id)
    return usage_error("kick needs a session id (`iocphost sessions` lists "
                       "them)%s",
                       "");
  char *end = NULL;
  unsigned long long value = strtoull(id, &end, 10);
  if (id[0] < '0' || id[0] > '9' || *end != '\0' || value == 0)
    return usage_error("kick needs a session id, a number above 0 as "
                       "`iocphost sessions` lists them, not '%s'",
                       id);
  char request[64];
  snprintf(request, sizeof request, "kick %llu", value);
  return send_request(file, "kick", request);
}

int cmd_service(const char *subcommand, const char *file, const char *name) {
  if (!subcommand ||
      (strcmp(subcommand, "install") != 0 &&
       strcmp(subcommand, "uninstall") != 0 &&
       strcmp(subcommand, "start") != 0 && strcmp(subcommand, "stop") != 0))
    return usage_error("service needs install, uninstall, start or stop%s", "");
  return platform_service_command(subcommand, file, name);
}
