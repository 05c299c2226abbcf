/* The engine log: line format, levels, files and rotation, truncation, rate
 * limiting and whole lines under concurrency. */
#include "engine/log.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char log_dir[256];
static char log_path[300];

static void setup(void) {
  snprintf(log_dir, sizeof log_dir, "%s/test_log.XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(log_dir));
  snprintf(log_path, sizeof log_path, "%s/host.log", log_dir);
}

static void teardown(void) {
  log_set_file(NULL);
  log_set_level(LOG_INFO);
  char path[400];
  snprintf(path, sizeof path, "%s/host.log", log_dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/host.log.1", log_dir);
  unlink(path);
  rmdir(log_dir);
}

/* The whole file as a NUL-terminated string (caller frees). */
static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  size_t cap = 4096, len = 0;
  char *data = malloc(cap);
  size_t n;
  while ((n = fread(data + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len - 1 == 0)
      data = realloc(data, cap *= 2);
  }
  fclose(f);
  data[len] = '\0';
  return data;
}

static int count_lines(const char *text) {
  int lines = 0;
  for (; *text; text++)
    lines += *text == '\n';
  return lines;
}

#define LINE_PATTERN                                                           \
  "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "        \
  "(DEBUG|INFO|WARN|ERROR) \\[[^]]+\\] "

static int line_matches(const char *line, const char *pattern) {
  regex_t re;
  ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
  int ok = regexec(&re, line, 0, NULL, 0) == 0;
  regfree(&re);
  return ok;
}

START_TEST(test_level_parse_accepts_the_four_names) {
  ck_assert_int_eq(log_level_parse("debug"), LOG_DEBUG);
  ck_assert_int_eq(log_level_parse("info"), LOG_INFO);
  ck_assert_int_eq(log_level_parse("warn"), LOG_WARN);
  ck_assert_int_eq(log_level_parse("error"), LOG_ERROR);
  ck_assert_int_eq(log_level_parse("WARN"), LOG_WARN);
}
END_TEST

START_TEST(test_level_parse_rejects_other_names) {
  ck_assert_int_eq(log_level_parse(NULL), -1);
  ck_assert_int_eq(log_level_parse(""), -1);
  ck_assert_int_eq(log_level_parse("verbose"), -1);
  ck_assert_int_eq(log_level_parse("infoo"), -1);
  ck_assert_int_eq(log_level_parse("inf"), -1);
  ck_assert_int_eq(log_level_parse("warning"), -1);
}
END_TEST

START_TEST(test_level_name_round_trips_through_parse) {
  for (int level = LOG_DEBUG; level <= LOG_ERROR; level++)
    ck_assert_int_eq(log_level_parse(log_level_name(level)), level);
  ck_assert_str_eq(log_level_name(42), "unknown");
}
END_TEST

START_TEST(test_default_level_is_info_and_invalid_levels_are_ignored) {
  ck_assert_int_eq(log_get_level(), LOG_INFO);
  log_set_level(LOG_ERROR);
  ck_assert_int_eq(log_get_level(), LOG_ERROR);
  log_set_level(17);
  log_set_level(-1);
  ck_assert_int_eq(log_get_level(), LOG_ERROR);
}
END_TEST

START_TEST(test_line_has_utc_timestamp_level_subsystem_and_message) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  log_write(LOG_WARN, "core", "listener %s backing off for %d ms", "echo", 50);
  char *text = read_all(log_path);
  ck_assert_int_eq(count_lines(text), 1);
  ck_assert_msg(
      line_matches(text, LINE_PATTERN "listener echo backing off for 50 ms\n$"),
      "unexpected line: %s", text);
  ck_assert_msg(line_matches(text, "^[0-9-]+T[0-9:.]+Z WARN \\[core\\] "), "%s",
                text);
  free(text);
}
END_TEST

START_TEST(test_line_without_subsystem_uses_a_dash) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  log_write(LOG_ERROR, NULL, "boom");
  char *text = read_all(log_path);
  ck_assert_msg(line_matches(text, "Z ERROR \\[-\\] boom\n$"), "%s", text);
  free(text);
}
END_TEST

