/* Unit tests of audit: what an audit record holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "todo/v1/events.pb-c.h"

static void a_refusal_is_recorded_with_who_what_and_why(void **state)
{
    (void)state;
    audit_entry e = {.user_id = "alice", .rpc = "/todo.v1.TaskCommandService/CompleteTask",
                     .target_id = "123e4567-e89b-42d3-a456-426614174000", .outcome = "FAILED_PRECONDITION",
                     .message = "task is already completed", .correlation_id = "corr-1", .request_id = "r-9"};
    size_t len;
    uint8_t *buf = audit_encode("todo-command", &e, 1800000000000001LL, &len);
    Todo__V1__AuditRecord *r = todo__v1__audit_record__unpack(NULL, len, buf);
    assert_non_null(r);
    assert_int_equal(strlen(r->audit_id), 36);
    assert_string_equal(r->user_id, "alice");
    assert_string_equal(r->rpc, e.rpc);
    assert_string_equal(r->target_id, e.target_id);
    assert_string_equal(r->outcome, "FAILED_PRECONDITION");
    assert_string_equal(r->message, "task is already completed");
    assert_string_equal(r->correlation_id, "corr-1");
    assert_string_equal(r->request_id, "r-9");
    assert_string_equal(r->source, "todo-command");
    assert_int_equal(r->time->seconds, 1800000000);
    assert_int_equal(r->time->nanos, 1000);
    todo__v1__audit_record__free_unpacked(r, NULL);
    free(buf);
}

static void missing_fields_become_empty(void **state)
{
    (void)state;
    audit_entry e = {.rpc = "/x/Y", .outcome = "UNAUTHENTICATED"};
    size_t len;
    uint8_t *buf = audit_encode("todo-command", &e, 0, &len);
    Todo__V1__AuditRecord *r = todo__v1__audit_record__unpack(NULL, len, buf);
    assert_string_equal(r->user_id, "");
    assert_string_equal(r->target_id, "");
    assert_string_equal(r->message, "");
    todo__v1__audit_record__free_unpacked(r, NULL);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_refusal_is_recorded_with_who_what_and_why),
        cmocka_unit_test(missing_fields_become_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
