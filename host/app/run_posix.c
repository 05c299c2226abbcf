/*
 * `run` on POSIX systems: the stop triggers are signals, and the service
 * manager is systemd (run_platform.h says what each function is for).
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait, so no handler ever runs inside a worker's callback.
 */
#ifndef _WIN32 /* Windows: run_win.c */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "engine/log.h"
#include "notify.h"
#include "run_platform.h"

int platform_init(void) { return 0; }

/* Game servers hold many sockets: take the whole hard limit. (Windows has
 * no per-process socket limit to raise.) */
void run_platform_prepare(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* Nothing but stderr: a daemon's stderr is the journal already. */
void platform_report_error(const char *text) { (void)text; }

static sigset_t waited_signals;

void stop_wake(void) {
  kill(getpid(), SIGTERM); /* the main thread takes it in sigwait */
}

int stop_triggers_install(void) {
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

void stop_triggers_remove(void) {}

void run_ready(void) { notify_send("READY=1\nSTATUS=serving"); }

void wait_for_stop(void) {
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
      snprintf(reloading, sizeof reloading, "RELOADING=1\nMONOTONIC_USEC=%llu",
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

void run_stopping(uint32_t drain_timeout_ms) {
  (void)drain_timeout_ms;
  notify_send("STOPPING=1\nSTATUS=draining sessions");
}

void run_stopped(void) {}

int platform_service_command(const char *subcommand, const char *file,
                             const char *name) {
  (void)file;
  (void)name;
  fprintf(stderr,
          "iocphost: 'service %s' is not available on this platform "
          "(Windows services only); on Linux use systemd with the unit "
          "conf/iocphost.service\n",
          subcommand);
  return EXIT_USAGE;
}

int run_as_service(const char *file, const char *name) {
  (void)file;
  (void)name;
  return usage_error("%s is for the Windows service manager; on Linux run "
                     "the host under systemd (conf/iocphost.service)",
                     "--service");
}

#endif /* !_WIN32 */