START_TEST(test_lines_below_the_level_are_dropped) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  log_write(LOG_DEBUG, "t", "hidden");
  log_write(LOG_INFO, "t", "shown-info");
  log_set_level(LOG_DEBUG);
  log_write(LOG_DEBUG, "t", "shown-debug");
  log_set_level(LOG_ERROR);
  log_write(LOG_WARN, "t", "hidden-warn");
  log_write(LOG_ERROR, "t", "shown-error");
  char *text = read_all(log_path);
  ck_assert_int_eq(count_lines(text), 3);
  ck_assert_ptr_null(strstr(text, "hidden"));
  ck_assert_ptr_nonnull(strstr(text, "INFO [t] shown-info\n"));
  ck_assert_ptr_nonnull(strstr(text, "DEBUG [t] shown-debug\n"));
  ck_assert_ptr_nonnull(strstr(text, "ERROR [t] shown-error\n"));
  free(text);
}
END_TEST

START_TEST(test_set_file_appends_to_existing_content) {
  FILE *f = fopen(log_path, "w");
  fputs("earlier line\n", f);
  fclose(f);
  ck_assert_int_eq(log_set_file(log_path), 0);
  log_write(LOG_INFO, "t", "later line");
  char *text = read_all(log_path);
  ck_assert_int_eq(strncmp(text, "earlier line\n", 13), 0);
  ck_assert_int_eq(count_lines(text), 2);
  free(text);
}
END_TEST

START_TEST(test_set_file_failure_keeps_the_old_target) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  char bad[400];
  snprintf(bad, sizeof bad, "%s/no/such/dir/x.log", log_dir);
  ck_assert_int_eq(log_set_file(bad), -1);
  ck_assert_int_eq(errno, ENOENT);
  log_write(LOG_INFO, "t", "still here");
  char *text = read_all(log_path);
  ck_assert_ptr_nonnull(strstr(text, "still here\n"));
  free(text);
}
END_TEST

START_TEST(test_set_file_creates_the_file_readable_by_owner_and_group_only) {
  /* Whatever the umask lets through: a log may hold peers' addresses and
   * plugins' words, so it is never world-readable. */
  mode_t old_mask = umask(0);
  int rc = log_set_file(log_path);
  umask(old_mask);
  ck_assert_int_eq(rc, 0);
  struct stat st;
  ck_assert_int_eq(stat(log_path, &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0640);
}
END_TEST

START_TEST(test_set_file_refuses_a_symbolic_link) {
  /* In a shared folder a planted link would send the host's lines, with
   * the host's rights, into any file. */
  char target[400];
  snprintf(target, sizeof target, "%s/elsewhere", log_dir);
  FILE *f = fopen(target, "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  ck_assert_int_eq(symlink(target, log_path), 0);
  ck_assert_int_eq(log_set_file(log_path), -1);
  ck_assert_int_eq(errno, ELOOP);
  struct stat st;
  ck_assert_int_eq(stat(target, &st), 0);
  ck_assert_int_eq(st.st_size, 0);
  unlink(target);
}
END_TEST

START_TEST(test_reopen_follows_the_path_after_rotation) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  log_write(LOG_INFO, "t", "before rotation");
  char rotated[400];
  snprintf(rotated, sizeof rotated, "%s.1", log_path);
  ck_assert_int_eq(rename(log_path, rotated), 0);
  log_write(LOG_INFO, "t", "still to the rotated file");
  ck_assert_int_eq(log_reopen(), 0);
  log_write(LOG_INFO, "t", "after rotation");

  char *old_text = read_all(rotated);
  char *new_text = read_all(log_path);
  ck_assert_int_eq(count_lines(old_text), 2);
  ck_assert_ptr_nonnull(strstr(old_text, "before rotation\n"));
  ck_assert_ptr_nonnull(strstr(old_text, "still to the rotated file\n"));
  ck_assert_int_eq(count_lines(new_text), 1);
  ck_assert_ptr_nonnull(strstr(new_text, "after rotation\n"));
  free(old_text);
  free(new_text);
}
END_TEST

START_TEST(test_reopen_on_stderr_is_a_no_op) {
  ck_assert_int_eq(log_set_file(NULL), 0);
  ck_assert_int_eq(log_reopen(), 0);
}
END_TEST

START_TEST(test_long_message_is_truncated_with_ellipsis_on_one_line) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  size_t big = 20000;
  char *msg = malloc(big + 1);
  memset(msg, 'a', big);
  msg[big] = '\0';
  log_write(LOG_INFO, "t", "%s", msg);
  log_write(LOG_INFO, "t", "next");
  char *text = read_all(log_path);
  ck_assert_int_eq(count_lines(text), 2);
  char *first_end = strchr(text, '\n');
  ck_assert_int_le(first_end - text + 1, 4096);
  ck_assert_int_eq(memcmp(first_end - 3, "...", 3), 0);
  ck_assert_int_eq(first_end[-4], 'a');
  ck_assert_ptr_nonnull(strstr(first_end + 1, "INFO [t] next\n"));
  free(text);
  free(msg);
}
END_TEST

