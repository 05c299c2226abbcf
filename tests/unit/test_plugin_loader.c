/*
 * The plugin loader: every refusal of SPEC section 4 against a fixture
 * plugin built for it (tests/fixtures/plugins). A refusal names the plugin
 * as the config calls it, the path, what was expected and what was found,
 * in one line. Refused fixtures abort in every callback, so a loader that
 * runs plugin code other than the entry point kills this test.
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_loader.h"

#ifdef _WIN32
#define PLUGIN_SUFFIX ".dll"
#else
#define PLUGIN_SUFFIX ".so"
#endif

#define FIXTURE_DIR TEST_BINARY_DIR "/tests/fixtures/plugins/"

static char path_buf[4][1024];

/* The path of a fixture; up to four at a time stay valid. */
static const char *fixture(const char *name) {
  static int next;
  char *p = path_buf[next++ % 4];
  snprintf(p, sizeof path_buf[0], "%s%s%s", FIXTURE_DIR, name, PLUGIN_SUFFIX);
  return p;
}

static void assert_contains(const char *text, const char *part) {
  ck_assert_msg(strstr(text, part) != NULL, "expected \"%s\" in: %s", part,
                text);
}

/* Opens a fixture that must be refused; checks the message names the plugin
 * and the path, is one line, and contains every further string (NULL
 * ends the list). */
static void assert_refused(const char *config_name, const char *file, ...) {
  const char *path = fixture(file);
  char err[1024] = "";
  plugin_module_t *m = (plugin_module_t *)1;
  ck_assert_int_eq(plugin_module_open(config_name, path, &m, err, sizeof err),
                   -1);
  ck_assert_ptr_null(m);
  char named[128];
  snprintf(named, sizeof named, "plugin \"%s\" (", config_name);
  assert_contains(err, named);
  assert_contains(err, path);
  ck_assert_msg(strchr(err, '\n') == NULL, "not one line: %s", err);
  va_list ap;
  va_start(ap, file);
  for (const char *part; (part = va_arg(ap, const char *)) != NULL;)
    assert_contains(err, part);
  va_end(ap);
}

static plugin_module_t *open_ok(const char *config_name, const char *file) {
  char err[1024] = "";
  plugin_module_t *m = NULL;
  int rc = plugin_module_open(config_name, fixture(file), &m, err, sizeof err);
  ck_assert_msg(rc == 0, "%s refused: %s", file, err);
  ck_assert_ptr_nonnull(m);
  return m;
}

START_TEST(loads_a_valid_plugin_and_copies_its_descriptor) {
  plugin_module_t *m = open_ok("echo", "fixture_ok");
  const iocphost_plugin_t *d = plugin_module_descriptor(m);
  ck_assert_str_eq(plugin_module_name(m), "fixture_ok");
  ck_assert_str_eq(plugin_module_version(m), "1.0.0");
  ck_assert_str_eq(plugin_module_config_name(m), "echo");
  ck_assert_str_eq(plugin_module_path(m), fixture("fixture_ok"));
  ck_assert_uint_eq(plugin_module_struct_size(m), sizeof(iocphost_plugin_t));
  ck_assert_uint_eq(plugin_module_abi_minor(m), IOCPHOST_ABI_MINOR);
  ck_assert_str_eq(d->name, "fixture_ok");
  ck_assert_uint_eq(d->session_size, sizeof(uint64_t));
  ck_assert(d->on_load != NULL);
  ck_assert(d->on_connected != NULL);
  ck_assert(d->on_recv != NULL);
  ck_assert(d->on_packet != NULL);
  ck_assert(d->on_disconnected != NULL);
  ck_assert(d->on_send == NULL);
  plugin_module_close(m);
}
END_TEST

START_TEST(loads_an_abi_1_0_descriptor_without_reading_past_its_end) {
  plugin_module_t *m = open_ok("old", "fixture_abi_1_0");
  const iocphost_plugin_t *d = plugin_module_descriptor(m);
  ck_assert_uint_eq(plugin_module_struct_size(m), IOCPHOST_PLUGIN_MIN_SIZE);
  ck_assert_uint_eq(plugin_module_abi_minor(m), 0);
  ck_assert_str_eq(d->name, "fixture_abi_1_0");
  ck_assert_uint_eq(d->session_size, 8);
  ck_assert(d->on_disconnected != NULL);
  plugin_module_close(m);
}
END_TEST

START_TEST(loads_an_abi_1_2_plugin_on_a_1_3_host) {
  /* ABI 1.3 appended host functions only (metrics): a 1.2 plugin's
   * descriptor is whole here, and it says minor 2. */
  ck_assert_int_ge(IOCPHOST_ABI_MINOR, 3);
  plugin_module_t *m = open_ok("older", "fixture_abi_1_2");
  ck_assert_uint_eq(plugin_module_abi_minor(m), 2);
  ck_assert_uint_eq(plugin_module_struct_size(m), sizeof(iocphost_plugin_t));
  ck_assert_str_eq(plugin_module_version(m), "1.2.0");
  plugin_module_close(m);
}
END_TEST

