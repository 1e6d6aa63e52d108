/* Unit tests of log: one line per event whatever the values hold (a value
 * with a newline cannot forge a second line), the message quoted, the
 * level threshold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char path[64];

/* Runs the logging of fn with stderr in a file; returns what was written
 * (static). */
static const char *captured(void (*fn)(void))
{
    static char buf[8192];
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w+");
    assert_non_null(f);
    dup2(fileno(f), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void forge(void)
{
    /* An error message that names a client's input, with a line of its own
     * in it, and a quote in the message. */
    log_warn("test", "refused \"x\"", "error=\"%s\" n=%d", "bad\nts=2026-01-01T00:00:00.000Z level=error msg=\"forged\"\r\x1b[2J", 7);
}

static void a_value_cannot_forge_a_line(void **state)
{
    (void)state;
    const char *out = captured(forge);
    const char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0'); /* one line */
    assert_non_null(strstr(out, "level=warn comp=test msg=\"refused \\\"x\\\"\""));
    assert_non_null(strstr(out, "error=\"bad ts=2026-01-01T00:00:00.000Z level=error"));
    assert_null(strchr(out, '\r'));
    assert_null(strchr(out, '\x1b'));
    assert_non_null(strstr(out, " n=7"));
}

static void quiet(void)
{
    log_set_level(LOG_WARN);
    log_info("test", "not shown", NULL);
    log_error("test", "shown", NULL);
    log_set_level(LOG_INFO);
}

static void lines_below_the_threshold_are_not_printed(void **state)
{
    (void)state;
    const char *out = captured(quiet);
    assert_null(strstr(out, "not shown"));
    assert_non_null(strstr(out, "level=error comp=test msg=\"shown\""));
    assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
    assert_int_equal(log_level_parse("loud"), -1);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/test_log.%ld", (long)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_value_cannot_forge_a_line),
        cmocka_unit_test(lines_below_the_threshold_are_not_printed),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(path);
    return rc;
}
