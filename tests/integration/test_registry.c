/*
 * Integration tests of the schema registry on the real PostgreSQL, through
 * todoctl: register v1, a compatible v2 passes, a breaking v3 is refused
 * with the rule named, registering again is idempotent, modes per subject.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

static int todoctl(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int todoctl(char *out, size_t cap, const char *fmt, ...)
{
    char args[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return harness_todoctl(args, out, cap);
}

static void versions_are_checked_registered_and_refused(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char subject[64], out[8192];
    const char *dir = REG_TEST_DIR;
    harness_user(subject, "test.event");
    /* No version yet: the message must be named. */
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb", subject, dir), 2);
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb --message regtest.v1.Event", subject, dir), 0);
    assert_non_null(strstr(out, "version 1"));
    /* Again: the same version and id. */
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb", subject, dir), 0);
    assert_non_null(strstr(out, "version 1"));
    /* A compatible v2, checked then registered. */
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/ok_add_field.pb", subject, dir), 0);
    assert_non_null(strstr(out, "compatible"));
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/ok_add_field.pb", subject, dir), 0);
    assert_non_null(strstr(out, "version 2"));
    /* A breaking v3 is refused, naming the rule and the field. */
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/bad_type.pb", subject, dir), 1);
    assert_non_null(strstr(out, "FIELD_WIRE_COMPATIBLE_TYPE"));
    assert_non_null(strstr(out, "regtest.v1.Event.amount"));
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/bad_removal.pb", subject, dir), 1);
    assert_non_null(strstr(out, "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"));
    /* ok_widen suits v1, but it drops v2's field "extra": refused, naming
     * the version it breaks. */
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s FULL_TRANSITIVE", subject), 0);
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/ok_widen.pb", subject, dir), 1);
    assert_non_null(strstr(out, "against version 2: FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"));
    assert_non_null(strstr(out, "Event.extra"));
    /* FORWARD: old readers must read it; a new singular->repeated breaks them. */
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s FORWARD", subject), 0);
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/singular_to_repeated.pb", subject, dir), 1);
    assert_non_null(strstr(out, "FIELD_SAME_CARDINALITY"));
    /* NONE: anything goes. */
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s NONE", subject), 0);
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/bad_type.pb", subject, dir), 0);
    assert_non_null(strstr(out, "version 3"));
    /* A .proto file is compiled on the way. */
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/v1/event.proto", subject, REG_SRC_DIR), 0);
    /* list and show. */
    assert_int_equal(todoctl(out, sizeof out, "registry list"), 0);
    assert_non_null(strstr(out, subject));
    assert_int_equal(todoctl(out, sizeof out, "registry show %s 2", subject), 0);
    assert_non_null(strstr(out, "version 2"));
    assert_non_null(strstr(out, "extra"));
    assert_int_equal(todoctl(out, sizeof out, "registry show %s 9", subject), 1);
    /* Bad input. */
    assert_int_equal(todoctl(out, sizeof out, "registry register BAD! %s/v1.pb --message regtest.v1.Event", dir), 1);
    assert_non_null(strstr(out, "subject"));
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb --message regtest.v1.Nope", subject, dir), 1);
    assert_non_null(strstr(out, "regtest.v1.Nope"));
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s SIDEWAYS", subject), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(versions_are_checked_registered_and_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
