/* proj_apply: see proj_apply.h. */
#include "proj_apply.h"

#include "park.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "log.h"
#include "trace.h"
#include "pgx.h"
#include "proj_cache.h"
#include "reg_local.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"
#include "topic_names.h"

const char *const proj_source_topics[PROJ_N_SOURCE_TOPICS] = {TOPIC_TASKS, TOPIC_REMINDERS, TOPIC_USERS, TOPIC_SAGA};

typedef enum outcome { APPLIED, SKIPPED, DEAD } outcome;

/* A payload time as SQL text. One out of range (a hostile or broken
 * producer) would overflow the conversion: it becomes text the database
 * refuses, so the record is dead-lettered saying why. */
static char *ts_text(arena *a, const Google__Protobuf__Timestamp *ts)
{
    if (ts == NULL) return NULL;
    if (!event_timestamp_valid(ts)) return (char *)"a time outside years 1 to 9999";
    return event_time_text(a, event_timestamp_us(ts));
}

/* Decodes task.created at any known schema version into the current one. */
static Todo__V1__TaskCreatedV2 *task_created(const Todo__V1__EventEnvelope *env, arena *a, const char **why)
{
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    if (env->schema_version == 2) {
        Todo__V1__TaskCreatedV2 *v2 = todo__v1__task_created_v2__unpack(&alloc, env->data.len, env->data.data);
        if (v2 == NULL) *why = "task.created v2 payload does not decode";
        return v2;
    }
    if (env->schema_version == 1) {
        Todo__V1__TaskCreated *v1 = todo__v1__task_created__unpack(&alloc, env->data.len, env->data.data);
        if (v1 == NULL) {
            *why = "task.created v1 payload does not decode";
            return NULL;
        }
        /* Upcast v1 -> v2: the same fields, no category. */
        Todo__V1__TaskCreatedV2 *v2 = arena_alloc(a, sizeof *v2);
        todo__v1__task_created_v2__init(v2);
        v2->task_id = v1->task_id;
        v2->title = v1->title;
        v2->description = v1->description;
        v2->priority = v1->priority;
        v2->due_at = v1->due_at;
        v2->n_tags = v1->n_tags;
        v2->tags = v1->tags;
        v2->created_at = v1->created_at;
        return v2;
    }
    *why = arena_printf(a, "task.created schema version %d is not supported by this projector", env->schema_version);
    return NULL;
}

/* What applying one event takes: one statement that checks and advances the
 * aggregate's applied version (read.applied_versions) and, when the event is
 * newer, writes the read model. Parameters: $1 aggregate id, $2 version,
 * $3 event time, then the write's own. */
typedef struct planned {
    const char *write; /* a data-modifying statement guarded by CLAIMED, or NULL */
    const char *params[16];
    int n;
    bool feed;         /* also adds the event to its user's update feed (params: user, kind, type last) */
} planned;

/* True in the write when the event claimed its version (it is newer). */
#define CLAIMED " exists (select 1 from claim)"

/* The statement for p: it returns the version applied before and whether
 * this event claimed the next. One round trip (or none: it is pipelined). */
static const char *claim_sql(arena *a, const planned *p)
{
    /* The feed (migration 0025): the user's next position, and the row. */
    const char *feed = !p->feed ? ""
                                : arena_printf(a,
                                               ", head as (insert into feed.heads as h (user_id, position)"
                                               "   select $%d, 1 where" CLAIMED
                                               "   on conflict (user_id) do update set position = h.position + 1"
                                               "   returning position),"
                                               /* recorded_at: after the heads row lock, so a user's
                                                * later positions never have earlier times (pruning
                                                * by time leaves no gap) */
                                               " fed as (insert into feed.updates (user_id, position, kind, entity_id,"
                                               "   version, event_type, event_time, recorded_at) select $%d, position,"
                                               "   $%d, $1::uuid, $2::bigint, $%d, $3::timestamptz, clock_timestamp()"
                                               "   from head)",
                                               p->n - 2, p->n - 2, p->n - 1, p->n);
    return arena_printf(a,
                        "with old as (select version from applied_versions where aggregate_id = $1::uuid for update),"
                        " claim as (insert into applied_versions (aggregate_id, version) values ($1::uuid, $2::bigint)"
                        "   on conflict (aggregate_id) do update set version = excluded.version"
                        "   where applied_versions.version < excluded.version returning 1)%s%s%s%s"
                        " select coalesce((select version from old), 0), exists (select 1 from claim), $3::timestamptz",
                        p->write != NULL ? ", w as (" : "", p->write != NULL ? p->write : "",
                        p->write != NULL ? ")" : "", feed);
}

/* The feed's kind of an event type, or NULL. */
static const char *feed_kind(const char *type)
{
    static const struct {
        const char *prefix, *kind;
    } kinds[] = {{"task.", "task"},
                 {"reminder.", "reminder"},
                 {"inbox.", "notification"},
                 {"recurring_pattern.", "pattern"},
                 {"user.", "profile"}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(type, kinds[i].prefix, strlen(kinds[i].prefix)) == 0) return kinds[i].kind;
    return NULL;
}

