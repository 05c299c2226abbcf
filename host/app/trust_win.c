/*
 * Windows: whether a plugin file may be trusted, from the security
 * descriptors of the file and of the folders above it (see trust_win.h for
 * the rule, and why). The decision reads the DACL the way Windows' access
 * check does for one principal: entries in order, inherit-only entries
 * skipped, a right denied by an earlier entry not granted by a later one.
 */
#ifdef _WIN32
#include "trust_win.h"
#include "trust.h"

#include <aclapi.h> /* after windows.h (in trust_win.h): they rely on it */
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <sddl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#include "engine/log.h"

#define FILE_RIGHTS_REFUSED                                                    \
  (FILE_WRITE_DATA | FILE_APPEND_DATA | DELETE | WRITE_DAC | WRITE_OWNER)
#define FOLDER_RIGHTS_REFUSED                                                  \
  (FILE_ADD_FILE | FILE_ADD_SUBDIRECTORY | FILE_DELETE_CHILD | DELETE |        \
   WRITE_DAC | WRITE_OWNER)
#define ANCESTOR_RIGHTS_REFUSED                                                \
  (FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER)

static ACCESS_MASK refused_rights(trust_win_kind_t kind) {
  switch (kind) {
  case TRUST_WIN_FILE:
    return FILE_RIGHTS_REFUSED;
  case TRUST_WIN_FOLDER:
    return FOLDER_RIGHTS_REFUSED;
  default:
    return ANCESTOR_RIGHTS_REFUSED;
  }
}

/* Generic rights as the file system maps them (an entry on the object
 * itself is normally mapped already; one written by hand may not be). */
static ACCESS_MASK map_generic(ACCESS_MASK mask) {
  if (mask & GENERIC_ALL)
    mask |= FILE_ALL_ACCESS;
  if (mask & GENERIC_WRITE)
    mask |= FILE_GENERIC_WRITE;
  return mask;
}

/* A SID with one sub-authority: S-1-<authority>-<sub>. */
static int sid_is(PSID sid, BYTE authority, DWORD sub) {
  PSID_IDENTIFIER_AUTHORITY a = GetSidIdentifierAuthority(sid);
  static const BYTE zero[5] = {0};
  return *GetSidSubAuthorityCount(sid) == 1 &&
         memcmp(a->Value, zero, sizeof zero) == 0 && a->Value[5] == authority &&
         *GetSidSubAuthority(sid, 0) == sub;
}

#define SID_EVERYONE(s) sid_is((s), 1, 0)      /* S-1-1-0 */
#define SID_CREATOR_OWNER(s) sid_is((s), 3, 0) /* S-1-3-0 */
#define SID_CREATOR_GROUP(s) sid_is((s), 3, 1) /* S-1-3-1 */
#define SID_OWNER_RIGHTS(s) sid_is((s), 3, 4)  /* S-1-3-4 */

/* NT SERVICE\TrustedInstaller, which owns and may replace the system's own
 * files (and C:\Program Files). */
static int is_trusted_installer(PSID sid) {
  SID_IDENTIFIER_AUTHORITY nt = {SECURITY_NT_AUTHORITY};
  PSID ti = NULL;
  if (!AllocateAndInitializeSid(&nt, 6, 80, 956008885u, 3418522649u,
                                1831038044u, 1853292631u, 2271478464u, 0, 0,
                                &ti))
    return 0;
  int same = EqualSid(sid, ti) != 0;
  FreeSid(ti);
  return same;
}

static int is_trusted(PSID sid, PSID self) {
  return (self != NULL && EqualSid(sid, self)) ||
         IsWellKnownSid(sid, WinLocalSystemSid) ||
         IsWellKnownSid(sid, WinBuiltinAdministratorsSid) ||
         is_trusted_installer(sid);
}

/* "BUILTIN\Users (S-1-5-32-545)", or the SID alone when it has no name
 * here; and the SID string for icacls's *SID form. */
