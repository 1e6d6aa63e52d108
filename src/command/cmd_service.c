/* cmd_service: see cmd_service.h. */
#include "cmd_service.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "cmd_validate.h"
#include "event.h"
#include "log.h"
#include "pgx.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"

typedef struct cmd_thread {
    const todo_config *cfg;
    PGconn *pg;
    char app_name[32];
} cmd_thread;

void *cmd_thread_init(void *app, int index)
{
    cmd_thread *t = calloc(1, sizeof *t);
    if (t == NULL) abort();
    t->cfg = app;
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

/* The caller's user id, from the bearer token. */
static int caller(grpcx_call *c, cmd_thread *t, char user[AUTH_USER_MAX], todo_err *err)
{
    return auth_verify(t->cfg->jwt_secret, grpcx_call_metadata(c, "authorization"), (long)time(NULL), user, err);
}

/* A correlation id: the client's x-correlation-id when it sent a sane one. */
static const char *correlation(grpcx_call *c, const char *fallback)
{
    const char *v = grpcx_call_metadata(c, "x-correlation-id");
    if (v == NULL || strlen(v) > 128) return fallback;
    for (const char *p = v; *p != '\0'; p++)
        if (*p < 0x21 || *p > 0x7E) return fallback;
    return v;
}

static const char *const INSERT_TASK_SQL =
    "with t as ("
    "  insert into write.tasks (id, user_id, title, description, priority, due_at, category, tags,"
    "                           version, created_at, updated_at)"
    "  values ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9))"
    " insert into write.events (event_id, event_type, schema_version, user_id, aggregate_type,"
    "                           aggregate_id, aggregate_version, envelope)"
    " values ($10, 'task.created', 2, $2, 'task', $1, 1, $11)"
    " returning position";

static int create_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__CreateTaskRequest *rq = (const Todo__V1__CreateTaskRequest *)req;
    cmd_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX], task_id[37], event_id[37], created[40], due[40], prio[8];
    Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
    Todo__V1__CommandReply *rp;
    cmd_new_task nt;
    uint8_t *env;
    size_t env_len;
    int rc;

    if ((rc = caller(c, t, user, err)) != 0) return rc;
    if ((rc = cmd_validate_create(rq, &nt, err)) != 0) return rc;
    if (rq->request_id[0] != '\0')
        return todo_err_set(err, TODO_EUNIMPL,
                            "request_id: idempotent retries are not implemented yet; send the command without it");
    if (text_uuid_v4(task_id) != 0 || text_uuid_v4(event_id) != 0)
        return todo_err_set(err, TODO_EINTERNAL, "no randomness for a new id");

    int64_t now = event_now_us();
    ev.task_id = task_id;
    ev.title = (char *)nt.title;
    ev.description = (char *)nt.description;
    ev.priority = (Todo__V1__Priority)nt.priority;
    ev.due_at = nt.has_due ? event_timestamp(a, nt.due_us) : NULL;
    ev.n_tags = nt.n_tags;
    ev.tags = (char **)nt.tags;
    ev.created_at = event_timestamp(a, now);
    ev.category = (char *)nt.category;
    event_meta m = {
        .event_id = event_id, .event_type = "task.created", .source = "todo-command", .time_us = now,
        .user_id = user, .aggregate_type = "task", .aggregate_id = task_id, .aggregate_version = 1,
        .schema_version = 2, .correlation_id = correlation(c, event_id), .causation_id = "",
    };
    if ((rc = event_encode(&m, &ev.base, a, &env, &env_len, err)) != 0) return rc;

    event_format_time(now, created, sizeof created);
    if (nt.has_due) event_format_time(nt.due_us, due, sizeof due);
    snprintf(prio, sizeof prio, "%d", nt.priority);
    const char *params[11] = {task_id, user, nt.title, nt.description, prio, nt.has_due ? due : NULL,
                              nt.category, pgx_text_array(a, nt.tags, nt.n_tags), created, event_id,
                              (const char *)env};
    int lengths[11] = {0};
    int formats[11] = {0};
    lengths[10] = (int)env_len;
    formats[10] = 1;

    if ((rc = pgx_ensure(&t->pg, t->cfg->pg_url, t->app_name, err)) != 0) return rc;
    PGresult *r = pgx_execb(t->pg, INSERT_TASK_SQL, 11, params, lengths, formats, err);
    if (r == NULL) {
        log_error("command", "CreateTask write failed", "detail=\"%s\"", err->msg);
        return todo_err_set(err, err->code == TODO_EUNAVAIL ? TODO_EUNAVAIL : TODO_EINTERNAL,
                            "the task could not be stored; retry later");
    }
    int64_t position = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);

    rp = arena_alloc(a, sizeof *rp);
    todo__v1__command_reply__init(rp);
    rp->id = arena_strdup(a, task_id);
    rp->version = 1;
    rp->event_id = arena_strdup(a, event_id);
    rp->consistency_token = arena_alloc(a, 40);
    event_token_encode(position, rp->consistency_token);
    *resp = &rp->base;
    log_debug("command", "task created", "user=%s task=%s position=%" PRId64, user, task_id, position);
    return TODO_OK;
}

int cmd_service_register(grpcx_server *s, todo_err *err)
{
    static const grpcx_method methods[] = {
        {"CreateTask", create_task},
        /* The other commands answer UNIMPLEMENTED until they land. */
    };
    return grpcx_server_add_service(s, &todo__v1__task_command_service__descriptor, methods,
                                    sizeof methods / sizeof methods[0], err);
}
