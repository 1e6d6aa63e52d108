/* Unit tests of qry_dates: GetProductivityStats' date range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "qry_dates.h"

static int check(const char *from, const char *to, int max, todo_err *err)
{
    return qry_date_range(from, "from_date", to, "to_date", max, err);
}

static void good_ranges_pass(void **state)
{
    (void)state;
    todo_err err;
    assert_int_equal(check("2026-06-01", "2026-06-30", 366, &err), TODO_OK);
    assert_int_equal(check("2026-06-01", "2026-06-01", 366, &err), TODO_OK);
    assert_int_equal(check("2024-02-29", "2025-02-28", 366, &err), TODO_OK); /* a leap day */
    assert_int_equal(check("2025-01-01", "2026-01-02", 366, &err), TODO_OK); /* 366 days */
}

static void bad_dates_name_their_field(void **state)
{
    (void)state;
    todo_err err;
    const char *bad[] = {"", "2026-6-01", "2026-13-01", "2026-02-29", "2025-04-31", "0000-01-01", "2026-06-01x",
                         "2026/06/01", "+026-06-01", "2026-06-0 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(check(bad[i], "2026-06-30", 366, &err), TODO_EINVAL);
        assert_non_null(strstr(err.msg, "from_date: must be a date"));
        assert_int_equal(check("2026-06-01", bad[i], 366, &err), TODO_EINVAL);
        assert_non_null(strstr(err.msg, "to_date: must be a date"));
    }
}

static void reversed_or_too_long_ranges_are_refused(void **state)
{
    (void)state;
    todo_err err;
    assert_int_equal(check("2026-06-02", "2026-06-01", 366, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "to_date: 2026-06-01 is before from_date 2026-06-02"));
    assert_int_equal(check("2025-01-01", "2026-01-03", 366, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "to_date: at most 366 days after from_date"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_ranges_pass),
        cmocka_unit_test(bad_dates_name_their_field),
        cmocka_unit_test(reversed_or_too_long_ranges_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