static void describe_sid(PSID sid, char *name, size_t name_len, char *text,
                         size_t text_len) {
  wchar_t *wide = NULL;
  if (ConvertSidToStringSidW(sid, &wide)) {
    WideCharToMultiByte(CP_UTF8, 0, wide, -1, text, (int)text_len, NULL, NULL);
    LocalFree(wide);
  } else {
    snprintf(text, text_len, "an unreadable SID");
  }
  text[text_len - 1] = '\0';
  wchar_t account[256], domain[256];
  DWORD account_len = 256, domain_len = 256;
  SID_NAME_USE use;
  char account8[512] = "", domain8[512] = "";
  if (LookupAccountSidW(NULL, sid, account, &account_len, domain, &domain_len,
                        &use)) {
    WideCharToMultiByte(CP_UTF8, 0, account, -1, account8, sizeof account8,
                        NULL, NULL);
    WideCharToMultiByte(CP_UTF8, 0, domain, -1, domain8, sizeof domain8, NULL,
                        NULL);
    account8[sizeof account8 - 1] = domain8[sizeof domain8 - 1] = '\0';
  }
  if (account8[0] && domain8[0])
    snprintf(name, name_len, "%s\\%s (%s)", domain8, account8, text);
  else if (account8[0])
    snprintf(name, name_len, "%s (%s)", account8, text);
  else
    snprintf(name, name_len, "%s", text);
}

/* The rights in mask, as Windows' security dialog and icacls name them. */
static void describe_rights(ACCESS_MASK mask, trust_win_kind_t kind, char *out,
                            size_t len) {
  static const struct {
    ACCESS_MASK bit;
    const char *file, *folder;
  } names[] = {
      {FILE_WRITE_DATA, "write (WD)", "add files (WD)"},
      {FILE_APPEND_DATA, "append (AD)", "add subfolders (AD)"},
      {FILE_DELETE_CHILD, "delete child (DC)", "delete what it holds (DC)"},
      {DELETE, "delete (D)", "delete (D)"},
      {WRITE_DAC, "change permissions (WDAC)", "change permissions (WDAC)"},
      {WRITE_OWNER, "take ownership (WO)", "take ownership (WO)"},
  };
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!(mask & names[i].bit))
      continue;
    int n = snprintf(out + used, len - used, "%s%s", used ? ", " : "",
                     kind == TRUST_WIN_FILE ? names[i].file : names[i].folder);
    if (n < 0 || (size_t)n >= len - used)
      break;
    used += (size_t)n;
  }
}

static const char *what_it_is(trust_win_kind_t kind) {
  switch (kind) {
  case TRUST_WIN_FILE:
    return "the file";
  case TRUST_WIN_FOLDER:
    return "its folder";
  default:
    return "the folder above it";
  }
}

static const char *what_they_could_do(trust_win_kind_t kind) {
  switch (kind) {
  case TRUST_WIN_FILE:
    return "could replace the code the host runs";
  case TRUST_WIN_FOLDER:
    return "could put another DLL in its place or beside it";
  default:
    return "could replace the folders below it, and the plugin with them";
  }
}

#define SAFE_PLACE                                                             \
  "or keep plugins in C:\\Program Files\\iocphost\\plugins, whose inherited "  \
  "permissions are safe"

/* Where an entry's SID starts: after the header and mask, and for object
 * entries after their flags and GUIDs. NULL for entries of other kinds. */
