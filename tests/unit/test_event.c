/* Unit tests of event: envelope round trip, checks, Kafka headers, tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "event.h"

#define EID "123e4567-e89b-42d3-a456-426614174000"
#define AID "223e4567-e89b-42d3-a456-426614174000"

static event_meta meta(void)
{
    event_meta m = {
        .event_id = EID, .event_type = "task.created", .source = "todo-command", .time_us = 1800000000123456LL,
        .user_id = "alice", .aggregate_type = "task", .aggregate_id = AID, .aggregate_version = 1,
        .schema_version = 2, .correlation_id = "corr-1", .causation_id = NULL,
    };
    return m;
}

static void envelopes_round_trip_with_their_payload(void **state)
{
    (void)state;
    arena *a = arena_new();
    Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
    ev.task_id = AID;
    ev.title = "Buy milk";
    ev.category = "home";
    event_meta m = meta();
    uint8_t *bytes;
    size_t len;
    todo_err err;
    assert_int_equal(event_encode(&m, &ev.base, a, &bytes, &len, &err), TODO_OK);
    Todo__V1__EventEnvelope *env;
    assert_int_equal(event_decode(bytes, len, a, &env, &err), TODO_OK);
    assert_string_equal(env->event_id, EID);
    assert_string_equal(env->event_type, "task.created");
    assert_string_equal(env->user_id, "alice");
    assert_string_equal(env->correlation_id, "corr-1");
    assert_string_equal(env->causation_id, "");
    assert_int_equal(env->schema_version, 2);
    assert_int_equal(env->time->seconds, 1800000000);
    assert_int_equal(env->time->nanos, 123456000);
    Todo__V1__TaskCreatedV2 *back = todo__v1__task_created_v2__unpack(NULL, env->data.len, env->data.data);
    assert_non_null(back);
    assert_string_equal(back->title, "Buy milk");
    assert_string_equal(back->category, "home");
    todo__v1__task_created_v2__free_unpacked(back, NULL);
    assert_null(event_actor(env));
    assert_null(event_traceparent(env));
    /* The actor and the trace travel in the metadata. */
    m.actor = "todo-saga";
    m.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_int_equal(event_encode(&m, &ev.base, a, &bytes, &len, &err), TODO_OK);
    assert_int_equal(event_decode(bytes, len, a, &env, &err), TODO_OK);
    assert_string_equal(event_actor(env), "todo-saga");
    assert_string_equal(event_traceparent(env), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    arena_free(a);
}

static void incomplete_metadata_is_refused(void **state)
{
    (void)state;
    arena *a = arena_new();
    Todo__V1__TaskCreated ev = TODO__V1__TASK_CREATED__INIT;
    uint8_t *bytes;
    size_t len;
    todo_err err;
    event_meta m = meta();
    m.event_id = "not-a-uuid";
    assert_int_equal(event_encode(&m, &ev.base, a, &bytes, &len, &err), TODO_EINTERNAL);
    m = meta();
    m.aggregate_version = 0;
    assert_int_equal(event_encode(&m, &ev.base, a, &bytes, &len, &err), TODO_EINTERNAL);
    arena_free(a);
}

static void decoding_rejects_garbage_and_missing_fields(void **state)
{
    (void)state;
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    todo_err err;
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01};
    assert_int_equal(event_decode(junk, sizeof junk, a, &env, &err), TODO_EINVAL);
    /* A valid protobuf but an empty envelope. */
    assert_int_equal(event_decode((const uint8_t *)"", 0, a, &env, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "event_id"));
    Todo__V1__EventEnvelope e = TODO__V1__EVENT_ENVELOPE__INIT;
    uint8_t buf[256];
    e.event_id = EID;
    e.event_type = "task.created";
    e.user_id = "alice";
    e.aggregate_id = AID;
    e.aggregate_version = 0;
    size_t n = todo__v1__event_envelope__pack(&e, buf);
    assert_int_equal(event_decode(buf, n, a, &env, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "aggregate_version"));
    arena_free(a);
}

/* A time past year 9999 would overflow event_timestamp_us when the
 * headers are built (found by fuzz_envelope). */
static void decoding_rejects_times_out_of_range(void **state)
{
    (void)state;
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    todo_err err;
    Todo__V1__EventEnvelope e = TODO__V1__EVENT_ENVELOPE__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    uint8_t buf[256];
    e.event_id = EID;
    e.event_type = "task.created";
    e.user_id = "alice";
    e.aggregate_id = AID;
    e.aggregate_version = 1;
    e.time = &ts;
    ts.seconds = 253402300799LL; /* 9999-12-31T23:59:59Z */
    size_t n = todo__v1__event_envelope__pack(&e, buf);
    assert_int_equal(event_decode(buf, n, a, &env, &err), TODO_OK);
    ts.seconds = 8009656335324911376LL;
    n = todo__v1__event_envelope__pack(&e, buf);
    assert_int_equal(event_decode(buf, n, a, &env, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "time"));
    ts.seconds = 0;
    ts.nanos = -1;
    n = todo__v1__event_envelope__pack(&e, buf);
    assert_int_equal(event_decode(buf, n, a, &env, &err), TODO_EINVAL);
    arena_free(a);
}