/* Makes p also add env to its user's update feed. */
static void plan_feed(planned *p, const Todo__V1__EventEnvelope *env)
{
    const char *kind = feed_kind(env->event_type);
    if (kind == NULL || env->user_id[0] == '\0') return;
    p->params[p->n++] = env->user_id;
    p->params[p->n++] = kind;
    p->params[p->n++] = env->event_type;
    p->feed = true;
}

/* Starts p with the common parameters. */
static void plan_base(planned *p, const Todo__V1__EventEnvelope *env, arena *a, const char *time)
{
    memset(p, 0, sizeof *p);
    p->params[0] = env->aggregate_id;
    p->params[1] = arena_printf(a, "%" PRId64, env->aggregate_version);
    p->params[2] = time;
    p->n = 3;
}

static outcome plan_task_created(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
    Todo__V1__TaskCreatedV2 *ev = task_created(env, a, why);
    if (ev == NULL) return DEAD;
    if (strcmp(ev->task_id, env->aggregate_id) != 0 || !text_is_uuid(ev->task_id) || ev->title[0] == '\0' ||
        ev->created_at == NULL || (int)ev->priority < 0 || (int)ev->priority > 4) {
        *why = "task.created payload is inconsistent (task id, title, created_at or priority)";
        return DEAD;
    }
    plan_base(p, env, a, ts_text(a, ev->created_at));
    const char *extra[7] = {env->user_id, ev->title, ev->description, arena_printf(a, "%d", (int)ev->priority),
                            ts_text(a, ev->due_at), ev->category, pgx_text_array(a, ev->tags, ev->n_tags)};
    memcpy(p->params + 3, extra, sizeof extra);
    p->n += 7;
    /* An occurrence of a series names its pattern (v2 field 9; empty otherwise). */
    if (ev->recurring_pattern_id != NULL && ev->recurring_pattern_id[0] != '\0') {
        if (!text_is_uuid(ev->recurring_pattern_id)) {
            *why = "task.created recurring_pattern_id is not a UUID";
            return DEAD;
        }
        p->params[p->n++] = ev->recurring_pattern_id;
        p->write = "insert into tasks (id, user_id, title, description, priority, due_at, category, tags, version,"
                   " created_at, updated_at, recurring_pattern_id) select $1::uuid, $4, $5, $6, $7::smallint,"
                   " $8::timestamptz, $9, $10::text[], $2::bigint, $3::timestamptz, $3::timestamptz, $11::uuid where"
                   CLAIMED " on conflict (id) do nothing";
        return APPLIED;
    }
    p->write = "insert into tasks (id, user_id, title, description, priority, due_at, category, tags, version,"
               " created_at, updated_at) select $1::uuid, $4, $5, $6, $7::smallint, $8::timestamptz, $9, $10::text[],"
               " $2::bigint, $3::timestamptz, $3::timestamptz where" CLAIMED " on conflict (id) do nothing";
    return APPLIED;
}

/* Decodes env's payload with desc into a; NULL (and *why) when it does not
 * decode or names another aggregate than the envelope. */
static ProtobufCMessage *payload(const Todo__V1__EventEnvelope *env, const ProtobufCMessageDescriptor *desc, arena *a,
                                 const char **why)
{
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    if (env->schema_version != 1) {
        *why = arena_printf(a, "%s schema version %d is not supported by this projector", env->event_type,
                            env->schema_version);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, env->data.len, env->data.data);
    if (m == NULL) {
        *why = arena_printf(a, "%s payload does not decode as %s", env->event_type, desc->name);
        return NULL;
    }
    /* Every event's field 1 is its aggregate's id (task, reminder, pattern). */
    const char *id = *(char *const *)((const char *)m + desc->fields[0].offset);
    if (strcmp(id, env->aggregate_id) != 0) {
        *why = arena_printf(a, "%s payload names %s, the envelope %s", env->event_type, id, env->aggregate_id);
        return NULL;
    }
    return m;
}

