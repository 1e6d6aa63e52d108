/* Unit tests of kafkax's security settings (TODO_KAFKA_CONFIG): only
 * security keys pass, librdkafka's own checks apply, and every client
 * configuration made afterwards carries them. And of its consumers' group
 * membership: static member ids from TODO_INSTANCE, one slot per consumer
 * of a group, given back at close; the range assignor. */
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

static void consumers_join_as_static_members_of_an_instance_name(void **state)
{
    (void)state;
    todo_err err;
    char id[256];
    assert_int_equal(kafkax_set_instance("", &err), TODO_OK);
    assert_int_equal(kafkax_instance_id("g", id, sizeof id), -1); /* no name: dynamic membership */
    assert_int_equal(kafkax_set_instance("web 1", &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "TODO_INSTANCE"));
    assert_int_equal(kafkax_set_instance("0123456789012345678901234567890123456789012345678901234567890123", &err),
                     TODO_EINVAL);
    assert_int_equal(kafkax_set_instance("projector-2.eu", &err), TODO_OK);
    /* Each consumer of a group its own slot; the lowest free one. */
    assert_int_equal(kafkax_instance_id("g", id, sizeof id), 0);
    assert_string_equal(id, "projector-2.eu-g-0");
    assert_int_equal(kafkax_instance_id("g", id, sizeof id), 1);
    assert_string_equal(id, "projector-2.eu-g-1");
    assert_int_equal(kafkax_instance_id("h", id, sizeof id), 0);
    kafkax_instance_id_release("g", 0);
    assert_int_equal(kafkax_instance_id("g", id, sizeof id), 0);
    kafkax_instance_id_release("g", 0);
    kafkax_instance_id_release("g", 1);
    kafkax_instance_id_release("h", 0);

    /* A consumer carries its id, and the eager range assignor (not
     * cooperative-sticky: librdkafka 2.0.2 aborts destroying a consumer
     * that never had an assignment); closing it gives the slot back (no
     * broker needed: the client connects lazily). */
    const char *topics[] = {"t"};
    rd_kafka_t *a = kafkax_consumer_new("127.0.0.1:1", "g", topics, 1, &err);
    rd_kafka_t *b = kafkax_consumer_new_tail("127.0.0.1:1", "g", topics, 1, &err);
    assert_non_null(a);
    assert_non_null(b);
    char v[256];
    size_t n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(b), "group.instance.id", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "projector-2.eu-g-1");
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(a), "partition.assignment.strategy", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "range");
    kafkax_consumer_close(a);
    assert_int_equal(kafkax_instance_id("g", id, sizeof id), 0); /* a's slot is free again */
    kafkax_instance_id_release("g", 0);
    kafkax_consumer_close(b);
    assert_int_equal(kafkax_set_instance(NULL, &err), TODO_OK);
}

static void conf_is(rd_kafka_t *rk, const char *key, const char *want)
{
    char v[256];
    size_t n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(rk), key, v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, want);
}

/* The consume loop's consumer: offsets it stores are committed by
 * librdkafka every interval, and a group that can wait fetches in fewer
 * requests; a plain consumer commits only when told, and fetches at once. */
static void a_consumer_commits_per_interval_and_may_wait_for_its_fetches(void **state)
{
    (void)state;
    todo_err err;
    const char *topics[] = {"t"};
    rd_kafka_t *plain = kafkax_consumer_new("127.0.0.1:1", "g-plain", topics, 1, &err);
    kafkax_consumer_opts o = {.commit_interval_ms = 100, .fetch_wait_ms = 250};
    rd_kafka_t *lazy = kafkax_consumer_new_opts("127.0.0.1:1", "g-lazy", topics, 1, &o, &err);
    assert_non_null(plain);
    assert_non_null(lazy);
    conf_is(plain, "enable.auto.commit", "false");
    conf_is(plain, "enable.auto.offset.store", "false");
    conf_is(plain, "fetch.wait.max.ms", "500"); /* librdkafka's default; fetch.min.bytes 1: at once */
    conf_is(plain, "fetch.min.bytes", "1");
    conf_is(lazy, "enable.auto.commit", "true");
    conf_is(lazy, "enable.auto.offset.store", "false"); /* only what the loop applied is committed */
    conf_is(lazy, "auto.commit.interval.ms", "100");
    conf_is(lazy, "fetch.wait.max.ms", "250");
    conf_is(lazy, "fetch.min.bytes", "262144");
    kafkax_consumer_close(plain);
    kafkax_consumer_close(lazy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(security_settings_reach_every_client_configuration),
        cmocka_unit_test(other_settings_and_bad_values_are_refused),
        cmocka_unit_test(consumers_join_as_static_members_of_an_instance_name),
        cmocka_unit_test(a_consumer_commits_per_interval_and_may_wait_for_its_fetches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
