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

/* Unauthenticated calls once wrote ~1 MB of raw request bytes per record:
 * every text is cut on a character boundary and made printable. */
static void copied_text_is_bounded_and_printable(void **state)
{
    (void)state;
    char *huge = malloc(1000001);
    memset(huge, 'x', 1000000);
    huge[1000000] = '\0';
    huge[126] = (char)0xc3; /* "é" across the cut at 128: dropped whole */
    huge[127] = (char)0xa9;
    huge[128] = (char)0xc3;
    huge[129] = (char)0xa9;
    audit_entry e = {.rpc = "/x/Y", .outcome = "OK", .target_id = huge, .request_id = "a\x01" "b\xff" "c",
                     .correlation_id = huge, .message = huge};
    size_t len;
    uint8_t *buf = audit_encode("todo-command", &e, 0, &len);
    assert_true(len < 2048);
    Todo__V1__AuditRecord *r = todo__v1__audit_record__unpack(NULL, len, buf);
    assert_non_null(r);
    assert_int_equal(strlen(r->target_id), AUDIT_FIELD_MAX);
    assert_memory_equal(r->target_id + 126, "\xc3\xa9", 2);
    assert_int_equal(strlen(r->correlation_id), AUDIT_FIELD_MAX);
    assert_true(strlen(r->message) <= 2 * AUDIT_FIELD_MAX);
    assert_string_equal(r->request_id, "a?b?c");
    todo__v1__audit_record__free_unpacked(r, NULL);
    free(buf);
    huge[127] = 'x'; /* now the 2-byte character starts at 128: not cut in half */
    huge[126] = 'x';
    e.target_id = huge;
    buf = audit_encode("todo-command", &e, 0, &len);
    r = todo__v1__audit_record__unpack(NULL, len, buf);
    assert_int_equal(strlen(r->target_id), 128);
    todo__v1__audit_record__free_unpacked(r, NULL);
    free(buf);
    huge[127] = (char)0xc3;
    huge[128] = (char)0xa9;
    buf = audit_encode("todo-command", &e, 0, &len);
    r = todo__v1__audit_record__unpack(NULL, len, buf);
    assert_int_equal(strlen(r->target_id), 127); /* the character at 127-128 does not fit */
    todo__v1__audit_record__free_unpacked(r, NULL);
    free(buf);
    free(huge);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_refusal_is_recorded_with_who_what_and_why),
        cmocka_unit_test(missing_fields_become_empty),
        cmocka_unit_test(copied_text_is_bounded_and_printable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
