/*
 * Unit tests of outbox's delivery rules (outbox_send) against librdkafka's
 * mock cluster: everything acknowledged arrives once, in order, with the
 * standard headers and its position; a broker that is down fails the rows
 * (to be sent again, nothing marked); request errors the producer retries
 * by itself still deliver each row once; rows that can never be published
 * (too large for us or for Kafka, undecodable, no topic) are refused with
 * their reason and hold back the later rows of their user and aggregate,
 * while other users' rows go out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "event.h"
#include "kafkax.h"
#include "log.h"
#include "shard.h"
#include "outbox.h"

#define TOPIC "tasks.events.v1"
#define API_PRODUCE 0 /* the Produce request's ApiKey in the Kafka protocol */

typedef struct fixture {
    rd_kafka_t *host;              /* the mock cluster's owner */
    rd_kafka_mock_cluster_t *mc;
    char bootstrap[256];
    arena *a;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(f->host);
    f->mc = rd_kafka_mock_cluster_new(f->host, 1);
    assert_non_null(f->mc);
    snprintf(f->bootstrap, sizeof f->bootstrap, "%s", rd_kafka_mock_cluster_bootstraps(f->mc));
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPIC, 3, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    f->a = arena_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->host);
    arena_free(f->a);
    free(f);
    return 0;
}

/* A task.created row of user for aggregate, whose title is title_len bytes. */
static outbox_row row(fixture *f, int64_t id, const char *user, const char *aggregate, size_t title_len)
{
    char event_id[37];
    snprintf(event_id, sizeof event_id, "00000000-0000-4000-8000-%012lld", (long long)id);
    Todo__V1__TaskCreated ev = TODO__V1__TASK_CREATED__INIT;
    ev.task_id = (char *)aggregate;
    ev.title = arena_alloc(f->a, title_len + 1);
    memset(ev.title, 'x', title_len);
    ev.title[title_len] = '\0';
    event_meta m = {.event_id = arena_strdup(f->a, event_id), .event_type = "task.created", .source = "test",
                    .time_us = 1800000000000000LL, .user_id = user, .aggregate_type = "task",
                    .aggregate_id = aggregate, .aggregate_version = 1, .schema_version = 1,
                    .correlation_id = "corr-1"};
    uint8_t *bytes;
    size_t len;
    todo_err err;
    assert_int_equal(event_encode(&m, &ev.base, f->a, &bytes, &len, &err), TODO_OK);
    return (outbox_row){.id = id, .key = user, .aggregate = aggregate, .bytes = bytes, .len = len};
}

/* n task.created rows of alice for t-a, with ids from first_id. */
static void alice_rows(fixture *f, outbox_row *rows, int n, int64_t first_id)
{
    for (int i = 0; i < n; i++) rows[i] = row(f, first_id + i, "alice", "t-a", 10);
}

/* Waits (up to 10 s) until the sender knows TOPIC's partitions. */
static void wait_for_topic(fixture *f, outbox_sender *s)
{
    for (int i = 0; i < 100 && !outbox_sender_topic_known(s, TOPIC); i++) rd_kafka_poll(f->host, 100);
    assert_true(outbox_sender_topic_known(s, TOPIC));
}

/* A record read back from the topic. */
typedef struct seen {
    char key[64];
    int64_t position;
    char ce_id[64];
    char correlation[64];
} seen;

/* Reads every record of TOPIC from the start (up to cap, waiting up to 10 s
 * for want records); returns how many, in per-partition order. */
