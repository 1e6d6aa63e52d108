/*
 * cmd_patterns: the recurring-pattern aggregate and its commands.
 *
 *   CreateRecurringPattern  makes a task (of the caller, not deleted) the
 *                           template of a series; a task has at most one
 *                           pattern (ALREADY_EXISTS otherwise).
 *   UpdateRecurringPattern  replaces the rule (expected_version checked).
 *
 *   CreateNextOccurrence    the occurrence after a completed one (the
 *                           template, occurrence 1, or an occurrence): a
 *                           task like the template, due at the rule's next
 *                           time after the completed one's due time (or
 *                           after now, when that is earlier: a late
 *                           completion does not create an overdue task).
 *                           An empty reply id: the series has ended (or its
 *                           template was deleted); ALREADY_EXISTS: the
 *                           completed task already has its next occurrence.
 *
 * The rule is validated by cmd_validate_rule and stored serialized;
 * todo-saga asks for the next occurrence when a task of the series
 * completes (the task-completion saga).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_core.h"
#include "recur.h"
#include "tz.h"
#include "cmd_validate.h"
#include "event.h"
#include "pgx.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

typedef struct pattern {
    char id[37];
    char task_id[37];
    const Todo__V1__RecurrenceRule *rule;
} pattern;

static int load_pattern(cmd_ctx *x, const char *id, void **agg, int64_t *version, todo_err *err)
{
    const char *p[2] = {id, x->user};
    PGresult *r = pgx_exec(x->t->pg,
                           "select task_id::text, rule, version from write.recurring_patterns"
                           " where id = $1::uuid and user_id = $2",
                           2, p, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "recurring pattern %s not found", id);
    }
    pattern *pt = arena_calloc(x->a, sizeof *pt);
    snprintf(pt->id, sizeof pt->id, "%s", id);
    snprintf(pt->task_id, sizeof pt->task_id, "%s", PQgetvalue(r, 0, 0));
    size_t len = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 1), &len);
    ProtobufCAllocator alloc;
    arena_pbc_allocator(x->a, &alloc);
    pt->rule = raw != NULL ? todo__v1__recurrence_rule__unpack(&alloc, len, raw) : NULL;
    PQfreemem(raw);
    *version = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    PQclear(r);
    if (pt->rule == NULL) return todo_err_set(err, TODO_EINTERNAL, "stored rule of pattern %s does not decode", id);
    *agg = pt;
    return TODO_OK;
}

/* The rule as a bytea literal in hex. */
static const char *rule_param(arena *a, const Todo__V1__RecurrenceRule *rule)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = todo__v1__recurrence_rule__get_packed_size(rule);
    uint8_t *buf = arena_alloc(a, n + 1);
    char *out = arena_alloc(a, 2 * n + 3);
    todo__v1__recurrence_rule__pack(rule, buf);
    out[0] = '\\';
    out[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        out[2 + 2 * i] = hex[buf[i] >> 4];
        out[3 + 2 * i] = hex[buf[i] & 15];
    }
    out[2 + 2 * n] = '\0';
    return out;
}

static void pattern_state(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                          const char *const **params, int *n)
{
    const pattern *pt = agg;
    arena *a = x->a;
    const char **p = arena_alloc(a, 7 * sizeof *p);
    p[0] = pt->id;
    p[1] = x->user;
    p[2] = rule_param(a, pt->rule);
    p[3] = pt->rule->time_zone;
    p[4] = arena_printf(a, "%" PRId64, version);
    p[5] = cmd_store_time(a, true, now);
    if (version == 1) {
        p[6] = pt->task_id;
        /* on conflict: another pattern took the task meanwhile; nothing is written. */
        *sql = "insert into write.recurring_patterns (id, user_id, rule, time_zone, version, updated_at, task_id,"
               " created_at) values ($1::uuid, $2, $3::bytea, $4, $5::bigint, $6::timestamptz, $7::uuid,"
               " $6::timestamptz) on conflict (task_id) do nothing returning 1";
        *n = 7;
    } else {
        *sql = "update write.recurring_patterns set rule = $3::bytea, time_zone = $4, version = $5::bigint,"
               " updated_at = $6::timestamptz"
               " where id = $1::uuid and user_id = $2 and version = $5::bigint - 1 returning 1";
        *n = 6;
    }
    *params = p;
}

static const cmd_kind pattern_kind = {"recurring_pattern", load_pattern, pattern_state};

