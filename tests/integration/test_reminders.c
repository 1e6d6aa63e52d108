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
#include <libpq-fe.h>
#include <pthread.h>
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

static Todo__V1__ListRemindersResponse *list_reminders(const char *auth, const char *task, bool all, int size,
                                                       const char *page, const char *token, grpc_status_code *code,
                                                       grpcx_result *res)
{
    Todo__V1__ListRemindersRequest rq = TODO__V1__LIST_REMINDERS_REQUEST__INIT;
    Todo__V1__ListRemindersResponse *out = NULL;
    rq.task_id = (char *)(task != NULL ? task : "");
    rq.include_inactive = all;
    rq.page_size = size;
    rq.page_token = (char *)(page != NULL ? page : "");
    rq.consistency_token = (char *)(token != NULL ? token : "");
    *code = grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/ListReminders", &rq.base,
                        &todo__v1__list_reminders_response__descriptor, auth, 15000, (ProtobufCMessage **)&out, res);
    return out;
}

/* The reminders read model: every reminder event projected, and a command
 * reply's token (on the reminders stream) honoured by ListReminders. */
static void reminders_are_listed_in_due_order_as_they_change(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], other[64];
    harness_user(user, "remlist");
    harness_user(other, "remnosy");
    char *auth = harness_bearer(user, 600, NULL), *oauth = harness_bearer(other, 600, NULL);
    char *t1 = new_task(auth), *t2 = new_task(auth);
    Todo__V1__CommandReply *r;
    grpcx_result res;
    grpc_status_code code;
    char ids[3][37];
    /* Three reminders, due in 3 h (t1), 1 h (t1), 2 h (t2). */
    const int64_t in_s[3] = {3 * 3600, 3600, 2 * 3600};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(schedule(auth, i == 2 ? t2 : t1, in_s[i], TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL,
                                  &r, &res),
                         GRPC_STATUS_OK);
        snprintf(ids[i], sizeof ids[i], "%s", r->id);
        if (i < 2) protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    /* The last reply's token: the list waits for it, so all three are there. */
    Todo__V1__ListRemindersResponse *ls = list_reminders(auth, NULL, false, 0, NULL, r->consistency_token, &code, &res);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_reminders, 3);
    assert_string_equal(ls->reminders[0]->id, ids[1]);
    assert_string_equal(ls->reminders[1]->id, ids[2]);
    assert_string_equal(ls->reminders[2]->id, ids[0]);
    assert_string_equal(ls->reminders[1]->task_id, t2);
    assert_int_equal(ls->reminders[0]->status, TODO__V1__REMINDER_STATUS__REMINDER_STATUS_SCHEDULED);
    assert_int_equal(ls->reminders[0]->channel, TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL);
    assert_int_equal(ls->reminders[0]->version, 1);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* Pages of two, then one; only t1's; nobody else's. */
    ls = list_reminders(auth, NULL, false, 2, NULL, NULL, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_reminders, 2);
    assert_true(ls->next_page_token[0] != '\0');
    Todo__V1__ListRemindersResponse *p2 = list_reminders(auth, NULL, false, 2, ls->next_page_token, NULL, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(p2->n_reminders, 1);
    assert_string_equal(p2->reminders[0]->id, ids[0]);
    assert_string_equal(p2->next_page_token, "");
    protobuf_c_message_free_unpacked(&p2->base, NULL);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    ls = list_reminders(auth, t1, false, 0, NULL, NULL, &code, &res);
    assert_int_equal(ls->n_reminders, 2);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    ls = list_reminders(oauth, NULL, true, 0, NULL, NULL, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_reminders, 0);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* Snooze the first due past the others; cancel the one of t2. */
    Todo__V1__SnoozeReminderRequest sn = TODO__V1__SNOOZE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp later = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    later.seconds = event_now_us() / 1000000 + 4 * 3600;
    sn.reminder_id = ids[1];
    sn.remind_at = &later;
    assert_int_equal(harness_command("SnoozeReminder", &sn.base, auth, NULL, &res), GRPC_STATUS_OK);
    Todo__V1__CancelReminderRequest cn = TODO__V1__CANCEL_REMINDER_REQUEST__INIT;
    cn.reminder_id = ids[2];
    assert_int_equal(harness_command("CancelReminder", &cn.base, auth, &r, &res), GRPC_STATUS_OK);
    ls = list_reminders(auth, NULL, false, 0, NULL, r->consistency_token, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_reminders, 2);
    assert_string_equal(ls->reminders[0]->id, ids[0]);
    assert_string_equal(ls->reminders[1]->id, ids[1]);
    assert_int_equal(ls->reminders[1]->remind_at->seconds, later.seconds);
    assert_int_equal(ls->reminders[1]->version, 2);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    ls = list_reminders(auth, NULL, true, 0, NULL, r->consistency_token, &code, &res);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(ls->n_reminders, 3);
    assert_string_equal(ls->reminders[0]->id, ids[2]);
    assert_int_equal(ls->reminders[0]->status, TODO__V1__REMINDER_STATUS__REMINDER_STATUS_CANCELLED);
    assert_int_equal(ls->reminders[0]->version, 2);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* A deleted task's reminders are not shown (the task's token: the other stream). */
    Todo__V1__DeleteTaskRequest del = TODO__V1__DELETE_TASK_REQUEST__INIT;
    del.task_id = t1;
    assert_int_equal(harness_command("DeleteTask", &del.base, auth, &r, &res), GRPC_STATUS_OK);
    ls = list_reminders(auth, NULL, true, 0, NULL, r->consistency_token, &code, &res);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_reminders, 1);
    assert_string_equal(ls->reminders[0]->task_id, t2);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* todoctl: schedule one on t2 and list them (the list does not wait for
     * the projection: poll). */
    char args[256], out[4096];
    snprintf(args, sizeof args, "remind %s +3h --channel sms --user %s", t2, user);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "scheduled"));
    snprintf(args, sizeof args, "reminders --task %s --user %s", t2, user);
    long long until = harness_now_ms() + 10000;
    do {
        assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    } while (strstr(out, " sms ") == NULL && harness_now_ms() < until && (harness_sleep_ms(50), 1));
    assert_non_null(strstr(out, " sms "));
    assert_null(strstr(out, "cancelled")); /* not without --all */
    snprintf(args, sizeof args, "remind %s someday --user %s", t2, user);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "someday"));

    /* Bad input. */
    assert_null(list_reminders(auth, "nope", false, 0, NULL, NULL, &code, &res));
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "task_id"));
    assert_null(list_reminders(auth, NULL, false, 101, NULL, NULL, &code, &res));
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "page_size"));
    assert_null(list_reminders(auth, NULL, false, 0, "Zm9v", NULL, &code, &res));
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "page_token"));
    free(t1);
    free(t2);
    free(auth);
    free(oauth);
}

