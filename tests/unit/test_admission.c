/*
 * The admission of a file as a generation (host/app/admission.h): the one
 * decision run, check and reload share. Against the fixture plugins of
 * tests/fixtures/plugins: the descriptor's name must be the config's name,
 * every service's framing must be served, and (POSIX) a file other users
 * may write is refused before anything of it is loaded; an admitted file is
 * loaded from a copy of the very bytes checked.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "shadow.h"

#ifdef _WIN32
#define PLUGIN_SUFFIX ".dll"
#else
#define PLUGIN_SUFFIX ".so"
#include <sys/stat.h>
#include <unistd.h>
#endif

#define FIXTURE_DIR TEST_BINARY_DIR "/tests/fixtures/plugins/"

static char err[2048];

static const char *fixture(const char *name) {
  static char paths[2][1024];
  static int next;
  char *p = paths[next++ % 2];
  snprintf(p, sizeof paths[0], "%s%s%s", FIXTURE_DIR, name, PLUGIN_SUFFIX);
  return p;
}

static void assert_contains(const char *text, const char *part) {
  ck_assert_msg(strstr(text, part) != NULL, "expected \"%s\" in: %s", part,
                text);
}

/* A config with one service named service_name, serving plugin with the
 * given framing. */
static config_service_t service;
static config_t config;

static const config_t *served_by(const char *plugin, const char *service_name,
                                 config_framing_t framing) {
  memset(&service, 0, sizeof service);
  memset(&config, 0, sizeof config);
  service.name = (char *)service_name;
  service.plugin = (char *)plugin;
  service.framing = framing;
  config.services = &service;
  config.service_count = 1;
  return &config;
}

START_TEST(admits_a_plugin_whose_descriptor_carries_its_config_name) {
  plugin_admitted_t a;
  const config_t *c = served_by("fixture_ok", "game", CONFIG_FRAMING_PACKET);
  int rc = plugin_admit("fixture_ok", fixture("fixture_ok"), c, NULL, 1, &a,
                        err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_ptr_nonnull(a.module);
  ck_assert_ptr_null(a.shadow_path); /* check loads in place */
  uint64_t hash = 0;
  ck_assert_int_eq(file_hash(fixture("fixture_ok"), &hash, err, sizeof err), 0);
  ck_assert_uint_eq(a.hash, hash);
  plugin_admitted_release(&a);
  ck_assert_ptr_null(a.module);
}
END_TEST

START_TEST(refuses_a_file_whose_descriptor_names_another_plugin) {
  /* fixture_duplicate_name's descriptor says "fixture_ok": another
   * plugin's build copied over this one's file. */
  plugin_admitted_t a;
  const config_t *c =
      served_by("fixture_duplicate_name", "game", CONFIG_FRAMING_RAW);
  ck_assert_int_eq(plugin_admit("fixture_duplicate_name",
                                fixture("fixture_duplicate_name"), c, NULL, 1,
                                &a, err, sizeof err),
                   -1);
  ck_assert_ptr_null(a.module);
  assert_contains(err, "plugin \"fixture_duplicate_name\" (");
  assert_contains(err, fixture("fixture_duplicate_name"));
  assert_contains(err, "descriptor name is \"fixture_ok\", expected "
                       "\"fixture_duplicate_name\"");
  ck_assert_msg(strchr(err, '\n') == NULL, "not one line: %s", err);
}
END_TEST

START_TEST(refuses_a_plugin_without_the_callback_its_service_needs) {
  plugin_admitted_t a;
  const config_t *c =
      served_by("fixture_raw_only", "lobby", CONFIG_FRAMING_PACKET);
  ck_assert_int_eq(plugin_admit("fixture_raw_only", fixture("fixture_raw_only"),
                                c, NULL, 1, &a, err, sizeof err),
                   -1);
  assert_contains(err, "service \"lobby\"");
  assert_contains(err, "cannot serve packet framing");
  /* Services of other plugins do not count. */
  c = served_by("someone_else", "lobby", CONFIG_FRAMING_PACKET);
  ck_assert_int_eq(plugin_admit("fixture_raw_only", fixture("fixture_raw_only"),
                                c, NULL, 1, &a, err, sizeof err),
                   0);
  plugin_admitted_release(&a);
}
END_TEST

START_TEST(passes_on_the_loaders_abi_refusal) {
  plugin_admitted_t a;
  const config_t *c =
      served_by("fixture_abi_major", "game", CONFIG_FRAMING_RAW);
  ck_assert_int_eq(plugin_admit("fixture_abi_major",
                                fixture("fixture_abi_major"), c, NULL, 1, &a,
                                err, sizeof err),
                   -1);
  assert_contains(err, "ABI major");
}
END_TEST

#ifndef _WIN32

static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "%s/test_admission.XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(tmp));
  ck_assert_int_eq(chmod(tmp, 0755), 0);
}

