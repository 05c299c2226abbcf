/*
 * Metrics a plugin defines (plugin ABI 1.3, SPEC section 15): defined in
 * on_load through the plugin's own table, updated from many threads with
 * no update lost, rendered exactly (escaping, the plugin and generation
 * labels, one header per name across generations and plugins), every
 * refused definition with its error and its one log line, and the series
 * of a generation gone when it closes. The last case runs the real host:
 * a fixture plugin's counter after traffic, across a reload, and after its
 * old generation is unloaded.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "engine/log.h"
#include "host_internal.h"
#include "plugin_metrics.h"
#include "testutil.h"

#ifdef _WIN32
#include <direct.h>
#define PLUGIN_SUFFIX ".dll"
#define make_dir(path) _mkdir(path)
#else
#define PLUGIN_SUFFIX ".so"
#define make_dir(path) mkdir((path), 0700)
#endif

/* ---- a host with two plugins and their generations, without engine ---- */

static host_t *host;
static host_plugin_t echo_plugin, arena_plugin;
static generation_t *gens[4];
static size_t gen_count;
static char log_path[512];
static size_t log_seen; /* bytes of the log already looked at */

/* A generation whose on_load is running: metric_define is open. */
static generation_t *generation(host_plugin_t *p, unsigned number) {
  generation_t *g = calloc(1, sizeof *g);
  ck_assert_ptr_nonnull(g);
  g->plugin = p;
  g->number = number;
  fill_api(g);
  atomic_store(&g->metrics_open, 1);
  gens[gen_count++] = g;
  return g;
}

static void close_generation(generation_t *g) {
  for (size_t i = 0; i < gen_count; i++) {
    if (gens[i] == g) {
      plugin_metrics_generation_closed(g);
      free(g);
      gens[i] = gens[--gen_count];
      return;
    }
  }
  ck_abort_msg("no such generation");
}

static void setup(void) {
  host = calloc(1, sizeof *host);
  ck_assert_ptr_nonnull(host);
  pthread_mutex_init(&host->metrics_lock, NULL);
  echo_plugin = (host_plugin_t){.host = host, .name = (char *)"echo"};
  arena_plugin = (host_plugin_t){.host = host, .name = (char *)"arena"};
  ck_assert_int_eq(tu_temp_file(log_path, sizeof log_path, "metrics_log"), 0);
  ck_assert_int_eq(log_set_file(log_path), 0);
  log_seen = 0;
}

static void teardown(void) {
  while (gen_count)
    close_generation(gens[gen_count - 1]);
  pthread_mutex_destroy(&host->metrics_lock);
  free(host);
  log_set_file(NULL);
  remove(log_path);
}

/* The page as a malloc'd string. */
static char *render(void) {
  prom_t p;
  prom_init(&p);
  plugin_metrics_render_metrics(host, &p);
  ck_assert(!p.failed);
  char *text = strdup(p.data ? p.data : "");
  prom_free(&p);
  return text;
}

static void assert_page(const char *expected) {
  char *page = render();
  ck_assert_str_eq(page, expected);
  free(page);
}

static void assert_page_has(const char *line) {
  char *page = render();
  ck_assert_msg(strstr(page, line) != NULL, "\"%s\" not in:\n%s", line, page);
  free(page);
}

/* What the log got since the last look, as a malloc'd string. */
static char *new_log(void) {
  FILE *f = fopen(log_path, "rb");
  ck_assert_ptr_nonnull(f);
  static char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *text = strdup(n > log_seen ? buf + log_seen : "");
  log_seen = n;
  return text;
}

/* Exactly one new log line, holding every string given (NULL ends). */
static void assert_one_log_line(const char *first, ...) {
  char *text = new_log();
  char *newline = strchr(text, '\n');
  ck_assert_msg(newline && newline[1] == '\0', "not one line: [%s]", text);
  va_list ap;
  va_start(ap, first);
  for (const char *part = first; part; part = va_arg(ap, const char *))
    ck_assert_msg(strstr(text, part) != NULL, "\"%s\" not in: %s", part, text);
  va_end(ap);
  free(text);
}

static void assert_no_log(void) {
  char *text = new_log();
  ck_assert_msg(text[0] == '\0', "unexpected log: %s", text);
  free(text);
}

static iocphost_metric_t *define(generation_t *g, iocphost_metric_type_t type,
                                 const char *name, const char *help,
                                 const char *const *labels) {
  iocphost_metric_def_t def = {IOCPHOST_METRIC_DEF_HEADER, .type = type,
                               .name = name, .help = help, .labels = labels};
  iocphost_metric_t *m = NULL;
  int rc = g->api.metric_define(&g->api, &def, &m);
  ck_assert_msg(rc == IOCPHOST_OK, "%s refused: %d", name, rc);
  ck_assert_ptr_nonnull(m);
  return m;
}

