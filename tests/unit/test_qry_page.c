/* Unit tests of qry_page: sort orders and keyset page tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "qry_page.h"
#include "text.h"

#define ID "123e4567-e89b-42d3-a456-426614174000"

static void order_by_parses_fields_and_directions(void **state)
{
    (void)state;
    qry_sort s;
    todo_err err;
    assert_int_equal(qry_sort_parse("", &s, &err), TODO_OK);
    assert_int_equal(s.field, QRY_SORT_CREATED_AT);
    assert_false(s.asc);
    assert_int_equal(qry_sort_parse("due_at asc", &s, &err), TODO_OK);
    assert_int_equal(s.field, QRY_SORT_DUE_AT);
    assert_true(s.asc);
    assert_int_equal(qry_sort_parse("priority", &s, &err), TODO_OK);
    assert_int_equal(s.field, QRY_SORT_PRIORITY);
    assert_false(s.asc);
    assert_int_equal(qry_sort_parse("updated_at desc", &s, &err), TODO_OK);
    const char *bad[] = {"title", "due_at ascending", "priority  asc", "created_at; drop table x", " created_at", "ASC"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(qry_sort_parse(bad[i], &s, &err), TODO_EINVAL);
        assert_true(strncmp(err.msg, "order_by", 8) == 0);
    }
    /* The SQL for a field comes from a fixed table, never from the input. */
    assert_string_equal(qry_sort_expr(QRY_SORT_DUE_AT), "coalesce(due_at, 'infinity'::timestamptz)");
    assert_string_equal(qry_sort_cast(QRY_SORT_PRIORITY), "smallint");
}

static void tokens_round_trip_for_every_order(void **state)
{
    (void)state;
    const char *values[] = {"2026-11-27T10:00:00.123456Z", "2026-11-27T10:00:00.000001Z", "2030-01-01T00:00:00.000000Z",
                            "3", "2031-02-03T04:05:06.000007Z"};
    for (int f = 0; f <= QRY_SORT_REMIND_AT; f++)
        for (int asc = 0; asc < 2; asc++) {
            qry_page_key k = {.sort = {(qry_sort_field)f, asc}}, back;
            char tok[QRY_PAGE_TOKEN_MAX];
            todo_err err;
            snprintf(k.value, sizeof k.value, "%s", values[f]);
            snprintf(k.id, sizeof k.id, "%s", ID);
            qry_page_encode(&k, tok);
            assert_int_equal(qry_page_decode(tok, &k.sort, &back, &err), TODO_OK);
            assert_string_equal(back.value, values[f]);
            assert_string_equal(back.id, ID);
        }
    qry_page_key inf = {.sort = {QRY_SORT_DUE_AT, true}, .value = "infinity", .id = ID}, back;
    char tok[QRY_PAGE_TOKEN_MAX];
    todo_err err;
    qry_page_encode(&inf, tok);
    assert_int_equal(qry_page_decode(tok, &inf.sort, &back, &err), TODO_OK);
    assert_string_equal(back.value, "infinity");
}

static void a_token_of_another_order_is_refused(void **state)
{
    (void)state;
    qry_page_key k = {.sort = {QRY_SORT_PRIORITY, false}, .value = "2", .id = ID}, back;
    qry_sort other = {QRY_SORT_PRIORITY, true};
    char tok[QRY_PAGE_TOKEN_MAX];
    todo_err err;
    qry_page_encode(&k, tok);
    assert_int_equal(qry_page_decode(tok, &other, &back, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "another order_by"));
    /* A ListTasks token is no ListReminders token, and the other way round. */
    qry_page_key r = {.sort = {QRY_SORT_REMIND_AT, true}, .value = "2026-11-27T10:00:00.123456Z", .id = ID};
    qry_sort created_asc = {QRY_SORT_CREATED_AT, true};
    qry_page_encode(&r, tok);
    assert_int_equal(qry_page_decode(tok, &created_asc, &back, &err), TODO_EINVAL);
    qry_page_encode(&(qry_page_key){.sort = created_asc, .value = "2026-11-27T10:00:00.123456Z", .id = ID}, tok);
    assert_int_equal(qry_page_decode(tok, &r.sort, &back, &err), TODO_EINVAL);
    /* order_by never names remind_at. */
    qry_sort s;
    assert_int_equal(qry_sort_parse("remind_at", &s, &err), TODO_EINVAL);
}

static void foreign_or_tampered_tokens_are_invalid(void **state)
{
    (void)state;
    const char *raw[] = {
        "p1|2026-11-27T10:00:00.123456Z|" ID,
        "p2|0|d|2026-11-27 10:00:00|" ID,
        "p2|0|d|2026-11-27T10:00:00.123456Z|123e4567-e89b-42d3-a456-42661417400",
        "p2|0|d|2026-11-27T10:00:00.123456Z'; drop table x; --|" ID,
        "p2|3|d|9|" ID,
        "p2|0|d|infinity|" ID,
        "p2|9|d|3|" ID,
        "p2|5|a|2026-11-27T10:00:00.123456Z|" ID,
        "p2|0|x|2026-11-27T10:00:00.123456Z|" ID,
        "p2|0|d|2026-11-27T10:00:00.123456Z|" ID "|extra",
    };
    qry_sort created = {QRY_SORT_CREATED_AT, false}, prio = {QRY_SORT_PRIORITY, false};
    qry_page_key k;
    todo_err err;
    char tok[QRY_PAGE_TOKEN_MAX * 2];
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        text_b64url_encode((const unsigned char *)raw[i], strlen(raw[i]), tok);
        assert_int_equal(qry_page_decode(tok, i == 4 ? &prio : &created, &k, &err), TODO_EINVAL);
        assert_non_null(strstr(err.msg, "page_token"));
    }
    assert_int_equal(qry_page_decode("!!!", &created, &k, &err), TODO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(order_by_parses_fields_and_directions),
        cmocka_unit_test(tokens_round_trip_for_every_order),
        cmocka_unit_test(a_token_of_another_order_is_refused),
        cmocka_unit_test(foreign_or_tampered_tokens_are_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