static outcome plan_task_updated(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
    Todo__V1__TaskUpdated *ev = (Todo__V1__TaskUpdated *)payload(env, &todo__v1__task_updated__descriptor, a, why);
    if (ev == NULL) return DEAD;
    plan_base(p, env, a, ts_text(a, env->time));
    /* Only the fields the event says changed are written: the others may
     * have been changed by later events a replay has not reached yet. */
    char sql[512];
    size_t len = (size_t)snprintf(sql, sizeof sql, "update tasks set version = $2::bigint, updated_at = $3::timestamptz");
    for (size_t i = 0; i < ev->n_changed_fields; i++) {
        const char *f = ev->changed_fields[i], *col = NULL, *cast = "", *value = NULL;
        if (strcmp(f, "title") == 0) col = "title", value = ev->title;
        else if (strcmp(f, "description") == 0) col = "description", value = ev->description;
        else if (strcmp(f, "priority") == 0) col = "priority", cast = "::smallint",
                                             value = arena_printf(a, "%d", (int)ev->priority);
        else if (strcmp(f, "due_at") == 0) col = "due_at", cast = "::timestamptz", value = ts_text(a, ev->due_at);
        else if (strcmp(f, "category") == 0) col = "category", value = ev->category;
        else if (strcmp(f, "tags") == 0) col = "tags", cast = "::text[]", value = pgx_text_array(a, ev->tags, ev->n_tags);
        if (col == NULL || p->n == 9 || strstr(sql, arena_printf(a, " %s =", col)) != NULL) {
            *why = arena_printf(a, "task.updated names an unknown or repeated field \"%.40s\"", f);
            return DEAD;
        }
        p->params[p->n++] = value;
        len += (size_t)snprintf(sql + len, sizeof sql - len, ", %s = $%d%s", col, p->n, cast);
    }
    snprintf(sql + len, sizeof sql - len, " where id = $1::uuid and" CLAIMED);
    p->write = arena_strdup(a, sql);
    return APPLIED;
}

/* task.completed, .reopened, .deleted, .restored: a payload with the task id
 * and a time, and one fixed change. */
static outcome plan_task_state(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
#define TASK_SET(change) \
    "update tasks set " change ", version = $2::bigint, updated_at = $3::timestamptz where id = $1::uuid and" CLAIMED
    static const struct {
        const char *type;
        const ProtobufCMessageDescriptor *desc;
        const char *sql;
    } kinds[] = {
        {"task.completed", &todo__v1__task_completed__descriptor, TASK_SET("completed = true, completed_at = $3")},
        {"task.reopened", &todo__v1__task_reopened__descriptor, TASK_SET("completed = false, completed_at = null")},
        {"task.deleted", &todo__v1__task_deleted__descriptor, TASK_SET("deleted = true")},
        {"task.restored", &todo__v1__task_restored__descriptor, TASK_SET("deleted = false")},
    };
#undef TASK_SET
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (strcmp(env->event_type, kinds[k].type) != 0) continue;
        if (payload(env, kinds[k].desc, a, why) == NULL) return DEAD;
        plan_base(p, env, a, ts_text(a, env->time));
        p->write = kinds[k].sql;
        return APPLIED;
    }
    *why = arena_printf(a, "no projection for event type %s", env->event_type);
    return DEAD;
}

/* recurring_pattern.created marks its task as a series' template;
 * recurring_pattern.updated changes nothing the read model shows. */
static outcome plan_pattern(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
    bool created = strcmp(env->event_type, "recurring_pattern.created") == 0;
    ProtobufCMessage *m = payload(env, created ? &todo__v1__recurring_pattern_created__descriptor
                                               : &todo__v1__recurring_pattern_updated__descriptor, a, why);
    if (m == NULL) return DEAD;
    plan_base(p, env, a, ts_text(a, env->time));
    if (created) {
        p->params[p->n++] = ((const Todo__V1__RecurringPatternCreated *)m)->task_id;
        p->write = "update tasks set recurring_pattern_id = $1::uuid where id = $4::uuid and" CLAIMED;
    }
    return APPLIED;
}

