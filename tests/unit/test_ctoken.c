/* Unit tests of ctoken: consistency tokens round-trip, are bound to their
 * user and key, and nothing else decodes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "ctoken.h"

#define ID "0b8e0a4e-6f7c-4d52-9a53-3f1e5a8b9c01"

static void tokens_round_trip(void **state)
{
    (void)state;
    ctoken_key k;
    ctoken_key_derive("a secret of at least thirty-two bytes!", &k);
    char tok[CTOKEN_MAX], id[37];
    int64_t v;
    todo_err err;
    ctoken_encode(&k, "alice", ID, 7, tok);
    assert_int_equal(strlen(tok), 55);
    assert_int_equal(ctoken_decode(&k, "alice", tok, id, &v, &err), TODO_OK);
    assert_string_equal(id, ID);
    assert_int_equal(v, 7);
    ctoken_encode(&k, "alice", "0B8E0A4E-6F7C-4D52-9A53-3F1E5A8B9C01", INT64_MAX, tok);
    assert_int_equal(ctoken_decode(&k, "alice", tok, id, &v, &err), TODO_OK);
    assert_string_equal(id, ID); /* canonical lowercase */
    assert_true(v == INT64_MAX);
}

static void tokens_are_bound_to_their_user_and_key(void **state)
{
    (void)state;
    ctoken_key k, other;
    ctoken_key_derive("a secret of at least thirty-two bytes!", &k);
    ctoken_key_derive("another secret of thirty-two bytes..", &other);
    char tok[CTOKEN_MAX], id[37];
    int64_t v;
    todo_err err;
    ctoken_encode(&k, "alice", ID, 7, tok);
    assert_int_equal(ctoken_decode(&k, "bob", tok, id, &v, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "not a token issued to this caller"));
    assert_int_equal(ctoken_decode(&other, "alice", tok, id, &v, &err), TODO_EINVAL);
    for (size_t i = 0; i < strlen(tok); i++) { /* any character changed */
        char t2[CTOKEN_MAX];
        memcpy(t2, tok, sizeof t2);
        t2[i] = t2[i] == 'A' ? 'B' : 'A';
        assert_int_not_equal(ctoken_decode(&k, "alice", t2, id, &v, &err), TODO_OK);
    }
}

static void nothing_else_decodes(void **state)
{
    (void)state;
    ctoken_key k;
    ctoken_key_derive("a secret of at least thirty-two bytes!", &k);
    char id[37];
    int64_t v;
    todo_err err;
    static const char *const bad[] = {"", "abc", "Y3QxOjQy" /* ct1:42 */, "Y3QyOnQ6NQ" /* ct2:t:5 */,
                                      "!!!!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ctoken_decode(&k, "alice", bad[i], id, &v, &err), TODO_EINVAL);
        assert_non_null(strstr(err.msg, "consistency_token"));
    }
    char zero[CTOKEN_MAX];
    ctoken_encode(&k, "alice", ID, 0, zero); /* version 0 is never issued */
    assert_int_equal(ctoken_decode(&k, "alice", zero, id, &v, &err), TODO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tokens_round_trip),
        cmocka_unit_test(tokens_are_bound_to_their_user_and_key),
        cmocka_unit_test(nothing_else_decodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
