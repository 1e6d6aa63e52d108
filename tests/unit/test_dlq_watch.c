/* Unit tests of dlq_watch against librdkafka's in-process mock cluster: the
 * depth counts the live dead letters by group and reason code; a tombstone
 * (redrive, discard) takes one away; a letter written again under the same
 * id counts once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "dlq.h"
#include "dlq_watch.h"

static rd_kafka_t *new_producer(const char *bootstraps)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (bootstraps != NULL) rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    return rk;
}

/* A letter (group, code) under id, or its tombstone (group NULL); sent
 * by the next flushed(). */
static void letter(rd_kafka_t *p, const char *id, const char *group, const char *code)
{
    rd_kafka_headers_t *h = NULL;
    const char *value = NULL;
    if (group != NULL) {
        h = rd_kafka_headers_new(2);
        rd_kafka_header_add(h, "dlq_consumer_group", -1, group, -1);
        rd_kafka_header_add(h, "dlq_reason_code", -1, code, -1);
        value = "a dead letter";
    }
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(DLQ_TOPIC), RD_KAFKA_V_KEY(id, strlen(id)),
                                       RD_KAFKA_V_VALUE((void *)value, (value != NULL ? strlen(value) : 0)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_poll(p, 0);
}

static void flushed(rd_kafka_t *p) { assert_int_equal(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR); }

/* Waits (up to 20 s) until the depth of (group, code) is want. */
static long depth_reaches(dlq_watch *w, const char *group, const char *code, long want)
{
    long n = -1;
    for (int i = 0; i < 200 && (n = dlq_watch_depth(w, group, code)) != want; i++) {
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
    return n;
}

static void the_depth_follows_letters_and_tombstones(void **state)
{
    (void)state;
    rd_kafka_t *mrk = new_producer(NULL);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 1);
    assert_non_null(mc);
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, DLQ_TOPIC, 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_t *p = new_producer(bootstraps);
    letter(p, "a", "projection", "undecodable");
    letter(p, "b", "projection", "undecodable");
    letter(p, "c", "saga", "retries_exhausted");
    flushed(p);

    todo_err err;
    dlq_watch *w = dlq_watch_start(bootstraps, &err);
    assert_non_null(w);
    assert_int_equal(depth_reaches(w, NULL, NULL, 3), 3);
    assert_int_equal(dlq_watch_depth(w, "projection", "undecodable"), 2);
    assert_int_equal(dlq_watch_depth(w, "saga", NULL), 1);

    /* Redriven (a tombstone), written again (compaction keeps the last),
     * a tombstone of a letter never seen: the live letters only. */
    letter(p, "a", NULL, NULL);
    letter(p, "c", "saga", "retries_exhausted");
    letter(p, "zzz", NULL, NULL);
    letter(p, "d", "saga", "handler_error");
    /* A letter without our headers (an older or foreign producer): counted
     * under no group, nothing read that was not written. */
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(DLQ_TOPIC), RD_KAFKA_V_KEY("bare", 4),
                                       RD_KAFKA_V_VALUE((void *)"x", 1), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    /* Rebuilds' groups are named after their start: one label value. */
    letter(p, "r1", "projection-rebuild-1796144357", "undecodable");
    letter(p, "r2", "projection-rebuild-1796144363", "undecodable");
    flushed(p);
    assert_int_equal(depth_reaches(w, "projection-rebuild", "undecodable", 2), 2);
    assert_int_equal(depth_reaches(w, "", NULL, 1), 1);
    assert_int_equal(depth_reaches(w, "saga", "handler_error", 1), 1);
    assert_int_equal(depth_reaches(w, "projection", "undecodable", 1), 1);
    assert_int_equal(dlq_watch_depth(w, "saga", "retries_exhausted"), 1);
    assert_int_equal(dlq_watch_depth(w, NULL, NULL), 6);

    /* Many letters: the table grows and keeps counting right. */
    char id[16];
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof id, "m%d", i);
        letter(p, id, "projection", "schema_unsupported");
    }
    for (int i = 0; i < 3000; i += 2) {
        snprintf(id, sizeof id, "m%d", i);
        letter(p, id, NULL, NULL);
    }
    flushed(p);
    assert_int_equal(depth_reaches(w, "projection", "schema_unsupported", 1500), 1500);
    assert_int_equal(dlq_watch_depth(w, NULL, NULL), 1506);
    dlq_watch_stop(w);
    rd_kafka_destroy(p);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_depth_follows_letters_and_tombstones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
