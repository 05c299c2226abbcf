/*
 * Windows only: the decision whether a plugin file may be loaded, from
 * security descriptors built here from SDDL (so it runs under Wine whatever
 * Wine keeps on disk), then trust_win_check_path on files of this build.
 *
 * The host's account in these descriptors is SELF, another local user is
 * OTHER; SY, BA are SYSTEM and Administrators; BU, AU, WD, IU are Users,
 * Authenticated Users, Everyone and INTERACTIVE.
 */
#include <check.h>
#include <io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trust_win.h"

#include <aclapi.h>
#include <sddl.h>

#define SELF "S-1-5-21-1111-2222-3333-1001"
#define OTHER "S-1-5-21-1111-2222-3333-1002"
#define TRUSTED_INSTALLER                                                      \
  "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
#define PATH "C:\\games\\plugins\\echo.dll"

/* Read and execute, the rights everyone may have. */
#define RX "0x1200a9"
/* Modify: read, write, append, delete ("M" in icacls). */
#define MODIFY "0x1301bf"

static PSID self_sid(void) {
  static PSID sid;
  if (sid == NULL)
    ck_assert(ConvertStringSidToSidA(SELF, &sid));
  return sid;
}

static char why[2048];

/* The decision on a descriptor given as SDDL; the reason is left in why. */
static int decide(const char *sddl, trust_win_kind_t kind) {
  PSECURITY_DESCRIPTOR sd = NULL;
  ck_assert_msg(ConvertStringSecurityDescriptorToSecurityDescriptorA(
                    sddl, SDDL_REVISION_1, &sd, NULL),
                "bad SDDL in the test: %s (error %lu)", sddl,
                (unsigned long)GetLastError());
  why[0] = '\0';
  int rc = trust_win_decide(sd, self_sid(), kind, PATH, why, sizeof why);
  LocalFree(sd);
  return rc;
}

static void assert_contains(const char *part) {
  ck_assert_msg(strstr(why, part) != NULL, "expected \"%s\" in: %s", part, why);
}

static void assert_lacks(const char *part) {
  ck_assert_msg(strstr(why, part) == NULL, "did not expect \"%s\" in: %s", part,
                why);
}

/* Refused, with one line naming the path, the principal (by SID) and each
 * right given, and an icacls command. */
static void assert_refused(const char *sddl, trust_win_kind_t kind,
                           const char *sid, const char *right) {
  ck_assert_msg(decide(sddl, kind) == -1, "accepted: %s", sddl);
  ck_assert_msg(strchr(why, '\n') == NULL, "not one line: %s", why);
  assert_contains(PATH);
  assert_contains(sid);
  assert_contains(right);
  assert_contains("icacls \"" PATH "\"");
}

static void assert_trusted(const char *sddl, trust_win_kind_t kind) {
  ck_assert_msg(decide(sddl, kind) == 0, "refused %s: %s", sddl, why);
}

/* ---- who may hold the rights ---- */

START_TEST(accepts_full_control_for_self_system_and_administrators) {
  assert_trusted("O:BAD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" SELF ")(A;;" RX
                 ";;;BU)",
                 TRUST_WIN_FILE);
  assert_trusted("O:" SELF "D:P(A;;FA;;;" SELF ")", TRUST_WIN_FOLDER);
}
END_TEST

START_TEST(accepts_trusted_installer_as_in_program_files) {
  assert_trusted("O:" TRUSTED_INSTALLER "D:P(A;;FA;;;" TRUSTED_INSTALLER
                 ")(A;;FA;;;SY)(A;;FA;;;BA)(A;;" RX ";;;BU)",
                 TRUST_WIN_ANCESTOR);
}
END_TEST

START_TEST(refuses_write_by_users) {
  assert_refused("O:BAD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;0x120116;;;BU)",
                 TRUST_WIN_FILE, "S-1-5-32-545", "write (WD)");
  assert_contains("append (AD)");
  assert_contains("/remove:g *S-1-5-32-545");
  assert_contains("could replace the code the host runs");
}
END_TEST

