/* Unit tests of auth_cache: a token verified once is answered from the
 * cache only while everything the verification checked still holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_cache.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define SERVICE_SECRET "fedcba9876543210fedcba9876543210"
#define NOW 1800000000L

static const auth_rules rules = {.leeway_s = 30};

/* "Bearer " and a token of user valid for ttl_s from at, in buf. */
static char *bearer_of(char *buf, size_t n, const char *user, long at, long ttl_s)
{
    todo_err err;
    char *t = auth_issue_for(SECRET, user, ttl_s, at, &rules, &err);
    assert_non_null(t);
    snprintf(buf, n, "Bearer %s", t);
    free(t);
    return buf;
}

static int verify(auth_cache *c, const char *authorization, long now, auth_identity *id)
{
    todo_err err;
    return auth_cache_verify(c, SECRET, SERVICE_SECRET, authorization, now, &rules, id, &err);
}

static void a_token_is_verified_once_then_answered_from_the_cache(void **state)
{
    (void)state;
    char a[2048];
    auth_identity id;
    auth_cache *c = auth_cache_new(16);
    bearer_of(a, sizeof a, "alice", NOW, 3600);
    for (int i = 0; i < 5; i++) {
        memset(&id, 0, sizeof id);
        assert_int_equal(verify(c, a, NOW + i, &id), TODO_OK);
        assert_string_equal(id.user, "alice");
    }
    assert_int_equal(auth_cache_misses(c), 1);
    assert_int_equal(auth_cache_hits(c), 4);
    auth_cache_free(c);
}

static void an_expired_token_is_refused_even_when_cached(void **state)
{
    (void)state;
    char a[2048];
    auth_identity id;
    todo_err err;
    auth_cache *c = auth_cache_new(16);
    bearer_of(a, sizeof a, "alice", NOW, 60);
    assert_int_equal(verify(c, a, NOW, &id), TODO_OK);
    /* Within exp + leeway it still holds (from the cache). */
    assert_int_equal(verify(c, a, NOW + 60 + 29, &id), TODO_OK);
    assert_int_equal(auth_cache_hits(c), 1);
    /* At exp + leeway it does not: verified again, and refused. */
    assert_int_equal(auth_cache_verify(c, SECRET, NULL, a, NOW + 60 + 30, &rules, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "expired"));
    assert_int_equal(auth_cache_misses(c), 2);
    auth_cache_free(c);
}

static void a_token_from_the_future_is_refused_even_when_cached(void **state)
{
    (void)state;
    char a[2048];
    auth_identity id;
    todo_err err;
    auth_cache *c = auth_cache_new(16);
    bearer_of(a, sizeof a, "alice", NOW, 3600); /* iat NOW */
    assert_int_equal(verify(c, a, NOW, &id), TODO_OK);
    /* The clock stepped back past iat - leeway: the check on iat fails. */
    assert_int_equal(auth_cache_verify(c, SECRET, NULL, a, NOW - 31, &rules, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "future"));
    auth_cache_free(c);
}

static void a_forged_token_of_the_same_length_is_not_taken_for_a_cached_one(void **state)
{
    (void)state;
    char a[2048], forged[2048];
    auth_identity id;
    auth_cache *c = auth_cache_new(1); /* one slot: both land in it */
    bearer_of(a, sizeof a, "alice", NOW, 3600);
    assert_int_equal(verify(c, a, NOW, &id), TODO_OK);
    strcpy(forged, a);
    size_t n = strlen(forged);
    forged[n - 2] = forged[n - 2] == 'A' ? 'B' : 'A'; /* the signature's end */
    assert_int_equal(verify(c, forged, NOW, &id), TODO_EUNAUTH);
    assert_int_equal(verify(c, forged, NOW, &id), TODO_EUNAUTH); /* failures are never kept */
    assert_int_equal(auth_cache_misses(c), 3);
    assert_int_equal(verify(c, a, NOW, &id), TODO_OK);
    assert_int_equal(auth_cache_hits(c), 1);
    auth_cache_free(c);
}

static void tokens_sharing_a_slot_each_name_their_own_user(void **state)
{
    (void)state;
    char a[2048], b[2048];
    auth_identity id;
    auth_cache *c = auth_cache_new(1);
    bearer_of(a, sizeof a, "alice", NOW, 3600);
    bearer_of(b, sizeof b, "bob", NOW, 3600);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(verify(c, a, NOW, &id), TODO_OK);
        assert_string_equal(id.user, "alice");
        assert_int_equal(verify(c, b, NOW, &id), TODO_OK);
        assert_string_equal(id.user, "bob");
    }
    assert_int_equal(auth_cache_hits(c), 0);
    auth_cache_free(c);
}

static void a_service_token_keeps_its_scope_from_the_cache(void **state)
{
    (void)state;
    char a[2048];
    auth_identity id;
    todo_err err;
    auth_cache *c = auth_cache_new(16);
    char *t = auth_issue_service(SERVICE_SECRET, "todo-saga", AUTH_SCOPE_INTERNAL, "alice", 600, NOW, &err);
    assert_non_null(t);
    snprintf(a, sizeof a, "Bearer %s", t);
    free(t);
    assert_int_equal(verify(c, a, NOW, &id), TODO_OK);
    memset(&id, 0, sizeof id);
    assert_int_equal(verify(c, a, NOW + 1, &id), TODO_OK);
    assert_int_equal(auth_cache_hits(c), 1);
    assert_string_equal(id.user, "alice");
    assert_string_equal(id.service, "todo-saga");
    assert_true(auth_has_scope(&id, AUTH_SCOPE_INTERNAL));
    /* The same token where service tokens are not accepted: its own
     * verification, refused (the caches of two configurations are two). */
    auth_cache *d = auth_cache_new(16);
    assert_int_equal(auth_cache_verify(d, SECRET, NULL, a, NOW, &rules, &id, &err), TODO_EUNAUTH);
    auth_cache_free(d);
    auth_cache_free(c);
}

static void no_cache_and_long_tokens_are_verified_every_time(void **state)
{
    (void)state;
    char a[2048], long_value[AUTH_CACHE_TOKEN_MAX + 64];
    auth_identity id;
    assert_null(auth_cache_new(0));
    bearer_of(a, sizeof a, "alice", NOW, 3600);
    assert_int_equal(verify(NULL, a, NOW, &id), TODO_OK);
    assert_string_equal(id.user, "alice");
    auth_cache *c = auth_cache_new(16);
    memset(long_value, 'x', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    memcpy(long_value, "Bearer ", 7);
    assert_int_equal(verify(c, long_value, NOW, &id), TODO_EUNAUTH);
    assert_int_equal(verify(c, NULL, NOW, &id), TODO_EUNAUTH);
    assert_int_equal(auth_cache_hits(c) + auth_cache_misses(c), 0);
    auth_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_token_is_verified_once_then_answered_from_the_cache),
        cmocka_unit_test(an_expired_token_is_refused_even_when_cached),
        cmocka_unit_test(a_token_from_the_future_is_refused_even_when_cached),
        cmocka_unit_test(a_forged_token_of_the_same_length_is_not_taken_for_a_cached_one),
        cmocka_unit_test(tokens_sharing_a_slot_each_name_their_own_user),
        cmocka_unit_test(a_service_token_keeps_its_scope_from_the_cache),
        cmocka_unit_test(no_cache_and_long_tokens_are_verified_every_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
