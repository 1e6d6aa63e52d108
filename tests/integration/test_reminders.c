/*
 * Integration tests of reminders and recurring patterns on the real stack:
 * every command's happy path and its refusals, the events they leave, and
 * what the read side shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "event.h"
#include "harness.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"
#include "todo/v1/query.pb-c.h"



/* Creates a task and returns its id (malloc'ed). */
static char *new_task(const char *auth)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    rq.title = "with reminders";
    assert_int_equal(harness_command("CreateTask", &rq.base, auth, &rp, &res), GRPC_STATUS_OK);
    char *id = strdup(rp->id);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return id;
}

static grpc_status_code schedule(const char *auth, const char *task, int64_t in_s, int channel,
                                 Todo__V1__CommandReply **out, grpcx_result *res)
{
    Todo__V1__ScheduleReminderRequest rq = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    at.seconds = event_now_us() / 1000000 + in_s;
    rq.task_id = (char *)task;
    rq.remind_at = &at;
    rq.channel = (Todo__V1__ReminderChannel)channel;
    return harness_command("ScheduleReminder", &rq.base, auth, out, res);
}

static void reminders_can_be_scheduled_snoozed_and_cancelled(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], other[64];
    harness_user(user, "remind");
    harness_user(other, "other");
    char *auth = harness_bearer(user, 600, NULL), *oauth = harness_bearer(other, 600, NULL);
    char *task = new_task(auth);
    Todo__V1__CommandReply *r;
    grpcx_result res;

    assert_int_equal(schedule(auth, task, 3600, TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH, &r, &res),
                     GRPC_STATUS_OK);
    assert_int_equal(r->version, 1);
    char id[37];
    snprintf(id, sizeof id, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Refusals. */
    assert_int_equal(schedule(auth, task, -60, 1, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "remind_at"));
    assert_int_equal(schedule(auth, task, 60, 0, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "channel"));
    assert_int_equal(schedule(auth, "123e4567-e89b-42d3-a456-426614174000", 60, 1, NULL, &res), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(schedule(oauth, task, 60, 1, NULL, &res), GRPC_STATUS_NOT_FOUND);

    /* Snooze moves it. */
    Todo__V1__SnoozeReminderRequest sn = TODO__V1__SNOOZE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp later = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    later.seconds = event_now_us() / 1000000 + 7200;
    sn.reminder_id = id;
    sn.remind_at = &later;
    assert_int_equal(harness_command("SnoozeReminder", &sn.base, auth, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    char at[32];
    snprintf(at, sizeof at, "%lld", (long long)later.seconds);
    assert_int_equal(harness_scalar(harness_db, "select extract(epoch from remind_at)::bigint from write.reminders"
                                           " where id = $1::uuid", id), later.seconds);

    /* Cancel, twice; a cancelled reminder cannot be snoozed. */
    Todo__V1__CancelReminderRequest cn = TODO__V1__CANCEL_REMINDER_REQUEST__INIT;
    cn.reminder_id = id;
    assert_int_equal(harness_command("CancelReminder", &cn.base, auth, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(harness_command("CancelReminder", &cn.base, auth, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(harness_command("SnoozeReminder", &sn.base, auth, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(harness_command("CancelReminder", &cn.base, oauth, NULL, &res), GRPC_STATUS_NOT_FOUND);

    /* Three events, on the reminders topic once published. */
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                           " and aggregate_type = 'reminder'", id), 3);
    long long until = harness_now_ms() + 15000;
    while (harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                 " and published_at is null", id) != 0 && harness_now_ms() < until)
        harness_sleep_ms(50);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                           " and published_at is null", id), 0);
    free(task);
    free(auth);
    free(oauth);
}

static void reminders_need_an_open_task_and_are_bounded(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "bounded");
    char *auth = harness_bearer(user, 600, NULL);
    char *task = new_task(auth);
    grpcx_result res;
    for (int i = 0; i < 10; i++) assert_int_equal(schedule(auth, task, 600 + i, 1, NULL, &res), GRPC_STATUS_OK);
    assert_int_equal(schedule(auth, task, 900, 1, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "10 scheduled reminders"));
    Todo__V1__CompleteTaskRequest cq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    cq.task_id = task;
    char *other = new_task(auth);
    cq.task_id = other;
    assert_int_equal(harness_command("CompleteTask", &cq.base, auth, NULL, &res), GRPC_STATUS_OK);
    assert_int_equal(schedule(auth, other, 600, 1, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "completed"));
    free(task);
    free(other);
    free(auth);
}

static Todo__V1__RecurrenceRule weekly(Todo__V1__Weekday *days, size_t n)
{
    Todo__V1__RecurrenceRule r = TODO__V1__RECURRENCE_RULE__INIT;
    r.frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_WEEKLY;
    r.by_weekday = days;
    r.n_by_weekday = n;
    r.time_zone = "Europe/Berlin";
    return r;
}

static void a_task_becomes_the_template_of_a_series(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "series");
    char *auth = harness_bearer(user, 600, NULL);
    char *task = new_task(auth);
    Todo__V1__Weekday days[] = {TODO__V1__WEEKDAY__WEEKDAY_TUESDAY};
    Todo__V1__RecurrenceRule rule = weekly(days, 1);
    Todo__V1__CreateRecurringPatternRequest cr = TODO__V1__CREATE_RECURRING_PATTERN_REQUEST__INIT;
    Todo__V1__CommandReply *r;
    grpcx_result res;
    cr.task_id = task;
    cr.rule = &rule;
    assert_int_equal(harness_command("CreateRecurringPattern", &cr.base, auth, &r, &res), GRPC_STATUS_OK);
    char pattern[37];
    snprintf(pattern, sizeof pattern, "%s", r->id);

    /* The read side shows it (waiting for the command's token). */
    Todo__V1__GetTaskRequest g = TODO__V1__GET_TASK_REQUEST__INIT;
    Todo__V1__Task *t;
    g.task_id = task;
    g.consistency_token = r->consistency_token;
    assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTask", &g.base, &todo__v1__task__descriptor,
                                 auth, 15000, (ProtobufCMessage **)&t, &res),
                     GRPC_STATUS_OK);
    assert_string_equal(t->recurring_pattern_id, pattern);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* One pattern per task; rules are checked. */
    assert_int_equal(harness_command("CreateRecurringPattern", &cr.base, auth, NULL, &res), GRPC_STATUS_ALREADY_EXISTS);
    assert_non_null(strstr(res.message, pattern));
    rule.time_zone = "Atlantis/Capital";
    char *other = new_task(auth);
    cr.task_id = other;
    assert_int_equal(harness_command("CreateRecurringPattern", &cr.base, auth, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "rule.time_zone"));
    rule.time_zone = "Europe/Berlin";

    /* Update with optimistic concurrency. */
    Todo__V1__UpdateRecurringPatternRequest up = TODO__V1__UPDATE_RECURRING_PATTERN_REQUEST__INIT;
    Todo__V1__RecurrenceRule monthly = TODO__V1__RECURRENCE_RULE__INIT;
    monthly.frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_MONTHLY;
    monthly.day_of_month = 31;
    monthly.time_zone = "America/New_York";
    monthly.max_occurrences = 12;
    up.pattern_id = pattern;
    up.rule = &monthly;
    up.expected_version = 1;
    assert_int_equal(harness_command("UpdateRecurringPattern", &up.base, auth, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(harness_command("UpdateRecurringPattern", &up.base, auth, NULL, &res), GRPC_STATUS_ABORTED);
    assert_non_null(strstr(res.message, "at version 2"));

    /* Completing the template names its pattern in the event (for the saga). */
    Todo__V1__CompleteTaskRequest cq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    cq.task_id = task;
    assert_int_equal(harness_command("CompleteTask", &cq.base, auth, NULL, &res), GRPC_STATUS_OK);
    const char *p[1] = {task};
    PGresult *q = PQexecParams(harness_db,
                               "select envelope from write.events where aggregate_id = $1::uuid"
                               " and event_type = 'task.completed'",
                               1, NULL, p, NULL, NULL, 1);
    assert_int_equal(PQntuples(q), 1);
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    todo_err err;
    assert_int_equal(event_decode((const uint8_t *)PQgetvalue(q, 0, 0), (size_t)PQgetlength(q, 0, 0), a, &env, &err), 0);
    Todo__V1__TaskCompleted *done = todo__v1__task_completed__unpack(NULL, env->data.len, env->data.data);
    assert_string_equal(done->recurring_pattern_id, pattern);
    todo__v1__task_completed__free_unpacked(done, NULL);
    arena_free(a);
    PQclear(q);
    free(task);
    free(other);
    free(auth);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reminders_can_be_scheduled_snoozed_and_cancelled),
        cmocka_unit_test(reminders_need_an_open_task_and_are_bounded),
        cmocka_unit_test(a_task_becomes_the_template_of_a_series),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