int cmd_create_pattern(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__CreateRecurringPatternRequest *rq = (const Todo__V1__CreateRecurringPatternRequest *)req;
    Todo__V1__RecurringPatternCreated ev = TODO__V1__RECURRING_PATTERN_CREATED__INIT;
    cmd_ctx x;
    pattern pt;
    int64_t now = event_now_us();
    int rc;

    if ((rc = cmd_begin(&x, c, "CreateRecurringPattern", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("task_id", rq->task_id, err)) != 0 ||
        (rc = cmd_validate_rule(rq->rule, now, x.t->cfg->zoneinfo_dir, err)) != 0)
        return rc;
    if ((rc = cmd_replay(&x, resp, err)) != 0 || *resp != NULL) return rc;
    const cmd_task *t;
    if ((rc = cmd_load_live_task(&x, rq->task_id, &t, err)) != 0) return rc;
    if (t->recurring_pattern_id[0] != '\0')
        return todo_err_set(err, TODO_EEXISTS, "task %s already has recurring pattern %s; update that one", t->id,
                            t->recurring_pattern_id);
    memset(&pt, 0, sizeof pt);
    if (text_uuid_v4(pt.id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a new id");
    snprintf(pt.task_id, sizeof pt.task_id, "%s", t->id);
    pt.rule = rq->rule;
    ev.pattern_id = pt.id;
    ev.task_id = pt.task_id;
    ev.rule = (Todo__V1__RecurrenceRule *)rq->rule;
    rc = cmd_create(&x, &pattern_kind, pt.id, &pt, now, "recurring_pattern.created", 1, &ev.base, resp, err);
    if (rc == TODO_ECONFLICT)
        return todo_err_set(err, TODO_EEXISTS, "task %s got a recurring pattern concurrently", t->id);
    return rc;
}

static int change_rule(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                       ProtobufCMessage **event, todo_err *err)
{
    pattern *pt = agg;
    (void)now;
    (void)schema;
    (void)err;
    Todo__V1__RecurringPatternUpdated *ev = arena_alloc(x->a, sizeof *ev);
    todo__v1__recurring_pattern_updated__init(ev);
    pt->rule = arg;
    ev->pattern_id = pt->id;
    ev->rule = (Todo__V1__RecurrenceRule *)pt->rule;
    *type = "recurring_pattern.updated";
    *event = &ev->base;
    return TODO_OK;
}

int cmd_update_pattern(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__UpdateRecurringPatternRequest *rq = (const Todo__V1__UpdateRecurringPatternRequest *)req;
    cmd_ctx x;
    int rc;
    if ((rc = cmd_begin(&x, c, "UpdateRecurringPattern", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("pattern_id", rq->pattern_id, err)) != 0 ||
        (rc = cmd_validate_expected_version(rq->expected_version, err)) != 0 ||
        (rc = cmd_validate_rule(rq->rule, event_now_us(), x.t->cfg->zoneinfo_dir, err)) != 0)
        return rc;
    return cmd_mutate(&x, &pattern_kind, rq->pattern_id, rq->expected_version, change_rule, rq->rule, resp, err);
}

int cmd_next_occurrence(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__CreateNextOccurrenceRequest *rq = (const Todo__V1__CreateNextOccurrenceRequest *)req;
    cmd_ctx x;
    void *agg;
    int64_t version, now = event_now_us();
    const cmd_task *done;
    int rc;
    if ((rc = cmd_begin(&x, c, "CreateNextOccurrence", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_id("pattern_id", rq->pattern_id, err)) != 0 ||
        (rc = cmd_validate_id("completed_task_id", rq->completed_task_id, err)) != 0)
        return rc;
    if ((rc = cmd_replay(&x, resp, err)) != 0 || *resp != NULL) return rc;
    if ((rc = load_pattern(&x, rq->pattern_id, &agg, &version, err)) != 0)
        return rc == TODO_ENOTFOUND ? rc : cmd_storage_error(&x, err);
    const pattern *pt = agg;
    if ((rc = cmd_load_live_task(&x, rq->completed_task_id, &done, err)) != 0) return rc;
    if (strcmp(done->id, pt->task_id) != 0 && (done->series_id == NULL || strcmp(done->series_id, pt->id) != 0))
        return todo_err_set(err, TODO_EINVAL, "completed_task_id: task %s is not in the series of pattern %s", done->id,
                            pt->id);
    if (!done->completed) return todo_err_set(err, TODO_EPRECOND, "task %s is not completed", done->id);

    Todo__V1__CommandReply *ended = arena_alloc(x.a, sizeof *ended);
    todo__v1__command_reply__init(ended);
    void *tagg;
    if ((rc = cmd_task_kind.load(&x, pt->task_id, &tagg, &version, err)) != 0) {
        if (rc != TODO_ENOTFOUND) return cmd_storage_error(&x, err);
        *resp = &ended->base; /* no template: the series is over */
        return TODO_OK;
    }
    const cmd_task *tpl = tagg;
    if (tpl->deleted) {
        *resp = &ended->base;
        return TODO_OK;
    }
    tz_zone *zone = tz_load(x.t->cfg->zoneinfo_dir, pt->rule->time_zone, err);
    if (zone == NULL) return todo_err_set(err, TODO_EINTERNAL, "time zone of pattern %s: %s", pt->id, err->msg);
    int64_t anchor = (tpl->has_due ? tpl->due_us : tpl->created_us) / 1000000;
    int64_t after = (done->has_due ? done->due_us : now) / 1000000;
    if (after < now / 1000000) after = now / 1000000;
    int count = done->occurrence > 0 ? done->occurrence : 1;
    int64_t next = recur_next(pt->rule, zone, anchor, after, count);
    tz_free(zone);
    if (next < 0) {
        *resp = &ended->base;
        return TODO_OK;
    }
    cmd_task t = *tpl;
    if (text_uuid_v4(t.id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a new id");
    t.user_id = x.user;
    t.has_due = true;
    t.due_us = next * 1000000;
    t.completed = false;
    t.completed_us = 0;
    t.created_us = now;
    t.series_id = pt->id;
    t.occurrence = count + 1;
    t.generated_from = done->id;
    rc = cmd_task_create(&x, &t, now, resp, err);
    if (rc == TODO_ECONFLICT)
        return todo_err_set(err, TODO_EEXISTS, "task %s already has its next occurrence", done->id);
    return rc;
}