static PSID ace_sid(ACE_HEADER *header, ACCESS_MASK *mask, int *allow) {
  switch (header->AceType) {
  case ACCESS_ALLOWED_ACE_TYPE:
  case ACCESS_ALLOWED_CALLBACK_ACE_TYPE: /* its condition may well hold */
  case ACCESS_DENIED_ACE_TYPE: {
    ACCESS_ALLOWED_ACE *ace = (ACCESS_ALLOWED_ACE *)header;
    *mask = ace->Mask;
    *allow = header->AceType != ACCESS_DENIED_ACE_TYPE;
    return (PSID)&ace->SidStart;
  }
  case ACCESS_ALLOWED_OBJECT_ACE_TYPE:
  case ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE: {
    ACCESS_ALLOWED_OBJECT_ACE *ace = (ACCESS_ALLOWED_OBJECT_ACE *)header;
    BYTE *p = (BYTE *)&ace->ObjectType;
    if (ace->Flags & ACE_OBJECT_TYPE_PRESENT)
      p += sizeof(GUID);
    if (ace->Flags & ACE_INHERITED_OBJECT_TYPE_PRESENT)
      p += sizeof(GUID);
    *mask = ace->Mask;
    *allow = 1;
    return (PSID)p;
  }
  default:
    /* A conditional deny may not apply, so it denies nothing here; audit
     * and label entries grant nothing. */
    return NULL;
  }
}

/* Rights entry index grants principal (its SID, or the owner's for an
 * OWNER RIGHTS entry) that no earlier entry denied to it or to Everyone. */
static ACCESS_MASK granted_after_denies(PACL dacl, DWORD index, PSID principal,
                                        PSID owner, ACCESS_MASK granted) {
  for (DWORD j = 0; j < index && granted; j++) {
    ACE_HEADER *header = NULL;
    ACCESS_MASK mask = 0;
    int allow = 0;
    if (!GetAce(dacl, j, (void **)&header) ||
        (header->AceFlags & INHERIT_ONLY_ACE))
      continue;
    PSID sid = ace_sid(header, &mask, &allow);
    if (sid == NULL || allow || !IsValidSid(sid))
      continue;
    if (EqualSid(sid, principal) || SID_EVERYONE(sid) ||
        (SID_OWNER_RIGHTS(sid) && owner != NULL && EqualSid(principal, owner)))
      granted &= ~map_generic(mask);
  }
  return granted;
}

int trust_win_decide(PSECURITY_DESCRIPTOR sd, PSID self, trust_win_kind_t kind,
                     const char *path, char *why, size_t why_len) {
  BOOL present = FALSE, defaulted = FALSE;
  PACL dacl = NULL;
  PSID owner = NULL;
  if (!GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted) ||
      !GetSecurityDescriptorOwner(sd, &owner, &defaulted)) {
    snprintf(why, why_len, "cannot read the permissions of %s (error %lu)",
             path, (unsigned long)GetLastError());
    return -1;
  }
  if (!present || dacl == NULL) {
    snprintf(
        why, why_len,
        "%s %s has no DACL, which lets everyone do anything with it, so "
        "anyone on this machine %s; fix: icacls \"%s\" /reset, " SAFE_PLACE,
        what_it_is(kind), path, what_they_could_do(kind), path);
    return -1;
  }
  ACCESS_MASK refused = refused_rights(kind);
  int owner_rights_entry = 0;
  for (DWORD i = 0; i < dacl->AceCount; i++) {
    ACE_HEADER *header = NULL;
    ACCESS_MASK mask = 0;
    int allow = 0;
    if (!GetAce(dacl, i, (void **)&header) ||
        (header->AceFlags & INHERIT_ONLY_ACE))
      continue;
    PSID sid = ace_sid(header, &mask, &allow);
    if (sid == NULL || !IsValidSid(sid))
      continue;
    if (SID_OWNER_RIGHTS(sid)) {
      /* Replaces the owner's implicit rights: judged as the owner's. */
      owner_rights_entry = 1;
      if (owner == NULL)
        continue;
      sid = owner;
    }
    /* Placeholders for inheritance: they match no one on the object. */
    if (!allow || SID_CREATOR_OWNER(sid) || SID_CREATOR_GROUP(sid) ||
        is_trusted(sid, self))
      continue;
    ACCESS_MASK granted =
        granted_after_denies(dacl, i, sid, owner, map_generic(mask) & refused);
    if (!granted)
      continue;
    char name[700], text[200], rights[200];
    describe_sid(sid, name, sizeof name, text, sizeof text);
    describe_rights(granted, kind, rights, sizeof rights);
    if (header->AceFlags & INHERITED_ACE)
      snprintf(why, why_len,
               "%s %s lets %s %s (inherited from a folder above), so that "
               "account %s; fix: icacls \"%s\" /inheritance:d, then icacls "
               "\"%s\" /remove:g *%s, " SAFE_PLACE,
               what_it_is(kind), path, name, rights, what_they_could_do(kind),
               path, path, text);
    else
      snprintf(why, why_len,
               "%s %s lets %s %s, so that account %s; fix: icacls \"%s\" "
               "/remove:g *%s, " SAFE_PLACE,
               what_it_is(kind), path, name, rights, what_they_could_do(kind),
               path, text);
    return -1;
  }
  /* An owner may always read and change the DACL, unless OWNER RIGHTS
   * entries say what it may do instead (judged above). */
  if (owner != NULL && !owner_rights_entry && IsValidSid(owner) &&
      !is_trusted(owner, self)) {
    char name[700], text[200];
    describe_sid(owner, name, sizeof name, text, sizeof text);
    snprintf(why, why_len,
             "%s %s is owned by %s, and an owner may always change its "
             "permissions, so that account %s; fix: icacls \"%s\" /setowner "
             "*S-1-5-32-544 (Administrators), " SAFE_PLACE,
             what_it_is(kind), path, name, what_they_could_do(kind), path);
    return -1;
  }
  return 0;
}

