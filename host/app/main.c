/*
 * iocphost: the command line (SPEC section 8).
 *
 * Exit codes: 0 ok, 1 invalid config or plugin, 2 usage, 3 runtime failure.
 *
 * How a running host learns to stop depends on the platform, and is kept in
 * one place per platform (the "stop triggers" sections below):
 *  - Linux: signals are blocked in every thread and taken by the main thread
 *    with sigwait, so no handler ever runs inside a worker's callback.
 *    SIGTERM/SIGINT stop, SIGHUP would reload, SIGUSR1 reopens the log.
 *  - Windows: every trigger (Ctrl+C, Ctrl+Break, closing the console, logoff
 *    and shutdown; the control pipe's "stop"; the service manager's stop and
 *    shutdown controls) sets one event the main thread waits on.
 * Either way the stop itself is the same graceful host_stop (SPEC section 9).
 *
 * On Windows the host can also run as a service (`service install` writes
 * "run -c <config> --service --name <name>" as its command line); then the
 * service manager hears START_PENDING, RUNNING once every listener accepts,
 * STOP_PENDING with a rising checkpoint while sessions drain, and STOPPED
 * with the exit code.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#include <direct.h>
#include <wchar.h>
#else
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

#include "config.h"
#include "control.h"
#include "engine/log.h"
#include "host.h"
#include "iocphost/plugin.h"
#include "notify.h"
#include "trust.h"
#include "version.h"

#define DEFAULT_CONFIG "conf/iocphost.json"

enum { EXIT_OK = 0, EXIT_INVALID = 1, EXIT_USAGE = 2, EXIT_RUNTIME = 3 };

/* What the command line asked for. */
typedef struct options {
  const char *command;
  const char *subcommand; /* service install|uninstall|start|stop */
  const char *file;
  const char *name; /* --name: the Windows service's name */
  int json;
  int dry_run; /* reload --dry-run: say what a reload would do */
  int service; /* run --service: started by the Windows service manager */
} options_t;

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
          "  iocphost reload  [-c FILE] [--dry-run]  redeploy changed "
          "plugins and settings\n"
          "                                        (--dry-run: check them and "
          "say what would change)\n"
          "  iocphost reopen-logs [-c FILE]        reopen log.file after a "
          "rotation renamed it\n"
          "  iocphost stop    [-c FILE]            stop the running instance "
          "gracefully and wait for it\n"
          "  iocphost service install|uninstall|start|stop [-c FILE] [--name "
          "NAME]\n"
          "                                        a Windows service "
          "(default NAME: the config's \"name\");\n"
          "                                        on Linux use systemd "
          "(conf/iocphost.service)\n"
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

/* ---- small platform helpers ---- */

#ifndef _WIN32
/* Game servers hold many sockets: take the whole hard limit. (Windows has
 * no per-process socket limit to raise.) */
static void raise_descriptor_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}
#endif

/* ---- where messages go before the log is set up ---- */

#ifdef _WIN32
static int running_as_service; /* no console: see report_error */
static void service_event_log(const char *text);
#endif

/* An error at start-up, before (or instead of) the log: stderr, and for a
 * Windows service, which has no console, also the event log. */
static void report_error(const char *fmt, const char *a, const char *b) {
  char text[4096];
  snprintf(text, sizeof text, fmt, a, b);
  fprintf(stderr, "iocphost: %s\n", text);
#ifdef _WIN32
  if (running_as_service)
    service_event_log(text);
#endif
}

