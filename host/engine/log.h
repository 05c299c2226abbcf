/*
 * The engine's log: one line per event, "2026-11-29T05:06:25.123Z LEVEL
 * [subsystem] text", to stderr or a file. Levels match iocphost_log_level_t.
 * Thread-safe: a line is written with one write call so lines never
 * interleave. The host chooses the level and the destination.
 */
#ifndef IOCPHOST_LOG_H
#define IOCPHOST_LOG_H

#include <stdarg.h>
#include <stdint.h>

#ifndef IOCPHOST_PRINTF_FORMAT
#if defined(__MINGW32__)
#define IOCPHOST_PRINTF_FORMAT gnu_printf /* with __USE_MINGW_ANSI_STDIO */
#else
#define IOCPHOST_PRINTF_FORMAT printf
#endif
#endif

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(int level);
int log_get_level(void);
/* Send lines to path (appending), or to stderr when path is NULL.
 * Returns 0, or -1 if the file cannot be opened (the old target stays). */
int log_set_file(const char *path);
/* Reopen the current file (after log rotation). */
int log_reopen(void);

void log_write(int level, const char *subsystem, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(IOCPHOST_PRINTF_FORMAT, 3, 4)))
#endif
    ;
void log_writev(int level, const char *subsystem, const char *fmt, va_list ap);

/* "at most once a second" logging: returns 1 if a line may be written now
 * and records the time in *last_ms (a per-call-site monotonic millisecond
 * stamp); counts suppressed lines in *suppressed. Thread-safe. */
int log_ratelimit(uint64_t *last_ms, uint64_t *suppressed);

/* Monotonic milliseconds, for rate limits and timers. */
uint64_t clock_now_ms(void);

const char *log_level_name(int level);
/* "debug", "info", "warn", "error" -> level, or -1. */
int log_level_parse(const char *name);

#endif /* IOCPHOST_LOG_H */