/* reminder.*: the reminders read model. */
static outcome plan_reminder(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
    const char *type = env->event_type;
    const ProtobufCMessageDescriptor *desc =
        strcmp(type, "reminder.scheduled") == 0   ? &todo__v1__reminder_scheduled__descriptor
        : strcmp(type, "reminder.cancelled") == 0 ? &todo__v1__reminder_cancelled__descriptor
        : strcmp(type, "reminder.snoozed") == 0   ? &todo__v1__reminder_snoozed__descriptor
        : strcmp(type, "reminder.triggered") == 0 ? &todo__v1__reminder_triggered__descriptor
        : strcmp(type, "reminder.restored") == 0  ? &todo__v1__reminder_restored__descriptor
                                                  : NULL;
    if (desc == NULL) {
        *why = arena_printf(a, "no projection for event type %s", type);
        return DEAD;
    }
    ProtobufCMessage *m = payload(env, desc, a, why);
    if (m == NULL) return DEAD;
    plan_base(p, env, a, ts_text(a, env->time));
#define REMINDER_SET(change)                                                                                  \
    "update reminders set " change ", version = $2::bigint, updated_at = $3::timestamptz where id = $1::uuid" \
    " and" CLAIMED
    if (desc == &todo__v1__reminder_scheduled__descriptor) {
        const Todo__V1__ReminderScheduled *ev = (const Todo__V1__ReminderScheduled *)m;
        if (!text_is_uuid(ev->task_id) || ev->remind_at == NULL) {
            *why = "reminder.scheduled payload is inconsistent (task id or remind_at)";
            return DEAD;
        }
        const char *extra[4] = {ev->task_id, env->user_id, ts_text(a, ev->remind_at),
                                arena_printf(a, "%d", (int)ev->channel)};
        memcpy(p->params + 3, extra, sizeof extra);
        p->n += 4;
        p->write = "insert into reminders (id, version, created_at, updated_at, task_id, user_id, remind_at, channel,"
                   " status) select $1::uuid, $2::bigint, $3::timestamptz, $3::timestamptz, $4::uuid, $5,"
                   " $6::timestamptz, $7::smallint, 'scheduled' where" CLAIMED " on conflict (id) do nothing";
    } else if (desc == &todo__v1__reminder_cancelled__descriptor) {
        p->params[p->n++] = ((const Todo__V1__ReminderCancelled *)m)->reason;
        p->write = REMINDER_SET("status = 'cancelled', reason = $4");
    } else if (desc == &todo__v1__reminder_restored__descriptor) {
        p->write = REMINDER_SET("status = 'scheduled', reason = ''");
    } else if (desc == &todo__v1__reminder_snoozed__descriptor) {
        p->params[p->n++] = ts_text(a, ((const Todo__V1__ReminderSnoozed *)m)->remind_at);
        p->write = REMINDER_SET("status = 'scheduled', remind_at = coalesce($4::timestamptz, remind_at)");
    } else {
        const Todo__V1__ReminderTriggered *ev = (const Todo__V1__ReminderTriggered *)m;
        p->params[p->n++] = ts_text(a, ev->triggered_at != NULL ? ev->triggered_at : env->time);
        p->write = REMINDER_SET("status = 'fired', triggered_at = $4::timestamptz");
    }
#undef REMINDER_SET
    return APPLIED;
}

/* users.events.v1: the inbox (read.notifications); a notification profile
 * changes nothing the read model shows (its version is claimed all the
 * same, so a consistency token of SetNotificationPreferences is served). */
static outcome plan_user(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
    const char *t = env->event_type;
    if (strcmp(t, "user.notification_preferences_set") == 0) {
        if (payload(env, &todo__v1__notification_preferences_set__descriptor, a, why) == NULL) return DEAD;
        plan_base(p, env, a, ts_text(a, env->time));
        return APPLIED;
    }
    if (strcmp(t, "inbox.entry_added") == 0) {
        Todo__V1__InboxEntryAdded *ev =
            (Todo__V1__InboxEntryAdded *)payload(env, &todo__v1__inbox_entry_added__descriptor, a, why);
        if (ev == NULL) return DEAD;
        if (ev->created_at == NULL || (ev->task_id[0] != '\0' && !text_is_uuid(ev->task_id))) {
            *why = "inbox.entry_added payload is inconsistent (created_at or task id)";
            return DEAD;
        }
        plan_base(p, env, a, ts_text(a, ev->created_at));
        const char *extra[5] = {env->user_id, ev->notification_id, ev->subject, ev->body,
                                ev->task_id[0] != '\0' ? ev->task_id : NULL};
        memcpy(p->params + 3, extra, sizeof extra);
        p->n += 5;
        p->write = "insert into notifications (id, user_id, notification_id, subject, body, task_id, version,"
                   " created_at) select $1::uuid, $4, $5, $6, $7, $8::uuid, $2::bigint, $3::timestamptz where" CLAIMED
                   " on conflict (id) do nothing";
        return APPLIED;
    }
    if (strcmp(t, "inbox.entry_read") == 0) {
        Todo__V1__InboxEntryRead *ev =
            (Todo__V1__InboxEntryRead *)payload(env, &todo__v1__inbox_entry_read__descriptor, a, why);
        if (ev == NULL) return DEAD;
        plan_base(p, env, a, ts_text(a, ev->read_at != NULL ? ev->read_at : env->time));
        p->write = "update notifications set read_at = $3::timestamptz, version = $2::bigint where id = $1::uuid and"
                   CLAIMED;
        return APPLIED;
    }
    *why = arena_printf(a, "no projection for event type %s", t);
    return DEAD;
}

/* The task's history (read.task_history, migration 0027): after a task
 * event is applied, the task as it left it. A statement of its own, after
 * the event's (a statement does not see its own CTEs' writes); it writes
 * only when the read model's row is at the event's version (the event was
 * applied now or before: then the row exists already). */
#define HISTORY_SQL                                                                                                  \
    "insert into task_history (task_id, version, user_id, event_type, event_time, actor, correlation_id, title,"    \
    " description, priority, due_at, completed, completed_at, category, tags, deleted, recurring_pattern_id)"      \
    " select id, version, user_id, $3, $4::timestamptz, $5, $6, title, description, priority, due_at, completed,"  \
    " completed_at, category, tags, deleted, recurring_pattern_id from tasks where id = $1::uuid"                  \
    " and version = $2::bigint on conflict (task_id, version) do nothing"