/* ---- reading descriptors from the file system ---- */

static void to_utf8(const wchar_t *wide, char *out, size_t len) {
  if (WideCharToMultiByte(CP_UTF8, 0, wide, -1, out, (int)len, NULL, NULL) <= 0)
    snprintf(out, len, "(a path not representable in UTF-8)");
  out[len - 1] = '\0';
}

/* How many characters of an absolute path are its root: "C:\" or
 * "\\server\share\". 0 when it has none this code knows. */
static size_t root_length(const wchar_t *path) {
  if (iswalpha(path[0]) && path[1] == L':' &&
      (path[2] == L'\\' || path[2] == L'/'))
    return 3;
  if ((path[0] == L'\\' || path[0] == L'/') &&
      (path[1] == L'\\' || path[1] == L'/')) {
    int separators = 0;
    size_t i = 2;
    for (; path[i]; i++)
      if ((path[i] == L'\\' || path[i] == L'/') && ++separators == 2)
        return i + 1;
    return i;
  }
  return 0;
}

static int check_one(const wchar_t *path, trust_win_kind_t kind, PSID self,
                     char *why, size_t why_len) {
  PSECURITY_DESCRIPTOR sd = NULL;
  char path8[1024];
  to_utf8(path, path8, sizeof path8);
  DWORD e = GetNamedSecurityInfoW(path, SE_FILE_OBJECT,
                                  OWNER_SECURITY_INFORMATION |
                                      DACL_SECURITY_INFORMATION,
                                  NULL, NULL, NULL, NULL, &sd);
  if (e != ERROR_SUCCESS) {
    snprintf(why, why_len,
             "cannot read the permissions of %s (error %lu), so cannot tell "
             "whether others may change it; the host's account needs the "
             "right to read them",
             path8, (unsigned long)e);
    return -1;
  }
  int rc = trust_win_decide(sd, self, kind, path8, why, why_len);
  LocalFree(sd);
  return rc;
}

/* The object (of kind first), its folder, and every folder above up to
 * the root. */
