/*
 * cmd_service: see cmd_service.h.
 *
 * Every command follows one path: authenticate; validate; with a request_id,
 * answer a retry from the first answer's record; load the task (NOT_FOUND
 * when absent, or deleted unless the command restores it); check
 * expected_version (ABORTED with the current version); apply the change in
 * memory, producing the event; save task and event atomically at the next
 * version. A concurrent save makes the save fail; the command then starts
 * over from the load (without expected_version) or answers ABORTED (with it).
 */
#include "cmd_service.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "auth.h"
#include "cmd_store.h"
#include "cmd_validate.h"
#include "event.h"
#include "log.h"
#include "pgx.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"

#define MAX_ATTEMPTS 30    /* load-change-save rounds before a busy task answers ABORTED */
#define MAX_BACKOFF_MS 50  /* jittered pause between rounds: up to min(2^round, this) ms */

typedef struct cmd_thread {
    const todo_config *cfg;
    const cmd_app *app;
    PGconn *pg;
    char app_name[32];
    /* What the audit record of the call being handled needs to know. */
    char audit_user[AUTH_USER_MAX];
    char audit_correlation[132];
} cmd_thread;

/* One command in progress. */
typedef struct cmd_ctx {
    grpcx_call *call;
    cmd_thread *t;
    arena *a;
    char user[AUTH_USER_MAX];
    const char *correlation_id;
    cmd_request req;
} cmd_ctx;

/* A command's change to a loaded task: mutates t and returns the event. */
typedef int (*change_fn)(cmd_ctx *x, cmd_task *t, const void *arg, int64_t now, const char **type,
                         ProtobufCMessage **event, todo_err *err);

void *cmd_thread_init(void *app, int index)
{
    cmd_thread *t = calloc(1, sizeof *t);
    if (t == NULL) abort();
    t->app = app;
    t->cfg = t->app->cfg;
    snprintf(t->app_name, sizeof t->app_name, "todo-command-%d", index);
    return t; /* connects on first use, and again after a lost connection */
}

void cmd_thread_cleanup(void *state)
{
    cmd_thread *t = state;
    if (t == NULL) return;
    PQfinish(t->pg);
    free(t);
}

/* The correlation id: the client's x-correlation-id when it sent a sane one,
 * else a new UUID. Returned to the client in the reply metadata. */
static const char *correlation(grpcx_call *c, arena *a)
{
    const char *v = grpcx_call_metadata(c, "x-correlation-id");
    bool ok = v != NULL && v[0] != '\0' && strlen(v) <= 128;
    for (const char *p = v; ok && *p != '\0'; p++) ok = *p >= 0x21 && *p <= 0x7E;
    if (!ok) {
        char *id = arena_alloc(a, 37);
        if (text_uuid_v4(id) != 0) snprintf(id, 37, "unknown");
        v = id;
    }
    grpcx_call_reply_metadata(c, "x-correlation-id", v);
    return v;
}

/* Authenticates, checks the request id and connects. */
static int begin(cmd_ctx *x, grpcx_call *c, const char *rpc, const char *request_id, const ProtobufCMessage *msg,
                 todo_err *err)
{
    int rc;
    x->call = c;
    x->t = grpcx_call_state(c);
    x->a = grpcx_call_arena(c);
    x->correlation_id = correlation(c, x->a);
    snprintf(x->t->audit_correlation, sizeof x->t->audit_correlation, "%s", x->correlation_id);
    if ((rc = auth_verify(x->t->cfg->jwt_secret, grpcx_call_metadata(c, "authorization"), (long)time(NULL), x->user,
                          err)) != 0)
        return rc;
    snprintf(x->t->audit_user, sizeof x->t->audit_user, "%s", x->user);
    if ((rc = cmd_validate_request_id(request_id, err)) != 0) return rc;
    cmd_request_init(&x->req, rpc, request_id, msg, x->t->cfg->request_ttl_s);
    if (pgx_ensure(&x->t->pg, x->t->cfg->pg_url, x->t->app_name, err) != 0)
        return todo_err_set(err, TODO_EUNAVAIL, "the database is unreachable; retry later");
    return TODO_OK;
}

