/*
 * iocphost: the command line (SPEC section 8).
 *
 * Exit codes: 0 ok, 1 invalid config or plugin, 2 usage, 3 runtime failure.
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait, so no handler ever runs inside a worker's callback.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "engine/log.h"
#include "host.h"
#include "iocphost/plugin.h"
#include "notify.h"
#include "version.h"

#define DEFAULT_CONFIG "conf/iocphost.json"

enum { EXIT_OK = 0, EXIT_INVALID = 1, EXIT_USAGE = 2, EXIT_RUNTIME = 3 };

static void print_help(FILE *out) {
  fprintf(out,
          "iocphost %s - a plugin-hosting TCP server for game servers\n"
          "\n"
          "usage:\n"
          "  iocphost run     [-c FILE]            run in the foreground\n"
          "  iocphost check   [-c FILE]            validate the config, load "
          "and ABI-check every plugin\n"
          "  iocphost status  [-c FILE] [--json]   ask the running instance: "
          "services, sessions, plugins, counters\n"
          "  iocphost reload  [-c FILE]            redeploy changed plugins "
          "(not available yet)\n"
          "  iocphost stop    [-c FILE]            stop the running instance "
          "gracefully and wait for it\n"
          "  iocphost service install|uninstall|start|stop [-c FILE] [--name "
          "NAME] (not available yet)\n"
          "  iocphost --version | --help\n"
          "\n"
          "FILE defaults to %s. Exit codes: 0 ok, 1 invalid config or "
          "plugin,\n2 usage, 3 runtime failure (e.g. address in use).\n"
          "Plugin ABI %d.%d.\n",
          IOCPHOST_VERSION, DEFAULT_CONFIG, IOCPHOST_ABI_MAJOR,
          IOCPHOST_ABI_MINOR);
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "iocphost: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nRun 'iocphost --help' for usage.\n");
  return EXIT_USAGE;
}

static int mkdir_p(const char *path) {
  char buf[4096];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof buf)
    return -1;
  memcpy(buf, path, len + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
      *p = '/';
    }
  }
  if (mkdir(buf, 0700) != 0 && errno != EEXIST)
    return -1;
  return 0;
}

/* Game servers hold many sockets: take the whole hard limit. */
static void raise_descriptor_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int load_config(const char *file, config_t **config) {
  char err[2048];
  if (config_load(file, config, err, sizeof err) != 0) {
    fprintf(stderr, "iocphost: invalid config: %s\n", err);
    return -1;
  }
  return 0;
}

static int cmd_check(const char *file) {
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
  config_free(config);
  return EXIT_OK;
}

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
  if (strcmp(request, "stop") == 0) {
    *stop = 1;
    log_write(LOG_INFO, "host", "stop requested through the control endpoint");
    kill(getpid(), SIGTERM); /* the main thread takes it in sigwait */
    return strdup("ok\nstopping\n");
  }
  if (strcmp(request, "reload") == 0)
    return strdup("error: reload is not available yet in this version; "
                  "nothing changed\n");
  if (strcmp(request, "reopen-logs") == 0) {
    log_reopen();
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
             "--json, stop, reload, reopen-logs\n",
             shown);
  }
  return reply;
}