/* RestoreReminder and TriggerReminder: the saga's and the scheduler's
 * commands, with a service token; a user's token is refused. */
static void reminders_are_restored_and_fired_once(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "fire");
    char *auth = harness_bearer(user, 600, NULL), *svc = harness_service_bearer(user);
    char *task = new_task(auth);
    Todo__V1__CommandReply *r;
    grpcx_result res;
    char id[37];
    assert_int_equal(schedule(auth, task, 1, TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH, &r, &res),
                     GRPC_STATUS_OK);
    snprintf(id, sizeof id, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Not due yet; not cancelled, so nothing to restore. */
    Todo__V1__TriggerReminderRequest tr = TODO__V1__TRIGGER_REMINDER_REQUEST__INIT;
    tr.reminder_id = id;
    /* Both are todo-saga's (a service token): a user's own token is refused. */
    assert_int_equal(harness_command("TriggerReminder", &tr.base, auth, NULL, &res), GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(res.message, "TriggerReminder is for todo's own services"));
    assert_int_equal(harness_command("TriggerReminder", &tr.base, svc, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "not due yet"));
    Todo__V1__RestoreReminderRequest rr = TODO__V1__RESTORE_REMINDER_REQUEST__INIT;
    rr.reminder_id = id;
    assert_int_equal(harness_command("RestoreReminder", &rr.base, auth, NULL, &res), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(harness_command("RestoreReminder", &rr.base, svc, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);

    /* Cancel, restore: scheduled again at its time, version 3. */
    Todo__V1__CancelReminderRequest cn = TODO__V1__CANCEL_REMINDER_REQUEST__INIT;
    cn.reminder_id = id;
    assert_int_equal(harness_command("CancelReminder", &cn.base, auth, NULL, &res), GRPC_STATUS_OK);
    assert_int_equal(harness_command("RestoreReminder", &rr.base, svc, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.reminders where id = $1::uuid"
                                                " and status = 'scheduled'", id), 1);

    /* Due now: two triggers naming version 3, one wins. */
    harness_sleep_ms(1100);
    tr.expected_version = 3;
    assert_int_equal(harness_command("TriggerReminder", &tr.base, svc, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 4);
    Todo__V1__ListRemindersResponse *ls;
    grpc_status_code code;
    ls = list_reminders(auth, task, true, 0, NULL, r->consistency_token, &code, &res);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_reminders, 1);
    assert_int_equal(ls->reminders[0]->status, TODO__V1__REMINDER_STATUS__REMINDER_STATUS_FIRED);
    assert_non_null(ls->reminders[0]->triggered_at);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    assert_int_equal(harness_command("TriggerReminder", &tr.base, svc, NULL, &res), GRPC_STATUS_ABORTED);
    tr.expected_version = 0;
    assert_int_equal(harness_command("TriggerReminder", &tr.base, svc, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                                " and event_type = 'reminder.triggered'", id), 1);

    /* A completed task's reminders do not fire. */
    char *task2 = new_task(auth);
    assert_int_equal(schedule(auth, task2, 1, TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_SMS, &r, &res),
                     GRPC_STATUS_OK);
    tr.reminder_id = r->id;
    Todo__V1__CompleteTaskRequest cq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    cq.task_id = task2;
    assert_int_equal(harness_command("CompleteTask", &cq.base, auth, NULL, &res), GRPC_STATUS_OK);
    harness_sleep_ms(1100);
    assert_int_equal(harness_command("TriggerReminder", &tr.base, svc, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "completed"));
    protobuf_c_message_free_unpacked(&r->base, NULL);
    free(task);
    free(task2);
    free(auth);
    free(svc);
}

/* CreateNextOccurrence: daily at the template's time, in its zone; once per
 * completed task; nothing once the series has ended. */
static void the_next_occurrence_follows_the_rule_until_the_series_ends(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "next");
    char *auth = harness_bearer(user, 600, NULL), *svc = harness_service_bearer(user);
    Todo__V1__CreateTaskRequest ct = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Todo__V1__CommandReply *r;
    grpcx_result res;
    due.seconds = (event_now_us() / 1000000 / 86400 + 2) * 86400 + 7 * 3600; /* the day after tomorrow, 08:00 Berlin */
    ct.title = "water the plants";
    ct.due_at = &due;
    ct.category = "home";
    assert_int_equal(harness_command("CreateTask", &ct.base, auth, &r, &res), GRPC_STATUS_OK);
    char tpl[37];
    snprintf(tpl, sizeof tpl, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    Todo__V1__RecurrenceRule rule = TODO__V1__RECURRENCE_RULE__INIT;
    rule.frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY;
    rule.time_zone = "Europe/Berlin";
    rule.max_occurrences = 3;
    Todo__V1__CreateRecurringPatternRequest cr = TODO__V1__CREATE_RECURRING_PATTERN_REQUEST__INIT;
    cr.task_id = tpl;
    cr.rule = &rule;
    assert_int_equal(harness_command("CreateRecurringPattern", &cr.base, auth, &r, &res), GRPC_STATUS_OK);
    char pattern[37];
    snprintf(pattern, sizeof pattern, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    Todo__V1__CreateNextOccurrenceRequest nx = TODO__V1__CREATE_NEXT_OCCURRENCE_REQUEST__INIT;
    nx.pattern_id = pattern;
    nx.completed_task_id = tpl;
    assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, auth, NULL, &res), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "not completed"));

    char prev[37];
    snprintf(prev, sizeof prev, "%s", tpl);
    for (int occurrence = 2; occurrence <= 4; occurrence++) {
        Todo__V1__CompleteTaskRequest cq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
        cq.task_id = prev;
        assert_int_equal(harness_command("CompleteTask", &cq.base, auth, NULL, &res), GRPC_STATUS_OK);
        char rid[64];
        snprintf(rid, sizeof rid, "next-%d", occurrence);
        nx.completed_task_id = prev;
        nx.request_id = rid;
        assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, &r, &res), GRPC_STATUS_OK);
        if (occurrence == 4) { /* max_occurrences 3: over */
            assert_string_equal(r->id, "");
            protobuf_c_message_free_unpacked(&r->base, NULL);
            break;
        }
        char next[37];
        snprintf(next, sizeof next, "%s", r->id);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        /* One day later each time, same title and category, in the series. */
        assert_int_equal(harness_scalar(harness_db, "select extract(epoch from due_at)::bigint from write.tasks"
                                                    " where id = $1::uuid", next),
                         due.seconds + 86400 * (occurrence - 1));
        assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where id = $1::uuid and"
                                                    " title = 'water the plants' and category = 'home'"
                                                    " and completed_at is null", next), 1);
        assert_int_equal(harness_scalar(harness_db, "select occurrence from write.tasks where id = $1::uuid", next),
                         occurrence);
        /* The same request again: the same answer; another request: ALREADY_EXISTS. */
        assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, &r, &res), GRPC_STATUS_OK);
        assert_string_equal(r->id, next);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        nx.request_id = "";
        assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, NULL, &res), GRPC_STATUS_ALREADY_EXISTS);
        snprintf(prev, sizeof prev, "%s", next);
    }
    /* A task outside the series is refused. */
    char *stranger = new_task(auth);
    nx.completed_task_id = stranger;
    nx.request_id = "";
    assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "completed_task_id"));
    free(stranger);
    free(auth);
    free(svc);
}

