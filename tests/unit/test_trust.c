/*
 * Trust on POSIX (host/app/trust.h): the decisions, one step at a time,
 * with made-up owners and modes (any uid, no root needed); then the walk
 * over real folders and links: what it opens is what it checked.
 * Other users' files on disk are tested as root by the integration tests
 * (test_hostile_plugin_perms.py, test_trust_runtime_dir.py).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trust.h"

#define USER ((uid_t)1000)
#define OTHER ((uid_t)65534)

static char reason[2048];

static struct stat made(uid_t uid, mode_t mode) {
  struct stat st;
  memset(&st, 0, sizeof st);
  st.st_uid = uid;
  st.st_mode = mode;
  return st;
}

static void assert_contains(const char *text, const char *part) {
  ck_assert_msg(strstr(text, part) != NULL, "expected \"%s\" in: %s", part,
                text);
}

static int entry(uid_t folder_uid, mode_t folder_mode, uid_t entry_uid,
                 mode_t entry_mode) {
  struct stat folder = made(folder_uid, S_IFDIR | folder_mode);
  struct stat e = made(entry_uid, entry_mode);
  reason[0] = '\0';
  return trust_check_entry(&folder, "/srv/plugins", &e, "/srv/plugins/x.so",
                           USER, reason, sizeof reason);
}

/* ---- one step: an entry in its folder ---- */

START_TEST(entries_of_the_user_or_root_in_their_folders_are_trusted) {
  ck_assert_int_eq(entry(USER, 0755, USER, S_IFREG | 0755), 0);
  ck_assert_int_eq(entry(0, 0755, USER, S_IFREG | 0644), 0);
  ck_assert_int_eq(entry(USER, 0700, 0, S_IFDIR | 0755), 0);
  ck_assert_int_eq(entry(0, 0755, 0, S_IFLNK | 0777), 0);
}
END_TEST

START_TEST(a_folder_of_another_user_is_refused_naming_it_and_its_owner) {
  ck_assert_int_eq(entry(OTHER, 0755, USER, S_IFREG | 0755), -1);
  assert_contains(reason, "the folder /srv/plugins is owned by uid 65534");
  assert_contains(reason, "uid 1000");
  assert_contains(reason, "chown 1000 /srv/plugins");
}
END_TEST

START_TEST(an_entry_of_another_user_is_refused_whatever_it_is) {
  ck_assert_int_eq(entry(USER, 0755, OTHER, S_IFREG | 0644), -1);
  assert_contains(reason, "the file /srv/plugins/x.so is owned by uid 65534");
  ck_assert_int_eq(entry(USER, 0755, OTHER, S_IFDIR | 0755), -1);
  assert_contains(reason, "the folder /srv/plugins/x.so is owned by uid");
  ck_assert_int_eq(entry(USER, 0755, OTHER, S_IFLNK | 0777), -1);
  assert_contains(reason, "the link /srv/plugins/x.so is owned by uid");
}
END_TEST

START_TEST(a_folder_others_may_write_is_refused_unless_sticky) {
  ck_assert_int_eq(entry(USER, 0757, USER, S_IFREG | 0755), -1);
  assert_contains(reason, "its folder /srv/plugins is writable by other "
                          "users (mode 0757)");
  assert_contains(reason, "chmod o-w /srv/plugins");
  ck_assert_int_eq(entry(0, 0777, USER, S_IFREG | 0755), -1);
  assert_contains(reason, "chmod go-w /srv/plugins");
  /* Like /tmp: only the entry's owner (trusted) may rename or delete it. */
  ck_assert_int_eq(entry(0, 01777, USER, S_IFREG | 0755), 0);
  ck_assert_int_eq(entry(0, 01777, 0, S_IFDIR | 0700), 0);
}
END_TEST

