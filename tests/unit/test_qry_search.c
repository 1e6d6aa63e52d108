/* Unit tests of qry_search: what reaches to_tsquery is words and nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "qry_search.h"

static const char *q(const char *text)
{
    static char out[1200];
    static todo_err err;
    if (qry_search_tsquery(text, out, sizeof out, &err) < 0) return err.msg;
    return out;
}

static void words_are_anded_and_the_last_is_a_prefix(void **state)
{
    (void)state;
    assert_string_equal(q("Buy milk"), "'buy' & 'milk':*");
    assert_string_equal(q("  milk  "), "'milk':*");
    assert_string_equal(q("M\xc3\xbcsli kaufen"), "'m\xc3\xbcsli' & 'kaufen':*");
    assert_string_equal(q("v2.1 release"), "'v2' & '1' & 'release':*");
}

static void sql_and_tsquery_syntax_never_survives(void **state)
{
    (void)state;
    assert_string_equal(q("x'; drop table read.tasks; --"), "'x' & 'drop' & 'table' & 'read' & 'tasks':*");
    assert_string_equal(q("a & !b | c:* <-> (d)"), "'a' & 'b' & 'c' & 'd':*");
    assert_string_equal(q("\\' \"quoted\" \\\\"), "'quoted':*");
}

static void empty_long_or_broken_queries_are_refused(void **state)
{
    (void)state;
    char out[1200], many[200];
    todo_err err;
    assert_int_equal(qry_search_tsquery("", out, sizeof out, &err), TODO_EINVAL);
    assert_int_equal(qry_search_tsquery(" !? ", out, sizeof out, &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "query", 5) == 0);
    assert_int_equal(qry_search_tsquery("bad \xff", out, sizeof out, &err), TODO_EINVAL);
    many[0] = '\0';
    for (int i = 0; i < 17; i++) strcat(many, "w ");
    assert_int_equal(qry_search_tsquery(many, out, sizeof out, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "at most 16"));
}

static void page_tokens_round_trip_and_refuse_forgeries(void **state)
{
    (void)state;
    char tok[40];
    int off;
    todo_err err;
    qry_search_token_encode(40, tok);
    assert_int_equal(qry_search_token_decode(tok, &off, &err), TODO_OK);
    assert_int_equal(off, 40);
    assert_int_equal(qry_search_token_decode("czF8LTE", &off, &err), TODO_EINVAL);   /* "s1|-1" */
    assert_int_equal(qry_search_token_decode("czF8OTk5OTk", &off, &err), TODO_EINVAL); /* "s1|99999" */
    assert_int_equal(qry_search_token_decode("junk", &off, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "page_token"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(words_are_anded_and_the_last_is_a_prefix),
        cmocka_unit_test(sql_and_tsquery_syntax_never_survives),
        cmocka_unit_test(empty_long_or_broken_queries_are_refused),
        cmocka_unit_test(page_tokens_round_trip_and_refuse_forgeries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
