/*
 * Typed settings (plugin ABI 1.2, SPEC section 12): RFC 6901 JSON pointers
 * and the five getters of plugin.h, called through the tables a plugin
 * gets: a generation's own (fill_api) and check_settings' (which reads the
 * settings being checked and has no other host function).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"

/* Every kind of value, escapes in names, nested arrays, numbers at and past
 * the edges of what setting_int gives. */
static const char *const SETTINGS =
    "{\"int\": 42, \"neg\": -7, \"zero\": 0, \"minus_zero\": -0,"
    " \"frac\": 3.5, \"neg_frac\": -0.5, \"exp\": 1e3, \"exp_frac\": 1e-3,"
    " \"exact_max\": 9007199254740991, \"exact_min\": -9007199254740991,"
    " \"past_exact\": 9007199254740992, \"past_exact_neg\": -9007199254740992,"
    " \"int64_max\": 9223372036854775807,"
    " \"int64_min\": -9223372036854775808, \"huge\": 1e300,"
    " \"tiny\": -1e300, \"overflow\": 1e999, \"neg_overflow\": -1e999,"
    " \"str\": \"text\", \"escaped\": \"a\\\"b\\\\c\\u00e9\\/d\","
    " \"empty_str\": \"\", \"number_text\": \"42\", \"true_text\": \"true\","
    " \"t\": true, \"f\": false, \"nul\": null,"
    " \"obj\": {\"inner\": {\"deep\": 5, \"list\": [1, 2]}},"
    " \"a/b\": 1, \"m~n\": 2, \"~1\": 3, \"\": 4, \" \": 5, \"x/~y\": 6,"
    " \"arr\": [10, [20, [30, 31, [40]]], {\"k\": \"v\"}, true, \"s\"],"
    " \"empty_arr\": [], \"empty_obj\": {},"
    " \"dup\": 1, \"dup\": 2}";

static generation_t g;
static const iocphost_api_t *api;

static void setup(void) {
  memset(&g, 0, sizeof g);
  char err[256] = "";
  ck_assert_msg(settings_parse(SETTINGS, &g.settings, err, sizeof err) == 0,
                "%s", err);
  fill_api(&g);
  api = &g.api;
}

static void teardown(void) {
  settings_free(g.settings);
  g.settings = NULL;
}

/* ---- JSON pointers ---- */

START_TEST(empty_pointer_names_the_whole_document) {
  ck_assert_ptr_eq(settings_find(g.settings, ""), g.settings);
  ck_assert_int_eq(api->setting_array_length(api, ""), -1); /* an object */
  struct cJSON *list;
  char err[128];
  ck_assert_int_eq(settings_parse("[1, [2, 3], 4]", &list, err, sizeof err), 0);
  ck_assert_int_eq(settings_array_length(list, ""), 3);
  ck_assert_int_eq(settings_int(list, "/1/0", -1), 2);
  settings_free(list);
}

START_TEST(members_nest_by_name) {
  ck_assert_int_eq(api->setting_int(api, "/obj/inner/deep", -1), 5);
  ck_assert_int_eq(api->setting_array_length(api, "/obj/inner/list"), 2);
  ck_assert_int_eq(api->setting_int(api, "/obj/inner/list/1", -1), 2);
  ck_assert_int_eq(api->setting_int(api, "/obj/missing", -1), -1);
  ck_assert_int_eq(api->setting_int(api, "/missing/deep", -1), -1);
  ck_assert_int_eq(api->setting_int(api, "/obj/inner/deep/further", -1), -1);
  ck_assert_int_eq(api->setting_int(api, "/str/0", -1), -1);
  ck_assert_int_eq(api->setting_int(api, "/empty_obj/0", -1), -1);
}

