/* Unit tests of dlq's reason codes (every message the consumers write maps
 * to the code docs/OPERATIONS.md documents for it) and of park's set of
 * live letters as system.dlq.v1's records reach it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "park.h"
#include "todo/v1/events.pb-c.h"

static void reasons_map_to_their_codes(void **state)
{
    (void)state;
    struct {
        const char *reason, *code;
    } cases[] = {
        {"value is not a todo.v1.EventEnvelope", DLQ_REASON_UNDECODABLE},
        {"task.created v2 payload does not decode", DLQ_REASON_UNDECODABLE},
        {"envelope has no time", DLQ_REASON_UNDECODABLE},
        {"no projection for event type mystery.happened", DLQ_REASON_UNKNOWN_TYPE},
        {"task.created schema version 9 is not supported by this projector", DLQ_REASON_SCHEMA},
        {"schema id 77 is not in the registry", DLQ_REASON_SCHEMA},
        {"task.created payload is inconsistent (task id, title, created_at or priority)", DLQ_REASON_INVALID},
        {"notification.requested payload does not decode or lacks its id", DLQ_REASON_UNDECODABLE},
        {"applying failed: database error: ERROR:  value too long", DLQ_REASON_DATABASE},
        {"handling failed 5 times (the last: database error: deadlock detected)", DLQ_REASON_RETRIES},
        {"invalid_payload: an explicit code wins", DLQ_REASON_INVALID},
        {"something nobody foresaw", DLQ_REASON_HANDLER},
        {NULL, DLQ_REASON_HANDLER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(dlq_reason_code(cases[i].reason), cases[i].code);
}

/* Hands p a record of system.dlq.v1: the letter id's letter of group for
 * aggregate, or its tombstone (tombstone set). */
static void dlq_record(park *p, const char *id, const char *group, const char *aggregate, bool tombstone)
{
    Todo__V1__DeadLetter dl = TODO__V1__DEAD_LETTER__INIT;
    dl.consumer_group = (char *)group;
    dl.aggregate_id = (char *)aggregate;
    dl.event_id = "e1";
    uint8_t buf[512];
    size_t len = todo__v1__dead_letter__pack(&dl, buf);
    rd_kafka_message_t m = {0};
    m.key = (void *)id;
    m.key_len = strlen(id);
    m.payload = tombstone ? NULL : buf;
    m.len = tombstone ? 0 : len;
    park_take(p, &m);
}

static void a_letter_parks_its_aggregate_until_its_tombstone(void **state)
{
    (void)state;
    park *p = park_new("g");
    dlq_record(p, "L1", "other-group", "a1", false);
    assert_false(park_blocks(p, "a1", NULL, NULL, NULL)); /* another group's letter */
    dlq_record(p, "L1", "g", "a1", false);
    char root[PARK_ID_MAX];
    assert_true(park_blocks(p, "a1", NULL, NULL, root));
    assert_string_equal(root, "L1");
    assert_false(park_blocks(p, "a2", NULL, NULL, NULL));
    dlq_record(p, "L1", "g", NULL, true);
    assert_false(park_blocks(p, "a1", NULL, NULL, NULL));
    park_free(p);
}

/* The consume loop applied the redriven record (park_remove) before its
 * follower read the letter itself: the letter must not park the aggregate
 * again until its tombstone comes (seen in test_slice: the aggregate's next
 * event was parked behind a letter already redriven). */
static void a_letter_read_after_its_redrive_was_applied_parks_nothing(void **state)
{
    (void)state;
    park *p = park_new("g");
    park_add(p, "L1", "a1", "e1", NULL); /* the loop sent the letter */
    park_remove(p, "L1");                /* its redriven record was applied */
    dlq_record(p, "L1", "g", "a1", false);
    assert_false(park_blocks(p, "a1", NULL, NULL, NULL));
    dlq_record(p, "L1", "g", NULL, true);
    assert_int_equal(park_count(p), 0);
    dlq_record(p, "L2", "g", "a1", false); /* a later letter of the aggregate parks it */
    assert_true(park_blocks(p, "a1", NULL, NULL, NULL));
    park_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(reasons_map_to_their_codes),
                                       cmocka_unit_test(a_letter_parks_its_aggregate_until_its_tombstone),
                                       cmocka_unit_test(a_letter_read_after_its_redrive_was_applied_parks_nothing)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
