/*
 * `iocphost run`: the host's life from start to stop, the same on every
 * platform. What differs (how a stop, reload or log reopen is asked for,
 * whom the host tells how far it got) is behind run_platform.h:
 * run_posix.c and run_win.c.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "control.h"
#include "engine/log.h"
#include "host.h"
#include "run_platform.h"
#include "trust.h"
#include "version.h"

/* ---- reload: one entry for every trigger ---- */

/* The running host, for the triggers that arrive without a context (a
 * signal, the service manager): one host per process. */
static _Atomic(host_t *) running_host;
static const char *running_config_file; /* set before running_host */

/* Redeploys changed plugins (SPEC section 10); logs the outcome and
 * returns the reply (malloc'd). Safe from any thread: host_reload runs one
 * reload at a time. */
char *reload_now(const char *trigger, int dry_run) {
  host_t *host = atomic_load(&running_host);
  if (!host)
    return strdup("error: the host is not serving (starting or stopping); "
                  "nothing changed\n");
  char *reply = host_reload(host, running_config_file, dry_run);
  if (reply && !dry_run) {
    size_t line = strcspn(reply, "\n");
    log_write(strncmp(reply, "ok", 2) == 0 ? LOG_INFO : LOG_WARN, "host",
              "%s: reload %.*s", trigger, (int)line, reply);
  }
  return reply;
}

/* ---- stopping: one entry for every trigger ---- */

static atomic_int stop_announced;

/* Logs what stops the host, once: the first trigger is the one that
 * happened. A stop through the control endpoint reaches the main thread as
 * a SIGTERM on Linux, which must not be logged as a second, made-up cause.
 * Returns 1 for the first trigger, 0 for any later one. */
int announce_stop(const char *trigger) {
  if (atomic_exchange(&stop_announced, 1) != 0)
    return 0;
  log_write(LOG_INFO, "host", "%s: stopping gracefully", trigger);
  return 1;
}

/* A trigger from any thread: announce it (or say a stop is under way
 * already), then wake the main thread (stop_wake, per platform). */
void stop_request(const char *why) {
  if (!announce_stop(why))
    log_write(LOG_INFO, "host", "%s: already stopping", why);
  stop_wake();
}

/* ---- run ---- */

typedef struct run_state {
  host_t *host;
  uint64_t started_ms;
  /* Set (release) once host_start has returned. The endpoint opens before
   * host_start, and host_start builds the cores and services without the
   * host's lock, so status must not look at them before this is set
   * (acquire): a status during start-up read half-built state (a data race
   * ThreadSanitizer reports). */
  atomic_int serving;
} run_state_t;

/* "sessions [--service NAME] [--json]" and "kick ID"; NULL when the
 * request is none of them (then it is unknown). */
static char *handle_sessions(host_t *host, const char *request) {
  char words[CONTROL_REQUEST_MAX + 1];
  snprintf(words, sizeof words, "%s", request);
  char *word[5];
  int n = 0;
  for (char *p = words; *p;) {
    while (*p == ' ')
      *p++ = '\0';
    if (!*p)
      break;
    if (n == 5)
      return NULL; /* more words than any of these takes */
    word[n++] = p;
    while (*p && *p != ' ')
      p++;
  }
  if (n == 0)
    return NULL;
  if (strcmp(word[0], "kick") == 0) {
    char *end = NULL;
    unsigned long long id = n == 2 ? strtoull(word[1], &end, 10) : 0;
    if (n != 2 || word[1][0] < '0' || word[1][0] > '9' || *end != '\0' ||
        id == 0)
      return strdup("error: kick takes one session id (a number above 0, "
                    "as `iocphost sessions` lists them)\n");
    return host_kick(host, (uint64_t)id);
  }
  if (strcmp(word[0], "sessions") != 0)
    return NULL;
  const char *service = NULL;
  int json = 0;
  for (int i = 1; i < n; i++) {
    if (strcmp(word[i], "--json") == 0 && !json)
      json = 1;
    else if (strcmp(word[i], "--service") == 0 && !service && i + 1 < n)
      service = word[++i];
    else
      return NULL;
  }
  return host_sessions(host, service, json);
}

