/* Packet framing (SPEC section 5) as the host parses it (host/app/framing.c):
 * a table of well-formed and malformed inputs, every possible declared size,
 * and the same packets whatever way the input is cut into reads. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"
#include "testutil.h"

#define MAX_SEEN 64

typedef struct seen {
  int count;
  uint16_t ids[MAX_SEEN];
  size_t lens[MAX_SEEN];
  int stop_after; /* ask to stop after this many packets; 0 = never */
} seen_t;

static int record(void *ctx, const framing_packet_t *p) {
  seen_t *s = ctx;
  if (s->count < MAX_SEEN) {
    s->ids[s->count] = p->id;
    s->lens[s->count] = p->payload_len;
  }
  s->count++;
  return s->stop_after && s->count >= s->stop_after;
}

/* One row: input bytes, max_packet_bytes, and what framing_split must say. */
typedef struct frame_case {
  const char *name;
  const char *bytes;
  size_t len;
  uint32_t max;
  size_t used;
  int packets;
  int bad;
  uint32_t bad_size;
} frame_case_t;

#define B(s) s, sizeof(s) - 1

static const frame_case_t cases[] = {
    {"empty input waits", B(""), 1024, 0, 0, 0, 0},
    {"one byte waits", B("\x04"), 1024, 0, 0, 0, 0},
    {"two bytes wait", B("\x04\x00"), 1024, 0, 0, 0, 0},
    {"three bytes wait", B("\x04\x00\x07"), 1024, 0, 0, 0, 0},
    {"size 0 is refused", B("\x00\x00\x01\x00"), 1024, 0, 0, 1, 0},
    {"size 1 is refused", B("\x01\x00\x01\x00"), 1024, 0, 0, 1, 1},
    {"size 2 is refused", B("\x02\x00\x01\x00"), 1024, 0, 0, 1, 2},
    {"size 3 is refused", B("\x03\x00\x01\x00"), 1024, 0, 0, 1, 3},
    {"size 4 is an empty packet", B("\x04\x00\x07\x00"), 1024, 4, 1, 0, 0},
    {"size max waits for its bytes", "\x00\x04\x01\x00", 4, 1024, 0, 0, 0, 0},
    {"size max + 1 is refused at once", B("\x01\x04\x01\x00"), 1024, 0, 0, 1,
     1025},
    {"0xFFFF with a small max is refused before its bytes",
     B("\xff\xff\x01\x00"), 1024, 0, 0, 1, 65535},
    {"0xFFFF with max 65535 waits for its bytes", B("\xff\xff\x01\x00xyz"),
     65535, 0, 0, 0, 0},
    {"an incomplete packet waits", B("\x0a\x00\x01\x00" "abc"), 1024, 0, 0, 0, 0},
    {"a packet and a partial header", B("\x05\x00\x01\x00" "a" "\x05\x00"),
     1024, 5, 1, 0, 0},
    {"two packets", B("\x05\x00\x01\x00" "a" "\x06\x00\x02\x00" "bc"), 1024,
     11, 2, 0, 0},
    {"a good packet then size 0", B("\x05\x00\x01\x00" "a" "\x00\x00\x00\x00"),
     1024, 5, 1, 1, 0},
    {"a good packet then 0xFFFF", B("\x05\x00\x01\x00" "a" "\xff\xff\x00\x00"),
     1024, 5, 1, 1, 65535},
    {"HTTP request as garbage", B("GET / HTTP/1.1\r\n\r\n"), 1024, 0, 0, 1,
     0x4547},
    {"TLS hello looks like a header and waits", B("\x16\x03\x01\x02\x00\x01"),
     1024, 0, 0, 0, 0},
    {"zero bytes", B("\x00\x00\x00\x00\x00\x00\x00\x00"), 65535, 0, 0, 1, 0},
};

START_TEST(test_each_case_of_the_table) {
  const frame_case_t *c = &cases[_i];
  seen_t seen = {0};
  uint8_t *copy = malloc(c->len + 1); /* exact size: ASan sees overreads */
  memcpy(copy, c->bytes, c->len);
  framing_result_t r = framing_split(copy, c->len, c->max, record, &seen);
  ck_assert_msg(r.used == c->used, "%s: used %zu, expected %zu", c->name,
                r.used, c->used);
  ck_assert_msg(seen.count == c->packets, "%s: %d packets, expected %d",
                c->name, seen.count, c->packets);
  ck_assert_msg(r.bad == c->bad, "%s: bad %d", c->name, r.bad);
  if (c->bad)
    ck_assert_msg(r.bad_size == c->bad_size, "%s: bad_size %u, expected %u",
                  c->name, r.bad_size, c->bad_size);
  ck_assert_int_eq(r.stopped, 0);
  free(copy);
}
END_TEST