START_TEST(tilde_escapes_stand_for_slash_and_tilde) {
  ck_assert_int_eq(api->setting_int(api, "/a~1b", -1), 1);
  ck_assert_int_eq(api->setting_int(api, "/m~0n", -1), 2);
  /* "~01" is "~1" (the key), never "/" : escapes decode left to right. */
  ck_assert_int_eq(api->setting_int(api, "/~01", -1), 3);
  ck_assert_int_eq(api->setting_int(api, "/x~1~0y", -1), 6);
  /* Unescaped, '/' separates: "/a/b" is member b of member a. */
  ck_assert_int_eq(api->setting_int(api, "/a/b", -1), -1);
  ck_assert_int_eq(api->setting_int(api, "/m~n", -1), -1);
}

START_TEST(empty_and_blank_member_names_are_names) {
  ck_assert_int_eq(api->setting_int(api, "/", -1), 4);
  ck_assert_int_eq(api->setting_int(api, "/ ", -1), 5);
}

START_TEST(array_indices_are_decimal_without_leading_zeros) {
  ck_assert_int_eq(api->setting_int(api, "/arr/0", -1), 10);
  ck_assert_int_eq(api->setting_int(api, "/arr/1/0", -1), 20);
  ck_assert_int_eq(api->setting_int(api, "/arr/1/1/1", -1), 31);
  ck_assert_int_eq(api->setting_int(api, "/arr/1/1/2/0", -1), 40);
  ck_assert_str_eq(api->setting_string(api, "/arr/2/k", "def"), "v");
  ck_assert_int_eq(api->setting_bool(api, "/arr/3", -1), 1);
  ck_assert_str_eq(api->setting_string(api, "/arr/4", "def"), "s");
  /* Past the end, "-" (the element after the last), signs, leading
   * zeros, other digits, overflow, and names on an array. */
  static const char *const bad[] = {"/arr/5",
                                    "/arr/-",
                                    "/arr/-1",
                                    "/arr/+1",
                                    "/arr/01",
                                    "/arr/00",
                                    "/arr/1e0",
                                    "/arr/0x1",
                                    "/arr/",
                                    "/arr/ 0",
                                    "/arr/0 ",
                                    "/arr/2147483648",
                                    "/arr/99999999999999999999999",
                                    "/arr/k",
                                    "/empty_arr/0"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_msg(settings_find(g.settings, bad[i]) == NULL, "%s found",
                  bad[i]);
    ck_assert_int_eq(api->setting_int(api, bad[i], -99), -99);
  }
}

START_TEST(invalid_pointers_give_the_default) {
  /* "/a~2b" would read "a/b" if any character after '~' stood for '/'. */
  static const char *const bad[] = {"int",   "obj/inner", "#/int",
                                    "/m~2n", "/a~2b",     "/m~",
                                    "/~",    "/a~1b~",    "~0"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_msg(settings_find(g.settings, bad[i]) == NULL, "%s found",
                  bad[i]);
    ck_assert_int_eq(api->setting_int(api, bad[i], -99), -99);
    ck_assert_str_eq(api->setting_string(api, bad[i], "def"), "def");
    ck_assert_int_eq(api->setting_array_length(api, bad[i]), -1);
  }
  ck_assert_int_eq(api->setting_int(api, NULL, -99), -99);
  ck_assert_int_eq(api->setting_bool(api, NULL, -1), -1);
  ck_assert_int_eq(api->setting_array_length(api, NULL), -1);
}

START_TEST(duplicate_names_read_the_first) {
  ck_assert_int_eq(api->setting_int(api, "/dup", -1), 1);
}

/* ---- setting_int ---- */

START_TEST(setting_int_reads_integral_numbers) {
  ck_assert_int_eq(api->setting_int(api, "/int", -1), 42);
  ck_assert_int_eq(api->setting_int(api, "/neg", 0), -7);
  ck_assert_int_eq(api->setting_int(api, "/zero", -1), 0);
  ck_assert_int_eq(api->setting_int(api, "/minus_zero", -1), 0);
  ck_assert_int_eq(api->setting_int(api, "/exp", -1), 1000);
}

START_TEST(setting_int_reads_every_integer_a_double_holds_exactly) {
  ck_assert(api->setting_int(api, "/exact_max", 0) ==
            INT64_C(9007199254740991));
  ck_assert(api->setting_int(api, "/exact_min", 0) ==
            -INT64_C(9007199254740991));
}