static iocphost_metric_t *define_histogram(generation_t *g, const char *name,
                                           const double *bounds,
                                           uint32_t count) {
  iocphost_metric_def_t def = {IOCPHOST_METRIC_DEF_HEADER,
                               .type = IOCPHOST_METRIC_HISTOGRAM,
                               .name = name,
                               .help = "h",
                               .buckets = bounds,
                               .bucket_count = count};
  iocphost_metric_t *m = NULL;
  ck_assert_int_eq(g->api.metric_define(&g->api, &def, &m), IOCPHOST_OK);
  return m;
}

/* ---- the table ---- */

START_TEST(a_1_3_table_has_the_metric_functions_and_a_1_2_one_does_not) {
  generation_t *g = generation(&echo_plugin, 1);
  const iocphost_api_t *api = &g->api;
  ck_assert(IOCPHOST_API_HAS(api, metric_define));
  ck_assert(IOCPHOST_API_HAS(api, metric_observe));
  ck_assert_ptr_nonnull(api->metric_define);
  ck_assert_ptr_nonnull(api->metric_series);
  ck_assert_ptr_nonnull(api->metric_add);
  ck_assert_ptr_nonnull(api->metric_set);
  ck_assert_ptr_nonnull(api->metric_observe);
  /* A 1.2 host's table ends with room_work: a 1.3 plugin asks first. */
  iocphost_api_t old = *api;
  old.struct_size =
      (uint32_t)(offsetof(iocphost_api_t, room_work) + sizeof old.room_work);
  ck_assert(IOCPHOST_API_HAS(&old, room_work));
  ck_assert(!IOCPHOST_API_HAS(&old, metric_define));
  ck_assert_str_eq(api->result_text(IOCPHOST_E_CONFLICT),
                   "the name is taken by a different definition");
  ck_assert_str_eq(api->result_text(IOCPHOST_E_LOAD_ONLY),
                   "allowed only while on_load runs");
}
END_TEST

/* ---- updates ---- */

#define THREADS 8
#define ADDS 20000

typedef struct adder {
  iocphost_metric_t *counter, *histogram;
  const iocphost_api_t *api;
  iocphost_series_t *found; /* what this thread's own lookup returned */
} adder_t;

static void *add_many(void *arg) {
  adder_t *a = arg;
  const char *values[] = {"shared", NULL};
  a->found = a->api->metric_series(a->counter, values);
  iocphost_series_t *h = a->api->metric_series(a->histogram, NULL);
  for (int i = 0; i < ADDS; i++) {
    a->api->metric_add(a->found, 1);
    a->api->metric_observe(h, (i % 2) ? 0.75 : 4);
  }
  return NULL;
}

START_TEST(adds_from_many_threads_on_shared_series_give_an_exact_sum) {
  generation_t *g = generation(&echo_plugin, 1);
  static const char *const labels[] = {"kind", NULL};
  static const double bounds[] = {1, 2};
  adder_t a[THREADS];
  pthread_t threads[THREADS];
  iocphost_metric_t *counter =
      define(g, IOCPHOST_METRIC_COUNTER, "work_total", "w", labels);
  iocphost_metric_t *histogram = define_histogram(g, "work_seconds", bounds, 2);
  for (int i = 0; i < THREADS; i++) {
    a[i] = (adder_t){counter, histogram, &g->api, NULL};
    ck_assert_int_eq(pthread_create(&threads[i], NULL, add_many, &a[i]), 0);
  }
  for (int i = 0; i < THREADS; i++)
    pthread_join(threads[i], NULL);
  for (int i = 1; i < THREADS; i++)
    ck_assert_ptr_eq(a[i].found, a[0].found);
  assert_page("# HELP work_total w\n"
              "# TYPE work_total counter\n"
              "work_total{kind=\"shared\",plugin=\"echo\",generation=\"1\"} "
              "160000\n"
              "# HELP work_seconds h\n"
              "# TYPE work_seconds histogram\n"
              "work_seconds_bucket{plugin=\"echo\",generation=\"1\",le=\"1\"} "
              "80000\n"
              "work_seconds_bucket{plugin=\"echo\",generation=\"1\",le=\"2\"} "
              "80000\n"
              "work_seconds_bucket{plugin=\"echo\",generation=\"1\","
              "le=\"+Inf\"} 160000\n"
              "work_seconds_sum{plugin=\"echo\",generation=\"1\"} 380000\n"
              "work_seconds_count{plugin=\"echo\",generation=\"1\"} 160000\n");
}
END_TEST

