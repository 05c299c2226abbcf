/* The process metrics' pure readers (procstat.h): /proc text and Windows
 * FILETIMEs to the figures Prometheus expects; and the live reading of this
 * very process. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "procstat.h"

/* A real /proc/self/stat line, with a comm holding ") (" and spaces. */
static const char *const STAT_LINE =
    "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 1234 0 0 0 "
    "250 150 0 0 20 0 7 0 98765 279846912 550 18446744073709551615 1 1 0 0 "
    "0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

START_TEST(stat_line_gives_cpu_memory_and_start) {
  procstat_t st;
  memset(&st, 0, sizeof st);
  double since_boot = 0;
  ck_assert_int_eq(procstat_parse_stat(STAT_LINE, 100, 4096, &st, &since_boot),
                   0);
  ck_assert(st.has_cpu && st.has_rss && st.has_vsize);
  ck_assert_double_eq_tol(st.cpu_seconds, 4.0, 1e-9); /* (250+150)/100 */
  ck_assert_double_eq_tol(st.rss_bytes, 550.0 * 4096, 1e-6);
  ck_assert_double_eq_tol(st.vsize_bytes, 279846912.0, 1e-6);
  ck_assert_double_eq_tol(since_boot, 987.65, 1e-9);
}
END_TEST

START_TEST(broken_stat_text_is_refused) {
  procstat_t st;
  double since_boot;
  memset(&st, 0, sizeof st);
  ck_assert_int_eq(procstat_parse_stat("", 100, 4096, &st, &since_boot), -1);
  ck_assert_int_eq(procstat_parse_stat("12 (x) S 1 2 3", 100, 4096, &st,
                                       &since_boot), -1);
  ck_assert_int_eq(procstat_parse_stat("12 (x) S 1 2 3 4 5 6 7 8 9 10 x 1 2 "
                                       "3 4 5 6 7 8 9 10 11", 100, 4096, &st,
                                       &since_boot), -1);
  ck_assert_int_eq(procstat_parse_stat(STAT_LINE, 0, 4096, &st, &since_boot),
                   -1);
  ck_assert(!st.has_cpu);
}
END_TEST

START_TEST(btime_is_found_in_proc_stat) {
  double btime = 0;
  ck_assert_int_eq(procstat_parse_btime("cpu  1 2 3\nintr 5\nbtime 1700000000\n"
                                        "processes 9\n", &btime), 0);
  ck_assert_double_eq_tol(btime, 1700000000.0, 1e-9);
  ck_assert_int_eq(procstat_parse_btime("cpu 1\nbtimex 5\n", &btime), -1);
  ck_assert_int_eq(procstat_parse_btime("btime \n", &btime), -1);
}
END_TEST

START_TEST(filetimes_become_seconds) {
  /* 2023-11-14T22:13:20Z is 1700000000 s after the epoch. */
  uint64_t ft = (1700000000ULL + 11644473600ULL) * 10000000ULL + 5000000ULL;
  ck_assert_double_eq_tol(procstat_filetime_unix(ft), 1700000000.5, 1e-6);
  ck_assert_double_eq_tol(procstat_filetime_unix(0), 0.0, 1e-9);
  ck_assert_double_eq_tol(procstat_filetime_seconds(25000000ULL), 2.5, 1e-9);
}
END_TEST

START_TEST(this_process_reads_sensibly) {
  procstat_t st;
  procstat_read(&st);
  ck_assert(st.has_rss && st.rss_bytes > 0);
  /* Wine answers GetProcessHandleCount with 0: then there is no figure. */
  ck_assert(st.has_fds ? st.open_fds > 0 : getenv("WINEPREFIX") != NULL);
  ck_assert(st.has_cpu && st.cpu_seconds >= 0);
  ck_assert(st.has_start);
  double now = (double)time(NULL);
  ck_assert_msg(st.start_time_seconds <= now + 2 &&
                    st.start_time_seconds > now - 3600,
                "start time %f, now %f", st.start_time_seconds, now);
}
END_TEST

int main(void) {
  Suite *s = suite_create("procstat");
  TCase *tc = tcase_create("readers");
  tcase_add_test(tc, stat_line_gives_cpu_memory_and_start);
  tcase_add_test(tc, broken_stat_text_is_refused);
  tcase_add_test(tc, btime_is_found_in_proc_stat);
  tcase_add_test(tc, filetimes_become_seconds);
  tcase_add_test(tc, this_process_reads_sensibly);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
