/*
 * Integration tests of the secure stack (scripts/stack.sh, stack "secure";
 * skipped on any other): every hop refuses a client that does not protect
 * it. Kafka's only client listener is SASL_SSL with SCRAM-SHA-512 users;
 * PostgreSQL takes TLS connections only; Redis wants its password. The
 * services on that stack pass every other integration test (scripts/test.sh
 * runs them there), so the accepted side is tested by all of them; here,
 * the refused side.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kafkax.h"
#include "pgx.h"

static bool secure_stack(void)
{
    const char *s = getenv("TODO_STACK_SECURE");
    return harness_stack_available() && s != NULL && strcmp(s, "1") == 0;
}

#define NEED_SECURE_STACK()                                                                                  \
    do {                                                                                                     \
        if (!secure_stack()) skip();                                                                         \
    } while (0)

/* Whether a client with conf (consumed) gets the cluster's metadata. */
static bool metadata_answers(rd_kafka_conf_t *conf)
{
    char errstr[256];
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr); /* its refusals are the point */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 5000);
    if (md != NULL) rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* conf for the stack's broker with the stack's security settings, each of
 * override's key=value pairs put over them. */
static rd_kafka_conf_t *conf_with(const char *const *override)
{
    char errstr[256];
    rd_kafka_conf_t *conf = harness_kafka_conf();
    for (const char *const *o = override; o != NULL && *o != NULL; o += 2)
        assert_int_equal(rd_kafka_conf_set(conf, o[0], o[1], errstr, sizeof errstr), RD_KAFKA_CONF_OK);
    return conf;
}

static void kafka_refuses_plaintext_a_wrong_password_and_a_foreign_ca(void **state)
{
    (void)state;
    NEED_SECURE_STACK();
    char other_ca[600];
    snprintf(other_ca, sizeof other_ca, "%s/certs/other-ca.pem", getenv("TODO_STACK_DIR"));
    assert_true(metadata_answers(conf_with(NULL))); /* the stack's own settings */

    const char *plaintext[] = {"security.protocol", "plaintext", NULL};
    const char *no_sasl[] = {"security.protocol", "ssl", NULL};
    const char *wrong_password[] = {"sasl.password", "not-the-password", NULL};
    const char *unknown_user[] = {"sasl.username", "mallory", NULL};
    const char *foreign_ca[] = {"ssl.ca.location", other_ca, NULL};
    const char *weaker_mechanism[] = {"sasl.mechanisms", "SCRAM-SHA-256", NULL};
    const char *const *refused[] = {plaintext, no_sasl, wrong_password, unknown_user, foreign_ca, weaker_mechanism};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (metadata_answers(conf_with(refused[i]))) fail_msg("the broker answered a client with %s=%s", refused[i][0], refused[i][1]);
}

static void postgresql_refuses_a_connection_without_tls(void **state)
{
    (void)state;
    NEED_SECURE_STACK();
    char url[1200];
    const char *base = getenv("TODO_PG_URL");
    todo_err err;
    /* The stack's URL asks for verify-full: it connects, encrypted. */
    PGconn *c = pgx_connect(base, "test_secure", &err);
    if (c == NULL) fail_msg("%s", err.msg);
    assert_int_equal(PQsslInUse(c), 1);
    PQfinish(c);
    snprintf(url, sizeof url, "%s&sslmode=disable", base);
    c = pgx_connect(url, "test_secure", &err);
    assert_null(c);
    if (strstr(err.msg, "no encryption") == NULL) fail_msg("refused for another reason: %s", err.msg);
}

static void redis_refuses_a_client_without_the_password(void **state)
{
    (void)state;
    NEED_SECURE_STACK();
    char cmd[600], out[256] = "";
    const char *url = getenv("TODO_STACK_REDIS_PLAIN_URL"), *at = url != NULL ? strchr(url, '@') : NULL;
    assert_non_null(at); /* the secure stack's URL carries the password */
    snprintf(cmd, sizeof cmd, "redis-cli -u 'redis://%s' ping 2>&1", at + 1);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(out, sizeof out, p) == NULL) out[0] = '\0';
    pclose(p);
    if (strstr(out, "NOAUTH") == NULL) fail_msg("redis answered without a password: %s", out);
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' --no-auth-warning ping 2>&1", url);
    p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(out, sizeof out, p) == NULL) out[0] = '\0';
    pclose(p);
    assert_non_null(strstr(out, "PONG"));
}

/* The services reach Redis over TLS (rediss://, through redisx's relay:
 * Debian's hiredis has no TLS): a todo-projector on the stack's URL turns
 * its fast path on and fills the cache; with another CA, the handshake is
 * refused and it runs without Redis, saying why. */
static void the_services_reach_redis_over_tls_and_check_its_certificate(void **state)
{
    (void)state;
    NEED_SECURE_STACK();
    const char *url = getenv("TODO_REDIS_URL");
    assert_non_null(strstr(url, "rediss://"));
    static char other[1200], metrics[64];
    snprintf(other, sizeof other, "TODO_REDIS_URL=%.*s?ca=%s/certs/other-ca.pem", (int)(strchr(url, '?') - url), url,
             getenv("TODO_STACK_DIR"));
    snprintf(metrics, sizeof metrics, "TODO_PROJECTOR_METRICS_ADDR=");
    char user[64];
    harness_user(user, "tls-redis");
    char *auth = harness_bearer(user, 600, NULL);
    free(harness_create(auth, "read through a cache over TLS")); /* something to project */
    free(auth);
    harness_log_reset("tls-redis-good");
    harness_log_reset("tls-redis-other-ca");
    const char *good_env[] = {metrics, "TODO_PROJECTOR_GROUP=test-tls-redis-good", NULL};
    const char *bad_env[] = {metrics, other, "TODO_PROJECTOR_GROUP=test-tls-redis-bad", NULL};
    pid_t good = harness_spawn("projection/todo-projector", "tls-redis-good", good_env);
    pid_t bad = harness_spawn("projection/todo-projector", "tls-redis-other-ca", bad_env);
    /* Each replays the topics from their start under its own group: the
     * first batch asks Redis. */
    long long until = harness_now_ms() + 30000;
    while (harness_now_ms() < until && (!harness_log_contains("tls-redis-good", "redis fast path on") ||
                                        !harness_log_contains("tls-redis-other-ca", "TLS handshake")))
        harness_sleep_ms(200);
    assert_int_equal(harness_stop(good, SIGTERM, 20000), 0);
    assert_int_equal(harness_stop(bad, SIGTERM, 20000), 0);
    assert_true(harness_log_contains("tls-redis-good", "tls=yes"));
    /* (OpenSSL names why: "self-signed certificate in certificate chain") */
    assert_true(harness_log_contains("tls-redis-other-ca", "TLS handshake with 127.0.0.1:"));
    assert_true(harness_log_contains("tls-redis-other-ca", "certificate"));
    assert_false(harness_log_contains("tls-redis-other-ca", "redis fast path on"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kafka_refuses_plaintext_a_wrong_password_and_a_foreign_ca),
        cmocka_unit_test(postgresql_refuses_a_connection_without_tls),
        cmocka_unit_test(redis_refuses_a_client_without_the_password),
        cmocka_unit_test(the_services_reach_redis_over_tls_and_check_its_certificate),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
