/* Unit tests of consume: the consume-apply-commit loop against librdkafka's
 * in-process mock cluster (no broker needed), with appliers that fail on
 * purpose and produce errors injected on the dead-letter topic. Each case
 * has a cluster of its own: a source topic of 2 partitions, the dead-letter
 * topic of 2 partitions led by different brokers (so that one broker's
 * error fails some of a batch's dead letters and not the others). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "consume.h"
#include "dlq.h"
#include "log.h"
#include "metrics.h"
#include "shard.h"
#include "todo/v1/events.pb-c.h"

#define SRC "test.events.v1"
#define MAX_RECORDS 32
#define KAFKA_API_PRODUCE 0 /* the Produce request's ApiKey (rdkafka_protocol.h is not installed) */
#define CASE_LIMIT_S 20     /* a loop that has not finished by then is stopped and the case fails */

typedef enum mode {
    APPLY_ALL,      /* every record applies */
    DEAD_SOME,      /* the records in t->dead_set are refused for good (dead-lettered by the applier) */
    ONE_FAILS,      /* record t->failing fails every time, naming itself */
    AWAY_THEN_BACK, /* TODO_EUNAVAIL t->away_calls times, then every record applies */
    ALWAYS_AWAY,    /* TODO_EUNAVAIL every time */
} mode;

typedef struct tcase {
    rd_kafka_t *mrk; /* the mock cluster's handle */
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
    char group[64];
    int n; /* records produced: value "r<i>", partition i % 2 */
    mode mode;
    bool dead_set[MAX_RECORDS];
    int failing;
    int away_calls;
    int stop_after_calls; /* ALWAYS_AWAY: asks to stop after this many calls */
    int commit_interval_ms; /* consume_opts' (0: the default) */
    int linger_ms;          /* > 0: the loop runs on this long after every record is committed */
    struct timespec all_in; /* when every record was (linger) */
    int ok_commits_in_linger; /* commits_of when the linger ended */
    int calls;
    int applied[MAX_RECORDS]; /* times each record was part of an applied batch */
    int dead_seen;            /* sum of after_batch's dead */
    size_t committed;         /* sum of after_batch's n */
    struct timespec started;
} tcase;

static int index_of(const rd_kafka_message_t *m)
{
    char v[16];
    int i = -1;
    snprintf(v, sizeof v, "%.*s", (int)m->len, (const char *)m->payload);
    return sscanf(v, "r%d", &i) == 1 && i >= 0 && i < MAX_RECORDS ? i : -1;
}

/* The test's applier: all or nothing, as a database transaction is. */
static int apply(void *ctx, rd_kafka_message_t **msgs, size_t n, const char **dead, int *failed, todo_err *err)
{
    tcase *t = ctx;
    t->calls++;
    *failed = -1;
    if (t->mode == ALWAYS_AWAY || (t->mode == AWAY_THEN_BACK && t->calls <= t->away_calls)) {
        *failed = 0; /* a record named with TODO_EUNAVAIL must not count against it */
        return todo_err_set(err, TODO_EUNAVAIL, "test: the database is away");
    }
    for (size_t i = 0; i < n; i++) {
        int r = index_of(msgs[i]);
        assert_true(r >= 0);
        if (dead[i] != NULL) continue;
        if (t->mode == ONE_FAILS && r == t->failing) {
            *failed = (int)i;
            return todo_err_set(err, TODO_ECONFLICT, "test: refused");
        }
        if (t->mode == DEAD_SOME && t->dead_set[r]) dead[i] = "test: refused for good";
    }
    for (size_t i = 0; i < n; i++)
        if (dead[i] == NULL) t->applied[index_of(msgs[i])]++;
    return TODO_OK;
}

static int elapsed_s(const tcase *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int)(now.tv_sec - t->started.tv_sec);
}

static int commits_of(const tcase *t);

static int should_stop(void *ctx)
{
    tcase *t = ctx;
    if (t->mode == ALWAYS_AWAY) return t->calls >= t->stop_after_calls;
    if (elapsed_s(t) >= CASE_LIMIT_S) return 1;
    if (t->committed < (size_t)t->n) return 0;
    if (t->linger_ms <= 0) return 1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (t->all_in.tv_sec == 0) t->all_in = now;
    if ((now.tv_sec - t->all_in.tv_sec) * 1000 + (now.tv_nsec - t->all_in.tv_nsec) / 1000000 < t->linger_ms) return 0;
    t->ok_commits_in_linger = commits_of(t);
    return 1;
}