/* A command sent on a thread of its own (it may wait on a row lock). */
typedef struct pending {
    pthread_t th;
    const char *rpc;
    const ProtobufCMessage *req;
    const char *auth;
    grpc_status_code code;
    grpcx_result res;
} pending;

static void *pending_main(void *arg)
{
    pending *p = arg;
    p->code = harness_command(p->rpc, p->req, p->auth, NULL, &p->res);
    return NULL;
}

static void pending_start(pending *p, const char *rpc, const ProtobufCMessage *req, const char *auth)
{
    p->rpc = rpc;
    p->req = req;
    p->auth = auth;
    assert_int_equal(pthread_create(&p->th, NULL, pending_main, p), 0);
}

/* Waits until n backends of todo-command wait on a lock. */
static void await_lock_waiters(long long n)
{
    long long until = harness_now_ms() + 15000;
    while (harness_scalar(harness_db, "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                                      " and usename = $1", "todo_command") < n) {
        if (harness_now_ms() > until) fail_msg("no command waited on the lock within 15 s");
        harness_sleep_ms(20);
    }
}

static PGconn *locker(const char *sql, const char *id)
{
    PGconn *c = PQconnectdb(getenv("TODO_PG_URL"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "begin"));
    const char *p[1] = {id};
    PGresult *r = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
    assert_true(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    return c;
}

/* Issue 15: a reminder never fires for a task whose completion was
 * acknowledged. The trigger and CompleteTask are ordered on the task's row. */
static void a_reminder_never_fires_after_its_task_completed(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "order");
    char *auth = harness_bearer(user, 600, NULL), *svc = harness_service_bearer(user);
    char *task = new_task(auth), *task2 = new_task(auth);
    char id[37], id2[37];
    Todo__V1__CommandReply *r;
    grpcx_result res;
    assert_int_equal(schedule(auth, task, 1, TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH, &r, &res),
                     GRPC_STATUS_OK);
    snprintf(id, sizeof id, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(schedule(auth, task2, 1, TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH, &r, &res),
                     GRPC_STATUS_OK);
    snprintf(id2, sizeof id2, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    harness_sleep_ms(2100); /* both due */

    /* 1. The trigger waits on the reminder's row (held here); CompleteTask
     * comes meanwhile. It must not be acknowledged before the trigger is
     * done, and the event store must show the reminder firing first. */
    PGconn *hold = locker("select 1 from write.reminders where id = $1::uuid for update", id);
    Todo__V1__TriggerReminderRequest tr = TODO__V1__TRIGGER_REMINDER_REQUEST__INIT;
    tr.reminder_id = id;
    tr.request_id = "order-trigger-1";
    pending trig, done;
    pending_start(&trig, "TriggerReminder", &tr.base, svc);
    await_lock_waiters(1);
    Todo__V1__CompleteTaskRequest cq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    cq.task_id = task;
    pending_start(&done, "CompleteTask", &cq.base, auth);
    harness_sleep_ms(500);
    /* Before the fix CompleteTask answered here, and the trigger wrote
     * reminder.triggered after task.completed. */
    PQclear(PQexec(hold, "commit"));
    PQfinish(hold);
    pthread_join(trig.th, NULL);
    pthread_join(done.th, NULL);
    assert_int_equal(done.code, GRPC_STATUS_OK);
    assert_int_equal(trig.code, GRPC_STATUS_OK);
    const char *order_sql = "select count(*) from write.events c join write.events f on f.event_type = 'reminder.triggered'"
                            " and f.aggregate_id = (select id from write.reminders where task_id = c.aggregate_id)"
                            " where c.event_type = 'task.completed' and c.aggregate_id = $1::uuid"
                            " and f.position < c.position";
    assert_int_equal(harness_scalar(harness_db, order_sql, task), 1);

    /* 2. The task's completion commits while the trigger waits for it (a
     * writer holding the task's row completes it): the trigger writes
     * nothing and says why. Before the fix it did not wait and fired. */
    hold = locker("update write.tasks set completed_at = now() where id = $1::uuid", task2);
    tr.reminder_id = id2;
    tr.request_id = ""; /* as the scheduler sends it: no request id, the version it saw */
    tr.expected_version = 1;
    pending_start(&trig, "TriggerReminder", &tr.base, svc);
    harness_sleep_ms(500);
    PQclear(PQexec(hold, "commit"));
    PQfinish(hold);
    pthread_join(trig.th, NULL);
    assert_int_equal(trig.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(trig.res.message, "is completed"));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                                " and event_type = 'reminder.triggered'", id2), 0);
    /* That completion wrote no event: put the row back as the events say,
     * so the write and read models agree again (test_rebuild compares them). */
    assert_int_equal(harness_scalar(harness_db, "with u as (update write.tasks set completed_at = null where id = $1::uuid"
                                                " returning 1) select count(*) from u", task2), 1);
    free(task);
    free(task2);
    free(auth);
    free(svc);
}

/* Issue 15: a recurring series never ends by accident. A retracted
 * occurrence (the saga's compensation after a reopen) frees its completed
 * task's slot; a completed task keeps its live next occurrence; an
 * occurrence names its pattern on the read side. */
static void a_retracted_occurrence_leaves_the_series_alive(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "retract");
    char *auth = harness_bearer(user, 600, NULL), *svc = harness_service_bearer(user);
    Todo__V1__CreateTaskRequest ct = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Todo__V1__CommandReply *r;
    grpcx_result res;
    due.seconds = (event_now_us() / 1000000 / 86400 + 2) * 86400 + 7 * 3600;
    ct.title = "stretch";
    ct.due_at = &due;
    assert_int_equal(harness_command("CreateTask", &ct.base, auth, &r, &res), GRPC_STATUS_OK);
    char tpl[37], pattern[37], n1[37], n2[37];
    snprintf(tpl, sizeof tpl, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    Todo__V1__RecurrenceRule rule = TODO__V1__RECURRENCE_RULE__INIT;
    rule.frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY;
    rule.time_zone = "Europe/Berlin";
    Todo__V1__CreateRecurringPatternRequest cr = TODO__V1__CREATE_RECURRING_PATTERN_REQUEST__INIT;
    cr.task_id = tpl;
    cr.rule = &rule;
    assert_int_equal(harness_command("CreateRecurringPattern", &cr.base, auth, &r, &res), GRPC_STATUS_OK);
    snprintf(pattern, sizeof pattern, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    Todo__V1__CompleteTaskRequest cq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    cq.task_id = tpl;
    assert_int_equal(harness_command("CompleteTask", &cq.base, auth, NULL, &res), GRPC_STATUS_OK);
    Todo__V1__CreateNextOccurrenceRequest nx = TODO__V1__CREATE_NEXT_OCCURRENCE_REQUEST__INIT;
    nx.pattern_id = pattern;
    nx.completed_task_id = tpl;
    nx.request_id = "retract-next-1";
    assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, &r, &res), GRPC_STATUS_OK);
    snprintf(n1, sizeof n1, "%s", r->id);

    /* The occurrence carries its series on the read side (it was empty). */
    Todo__V1__GetTaskRequest g = TODO__V1__GET_TASK_REQUEST__INIT;
    Todo__V1__Task *t;
    g.task_id = n1;
    g.consistency_token = r->consistency_token;
    assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTask", &g.base, &todo__v1__task__descriptor,
                                 auth, 15000, (ProtobufCMessage **)&t, &res),
                     GRPC_STATUS_OK);
    assert_string_equal(t->recurring_pattern_id, pattern);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Only todo's services retract; not while the task is completed. */
    Todo__V1__RetractOccurrenceRequest rt = TODO__V1__RETRACT_OCCURRENCE_REQUEST__INIT;
    rt.task_id = n1;
    rt.request_id = "retract-1";
    assert_int_equal(harness_command("RetractOccurrence", &rt.base, auth, NULL, &res), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(harness_command("RetractOccurrence", &rt.base, svc, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "completed again"));
    rt.task_id = tpl;
    assert_int_equal(harness_command("RetractOccurrence", &rt.base, svc, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "not an occurrence"));

    /* Reopened: retracted (a retry answers the same); gone: NOT_FOUND. */
    Todo__V1__ReopenTaskRequest ro = TODO__V1__REOPEN_TASK_REQUEST__INIT;
    ro.task_id = tpl;
    assert_int_equal(harness_command("ReopenTask", &ro.base, auth, NULL, &res), GRPC_STATUS_OK);
    rt.task_id = n1;
    rt.request_id = "retract-2";
    assert_int_equal(harness_command("RetractOccurrence", &rt.base, svc, NULL, &res), GRPC_STATUS_OK);
    assert_int_equal(harness_command("RetractOccurrence", &rt.base, svc, NULL, &res), GRPC_STATUS_OK);
    rt.request_id = "retract-3";
    assert_int_equal(harness_command("RetractOccurrence", &rt.base, svc, NULL, &res), GRPC_STATUS_NOT_FOUND);

    /* Completed again: a new next occurrence (before the fix: ALREADY_EXISTS,
     * and the series was over). */
    assert_int_equal(harness_command("CompleteTask", &cq.base, auth, NULL, &res), GRPC_STATUS_OK);
    nx.request_id = "retract-next-2";
    assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, &r, &res), GRPC_STATUS_OK);
    snprintf(n2, sizeof n2, "%s", r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_string_not_equal(n2, n1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid"
                                                " and deleted_at is null", tpl), 1);
    nx.request_id = "";
    assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, NULL, &res), GRPC_STATUS_ALREADY_EXISTS);
    /* The retracted one cannot come back beside it. */
    Todo__V1__RestoreTaskRequest rs = TODO__V1__RESTORE_TASK_REQUEST__INIT;
    rs.task_id = n1;
    assert_int_equal(harness_command("RestoreTask", &rs.base, auth, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, n2));

    /* A retraction racing a completion: the completion waits for the
     * retraction's share lock (reopen, hold the occurrence's row, retract,
     * complete): the retraction wins, the next completion makes a new one. */
    assert_int_equal(harness_command("ReopenTask", &ro.base, auth, NULL, &res), GRPC_STATUS_OK);
    PGconn *hold = locker("select 1 from write.tasks where id = $1::uuid for update", n2);
    rt.task_id = n2;
    rt.request_id = "retract-4";
    pending retract, done;
    pending_start(&retract, "RetractOccurrence", &rt.base, svc);
    await_lock_waiters(1);
    pending_start(&done, "CompleteTask", &cq.base, auth);
    await_lock_waiters(2); /* CompleteTask waits on the retraction's share lock of the task */
    PQclear(PQexec(hold, "commit"));
    PQfinish(hold);
    pthread_join(retract.th, NULL);
    pthread_join(done.th, NULL);
    assert_int_equal(retract.code, GRPC_STATUS_OK);
    assert_int_equal(done.code, GRPC_STATUS_OK);
    nx.request_id = "retract-next-3";
    assert_int_equal(harness_command("CreateNextOccurrence", &nx.base, svc, &r, &res), GRPC_STATUS_OK);
    assert_string_not_equal(r->id, n2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid"
                                                " and deleted_at is null", tpl), 1);
    free(auth);
    free(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reminders_can_be_scheduled_snoozed_and_cancelled),
        cmocka_unit_test(reminders_need_an_open_task_and_are_bounded),
        cmocka_unit_test(a_task_becomes_the_template_of_a_series),
        cmocka_unit_test(reminders_are_listed_in_due_order_as_they_change),
        cmocka_unit_test(reminders_are_restored_and_fired_once),
        cmocka_unit_test(the_next_occurrence_follows_the_rule_until_the_series_ends),
        cmocka_unit_test(a_reminder_never_fires_after_its_task_completed),
        cmocka_unit_test(a_retracted_occurrence_leaves_the_series_alive),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
