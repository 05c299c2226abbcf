/*
 * `run` on Windows: every stop trigger (Ctrl+C, Ctrl+Break, closing the
 * console, logoff and shutdown; the control pipe's "stop"; the service
 * manager's stop and shutdown controls, in win_service.c) sets one event the
 * main thread waits on (run_platform.h says what each function is for).
 */
#ifdef _WIN32 /* POSIX: run_posix.c */
#include <stdio.h>
#include <windows.h>
#include <winsock2.h>

#include "cli.h"
#include "engine/log.h"
#include "run_platform.h"
#include "win_service.h"

int platform_init(void) {
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
    return -1;
  }
  return 0;
}

/* Windows has no per-process socket limit to raise. */
void run_platform_prepare(void) {}

/* A service has no console: its start-up errors go to the event log too. */
void platform_report_error(const char *text) {
  if (win_service_active())
    win_service_event_log(text);
}

static HANDLE stop_event;    /* set: stop now */
static HANDLE stopped_event; /* set: the graceful stop has finished */

void stop_wake(void) {
  if (stop_event)
    SetEvent(stop_event);
}

static BOOL WINAPI console_handler(DWORD type) {
  if (win_service_active()) {
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

int stop_triggers_install(void) {
  stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
  stopped_event = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (!stop_event || !stopped_event)
    return -1;
  SetConsoleCtrlHandler(console_handler, TRUE);
  return 0;
}

void stop_triggers_remove(void) {
  SetEvent(stopped_event); /* a console handler waiting may return now */
}

void run_ready(void) {
  if (win_service_active())
    win_service_report(SERVICE_RUNNING, NO_ERROR, 0);
}

void wait_for_stop(void) { WaitForSingleObject(stop_event, INFINITE); }

void run_stopping(uint32_t drain_timeout_ms) {
  if (win_service_active())
    win_service_stopping(drain_timeout_ms);
}

void run_stopped(void) { win_service_stopped(); }

#endif /* _WIN32 */
