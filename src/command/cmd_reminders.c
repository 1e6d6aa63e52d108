/*
 * cmd_reminders: the reminder aggregate and its commands.
 *
 *   ScheduleReminder  a reminder for a task of the caller (NOT_FOUND when the
 *                     task is absent or deleted, FAILED_PRECONDITION when it
 *                     is completed or already has MAX_ACTIVE scheduled
 *                     reminders), at a future time, on a channel.
 *   CancelReminder    a scheduled or fired reminder becomes cancelled.
 *   SnoozeReminder    a scheduled or fired reminder is due again later.
 *   RestoreReminder   a cancelled reminder is scheduled again, at its time
 *                     (the task-completion saga's compensation; allowed on
 *                     a completed task: the scheduler does not fire
 *                     reminders of completed or deleted tasks).
 *   TriggerReminder   a due scheduled reminder fires (todo-saga's
 *                     scheduler); with expected_version, two schedulers
 *                     racing for one reminder fire it once.
 *
 * Reminder events go to reminders.events.v1; todo-saga's scheduler fires
 * them from write.reminders.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_core.h"
#include "cmd_validate.h"
#include "event.h"
#include "pgx.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

#define MAX_ACTIVE 10 /* scheduled reminders per task */

typedef struct reminder {
    char id[37];
    char task_id[37];
    int64_t remind_us;
    int channel;                      /* the first of channels */
    int channels[CMD_MAX_CHANNELS];
    size_t n_channels;
    const char *status;   /* "scheduled", "cancelled", "fired" */
    int64_t created_us;
} reminder;

static int load_reminder(cmd_ctx *x, const char *id, void **agg, int64_t *version, todo_err *err)
{
    const char *p[2] = {id, x->user};
    PGresult *r = pgx_exec(x->t->pg,
                           "select task_id::text, (extract(epoch from remind_at) * 1000000)::bigint, channel, status,"
                           " version, (extract(epoch from created_at) * 1000000)::bigint,"
                           " array_to_string(coalesce(channels, array[channel]), ',')"
                           " from write.reminders where id = $1::uuid and user_id = $2",
                           2, p, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "reminder %s not found", id);
    }
    reminder *m = arena_calloc(x->a, sizeof *m);
    snprintf(m->id, sizeof m->id, "%s", id);
    snprintf(m->task_id, sizeof m->task_id, "%s", PQgetvalue(r, 0, 0));
    m->remind_us = cmd_store_us(r, 1, NULL);
    m->channel = atoi(PQgetvalue(r, 0, 2));
    m->status = arena_strdup(x->a, PQgetvalue(r, 0, 3));
    *version = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    m->created_us = cmd_store_us(r, 5, NULL);
    for (const char *c = PQgetvalue(r, 0, 6); *c != '\0' && m->n_channels < CMD_MAX_CHANNELS;) {
        m->channels[m->n_channels++] = atoi(c);
        c += strcspn(c, ",");
        c += *c == ',';
    }
    PQclear(r);
    *agg = m;
    return TODO_OK;
}

static void reminder_state(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                           const char *const **params, int *n)
{
    const reminder *m = agg;
    arena *a = x->a;
    const char **p = arena_alloc(a, 10 * sizeof *p);
    p[0] = m->id;
    p[1] = x->user;
    p[2] = cmd_store_time(a, true, m->remind_us);
    p[3] = arena_printf(a, "%d", m->channel);
    p[4] = m->status;
    p[5] = arena_printf(a, "%" PRId64, version);
    p[6] = cmd_store_time(a, true, now);
    if (version == 1) {
        p[7] = m->task_id;
        char *list = arena_alloc(a, 8 * CMD_MAX_CHANNELS + 3);
        size_t len = 0;
        list[len++] = '{';
        for (size_t i = 0; i < m->n_channels; i++)
            len += (size_t)snprintf(list + len, 8, "%s%d", i > 0 ? "," : "", m->channels[i]);
        list[len++] = '}';
        list[len] = '\0';
        p[8] = list;
        *sql = "insert into write.reminders (id, user_id, remind_at, channel, status, version, updated_at, task_id,"
               " created_at, channels) values ($1::uuid, $2, $3::timestamptz, $4::smallint, $5, $6::bigint,"
               " $7::timestamptz, $8::uuid, $7::timestamptz, $9::smallint[]) returning 1";
        *n = 9;
    } else {
#define REMINDER_UPDATE                                                                            \
    "update write.reminders set remind_at = $3::timestamptz, channel = $4::smallint, status = $5,"  \
    " version = $6::bigint, updated_at = $7::timestamptz"                                            \
    " where id = $1::uuid and user_id = $2 and version = $6::bigint - 1"
        *sql = REMINDER_UPDATE " returning 1";
        *n = 7;
        if (strcmp(m->status, "fired") == 0) {
            /* A reminder fires only while its task is open, decided under a
             * share lock on the task's row: a CompleteTask running meanwhile
             * waits for this save (its task.completed comes after the
             * reminder.triggered), or committed first and this writes
             * nothing (cmd_mutate loads again and change_trigger refuses). */
            p[7] = m->task_id;
            *sql = REMINDER_UPDATE " and exists (select 1 from write.tasks t where t.id = $8::uuid and t.user_id = $2"
                                   " and t.completed_at is null and t.deleted_at is null for share of t) returning 1";
            *n = 8;
        }
#undef REMINDER_UPDATE
    }
    *params = p;
}

