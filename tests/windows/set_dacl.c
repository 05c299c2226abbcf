/* set_dacl PATH [SDDL]: gives the file or folder at PATH the DACL of the SDDL
 * string (for example "D:P(A;;FA;;;SY)(A;;0x1301bf;;;WD)"), protected from
 * inheritance, then prints the DACL the system reports back as SDDL, so the
 * caller sees what was really stored (Wine keeps only what a Unix mode can
 * say). "CURRENT_USER" in SDDL stands for this process's user's SID.
 * Without SDDL it only prints the DACL. Exit 0, or 1 with the reason on
 * stderr. For test_windows_plugin_trust.py
 * (Wine's icacls changes nothing). */
#include <windows.h>

#include <aclapi.h>
#include <sddl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, DWORD e) {
  fprintf(stderr, "set_dacl: %s failed (error %lu)\n", what, (unsigned long)e);
  return 1;
}

/* sddl with every CURRENT_USER replaced by the token user's SID string. */
static char *expand(const char *sddl) {
  HANDLE token = NULL;
  char buf[512], *user = NULL;
  DWORD size = 0;
  if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token) ||
      !GetTokenInformation(token, TokenUser, buf, sizeof buf, &size) ||
      !ConvertSidToStringSidA(((TOKEN_USER *)buf)->User.Sid, &user))
    return NULL;
  CloseHandle(token);
  const char *key = "CURRENT_USER";
  char *out = malloc(strlen(sddl) * (strlen(user) + 1) + 1);
  char *o = out;
  for (const char *p = sddl; *p;) {
    if (strncmp(p, key, strlen(key)) == 0) {
      o += sprintf(o, "%s", user);
      p += strlen(key);
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  LocalFree(user);
  return out;
}

int main(int argc, char **argv) {
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: set_dacl PATH [SDDL]\n");
    return 1;
  }
  DWORD e;
  if (argc == 2)
    goto show;
  char *sddl = expand(argv[2]);
  if (sddl == NULL)
    return fail("reading this process's user", GetLastError());
  PSECURITY_DESCRIPTOR sd = NULL;
  if (!ConvertStringSecurityDescriptorToSecurityDescriptorA(
          sddl, SDDL_REVISION_1, &sd, NULL))
    return fail("parsing the SDDL", GetLastError());
  BOOL present = FALSE, defaulted = FALSE;
  PACL dacl = NULL;
  if (!GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted))
    return fail("GetSecurityDescriptorDacl", GetLastError());
  e = SetNamedSecurityInfoA(argv[1], SE_FILE_OBJECT,
                            DACL_SECURITY_INFORMATION |
                                PROTECTED_DACL_SECURITY_INFORMATION,
                            NULL, NULL, dacl, NULL);
  if (e != ERROR_SUCCESS)
    return fail("SetNamedSecurityInfo", e);
show:;
  PSECURITY_DESCRIPTOR now = NULL;
  e = GetNamedSecurityInfoA(argv[1], SE_FILE_OBJECT, DACL_SECURITY_INFORMATION,
                            NULL, NULL, NULL, NULL, &now);
  if (e != ERROR_SUCCESS)
    return fail("GetNamedSecurityInfo", e);
  char *text = NULL;
  if (!ConvertSecurityDescriptorToStringSecurityDescriptorA(
          now, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, &text, NULL))
    return fail("ConvertSecurityDescriptorToStringSecurityDescriptor",
                GetLastError());
  printf("%s\n", text);
  return 0;
}