START_TEST(a_sticky_folder_does_not_make_another_users_entry_safe) {
  ck_assert_int_eq(entry(0, 01777, OTHER, S_IFREG | 0755), -1);
  assert_contains(reason, "owned by uid 65534");
}
END_TEST

START_TEST(a_folder_its_group_may_write_is_refused) {
  ck_assert_int_eq(entry(USER, 0775, USER, S_IFREG | 0755), -1);
  assert_contains(reason, "writable by its group (mode 0775)");
  assert_contains(reason, "chmod g-w /srv/plugins");
}
END_TEST

/* ---- the plugin file itself ---- */

START_TEST(a_plugin_file_must_be_regular_and_written_by_its_owner_only) {
  struct stat f = made(USER, S_IFREG | 0755);
  ck_assert_int_eq(trust_check_file(&f, "/p/x.so", reason, sizeof reason), 0);
  f = made(USER, S_IFREG | 0775);
  ck_assert_int_eq(trust_check_file(&f, "/p/x.so", reason, sizeof reason), -1);
  assert_contains(reason, "the file /p/x.so is writable by its group");
  assert_contains(reason, "chmod g-w /p/x.so");
  f = made(USER, S_IFREG | 0757);
  ck_assert_int_eq(trust_check_file(&f, "/p/x.so", reason, sizeof reason), -1);
  assert_contains(reason, "writable by other users (mode 0757)");
  assert_contains(reason, "chmod o-w /p/x.so");
  f = made(USER, S_IFIFO | 0600);
  ck_assert_int_eq(trust_check_file(&f, "/p/x.so", reason, sizeof reason), -1);
  assert_contains(reason, "not a regular file");
}
END_TEST

/* ---- runtime_dir ---- */

static int private_dir(uid_t owner, mode_t mode, uid_t user) {
  struct stat d = made(owner, mode);
  reason[0] = '\0';
  return trust_check_private_dir(&d, "/run/x", user, reason, sizeof reason);
}

START_TEST(runtime_dir_must_be_the_users_own_and_closed_to_others) {
  ck_assert_int_eq(private_dir(USER, S_IFDIR | 0700, USER), 0);
  ck_assert_int_eq(private_dir(USER, S_IFDIR | 0755, USER), 0);
  ck_assert_int_eq(private_dir(0, S_IFDIR | 0700, 0), 0);
  /* Root's folder is not the host user's: the host must own what it makes
   * there, and would need to change the folder to get that. */
  ck_assert_int_eq(private_dir(0, S_IFDIR | 0755, USER), -1);
  assert_contains(reason, "the folder /run/x is owned by uid 0");
  ck_assert_int_eq(private_dir(OTHER, S_IFDIR | 0700, USER), -1);
  assert_contains(reason, "owned by uid 65534");
}
END_TEST

START_TEST(a_shared_runtime_dir_is_refused_with_its_mode_never_changed) {
  ck_assert_int_eq(private_dir(USER, S_IFDIR | 01777, USER), -1);
  assert_contains(reason, "/run/x is writable by other users (mode 1777)");
  assert_contains(reason, "never changes the mode of a folder it did not "
                          "create");
  ck_assert_int_eq(private_dir(USER, S_IFDIR | 0770, USER), -1);
  assert_contains(reason, "writable by its group (mode 0770)");
  ck_assert_int_eq(private_dir(USER, S_IFREG | 0700, USER), -1);
  assert_contains(reason, "not a folder");
}
END_TEST

/* ---- the walk, on real folders ---- */

static char root[PATH_MAX];

static void setup(void) {
  snprintf(root, sizeof root, "%s/test_trust.XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(root));
  ck_assert_int_eq(chmod(root, 0755), 0);
}

static void teardown(void) {
  char command[PATH_MAX + 32];
  snprintf(command, sizeof command, "rm -rf '%s'", root);
  ck_assert_int_eq(system(command), 0);
}

static const char *at(const char *relative) {
  static char paths[4][PATH_MAX + 64];
  static int next;
  char *p = paths[next++ % 4];
  snprintf(p, sizeof paths[0], "%s/%s", root, relative);
  return p;
}

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  ck_assert_int_eq(chmod(path, mode), 0);
}