#define HISTORY_PARAMS 6

/* The parameters of HISTORY_SQL for env, or false when env is not a task's. */
static bool history_params(const Todo__V1__EventEnvelope *env, arena *a, const char **p)
{
    if (strncmp(env->event_type, "task.", 5) != 0) return false;
    const char *actor = event_actor(env);
    p[0] = env->aggregate_id;
    p[1] = arena_printf(a, "%" PRId64, env->aggregate_version);
    p[2] = env->event_type;
    p[3] = ts_text(a, env->time);
    p[4] = actor != NULL ? actor : "";
    p[5] = env->correlation_id;
    return true;
}

/* True for an event claimed by its event id (plan_saga), not by its
 * aggregate's version: the Redis fast path, which knows versions, is not
 * asked about it. */
static bool claimed_by_event_id(const Todo__V1__EventEnvelope *env)
{
    return strncmp(env->event_type, "saga.", 5) == 0 || strcmp(env->event_type, "recurring.task.generated") == 0;
}

/* saga.events.v1: saga.* events keep read.task_sagas (GetTaskActivity);
 * recurring.task.generated changes nothing shown. A saga's events all carry
 * aggregate version 1, so these are claimed by event id: each is applied
 * once, and a state older than the one shown never replaces it. */
static outcome plan_saga(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
    if (!text_is_uuid(env->event_id)) {
        *why = "saga event id is not a UUID";
        return DEAD;
    }
    plan_base(p, env, a, ts_text(a, env->time));
    p->params[0] = env->event_id;
    p->params[1] = "1";
    if (strncmp(env->event_type, "saga.", 5) != 0) return APPLIED; /* recurring.task.generated */
    Todo__V1__SagaEvent *ev = (Todo__V1__SagaEvent *)payload(env, &todo__v1__saga_event__descriptor, a, why);
    if (ev == NULL) return DEAD;
    if (ev->task_id[0] == '\0') return APPLIED; /* no task to show it on */
    if (!text_is_uuid(ev->task_id) || !text_is_uuid(ev->saga_id)) {
        *why = "saga event names a saga or task that is not a UUID";
        return DEAD;
    }
    const char *extra[8] = {ev->saga_id, ev->task_id, env->user_id, ev->saga_type,
                            arena_printf(a, "%d", (int)ev->status), ev->step, ev->error, env->event_type};
    memcpy(p->params + 3, extra, sizeof extra);
    p->n += 8;
    p->write = "insert into task_sagas as s (saga_id, task_id, user_id, saga_type, status, step, error, last_event,"
               " started_at, updated_at) select $4::uuid, $5::uuid, $6, $7, $8::smallint, $9, $10, $11,"
               " $3::timestamptz, $3::timestamptz where" CLAIMED
               " on conflict (saga_id) do update set status = excluded.status, step = excluded.step,"
               " error = case when excluded.error <> '' then excluded.error else s.error end,"
               " last_event = excluded.last_event, updated_at = excluded.updated_at"
               " where s.updated_at <= excluded.updated_at";
    return APPLIED;
}

/* Plans one decoded record: APPLIED (p holds its statement) or DEAD. */
static outcome plan_record(const Todo__V1__EventEnvelope *env, arena *a, planned *p, const char **why)
{
    if (env->time == NULL) {
        *why = "envelope has no time";
        return DEAD;
    }
    const char *t = env->event_type;
    if (strcmp(t, "task.created") == 0) return plan_task_created(env, a, p, why);
    if (strcmp(t, "task.updated") == 0) return plan_task_updated(env, a, p, why);
    if (strncmp(t, "recurring_pattern.", 18) == 0) return plan_pattern(env, a, p, why);
    if (strncmp(t, "reminder.", 9) == 0) return plan_reminder(env, a, p, why);
    if (strncmp(t, "user.", 5) == 0 || strncmp(t, "inbox.", 6) == 0) return plan_user(env, a, p, why);
    if (strncmp(t, "saga.", 5) == 0 || strcmp(t, "recurring.task.generated") == 0) return plan_saga(env, a, p, why);
    return plan_task_state(env, a, p, why);
}

/* The outcome of a record's statement from its result (old version, claimed). */
static outcome claimed(const Todo__V1__EventEnvelope *env, const PGresult *r)
{
    int64_t have = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    if (PQgetvalue(r, 0, 1)[0] != 't') return SKIPPED;
    if (have + 1 != env->aggregate_version)
        log_warn("projector", "version gap: applying an event whose predecessor was not applied",
                 "aggregate=%s applied=%" PRId64 " event_version=%" PRId64 " event=%s", env->aggregate_id, have,
                 env->aggregate_version, env->event_id);
    return APPLIED;
}

/* A list of statements to pipeline, in an arena. */
typedef struct stmt_list {
    pgx_stmt *s;
    int n, cap;
} stmt_list;

