/*
 * The command line's parts, shared by its files (SPEC section 8):
 *   main.c          options and dispatch;
 *   commands.c      check, and the requests to a running instance;
 *   run.c           `run`: the host's life from start to stop, on every
 *                   platform, over the platform's stop triggers
 *                   (run_platform.h: run_posix.c, run_win.c);
 *   win_service.c   the Windows service manager: `run --service` and
 *                   `service install|uninstall|start|stop`.
 */
#ifndef IOCPHOST_CLI_H
#define IOCPHOST_CLI_H

#include "config.h"

#define DEFAULT_CONFIG "conf/iocphost.json"

enum { EXIT_OK = 0, EXIT_INVALID = 1, EXIT_USAGE = 2, EXIT_RUNTIME = 3 };

/* Process-wide set-up before any command (Windows: the safe DLL search
 * order, no error dialogs, Winsock); 0, or -1 after saying why. */
int platform_init(void);
/* "iocphost: <fmt with arg>" and a pointer to --help on stderr; returns
 * EXIT_USAGE. */
int usage_error(const char *fmt, const char *arg);
/* An error at start-up, before (or instead of) the log: stderr, and where
 * the platform has another channel for it (a Windows service's event log),
 * there too. */
void report_error(const char *fmt, const char *a, const char *b);
/* Loads and validates the whole config; reports and returns -1 if invalid. */
int load_config(const char *file, config_t **config);

int cmd_check(const char *file);
/* status, reload, stop, reopen-logs: one request to the running instance. */
int cmd_control(const char *file, const char *command, int json, int dry_run);
/* `sessions [--service NAME] [--json]` and `kick ID` (service NULL: all). */
int cmd_sessions(const char *file, const char *service, int json);
int cmd_kick(const char *file, const char *id);
/* service_mode: started by the Windows service manager (no console). */
int cmd_run(const char *file, int service_mode);
/* `service SUB`: the Windows service manager's commands (win_service.c);
 * elsewhere a message pointing at systemd (run_posix.c). */
int cmd_service(const char *subcommand, const char *file, const char *name);
/* The platform's part of cmd_service, once the subcommand is known good. */
int platform_service_command(const char *subcommand, const char *file,
                             const char *name);
/* `run --service`: hand the process to the Windows service manager, which
 * calls cmd_run (Windows only). */
int run_as_service(const char *file, const char *name);

#endif