START_TEST(test_truncation_never_splits_a_utf8_character) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  /* "é" is two bytes; try every alignment of the cut. */
  for (int shift = 0; shift < 4; shift++) {
    char msg[6000];
    size_t len = 0;
    for (int i = 0; i < shift; i++)
      msg[len++] = 'x';
    while (len + 2 < sizeof msg) {
      msg[len++] = (char)0xC3;
      msg[len++] = (char)0xA9;
    }
    msg[len] = '\0';
    log_write(LOG_INFO, "t", "%s", msg);
  }
  char *text = read_all(log_path);
  ck_assert_int_eq(count_lines(text), 4);
  for (char *end = strchr(text, '\n'); end; end = strchr(end + 1, '\n')) {
    ck_assert_int_eq(memcmp(end - 3, "...", 3), 0);
    ck_assert_msg((unsigned char)end[-4] == 0xA9 || end[-4] == 'x',
                  "cut inside a character: %02x", (unsigned char)end[-4]);
  }
  free(text);
}
END_TEST

START_TEST(test_control_characters_cannot_break_or_forge_a_line) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  log_write(LOG_INFO, "t",
            "one\ntwo\r\n2026-01-01T00:00:00.000Z ERROR [x] "
            "fake\tbell\a");
  char *text = read_all(log_path);
  ck_assert_int_eq(count_lines(text), 1);
  ck_assert_ptr_nonnull(strstr(text, "one two  2026-01-01"));
  ck_assert_ptr_nonnull(strstr(text, "fake bell?\n"));
  free(text);
}
END_TEST

START_TEST(test_log_write_preserves_errno) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  errno = EADDRINUSE;
  log_write(LOG_ERROR, "t", "bind failed");
  ck_assert_int_eq(errno, EADDRINUSE);
  errno = ECONNRESET;
  log_write(LOG_DEBUG, "t", "dropped");
  ck_assert_int_eq(errno, ECONNRESET);
}
END_TEST

START_TEST(test_ratelimit_allows_the_first_line) {
  uint64_t last = 0, suppressed = 0;
  ck_assert_int_eq(log_ratelimit(&last, &suppressed), 1);
  ck_assert_uint_ne(last, 0);
  ck_assert_uint_eq(suppressed, 0);
}
END_TEST

START_TEST(test_ratelimit_refuses_a_second_line_within_a_second) {
  uint64_t last = 0, suppressed = 0;
  ck_assert_int_eq(log_ratelimit(&last, &suppressed), 1);
  uint64_t stamp = last;
  ck_assert_int_eq(log_ratelimit(&last, &suppressed), 0);
  ck_assert_int_eq(log_ratelimit(&last, &suppressed), 0);
  ck_assert_uint_eq(suppressed, 2);
  ck_assert_uint_eq(last, stamp);
}
END_TEST

START_TEST(test_ratelimit_allows_again_after_a_second) {
  uint64_t last = clock_now_ms() - 1000, suppressed = 5;
  ck_assert_int_eq(log_ratelimit(&last, &suppressed), 1);
  ck_assert_uint_eq(suppressed, 5);
  ck_assert_int_eq(log_ratelimit(&last, &suppressed), 0);
  ck_assert_uint_eq(suppressed, 6);
}
END_TEST