/* A retried request: *resp is the first answer when there was one. */
static int replay(cmd_ctx *x, ProtobufCMessage **resp, todo_err *err)
{
    bool found = false;
    Todo__V1__CommandReply *rp;
    *resp = NULL;
    if (x->req.request_id[0] == '\0') return TODO_OK;
    rp = arena_alloc(x->a, sizeof *rp);
    todo__v1__command_reply__init(rp);
    int rc = cmd_store_find_request(x->t->pg, x->a, x->user, &x->req, &found, rp, err);
    if (rc == TODO_OK && found) *resp = &rp->base;
    return rc;
}

/* Hides database detail from clients; keeps the category. */
static int storage_error(const char *rpc, todo_err *err)
{
    log_error("command", "write failed", "rpc=%s detail=\"%s\"", rpc, err->msg);
    return todo_err_set(err, err->code == TODO_EUNAVAIL ? TODO_EUNAVAIL : TODO_EINTERNAL,
                        "the change could not be stored; retry later");
}

/* Encodes the event of t (at its new version) and saves both. */
static int save(cmd_ctx *x, const cmd_task *t, const char *type, int schema, const ProtobufCMessage *event,
                int64_t now, ProtobufCMessage **resp, todo_err *err)
{
    char event_id[37];
    uint8_t *env;
    size_t env_len;
    int64_t position = 0;
    int rc;
    if (text_uuid_v4(event_id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a new id");
    event_meta m = {
        .event_id = event_id, .event_type = type, .source = "todo-command", .time_us = now, .user_id = x->user,
        .aggregate_type = "task", .aggregate_id = t->id, .aggregate_version = t->version, .schema_version = schema,
        .correlation_id = x->correlation_id, .causation_id = "",
    };
    if ((rc = event_encode(&m, event, x->a, &env, &env_len, err)) != 0) return rc;
    cmd_write w = {.task = t, .event_id = event_id, .event_type = type, .schema_version = schema,
                   .envelope = env, .envelope_len = env_len};
    if ((rc = cmd_store_save(x->t->pg, &w, &x->req, &position, err)) != 0) return rc;

    Todo__V1__CommandReply *rp = arena_alloc(x->a, sizeof *rp);
    todo__v1__command_reply__init(rp);
    rp->id = arena_strdup(x->a, t->id);
    rp->version = t->version;
    rp->event_id = arena_strdup(x->a, event_id);
    rp->consistency_token = arena_alloc(x->a, 40);
    event_token_encode(position, rp->consistency_token);
    *resp = &rp->base;
    log_debug("command", type, "user=%s task=%s version=%" PRId64 " position=%" PRId64 " correlation_id=%s", x->user,
              t->id, t->version, position, x->correlation_id);
    return TODO_OK;
}

/* Sleeps a random time below min(2^attempt, MAX_BACKOFF_MS) ms, so that
 * writers racing for one task spread out. */
static void backoff(int attempt)
{
    unsigned r;
    long cap = attempt < 6 ? 1L << attempt : MAX_BACKOFF_MS;
    if (cap > MAX_BACKOFF_MS) cap = MAX_BACKOFF_MS;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (unsigned)attempt * 7919u;
    long us = (long)(r % (unsigned)(cap * 1000));
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* The load-check-change-save loop of every command on an existing task. */
static int mutate(cmd_ctx *x, const char *rpc, const char *task_id, int64_t expected, bool on_deleted, change_fn fn,
                  const void *arg, ProtobufCMessage **resp, todo_err *err)
{
    int rc;
    if ((rc = replay(x, resp, err)) != 0 || *resp != NULL) return rc;
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        cmd_task t;
        const char *type = NULL;
        ProtobufCMessage *event = NULL;
        int64_t now = event_now_us();
        rc = cmd_store_load(x->t->pg, x->a, x->user, task_id, &t, err);
        if (rc == TODO_ENOTFOUND) return rc;
        if (rc != 0) return storage_error(rpc, err);
        if (t.deleted && !on_deleted)
            return todo_err_set(err, TODO_ENOTFOUND, "task %s not found (it was deleted; RestoreTask brings it back)",
                                task_id);
        if (expected != 0 && t.version != expected)
            return todo_err_set(err, TODO_ECONFLICT, "task %s is at version %" PRId64 ", not the expected %" PRId64,
                                task_id, t.version, expected);
        if ((rc = fn(x, &t, arg, now, &type, &event, err)) != 0) return rc;
        t.version++;
        t.updated_us = now;
        rc = save(x, &t, type, 1, event, now, resp, err);
        if (rc == TODO_EEXISTS) { /* a duplicate of this request won the race */
            if ((rc = replay(x, resp, err)) != 0 || *resp != NULL) return rc;
            continue;
        }
        if (rc != TODO_ECONFLICT) return rc == 0 ? 0 : storage_error(rpc, err);
        /* Someone saved a newer version between our load and save. */
        if (expected != 0)
            return todo_err_set(err, TODO_ECONFLICT,
                                "task %s changed concurrently and is past the expected version %" PRId64, task_id,
                                expected);
        backoff(attempt);
    }
    return todo_err_set(err, TODO_ECONFLICT, "task %s is changing too often; retry", task_id);
}

/* ---- CreateTask ---- */

static int create_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__CreateTaskRequest *rq = (const Todo__V1__CreateTaskRequest *)req;
    Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
    cmd_ctx x;
    cmd_fields f;
    cmd_task t;
    int rc;

    if ((rc = begin(&x, c, "CreateTask", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_create(rq, &f, err)) != 0) return rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((rc = replay(&x, resp, err)) != 0 || *resp != NULL) return rc;
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
        t.version = 1;
        t.created_us = t.updated_us = now;

        ev.task_id = t.id;
        ev.title = (char *)t.title;
        ev.description = (char *)t.description;
        ev.priority = (Todo__V1__Priority)t.priority;
        ev.due_at = t.has_due ? event_timestamp(x.a, t.due_us) : NULL;
        ev.n_tags = t.n_tags;
        ev.tags = t.tags;
        ev.created_at = event_timestamp(x.a, now);
        ev.category = (char *)t.category;
        rc = save(&x, &t, "task.created", 2, &ev.base, now, resp, err);
        if (rc != TODO_EEXISTS) return rc == 0 ? 0 : storage_error("CreateTask", err);
    }
    return todo_err_set(err, TODO_ECONFLICT, "request_id %s is being handled concurrently; retry", rq->request_id);
}

/* ---- UpdateTask ---- */

static int change_update(cmd_ctx *x, cmd_task *t, const void *arg, int64_t now, const char **type,
                         ProtobufCMessage **event, todo_err *err)
{
    (void)err;
    const cmd_fields *f = arg;
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

static int update_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__UpdateTaskRequest *rq = (const Todo__V1__UpdateTaskRequest *)req;
    cmd_ctx x;
    cmd_fields f;
    int rc;
    if ((rc = begin(&x, c, "UpdateTask", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_update(rq, &f, err)) != 0) return rc;
    return mutate(&x, "UpdateTask", rq->task_id, rq->expected_version, false, change_update, &f, resp, err);
}

/* ---- CompleteTask, ReopenTask, DeleteTask, RestoreTask ---- */

static int change_complete(cmd_ctx *x, cmd_task *t, const void *arg, int64_t now, const char **type,
                           ProtobufCMessage **event, todo_err *err)
{
    (void)arg;
    if (t->completed) return todo_err_set(err, TODO_EPRECOND, "task %s is already completed", t->id);
    Todo__V1__TaskCompleted *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__task_completed__init(ev);
    t->completed = true;
    t->completed_us = now;
    ev->task_id = t->id;
    ev->completed_at = event_timestamp(x->a, now);
    *type = "task.completed";
    *event = &ev->base;
    return TODO_OK;
}

static int change_reopen(cmd_ctx *x, cmd_task *t, const void *arg, int64_t now, const char **type,
                         ProtobufCMessage **event, todo_err *err)
{
    (void)arg;
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

static int change_delete(cmd_ctx *x, cmd_task *t, const void *arg, int64_t now, const char **type,
                         ProtobufCMessage **event, todo_err *err)
{
    (void)arg;
    (void)err;
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

static int change_restore(cmd_ctx *x, cmd_task *t, const void *arg, int64_t now, const char **type,
                          ProtobufCMessage **event, todo_err *err)
{
    (void)arg;
    if (!t->deleted) return todo_err_set(err, TODO_EPRECOND, "task %s is not deleted", t->id);
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

static int simple(grpcx_call *c, const ProtobufCMessage *req, const char *rpc, bool on_deleted, change_fn fn,
                  ProtobufCMessage **resp, todo_err *err)
{
    const simple_request *rq = (const simple_request *)req;
    cmd_ctx x;
    int rc;
    if ((rc = begin(&x, c, rpc, rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_task_id("task_id", rq->task_id, err)) != 0) return rc;
    if ((rc = cmd_validate_expected_version(rq->expected_version, err)) != 0) return rc;
    return mutate(&x, rpc, rq->task_id, rq->expected_version, on_deleted, fn, NULL, resp, err);
}

static int complete_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "CompleteTask", false, change_complete, resp, err);
}

static int reopen_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "ReopenTask", false, change_reopen, resp, err);
}

static int delete_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "DeleteTask", false, change_delete, resp, err);
}

