/* proj_tasks: the task read model as a projection definition (proj_def.h):
 * schema read, consumer group TODO_PROJECTOR_GROUP, topics tasks.events.v1,
 * reminders.events.v1, users.events.v1 and saga.events.v1 (see
 * proj_apply.h for what each event does to it), the update feed, the Redis
 * fast path, and each task event's history row. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "lock_keys.h"
#include "pgx.h"
#include "proj_def.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"
#include "topic_names.h"

static proj_outcome plan_task_created(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    Todo__V1__TaskCreatedV2 *ev = proj_task_created(env, a, why);
    if (ev == NULL) return PROJ_DEAD;
    if (strcmp(ev->task_id, env->aggregate_id) != 0 || !text_is_uuid(ev->task_id) || ev->title[0] == '\0' ||
        ev->created_at == NULL || (int)ev->priority < 0 || (int)ev->priority > 4) {
        *why = "task.created payload is inconsistent (task id, title, created_at or priority)";
        return PROJ_DEAD;
    }
    proj_plan_base(p, env, a, proj_ts_text(a, ev->created_at));
    const char *extra[7] = {env->user_id, ev->title, ev->description, arena_printf(a, "%d", (int)ev->priority),
                            proj_ts_text(a, ev->due_at), ev->category, pgx_text_array(a, ev->tags, ev->n_tags)};
    memcpy(p->params + 3, extra, sizeof extra);
    p->n += 7;
    /* An occurrence of a series names its pattern (v2 field 9; empty otherwise). */
    if (ev->recurring_pattern_id != NULL && ev->recurring_pattern_id[0] != '\0') {
        if (!text_is_uuid(ev->recurring_pattern_id)) {
            *why = "task.created recurring_pattern_id is not a UUID";
            return PROJ_DEAD;
        }
        p->params[p->n++] = ev->recurring_pattern_id;
        p->write = "insert into tasks (id, user_id, title, description, priority, due_at, category, tags, version,"
                   " created_at, updated_at, recurring_pattern_id) select $1::uuid, $4, $5, $6, $7::smallint,"
                   " $8::timestamptz, $9, $10::text[], $2::bigint, $3::timestamptz, $3::timestamptz, $11::uuid where"
                   PROJ_CLAIMED " on conflict (id) do nothing";
        return PROJ_APPLIED;
    }
    p->write = "insert into tasks (id, user_id, title, description, priority, due_at, category, tags, version,"
               " created_at, updated_at) select $1::uuid, $4, $5, $6, $7::smallint, $8::timestamptz, $9, $10::text[],"
               " $2::bigint, $3::timestamptz, $3::timestamptz where" PROJ_CLAIMED " on conflict (id) do nothing";
    return PROJ_APPLIED;
}

static proj_outcome plan_task_updated(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    Todo__V1__TaskUpdated *ev = (Todo__V1__TaskUpdated *)proj_payload(env, &todo__v1__task_updated__descriptor, a, why);
    if (ev == NULL) return PROJ_DEAD;
    proj_plan_base(p, env, a, proj_ts_text(a, env->time));
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
        else if (strcmp(f, "due_at") == 0) col = "due_at", cast = "::timestamptz", value = proj_ts_text(a, ev->due_at);
        else if (strcmp(f, "category") == 0) col = "category", value = ev->category;
        else if (strcmp(f, "tags") == 0) col = "tags", cast = "::text[]", value = pgx_text_array(a, ev->tags, ev->n_tags);
        if (col == NULL || p->n == 9 || strstr(sql, arena_printf(a, " %s =", col)) != NULL) {
            *why = arena_printf(a, "task.updated names an unknown or repeated field \"%.40s\"", f);
            return PROJ_DEAD;
        }
        p->params[p->n++] = value;
        len += (size_t)snprintf(sql + len, sizeof sql - len, ", %s = $%d%s", col, p->n, cast);
    }
    snprintf(sql + len, sizeof sql - len, " where id = $1::uuid and" PROJ_CLAIMED);
    p->write = arena_strdup(a, sql);
    return PROJ_APPLIED;
}

