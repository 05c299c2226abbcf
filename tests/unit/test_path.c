/* Paths as the host shows them (path.h): lexical normalisation. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "path.h"

static void expect(const char *given, const char *expected) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", given);
  path_normalise(buf);
  ck_assert_msg(strcmp(buf, expected) == 0, "\"%s\" became \"%s\", not \"%s\"",
                given, buf, expected);
}

START_TEST(a_parent_folder_step_folds_away) {
  expect("/srv/game/conf/../build/plugins/echo/echo.so",
         "/srv/game/build/plugins/echo/echo.so");
  expect("conf/../build/plugins/echo/echo.so", "build/plugins/echo/echo.so");
  expect("/a/b/c/../../d", "/a/d");
}
END_TEST

START_TEST(dots_and_repeated_separators_go) {
  expect("/srv//game/./conf/", "/srv/game/conf");
  expect("./run", "run");
  expect("a/./b/.", "a/b");
  expect("/", "/");
#ifndef _WIN32
  expect("//", "/"); /* on Windows the start of a UNC path */
#endif
}
END_TEST

START_TEST(a_path_that_folds_to_nothing_is_dot) {
  expect("", ".");
  expect(".", ".");
  expect("a/..", ".");
  expect("./a/b/../..", ".");
}
END_TEST

START_TEST(a_relative_path_keeps_its_leading_parent_steps) {
  expect("../build/echo", "../build/echo");
  expect("../../x/../y", "../../y");
  expect("a/../../b", "../b");
}
END_TEST

START_TEST(an_absolute_path_cannot_climb_above_its_root) {
  expect("/../etc", "/etc");
  expect("/a/../../b", "/b");
}
END_TEST

START_TEST(paths_already_normal_are_unchanged) {
  expect("/srv/game/build/plugins/echo/echo.so",
         "/srv/game/build/plugins/echo/echo.so");
  expect("plugins/echo", "plugins/echo");
  expect("a..b/.c/..d", "a..b/.c/..d");
}
END_TEST

#ifdef _WIN32
START_TEST(windows_drives_unc_and_either_separator) {
  expect("C:\\games\\conf\\..\\build\\echo.dll", "C:\\games\\build\\echo.dll");
  expect("C:/games/conf/../build/echo.dll", "C:/games/build/echo.dll");
  expect("C:\\games/conf\\..\\build", "C:\\games\\build");
  expect("C:\\..\\x", "C:\\x");
  expect("\\\\server\\share\\a\\..\\b", "\\\\server\\share\\b");
}
END_TEST
#endif

int main(void) {
  Suite *s = suite_create("path");
  TCase *tc = tcase_create("normalise");
  tcase_add_test(tc, a_parent_folder_step_folds_away);
  tcase_add_test(tc, dots_and_repeated_separators_go);
  tcase_add_test(tc, a_path_that_folds_to_nothing_is_dot);
  tcase_add_test(tc, a_relative_path_keeps_its_leading_parent_steps);
  tcase_add_test(tc, an_absolute_path_cannot_climb_above_its_root);
  tcase_add_test(tc, paths_already_normal_are_unchanged);
#ifdef _WIN32
  tcase_add_test(tc, windows_drives_unc_and_either_separator);
#endif
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