static void add_stmt(stmt_list *l, arena *a, const char *sql, int n, const char *const *params)
{
    if (l->n == l->cap) {
        int cap = l->cap > 0 ? l->cap * 2 : 32;
        pgx_stmt *s = arena_alloc(a, (size_t)cap * sizeof *s);
        if (l->n > 0) memcpy(s, l->s, (size_t)l->n * sizeof *s);
        l->s = s;
        l->cap = cap;
    }
    const char **v = n > 0 ? arena_alloc(a, (size_t)n * sizeof *v) : NULL;
    if (n > 0) memcpy(v, params, (size_t)n * sizeof *v);
    l->s[l->n++] = (pgx_stmt){.sql = sql, .n = n, .values = v};
}

/* Adds the batch to projection_status. */
static void record_status(stmt_list *l, const proj_status *ps, const proj_stats *st, const char **dead, size_t n,
                          arena *a)
{
    const char *last_error = ps->last_error;
    for (size_t i = 0; i < n && last_error == NULL; i++)
        if (dead[i] != NULL) last_error = arena_printf(a, "dead letter: %s", dead[i]);
    const char *p[5] = {ps->projection, arena_printf(a, "%d", st->applied + st->skipped + st->dead),
                        arena_printf(a, "%d", st->applied), arena_printf(a, "%d", st->dead), last_error};
    add_stmt(l, a,
             "insert into projection_status as s (projection, batches, events, applied, dead, last_batch_at,"
             " last_error, last_error_at) values ($1, 1, $2::bigint, $3::bigint, $4::bigint, now(), $5,"
             " case when $5::text is null then null else now() end)"
             " on conflict (projection) do update set batches = s.batches + 1, events = s.events + excluded.events,"
             " applied = s.applied + excluded.applied, dead = s.dead + excluded.dead, last_batch_at = now(),"
             " last_error = coalesce(excluded.last_error, s.last_error),"
             " last_error_at = coalesce(excluded.last_error_at, s.last_error_at)",
             5, p);
}

/* Records, per partition, the offset after the batch's last record. */
static void record_offsets(stmt_list *l, const char *projection, rd_kafka_message_t **msgs, size_t n, arena *a)
{
    for (size_t i = 0; i < n; i++) {
        bool last = true; /* the last record of its partition in this batch */
        for (size_t j = i + 1; j < n && last; j++)
            last = msgs[j]->partition != msgs[i]->partition || msgs[j]->rkt != msgs[i]->rkt;
        if (!last) continue;
        const char *p[4] = {projection, rd_kafka_topic_name(msgs[i]->rkt), arena_printf(a, "%d", (int)msgs[i]->partition),
                            arena_printf(a, "%lld", (long long)msgs[i]->offset + 1)};
        add_stmt(l, a,
                 "insert into projection_offsets as o (projection, topic, partition, next_offset)"
                 " values ($1, $2, $3::int, $4::bigint) on conflict (projection, topic, partition)"
                 " do update set next_offset = greatest(o.next_offset, excluded.next_offset)",
                 4, p);
    }
}

/* True for a refusal that may pass on another try. */
static bool transient(int code) { return code == TODO_ECONFLICT || code == TODO_ELOCKED || code == TODO_EDEADLINE; }

/* Runs the records' statements one by one, each under a savepoint: one that
 * the database refuses is dead-lettered alone, unless the refusal may pass
 * on another try: then the batch fails naming it (*failed). */
static int run_one_by_one(PGconn *pg, rd_kafka_message_t **msgs, Todo__V1__EventEnvelope **envs,
                          const planned *plans, outcome *out, size_t n, arena *a, const char **dead, int *failed,
                          todo_err *err)
{
    int rc;
    for (size_t i = 0; i < n; i++) {
        if (out[i] != APPLIED) continue;
        if ((rc = pgx_cmd(pg, "savepoint rec", 0, NULL, err)) != 0) return rc;
        PGresult *r = pgx_exec(pg, claim_sql(a, &plans[i]), plans[i].n, plans[i].params, err);
        const char *hp[HISTORY_PARAMS];
        if (r != NULL && history_params(envs[i], a, hp)) {
            /* Under a savepoint of its own: a history row the database
             * refuses costs that row (logged), not the event. */
            todo_err herr;
            PGresult *h = NULL;
            if (pgx_cmd(pg, "savepoint hist", 0, NULL, &herr) == 0 &&
                (h = pgx_exec(pg, HISTORY_SQL, HISTORY_PARAMS, hp, &herr)) == NULL) {
                if (herr.code == TODO_EUNAVAIL) {
                    PQclear(r);
                    *err = herr;
                    return herr.code;
                }
                log_warn("projector", "the task's history row was refused; the event is applied without it",
                         "task=%s version=%" PRId64 " error=\"%s\"", envs[i]->aggregate_id,
                         envs[i]->aggregate_version, herr.msg);
                pgx_cmd(pg, "rollback to savepoint hist", 0, NULL, NULL);
            }
            PQclear(h);
        }
        if (r != NULL) {
            out[i] = claimed(envs[i], r);
            PQclear(r);
            continue;
        }
        if (err->code == TODO_EUNAVAIL) return err->code;
        if (transient(err->code)) {
            *failed = (int)i;
            return err->code;
        }
        /* This record alone breaks the database: dead-letter it, and what
         * must wait behind it (park.h). */
        dead[i] = arena_printf(a, "applying failed: %s", err->msg);
        out[i] = DEAD;
        park_followers(msgs, n, dead, i);
        for (size_t j = i + 1; j < n; j++)
            if (dead[j] != NULL) out[j] = DEAD;
        if ((rc = pgx_cmd(pg, "rollback to savepoint rec", 0, NULL, err)) != 0) return rc;
    }
    return TODO_OK;
}