START_TEST(keeps_its_own_copies_of_the_names) {
  plugin_module_t *m = open_ok("echo", "fixture_ok");
  ck_assert_ptr_ne(plugin_module_name(m), plugin_module_descriptor(m)->name);
  ck_assert_ptr_ne(plugin_module_version(m),
                   plugin_module_descriptor(m)->version);
  plugin_module_close(m);
}
END_TEST

START_TEST(opens_the_same_library_twice_as_independent_modules) {
  plugin_module_t *a = open_ok("one", "fixture_ok");
  plugin_module_t *b = open_ok("two", "fixture_ok");
  plugin_module_close(a);
  ck_assert_str_eq(plugin_module_descriptor(b)->name, "fixture_ok");
  ck_assert_str_eq(plugin_module_config_name(b), "two");
  plugin_module_close(b);
}
END_TEST

START_TEST(passes_on_load_failure_reason_of_the_load_fails_fixture) {
  /* The loader never calls on_load; the host does, after every check. This
   * proves the fixture the host tests rely on behaves as documented. */
  plugin_module_t *m = open_ok("failing", "fixture_load_fails");
  const iocphost_plugin_t *d = plugin_module_descriptor(m);
  iocphost_api_t api;
  memset(&api, 0, sizeof api);
  api.struct_size = sizeof api;
  char reason[256] = "";
  ck_assert_int_ne(d->on_load(&api, "{\"x\":1}", reason, sizeof reason), 0);
  assert_contains(reason, "fixture_load_fails: refusing to load");
  assert_contains(reason, "{\"x\":1}");
  plugin_module_close(m);
}
END_TEST

START_TEST(refuses_a_file_that_is_not_a_shared_library) {
  assert_refused("text", "fixture_not_a_library", "cannot load the library",
                 "expected a shared library", "found: ", NULL);
}
END_TEST

START_TEST(refuses_a_path_that_does_not_exist) {
  assert_refused("ghost", "fixture_that_does_not_exist",
                 "cannot load the library", "expected a shared library",
                 "No such file", NULL);
}
END_TEST

START_TEST(refuses_an_empty_path) {
  char err[256] = "";
  plugin_module_t *m = (plugin_module_t *)1;
  ck_assert_int_eq(plugin_module_open("nopath", "", &m, err, sizeof err), -1);
  ck_assert_ptr_null(m);
  assert_contains(err, "plugin \"nopath\"");
  assert_contains(err, "found none");
}
END_TEST

START_TEST(refuses_a_library_without_the_entry_symbol) {
  assert_refused("noentry", "fixture_no_entry", "no entry point",
                 "expected the exported function iocphost_plugin_entry",
                 "found no such symbol", NULL);
}
END_TEST

