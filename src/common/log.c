/* log: see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "trace.h"

static log_level threshold = LOG_INFO; /* process-wide, set once at start-up */

void log_set_level(log_level level) { threshold = level; }

int log_enabled(log_level level) { return level >= threshold; }

int log_level_parse(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

void log_line(log_level level, const char *comp, const char *msg, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char line[2048], ts[32];
    struct timespec now;
    struct tm tm;
    size_t n;

    if (level < threshold) return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    n = (size_t)snprintf(line, sizeof line, "ts=%s.%03ldZ level=%s comp=%s msg=\"",
                         ts, now.tv_nsec / 1000000, names[level], comp);
    /* Quote the message: escape quotes and drop control characters. */
    for (const char *p = msg; *p != '\0' && n + 3 < sizeof line; p++) {
        if (*p == '"' || *p == '\\') line[n++] = '\\';
        line[n++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    }
    if (n + 1 < sizeof line) line[n++] = '"';
    if (fmt != NULL && n + 2 < sizeof line) {
        va_list ap;
        line[n++] = ' ';
        va_start(ap, fmt);
        int w = vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
        size_t start = n;
        if (w > 0) n += (size_t)w < sizeof line - n ? (size_t)w : sizeof line - n - 1;
        /* Values may carry what a client sent (an error naming its input):
         * no control character gets through, so no value can end the line
         * and forge another. */
        for (size_t i = start; i < n; i++)
            if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) line[i] = ' ';
    }
    const trace_ctx *t = trace_current();
    if (t != NULL && n + 64 < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n, " trace_id=%s span_id=%s", t->trace_id, t->span_id);
    if (n >= sizeof line - 1) n = sizeof line - 2;
    line[n++] = '\n';
    line[n] = '\0';
    fputs(line, stderr);
}