static int restore_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    return simple(c, req, "RestoreTask", true, change_restore, resp, err);
}

/* ---- audit ---- */

/* The string field name of a request, or NULL. */
static const char *string_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING) return NULL;
    return *(char *const *)((const char *)m + f->offset);
}

/* Runs a handler and leaves one audit record of what happened. */
static int audited(grpcx_call *c, grpcx_unary_fn fn, const ProtobufCMessage *req, ProtobufCMessage **resp,
                   todo_err *err)
{
    cmd_thread *t = grpcx_call_state(c);
    t->audit_user[0] = t->audit_correlation[0] = '\0';
    int rc = fn(c, req, resp, err);
    const Todo__V1__CommandReply *rp = rc == 0 ? (const Todo__V1__CommandReply *)*resp : NULL;
    audit_entry e = {
        .user_id = t->audit_user, .rpc = grpcx_call_method(c),
        .target_id = rp != NULL ? rp->id : string_field(req, "task_id"),
        .outcome = grpcx_code_name(grpcx_status_of(rc)), .message = rc != 0 ? err->msg : NULL,
        .correlation_id = t->audit_correlation, .request_id = string_field(req, "request_id"),
        .version = rp != NULL ? rp->version : 0,
    };
    if (t->app->audit != NULL) audit_emit(t->app->audit, &e);
    return rc;
}

#define AUDITED(fn)                                                                                         \
    static int fn##_audited(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err) \
    {                                                                                                       \
        return audited(c, fn, req, resp, err);                                                             \
    }
AUDITED(create_task)
AUDITED(update_task)
AUDITED(complete_task)
AUDITED(reopen_task)
AUDITED(delete_task)
AUDITED(restore_task)

int cmd_service_register(grpcx_server *s, todo_err *err)
{
    static const grpcx_method methods[] = {
        {"CreateTask", create_task_audited},   {"UpdateTask", update_task_audited},
        {"CompleteTask", complete_task_audited}, {"ReopenTask", reopen_task_audited},
        {"DeleteTask", delete_task_audited},   {"RestoreTask", restore_task_audited},
        /* Reminders and recurring patterns answer UNIMPLEMENTED until they land. */
    };
    return grpcx_server_add_service(s, &todo__v1__task_command_service__descriptor, methods,
                                    sizeof methods / sizeof methods[0], err);
}
