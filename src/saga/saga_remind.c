/* The reminder notifier role of todo-saga (see saga_proc.h): every
 * reminder.triggered becomes one notification request per channel of the
 * reminder (notification.requested into saga.outbox, delivered by the
 * dispatcher). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "event.h"
#include "log.h"
#include "pgx.h"
#include "saga_proc.h"
#include "saga_store.h"
#include "saga_templates.h"
#include "text.h"
#include "topic_names.h"
#include "trace.h"
#include "todo/v1/events.pb-c.h"

#define BATCH 50
#define MAX_CHANNELS 8

const char *saga_channel_name(int channel)
{
    switch (channel) {
    case TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL: return "email";
    case TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH: return "push";
    case TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_SMS: return "sms";
    case TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_IN_APP: return "in_app";
    default: return NULL;
    }
}

void saga_reminder_notification_id(const char *event_id, const char *channel, char out[37])
{
    char name[128];
    snprintf(name, sizeof name, "todo:reminder-notification:%s:%s", event_id, channel);
    text_name_uuid(name, out);
}

/* The requests of one reminder.triggered, in one transaction. A record
 * delivered again adds them again with the same notification ids: the
 * dispatcher delivers each id once. */
static int notify_reminder(saga_proc *p, PGconn *pg, const rd_kafka_message_t *m, void *ctx, todo_err *err)
{
    (void)ctx;
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    int rc = saga_proc_envelope(p, pg, m, "reminder.triggered", a, &env, err);
    if (rc != TODO_OK || env == NULL) { /* undecodable, the registry away, or not ours */
        arena_free(a);
        return rc;
    }
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    Todo__V1__ReminderTriggered *ev = todo__v1__reminder_triggered__unpack(&alloc, env->data.len, env->data.data);
    if (ev == NULL || !text_is_uuid(env->event_id) || !text_is_uuid(ev->reminder_id) || !text_is_uuid(ev->task_id) ||
        strcmp(ev->reminder_id, env->aggregate_id) != 0 || env->user_id[0] == '\0') {
        arena_free(a);
        return todo_err_set(err, TODO_EINVAL, "reminder.triggered payload does not decode or is inconsistent");
    }
    /* The channels: the list, or the single channel of an older event. */
    const char *names[MAX_CHANNELS];
    size_t n = 0;
    for (size_t i = 0; i <= ev->n_channels && n < MAX_CHANNELS; i++) {
        int c = i < ev->n_channels ? (int)ev->channels[i] : (ev->n_channels == 0 ? (int)ev->channel : 0);
        const char *name = saga_channel_name(c);
        bool seen = name == NULL;
        for (size_t k = 0; k < n && !seen; k++) seen = strcmp(names[k], name) == 0;
        if (!seen) names[n++] = name;
    }
    if (n == 0) {
        arena_free(a);
        return todo_err_set(err, TODO_EINVAL, "reminder.triggered names no known channel");
    }
    const char *q[2] = {ev->task_id, env->user_id};
    PGresult *r = pgx_exec(pg, "select title from write.tasks where id = $1::uuid and user_id = $2", 2, q, err);
    if (r == NULL) {
        arena_free(a);
        return err->code;
    }
    char title[1024];
    const char *stored = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
    snprintf(title, sizeof title, "%.*s", (int)text_utf8_prefix(stored, sizeof title - 1), stored);
    PQclear(r);
    char tp[56] = "";
    const char *parent = event_traceparent(env);
    if (parent != NULL) snprintf(tp, sizeof tp, "%s", parent);
    if ((rc = pgx_cmd(pg, "begin", 0, NULL, err)) != 0) {
        arena_free(a);
        return rc;
    }
    for (size_t i = 0; i < n && rc == TODO_OK; i++) {
        char id[37], event_id[37];
        saga_reminder_notification_id(env->event_id, names[i], id);
        text_uuid_v4(event_id);
        Todo__V1__SendNotification sn = TODO__V1__SEND_NOTIFICATION__INIT;
        sn.notification_id = id;
        sn.recipient = env->user_id;
        sn.channel = (char *)names[i];
        saga_message msg = saga_template_reminder_due(a, title);
        sn.subject = (char *)msg.subject;
        sn.body = (char *)msg.body;
        sn.task_id = ev->task_id;
        event_meta em = {.event_id = event_id, .event_type = "notification.requested", .source = "todo-saga",
                         .time_us = event_now_us(), .user_id = env->user_id, .aggregate_type = "notification",
                         .aggregate_id = id, .aggregate_version = 1, .schema_version = 1,
                         .causation_id = env->event_id, .correlation_id = env->correlation_id, .traceparent = tp};
        rc = saga_outbox_add(pg, &em, &sn.base, err);
    }
    if (rc == TODO_OK) rc = pgx_cmd(pg, "commit", 0, NULL, err);
    else pgx_cmd(pg, "rollback", 0, NULL, NULL);
    if (rc == TODO_OK)
        log_info("notify", "reminder notifications requested", "reminder=%s channels=%zu", ev->reminder_id, n);
    arena_free(a);
    /* A refusal by the database is not the record's fault: tried again. */
    return rc == TODO_EINVAL ? TODO_EINTERNAL : rc;
}

void *saga_remind_main(void *proc)
{
    saga_proc_consume(proc, "notify", SAGA_REMIND_GROUP, TOPIC_REMINDERS, BATCH, "todo-saga-reminders",
                      notify_reminder, NULL);
    return NULL;
}