static const char *header(rd_kafka_headers_t *h, const char *name, char *buf)
{
    const void *v;
    size_t n;
    if (rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return buf;
}

static void kafka_headers_carry_cloudevents_names(void **state)
{
    (void)state;
    arena *a = arena_new();
    Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
    event_meta m = meta();
    uint8_t *bytes;
    size_t len;
    todo_err err;
    char buf[128];
    Todo__V1__EventEnvelope *env;
    event_encode(&m, &ev.base, a, &bytes, &len, &err);
    event_decode(bytes, len, a, &env, &err);
    env->position = 42;
    rd_kafka_headers_t *h = event_kafka_headers(env);
    assert_string_equal(header(h, "ce_specversion", buf), "1.0");
    assert_string_equal(header(h, "ce_id", buf), EID);
    assert_string_equal(header(h, "ce_type", buf), "task.created");
    assert_string_equal(header(h, "ce_source", buf), "todo-command");
    assert_string_equal(header(h, "ce_time", buf), "2027-01-15T08:00:00.123456Z");
    assert_string_equal(header(h, "ce_subject", buf), AID);
    assert_string_equal(header(h, "ce_dataschema", buf), "todo.v1.TaskCreatedV2/v2");
    assert_string_equal(header(h, "content-type", buf), "application/protobuf");
    assert_string_equal(header(h, "correlation_id", buf), "corr-1");
    assert_null(header(h, "causation_id", buf));
    assert_string_equal(header(h, "todo_position", buf), "42");
    assert_null(header(h, "todo_schema_id", buf)); /* no id recorded: none sent */
    rd_kafka_headers_destroy(h);

    /* With the id a producer recorded at start-up: in the envelope and a header. */
    event_schema_id_set("task.created", 2, 17);
    event_encode(&m, &ev.base, a, &bytes, &len, &err);
    event_decode(bytes, len, a, &env, &err);
    assert_int_equal(env->schema_id, 17);
    h = event_kafka_headers(env);
    assert_string_equal(header(h, "todo_schema_id", buf), "17");
    rd_kafka_headers_destroy(h);
    event_schema_id_set("task.created", 2, 0);
    arena_free(a);
}

static void event_types_map_to_topics_and_messages(void **state)
{
    (void)state;
    assert_string_equal(event_topic("task.created"), "tasks.events.v1");
    assert_string_equal(event_topic("reminder.triggered"), "reminders.events.v1");
    assert_null(event_topic("bogus"));
    assert_string_equal(event_message_name("task.created", 1), "todo.v1.TaskCreated");
    assert_string_equal(event_message_name("task.created", 2), "todo.v1.TaskCreatedV2");
    assert_null(event_message_name("task.created", 3));
    assert_string_equal(event_message_name("saga.step.failed", 1), "todo.v1.SagaEvent");
    assert_string_equal(event_message_name("notification.requested", 1), "todo.v1.SendNotification");
    assert_null(event_message_name("saga.started", 2));
    assert_string_equal(event_topic("recurring.task.generated"), "saga.events.v1");
    assert_string_equal(event_topic("reminder.restored"), "reminders.events.v1");
    assert_string_equal(event_topic("user.notification_preferences_set"), "users.events.v1");
    char t[40];
    event_format_time(-1, t, sizeof t);
    assert_string_equal(t, "1969-12-31T23:59:59.999999Z");
}

static void each_process_produces_the_catalogue_s_types_of_its_topics(void **state)
{
    (void)state;
    const char *types[64];
    size_t n = event_types_of_producer("todo-command", types, 64);
    assert_int_equal(n, 19); /* user.registered, .erasure_requested, .erased too */
    for (size_t i = 0; i < n; i++) {
        const char *topic = event_topic(types[i]);
        assert_non_null(topic);
        assert_true(strcmp(topic, "tasks.events.v1") == 0 || strcmp(topic, "reminders.events.v1") == 0 ||
                    strcmp(topic, "users.events.v1") == 0);
        for (size_t k = 0; k < i; k++) assert_string_not_equal(types[k], types[i]); /* task.created once */
    }
    n = event_types_of_producer("todo-saga", types, 64);
    assert_int_equal(n, 14); /* notification.delivered too */
    for (size_t i = 0; i < n; i++) {
        const char *topic = event_topic(types[i]);
        assert_non_null(topic);
        assert_true(strcmp(topic, "saga.events.v1") == 0 || strcmp(topic, "notifications.commands.v1") == 0);
    }
    assert_int_equal(event_types_of_producer("todo-query", types, 64), 0);
    assert_int_equal(event_types_of_producer("todo-command", types, 2), 2);
}

/* EVENT_TOPICS (the topics an outbox sender learns as it starts) holds
 * every topic a produced type goes to, each once. */
static void every_topic_a_type_goes_to_is_among_the_event_topics(void **state)
{
    (void)state;
    const char *producers[2] = {"todo-command", "todo-saga"}, *types[64];
    for (int p = 0; p < 2; p++) {
        size_t n = event_types_of_producer(producers[p], types, 64);
        for (size_t i = 0; i < n; i++) {
            bool listed = false;
            for (int t = 0; t < EVENT_N_TOPICS; t++)
                listed = listed || strcmp(EVENT_TOPICS[t], event_topic(types[i])) == 0;
            if (!listed) fail_msg("%s goes to %s, not among EVENT_TOPICS", types[i], event_topic(types[i]));
        }
    }
    for (int t = 0; t < EVENT_N_TOPICS; t++)
        for (int u = 0; u < t; u++) assert_string_not_equal(EVENT_TOPICS[t], EVENT_TOPICS[u]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(envelopes_round_trip_with_their_payload),
        cmocka_unit_test(incomplete_metadata_is_refused),
        cmocka_unit_test(decoding_rejects_garbage_and_missing_fields),
        cmocka_unit_test(decoding_rejects_times_out_of_range),
        cmocka_unit_test(kafka_headers_carry_cloudevents_names),
        cmocka_unit_test(event_types_map_to_topics_and_messages),
        cmocka_unit_test(each_process_produces_the_catalogue_s_types_of_its_topics),
        cmocka_unit_test(every_topic_a_type_goes_to_is_among_the_event_topics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
