/* Unit tests of auth: HS256 bearer tokens, every way a token can be wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "text.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define NOW 1800000000L

static char *bearer(const char *token)
{
    static char buf[4200];
    snprintf(buf, sizeof buf, "Bearer %s", token);
    return buf;
}

/* A token made directly with libjwt, for claims auth_issue never writes. */
static char *raw_token(jwt_alg_t alg, const char *sub, long exp)
{
    jwt_t *j;
    jwt_new(&j);
    if (sub != NULL) jwt_add_grant(j, "sub", sub);
    if (exp != 0) jwt_add_grant_int(j, "exp", exp);
    jwt_set_alg(j, alg, (const unsigned char *)SECRET, (int)strlen(SECRET));
    char *t = jwt_encode_str(j);
    jwt_free(j);
    return t;
}

static void issued_tokens_verify_and_name_the_user(void **state)
{
    (void)state;
    todo_err err;
    char user[AUTH_USER_MAX];
    char *t = auth_issue(SECRET, "alice@example.com", 60, NOW, &err);
    assert_non_null(t);
    assert_int_equal(auth_verify(SECRET, bearer(t), NOW, user, &err), TODO_OK);
    assert_string_equal(user, "alice@example.com");
    /* The scheme is case-insensitive. */
    char lower[4200];
    snprintf(lower, sizeof lower, "bearer %s", t);
    assert_int_equal(auth_verify(SECRET, lower, NOW, user, &err), TODO_OK);
    free(t);
}

static void missing_or_foreign_headers_are_unauthenticated(void **state)
{
    (void)state;
    todo_err err;
    char user[AUTH_USER_MAX];
    assert_int_equal(auth_verify(SECRET, NULL, NOW, user, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "missing"));
    assert_int_equal(auth_verify(SECRET, "", NOW, user, &err), TODO_EUNAUTH);
    assert_int_equal(auth_verify(SECRET, "Basic YWxpY2U6cHc=", NOW, user, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "bearer"));
    assert_int_equal(auth_verify(SECRET, "Bearer not.a.token", NOW, user, &err), TODO_EUNAUTH);
    assert_int_equal(auth_verify(SECRET, "Bearer ", NOW, user, &err), TODO_EUNAUTH);
}

static void expired_tokens_are_refused(void **state)
{
    (void)state;
    todo_err err;
    char user[AUTH_USER_MAX];
    char *t = auth_issue(SECRET, "bob", 60, NOW, &err);
    assert_int_equal(auth_verify(SECRET, bearer(t), NOW + 59, user, &err), TODO_OK);
    assert_int_equal(auth_verify(SECRET, bearer(t), NOW + 60, user, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "expired"));
    free(t);
}

static void another_secret_or_a_tampered_token_fails(void **state)
{
    (void)state;
    todo_err err;
    char user[AUTH_USER_MAX];
    char *t = auth_issue(SECRET, "bob", 60, NOW, &err);
    assert_int_equal(auth_verify("another-secret-another-secret-xx", bearer(t), NOW, user, &err), TODO_EUNAUTH);
    /* Flip one character of the payload: the signature no longer matches. */
    char *dot = strchr(t, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_verify(SECRET, bearer(t), NOW, user, &err), TODO_EUNAUTH);
    free(t);
}

static void only_hs256_is_accepted(void **state)
{
    (void)state;
    todo_err err;
    char user[AUTH_USER_MAX], none[512], hdr[64], body[128];
    char *t = raw_token(JWT_ALG_HS512, "bob", NOW + 60);
    assert_int_equal(auth_verify(SECRET, bearer(t), NOW, user, &err), TODO_EUNAUTH);
    free(t);
    /* alg "none" with an empty signature. */
    const char *h = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char payload[96];
    snprintf(payload, sizeof payload, "{\"sub\":\"bob\",\"exp\":%ld}", NOW + 60);
    text_b64url_encode((const unsigned char *)h, strlen(h), hdr);
    text_b64url_encode((const unsigned char *)payload, strlen(payload), body);
    snprintf(none, sizeof none, "%s.%s.", hdr, body);
    assert_int_equal(auth_verify(SECRET, bearer(none), NOW, user, &err), TODO_EUNAUTH);
}

static void claims_are_required_and_checked(void **state)
{
    (void)state;
    todo_err err;
    char user[AUTH_USER_MAX];
    char *no_exp = raw_token(JWT_ALG_HS256, "bob", 0);
    assert_int_equal(auth_verify(SECRET, bearer(no_exp), NOW, user, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "exp"));
    char *no_sub = raw_token(JWT_ALG_HS256, NULL, NOW + 60);
    assert_int_equal(auth_verify(SECRET, bearer(no_sub), NOW, user, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "sub"));
    char *bad_sub = raw_token(JWT_ALG_HS256, "bob smith", NOW + 60);
    assert_int_equal(auth_verify(SECRET, bearer(bad_sub), NOW, user, &err), TODO_EUNAUTH);
    free(no_exp);
    free(no_sub);
    free(bad_sub);
}