static int check_chain(const wchar_t *full, trust_win_kind_t first, PSID self,
                       char *why, size_t why_len) {
  size_t len = wcslen(full);
  wchar_t *path = malloc((len + 2) * sizeof *path);
  if (path == NULL) {
    snprintf(why, why_len, "out of memory");
    return -1;
  }
  memcpy(path, full, (len + 1) * sizeof *path);
  size_t root = root_length(path);
  trust_win_kind_t kind = first;
  int rc = 0;
  for (;;) {
    rc = check_one(path, kind, self, why, why_len);
    if (rc != 0 || len <= root)
      break;
    size_t cut = len;
    while (cut > 0 && path[cut - 1] != L'\\' && path[cut - 1] != L'/')
      cut--;
    if (cut == 0)
      break;
    /* "C:\dir" -> "C:\" (keep the root's separator); "C:\a\b" -> "C:\a". */
    len = cut - 1 < root ? root : cut - 1;
    path[len] = L'\0';
    kind = kind == TRUST_WIN_FILE ? TRUST_WIN_FOLDER : TRUST_WIN_ANCESTOR;
  }
  free(path);
  return rc;
}

/* The path with links resolved, without "\\?\" (or "\\?\UNC\" -> "\\");
 * NULL when it cannot be had. */
static wchar_t *final_path(const wchar_t *full) {
  HANDLE h = CreateFileW(full, FILE_READ_ATTRIBUTES,
                         FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                         NULL, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
  if (h == INVALID_HANDLE_VALUE)
    return NULL;
  DWORD n = GetFinalPathNameByHandleW(h, NULL, 0, 0);
  wchar_t *buf = n ? malloc((n + 1) * sizeof *buf) : NULL;
  if (buf && GetFinalPathNameByHandleW(h, buf, n + 1, 0) == 0) {
    free(buf);
    buf = NULL;
  }
  CloseHandle(h);
  if (buf == NULL)
    return NULL;
  if (wcsncmp(buf, L"\\\\?\\UNC\\", 8) == 0) {
    memmove(buf + 2, buf + 8, (wcslen(buf + 8) + 1) * sizeof *buf);
  } else if (wcsncmp(buf, L"\\\\?\\", 4) == 0) {
    memmove(buf, buf + 4, (wcslen(buf + 4) + 1) * sizeof *buf);
  }
  return buf;
}

/* The process token's user: the account the host (the service) runs as. */
static TOKEN_USER *token_user(void) {
  HANDLE token = NULL;
  if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token))
    return NULL;
  DWORD size = 0;
  GetTokenInformation(token, TokenUser, NULL, 0, &size);
  TOKEN_USER *user = size ? malloc(size) : NULL;
  if (user && !GetTokenInformation(token, TokenUser, user, size, &size)) {
    free(user);
    user = NULL;
  }
  CloseHandle(token);
  return user;
}

/* The full path of path (malloc'd), or NULL. */
static wchar_t *full_path(const wchar_t *path) {
  DWORD full_len = GetFullPathNameW(path, 0, NULL, NULL);
  wchar_t *full = full_len ? malloc(full_len * sizeof *full) : NULL;
  if (full != NULL && GetFullPathNameW(path, full_len, full, NULL) == 0) {
    free(full);
    full = NULL;
  }
  return full;
}

/* check_chain for full, and for its real path when links lead elsewhere. */
static int check_chains(const wchar_t *full, trust_win_kind_t first, char *why,
                        size_t why_len) {
  TOKEN_USER *user = token_user();
  if (user == NULL) {
    snprintf(why, why_len, "cannot read the process's user (error %lu)",
             (unsigned long)GetLastError());
    return -1;
  }
  int rc = check_chain(full, first, user->User.Sid, why, why_len);
  if (rc == 0) {
    /* Through a symbolic link or a junction: the folders of what is really
     * used must be safe as well. */
    wchar_t *real = final_path(full);
    if (real != NULL && _wcsicmp(real, full) != 0)
      rc = check_chain(real, first, user->User.Sid, why, why_len);
    free(real);
  }
  free(user);
  return rc;
}

