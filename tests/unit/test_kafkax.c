/* Unit tests of kafkax's security settings (TODO_KAFKA_CONFIG): only
 * security keys pass, librdkafka's own checks apply, and every client
 * configuration made afterwards carries them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "kafkax.h"

/* conf's value of key ("" unset). */
static const char *value_of(rd_kafka_conf_t *conf, const char *key)
{
    static char buf[512];
    size_t n = sizeof buf;
    if (rd_kafka_conf_get(conf, key, buf, &n) != RD_KAFKA_CONF_OK) buf[0] = '\0';
    return buf;
}

static void security_settings_reach_every_client_configuration(void **state)
{
    (void)state;
    todo_err err;
    assert_int_equal(kafkax_set_security("security.protocol=SASL_SSL;sasl.mechanisms=SCRAM-SHA-512;"
                                         "sasl.username=todo;sasl.password=p=w;ssl.ca.location=/etc/ca.pem;",
                                         &err),
                     TODO_OK);
    rd_kafka_conf_t *conf = kafkax_conf_new("127.0.0.1:9092", &err);
    assert_non_null(conf);
    assert_string_equal(value_of(conf, "bootstrap.servers"), "127.0.0.1:9092");
    assert_string_equal(value_of(conf, "security.protocol"), "sasl_ssl");
    assert_string_equal(value_of(conf, "sasl.username"), "todo");
    assert_string_equal(value_of(conf, "sasl.password"), "p=w"); /* the first = splits */
    assert_string_equal(value_of(conf, "ssl.ca.location"), "/etc/ca.pem");
    rd_kafka_conf_destroy(conf);
    /* None: plaintext again. */
    assert_int_equal(kafkax_set_security("", &err), TODO_OK);
    conf = kafkax_conf_new("127.0.0.1:9092", &err);
    assert_string_equal(value_of(conf, "security.protocol"), "plaintext");
    rd_kafka_conf_destroy(conf);
}

static void other_settings_and_bad_values_are_refused(void **state)
{
    (void)state;
    todo_err err;
    assert_int_equal(kafkax_set_security("bootstrap.servers=evil:9092", &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "bootstrap.servers is not a security setting"));
    assert_int_equal(kafkax_set_security("security.protocol=SASL_SSL;enable.idempotence=false", &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "enable.idempotence"));
    assert_int_equal(kafkax_set_security("security.protocol=carrier-pigeon", &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "security.protocol"));
    assert_int_equal(kafkax_set_security("sasl.username", &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "is not key=value"));
    /* A refused list leaves nothing half applied. */
    rd_kafka_conf_t *conf = kafkax_conf_new("127.0.0.1:9092", &err);
    assert_string_equal(value_of(conf, "security.protocol"), "plaintext");
    rd_kafka_conf_destroy(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(security_settings_reach_every_client_configuration),
        cmocka_unit_test(other_settings_and_bad_values_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