START_TEST(test_ratelimit_tolerates_a_stamp_from_the_future) {
  /* Another thread may stamp a later time than the one this call read. */
  uint64_t last = clock_now_ms() + 500, suppressed = 0;
  ck_assert_int_eq(log_ratelimit(&last, &suppressed), 0);
  ck_assert_uint_eq(suppressed, 1);
}
END_TEST

enum { RACERS = 8 };
static uint64_t race_last, race_suppressed;
static int race_allowed;
static pthread_barrier_t race_barrier;

static void *ratelimit_racer(void *arg) {
  (void)arg;
  pthread_barrier_wait(&race_barrier);
  if (log_ratelimit(&race_last, &race_suppressed))
    __atomic_fetch_add(&race_allowed, 1, __ATOMIC_RELAXED);
  return NULL;
}

START_TEST(test_ratelimit_lets_one_of_many_concurrent_callers_through) {
  pthread_t threads[RACERS];
  race_last = race_suppressed = 0;
  race_allowed = 0;
  pthread_barrier_init(&race_barrier, NULL, RACERS);
  uint64_t start = clock_now_ms();
  for (int i = 0; i < RACERS; i++)
    ck_assert_int_eq(pthread_create(&threads[i], NULL, ratelimit_racer, NULL),
                     0);
  for (int i = 0; i < RACERS; i++)
    pthread_join(threads[i], NULL);
  uint64_t elapsed = clock_now_ms() - start;
  pthread_barrier_destroy(&race_barrier);
  ck_assert_uint_eq((uint64_t)race_allowed + race_suppressed, RACERS);
  ck_assert_int_ge(race_allowed, 1);
  if (elapsed < 1000) /* a very slow machine may legitimately allow two */
    ck_assert_int_eq(race_allowed, 1);
}
END_TEST

START_TEST(test_clock_now_ms_never_goes_back) {
  uint64_t prev = clock_now_ms();
  ck_assert_uint_gt(prev, 0);
  for (int i = 0; i < 10000; i++) {
    uint64_t now = clock_now_ms();
    ck_assert_uint_ge(now, prev);
    prev = now;
  }
}
END_TEST

enum { WRITERS = 4, LINES_PER_WRITER = 2000 };

static void *concurrent_writer(void *arg) {
  int id = (int)(intptr_t)arg;
  char payload[301];
  memset(payload, 'a' + id, sizeof payload - 1);
  payload[sizeof payload - 1] = '\0';
  for (int i = 0; i < LINES_PER_WRITER; i++)
    log_write(LOG_INFO, "race", "writer=%d seq=%d %s end", id, i, payload);
  return NULL;
}

START_TEST(test_concurrent_lines_from_four_threads_stay_whole) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  pthread_t threads[WRITERS];
  for (int i = 0; i < WRITERS; i++)
    ck_assert_int_eq(pthread_create(&threads[i], NULL, concurrent_writer,
                                    (void *)(intptr_t)i),
                     0);
  for (int i = 0; i < WRITERS; i++)
    pthread_join(threads[i], NULL);

  char *text = read_all(log_path);
  ck_assert_int_eq(count_lines(text), WRITERS * LINES_PER_WRITER);
  int next_seq[WRITERS] = {0};
  regex_t re;
  ck_assert_int_eq(regcomp(&re,
                           LINE_PATTERN "writer=([0-3]) seq=([0-9]+) "
                                        "([a-d]{300}) end$",
                           REG_EXTENDED),
                   0);
  char *line = text;
  while (*line) {
    char *end = strchr(line, '\n');
    *end = '\0';
    regmatch_t m[5];
    ck_assert_msg(regexec(&re, line, 5, m, 0) == 0, "torn line: %s", line);
    int id = line[m[2].rm_so] - '0';
    int seq = atoi(line + m[3].rm_so);
    /* The payload letters belong to the same writer: no mixing. */
    ck_assert_int_eq(line[m[4].rm_so], 'a' + id);
    ck_assert_int_eq(line[m[4].rm_eo - 1], 'a' + id);
    /* Each writer's lines appear in the order it wrote them. */
    ck_assert_int_eq(seq, next_seq[id]);
    next_seq[id]++;
    line = end + 1;
  }
  regfree(&re);
  for (int i = 0; i < WRITERS; i++)
    ck_assert_int_eq(next_seq[i], LINES_PER_WRITER);
  free(text);
}
END_TEST