START_TEST(refuses_another_users_append_delete_dac_and_ownership) {
  static const struct {
    const char *mask, *right;
  } cases[] = {
      {"0x4", "append (AD)"},
      {"0x10000", "delete (D)"},
      {"0x40000", "change permissions (WDAC)"},
      {"0x80000", "take ownership (WO)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char sddl[256];
    snprintf(sddl, sizeof sddl, "O:BAD:P(A;;FA;;;SY)(A;;%s;;;" OTHER ")",
             cases[i].mask);
    assert_refused(sddl, TRUST_WIN_FILE, OTHER, cases[i].right);
    assert_lacks("write (WD)");
  }
}
END_TEST

START_TEST(refuses_generic_write_and_generic_all) {
  assert_refused("O:BAD:(A;;GW;;;IU)", TRUST_WIN_FILE, "S-1-5-4", "write (WD)");
  assert_refused("O:BAD:(A;;GA;;;AU)", TRUST_WIN_FILE, "S-1-5-11",
                 "take ownership (WO)");
}
END_TEST

START_TEST(accepts_read_and_execute_for_everyone) {
  assert_trusted("O:BAD:(A;;FA;;;SY)(A;;" RX ";;;WD)(A;;" RX ";;;BU)",
                 TRUST_WIN_FILE);
  /* Reading attributes and extended attributes, writing them: not code. */
  assert_trusted("O:BAD:(A;;0x1201b9;;;AU)", TRUST_WIN_FILE);
}
END_TEST

/* A descriptor owned by Administrators with a NULL DACL (built by hand:
 * Wine's SDDL parser reads "D:NO_ACCESS_CONTROL" as an empty DACL). */
static int decide_null_dacl(trust_win_kind_t kind) {
  SECURITY_DESCRIPTOR sd;
  PSID admins = NULL;
  ck_assert(ConvertStringSidToSidA("S-1-5-32-544", &admins));
  ck_assert(InitializeSecurityDescriptor(&sd, SECURITY_DESCRIPTOR_REVISION));
  ck_assert(SetSecurityDescriptorOwner(&sd, admins, FALSE));
  ck_assert(SetSecurityDescriptorDacl(&sd, TRUE, NULL, FALSE));
  why[0] = '\0';
  int rc = trust_win_decide(&sd, self_sid(), kind, PATH, why, sizeof why);
  LocalFree(admins);
  return rc;
}

START_TEST(refuses_a_null_dacl) {
  ck_assert_int_eq(decide_null_dacl(TRUST_WIN_FILE), -1);
  assert_contains("has no DACL");
  assert_contains("everyone");
  assert_contains("icacls \"" PATH "\" /reset");
  ck_assert_int_eq(decide_null_dacl(TRUST_WIN_ANCESTOR), -1);
}
END_TEST

START_TEST(accepts_an_empty_dacl) {
  /* Nobody at all may do anything: nothing for anyone else to abuse. */
  assert_trusted("O:BAD:P", TRUST_WIN_FILE);
}
END_TEST

/* ---- inherited and explicit entries ---- */

START_TEST(refuses_an_inherited_grant_saying_where_to_fix_it) {
  assert_refused("O:BAD:AI(A;ID;FA;;;SY)(A;ID;" MODIFY ";;;WD)", TRUST_WIN_FILE,
                 "S-1-1-0", "write (WD)");
  assert_contains("inherited");
  assert_contains("/inheritance:d");
  assert_contains("/remove:g *S-1-1-0");
}
END_TEST

START_TEST(ignores_inherit_only_entries_on_the_object_itself) {
  /* C:\'s "Authenticated Users:(OI)(CI)(IO)(M)": for what is created
   * inside, not for C:\ itself. */
  assert_trusted("O:BAD:(A;OICI;FA;;;SY)(A;OICIIO;" MODIFY ";;;AU)(A;OICI;" RX
                 ";;;BU)",
                 TRUST_WIN_FOLDER);
  assert_refused("O:BAD:(A;OICI;FA;;;SY)(A;OICI;" MODIFY ";;;AU)",
                 TRUST_WIN_FOLDER, "S-1-5-11", "add files (WD)");
}
END_TEST

/* ---- deny entries ---- */

START_TEST(a_deny_before_the_allow_takes_the_rights_away) {
  /* 0xd0006: write, append, delete, change permissions, take ownership. */
  assert_trusted("O:BAD:(D;;0xd0006;;;BU)(A;;" MODIFY ";;;BU)", TRUST_WIN_FILE);
  /* Everyone covers every principal. */
  assert_trusted("O:BAD:(D;;0xd0006;;;WD)(A;;" MODIFY ";;;" OTHER ")",
                 TRUST_WIN_FILE);
}
END_TEST

START_TEST(a_deny_after_the_allow_takes_nothing_away) {
  assert_refused("O:BAD:(A;;" MODIFY ";;;BU)(D;;0xd0006;;;BU)", TRUST_WIN_FILE,
                 "S-1-5-32-545", "write (WD)");
}
END_TEST

START_TEST(a_deny_for_a_narrower_group_does_not_cover_a_wider_one) {
  /* Denying Users leaves Authenticated Users' grant to those not in
   * Users. */
  assert_refused("O:BAD:(D;;0xd0006;;;BU)(A;;" MODIFY ";;;AU)", TRUST_WIN_FILE,
                 "S-1-5-11", "write (WD)");
}
END_TEST

START_TEST(a_partial_deny_leaves_the_other_rights) {
  assert_refused("O:BAD:(D;;SD;;;BU)(A;;" MODIFY ";;;BU)", TRUST_WIN_FILE,
                 "S-1-5-32-545", "write (WD)");
  assert_lacks("delete (D)");
}
END_TEST

/* ---- folders ---- */

START_TEST(refuses_adding_files_or_subfolders_to_the_plugins_folder) {
  /* C:\ProgramData's default for Users: add files and subfolders. */
  assert_refused("O:BAD:AI(A;OICIID;FA;;;SY)(A;CIID;0x100116;;;BU)",
                 TRUST_WIN_FOLDER, "S-1-5-32-545", "add files (WD)");
  assert_contains("add subfolders (AD)");
  assert_contains("its folder " PATH);
  assert_contains("another DLL");
  assert_refused("O:BAD:(A;;0x100004;;;AU)", TRUST_WIN_FOLDER, "S-1-5-11",
                 "add subfolders (AD)");
}
END_TEST

START_TEST(a_folder_above_may_let_others_add_but_not_delete_or_relabel) {
  /* C:\'s "Authenticated Users:(AD)": a new folder replaces nothing. */
  assert_trusted("O:BAD:(A;OICI;FA;;;SY)(A;;0x100004;;;AU)",
                 TRUST_WIN_ANCESTOR);
  assert_refused("O:BAD:(A;;0x100040;;;WD)", TRUST_WIN_ANCESTOR, "S-1-1-0",
                 "delete what it holds (DC)");
  assert_contains("the folder above it " PATH);
  assert_refused("O:BAD:(A;;WD;;;" OTHER ")", TRUST_WIN_ANCESTOR, OTHER,
                 "change permissions (WDAC)");
}
END_TEST

/* ---- owners ---- */

START_TEST(refuses_a_file_another_user_owns) {
  ck_assert_int_eq(
      decide("O:" OTHER "D:P(A;;FA;;;SY)(A;;FA;;;BA)", TRUST_WIN_FILE), -1);
  assert_contains("is owned by");
  assert_contains(OTHER);
  assert_contains("icacls \"" PATH "\" /setowner *S-1-5-32-544");
}
END_TEST

START_TEST(owner_rights_entries_replace_what_an_owner_may_do) {
  /* OWNER RIGHTS (S-1-3-4) read and execute only: the other user owns it
   * but may not change its permissions. */
  assert_trusted("O:" OTHER "D:P(A;;FA;;;SY)(A;;" RX ";;;S-1-3-4)",
                 TRUST_WIN_FILE);
  assert_refused("O:" OTHER "D:P(A;;FA;;;SY)(A;;" MODIFY ";;;S-1-3-4)",
                 TRUST_WIN_FILE, OTHER, "write (WD)");
}
END_TEST

START_TEST(creator_owner_entries_grant_no_one_on_the_object) {
  assert_trusted("O:BAD:(A;;FA;;;CO)(A;;FA;;;CG)", TRUST_WIN_FOLDER);
}
END_TEST

/* ---- the file system ---- */

#define WORK_DIR TEST_BINARY_DIR "/tests/unit/trust_win"

static void to_wide(const char *text, wchar_t *out, size_t len) {
  ck_assert(MultiByteToWideChar(CP_UTF8, 0, text, -1, out, (int)len) > 0);
}

/* Gives path (a file or folder) exactly the DACL of sddl, not inherited. */
static void set_dacl(const char *path, const char *sddl) {
  PSECURITY_DESCRIPTOR sd = NULL;
  ck_assert(ConvertStringSecurityDescriptorToSecurityDescriptorA(
      sddl, SDDL_REVISION_1, &sd, NULL));
  BOOL present = FALSE, defaulted = FALSE;
  PACL dacl = NULL;
  ck_assert(GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted));
  wchar_t wide[1024];
  to_wide(path, wide, 1024);
  DWORD e = SetNamedSecurityInfoW(wide, SE_FILE_OBJECT,
                                  DACL_SECURITY_INFORMATION |
                                      PROTECTED_DACL_SECURITY_INFORMATION,
                                  NULL, NULL, dacl, NULL);
  LocalFree(sd);
  ck_assert_msg(e == ERROR_SUCCESS, "SetNamedSecurityInfoW(%s): error %lu",
                path, (unsigned long)e);
}

