/* saga_completion: see saga_completion.h. */
#include "saga_completion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "auth.h"
#include "grpcx_status.h"
#include "event.h"
#include "pgx.h"
#include "saga_store.h"
#include "saga_templates.h"
#include "text.h"
#include "trace.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"

#define MAX_REMINDERS 16

/* How a command's status maps to a step's result. */
static saga_result of_status(grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_OK: return SAGA_OK;
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_INTERNAL:
    case GRPC_STATUS_ABORTED:
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
    case GRPC_STATUS_UNKNOWN: return SAGA_RETRY;
    default: return SAGA_ABORT;
    }
}

/* Calls rpc of TaskCommandService as the saga's user with request_id,
 * before deadline. *reply (may be NULL) gets the reply on OK. */
static grpc_status_code command(saga_exec *x, const char *rpc, ProtobufCMessage *req, int64_t deadline,
                                Todo__V1__CommandReply **reply, char err[SAGA_ERROR_MAX])
{
    saga_completion_app *app = saga_app(x);
    todo_err e;
    char path[96], auth[1200];
    grpcx_result res;
    char *tok = auth_issue_service(app->cfg->service_secret, "todo-saga", AUTH_SCOPE_INTERNAL, saga_ctx_get(x, "user_id"),
                                   600, (long)time(NULL), &e);
    if (tok == NULL) {
        snprintf(err, SAGA_ERROR_MAX, "cannot issue a token: %.200s", e.msg);
        return GRPC_STATUS_INTERNAL;
    }
    snprintf(auth, sizeof auth, "Bearer %s", tok);
    free(tok);
    snprintf(path, sizeof path, "/todo.v1.TaskCommandService/%s", rpc);
    int64_t left = deadline - saga_now_ms();
    if (left < 1) left = 1;
    ProtobufCMessage *resp = NULL;
    /* The saga's trace, correlation and cause follow it into todo-command:
     * the events the call writes name the task.completed event (the saga's
     * id) as their cause. */
    trace_ctx span;
    char tp[56];
    trace_child(trace_current(), &span);
    trace_format(&span, tp);
    const char *corr = saga_ctx_get(x, "correlation_id");
    grpcx_md md[3] = {{"traceparent", tp}, {"x-causation-id", saga_exec_record(x)->id},
                      {"x-correlation-id", corr != NULL && corr[0] != '\0' ? corr : saga_exec_record(x)->id}};
    grpc_status_code code = grpcx_unary_md(app->command, path, req, &todo__v1__command_reply__descriptor, auth, md, 3,
                                           (int)left, &resp, &res);
    if (code == GRPC_STATUS_OK && reply != NULL) *reply = (Todo__V1__CommandReply *)resp;
    else if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    if (code != GRPC_STATUS_OK) snprintf(err, SAGA_ERROR_MAX, "%s: %s (%.200s)", rpc, grpcx_code_name(code), res.message);
    return code;
}

/* The reminder ids in the context ("a,b,c"). */
static int reminders(saga_exec *x, char ids[MAX_REMINDERS][37])
{
    const char *s = saga_ctx_get(x, "reminders");
    int n = 0;
    while (s != NULL && *s != '\0' && n < MAX_REMINDERS) {
        size_t len = strcspn(s, ",");
        snprintf(ids[n++], 37, "%.*s", (int)(len < 36 ? len : 36), s);
        s += len + (s[len] == ',');
    }
    return n;
}