static void teardown(void) {
  char command[1024];
  snprintf(command, sizeof command, "chmod -R u+w '%s'; rm -rf '%s'", tmp, tmp);
  ck_assert_int_eq(system(command), 0);
}

/* A copy of a fixture at <tmp>/<name>.so with the given mode. */
static const char *copy_fixture(const char *name, mode_t mode) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s%s", tmp, name, PLUGIN_SUFFIX);
  char command[2048];
  snprintf(command, sizeof command, "cp '%s' '%s'", fixture(name), path);
  ck_assert_int_eq(system(command), 0);
  ck_assert_int_eq(chmod(path, mode), 0);
  return path;
}

START_TEST(refuses_a_file_other_users_may_write_before_loading_it) {
  const char *path = copy_fixture("fixture_ok", 0757);
  plugin_admitted_t a;
  const config_t *c = served_by("fixture_ok", "game", CONFIG_FRAMING_RAW);
  ck_assert_int_eq(
      plugin_admit("fixture_ok", path, c, NULL, 1, &a, err, sizeof err), -1);
  assert_contains(err, "refusing to load");
  assert_contains(err, "writable by other users");
  assert_contains(err, "chmod o-w");
}
END_TEST

START_TEST(loads_a_read_only_copy_of_the_checked_bytes_from_the_shadow) {
  const char *path = copy_fixture("fixture_ok", 0755);
  char runtime[512];
  snprintf(runtime, sizeof runtime, "%s/run", tmp);
  char *dir = NULL;
  ck_assert_int_eq(shadow_dir_create(runtime, "t", &dir, err, sizeof err), 0);
  plugin_admitted_t a;
  const config_t *c = served_by("fixture_ok", "game", CONFIG_FRAMING_RAW);
  int rc = plugin_admit("fixture_ok", path, c, dir, 7, &a, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_ptr_nonnull(a.shadow_path);
  assert_contains(a.shadow_path, dir);
  assert_contains(a.shadow_path, "/fixture_ok.7" PLUGIN_SUFFIX);
  ck_assert_str_eq(plugin_module_path(a.module), a.shadow_path);
  struct stat st;
  ck_assert_int_eq(stat(a.shadow_path, &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0500);
  uint64_t hash = 0;
  ck_assert_int_eq(file_hash(a.shadow_path, &hash, err, sizeof err), 0);
  ck_assert_uint_eq(a.hash, hash);
  char copy[1024];
  snprintf(copy, sizeof copy, "%s", a.shadow_path);
  plugin_admitted_release(&a);
  ck_assert_int_eq(access(copy, F_OK), -1); /* the copy went with it */
  shadow_dir_remove(dir);
  ck_assert_int_eq(access(dir, F_OK), -1);
  free(dir);
}
END_TEST

#endif

static Suite *admission_suite(void) {
  Suite *s = suite_create("admission");
  TCase *tc = tcase_create("admit");
  tcase_add_test(tc, admits_a_plugin_whose_descriptor_carries_its_config_name);
  tcase_add_test(tc, refuses_a_file_whose_descriptor_names_another_plugin);
  tcase_add_test(tc, refuses_a_plugin_without_the_callback_its_service_needs);
  tcase_add_test(tc, passes_on_the_loaders_abi_refusal);
  suite_add_tcase(s, tc);
#ifndef _WIN32
  TCase *files = tcase_create("files");
  tcase_add_checked_fixture(files, setup, teardown);
  tcase_add_test(files, refuses_a_file_other_users_may_write_before_loading_it);
  tcase_add_test(files,
                 loads_a_read_only_copy_of_the_checked_bytes_from_the_shadow);
  suite_add_tcase(s, files);
#endif
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(admission_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