static int check_path(const char *path) {
  wchar_t wide[1024];
  to_wide(path, wide, 1024);
  why[0] = '\0';
  return trust_win_check_path(wide, why, sizeof why);
}

/* This process's user as a SID string (the host's account, in the checks
 * of real files). */
static const char *token_user_sid(void) {
  static char text[256];
  if (text[0])
    return text;
  HANDLE token = NULL;
  ck_assert(OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token));
  char buf[512];
  DWORD size = 0;
  ck_assert(GetTokenInformation(token, TokenUser, buf, sizeof buf, &size));
  CloseHandle(token);
  char *sid = NULL;
  ck_assert(ConvertSidToStringSidA(((TOKEN_USER *)buf)->User.Sid, &sid));
  snprintf(text, sizeof text, "%s", sid);
  LocalFree(sid);
  return text;
}

/* A fresh folder WORK_DIR/<name> holding plugin.dll, both with the DACL
 * "SYSTEM, Administrators, this process's user: full control; Everyone:
 * read and execute". Returns the file's path. */
static const char *make_plugin_file(const char *name) {
  static char file[1024];
  char folder[1024];
  snprintf(folder, sizeof folder, "%s/%s", WORK_DIR, name);
  snprintf(file, sizeof file, "%s/plugin.dll", folder);
  CreateDirectoryA(WORK_DIR, NULL);
  CreateDirectoryA(folder, NULL);
  FILE *f = fopen(file, "wb");
  ck_assert_ptr_nonnull(f);
  fputs("not really a DLL", f);
  fclose(f);
  char safe[512];
  snprintf(safe, sizeof safe,
           "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;%s)(A;OICI;" RX
           ";;;WD)",
           token_user_sid());
  set_dacl(folder, safe);
  set_dacl(file, safe);
  return file;
}

