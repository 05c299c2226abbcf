/* Lexical path normalisation: see path.h. */
#include "path.h"

#include <string.h>

static int is_separator(char c) {
#ifdef _WIN32
  return c == '/' || c == '\\';
#else
  return c == '/';
#endif
}

void path_normalise(char *path) {
  size_t len = strlen(path);
  char separator = '/';
  for (size_t i = 0; i < len; i++)
    if (is_separator(path[i])) {
      separator = path[i];
      break;
    }
  /* The prefix that stays as it is: a drive, and the leading separators
   * (one for an absolute path; two for a UNC path on Windows). */
  size_t in = 0, out = 0;
#ifdef _WIN32
  if (((path[0] >= 'A' && path[0] <= 'Z') ||
       (path[0] >= 'a' && path[0] <= 'z')) &&
      path[1] == ':')
    in = out = 2;
#endif
  int absolute = is_separator(path[in]);
  if (absolute) {
    path[out++] = separator;
    in++;
#ifdef _WIN32
    if (in == 1 && is_separator(path[in])) { /* \\server\share */
      path[out++] = separator;
      in++;
    }
#endif
  }
  size_t root = out; /* never fold below this */
  size_t kept = 0;   /* components written that a ".." may fold away */
  while (in < len) {
    while (in < len && is_separator(path[in]))
      in++;
    size_t start = in;
    while (in < len && !is_separator(path[in]))
      in++;
    size_t n = in - start;
    if (n == 0 || (n == 1 && path[start] == '.'))
      continue;
    if (n == 2 && path[start] == '.' && path[start + 1] == '.') {
      if (kept > 0) {
        /* Drop the last component and the separator before it. */
        while (out > root && !is_separator(path[out - 1]))
          out--;
        if (out > root)
          out--;
        kept--;
        continue;
      }
      if (absolute)
        continue; /* "/.." is "/" */
      /* A relative path climbing above its start keeps the "..". */
    } else {
      kept++;
    }
    if (out > root)
      path[out++] = separator;
    memmove(path + out, path + start, n);
    out += n;
  }
  if (out == 0)
    path[out++] = '.';
  path[out] = '\0';
}