static int read_back(fixture *f, seen *out, int cap, int want)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", f->bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", "test-outbox-reader", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int p = 0; p < 3; p++) rd_kafka_topic_partition_list_add(l, TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0, idle = 0;
    while (n < cap && idle < (n >= want ? 10 : 100)) { /* 1 s of quiet after the wanted ones, 10 s before */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL) {
            idle++;
            continue;
        }
        idle = 0;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            seen *s = &out[n++];
            memset(s, 0, sizeof *s);
            snprintf(s->key, sizeof s->key, "%.*s", (int)m->key_len, (const char *)m->key);
            Todo__V1__EventEnvelope *env;
            todo_err err;
            assert_int_equal(event_decode(m->payload, m->len, f->a, &env, &err), TODO_OK);
            s->position = env->position;
            kafkax_header(m, "ce_id", s->ce_id, sizeof s->ce_id);
            kafkax_header(m, "correlation_id", s->correlation, sizeof s->correlation);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

/* The positions of user's records, in the order read. */
static int positions_of(const seen *s, int n, const char *user, int64_t *out)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].key, user) == 0) out[k++] = s[i].position;
    return k;
}

static const char *const FAST[] = {"message.timeout.ms", "2000", "retry.backoff.ms", "50", NULL};

static void acknowledged_rows_arrive_once_in_order_with_headers(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, FAST, &err);
    assert_non_null(s);
    outbox_row rows[6];
    const char *users[] = {"alice", "bob", "carol"};
    for (int i = 0; i < 6; i++) rows[i] = row(f, 100 + i, users[i % 3], users[i % 3], 10);
    assert_int_equal(outbox_send(s, rows, 6, true, NULL), 6);
    for (int i = 0; i < 6; i++) assert_int_equal(outbox_row_state(s, i), OUTBOX_OK);
    seen got[16];
    int n = read_back(f, got, 16, 6);
    assert_int_equal(n, 6);
    int64_t pos[16] = {0};
    assert_int_equal(positions_of(got, n, "alice", pos), 2);
    assert_int_equal(pos[0], 100); /* stamped with the row's id, in order */
    assert_int_equal(pos[1], 103);
    for (int i = 0; i < n; i++) {
        assert_string_equal(got[i].correlation, "corr-1");
        assert_int_equal(strncmp(got[i].ce_id, "00000000-0000-4000-8000-", 24), 0);
    }
    outbox_sender_free(s);
}