START_TEST(setting_int_gives_the_default_past_exact_integers) {
  /* 2^53 + 1 would read as 2^53: past 2^53 - 1 the written integer is not
   * known, and int64's own edges are past it. */
  static const char *const past[] = {
      "/past_exact", "/past_exact_neg", "/int64_max", "/int64_min",
      "/huge",       "/tiny",           "/overflow",  "/neg_overflow"};
  for (size_t i = 0; i < sizeof past / sizeof past[0]; i++)
    ck_assert_msg(api->setting_int(api, past[i], 77) == 77, "%s", past[i]);
}

START_TEST(setting_int_gives_the_default_for_fractions) {
  ck_assert_int_eq(api->setting_int(api, "/frac", 77), 77);
  ck_assert_int_eq(api->setting_int(api, "/neg_frac", 77), 77);
  ck_assert_int_eq(api->setting_int(api, "/exp_frac", 77), 77);
}

START_TEST(setting_int_gives_the_default_for_other_types) {
  static const char *const other[] = {"/str", "/number_text", "/t",
                                      "/f",   "/nul",         "/obj",
                                      "/arr", "/empty_arr",   "/missing"};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
    ck_assert_msg(api->setting_int(api, other[i], INT64_MIN) == INT64_MIN, "%s",
                  other[i]);
}

/* ---- setting_number ---- */

START_TEST(setting_number_reads_any_finite_number) {
  ck_assert(api->setting_number(api, "/frac", 0) == 3.5);
  ck_assert(api->setting_number(api, "/neg_frac", 0) == -0.5);
  ck_assert(api->setting_number(api, "/int", 0) == 42.0);
  ck_assert(api->setting_number(api, "/neg", 0) == -7.0);
  ck_assert(api->setting_number(api, "/exp_frac", 0) == 1e-3);
  ck_assert(api->setting_number(api, "/huge", 0) == 1e300);
  ck_assert(api->setting_number(api, "/tiny", 0) == -1e300);
  ck_assert(api->setting_number(api, "/int64_max", 0) == 9223372036854775807.0);
}

START_TEST(setting_number_gives_the_default_for_other_types_and_overflow) {
  static const char *const other[] = {
      "/str", "/number_text", "/t",        "/nul",         "/obj",
      "/arr", "/missing",     "/overflow", "/neg_overflow"};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
    ck_assert_msg(api->setting_number(api, other[i], -2.5) == -2.5, "%s",
                  other[i]);
  ck_assert(isnan(api->setting_number(api, "/str", NAN)));
}

/* ---- setting_string ---- */

START_TEST(setting_string_reads_strings_with_escapes_decoded) {
  ck_assert_str_eq(api->setting_string(api, "/str", "def"), "text");
  ck_assert_str_eq(api->setting_string(api, "/escaped", "def"),
                   "a\"b\\c\xc3\xa9/d");
  ck_assert_str_eq(api->setting_string(api, "/empty_str", "def"), "");
  ck_assert_str_eq(api->setting_string(api, "/number_text", "def"), "42");
}

START_TEST(setting_string_text_stays_put_while_the_settings_live) {
  const char *first = api->setting_string(api, "/str", NULL);
  ck_assert_ptr_nonnull(first);
  ck_assert_ptr_eq(api->setting_string(api, "/str", NULL), first);
}

START_TEST(setting_string_gives_the_default_for_other_types) {
  static const char *const other[] = {"/int", "/t",   "/nul",
                                      "/obj", "/arr", "/missing"};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
    ck_assert_str_eq(api->setting_string(api, other[i], "def"), "def");
    ck_assert_ptr_null(api->setting_string(api, other[i], NULL));
  }
}

/* ---- setting_bool ---- */

START_TEST(setting_bool_reads_true_and_false) {
  ck_assert_int_eq(api->setting_bool(api, "/t", 0), 1);
  ck_assert_int_eq(api->setting_bool(api, "/f", 1), 0);
}

