/* Address parsing and formatting: IP literals only, clear reasons on error. */
#include "engine/address.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h" /* the socket headers, POSIX or Winsock */

/* Parses text, formats it back and returns the text (static buffer). */
static const char *round_trip(const char *text) {
  static char out[ADDRESS_TEXT_MAX];
  address_t addr;
  char err[256];
  ck_assert_msg(address_parse(text, &addr, err, sizeof err) == 0,
                "parse %s: %s", text, err);
  ck_assert_str_eq(err, "");
  ck_assert_int_ge(address_format(&addr, out, sizeof out), 0);
  return out;
}

/* Expects text to be refused with a reason containing needle. */
static void expect_error(const char *text, const char *needle) {
  address_t addr;
  memset(&addr, 0xAB, sizeof addr);
  address_t before = addr;
  char err[256] = "";
  ck_assert_int_eq(address_parse(text, &addr, err, sizeof err), -1);
  ck_assert_msg(strstr(err, needle) != NULL, "%s: error \"%s\" lacks \"%s\"",
                text ? text : "(null)", err, needle);
  ck_assert_msg(memcmp(&addr, &before, sizeof addr) == 0,
                "%s: a failed parse changed the output", text);
}

START_TEST(test_parse_ipv4_round_trips) {
  ck_assert_str_eq(round_trip("127.0.0.1:7777"), "127.0.0.1:7777");
  ck_assert_str_eq(round_trip("0.0.0.0:80"), "0.0.0.0:80");
  ck_assert_str_eq(round_trip("255.255.255.255:65535"),
                   "255.255.255.255:65535");
}
END_TEST

START_TEST(test_parse_ipv6_round_trips_in_canonical_form) {
  ck_assert_str_eq(round_trip("[::1]:7777"), "[::1]:7777");
  ck_assert_str_eq(round_trip("[::]:0"), "[::]:0");
  ck_assert_str_eq(round_trip("[2001:0DB8:0:0:0:0:0:1]:443"),
                   "[2001:db8::1]:443");
  ck_assert_str_eq(round_trip("[::ffff:10.0.0.1]:80"), "[::ffff:10.0.0.1]:80");
}
END_TEST

START_TEST(test_parse_accepts_ports_0_and_65535) {
  ck_assert_str_eq(round_trip("10.1.2.3:0"), "10.1.2.3:0");
  ck_assert_str_eq(round_trip("[::1]:65535"), "[::1]:65535");
  ck_assert_str_eq(round_trip("10.1.2.3:00080"), "10.1.2.3:80");
}
END_TEST

START_TEST(test_parsed_address_has_family_port_and_length) {
  address_t addr;
  ck_assert_int_eq(address_parse("192.168.1.2:8080", &addr, NULL, 0), 0);
  ck_assert_int_eq(address_family(&addr), AF_INET);
  ck_assert_uint_eq(address_port(&addr), 8080);
  ck_assert_uint_eq(address_length(&addr), sizeof(struct sockaddr_in));
  ck_assert_uint_eq(ntohl(addr.u.v4.sin_addr.s_addr), 0xC0A80102u);

  ck_assert_int_eq(address_parse("[fe80::2]:9", &addr, NULL, 0), 0);
  ck_assert_int_eq(address_family(&addr), AF_INET6);
  ck_assert_uint_eq(address_port(&addr), 9);
  ck_assert_uint_eq(address_length(&addr), sizeof(struct sockaddr_in6));
  ck_assert_uint_eq(addr.u.v6.sin6_scope_id, 0);
}
END_TEST

START_TEST(test_parse_rejects_empty_string) {
  expect_error("", "empty address");
  expect_error(NULL, "empty address");
}
END_TEST

START_TEST(test_parse_rejects_host_names_without_dns) {
  address_t addr;
  char err[256];
  ck_assert_int_eq(address_parse("localhost:80", &addr, err, sizeof err), -1);
  ck_assert_str_eq(err, "\"localhost:80\": not an IP literal; write an IPv4 "
                        "address like 127.0.0.1:7777 or an IPv6 one like "
                        "[::1]:7777");
  expect_error("example.com:443", "not an IP literal");
  expect_error("localhost", "not an IP literal");
  expect_error(" 127.0.0.1:80", "not an IP literal");
}
END_TEST

