/* Unit tests of qry_page: keyset page tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "qry_page.h"
#include "text.h"

static void tokens_round_trip(void **state)
{
    (void)state;
    qry_page_key k = {"2026-11-27T10:00:00.123456Z", "123e4567-e89b-42d3-a456-426614174000"}, back;
    char tok[QRY_PAGE_TOKEN_MAX];
    todo_err err;
    qry_page_encode(&k, tok);
    assert_int_equal(qry_page_decode(tok, &back, &err), TODO_OK);
    assert_string_equal(back.created_at, k.created_at);
    assert_string_equal(back.id, k.id);
}

static void foreign_or_tampered_tokens_are_invalid(void **state)
{
    (void)state;
    const char *raw[] = {
        "p2|2026-11-27T10:00:00.123456Z|123e4567-e89b-42d3-a456-426614174000",
        "p1|2026-11-27 10:00:00|123e4567-e89b-42d3-a456-426614174000",
        "p1|2026-11-27T10:00:00.123456Z|123e4567-e89b-42d3-a456-42661417400",
        "p1|2026-11-27T10:00:00.123456Z'; drop table x; --|123e4567-e89b-42d3-a456-426614174000",
        "p1|x",
        "",
    };
    qry_page_key k;
    todo_err err;
    char tok[QRY_PAGE_TOKEN_MAX * 2];
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        text_b64url_encode((const unsigned char *)raw[i], strlen(raw[i]), tok);
        if (i == 5) strcpy(tok, "!!!");
        assert_int_equal(qry_page_decode(tok, &k, &err), TODO_EINVAL);
        assert_non_null(strstr(err.msg, "page_token"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tokens_round_trip),
        cmocka_unit_test(foreign_or_tampered_tokens_are_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