static int run_batch(PGconn *pg, rd_kafka_message_t **msgs, size_t n, arena *a, const char **dead,
                     const proj_status *ps, proj_stats *st, bool one_by_one, todo_err *err)
{
    int rc;
    memset(st, 0, sizeof *st);
    st->failed = -1;
    /* Decode every record once, and ask the Redis fast path about them all in
     * one round trip. */
    Todo__V1__EventEnvelope **envs = arena_calloc(a, (n + 1) * sizeof *envs);
    const char **ids = arena_calloc(a, (n + 1) * sizeof *ids);
    int64_t *known = arena_calloc(a, (n + 1) * sizeof *known);
    outcome *out = arena_calloc(a, (n + 1) * sizeof *out);
    planned *plans = arena_calloc(a, (n + 1) * sizeof *plans);
    bool *done = arena_calloc(a, (n + 1) * sizeof *done); /* applied, or applied before */
    size_t n_ids = 0;
    proj_cache *cache = ps != NULL ? ps->cache : NULL;
    for (size_t i = 0; i < n; i++) {
        todo_err derr;
        out[i] = DEAD;
        if (msgs[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR || dead[i] != NULL) continue; /* given up on */
        if (event_decode(msgs[i]->payload, msgs[i]->len, a, &envs[i], &derr) != 0 ||
            (ps != NULL && ps->schemas != NULL && (rc = reg_resolve_envelope(ps->schemas, pg, envs[i], &derr)) != 0)) {
            if (envs[i] != NULL && derr.code != TODO_EINVAL) { /* the registry could not be asked: retry */
                *err = derr;
                return derr.code;
            }
            envs[i] = NULL;
            dead[i] = arena_strdup(a, derr.msg);
        }
    }
    /* What must wait behind a dead record is not applied (park.h). */
    for (size_t i = 0; i < n; i++)
        if (dead[i] != NULL) park_followers(msgs, n, dead, i);
    for (size_t i = 0; i < n; i++) {
        if (dead[i] != NULL) envs[i] = NULL;
        else if (envs[i] != NULL && !claimed_by_event_id(envs[i])) ids[n_ids++] = envs[i]->aggregate_id;
    }
    int64_t *versions = arena_calloc(a, (n_ids + 1) * sizeof *versions);
    proj_cache_lookup(cache, ids, n_ids, versions);
    for (size_t i = 0, k = 0; i < n; i++)
        if (envs[i] != NULL && !claimed_by_event_id(envs[i])) known[i] = versions[k++];
    proj_cache_discard(cache);

    /* Plan each record: one statement, or dead, or known to Redis. */
    stmt_list head = {0}, tail = {0};
    add_stmt(&head, a, "begin", 0, NULL);
    /* A rebuild's swap takes this lock exclusively: no live batch runs across it. */
    if (ps == NULL || !ps->shadow) add_stmt(&head, a, "select pg_advisory_xact_lock_shared(" PROJ_SWAP_LOCK_KEY ")", 0, NULL);
    bool *history = arena_calloc(a, (n + 1) * sizeof *history); /* a HISTORY_SQL follows its statement */
    const char **feed_users = arena_calloc(a, (n + 1) * sizeof *feed_users);
    size_t n_feed_users = 0;
    for (size_t i = 0; i < n; i++) {
        if (envs[i] == NULL || dead[i] != NULL) continue; /* dead, or waits behind a record planned dead */
        if (known[i] >= envs[i]->aggregate_version) { /* Redis: applied before */
            out[i] = SKIPPED;
            continue;
        }
        out[i] = plan_record(envs[i], a, &plans[i], &dead[i]);
        if (out[i] == DEAD) park_followers(msgs, n, dead, i);
        if (out[i] == APPLIED && (ps == NULL || !ps->shadow)) plan_feed(&plans[i], envs[i]); /* a replay adds no feed */
        if (plans[i].feed) feed_users[n_feed_users++] = envs[i]->user_id;
    }
    /* The feed's heads rows of the batch's users, locked first and in one
     * order (sorted, as the statement inserts them): two batches sharing
     * users (a rebalance's old and new owner) wait for each other instead
     * of deadlocking on the rows the claims lock one by one. */
    if (n_feed_users > 0) {
        const char *p[1] = {pgx_text_array(a, (char **)feed_users, n_feed_users)};
        add_stmt(&head, a,
                 "insert into feed.heads as h (user_id, position) select distinct u, 0 from unnest($1::text[]) u"
                 " order by 1 on conflict (user_id) do update set position = h.position",
                 1, p);
    }
    int first = head.n;
    for (size_t i = 0; i < n && !one_by_one; i++) {
        if (out[i] != APPLIED) continue;
        add_stmt(&head, a, claim_sql(a, &plans[i]), plans[i].n, plans[i].params);
        const char *hp[HISTORY_PARAMS];
        if ((history[i] = history_params(envs[i], a, hp))) add_stmt(&head, a, HISTORY_SQL, HISTORY_PARAMS, hp);
    }
    /* Then run them: all in one pipeline (one round trip), or one by one. */
    PGresult **res = arena_calloc(a, (size_t)(head.n + 1) * sizeof *res);
    if ((rc = pgx_pipeline(pg, head.s, head.n, res, NULL, err)) != 0) goto fail;
    for (size_t i = 0, k = (size_t)first; i < n && !one_by_one; i++) {
        if (out[i] != APPLIED) continue;
        out[i] = claimed(envs[i], res[k]);
        PQclear(res[k++]);
        if (history[i]) PQclear(res[k++]);
    }
    for (int k = 0; k < first; k++) PQclear(res[k]);
    if (one_by_one && (rc = run_one_by_one(pg, msgs, envs, plans, out, n, a, dead, &st->failed, err)) != 0) goto fail;

    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
        st->applied += out[i] == APPLIED;
        st->skipped += out[i] == SKIPPED;
        st->dead += out[i] == DEAD;
        done[i] = out[i] != DEAD;
        if (done[i] && !claimed_by_event_id(envs[i]))
            proj_cache_note(cache, envs[i]->aggregate_id, envs[i]->aggregate_version);
    }
    /* The batch's bookkeeping and the commit: a second round trip. */
    if (ps != NULL) {
        record_status(&tail, ps, st, dead, n, a);
        record_offsets(&tail, ps->projection, msgs, n, a);
    }
    add_stmt(&tail, a, "select pg_notify('read_progress', '')", 0, NULL);
    /* WatchUpdates streams (todo-query) hear of their user's new positions. */
    for (size_t i = 0; i < n; i++) {
        if (out[i] != APPLIED || !plans[i].feed) continue;
        bool first_of_user = true; /* the user's first fed event in the batch */
        for (size_t j = 0; j < i && first_of_user; j++)
            first_of_user = !(out[j] == APPLIED && plans[j].feed && strcmp(envs[j]->user_id, envs[i]->user_id) == 0);
        if (first_of_user) add_stmt(&tail, a, "select pg_notify('feed', $1)", 1, (const char *const *)&envs[i]->user_id);
    }
    add_stmt(&tail, a, "commit", 0, NULL);
    if ((rc = pgx_pipeline(pg, tail.s, tail.n, NULL, NULL, err)) != 0) goto fail;
    proj_cache_flush(cache); /* only what the database holds now */
    if (log_enabled(LOG_DEBUG)) /* each applied event, in its trace */
        for (size_t i = 0; i < n; i++) {
            trace_ctx parent, span;
            if (out[i] != APPLIED || !trace_parse(event_traceparent(envs[i]), &parent)) continue;
            trace_child(&parent, &span);
            trace_enter(&span);
            log_debug("projector", "applied", "type=%s aggregate=%s version=%lld event=%s", envs[i]->event_type,
                      envs[i]->aggregate_id, (long long)envs[i]->aggregate_version, envs[i]->event_id);
            trace_leave();
        }
    return TODO_OK;
fail:
    if (PQstatus(pg) == CONNECTION_OK) pgx_cmd(pg, "rollback", 0, NULL, NULL);
    proj_cache_discard(cache);
    return rc;
}

int proj_apply_batch_status(PGconn *pg, rd_kafka_message_t **msgs, size_t n, arena *a, const char **dead_reason,
                            const proj_status *status, proj_stats *stats, todo_err *err)
{
    int rc = run_batch(pg, msgs, n, a, dead_reason, status, stats, false, err);
    if (rc == TODO_OK || rc == TODO_EUNAVAIL) return rc;
    /* Some record made the database refuse the batch: apply record by record,
     * each under a savepoint, so only that record is dead-lettered. */
    log_warn("projector", "batch refused; retrying record by record", "error=\"%s\"", err->msg);
    return run_batch(pg, msgs, n, a, dead_reason, status, stats, true, err);
}

