/*
 * Integration tests of `todoctl topics` on the real broker: apply is
 * idempotent, drift in a topic's configs or partition count is reported (exit
 * 1) and repaired with --fix. Only users.events.v1 and system.audit.v1 are
 * disturbed; the analytics projection reads the former, and its rebuild
 * must still finish after the topic is recreated. The inbox entries that
 * topic held are gone from any later rebuild: the tests that compare a
 * rebuilt read model with the write model (test_rebuild) run before this
 * one on a shared stack (tests/CMakeLists.txt's order).
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
#include <sys/wait.h>

#include "harness.h"
#include "kafkax.h"

static void need_stack(void)
{
    if (!harness_stack_available()) skip();
}

static rd_kafka_t *admin_client(void)
{
    char errstr[256];
    rd_kafka_conf_t *conf = harness_kafka_conf();
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
}

static void admin_wait(rd_kafka_queue_t *q)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
    assert_non_null(ev);
    assert_int_equal(rd_kafka_event_error(ev), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_event_destroy(ev);
}

static bool any_record(const rd_kafka_message_t *m, void *ctx)
{
    (void)m, (void)ctx;
    return true;
}

/* Sets retention.ms of topic behind todoctl's back. */
static void set_retention(const char *topic, const char *ms)
{
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_ConfigResource_set_config(res, "retention.ms", ms);
    rd_kafka_ConfigResource_set_config(res, "cleanup.policy", "delete");
    rd_kafka_AlterConfigs(rk, &res, 1, NULL, q);
    admin_wait(q);
    rd_kafka_ConfigResource_destroy(res);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

/* Recreates topic with one partition. */
static void recreate_small(const char *topic)
{
    char errstr[256];
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(topic);
    rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
    admin_wait(q);
    rd_kafka_DeleteTopic_destroy(dt);
    long long until = harness_now_ms() + 20000;
    for (;;) { /* deletion completes asynchronously */
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 1, 1, errstr, sizeof errstr);
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
        size_t cnt;
        const rd_kafka_topic_result_t **r = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        rd_kafka_resp_err_t e = cnt == 1 ? rd_kafka_topic_result_error(r[0]) : RD_KAFKA_RESP_ERR_UNKNOWN;
        rd_kafka_event_destroy(ev);
        rd_kafka_NewTopic_destroy(nt);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
        assert_true(harness_now_ms() < until);
        harness_sleep_ms(200);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

static void apply_is_idempotent(void **state)
{
    (void)state;
    need_stack();
    char out[8192];
    assert_int_equal(harness_todoctl("topics apply", out, sizeof out), 0);
    assert_int_equal(harness_todoctl("topics apply", out, sizeof out), 0);
    assert_non_null(strstr(out, "tasks.events.v1"));
    assert_null(strstr(out, "DIFFERS"));
}

static void drift_is_reported_and_fixed(void **state)
{
    (void)state;
    need_stack();
    char out[8192];
    set_retention("system.audit.v1", "1000");
    recreate_small("users.events.v1");
    assert_int_equal(harness_todoctl("topics apply", out, sizeof out), 1);
    assert_non_null(strstr(out, "system.audit.v1              DIFFERS"));
    assert_non_null(strstr(out, "retention.ms=1000(want 2592000000)"));
    assert_non_null(strstr(out, "partitions=1(want 3)"));
    assert_non_null(strstr(out, "--fix"));
    assert_int_equal(harness_todoctl("topics apply --fix", out, sizeof out), 0);
    assert_non_null(strstr(out, "fixed"));
    assert_int_equal(harness_todoctl("topics apply", out, sizeof out), 0);
    assert_null(strstr(out, "DIFFERS"));
}

static void a_profile_the_cluster_cannot_meet_is_reported(void **state)
{
    (void)state;
    need_stack();
    char out[8192];
    /* One broker cannot hold three replicas: reported, never "ok". */
    assert_int_equal(harness_todoctl("topics apply --profile production", out, sizeof out), 1);
    assert_non_null(strstr(out, "replication=1(want 3; needs a reassignment)"));
    assert_int_equal(harness_todoctl("topics apply --profile staging", out, sizeof out), 2);
    assert_non_null(strstr(out, "dev or production"));
}

/* A projection's live copy records how far it read each partition. After a
 * source topic is recreated those offsets lie past the partition's end, and
 * after its records are deleted the replay has nothing to read up to them.
 * The rebuild counts neither as missing: it finishes instead of waiting
 * forever for records that are gone (it hung on both once). */
static void a_rebuild_finishes_after_a_source_topic_is_recreated_and_emptied(void **state)
{
    (void)state;
    need_stack();
    char out[16384];
    recreate_small("users.events.v1");
    assert_int_equal(harness_todoctl("topics apply --fix", out, sizeof out), 0);
    /* Records read by the live copy (never replayed: deleted below), then
     * gone: the partitions start where they end. */
    for (int i = 0; i < 6; i++) {
        char key[16];
        snprintf(key, sizeof key, "gone-%d", i);
        harness_produce("users.events.v1", key, "not an event", 12);
    }
    /* A group that committed offset 0 before the records went. */
    char errstr[256];
    rd_kafka_conf_t *conf = harness_kafka_conf();
    rd_kafka_conf_set(conf, "group.id", "test-topics-behind-deleted", errstr, sizeof errstr);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *at = rd_kafka_topic_partition_list_new(3);
    for (int p = 0; p < 3; p++) rd_kafka_topic_partition_list_add(at, "users.events.v1", p)->offset = 0;
    assert_int_equal(rd_kafka_commit(c, at, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(at);
    rd_kafka_destroy(c);
    todo_err err;
    if (kafkax_delete_records(getenv("TODO_KAFKA_BROKERS"), "users.events.v1", &err) != TODO_OK) fail_msg("%s", err.msg);
    /* Its next record is the first one left: nothing to lag behind. */
    kafkax_lag lag[8];
    int n = 0;
    assert_int_equal(kafkax_group_lag(getenv("TODO_KAFKA_BROKERS"), "test-topics-behind-deleted", "users.events.v1", lag, 8,
                                      &n, &err),
                     0);
    assert_int_equal(n, 3);
    int64_t gone = 0;
    for (int i = 0; i < n; i++) {
        gone += lag[i].start;
        assert_int_equal(lag[i].committed, lag[i].start);
        assert_int_equal(lag[i].lag, 0);
    }
    assert_int_equal(gone, 6);
    /* A reader from the start reads the emptied topic to its end at once
     * (harness_count waited for offsets that were gone, ~40 s per count of
     * users.events.v1 in test_erasure after this test, and returned
     * whatever it had read by then). */
    assert_int_equal(harness_count("users.events.v1", any_record, NULL, 0, 1000), 0);
    PGconn *db = harness_admin();
    assert_non_null(db);
    PGresult *res = PQexec(db, "insert into analytics.projection_offsets (projection, topic, partition, next_offset)"
                               " select 'projection-analytics-v1', 'users.events.v1', p, 1000"
                               " from generate_series(0, 2) p on conflict (projection, topic, partition)"
                               " do update set next_offset = 1000");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(db);
    int rc = harness_todoctl("projection rebuild analytics", out, sizeof out);
    if (rc != 0 || strstr(out, "swapped: ") == NULL)
        fail_msg("todoctl projection rebuild analytics: %d: %s", rc, out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(apply_is_idempotent),
        cmocka_unit_test(drift_is_reported_and_fixed),
        cmocka_unit_test(a_profile_the_cluster_cannot_meet_is_reported),
        cmocka_unit_test(a_rebuild_finishes_after_a_source_topic_is_recreated_and_emptied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
