/*
 * cmd_tasks: the task aggregate and its commands: CreateTask, UpdateTask
 * (field mask), CompleteTask, ReopenTask, DeleteTask (soft) and
 * RestoreTask. A deleted task is NOT_FOUND for every command but
 * RestoreTask.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_core.h"
#include "cmd_validate.h"
#include "event.h"
#include "pgx.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

static int load_task(cmd_ctx *x, const char *id, void **agg, int64_t *version, todo_err *err)
{
    const char *p[2] = {id, x->user};
    PGresult *r = pgx_exec(x->t->pg,
                           "select title, description, priority, (extract(epoch from due_at) * 1000000)::bigint,"
                           " category, array_to_string(tags, E'\\x1f'),"
                           " (extract(epoch from completed_at) * 1000000)::bigint,"
                           " (extract(epoch from deleted_at) * 1000000)::bigint, version,"
                           " (extract(epoch from created_at) * 1000000)::bigint,"
                           " coalesce((select p.id::text from write.recurring_patterns p where p.task_id = t.id),"
                           "  series_id::text, ''), series_id::text, occurrence, generated_from::text"
                           " from write.tasks t where id = $1::uuid and user_id = $2",
                           2, p, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "task %s not found", id);
    }
    arena *a = x->a;
    cmd_task *t = arena_calloc(a, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", id);
    t->user_id = x->user;
    t->title = arena_strdup(a, PQgetvalue(r, 0, 0));
    t->description = arena_strdup(a, PQgetvalue(r, 0, 1));
    t->priority = atoi(PQgetvalue(r, 0, 2));
    t->due_us = cmd_store_us(r, 3, &t->has_due);
    t->category = arena_strdup(a, PQgetvalue(r, 0, 4));
    pgx_split(a, PQgetvalue(r, 0, 5), '\x1f', &t->tags, &t->n_tags);
    t->completed_us = cmd_store_us(r, 6, &t->completed);
    t->deleted_us = cmd_store_us(r, 7, &t->deleted);
    *version = strtoll(PQgetvalue(r, 0, 8), NULL, 10);
    t->created_us = cmd_store_us(r, 9, NULL);
    t->recurring_pattern_id = arena_strdup(a, PQgetvalue(r, 0, 10));
    t->series_id = PQgetisnull(r, 0, 11) ? NULL : arena_strdup(a, PQgetvalue(r, 0, 11));
    t->occurrence = PQgetisnull(r, 0, 12) ? 0 : atoi(PQgetvalue(r, 0, 12));
    t->generated_from = PQgetisnull(r, 0, 13) ? NULL : arena_strdup(a, PQgetvalue(r, 0, 13));
    PQclear(r);
    *agg = t;
    return TODO_OK;
}

/* The statement writing task agg at version. With open_source (a task id),
 * an update writes only while that task is not completed (or is deleted),
 * under a share lock on its row: a concurrent CompleteTask of it waits for
 * this save, or commits first and this writes nothing. */