START_TEST(test_parse_rejects_malformed_ipv4) {
  expect_error("256.1.1.1:80", "not an IP literal");
  expect_error("1.2.3:80", "not an IP literal");
  expect_error("1.2.3.4.5:80", "not an IP literal");
  expect_error("1234567890123456789012345:80", "not an IP literal");
}
END_TEST

START_TEST(test_parse_rejects_missing_port) {
  expect_error("127.0.0.1", "missing port");
  expect_error("127.0.0.1:", "missing port");
  expect_error("[::1]", "missing port");
  expect_error("[::1]:", "missing port");
}
END_TEST

START_TEST(test_parse_rejects_missing_host) {
  expect_error(":80", "missing IP address");
  expect_error("[]:80", "not an IPv6 literal");
}
END_TEST

START_TEST(test_parse_rejects_port_out_of_range) {
  expect_error("1.2.3.4:65536", "port 65536 is out of range 0..65535");
  expect_error("[::1]:99999999999999999999999",
               "port 99999999999999999999999 is out of range");
}
END_TEST

START_TEST(test_parse_rejects_non_numeric_port) {
  expect_error("1.2.3.4:http", "port \"http\" is not a number");
  expect_error("1.2.3.4:-1", "port \"-1\" is not a number");
  expect_error("1.2.3.4:+80", "port \"+80\" is not a number");
  expect_error("1.2.3.4: 80", "is not a number");
}
END_TEST

START_TEST(test_parse_rejects_unbracketed_ipv6) {
  expect_error("::1:80", "needs brackets");
  expect_error("::1", "needs brackets");
  expect_error("2001:db8::1:443", "needs brackets");
  expect_error("a:b:c", "not an IP literal");
}
END_TEST

START_TEST(test_parse_rejects_trailing_garbage) {
  expect_error("1.2.3.4:80x", "unexpected \"x\" after the port");
  expect_error("[::1]:80 ", "unexpected \" \" after the port");
  expect_error("[::1]x:80", "expected \":port\" after \"]\"");
  expect_error("[::1]]:80", "expected \":port\"");
}
END_TEST

START_TEST(test_parse_rejects_unclosed_bracket) {
  expect_error("[::1:80", "missing \"]\"");
}
END_TEST

START_TEST(test_parse_rejects_ipv4_inside_brackets) {
  expect_error("[127.0.0.1]:80", "not an IPv6 literal");
}
END_TEST

START_TEST(test_parse_rejects_ipv6_scope_ids) {
  expect_error("[fe80::1%lo]:80", "scope ids");
}
END_TEST

START_TEST(test_parse_quotes_only_the_start_of_a_huge_input) {
  char text[1000];
  memset(text, 'x', sizeof text - 1);
  text[sizeof text - 1] = '\0';
  char err[512];
  address_t addr;
  ck_assert_int_eq(address_parse(text, &addr, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "...\": not an IP literal") != NULL, "%s", err);
  ck_assert_uint_lt(strlen(err), 300);
}
END_TEST

START_TEST(test_parse_survives_small_or_missing_error_buffer) {
  address_t addr;
  char err[8];
  ck_assert_int_eq(address_parse("nope:1", &addr, err, sizeof err), -1);
  ck_assert_uint_eq(strlen(err), sizeof err - 1);
  ck_assert_int_eq(address_parse("nope:1", &addr, NULL, 0), -1);
  ck_assert_int_eq(address_parse("1.2.3.4:1", &addr, NULL, 0), 0);
}
END_TEST

START_TEST(test_format_fits_the_longest_address_in_address_text_max) {
  const char *longest = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535";
  address_t addr;
  char buf[ADDRESS_TEXT_MAX];
  ck_assert_int_eq(address_parse(longest, &addr, NULL, 0), 0);
  int n = address_format(&addr, buf, sizeof buf);
  ck_assert_int_gt(n, 0);
  ck_assert_int_eq(n, (int)strlen(buf));
  ck_assert_str_eq(round_trip(buf), buf);

  ck_assert_int_eq(address_parse("[1111:2222:3333:4444:5555:6666:7777:8888]:"
                                 "65535",
                                 &addr, NULL, 0),
                   0);
  ck_assert_int_gt(address_format(&addr, buf, sizeof buf), 0);
  ck_assert_str_eq(buf, "[1111:2222:3333:4444:5555:6666:7777:8888]:65535");
}
END_TEST