START_TEST(setting_bool_gives_the_default_for_numbers_and_text) {
  static const char *const other[] = {"/int",       "/zero",   "/true_text",
                                      "/nul",       "/obj",    "/arr",
                                      "/empty_str", "/missing"};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
    ck_assert_msg(api->setting_bool(api, other[i], -1) == -1, "%s", other[i]);
}

/* ---- setting_array_length ---- */

START_TEST(setting_array_length_counts_elements_of_nested_arrays) {
  ck_assert_int_eq(api->setting_array_length(api, "/arr"), 5);
  ck_assert_int_eq(api->setting_array_length(api, "/arr/1"), 2);
  ck_assert_int_eq(api->setting_array_length(api, "/arr/1/1"), 3);
  ck_assert_int_eq(api->setting_array_length(api, "/arr/1/1/2"), 1);
  ck_assert_int_eq(api->setting_array_length(api, "/empty_arr"), 0);
}

START_TEST(setting_array_length_is_minus_one_where_there_is_no_array) {
  static const char *const other[] = {"/obj", "/empty_obj", "/str",
                                      "/int", "/nul",       "/missing"};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
    ck_assert_msg(api->setting_array_length(api, other[i]) == -1, "%s",
                  other[i]);
}

/* ---- the tables ---- */

START_TEST(a_table_without_settings_gives_every_default) {
  generation_t bare;
  memset(&bare, 0, sizeof bare);
  fill_api(&bare);
  const iocphost_api_t *a = &bare.api;
  ck_assert_int_eq(a->setting_int(a, "/int", 9), 9);
  ck_assert(a->setting_number(a, "", 1.5) == 1.5);
  ck_assert_str_eq(a->setting_string(a, "/str", "def"), "def");
  ck_assert_int_eq(a->setting_bool(a, "/t", -1), -1);
  ck_assert_int_eq(a->setting_array_length(a, "/arr"), -1);
  ck_assert_int_eq(a->setting_int(NULL, "/int", 9), 9);
}

START_TEST(check_table_reads_the_settings_and_has_nothing_else) {
  settings_check_api_t table;
  settings_check_api_init(&table, g.settings);
  const iocphost_api_t *a = &table.api;
  ck_assert_uint_eq(a->struct_size, sizeof(iocphost_api_t));
  ck_assert_uint_eq(a->abi_major, IOCPHOST_ABI_MAJOR);
  ck_assert_uint_eq(a->abi_minor, IOCPHOST_ABI_MINOR);
  ck_assert(IOCPHOST_API_HAS(a, setting_array_length));
  ck_assert_int_eq(a->setting_int(a, "/obj/inner/deep", -1), 5);
  ck_assert(a->setting_number(a, "/frac", 0) == 3.5);
  ck_assert_str_eq(a->setting_string(a, "/arr/2/k", "def"), "v");
  ck_assert_int_eq(a->setting_bool(a, "/f", -1), 0);
  ck_assert_int_eq(a->setting_array_length(a, "/arr"), 5);
  ck_assert_ptr_null(a->log);
  ck_assert_ptr_null(a->send);
  ck_assert_ptr_null(a->service_find);
  ck_assert_ptr_null(a->room_create);
  ck_assert_ptr_null(a->session_work);
}

/* A check_settings as a plugin writes it: it reads its settings through
 * the table it is given. */
static int check_capacity(const iocphost_api_t *a, const char *settings_json,
                          char *err, size_t err_len) {
  (void)settings_json;
  int64_t capacity = a->setting_int(a, "/match/capacity", 50);
  if (capacity >= 2 && capacity <= 100)
    return 0;
  snprintf(err, err_len, "match.capacity must be 2 to 100, found %lld",
           (long long)capacity);
  return 1;
}