static void a_broker_that_is_down_fails_the_rows_and_nothing_is_lost(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, FAST, &err);
    assert_non_null(s);
    outbox_row rows[4];
    for (int i = 0; i < 4; i++) rows[i] = row(f, 200 + i, i < 2 ? "alice" : "bob", i < 2 ? "t-a" : "t-b", 10);
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(outbox_send(s, rows, 4, true, NULL), 0);
    /* Each user's first row failed; the second waited for it (a new
     * producer's partition) and stays behind it, unsent. */
    for (int i = 0; i < 4; i += 2) {
        assert_int_equal(outbox_row_state(s, i), OUTBOX_FAILED);
        assert_non_null(strstr(outbox_row_reason(s, i), "did not take it"));
        assert_int_equal(outbox_row_state(s, i + 1), OUTBOX_HELD);
    }
    /* Back up: the same rows go again (the table never marked them). */
    assert_int_equal(rd_kafka_mock_broker_set_up(f->mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(outbox_send(s, rows, 4, true, NULL), 4);
    seen got[16];
    int n = read_back(f, got, 16, 4);
    assert_int_equal(n, 4); /* once each */
    int64_t pos[16] = {0};
    assert_int_equal(positions_of(got, n, "alice", pos), 2);
    assert_int_equal(pos[0], 200);
    assert_int_equal(pos[1], 201);
    outbox_sender_free(s);
}

static void request_errors_are_retried_by_the_producer_without_duplicates(void **state)
{
    fixture *f = *state;
    todo_err err;
    /* Time enough for the retries: after a refused request the idempotent
     * producer drains what it has in flight before it sends again, which
     * under a sanitizer took longer than FAST's 2 s and failed rows that
     * only had to wait (a publisher's own sender never times out). */
    const char *const retrying[] = {"message.timeout.ms", "30000", "retry.backoff.ms", "50", NULL};
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, retrying, &err);
    assert_non_null(s);
    outbox_row rows[3];
    alice_rows(f, rows, 3, 300);
    rd_kafka_mock_push_request_errors(f->mc, API_PRODUCE, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
    assert_int_equal(outbox_send(s, rows, 3, true, NULL), 3);
    seen got[16];
    int n = read_back(f, got, 16, 3);
    assert_int_equal(n, 3);
    int64_t pos[16] = {0};
    assert_int_equal(positions_of(got, n, "alice", pos), 3);
    assert_int_equal(pos[0], 300);
    assert_int_equal(pos[1], 301);
    assert_int_equal(pos[2], 302);
    outbox_sender_free(s);
}

static void rows_that_can_never_leave_are_refused_and_hold_back_their_user_and_aggregate(void **state)
{
    fixture *f = *state;
    todo_err err;
    /* Our limit 2,000 bytes; the producer's own limit 4,000 bytes. */
    const char *const conf[] = {"message.timeout.ms", "2000", "message.max.bytes", "4000", NULL};
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 2000, conf, &err);
    assert_non_null(s);
    outbox_row rows[7];
    rows[0] = row(f, 400, "alice", "t-a", 3000);  /* over our limit */
    rows[1] = row(f, 401, "alice", "t-a2", 10);   /* same user: held */
    rows[2] = row(f, 402, "bob", "t-a", 10);      /* same aggregate: held */
    rows[3] = row(f, 403, "carol", "t-c", 10);    /* goes */
    rows[4] = (outbox_row){.id = 404, .key = "dave", .aggregate = "t-d", .bytes = (const uint8_t *)"\x0a\xff", .len = 2};
    rows[5] = row(f, 405, "dave", "t-d", 10);     /* behind the undecodable row */
    rows[6] = row(f, 406, "erin", "t-e", 10);     /* goes */
    assert_int_equal(outbox_send(s, rows, 7, true, NULL), 2);
    assert_int_equal(outbox_row_state(s, 0), OUTBOX_REFUSED);
    assert_non_null(strstr(outbox_row_reason(s, 0), "over TODO_EVENT_MAX_BYTES (2000)"));
    assert_int_equal(outbox_row_state(s, 1), OUTBOX_HELD);
    assert_int_equal(outbox_row_state(s, 2), OUTBOX_HELD);
    assert_int_equal(outbox_row_state(s, 3), OUTBOX_OK);
    assert_int_equal(outbox_row_state(s, 4), OUTBOX_REFUSED);
    assert_non_null(strstr(outbox_row_reason(s, 4), "does not decode"));
    assert_int_equal(outbox_row_state(s, 5), OUTBOX_HELD);
    assert_int_equal(outbox_row_state(s, 6), OUTBOX_OK);
    outbox_sender_free(s);

    /* Kafka's own refusal: within our limit, over the producer's. */
    s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, conf, &err);
    assert_non_null(s);
    rows[0] = row(f, 410, "alice", "t-a", 5000);
    rows[1] = row(f, 411, "alice", "t-a", 10);
    rows[2] = row(f, 412, "bob", "t-b", 10);
    assert_int_equal(outbox_send(s, rows, 3, true, NULL), 1);
    assert_int_equal(outbox_row_state(s, 0), OUTBOX_REFUSED);
    assert_non_null(strstr(outbox_row_reason(s, 0), "Kafka refused it"));
    assert_int_equal(outbox_row_state(s, 1), OUTBOX_HELD);
    assert_int_equal(outbox_row_state(s, 2), OUTBOX_OK);
    outbox_sender_free(s);
}

static void a_broker_refusal_in_the_delivery_report_is_refused_not_retried(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, FAST, &err);
    assert_non_null(s);
    outbox_row r = row(f, 500, "alice", "t-a", 10);
    rd_kafka_mock_push_request_errors(f->mc, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    assert_int_equal(outbox_send(s, &r, 1, true, NULL), 0);
    assert_int_equal(outbox_row_state(s, 0), OUTBOX_REFUSED);
    assert_non_null(strstr(outbox_row_reason(s, 0), "Kafka refused it"));
    outbox_sender_free(s);
}

