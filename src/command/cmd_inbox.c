/*
 * cmd_inbox: the user's inbox of in-app notifications, one aggregate per
 * entry (aggregate type "inbox_entry").
 *
 *   DeliverInAppNotification  (todo-saga; scope internal) adds the entry of
 *                             a notification: its id is a name-based UUID
 *                             of the user and the notification id, so the
 *                             same notification delivered again answers the
 *                             same entry (version 1) and adds nothing.
 *   MarkNotificationRead      marks an entry of the caller read
 *                             (FAILED_PRECONDITION when it already is).
 *
 * Events inbox.entry_added and inbox.entry_read go to users.events.v1; the
 * projector keeps read.notifications (ListNotifications).
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

#define SUBJECT_MAX 1200   /* bytes: "Reminder: " and a title of 255 characters */
#define BODY_MAX 4000

typedef struct entry {
    char id[37];
    const char *notification_id, *subject, *body, *task_id;
    bool read;
    int64_t read_us, created_us;
} entry;

static int load_entry(cmd_ctx *x, const char *id, void **agg, int64_t *version, todo_err *err)
{
    const char *p[2] = {id, x->user};
    PGresult *r = pgx_exec(x->t->pg,
                           "select notification_id, subject, body, coalesce(task_id::text, ''),"
                           " (extract(epoch from read_at) * 1000000)::bigint, version,"
                           " (extract(epoch from created_at) * 1000000)::bigint"
                           " from write.inbox where id = $1::uuid and user_id = $2",
                           2, p, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "notification %s not found in your inbox", id);
    }
    entry *e = arena_calloc(x->a, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", id);
    e->notification_id = arena_strdup(x->a, PQgetvalue(r, 0, 0));
    e->subject = arena_strdup(x->a, PQgetvalue(r, 0, 1));
    e->body = arena_strdup(x->a, PQgetvalue(r, 0, 2));
    e->task_id = arena_strdup(x->a, PQgetvalue(r, 0, 3));
    e->read_us = cmd_store_us(r, 4, &e->read);
    *version = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
    e->created_us = cmd_store_us(r, 6, NULL);
    PQclear(r);
    *agg = e;
    return TODO_OK;
}

static void entry_state(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                        const char *const **params, int *n)
{
    const entry *e = agg;
    arena *a = x->a;
    const char **p = arena_alloc(a, 10 * sizeof *p);
    p[0] = e->id;
    p[1] = x->user;
    p[2] = cmd_store_time(a, e->read, e->read_us);
    p[3] = arena_printf(a, "%" PRId64, version);
    p[4] = cmd_store_time(a, true, now);
    if (version == 1) {
        p[5] = e->notification_id;
        p[6] = e->subject;
        p[7] = e->body;
        p[8] = e->task_id[0] != '\0' ? e->task_id : NULL;
        p[9] = cmd_store_time(a, true, e->created_us);
        /* on conflict: a concurrent delivery of the same notification. */
        *sql = "insert into write.inbox (id, user_id, read_at, version, updated_at, notification_id, subject, body,"
               " task_id, created_at) values ($1::uuid, $2, $3::timestamptz, $4::bigint, $5::timestamptz, $6, $7, $8,"
               " $9::uuid, $10::timestamptz) on conflict do nothing returning 1";
        *n = 10;
    } else {
        *sql = "update write.inbox set read_at = $3::timestamptz, version = $4::bigint, updated_at = $5::timestamptz"
               " where id = $1::uuid and user_id = $2 and version = $4::bigint - 1 returning 1";
        *n = 5;
    }
    *params = p;
}

static const cmd_kind entry_kind = {"inbox_entry", load_entry, entry_state};

/* The entry id of notification_id in user's inbox. */
static void entry_id(const char *user, const char *notification_id, char out[37])
{
    char name[AUTH_USER_MAX + 300];
    snprintf(name, sizeof name, "todo:inbox:%s:%s", user, notification_id);
    text_name_uuid(name, out);
}

