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
    const char *url = getenv("TODO_REDIS_URL"), *at = strchr(url, '@');
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kafka_refuses_plaintext_a_wrong_password_and_a_foreign_ca),
        cmocka_unit_test(postgresql_refuses_a_connection_without_tls),
        cmocka_unit_test(redis_refuses_a_client_without_the_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