static const cmd_kind reminder_kind = {"reminder", load_reminder, reminder_state};

int cmd_schedule_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__ScheduleReminderRequest *rq = (const Todo__V1__ScheduleReminderRequest *)req;
    Todo__V1__ReminderScheduled ev = TODO__V1__REMINDER_SCHEDULED__INIT;
    cmd_ctx x;
    reminder m;
    int64_t now = event_now_us();
    int rc;

    int channels[CMD_MAX_CHANNELS + 1], chosen[CMD_MAX_CHANNELS];
    size_t n_channels;
    if ((rc = cmd_begin(&x, c, "ScheduleReminder", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("task_id", rq->task_id, err)) != 0 ||
        (rc = cmd_validate_remind_at(rq->remind_at, now, err)) != 0)
        return rc;
    if (rq->n_channels > CMD_MAX_CHANNELS + 1)
        return todo_err_set(err, TODO_EINVAL, "channels: at most %d", CMD_MAX_CHANNELS);
    for (size_t i = 0; i < rq->n_channels; i++) channels[i] = (int)rq->channels[i];
    if ((rc = cmd_validate_channels((int)rq->channel, channels, rq->n_channels, chosen, &n_channels, err)) != 0)
        return rc;
    if ((rc = cmd_replay(&x, resp, err)) != 0 || *resp != NULL) return rc;
    const cmd_task *t;
    if ((rc = cmd_load_live_task(&x, rq->task_id, &t, err)) != 0) return rc;
    if (t->completed)
        return todo_err_set(err, TODO_EPRECOND, "task %s is completed; reopen it to schedule reminders", t->id);
    const char *p[1] = {t->id};
    PGresult *r = pgx_exec(x.t->pg, "select count(*) from write.reminders where task_id = $1::uuid and status = 'scheduled'",
                           1, p, err);
    if (r == NULL) return cmd_storage_error(&x, err);
    long active = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (active >= MAX_ACTIVE)
        return todo_err_set(err, TODO_EPRECOND, "task %s already has %d scheduled reminders", t->id, MAX_ACTIVE);

    memset(&m, 0, sizeof m);
    memcpy(m.channels, chosen, sizeof chosen);
    m.n_channels = n_channels;
    if (text_uuid_v4(m.id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a new id");
    snprintf(m.task_id, sizeof m.task_id, "%s", t->id);
    m.remind_us = event_timestamp_us(rq->remind_at);
    m.channel = m.channels[0];
    m.status = "scheduled";
    m.created_us = now;
    ev.reminder_id = m.id;
    ev.task_id = m.task_id;
    ev.remind_at = event_timestamp(x.a, m.remind_us);
    ev.channel = (Todo__V1__ReminderChannel)m.channel;
    ev.n_channels = m.n_channels;
    ev.channels = arena_alloc(x.a, m.n_channels * sizeof *ev.channels);
    for (size_t i = 0; i < m.n_channels; i++) ev.channels[i] = (Todo__V1__ReminderChannel)m.channels[i];
    return cmd_create(&x, &reminder_kind, m.id, &m, now, "reminder.scheduled", 1, &ev.base, resp, err);
}

static int change_cancel(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                         ProtobufCMessage **event, todo_err *err)
{
    reminder *m = agg;
    (void)arg;
    (void)now;
    (void)schema;
    if (strcmp(m->status, "cancelled") == 0)
        return todo_err_set(err, TODO_EPRECOND, "reminder %s is already cancelled", m->id);
    Todo__V1__ReminderCancelled *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__reminder_cancelled__init(ev);
    m->status = "cancelled";
    ev->reminder_id = m->id;
    ev->task_id = m->task_id;
    ev->reason = "cancelled by the user";
    *type = "reminder.cancelled";
    *event = &ev->base;
    return TODO_OK;
}

static int change_snooze(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                         ProtobufCMessage **event, todo_err *err)
{
    reminder *m = agg;
    const Google__Protobuf__Timestamp *at = arg;
    (void)now;
    (void)schema;
    if (strcmp(m->status, "cancelled") == 0)
        return todo_err_set(err, TODO_EPRECOND, "reminder %s is cancelled; schedule a new one", m->id);
    Todo__V1__ReminderSnoozed *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__reminder_snoozed__init(ev);
    m->status = "scheduled";
    m->remind_us = event_timestamp_us(at);
    ev->reminder_id = m->id;
    ev->task_id = m->task_id;
    ev->remind_at = event_timestamp(x->a, m->remind_us);
    *type = "reminder.snoozed";
    *event = &ev->base;
    return TODO_OK;
}

int cmd_cancel_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__CancelReminderRequest *rq = (const Todo__V1__CancelReminderRequest *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, "CancelReminder", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("reminder_id", rq->reminder_id, err)) != 0) return rc;
    return cmd_mutate(&x, &reminder_kind, rq->reminder_id, 0, change_cancel, NULL, resp, err);
}