static int text_field(const char *field, const char *v, size_t max, bool required, todo_err *err)
{
    size_t n = strlen(v);
    if (required && n == 0) return todo_err_set(err, TODO_EINVAL, "%s: is required", field);
    if (n > max) return todo_err_set(err, TODO_EINVAL, "%s: at most %zu bytes, got %zu", field, max, n);
    if (text_utf8_prefix(v, n) != n) return todo_err_set(err, TODO_EINVAL, "%s: is not valid UTF-8", field);
    return TODO_OK;
}

int cmd_deliver_in_app(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__DeliverInAppNotificationRequest *rq = (const Todo__V1__DeliverInAppNotificationRequest *)req;
    cmd_ctx x;
    entry e;
    int rc;
    if ((rc = cmd_begin(&x, c, "DeliverInAppNotification", rq->request_id, req, err)) != 0) return rc;
    if ((rc = text_field("notification_id", rq->notification_id, 200, true, err)) != 0 ||
        (rc = text_field("subject", rq->subject, SUBJECT_MAX, true, err)) != 0 ||
        (rc = text_field("body", rq->body, BODY_MAX, false, err)) != 0)
        return rc;
    if (rq->task_id[0] != '\0' && (rc = cmd_validate_id("task_id", rq->task_id, err)) != 0) return rc;
    if ((rc = cmd_replay(&x, resp, err)) != 0 || *resp != NULL) return rc;
    memset(&e, 0, sizeof e);
    entry_id(x.user, rq->notification_id, e.id);
    for (int attempt = 0; attempt < 2; attempt++) {
        void *agg;
        int64_t version;
        rc = load_entry(&x, e.id, &agg, &version, err);
        if (rc == TODO_OK) { /* delivered before: the same entry, nothing new */
            Todo__V1__CommandReply *rp = arena_alloc(x.a, sizeof *rp);
            todo__v1__command_reply__init(rp);
            rp->id = arena_strdup(x.a, e.id);
            rp->version = version;
            *resp = &rp->base;
            return TODO_OK;
        }
        if (rc != TODO_ENOTFOUND) return cmd_storage_error(&x, err);
        e.notification_id = rq->notification_id;
        e.subject = rq->subject;
        e.body = rq->body;
        e.task_id = rq->task_id;
        e.created_us = event_now_us();
        Todo__V1__InboxEntryAdded ev = TODO__V1__INBOX_ENTRY_ADDED__INIT;
        ev.entry_id = e.id;
        ev.notification_id = rq->notification_id;
        ev.subject = rq->subject;
        ev.body = rq->body;
        ev.task_id = rq->task_id;
        ev.created_at = event_timestamp(x.a, e.created_us);
        rc = cmd_create(&x, &entry_kind, e.id, &e, e.created_us, "inbox.entry_added", 1, &ev.base, resp, err);
        if (rc != TODO_ECONFLICT) return rc;
    }
    return todo_err_set(err, TODO_ECONFLICT, "notification %s is being delivered concurrently; retry",
                        rq->notification_id);
}

static int change_read(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                       ProtobufCMessage **event, todo_err *err)
{
    entry *e = agg;
    (void)arg;
    (void)schema;
    if (e->read) return todo_err_set(err, TODO_EPRECOND, "notification %s is already read", e->id);
    e->read = true;
    e->read_us = now;
    Todo__V1__InboxEntryRead *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__inbox_entry_read__init(ev);
    ev->entry_id = e->id;
    ev->read_at = event_timestamp(x->a, now);
    *type = "inbox.entry_read";
    *event = &ev->base;
    return TODO_OK;
}

int cmd_mark_read(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__MarkNotificationReadRequest *rq = (const Todo__V1__MarkNotificationReadRequest *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, "MarkNotificationRead", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("entry_id", rq->entry_id, err)) != 0 ||
        (rc = cmd_validate_expected_version(rq->expected_version, err)) != 0)
        return rc;
    return cmd_mutate(&x, &entry_kind, rq->entry_id, rq->expected_version, change_read, NULL, resp, err);
}
