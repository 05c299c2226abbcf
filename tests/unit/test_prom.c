/* The Prometheus text writer (prom.h): exact exposition lines. */
#include <check.h>
#include <string.h>

#include "prom.h"

START_TEST(a_family_writes_help_and_type_once) {
  prom_t p;
  prom_init(&p);
  prom_family(&p, "iocphost_sessions", PROM_GAUGE, "Open sessions.\nNow.");
  const char *echo[] = {"service", "echo", NULL};
  const char *chat[] = {"service", "chat", NULL};
  prom_sample_u64(&p, "iocphost_sessions", echo, 3);
  prom_sample_u64(&p, "iocphost_sessions", chat, 18446744073709551615u);
  ck_assert_int_eq(p.failed, 0);
  ck_assert_str_eq(p.data,
                   "# HELP iocphost_sessions Open sessions.\\nNow.\n"
                   "# TYPE iocphost_sessions gauge\n"
                   "iocphost_sessions{service=\"echo\"} 3\n"
                   "iocphost_sessions{service=\"chat\"} 18446744073709551615\n");
  prom_free(&p);
}
END_TEST

START_TEST(label_values_are_escaped) {
  prom_t p;
  prom_init(&p);
  const char *labels[] = {"a", "q\"b\\s\nn", "b", "", NULL};
  prom_sample(&p, "m", labels, 1.5);
  prom_sample(&p, "m", NULL, -2);
  prom_sample(&p, "m", NULL, 0.3);
  ck_assert_str_eq(p.data,
                   "m{a=\"q\\\"b\\\\s\\nn\",b=\"\"} 1.5\nm -2\nm 0.3\n");
  prom_free(&p);
}
END_TEST

START_TEST(a_histogram_is_cumulative_with_inf_sum_and_count) {
  prom_t p;
  prom_init(&p);
  const double bounds[] = {0.001, 0.1};
  const uint64_t counts[] = {2, 3, 1};
  const char *labels[] = {"kind", "on_packet", NULL};
  prom_histogram(&p, "h", labels, bounds, counts, 2, 0.125);
  ck_assert_str_eq(p.data, "h_bucket{kind=\"on_packet\",le=\"0.001\"} 2\n"
                           "h_bucket{kind=\"on_packet\",le=\"0.1\"} 5\n"
                           "h_bucket{kind=\"on_packet\",le=\"+Inf\"} 6\n"
                           "h_sum{kind=\"on_packet\"} 0.125\n"
                           "h_count{kind=\"on_packet\"} 6\n");
  prom_free(&p);
}
END_TEST

START_TEST(long_output_grows_the_buffer) {
  prom_t p;
  prom_init(&p);
  char value[300];
  memset(value, 'v', sizeof(value) - 1);
  value[sizeof(value) - 1] = '\0';
  const char *labels[] = {"l", value, NULL};
  for (int i = 0; i < 100; i++) prom_sample_u64(&p, "m", labels, (uint64_t)i);
  ck_assert_int_eq(p.failed, 0);
  ck_assert_uint_eq(p.len, strlen(p.data));
  ck_assert_uint_eq(p.len, 100 * (strlen("m{l=\"\"} ") + 299 + 1) + 10 + 90 * 2);
  prom_free(&p);
}
END_TEST

START_TEST(names_follow_prometheus_rules) {
  ck_assert(prom_valid_metric_name("iocphost_x:y_1"));
  ck_assert(!prom_valid_metric_name("1abc"));
  ck_assert(!prom_valid_metric_name("a-b"));
  ck_assert(!prom_valid_metric_name(""));
  ck_assert(prom_valid_label_name("room_kind"));
  ck_assert(!prom_valid_label_name("__reserved"));
  ck_assert(!prom_valid_label_name("a:b"));
}
END_TEST

int main(void) {
  Suite *s = suite_create("prom");
  TCase *tc = tcase_create("writer");
  tcase_add_test(tc, a_family_writes_help_and_type_once);
  tcase_add_test(tc, label_values_are_escaped);
  tcase_add_test(tc, a_histogram_is_cumulative_with_inf_sum_and_count);
  tcase_add_test(tc, long_output_grows_the_buffer);
  tcase_add_test(tc, names_follow_prometheus_rules);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