START_TEST(gauges_are_set_and_added_to) {
  generation_t *g = generation(&echo_plugin, 1);
  iocphost_metric_t *m =
      define(g, IOCPHOST_METRIC_GAUGE, "players", "Players.", NULL);
  iocphost_series_t *s = g->api.metric_series(m, NULL);
  ck_assert_ptr_nonnull(s);
  const char *header = "# HELP players Players.\n# TYPE players gauge\n";
  char expected[256];
  assert_page("# HELP players Players.\n# TYPE players gauge\n"
              "players{plugin=\"echo\",generation=\"1\"} 0\n");
  ck_assert_int_eq(g->api.metric_set(s, 5), IOCPHOST_OK);
  ck_assert_int_eq(g->api.metric_add(s, -2.5), IOCPHOST_OK);
  ck_assert_int_eq(g->api.metric_add(s, 1), IOCPHOST_OK);
  snprintf(expected, sizeof expected,
           "%splayers{plugin=\"echo\",generation=\"1\"} 3.5\n", header);
  assert_page(expected);
  ck_assert_int_eq(g->api.metric_set(s, -7), IOCPHOST_OK);
  snprintf(expected, sizeof expected,
           "%splayers{plugin=\"echo\",generation=\"1\"} -7\n", header);
  assert_page(expected);
  ck_assert_ptr_eq(g->api.metric_series(m, NULL), s);
}
END_TEST

START_TEST(a_histogram_counts_each_value_in_its_bucket_and_sums_exactly) {
  generation_t *g = generation(&echo_plugin, 1);
  static const double bounds[] = {0.5, 1, 10};
  iocphost_series_t *s = g->api.metric_series(
      define_histogram(g, "match_seconds", bounds, 3), NULL);
  /* A value equal to a bound counts in that bound's bucket (le). */
  static const double values[] = {0.25, 0.5, 1, 3, 10, 12, 1000, -4};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
    ck_assert_int_eq(g->api.metric_observe(s, values[i]), IOCPHOST_OK);
  const char *l = "{plugin=\"echo\",generation=\"1\"";
  char expected[1024];
  snprintf(expected, sizeof expected,
           "# HELP match_seconds h\n# TYPE match_seconds histogram\n"
           "match_seconds_bucket%s,le=\"0.5\"} 3\n"
           "match_seconds_bucket%s,le=\"1\"} 4\n"
           "match_seconds_bucket%s,le=\"10\"} 6\n"
           "match_seconds_bucket%s,le=\"+Inf\"} 8\n"
           "match_seconds_sum%s} 1022.75\n"
           "match_seconds_count%s} 8\n",
           l, l, l, l, l, l);
  assert_page(expected);
}
END_TEST

START_TEST(refused_updates_change_nothing_and_are_logged_once) {
  generation_t *g = generation(&echo_plugin, 1);
  static const double bounds[] = {1};
  iocphost_series_t *c = g->api.metric_series(
      define(g, IOCPHOST_METRIC_COUNTER, "c_total", "c", NULL), NULL);
  iocphost_series_t *h =
      g->api.metric_series(define_histogram(g, "h_seconds", bounds, 1), NULL);
  assert_no_log();
  ck_assert_int_eq(g->api.metric_add(c, 2), IOCPHOST_OK);
  ck_assert_int_eq(g->api.metric_add(c, -1), IOCPHOST_E_INVAL);
  assert_one_log_line("plugin echo generation 1: metric \"c_total\"",
                      "metric_add -1 refused on a counter",
                      "counters take finite adds >= 0", NULL);
  ck_assert_int_eq(g->api.metric_add(c, NAN), IOCPHOST_E_INVAL);
  ck_assert_int_eq(g->api.metric_add(c, INFINITY), IOCPHOST_E_INVAL);
  ck_assert_int_eq(g->api.metric_set(c, 1), IOCPHOST_E_INVAL);
  ck_assert_int_eq(g->api.metric_observe(c, 1), IOCPHOST_E_INVAL);
  assert_no_log(); /* once per metric */
  ck_assert_int_eq(g->api.metric_add(h, 1), IOCPHOST_E_INVAL);
  ck_assert_int_eq(g->api.metric_set(h, 1), IOCPHOST_E_INVAL);
  ck_assert_int_eq(g->api.metric_observe(h, NAN), IOCPHOST_E_INVAL);
  assert_one_log_line("metric \"h_seconds\"",
                      "metric_add 1 refused on a "
                      "histogram",
                      NULL);
  ck_assert_int_eq(g->api.metric_add(NULL, 1), IOCPHOST_E_INVAL);
  ck_assert_int_eq(g->api.metric_set(NULL, 1), IOCPHOST_E_INVAL);
  ck_assert_int_eq(g->api.metric_observe(NULL, 1), IOCPHOST_E_INVAL);
  assert_page_has("c_total{plugin=\"echo\",generation=\"1\"} 2\n");
  assert_page_has("h_seconds_count{plugin=\"echo\",generation=\"1\"} 0\n");
}
END_TEST

