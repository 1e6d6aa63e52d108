/* qry_rows: see qry_rows.h. */
#include "qry_rows.h"

#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "pgx.h"

const char *const qry_reminder_select =
    "select r.id::text, r.task_id::text, (extract(epoch from r.remind_at) * 1000000)::bigint,"
    " r.channel, r.status, r.reason, (extract(epoch from r.triggered_at) * 1000000)::bigint,"
    " (extract(epoch from r.created_at) * 1000000)::bigint,"
    " (extract(epoch from r.updated_at) * 1000000)::bigint, r.version";

const char *const qry_notification_select =
    "select n.id::text, n.notification_id, n.subject, n.body, coalesce(n.task_id::text, ''),"
    " (extract(epoch from n.created_at) * 1000000)::bigint,"
    " (extract(epoch from n.read_at) * 1000000)::bigint, n.version";

Google__Protobuf__Timestamp *qry_ts_of(arena *a, const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : event_timestamp(a, strtoll(PQgetvalue(r, row, col), NULL, 10));
}

Todo__V1__Task *qry_task_of(arena *a, const PGresult *r, int row)
{
    Todo__V1__Task *tk = arena_alloc(a, sizeof *tk);
    todo__v1__task__init(tk);
    tk->id = arena_strdup(a, PQgetvalue(r, row, 0));
    tk->user_id = arena_strdup(a, PQgetvalue(r, row, 1));
    tk->title = arena_strdup(a, PQgetvalue(r, row, 2));
    tk->description = arena_strdup(a, PQgetvalue(r, row, 3));
    tk->priority = (Todo__V1__Priority)atoi(PQgetvalue(r, row, 4));
    tk->due_at = qry_ts_of(a, r, row, 5);
    tk->completed = PQgetvalue(r, row, 6)[0] == 't';
    tk->completed_at = qry_ts_of(a, r, row, 7);
    tk->category = arena_strdup(a, PQgetvalue(r, row, 8));
    pgx_split(a, PQgetvalue(r, row, 9), '\x1f', &tk->tags, &tk->n_tags);
    tk->created_at = qry_ts_of(a, r, row, 10);
    tk->updated_at = qry_ts_of(a, r, row, 11);
    tk->version = strtoll(PQgetvalue(r, row, 12), NULL, 10);
    tk->overdue = PQgetvalue(r, row, 13)[0] == 't';
    tk->recurring_pattern_id = arena_strdup(a, PQgetvalue(r, row, 14));
    return tk;
}

Todo__V1__Reminder *qry_reminder_of(arena *a, const PGresult *r, int row)
{
    static const struct {
        const char *name;
        Todo__V1__ReminderStatus status;
    } statuses[] = {{"scheduled", TODO__V1__REMINDER_STATUS__REMINDER_STATUS_SCHEDULED},
                    {"cancelled", TODO__V1__REMINDER_STATUS__REMINDER_STATUS_CANCELLED},
                    {"fired", TODO__V1__REMINDER_STATUS__REMINDER_STATUS_FIRED}};
    Todo__V1__Reminder *m = arena_alloc(a, sizeof *m);
    todo__v1__reminder__init(m);
    m->id = arena_strdup(a, PQgetvalue(r, row, 0));
    m->task_id = arena_strdup(a, PQgetvalue(r, row, 1));
    m->remind_at = qry_ts_of(a, r, row, 2);
    m->channel = (Todo__V1__ReminderChannel)atoi(PQgetvalue(r, row, 3));
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (strcmp(PQgetvalue(r, row, 4), statuses[i].name) == 0) m->status = statuses[i].status;
    m->cancel_reason = arena_strdup(a, PQgetvalue(r, row, 5));
    m->triggered_at = qry_ts_of(a, r, row, 6);
    m->created_at = qry_ts_of(a, r, row, 7);
    m->updated_at = qry_ts_of(a, r, row, 8);
    m->version = strtoll(PQgetvalue(r, row, 9), NULL, 10);
    return m;
}

Todo__V1__Notification *qry_notification_of(arena *a, const PGresult *r, int row)
{
    Todo__V1__Notification *m = arena_alloc(a, sizeof *m);
    todo__v1__notification__init(m);
    m->id = arena_strdup(a, PQgetvalue(r, row, 0));
    m->notification_id = arena_strdup(a, PQgetvalue(r, row, 1));
    m->subject = arena_strdup(a, PQgetvalue(r, row, 2));
    m->body = arena_strdup(a, PQgetvalue(r, row, 3));
    m->task_id = arena_strdup(a, PQgetvalue(r, row, 4));
    m->created_at = qry_ts_of(a, r, row, 5);
    m->read_at = qry_ts_of(a, r, row, 6);
    m->version = strtoll(PQgetvalue(r, row, 7), NULL, 10);
    return m;
}
