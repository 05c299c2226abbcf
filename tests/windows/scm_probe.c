/* scm_probe: what test_windows_service.py needs from the Windows service
 * manager that Wine's sc.exe does not offer.
 *
 *   scm_probe watch NAME TIMEOUT_MS   prints every change of the service's
 *                                     state, checkpoint and wait hint until
 *                                     it is STOPPED (polled every 20 ms)
 *   scm_probe paramchange NAME        sends SERVICE_CONTROL_PARAMCHANGE
 *   scm_probe recovery NAME           prints the failure actions
 *
 * Exit code 0 on success, 1 on failure (the reason on stderr). */
#include <windows.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *state_name(DWORD state) {
  switch (state) {
  case SERVICE_STOPPED:
    return "STOPPED";
  case SERVICE_START_PENDING:
    return "START_PENDING";
  case SERVICE_STOP_PENDING:
    return "STOP_PENDING";
  case SERVICE_RUNNING:
    return "RUNNING";
  case SERVICE_CONTINUE_PENDING:
    return "CONTINUE_PENDING";
  case SERVICE_PAUSE_PENDING:
    return "PAUSE_PENDING";
  case SERVICE_PAUSED:
    return "PAUSED";
  default:
    return "UNKNOWN";
  }
}

static int fail(const char *what) {
  fprintf(stderr, "scm_probe: %s failed (error %lu)\n", what,
          (unsigned long)GetLastError());
  return 1;
}

static int watch(SC_HANDLE svc, DWORD timeout_ms) {
  SERVICE_STATUS_PROCESS last;
  memset(&last, 0xff, sizeof last);
  ULONGLONG deadline = GetTickCount64() + timeout_ms;
  for (;;) {
    SERVICE_STATUS_PROCESS st;
    DWORD got;
    if (!QueryServiceStatusEx(svc, SC_STATUS_PROCESS_INFO, (BYTE *)&st,
                              sizeof st, &got))
      return fail("QueryServiceStatusEx");
    if (st.dwCurrentState != last.dwCurrentState ||
        st.dwCheckPoint != last.dwCheckPoint ||
        st.dwWaitHint != last.dwWaitHint) {
      printf("%s checkpoint=%lu wait_hint=%lu win32=%lu specific=%lu\n",
             state_name(st.dwCurrentState), (unsigned long)st.dwCheckPoint,
             (unsigned long)st.dwWaitHint, (unsigned long)st.dwWin32ExitCode,
             (unsigned long)st.dwServiceSpecificExitCode);
      fflush(stdout);
      last = st;
    }
    if (st.dwCurrentState == SERVICE_STOPPED)
      return 0;
    if (GetTickCount64() >= deadline) {
      fprintf(stderr, "scm_probe: not STOPPED within %lu ms\n",
              (unsigned long)timeout_ms);
      return 1;
    }
    Sleep(20);
  }
}

static int recovery(SC_HANDLE svc) {
  BYTE buffer[8192];
  DWORD needed;
  if (!QueryServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS, buffer,
                            sizeof buffer, &needed))
    return fail("QueryServiceConfig2W(SERVICE_CONFIG_FAILURE_ACTIONS)");
  SERVICE_FAILURE_ACTIONSW *fa = (SERVICE_FAILURE_ACTIONSW *)buffer;
  printf("reset_period=%lu actions=%lu\n", (unsigned long)fa->dwResetPeriod,
         (unsigned long)fa->cActions);
  for (DWORD i = 0; i < fa->cActions; i++)
    printf("action %lu: %s after %lu ms\n", (unsigned long)i,
           fa->lpsaActions[i].Type == SC_ACTION_RESTART ? "restart" : "other",
           (unsigned long)fa->lpsaActions[i].Delay);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: scm_probe watch|paramchange|recovery NAME "
                    "[TIMEOUT_MS]\n");
    return 2;
  }
  wchar_t name[256];
  if (MultiByteToWideChar(CP_UTF8, 0, argv[2], -1, name, 256) <= 0)
    return fail("the service name");
  SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
  if (!scm)
    return fail("OpenSCManagerW");
  SC_HANDLE svc = OpenServiceW(
      scm, name,
      SERVICE_QUERY_STATUS | SERVICE_QUERY_CONFIG | SERVICE_PAUSE_CONTINUE);
  if (!svc)
    return fail("OpenServiceW");
  int rc;
  if (strcmp(argv[1], "watch") == 0) {
    rc = watch(svc, argc > 3 ? (DWORD)strtoul(argv[3], NULL, 10) : 60000);
  } else if (strcmp(argv[1], "paramchange") == 0) {
    SERVICE_STATUS st;
    rc = ControlService(svc, SERVICE_CONTROL_PARAMCHANGE, &st)
             ? 0
             : fail("ControlService(SERVICE_CONTROL_PARAMCHANGE)");
    if (rc == 0)
      printf("ok\n");
  } else if (strcmp(argv[1], "recovery") == 0) {
    rc = recovery(svc);
  } else {
    fprintf(stderr, "scm_probe: unknown command %s\n", argv[1]);
    rc = 2;
  }
  CloseServiceHandle(svc);
  CloseServiceHandle(scm);
  return rc;
}