static void a_type_no_topic_carries_is_refused(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 4, 65536, FAST, &err);
    assert_non_null(s);
    Todo__V1__TaskCreated ev = TODO__V1__TASK_CREATED__INIT;
    event_meta m = {.event_id = "00000000-0000-4000-8000-000000000600", .event_type = "mystery.happened",
                    .source = "test", .time_us = 1800000000000000LL, .user_id = "alice", .aggregate_type = "x",
                    .aggregate_id = "x-1", .aggregate_version = 1, .schema_version = 1};
    uint8_t *bytes;
    size_t len;
    assert_int_equal(event_encode(&m, &ev.base, f->a, &bytes, &len, &err), TODO_OK);
    outbox_row r = {.id = 600, .key = "alice", .aggregate = "x-1", .bytes = bytes, .len = len};
    assert_int_equal(outbox_send(s, &r, 1, false, NULL), 0);
    assert_int_equal(outbox_row_state(s, 0), OUTBOX_REFUSED);
    assert_non_null(strstr(outbox_row_reason(s, 0), "no topic carries events of type mystery.happened"));
    outbox_sender_free(s);
}

typedef struct bring_back {
    fixture *f;
    int after_ms;
    atomic_int *stop; /* set instead, when non-NULL */
} bring_back;

static void *bring_back_later(void *arg)
{
    bring_back *b = arg;
    struct timespec ts = {b->after_ms / 1000, (long)(b->after_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    if (b->stop != NULL) atomic_store(b->stop, 1);
    else rd_kafka_mock_broker_set_up(b->f->mc, 1);
    return NULL;
}

/* With the settings a publisher uses (no extra ones), a broker that is away
 * fails nothing: the rows wait for it (a row given up on by a time-out while
 * a later row of its user went through would reach Kafka after it), and a
 * stop ends the wait with the rows still unacknowledged. */
static void rows_wait_for_a_broker_that_is_away_and_nothing_is_given_up_on(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, NULL, &err);
    assert_non_null(s);
    outbox_row rows[4];
    alice_rows(f, rows, 4, 700);
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    atomic_int stop = 0;
    bring_back b = {f, 1500, &stop};
    pthread_t th;
    pthread_create(&th, NULL, bring_back_later, &b);
    assert_int_equal(outbox_send(s, rows, 4, true, &stop), 0);
    pthread_join(th, NULL);
    /* Not failed: the first waits for the broker, the others behind it. */
    assert_int_equal(outbox_row_state(s, 0), OUTBOX_SENT);
    for (int i = 1; i < 4; i++) assert_int_equal(outbox_row_state(s, i), OUTBOX_HELD);
    outbox_sender_free(s);

    s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, NULL, &err);
    assert_non_null(s);
    b = (bring_back){f, 2500, NULL};
    pthread_create(&th, NULL, bring_back_later, &b);
    assert_int_equal(outbox_send(s, rows, 4, true, NULL), 4); /* returns once the broker took them */
    assert_int_equal(outbox_send_rounds(s), 2); /* the first, then the rest on its settled partition */
    pthread_join(th, NULL);
    seen got[16];
    int n = read_back(f, got, 16, 4);
    int64_t pos[16] = {0};
    assert_int_equal(positions_of(got, n, "alice", pos), 4);
    for (int i = 0; i < 4; i++) assert_int_equal(pos[i], 700 + i);
    outbox_sender_free(s);
}

/* A failure that would leave a gap stops the producer (a fatal error): the
 * send ends at once, nothing after it is delivered, and the sender says so,
 * so that its publisher makes a new one. The producer knows the partition
 * before the first row, so each row could leave in its own request: a
 * broker takes any sequence number first from a producer it does not know,
 * and the rows behind the refused one were written before it (1 gate run
 * in ~3 under ASan) until a new producer's rows of a user waited for their
 * partition's first acknowledgement. */