START_TEST(check_path_accepts_a_file_in_a_safe_folder) {
  const char *file = make_plugin_file("safe");
  ck_assert_msg(check_path(file) == 0, "%s", why);
}
END_TEST

START_TEST(check_path_refuses_a_file_everyone_may_write) {
  const char *file = make_plugin_file("file");
  char sddl[512];
  snprintf(sddl, sizeof sddl, "D:P(A;;FA;;;SY)(A;;FA;;;%s)(A;;" MODIFY ";;;WD)",
           token_user_sid());
  set_dacl(file, sddl);
  ck_assert_int_eq(check_path(file), -1);
  assert_contains("the file ");
  assert_contains("plugin.dll lets ");
  assert_contains("S-1-1-0");
  assert_contains("write (WD)");
}
END_TEST

START_TEST(check_path_refuses_a_folder_everyone_may_add_to) {
  const char *file = make_plugin_file("folder");
  char folder[1024];
  snprintf(folder, sizeof folder, "%s/folder", WORK_DIR);
  char sddl[512];
  snprintf(sddl, sizeof sddl,
           "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;%s)(A;OICI;" MODIFY ";;;WD)",
           token_user_sid());
  set_dacl(folder, sddl);
  ck_assert_int_eq(check_path(file), -1);
  assert_contains("its folder ");
  assert_contains("S-1-1-0");
  assert_contains("add files (WD)");
}
END_TEST