static void task_state_if(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char *open_source,
                          const char **sql, const char *const **params, int *n)
{
    const cmd_task *t = agg;
    arena *a = x->a;
    const char **p = arena_alloc(a, 16 * sizeof *p);
    p[0] = t->id;
    p[1] = t->user_id;
    p[2] = t->title;
    p[3] = t->description;
    p[4] = arena_printf(a, "%d", t->priority);
    p[5] = cmd_store_time(a, t->has_due, t->due_us);
    p[6] = t->category;
    p[7] = pgx_text_array(a, t->tags, t->n_tags);
    p[8] = cmd_store_time(a, t->completed, t->completed_us);
    p[9] = cmd_store_time(a, t->deleted, t->deleted_us);
    p[10] = arena_printf(a, "%" PRId64, version);
    p[11] = cmd_store_time(a, true, now);
    if (version == 1) {
        p[12] = cmd_store_time(a, true, t->created_us);
        p[13] = t->series_id;
        p[14] = t->occurrence > 0 ? arena_printf(a, "%d", t->occurrence) : NULL;
        p[15] = t->generated_from;
        /* on conflict: the completed task already has its next occurrence. */
        *sql = "insert into write.tasks (id, user_id, title, description, priority, due_at, category, tags,"
               " completed_at, deleted_at, version, updated_at, created_at, series_id, occurrence, generated_from)"
               " values ($1::uuid, $2, $3, $4, $5::smallint, $6::timestamptz, $7, $8::text[], $9::timestamptz,"
               " $10::timestamptz, $11::bigint, $12::timestamptz, $13::timestamptz, $14::uuid, $15::int, $16::uuid)"
               " on conflict (generated_from) where deleted_at is null do nothing returning 1";
        *n = 16;
    } else {
#define TASK_UPDATE                                                                                       \
    "update write.tasks set title = $3, description = $4, priority = $5::smallint,"                      \
    " due_at = $6::timestamptz, category = $7, tags = $8::text[], completed_at = $9::timestamptz,"        \
    " deleted_at = $10::timestamptz, version = $11::bigint, updated_at = $12::timestamptz"                \
    " where id = $1::uuid and user_id = $2 and version = $11::bigint - 1"
        *sql = TASK_UPDATE " returning 1";
        *n = 12;
        if (open_source != NULL) {
            p[12] = open_source;
            *sql = TASK_UPDATE " and exists (select 1 from write.tasks s where s.id = $13::uuid and s.user_id = $2"
                               " and (s.completed_at is null or s.deleted_at is not null) for share of s) returning 1";
            *n = 13;
        }
#undef TASK_UPDATE
    }
    *params = p;
}

static void task_state(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                       const char *const **params, int *n)
{
    task_state_if(x, agg, version, now, NULL, sql, params, n);
}

const cmd_kind cmd_task_kind = {"task", load_task, task_state};

/* RetractOccurrence's save: the occurrence is written (deleted) only while
 * the task it follows is open. */
static void retract_state(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                          const char *const **params, int *n)
{
    const cmd_task *t = agg;
    task_state_if(x, agg, version, now, t->generated_from, sql, params, n);
}

static const cmd_kind retract_kind = {"task", load_task, retract_state};

/* NOT_FOUND for a deleted task: every command but RestoreTask. */
static int alive(const cmd_task *t, todo_err *err)
{
    if (t->deleted)
        return todo_err_set(err, TODO_ENOTFOUND, "task %s not found (it was deleted; RestoreTask brings it back)", t->id);
    return TODO_OK;
}


int cmd_load_live_task(cmd_ctx *x, const char *id, const cmd_task **t, todo_err *err)
{
    void *agg;
    int64_t version;
    int rc = load_task(x, id, &agg, &version, err);
    if (rc != 0) return rc == TODO_ENOTFOUND ? rc : cmd_storage_error(x, err);
    *t = agg;
    return alive(*t, err);
}

/* ---- CreateTask ---- */