/* Runs on the control thread. */
static char *handle_control(void *ctx, const char *request, int *stop) {
  run_state_t *run = ctx;
  char *reply = NULL;
  if (strcmp(request, "status") == 0 || strcmp(request, "status --json") == 0) {
    if (!atomic_load_explicit(&run->serving, memory_order_acquire))
      return strdup("error: the host is still starting; ask again when it "
                    "is ready\n");
    return host_status(run->host, request[6] != '\0',
                       clock_now_ms() - run->started_ms);
  }
  if (strncmp(request, "sessions", 8) == 0 || strncmp(request, "kick ", 5) == 0) {
    if (!atomic_load_explicit(&run->serving, memory_order_acquire))
      return strdup("error: the host is still starting; ask again when it "
                    "is ready\n");
    char *answer = handle_sessions(run->host, request);
    if (answer)
      return answer;
  }
  if (strcmp(request, "stop") == 0) {
    *stop = 1;
    stop_request("stop requested through the control endpoint");
    return strdup("ok\nstopping\n");
  }
  if (strcmp(request, "reload") == 0)
    return reload_now("the control endpoint", 0);
  if (strcmp(request, "reload --dry-run") == 0)
    return reload_now("the control endpoint", 1);
  if (strcmp(request, "reopen-logs") == 0) {
    if (log_reopen() != 0) {
      char text[512], reply_text[600];
      snprintf(text, sizeof text,
               "cannot reopen the log file: %s; lines still go to the file "
               "that was open (check the folder's permissions)",
               strerror(errno));
      log_write(LOG_ERROR, "host", "%s", text);
      snprintf(reply_text, sizeof reply_text, "error: %s\n", text);
      return strdup(reply_text);
    }
    log_write(LOG_INFO, "host", "control endpoint: log file reopened");
    return strdup("ok\nlog reopened\n");
  }
  size_t len = strlen(request);
  reply = malloc(len + 160);
  if (reply) {
    /* Echo at most a printable prefix of what was sent. */
    char shown[41];
    size_t n = 0;
    for (size_t i = 0; i < len && n < sizeof shown - 1; i++)
      shown[n++] = (request[i] >= 32 && request[i] < 127) ? request[i] : '?';
    shown[n] = '\0';
    snprintf(reply, len + 160,
             "error: unknown request '%s'; requests are: status, status "
             "--json, stop, reload, reopen-logs, sessions [--service NAME] "
             "[--json], kick ID\n",
             shown);
  }
  return reply;
}

/* Where the log goes: log.file, or for a service (which has no console)
 * <runtime_dir>/iocphost.log. */
static int open_log(const config_t *config, const char *file, int service) {
  char fallback[4096];
  const char *path = config->log_file;
  if (!path && service && config->runtime_dir) {
    snprintf(fallback, sizeof fallback, "%s/iocphost.log", config->runtime_dir);
    path = fallback;
  }
  if (path && log_set_file(path) != 0) {
    char why[4200];
    snprintf(why, sizeof why, "%s: %s", path,
             errno == ELOOP ? "it is a symbolic link, which the host does "
                              "not follow (set log.file to the file itself)"
                            : strerror(errno));
    report_error("%s: cannot open the log file %s (set log.file to a "
                 "writable path)",
                 file, why);
    return -1;
  }
  return 0;
}

int cmd_run(const char *file, int service) {
  config_t *config;
  if (load_config(file, &config) != 0)
    return EXIT_INVALID;
  log_set_level(config->log_level);
  /* Before anything is put there: runtime_dir must be the host's own. */
  char reason[2048];
  if (config->runtime_dir &&
      trust_prepare_runtime_dir(config->runtime_dir, reason, sizeof reason) !=
          0) {
    report_error("%s: runtime_dir: %s", file, reason);
    config_free(config);
    return EXIT_RUNTIME;
  }
  if (open_log(config, file, service) != 0) {
    config_free(config);
    return EXIT_RUNTIME;
  }
  run_platform_prepare();
  if (stop_triggers_install() != 0) {
    log_write(LOG_ERROR, "host", "cannot set up the stop triggers");
    config_free(config);
    return EXIT_RUNTIME;
  }

  host_t *host;
  char err[2048];
  if (host_open(config, &host, err, sizeof err) != 0) {
    log_write(LOG_ERROR, "host", "%s: %s", file, err);
    stop_triggers_remove();
    config_free(config);
    return EXIT_INVALID;
  }
  /* The endpoint comes first: a second instance with the same name stops
   * here, before it binds anything. */
  run_state_t run = {.host = host, .started_ms = clock_now_ms()};
  atomic_init(&run.serving, 0);
  control_t *control = NULL;
  if (control_open(config->runtime_dir, config->name, handle_control, &run,
                   &control, err, sizeof err) != 0) {
    log_write(LOG_ERROR, "host", "%s: %s", file, err);
    host_close(host);
    stop_triggers_remove();
    config_free(config);
    return EXIT_RUNTIME;
  }
  int rc = host_start(host, err, sizeof err);
  if (rc != 0) {
    log_write(LOG_ERROR, "host", "%s: %s", file, err);
    control_close(control);
    host_close(host);
    stop_triggers_remove();
    config_free(config);
    return rc == -1 ? EXIT_INVALID : EXIT_RUNTIME;
  }
  running_config_file = file;
  atomic_store(&running_host, host);
  atomic_store_explicit(&run.serving, 1, memory_order_release);
  log_write(LOG_INFO, "host", "iocphost %s ready: %zu service(s) from %s",
            IOCPHOST_VERSION, config->service_count, file);
  run_ready();

  wait_for_stop();

  atomic_store(&running_host, NULL);
  run_stopping(config->drain_timeout_ms);
  host_stop(host);
  log_write(LOG_INFO, "host", "stopped");
  run_stopped();
  /* Last: clients waiting on "stop" learn the host is gone. */
  control_close(control);
  host_close(host);
  stop_triggers_remove();
  config_free(config);
  return EXIT_OK;
}