static int load_config(const char *file, config_t **config) {
  char err[2048];
  if (config_load(file, config, err, sizeof err) != 0) {
    report_error("invalid config: %s%s", err, "");
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

/* ---- reload: one entry for every trigger ---- */

/* The running host, for the triggers that arrive without a context (a
 * signal, the service manager): one host per process. */
static _Atomic(host_t *) running_host;
static const char *running_config_file; /* set before running_host */

/* Redeploys changed plugins (SPEC section 10); logs the outcome and
 * returns the reply (malloc'd). Safe from any thread: host_reload runs one
 * reload at a time. */
static char *reload_now(const char *trigger, int dry_run) {
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

/* ---- stop triggers: the platform part of `run` ---- */

static atomic_int stop_announced;

/* Logs what stops the host, once: the first trigger is the one that
 * happened. A stop through the control endpoint reaches the main thread as
 * a SIGTERM on Linux, which must not be logged as a second, made-up cause.
 * Returns 1 for the first trigger, 0 for any later one. */
static int announce_stop(const char *trigger) {
  if (atomic_exchange(&stop_announced, 1) != 0)
    return 0;
  log_write(LOG_INFO, "host", "%s: stopping gracefully", trigger);
  return 1;
}

/* A trigger from any thread: announce it (or say a stop is under way
 * already), then wake the main thread (stop_wake, per platform). */
static void stop_wake(void);
static void stop_request(const char *why) {
  if (!announce_stop(why))
    log_write(LOG_INFO, "host", "%s: already stopping", why);
  stop_wake();
}

/* Each platform provides:
 *  stop_triggers_install  before any thread exists (masks, handlers);
 *  stop_wake              from any thread: wake the main thread to stop;
 *  ready                  every listener accepts;
 *  wait_for_stop          blocks until a stop is asked for;
 *  stopping / stopped     around the graceful stop (progress reports). */

#ifdef _WIN32

/* The service manager's view of us, when we run as a service. */
typedef struct service_state {
  SRWLOCK lock;
  SERVICE_STATUS_HANDLE handle;
  SERVICE_STATUS status;
  wchar_t name[256];
  HANDLE progress_thread; /* reports STOP_PENDING while draining */
  HANDLE progress_done;
  uint32_t drain_timeout_ms;
} service_state_t;

static service_state_t service_state = {.lock = SRWLOCK_INIT};
static HANDLE stop_event;    /* set: stop now */
static HANDLE stopped_event; /* set: the graceful stop has finished */

static void service_report(DWORD state, DWORD exit_code, DWORD wait_hint);

static void stop_wake(void) {
  if (stop_event)
    SetEvent(stop_event);
}

static BOOL WINAPI console_handler(DWORD type) {
  if (running_as_service) {
    /* A service hears logoff and shutdown here as well; the service
     * manager's SHUTDOWN control is what stops it. */
    return TRUE;
  }
  switch (type) {
  case CTRL_C_EVENT:
    stop_request("Ctrl+C");
    return TRUE;
  case CTRL_BREAK_EVENT:
    stop_request("Ctrl+Break");
    return TRUE;
  case CTRL_CLOSE_EVENT:
  case CTRL_LOGOFF_EVENT:
  case CTRL_SHUTDOWN_EVENT:
    /* The process ends as soon as this handler returns: stop here, within
     * the time the system gives (a few seconds for a closed console). */
    stop_request(type == CTRL_CLOSE_EVENT    ? "console closed"
                 : type == CTRL_LOGOFF_EVENT ? "user logoff"
                                             : "system shutdown");
    WaitForSingleObject(stopped_event, INFINITE);
    return TRUE;
  default:
    return FALSE;
  }
}

static int stop_triggers_install(void) {
  stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
  stopped_event = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (!stop_event || !stopped_event)
    return -1;
  SetConsoleCtrlHandler(console_handler, TRUE);
  return 0;
}

static void stop_triggers_remove(void) {
  SetEvent(stopped_event); /* a console handler waiting may return now */
}

static void ready(void) {
  if (running_as_service)
    service_report(SERVICE_RUNNING, NO_ERROR, 0);
}

static void wait_for_stop(void) { WaitForSingleObject(stop_event, INFINITE); }

static DWORD WINAPI stop_progress_main(void *arg) {
  (void)arg;
  uint64_t end = clock_now_ms() + service_state.drain_timeout_ms;
  /* A rising checkpoint every second; the hint covers what is left of the
   * drain plus the unloading after it. */
  while (WaitForSingleObject(service_state.progress_done, 1000) ==
         WAIT_TIMEOUT) {
    uint64_t now = clock_now_ms();
    DWORD left = now < end ? (DWORD)(end - now) : 0;
    service_report(SERVICE_STOP_PENDING, NO_ERROR, left + 5000);
  }
  return 0;
}

static void stopping(uint32_t drain_timeout_ms) {
  if (!running_as_service)
    return;
  service_state.drain_timeout_ms = drain_timeout_ms;
  service_report(SERVICE_STOP_PENDING, NO_ERROR, drain_timeout_ms + 5000);
  service_state.progress_done = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (service_state.progress_done)
    service_state.progress_thread =
        CreateThread(NULL, 0, stop_progress_main, NULL, 0, NULL);
}

static void stopped(void) {
  if (service_state.progress_thread) {
    SetEvent(service_state.progress_done);
    WaitForSingleObject(service_state.progress_thread, INFINITE);
    CloseHandle(service_state.progress_thread);
    service_state.progress_thread = NULL;
  }
  if (service_state.progress_done) {
    CloseHandle(service_state.progress_done);
    service_state.progress_done = NULL;
  }
}

#else /* POSIX */

static sigset_t waited_signals;

static void stop_wake(void) {
  kill(getpid(), SIGTERM); /* the main thread takes it in sigwait */
}

static int stop_triggers_install(void) {
  /* Block the signals we wait for before any worker thread exists, so every
   * thread inherits the mask. */
  sigemptyset(&waited_signals);
  sigaddset(&waited_signals, SIGTERM);
  sigaddset(&waited_signals, SIGINT);
  sigaddset(&waited_signals, SIGHUP);
  sigaddset(&waited_signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &waited_signals, NULL);
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

static void stop_triggers_remove(void) {}

static void ready(void) { notify_send("READY=1\nSTATUS=serving"); }

static void wait_for_stop(void) {
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
      sig = sigtimedwait(&waited_signals, NULL, &wait);
      if (sig < 0)
        continue;
    } else if (sigwait(&waited_signals, &sig) != 0) {
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
      free(reload_now("SIGHUP", 0));
      notify_send("READY=1");
      continue;
    }
    if (sig == SIGUSR1) {
      log_reopen();
      log_write(LOG_INFO, "host", "SIGUSR1: log file reopened");
      continue;
    }
    announce_stop(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    return;
  }
}

static void stopping(uint32_t drain_timeout_ms) {
  (void)drain_timeout_ms;
  notify_send("STOPPING=1\nSTATUS=draining sessions");
}

static void stopped(void) {}

#endif /* platform stop triggers */

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
             "--json, stop, reload, reopen-logs\n",
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
    snprintf(fallback, sizeof fallback, "%s/iocphost.log",
             config->runtime_dir);
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

static int cmd_run(const char *file, int service) {
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
#ifndef _WIN32
  raise_descriptor_limit();
#endif
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
  ready();

  wait_for_stop();

  atomic_store(&running_host, NULL);
  stopping(config->drain_timeout_ms);
  host_stop(host);
  log_write(LOG_INFO, "host", "stopped");
  stopped();
  /* Last: clients waiting on "stop" learn the host is gone. */
  control_close(control);
  host_close(host);
  stop_triggers_remove();
  config_free(config);
  return EXIT_OK;
}

static int cmd_control(const char *file, const char *command, int json,
                       int dry_run) {
  /* Only the instance's identity: the host owns the rest of the file, and a
   * missing plugin must not keep an operator from stopping it. */
  config_t *config;
  char load_err[2048];
  if (config_load_identity(file, &config, load_err, sizeof load_err) != 0) {
    report_error("invalid config: %s%s", load_err, "");
    return EXIT_INVALID;
  }
  char request[64];
  snprintf(request, sizeof request, "%s%s", command,
           json      ? " --json"
           : dry_run ? " --dry-run"
                     : "");
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

/* ---- the Windows service ---- */

#ifdef _WIN32

#define SERVICE_NAME_MAX 256

static void service_event_log(const char *text) {
  wchar_t wide[4096];
  if (MultiByteToWideChar(CP_UTF8, 0, text, -1, wide,
                          (int)(sizeof wide / sizeof wide[0])) <= 0)
    return;
  HANDLE source = RegisterEventSourceW(
      NULL, service_state.name[0] ? service_state.name : L"iocphost");
  if (!source)
    return;
  const wchar_t *strings[1] = {wide};
  ReportEventW(source, EVENTLOG_ERROR_TYPE, 0, 1, NULL, 1, 0, strings, NULL);
  DeregisterEventSource(source);
}

static void service_report(DWORD state, DWORD exit_code, DWORD wait_hint) {
  AcquireSRWLockExclusive(&service_state.lock);
  SERVICE_STATUS *st = &service_state.status;
  if (!service_state.handle || st->dwCurrentState == SERVICE_STOPPED) {
    ReleaseSRWLockExclusive(&service_state.lock);
    return;
  }
  int pending = state == SERVICE_START_PENDING ||
                state == SERVICE_STOP_PENDING;
  st->dwServiceType = SERVICE_WIN32_OWN_PROCESS;
  /* The checkpoint rises while the same pending state goes on. */
  st->dwCheckPoint =
      pending ? (st->dwCurrentState == state ? st->dwCheckPoint + 1 : 1) : 0;
  st->dwCurrentState = state;
  st->dwWaitHint = pending ? wait_hint : 0;
  st->dwControlsAccepted =
      state == SERVICE_RUNNING
          ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN |
                SERVICE_ACCEPT_PARAMCHANGE
          : 0;
  if (state == SERVICE_STOPPED && exit_code != 0) {
    /* Our own exit codes (1 invalid config, 3 runtime failure). A non-zero
     * code is a failure the recovery actions act on. */
    st->dwWin32ExitCode = ERROR_SERVICE_SPECIFIC_ERROR;
    st->dwServiceSpecificExitCode = exit_code;
  } else {
    st->dwWin32ExitCode = NO_ERROR;
    st->dwServiceSpecificExitCode = 0;
  }
  SetServiceStatus(service_state.handle, st);
  ReleaseSRWLockExclusive(&service_state.lock);
}

static DWORD WINAPI service_control(DWORD control, DWORD type, void *data,
                                    void *ctx) {
  (void)type;
  (void)data;
  (void)ctx;
  switch (control) {
  case SERVICE_CONTROL_STOP:
  case SERVICE_CONTROL_SHUTDOWN:
    service_report(SERVICE_STOP_PENDING, NO_ERROR, 10000);
    stop_request(control == SERVICE_CONTROL_STOP
                     ? "the service manager asked to stop"
                     : "the system is shutting down");
    return NO_ERROR;
  case SERVICE_CONTROL_PARAMCHANGE:
    free(reload_now("the service manager (param change)", 0));
    return NO_ERROR;
  case SERVICE_CONTROL_INTERROGATE:
    return NO_ERROR;
  default:
    return ERROR_CALL_NOT_IMPLEMENTED;
  }
}

static const char *service_config_file;

static void WINAPI service_main(DWORD argc, wchar_t **argv) {
  (void)argc;
  (void)argv;
  service_state.handle = RegisterServiceCtrlHandlerExW(
      service_state.name, service_control, NULL);
  if (!service_state.handle)
    return;
  service_report(SERVICE_START_PENDING, NO_ERROR, 30000);
  int code = cmd_run(service_config_file, 1);
  service_report(SERVICE_STOPPED, (DWORD)code, 0);
}

/* `run --service`: the service manager started us. */
static int run_as_service(const char *file, const char *name) {
  running_as_service = 1;
  service_config_file = file;
  if (MultiByteToWideChar(CP_UTF8, 0, name, -1, service_state.name,
                          SERVICE_NAME_MAX) <= 0)
    return usage_error("the service name '%s' is not valid", name);
  /* The service manager starts us in System32: work from the config's
   * folder instead, so that drive-relative paths (\games\plugins, or
   * /games/plugins) mean what they meant when the config was written. */
  wchar_t wfile[4096], folder[4096];
  wchar_t *base = NULL;
  if (MultiByteToWideChar(CP_UTF8, 0, file, -1, wfile, 4096) > 0 &&
      GetFullPathNameW(wfile, 4096, folder, &base) > 0 && base) {
    *base = L'\0';
    SetCurrentDirectoryW(folder);
  }
  SERVICE_TABLE_ENTRYW table[] = {{service_state.name, service_main},
                                  {NULL, NULL}};
  if (!StartServiceCtrlDispatcherW(table)) {
    DWORD e = GetLastError();
    running_as_service = 0;
    if (e == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
      fprintf(stderr,
              "iocphost: --service is for the service manager; run "
              "'iocphost service start --name %s' (or 'iocphost run' in a "
              "console)\n",
              name);
    else
      fprintf(stderr, "iocphost: cannot reach the service manager (error "
                      "%lu)\n",
              (unsigned long)e);
    return EXIT_RUNTIME;
  }
  return EXIT_OK;
}

static void print_system_error(const char *what, DWORD code) {
  char text[512] = "";
  DWORD n = FormatMessageA(
      FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code,
      0, text, sizeof text, NULL);
  while (n > 0 && (text[n - 1] == '\r' || text[n - 1] == '\n' ||
                   text[n - 1] == ' ' || text[n - 1] == '.'))
    text[--n] = '\0';
  fprintf(stderr, "iocphost: %s: %s (error %lu)\n", what,
          n ? text : "system error", (unsigned long)code);
}

static int to_wide(const char *text, wchar_t *out, size_t out_len) {
  return MultiByteToWideChar(CP_UTF8, 0, text, -1, out, (int)out_len) > 0 ? 0
                                                                         : -1;
}

/* Polls the service until it leaves pending_state; returns its status. */
static int service_wait(SC_HANDLE svc, DWORD pending_state, DWORD timeout_ms,
                        SERVICE_STATUS_PROCESS *st) {
  uint64_t deadline = clock_now_ms() + timeout_ms;
  for (;;) {
    DWORD got = 0;
    if (!QueryServiceStatusEx(svc, SC_STATUS_PROCESS_INFO, (BYTE *)st,
                              sizeof *st, &got))
      return -1;
    if (st->dwCurrentState != pending_state)
      return 0;
    if (clock_now_ms() >= deadline)
      return 1;
    Sleep(100);
  }
}

static void print_stopped_code(const char *name,
                               const SERVICE_STATUS_PROCESS *st) {
  if (st->dwWin32ExitCode == ERROR_SERVICE_SPECIFIC_ERROR)
    fprintf(stderr,
            "iocphost: service %s stopped with exit code %lu (1 invalid "
            "config or plugin, 3 runtime failure); see its log\n",
            name, (unsigned long)st->dwServiceSpecificExitCode);
  else if (st->dwWin32ExitCode != NO_ERROR)
    print_system_error("the service stopped", st->dwWin32ExitCode);
}

static int service_install(const char *name, const config_t *config) {
  wchar_t exe[MAX_PATH + 1], wname[SERVICE_NAME_MAX], wconfig[4096],
      wfull[4096], command[8192], display[SERVICE_NAME_MAX + 16],
      description[512];
  DWORD n = GetModuleFileNameW(NULL, exe, MAX_PATH + 1);
  if (n == 0 || n > MAX_PATH) {
    print_system_error("cannot find this program's path", GetLastError());
    return EXIT_RUNTIME;
  }
  if (to_wide(name, wname, SERVICE_NAME_MAX) != 0 ||
      to_wide(config->file, wconfig, sizeof wconfig / sizeof wconfig[0]) !=
          0 ||
      GetFullPathNameW(wconfig, sizeof wfull / sizeof wfull[0], wfull, NULL) ==
          0) {
    fprintf(stderr, "iocphost: the service name or config path is not "
                    "valid\n");
    return EXIT_USAGE;
  }
  _snwprintf(command, sizeof command / sizeof command[0],
             L"\"%ls\" run -c \"%ls\" --service --name \"%ls\"", exe, wfull,
             wname);
  command[sizeof command / sizeof command[0] - 1] = L'\0';
  _snwprintf(display, sizeof display / sizeof display[0], L"iocphost %ls",
             wname);
  display[sizeof display / sizeof display[0] - 1] = L'\0';
  SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CREATE_SERVICE);
  if (!scm) {
    print_system_error("cannot open the service manager (run as an "
                       "administrator)",
                       GetLastError());
    return EXIT_RUNTIME;
  }
  SC_HANDLE svc = CreateServiceW(
      scm, wname, display, SERVICE_ALL_ACCESS, SERVICE_WIN32_OWN_PROCESS,
      SERVICE_AUTO_START, SERVICE_ERROR_NORMAL, command, NULL, NULL, NULL,
      NULL, NULL);
  if (!svc) {
    DWORD e = GetLastError();
    CloseServiceHandle(scm);
    if (e == ERROR_SERVICE_EXISTS) {
      fprintf(stderr,
              "iocphost: a service named %s exists already (uninstall it "
              "first, or choose another --name)\n",
              name);
      return EXIT_RUNTIME;
    }
    print_system_error("cannot create the service", e);
    return EXIT_RUNTIME;
  }
  _snwprintf(description, sizeof description / sizeof description[0],
             L"iocphost game server host (config %ls)", wfull);
  description[sizeof description / sizeof description[0] - 1] = L'\0';
  SERVICE_DESCRIPTIONW desc = {description};
  ChangeServiceConfig2W(svc, SERVICE_CONFIG_DESCRIPTION, &desc);
  /* Recovery: restart after 5 s, 10 s, then every 30 s; the count resets
   * after a day without failures. Failures include stopping with an error
   * code, not only crashing. */
  SC_ACTION actions[3] = {{SC_ACTION_RESTART, 5000},
                          {SC_ACTION_RESTART, 10000},
                          {SC_ACTION_RESTART, 30000}};
  SERVICE_FAILURE_ACTIONSW failure = {0};
  failure.dwResetPeriod = 24 * 60 * 60;
  failure.cActions = 3;
  failure.lpsaActions = actions;
  SERVICE_FAILURE_ACTIONS_FLAG on_error = {TRUE};
  if (!ChangeServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS, &failure))
    print_system_error("warning: the service is installed, but its recovery "
                       "actions (restart on failure) could not be set",
                       GetLastError());
  else if (!ChangeServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG,
                                  &on_error))
    /* Windows Vista and later have it; Wine does not. */
    print_system_error("note: the service restarts when it crashes, but the "
                       "service manager cannot be told to restart it when "
                       "it stops with an error code too",
                       GetLastError());
  CloseServiceHandle(svc);
  CloseServiceHandle(scm);
  printf("service %s installed (automatic start; restart on failure)\n"
         "  command: %ls\n"
         "  start it now with: iocphost service start --name %s\n",
         name, command, name);
  return EXIT_OK;
}

static SC_HANDLE open_service(const char *name, DWORD access,
                              SC_HANDLE *scm_out) {
  wchar_t wname[SERVICE_NAME_MAX];
  *scm_out = NULL;
  if (to_wide(name, wname, SERVICE_NAME_MAX) != 0) {
    fprintf(stderr, "iocphost: the service name '%s' is not valid\n", name);
    return NULL;
  }
  SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
  if (!scm) {
    print_system_error("cannot open the service manager", GetLastError());
    return NULL;
  }
  SC_HANDLE svc = OpenServiceW(scm, wname, access);
  if (!svc) {
    DWORD e = GetLastError();
    CloseServiceHandle(scm);
    if (e == ERROR_SERVICE_DOES_NOT_EXIST)
      fprintf(stderr,
              "iocphost: no service named %s is installed (iocphost service "
              "install -c FILE --name %s)\n",
              name, name);
    else
      print_system_error("cannot open the service", e);
    return NULL;
  }
  *scm_out = scm;
  return svc;
}

/* Asks a running service to stop and waits until it has. */
static int stop_and_wait(const char *name, SC_HANDLE svc, DWORD wait_ms) {
  SERVICE_STATUS_PROCESS st;
  SERVICE_STATUS plain;
  if (!ControlService(svc, SERVICE_CONTROL_STOP, &plain)) {
    DWORD e = GetLastError();
    if (e == ERROR_SERVICE_NOT_ACTIVE)
      return EXIT_OK;
    print_system_error("cannot stop the service", e);
    return EXIT_RUNTIME;
  }
  int rc = service_wait(svc, SERVICE_STOP_PENDING, wait_ms, &st);
  if (rc == 0 && st.dwCurrentState == SERVICE_RUNNING)
    rc = service_wait(svc, SERVICE_RUNNING, 5000, &st) == 0 &&
                 st.dwCurrentState == SERVICE_STOP_PENDING
             ? service_wait(svc, SERVICE_STOP_PENDING, wait_ms, &st)
             : rc;
  if (rc != 0 || st.dwCurrentState != SERVICE_STOPPED) {
    fprintf(stderr, "iocphost: service %s did not stop within %lu ms\n",
            name, (unsigned long)wait_ms);
    return EXIT_RUNTIME;
  }
  print_stopped_code(name, &st);
  printf("service %s stopped\n", name);
  return EXIT_OK;
}

static int service_command(const char *sub, const char *name,
                           const config_t *config) {
  if (strcmp(sub, "install") == 0)
    return service_install(name, config);
  DWORD wait_ms = config->drain_timeout_ms + 30000;
  SC_HANDLE scm;
  SC_HANDLE svc = open_service(
      name, SERVICE_START | SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE,
      &scm);
  if (!svc)
    return EXIT_RUNTIME;
  int code = EXIT_OK;
  SERVICE_STATUS_PROCESS st;
  if (strcmp(sub, "start") == 0) {
    if (!StartServiceW(svc, 0, NULL)) {
      DWORD e = GetLastError();
      if (e == ERROR_SERVICE_ALREADY_RUNNING) {
        printf("service %s is already running\n", name);
      } else {
        print_system_error("cannot start the service", e);
        /* It may have started and stopped at once (a bad config): then the
         * service manager holds our exit code, which says more. */
        DWORD got;
        if (QueryServiceStatusEx(svc, SC_STATUS_PROCESS_INFO, (BYTE *)&st,
                                 sizeof st, &got) &&
            st.dwCurrentState == SERVICE_STOPPED)
          print_stopped_code(name, &st);
        code = EXIT_RUNTIME;
      }
    } else if (service_wait(svc, SERVICE_START_PENDING, 60000, &st) != 0 ||
               st.dwCurrentState != SERVICE_RUNNING) {
      fprintf(stderr, "iocphost: service %s did not reach RUNNING (state "
                      "%lu)\n",
              name, (unsigned long)st.dwCurrentState);
      if (st.dwCurrentState == SERVICE_STOPPED)
        print_stopped_code(name, &st);
      code = EXIT_RUNTIME;
    } else {
      printf("service %s running (process %lu)\n", name,
             (unsigned long)st.dwProcessId);
    }
  } else if (strcmp(sub, "stop") == 0) {
    code = stop_and_wait(name, svc, wait_ms);
  } else { /* uninstall: stop first, so nothing keeps running unmanaged */
    DWORD got;
    if (QueryServiceStatusEx(svc, SC_STATUS_PROCESS_INFO, (BYTE *)&st,
                             sizeof st, &got) &&
        st.dwCurrentState != SERVICE_STOPPED)
      code = stop_and_wait(name, svc, wait_ms);
    if (code == EXIT_OK) {
      if (DeleteService(svc)) {
        printf("service %s uninstalled\n", name);
      } else {
        print_system_error("cannot remove the service", GetLastError());
        code = EXIT_RUNTIME;
      }
    }
  }
  CloseServiceHandle(svc);
  CloseServiceHandle(scm);
  return code;
}

#endif /* _WIN32: the service */

static int cmd_service(const options_t *o) {
  if (!o->subcommand ||
      (strcmp(o->subcommand, "install") != 0 &&
       strcmp(o->subcommand, "uninstall") != 0 &&
       strcmp(o->subcommand, "start") != 0 &&
       strcmp(o->subcommand, "stop") != 0))
    return usage_error("service needs install, uninstall, start or stop%s",
                       "");
#ifdef _WIN32
  config_t *config;
  if (load_config(o->file, &config) != 0)
    return EXIT_INVALID;
  int code = service_command(o->subcommand, o->name ? o->name : config->name,
                             config);
  config_free(config);
  return code;
#else
  fprintf(stderr,
          "iocphost: 'service %s' is not available on this platform "
          "(Windows services only); on Linux use systemd with the unit "
          "conf/iocphost.service\n",
          o->subcommand);
  return EXIT_USAGE;
#endif
}

/* ---- main ---- */

static int parse_options(int argc, char **argv, options_t *o) {
  memset(o, 0, sizeof *o);
  o->command = argv[1];
  o->file = DEFAULT_CONFIG;
  int i = 2;
  if (strcmp(o->command, "service") == 0 && argc > 2 && argv[2][0] != '-')
    o->subcommand = argv[i++];
  for (; i < argc; i++) {
    if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
      if (i + 1 >= argc)
        return usage_error("%s needs a file name", argv[i]);
      o->file = argv[++i];
    } else if (strcmp(argv[i], "--json") == 0 &&
               strcmp(o->command, "status") == 0) {
      o->json = 1;
    } else if (strcmp(argv[i], "--dry-run") == 0 &&
               strcmp(o->command, "reload") == 0) {
      o->dry_run = 1;
    } else if (strcmp(argv[i], "--name") == 0) {
      if (i + 1 >= argc || argv[i + 1][0] == '\0')
        return usage_error("%s needs a service name", argv[i]);
      o->name = argv[++i];
#ifdef _WIN32
    } else if (strcmp(argv[i], "--service") == 0 &&
               strcmp(o->command, "run") == 0) {
      o->service = 1;
#endif
    } else {
      return usage_error("unknown option '%s'", argv[i]);
    }
  }
  return 0;
}

int main(int argc, char **argv) {
#ifdef _WIN32
  /* Safe DLL search order for everything loaded from now on: the system
   * folder and folders added on purpose, never the current folder. Plugins
   * are loaded by full path (plugin_loader.c). */
  SetDefaultDllDirectories(LOAD_LIBRARY_SEARCH_SYSTEM32 |
                           LOAD_LIBRARY_SEARCH_USER_DIRS);
  /* No "program stopped working" or "insert a disk" dialogs on a server. */
  SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOOPENFILEERRORBOX);
  WSADATA wsa;
  if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
    fprintf(stderr, "iocphost: cannot start Winsock\n");
    return EXIT_RUNTIME;
  }
#endif
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
  options_t o;
  if (parse_options(argc, argv, &o) != 0)
    return EXIT_USAGE;
  if (strcmp(command, "run") == 0) {
#ifdef _WIN32
    if (o.service)
      return run_as_service(o.file, o.name ? o.name : "iocphost");
#endif
    return cmd_run(o.file, 0);
  }
  if (strcmp(command, "check") == 0)
    return cmd_check(o.file);
  if (strcmp(command, "status") == 0 || strcmp(command, "reload") == 0 ||
      strcmp(command, "stop") == 0 || strcmp(command, "reopen-logs") == 0)
    return cmd_control(o.file, command, o.json, o.dry_run);
  if (strcmp(command, "service") == 0)
    return cmd_service(&o);
  return usage_error("unknown command '%s'", command);
}