/* task.completed, .reopened, .deleted, .restored: a payload with the task id
 * and a time, and one fixed change. */
static proj_outcome plan_task_state(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
#define TASK_SET(change) \
    "update tasks set " change ", version = $2::bigint, updated_at = $3::timestamptz where id = $1::uuid and" PROJ_CLAIMED
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
        if (proj_payload(env, kinds[k].desc, a, why) == NULL) return PROJ_DEAD;
        proj_plan_base(p, env, a, proj_ts_text(a, env->time));
        p->write = kinds[k].sql;
        return PROJ_APPLIED;
    }
    *why = arena_printf(a, "no projection for event type %s", env->event_type);
    return PROJ_DEAD;
}

/* recurring_pattern.created marks its task as a series' template;
 * recurring_pattern.updated changes nothing the read model shows. */
static proj_outcome plan_pattern(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    bool created = strcmp(env->event_type, "recurring_pattern.created") == 0;
    ProtobufCMessage *m = proj_payload(env, created ? &todo__v1__recurring_pattern_created__descriptor
                                               : &todo__v1__recurring_pattern_updated__descriptor, a, why);
    if (m == NULL) return PROJ_DEAD;
    proj_plan_base(p, env, a, proj_ts_text(a, env->time));
    if (created) {
        p->params[p->n++] = ((const Todo__V1__RecurringPatternCreated *)m)->task_id;
        p->write = "update tasks set recurring_pattern_id = $1::uuid where id = $4::uuid and" PROJ_CLAIMED;
    }
    return PROJ_APPLIED;
}

/* reminder.*: the reminders read model. */
static proj_outcome plan_reminder(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
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
        return PROJ_DEAD;
    }
    ProtobufCMessage *m = proj_payload(env, desc, a, why);
    if (m == NULL) return PROJ_DEAD;
    proj_plan_base(p, env, a, proj_ts_text(a, env->time));
#define REMINDER_SET(change)                                                                                  \
    "update reminders set " change ", version = $2::bigint, updated_at = $3::timestamptz where id = $1::uuid" \
    " and" PROJ_CLAIMED
    if (desc == &todo__v1__reminder_scheduled__descriptor) {
        const Todo__V1__ReminderScheduled *ev = (const Todo__V1__ReminderScheduled *)m;
        if (!text_is_uuid(ev->task_id) || ev->remind_at == NULL) {
            *why = "reminder.scheduled payload is inconsistent (task id or remind_at)";
            return PROJ_DEAD;
        }
        const char *extra[4] = {ev->task_id, env->user_id, proj_ts_text(a, ev->remind_at),
                                arena_printf(a, "%d", (int)ev->channel)};
        memcpy(p->params + 3, extra, sizeof extra);
        p->n += 4;
        p->write = "insert into reminders (id, version, created_at, updated_at, task_id, user_id, remind_at, channel,"
                   " status) select $1::uuid, $2::bigint, $3::timestamptz, $3::timestamptz, $4::uuid, $5,"
                   " $6::timestamptz, $7::smallint, 'scheduled' where" PROJ_CLAIMED " on conflict (id) do nothing";
    } else if (desc == &todo__v1__reminder_cancelled__descriptor) {
        p->params[p->n++] = ((const Todo__V1__ReminderCancelled *)m)->reason;
        p->write = REMINDER_SET("status = 'cancelled', reason = $4");
    } else if (desc == &todo__v1__reminder_restored__descriptor) {
        p->write = REMINDER_SET("status = 'scheduled', reason = ''");
    } else if (desc == &todo__v1__reminder_snoozed__descriptor) {
        p->params[p->n++] = proj_ts_text(a, ((const Todo__V1__ReminderSnoozed *)m)->remind_at);
        p->write = REMINDER_SET("status = 'scheduled', remind_at = coalesce($4::timestamptz, remind_at)");
    } else {
        const Todo__V1__ReminderTriggered *ev = (const Todo__V1__ReminderTriggered *)m;
        p->params[p->n++] = proj_ts_text(a, ev->triggered_at != NULL ? ev->triggered_at : env->time);
        p->write = REMINDER_SET("status = 'fired', triggered_at = $4::timestamptz");
    }
