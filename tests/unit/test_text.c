/* Unit tests of text: UTF-8 checks, UUIDs, base64url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "text.h"

static void utf8_counts_code_points_not_bytes(void **state)
{
    (void)state;
    assert_int_equal(text_utf8_chars("abc", 3), 3);
    assert_int_equal(text_utf8_chars("", 0), 0);
    assert_int_equal(text_utf8_chars("h\xc3\xa9llo", 6), 5);          /* é */
    assert_int_equal(text_utf8_chars("\xe2\x82\xac", 3), 1);          /* € */
    assert_int_equal(text_utf8_chars("\xf0\x9f\x98\x80", 4), 1);      /* U+1F600 */
}

static void utf8_refuses_malformed_input(void **state)
{
    (void)state;
    assert_int_equal(text_utf8_chars("\xc0\xaf", 2), -1);             /* overlong '/' */
    assert_int_equal(text_utf8_chars("\xe0\x80\xaf", 3), -1);         /* overlong */
    assert_int_equal(text_utf8_chars("\xed\xa0\x80", 3), -1);         /* surrogate D800 */
    assert_int_equal(text_utf8_chars("\xf4\x90\x80\x80", 4), -1);     /* above U+10FFFF */
    assert_int_equal(text_utf8_chars("\xc3", 1), -1);                 /* truncated */
    assert_int_equal(text_utf8_chars("\x80", 1), -1);                 /* lone continuation */
    assert_int_equal(text_utf8_chars("a\0b", 3), -1);                 /* NUL */
    assert_int_equal(text_utf8_chars("\xff", 1), -1);
}

static void uuid_syntax_is_checked(void **state)
{
    (void)state;
    assert_true(text_is_uuid("123e4567-e89b-12d3-a456-426614174000"));
    assert_true(text_is_uuid("123E4567-E89B-12D3-A456-426614174000"));
    assert_false(text_is_uuid("123e4567e89b12d3a456426614174000"));
    assert_false(text_is_uuid("123e4567-e89b-12d3-a456-42661417400"));
    assert_false(text_is_uuid("123e4567-e89b-12d3-a456-4266141740000"));
    assert_false(text_is_uuid("g23e4567-e89b-12d3-a456-426614174000"));
    assert_false(text_is_uuid(""));
}

static void uuid_v4_is_random_and_well_formed(void **state)
{
    (void)state;
    char a[37], b[37];
    assert_int_equal(text_uuid_v4(a), 0);
    assert_int_equal(text_uuid_v4(b), 0);
    assert_true(text_is_uuid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');
    assert_true(strchr("89ab", a[19]) != NULL);
}

static void b64url_round_trips_every_length(void **state)
{
    (void)state;
    unsigned char in[64], out[64];
    char enc[100];
    for (size_t n = 0; n < sizeof in; n++) {
        for (size_t i = 0; i < n; i++) in[i] = (unsigned char)(i * 37 + n);
        size_t len = text_b64url_encode(in, n, enc);
        assert_int_equal(strlen(enc), len);
        assert_null(strpbrk(enc, "+/="));
        long back = text_b64url_decode(enc, len, out, sizeof out);
        assert_int_equal(back, (long)n);
        assert_memory_equal(in, out, n);
    }
}

static void b64url_refuses_foreign_characters_and_overflow(void **state)
{
    (void)state;
    unsigned char out[4];
    assert_int_equal(text_b64url_decode("ab+c", 4, out, sizeof out), -1);
    assert_int_equal(text_b64url_decode("ab=c", 4, out, sizeof out), -1);
    assert_int_equal(text_b64url_decode("a", 1, out, sizeof out), -1);
    assert_int_equal(text_b64url_decode("AAAAAAAA", 8, out, sizeof out), -1); /* 6 bytes > 4 */
}

/* A cut never falls inside a character (a title cut at byte 299 once broke
 * the JSON of a webhook body). */
static void utf8_prefix_cuts_on_character_boundaries(void **state)
{
    (void)state;
    const char *s = "ab\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; /* a b é € 😀: 1+1+2+3+4 bytes */
    assert_int_equal(text_utf8_prefix(s, 100), 11);
    assert_int_equal(text_utf8_prefix(s, 11), 11);
    assert_int_equal(text_utf8_prefix(s, 10), 7); /* not inside 😀 */
    assert_int_equal(text_utf8_prefix(s, 6), 4);  /* not inside € */
    assert_int_equal(text_utf8_prefix(s, 3), 2);  /* not inside é */
    assert_int_equal(text_utf8_prefix(s, 2), 2);
    assert_int_equal(text_utf8_prefix(s, 0), 0);
    for (size_t max = 0; max <= 11; max++) assert_true(text_utf8_chars(s, text_utf8_prefix(s, max)) >= 0);
}

static void name_uuids_are_stable_version_8_ids(void **state)
{
    (void)state;
    char a[37], b[37];
    /* SHA-256("todo:x") = 9530b04a dcda 8ce7 fff1 b945636ca360...: version
     * nibble 8, variant bits 10 (f -> b). */
    text_name_uuid("todo:x", a);
    assert_string_equal(a, "9530b04a-dcda-8ce7-bff1-b945636ca360");
    assert_true(text_is_uuid(a));
    text_name_uuid("todo:x", b);
    assert_string_equal(a, b);
    text_name_uuid("todo:y", b);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(utf8_counts_code_points_not_bytes),
        cmocka_unit_test(utf8_refuses_malformed_input),
        cmocka_unit_test(utf8_prefix_cuts_on_character_boundaries),
        cmocka_unit_test(uuid_syntax_is_checked),
        cmocka_unit_test(uuid_v4_is_random_and_well_formed),
        cmocka_unit_test(b64url_round_trips_every_length),
        cmocka_unit_test(b64url_refuses_foreign_characters_and_overflow),
        cmocka_unit_test(name_uuids_are_stable_version_8_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