static saga_result find_reminders(saga_exec *x, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    saga_completion_app *app = saga_app(x);
    todo_err e;
    (void)deadline;
    const char *p[1] = {saga_ctx_get(x, "task_id")};
    PGresult *r = pgx_exec(app->pg,
                           "select coalesce(string_agg(id::text, ',' order by remind_at), '') from"
                           " (select id, remind_at from write.reminders where task_id = $1::uuid and status = 'scheduled'"
                           "  order by remind_at limit 16) s",
                           1, p, &e);
    if (r == NULL) {
        snprintf(err, SAGA_ERROR_MAX, "reading reminders: %.250s", e.msg);
        return SAGA_RETRY; /* the database will be back */
    }
    int rc = saga_ctx_set(x, "reminders", PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc == TODO_OK ? SAGA_OK : SAGA_ABORT;
}

/* CancelReminder of id under this saga's request id for it. */
static grpc_status_code cancel_one(saga_exec *x, const char *id, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    Todo__V1__CancelReminderRequest rq = TODO__V1__CANCEL_REMINDER_REQUEST__INIT;
    char rid[160];
    snprintf(rid, sizeof rid, "saga:%s:cancel:%s", saga_exec_record(x)->id, id);
    rq.request_id = rid;
    rq.reminder_id = (char *)id;
    return command(x, "CancelReminder", &rq.base, deadline, NULL, err);
}

static saga_result cancel_reminders(saga_exec *x, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    char ids[MAX_REMINDERS][37], cancelled[MAX_REMINDERS * 37 + 1] = "";
    int n = reminders(x, ids);
    for (int i = 0; i < n; i++) {
        grpc_status_code code = cancel_one(x, ids[i], deadline, err);
        if (code == GRPC_STATUS_OK) {
            if (cancelled[0] != '\0') strcat(cancelled, ",");
            strcat(cancelled, ids[i]);
        } else if (code != GRPC_STATUS_FAILED_PRECONDITION && code != GRPC_STATUS_NOT_FOUND) {
            return of_status(code); /* cancelled by the user or fired meanwhile: not ours to cancel */
        }
    }
    err[0] = '\0';
    return saga_ctx_set(x, "cancelled", cancelled) == TODO_OK ? SAGA_OK : SAGA_ABORT;
}

/* Undo: every reminder this saga cancelled is restored. Asking to cancel
 * again under the same request id tells which ones those are (the first
 * answer is replayed); one never cancelled by this saga is cancelled now and
 * restored at once, which leaves it as it was. */
static saga_result restore_reminders(saga_exec *x, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    char ids[MAX_REMINDERS][37];
    int n = reminders(x, ids);
    for (int i = 0; i < n; i++) {
        grpc_status_code code = cancel_one(x, ids[i], deadline, err);
        if (code == GRPC_STATUS_FAILED_PRECONDITION || code == GRPC_STATUS_NOT_FOUND) continue; /* not ours */
        if (code != GRPC_STATUS_OK) return SAGA_RETRY;
        Todo__V1__RestoreReminderRequest rq = TODO__V1__RESTORE_REMINDER_REQUEST__INIT;
        char rid[160];
        snprintf(rid, sizeof rid, "saga:%s:restore:%.36s", saga_exec_record(x)->id, ids[i]);
        rq.request_id = rid;
        rq.reminder_id = ids[i];
        code = command(x, "RestoreReminder", &rq.base, deadline, NULL, err);
        if (code != GRPC_STATUS_OK && code != GRPC_STATUS_FAILED_PRECONDITION && code != GRPC_STATUS_NOT_FOUND)
            return SAGA_RETRY;
    }
    err[0] = '\0';
    return SAGA_OK;
}

/* CreateNextOccurrence under this saga's request id. */
static grpc_status_code next_one(saga_exec *x, int64_t deadline, Todo__V1__CommandReply **reply,
                                 char err[SAGA_ERROR_MAX])
{
    Todo__V1__CreateNextOccurrenceRequest rq = TODO__V1__CREATE_NEXT_OCCURRENCE_REQUEST__INIT;
    char rid[160];
    snprintf(rid, sizeof rid, "saga:%s:next", saga_exec_record(x)->id);
    rq.request_id = rid;
    rq.pattern_id = (char *)saga_ctx_get(x, "pattern_id");
    rq.completed_task_id = (char *)saga_ctx_get(x, "task_id");
    return command(x, "CreateNextOccurrence", &rq.base, deadline, reply, err);
}

static bool in_series(saga_exec *x)
{
    const char *p = saga_ctx_get(x, "pattern_id");
    return p != NULL && p[0] != '\0';
}

static saga_result next_occurrence(saga_exec *x, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    Todo__V1__CommandReply *reply = NULL;
    if (!in_series(x)) return saga_ctx_set(x, "occurrence_id", "") == TODO_OK ? SAGA_OK : SAGA_ABORT;
    grpc_status_code code = next_one(x, deadline, &reply, err);
    if (code == GRPC_STATUS_ALREADY_EXISTS) { /* an earlier completion of this task made it */
        err[0] = '\0';
        return saga_ctx_set(x, "occurrence_id", "") == TODO_OK ? SAGA_OK : SAGA_ABORT;
    }
    if (code != GRPC_STATUS_OK) return of_status(code);
    int rc = saga_ctx_set(x, "occurrence_id", reply->id); /* "": the series has ended */
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    return rc == TODO_OK ? SAGA_OK : SAGA_ABORT;
}

/* Undo: the occurrence this saga created, if it made one (its request
 * record names it; nothing is sent again, which would create one when the
 * first attempt never ran), is retracted: deleted unless the task it
 * follows is completed again by then, when it stays that completion's next
 * occurrence (todo-command decides that under the task's row lock). */
static saga_result delete_occurrence(saga_exec *x, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    saga_completion_app *app = saga_app(x);
    todo_err e;
    if (!in_series(x)) return SAGA_OK;
    char rid[160];
    snprintf(rid, sizeof rid, "saga:%s:next", saga_exec_record(x)->id);
    const char *p[2] = {saga_ctx_get(x, "user_id"), rid};
    PGresult *q = pgx_exec(app->pg,
                           "select aggregate_id::text from write.requests where user_id = $1 and request_id = $2"
                           " and rpc = 'CreateNextOccurrence'",
                           2, p, &e);
    if (q == NULL) {
        snprintf(err, SAGA_ERROR_MAX, "reading the request record: %.250s", e.msg);
        return SAGA_RETRY;
    }
    char made[37] = "";
    if (PQntuples(q) == 1) snprintf(made, sizeof made, "%s", PQgetvalue(q, 0, 0));
    PQclear(q);
    if (made[0] == '\0') return SAGA_OK; /* nothing was created by us */
    Todo__V1__RetractOccurrenceRequest rq = TODO__V1__RETRACT_OCCURRENCE_REQUEST__INIT;
    snprintf(rid, sizeof rid, "saga:%s:next:undo", saga_exec_record(x)->id);
    rq.request_id = rid;
    rq.task_id = made;
    grpc_status_code code = command(x, "RetractOccurrence", &rq.base, deadline, NULL, err);
    if (code == GRPC_STATUS_OK || code == GRPC_STATUS_NOT_FOUND || code == GRPC_STATUS_FAILED_PRECONDITION) {
        err[0] = '\0'; /* retracted; deleted already; or the task's live completion keeps it */
        return SAGA_OK;
    }
    return of_status(code) == SAGA_ABORT ? SAGA_ABORT : SAGA_RETRY;
}

static saga_result notify(saga_exec *x, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    saga_completion_app *app = saga_app(x);
    const saga_record *r = saga_exec_record(x);
    todo_err e;
    const char *p[1] = {saga_ctx_get(x, "task_id")};
    const char *occ = saga_ctx_get(x, "occurrence_id");
    bool next = occ != NULL && occ[0] != '\0';
    const char *qp[2] = {p[0], next ? occ : NULL};
    PGresult *q = pgx_exec(app->pg,
                           "select completed_at is not null, title, (select (extract(epoch from o.due_at) * 1000000)"
                           "::bigint from write.tasks o where o.id = $2::uuid) from write.tasks where id = $1::uuid",
                           2, qp, &e);
    if (q == NULL) {
        snprintf(err, SAGA_ERROR_MAX, "reading the task: %.250s", e.msg);
        return SAGA_RETRY;
    }
    bool completed = PQntuples(q) == 1 && PQgetvalue(q, 0, 0)[0] == 't';
    /* A title is at most 255 characters, up to 1,020 bytes: keep it whole,
     * and never cut inside a character (the webhook body is JSON). */
    char title[1024];
    const char *stored = PQntuples(q) == 1 ? PQgetvalue(q, 0, 1) : "";
    snprintf(title, sizeof title, "%.*s", (int)text_utf8_prefix(stored, sizeof title - 1), stored);
    int64_t next_due = PQntuples(q) == 1 && !PQgetisnull(q, 0, 2) ? strtoll(PQgetvalue(q, 0, 2), NULL, 10) : 0;
    PQclear(q);
    if (!completed) {
        snprintf(err, SAGA_ERROR_MAX, "task %s was reopened (or deleted) before the notification", p[0]);
        return SAGA_ABORT;
    }
    arena *a = arena_new();
    Todo__V1__SendNotification n = TODO__V1__SEND_NOTIFICATION__INIT;
    n.notification_id = (char *)r->id;
    n.recipient = (char *)saga_ctx_get(x, "user_id");
    n.channel = "default";
    saga_message msg = next ? saga_template_recurring_created(a, title, next_due) : saga_template_task_completed(a, title);
    n.subject = (char *)msg.subject;
    n.body = (char *)msg.body;
    n.task_id = (char *)p[0];
    char event_id[37];
    text_uuid_v4(event_id);
    char tp[56] = "";
    if (trace_current() != NULL) trace_format(trace_current(), tp);
    event_meta m = {.event_id = event_id, .event_type = "notification.requested", .source = "todo-saga",
                    .time_us = event_now_us(), .user_id = n.recipient, .aggregate_type = "notification",
                    .aggregate_id = r->id, .aggregate_version = 1, .schema_version = 1, .causation_id = r->id,
                    .correlation_id = saga_ctx_get(x, "correlation_id"), .traceparent = tp};
    /* Into the saga outbox: published in order with the saga's events. A
     * retried step may request it twice; the dispatcher delivers a
     * notification id once. */
    int rc = saga_outbox_add(app->pg, &m, &n.base, &e);
    arena_free(a);
    (void)deadline;
    if (rc != TODO_OK) {
        snprintf(err, SAGA_ERROR_MAX, "requesting the notification: %.250s", e.msg);
        return rc == TODO_EINVAL ? SAGA_ABORT : SAGA_RETRY;
    }
    return SAGA_OK;
}

/* What a step does, in the user's words. */
static const char *step_words(const char *step)
{
    if (strcmp(step, "cancel_reminders") == 0) return "cancelling its reminders";
    if (strcmp(step, "next_occurrence") == 0) return "creating the next task of its series";
    if (strcmp(step, "notify") == 0) return "sending the completion notice";
    if (strcmp(step, "find_reminders") == 0) return "finding its reminders";
    return "an operator's decision";
}

/* The undo of the first step, so the last compensation to run: the user is
 * told (in their inbox) that what follows a completion could not be done
 * and was undone, unless they caused it themselves (the task reopened or
 * deleted meanwhile: nothing to tell). One notification per saga (its id
 * derives from the saga's), however often this runs. */
static saga_result tell_user(saga_exec *x, int64_t deadline, char err[SAGA_ERROR_MAX])
{
    saga_completion_app *app = saga_app(x);
    const saga_record *r = saga_exec_record(x);
    todo_err e;
    (void)deadline;
    if (strstr(r->error, "was reopened (or deleted)") != NULL) return SAGA_OK;
    /* r->error: "step <name> failed after ..." (saga_core), or an
     * operator's reason. */
    char failed[32] = "";
    if (sscanf(r->error, "step %31s failed", failed) != 1) failed[0] = '\0';
    const char *p[2] = {saga_ctx_get(x, "task_id"), saga_ctx_get(x, "user_id")};
    PGresult *q = pgx_exec(app->pg, "select title from write.tasks where id = $1::uuid and user_id = $2", 2, p, &e);
    if (q == NULL) {
        snprintf(err, SAGA_ERROR_MAX, "reading the task: %.250s", e.msg);
        return SAGA_RETRY;
    }
    char title[1024];
    const char *stored = PQntuples(q) == 1 ? PQgetvalue(q, 0, 0) : "";
    snprintf(title, sizeof title, "%.*s", (int)text_utf8_prefix(stored, sizeof title - 1), stored);
    PQclear(q);
    arena *a = arena_new();
    char id[37], name[96], event_id[37];
    snprintf(name, sizeof name, "todo:saga-compensated:%s", r->id);
    text_name_uuid(name, id);
    text_uuid_v4(event_id);
    Todo__V1__SendNotification n = TODO__V1__SEND_NOTIFICATION__INIT;
    n.notification_id = id;
    n.recipient = (char *)p[1];
    n.channel = "in_app";
    saga_message msg = saga_template_saga_compensated(a, title, step_words(failed), failed[0] != '\0');
    n.subject = (char *)msg.subject;
    n.body = (char *)msg.body;
    n.task_id = (char *)p[0];
    char tp[56] = "";
    if (trace_current() != NULL) trace_format(trace_current(), tp);
    event_meta m = {.event_id = event_id, .event_type = "notification.requested", .source = "todo-saga",
                    .time_us = event_now_us(), .user_id = n.recipient, .aggregate_type = "notification",
                    .aggregate_id = id, .aggregate_version = 1, .schema_version = 1, .causation_id = r->id,
                    .correlation_id = saga_ctx_get(x, "correlation_id"), .traceparent = tp};
    int rc = saga_outbox_add(app->pg, &m, &n.base, &e);
    arena_free(a);
    if (rc != TODO_OK) {
        snprintf(err, SAGA_ERROR_MAX, "telling the user: %.250s", e.msg);
        return rc == TODO_EINVAL ? SAGA_ABORT : SAGA_RETRY;
    }
    return SAGA_OK;
}

static const saga_step_def steps[] = {
    /* 10 attempts from 500 ms doubling: about 4 minutes of an unavailable
     * dependency before a saga gives up and compensates. */
    {"find_reminders", find_reminders, tell_user, 5000, 10, 500},
    {"cancel_reminders", cancel_reminders, restore_reminders, 10000, 10, 500},
    {"next_occurrence", next_occurrence, delete_occurrence, 5000, 10, 500},
    {"notify", notify, NULL, 10000, 10, 500},
};

const saga_def saga_completion_def = {"task_completion", steps, sizeof steps / sizeof steps[0]};
