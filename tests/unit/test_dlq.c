/* Unit tests of dlq's reason codes: every message the consumers write maps
 * to the code docs/OPERATIONS.md documents for it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dlq.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(reasons_map_to_their_codes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