int trust_win_check_path(const wchar_t *path, char *why, size_t why_len) {
  DWORD full_len = GetFullPathNameW(path, 0, NULL, NULL);
  wchar_t *full = full_len ? malloc(full_len * sizeof *full) : NULL;
  if (full == NULL || GetFullPathNameW(path, full_len, full, NULL) == 0) {
    free(full);
    snprintf(why, why_len, "cannot resolve the full path");
    return -1;
  }
  if (GetFileAttributesW(full) == INVALID_FILE_ATTRIBUTES) {
    DWORD e = GetLastError();
    free(full);
    if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND)
      return 0; /* the loader says so in its own words */
    snprintf(why, why_len, "cannot read the attributes of the file (error %lu)",
             (unsigned long)e);
    return -1;
  }
  int rc = check_chains(full, TRUST_WIN_FILE, why, why_len);
  free(full);
  return rc;
}

int trust_win_check_path_utf8(const char *path, char *why, size_t why_len) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
  if (n <= 0) {
    snprintf(why, why_len, "the path is not valid UTF-8");
    return -1;
  }
  wchar_t *wide = malloc((size_t)n * sizeof *wide);
  if (wide == NULL) {
    snprintf(why, why_len, "out of memory");
    return -1;
  }
  MultiByteToWideChar(CP_UTF8, 0, path, -1, wide, n);
  int rc = trust_win_check_path(wide, why, why_len);
  free(wide);
  return rc;
}
static int fail_errno(int code) {
  errno = code;
  return -1;
}

int trust_win_make_private_dir(const char *path) {
  char why[2048];
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
  wchar_t *wide = n > 0 ? malloc((size_t)n * sizeof *wide) : NULL;
  TOKEN_USER *user = token_user();
  wchar_t *self = NULL;
  PSECURITY_DESCRIPTOR sd = NULL;
  int rc = -1, code = ENOMEM;
  if (wide == NULL || user == NULL ||
      !ConvertSidToStringSidW(user->User.Sid, &self))
    goto done;
  MultiByteToWideChar(CP_UTF8, 0, path, -1, wide, n);
  wchar_t sddl[512];
  _snwprintf(sddl, sizeof sddl / sizeof sddl[0],
             L"D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;%ls)", self);
  sddl[sizeof sddl / sizeof sddl[0] - 1] = L'\0';
  if (!ConvertStringSecurityDescriptorToSecurityDescriptorW(
          sddl, SDDL_REVISION_1, &sd, NULL))
    goto done;
  SECURITY_ATTRIBUTES sa = {sizeof sa, sd, FALSE};
  if (CreateDirectoryW(wide, &sa)) {
    rc = 0;
    goto done;
  }
  code = EACCES;
  if (GetLastError() != ERROR_ALREADY_EXISTS) {
    log_write(LOG_ERROR, "shadow", "cannot create the folder %s (error %lu)",
              path, (unsigned long)GetLastError());
    goto done;
  }
  /* Left by an earlier run with this pid, or made by someone else in
   * advance: kept only if no one else could have put anything in it. */
  PSECURITY_DESCRIPTOR found = NULL;
  DWORD e = GetNamedSecurityInfoW(wide, SE_FILE_OBJECT,
                                  OWNER_SECURITY_INFORMATION |
                                      DACL_SECURITY_INFORMATION,
                                  NULL, NULL, NULL, NULL, &found);
  if (e != ERROR_SUCCESS) {
    log_write(LOG_ERROR, "shadow",
              "cannot read the permissions of the existing folder %s (error "
              "%lu)",
              path, (unsigned long)e);
    goto done;
  }
  int trusted = trust_win_decide(found, user->User.Sid, TRUST_WIN_FOLDER, path,
                                 why, sizeof why) == 0;
  LocalFree(found);
  if (!trusted) {
    log_write(LOG_ERROR, "shadow", "refusing the existing folder: %s", why);
    goto done;
  }
  BOOL present = FALSE, defaulted = FALSE;
  PACL dacl = NULL;
  GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted);
  e = SetNamedSecurityInfoW(wide, SE_FILE_OBJECT,
                            DACL_SECURITY_INFORMATION |
                                PROTECTED_DACL_SECURITY_INFORMATION,
                            NULL, NULL, dacl, NULL);
  if (e != ERROR_SUCCESS) {
    log_write(LOG_ERROR, "shadow",
              "cannot set the permissions of %s (error "
              "%lu)",
              path, (unsigned long)e);
    goto done;
  }
  rc = 0;
