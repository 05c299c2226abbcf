/*
 * The Windows service manager (SPEC section 11): `run --service`, which the
 * service manager starts ("run -c <config> --service --name <name>", as
 * `service install` writes it), and `service install|uninstall|start|stop`,
 * sc-style. Under the service manager the host reports START_PENDING,
 * RUNNING once every listener accepts, STOP_PENDING with a rising
 * checkpoint while sessions drain, and STOPPED with the exit code; its stop
 * and shutdown controls stop the host, param-change reloads it.
 */
#ifdef _WIN32 /* POSIX: systemd (conf/iocphost.service) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <windows.h>
#include <winsock2.h>

#include "cli.h"
#include "config.h"
#include "engine/log.h"
#include "run_platform.h"
#include "win_service.h"

#define SERVICE_NAME_MAX 256

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
static int running_as_service;

int win_service_active(void) { return running_as_service; }

void win_service_event_log(const char *text) {
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

void win_service_report(DWORD state, DWORD exit_code, DWORD wait_hint) {
  AcquireSRWLockExclusive(&service_state.lock);
  SERVICE_STATUS *st = &service_state.status;
  if (!service_state.handle || st->dwCurrentState == SERVICE_STOPPED) {
    ReleaseSRWLockExclusive(&service_state.lock);
    return;
  }
  int pending = state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING;
  st->dwServiceType = SERVICE_WIN32_OWN_PROCESS;
  /* The checkpoint rises while the same pending state goes on. */
  st->dwCheckPoint =
      pending ? (st->dwCurrentState == state ? st->dwCheckPoint + 1 : 1) : 0;
  st->dwCurrentState = state;
  st->dwWaitHint = pending ? wait_hint : 0;
  st->dwControlsAccepted = state == SERVICE_RUNNING
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

static DWORD WINAPI stop_progress_main(void *arg) {
  (void)arg;
  uint64_t end = clock_now_ms() + service_state.drain_timeout_ms;
  /* A rising checkpoint every second; the hint covers what is left of the
   * drain plus the unloading after it. */
  while (WaitForSingleObject(service_state.progress_done, 1000) ==
         WAIT_TIMEOUT) {
    uint64_t now = clock_now_ms();
    DWORD left = now < end ? (DWORD)(end - now) : 0;
    win_service_report(SERVICE_STOP_PENDING, NO_ERROR, left + 5000);
  }
  return 0;
}

void win_service_stopping(uint32_t drain_timeout_ms) {
  service_state.drain_timeout_ms = drain_timeout_ms;
  win_service_report(SERVICE_STOP_PENDING, NO_ERROR, drain_timeout_ms + 5000);
  service_state.progress_done = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (service_state.progress_done)
    service_state.progress_thread =
        CreateThread(NULL, 0, stop_progress_main, NULL, 0, NULL);
}

void win_service_stopped(void) {
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

static DWORD WINAPI service_control(DWORD control, DWORD type, void *data,
                                    void *ctx) {
  (void)type;
  (void)data;
  (void)ctx;
  switch (control) {
  case SERVICE_CONTROL_STOP:
  case SERVICE_CONTROL_SHUTDOWN:
    win_service_report(SERVICE_STOP_PENDING, NO_ERROR, 10000);
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
  service_state.handle =
      RegisterServiceCtrlHandlerExW(service_state.name, service_control, NULL);
  if (!service_state.handle)
    return;
  win_service_report(SERVICE_START_PENDING, NO_ERROR, 30000);
  int code = cmd_run(service_config_file, 1);
  win_service_report(SERVICE_STOPPED, (DWORD)code, 0);
}

/* `run --service`: the service manager started us. */
int run_as_service(const char *file, const char *name) {
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
      fprintf(stderr,
              "iocphost: cannot reach the service manager (error "
              "%lu)\n",
              (unsigned long)e);
    return EXIT_RUNTIME;
  }
  return EXIT_OK;
}

static void print_system_error(const char *what, DWORD code) {
  char text[512] = "";
  DWORD n =
      FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                     NULL, code, 0, text, sizeof text, NULL);
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
      to_wide(config->file, wconfig, sizeof wconfig / sizeof wconfig[0]) != 0 ||
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
  SC_HANDLE svc = CreateServiceW(scm, wname, display, SERVICE_ALL_ACCESS,
                                 SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START,
                                 SERVICE_ERROR_NORMAL, command, NULL, NULL,
                                 NULL, NULL, NULL);
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
    fprintf(stderr, "iocphost: service %s did not stop within %lu ms\n", name,
            (unsigned long)wait_ms);
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
      name, SERVICE_START | SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE, &scm);
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
      fprintf(stderr,
              "iocphost: service %s did not reach RUNNING (state "
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

int platform_service_command(const char *subcommand, const char *file,
                             const char *name) {
  config_t *config;
  if (load_config(file, &config) != 0)
    return EXIT_INVALID;
  int code = service_command(subcommand, name ? name : config->name, config);
  config_free(config);
  return code;
}

#endif /* _WIN32 */