START_TEST(check_path_leaves_a_missing_file_to_the_loader) {
  ck_assert_int_eq(check_path(WORK_DIR "/no-such-folder/plugin.dll"), 0);
}
END_TEST

START_TEST(open_plugin_file_gives_the_checked_file_and_holds_it) {
  const char *file = make_plugin_file("open");
  char reason[2048] = "";
  int fd = trust_open_plugin_file(file, reason, sizeof reason);
  ck_assert_msg(fd >= 0, "%s", reason);
  char buf[64] = "";
  ck_assert_int_eq(_read(fd, buf, sizeof buf - 1), 16);
  ck_assert_str_eq(buf, "not really a DLL");
  /* While it is open, no one replaces or deletes it. */
  ck_assert(!DeleteFileA(file));
  FILE *f = fopen(file, "wb");
  ck_assert_ptr_null(f);
  _close(fd);
  ck_assert(DeleteFileA(file));
}
END_TEST

START_TEST(open_plugin_file_refuses_a_file_everyone_may_write) {
  const char *file = make_plugin_file("open-refused");
  char sddl[512];
  snprintf(sddl, sizeof sddl, "D:P(A;;FA;;;SY)(A;;FA;;;%s)(A;;" MODIFY ";;;WD)",
           token_user_sid());
  set_dacl(file, sddl);
  ck_assert_int_eq(trust_open_plugin_file(file, why, sizeof why), -1);
  assert_contains("S-1-1-0");
  assert_contains("write (WD)");
  ck_assert_int_eq(
      trust_open_plugin_file(WORK_DIR "/missing.dll", why, sizeof why), -1);
  assert_contains("cannot read");
}
END_TEST

/* The DACL of path as SDDL, in why. */
static void read_dacl(const char *path) {
  PSECURITY_DESCRIPTOR sd = NULL;
  ck_assert_int_eq(GetNamedSecurityInfoA(path, SE_FILE_OBJECT,
                                         DACL_SECURITY_INFORMATION, NULL, NULL,
                                         NULL, NULL, &sd),
                   ERROR_SUCCESS);
  char *text = NULL;
  ck_assert(ConvertSecurityDescriptorToStringSecurityDescriptorA(
      sd, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, &text, NULL));
  snprintf(why, sizeof why, "%s", text);
  LocalFree(text);
  LocalFree(sd);
}

START_TEST(prepare_runtime_dir_creates_a_private_folder) {
  const char *dir = WORK_DIR "/runtime-new/a/run";
  RemoveDirectoryA(dir);
  RemoveDirectoryA(WORK_DIR "/runtime-new/a");
  RemoveDirectoryA(WORK_DIR "/runtime-new");
  char reason[2048] = "";
  ck_assert_msg(trust_prepare_runtime_dir(dir, reason, sizeof reason) == 0,
                "%s", reason);
  ck_assert(GetFileAttributesA(dir) & FILE_ATTRIBUTE_DIRECTORY);
  /* Nothing for Everyone: not even reading (Wine derives it from the mode,
   * and reports no entry for Everyone then). */
  read_dacl(dir);
  assert_lacks(";WD)");
  /* Again, now that it exists: still trusted. */
  ck_assert_msg(trust_prepare_runtime_dir(dir, reason, sizeof reason) == 0,
                "%s", reason);
}
END_TEST