done:
  if (sd)
    LocalFree(sd);
  if (self)
    LocalFree(self);
  free(user);
  free(wide);
  return rc == 0 ? 0 : fail_errno(code);
}
/* ---- the host's trust decision (trust.h), for Windows ---- */

static wchar_t *utf8_to_wide(const char *text) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text, -1, NULL, 0);
  wchar_t *wide = n > 0 ? malloc((size_t)n * sizeof *wide) : NULL;
  if (wide != NULL)
    MultiByteToWideChar(CP_UTF8, 0, text, -1, wide, n);
  return wide;
}

static void system_text(DWORD code, char *out, size_t len) {
  DWORD n =
      FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                     NULL, code, 0, out, (DWORD)len, NULL);
  while (n > 0 && (out[n - 1] == '\r' || out[n - 1] == '\n' ||
                   out[n - 1] == ' ' || out[n - 1] == '.'))
    out[--n] = '\0';
  if (n == 0)
    snprintf(out, len, "error %lu", (unsigned long)code);
}

int trust_open_plugin_file(const char *path, char *reason, size_t len) {
  wchar_t *wide = utf8_to_wide(path);
  wchar_t *full = wide ? full_path(wide) : NULL;
  free(wide);
  if (full == NULL) {
    snprintf(reason, len, "cannot resolve the path %s", path);
    return -1;
  }
  /* Shared for reading only: while it is open no one can write, rename or
   * delete it, so what is checked next is what the caller reads. */
  HANDLE h = CreateFileW(full, GENERIC_READ, FILE_SHARE_READ, NULL,
                         OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
  if (h == INVALID_HANDLE_VALUE) {
    char text[512];
    system_text(GetLastError(), text, sizeof text);
    snprintf(reason, len, "cannot read %s: %s", path, text);
    free(full);
    return -1;
  }
  int rc = check_chains(full, TRUST_WIN_FILE, reason, len);
  free(full);
  int fd = rc == 0 ? _open_osfhandle((intptr_t)h, _O_RDONLY | _O_BINARY) : -1;
  if (fd < 0) {
    if (rc == 0)
      snprintf(reason, len, "cannot read %s: out of descriptors", path);
    CloseHandle(h);
  }
  return fd;
}

int trust_prepare_runtime_dir(const char *path, char *reason, size_t len) {
  wchar_t *wide = utf8_to_wide(path);
  wchar_t *full = wide ? full_path(wide) : NULL;
  free(wide);
  if (full == NULL) {
    snprintf(reason, len, "cannot resolve the path %s", path);
    return -1;
  }
  DWORD attributes = GetFileAttributesW(full);
  if (attributes == INVALID_FILE_ATTRIBUTES) {
    /* Missing: its missing parents as usual, itself private. */
    size_t n = wcslen(full), root = root_length(full);
    for (size_t i = root; i < n; i++) {
      if (full[i] != L'\\' && full[i] != L'/')
        continue;
      wchar_t saved = full[i];
      full[i] = L'\0';
      CreateDirectoryW(full, NULL); /* one there already is fine */
      full[i] = saved;
    }
    char full8[1024];
    to_utf8(full, full8, sizeof full8);
    if (trust_win_make_private_dir(full8) != 0) {
      snprintf(reason, len,
               "cannot create %s: %s (create it or point runtime_dir at a "
               "writable folder)",
               path, strerror(errno));
      free(full);
      return -1;
    }
  } else if (!(attributes & FILE_ATTRIBUTE_DIRECTORY)) {
    snprintf(reason, len, "%s is not a folder: point runtime_dir at a folder",
             path);
    free(full);
    return -1;
  }
  int rc = check_chains(full, TRUST_WIN_FOLDER, reason, len);
  free(full);
  return rc;
}
#endif /* _WIN32 */
