/* Unit tests of proj_cache: the Redis URL, and that a Redis nobody runs
 * switches the fast path off instead of failing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "proj_cache.h"
#include "redisx.h"

static void urls_parse_or_are_refused(void **state)
{
    (void)state;
    char host[64];
    int port;
    todo_err err;
    assert_int_equal(redisx_parse_url("redis://127.0.0.1:6380", host, sizeof host, &port, &err), TODO_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6380);
    assert_int_equal(redisx_parse_url("redis://cache.internal", host, sizeof host, &port, &err), TODO_OK);
    assert_int_equal(port, 6379);
    /* Credentials: an ACL user and its password (percent-decoded), or a
     * password alone (the default user). */
    char user[64], password[64];
    assert_int_equal(redisx_parse_url_auth("redis://todo-projector:s3cr%40t%2Fx@cache:6390/0", host, sizeof host, &port,
                                           user, sizeof user, password, sizeof password, &err),
                     TODO_OK);
    assert_string_equal(host, "cache");
    assert_int_equal(port, 6390);
    assert_string_equal(user, "todo-projector");
    assert_string_equal(password, "s3cr@t/x");
    assert_int_equal(redisx_parse_url_auth("redis://only-a-password@cache", host, sizeof host, &port, user, sizeof user,
                                           password, sizeof password, &err),
                     TODO_OK);
    assert_string_equal(user, "");
    assert_string_equal(password, "only-a-password");
    /* TLS: rediss://, with the CAs as ?ca=FILE (readable, and only with
     * rediss://); a bad URL's message never repeats it (it may hold a
     * password). */
    assert_int_equal(redisx_parse_url("rediss://cache:6380", host, sizeof host, &port, &err), TODO_OK);
    assert_string_equal(host, "cache");
    assert_int_equal(port, 6380);
    redisx rx;
    assert_int_equal(redisx_init(&rx, "rediss://u:p@cache:6380?ca=/etc/hostname", "test", 100, &err), TODO_OK);
    assert_true(rx.tls);
    assert_string_equal(rx.ca, "/etc/hostname");
    assert_string_equal(rx.password, "p");
    redisx_cleanup(&rx);
    assert_int_equal(redisx_init(&rx, "rediss://cache:6380?ca=/nonexistent/ca.pem", "test", 100, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "cannot read ca"));
    assert_int_equal(redisx_init(&rx, "redis://cache:6380?ca=/etc/hostname", "test", 100, &err), TODO_EINVAL);
    assert_int_equal(redisx_init(&rx, "rediss://cache:6380?verify=no", "test", 100, &err), TODO_EINVAL);
    assert_int_equal(redisx_init(&rx, "redis://cache:6380", "test", 100, &err), TODO_OK);
    assert_false(rx.tls);
    assert_int_equal(redisx_parse_url("redis://u:pw%zz@h:1", host, sizeof host, &port, &err), TODO_EINVAL);
    assert_null(strstr(err.msg, "pw"));
    const char *bad[] = {"http://x:1", "redis://", "redis://h:0", "redis://h:99999", "redis://h:12ab", "localhost:6379"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(redisx_parse_url(bad[i], host, sizeof host, &port, &err), TODO_EINVAL);
        assert_non_null(strstr(err.msg, "TODO_REDIS_URL"));
    }
}

static void an_unreachable_redis_knows_nothing(void **state)
{
    (void)state;
    todo_err err;
    proj_cache *c = proj_cache_new("redis://127.0.0.1:1", "g", &err); /* nothing listens on port 1 */
    assert_non_null(c);
    const char *ids[] = {"a", "b"};
    int64_t v[2] = {7, 7};
    proj_cache_lookup(c, ids, 2, v);
    assert_int_equal(v[0], 0);
    assert_int_equal(v[1], 0);
    proj_cache_note(c, "a", 3);
    proj_cache_flush(c); /* no error, nothing to do */
    assert_int_equal(proj_cache_hits(c), 0);
    proj_cache_free(c);
    proj_cache_lookup(NULL, ids, 2, v);
    assert_int_equal(v[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(urls_parse_or_are_refused),
        cmocka_unit_test(an_unreachable_redis_knows_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