static void a_gap_stops_the_producer_and_the_sender_says_so(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, NULL, &err);
    assert_non_null(s);
    outbox_row rows[3];
    alice_rows(f, rows, 3, 800);
    wait_for_topic(f, s);
    assert_false(outbox_sender_fatal(s, NULL, 0));
    rd_kafka_mock_push_request_errors(f->mc, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    int ok = outbox_send(s, rows, 3, true, NULL);
    char why[320] = "";
    assert_true(outbox_sender_fatal(s, why, sizeof why));
    printf("fatal: %s; %d delivered\n", why, ok);
    for (int i = 0; i < 3; i++) assert_int_not_equal(outbox_row_state(s, i), OUTBOX_OK);
    outbox_sender_free(s);
    seen got[16];
    assert_int_equal(read_back(f, got, 16, 0), 0); /* none of them reached Kafka, out of order */
}

/* Once a partition acknowledged a row of the producer, a user's rows leave
 * together (in one round): the sender finds the partition where librdkafka
 * puts them. What makes that safe is Kafka's: a broker refuses a sequence
 * number that would follow a gap from a producer it knows. The mock
 * cluster does not check that (it wrote two rows behind a refused request
 * on a settled partition), so it is asserted on the real broker instead
 * (test_outbox_parking). */
static void on_a_settled_partition_a_users_rows_leave_together(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 16, 65536, NULL, &err);
    assert_non_null(s);
    outbox_row rows[4];
    alice_rows(f, rows, 4, 900);
    assert_int_equal(outbox_send(s, rows, 1, true, NULL), 1); /* settles alice's partition */
    assert_int_equal(outbox_send_rounds(s), 1);
    wait_for_topic(f, s);
    assert_int_equal(outbox_send(s, rows + 1, 3, true, NULL), 3);
    assert_int_equal(outbox_send_rounds(s), 1);
    outbox_sender_free(s);
    seen got[16];
    int n = read_back(f, got, 16, 4);
    int64_t pos[16] = {0};
    assert_int_equal(positions_of(got, n, "alice", pos), 4);
    for (int i = 0; i < 4; i++) assert_int_equal(pos[i], 900 + i);
}

/* A sender learns its topics' partitions as it starts, before any event:
 * learnt on a topic's first event instead, that event and every one behind
 * it waited ~1 s per topic after each start of the relay (measured: 0.8 s
 * for the first user.registered, 1.8 s for the task.created behind it). */
static void a_new_sender_knows_its_topics_before_its_first_event(void **state)
{
    fixture *f = *state;
    todo_err err;
    outbox_sender *s = outbox_sender_new(f->bootstrap, "test-outbox", 4, 65536, NULL, &err);
    assert_non_null(s);
    bool known = false;
    for (int i = 0; i < 100 && !known; i++) {
        rd_kafka_poll(f->host, 100);
        known = outbox_sender_topic_known(s, TOPIC);
    }
    assert_true(known);
    assert_false(outbox_sender_topic_known(s, "no.such.topic"));
    outbox_sender_free(s);
}

int main(int argc, char **argv)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(acknowledged_rows_arrive_once_in_order_with_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(a_broker_that_is_down_fails_the_rows_and_nothing_is_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(request_errors_are_retried_by_the_producer_without_duplicates, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rows_that_can_never_leave_are_refused_and_hold_back_their_user_and_aggregate,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_broker_refusal_in_the_delivery_report_is_refused_not_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_type_no_topic_carries_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(rows_wait_for_a_broker_that_is_away_and_nothing_is_given_up_on, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_gap_stops_the_producer_and_the_sender_says_so, setup, teardown),
        cmocka_unit_test_setup_teardown(on_a_settled_partition_a_users_rows_leave_together, setup, teardown),
        cmocka_unit_test_setup_teardown(a_new_sender_knows_its_topics_before_its_first_event, setup, teardown),
    };
    return run_shard(tests, argc, argv);
}