static void after_batch(void *ctx, size_t n, int dead)
{
    tcase *t = ctx;
    t->committed += n;
    t->dead_seen += dead;
}

static rd_kafka_t *handle(rd_kafka_type_t type, const char *bootstraps, const char *group)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (bootstraps != NULL)
        assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof errstr),
                         RD_KAFKA_CONF_OK);
    if (group != NULL)
        assert_int_equal(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr), RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    return rk;
}

static int setup(void **state)
{
    static int cases;
    tcase *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->mrk = handle(RD_KAFKA_PRODUCER, NULL, NULL);
    t->mc = rd_kafka_mock_cluster_new(t->mrk, 3);
    assert_non_null(t->mc);
    t->bootstraps = rd_kafka_mock_cluster_bootstraps(t->mc);
    assert_int_equal(rd_kafka_mock_topic_create(t->mc, SRC, 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_mock_topic_create(t->mc, DLQ_TOPIC, 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_mock_partition_set_leader(t->mc, DLQ_TOPIC, 0, 1);
    rd_kafka_mock_partition_set_leader(t->mc, DLQ_TOPIC, 1, 2);
    snprintf(t->group, sizeof t->group, "test-consume-%d", ++cases);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tcase *t = *state;
    rd_kafka_mock_cluster_destroy(t->mc);
    rd_kafka_destroy(t->mrk);
    free(t);
    return 0;
}

/* Produces records r0..r(n-1) to SRC, alternating partitions. */
static void produce(tcase *t, int n)
{
    rd_kafka_t *p = handle(RD_KAFKA_PRODUCER, t->bootstraps, NULL);
    for (int i = 0; i < n; i++) {
        char v[16];
        int len = snprintf(v, sizeof v, "r%d", i);
        assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(SRC), RD_KAFKA_V_PARTITION(i % 2),
                                           RD_KAFKA_V_VALUE(v, (size_t)len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    assert_int_equal(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    t->n = n;
}

static int run(tcase *t, int batch, int max_attempts)
{
    todo_err err;
    const char *topics[] = {SRC};
    consume_opts o = {.brokers = t->bootstraps, .group = t->group, .topics = topics, .n_topics = 1,
                      .component = "test", .batch = batch, .max_attempts = max_attempts, .apply = apply,
                      .should_stop = should_stop, .after_batch = after_batch, .ctx = t,
                      .commit_interval_ms = t->commit_interval_ms};
    clock_gettime(CLOCK_MONOTONIC, &t->started);
    int rc = consume_run(&o, &err);
    if (rc != TODO_OK) print_error("consume_run: %s\n", err.msg);
    return rc;
}

/* The group's committed offset on SRC's partition, or a negative
 * RD_KAFKA_OFFSET_* when it has none. */
static int64_t committed(const tcase *t, int partition)
{
    rd_kafka_t *rk = handle(RD_KAFKA_CONSUMER, t->bootstraps, t->group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, SRC, partition);
    assert_int_equal(rd_kafka_committed(rk, l, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return off;
}

static void assert_all_committed(const tcase *t)
{
    assert_int_equal(committed(t, 0), (t->n + 1) / 2);
    assert_int_equal(committed(t, 1), t->n / 2);
}

/* Reads every dead letter on the DLQ: per source record, how many letters
 * name it; reasons[r] receives the last one's reason. Returns the count. */
static int read_dead_letters(const tcase *t, int *per_record, char reasons[][200])
{
    rd_kafka_t *rk = handle(RD_KAFKA_CONSUMER, t->bootstraps, "test-dlq-reader");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
    int64_t want = 0;
    for (int p = 0; p < 2; p++) {
        int64_t lo, hi;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, DLQ_TOPIC, p, &lo, &hi, 10000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        want += hi - lo;
        rd_kafka_topic_partition_list_add(l, DLQ_TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    int got = 0;
    for (int idle = 0; got < want && idle < 50;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL || m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            idle++;
            if (m != NULL) rd_kafka_message_destroy(m);
            continue;
        }
        Todo__V1__DeadLetter *dl = todo__v1__dead_letter__unpack(NULL, m->len, m->payload);
        assert_non_null(dl);
        assert_string_equal(dl->consumer_group, t->group);
        assert_string_equal(dl->original_topic, SRC);
        char v[16];
        int r = -1;
        snprintf(v, sizeof v, "%.*s", (int)dl->original_value.len, (const char *)dl->original_value.data);
        assert_int_equal(sscanf(v, "r%d", &r), 1);
        assert_true(r >= 0 && r < MAX_RECORDS);
        assert_int_equal(dl->original_partition, r % 2);
        assert_int_equal(dl->original_offset, r / 2);
        per_record[r]++;
        snprintf(reasons[r], sizeof reasons[r], "%s", dl->reason);
        todo__v1__dead_letter__free_unpacked(dl, NULL);
        rd_kafka_message_destroy(m);
        got++;
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    assert_int_equal(got, want);
    return got;
}

static void every_record_is_applied_once_and_committed(void **state)
{
    tcase *t = *state;
    produce(t, 10);
    t->mode = APPLY_ALL;
    assert_int_equal(run(t, 4, 3), TODO_OK);
    for (int i = 0; i < t->n; i++) assert_int_equal(t->applied[i], 1);
    assert_int_equal(t->committed, 10);
    assert_int_equal(t->dead_seen, 0);
    assert_all_committed(t);
    int per[MAX_RECORDS] = {0};
    char reasons[MAX_RECORDS][200];
    assert_int_equal(read_dead_letters(t, per, reasons), 0);
}

static void a_record_the_applier_refuses_is_dead_lettered_once(void **state)
{
    tcase *t = *state;
    produce(t, 8);
    t->mode = DEAD_SOME;
    t->dead_set[5] = true;
    assert_int_equal(run(t, 100, 3), TODO_OK);
    int per[MAX_RECORDS] = {0};
    char reasons[MAX_RECORDS][200];
    assert_int_equal(read_dead_letters(t, per, reasons), 1);
    assert_int_equal(per[5], 1);
    assert_string_equal(reasons[5], "test: refused for good");
    for (int i = 0; i < t->n; i++) assert_int_equal(t->applied[i], i == 5 ? 0 : 1);
    assert_int_equal(t->dead_seen, 1);
    assert_all_committed(t);
}

static void a_record_that_keeps_failing_is_given_up_after_max_attempts(void **state)
{
    tcase *t = *state;
    produce(t, 8);
    t->mode = ONE_FAILS;
    t->failing = 2;
    assert_int_equal(run(t, 100, 2), TODO_OK);
    int per[MAX_RECORDS] = {0};
    char reasons[MAX_RECORDS][200];
    assert_int_equal(read_dead_letters(t, per, reasons), 1);
    assert_int_equal(per[2], 1);
    assert_string_equal(reasons[2], "handling failed 2 times (the last: test: refused)");
    for (int i = 0; i < t->n; i++) assert_int_equal(t->applied[i], i == 2 ? 0 : 1);
    assert_int_equal(t->dead_seen, 1);
    assert_all_committed(t);
}

static void a_dependency_away_is_waited_for_without_giving_up(void **state)
{
    tcase *t = *state;
    produce(t, 6);
    t->mode = AWAY_THEN_BACK;
    t->away_calls = 2; /* with max_attempts 2: given up on if it counted against the record it names */
    assert_int_equal(run(t, 100, 2), TODO_OK);
    assert_true(t->calls >= 3);
    for (int i = 0; i < t->n; i++) assert_int_equal(t->applied[i], 1);
    int per[MAX_RECORDS] = {0};
    char reasons[MAX_RECORDS][200];
    assert_int_equal(read_dead_letters(t, per, reasons), 0);
    assert_int_equal(t->dead_seen, 0);
    assert_all_committed(t);
}

/* Broker 2 (the leader of the DLQ's partition 1) refuses the first produce
 * for good and broker 1 answers its first with an error librdkafka retries:
 * of the batch's dead letters, those that went to partition 1 are sent
 * again, alone; each record ends up with exactly one letter. */
static void failed_dead_letters_are_sent_again_without_duplicates(void **state)
{
    tcase *t = *state;
    produce(t, 24);
    t->mode = DEAD_SOME;
    for (int i = 0; i < 20; i++) t->dead_set[i] = true; /* random letter keys: both DLQ partitions but 1 time in 2^19 */
    assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(t->mc, 2, KAFKA_API_PRODUCE, 1,
                                                                  RD_KAFKA_RESP_ERR_INVALID_RECORD, 0),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(t->mc, 1, KAFKA_API_PRODUCE, 1,
                                                                  RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(run(t, 100, 3), TODO_OK);
    size_t left = 1;
    assert_int_equal(rd_kafka_mock_broker_error_stack_cnt(t->mc, 2, KAFKA_API_PRODUCE, &left),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(left, 0); /* the failure did happen */
    int per[MAX_RECORDS] = {0};
    char reasons[MAX_RECORDS][200];
    assert_int_equal(read_dead_letters(t, per, reasons), 20);
    for (int i = 0; i < t->n; i++) {
        assert_int_equal(per[i], i < 20 ? 1 : 0);
        assert_int_equal(t->applied[i], i < 20 ? 0 : 1);
    }
    assert_int_equal(t->dead_seen, 20);
    assert_all_committed(t);
}

/* An out-of-order sequence on an idempotent producer's first request is
 * fatal to it (rd_kafka_fatal_error): the loop starts another producer, and
 * the letters the first one could not deliver reach the topic through it. */
static void a_dead_letter_producer_failed_for_good_is_replaced(void **state)
{
    tcase *t = *state;
    produce(t, 6);
    t->mode = DEAD_SOME;
    for (int i = 0; i < 4; i++) t->dead_set[i] = true;
    rd_kafka_mock_push_request_errors(t->mc, KAFKA_API_PRODUCE, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_int_equal(run(t, 100, 3), TODO_OK);
    int per[MAX_RECORDS] = {0};
    char reasons[MAX_RECORDS][200];
    assert_int_equal(read_dead_letters(t, per, reasons), 4);
    for (int i = 0; i < t->n; i++) {
        assert_int_equal(per[i], i < 4 ? 1 : 0);
        assert_int_equal(t->applied[i], i < 4 ? 0 : 1);
    }
    assert_all_committed(t);
}

static void stopping_while_retrying_commits_nothing(void **state)
{
    tcase *t = *state;
    produce(t, 4);
    t->mode = ALWAYS_AWAY;
    t->stop_after_calls = 2;
    assert_int_equal(run(t, 100, 2), TODO_OK);
    assert_int_equal(t->calls, 2);
    assert_int_equal(t->committed, 0);
    assert_true(committed(t, 0) < 0);
    assert_true(committed(t, 1) < 0);
}

/* Produces r0..r(n-1) like produce(), with headers: ce_subject agg[i]
 * (NULL: none), ce_id "e<i>", causation_id cause[i] (NULL: none). */
static void produce_events(tcase *t, int n, const char *const *agg, const char *const *cause)
{
    rd_kafka_t *p = handle(RD_KAFKA_PRODUCER, t->bootstraps, NULL);
    for (int i = 0; i < n; i++) {
        char v[16], ev[16];
        int len = snprintf(v, sizeof v, "r%d", i);
        snprintf(ev, sizeof ev, "e%d", i);
        rd_kafka_headers_t *h = rd_kafka_headers_new(3);
        rd_kafka_header_add(h, "ce_id", -1, ev, -1);
        if (agg[i] != NULL) rd_kafka_header_add(h, "ce_subject", -1, agg[i], -1);
        if (cause[i] != NULL) rd_kafka_header_add(h, "causation_id", -1, cause[i], -1);
        assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(SRC), RD_KAFKA_V_PARTITION(i % 2),
                                           RD_KAFKA_V_VALUE(v, (size_t)len), RD_KAFKA_V_HEADERS(h),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    assert_int_equal(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    t->n = n;
}

/* Ordered parking (park.h): the records of a dead record's aggregate after
 * it, and those its chain caused, are not applied but dead-lettered as
 * "parked"; a consumer started later still parks behind the live letters
 * (loaded from the topic). */
static void records_behind_a_dead_letter_wait_for_it(void **state)
{
    tcase *t = *state;
    /* Partition 1 holds r1 r3 r5 r7 r9 in that order: r1 fails for good,
     * r3 and r5 are its aggregate's, r7 was caused by r3, r9 is another's. */
    const char *agg[] = {"a0", "A", "a2", "A", "a4", "A", "a6", "a7", "a8", "a9"};
    const char *cause[] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, "e3", NULL, NULL};
    produce_events(t, 10, agg, cause);
    t->mode = ONE_FAILS;
    t->failing = 1;
    assert_int_equal(run(t, 100, 2), TODO_OK);
    int per[MAX_RECORDS] = {0};
    char reasons[MAX_RECORDS][200];
    assert_int_equal(read_dead_letters(t, per, reasons), 4);
    assert_non_null(strstr(reasons[1], "handling failed 2 times"));
    for (int i = 3; i <= 7; i += 2) {
        assert_int_equal(per[i], 1);
        assert_non_null(strstr(reasons[i], "parked: behind"));
    }
    for (int i = 0; i < t->n; i++) assert_int_equal(t->applied[i], i == 1 || i == 3 || i == 5 || i == 7 ? 0 : 1);
    assert_all_committed(t);

    /* Later, another consumer of the group: the aggregate still waits. */
    rd_kafka_t *p = handle(RD_KAFKA_PRODUCER, t->bootstraps, NULL);
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, "ce_subject", -1, "A", -1);
    rd_kafka_header_add(h, "ce_id", -1, "e10", -1);
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(SRC), RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE("r10", 3),
                                       RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    t->n = 11;
    t->mode = APPLY_ALL;
    assert_int_equal(run(t, 100, 2), TODO_OK);
    assert_int_equal(read_dead_letters(t, per, reasons), 5);
    assert_int_equal(t->applied[10], 0);
    assert_non_null(strstr(reasons[10], "parked: behind"));
}

/* The group's todo_consumer_offset_commits_total{outcome="ok"} (-1: no
 * such series). */
static int commits_of(const tcase *t)
{
    char *text = metrics_render(NULL), want[160];
    assert_non_null(text);
    snprintf(want, sizeof want, "todo_consumer_offset_commits_total{group=\"%s\",outcome=\"ok\"} ", t->group);
    const char *at = strstr(text, want);
    int n = at != NULL ? atoi(at + strlen(want)) : -1;
    free(text);
    return n;
}

/* A batch stores its offsets; they are committed once per interval (here
 * longer than the case) and when the loop stops, not once per batch: ten
 * batches of one record, at most one commit, and every offset committed. */
static void offsets_are_committed_per_interval_and_at_stop_not_per_batch(void **state)
{
    tcase *t = *state;
    produce(t, 10);
    t->mode = APPLY_ALL;
    t->commit_interval_ms = 600000;
    assert_int_equal(run(t, 1, 3), TODO_OK);
    for (int i = 0; i < t->n; i++) assert_int_equal(t->applied[i], 1);
    assert_int_equal(t->committed, 10);
    assert_all_committed(t);
    int commits = commits_of(t);
    assert_true(commits >= 0 && commits <= 1);
}

/* Stored offsets are committed within the interval, without waiting for
 * more records or the stop: the loop commits them itself (librdkafka's
 * own timer, every CONSUME_COMMIT_BACKSTOP_MS, comes after the case). */
static void a_quiet_consumer_commits_its_last_batch_within_the_interval(void **state)
{
    tcase *t = *state;
    produce(t, 2);
    t->mode = APPLY_ALL;
    t->commit_interval_ms = 20;
    t->linger_ms = 1500;
    assert_int_equal(run(t, 1, 3), TODO_OK);
    assert_int_equal(t->committed, 2);
    assert_true(t->ok_commits_in_linger >= 1); /* before the stop's own commit */
    assert_all_committed(t);
}

static void bad_options_are_refused_before_connecting(void **state)
{
    tcase *t = *state;
    todo_err err;
    const char *topics[] = {SRC};
    consume_opts o = {.brokers = t->bootstraps, .group = t->group, .topics = topics, .n_topics = 1,
                      .component = "test", .batch = 0, .max_attempts = 1, .apply = apply,
                      .should_stop = should_stop, .ctx = t};
    assert_int_equal(consume_run(&o, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "batch"));
    o.batch = 1;
    o.commit_interval_ms = -1;
    assert_int_equal(consume_run(&o, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "commit_interval_ms"));
    o.commit_interval_ms = 0;
    o.apply = NULL;
    assert_int_equal(consume_run(&o, &err), TODO_EINVAL);
}

int main(int argc, char **argv)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_record_is_applied_once_and_committed, setup, teardown),
        cmocka_unit_test_setup_teardown(a_record_the_applier_refuses_is_dead_lettered_once, setup, teardown),
        cmocka_unit_test_setup_teardown(a_record_that_keeps_failing_is_given_up_after_max_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(a_dependency_away_is_waited_for_without_giving_up, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_dead_letters_are_sent_again_without_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(a_dead_letter_producer_failed_for_good_is_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(stopping_while_retrying_commits_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(records_behind_a_dead_letter_wait_for_it, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_options_are_refused_before_connecting, setup, teardown),
        cmocka_unit_test_setup_teardown(offsets_are_committed_per_interval_and_at_stop_not_per_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_quiet_consumer_commits_its_last_batch_within_the_interval, setup,
                                        teardown),
    };
    return run_shard(tests, argc, argv);
}