int cmd_create_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__CreateTaskRequest *rq = (const Todo__V1__CreateTaskRequest *)req;
    cmd_ctx x;
    cmd_fields f;
    cmd_task t;
    int rc;

    if ((rc = cmd_begin(&x, c, "CreateTask", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_create(rq, &f, err)) != 0) return rc;
    int64_t now = event_now_us();
    memset(&t, 0, sizeof t);
    if (text_uuid_v4(t.id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a new id");
    t.user_id = x.user;
    t.title = f.title;
    t.description = f.description;
    t.category = f.category;
    t.priority = f.priority;
    t.has_due = f.has_due;
    t.due_us = f.due_us;
    t.tags = (char **)f.tags;
    t.n_tags = f.n_tags;
    t.created_us = now;

    return cmd_task_create(&x, &t, now, resp, err);
}

int cmd_task_create(cmd_ctx *x, const cmd_task *t, int64_t now, ProtobufCMessage **resp, todo_err *err)
{
    Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
    ev.task_id = (char *)t->id;
    ev.title = (char *)t->title;
    ev.description = (char *)t->description;
    ev.priority = (Todo__V1__Priority)t->priority;
    ev.due_at = t->has_due ? event_timestamp(x->a, t->due_us) : NULL;
    ev.n_tags = t->n_tags;
    ev.tags = t->tags;
    ev.created_at = event_timestamp(x->a, now);
    ev.category = (char *)t->category;
    if (t->series_id != NULL) {
        ev.recurring_pattern_id = (char *)t->series_id;
        ev.occurrence = t->occurrence;
        ev.generated_from = (char *)t->generated_from;
    }
    return cmd_create(x, &cmd_task_kind, t->id, t, now, "task.created", 2, &ev.base, resp, err);
}

/* ---- UpdateTask ---- */

static int change_update(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                         ProtobufCMessage **event, todo_err *err)
{
    cmd_task *t = agg;
    const cmd_fields *f = arg;
    (void)schema;
    if (alive(t, err) != 0) return err->code;
    Todo__V1__TaskUpdated *ev = arena_alloc(x->a, sizeof *ev);
    const char **names = arena_alloc(x->a, 6 * sizeof *names);
    todo__v1__task_updated__init(ev);
    if (f->mask & CMD_F_TITLE) t->title = f->title;
    if (f->mask & CMD_F_DESCRIPTION) t->description = f->description;
    if (f->mask & CMD_F_PRIORITY) t->priority = f->priority;
    if (f->mask & CMD_F_DUE_AT) {
        t->has_due = f->has_due;
        t->due_us = f->due_us;
    }
    if (f->mask & CMD_F_CATEGORY) t->category = f->category;
    if (f->mask & CMD_F_TAGS) {
        t->tags = (char **)f->tags;
        t->n_tags = f->n_tags;
    }
    ev->task_id = t->id;
    ev->n_changed_fields = cmd_fields_names(f->mask, names);
    ev->changed_fields = (char **)names;
    ev->title = (char *)t->title;
    ev->description = (char *)t->description;
    ev->priority = (Todo__V1__Priority)t->priority;
    ev->due_at = t->has_due ? event_timestamp(x->a, t->due_us) : NULL;
    ev->category = (char *)t->category;
    ev->n_tags = t->n_tags;
    ev->tags = t->tags;
    ev->updated_at = event_timestamp(x->a, now);
    *type = "task.updated";
    *event = &ev->base;
    return TODO_OK;
}

int cmd_update_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__UpdateTaskRequest *rq = (const Todo__V1__UpdateTaskRequest *)req;
    cmd_ctx x;
    cmd_fields f;
    int rc;
    if ((rc = cmd_begin(&x, c, "UpdateTask", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_update(rq, &f, err)) != 0) return rc;
    return cmd_mutate(&x, &cmd_task_kind, rq->task_id, rq->expected_version, change_update, &f, resp, err);
}

/* ---- CompleteTask, ReopenTask, DeleteTask, RestoreTask ---- */

static int change_complete(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                           ProtobufCMessage **event, todo_err *err)
{
    cmd_task *t = agg;
    (void)arg;
    (void)schema;
    if (alive(t, err) != 0) return err->code;
    if (t->completed) return todo_err_set(err, TODO_EPRECOND, "task %s is already completed", t->id);
    Todo__V1__TaskCompleted *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__task_completed__init(ev);
    t->completed = true;
    t->completed_us = now;
    ev->task_id = t->id;
    ev->completed_at = event_timestamp(x->a, now);
    ev->recurring_pattern_id = (char *)t->recurring_pattern_id;
    *type = "task.completed";
    *event = &ev->base;
    return TODO_OK;
}

static int change_reopen(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                         ProtobufCMessage **event, todo_err *err)
{
    cmd_task *t = agg;
    (void)arg;
    (void)schema;
    if (alive(t, err) != 0) return err->code;
    if (!t->completed) return todo_err_set(err, TODO_EPRECOND, "task %s is not completed", t->id);
    Todo__V1__TaskReopened *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__task_reopened__init(ev);
    t->completed = false;
    ev->task_id = t->id;
    ev->reopened_at = event_timestamp(x->a, now);
    *type = "task.reopened";
    *event = &ev->base;
    return TODO_OK;
}

static int change_delete(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                         ProtobufCMessage **event, todo_err *err)
{
    cmd_task *t = agg;
    (void)arg;
    (void)schema;
    if (alive(t, err) != 0) return err->code;
    Todo__V1__TaskDeleted *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__task_deleted__init(ev);
    t->deleted = true;
    t->deleted_us = now;
    ev->task_id = t->id;
    ev->deleted_at = event_timestamp(x->a, now);
    *type = "task.deleted";
    *event = &ev->base;
    return TODO_OK;
}

static int change_restore(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                          ProtobufCMessage **event, todo_err *err)
{
    cmd_task *t = agg;
    (void)arg;
    (void)schema;
    if (!t->deleted) return todo_err_set(err, TODO_EPRECOND, "task %s is not deleted", t->id);
    if (t->generated_from != NULL) { /* one live next occurrence per completed task (tasks_live_successor) */
        const char *p[2] = {t->generated_from, t->id};
        PGresult *r = pgx_exec(x->t->pg,
                               "select id::text from write.tasks where generated_from = $1::uuid and id <> $2::uuid"
                               " and deleted_at is null",
                               2, p, err);
        if (r == NULL) return cmd_storage_error(x, err);
        int rc = PQntuples(r) == 0 ? TODO_OK
                                   : todo_err_set(err, TODO_EPRECOND,
                                                  "task %s follows task %s, which has another next occurrence now (%s)",
                                                  t->id, t->generated_from, PQgetvalue(r, 0, 0));
        PQclear(r);
        if (rc != TODO_OK) return rc;
    }
    Todo__V1__TaskRestored *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__task_restored__init(ev);
    t->deleted = false;
    ev->task_id = t->id;
    ev->restored_at = event_timestamp(x->a, now);
    *type = "task.restored";
    *event = &ev->base;
    return TODO_OK;
}

/* The four commands share a request shape: request_id, task_id,
 * expected_version (fields 1..3 of each message). */
typedef struct simple_request {
    ProtobufCMessage base;
    char *request_id;
    char *task_id;
    int64_t expected_version;
} simple_request;

#define SAME_LAYOUT(T)                                                                                   \
    _Static_assert(offsetof(T, request_id) == offsetof(simple_request, request_id) &&                      \
                       offsetof(T, task_id) == offsetof(simple_request, task_id) &&                        \
                       offsetof(T, expected_version) == offsetof(simple_request, expected_version),        \
                   #T " must start like simple_request")
SAME_LAYOUT(Todo__V1__CompleteTaskRequest);
SAME_LAYOUT(Todo__V1__ReopenTaskRequest);
SAME_LAYOUT(Todo__V1__DeleteTaskRequest);
SAME_LAYOUT(Todo__V1__RestoreTaskRequest);

static int simple(grpcx_call *c, const ProtobufCMessage *req, const char *rpc, cmd_change_fn fn,
                  ProtobufCMessage **resp, todo_err *err)
{
    const simple_request *rq = (const simple_request *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, rpc, rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("task_id", rq->task_id, err)) != 0) return rc;
    if ((rc = cmd_validate_expected_version(rq->expected_version, err)) != 0) return rc;
    return cmd_mutate(&x, &cmd_task_kind, rq->task_id, rq->expected_version, fn, NULL, resp, err);
}

int cmd_complete_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "CompleteTask", change_complete, resp, err);
}