#undef REMINDER_SET
    return PROJ_APPLIED;
}

/* users.events.v1: the inbox (read.notifications); a notification profile
 * changes nothing the read model shows (its version is claimed all the
 * same, so a consistency token of SetNotificationPreferences is served). */
static proj_outcome plan_user(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    const char *t = env->event_type;
    if (strcmp(t, "user.notification_preferences_set") == 0) {
        if (proj_payload(env, &todo__v1__notification_preferences_set__descriptor, a, why) == NULL) return PROJ_DEAD;
        proj_plan_base(p, env, a, proj_ts_text(a, env->time));
        return PROJ_APPLIED;
    }
    if (strcmp(t, "user.registered") == 0 || strcmp(t, "user.erasure_requested") == 0) {
        if (proj_payload(env, strcmp(t, "user.registered") == 0 ? &todo__v1__user_registered__descriptor
                                                                 : &todo__v1__user_erasure_requested__descriptor,
                         a, why) == NULL)
            return PROJ_DEAD;
        proj_plan_base(p, env, a, proj_ts_text(a, env->time));
        return PROJ_APPLIED;
    }
    if (strcmp(t, "user.erased") == 0) { /* every row of the user goes (task_stats: after, see history) */
        static const char *const deletes[] = {
            "delete from tasks where user_id = $4 and" PROJ_CLAIMED,
            "delete from task_history where user_id = $4 and" PROJ_CLAIMED,
            "delete from reminders where user_id = $4 and" PROJ_CLAIMED,
            "delete from notifications where user_id = $4 and" PROJ_CLAIMED,
            "delete from task_sagas where user_id = $4 and" PROJ_CLAIMED,
            "delete from feed.updates where user_id = $4 and" PROJ_CLAIMED,
            NULL};
        return proj_plan_user_erased(env, a, p, deletes, why);
    }
    if (strcmp(t, "inbox.entry_added") == 0) {
        Todo__V1__InboxEntryAdded *ev =
            (Todo__V1__InboxEntryAdded *)proj_payload(env, &todo__v1__inbox_entry_added__descriptor, a, why);
        if (ev == NULL) return PROJ_DEAD;
        if (ev->created_at == NULL || (ev->task_id[0] != '\0' && !text_is_uuid(ev->task_id))) {
            *why = "inbox.entry_added payload is inconsistent (created_at or task id)";
            return PROJ_DEAD;
        }
        proj_plan_base(p, env, a, proj_ts_text(a, ev->created_at));
        const char *extra[5] = {env->user_id, ev->notification_id, ev->subject, ev->body,
                                ev->task_id[0] != '\0' ? ev->task_id : NULL};
        memcpy(p->params + 3, extra, sizeof extra);
        p->n += 5;
        p->write = "insert into notifications (id, user_id, notification_id, subject, body, task_id, version,"
                   " created_at) select $1::uuid, $4, $5, $6, $7, $8::uuid, $2::bigint, $3::timestamptz where" PROJ_CLAIMED
                   " on conflict (id) do nothing";
        return PROJ_APPLIED;
    }
    if (strcmp(t, "inbox.entry_read") == 0) {
        Todo__V1__InboxEntryRead *ev =
            (Todo__V1__InboxEntryRead *)proj_payload(env, &todo__v1__inbox_entry_read__descriptor, a, why);
        if (ev == NULL) return PROJ_DEAD;
        proj_plan_base(p, env, a, proj_ts_text(a, ev->read_at != NULL ? ev->read_at : env->time));
        p->write = "update notifications set read_at = $3::timestamptz, version = $2::bigint where id = $1::uuid and"
                   PROJ_CLAIMED;
        return PROJ_APPLIED;
    }
    *why = arena_printf(a, "no projection for event type %s", t);
    return PROJ_DEAD;
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

/* proj_def.follow: HISTORY_SQL and its parameters after a task's event;
 * after user.erased, the user's statistics row (the trigger on tasks kept
 * it up while the user's tasks were deleted) and their feed's head. */
static bool history(const Todo__V1__EventEnvelope *env, arena *a, const char **sql, const char **p, int *n)
{
    if (strcmp(env->event_type, "user.erased") == 0) {
        p[0] = env->user_id;
        *sql = "with s as (delete from task_stats where user_id = $1) delete from feed.heads where user_id = $1";
        *n = 1;
        return true;
    }
    if (strncmp(env->event_type, "task.", 5) != 0) return false;
    const char *actor = event_actor(env);
    p[0] = env->aggregate_id;
    p[1] = arena_printf(a, "%" PRId64, env->aggregate_version);
    p[2] = env->event_type;
    p[3] = proj_ts_text(a, env->time);
    p[4] = actor != NULL ? actor : "";
    p[5] = env->correlation_id;
    *sql = HISTORY_SQL;
    *n = HISTORY_PARAMS;
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
static proj_outcome plan_saga(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    if (!text_is_uuid(env->event_id)) {
        *why = "saga event id is not a UUID";
        return PROJ_DEAD;
    }
    proj_plan_base(p, env, a, proj_ts_text(a, env->time));
    p->params[0] = env->event_id;
    p->params[1] = "1";
    if (strncmp(env->event_type, "saga.", 5) != 0) return PROJ_APPLIED; /* recurring.task.generated */
    Todo__V1__SagaEvent *ev = (Todo__V1__SagaEvent *)proj_payload(env, &todo__v1__saga_event__descriptor, a, why);
    if (ev == NULL) return PROJ_DEAD;
    if (ev->task_id[0] == '\0') return PROJ_APPLIED; /* no task to show it on */
    if (!text_is_uuid(ev->task_id) || !text_is_uuid(ev->saga_id)) {
        *why = "saga event names a saga or task that is not a UUID";
        return PROJ_DEAD;
    }
    const char *extra[8] = {ev->saga_id, ev->task_id, env->user_id, ev->saga_type,
                            arena_printf(a, "%d", (int)ev->status), ev->step, ev->error, env->event_type};
    memcpy(p->params + 3, extra, sizeof extra);
    p->n += 8;
    p->write = "insert into task_sagas as s (saga_id, task_id, user_id, saga_type, status, step, error, last_event,"
               " started_at, updated_at) select $4::uuid, $5::uuid, $6, $7, $8::smallint, $9, $10, $11,"
               " $3::timestamptz, $3::timestamptz where" PROJ_CLAIMED
               " on conflict (saga_id) do update set status = excluded.status, step = excluded.step,"
               " error = case when excluded.error <> '' then excluded.error else s.error end,"
               " last_event = excluded.last_event, updated_at = excluded.updated_at"
               " where s.updated_at <= excluded.updated_at";
    return PROJ_APPLIED;
}

/* proj_def.plan: one decoded record. */
static proj_outcome plan_record(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    if (env->time == NULL) {
        *why = "envelope has no time";
        return PROJ_DEAD;
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


static const char *const topics[] = {TOPIC_TASKS, TOPIC_REMINDERS, TOPIC_USERS, TOPIC_SAGA};

const proj_def proj_tasks = {
    .name = "tasks",
    .schema = "read",
    .group = "projection-task-read-v1", /* TODO_PROJECTOR_GROUP overrides it */
    .topics = topics,
    .n_topics = sizeof topics / sizeof topics[0],
    .plan = plan_record,
    .by_event_id = claimed_by_event_id,
    .follow = history,
    .feed = true,
    .cache = true,
    .swap_lock = LOCK_PROJ_SWAP,
    .rebuild_lock = LOCK_REBUILD,
    .before_swap = "select todo_meta.tasks_stats_recount('%s')",
};