START_TEST(refuses_an_entry_point_that_returns_null) {
  assert_refused("nulldesc", "fixture_entry_null", "no descriptor",
                 "expected iocphost_plugin_entry() to return", "found NULL",
                 NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_smaller_than_its_header) {
  char expected[64];
  snprintf(expected, sizeof expected, "expected struct_size of at least %u",
           (unsigned)IOCPHOST_PLUGIN_MIN_SIZE);
  assert_refused("tiny", "fixture_tiny_descriptor", "descriptor too small",
                 expected, "found 4;", NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_too_small_for_the_required_callbacks) {
  char expected[64], found[32];
  snprintf(expected, sizeof expected, "expected struct_size of at least %u",
           (unsigned)IOCPHOST_PLUGIN_MIN_SIZE);
  snprintf(found, sizeof found, "found %u;",
           (unsigned)(8 + 2 * sizeof(const char *)));
  assert_refused("small", "fixture_small_descriptor", "descriptor too small",
                 expected, found, NULL);
}
END_TEST

START_TEST(refuses_a_different_abi_major) {
  char found[64], expected[64];
  snprintf(found, sizeof found, "ABI major %d is not supported",
           IOCPHOST_ABI_MAJOR + 1);
  snprintf(expected, sizeof expected, "this host speaks ABI %d.x",
           IOCPHOST_ABI_MAJOR);
  assert_refused("future", "fixture_abi_major", found, expected,
                 "rebuild the plugin against this host's SDK", NULL);
}
END_TEST

START_TEST(refuses_a_newer_abi_minor) {
  char found[64], expected[64];
  snprintf(found, sizeof found, "ABI %d.%d is newer than this host's ABI %d.%d",
           IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR + 1, IOCPHOST_ABI_MAJOR,
           IOCPHOST_ABI_MINOR);
  snprintf(expected, sizeof expected, "expected minor %d or lower, found %d",
           IOCPHOST_ABI_MINOR, IOCPHOST_ABI_MINOR + 1);
  assert_refused("newer", "fixture_abi_minor", found, expected, NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_without_a_name) {
  assert_refused("anonymous", "fixture_name_null", "has no name",
                 "expected a non-empty name", "found NULL", NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_with_an_empty_name) {
  assert_refused("blank", "fixture_name_empty", "has no name",
                 "expected a non-empty name", "found \"\"", NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_without_a_version) {
  assert_refused("unversioned", "fixture_version_null", "has no version",
                 "expected a version string", "found NULL", NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_without_on_connected) {
  assert_refused("deaf", "fixture_no_on_connected",
                 "required callback on_connected is missing",
                 "expected a function, found NULL", NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_without_on_disconnected) {
  assert_refused("leaky", "fixture_no_on_disconnected",
                 "required callback on_disconnected is missing",
                 "expected a function, found NULL", NULL);
}
END_TEST

START_TEST(refuses_a_descriptor_with_neither_on_recv_nor_on_packet) {
  assert_refused("mute", "fixture_no_receive", "no receive callback",
                 "expected on_recv (raw framing) or on_packet (packet "
                 "framing), found neither",
                 NULL);
}
END_TEST

START_TEST(refuses_a_raw_service_for_a_plugin_without_on_recv) {
  plugin_module_t *m = open_ok("packets", "fixture_packet_only");
  char err[1024] = "";
  ck_assert_int_eq(plugin_module_check_framing(m, 0, "lobby", err, sizeof err),
                   -1);
  assert_contains(err, "service \"lobby\"");
  assert_contains(err, "plugin \"packets\" (");
  assert_contains(err, fixture("fixture_packet_only"));
  assert_contains(err, "cannot serve raw framing");
  assert_contains(err, "expected on_recv, found NULL");
  ck_assert_int_eq(plugin_module_check_framing(m, 1, "lobby", err, sizeof err),
                   0);
  plugin_module_close(m);
}
END_TEST

START_TEST(refuses_a_packet_service_for_a_plugin_without_on_packet) {
  plugin_module_t *m = open_ok("bytes", "fixture_raw_only");
  char err[1024] = "";
  ck_assert_int_eq(plugin_module_check_framing(m, 1, "world", err, sizeof err),
                   -1);
  assert_contains(err, "service \"world\"");
  assert_contains(err, "plugin \"bytes\" (");
  assert_contains(err, fixture("fixture_raw_only"));
  assert_contains(err, "cannot serve packet framing");
  assert_contains(err, "expected on_packet, found NULL");
  ck_assert_int_eq(plugin_module_check_framing(m, 0, "world", err, sizeof err),
                   0);
  plugin_module_close(m);
}
END_TEST

START_TEST(truncates_a_message_to_the_buffer_it_is_given) {
  char err[16];
  memset(err, 'x', sizeof err);
  plugin_module_t *m = NULL;
  ck_assert_int_eq(
      plugin_module_open("future", fixture("fixture_abi_major"), &m, err, 12),
      -1);
  ck_assert_uint_eq(strlen(err), 11);
  ck_assert_int_eq(err[12], 'x');
  ck_assert_int_eq(
      plugin_module_open("future", fixture("fixture_abi_major"), &m, NULL, 0),
      -1);
}
END_TEST

static Suite *loader_suite(void) {
  Suite *s = suite_create("plugin_loader");
  TCase *load = tcase_create("load");
  tcase_add_test(load, loads_a_valid_plugin_and_copies_its_descriptor);
  tcase_add_test(load,
                 loads_an_abi_1_0_descriptor_without_reading_past_its_end);
  tcase_add_test(load, loads_an_abi_1_2_plugin_on_a_1_3_host);
  tcase_add_test(load, keeps_its_own_copies_of_the_names);
  tcase_add_test(load, opens_the_same_library_twice_as_independent_modules);
  tcase_add_test(load, passes_on_load_failure_reason_of_the_load_fails_fixture);
  suite_add_tcase(s, load);

  TCase *refuse = tcase_create("refuse");
  tcase_add_test(refuse, refuses_a_file_that_is_not_a_shared_library);
  tcase_add_test(refuse, refuses_a_path_that_does_not_exist);
  tcase_add_test(refuse, refuses_an_empty_path);
  tcase_add_test(refuse, refuses_a_library_without_the_entry_symbol);
  tcase_add_test(refuse, refuses_an_entry_point_that_returns_null);
  tcase_add_test(refuse, refuses_a_descriptor_smaller_than_its_header);
  tcase_add_test(refuse,
                 refuses_a_descriptor_too_small_for_the_required_callbacks);
  tcase_add_test(refuse, refuses_a_different_abi_major);
  tcase_add_test(refuse, refuses_a_newer_abi_minor);
  tcase_add_test(refuse, refuses_a_descriptor_without_a_name);
  tcase_add_test(refuse, refuses_a_descriptor_with_an_empty_name);
  tcase_add_test(refuse, refuses_a_descriptor_without_a_version);
  tcase_add_test(refuse, refuses_a_descriptor_without_on_connected);
  tcase_add_test(refuse, refuses_a_descriptor_without_on_disconnected);
  tcase_add_test(refuse,
                 refuses_a_descriptor_with_neither_on_recv_nor_on_packet);
  tcase_add_test(refuse, refuses_a_raw_service_for_a_plugin_without_on_recv);
  tcase_add_test(refuse,
                 refuses_a_packet_service_for_a_plugin_without_on_packet);
  tcase_add_test(refuse, truncates_a_message_to_the_buffer_it_is_given);
  suite_add_tcase(s, refuse);
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(loader_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
