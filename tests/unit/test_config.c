/*
 * The config loader (SPEC section 6): every broken fixture is refused with a
 * message naming the file and the JSON path; valid configs come out with
 * every field and default in place; relative and suffix-less paths resolve.
 */
#include <check.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "engine/log.h"

#define BROKEN_DIR TEST_SOURCE_DIR "/tests/configs/broken"

/* ---- a scratch folder per test --------------------------------------- */

/* snprintf that fails the test instead of cutting a path short. */
#define FORMAT(buf, ...)                                                       \
  do {                                                                         \
    int format_n_ = snprintf((buf), sizeof(buf), __VA_ARGS__);                 \
    ck_assert(format_n_ >= 0 && (size_t)format_n_ < sizeof(buf));              \
  } while (0)

static char scratch[PATH_MAX];
static char scratch_real[PATH_MAX];

static void scratch_create(void) {
  FORMAT(scratch, "/tmp/iocphost-config-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(scratch));
  ck_assert_ptr_nonnull(realpath(scratch, scratch_real));
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void scratch_remove(void) {
  nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text to scratch/name (creating sub-folders) and returns the full
 * path in a static buffer. */
static const char *scratch_write(const char *name, const char *text) {
  static char path[PATH_MAX];
  FORMAT(path, "%s/%s", scratch, name);
  for (char *p = path + strlen(scratch) + 1; *p != '\0'; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(path, 0700);
      *p = '/';
    }
  }
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static char *path_in_real_scratch(const char *name) {
  static char path[PATH_MAX];
  FORMAT(path, "%s/%s", scratch_real, name);
  return path;
}

/* Loads scratch/config.json holding text; expects success. */
static config_t *load_ok(const char *text) {
  const char *file = scratch_write("config.json", text);
  char err[1024];
  config_t *c = NULL;
  int rc = config_load(file, &c, err, sizeof err);
  ck_assert_msg(rc == 0, "config_load failed: %s", err);
  ck_assert_ptr_nonnull(c);
  return c;
}

/* Parses text as scratch/config.json; expects failure with err holding
 * the file name and every given substring. */
static void parse_fails(const char *text, const char *expect1,
                        const char *expect2) {
  char file[PATH_MAX];
  FORMAT(file, "%s/config.json", scratch);
  char err[1024];
  config_t *c = (config_t *)1;
  int rc = config_parse(file, text, strlen(text), &c, err, sizeof err);
  ck_assert_int_eq(rc, -1);
  ck_assert_ptr_null(c);
  ck_assert_msg(strstr(err, file) == err, "no file name first in: %s", err);
  ck_assert_msg(strstr(err, expect1) != NULL, "\"%s\" not in: %s", expect1,
                err);
  if (expect2 != NULL)
    ck_assert_msg(strstr(err, expect2) != NULL, "\"%s\" not in: %s", expect2,
                  err);
}

static void setup(void) { scratch_create(); }
static void teardown(void) { scratch_remove(); }

/* ---- broken fixtures ------------------------------------------------- */

START_TEST(every_broken_fixture_fails_with_its_file_and_path) {
  FILE *manifest = fopen(BROKEN_DIR "/EXPECTED.tsv", "r");
  ck_assert_ptr_nonnull(manifest);
  char line[1024];
  int count = 0;
  while (fgets(line, sizeof line, manifest) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0')
      continue;
    char *tab = strchr(line, '\t');
    ck_assert_msg(tab != NULL, "manifest line without a tab: %s", line);
    *tab = '\0';
    const char *name = line, *expect = tab + 1;
    char file[PATH_MAX];
    FORMAT(file, "%s/%s", BROKEN_DIR, name);
    char err[2048];
    config_t *c = (config_t *)1;
    int rc = config_load(file, &c, err, sizeof err);
    ck_assert_msg(rc == -1, "%s was accepted", name);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, file) == err, "%s: file not named first: %s",
                  name, err);
    ck_assert_msg(strstr(err, expect) != NULL, "%s: \"%s\" not in: %s", name,
                  expect, err);
    count++;
  }
  fclose(manifest);
  ck_assert_int_ge(count, 20);
}
END_TEST

START_TEST(every_broken_fixture_is_in_the_manifest) {
  FILE *manifest = fopen(BROKEN_DIR "/EXPECTED.tsv", "r");
  ck_assert_ptr_nonnull(manifest);
  static char listed[65536];
  size_t n = fread(listed, 1, sizeof listed - 1, manifest);
  listed[n] = '\0';
  fclose(manifest);
  FILE *ls = popen("ls " BROKEN_DIR, "r");
  ck_assert_ptr_nonnull(ls);
  char name[512];
  while (fgets(name, sizeof name, ls) != NULL) {
    name[strcspn(name, "\n")] = '\0';
    size_t len = strlen(name);
    if (len < 5 || strcmp(name + len - 5, ".json") != 0)
      continue;
    char needle[520];
    FORMAT(needle, "%s\t", name);
    ck_assert_msg(strstr(listed, needle) != NULL, "%s not in EXPECTED.tsv",
                  name);
  }
  pclose(ls);
}
END_TEST

/* ---- valid configs --------------------------------------------------- */

START_TEST(a_full_config_parses_with_every_field) {
  scratch_write("plugins/echo.so", "");
  scratch_write("plugins/librelay.so", "");
  config_t *c = load_ok(
      "{\n"
      "  \"name\": \"game-1\",\n"
      "  \"log\": { \"level\": \"debug\", \"file\": \"logs/host.log\" },\n"
      "  \"runtime_dir\": \"/var/run/iocphost\",\n"
      "  \"shutdown\": { \"drain_timeout_ms\": 2500 },\n"
      "  \"work\": { \"threads\": 8, \"queue_limit\": 64 },\n"
      "  \"cores\": [ { \"name\": \"players\", \"threads\": 4 },\n"
      "             { \"name\": \"links\", \"threads\": 1 } ],\n"
      "  \"plugins\": [\n"
      "    { \"name\": \"echo\", \"path\": \"plugins/echo\",\n"
      "      \"settings\": { \"greeting\": \"hi\", \"n\": [1, 2] } },\n"
      "    { \"name\": \"relay\", \"path\": \"plugins/relay\" } ],\n"
      "  \"services\": [\n"
      "    { \"name\": \"echo\", \"type\": \"server\", \"core\": \"players\",\n"
      "      \"plugin\": \"echo\", \"address\": \"[::1]:7777\",\n"
      "      \"max_sessions\": 500, \"backlog\": 128, \"framing\": "
      "\"packet\",\n"
      "      \"max_recv_bytes\": 131072, \"max_packet_bytes\": 8192,\n"
      "      \"send_queue_limit_bytes\": 65536, \"idle_timeout_ms\": 30000,\n"
      "      \"close_linger_ms\": 0, \"tcp_nodelay\": false },\n"
      "    { \"name\": \"to-login\", \"type\": \"client\", \"core\": "
      "\"links\",\n"
      "      \"plugin\": \"relay\", \"address\": \"10.0.0.2:7000\",\n"
      "      \"sessions\": 3, \"connect_timeout_ms\": 1500,\n"
      "      \"reconnect\": { \"min_delay_ms\": 50, \"max_delay_ms\": 800,\n"
      "                     \"jitter\": 0.5, \"reset_after_ms\": 3000 } }\n"
      "  ]\n"
      "}\n");
  ck_assert_str_eq(c->dir, scratch_real);
  ck_assert_str_eq(c->name, "game-1");
  ck_assert_int_eq(c->log_level, LOG_DEBUG);
  ck_assert_str_eq(c->log_file, path_in_real_scratch("logs/host.log"));
  ck_assert_str_eq(c->runtime_dir, "/var/run/iocphost");
  ck_assert_uint_eq(c->drain_timeout_ms, 2500);
  ck_assert_int_eq(c->work_threads, 8);
  ck_assert_uint_eq(c->work_queue_limit, 64);

  ck_assert_uint_eq(c->core_count, 2);
  ck_assert_str_eq(c->cores[0].name, "players");
  ck_assert_int_eq(c->cores[0].threads, 4);
  ck_assert_str_eq(c->cores[1].name, "links");
  ck_assert_int_eq(c->cores[1].threads, 1);

  ck_assert_uint_eq(c->plugin_count, 2);
  ck_assert_str_eq(c->plugins[0].name, "echo");
  ck_assert_str_eq(c->plugins[0].path_given, "plugins/echo");
  ck_assert_str_eq(c->plugins[0].path, path_in_real_scratch("plugins/echo.so"));
  ck_assert_str_eq(c->plugins[0].settings_json,
                   "{\"greeting\":\"hi\",\"n\":[1,2]}");
  ck_assert_str_eq(c->plugins[1].path,
                   path_in_real_scratch("plugins/librelay.so"));
  ck_assert_str_eq(c->plugins[1].settings_json, "{}");

  ck_assert_uint_eq(c->service_count, 2);
  const config_service_t *s = &c->services[0];
  ck_assert_str_eq(s->name, "echo");
  ck_assert_int_eq(s->type, CONFIG_SERVICE_SERVER);
  ck_assert_str_eq(s->core, "players");
  ck_assert_int_eq(s->core_index, 0);
  ck_assert_str_eq(s->plugin, "echo");
  ck_assert_int_eq(s->plugin_index, 0);
  ck_assert_str_eq(s->address_text, "[::1]:7777");
  ck_assert_int_eq(address_family(&s->address), AF_INET6);
  ck_assert_uint_eq(address_port(&s->address), 7777);
  ck_assert_int_eq(s->framing, CONFIG_FRAMING_PACKET);
  ck_assert_uint_eq(s->max_recv_bytes, 131072);
  ck_assert_uint_eq(s->max_packet_bytes, 8192);
  ck_assert_uint_eq(s->send_queue_limit_bytes, 65536);
  ck_assert_uint_eq(s->idle_timeout_ms, 30000);
  ck_assert_uint_eq(s->close_linger_ms, 0);
  ck_assert_int_eq(s->tcp_nodelay, 0);
  ck_assert_uint_eq(s->max_sessions, 500);
  ck_assert_int_eq(s->backlog, 128);

  s = &c->services[1];
  ck_assert_str_eq(s->name, "to-login");
  ck_assert_int_eq(s->type, CONFIG_SERVICE_CLIENT);
  ck_assert_str_eq(s->core, "links");
  ck_assert_int_eq(s->core_index, 1);
  ck_assert_str_eq(s->plugin, "relay");
  ck_assert_int_eq(s->plugin_index, 1);
  ck_assert_int_eq(address_family(&s->address), AF_INET);
  ck_assert_uint_eq(address_port(&s->address), 7000);
  ck_assert_uint_eq(s->sessions, 3);
  ck_assert_uint_eq(s->connect_timeout_ms, 1500);
  ck_assert_int_eq(s->reconnect, 1);
  ck_assert_uint_eq(s->reconnect_min_delay_ms, 50);
  ck_assert_uint_eq(s->reconnect_max_delay_ms, 800);
  ck_assert_double_eq_tol(s->reconnect_jitter, 0.5, 1e-12);
  ck_assert_uint_eq(s->reconnect_reset_after_ms, 3000);
  config_free(c);
}
END_TEST

START_TEST(defaults_are_those_of_the_spec) {
  scratch_write("p.so", "");
  config_t *c = load_ok(
      "{ \"plugins\": [ { \"name\": \"p\", \"path\": \"p\" } ],\n"
      "  \"services\": [\n"
      "    { \"name\": \"s\", \"type\": \"server\", \"plugin\": \"p\",\n"
      "      \"address\": \"127.0.0.1:7777\" },\n"
      "    { \"name\": \"c\", \"type\": \"client\", \"plugin\": \"p\",\n"
      "      \"address\": \"127.0.0.1:7000\" } ] }\n");
  ck_assert_str_eq(c->name, "iocphost");
  ck_assert_int_eq(c->log_level, LOG_INFO);
  ck_assert_ptr_null(c->log_file);
  ck_assert_str_eq(c->runtime_dir, path_in_real_scratch("run"));
  ck_assert_uint_eq(c->drain_timeout_ms, 10000);
  ck_assert_int_eq(c->work_threads, 4);
  ck_assert_uint_eq(c->work_queue_limit, 1024);
  ck_assert_uint_eq(c->core_count, 1);
  ck_assert_str_eq(c->cores[0].name, "main");
  ck_assert_int_eq(c->cores[0].threads, 0);
  ck_assert_int_eq(c->cores[0].backend, CORE_BACKEND_DEFAULT);
  ck_assert_str_eq(c->plugins[0].settings_json, "{}");

  for (size_t i = 0; i < 2; i++) {
    const config_service_t *s = &c->services[i];
    ck_assert_str_eq(s->core, "main");
    ck_assert_int_eq(s->core_index, 0);
    ck_assert_int_eq(s->plugin_index, 0);
    ck_assert_int_eq(s->framing, CONFIG_FRAMING_RAW);
    ck_assert_uint_eq(s->max_recv_bytes, 65536);
    ck_assert_uint_eq(s->max_packet_bytes, 65535);
    ck_assert_uint_eq(s->send_queue_limit_bytes, 1048576);
    ck_assert_uint_eq(s->idle_timeout_ms, 0);
    ck_assert_uint_eq(s->close_linger_ms, 2000);
    ck_assert_int_eq(s->tcp_nodelay, 1);
  }
  ck_assert_uint_eq(c->services[0].max_sessions, 10000);
  ck_assert_int_eq(c->services[0].backlog, 511);
  ck_assert_uint_eq(c->services[1].sessions, 1);
  ck_assert_uint_eq(c->services[1].connect_timeout_ms, 5000);
  ck_assert_int_eq(c->services[1].reconnect, 1);
  ck_assert_uint_eq(c->services[1].reconnect_min_delay_ms, 100);
  ck_assert_uint_eq(c->services[1].reconnect_max_delay_ms, 10000);
  ck_assert_double_eq_tol(c->services[1].reconnect_jitter, 0.2, 1e-12);
  ck_assert_uint_eq(c->services[1].reconnect_reset_after_ms, 0);
  config_free(c);
}
END_TEST

START_TEST(an_empty_object_is_a_valid_config) {
  config_t *c = load_ok("{}");
  ck_assert_uint_eq(c->core_count, 1);
  ck_assert_uint_eq(c->plugin_count, 0);
  ck_assert_uint_eq(c->service_count, 0);
  config_free(c);
}
END_TEST

START_TEST(reconnect_false_disables_reconnecting) {
  scratch_write("p.so", "");
  config_t *c =
      load_ok("{ \"plugins\": [ { \"name\": \"p\", \"path\": \"p.so\" } ],\n"
              "  \"services\": [ { \"name\": \"c\", \"type\": \"client\",\n"
              "    \"plugin\": \"p\", \"address\": \"127.0.0.1:7000\",\n"
              "    \"reconnect\": false } ] }");
  ck_assert_int_eq(c->services[0].reconnect, 0);
  config_free(c);
}
END_TEST

START_TEST(reconnect_fields_left_out_keep_their_defaults) {
  scratch_write("p.so", "");
  config_t *c =
      load_ok("{ \"plugins\": [ { \"name\": \"p\", \"path\": \"p.so\" } ],\n"
              "  \"services\": [ { \"name\": \"c\", \"type\": \"client\",\n"
              "    \"plugin\": \"p\", \"address\": \"127.0.0.1:7000\",\n"
              "    \"reconnect\": { \"jitter\": 0 } } ] }");
  ck_assert_int_eq(c->services[0].reconnect, 1);
  ck_assert_uint_eq(c->services[0].reconnect_min_delay_ms, 100);
  ck_assert_uint_eq(c->services[0].reconnect_max_delay_ms, 10000);
  ck_assert_double_eq(c->services[0].reconnect_jitter, 0.0);
  config_free(c);
}
END_TEST

/* ---- paths ----------------------------------------------------------- */

START_TEST(relative_paths_resolve_against_the_config_folder) {
  scratch_write("conf/plugins/game.so", "");
  char file[PATH_MAX];
  FORMAT(file, "%s",
         scratch_write("conf/host.json",
                       "{ \"log\": { \"file\": \"./logs/host.log\" },\n"
                       "  \"runtime_dir\": \"../run\",\n"
                       "  \"plugins\": [ { \"name\": \"game\",\n"
                       "                   \"path\": \"plugins/game\" } ] }"));
  /* Load through a relative path from another working folder. */
  char cwd[PATH_MAX];
  ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
  ck_assert_int_eq(chdir(scratch), 0);
  char err[1024];
  config_t *c = NULL;
  int rc = config_load("conf/host.json", &c, err, sizeof err);
  ck_assert_int_eq(chdir(cwd), 0);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(c->file, "conf/host.json");
  ck_assert_str_eq(c->dir, path_in_real_scratch("conf"));
  ck_assert_str_eq(c->log_file, path_in_real_scratch("conf/logs/host.log"));
  /* Shown normalised, not as "conf/../run" (issue 13). */
  ck_assert_str_eq(c->runtime_dir, path_in_real_scratch("run"));
  ck_assert_str_eq(c->plugins[0].path_given, "plugins/game");
  ck_assert_str_eq(c->plugins[0].path,
                   path_in_real_scratch("conf/plugins/game.so"));
  config_free(c);
}
END_TEST

START_TEST(absolute_paths_are_kept) {
  char plugin[PATH_MAX];
  FORMAT(plugin, "%s", scratch_write("abs/x.so", ""));
  char text[4 * PATH_MAX];
  snprintf(text, sizeof text,
           "{ \"log\": { \"file\": \"/tmp/x.log\" }, \"runtime_dir\": "
           "\"/tmp/rt\",\n  \"plugins\": [ { \"name\": \"x\", \"path\": "
           "\"%s\" } ] }",
           plugin);
  config_t *c = load_ok(text);
  ck_assert_str_eq(c->log_file, "/tmp/x.log");
  ck_assert_str_eq(c->runtime_dir, "/tmp/rt");
  ck_assert_str_eq(c->plugins[0].path, plugin);
  config_free(c);
}
END_TEST

static void expect_plugin_path(const char *given, const char *expected) {
  char text[1024];
  snprintf(text, sizeof text,
           "{ \"plugins\": [ { \"name\": \"p\", \"path\": \"%s\" } ] }", given);
  config_t *c = load_ok(text);
  ck_assert_str_eq(c->plugins[0].path_given, given);
  ck_assert_str_eq(c->plugins[0].path, path_in_real_scratch(expected));
  config_free(c);
}

START_TEST(plugin_path_may_omit_the_platform_suffix) {
  scratch_write("a/echo.so", "");
  scratch_write("b/libecho.so", "");
  scratch_write("c/echo", "");
  scratch_write("c/echo.so", "");
  scratch_write("d/echo.so", "");
  scratch_write("d/libecho.so", "");
  expect_plugin_path("a/echo", "a/echo.so");
  expect_plugin_path("a/echo.so", "a/echo.so");
  expect_plugin_path("b/echo", "b/libecho.so");
  expect_plugin_path("b/libecho.so", "b/libecho.so");
  expect_plugin_path("c/echo", "c/echo");    /* as given comes first */
  expect_plugin_path("d/echo", "d/echo.so"); /* then the bare suffix */
}
END_TEST

START_TEST(a_plugin_path_naming_a_folder_is_not_a_plugin) {
  scratch_write("e/echo/readme", "");
  scratch_write("e/echo.so", "");
  expect_plugin_path("e/echo", "e/echo.so");
}
END_TEST

START_TEST(a_missing_plugin_names_every_candidate) {
  char tried1[PATH_MAX], tried2[PATH_MAX], tried3[PATH_MAX];
  FORMAT(tried1, "%s/x/game", scratch_real);
  FORMAT(tried2, "%s/x/game.so", scratch_real);
  FORMAT(tried3, "%s/x/libgame.so", scratch_real);
  const char *text =
      "{ \"plugins\": [ { \"name\": \"p\", \"path\": \"x/game\" } ] }";
  parse_fails(text, "plugins[0].path", "\"x/game\"");
  parse_fails(text, tried1, tried2);
  parse_fails(text, tried3, NULL);
}
END_TEST

/* ---- errors ---------------------------------------------------------- */

START_TEST(a_syntax_error_gives_line_and_column) {
  parse_fails("{\n"
              "  \"name\": \"x\",\n"
              "  \"log\": { \"level\": \"info\" }\n"
              "  \"runtime_dir\": \"run\"\n"
              "}\n",
              "line 4, column 3", "invalid JSON");
  parse_fails("{\n  \"cores\": [ { \"name\": \"main\" }, ],\n}",
              "line 2, column 34", NULL);
  parse_fails("{ \"name\": \"é\", \"x\" }", "line 1, column 20", NULL);
  parse_fails("\xEF\xBB\xBF{ , }", "line 1, column 3", NULL);
  /* Where an object key is expected. */
  parse_fails("{\n  \"a\": 1,\n}\n", "line 3, column 1", NULL);
  parse_fails("{ \"a\": { \"b\": 1,  } }", "line 1, column 19", NULL);
  parse_fails("{a: 1}", "line 1, column 2", NULL);
  parse_fails("{\"a\": [1, 2x]}", "line 1, column 12", NULL);
  parse_fails("{\"a\": [1, 2,]}", "line 1, column 13", NULL);
}
END_TEST

START_TEST(an_unclosed_string_is_reported_where_it_starts) {
  parse_fails("{\n  \"name\": \"abc,\n  \"log\": {}\n}", "line 2, column 11",
              "string not closed");
  parse_fails("{ \"name\": \"a\tb\" }", "line 1, column 11",
              "control character");
}
END_TEST

START_TEST(text_after_the_object_is_an_error) {
  parse_fails("{}\n\n  {}", "line 3, column 3", NULL);
}
END_TEST

START_TEST(a_byte_order_mark_is_accepted) {
  config_t *c = load_ok("\xEF\xBB\xBF{ \"name\": \"bom\" }");
  ck_assert_str_eq(c->name, "bom");
  config_free(c);
}
END_TEST

START_TEST(an_unknown_key_suggests_the_closest_and_lists_the_allowed) {
  parse_fails("{ \"servcies\": [] }", "servcies: unknown key",
              "did you mean \"services\"");
  parse_fails("{ \"servcies\": [] }",
              "name, log, runtime_dir, shutdown, work, "
              "cores, plugins, services",
              NULL);
  parse_fails("{ \"Name\": \"x\" }", "Name: unknown key",
              "did you mean \"name\"");
  parse_fails("{ \"zzzzzzzz\": 1 }", "zzzzzzzz: unknown key; remove it", NULL);
}
END_TEST

START_TEST(keys_are_case_sensitive) {
  parse_fails("{ \"NAME\": \"x\" }", "NAME: unknown key", NULL);
}
END_TEST

START_TEST(a_missing_file_names_the_file_and_the_reason) {
  char file[PATH_MAX];
  FORMAT(file, "%s/nope.json", scratch);
  char err[1024];
  config_t *c = (config_t *)1;
  ck_assert_int_eq(config_load(file, &c, err, sizeof err), -1);
  ck_assert_ptr_null(c);
  ck_assert_msg(strstr(err, file) == err, "%s", err);
  ck_assert_msg(strstr(err, strerror(ENOENT)) != NULL, "%s", err);
}
END_TEST

/* status, stop and reload only need to find the running instance. */
START_TEST(the_identity_is_read_without_the_rest_of_the_file) {
  const char *file = scratch_write(
      "config.json",
      "{ \"name\": \"game-1\", \"runtime_dir\": \"state\",\n"
      "  \"shutdown\": { \"drain_timeout_ms\": 2500 },\n"
      "  \"plugins\": [ { \"name\": \"p\", \"path\": \"gone/nowhere\" } ],\n"
      "  \"services\": [ { \"name\": \"s\", \"type\": \"warp\" } ] }");
  char err[1024];
  config_t *c = NULL;
  /* The whole file does not validate: the plugin file is missing. */
  ck_assert_int_eq(config_load(file, &c, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "plugins[0].path") != NULL, "%s", err);
  ck_assert_int_eq(config_load_identity(file, &c, err, sizeof err), 0);
  ck_assert_str_eq(c->name, "game-1");
  ck_assert_str_eq(c->runtime_dir, path_in_real_scratch("state"));
  ck_assert_uint_eq(c->drain_timeout_ms, 2500);
  ck_assert_uint_eq(c->plugin_count, 0);
  ck_assert_uint_eq(c->service_count, 0);
  config_free(c);
  /* The top level itself is still checked, with the same messages. */
  file = scratch_write("config.json", "{ \"name\": 7, \"services\": [] }");
  c = (config_t *)1;
  ck_assert_int_eq(config_load_identity(file, &c, err, sizeof err), -1);
  ck_assert_ptr_null(c);
  ck_assert_msg(strstr(err, file) == err && strstr(err, "name") != NULL, "%s",
                err);
  file = scratch_write("config.json", "{ \"name\": \"x\", ");
  ck_assert_int_eq(config_load_identity(file, &c, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "line 1") != NULL, "%s", err);
}
END_TEST

START_TEST(a_folder_is_not_a_config_file) {
  char err[1024];
  config_t *c = (config_t *)1;
  ck_assert_int_eq(config_load(scratch, &c, err, sizeof err), -1);
  ck_assert_ptr_null(c);
  ck_assert_msg(strstr(err, scratch) == err, "%s", err);
}
END_TEST

START_TEST(a_core_names_its_backend) {
#ifdef _WIN32
  config_t *c = load_ok("{ \"cores\": [ { \"name\": \"a\", \"backend\": "
                        "\"iocp\" } ] }");
  ck_assert_int_eq(c->cores[0].backend, CORE_BACKEND_IOCP);
#else
  config_t *c = load_ok("{ \"cores\": [ { \"name\": \"a\", \"backend\": "
                        "\"io_uring\" }, { \"name\": \"b\", \"backend\": "
                        "\"epoll\" }, { \"name\": \"c\" } ] }");
  ck_assert_int_eq(c->cores[0].backend, CORE_BACKEND_IO_URING);
  ck_assert_int_eq(c->cores[1].backend, CORE_BACKEND_EPOLL);
  ck_assert_int_eq(c->cores[2].backend, CORE_BACKEND_DEFAULT);
#endif
  config_free(c);
}
END_TEST

START_TEST(a_backend_this_platform_lacks_lists_the_ones_it_has) {
#ifdef _WIN32
  parse_fails("{ \"cores\": [ { \"name\": \"m\", \"backend\": "
              "\"epoll\" } ] }",
              "cores[0].backend", "must be one of \"iocp\", found \"epoll\"");
#else
  parse_fails("{ \"cores\": [ { \"name\": \"m\", \"backend\": "
              "\"iocp\" } ] }",
              "cores[0].backend",
              "must be one of \"epoll\", \"io_uring\", found \"iocp\"");
#endif
  parse_fails("{ \"cores\": [ { \"name\": \"m\", \"backend\": 1 } ] }",
              "cores[0].backend", "found a number");
  parse_fails("{ \"cores\": [ { \"name\": \"m\", \"backend\": "
              "\"uring\" } ] }",
              "cores[0].backend", "found \"uring\"");
}
END_TEST

START_TEST(numbers_must_be_integers_in_range) {
  scratch_write("p.so", "");
  parse_fails("{ \"cores\": [ { \"name\": \"m\", \"threads\": 1.5 } ] }",
              "cores[0].threads", "from 0 to 1024, found 1.5");
  parse_fails("{ \"cores\": [ { \"name\": \"m\", \"threads\": 1025 } ] }",
              "cores[0].threads", "found 1025");
  parse_fails("{ \"cores\": [ { \"name\": \"m\", \"threads\": 1e300 } ] }",
              "cores[0].threads", NULL);
  parse_fails("{ \"shutdown\": { \"drain_timeout_ms\": \"10\" } }",
              "shutdown.drain_timeout_ms", "found a string");
  parse_fails("{ \"shutdown\": 5 }", "shutdown: must be an object", NULL);
  parse_fails("{ \"work\": { \"threads\": -1 } }", "work.threads",
              "from 0 to 1024, found -1");
  parse_fails("{ \"work\": { \"queue_limit\": 0 } }", "work.queue_limit",
              "from 1 to 16777216, found 0");
  parse_fails("{ \"work\": { \"queue_limit\": \"5\" } }",
              "work.queue_limit", "found a string");
  parse_fails("{ \"work\": { \"thread\": 2 } }", "work.thread: unknown key",
              "did you mean \"threads\"");
  parse_fails("{ \"work\": [] }", "work: must be an object", NULL);
  parse_fails("{ \"log\": { \"level\": 2 } }", "log.level",
              "\"debug\", \"info\", \"warn\", \"error\"");
  parse_fails("{ \"plugins\": [ { \"name\": \"p\", \"path\": \"p\" } ],\n"
              "  \"services\": [ { \"name\": \"s\", \"type\": \"server\",\n"
              "  \"plugin\": \"p\", \"address\": \"127.0.0.1:1\",\n"
              "  \"close_linger_ms\": -1 } ] }",
              "services[0].close_linger_ms", "found -1");
  parse_fails("{ \"plugins\": [ { \"name\": \"p\", \"path\": \"p\" } ],\n"
              "  \"services\": [ { \"name\": \"s\", \"type\": \"client\",\n"
              "  \"plugin\": \"p\", \"address\": \"127.0.0.1:1\",\n"
              "  \"close_linger_ms\": \"2s\" } ] }",
              "services[0].close_linger_ms", "found a string");
}
END_TEST

START_TEST(a_server_listening_on_port_zero_does_not_conflict) {
  scratch_write("p.so", "");
  config_t *c = load_ok(
      "{ \"plugins\": [ { \"name\": \"p\", \"path\": \"p.so\" } ],\n"
      "  \"services\": [\n"
      "    { \"name\": \"a\", \"type\": \"server\", \"plugin\": \"p\",\n"
      "      \"address\": \"127.0.0.1:0\" },\n"
      "    { \"name\": \"b\", \"type\": \"server\", \"plugin\": \"p\",\n"
      "      \"address\": \"127.0.0.1:0\" },\n"
      "    { \"name\": \"c\", \"type\": \"client\", \"plugin\": \"p\",\n"
      "      \"address\": \"127.0.0.1:7777\" },\n"
      "    { \"name\": \"d\", \"type\": \"server\", \"plugin\": \"p\",\n"
      "      \"address\": \"127.0.0.1:7777\" } ] }");
  ck_assert_uint_eq(c->service_count, 4);
  config_free(c);
}
END_TEST

START_TEST(a_duplicate_names_both_paths) {
  parse_fails("{ \"cores\": [ { \"name\": \"a\" }, { \"name\": \"b\" },"
              " { \"name\": \"a\" } ] }",
              "cores[2].name: duplicate core name \"a\"", "cores[0].name");
}
END_TEST

START_TEST(an_unknown_core_lists_the_known_ones) {
  scratch_write("p.so", "");
  parse_fails("{ \"cores\": [ { \"name\": \"a\" }, { \"name\": \"b\" } ],\n"
              "  \"plugins\": [ { \"name\": \"p\", \"path\": \"p.so\" } ],\n"
              "  \"services\": [ { \"name\": \"s\", \"type\": \"server\",\n"
              "    \"core\": \"c\", \"plugin\": \"p\",\n"
              "    \"address\": \"127.0.0.1:1\" } ] }",
              "services[0].core: unknown core \"c\"", "\"a\", \"b\"");
}
END_TEST

START_TEST(a_small_error_buffer_is_never_overrun) {
  char err[16];
  memset(err, 'x', sizeof err);
  config_t *c = NULL;
  ck_assert_int_eq(
      config_parse("some/long/file/name.json", "[", 1, &c, err, 12), -1);
  ck_assert_uint_lt(strlen(err), 12);
  ck_assert_int_eq(err[12], 'x');
  ck_assert_int_eq(config_parse("f.json", "[", 1, &c, NULL, 0), -1);
}
END_TEST

START_TEST(config_free_accepts_null) { config_free(NULL); }
END_TEST

static Suite *config_suite(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("config");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, every_broken_fixture_fails_with_its_file_and_path);
  tcase_add_test(tc, every_broken_fixture_is_in_the_manifest);
  tcase_add_test(tc, a_full_config_parses_with_every_field);
  tcase_add_test(tc, defaults_are_those_of_the_spec);
  tcase_add_test(tc, an_empty_object_is_a_valid_config);
  tcase_add_test(tc, reconnect_false_disables_reconnecting);
  tcase_add_test(tc, reconnect_fields_left_out_keep_their_defaults);
  tcase_add_test(tc, relative_paths_resolve_against_the_config_folder);
  tcase_add_test(tc, absolute_paths_are_kept);
  tcase_add_test(tc, plugin_path_may_omit_the_platform_suffix);
  tcase_add_test(tc, a_plugin_path_naming_a_folder_is_not_a_plugin);
  tcase_add_test(tc, a_missing_plugin_names_every_candidate);
  tcase_add_test(tc, a_syntax_error_gives_line_and_column);
  tcase_add_test(tc, an_unclosed_string_is_reported_where_it_starts);
  tcase_add_test(tc, text_after_the_object_is_an_error);
  tcase_add_test(tc, a_byte_order_mark_is_accepted);
  tcase_add_test(tc, an_unknown_key_suggests_the_closest_and_lists_the_allowed);
  tcase_add_test(tc, keys_are_case_sensitive);
  tcase_add_test(tc, a_missing_file_names_the_file_and_the_reason);
  tcase_add_test(tc, a_folder_is_not_a_config_file);
  tcase_add_test(tc, the_identity_is_read_without_the_rest_of_the_file);
  tcase_add_test(tc, numbers_must_be_integers_in_range);
  tcase_add_test(tc, a_server_listening_on_port_zero_does_not_conflict);
  tcase_add_test(tc, a_duplicate_names_both_paths);
  tcase_add_test(tc, an_unknown_core_lists_the_known_ones);
  tcase_add_test(tc, a_small_error_buffer_is_never_overrun);
  tcase_add_test(tc, config_free_accepts_null);
  tcase_add_test(tc, a_core_names_its_backend);
  tcase_add_test(tc, a_backend_this_platform_lacks_lists_the_ones_it_has);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(config_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