START_TEST(prepare_runtime_dir_refuses_and_keeps_a_folder_others_may_fill) {
  const char *dir = WORK_DIR "/runtime-shared";
  CreateDirectoryA(WORK_DIR, NULL);
  CreateDirectoryA(dir, NULL);
  char sddl[512];
  snprintf(sddl, sizeof sddl,
           "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;%s)(A;OICI;" MODIFY ";;;WD)",
           token_user_sid());
  set_dacl(dir, sddl);
  ck_assert_int_eq(trust_prepare_runtime_dir(dir, why, sizeof why), -1);
  assert_contains("runtime-shared");
  assert_contains("S-1-1-0");
  assert_contains("add files (WD)");
  /* Refused, not changed. */
  read_dacl(dir);
  assert_contains(";WD)");
}
END_TEST

static Suite *trust_suite(void) {
  Suite *s = suite_create("trust_win");
  TCase *decide_case = tcase_create("decide");
  tcase_add_test(decide_case,
                 accepts_full_control_for_self_system_and_administrators);
  tcase_add_test(decide_case, accepts_trusted_installer_as_in_program_files);
  tcase_add_test(decide_case, refuses_write_by_users);
  tcase_add_test(decide_case,
                 refuses_another_users_append_delete_dac_and_ownership);
  tcase_add_test(decide_case, refuses_generic_write_and_generic_all);
  tcase_add_test(decide_case, accepts_read_and_execute_for_everyone);
  tcase_add_test(decide_case, refuses_a_null_dacl);
  tcase_add_test(decide_case, accepts_an_empty_dacl);
  tcase_add_test(decide_case,
                 refuses_an_inherited_grant_saying_where_to_fix_it);
  tcase_add_test(decide_case,
                 ignores_inherit_only_entries_on_the_object_itself);
  tcase_add_test(decide_case, a_deny_before_the_allow_takes_the_rights_away);
  tcase_add_test(decide_case, a_deny_after_the_allow_takes_nothing_away);
  tcase_add_test(decide_case,
                 a_deny_for_a_narrower_group_does_not_cover_a_wider_one);
  tcase_add_test(decide_case, a_partial_deny_leaves_the_other_rights);
  tcase_add_test(decide_case,
                 refuses_adding_files_or_subfolders_to_the_plugins_folder);
  tcase_add_test(decide_case,
                 a_folder_above_may_let_others_add_but_not_delete_or_relabel);
  tcase_add_test(decide_case, refuses_a_file_another_user_owns);
  tcase_add_test(decide_case,
                 owner_rights_entries_replace_what_an_owner_may_do);
  tcase_add_test(decide_case, creator_owner_entries_grant_no_one_on_the_object);
  suite_add_tcase(s, decide_case);
  TCase *path_case = tcase_create("check_path");
  tcase_add_test(path_case, check_path_accepts_a_file_in_a_safe_folder);
  tcase_add_test(path_case, check_path_refuses_a_file_everyone_may_write);
  tcase_add_test(path_case, check_path_refuses_a_folder_everyone_may_add_to);
  tcase_add_test(path_case, check_path_leaves_a_missing_file_to_the_loader);
  tcase_add_test(path_case,
                 open_plugin_file_gives_the_checked_file_and_holds_it);
  tcase_add_test(path_case, open_plugin_file_refuses_a_file_everyone_may_write);
  tcase_add_test(path_case, prepare_runtime_dir_creates_a_private_folder);
  tcase_add_test(
      path_case,
      prepare_runtime_dir_refuses_and_keeps_a_folder_others_may_fill);
  suite_add_tcase(s, path_case);
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(trust_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