int cmd_snooze_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__SnoozeReminderRequest *rq = (const Todo__V1__SnoozeReminderRequest *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, "SnoozeReminder", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("reminder_id", rq->reminder_id, err)) != 0 ||
        (rc = cmd_validate_remind_at(rq->remind_at, event_now_us(), err)) != 0)
        return rc;
    return cmd_mutate(&x, &reminder_kind, rq->reminder_id, 0, change_snooze, rq->remind_at, resp, err);
}

static int change_restore(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                          ProtobufCMessage **event, todo_err *err)
{
    reminder *m = agg;
    (void)arg;
    (void)now;
    (void)schema;
    if (strcmp(m->status, "cancelled") != 0)
        return todo_err_set(err, TODO_EPRECOND, "reminder %s is %s, not cancelled", m->id, m->status);
    Todo__V1__ReminderRestored *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__reminder_restored__init(ev);
    m->status = "scheduled";
    ev->reminder_id = m->id;
    ev->task_id = m->task_id;
    ev->remind_at = event_timestamp(x->a, m->remind_us);
    *type = "reminder.restored";
    *event = &ev->base;
    return TODO_OK;
}

static int change_trigger(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                          ProtobufCMessage **event, todo_err *err)
{
    reminder *m = agg;
    const cmd_task *t;
    int rc;
    (void)arg;
    (void)schema;
    if (strcmp(m->status, "scheduled") != 0)
        return todo_err_set(err, TODO_EPRECOND, "reminder %s is %s, not scheduled", m->id, m->status);
    if (m->remind_us > now)
        return todo_err_set(err, TODO_EPRECOND, "reminder %s is not due yet (%.3f s left)", m->id,
                            (double)(m->remind_us - now) / 1e6);
    if ((rc = cmd_load_live_task(x, m->task_id, &t, err)) != 0) return rc;
    if (t->completed) return todo_err_set(err, TODO_EPRECOND, "task %s is completed: its reminders do not fire", t->id);
    Todo__V1__ReminderTriggered *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__reminder_triggered__init(ev);
    m->status = "fired";
    ev->reminder_id = m->id;
    ev->task_id = m->task_id;
    ev->remind_at = event_timestamp(x->a, m->remind_us);
    ev->triggered_at = event_timestamp(x->a, now);
    ev->channel = (Todo__V1__ReminderChannel)m->channel;
    ev->n_channels = m->n_channels;
    ev->channels = arena_alloc(x->a, m->n_channels * sizeof *ev->channels);
    for (size_t i = 0; i < m->n_channels; i++) ev->channels[i] = (Todo__V1__ReminderChannel)m->channels[i];
    *type = "reminder.triggered";
    *event = &ev->base;
    return TODO_OK;
}

int cmd_restore_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__RestoreReminderRequest *rq = (const Todo__V1__RestoreReminderRequest *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, "RestoreReminder", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("reminder_id", rq->reminder_id, err)) != 0) return rc;
    return cmd_mutate(&x, &reminder_kind, rq->reminder_id, 0, change_restore, NULL, resp, err);
}

int cmd_trigger_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__TriggerReminderRequest *rq = (const Todo__V1__TriggerReminderRequest *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, "TriggerReminder", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("reminder_id", rq->reminder_id, err)) != 0 ||
        (rc = cmd_validate_expected_version(rq->expected_version, err)) != 0)
        return rc;
    return cmd_mutate(&x, &reminder_kind, rq->reminder_id, rq->expected_version, change_trigger, NULL, resp, err);
}
