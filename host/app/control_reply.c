/*
 * The client's side of a control reply, the same on every platform: the
 * first line is the protocol's ("ok", or "error: ..."), the rest is the
 * answer. Only the answer reaches standard output (SPEC section 8: `status
 * --json | jq .` must see one JSON document and nothing else); an error's
 * text goes back to the command, which prints it on standard error.
 */
#include "control.h"

#include <stdlib.h>
#include <string.h>

enum { READING_STATUS, ANSWER, ERROR_TEXT };

void control_reply_init(control_reply_t *r, FILE *answer) {
  memset(r, 0, sizeof *r);
  r->answer = answer;
  r->state = READING_STATUS;
}

static void keep(control_reply_t *r, const char *data, size_t len) {
  if (len == 0 || r->out_of_memory)
    return;
  if (r->len + len + 1 > r->cap) {
    size_t cap = r->cap ? r->cap : 256;
    while (cap < r->len + len + 1)
      cap *= 2;
    char *grown = realloc(r->text, cap);
    if (!grown) {
      r->out_of_memory = 1;
      return;
    }
    r->text = grown;
    r->cap = cap;
  }
  memcpy(r->text + r->len, data, len);
  r->len += len;
  r->text[r->len] = '\0';
}

/* An answer's bytes go to the answer stream as they arrive (a stop's
 * "stopping" long before its "stopped"), or are kept. */
static void answer(control_reply_t *r, const char *data, size_t len) {
  if (len == 0)
    return;
  if (r->answer) {
    fwrite(data, 1, len, r->answer);
    fflush(r->answer);
  } else {
    keep(r, data, len);
  }
}

void control_reply_feed(control_reply_t *r, const char *data, size_t len) {
  if (r->state == ANSWER) {
    answer(r, data, len);
    return;
  }
  if (r->state == ERROR_TEXT) {
    keep(r, data, len);
    return;
  }
  const char *newline = memchr(data, '\n', len);
  size_t head = newline ? (size_t)(newline - data) + 1 : len;
  keep(r, data, head);
  if (!newline || r->out_of_memory)
    return;
  /* The status line is complete ("ok\n"; "ok\r\n" is taken too). */
  size_t line = r->len - 1;
  if (line > 0 && r->text[line - 1] == '\r')
    line--;
  if (line == 2 && memcmp(r->text, "ok", 2) == 0) {
    r->state = ANSWER;
    r->len = 0;
    r->text[0] = '\0';
    answer(r, data + head, len - head);
  } else {
    /* "error: why" (or anything else: shown whole, never as an answer). */
    r->state = ERROR_TEXT;
    static const char prefix[] = "error: ";
    if (r->len >= sizeof prefix - 1 &&
        memcmp(r->text, prefix, sizeof prefix - 1) == 0) {
      memmove(r->text, r->text + sizeof prefix - 1,
              r->len - (sizeof prefix - 1) + 1);
      r->len -= sizeof prefix - 1;
    }
    keep(r, data + head, len - head);
  }
}

int control_reply_end(control_reply_t *r, char *err, size_t err_len) {
  if (r->out_of_memory) {
    snprintf(err, err_len, "out of memory reading the reply");
    return -1;
  }
  if (r->state == ANSWER)
    return 0;
  if (r->state == READING_STATUS) {
    snprintf(err, err_len,
             r->len ? "the instance closed the connection in the middle of "
                      "its reply"
                    : "the instance closed the connection without a reply");
    return -1;
  }
  size_t n = r->len;
  while (n > 0 && (r->text[n - 1] == '\n' || r->text[n - 1] == '\r'))
    n--;
  snprintf(err, err_len, "%.*s", (int)n, r->text);
  return 1;
}

void control_reply_free(control_reply_t *r) {
  free(r->text);
  r->text = NULL;
  r->len = r->cap = 0;
}
