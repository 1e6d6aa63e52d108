/*
 * log: one line per event on stderr, as key=value pairs:
 *
 *   ts=2026-11-27T10:00:00.123Z level=info comp=relay msg="published" rows=12
 *
 * The message is quoted; callers append further key=value pairs in the format
 * string itself. Never log tokens or secrets. Thread-safe (one fputs per
 * line). The level threshold is a process-wide setting (TODO_LOG_LEVEL).
 */
#ifndef TODO_LOG_H
#define TODO_LOG_H

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level;

/* Sets the lowest level that is printed (default LOG_INFO). */
void log_set_level(log_level level);

/* True when lines of level are printed (to skip preparing those that are
 * not). */
int log_enabled(log_level level);

/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int log_level_parse(const char *name);

/* Prints one line: `msg` is quoted, `fmt` (may be NULL) follows as extra
 * key=value text. */
void log_line(log_level level, const char *comp, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_debug(comp, msg, ...) log_line(LOG_DEBUG, comp, msg, __VA_ARGS__)
#define log_info(comp, msg, ...) log_line(LOG_INFO, comp, msg, __VA_ARGS__)
#define log_warn(comp, msg, ...) log_line(LOG_WARN, comp, msg, __VA_ARGS__)
#define log_error(comp, msg, ...) log_line(LOG_ERROR, comp, msg, __VA_ARGS__)

#endif