START_TEST(test_every_declared_size_is_judged_from_the_header_alone) {
  const uint32_t maxes[] = {4, 5, 1024, 65534, 65535};
  for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
    for (uint32_t size = 0; size <= 0xFFFF; size++) {
      uint8_t header[4] = {(uint8_t)size, (uint8_t)(size >> 8), 9, 0};
      seen_t seen = {0};
      framing_result_t r = framing_split(header, 4, maxes[m], record, &seen);
      int refuse = size < 4 || size > maxes[m];
      /* Only the empty packet is complete with 4 bytes; others wait. */
      int complete = !refuse && size == 4;
      /* One plain test per size, and an assertion only when it fails:
       * 327,680 Check assertions are slow under the sanitizers. */
      if (r.bad != refuse || (refuse && r.bad_size != size) ||
          seen.count != complete || r.used != (complete ? 4u : 0u))
        ck_abort_msg("max %u, declared size %u: bad %d (size %u), %d "
                     "packets, used %zu",
                     maxes[m], size, r.bad, r.bad_size, seen.count, r.used);
    }
  }
}
END_TEST

START_TEST(test_ids_and_payload_lengths_come_through) {
  const uint8_t in[] = {5, 0, 0x34, 0x12, 'x', 4, 0, 0xff, 0xff};
  seen_t seen = {0};
  framing_result_t r = framing_split(in, sizeof in, 65535, record, &seen);
  ck_assert_uint_eq(r.used, 9);
  ck_assert_int_eq(seen.count, 2);
  ck_assert_uint_eq(seen.ids[0], 0x1234);
  ck_assert_uint_eq(seen.lens[0], 1);
  ck_assert_uint_eq(seen.ids[1], 0xFFFF);
  ck_assert_uint_eq(seen.lens[1], 0);
}
END_TEST

START_TEST(test_stop_counts_the_packet_and_delivers_no_more) {
  const uint8_t in[] = {4, 0, 1, 0, 4, 0, 2, 0, 4, 0, 3, 0};
  seen_t seen = {.stop_after = 2};
  framing_result_t r = framing_split(in, sizeof in, 65535, record, &seen);
  ck_assert_int_eq(r.stopped, 1);
  ck_assert_int_eq(seen.count, 2);
  ck_assert_uint_eq(r.used, 8);
}
END_TEST

/* The host keeps what framing_split did not use and presents it again with
 * the next read; the packets must be the same whatever the cuts. */
START_TEST(test_same_packets_whatever_the_cuts) {
  uint64_t rng = 0xC0FFEE;
  uint8_t stream[4096];
  size_t len = 0;
  int expected = 0;
  while (len + 4 + 200 < sizeof stream) {
    size_t payload = (size_t)(tu_rand(&rng) % 200);
    stream[len] = (uint8_t)(payload + 4);
    stream[len + 1] = 0;
    stream[len + 2] = (uint8_t)expected;
    stream[len + 3] = 0;
    for (size_t i = 0; i < payload; i++)
      stream[len + 4 + i] = (uint8_t)tu_rand(&rng);
    len += 4 + payload;
    expected++;
  }
  for (int round = 0; round < 200; round++) {
    seen_t seen = {0};
    uint8_t kept[4096];
    size_t kept_len = 0, pos = 0;
    while (pos < len) {
      size_t cut = 1 + (size_t)(tu_rand(&rng) % (round < 100 ? 7 : 700));
      if (cut > len - pos)
        cut = len - pos;
      memcpy(kept + kept_len, stream + pos, cut);
      kept_len += cut;
      pos += cut;
      framing_result_t r = framing_split(kept, kept_len, 1024, record, &seen);
      ck_assert_int_eq(r.bad, 0);
      memmove(kept, kept + r.used, kept_len - r.used);
      kept_len -= r.used;
      /* Never more kept than one packet's worth. */
      ck_assert_uint_lt(kept_len, 4 + 200);
    }
    ck_assert_uint_eq(kept_len, 0);
    ck_assert_int_eq(seen.count, expected);
    for (int i = 0; i < expected && i < MAX_SEEN; i++)
      ck_assert_uint_eq(seen.ids[i], (uint16_t)(i & 0xFF));
  }
}
END_TEST

START_TEST(test_header_written_for_sends_round_trips) {
  uint8_t header[FRAMING_HEADER_BYTES];
  ck_assert_int_eq(framing_write_header(header, 0xBEEF, 0, 65535), 0);
  ck_assert_mem_eq(header, "\x04\x00\xef\xbe", 4);
  ck_assert_int_eq(framing_write_header(header, 7, 65531, 65535), 0);
  ck_assert_mem_eq(header, "\xff\xff\x07\x00", 4);
  ck_assert_int_eq(framing_write_header(header, 7, 65532, 65535), -1);
  ck_assert_int_eq(framing_write_header(header, 7, 1020, 1024), 0);
  ck_assert_int_eq(framing_write_header(header, 7, 1021, 1024), -1);
  ck_assert_int_eq(framing_write_header(header, 7, (size_t)-1, 65535), -1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("framing");
  TCase *tc = tcase_create("framing");
  tcase_add_loop_test(tc, test_each_case_of_the_table, 0,
                      (int)(sizeof cases / sizeof cases[0]));
  tcase_add_test(tc, test_every_declared_size_is_judged_from_the_header_alone);
  tcase_add_test(tc, test_ids_and_payload_lengths_come_through);
  tcase_add_test(tc, test_stop_counts_the_packet_and_delivers_no_more);
  tcase_add_test(tc, test_same_packets_whatever_the_cuts);
  tcase_add_test(tc, test_header_written_for_sends_round_trips);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