static void make_dir(const char *path, mode_t mode) {
  ck_assert_int_eq(mkdir(path, mode), 0);
  ck_assert_int_eq(chmod(path, mode), 0);
}

/* What the descriptor holds, as a string. */
static const char *read_fd(int fd) {
  static char text[256];
  ssize_t n = read(fd, text, sizeof text - 1);
  ck_assert_int_ge(n, 0);
  text[n] = '\0';
  return text;
}

START_TEST(the_walk_follows_relative_and_absolute_links_and_dotdot) {
  make_dir(at("lib"), 0755);
  make_dir(at("lib/v1"), 0755);
  write_file(at("lib/v1/game.so"), "v1", 0755);
  make_dir(at("deploy"), 0755);
  ck_assert_int_eq(symlink("../lib/v1/game.so", at("deploy/rel.so")), 0);
  ck_assert_int_eq(symlink(at("lib/v1"), at("deploy/current")), 0);
  ck_assert_int_eq(symlink("current/game.so", at("deploy/abs.so")), 0);
  const char *paths[] = {at("deploy/rel.so"), at("deploy/abs.so"),
                         at("deploy/./current/../v1/game.so")};
  for (size_t i = 0; i < 3; i++) {
    int fd = trust_open_plugin_file(paths[i], reason, sizeof reason);
    ck_assert_msg(fd >= 0, "%s: %s", paths[i], reason);
    ck_assert_str_eq(read_fd(fd), "v1");
    close(fd);
  }
}
END_TEST

START_TEST(the_walk_checks_the_folder_of_a_link_and_of_its_target) {
  make_dir(at("safe"), 0755);
  write_file(at("safe/game.so"), "x", 0755);
  make_dir(at("open"), 0777);
  ck_assert_int_eq(symlink(at("safe/game.so"), at("open/game.so")), 0);
  ck_assert_int_eq(
      trust_open_plugin_file(at("open/game.so"), reason, sizeof reason), -1);
  assert_contains(reason, "its folder ");
  assert_contains(reason, at("open"));
  /* And the other way round: a safe link to a file in an open folder. */
  write_file(at("open/real.so"), "x", 0755);
  ck_assert_int_eq(symlink(at("open/real.so"), at("safe/link.so")), 0);
  ck_assert_int_eq(
      trust_open_plugin_file(at("safe/link.so"), reason, sizeof reason), -1);
  assert_contains(reason, at("open"));
  assert_contains(reason, "writable by other users");
}
END_TEST

START_TEST(the_walk_refuses_a_link_loop_and_what_is_not_a_file) {
  ck_assert_int_eq(symlink("b.so", at("a.so")), 0);
  ck_assert_int_eq(symlink("a.so", at("b.so")), 0);
  ck_assert_int_eq(trust_open_plugin_file(at("a.so"), reason, sizeof reason),
                   -1);
  assert_contains(reason, "more than 40 links");
  make_dir(at("folder.so"), 0755);
  ck_assert_int_eq(
      trust_open_plugin_file(at("folder.so"), reason, sizeof reason), -1);
  assert_contains(reason, "is a folder, not a file");
  ck_assert_int_eq(
      trust_open_plugin_file(at("missing.so"), reason, sizeof reason), -1);
  assert_contains(reason, "No such file or directory");
  assert_contains(reason, at("missing.so"));
}
END_TEST

START_TEST(the_descriptor_is_the_checked_file_whatever_the_path_becomes) {
  make_dir(at("p"), 0755);
  write_file(at("p/game.so"), "checked", 0755);
  int fd = trust_open_plugin_file(at("p/game.so"), reason, sizeof reason);
  ck_assert_msg(fd >= 0, "%s", reason);
  /* Swapped after the check: the copy still gets what was checked. */
  write_file(at("p/other.so"), "swapped", 0757);
  ck_assert_int_eq(rename(at("p/other.so"), at("p/game.so")), 0);
  ck_assert_str_eq(read_fd(fd), "checked");
  close(fd);
}
END_TEST