static int cmd_run(const char *file) {
  config_t *config;
  if (load_config(file, &config) != 0)
    return EXIT_INVALID;
  log_set_level(config->log_level);
  if (config->log_file && log_set_file(config->log_file) != 0) {
    fprintf(stderr, "iocphost: %s: log.file: cannot open %s: %s\n", file,
            config->log_file, strerror(errno));
    config_free(config);
    return EXIT_RUNTIME;
  }
  if (config->runtime_dir && mkdir_p(config->runtime_dir) != 0) {
    log_write(LOG_ERROR, "host",
              "%s: runtime_dir: cannot create %s: %s (create it or point "
              "runtime_dir at a writable folder)",
              file, config->runtime_dir, strerror(errno));
    config_free(config);
    return EXIT_RUNTIME;
  }
  raise_descriptor_limit();

  /* Block the signals we wait for before any worker thread exists, so every
   * thread inherits the mask. */
  sigset_t waited;
  sigemptyset(&waited);
  sigaddset(&waited, SIGTERM);
  sigaddset(&waited, SIGINT);
  sigaddset(&waited, SIGHUP);
  sigaddset(&waited, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &waited, NULL);
  signal(SIGPIPE, SIG_IGN);

  host_t *host;
  char err[2048];
  if (host_open(config, &host, err, sizeof err) != 0) {
    log_write(LOG_ERROR, "host", "%s: %s", file, err);
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
    config_free(config);
    return EXIT_RUNTIME;
  }
  int rc = host_start(host, err, sizeof err);
  if (rc != 0) {
    log_write(LOG_ERROR, "host", "%s: %s", file, err);
    control_close(control);
    host_close(host);
    config_free(config);
    return rc == -1 ? EXIT_INVALID : EXIT_RUNTIME;
  }
  atomic_store_explicit(&run.serving, 1, memory_order_release);
  log_write(LOG_INFO, "host", "iocphost %s ready: %zu service(s) from %s",
            IOCPHOST_VERSION, config->service_count, file);
  notify_send("READY=1\nSTATUS=serving");

  uint64_t watchdog_ms = notify_watchdog_ms() / 2;
  uint64_t next_ping = clock_now_ms() + watchdog_ms;
  for (;;) {
    int sig;
    if (watchdog_ms) {
      /* Pings go by the clock, not by "no signal for a while": a wait
       * restarted by every signal let a stream of signals (log rotation,
       * reloads) starve the watchdog until systemd killed the host. */
      uint64_t now = clock_now_ms();
      if (now >= next_ping) {
        notify_send("WATCHDOG=1");
        next_ping = now + watchdog_ms;
      }
      uint64_t left = next_ping - now;
      struct timespec wait = {.tv_sec = (time_t)(left / 1000),
                              .tv_nsec = (long)(left % 1000) * 1000000L};
      sig = sigtimedwait(&waited, NULL, &wait);
      if (sig < 0)
        continue;
    } else if (sigwait(&waited, &sig) != 0) {
      continue;
    }
    if (sig == SIGHUP) {
      /* MONOTONIC_USEC lets systemd (253+, Type=notify-reload) tell this
       * reload from an earlier one; older versions ignore it. */
      struct timespec mono;
      clock_gettime(CLOCK_MONOTONIC, &mono);
      char reloading[96];
      snprintf(reloading, sizeof reloading,
               "RELOADING=1\nMONOTONIC_USEC=%llu",
               (unsigned long long)mono.tv_sec * 1000000ULL +
                   (unsigned long long)mono.tv_nsec / 1000ULL);
      notify_send(reloading);
      log_write(LOG_WARN, "host",
                "SIGHUP: reload is not available yet in this version; "
                "nothing changed");
      notify_send("READY=1");
      continue;
    }
    if (sig == SIGUSR1) {
      log_reopen();
      log_write(LOG_INFO, "host", "SIGUSR1: log file reopened");
      continue;
    }
    log_write(LOG_INFO, "host", "%s: stopping gracefully",
              sig == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }
  notify_send("STOPPING=1\nSTATUS=draining sessions");
  host_stop(host);
  log_write(LOG_INFO, "host", "stopped");
  /* Last: clients waiting on "stop" learn the host is gone. */
  control_close(control);
  host_close(host);
  config_free(config);
  return EXIT_OK;
}

static int cmd_control(const char *file, const char *command, int json) {
  config_t *config;
  if (load_config(file, &config) != 0)
    return EXIT_INVALID;
  char request[64];
  snprintf(request, sizeof request, "%s%s", command,
           json && strcmp(command, "status") == 0 ? " --json" : "");
  unsigned wait_ms = 10000;
  if (strcmp(command, "stop") == 0)
    wait_ms = config->drain_timeout_ms + 15000;
  char err[1024];
  int rc = control_request(config->runtime_dir, config->name, request,
                           wait_ms, err, sizeof err);
  config_free(config);
  if (rc < 0) {
    fprintf(stderr, "iocphost: %s: %s\n", command, err);
    return EXIT_RUNTIME;
  }
  return rc == 0 ? EXIT_OK : EXIT_INVALID;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_help(stderr);
    return EXIT_USAGE;
  }
  const char *command = argv[1];
  if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
      strcmp(command, "help") == 0) {
    print_help(stdout);
    return EXIT_OK;
  }
  if (strcmp(command, "--version") == 0 || strcmp(command, "version") == 0) {
    printf("iocphost %s (plugin ABI %d.%d)\n", IOCPHOST_VERSION,
           IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR);
    return EXIT_OK;
  }
  const char *file = DEFAULT_CONFIG;
  int json = 0;
  int first_option = 2;
  if (strcmp(command, "service") == 0)
    first_option = 3;
  for (int i = first_option; i < argc; i++) {
    if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
      if (i + 1 >= argc)
        return usage_error("%s needs a file name", argv[i]);
      file = argv[++i];
    } else if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
      i++;
    } else {
      return usage_error("unknown option '%s'", argv[i]);
    }
  }
  (void)json;
  if (strcmp(command, "run") == 0)
    return cmd_run(file);
  if (strcmp(command, "check") == 0)
    return cmd_check(file);
  if (strcmp(command, "status") == 0 || strcmp(command, "reload") == 0 ||
      strcmp(command, "stop") == 0)
    return cmd_control(file, command, json);
  if (strcmp(command, "service") == 0) {
    fprintf(stderr,
            "iocphost: '%s' is not available yet in this version (Windows "
            "services come with the Windows build); on Linux use the "
            "systemd unit conf/iocphost.service\n",
            command);
    return EXIT_USAGE;
  }
  return usage_error("unknown command '%s'", command);
}