#define SERVICE_SECRET "fedcba9876543210fedcba9876543210"

/* A token with typ "service" signed with key (libjwt directly). */
static char *service_shaped(const char *key, const char *typ, const char *sub, const char *act)
{
    jwt_t *j;
    jwt_new(&j);
    if (typ != NULL) jwt_add_grant(j, "typ", typ);
    jwt_add_grant(j, "sub", sub);
    if (act != NULL) jwt_add_grant(j, "act", act);
    jwt_add_grant(j, "scope", "internal");
    jwt_add_grant_int(j, "exp", NOW + 60);
    jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)key, (int)strlen(key));
    char *t = jwt_encode_str(j);
    jwt_free(j);
    return t;
}

/* Service tokens name the service, the user it acts for and its scopes;
 * they verify only with the service secret, and a user token can never
 * pass for one. */
static void service_tokens_are_told_apart_from_user_tokens(void **state)
{
    (void)state;
    todo_err err;
    auth_identity id;
    char *svc = auth_issue_service(SERVICE_SECRET, "todo-saga", AUTH_SCOPE_INTERNAL, "alice", 60, NOW, &err);
    assert_non_null(svc);
    assert_int_equal(auth_verify_identity(SECRET, SERVICE_SECRET, bearer(svc), NOW, &id, &err), TODO_OK);
    assert_string_equal(id.user, "alice");
    assert_string_equal(id.service, "todo-saga");
    assert_true(auth_has_scope(&id, AUTH_SCOPE_INTERNAL));
    assert_false(auth_has_scope(&id, "intern"));
    /* Without the service secret, or with the user secret only: refused. */
    assert_int_equal(auth_verify_identity(SECRET, NULL, bearer(svc), NOW, &id, &err), TODO_EUNAUTH);
    char user[AUTH_USER_MAX];
    assert_int_equal(auth_verify(SECRET, bearer(svc), NOW, user, &err), TODO_EUNAUTH);
    free(svc);

    /* A user token: no service, no scope. */
    char *u = auth_issue(SECRET, "bob", 60, NOW, &err);
    assert_int_equal(auth_verify_identity(SECRET, SERVICE_SECRET, bearer(u), NOW, &id, &err), TODO_OK);
    assert_string_equal(id.user, "bob");
    assert_string_equal(id.service, "");
    assert_false(auth_has_scope(&id, AUTH_SCOPE_INTERNAL));
    free(u);

    /* Forged: typ "service" signed with the user secret (anyone holding
     * the users' key); service-signed without typ; no act; another key. */
    char *forged = service_shaped(SECRET, "service", "todo-saga", "alice");
    assert_int_equal(auth_verify_identity(SECRET, SERVICE_SECRET, bearer(forged), NOW, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "service secret"));
    char *untyped = service_shaped(SERVICE_SECRET, NULL, "todo-saga", "alice");
    assert_int_equal(auth_verify_identity(SECRET, SERVICE_SECRET, bearer(untyped), NOW, &id, &err), TODO_EUNAUTH);
    char *no_act = service_shaped(SERVICE_SECRET, "service", "todo-saga", NULL);
    assert_int_equal(auth_verify_identity(SECRET, SERVICE_SECRET, bearer(no_act), NOW, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "act"));
    char *other = service_shaped("another-secret-another-secret-xx", "service", "todo-saga", "alice");
    assert_int_equal(auth_verify_identity(SECRET, SERVICE_SECRET, bearer(other), NOW, &id, &err), TODO_EUNAUTH);
    /* A scope too long to keep whole is refused, never cut to a shorter one. */
    char scope[200];
    memset(scope, 'a', sizeof scope - 1);
    scope[sizeof scope - 1] = '\0';
    memcpy(scope + sizeof scope - 10, " internal", 9);
    char *wide = auth_issue_service(SERVICE_SECRET, "todo-saga", scope, "alice", 60, NOW, &err);
    assert_int_equal(auth_verify_identity(SECRET, SERVICE_SECRET, bearer(wide), NOW, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "scope is longer"));
    free(wide);
    free(forged);
    free(untyped);
    free(no_act);
    free(other);
}

/* A token with the given claims (0 / NULL: left out), made with libjwt. */
static char *claims_token(long iat, long nbf, long exp, const char *iss, const char *aud_json)
{
    jwt_t *j;
    jwt_new(&j);
    jwt_add_grant(j, "sub", "carol");
    if (iat != 0) jwt_add_grant_int(j, "iat", iat);
    if (nbf != 0) jwt_add_grant_int(j, "nbf", nbf);
    jwt_add_grant_int(j, "exp", exp);
    if (iss != NULL) jwt_add_grant(j, "iss", iss);
    if (aud_json != NULL) jwt_add_grants_json(j, aud_json);
    jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET));
    char *t = jwt_encode_str(j);
    jwt_free(j);
    return t;
}