static int check_with(const char *settings_json, char *err, size_t err_len) {
  iocphost_plugin_t desc = {.check_settings = check_capacity};
  host_plugin_t plugin = {.name = "arena"};
  generation_t checked;
  memset(&checked, 0, sizeof checked);
  checked.plugin = &plugin;
  checked.desc = &desc;
  checked.source_path = "/srv/arena.so";
  checked.settings_json = (char *)settings_json;
  ck_assert_int_eq(
      settings_parse(settings_json, &checked.settings, err, err_len), 0);
  int rc = generation_check_settings(&checked, 3, err, err_len);
  settings_free(checked.settings);
  return rc;
}

START_TEST(check_settings_reads_the_settings_being_checked) {
  char err[512] = "";
  ck_assert_int_eq(
      check_with("{\"match\": {\"capacity\": 8}}", err, sizeof err), 0);
  ck_assert_int_eq(check_with("{}", err, sizeof err), 0);
  ck_assert_int_eq(
      check_with("{\"match\": {\"capacity\": 500}}", err, sizeof err), -1);
  ck_assert_str_eq(err, "plugins[3].settings: plugin \"arena\" "
                        "(/srv/arena.so) refused its settings: "
                        "match.capacity must be 2 to 100, found 500");
}

START_TEST(parse_refuses_text_that_is_not_json) {
  struct cJSON *doc = (struct cJSON *)1;
  char err[256] = "";
  ck_assert_int_eq(settings_parse("{\"a\": ", &doc, err, sizeof err), -1);
  ck_assert_ptr_null(doc);
  ck_assert_msg(strstr(err, "settings") != NULL, "%s", err);
}

static Suite *settings_suite(void) {
  Suite *s = suite_create("plugin_settings");
  TCase *pointer = tcase_create("pointer");
  tcase_add_checked_fixture(pointer, setup, teardown);
  tcase_add_test(pointer, empty_pointer_names_the_whole_document);
  tcase_add_test(pointer, members_nest_by_name);
  tcase_add_test(pointer, tilde_escapes_stand_for_slash_and_tilde);
  tcase_add_test(pointer, empty_and_blank_member_names_are_names);
  tcase_add_test(pointer, array_indices_are_decimal_without_leading_zeros);
  tcase_add_test(pointer, invalid_pointers_give_the_default);
  tcase_add_test(pointer, duplicate_names_read_the_first);
  suite_add_tcase(s, pointer);

  TCase *getters = tcase_create("getters");
  tcase_add_checked_fixture(getters, setup, teardown);
  tcase_add_test(getters, setting_int_reads_integral_numbers);
  tcase_add_test(getters,
                 setting_int_reads_every_integer_a_double_holds_exactly);
  tcase_add_test(getters, setting_int_gives_the_default_past_exact_integers);
  tcase_add_test(getters, setting_int_gives_the_default_for_fractions);
  tcase_add_test(getters, setting_int_gives_the_default_for_other_types);
  tcase_add_test(getters, setting_number_reads_any_finite_number);
  tcase_add_test(getters,
                 setting_number_gives_the_default_for_other_types_and_overflow);
  tcase_add_test(getters, setting_string_reads_strings_with_escapes_decoded);
  tcase_add_test(getters,
                 setting_string_text_stays_put_while_the_settings_live);
  tcase_add_test(getters, setting_string_gives_the_default_for_other_types);
  tcase_add_test(getters, setting_bool_reads_true_and_false);
  tcase_add_test(getters, setting_bool_gives_the_default_for_numbers_and_text);
  tcase_add_test(getters,
                 setting_array_length_counts_elements_of_nested_arrays);
  tcase_add_test(getters,
                 setting_array_length_is_minus_one_where_there_is_no_array);
  suite_add_tcase(s, getters);

  TCase *tables = tcase_create("tables");
  tcase_add_checked_fixture(tables, setup, teardown);
  tcase_add_test(tables, a_table_without_settings_gives_every_default);
  tcase_add_test(tables, check_table_reads_the_settings_and_has_nothing_else);
  tcase_add_test(tables, check_settings_reads_the_settings_being_checked);
  tcase_add_test(tables, parse_refuses_text_that_is_not_json);
  suite_add_tcase(s, tables);
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(settings_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
