/* Unit tests of pgx's pure parts: array literals and status mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pgx.h"

static void text_arrays_quote_and_escape(void **state)
{
    (void)state;
    arena *a = arena_new();
    char *items[] = {"plain", "with space", "quo\"te", "back\\slash", "{braces},comma"};
    assert_string_equal(pgx_text_array(a, NULL, 0), "{}");
    assert_string_equal(pgx_text_array(a, items, 1), "{\"plain\"}");
    assert_string_equal(pgx_text_array(a, items, 5),
                        "{\"plain\",\"with space\",\"quo\\\"te\",\"back\\\\slash\",\"{braces},comma\"}");
    arena_free(a);
}

static void unreachable_servers_are_unavailable(void **state)
{
    (void)state;
    todo_err err;
    /* Port 1 on loopback: nothing listens, the connection is refused at once. */
    PGconn *c = pgx_connect("postgresql://nobody@127.0.0.1:1/none", "test", &err);
    assert_null(c);
    assert_int_equal(err.code, TODO_EUNAVAIL);
    assert_non_null(strstr(err.msg, "cannot connect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_arrays_quote_and_escape),
        cmocka_unit_test(unreachable_servers_are_unavailable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
