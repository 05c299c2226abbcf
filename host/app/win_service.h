/*
 * The Windows service manager, for the files of `run` (run_win.c) and the
 * command line: whether this process runs as a service, and what it tells
 * the service manager (win_service.c).
 */
#ifndef IOCPHOST_WIN_SERVICE_H
#define IOCPHOST_WIN_SERVICE_H
#ifdef _WIN32

#include <stdint.h>
#include <windows.h>

/* 1 while the service manager runs this process (no console). */
int win_service_active(void);
/* SetServiceStatus; pending states get a rising checkpoint. */
void win_service_report(DWORD state, DWORD exit_code, DWORD wait_hint);
/* An error line in the Windows event log, under the service's name. */
void win_service_event_log(const char *text);
/* STOP_PENDING, with a rising checkpoint every second while draining. */
void win_service_stopping(uint32_t drain_timeout_ms);
void win_service_stopped(void);

#endif
#endif