int cmd_reopen_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "ReopenTask", change_reopen, resp, err);
}

int cmd_delete_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "DeleteTask", change_delete, resp, err);
}

int cmd_restore_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "RestoreTask", change_restore, resp, err);
}

/* ---- RetractOccurrence ---- */

static int change_retract(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                          ProtobufCMessage **event, todo_err *err)
{
    cmd_task *t = agg;
    void *src;
    int64_t version;
    if (t->generated_from == NULL)
        return todo_err_set(err, TODO_EINVAL, "task_id: task %s is not an occurrence made by CreateNextOccurrence",
                            t->id);
    if (alive(t, err) != 0) return err->code;
    int rc = load_task(x, t->generated_from, &src, &version, err);
    if (rc != 0 && rc != TODO_ENOTFOUND) return cmd_storage_error(x, err);
    if (rc == 0 && ((const cmd_task *)src)->completed && !((const cmd_task *)src)->deleted)
        return todo_err_set(err, TODO_EPRECOND, "task %s is completed again: task %s stays its next occurrence",
                            t->generated_from, t->id);
    return change_delete(x, agg, arg, now, type, schema, event, err);
}

int cmd_retract_occurrence(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__RetractOccurrenceRequest *rq = (const Todo__V1__RetractOccurrenceRequest *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, "RetractOccurrence", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("task_id", rq->task_id, err)) != 0) return rc;
    return cmd_mutate(&x, &retract_kind, rq->task_id, 0, change_retract, NULL, resp, err);
}