/* ---- series ---- */

START_TEST(series_need_one_valid_value_per_label_name) {
  generation_t *g = generation(&echo_plugin, 1);
  static const char *const labels[] = {"room", "mode", NULL};
  iocphost_metric_t *m =
      define(g, IOCPHOST_METRIC_COUNTER, "joins_total", "j", labels);
  const char *one[] = {"a", NULL};
  const char *three[] = {"a", "b", "c", NULL};
  const char *bad_utf8[] = {"a", "\xff", NULL};
  const char *overlong[] = {"a", "\xc0\xaf", NULL};
  static char long_value[1026];
  memset(long_value, 'v', 1025);
  const char *too_long[] = {"a", long_value, NULL};
  ck_assert_ptr_null(g->api.metric_series(m, NULL));
  assert_one_log_line("plugin echo generation 1: metric \"joins_total\"",
                      "metric_series got 0 label values for 2 label names",
                      "give one value per name, in order, then NULL", NULL);
  ck_assert_ptr_null(g->api.metric_series(m, one));
  ck_assert_ptr_null(g->api.metric_series(m, three));
  ck_assert_ptr_null(g->api.metric_series(m, bad_utf8));
  ck_assert_ptr_null(g->api.metric_series(m, overlong));
  ck_assert_ptr_null(g->api.metric_series(m, too_long));
  ck_assert_ptr_null(g->api.metric_series(NULL, one));
  assert_no_log();         /* once per metric */
  long_value[1024] = '\0'; /* 1024 bytes: the most */
  const char *ok[] = {"a", long_value, NULL};
  const char *utf8[] = {"a", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x8e\xae", NULL};
  ck_assert_ptr_nonnull(g->api.metric_series(m, ok));
  ck_assert_ptr_nonnull(g->api.metric_series(m, utf8));
}
END_TEST

START_TEST(a_metric_holds_at_most_max_series) {
  generation_t *g = generation(&echo_plugin, 1);
  static const char *const labels[] = {"player", NULL};
  iocphost_metric_t *m =
      define(g, IOCPHOST_METRIC_COUNTER, "kills_total", "k", labels);
  char value[32];
  const char *values[] = {value, NULL};
  iocphost_series_t *first = NULL;
  for (int i = 0; i < IOCPHOST_METRIC_MAX_SERIES; i++) {
    snprintf(value, sizeof value, "p%d", i);
    iocphost_series_t *s = g->api.metric_series(m, values);
    ck_assert_ptr_nonnull(s);
    if (i == 0)
      first = s;
  }
  snprintf(value, sizeof value, "p%d", IOCPHOST_METRIC_MAX_SERIES);
  ck_assert_ptr_null(g->api.metric_series(m, values));
  assert_one_log_line("metric \"kills_total\"", "has 4096 series already",
                      "label by something with few values", NULL);
  snprintf(value, sizeof value, "p0");
  ck_assert_ptr_eq(g->api.metric_series(m, values), first);
}
END_TEST

/* ---- render ---- */

START_TEST(render_escapes_values_and_puts_each_name_under_one_header) {
  generation_t *echo1 = generation(&echo_plugin, 1);
  generation_t *echo2 = generation(&echo_plugin, 2);
  generation_t *arena1 = generation(&arena_plugin, 1);
  static const char *const labels[] = {"room", "kind", NULL};
  const char *quoted[] = {"a\"b", "c\\d", NULL};
  const char *broken[] = {"lobby", "e\nf", NULL};
  const char *plain[] = {"x", "y", NULL};
  iocphost_metric_t *m1 = define(echo1, IOCPHOST_METRIC_COUNTER,
                                 "chat_messages_total", "By room.", labels);
  iocphost_metric_t *players =
      define(echo1, IOCPHOST_METRIC_GAUGE, "echo_players",
             "Players\nnow \\ here.", NULL);
  iocphost_metric_t *m2 = define(echo2, IOCPHOST_METRIC_COUNTER,
                                 "chat_messages_total", "Other help.", labels);
  iocphost_metric_t *m3 = define(arena1, IOCPHOST_METRIC_COUNTER,
                                 "chat_messages_total", "By room.", labels);
  ck_assert_ptr_ne(m1, m2);
  echo1->api.metric_add(echo1->api.metric_series(m1, quoted), 3);
  echo2->api.metric_add(echo2->api.metric_series(m2, broken), 1);
  arena1->api.metric_add(arena1->api.metric_series(m3, plain), 0.5);
  echo1->api.metric_set(echo1->api.metric_series(players, NULL), 2);
  assert_page(
      "# HELP chat_messages_total By room.\n"
      "# TYPE chat_messages_total counter\n"
      "chat_messages_total{room=\"a\\\"b\",kind=\"c\\\\d\",plugin=\"echo\","
      "generation=\"1\"} 3\n"
      "chat_messages_total{room=\"lobby\",kind=\"e\\nf\",plugin=\"echo\","
      "generation=\"2\"} 1\n"
      "chat_messages_total{room=\"x\",kind=\"y\",plugin=\"arena\","
      "generation=\"1\"} 0.5\n"
      "# HELP echo_players Players\\nnow \\\\ here.\n"
      "# TYPE echo_players gauge\n"
      "echo_players{plugin=\"echo\",generation=\"1\"} 2\n");
}
END_TEST

START_TEST(a_closed_generation_takes_its_series_with_it) {
  generation_t *echo1 = generation(&echo_plugin, 1);
  generation_t *echo2 = generation(&echo_plugin, 2);
  iocphost_metric_t *m1 =
      define(echo1, IOCPHOST_METRIC_COUNTER, "rounds_total", "r", NULL);
  iocphost_metric_t *m2 =
      define(echo2, IOCPHOST_METRIC_COUNTER, "rounds_total", "r", NULL);
  echo1->api.metric_add(echo1->api.metric_series(m1, NULL), 1);
  echo2->api.metric_add(echo2->api.metric_series(m2, NULL), 2);
  close_generation(echo1);
  assert_page("# HELP rounds_total r\n# TYPE rounds_total counter\n"
              "rounds_total{plugin=\"echo\",generation=\"2\"} 2\n");
  /* Gone, its definition no longer binds: another type is welcome now. */
  generation_t *echo3 = generation(&echo_plugin, 3);
  close_generation(echo2);
  assert_page("");
  define(echo3, IOCPHOST_METRIC_GAUGE, "rounds_total", "r", NULL);
}
END_TEST

/* ---- refused definitions ---- */

typedef struct refusal {
  uint32_t type;
  const char *name;
  const char *const *labels;
  const double *buckets;
  uint32_t bucket_count;
  const char *reason; /* in the log line */
} refusal_t;

START_TEST(every_invalid_definition_is_refused_with_a_reason) {
  generation_t *g = generation(&echo_plugin, 1);
  static const char *const bad_label[] = {"bad-label", NULL};
  static const char *const digit_label[] = {"1st", NULL};
  static const char *const dunder[] = {"__x", NULL};
  static const char *const plugin_label[] = {"plugin", NULL};
  static const char *const generation_label[] = {"generation", NULL};
  static const char *const le[] = {"le", NULL};
  static const char *const twice[] = {"a", "b", "a", NULL};
  static const char *const nine[] = {"a", "b", "c", "d", "e",
                                     "f", "g", "h", "i", NULL};
  static const double flat[] = {1, 1};
  static const double down[] = {2, 1};
  static const double nan_bound[] = {NAN};
  static const double inf_bound[] = {1, INFINITY};
  static double many[IOCPHOST_METRIC_MAX_BUCKETS + 1];
  for (int i = 0; i <= IOCPHOST_METRIC_MAX_BUCKETS; i++)
    many[i] = i;
  static char long_name[202];
  memset(long_name, 'n', 201);
  const uint32_t C = IOCPHOST_METRIC_COUNTER, H = IOCPHOST_METRIC_HISTOGRAM;
  const refusal_t cases[] = {
      {C, NULL, NULL, NULL, 0, "invalid metric name"},
      {C, "", NULL, NULL, 0, "invalid metric name"},
      {C, "2fast", NULL, NULL, 0, "invalid metric name"},
      {C, "bad-name", NULL, NULL, 0, "not starting with a digit"},
      {C, long_name, NULL, NULL, 0, "at most 200 bytes"},
      {C, "iocphost_sessions", NULL, NULL, 0,
       "names starting with \"iocphost_\" are the host's"},
      {0, "no_type", NULL, NULL, 0, "unknown type 0"},
      {4, "no_type", NULL, NULL, 0, "unknown type 4"},
      {C, "x_total", bad_label, NULL, 0, "invalid label name \"bad-label\""},
      {C, "x_total", digit_label, NULL, 0, "invalid label name \"1st\""},
      {C, "x_total", dunder, NULL, 0, "invalid label name \"__x\""},
      {C, "x_total", plugin_label, NULL, 0,
       "label name \"plugin\" is reserved"},
      {C, "x_total", generation_label, NULL, 0,
       "label name \"generation\" is reserved"},
      {C, "x_total", le, NULL, 0, "label name \"le\" is reserved"},
      {C, "x_total", twice, NULL, 0, "label name \"a\" is listed twice"},
      {C, "x_total", nine, NULL, 0, "more than 8 label names"},
      {H, "x_seconds", NULL, NULL, 0, "1 to 64 bucket bounds"},
      {H, "x_seconds", NULL, many, 0, "1 to 64 bucket bounds"},
      {H, "x_seconds", NULL, many, IOCPHOST_METRIC_MAX_BUCKETS + 1, "found 65"},
      {H, "x_seconds", NULL, flat, 2, "bucket bound 1 (1) must be finite"},
      {H, "x_seconds", NULL, down, 2, "bucket bound 1 (1) must be finite"},
      {H, "x_seconds", NULL, nan_bound, 1, "bucket bound 0 (nan)"},
      {H, "x_seconds", NULL, inf_bound, 2, "bucket bound 1 (inf)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const refusal_t *c = &cases[i];
    iocphost_metric_def_t def = {IOCPHOST_METRIC_DEF_HEADER,
                                 .type = c->type,
                                 .name = c->name,
                                 .labels = c->labels,
                                 .buckets = c->buckets,
                                 .bucket_count = c->bucket_count};
    iocphost_metric_t *m = (iocphost_metric_t *)&def;
    ck_assert_msg(g->api.metric_define(&g->api, &def, &m) == IOCPHOST_E_INVAL,
                  "case %zu (%s) not refused", i, c->reason);
    ck_assert_ptr_null(m);
    assert_one_log_line("plugin echo generation 1: metric \"", c->reason, NULL);
  }
  /* A definition without IOCPHOST_METRIC_DEF_HEADER, or none at all. */
  iocphost_metric_def_t unsized = {.type = C, .name = "ok_total"};
  iocphost_metric_t *m;
  ck_assert_int_eq(g->api.metric_define(&g->api, &unsized, &m),
                   IOCPHOST_E_INVAL);
  assert_one_log_line("struct_size is 0", "IOCPHOST_METRIC_DEF_HEADER", NULL);
  ck_assert_int_eq(g->api.metric_define(&g->api, NULL, &m), IOCPHOST_E_INVAL);
  assert_one_log_line("def and out are NULL", NULL);
  ck_assert_int_eq(g->api.metric_define(&g->api, &unsized, NULL),
                   IOCPHOST_E_INVAL);
  assert_one_log_line("def and out are NULL", NULL);
  assert_page("");
}
END_TEST

START_TEST(a_name_has_one_definition_across_generations_and_plugins) {
  generation_t *echo1 = generation(&echo_plugin, 1);
  generation_t *echo2 = generation(&echo_plugin, 2);
  generation_t *arena1 = generation(&arena_plugin, 1);
  static const char *const a[] = {"a", NULL};
  static const char *const b[] = {"b", NULL};
  static const char *const ab[] = {"a", "b", NULL};
  static const double bounds[] = {1, 2};
  static const double other_bounds[] = {5};
  iocphost_metric_t *dup =
      define(echo1, IOCPHOST_METRIC_COUNTER, "dup_total", "d", a);
  /* Again the same way, in the same generation: the same metric. */
  ck_assert_ptr_eq(define(echo1, IOCPHOST_METRIC_COUNTER, "dup_total", "d", a),
                   dup);
  assert_no_log();
  const struct {
    generation_t *g;
    iocphost_metric_type_t type;
    const char *name;
    const char *const *labels;
    const char *reason;
  } cases[] = {
      {echo2, IOCPHOST_METRIC_GAUGE, "dup_total", a,
       "plugin echo generation 1 defined it already as a counter with labels "
       "(a)"},
      {arena1, IOCPHOST_METRIC_COUNTER, "dup_total", b,
       "plugin echo generation 1 defined it already as a counter"},
      {echo1, IOCPHOST_METRIC_COUNTER, "dup_total", ab, "labels (a)"},
      {echo1, IOCPHOST_METRIC_COUNTER, "dup_total", NULL, "labels (a)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    iocphost_metric_def_t def = {IOCPHOST_METRIC_DEF_HEADER,
                                 .type = cases[i].type, .name = cases[i].name,
                                 .labels = cases[i].labels};
    iocphost_metric_t *m = (iocphost_metric_t *)&def;
    ck_assert_int_eq(cases[i].g->api.metric_define(&cases[i].g->api, &def, &m),
                     IOCPHOST_E_CONFLICT);
    ck_assert_ptr_null(m);
    assert_one_log_line("metric \"dup_total\"", cases[i].reason,
                        "keep that definition or use another name", NULL);
  }
  /* A histogram's samples and another metric's name must not meet. */
  define_histogram(echo1, "lag_seconds", bounds, 2);
  iocphost_metric_def_t sum = {IOCPHOST_METRIC_DEF_HEADER,
                               .type = IOCPHOST_METRIC_GAUGE,
                               .name = "lag_seconds_sum"};
  iocphost_metric_t *m;
  ck_assert_int_eq(arena1->api.metric_define(&arena1->api, &sum, &m),
                   IOCPHOST_E_CONFLICT);
  assert_one_log_line("plugin arena generation 1: metric \"lag_seconds_sum\"",
                      "clashes with the samples of histogram \"lag_seconds\"",
                      NULL);
  define(echo1, IOCPHOST_METRIC_COUNTER, "hits_count", "h", NULL);
  iocphost_metric_def_t hits = {
      IOCPHOST_METRIC_DEF_HEADER, .type = IOCPHOST_METRIC_HISTOGRAM,
      .name = "hits", .buckets = bounds, .bucket_count = 2};
  ck_assert_int_eq(echo2->api.metric_define(&echo2->api, &hits, &m),
                   IOCPHOST_E_CONFLICT);
  assert_one_log_line("plugin echo generation 2: metric \"hits\"",
                      "would clash with \"hits_count\" of plugin echo "
                      "generation 1",
                      NULL);
  /* One generation may not give one histogram two sets of bounds; another
   * generation may (its series carry their own le). */
  iocphost_metric_def_t lag = {
      IOCPHOST_METRIC_DEF_HEADER, .type = IOCPHOST_METRIC_HISTOGRAM,
      .name = "lag_seconds", .buckets = other_bounds, .bucket_count = 1};
  ck_assert_int_eq(echo1->api.metric_define(&echo1->api, &lag, &m),
                   IOCPHOST_E_CONFLICT);
  assert_one_log_line("other bucket bounds", NULL);
  ck_assert_int_eq(echo2->api.metric_define(&echo2->api, &lag, &m),
                   IOCPHOST_OK);
}
END_TEST

START_TEST(defining_outside_on_load_is_refused) {
  generation_t *g = generation(&echo_plugin, 1);
  atomic_store(&g->metrics_open, 0); /* on_load returned */
  iocphost_metric_def_t def = {IOCPHOST_METRIC_DEF_HEADER,
                               .type = IOCPHOST_METRIC_COUNTER,
                               .name = "late_total"};
  iocphost_metric_t *m = (iocphost_metric_t *)&def;
  ck_assert_int_eq(g->api.metric_define(&g->api, &def, &m),
                   IOCPHOST_E_LOAD_ONLY);
  ck_assert_ptr_null(m);
  assert_one_log_line("plugin echo generation 1: metric \"late_total\"",
                      "defined outside on_load", NULL);
  assert_page("");
}
END_TEST

/* ---- the real host ---- */

#define FIXTURE TEST_BINARY_DIR "/tests/fixtures/plugins/fixture_metrics"
#define RUN_DIR TEST_BINARY_DIR "/tests/unit/plugin_metrics_run"

static void write_config(const char *file, int port, int version) {
  FILE *f = fopen(file, "wb");
  ck_assert_ptr_nonnull(f);
  fprintf(f,
          "{\"name\": \"metrics_test\", \"runtime_dir\": \"%s\","
          " \"shutdown\": {\"drain_timeout_ms\": 2000},"
          " \"cores\": [{\"name\": \"main\", \"threads\": 1}],"
          " \"plugins\": [{\"name\": \"fixture_metrics\", \"path\": \"%s\","
          "   \"settings\": {\"version\": %d}}],"
          " \"services\": [{\"name\": \"svc\", \"type\": \"server\","
          "   \"core\": \"main\", \"plugin\": \"fixture_metrics\","
          "   \"address\": \"127.0.0.1:%d\", \"framing\": \"raw\"}]}",
          RUN_DIR, FIXTURE, version, port);
  fclose(f);
}

static host_t *real_host;

static int page_lacks_generation_1(void *arg) {
  (void)arg;
  prom_t p;
  prom_init(&p);
  plugin_metrics_render_metrics(real_host, &p);
  int gone = p.data && !strstr(p.data, "generation=\"1\"");
  prom_free(&p);
  return gone;
}

static void echo_through(int fd, const char *text) {
  char back[16];
  size_t len = strlen(text);
  ck_assert_int_eq(tu_write_all(fd, text, len), 0);
  ck_assert_int_eq(tu_read_exact(fd, back, len, 5000), 0);
}

static void render_real(char **out) {
  prom_t p;
  prom_init(&p);
  plugin_metrics_render_metrics(real_host, &p);
  *out = strdup(p.data ? p.data : "");
  prom_free(&p);
}

START_TEST(a_loaded_plugin_counts_across_a_reload_until_unloaded) {
  make_dir(RUN_DIR);
  char file[512];
  snprintf(file, sizeof file, "%s/config.json", RUN_DIR);
  int port = tu_free_port();
  write_config(file, port, 1);
  config_t *config;
  char err[1024] = "";
  ck_assert_msg(config_load(file, &config, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(host_open(config, &real_host, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(host_start(real_host, err, sizeof err) == 0, "%s", err);

  int first = tu_connect(port, 0);
  ck_assert_int_ge(first, 0);
  echo_through(first, "hello");
  char *page;
  render_real(&page);
  ck_assert_str_eq(
      page, "# HELP fixture_bytes_total Bytes echoed.\n"
            "# TYPE fixture_bytes_total counter\n"
            "fixture_bytes_total{service=\"svc\",plugin=\"fixture_metrics\","
            "generation=\"1\"} 5\n"
            "# HELP fixture_version The version setting.\n"
            "# TYPE fixture_version gauge\n"
            "fixture_version{plugin=\"fixture_metrics\",generation=\"1\"} 1\n");
  free(page);

  /* A reload: generation 2 defines the same families; both render under
   * one header each while the first session keeps generation 1. */
  write_config(file, port, 2);
  char *reply = host_reload(real_host, file, 0);
  ck_assert_msg(strncmp(reply, "ok\n", 3) == 0, "%s", reply);
  free(reply);
  int second = tu_connect(port, 0);
  ck_assert_int_ge(second, 0);
  echo_through(second, "ab");
  echo_through(first, "c");
  render_real(&page);
  ck_assert_str_eq(
      page, "# HELP fixture_bytes_total Bytes echoed.\n"
            "# TYPE fixture_bytes_total counter\n"
            "fixture_bytes_total{service=\"svc\",plugin=\"fixture_metrics\","
            "generation=\"1\"} 6\n"
            "fixture_bytes_total{service=\"svc\",plugin=\"fixture_metrics\","
            "generation=\"2\"} 2\n"
            "# HELP fixture_version The version setting.\n"
            "# TYPE fixture_version gauge\n"
            "fixture_version{plugin=\"fixture_metrics\",generation=\"1\"} 1\n"
            "fixture_version{plugin=\"fixture_metrics\",generation=\"2\"} 2\n");
  free(page);

  /* Its last session gone, generation 1 is unloaded, and its series with
   * it. */
  tu_close(first);
  ck_assert(tu_wait_until(page_lacks_generation_1, NULL, 10000));
  render_real(&page);
  ck_assert_str_eq(
      page, "# HELP fixture_bytes_total Bytes echoed.\n"
            "# TYPE fixture_bytes_total counter\n"
            "fixture_bytes_total{service=\"svc\",plugin=\"fixture_metrics\","
            "generation=\"2\"} 2\n"
            "# HELP fixture_version The version setting.\n"
            "# TYPE fixture_version gauge\n"
            "fixture_version{plugin=\"fixture_metrics\",generation=\"2\"} 2\n");
  free(page);

  tu_close(second);
  host_stop(real_host);
  render_real(&page);
  ck_assert_str_eq(page, "");
  free(page);
  host_close(real_host);
  config_free(config);
  remove(file);
}
END_TEST

static Suite *metrics_suite(void) {
  Suite *s = suite_create("plugin_metrics");
  TCase *api = tcase_create("api");
  tcase_add_checked_fixture(api, setup, teardown);
  tcase_set_timeout(api, 120);
  tcase_add_test(api,
                 a_1_3_table_has_the_metric_functions_and_a_1_2_one_does_not);
  tcase_add_test(api,
                 adds_from_many_threads_on_shared_series_give_an_exact_sum);
  tcase_add_test(api, gauges_are_set_and_added_to);
  tcase_add_test(api,
                 a_histogram_counts_each_value_in_its_bucket_and_sums_exactly);
  tcase_add_test(api, refused_updates_change_nothing_and_are_logged_once);
  tcase_add_test(api, series_need_one_valid_value_per_label_name);
  tcase_add_test(api, a_metric_holds_at_most_max_series);
  tcase_add_test(api,
                 render_escapes_values_and_puts_each_name_under_one_header);
  tcase_add_test(api, a_closed_generation_takes_its_series_with_it);
  tcase_add_test(api, every_invalid_definition_is_refused_with_a_reason);
  tcase_add_test(api, a_name_has_one_definition_across_generations_and_plugins);
  tcase_add_test(api, defining_outside_on_load_is_refused);
  suite_add_tcase(s, api);
  TCase *real = tcase_create("host");
  tcase_set_timeout(real, 120);
  tcase_add_test(real, a_loaded_plugin_counts_across_a_reload_until_unloaded);
  suite_add_tcase(s, real);
  return s;
}

int main(void) {
  SRunner *runner = srunner_create(metrics_suite());
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
