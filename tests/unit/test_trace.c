/* Unit tests of trace: W3C traceparent parsing and formatting, children,
 * and the ids log lines carry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "trace.h"

static void a_valid_traceparent_round_trips(void **state)
{
    (void)state;
    trace_ctx t;
    char out[56];
    assert_true(trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t));
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.span_id, "00f067aa0ba902b7");
    assert_string_equal(t.flags, "01");
    trace_format(&t, out);
    assert_string_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

static void malformed_traceparents_are_refused(void **state)
{
    (void)state;
    trace_ctx t;
    const char *bad[] = {
        NULL,
        "",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* another version */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* all-zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* all-zero span id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* too long */
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  /* dashes misplaced */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(trace_parse(bad[i], &t));
}

static void children_keep_the_trace_and_get_a_new_span(void **state)
{
    (void)state;
    trace_ctx root, child, other;
    char out[56];
    trace_new(&root);
    trace_format(&root, out);
    assert_true(trace_parse(out, &other)); /* what we make, we read */
    trace_child(&root, &child);
    assert_string_equal(child.trace_id, root.trace_id);
    assert_string_not_equal(child.span_id, root.span_id);
    trace_new(&other);
    assert_string_not_equal(other.trace_id, root.trace_id);
    trace_child(NULL, &other); /* no parent: a new trace */
    assert_int_equal(strlen(other.trace_id), 32);
}

static void the_current_trace_is_per_thread_and_scoped(void **state)
{
    (void)state;
    trace_ctx t;
    trace_new(&t);
    assert_null(trace_current());
    trace_enter(&t);
    assert_non_null(trace_current());
    assert_string_equal(trace_current()->trace_id, t.trace_id);
    trace_leave();
    assert_null(trace_current());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_valid_traceparent_round_trips),
        cmocka_unit_test(malformed_traceparents_are_refused),
        cmocka_unit_test(children_keep_the_trace_and_get_a_new_span),
        cmocka_unit_test(the_current_trace_is_per_thread_and_scoped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