static void *rotating_writer(void *arg) {
  (void)arg;
  for (int i = 0; i < 500; i++)
    log_write(LOG_INFO, "race", "line %d", i);
  return NULL;
}

START_TEST(test_reopen_while_other_threads_log_loses_no_line) {
  ck_assert_int_eq(log_set_file(log_path), 0);
  pthread_t threads[WRITERS];
  for (int i = 0; i < WRITERS; i++)
    ck_assert_int_eq(pthread_create(&threads[i], NULL, rotating_writer, NULL),
                     0);
  for (int i = 0; i < 50; i++)
    ck_assert_int_eq(log_reopen(), 0);
  for (int i = 0; i < WRITERS; i++)
    pthread_join(threads[i], NULL);
  char *text = read_all(log_path);
  ck_assert_int_eq(count_lines(text), WRITERS * 500);
  free(text);
}
END_TEST

static Suite *log_suite(void) {
  Suite *s = suite_create("log");
  TCase *levels = tcase_create("levels");
  tcase_add_checked_fixture(levels, setup, teardown);
  tcase_add_test(levels, test_level_parse_accepts_the_four_names);
  tcase_add_test(levels, test_level_parse_rejects_other_names);
  tcase_add_test(levels, test_level_name_round_trips_through_parse);
  tcase_add_test(levels,
                 test_default_level_is_info_and_invalid_levels_are_ignored);
  suite_add_tcase(s, levels);

  TCase *lines = tcase_create("lines");
  tcase_add_checked_fixture(lines, setup, teardown);
  tcase_add_test(lines,
                 test_line_has_utc_timestamp_level_subsystem_and_message);
  tcase_add_test(lines, test_line_without_subsystem_uses_a_dash);
  tcase_add_test(lines, test_lines_below_the_level_are_dropped);
  tcase_add_test(lines, test_set_file_appends_to_existing_content);
  tcase_add_test(lines, test_set_file_failure_keeps_the_old_target);
  tcase_add_test(lines,
                 test_set_file_creates_the_file_readable_by_owner_and_group_only);
  tcase_add_test(lines, test_set_file_refuses_a_symbolic_link);
  tcase_add_test(lines, test_reopen_follows_the_path_after_rotation);
  tcase_add_test(lines, test_reopen_on_stderr_is_a_no_op);
  tcase_add_test(lines,
                 test_long_message_is_truncated_with_ellipsis_on_one_line);
  tcase_add_test(lines, test_truncation_never_splits_a_utf8_character);
  tcase_add_test(lines, test_control_characters_cannot_break_or_forge_a_line);
  tcase_add_test(lines, test_log_write_preserves_errno);
  suite_add_tcase(s, lines);

  TCase *ratelimit = tcase_create("ratelimit");
  tcase_add_test(ratelimit, test_ratelimit_allows_the_first_line);
  tcase_add_test(ratelimit,
                 test_ratelimit_refuses_a_second_line_within_a_second);
  tcase_add_test(ratelimit, test_ratelimit_allows_again_after_a_second);
  tcase_add_test(ratelimit, test_ratelimit_tolerates_a_stamp_from_the_future);
  tcase_add_test(ratelimit,
                 test_ratelimit_lets_one_of_many_concurrent_callers_through);
  tcase_add_test(ratelimit, test_clock_now_ms_never_goes_back);
  suite_add_tcase(s, ratelimit);

  TCase *threads = tcase_create("threads");
  tcase_add_checked_fixture(threads, setup, teardown);
  tcase_set_timeout(threads, 120);
  tcase_add_test(threads, test_concurrent_lines_from_four_threads_stay_whole);
  tcase_add_test(threads, test_reopen_while_other_threads_log_loses_no_line);
  suite_add_tcase(s, threads);
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(log_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