/* nbf, iat, a maximum lifetime, a little clock skew, iss and aud. */
static void deployment_rules_apply_to_every_claim(void **state)
{
    (void)state;
    todo_err err;
    auth_identity id;
    auth_rules rules = {.issuer = "https://id.example.com", .audience = "todo", .max_lifetime_s = 3600, .leeway_s = 30};
    struct {
        long iat, nbf, exp;
        const char *iss, *aud;
        const char *says; /* NULL: accepted */
    } cases[] = {
        {NOW - 10, 0, NOW + 600, "https://id.example.com", "{\"aud\": \"todo\"}", NULL},
        {NOW - 10, 0, NOW + 600, "https://id.example.com", "{\"aud\": [\"other\", \"todo\"]}", NULL},
        {NOW - 10, 0, NOW - 20, "https://id.example.com", "{\"aud\": \"todo\"}", NULL}, /* expired 20 s ago: skew */
        {NOW - 10, 0, NOW - 31, "https://id.example.com", "{\"aud\": \"todo\"}", "expired"},
        {NOW - 10, NOW + 20, NOW + 600, "https://id.example.com", "{\"aud\": \"todo\"}", NULL},
        {NOW - 10, NOW + 60, NOW + 600, "https://id.example.com", "{\"aud\": \"todo\"}", "not valid yet"},
        {NOW + 60, 0, NOW + 600, "https://id.example.com", "{\"aud\": \"todo\"}", "issued in the future"},
        {NOW - 10, 0, NOW + 7200, "https://id.example.com", "{\"aud\": \"todo\"}", "lives longer than 3600 s"},
        {0, 0, NOW + 600, "https://id.example.com", "{\"aud\": \"todo\"}", "no iat"},
        {NOW - 10, 0, NOW + 600, "https://evil.example.com", "{\"aud\": \"todo\"}", "iss is not"},
        {NOW - 10, 0, NOW + 600, NULL, "{\"aud\": \"todo\"}", "iss is not"},
        {NOW - 10, 0, NOW + 600, "https://id.example.com", "{\"aud\": [\"other\"]}", "aud does not name todo"},
        {NOW - 10, 0, NOW + 600, "https://id.example.com", NULL, "aud does not name todo"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = claims_token(cases[i].iat, cases[i].nbf, cases[i].exp, cases[i].iss, cases[i].aud);
        int rc = auth_verify_with(SECRET, NULL, bearer(t), NOW, &rules, &id, &err);
        if (cases[i].says == NULL && rc != TODO_OK) fail_msg("case %zu refused: %s", i, err.msg);
        if (cases[i].says != NULL && (rc != TODO_EUNAUTH || strstr(err.msg, cases[i].says) == NULL))
            fail_msg("case %zu: wanted \"%s\", got %d \"%s\"", i, cases[i].says, rc, rc ? err.msg : "");
        free(t);
    }
    /* A fractional nbf (RFC 7519 allows it) is refused, not ignored. */
    char *frac = claims_token(NOW - 10, 0, NOW + 600, "https://id.example.com", "{\"aud\": \"todo\", \"nbf\": 1800000300.5}");
    assert_int_equal(auth_verify_with(SECRET, NULL, bearer(frac), NOW, &rules, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "must be integers"));
    free(frac);
    /* What auth_issue_for makes passes the same rules. */
    char *t = auth_issue_for(SECRET, "dave", 600, NOW, &rules, &err);
    assert_int_equal(auth_verify_with(SECRET, NULL, bearer(t), NOW, &rules, &id, &err), TODO_OK);
    assert_string_equal(id.user, "dave");
    free(t);
}

static void user_ids_are_validated_when_issuing(void **state)
{
    (void)state;
    todo_err err;
    char long_id[200];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_null(auth_issue(SECRET, "", 60, NOW, &err));
    assert_null(auth_issue(SECRET, "a/b", 60, NOW, &err));
    assert_null(auth_issue(SECRET, long_id, 60, NOW, &err));
    assert_null(auth_issue(SECRET, "ok", 0, NOW, &err));
    assert_true(auth_user_valid("user-1.test_x@y:z"));
    long_id[128] = '\0';
    assert_true(auth_user_valid(long_id));
    long_id[128] = 'a';
    long_id[129] = '\0';
    assert_false(auth_user_valid(long_id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(issued_tokens_verify_and_name_the_user),
        cmocka_unit_test(missing_or_foreign_headers_are_unauthenticated),
        cmocka_unit_test(expired_tokens_are_refused),
        cmocka_unit_test(another_secret_or_a_tampered_token_fails),
        cmocka_unit_test(only_hs256_is_accepted),
        cmocka_unit_test(claims_are_required_and_checked),
        cmocka_unit_test(user_ids_are_validated_when_issuing),
        cmocka_unit_test(service_tokens_are_told_apart_from_user_tokens),
        cmocka_unit_test(deployment_rules_apply_to_every_claim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