START_TEST(test_format_fails_when_buffer_is_too_small) {
  address_t addr;
  char buf[8];
  ck_assert_int_eq(address_parse("127.0.0.1:7777", &addr, NULL, 0), 0);
  ck_assert_int_eq(address_format(&addr, buf, sizeof buf), -1);
  ck_assert_str_eq(buf, "");
  char exact[sizeof "127.0.0.1:7777"];
  ck_assert_int_eq(address_format(&addr, exact, sizeof exact),
                   (int)strlen("127.0.0.1:7777"));
}
END_TEST

START_TEST(test_from_sockaddr_copies_ipv4_and_ipv6) {
  struct sockaddr_in v4;
  memset(&v4, 0, sizeof v4);
  v4.sin_family = AF_INET;
  v4.sin_port = htons(1234);
  v4.sin_addr.s_addr = htonl(0x7F000001);
  address_t addr;
  char buf[ADDRESS_TEXT_MAX];
  address_from_sockaddr(&addr, (struct sockaddr *)&v4, sizeof v4);
  ck_assert_int_gt(address_format(&addr, buf, sizeof buf), 0);
  ck_assert_str_eq(buf, "127.0.0.1:1234");

  struct sockaddr_in6 v6;
  memset(&v6, 0, sizeof v6);
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(4321);
  v6.sin6_addr = in6addr_loopback;
  address_from_sockaddr(&addr, (struct sockaddr *)&v6, sizeof v6);
  ck_assert_int_gt(address_format(&addr, buf, sizeof buf), 0);
  ck_assert_str_eq(buf, "[::1]:4321");
  ck_assert_uint_eq(address_length(&addr), sizeof v6);
}
END_TEST

START_TEST(test_from_sockaddr_leaves_unknown_or_short_input_unspecified) {
  struct sockaddr_in v4;
  memset(&v4, 0, sizeof v4);
  v4.sin_family = AF_INET;
  address_t addr;
  char buf[ADDRESS_TEXT_MAX];
  address_from_sockaddr(&addr, (struct sockaddr *)&v4, 4);
  ck_assert_int_eq(address_family(&addr), AF_UNSPEC);
  ck_assert_uint_eq(address_length(&addr), 0);
  ck_assert_int_eq(address_format(&addr, buf, sizeof buf), -1);

  struct sockaddr other;
  memset(&other, 0, sizeof other);
  other.sa_family = AF_UNIX;
  address_from_sockaddr(&addr, &other, sizeof other);
  ck_assert_int_eq(address_family(&addr), AF_UNSPEC);
  ck_assert_uint_eq(address_port(&addr), 0);
}
END_TEST

static Suite *address_suite(void) {
  Suite *s = suite_create("address");
  TCase *parse = tcase_create("parse");
  tcase_add_test(parse, test_parse_ipv4_round_trips);
  tcase_add_test(parse, test_parse_ipv6_round_trips_in_canonical_form);
  tcase_add_test(parse, test_parse_accepts_ports_0_and_65535);
  tcase_add_test(parse, test_parsed_address_has_family_port_and_length);
  tcase_add_test(parse, test_parse_rejects_empty_string);
  tcase_add_test(parse, test_parse_rejects_host_names_without_dns);
  tcase_add_test(parse, test_parse_rejects_malformed_ipv4);
  tcase_add_test(parse, test_parse_rejects_missing_port);
  tcase_add_test(parse, test_parse_rejects_missing_host);
  tcase_add_test(parse, test_parse_rejects_port_out_of_range);
  tcase_add_test(parse, test_parse_rejects_non_numeric_port);
  tcase_add_test(parse, test_parse_rejects_unbracketed_ipv6);
  tcase_add_test(parse, test_parse_rejects_trailing_garbage);
  tcase_add_test(parse, test_parse_rejects_unclosed_bracket);
  tcase_add_test(parse, test_parse_rejects_ipv4_inside_brackets);
  tcase_add_test(parse, test_parse_rejects_ipv6_scope_ids);
  tcase_add_test(parse, test_parse_quotes_only_the_start_of_a_huge_input);
  tcase_add_test(parse, test_parse_survives_small_or_missing_error_buffer);
  suite_add_tcase(s, parse);

  TCase *format = tcase_create("format");
  tcase_add_test(format,
                 test_format_fits_the_longest_address_in_address_text_max);
  tcase_add_test(format, test_format_fails_when_buffer_is_too_small);
  tcase_add_test(format, test_from_sockaddr_copies_ipv4_and_ipv6);
  tcase_add_test(format,
                 test_from_sockaddr_leaves_unknown_or_short_input_unspecified);
  suite_add_tcase(s, format);
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(address_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