START_TEST(a_private_dir_is_created_with_its_parents_mode_0700) {
  int fd = trust_open_private_dir(at("a/b/run"), 1, reason, sizeof reason);
  ck_assert_msg(fd >= 0, "%s", reason);
  close(fd);
  struct stat st;
  ck_assert_int_eq(stat(at("a/b/run"), &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0700);
  ck_assert_int_eq(st.st_uid, geteuid());
  /* Opening without create does not make anything. */
  ck_assert_int_eq(trust_open_private_dir(at("c"), 0, reason, sizeof reason),
                   -1);
  assert_contains(reason, "No such file or directory");
  ck_assert_int_eq(access(at("c"), F_OK), -1);
}
END_TEST

START_TEST(nothing_is_created_inside_a_folder_others_may_write) {
  make_dir(at("open"), 0777);
  ck_assert_int_eq(
      trust_open_private_dir(at("open/run"), 1, reason, sizeof reason), -1);
  assert_contains(reason, at("open"));
  assert_contains(reason, "writable by other users");
  ck_assert_int_eq(access(at("open/run"), F_OK), -1);
  struct stat st;
  ck_assert_int_eq(stat(at("open"), &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0777);
}
END_TEST

START_TEST(a_link_in_place_of_runtime_dir_is_walked_not_trusted_blindly) {
  make_dir(at("open"), 0777);
  ck_assert_int_eq(symlink(at("open"), at("run")), 0);
  ck_assert_int_eq(trust_open_private_dir(at("run"), 1, reason, sizeof reason),
                   -1);
  assert_contains(reason, "writable by other users (mode 0777)");
}
END_TEST

static Suite *trust_suite(void) {
  Suite *s = suite_create("trust");
  TCase *steps = tcase_create("steps");
  tcase_add_test(steps,
                 entries_of_the_user_or_root_in_their_folders_are_trusted);
  tcase_add_test(steps,
                 a_folder_of_another_user_is_refused_naming_it_and_its_owner);
  tcase_add_test(steps, an_entry_of_another_user_is_refused_whatever_it_is);
  tcase_add_test(steps, a_folder_others_may_write_is_refused_unless_sticky);
  tcase_add_test(steps, a_sticky_folder_does_not_make_another_users_entry_safe);
  tcase_add_test(steps, a_folder_its_group_may_write_is_refused);
  tcase_add_test(steps,
                 a_plugin_file_must_be_regular_and_written_by_its_owner_only);
  tcase_add_test(steps, runtime_dir_must_be_the_users_own_and_closed_to_others);
  tcase_add_test(steps,
                 a_shared_runtime_dir_is_refused_with_its_mode_never_changed);
  suite_add_tcase(s, steps);

  TCase *walk = tcase_create("walk");
  tcase_add_checked_fixture(walk, setup, teardown);
  tcase_add_test(walk, the_walk_follows_relative_and_absolute_links_and_dotdot);
  tcase_add_test(walk, the_walk_checks_the_folder_of_a_link_and_of_its_target);
  tcase_add_test(walk, the_walk_refuses_a_link_loop_and_what_is_not_a_file);
  tcase_add_test(walk,
                 the_descriptor_is_the_checked_file_whatever_the_path_becomes);
  tcase_add_test(walk, a_private_dir_is_created_with_its_parents_mode_0700);
  tcase_add_test(walk, nothing_is_created_inside_a_folder_others_may_write);
  tcase_add_test(walk,
                 a_link_in_place_of_runtime_dir_is_walked_not_trusted_blindly);
  suite_add_tcase(s, walk);
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(trust_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
