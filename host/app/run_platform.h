/*
 * What `run` (run.c) needs from the platform: how a running host learns to
 * stop, reload or reopen its log, and whom it tells how far it got. One
 * file per platform implements it, as libuv keeps src/unix and src/win:
 *  - run_posix.c: signals are blocked in every thread and taken by the main
 *    thread with sigwait, so no handler ever runs inside a worker's
 *    callback. SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 reopens the log;
 *    systemd hears READY=1, RELOADING=1, STOPPING=1 and watchdog pings.
 *  - run_win.c: every trigger (Ctrl+C, Ctrl+Break, closing the console,
 *    logoff and shutdown; the control pipe's "stop"; the service manager's
 *    stop and shutdown controls) sets one event the main thread waits on;
 *    under the service manager, START_PENDING, RUNNING and STOP_PENDING with
 *    a rising checkpoint (win_service.c).
 * Either way the stop itself is the same graceful host_stop (SPEC section 9).
 */
#ifndef IOCPHOST_RUN_PLATFORM_H
#define IOCPHOST_RUN_PLATFORM_H

#include <stdint.h>

/* ---- the platform provides ---- */

/* Before the host exists: resource limits (POSIX: the descriptor limit). */
void run_platform_prepare(void);
/* Before any thread exists (signal masks, console handlers); 0 or -1. */
int stop_triggers_install(void);
void stop_triggers_remove(void);
/* From any thread: wake the main thread to stop. */
void stop_wake(void);
/* Every listener accepts. */
void run_ready(void);
/* Blocks until a stop is asked for; serves reloads and log reopens meanwhile.
 */
void wait_for_stop(void);
/* Around the graceful stop: progress reports to the service manager. */
void run_stopping(uint32_t drain_timeout_ms);
void run_stopped(void);
/* An error at start-up, for a channel besides stderr (see report_error). */
void platform_report_error(const char *text);

/* ---- run.c provides, for the triggers ---- */

/* Logs what stops the host, once; 1 for the first trigger, 0 later. */
int announce_stop(const char *trigger);
/* Announces (or says a stop is under way already) and wakes the main
 * thread: for triggers from any thread. */
void stop_request(const char *why);
/* Redeploys changed plugins; logs the outcome; returns the reply (malloc'd;
 * the caller frees it). Safe from any thread. */
char *reload_now(const char *trigger, int dry_run);

#endif
